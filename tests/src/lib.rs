//! Integration harness: real gateway processes, real upstreams and real clients on loopback.
//!
//! - [`Gateway`] starts the `gateway` binary through the test bed's launcher
//!   (`testbed::launcher`): a config template rendered into a temp dir, `/readyz` awaited, the
//!   child killed when dropped (also when the test panics). Its methods panic instead of
//!   returning errors, with the gateway's log in the message.
//! - [`config`] starts a typed config template (`testbed::yaml`); a [`Template`] is that or
//!   literal YAML, for tests whose subject is the YAML itself.
//! - [`region`] starts simulated regional endpoints (`testbed::region`) on ephemeral ports;
//!   [`Fleet`] starts whole regions of them.
//! - [`client`] holds HTTP/1.1, h2c, TLS (h2 and HTTP/1.1) and WebSocket clients.
//! - [`TestPki`] is a throwaway CA with leaf certificates, generated at test time.
//! - [`api`] is an HTTPS server shaped like a cluster API server's `/readyz` (bearer token,
//!   client certificates), for region checks.
//! - [`browser`] drives headless Chromium over WebDriver, for the status page.
//! - [`process`] holds the process and port helpers (a child's guard, a free port, the
//!   `gateway` binary, an executable on `PATH`).

pub mod client;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use testbed::launcher::{GatewayOptions, GatewayProcess, Ports, Workdir};
pub use testbed::region::{Identity, Mode, RegionServer};
use testbed::yaml::{GatewayYaml, Region, Route};

/// Generous deadline for anything a loaded 2-core CI box must do (start-up, readiness).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Starts a simulated endpoint on an ephemeral port.
pub async fn region(region: &str, endpoint: &str) -> RegionServer {
    region_on("127.0.0.1:0", region, endpoint).await
}

/// Starts a simulated endpoint on `addr` (`ip:port`; port 0 for an ephemeral one).
pub async fn region_on(addr: &str, region: &str, endpoint: &str) -> RegionServer {
    let identity = Identity {
        region: region.into(),
        endpoint: endpoint.into(),
    };
    let addr = addr.parse().expect("addr");
    RegionServer::bind(addr, identity)
        .await
        .unwrap_or_else(|e| panic!("start simulated endpoint {endpoint} on {addr}: {e}"))
}

/// Simulated regions (the test bed's fleet) on ephemeral loopback ports, their endpoints
/// named `<region>-1`, `<region>-2`, ...
pub struct Fleet(testbed::fleet::Fleet);

impl Fleet {
    /// Starts `count` endpoints per region: `Fleet::start(&[("fra", 2), ("ber", 2)])`.
    pub async fn start(layout: &[(&str, usize)]) -> Self {
        let fleet = testbed::fleet::Fleet::start(layout).await;
        Self(fleet.expect("start simulated regions"))
    }

    /// Switches every endpoint of region `name` to `mode`.
    pub fn set(&self, name: &str, mode: Mode) {
        self.0.set_mode(name, mode).expect("region");
    }

    /// The endpoints of region `name`.
    pub fn servers(&self, name: &str) -> &[RegionServer] {
        self.0.region(name).expect("region")
    }

    /// The endpoint with id `endpoint`, in whichever region.
    pub fn server(&self, endpoint: &str) -> &RegionServer {
        self.0
            .regions()
            .flat_map(|(_, servers)| servers)
            .find(|s| s.identity().endpoint == endpoint)
            .unwrap_or_else(|| panic!("no endpoint {endpoint}"))
    }

    /// [`config`] with every region of the fleet, each with the settings of `region` (a probe,
    /// passive ejection, ...) and its endpoints; no routes yet.
    pub fn config(&self, region: &Region) -> GatewayYaml {
        config().fleet_with(&self.0, region)
    }
}

/// A config template for [`Gateway::start`]: the plaintext listener `http` on `{listen}` and
/// the admin API on `{admin}`; no regions or routes yet.
pub fn config() -> GatewayYaml {
    GatewayYaml::bound("{listen}", "{admin}")
}

/// [`config`] with region `fra` (`region`) and route `app` to it.
pub fn one_region(region: Region) -> GatewayYaml {
    config()
        .region("fra", region)
        .route(Route::new("app", &["fra"]))
}

/// What [`Gateway::start`] and [`Gateway::write_config`] take: config text with placeholders
/// (`{listen}`, `{tls}`, `{admin}`, `{dir}`), literal or typed.
pub trait Template {
    /// The text, placeholders not yet filled in.
    fn template(&self) -> String;
}

impl Template for str {
    fn template(&self) -> String {
        self.to_string()
    }
}

impl Template for String {
    fn template(&self) -> String {
        self.clone()
    }
}

impl Template for GatewayYaml {
    fn template(&self) -> String {
        self.to_yaml("").expect("config as YAML")
    }
}

/// `servers` as a one-line YAML list of gateway endpoints (ids from their identities).
pub fn endpoints(servers: &[RegionServer]) -> String {
    testbed::yaml::endpoint_list(servers)
}

/// A gateway child process on ephemeral ports. Derefs to the launcher's
/// [`GatewayProcess`] (fields `addr`, `admin`, `dir`; `stderr`, `config_path`, ...).
pub struct Gateway(GatewayProcess);

impl std::ops::Deref for Gateway {
    type Target = GatewayProcess;

