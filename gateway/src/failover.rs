//! Per-route failover: which priority tier serves a route, with failback hysteresis, and the
//! route's retry budget. State lives in a [`FailoverBook`] keyed by route name, outside the
//! routing snapshot, so it survives reloads.
//!
//! Policy:
//! - Traffic goes to the active tier. Initially that is the first tier with an up region.
//! - When no region of the active tier is up, the route moves at once to the first *stable*
//!   tier (a failover): one with a region that has stayed up for the hold-down or has never
//!   failed. It skips a higher tier that only just came back and may be flapping; with no
//!   stable tier, it takes the first tier that is up.
//! - State is kept per route and tier layout: a reload that changes a route's tiers starts a new
//!   state whose active tier is the one with the same regions (in-flight requests on the old
//!   snapshot keep the old state, so they never reinterpret an index against other tiers).
//! - A higher tier gets traffic back only once one of its regions has stayed up for
//!   `failback.hold_down` (a failback). A flapping region keeps resetting its up-time, so it
//!   never gets traffic back while it flaps.
//! - With no up region in any tier, the route has no active tier: requests get 503.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use gateway_health::RegionHealth;

/// No tier is up: the route answers 503.
const NONE: usize = usize::MAX;
/// No request or health change has chosen a tier yet.
const UNSET: usize = usize::MAX - 1;

/// Events kept for status pages.
const RECENT_EVENTS: usize = 64;

/// Failover state of every route, by name.
#[derive(Default)]
pub struct FailoverBook {
    routes: Mutex<HashMap<Arc<str>, Arc<RouteFailover>>>,
    recent: Mutex<VecDeque<FailoverEvent>>,
}

/// A switch of a route from one tier to another.
#[derive(Debug, Clone)]
pub struct FailoverEvent {
    /// Wall-clock time of the switch.
    pub at: SystemTime,
    /// Route name.
    pub route: Arc<str>,
    /// Regions of the tier traffic left (empty on the first choice).
    pub from: Vec<String>,
    /// Regions of the tier traffic moved to (empty when every region is down).
    pub to: Vec<String>,
    /// `failover`, `failback`, `all-down` or `recovered`.
    pub kind: &'static str,
    /// Why, for people.
    pub cause: String,
    /// Failover: time from the first failure observed in the left tier to the switch.
    /// Failback: how long the new tier had been up.
    pub elapsed: Option<Duration>,
}

/// Failover state of one route.
pub struct RouteFailover {
    active: AtomicUsize,
    /// Serialises switches so each is logged once.
    switch: Mutex<()>,
    /// Retry budget of the route.
    pub budget: RetryBudget,
    /// Rotates weighted choices within a tier.
    tickets: AtomicUsize,
    /// The tier layout `active` indexes into: region names per tier, sorted.
    tiers: Vec<Vec<String>>,
}

impl FailoverBook {
    /// The state of `route` over `tiers` (region names per tier, highest priority first),
    /// created on first use. When the route's tiers changed since the last call, a new state
    /// replaces the old one, its active tier mapped to the tier with the same regions.
    pub fn route(
        &self,
        route: &Arc<str>,
        tiers: Vec<Vec<String>>,
        budget_permille: u32,
    ) -> Arc<RouteFailover> {
        let tiers: Vec<Vec<String>> = tiers
            .into_iter()
            .map(|mut t| {
                t.sort();
                t
            })
            .collect();
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = routes.get(route) {
            if existing.tiers == tiers {
                existing.budget.set_permille(budget_permille);
                return existing.clone();
            }
        }
        let active = match routes.get(route) {
            None => UNSET,
            Some(old) => match old.active.load(Ordering::Acquire) {
                NONE => NONE,
                i => old
                    .tiers
                    .get(i)
                    .and_then(|regions| tiers.iter().position(|t| t == regions))
                    .unwrap_or(UNSET),
            },
        };
        let state = Arc::new(RouteFailover {
            active: AtomicUsize::new(active),
            switch: Mutex::new(()),
            budget: RetryBudget::new(budget_permille),
            tickets: AtomicUsize::new(0),
            tiers,
        });
        routes.insert(route.clone(), state.clone());
        state
    }

