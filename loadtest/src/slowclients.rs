//! `loadtest slowclients`: slow-client attacks (as slowhttptest's `-H`, `-B` and `-X`) against
//! the gateway, HAProxy and nginx, each in front of the same healthy simulated region, while
//! another client sends a GET every 100 ms. Reports each proxy's memory and descriptors per 1000
//! attacking connections, how many attackers it had closed by the end, and whether the other
//! client was served during the attack and after the attackers left.
//!
//! Every (attack, proxy) pair gets a fresh simulated region (`fra`, two endpoints, in this
//! process) and a fresh proxy process with one worker, run one after the other, never side by
//! side. The attackers are built in (below), or `slowhttptest` with `--slowhttptest`.
//!
//! Memory is the sum of `VmRSS` over the proxy's process tree (the gateway: one process; nginx:
//! master and worker; HAProxy with `-db`: one process), read once the proxy answers through to
//! the region (every proxy: one proxied GET answered 200; the gateway after `/readyz`, its
//! health probes), then every 250 ms while the attackers are there (the peak), and once `duration - 1 s`
//! after the last attacker was opened: the one figure of the first version of this command,
//! kept as it was so that its results stay comparable. By then every attacker opened more than
//! 1 s before the last has left (they are opened over 5 s and stay `duration` each), so that
//! late sample shows what the proxy kept, not what it held: the descriptors tell. The kernel's
//! TCP buffer memory (`/proc/net/sockstat`, the whole machine: both ends of every loopback
//! connection) is sampled with the peak, for the slow read, whose 1 MiB answers end up there.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use testbed::fleet::Fleet;
use testbed::launcher::{free_port, GatewayProcess};
use testbed::yaml::{GatewayYaml, Probe, Route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::{raise_fd_limit, tree, wait_port, which, Guard};
use crate::scenario::start_gateway;

/// One kind of slow client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Attack {
    /// The request head, one byte per second.
    Headers,
    /// A large `Content-Length`, the body one byte per second.
    Body,
    /// A 1 MiB answer read through a 4 KiB receive window, never drained.
    Read,
}

/// A proxy under attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Proxy {
    /// The gateway binary.
    Gateway,
    /// The installed `haproxy`.
    Haproxy,
    /// The installed `nginx`.
    Nginx,
}

impl Proxy {
    /// How the reports name it.
    pub fn label(self) -> &'static str {
        match self {
            Proxy::Gateway => "gateway",
            Proxy::Haproxy => "HAProxy",
            Proxy::Nginx => "nginx",
        }
    }

    /// Whether it can be started here (the gateway always can: its binary is checked later).
    pub fn installed(self) -> bool {
        self.package().is_none_or(|pkg| which(pkg).is_some())
    }

    /// Its Debian package (and binary), for a peer.
    fn package(self) -> Option<&'static str> {
        match self {
            Proxy::Gateway => None,
            Proxy::Haproxy => Some("haproxy"),
            Proxy::Nginx => Some("nginx"),
        }
    }

    /// Installs the Debian packages of the peers among `proxies` that are missing (as
    /// `loadtest bench` does); the packages' own services are not used.
    pub fn ensure_installed(proxies: &[Proxy]) -> anyhow::Result<()> {
        let tools: Vec<(&str, &str)> = proxies
            .iter()
            .filter_map(|p| p.package())
            .map(|pkg| (pkg, pkg))
            .collect();
        crate::process::ensure_installed(&tools)
    }
}

/// Installs `slowhttptest` (a Debian package) when it is missing, as nginx and HAProxy are.
pub fn ensure_slowhttptest() -> anyhow::Result<()> {
    crate::process::ensure_installed(&[("slowhttptest", "slowhttptest")])
}

/// Who attacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attacker {
    /// The attackers of this module.
    Builtin,
    /// `slowhttptest` (`-H`, `-B`, `-X`), installed separately.
    Slowhttptest,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct SlowSpec {
    /// The gateway binary.
    pub gateway: std::path::PathBuf,
    /// Attacking connections.
    pub connections: usize,
    /// How long the attackers stay.
    pub duration: Duration,
    /// The attacks, one after the other.
    pub attacks: Vec<Attack>,
    /// The proxies, each fresh for each attack, in this order.
    pub proxies: Vec<Proxy>,
    /// Who attacks.
    pub attacker: Attacker,
}

