//! The admin commands (issue 14): `gateway status`, `gateway drain REGION`, `gateway undrain
//! REGION` and `gateway reload` against a running gateway, the admin address and token read
//! from its config file; a wrong token and a gateway that is not there fail clearly.

use std::time::Duration;

use gateway_tests::{eventually, free_port, gateway_cli, Fleet, Gateway};
use testbed::yaml::{Probe, Region, Route};

const TOKEN: &str = "cli-token-0123456789abcdef";

/// Regions fra and ber, probed every 200 ms, route `app` over fra then ber; the admin API
/// wants a token.
async fn gateway_with_token() -> (Fleet, Gateway, String) {
    let two = Fleet::start(&[("fra", 1), ("ber", 1)]).await;
    let probe = Probe::http(
        "/healthz",
        Duration::from_millis(200),
        Duration::from_millis(150),
    );
    let config = two
        .config(&Region::default().probe(probe))
        .route(Route::new("app", &["fra", "ber"]).hold_down(Duration::from_millis(500)))
        .token_file("admin.token");
    let (gw, _) = Gateway::start(&config, &[("admin.token", TOKEN.as_bytes())]).await;
    let path = gw.config_path().display().to_string();
    (two, gw, path)
}

/// Region `name` in `/status` (asked with the token).
async fn region_status(gw: &Gateway, name: &str) -> serde_json::Value {
    let s = gw.status(Some(TOKEN)).await;
    s["regions"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no region {name} in {s}"))
}

#[tokio::test]
async fn status_drain_undrain_and_reload_read_the_admin_address_and_token_from_the_config() {
    let (_two, gw, config) = gateway_with_token().await;

    let (code, out, err) = gateway_cli(&["status", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "gateway: ready",
        "routes:",
        "fra → ber",
        "serving: fra",
        "regions:",
    ] {
        assert!(out.contains(want), "no `{want}` in:\n{out}");
    }

    let (code, out, err) = gateway_cli(&[
        "drain",
        "fra",
        "--for",
        "5m",
        "--reason",
        "fire drill",
        "--by",
        "sre-test",
        "--config",
        &config,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("region fra drained for 5m by sre-test"),
        "{out}"
    );
    let fra = region_status(&gw, "fra").await;
    assert_eq!(fra["drain"]["reason"], "fire drill", "{fra}");
    assert_eq!(fra["drain"]["by"], "sre-test", "{fra}");
    assert!(fra["drained_for_ms"].as_u64() > Some(200_000), "{fra}");
    // The audit line in the gateway's log says who and why.
    eventually("the drain's audit line", || async {
        let log = gw.stderr_plain();
        log.lines().any(|l| {
            l.contains("region drained by operator")
                && l.contains("fire drill")
                && l.contains("sre-test")
        })
    })
    .await;
    let (code, out, _) = gateway_cli(&["status", "--config", &config]);
    assert_eq!(code, 0);
    assert!(out.contains("DRAINED ("), "{out}");
    assert!(out.contains("\"fire drill\" by sre-test"), "{out}");
    assert!(out.contains("serving: ber"), "{out}");
    assert!(out.contains("failover"), "the event is listed: {out}");

    let (code, out, err) = gateway_cli(&["undrain", "fra", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("region fra undrained"), "{out}");
    let fra = region_status(&gw, "fra").await;
    assert!(fra["drained_for_ms"].is_null(), "{fra}");
    assert!(fra["drain"].is_null(), "{fra}");

    let (code, out, err) = gateway_cli(&["reload", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"result\": \"unchanged\""), "{out}");

    let (code, out, err) = gateway_cli(&["status", "--json", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json["routes"][0]["name"], "app");

    // A drain of a region that does not exist is refused, and says so.
    let (code, _, err) = gateway_cli(&["drain", "nowhere", "--config", &config]);
    assert_eq!(code, 1);
    assert!(
        err.contains("404") && err.contains("no region `nowhere`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_wrong_or_missing_token_and_a_missing_gateway_fail_with_what_to_do() {
    let (_two, gw, _) = gateway_with_token().await;
    let admin = gw.admin.to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token-0123456789").expect("write");
    let wrong = wrong.display().to_string();

    for args in [
        vec!["status", "--admin", &admin, "--token-file", &wrong],
        vec!["status", "--admin", &admin],
        vec!["drain", "fra", "--admin", &admin, "--token-file", &wrong],
        vec!["reload", "--admin", &admin],
    ] {
        let (code, _, err) = gateway_cli(&args);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains("refused the token (401)"), "{args:?}: {err}");
        assert!(err.contains("--config"), "{args:?} says what to do: {err}");
    }
    let fra = region_status(&gw, "fra").await;
    assert!(
        fra["drained_for_ms"].is_null(),
        "a refused drain drains nothing: {fra}"
    );

    let nobody = free_port().to_string();
    let (code, _, err) = gateway_cli(&["status", "--admin", &nobody]);
    assert_eq!(code, 1);
    assert!(err.contains("no gateway admin API answers on"), "{err}");
}
