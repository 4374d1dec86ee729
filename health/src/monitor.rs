//! The health scheduler: turns a config into probe tasks, DNS watchers and region members, and
//! applies a new config by diff (unchanged targets keep their tasks and their state).
//!
//! Policies:
//!
//! - **First round.** The gateway is ready once every target of the first config had its first
//!   probe. For a `host:port` endpoint that includes its first DNS lookup and then the first
//!   probe of every address that lookup found. A first lookup that fails, or gets no answer
//!   within `dns.timeout`, stops holding readiness back: the gateway becomes ready without those
//!   addresses (the region's other endpoints decide its health) and the watcher keeps asking
//!   every `dns.min_ttl`; addresses found later are probed at once, as after any DNS change.
//! - **Stale answers.** Only the current config's watcher of an endpoint's `host:port` may set
//!   that endpoint's addresses. A reload that changes or removes the host name (or port), or the
//!   DNS settings, cancels the old watcher under the scheduler's lock, and a lookup of a
//!   cancelled watcher is discarded even if it already finished; so a slow answer for a name the
//!   config no longer has can never land.
//! - **Host name changed.** The endpoint's old addresses are dropped at once: until the new name
//!   resolves the endpoint has no address. Keeping them would send traffic where the config no
//!   longer points, possibly into another region's app.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_config::{
    EndpointAddress, EndpointId, GatewayConfig, ProbeKind, ProbeSettings, Region, RegionCheck,
    RegionName, UpstreamTls,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::dns::{Discovery, DnsError, Resolve};
use crate::hub::{CheckHealth, EndpointHealth, HealthHub, RegionHealth, RegionMembers, TargetKey};
use crate::probe::{GrpcProber, HttpProber, Probe, TcpProbe};
use crate::state::HealthPolicy;

/// Runs probes and DNS discovery for the current config.
#[derive(Clone)]
pub struct HealthMonitor {
    hub: HealthHub,
    inner: Arc<MonitorInner>,
}

struct MonitorInner {
    state: Mutex<MonitorState>,
    first_round: FirstRound,
    resolver: Box<ResolverFactory>,
    observer: Mutex<Option<Arc<ProbeObserver>>>,
}

/// Told the region and duration of every finished probe (for metrics).
pub type ProbeObserver = dyn Fn(&RegionName, Duration) + Send + Sync;

/// Builds a resolver for a config's DNS settings.
pub type ResolverFactory =
    dyn Fn(&gateway_config::DnsSettings) -> Result<Arc<dyn Resolve>, DnsError> + Send + Sync;

#[derive(Default)]
struct MonitorState {
    /// Probe tasks by target and the settings they run with.
    probes: HashMap<TaskKey, CancellationToken>,
    /// DNS watchers by (region, endpoint id, host, port).
    watchers: HashMap<(RegionName, EndpointId, String, u16), CancellationToken>,
    /// Per region: what its members are built from.
    regions: HashMap<RegionName, RegionPlan>,
    discovery: Option<Arc<dyn Resolve>>,
    dns_settings: Option<gateway_config::DnsSettings>,
}

/// A probe task: what it probes and every setting it runs with (a changed setting is another
/// task).
#[derive(Clone, PartialEq, Eq, Hash)]
enum TaskKey {
    Endpoint(TargetKey, ProbeSettings, Option<UpstreamTls>),
    Check(RegionName, RegionCheck),
}

#[derive(Clone)]
struct RegionPlan {
    config: Arc<Region>,
    literal: Vec<Arc<EndpointHealth>>,
    discovered: HashMap<EndpointId, Vec<Arc<EndpointHealth>>>,
    checks: Vec<Arc<CheckHealth>>,
}

/// Counts first probes still outstanding; ready once none are left.
struct FirstRound {
    pending: AtomicUsize,
    started: AtomicBool,
    done: Notify,
}

/// A first probe that must finish before the gateway reports ready.
struct FirstTicket(Arc<MonitorInner>);

