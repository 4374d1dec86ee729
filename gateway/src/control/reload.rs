//! Hot reload: parse → validate → diff → build one snapshot → one atomic swap.
//!
//! Triggers: a change in the config file's directory or in the directory of any file the config
//! references (certificates, keys, the admin token, sticky secrets; Kubernetes swaps a `..data`
//! symlink, so directories are watched, not files; bursts are debounced), SIGHUP, and
//! `POST /reload`. Whether anything changed is decided by the config hash, which covers the
//! YAML and the contents of every referenced file, so a secret rotated at the same path applies.
//! A failed reload keeps the running config, logs the error with file:line:column, and shows it
//! in `/status` and metrics; the next good file is picked up. Health state of unchanged
//! endpoints carries over (it is keyed by endpoint id and address, outside the snapshot).
//!
//! Sockets are bound once, at start: a reload is validated against the admin address actually
//! listening ([`gateway_config::load_for_reload`]), so it can never drop the token of an admin
//! API that is still public, and restart hints are computed against the started config.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use gateway_config::{BoundSockets, ConfigDiff, GatewayConfig};
use gateway_health::HealthMonitor;

use crate::control::controller::FailoverHandle;
use crate::routing::snapshot::RoutingSnapshot;
use crate::telemetry::metrics::{self, ReloadResult};

// Log lines keep the target this module had before the folders: operators filter on it.
const LOG_TARGET: &str = "gateway::reload";

/// The result of the last reload attempt, for `/status`.
#[derive(Debug, Clone)]
pub struct ReloadStatus {
    /// When it happened.
    pub at: SystemTime,
    /// What triggered it (`file`, `sighup`, `admin`).
    pub trigger: String,
    /// `ok`, `unchanged` or `error`.
    pub result: &'static str,
    /// The diff summary, or the error text.
    pub detail: String,
    /// Changes that need a restart (listener or admin addresses), if any are pending.
    pub restart_needed: Vec<String>,
}

/// Reloads the config file into the running gateway.
pub struct Reloader {
    path: PathBuf,
    snapshot: Arc<ArcSwap<RoutingSnapshot>>,
    monitor: HealthMonitor,
    failover: FailoverHandle,
    /// Config the process started with (listener and admin addresses are fixed by it).
    started: Arc<GatewayConfig>,
    status: Mutex<Option<ReloadStatus>>,
    /// Woken after every applied reload, so the watcher follows the referenced files.
    applied: tokio::sync::Notify,
    serial: Mutex<()>,
    version: std::sync::atomic::AtomicU64,
}

/// Why a reload did not apply.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReloadError(pub String);

