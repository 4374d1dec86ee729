//! `loadtest bench`: the gateway against direct, nginx and HAProxy on the same upstream.
//!
//! Layout on a 2-core machine: the upstream (`loadtest region`) and the load generator share
//! CPU 0; the proxy under test runs alone on CPU 1 with one worker. Targets are measured in
//! interleaved rounds (direct, gateway, nginx, HAProxy, then again) so that drift on the machine
//! spreads over all of them; reports give the median and the min–max of the rounds.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use testbed::launcher::{free_port, GatewayProcess};
use testbed::yaml::{GatewayYaml, Probe, Region, Route, Server};

use crate::engine::{self, LoadSpec};
use crate::report;
use crate::scenario::{spread, start_gateway, Spread};

/// Arguments of `loadtest bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Length of each measurement.
    #[arg(long, default_value = "5s", value_parser = gateway_config::parse_duration)]
    pub duration: Duration,
    /// Rounds over all targets.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Connections for the maximum-throughput runs.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Fixed rate for the latency runs (default: half the lowest proxy throughput).
    #[arg(long)]
    pub rate: Option<u32>,
    /// The gateway binary (default: next to this binary; use a release build).
    #[arg(long)]
    pub gateway: Option<PathBuf>,
    /// Skip nginx and HAProxy (and do not install them).
    #[arg(long)]
    pub gateway_only: bool,
    /// Report directory.
    #[arg(long, default_value = "reports/bench")]
    pub out: PathBuf,
}

/// One proxy (or none) between the generator and the upstream.
struct Target {
    name: &'static str,
    h1: SocketAddr,
    h2: Option<SocketAddr>,
    pid: Option<u32>,
    _guard: Guard,
}

/// Keeps a target's process (and its files) alive until dropped.
pub(crate) enum Guard {
    None,
    Child {
        child: Child,
        _dir: Option<tempfile::TempDir>,
    },
    Gateway {
        _process: GatewayProcess,
    },
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Child { child, .. } = self {
            // SIGTERM first: nginx's and HAProxy's masters then stop their workers (SIGKILL
            // would orphan them); SIGKILL only if it is still there after 5 s.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            for _ in 0..50 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Measurements of one target.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TargetResult {
    /// Target name.
    pub name: String,
    /// HTTP/1.1 keep-alive maximum throughput per round (req/s).
    pub h1_rps: Vec<f64>,
    /// HTTP/2 (h2c) maximum throughput per round (req/s).
    pub h2_rps: Vec<f64>,
    /// Failed requests in the throughput runs.
    pub failed: u64,
    /// Proxy CPU time per request in the HTTP/1.1 runs (µs), per round.
    pub cpu_us_per_req: Vec<f64>,
    /// Peak resident memory of the proxy (MiB).
    pub peak_rss_mib: Option<f64>,
    /// Latency at the fixed rate.
    pub fixed_rate: Option<report::Summary>,
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the comm field.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

fn pin(pid: u32, cpu: usize) {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return;
    }
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn ensure_installed(tools: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("bench: installing {}", missing.join(" "));
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success())
        || (Command::new("apt-get")
            .args(["update", "-qq"])
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success()));
    anyhow::ensure!(
        ok,
        "could not install {} (run as root on Debian, or use --gateway-only)",
        missing.join(" ")
    );
    Ok(())
}

pub(crate) fn which(bin: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(bin))
    .find(|p| p.exists())
}