/// What one attack on one proxy measured.
#[derive(Debug, Clone, Serialize)]
pub struct AttackResult {
    /// The attack.
    pub attack: Attack,
    /// The proxy attacked.
    pub proxy: Proxy,
    /// Who attacked.
    pub attacker: Attacker,
    /// Attacking connections opened.
    pub connections: usize,
    /// Attacking connections that connected (slowhttptest: the most that were connected or
    /// closed at one of its once-a-second samples).
    pub connected: usize,
    /// Processes whose RSS and descriptors were summed.
    pub processes: usize,
    /// The proxy's RSS before the attack (MiB).
    pub rss_before_mib: f64,
    /// RSS growth at the late sample (`duration - 1 s` after the last attacker was opened, when
    /// most have left; the first version's only figure), per 1000 attackers (MiB); 0 if it
    /// shrank.
    pub rss_growth_mib_per_1000: f64,
    /// Highest RSS while the attackers were there minus before, per 1000 of them (MiB).
    pub rss_peak_growth_mib_per_1000: f64,
    /// Open descriptors at the late sample minus before the attack.
    pub fds_growth: i64,
    /// Most open descriptors while the attackers were there minus before the attack.
    pub fds_peak_growth: i64,
    /// The kernel's TCP buffer memory before the attack (MiB, the whole machine).
    pub kernel_tcp_before_mib: f64,
    /// The kernel's TCP buffer memory at its highest while the attackers were there minus
    /// before, per 1000 attackers (MiB; the whole machine, both ends of the connections).
    pub kernel_tcp_peak_growth_mib_per_1000: f64,
    /// Attacking connections the proxy had closed by the end of the attack.
    pub closed_by_proxy: usize,
    /// The other client's requests during the attack, and how many were not 200.
    pub probe_during: (u64, u64),
    /// The same in the 5 s after the attackers left.
    pub probe_after: (u64, u64),
    /// Log lines during the attack: the gateway's `ERROR` lines, nginx's `error_log` (level
    /// `error` and worse), HAProxy's stderr (alerts and warnings; it has no traffic log here).
    pub error_lines: usize,
    /// How slowhttptest said it ended (slowhttptest only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowhttptest_exit: Option<String>,
}

/// All results of one run.
#[derive(Debug, Clone, Serialize)]
pub struct SlowReport {
    /// Attacking connections per attack.
    pub connections: usize,
    /// How long each attacker stayed.
    pub duration_s: f64,
    /// Who attacked.
    pub attacker: Attacker,
    /// `/proc/loadavg` when the run started.
    pub loadavg_start: String,
    /// `/proc/loadavg` when it ended.
    pub loadavg_end: String,
    /// One per (attack, proxy), attack by attack.
    pub results: Vec<AttackResult>,
}

