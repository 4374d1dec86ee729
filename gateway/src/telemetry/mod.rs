//! Observability: Prometheus metrics ([`metrics`]), the access log, OTLP span export with the
//! JSON writer both use, W3C trace context, the client-error log and the proxy's scheduling-lag
//! monitor. The bottom layer: it imports no other folder of the crate, so every other folder may
//! count and log through it (the enums they count implement [`metrics::LabelSet`]).

pub(crate) mod access_log;
pub(crate) mod clientlog;
pub(crate) mod json;
pub(crate) mod lag;
pub(crate) mod metrics;
pub(crate) mod otlp;
pub(crate) mod trace;
