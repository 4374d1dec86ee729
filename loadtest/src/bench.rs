//! `loadtest bench`: the gateway against direct, nginx and HAProxy on the same upstream, like
//! for like, in groups that each answer one row of the performance goals (see [`Group`]).
//!
//! Layout on a 2-core machine: the upstream (`loadtest region`) and the load generator share
//! CPU 0; the proxy under test runs alone on CPU 1 with one worker (the `workers` group lets
//! two workers use both CPUs, beside the generator). nginx and HAProxy do the gateway's header
//! work (forwarding headers, the request id both ways; see `bench/proxies.rs`) unless their row
//! is called `-min`. Throughput is measured in interleaved rounds (every target of a group, then
//! again) so that drift on the machine spreads over all of them; reports give the median and
//! the min–max of the rounds, and a last table checks every goal.

mod goals;
mod idle;
mod proxies;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Serialize, Serializer};

use testbed::fleet::Fleet;
use testbed::yaml::{GatewayYaml, Probe, Route};

use crate::engine::{self, LoadSpec};
use crate::overload::{nginx_origin, run_wrk};
pub use crate::overload::{Client, Origin};
use crate::process::{self, ensure_installed, wait_port, which, Guard};
use crate::report;
use crate::scenario::{spread, start_gateway};

pub use goals::Goal;
pub use idle::IdleResult;
pub use proxies::{write_peer_config, Peer};
use proxies::{GatewayRoutes, Setup, Target, TlsFiles};

/// Arguments of `loadtest bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Length of each throughput or latency measurement.
    #[arg(long, default_value = "5s", value_parser = gateway_config::parse_duration)]
    pub duration: Duration,
    /// Rounds over all targets of a group.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Connections for the HTTP/1.1 maximum-throughput runs.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Fixed rate for the latency runs (default: half nginx's HTTP/1.1 maximum, or half the
    /// lowest proxy's without nginx).
    #[arg(long)]
    pub rate: Option<u32>,
    /// The groups to run, comma-separated (default: all, in the order below).
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<Group>>,
    /// Clients of the idle group.
    #[arg(long, default_value_t = 10_000)]
    pub idle_clients: usize,
    /// How long the probes group measures the gateway's CPU.
    #[arg(long, default_value = "20s", value_parser = gateway_config::parse_duration)]
    pub probe_window: Duration,
    /// The gateway binary (default: next to this binary; use a release build).
    #[arg(long)]
    pub gateway: Option<PathBuf>,
    /// Skip nginx and HAProxy (and do not install them).
    #[arg(long)]
    pub gateway_only: bool,
    /// Report directory.
    #[arg(long, default_value = "reports/bench")]
    pub out: PathBuf,
    /// The upstream every target proxies to: the test bed's app (`loadtest region`, which
    /// echoes the request's headers), or one nginx worker answering with the names of the
    /// forwarding and request-id headers it received. Either shares CPU 0 with the generator.
    #[arg(long, value_enum, default_value = "testbed")]
    pub origin: Origin,
    /// The generator of the HTTP/1.1 maximum-throughput runs: this crate's engine, or `wrk`
    /// (one thread, `--connections` kept-alive connections, on CPU 0; installed when
    /// missing). The h2c and fixed-rate runs always use the engine.
    #[arg(long, value_enum, default_value = "engine")]
    pub client: Client,
}

/// One group of measurements, one per row of the goals (or two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// HTTP/1.1 keep-alive and h2c maximum, CPU µs/request, latency at a fixed rate: direct,
    /// gateway, nginx, HAProxy (all with the gateway's header work), nginx-min, haproxy-min,
    /// Caddy (with the header work, `GOMAXPROCS=1`) and pingora-min (the vendored Pingora with
    /// the header work and nothing else, when built beside the gateway binary).
    H1,
    /// The gateway with all features on (1000 host routes, sticky cookie, probes) vs nginx.
    Features,
    /// The gateway with 10 vs 10 000 host routes.
    Routes,
    /// Two workers each, on both CPUs (the generator competes for them).
    Workers,
    /// TLS with h2, 4 connections × 64 streams (h2load), h1 to the upstream.
    Tls,
    /// RSS with many idle HTTP/1.1 keep-alive clients.
    Idle,
    /// The gateway's CPU while probing 1000 endpoints every second, no traffic.
    Probes,
}

impl Group {
    /// Every group, in the order they run.
    pub const ALL: [Group; 7] = [
        Group::H1,
        Group::Features,
        Group::Routes,
        Group::Workers,
        Group::Tls,
        Group::Idle,
        Group::Probes,
    ];
}

/// Measurements per round: median, min and max in reports (and every round in JSON).
#[derive(Debug, Clone, Default)]
pub struct Rounds(pub Vec<f64>);

impl Rounds {
    /// The median round (`None` without rounds).
    pub fn median(&self) -> Option<f64> {
        spread(self.0.iter().map(|x| Some(*x))).median
    }

