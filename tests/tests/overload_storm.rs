//! Issue 10, acceptance (a): healthy regions and more load than the gateway can serve. No
//! region or endpoint is marked down, no failover happens, and every answer the gateway sheds
//! is the *overloaded* 503. Its own test binary: the storm would disturb timing-sensitive tests
//! running beside it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_tests::client::{get, H1};
use gateway_tests::{Fleet, Gateway, Template};
use testbed::yaml::{Probe, Region, Route};

/// Client connections of the storm, each sending one request after another.
const CONNECTIONS: usize = 300;
/// How long the storm lasts.
const STORM: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_storm_marks_nothing_down_and_sheds_only_as_overloaded() {
    let fleet = Fleet::start(&[("fra", 2), ("ber", 2)]).await;
    // Default probe and passive settings, as a new user runs it; a process limit below the
    // storm's concurrency, so that admission control sheds.
    let probe = Probe::http(
        "/healthz",
        Duration::from_secs(1),
        Duration::from_millis(500),
    );
    let config = fleet
        .config(&Region::default().probe(probe))
        .route(Route::new("app", &["fra", "ber"]));
    let text = format!("server: {{ max_in_flight: 128 }}\n{}", config.template());
    let (gw, _) = Gateway::start(&text, &[]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let seen_down = Arc::new(Mutex::new(Vec::<String>::new()));
    let watcher = {
        let (stop, seen_down) = (stop.clone(), seen_down.clone());
        let admin = gw.admin;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok((200, body)) =
                    testbed::launcher::http_request(admin, "GET", "/status", "admin", None).await
                {
                    let s: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let mut down = seen_down.lock().unwrap_or_else(|e| e.into_inner());
                    for r in s["regions"].as_array().into_iter().flatten() {
                        if r["up"] == false {
                            down.push(format!("region {}", r["name"]));
                        }
                        for e in r["endpoints"].as_array().into_iter().flatten() {
                            if e["health"] == "down" || !e["ejected_for_ms"].is_null() {
                                down.push(format!("endpoint {}", e["id"]));
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let start = Instant::now();
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let addr = gw.addr;
            tokio::spawn(async move {
                let (mut served, mut shed, mut other) = (0u64, 0u64, Vec::new());
                let Some(mut c) = H1::try_connect(addr).await else {
                    other.push("connect failed".to_string());
                    return (served, shed, other);
                };
                // Bounded in time and in count.
                for _ in 0..100_000 {
                    if start.elapsed() >= STORM {
                        break;
                    }
                    let Some(resp) = c.try_send(get("a", "/")).await else {
                        other.push("transport error".to_string());
                        break;
                    };
                    match resp.status {
                        200 => served += 1,
                        503 if resp.json()["error"] == "overloaded" => shed += 1,
                        s => other.push(format!("{s}: {:?}", resp.body)),
                    }
                }
                (served, shed, other)
            })
        })
        .collect();
    let (mut served, mut shed, mut other) = (0, 0, Vec::new());
    for c in clients {
        let (s, d, o) = c.await.expect("client");
        served += s;
        shed += d;
        other.extend(o);
    }
    stop.store(true, Ordering::Relaxed);
    watcher.await.expect("watcher");

    assert!(served > 0, "the storm was served at all");
    assert!(
        other.is_empty(),
        "answers other than 200 and 503 overloaded: {:?}",
        &other[..other.len().min(5)]
    );
    let down = seen_down.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(down.is_empty(), "marked down under load: {down:?}");
    let s = gw.status(None).await;
    assert_eq!(s["failover_events"], serde_json::json!([]), "{s}");
    eprintln!("storm: {served} served, {shed} shed as overloaded");
}
