//! The `gateway` command line: check, schema, help, and refusing to run an invalid config.

use std::path::{Path, PathBuf};

use gateway_tests::gateway_cli;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Every example config in the repository.
fn example_configs() -> Vec<PathBuf> {
    let dir = repo_root().join("config/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("config/examples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_config_checks_ok() {
    let files = example_configs();
    assert!(files.len() >= 2, "examples missing: {files:?}");
    for file in files {
        let (code, stdout, stderr) = gateway_cli(&["check", file.to_str().expect("utf-8 path")]);
        assert_eq!(code, 0, "{}:\n{stderr}", file.display());
        assert!(stdout.contains(": ok ("), "{stdout}");
    }
}

#[test]
fn broken_config_reports_every_error_with_position_path_and_fix() {
    let file = repo_root().join("tests/fixtures/broken.yaml");
    let (code, _, stderr) = gateway_cli(&["check", file.to_str().expect("utf-8 path")]);
    assert_eq!(code, 64, "{stderr}");
    let expected = [
        "broken.yaml:3:26: listeners[1].bind: `127.0.0.1:8080` overlaps listener `http`",
        "broken.yaml:8:24: regions.fra.probe.interval: invalid duration",
        "broken.yaml:11:15: regions.ber.endpoints[0].id: duplicate endpoint id `fra-1`",
        "broken.yaml:14:20: routes[0].regions[1]: unknown region `ams`",
        "broken.yaml:16:5: routes[0].colour: unknown field `colour`",
    ];
    for line in expected {
        assert!(stderr.contains(line), "missing `{line}` in:\n{stderr}");
    }
    assert_eq!(
        stderr.matches("\n    fix: ").count(),
        expected.len(),
        "{stderr}"
    );
    assert!(stderr.contains("5 errors in config"), "{stderr}");
}

#[test]
fn syntax_errors_and_missing_files_fail_with_64() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "listeners:\n  - { name: http, bind: \"127.0.0.1:1\"\n",
    )
    .expect("write");
    let (code, _, stderr) = gateway_cli(&["check", bad.to_str().expect("utf-8")]);
    assert_eq!(code, 64);
    assert!(stderr.contains("bad.yaml:3:1:"), "{stderr}");

    let (code, _, stderr) = gateway_cli(&["check", "/nonexistent/gateway.yaml"]);
    assert_eq!(code, 64);
    assert!(stderr.contains("cannot read config file"), "{stderr}");
}

#[test]
fn run_refuses_an_invalid_config() {
    let file = repo_root().join("tests/fixtures/broken.yaml");
    let (code, _, stderr) = gateway_cli(&["run", "--config", file.to_str().expect("utf-8")]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("unknown region `ams`"), "{stderr}");
}

#[test]
fn schema_is_json_schema_with_every_section() {
    let (code, stdout, _) = gateway_cli(&["schema"]);
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&stdout).expect("schema is JSON");
    assert!(schema["$schema"]
        .as_str()
        .is_some_and(|s| s.contains("json-schema.org")));
    let props = schema["properties"].as_object().expect("properties");
    for key in [
        "listeners",
        "admin",
        "server",
        "regions",
        "routes",
        "sticky_keys",
    ] {
        assert!(props.contains_key(key), "schema lacks {key}");
    }
    assert_eq!(schema["additionalProperties"], false);
}

#[test]
fn help_lists_every_subcommand() {
    let (code, stdout, _) = gateway_cli(&["--help"]);
    assert_eq!(code, 0);
    for sub in ["run", "check", "schema", "demo"] {
        assert!(stdout.contains(sub), "--help lacks {sub}:\n{stdout}");
    }
    let (code, stdout, _) = gateway_cli(&["run", "--help"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("--config") && stdout.contains("--threads"),
        "{stdout}"
    );
}

/// Every property of the schema, as (path, property schema).
fn schema_properties(
    value: &serde_json::Value,
    path: &str,
    out: &mut Vec<(String, serde_json::Value)>,
) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(props) = map.get("properties").and_then(|p| p.as_object()) {
                for (name, prop) in props {
                    out.push((format!("{path}.{name}"), prop.clone()));
                }
            }
            for (key, child) in map {
                schema_properties(child, &format!("{path}/{key}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                schema_properties(child, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

// Issue 16, front door: the schema showed `"default": null` for ~45 fields with real defaults.
#[test]
fn schema_states_every_documented_default_and_no_null_defaults() {
    let (code, stdout, _) = gateway_cli(&["schema"]);
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&stdout).expect("schema is JSON");
    let mut props = Vec::new();
    schema_properties(&schema, "", &mut props);
    assert!(props.len() > 60, "{} properties", props.len());
    let mut wrong = Vec::new();
    for (path, prop) in &props {
        let text = format!(
            "{} {}",
            prop["title"].as_str().unwrap_or(""),
            prop["description"].as_str().unwrap_or("")
        );
        // "(default 2)", "(default `1s`)", "`lax` (default)"; not "(default: number of CPUs)".
        let documented = text.contains("(default)")
            || text
                .match_indices("(default ")
                .any(|(i, _)| !text[i..].starts_with("(default: "));
        match prop.get("default") {
            Some(serde_json::Value::Null) => wrong.push(format!("{path}: default null")),
            None if documented => wrong.push(format!("{path}: documents a default: {text}")),
            _ => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Spot checks against validation's defaults.
    let default_of = |suffix: &str| {
        props
            .iter()
            .find(|(p, _)| p.ends_with(suffix))
            .map(|(_, prop)| prop["default"].clone())
            .unwrap_or_else(|| panic!("no property {suffix}"))
    };
    assert_eq!(default_of("RawServer.grace_period"), "10s");
    assert_eq!(default_of("RawProbe.interval"), "1s");
    assert_eq!(default_of("RawTimeouts.connect"), "250ms");
    assert_eq!(default_of("RawRetry.attempts"), 2);
    assert_eq!(default_of("RawSticky.cookie"), "gw_affinity");
    assert_eq!(default_of("RawSticky.secure"), true);
    assert_eq!(
        default_of("RawRetry.on"),
        serde_json::json!(["connect", "reset", 502, 503, 504])
    );
}
