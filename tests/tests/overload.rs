//! Overload never becomes an outage (issue 10): fail-open within residency, admission limits
//! answered with an *overloaded* 503, capacity spill-over, and the timeout ejection cap.

use gateway_tests::client::{get, H1};
use gateway_tests::{endpoints, eventually, region, Gateway, Mode, RegionServer};

/// Fast probes, no jitter.
const PROBE: &str =
    "{ http: { path: /healthz }, interval: 200ms, timeout: 150ms, rise: 2, fall: 2, jitter: 0% }";

/// fra and ber, each `    probe: …` plus its extra lines, and `routes` (YAML list items).
fn yaml(
    fra: &[RegionServer],
    ber: &[RegionServer],
    fra_lines: &str,
    ber_lines: &str,
    routes: &str,
    top: &str,
) -> String {
    format!(
        r#"{top}
admin: {{ bind: "{{admin}}" }}
listeners:
  - {{ name: http, bind: "{{listen}}" }}
regions:
  fra:
    endpoints: {fra}
{fra_lines}  ber:
    endpoints: {ber}
{ber_lines}routes:
{routes}"#,
        fra = endpoints(fra),
        ber = endpoints(ber),
    )
}

/// Fast probes on both regions, `fra_extra` lines in fra, and route `app` over fra then ber
/// with `route` lines (and any further routes after them).
fn config(
    fra: &[RegionServer],
    ber: &[RegionServer],
    fra_extra: &str,
    route: &str,
    top: &str,
) -> String {
    let probe = format!("    probe: {PROBE}\n");
    yaml(
        fra,
        ber,
        &format!("{probe}{fra_extra}"),
        &probe,
        &format!("  - name: app\n    regions: [fra, ber]\n{route}"),
        top,
    )
}

/// Starts the gateway on `text`, then switches every fra endpoint to `mode`.
async fn start_with_fra(text: &str, fra: &[RegionServer], mode: Mode) -> Gateway {
    let (gw, _) = Gateway::start(text, &[]).await;
    for f in fra {
        f.set_mode(mode.clone());
    }
    gw
}

/// Asserts that `/metrics` has the line `series value`.
async fn assert_metric(gw: &Gateway, series: &str, value: u64) {
    let (_, metrics) = gw.admin_call("GET", "/metrics", None).await;
    let line = format!("{series} {value}");
    assert!(
        metrics.lines().any(|l| l == line),
        "no `{line}` in:\n{metrics}"
    );
}

async fn send(gw: &Gateway, path: &str) -> gateway_tests::client::Collected {
    H1::connect(gw.addr).await.send(get("a", path)).await
}

/// Starts `count` `/slow/{ms}` requests on their own connections and waits until they reached
/// the `upstreams` (their request counters grew by `count`) and `total` requests are in flight
/// to the regions at the gateway (so that no earlier request still holds a slot).
async fn hold(
    gw: &Gateway,
    host: &'static str,
    path: &str,
    count: usize,
    upstreams: &[&RegionServer],
    total: u64,
) -> Vec<tokio::task::JoinHandle<u16>> {
    let arrived = || upstreams.iter().map(|u| u.requests()).sum::<u64>();
    let before = arrived();
    let held: Vec<_> = (0..count)
        .map(|_| {
            let (addr, path) = (gw.addr, path.to_string());
            tokio::spawn(async move { H1::connect(addr).await.send(get(host, &path)).await.status })
        })
        .collect();
    eventually("the slow requests are in flight", || async {
        let s = gw.status(None).await;
        let regions = s["regions"].as_array().cloned().unwrap_or_default();
        let in_flight: u64 = regions
            .iter()
            .map(|r| r["in_flight"].as_u64().unwrap_or(0))
            .sum();
        arrived() == before + count as u64 && in_flight == total
    })
    .await;
    held
}

