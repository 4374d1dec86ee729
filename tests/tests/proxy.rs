//! Proxy behaviour end to end: protocols, headers, routing and error paths, through a real
//! gateway process to real upstream servers.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gateway_tests::client::{self, full, get, H1, H2};
use gateway_tests::{config, one_region, region, Gateway, Mode, RegionServer, Template, TestPki};
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use testbed::yaml::{GatewayYaml, Listener, Probe, Protocol, Region, Route};

/// Regions fra and ber, one endpoint each, probed by `probe` (none: the gateway's default);
/// routes `first`, then `app` over fra and ber.
fn two_region_config(
    fra: std::net::SocketAddr,
    ber: std::net::SocketAddr,
    probe: Option<Probe>,
    first: &[Route],
) -> GatewayYaml {
    let region = |id, addr| {
        let region = Region::one(id, addr);
        match &probe {
            Some(probe) => region.probe(probe.clone()),
            None => region,
        }
    };
    first
        .iter()
        .cloned()
        .fold(config(), GatewayYaml::route)
        .region("fra", region("fra-1", fra))
        .region("ber", region("ber-1", ber))
        .route(Route::new("app", &["fra", "ber"]))
}

/// TCP probes far apart (every hour).
fn rare_probes() -> Probe {
    Probe::tcp(Duration::from_secs(3600), Duration::from_secs(1))
}

#[tokio::test]
async fn http1_keepalive_proxy_headers_and_request_id() {
    let fra = region("fra", "fra-1").await;
    let ber = region("ber", "ber-1").await;
    let (gw, _) = Gateway::start(&two_region_config(fra.addr(), ber.addr(), None, &[]), &[]).await;

    let mut conn = H1::connect(gw.addr).await;
    let req = Request::get("/hello?x=1")
        .header("host", "app.example:8080")
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers, deflate")
        .header("x-request-id", "given-id-123")
        .body(client::empty())
        .expect("request");
    let first = conn.send(req).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-region"), Some("fra"));
    assert_eq!(first.header("x-request-id"), Some("given-id-123"));
    let echo = first.json();
    let h = &echo["headers"];
    assert_eq!(echo["path"], "/hello?x=1");
    // The client is no trusted proxy (none are configured): its own X-Forwarded-For is
    // replaced, not appended to (tests/tests/hostile.rs has the trusted case).
    assert_eq!(h["x-forwarded-for"][0], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert_eq!(h["x-forwarded-host"][0], "app.example:8080");
    assert_eq!(h["host"][0], "app.example:8080");
    assert_eq!(h["x-request-id"][0], "given-id-123");
    // `TE` is hop-by-hop, but `trailers` in it is passed on (gRPC servers require it).
    assert_eq!(h["te"][0], "trailers");
    for hop in ["x-hop", "keep-alive", "proxy-connection"] {
        assert!(
            h.get(hop).is_none(),
            "hop-by-hop header {hop} was forwarded: {h}"
        );
    }

    // Second request on the same client connection: keep-alive works, a request id is generated.
    assert!(conn.is_open());
    let second = conn.send(get("app.example", "/again")).await;
    assert_eq!(second.status, 200);
    let generated = second
        .header("x-request-id")
        .expect("generated id")
        .to_string();
    assert_eq!(generated.len(), 32, "{generated}");
    assert!(
        generated
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{generated}"
    );
    assert_eq!(
        second.json()["headers"]["x-request-id"][0],
        generated.as_str()
    );
    assert_eq!(second.json()["headers"]["x-forwarded-for"][0], "127.0.0.1");
}

#[tokio::test]
async fn a_connection_idle_past_the_grace_second_serves_its_next_requests_in_full() {
    // After a second without a request a plaintext connection gives back its read and write
    // buffers (vendor patches 10 and 17); the next requests get them back.
    let fra = region("fra", "fra-1").await;
    let (gw, _) = Gateway::start(&one_region(Region::one("fra-1", fra.addr())), &[]).await;
    let mut conn = H1::connect(gw.addr).await;
    assert_eq!(conn.send(get("app.test", "/first")).await.status, 200);
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let resp = conn.send(get("app.test", "/stream/300000")).await;
        assert_eq!(resp.status, 200, "round {round}");
        assert_eq!(resp.body.len(), 300_000, "round {round}");
        let small = conn.send(get("app.test", "/again")).await;
        assert_eq!(small.status, 200, "round {round}");
        assert_eq!(small.json()["path"], "/again");
    }
    assert!(conn.is_open());
}

/// A gateway over one region with a TLS listener for `a.test` besides its plaintext one: the
/// region, the test PKI, the gateway and the TLS listener's address.
async fn tls_gateway_for_a_test() -> (RegionServer, TestPki, Gateway, std::net::SocketAddr) {
    let fra = region("fra", "fra-1").await;
    let pki = TestPki::new(&[&["a.test"]]);
    let certs = [("a.pem", "a.key")];
    let config = one_region(Region::one("fra-1", fra.addr()))
        .listener(Listener::tls("https", "{tls}", &certs));
    let (gw, tls_addr) = Gateway::start(&config, &pki.files(&certs)).await;
    (fra, pki, gw, tls_addr)
}

