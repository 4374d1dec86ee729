//! The failover gateway: a Pingora proxy that routes requests to regional clusters.
//!
//! The folders are the architecture (ARCHITECTURE.md has the map and the allowed imports,
//! which `scripts/layers.py` checks in CI), from the bottom up:
//!
//! - [`telemetry`]: metrics, the access log, OTLP spans, trace context, the client-error log and
//!   the scheduling-lag monitor; it imports no other folder.
//! - [`routing`]: the routing model both paths read: the immutable snapshot, the route table,
//!   each route's failover, degradation, early-retry and budget state with the pure decisions
//!   over it, admission limits, the sticky token and the certificate sets.
//! - [`proxy`]: the request path, Pingora's `ProxyHttp` callbacks and the decisions they call.
//! - [`control`]: the control plane: the shared `App` state and the control service, reload,
//!   the failover controller (the one writer of each route's active tier) and the process-wide
//!   settings.
//! - [`operator`]: the operator's surface: the admin API and status page, the CLI, the BGP agent.
//! - [`server`]: assembly; the binary (`main.rs`) parses arguments and calls
//!   [`server::build_server`].
//!
//! The demo, the simulated regions and the launchers live in the `testbed` crate, which this
//! crate does not depend on. Modules are private to the crate unless something outside uses them
//! (`routing::sticky`, `proxy::headers` and `routing::table` for their fuzz targets,
//! `operator::bgp_agent` and `operator::cli` for `main.rs`), so the dead-code lint sees
//! everything.

pub(crate) mod control;
pub mod operator;
pub mod proxy;
pub mod routing;
pub mod server;
pub(crate) mod telemetry;