    /// `median (min–max)`, or `-` without rounds.
    fn text(&self, decimals: usize) -> String {
        let s = spread(self.0.iter().map(|x| Some(*x)));
        match (s.median, s.min, s.max) {
            (Some(m), Some(lo), Some(hi)) => {
                format!("{m:.decimals$} ({lo:.decimals$}–{hi:.decimals$})")
            }
            _ => "-".into(),
        }
    }
}

impl Serialize for Rounds {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let s = spread(self.0.iter().map(|x| Some(*x)));
        serde_json::json!({"median": s.median, "min": s.min, "max": s.max, "rounds": self.0})
            .serialize(serializer)
    }
}

/// Measurements of one target in one group.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TargetResult {
    /// Target name.
    pub name: String,
    /// HTTP/1.1 keep-alive maximum throughput per round (req/s).
    pub h1_rps: Rounds,
    /// h2c maximum throughput per round (req/s).
    pub h2c_rps: Rounds,
    /// TLS h2 maximum throughput per round (req/s, h2load).
    pub tls_h2_rps: Rounds,
    /// Failed requests in the throughput runs.
    pub failed: u64,
    /// Proxy CPU time per request in the HTTP/1.1 runs (TLS group: the h2 runs) (µs).
    pub cpu_us_per_req: Rounds,
    /// How busy CPU 0 (the generator and the upstream) was during the HTTP/1.1 runs (%): near
    /// 100, the load side, not the proxy, may be the limit.
    pub load_cpu_busy_pct: Rounds,
    /// Peak resident memory of the proxy's worker (MiB).
    pub peak_rss_mib: Option<f64>,
    /// Latency at the fixed rate.
    pub fixed_rate: Option<report::Summary>,
}

/// The probes group's result.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// Endpoints probed.
    pub endpoints: usize,
    /// Probe interval (s).
    pub interval_s: f64,
    /// How long the CPU was counted (s).
    pub window_s: f64,
    /// The gateway's CPU time in the window (s).
    pub cpu_s: f64,
    /// `cpu_s` as a share of one core (%).
    pub percent_of_core: f64,
    /// Endpoints `/status` showed healthy after the window (read after the CPU, which it costs).
    pub healthy_endpoints: Option<u64>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BenchReport {
    /// Length of each measurement (s).
    pub duration_s: f64,
    /// Rounds per group.
    pub repeat: u32,
    /// Connections of the HTTP/1.1 throughput runs.
    pub connections: usize,
    /// The upstream (`--origin`).
    pub origin: Origin,
    /// The HTTP/1.1 throughput runs' generator (`--client`).
    pub client: Client,
    /// The latency runs' rate (req/s), when the h1 group ran.
    pub fixed_rate: Option<u32>,
    /// Group h1.
    pub h1: Option<Vec<TargetResult>>,
    /// Group features.
    pub features: Option<Vec<TargetResult>>,
    /// Group routes.
    pub routes: Option<Vec<TargetResult>>,
    /// Group workers.
    pub workers: Option<Vec<TargetResult>>,
    /// Group tls.
    pub tls: Option<Vec<TargetResult>>,
    /// Group idle.
    pub idle: Option<Vec<IdleResult>>,
    /// Group probes.
    pub probes: Option<ProbeResult>,
    /// The goals, each met or not (or not measured).
    pub goals: Vec<Goal>,
}

/// What every group's targets share.
struct Bench {
    args: BenchArgs,
    gateway: PathBuf,
    upstream: SocketAddr,
}

/// The nginx origin's answer: the names of the forwarding and request-id headers the request
/// carried (what `check_answer` looks for in the test bed's JSON echo), so that a target's
/// header work is checked the same way with either origin.
const NGINX_ECHO: (&str, &str) = (
    concat!(
        "  map $http_x_forwarded_for $echo_xff { \"\" \"\"; default \"x-forwarded-for \"; }\n",
        "  map $http_x_forwarded_proto $echo_xfp { \"\" \"\"; default \"x-forwarded-proto \"; }\n",
        "  map $http_x_forwarded_host $echo_xfh { \"\" \"\"; default \"x-forwarded-host \"; }\n",
        "  map $http_x_request_id $echo_rid { \"\" \"\"; default \"x-request-id \"; }\n",
    ),
    "    location / { return 200 \"$echo_xff$echo_xfp$echo_xfh$echo_rid\\n\"; }\n",
);

/// One worker alone on CPU 1, with the gateway's header work.
const ONE_WORKER: Setup<'static> = Setup {
    headers: true,
    workers: 1,
    cpus: "1",
    tls: None,
};

/// `GET /bench` with the target's `Host` to `addr` at `rate` (0: closed loop) over
/// `connections` (HTTP/1.1) or h2c connections with `http2`.
fn spec(
    target: &Target,
    addr: SocketAddr,
    rate: u32,
    duration: Duration,
    (connections, http2): (usize, bool),
) -> LoadSpec {
    LoadSpec {
        addr,
        host: target.host.clone(),
        path: "/bench".into(),
        rate,
        duration,
        connections,
        http2,
        timeout: Duration::from_secs(10),
        max_requests: 50_000_000,
    }
}

