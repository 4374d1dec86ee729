//! gRPC through the gateway (issue 31): real tonic clients and a real tonic-served `test.Echo`
//! server (`gateway_tests::grpc`), over h2c and TLS. The default limits carry what gRPC's own
//! do (4 MiB messages both ways, a long client stream) while plain uploads stay bound; a limit
//! set on the route is `RESOURCE_EXHAUSTED`; the gateway's own answers are gRPC statuses with
//! their reasons, sent Trailers-Only; `grpc-timeout` is the request's deadline, the upstream
//! sees the cancellation, and a retry forwards what is left of it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gateway_tests::client::{full, H1, H2};
use gateway_tests::grpc::{EchoClient, GrpcEcho, Payload, Summary};
use gateway_tests::{eventually, metric, Gateway, TestPki};
use http::Request;
use tonic::Code;

/// The name in the gateway's (and the TLS upstream's) certificate.
const NAME: &str = "grpc.test";

/// gRPC libraries' default maximum message size.
const FOUR_MIB: usize = 4 * 1024 * 1024;

/// A gateway config: the plaintext listener, a TLS listener (certificate `c.pem`), an access
/// log, `regions` (YAML lines under `regions:`) and `routes` (YAML lines under `routes:`).
fn config(regions: &str, routes: &str) -> String {
    format!(
        r#"listeners:
  - {{ name: http, bind: "{{listen}}" }}
  - {{ name: https, bind: "{{tls}}", tls: {{ certs: [{{ cert: c.pem, key: c.key }}] }} }}
admin: {{ bind: "{{admin}}" }}
server:
  access_log: {{ output: access.log }}
regions:
{regions}
routes:
{routes}
"#
    )
}

/// Region `name` of one h2c endpoint `<name>-1` at `addr`, probed (TCP) every 200 ms.
fn region(name: &str, addr: SocketAddr) -> String {
    format!(
        "  {name}:\n    endpoints: [{{ id: {name}-1, address: \"{addr}\" }}]\n    protocol: http2\n    probe: {{ interval: 200ms, timeout: 200ms, rise: 1, fall: 1 }}\n"
    )
}

/// A gateway with `config`, its TLS listener's certificate from `pki`.
async fn start(pki: &TestPki, config: &str) -> (Gateway, SocketAddr) {
    let leaf = &pki.leaves[0];
    let files = [
        ("c.pem", leaf.cert_pem.as_bytes()),
        ("c.key", leaf.key_pem.as_bytes()),
    ];
    Gateway::start(config, &files).await
}

/// An h2c echo server as region `fra` behind a gateway with `routes`; the test CA signed the
/// gateway's TLS certificate.
async fn start_echo(routes: &str) -> (GrpcEcho, TestPki, Gateway, SocketAddr) {
    let echo = GrpcEcho::start(None).await;
    let pki = TestPki::new(&[&[NAME]]);
    let (gw, tls) = start(&pki, &config(&region("fra", echo.addr), routes)).await;
    (echo, pki, gw, tls)
}

/// A tonic client of the gateway over h2c and one over TLS, each with its name.
async fn clients(gw: &Gateway, tls: SocketAddr, pki: &TestPki) -> [(&'static str, EchoClient); 2] {
    [
        ("h2c", EchoClient::h2c(gw.addr).await),
        ("tls", EchoClient::tls(tls, &pki.ca_pem, NAME).await),
    ]
}

/// The access log's lines so far.
fn access_lines(gw: &Gateway) -> Vec<serde_json::Value> {
    let path: PathBuf = gw.config_path().parent().expect("dir").join("access.log");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits until the access log has `n` lines with `grpc_status` `code`.
async fn wait_logged(gw: &Gateway, code: Code, n: usize) {
    eventually(
        &format!("{n} access log lines with grpc_status {code:?}"),
        || {
            let found = access_lines(gw)
                .iter()
                .filter(|l| l["grpc_status"] == code as i32)
                .count();
            async move { found >= n }
        },
    )
    .await;
}

/// `/metrics`' `gateway_grpc_answers_total` for `route` and status name `status`.
async fn answers(gw: &Gateway, route: &str, status: &str) -> f64 {
    let (_, text) = gw.admin_call("GET", "/metrics", None).await;
    metric(
        &text,
        &format!("gateway_grpc_answers_total{{route=\"{route}\",grpc_status=\"{status}\"}}"),
    )
}

/// Asserts that `result` is an error with `code` whose message contains `reason`.
fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, reason: &str) {
    let status = result.expect_err("the call fails");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(reason),
        "`{reason}` not in the message: {status:?}"
    );
}

