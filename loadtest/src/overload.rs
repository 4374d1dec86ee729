//! `loadtest overload`: healthy regions and more load than the gateway can serve. The product
//! promise under test: overload never becomes an outage. No region or endpoint may be marked
//! down and no failover may happen; what the gateway cannot serve it sheds with a fast 503
//! *overloaded*, and what it admits it serves.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use testbed::fleet::Fleet;
use testbed::launcher::GatewayProcess;
use testbed::yaml::{Endpoint, GatewayYaml, Probe, Region, Route};

use crate::engine::{self, LoadSpec, Record};
use crate::process::{ensure_installed, raise_fd_limit, wait_port, which, Guard};
use crate::report::{self, Summary};
use crate::scenario::start_gateway;

/// What to run.
#[derive(Debug, Clone)]
pub struct OverloadSpec {
    /// The gateway binary.
    pub gateway: PathBuf,
    /// Gateway worker threads.
    pub threads: usize,
    /// Pin the gateway to this CPU (with `taskset`), so that the load generator and the regions
    /// cannot lend it theirs.
    pub pin_cpu: Option<usize>,
    /// Connections of the overload phase.
    pub connections: usize,
    /// Open-loop rate of the overload phase (requests per second, due on schedule whether or
    /// not earlier ones were answered); 0: closed loop, each connection sends as fast as it is
    /// answered.
    pub rate: u32,
    /// HTTP/2 (h2c) instead of HTTP/1.1.
    pub http2: bool,
    /// Length of each phase.
    pub duration: Duration,
    /// Turn on `server.adaptive_limit`.
    pub adaptive_limit: bool,
    /// What the regions' endpoints are.
    pub origin: Origin,
    /// What sends the overload phase's requests.
    pub client: Client,
}

/// The endpoints behind the gateway: two regions of two each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The test bed's simulated app (`testbed::region`).
    #[default]
    Testbed,
    /// One nginx process (Debian's, installed when missing) serving four ports, pinned with
    /// the load generator when the gateway is pinned: what a user would put behind it.
    Nginx,
}

/// The load generator of the overload phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// This crate's engine (open or closed loop, per-request records and a timeline).
    #[default]
    Engine,
    /// `wrk` (Debian's, installed when missing), one thread, closed loop, pinned to the CPU the
    /// gateway is not on; HTTP/1.1 only, and no timeline.
    Wrk,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct OverloadResult {
    /// The unloaded phase (16 connections): the gateway's maximum goodput.
    pub unloaded: Summary,
    /// The overload phase.
    pub overloaded: Summary,
    /// Regions `/status` ever showed down during the overload phase (must be empty).
    pub regions_ever_down: Vec<String>,
    /// Endpoints `/status` ever showed down or ejected (must be empty).
    pub endpoints_ever_down: Vec<String>,
    /// Failover events recorded during the overload phase (must be 0).
    pub failover_events: usize,
    /// Answers of the overload phase: 2xx/3xx/4xx served.
    pub served: u64,
    /// 503 *overloaded* (from `gateway_shed_total`).
    pub shed_overloaded: u64,
    /// Other 5xx answers.
    pub other_5xx: u64,
    /// Transport failures (connect, reset, timeout).
    pub transport_errors: u64,
    /// Served per second under overload, as a share of the unloaded maximum.
    pub goodput_ratio: f64,
    /// p99 latency of the served requests (ms).
    pub p99_served_ms: f64,
    /// The adaptive limit over time: (seconds since the overload started, limit), when the
    /// gateway reports one.
    pub limit_over_time: Vec<(f64, u64)>,
    /// Requests in flight at the gateway over time: (seconds since the overload started, count).
    pub in_flight_over_time: Vec<(f64, u64)>,
    /// The gateway's log lines about health changes (to see why, when something went down).
    pub health_log: Vec<String>,
    /// The gateway's scheduling lag (`gateway_event_loop_lag_seconds`, ms) over time:
    /// (seconds since the overload started, lag).
    pub lag_over_time: Vec<(f64, f64)>,
    /// Each time `/status` first showed an endpoint down or ejected: when, which, and what
    /// `/status` said of it then (health, last probe, latency) beside the gateway's lag.
    pub ejections: Vec<Ejection>,
    /// The overload phase in 100 ms slices (for the chart).
    #[serde(skip)]
    pub timeline: Vec<report::Bucket>,
}

