//! `loadtest soak`: a chaos soak with nothing lost. For a bounded time, a real gateway process
//! in front of three simulated regions of two endpoints each (`fra`, `ber`, `ams`, all allowed,
//! in two tiers) serves steady open-loop GETs while:
//!
//! - **faults** cycle through the regions and kinds ([`schedule`]: crash, blackhole, 5xx, slow,
//!   flap, each followed by recovery), never more than one region at a time, so two of the
//!   three allowed regions are always up;
//! - **the config is rewritten** every few seconds, valid variants (weights, tier layout,
//!   hold-down, retry attempts) alternating with invalid ones (a YAML syntax error, an unknown
//!   field, an unknown region, a zero weight), each checked in `/status` as applied or
//!   rejected;
//! - **hostile clients** ([`hostile`]) attack beside it: slow heads, bad framing, requests the
//!   gateway rejects and requests their clients abandon, against a fourth region (`calm`, one
//!   endpoint, never faulted) behind their own route, so anything counted against it is theirs;
//! - the gateway's **RSS and open descriptors** are sampled every second.
//!
//! The verdict ([`checks`]) passes only if: no request failed (any answer but 200, or a
//! transport error); the log has no panic; the gateway ran to the end and exited cleanly on
//! SIGTERM; memory is flat ([`rss_flat`]: after a warm-up of a fifth of the run, at least 10 s,
//! the largest RSS of the last third is at most 1.05 × the largest of the first third + 2 MiB,
//! and in runs of 5 minutes or more the least-squares slope is at most 128 KiB a minute);
//! descriptors are flat (after the load, the hostile clients and the faults stopped and the
//! upstream pools' idle timeout passed, at most 8 more than before the load); every hostile
//! client was answered or closed as it must be within its limit; nothing was counted against
//! `calm`; every invalid config was rejected and every valid one applied.

mod hostile;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use testbed::fleet::Fleet;
use testbed::launcher::{GatewayProcess, Ports};
use testbed::region::Mode;
use testbed::yaml::{GatewayYaml, Probe, Route, Server, Tier};

use crate::engine::{self, ErrorKind, LoadSpec, Record};
use crate::report::{self, Summary};
use crate::scenario::{start_gateway, Fault};
pub use hostile::{HostileKind, HostileStats};

/// The regions of the soak's route, in the order faults visit them.
pub const REGIONS: [&str; 3] = ["fra", "ber", "ams"];
/// The region behind the hostile clients' route: one endpoint, never faulted.
pub const CALM: &str = "calm";
/// The faults, in the order the schedule uses them.
const FAULTS: [Fault; 5] = [
    Fault::Crash,
    Fault::Blackhole,
    Fault::Status5xx,
    Fault::Slow,
    Fault::Flap,
];
/// The soak's `Host` (any host but the hostile route's reaches the soak's route).
const HOST: &str = "app.test";
/// Idle timeout of pooled upstream connections in the soak's config: short, so that the pools
/// are empty again a few seconds after the load ends and descriptors can be compared.
const IDLE: Duration = Duration::from_secs(5);
/// Clean traffic after the last recovery.
const TAIL: Duration = Duration::from_secs(3);
/// How long a rewritten config may take to show in `/status` before it counts as missed.
const RELOAD_SEEN_WITHIN: Duration = Duration::from_secs(10);
/// Descriptors the gateway may hold after the soak beyond those before it (probe connections
/// re-opened at another moment, the admin call that samples them).
pub const FD_SLACK: usize = 8;
/// RSS growth allowed from the first third after warm-up to the last: a factor and a slack.
pub const RSS_FACTOR: f64 = 1.05;
/// See [`RSS_FACTOR`].
pub const RSS_SLACK_KIB: u64 = 2 * 1024;
/// The RSS slope allowed after warm-up in runs of at least [`SLOPE_RULE_FROM`] (KiB a minute).
pub const RSS_SLOPE_LIMIT_KIB_PER_MIN: f64 = 128.0;
/// Runs this long or longer are also held to [`RSS_SLOPE_LIMIT_KIB_PER_MIN`] (in shorter ones
/// the slope is mostly warm-up).
pub const SLOPE_RULE_FROM: Duration = Duration::from_secs(300);
/// [`reload_plan`] repeats after this many rewrites.
const PLAN_PERIOD: usize = 2 * VARIANTS.len();

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakSpec {
    /// The gateway binary.
    pub gateway: PathBuf,
    /// How long the traffic runs (the soak then settles for a few seconds and stops).
    pub duration: Duration,
    /// Requests per second of the steady traffic.
    pub rate: u32,
    /// Gateway worker threads.
    pub threads: usize,
    /// A fault starts this often.
    pub fault_every: Duration,
    /// Each fault lasts this long (shorter than `fault_every`).
    pub fault_for: Duration,
    /// The config is rewritten this often.
    pub reload_every: Duration,
    /// Probe interval of every region (timeout 3/4 of it, rise 2, fall 2).
    pub probe_interval: Duration,
    /// `server.request_head_timeout`.
    pub head_timeout: Duration,
}

impl SoakSpec {
    /// Refuses settings under which the soak would prove nothing or could not keep its promise.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.duration >= Duration::from_secs(30),
            "--duration must be at least 30s (a fault and the warm-up need room)"
        );
        anyhow::ensure!(self.rate > 0, "--rate must be above 0");
        anyhow::ensure!(
            self.fault_for < self.fault_every,
            "--fault-for must be shorter than --fault-every (one region faulted at a time)"
        );
        anyhow::ensure!(
            self.reload_every >= Duration::from_millis(500),
            "--reload-every must be at least 500ms"
        );
        anyhow::ensure!(
            self.probe_interval >= Duration::from_millis(20),
            "--probe-interval must be at least 20ms"
        );
        Ok(())
    }
}

/// One fault: a region, what it does, and when (seconds since the traffic started).
#[derive(Debug, Clone, Serialize)]
pub struct FaultWindow {
    /// The region.
    pub region: String,
    /// The fault.
    pub fault: Fault,
    /// When it started.
    pub start_s: f64,
    /// When the region recovered.
    pub end_s: f64,
}

