//! Hot reload: parse → validate → diff → build one snapshot → one atomic swap.
//!
//! Triggers: a change in the config file's directory (Kubernetes swaps a `..data` symlink, so
//! the directory is watched, not the file; bursts are debounced), SIGHUP, and `POST /reload`.
//! A failed reload keeps the running config, logs the error with file:line:column, and shows it
//! in `/status` and metrics; the next good file is picked up. Health state of unchanged
//! endpoints carries over (it is keyed by endpoint id and address, outside the snapshot).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use gateway_config::{ConfigDiff, GatewayConfig};
use gateway_health::HealthMonitor;

use crate::snapshot::RoutingSnapshot;
use crate::tls::SniResolver;

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
    tls: HashMap<String, Arc<SniResolver>>,
    /// Config the process started with (listener and admin addresses are fixed by it).
    started: Arc<GatewayConfig>,
    status: Mutex<Option<ReloadStatus>>,
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
        tls: HashMap<String, Arc<SniResolver>>,
    ) -> Self {
        let started = snapshot.load().config.clone();
        metrics::gauge!("gateway_config_info", "hash" => started.hash.clone()).set(1.0);
        metrics::gauge!("gateway_config_last_reload_success").set(1.0);
        Self {
            path,
            snapshot,
            monitor,
            tls,
            started,
            status: Mutex::new(None),
            serial: Mutex::new(()),
            version: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Config version: 1 at start, +1 on each applied reload.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last reload attempt.
    pub fn last(&self) -> Option<ReloadStatus> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads now. Must run inside a tokio runtime (new probes are spawned).
    pub fn reload(&self, trigger: &str) -> Result<ConfigDiff, ReloadError> {
        let _serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.snapshot.load_full();
        let new = match gateway_config::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                let text = e.to_string();
                tracing::error!(trigger, file = %self.path.display(), "config reload failed; the running config stays in use:\n{text}");
                metrics::counter!("gateway_config_reloads_total", "result" => "error").increment(1);
                metrics::gauge!("gateway_config_last_reload_success").set(0.0);
                self.record(trigger, "error", text.clone(), Vec::new());
                return Err(ReloadError(text));
            }
        };
        if new.hash == current.config.hash {
            metrics::counter!("gateway_config_reloads_total", "result" => "unchanged").increment(1);
            metrics::gauge!("gateway_config_last_reload_success").set(1.0);
            tracing::debug!(trigger, "config unchanged");
            self.record(
                trigger,
                "unchanged",
                "no changes".into(),
                self.pending_restart(&current.config),
            );
            return Ok(ConfigDiff::default());
        }
        let diff = gateway_config::diff(&current.config, &new);
        // Certificates first: a certificate that fails to load fails the whole reload.
        for listener in &new.listeners {
            if let (Some(tls), Some(resolver)) = (&listener.tls, self.tls.get(&listener.name)) {
                if diff.certificates_changed.contains(&listener.name) {
                    if let Err(e) = resolver.update(tls) {
                        let text = format!("listener `{}`: {e}", listener.name);
                        tracing::error!(
                            trigger,
                            "config reload failed; the running config stays in use: {text}"
                        );
                        metrics::counter!("gateway_config_reloads_total", "result" => "error")
                            .increment(1);
                        metrics::gauge!("gateway_config_last_reload_success").set(0.0);
                        self.record(trigger, "error", text.clone(), Vec::new());
                        return Err(ReloadError(text));
                    }
                }
            }
        }
        let new = Arc::new(new);
        self.monitor.apply(&new);
        let snapshot =
            RoutingSnapshot::build(new.clone(), current.hub.clone(), current.book.clone());
        self.snapshot.store(Arc::new(snapshot));
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!("gateway_config_info", "hash" => current.config.hash.clone()).set(0.0);
        metrics::gauge!("gateway_config_info", "hash" => new.hash.clone()).set(1.0);
        metrics::counter!("gateway_config_reloads_total", "result" => "ok").increment(1);
        metrics::gauge!("gateway_config_last_reload_success").set(1.0);
        let restart = self.pending_restart(&new);
        tracing::info!(trigger, hash = %new.hash, changes = %diff.summary(), "config reloaded");
        if !restart.is_empty() {
            tracing::warn!(changes = ?restart, "these changes apply only after a restart or binary upgrade (listeners are bound at start)");
        }
        self.record(trigger, "ok", diff.summary(), restart);
        Ok(diff)
    }

    /// Differences between the started listeners/admin and `config` that need a restart.
    fn pending_restart(&self, config: &GatewayConfig) -> Vec<String> {
        let d = gateway_config::diff(&self.started, config);
        let mut out: Vec<String> = d
            .listeners_need_restart
            .iter()
            .map(|l| format!("listener `{l}`"))
            .collect();
        if d.admin_needs_restart {
            out.push("admin.bind".into());
        }
        out
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

    /// Watches the config directory and SIGHUP until `shutdown` fires.
    pub async fn watch(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
                let _ = tx.send(());
            }
        });
        let _watcher = match watcher {
            Ok(mut w) => match w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot watch the config directory; reload with SIGHUP or POST /reload");
                    None
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot create a file watcher; reload with SIGHUP or POST /reload");
                None
            }
        };
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = rx.recv() => {
                    // Debounce: wait until the directory has been quiet for 100 ms.
                    while let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {}
                    let _ = self.reload("file");
                }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    let _ = self.reload("sighup");
                }
            }
        }
    }
}
