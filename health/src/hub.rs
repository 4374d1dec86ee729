//! Shared health state: one cell per probed endpoint and per region, readable without locks.
//!
//! Writers (probes, live-traffic reports) take a short per-endpoint lock to run the state
//! machine; readers on the request path only load atomics and an `ArcSwap` of region members.
//! Every change is published as a [`HealthEvent`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use gateway_config::{EndpointId, MinHealthy, Region, RegionName};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::latency::Latency;
use crate::state::{Cause, EndpointState, Health, HealthPolicy, Transition};

/// A probed target: an endpoint id and one address it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    /// Stable endpoint id from config.
    pub id: EndpointId,
    /// Address traffic and probes go to.
    pub addr: SocketAddr,
}

/// What happened, for logs, status and metrics.
#[derive(Debug, Clone)]
pub enum HealthEvent {
    /// An endpoint changed health.
    Endpoint {
        /// Wall-clock time.
        at: SystemTime,
        /// Region of the endpoint.
        region: RegionName,
        /// The endpoint.
        target: TargetKey,
        /// The change.
        transition: Transition,
    },
    /// A region check changed health.
    Check {
        /// Wall-clock time.
        at: SystemTime,
        /// Region of the check.
        region: RegionName,
        /// Check name.
        check: String,
        /// The change.
        transition: Transition,
    },
    /// A region went up or down.
    Region {
        /// Wall-clock time.
        at: SystemTime,
        /// The region.
        region: RegionName,
        /// Whether it is up now.
        up: bool,
        /// Time from the first failure observed in the region to the region going down.
        detection: Option<Duration>,
        /// Healthy endpoints and how many are needed.
        healthy: (usize, usize),
    },
}

/// Result of the most recent probe of a target.
#[derive(Debug, Clone)]
pub struct ProbeRecord {
    /// Wall-clock time of the probe.
    pub at: SystemTime,
    /// Success.
    pub ok: bool,
    /// Time the probe took.
    pub duration: Duration,
    /// Failure reason, or the status line on success.
    pub detail: String,
}

/// Health of one endpoint address.
pub struct EndpointHealth {
    /// What is probed.
    pub key: TargetKey,
    region: Weak<RegionHealth>,
    routable: AtomicBool,
    passive_streak: AtomicU32,
    /// How often this endpoint was marked down: the generation of its abort tokens. Also the
    /// connection-pool key, so connections aborted by a past "down" are never reused.
    generation: AtomicU64,
    /// Live time to first byte and attempts in flight, for latency-aware choice.
    pub latency: Latency,
    inner: Mutex<EndpointInner>,
    hub: Weak<HubInner>,
}

struct EndpointInner {
    state: EndpointState,
    policy: HealthPolicy,
    abort: CancellationToken,
    last_probe: Option<ProbeRecord>,
    /// When the last counted timeout was seen (see [`EndpointHealth::report_failure`]).
    last_timeout: Option<Instant>,
}

impl std::fmt::Debug for EndpointHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointHealth")
            .field("key", &self.key)
            .field("routable", &self.is_routable())
            .finish()
    }
}

/// How sure a live failure is to be the upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The upstream refused, reset or answered 5xx.
    Definite,
    /// Nothing came back in time: the upstream, or the gateway's own saturation. `started` is
    /// when the attempt began.
    Timeout {
        /// When the attempt that timed out began.
        started: Instant,
    },
}

/// What a live answer's time did (see [`EndpointHealth::observe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slowness {
    /// Not slow, or latency ejection is off or has nothing to compare with.
    Fine,
    /// Slow, counted towards ejection.
    Counted,
    /// Slow enough to eject, but the region is at its `max_ejected` cap.
    HeldByCap,
    /// Ejected for slowness.
    Ejected,
    /// Not evidence: the gateway itself was lagging, so its own delay is in the time. Only
    /// latency-aware choice sees it (the estimate); the mean, the slow streak and degraded
    /// regions do not.
    Excused,
}

/// What a reported live failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passive {
    /// Counted towards ejection.
    Counted,
    /// The endpoint is out (this failure ejected it, or it already was).
    Ejected,
    /// The failure would count towards ejecting the endpoint, but the region's `max_ejected`
    /// share is already ejected: it stays in, and the failure is not counted.
    HeldByCap,
    /// A timeout of an attempt that began before the endpoint's last counted timeout was seen:
    /// the same slow moment (a connect burst overflowing the upstream's accept queue, a pause
    /// of the gateway), already counted once, so not counted again.
    SameMoment,
}

