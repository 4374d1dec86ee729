//! Sticky sessions across two gateway processes ("PoPs") that share only config and keys.

use std::time::Duration;

use gateway_tests::client::H1;
use gateway_tests::{eventually, Fleet, Gateway, Mode};
use http::Request;
use testbed::yaml::{GatewayYaml, OnFailback, Probe, Region, Route, Sticky};

const K1: &[u8] = b"k1-secret-0123456789abcdef0123456789";
const K2: &[u8] = b"k2-secret-abcdef0123456789abcdef0123";

/// Region fra with three endpoints, ber with two.
async fn fleet() -> Fleet {
    Fleet::start(&[("fra", 3), ("ber", 2)]).await
}

/// `fleet`'s regions probed every 200 ms, sticky `keys` (id, secret file) and three sticky
/// routes with cookies valid for `ttl`: `ret` (`/ret/`, back to fra on failback), `api`
/// (`/api/`, affinity by the `x-session-id` header) and `app` (stays on failback).
fn sticky_config(fleet: &Fleet, keys: &[(&str, &str)], ttl: Duration) -> GatewayYaml {
    let probe = Probe::http(
        "/healthz",
        Duration::from_millis(200),
        Duration::from_millis(150),
    );
    let hold_down = Duration::from_millis(300);
    let sticky = Sticky::default().ttl(ttl);
    fleet
        .config(&Region::default().probe(probe))
        .sticky_keys(keys)
        .route(
            Route::new("ret", &["fra", "ber"])
                .path_prefix("/ret/")
                .hold_down(hold_down)
                .sticky(sticky.clone().on_failback(OnFailback::Return).insecure()),
        )
        .route(
            Route::new("api", &["fra"])
                .path_prefix("/api/")
                .sticky(sticky.clone().header("x-session-id")),
        )
        .route(
            Route::new("app", &["fra", "ber"])
                .hold_down(hold_down)
                .sticky(sticky.on_failback(OnFailback::Stay)),
        )
}

const ONE_KEY: &[(&str, &str)] = &[("k1", "k1.key")];
const HOUR: Duration = Duration::from_secs(3600);

/// One request: (status, endpoint, new cookie value if one was set).
async fn call(
    addr: std::net::SocketAddr,
    path: &str,
    cookie: Option<&str>,
    session: Option<&str>,
) -> (u16, String, Option<String>) {
    let mut req = Request::get(path).header("host", "app.test");
    if let Some(c) = cookie {
        req = req.header("cookie", format!("theme=dark; gw_affinity={c}"));
    }
    if let Some(s) = session {
        req = req.header("x-session-id", s);
    }
    let resp = H1::connect(addr)
        .await
        .send(req.body(gateway_tests::client::empty()).expect("req"))
        .await;
    let set = resp.set_cookie("gw_affinity");
    (
        resp.status,
        resp.header("x-endpoint").unwrap_or("").to_string(),
        set,
    )
}

async fn two_pops(fleet: &Fleet, keys: &[(&str, &str)], ttl: Duration) -> (Gateway, Gateway) {
    let files: [(&str, &[u8]); 2] = [("k1.key", K1), ("k2.key", K2)];
    let (a, _) = Gateway::start(&sticky_config(fleet, keys, ttl), &files).await;
    let (b, _) = Gateway::start(&sticky_config(fleet, keys, ttl), &files).await;
    (a, b)
}