/// Runs the groups asked for and writes the reports.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let groups = {
        let mut g = args.only.clone().unwrap_or_else(|| Group::ALL.to_vec());
        g.sort();
        g.dedup();
        g
    };
    let mut tools = Vec::new();
    if !args.gateway_only {
        tools.extend([("nginx", "nginx-light"), ("haproxy", "haproxy")]);
        if groups.contains(&Group::H1) {
            tools.push(("caddy", "caddy"));
        }
    }
    // The tls group's client, with or without the peers.
    if groups.contains(&Group::Tls) {
        tools.push(("h2load", "nghttp2-client"));
    }
    if args.origin == Origin::Nginx {
        tools.push(("nginx", "nginx-light"));
    }
    if args.client == Client::Wrk {
        tools.push(("wrk", "wrk"));
    }
    ensure_installed(&tools)?;
    let gateway = match args.gateway.clone() {
        Some(bin) => bin,
        None => testbed::launcher::gateway_bin()?,
    };
    // The idle group's clients (and the proxies, which inherit the limit) need descriptors.
    process::raise_fd_limit(proxies::FD_LIMIT);

    // The generator (this process) and the upstream on CPU 0.
    proxies::pin(std::process::id(), "0");
    let (upstream_addr, _upstream) = match args.origin {
        Origin::Testbed => {
            let upstream_addr = testbed::launcher::free_port()?;
            let upstream = Command::new(std::env::current_exe()?)
                .args(["region", "--name", "origin", "--listen"])
                .arg(upstream_addr.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?;
            let upstream_pid = upstream.id();
            let guard = Guard::Child {
                child: upstream,
                _dir: None,
            };
            wait_port(upstream_addr).await?;
            proxies::pin(upstream_pid, "0");
            (upstream_addr, guard)
        }
        Origin::Nginx => {
            let (guard, ports) = nginx_origin(1, Some(0), NGINX_ECHO).await?;
            (ports[0], guard)
        }
    };

    let bench = Bench {
        args: args.clone(),
        gateway,
        upstream: upstream_addr,
    };
    let mut report = BenchReport {
        duration_s: args.duration.as_secs_f64(),
        repeat: args.repeat,
        connections: args.connections,
        origin: args.origin,
        client: args.client,
        ..BenchReport::default()
    };
    for group in &groups {
        eprintln!("bench: group {group:?}");
        match group {
            Group::H1 => {
                let (results, rate) = bench.h1().await?;
                report.h1 = Some(results);
                report.fixed_rate = Some(rate);
            }
            Group::Features => report.features = Some(bench.features().await?),
            Group::Routes => report.routes = Some(bench.routes().await?),
            Group::Workers => report.workers = Some(bench.workers().await?),
            Group::Tls => report.tls = Some(bench.tls().await?),
            Group::Idle => report.idle = Some(bench.idle().await?),
            Group::Probes => report.probes = Some(bench.probes().await?),
        }
    }
    report.goals = goals::evaluate(&report);

    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = markdown(&report);
    std::fs::write(args.out.join("report.md"), &md)?;
    if let Some(h1) = &report.h1 {
        chart(&args.out.join("chart.svg"), h1).map_err(anyhow::Error::msg)?;
    }
    println!("{md}");
    println!("reports in {}", args.out.display());
    Ok(())
}

impl Bench {
    fn with_proxies(&self) -> bool {
        !self.args.gateway_only
    }

    /// The gateway with one route plus nginx and HAProxy, as `setup` says; nginx-min,
    /// haproxy-min, Caddy and pingora-min too with `min_rows`. Each is checked to do the header work or not (an
    /// `X-Request-Id` on its answer).
    async fn three(
        &self,
        suffix: &str,
        setup: Setup<'_>,
        min_rows: bool,
    ) -> anyhow::Result<Vec<Target>> {
        let up = self.upstream;
        let mut targets = vec![
            proxies::start_gateway_target(
                &self.gateway,
                &format!("gateway{suffix}"),
                up,
                GatewayRoutes::One,
                setup,
            )
            .await?,
        ];
        if self.with_proxies() {
            targets.push(proxies::start_nginx(&format!("nginx{suffix}"), up, setup).await?);
            targets.push(proxies::start_haproxy(&format!("haproxy{suffix}"), up, setup).await?);
            if min_rows {
                let min = Setup {
                    headers: false,
                    ..setup
                };
                targets.push(proxies::start_nginx("nginx-min", up, min).await?);
                targets.push(proxies::start_haproxy("haproxy-min", up, min).await?);
                // Caddy with the header work, in the h1 group only.
                targets.push(proxies::start_caddy("caddy", up, setup).await?);
                // The floor of the gateway's request path: Pingora with the same header work.
                if proxies::pingora_min_beside(&self.gateway).is_some() {
                    targets.push(
                        proxies::start_pingora_min(&self.gateway, "pingora-min", up, setup).await?,
                    );
                } else {
                    eprintln!(
                        "bench: no pingora-min beside the gateway binary: its row is left out"
                    );
                }
            }
        }
        for t in &targets {
            // nginx-min and haproxy-min leave the header work out; pingora-min does it.
            let minimal = matches!(t.name.as_str(), "nginx-min" | "haproxy-min");
            check_answer(t, !minimal, false).await?;
        }
        Ok(targets)
    }