/// What `/status` showed of an endpoint when it first showed it down or ejected.
#[derive(Debug, Clone, Serialize)]
pub struct Ejection {
    /// Seconds since the overload started.
    pub at_s: f64,
    /// `region/endpoint`.
    pub endpoint: String,
    /// The endpoint's entry in `/status`.
    pub status: serde_json::Value,
    /// The gateway's scheduling lag then (ms, the last sample).
    pub lag_ms: f64,
    /// Requests in flight at the gateway then.
    pub in_flight: u64,
}

/// Runs the unloaded phase, then the overload phase, watching `/status` throughout the latter.
pub async fn run(spec: &OverloadSpec) -> anyhow::Result<OverloadResult> {
    // Default probe and passive settings, as a new user would run it.
    let probe = Probe::http(
        "/healthz",
        Duration::from_secs(1),
        Duration::from_millis(500),
    );
    // The CPU the gateway is not pinned to, for the load generator and nginx.
    let other_cpu = spec.pin_cpu.map(|cpu| if cpu == 0 { 1 } else { 0 });
    let (_fleet, _nginx, regions) = match spec.origin {
        Origin::Testbed => {
            let fleet = Fleet::start(&[("fra", 2), ("ber", 2)]).await?;
            let regions: Vec<(String, Region)> = fleet
                .regions()
                .map(|(name, servers)| (name.to_string(), Region::of(servers)))
                .collect();
            (Some(fleet), None, regions)
        }
        Origin::Nginx => {
            let (guard, ports) = nginx_origin(4, other_cpu, OK_ANSWER).await?;
            let region = |name: &str, ports: &[SocketAddr]| {
                let endpoints = ports
                    .iter()
                    .enumerate()
                    .map(|(i, a)| Endpoint::new(&format!("{name}-{}", i + 1), *a))
                    .collect();
                (name.to_string(), Region::new(endpoints))
            };
            let regions = vec![region("fra", &ports[..2]), region("ber", &ports[2..])];
            (None, Some(guard), regions)
        }
    };
    let gw = start_gateway(&spec.gateway, spec.threads, |ports| {
        regions
            .iter()
            .fold(GatewayYaml::new(ports), |y, (name, region)| {
                y.region(name, region.clone().probe(probe.clone()))
            })
            .route(Route::new("app", &["fra", "ber"]))
            .server(testbed::yaml::Server {
                adaptive_limit: spec.adaptive_limit.then_some(true),
                ..Default::default()
            })
    })
    .await?;
    if let (Some(cpu), Some(pid)) = (spec.pin_cpu, gw.pid()) {
        pin(pid, cpu)?;
    }
    let load = |connections: usize, rate: u32| LoadSpec {
        addr: gw.addr,
        host: "overload.test".into(),
        path: "/".into(),
        rate,
        duration: spec.duration,
        connections,
        http2: spec.http2,
        timeout: Duration::from_secs(10),
        max_requests: 50_000_000,
    };

    let started = Instant::now();
    let unloaded_records = engine::run(&load(16, 0), None).await;
    let unloaded = report::summarize(&unloaded_records, started.elapsed());
    let shed_before = shed_total(&gw).await;
    let events_before = failover_events(&gw).await;

    let watch = Arc::new(Mutex::new(Watch::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = tokio::spawn(watch_status(
        gw.admin,
        watch.clone(),
        stop.clone(),
        Instant::now(),
    ));
    let started = Instant::now();
    let phase = match spec.client {
        Client::Engine => {
            let records = engine::run(&load(spec.connections, spec.rate), None).await;
            Phase::of_records(records, started.elapsed())
        }
        Client::Wrk => {
            anyhow::ensure!(
                !spec.http2 && spec.rate == 0,
                "wrk runs HTTP/1.1 in a closed loop"
            );
            let (connections, duration) = (spec.connections, spec.duration);
            let host = "overload.test";
            run_wrk(gw.addr, (host, "/"), connections, duration, other_cpu).await?
        }
    };
    let elapsed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.await;
    let shed = shed_total(&gw).await.saturating_sub(shed_before);
    let events = failover_events(&gw).await.saturating_sub(events_before);
    let watch = watch.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let unloaded_goodput = unloaded.ok as f64 / spec.duration.as_secs_f64();
    Ok(OverloadResult {
        goodput_ratio: if unloaded_goodput > 0.0 {
            phase.served as f64 / elapsed.as_secs_f64() / unloaded_goodput
        } else {
            0.0
        },
        p99_served_ms: phase.p99_served_ms,
        served: phase.served,
        shed_overloaded: shed,
        other_5xx: phase.fivexx.saturating_sub(shed),
        transport_errors: phase.transport_errors,
        regions_ever_down: watch.regions_down.into_iter().collect(),
        endpoints_ever_down: watch.endpoints_down.into_iter().collect(),
        failover_events: events,
        limit_over_time: watch.limits,
        in_flight_over_time: watch.in_flight,
        lag_over_time: watch.lag,
        ejections: watch.ejections,
        timeline: phase.timeline,
        health_log: gw
            .stderr_plain()
            .lines()
            .filter(|l| {
                l.contains("health changed")
                    || l.contains("switched")
                    || l.contains("no region up")
                    || l.contains("passive failure")
            })
            .map(str::to_string)
            .collect(),
        unloaded,
        overloaded: phase.summary,
    })
}

/// What the overload phase's load generator saw.
pub(crate) struct Phase {
    pub(crate) summary: Summary,
    served: u64,
    fivexx: u64,
    transport_errors: u64,
    p99_served_ms: f64,
    timeline: Vec<report::Bucket>,
}

impl Phase {
    fn of_records(records: Vec<Record>, elapsed: Duration) -> Self {
        let served: Vec<Record> = records
            .iter()
            .filter(|r| r.status.is_some_and(|s| s < 500))
            .cloned()
            .collect();
        Phase {
            summary: report::summarize(&records, elapsed),
            served: served.len() as u64,
            fivexx: records
                .iter()
                .filter(|r| r.status.is_some_and(|s| s >= 500))
                .count() as u64,
            transport_errors: records.iter().filter(|r| r.error.is_some()).count() as u64,
            p99_served_ms: report::summarize(&served, elapsed).latency.p99_ms,
            timeline: report::timeline(&records, Duration::from_millis(100)),
        }
    }
}

/// Pins every thread of `pid` to `cpu`.
fn pin(pid: u32, cpu: usize) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-cp", &cpu.to_string(), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "taskset failed to pin process {pid}");
    Ok(())
}

/// The overload origin's answer to every path: `200 ok` (no `http` directives).
const OK_ANSWER: (&str, &str) = ("", "    location / { return 200 \"ok\\n\"; }\n");

/// One nginx process (one worker) on `n` loopback ports with `http` directives in its `http`
/// block and `locations` in its one `server` block; pinned to `cpu` when given.
pub(crate) async fn nginx_origin(
    n: usize,
    cpu: Option<usize>,
    (http, locations): (&str, &str),
) -> anyhow::Result<(Guard, Vec<SocketAddr>)> {
    ensure_installed(&[("nginx", "nginx")])?;
    let dir = tempfile::tempdir()?;
    let ports: Vec<SocketAddr> = (0..n)
        .map(|_| testbed::launcher::free_port())
        .collect::<Result<_, _>>()?;
    let listens: String = ports.iter().map(|a| format!("    listen {a};\n")).collect();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
         worker_rlimit_nofile 65536;\nevents {{ worker_connections 16384; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n\
         fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n\
         keepalive_requests 1000000;\n{http}  server {{\n{listens}{locations}  }}\n}}\n",
        dir = dir.path().display()
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf)?;
    let mut command = std::process::Command::new("taskset");
    command
        .args(["-c", &cpu.map_or("0-1023".into(), |c| c.to_string())])
        .arg(which("nginx").context("nginx")?);
    let child = command
        .arg("-c")
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("start nginx")?;
    let guard = Guard::Child {
        child,
        _dir: Some(dir),
    };
    for addr in &ports {
        wait_port(*addr).await.context("nginx")?;
    }
    Ok((guard, ports))
}

