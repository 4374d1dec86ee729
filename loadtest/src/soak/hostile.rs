//! The soak's hostile clients: each one a raw TCP connection that does one bad thing to the
//! gateway, and what the gateway must do about it within a limit.
//!
//! Three loops run beside the soak's traffic until its deadline: slow heads one after the other
//! (each trickled a byte every 100 ms until the gateway gives up at
//! `server.request_head_timeout`); bad framing and requests the gateway rejects (each answered
//! and closed at once); and clients that abandon their own requests (aborted downloads,
//! abandoned uploads, clients that leave before the answer). They go to the soak's `hostile`
//! route over a region of one endpoint that is never faulted, each kind repeated far more often
//! than `passive.consecutive_failures`, so a single one counted against the upstream shows in
//! its `gateway_passive_failures_total` and an ejection would show in `/status`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The host of the soak's hostile route.
pub const HOST: &str = "hostile.test";

/// How long the gateway may take to answer (and close) a request it rejects, or to start an
/// answer: it does so at once; the rest is room for a loaded 2-core machine and a debug build.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(5);

/// Room on top of `server.request_head_timeout` for a slow head: the deadline is the
/// gateway's own timer, which a loaded machine may run late.
pub const HEAD_SLACK: Duration = Duration::from_secs(2);

/// How long a client waits past its limit before it gives up (so a violation is measured, but
/// nothing waits for ever).
const GIVE_UP_AFTER_LIMIT: Duration = Duration::from_secs(3);

/// Pause between two hostile clients of the same loop.
const PAUSE: Duration = Duration::from_millis(100);

/// Hostile clients per loop at most (besides the deadline).
const MAX_PER_LOOP: usize = 100_000;

/// One kind of hostile client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostileKind {
    /// Slowloris: the request head a byte every 100 ms, never finished.
    SlowHead,
    /// Two different `Content-Length` values.
    DuplicateLength,
    /// `Transfer-Encoding: gzip`: not chunked, so no framing at all.
    NonChunkedEncoding,
    /// A chunk size that is not hex.
    BadChunkSize,
    /// `Content-Length` and `Transfer-Encoding: chunked` with a second request hidden behind
    /// the chunked body (smuggling): one answer, then the connection closed.
    LengthAndChunked,
    /// HTTP/1.1 without `Host`.
    NoHost,
    /// A 9000-byte header (`max_header_bytes` 8192).
    HeaderTooLarge,
    /// A 9000-byte target (`max_uri_bytes` 8192).
    TargetTooLong,
    /// A declared body of 2 MB (`max_body_bytes` 1 MiB).
    BodyTooLarge,
    /// A 10 MB download abandoned after its first 64 KiB.
    AbortedDownload,
    /// An upload whose client stops sending (closes its side) after the first bytes.
    AbandonedUpload,
    /// An upload whose client drops the connection after the first bytes.
    DroppedUpload,
    /// A slow answer (`/slow/500`) whose client leaves after 100 ms.
    LeftBeforeAnswer,
}

/// What the gateway must do to a kind of hostile client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Answer with this status and close.
    StatusThenClose(u16),
    /// Answer 408 or close, by the head deadline.
    TimeoutOrClose,
    /// Answer 400 or close.
    BadRequestOrClose,
    /// Exactly one answer, then close.
    OneAnswerThenClose,
    /// Start a 200 answer.
    Answer,
    /// Close (with an answer or without) after the client stopped sending.
    Close,
    /// Nothing to measure: the client leaves; only passive health may tell.
    ClientLeaves,
}

impl HostileKind {
    const FRAMING: [Self; 8] = [
        Self::DuplicateLength,
        Self::NonChunkedEncoding,
        Self::BadChunkSize,
        Self::LengthAndChunked,
        Self::NoHost,
        Self::HeaderTooLarge,
        Self::TargetTooLong,
        Self::BodyTooLarge,
    ];
    const ABANDONING: [Self; 4] = [
        Self::AbortedDownload,
        Self::AbandonedUpload,
        Self::DroppedUpload,
        Self::LeftBeforeAnswer,
    ];