    /// Group h1: HTTP/1.1 and h2c rounds, then latency at a fixed rate.
    async fn h1(&self) -> anyhow::Result<(Vec<TargetResult>, u32)> {
        let mut targets = vec![Target::direct(
            self.upstream,
            self.args.origin == Origin::Testbed,
        )];
        targets.extend(self.three("", ONE_WORKER, true).await?);
        let mut results = self.rounds(&targets, true).await;
        let median = |name: &str| {
            results
                .iter()
                .find(|r| r.name == name)
                .and_then(|r| r.h1_rps.median())
        };
        let lowest_proxy = results
            .iter()
            .skip(1)
            .filter_map(|r| r.h1_rps.median())
            .fold(f64::MAX, f64::min);
        let half = median("nginx").unwrap_or(lowest_proxy) / 2.0;
        let rate = self.args.rate.unwrap_or((half as u32).max(100));
        for (t, r) in targets.iter().zip(results.iter_mut()) {
            let started = Instant::now();
            let load = spec(
                t,
                t.h1,
                rate,
                self.args.duration,
                (self.args.connections, false),
            );
            let records = engine::run(&load, None).await;
            let s = report::summarize(&records, started.elapsed());
            eprintln!(
                "fixed {rate} req/s {:12} p50 {:.3} ms p99 {:.3} ms p99.9 {:.3} ms",
                t.name, s.latency.p50_ms, s.latency.p99_ms, s.latency.p999_ms
            );
            r.fixed_rate = Some(s);
            r.peak_rss_mib = t.worker.and_then(peak_rss_mib);
        }
        Ok((results, rate))
    }

    /// Group features: the gateway with 1000 host routes (the benched one in the middle, with a
    /// sticky cookie), every route's region probed every second, against nginx.
    async fn features(&self) -> anyhow::Result<Vec<TargetResult>> {
        let routes = GatewayRoutes::Hosts {
            count: 1000,
            benched: 500,
            sticky: true,
        };
        let mut targets = vec![
            proxies::start_gateway_target(
                &self.gateway,
                "gateway-all",
                self.upstream,
                routes,
                ONE_WORKER,
            )
            .await?,
        ];
        check_answer(&targets[0], true, true).await?;
        if self.with_proxies() {
            targets.push(proxies::start_nginx("nginx", self.upstream, ONE_WORKER).await?);
        }
        Ok(self.rounds(&targets, false).await)
    }

    /// Group routes: the gateway with 10 and with 10 000 host routes, the benched one last.
    async fn routes(&self) -> anyhow::Result<Vec<TargetResult>> {
        let mut targets = Vec::new();
        for count in [10, 10_000] {
            let routes = GatewayRoutes::Hosts {
                count,
                benched: count - 1,
                sticky: false,
            };
            let name = format!("gateway-{count}-routes");
            let target = proxies::start_gateway_target(
                &self.gateway,
                &name,
                self.upstream,
                routes,
                ONE_WORKER,
            )
            .await?;
            check_answer(&target, true, false).await?;
            targets.push(target);
        }
        Ok(self.rounds(&targets, false).await)
    }

    /// Group workers: two workers each, allowed on both CPUs.
    async fn workers(&self) -> anyhow::Result<Vec<TargetResult>> {
        let setup = Setup {
            workers: 2,
            cpus: "0,1",
            ..ONE_WORKER
        };
        let targets = self.three("-2w", setup, false).await?;
        Ok(self.rounds(&targets, false).await)
    }

    /// Group tls: h2load over TLS with h2, 4 connections × 64 streams, in interleaved rounds.
    async fn tls(&self) -> anyhow::Result<Vec<TargetResult>> {
        let files = TlsFiles::generate()?;
        let setup = Setup {
            tls: Some(&files),
            ..ONE_WORKER
        };
        let targets = self.three("", setup, false).await?;
        let mut results = new_results(&targets);
        for round in 1..=self.args.repeat {
            for (t, r) in targets.iter().zip(results.iter_mut()) {
                let Some(addr) = t.tls else { continue };
                let before = t.cpu_ticks();
                let run = h2load(addr, self.args.duration).await?;
                if let (Some(b), Some(a)) = (before, t.cpu_ticks()) {
                    r.cpu_us_per_req
                        .0
                        .push(cpu_us_per_req(a - b, run.succeeded));
                }
                r.failed += run.failed;
                r.tls_h2_rps.0.push(run.rps);
                eprintln!(
                    "round {round} {:12} tls h2   {:>9.0} req/s  failed {}",
                    t.name, run.rps, run.failed
                );
            }
        }
        Ok(results)
    }

