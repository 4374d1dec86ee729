//! A real browser for the status page's test: Debian's headless Chromium driven through
//! `chromedriver` over the W3C WebDriver protocol (JSON over HTTP on loopback). Only the few
//! commands the tests need: open a page, run a script, take a screenshot. The driver process
//! is killed, and the session ended, when the [`Browser`] is dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::Request;
use serde_json::{json, Value};

use crate::client::{full, H1};
use crate::process::which;

/// A headless Chromium session.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    /// Chromium's profile, removed with the browser.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromedriver` on a free loopback port and opens a headless Chromium session
    /// (`width`×`height` window). Panics, naming what is missing, when Chromium or its driver
    /// is not installed (`scripts/deps.sh` installs both).
    pub async fn start(width: u32, height: u32) -> Self {
        let driver_bin = which("chromedriver")
            .expect("chromedriver is not installed: run scripts/deps.sh (apt: chromium-driver)");
        let chromium = which("chromium")
            .expect("chromium is not installed: run scripts/deps.sh (apt: chromium)");
        let addr = crate::free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={}", addr.port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let profile_path = profile.path().display().to_string();
        let mut browser = Self {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let started = Instant::now();
        loop {
            if let Some(v) = browser.try_call("GET", "/status", None).await {
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                started.elapsed() < crate::DEADLINE,
                "chromedriver did not get ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--metrics-recording-only",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={profile_path}"),
                ],
            },
        }}});
        let answer = browser.call("POST", "/session", Some(caps)).await;
        browser.session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        browser
    }

    async fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Option<Value> {
        let mut conn = H1::try_connect(self.addr).await?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .body(full(body.map(|b| b.to_string()).unwrap_or_default()))
            .ok()?;
        let resp = conn.try_send(req).await?;
        serde_json::from_slice(&resp.body).ok()
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = tokio::time::timeout(crate::DEADLINE, self.try_call(method, path, body))
            .await
            .unwrap_or_else(|_| panic!("WebDriver {method} {path}: no answer"))
            .unwrap_or_else(|| panic!("WebDriver {method} {path}: no JSON answer"));
        if answer["value"]["error"].is_string() {
            panic!("WebDriver {method} {path}: {answer}");
        }
        answer
    }

    /// Opens `url` and waits for it to load.
    pub async fn open(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.call("POST", &path, Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        let answer = self
            .call("POST", &path, Some(json!({"script": script, "args": []})))
            .await;
        answer["value"].clone()
    }

    /// Resizes the window (to look at the page as a phone would).
    pub async fn resize(&self, width: u32, height: u32) {
        let path = format!("/session/{}/window/rect", self.session);
        let rect = json!({"width": width, "height": height});
        self.call("POST", &path, Some(rect)).await;
    }

    /// A PNG screenshot of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let path = format!("/session/{}/screenshot", self.session);
        let answer = self.call("GET", &path, None).await;
        let encoded = answer["value"].as_str().expect("screenshot data");
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("screenshot is base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session stops Chromium; killing the driver alone could leave it running.
        if !self.session.is_empty() {
            use std::io::{Read, Write};
            if let Ok(mut conn) =
                std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))
            {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    conn,
                    "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                    self.session, self.addr
                );
                let _ = conn.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