/// The fault schedule: the first fault at `every / 2`, then one every `every`, each lasting
/// `fault_for`, none ending later than `duration` minus a short clean tail. Fault kinds come in
/// turn; the region is one of the first tier of the config variant in force at the fault's
/// midpoint ([`variant_at`], given that the config is rewritten every `reload_every`), taken
/// in turn, so that faults hit traffic: within a weighted tier it moves to the tier's other
/// region, from a tier of one region it fails over to the next tier. One region at a time,
/// so with `fault_for < every` two of the three are always up.
pub fn schedule(
    duration: Duration,
    every: Duration,
    fault_for: Duration,
    reload_every: Duration,
) -> Vec<FaultWindow> {
    let mut out = Vec::new();
    for i in 0.. {
        let start = every / 2 + every * i;
        if start + fault_for + TAIL > duration {
            break;
        }
        let first_tier = VARIANTS[variant_at(start + fault_for / 2, reload_every)].tiers[0];
        out.push(FaultWindow {
            region: first_tier[i as usize % first_tier.len()].0.to_string(),
            fault: FAULTS[i as usize % FAULTS.len()],
            start_s: start.as_secs_f64(),
            end_s: (start + fault_for).as_secs_f64(),
        });
    }
    out
}

/// The valid config variant in force at `t` when rewrite `k` happens at `reload_every / 2 +
/// k × reload_every` ([`reload_plan`]; the invalid ones change nothing).
pub fn variant_at(t: Duration, reload_every: Duration) -> usize {
    let first = reload_every / 2;
    if t < first {
        return 0;
    }
    let k = ((t - first).as_secs_f64() / reload_every.as_secs_f64()) as usize;
    match reload_plan(k - k % 2) {
        ConfigChange::Valid(n) => n,
        ConfigChange::Invalid(_) => 0,
    }
}

/// A valid shape of the soak's route.
struct Variant {
    /// Tiers in priority order: regions with their weights (one region: no weight written).
    tiers: &'static [&'static [(&'static str, u32)]],
    /// `failback.hold_down` (s).
    hold_down_s: u64,
    /// `retry.attempts`.
    attempts: u32,
}

/// The valid variants the rewrites cycle through: weights, tier layout, hold-down and retry
/// attempts change; every variant allows all three regions.
const VARIANTS: [Variant; 4] = [
    Variant {
        tiers: &[&[("fra", 70), ("ber", 30)], &[("ams", 1)]],
        hold_down_s: 2,
        attempts: 3,
    },
    Variant {
        tiers: &[&[("fra", 1)], &[("ber", 50), ("ams", 50)]],
        hold_down_s: 3,
        attempts: 3,
    },
    Variant {
        tiers: &[&[("ber", 30), ("ams", 70)], &[("fra", 1)]],
        hold_down_s: 2,
        attempts: 4,
    },
    Variant {
        tiers: &[&[("ams", 1)], &[("fra", 50), ("ber", 50)]],
        hold_down_s: 3,
        attempts: 3,
    },
];

/// A rewrite of the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigChange {
    /// Valid variant `n` (see [`valid_config`]).
    Valid(usize),
    /// An invalid config.
    Invalid(InvalidKind),
}

/// How an invalid config is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidKind {
    /// A YAML syntax error (an unclosed flow sequence).
    Syntax,
    /// A field the schema does not have (`routes[].colour`).
    UnknownField,
    /// A route over a region that does not exist.
    UnknownRegion,
    /// A weight of 0 in a weighted tier.
    ZeroWeight,
}

const INVALID: [InvalidKind; 4] = [
    InvalidKind::Syntax,
    InvalidKind::UnknownField,
    InvalidKind::UnknownRegion,
    InvalidKind::ZeroWeight,
];

/// The `k`-th rewrite: valid and invalid in turn, each valid variant other than the one
/// running (variant 0 is the one the gateway starts with); it repeats every 8.
pub fn reload_plan(k: usize) -> ConfigChange {
    if k % 2 == 0 {
        ConfigChange::Valid((k / 2 + 1) % VARIANTS.len())
    } else {
        ConfigChange::Invalid(INVALID[(k / 2) % INVALID.len()])
    }
}

/// Valid config variant `n` (modulo 4, see [`VARIANTS`]): every region probed every
/// `spec.probe_interval`, the head deadline, short upstream idle timeouts, the hostile route
/// over `calm`, and the soak's route over fra, ber and ams.
pub fn valid_config(fleet: &Fleet, ports: Ports, spec: &SoakSpec, n: usize) -> GatewayYaml {
    let v = &VARIANTS[n % VARIANTS.len()];
    let tiers = v
        .tiers
        .iter()
        .map(|tier| match tier {
            [(name, _)] => Tier::one(name),
            shares => Tier::weighted(shares),
        })
        .collect();
    config_with(
        fleet,
        ports,
        spec,
        Route::tiered("soak", tiers)
            .hold_down(Duration::from_secs(v.hold_down_s))
            .retry_attempts(v.attempts)
            .idle_timeout(IDLE),
    )
}

/// The config around the soak's route `soak`: regions, probes, the server's head deadline and
/// the hostile route.
fn config_with(fleet: &Fleet, ports: Ports, spec: &SoakSpec, soak: Route) -> GatewayYaml {
    let interval = spec.probe_interval;
    let timeout = Duration::from_millis(interval.as_millis() as u64 * 3 / 4);
    let probe = Probe::http("/healthz", interval, timeout).rise_fall(2, 2);
    GatewayYaml::new(ports)
        .server(Server {
            request_head_timeout: Some(testbed::yaml::Dur(spec.head_timeout)),
            ..Server::default()
        })
        .fleet(fleet, &probe)
        .route(
            Route::new("hostile", &[CALM])
                .host(hostile::HOST)
                .reject_when_all_down()
                .idle_timeout(IDLE),
        )
        .route(soak)
}

