//! The failover gateway: a Pingora proxy that routes requests to regional clusters.
//!
//! The binary (`main.rs`) parses arguments and calls [`server::build_server`] or runs the
//! demo. Modules are private to the crate unless something outside uses them (`sticky` for its
//! fuzz target), so the dead-code lint sees everything.

pub(crate) mod admin;
pub(crate) mod app;
pub mod demo;
mod errors;
pub(crate) mod failover;
mod headers;
pub(crate) mod peer;
pub(crate) mod proxy;
pub(crate) mod reload;
mod retry;
pub(crate) mod routing;
pub(crate) mod selection;
pub mod server;
pub(crate) mod snapshot;
pub mod sticky;
pub(crate) mod telemetry;
pub(crate) mod tls;
pub(crate) mod upstream;