#[tokio::test]
async fn fail_open_serves_when_health_is_wrong_and_never_leaves_the_allowed_regions() {
    let fra = [region("fra", "fra-1").await];
    let ber = [region("ber", "ber-1").await];
    // fra's probe expects a status the app never sends: health says down, the app is fine.
    let fra_probe = "    probe: { http: { path: /healthz, expect_status: [204] }, interval: 200ms, timeout: 150ms, rise: 2, fall: 2, jitter: 0% }\n";
    let text = yaml(
        &fra,
        &ber,
        fra_probe,
        &format!("    probe: {PROBE}\n"),
        "  - { name: eu, match: { path_prefix: /eu/ }, regions: [fra], allowed_regions: [fra] }\n  - { name: eu-strict, match: { path_prefix: /strict/ }, regions: [fra], allowed_regions: [fra], on_all_down: reject }\n",
        "",
    );
    let (gw, _) = Gateway::start(&text, &[]).await;
    eventually("fra marked down", || async {
        gw.region_is("fra", false).await
    })
    .await;

    // fail_open (the default): the request still reaches fra and is served.
    let resp = send(&gw, "/eu/x").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.header("x-region"), Some("fra"));
    // reject: 503 at once.
    let resp = send(&gw, "/strict/x").await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.json()["error"], "no allowed region is up");

    let s = gw.status(None).await;
    assert_eq!(s["routes"][0]["failing_open"], true, "{s}");
    assert_eq!(s["routes"][1]["failing_open"], false, "{s}");
    assert_metric(&gw, "gateway_fail_open_total{route=\"eu\"}", 1).await;

    // The app really down too: fail_open tries it and answers 502, and ber (not allowed)
    // never gets a request.
    fra[0].set_mode(Mode::Refuse);
    let before = ber[0].requests();
    for _ in 0..5 {
        let resp = send(&gw, "/eu/x").await;
        assert_eq!(resp.status, 502, "{:?}", resp.body);
        assert_eq!(resp.json()["error"], "upstream failed");
    }
    assert_eq!(
        ber[0].requests(),
        before,
        "a disallowed region received requests"
    );
}

/// Found by `loadtest soak`: the only region that looked up crashed while health was wrong
/// about the other (passive ejections still running after it recovered). A request whose
/// first attempt went to the crashed region was answered 502 after trying its endpoints only:
/// its retry looked only at regions that looked up, so it never failed open to the region
/// that was fine.
#[tokio::test]
async fn a_retry_fails_open_when_the_last_region_that_looks_up_fails() {
    let fra = [region("fra", "fra-1").await];
    let ber = [region("ber", "ber-1").await];
    // fra is probed once at start, then not for an hour: only live traffic tells it failed,
    // after three refusals (one per request: fra has one endpoint).
    let fra_probe = "    probe: { http: { path: /healthz }, interval: 1h, timeout: 150ms, jitter: 0% }\n    passive: { consecutive_failures: 3, ejection: 5s, max_ejection: 60s }\n";
    // ber's probe expects a status the app never sends: health says down, the app is fine.
    let ber_probe = "    probe: { http: { path: /healthz, expect_status: [204] }, interval: 200ms, timeout: 150ms, rise: 2, fall: 2, jitter: 0% }\n";
    let text = yaml(
        &fra,
        &ber,
        fra_probe,
        ber_probe,
        "  - { name: app, regions: [fra, ber] }\n",
        "",
    );
    let (gw, _) = Gateway::start(&text, &[]).await;
    eventually("ber marked down", || async {
        gw.region_is("ber", false).await
    })
    .await;
    assert!(gw.region_is("fra", true).await);

    fra[0].set_mode(Mode::Refuse);
    // Requests 1 and 2 find fra up; the third ejects it; from the fourth on every allowed
    // region looks down from the start. Each must be served by ber.
    for i in 1..=5 {
        let resp = send(&gw, "/x").await;
        assert_eq!(
            resp.status,
            200,
            "request {i}: {}\n{}",
            String::from_utf8_lossy(&resp.body),
            gw.stderr_plain()
        );
        assert_eq!(resp.header("x-region"), Some("ber"), "request {i}");
    }
    assert_metric(&gw, "gateway_fail_open_total{route=\"app\"}", 5).await;
}

