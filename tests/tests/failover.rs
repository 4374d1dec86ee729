//! Health-based failover against real processes: crash, blackhole, 5xx storm, flapping,
//! residency, non-idempotent requests, and DNS discovery.

use std::time::{Duration, Instant};

use gateway_tests::client::{self, get, Collected, H1};
use gateway_tests::dns::TestDns;
use gateway_tests::{
    config, drive, eventually, region, region_on, Fleet, Gateway, Mode, Outcome, RegionServer,
    Template,
};
use testbed::yaml::{Dns, Dur, Endpoint, GatewayYaml, Probe, Region, Route};

/// Two regions with two endpoints each.
async fn two_regions() -> Fleet {
    Fleet::start(&[("fra", 2), ("ber", 2)]).await
}

/// `fleet`'s regions probed by `probe`, each endpoint ejected after 3 failures of live traffic
/// (for 5 s, up to 30 s); `routes` in this order.
fn fleet_config(
    fleet: &Fleet,
    probe: Probe,
    routes: impl IntoIterator<Item = Route>,
) -> GatewayYaml {
    let region =
        Region::default()
            .probe(probe)
            .passive(3, Duration::from_secs(5), Duration::from_secs(30));
    routes
        .into_iter()
        .fold(fleet.config(&region), GatewayYaml::route)
}

/// Route `app`: fra, then ber; 3 attempts.
fn app() -> Route {
    Route::new("app", &["fra", "ber"]).retry_attempts(3)
}

/// HTTP probes of `/healthz` every `interval`, failing after `timeout`; fall 2, rise 2, no jitter.
fn http_probes(interval: Duration, timeout: Duration) -> Probe {
    Probe::http("/healthz", interval, timeout)
        .rise_fall(2, 2)
        .jitter(0)
}

/// Probes every 200 ms, timeout 150 ms, fall 2, rise 2, no jitter.
fn fast_probes() -> Probe {
    http_probes(Duration::from_millis(200), Duration::from_millis(150))
}

/// [`config`] with DNS discovery through `dns`: answers' TTLs clamped to `ttl` (min, max),
/// lookups timing out after `timeout`.
fn dns_config(
    dns: &TestDns,
    ttl: (Option<Duration>, Option<Duration>),
    timeout: Duration,
) -> GatewayYaml {
    config().dns(Dns {
        servers: vec![dns.addr.to_string()],
        min_ttl: ttl.0.map(Dur),
        max_ttl: ttl.1.map(Dur),
        timeout: Some(Dur(timeout)),
    })
}

/// Endpoint `fra-dns`, discovered by looking up `host` (its port `port`).
fn discovered(host: &str, port: u16) -> Endpoint {
    Endpoint::at("fra-dns", &format!("{host}:{port}"))
}

/// Endpoints `a` on 127.0.0.2 and `b` on 127.0.0.3, on the same port: the two addresses one DNS
/// name can have. Each is (region, endpoint id). Returns both and the port.
async fn same_port(a: (&str, &str), b: (&str, &str)) -> (RegionServer, RegionServer, u16) {
    let first = region_on("127.0.0.2:0", a.0, a.1).await;
    let port = first.addr().port();
    let second = region_on(&format!("127.0.0.3:{port}"), b.0, b.1).await;
    (first, second, port)
}

async fn status(gw: &Gateway) -> serde_json::Value {
    gw.status(None).await
}

async fn region_up(gw: &Gateway, name: &str) -> bool {
    gw.region_is(name, true).await
}

/// The first entry of the list `status[list]` whose `key` is `value`.
fn entry<'a>(
    status: &'a serde_json::Value,
    list: &str,
    (key, value): (&str, &str),
) -> Option<&'a serde_json::Value> {
    let entries = status[list].as_array();
    let entries = entries.unwrap_or_else(|| panic!("no {list} in {status}"));
    entries.iter().find(|e| e[key] == value)
}

fn failures(outcomes: &[Outcome]) -> Vec<&Outcome> {
    outcomes.iter().filter(|o| o.status != Some(200)).collect()
}

