//! Region checks against a cluster-API-like HTTPS server (issue 15, section 1): the cluster's
//! own CA (`ca_file`), the server name (`sni`), a bearer token re-read when it rotates, client
//! certificates, and `insecure_skip_verify` warned by `gateway check`. The CAs are generated
//! at test time; the server is `gateway_tests::api::ApiServer` on loopback.

use gateway_tests::api::ApiServer;
use gateway_tests::{gateway_cli, region, Gateway, TestPki, DEADLINE};

/// The API server's name in its certificate; the checks reach it as `127.0.0.1` and ask for
/// this name with `sni`.
const API_NAME: &str = "api.fra.test";

/// A gateway config with region `fra` (one simulated endpoint, TCP probe) gated by one check
/// whose extra settings are `check` (YAML flow-mapping entries, e.g. `ca_file: ca.pem`).
fn config(endpoint: std::net::SocketAddr, api: std::net::SocketAddr, check: &str) -> String {
    format!(
        r#"listeners:
  - {{ name: http, bind: "{{listen}}" }}
admin: {{ bind: "{{admin}}" }}
regions:
  fra:
    endpoints: [{{ id: fra-1, address: "{endpoint}" }}]
    probe: {{ interval: 200ms, timeout: 200ms }}
    checks:
      - {{ name: api, url: "https://{api}/readyz", interval: 200ms, timeout: 200ms, rise: 1, fall: 1, {check} }}
routes:
  - {{ name: app, regions: [fra] }}
"#
    )
}

