//! Endpoint and region health for the failover gateway.
//!
//! Three layers: a pure state machine ([`state`]), probes behind a trait ([`probe`]), and a
//! scheduler ([`monitor`]) that runs probes and DNS discovery ([`dns`]) for a config. Results land
//! in a [`hub::HealthHub`], which the request path reads without locks and which publishes every
//! change as a [`hub::HealthEvent`]. Each endpoint also carries its live latency ([`latency`]),
//! which the request path records and reads for latency-aware choice.

pub mod dns;
pub mod hub;
pub mod latency;
pub mod monitor;
pub mod probe;
pub mod state;

pub use hub::{
    DrainEnd, DrainNote, EndpointHealth, Failure, HealthEvent, HealthHub, Passive, RegionHealth,
    RegionTraffic, Slowness, TargetKey,
};
pub use monitor::HealthMonitor;
pub use state::{Health, HealthPolicy};