/// `GET path` with `Host: host` to `addr` from `wrk` (one thread, closed loop, `connections`
/// kept-alive HTTP/1.1 connections, for `duration`), pinned to `cpu` when given; its counts
/// parsed from `--latency` output.
pub(crate) async fn run_wrk(
    addr: SocketAddr,
    (host, path): (&str, &str),
    connections: usize,
    duration: Duration,
    cpu: Option<usize>,
) -> anyhow::Result<Phase> {
    ensure_installed(&[("wrk", "wrk")])?;
    raise_fd_limit(65_536);
    let wrk = which("wrk").context("wrk")?;
    let mut command = tokio::process::Command::new("taskset");
    // Without pinning, taskset still runs it, on every CPU.
    command
        .args(["-c", &cpu.map_or("0-1023".into(), |c| c.to_string())])
        .arg(&wrk)
        .args(["-t1", &format!("-c{connections}")])
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .args(["--latency", "-H", &format!("Host: {host}")])
        .arg(format!("http://{addr}{path}"));
    let out = command
        .kill_on_drop(true)
        .output()
        .await
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    anyhow::ensure!(out.status.success(), "wrk failed: {text}");
    Ok(parse_wrk(&text, duration))
}

/// Requests, non-2xx/3xx answers, socket errors and the p99 from `wrk --latency` output.
fn parse_wrk(text: &str, elapsed: Duration) -> Phase {
    let number_after = |prefix: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.trim_end_matches(',').parse().ok())
    };
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let non_2xx = number_after("Non-2xx or 3xx responses:").unwrap_or(0.0) as u64;
    let socket_errors: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|rest| {
            rest.split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| parse_wrk_time(v.trim()))
        .unwrap_or(0.0);
    let served = requests.saturating_sub(non_2xx);
    let summary = Summary {
        requests,
        ok: served,
        failed: non_2xx + socket_errors,
        throughput_rps: requests as f64 / elapsed.as_secs_f64(),
        ..Summary::default()
    };
    Phase {
        summary,
        served,
        // wrk does not split non-2xx/3xx answers: with the testbed and nginx origins
        // answering 200, every one is the gateway's own (a 5xx).
        fivexx: non_2xx,
        transport_errors: socket_errors,
        p99_served_ms: p99_ms,
        timeline: Vec::new(),
    }
}