#[tokio::test]
async fn over_the_in_flight_limits_requests_get_an_overloaded_503_and_health_stays_up() {
    let fra = [region("fra", "fra-1").await];
    let ber = [region("ber", "ber-1").await];
    let text = config(
        &fra,
        &ber,
        "",
        "    max_in_flight: 2\n  - { name: other, match: { host: other }, regions: [ber] }\n",
        "server: { max_in_flight: 3 }",
    );
    let (gw, _) = Gateway::start(&text, &[]).await;
    let held = hold(&gw, "a", "/slow/3000", 2, &[&fra[0]], 2).await;

    // The route is full.
    let resp = send(&gw, "/x").await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.json()["error"], "overloaded");
    assert_eq!(resp.json()["reason"], "route");
    assert_eq!(resp.json()["route"], "app");
    assert!(resp.header("retry-after").is_some());
    // Another route still has room in the process...
    let other = hold(&gw, "other", "/slow/3000", 1, &[&ber[0]], 3).await;
    // ...until the process is full.
    let resp = H1::connect(gw.addr).await.send(get("other", "/x")).await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.json()["reason"], "process");

    for h in held {
        assert_eq!(h.await.expect("held"), 200, "admitted requests are served");
    }
    for h in other {
        assert_eq!(h.await.expect("other"), 200);
    }
    assert_eq!(send(&gw, "/x").await.status, 200, "room again");
    let s = gw.status(None).await;
    for r in s["regions"].as_array().expect("regions") {
        assert_eq!(r["up"], true, "{s}");
    }
    assert_eq!(s["failover_events"], serde_json::json!([]), "{s}");
    assert_metric(&gw, "gateway_shed_total{route=\"app\",reason=\"route\"}", 1).await;
}

#[tokio::test]
async fn capacity_spills_only_the_excess_to_the_next_tier_and_sheds_when_all_are_full() {
    let fra = [region("fra", "fra-1").await];
    let ber = [region("ber", "ber-1").await];
    let text = config(&fra, &ber, "    capacity: 1\n", "", "");
    let text = text.replace(
        "  ber:\n    endpoints",
        "  ber:\n    capacity: 1\n    endpoints",
    );
    let (gw, _) = Gateway::start(&text, &[]).await;
    assert_eq!(send(&gw, "/x").await.header("x-region"), Some("fra"));

    // One slow request fills fra: the next goes to ber, while fra stays the active tier.
    let first = hold(&gw, "a", "/slow/3000", 1, &[&fra[0]], 1).await;
    let resp = send(&gw, "/x").await;
    assert_eq!(resp.header("x-region"), Some("ber"), "the excess spills");
    // ber full as well: shed at the gateway, overloaded.
    let second = hold(&gw, "a", "/slow/3000", 1, &[&ber[0]], 2).await;
    let resp = send(&gw, "/x").await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.json()["error"], "overloaded");
    assert_eq!(resp.json()["reason"], "capacity");
    for h in first.into_iter().chain(second) {
        assert_eq!(h.await.expect("held"), 200);
    }
    // Room again: traffic is back on fra, and nothing ever failed over.
    assert_eq!(send(&gw, "/x").await.header("x-region"), Some("fra"));
    let s = gw.status(None).await;
    assert_eq!(s["failover_events"], serde_json::json!([]), "{s}");
    assert_eq!(s["routes"][0]["active_tier"], 0, "{s}");
}

