//! The control plane: the state every service shares and the control service ([`app`]), hot
//! reload ([`reload`]), the failover controller, the one writer of each route's active tier
//! ([`controller`]), and the process-wide settings start-up and reload both apply
//! ([`settings`]). Imports `routing` and `telemetry`, never the request path or the assembly.

pub(crate) mod app;
pub(crate) mod controller;
pub(crate) mod reload;
pub(crate) mod settings;
