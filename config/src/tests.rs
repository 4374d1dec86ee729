use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
listeners:
  - { name: http, bind: "127.0.0.1:8080" }
regions:
  fra:
    endpoints:
      - { id: fra-1, address: "127.0.0.1:9001" }
  ber:
    endpoints:
      - { id: ber-1, address: "ber.internal:9002" }
routes:
  - name: api
    match: { host: api.example.com, path_prefix: /v1 }
    regions: [fra, ber]
"#;

fn issues(text: &str) -> Vec<ConfigIssue> {
    match parse(text, Path::new("test.yaml")) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.issues().to_vec(),
    }
}

#[test]
fn minimal_config_has_defaults() {
    let c = parse(MINIMAL, Path::new("test.yaml")).expect("valid");
    assert_eq!(c.routes[0].tiers.len(), 2);
    assert_eq!(c.routes[0].allowed_regions.len(), 2);
    assert_eq!(
        c.routes[0].timeouts.connect,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(
        c.routes[0].host,
        HostPattern::Exact("api.example.com".into())
    );
    assert_eq!(
        c.regions[1].endpoints[0].address,
        EndpointAddress::Host {
            host: "ber.internal".into(),
            port: 9002
        }
    );
    assert_eq!(c.admin.bind.to_string(), DEFAULT_ADMIN_BIND);
    assert_eq!(c.hash.len(), 16);
}

#[test]
fn unknown_fields_are_all_reported_with_positions() {
    let text = MINIMAL
        .replace("name: api\n", "name: api\n    colour: red\n")
        .replace("- { name: http,", "- { nmae: x, name: http,");
    let found = issues(&text);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!(found[0].path, "listeners[0].nmae");
    assert_eq!((found[0].line, found[0].column), (3, 7));
    assert_eq!(found[1].path, "routes[0].colour");
    assert_eq!((found[1].line, found[1].column), (13, 5));
}

#[test]
fn semantic_errors_are_all_reported() {
    let text = MINIMAL
        .replace(
            "regions: [fra, ber]",
            "regions: [fra, ams]\n    allowed_regions: [ber]\n    timeouts: { connect: 5 parsecs }",
        )
        .replace("id: ber-1", "id: fra-1");
    let found = issues(&text);
    let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
    assert!(paths.contains(&"regions.ber.endpoints[0].id"), "{paths:?}");
    assert!(paths.contains(&"routes[0].regions[1]"), "{paths:?}");
    assert!(paths.contains(&"routes[0].regions[0]"), "{paths:?}"); // fra not in allowed_regions
    assert!(paths.contains(&"routes[0].timeouts.connect"), "{paths:?}");
    let unknown = found
        .iter()
        .find(|i| i.path == "routes[0].regions[1]")
        .expect("reported");
    assert_eq!((unknown.line, unknown.column), (14, 20));
    assert!(unknown.message.contains("unknown region `ams`"));
    assert!(unknown.fix.contains("`ber`"));
    let rendered = unknown.to_string();
    assert!(
        rendered.starts_with("test.yaml:14:20: routes[0].regions[1]: unknown region"),
        "{rendered}"
    );
}

#[test]
fn type_errors_name_the_position() {
    let text = MINIMAL.replace(
        "regions: [fra, ber]",
        "regions: [fra, ber]\n    retry: { attempts: many }",
    );
    let found = issues(&text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].line, 15);
    assert!(found[0].path.contains("retry.attempts"), "{:?}", found[0]);
}

#[test]
fn overlapping_listeners_and_missing_files() {
    let text = MINIMAL.replace(
        "  - { name: http, bind: \"127.0.0.1:8080\" }",
        "  - { name: http, bind: \"127.0.0.1:8080\" }\n  - { name: all, bind: \"0.0.0.0:8080\" }\n  - name: tls\n    bind: \"127.0.0.1:8443\"\n    tls: { certs: [{ cert: nope.pem, key: nope.key }] }",
    );
    let found = issues(&text);
    let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "listeners[1].bind",
            "listeners[2].tls.certs[0].cert",
            "listeners[2].tls.certs[0].key"
        ]
    );
}

