//! Failover scenarios: two simulated regions and a real gateway process, steady load, a fault
//! injected at a known time, recovery later, and measurements of what users saw.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::TcpListener;

use crate::engine::{self, LoadSpec, Record};
use crate::region::{Identity, Mode, RegionServer};
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
}

impl Fault {
    fn mode(self) -> Mode {
        match self {
            Fault::Crash => Mode::Refuse,
            Fault::Blackhole => Mode::Blackhole,
            Fault::Status5xx => Mode::Status(503),
            Fault::Slow => Mode::Slow(Duration::from_secs(2)),
            Fault::Flap => Mode::Flap(Duration::from_millis(300)),
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
    /// Chart markers.
    pub markers: Vec<Marker>,
    /// Timeline.
    pub timeline: Vec<report::Bucket>,
}

/// A gateway child process, killed on drop.
pub struct GatewayProcess {
    child: Child,
    /// Client listener.
    pub addr: SocketAddr,
    /// Admin API.
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GatewayProcess {
    /// Starts `gateway run` on `config` (placeholders `{listen}`, `{admin}`) and waits for
    /// `/readyz`.
    pub async fn start(bin: &Path, config: &str, threads: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (addr, admin) = (free_port()?, free_port()?);
        let path = dir.path().join("gateway.yaml");
        std::fs::write(
            &path,
            config
                .replace("{listen}", &addr.to_string())
                .replace("{admin}", &admin.to_string()),
        )?;
        let log = std::fs::File::create(dir.path().join("gateway.log"))?;
        let child = Command::new(bin)
            .args(["run", "--threads", &threads.to_string(), "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", bin.display()))?;
        let mut gw = Self {
            child,
            addr,
            admin,
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            if let Some(status) = gw.child.try_wait()? {
                anyhow::bail!("gateway exited with {status}");
            }
            if let Ok(Some((200, _))) = admin_get(admin, "/readyz").await.map(Some) {
                return Ok(gw);
            }
            if start.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("gateway not ready after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether region `name` is up according to `/status`.
    pub async fn region_up(&self, name: &str) -> Option<bool> {
        let (code, body) = admin_get(self.admin, "/status").await.ok()?;
        if code != 200 {
            return None;
        }
        let status: serde_json::Value = serde_json::from_slice(&body).ok()?;
        status["regions"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == name)
            .and_then(|r| r["up"].as_bool())
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// `GET path` on the admin API: (status, body).
pub async fn admin_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, bytes::Bytes)> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "admin")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(std::io::Error::other)?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let status = resp.status().as_u16();
    Ok((
        status,
        resp.into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes(),
    ))
}

/// The config the scenario gives the gateway.
fn config(spec: &ScenarioSpec, fra: &[RegionServer], ber: &[RegionServer]) -> String {
    let eps = crate::region::endpoints_yaml;
    let interval = spec.probe_interval.as_millis();
    let probe = format!(
        "{{ http: {{ path: /healthz }}, interval: {interval}ms, timeout: {}ms, rise: 2, fall: 2 }}",
        interval * 3 / 4
    );
    format!(
        "listeners: [{{ name: http, bind: \"{{listen}}\" }}]\nadmin: {{ bind: \"{{admin}}\" }}\nregions:\n  fra:\n    endpoints: [{}]\n    probe: {probe}\n  ber:\n    endpoints: [{}]\n    probe: {probe}\nroutes:\n  - name: app\n    regions: [fra, ber]\n    failback: {{ hold_down: {}ms }}\n    retry: {{ attempts: 3 }}\n",
        eps(fra, "fra"),
        eps(ber, "ber"),
        spec.hold_down.as_millis()
    )
}

/// Runs one scenario end to end.
pub async fn run_once(
    spec: &ScenarioSpec,
    progress: Option<engine::Progress>,
) -> anyhow::Result<RunResult> {
    let mut fra = Vec::new();
    let mut ber = Vec::new();
    for i in 1..=2 {
        fra.push(RegionServer::start(
            TcpListener::bind("127.0.0.1:0").await?,
            Identity {
                region: "fra".into(),
                endpoint: format!("fra-{i}"),
            },
        )?);
        ber.push(RegionServer::start(
            TcpListener::bind("127.0.0.1:0").await?,
            Identity {
                region: "ber".into(),
                endpoint: format!("ber-{i}"),
            },
        )?);
    }
    let gw = Arc::new(
        GatewayProcess::start(&spec.gateway, &config(spec, &fra, &ber), spec.threads).await?,
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
            if let Some(up) = gw2.region_up("fra").await {
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
    for s in &fra {
        s.set_mode(spec.fault.mode());
    }
    tokio::time::sleep_until((start + spec.fault_at + spec.fault_for).into()).await;
    let recover_at = start.elapsed();
    for s in &fra {
        s.set_mode(Mode::Ok);
    }
    let records = load_task.await?;
    let (down_at, up_again_at) = watcher.await?;
    drop(gw);
    for s in fra.into_iter().chain(ber) {
        s.shutdown().await;
    }
    Ok(analyse(
        &records,
        total,
        fault_at,
        recover_at,
        down_at,
        up_again_at,
    ))
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