/// The text of `change` (a valid variant, or variant 0 broken as `change` says).
pub fn config_text(
    fleet: &Fleet,
    ports: Ports,
    spec: &SoakSpec,
    change: ConfigChange,
) -> anyhow::Result<String> {
    let header = format!("written by loadtest soak: {change:?}");
    let base = |n| valid_config(fleet, ports, spec, n);
    let text = match change {
        ConfigChange::Valid(n) => base(n).to_yaml(&header)?,
        ConfigChange::Invalid(InvalidKind::Syntax) => format!(
            "{}- {{ name: broken, regions: [fra\n",
            base(0).to_yaml(&header)?
        ),
        ConfigChange::Invalid(InvalidKind::UnknownField) => {
            let text = base(0).to_yaml(&header)?;
            anyhow::ensure!(text.contains("- name: soak\n"), "no soak route in {text}");
            text.replacen("- name: soak\n", "- name: soak\n  colour: blue\n", 1)
        }
        ConfigChange::Invalid(InvalidKind::UnknownRegion) => config_with(
            fleet,
            ports,
            spec,
            Route::tiered("soak", vec![Tier::one("fra"), Tier::one("mars")]),
        )
        .to_yaml(&header)?,
        ConfigChange::Invalid(InvalidKind::ZeroWeight) => config_with(
            fleet,
            ports,
            spec,
            Route::tiered(
                "soak",
                vec![
                    Tier::weighted(&[("fra", 0), ("ber", 100)]),
                    Tier::one("ams"),
                ],
            ),
        )
        .to_yaml(&header)?,
    };
    Ok(text)
}

/// One rewrite of the config file and what `/status` showed for it.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadRecord {
    /// When the file was written (seconds since the traffic started).
    pub t_s: f64,
    /// What was written.
    pub change: ConfigChange,
    /// `last_reload.result` once it changed: `ok`, `error` or `unchanged` (`None`: no reload
    /// showed within 10 s).
    pub result: Option<String>,
    /// Write → the reload shown in `/status` (ms).
    pub seen_ms: Option<f64>,
    /// `config.version` before and after.
    pub version: (u64, u64),
    /// Whether `config.hash` changed.
    pub hash_changed: bool,
    /// The first line of the reload's detail (the diff, or the error).
    pub detail: String,
}

impl ReloadRecord {
    /// A valid config applied (version + 1), or an invalid one rejected (version and hash kept).
    pub fn as_expected(&self) -> bool {
        match self.change {
            ConfigChange::Valid(_) => {
                self.result.as_deref() == Some("ok")
                    && self.version.1 == self.version.0 + 1
                    && self.hash_changed
            }
            ConfigChange::Invalid(_) => {
                self.result.as_deref() == Some("error")
                    && self.version.1 == self.version.0
                    && !self.hash_changed
            }
        }
    }
}

/// One sample of the gateway process, every second.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the traffic started.
    pub t_s: f64,
    /// `VmRSS` (KiB).
    pub rss_kib: u64,
    /// Open descriptors.
    pub fds: usize,
    /// Regions `/status` showed down.
    pub regions_down: Vec<String>,
}

/// A request that was not answered 200.
#[derive(Debug, Clone, Serialize)]
pub struct FailedRequest {
    /// When it was due (seconds since the traffic started).
    pub t_s: f64,
    /// Due → failure (ms).
    pub latency_ms: f64,
    /// `status N`, or the transport failure (`connect`, `timeout`, `reset`).
    pub cause: String,
    /// The region that answered, if one did.
    pub region: Option<String>,
    /// The fault in force when it was due (`fra blackhole`), if any.
    pub during: Option<String>,
}

/// The RSS rule's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RssFlat {
    /// Samples before this (seconds) are warm-up.
    pub warmup_s: f64,
    /// The largest RSS in the first third after warm-up (KiB).
    pub first_max_kib: u64,
    /// The largest RSS in the last third (KiB).
    pub last_max_kib: u64,
    /// `first_max_kib × RSS_FACTOR + RSS_SLACK_KIB`.
    pub limit_kib: u64,
    /// Least-squares slope of RSS after warm-up (KiB per minute).
    pub slope_kib_per_min: f64,
    /// The slope allowed ([`RSS_SLOPE_LIMIT_KIB_PER_MIN`]; `None` in runs shorter than
    /// [`SLOPE_RULE_FROM`]).
    pub slope_limit_kib_per_min: Option<f64>,
    /// `last_max_kib ≤ limit_kib` with samples in both thirds, and the slope within its limit.
    pub pass: bool,
}

/// The RSS rule over `(seconds, KiB)` samples of a run of `duration_s`: warm-up is the first
/// fifth (at least 10 s); the rest is cut in thirds; the largest sample of the last third must
/// be at most [`RSS_FACTOR`] × the largest of the first + [`RSS_SLACK_KIB`]. Comparing maxima
/// of windows that each span several faults (rather than two single samples) keeps one busy
/// second from deciding it; with a gateway of about 20 MiB a 60-second run fails steady growth
/// above about 6 MiB a minute, a 10-minute one above about 0.55 MiB a minute. A run of
/// [`SLOPE_RULE_FROM`] or more must also keep the least-squares slope after warm-up within
/// [`RSS_SLOPE_LIMIT_KIB_PER_MIN`]: about 11 bytes per request at 200 req/s. The metrics
/// recorder that kept every histogram sample until a scrape grew the gateway by 244 to 284 KiB a
/// minute in 10-minute soaks (it passed the thirds and fails the slope); fixed, 58. No samples
/// in either third fails.
pub fn rss_flat(samples: &[(f64, u64)], duration_s: f64) -> RssFlat {
    let warmup_s = (duration_s / 5.0).max(10.0);
    let third = (duration_s - warmup_s) / 3.0;
    let max_in = |from: f64, to: f64| {
        samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, kib)| *kib)
            .max()
    };
    let first = max_in(warmup_s, warmup_s + third);
    let last = max_in(duration_s - third, duration_s + 1.0);
    let limit_kib = first.map_or(0, |f| (f as f64 * RSS_FACTOR) as u64 + RSS_SLACK_KIB);
    let after: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(t, _)| *t >= warmup_s && *t < duration_s + 1.0)
        .map(|(t, k)| (*t, *k as f64))
        .collect();
    let slope_kib_per_min = slope(&after) * 60.0;
    let slope_limit_kib_per_min =
        (duration_s >= SLOPE_RULE_FROM.as_secs_f64()).then_some(RSS_SLOPE_LIMIT_KIB_PER_MIN);
    RssFlat {
        warmup_s,
        first_max_kib: first.unwrap_or(0),
        last_max_kib: last.unwrap_or(0),
        limit_kib,
        slope_kib_per_min,
        slope_limit_kib_per_min,
        pass: matches!((first, last), (Some(_), Some(l)) if third > 0.0 && l <= limit_kib)
            && slope_limit_kib_per_min.is_none_or(|limit| slope_kib_per_min <= limit),
    }
}

