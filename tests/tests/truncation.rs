//! A response that breaks after its headers went out reaches the client visibly broken, on
//! every protocol: no byte the upstream did not send, no clean end (HTTP/1.1: no final chunk or
//! short of `Content-Length`, connection closed; HTTP/2 and gRPC: RST_STREAM; upgraded
//! connections: closed). Upstreams here are raw-socket scripts (`gateway_tests::raw`) that cut
//! their answers at exact points; each fault waits for the client to have seen the bytes before
//! it, so nothing depends on timing.

use std::time::Duration;

use bytes::Bytes;
use gateway_tests::client::{self, get, H1};
use gateway_tests::raw::{
    grpc_message, h2_client, h2_exchange, read_until_closed, split_response, End, H2Step,
    H2Upstream, RawUpstream, Signal, Step,
};
use gateway_tests::{eventually, metric, one_region, Gateway, TestPki, DEADLINE};
use testbed::yaml::{Listener, Probe, Protocol, Region};
use tokio::net::TcpStream;

/// Region `fra`: one endpoint at `upstream`, TCP probes every 500 ms.
fn fra(upstream: std::net::SocketAddr) -> Region {
    let probe = Probe::tcp(Duration::from_millis(500), Duration::from_millis(500));
    Region::one("fra-1", upstream).probe(probe)
}

/// A chunked 200 whose first chunk is `hello`.
const CHUNKED_HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n5\r\nhello\r\n";

/// An upstream whose first answer is `first` then `fault` once `go` fires; later requests get
/// a complete `second`.
async fn cut_upstream(first: &'static [u8], go: &Signal, fault: Step) -> RawUpstream {
    let go = go.clone();
    RawUpstream::start(move |n| {
        if n == 0 {
            vec![
                Step::Write(Bytes::from_static(first)),
                Step::WaitFor(go.clone()),
                fault.clone(),
            ]
        } else {
            vec![Step::Write(Bytes::from_static(
                b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond",
            ))]
        }
    })
    .await
}

async fn metrics(gw: &Gateway) -> String {
    let (status, body) = client::get_status(gw.admin, "/metrics")
        .await
        .expect("metrics");
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).into_owned()
}

const GET_DOWNLOAD: &[u8] = b"GET /download HTTP/1.1\r\nHost: app.test\r\n\r\n";

/// A 200 that declares 100 bytes and sends only `hello`.
const HELLO_OF_100: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello";

/// A gateway in front of an upstream that sends `first`, then (once the client has seen `seen`)
/// `fault`; returns what an HTTP/1.1 client got: head, body bytes, how it ended.
async fn cut_after(
    first: &'static [u8],
    seen: &[u8],
    fault: Step,
) -> (Gateway, RawUpstream, String, Vec<u8>, End) {
    let go = Signal::new();
    let up = cut_upstream(first, &go, fault).await;
    let (gw, _) = Gateway::start(&one_region(fra(up.addr())), &[]).await;
    let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let (raw, end) = read_until_closed(&mut tcp, GET_DOWNLOAD, seen, || go.fire(), DEADLINE).await;
    let (head, body) = split_response(&raw);
    (gw, up, head, body, end)
}

/// [`cut_after`] the first chunk of [`CHUNKED_HELLO`].
async fn hello_then(fault: Step) -> (Gateway, RawUpstream, String, Vec<u8>, End) {
    cut_after(CHUNKED_HELLO, b"hello\r\n", fault).await
}

#[tokio::test]
async fn h1_chunked_reset_mid_body_ends_without_final_chunk_and_closes() {
    let (gw, _up, head, body, end) = hello_then(Step::Reset).await;
    assert!(head.starts_with("http/1.1 200"), "head: {head}");
    assert!(head.contains("transfer-encoding: chunked"), "head: {head}");
    assert_eq!(
        String::from_utf8_lossy(&body),
        "5\r\nhello\r\n",
        "exactly the upstream's chunk: no error body, no final chunk"
    );
    assert_ne!(end, End::StillOpen, "the connection must be closed");

    // Counted once as its own cause, by route, region and endpoint.
    let m = metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            "gateway_responses_truncated_total{route=\"app\",region=\"fra\",endpoint=\"fra-1\",cause=\"upstream\"}"
        ),
        1.0,
        "{m}"
    );
    // The gateway and the upstream still serve.
    let mut h1 = H1::connect(gw.addr).await;
    let resp = h1.send(get("app.test", "/again")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, "second");
}

#[tokio::test]
async fn h1_content_length_reset_short_closes_before_the_declared_length() {
    let (_gw, _up, head, body, end) = cut_after(HELLO_OF_100, b"hello", Step::Reset).await;
    assert!(head.starts_with("http/1.1 200"), "head: {head}");
    assert!(head.contains("content-length: 100"), "head: {head}");
    assert_eq!(String::from_utf8_lossy(&body), "hello");
    assert_ne!(end, End::StillOpen, "closed short of Content-Length");
}