    /// The most recent switches, oldest first.
    pub fn recent(&self) -> Vec<FailoverEvent> {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn record(&self, event: FailoverEvent) {
        let elapsed_ms = event.elapsed.map(|d| d.as_millis() as u64);
        match event.kind {
            "all-down" => {
                tracing::warn!(route = %event.route, from = ?event.from, cause = %event.cause, elapsed_ms, "route has no region up: answering 503")
            }
            kind => {
                tracing::warn!(route = %event.route, from = ?event.from, to = ?event.to, kind, cause = %event.cause, elapsed_ms, "route switched regions")
            }
        }
        metrics::counter!(
            "gateway_failovers_total",
            "route" => event.route.to_string(),
            "from" => event.from.join("+"),
            "to" => event.to.join("+"),
            "kind" => event.kind
        )
        .increment(1);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_EVENTS {
            recent.pop_front();
        }
        recent.push_back(event);
    }
}

impl RouteFailover {
    /// Next ticket for weighted choice within a tier.
    pub fn next_ticket(&self) -> usize {
        self.tickets.fetch_add(1, Ordering::Relaxed)
    }

    /// The tier serving the route now, switching (and logging once) when health requires it.
    /// `tiers[i]` are the regions of tier `i`. `None` when no region of any tier is up.
    pub fn current_tier(
        &self,
        book: &FailoverBook,
        route: &Arc<str>,
        tiers: &[Vec<Arc<RegionHealth>>],
        hold_down: Duration,
    ) -> Option<usize> {
        let active = self.active.load(Ordering::Acquire);
        let wanted = desired_tier(active, tiers, hold_down);
        if wanted == Some(active) {
            return wanted;
        }
        let _guard = self.switch.lock().unwrap_or_else(|e| e.into_inner());
        // Another request may have switched while we waited.
        let active = self.active.load(Ordering::Acquire);
        let wanted = desired_tier(active, tiers, hold_down);
        let new = wanted.unwrap_or(NONE);
        if new == active {
            return wanted;
        }
        self.active.store(new, Ordering::Release);
        let names = |t: usize| -> Vec<String> {
            tiers
                .get(t)
                .map(|rs| rs.iter().map(|r| r.name.to_string()).collect())
                .unwrap_or_default()
        };
        let (kind, cause, elapsed) = match wanted {
            // The first choice after start is not a switch.
            Some(_) if active == UNSET => return wanted,
            None => (
                "all-down",
                "no region of any tier is up".to_string(),
                detection(tiers.get(active)),
            ),
            Some(_) if active == NONE => ("recovered", "a region is up again".to_string(), None),
            Some(t) if t > active => (
                "failover",
                "every region of the active tier is down".to_string(),
                detection(tiers.get(active)),
            ),
            Some(t) => {
                let up = tiers[t].iter().filter_map(|r| r.up_duration()).max();
                (
                    "failback",
                    format!("higher tier stayed up for the hold-down of {hold_down:?}"),
                    up,
                )
            }
        };
        book.record(FailoverEvent {
            at: SystemTime::now(),
            route: route.clone(),
            from: names(active),
            to: names(new),
            kind,
            cause,
            elapsed,
        });
        wanted
    }
}

/// Time from the first failure seen in `tier`'s endpoints until now.
fn detection(tier: Option<&Vec<Arc<RegionHealth>>>) -> Option<Duration> {
    let now = tokio::time::Instant::now();
    tier?
        .iter()
        .flat_map(|r| {
            r.members()
                .endpoints
                .iter()
                .filter_map(|e| e.first_failure())
                .collect::<Vec<_>>()
        })
        .min()
        .map(|first| now.duration_since(first))
}

/// The tier that should serve, given the active one.
fn desired_tier(
    active: usize,
    tiers: &[Vec<Arc<RegionHealth>>],
    hold_down: Duration,
) -> Option<usize> {
    let active = match active {
        UNSET => Active::Unset,
        NONE => Active::None,
        t => Active::Tier(t),
    };
    decide(active, tiers, hold_down)
}

/// The active tier as the decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Active {
    /// No request or health change has chosen a tier yet (the first choice is not a switch).
    Unset,
    /// No tier was up.
    None,
    /// This tier serves.
    Tier(usize),
}