    /// Group idle: for each proxy in turn, the idle clients opened, held, measured, closed.
    async fn idle(&self) -> anyhow::Result<Vec<IdleResult>> {
        let targets = self.three("", ONE_WORKER, false).await?;
        let mut results = Vec::new();
        for t in &targets {
            let Some(worker) = t.worker else { continue };
            // Warm: the upstream pool and whatever a first request allocates.
            engine::run(
                &spec(t, t.h1, 0, Duration::from_millis(300), (64, false)),
                None,
            )
            .await;
            let r = idle::measure(&t.name, t.h1, &t.host, worker, self.args.idle_clients).await;
            eprintln!(
                "idle {:12} {} held of {}, RSS {:.1} → {:.1} MiB, {:.1} KiB per client",
                t.name,
                r.held,
                r.clients,
                r.rss_before_mib,
                r.rss_with_clients_mib,
                r.kib_per_client
            );
            results.push(r);
            // The closed clients' sockets leave before the next proxy is measured.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(results)
    }

    /// Group probes: the gateway with one region of 1000 endpoints (in this process, on CPU 0)
    /// probed over HTTP every second, no traffic; its CPU over the window.
    async fn probes(&self) -> anyhow::Result<ProbeResult> {
        const ENDPOINTS: usize = 1000;
        let interval = Duration::from_secs(1);
        let fleet = Fleet::start(&[("probed", ENDPOINTS)]).await?;
        let probe = Probe::http("/healthz", interval, Duration::from_millis(500));
        let gw = start_gateway(&self.gateway, 1, |ports| {
            GatewayYaml::new(ports)
                .fleet(&fleet, &probe)
                .route(Route::new("all", &["probed"]))
        })
        .await?;
        let pid = gw.pid().context("the gateway is not running")?;
        proxies::pin(pid, "1");
        // The first probes open their connections; count the steady state.
        tokio::time::sleep(2 * interval).await;
        let ticks = || proxies::tree_cpu_ticks(pid).unwrap_or(0);
        let before = ticks();
        let started = Instant::now();
        tokio::time::sleep(self.args.probe_window).await;
        let window_s = started.elapsed().as_secs_f64();
        let cpu_s = ticks().saturating_sub(before) as f64 / proxies::TICKS_PER_SECOND;
        let status = gw.status(None).await.unwrap_or_default();
        let healthy_endpoints = status["regions"]
            .as_array()
            .and_then(|regions| regions.iter().find(|r| r["name"] == "probed"))
            .and_then(|r| r["healthy_endpoints"].as_u64());
        drop(gw);
        fleet.shutdown().await;
        let r = ProbeResult {
            endpoints: ENDPOINTS,
            interval_s: interval.as_secs_f64(),
            window_s,
            cpu_s,
            percent_of_core: cpu_s / window_s * 100.0,
            healthy_endpoints,
        };
        eprintln!(
            "probes {ENDPOINTS} endpoints every {:?}: {:.2} % of one core, {:?} healthy",
            interval, r.percent_of_core, r.healthy_endpoints
        );
        Ok(r)
    }

    /// One maximum-throughput HTTP/1.1 run against `t`, by the engine or by wrk.
    async fn h1_max(
        &self,
        t: &Target,
        duration: Duration,
        connections: usize,
    ) -> anyhow::Result<report::Summary> {
        let started = Instant::now();
        Ok(match self.args.client {
            Client::Engine => {
                let load = spec(t, t.h1, 0, duration, (connections, false));
                report::summarize(&engine::run(&load, None).await, started.elapsed())
            }
            Client::Wrk => {
                let host = (t.host.as_str(), "/bench");
                let phase = run_wrk(t.h1, host, connections, duration, Some(0)).await?;
                phase.summary
            }
        })
    }

    /// Maximum HTTP/1.1 throughput (and h2c with `h2c`) of `targets` in interleaved rounds,
    /// after a warm-up that fills the connection pools; CPU µs/request of the HTTP/1.1 runs.
    async fn rounds(&self, targets: &[Target], h2c: bool) -> Vec<TargetResult> {
        let (duration, connections) = (self.args.duration, self.args.connections);
        for t in targets {
            let warm = spec(t, t.h1, 0, Duration::from_millis(500), (connections, false));
            engine::run(&warm, None).await;
        }
        let mut results = new_results(targets);
        for round in 1..=self.args.repeat {
            for (t, r) in targets.iter().zip(results.iter_mut()) {
                let before = t.cpu_ticks();
                let load_before = cpu_times(0);
                let s = match self.h1_max(t, duration, connections).await {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("round {round} {:12} http/1.1: {e:#}", t.name);
                        r.failed += 1;
                        continue;
                    }
                };
                if let (Some(b), Some(a)) = (before, t.cpu_ticks()) {
                    r.cpu_us_per_req.0.push(cpu_us_per_req(a - b, s.requests));
                }
                if let (Some(b), Some(a)) = (load_before, cpu_times(0)) {
                    r.load_cpu_busy_pct.0.push(busy_pct(b, a));
                }
                r.failed += s.failed;
                r.h1_rps.0.push(s.throughput_rps);
                eprintln!(
                    "round {round} {:12} http/1.1 {:>9.0} req/s  failed {}",
                    t.name, s.throughput_rps, s.failed
                );
                let Some(addr) = t.h2c.filter(|_| h2c) else {
                    continue;
                };
                let started = Instant::now();
                let load = spec(t, addr, 0, duration, (4, true));
                let s = report::summarize(&engine::run(&load, None).await, started.elapsed());
                r.failed += s.failed;
                r.h2c_rps.0.push(s.throughput_rps);
                eprintln!(
                    "round {round} {:12} h2c      {:>9.0} req/s  failed {}",
                    t.name, s.throughput_rps, s.failed
                );
            }
        }
        results
    }
}

