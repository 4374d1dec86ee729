//! The gateway's test bed: everything that runs around the real `gateway` binary, and nothing
//! the binary links (the `gateway` crate depends on none of it).
//!
//! - [`region`]: a simulated regional app endpoint whose behaviour ([`region::Mode`]) is
//!   switched at run time: refuse, blackhole, 5xx, slow, reset, flap.
//! - [`fleet`]: simulated regions made of such endpoints, and their one control API
//!   (`POST /{region}/{mode}`), which the demo, `loadtest region` and people use.
//! - [`yaml`]: a typed writer for gateway config files, so fleets are not described by YAML
//!   templates patched with string replacement.
//! - [`launcher`]: the one launcher of the real `gateway` binary (config file, ready wait, log
//!   capture, signals, binary upgrade, admin API client), used by the integration tests,
//!   `loadtest` and the demo.
//! - [`demo`]: the demo's fleet, config and banner; the `demo` binary runs them.

pub mod demo;
pub mod fleet;
pub mod launcher;
pub mod region;
pub mod yaml;
