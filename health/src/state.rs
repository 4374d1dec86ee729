//! The endpoint health state machine: pure, no I/O, time passed in.
//!
//! Policy, in order of precedence:
//!
//! - **Initial**: an endpoint starts `Unknown`, which routes traffic (so a restart never
//!   blackholes a fleet) but the gateway is not ready until every endpoint had its first probe.
//!   The first probe decides at once: success → `Up`, failure → `Down`.
//! - **Active**: `Up` becomes `Down` after `fall` consecutive probe failures; `Down` becomes `Up`
//!   after `rise` consecutive probe successes.
//! - **Passive**: `consecutive_failures` live-traffic failures in a row (connect error, reset,
//!   timeout, 5xx) eject the endpoint: it goes `Down` at once and stays out for the ejection time,
//!   which doubles on each repeat up to `max_ejection`. Probe successes during the ejection do not
//!   count; after it, `rise` probe successes re-admit the endpoint. The doubling resets once an
//!   endpoint has stayed up for `max_ejection`.
//! - **Recovery**: when probes bring an endpoint from `Down` back `Up`, the live-failure streak
//!   starts again from zero: failures counted before or while it was down (requests already on
//!   their way to it) never count towards the next ejection.

use std::time::Duration;

use tokio::time::Instant;

/// Thresholds of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive probe successes to become `Up`.
    pub rise: u32,
    /// Consecutive probe failures to become `Down`.
    pub fall: u32,
    /// Consecutive live-traffic failures that eject; `None` disables passive ejection.
    pub consecutive_failures: Option<u32>,
    /// First ejection time.
    pub ejection: Duration,
    /// Ejection time cap.
    pub max_ejection: Duration,
}

/// Health as the router sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not probed yet; routes traffic.
    Unknown,
    /// Routes traffic.
    Up,
    /// Routes no traffic.
    Down,
}

impl Health {
    /// Whether traffic may be sent.
    pub fn routable(self) -> bool {
        !matches!(self, Health::Down)
    }
}

/// Why the health changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The first probe result.
    FirstProbe,
    /// `fall` consecutive probe failures.
    ProbesFailed,
    /// `rise` consecutive probe successes.
    ProbesPassed,
    /// Live-traffic failures ejected the endpoint for this long.
    Ejected(Duration),
    /// Its answers stayed far slower than the rest of its region's: latency outlier ejection
    /// took it out for this long.
    Slow(Duration),
}

/// A health transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Before.
    pub from: Health,
    /// After.
    pub to: Health,
    /// Why.
    pub cause: Cause,
}

/// State of one endpoint (or one region check).
#[derive(Debug, Clone)]
pub struct EndpointState {
    health: Health,
    ok_streak: u32,
    fail_streak: u32,
    passive_streak: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
    up_since: Option<Instant>,
    /// When the current run of failures (probe or live) started; cleared on success.
    first_failure: Option<Instant>,
}

impl Default for EndpointState {
    fn default() -> Self {
        Self::new()
    }
}

impl EndpointState {
    /// A fresh, unprobed endpoint.
    pub fn new() -> Self {
        Self {
            health: Health::Unknown,
            ok_streak: 0,
            fail_streak: 0,
            passive_streak: 0,
            ejected_until: None,
            ejections: 0,
            up_since: None,
            first_failure: None,
        }
    }

    /// Current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// End of the current ejection, if ejected.
    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// When the current run of failures began (for failover timing).
    pub fn first_failure(&self) -> Option<Instant> {
        self.first_failure
    }

    /// Applies a probe result.
    pub fn on_probe(
        &mut self,
        ok: bool,
        now: Instant,
        policy: &HealthPolicy,
    ) -> Option<Transition> {
        if ok {
            self.fail_streak = 0;
            match self.health {
                Health::Unknown => return self.set(Health::Up, Cause::FirstProbe, now),
                Health::Up => self.first_failure = None,
                Health::Down => {
                    if self.ejected_until.is_some_and(|until| now < until) {
                        // Still ejected: successes do not count yet.
                        self.ok_streak = 0;
                        return None;
                    }
                    self.ok_streak += 1;
                    if self.ok_streak >= policy.rise {
                        self.ejected_until = None;
                        return self.set(Health::Up, Cause::ProbesPassed, now);
                    }
                }
            }
            None
        } else {
            self.ok_streak = 0;
            self.fail_streak += 1;
            self.first_failure.get_or_insert(now);
            match self.health {
                Health::Unknown => self.set(Health::Down, Cause::FirstProbe, now),
                Health::Up if self.fail_streak >= policy.fall => {
                    self.set(Health::Down, Cause::ProbesFailed, now)
                }
                _ => None,
            }
        }
    }

    /// Applies the outcome of one live request attempt.
    pub fn on_traffic(
        &mut self,
        ok: bool,
        now: Instant,
        policy: &HealthPolicy,
    ) -> Option<Transition> {
        if ok {
            self.passive_streak = 0;
            if self.health == Health::Up {
                self.first_failure = None;
            }
            return None;
        }
        self.first_failure.get_or_insert(now);
        self.passive_streak += 1;
        let threshold = policy.consecutive_failures?;
        if self.passive_streak < threshold || self.health == Health::Down {
            return None;
        }
        self.eject(Cause::Ejected, now, policy)
    }

    /// Ejects an up endpoint whose live answers stayed far slower than its region's (the
    /// caller decides that), for the same times as failures do, doubling with them.
    pub fn on_slow(&mut self, now: Instant, policy: &HealthPolicy) -> Option<Transition> {
        if self.health != Health::Up {
            return None;
        }
        self.eject(Cause::Slow, now, policy)
    }

    /// Down for `ejection`, doubled for each ejection since the endpoint last stayed up for
    /// `max_ejection`, at most `max_ejection`.
    fn eject(
        &mut self,
        cause: fn(Duration) -> Cause,
        now: Instant,
        policy: &HealthPolicy,
    ) -> Option<Transition> {
        if self
            .up_since
            .is_some_and(|since| now.duration_since(since) >= policy.max_ejection)
        {
            self.ejections = 0;
        }
        let factor = 1u32.checked_shl(self.ejections.min(16)).unwrap_or(u32::MAX);
        let duration = policy
            .ejection
            .saturating_mul(factor)
            .min(policy.max_ejection);
        self.ejections += 1;
        self.ejected_until = Some(now + duration);
        self.passive_streak = 0;
        self.set(Health::Down, cause(duration), now)
    }

    fn set(&mut self, to: Health, cause: Cause, now: Instant) -> Option<Transition> {
        let from = self.health;
        self.health = to;
        self.ok_streak = 0;
        self.fail_streak = 0;
        match to {
            Health::Up => {
                self.up_since = Some(now);
                self.first_failure = None;
                if from == Health::Down {
                    self.passive_streak = 0;
                }
            }
            _ => self.up_since = None,
        }
        (from != to).then_some(Transition { from, to, cause })
    }
}

#[cfg(test)]
mod tests;