impl Passive {
    /// Health counts the endpoint as failing (ejected or held in by the cap).
    pub fn failing(self) -> bool {
        !matches!(self, Self::Counted)
    }
}

/// A snapshot of one endpoint's health for status pages.
#[derive(Debug, Clone)]
pub struct EndpointStatus {
    /// The endpoint.
    pub key: TargetKey,
    /// Health.
    pub health: Health,
    /// End of the current ejection.
    pub ejected_for: Option<Duration>,
    /// Last probe.
    pub last_probe: Option<ProbeRecord>,
}

impl EndpointHealth {
    /// Whether traffic may go here (lock-free).
    pub fn is_routable(&self) -> bool {
        self.routable.load(Ordering::Acquire)
    }

    /// A token cancelled when this endpoint is marked down; connections opened now hold it so that
    /// requests still waiting on a dead endpoint can be failed over at once.
    pub fn abort_token(&self) -> (CancellationToken, u64) {
        let inner = self.lock();
        (inner.abort.clone(), self.generation.load(Ordering::Acquire))
    }

    /// Whether this endpoint was marked down since `generation` (from [`Self::abort_token`])
    /// was handed out: one atomic load, for checks on every read and write of a connection.
    pub fn marked_down_since(&self, generation: u64) -> bool {
        self.generation.load(Ordering::Acquire) != generation
    }

    /// Reports a live request attempt that succeeded.
    pub fn report_success(&self) {
        // Fast path: avoid the lock and cache-line writes while nothing failed.
        if self.passive_streak.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.passive_streak.store(0, Ordering::Relaxed);
        let now = Instant::now();
        let mut inner = self.lock();
        let policy = inner.policy;
        inner.state.on_traffic(true, now, &policy);
    }

    /// Reports a live request attempt that failed.
    ///
    /// A [`Failure::Definite`] failure (refused, reset, 5xx: the upstream itself answered so)
    /// counts as it always did, so a crashed region is ejected whole and fails over at once. A
    /// [`Failure::Timeout`] may be the gateway's own saturation rather than the upstream: timeouts
    /// never take more than the region's `passive.max_ejected` share of its endpoints out (at
    /// least one may always go). At the cap a routable endpoint's timeouts are not counted;
    /// active probes can still mark it down. Nor does one slow moment count more than once:
    /// timeouts count as consecutive failures only when each attempt began after the previous
    /// counted timeout was seen (requests that all waited through the same stall are one
    /// observation, not many).
    pub fn report_failure(&self, failure: Failure) -> Passive {
        let region = self.region.upgrade();
        // One ejection decision at a time per region, so two endpoints cannot both pass the
        // cap check.
        let _serial = region
            .as_ref()
            .map(|r| r.ejection_lock.lock().unwrap_or_else(|e| e.into_inner()));
        let now = Instant::now();
        if let Failure::Timeout { started } = failure {
            if self.lock().last_timeout.is_some_and(|seen| started < seen) {
                return Passive::SameMoment;
            }
            if let Some(region) = &region {
                // `may_eject` reads the other endpoints: not under this one's lock.
                if self.is_routable() && !region.may_eject(self, now) {
                    return Passive::HeldByCap;
                }
            }
            self.lock().last_timeout = Some(now);
        }
        self.passive_streak.fetch_add(1, Ordering::Relaxed);
        let transition = {
            let mut inner = self.lock();
            let policy = inner.policy;
            inner.state.on_traffic(false, now, &policy)
        };
        match transition {
            Some(t) => {
                self.passive_streak.store(0, Ordering::Relaxed);
                self.apply(t);
                Passive::Ejected
            }
            None if !self.is_routable() => Passive::Ejected,
            None => Passive::Counted,
        }
    }

