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
    /// The route is at its `max_in_flight`.
    Route,
    /// Every allowed region that is up is at its `capacity`.
    Capacity,
}

impl ShedReason {
    /// Every reason, in label order.
    pub const ALL: [ShedReason; 3] = [Self::Process, Self::Route, Self::Capacity];

    /// Position in [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Metric label and the `reason` field of the 503 body.
    pub fn label(self) -> &'static str {
        match self {
            Self::Process => "process",
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

/// Whether `counter` is below `capacity` (no capacity: always).
pub(crate) fn has_room(counter: &AtomicUsize, capacity: Option<u32>) -> bool {
    capacity.is_none_or(|c| counter.load(Ordering::Acquire) < c as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
