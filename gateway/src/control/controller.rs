//! The one writer of every route's active tier (the policy is in [`crate::routing::failover`]'s module
//! doc).
//!
//! The controller task decides again when the health hub publishes an event, when it is woken
//! through a [`FailoverHandle`] (a drain, an applied reload), and when the earliest timed change
//! comes due (a hold-down completing, a drain running out: [`crate::routing::failover::next_change`]). There is no
//! polling loop, except while a route has `degraded` (failover for slowness): then the regions'
//! latency is looked at every [`crate::routing::degraded::TICK`]. Each switch is stored, logged,
//! counted and recorded once, here.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use gateway_health::{DrainEnd, DrainNote, HealthEvent, RegionHealth};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::routing::degraded::{Degradation, Observation, TICK};
use crate::routing::failover::{
    decide, next_change, Active, FailoverEvent, RegionState, SwitchKind,
};
use crate::routing::snapshot::{RoutePlan, RoutingSnapshot};

// Log lines keep the target this module had before the folders: operators filter on it.
const LOG_TARGET: &str = "gateway::controller";

/// A wake-up, with someone waiting for the decisions to be applied or not.
type Wakeup = Option<oneshot::Sender<()>>;

/// Wakes the controller; cheap to clone.
#[derive(Clone)]
pub(crate) struct FailoverHandle {
    tx: mpsc::UnboundedSender<Wakeup>,
}

/// The controller's side of a [`FailoverHandle`], consumed by [`run`].
pub(crate) struct Wakeups(mpsc::UnboundedReceiver<Wakeup>);

impl FailoverHandle {
    /// A handle and the wake-ups it sends, for [`run`].
    pub(crate) fn new() -> (Self, Wakeups) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, Wakeups(rx))
    }

    /// Decide again soon; returns at once.
    pub(crate) fn poke(&self) {
        let _ = self.tx.send(None);
    }

    /// Decide again and wait until the decisions are applied, so that a `/status` read after
    /// a drain shows its effect. Gives up after a second (readers compute a pending decision
    /// themselves, so nothing routes wrongly meanwhile).
    pub(crate) async fn settle(&self) {
        let (done, applied) = oneshot::channel();
        if self.tx.send(Some(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), applied).await;
        }
    }
}

