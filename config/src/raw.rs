//! Raw serde types mirroring the YAML file one to one.
//!
//! These types never leave the crate: [`crate::validate`] turns them into the validated model.
//! Durations, percentages and addresses stay strings here so that a bad value becomes a
//! validation error with a position instead of aborting deserialization. Unknown fields are
//! collected (not rejected by serde) so that every one of them is reported.
//!
//! Schema defaults: serde's `default` on an `Option` would show as `"default": null` in the
//! JSON Schema; a field with a real default states it with
//! `#[schemars(!default, extend("default" = ...))]` (the same value validation applies), and
//! [`crate::json_schema`] drops the remaining `null` defaults (absent means "none").

use indexmap::IndexMap;
use schemars::JsonSchema;

use crate::defaults;
use serde::Deserialize;

/// The whole config file.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields, title = "Failover gateway config")]
pub struct RawConfig {
    /// Client-facing listeners (plaintext HTTP/1.1 + h2c, or TLS with ALPN h2/http1.1).
    pub listeners: Vec<RawListener>,
    /// Admin API listener (health, readiness, status). Loopback by default.
    #[serde(default)]
    #[schemars(!default, extend("default" = { "bind": "127.0.0.1:9901" }))]
    pub admin: Option<RawAdmin>,
    /// Process-wide settings.
    #[serde(default)]
    pub server: Option<RawServer>,
    /// Regional clusters by name (lowercase letters, digits, `-`).
    pub regions: IndexMap<String, RawRegion>,
    /// Routes, matched by host (exact beats `*.` wildcard) then longest path prefix.
    pub routes: Vec<RawRoute>,
    /// Keys for sticky-session cookies: the first signs, all verify.
    #[serde(default)]
    pub sticky_keys: Vec<RawStickyKey>,
    /// DNS discovery for `host:port` endpoints.
    #[serde(default)]
    pub dns: Option<RawDns>,
}

/// DNS discovery settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawDns {
    /// Name servers as `ip:port` (default: the system's `/etc/resolv.conf`).
    #[serde(default)]
    pub servers: Vec<String>,
    /// Shortest time between re-resolutions, whatever the TTL (default `1s`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::DNS_MIN_TTL))]
    pub min_ttl: Option<String>,
    /// Longest time between re-resolutions, whatever the TTL (default `5m`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::DNS_MAX_TTL))]
    pub max_ttl: Option<String>,
    /// Lookup timeout (default `2s`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::DNS_TIMEOUT))]
    pub timeout: Option<String>,
}

/// A client-facing listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawListener {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// `ip:port` to bind, e.g. `0.0.0.0:8080` or `[::]:8443`.
    pub bind: String,
    /// TLS termination; absent means plaintext HTTP/1.1 and h2c.
    #[serde(default)]
    pub tls: Option<RawListenerTls>,
}

/// TLS settings of a listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawListenerTls {
    /// Certificates, chosen by SNI from each certificate's DNS names.
    pub certs: Vec<RawCert>,
    /// Index into `certs` used for clients with no or unknown SNI (default 0).
    #[serde(default)]
    #[schemars(!default, extend("default" = 0))]
    pub default_cert: Option<usize>,
}

/// A PEM certificate chain and its private key (paths relative to the config file).
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawCert {
    /// PEM certificate chain file.
    pub cert: String,
    /// PEM private key file (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

/// Admin API settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawAdmin {
    /// `ip:port` of the admin API (required in this section; without an `admin` section the API
    /// listens on `127.0.0.1:9901`).
    pub bind: String,
    /// File holding the bearer token; required when `bind` is not a loopback address.
    #[serde(default)]
    pub token_file: Option<String>,
}

