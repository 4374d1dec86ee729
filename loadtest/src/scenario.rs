//! Failover scenarios: two simulated regions and a real gateway process, steady load, a fault
//! injected at a known time, recovery later, and measurements of what users saw.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use testbed::fleet::Fleet;
use testbed::launcher::{GatewayOptions, GatewayProcess, Ports, Workdir};
use testbed::region::Mode;
use testbed::yaml::{GatewayYaml, Probe, Route};

use crate::engine::{self, LoadSpec, Record};
use crate::report::{self, Marker, Summary};

/// The faults a scenario can inject into the primary region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Listeners close: connections are refused.
    Crash,
    /// Connections are accepted and never answered.
    Blackhole,
    /// Every request (health checks too) gets 503.
    #[value(name = "5xx")]
    #[serde(rename = "5xx")]
    Status5xx,
    /// Every answer takes 2 s.
    Slow,
    /// Refuses and recovers every 300 ms.
    Flap,
    /// One of the primary region's two endpoints accepts connections and never answers; the
    /// other stays healthy, so the region stays up.
    Partial,
    /// Every primary endpoint loses 10 % of requests, health checks included: half stall, half
    /// have their connection closed before an answer.
    Lossy,
    /// No fault: the steady state (how often early retry fires when nothing is wrong).
    None,
}

impl Fault {
    /// The simulated region's mode that injects this fault.
    pub fn mode(self) -> Mode {
        match self {
            Fault::Crash => Mode::Refuse,
            Fault::Blackhole => Mode::Blackhole,
            Fault::Status5xx => Mode::Status(503),
            Fault::Slow => Mode::Slow(Duration::from_secs(2)),
            Fault::Flap => Mode::Flap(Duration::from_millis(300)),
            Fault::Partial => Mode::Blackhole,
            Fault::Lossy => Mode::Lossy(100),
            Fault::None => Mode::Ok,
        }
    }

