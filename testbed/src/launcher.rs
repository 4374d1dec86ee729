//! The one launcher of the real `gateway` binary.
//!
//! [`GatewayProcess::spawn`] writes the config into a working directory, starts
//! `gateway run --config <dir>/gateway.yaml` as a child and captures its stderr in
//! `<dir>/gateway.stderr` (or passes it through, for the demo). The caller then waits for
//! `/readyz` ([`GatewayProcess::wait_ready`]), talks to the admin API, sends signals, starts a
//! binary upgrade, and stops it. The child is killed when the handle is dropped, also when a
//! test panics, so no gateway outlives its launcher.
//!
//! Ports are chosen by binding port 0 and releasing it ([`Ports::free`]); the gateway binds them
//! right after. The integration tests, `loadtest` and the demo all start the gateway here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;

/// Why the gateway could not be started, or did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// No `gateway` binary where it was looked for.
    #[error("gateway binary not found at {0} (build it with `cargo build -p gateway`, or set GATEWAY_BIN)")]
    BinaryNotFound(PathBuf),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The process exited while it was expected to run.
    #[error("gateway exited with {status}:\n{stderr}")]
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// What it wrote to stderr (empty when stderr was passed through).
        stderr: String,
    },
    /// `/readyz` did not answer 200 in time.
    #[error("gateway not ready after {after:?}:\n{stderr}")]
    NotReady {
        /// How long it was given.
        after: Duration,
        /// What it wrote to stderr (empty when stderr was passed through).
        stderr: String,
    },
    /// The admin API answered, but not as expected.
    #[error("admin API {path}: status {status}: {body}")]
    Admin {
        /// The request path.
        path: String,
        /// The status it answered with.
        status: u16,
        /// The body it answered with.
        body: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Io { what, source }
}

/// The addresses a gateway listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// The plaintext client listener.
    pub listen: SocketAddr,
    /// The admin API.
    pub admin: SocketAddr,
}

impl Ports {
    /// Two loopback ports that were free a moment ago.
    pub fn free() -> std::io::Result<Self> {
        Ok(Self {
            listen: free_port()?,
            admin: free_port()?,
        })
    }
}

/// The resident memory (`VmRSS`) of process `pid` in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The open file descriptors of process `pid` (0 once it is gone).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A loopback port that was free a moment ago (bound to port 0 and released), and not handed
/// out before by this process: the kernel may give a just-released port again at once, and two
/// listeners of one config on the same port make the gateway refuse the config.
pub fn free_port() -> std::io::Result<SocketAddr> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    // Bounded: the ephemeral range holds thousands of ports; a few tries find a new one.
    for _ in 0..64 {
        let addr = std::net::TcpListener::bind(loopback(0))?.local_addr()?;
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return Ok(addr);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no loopback port that was not handed out already",
    ))
}

/// `127.0.0.1:port`.
pub const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        port,
    ))
}

/// The `gateway` binary: `GATEWAY_BIN` if set, else [`sibling_bin`]`("gateway")`.
pub fn gateway_bin() -> Result<PathBuf, LaunchError> {
    match std::env::var_os("GATEWAY_BIN") {
        Some(path) => Ok(PathBuf::from(path)),
        None => sibling_bin("gateway"),
    }
}