/// Process-wide settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawServer {
    /// Worker threads for the proxy (default: number of CPUs). `gateway run --threads` overrides.
    /// One thread runs Tokio's current-thread scheduler; more share a work-stealing one.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Idle upstream connections kept per process for reuse (default 1024). Keep it above the
    /// upstream concurrency you expect: a connection returned to a full pool is closed, and
    /// under load the next request opens a new one (a connect burst at the upstream).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::UPSTREAM_KEEPALIVE_POOL))]
    pub upstream_keepalive_pool: Option<usize>,
    /// Name of the request id header (default `x-request-id`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::REQUEST_ID_HEADER))]
    pub request_id_header: Option<String>,
    /// Time given to in-flight requests on shutdown (default `10s`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::GRACE_PERIOD))]
    pub grace_period: Option<String>,
    /// Requests in flight through this process at most (admission control): above it a
    /// request gets a fast `503` (overloaded) with `Retry-After` (default 10000).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::MAX_IN_FLIGHT))]
    pub max_in_flight: Option<u32>,
    /// Adapt the process's in-flight limit to the gateway's own scheduling lag, below
    /// `max_in_flight` (default false): it shrinks while the proxy's event loop runs late and
    /// grows back while requests keep it full and the loop is on time. Off by default: under
    /// closed-loop overload it shed half the requests and lowered goodput (see the README).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::ADAPTIVE_LIMIT))]
    pub adaptive_limit: Option<bool>,
    /// W3C trace context: a request without a valid `traceparent` gets a new one (a new
    /// trace, sampled) before it is forwarded (default true); a valid one and its
    /// `tracestate` always pass unchanged. The trace id is in the access log.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::START_TRACES))]
    pub start_traces: Option<bool>,
    /// Concurrent streams a client may open on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS,
    /// 1–10000, default 100). Read at start: a change needs a restart.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::CLIENT_H2_STREAMS))]
    pub client_h2_streams: Option<u32>,
    /// Client connections open at once at most (default 8192): a connection accepted above it
    /// is closed at once, unanswered, and counted in `gateway_connections_refused_total`. Each
    /// client connection may need an upstream one: the file-descriptor limit should be above
    /// twice this (the gateway raises its soft limit to the hard one and warns when it is not).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::MAX_CONNECTIONS))]
    pub max_connections: Option<u32>,
    /// Time a client has to send a whole HTTP/1 request head, from its first byte (default
    /// `10s`): past it the answer is `408` and the connection closes. A client trickling a byte
    /// at a time cannot hold a connection longer.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::REQUEST_HEAD_TIMEOUT))]
    pub request_head_timeout: Option<String>,
    /// How long a client connection may stay idle waiting for a request head (default `60s`):
    /// on a new connection until its first byte, between kept-alive HTTP/1 requests, and on an
    /// HTTP/2 connection with no stream open. Then the connection is closed without an answer
    /// (an HTTP/1 connection idle past its first second is parked without a task and closed by
    /// a once-a-second sweep, so up to a second later). An idle HTTP/1 connection costs the
    /// gateway about 2 KiB.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::KEEPALIVE_TIMEOUT))]
    pub keepalive_timeout: Option<String>,
    /// How long one write of a response to a client may wait for the client to take it
    /// (default `60s`; within a route's `timeouts.request`, whatever of that is left): a client
    /// that stops reading is disconnected then, and counted as a client error (`send_timeout`).
    /// Until then the upstream is not read further (backpressure): the gateway holds at most a
    /// few `body_buffer_bytes` of the response.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::SEND_TIMEOUT))]
    pub send_timeout: Option<String>,
    /// Bytes of a request head at most, request line and headers (default 32768, at
    /// most 1048575): above it `431`. For HTTP/2 it is also the advertised
    /// SETTINGS_MAX_HEADER_LIST_SIZE, read at start (a change needs a restart there).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::MAX_REQUEST_HEAD_BYTES))]
    pub max_request_head_bytes: Option<u32>,
    /// Bytes of one request header (name and value) at most (default 8192): above it `431`.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::MAX_HEADER_BYTES))]
    pub max_header_bytes: Option<u32>,
    /// Request headers at most (default 100): above it `431`.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::MAX_HEADERS))]
    pub max_headers: Option<u32>,
    /// Bytes of the request target (path and query) at most (default 8192): above it `414`.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::MAX_URI_BYTES))]
    pub max_uri_bytes: Option<u32>,
    /// Bytes of each HTTP/1 body read, request and response (default 16384, 1024 to 1048576).
    /// A client reading slowly makes the gateway hold a few such chunks of its response (the
    /// rest waits in the upstream's socket: backpressure), so this bounds the memory a slow
    /// reader costs; larger reads cost fewer system calls on big downloads.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::BODY_BUFFER_BYTES))]
    pub body_buffer_bytes: Option<u32>,
    /// Peers (CIDRs or addresses, e.g. `10.0.0.0/8`) whose `X-Forwarded-For`, `Forwarded`,
    /// `X-Real-IP`, `X-Forwarded-Host` and `X-Forwarded-Port` are passed on (and appended to);
    /// from any other client they are dropped and replaced by the gateway's own. Default: none.
    #[serde(default)]
    pub trusted_proxies: Option<Vec<String>>,
    /// The access log: one JSON line per request (fields in the README).
    #[serde(default)]
    pub access_log: Option<RawAccessLog>,
    /// OpenTelemetry export: one span per sampled request, sent over OTLP/HTTP (JSON) to a
    /// collector (absent: no export).
    #[serde(default)]
    pub otlp: Option<RawOtlp>,
}