    fn expect(self) -> Expect {
        match self {
            Self::SlowHead => Expect::TimeoutOrClose,
            Self::DuplicateLength | Self::NonChunkedEncoding | Self::NoHost => {
                Expect::StatusThenClose(400)
            }
            Self::BadChunkSize => Expect::BadRequestOrClose,
            Self::LengthAndChunked => Expect::OneAnswerThenClose,
            Self::HeaderTooLarge => Expect::StatusThenClose(431),
            Self::TargetTooLong => Expect::StatusThenClose(414),
            Self::BodyTooLarge => Expect::StatusThenClose(413),
            Self::AbortedDownload => Expect::Answer,
            Self::AbandonedUpload => Expect::Close,
            Self::DroppedUpload | Self::LeftBeforeAnswer => Expect::ClientLeaves,
        }
    }

    /// The limit of the gateway's answer or close (`None`: nothing to wait for).
    fn limit(self, head_timeout: Duration) -> Option<Duration> {
        match self.expect() {
            Expect::TimeoutOrClose => Some(head_timeout + HEAD_SLACK),
            Expect::ClientLeaves => None,
            _ => Some(ANSWER_LIMIT),
        }
    }

    /// What the gateway must do, in words (for the report).
    fn expected(self) -> String {
        match self.expect() {
            Expect::StatusThenClose(s) => format!("{s}, closed"),
            Expect::TimeoutOrClose => "408 or closed by the head deadline".into(),
            Expect::BadRequestOrClose => "400 or closed".into(),
            Expect::OneAnswerThenClose => "one answer, closed (no second)".into(),
            Expect::Answer => "200 started".into(),
            Expect::Close => "closed after the client stopped".into(),
            Expect::ClientLeaves => "client leaves; nothing counted".into(),
        }
    }

    /// The bytes the client sends first.
    fn head(self) -> Vec<u8> {
        let h = HOST;
        match self {
            Self::SlowHead => format!("GET /slow-head HTTP/1.1\r\nHost: {h}\r\nx-slow: ").into(),
            Self::DuplicateLength => format!(
                "POST /h HTTP/1.1\r\nHost: {h}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
            )
            .into(),
            Self::NonChunkedEncoding => format!(
                "POST /h HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: gzip\r\n\r\nxxxx"
            )
            .into(),
            Self::BadChunkSize => format!(
                "POST /h HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n"
            )
            .into(),
            Self::LengthAndChunked => format!(
                "POST /h HTTP/1.1\r\nHost: {h}\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n"
            )
            .into(),
            Self::NoHost => "GET /h HTTP/1.1\r\n\r\n".into(),
            Self::HeaderTooLarge => {
                format!("GET /h HTTP/1.1\r\nHost: {h}\r\nx-big: {}\r\n\r\n", "a".repeat(9000)).into()
            }
            Self::TargetTooLong => {
                format!("GET /{} HTTP/1.1\r\nHost: {h}\r\n\r\n", "u".repeat(9000)).into()
            }
            Self::BodyTooLarge => format!(
                "POST /h HTTP/1.1\r\nHost: {h}\r\nContent-Length: 2000000\r\n\r\nfirst bytes"
            )
            .into(),
            Self::AbortedDownload => {
                format!("GET /stream/10000000 HTTP/1.1\r\nHost: {h}\r\n\r\n").into()
            }
            Self::AbandonedUpload | Self::DroppedUpload => format!(
                "POST /upload HTTP/1.1\r\nHost: {h}\r\nContent-Length: 100000\r\n\r\nfirst bytes"
            )
            .into(),
            Self::LeftBeforeAnswer => format!("GET /slow/500 HTTP/1.1\r\nHost: {h}\r\n\r\n").into(),
        }
    }
}

/// What the hostile clients of one kind saw.
#[derive(Debug, Clone, Serialize)]
pub struct HostileStats {
    /// The kind.
    pub kind: HostileKind,
    /// What the gateway must do.
    pub expected: String,
    /// The limit of its answer or close (ms; `None`: nothing measured).
    pub limit_ms: Option<u64>,
    /// Clients of this kind.
    pub runs: u64,
    /// Clients the gateway treated as it must, within the limit.
    pub ok: u64,
    /// The longest time to the answer or close that was measured (ms).
    pub max_ms: Option<f64>,
    /// The shortest (ms).
    pub min_ms: Option<f64>,
    /// Clients that were not treated as they must be, or not in time.
    pub violations: u64,
    /// The first few violations, described.
    pub violation_examples: Vec<String>,
}

