//! The process-wide settings a config carries beside its routing: the client limits in Pingora's
//! HTTP/1 code, the access log and OTLP export. Start-up and every reload apply them through
//! [`apply`], the one place that knows them.

use gateway_config::{RequestLimits, ServerSettings};

/// Applies `server`'s process-wide settings: the client limits ([`apply_client_limits`]), the
/// access log's output and sampling, and the OTLP exporter's endpoint and sampling.
pub(crate) fn apply(server: &ServerSettings) {
    apply_client_limits(&server.limits);
    crate::telemetry::access_log::configure(&server.access_log);
    crate::telemetry::otlp::configure(server.otlp.as_ref());
}

/// Hands the request-head size limit and deadline, the client idle timeout and the body read
/// size to Pingora's HTTP/1 code (process-wide; at start and on every reload).
fn apply_client_limits(limits: &RequestLimits) {
    pingora::protocols::http::v1::server::set_request_head_limits(
        limits.head_bytes as usize,
        limits.uri_bytes as usize,
        Some(limits.head_timeout),
    );
    pingora::protocols::http::v1::server::set_client_keepalive_timeout(limits.keepalive_timeout);
    pingora::protocols::http::v1::set_body_buffer_size(limits.body_buffer_bytes as usize);
}