#[tokio::test]
async fn default_limits_carry_4_mib_messages_both_ways_and_a_long_client_stream() {
    let (echo, pki, gw, tls) = start_echo("  - { name: echo, regions: [fra] }").await;
    for (how, mut client) in clients(&gw, tls, &pki).await {
        // 4 MiB up, echoed 4 MiB down: the largest message either side's library accepts.
        let sent = Payload::sized(FOUR_MIB);
        let reply = client.unary(sent.clone()).await;
        let reply = reply.unwrap_or_else(|e| panic!("{how}: 4 MiB both ways: {e:?}"));
        assert_eq!(reply.data, sent.data, "{how}");
        // 1000 messages of 64 KiB: 64 MiB on one call, no limit the route did not set.
        let summary = client.upload(1000, 64 * 1024).await;
        let summary = summary.unwrap_or_else(|e| panic!("{how}: client stream: {e:?}"));
        assert_eq!(
            summary,
            Summary {
                messages: 1000,
                bytes: 1000 * 64 * 1024
            },
            "{how}"
        );
    }
    assert_eq!(echo.answered(), 4);

    // A plain upload on the same route is still bound by the default max_body_bytes (1 MiB).
    let mut h2 = H2::connect_h2c(gw.addr).await;
    let upload = Request::post(format!("http://{}/upload", gw.addr))
        .header("content-type", "application/octet-stream")
        .body(full(vec![0u8; 2 << 20]))
        .expect("request");
    assert_eq!(h2.send(upload).await.status, 413);
}

#[tokio::test]
async fn a_limit_set_on_the_route_is_resource_exhausted_naming_it() {
    let routes = "  - { name: whole, match: { path_prefix: /test.Echo/Unary }, regions: [fra], max_body_bytes: 65536 }\n  - { name: messages, regions: [fra], max_grpc_message_bytes: 1024 }";
    let (_echo, pki, gw, tls) = start_echo(routes).await;
    for (how, mut client) in clients(&gw, tls, &pki).await {
        // `max_body_bytes` set on the route bounds the whole gRPC stream.
        client
            .unary(Payload::sized(60 * 1024))
            .await
            .unwrap_or_else(|e| panic!("{how}: under the limit: {e:?}"));
        assert_status(
            client.unary(Payload::sized(100 * 1024)).await,
            Code::ResourceExhausted,
            "route whole: request over max_body_bytes (65536 bytes)",
        );
        // `max_grpc_message_bytes` bounds each message, not the stream.
        let summary = client.upload(50, 1000).await;
        let summary = summary.unwrap_or_else(|e| panic!("{how}: small messages: {e:?}"));
        assert_eq!(summary.messages, 50, "{how}");
        assert_status(
            client.upload(3, 2000).await,
            Code::ResourceExhausted,
            "route messages: request over max_grpc_message_bytes (1024 bytes)",
        );
    }
    wait_logged(&gw, Code::ResourceExhausted, 4).await;
    assert_eq!(answers(&gw, "whole", "RESOURCE_EXHAUSTED").await, 2.0);
    assert_eq!(answers(&gw, "messages", "RESOURCE_EXHAUSTED").await, 2.0);
}