impl HostileStats {
    fn new(kind: HostileKind, head_timeout: Duration) -> Self {
        Self {
            kind,
            expected: kind.expected(),
            limit_ms: kind.limit(head_timeout).map(|l| l.as_millis() as u64),
            runs: 0,
            ok: 0,
            max_ms: None,
            min_ms: None,
            violations: 0,
            violation_examples: Vec::new(),
        }
    }

    fn add(&mut self, outcome: Result<Option<Duration>, String>) {
        self.runs += 1;
        match outcome {
            Ok(measured) => {
                self.ok += 1;
                if let Some(d) = measured {
                    let ms = d.as_secs_f64() * 1000.0;
                    self.max_ms = Some(self.max_ms.map_or(ms, |m| m.max(ms)));
                    self.min_ms = Some(self.min_ms.map_or(ms, |m| m.min(ms)));
                }
            }
            Err(why) => {
                self.violations += 1;
                if self.violation_examples.len() < 5 {
                    self.violation_examples.push(why);
                }
            }
        }
    }
}

/// Runs the three loops of hostile clients against `addr` until `deadline` (no new client
/// starts after it) and sums up each kind.
pub async fn run(addr: SocketAddr, head_timeout: Duration, deadline: Instant) -> Vec<HostileStats> {
    let slow = tokio::spawn(one_loop(
        addr,
        head_timeout,
        deadline,
        vec![HostileKind::SlowHead],
    ));
    let framing = tokio::spawn(one_loop(
        addr,
        head_timeout,
        deadline,
        HostileKind::FRAMING.to_vec(),
    ));
    let abandoning = tokio::spawn(one_loop(
        addr,
        head_timeout,
        deadline,
        HostileKind::ABANDONING.to_vec(),
    ));
    let mut all = BTreeMap::new();
    for task in [slow, framing, abandoning] {
        for s in task.await.unwrap_or_default() {
            all.insert(s.kind, s);
        }
    }
    all.into_values().collect()
}

/// Clients of `kinds` in turn, one at a time, until `deadline`.
async fn one_loop(
    addr: SocketAddr,
    head_timeout: Duration,
    deadline: Instant,
    kinds: Vec<HostileKind>,
) -> Vec<HostileStats> {
    let mut stats: Vec<HostileStats> = kinds
        .iter()
        .map(|k| HostileStats::new(*k, head_timeout))
        .collect();
    for i in 0..MAX_PER_LOOP {
        if Instant::now() >= deadline {
            break;
        }
        let s = &mut stats[i % kinds.len()];
        s.add(client(addr, s.kind, head_timeout).await);
        tokio::time::sleep(PAUSE).await;
    }
    stats
}

/// What a client saw of the gateway after it sent its request (or its first byte).
#[derive(Debug, Default)]
struct Seen {
    /// Everything the gateway sent.
    bytes: Vec<u8>,
    /// When its first byte arrived.
    first_byte: Option<Duration>,
    /// When it closed the connection (end of stream or reset).
    closed: Option<Duration>,
}

impl Seen {
    /// The status codes of the answers, in order (status lines at the start of a line).
    fn statuses(&self) -> Vec<u16> {
        let text = String::from_utf8_lossy(&self.bytes);
        let mut out = Vec::new();
        let mut rest: &str = &text;
        let mut at_start = true;
        while !rest.is_empty() {
            if at_start {
                if let Some(code) = rest
                    .strip_prefix("HTTP/1.1 ")
                    .or_else(|| rest.strip_prefix("HTTP/1.0 "))
                    .and_then(|r| r.get(..3))
                    .and_then(|c| c.parse().ok())
                {
                    out.push(code);
                }
            }
            match rest.find('\n') {
                Some(i) => {
                    rest = &rest[i + 1..];
                    at_start = true;
                }
                None => break,
            }
        }
        out
    }

    fn describe(&self) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let first = text.lines().next().unwrap_or("");
        format!(
            "answer `{}`{}, first byte {}, closed {}",
            first,
            if self.bytes.is_empty() { " (none)" } else { "" },
            fmt_opt(self.first_byte),
            fmt_opt(self.closed)
        )
    }
}

fn fmt_opt(d: Option<Duration>) -> String {
    d.map_or("never".into(), |d| {
        format!("after {:.0} ms", d.as_secs_f64() * 1000.0)
    })
}