#[test]
fn weighted_tiers_and_wildcards() {
    let text = MINIMAL
        .replace("regions: [fra, ber]", "regions: [{ fra: 70, ber: 30 }]")
        .replace("host: api.example.com", "host: \"*.Example.com\"");
    let c = parse(&text, Path::new("t.yaml")).expect("valid");
    assert_eq!(c.routes[0].tiers.len(), 1);
    assert_eq!(c.routes[0].tiers[0].regions[0].1.get(), 70);
    assert_eq!(
        c.routes[0].host,
        HostPattern::Wildcard("example.com".into())
    );
}

#[test]
fn schema_denies_unknown_fields() {
    let schema = json_schema();
    let text = schema.to_string();
    assert!(text.contains("\"additionalProperties\":false"));
    assert!(text.contains("path_prefix"));
}

#[test]
fn admin_off_loopback_needs_a_token() {
    let text = format!("admin: {{ bind: \"0.0.0.0:9901\" }}\n{MINIMAL}");
    let found = issues(&text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "admin.bind");
    assert!(found[0].fix.contains("token_file"), "{:?}", found[0]);
}

/// A config with an admin token and a sticky key in `dir`, its admin API on `bind`.
fn with_secrets(dir: &Path, bind: &str, token_file: bool) -> std::path::PathBuf {
    let token = if token_file {
        ", token_file: admin.token"
    } else {
        ""
    };
    let text = format!(
        "admin: {{ bind: \"{bind}\"{token} }}\nsticky_keys: [{{ id: k1, secret_file: k1.key }}]\n{MINIMAL}"
    );
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn hash_and_diff_cover_the_contents_of_referenced_files() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("admin.token"), "token-one-0123456789").expect("write");
    std::fs::write(dir.path().join("k1.key"), [b'a'; 40]).expect("write");
    let path = with_secrets(dir.path(), "127.0.0.1:9901", true);
    let first = load(&path).expect("valid");
    assert_eq!(first.files.len(), 2, "{:?}", first.files);
    assert_eq!(first.files[0].field, "admin.token_file");
    assert_eq!(first.files[1].field, "sticky_keys[0].secret_file");
    assert_eq!(load(&path).expect("valid").hash, first.hash, "stable");

    // The token rewritten at the same path: the YAML is byte for byte the same.
    std::fs::write(dir.path().join("admin.token"), "token-two-0123456789").expect("write");
    let second = load(&path).expect("valid");
    assert_ne!(second.hash, first.hash, "a rotated token changes the hash");
    let d = diff(&first, &second);
    assert_eq!(d.changes, [crate::Change::AdminTokenChanged]);
    assert_eq!(d.summary(), "admin token changed");

    // The sticky secret rewritten at the same path.
    std::fs::write(dir.path().join("k1.key"), [b'b'; 40]).expect("write");
    let third = load(&path).expect("valid");
    assert_ne!(
        third.hash, second.hash,
        "a rotated sticky secret changes the hash"
    );
    let d = diff(&second, &third);
    assert_eq!(d.changes, [crate::Change::StickyKeyChanged("k1".into())]);
    assert_eq!(d.summary(), "sticky key k1 changed");
}

#[test]
fn certificate_rewritten_at_the_same_path_changes_hash_and_diff() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tls");
    let dir = tempfile::tempdir().expect("tmp");
    let copy = |from: &str, to: &str| {
        std::fs::copy(examples.join(from), dir.path().join(to)).expect("copy");
    };
    copy("example.pem", "server.pem");
    copy("example.key", "server.key");
    let text = MINIMAL.replace(
        "  - { name: http, bind: \"127.0.0.1:8080\" }\n",
        "  - { name: http, bind: \"127.0.0.1:8080\" }\n  - { name: https, bind: \"127.0.0.1:8443\", tls: { certs: [{ cert: server.pem, key: server.key }] } }\n",
    );
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, text).expect("write");
    let first = load(&path).expect("valid");
    copy("other.pem", "server.pem");
    copy("other.key", "server.key");
    let second = load(&path).expect("valid");
    assert_ne!(second.hash, first.hash);
    let d = diff(&first, &second);
    assert_eq!(d.certificates_changed().collect::<Vec<_>>(), ["https"]);
    assert_eq!(d.summary(), "certificates changed: https");
}