impl FirstTicket {
    /// Another ticket of the same round. The round cannot finish in between: this one is held.
    fn share(&self) -> FirstTicket {
        self.0.first_round.pending.fetch_add(1, Ordering::AcqRel);
        FirstTicket(self.0.clone())
    }
}

impl Drop for FirstTicket {
    fn drop(&mut self) {
        if self.0.first_round.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.first_round.done.notify_waiters();
        }
    }
}

impl HealthMonitor {
    /// A monitor publishing into `hub`, resolving host names with [`Discovery`].
    pub fn new(hub: HealthHub) -> Self {
        Self::with_resolver(
            hub,
            Box::new(|settings| Ok(Arc::new(Discovery::new(settings)?) as Arc<dyn Resolve>)),
        )
    }

    /// A monitor publishing into `hub` whose DNS lookups go through resolvers built by
    /// `resolver` (called again whenever the config's DNS settings change).
    pub fn with_resolver(hub: HealthHub, resolver: Box<ResolverFactory>) -> Self {
        Self {
            hub,
            inner: Arc::new(MonitorInner {
                state: Mutex::new(MonitorState::default()),
                first_round: FirstRound {
                    pending: AtomicUsize::new(0),
                    started: AtomicBool::new(false),
                    done: Notify::new(),
                },
                resolver,
                observer: Mutex::new(None),
            }),
        }
    }

    /// Calls `observer` after every probe started from now on (set it before the first
    /// [`Self::apply`]).
    pub fn set_probe_observer(&self, observer: Arc<ProbeObserver>) {
        *self
            .inner
            .observer
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(observer);
    }

