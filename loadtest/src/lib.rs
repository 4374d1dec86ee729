//! Load testing for the failover gateway.
//!
//! - [`region`]: a simulated regional app whose behaviour can be switched at run time; the
//!   gateway's demo and the integration tests reuse it for fault injection.
//! - [`engine`]: open-loop (constant rate, latency from the scheduled time) and closed-loop
//!   (maximum throughput) load.
//! - [`report`]: HDR summaries, timelines, JSON, Markdown and SVG charts.
//! - [`scenario`]: failover scenarios against a real gateway process.
//! - [`bench`]: the gateway against direct, nginx and HAProxy on the same upstream.

pub mod bench;
pub mod engine;
pub mod region;
pub mod report;
pub mod scenario;
