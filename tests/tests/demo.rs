//! `gateway demo`: starts, answers from a region, fails over when a region is crashed, stops on
//! Ctrl-C (SIGINT).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway_tests::client::{get_status, H1};
use gateway_tests::{free_port, gateway_bin, DEADLINE};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn demo_serves_fails_over_and_stops_on_ctrl_c() {
    let (listen, admin, control) = (free_port(), free_port(), free_port());
    let mut child = Child(
        Command::new(gateway_bin())
            .args([
                "demo",
                "--listen",
                &listen.to_string(),
                "--admin",
                &admin.to_string(),
                "--control",
                &control.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn demo"),
    );
    let start = Instant::now();
    while !matches!(get_status(admin, "/readyz").await, Ok((200, _))) {
        assert!(start.elapsed() < DEADLINE, "demo not ready");
        assert!(
            child.0.try_wait().expect("wait").is_none(),
            "demo exited early"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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

    // Ctrl-C stops the demo.
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
    let mut out = String::new();
    use std::io::Read;
    child
        .0
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert!(
        out.contains(&format!("http://{listen}/")),
        "banner lacks the URL:\n{out}"
    );
}