#[test]
fn a_reload_cannot_drop_the_token_while_the_running_admin_socket_is_public() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("admin.token"), "token-one-0123456789").expect("write");
    std::fs::write(dir.path().join("k1.key"), [b'a'; 40]).expect("write");
    let public = BoundSockets {
        admin: "0.0.0.0:9901".parse().expect("addr"),
    };
    let local = BoundSockets {
        admin: "127.0.0.1:9901".parse().expect("addr"),
    };
    // Valid on its own (loopback, no token), and for a gateway started on loopback...
    let path = with_secrets(dir.path(), "127.0.0.1:9901", false);
    load(&path).expect("valid on its own");
    load_for_reload(&path, local).expect("valid while the admin socket is loopback");
    // ...but not while the socket actually listening is public.
    let err = load_for_reload(&path, public).expect_err("token dropped on a public socket");
    let issues = err.issues();
    assert_eq!(issues.len(), 1, "{err}");
    assert_eq!(issues[0].path, "admin.token_file");
    assert!(issues[0].message.contains("`0.0.0.0:9901`"), "{err}");
    assert!(issues[0].fix.contains("keep `admin.token_file`"), "{err}");
    // No admin section at all is the same: the default bind does not move the socket.
    let text = std::fs::read_to_string(&path).expect("read");
    let without_admin: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, without_admin).expect("write");
    assert!(load_for_reload(&path, public).is_err());
    // Keeping the token is fine.
    let path = with_secrets(dir.path(), "127.0.0.1:9901", true);
    load_for_reload(&path, public).expect("token kept");
}

#[test]
fn request_is_a_total_deadline_that_can_be_off_and_read_follows_it() {
    use std::time::Duration;
    let c = parse(MINIMAL, Path::new("test.yaml")).expect("valid");
    assert_eq!(c.routes[0].timeouts.request, Some(Duration::from_secs(30)));
    assert_eq!(c.routes[0].timeouts.read, Duration::from_secs(30));
    let with = |t: &str| {
        MINIMAL.replace(
            "    regions: [fra, ber]\n",
            &format!("    regions: [fra, ber]\n    timeouts: {t}\n"),
        )
    };
    let c = parse(&with("{ request: 5s }"), Path::new("test.yaml")).expect("valid");
    assert_eq!(c.routes[0].timeouts.request, Some(Duration::from_secs(5)));
    assert_eq!(
        c.routes[0].timeouts.read,
        Duration::from_secs(5),
        "read defaults to request"
    );
    let c = parse(&with("{ request: off, read: 10s }"), Path::new("test.yaml")).expect("valid");
    assert_eq!(c.routes[0].timeouts.request, None);
    assert_eq!(c.routes[0].timeouts.read, Duration::from_secs(10));
    let c = parse(&with("{ request: off }"), Path::new("test.yaml")).expect("valid");
    assert_eq!(c.routes[0].timeouts.read, Duration::from_secs(30));
    let errs = issues(&with("{ request: 0s }"));
    assert!(
        errs.iter().any(|e| e.path == "routes[0].timeouts.request"),
        "{errs:?}"
    );
}

#[test]
fn grpc_streams_are_bound_per_message_unless_the_route_sets_max_body_bytes() {
    let with = |extra: &str| {
        let text = MINIMAL.replace(
            "    regions: [fra, ber]\n",
            &format!("    regions: [fra, ber]\n{extra}"),
        );
        parse(&text, Path::new("test.yaml")).expect("valid")
    };
    // Defaults: plain bodies 1 MiB, gRPC messages 4 MiB each, a gRPC stream unbound.
    let r = &with("").routes[0];
    assert_eq!(r.max_body_bytes, Some(1024 * 1024));
    assert_eq!(r.max_grpc_stream_bytes, None);
    assert_eq!(r.max_grpc_message_bytes, Some(4 * 1024 * 1024));
    // Set on the route, max_body_bytes bounds gRPC streams too.
    let r = &with("    max_body_bytes: 65536\n    max_grpc_message_bytes: 1024\n").routes[0];
    assert_eq!(r.max_body_bytes, Some(65536));
    assert_eq!(r.max_grpc_stream_bytes, Some(65536));
    assert_eq!(r.max_grpc_message_bytes, Some(1024));
    // 0: no limit.
    let r = &with("    max_body_bytes: 0\n    max_grpc_message_bytes: 0\n").routes[0];
    assert_eq!(
        (
            r.max_body_bytes,
            r.max_grpc_stream_bytes,
            r.max_grpc_message_bytes
        ),
        (None, None, None)
    );
}

