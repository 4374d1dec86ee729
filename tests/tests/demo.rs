//! The demo (the test bed's `demo` binary, in front of the real `gateway run`): starts, answers
//! from a region, fails over when a region is crashed through the control listener, and on
//! Ctrl-C (SIGINT) stops its gateway child and removes its config file.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gateway_tests::client::{get_status, H1};
use gateway_tests::process::{children, process_exists, Guard};
use gateway_tests::{free_port, DEADLINE};

#[tokio::test]
async fn demo_serves_fails_over_and_stops_on_ctrl_c() {
    let demo_bin = testbed::launcher::sibling_bin("demo")
        .unwrap_or_else(|e| panic!("{e}: build it first (`cargo build --workspace --bins`)"));
    let work = tempfile::tempdir().expect("tmp");
    let dir = work.path().join("demo");
    let (listen, admin, control) = (free_port(), free_port(), free_port());
    let mut child = Guard(
        Command::new(demo_bin)
            .args([
                "--listen",
                &listen.to_string(),
                "--admin",
                &admin.to_string(),
                "--control",
                &control.to_string(),
            ])
            .arg("--dir")
            .arg(&dir)
            .env("GATEWAY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn demo"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    // The banner comes once the gateway is ready.
    let mut out = String::new();
    let start = Instant::now();
    while !out.contains("stop with Ctrl-C") {
        assert!(start.elapsed() < DEADLINE, "no banner in time:\n{out}");
        assert!(
            child.0.try_wait().expect("wait").is_none(),
            "demo exited early:\n{out}"
        );
        while let Ok(line) = lines.try_recv() {
            out.push_str(&line);
            out.push('\n');
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        out.contains(&format!("http://{listen}/")),
        "banner lacks the URL:\n{out}"
    );
    let config = std::fs::canonicalize(dir.join("gateway.yaml")).expect("config file");
    assert!(
        out.contains(&config.display().to_string()),
        "banner lacks the config path {}:\n{out}",
        config.display()
    );
    let gateways = children(child.0.id());
    assert_eq!(gateways.len(), 1, "one gateway child: {gateways:?}");
    let gateway = gateways[0];
    assert!(
        out.contains(&format!("pid {gateway}")),
        "banner lacks the gateway's pid {gateway}:\n{out}"
    );
    assert!(matches!(get_status(admin, "/readyz").await, Ok((200, _))));

    let mut c = H1::connect(listen).await;
    let resp = c
        .send(gateway_tests::client::get("localhost", "/hello"))
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["region"], "fra");

    // Crash region fra through the control listener: the next requests are served by ber.
    let mut ctl = H1::connect(control).await;
    let req = http::Request::post("/fra/refuse")
        .header("host", "x")
        .body(gateway_tests::client::empty())
        .expect("req");
    assert_eq!(ctl.send(req).await.status, 200);
    for _ in 0..10 {
        let resp = H1::connect(listen)
            .await
            .send(gateway_tests::client::get("localhost", "/hello"))
            .await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["region"], "ber");
    }

    // Ctrl-C stops the demo, its gateway, and removes the config file.
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill")
        .success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            assert!(status.success(), "demo exited with {status}");
            break;
        }
        assert!(start.elapsed() < DEADLINE, "demo did not stop on SIGINT");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now();
    while process_exists(gateway) {
        assert!(
            start.elapsed() < DEADLINE,
            "the gateway (pid {gateway}) outlived the demo"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !config.exists(),
        "the demo left {} behind",
        config.display()
    );
    assert!(!dir.exists(), "the demo left {} behind", dir.display());
}