#[tokio::test]
async fn two_pops_keep_a_session_on_one_endpoint_and_repin_when_it_dies() {
    let fleet = fleet().await;
    let (a, b) = two_pops(&fleet, ONE_KEY, HOUR).await;
    let (status, first, cookie) = call(a.addr, "/", None, None).await;
    assert_eq!(status, 200);
    let cookie = cookie.expect("a cookie on the first response");
    for i in 0..100 {
        let pop = if i % 2 == 0 { b.addr } else { a.addr };
        let (status, endpoint, set) = call(pop, "/", Some(&cookie), None).await;
        assert_eq!(
            (status, endpoint.as_str()),
            (200, first.as_str()),
            "request {i}"
        );
        assert!(set.is_none(), "an honoured cookie is not replaced");
    }
    // Kill the pinned endpoint: re-pinned in the same region, with a cookie the other PoP honours.
    fleet.server(&first).set_mode(Mode::Refuse);
    let (status, second, new_cookie) = call(a.addr, "/", Some(&cookie), None).await;
    assert_eq!(status, 200, "no failed request");
    assert_ne!(second, first);
    assert!(second.starts_with("fra-"), "same region first: {second}");
    let new_cookie = new_cookie.expect("a new cookie after re-pinning");
    for _ in 0..10 {
        let (status, endpoint, _) = call(b.addr, "/", Some(&new_cookie), None).await;
        assert_eq!((status, endpoint.as_str()), (200, second.as_str()));
    }
}

#[tokio::test]
async fn stay_keeps_and_return_moves_sessions_after_failback() {
    let fleet = fleet().await;
    let (a, _b) = two_pops(&fleet, ONE_KEY, HOUR).await;
    let (_, _, stay_fra) = call(a.addr, "/", None, None).await;
    let (_, _, ret_fra) = call(a.addr, "/ret/", None, None).await;
    for s in fleet.servers("fra") {
        s.set_mode(Mode::Refuse);
    }
    let (status, stay_ber_ep, stay_ber) = call(a.addr, "/", stay_fra.as_deref(), None).await;
    assert_eq!(status, 200);
    assert!(stay_ber_ep.starts_with("ber-"), "{stay_ber_ep}");
    let (_, ret_ber_ep, ret_ber) = call(a.addr, "/ret/", ret_fra.as_deref(), None).await;
    assert!(ret_ber_ep.starts_with("ber-"));
    let (stay_ber, ret_ber) = (stay_ber.expect("re-pinned"), ret_ber.expect("re-pinned"));
    for s in fleet.servers("fra") {
        s.set_mode(Mode::Ok);
    }
    eventually("failback for new sessions", || async {
        call(a.addr, "/", None, None).await.1.starts_with("fra-")
    })
    .await;
    // stay: the session remains where it was moved.
    let (_, endpoint, set) = call(a.addr, "/", Some(&stay_ber), None).await;
    assert_eq!(endpoint, stay_ber_ep);
    assert!(set.is_none());
    // return: the session goes back to the primary with a new cookie.
    let (_, endpoint, set) = call(a.addr, "/ret/", Some(&ret_ber), None).await;
    assert!(
        endpoint.starts_with("fra-"),
        "{endpoint} (was {ret_ber_ep})"
    );
    assert!(set.is_some());
}

