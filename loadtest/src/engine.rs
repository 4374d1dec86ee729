//! The load engine: open-loop constant rate, or closed-loop maximum throughput.
//!
//! Open loop: request `i` is due at `start + i / rate`. A dispatcher hands due requests to
//! connection workers; when every connection is busy the request waits in the queue, and its
//! latency is measured from the time it was *due*, not from when it was finally sent. A stalled
//! server therefore shows up in the latency percentiles instead of silently lowering the request
//! rate (no coordinated omission).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex, Semaphore};

/// Streams in flight in closed-loop HTTP/2 runs: the same concurrency as 64 HTTP/1.1
/// connections, so both protocols load a proxy alike.
const CLOSED_LOOP_H2_STREAMS: usize = 64;

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Target address.
    pub addr: SocketAddr,
    /// Host header.
    pub host: String,
    /// Path and query.
    pub path: String,
    /// Requests per second; 0 means as fast as possible (closed loop, for maximum throughput).
    pub rate: u32,
    /// How long to send.
    pub duration: Duration,
    /// Connections (HTTP/1.1: one request at a time each; HTTP/2: multiplexed).
    pub connections: usize,
    /// Use HTTP/2 (h2c, prior knowledge).
    pub http2: bool,
    /// Per-request deadline, counted from the due time.
    pub timeout: Duration,
    /// Hard cap on requests.
    pub max_requests: u64,
}

/// Transport failure kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The connection could not be established.
    Connect,
    /// No complete response before the deadline.
    Timeout,
    /// The connection broke during the exchange.
    Reset,
}

/// One request's outcome.
#[derive(Debug, Clone)]
pub struct Record {
    /// Due time, since the start of the run.
    pub due: Duration,
    /// From the due time to the complete response (or failure).
    pub latency: Duration,
    /// HTTP status, if a response arrived.
    pub status: Option<u16>,
    /// Transport failure, if any.
    pub error: Option<ErrorKind>,
    /// The region that answered (`x-region` response header).
    pub region: Option<Arc<str>>,
}

impl Record {
    /// A request failed: transport error or 5xx.
    pub fn failed(&self) -> bool {
        self.error.is_some() || self.status.is_some_and(|s| s >= 500)
    }
}