#[tokio::test]
async fn a_tls_connection_parked_without_its_read_buffer_serves_its_next_requests_in_full() {
    // A TLS HTTP/1.1 connection idle past its grace second is parked and gives back its
    // listener's 16 KiB L4 read buffer (vendor patch 27); speaking again gets it back: an
    // upload and a download larger than that buffer, then a small request, pass whole.
    let (_fra, pki, gw, tls_addr) = tls_gateway_for_a_test().await;
    let (mut conn, _) = client::h1_tls(tls_addr, &pki.ca_der, "a.test").await;
    assert_eq!(conn.send(get("a.test", "/first")).await.status, 200);
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for round in 0..2 {
        gateway_tests::eventually("the TLS connection is parked", || async {
            gw.status(None).await["admission"]["parked"] == 1
        })
        .await;
        let upload = Request::post("/upload")
            .header("host", "a.test")
            .body(full(body.clone()))
            .expect("request");
        let resp = conn.send(upload).await;
        assert_eq!(resp.status, 200, "round {round}");
        assert_eq!(resp.json()["body_bytes"], 100_000, "round {round}");
        let resp = conn.send(get("a.test", "/stream/300000")).await;
        assert_eq!(resp.status, 200, "round {round}");
        assert_eq!(resp.body.len(), 300_000, "round {round}");
        let small = conn.send(get("a.test", "/again")).await;
        assert_eq!(small.json()["path"], "/again", "round {round}");
    }
}

#[tokio::test]
async fn chunked_upload_and_large_streamed_download() {
    let fra = region("fra", "fra-1").await;
    let ber = region("ber", "ber-1").await;
    // Bodies above the default `max_body_bytes` (1 MiB) need a route that allows them.
    let uploads = Route::new("uploads", &["fra", "ber"])
        .path_prefix("/upload")
        .max_body_bytes(16 * 1024 * 1024);
    let config = two_region_config(fra.addr(), ber.addr(), None, &[uploads]);
    let (gw, _) = Gateway::start(&config, &[]).await;

    // 8 MiB upload in 64 KiB chunks without Content-Length: chunked transfer encoding.
    let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let mut all = Vec::new();
    for _ in 0..128 {
        all.extend_from_slice(&chunk);
    }
    let frames =
        (0..128).map(move |_| Ok::<_, std::io::Error>(Frame::data(Bytes::from(chunk.clone()))));
    let body = BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)));
    let req = Request::post("/upload")
        .header("host", "a")
        .body(body)
        .expect("request");
    let mut conn = H1::connect(gw.addr).await;
    let resp = conn.send(req).await;
    assert_eq!(resp.status, 200);
    let echo = resp.json();
    assert_eq!(echo["body_bytes"], 8 * 1024 * 1024);
    assert_eq!(echo["body_checksum"], testbed::region::body_checksum(&all));
    assert_eq!(echo["headers"]["transfer-encoding"][0], "chunked");

    // 32 MiB download, streamed by the upstream in chunks.
    let resp = conn.send(get("a", "/stream/33554432")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), 33_554_432);
    assert!(resp.body.iter().all(|b| *b == b'x'));
}

#[tokio::test]
async fn h2c_prior_knowledge_and_h2_to_upstream() {
    let fra = region("fra", "fra-1").await;
    let ber = region("ber", "ber-1").await;
    let config = config()
        .region(
            "fra",
            Region::one("fra-1", fra.addr()).protocol(Protocol::Http2),
        )
        .region("ber", Region::one("ber-1", ber.addr()))
        .route(Route::new("h2up", &["fra"]).path_prefix("/h2/"))
        .route(Route::new("h1up", &["ber"]));
    let (gw, _) = Gateway::start(&config, &[]).await;
    let mut h2 = H2::connect_h2c(gw.addr).await;
    let req = Request::get(format!("http://{}/plain", gw.addr))
        .body(client::empty())
        .expect("req");
    let resp = h2.send(req).await;
    assert_eq!(resp.version, http::Version::HTTP_2);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["region"], "ber");
    assert_eq!(resp.json()["version"], "HTTP/1.1");

    // h2c downstream, h2c upstream.
    let req = Request::get(format!("http://{}/h2/x", gw.addr))
        .body(client::empty())
        .expect("req");
    let resp = h2.send(req).await;
    assert_eq!(resp.json()["region"], "fra");
    assert_eq!(resp.json()["version"], "HTTP/2.0");

    // HTTP/1.1 downstream, h2c upstream.
    let mut h1 = H1::connect(gw.addr).await;
    let resp = h1.send(get("a", "/h2/y")).await;
    assert_eq!(resp.version, http::Version::HTTP_11);
    assert_eq!(resp.json()["version"], "HTTP/2.0");
}