/// Checks one answer of `target` to the benched request: a 200 (the engine counts any status
/// below 500 as served, so a 404 from a route that does not match would pass unseen), the
/// gateway's header work done or not as `header_work` says (a request id on the answer, the
/// forwarding headers and the request id on the request the upstream echoes as JSON), and a
/// sticky cookie set when `sticky`.
async fn check_answer(target: &Target, header_work: bool, sticky: bool) -> anyhow::Result<()> {
    let answer = idle::answer(target.h1, &target.host)
        .await
        .with_context(|| format!("{}: no answer", target.name))?;
    let (head, echo) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let done = head.contains("\r\nx-request-id:")
        && [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-request-id",
        ]
        .iter()
        .all(|h| echo.contains(h));
    let none = !head.contains("\r\nx-request-id:") && !echo.contains("x-forwarded-proto");
    let problem = if !head.starts_with("http/1.1 200") {
        Some("not a 200")
    } else if header_work && !done {
        Some("without the header work")
    } else if !header_work && !none {
        Some("with header work a minimal config does not do")
    } else if sticky && !head.contains("\r\nset-cookie:") {
        Some("without a sticky cookie")
    } else {
        None
    };
    match problem {
        Some(problem) => anyhow::bail!("{}: an answer {problem}:\n{answer}", target.name),
        None => Ok(()),
    }
}

fn new_results(targets: &[Target]) -> Vec<TargetResult> {
    targets
        .iter()
        .map(|t| TargetResult {
            name: t.name.clone(),
            ..TargetResult::default()
        })
        .collect()
}

/// CPU `cpu`'s (busy, total) time in clock ticks, from `/proc/stat`.
fn cpu_times(cpu: usize) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let label = format!("cpu{cpu} ");
    let line = stat.lines().find(|l| l.starts_with(&label))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …: idle and iowait are not busy.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The busy share (%) between two `cpu_times` readings.
fn busy_pct((busy0, total0): (u64, u64), (busy1, total1): (u64, u64)) -> f64 {
    let total = total1.saturating_sub(total0);
    if total == 0 {
        return 0.0;
    }
    busy1.saturating_sub(busy0) as f64 * 100.0 / total as f64
}

