//! `loadtest`: load generation, simulated regions, failover scenarios and benchmarks.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway_config::parse_duration;
use indicatif::{ProgressBar, ProgressStyle};
use loadtest::engine::{self, LoadSpec};
use loadtest::report;
use loadtest::scenario::{self, Fault, ScenarioSpec};
use testbed::fleet::{serve_control, Fleet};
use testbed::region::Mode;

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load tests, simulated regions, failover scenarios and benchmarks for the failover gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open-loop constant-rate load against a URL (latency measured from the scheduled time).
    Run(RunArgs),
    /// Run simulated regional app endpoints (HTTP/1.1 and h2c) with a fault-injection control API.
    Region {
        /// Region name reported in responses.
        #[arg(long)]
        name: String,
        /// Addresses to listen on, one endpoint each (`<name>-1`, `<name>-2`, ...).
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: Vec<SocketAddr>,
        /// Control API: POST /{name}/{ok|refuse|blackhole|status=503|slow=500ms|reset|flap=300ms},
        /// GET /{name} (mode and request counts).
        #[arg(long)]
        control: Option<SocketAddr>,
        /// Initial mode.
        #[arg(long, default_value = "ok")]
        mode: String,
    },
    /// Start two regions and a gateway, drive load, inject a fault, measure, report.
    Failover(FailoverArgs),
    /// Benchmark the gateway against direct, nginx and HAProxy on the same upstream, like for
    /// like (nginx and HAProxy add the gateway's forwarding and request-id headers; `-min` rows
    /// keep their minimal configs), in groups (`--only`): h1 (HTTP/1.1 and h2c maximum, CPU
    /// µs/request, p99 at half nginx's maximum; Caddy too), features (1000 routes, sticky, probes), routes
    /// (10 vs 10 000), workers (two on two cores), tls (h2 by h2load), idle (RSS with 10 000
    /// idle keep-alive clients), probes (CPU for 1000 endpoints probed every second). Writes
    /// report.md and report.json with a table per group and the goals met or not. About 8
    /// minutes with the defaults.
    Bench(loadtest::bench::BenchArgs),
    /// Healthy regions, more load than the gateway can serve: nothing may be marked down, and
    /// what is not served is shed as 503 overloaded.
    Overload(OverloadArgs),
    /// Slow-client attacks (slow headers, slow body, slow read) on the gateway, HAProxy and
    /// nginx while another client is served: each one's memory and descriptors per 1000
    /// attackers, attackers it closed, and whether the other client was served during and after
    Slowclients(SlowArgs),
    /// Write the config `loadtest bench` gives nginx or HAProxy (one worker, the gateway's
    /// header work, access log off) into a directory, for other harnesses
    /// (`scripts/callgrind.sh --proxy`); prints the file's path
    PeerConfig {
        /// Which peer.
        #[arg(long, value_enum)]
        proxy: loadtest::bench::Peer,
        /// Directory for the config and the peer's own files (pid, logs, temporary files).
        #[arg(long)]
        dir: std::path::PathBuf,
        /// HTTP/1.1 listen address.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The upstream (origin) address.
        #[arg(long)]
        upstream: std::net::SocketAddr,
    },
    /// A chaos soak: steady GETs through a gateway while regions fail and recover one at a
    /// time, the config is rewritten (valid and invalid in turn) and hostile clients attack;
    /// exits non-zero unless nothing was lost and memory and descriptors stayed flat
    Soak(SoakArgs),
}