#[tokio::test]
async fn tls_sni_picks_certificates_and_alpn_negotiates_h2() {
    let fra = region("fra", "fra-1").await;
    let pki = TestPki::new(&[&["a.test", "*.a.test"], &["b.test"]]);
    let certs = [("a.pem", "a.key"), ("b.pem", "b.key")];
    let config = one_region(Region::one("fra-1", fra.addr()))
        .listener(Listener::tls("https", "{tls}", &certs).default_cert(1));
    let (_gw, tls_addr) = Gateway::start(&config, &pki.files(&certs)).await;

    let (mut h2, info) = client::h2_tls(tls_addr, &pki.ca_der, "a.test").await;
    assert_eq!(info.peer_cert, pki.leaves[0].der);
    assert_eq!(info.alpn.as_deref(), Some(&b"h2"[..]));
    let resp = h2
        .send(
            Request::get("https://a.test/sni")
                .body(client::empty())
                .expect("req"),
        )
        .await;
    assert_eq!(resp.version, http::Version::HTTP_2);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["headers"]["x-forwarded-proto"][0], "https");
    assert_eq!(resp.json()["headers"]["x-forwarded-host"][0], "a.test");

    let (_, info) = client::h2_tls(tls_addr, &pki.ca_der, "b.test").await;
    assert_eq!(info.peer_cert, pki.leaves[1].der);
    let (_, info) = client::h2_tls(tls_addr, &pki.ca_der, "www.a.test").await;
    assert_eq!(
        info.peer_cert, pki.leaves[0].der,
        "wildcard name selects certificate a"
    );
    // Unknown name and no SNI at all (IP address): the default certificate (b).
    let (_, info) = client::tls_connect_any(tls_addr, "unknown.test").await;
    assert_eq!(info.peer_cert, pki.leaves[1].der);
    let (_, info) = client::tls_connect(tls_addr, &pki.ca_der, "b.test", &[b"h2"]).await;
    assert_eq!(info.peer_cert, pki.leaves[1].der);
    let no_sni = rustls_no_sni_cert(tls_addr).await;
    assert_eq!(no_sni, pki.leaves[1].der);

    // HTTP/1.1 over TLS when the client offers only http/1.1.
    let (mut h1, info) = client::h1_tls(tls_addr, &pki.ca_der, "a.test").await;
    assert_eq!(info.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let resp = h1.send(get("a.test", "/h1")).await;
    assert_eq!(resp.version, http::Version::HTTP_11);
    assert_eq!(resp.status, 200);
}

/// Many HTTP/2 streams answered at the same moment share the connection's writes (vendor
/// patch 31 gathers them): each still gets its own answer, complete, small ones and downloads
/// larger than the gathering limit alike, over h2c and over TLS.
#[tokio::test]
async fn many_http2_streams_answered_at_once_each_get_their_own_complete_answer() {
    let (_fra, pki, gw, tls_addr) = tls_gateway_for_a_test().await;
    let h2c = H2::connect_h2c(gw.addr).await;
    let (tls, _) = client::h2_tls(tls_addr, &pki.ca_der, "a.test").await;
    for (name, conn, scheme) in [("h2c", h2c, "http"), ("tls", tls, "https")] {
        let calls: Vec<_> = (0..96usize)
            .map(|i| {
                let mut conn = conn.clone();
                let uri = if i % 16 == 0 {
                    format!("{scheme}://a.test/stream/{}", 200_000 + i)
                } else {
                    format!("{scheme}://a.test/echo/{i}")
                };
                let req = Request::get(uri).body(client::empty()).expect("req");
                tokio::spawn(async move { (i, conn.send(req).await) })
            })
            .collect();
        for call in calls {
            let (i, resp) = call.await.expect("call");
            assert_eq!(resp.status, 200, "{name} stream {i}");
            if i % 16 == 0 {
                assert_eq!(
                    resp.body.len(),
                    200_000 + i,
                    "{name} stream {i}: the whole download"
                );
                assert!(
                    resp.body.iter().all(|&b| b == b'x'),
                    "{name} stream {i}: only its own bytes"
                );
            } else {
                assert_eq!(
                    resp.json()["path"],
                    format!("/echo/{i}"),
                    "{name} stream {i}: its own answer"
                );
            }
        }
    }
}

