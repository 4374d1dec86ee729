//! gRPC health probes (issue 14, item 5): `grpc.health.v1.Health/Check` against a real gRPC
//! health server (tonic-health, `gateway_tests::grpc::GrpcHealth`) over h2c and TLS; serving,
//! not serving, a service the server does not know, a wrong CA, a server that never answers
//! and one that wants a bearer token.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway_tests::grpc::GrpcHealth;
use gateway_tests::{Gateway, TestPki, DEADLINE};

/// The gRPC server's name in its certificate.
const GRPC_NAME: &str = "grpc.fra.test";

/// Region `fra` with one endpoint at `endpoint`, probed every 200 ms with the gRPC probe
/// `grpc` (YAML flow-mapping entries) and `region_extra` (more region settings, e.g. `tls`).
fn config(endpoint: SocketAddr, grpc: &str, region_extra: &str) -> String {
    format!(
        r#"listeners:
  - {{ name: http, bind: "{{listen}}" }}
admin: {{ bind: "{{admin}}" }}
regions:
  fra:
    endpoints: [{{ id: fra-1, address: "{endpoint}" }}]
    protocol: http2
    probe: {{ interval: 200ms, timeout: 200ms, rise: 1, fall: 1, grpc: {{ {grpc} }} }}
{region_extra}
routes:
  - {{ name: app, regions: [fra] }}
"#
    )
}

/// Waits until endpoint `fra-1` is `health` (`up`/`down`) with a last probe detail that
/// contains `detail`; returns the detail. Fails after [`DEADLINE`] with the last one seen.
async fn wait_probe(gw: &Gateway, health: &str, detail: &str) -> String {
    let start = Instant::now();
    loop {
        let status = gw.status(None).await;
        let ep = &status["regions"][0]["endpoints"][0];
        let last = ep["last_probe"]["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if ep["health"] == health && last.contains(detail) {
            return last;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "fra-1 never became {health} with `{detail}`; last: {ep}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_h2c_server_is_up_while_serving_and_down_while_not_serving() {
    let server = GrpcHealth::start(None).await;
    let (gw, _) = Gateway::start(&config(server.addr, "", ""), &[]).await;
    assert_eq!(wait_probe(&gw, "up", "SERVING").await, "SERVING");

    server.set("", false).await;
    assert_eq!(wait_probe(&gw, "down", "NOT_SERVING").await, "NOT_SERVING");

    server.set("", true).await;
    assert_eq!(wait_probe(&gw, "up", "SERVING").await, "SERVING");
}

#[tokio::test]
async fn the_named_service_is_asked_about_and_an_unknown_one_is_down() {
    let server = GrpcHealth::start(None).await;
    let (gw, _) = Gateway::start(&config(server.addr, "service: orders.v1.Orders", ""), &[]).await;
    // The server as a whole serves, but has never heard of the service.
    let detail = wait_probe(&gw, "down", "unknown to the server").await;
    assert!(
        detail.starts_with("service `orders.v1.Orders`: ")
            && detail.contains("grpc-status 5 NOT_FOUND"),
        "{detail}"
    );

    let serving = "service `orders.v1.Orders`: SERVING";
    server.set("orders.v1.Orders", true).await;
    assert_eq!(wait_probe(&gw, "up", serving).await, serving);

    server.set("orders.v1.Orders", false).await;
    wait_probe(&gw, "down", "service `orders.v1.Orders`: NOT_SERVING").await;
    // Another service's status is not this probe's business.
    server.set("", false).await;
    server.set("orders.v1.Orders", true).await;
    assert_eq!(wait_probe(&gw, "up", serving).await, serving);
}

#[tokio::test]
async fn over_tls_the_probe_verifies_the_server_with_its_ca_and_name() {
    let pki = TestPki::new(&[&[GRPC_NAME]]);
    let leaf = &pki.leaves[0];
    let server = GrpcHealth::start(Some((&leaf.cert_pem, &leaf.key_pem))).await;
    let tls = format!("    tls: {{ sni: {GRPC_NAME} }}");
    let (gw, _) = Gateway::start(
        &config(server.addr, "ca_file: ca.pem", &tls),
        &[("ca.pem", pki.ca_pem.as_bytes())],
    )
    .await;
    assert_eq!(wait_probe(&gw, "up", "SERVING").await, "SERVING");
    server.set("", false).await;
    wait_probe(&gw, "down", "NOT_SERVING").await;

    // A CA that did not sign the server's certificate: the handshake fails, the endpoint is down.
    let other = TestPki::new(&[&[GRPC_NAME]]);
    let server = GrpcHealth::start(Some((&leaf.cert_pem, &leaf.key_pem))).await;
    let (gw, _) = Gateway::start(
        &config(server.addr, "ca_file: ca.pem", &tls),
        &[("ca.pem", other.ca_pem.as_bytes())],
    )
    .await;
    wait_probe(&gw, "down", "invalid peer certificate").await;
}

#[tokio::test]
async fn a_server_that_never_answers_times_the_probe_out() {
    // Accepts connections and holds them without a byte: no HTTP/2 settings, no answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let (gw, _) = Gateway::start(&config(addr, "", ""), &[]).await;
    let detail = wait_probe(&gw, "down", "timeout").await;
    assert_eq!(detail, "timeout after 200ms");
    holder.abort();
}

#[tokio::test]
async fn a_connection_gone_silent_is_dropped_when_its_ping_goes_unanswered() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let server = GrpcHealth::start(None).await;
    // A relay that holds every connection silent while `hold` is set (a black-holed path),
    // and afterwards relays new connections to the server; the held ones stay silent.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hold = Arc::new(AtomicBool::new(true));
    let (to, holding) = (server.addr, hold.clone());
    let relay = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            if holding.load(Ordering::SeqCst) {
                held.push(socket);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut socket, &mut upstream).await;
                }
            });
        }
    });
    let (gw, _) = Gateway::start(&config(addr, "", ""), &[]).await;
    assert_eq!(
        wait_probe(&gw, "down", "timeout").await,
        "timeout after 200ms"
    );
    // The path heals for new connections; the probe's own connection never answers again.
    hold.store(false, Ordering::SeqCst);
    assert_eq!(wait_probe(&gw, "up", "SERVING").await, "SERVING");
    relay.abort();
}

/// A server behind an authenticating interceptor: the probe sends the bearer token file's
/// content as `authorization` metadata, re-read at every probe, so a rotated token needs no
/// reload, and a wrong one is down with the server's `UNAUTHENTICATED`.
#[tokio::test]
async fn the_bearer_token_file_is_sent_as_metadata_and_re_read_at_every_probe() {
    let server = GrpcHealth::start_requiring(None, Some("tok-1")).await;
    let (gw, _) = Gateway::start(
        &config(server.addr, "bearer_token_file: token", ""),
        &[("token", b"tok-1\n".as_slice())],
    )
    .await;
    assert_eq!(wait_probe(&gw, "up", "SERVING").await, "SERVING");

    let token = gw.config_path().parent().expect("dir").join("token");
    std::fs::write(&token, "tok-2\n").expect("rotate the token");
    let detail = wait_probe(&gw, "down", "UNAUTHENTICATED").await;
    assert!(detail.contains("grpc-status 16"), "{detail}");

    std::fs::write(&token, "tok-1").expect("rotate back");
    assert_eq!(wait_probe(&gw, "up", "SERVING").await, "SERVING");
    assert_eq!(gw.status(None).await["config"]["version"], 1, "no reload");
}