    /// Records a live attempt's time to its first byte (or to its timeout) at `now`: into the
    /// latency that choice reads, and for latency outlier ejection
    /// (`regions.<name>.passive.latency`): an answer slower than `min_latency` and than
    /// `factor` times the median of the region's other routable endpoints' recent average
    /// counts as slow, any other answer ends the run, and `min_samples` slow answers in a row
    /// eject the endpoint like failures do, under the same `max_ejected` cap as timeouts (the
    /// cap bounds what a wrong verdict can take out). The comparison alone does not discount
    /// the gateway's own slow moments: the reference mean may come from another moment (an
    /// endpoint latency-aware choice left alone keeps its old mean), so answers timed while
    /// the gateway lags are excused by the caller's `gateway_lagging`.
    ///
    /// While `gateway_lagging` (the proxy's own scheduling lag is past its saturation mark),
    /// the answer is no evidence either way: it feeds only the estimate latency-aware choice
    /// reads, and the streak stays as it was ([`Slowness::Excused`]).
    pub fn observe(&self, rtt: Duration, now: Instant, gateway_lagging: bool) -> Slowness {
        if gateway_lagging {
            self.latency.observe_estimate(rtt, now);
            return Slowness::Excused;
        }
        self.latency.observe(rtt, now);
        let streak = &self.latency.slow_streak;
        if rtt.as_nanos() < u128::from(self.latency.slow_floor.load(Ordering::Relaxed)) {
            if streak.load(Ordering::Relaxed) != 0 {
                streak.store(0, Ordering::Relaxed);
            }
            return Slowness::Fine;
        }
        let Some(region) = self.region.upgrade() else {
            return Slowness::Fine;
        };
        let members = region.members();
        let policy = members.config.as_ref().and_then(|c| c.passive.latency);
        let Some(policy) = policy.filter(|p| rtt >= p.min_latency && self.is_routable()) else {
            streak.store(0, Ordering::Relaxed);
            return Slowness::Fine;
        };
        let mut others: Vec<Duration> = members
            .endpoints
            .iter()
            .filter(|e| !std::ptr::eq(e.as_ref(), self) && e.is_routable())
            .filter_map(|e| e.latency.mean())
            .collect();
        if others.is_empty() {
            streak.store(0, Ordering::Relaxed);
            return Slowness::Fine;
        }
        others.sort_unstable();
        // The upper median: with two others, the slower one; a verdict needs a clear margin.
        let reference = others[others.len() / 2];
        if rtt.as_nanos() * 1000 <= reference.as_nanos() * u128::from(policy.factor_permille) {
            streak.store(0, Ordering::Relaxed);
            return Slowness::Fine;
        }
        if streak.fetch_add(1, Ordering::Relaxed) + 1 < policy.min_samples.get() {
            return Slowness::Counted;
        }
        let serial = region
            .ejection_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !region.may_eject(self, now) {
            return Slowness::HeldByCap;
        }
        streak.store(0, Ordering::Relaxed);
        let transition = {
            let mut inner = self.lock();
            let policy = inner.policy;
            inner.state.on_slow(now, &policy)
        };
        drop(serial);
        match transition {
            Some(t) => {
                self.apply(t);
                Slowness::Ejected
            }
            None => Slowness::Fine,
        }
    }

    /// Applies a probe result.
    pub fn report_probe(&self, record: ProbeRecord) {
        let now = Instant::now();
        let transition = {
            let mut inner = self.lock();
            let policy = inner.policy;
            let t = inner.state.on_probe(record.ok, now, &policy);
            inner.last_probe = Some(record);
            t
        };
        if let Some(t) = transition {
            self.apply(t);
        }
    }

    /// Current status.
    pub fn status(&self) -> EndpointStatus {
        let inner = self.lock();
        let now = Instant::now();
        EndpointStatus {
            key: self.key.clone(),
            health: inner.state.health(),
            ejected_for: inner
                .state
                .ejected_until()
                .filter(|u| *u > now)
                .map(|u| u - now),
            last_probe: inner.last_probe.clone(),
        }
    }