/// What the failover decision reads of a region (each read only when the policy needs it:
/// the request path calls this, and most requests only ask whether the active tier is up).
pub(crate) trait RegionState {
    /// Healthy and not drained.
    fn up(&self) -> bool;
    /// How long it has been up (`None` while down).
    fn up_for(&self) -> Option<Duration>;
    /// It went down at least once since the gateway started (a drain does not count).
    fn has_failed(&self) -> bool;
}

impl RegionState for Arc<RegionHealth> {
    fn up(&self) -> bool {
        self.is_up()
    }
    fn up_for(&self) -> Option<Duration> {
        self.up_duration()
    }
    fn has_failed(&self) -> bool {
        RegionHealth::has_failed(self)
    }
}

/// The tier that should serve a route (the policy in the module doc), or `None` when no tier
/// has an up region: a pure function of the active tier, the regions' states and the hold-down.
pub(crate) fn decide<R: RegionState>(
    active: Active,
    tiers: &[Vec<R>],
    hold_down: Duration,
) -> Option<usize> {
    let tier_up = |t: &Vec<R>| t.iter().any(|r| r.up());
    let held = |t: &Vec<R>| t.iter().any(|r| r.up_for().is_some_and(|d| d >= hold_down));
    // Stable: up for the hold-down, or up and never failed since the gateway started.
    let stable = |t: &Vec<R>| held(t) || t.iter().any(|r| r.up() && !r.has_failed());
    let first_up = tiers.iter().position(tier_up)?;
    let active = match active {
        Active::Unset => return Some(first_up),
        Active::Tier(t) if t < tiers.len() && tier_up(&tiers[t]) => t,
        // Fail over to the first stable tier, not to a higher one that only just came back
        // and may be flapping; with no stable tier, to the first one that is up.
        Active::None | Active::Tier(_) => {
            return Some(tiers.iter().position(stable).unwrap_or(first_up))
        }
    };
    // Active tier is up: move up only to a tier that has been up for the hold-down.
    Some(tiers[..active].iter().position(held).unwrap_or(active))
}

/// Caps retries at a share of requests (with a small floor), over a sliding two-second window,
/// so that a sick fleet is not stormed with retries.
pub struct RetryBudget {
    permille: AtomicU64,
    epoch: tokio::time::Instant,
    /// Second index of the current window slot.
    slot: AtomicU64,
    requests: [AtomicU64; 2],
    retries: [AtomicU64; 2],
}

/// Retries always allowed per window, whatever the request count.
const RETRY_FLOOR: u64 = 10;

