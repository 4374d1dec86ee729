//! Hostile clients (issues 11 and 19): nothing a client does to its own request is counted
//! against the upstream. Each way a client can make a request fail is repeated far more often
//! than `passive.consecutive_failures` (3) against a region of ONE endpoint whose route rejects
//! when it is down, so a single counted failure shows in `gateway_passive_failures_total` and
//! an ejection would answer 503 to everyone.

use std::time::Duration;

use bytes::Bytes;
use gateway_tests::client::{get, H1};
use gateway_tests::{config, eventually, region, Gateway, RegionServer};
use testbed::yaml::{Probe, Region, Route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// More than `consecutive_failures` (3) several times over.
const REPEAT: usize = 12;

async fn start() -> (Gateway, RegionServer) {
    let fra = region("fra", "fra-1").await;
    let yaml = config()
        .region(
            "fra",
            Region::of(std::slice::from_ref(&fra)).probe(Probe::http(
                "/healthz",
                Duration::from_millis(500),
                Duration::from_millis(400),
            )),
        )
        .route(Route::new("app", &["fra"]).reject_when_all_down());
    let (gw, _) = Gateway::start(&yaml, &[]).await;
    (gw, fra)
}

/// Nothing was counted against fra-1, it is not ejected, and another client is served.
async fn assert_nothing_counted(gw: &Gateway, what: &str) {
    let (_, metrics) = gw.admin_call("GET", "/metrics", None).await;
    let counted: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("gateway_passive_failures_total{"))
        .filter(|l| !l.ends_with(" 0"))
        .collect();
    assert!(
        counted.is_empty(),
        "{what}: counted against the upstream: {counted:?}\n{}",
        gw.stderr_plain()
    );
    let s = gw.status(None).await;
    let endpoint = &s["regions"][0]["endpoints"][0];
    assert!(endpoint["ejected_for_ms"].is_null(), "{what}: ejected: {s}");
    let resp = H1::connect(gw.addr).await.send(get("a", "/after")).await;
    assert_eq!(
        resp.status,
        200,
        "{what}: another client is not served: {}",
        String::from_utf8_lossy(&resp.body)
    );
}

/// A raw client connection that has sent `head`.
async fn raw(gw: &Gateway, head: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
    tcp.write_all(head).await.expect("write");
    tcp
}