/// Arguments of `loadtest soak`.
#[derive(clap::Args)]
struct SoakArgs {
    /// How long the traffic runs (then a few seconds of settling).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// Requests per second of the steady traffic (idempotent GETs).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// A fault starts this often (regions and fault kinds in turn).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    fault_every: Duration,
    /// How long each fault lasts (shorter than --fault-every).
    #[arg(long, default_value = "6s", value_parser = parse_duration)]
    fault_for: Duration,
    /// The config file is rewritten this often, valid and invalid in turn.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    reload_every: Duration,
    /// Probe interval (timeout 3/4 of it, fall 2, rise 2).
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    probe_interval: Duration,
    /// `server.request_head_timeout` (slow heads must be answered or closed by it).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    head_timeout: Duration,
    /// Gateway worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The gateway binary (default: next to this binary).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Write report.json, report.md, chart.svg and the gateway's log (gateway.log) into this
    /// directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the JSON result instead of the Markdown summary.
    #[arg(long)]
    json: bool,
}

/// Arguments of `loadtest slowclients`.
#[derive(clap::Args)]
struct SlowArgs {
    /// Attacking connections (opened at about 200 per second).
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// How long the attackers stay connected.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Attacks to run, each against a fresh proxy (default: all three).
    #[arg(long, value_enum, value_delimiter = ',')]
    attack: Vec<loadtest::slowclients::Attack>,
    /// Proxies to attack, one after the other, each fresh for each attack in front of the same
    /// kind of simulated region (default: the gateway, and HAProxy and nginx if installed;
    /// named ones are installed with apt-get when missing).
    #[arg(long, value_enum, value_delimiter = ',')]
    proxies: Vec<loadtest::slowclients::Proxy>,
    /// Attack with slowhttptest (`-H`, `-B`, `-X`; installed with apt-get when missing) instead of the built-in
    /// attackers.
    #[arg(long)]
    slowhttptest: bool,
    /// Also write report.json and report.md into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The gateway binary (default: next to this binary).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Print the JSON result instead of the Markdown table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `loadtest overload`.
#[derive(clap::Args)]
struct OverloadArgs {
    /// Connections of the overload phase (the unloaded phase uses 16).
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// Open-loop rate of the overload phase in requests per second, due on schedule whether or
    /// not earlier ones were answered (0: closed loop, as fast as each connection is answered).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Turn on `server.adaptive_limit` (off by default in the gateway).
    #[arg(long)]
    adaptive_limit: bool,
    /// Write report.json, report.md and chart.svg (answers, latency, admission limit over
    /// time) into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// HTTP/2 (h2c) instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// Length of each phase.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Gateway worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Pin the gateway to this CPU with taskset (omit: no pinning); the load generator and an
    /// nginx origin then run on the other one.
    #[arg(long)]
    pin_cpu: Option<usize>,
    /// The regions' endpoints: the test bed's simulated app, or nginx (installed when missing).
    #[arg(long, value_enum, default_value = "testbed")]
    origin: loadtest::overload::Origin,
    /// The overload phase's load generator: this crate's engine, or wrk (installed when
    /// missing; HTTP/1.1, closed loop).
    #[arg(long, value_enum, default_value = "engine")]
    client: loadtest::overload::Client,
    /// The gateway binary (default: next to this binary).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Print the JSON result instead of the Markdown table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `loadtest run`.
#[derive(clap::Args)]
struct RunArgs {
    /// Target, e.g. http://127.0.0.1:8080/ (loopback or lab addresses only).
    #[arg(long)]
    url: String,
    /// Requests per second (0: as fast as possible, closed loop).
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// How long to send, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// HTTP/2 with prior knowledge (h2c).
    #[arg(long)]
    http2: bool,
    /// Per-request deadline from its scheduled time.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Hard cap on requests.
    #[arg(long, default_value_t = 10_000_000)]
    max_requests: u64,
    /// Write the JSON report here (and print nothing else).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write report.json, report.md and chart.svg into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Arguments of `loadtest failover`.
#[derive(clap::Args)]
struct FailoverArgs {
    /// The fault to inject into the primary region.
    #[arg(long, value_enum, default_value = "crash")]
    scenario: Fault,
    /// Requests per second.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Runs to aggregate.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Seconds of load before the fault.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    fault_at: Duration,
    /// How long the fault lasts.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    fault_for: Duration,
    /// Load after recovery.
    #[arg(long, default_value = "6s", value_parser = parse_duration)]
    after: Duration,
    /// Failback hold-down of the route.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    hold_down: Duration,
    /// Probe interval (timeout 3/4 of it, fall 2, rise 2).
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    probe_interval: Duration,
    /// The gateway binary (default: next to this binary).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Gateway worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The route's early retry (`retry.early`) with its default settings: on unless
    /// `--no-early-retry` (`--early-retry` says it explicitly).
    #[arg(long, conflicts_with = "no_early_retry")]
    early_retry: bool,
    /// Turn the route's early retry off (`retry.early.enabled: false`), for a baseline.
    #[arg(long)]
    no_early_retry: bool,
    /// Report directory (default reports/failover-<scenario>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print only the JSON report path.
    #[arg(long)]
    json: bool,
}

fn progress_bar(total: u64, quiet: bool) -> (Option<engine::Progress>, Option<ProgressBar>) {
    if quiet {
        return (None, None);
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} requests")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    (Some(Arc::new(move |n| b.set_position(n))), Some(bar))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::PeerConfig {
            proxy,
            dir,
            listen,
            upstream,
        } => {
            let path = loadtest::bench::write_peer_config(proxy, &dir, listen, upstream)?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Region {
            name,
            listen,
            control,
            mode,
        } => {
            let mode: Mode = mode.parse().map_err(anyhow::Error::msg)?;
            let mut fleet = Fleet::default();
            fleet
                .bind(&name, &listen)
                .await
                .with_context(|| format!("cannot listen on {listen:?}"))?;
            fleet.set_mode(&name, mode)?;
            for server in fleet.region(&name)? {
                println!(
                    "region {name} endpoint {} on http://{}",
                    server.identity().endpoint,
                    server.addr()
                );
            }
            if let Some(control) = control {
                let listener = tokio::net::TcpListener::bind(control)
                    .await
                    .with_context(|| format!("cannot listen on {control}"))?;
                println!(
                    "control on http://{control}/{name} (POST /{name}/refuse, /{name}/ok, ...)"
                );
                tokio::spawn(serve_control(listener, Arc::new(fleet)));
            }
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
        Command::Failover(args) => failover(args).await,
        Command::Bench(args) => loadtest::bench::run(args).await,
        Command::Overload(args) => overload(args).await,
        Command::Slowclients(args) => slowclients(args).await,
        Command::Soak(args) => soak(args).await,
    }
}

/// The gateway binary given on the command line, or the one next to this binary.
fn gateway_or_default(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match given {
        Some(bin) => bin,
        None => testbed::launcher::gateway_bin()?,
    })
}

/// `loadtest soak`: one soak, reported as Markdown (or JSON); an error when the verdict fails.
async fn soak(args: SoakArgs) -> anyhow::Result<()> {
    let spec = loadtest::soak::SoakSpec {
        gateway: gateway_or_default(args.gateway)?,
        duration: args.duration,
        rate: args.rate,
        threads: args.threads,
        fault_every: args.fault_every,
        fault_for: args.fault_for,
        reload_every: args.reload_every,
        probe_interval: args.probe_interval,
        head_timeout: args.head_timeout,
    };
    spec.validate()?;
    if !args.json {
        eprintln!(
            "soak: {:?} at {} req/s against {} (faults, reloads and hostile clients)",
            spec.duration,
            spec.rate,
            spec.gateway.display()
        );
    }
    let result = loadtest::soak::run(&spec).await?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(&result)?,
        )?;
        std::fs::write(dir.join("report.md"), loadtest::soak::markdown(&result))?;
        std::fs::write(dir.join("gateway.log"), &result.log)?;
        let title = format!(
            "soak: {:.0} s at {} req/s, faults, reloads and hostile clients",
            result.duration_s, result.rate
        );
        loadtest::soak::chart(&dir.join("chart.svg"), &title, &result)
            .map_err(anyhow::Error::msg)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", loadtest::soak::markdown(&result));
        if let Some(dir) = &args.out {
            println!("\nreports in {}", dir.display());
        }
    }
    let failed: Vec<String> = result
        .checks
        .iter()
        .filter(|c| !c.pass)
        .map(|c| format!("{}: {} (must be {})", c.name, c.figure, c.limit))
        .collect();
    anyhow::ensure!(failed.is_empty(), "soak FAILED:\n  {}", failed.join("\n  "));
    Ok(())
}

