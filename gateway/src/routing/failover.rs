//! Per-route failover: which priority tier serves a route, with failback hysteresis, and the
//! route's retry budget. State lives in a [`FailoverBook`] keyed by route name, outside the
//! routing snapshot, so it survives reloads.
//!
//! Policy ([`decide`], a pure function with a table test):
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
//!
//! One writer: the [`crate::control::controller`] task applies decisions when health changes (it subscribes to
//! the hub's events), when an operator drains, after a reload, and when a hold-down or drain
//! runs out. It stores each route's active tier, logs, counts and records each switch once.
//! Requests and `/status` only read ([`RouteFailover::serving`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use gateway_health::RegionHealth;

pub use crate::routing::budget::RetryBudget;
use crate::routing::degraded::Degradations;
use crate::routing::early::EarlyState;

// Log lines keep the target this module had before the folders: operators filter on it.
const LOG_TARGET: &str = "gateway::failover";

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
    /// What kind of switch.
    pub kind: SwitchKind,
    /// Why, for people.
    pub cause: String,
    /// Failover: time from the first failure observed in the left tier to the switch.
    /// Failback: how long the new tier had been up.
    pub elapsed: Option<Duration>,
}

/// The kinds of switch, as logs, metrics and `/status` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchKind {
    /// The active tier went down; a lower (or another stable) tier serves.
    Failover,
    /// A higher tier stayed up for the hold-down and serves again.
    Failback,
    /// No region of any tier is up.
    AllDown,
    /// A region is up again after every region was down.
    Recovered,
}

impl SwitchKind {
    /// `failover`, `failback`, `all-down` or `recovered`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failover => "failover",
            Self::Failback => "failback",
            Self::AllDown => "all-down",
            Self::Recovered => "recovered",
        }
    }
}

/// Failover state of one route.
pub struct RouteFailover {
    /// Written only by the controller (and set once when the state is created).
    active: AtomicActive,
    /// Retry budget of the route.
    pub budget: RetryBudget,
    /// Early-retry state of the route (kept when the tiers change too).
    pub early: Arc<EarlyState>,
    /// Each region's degradation for the route (kept when the tiers change too).
    pub degradations: Arc<Degradations>,
    /// Rotates weighted choices within a tier.
    tickets: AtomicUsize,
    /// Requests in flight on the route (admission control).
    pub in_flight: Arc<AtomicUsize>,
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
        early_budget_permille: u32,
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
            existing.early.budget.set_permille(early_budget_permille);
            if existing.tiers == tiers {
                existing.budget.set_permille(budget_permille);
                return existing.clone();
            }
        }
        let active = match routes.get(route) {
            None => Active::Unset,
            Some(old) => match old.active.load() {
                Active::Tier(i) => old
                    .tiers
                    .get(i)
                    .and_then(|regions| tiers.iter().position(|t| t == regions))
                    .map_or(Active::Unset, Active::Tier),
                other => other,
            },
        };
        let state = Arc::new(RouteFailover {
            active: AtomicActive::new(active),
            budget: RetryBudget::new(budget_permille),
            early: routes.get(route).map_or_else(
                || Arc::new(EarlyState::new(early_budget_permille)),
                |old| old.early.clone(),
            ),
            degradations: routes
                .get(route)
                .map(|old| old.degradations.clone())
                .unwrap_or_default(),
            tickets: AtomicUsize::new(0),
            // A new tier layout is a new state; the requests in flight stay counted.
            in_flight: routes
                .get(route)
                .map(|old| old.in_flight.clone())
                .unwrap_or_default(),
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

    /// Logs, counts and keeps a switch (called by the controller, once per switch).
    pub(crate) fn record(&self, event: FailoverEvent) {
        let elapsed_ms = event.elapsed.map(|d| d.as_millis() as u64);
        let kind = event.kind.as_str();
        match event.kind {
            SwitchKind::AllDown => {
                tracing::warn!(target: LOG_TARGET, route = %event.route, from = ?event.from, cause = %event.cause, elapsed_ms, "route has no region up")
            }
            _ => {
                tracing::warn!(target: LOG_TARGET, route = %event.route, from = ?event.from, to = ?event.to, kind, cause = %event.cause, elapsed_ms, "route switched regions")
            }
        }
        crate::telemetry::metrics::failover_switch(&event.route, &event.from, &event.to, kind);
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

    /// The active tier as the controller last stored it.
    pub(crate) fn active(&self) -> Active {
        self.active.load()
    }

    /// Stores a new active tier (only the controller calls this).
    pub(crate) fn set_active(&self, active: Active) {
        self.active.store(active);
    }

    /// The tier serving the route now (`tiers[i]`: the regions of tier `i`), or `None` when no
    /// region of any tier is up. Reads only: when health changed and the controller has not
    /// caught up yet (microseconds), the answer is the decision it is about to apply.
    pub fn serving(&self, tiers: &[Vec<Arc<RegionHealth>>], hold_down: Duration) -> Option<usize> {
        let active = self.active.load();
        if let Active::Tier(t) = active {
            if tiers.get(t).is_some_and(|t| t.iter().any(|r| r.is_up())) {
                return Some(t);
            }
        }
        decide(active, tiers, hold_down).map_or(active.tier(), |s| s.to.tier())
    }
}

/// The active tier as the decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Active {
    /// No decision was applied yet (the first choice is not a switch).
    Unset,
    /// No tier was up.
    None,
    /// This tier serves.
    Tier(usize),
}

impl Active {
    /// The serving tier, if any.
    pub fn tier(self) -> Option<usize> {
        match self {
            Self::Tier(t) => Some(t),
            Self::Unset | Self::None => None,
        }
    }
}

/// An [`Active`] in one atomic word.
struct AtomicActive(AtomicUsize);

impl AtomicActive {
    const UNSET: usize = usize::MAX;
    const NONE: usize = usize::MAX - 1;

    fn new(active: Active) -> Self {
        Self(AtomicUsize::new(Self::encode(active)))
    }

    fn encode(active: Active) -> usize {
        match active {
            Active::Unset => Self::UNSET,
            Active::None => Self::NONE,
            Active::Tier(t) => t,
        }
    }

    fn load(&self) -> Active {
        match self.0.load(Ordering::Acquire) {
            Self::UNSET => Active::Unset,
            Self::NONE => Active::None,
            t => Active::Tier(t),
        }
    }

    fn store(&self, active: Active) {
        self.0.store(Self::encode(active), Ordering::Release);
    }
}

/// What the failover decision reads of a region (each read only when the policy needs it).
pub(crate) trait RegionState {
    /// Healthy and not drained.
    fn up(&self) -> bool;
    /// How long it has been up (`None` while down).
    fn up_for(&self) -> Option<Duration>;
    /// It went down at least once since the gateway started (a drain does not count).
    fn has_failed(&self) -> bool;
    /// Time left of an operator drain.
    fn drained_for(&self) -> Option<Duration>;
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
    fn drained_for(&self) -> Option<Duration> {
        self.drain_remaining()
    }
}

/// A change of a route's active tier, as [`decide`] returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Switch {
    /// The new active tier.
    pub to: Active,
    /// `None` for the first choice after start, which is not a switch.
    pub kind: Option<SwitchKind>,
}