/// Progress callback: called with the number of completed requests.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Runs a load and returns every request's record, sorted by due time.
pub async fn run(spec: &LoadSpec, progress: Option<Progress>) -> Vec<Record> {
    let start = Instant::now();
    let total = if spec.rate == 0 {
        spec.max_requests
    } else {
        ((spec.duration.as_secs_f64() * f64::from(spec.rate)) as u64).min(spec.max_requests)
    };
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let records = Arc::new(Mutex::new(Vec::with_capacity(
        total.min(10_000_000) as usize
    )));
    let regions = Arc::new(RegionNames::default());
    let (tx, rx) = mpsc::unbounded_channel::<Duration>();
    let rx = Arc::new(Mutex::new(rx));

    // Dispatcher: open loop hands out due times; closed loop lets workers run freely.
    let dispatcher = if spec.rate > 0 {
        let rate = spec.rate;
        Some(tokio::spawn(async move {
            let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
            let mut i = 0u64;
            while i < total {
                let due = interval.mul_f64(i as f64);
                tokio::time::sleep_until((start + due).into()).await;
                // Hand out everything due by now (timer granularity is about a millisecond).
                let now = start.elapsed();
                while i < total && interval.mul_f64(i as f64) <= now {
                    if tx.send(interval.mul_f64(i as f64)).is_err() {
                        return;
                    }
                    i += 1;
                }
            }
        }))
    } else {
        drop(tx);
        None
    };

    let mut workers = Vec::new();
    let closed_loop_budget = Arc::new(std::sync::atomic::AtomicU64::new(total));
    if spec.http2 {
        let senders = Arc::new(Mutex::new(Vec::new()));
        let inflight = Arc::new(Semaphore::new(20_000));
        let spec2 = spec.clone();
        let (records2, regions2, done2, progress2) = (
            records.clone(),
            regions.clone(),
            done.clone(),
            progress.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            let mut next = 0usize;
            loop {
                let Some(due) = next_due(&spec2, &rx, start, &closed_loop_budget).await else {
                    break;
                };
                let permit = inflight.clone().acquire_owned().await.expect("semaphore");
                let sender = h2_sender(&spec2, &senders, next).await;
                next += 1;
                let (spec3, records3, regions3, done3, progress3) = (
                    spec2.clone(),
                    records2.clone(),
                    regions2.clone(),
                    done2.clone(),
                    progress2.clone(),
                );
                tasks.spawn(async move {
                    let record = match sender {
                        Some(mut s) => {
                            let req = request(&spec3);
                            let result =
                                tokio::time::timeout(deadline(&spec3, start, due), async {
                                    s.ready().await.map_err(|_| ErrorKind::Reset)?;
                                    let resp =
                                        s.send_request(req).await.map_err(|_| ErrorKind::Reset)?;
                                    finish(resp).await
                                })
                                .await;
                            to_record(result, start, due, &regions3)
                        }
                        None => Record {
                            due,
                            latency: start.elapsed().saturating_sub(due),
                            status: None,
                            error: Some(ErrorKind::Connect),
                            region: None,
                        },
                    };
                    records3.lock().await.push(record);
                    let n = done3.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if let Some(p) = &progress3 {
                        p(n);
                    }
                    drop(permit);
                });
                if spec2.rate == 0 && tasks.len() >= CLOSED_LOOP_H2_STREAMS {
                    tasks.join_next().await;
                }
            }
            while tasks.join_next().await.is_some() {}
        }));
    } else {
        for _ in 0..spec.connections.max(1) {
            let spec2 = spec.clone();
            let rx = rx.clone();
            let (records2, regions2, done2, progress2, budget) = (
                records.clone(),
                regions.clone(),
                done.clone(),
                progress.clone(),
                closed_loop_budget.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut conn: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
                let mut local = Vec::new();
                loop {
                    let Some(due) = next_due(&spec2, &rx, start, &budget).await else {
                        break;
                    };
                    let limit = deadline(&spec2, start, due);
                    let result = tokio::time::timeout(limit, async {
                        if conn.as_ref().is_none_or(|c| c.is_closed()) {
                            conn = Some(h1_connect(spec2.addr).await.ok_or(ErrorKind::Connect)?);
                        }
                        let c = conn.as_mut().ok_or(ErrorKind::Connect)?;
                        c.ready().await.map_err(|_| ErrorKind::Reset)?;
                        let resp = c
                            .send_request(request(&spec2))
                            .await
                            .map_err(|_| ErrorKind::Reset)?;
                        finish(resp).await
                    })
                    .await;
                    let record = to_record(result, start, due, &regions2);
                    if record.error.is_some() {
                        conn = None;
                    }
                    local.push(record);
                    let n = done2.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if let Some(p) = &progress2 {
                        p(n);
                    }
                    if local.len() >= 4096 {
                        records2.lock().await.append(&mut local);
                    }
                }
                records2.lock().await.append(&mut local);
            }));
        }
    }
    if let Some(d) = dispatcher {
        let _ = d.await;
    }
    for w in workers {
        let _ = w.await;
    }
    let mut all = std::mem::take(&mut *records.lock().await);
    all.sort_by_key(|r| r.due);
    all
}

/// When the next request is due: the dispatcher's next due time (open loop), or now while the
/// run lasts and the closed-loop `budget` has requests left; `None` when the worker is done.
async fn next_due(
    spec: &LoadSpec,
    rx: &Mutex<mpsc::UnboundedReceiver<Duration>>,
    start: Instant,
    budget: &std::sync::atomic::AtomicU64,
) -> Option<Duration> {
    if spec.rate > 0 {
        rx.lock().await.recv().await
    } else if start.elapsed() >= spec.duration || !take(budget) {
        None
    } else {
        Some(start.elapsed())
    }
}

fn take(budget: &std::sync::atomic::AtomicU64) -> bool {
    budget
        .fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |n| n.checked_sub(1),
        )
        .is_ok()
}

/// Time left until the request's deadline (counted from its due time).
fn deadline(spec: &LoadSpec, start: Instant, due: Duration) -> Duration {
    (due + spec.timeout)
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(1))
}