/// The certificate a server presents to a client that sends no SNI (connecting by IP).
async fn rustls_no_sni_cert(
    addr: std::net::SocketAddr,
) -> rustls_pki_types::CertificateDer<'static> {
    client::tls_connect_any(addr, &addr.ip().to_string())
        .await
        .1
        .peer_cert
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let fra = region("fra", "fra-1").await;
    let ber = region("ber", "ber-1").await;
    let (gw, _) = Gateway::start(&two_region_config(fra.addr(), ber.addr(), None, &[]), &[]).await;
    let stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{}/ws", gw.addr), stream)
        .await
        .expect("websocket handshake through the gateway");
    assert_eq!(resp.status(), 101);
    let hello = ws.next().await.expect("message").expect("ok");
    assert_eq!(hello.to_text().expect("text"), "hello from fra-1");
    for i in 0..20 {
        ws.send(format!("ping {i}").into()).await.expect("send");
        let echo = ws.next().await.expect("message").expect("ok");
        assert_eq!(echo.to_text().expect("text"), format!("ping {i}"));
    }
    ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        0u8, 1, 2, 255,
    ]))
    .await
    .expect("send");
    assert_eq!(
        ws.next()
            .await
            .expect("message")
            .expect("ok")
            .into_data()
            .as_ref(),
        &[0u8, 1, 2, 255]
    );
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn grpc_trailers_pass_through_h2c_and_tls() {
    let fra = region("fra", "fra-1").await;
    let pki = TestPki::new(&[&["grpc.test"]]);
    let certs = [("c.pem", "c.key")];
    let config = config()
        .listener(Listener::tls("https", "{tls}", &certs))
        .region(
            "fra",
            Region::one("fra-1", fra.addr()).protocol(Protocol::Http2),
        )
        .route(Route::new("grpc", &["fra"]));
    let (gw, tls_addr) = Gateway::start(&config, &pki.files(&certs)).await;

    let grpc_request = |uri: String| {
        // A gRPC frame: compressed flag, 4-byte length, payload.
        let mut msg = vec![0u8, 0, 0, 0, 5];
        msg.extend_from_slice(b"hello");
        Request::post(uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(full(msg))
            .expect("request")
    };
    let check = |resp: client::Collected| {
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some("application/grpc"));
        assert_eq!(&resp.body[5..], b"hello");
        let trailers = resp.trailers.expect("trailers reach the client");
        assert_eq!(
            trailers.get("grpc-status").and_then(|v| v.to_str().ok()),
            Some("0")
        );
        assert_eq!(
            trailers.get("grpc-message").and_then(|v| v.to_str().ok()),
            Some("ok")
        );
        assert_eq!(
            trailers
                .get("x-trailer-endpoint")
                .and_then(|v| v.to_str().ok()),
            Some("fra-1")
        );
    };
    let mut h2c = H2::connect_h2c(gw.addr).await;
    check(
        h2c.send(grpc_request(format!("http://{}/grpc", gw.addr)))
            .await,
    );
    let (mut h2, _) = client::h2_tls(tls_addr, &pki.ca_der, "grpc.test").await;
    check(h2.send(grpc_request("https://grpc.test/grpc".into())).await);
}

#[tokio::test]
async fn routing_precedence_and_404() {
    let names = [
        "exact",
        "exact-v1",
        "wild",
        "wild-deep",
        "any",
        "any-static",
    ];
    let mut servers = Vec::new();
    for n in names {
        servers.push(region(n, &format!("{n}-1")).await);
    }
    let config = names
        .iter()
        .zip(&servers)
        .fold(config(), |c, (n, s)| {
            c.region(n, Region::one(&format!("{n}-1"), s.addr()))
        })
        .route(Route::new("exact", &["exact"]).host("api.example.com"))
        .route(
            Route::new("exact-v1", &["exact-v1"])
                .host("api.example.com")
                .path_prefix("/v1/"),
        )
        .route(Route::new("wild", &["wild"]).host("*.example.com"))
        .route(Route::new("wild-deep", &["wild-deep"]).host("*.eu.example.com"))
        .route(Route::new("any-static", &["any-static"]).path_prefix("/static/"))
        .route(
            Route::new("only-host", &["any"])
                .host("only.example.org")
                .path_prefix("/app/"),
        );
    let (gw, _) = Gateway::start(&config, &[]).await;
    let mut c = H1::connect(gw.addr).await;
    let cases = [
        ("api.example.com", "/", "exact"),
        ("API.example.com:8080", "/v1/users", "exact-v1"),
        ("api.example.com", "/v10", "exact"),
        ("www.example.com", "/v1/users", "wild"),
        ("x.eu.example.com", "/", "wild-deep"),
        ("other.org", "/static/app.js", "any-static"),
        ("only.example.org", "/app/x", "any"),
    ];
    for (host, path, want) in cases {
        let resp = c.send(get(host, path)).await;
        assert_eq!(resp.status, 200, "{host}{path}");
        assert_eq!(resp.header("x-region"), Some(want), "{host}{path}");
    }
    // No route: 404 with a short JSON body naming host and path.
    let resp = c.send(get("only.example.org", "/other")).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json()["error"], "no route");
    assert_eq!(resp.json()["path"], "/other");
    assert!(resp.header("x-request-id").is_some());
}

#[tokio::test]
async fn errors_502_when_upstreams_fail_and_504_on_timeout() {
    let fra = region("fra", "fra-1").await;
    let ber = region("ber", "ber-1").await;
    let slow = Route::new("slow", &["fra"])
        .path_prefix("/slow/")
        .request_timeout(Duration::from_millis(300));
    // Probes far apart, so that health (tested elsewhere) does not turn the 502 into a 503.
    let config = two_region_config(fra.addr(), ber.addr(), Some(rare_probes()), &[slow]).template();
    assert!(config.contains("interval: 1h"));
    let (gw, _) = Gateway::start(&config, &[]).await;
    let mut c = H1::connect(gw.addr).await;

    // Slower than the route's request timeout: 504, well before the upstream would answer.
    let started = std::time::Instant::now();
    let resp = c.send(get("a", "/slow/20000")).await;
    assert_eq!(resp.status, 504, "{:?}", resp.body);
    assert_eq!(resp.json()["error"], "upstream timeout");
    assert_eq!(resp.json()["route"], "slow");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the client was not left hanging"
    );

    // Primary refuses: the retry moves to the other region, no error.
    fra.set_mode(Mode::Refuse);
    let mut c = H1::connect(gw.addr).await;
    let resp = c.send(get("a", "/x")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-region"), Some("ber"));

    // Every endpoint refuses: 502 with a short JSON body.
    ber.set_mode(Mode::Refuse);
    let resp = c.send(get("a", "/x")).await;
    assert_eq!(resp.status, 502);
    assert_eq!(resp.json()["error"], "upstream failed");
    assert_eq!(resp.json()["route"], "app");
}

