//! `loadtest overload`: healthy regions and more load than the gateway can serve. The product
//! promise under test: overload never becomes an outage. No region or endpoint may be marked
//! down and no failover may happen; what the gateway cannot serve it sheds with a fast 503
//! *overloaded*, and what it admits it serves.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use testbed::fleet::Fleet;
use testbed::launcher::GatewayProcess;
use testbed::yaml::{GatewayYaml, Probe, Route};

use crate::engine::{self, LoadSpec, Record};
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
    /// The overload phase in 100 ms slices (for the chart).
    #[serde(skip)]
    pub timeline: Vec<report::Bucket>,
}

/// Runs the unloaded phase, then the overload phase, watching `/status` throughout the latter.
pub async fn run(spec: &OverloadSpec) -> anyhow::Result<OverloadResult> {
    let fleet = Fleet::start(&[("fra", 2), ("ber", 2)]).await?;
    // Default probe and passive settings, as a new user would run it.
    let probe = Probe::http(
        "/healthz",
        Duration::from_secs(1),
        Duration::from_millis(500),
    );
    let gw = start_gateway(&spec.gateway, spec.threads, |ports| {
        GatewayYaml::new(ports)
            .fleet(&fleet, &probe)
            .route(Route::new("app", &["fra", "ber"]))
            .server(testbed::yaml::Server {
                adaptive_limit: spec.adaptive_limit.then_some(true),
                ..Default::default()
            })
    })
    .await?;
    if let (Some(cpu), Some(pid)) = (spec.pin_cpu, gw.pid()) {
        let status = std::process::Command::new("taskset")
            .args(["-a", "-cp", &cpu.to_string(), &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "taskset failed to pin the gateway");
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
    let records = engine::run(&load(spec.connections, spec.rate), None).await;
    let elapsed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.await;
    let overloaded = report::summarize(&records, elapsed);
    let shed = shed_total(&gw).await.saturating_sub(shed_before);
    let events = failover_events(&gw).await.saturating_sub(events_before);
    let served: Vec<Record> = records
        .iter()
        .filter(|r| r.status.is_some_and(|s| s < 500))
        .cloned()
        .collect();
    let fivexx = records
        .iter()
        .filter(|r| r.status.is_some_and(|s| s >= 500))
        .count() as u64;
    let served_summary = report::summarize(&served, elapsed);
    let watch = watch.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let unloaded_goodput = unloaded.ok as f64 / spec.duration.as_secs_f64();
    Ok(OverloadResult {
        goodput_ratio: if unloaded_goodput > 0.0 {
            served.len() as f64 / elapsed.as_secs_f64() / unloaded_goodput
        } else {
            0.0
        },
        p99_served_ms: served_summary.latency.p99_ms,
        served: served.len() as u64,
        shed_overloaded: shed,
        other_5xx: fivexx.saturating_sub(shed),
        transport_errors: records.iter().filter(|r| r.error.is_some()).count() as u64,
        regions_ever_down: watch.regions_down.into_iter().collect(),
        endpoints_ever_down: watch.endpoints_down.into_iter().collect(),
        failover_events: events,
        limit_over_time: watch.limits,
        in_flight_over_time: watch.in_flight,
        timeline: report::timeline(&records, Duration::from_millis(100)),
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
        overloaded,
    })
}

#[derive(Debug, Clone, Default)]
struct Watch {
    regions_down: BTreeSet<String>,
    endpoints_down: BTreeSet<String>,
    limits: Vec<(f64, u64)>,
    in_flight: Vec<(f64, u64)>,
}

/// Polls `/status` every 200 ms until `stop`, recording every region or endpoint shown down.
async fn watch_status(
    admin: std::net::SocketAddr,
    watch: Arc<Mutex<Watch>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    start: Instant,
) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok((200, body)) =
            testbed::launcher::http_request(admin, "GET", "/status", "admin", None).await
        {
            if let Ok(s) = serde_json::from_slice::<serde_json::Value>(&body) {
                let mut w = watch.lock().unwrap_or_else(|e| e.into_inner());
                for r in s["regions"].as_array().into_iter().flatten() {
                    let name = r["name"].as_str().unwrap_or("?").to_string();
                    if r["up"] == false {
                        w.regions_down.insert(name.clone());
                    }
                    for e in r["endpoints"].as_array().into_iter().flatten() {
                        if e["health"] == "down" || !e["ejected_for_ms"].is_null() {
                            w.endpoints_down
                                .insert(format!("{name}/{}", e["id"].as_str().unwrap_or("?")));
                        }
                    }
                }
                let t = start.elapsed().as_secs_f64();
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
    let log: String = r.health_log.iter().map(|l| format!("    {l}\n")).collect();
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
