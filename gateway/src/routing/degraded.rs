//! Failover for slowness (`routes[].degraded`, opt-in): a region whose endpoints answer a route
//! slower than the route's SLO for a while is treated as down for that route, as long as
//! another of its regions is up and not degraded itself.
//!
//! The signal is the region's median endpoint time to first byte (each endpoint's plain recent
//! average over live traffic, `Latency::mean`). A region is *slow* while that is above
//! `ttfb`; slow for `for` with fresh answers arriving all along, it is *degraded*, and the
//! controller fails the route over as if it were down. After `recover_after` it is offered
//! traffic again like any region that comes back (the failback hold-down counts from then);
//! its average, stale since traffic left, is not trusted until fresh answers arrive, and if
//! they are still slow it is degraded again after `for`.
//!
//! [`step`] is the pure state machine; the controller (the one writer) feeds it every
//! [`TICK`] and the request path reads only each region's flag.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_config::Degraded;
use gateway_health::RegionHealth;
use tokio::time::Instant;

/// How often the controller looks at regions' latency while a route has `degraded`.
pub const TICK: Duration = Duration::from_millis(200);
/// Answers that must arrive before a slow region's average is trusted (while it is slow, and
/// when it is offered traffic again).
const FRESH: u64 = 10;

/// What the controller saw of a region at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Median of the routable endpoints' average time to first byte (`None`: no answers yet).
    pub ttfb: Option<Duration>,
    /// Answers counted over all its endpoints so far.
    pub answers: u64,
}

impl Observation {
    /// The region's latency now.
    pub fn of(region: &RegionHealth) -> Self {
        let members = region.members();
        let mut means: Vec<Duration> = members
            .endpoints
            .iter()
            .filter(|e| e.is_routable())
            .filter_map(|e| e.latency.mean())
            .collect();
        means.sort();
        Self {
            ttfb: means.get(means.len().saturating_sub(1) / 2).copied(),
            answers: members.endpoints.iter().map(|e| e.latency.samples()).sum(),
        }
    }
}

/// Where a region stands for one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Within the SLO (or no answers yet).
    Normal,
    /// Above the SLO since `since`, when `answers` had been counted.
    Slow {
        /// When it was first seen slow.
        since: Instant,
        /// The answer count then.
        answers: u64,
    },
    /// Treated as down for the route since `since`.
    Degraded {
        /// When it became degraded.
        since: Instant,
    },
    /// Offered traffic again since `since`; its average is stale until `FRESH` answers more
    /// than `answers` have arrived.
    Recovering {
        /// When it was offered traffic again.
        since: Instant,
        /// The answer count then.
        answers: u64,
    },
}

/// The next state of a region seen as `seen` at `now`.
pub fn step(state: State, seen: Observation, settings: &Degraded, now: Instant) -> State {
    let slow = seen.ttfb.is_some_and(|t| t > settings.ttfb);
    match state {
        State::Degraded { since } if now.duration_since(since) >= settings.recover_after => {
            State::Recovering {
                since: now,
                answers: seen.answers,
            }
        }
        State::Degraded { .. } => state,
        State::Recovering { answers, .. } if seen.answers < answers + FRESH => state,
        State::Slow { since, answers } if slow => {
            if now.duration_since(since) >= settings.for_ && seen.answers >= answers + FRESH {
                State::Degraded { since: now }
            } else {
                state
            }
        }
        _ if slow => State::Slow {
            since: now,
            answers: seen.answers,
        },
        _ => State::Normal,
    }
}

/// One region's degradation for one route: the controller's state and the flag requests read.
#[derive(Debug)]
pub struct Degradation {
    degraded: AtomicBool,
    inner: Mutex<Cell>,
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    state: State,
    /// When it was last offered traffic again after being degraded.
    recovered_at: Option<Instant>,
    /// The last observation, for events and `/status`.
    seen: Observation,
}

impl Default for Degradation {
    fn default() -> Self {
        Self {
            degraded: AtomicBool::new(false),
            inner: Mutex::new(Cell {
                state: State::Normal,
                recovered_at: None,
                seen: Observation {
                    ttfb: None,
                    answers: 0,
                },
            }),
        }
    }
}