impl Reloader {
    /// A reloader for the config at `path`, currently running `snapshot`.
    pub fn new(
        path: PathBuf,
        snapshot: Arc<ArcSwap<RoutingSnapshot>>,
        monitor: HealthMonitor,
        failover: FailoverHandle,
    ) -> Self {
        let started = snapshot.load().config.clone();
        metrics::config_started(&started.hash);
        Self {
            path,
            snapshot,
            monitor,
            failover,
            started,
            status: Mutex::new(None),
            applied: tokio::sync::Notify::new(),
            serial: Mutex::new(()),
            version: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Config version: 1 at start, +1 on each applied reload.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The running snapshot, the last reload attempt and the config version, read together:
    /// a reload that lands between the reads cannot pair one reload's record and version with
    /// the other config's snapshot (its hash, say). `reload` publishes all three under the
    /// same lock.
    pub fn view(&self) -> (Arc<RoutingSnapshot>, Option<ReloadStatus>, u64) {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        (self.snapshot.load_full(), status.clone(), self.version())
    }

    /// Reloads now. Must run inside a tokio runtime (new probes are spawned).
    pub fn reload(&self, trigger: &str) -> Result<ConfigDiff, ReloadError> {
        let _serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.snapshot.load_full();
        let bound = BoundSockets {
            admin: self.started.admin.bind,
        };
        let new = match gateway_config::load_for_reload(&self.path, bound) {
            Ok(c) => c,
            Err(e) => {
                let text = e.to_string();
                tracing::error!(target: LOG_TARGET, trigger, file = %self.path.display(), "config reload failed; the running config stays in use:\n{text}");
                return Err(self.failed(trigger, text));
            }
        };
        if new.hash == current.config.hash {
            metrics::reload(ReloadResult::Unchanged);
            tracing::debug!(target: LOG_TARGET, trigger, "config unchanged");
            self.record(
                trigger,
                "unchanged",
                "no changes".into(),
                self.pending_restart(&current.config).describe(),
            );
            return Ok(ConfigDiff::default());
        }
        let mut diff = gateway_config::diff(&current.config, &new);
        // What needs a restart is what differs from the sockets bound at start, not from the
        // previous config: reverting a listener change clears it.
        let was_pending = self.pending_restart(&current.config);
        let pending = self.pending_restart(&new);
        diff.set_restart_needed(pending.listeners.clone(), pending.admin);
        // Build everything new before anything is published: a certificate that fails to
        // load fails the whole reload, and no listener has changed.
        let certificates = match current
            .certificates
            .reload(&new, diff.certificates_changed())
        {
            Ok(c) => c,
            Err(e) => {
                let text = e.to_string();
                tracing::error!(target: LOG_TARGET,
                    trigger,
                    "config reload failed; the running config stays in use: {text}"
                );
                return Err(self.failed(trigger, text));
            }
        };
        let new = Arc::new(new);
        let snapshot = RoutingSnapshot::build(
            new.clone(),
            current.hub.clone(),
            current.book.clone(),
            certificates,
        );
        // Region members carry the settings of the config they were built from, so publishing
        // them before the snapshot never pairs an endpoint with another config's TLS or
        // protocol; publishing them first means a new region has its endpoints when the first
        // request over the new snapshot arrives.
        self.monitor.apply(&new);
        crate::control::settings::apply(&new.server);
        let mut detail = diff.summary();
        let cleared: Vec<String> = was_pending
            .describe()
            .into_iter()
            .filter(|c| !pending.describe().contains(c))
            .collect();
        if !cleared.is_empty() {
            let text = format!("restart no longer needed: {}", cleared.join(", "));
            detail = if diff.is_empty() {
                text
            } else {
                format!("{detail}; {text}")
            };
        }
        let restart = pending.describe();
        tracing::info!(target: LOG_TARGET, trigger, hash = %new.hash, changes = %detail, "config reloaded");
        for w in &new.warnings {
            tracing::warn!(target: LOG_TARGET, path = %w.path, line = w.line, fix = %w.fix, "config: {}", w.message);
        }
        if !restart.is_empty() {
            tracing::warn!(target: LOG_TARGET, changes = ?restart, "these changes apply only after a restart or binary upgrade (listeners are bound at start)");
        }
        {
            // The new snapshot and the record of this reload become visible together: whoever
            // was served by the new config (its admin token, say) and then asks `/status` sees
            // this reload, not the one before (`view` reads under this lock).
            let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
            self.snapshot.store(Arc::new(snapshot));
            self.version
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *status = Some(ReloadStatus {
                at: SystemTime::now(),
                trigger: trigger.to_string(),
                result: "ok",
                detail,
                restart_needed: restart,
            });
        }
        // New routes and tier layouts get their first decision now, not at the next event.
        self.failover.poke();
        metrics::config_active(Some(&current.config.hash), &new.hash);
        metrics::reload(ReloadResult::Ok);
        self.applied.notify_one();
        Ok(diff)
    }

    /// Records a failed reload (status, metrics) and returns its error.
    fn failed(&self, trigger: &str, text: String) -> ReloadError {
        metrics::reload(ReloadResult::Error);
        self.record(trigger, "error", text.clone(), Vec::new());
        ReloadError(text)
    }

    /// Differences between the started listeners/admin and `config` that need a restart.
    fn pending_restart(&self, config: &GatewayConfig) -> PendingRestart {
        let d = gateway_config::diff(&self.started, config);
        PendingRestart {
            listeners: d.listeners_needing_restart(),
            admin: d.admin_needs_restart(),
        }
    }

    /// Directories to watch: the config file's, and those of every file it references.
    fn watched_dirs(&self) -> BTreeSet<PathBuf> {
        let parent = |p: &Path| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let config = self.snapshot.load().config.clone();
        std::iter::once(parent(&self.path))
            .chain(config.files.iter().map(|f| parent(&f.path)))
            .collect()
    }

    /// File names whose change triggers a reload: the config's and every referenced file's.
    fn watched_names(&self) -> BTreeSet<std::ffi::OsString> {
        let config = self.snapshot.load().config.clone();
        std::iter::once(self.path.as_path())
            .chain(config.files.iter().map(|f| f.path.as_path()))
            .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
            .collect()
    }

    fn record(
        &self,
        trigger: &str,
        result: &'static str,
        detail: String,
        restart_needed: Vec<String>,
    ) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = Some(ReloadStatus {
            at: SystemTime::now(),
            trigger: trigger.to_string(),
            result,
            detail,
            restart_needed,
        });
    }

    /// Watches the config directory, the directories of referenced files and SIGHUP until
    /// `shutdown` fires. The set of watched directories follows the running config.
    pub async fn watch(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        // Only changes to the files that matter trigger a reload: a log file or an editor's
        // swap file in the same directory must not cause a parse every 100 ms.
        let names = Arc::new(Mutex::new(self.watched_names()));
        let relevant = names.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            let names = relevant.lock().unwrap_or_else(|e| e.into_inner());
            if event.paths.iter().any(|p| is_relevant(p, &names)) {
                let _ = tx.send(());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(target: LOG_TARGET, error = %e, "cannot create a file watcher; reload with SIGHUP or POST /reload");
                None
            }
        };
        let mut watched = BTreeSet::new();
        if let Some(w) = watcher.as_mut() {
            sync_watches(w, &mut watched, self.watched_dirs());
        }
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut usr1 =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = rx.recv() => {
                    // Debounce: wait until the directories have been quiet for 100 ms.
                    while let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {}
                    let _ = self.reload("file");
                }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    let _ = self.reload("sighup");
                }
                Some(()) = async { match usr1.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    crate::telemetry::access_log::reopen();
                    continue;
                }
                // Applied by any trigger, `POST /reload` included.
                _ = self.applied.notified() => {}
            }
            // A reload may have changed which files the config references.
            if let Some(w) = watcher.as_mut() {
                sync_watches(w, &mut watched, self.watched_dirs());
            }
            *names.lock().unwrap_or_else(|e| e.into_inner()) = self.watched_names();
        }
    }
}