fn cpu_us_per_req(ticks: u64, requests: u64) -> f64 {
    ticks as f64 / proxies::TICKS_PER_SECOND * 1e6 / requests.max(1) as f64
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// One h2load run.
#[derive(Debug, Clone, Copy, PartialEq)]
struct H2loadRun {
    rps: f64,
    succeeded: u64,
    failed: u64,
}

/// `h2load` for `duration` against `https://addr/bench`: 4 connections, 64 streams each, one
/// thread (on this process's CPU); killed if it has not ended 15 s after `duration`.
async fn h2load(addr: SocketAddr, duration: Duration) -> anyhow::Result<H2loadRun> {
    let bin =
        which("h2load").context("h2load is not installed (apt-get install nghttp2-client)")?;
    let secs = duration.as_secs().max(1).to_string();
    let run = tokio::process::Command::new(bin)
        .args(["-D", &secs, "-c", "4", "-m", "64", "-t", "1"])
        .arg(format!("https://{addr}/bench"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(duration + Duration::from_secs(15), run)
        .await
        .context("h2load did not end")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse_h2load(&stdout).with_context(|| format!("h2load said: {stdout}"))
}

/// Reads h2load's `finished in 5.00s, 79534.20 req/s, ...`, `requests: N total, ...` and
/// `status codes: N 2xx, ...` lines: every request without a 2xx counts as failed. `None`
/// unless h2 was negotiated (`Application protocol: h2`).
fn parse_h2load(stdout: &str) -> Option<H2loadRun> {
    let line = |prefix: &str| stdout.lines().find_map(|l| l.trim().strip_prefix(prefix));
    let count = |text: &str, what: &str| -> Option<u64> {
        text.split(',').find_map(|part| {
            let (n, word) = part.trim().split_once(' ')?;
            (word == what).then(|| n.parse().ok())?
        })
    };
    if line("Application protocol:")?.trim() != "h2" {
        return None;
    }
    let rps = line("finished in ")?
        .split(',')
        .find_map(|p| p.trim().strip_suffix(" req/s")?.parse().ok())?;
    let total = count(line("requests: ")?, "total")?;
    let ok = count(line("status codes: ")?, "2xx")?;
    Some(H2loadRun {
        rps,
        succeeded: ok,
        failed: total.saturating_sub(ok),
    })
}

/// The report: one table per group that ran, then the goals.
pub fn markdown(report: &BenchReport) -> String {
    let mut md = format!(
        "# bench: gateway vs direct, nginx, HAProxy, Caddy\n\n{} rounds of {:?} per target, interleaved; generator and upstream on CPU 0, proxy alone on CPU 1 with one worker (except the workers group). nginx, HAProxy and Caddy add the gateway's forwarding and request-id headers; nginx-min and haproxy-min are their minimal configs; pingora-min is the vendored Pingora with the same header work and nothing else (the floor of the gateway's request path).\n\n",
        report.repeat,
        Duration::from_secs_f64(report.duration_s)
    );
    if let Some(h1) = &report.h1 {
        md.push_str(&h1_table(h1, report));
    }
    let groups = [
        (&report.features, "features: all on (1000 host routes, the benched one the 501st with a sticky cookie, probes every 1 s)", "nginx"),
        (&report.routes, "routes: 10 vs 10 000 host routes (the benched one last)", "gateway-10-routes"),
        (&report.workers, "workers: two workers on two cores (not pinned: the generator and the upstream share CPU 0 with them)", "nginx-2w"),
    ];
    for (results, title, reference) in groups {
        if let Some(results) = results {
            md.push_str(&format!(
                "## {title}\n\n{}\n",
                throughput_table(results, reference, |r| &r.h1_rps, "HTTP/1.1 req/s")
            ));
        }
    }
    if let Some(tls) = &report.tls {
        md.push_str(&format!(
            "## tls: TLS with h2 (h2load, 4 connections × 64 streams), HTTP/1.1 to the upstream\n\n{}\n",
            throughput_table(tls, "nginx", |r| &r.tls_h2_rps, "TLS h2 req/s")
        ));
    }
    if let Some(idle) = &report.idle {
        md.push_str("## idle: HTTP/1.1 keep-alive clients, one request each, then idle\n\n| proxy | clients held / asked | RSS before MiB | RSS with clients MiB | KiB per client | ÷ nginx (with clients) | seconds to open |\n|---|---|---|---|---|---|---|\n");
        let nginx = idle.iter().find(|r| r.name == "nginx");
        for r in idle {
            md.push_str(&format!(
                "| {} | {} / {} | {:.1} | {:.1} | {:.2} | {} | {:.1} |\n",
                r.name,
                r.held,
                r.clients,
                r.rss_before_mib,
                r.rss_with_clients_mib,
                r.kib_per_client,
                nginx.map_or("-".into(), |n| ratio(
                    r.rss_with_clients_mib,
                    n.rss_with_clients_mib
                )),
                r.open_s
            ));
        }
        md.push('\n');
    }
    if let Some(p) = &report.probes {
        md.push_str(&format!(
            "## probes: {} endpoints, HTTP probe every {:.0} s, no traffic\n\n| gateway CPU in {:.0} s | share of one core | endpoints healthy after |\n|---|---|---|\n| {:.2} s | {:.2} % | {} |\n\n",
            p.endpoints,
            p.interval_s,
            p.window_s,
            p.cpu_s,
            p.percent_of_core,
            p.healthy_endpoints.map_or("?".into(), |n| n.to_string()),
        ));
    }
    md.push_str(&goals::markdown(&report.goals));
    md
}

fn ratio(value: f64, reference: f64) -> String {
    if reference > 0.0 {
        format!("{:.2}×", value / reference)
    } else {
        "-".into()
    }
}

/// Target, `column` (median, min–max), ratio to `reference`, CPU µs/request, failed.
fn throughput_table(
    results: &[TargetResult],
    reference: &str,
    column: fn(&TargetResult) -> &Rounds,
    title: &str,
) -> String {
    let reference_value = results
        .iter()
        .find(|r| r.name == reference)
        .and_then(|r| column(r).median());
    let mut md = format!("| target | {title} median (min–max) | ÷ {reference} | CPU µs/req | failed |\n|---|---|---|---|---|\n");
    for r in results {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.name,
            column(r).text(0),
            match (column(r).median(), reference_value) {
                (Some(v), Some(reference)) => ratio(v, reference),
                _ => "-".into(),
            },
            r.cpu_us_per_req
                .median()
                .map_or("-".into(), |c| format!("{c:.1}")),
            r.failed,
        ));
    }
    md
}

fn h1_table(results: &[TargetResult], report: &BenchReport) -> String {
    let mut md = format!(
        "## h1: HTTP/1.1 keep-alive ({} connections, {}) and h2c (4 connections × 64 streams)\n\nOrigin: {}. Load CPU busy: CPU 0 (generator and origin) during the HTTP/1.1 runs; near 100 % the load side may be the limit.\n\n",
        report.connections,
        match report.client {
            Client::Engine => "this crate's engine",
            Client::Wrk => "wrk, one thread",
        },
        match report.origin {
            Origin::Testbed => "the test bed's app (`loadtest region`)",
            Origin::Nginx => "one nginx worker",
        },
    );
    md.push_str("| target | HTTP/1.1 req/s median (min–max) | ÷ nginx | ÷ HAProxy | load CPU busy % | h2c req/s median (min–max) | failed | CPU µs/req | ÷ nginx | peak RSS MiB | p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let by = |name: &str, f: fn(&TargetResult) -> &Rounds| {
        results
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| f(r).median())
    };
    let against = |v: Option<f64>, reference: Option<f64>| match (v, reference) {
        (Some(v), Some(reference)) => ratio(v, reference),
        _ => "-".into(),
    };
    for r in results {
        let lat = r.fixed_rate.as_ref().map(|s| &s.latency);
        let ms =
            |f: fn(&report::Latency) -> f64| lat.map_or("-".into(), |l| format!("{:.3}", f(l)));
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.h1_rps.text(0),
            against(r.h1_rps.median(), by("nginx", |r| &r.h1_rps)),
            against(r.h1_rps.median(), by("haproxy", |r| &r.h1_rps)),
            r.load_cpu_busy_pct.text(0),
            r.h2c_rps.text(0),
            r.failed,
            r.cpu_us_per_req.text(1),
            against(
                r.cpu_us_per_req.median(),
                by("nginx", |r| &r.cpu_us_per_req)
            ),
            r.peak_rss_mib.map_or("-".into(), |m| format!("{m:.1}")),
            ms(|l| l.p50_ms),
            ms(|l| l.p99_ms),
            ms(|l| l.p999_ms),
        ));
    }
    md.push_str(&format!(
        "\nLatency columns: open loop at {} req/s (half nginx's maximum unless `--rate`) for {:?}, measured from the scheduled send time.\n\n",
        report.fixed_rate.unwrap_or(0),
        Duration::from_secs_f64(report.duration_s)
    ));
    md
}

