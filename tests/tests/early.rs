//! Early retry (issue 13): a safe request whose first byte is late is cut and sent to another
//! region; the upstream sees the cut; requests with bodies and unsafe methods never are; the
//! budget caps early retries when the whole fleet is slow. Real gateway process, real
//! upstreams on loopback.

use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_tests::client::{full, get, H1};
use gateway_tests::raw::{RawUpstream, Step};
use gateway_tests::{endpoints, eventually, Gateway, Mode};

/// Route `app` over `fra` (a raw upstream) then `ber`, TCP probes an hour apart (a stalled app
/// still accepts connections), a fixed early-retry deadline of 100 ms, hedging or not, and
/// reads that give up after 3 s.
fn stalled_primary(fra: &RawUpstream, ber: &str, hedge: bool) -> String {
    format!(
        r#"admin: {{ bind: "{{admin}}" }}
listeners:
  - {{ name: http, bind: "{{listen}}" }}
regions:
  fra:
    endpoints: [{{ id: fra-1, address: "{fra}" }}]
    probe: {{ interval: 1h, timeout: 1s }}
  ber:
    endpoints: {ber}
    probe: {{ interval: 1h, timeout: 1s }}
routes:
  - name: app
    regions: [fra, ber]
    timeouts: {{ read: 3s }}
    retry: {{ early: {{ enabled: true, min_delay: 100ms, max_delay: 100ms, hedge: {hedge} }} }}
"#,
        fra = fra.addr(),
    )
}

/// The route's `early_retry` entry in `/status`.
async fn early_status(gw: &Gateway) -> serde_json::Value {
    let s = gw.status(None).await;
    s["routes"][0]["early_retry"].clone()
}

/// Sends `n` GETs one after the other; each is answered by ber well before the 3 s read
/// timeout (generous: a loaded machine is slow, never that slow), after its first attempt
/// reached fra (`asked` counts them) and was cut (`cut` counts what fra saw of that).
async fn each_answered_by_ber_and_cut_seen(
    gw: &Gateway,
    n: usize,
    asked: impl Fn() -> usize,
    cut: impl Fn() -> usize,
) {
    let mut conn = H1::connect(gw.addr).await;
    for i in 1..=n {
        let started = Instant::now();
        let resp = conn.send(get("a", "/x")).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["region"], "ber", "request {i}");
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "request {i}"
        );
        assert_eq!(asked(), i, "every first attempt went to fra");
        eventually("fra sees the cut attempt cancelled", || async {
            cut() == i
        })
        .await;
    }
}