/// Whether a change to `path` may change the config: one of the watched file names, or a
/// Kubernetes ConfigMap/Secret entry (`..data` and the timestamped `..2026_…` directories that
/// an atomic update swaps in).
fn is_relevant(path: &Path, names: &BTreeSet<std::ffi::OsString>) -> bool {
    path.file_name()
        .is_some_and(|name| names.contains(name) || name.to_string_lossy().starts_with(".."))
}

/// What differs from the sockets bound at start.
struct PendingRestart {
    listeners: Vec<String>,
    admin: bool,
}

impl PendingRestart {
    /// For `/status` `restart_needed`: ``listener `http` ``, `admin.bind`.
    fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .listeners
            .iter()
            .map(|l| format!("listener `{l}`"))
            .collect();
        if self.admin {
            out.push("admin.bind".into());
        }
        out
    }
}

/// Makes `watcher` watch exactly `want` (each directory non-recursively).
fn sync_watches(
    watcher: &mut notify::RecommendedWatcher,
    watched: &mut BTreeSet<PathBuf>,
    want: BTreeSet<PathBuf>,
) {
    use notify::Watcher;
    for gone in watched.difference(&want) {
        let _ = watcher.unwatch(gone);
    }
    watched.retain(|d| want.contains(d));
    for dir in want {
        if watched.contains(&dir) {
            continue;
        }
        match watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched.insert(dir);
            }
            Err(e) => {
                tracing::error!(target: LOG_TARGET, dir = %dir.display(), error = %e, "cannot watch this directory; reload with SIGHUP or POST /reload after changing files in it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::failover::FailoverBook;
    use gateway_health::HealthHub;

    const REST: &str = "listeners: [{ name: http, bind: \"127.0.0.1:18080\" }]\nregions:\n  fra: { endpoints: [{ id: f1, address: \"127.0.0.1:1\" }] }\nroutes:\n  - { name: a, regions: [fra] }\n";

    #[test]
    fn only_watched_names_and_kubernetes_entries_are_relevant() {
        let names: BTreeSet<std::ffi::OsString> =
            ["gateway.yaml".into(), "admin.token".into()].into();
        for p in [
            "/etc/gw/gateway.yaml",
            "/etc/gw/admin.token",
            "/etc/gw/..data",
            "/etc/gw/..2026_12_01_10_00_00.123",
        ] {
            assert!(is_relevant(Path::new(p), &names), "{p}");
        }
        for p in [
            "/etc/gw/gateway.stderr",
            "/etc/gw/.gateway.yaml.swp",
            "/etc/gw/notes.txt",
        ] {
            assert!(!is_relevant(Path::new(p), &names), "{p}");
        }
    }

    fn write(dir: &Path, admin: &str) -> PathBuf {
        let path = dir.join("gateway.yaml");
        std::fs::write(&path, format!("{admin}\n{REST}")).expect("write config");
        path
    }

    /// A reloader as `build_server` makes it, for a config loaded from `path`, without sockets.
    fn reloader(path: &Path) -> (Reloader, Arc<ArcSwap<RoutingSnapshot>>) {
        let config = Arc::new(gateway_config::load(path).expect("valid start config"));
        let hub = HealthHub::new();
        let snapshot = Arc::new(ArcSwap::from_pointee(RoutingSnapshot::build(
            config,
            hub.clone(),
            Arc::new(FailoverBook::default()),
            crate::routing::tls::Certificates::default(),
        )));
        let monitor = HealthMonitor::new(hub);
        let reloader = Reloader::new(
            path.to_path_buf(),
            snapshot.clone(),
            monitor,
            FailoverHandle::new().0,
        );
        (reloader, snapshot)
    }

    /// Issue 16, bug 2: started with a public admin socket, a reload to a loopback `admin.bind`
    /// without a token would leave the still-public socket unauthenticated. (No socket is bound
    /// here: the started config alone decides, as in the running gateway.)
    #[tokio::test]
    async fn a_reload_never_drops_the_token_of_a_public_admin_socket() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("admin.token"), "first-token-0123456789").expect("write");
        let path = write(
            dir.path(),
            "admin: { bind: \"0.0.0.0:19901\", token_file: admin.token }",
        );
        let (reloader, snapshot) = reloader(&path);

        write(dir.path(), "admin: { bind: \"127.0.0.1:19901\" }");
        let err = reloader
            .reload("admin")
            .expect_err("token dropped on a public socket");
        let text = err.to_string();
        assert!(text.contains("admin.token_file"), "{text}");
        assert!(text.contains("`0.0.0.0:19901`"), "{text}");
        assert!(text.contains("fix: keep `admin.token_file`"), "{text}");
        assert_eq!(
            snapshot.load().config.admin.token.as_deref(),
            Some("first-token-0123456789"),
            "the running config (and its token) stays"
        );
        let last = reloader.view().1.expect("recorded");
        assert_eq!(last.result, "error");
        assert_eq!(last.detail, text);
        assert_eq!(reloader.version(), 1);

        // Keeping a token (here a rotated one, same path, same YAML) applies, and the token the
        // admin API enforces is the new snapshot's.
        write(
            dir.path(),
            "admin: { bind: \"127.0.0.1:19901\", token_file: admin.token }",
        );
        std::fs::write(dir.path().join("admin.token"), "second-token-0123456789").expect("write");
        reloader.reload("admin").expect("token kept");
        assert_eq!(
            snapshot.load().config.admin.token.as_deref(),
            Some("second-token-0123456789")
        );
        let last = reloader.view().1.expect("recorded");
        assert_eq!(last.result, "ok");
        assert!(
            last.detail.contains("admin token changed"),
            "{}",
            last.detail
        );
        assert_eq!(last.restart_needed, ["admin.bind"]);
    }
}