    /// Whether passive ejection has taken this endpoint out right now.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.lock().state.ejected_until().is_some_and(|u| u > now)
    }

    /// When the current run of failures started.
    pub fn first_failure(&self) -> Option<Instant> {
        self.lock().state.first_failure()
    }

    pub(crate) fn set_policy(&self, policy: HealthPolicy) {
        self.lock().policy = policy;
    }

    fn apply(&self, t: Transition) {
        self.routable.store(t.to.routable(), Ordering::Release);
        if !t.to.routable() {
            // Fail requests still waiting on this endpoint, and start a new token for new ones.
            let mut inner = self.lock();
            // The count first: a connection woken by the token reads it to fail its I/O (and
            // does not poll the token again while the same task waits).
            self.generation.fetch_add(1, Ordering::AcqRel);
            inner.abort.cancel();
            inner.abort = CancellationToken::new();
        }
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let region = self.region.upgrade();
        let level = if matches!(t.cause, Cause::FirstProbe) && t.to == Health::Up {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        };
        if level == tracing::Level::INFO {
            tracing::info!(endpoint = %self.key.id, addr = %self.key.addr, from = ?t.from, to = ?t.to, cause = ?t.cause, "endpoint health changed");
        }
        if let Some(region) = &region {
            let _ = hub.events.send(HealthEvent::Endpoint {
                at: SystemTime::now(),
                region: region.name.clone(),
                target: self.key.clone(),
                transition: t,
            });
            region.recompute(&hub);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EndpointInner> {
        // A panic while holding the lock cannot leave the state machine half-updated in a way
        // that matters more than losing health tracking, so keep going with the inner value.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Health of one region check (e.g. the cluster API server's `/readyz`).
pub struct CheckHealth {
    /// Check name.
    pub name: String,
    /// Whether a failing check takes the region down.
    pub required: bool,
    passing: AtomicBool,
    inner: Mutex<(EndpointState, HealthPolicy, Option<ProbeRecord>)>,
    region: Weak<RegionHealth>,
    hub: Weak<HubInner>,
}

impl std::fmt::Debug for CheckHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckHealth")
            .field("name", &self.name)
            .field("passing", &self.is_passing())
            .finish()
    }
}

impl CheckHealth {
    /// Whether the check passes (lock-free). Unknown counts as passing.
    pub fn is_passing(&self) -> bool {
        self.passing.load(Ordering::Acquire)
    }

    /// Applies a probe result.
    pub fn report_probe(&self, record: ProbeRecord) {
        let now = Instant::now();
        let t = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let policy = inner.1;
            let t = inner.0.on_probe(record.ok, now, &policy);
            inner.2 = Some(record);
            t
        };
        let Some(t) = t else { return };
        self.passing.store(t.to.routable(), Ordering::Release);
        tracing::info!(check = %self.name, from = ?t.from, to = ?t.to, "region check changed");
        if let (Some(hub), Some(region)) = (self.hub.upgrade(), self.region.upgrade()) {
            let _ = hub.events.send(HealthEvent::Check {
                at: SystemTime::now(),
                region: region.name.clone(),
                check: self.name.clone(),
                transition: t,
            });
            region.recompute(&hub);
        }
    }

    /// Health and last result.
    pub fn status(&self) -> (Health, Option<ProbeRecord>) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.0.health(), inner.2.clone())
    }
}

/// The endpoints and checks that make up a region right now (replaced on reload and DNS change).
#[derive(Debug, Default)]
pub struct RegionMembers {
    /// The region config these members were built from: an endpoint's TLS, protocol and
    /// HTTP/2 settings are read from here, in the same load as the endpoint, so a request can
    /// never pair an endpoint with another config's settings. `None` only with no endpoints.
    pub config: Option<Arc<Region>>,
    /// Endpoint addresses.
    pub endpoints: Vec<Arc<EndpointHealth>>,
    /// Region checks.
    pub checks: Vec<Arc<CheckHealth>>,
    /// Healthy endpoints needed.
    pub min_healthy: Option<MinHealthy>,
}

/// Requests a region answered through this gateway and how many of them were 5xx (the
/// gateway's own 502/504 after trying the region included): two relaxed counters the proxy
/// bumps once per request, which the admin API samples into rates.
#[derive(Debug, Default)]
pub struct RegionTraffic {
    answered: AtomicU64,
    server_errors: AtomicU64,
}

