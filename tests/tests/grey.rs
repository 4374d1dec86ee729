//! Grey failures (issue 13): a slow endpoint costs users little before any probe or ejection
//! notices it. Real gateway process, real upstream servers on loopback.

use std::time::Duration;

use gateway_tests::client::{get, H1};
use gateway_tests::{endpoints, Gateway, Mode, RegionServer};

/// One region `fra` of `servers`, TCP probes an hour apart (only the first round runs, and a
/// slow answer never fails a TCP probe), no retries: every request goes to the endpoint chosen
/// for it and nowhere else.
fn one_region(servers: &[RegionServer]) -> String {
    format!(
        r#"admin: {{ bind: "{{admin}}" }}
listeners:
  - {{ name: http, bind: "{{listen}}" }}
regions:
  fra:
    endpoints: {fra}
    probe: {{ interval: 1h, timeout: 1s }}
routes:
  - {{ name: app, regions: [fra], retry: {{ attempts: 0 }} }}
"#,
        fra = endpoints(servers),
    )
}

/// Sends `count` GETs, `workers` at a time on their own keep-alive connections; every answer
/// must be a 200.
async fn send_all(gw: &Gateway, count: usize, workers: usize) {
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let addr = gw.addr;
            tokio::spawn(async move {
                let mut conn = H1::connect(addr).await;
                for _ in 0..count / workers {
                    assert_eq!(conn.send(get("a", "/x")).await.status, 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("worker");
    }
}

/// The endpoint entry `id` of region `fra` in `/status`.
async fn endpoint_status(gw: &Gateway, id: &str) -> serde_json::Value {
    let s = gw.status(None).await;
    s["regions"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no endpoint {id} in {s}"))
}

#[tokio::test]
async fn the_better_of_two_choices_moves_load_away_from_a_slow_endpoint() {
    let fra = [
        gateway_tests::region("fra", "fra-1").await,
        gateway_tests::region("fra", "fra-2").await,
    ];
    let (gw, _) = Gateway::start(&one_region(&fra), &[]).await;
    fra[1].set_mode(Mode::Slow(Duration::from_millis(150)));

    // One at a time, then eight at a time. Round robin would send half of each to the slow
    // endpoint; latency-aware choice sends it about one, the first time it is compared (an
    // endpoint with no answer yet counts as 30 ms, and the fast one's first answer may be
    // slower than that on a loaded machine) and a few more under concurrency.
    send_all(&gw, 40, 1).await;
    let (fast, slow) = (fra[0].requests(), fra[1].requests());
    assert_eq!(fast + slow, 40);
    assert!(slow <= 4, "one at a time: fast {fast}, slow {slow}");
    send_all(&gw, 160, 8).await;
    let (fast, slow) = (fra[0].requests(), fra[1].requests());
    assert_eq!(fast + slow, 200);
    assert!(
        slow <= 20,
        "eight at a time: fast {fast}, slow {slow} of 200"
    );

    // The estimates, as `/status` and `/metrics` show them.
    let slow_status = endpoint_status(&gw, "fra-2").await;
    let ttfb = slow_status["latency"]["ttfb_ms"].as_f64().expect("ttfb_ms");
    assert!(ttfb >= 100.0, "{slow_status}");
    assert!(
        slow_status["latency"]["samples"].as_u64() >= Some(1),
        "{slow_status}"
    );
    assert_eq!(slow_status["latency"]["in_flight"], 0, "{slow_status}");
    let fast_status = endpoint_status(&gw, "fra-1").await;
    let fast_ttfb = fast_status["latency"]["ttfb_ms"].as_f64().expect("ttfb_ms");
    assert!(fast_ttfb < ttfb, "fast {fast_status} slow {slow_status}");
    let (_, metrics) = gw.admin_call("GET", "/metrics", None).await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("gateway_endpoint_latency_seconds{") && l.contains("endpoint=\"fra-2\"")
        })
        .unwrap_or_else(|| panic!("no latency of fra-2 in:\n{metrics}"));
    let seconds: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a value");
    assert!(seconds >= 0.1, "{line}");
}

/// The sticky signing key file.
const KEY: &[(&str, &[u8])] = &[("k1.key", b"k1-secret-0123456789abcdef0123456789")];

/// A session id (`x-session-id`) that the route `api` pins to `endpoint`, found by asking.
async fn session_pinned_to(gw: &Gateway, endpoint: &str) -> String {
    for i in 0..200 {
        let id = format!("s{i}");
        let (status, answered) = call_session(gw, &id).await;
        assert_eq!(status, 200);
        if answered == endpoint {
            return id;
        }
    }
    panic!("no session id of 200 was pinned to {endpoint}");
}

/// GET `/x` with session id `id`: (status, endpoint that answered).
async fn call_session(gw: &Gateway, id: &str) -> (u16, String) {
    let req = http::Request::get("/x")
        .header("host", "a")
        .header("x-session-id", id)
        .body(gateway_tests::client::empty())
        .expect("request");
    let resp = H1::connect(gw.addr).await.send(req).await;
    let endpoint = resp.header("x-endpoint").unwrap_or("").to_string();
    (resp.status, endpoint)
}

/// A gateway over region `fra` of two endpoints with `fra_lines` (probe, passive), and route
/// `api` whose sessions are pinned by the `x-session-id` header: such sessions keep sending
/// requests to their endpoint whatever latency-aware choice would prefer, so its slow answers
/// are seen.
async fn pinned_sessions(fra_lines: &str) -> (Gateway, [RegionServer; 2]) {
    let fra = [
        gateway_tests::region("fra", "fra-1").await,
        gateway_tests::region("fra", "fra-2").await,
    ];
    let text = format!(
        r#"admin: {{ bind: "{{admin}}" }}
listeners:
  - {{ name: http, bind: "{{listen}}" }}
sticky_keys: [{{ id: k1, secret_file: "{{dir}}/k1.key" }}]
regions:
  fra:
    endpoints: {fra}
{fra_lines}routes:
  - {{ name: api, regions: [fra], retry: {{ attempts: 0 }}, sticky: {{ header: x-session-id }} }}
"#,
        fra = endpoints(&fra),
    );
    let (gw, _) = Gateway::start(&text, KEY).await;
    (gw, fra)
}

#[tokio::test]
async fn an_endpoint_far_slower_than_its_region_is_ejected_and_readmitted_once_it_recovers() {
    let (gw, fra) = pinned_sessions(
        "    probe: { interval: 200ms, timeout: 150ms, rise: 2, fall: 2, jitter: 0% }\n    passive: { ejection: 1s, max_ejection: 1s, latency: { factor: 3, min_samples: 3, min_latency: 100ms } }\n",
    )
    .await;
    let (fast, slow) = (
        session_pinned_to(&gw, "fra-1").await,
        session_pinned_to(&gw, "fra-2").await,
    );
    // fra-1's answers are what fra-2's are compared with.
    for _ in 0..3 {
        assert_eq!(call_session(&gw, &fast).await, (200, "fra-1".to_string()));
    }

    fra[1].set_mode(Mode::Slow(Duration::from_millis(300)));
    // Two slow answers count, the third ejects.
    for _ in 0..2 {
        assert_eq!(call_session(&gw, &slow).await, (200, "fra-2".to_string()));
    }
    let s = endpoint_status(&gw, "fra-2").await;
    assert!(s["ejected_for_ms"].is_null(), "not yet: {s}");
    assert_eq!(call_session(&gw, &slow).await, (200, "fra-2".to_string()));
    let s = endpoint_status(&gw, "fra-2").await;
    assert!(!s["ejected_for_ms"].is_null(), "ejected: {s}");
    assert_eq!(s["health"], "down", "{s}");
    // Meanwhile the session is served by the rest of the region.
    assert_eq!(call_session(&gw, &slow).await, (200, "fra-1".to_string()));
    let (_, metrics) = gw.admin_call("GET", "/metrics", None).await;
    let ejected = "gateway_slow_answers_total{region=\"fra\",outcome=\"ejected\"} 1";
    let counted = "gateway_slow_answers_total{region=\"fra\",outcome=\"counted\"} 2";
    for line in [ejected, counted] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }

    // Recovered: after the ejection, probes re-admit it.
    fra[1].set_mode(Mode::Ok);
    gateway_tests::eventually("fra-2 re-admitted", || async {
        let s = endpoint_status(&gw, "fra-2").await;
        s["health"] == "up" && s["ejected_for_ms"].is_null()
    })
    .await;
}

#[tokio::test]
async fn latency_ejection_can_be_turned_off() {
    let (gw, fra) = pinned_sessions(
        "    probe: { interval: 1h, timeout: 1s }\n    passive: { latency: { enabled: false, min_samples: 1 } }\n",
    )
    .await;
    let (fast, slow) = (
        session_pinned_to(&gw, "fra-1").await,
        session_pinned_to(&gw, "fra-2").await,
    );
    assert_eq!(call_session(&gw, &fast).await, (200, "fra-1".to_string()));
    fra[1].set_mode(Mode::Slow(Duration::from_millis(300)));
    for _ in 0..3 {
        assert_eq!(call_session(&gw, &slow).await, (200, "fra-2".to_string()));
    }
    let s = endpoint_status(&gw, "fra-2").await;
    assert!(s["ejected_for_ms"].is_null(), "{s}");
    assert_eq!(s["health"], "up", "{s}");
}

/// Sends GETs one at a time until one is answered by `region` (or the harness's deadline
/// passes); returns how many were sent.
async fn until_answered_by(conn: &mut H1, region: &str) -> usize {
    let start = std::time::Instant::now();
    for sent in 1.. {
        let resp = conn.send(get("a", "/x")).await;
        assert_eq!(resp.status, 200);
        if resp.json()["region"] == region {
            return sent;
        }
        assert!(
            start.elapsed() < gateway_tests::DEADLINE,
            "never answered by {region}"
        );
    }
    unreachable!()
}

#[tokio::test]
async fn a_region_slower_than_the_routes_slo_is_failed_over_and_offered_traffic_again_later() {
    let fra = [gateway_tests::region("fra", "fra-1").await];
    let ber = [gateway_tests::region("ber", "ber-1").await];
    let config = format!(
        r#"admin: {{ bind: "{{admin}}" }}
listeners:
  - {{ name: http, bind: "{{listen}}" }}
regions:
  fra:
    endpoints: {fra}
    probe: {{ interval: 1h, timeout: 1s }}
  ber:
    endpoints: {ber}
    probe: {{ interval: 1h, timeout: 1s }}
routes:
  - name: app
    regions: [fra, ber]
    failback: {{ hold_down: 500ms }}
    degraded: {{ ttfb: 100ms, for: 1s, recover_after: 2s }}
"#,
        fra = endpoints(&fra),
        ber = endpoints(&ber),
    );
    let (gw, _) = Gateway::start(&config, &[]).await;
    let mut conn = H1::connect(gw.addr).await;
    for _ in 0..5 {
        assert_eq!(conn.send(get("a", "/x")).await.json()["region"], "fra");
    }
    let route = |s: &serde_json::Value| s["routes"][0]["degraded"]["regions"][0].clone();
    assert_eq!(route(&gw.status(None).await)["degraded"], false);

    // fra answers in 300 ms, three times the SLO; probes (TCP) still pass, so only the
    // degradation moves the route. It takes `for` with ten fresh answers.
    fra[0].set_mode(Mode::Slow(Duration::from_millis(300)));
    let sent = until_answered_by(&mut conn, "ber").await;
    assert!(
        sent > 10,
        "degraded after {sent} requests, before ten slow answers"
    );
    let s = gw.status(None).await;
    assert_eq!(route(&s)["degraded"], true, "{s}");
    assert!(route(&s)["ttfb_ms"].as_f64() > Some(100.0), "{s}");
    let events = s["failover_events"].as_array().expect("events").clone();
    let failover = events
        .iter()
        .find(|e| e["kind"] == "failover")
        .unwrap_or_else(|| panic!("no failover event in {s}"));
    assert!(
        failover["cause"]
            .as_str()
            .is_some_and(|c| c.starts_with("degraded: fra")),
        "{failover}"
    );
    assert_eq!(failover["to"], serde_json::json!(["ber"]));
    // Meanwhile health says fra is up: it is the route that left it.
    assert_eq!(s["regions"][0]["up"], true, "{s}");

    // fra is fast again. After `recover_after` (2 s) and the hold-down (500 ms) the route
    // fails back and the fresh answers clear the degradation.
    fra[0].set_mode(Mode::Ok);
    until_answered_by(&mut conn, "fra").await;
    for _ in 0..12 {
        assert_eq!(conn.send(get("a", "/x")).await.json()["region"], "fra");
    }
    let s = gw.status(None).await;
    assert_eq!(route(&s)["degraded"], false, "{s}");
    assert!(
        s["failover_events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "failback")),
        "{s}"
    );
}