#[tokio::test]
async fn the_gateways_own_answers_are_grpc_statuses_with_their_reasons() {
    let routes = "  - { name: echo, match: { path_prefix: /test.Echo/ }, regions: [fra], on_all_down: reject }";
    let (echo, pki, gw, tls) = start_echo(routes).await;
    let mut h2c = EchoClient::h2c(gw.addr).await;
    let mut h2 = EchoClient::tls(tls, &pki.ca_pem, NAME).await;

    // No route: UNIMPLEMENTED, naming what was asked for.
    for client in [&mut h2c, &mut h2] {
        assert_status(
            client
                .unary_at("/other.Svc/Call", Payload::default(), None)
                .await,
            Code::Unimplemented,
            "no route for host \"127.0.0.1\" and path \"/other.Svc/Call\"",
        );
    }

    // Every allowed region down: UNAVAILABLE, with the route and its regions.
    drop(echo);
    eventually("fra is down", || gw.region_is("fra", false)).await;
    for client in [&mut h2c, &mut h2] {
        assert_status(
            client.unary(Payload::default()).await,
            Code::Unavailable,
            "route echo: no allowed region is up (allowed: fra)",
        );
    }

    // The answer's form: Trailers-Only (one header block ending the stream, no body, no
    // trailers), HTTP 200, the push-back where HTTP would say Retry-After.
    let mut raw = H2::connect_h2c(gw.addr).await;
    let call = Request::post(format!("http://{}/test.Echo/Unary", gw.addr))
        .header("content-type", "application/grpc+proto")
        .header("te", "trailers")
        .header("x-request-id", "grpc-call-1")
        .body(full(vec![0u8, 0, 0, 0, 0]))
        .expect("request");
    let answer = raw.send(call).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some("application/grpc"));
    assert_eq!(answer.header("grpc-status"), Some("14"));
    assert_eq!(
        answer.header("grpc-message"),
        Some("route echo: no allowed region is up (allowed: fra)")
    );
    assert_eq!(answer.header("grpc-retry-pushback-ms"), Some("1000"));
    assert_eq!(answer.header("x-request-id"), Some("grpc-call-1"));
    assert!(answer.body.is_empty(), "a body: {:?}", answer.body);
    assert!(answer.trailers.is_none(), "trailers: {:?}", answer.trailers);

    // grpc-web (here over HTTP/1.1) gets the same status in headers, an empty body declared.
    let mut h1 = H1::connect(gw.addr).await;
    let web = Request::post("/test.Echo/Unary")
        .header("host", "web.test")
        .header("content-type", "application/grpc-web+proto")
        .body(full(vec![0u8, 0, 0, 0, 0]))
        .expect("request");
    let answer = h1.send(web).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type"),
        Some("application/grpc-web+proto")
    );
    assert_eq!(answer.header("grpc-status"), Some("14"));
    assert_eq!(answer.header("content-length"), Some("0"));

    // Counted, and in the access log.
    wait_logged(&gw, Code::Unavailable, 4).await;
    wait_logged(&gw, Code::Unimplemented, 2).await;
    assert_eq!(answers(&gw, "echo", "UNAVAILABLE").await, 4.0);
    assert_eq!(answers(&gw, "-", "UNIMPLEMENTED").await, 2.0);
    // A plain request still gets the JSON page.
    let (status, body) = gateway_tests::client::get_status(gw.addr, "/test.Echo/x")
        .await
        .expect("plain request");
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("\"error\":\"no allowed region is up\""));
}

