//! `loadtest slowclients`: slow-client attacks (as slowhttptest's `-H`, `-B` and `-X`) against
//! a gateway in front of a healthy simulated region, while another client sends a GET every
//! 100 ms. Reports the gateway's memory and descriptors per 1000 attacking connections, how
//! many attackers it had closed by the end, and whether the other client was served during the
//! attack and after the attackers left.

use std::time::{Duration, Instant};

use serde::Serialize;
use testbed::fleet::Fleet;
use testbed::launcher::GatewayProcess;
use testbed::yaml::{GatewayYaml, Probe, Route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// What to run.
#[derive(Debug, Clone)]
pub struct SlowSpec {
    /// The gateway binary.
    pub gateway: std::path::PathBuf,
    /// Attacking connections.
    pub connections: usize,
    /// How long the attackers stay.
    pub duration: Duration,
    /// The attacks, one after the other, each against a fresh gateway.
    pub attacks: Vec<Attack>,
}

/// What one attack measured.
#[derive(Debug, Clone, Serialize)]
pub struct AttackResult {
    /// The attack.
    pub attack: Attack,
    /// Attacking connections opened.
    pub connections: usize,
    /// Gateway RSS growth while the attackers were connected, per 1000 of them (MiB).
    pub rss_growth_mib_per_1000: f64,
    /// Gateway open descriptors at the end of the attack minus before it.
    pub fds_growth: i64,
    /// Attacking connections the gateway had closed by the end of the attack.
    pub closed_by_gateway: usize,
    /// The other client's requests during the attack, and how many were not 200.
    pub probe_during: (u64, u64),
    /// The same in the 5 s after the attackers left.
    pub probe_after: (u64, u64),
    /// `ERROR` lines in the gateway's log during the attack.
    pub error_lines: usize,
}

/// Runs each attack against a fresh gateway.
pub async fn run(spec: &SlowSpec) -> anyhow::Result<Vec<AttackResult>> {
    let mut out = Vec::new();
    for attack in &spec.attacks {
        out.push(one(spec, *attack).await?);
    }
    Ok(out)
}

async fn one(spec: &SlowSpec, attack: Attack) -> anyhow::Result<AttackResult> {
    let fleet = Fleet::start(&[("fra", 2)]).await?;
    let probe = Probe::http(
        "/healthz",
        Duration::from_secs(1),
        Duration::from_millis(500),
    );
    let gw = start_gateway(&spec.gateway, 1, |ports| {
        GatewayYaml::new(ports)
            .fleet(&fleet, &probe)
            .route(Route::new("app", &["fra"]).reject_when_all_down())
    })
    .await?;
    let pid = gw.pid().ok_or_else(|| anyhow::anyhow!("no gateway pid"))?;
    let (rss_before, fds_before) = (rss_kib(pid), fds(pid));
    let errors_before = error_lines(&gw);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = tokio::spawn(probe_loop(gw.addr, stop.clone()));
    let mut attackers = Vec::new();
    for _ in 0..spec.connections {
        // Opened at about 200 per second, as slowhttptest does by default.
        attackers.push(tokio::spawn(attacker(gw.addr, attack, spec.duration)));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(spec.duration.saturating_sub(Duration::from_secs(1))).await;
    let (rss_during, fds_during) = (rss_kib(pid), fds(pid));
    let mut closed = 0;
    for a in attackers {
        if a.await.unwrap_or(false) {
            closed += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let during = prober.await.unwrap_or((0, 0));

    // After the attackers left: the other client must still be served.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = tokio::spawn(probe_loop(gw.addr, stop.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let after = prober.await.unwrap_or((0, 0));

    Ok(AttackResult {
        attack,
        connections: spec.connections,
        rss_growth_mib_per_1000: rss_during.saturating_sub(rss_before) as f64 / 1024.0 * 1000.0
            / spec.connections.max(1) as f64,
        fds_growth: fds_during as i64 - fds_before as i64,
        closed_by_gateway: closed,
        probe_during: during,
        probe_after: after,
        error_lines: error_lines(&gw).saturating_sub(errors_before),
    })
}

/// One slow client for `duration`; true when the gateway closed the connection first.
async fn attacker(addr: std::net::SocketAddr, attack: Attack, duration: Duration) -> bool {
    let end = Instant::now() + duration;
    let socket = match tokio::net::TcpSocket::new_v4() {
        Ok(s) => s,
        Err(_) => return false,
    };
    if attack == Attack::Read {
        let _ = socket.set_recv_buffer_size(4096);
    }
    let Ok(mut tcp) = socket.connect(addr).await else {
        return false;
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
        return true;
    }
    let mut buf = [0u8; 1024];
    if attack == Attack::Read {
        // The first bytes only, then never read again.
        let _ = tcp.read(&mut buf).await;
    }
    while Instant::now() < end {
        if trickle && tcp.write_all(b"x").await.is_err() {
            return true;
        }
        if attack == Attack::Read {
            // Notice a close without draining: a zero-length peek would not tell, so wait.
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An answer (408, 413, ...) ends it too: the gateway closes after it.
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
    }
    false
}

/// GETs every 100 ms until `stop`: (requests, not 200).
async fn probe_loop(
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u64, u64) {
    let (mut sent, mut bad) = (0, 0);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        sent += 1;
        match testbed::launcher::http_request(addr, "GET", "/probe", "a", None).await {
            Ok((200, _)) => {}
            _ => bad += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (sent, bad)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn error_lines(gw: &GatewayProcess) -> usize {
    gw.stderr_plain()
        .lines()
        .filter(|l| l.contains(" ERROR "))
        .count()
}

/// The results as a Markdown table.
pub fn markdown(results: &[AttackResult]) -> String {
    let mut out = String::from(
        "| attack | connections | RSS growth (MiB per 1000) | fds growth | closed by the gateway | other client during (sent / not 200) | after (sent / not 200) | ERROR lines |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        out.push_str(&format!(
            "| {:?} | {} | {:.1} | {} | {} | {} / {} | {} / {} | {} |\n",
            r.attack,
            r.connections,
            r.rss_growth_mib_per_1000,
            r.fds_growth,
            r.closed_by_gateway,
            r.probe_during.0,
            r.probe_during.1,
            r.probe_after.0,
            r.probe_after.1,
            r.error_lines,
        ));
    }
    out
}
