//! The status page (issue 14) in a real browser: headless Chromium opens the admin page with
//! the token (HTTP Basic, as a person's browser would after its prompt), a region is faulted,
//! and the page, without being reloaded, shows the region down and the failover event. A
//! screenshot is written to `<target>/tmp/status-page.png`.

use std::time::{Duration, Instant};

use gateway_tests::browser::Browser;
use gateway_tests::client::{empty, get, H1};
use gateway_tests::{drive, Fleet, Gateway, Mode};
use testbed::yaml::{Probe, Region, Route};

const TOKEN: &str = "page-token-0123456789abcdef";

/// Regions fra (two endpoints) and ber (one), probed every 200 ms, route `app` over fra then
/// ber; the admin API wants a token.
async fn gateway() -> (Fleet, Gateway, std::net::SocketAddr) {
    let fleet = Fleet::start(&[("fra", 2), ("ber", 1)]).await;
    let probe = Probe::http(
        "/healthz",
        Duration::from_millis(200),
        Duration::from_millis(150),
    );
    let config = fleet
        .config(&Region::default().probe(probe))
        .route(Route::new("app", &["fra", "ber"]).hold_down(Duration::from_millis(500)))
        .token_file("admin.token");
    let (gw, _) = Gateway::start(&config, &[("admin.token", TOKEN.as_bytes())]).await;
    let admin = gw.admin;
    (fleet, gw, admin)
}

/// Polls `script` in the page until it returns `true`; panics with `what` and the page's text
/// after `within`.
async fn page_shows(browser: &Browser, what: &str, within: Duration, script: &str) -> Duration {
    let started = Instant::now();
    loop {
        if browser.eval(script).await == true {
            return started.elapsed();
        }
        if started.elapsed() > within {
            let text = browser.eval("return document.body.innerText").await;
            panic!("the page did not show {what} within {within:?}; it reads:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_page_shows_a_faulted_region_down_and_the_failover_without_a_reload() {
    let (fleet, gw, admin) = gateway().await;
    // Some traffic first, for the request-rate lines.
    drive(gw.addr, "/", 50, Duration::from_secs(5), 2).await;

    let browser = Browser::start(1280, 1400).await;
    browser.open(&format!("http://sre:{TOKEN}@{admin}/")).await;
    page_shows(
        &browser,
        "fra up with the route's tiers in words",
        Duration::from_secs(30),
        r#"const fra = document.querySelector('[data-region="fra"]');
           const route = document.querySelector('[data-route="app"]');
           return !!fra && fra.dataset.state === "up" && !!route
               && route.innerText.includes("fra → ber")
               && route.innerText.includes("serving tier 1: fra");"#,
    )
    .await;
    // A marker a reload would lose, and the page's update count so far.
    let updates_before = browser
        .eval("window.noReloadMarker = 4242; return window.gatewayPage.updates")
        .await
        .as_u64()
        .expect("update count");

    fleet.set("fra", Mode::Refuse);
    let took = page_shows(
        &browser,
        "fra down and a failover event fra → ber",
        Duration::from_secs(10),
        r#"const fra = document.querySelector('[data-region="fra"]');
           const ev = document.querySelector('#events-table tr[data-kind="failover"]');
           const route = document.querySelector('[data-route="app"]');
           return !!fra && fra.dataset.state === "down"
               && fra.querySelector('.region-state').innerText.startsWith("down")
               && !!ev && ev.innerText.includes("fra → ber") && ev.innerText.includes("detected in")
               && route.innerText.includes("serving tier 2: ber");"#,
    )
    .await;
    println!("the page showed fra down and the failover {took:?} after the fault");
    assert_eq!(
        browser.eval("return window.noReloadMarker").await,
        4242,
        "the page was reloaded"
    );
    let updates_after = browser
        .eval("return window.gatewayPage.updates")
        .await
        .as_u64()
        .expect("update count");
    assert!(updates_after > updates_before, "the page did not update");
    // The endpoints say why: their last probe failed.
    let fra_text = browser
        .eval(r#"return document.querySelector('[data-region="fra"]').innerText"#)
        .await;
    let fra_text = fra_text.as_str().unwrap_or_default();
    assert!(fra_text.contains("failed"), "{fra_text}");
    assert!(fra_text.contains("0 of 2 endpoints healthy"), "{fra_text}");
    // The rate lines are drawn from in-process counters.
    let sparks = browser
        .eval("return document.querySelectorAll('svg.spark').length")
        .await;
    assert!(sparks.as_u64() >= Some(2), "no rate lines: {sparks}");

    let shot = browser.screenshot().await;
    assert!(shot.starts_with(b"\x89PNG"), "not a PNG");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    std::fs::write(&path, shot).expect("write screenshot");
    println!("screenshot: {}", path.display());

    // On a phone-sized window the page reflows instead of scrolling sideways (wide tables
    // scroll inside their own boxes).
    browser.resize(390, 844).await;
    page_shows(
        &browser,
        "no sideways scrolling at 390 px",
        Duration::from_secs(10),
        "return window.innerWidth <= 420 && document.documentElement.scrollWidth <= window.innerWidth;",
    )
    .await;
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page-phone.png");
    std::fs::write(&path, browser.screenshot().await).expect("write screenshot");
    println!("screenshot: {}", path.display());
}

#[tokio::test]
async fn the_page_wants_the_token_and_takes_it_as_a_basic_password() {
    use base64::Engine as _;
    let (_fleet, gw, admin) = gateway().await;
    let mut conn = H1::connect(admin).await;

    let resp = conn.send(get("admin", "/")).await;
    assert_eq!(resp.status, 401);
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Basic realm="), "{challenge}");

    let basic = |credentials: &str| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        http::Request::builder()
            .uri("/")
            .header("host", "admin")
            .header("authorization", format!("Basic {encoded}"))
            .body(empty())
            .expect("request")
    };
    let resp = conn.send(basic("anyone:wrong-token")).await;
    assert_eq!(resp.status, 401);
    let resp = conn.send(basic(&format!("sre:{TOKEN}"))).await;
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    let csp = resp.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = String::from_utf8_lossy(&resp.body);
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page loads something from elsewhere"
    );

    // The API keeps asking for a bearer token, and the Basic form works for it too (the page's
    // own fetches send it).
    let resp = conn.send(get("admin", "/status")).await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
    let mut status = basic(&format!(":{TOKEN}"));
    *status.uri_mut() = "/status".parse().expect("uri");
    let resp = conn.send(status).await;
    assert_eq!(resp.status, 200);
    let s = resp.json();
    let fra = s["regions"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "fra"))
        .expect("fra");
    assert_eq!(fra["traffic"]["interval_ms"], 2000, "{fra}");
    assert_eq!(fra["traffic"]["answered_total"], 0, "{fra}");

    // Answers count for the region that gave them.
    let mut client = H1::connect(gw.addr).await;
    for _ in 0..3 {
        assert_eq!(client.send(get("a", "/")).await.status, 200);
    }
    // An answer is counted once the gateway has logged it, which on a busy machine can be a
    // moment after the client has read it.
    let fra = || async {
        let s = gw.status(Some(TOKEN)).await;
        s["regions"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "fra"))
            .expect("fra")
            .clone()
    };
    gateway_tests::eventually("three answers counted for fra", || async {
        fra().await["traffic"]["answered_total"] == 3
    })
    .await;
    let fra = fra().await;
    assert_eq!(fra["traffic"]["answered_total"], 3, "{fra}");
    assert_eq!(fra["traffic"]["server_errors_total"], 0, "{fra}");
}