#[test]
fn latency_ejection_defaults_on_and_checks_its_settings() {
    let c = parse(MINIMAL, Path::new("test.yaml")).expect("valid");
    assert_eq!(
        c.regions[0].passive.latency,
        Some(LatencyEjection {
            factor_permille: 3000,
            min_samples: std::num::NonZeroU32::new(10).expect("nonzero"),
            min_latency: std::time::Duration::from_millis(100),
        })
    );
    let with = |passive: &str| {
        MINIMAL.replacen(
            "  fra:\n    endpoints:\n",
            &format!("  fra:\n    passive: {passive}\n    endpoints:\n"),
            1,
        )
    };
    let off = parse(
        &with("{ latency: { enabled: false } }"),
        Path::new("test.yaml"),
    )
    .expect("valid");
    assert_eq!(off.regions[0].passive.latency, None);
    let tuned = parse(
        &with("{ latency: { factor: 2.5, min_samples: 4, min_latency: 250ms } }"),
        Path::new("test.yaml"),
    )
    .expect("valid");
    let tuned = tuned.regions[0].passive.latency.expect("on");
    assert_eq!(tuned.factor_permille, 2500);
    assert_eq!(tuned.min_samples.get(), 4);
    assert_eq!(tuned.min_latency, std::time::Duration::from_millis(250));

    let found = issues(&with(
        "{ latency: { factor: 1.2, min_samples: 0, min_latency: 0s } }",
    ));
    let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "regions.fra.passive.latency.factor",
            "regions.fra.passive.latency.min_samples",
            "regions.fra.passive.latency.min_latency",
        ],
        "{found:#?}"
    );
    assert!(found[0].fix.contains("1.5"), "{found:#?}");
}

#[test]
fn early_retry_is_on_by_default_a_route_opts_out_and_its_settings_are_checked() {
    use std::time::Duration;
    let defaults = Some(EarlyRetry {
        factor_permille: 3000,
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_secs(1),
        budget_permille: 100,
        hedge: true,
    });
    let c = parse(MINIMAL, Path::new("test.yaml")).expect("valid");
    assert_eq!(c.routes[0].retry.early, defaults);
    let with = |early: &str| {
        MINIMAL.replace(
            "    regions: [fra, ber]\n",
            &format!("    regions: [fra, ber]\n    retry: {{ early: {early} }}\n"),
        )
    };
    let on = parse(&with("{ enabled: true }"), Path::new("test.yaml")).expect("valid");
    assert_eq!(on.routes[0].retry.early, defaults);
    let off = parse(&with("{ enabled: false }"), Path::new("test.yaml")).expect("valid");
    assert_eq!(off.routes[0].retry.early, None);
    let tuned = parse(
        &with("{ enabled: true, factor: 2, min_delay: 50ms, max_delay: 50ms, budget: 5%, hedge: false }"),
        Path::new("test.yaml"),
    )
    .expect("valid");
    let tuned = tuned.routes[0].retry.early.expect("on");
    assert_eq!(tuned.factor_permille, 2000);
    assert_eq!(
        tuned.min_delay, tuned.max_delay,
        "equal bounds: a fixed deadline"
    );
    assert_eq!(tuned.budget_permille, 50);
    assert!(!tuned.hedge);

    let found = issues(&with(
        "{ enabled: true, factor: 0.5, min_delay: 2s, max_delay: 1s, budget: 150%, delay: 1s }",
    ));
    let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routes[0].retry.early.factor",
            "routes[0].retry.early.max_delay",
            "routes[0].retry.early.budget",
            "routes[0].retry.early.delay",
        ],
        "{found:#?}"
    );
    assert!(found.iter().all(|i| i.line > 0), "{found:#?}");
}

#[test]
fn degraded_is_opt_in_and_checks_its_durations() {
    use std::time::Duration;
    let c = parse(MINIMAL, Path::new("test.yaml")).expect("valid");
    assert_eq!(c.routes[0].degraded, None);
    let with = |d: &str| {
        MINIMAL.replace(
            "    regions: [fra, ber]\n",
            &format!("    regions: [fra, ber]\n    degraded: {d}\n"),
        )
    };
    let on = parse(&with("{ ttfb: 300ms }"), Path::new("test.yaml")).expect("valid");
    assert_eq!(
        on.routes[0].degraded,
        Some(Degraded {
            ttfb: Duration::from_millis(300),
            for_: Duration::from_secs(2),
            recover_after: Duration::from_secs(10),
        })
    );
    let found = issues(&with("{ ttfb: 0s, for: soon, recover_after: 0s }"));
    let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routes[0].degraded.ttfb",
            "routes[0].degraded.for",
            "routes[0].degraded.recover_after",
        ],
        "{found:#?}"
    );
    let missing = issues(&with("{ for: 1s }"));
    assert!(
        missing.iter().any(|i| i.message.contains("ttfb")),
        "{missing:#?}"
    );
}

