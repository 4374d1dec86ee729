//! SRE operations: hot reload (file, symlink swap, SIGHUP, admin), failed reloads, health
//! carry-over, drains, the admin token, metrics and graceful shutdown.

use std::time::{Duration, Instant};

use gateway_tests::client::{get, H1};
use gateway_tests::{drive, eventually, region, Gateway, Mode, RegionServer};

struct Two {
    fra: RegionServer,
    ber: RegionServer,
}

impl Two {
    async fn start() -> Self {
        Self {
            fra: region("fra", "fra-1").await,
            ber: region("ber", "ber-1").await,
        }
    }

    /// A config whose `/probe/` route goes to `probe_region`; `extra` is appended to the file.
    fn config(&self, probe_region: &str, extra_routes: &str, top: &str) -> String {
        format!(
            r#"{top}
listeners:
  - {{ name: http, bind: "{{listen}}" }}
regions:
  fra:
    endpoints: [{{ id: fra-1, address: "{fra}" }}]
    probe: {{ http: {{ path: /healthz }}, interval: 200ms, timeout: 150ms }}
  ber:
    endpoints: [{{ id: ber-1, address: "{ber}" }}]
    probe: {{ http: {{ path: /healthz }}, interval: 200ms, timeout: 150ms }}
routes:
  - {{ name: probe, match: {{ path_prefix: /probe/ }}, regions: [{probe_region}] }}
{extra_routes}  - name: app
    regions: [fra, ber]
    failback: {{ hold_down: 500ms }}
"#,
            fra = self.fra.addr(),
            ber = self.ber.addr()
        )
    }
}

fn with_admin(config: &str, extra: &str) -> String {
    format!("admin: {{ bind: \"{{admin}}\"{extra} }}\n{config}")
}

async fn region_of(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let resp = H1::try_connect(addr)
        .await?
        .try_send(get("a", path))
        .await?;
    resp.header("x-region").map(str::to_string)
}

#[tokio::test]
async fn fifty_reloads_under_load_lose_no_request() {
    let two = Two::start().await;
    let template = |i: usize| {
        let region = if i % 2 == 0 { "fra" } else { "ber" };
        // Each version also adds or drops a route, so routes change as well as targets.
        let extra = if i % 3 == 0 {
            "  - { name: extra, match: { path_prefix: /extra/ }, regions: [ber] }\n"
        } else {
            ""
        };
        with_admin(&two.config(region, extra, &format!("# version {i}")), "")
    };
    let (gw, _) = Gateway::start(&template(0), &[]).await;
    let addr = gw.addr;
    let load = tokio::spawn(async move { drive(addr, "/", 100, Duration::from_secs(60), 8).await });
    let mut live_after = Vec::new();
    for i in 1..=50 {
        let want = if i % 2 == 0 { "fra" } else { "ber" };
        let written = Instant::now();
        gw.write_config(&template(i));
        eventually("the new config is live", || async {
            region_of(addr, "/probe/x").await.as_deref() == Some(want)
        })
        .await;
        live_after.push(written.elapsed());
    }
    load.abort();
    let _ = load.await;
    live_after.sort();
    let median = live_after[live_after.len() / 2];
    let max = *live_after.last().expect("some");
    eprintln!(
        "reload: change live after median {median:?}, max {max:?} over {} writes",
        live_after.len()
    );
    let status = gw.status(None).await;
    assert!(status["config"]["version"].as_u64().expect("version") >= 2);
    assert_eq!(status["last_reload"]["result"], "ok");
}

#[tokio::test]
async fn reload_traffic_keeps_flowing_without_errors() {
    let two = Two::start().await;
    let template = |i: usize| {
        with_admin(
            &two.config(
                if i % 2 == 0 { "fra" } else { "ber" },
                "",
                &format!("# v{i}"),
            ),
            "",
        )
    };
    let (gw, _) = Gateway::start(&template(0), &[]).await;
    let addr = gw.addr;
    let load = tokio::spawn(async move { drive(addr, "/", 200, Duration::from_secs(6), 8).await });
    for i in 1..=50 {
        gw.write_config(&template(i));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outcomes = load.await.expect("load");
    let failed: Vec<_> = outcomes.iter().filter(|o| o.status != Some(200)).collect();
    assert!(outcomes.len() > 900, "load ran");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during reloads: {:?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(5)]
    );
}

