//! The failover gateway: a Pingora proxy that routes requests to regional clusters.
//!
//! The binary (`main.rs`) parses arguments and calls [`server::build_server`]; everything else
//! lives in this library so tests and the demo use the same code.

pub mod admin;
pub mod demo;
mod errors;
pub mod failover;
mod headers;
pub mod proxy;
pub mod reload;
mod retry;
pub mod routing;
pub mod selection;
pub mod server;
pub mod snapshot;
pub mod sticky;
pub mod telemetry;
pub mod tls;
pub mod upstream;