#[tokio::test]
async fn key_rotation_keeps_sessions_and_replaces_cookies_of_removed_keys() {
    let fleet = fleet().await;
    let files: [(&str, &[u8]); 2] = [("k1.key", K1), ("k2.key", K2)];
    let (gw, _) = Gateway::start(&sticky_config(&fleet, ONE_KEY, HOUR), &files).await;
    let (_, pinned, old) = call(gw.addr, "/", None, None).await;
    let old = old.expect("cookie");
    assert!(old.starts_with("1.k1."), "{old}");
    // Add k2 (verify only), then promote it to signing: old sessions stay.
    let keys = [("k1", "k1.key"), ("k2", "k2.key")];
    gw.write_config(&sticky_config(&fleet, &keys, HOUR));
    gw.wait_config_version("reload 2", 2).await;
    let keys = [("k2", "k2.key"), ("k1", "k1.key")];
    gw.write_config(&sticky_config(&fleet, &keys, HOUR));
    gw.wait_config_version("reload 3", 3).await;
    let (_, endpoint, set) = call(gw.addr, "/", Some(&old), None).await;
    assert_eq!(endpoint, pinned);
    assert!(
        set.is_none(),
        "a k1 cookie is still honoured while k1 verifies"
    );
    let (_, _, fresh) = call(gw.addr, "/", None, None).await;
    assert!(
        fresh.expect("cookie").starts_with("1.k2."),
        "new sessions are signed by k2"
    );
    // Remove k1: its cookies are replaced.
    gw.write_config(&sticky_config(&fleet, &[("k2", "k2.key")], HOUR));
    gw.wait_config_version("reload 4", 4).await;
    let (status, _, set) = call(gw.addr, "/", Some(&old), None).await;
    assert_eq!(status, 200);
    assert!(set.expect("replaced").starts_with("1.k2."));
    let (_, metrics) = gw.admin_call("GET", "/metrics", None).await;
    assert!(
        metrics.contains("outcome=\"invalid_unknown_key\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_cookies_get_a_normal_response_and_a_fresh_cookie() {
    let fleet = fleet().await;
    let files: [(&str, &[u8]); 1] = [("k1.key", K1)];
    let ttl = Duration::from_secs(1);
    let (gw, _) = Gateway::start(&sticky_config(&fleet, ONE_KEY, ttl), &files).await;
    let (_, _, good) = call(gw.addr, "/", None, None).await;
    let good = good.expect("cookie");
    let (_, _, other_route) = call(gw.addr, "/ret/", None, None).await;
    let mut tampered = good.clone().into_bytes();
    let i = tampered.len() - 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("utf-8");
    let truncated = good[..good.len() / 2].to_string();
    let cases = [
        ("tampered", tampered),
        ("truncated", truncated),
        ("garbage", "%%%not-a-token%%%".to_string()),
        ("empty", String::new()),
        ("huge", "x".repeat(3000)),
        ("wrong route", other_route.expect("cookie")),
    ];
    for (what, cookie) in &cases {
        let (status, endpoint, set) = call(gw.addr, "/", Some(cookie), None).await;
        assert_eq!(status, 200, "{what}");
        assert!(!endpoint.is_empty(), "{what}");
        assert!(
            set.is_some_and(|s| s.starts_with("1.k1.")),
            "{what}: no fresh cookie"
        );
    }
    // Expired (ttl 1 s).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _, set) = call(gw.addr, "/", Some(&good), None).await;
    assert_eq!(status, 200);
    assert!(set.is_some(), "expired cookie replaced");
    let (_, metrics) = gw.admin_call("GET", "/metrics", None).await;
    for reason in [
        "invalid_bad_mac",
        "invalid_malformed",
        "invalid_wrong_route",
        "invalid_expired",
    ] {
        assert!(
            metrics.contains(&format!("outcome=\"{reason}\"")),
            "{reason} not counted:\n{metrics}"
        );
    }
    assert!(gw.is_running_ref());
}

#[tokio::test]
async fn header_affinity_agrees_across_pops_and_moves_only_lost_sessions() {
    let fleet = fleet().await;
    let (a, b) = two_pops(&fleet, ONE_KEY, HOUR).await;
    let mut before = Vec::new();
    for i in 0..1000 {
        let id = format!("session-{i}");
        let (_, ea, _) = call(a.addr, "/api/x", None, Some(&id)).await;
        let (_, eb, _) = call(b.addr, "/api/x", None, Some(&id)).await;
        assert_eq!(ea, eb, "{id}: PoPs disagree");
        before.push(ea);
    }
    let on_fra2 = before.iter().filter(|e| *e == "fra-2").count();
    assert!(on_fra2 > 200, "spread over 3 endpoints: {on_fra2} on fra-2");
    fleet.servers("fra")[1].set_mode(Mode::Refuse);
    for gw in [&a, &b] {
        eventually("fra-2 marked down", || async {
            let s = gw.status(None).await;
            s["regions"][0]["endpoints"][1]["health"] == "down"
        })
        .await;
    }
    let mut moved = 0;
    for (i, was) in before.iter().enumerate() {
        let id = format!("session-{i}");
        let (_, now, _) = call(a.addr, "/api/x", None, Some(&id)).await;
        if &now != was {
            moved += 1;
            assert_eq!(was, "fra-2", "{id} moved from a live endpoint");
        }
    }
    assert_eq!(
        moved, on_fra2,
        "exactly the sessions of the lost endpoint moved"
    );
    eprintln!(
        "header affinity: {on_fra2} of 1000 sessions were on the lost endpoint; {moved} moved"
    );
}