#[tokio::test]
async fn kubernetes_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let two = Two::start().await;
    // Start with a throwaway config path, then run from a ConfigMap-style directory.
    let (gw, _) = Gateway::start(&with_admin(&two.config("fra", "", ""), ""), &[]).await;
    drop(gw);
    let dir = tempfile::tempdir().expect("tmp");
    let (listen, admin) = (gateway_tests::free_port(), gateway_tests::free_port());
    let render = |probe: &str| {
        with_admin(&two.config(probe, "", ""), "")
            .replace("{listen}", &listen.to_string())
            .replace("{admin}", &admin.to_string())
    };
    let v1 = dir.path().join("..2026_11_21_v1");
    std::fs::create_dir(&v1).expect("mkdir");
    std::fs::write(v1.join("gateway.yaml"), render("fra")).expect("write");
    symlink("..2026_11_21_v1", dir.path().join("..data")).expect("symlink");
    symlink("..data/gateway.yaml", dir.path().join("gateway.yaml")).expect("symlink");
    let mut child = Guard(
        std::process::Command::new(gateway_tests::gateway_bin())
            .args(["run", "--threads", "1", "--config"])
            .arg(dir.path().join("gateway.yaml"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    eventually("ready", || async {
        matches!(
            gateway_tests::client::get_status(admin, "/readyz").await,
            Ok((200, _))
        )
    })
    .await;
    assert_eq!(region_of(listen, "/probe/x").await.as_deref(), Some("fra"));
    // What the kubelet does: new data dir, new symlink, atomic rename over `..data`.
    let v2 = dir.path().join("..2026_11_21_v2");
    std::fs::create_dir(&v2).expect("mkdir");
    std::fs::write(v2.join("gateway.yaml"), render("ber")).expect("write");
    symlink("..2026_11_21_v2", dir.path().join("..data_tmp")).expect("symlink");
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).expect("swap");
    std::fs::remove_dir_all(&v1).expect("remove old");
    eventually("symlink swap picked up", || async {
        region_of(listen, "/probe/x").await.as_deref() == Some("ber")
    })
    .await;
    assert!(child.0.try_wait().expect("wait").is_none());
    child.0.kill().expect("kill");
}

struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn invalid_config_keeps_the_old_one_and_reports_it() {
    let two = Two::start().await;
    let good = with_admin(&two.config("fra", "", ""), "");
    let (gw, _) = Gateway::start(&good, &[]).await;
    // A half-written file and a semantic error: neither replaces the running config.
    gw.write_config("listeners:\n  - { name: http, bind: \"{listen}\"");
    eventually("syntax error reported", || async {
        let s = gw.status(None).await;
        s["last_reload"]["result"] == "error"
    })
    .await;
    assert_eq!(region_of(gw.addr, "/probe/x").await.as_deref(), Some("fra"));
    gw.write_config(&good.replace("regions: [fra] }", "regions: [ams] }"));
    eventually("semantic error reported", || async {
        let s = gw.status(None).await;
        s["last_reload"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("unknown region `ams`"))
    })
    .await;
    let s = gw.status(None).await;
    let detail = s["last_reload"]["detail"].as_str().expect("detail");
    assert!(
        detail.contains("gateway.yaml:") && detail.contains("routes[0].regions[0]"),
        "{detail}"
    );
    assert_eq!(
        region_of(gw.addr, "/probe/x").await.as_deref(),
        Some("fra"),
        "old config still serves"
    );
    let (_, metrics) = gw.admin_call("GET", "/metrics", None).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_config_reloads_total{result=\"error\"}")),
        "{metrics}"
    );
    assert!(
        metrics.contains("gateway_config_last_reload_success 0"),
        "{metrics}"
    );
    // The next good file applies.
    gw.write_config(&good.replace("regions: [fra] }", "regions: [ber] }"));
    eventually("good config applied", || async {
        region_of(gw.addr, "/probe/x").await.as_deref() == Some("ber")
    })
    .await;
    assert_eq!(gw.status(None).await["last_reload"]["result"], "ok");
}