/// Reads what the gateway sends on `tcp` until it closes or `wait` (from `since`) passes;
/// stops early once `enough` bytes arrived (0: read to the end).
async fn read_until_close(
    tcp: &mut TcpStream,
    seen: &mut Seen,
    since: Instant,
    wait: Duration,
    enough: usize,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let left = wait.saturating_sub(since.elapsed());
        if left.is_zero() {
            return;
        }
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Err(_) => return,
            Ok(Ok(0)) | Ok(Err(_)) => {
                seen.closed = Some(since.elapsed());
                return;
            }
            Ok(Ok(n)) => {
                seen.first_byte.get_or_insert(since.elapsed());
                seen.bytes.extend_from_slice(&buf[..n]);
                if enough > 0 && seen.bytes.len() >= enough {
                    return;
                }
            }
        }
    }
}

/// One hostile client of `kind`: `Ok(time measured)` when the gateway did what it must within
/// the limit, else what it did instead.
async fn client(
    addr: SocketAddr,
    kind: HostileKind,
    head_timeout: Duration,
) -> Result<Option<Duration>, String> {
    let limit = kind.limit(head_timeout);
    let wait = limit.unwrap_or(Duration::ZERO) + GIVE_UP_AFTER_LIMIT;
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let head = kind.head();
    let mut seen = Seen::default();
    let since = Instant::now();
    if tcp.write_all(&head).await.is_err() {
        // The gateway closed before it read everything: a close.
        seen.closed = Some(since.elapsed());
    }
    match kind.expect() {
        Expect::TimeoutOrClose => trickle(&mut tcp, &mut seen, since, wait).await,
        Expect::Answer => {
            read_until_close(&mut tcp, &mut seen, since, wait, 64 * 1024).await;
        }
        Expect::Close => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tcp.shutdown().await;
            let stopped = Instant::now();
            read_until_close(&mut tcp, &mut seen, stopped, wait, 0).await;
        }
        Expect::ClientLeaves => {
            let stay = if kind == HostileKind::LeftBeforeAnswer {
                100
            } else {
                50
            };
            tokio::time::sleep(Duration::from_millis(stay)).await;
            return Ok(None);
        }
        Expect::StatusThenClose(_) | Expect::BadRequestOrClose | Expect::OneAnswerThenClose => {
            if seen.closed.is_none() {
                read_until_close(&mut tcp, &mut seen, since, wait, 0).await;
            }
        }
    }
    judge(kind, limit, &seen)
}

/// The slow head: a byte every 100 ms until the gateway answers or closes, or `wait` passes.
async fn trickle(tcp: &mut TcpStream, seen: &mut Seen, since: Instant, wait: Duration) {
    let mut buf = [0u8; 1024];
    while seen.closed.is_none() && since.elapsed() < wait {
        if tcp.write_all(b"a").await.is_err() {
            seen.closed = Some(since.elapsed());
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => seen.closed = Some(since.elapsed()),
            Ok(Ok(n)) => {
                seen.first_byte.get_or_insert(since.elapsed());
                seen.bytes.extend_from_slice(&buf[..n]);
                // Answered: the close follows.
                read_until_close(tcp, seen, since, wait, 0).await;
                break;
            }
            Err(_) => {}
        }
    }
}