/// Requests that time out on both endpoints of a region (TCP probes pass): timeouts may be the
/// gateway's own saturation, so they eject at most `max_ejected` of the region.
async fn ejected_after_timeouts(max_ejected: &str) -> (usize, bool) {
    let fra = [region("fra", "fra-1").await, region("fra", "fra-2").await];
    let ber = [region("ber", "ber-1").await];
    let tcp = "{ interval: 200ms, timeout: 150ms, rise: 2, fall: 2, jitter: 0% }";
    let text = yaml(
        &fra,
        &ber,
        &format!("    probe: {tcp}\n    passive: {{ consecutive_failures: 1, ejection: 60s, max_ejection: 60s{max_ejected} }}\n"),
        &format!("    probe: {tcp}\n"),
        "  - { name: app, regions: [fra, ber], retry: { attempts: 0 }, timeouts: { request: 200ms } }\n",
        "",
    );
    let gw = start_with_fra(&text, &fra, Mode::Blackhole).await;
    for _ in 0..6 {
        send(&gw, "/x").await;
    }
    let s = gw.status(None).await;
    let fra_status = &s["regions"][0];
    let ejected = fra_status["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter(|e| !e["ejected_for_ms"].is_null())
        .count();
    (ejected, fra_status["up"] == true)
}

#[tokio::test]
async fn timeouts_eject_at_most_the_cap_even_in_a_region_of_two() {
    let (ejected, up) = ejected_after_timeouts("").await;
    assert_eq!(ejected, 1, "the default 50% of two endpoints is one");
    assert!(up, "the region keeps an endpoint");
    // The cap is what held: without it both go.
    let (ejected, up) = ejected_after_timeouts(", max_ejected: 100%").await;
    assert_eq!(ejected, 2);
    assert!(!up);
}

#[tokio::test]
async fn a_crashed_region_is_still_ejected_whole_and_fails_over() {
    // Refusals are the upstream's own answer: no cap, the region goes at once.
    let fra = [region("fra", "fra-1").await, region("fra", "fra-2").await];
    let ber = [region("ber", "ber-1").await];
    // Probes an hour apart: only passive ejection can take fra down.
    let text = yaml(
        &fra,
        &ber,
        "    probe: { http: { path: /healthz }, interval: 1h, timeout: 1s }\n    passive: { consecutive_failures: 1, ejection: 60s }\n",
        &format!("    probe: {PROBE}\n"),
        "  - { name: app, regions: [fra, ber], retry: { attempts: 3 } }\n",
        "",
    );
    let gw = start_with_fra(&text, &fra, Mode::Refuse).await;
    for _ in 0..10 {
        let resp = send(&gw, "/x").await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-region"), Some("ber"));
    }
    eventually("fra ejected whole", || async {
        gw.region_is("fra", false).await
    })
    .await;
}

#[tokio::test]
async fn a_client_http2_connection_gets_at_most_client_h2_streams_at_once() {
    let fra = [region("fra", "fra-1").await];
    let ber = [region("ber", "ber-1").await];
    let text = config(&fra, &ber, "", "", "server: { client_h2_streams: 4 }");
    let (gw, _) = Gateway::start(&text, &[]).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let advertised = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = advertised.clone();
    tokio::spawn(async move {
        let mut conn = std::pin::pin!(conn);
        // Drive the connection, and note the stream limit the gateway's SETTINGS gave it.
        std::future::poll_fn(|cx| {
            let done = std::future::Future::poll(conn.as_mut(), cx);
            seen.store(
                conn.max_concurrent_send_streams(),
                std::sync::atomic::Ordering::Relaxed,
            );
            done
        })
        .await
    });
    // One exchange first, so that the client has the gateway's SETTINGS (streams opened before
    // them may be refused, as HTTP/2 allows).
    let req = http::Request::get("http://a/x").body(()).expect("request");
    assert_eq!(
        gateway_tests::raw::h2_exchange(&mut client, req, None, |_| {})
            .await
            .status,
        200
    );
    assert_eq!(
        advertised.load(std::sync::atomic::Ordering::Relaxed),
        4,
        "SETTINGS_MAX_CONCURRENT_STREAMS"
    );
    // 12 one-second calls, 4 at a time: at least three rounds. (Without the limit they all run
    // at once and take about one second.)
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let req = http::Request::get("http://a/slow/1000")
                    .body(())
                    .expect("request");
                gateway_tests::raw::h2_exchange(&mut client, req, None, |_| {}).await
            })
        })
        .collect();
    for c in calls {
        assert_eq!(
            c.await.expect("call").status,
            200,
            "every stream is served in turn"
        );
    }
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(2900),
        "12 calls of 1 s took {took:?}: more than 4 ran at once"
    );
}

#[tokio::test]
async fn above_max_connections_a_new_connection_is_closed_unanswered() {
    let fra = [region("fra", "fra-1").await];
    let ber = [region("ber", "ber-1").await];
    let text = config(&fra, &ber, "", "", "server: { max_connections: 2 }");
    let (gw, _) = Gateway::start(&text, &[]).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut c = H1::connect(gw.addr).await;
        assert_eq!(c.send(get("a", "/x")).await.status, 200);
        open.push(c);
    }
    let s = gw.status(None).await;
    assert_eq!(s["admission"]["connections"], 2, "{s}");
    assert_eq!(s["admission"]["max_connections"], 2, "{s}");

    // The third is accepted by the kernel, then closed without an answer.
    let answer = match H1::try_connect(gw.addr).await {
        Some(mut third) => third.try_send(get("a", "/x")).await.map(|r| r.status),
        None => None,
    };
    assert_eq!(answer, None, "a connection above the limit got an answer");
    assert_metric(&gw, "gateway_connections_refused_total", 1).await;
    // The open ones are still served.
    for c in &mut open {
        assert_eq!(c.send(get("a", "/x")).await.status, 200);
    }

    // One closes: there is room for a new one.
    open.pop();
    eventually("a new connection is served once one closed", || async {
        let served = match H1::try_connect(gw.addr).await {
            Some(mut c) => c.try_send(get("a", "/x")).await.map(|r| r.status),
            None => None,
        };
        served == Some(200)
    })
    .await;
    let s = gw.status(None).await;
    assert_eq!(s["regions"][0]["up"], true, "{s}");
}
