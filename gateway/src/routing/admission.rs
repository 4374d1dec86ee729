//! Admission control: requests in flight are bounded for the process
//! (`server.max_in_flight`), per route (`routes[].max_in_flight`) and per region
//! (`regions.<name>.capacity`, where selection spills the excess to the next tier). What is over
//! a limit gets a fast `503` that says *overloaded*, distinguishable from *no allowed region is
//! up*.
//!
//! The counters are plain atomics held by state that survives reloads (the proxy, a route's
//! failover state, a region's health cell). A limit can be overshot by the few requests
//! selecting at the same instant; it bounds load, it is not a semaphore.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a request was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShedReason {
    /// The process is at `server.max_in_flight`.
    Process,
    /// The process is at its adaptive limit (below `server.max_in_flight`): the gateway's own
    /// event loop is running late.
    Adaptive,
    /// The route is at its `max_in_flight`.
    Route,
    /// Every allowed region that is up is at its `capacity`.
    Capacity,
}

impl crate::telemetry::metrics::LabelSet for ShedReason {
    const ALL: &'static [Self] = &[Self::Process, Self::Adaptive, Self::Route, Self::Capacity];

    fn index(self) -> usize {
        self as usize
    }

    /// Metric label and the `reason` field of the 503 body.
    fn label(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Adaptive => "adaptive",
            Self::Route => "route",
            Self::Capacity => "capacity",
        }
    }
}