#[tokio::test]
async fn sighup_and_admin_reload() {
    let two = Two::start().await;
    let (gw, _) = Gateway::start(&with_admin(&two.config("fra", "", ""), ""), &[]).await;
    // Write without the watcher noticing is impossible, so check the trigger names instead.
    gw.write_config(&with_admin(&two.config("ber", "", ""), ""));
    eventually("reloaded", || async {
        region_of(gw.addr, "/probe/x").await.as_deref() == Some("ber")
    })
    .await;
    gw.signal("HUP");
    eventually("SIGHUP reload recorded", || async {
        gw.status(None).await["last_reload"]["trigger"] == "sighup"
    })
    .await;
    let (code, body) = gw.admin_call("POST", "/reload", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(gw.status(None).await["last_reload"]["trigger"], "admin");
}

#[tokio::test]
async fn health_of_unchanged_endpoints_survives_a_reload() {
    let two = Two::start().await;
    let (gw, _) = Gateway::start(&with_admin(&two.config("fra", "", ""), ""), &[]).await;
    two.ber.set_mode(Mode::Refuse);
    eventually("ber down", || async {
        let s = gw.status(None).await;
        s["regions"][1]["endpoints"][0]["health"] == "down"
    })
    .await;
    gw.write_config(&with_admin(
        &two.config(
            "ber",
            "  - { name: new, match: { path_prefix: /new/ }, regions: [fra] }\n",
            "# changed",
        ),
        "",
    ));
    eventually("reloaded", || async {
        gw.status(None).await["config"]["version"] == 2
    })
    .await;
    let s = gw.status(None).await;
    // No re-probe flap: states are the same right after the reload, not "unknown".
    assert_eq!(s["regions"][0]["endpoints"][0]["health"], "up", "{s}");
    assert_eq!(s["regions"][1]["endpoints"][0]["health"], "down", "{s}");
    // And traffic for the route that now points at (down) ber is a residency 503, not a try.
    let resp = H1::connect(gw.addr).await.send(get("a", "/probe/x")).await;
    assert_eq!(resp.status, 503);
}

#[tokio::test]
async fn drain_moves_traffic_expires_and_needs_the_token() {
    let two = Two::start().await;
    let token = "test-token-0123456789abcdef";
    let config = with_admin(&two.config("fra", "", ""), ", token_file: admin.token");
    let (gw, _) = Gateway::start(&config, &[("admin.token", token.as_bytes())]).await;
    assert_eq!(
        gw.admin_call("POST", "/regions/fra/drain?for=2s", None)
            .await
            .0,
        401
    );
    assert_eq!(
        gw.admin_call(
            "POST",
            "/regions/fra/drain?for=2s",
            Some("wrong-token-0123456789ab")
        )
        .await
        .0,
        401
    );
    assert_eq!(gw.admin_call("GET", "/status", None).await.0, 401);
    assert_eq!(
        gw.admin_call("GET", "/readyz", None).await.0,
        200,
        "readiness stays open for probes"
    );
    let (code, body) = gw
        .admin_call("POST", "/regions/fra/drain?for=2s", Some(token))
        .await;
    assert_eq!(code, 200, "{body}");
    let drained_at = Instant::now();
    assert_eq!(
        region_of(gw.addr, "/").await.as_deref(),
        Some("ber"),
        "drain moves traffic at once"
    );
    let s = gw.status(Some(token)).await;
    assert!(s["regions"][0]["drained_for_ms"].as_u64().is_some(), "{s}");
    eventually("drain expires by itself", || async {
        region_of(gw.addr, "/").await.as_deref() == Some("fra")
    })
    .await;
    assert!(drained_at.elapsed() >= Duration::from_secs(2));
    // Undrain lifts a drain early.
    assert_eq!(
        gw.admin_call("POST", "/regions/fra/drain?for=1h", Some(token))
            .await
            .0,
        200
    );
    assert_eq!(region_of(gw.addr, "/").await.as_deref(), Some("ber"));
    assert_eq!(
        gw.admin_call("POST", "/regions/fra/undrain", Some(token))
            .await
            .0,
        200
    );
    eventually("undrain", || async {
        region_of(gw.addr, "/").await.as_deref() == Some("fra")
    })
    .await;
    assert_eq!(
        gw.admin_call("POST", "/regions/nope/drain?for=1m", Some(token))
            .await
            .0,
        404
    );
    assert_eq!(
        gw.admin_call("POST", "/regions/fra/drain?for=soon", Some(token))
            .await
            .0,
        400
    );
    let s = gw.status(Some(token)).await;
    let kinds: Vec<&str> = s["failover_events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"failover") && kinds.contains(&"failback"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_documented_names() {
    let two = Two::start().await;
    let (gw, _) = Gateway::start(&with_admin(&two.config("fra", "", ""), ""), &[]).await;
    let mut c = H1::connect(gw.addr).await;
    for _ in 0..5 {
        assert_eq!(c.send(get("a", "/")).await.status, 200);
    }
    assert_eq!(c.send(get("a", "/nothing-here")).await.status, 200);
    eventually("gauges exported", || async {
        gw.admin_call("GET", "/metrics", None)
            .await
            .1
            .contains("gateway_region_up")
    })
    .await;
    let (code, text) = gw.admin_call("GET", "/metrics", None).await;
    assert_eq!(code, 200);
    let mut names = std::collections::BTreeSet::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line: {line}"));
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in: {line}"));
        let name = series.split('{').next().expect("name");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad name in: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels in: {line}"
            );
        }
        names.insert(name.to_string());
    }
    for want in [
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_upstream_attempts_total",
        "gateway_region_up",
        "gateway_endpoint_up",
        "gateway_config_info",
        "gateway_config_last_reload_success",
    ] {
        assert!(names.contains(want), "missing {want} in {names:?}");
    }
    assert!(
        text.contains("gateway_requests_total{route=\"app\",region=\"fra\",class=\"2xx\"} 6"),
        "{text}"
    );
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_turns_readiness_false() {
    let two = Two::start().await;
    let config = with_admin(&two.config("fra", "", ""), "")
        .replace("listeners:", "server: { grace_period: 3s }\nlisteners:");
    let (mut gw, _) = Gateway::start(&config, &[]).await;
    let addr = gw.addr;
    let slow =
        tokio::spawn(async move { H1::connect(addr).await.send(get("a", "/slow/1500")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    eventually("readiness false while draining", || async {
        matches!(
            gateway_tests::client::get_status(gw.admin, "/readyz").await,
            Ok((503, _)) | Err(_)
        )
    })
    .await;
    let resp = slow.await.expect("slow request");
    assert_eq!(resp.status, 200, "in-flight request finished");
    assert_eq!(gw.wait_exit().await, Some(0), "exits after the drain");
}

#[tokio::test]
async fn binary_upgrade_hands_listeners_over_without_losing_a_request() {
    let two = Two::start().await;
    let config = with_admin(&two.config("fra", "", ""), "")
        .replace("listeners:", "server: { grace_period: 2s }\nlisteners:");
    let (mut old, _) = Gateway::start(&config, &[]).await;
    let addr = old.addr;
    let load = tokio::spawn(async move { drive(addr, "/", 200, Duration::from_secs(6), 8).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut new = Guard(old.start_upgrade().await);
    old.signal("QUIT");
    let outcomes = load.await.expect("load");
    let failed: Vec<_> = outcomes.iter().filter(|o| o.status != Some(200)).collect();
    assert!(outcomes.len() > 1000, "load ran: {}", outcomes.len());
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the upgrade: {:?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(
        old.wait_exit().await,
        Some(0),
        "the old process exits after handing over"
    );
    assert!(
        new.0.try_wait().expect("wait").is_none(),
        "the new process serves"
    );
    eventually("new process ready on the same admin port", || async {
        matches!(
            gateway_tests::client::get_status(old.admin, "/readyz").await,
            Ok((200, _))
        )
    })
    .await;
    assert_eq!(region_of(addr, "/").await.as_deref(), Some("fra"));
}

#[tokio::test]
async fn tls_certificates_reload_with_the_config() {
    let two = Two::start().await;
    let old = gateway_tests::TestPki::new(&[&["reload.test"]]);
    let new = gateway_tests::TestPki::new(&[&["reload.test"]]);
    let tls_listener =
        "  - { name: https, bind: \"{tls}\", tls: { certs: [{ cert: CERT, key: KEY }] } }\n";
    let config = |cert: &str, key: &str, tls_addr: &str| {
        with_admin(&two.config("fra", "", ""), "").replace(
            "listeners:\n  - { name: http, bind: \"{listen}\" }\n",
            &format!(
                "listeners:\n  - {{ name: http, bind: \"{{listen}}\" }}\n{}",
                tls_listener
                    .replace("CERT", cert)
                    .replace("KEY", key)
                    .replace("{tls}", tls_addr)
            ),
        )
    };
    let files: [(&str, &[u8]); 4] = [
        ("old.pem", old.leaves[0].cert_pem.as_bytes()),
        ("old.key", old.leaves[0].key_pem.as_bytes()),
        ("new.pem", new.leaves[0].cert_pem.as_bytes()),
        ("new.key", new.leaves[0].key_pem.as_bytes()),
    ];
    let (gw, tls_addr) = Gateway::start(&config("old.pem", "old.key", "{tls}"), &files).await;
    let (_, info) = gateway_tests::client::h2_tls(tls_addr, &old.ca_der, "reload.test").await;
    assert_eq!(info.peer_cert, old.leaves[0].der);
    gw.write_config(&config("new.pem", "new.key", &tls_addr.to_string()));
    eventually("new certificate served", || async {
        let (_, info) = gateway_tests::client::tls_connect_any(tls_addr, "reload.test").await;
        info.peer_cert == new.leaves[0].der
    })
    .await;
    let s = gw.status(None).await;
    assert_eq!(s["last_reload"]["result"], "ok", "{s}");
    assert!(
        s["last_reload"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("certificates changed: https")),
        "{s}"
    );
}