pub(crate) async fn wait_port(addr: SocketAddr) -> anyhow::Result<()> {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(20),
            "{addr} did not open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn start_nginx(upstream: SocketAddr) -> anyhow::Result<Target> {
    let dir = tempfile::tempdir()?;
    let (h1, h2) = (free_port()?, free_port()?);
    let p = dir.path().display().to_string();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/error.log crit;\nevents {{ worker_connections 8192; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  keepalive_requests 1000000;\n  upstream origin {{ server {upstream}; keepalive 256; }}\n  server {{\n    listen {h1};\n    listen {h2} http2;\n    location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\n"
    );
    let args = ["-p".into(), dir.path().as_os_str().to_owned(), "-c".into()];
    start_proxy("nginx", dir, (h1, h2), ("nginx.conf", conf), &args).await
}

async fn start_haproxy(upstream: SocketAddr) -> anyhow::Result<Target> {
    let dir = tempfile::tempdir()?;
    let (h1, h2) = (free_port()?, free_port()?);
    let conf = format!(
        "global\n  nbthread 1\n  maxconn 8000\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\n  http-reuse always\nfrontend f\n  bind {h1}\n  bind {h2} proto h2\n  default_backend b\nbackend b\n  server origin {upstream} maxconn 4000\n"
    );
    let args = ["-db".into(), "-f".into()];
    start_proxy("haproxy", dir, (h1, h2), ("haproxy.cfg", conf), &args).await
}

/// Starts the installed proxy `name` (nginx, HAProxy) listening on `h1` (HTTP/1.1) and `h2`:
/// writes `config` (file name, contents) into `dir` and runs `name <args> <config path>`, output
/// discarded. Once `h1` accepts, the process and its children are pinned to CPU 1; the one
/// measured is its first child (nginx's worker), else the process itself.
async fn start_proxy(
    name: &'static str,
    dir: tempfile::TempDir,
    (h1, h2): (SocketAddr, SocketAddr),
    (file, config): (&str, String),
    args: &[OsString],
) -> anyhow::Result<Target> {
    let path = dir.path().join(file);
    std::fs::write(&path, config)?;
    let child = Command::new(which(name).with_context(|| format!("{name} not installed"))?)
        .args(args)
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_port(h1).await?;
    let pid = child.id();
    pin(pid, 1);
    for child_pid in children(pid) {
        pin(child_pid, 1);
    }
    let worker = children(pid).into_iter().next();
    Ok(Target {
        name,
        h1,
        h2: Some(h2),
        pid: worker.or(Some(pid)),
        _guard: Guard::Child {
            child,
            _dir: Some(dir),
        },
    })
}

async fn start_gateway_target(bin: &Path, upstream: SocketAddr) -> anyhow::Result<Target> {
    let gw = start_gateway(bin, 1, |ports| {
        let probe = Probe::http(
            "/healthz",
            Duration::from_secs(1),
            Duration::from_millis(500),
        );
        let origin = Region::one("origin-1", upstream).probe(probe);
        GatewayYaml::new(ports)
            .server(Server {
                upstream_keepalive_pool: Some(512),
                ..Server::default()
            })
            .region("origin", origin)
            .route(Route::new("all", &["origin"]))
    })
    .await?;
    let pid = gw.pid().context("the gateway is not running")?;
    pin(pid, 1);
    let h1 = gw.addr;
    Ok(Target {
        name: "gateway",
        h1,
        h2: Some(h1),
        pid: Some(pid),
        _guard: Guard::Gateway { _process: gw },
    })
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn spec(
    addr: SocketAddr,
    rate: u32,
    duration: Duration,
    connections: usize,
    http2: bool,
) -> LoadSpec {
    LoadSpec {
        addr,
        host: "bench.test".into(),
        path: "/bench".into(),
        rate,
        duration,
        connections,
        http2,
        timeout: Duration::from_secs(10),
        max_requests: 50_000_000,
    }
}

/// Runs the benchmark and writes the reports.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !args.gateway_only {
        ensure_installed(&[("nginx", "nginx-light"), ("haproxy", "haproxy")])?;
    }
    let gateway = match args.gateway.clone() {
        Some(bin) => bin,
        None => testbed::launcher::gateway_bin()?,
    };

    // The generator (this process) and the upstream on CPU 0.
    pin(std::process::id(), 0);
    let upstream_addr = free_port()?;
    let exe = std::env::current_exe()?;
    let upstream = Command::new(exe)
        .args([
            "region",
            "--name",
            "origin",
            "--listen",
            &upstream_addr.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    pin(upstream.id(), 0);
    let upstream_pid = upstream.id();
    let _upstream = Guard::Child {
        child: upstream,
        _dir: None,
    };
    wait_port(upstream_addr).await?;
    pin(upstream_pid, 0);

    let mut targets = vec![Target {
        name: "direct",
        h1: upstream_addr,
        h2: Some(upstream_addr),
        pid: None,
        _guard: Guard::None,
    }];
    targets.push(start_gateway_target(&gateway, upstream_addr).await?);
    if !args.gateway_only {
        targets.push(start_nginx(upstream_addr).await?);
        targets.push(start_haproxy(upstream_addr).await?);
    }
    let mut results: Vec<TargetResult> = targets
        .iter()
        .map(|t| TargetResult {
            name: t.name.into(),
            ..Default::default()
        })
        .collect();

    // Warm-up: fill connection pools.
    for t in &targets {
        engine::run(
            &spec(t.h1, 0, Duration::from_millis(500), args.connections, false),
            None,
        )
        .await;
    }
    for round in 1..=args.repeat {
        for (t, r) in targets.iter().zip(results.iter_mut()) {
            let before = t.pid.and_then(cpu_ticks);
            let started = Instant::now();
            let records =
                engine::run(&spec(t.h1, 0, args.duration, args.connections, false), None).await;
            let s = report::summarize(&records, started.elapsed());
            if let (Some(b), Some(a)) = (before, t.pid.and_then(cpu_ticks)) {
                let cpu_s = (a - b) as f64 / 100.0;
                r.cpu_us_per_req
                    .push(cpu_s * 1e6 / (s.requests.max(1)) as f64);
            }
            r.failed += s.failed;
            r.h1_rps.push(s.throughput_rps);
            eprintln!(
                "round {round} {:8} http/1.1 {:>9.0} req/s  failed {}",
                t.name, s.throughput_rps, s.failed
            );
            if let Some(h2) = t.h2 {
                let started = Instant::now();
                let records = engine::run(&spec(h2, 0, args.duration, 4, true), None).await;
                let s = report::summarize(&records, started.elapsed());
                r.failed += s.failed;
                r.h2_rps.push(s.throughput_rps);
                eprintln!(
                    "round {round} {:8} h2c      {:>9.0} req/s  failed {}",
                    t.name, s.throughput_rps, s.failed
                );
            }
        }
    }
    let median = |v: &[f64]| spread(v.iter().map(|x| Some(*x))).median.unwrap_or(0.0);
    let lowest_proxy = results
        .iter()
        .skip(1)
        .map(|r| median(&r.h1_rps))
        .fold(f64::MAX, f64::min);
    let rate = args.rate.unwrap_or(((lowest_proxy / 2.0) as u32).max(100));
    for (t, r) in targets.iter().zip(results.iter_mut()) {
        let started = Instant::now();
        let records = engine::run(
            &spec(t.h1, rate, args.duration, args.connections, false),
            None,
        )
        .await;
        let s = report::summarize(&records, started.elapsed());
        eprintln!(
            "fixed {rate} req/s {:8} p50 {:.3} ms p99 {:.3} ms p99.9 {:.3} ms",
            t.name, s.latency.p50_ms, s.latency.p99_ms, s.latency.p999_ms
        );
        r.fixed_rate = Some(s);
        r.peak_rss_mib = t.pid.and_then(peak_rss_mib);
    }

    std::fs::create_dir_all(&args.out)?;
    let stats = |v: &[f64]| -> Spread { spread(v.iter().map(|x| Some(*x))) };
    let doc = serde_json::json!({
        "duration_s": args.duration.as_secs_f64(), "repeat": args.repeat, "connections": args.connections, "fixed_rate": rate,
        "layout": "generator and upstream on CPU 0, proxy alone on CPU 1 with one worker",
        "results": results.iter().map(|r| serde_json::json!({
            "name": r.name, "h1_rps": stats(&r.h1_rps), "h2_rps": stats(&r.h2_rps), "failed": r.failed,
            "cpu_us_per_req": stats(&r.cpu_us_per_req), "peak_rss_mib": r.peak_rss_mib, "fixed_rate": r.fixed_rate,
            "h1_rps_rounds": r.h1_rps, "h2_rps_rounds": r.h2_rps,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&doc)?,
    )?;
    let md = markdown(&results, rate, &args);
    std::fs::write(args.out.join("report.md"), &md)?;
    chart(&args.out.join("chart.svg"), &results).map_err(anyhow::Error::msg)?;
    println!("{md}");
    println!("reports in {}", args.out.display());
    Ok(())
}

fn markdown(results: &[TargetResult], rate: u32, args: &BenchArgs) -> String {
    let median = |v: &[f64]| spread(v.iter().map(|x| Some(*x))).median.unwrap_or(0.0);
    let range = |v: &[f64]| {
        let s = spread(v.iter().map(|x| Some(*x)));
        format!(
            "{:.0} ({:.0}–{:.0})",
            s.median.unwrap_or(0.0),
            s.min.unwrap_or(0.0),
            s.max.unwrap_or(0.0)
        )
    };
    let by = |name: &str| {
        results
            .iter()
            .find(|r| r.name == name)
            .map(|r| median(&r.h1_rps))
    };
    let mut md = format!(
        "# bench: gateway vs direct, nginx, HAProxy\n\n{} rounds of {:?} per target, {} connections (HTTP/1.1 keep-alive, small body), 4 h2c connections with 64 streams in flight; generator and upstream on CPU 0, proxy alone on CPU 1 with one worker.\n\n",
        args.repeat, args.duration, args.connections
    );
    md.push_str("| target | HTTP/1.1 req/s median (min–max) | h2c req/s median (min–max) | failed | CPU µs/req | peak RSS MiB | p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|---|---|---|---|---|\n");
    for r in results {
        let lat = r.fixed_rate.as_ref().map(|s| &s.latency);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            range(&r.h1_rps),
            if r.h2_rps.is_empty() {
                "-".into()
            } else {
                range(&r.h2_rps)
            },
            r.failed,
            if r.cpu_us_per_req.is_empty() {
                "-".into()
            } else {
                format!("{:.1}", median(&r.cpu_us_per_req))
            },
            r.peak_rss_mib.map_or("-".into(), |m| format!("{m:.1}")),
            lat.map_or("-".into(), |l| format!("{:.3}", l.p50_ms)),
            lat.map_or("-".into(), |l| format!("{:.3}", l.p99_ms)),
            lat.map_or("-".into(), |l| format!("{:.3}", l.p999_ms)),
        ));
    }
    md.push_str(&format!("\nLatency columns: open loop at {rate} req/s for {:?}, measured from the scheduled send time.\n\n", args.duration));
    if let Some(gw) = by("gateway") {
        md.push_str("Gateway HTTP/1.1 throughput ratios (median): ");
        let ratios: Vec<String> = ["direct", "nginx", "haproxy"]
            .iter()
            .filter_map(|n| by(n).map(|v| format!("{:.2}× {n}", gw / v.max(1.0))))
            .collect();
        md.push_str(&ratios.join(", "));
        md.push('\n');
    }
    md
}

fn chart(path: &Path, results: &[TargetResult]) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let rounds = results
        .iter()
        .map(|r| r.h1_rps.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let y_max = results
        .iter()
        .flat_map(|r| r.h1_rps.iter().chain(&r.h2_rps))
        .fold(1.0f64, |a, b| a.max(*b))
        * 1.15;
    let mut c = report::panel(
        &root,
        report::Panel {
            caption: (
                "maximum throughput per round (solid HTTP/1.1, dashed h2c)",
                18,
            ),
            margin: 15,
            y_label_area: 70,
            x: (0.5..(rounds as f64 + 0.5), "round"),
            y: (0.0..y_max, "req/s"),
        },
    )?;
    let palette = [BLACK, BLUE, GREEN, RED];
    for (i, r) in results.iter().enumerate() {
        let color = palette[i % palette.len()];
        let h1 = r
            .h1_rps
            .iter()
            .enumerate()
            .map(|(k, v)| ((k + 1) as f64, *v));
        report::line(&mut c, h1, color, &r.name)?;
        c.draw_series(
            r.h2_rps
                .iter()
                .enumerate()
                .map(|(k, v)| Circle::new(((k + 1) as f64, *v), 4, color.filled())),
        )
        .map_err(|e| e.to_string())?;
    }
    report::legend(&mut c)?;
    root.present().map_err(|e| e.to_string())
}
