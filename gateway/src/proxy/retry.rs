//! Whether a failed attempt may be sent again: a pure decision from what failed, how far the
//! request got, and the route's retry policy. The proxy gathers the facts and applies the
//! answer; the attempt count and the retry budget are checked by the caller afterwards.
//!
//! Policy (the README's retry rules, row by row):
//! - Nothing is retried once the response has started: its header is with the client.
//! - A failure on the client's side (it went away, or sent a broken body) is never retried.
//! - A connect failure: any method, if the route retries on `connect` (nothing reached the app).
//! - A failure before the request's header was written to the upstream in full (a pooled
//!   connection found dead at the first write): any method whose body is still replayable.
//! - The endpoint was marked down while the request waited on it: idempotent, replayable
//!   requests move at once, outside the budget (moving them is the failover itself).
//! - A reset, a retryable status or (if listed) a timeout after the header was written:
//!   idempotent, replayable requests only, within the budget. A reset after the app read the
//!   request does not prove it did nothing.

use gateway_config::RetryPolicy;

/// What went wrong with an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connection could not be established.
    Connect,
    /// The connection was reset or closed, or an HTTP/2 stream error, before a response.
    Reset,
    /// The upstream did not answer (or accept the request) in time.
    Timeout,
    /// The upstream answered with this status.
    Status(u16),
    /// The client's side failed: it went away or sent something broken.
    Client,
    /// Anything else (a malformed upstream response, an internal error).
    Other,
}

impl Failure {
    /// How the access log names it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::Status(_) => "status",
            Self::Client => "client",
            Self::Other => "other",
        }
    }
}

/// The facts a retry decision depends on, besides the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// The method is idempotent.
    pub idempotent: bool,
    /// The request body is still fully buffered for a replay.
    pub body_replayable: bool,
    /// The request header was written to the upstream in full.
    pub header_sent: bool,
    /// The response header has gone to the client.
    pub response_started: bool,
    /// Health marked the endpoint down while the request waited on it.
    pub endpoint_marked_down: bool,
    /// Passive health counts the endpoint as failing: this failure ejected it, or would have
    /// but for the region's `max_ejected` cap. Moving away from it is failover, not a storm.
    pub endpoint_failing: bool,
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Do not send the request again.
    No,
    /// Send it to another endpoint; `budgeted` retries spend the route's retry budget.
    Yes {
        /// Whether the retry counts against the retry budget.
        budgeted: bool,
    },
}

/// Whether the failed attempt may be retried (attempt count and budget still to be checked).
pub(crate) fn decide(failure: Failure, attempt: Attempt, policy: &RetryPolicy) -> Retry {
    match decide_budgeted(failure, attempt, policy) {
        Retry::Yes { .. } if attempt.endpoint_failing => Retry::Yes { budgeted: false },
        other => other,
    }
}