/// `loadtest overload`: one run, reported as Markdown (or JSON).
async fn overload(args: OverloadArgs) -> anyhow::Result<()> {
    let spec = loadtest::overload::OverloadSpec {
        gateway: gateway_or_default(args.gateway)?,
        threads: args.threads,
        pin_cpu: args.pin_cpu,
        connections: args.connections,
        rate: args.rate,
        adaptive_limit: args.adaptive_limit,
        http2: args.http2,
        duration: args.duration,
        origin: args.origin,
        client: args.client,
    };
    let result = loadtest::overload::run(&spec).await?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(&result)?,
        )?;
        std::fs::write(dir.join("report.md"), loadtest::overload::markdown(&result))?;
        let load = match args.rate {
            0 => "closed loop".to_string(),
            rate => format!("open loop at {rate} req/s"),
        };
        let title = format!(
            "overload: {}, {} connections, {load}",
            if args.http2 { "h2c" } else { "HTTP/1.1" },
            args.connections,
        );
        loadtest::overload::chart(&dir.join("chart.svg"), &title, &result)
            .map_err(anyhow::Error::msg)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", loadtest::overload::markdown(&result));
    }
    Ok(())
}

/// `loadtest slowclients`: each attack against each proxy, every time a fresh one, reported as
/// Markdown (or JSON).
async fn slowclients(args: SlowArgs) -> anyhow::Result<()> {
    use loadtest::slowclients::{Attack, Attacker, Proxy, SlowSpec};
    let proxies = if args.proxies.is_empty() {
        let all = [Proxy::Gateway, Proxy::Haproxy, Proxy::Nginx];
        for p in all.iter().filter(|p| !p.installed()) {
            eprintln!("slowclients: {} is not installed, left out", p.label());
        }
        all.into_iter().filter(|p| p.installed()).collect()
    } else {
        // Named peers are installed when missing, as `loadtest bench` installs its own.
        Proxy::ensure_installed(&args.proxies)?;
        args.proxies
    };
    let spec = SlowSpec {
        gateway: gateway_or_default(args.gateway)?,
        connections: args.connections,
        duration: args.duration,
        attacks: if args.attack.is_empty() {
            vec![Attack::Headers, Attack::Body, Attack::Read]
        } else {
            args.attack
        },
        proxies,
        attacker: if args.slowhttptest {
            Attacker::Slowhttptest
        } else {
            Attacker::Builtin
        },
    };
    if args.slowhttptest {
        loadtest::slowclients::ensure_slowhttptest()?;
    }
    let report = loadtest::slowclients::run(&spec).await?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
        std::fs::write(
            dir.join("report.md"),
            loadtest::slowclients::markdown(&report),
        )?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", loadtest::slowclients::markdown(&report));
    }
    Ok(())
}

