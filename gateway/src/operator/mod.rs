//! The operator's surface: the admin API with the status page it serves ([`admin`]), the admin
//! CLI ([`cli`]) and the BGP agent ([`bgp_agent`]). Imports `control`, `routing` and `telemetry`.

pub(crate) mod admin;
pub mod bgp_agent;
pub mod cli;
