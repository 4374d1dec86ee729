//! Broken promises found by the audit (issue #16), each reproduced against a real gateway
//! process: replays of requests that reached the app, sticky pins that skip the failback
//! hold-down, failover state that a reload reinterprets, and failover into a flapping tier.

use std::time::Duration;

use bytes::Bytes;
use gateway_tests::client::{self, get, H1};
use gateway_tests::raw::{RawUpstream, Step};
use gateway_tests::{config, eventually, region, Fleet, Gateway, Mode};
use http::Request;
use testbed::yaml::{GatewayYaml, OnFailback, Probe, Region, Route, Sticky};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Route `app` over tiers `[fra, ber]` with 3 attempts, one raw endpoint each, TCP probes.
fn raw_pair(fra: std::net::SocketAddr, ber: std::net::SocketAddr) -> GatewayYaml {
    let probe = Probe::tcp(Duration::from_millis(500), Duration::from_millis(500));
    config()
        .region("fra", Region::one("fra-1", fra).probe(probe.clone()))
        .region("ber", Region::one("ber-1", ber).probe(probe))
        .route(Route::new("app", &["fra", "ber"]).retry_attempts(3))
}

#[tokio::test]
async fn post_on_a_reused_connection_reset_after_the_app_read_it_is_not_replayed() {
    // fra: the first request (a GET) is answered and its connection kept alive; the POST that
    // follows on that pooled connection is read completely, then the connection is reset.
    let fra = RawUpstream::start(|n| {
        if n == 0 {
            vec![Step::Write(Bytes::from_static(OK))]
        } else {
            vec![Step::Reset]
        }
    })
    .await;
    let ber = RawUpstream::start(|_| vec![Step::Write(Bytes::from_static(OK))]).await;
    let (gw, _) = Gateway::start(&raw_pair(fra.addr(), ber.addr()), &[]).await;

    let mut h1 = H1::connect(gw.addr).await;
    assert_eq!(h1.send(get("app.test", "/warm")).await.status, 200);
    let post = Request::post("/charge")
        .header("host", "app.test")
        .body(client::full("amount=10"))
        .expect("req");
    let resp = h1.send(post).await;
    let log = fra.log();
    assert_eq!(log.len(), 2, "fra saw the GET and the POST: {log:?}");
    assert_eq!(
        log[0].0, log[1].0,
        "the POST went over the pooled connection"
    );
    assert_eq!(
        ber.requests(),
        0,
        "the POST was replayed on ber: {:?}",
        ber.log()
    );
    assert_eq!(resp.status, 502, "{:?}", resp.body);
}

#[tokio::test]
async fn a_post_whose_header_never_reached_the_upstream_is_retried() {
    // The pooled connection is closed by fra right after the first answer: the POST's header
    // write finds it dead (or the read sees it closed before any request byte was read).
    let fra = RawUpstream::start(|n| {
        if n == 0 {
            vec![Step::Write(Bytes::from_static(OK)), Step::Reset]
        } else {
            vec![Step::Write(Bytes::from_static(OK))]
        }
    })
    .await;
    let ber = RawUpstream::start(|_| vec![Step::Write(Bytes::from_static(OK))]).await;
    let (gw, _) = Gateway::start(&raw_pair(fra.addr(), ber.addr()), &[]).await;
    let mut h1 = H1::connect(gw.addr).await;
    assert_eq!(h1.send(get("app.test", "/warm")).await.status, 200);
    // Let the reset land on the pooled connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let post = Request::post("/charge")
        .header("host", "app.test")
        .body(client::full("amount=10"))
        .expect("req");
    let resp = h1.send(post).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let posts = fra
        .log()
        .iter()
        .chain(ber.log().iter())
        .filter(|(_, l)| l.starts_with("POST"))
        .count();
    assert_eq!(posts, 1, "the POST reached exactly one app");
}

#[tokio::test]
async fn a_client_abandoning_a_post_mid_body_is_not_replayed_elsewhere() {
    let fra = RawUpstream::start(|_| vec![Step::Write(Bytes::from_static(OK))]).await;
    let ber = RawUpstream::start(|_| vec![Step::Write(Bytes::from_static(OK))]).await;
    let passive = raw_pair(fra.addr(), ber.addr());
    let (gw, _) = Gateway::start(&passive, &[]).await;
    // Pool a connection to fra first, as in the audit's reproduction.
    let mut h1 = H1::connect(gw.addr).await;
    assert_eq!(h1.send(get("app.test", "/warm")).await.status, 200);
    for i in 0..3 {
        let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
        tcp.write_all(
            b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100000\r\n\r\nfirst bytes",
        )
        .await
        .expect("write");
        eventually("fra saw the upload start", || {
            let n = fra.requests();
            async move { n > i + 1 }
        })
        .await;
        drop(tcp);
        eventually("fra's connection given up", || {
            let n = fra.closed_by_peer();
            async move { n > i }
        })
        .await;
    }
    // Give a wrongly scheduled replay time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ber.requests(), 0, "replayed: {:?}", ber.log());
    // And the aborts ejected nothing: fra still serves.
    let resp = h1.send(get("app.test", "/after")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        fra.log().last().map(|(_, l)| l.as_str()),
        Some("GET /after HTTP/1.1")
    );
}