    /// The report function of a probe in `region`: `cell` takes the record, the observer (if
    /// any) its duration.
    fn reporter(
        &self,
        region: &RegionName,
        report: impl Fn(crate::hub::ProbeRecord) + Send + 'static,
    ) -> impl Fn(crate::hub::ProbeRecord) + Send + 'static {
        let observer = self
            .inner
            .observer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let region = region.clone();
        move |record| {
            if let Some(observe) = &observer {
                observe(&region, record.duration);
            }
            report(record);
        }
    }

    /// The hub this monitor publishes into.
    pub fn hub(&self) -> &HealthHub {
        &self.hub
    }

    /// Whether the first probe round (every target of the first config, DNS included) is done.
    pub fn first_round_done(&self) -> bool {
        self.inner.first_round.started.load(Ordering::Acquire)
            && self.inner.first_round.pending.load(Ordering::Acquire) == 0
    }

    /// Waits for the first probe round.
    pub async fn wait_first_round(&self) {
        loop {
            let notified = self.inner.first_round.done.notified();
            if self.first_round_done() {
                return;
            }
            notified.await;
        }
    }

    fn ticket(&self) -> Option<FirstTicket> {
        if self.inner.first_round.started.load(Ordering::Acquire) {
            return None;
        }
        self.inner
            .first_round
            .pending
            .fetch_add(1, Ordering::AcqRel);
        Some(FirstTicket(self.inner.clone()))
    }

    /// Applies `config`: starts probes for new targets (at once), stops probes of removed ones,
    /// keeps unchanged targets (and their health) as they are. Must run inside a tokio runtime.
    pub fn apply(&self, config: &GatewayConfig) {
        // Hold a ticket while setting up so the first round cannot finish half-way.
        let setup_ticket = self.ticket();
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let has_hosts = config.regions.iter().any(|r| {
            r.endpoints
                .iter()
                .any(|e| matches!(e.address, EndpointAddress::Host { .. }))
        });
        if has_hosts && (st.discovery.is_none() || st.dns_settings.as_ref() != Some(&config.dns)) {
            match (self.inner.resolver)(&config.dns) {
                Ok(d) => st.discovery = Some(d),
                Err(e) => {
                    tracing::error!(error = %e, "DNS discovery unavailable; host-name endpoints get no addresses")
                }
            }
            st.dns_settings = Some(config.dns.clone());
            // Watchers restart with the new resolver.
            for (_, token) in st.watchers.drain() {
                token.cancel();
            }
        }

        let mut wanted_probes: HashSet<TaskKey> = HashSet::new();
        let mut wanted_watchers = HashSet::new();
        let mut new_plans = HashMap::new();
        for region in &config.regions {
            let cell = self.hub.region(&region.name);
            let policy = policy(&region.probe, Some(&region.passive));
            let old = st.regions.get(&region.name).cloned();
            let mut plan = RegionPlan {
                config: Arc::new(region.clone()),
                literal: Vec::new(),
                discovered: HashMap::new(),
                checks: Vec::new(),
            };
            for endpoint in &region.endpoints {
                match &endpoint.address {
                    EndpointAddress::Socket(addr) => {
                        let key = TargetKey {
                            id: endpoint.id.clone(),
                            addr: *addr,
                        };
                        let ep = self.hub.endpoint(&cell, key, policy);
                        plan.literal.push(ep);
                    }
                    EndpointAddress::Host { host, port } => {
                        // Keep what was discovered before for the same host:port; the watcher
                        // refreshes it. A changed name starts with no address (module doc).
                        let same_name = old.as_ref().is_some_and(|o| {
                            o.config
                                .endpoints
                                .iter()
                                .any(|e| e.id == endpoint.id && e.address == endpoint.address)
                        });
                        if let Some(found) = old
                            .as_ref()
                            .filter(|_| same_name)
                            .and_then(|o| o.discovered.get(&endpoint.id))
                        {
                            let cells = found
                                .iter()
                                .map(|e| self.hub.endpoint(&cell, e.key.clone(), policy))
                                .collect();
                            plan.discovered.insert(endpoint.id.clone(), cells);
                        }
                        wanted_watchers.insert((
                            region.name.clone(),
                            endpoint.id.clone(),
                            host.clone(),
                            *port,
                        ));
                    }
                }
            }
            for check in &region.checks {
                let check_policy = HealthPolicy {
                    rise: check.rise.get(),
                    fall: check.fall.get(),
                    consecutive_failures: None,
                    ejection: Duration::ZERO,
                    max_ejection: Duration::ZERO,
                };
                let key = TaskKey::Check(region.name.clone(), check.clone());
                let existing = old.as_ref().and_then(|o| {
                    o.checks
                        .iter()
                        .find(|c| c.name == check.name && st.probes.contains_key(&key))
                        .cloned()
                });
                let c = existing.unwrap_or_else(|| {
                    self.hub
                        .check(&cell, &check.name, check.required, check_policy)
                });
                if !st.probes.contains_key(&key) {
                    let token = CancellationToken::new();
                    let probe = HttpProber::check(check);
                    let c2 = c.clone();
                    let (interval, timeout) = (check.interval, check.timeout);
                    let ticket = self.ticket();
                    tokio::spawn(run_probes(
                        Box::new(probe),
                        interval,
                        timeout,
                        100,
                        token.clone(),
                        ticket,
                        self.reporter(&region.name, move |r| c2.report_probe(r)),
                    ));
                    st.probes.insert(key.clone(), token);
                }
                wanted_probes.insert(key);
                plan.checks.push(c);
            }
            new_plans.insert(region.name.clone(), plan);
        }
        // Probe tasks for every endpoint address.
        for plan in new_plans.values() {
            for ep in plan
                .literal
                .iter()
                .chain(plan.discovered.values().flatten())
            {
                let key = self.ensure_probe(&mut st, ep, &plan.config, setup_ticket.as_ref());
                wanted_probes.insert(key);
            }
        }
        st.regions = new_plans;
        for name in config.regions.iter().map(|r| r.name.clone()) {
            publish(&self.hub, &st, &name);
        }
        // Stop what is no longer wanted. Discovered addresses are in the plans, so a probe outside
        // them belongs to a removed endpoint, a changed host name or old probe settings.
        st.probes.retain(|k, token| {
            let keep = wanted_probes.contains(k);
            if !keep {
                token.cancel();
            }
            keep
        });
        let stale: Vec<_> = st
            .watchers
            .keys()
            .filter(|k| !wanted_watchers.contains(*k))
            .cloned()
            .collect();
        for k in stale {
            if let Some(t) = st.watchers.remove(&k) {
                t.cancel();
            }
        }
        for w in wanted_watchers {
            if !st.watchers.contains_key(&w) {
                if let Some(discovery) = st.discovery.clone() {
                    let token = CancellationToken::new();
                    tokio::spawn(watch_dns(
                        self.clone(),
                        discovery,
                        w.clone(),
                        token.clone(),
                        self.ticket(),
                    ));
                    st.watchers.insert(w, token);
                }
            }
        }
        drop(st);
        self.hub.prune();
        if setup_ticket.is_some() {
            self.inner
                .first_round
                .started
                .store(true, Ordering::Release);
        }
        drop(setup_ticket);
    }

    /// Starts the probe task of `ep` unless it runs already. A new task's first probe counts
    /// towards the first round while the round is open or `held` (a ticket of the caller) is.
    fn ensure_probe(
        &self,
        st: &mut MonitorState,
        ep: &Arc<EndpointHealth>,
        region: &Region,
        held: Option<&FirstTicket>,
    ) -> TaskKey {
        let key = TaskKey::Endpoint(ep.key.clone(), region.probe.clone(), region.tls.clone());
        if !st.probes.contains_key(&key) {
            let token = CancellationToken::new();
            let tls = region.tls.is_some();
            let probe: Box<dyn Probe> = match &region.probe.kind {
                ProbeKind::Http(http) => Box::new(HttpProber::endpoint(ep.key.addr, http, tls)),
                ProbeKind::Grpc(grpc) => Box::new(GrpcProber::endpoint(ep.key.addr, grpc, tls)),
                ProbeKind::Tcp => Box::new(TcpProbe { addr: ep.key.addr }),
            };
            let ep2 = ep.clone();
            tokio::spawn(run_probes(
                probe,
                region.probe.interval,
                region.probe.timeout,
                region.probe.jitter_permille,
                token.clone(),
                held.map(FirstTicket::share).or_else(|| self.ticket()),
                self.reporter(&region.name, move |r| ep2.report_probe(r)),
            ));
            st.probes.insert(key.clone(), token);
        }
        key
    }

    /// Replaces the addresses discovered for one endpoint with the answer of the watcher that
    /// `watcher` belongs to, unless that watcher was cancelled (its answer is stale: the host
    /// name changed or went away). New probes count towards the first round while `first` is
    /// held. Returns whether the addresses changed.
    fn set_discovered(
        &self,
        region: &RegionName,
        id: &EndpointId,
        addrs: &[SocketAddr],
        watcher: &CancellationToken,
        first: Option<&FirstTicket>,
    ) -> bool {
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        // Watchers are cancelled under this lock, so this check cannot go stale before the
        // addresses are published below.
        if watcher.is_cancelled() {
            return false;
        }
        let Some(plan) = st.regions.get(region).cloned() else {
            return false;
        };
        let cell = self.hub.region(region);
        let policy = policy(&plan.config.probe, Some(&plan.config.passive));
        let cells: Vec<Arc<EndpointHealth>> = addrs
            .iter()
            .map(|addr| {
                self.hub.endpoint(
                    &cell,
                    TargetKey {
                        id: id.clone(),
                        addr: *addr,
                    },
                    policy,
                )
            })
            .collect();
        let old: Vec<TargetKey> = plan
            .discovered
            .get(id)
            .map(|v| v.iter().map(|e| e.key.clone()).collect())
            .unwrap_or_default();
        if plan.discovered.contains_key(id) && old.iter().eq(cells.iter().map(|e| &e.key)) {
            return false;
        }
        for ep in &cells {
            self.ensure_probe(&mut st, ep, &plan.config, first);
        }
        let new_keys: HashSet<TargetKey> = cells.iter().map(|e| e.key.clone()).collect();
        st.probes.retain(|k, token| match k {
            TaskKey::Endpoint(t, ..) if old.contains(t) && !new_keys.contains(t) => {
                token.cancel();
                false
            }
            _ => true,
        });
        if let Some(plan) = st.regions.get_mut(region) {
            plan.discovered.insert(id.clone(), cells);
        }
        publish(&self.hub, &st, region);
        drop(st);
        self.hub.prune();
        true
    }
}