    fn deref(&self) -> &GatewayProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Gateway {
    fn deref_mut(&mut self) -> &mut GatewayProcess {
        &mut self.0
    }
}

impl Gateway {
    /// Starts a gateway whose config is `config` with these placeholders replaced:
    /// `{listen}` (plaintext listener), `{tls}` (a second listener, for TLS configs),
    /// `{admin}` and `{dir}` (the temp dir, for certificate paths). `files` are written into the
    /// temp dir first.
    pub async fn start(
        config: &(impl Template + ?Sized),
        files: &[(&str, &[u8])],
    ) -> (Self, SocketAddr) {
        Self::start_with_log(config, files, "info").await
    }

    /// [`Gateway::start`] with `GATEWAY_LOG` set to `log` (`GATEWAY_TEST_LOG` overrides it, to
    /// debug a failing test).
    pub async fn start_with_log(
        config: &(impl Template + ?Sized),
        files: &[(&str, &[u8])],
        log: &str,
    ) -> (Self, SocketAddr) {
        let (mut gw, tls) = Self::launch_with_log(config, files, log);
        gw.wait_ready().await;
        (gw, tls)
    }

    /// Like [`Gateway::start`], but returns as soon as the process is spawned, without waiting
    /// for `/readyz` (for tests of readiness itself).
    pub fn launch(
        config: &(impl Template + ?Sized),
        files: &[(&str, &[u8])],
    ) -> (Self, SocketAddr) {
        Self::launch_with_log(config, files, "info")
    }

    fn launch_with_log(
        config: &(impl Template + ?Sized),
        files: &[(&str, &[u8])],
        log: &str,
    ) -> (Self, SocketAddr) {
        let dir = Workdir::temp().expect("temp dir");
        for (name, contents) in files {
            dir.write(name, contents).expect("write file");
        }
        let ports = Ports::free().expect("free ports");
        let tls = free_port();
        let text = render(&config.template(), ports, dir.path()).replace("{tls}", &tls.to_string());
        let options = GatewayOptions {
            log: Some(std::env::var("GATEWAY_TEST_LOG").unwrap_or_else(|_| log.into())),
            ..GatewayOptions::new(gateway_bin())
        };
        let gw = GatewayProcess::spawn(&options, dir, ports, &text).expect("spawn gateway");
        (Self(gw), tls)
    }

    /// Waits for `/readyz` to answer 200 (panics with the gateway's log after [`DEADLINE`]).
    pub async fn wait_ready(&mut self) {
        if let Err(e) = self.0.wait_ready(DEADLINE).await {
            panic!("{e}");
        }
    }

    /// Whether `/status` shows region `name` with `up` as given.
    pub async fn region_is(&self, name: &str, up: bool) -> bool {
        self.0
            .region_up(name)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            == Some(up)
    }

    /// Starts a second gateway process with `--upgrade` on the same config and upgrade socket,
    /// and waits until it is waiting for the sockets. Send SIGQUIT to this one next.
    pub async fn start_upgrade(&self) -> Child {
        self.0
            .start_upgrade(DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Replaces the config file atomically (write a temp file, rename over), with the same
    /// placeholders as [`Gateway::start`].
    pub fn write_config(&self, config: &(impl Template + ?Sized)) {
        self.0
            .replace_config(&self.render(&config.template()))
            .expect("write config");
    }

    /// Waits until `/status` shows config version `version` (the first config is version 1).
    pub async fn wait_config_version(&self, what: &str, version: u64) {
        eventually(what, || async {
            self.status(None).await["config"]["version"] == version
        })
        .await;
    }

    /// Fills the placeholders of a config template.
    pub fn render(&self, config: &str) -> String {
        let ports = Ports {
            listen: self.addr,
            admin: self.admin,
        };
        render(config, ports, self.dir.path())
    }

    /// The gateway's resident memory (`VmRSS`) in KiB.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid().expect("the gateway's pid");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    /// Sends a signal (`TERM`, `HUP`, ...) to the gateway.
    pub fn signal(&self, name: &str) {
        if let Err(e) = self.0.signal(name) {
            panic!("kill -{name} failed: {e}");
        }
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        self.0.wait_exit(DEADLINE).await.and_then(|s| s.code())
    }

    /// `method path` on the admin API with an optional bearer token: (status, body).
    pub async fn admin_call(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        self.0
            .admin_call(method, path, token)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `GET /status` as JSON.
    pub async fn status(&self, token: Option<&str>) -> serde_json::Value {
        self.0.status(token).await.unwrap_or_else(|e| panic!("{e}"))
    }
}

/// `config` with `{listen}`, `{admin}` and `{dir}` filled in.
fn render(config: &str, ports: Ports, dir: &Path) -> String {
    config
        .replace("{listen}", &ports.listen.to_string())
        .replace("{admin}", &ports.admin.to_string())
        .replace("{dir}", &dir.display().to_string())
}

/// The value of the first line of a `/metrics` text starting with `prefix`, or 0.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
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
    /// CA certificate (PEM), for configs that name a `ca_file`.
    pub ca_pem: String,
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
    /// The files of the leaves, in order, as [`Gateway::start`] takes them: for each leaf the
    /// (certificate file, key file) names of `names`, with its PEM certificate and key.
    pub fn files<'a>(&'a self, names: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a [u8])> {
        names
            .iter()
            .zip(&self.leaves)
            .flat_map(|((cert, key), leaf)| {
                [
                    (*cert, leaf.cert_pem.as_bytes()),
                    (*key, leaf.key_pem.as_bytes()),
                ]
            })
            .collect()
    }

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
            ca_pem: ca_cert.pem(),
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

pub mod api;
pub mod browser;
pub mod dns;
pub mod grpc;
pub mod otlp;
pub mod process;
pub mod raw;

pub use process::{free_port, gateway_bin};

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
