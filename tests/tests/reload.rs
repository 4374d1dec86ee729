//! Reload as one swap (issue 9): a reload builds everything new before it publishes anything,
//! so a reload that fails half-way changes nothing.

use gateway_tests::{client, eventually, free_port, region, Gateway, TestPki};

/// A PEM private key that parses as PEM but that no signer accepts: it passes `gateway check`
/// (which reads PEM) and fails only when the certificate set is built.
const UNUSABLE_KEY: &str = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

#[tokio::test]
async fn a_reload_whose_second_listener_has_an_unusable_key_changes_neither_listener() {
    let fra = region("fra", "fra-1").await;
    let first = TestPki::new(&[&["a.test"], &["b.test"]]);
    let second = TestPki::new(&[&["a.test"], &["b.test"]]);
    let b_addr = free_port();
    let config = |a: &str, b_key: &str| {
        format!(
            r#"admin: {{ bind: "{{admin}}" }}
listeners:
  - {{ name: http, bind: "{{listen}}" }}
  - {{ name: tls-a, bind: "{{tls}}", tls: {{ certs: [{{ cert: {a}.pem, key: {a}.key }}] }} }}
  - {{ name: tls-b, bind: "{b_addr}", tls: {{ certs: [{{ cert: b.pem, key: {b_key} }}] }} }}
regions:
  fra:
    endpoints: [{{ id: fra-1, address: "{fra}" }}]
    probe: {{ http: {{ path: /healthz }}, interval: 200ms, timeout: 150ms }}
routes:
  - {{ name: app, regions: [fra] }}
"#,
            fra = fra.addr()
        )
    };
    let files: [(&str, &[u8]); 7] = [
        ("a1.pem", first.leaves[0].cert_pem.as_bytes()),
        ("a1.key", first.leaves[0].key_pem.as_bytes()),
        ("a2.pem", second.leaves[0].cert_pem.as_bytes()),
        ("a2.key", second.leaves[0].key_pem.as_bytes()),
        ("b.pem", first.leaves[1].cert_pem.as_bytes()),
        ("b.key", first.leaves[1].key_pem.as_bytes()),
        ("unusable.key", UNUSABLE_KEY.as_bytes()),
    ];
    let (gw, a_addr) = Gateway::start(&config("a1", "b.key"), &files).await;
    let served = |addr, name: &'static str| async move {
        client::tls_connect_any(addr, name).await.1.peer_cert
    };
    assert_eq!(served(a_addr, "a.test").await, first.leaves[0].der);
    assert_eq!(served(b_addr, "b.test").await, first.leaves[1].der);

    // Listener a gets a good new certificate, listener b an unusable key.
    let (status, body) = {
        std::fs::write(
            gw.config_path(),
            gw.render(&config("a2", "unusable.key"))
                .replace("{tls}", &a_addr.to_string()),
        )
        .expect("write config");
        gw.admin_call("POST", "/reload", None).await
    };
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("listener `tls-b`"), "{body}");
    let s = gw.status(None).await;
    assert_eq!(s["last_reload"]["result"], "error", "{s}");
    assert_eq!(s["config"]["version"], 1, "{s}");
    assert_eq!(
        served(a_addr, "a.test").await,
        first.leaves[0].der,
        "listener a still serves its old certificate"
    );
    assert_eq!(served(b_addr, "b.test").await, first.leaves[1].der);

    // The same change with a usable key applies to both at once.
    std::fs::write(
        gw.config_path(),
        gw.render(&config("a2", "b.key"))
            .replace("{tls}", &a_addr.to_string()),
    )
    .expect("write config");
    eventually("the good reload applies", || async {
        gw.status(None).await["config"]["version"] == 2
    })
    .await;
    assert_eq!(served(a_addr, "a.test").await, second.leaves[0].der);
    assert_eq!(served(b_addr, "b.test").await, first.leaves[1].der);
}

/// `/status` reads the running config, its version and the last reload as one picture: while
/// reloads land back to back, every answer that shows version `v` shows the hash of version
/// `v` (the soak once saw a new version beside the old config's hash).
#[tokio::test]
async fn status_never_pairs_a_reloads_version_with_another_configs_hash() {
    let fra = region("fra", "fra-1").await;
    let config = |attempts: u32| {
        format!(
            r#"admin: {{ bind: "{{admin}}" }}
listeners: [{{ name: http, bind: "{{listen}}" }}]
regions:
  fra:
    endpoints: [{{ id: fra-1, address: "{fra}" }}]
    probe: {{ http: {{ path: /healthz }}, interval: 200ms, timeout: 150ms }}
routes:
  - {{ name: app, regions: [fra], retry: {{ attempts: {attempts} }} }}
"#,
            fra = fra.addr()
        )
    };
    let (gw, _) = Gateway::start(&config(2), &[]).await;
    let gw = std::sync::Arc::new(gw);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pollers: Vec<_> = (0..2)
        .map(|_| {
            let (gw, stop) = (gw.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let s = gw.status(None).await;
                    seen.push((
                        s["config"]["version"].as_u64().expect("version"),
                        s["config"]["hash"].as_str().expect("hash").to_string(),
                    ));
                }
                seen
            })
        })
        .collect();
    const RELOADS: u64 = 40;
    for k in 0..RELOADS {
        // Versions alternate between the two configs: odd ones run `attempts: 2`.
        gw.write_config(config(if k % 2 == 0 { 3 } else { 2 }).as_str());
        let (status, body) = gw.admin_call("POST", "/reload", None).await;
        assert_eq!(status, 200, "reload {k}: {body}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut by_version = std::collections::BTreeMap::new();
    for poller in pollers {
        for (version, hash) in poller.await.expect("poller") {
            let first = by_version.entry(version).or_insert(hash.clone());
            assert_eq!(first, &hash, "version {version} shown with two configs");
        }
    }
    let hashes: std::collections::BTreeSet<_> = by_version.values().collect();
    assert_eq!(hashes.len(), 2, "two configs alternate: {by_version:?}");
    for (version, hash) in &by_version {
        let twin = by_version
            .iter()
            .find(|(v, _)| *v % 2 == version % 2 && *v != version);
        if let Some((v, other)) = twin {
            assert_eq!(
                hash, other,
                "versions {version} and {v} run the same config"
            );
        }
    }
    assert_eq!(gw.status(None).await["config"]["version"], 1 + RELOADS);
}
