//! The idle group: many HTTP/1.1 keep-alive clients that each sent one request, read the
//! whole answer and stay connected without sending more; what that costs the proxy in memory.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Connections being opened (and their one request answered) at once.
const OPENING_AT_ONCE: usize = 256;

/// What one proxy held for the idle clients.
#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    /// Row name.
    pub name: String,
    /// Clients asked for.
    pub clients: usize,
    /// Clients whose request was answered.
    pub answered: usize,
    /// Answered clients still connected when the memory was read.
    pub held: usize,
    /// `VmRSS` of the proxy's worker before the clients came (MiB).
    pub rss_before_mib: f64,
    /// `VmRSS` of the worker with the clients held (MiB).
    pub rss_with_clients_mib: f64,
    /// Growth per held client (KiB).
    pub kib_per_client: f64,
    /// Seconds it took to open the clients and have their requests answered.
    pub open_s: f64,
}

/// Opens `clients` connections to `addr`, sends `GET /bench` with `host` on each and reads the
/// answer, keeps them idle for two seconds and reads the `VmRSS` of `worker` then, against before.
/// At most `OPENING_AT_ONCE` are being opened at a time; each gets 5 s, all of them 90 s.
pub(super) async fn measure(
    name: &str,
    addr: SocketAddr,
    host: &str,
    worker: u32,
    clients: usize,
) -> IdleResult {
    let before = testbed::launcher::rss_kib(worker);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    let request: std::sync::Arc<[u8]> = format!("GET /bench HTTP/1.1\r\nHost: {host}\r\n\r\n")
        .into_bytes()
        .into();
    let mut held = Vec::with_capacity(clients);
    let mut opening = JoinSet::new();
    let mut started_count = 0;
    while (started_count < clients || !opening.is_empty()) && Instant::now() < deadline {
        while started_count < clients && opening.len() < OPENING_AT_ONCE {
            let request = request.clone();
            opening.spawn(async move {
                tokio::time::timeout(Duration::from_secs(5), one_request(addr, &request))
                    .await
                    .ok()
                    .flatten()
            });
            started_count += 1;
        }
        if let Some(Ok(Some(stream))) = opening.join_next().await {
            held.push(stream);
        }
    }
    opening.abort_all();
    let open_s = started.elapsed().as_secs_f64();
    // Let the proxy finish what it does after an answer (buffers freed, timers set; the
    // gateway parks a connection a grace second after its answer).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with = testbed::launcher::rss_kib(worker);
    let answered = held.len();
    let still = held.iter().filter(|s| still_open(s)).count();
    drop(held);
    IdleResult {
        name: name.into(),
        clients,
        answered,
        held: still,
        rss_before_mib: before as f64 / 1024.0,
        rss_with_clients_mib: with as f64 / 1024.0,
        kib_per_client: with.saturating_sub(before) as f64 / still.max(1) as f64,
        open_s,
    }
}

/// Connects, sends `request` and reads one answer whole; the stream, still open, or none.
async fn one_request(addr: SocketAddr, request: &[u8]) -> Option<TcpStream> {
    Some(exchange(addr, request).await?.0)
}

/// The answer (head and body, lower-cased) to `GET /bench` with `host` on a new connection
/// to `addr` (5 s).
pub(super) async fn answer(addr: SocketAddr, host: &str) -> Option<String> {
    let request = format!("GET /bench HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let exchange = exchange(addr, request.as_bytes());
    let (_, answer) = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()??;
    Some(String::from_utf8_lossy(&answer).to_ascii_lowercase())
}

/// Connects, sends `request` and reads one answer whole: the stream, still open, and the answer.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Option<(TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    stream.write_all(request).await.ok()?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        if let Some(len) = answer_len(&buf) {
            if buf.len() >= len {
                return Some((stream, buf));
            }
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The length of the answer at the start of `buf` (head and `Content-Length` body), once the
/// head is complete; `None` before, or without a `Content-Length`.
fn answer_len(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let body = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    })?;
    Some(head_end + body)
}

/// Whether the peer has not closed `stream` (nothing to read and no end of stream).
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_complete_with_its_body() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: b\r\n\r\n";
        assert_eq!(answer_len(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(answer_len(head), Some(head.len() + 5));
        assert_eq!(answer_len(b"HTTP/1.1 200 OK\r\n\r\n"), None);
    }

    #[tokio::test]
    async fn clients_stay_connected_and_are_counted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let mut open = Vec::new();
            for _ in 0..3 {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .expect("write");
                open.push(s);
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        });
        let r = measure("test", addr, "a", std::process::id(), 3).await;
        assert_eq!((r.answered, r.held), (3, 3));
        server.abort();
    }
}