/// Sends raw bytes on a fresh connection and reads until the gateway closes it.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(gateway_tests::DEADLINE, s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the gateway left the connection hanging after {bytes:?}"
    );
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn malformed_requests_get_400_and_the_gateway_stays_up() {
    let fra = region("fra", "fra-1").await;
    let ber = region("ber", "ber-1").await;
    let (mut gw, _) =
        Gateway::start(&two_region_config(fra.addr(), ber.addr(), None, &[]), &[]).await;
    let garbage: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: a\r\nbad header line\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",
    ];
    for bytes in garbage {
        let answer = raw_exchange(gw.addr, bytes).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{bytes:?} got: {answer}"
        );
    }
    assert!(gw.is_running());
    let mut c = H1::connect(gw.addr).await;
    assert_eq!(c.send(get("a", "/")).await.status, 200);
}

#[tokio::test]
async fn short_http10_request_is_answered() {
    // Shorter than the 24-byte h2c preface that plaintext listeners sniff for.
    let fra = region("fra", "fra-1").await;
    let ber = region("ber", "ber-1").await;
    let (gw, _) = Gateway::start(&two_region_config(fra.addr(), ber.addr(), None, &[]), &[]).await;
    let answer = raw_exchange(gw.addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "{answer}"
    );
    assert!(answer.contains("\"region\":\"fra\""), "{answer}");
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let fra = region("fra", "fra-1").await;
    let ber = region("ber", "ber-1").await;
    // Probes far apart so that their connections do not count.
    let config = two_region_config(fra.addr(), ber.addr(), Some(rare_probes()), &[]);
    let (gw, _) = Gateway::start(&config, &[]).await;
    let before = fra.connections();
    let mut c = H1::connect(gw.addr).await;
    for _ in 0..200 {
        assert_eq!(c.send(get("a", "/reuse")).await.status, 200);
    }
    let opened = fra.connections() - before;
    // One connection per gateway worker thread at most, give or take a pool race.
    assert!(
        opened <= 4,
        "{opened} upstream connections for 200 sequential requests: keep-alive is not working"
    );
}

/// Sockets of this network namespace in `CLOSE_WAIT` (the peer closed, this side did not yet)
/// whose remote end is `addr` (IPv4).
fn close_wait_to(addr: std::net::SocketAddr) -> usize {
    let std::net::SocketAddr::V4(v4) = addr else {
        return 0;
    };
    let remote = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    );
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(2) == Some(&remote.as_str()) && f.get(3) == Some(&"08")
        })
        .count()
}

#[tokio::test]
async fn idle_pooled_upstream_connections_are_closed_when_expired_or_closed_by_the_server() {
    use gateway_tests::raw::{RawUpstream, Step};
    use testbed::yaml::{Dur, Timeouts};
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    // `kept` keeps its connections open; `closing` closes each one after its answer.
    let kept = RawUpstream::start(|_| vec![Step::Write(Bytes::from_static(OK))]).await;
    let closing =
        RawUpstream::start(|_| vec![Step::Write(Bytes::from_static(OK)), Step::Close]).await;
    let mut idle_1s = Route::new("kept", &["kept"]).host("kept.test");
    idle_1s.timeouts = Some(Timeouts {
        connect: None,
        request: None,
        idle: Some(Dur(Duration::from_secs(1))),
    });
    let config = config()
        .region(
            "kept",
            Region::one("kept-1", kept.addr()).probe(rare_probes()),
        )
        .region(
            "closing",
            Region::one("closing-1", closing.addr()).probe(rare_probes()),
        )
        .route(idle_1s)
        .route(Route::new("closing", &["closing"]).host("closing.test"));
    let (gw, _) = Gateway::start(&config, &[]).await;
    let mut c = H1::connect(gw.addr).await;
    assert_eq!(c.send(get("kept.test", "/")).await.status, 200);
    assert_eq!(c.send(get("closing.test", "/")).await.status, 200);
    // Nothing uses either pooled connection again: the gateway closes the one idle past
    // `timeouts.idle`, and its side of the one the server closed.
    gateway_tests::eventually("the gateway closes the expired idle connection", || async {
        kept.closed_by_peer() == 1
    })
    .await;
    gateway_tests::eventually("no gateway socket left in CLOSE_WAIT", || async {
        close_wait_to(closing.addr()) == 0
    })
    .await;
    assert_eq!(closing.requests(), 1);
}

