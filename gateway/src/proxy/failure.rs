//! What a failed attempt means: the facts the pure retry decision (`retry.rs`) needs, the
//! error classified by type, the failure reported to passive health only when the upstream
//! caused it, and the verdict (retry or not, and why) for a failed connect, an error while
//! proxying and a retryable status.

use gateway_health::{Failure, Passive};
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::upstreams::peer::FIRST_BYTE_DEADLINE;
use pingora::{Error, ErrorSource, ErrorType};

use crate::proxy::context::{RequestCtx, ResponsePhase};
use crate::proxy::retry;
use crate::proxy::GatewayProxy;

impl GatewayProxy {
    /// A connect that failed: reported to passive health, and retried on another endpoint
    /// when the route allows (nothing reached the app, so any method may be).
    pub(super) fn connect_failed(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let kind = match e.etype() {
            ErrorType::ConnectTimedout => Failure::Timeout {
                started: ctx.attempt_started,
            },
            _ => Failure::Definite,
        };
        let failing = self.report_failure(ctx, kind, &e);
        ctx.last_failure = Some(e.etype().clone());
        // Nothing reached the app, so any method may be retried on another endpoint.
        e.set_retry(may_retry(
            session,
            ctx,
            retry::Failure::Connect,
            false,
            failing,
        ));
        if e.retry() {
            ctx.retries.push("connect".into());
        }
        e
    }

    /// An error while proxying (after the connect): a status retry decided in the response
    /// filter, an attempt cut at its early-retry deadline, the client's own failure, or the
    /// upstream's, which passive health hears unless the endpoint is already marked down or a
    /// pooled connection died before the request was written. The error names `peer` (the
    /// arguments in the order of Pingora's `error_while_proxy`).
    pub(super) fn proxy_failed(
        &self,
        peer: &HttpPeer,
        session: &Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if ctx.status_retry {
            // Decided in the response filter; budget already taken.
            e.set_retry(true);
            return e;
        }
        let Some(current) = ctx.current().cloned() else {
            return e;
        };
        if *e.etype() == FIRST_BYTE_DEADLINE {
            // Cut at the early-retry deadline, its budget already taken: not a failure of the
            // endpoint, but the wait was real (latency-aware choice sees it).
            ctx.observe_current_wait();
            if let Some(early) = ctx.plan().and_then(|p| p.early.as_ref()) {
                early.sent();
            }
            ctx.last_failure = Some(ErrorType::ReadTimedout);
            let retry = ctx.may_retry_with(false);
            if retry {
                ctx.retries.push("early".into());
            }
            e.set_retry(retry);
            return e;
        }
        let failure = failure_of(&e);
        if failure == retry::Failure::Client {
            // The client went away or sent something broken: the upstream did nothing wrong,
            // and a request the client abandoned is never replayed elsewhere.
            e.set_retry(false);
            return e;
        }
        ctx.last_failure = Some(e.etype().clone());
        let marked_down = !current.endpoint.is_routable();
        let kind = match failure {
            retry::Failure::Timeout => Failure::Timeout {
                started: ctx.attempt_started,
            },
            _ => Failure::Definite,
        };
        // A pooled connection that died before the request header could be written says
        // nothing about the endpoint (the upstream closed an idle connection, as it may): not
        // a passive failure. The retry rules treat it as unsent.
        let stale_pooled =
            !session.upstream_request_header_sent() && failure == retry::Failure::Reset;
        let failing = !marked_down && !stale_pooled && self.report_failure(ctx, kind, &e);
        let retry = may_retry(session, ctx, failure, marked_down, failing);
        if retry {
            ctx.retries.push(
                if marked_down {
                    "marked_down"
                } else {
                    failure.label()
                }
                .into(),
            );
        }
        e.set_retry(retry);
        e
    }