#[tokio::test]
async fn h1_upstream_fin_short_of_content_length_is_a_truncation() {
    let (_gw, _up, _, body, end) = cut_after(HELLO_OF_100, b"hello", Step::Close).await;
    assert_eq!(String::from_utf8_lossy(&body), "hello");
    assert_ne!(end, End::StillOpen);
}

#[tokio::test]
async fn h1_bytes_past_content_length_never_reach_a_client() {
    let up = RawUpstream::start(|n| {
        vec![Step::Write(Bytes::from_static(if n == 0 {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond"
        }))]
    })
    .await;
    let (gw, _) = Gateway::start(&one_region(fra(up.addr())), &[]).await;
    let mut h1 = H1::connect(gw.addr).await;
    let first = h1.send(get("app.test", "/1")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, "hello");
    for i in 0..5 {
        let resp = h1.send(get("app.test", &format!("/next{i}"))).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, "second", "request {i} got the extra bytes");
    }
    let mut other = H1::connect(gw.addr).await;
    assert_eq!(other.send(get("app.test", "/other")).await.body, "second");
}

/// The h2 half shared by the h2c and TLS tests: upstream HTTP/1.1 chunked, reset after one
/// chunk; the client's stream must end with RST_STREAM, and the connection's next stream works.
async fn h2_stream_is_reset(client: &mut h2::client::SendRequest<Bytes>, go: &Signal) {
    let req = http::Request::get("http://app.test/download")
        .body(())
        .expect("req");
    let go2 = go.clone();
    let reply = h2_exchange(client, req, None, move |body| {
        if body == b"hello" {
            go2.fire();
        }
    })
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(String::from_utf8_lossy(&reply.body), "hello");
    assert!(reply.trailers.is_none());
    let reason = reply.reset.expect("the stream must end with RST_STREAM");
    assert_ne!(reason, h2::Reason::NO_ERROR);
    // Other streams of the same connection are unharmed.
    let req = http::Request::get("http://app.test/again")
        .body(())
        .expect("req");
    let next = h2_exchange(client, req, None, |_| {}).await;
    assert_eq!(next.status, 200);
    assert_eq!(next.body, b"second");
    assert!(next.reset.is_none() && !next.broken);
}

#[tokio::test]
async fn h2c_client_gets_rst_stream_when_the_upstream_resets_mid_body() {
    let go = Signal::new();
    let up = cut_upstream(CHUNKED_HELLO, &go, Step::Reset).await;
    let (gw, _) = Gateway::start(&one_region(fra(up.addr())), &[]).await;
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let mut client = h2_client(tcp).await;
    h2_stream_is_reset(&mut client, &go).await;
}

#[tokio::test]
async fn tls_h2_client_gets_rst_stream_when_the_upstream_resets_mid_body() {
    let go = Signal::new();
    let up = cut_upstream(CHUNKED_HELLO, &go, Step::Reset).await;
    let pki = TestPki::new(&[&["app.test"]]);
    let certs = [("a.pem", "a.key")];
    let config = one_region(fra(up.addr())).listener(Listener::tls("https", "{tls}", &certs));
    let (_gw, tls_addr) = Gateway::start(&config, &pki.files(&certs)).await;
    let (stream, info) = client::tls_connect(tls_addr, &pki.ca_der, "app.test", &[b"h2"]).await;
    assert_eq!(info.alpn.as_deref(), Some(&b"h2"[..]));
    let mut client = h2_client(stream).await;
    h2_stream_is_reset(&mut client, &go).await;
}