/// `loadtest run`: one load against a URL, reported as Markdown, JSON and a chart.
async fn run(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs { url, json, out, .. } = args;
    let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "only http:// URLs are supported"
    );
    let host = uri.host().context("URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let addr = (host.as_str(), port)
        .to_socket_addrs()?
        .next()
        .context("host did not resolve")?;
    let spec = LoadSpec {
        addr,
        host: uri.authority().map(|a| a.to_string()).unwrap_or(host),
        path: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into()),
        rate: args.rate,
        duration: args.duration,
        connections: args.connections,
        http2: args.http2,
        timeout: args.timeout,
        max_requests: args.max_requests,
    };
    let (rate, duration, connections, http2) =
        (spec.rate, spec.duration, spec.connections, spec.http2);
    let expected = if rate == 0 {
        0
    } else {
        (duration.as_secs_f64() * f64::from(rate)) as u64
    };
    let (progress, bar) = progress_bar(
        expected,
        json.is_some() || duration < Duration::from_secs(3),
    );
    let started = std::time::Instant::now();
    let records = engine::run(&spec, progress).await;
    let elapsed = started.elapsed();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let summary = report::summarize(&records, elapsed);
    let doc = serde_json::json!({
        "url": url, "rate": rate, "duration_s": duration.as_secs_f64(), "connections": connections, "http2": http2,
        "summary": summary, "timeline": report::timeline(&records, Duration::from_millis(100)),
    });
    if let Some(path) = &json {
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    } else {
        print!("{}", report::summary_markdown(&summary));
    }
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&doc)?)?;
        std::fs::write(dir.join("report.md"), format!("# loadtest run\n\n`{url}` at {rate} req/s for {duration:?} over {connections} connections\n\n{}", report::summary_markdown(&summary)))?;
        report::chart(
            &dir.join("chart.svg"),
            &format!("{url} at {rate} req/s"),
            &report::timeline(&records, Duration::from_millis(100)),
            &[],
        )
        .map_err(anyhow::Error::msg)?;
        if json.is_none() {
            println!("reports in {}", dir.display());
        }
    }
    Ok(())
}