/// A regional cluster.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawRegion {
    /// The region's endpoints.
    pub endpoints: Vec<RawEndpoint>,
    /// Requests in flight to this region through this gateway at most (absent: no limit).
    /// When the active tier is full the excess spills to the next tier of the route (never
    /// outside `allowed_regions`); with every tier full it is shed with a `503` (overloaded).
    #[serde(default)]
    pub capacity: Option<u32>,
    /// TLS to the upstream; absent means plaintext.
    #[serde(default)]
    pub tls: Option<RawUpstreamTls>,
    /// Upstream HTTP version: `http1` (default), `http2` (h2 over TLS, h2c without), or `auto`
    /// (ALPN, TLS only).
    #[serde(default)]
    #[schemars(!default, extend("default" = "http1"))]
    pub protocol: Option<String>,
    /// Concurrent streams the gateway opens on one HTTP/2 connection to an endpoint before it
    /// opens another (1 to 1000, default 100; never more than the endpoint's own
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub h2_streams: Option<u32>,
    /// Active probe of every endpoint.
    #[serde(default)]
    pub probe: Option<RawProbe>,
    /// Region gates, such as the cluster API server's `/readyz`.
    #[serde(default)]
    pub checks: Vec<RawCheck>,
    /// Healthy endpoints needed for the region to be up: a count (`1`) or a percentage (`"50%"`).
    #[serde(default)]
    #[schemars(!default, extend("default" = 1))]
    pub min_healthy: Option<RawCountOrPercent>,
    /// Passive ejection from live-traffic failures.
    #[serde(default)]
    pub passive: Option<RawPassive>,
}

/// A count (`2`) or a percentage string (`"50%"`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawCountOrPercent {
    /// An absolute count.
    Count(u32),
    /// A percentage such as `"50%"`.
    Text(String),
}

/// One endpoint of a region.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawEndpoint {
    /// Stable id, unique across all regions (used in sticky cookies; never an address).
    pub id: String,
    /// `ip:port` or `host:port` (a host name is resolved through DNS).
    pub address: String,
}

/// TLS towards a region's endpoints.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// Server name sent in SNI and verified in the certificate.
    pub sni: String,
    /// Verify the upstream certificate (default true).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::UPSTREAM_TLS_VERIFY))]
    pub verify: Option<bool>,
}

/// Active probe settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawProbe {
    /// HTTP probe; absent (and no `grpc`) means a TCP connect probe.
    #[serde(default)]
    pub http: Option<RawHttpProbe>,
    /// gRPC health probe (`grpc.health.v1.Health/Check`) over HTTP/2: h2c, or h2 over TLS
    /// when the region's endpoints speak TLS. Not together with `http`.
    #[serde(default)]
    pub grpc: Option<RawGrpcProbe>,
    /// Time between probes (default `1s`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::PROBE_INTERVAL))]
    pub interval: Option<String>,
    /// Probe timeout (default `500ms`), at most `interval`.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::PROBE_TIMEOUT))]
    pub timeout: Option<String>,
    /// Consecutive successes to become healthy (default 2).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::RISE_FALL))]
    pub rise: Option<u32>,
    /// Consecutive failures to become unhealthy (default 2).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::RISE_FALL))]
    pub fall: Option<u32>,
    /// Random spread of the interval, e.g. `"10%"` (default 10%, at most 50%).
    #[serde(default)]
    #[schemars(!default, extend("default" = "10%"))]
    pub jitter: Option<String>,
}