fn decide_budgeted(failure: Failure, attempt: Attempt, policy: &RetryPolicy) -> Retry {
    let replayable = attempt.idempotent && attempt.body_replayable;
    let budgeted = Retry::Yes { budgeted: true };
    if attempt.response_started || failure == Failure::Client {
        return Retry::No;
    }
    if failure == Failure::Connect {
        return if policy.on_connect {
            budgeted
        } else {
            Retry::No
        };
    }
    if attempt.endpoint_marked_down {
        return if replayable {
            Retry::Yes { budgeted: false }
        } else {
            Retry::No
        };
    }
    let allowed = match failure {
        Failure::Status(code) => policy.on_status.contains(&code),
        Failure::Timeout => policy.on_timeout,
        Failure::Reset => policy.on_reset,
        Failure::Connect | Failure::Client | Failure::Other => false,
    };
    // A header that never reached the upstream: nothing it could act on was sent.
    let unsent = !attempt.header_sent && attempt.body_replayable;
    if (unsent && !matches!(failure, Failure::Status(_))) || (allowed && replayable) {
        budgeted
    } else {
        Retry::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on_timeout: bool) -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            on_connect: true,
            on_reset: true,
            on_timeout,
            on_status: [502, 503, 504].into(),
            budget_permille: 200,
            early: None,
        }
    }

    const GET: Attempt = Attempt {
        idempotent: true,
        body_replayable: true,
        header_sent: true,
        response_started: false,
        endpoint_marked_down: false,
        endpoint_failing: false,
    };
    const POST: Attempt = Attempt {
        idempotent: false,
        ..GET
    };
    const YES: Retry = Retry::Yes { budgeted: true };
    const FREE: Retry = Retry::Yes { budgeted: false };

    #[test]
    fn every_row_of_the_retry_rules() {
        let rows: &[(&str, Failure, Attempt, bool, Retry)] = &[
            // Connect failures: any method.
            ("GET connect", Failure::Connect, GET, false, YES),
            ("POST connect", Failure::Connect, POST, false, YES),
            // Resets after the header was written: idempotent and replayable only.
            ("GET reset", Failure::Reset, GET, false, YES),
            ("POST reset", Failure::Reset, POST, false, Retry::No),
            (
                "GET reset, body too big to replay",
                Failure::Reset,
                Attempt {
                    body_replayable: false,
                    ..GET
                },
                false,
                Retry::No,
            ),
            // The header never reached the upstream: any method with a replayable body.
            (
                "POST reset before its header was written",
                Failure::Reset,
                Attempt {
                    header_sent: false,
                    ..POST
                },
                false,
                YES,
            ),
            (
                "POST write error before its header, body not replayable",
                Failure::Other,
                Attempt {
                    header_sent: false,
                    body_replayable: false,
                    ..POST
                },
                false,
                Retry::No,
            ),
            // Statuses: listed ones, idempotent only.
            ("GET 503", Failure::Status(503), GET, false, YES),
            (
                "GET 500 (not listed)",
                Failure::Status(500),
                GET,
                false,
                Retry::No,
            ),
            ("POST 503", Failure::Status(503), POST, false, Retry::No),
            // Timeouts: only when listed, idempotent only.
            (
                "GET timeout, not listed",
                Failure::Timeout,
                GET,
                false,
                Retry::No,
            ),
            ("GET timeout, listed", Failure::Timeout, GET, true, YES),
            (
                "POST timeout, listed",
                Failure::Timeout,
                POST,
                true,
                Retry::No,
            ),
            // Marked down while waiting: idempotent ones move outside the budget.
            (
                "GET on an endpoint marked down",
                Failure::Reset,
                Attempt {
                    endpoint_marked_down: true,
                    ..GET
                },
                false,
                FREE,
            ),
            (
                "POST on an endpoint marked down",
                Failure::Reset,
                Attempt {
                    endpoint_marked_down: true,
                    ..POST
                },
                false,
                Retry::No,
            ),
            // An endpoint passive health counts as failing (ejected now, or held in by the
            // ejection cap): leaving it is failover, outside the budget; the rules stay.
            (
                "GET refused by a failing endpoint",
                Failure::Connect,
                Attempt {
                    endpoint_failing: true,
                    ..GET
                },
                false,
                FREE,
            ),
            (
                "GET 503 from a failing endpoint",
                Failure::Status(503),
                Attempt {
                    endpoint_failing: true,
                    ..GET
                },
                false,
                FREE,
            ),
            (
                "POST 503 from a failing endpoint",
                Failure::Status(503),
                Attempt {
                    endpoint_failing: true,
                    ..POST
                },
                false,
                Retry::No,
            ),
            (
                "GET 500 from a failing endpoint (not a retried status)",
                Failure::Status(500),
                Attempt {
                    endpoint_failing: true,
                    ..GET
                },
                false,
                Retry::No,
            ),
            // Never after the response started, never for the client's own failures.
            (
                "GET reset after the response started",
                Failure::Reset,
                Attempt {
                    response_started: true,
                    ..GET
                },
                false,
                Retry::No,
            ),
            (
                "GET, client went away",
                Failure::Client,
                GET,
                true,
                Retry::No,
            ),
            (
                "POST, client went away before the header was sent",
                Failure::Client,
                Attempt {
                    header_sent: false,
                    ..POST
                },
                false,
                Retry::No,
            ),
            (
                "GET, other upstream error",
                Failure::Other,
                GET,
                false,
                Retry::No,
            ),
        ];
        for (name, failure, attempt, on_timeout, want) in rows {
            assert_eq!(
                decide(*failure, *attempt, &policy(*on_timeout)),
                *want,
                "{name}"
            );
        }
    }

    #[test]
    fn a_route_without_connect_retries_never_retries_connect_failures() {
        let mut p = policy(false);
        p.on_connect = false;
        assert_eq!(decide(Failure::Connect, GET, &p), Retry::No);
    }
}