/// `12.34ms`, `1.02s` or `850.00us` in milliseconds.
fn parse_wrk_time(v: &str) -> Option<f64> {
    let (number, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

#[derive(Debug, Clone, Default)]
struct Watch {
    regions_down: BTreeSet<String>,
    endpoints_down: BTreeSet<String>,
    limits: Vec<(f64, u64)>,
    in_flight: Vec<(f64, u64)>,
    lag: Vec<(f64, f64)>,
    ejections: Vec<Ejection>,
}

/// Polls `/status` every 200 ms until `stop`, recording every region or endpoint shown down.
async fn watch_status(
    admin: std::net::SocketAddr,
    watch: Arc<Mutex<Watch>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    start: Instant,
) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let lag_ms =
            match testbed::launcher::http_request(admin, "GET", "/metrics", "admin", None).await {
                Ok((200, body)) => String::from_utf8_lossy(&body)
                    .lines()
                    .find_map(|l| l.strip_prefix("gateway_event_loop_lag_seconds "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .map(|s| s * 1000.0),
                _ => None,
            };
        if let Ok((200, body)) =
            testbed::launcher::http_request(admin, "GET", "/status", "admin", None).await
        {
            if let Ok(s) = serde_json::from_slice::<serde_json::Value>(&body) {
                let mut w = watch.lock().unwrap_or_else(|e| e.into_inner());
                let t = start.elapsed().as_secs_f64();
                if let Some(lag) = lag_ms {
                    w.lag.push((t, lag));
                }
                for r in s["regions"].as_array().into_iter().flatten() {
                    let name = r["name"].as_str().unwrap_or("?").to_string();
                    if r["up"] == false {
                        w.regions_down.insert(name.clone());
                    }
                    for e in r["endpoints"].as_array().into_iter().flatten() {
                        if e["health"] == "down" || !e["ejected_for_ms"].is_null() {
                            let endpoint = format!("{name}/{}", e["id"].as_str().unwrap_or("?"));
                            if w.endpoints_down.insert(endpoint.clone()) {
                                w.ejections.push(Ejection {
                                    at_s: t,
                                    endpoint,
                                    status: e.clone(),
                                    lag_ms: lag_ms.unwrap_or(-1.0),
                                    in_flight: s["admission"]["in_flight"].as_u64().unwrap_or(0),
                                });
                            }
                        }
                    }
                }
                if let Some(limit) = s["admission"]["limit"].as_u64() {
                    w.limits.push((t, limit));
                }
                if let Some(n) = s["admission"]["in_flight"].as_u64() {
                    w.in_flight.push((t, n));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sum of `gateway_shed_total` (0 on a gateway without admission control).
async fn shed_total(gw: &GatewayProcess) -> u64 {
    let Ok((_, text)) = gw.admin_call("GET", "/metrics", None).await else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("gateway_shed_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Failover events in `/status` (the last 64 are kept).
async fn failover_events(gw: &GatewayProcess) -> usize {
    gw.status(None)
        .await
        .ok()
        .and_then(|s| s["failover_events"].as_array().map(|a| a.len()))
        .unwrap_or(0)
}

/// The result as a Markdown table.
pub fn markdown(r: &OverloadResult) -> String {
    let limits = if r.limit_over_time.is_empty() {
        "-".to_string()
    } else {
        let min = r.limit_over_time.iter().map(|l| l.1).min().unwrap_or(0);
        let last = r.limit_over_time.last().map_or(0, |l| l.1);
        format!("min {min}, end {last}")
    };
    let mut log: String = r.health_log.iter().map(|l| format!("    {l}\n")).collect();
    let max_lag = r.lag_over_time.iter().map(|l| l.1).fold(0.0, f64::max);
    log.push_str(&format!(
        "\nscheduling lag (gateway_event_loop_lag_seconds every 200 ms): max {max_lag:.1} ms\n"
    ));
    for e in &r.ejections {
        log.push_str(&format!(
            "endpoint {} down or ejected at {:.1} s: lag then {:.1} ms, {} in flight; /status: {}\n",
            e.endpoint, e.at_s, e.lag_ms, e.in_flight, e.status
        ));
    }
    format!(
        "| unloaded max (req/s) | overload requests | served | shed 503 overloaded | other 5xx | transport errors | goodput vs unloaded | p99 served (ms) | regions ever down | endpoints ever down | failover events | adaptive limit |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n| {:.0} | {} | {} | {} | {} | {} | {:.2} | {:.1} | {} | {} | {} | {} |\n{log}",
        r.unloaded.throughput_rps,
        r.overloaded.requests,
        r.served,
        r.shed_overloaded,
        r.other_5xx,
        r.transport_errors,
        r.goodput_ratio,
        r.p99_served_ms,
        if r.regions_ever_down.is_empty() { "none".into() } else { r.regions_ever_down.join(", ") },
        if r.endpoints_ever_down.is_empty() { "none".into() } else { r.endpoints_ever_down.join(", ") },
        r.failover_events,
        limits,
    )
}

/// Draws the overload phase as SVG: answers per second (served by region, and 503 or failed),
/// latency, and the process's in-flight limit with the requests in flight.
pub fn chart(path: &std::path::Path, title: &str, r: &OverloadResult) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1100, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| e.to_string())?;
    let areas = root.split_evenly((3, 1));
    let buckets = &r.timeline;
    let t_max = buckets.last().map_or(1.0, |b| b.t_s + 0.1).max(1.0);
    let width = 0.1;
    let frame = |caption, y: (std::ops::Range<f64>, &'static str)| report::Panel {
        caption: (caption, 15),
        margin: 10,
        y_label_area: 60,
        x: (0.0..t_max, "seconds"),
        y,
    };

    let rps_max = buckets.iter().map(|b| b.rps).fold(1.0, f64::max) * 1.15;
    let mut c = report::panel(
        &areas[0],
        frame(
            "answers per second: served (by region), and 503 or failed in red",
            (0.0..rps_max, "req/s"),
        ),
    )?;
    let mut regions: Vec<&String> = buckets.iter().flat_map(|b| b.regions.keys()).collect();
    regions.sort();
    regions.dedup();
    for (i, region) in regions.iter().enumerate() {
        let points = buckets
            .iter()
            .map(|b| (b.t_s, *b.regions.get(*region).unwrap_or(&0) as f64 / width));
        report::line(&mut c, points, [BLUE, GREEN, MAGENTA][i % 3], region)?;
    }
    let failed = buckets.iter().map(|b| (b.t_s, b.failed as f64 / width));
    report::line(&mut c, failed, RED, "503 or failed")?;
    report::legend(&mut c)?;

    let lat_max = buckets.iter().map(|b| b.p99_ms).fold(1.0, f64::max) * 1.15;
    let mut l = report::panel(&areas[1], frame("latency (ms)", (0.0..lat_max, "ms")))?;
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

    let points =
        |v: &[(f64, u64)]| -> Vec<(f64, f64)> { v.iter().map(|(t, n)| (*t, *n as f64)).collect() };
    let (limit, in_flight) = (points(&r.limit_over_time), points(&r.in_flight_over_time));
    let n_max = limit
        .iter()
        .chain(&in_flight)
        .map(|p| p.1)
        .fold(1.0, f64::max)
        * 1.15;
    let mut a = report::panel(
        &areas[2],
        frame(
            "the process's in-flight limit and the requests in flight (/status every 200 ms)",
            (0.0..n_max, "requests"),
        ),
    )?;
    report::line(&mut a, limit, RED, "limit")?;
    report::line(&mut a, in_flight, BLUE, "in flight")?;
    report::legend(&mut a)?;
    root.present().map_err(|e| e.to_string())
}