#[tokio::test]
async fn without_hedging_a_late_get_is_cut_answered_by_the_other_region_and_the_upstream_sees_the_cut(
) {
    let fra = RawUpstream::start(|_| vec![Step::StallUntilClosed]).await;
    let ber = [gateway_tests::region("ber", "ber-1").await];
    let (gw, _) = Gateway::start(&stalled_primary(&fra, &endpoints(&ber), false), &[]).await;
    let early = early_status(&gw).await;
    assert_eq!(early["deadline_ms"], 100.0, "{early}");

    // The cut attempt's connection is closed: the stalled app sees its request cancelled.
    each_answered_by_ber_and_cut_seen(&gw, 5, || fra.requests(), || fra.closed_by_peer()).await;
    let early = early_status(&gw).await;
    assert_eq!(
        (&early["sent"], &early["refused"]),
        (&5.into(), &0.into()),
        "{early}"
    );
    // A cut is not a failure: fra is neither ejected nor counted as failing.
    let s = gw.status(None).await;
    let fra_status = &s["regions"][0];
    assert_eq!(fra_status["name"], "fra");
    assert_eq!(fra_status["endpoints"][0]["health"], "up", "{fra_status}");
    assert!(
        fra_status["endpoints"][0]["ejected_for_ms"].is_null(),
        "{fra_status}"
    );
    let (_, metrics) = gw.admin_call("GET", "/metrics", None).await;
    for line in [
        "gateway_early_retries_total{route=\"app\",outcome=\"sent\"} 5",
        "gateway_upstream_retries_total{route=\"app\"} 5",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("gateway_passive_failures_total")
                && l.contains("region=\"fra\"")
                && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn posts_and_requests_with_bodies_are_never_cut_early() {
    let fra = RawUpstream::start(|_| vec![Step::StallUntilClosed]).await;
    let ber = [gateway_tests::region("ber", "ber-1").await];
    let (gw, _) = Gateway::start(&stalled_primary(&fra, &endpoints(&ber), true), &[]).await;

    let with_body = |method: &str| {
        http::Request::builder()
            .method(method)
            .uri("/x")
            .header("host", "a")
            .body(full(Bytes::from_static(b"hello")))
            .expect("request")
    };
    for (i, req) in [
        with_body("POST"),
        with_body("GET"),
        http::Request::delete("/x")
            .header("host", "a")
            .body(gateway_tests::client::empty())
            .expect("request"),
    ]
    .into_iter()
    .enumerate()
    {
        let what = format!(
            "{} with{} body",
            req.method(),
            if i == 2 { "out" } else { "" }
        );
        let mut conn = H1::connect(gw.addr).await;
        let resp = conn.send(req).await;
        // fra stalls it to the 3 s read timeout; nothing is resent (the route does not retry
        // timeouts), so the gateway answers 504 and ber never sees it.
        assert_eq!(resp.status, 504, "{what}");
        assert_eq!(fra.requests(), i + 1, "{what}");
        assert_eq!(ber[0].requests(), 0, "{what}");
    }
    let early = early_status(&gw).await;
    assert_eq!(
        (&early["sent"], &early["refused"]),
        (&0.into(), &0.into()),
        "{early}"
    );
}

#[tokio::test]
async fn a_stalled_primary_costs_every_request_only_its_deadline_while_retries_answer_at_once() {
    // Forty requests: four times the budget's floor plus its 10 %. Each early retry that ber
    // answers within the deadline is given back, so none has to wait for the stalled app.
    let fra = RawUpstream::start(|_| vec![Step::StallUntilClosed]).await;
    let ber = [gateway_tests::region("ber", "ber-1").await];
    let (gw, _) = Gateway::start(&stalled_primary(&fra, &endpoints(&ber), false), &[]).await;
    each_answered_by_ber_and_cut_seen(&gw, 40, || fra.requests(), || fra.closed_by_peer()).await;
    let early = early_status(&gw).await;
    assert_eq!(
        (&early["sent"], &early["refused"]),
        (&40.into(), &0.into()),
        "{early}"
    );
    assert!(
        early["refunded"].as_u64().expect("refunded") >= 40 - 14,
        "{early}"
    );
}

#[tokio::test]
async fn the_budget_caps_early_retries_when_the_whole_fleet_is_slow() {
    let fra = [
        gateway_tests::region("fra", "fra-1").await,
        gateway_tests::region("fra", "fra-2").await,
    ];
    let ber = [gateway_tests::region("ber", "ber-1").await];
    for server in fra.iter().chain(&ber) {
        server.set_mode(Mode::Slow(Duration::from_millis(300)));
    }
    let config = format!(
        r#"admin: {{ bind: "{{admin}}" }}
listeners:
  - {{ name: http, bind: "{{listen}}" }}
regions:
  fra:
    endpoints: {fra}
    probe: {{ interval: 1h, timeout: 1s }}
    passive: {{ latency: {{ enabled: false }} }}
  ber:
    endpoints: {ber}
    probe: {{ interval: 1h, timeout: 1s }}
    passive: {{ latency: {{ enabled: false }} }}
routes:
  - name: app
    regions: [fra, ber]
    retry: {{ budget: 100%, early: {{ enabled: true, min_delay: 50ms, max_delay: 50ms, budget: 10% }} }}
"#,
        fra = endpoints(&fra),
        ber = endpoints(&ber),
    );
    let (gw, _) = Gateway::start(&config, &[]).await;

    // 60 GETs, 20 at a time: every first attempt passes the 50 ms deadline.
    const REQUESTS: u64 = 60;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let addr = gw.addr;
            tokio::spawn(async move {
                let mut conn = H1::connect(addr).await;
                for _ in 0..REQUESTS / 20 {
                    assert_eq!(conn.send(get("a", "/x")).await.status, 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("worker");
    }
    let early = early_status(&gw).await;
    let (sent, refused) = (
        early["sent"].as_u64().expect("sent"),
        early["refused"].as_u64().expect("refused"),
    );
    // Every first attempt asked once; at most 10 plus 10% of the requests were cut, the others
    // waited for their (slow) answer instead of doubling the load.
    assert_eq!(sent + refused, REQUESTS, "{early}");
    assert!(sent >= 10, "the budget's floor is used: {early}");
    assert!(sent <= 10 + REQUESTS / 10, "{early}");
    let upstream: u64 = fra.iter().chain(&ber).map(|s| s.requests()).sum();
    assert_eq!(
        upstream,
        REQUESTS + sent,
        "one extra attempt per early retry"
    );
}

#[tokio::test]
async fn a_late_get_to_an_http2_upstream_is_cut_with_a_stream_reset() {
    use gateway_tests::raw::{H2Step, H2Upstream};
    let fra = H2Upstream::start(100, |_| vec![H2Step::StallUntilReset]).await;
    let ber = [gateway_tests::region("ber", "ber-1").await];
    let config = format!(
        r#"admin: {{ bind: "{{admin}}" }}
listeners:
  - {{ name: http, bind: "{{listen}}" }}
regions:
  fra:
    endpoints: [{{ id: fra-1, address: "{fra}" }}]
    protocol: http2
    probe: {{ interval: 1h, timeout: 1s }}
  ber:
    endpoints: {ber}
    probe: {{ interval: 1h, timeout: 1s }}
routes:
  - name: app
    regions: [fra, ber]
    timeouts: {{ read: 3s }}
    retry: {{ early: {{ enabled: true, min_delay: 100ms, max_delay: 100ms }} }}
"#,
        fra = fra.addr(),
        ber = endpoints(&ber),
    );
    let (gw, _) = Gateway::start(&config, &[]).await;
    each_answered_by_ber_and_cut_seen(&gw, 3, || fra.streams(), || fra.resets()).await;
    let early = early_status(&gw).await;
    assert_eq!(early["sent"], 3, "{early}");
}

/// A raw upstream answering every request with `body` after `delay`.
async fn answering_after(delay: Duration, body: &'static str) -> RawUpstream {
    RawUpstream::start(move |_| {
        vec![
            Step::Pause(delay),
            Step::Write(Bytes::from(format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ))),
        ]
    })
    .await
}

#[tokio::test]
async fn a_hedged_get_returns_the_faster_answer_and_the_slower_attempt_is_cancelled() {
    // fra answers in 800 ms, ber at once: the hedge sent to ber at 100 ms answers first.
    let fra = answering_after(Duration::from_millis(800), "fra").await;
    let ber = answering_after(Duration::ZERO, "ber").await;
    let ber_endpoint = format!("[{{ id: ber-1, address: \"{}\" }}]", ber.addr());
    let (gw, _) = Gateway::start(&stalled_primary(&fra, &ber_endpoint, true), &[]).await;
    let mut conn = H1::connect(gw.addr).await;
    for i in 1..=3 {
        let started = Instant::now();
        let resp = conn.send(get("a", "/x")).await;
        assert_eq!(resp.status, 200);
        assert_eq!(&resp.body[..], b"ber", "request {i}");
        assert!(
            started.elapsed() < Duration::from_millis(800),
            "request {i}: not fra's answer"
        );
        assert_eq!(
            (fra.requests(), ber.requests()),
            (i, i),
            "request {i}: both were asked"
        );
        // The slower attempt's connection is closed: fra sees its request cancelled.
        eventually("fra sees the slower attempt cancelled", || async {
            fra.closed_by_peer() == i
        })
        .await;
    }
    let early = early_status(&gw).await;
    assert_eq!(
        (&early["sent"], &early["won"], &early["refused"]),
        (&3.into(), &3.into(), &0.into()),
        "{early}"
    );
    // Not a retry, not a failure of fra.
    let (_, metrics) = gw.admin_call("GET", "/metrics", None).await;
    for line in [
        "gateway_early_retries_total{route=\"app\",outcome=\"won\"} 3",
        "gateway_upstream_retries_total{route=\"app\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
    let s = gw.status(None).await;
    assert_eq!(s["regions"][0]["endpoints"][0]["health"], "up", "{s}");
}

#[tokio::test]
async fn a_hedged_get_keeps_the_first_attempt_when_it_answers_first() {
    // fra answers in 250 ms; the hedge sent to ber at 100 ms would take a second: fra's
    // answer wins and ber's attempt is the one cancelled.
    let fra = answering_after(Duration::from_millis(250), "fra").await;
    let ber = answering_after(Duration::from_secs(1), "ber").await;
    let ber_endpoint = format!("[{{ id: ber-1, address: \"{}\" }}]", ber.addr());
    let (gw, _) = Gateway::start(&stalled_primary(&fra, &ber_endpoint, true), &[]).await;
    let mut conn = H1::connect(gw.addr).await;
    let resp = conn.send(get("a", "/x")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(&resp.body[..], b"fra");
    assert_eq!(ber.requests(), 1, "the hedge was sent");
    eventually("ber sees the hedge cancelled", || async {
        ber.closed_by_peer() == 1
    })
    .await;
    // fra's connection was kept: the next request reuses it.
    let resp = conn.send(get("a", "/x")).await;
    assert_eq!(&resp.body[..], b"fra");
    assert_eq!(
        fra.closed_by_peer(),
        0,
        "fra's connection is pooled, not closed"
    );
    let early = early_status(&gw).await;
    assert_eq!(
        (&early["sent"], &early["won"]),
        (&2.into(), &0.into()),
        "{early}"
    );
    // The hedges that lost no longer count in flight to ber.
    let s = gw.status(None).await;
    let ber_status = &s["regions"][1];
    assert_eq!(ber_status["name"], "ber");
    assert_eq!(
        ber_status["endpoints"][0]["latency"]["in_flight"], 0,
        "{ber_status}"
    );
}