/// The `api` check of region `fra` in `/status`: (passing, last probe detail).
async fn check(gw: &Gateway) -> (bool, String) {
    let status = gw.status(None).await;
    let region = status["regions"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "fra"))
        .cloned()
        .unwrap_or_default();
    let check = &region["checks"][0];
    (
        check["passing"].as_bool().unwrap_or(false),
        check["last_probe"]["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Waits until the check is passing (`up`) or failing with a detail containing `detail`, and
/// the region's state follows; returns the detail. Fails after [`DEADLINE`] with the last one.
async fn wait_check(gw: &Gateway, up: bool, detail: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let (passing, last) = check(gw).await;
        if passing == up && last.contains(detail) && gw.region_is("fra", up).await {
            return last;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "check never became passing={up} with `{detail}`; last detail: `{last}`"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn pki() -> TestPki {
    TestPki::new(&[&[API_NAME], &["probe.gateway.test"]])
}

#[tokio::test]
async fn the_clusters_own_ca_and_server_name_make_the_check_pass() {
    let pki = pki();
    let api = ApiServer::start(&pki.leaves[0].cert_pem, &pki.leaves[0].key_pem, None).await;
    let app = region("fra", "fra-1").await;
    let yaml = config(
        app.addr(),
        api.addr,
        &format!("ca_file: ca.pem, sni: {API_NAME}"),
    );
    let (gw, _) = Gateway::start(&yaml, &[("ca.pem", pki.ca_pem.as_bytes())]).await;
    wait_check(&gw, true, "status 200").await;
}

#[tokio::test]
async fn a_wrong_ca_fails_the_check_with_a_clear_detail_and_takes_the_region_down() {
    let pki = pki();
    let other = TestPki::new(&[&[API_NAME]]);
    let api = ApiServer::start(&pki.leaves[0].cert_pem, &pki.leaves[0].key_pem, None).await;
    let app = region("fra", "fra-1").await;
    let yaml = config(
        app.addr(),
        api.addr,
        &format!("ca_file: ca.pem, sni: {API_NAME}"),
    );
    let (gw, _) = Gateway::start(&yaml, &[("ca.pem", other.ca_pem.as_bytes())]).await;
    let detail = wait_check(&gw, false, "invalid peer certificate").await;
    // Both CAs have the same name, so rustls finds "the" issuer and its signature fails.
    assert!(
        detail.contains("BadSignature") || detail.contains("UnknownIssuer"),
        "{detail}"
    );
    assert!(
        api.seen().is_empty(),
        "no request may pass an unverified handshake"
    );
}

#[tokio::test]
async fn the_system_roots_do_not_trust_a_private_cluster_ca() {
    let pki = pki();
    let api = ApiServer::start(&pki.leaves[0].cert_pem, &pki.leaves[0].key_pem, None).await;
    let app = region("fra", "fra-1").await;
    let yaml = config(app.addr(), api.addr, &format!("sni: {API_NAME}"));
    let (gw, _) = Gateway::start(&yaml, &[]).await;
    wait_check(&gw, false, "invalid peer certificate").await;
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_without_the_right_sni() {
    let pki = pki();
    let api = ApiServer::start(&pki.leaves[0].cert_pem, &pki.leaves[0].key_pem, None).await;
    let app = region("fra", "fra-1").await;
    // No `sni`: the check asks for 127.0.0.1, which the certificate does not name.
    let yaml = config(app.addr(), api.addr, "ca_file: ca.pem");
    let (gw, _) = Gateway::start(&yaml, &[("ca.pem", pki.ca_pem.as_bytes())]).await;
    wait_check(&gw, false, "invalid peer certificate").await;
}

#[tokio::test]
async fn a_required_token_is_sent_and_a_rotated_token_file_is_used_at_once() {
    let pki = pki();
    let api = ApiServer::start(&pki.leaves[0].cert_pem, &pki.leaves[0].key_pem, None).await;
    api.require_token("token-one-0123456789");
    let app = region("fra", "fra-1").await;
    let yaml = config(
        app.addr(),
        api.addr,
        &format!("ca_file: ca.pem, sni: {API_NAME}, bearer_token_file: sa/token"),
    );
    let (gw, _) = Gateway::start(
        &yaml,
        &[
            ("ca.pem", pki.ca_pem.as_bytes()),
            ("sa/token", b"token-one-0123456789\n"),
        ],
    )
    .await;
    wait_check(&gw, true, "status 200").await;
    assert!(
        api.seen()
            .contains(&Some("Bearer token-one-0123456789".into())),
        "{:?}",
        api.seen()
    );

    // The API server moves to a new token: the old one is refused.
    api.require_token("token-two-9876543210");
    wait_check(&gw, false, "status 401").await;

    // The token file rotates (atomically, as the kubelet does): the next check sends it.
    let dir = gw.dir.path().join("sa");
    std::fs::write(dir.join("token.new"), "token-two-9876543210\n").expect("write token");
    std::fs::rename(dir.join("token.new"), dir.join("token")).expect("rotate token");
    wait_check(&gw, true, "status 200").await;
    assert!(
        api.seen()
            .contains(&Some("Bearer token-two-9876543210".into())),
        "{:?}",
        api.seen()
    );
}

#[tokio::test]
async fn a_check_without_the_token_is_refused() {
    let pki = pki();
    let api = ApiServer::start(&pki.leaves[0].cert_pem, &pki.leaves[0].key_pem, None).await;
    api.require_token("token-one-0123456789");
    let app = region("fra", "fra-1").await;
    let yaml = config(
        app.addr(),
        api.addr,
        &format!("ca_file: ca.pem, sni: {API_NAME}"),
    );
    let (gw, _) = Gateway::start(&yaml, &[("ca.pem", pki.ca_pem.as_bytes())]).await;
    wait_check(&gw, false, "status 401").await;
    assert!(api.seen().iter().all(Option::is_none), "{:?}", api.seen());
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_the_server_requires_one() {
    let pki = pki();
    let api = ApiServer::start(
        &pki.leaves[0].cert_pem,
        &pki.leaves[0].key_pem,
        Some(&pki.ca_der),
    )
    .await;
    let client = &pki.leaves[1];
    let app = region("fra", "fra-1").await;
    let files = [
        ("ca.pem", pki.ca_pem.as_bytes()),
        ("client.pem", client.cert_pem.as_bytes()),
        ("client.key", client.key_pem.as_bytes()),
    ];

    let without = config(
        app.addr(),
        api.addr,
        &format!("ca_file: ca.pem, sni: {API_NAME}"),
    );
    let (gw, _) = Gateway::start(&without, &files).await;
    wait_check(&gw, false, "request").await;
    drop(gw);

    let with = config(
        app.addr(),
        api.addr,
        &format!(
            "ca_file: ca.pem, sni: {API_NAME}, client_cert: client.pem, client_key: client.key"
        ),
    );
    let (gw, _) = Gateway::start(&with, &files).await;
    wait_check(&gw, true, "status 200").await;
}

#[tokio::test]
async fn insecure_skip_verify_passes_any_certificate_and_gateway_check_warns() {
    let pki = pki();
    let api = ApiServer::start(&pki.leaves[0].cert_pem, &pki.leaves[0].key_pem, None).await;
    let app = region("fra", "fra-1").await;
    let yaml = config(app.addr(), api.addr, "insecure_skip_verify: true");
    let (gw, _) = Gateway::start(&yaml, &[]).await;
    wait_check(&gw, true, "status 200").await;

    let (code, stdout, stderr) = gateway_cli(&["check", gw.config_path().to_str().expect("path")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(", 1 warning)"), "{stdout}");
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("regions.fra.checks[0].insecure_skip_verify: INSECURE"),
        "{stderr}"
    );
}

/// Region `fra` whose one endpoint is the HTTPS server at `endpoint`, reached with
/// `tls.sni` and probed on `/healthz` with the extra probe settings `http` (flow-mapping
/// entries).
fn https_endpoint_config(endpoint: std::net::SocketAddr, http: &str) -> String {
    format!(
        r#"listeners:
  - {{ name: http, bind: "{{listen}}" }}
admin: {{ bind: "{{admin}}" }}
regions:
  fra:
    endpoints: [{{ id: fra-1, address: "{endpoint}" }}]
    tls: {{ sni: {API_NAME} }}
    probe: {{ http: {{ path: /healthz, {http} }}, interval: 200ms, timeout: 200ms, rise: 1, fall: 1 }}
routes:
  - {{ name: app, regions: [fra] }}
"#
    )
}

/// The `fra-1` endpoint in `/status`: (health, last probe detail).
async fn endpoint(gw: &Gateway) -> (String, String) {
    let status = gw.status(None).await;
    let ep = &status["regions"][0]["endpoints"][0];
    (
        ep["health"].as_str().unwrap_or_default().to_string(),
        ep["last_probe"]["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test]
async fn an_https_endpoint_probe_trusts_its_ca_file_asks_for_the_region_sni_and_sends_its_token() {
    let pki = pki();
    let other = TestPki::new(&[&[API_NAME]]);
    let app = ApiServer::start(&pki.leaves[0].cert_pem, &pki.leaves[0].key_pem, None).await;
    app.require_token("probe-token-0123456789");
    let files = [
        ("ca.pem", pki.ca_pem.as_bytes()),
        ("other.pem", other.ca_pem.as_bytes()),
        ("probe.token", b"probe-token-0123456789".as_slice()),
    ];

    let yaml = https_endpoint_config(app.addr, "ca_file: ca.pem, bearer_token_file: probe.token");
    let (gw, _) = Gateway::start(&yaml, &files).await;
    let start = std::time::Instant::now();
    while endpoint(&gw).await != ("up".to_string(), "status 200".to_string()) {
        assert!(
            start.elapsed() < DEADLINE,
            "endpoint never up: {:?}",
            endpoint(&gw).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        app.seen()
            .contains(&Some("Bearer probe-token-0123456789".into())),
        "{:?}",
        app.seen()
    );
    drop(gw);

    let yaml = https_endpoint_config(
        app.addr,
        "ca_file: other.pem, bearer_token_file: probe.token",
    );
    let (gw, _) = Gateway::start(&yaml, &files).await;
    let start = std::time::Instant::now();
    loop {
        let (health, detail) = endpoint(&gw).await;
        if health == "down" && detail.contains("invalid peer certificate") {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "endpoint never down: {health} {detail}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[test]
fn tls_settings_on_a_plaintext_check_and_half_a_client_identity_are_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("gateway.yaml");
    std::fs::write(dir.path().join("client.pem"), "x").expect("write");
    let yaml = r#"listeners: [{ name: http, bind: "127.0.0.1:18080" }]
regions:
  fra:
    endpoints: [{ id: fra-1, address: "127.0.0.1:9001" }]
    checks:
      - { name: api, url: "http://127.0.0.1:6443/readyz", ca_file: ca.pem }
      - { name: api2, url: "https://127.0.0.1:6443/readyz", client_cert: client.pem, bearer_token_file: missing.token }
routes: [{ name: app, regions: [fra] }]
"#;
    std::fs::write(&file, yaml).expect("write config");
    let (code, _, stderr) = gateway_cli(&["check", file.to_str().expect("path")]);
    assert_eq!(code, 64, "{stderr}");
    for expected in [
        "regions.fra.checks[0].ca_file: `ca_file` is a TLS setting, but the URL is plaintext",
        "regions.fra.checks[1].client_cert: `client_cert` without `client_key`",
        "regions.fra.checks[1].bearer_token_file: cannot read bearer token file",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}
