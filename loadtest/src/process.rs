//! Process and port helpers every load-test module shares: a child kept alive (and stopped)
//! by a guard, a TCP port awaited, an executable found, the descriptor limit raised, a
//! process tree listed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use testbed::launcher::GatewayProcess;

/// Keeps a target's process (and its files) alive until dropped.
pub(crate) enum Guard {
    None,
    Child {
        child: Child,
        _dir: Option<tempfile::TempDir>,
    },
    Gateway {
        _process: GatewayProcess,
        _files: Option<tempfile::TempDir>,
    },
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Child { child, .. } = self {
            // SIGTERM first: nginx's and HAProxy's masters then stop their workers (SIGKILL
            // would orphan them); SIGKILL only if it is still there after 5 s.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            for _ in 0..50 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `bin` in the system's binary folders (the Debian packages the benchmarks install), not `PATH`.
pub(crate) fn which(bin: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(bin))
    .find(|p| p.exists())
}

/// Installs the Debian packages of the `(binary, package)` pairs whose binary is missing
/// (`apt-get`, once more after an `apt-get update` if the first try fails).
pub(crate) fn ensure_installed(tools: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("loadtest: installing {}", missing.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok = install()
        || (Command::new("apt-get")
            .args(["update", "-qq"])
            .status()
            .is_ok_and(|s| s.success())
            && install());
    anyhow::ensure!(
        ok,
        "could not install {} (run as root on Debian, or use --gateway-only)",
        missing.join(" ")
    );
    Ok(())
}

/// Waits (20 s at most) until `addr` accepts a TCP connection.
pub(crate) async fn wait_port(addr: SocketAddr) -> anyhow::Result<()> {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(20),
            "{addr} did not open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The proxies' children inherit this process's limit: the soft one up to the hard one, as the
/// gateway does for itself (1000 attackers are 2000 descriptors in a proxy, and as many here).
/// With the privilege to (root), the hard limit is first raised to `at_least` when below it.
pub(crate) fn raise_fd_limit(at_least: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if hard < at_least && setrlimit(Resource::RLIMIT_NOFILE, at_least, at_least).is_ok() {
            return;
        }
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// This process's descriptor limit (soft), which nginx (`worker_rlimit_nofile`) and HAProxy
/// (`ulimit-n`) are told to keep: neither may raise it past the inherited hard limit, and
/// HAProxy refuses to start when `maxconn` asks for more than it can get (it counts two
/// descriptors per connection; `no strict-limits` makes that a warning: idle clients hold one).
pub(crate) fn fd_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft)
}

/// `pid` and its descendants (at most 64), from `/proc/<pid>/task/<tid>/children`.
pub(crate) fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < 64 {
        let p = out[i];
        let tasks = std::fs::read_dir(format!("/proc/{p}/task"))
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default();
        for task in tasks {
            let children = std::fs::read_to_string(task.join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|s| s.parse().ok()) {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        i += 1;
    }
    out
}
