//! The failover gateway: a Pingora proxy that routes requests to regional clusters.
//!
//! The binary (`main.rs`) parses arguments and calls [`server::build_server`]. The demo, the
//! simulated regions and the launchers live in the `testbed` crate, which this crate does not
//! depend on. Modules are private to the crate unless something outside uses them (`sticky`,
//! `headers` and `routing` for their fuzz targets, `bgp_agent` for the `bgp-agent` and `drain` subcommands), so the dead-code lint sees everything.

pub(crate) mod access_log;
pub(crate) mod admin;
pub(crate) mod admission;
pub(crate) mod affinity;
pub(crate) mod app;
pub mod bgp_agent;
pub(crate) mod budget;
pub mod cli;
mod clientlog;
pub(crate) mod controller;
pub(crate) mod degraded;
pub(crate) mod early;
mod errors;
pub(crate) mod failover;
pub mod headers;
pub(crate) mod hedge;
pub(crate) mod json;
pub(crate) mod lag;
pub(crate) mod otlp;
pub(crate) mod peer;
pub(crate) mod proxy;
pub(crate) mod reload;
mod retry;
pub mod routing;
pub(crate) mod selection;
pub mod server;
pub(crate) mod snapshot;
pub mod sticky;
pub(crate) mod telemetry;
pub(crate) mod tls;
pub(crate) mod trace;
pub(crate) mod upstream;
