//! Process and port helpers the integration tests share: a child stopped when its guard drops
//! (also when the test panics), a free loopback port, the `gateway` binary, an executable on
//! `PATH`, a process's children.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A child process, killed and reaped when dropped.
pub struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Path of the `gateway` binary: `GATEWAY_BIN`, or next to this test executable's `deps` dir.
pub fn gateway_bin() -> PathBuf {
    testbed::launcher::gateway_bin().unwrap_or_else(|e| {
        panic!("{e}: build it first (`cargo build --workspace --bins`, which scripts/test.sh does)")
    })
}

/// A free loopback port (bound and released; the gateway binds it right after).
pub fn free_port() -> SocketAddr {
    testbed::launcher::free_port().expect("bind ephemeral port")
}

/// The executable's path when it is on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// The children of process `pid`, across all its threads.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether process `pid` still exists.
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