#[tokio::test]
async fn concurrent_calls_share_http2_upstream_connections() {
    use gateway_tests::raw::{grpc_message, h2_client, h2_exchange, H2Step, H2Upstream};
    let up = H2Upstream::start(100, |_| {
        vec![
            H2Step::Headers(200, vec![("content-type", "application/grpc")]),
            H2Step::Pause(Duration::from_millis(300)),
            H2Step::Data(grpc_message(b"ok")),
            H2Step::Trailers(vec![("grpc-status", "0")]),
        ]
    })
    .await;
    let config = one_region(Region::one("fra-1", up.addr()).protocol(Protocol::Http2));
    let (gw, _) = Gateway::start(&config, &[]).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let client = h2_client(tcp).await;
    let call = |mut c: h2::client::SendRequest<Bytes>| async move {
        let req = Request::post("http://app.test/pkg.Svc/Call")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("req");
        h2_exchange(&mut c, req, Some(grpc_message(b"hi")), |_| {}).await
    };
    // One call first opens the connection (calls that all start before any connection exists
    // each open their own: Pingora does not wait for a connection being established).
    assert!(up.streams() == 0);
    assert_eq!(call(client.clone()).await.status, 200);
    // Calls start 5 ms apart and each lasts 300 ms, so about 60 are in flight together (calls
    // that start in the very same instant may race for a connection slot, see the README).
    let mut calls = Vec::new();
    for _ in 0..60 {
        calls.push(tokio::spawn(call(client.clone())));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for call in calls {
        let reply = call.await.expect("call");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, grpc_message(b"ok"));
    }
    assert_eq!(up.streams(), 61);
    eprintln!("upstream HTTP/2 connections: {}", up.connections());
    // They share the open connection (100 streams each) instead of opening one per call.
    assert!(
        up.connections() <= 4,
        "{} upstream HTTP/2 connections for 60 concurrent calls",
        up.connections()
    );
}

#[tokio::test]
async fn a_large_response_head_arriving_in_pieces_passes_unchanged() {
    use gateway_tests::client::H1;
    use gateway_tests::raw::{RawUpstream, Step};
    // 40 headers of 500 bytes (20 KB: many times the first 1 KiB read of a response head),
    // written in three pieces with pauses between them.
    let headers: String = (0..40)
        .map(|i| format!("x-big-{i}: {}\r\n", "v".repeat(500)))
        .collect();
    let head = format!("HTTP/1.1 200 OK\r\n{headers}Content-Length: 4\r\n\r\n");
    let (a, rest) = head.as_bytes().split_at(700);
    let (b, c) = rest.split_at(9000);
    let pieces = [a.to_vec(), b.to_vec(), c.to_vec()];
    let up = RawUpstream::start(move |_| {
        vec![
            Step::Write(Bytes::from(pieces[0].clone())),
            Step::Pause(Duration::from_millis(50)),
            Step::Write(Bytes::from(pieces[1].clone())),
            Step::Pause(Duration::from_millis(50)),
            Step::Write(Bytes::from(pieces[2].clone())),
            Step::Write(Bytes::from_static(b"body")),
        ]
    })
    .await;
    let config = one_region(Region::one("fra-1", up.addr()));
    let (gw, _) = Gateway::start(&config, &[]).await;
    let resp = H1::connect(gw.addr)
        .await
        .send(get("app.test", "/big"))
        .await;
    assert_eq!(resp.status, 200);
    for i in 0..40 {
        assert_eq!(
            resp.header(&format!("x-big-{i}")),
            Some("v".repeat(500).as_str()),
            "header x-big-{i}"
        );
    }
    assert_eq!(&resp.body[..], b"body");
}

#[tokio::test]
async fn the_first_body_bytes_reach_the_client_while_the_upstream_pauses() {
    use gateway_tests::raw::{read_until_closed, split_response, RawUpstream, Signal, Step};
    // The upstream sends its header and 5 of 10 bytes, then waits until the client has seen
    // them: a gateway that holds them back in its write buffer deadlocks this exchange.
    let go = Signal::new();
    let go_up = go.clone();
    let up = RawUpstream::start(move |_| {
        vec![
            Step::Write(Bytes::from_static(
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst",
            )),
            Step::WaitFor(go_up.clone()),
            Step::Write(Bytes::from_static(b"again")),
        ]
    })
    .await;
    let config = one_region(Region::one("fra-1", up.addr()));
    let (gw, _) = Gateway::start(&config, &[]).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (raw, _) = read_until_closed(
        &mut tcp,
        b"GET /stream HTTP/1.1\r\nHost: app.test\r\n\r\n",
        b"first",
        || go.fire(),
        Duration::from_secs(2),
    )
    .await;
    let (head, body) = split_response(&raw);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"firstagain");
}