/// gRPC server streaming through the gateway (h2c both sides); the upstream's TCP connection
/// dies after `sent`; the client must get exactly `sent` and then RST_STREAM(INTERNAL_ERROR)
/// (gRPC status INTERNAL), never a clean end or trailers.
async fn grpc_stream_dies_after(sent: Vec<Bytes>) {
    let go = Signal::new();
    let go_up = go.clone();
    let steps = sent.clone();
    let up = H2Upstream::start(100, move |n| {
        let mut s = vec![H2Step::Headers(
            200,
            vec![("content-type", "application/grpc")],
        )];
        if n == 0 {
            s.extend(steps.iter().cloned().map(H2Step::Data));
            s.push(H2Step::WaitFor(go_up.clone()));
            s.push(H2Step::KillConnection);
        } else {
            s.push(H2Step::Data(grpc_message(b"ok")));
            s.push(H2Step::Trailers(vec![("grpc-status", "0")]));
        }
        s
    })
    .await;
    let fra = fra(up.addr()).protocol(Protocol::Http2);
    let (gw, _) = Gateway::start(&one_region(fra), &[]).await;
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let mut client = h2_client(tcp).await;
    let expected: Vec<u8> = sent.iter().flat_map(|b| b.iter().copied()).collect();
    let req = || {
        http::Request::post("http://app.test/pkg.Svc/Stream")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("req")
    };
    let want = expected.clone();
    let go_client = go.clone();
    let reply = h2_exchange(
        &mut client,
        req(),
        Some(grpc_message(b"request")),
        move |body| {
            if body.len() >= want.len() {
                go_client.fire();
            }
        },
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, expected, "only bytes the upstream sent");
    assert!(
        reply.trailers.is_none(),
        "no trailers (no grpc-status) after a broken stream: {:?}",
        reply.trailers
    );
    assert_eq!(
        reply.reset,
        Some(h2::Reason::INTERNAL_ERROR),
        "RST_STREAM(INTERNAL_ERROR) maps to gRPC INTERNAL"
    );
    // A new call works (a new upstream connection).
    let next = h2_exchange(&mut client, req(), Some(grpc_message(b"again")), |_| {}).await;
    assert_eq!(next.body, grpc_message(b"ok"));
    let trailers = next.trailers.expect("trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
}

#[tokio::test]
async fn grpc_upstream_dies_between_two_messages() {
    grpc_stream_dies_after(vec![grpc_message(b"message one")]).await;
}

#[tokio::test]
async fn grpc_upstream_dies_in_the_middle_of_a_message() {
    let second = grpc_message(b"message two, which never completes");
    grpc_stream_dies_after(vec![grpc_message(b"message one"), second.slice(..12)]).await;
}

#[tokio::test]
async fn websocket_upstream_reset_after_101_closes_the_client_and_writes_nothing() {
    let frame: &[u8] = &[0x81, 0x02, b'h', b'i'];
    let mut first = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n".to_vec();
    first.extend_from_slice(frame);
    let go = Signal::new();
    let up = cut_upstream(first.leak(), &go, Step::Reset).await;
    let (gw, _) = Gateway::start(&one_region(fra(up.addr())), &[]).await;
    let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let request = b"GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let (raw, end) = read_until_closed(&mut tcp, request, frame, || go.fire(), DEADLINE).await;
    let (head, body) = split_response(&raw);
    assert!(head.starts_with("http/1.1 101"), "head: {head}");
    assert_eq!(body, frame, "nothing but the upstream's frame");
    assert_ne!(end, End::StillOpen, "the client side must be closed");
}

#[tokio::test]
async fn client_gone_mid_response_closes_the_upstream_connection_and_ejects_nothing() {
    let up = RawUpstream::start(move |n| {
        if n < 3 {
            let mut steps = vec![
                Step::Write(Bytes::from_static(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\nstart",
                )),
                // The client leaves now; whichever comes first, the outcome is the same.
                Step::Pause(Duration::from_millis(300)),
            ];
            // Keep sending after the client left, until the gateway gives the connection up.
            steps.extend((0..256).map(|_| Step::Write(Bytes::from(vec![b'x'; 64 * 1024]))));
            steps
        } else {
            vec![Step::Write(Bytes::from_static(
                b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond",
            ))]
        }
    })
    .await;
    // One failure would eject the endpoint if client aborts counted against it.
    let fra = fra(up.addr()).passive(1, Duration::from_secs(30), Duration::from_secs(60));
    let (gw, _) = Gateway::start(&one_region(fra), &[]).await;
    for i in 0..3 {
        let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
        let (raw, _) = read_until_closed(
            &mut tcp,
            GET_DOWNLOAD,
            b"start",
            || {},
            Duration::from_millis(1),
        )
        .await;
        assert!(
            raw.starts_with(b"HTTP/1.1 200"),
            "{i}: {:?}\n{}",
            String::from_utf8_lossy(&raw),
            gw.stderr()
        );
        drop(tcp);
        eventually(
            &format!("upstream connection {i} closed by the gateway"),
            || {
                let done = up.closed_by_peer() > i;
                async move { done }
            },
        )
        .await;
    }
    assert_eq!(up.requests(), 3, "client aborts are never retried");
    let mut h1 = H1::connect(gw.addr).await;
    let resp = h1.send(get("app.test", "/after")).await;
    assert_eq!(
        resp.status, 200,
        "the endpoint was not ejected: {:?}",
        resp.body
    );
    assert_eq!(resp.body, "second");
    let m = metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            "gateway_responses_truncated_total{route=\"app\",region=\"fra\",endpoint=\"fra-1\",cause=\"client\"}"
        ),
        3.0,
        "{m}"
    );
}

#[tokio::test]
async fn h1_malformed_upstream_chunk_is_a_truncation() {
    let (_gw, _up, head, body, end) = hello_then(Step::Write(Bytes::from_static(
        b"zz-not-a-chunk-size\r\nevil\r\n",
    )))
    .await;
    assert!(head.starts_with("http/1.1 200"), "head: {head}");
    assert_eq!(
        String::from_utf8_lossy(&body),
        "5\r\nhello\r\n",
        "nothing after the last good chunk"
    );
    assert_ne!(end, End::StillOpen, "the connection must be closed");
}