/// Applies failover decisions for the current snapshot until `shutdown` fires or the hub is
/// gone.
pub(crate) async fn run(
    snapshot: Arc<ArcSwap<RoutingSnapshot>>,
    mut events: broadcast::Receiver<HealthEvent>,
    mut wakeups: Wakeups,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut handles_open = true;
    loop {
        let next = evaluate(&snapshot.load());
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        // Hold-downs are measured in whole milliseconds: wake just after the boundary.
        let due = async {
            match next {
                Some(d) => tokio::time::sleep(d + Duration::from_millis(1)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            event = events.recv() => {
                if let Err(RecvError::Closed) = event {
                    return;
                }
            }
            wakeup = wakeups.0.recv(), if handles_open => match wakeup {
                Some(w) => waiting.extend(w),
                None => handles_open = false,
            },
            _ = due => {}
        }
        // One decision covers a burst: take whatever is queued already.
        while let Ok(_) | Err(TryRecvError::Lagged(_)) = events.try_recv() {}
        while let Ok(w) = wakeups.0.try_recv() {
            waiting.extend(w);
        }
    }
}

/// Applies every route's decision; returns how long until the next timed change, if any.
pub(crate) fn evaluate(snapshot: &RoutingSnapshot) -> Option<Duration> {
    snapshot
        .routes
        .iter()
        .filter_map(|plan| apply(snapshot, plan))
        .min()
}

fn apply(snapshot: &RoutingSnapshot, plan: &RoutePlan) -> Option<Duration> {
    let state = &plan.failover;
    let hold_down = plan.route.failback_hold_down;
    let from = state.active();
    let Some(settings) = plan.route.degraded else {
        if let Some(switch) = decide(from, &plan.tier_health, hold_down) {
            state.set_active(switch.to);
            if let Some(kind) = switch.kind {
                snapshot
                    .book
                    .record(describe(plan, from, switch.to, kind, hold_down, None));
            }
        }
        return next_change(state.active(), &plan.tier_health, hold_down);
    };
    // Failover for slowness: the regions' latency is looked at every tick, and the decision
    // sees a degraded region as down while another region of the route could serve.
    let now = tokio::time::Instant::now();
    let cells = plan
        .tier_health
        .iter()
        .flatten()
        .zip(plan.degradation.iter().flatten());
    for (health, cell) in cells.clone() {
        if cell.observe(Observation::of(health), &settings, now) {
            tracing::warn!(target: LOG_TARGET, route = %plan.route.name, region = %health.name, ttfb_ms = cell.last_ttfb().map(|t| t.as_millis() as u64), slo_ms = settings.ttfb.as_millis() as u64, "region degraded for the route: slower than its SLO");
        }
    }
    let fast_up = cells
        .clone()
        .filter(|(h, d)| h.is_up() && !d.is_degraded())
        .count();
    let views: Vec<Vec<View>> = plan
        .tier_health
        .iter()
        .zip(&plan.degradation)
        .map(|(tier, cells)| {
            tier.iter()
                .zip(cells)
                .map(|(health, degradation)| View {
                    health,
                    degradation,
                    counts: fast_up >= 1,
                    now,
                })
                .collect()
        })
        .collect();
    if let Some(switch) = decide(from, &views, hold_down) {
        state.set_active(switch.to);
        if let Some(kind) = switch.kind {
            let slow: Vec<String> = from
                .tier()
                .and_then(|t| plan.degradation.get(t).zip(plan.tier_health.get(t)))
                .map(|(cells, tier)| {
                    cells
                        .iter()
                        .zip(tier)
                        .filter(|(d, h)| d.is_degraded() && h.is_up())
                        .map(|(d, h)| {
                            let ttfb = d.last_ttfb().unwrap_or_default();
                            format!("{} ({} ms)", h.name, ttfb.as_millis())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let cause = (kind == SwitchKind::Failover && !slow.is_empty()).then(|| {
                format!(
                    "degraded: {} slower than the route's SLO of {} ms (median time to first byte) for {:?}",
                    slow.join(", "),
                    settings.ttfb.as_millis(),
                    settings.for_
                )
            });
            snapshot
                .book
                .record(describe(plan, from, switch.to, kind, hold_down, cause));
        }
    }
    let next = next_change(state.active(), &views, hold_down);
    Some(next.map_or(TICK, |n| n.min(TICK)))
}

/// A region as the failover decision sees it for a route with `degraded`: down while
/// degraded (when `counts`: another region of the route is up and not degraded), and up again
/// only from when it was offered traffic again (so the failback hold-down counts from then).
struct View<'a> {
    health: &'a Arc<RegionHealth>,
    degradation: &'a Degradation,
    counts: bool,
    now: tokio::time::Instant,
}

impl View<'_> {
    fn degraded(&self) -> bool {
        self.counts && self.degradation.is_degraded()
    }
}

impl RegionState for View<'_> {
    fn up(&self) -> bool {
        self.health.is_up() && !self.degraded()
    }
    fn up_for(&self) -> Option<Duration> {
        if self.degraded() {
            return None;
        }
        let up = self.health.up_duration()?;
        Some(match self.degradation.recovered_for(self.now) {
            Some(back) => up.min(back),
            None => up,
        })
    }
    fn has_failed(&self) -> bool {
        self.health.has_failed() || self.degradation.recovered_for(self.now).is_some()
    }
    fn drained_for(&self) -> Option<Duration> {
        self.health.drain_remaining()
    }
}

/// The event people see for a switch of `plan` from `from` to `to`.
fn describe(
    plan: &RoutePlan,
    from: Active,
    to: Active,
    kind: SwitchKind,
    hold_down: Duration,
    cause_override: Option<String>,
) -> FailoverEvent {
    let tier = |a: Active| a.tier().and_then(|t| plan.tier_health.get(t));
    let names = |a: Active| -> Vec<String> {
        tier(a)
            .map(|rs| rs.iter().map(|r| r.name.to_string()).collect())
            .unwrap_or_default()
    };
    let (cause, elapsed) = match kind {
        SwitchKind::AllDown => (
            match plan.route.on_all_down {
                gateway_config::OnAllDown::FailOpen => {
                    "no region of any tier is up; requests fail open (they still try the endpoints)"
                }
                gateway_config::OnAllDown::Reject => {
                    "no region of any tier is up; requests get 503"
                }
            }
            .to_string()
                + &drained(tier(from)),
            detection(tier(from)),
        ),
        SwitchKind::Recovered => (
            "a region is up again".to_string() + &drains_ended(tier(to)),
            None,
        ),
        SwitchKind::Failover => (
            "every region of the active tier is down".to_string() + &drained(tier(from)),
            detection(tier(from)),
        ),
        SwitchKind::Failback => (
            format!("higher tier stayed up for the hold-down of {hold_down:?}")
                + &drains_ended(tier(to)),
            tier(to).and_then(|rs| rs.iter().filter_map(|r| r.up_duration()).max()),
        ),
    };
    FailoverEvent {
        at: SystemTime::now(),
        route: plan.route.name.clone(),
        from: names(from),
        to: names(to),
        kind,
        cause: cause_override.unwrap_or(cause),
        elapsed,
    }
}

/// The drains in force in `tier`, as the tail of a failover's cause (empty when none): a
/// drill says it was a drill, with the reason and who the operator gave, also for a region
/// that is down as well as drained.
fn drained(tier: Option<&Vec<Arc<RegionHealth>>>) -> String {
    let drains: Vec<String> = tier
        .into_iter()
        .flatten()
        .filter_map(|r| Some(format!("{} {}", r.name, drain_text(&r.drain_note()?))))
        .collect();
    if drains.is_empty() {
        return String::new();
    }
    format!("; drained by the operator: {}", drains.join("; "))
}

/// The drains whose end brought `tier`'s regions back, as the tail of a failback's cause
/// (empty when none).
fn drains_ended(tier: Option<&Vec<Arc<RegionHealth>>>) -> String {
    let ended: Vec<String> = tier
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let (note, end) = r.ended_drain()?;
            let how = match end {
                DrainEnd::Lifted => "lifted by the operator",
                DrainEnd::RanOut => "ran out",
            };
            Some(format!("{}'s drain {how} ({})", r.name, drain_text(&note)))
        })
        .collect();
    if ended.is_empty() {
        return String::new();
    }
    format!("; {}", ended.join("; "))
}

/// `reason "fire drill", by alice`, or `no reason given` when the operator gave neither.
fn drain_text(note: &DrainNote) -> String {
    match (note.reason.is_empty(), note.by.is_empty()) {
        (true, true) => "no reason given".into(),
        (false, true) => format!("reason {:?}", note.reason),
        (true, false) => format!("by {}", note.by),
        (false, false) => format!("reason {:?}, by {}", note.reason, note.by),
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

#[cfg(test)]
mod tests {
    //! The controller over a real hub, on a paused clock: switches happen on health events and
    //! when a hold-down or drain runs out, each recorded once.

    use super::*;
    use crate::routing::failover::FailoverBook;
    use gateway_health::hub::RegionMembers;
    use gateway_health::{HealthHub, HealthPolicy, TargetKey};

    const CONFIG: &str = "listeners: [{ name: http, bind: \"127.0.0.1:18080\" }]\nregions:\n  fra: { endpoints: [{ id: f1, address: \"127.0.0.1:1\" }] }\n  ber: { endpoints: [{ id: b1, address: \"127.0.0.1:2\" }] }\nroutes:\n  - { name: app, regions: [fra, ber], failback: { hold_down: 30s } }\n";

    struct Bed {
        hub: HealthHub,
        snapshot: Arc<ArcSwap<RoutingSnapshot>>,
        handle: FailoverHandle,
        _stop: watch::Sender<bool>,
    }

    impl Bed {
        fn start() -> Self {
            let config = gateway_config::parse(CONFIG, std::path::Path::new("t.yaml"))
                .expect("valid config");
            let hub = HealthHub::new();
            let snapshot = Arc::new(ArcSwap::from_pointee(RoutingSnapshot::build(
                Arc::new(config),
                hub.clone(),
                Arc::new(FailoverBook::default()),
                crate::routing::tls::Certificates::default(),
            )));
            let (handle, wakeups) = FailoverHandle::new();
            let (stop, stopped) = watch::channel(false);
            let bed = Self {
                hub: hub.clone(),
                snapshot: snapshot.clone(),
                handle,
                _stop: stop,
            };
            for region in 0..2 {
                bed.set_up(region, true);
            }
            tokio::spawn(run(snapshot, hub.subscribe(), wakeups, stopped));
            bed
        }

        fn region(&self, i: usize) -> Arc<RegionHealth> {
            self.snapshot.load().regions[i].health.clone()
        }

        /// Region `i` up (its endpoint a member) or down (no members).
        fn set_up(&self, i: usize, up: bool) {
            let snapshot = self.snapshot.load();
            let region = &snapshot.config.regions[i];
            let cell = self.region(i);
            let endpoints = if up {
                let gateway_config::EndpointAddress::Socket(addr) = region.endpoints[0].address
                else {
                    unreachable!("literal addresses")
                };
                let key = TargetKey {
                    id: region.endpoints[0].id.clone(),
                    addr,
                };
                let policy = HealthPolicy {
                    rise: 1,
                    fall: 1,
                    consecutive_failures: None,
                    ejection: Duration::ZERO,
                    max_ejection: Duration::ZERO,
                };
                vec![self.hub.endpoint(&cell, key, policy)]
            } else {
                Vec::new()
            };
            self.hub.set_members(
                &cell,
                RegionMembers {
                    endpoints,
                    ..Default::default()
                },
            );
        }

        /// The stored active tier, after letting the controller run.
        async fn active(&self) -> Active {
            self.handle.settle().await;
            self.snapshot.load().routes[0].failover.active()
        }

        fn causes(&self) -> Vec<String> {
            let snapshot = self.snapshot.load();
            snapshot
                .book
                .recent()
                .iter()
                .map(|e| e.cause.clone())
                .collect()
        }

        fn kinds(&self) -> Vec<&'static str> {
            let snapshot = self.snapshot.load();
            snapshot
                .book
                .recent()
                .iter()
                .map(|e| e.kind.as_str())
                .collect()
        }
    }

    async fn sleep(secs: u64) {
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn fails_over_on_the_event_and_back_only_after_the_hold_down() {
        let bed = Bed::start();
        assert_eq!(bed.active().await, Active::Tier(0));
        assert!(bed.kinds().is_empty(), "the first choice is not a switch");

        bed.set_up(0, false);
        assert_eq!(bed.active().await, Active::Tier(1));
        assert_eq!(bed.kinds(), ["failover"]);

        bed.set_up(0, true);
        sleep(29).await;
        assert_eq!(bed.active().await, Active::Tier(1), "inside the hold-down");
        // No request, no event: the controller's own timer fails back.
        sleep(2).await;
        assert_eq!(
            bed.snapshot.load().routes[0].failover.active(),
            Active::Tier(0)
        );
        assert_eq!(bed.kinds(), ["failover", "failback"]);
    }

    #[tokio::test(start_paused = true)]
    async fn flapping_restarts_the_hold_down() {
        let bed = Bed::start();
        assert_eq!(bed.active().await, Active::Tier(0));
        bed.set_up(0, false);
        assert_eq!(bed.active().await, Active::Tier(1));
        for _ in 0..3 {
            bed.set_up(0, true);
            sleep(20).await;
            bed.set_up(0, false);
            sleep(1).await;
        }
        bed.set_up(0, true);
        sleep(20).await;
        assert_eq!(
            bed.active().await,
            Active::Tier(1),
            "63 s of flapping, never 30 s up"
        );
        sleep(11).await;
        assert_eq!(bed.active().await, Active::Tier(0));
        assert_eq!(bed.kinds(), ["failover", "failback"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_moves_traffic_and_its_end_starts_the_hold_down() {
        let bed = Bed::start();
        assert_eq!(bed.active().await, Active::Tier(0));
        bed.region(0)
            .drain(Duration::from_secs(10), Default::default());
        assert_eq!(bed.active().await, Active::Tier(1));
        sleep(11).await;
        assert_eq!(
            bed.active().await,
            Active::Tier(1),
            "drain over: hold-down runs"
        );
        sleep(30).await;
        assert_eq!(
            bed.snapshot.load().routes[0].failover.active(),
            Active::Tier(0)
        );
        assert_eq!(bed.kinds(), ["failover", "failback"]);
    }

    fn drill() -> DrainNote {
        DrainNote {
            reason: "fire drill".into(),
            by: "alice@laptop".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_drill_names_its_drain_and_the_failback_says_it_was_lifted() {
        let bed = Bed::start();
        assert_eq!(bed.active().await, Active::Tier(0));
        bed.region(0).drain(Duration::from_secs(600), drill());
        assert_eq!(bed.active().await, Active::Tier(1));
        sleep(5).await;
        bed.region(0).undrain();
        assert_eq!(bed.active().await, Active::Tier(1), "hold-down runs");
        sleep(31).await;
        assert_eq!(bed.active().await, Active::Tier(0));
        assert_eq!(bed.kinds(), ["failover", "failback"]);
        let causes = bed.causes();
        assert!(
            causes[0]
                .contains(r#"drained by the operator: fra reason "fire drill", by alice@laptop"#),
            "{causes:?}"
        );
        assert!(
            causes[1].contains(
                r#"fra's drain lifted by the operator (reason "fire drill", by alice@laptop)"#
            ),
            "{causes:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_that_runs_out_says_so_and_a_plain_failure_names_no_drain() {
        let bed = Bed::start();
        assert_eq!(bed.active().await, Active::Tier(0));
        bed.region(0).drain(Duration::from_secs(10), drill());
        assert_eq!(bed.active().await, Active::Tier(1));
        sleep(41).await;
        assert_eq!(bed.active().await, Active::Tier(0));
        bed.set_up(0, false);
        assert_eq!(bed.active().await, Active::Tier(1));
        sleep(5).await;
        bed.set_up(0, true);
        sleep(31).await;
        assert_eq!(bed.active().await, Active::Tier(0));
        assert_eq!(
            bed.kinds(),
            ["failover", "failback", "failover", "failback"]
        );
        let causes = bed.causes();
        assert!(
            causes[1].contains("fra's drain ran out (reason"),
            "{causes:?}"
        );
        assert_eq!(
            causes[2], "every region of the active tier is down",
            "{causes:?}"
        );
        assert!(!causes[3].contains("drain"), "{causes:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_region_both_drained_and_down_records_the_drain() {
        let bed = Bed::start();
        assert_eq!(bed.active().await, Active::Tier(0));
        bed.set_up(0, false);
        bed.region(0).drain(Duration::from_secs(600), drill());
        assert_eq!(bed.active().await, Active::Tier(1));
        let causes = bed.causes();
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert!(
            causes[0].contains("fra reason \"fire drill\""),
            "{causes:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn all_down_answers_none_and_a_region_back_recovers() {
        let bed = Bed::start();
        assert_eq!(bed.active().await, Active::Tier(0));
        bed.set_up(0, false);
        bed.set_up(1, false);
        assert_eq!(bed.active().await, Active::None);
        assert_eq!(bed.snapshot.load().routes[0].serving_tier(), None);
        bed.set_up(1, true);
        assert_eq!(bed.active().await, Active::Tier(1));
        assert_eq!(bed.kinds().last(), Some(&"recovered"));
        assert_eq!(
            bed.kinds().iter().filter(|k| **k == "all-down").count(),
            1,
            "recorded once: {:?}",
            bed.kinds()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn readers_see_the_pending_decision_before_the_controller_applies_it() {
        let bed = Bed::start();
        assert_eq!(bed.active().await, Active::Tier(0));
        // Nobody runs the controller between these two lines (one thread, no await).
        bed.set_up(0, false);
        let plan = &bed.snapshot.load().routes[0];
        assert_eq!(plan.failover.active(), Active::Tier(0), "not applied yet");
        assert_eq!(plan.serving_tier(), Some(1));
    }
}