/// Least-squares slope of `points` (0 with fewer than two).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), p| {
        (num + (p.0 - mx) * (p.1 - my), den + (p.0 - mx).powi(2))
    });
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// One line of the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// What was measured.
    pub figure: String,
    /// What it had to be.
    pub limit: String,
    /// Whether it was.
    pub pass: bool,
}

/// Everything the soak measured.
#[derive(Debug, Clone, Serialize)]
pub struct SoakResult {
    /// Traffic duration (s).
    pub duration_s: f64,
    /// Requests per second.
    pub rate: u32,
    /// Gateway worker threads.
    pub threads: usize,
    /// Probe interval (ms).
    pub probe_interval_ms: u64,
    /// `server.request_head_timeout` (ms).
    pub head_timeout_ms: u64,
    /// This machine.
    pub machine: String,
    /// The gateway binary.
    pub gateway: String,
    /// The steady traffic.
    pub summary: Summary,
    /// Every request not answered 200.
    pub failures: Vec<FailedRequest>,
    /// The faults, with the times they were applied.
    pub faults: Vec<FaultWindow>,
    /// Every config rewrite.
    pub reloads: Vec<ReloadRecord>,
    /// `gateway_config_reloads_total` by result at the end.
    pub reload_metrics: BTreeMap<String, u64>,
    /// `config.version` at the end (1 at start).
    pub config_version: u64,
    /// The hostile clients, by kind.
    pub hostile: Vec<HostileStats>,
    /// `gateway_passive_failures_total` of `calm` at the end.
    pub calm_passive_failures: u64,
    /// Samples in which `/status` showed `calm` down or its endpoint ejected.
    pub calm_out_samples: usize,
    /// Samples every second.
    pub samples: Vec<Sample>,
    /// RSS (KiB) and descriptors before the traffic started.
    pub before: (u64, usize),
    /// RSS (KiB) and descriptors after everything stopped and the pools' idle timeout passed.
    pub after_settle: (u64, usize),
    /// The RSS rule.
    pub rss: RssFlat,
    /// Lines of the gateway's log with `panicked`.
    pub panics: usize,
    /// `ERROR` lines in the gateway's log.
    pub error_lines: usize,
    /// Of those, the failed reloads' (one per invalid config is expected).
    pub error_lines_reload: usize,
    /// The first few of the others.
    pub error_examples: Vec<String>,
    /// `WARN` lines in the gateway's log.
    pub warn_lines: usize,
    /// The first few of them.
    pub warn_examples: Vec<String>,
    /// Whether the gateway was still running when the soak ended.
    pub ran_to_the_end: bool,
    /// How it exited on SIGTERM (`None`: it had to be killed).
    pub exit_on_term: Option<String>,
    /// The traffic per second.
    pub timeline: Vec<report::Bucket>,
    /// The verdict, line by line.
    pub checks: Vec<Check>,
    /// All checks passed.
    pub pass: bool,
    /// The gateway's whole log (written next to the report, not into it).
    #[serde(skip)]
    pub log: String,
}

