use super::*;

fn spec() -> SoakSpec {
    SoakSpec {
        gateway: PathBuf::from("gateway"),
        duration: Duration::from_secs(60),
        rate: 100,
        threads: 2,
        fault_every: Duration::from_secs(10),
        fault_for: Duration::from_secs(6),
        reload_every: Duration::from_secs(3),
        probe_interval: Duration::from_millis(200),
        head_timeout: Duration::from_secs(2),
    }
}

#[test]
fn the_schedule_faults_one_first_tier_region_at_a_time() {
    let every = Duration::from_secs(10);
    let (fault_for, reload_every) = (Duration::from_secs(6), Duration::from_secs(3));
    let short = schedule(Duration::from_secs(60), every, fault_for, reload_every);
    let kinds: Vec<&str> = short.iter().map(|w| w.fault.name()).collect();
    assert_eq!(kinds, ["crash", "blackhole", "5xx", "slow", "flap"]);
    assert_eq!(short[0].start_s, 5.0);
    assert!(one_at_a_time(&short));
    assert!(short.iter().all(|w| w.end_s + TAIL.as_secs_f64() <= 60.0));

    let long = schedule(Duration::from_secs(600), every, fault_for, reload_every);
    assert_eq!(long.len(), 59);
    assert!(one_at_a_time(&long));
    for w in &long {
        let middle = Duration::from_secs_f64((w.start_s + w.end_s) / 2.0);
        let first_tier = VARIANTS[variant_at(middle, reload_every)].tiers[0];
        assert!(
            first_tier.iter().any(|(name, _)| *name == w.region),
            "{w:?} is not in the first tier then"
        );
    }
    let pairs: std::collections::BTreeSet<(String, &str)> = long
        .iter()
        .map(|w| (w.region.clone(), w.fault.name()))
        .collect();
    for region in REGIONS {
        for fault in FAULTS {
            assert!(
                pairs.contains(&(region.to_string(), fault.name())),
                "{region} never gets {}: {pairs:?}",
                fault.name()
            );
        }
    }
}

#[test]
fn the_variant_in_force_follows_the_valid_rewrites() {
    let every = Duration::from_secs(3);
    let at = |s: f64| variant_at(Duration::from_secs_f64(s), every);
    // Rewrites at 1.5 (valid 1), 4.5 (invalid), 7.5 (valid 2), 10.5 (invalid), 13.5 (valid 3).
    assert_eq!(at(1.0), 0);
    assert_eq!(at(1.6), 1);
    assert_eq!(at(5.0), 1);
    assert_eq!(at(7.6), 2);
    assert_eq!(at(12.0), 2);
    assert_eq!(at(13.6), 3);
    assert_eq!(at(19.6), 0);
}

#[test]
fn a_spec_that_could_not_keep_the_promise_is_refused() {
    assert!(spec().validate().is_ok());
    let overlapping = SoakSpec {
        fault_for: Duration::from_secs(10),
        ..spec()
    };
    assert!(overlapping.validate().is_err());
    let short = SoakSpec {
        duration: Duration::from_secs(10),
        ..spec()
    };
    assert!(short.validate().is_err());
}

#[test]
fn reloads_alternate_valid_and_invalid_and_each_valid_one_changes_something() {
    let mut running = 0;
    for k in 0..3 * PLAN_PERIOD {
        match reload_plan(k) {
            ConfigChange::Valid(n) => {
                assert_eq!(k % 2, 0);
                assert_ne!(n, running, "rewrite {k} would be unchanged");
                running = n;
            }
            ConfigChange::Invalid(_) => assert_eq!(k % 2, 1),
        }
        assert_eq!(reload_plan(k), reload_plan(k % PLAN_PERIOD));
    }
    let invalid: std::collections::BTreeSet<String> = (0..PLAN_PERIOD)
        .filter_map(|k| match reload_plan(k) {
            ConfigChange::Invalid(kind) => Some(format!("{kind:?}")),
            ConfigChange::Valid(_) => None,
        })
        .collect();
    assert_eq!(invalid.len(), INVALID.len());
}

#[tokio::test]
async fn valid_variants_load_and_invalid_ones_are_refused_by_the_real_loader() {
    let fleet = Fleet::start(&[("fra", 2), ("ber", 2), ("ams", 2), (CALM, 1)])
        .await
        .expect("fleet");
    let ports = Ports {
        listen: testbed::launcher::loopback(18080),
        admin: testbed::launcher::loopback(19901),
    };
    let path = std::path::Path::new("gateway.yaml");
    let mut hashes = std::collections::BTreeSet::new();
    for k in 0..PLAN_PERIOD {
        let change = reload_plan(k);
        let text = config_text(&fleet, ports, &spec(), change).expect("text");
        match (change, gateway_config::parse(&text, path)) {
            (ConfigChange::Valid(_), Ok(config)) => {
                assert_eq!(config.routes.len(), 2, "{text}");
                assert_eq!(config.server.limits.head_timeout, Duration::from_secs(2));
                hashes.insert(config.hash);
            }
            (ConfigChange::Invalid(_), Err(_)) => {}
            (change, Ok(_)) => panic!("{change:?} loads:\n{text}"),
            (change, Err(e)) => panic!("{change:?} does not load: {e}\n{text}"),
        }
    }
    assert_eq!(
        hashes.len(),
        VARIANTS.len(),
        "every valid variant is different"
    );
    fleet.shutdown().await;
}