fn publish(hub: &HealthHub, st: &MonitorState, region: &RegionName) {
    let Some(plan) = st.regions.get(region) else {
        return;
    };
    let cell: Arc<RegionHealth> = hub.region(region);
    let mut endpoints: Vec<Arc<EndpointHealth>> = plan.literal.clone();
    // Discovered addresses in config order of their endpoint.
    for e in &plan.config.endpoints {
        if let Some(found) = plan.discovered.get(&e.id) {
            endpoints.extend(found.iter().cloned());
        }
    }
    hub.set_members(
        &cell,
        RegionMembers {
            config: Some(plan.config.clone()),
            endpoints,
            checks: plan.checks.clone(),
            min_healthy: Some(plan.config.min_healthy),
        },
    );
}

/// The state-machine policy of a region's endpoints.
pub fn policy(
    probe: &ProbeSettings,
    passive: Option<&gateway_config::PassiveSettings>,
) -> HealthPolicy {
    HealthPolicy {
        rise: probe.rise.get(),
        fall: probe.fall.get(),
        consecutive_failures: passive.map(|p| p.consecutive_failures.get()),
        ejection: passive
            .map(|p| p.ejection)
            .unwrap_or(Duration::from_secs(5)),
        max_ejection: passive
            .map(|p| p.max_ejection)
            .unwrap_or(Duration::from_secs(60)),
    }
}