/// Regions fra, ber and ams, one endpoint each.
async fn three_regions() -> Fleet {
    Fleet::start(&[("fra", 1), ("ber", 1), ("ams", 1)]).await
}

/// `fleet`'s regions probed every 100 ms (HTTP, rise 1, fall 1, no jitter), sticky key `k1`
/// (from `k1.key`), and `routes`.
fn sticky_config(fleet: &Fleet, routes: impl IntoIterator<Item = Route>) -> GatewayYaml {
    let probe = Probe::http(
        "/healthz",
        Duration::from_millis(100),
        Duration::from_millis(100),
    )
    .rise_fall(1, 1)
    .jitter(0);
    let config = fleet
        .config(&Region::default().probe(probe))
        .sticky_keys(&[("k1", "k1.key")]);
    routes.into_iter().fold(config, GatewayYaml::route)
}

/// Switches `fleet`'s region (region, mode) and waits (`what`) until the gateway has it down, or
/// up when the mode is [`Mode::Ok`].
async fn switch(gw: &Gateway, fleet: &Fleet, (region, mode): (&str, Mode), what: &str) {
    let up = mode == Mode::Ok;
    fleet.set(region, mode);
    eventually(what, || region_up(gw, region, up)).await;
}

/// Route `name` over `tiers` with a one-hour failback hold-down.
fn held(name: &str, tiers: &[&str]) -> Route {
    Route::new(name, tiers).hold_down(Duration::from_secs(3600))
}

const KEY: &[u8] = b"k1-secret-0123456789abcdef0123456789";

async fn status(gw: &Gateway) -> serde_json::Value {
    gw.status(None).await
}

async fn region_up(gw: &Gateway, name: &str, up: bool) -> bool {
    gw.region_is(name, up).await
}

/// One request to `host`: (region that answered, new affinity cookie if one was set).
async fn call(gw: &Gateway, host: &str, cookie: Option<&str>) -> (String, Option<String>) {
    let mut req = Request::get("/s").header("host", host);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("gw_affinity={c}"));
    }
    let resp = H1::connect(gw.addr)
        .await
        .send(req.body(client::empty()).expect("req"))
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let set = resp.set_cookie("gw_affinity");
    (resp.header("x-region").unwrap_or("").to_string(), set)
}

#[tokio::test]
async fn a_sticky_pin_to_a_region_inside_its_hold_down_is_not_honoured() {
    let fleet = three_regions().await;
    let sticky = |on_failback| Sticky::default().on_failback(on_failback).insecure();
    let routes = [
        held("stay", &["fra", "ber"])
            .host("stay.test")
            .sticky(sticky(OnFailback::Stay)),
        held("ret", &["fra", "ber"])
            .host("ret.test")
            .sticky(sticky(OnFailback::Return)),
    ];
    let (gw, _) = Gateway::start(&sticky_config(&fleet, routes), &[("k1.key", KEY)]).await;
    let mut pins = Vec::new();
    for host in ["stay.test", "ret.test"] {
        let (region, cookie) = call(&gw, host, None).await;
        assert_eq!(region, "fra");
        pins.push((host, cookie.expect("a cookie is issued")));
    }
    switch(&gw, &fleet, ("fra", Mode::Refuse), "fra down").await;
    for host in ["stay.test", "ret.test"] {
        assert_eq!(call(&gw, host, None).await.0, "ber");
    }
    switch(&gw, &fleet, ("fra", Mode::Ok), "fra up again").await;
    // fra is up but inside its one-hour hold-down: no traffic, cookie or not.
    for (host, cookie) in &pins {
        assert_eq!(
            call(&gw, host, None).await.0,
            "ber",
            "{host} without cookie"
        );
        let (region, reissued) = call(&gw, host, Some(cookie)).await;
        assert_eq!(
            region, "ber",
            "{host}: an old fra cookie skipped the hold-down"
        );
        assert!(
            reissued.is_some(),
            "{host}: the re-pinned session gets a new cookie"
        );
    }
}

#[tokio::test]
async fn a_reload_that_reorders_tiers_keeps_the_serving_region() {
    let fleet = three_regions().await;
    let config = |tiers: &[&str]| sticky_config(&fleet, [held("app", tiers)]);
    let (gw, _) = Gateway::start(&config(&["fra", "ber", "ams"]), &[("k1.key", KEY)]).await;
    assert_eq!(call(&gw, "app.test", None).await.0, "fra");
    switch(&gw, &fleet, ("fra", Mode::Refuse), "fra down").await;
    assert_eq!(call(&gw, "app.test", None).await.0, "ber");
    switch(&gw, &fleet, ("fra", Mode::Ok), "fra up again").await;
    assert_eq!(call(&gw, "app.test", None).await.0, "ber", "hold-down");
    // Same tiers, another order: ber still serves (it is the active tier, wherever it is).
    gw.write_config(&config(&["fra", "ams", "ber"]));
    eventually("reload applied", || async {
        status(&gw).await["routes"][0]["tiers"][1][0]["region"] == "ams"
    })
    .await;
    for _ in 0..5 {
        assert_eq!(call(&gw, "app.test", None).await.0, "ber");
    }
    let s = status(&gw).await;
    assert_eq!(s["routes"][0]["active_tier"], 2, "{s}");
}