/// Reads from `stream` into `buf` until `buf` holds `needle`, within the tests' deadline;
/// false when the peer closed first.
async fn read_until(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> bool {
    use tokio::io::AsyncReadExt;
    let found = |buf: &[u8]| buf.windows(needle.len()).any(|w| w == needle);
    tokio::time::timeout(Duration::from_secs(20), async {
        while !found(buf) {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return false,
            }
        }
        true
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no {:?} in {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(buf)
        )
    })
}

/// A gateway in front of `up` (probed once an hour) and a raw client connection to it.
async fn gateway_and_raw_client(up: std::net::SocketAddr) -> (Gateway, tokio::net::TcpStream) {
    let config = one_region(Region::one("fra-1", up).probe(rare_probes()));
    let (gw, _) = Gateway::start(&config, &[]).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    (gw, tcp)
}

/// A loopback upstream whose first request is answered by `first` (given the stream and the
/// request head as read, lowercased); later requests get `200` with the body `again`. After each answer
/// it drains what the gateway still sends until the gateway closes; connections that close
/// without a head (the TCP probes) are dropped.
async fn upstream_answering<F, Fut>(first: F) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>)
where
    F: FnOnce(tokio::net::TcpStream, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = tokio::net::TcpStream> + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let first = std::sync::Arc::new(std::sync::Mutex::new(Some(first)));
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let first = first.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                if !read_until(&mut stream, &mut head, b"\r\n\r\n").await {
                    return;
                }
                let serve = first.lock().expect("lock").take();
                let mut stream = match serve {
                    Some(serve) => {
                        serve(stream, String::from_utf8_lossy(&head).to_lowercase()).await
                    }
                    None => {
                        let again = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain";
                        let _ = stream.write_all(again).await;
                        stream
                    }
                };
                let mut sink = [0u8; 65536];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn an_upstream_answer_that_comes_before_the_upload_ends_reaches_the_client_at_once() {
    use tokio::io::AsyncWriteExt;
    // The upstream answers `413` as soon as the head is there, without reading the body, and
    // closes after draining it (`Connection: close` and a lingering close, as nginx does). The
    // client sends only the first 64 KiB of its 512 KiB and waits: the answer must reach it
    // while the upload is unfinished.
    let (up, upstream) = upstream_answering(|mut stream, head| async move {
        assert!(head.contains("content-length: 524288"), "{head}");
        stream
            .write_all(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!",
            )
            .await
            .expect("answer");
        stream
    })
    .await;
    let (gw, mut tcp) = gateway_and_raw_client(up).await;
    tcp.write_all(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 524288\r\n\r\n")
        .await
        .expect("head");
    tcp.write_all(&vec![b'u'; 65536]).await.expect("first part");
    let mut got = Vec::new();
    assert!(read_until(&mut tcp, &mut got, b"too big!").await, "closed");
    let text = String::from_utf8_lossy(&got).to_lowercase();
    assert!(text.starts_with("http/1.1 413"), "{text}");
    assert!(text.contains("content-length: 8\r\n"), "{text}");
    // The rest of the upload still goes through, and the gateway stays up.
    tcp.write_all(&vec![b'u'; 524288 - 65536])
        .await
        .expect("rest");
    drop(tcp);
    let resp = H1::connect(gw.addr).await.send(get("app.test", "/")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(&resp.body[..], b"again");
    upstream.abort();
}

#[tokio::test]
async fn expect_100_continue_passes_the_upstreams_interim_answer_before_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The upstream answers `100 Continue`, reads the five body bytes and echoes them; the
    // client sends its body only after it has seen the `100`.
    let (up, upstream) = upstream_answering(|mut stream, head| async move {
        assert!(head.contains("expect: 100-continue"), "{head}");
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .expect("interim");
        let mut body = [0u8; 5];
        stream.read_exact(&mut body).await.expect("body");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}",
            String::from_utf8_lossy(&body)
        );
        stream.write_all(answer.as_bytes()).await.expect("answer");
        stream
    })
    .await;
    let (_gw, mut tcp) = gateway_and_raw_client(up).await;
    tcp.write_all(
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .expect("head");
    let mut got = Vec::new();
    assert!(read_until(&mut tcp, &mut got, b"\r\n\r\n").await, "closed");
    let interim = String::from_utf8_lossy(&got).to_lowercase();
    assert!(interim.starts_with("http/1.1 100"), "{interim}");
    tcp.write_all(b"hello").await.expect("body");
    assert!(read_until(&mut tcp, &mut got, b"hello").await, "closed");
    let text = String::from_utf8_lossy(&got).to_lowercase();
    let final_head = &text[text.find("\r\n\r\n").expect("interim end") + 4..];
    assert!(final_head.starts_with("http/1.1 200"), "{text}");
    assert!(final_head.ends_with("\r\n\r\nhello"), "{text}");
    upstream.abort();
}

#[tokio::test]
async fn bodiless_answers_to_head_204_and_304_keep_the_upstream_connection_framed() {
    use gateway_tests::raw::{RawUpstream, Step};
    // Each answer announces a length it does not send (HEAD, 304) or has none (204): the
    // gateway must frame each by the request and the status, forward it whole, and use the
    // same upstream connection for the next request.
    let up = RawUpstream::start(|n| {
        let answer: &'static [u8] = match n {
            0 => b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-N: 0\r\n\r\n",
            1 => b"HTTP/1.1 204 No Content\r\nX-N: 1\r\n\r\n",
            2 => b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nX-N: 2\r\n\r\n",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-N: 3\r\n\r\ndone",
        };
        vec![Step::Write(Bytes::from_static(answer))]
    })
    .await;
    let config = one_region(Region::one("fra-1", up.addr()).probe(rare_probes()));
    let (gw, _) = Gateway::start(&config, &[]).await;
    let mut c = H1::connect(gw.addr).await;
    let head = Request::head("/head")
        .header("host", "app.test")
        .body(client::empty())
        .expect("request");
    let resp = c.send(head).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some("1000"));
    assert_eq!(resp.header("x-n"), Some("0"));
    assert!(resp.body.is_empty());
    let resp = c.send(get("app.test", "/no-content")).await;
    assert_eq!((resp.status, resp.header("x-n")), (204, Some("1")));
    assert!(resp.body.is_empty());
    let resp = c.send(get("app.test", "/not-modified")).await;
    assert_eq!((resp.status, resp.header("x-n")), (304, Some("2")));
    assert!(resp.body.is_empty());
    let resp = c.send(get("app.test", "/after")).await;
    assert_eq!((resp.status, resp.header("x-n")), (200, Some("3")));
    assert_eq!(&resp.body[..], b"done");
    let log = up.log();
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(
        log.iter().all(|(conn, _)| *conn == log[0].0),
        "the upstream connection was not kept: {log:?}"
    );
}