/// Probes a target forever (until cancelled): the first probe at once, then every interval
/// with jitter. Each target has its own task, so a slow target never delays another.
async fn run_probes(
    probe: Box<dyn Probe>,
    interval: Duration,
    timeout: Duration,
    jitter_permille: u32,
    cancel: CancellationToken,
    mut first: Option<FirstTicket>,
    report: impl Fn(crate::hub::ProbeRecord) + Send + 'static,
) {
    loop {
        let sent = tokio::time::Instant::now();
        let record = tokio::select! {
            _ = cancel.cancelled() => return,
            r = probe.probe(timeout) => r,
        };
        // A failure whose timer fired well after the timeout means this runtime was starved
        // (the gateway's own saturation), not that the target was slow: it proves nothing
        // either way, so it is not reported. The first round still completes.
        let starved = !record.ok && sent.elapsed() > timeout + STARVED;
        if starved {
            tracing::debug!(
                took_ms = sent.elapsed().as_millis() as u64,
                timeout_ms = timeout.as_millis() as u64,
                "probe timer fired late: result not counted"
            );
        } else {
            report(record);
        }
        first.take();
        let spread = interval.mul_f64(f64::from(jitter_permille) / 1000.0);
        let now = tokio::time::Instant::now();
        let earliest = now + interval.saturating_sub(spread);
        let latest = now + interval + spread;
        let at = earliest + spread.mul_f64(2.0 * fastrand::f64());
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(on_grid(at, earliest..=latest)) => {}
        }
    }
}

/// Probes start on a grid of this step, so that a fleet's probes (each its own task and timer)
/// wake the probing thread once per step with all that are due, not once each: 1000 endpoints
/// probed every second woke it 1000 times a second, and the context switches were a quarter of
/// its CPU. The grid never takes a start out of its `interval ± jitter` window (see
/// [`on_grid`]), so probing keeps its documented timing.
const PROBE_GRID: Duration = Duration::from_millis(5);

/// `at` moved onto the grid of [`PROBE_GRID`] steps since the first call: the next grid point
/// if it is inside `window`, else the previous one if that is, else `at` itself (a window
/// narrower than a step, as with no jitter, or a clock from before the grid's start: tests run
/// runtimes with clocks of their own).
fn on_grid(
    at: tokio::time::Instant,
    window: std::ops::RangeInclusive<tokio::time::Instant>,
) -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(tokio::time::Instant::now);
    let Some(since) = at.checked_duration_since(epoch) else {
        return at;
    };
    let step = PROBE_GRID.as_nanos();
    let point =
        |steps: u128| epoch + Duration::from_nanos(u64::try_from(steps * step).unwrap_or(u64::MAX));
    let since = since.as_nanos();
    [point(since.div_ceil(step)), point(since / step)]
        .into_iter()
        .find(|p| window.contains(p))
        .unwrap_or(at)
}