/// `loadtest failover`: runs the scenario `repeat` times and writes the charts and reports.
async fn failover(args: FailoverArgs) -> anyhow::Result<()> {
    let (rate, repeat, json) = (args.rate, args.repeat, args.json);
    let spec = ScenarioSpec {
        fault: args.scenario,
        rate,
        fault_at: args.fault_at,
        fault_for: args.fault_for,
        after: args.after,
        hold_down: args.hold_down,
        probe_interval: args.probe_interval,
        gateway: gateway_or_default(args.gateway)?,
        threads: args.threads,
        early_retry: args.early_retry || !args.no_early_retry,
    };
    let name = serde_json::to_value(spec.fault)?
        .as_str()
        .unwrap_or("scenario")
        .to_string();
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("reports/failover-{name}")));
    std::fs::create_dir_all(&out)?;
    let mut runs = Vec::new();
    for i in 1..=repeat.max(1) {
        let total = spec.fault_at + spec.fault_for + spec.after;
        let (progress, bar) = progress_bar((total.as_secs_f64() * f64::from(rate)) as u64, json);
        if !json {
            println!("run {i}/{repeat}: {name} at {rate} req/s");
        }
        let result = scenario::run_once(&spec, progress).await?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        report::chart(
            &out.join(format!("chart-{i}.svg")),
            &format!("failover: {name} at {rate} req/s (run {i})"),
            &result.timeline,
            &result.markers,
        )
        .map_err(anyhow::Error::msg)?;
        if !json {
            print!("{}", run_line(&result));
        }
        runs.push(result);
    }
    let aggregate = serde_json::json!({
        "failed": scenario::spread(runs.iter().map(|r| Some(r.summary.failed as f64))),
        "detect_ms": scenario::spread(runs.iter().map(|r| r.detect_ms)),
        "last_primary_ms": scenario::spread(runs.iter().map(|r| r.last_primary_ms)),
        "first_secondary_ms": scenario::spread(runs.iter().map(|r| r.first_secondary_ms)),
        "settled_ms": scenario::spread(runs.iter().map(|r| r.settled_ms)),
        "failback_ms": scenario::spread(runs.iter().map(|r| r.failback_ms)),
        "window_p99_ms": scenario::spread(runs.iter().map(|r| Some(r.window.latency.p99_ms))),
        "window_max_ms": scenario::spread(runs.iter().map(|r| Some(r.window.latency.max_ms))),
        "early_sent": scenario::spread(runs.iter().map(|r| Some(r.early_sent as f64))),
        "early_share_pct": scenario::spread(runs.iter().map(|r| Some(early_share(r)))),
    });
    let doc = serde_json::json!({
        "scenario": name, "rate": rate, "repeat": repeat, "fault_at_s": spec.fault_at.as_secs_f64(),
        "fault_for_s": spec.fault_for.as_secs_f64(), "hold_down_s": spec.hold_down.as_secs_f64(),
        "probe_interval_ms": spec.probe_interval.as_millis() as u64, "threads": spec.threads,
        "early_retry": spec.early_retry,
        "machine": report::machine(), "aggregate": aggregate, "runs": runs,
    });
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&doc)?)?;
    std::fs::write(
        out.join("report.md"),
        failover_markdown(&name, rate, &runs, &aggregate),
    )?;
    if json {
        println!("{}", out.join("report.json").display());
    } else {
        println!(
            "reports: {0}/report.json, {0}/report.md, {0}/chart-1.svg",
            out.display()
        );
    }
    Ok(())
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