impl Degradation {
    /// Whether the region is degraded for the route (the request path's read).
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Feeds one observation (the controller, every tick); returns whether the region just
    /// became degraded.
    pub fn observe(&self, seen: Observation, settings: &Degraded, now: Instant) -> bool {
        let mut cell = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let next = step(cell.state, seen, settings, now);
        let became =
            matches!(next, State::Degraded { .. }) && !matches!(cell.state, State::Degraded { .. });
        if matches!(next, State::Recovering { .. }) && matches!(cell.state, State::Degraded { .. })
        {
            cell.recovered_at = Some(now);
        }
        cell.state = next;
        cell.seen = seen;
        self.degraded
            .store(matches!(next, State::Degraded { .. }), Ordering::Release);
        became
    }

    /// The last median time to first byte seen.
    pub fn last_ttfb(&self) -> Option<Duration> {
        self.inner.lock().map(|c| c.seen.ttfb).unwrap_or(None)
    }

    /// How long ago it was offered traffic again after being degraded, if it ever was.
    pub fn recovered_for(&self, now: Instant) -> Option<Duration> {
        self.inner
            .lock()
            .ok()
            .and_then(|c| c.recovered_at)
            .map(|at| now.duration_since(at))
    }
}

/// Each region's degradation for one route, by region name (kept across reloads with the
/// route's failover state).
#[derive(Debug, Default)]
pub struct Degradations(Mutex<HashMap<String, Arc<Degradation>>>);

impl Degradations {
    /// The degradation of `region`, created on first use.
    pub fn of(&self, region: &str) -> Arc<Degradation> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(region.to_string()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Degraded {
        Degraded {
            ttfb: Duration::from_millis(100),
            for_: Duration::from_secs(1),
            recover_after: Duration::from_secs(5),
        }
    }

    fn seen(ttfb_ms: u64, answers: u64) -> Observation {
        Observation {
            ttfb: Some(Duration::from_millis(ttfb_ms)),
            answers,
        }
    }

    #[test]
    fn slow_for_long_enough_with_fresh_answers_degrades_then_recovers_after_its_time() {
        let s = settings();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut state = step(State::Normal, seen(50, 0), &s, at(0));
        assert_eq!(state, State::Normal);
        state = step(state, seen(300, 5), &s, at(100));
        assert_eq!(
            state,
            State::Slow {
                since: at(100),
                answers: 5
            }
        );
        // Long enough but too few answers since: not yet.
        state = step(state, seen(300, 9), &s, at(1200));
        assert!(matches!(state, State::Slow { .. }), "{state:?}");
        // A moment within the SLO starts it over.
        let back = step(state, seen(90, 20), &s, at(1300));
        assert_eq!(back, State::Normal);
        // Long enough with fresh answers: degraded.
        state = step(state, seen(300, 15), &s, at(1300));
        assert_eq!(state, State::Degraded { since: at(1300) });
        // It stays degraded, however fast it looks (its average is stale) ...
        state = step(state, seen(10, 15), &s, at(6200));
        assert_eq!(state, State::Degraded { since: at(1300) });
        // ... until `recover_after`, when it is offered traffic again.
        state = step(state, seen(300, 15), &s, at(6300));
        assert_eq!(
            state,
            State::Recovering {
                since: at(6300),
                answers: 15
            }
        );
        // The stale average counts for nothing until fresh answers arrive.
        state = step(state, seen(300, 20), &s, at(9000));
        assert!(matches!(state, State::Recovering { .. }), "{state:?}");
        // Fresh and fast: normal. Fresh and slow: slow again (degraded after `for` more).
        assert_eq!(step(state, seen(40, 25), &s, at(9200)), State::Normal);
        assert_eq!(
            step(state, seen(300, 25), &s, at(9200)),
            State::Slow {
                since: at(9200),
                answers: 25
            }
        );
    }

    #[test]
    fn no_answers_is_not_slow() {
        let none = Observation {
            ttfb: None,
            answers: 0,
        };
        let t0 = Instant::now();
        assert_eq!(step(State::Normal, none, &settings(), t0), State::Normal);
    }
}