/// The switch a route needs now (the policy in the module doc), or `None` to stay: a pure
/// function of the active tier, the regions' states and the hold-down.
pub(crate) fn decide<R: RegionState>(
    active: Active,
    tiers: &[Vec<R>],
    hold_down: Duration,
) -> Option<Switch> {
    let to = match wanted_tier(active, tiers, hold_down) {
        Some(t) => Active::Tier(t),
        None => Active::None,
    };
    if to == active {
        return None;
    }
    let kind = match (active, to) {
        (Active::Unset, Active::Tier(_)) => None,
        (_, Active::None) => Some(SwitchKind::AllDown),
        (Active::None, _) => Some(SwitchKind::Recovered),
        (Active::Tier(from), Active::Tier(to)) if to > from => Some(SwitchKind::Failover),
        _ => Some(SwitchKind::Failback),
    };
    Some(Switch { to, kind })
}

/// The tier that should serve, or `None` when no tier has an up region.
fn wanted_tier<R: RegionState>(
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

/// How long until the decision for a route may change without any health event: a higher
/// tier's region completing its hold-down, or a drain running out. `None`: only an event can
/// change it.
pub(crate) fn next_change<R: RegionState>(
    active: Active,
    tiers: &[Vec<R>],
    hold_down: Duration,
) -> Option<Duration> {
    let above = match active {
        Active::Tier(t) => t,
        Active::Unset | Active::None => 0,
    };
    tiers
        .iter()
        .enumerate()
        .flat_map(|(i, tier)| tier.iter().map(move |r| (i, r)))
        .filter_map(|(i, r)| {
            let hold = (i < above)
                .then(|| r.up_for())
                .flatten()
                .filter(|up| *up < hold_down)
                .map(|up| hold_down - up);
            match (hold, r.drained_for()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        })
        .min()
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
        drained_for: Option<Duration>,
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
        fn drained_for(&self) -> Option<Duration> {
            self.drained_for
        }
    }

    /// A region: up for `secs` seconds (`None`: down), and whether it ever failed.
    fn r(up_for_secs: Option<u64>, has_failed: bool) -> RegionView {
        RegionView {
            up: up_for_secs.is_some(),
            up_for: up_for_secs.map(Duration::from_secs),
            has_failed,
            drained_for: None,
        }
    }

    /// A healthy region drained for `secs` more seconds (it counts as down).
    fn drained(secs: u64) -> RegionView {
        RegionView {
            drained_for: Some(Duration::from_secs(secs)),
            ..r(None, false)
        }
    }

    const DOWN: Option<u64> = None;
    const STAY: Option<(Active, Option<SwitchKind>)> = None;

    fn to(t: usize, kind: SwitchKind) -> Option<(Active, Option<SwitchKind>)> {
        Some((Active::Tier(t), Some(kind)))
    }

    #[test]
    fn the_failover_decision_table() {
        use SwitchKind::*;
        let fresh = r(Some(1), false); // up since start, never failed
        let held = r(Some(60), true); // came back, stayed up past the hold-down
        let back = r(Some(5), true); // came back 5 s ago: inside the hold-down (may flap)
        let down = r(DOWN, true);
        type Row = (
            &'static str,
            Active,
            Vec<Vec<RegionView>>,
            Option<(Active, Option<SwitchKind>)>,
        );
        let rows: &[Row] = &[
            (
                "first choice: the first up tier, not a switch",
                Active::Unset,
                vec![vec![back], vec![held]],
                Some((Active::Tier(0), None)),
            ),
            (
                "first choice with the first tier down",
                Active::Unset,
                vec![vec![down], vec![fresh]],
                Some((Active::Tier(1), None)),
            ),
            (
                "first choice with every tier down",
                Active::Unset,
                vec![vec![down], vec![down]],
                Some((Active::None, Some(AllDown))),
            ),
            (
                "active tier up: stay",
                Active::Tier(1),
                vec![vec![back], vec![fresh]],
                STAY,
            ),
            (
                "failover: active tier down",
                Active::Tier(0),
                vec![vec![down], vec![fresh]],
                to(1, Failover),
            ),
            (
                "failback after the hold-down",
                Active::Tier(1),
                vec![vec![held], vec![fresh]],
                to(0, Failback),
            ),
            (
                "no failback inside the hold-down (flapping resets it)",
                Active::Tier(1),
                vec![vec![back], vec![fresh]],
                STAY,
            ),
            (
                "failover skips a higher tier inside its hold-down",
                Active::Tier(1),
                vec![vec![back], vec![down], vec![fresh]],
                to(2, Failover),
            ),
            (
                "with no stable tier, the first up one",
                Active::Tier(2),
                vec![vec![back], vec![down], vec![down]],
                to(0, Failback),
            ),
            (
                "weighted tier: up while any region is up",
                Active::Tier(0),
                vec![vec![down, fresh], vec![fresh]],
                STAY,
            ),
            (
                "every region down: none",
                Active::Tier(0),
                vec![vec![down], vec![down]],
                Some((Active::None, Some(AllDown))),
            ),
            (
                "all down stays all down",
                Active::None,
                vec![vec![down], vec![drained(10)]],
                STAY,
            ),
            (
                "recovery from all-down: the first stable",
                Active::None,
                vec![vec![back], vec![fresh]],
                Some((Active::Tier(1), Some(Recovered))),
            ),
            (
                "a drained region counts as down",
                Active::Tier(0),
                vec![vec![drained(10)], vec![fresh]],
                to(1, Failover),
            ),
            (
                "a drain in the lower tier does not move traffic back up early",
                Active::Tier(1),
                vec![vec![back], vec![fresh, drained(10)]],
                STAY,
            ),
        ];
        for (name, active, tiers, want) in rows {
            let got = decide(*active, tiers, HOLD).map(|s| (s.to, s.kind));
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn when_the_decision_can_change_without_an_event() {
        let s = Duration::from_secs;
        let fresh = r(Some(1), false);
        let back = r(Some(5), true);
        type Row = (&'static str, Active, Vec<Vec<RegionView>>, Option<Duration>);
        let rows: &[Row] = &[
            (
                "serving the first tier: nothing is timed",
                Active::Tier(0),
                vec![vec![fresh], vec![back]],
                None,
            ),
            (
                "a higher tier inside its hold-down: when the hold-down completes",
                Active::Tier(1),
                vec![vec![back], vec![fresh]],
                Some(s(25)),
            ),
            (
                "the higher tier still down: only an event",
                Active::Tier(1),
                vec![vec![r(DOWN, true)], vec![fresh]],
                None,
            ),
            (
                "a drain anywhere: when it runs out",
                Active::Tier(0),
                vec![vec![fresh], vec![drained(7)]],
                Some(s(7)),
            ),
            (
                "the earliest of both",
                Active::Tier(1),
                vec![vec![back, drained(3)], vec![fresh]],
                Some(s(3)),
            ),
            (
                "all down with a drain: when it runs out",
                Active::None,
                vec![vec![drained(9)], vec![r(DOWN, true)]],
                Some(s(9)),
            ),
        ];
        for (name, active, tiers, want) in rows {
            assert_eq!(next_change(*active, tiers, HOLD), *want, "{name}");
        }
    }
}
