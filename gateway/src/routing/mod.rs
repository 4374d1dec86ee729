//! The routing model: what the request path and the control plane both read. One immutable
//! [`snapshot::RoutingSnapshot`] (routes, regions, certificates) swapped atomically on reload,
//! the route table it looks requests up in, and each route's state kept across reloads
//! (failover tier, degradation, early-retry deadline, budgets) with the pure decisions over it.
//! Its one writer lives in `control`; nothing here does I/O. Imports only `telemetry`.

pub(crate) mod admission;
pub(crate) mod budget;
pub(crate) mod degraded;
pub(crate) mod early;
pub(crate) mod failover;
pub(crate) mod snapshot;
pub mod sticky;
pub mod table;
pub(crate) mod tls;