impl RegionTraffic {
    /// Counts one finished request answered with `status`.
    pub fn record(&self, status: u16) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if (500..600).contains(&status) {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(answered, 5xx)` since the region first appeared.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.answered.load(Ordering::Relaxed),
            self.server_errors.load(Ordering::Relaxed),
        )
    }
}

/// Health of a region: up while its required checks pass and enough endpoints are healthy.
pub struct RegionHealth {
    /// Region name.
    pub name: RegionName,
    members: ArcSwap<RegionMembers>,
    up: AtomicBool,
    /// Milliseconds since the hub's epoch when the region last came up (valid while up).
    up_since_ms: AtomicU64,
    /// Whether the region has ever gone from up to down (a drain does not count).
    has_failed: AtomicBool,
    /// Rotates endpoint choice.
    pub cursor: AtomicUsize,
    /// Requests in flight to the region through this gateway (the proxy counts them against
    /// the region's `capacity`); kept across reloads like the rest of the cell.
    pub in_flight: Arc<AtomicUsize>,
    /// Answers from the region through this gateway, for the status page's rates; kept
    /// across reloads like the rest of the cell.
    pub traffic: RegionTraffic,
    recompute_lock: Mutex<()>,
    /// Serialises passive ejection decisions (the `max_ejected` cap).
    ejection_lock: Mutex<()>,
    /// Operator drain: milliseconds since the hub's epoch until which the region counts as
    /// down (0: not drained).
    drained_until_ms: AtomicU64,
    /// Who drained the region and why: the latest drain's note, kept after it ends so the
    /// failback it causes can name it.
    drain_note: Mutex<Option<DrainNote>>,
    /// The latest drain was lifted by an operator (rather than running out).
    drain_lifted: AtomicBool,
    epoch: Instant,
}

/// How a region's latest drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// An operator lifted it (`undrain`).
    Lifted,
    /// Its duration ran out.
    RanOut,
}

/// Who drained a region and why, for `/status` and the audit log line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DrainNote {
    /// Why (free text; empty when none was given).
    pub reason: String,
    /// Who or what (a user and host, a tool's name; empty when unknown).
    pub by: String,
}

impl std::fmt::Debug for RegionHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionHealth")
            .field("name", &self.name)
            .field("up", &self.is_up())
            .finish()
    }
}

impl RegionHealth {
    /// Whether the region is up (lock-free): healthy and not drained by an operator.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire) && self.drain_remaining().is_none()
    }

    /// Whether health checks say the region is up, ignoring any drain.
    pub fn is_healthy(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// How long the region has been up (since it became healthy or its drain ended), or `None`
    /// while down.
    pub fn up_duration(&self) -> Option<Duration> {
        if !self.is_up() {
            return None;
        }
        let since = self
            .up_since_ms
            .load(Ordering::Acquire)
            .max(self.drained_until_ms.load(Ordering::Acquire));
        Some(Duration::from_millis(self.now_ms().saturating_sub(since)))
    }

    /// Whether the region has ever gone down after being up (an operator drain does not
    /// count). A region that never failed cannot be flapping.
    pub fn has_failed(&self) -> bool {
        self.has_failed.load(Ordering::Acquire)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Time left of an operator drain, if one is in force.
    pub fn drain_remaining(&self) -> Option<Duration> {
        let until = self.drained_until_ms.load(Ordering::Acquire);
        // Never drained (a drain's end is at least 1 ms past the epoch): no clock read, which
        // `is_up` on the request path would otherwise pay for every region it asks about.
        if until == 0 {
            return None;
        }
        let now = self.now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Drains the region for `duration`: it counts as down (traffic fails over) until the drain
    /// expires or is lifted.
    pub fn drain(&self, duration: Duration, note: DrainNote) {
        let until = self.now_ms() + duration.as_millis().max(1) as u64;
        tracing::warn!(region = %self.name, for_ms = duration.as_millis() as u64, reason = %note.reason, by = %note.by, "region drained by operator");
        if let Ok(mut kept) = self.drain_note.lock() {
            *kept = Some(note);
        }
        self.drain_lifted.store(false, Ordering::Release);
        self.drained_until_ms.store(until, Ordering::Release);
    }

    /// Who drained the region and why, while a drain is in force.
    pub fn drain_note(&self) -> Option<DrainNote> {
        self.drain_remaining()?;
        self.drain_note.lock().ok()?.clone()
    }

    /// Lifts a drain at once.
    pub fn undrain(&self) {
        let was = self.drain_remaining();
        self.drained_until_ms.store(
            self.now_ms()
                .min(self.drained_until_ms.load(Ordering::Acquire)),
            Ordering::Release,
        );
        if was.is_some() {
            self.drain_lifted.store(true, Ordering::Release);
            tracing::warn!(region = %self.name, "region drain lifted by operator");
        }
    }

    /// The drain whose end began the region's current up period: its note and how it ended.
    /// `None` while a drain is in force, while the region is down, or when it came up for
    /// another reason (its health recovered after the drain ended).
    pub fn ended_drain(&self) -> Option<(DrainNote, DrainEnd)> {
        let until = self.drained_until_ms.load(Ordering::Acquire);
        if until == 0 || !self.is_up() || self.up_since_ms.load(Ordering::Acquire) > until {
            return None;
        }
        let note = self.drain_note.lock().ok()?.clone()?;
        let end = if self.drain_lifted.load(Ordering::Acquire) {
            DrainEnd::Lifted
        } else {
            DrainEnd::RanOut
        };
        Some((note, end))
    }

    /// Whether passive ejection may take `candidate` out: fewer than the cap of the other
    /// members are ejected now (the cap is the region's `max_ejected` share, at least one).
    fn may_eject(&self, candidate: &EndpointHealth, now: Instant) -> bool {
        let m = self.members.load();
        let permille = m
            .config
            .as_ref()
            .map_or(1000, |c| c.passive.max_ejected_permille);
        let cap = (m.endpoints.len() * permille as usize / 1000).max(1);
        let ejected = m
            .endpoints
            .iter()
            .filter(|e| !std::ptr::eq(e.as_ref(), candidate) && e.is_ejected(now))
            .count();
        ejected < cap
    }

    /// Current members (lock-free).
    pub fn members(&self) -> arc_swap::Guard<Arc<RegionMembers>> {
        self.members.load()
    }

    /// Healthy endpoints and the number needed.
    pub fn healthy_count(&self) -> (usize, usize) {
        let m = self.members.load();
        let healthy = m.endpoints.iter().filter(|e| e.is_routable()).count();
        let needed = m
            .min_healthy
            .unwrap_or(MinHealthy::Count(1))
            .required(m.endpoints.len());
        (healthy, needed)
    }

    fn recompute(&self, hub: &Arc<HubInner>) {
        let _guard = self
            .recompute_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let m = self.members.load();
        let (healthy, needed) = self.healthy_count();
        let checks_ok = m
            .checks
            .iter()
            .filter(|c| c.required)
            .all(|c| c.is_passing());
        let up = checks_ok && healthy >= needed && !m.endpoints.is_empty();
        let was = self.up.load(Ordering::Acquire);
        if up == was {
            return;
        }
        if up {
            self.up_since_ms.store(hub.now_ms(), Ordering::Release);
        } else {
            self.has_failed.store(true, Ordering::Release);
        }
        self.up.store(up, Ordering::Release);
        let now = Instant::now();
        let detection = (!up)
            .then(|| {
                m.endpoints
                    .iter()
                    .filter_map(|e| e.first_failure())
                    .min()
                    .map(|first| now.duration_since(first))
            })
            .flatten();
        tracing::info!(region = %self.name, up, healthy, needed, checks_ok, detection_ms = detection.map(|d| d.as_millis() as u64), "region health changed");
        let _ = hub.events.send(HealthEvent::Region {
            at: SystemTime::now(),
            region: self.name.clone(),
            up,
            detection,
            healthy: (healthy, needed),
        });
    }
}

pub(crate) struct HubInner {
    epoch: Instant,
    events: broadcast::Sender<HealthEvent>,
}

impl HubInner {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// All health state of a gateway process. Cheap to clone.
#[derive(Clone)]
pub struct HealthHub {
    inner: Arc<HubInner>,
    regions: Arc<Mutex<HashMap<RegionName, Arc<RegionHealth>>>>,
    endpoints: Arc<Mutex<HashMap<TargetKey, Arc<EndpointHealth>>>>,
}

impl Default for HealthHub {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthHub {
    /// An empty hub.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(HubInner {
                epoch: Instant::now(),
                events,
            }),
            regions: Arc::default(),
            endpoints: Arc::default(),
        }
    }

    /// Subscribes to health events.
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.inner.events.subscribe()
    }

    /// Milliseconds since the hub was created.
    pub fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }

    /// The region cell for `name`, created (up, with no members) on first use.
    pub fn region(&self, name: &RegionName) -> Arc<RegionHealth> {
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        regions
            .entry(name.clone())
            .or_insert_with(|| {
                Arc::new(RegionHealth {
                    name: name.clone(),
                    members: ArcSwap::from_pointee(RegionMembers::default()),
                    up: AtomicBool::new(true),
                    up_since_ms: AtomicU64::new(0),
                    has_failed: AtomicBool::new(false),
                    cursor: AtomicUsize::new(0),
                    in_flight: Arc::default(),
                    traffic: RegionTraffic::default(),
                    recompute_lock: Mutex::new(()),
                    ejection_lock: Mutex::new(()),
                    drained_until_ms: AtomicU64::new(0),
                    drain_note: Mutex::new(None),
                    drain_lifted: AtomicBool::new(false),
                    epoch: self.inner.epoch,
                })
            })
            .clone()
    }

    /// The endpoint cell for `key` in `region`, created (unknown) on first use; an existing cell
    /// keeps its state (so health survives reloads) and takes the new policy.
    pub fn endpoint(
        &self,
        region: &Arc<RegionHealth>,
        key: TargetKey,
        policy: HealthPolicy,
    ) -> Arc<EndpointHealth> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = endpoints.get(&key) {
            if existing
                .region
                .upgrade()
                .is_some_and(|r| Arc::ptr_eq(&r, region))
            {
                existing.set_policy(policy);
                return existing.clone();
            }
        }
        let cell = Arc::new(EndpointHealth {
            key: key.clone(),
            region: Arc::downgrade(region),
            routable: AtomicBool::new(true),
            passive_streak: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            latency: Latency::new(),
            inner: Mutex::new(EndpointInner {
                state: EndpointState::new(),
                policy,
                abort: CancellationToken::new(),
                last_probe: None,
                last_timeout: None,
            }),
            hub: Arc::downgrade(&self.inner),
        });
        endpoints.insert(key, cell.clone());
        cell
    }

    /// A new check cell for a region.
    pub fn check(
        &self,
        region: &Arc<RegionHealth>,
        name: &str,
        required: bool,
        policy: HealthPolicy,
    ) -> Arc<CheckHealth> {
        Arc::new(CheckHealth {
            name: name.to_string(),
            required,
            passing: AtomicBool::new(true),
            inner: Mutex::new((EndpointState::new(), policy, None)),
            region: Arc::downgrade(region),
            hub: Arc::downgrade(&self.inner),
        })
    }

    /// Replaces a region's members and recomputes its health.
    pub fn set_members(&self, region: &Arc<RegionHealth>, members: RegionMembers) {
        let floor = members
            .config
            .as_ref()
            .and_then(|c| c.passive.latency)
            .map_or(u64::MAX, |p| {
                u64::try_from(p.min_latency.as_nanos()).unwrap_or(u64::MAX)
            });
        for e in &members.endpoints {
            e.latency.slow_floor.store(floor, Ordering::Relaxed);
        }
        region.members.store(Arc::new(members));
        region.recompute(&self.inner);
    }

    /// Forgets endpoint cells no region refers to any more.
    pub fn prune(&self) {
        let regions = self
            .regions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut live = std::collections::HashSet::new();
        for r in regions.values() {
            for e in &r.members().endpoints {
                live.insert(e.key.clone());
            }
        }
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| live.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rise and fall 2, three consecutive failures eject for 5 s (at most 60 s).
    const POLICY: HealthPolicy = HealthPolicy {
        rise: 2,
        fall: 2,
        consecutive_failures: Some(3),
        ejection: Duration::from_secs(5),
        max_ejection: Duration::from_secs(60),
    };

    /// A hub (kept alive by the caller: cells refer to it weakly) with one region of one
    /// endpoint that three consecutive failures eject.
    fn one_endpoint() -> (HealthHub, Arc<EndpointHealth>) {
        let hub = HealthHub::new();
        let region = hub.region(&RegionName::try_new("fra").expect("name"));
        let key = TargetKey {
            id: EndpointId::try_new("fra-1").expect("id"),
            addr: "127.0.0.1:1".parse().expect("addr"),
        };
        let policy = POLICY;
        let endpoint = hub.endpoint(&region, key, policy);
        let members = RegionMembers {
            config: None,
            endpoints: vec![endpoint.clone()],
            checks: Vec::new(),
            min_healthy: None,
        };
        hub.set_members(&region, members);
        (hub, endpoint)
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_of_one_slow_moment_count_once_and_sequential_ones_eject() {
        let (_hub, endpoint) = one_endpoint();
        let timeout = Duration::from_millis(250);
        // Fifty attempts began together and all timed out together: one observation.
        let started = Instant::now();
        tokio::time::advance(timeout).await;
        assert_eq!(
            endpoint.report_failure(Failure::Timeout { started }),
            Passive::Counted
        );
        for _ in 0..49 {
            assert_eq!(
                endpoint.report_failure(Failure::Timeout { started }),
                Passive::SameMoment
            );
        }
        assert!(endpoint.is_routable(), "one slow moment ejected");
        // Attempts that each began after the previous timeout was seen are new observations:
        // the third consecutive one ejects.
        for expected in [Passive::Counted, Passive::Ejected] {
            let started = Instant::now();
            tokio::time::advance(timeout).await;
            assert_eq!(
                endpoint.report_failure(Failure::Timeout { started }),
                expected
            );
        }
        assert!(!endpoint.is_routable());
    }

    /// A region of two endpoints with latency ejection at its defaults (factor 3, ten slow
    /// answers in a row, none under 100 ms).
    fn two_endpoints() -> (HealthHub, Arc<EndpointHealth>, Arc<EndpointHealth>) {
        let config = gateway_config::parse(
            "listeners: [{ name: http, bind: \"127.0.0.1:1\" }]\nregions:\n  fra: { endpoints: [{ id: fra-1, address: \"127.0.0.1:1\" }, { id: fra-2, address: \"127.0.0.1:2\" }] }\nroutes: [{ name: app, regions: [fra] }]\n",
            std::path::Path::new("t.yaml"),
        )
        .expect("valid config");
        let region_config = config.regions[0].clone();
        let hub = HealthHub::new();
        let region = hub.region(&region_config.name);
        let policy = POLICY;
        let endpoints: Vec<Arc<EndpointHealth>> = region_config
            .endpoints
            .iter()
            .map(|e| {
                let gateway_config::EndpointAddress::Socket(addr) = e.address else {
                    unreachable!("literal addresses")
                };
                hub.endpoint(
                    &region,
                    TargetKey {
                        id: e.id.clone(),
                        addr,
                    },
                    policy,
                )
            })
            .collect();
        hub.set_members(
            &region,
            RegionMembers {
                config: Some(Arc::new(region_config)),
                endpoints: endpoints.clone(),
                checks: Vec::new(),
                min_healthy: None,
            },
        );
        for endpoint in &endpoints {
            for _ in 0..2 {
                endpoint.report_probe(ProbeRecord {
                    at: SystemTime::now(),
                    ok: true,
                    duration: Duration::ZERO,
                    detail: "status 200".into(),
                });
            }
        }
        (hub, endpoints[0].clone(), endpoints[1].clone())
    }

    #[tokio::test(start_paused = true)]
    async fn answers_timed_while_the_gateway_lags_are_no_evidence() {
        let (_hub, calm, busy) = two_endpoints();
        let ms = Duration::from_millis;
        // The other endpoint's mean is from a calm moment (latency-aware choice then left it
        // alone, so it stays).
        for _ in 0..20 {
            assert_eq!(calm.observe(ms(20), Instant::now(), false), Slowness::Fine);
        }
        // The gateway lags: its own queueing is in every time. Thirty times the other's mean,
        // fifty in a row: no verdict, no ejection, the mean and the sample count untouched.
        for _ in 0..50 {
            assert_eq!(
                busy.observe(ms(600), Instant::now(), true),
                Slowness::Excused
            );
        }
        assert!(busy.is_routable(), "ejected by the gateway's own delay");
        assert_eq!(busy.latency.samples(), 0);
        assert_eq!(busy.latency.mean(), None);
        // Latency-aware choice still sees the wait.
        assert!(busy.latency.estimate(Instant::now()) >= Some(ms(500)));
        // The same answers with the gateway on time are evidence: the tenth in a row ejects.
        let verdicts: Vec<Slowness> = (0..10)
            .map(|_| busy.observe(ms(600), Instant::now(), false))
            .collect();
        assert_eq!(verdicts[..9], [Slowness::Counted; 9]);
        assert_eq!(verdicts[9], Slowness::Ejected);
        assert!(!busy.is_routable());
    }

    #[tokio::test(start_paused = true)]
    async fn definite_failures_count_every_time() {
        let (_hub, endpoint) = one_endpoint();
        let passive: Vec<Passive> = (0..3)
            .map(|_| endpoint.report_failure(Failure::Definite))
            .collect();
        assert_eq!(
            passive,
            [Passive::Counted, Passive::Counted, Passive::Ejected]
        );
    }
}