/// Early retries sent as a share of the run's requests, in percent.
fn early_share(r: &scenario::RunResult) -> f64 {
    100.0 * r.early_sent as f64 / r.summary.requests.max(1) as f64
}

fn run_line(r: &scenario::RunResult) -> String {
    format!(
        "  requests {} failed {} | detect {} ms | last primary {} ms | settled {} ms | window p99 {:.1} ms max {:.1} ms | failback {} ms | early retries {} ({:.2} %, {} refused, {} hedges won)\n",
        r.summary.requests,
        r.summary.failed,
        fmt_ms(r.detect_ms),
        fmt_ms(r.last_primary_ms),
        fmt_ms(r.settled_ms),
        r.window.latency.p99_ms,
        r.window.latency.max_ms,
        fmt_ms(r.failback_ms),
        r.early_sent,
        early_share(r),
        r.early_refused,
        r.early_won,
    )
}

fn failover_markdown(
    name: &str,
    rate: u32,
    runs: &[scenario::RunResult],
    aggregate: &serde_json::Value,
) -> String {
    let mut md = format!(
        "# failover scenario: {name} at {rate} req/s\n\nMachine: {}\n\n",
        report::machine()
    );
    md.push_str("| run | requests | failed | errors | detect ms | last primary ms | first secondary ms | settled ms | window p50 ms | window p99 ms | window max ms | failback ms | early retries | early share % | refused | hedges won |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (i, r) in runs.iter().enumerate() {
        let errors: Vec<String> = r
            .summary
            .errors
            .iter()
            .map(|(k, v)| format!("{k:?}: {v}"))
            .chain(
                r.summary
                    .statuses
                    .iter()
                    .filter(|(s, _)| **s >= 500)
                    .map(|(s, v)| format!("{s}: {v}")),
            )
            .collect();
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {:.2} | {} | {} |\n",
            i + 1,
            r.summary.requests,
            r.summary.failed,
            if errors.is_empty() {
                "-".into()
            } else {
                errors.join(", ")
            },
            fmt_ms(r.detect_ms),
            fmt_ms(r.last_primary_ms),
            fmt_ms(r.first_secondary_ms),
            fmt_ms(r.settled_ms),
            r.window.latency.p50_ms,
            r.window.latency.p99_ms,
            r.window.latency.max_ms,
            fmt_ms(r.failback_ms),
            r.early_sent,
            early_share(r),
            r.early_refused,
            r.early_won,
        ));
    }
    md.push_str(&format!("\nAggregate (median, min, max): ```{}```\n\nCharts: chart-1.svg ... (throughput by region, failures, latency; fault, detection, recovery and failback marked).\n", aggregate));
    md
}