fn ramp(from_mib: f64, to_mib: f64, seconds: u64) -> Vec<(f64, u64)> {
    (0..=seconds)
        .map(|t| {
            let mib = from_mib + (to_mib - from_mib) * t as f64 / seconds as f64;
            // A sawtooth of ±1 MiB, as allocation noise.
            let noise = if t % 2 == 0 { 1024 } else { 0 };
            (t as f64, (mib * 1024.0) as u64 + noise)
        })
        .collect()
}

#[test]
fn rss_that_stays_flat_after_warm_up_passes_and_a_leak_fails() {
    // Warm-up from 10 to 30 MiB in the first 10 s, then flat.
    let mut flat = ramp(10.0, 30.0, 10);
    flat.extend(ramp(30.0, 30.0, 50).into_iter().map(|(t, k)| (t + 10.0, k)));
    let r = rss_flat(&flat, 60.0);
    assert_eq!(r.warmup_s, 12.0);
    assert!(r.pass, "{r:?}");
    assert!(r.slope_kib_per_min.abs() < 100.0, "{r:?}");

    // 30 → 40 MiB in 10 minutes: 1 MiB a minute, about 85 bytes per request at 200 req/s.
    let leak = ramp(30.0, 40.0, 600);
    let r = rss_flat(&leak, 600.0);
    assert!(!r.pass, "{r:?}");
    assert!(r.slope_kib_per_min > 900.0, "{r:?}");

    // 20 → 22.5 MiB in 10 minutes, 250 KiB a minute (the metrics recorder that kept every
    // sample until a scrape): within the thirds, over the slope.
    let slow = ramp(20.0, 22.5, 600);
    let r = rss_flat(&slow, 600.0);
    assert!(r.last_max_kib <= r.limit_kib, "{r:?}");
    assert!(!r.pass, "{r:?}");

    // 20 → 20.5 MiB in 10 minutes (50 KiB a minute, what the fixed gateway shows): passes.
    let settling = ramp(20.0, 20.5, 600);
    let r = rss_flat(&settling, 600.0);
    assert!(r.pass, "{r:?}");

    // A 60-second run is held to the thirds only: its slope is mostly warm-up.
    let short = ramp(20.0, 20.5, 60);
    let r = rss_flat(&short, 60.0);
    assert!(r.slope_kib_per_min > RSS_SLOPE_LIMIT_KIB_PER_MIN, "{r:?}");
    assert_eq!(r.slope_limit_kib_per_min, None);
    assert!(r.pass, "{r:?}");

    // No samples is no evidence.
    assert!(!rss_flat(&[], 60.0).pass);
}

#[test]
fn a_reload_is_as_expected_only_with_the_right_result_version_and_hash() {
    let record = |change, result: &str, version, hash_changed| ReloadRecord {
        t_s: 1.0,
        change,
        result: Some(result.into()),
        seen_ms: Some(120.0),
        version,
        hash_changed,
        detail: String::new(),
    };
    let valid = ConfigChange::Valid(1);
    let invalid = ConfigChange::Invalid(InvalidKind::Syntax);
    assert!(record(valid, "ok", (1, 2), true).as_expected());
    assert!(!record(valid, "unchanged", (1, 1), false).as_expected());
    assert!(!record(valid, "error", (1, 1), false).as_expected());
    assert!(record(invalid, "error", (2, 2), false).as_expected());
    assert!(!record(invalid, "ok", (2, 3), true).as_expected());
    assert!(!record(invalid, "error", (2, 2), true).as_expected());
}

#[test]
fn metrics_are_read_by_label() {
    let metrics = "gateway_config_reloads_total{result=\"ok\"} 10\n\
        gateway_config_reloads_total{result=\"error\"} 9\n\
        gateway_passive_failures_total{region=\"fra\",kind=\"connect\"} 31\n\
        gateway_passive_failures_total{region=\"calm\",kind=\"timeout\"} 0\n\
        gateway_passive_failures_total{region=\"calm\",kind=\"reset\"} 2\n";
    let counts = reload_counts(metrics);
    assert_eq!(counts.get("ok"), Some(&10));
    assert_eq!(counts.get("error"), Some(&9));
    assert_eq!(passive_failures(metrics, "calm"), 2);
    assert_eq!(passive_failures(metrics, "ber"), 0);
}