/// Runs the soak end to end.
pub async fn run(spec: &SoakSpec) -> anyhow::Result<SoakResult> {
    spec.validate()?;
    let fleet =
        Fleet::start(&[(REGIONS[0], 2), (REGIONS[1], 2), (REGIONS[2], 2), (CALM, 1)]).await?;
    let gw = start_gateway(&spec.gateway, spec.threads, |ports| {
        valid_config(&fleet, ports, spec, 0)
    })
    .await?;
    let pid = gw.pid().ok_or_else(|| anyhow::anyhow!("no gateway pid"))?;
    let ports = Ports {
        listen: gw.addr,
        admin: gw.admin,
    };
    let texts = (0..PLAN_PERIOD)
        .map(|k| config_text(&fleet, ports, spec, reload_plan(k)))
        .collect::<anyhow::Result<Vec<String>>>()?;
    // Let the probes' connections open before the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = (
        testbed::launcher::rss_kib(pid),
        testbed::launcher::open_fds(pid),
    );

    let gw = Arc::new(gw);
    let fleet = Arc::new(fleet);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + spec.duration;
    let load = LoadSpec {
        addr: gw.addr,
        host: HOST.into(),
        path: "/soak".into(),
        rate: spec.rate,
        duration: spec.duration,
        connections: 32,
        http2: false,
        timeout: Duration::from_secs(10),
        max_requests: 50_000_000,
    };
    let load_task = tokio::spawn(async move { engine::run(&load, None).await });
    let hostile_task = tokio::spawn(hostile::run(gw.addr, spec.head_timeout, deadline));
    let sampler = tokio::spawn(sample_loop(pid, gw.admin, start, stop.clone()));
    let windows = schedule(
        spec.duration,
        spec.fault_every,
        spec.fault_for,
        spec.reload_every,
    );
    let fault_task = tokio::spawn(inject(fleet.clone(), windows, start));
    let reload_task = tokio::spawn(rewrite_configs(
        gw.clone(),
        texts,
        start,
        spec.reload_every,
        spec.duration,
    ));

    let records = load_task.await?;
    let faults = fault_task.await??;
    let reloads = reload_task.await?;
    let hostile = hostile_task.await?;
    stop.store(true, Ordering::Relaxed);
    let (samples, calm_out_samples) = sampler.await?;

    // Everything stopped: wait for the pools' idle timeout, then compare with before.
    for (name, _) in fleet.regions() {
        fleet.set_mode(name, Mode::Ok)?;
    }
    tokio::time::sleep(IDLE + Duration::from_secs(2)).await;
    let after_settle = (
        testbed::launcher::rss_kib(pid),
        testbed::launcher::open_fds(pid),
    );
    let metrics = gw
        .admin_call("GET", "/metrics", None)
        .await
        .map(|(_, text)| text)
        .unwrap_or_default();
    let config_version = gw
        .status(None)
        .await
        .ok()
        .and_then(|s| s["config"]["version"].as_u64())
        .unwrap_or(0);

    let mut gw =
        Arc::try_unwrap(gw).map_err(|_| anyhow::anyhow!("the gateway handle is still shared"))?;
    let ran_to_the_end = gw.is_running();
    let exit_on_term = gw
        .stop("TERM", Duration::from_secs(15))
        .await
        .map(|s| s.to_string());
    let log = gw.stderr_plain();
    drop(gw);
    if let Ok(fleet) = Arc::try_unwrap(fleet) {
        fleet.shutdown().await;
    }

    let elapsed = spec.duration;
    let failures = failed_requests(&records, &faults);
    let rss = rss_flat(
        &samples
            .iter()
            .map(|s| (s.t_s, s.rss_kib))
            .collect::<Vec<_>>(),
        spec.duration.as_secs_f64(),
    );
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    let reload_errors = errors
        .iter()
        .filter(|l| l.contains("config reload failed"))
        .count();
    let mut result = SoakResult {
        duration_s: spec.duration.as_secs_f64(),
        rate: spec.rate,
        threads: spec.threads,
        probe_interval_ms: spec.probe_interval.as_millis() as u64,
        head_timeout_ms: spec.head_timeout.as_millis() as u64,
        machine: report::machine(),
        gateway: spec.gateway.display().to_string(),
        summary: report::summarize(&records, elapsed),
        failures,
        faults,
        reloads,
        reload_metrics: reload_counts(&metrics),
        config_version,
        hostile,
        calm_passive_failures: passive_failures(&metrics, CALM),
        calm_out_samples,
        samples,
        before,
        after_settle,
        rss,
        panics: log.lines().filter(|l| l.contains("panicked")).count(),
        error_lines: errors.len(),
        error_lines_reload: reload_errors,
        error_examples: errors
            .iter()
            .filter(|l| !l.contains("config reload failed"))
            .take(5)
            .map(|l| l.to_string())
            .collect(),
        warn_lines: log.lines().filter(|l| l.contains(" WARN ")).count(),
        warn_examples: log
            .lines()
            .filter(|l| l.contains(" WARN "))
            .take(5)
            .map(str::to_string)
            .collect(),
        ran_to_the_end,
        exit_on_term,
        timeline: report::timeline(&records, Duration::from_secs(1)),
        checks: Vec::new(),
        pass: false,
        log,
    };
    result.checks = checks(&result);
    result.pass = result.checks.iter().all(|c| c.pass);
    Ok(result)
}

/// Applies each fault of `windows` at its time and lifts it at its end; returns the windows
/// with the times they were applied.
async fn inject(
    fleet: Arc<Fleet>,
    windows: Vec<FaultWindow>,
    start: Instant,
) -> anyhow::Result<Vec<FaultWindow>> {
    let mut applied = Vec::with_capacity(windows.len());
    for w in windows {
        tokio::time::sleep_until((start + Duration::from_secs_f64(w.start_s)).into()).await;
        fleet.set_mode(&w.region, w.fault.mode())?;
        let start_s = start.elapsed().as_secs_f64();
        tokio::time::sleep_until((start + Duration::from_secs_f64(w.end_s)).into()).await;
        fleet.set_mode(&w.region, Mode::Ok)?;
        applied.push(FaultWindow {
            start_s,
            end_s: start.elapsed().as_secs_f64(),
            ..w
        });
    }
    Ok(applied)
}

/// What `/status` says of the last reload: (at_unix_ms, result, detail), version, hash.
async fn reload_state(gw: &GatewayProcess) -> Option<(Option<u64>, String, String, u64, String)> {
    let s = gw.status(None).await.ok()?;
    let last = &s["last_reload"];
    Some((
        last["at_unix_ms"].as_u64(),
        last["result"].as_str().unwrap_or("").to_string(),
        last["detail"]
            .as_str()
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        s["config"]["version"].as_u64().unwrap_or(0),
        s["config"]["hash"].as_str().unwrap_or("").to_string(),
    ))
}

/// Rewrites the config every `every` (the first at `every / 2`) until `duration`, following
/// [`reload_plan`], and waits after each for `/status` to show its reload.
async fn rewrite_configs(
    gw: Arc<GatewayProcess>,
    texts: Vec<String>,
    start: Instant,
    every: Duration,
    duration: Duration,
) -> Vec<ReloadRecord> {
    let mut out = Vec::new();
    for k in 0.. {
        let at = every / 2 + every * k as u32;
        if at + Duration::from_secs(1) > duration {
            break;
        }
        tokio::time::sleep_until((start + at).into()).await;
        let change = reload_plan(k);
        let Some(text) = texts.get(k % PLAN_PERIOD) else {
            break;
        };
        let before = reload_state(&gw).await;
        let t_s = start.elapsed().as_secs_f64();
        let written = Instant::now();
        let mut record = ReloadRecord {
            t_s,
            change,
            result: None,
            seen_ms: None,
            version: (before.as_ref().map_or(0, |b| b.3), 0),
            hash_changed: false,
            detail: String::new(),
        };
        if let Err(e) = gw.replace_config(text) {
            record.detail = format!("could not write the config: {e}");
            out.push(record);
            continue;
        }
        while written.elapsed() < RELOAD_SEEN_WITHIN {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let Some(now) = reload_state(&gw).await else {
                continue;
            };
            if before.as_ref().map(|b| b.0) != Some(now.0) {
                record.seen_ms = Some(written.elapsed().as_secs_f64() * 1000.0);
                record.result = Some(now.1);
                record.detail = now.2;
                record.version.1 = now.3;
                record.hash_changed = before.as_ref().map(|b| &b.4) != Some(&now.4);
                break;
            }
        }
        out.push(record);
    }
    out
}