#[tokio::test]
async fn grpc_timeout_is_the_deadline_and_the_upstream_sees_the_cancellation() {
    let (echo, pki, gw, tls) = start_echo("  - { name: echo, regions: [fra] }").await;
    let slow = Payload {
        delay_ms: 2000,
        ..Payload::default()
    };
    let deadline = Some(Duration::from_millis(200));
    // tonic's Channel ends the call itself when its deadline passes (CANCELLED, "Timeout
    // expired"), racing the gateway; the bare client waits for whoever answers.
    for (i, how) in ["bare h2c", "tls"].into_iter().enumerate() {
        let started = Instant::now();
        let result = match how {
            "tls" => {
                let mut client = EchoClient::tls(tls, &pki.ca_pem, NAME).await;
                let result = client.unary_at("/test.Echo/Unary", slow.clone(), deadline);
                result.await
            }
            _ => {
                let mut client = EchoClient::h2c_bare(gw.addr);
                let result = client.unary_at("/test.Echo/Unary", slow.clone(), deadline);
                result.await
            }
        };
        let took = started.elapsed();
        if how == "tls" {
            let status = result.expect_err("the call fails");
            assert!(
                matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
                "{how}: {status:?}"
            );
        } else {
            assert_status(
                result,
                Code::DeadlineExceeded,
                "route echo: deadline passed (the client's grpc-timeout, 200ms)",
            );
        }
        // About 200 ms; before the handler's 2 s in any case (generous for a loaded box).
        assert!(took < Duration::from_millis(1900), "{how}: took {took:?}");
        // The server was told at most what the client allowed, and saw the call cancelled.
        let told = echo.timeouts()[i].clone().expect("grpc-timeout forwarded");
        let told = parse_timeout(&told);
        assert!(
            told <= Duration::from_millis(200) && told > Duration::ZERO,
            "{how}: {told:?}"
        );
        eventually(&format!("{how}: the handler is cancelled"), || {
            let cancelled = echo.cancelled();
            async move { cancelled == i as u64 + 1 }
        })
        .await;
    }
    assert_eq!(echo.answered(), 0, "a handler ran to its end");
    // The gateway answered the bare client; tonic's Channel may have given up first.
    wait_logged(&gw, Code::DeadlineExceeded, 1).await;
    assert!(answers(&gw, "echo", "DEADLINE_EXCEEDED").await >= 1.0);

    // The route's own deadline, when it ends first, is also the gRPC deadline, and is what
    // the server is told.
    let echo = GrpcEcho::start(None).await;
    let routes = "  - { name: short, regions: [fra], timeouts: { request: 300ms } }";
    let (gw, _) = start(&pki, &config(&region("fra", echo.addr), routes)).await;
    let mut client = EchoClient::h2c_bare(gw.addr);
    let result = client
        .unary_at("/test.Echo/Unary", slow, Some(Duration::from_secs(10)))
        .await;
    assert_status(
        result,
        Code::DeadlineExceeded,
        "route short: deadline passed (the route's timeouts.request)",
    );
    let told = parse_timeout(&echo.timeouts()[0].clone().expect("grpc-timeout forwarded"));
    assert!(told <= Duration::from_millis(300), "{told:?}");
}

#[tokio::test]
async fn a_retried_call_forwards_what_is_left_of_its_grpc_timeout() {
    // fra's endpoint takes connections and never answers the TLS handshake: the attempt fails
    // at the connect timeout, and the call is retried on ber.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let pki = TestPki::new(&[&[NAME]]);
    let leaf = &pki.leaves[0];
    let echo = GrpcEcho::start(Some((&leaf.cert_pem, &leaf.key_pem))).await;
    let tls_region = |name: &str, addr: SocketAddr| {
        format!(
            "{}    tls: {{ sni: {NAME}, verify: false }}\n",
            region(name, addr)
        )
    };
    let regions = format!(
        "{}{}",
        tls_region("fra", silent.local_addr().expect("addr")),
        tls_region("ber", echo.addr)
    );
    let routes = "  - { name: echo, regions: [fra, ber], timeouts: { connect: 300ms } }";
    let (gw, _) = start(&pki, &config(&regions, routes)).await;

    let mut client = EchoClient::h2c(gw.addr).await;
    let reply = client
        .unary_at(
            "/test.Echo/Unary",
            Payload::sized(100),
            Some(Duration::from_secs(5)),
        )
        .await
        .expect("answered by ber after the retry");
    assert_eq!(reply.data.len(), Payload::sized(100).data.len());
    let told = parse_timeout(&echo.timeouts()[0].clone().expect("grpc-timeout forwarded"));
    // The connect timeout (300 ms, twice for TLS) was spent on fra before ber was asked.
    assert!(
        told <= Duration::from_millis(4700) && told > Duration::from_secs(1),
        "ber was told {told:?}"
    );
    eventually("the retry in the access log", || {
        let retried = access_lines(&gw)
            .iter()
            .any(|l| l["retries"] == serde_json::json!(["connect"]) && l["region"] == "ber");
        async move { retried }
    })
    .await;
}

/// A `grpc-timeout` value, as the server received it.
fn parse_timeout(value: &str) -> Duration {
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("grpc-timeout {value}"));
    match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => panic!("grpc-timeout {value}"),
    }
}