/// Starts a gateway over `fleet` (fast probes, route `app`), drives 100 requests per second
/// for 4 s and switches fra to `mode` after 1 s; returns the gateway, the outcomes and the time
/// of the fault since the start of the run.
async fn fault_in_fra(fleet: &Fleet, mode: Mode) -> (Gateway, Vec<Outcome>, Duration) {
    let (gw, _) = Gateway::start(&fleet_config(fleet, fast_probes(), [app()]), &[]).await;
    let addr = gw.addr;
    let start = Instant::now();
    let load = tokio::spawn(async move { drive(addr, "/", 100, Duration::from_secs(4), 4).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at = start.elapsed();
    fleet.set("fra", mode);
    (gw, load.await.expect("load"), at)
}

#[tokio::test]
async fn crash_of_the_primary_costs_no_request() {
    let fleet = two_regions().await;
    let (gw, outcomes, fault_at) = fault_in_fra(&fleet, Mode::Refuse).await;
    assert!(outcomes.len() >= 350, "load ran: {}", outcomes.len());
    assert!(
        failures(&outcomes).is_empty(),
        "failed requests: {:?}",
        failures(&outcomes)
    );
    assert!(
        outcomes
            .iter()
            .any(|o| o.sent < fault_at && o.region.as_deref() == Some("fra")),
        "fra served before the crash"
    );
    let after: Vec<_> = outcomes
        .iter()
        .filter(|o| o.sent > fault_at + Duration::from_millis(50))
        .collect();
    assert!(
        after.iter().all(|o| o.region.as_deref() == Some("ber")),
        "all traffic on ber after the crash"
    );
    eventually("fra marked down", || async { !region_up(&gw, "fra").await }).await;
    let s = status(&gw).await;
    let event = entry(&s, "failover_events", ("kind", "failover")).cloned();
    let event = event.expect("failover event in /status");
    assert_eq!(event["route"], "app");
    assert_eq!(event["from"][0], "fra");
    assert_eq!(event["to"][0], "ber");
}

#[tokio::test]
async fn blackholed_primary_costs_no_request_and_no_read_timeout() {
    let fleet = two_regions().await;
    // A retry budget of only its floor (10): the requests stuck on the blackholed region (up to
    // one per connection, 32 here) must fail over without spending it.
    let budget = Route::new("app", &["fra", "ber"]).retry_budget(3, 0);
    let config = fleet_config(&fleet, fast_probes(), [budget]).template();
    assert!(config.contains("budget: 0%"));
    let (gw, _) = Gateway::start(&config, &[]).await;
    let addr = gw.addr;
    let start = Instant::now();
    let load = tokio::spawn(async move { drive(addr, "/", 100, Duration::from_secs(5), 32).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fault_at = start.elapsed();
    fleet.set("fra", Mode::Blackhole);
    let outcomes = load.await.expect("load");
    assert!(
        failures(&outcomes).is_empty(),
        "failed requests: {:?}",
        failures(&outcomes)
    );
    let worst = outcomes.iter().map(|o| o.latency).max().expect("some");
    // Detection is interval × fall + timeout ≈ 0.55 s; the route's read timeout is 30 s. Allow
    // generous slack for a loaded machine, far below the read timeout.
    assert!(worst < Duration::from_secs(5), "a request waited {worst:?}");
    let late: Vec<_> = outcomes
        .iter()
        .filter(|o| o.sent > fault_at + Duration::from_secs(3))
        .collect();
    assert!(!late.is_empty() && late.iter().all(|o| o.region.as_deref() == Some("ber")));
    assert!(!region_up(&gw, "fra").await, "fra marked down");
    eprintln!(
        "blackhole: worst latency {worst:?} over {} requests",
        outcomes.len()
    );
}

#[tokio::test]
async fn storm_of_503_never_reaches_clients_and_ejects_the_primary() {
    let fleet = two_regions().await;
    let (gw, outcomes, _) = fault_in_fra(&fleet, Mode::Status(503)).await;
    let errors: Vec<_> = outcomes
        .iter()
        .filter(|o| o.status.is_none_or(|s| s >= 500))
        .collect();
    assert!(errors.is_empty(), "5xx reached clients: {errors:?}");
    let s = status(&gw).await;
    let fra = entry(&s, "regions", ("name", "fra")).expect("fra").clone();
    assert_eq!(fra["up"], false);
    for e in fra["endpoints"].as_array().expect("endpoints") {
        assert_eq!(e["health"], "down", "{e}");
    }
}

#[tokio::test]
async fn flapping_primary_gets_no_failback_until_stable_for_the_hold_down() {
    let fleet = two_regions().await;
    let hold_down = Duration::from_secs(2);
    let app = app().hold_down(hold_down);
    let (gw, _) = Gateway::start(&fleet_config(&fleet, fast_probes(), [app]), &[]).await;
    let addr = gw.addr;
    let start = Instant::now();
    let load = tokio::spawn(async move { drive(addr, "/", 50, Duration::from_secs(20), 2).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let flap_start = start.elapsed();
    for i in 0..10 {
        fleet.set("fra", if i % 2 == 0 { Mode::Refuse } else { Mode::Ok });
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    fleet.set("fra", Mode::Ok);
    let flap_end = start.elapsed();
    let outcomes = load.await.expect("load");
    assert!(
        failures(&outcomes).is_empty(),
        "failed requests: {:?}",
        failures(&outcomes)
    );
    let first_ber = outcomes
        .iter()
        .find(|o| o.sent > flap_start && o.region.as_deref() == Some("ber"))
        .expect("failed over")
        .sent;
    let back = outcomes
        .iter()
        .find(|o| o.sent > first_ber && o.region.as_deref() == Some("fra"))
        .map(|o| o.sent);
    let back = back.expect("traffic returned to fra after the flapping stopped");
    assert!(
        back >= flap_end + hold_down,
        "failback at {back:?}, flapping ended at {flap_end:?}: hold-down not honoured"
    );
    let s = status(&gw).await;
    let kinds: Vec<String> = s["failover_events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(kinds.contains(&"failback".to_string()), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| *k == "failback").count(),
        1,
        "one failback, no flapping: {kinds:?}"
    );
}

#[tokio::test]
async fn residency_all_allowed_regions_down_gives_503_and_nothing_spills() {
    let fleet = two_regions().await;
    // `reject`: the residency 503 at once (the default, `fail_open`, is tested in overload.rs).
    let eu = Route::new("eu-only", &["fra"])
        .path_prefix("/eu/")
        .allowed_regions(&["fra"])
        .reject_when_all_down();
    let (gw, _) = Gateway::start(&fleet_config(&fleet, fast_probes(), [eu, app()]), &[]).await;
    let mut c = H1::connect(gw.addr).await;
    assert_eq!(
        c.send(get("a", "/eu/x")).await.header("x-region"),
        Some("fra")
    );
    fleet.set("fra", Mode::Refuse);
    eventually("fra down", || async { !region_up(&gw, "fra").await }).await;
    let ber_before: u64 = fleet.servers("ber").iter().map(|s| s.requests()).sum();
    for _ in 0..20 {
        let resp = H1::connect(gw.addr).await.send(get("a", "/eu/x")).await;
        assert_eq!(resp.status, 503);
        assert!(resp.header("retry-after").is_some());
        assert_eq!(resp.json()["route"], "eu-only");
        assert_eq!(resp.json()["allowed_regions"][0], "fra");
    }
    let ber_after: u64 = fleet.servers("ber").iter().map(|s| s.requests()).sum();
    assert_eq!(
        ber_before, ber_after,
        "the disallowed region received requests"
    );
    // The other route still fails over to ber.
    assert_eq!(c.send(get("a", "/x")).await.header("x-region"), Some("ber"));
}

/// A gateway over `fleet` probed by `probes`; fra switched to `mode`, then one `POST /order`:
/// the gateway and the response.
async fn post_after_fault(fleet: &Fleet, probes: Probe, mode: Mode) -> (Gateway, Collected) {
    let (gw, _) = Gateway::start(&fleet_config(fleet, probes, [app()]), &[]).await;
    fleet.set("fra", mode);
    let mut c = H1::connect(gw.addr).await;
    let req = http::Request::post("/order")
        .header("host", "a")
        .body(client::full("pay once"))
        .expect("req");
    let resp = c.send(req).await;
    (gw, resp)
}

/// Non-idempotent requests that reached the endpoints of `region`.
fn posts(fleet: &Fleet, region: &str) -> u64 {
    fleet
        .servers(region)
        .iter()
        .map(|s| s.unsafe_requests())
        .sum()
}

#[tokio::test]
async fn post_is_not_replayed_after_reaching_a_blackholed_app() {
    let fleet = two_regions().await;
    // Slow probes: detection takes over a second, so the POST reaches fra before it.
    let probes = http_probes(Duration::from_secs(1), Duration::from_millis(500));
    let (_gw, resp) = post_after_fault(&fleet, probes, Mode::Blackhole).await;
    assert_eq!(resp.status, 502, "{:?}", resp.body);
    let (fra_posts, ber_posts) = (posts(&fleet, "fra"), posts(&fleet, "ber"));
    assert_eq!(
        (fra_posts, ber_posts),
        (1, 0),
        "the POST reached fra once and was not replayed"
    );
}

#[tokio::test]
async fn post_is_retried_on_connect_failure() {
    let fleet = two_regions().await;
    // Probes far apart: health still says fra is up when the POST arrives.
    let probes = Probe::tcp(Duration::from_secs(3600), Duration::from_secs(1));
    let (_gw, resp) = post_after_fault(&fleet, probes, Mode::Refuse).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-region"), Some("ber"));
    assert_eq!(resp.json()["body_bytes"], 8);
    let ber_posts = posts(&fleet, "ber");
    assert_eq!(ber_posts, 1);
}

#[tokio::test]
async fn dns_discovery_follows_records_and_survives_an_outage() {
    let dns = TestDns::start().await;
    let (_a, _b, port) = same_port(("fra", "a"), ("fra", "b")).await;
    dns.set("app.test", &["127.0.0.2".parse().expect("ip")]);
    let ttl = (
        Some(Duration::from_millis(200)),
        Some(Duration::from_secs(1)),
    );
    let fra = Region::new(vec![discovered("app.test", port)]).probe(fast_probes());
    let config = dns_config(&dns, ttl, Duration::from_millis(300))
        .region("fra", fra)
        .route(Route::new("app", &["fra"]));
    let (gw, _) = Gateway::start(&config, &[]).await;
    let endpoint = |gw_addr| async move {
        H1::connect(gw_addr)
            .await
            .send(get("a", "/"))
            .await
            .header("x-endpoint")
            .map(str::to_string)
    };
    assert_eq!(endpoint(gw.addr).await.as_deref(), Some("a"));
    dns.set("app.test", &["127.0.0.3".parse().expect("ip")]);
    eventually("traffic follows the new record", || async {
        endpoint(gw.addr).await.as_deref() == Some("b")
    })
    .await;
    // Outage: lookups time out; the last good address keeps serving.
    dns.set_silent(true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..10 {
        assert_eq!(endpoint(gw.addr).await.as_deref(), Some("b"));
    }
    let s = status(&gw).await;
    let eps = s["regions"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .clone();
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!(eps[0]["address"], format!("127.0.0.3:{port}"));
    assert!(
        gw.stderr()
            .contains("DNS resolution failed; keeping the last good addresses"),
        "outage reported in the log"
    );
}

/// The addresses `/status` lists for `region`'s endpoints.
async fn addresses(gw: &Gateway, region: &str) -> Vec<String> {
    let s = status(gw).await;
    s["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .filter(|r| r["name"] == region)
        .flat_map(|r| r["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| e["address"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Issue #16, bug 4: reload to `old.test` and at once back to `new.test` while the `old.test`
/// lookup is slow. The late `old.test` answer belongs to a host name the endpoint no longer has:
/// it must be discarded, so the endpoint stays on `new.test`'s address and the fra-only route is
/// never answered by ber's app (which owns `old.test`'s address).
#[tokio::test]
async fn dns_answer_for_a_replaced_host_name_is_discarded() {
    let dns = TestDns::start().await;
    let (_fra, _ber, port) = same_port(("fra", "fra-a"), ("ber", "ber-b")).await;
    dns.set("new.test", &["127.0.0.2".parse().expect("ip")]);
    dns.set("old.test", &["127.0.0.3".parse().expect("ip")]);
    dns.set_delay("old.test", Duration::from_secs(3));
    let config = |host: &str| {
        let ttl = (
            Some(Duration::from_millis(200)),
            Some(Duration::from_secs(1)),
        );
        let ber = Endpoint::at("ber-b", &format!("127.0.0.3:{port}"));
        dns_config(&dns, ttl, Duration::from_secs(10))
            .region(
                "fra",
                Region::new(vec![discovered(host, port)]).probe(fast_probes()),
            )
            .region("ber", Region::new(vec![ber]).probe(fast_probes()))
            .route(
                Route::new("fra-only", &["fra"])
                    .path_prefix("/eu/")
                    .allowed_regions(&["fra"]),
            )
            .route(Route::new("app", &["ber"]))
    };
    let new_addr = format!("127.0.0.2:{port}");
    let (gw, _) = Gateway::start(&config("new.test"), &[]).await;
    assert_eq!(addresses(&gw, "fra").await, [new_addr.as_str()]);
    let region_of_eu = || async {
        let resp = H1::connect(gw.addr).await.send(get("a", "/eu/x")).await;
        (resp.status, resp.header("x-region").map(str::to_string))
    };
    assert_eq!(region_of_eu().await, (200, Some("fra".into())));

    gw.write_config(&config("old.test"));
    let (code, body) = gw.admin_call("POST", "/reload", None).await;
    assert_eq!(code, 200, "{body}");
    eventually("the old.test lookup reached the DNS server", || async {
        dns.queried("old.test") >= 1
    })
    .await;
    assert_eq!(dns.answered("old.test"), 0, "the old.test answer is slow");
    gw.write_config(&config("new.test"));
    let (code, body) = gw.admin_call("POST", "/reload", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        dns.answered("old.test"),
        0,
        "the second reload came before the old.test answer (the race under test)"
    );
    // Residency holds all along: the fra-only route is answered by fra or not at all.
    eventually("the slow old.test answer was sent", || async {
        let (_, region) = region_of_eu().await;
        assert_ne!(
            region.as_deref(),
            Some("ber"),
            "fra-only route answered by ber"
        );
        dns.answered("old.test") >= 1
    })
    .await;
    // Afterwards the endpoint is (again) on new.test's address and stays there: several TTLs
    // (1 s) must pass without the stale answer ever showing.
    eventually("fra on new.test's address", || async {
        addresses(&gw, "fra").await == [new_addr.as_str()]
    })
    .await;
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            addresses(&gw, "fra").await,
            [new_addr.as_str()],
            "fra's endpoint holds an address of a host name no longer in its config:\n{}",
            gw.stderr()
        );
        let (code, region) = region_of_eu().await;
        assert_eq!(region.as_deref(), Some("fra"), "status {code}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue #16, bug 6: `/readyz` waits for the first probe of every address that the first DNS
/// lookup found. The probe of this one takes its full timeout (a blackholed app), so a gateway
/// that says ready before it finishes has an `unknown` endpoint in `/status`.
#[tokio::test]
async fn readiness_waits_for_the_first_probe_of_dns_discovered_addresses() {
    let dns = TestDns::start().await;
    let slow = region_on("127.0.0.2:0", "fra", "slow").await;
    slow.set_mode(Mode::Blackhole);
    let port = slow.addr().port();
    dns.set("slow.test", &["127.0.0.2".parse().expect("ip")]);
    let probe = Probe::http("/healthz", Duration::from_secs(3), Duration::from_secs(3))
        .rise_fall(1, 1)
        .jitter(0);
    let fra = Region::new(vec![discovered("slow.test", port)]).probe(probe);
    let config = dns_config(&dns, (None, None), Duration::from_secs(2))
        .region("fra", fra)
        .route(Route::new("app", &["fra"]));
    let (mut gw, _) = Gateway::launch(&config, &[]);
    let start = Instant::now();
    loop {
        assert!(gw.is_running(), "gateway exited:\n{}", gw.stderr());
        // Readiness first, then status: a probe result seen after "ready" was there before it.
        if let Ok((200, _)) = client::get_status(gw.admin, "/readyz").await {
            let s = status(&gw).await;
            let eps = s["regions"][0]["endpoints"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert_eq!(eps.len(), 1, "ready before DNS discovery: {s}");
            assert_ne!(
                eps[0]["health"], "unknown",
                "ready while a DNS-discovered address was never probed: {s}"
            );
            assert!(eps[0]["last_probe"].is_object(), "{s}");
            break;
        }
        assert!(
            start.elapsed() < gateway_tests::DEADLINE,
            "never ready:\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slow.connections() >= 1,
        "the probe reached the blackholed app"
    );
}

/// The other side of readiness with DNS: a first lookup that gets no answer does not hold
/// readiness back past `dns.timeout`, and the watcher keeps asking until an answer comes.
#[tokio::test]
async fn readiness_does_not_wait_for_a_dns_server_that_never_answers() {
    let dns = TestDns::start().await;
    let app = region_on("127.0.0.2:0", "fra", "late").await;
    let port = app.addr().port();
    let fixed = region("fra", "fixed").await;
    dns.set("late.test", &["127.0.0.2".parse().expect("ip")]);
    dns.set_delay("late.test", Duration::from_secs(3600));
    let endpoints = vec![
        Endpoint::new("fra-fixed", fixed.addr()),
        discovered("late.test", port),
    ];
    let config = dns_config(
        &dns,
        (Some(Duration::from_millis(200)), None),
        Duration::from_millis(500),
    )
    .region("fra", Region::new(endpoints).probe(fast_probes()))
    .route(Route::new("app", &["fra"]));
    let (gw, _) = Gateway::start(&config, &[]).await;
    assert_eq!(dns.answered("late.test"), 0, "ready without an answer");
    assert_eq!(addresses(&gw, "fra").await, [fixed.addr().to_string()]);
    dns.set_delay("late.test", Duration::ZERO);
    eventually("the watcher asks again and gets the address", || async {
        addresses(&gw, "fra").await.len() == 2
    })
    .await;
}