/// Runs each attack against each proxy, every time a fresh one.
pub async fn run(spec: &SlowSpec) -> anyhow::Result<SlowReport> {
    raise_fd_limit(0);
    let loadavg_start = loadavg();
    let mut results = Vec::new();
    for attack in &spec.attacks {
        for proxy in &spec.proxies {
            eprintln!(
                "slowclients: {attack:?} against {} ({} connections, {:?})",
                proxy.label(),
                spec.connections,
                spec.duration
            );
            let r = one(spec, *attack, *proxy)
                .await
                .with_context(|| format!("{attack:?} against {}", proxy.label()))?;
            eprintln!(
                "slowclients:   RSS +{:.1} MiB per 1000 (peak +{:.1}), closed {}",
                r.rss_growth_mib_per_1000, r.rss_peak_growth_mib_per_1000, r.closed_by_proxy
            );
            results.push(r);
        }
    }
    Ok(SlowReport {
        connections: spec.connections,
        duration_s: spec.duration.as_secs_f64(),
        attacker: spec.attacker,
        loadavg_start,
        loadavg_end: loadavg(),
        results,
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn one(spec: &SlowSpec, attack: Attack, proxy: Proxy) -> anyhow::Result<AttackResult> {
    settle_kernel_tcp().await;
    let fleet = Fleet::start(&[("fra", 2)]).await?;
    let target = start(spec, proxy, &fleet).await?;
    let pid = target.pid;
    let before = usage(pid);
    let errors_before = target.error_lines();

    let stop = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn(probe_loop(target.addr, stop.clone()));
    let sampler = tokio::spawn(peak_loop(pid, stop.clone()));
    let phase = match spec.attacker {
        Attacker::Builtin => builtin_attack(spec, attack, target.addr, pid).await,
        Attacker::Slowhttptest => slowhttptest_attack(spec, attack, target.addr, pid).await?,
    };
    stop.store(true, Ordering::Relaxed);
    let during = prober.await.unwrap_or((0, 0));
    let peak = sampler.await.unwrap_or_default();
    let errors = target.error_lines().saturating_sub(errors_before);

    // After the attackers left: the other client must still be served.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn(probe_loop(target.addr, stop.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let after = prober.await.unwrap_or((0, 0));

    let per_1000 = |kib: u64| kib as f64 / 1024.0 * 1000.0 / spec.connections.max(1) as f64;
    let end = phase.end;
    Ok(AttackResult {
        attack,
        proxy,
        attacker: spec.attacker,
        connections: spec.connections,
        connected: phase.connected,
        processes: before.processes,
        rss_before_mib: before.rss_kib as f64 / 1024.0,
        rss_growth_mib_per_1000: per_1000(end.rss_kib.saturating_sub(before.rss_kib)),
        rss_peak_growth_mib_per_1000: per_1000(
            peak.rss_kib.max(end.rss_kib).saturating_sub(before.rss_kib),
        ),
        fds_growth: end.fds as i64 - before.fds as i64,
        fds_peak_growth: peak.fds.max(end.fds) as i64 - before.fds as i64,
        kernel_tcp_before_mib: before.tcp_kib as f64 / 1024.0,
        kernel_tcp_peak_growth_mib_per_1000: per_1000(
            peak.tcp_kib.max(end.tcp_kib).saturating_sub(before.tcp_kib),
        ),
        closed_by_proxy: phase.closed,
        probe_during: during,
        probe_after: after,
        error_lines: errors,
        slowhttptest_exit: phase.exit,
    })
}

/// What the attack phase saw.
struct Phase {
    /// The proxy's usage at the late sample.
    end: Usage,
    connected: usize,
    closed: usize,
    exit: Option<String>,
}

/// The built-in attackers, opened at about 200 per second as slowhttptest does by default; each
/// stays `spec.duration`.
async fn builtin_attack(spec: &SlowSpec, attack: Attack, addr: SocketAddr, pid: u32) -> Phase {
    let mut attackers = Vec::new();
    for _ in 0..spec.connections {
        attackers.push(tokio::spawn(attacker(addr, attack, spec.duration)));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(spec.duration.saturating_sub(Duration::from_secs(1))).await;
    let end = usage(pid);
    let (mut connected, mut closed) = (0, 0);
    for a in attackers {
        match a.await.unwrap_or(Outcome::NotConnected) {
            Outcome::NotConnected => {}
            Outcome::Closed => {
                connected += 1;
                closed += 1;
            }
            Outcome::Held => connected += 1,
        }
    }
    Phase {
        end,
        connected,
        closed,
        exit: None,
    }
}

/// How one attacker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// It never connected.
    NotConnected,
    /// The proxy closed it first.
    Closed,
    /// Still open when it left.
    Held,
}

/// One slow client for `duration`.
async fn attacker(addr: SocketAddr, attack: Attack, duration: Duration) -> Outcome {
    let end = Instant::now() + duration;
    let socket = match tokio::net::TcpSocket::new_v4() {
        Ok(s) => s,
        Err(_) => return Outcome::NotConnected,
    };
    if attack == Attack::Read {
        let _ = socket.set_recv_buffer_size(4096);
    }
    let Ok(Ok(mut tcp)) = tokio::time::timeout(Duration::from_secs(5), socket.connect(addr)).await
    else {
        return Outcome::NotConnected;
    };
    let (head, trickle): (&[u8], bool) = match attack {
        Attack::Headers => (b"GET / HTTP/1.1\r\nHost: a\r\n", true),
        Attack::Body => (
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n",
            true,
        ),
        Attack::Read => (b"GET /stream/1048576 HTTP/1.1\r\nHost: a\r\n\r\n", false),
    };
    if tcp.write_all(head).await.is_err() {
        return Outcome::Closed;
    }
    let mut buf = [0u8; 1024];
    if attack == Attack::Read {
        // The first bytes only, then never read again.
        let left = end.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(left, tcp.read(&mut buf)).await;
    }
    while Instant::now() < end {
        if trickle && tcp.write_all(b"x").await.is_err() {
            return Outcome::Closed;
        }
        if attack == Attack::Read {
            // Notice a close without draining: a zero-length peek would not tell, so wait.
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Outcome::Closed,
            // An answer (408, 413, ...) ends it too: the proxy closes after it.
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
    }
    Outcome::Held
}

/// `slowhttptest` with the same connections, rate (200 per second) and length as the built-in
/// attackers: `-H` and `-B` send more every second (`-i 1`, slowhttptest's own follow-up
/// sizes), `-B` announces 100000 bytes (`-s`), `-X` reads 1 MiB slowly with slowhttptest's
/// default windows (`-w 1 -y 512`, 5 bytes a second).
async fn slowhttptest_attack(
    spec: &SlowSpec,
    attack: Attack,
    addr: SocketAddr,
    pid: u32,
) -> anyhow::Result<Phase> {
    let bin = which("slowhttptest").context("slowhttptest is not installed")?;
    let dir = tempfile::tempdir()?;
    let opening = Duration::from_millis(5 * spec.connections as u64);
    let length = (opening + spec.duration).as_secs_f64().ceil() as u64;
    let (mode, path, extra): (&str, &str, &[&str]) = match attack {
        Attack::Headers => ("-H", "/", &["-i", "1"]),
        Attack::Body => ("-B", "/upload", &["-i", "1", "-s", "100000"]),
        Attack::Read => ("-X", "/stream/1048576", &["-k", "1"]),
    };
    let prefix = dir.path().join("out");
    let child = Command::new(bin)
        .arg(mode)
        .args(extra)
        .args(["-c", &spec.connections.to_string(), "-r", "200"])
        .args(["-l", &length.to_string(), "-p", "3", "-g", "-o"])
        .arg(&prefix)
        .args(["-u", &format!("http://{addr}{path}")])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("stdout"))?)
        .stderr(Stdio::null())
        .spawn()?;
    let mut guard = Guard::Child { child, _dir: None };
    tokio::time::sleep((opening + spec.duration).saturating_sub(Duration::from_secs(1))).await;
    let end = usage(pid);
    // It stops by itself at `-l`; give it 20 s more, then the guard stops it.
    let deadline = Instant::now() + Duration::from_secs(20);
    if let Guard::Child { child, .. } = &mut guard {
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(guard);
    let stdout =
        testbed::launcher::strip_ansi(&std::fs::read_to_string(dir.path().join("stdout"))?);
    let csv = std::fs::read_to_string(prefix.with_extension("csv")).unwrap_or_default();
    let (connected, closed, exit) = parse_slowhttptest(&stdout, &csv);
    Ok(Phase {
        end,
        connected,
        closed,
        exit,
    })
}

/// From slowhttptest's output and CSV (`Seconds,Closed,Pending,Connected,Service Available`):
/// (connections that connected, connections the server closed, exit status). The CSV is
/// written once a second and misses the last second, so "No open connections left" counts
/// every connected one as closed.
fn parse_slowhttptest(stdout: &str, csv: &str) -> (usize, usize, Option<String>) {
    let rows: Vec<Vec<usize>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .filter(|r: &Vec<usize>| r.len() >= 4)
        .collect();
    let connected = rows.iter().map(|r| r[1] + r[3]).max().unwrap_or(0);
    let csv_closed = rows.last().map_or(0, |r| r[1]);
    let out_closed = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("closed:"))
        .filter_map(|v| v.trim().parse::<usize>().ok())
        .next_back()
        .unwrap_or(0);
    let exit = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Exit status:"))
        .map(|s| s.trim().to_string());
    let mut closed = csv_closed.max(out_closed);
    if exit
        .as_deref()
        .is_some_and(|e| e.contains("No open connections left"))
    {
        closed = closed.max(connected);
    }
    (connected, closed, exit)
}

/// GETs every 100 ms until `stop`: (requests, not 200). Each gets 5 s.
async fn probe_loop(addr: SocketAddr, stop: Arc<AtomicBool>) -> (u64, u64) {
    let (mut sent, mut bad) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        sent += 1;
        match get(addr).await {
            Some(200) => {}
            _ => bad += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (sent, bad)
}

async fn get(addr: SocketAddr) -> Option<u16> {
    let request = testbed::launcher::http_request(addr, "GET", "/probe", "a", None);
    match tokio::time::timeout(Duration::from_secs(5), request).await {
        Ok(Ok((status, _))) => Some(status),
        _ => None,
    }
}

/// The highest RSS and descriptors every 250 ms until `stop`.
async fn peak_loop(pid: u32, stop: Arc<AtomicBool>) -> Usage {
    let mut peak = Usage::default();
    while !stop.load(Ordering::Relaxed) {
        let u = usage(pid);
        peak.rss_kib = peak.rss_kib.max(u.rss_kib);
        peak.fds = peak.fds.max(u.fds);
        peak.processes = peak.processes.max(u.processes);
        peak.tcp_kib = peak.tcp_kib.max(u.tcp_kib);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    peak
}

/// Summed over a process tree.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    rss_kib: u64,
    fds: usize,
    processes: usize,
    /// The kernel's TCP buffers, the whole machine.
    tcp_kib: u64,
}

fn usage(pid: u32) -> Usage {
    let pids = tree(pid);
    Usage {
        rss_kib: pids.iter().map(|p| testbed::launcher::rss_kib(*p)).sum(),
        fds: pids.iter().map(|p| testbed::launcher::open_fds(*p)).sum(),
        processes: pids.len(),
        tcp_kib: tcp_kib(),
    }
}

/// Waits (at most 30 s) until the kernel's TCP buffers are below 64 MiB: 1000 slow readers
/// hold about 1.4 GiB there, near Linux's default pressure threshold (`net.ipv4.tcp_mem`) on a
/// machine of this size, above which it stops growing socket buffers and the proxy has to hold
/// the answer itself. What the previous attack left (sockets still closing) must not count
/// against the next proxy.
async fn settle_kernel_tcp() {
    let start = Instant::now();
    while tcp_kib() > 64 * 1024 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `mem` of the `TCP:` line of `/proc/net/sockstat`, in pages (4 KiB on x86-64).
fn tcp_kib() -> u64 {
    std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("TCP:"))?.to_string();
            let mut words = line.split_whitespace();
            words.find(|w| *w == "mem")?;
            words.next()?.parse::<u64>().ok()
        })
        .map_or(0, |pages| pages * 4)
}

/// A running proxy.
struct Target {
    addr: SocketAddr,
    /// The process whose tree is measured.
    pid: u32,
    handle: Handle,
}

/// Keeps the proxy running until dropped (then stops it).
enum Handle {
    Gateway(GatewayProcess),
    Child {
        /// Stops the process (SIGTERM, then SIGKILL) and removes its directory.
        _guard: Guard,
        /// Its error log.
        log: PathBuf,
    },
}

impl Target {
    fn error_lines(&self) -> usize {
        match &self.handle {
            Handle::Gateway(gw) => gw
                .stderr_plain()
                .lines()
                .filter(|l| l.contains(" ERROR "))
                .count(),
            Handle::Child { log, .. } => std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count(),
        }
    }
}

/// Starts `proxy` in front of the region `fra` of `fleet`, with one worker.
async fn start(spec: &SlowSpec, proxy: Proxy, fleet: &Fleet) -> anyhow::Result<Target> {
    let origins: Vec<SocketAddr> = fleet.region("fra")?.iter().map(|s| s.addr()).collect();
    match proxy {
        Proxy::Gateway => {
            // The gateway's defaults: `server.request_head_timeout` 10 s, the route's total
            // deadline (`timeouts.request`) 30 s, between two upstream reads 30 s, 1 MiB
            // bodies; its health probes every second.
            let probe = Probe::http(
                "/healthz",
                Duration::from_secs(1),
                Duration::from_millis(500),
            );
            let gw = start_gateway(&spec.gateway, 1, |ports| {
                GatewayYaml::new(ports)
                    .fleet(fleet, &probe)
                    .route(Route::new("app", &["fra"]).reject_when_all_down())
            })
            .await?;
            let pid = gw.pid().context("no gateway pid")?;
            // Ready as HAProxy and nginx are (`spawn_proxy`): one GET answered through to the
            // region, so that what its first proxied request makes once (allocator pages for
            // the request's sizes, the upstream pool) is in "before" for every proxy alike.
            let start = Instant::now();
            while get(gw.addr).await != Some(200) {
                anyhow::ensure!(
                    start.elapsed() < Duration::from_secs(20),
                    "the gateway does not answer 200 through to the region"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Target {
                addr: gw.addr,
                pid,
                handle: Handle::Gateway(gw),
            })
        }
        Proxy::Haproxy => start_haproxy(&origins).await,
        Proxy::Nginx => start_nginx(&origins).await,
    }
}

/// HAProxy, one thread (`nbthread 1`), as close to the gateway's limits as it has them:
///
/// - `timeout http-request 10s`: the whole request head (the gateway's
///   `server.request_head_timeout`); answered with 408.
/// - `timeout client 30s`, `timeout server 30s`: inactivity on either side (HAProxy has no total
///   deadline like the gateway route's 30 s `timeouts.request`; a byte a second keeps it open).
/// - `timeout connect 250ms`: the route's `timeouts.connect`.
/// - `maxconn 4096` (global and per frontend), far above the 1000 attackers; HAProxy sets its
///   own descriptor limit from it (it needs about two per connection).
/// - Request and response bodies streamed (HAProxy's default, as the gateway), keep-alive to the
///   origin (`http-reuse safe`, the default), no health checks, round robin over the two
///   endpoints.
///
/// Run in the foreground (`-db`), one process; stderr (alerts and warnings) into a file.
async fn start_haproxy(origins: &[SocketAddr]) -> anyhow::Result<Target> {
    let servers: String = origins
        .iter()
        .enumerate()
        .map(|(i, a)| format!("  server s{i} {a}\n"))
        .collect();
    let listen = free_port()?;
    let conf = format!(
        "global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  maxconn 4096\n  timeout connect 250ms\n  timeout http-request 10s\n  timeout client 30s\n  timeout server 30s\nfrontend f\n  bind {listen}\n  default_backend b\nbackend b\n  balance roundrobin\n{servers}"
    );
    let dir = tempfile::tempdir()?;
    spawn_proxy(
        dir,
        "haproxy",
        listen,
        ("haproxy.cfg", &conf),
        "stderr",
        |_, cfg| vec!["-db".into(), "-f".into(), cfg.into()],
    )
    .await
}

/// nginx, one worker (`worker_processes 1`; the master is measured too), its limits set to be
/// like the gateway's:
///
/// - `client_header_timeout 10s`: the whole request head (nginx does not restart it per read),
///   as the gateway's `server.request_head_timeout`; the connection is closed.
/// - `client_body_timeout 30s`, `send_timeout 30s`, `proxy_read_timeout 30s`,
///   `proxy_send_timeout 30s`: between two reads or writes (nginx has no total deadline like the
///   gateway route's 30 s `timeouts.request`; a byte a second keeps it open).
/// - `proxy_connect_timeout 250ms`: the route's `timeouts.connect`; `client_max_body_size` 1m
///   (nginx's default, the route's `max_body_bytes`).
/// - `worker_connections 8192` (an attacker with its upstream connection takes two),
///   `worker_rlimit_nofile 16384`.
/// - HTTP/1.1 keep-alive to the origin (`keepalive 1024`: the gateway's
///   `upstream_keepalive_pool`), round robin over the two endpoints, no health checks.
/// - Request and response buffering left at nginx's defaults (on): a request body is read
///   whole before the origin sees it (into a 16 KiB buffer, then a temporary file), and a
///   response the client does not take goes to a temporary file (up to 1 GiB), not into memory;
///   the gateway and HAProxy stream both ways and stop reading the origin when the client does
///   not read. (The slow read's 1 MiB mostly fits into the kernel's send buffer of the proxy's
///   client socket, which grows up to `net.ipv4.tcp_wmem`'s maximum: then all three have read the
///   whole answer and closed or pooled the origin connection.)
async fn start_nginx(origins: &[SocketAddr]) -> anyhow::Result<Target> {
    let dir_conf = |p: &Path| {
        let p = p.display();
        format!("client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;")
    };
    let servers: String = origins.iter().map(|a| format!("server {a}; ")).collect();
    let listen = free_port()?;
    let dir = tempfile::tempdir()?;
    let p = dir.path().display().to_string();
    let conf = format!(
        "worker_processes 1;\nworker_rlimit_nofile 16384;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/error.log error;\nevents {{ worker_connections 8192; }}\nhttp {{\n  access_log off;\n  {temp}\n  client_header_timeout 10s;\n  client_body_timeout 30s;\n  send_timeout 30s;\n  upstream origin {{ {servers}keepalive 1024; }}\n  server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://origin;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_connect_timeout 250ms;\n      proxy_read_timeout 30s;\n      proxy_send_timeout 30s;\n    }}\n  }}\n}}\n",
        temp = dir_conf(dir.path()),
    );
    spawn_proxy(
        dir,
        "nginx",
        listen,
        ("nginx.conf", &conf),
        "error.log",
        |dir, cfg| vec!["-p".into(), dir.into(), "-c".into(), cfg.into()],
    )
    .await
}

/// Writes `conf` (file name, text) into `dir`, runs `name <args(dir, config path)>` with stderr
/// into `dir/stderr`, and waits until a GET through it answers 200 (at most 20 s). `log` is the
/// file in `dir` whose lines count as error lines.
async fn spawn_proxy(
    dir: tempfile::TempDir,
    name: &str,
    listen: SocketAddr,
    (file, conf): (&str, &str),
    log: &str,
    args: impl FnOnce(&Path, &Path) -> Vec<std::ffi::OsString>,
) -> anyhow::Result<Target> {
    let bin = which(name).with_context(|| format!("{name} is not installed"))?;
    // nginx's master runs as root here, its worker as `nobody`: the worker must reach the
    // temporary files (responses it buffers) under this directory.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let path = dir.path().join(file);
    std::fs::write(&path, conf)?;
    let child = Command::new(bin)
        .args(args(dir.path(), &path))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr"))?)
        .spawn()?;
    let pid = child.id();
    let log = dir.path().join(log);
    let stderr = dir.path().join("stderr");
    let target = Target {
        addr: listen,
        pid,
        handle: Handle::Child {
            _guard: Guard::Child {
                child,
                _dir: Some(dir),
            },
            log,
        },
    };
    wait_port(listen)
        .await
        .with_context(|| std::fs::read_to_string(&stderr).unwrap_or_default())?;
    let start = Instant::now();
    while get(listen).await != Some(200) {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(20),
            "{name} does not answer 200 through to the origin"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(target)
}

/// The results as a Markdown table, with the load of the machine.
pub fn markdown(report: &SlowReport) -> String {
    let mut out = String::from(
        "| attack | proxy | RSS before (MiB) | RSS growth per 1000 attackers, peak (MiB) | at the late sample (MiB) | gateway ÷ this proxy (peak) | fds growth, peak (late sample) | kernel TCP memory growth per 1000, peak (MiB, machine) | attackers connected / closed by the proxy | other client during (sent / not 200) | after (sent / not 200) | error log lines |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &report.results {
        let gw = report
            .results
            .iter()
            .find(|g| g.attack == r.attack && g.proxy == Proxy::Gateway);
        let ratio = match gw {
            Some(g) if r.proxy != Proxy::Gateway && r.rss_peak_growth_mib_per_1000 > 0.05 => {
                format!(
                    "{:.1}×",
                    g.rss_peak_growth_mib_per_1000 / r.rss_peak_growth_mib_per_1000
                )
            }
            Some(_) if r.proxy != Proxy::Gateway => "-".into(),
            _ => "".into(),
        };
        out.push_str(&format!(
            "| {:?} | {} | {:.1} | {:.1} | {:.1} | {} | {} ({}) | {:.0} | {} / {} | {} / {} | {} / {} | {} |\n",
            r.attack,
            r.proxy.label(),
            r.rss_before_mib,
            r.rss_peak_growth_mib_per_1000,
            r.rss_growth_mib_per_1000,
            ratio,
            r.fds_peak_growth,
            r.fds_growth,
            r.kernel_tcp_peak_growth_mib_per_1000,
            r.connected,
            r.closed_by_proxy,
            r.probe_during.0,
            r.probe_during.1,
            r.probe_after.0,
            r.probe_after.1,
            r.error_lines,
        ));
    }
    out.push_str(&format!(
        "\n{} attackers per attack ({}), opened at about 200 per second, each staying {:.0} s. RSS and descriptors summed over the proxy's processes. Peak: the highest of samples every 250 ms. Late sample (the first version's only figure, kept for comparison): {:.0} s after the last attacker was opened{}. Kernel TCP memory: `/proc/net/sockstat`, the whole machine, both ends of every connection ({:.0} MiB at most before an attack).{} Error log lines: the gateway's `ERROR` lines, nginx's `error_log` at `error`, HAProxy's stderr. Load average at the start {}, at the end {}.\n",
        report.connections,
        match report.attacker {
            Attacker::Builtin => "built-in attackers",
            Attacker::Slowhttptest => "slowhttptest",
        },
        report.duration_s,
        (report.duration_s - 1.0).max(0.0),
        match report.attacker {
            Attacker::Builtin => ", when the ones opened before it have left",
            Attacker::Slowhttptest => ", 1 s before slowhttptest's `-l` ends them all",
        },
        report
            .results
            .iter()
            .map(|r| r.kernel_tcp_before_mib)
            .fold(0.0, f64::max),
        match report.attacker {
            Attacker::Builtin => " A slow-read attacker never reads or writes again after the first bytes, so a close by the proxy is not seen.",
            Attacker::Slowhttptest => " Closed: slowhttptest's count (all connected ones when it says \"No open connections left\").",
        },
        report.loadavg_start,
        report.loadavg_end,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowhttptest_output_is_read() {
        let stdout = "\u{1b}[1;32mclosed:      \u{1b}[1;32m        3\nExit status:\u{1b}[1;36m No open connections left\n";
        let csv = "Seconds,Closed,Pending,Connected,Service Available\n0,0,1,0,20\n1,0,0,20,20\n2,2,0,18,20\n";
        assert_eq!(
            parse_slowhttptest(&testbed::launcher::strip_ansi(stdout), csv),
            (20, 20, Some("No open connections left".into()))
        );
        let csv = "Seconds,Closed,Pending,Connected,Service Available\n0,0,5,5,1\n1,4,0,6,1\n";
        assert_eq!(
            parse_slowhttptest("Exit status: Hit test time limit\n", csv),
            (10, 4, Some("Hit test time limit".into()))
        );
    }

    #[test]
    fn the_table_has_a_row_per_attack_and_proxy_and_the_gateway_ratio() {
        let row = |proxy, peak| AttackResult {
            attack: Attack::Body,
            proxy,
            attacker: Attacker::Builtin,
            connections: 1000,
            connected: 1000,
            processes: 1,
            rss_before_mib: 14.0,
            rss_growth_mib_per_1000: peak,
            rss_peak_growth_mib_per_1000: peak,
            fds_growth: 0,
            fds_peak_growth: 2000,
            kernel_tcp_before_mib: 0.0,
            kernel_tcp_peak_growth_mib_per_1000: 0.0,
            closed_by_proxy: 0,
            probe_during: (200, 0),
            probe_after: (50, 0),
            error_lines: 0,
            slowhttptest_exit: None,
        };
        let report = SlowReport {
            connections: 1000,
            duration_s: 15.0,
            attacker: Attacker::Builtin,
            loadavg_start: "1.00 1.00 1.00".into(),
            loadavg_end: "1.00 1.00 1.00".into(),
            results: vec![
                row(Proxy::Gateway, 52.0),
                row(Proxy::Haproxy, 4.0),
                row(Proxy::Nginx, 0.0),
            ],
        };
        let md = markdown(&report);
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| Body")).collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[0].starts_with("| Body | gateway | 14.0 | 52.0 | 52.0 |  |"));
        assert!(rows[1].starts_with("| Body | HAProxy | 14.0 | 4.0 | 4.0 | 13.0× |"));
        assert!(rows[2].starts_with("| Body | nginx | 14.0 | 0.0 | 0.0 | - |"));
    }

    #[test]
    fn this_process_is_its_own_tree_and_is_measured() {
        let u = usage(std::process::id());
        assert!(u.processes >= 1 && u.rss_kib > 0 && u.fds > 0);
    }
}