/// Whether `seen` is what `kind` must get within `limit`, and the time that was measured.
fn judge(
    kind: HostileKind,
    limit: Option<Duration>,
    seen: &Seen,
) -> Result<Option<Duration>, String> {
    let statuses = seen.statuses();
    let fail = |why: &str| Err(format!("{why}: {}", seen.describe()));
    let measured = match kind.expect() {
        Expect::ClientLeaves => return Ok(None),
        Expect::Answer => match (statuses.first(), seen.first_byte) {
            (Some(200), Some(t)) => t,
            _ => return fail("no 200 answer started"),
        },
        Expect::Close => match seen.closed {
            Some(t) => t,
            None => return fail("not closed"),
        },
        Expect::TimeoutOrClose => match (statuses.as_slice(), seen.closed) {
            ([] | [408], Some(t)) => t,
            (_, None) => return fail("not closed"),
            _ => return fail("answered other than 408"),
        },
        Expect::StatusThenClose(want) => match (statuses.as_slice(), seen.closed) {
            ([s], Some(t)) if *s == want => t,
            (_, None) => return fail("not closed"),
            _ => return fail(&format!("not one {want}")),
        },
        Expect::BadRequestOrClose => match (statuses.as_slice(), seen.closed) {
            ([] | [400], Some(t)) => t,
            (_, None) => return fail("not closed"),
            _ => return fail("answered other than 400"),
        },
        Expect::OneAnswerThenClose => match (statuses.len(), seen.closed) {
            (1, Some(t)) => t,
            (0, _) => return fail("no answer"),
            (1, None) => return fail("not closed"),
            _ => return fail("the smuggled request was answered"),
        },
    };
    match limit {
        Some(limit) if measured > limit => fail(&format!("later than {} ms", limit.as_millis())),
        _ => Ok(Some(measured)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(bytes: &str, closed_ms: Option<u64>) -> Seen {
        Seen {
            bytes: bytes.as_bytes().to_vec(),
            first_byte: (!bytes.is_empty()).then_some(Duration::from_millis(1)),
            closed: closed_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn status_lines_are_found_only_at_the_start_of_a_line() {
        let s = seen(
            "HTTP/1.1 200 OK\r\ncontent-length: 30\r\n\r\n{\"version\":\"HTTP/1.1 404\"}\nHTTP/1.1 404 Not Found\r\n\r\n",
            Some(5),
        );
        assert_eq!(s.statuses(), [200, 404]);
        assert!(seen("", Some(1)).statuses().is_empty());
    }

    #[test]
    fn each_kind_is_judged_by_what_it_must_get_and_when() {
        let limit = Some(Duration::from_secs(5));
        let head = HostileKind::SlowHead.limit(Duration::from_secs(2));
        let table: Vec<(HostileKind, Option<Duration>, Seen, bool)> = vec![
            (
                HostileKind::SlowHead,
                head,
                seen("HTTP/1.1 408 Request Timeout\r\n\r\n", Some(2010)),
                true,
            ),
            (HostileKind::SlowHead, head, seen("", Some(2010)), true),
            (HostileKind::SlowHead, head, seen("", Some(4500)), false),
            (HostileKind::SlowHead, head, seen("", None), false),
            (
                HostileKind::SlowHead,
                head,
                seen("HTTP/1.1 200 OK\r\n\r\n", Some(10)),
                false,
            ),
            (
                HostileKind::NoHost,
                limit,
                seen("HTTP/1.1 400 Bad Request\r\n\r\n", Some(3)),
                true,
            ),
            (
                HostileKind::NoHost,
                limit,
                seen("HTTP/1.1 400 Bad Request\r\n\r\n", None),
                false,
            ),
            (HostileKind::NoHost, limit, seen("", Some(3)), false),
            (
                HostileKind::HeaderTooLarge,
                limit,
                seen("HTTP/1.1 400 Bad Request\r\n\r\n", Some(3)),
                false,
            ),
            (HostileKind::BadChunkSize, limit, seen("", Some(3)), true),
            (
                HostileKind::BadChunkSize,
                limit,
                seen("HTTP/1.1 200 OK\r\n\r\n", Some(3)),
                false,
            ),
            (
                HostileKind::LengthAndChunked,
                limit,
                seen("HTTP/1.1 200 OK\r\n\r\n", Some(3)),
                true,
            ),
            (
                HostileKind::LengthAndChunked,
                limit,
                seen("HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", Some(3)),
                false,
            ),
            (
                HostileKind::LengthAndChunked,
                limit,
                seen("HTTP/1.1 200 OK\r\n\r\n", None),
                false,
            ),
            (
                HostileKind::AbortedDownload,
                limit,
                seen("HTTP/1.1 200 OK\r\n\r\nxxx", None),
                true,
            ),
            (
                HostileKind::AbortedDownload,
                limit,
                seen("", Some(3)),
                false,
            ),
            (
                HostileKind::AbandonedUpload,
                limit,
                seen("", Some(30)),
                true,
            ),
            (HostileKind::AbandonedUpload, limit, seen("", None), false),
            (HostileKind::DroppedUpload, None, seen("", None), true),
        ];
        for (kind, limit, s, ok) in table {
            let got = judge(kind, limit, &s);
            assert_eq!(got.is_ok(), ok, "{kind:?} {}: {got:?}", s.describe());
        }
    }
}