fn request(spec: &LoadSpec) -> http::Request<Empty<Bytes>> {
    let uri = if spec.http2 {
        format!("http://{}{}", spec.host, spec.path)
    } else {
        spec.path.clone()
    };
    let mut b = http::Request::get(uri);
    if !spec.http2 {
        b = b.header(http::header::HOST, spec.host.as_str());
    }
    b.body(Empty::new()).expect("valid request")
}

async fn finish(
    resp: http::Response<hyper::body::Incoming>,
) -> Result<(u16, Option<String>), ErrorKind> {
    let status = resp.status().as_u16();
    let region = resp
        .headers()
        .get("x-region")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    resp.into_body()
        .collect()
        .await
        .map_err(|_| ErrorKind::Reset)?;
    Ok((status, region))
}

fn to_record(
    result: Result<Result<(u16, Option<String>), ErrorKind>, tokio::time::error::Elapsed>,
    start: Instant,
    due: Duration,
    regions: &RegionNames,
) -> Record {
    let latency = start.elapsed().saturating_sub(due);
    match result {
        Ok(Ok((status, region))) => Record {
            due,
            latency,
            status: Some(status),
            error: None,
            region: region.map(|r| regions.intern(&r)),
        },
        Ok(Err(kind)) => Record {
            due,
            latency,
            status: None,
            error: Some(kind),
            region: None,
        },
        Err(_) => Record {
            due,
            latency,
            status: None,
            error: Some(ErrorKind::Timeout),
            region: None,
        },
    }
}

async fn h1_connect(
    addr: SocketAddr,
) -> Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

async fn h2_sender(
    spec: &LoadSpec,
    senders: &Mutex<Vec<hyper::client::conn::http2::SendRequest<Empty<Bytes>>>>,
    next: usize,
) -> Option<hyper::client::conn::http2::SendRequest<Empty<Bytes>>> {
    let mut senders = senders.lock().await;
    senders.retain(|s| !s.is_closed());
    if senders.len() < spec.connections.max(1) {
        let stream = TcpStream::connect(spec.addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(conn);
        senders.push(sender);
    }
    let n = senders.len();
    Some(senders[next % n].clone())
}

/// Interns region names so records share one allocation per region.
#[derive(Default)]
struct RegionNames(std::sync::Mutex<Vec<Arc<str>>>);

impl RegionNames {
    fn intern(&self, name: &str) -> Arc<str> {
        let mut names = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = names.iter().find(|n| &***n == name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        names.push(n.clone());
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testbed::region::{Identity, Mode, RegionServer};

    /// Self-test against coordinated omission: an upstream that stalls for 1 s must show the
    /// stall in the reported p99, not just in one request.
    #[tokio::test]
    async fn a_one_second_stall_shows_in_p99() {
        let server = RegionServer::bind(
            "127.0.0.1:0".parse().expect("addr"),
            Identity {
                region: "r".into(),
                endpoint: "r-1".into(),
            },
        )
        .await
        .expect("server");
        let spec = LoadSpec {
            addr: server.addr(),
            host: "stall.test".into(),
            path: "/".into(),
            rate: 200,
            duration: Duration::from_secs(3),
            connections: 4,
            http2: false,
            timeout: Duration::from_secs(10),
            max_requests: 10_000,
        };
        let load = tokio::spawn(async move { run(&spec, None).await });
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // Every request arriving in the next 50 ms takes 1 s: all 4 connections are stuck.
        server.set_mode(Mode::Slow(Duration::from_secs(1)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.set_mode(Mode::Ok);
        let records = load.await.expect("load");
        let summary = crate::report::summarize(&records, Duration::from_secs(3));
        assert_eq!(summary.failed, 0);
        assert!(
            records.len() >= 590,
            "open loop keeps the rate: {} requests",
            records.len()
        );
        // About 200 requests were due during the stall and waited for it: far more than 1%.
        assert!(
            summary.latency.p99_ms >= 800.0,
            "p99 {} ms hides the stall",
            summary.latency.p99_ms
        );
        assert!(
            summary.latency.p50_ms < 100.0,
            "p50 {} ms",
            summary.latency.p50_ms
        );
        let slow = records
            .iter()
            .filter(|r| r.latency >= Duration::from_millis(500))
            .count();
        assert!(slow >= 50, "only {slow} requests show the stall");
    }
}