impl RetryBudget {
    /// A budget allowing `permille`/1000 of requests to be retried.
    pub fn new(permille: u32) -> Self {
        Self {
            permille: AtomicU64::new(u64::from(permille)),
            epoch: tokio::time::Instant::now(),
            slot: AtomicU64::new(0),
            requests: [AtomicU64::new(0), AtomicU64::new(0)],
            retries: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    fn set_permille(&self, permille: u32) {
        self.permille.store(u64::from(permille), Ordering::Relaxed);
    }

    fn index(&self) -> usize {
        let now = self.epoch.elapsed().as_secs();
        let slot = self.slot.load(Ordering::Relaxed);
        if now != slot
            && self
                .slot
                .compare_exchange(slot, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let idx = (now % 2) as usize;
            // A new second: its slot starts empty; if more than a second passed, both do.
            if now > slot + 1 {
                let other = 1 - idx;
                self.requests[other].store(0, Ordering::Relaxed);
                self.retries[other].store(0, Ordering::Relaxed);
            }
            self.requests[idx].store(0, Ordering::Relaxed);
            self.retries[idx].store(0, Ordering::Relaxed);
        }
        (now % 2) as usize
    }

    /// Counts a request.
    pub fn on_request(&self) {
        let i = self.index();
        self.requests[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget, or says no.
    pub fn try_retry(&self) -> bool {
        let i = self.index();
        let requests: u64 = self
            .requests
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        let retries: u64 = self.retries.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let allowed = RETRY_FLOOR + requests * self.permille.load(Ordering::Relaxed) / 1000;
        if retries >= allowed {
            return false;
        }
        self.retries[i].fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(30);

    #[derive(Debug, Clone, Copy)]
    struct RegionView {
        up: bool,
        up_for: Option<Duration>,
        has_failed: bool,
    }

    impl RegionState for RegionView {
        fn up(&self) -> bool {
            self.up
        }
        fn up_for(&self) -> Option<Duration> {
            self.up_for
        }
        fn has_failed(&self) -> bool {
            self.has_failed
        }
    }

    /// A region: up for `secs` seconds (`None`: down), and whether it ever failed.
    fn r(up_for_secs: Option<u64>, has_failed: bool) -> RegionView {
        RegionView {
            up: up_for_secs.is_some(),
            up_for: up_for_secs.map(Duration::from_secs),
            has_failed,
        }
    }

    const DOWN: Option<u64> = None;

    #[test]
    fn the_failover_decision_table() {
        let fresh = r(Some(1), false); // up since start, never failed
        let held = r(Some(60), true); // came back, stayed up past the hold-down
        let back = r(Some(5), true); // came back 5 s ago: inside the hold-down (may flap)
        let down = r(DOWN, true);
        type Row = (&'static str, Active, Vec<Vec<RegionView>>, Option<usize>);
        let rows: &[Row] = &[
            (
                "first choice: the first up tier",
                Active::Unset,
                vec![vec![back], vec![held]],
                Some(0),
            ),
            (
                "first choice with the first tier down",
                Active::Unset,
                vec![vec![down], vec![fresh]],
                Some(1),
            ),
            (
                "active tier up: stay",
                Active::Tier(1),
                vec![vec![back], vec![fresh]],
                Some(1),
            ),
            (
                "failover: active tier down",
                Active::Tier(0),
                vec![vec![down], vec![fresh]],
                Some(1),
            ),
            (
                "failback after the hold-down",
                Active::Tier(1),
                vec![vec![held], vec![fresh]],
                Some(0),
            ),
            (
                "no failback inside the hold-down (flapping resets it)",
                Active::Tier(1),
                vec![vec![back], vec![fresh]],
                Some(1),
            ),
            (
                "failover skips a higher tier inside its hold-down",
                Active::Tier(1),
                vec![vec![back], vec![down], vec![fresh]],
                Some(2),
            ),
            (
                "with no stable tier, the first up one",
                Active::Tier(2),
                vec![vec![back], vec![down], vec![down]],
                Some(0),
            ),
            (
                "weighted tier: up while any region is up",
                Active::Tier(0),
                vec![vec![down, fresh], vec![fresh]],
                Some(0),
            ),
            (
                "every region down: none",
                Active::Tier(0),
                vec![vec![down], vec![down]],
                None,
            ),
            (
                "recovery from all-down: the first stable",
                Active::None,
                vec![vec![back], vec![fresh]],
                Some(1),
            ),
            (
                "a drained region counts as down",
                Active::Tier(0),
                vec![vec![r(DOWN, false)], vec![fresh]],
                Some(1),
            ),
        ];
        for (name, active, tiers, want) in rows {
            assert_eq!(decide(*active, tiers, HOLD), *want, "{name}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn budget_allows_a_share_plus_a_floor() {
        let b = RetryBudget::new(200);
        for _ in 0..100 {
            b.on_request();
        }
        let granted = (0..100).filter(|_| b.try_retry()).count();
        assert_eq!(granted, 10 + 20);
        // Two seconds later the window has moved on.
        tokio::time::advance(Duration::from_secs(2)).await;
        let granted = (0..100).filter(|_| b.try_retry()).count();
        assert_eq!(granted, 10);
    }
}