/// HTTP probe settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawHttpProbe {
    /// Path to request (default `/healthz`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::PROBE_PATH))]
    pub path: Option<String>,
    /// Method (default `GET`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::PROBE_METHOD))]
    pub method: Option<String>,
    /// Host header (default: the endpoint address).
    #[serde(default)]
    pub host: Option<String>,
    /// Statuses counted as success (default `[200]`).
    #[serde(default)]
    #[schemars(!default, extend("default" = [200]))]
    pub expect_status: Option<Vec<u16>>,
    /// Substring the body must contain (optional).
    #[serde(default)]
    pub body_contains: Option<String>,
    /// PEM bundle of the CA certificates to trust when the region's endpoints speak TLS
    /// (`regions.<name>.tls`), instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// PEM client certificate (chain) presented for mutual TLS; needs `client_key`.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<String>,
    /// File holding a bearer token sent as `Authorization: Bearer <token>`, read at every
    /// probe, so a rotated token (a projected service-account token) is used at once.
    #[serde(default)]
    pub bearer_token_file: Option<String>,
    /// Server name sent in SNI and verified in the certificate (default: the URL's host, or `regions.<name>.tls.sni`).
    #[serde(default)]
    pub sni: Option<String>,
    /// Accept any server certificate (default false). Insecure: `gateway check` warns.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::INSECURE_SKIP_VERIFY))]
    pub insecure_skip_verify: Option<bool>,
}

/// gRPC health probe settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawGrpcProbe {
    /// Service name asked about (default `""`: the server as a whole).
    #[serde(default)]
    #[schemars(!default, extend("default" = ""))]
    pub service: Option<String>,
    /// PEM bundle of the CA certificates to trust when the region's endpoints speak TLS
    /// (`regions.<name>.tls`), instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// PEM client certificate (chain) presented for mutual TLS; needs `client_key`.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<String>,
    /// File holding a bearer token sent as `authorization: Bearer <token>` metadata, read at
    /// every probe, so a rotated token is used at once.
    #[serde(default)]
    pub bearer_token_file: Option<String>,
    /// Server name sent in SNI and verified in the certificate (default: `regions.<name>.tls.sni`).
    #[serde(default)]
    pub sni: Option<String>,
    /// Accept any server certificate (default false). Insecure: `gateway check` warns.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::INSECURE_SKIP_VERIFY))]
    pub insecure_skip_verify: Option<bool>,
}

/// A region gate.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawCheck {
    /// Unique name within the region.
    pub name: String,
    /// `http://` or `https://` URL to probe.
    pub url: String,
    /// Time between checks (default `2s`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::CHECK_INTERVAL))]
    pub interval: Option<String>,
    /// Check timeout (default `1s`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::CHECK_TIMEOUT))]
    pub timeout: Option<String>,
    /// Consecutive successes to pass (default 2).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::RISE_FALL))]
    pub rise: Option<u32>,
    /// Consecutive failures to fail (default 2).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::RISE_FALL))]
    pub fall: Option<u32>,
    /// Statuses counted as success (default `[200]`).
    #[serde(default)]
    #[schemars(!default, extend("default" = [200]))]
    pub expect_status: Option<Vec<u16>>,
    /// Whether the region is down while this check fails (default true).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::CHECK_REQUIRED))]
    pub required: Option<bool>,
    /// PEM bundle of the CA certificates to trust for HTTPS (e.g. the cluster's own CA)
    /// instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// PEM client certificate (chain) presented for mutual TLS; needs `client_key`.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<String>,
    /// File holding a bearer token sent as `Authorization: Bearer <token>`, read at every
    /// probe, so a rotated token (a projected service-account token) is used at once.
    #[serde(default)]
    pub bearer_token_file: Option<String>,
    /// Server name sent in SNI and verified in the certificate (default: the URL's host).
    #[serde(default)]
    pub sni: Option<String>,
    /// Accept any server certificate (default false). Insecure: `gateway check` warns.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::INSECURE_SKIP_VERIFY))]
    pub insecure_skip_verify: Option<bool>,
}