    /// A 5xx answer: reported to passive health, and turned into a retry (an error) when the
    /// route's rules and budget allow; otherwise it goes to the client as it is.
    pub(super) fn status_failed(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        status: u16,
    ) -> pingora::Result<()> {
        let failing = self.report_failure(ctx, Failure::Definite, &status);
        if may_retry(session, ctx, retry::Failure::Status(status), false, failing) {
            ctx.status_retry = true;
            ctx.retries.push(format!("status {status}"));
            ctx.last_failure = Some(ErrorType::HTTPStatus(status));
            let mut e = Error::explain(ErrorType::HTTPStatus(status), "retryable upstream status");
            e.as_up();
            e.set_retry(true);
            return Err(e);
        }
        Ok(())
    }

    /// Reports a failed attempt to passive health; a timeout while the gateway itself is
    /// saturated is excused (it says nothing about the upstream).
    fn report_failure(
        &self,
        ctx: &RequestCtx,
        kind: Failure,
        cause: &dyn std::fmt::Display,
    ) -> bool {
        let Some(choice) = ctx.current() else {
            return false;
        };
        let timeout = matches!(kind, Failure::Timeout { .. });
        if timeout && self.lag.saturated() {
            crate::telemetry::metrics::timeout_excused();
            tracing::debug!(target: super::LOG_TARGET, endpoint = %choice.endpoint.key.id, lag_ms = self.lag.current().as_millis() as u64, "upstream timeout while the gateway is saturated: not counted");
            return false;
        }
        if let Failure::Timeout { started } = kind {
            // The wait was real: latency-aware choice moves traffic away before ejection does.
            // (Its outlier verdict is moot: the timeout itself counts below.)
            let now = tokio::time::Instant::now();
            choice
                .endpoint
                .latency
                .observe(now.saturating_duration_since(started), now);
        }
        let passive = choice.endpoint.report_failure(kind);
        let region = ctx.snapshot.regions[choice.region].name.as_str();
        if passive == Passive::SameMoment {
            tracing::debug!(target: super::LOG_TARGET, region, endpoint = %choice.endpoint.key.id, %cause, "timeout in a slow moment already counted: not counted again");
            return true;
        }
        crate::telemetry::metrics::passive_failure(region, timeout);
        tracing::debug!(target: super::LOG_TARGET, region, endpoint = %choice.endpoint.key.id, ?kind, ?passive, %cause, "passive failure");
        passive.failing()
    }
}

/// Whether the attempt that ended in `failure` is sent again: the pure retry decision on the
/// attempt's facts and the route's rules, then the attempt count and, when the decision says
/// so, the retry budget ([`RequestCtx::may_retry_with`]).
fn may_retry(
    session: &Session,
    ctx: &RequestCtx,
    failure: retry::Failure,
    marked_down: bool,
    failing: bool,
) -> bool {
    let decision = ctx.plan().map(|p| {
        retry::decide(
            failure,
            attempt_facts(session, ctx, marked_down, failing),
            &p.route.retry,
        )
    });
    match decision {
        Some(retry::Retry::Yes { budgeted }) => ctx.may_retry_with(budgeted),
        _ => false,
    }
}

/// The facts about the current attempt that the retry decision needs.
fn attempt_facts(
    session: &Session,
    ctx: &RequestCtx,
    marked_down: bool,
    failing: bool,
) -> retry::Attempt {
    retry::Attempt {
        idempotent: session.req_header().method.is_idempotent(),
        body_replayable: !session.as_ref().retry_buffer_truncated(),
        header_sent: session.upstream_request_header_sent(),
        response_started: ctx.response == ResponsePhase::Started
            || session.response_written().is_some(),
        endpoint_marked_down: marked_down,
        endpoint_failing: failing,
    }
}

/// What an error that ended an attempt means for the retry decision (classified by type).
fn failure_of(e: &Error) -> retry::Failure {
    if *e.esource() == ErrorSource::Downstream {
        return retry::Failure::Client;
    }
    match e.etype() {
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::H2Error => {
            retry::Failure::Reset
        }
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => retry::Failure::Timeout,
        ErrorType::HTTPStatus(code) => retry::Failure::Status(*code),
        ErrorType::ConnectTimedout | ErrorType::ConnectRefused | ErrorType::ConnectError => {
            retry::Failure::Connect
        }
        _ => retry::Failure::Other,
    }
}
