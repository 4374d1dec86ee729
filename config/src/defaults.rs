//! Every default of the config, named once. Validation applies them and the JSON Schema states
//! them (`raw.rs` refers to these constants), so the two cannot drift. Durations are written
//! as in YAML; [`duration`] reads them (a unit test reads every one).

use std::time::Duration;

/// `admin.bind`.
pub const ADMIN_BIND: &str = "127.0.0.1:9901";
/// `dns.min_ttl`.
pub const DNS_MIN_TTL: &str = "1s";
/// `dns.max_ttl`.
pub const DNS_MAX_TTL: &str = "5m";
/// `dns.timeout`.
pub const DNS_TIMEOUT: &str = "2s";
/// `server.upstream_keepalive_pool`.
pub const UPSTREAM_KEEPALIVE_POOL: usize = 1024;
/// `server.request_id_header`.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// `server.grace_period`.
pub const GRACE_PERIOD: &str = "10s";
/// `server.max_in_flight`.
pub const MAX_IN_FLIGHT: u32 = 10_000;
/// `server.max_connections`.
pub const MAX_CONNECTIONS: u32 = 8192;
/// `server.request_head_timeout`.
pub const REQUEST_HEAD_TIMEOUT: &str = "10s";
/// `server.keepalive_timeout` (nginx's `keepalive_timeout` is 75 s, HAProxy's
/// `timeout http-keep-alive` defaults to `timeout client`).
pub const KEEPALIVE_TIMEOUT: &str = "60s";
/// `server.send_timeout` (nginx's `send_timeout`).
pub const SEND_TIMEOUT: &str = "60s";
/// `server.max_request_head_bytes` (nginx: 4 buffers of 8 KiB).
pub const MAX_REQUEST_HEAD_BYTES: u32 = 32 * 1024;
/// `server.max_header_bytes` (nginx: one 8 KiB buffer per line).
pub const MAX_HEADER_BYTES: u32 = 8 * 1024;
/// `server.max_headers` (Envoy's default).
pub const MAX_HEADERS: u32 = 100;
/// `server.max_uri_bytes` (nginx: one 8 KiB buffer for the request line).
pub const MAX_URI_BYTES: u32 = 8 * 1024;
/// `routes[].max_body_bytes` (nginx's `client_max_body_size`).
pub const MAX_BODY_BYTES: u64 = 1024 * 1024;
/// `routes[].max_grpc_message_bytes` (gRPC libraries' default maximum message size).
pub const MAX_GRPC_MESSAGE_BYTES: u64 = 4 * 1024 * 1024;
/// `server.body_buffer_bytes` (nginx's `proxy_buffer_size` is 4 or 8 KiB, Pingora's 64 KiB).
pub const BODY_BUFFER_BYTES: u32 = 16 * 1024;
/// `server.client_h2_streams`.
pub const CLIENT_H2_STREAMS: u32 = 100;
/// `server.adaptive_limit`.
pub const ADAPTIVE_LIMIT: bool = false;
/// `regions.<name>.passive.max_ejected`.
pub const MAX_EJECTED: &str = "50%";
/// `routes[].on_all_down`.
pub const ON_ALL_DOWN: &str = "fail_open";
/// `regions.<name>.h2_streams`.
pub const H2_STREAMS: usize = 100;
/// `regions.<name>.tls.verify`.
pub const UPSTREAM_TLS_VERIFY: bool = true;
/// `regions.<name>.probe.interval`.
pub const PROBE_INTERVAL: &str = "1s";
/// `regions.<name>.probe.timeout` (at most the interval).
pub const PROBE_TIMEOUT: &str = "500ms";
/// `regions.<name>.probe.rise` and `.fall`, and the same for checks.
pub const RISE_FALL: u32 = 2;
/// `regions.<name>.probe.jitter`, in per mille.
pub const PROBE_JITTER_PERMILLE: u32 = 100;
/// `regions.<name>.probe.http.path`.
pub const PROBE_PATH: &str = "/healthz";
/// `regions.<name>.probe.http.method`.
pub const PROBE_METHOD: &str = "GET";
/// `regions.<name>.checks[].interval`.
pub const CHECK_INTERVAL: &str = "2s";
/// `regions.<name>.checks[].timeout` (at most the interval).
pub const CHECK_TIMEOUT: &str = "1s";
/// `regions.<name>.checks[].required`.
pub const CHECK_REQUIRED: bool = true;
/// `insecure_skip_verify` of region checks and HTTPS probes.
pub const INSECURE_SKIP_VERIFY: bool = false;
/// `regions.<name>.passive.consecutive_failures`.
pub const PASSIVE_CONSECUTIVE_FAILURES: u32 = 3;
/// `regions.<name>.passive.ejection`.
pub const EJECTION: &str = "5s";
/// `regions.<name>.passive.max_ejection` (at least the ejection).
pub const MAX_EJECTION: &str = "60s";
/// `regions.<name>.passive.latency.enabled`.
pub const LATENCY_EJECTION: bool = true;
/// `regions.<name>.passive.latency.factor`.
pub const LATENCY_FACTOR: f64 = 3.0;
/// `regions.<name>.passive.latency.min_samples`.
pub const LATENCY_MIN_SAMPLES: u32 = 10;
/// `regions.<name>.passive.latency.min_latency`.
pub const LATENCY_MIN: &str = "100ms";
/// `routes[].match.path_prefix` and `routes[].sticky.path`.
pub const PATH: &str = "/";
/// `routes[].failback.hold_down`.
pub const HOLD_DOWN: &str = "30s";
/// `routes[].retry.attempts`.
pub const RETRY_ATTEMPTS: u32 = 2;
/// `routes[].retry.budget`, in per mille.
pub const RETRY_BUDGET_PERMILLE: u32 = 200;
/// `routes[].retry.early.enabled`.
pub const EARLY_RETRY: bool = true;
/// `routes[].retry.early.factor`.
pub const EARLY_FACTOR: f64 = 3.0;
/// `routes[].retry.early.min_delay`.
pub const EARLY_MIN: &str = "20ms";
/// `routes[].retry.early.max_delay`.
pub const EARLY_MAX: &str = "1s";
/// `routes[].retry.early.hedge`.
pub const EARLY_HEDGE: bool = true;
/// `routes[].retry.early.budget`, in per mille.
pub const EARLY_BUDGET_PERMILLE: u32 = 100;
/// `server.start_traces`.
pub const START_TRACES: bool = true;
/// `server.otlp.service_name`.
pub const OTLP_SERVICE_NAME: &str = "failover-gateway";
/// `server.otlp.max_batch`.
pub const OTLP_MAX_BATCH: u32 = 512;
/// `server.otlp.interval`.
pub const OTLP_INTERVAL: &str = "1s";
/// `server.otlp.queue`.
pub const OTLP_QUEUE: u32 = 8192;
/// `server.otlp.timeout`.
pub const OTLP_TIMEOUT: &str = "5s";
/// `routes[].degraded.for`.
pub const DEGRADED_FOR: &str = "2s";
/// `routes[].degraded.recover_after`.
pub const DEGRADED_RECOVER: &str = "10s";
/// `routes[].timeouts.connect`.
pub const CONNECT_TIMEOUT: &str = "250ms";
/// `routes[].timeouts.request` (and `.read`, unless set).
pub const REQUEST_TIMEOUT: &str = "30s";
/// `routes[].timeouts.idle`.
pub const IDLE_TIMEOUT: &str = "60s";
/// `routes[].sticky.cookie`.
pub const STICKY_COOKIE: &str = "gw_affinity";
/// `routes[].sticky.ttl`.
pub const STICKY_TTL: &str = "1h";
/// `routes[].sticky.secure` and `.http_only`.
pub const STICKY_SECURE: bool = true;

/// A duration default as a [`Duration`].
pub(crate) fn duration(text: &str) -> Duration {
    crate::values::parse_duration(text).unwrap_or_else(|e| panic!("default `{text}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_default_reads() {
        for text in [
            DNS_MIN_TTL,
            DNS_MAX_TTL,
            DNS_TIMEOUT,
            GRACE_PERIOD,
            PROBE_INTERVAL,
            PROBE_TIMEOUT,
            CHECK_INTERVAL,
            CHECK_TIMEOUT,
            EJECTION,
            MAX_EJECTION,
            LATENCY_MIN,
            HOLD_DOWN,
            CONNECT_TIMEOUT,
            REQUEST_TIMEOUT,
            IDLE_TIMEOUT,
            STICKY_TTL,
        ] {
            assert!(!duration(text).is_zero(), "{text}");
        }
        assert!(duration(PROBE_TIMEOUT) <= duration(PROBE_INTERVAL));
        assert!(duration(CHECK_TIMEOUT) <= duration(CHECK_INTERVAL));
        assert!(duration(EJECTION) <= duration(MAX_EJECTION));
    }
}
