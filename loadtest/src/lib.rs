//! Load testing for the failover gateway.
//!
//! - [`engine`]: open-loop (constant rate, latency from the scheduled time) and closed-loop
//!   (maximum throughput) load.
//! - [`report`]: HDR summaries, timelines, JSON, Markdown and SVG charts.
//! - [`scenario`]: failover scenarios against a real gateway process.
//! - [`bench`]: the gateway against direct, nginx and HAProxy on the same upstream.
//! - [`overload`]: healthy regions and more load than the gateway can serve.
//! - [`slowclients`]: slow-client attacks on the gateway, HAProxy and nginx side by side.
//! - [`soak`]: a chaos soak: faults, reloads and hostile clients beside steady traffic, and
//!   nothing may be lost.
//!
//! The simulated regions, their control API and the gateway launcher come from the `testbed`
//! crate; durations on the command line are parsed by `gateway_config::parse_duration`.

pub mod bench;
pub mod engine;
pub mod overload;
pub(crate) mod process;
pub mod report;
pub mod scenario;
pub mod slowclients;
pub mod soak;
