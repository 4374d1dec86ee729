//! The application state every service shares, and the control-plane service that runs
//! health monitoring, the failover controller and the reload watcher.
//!
//! The proxy, the admin API and the control service depend on [`App`], not on each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use gateway_health::HealthMonitor;
use metrics_exporter_prometheus::PrometheusHandle;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::control::controller::{self, FailoverHandle, Wakeups};
use crate::control::reload::Reloader;
use crate::routing::admission::{Connections, ProcessLimit};
use crate::routing::snapshot::RoutingSnapshot;

// Log lines keep the target this module had before the folders: operators filter on it.
const LOG_TARGET: &str = "gateway::app";

/// The shared state of a running gateway. Cheap to clone.
#[derive(Clone)]
pub(crate) struct App {
    /// The routing snapshot, swapped whole on reload.
    pub snapshot: Arc<ArcSwap<RoutingSnapshot>>,
    /// Probes and DNS discovery.
    pub monitor: HealthMonitor,
    /// Config reloads.
    pub reloader: Arc<Reloader>,
    /// Wakes the failover controller (drains).
    pub failover: FailoverHandle,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Readiness as load balancers and BGP see it.
    pub readiness: Arc<Readiness>,
    /// The process's in-flight limit (for `/status`).
    pub limit: Arc<ProcessLimit>,
    /// Client connections open now (for `/status`).
    pub connections: Arc<Connections>,
    /// Time in-flight requests get on shutdown.
    pub grace_period: Duration,
}

/// Whether the gateway should receive traffic: written by the control service (shutdown) and
/// the admin API (listeners seen accepting, operator drain), read by `/readyz` and `/status`.
#[derive(Default)]
pub(crate) struct Readiness {
    shutting_down: AtomicBool,
    listening: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    /// Shutdown started: readiness is false from now on.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Every client listener accepted a connection once (never reset).
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Records that every client listener accepts connections.
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    /// An operator drained the whole gateway (`POST /drain`): readiness is false, so load
    /// balancers and the BGP agent stop sending traffic, but requests are still served.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts (`true`) or ends (`false`) a drain of the whole gateway.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Release);
    }

    fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }
}

/// Runs the control plane: probes and DNS discovery, the failover controller and the reload
/// watcher; turns readiness false when shutdown starts.
pub(crate) struct ControlService {
    app: App,
    wakeups: Mutex<Option<Wakeups>>,
}

impl ControlService {
    /// The control service of `app`; `wakeups` are the other end of `app.failover`.
    pub fn new(app: App, wakeups: Wakeups) -> Self {
        Self {
            app,
            wakeups: Mutex::new(Some(wakeups)),
        }
    }
}

#[async_trait]
impl BackgroundService for ControlService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let app = &self.app;
        let snapshot = app.snapshot.load_full();
        // Subscribe before probes start, so that no health change is missed.
        let events = snapshot.hub.subscribe();
        app.monitor.apply(&snapshot.config);
        let wakeups = self
            .wakeups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(wakeups) = wakeups {
            tokio::spawn(controller::run(
                app.snapshot.clone(),
                events,
                wakeups,
                shutdown.clone(),
            ));
        }
        tokio::spawn(app.reloader.clone().watch(shutdown.clone()));
        tokio::spawn(crate::telemetry::metrics::upkeep(
            app.metrics.clone(),
            shutdown.clone(),
        ));
        let monitor = app.monitor.clone();
        tokio::spawn(async move {
            monitor.wait_first_round().await;
            tracing::info!(target: LOG_TARGET, "first probe round done: ready");
        });
        let _ = shutdown.changed().await;
        // Readiness turns false at once, so that BGP withdraws and load balancers stop sending
        // while in-flight requests finish.
        app.readiness.begin_shutdown();
        tracing::info!(target: LOG_TARGET, "shutting down: readiness is now false");
    }
}