    /// The name on the command line and in reports (`crash`, `5xx`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::Blackhole => "blackhole",
            Fault::Status5xx => "5xx",
            Fault::Slow => "slow",
            Fault::Flap => "flap",
            Fault::Partial => "partial",
            Fault::Lossy => "lossy",
            Fault::None => "none",
        }
    }

    /// How many of the primary region's endpoints the fault hits (`None`: all of them).
    pub fn endpoints(self) -> Option<usize> {
        match self {
            Fault::Partial => Some(1),
            _ => None,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ScenarioSpec {
    /// The fault.
    pub fault: Fault,
    /// Requests per second.
    pub rate: u32,
    /// Load starts; the fault comes this much later.
    pub fault_at: Duration,
    /// The fault is lifted this much after it started.
    pub fault_for: Duration,
    /// Load continues this long after recovery (to see the failback).
    pub after: Duration,
    /// Failback hold-down of the route.
    pub hold_down: Duration,
    /// Probe interval (timeout is 3/4 of it, fall 2, rise 2).
    pub probe_interval: Duration,
    /// The gateway binary.
    pub gateway: PathBuf,
    /// Gateway worker threads.
    pub threads: usize,
    /// The route retries late first bytes early (`retry.early`).
    pub early_retry: bool,
}

/// Measurements of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Requests and failures over the whole run.
    pub summary: Summary,
    /// Requests due in the first 5 s after the fault.
    pub window: Summary,
    /// Fault → `/status` shows the primary region down.
    pub detect_ms: Option<f64>,
    /// Fault → completion of the last request answered by the primary.
    pub last_primary_ms: Option<f64>,
    /// Fault → completion of the first request answered by the secondary.
    pub first_secondary_ms: Option<f64>,
    /// Fault → due time after which every request (until recovery) was answered by the
    /// secondary at normal latency (at most 3 × the pre-fault p99, and at least that + 50 ms).
    pub settled_ms: Option<f64>,
    /// Recovery → first request answered by the primary again.
    pub failback_ms: Option<f64>,
    /// Early retries or hedges sent over the run (`/status`; 0 without early retry).
    pub early_sent: u64,
    /// Early retries the budget refused over the run.
    pub early_refused: u64,
    /// Hedges that answered first over the run.
    pub early_won: u64,
    /// Chart markers.
    pub markers: Vec<Marker>,
    /// Timeline.
    pub timeline: Vec<report::Bucket>,
}

/// The config the scenario gives the gateway: both regions probed every `probe_interval`
/// (timeout 3/4 of it, rise 2, fall 2), one route over fra then ber with 3 attempts.
fn config(spec: &ScenarioSpec, fleet: &Fleet, ports: Ports) -> GatewayYaml {
    let interval = spec.probe_interval;
    let timeout = Duration::from_millis(interval.as_millis() as u64 * 3 / 4);
    let probe = Probe::http("/healthz", interval, timeout).rise_fall(2, 2);
    let route = Route::new("app", &["fra", "ber"])
        .hold_down(spec.hold_down)
        .retry_attempts(3);
    let route = if spec.early_retry {
        route.early_retry()
    } else {
        route.no_early_retry()
    };
    GatewayYaml::new(ports).fleet(fleet, &probe).route(route)
}

/// Starts `gateway run` with `config` (given the ports it is to listen on) in a temp dir, its
/// stderr captured there, and waits up to 30 s for `/readyz`.
pub async fn start_gateway(
    bin: &std::path::Path,
    threads: usize,
    config: impl FnOnce(Ports) -> GatewayYaml,
) -> anyhow::Result<GatewayProcess> {
    let ports = Ports::free()?;
    let yaml = config(ports).to_yaml("")?;
    let options = GatewayOptions {
        threads,
        // GATEWAY_LOG from the environment, as for any gateway started by hand.
        log: None,
        ..GatewayOptions::new(bin.to_path_buf())
    };
    let mut gw = GatewayProcess::spawn(&options, Workdir::temp()?, ports, &yaml)?;
    gw.wait_ready(Duration::from_secs(30)).await?;
    Ok(gw)
}

/// Runs one scenario end to end.
pub async fn run_once(
    spec: &ScenarioSpec,
    progress: Option<engine::Progress>,
) -> anyhow::Result<RunResult> {
    let fleet = Fleet::start(&[("fra", 2), ("ber", 2)]).await?;
    let gw = Arc::new(
        start_gateway(&spec.gateway, spec.threads, |ports| {
            config(spec, &fleet, ports)
        })
        .await?,
    );
    let total = spec.fault_at + spec.fault_for + spec.after;
    let load = LoadSpec {
        addr: gw.addr,
        host: "app.test".into(),
        path: "/".into(),
        rate: spec.rate,
        duration: total,
        connections: 64,
        http2: false,
        timeout: Duration::from_secs(10),
        max_requests: 10_000_000,
    };
    let start = Instant::now();
    let load_task = tokio::spawn(async move { engine::run(&load, progress).await });

    // Watch /status for the primary going down and coming back.
    let gw2 = gw.clone();
    let watcher = tokio::spawn(async move {
        let mut down_at = None;
        let mut up_again_at = None;
        while start.elapsed() < total {
            if let Ok(Some(up)) = gw2.region_up("fra").await {
                if !up && down_at.is_none() {
                    down_at = Some(start.elapsed());
                }
                if up && down_at.is_some() && up_again_at.is_none() {
                    up_again_at = Some(start.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (down_at, up_again_at)
    });
    tokio::time::sleep_until((start + spec.fault_at).into()).await;
    let fault_at = start.elapsed();
    let primary = fleet.region("fra")?;
    let hit = &primary[..spec
        .fault
        .endpoints()
        .unwrap_or(primary.len())
        .min(primary.len())];
    for server in hit {
        server.set_mode(spec.fault.mode());
    }
    tokio::time::sleep_until((start + spec.fault_at + spec.fault_for).into()).await;
    let recover_at = start.elapsed();
    for server in hit {
        server.set_mode(Mode::Ok);
    }
    let records = load_task.await?;
    let (down_at, up_again_at) = watcher.await?;
    let early = gw.status(None).await?["routes"][0]["early_retry"].clone();
    drop(gw);
    fleet.shutdown().await;
    let mut result = analyse(&records, total, fault_at, recover_at, down_at, up_again_at);
    result.early_sent = early["sent"].as_u64().unwrap_or(0);
    result.early_refused = early["refused"].as_u64().unwrap_or(0);
    result.early_won = early["won"].as_u64().unwrap_or(0);
    Ok(result)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn analyse(
    records: &[Record],
    total: Duration,
    fault_at: Duration,
    recover_at: Duration,
    down_at: Option<Duration>,
    up_again_at: Option<Duration>,
) -> RunResult {
    let is = |r: &Record, name: &str| r.region.as_deref() == Some(name);
    let done = |r: &Record| r.due + r.latency;
    let during: Vec<&Record> = records
        .iter()
        .filter(|r| r.due >= fault_at && r.due < recover_at)
        .collect();
    let last_primary = during
        .iter()
        .filter(|r| is(r, "fra"))
        .map(|r| done(r))
        .max();
    let first_secondary = during
        .iter()
        .filter(|r| is(r, "ber"))
        .map(|r| done(r))
        .min();
    // The due time after which, until recovery, every request was answered by the secondary at
    // normal latency.
    let before: Vec<Record> = records
        .iter()
        .filter(|r| r.due < fault_at)
        .cloned()
        .collect();
    let baseline =
        Duration::from_secs_f64(report::summarize(&before, fault_at).latency.p99_ms / 1000.0);
    let threshold = (baseline * 3).max(baseline + Duration::from_millis(50));
    let last_bad = during
        .iter()
        .filter(|r| !is(r, "ber") || r.latency > threshold)
        .map(|r| r.due)
        .max();
    let settled = match last_bad {
        None => Some(Duration::ZERO),
        Some(t) if during.iter().any(|r| r.due > t) => Some(t.saturating_sub(fault_at)),
        Some(_) => None,
    };
    let failback = records
        .iter()
        .filter(|r| r.due >= recover_at && is(r, "fra"))
        .map(done)
        .min();
    let window: Vec<Record> = records
        .iter()
        .filter(|r| r.due >= fault_at && r.due < fault_at + Duration::from_secs(5))
        .cloned()
        .collect();
    let mut markers = vec![Marker {
        t_s: fault_at.as_secs_f64(),
        label: "fault".into(),
    }];
    if let Some(d) = down_at.filter(|d| *d >= fault_at) {
        markers.push(Marker {
            t_s: d.as_secs_f64(),
            label: "marked down".into(),
        });
    }
    markers.push(Marker {
        t_s: recover_at.as_secs_f64(),
        label: "recovered".into(),
    });
    if let Some(f) = failback {
        markers.push(Marker {
            t_s: f.as_secs_f64(),
            label: "failback".into(),
        });
    }
    if let Some(u) = up_again_at {
        markers.push(Marker {
            t_s: u.as_secs_f64(),
            label: "marked up".into(),
        });
    }
    RunResult {
        summary: report::summarize(records, total),
        window: report::summarize(&window, Duration::from_secs(5)),
        detect_ms: down_at.filter(|d| *d >= fault_at).map(|d| ms(d - fault_at)),
        last_primary_ms: last_primary.map(|t| ms(t.saturating_sub(fault_at))),
        first_secondary_ms: first_secondary.map(|t| ms(t.saturating_sub(fault_at))),
        settled_ms: settled.map(ms),
        failback_ms: failback.map(|t| ms(t.saturating_sub(recover_at))),
        early_sent: 0,
        early_refused: 0,
        early_won: 0,
        markers,
        timeline: report::timeline(records, Duration::from_millis(100)),
    }
}

/// Median, minimum and maximum of one measurement across runs.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    /// Median.
    pub median: Option<f64>,
    /// Minimum.
    pub min: Option<f64>,
    /// Maximum.
    pub max: Option<f64>,
}

/// Spread of the values present.
pub fn spread(values: impl IntoIterator<Item = Option<f64>>) -> Spread {
    let mut v: Vec<f64> = values.into_iter().flatten().collect();
    v.sort_by(f64::total_cmp);
    Spread {
        median: v.get(v.len() / 2).copied(),
        min: v.first().copied(),
        max: v.last().copied(),
    }
}