/// Passive ejection settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawPassive {
    /// Consecutive live-traffic failures that eject an endpoint (default 3).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::PASSIVE_CONSECUTIVE_FAILURES))]
    pub consecutive_failures: Option<u32>,
    /// First ejection time, doubled on each repeat (default `5s`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::EJECTION))]
    pub ejection: Option<String>,
    /// Cap of the ejection time (default `60s`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::MAX_EJECTION))]
    pub max_ejection: Option<String>,
    /// Share of the region's endpoints that timeouts may have ejected at once (default `50%`;
    /// one endpoint may always be ejected, even in a region of two). Refusals, resets and 5xx
    /// are the upstream's own answer and eject without this cap.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::MAX_EJECTED))]
    pub max_ejected: Option<String>,
    /// Latency outlier ejection: an endpoint whose answers stay far slower than the rest of
    /// its region's is ejected like a failing one (same ejection times, doubling, and the
    /// `max_ejected` cap). On by default.
    #[serde(default)]
    pub latency: Option<RawLatencyEjection>,
}

/// Access log settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawAccessLog {
    /// `off` (default), `stdout`, or a file path (relative to the config file; appended to,
    /// reopened on SIGUSR1 for logrotate).
    #[serde(default)]
    #[schemars(!default, extend("default" = "off"))]
    pub output: Option<String>,
    /// Share of successful requests (status below 400) logged, e.g. `"10%"` (default 100%);
    /// errors, gateway answers and failed requests are always logged.
    #[serde(default)]
    #[schemars(!default, extend("default" = "100%"))]
    pub sample: Option<String>,
}

/// OTLP span export settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawOtlp {
    /// The collector's OTLP/HTTP traces URL, `http://host:port/v1/traces` (e.g. an
    /// OpenTelemetry Collector on the same host at `http://127.0.0.1:4318/v1/traces`).
    pub endpoint: String,
    /// `service.name` of the spans' resource (default `failover-gateway`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::OTLP_SERVICE_NAME))]
    pub service_name: Option<String>,
    /// Spans per export request at most (default 512).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::OTLP_MAX_BATCH))]
    pub max_batch: Option<u32>,
    /// Time a span waits for its batch to fill at most (default `1s`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::OTLP_INTERVAL))]
    pub interval: Option<String>,
    /// Spans waiting for export at most (default 8192); more are dropped and counted in
    /// `gateway_otlp_spans_dropped_total`, never waited for. Read at start.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::OTLP_QUEUE))]
    pub queue: Option<u32>,
    /// Time one export request may take (default `5s`); a batch that fails (after two
    /// retries, for a 429, 502, 503, 504 or a refused connection) is dropped and counted.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::OTLP_TIMEOUT))]
    pub timeout: Option<String>,
}

/// Latency outlier ejection settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawLatencyEjection {
    /// Whether slow endpoints are ejected (default true).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::LATENCY_EJECTION))]
    pub enabled: Option<bool>,
    /// How many times slower than the median of the region's other endpoints (their recent
    /// average time to first byte) an answer must be to count as slow (default 3, at least 1.5).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::LATENCY_FACTOR))]
    pub factor: Option<f64>,
    /// Consecutive slow answers that eject (default 10).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::LATENCY_MIN_SAMPLES))]
    pub min_samples: Option<u32>,
    /// Answers faster than this never count as slow, however fast the others are (default
    /// `100ms`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::LATENCY_MIN))]
    pub min_latency: Option<String>,
}