/// Reads what the gateway answers until it closes or `limit` passes (the status line, if any).
async fn answer(tcp: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Waits until fra has seen `n` more requests than `before`.
async fn reached(fra: &RegionServer, before: u64, n: u64) {
    eventually("the request reached the upstream", || {
        let seen = fra.requests();
        async move { seen >= before + n }
    })
    .await;
}

#[tokio::test]
async fn aborted_uploads_eject_nothing() {
    let (gw, fra) = start().await;
    for i in 0..REPEAT {
        let before = fra.requests();
        let tcp = raw(
            &gw,
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nfirst bytes",
        )
        .await;
        reached(&fra, before, 1).await;
        drop(tcp);
        // Let the gateway notice before the next one.
        tokio::time::sleep(Duration::from_millis(20 + i as u64)).await;
    }
    assert_nothing_counted(&gw, "aborted uploads").await;
}

#[tokio::test]
async fn broken_chunked_bodies_get_400_and_eject_nothing() {
    let (gw, _fra) = start().await;
    for _ in 0..REPEAT {
        let mut tcp = raw(
            &gw,
            b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n",
        )
        .await;
        let status = answer(&mut tcp).await;
        assert!(
            status.is_empty() || status.starts_with("HTTP/1.1 400"),
            "a broken chunk size got: {status}"
        );
    }
    assert_nothing_counted(&gw, "broken chunked bodies").await;
}

#[tokio::test]
async fn aborted_downloads_eject_nothing() {
    let (gw, _fra) = start().await;
    for _ in 0..REPEAT {
        let mut tcp = raw(&gw, b"GET /stream/50000000 HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < 64 * 1024 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        assert!(got > 0, "the download started");
        drop(tcp);
    }
    assert_nothing_counted(&gw, "aborted downloads").await;
}

#[tokio::test]
async fn clients_leaving_before_the_answer_eject_nothing() {
    let (gw, fra) = start().await;
    for _ in 0..REPEAT {
        let before = fra.requests();
        let tcp = raw(&gw, b"GET /slow/300 HTTP/1.1\r\nHost: a\r\n\r\n").await;
        reached(&fra, before, 1).await;
        drop(tcp);
    }
    // The slow answers arrive after their clients left.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_nothing_counted(&gw, "clients leaving early").await;
}

#[tokio::test]
async fn http2_streams_reset_by_the_client_eject_nothing() {
    let (gw, fra) = start().await;
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let mut h2 = gateway_tests::raw::h2_client(tcp).await;
    for _ in 0..REPEAT {
        // A download reset after its first bytes.
        let req = http::Request::get("http://a/stream/50000000")
            .body(())
            .expect("request");
        let (resp, _) = h2.send_request(req, true).expect("send");
        let mut body = resp.await.expect("response").into_body();
        let first = body.data().await.expect("first bytes").expect("data");
        assert!(!first.is_empty());
        drop(body);
        // An upload reset halfway.
        let before = fra.requests();
        let req = http::Request::post("http://a/upload")
            .header("content-length", "100000")
            .body(())
            .expect("request");
        let (resp, mut send) = h2.send_request(req, false).expect("send");
        send.send_data(Bytes::from_static(b"first bytes"), false)
            .expect("data");
        reached(&fra, before, 1).await;
        send.send_reset(h2::Reason::CANCEL);
        drop(resp);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_nothing_counted(&gw, "reset HTTP/2 streams").await;
}

/// Opens `n` upstream connections in waves of 25 (held by slow requests, then pooled), so
/// that `n` requests at once reuse them instead of connecting all at once.
async fn pool_upstream_connections(gw: &Gateway, fra: &RegionServer, n: usize) {
    let before = fra.requests();
    let mut held = Vec::new();
    for wave in 0..n / 25 {
        for _ in 0..25 {
            let addr = gw.addr;
            held.push(tokio::spawn(async move {
                H1::connect(addr)
                    .await
                    .send(get("a", "/slow/1500"))
                    .await
                    .status
            }));
        }
        reached(fra, before, 25 * (wave as u64 + 1)).await;
    }
    for h in held {
        assert_eq!(h.await.expect("held"), 200);
    }
}

#[tokio::test]
async fn a_burst_of_aborts_at_once_ejects_nothing() {
    let (gw, fra) = start().await;
    // The aborts reuse pooled connections: this is about the aborts, not a connect burst (see
    // the next test).
    pool_upstream_connections(&gw, &fra, 200).await;
    let clients: Vec<_> = (0..200)
        .map(|_| {
            let addr = gw.addr;
            tokio::spawn(async move {
                let mut tcp = TcpStream::connect(addr).await.expect("connect");
                tcp.write_all(b"GET /stream/10000000 HTTP/1.1\r\nHost: a\r\n\r\n")
                    .await
                    .expect("write");
                let mut buf = [0u8; 1024];
                let _ = tcp.read(&mut buf).await;
                tcp
            })
        })
        .collect();
    let mut open = Vec::new();
    for c in clients {
        open.push(c.await.expect("client"));
    }
    // All leave at the same moment.
    drop(open);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_nothing_counted(&gw, "a burst of 200 aborts").await;
}

#[tokio::test]
async fn a_connect_burst_is_one_slow_moment_and_ejects_nothing() {
    let (gw, _fra) = start().await;
    // 200 requests at once on a fresh gateway: 200 connects at once to an endpoint whose
    // listen backlog is 128 (std's default) and whose accept loop shares this test's thread.
    // Connects that time out together are one observation of one slow moment.
    let clients: Vec<_> = (0..200)
        .map(|_| {
            let addr = gw.addr;
            tokio::spawn(async move {
                let mut c = H1::connect(addr).await;
                c.try_send(get("a", "/x")).await.map(|r| r.status)
            })
        })
        .collect();
    for c in clients {
        let _ = c.await.expect("client");
    }
    let s = gw.status(None).await;
    let endpoint = &s["regions"][0]["endpoints"][0];
    assert!(endpoint["ejected_for_ms"].is_null(), "ejected: {s}");
    let resp = H1::connect(gw.addr).await.send(get("a", "/after")).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
}