/// One request counted in a counter until dropped.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Counts one more in `counter`, whatever the limit (selection checked room already).
    pub fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter.clone())
    }

    /// Counts one more in `counter` unless it is at `limit`.
    pub fn try_enter(counter: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        if counter.fetch_add(1, Ordering::AcqRel) >= limit {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(counter.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Client connections open now (`server.max_connections`), so that shutdown can end as soon as
/// the last one is done and `/status` can show them.
#[derive(Default)]
pub(crate) struct Connections {
    count: AtomicUsize,
    closed: tokio::sync::Notify,
}

impl Connections {
    /// Counts one connection until the guard drops; also says how many are open with it.
    pub fn enter(self: &Arc<Self>) -> (ConnectionGuard, usize) {
        let open = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        (ConnectionGuard(self.clone()), open)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Completes when no connection is open (at once if none is).
    pub async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            // Register before reading the count, so a close in between is not missed.
            closed.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// One open client connection, counted until dropped.
pub(crate) struct ConnectionGuard(Arc<Connections>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

/// The process's in-flight limit: `server.max_in_flight`, or with `server.adaptive_limit` a
/// limit below it that follows the proxy's scheduling lag (AIMD: a tenth off per 100 ms while
/// the event loop runs more than 50 ms late, a twentieth more while it is on time and the limit
/// is what holds requests back). It never goes below [`FLOOR`].
pub(crate) struct ProcessLimit {
    in_flight: Arc<AtomicUsize>,
    adaptive: AtomicUsize,
}

/// The adaptive limit never goes below this (or the ceiling, if lower).
pub(crate) const FLOOR: usize = 256;
/// Where the adaptive limit starts.
const START: usize = 1024;
/// Below this lag the event loop is on time.
const CALM: std::time::Duration = std::time::Duration::from_millis(10);

impl Default for ProcessLimit {
    fn default() -> Self {
        Self {
            in_flight: Arc::default(),
            adaptive: AtomicUsize::new(START),
        }
    }
}

impl ProcessLimit {
    /// Admits one request under `ceiling` (`server.max_in_flight`), adaptively or not.
    pub fn admit(&self, ceiling: usize, adaptive: bool) -> Result<Slot, ShedReason> {
        let limit = if adaptive {
            self.current().min(ceiling)
        } else {
            ceiling
        };
        Slot::try_enter(&self.in_flight, limit).ok_or(if limit < ceiling {
            ShedReason::Adaptive
        } else {
            ShedReason::Process
        })
    }

    /// The adaptive limit now.
    pub fn current(&self) -> usize {
        self.adaptive.load(Ordering::Relaxed)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// One adaptation step (every 100 ms) from the recent `lag`; returns the new limit.
    pub fn adjust(&self, lag: std::time::Duration, ceiling: usize) -> usize {
        let limit = self.current();
        let busy = self.in_flight() >= limit * 9 / 10;
        let next = next_limit(limit, lag, busy, ceiling);
        self.adaptive.store(next, Ordering::Relaxed);
        next
    }
}

/// The next adaptive limit (pure: the AIMD rule of [`ProcessLimit`]).
pub(crate) fn next_limit(
    limit: usize,
    lag: std::time::Duration,
    busy: bool,
    ceiling: usize,
) -> usize {
    let floor = FLOOR.min(ceiling);
    let limit = limit.clamp(floor, ceiling.max(floor));
    if lag > crate::telemetry::lag::SATURATED {
        (limit * 9 / 10).max(floor)
    } else if lag < CALM && busy {
        (limit + (limit / 20).max(8)).min(ceiling)
    } else {
        limit
    }
}

/// Whether `counter` is below `capacity` (no capacity: always).
pub(crate) fn has_room(counter: &AtomicUsize, capacity: Option<u32>) -> bool {
    capacity.is_none_or(|c| counter.load(Ordering::Acquire) < c as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shed_reason_has_its_own_counter() {
        crate::telemetry::metrics::assert_label_set::<ShedReason>();
    }

    #[test]
    fn slots_count_until_dropped_and_respect_the_limit() {
        let counter = Arc::new(AtomicUsize::new(0));
        let a = Slot::try_enter(&counter, 2).expect("first");
        let b = Slot::try_enter(&counter, 2).expect("second");
        assert!(
            Slot::try_enter(&counter, 2).is_none(),
            "third is over the limit"
        );
        assert_eq!(counter.load(Ordering::Acquire), 2);
        drop(a);
        let c = Slot::try_enter(&counter, 2).expect("room again");
        assert!(!has_room(&counter, Some(2)));
        assert!(has_room(&counter, None));
        drop((b, c));
        assert_eq!(counter.load(Ordering::Acquire), 0);
    }

    #[test]
    fn the_adaptive_limit_follows_the_lag() {
        use std::time::Duration;
        let late = Duration::from_millis(80);
        let calm = Duration::from_millis(2);
        let between = Duration::from_millis(30);
        type Row = (&'static str, usize, Duration, bool, usize, usize);
        let rows: &[Row] = &[
            ("late: a tenth off", 1000, late, true, 10_000, 900),
            ("late, not busy: still off", 1000, late, false, 10_000, 900),
            ("never below the floor", 260, late, true, 10_000, FLOOR),
            (
                "calm and busy: a twentieth more",
                1000,
                calm,
                true,
                10_000,
                1050,
            ),
            (
                "small limits grow by at least 8",
                100,
                calm,
                true,
                10_000,
                FLOOR + 12,
            ),
            ("calm but idle: unchanged", 1000, calm, false, 10_000, 1000),
            ("in between: unchanged", 1000, between, true, 10_000, 1000),
            ("never above the ceiling", 9_990, calm, true, 10_000, 10_000),
            ("a ceiling below the floor wins", 1000, calm, true, 50, 50),
        ];
        for (name, limit, lag, busy, ceiling, want) in rows {
            assert_eq!(next_limit(*limit, *lag, *busy, *ceiling), *want, "{name}");
        }
        // Under sustained lag the limit converges to the floor, then recovers.
        let mut l = 10_000;
        for _ in 0..100 {
            l = next_limit(l, late, true, 10_000);
        }
        assert_eq!(l, FLOOR);
        for _ in 0..100 {
            l = next_limit(l, calm, true, 10_000);
        }
        assert_eq!(l, 10_000);
    }
}