/// Samples RSS, descriptors and the regions `/status` shows down every second until `stop`;
/// also returns the samples in which `calm` was down or its endpoint ejected.
async fn sample_loop(
    pid: u32,
    admin: std::net::SocketAddr,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> (Vec<Sample>, usize) {
    let mut samples = Vec::new();
    let mut calm_out = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let t_s = start.elapsed().as_secs_f64();
        let (rss, fd) = (
            testbed::launcher::rss_kib(pid),
            testbed::launcher::open_fds(pid),
        );
        let mut down = Vec::new();
        if let Ok((200, body)) =
            testbed::launcher::http_request(admin, "GET", "/status", "admin", None).await
        {
            if let Ok(s) = serde_json::from_slice::<serde_json::Value>(&body) {
                for r in s["regions"].as_array().into_iter().flatten() {
                    let name = r["name"].as_str().unwrap_or("?").to_string();
                    let ejected = r["endpoints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|e| e["health"] == "down" || !e["ejected_for_ms"].is_null());
                    if name == CALM && (ejected || r["up"] == false) {
                        calm_out += 1;
                    }
                    if r["up"] == false {
                        down.push(name);
                    }
                }
            }
        }
        samples.push(Sample {
            t_s,
            rss_kib: rss,
            fds: fd,
            regions_down: down,
        });
    }
    (samples, calm_out)
}

/// Every request not answered 200, with the fault in force when it was due.
fn failed_requests(records: &[Record], faults: &[FaultWindow]) -> Vec<FailedRequest> {
    records
        .iter()
        .filter(|r| r.status != Some(200))
        .map(|r| {
            let t_s = r.due.as_secs_f64();
            FailedRequest {
                t_s,
                latency_ms: r.latency.as_secs_f64() * 1000.0,
                cause: match (r.status, r.error) {
                    (Some(s), _) => format!("status {s}"),
                    (None, Some(ErrorKind::Connect)) => "connect".into(),
                    (None, Some(ErrorKind::Timeout)) => "timeout".into(),
                    (None, Some(ErrorKind::Reset)) => "reset".into(),
                    (None, None) => "no answer".into(),
                },
                region: r.region.as_deref().map(str::to_string),
                during: faults
                    .iter()
                    .find(|w| w.start_s <= t_s && t_s < w.end_s)
                    .map(|w| format!("{} {}", w.region, w.fault.name())),
            }
        })
        .collect()
}

/// `gateway_config_reloads_total` by result.
fn reload_counts(metrics: &str) -> BTreeMap<String, u64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("gateway_config_reloads_total{result=\""))
        .filter_map(|l| {
            let (result, value) = l.split_once("\"}")?;
            Some((result.to_string(), value.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// The sum of `gateway_passive_failures_total` for `region`.
fn passive_failures(metrics: &str, region: &str) -> u64 {
    let label = format!("region=\"{region}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("gateway_passive_failures_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The verdict, line by line (pure: a function of what was measured).
pub fn checks(r: &SoakResult) -> Vec<Check> {
    let check = |name: &str, figure: String, limit: &str, pass: bool| Check {
        name: name.into(),
        figure,
        limit: limit.into(),
        pass,
    };
    let mut out = Vec::new();
    out.push(check(
        "faults injected",
        format!(
            "{} ({})",
            r.faults.len(),
            r.faults
                .iter()
                .map(|w| format!("{} {}", w.region, w.fault.name()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "at least 1, one region at a time",
        !r.faults.is_empty() && one_at_a_time(&r.faults),
    ));
    out.push(check(
        "failed requests",
        format!("{} of {}", r.failures.len(), r.summary.requests),
        "0 (an allowed region was always up)",
        r.failures.is_empty() && r.summary.requests > 0,
    ));
    out.push(check(
        "panics in the log",
        r.panics.to_string(),
        "0",
        r.panics == 0,
    ));
    out.push(check(
        "gateway ran to the end, exited on SIGTERM",
        format!(
            "{}; {}",
            if r.ran_to_the_end { "ran" } else { "died" },
            r.exit_on_term.as_deref().unwrap_or("killed after 15 s")
        ),
        "ran; exit status: 0",
        r.ran_to_the_end && r.exit_on_term.as_deref() == Some("exit status: 0"),
    ));
    out.push(check(
        "RSS flat after warm-up",
        format!(
            "first third max {}, last third max {}; slope {:+.0} KiB/min",
            mib(r.rss.first_max_kib),
            mib(r.rss.last_max_kib),
            r.rss.slope_kib_per_min
        ),
        &format!(
            "last ≤ {RSS_FACTOR:.2} × first + {} = {}{}",
            mib(RSS_SLACK_KIB),
            mib(r.rss.limit_kib),
            r.rss
                .slope_limit_kib_per_min
                .map_or(String::new(), |l| format!("; slope ≤ {l:.0} KiB/min"))
        ),
        r.rss.pass,
    ));
    let peak = r.samples.iter().map(|s| s.fds).max().unwrap_or(0);
    out.push(check(
        "descriptors flat",
        format!(
            "{} before, {} after settling (peak {peak})",
            r.before.1, r.after_settle.1
        ),
        &format!("≤ before + {FD_SLACK}"),
        r.after_settle.1 > 0 && r.after_settle.1 <= r.before.1 + FD_SLACK,
    ));
    let runs: u64 = r.hostile.iter().map(|h| h.runs).sum();
    let violations: u64 = r.hostile.iter().map(|h| h.violations).sum();
    let worst = r
        .hostile
        .iter()
        .filter_map(|h| Some((h, h.max_ms?, h.limit_ms?)))
        .map(|(h, max, limit)| format!("{:?} {max:.0}/{limit}", h.kind))
        .collect::<Vec<_>>()
        .join(", ");
    out.push(check(
        "hostile clients answered or closed in time",
        format!("{runs} clients, {violations} not; max/limit ms: {worst}"),
        "each as it must, within its limit",
        violations == 0 && !r.hostile.is_empty() && r.hostile.iter().all(|h| h.runs > 0),
    ));
    out.push(check(
        "hostile clients ejected nothing",
        format!(
            "calm: {} passive failures, out in {} samples",
            r.calm_passive_failures, r.calm_out_samples
        ),
        "0 and 0",
        r.calm_passive_failures == 0 && r.calm_out_samples == 0,
    ));
    let invalid: Vec<&ReloadRecord> = r
        .reloads
        .iter()
        .filter(|x| matches!(x.change, ConfigChange::Invalid(_)))
        .collect();
    let valid: Vec<&ReloadRecord> = r
        .reloads
        .iter()
        .filter(|x| matches!(x.change, ConfigChange::Valid(_)))
        .collect();
    let count = |result: &str| r.reload_metrics.get(result).copied().unwrap_or(0);
    let rejected = invalid.iter().filter(|x| x.as_expected()).count();
    out.push(check(
        "invalid configs rejected, old one kept",
        format!(
            "{rejected} of {} (metrics: {} errors)",
            invalid.len(),
            count("error")
        ),
        "all; errors = invalid writes",
        !invalid.is_empty() && rejected == invalid.len() && count("error") == invalid.len() as u64,
    ));
    let applied = valid.iter().filter(|x| x.as_expected()).count();
    out.push(check(
        "valid configs applied",
        format!(
            "{applied} of {} (metrics: {} ok, {} unchanged; version {})",
            valid.len(),
            count("ok"),
            count("unchanged"),
            r.config_version
        ),
        "all; ok = valid writes; version = 1 + valid writes",
        !valid.is_empty()
            && applied == valid.len()
            && count("ok") == valid.len() as u64
            && r.config_version == 1 + valid.len() as u64,
    ));
    out
}

/// No two fault windows overlap.
fn one_at_a_time(faults: &[FaultWindow]) -> bool {
    faults.windows(2).all(|w| w[0].end_s <= w[1].start_s)
}

/// The result as Markdown: the verdict, the hostile clients, the reloads, the faults and every
/// failed request (the first 50).
pub fn markdown(r: &SoakResult) -> String {
    let mut md = format!(
        "# loadtest soak: {:.0} s at {} req/s — {}

Machine: {}; gateway `{}` ({} threads); probes every {} ms; `request_head_timeout` {} ms.

",
        r.duration_s,
        r.rate,
        if r.pass { "PASS" } else { "FAIL" },
        r.machine,
        r.gateway,
        r.threads,
        r.probe_interval_ms,
        r.head_timeout_ms,
    );
    md.push_str(
        "| check | measured | must be | |
|---|---|---|---|
",
    );
    for c in &r.checks {
        md.push_str(&format!(
            "| {} | {} | {} | {} |
",
            c.name,
            c.figure,
            c.limit,
            if c.pass { "ok" } else { "**FAIL**" }
        ));
    }
    md.push_str(&format!(
        "
Traffic: {} requests, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; by region: {}.
",
        r.summary.requests,
        r.summary.latency.p50_ms,
        r.summary.latency.p99_ms,
        r.summary.latency.max_ms,
        r.summary
            .regions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    md.push_str(&format!(
        "Gateway: RSS {} before, {} after settling; descriptors {} before, {} after; log: {} ERROR lines ({} of them failed reloads), {} WARN lines, {} panics.
",
        mib(r.before.0),
        mib(r.after_settle.0),
        r.before.1,
        r.after_settle.1,
        r.error_lines,
        r.error_lines_reload,
        r.warn_lines,
        r.panics
    ));
    for e in &r.error_examples {
        md.push_str(&format!(
            "    {e}
"
        ));
    }
    md.push_str(
        "
| hostile client | must get | runs | ok | min ms | max ms | limit ms |
|---|---|---|---|---|---|---|
",
    );
    let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    for h in &r.hostile {
        md.push_str(&format!(
            "| {:?} | {} | {} | {} | {} | {} | {} |
",
            h.kind,
            h.expected,
            h.runs,
            h.ok,
            opt(h.min_ms),
            opt(h.max_ms),
            h.limit_ms.map_or("-".into(), |l| l.to_string()),
        ));
        for v in &h.violation_examples {
            md.push_str(&format!(
                "|  | violation: {v} | | | | | |
"
            ));
        }
    }
    let seen: Vec<f64> = r.reloads.iter().filter_map(|x| x.seen_ms).collect();
    let max_seen = seen.iter().copied().fold(0.0, f64::max);
    md.push_str(&format!(
        "
Reloads: {} writes, each seen in `/status` within {max_seen:.0} ms.
",
        r.reloads.len()
    ));
    for x in r.reloads.iter().filter(|x| !x.as_expected()) {
        md.push_str(&format!(
            "    t={:.1}s {:?}: result {:?}, version {:?}, hash changed {}: {}
",
            x.t_s, x.change, x.result, x.version, x.hash_changed, x.detail
        ));
    }
    if !r.failures.is_empty() {
        md.push_str(
            "
| failed request due (s) | cause | after (ms) | answered by | during |
|---|---|---|---|---|
",
        );
        for f in r.failures.iter().take(50) {
            md.push_str(&format!(
                "| {:.3} | {} | {:.0} | {} | {} |
",
                f.t_s,
                f.cause,
                f.latency_ms,
                f.region.as_deref().unwrap_or("-"),
                f.during.as_deref().unwrap_or("-")
            ));
        }
    }
    md
}

/// Draws the soak as SVG: answers per second by region with failures, latency, RSS (with the
/// warm-up and the thirds the rule compares), descriptors, and the faults by region with the
/// config reloads.
pub fn chart(path: &std::path::Path, title: &str, r: &SoakResult) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1100, 1400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| e.to_string())?;
    let areas = root.split_evenly((5, 1));
    let t_max = r
        .samples
        .iter()
        .map(|s| s.t_s)
        .fold(r.duration_s, f64::max)
        .max(1.0)
        + 1.0;
    let frame = |caption, y: (std::ops::Range<f64>, &'static str)| report::Panel {
        caption: (caption, 15),
        margin: 10,
        y_label_area: 60,
        x: (0.0..t_max, "seconds"),
        y,
    };
    let buckets = &r.timeline;

    let rps_max = buckets.iter().map(|b| b.rps).fold(1.0, f64::max) * 1.15;
    let mut c = report::panel(
        &areas[0],
        frame(
            "answers per second by region; failed requests in red",
            (0.0..rps_max, "req/s"),
        ),
    )?;
    let mut regions: Vec<&String> = buckets.iter().flat_map(|b| b.regions.keys()).collect();
    regions.sort();
    regions.dedup();
    for (i, region) in regions.iter().enumerate() {
        let points = buckets
            .iter()
            .map(|b| (b.t_s, *b.regions.get(*region).unwrap_or(&0) as f64));
        report::line(&mut c, points, [BLUE, GREEN, MAGENTA, CYAN][i % 4], region)?;
    }
    report::line(
        &mut c,
        buckets.iter().map(|b| (b.t_s, b.failed as f64)),
        RED,
        "failed",
    )?;
    report::legend(&mut c)?;

    let lat_max = buckets.iter().map(|b| b.p99_ms).fold(1.0, f64::max) * 1.15;
    let mut l = report::panel(
        &areas[1],
        frame("latency per second (ms)", (0.0..lat_max, "ms")),
    )?;
    report::line(
        &mut l,
        buckets.iter().map(|b| (b.t_s, b.p50_ms)),
        BLUE,
        "p50",
    )?;
    report::line(
        &mut l,
        buckets.iter().map(|b| (b.t_s, b.p99_ms)),
        RED,
        "p99",
    )?;
    report::legend(&mut l)?;

    let rss: Vec<(f64, f64)> = r
        .samples
        .iter()
        .map(|s| (s.t_s, s.rss_kib as f64 / 1024.0))
        .collect();
    let rss_max = rss
        .iter()
        .map(|p| p.1)
        .fold(r.rss.limit_kib as f64 / 1024.0, f64::max)
        * 1.15;
    let mut m = report::panel(
        &areas[2],
        frame(
            "gateway RSS (MiB): the rule compares the largest of the last third with the first",
            (0.0..rss_max, "MiB"),
        ),
    )?;
    report::line(&mut m, rss, BLUE, "RSS")?;
    let third = (r.duration_s - r.rss.warmup_s) / 3.0;
    let limit = r.rss.limit_kib as f64 / 1024.0;
    report::line(
        &mut m,
        [(r.duration_s - third, limit), (r.duration_s, limit)],
        RED,
        "limit",
    )?;
    let marks = [
        (r.rss.warmup_s, "warm-up ends"),
        (r.rss.warmup_s + third, "first third ends"),
        (r.duration_s - third, "last third"),
    ]
    .map(|(t_s, label)| report::Marker {
        t_s,
        label: label.into(),
    });
    report::draw_markers(&mut m, &marks, rss_max)?;
    report::legend(&mut m)?;

    let fd_max = r.samples.iter().map(|s| s.fds).max().unwrap_or(1) as f64 * 1.15;
    let mut f = report::panel(
        &areas[3],
        frame("gateway open descriptors", (0.0..fd_max, "fds")),
    )?;
    report::line(
        &mut f,
        r.samples.iter().map(|s| (s.t_s, s.fds as f64)),
        BLUE,
        "fds",
    )?;
    report::legend(&mut f)?;

    // Faults as bands, one row per region; reloads as ticks on the bottom row.
    let mut e = report::panel(
        &areas[4],
        frame(
            "faults by region, and config rewrites (green applied, orange rejected, black: not as expected)",
            (0.0..4.0, "row"),
        ),
    )?;
    let palette = [
        (Fault::Crash, RGBColor(214, 39, 40)),
        (Fault::Blackhole, RGBColor(60, 60, 60)),
        (Fault::Status5xx, RGBColor(255, 127, 14)),
        (Fault::Slow, RGBColor(31, 119, 180)),
        (Fault::Flap, RGBColor(148, 103, 189)),
    ];
    for (fault, color) in palette {
        e.draw_series(
            r.faults
                .iter()
                .filter(|w| w.fault == fault)
                .filter_map(|w| {
                    let row = REGIONS.iter().position(|n| *n == w.region)?;
                    let y = 3.0 - row as f64;
                    Some(Rectangle::new(
                        [(w.start_s, y + 0.15), (w.end_s, y + 0.85)],
                        color.filled(),
                    ))
                }),
        )
        .map_err(|e| e.to_string())?
        .label(fault.name())
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], color.filled()));
    }
    for (i, name) in ["reloads", "ams", "ber", "fra"].iter().enumerate() {
        e.draw_series(std::iter::once(Text::new(
            name.to_string(),
            (t_max * 0.002, i as f64 + 0.9),
            ("sans-serif", 12).into_font().color(&BLACK),
        )))
        .map_err(|e| e.to_string())?;
    }
    e.draw_series(r.reloads.iter().map(|x| {
        let color = match (x.as_expected(), x.change) {
            (false, _) => BLACK,
            (true, ConfigChange::Valid(_)) => RGBColor(44, 160, 44),
            (true, ConfigChange::Invalid(_)) => RGBColor(255, 127, 14),
        };
        PathElement::new(vec![(x.t_s, 0.1), (x.t_s, 0.7)], color.stroke_width(2))
    }))
    .map_err(|e| e.to_string())?;
    report::legend(&mut e)?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