#[tokio::test]
async fn failover_prefers_a_stable_lower_tier_over_a_higher_tier_inside_its_hold_down() {
    let fleet = three_regions().await;
    let routes = [held("app", &["fra", "ber", "ams"])];
    let (gw, _) = Gateway::start(&sticky_config(&fleet, routes), &[("k1.key", KEY)]).await;
    assert_eq!(call(&gw, "app.test", None).await.0, "fra");
    switch(&gw, &fleet, ("fra", Mode::Refuse), "fra down").await;
    assert_eq!(call(&gw, "app.test", None).await.0, "ber");
    // fra comes back (inside its hold-down: it may be flapping); then ber fails.
    switch(&gw, &fleet, ("fra", Mode::Ok), "fra up again").await;
    switch(&gw, &fleet, ("ber", Mode::Refuse), "ber down").await;
    for _ in 0..5 {
        assert_eq!(
            call(&gw, "app.test", None).await.0,
            "ams",
            "ams has been up all along; fra only just came back"
        );
    }
}

#[tokio::test]
async fn request_timeout_is_a_total_deadline_even_for_a_trickling_response() {
    // The upstream sends its header, then one byte every 100 ms for 60 s: no single read waits
    // long, but the whole response takes far longer than `timeouts.request`.
    let mut steps = vec![Step::Write(Bytes::from_static(
        b"HTTP/1.1 200 OK\r\nContent-Length: 600\r\n\r\n",
    ))];
    for _ in 0..600 {
        steps.push(Step::Write(Bytes::from_static(b"x")));
        steps.push(Step::Pause(Duration::from_millis(100)));
    }
    let fra = RawUpstream::start(move |_| steps.clone()).await;
    let probe = Probe::tcp(Duration::from_secs(1), Duration::from_secs(1));
    let config = config()
        .region("fra", Region::one("fra-1", fra.addr()).probe(probe))
        .route(Route::new("app", &["fra"]).request_timeout(Duration::from_secs(1)));
    let (gw, _) = Gateway::start(&config, &[]).await;
    let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let (raw, end) = gateway_tests::raw::read_until_closed(
        &mut tcp,
        b"GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n",
        b"\r\n\r\n",
        || {},
        gateway_tests::DEADLINE,
    )
    .await;
    let (head, body) = gateway_tests::raw::split_response(&raw);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_ne!(end, gateway_tests::raw::End::StillOpen);
    assert!(
        body.len() < 600,
        "the deadline cut the response short (got {} bytes)",
        body.len()
    );
}

#[tokio::test]
async fn a_retry_uses_a_higher_tier_inside_its_hold_down_only_as_a_last_resort() {
    // Policy: the hold-down keeps *new* traffic off a region that just came back; a request
    // that already failed everywhere else may still try it rather than fail the user.
    let fra = region("fra", "fra-1").await;
    let ber = RawUpstream::start(|_| {
        vec![Step::Write(Bytes::from_static(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy",
        ))]
    })
    .await;
    let every_100ms = (Duration::from_millis(100), Duration::from_millis(100));
    let fra_probe = Probe::http("/healthz", every_100ms.0, every_100ms.1).rise_fall(1, 1);
    let ber_probe = Probe::tcp(every_100ms.0, every_100ms.1);
    let config = config()
        .region("fra", Region::one("fra-1", fra.addr()).probe(fra_probe))
        .region("ber", Region::one("ber-1", ber.addr()).probe(ber_probe))
        .route(held("app", &["fra", "ber"]));
    let (gw, _) = Gateway::start(&config, &[]).await;
    assert_eq!(call(&gw, "app.test", None).await.0, "fra");
    fra.set_mode(Mode::Refuse);
    eventually("fra down", || region_up(&gw, "fra", false)).await;
    fra.set_mode(Mode::Ok);
    eventually("fra up again", || region_up(&gw, "fra", true)).await;
    let s = status(&gw).await;
    assert_eq!(
        s["routes"][0]["active_tier"], 1,
        "ber serves during fra's hold-down: {s}"
    );
    let before = ber.requests();
    let (region, _) = call(&gw, "app.test", None).await;
    assert_eq!(
        ber.requests(),
        before + 1,
        "the active tier was tried first"
    );
    assert_eq!(region, "fra", "the failed request was retried on fra");
    assert_eq!(
        status(&gw).await["routes"][0]["active_tier"],
        1,
        "no failback"
    );
}