#[tokio::test]
async fn header_names_reach_each_side_spelled_as_sent() {
    use tokio::io::AsyncWriteExt;
    // Names spelled every way peers spell them: title case, lowercase, neither (`DNT`, `ETag`),
    // and (second exchange) one name spelled two ways. The gateway keeps a header's spelling
    // as a style plus its odd names, or per value when a name is spelled two ways (vendor
    // patch 28): each way must put the same bytes on the wire.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let up = listener.local_addr().expect("addr");
    let (heads_tx, mut heads) = tokio::sync::mpsc::unbounded_channel::<String>();
    let upstream = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let heads_tx = heads_tx.clone();
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    if !read_until(&mut stream, &mut head, b"\r\n\r\n").await {
                        return;
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let answer: &[u8] = if head.starts_with("GET /one ") {
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nETag: \"v1\"\r\nX-Title-Case: a\r\nx-lower: b\r\ncontent-length: 3\r\n\r\none"
                    } else if head.starts_with("GET /two ") {
                        b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nContent-Type: text/plain\r\nSet-Cookie: b=2\r\nContent-Length: 3\r\n\r\ntwo"
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                    };
                    if head.starts_with("GET /one ") || head.starts_with("GET /two ") {
                        let _ = heads_tx.send(head);
                    }
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let (_gw, mut tcp) = gateway_and_raw_client(up).await;
    async fn exchange(tcp: &mut tokio::net::TcpStream, request: &[u8], end: &[u8]) -> String {
        tcp.write_all(request).await.expect("request");
        let mut got = Vec::new();
        assert!(read_until(tcp, &mut got, end).await, "closed");
        String::from_utf8_lossy(&got).to_string()
    }
    let spelled = |text: &str, lines: &[&str]| {
        for line in lines {
            assert!(
                text.contains(&format!("\r\n{line}\r\n")),
                "{line:?} in {text}"
            );
        }
    };

    // A title-case request with odd names, a lowercase answer with odd names.
    let one = exchange(
        &mut tcp,
        b"GET /one HTTP/1.1\r\nHost: app.test\r\nUser-Agent: raw\r\nx-lower-one: 1\r\nDNT: 1\r\nX-Title-Case: 2\r\n\r\n",
        b"\r\n\r\none",
    )
    .await;
    let head = heads.recv().await.expect("upstream head");
    let sent = [
        "Host: app.test",
        "User-Agent: raw",
        "x-lower-one: 1",
        "DNT: 1",
        "X-Title-Case: 2",
    ];
    spelled(&head, &sent);
    // The gateway's own fields keep their lowercase spelling among them.
    assert!(
        head.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nx-request-id: "), "{head}");
    spelled(
        &one,
        &[
            "content-type: text/plain",
            "ETag: \"v1\"",
            "X-Title-Case: a",
            "x-lower: b",
        ],
    );

    // One name spelled two ways on each side: each value keeps its spelling.
    let two = exchange(
        &mut tcp,
        b"GET /two HTTP/1.1\r\nhost: app.test\r\nx-dup: a\r\nAccept: */*\r\nX-Dup: b\r\n\r\n",
        b"\r\n\r\ntwo",
    )
    .await;
    let head = heads.recv().await.expect("upstream head");
    spelled(
        &head,
        &["host: app.test", "x-dup: a", "X-Dup: b", "Accept: */*"],
    );
    spelled(
        &two,
        &[
            "set-cookie: a=1",
            "Set-Cookie: b=2",
            "Content-Type: text/plain",
        ],
    );
    upstream.abort();
}