/// A binary of this workspace, found next to the running executable (`target/debug/`), or one
/// directory up when the running executable is a test in `target/debug/deps/`.
pub fn sibling_bin(name: &str) -> Result<PathBuf, LaunchError> {
    let exe = std::env::current_exe().map_err(io_error("current executable"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let found = [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    found.ok_or_else(|| LaunchError::BinaryNotFound(dir.join(name)))
}

/// Where the gateway's config (and, when captured, its stderr) lives.
pub enum Workdir {
    /// A temporary directory, removed when dropped.
    Temp(tempfile::TempDir),
    /// A directory chosen by the caller; left in place.
    Kept(PathBuf),
}

impl Workdir {
    /// A new temporary directory.
    pub fn temp() -> Result<Self, LaunchError> {
        tempfile::tempdir()
            .map(Self::Temp)
            .map_err(io_error("create a temp dir"))
    }

    /// `path`, created if it does not exist.
    pub fn kept(path: impl Into<PathBuf>) -> Result<Self, LaunchError> {
        let path = path.into();
        std::fs::create_dir_all(&path).map_err(io_error(format!("create {}", path.display())))?;
        Ok(Self::Kept(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        match self {
            Self::Temp(dir) => dir.path(),
            Self::Kept(path) => path,
        }
    }

    /// Writes `contents` to `name` inside the directory.
    pub fn write(&self, name: &str, contents: &[u8]) -> Result<(), LaunchError> {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io_error(format!("create {}", parent.display())))?;
        }
        std::fs::write(&path, contents).map_err(io_error(format!("write {}", path.display())))
    }
}

/// Where the gateway's stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Into `<dir>/gateway.stderr` (see [`GatewayProcess::stderr`]).
    Capture,
    /// To this process's stderr.
    Inherit,
}

/// How to run the gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The binary.
    pub bin: PathBuf,
    /// `--threads` (proxy worker threads).
    pub threads: usize,
    /// `GATEWAY_LOG` for the child; `None` leaves the environment's.
    pub log: Option<String>,
    /// Where stderr goes.
    pub stderr: Stderr,
    /// Pass `--upgrade-sock <dir>/upgrade.sock`, so a binary upgrade
    /// ([`GatewayProcess::start_upgrade`]) uses a socket inside the working directory.
    pub upgrade_sock_in_dir: bool,
}

impl GatewayOptions {
    /// `bin` with 2 threads, `GATEWAY_LOG=info`, stderr captured, the upgrade socket in the
    /// working directory.
    pub fn new(bin: PathBuf) -> Self {
        Self {
            bin,
            threads: 2,
            log: Some("info".into()),
            stderr: Stderr::Capture,
            upgrade_sock_in_dir: true,
        }
    }
}

/// The config file's name inside the working directory.
pub const CONFIG_FILE: &str = "gateway.yaml";
const STDERR_FILE: &str = "gateway.stderr";
const UPGRADE_STDERR_FILE: &str = "gateway-new.stderr";
const UPGRADE_SOCK: &str = "upgrade.sock";

/// A running `gateway run` child process. Killed when dropped.
pub struct GatewayProcess {
    child: Option<Child>,
    options: GatewayOptions,
    /// The working directory: config file, captured stderr, upgrade socket.
    pub dir: Workdir,
    /// The plaintext client listener.
    pub addr: SocketAddr,
    /// The admin API.
    pub admin: SocketAddr,
}

impl GatewayProcess {
    /// Writes `config` to `<dir>/gateway.yaml` and starts `gateway run` on it. `config` must make
    /// the gateway listen on `ports` (it is not checked). Returns once the process is spawned;
    /// see [`Self::wait_ready`].
    pub fn spawn(
        options: &GatewayOptions,
        dir: Workdir,
        ports: Ports,
        config: &str,
    ) -> Result<Self, LaunchError> {
        if !options.bin.is_file() {
            return Err(LaunchError::BinaryNotFound(options.bin.clone()));
        }
        dir.write(CONFIG_FILE, config.as_bytes())?;
        let mut gw = Self {
            child: None,
            options: options.clone(),
            dir,
            addr: ports.listen,
            admin: ports.admin,
        };
        gw.child = Some(
            gw.command(false, STDERR_FILE)?
                .spawn()
                .map_err(io_error(format!("start {}", options.bin.display())))?,
        );
        Ok(gw)
    }

    /// `gateway run` on the config file, with `--upgrade` if `upgrade`.
    fn command(&self, upgrade: bool, stderr_file: &str) -> Result<Command, LaunchError> {
        let mut cmd = Command::new(&self.options.bin);
        cmd.arg("run")
            .args(["--threads", &self.options.threads.to_string()])
            .arg("--config")
            .arg(self.config_path());
        if upgrade {
            cmd.arg("--upgrade");
        }
        if self.options.upgrade_sock_in_dir {
            cmd.arg("--upgrade-sock")
                .arg(self.dir.path().join(UPGRADE_SOCK));
        }
        if let Some(log) = &self.options.log {
            cmd.env("GATEWAY_LOG", log);
        }
        cmd.stdout(Stdio::null());
        match self.options.stderr {
            Stderr::Capture => {
                let path = self.dir.path().join(stderr_file);
                let file = std::fs::File::create(&path)
                    .map_err(io_error(format!("create {}", path.display())))?;
                cmd.stderr(file);
            }
            Stderr::Inherit => {
                cmd.stderr(Stdio::inherit());
            }
        }
        Ok(cmd)
    }

    /// The child's process id (`None` once it was reaped by [`Self::stop`]).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The config file the gateway runs with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join(CONFIG_FILE)
    }

    /// Replaces the config file atomically (a temp file in the same directory, renamed over it),
    /// so the gateway's file watcher never sees half a file.
    pub fn replace_config(&self, text: &str) -> Result<(), LaunchError> {
        let tmp = self.dir.path().join(".gateway.yaml.tmp");
        std::fs::write(&tmp, text).map_err(io_error(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, self.config_path()).map_err(io_error("rename the config"))
    }

    /// What the gateway wrote to stderr so far (empty unless it is captured).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(STDERR_FILE)).unwrap_or_default()
    }

    /// [`Self::stderr`] without ANSI colour sequences.
    pub fn stderr_plain(&self) -> String {
        strip_ansi(&self.stderr())
    }

    /// Whether the child is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Whether the child's process still exists (without `&mut`; a zombie counts).
    pub fn is_running_ref(&self) -> bool {
        self.pid()
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }

    /// Waits until `/readyz` answers 200; fails if the process exits first or `deadline` passes.
    pub async fn wait_ready(&mut self, deadline: Duration) -> Result<(), LaunchError> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(LaunchError::Exited {
                        status,
                        stderr: self.stderr(),
                    });
                }
            }
            if let Ok((200, _)) = http_request(self.admin, "GET", "/readyz", "admin", None).await {
                return Ok(());
            }
            if start.elapsed() > deadline {
                return Err(LaunchError::NotReady {
                    after: deadline,
                    stderr: self.stderr(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends signal `name` (`TERM`, `HUP`, `INT`, `QUIT`, ... as `kill -l` names them) to the
    /// gateway. Does nothing once the child was reaped.
    pub fn signal(&self, name: &str) -> Result<(), LaunchError> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        send_signal(pid, name)
    }

    /// Waits up to `deadline` for the process to exit; `None` if it is still running then.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(status);
                }
            }
            if start.elapsed() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the gateway: sends `signal`, waits up to `grace`, then kills it. Returns how it
    /// exited (`None`: it had to be killed). The child is reaped either way.
    pub async fn stop(&mut self, signal: &str, grace: Duration) -> Option<ExitStatus> {
        // The signal may fail only because the process is gone already; the wait tells.
        let _ = self.signal(signal);
        let status = self.wait_exit(grace).await;
        if let Some(mut child) = self.child.take() {
            if status.is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        status
    }

    /// Starts a second gateway with `--upgrade` on the same config and upgrade socket, and
    /// waits (up to `deadline`) until it waits for the listening sockets. Send `QUIT` to this
    /// one next. Needs [`GatewayOptions::upgrade_sock_in_dir`].
    pub async fn start_upgrade(&self, deadline: Duration) -> Result<Child, LaunchError> {
        let sock = self.dir.path().join(UPGRADE_SOCK);
        let child = self
            .command(true, UPGRADE_STDERR_FILE)?
            .spawn()
            .map_err(io_error("start the new gateway"))?;
        let start = Instant::now();
        while !sock.exists() {
            if start.elapsed() > deadline {
                return Err(LaunchError::NotReady {
                    after: deadline,
                    stderr: "the new gateway never listened on the upgrade socket".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(child)
    }

    /// `method path` on the admin API, with an optional bearer token: (status, body).
    pub async fn admin_call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> Result<(u16, String), LaunchError> {
        let (status, body) = http_request(self.admin, method, path, "admin", token)
            .await
            .map_err(io_error(format!("admin API {method} {path}")))?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// `GET /status` as JSON.
    pub async fn status(&self, token: Option<&str>) -> Result<serde_json::Value, LaunchError> {
        let (status, body) = self.admin_call("GET", "/status", token).await?;
        if status != 200 {
            return Err(LaunchError::Admin {
                path: "/status".into(),
                status,
                body,
            });
        }
        serde_json::from_str(&body).map_err(|e| LaunchError::Admin {
            path: "/status".into(),
            status,
            body: format!("not JSON ({e}): {body}"),
        })
    }

    /// Whether `/status` shows region `name` up (`None`: no such region).
    pub async fn region_up(&self, name: &str) -> Result<Option<bool>, LaunchError> {
        let status = self.status(None).await?;
        Ok(status["regions"]
            .as_array()
            .and_then(|regions| regions.iter().find(|r| r["name"] == name))
            .and_then(|r| r["up"].as_bool()))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends signal `name` to process `pid` with `kill(1)`.
pub fn send_signal(pid: u32, name: &str) -> Result<(), LaunchError> {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map_err(io_error("run kill"))?;
    if status.success() {
        Ok(())
    } else {
        Err(LaunchError::Io {
            what: format!("kill -{name} {pid}"),
            source: std::io::Error::other(format!("{status}")),
        })
    }
}

/// `method path` over a fresh HTTP/1.1 connection to `addr` with `Host: host` and an optional
/// bearer token: (status, body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host);
    if let Some(token) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(std::io::Error::other)?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((status, body))
}

/// `text` without ANSI CSI sequences (ESC `[` parameters, then one final letter).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
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

#[cfg(test)]
mod tests {
    use super::strip_ansi;

    #[test]
    fn colour_sequences_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m ok"),
            "2026  INFO ok"
        );
    }
}
