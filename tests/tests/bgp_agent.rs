//! The whole-gateway drain (`POST /drain`, `gateway drain`) and `gateway bgp-agent` against a
//! real gateway, with a stand-in `birdc` that records each call (the anycast lab in
//! `deploy/lab/` runs the agent with real bird2).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway_tests::client::get_status;
use gateway_tests::process::Guard;
use gateway_tests::{eventually, gateway_bin, one_region, region, Gateway, DEADLINE};
use testbed::yaml::Region;

/// A `birdc` stand-in: appends its arguments and the include file's state to `calls`, and
/// exits with the code in `exit` (0 when absent).
fn fake_birdc(dir: &Path, include: &Path) -> PathBuf {
    let script = dir.join("birdc");
    let text = format!(
        "#!/bin/sh\ncode=$(cat '{exit}' 2>/dev/null || echo 0)\nstate=withdrawn\ngrep -q 'route ' '{include}' && state=announced\necho \"$* $state exit=$code\" >> '{calls}'\nexit $code\n",
        exit = dir.join("exit").display(),
        include = include.display(),
        calls = dir.join("calls").display(),
    );
    std::fs::write(&script, text).expect("write birdc");
    let _ = Command::new("chmod").arg("+x").arg(&script).status();
    script
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn start_agent(gw: &Gateway, dir: &Path, include: &Path, birdc: &Path) -> Guard {
    let child = Command::new(gateway_bin())
        .args(["bgp-agent", "--admin", &gw.admin.to_string()])
        .args(["--prefix", "192.0.2.10/32", "--interval", "50ms"])
        .arg("--include")
        .arg(include)
        .arg("--birdc")
        .arg(birdc)
        .args(["--bird-socket", "/nonexistent/bird.ctl"])
        .env("GATEWAY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).expect("log"))
        .spawn()
        .expect("spawn agent");
    Guard(child)
}

/// Whether the include file says `want` (announced or not) and the last `birdc configure`
/// applied it (the agent writes the file first, then calls birdc).
async fn announced(include: &Path, want: bool) -> bool {
    let dir = include.parent().expect("dir");
    let state = if want { "announced" } else { "withdrawn" };
    std::fs::read_to_string(include)
        .map(|t| t.contains("route 192.0.2.10/32 blackhole") == want)
        .unwrap_or(false)
        && calls(dir)
            .last()
            .is_some_and(|c| c.ends_with(&format!("configure {state} exit=0")))
}

#[tokio::test]
async fn a_drained_gateway_is_not_ready_but_still_serves() {
    let app = region("fra", "fra-1").await;
    let (gw, _) = Gateway::start(&one_region(Region::of(std::slice::from_ref(&app))), &[]).await;
    assert_eq!(gw.admin_call("GET", "/readyz", None).await.0, 200);

    let (code, body) = gw.admin_call("POST", "/drain", None).await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (code, json["draining"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    let (code, body) = gw.admin_call("GET", "/readyz", None).await;
    assert_eq!((code, body.trim()), (503, "draining"));
    assert_eq!(gw.status(None).await["draining"], true);
    let (status, _) = get_status(gw.addr, "/hello").await.expect("request");
    assert_eq!(status, 200, "a drained gateway still serves what arrives");

    assert_eq!(gw.admin_call("POST", "/undrain", None).await.0, 200);
    assert_eq!(gw.admin_call("GET", "/readyz", None).await.0, 200);
}

#[tokio::test]
async fn gateway_drain_drains_and_waits() {
    let app = region("fra", "fra-1").await;
    let (gw, _) = Gateway::start(&one_region(Region::of(std::slice::from_ref(&app))), &[]).await;
    let started = Instant::now();
    let out = Command::new(gateway_bin())
        .args(["drain", "--admin", &gw.admin.to_string(), "--wait", "300ms"])
        .env("GATEWAY_LOG", "warn")
        .output()
        .expect("run gateway drain");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() >= Duration::from_millis(300), "it waits");
    assert_eq!(gw.admin_call("GET", "/readyz", None).await.0, 503);
}

#[tokio::test]
async fn the_agent_announces_while_ready_and_withdraws_on_drain_region_loss_and_exit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let include = dir.path().join("anycast.conf");
    let birdc = fake_birdc(dir.path(), &include);
    let app = region("fra", "fra-1").await;
    let probe = testbed::yaml::Probe::http(
        "/healthz",
        Duration::from_millis(100),
        Duration::from_millis(100),
    )
    .rise_fall(1, 1);
    let (mut gw, _) = Gateway::start(
        &one_region(Region::of(std::slice::from_ref(&app)).probe(probe)),
        &[],
    )
    .await;
    let agent = start_agent(&gw, dir.path(), &include, &birdc);

    eventually("announced while ready", || announced(&include, true)).await;
    assert!(
        calls(dir.path())
            .last()
            .is_some_and(|c| c == "-s /nonexistent/bird.ctl configure announced exit=0"),
        "{:?}",
        calls(dir.path())
    );

    gw.admin_call("POST", "/drain", None).await;
    eventually("withdrawn on drain", || announced(&include, false)).await;
    gw.admin_call("POST", "/undrain", None).await;
    eventually("announced after undrain", || announced(&include, true)).await;

    // No region up: another PoP may still reach them.
    app.set_mode(gateway_tests::Mode::Status(503));
    eventually("withdrawn with no region up", || announced(&include, false)).await;
    app.set_mode(gateway_tests::Mode::Ok);
    eventually("announced with the region back", || {
        announced(&include, true)
    })
    .await;

    // A failed `birdc configure` is not taken as applied: the agent retries until it works.
    std::fs::write(dir.path().join("exit"), "1").expect("write exit code");
    gw.admin_call("POST", "/drain", None).await;
    eventually("retries of a failing birdc configure", || async {
        calls(dir.path())
            .iter()
            .filter(|c| c.ends_with("withdrawn exit=1"))
            .count()
            >= 3
    })
    .await;
    std::fs::write(dir.path().join("exit"), "0").expect("write exit code");
    eventually("applied once birdc works", || async {
        calls(dir.path())
            .last()
            .is_some_and(|c| c.ends_with("withdrawn exit=0"))
    })
    .await;
    let applied = calls(dir.path()).len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        calls(dir.path()).len(),
        applied,
        "no reconfigure while nothing changes"
    );

    // The gateway is gone: withdrawn (it already is) and the agent keeps it so.
    gw.admin_call("POST", "/undrain", None).await;
    eventually("announced again", || announced(&include, true)).await;
    gw.signal("KILL");
    gw.wait_exit().await;
    eventually("withdrawn when no gateway listens", || {
        announced(&include, false)
    })
    .await;

    // Stopping the agent withdraws too (it is withdrawn here already; the call is made).
    let before = calls(dir.path()).len();
    let mut agent = agent;
    let _ = Command::new("kill")
        .args(["-TERM", &agent.0.id().to_string()])
        .status();
    let start = Instant::now();
    while agent.0.try_wait().expect("wait").is_none() {
        assert!(
            start.elapsed() < DEADLINE,
            "the agent did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        calls(dir.path()).len() > before,
        "SIGTERM withdraws through birdc"
    );
    assert!(announced(&include, false).await);
}