#[cfg(test)]
mod grid_tests {
    use super::*;

    #[test]
    fn probe_starts_move_onto_the_grid_only_within_their_window() {
        // The grid starts at the first call.
        let now = tokio::time::Instant::now();
        let _ = on_grid(now, now..=now);
        let now = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        let first = on_grid(now, now..=now + PROBE_GRID);
        let on_the_grid = |t: tokio::time::Instant| {
            t.duration_since(first).as_nanos() % PROBE_GRID.as_nanos() == 0
        };
        assert!(on_the_grid(first));
        // A 1 s interval with 10 % jitter: every start lands on the grid, inside the window,
        // less than one step from where it was drawn.
        let (earliest, latest) = (now + ms(900), now + ms(1100));
        for offset in [0u64, 1, 4, 5, 6, 99, 100, 101, 150, 199, 200] {
            let at = earliest + ms(offset);
            let moved = on_grid(at, earliest..=latest);
            assert!(
                (earliest..=latest).contains(&moved),
                "{offset} ms: out of the window"
            );
            assert!(on_the_grid(moved), "{offset} ms: not on the grid");
            let by = if moved >= at { moved - at } else { at - moved };
            assert!(by < PROBE_GRID, "{offset} ms: moved by {by:?}");
        }
        // The latest start of the window, just past a grid point: rounded down, not out.
        let latest = first + ms(1001);
        assert_eq!(on_grid(latest, first + ms(999)..=latest), first + ms(1000));
        // No jitter (or a window narrower than a step with no grid point in it): unchanged.
        let at = first + ms(1002);
        assert_eq!(on_grid(at, at..=at), at);
        assert_eq!(on_grid(at, at..=first + ms(1004)), at);
        // Before the grid's start (another runtime's clock): unchanged.
        let early = first - Duration::from_secs(1);
        assert_eq!(on_grid(early, early..=early + ms(100)), early);
    }
}

/// How much later than its timeout a failed probe may end before its result is discarded as
/// the probing runtime's own starvation.
const STARVED: Duration = Duration::from_millis(100);

/// Keeps one endpoint's addresses in step with DNS until cancelled. Holds `first` (its share of
/// the first round) until its first lookup has published its addresses (whose probes then hold
/// tickets of their own), failed, or taken longer than the resolver's timeout.
async fn watch_dns(
    monitor: HealthMonitor,
    discovery: Arc<dyn Resolve>,
    (region, id, host, port): (RegionName, EndpointId, String, u16),
    cancel: CancellationToken,
    mut first: Option<FirstTicket>,
) {
    let first_deadline = tokio::time::Instant::now() + discovery.timeout();
    let mut last: Option<Vec<SocketAddr>> = None;
    loop {
        let lookup = discovery.resolve(&host, port);
        tokio::pin!(lookup);
        let result = loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = &mut lookup => break r,
                _ = tokio::time::sleep_until(first_deadline), if first.is_some() => {
                    tracing::warn!(%region, endpoint = %id, %host, "first DNS lookup unanswered after the DNS timeout; ready without its addresses");
                    first = None;
                }
            }
        };
        let wait = match result {
            Ok(resolved) => {
                if monitor.set_discovered(&region, &id, &resolved.addrs, &cancel, first.as_ref()) {
                    tracing::info!(%region, endpoint = %id, %host, addrs = ?resolved.addrs, "DNS addresses changed");
                }
                last = Some(resolved.addrs);
                resolved.refresh_in
            }
            Err(e) => {
                tracing::warn!(%region, endpoint = %id, error = %e, kept = ?last, "DNS resolution failed; keeping the last good addresses");
                discovery.retry_in()
            }
        };
        first.take();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests;