/// A route.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique name, used in logs, metrics, cookies and error bodies.
    pub name: String,
    /// What requests this route takes.
    #[serde(rename = "match", default)]
    pub match_: Option<RawMatch>,
    /// Priority tiers of regions: each element is a region name or a `{region: weight}` map.
    pub regions: Vec<RawTier>,
    /// Regions this route may ever be served from (default: the regions of its tiers).
    #[serde(default)]
    pub allowed_regions: Option<Vec<String>>,
    /// Failback hysteresis.
    #[serde(default)]
    pub failback: Option<RawFailback>,
    /// Retry policy.
    #[serde(default)]
    pub retry: Option<RawRetry>,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Option<RawTimeouts>,
    /// Sticky sessions.
    #[serde(default)]
    pub sticky: Option<RawSticky>,
    /// When every allowed region looks down: `fail_open` (default) still tries their
    /// endpoints in tier order (a 502 after trying), `reject` answers 503 at once.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::ON_ALL_DOWN))]
    pub on_all_down: Option<String>,
    /// Requests in flight on this route at most (absent: only `server.max_in_flight`).
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Bytes of a request body at most (default 1048576, as nginx; `0`: no limit): a larger
    /// `Content-Length` is answered `413` before anything is forwarded, and a chunked body that
    /// grows past it is cut off with `413`. Upgraded connections (WebSocket) are not bound by it.
    /// gRPC requests are bound by it only when it is set on the route (then on the whole
    /// stream: `RESOURCE_EXHAUSTED` before the response started, the stream reset after);
    /// by default only `max_grpc_message_bytes` bounds them.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::MAX_BODY_BYTES))]
    pub max_body_bytes: Option<u64>,
    /// Bytes of one gRPC message at most (default 4194304, gRPC libraries' default maximum;
    /// `0`: no limit), read from each message's length prefix in a request whose
    /// `content-type` is `application/grpc` or `application/grpc-web` (`+proto` etc.). A gRPC
    /// request stream is bound by this, not by the default `max_body_bytes`: only a
    /// `max_body_bytes` set on the route also bounds the whole stream.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::MAX_GRPC_MESSAGE_BYTES))]
    pub max_grpc_message_bytes: Option<u64>,
    /// Failover for slowness (opt-in): a region whose endpoints answer this route slower than
    /// an SLO for a while is treated as down for it while another region is up.
    #[serde(default)]
    pub degraded: Option<RawDegraded>,
}

/// When a region counts as degraded for a route.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawDegraded {
    /// The SLO: a region whose median endpoint time to first byte (each endpoint's recent
    /// average over live traffic) is above this, e.g. `300ms`, is slow.
    pub ttfb: String,
    /// Slow this long, with fresh answers all along, makes it degraded (default `2s`).
    #[serde(default, rename = "for")]
    #[schemars(!default, extend("default" = defaults::DEGRADED_FOR))]
    pub for_: Option<String>,
    /// Degraded this long, it is offered traffic again (default `10s`), after the failback
    /// hold-down like any region that comes back; still slow, it is degraded again.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::DEGRADED_RECOVER))]
    pub recover_after: Option<String>,
}

/// Request matching.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawMatch {
    /// Exact host (`api.example.com`) or wildcard (`*.example.com`); absent matches any host.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix starting with `/` (default `/`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::PATH))]
    pub path_prefix: Option<String>,
}

/// One priority tier.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawTier {
    /// A single region.
    Single(String),
    /// Regions sharing the tier by weight, e.g. `{fra: 70, ber: 30}`.
    Weighted(IndexMap<String, u32>),
}

/// Failback settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawFailback {
    /// How long a higher tier must stay up before traffic returns (default `30s`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::HOLD_DOWN))]
    pub hold_down: Option<String>,
}

/// Retry settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawRetry {
    /// Extra attempts after the first (default 2, at most 10).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::RETRY_ATTEMPTS))]
    pub attempts: Option<u32>,
    /// Retry conditions: `connect`, `reset`, `timeout` and HTTP statuses (default
    /// `[connect, reset, 502, 503, 504]`).
    #[serde(default)]
    #[schemars(!default, extend("default" = ["connect", "reset", 502, 503, 504]))]
    pub on: Option<Vec<RawRetryOn>>,
    /// Share of requests that may be retried, e.g. `"20%"` (default 20%).
    #[serde(default)]
    #[schemars(!default, extend("default" = "20%"))]
    pub budget: Option<String>,
    /// Early retry: a `GET`, `HEAD` or `OPTIONS` without a body whose response has not begun
    /// by a deadline learnt from the route's own latency is cut and sent to another endpoint
    /// (another region first), within its own budget. Off by default.
    #[serde(default)]
    pub early: Option<RawEarlyRetry>,
}

