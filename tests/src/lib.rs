//! Integration harness: real gateway processes, real upstreams and real clients on loopback.
//!
//! - [`Gateway`] writes a config into a temp dir, starts the `gateway` binary as a child, waits
//!   for `/readyz`, and kills the child when dropped (also when the test panics).
//! - [`region`] starts simulated regional endpoints (`loadtest::region`) on ephemeral ports.
//! - [`client`] holds HTTP/1.1, h2c, TLS (h2 and HTTP/1.1) and WebSocket clients.
//! - [`TestPki`] is a throwaway CA with leaf certificates, generated at test time.

pub mod client;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use loadtest::region::{Identity, Mode, RegionServer};

/// Generous deadline for anything a loaded 2-core CI box must do (start-up, readiness).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Path of the `gateway` binary: `GATEWAY_BIN`, or next to this test executable's `deps` dir.
pub fn gateway_bin() -> PathBuf {
    if let Ok(p) = std::env::var("GATEWAY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("gateway");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p gateway`, which scripts/test.sh does) or set GATEWAY_BIN",
        bin.display()
    );
    bin
}

/// A free loopback port (bound and released; the gateway binds it right after).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind ephemeral port");
    l.local_addr().expect("local addr")
}

/// Starts a simulated endpoint on an ephemeral port.
pub async fn region(region: &str, endpoint: &str) -> RegionServer {
    RegionServer::bind(
        "127.0.0.1:0".parse().expect("addr"),
        Identity {
            region: region.into(),
            endpoint: endpoint.into(),
        },
    )
    .await
    .expect("start simulated region")
}

/// A gateway child process on ephemeral ports.
pub struct Gateway {
    child: Option<Child>,
    /// The temp dir with the config, certificates and the child's stderr.
    pub dir: tempfile::TempDir,
    /// The first listener's address.
    pub addr: SocketAddr,
    /// The admin API's address.
    pub admin: SocketAddr,
}

impl Gateway {
    /// Starts a gateway whose config is `config` with these placeholders replaced:
    /// `{listen}` (plaintext listener), `{tls}` (a second listener, for TLS configs),
    /// `{admin}` and `{dir}` (the temp dir, for certificate paths). `files` are written into the
    /// temp dir first.
    pub async fn start(config: &str, files: &[(&str, &[u8])]) -> (Self, SocketAddr) {
        Self::start_with_log(config, files, "info").await
    }

    /// [`Gateway::start`] with `GATEWAY_LOG` set to `log` (`GATEWAY_TEST_LOG` overrides it, to
    /// debug a failing test).
    pub async fn start_with_log(
        config: &str,
        files: &[(&str, &[u8])],
        log: &str,
    ) -> (Self, SocketAddr) {
        let (mut gw, tls) = Self::launch_with_log(config, files, log);
        gw.wait_ready().await;
        (gw, tls)
    }

    /// Like [`Gateway::start`], but returns as soon as the process is spawned, without waiting
    /// for `/readyz` (for tests of readiness itself).
    pub fn launch(config: &str, files: &[(&str, &[u8])]) -> (Self, SocketAddr) {
        Self::launch_with_log(config, files, "info")
    }