#[test]
fn a_probe_is_tcp_http_or_grpc_and_grpc_tls_settings_need_tls() {
    let probe = |settings: &str| {
        MINIMAL.replace(
            "      - { id: fra-1, address: \"127.0.0.1:9001\" }\n",
            &format!(
                "      - {{ id: fra-1, address: \"127.0.0.1:9001\" }}\n    probe: {settings}\n"
            ),
        )
    };
    let c = parse(&probe("{ interval: 1s }"), Path::new("test.yaml")).expect("valid");
    assert_eq!(c.regions[0].probe.kind, ProbeKind::Tcp);
    let c = parse(
        &probe("{ grpc: { service: orders.v1.Orders } }"),
        Path::new("test.yaml"),
    )
    .expect("valid");
    assert_eq!(
        c.regions[0].probe.kind,
        ProbeKind::Grpc(GrpcProbe {
            service: "orders.v1.Orders".into(),
            tls: ProbeTls::default(),
            bearer_token_file: None,
        })
    );
    let c = parse(&probe("{ grpc: {} }"), Path::new("test.yaml")).expect("valid");
    assert!(matches!(&c.regions[0].probe.kind, ProbeKind::Grpc(g) if g.service.is_empty()));

    let found = issues(&probe("{ http: {}, grpc: {} }"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "regions.fra.probe.grpc");
    assert!(found[0].message.contains("not both"), "{found:#?}");

    // The region's endpoints speak plaintext: a TLS setting is a mistake, not ignored.
    let found = issues(&probe("{ grpc: { sni: grpc.fra.test } }"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "regions.fra.probe.grpc.sni");
    // gRPC needs HTTP/2 for the traffic too, not only for the probe.
    let c = parse(&probe("{ grpc: {} }"), Path::new("test.yaml")).expect("valid");
    assert_eq!(c.warnings.len(), 1, "{:#?}", c.warnings);
    assert_eq!(c.warnings[0].path, "regions.fra.probe.grpc");
    let h2 = probe("{ grpc: {} }\n    protocol: http2");
    let c = parse(&h2, Path::new("test.yaml")).expect("valid");
    assert!(c.warnings.is_empty(), "{:#?}", c.warnings);
}

#[test]
fn otlp_export_needs_an_http_traces_url_and_has_defaults() {
    let with = |otlp: &str| format!("server:\n  otlp: {otlp}\n{MINIMAL}");
    let c = parse(
        &with("{ endpoint: \"http://127.0.0.1:4318/v1/traces\" }"),
        Path::new("test.yaml"),
    )
    .expect("valid");
    let otlp = c.server.otlp.expect("otlp");
    assert_eq!(otlp.endpoint.path(), "/v1/traces");
    assert_eq!(otlp.service_name, "failover-gateway");
    assert_eq!((otlp.max_batch, otlp.queue), (512, 8192));
    assert_eq!(otlp.interval, std::time::Duration::from_secs(1));
    assert!(parse(MINIMAL, Path::new("test.yaml"))
        .expect("valid")
        .server
        .otlp
        .is_none());
    for (bad, says) in [
        ("{ endpoint: \"http://127.0.0.1:4318\" }", "no path"),
        ("{ endpoint: \"https://otel.example/v1/traces\" }", "HTTPS"),
        ("{ endpoint: \"otel:4318\" }", "not an http URL"),
    ] {
        let found = issues(&with(bad));
        assert_eq!(found.len(), 1, "{bad}: {found:#?}");
        assert_eq!(found[0].path, "server.otlp.endpoint");
        assert!(found[0].message.contains(says), "{bad}: {found:#?}");
    }
    let found = issues(&with(
        "{ endpoint: \"http://c/v1/traces\", max_batch: 0, interval: 0s }",
    ));
    let paths: Vec<_> = found.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        ["server.otlp.max_batch", "server.otlp.interval"],
        "{found:#?}"
    );
}