fn chart(path: &Path, results: &[TargetResult]) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let rounds = results
        .iter()
        .map(|r| r.h1_rps.0.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let y_max = results
        .iter()
        .flat_map(|r| r.h1_rps.0.iter().chain(&r.h2c_rps.0))
        .fold(1.0f64, |a, b| a.max(*b))
        * 1.15;
    let mut c = report::panel(
        &root,
        report::Panel {
            caption: (
                "maximum throughput per round (lines HTTP/1.1, dots h2c)",
                18,
            ),
            margin: 15,
            y_label_area: 70,
            x: (0.5..(rounds as f64 + 0.5), "round"),
            y: (0.0..y_max, "req/s"),
        },
    )?;
    let palette = [BLACK, BLUE, GREEN, RED, MAGENTA, CYAN];
    for (i, r) in results.iter().enumerate() {
        let color = palette[i % palette.len()];
        let h1 = r
            .h1_rps
            .0
            .iter()
            .enumerate()
            .map(|(k, v)| ((k + 1) as f64, *v));
        report::line(&mut c, h1, color, &r.name)?;
        c.draw_series(
            r.h2c_rps
                .0
                .iter()
                .enumerate()
                .map(|(k, v)| Circle::new(((k + 1) as f64, *v), 4, color.filled())),
        )
        .map_err(|e| e.to_string())?;
    }
    report::legend(&mut c)?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2load_output_is_read() {
        let out = "starting benchmark...\nApplication protocol: h2\nfinished in 5.00s, 79534.20 req/s, 3.12MB/s\nrequests: 397671 total, 397927 started, 397671 done, 397660 succeeded, 11 failed, 0 errored, 0 timeout\nstatus codes: 397650 2xx, 0 3xx, 10 4xx, 11 5xx\n";
        assert_eq!(
            parse_h2load(out),
            Some(H2loadRun {
                rps: 79534.20,
                succeeded: 397650,
                failed: 21,
            })
        );
        assert_eq!(parse_h2load(&out.replace(": h2", ": http/1.1")), None);
        assert_eq!(parse_h2load("no output"), None);
    }

    #[test]
    fn rounds_serialize_with_their_median() {
        let json = serde_json::to_value(Rounds(vec![3.0, 1.0, 2.0])).expect("json");
        assert_eq!(json["median"], 2.0);
        assert_eq!(json["rounds"].as_array().map(Vec::len), Some(3));
        assert_eq!(Rounds(vec![]).text(0), "-");
    }

    #[test]
    fn every_group_has_a_name_on_the_command_line() {
        use clap::ValueEnum;
        let names: Vec<String> = Group::ALL
            .iter()
            .filter_map(|g| g.to_possible_value().map(|v| v.get_name().to_string()))
            .collect();
        assert_eq!(
            names,
            ["h1", "features", "routes", "workers", "tls", "idle", "probes"]
        );
    }
}