    fn launch_with_log(config: &str, files: &[(&str, &[u8])], log: &str) -> (Self, SocketAddr) {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).expect("write file");
        }
        let (addr, tls, admin) = (free_port(), free_port(), free_port());
        let text = config
            .replace("{listen}", &addr.to_string())
            .replace("{tls}", &tls.to_string())
            .replace("{admin}", &admin.to_string())
            .replace("{dir}", &dir.path().display().to_string());
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, text).expect("write config");
        let stderr = std::fs::File::create(dir.path().join("gateway.stderr")).expect("stderr file");
        let child = Command::new(gateway_bin())
            .args(["run", "--threads", "2", "--config"])
            .arg(&config_path)
            .arg("--upgrade-sock")
            .arg(dir.path().join("upgrade.sock"))
            .env(
                "GATEWAY_LOG",
                std::env::var("GATEWAY_TEST_LOG").unwrap_or_else(|_| log.into()),
            )
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn gateway");
        let gw = Self {
            child: Some(child),
            dir,
            addr,
            admin,
        };
        (gw, tls)
    }

    /// Waits for `/readyz` to answer 200 (panics with the gateway's log after [`DEADLINE`]).
    pub async fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("gateway exited early with {status}:\n{}", self.stderr());
                }
            }
            if let Ok((200, _)) = client::get_status(self.admin, "/readyz").await {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "gateway not ready in time:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `/status` shows region `name` with `up` as given.
    pub async fn region_is(&self, name: &str, up: bool) -> bool {
        self.status(None).await["regions"]
            .as_array()
            .expect("regions")
            .iter()
            .any(|r| r["name"] == name && r["up"] == up)
    }

    /// What the gateway wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.stderr")).unwrap_or_default()
    }

    /// [`Gateway::stderr`] without ANSI colour sequences.
    pub fn stderr_plain(&self) -> String {
        let text = self.stderr();
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // CSI: ESC [ parameters, then one final letter.
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts a second gateway process with `--upgrade` on the same config and upgrade socket,
    /// and waits until it is waiting for the sockets. Send SIGQUIT to this one next.
    pub async fn start_upgrade(&self) -> Child {
        let sock = self.dir.path().join("upgrade.sock");
        let stderr =
            std::fs::File::create(self.dir.path().join("gateway-new.stderr")).expect("stderr file");
        let child = Command::new(gateway_bin())
            .args(["run", "--threads", "2", "--upgrade", "--config"])
            .arg(self.config_path())
            .arg("--upgrade-sock")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn new gateway");
        let start = Instant::now();
        while !sock.exists() {
            assert!(
                start.elapsed() < DEADLINE,
                "the new gateway never listened on the upgrade socket"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child
    }

    /// Whether the child is still running (without `&mut`).
    pub fn is_running_ref(&self) -> bool {
        self.child
            .as_ref()
            .is_some_and(|c| std::path::Path::new(&format!("/proc/{}", c.id())).exists())
    }

    /// The config file the gateway runs with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    /// Replaces the config file atomically (write a temp file, rename over), with the same
    /// placeholders as [`Gateway::start`].
    pub fn write_config(&self, config: &str) {
        let text = self.render(config);
        let tmp = self.dir.path().join(".gateway.yaml.tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, self.config_path()).expect("rename config");
    }

    /// Fills the placeholders of a config template.
    pub fn render(&self, config: &str) -> String {
        config
            .replace("{listen}", &self.addr.to_string())
            .replace("{admin}", &self.admin.to_string())
            .replace("{dir}", &self.dir.path().display().to_string())
    }

    /// Sends a signal (`TERM`, `HUP`, ...) to the gateway.
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let ok = Command::new("kill")
                .args([&format!("-{name}"), &child.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{name} failed");
        }
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return status.code();
                }
            }
            if start.elapsed() > DEADLINE {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `method path` on the admin API with an optional bearer token: (status, body).
    pub async fn admin_call(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = client::H1::connect(self.admin)
            .await
            .send(req.body(client::empty()).expect("request"))
            .await;
        (
            resp.status,
            String::from_utf8_lossy(&resp.body).into_owned(),
        )
    }

    /// `GET /status` as JSON.
    pub async fn status(&self, token: Option<&str>) -> serde_json::Value {
        let (code, body) = self.admin_call("GET", "/status", token).await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status JSON")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `gateway <args>` to completion and returns (exit code, stdout, stderr).
pub fn gateway_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(gateway_bin())
        .args(args)
        .env("GATEWAY_LOG", "warn")
        .output()
        .expect("run gateway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A test CA and leaf certificates, generated at test time.
pub struct TestPki {
    /// CA certificate (DER) to trust in clients.
    pub ca_der: rustls_pki_types::CertificateDer<'static>,
    /// Leaf certificates: (names, cert PEM, key PEM, cert DER).
    pub leaves: Vec<Leaf>,
}

/// A leaf certificate signed by the test CA.
pub struct Leaf {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM.
    pub key_pem: String,
    /// Certificate DER, to compare with what a server presented.
    pub der: rustls_pki_types::CertificateDer<'static>,
}

impl TestPki {
    /// A CA and one leaf per entry of `names` (each entry a list of DNS names).
    pub fn new(names: &[&[&str]]) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gateway test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaves = names
            .iter()
            .map(|names| {
                let key = KeyPair::generate().expect("leaf key");
                let params =
                    CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                        .expect("params");
                let cert = params.signed_by(&key, &issuer).expect("leaf cert");
                Leaf {
                    cert_pem: cert.pem(),
                    key_pem: key.serialize_pem(),
                    der: cert.der().clone(),
                }
            })
            .collect();
        Self {
            ca_der: ca_cert.der().clone(),
            leaves,
        }
    }
}

/// Waits until `check` returns true, polling every 20 ms, failing after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub mod dns;
pub mod raw;

/// The outcome of one request sent by [`drive`].
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When it was sent, since the start of the run.
    pub sent: Duration,
    /// Time to the complete response.
    pub latency: Duration,
    /// Status, or `None` for a transport error.
    pub status: Option<u16>,
    /// The `x-region` header of the answer.
    pub region: Option<String>,
}

/// Sends GET `path` at `rate` requests per second for `duration` over `workers` keep-alive
/// connections (a new one after a transport error). Bounded in count and time.
pub async fn drive(
    addr: SocketAddr,
    path: &str,
    rate: u32,
    duration: Duration,
    workers: u32,
) -> Vec<Outcome> {
    let start = Instant::now();
    let per_worker = Duration::from_secs_f64(f64::from(workers) / f64::from(rate.max(1)));
    let total = (duration.as_secs_f64() * f64::from(rate)) as usize / workers as usize;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(total);
            let mut conn: Option<client::H1> = None;
            // Stagger workers across the interval.
            let offset = per_worker.mul_f64(f64::from(w) / f64::from(workers));
            for i in 0..total {
                let due = start + offset + per_worker * i as u32;
                tokio::time::sleep_until(due.into()).await;
                let sent = start.elapsed();
                if conn.as_ref().is_none_or(|c| !c.is_open()) {
                    conn = client::H1::try_connect(addr).await;
                }
                let result = match conn.as_mut() {
                    Some(c) => c.try_send(client::get("drive.test", &path)).await,
                    None => None,
                };
                if result.is_none() {
                    conn = None;
                }
                out.push(Outcome {
                    sent,
                    latency: start.elapsed() - sent,
                    status: result.as_ref().map(|r| r.status),
                    region: result
                        .as_ref()
                        .and_then(|r| r.header("x-region").map(str::to_string)),
                });
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("worker"));
    }
    all.sort_by_key(|o| o.sent);
    all
}