/// Early retry settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawEarlyRetry {
    /// Whether late first bytes are retried early (default false).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::EARLY_RETRY))]
    pub enabled: Option<bool>,
    /// The deadline is this many times the route's recent 99th percentile time to first
    /// byte (default 3, from 1 to 100) ...
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::EARLY_FACTOR))]
    pub factor: Option<f64>,
    /// ... but never shorter than this (default `20ms`) ...
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::EARLY_MIN))]
    pub min_delay: Option<String>,
    /// ... nor longer (default `1s`; also the deadline until the route has 50 answers to
    /// learn from).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::EARLY_MAX))]
    pub max_delay: Option<String>,
    /// Share of requests that may be retried early over the last 10 seconds, e.g. `"10%"`
    /// (default 10%; 10 more are always allowed), so a slow fleet is not sent twice the
    /// load.
    #[serde(default)]
    #[schemars(!default, extend("default" = "10%"))]
    pub budget: Option<String>,
    /// Race instead of abandoning (default true): the first attempt stays, the same request
    /// goes to the other endpoint too, and whichever answers first is used (the other is
    /// cancelled). Only to HTTP/1.1 upstreams; an HTTP/2 first attempt is always cut.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::EARLY_HEDGE))]
    pub hedge: Option<bool>,
}

/// A retry condition: a keyword or an HTTP status.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawRetryOn {
    /// An HTTP status such as 503.
    Status(u16),
    /// `connect`, `reset` or `timeout`.
    Keyword(String),
}

/// Timeouts of a route.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP (and TLS) connect timeout to an endpoint (default `250ms`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::CONNECT_TIMEOUT))]
    pub connect: Option<String>,
    /// Total deadline of a request, from its arrival to the end of its response, retries
    /// included (default `30s`), or `off` (for long streams). Exceeded before the response
    /// started: 504; after: the response is cut off visibly (see the README). Upgraded
    /// connections (WebSocket) are not bound by it.
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::REQUEST_TIMEOUT))]
    pub request: Option<String>,
    /// Longest wait for the upstream between two reads, including for the response header
    /// (default: `request`, or `30s` when `request` is `off`).
    #[serde(default)]
    #[schemars(!default, extend("default" = "30s"))]
    pub read: Option<String>,
    /// Idle time of a pooled upstream connection before it is closed (default `60s`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::IDLE_TIMEOUT))]
    pub idle: Option<String>,
}

/// Sticky-session settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawSticky {
    /// Cookie name (default `gw_affinity`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::STICKY_COOKIE))]
    pub cookie: Option<String>,
    /// Session lifetime (default `1h`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::STICKY_TTL))]
    pub ttl: Option<String>,
    /// After failback: `stay` (default) keeps sessions where they are, `return` moves them back.
    #[serde(default)]
    #[schemars(!default, extend("default" = "stay"))]
    pub on_failback: Option<String>,
    /// Header whose value pins clients without a cookie (rendezvous hashing).
    #[serde(default)]
    pub header: Option<String>,
    /// Cookie `Path` attribute (default `/`).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::PATH))]
    pub path: Option<String>,
    /// Cookie `Domain` attribute (optional).
    #[serde(default)]
    pub domain: Option<String>,
    /// Cookie `Secure` attribute (default true).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::STICKY_SECURE))]
    pub secure: Option<bool>,
    /// Cookie `HttpOnly` attribute (default true).
    #[serde(default)]
    #[schemars(!default, extend("default" = defaults::STICKY_SECURE))]
    pub http_only: Option<bool>,
    /// Cookie `SameSite` attribute: `lax` (default), `strict` or `none`.
    #[serde(default)]
    #[schemars(!default, extend("default" = "lax"))]
    pub same_site: Option<String>,
}

/// A sticky-cookie key.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawStickyKey {
    /// Key id written into cookies.
    pub id: String,
    /// File with the secret (at least 32 bytes), relative to the config file.
    pub secret_file: String,
}
