//! Validated configuration: the only config types the rest of the workspace sees.
//!
//! Every value here has passed validation: durations are [`Duration`]s, weights are non-zero,
//! names are checked, referenced regions exist, files were readable when the config was loaded.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A validated gateway config, ready to build a routing snapshot from.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The file this config came from.
    pub source: PathBuf,
    /// Hex SHA-256 (first 16 characters) of the file's bytes and of the contents of every file
    /// it references ([`GatewayConfig::files`]), shown in status and metrics. A reload whose
    /// hash equals the running one changes nothing; rewriting a certificate, key, token or
    /// secret at the same path changes the hash.
    pub hash: String,
    /// Every file the config references (certificates, keys, the admin token, sticky secrets),
    /// as read at load time. The reload watcher also watches their directories.
    pub files: Vec<ReferencedFile>,
    /// Client-facing listeners, in file order.
    pub listeners: Vec<Listener>,
    /// Admin API settings.
    pub admin: AdminSettings,
    /// Process-wide settings.
    pub server: ServerSettings,
    /// Regions in file order.
    pub regions: Vec<Region>,
    /// Routes in file order.
    pub routes: Vec<Route>,
    /// Sticky keys; the first signs.
    pub sticky_keys: Vec<StickyKey>,
    /// DNS discovery settings.
    pub dns: DnsSettings,
    /// Settings that are valid but unsafe (such as `insecure_skip_verify`), each with its
    /// position: `gateway check` prints them and `gateway run` logs them.
    pub warnings: Vec<crate::ConfigIssue>,
}

/// A file named in the config, as read when the config was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferencedFile {
    /// The field that names it, e.g. `admin.token_file` or `sticky_keys[0].secret_file`.
    pub field: String,
    /// The path it was read from (relative names start at the config file's directory).
    pub path: PathBuf,
    /// Hex SHA-256 of its contents.
    pub sha256: String,
}

/// DNS discovery settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Name servers; empty means the system's.
    pub servers: Vec<SocketAddr>,
    /// Shortest re-resolution interval.
    pub min_ttl: Duration,
    /// Longest re-resolution interval.
    pub max_ttl: Duration,
    /// Lookup timeout.
    pub timeout: Duration,
}

impl GatewayConfig {
    /// The region with this name.
    pub fn region(&self, name: &RegionName) -> Option<&Region> {
        self.regions.iter().find(|r| &r.name == name)
    }
}

/// A region name: lowercase ASCII letters, digits and `-`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionName(Arc<str>);

impl RegionName {
    /// Validates a region name.
    pub fn try_new(name: &str) -> Result<Self, String> {
        if is_simple_name(name) {
            Ok(Self(name.into()))
        } else {
            Err(format!(
                "`{name}` is not a valid region name (lowercase letters, digits and `-`, starting with a letter)"
            ))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stable endpoint id, unique across all regions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(Arc<str>);

impl EndpointId {
    /// Validates an endpoint id: ASCII letters, digits, `-`, `_` and `.`, 1 to 64 characters.
    pub fn try_new(id: &str) -> Result<Self, String> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Self(id.into()))
        } else {
            Err(format!(
                "`{id}` is not a valid endpoint id (1-64 ASCII letters, digits, `-`, `_`, `.`)"
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `true` for lowercase names made of letters, digits and `-`, starting with a letter.
pub(crate) fn is_simple_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && name.len() <= 63
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
}

/// A client-facing listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Unique name.
    pub name: String,
    /// Address to bind.
    pub bind: SocketAddr,
    /// TLS termination, if any.
    pub tls: Option<ListenerTls>,
}

/// TLS termination settings with certificates already read from disk.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// Certificates, chosen by SNI.
    pub certs: Vec<CertPair>,
    /// Index into `certs` for clients without (or with an unknown) SNI.
    pub default_cert: usize,
}

/// A certificate chain and key, as PEM bytes read at load time.
#[derive(Clone)]
pub struct CertPair {
    /// Path of the certificate file.
    pub cert_path: PathBuf,
    /// Path of the key file.
    pub key_path: PathBuf,
    /// PEM certificate chain.
    pub cert_pem: Vec<u8>,
    /// PEM private key.
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for CertPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("CertPair")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// Admin API settings.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Address to bind (default `127.0.0.1:9901`).
    pub bind: SocketAddr,
    /// Bearer token, required when `bind` is not loopback.
    pub token: Option<String>,
}

/// Process-wide settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Proxy worker threads; `None` means one per CPU.
    pub threads: Option<usize>,
    /// Idle upstream connections kept for reuse.
    pub upstream_keepalive_pool: usize,
    /// Request id header name.
    pub request_id_header: http::HeaderName,
    /// Time given to in-flight requests on shutdown.
    pub grace_period: Duration,
    /// Requests in flight through the process at most.
    pub max_in_flight: u32,
    /// Adapt the in-flight limit (below `max_in_flight`) to the proxy's scheduling lag.
    pub adaptive_limit: bool,
    /// Start a W3C trace (`traceparent`) for requests without a valid one.
    pub start_traces: bool,
    /// Concurrent streams per client HTTP/2 connection.
    pub client_h2_streams: u32,
    /// Client connections open at once at most.
    pub max_connections: u32,
    /// Limits on what a client sends.
    pub limits: RequestLimits,
    /// Peers whose forwarding headers are trusted.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The access log.
    pub access_log: AccessLog,
    /// OpenTelemetry span export, when configured.
    pub otlp: Option<OtlpExport>,
}

/// Where and how request spans are exported (OTLP/HTTP, JSON encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpExport {
    /// The collector's traces URL (`http://`).
    pub endpoint: http::Uri,
    /// The resource's `service.name`.
    pub service_name: String,
    /// Spans per export request at most.
    pub max_batch: u32,
    /// Time a span waits for its batch at most.
    pub interval: Duration,
    /// Spans waiting at most (read at start).
    pub queue: u32,
    /// Time one export request may take.
    pub timeout: Duration,
}

/// Where access log lines go and how many successes are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    /// The destination.
    pub output: AccessLogOutput,
    /// Successful requests logged, per mille (errors always).
    pub sample_permille: u32,
}

/// An access log destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogOutput {
    /// No access log.
    Off,
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

/// Limits on what a client sends and how slowly (`server.request_head_timeout`,
/// `keepalive_timeout`, `send_timeout`, `max_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Time to send a whole HTTP/1 request head, from its first byte (408).
    pub head_timeout: Duration,
    /// Idle time allowed before a request head's first byte (connection closed).
    pub keepalive_timeout: Duration,
    /// Time one response write may wait for the client (connection closed).
    pub send_timeout: Duration,
    /// Bytes of an HTTP/1 request head (431).
    pub head_bytes: u32,
    /// Bytes of one header, name and value (431).
    pub header_bytes: u32,
    /// Number of headers (431).
    pub headers: u32,
    /// Bytes of the request target (414).
    pub uri_bytes: u32,
    /// Bytes of each HTTP/1 body read.
    pub body_buffer_bytes: u32,
}

/// A region with its endpoints and health settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Region name.
    pub name: RegionName,
    /// Endpoints, in file order.
    pub endpoints: Vec<Endpoint>,
    /// TLS to upstream endpoints, if any.
    pub tls: Option<UpstreamTls>,
    /// HTTP version spoken to the endpoints.
    pub protocol: UpstreamProtocol,
    /// Streams per HTTP/2 connection to an endpoint (1..=1000).
    pub h2_streams: usize,
    /// Active probe of every endpoint.
    pub probe: ProbeSettings,
    /// Region gates.
    pub checks: Vec<RegionCheck>,
    /// Healthy endpoints needed for the region to be up.
    pub min_healthy: MinHealthy,
    /// Passive ejection settings.
    pub passive: PassiveSettings,
    /// Requests in flight to the region at most, if limited.
    pub capacity: Option<u32>,
}

/// An endpoint of a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Stable id.
    pub id: EndpointId,
    /// Where to connect.
    pub address: EndpointAddress,
}

/// An endpoint address: a socket address, or a host name resolved through DNS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EndpointAddress {
    /// A literal `ip:port`.
    Socket(SocketAddr),
    /// A `host:port` to resolve.
    Host {
        /// DNS name.
        host: String,
        /// Port.
        port: u16,
    },
}

impl fmt::Display for EndpointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Socket(addr) => write!(f, "{addr}"),
            Self::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// TLS towards upstream endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// SNI and verified name.
    pub sni: String,
    /// Whether the certificate is verified.
    pub verify: bool,
}

/// HTTP version spoken to a region's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only: h2 over TLS, h2c (prior knowledge) without TLS.
    Http2,
    /// Negotiate with ALPN (h2 preferred); HTTP/1.1 without TLS.
    Auto,
}

/// Active probe settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeSettings {
    /// What one probe does.
    pub kind: ProbeKind,
    /// Time between probes.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Consecutive successes to become healthy.
    pub rise: NonZeroU32,
    /// Consecutive failures to become unhealthy.
    pub fall: NonZeroU32,
    /// Jitter as a fraction of the interval, in per mille (100 = 10%).
    pub jitter_permille: u32,
}

/// What an endpoint probe does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// A TCP connect.
    Tcp,
    /// An HTTP(S) request.
    Http(HttpProbe),
    /// A gRPC health check.
    Grpc(GrpcProbe),
}

/// gRPC health probe settings: `grpc.health.v1.Health/Check` over h2c, or h2 over TLS when the
/// region's endpoints speak TLS; healthy only when the answer is `SERVING`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GrpcProbe {
    /// Service name asked about (`""`: the server as a whole).
    pub service: String,
    /// How the probe connects over TLS (as for HTTPS probes).
    pub tls: ProbeTls,
    /// File whose content is sent as `authorization: Bearer <token>` metadata (re-read at
    /// every probe).
    pub bearer_token_file: Option<PathBuf>,
}

/// HTTP probe settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpProbe {
    /// Method.
    pub method: http::Method,
    /// Path and query.
    pub path: String,
    /// Host header, if overridden.
    pub host: Option<String>,
    /// Statuses counted as success.
    pub expect_status: BTreeSet<u16>,
    /// Substring the body must contain.
    pub body_contains: Option<String>,
    /// How HTTPS probes connect (used when the region's endpoints speak TLS); the server name
    /// defaults to `regions.<name>.tls.sni`, and `tls.verify: false` skips verification.
    pub tls: ProbeTls,
    /// File whose contents are sent as a bearer token, read at every probe.
    pub bearer_token_file: Option<PathBuf>,
}

/// How an HTTPS probe or region check connects: whom it trusts, whom it shows itself as, and
/// which name it asks for. The default trusts the system roots, presents no client
/// certificate and asks for the URL's host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProbeTls {
    /// CA certificates trusted instead of the system roots (`ca_file`).
    pub ca: Option<PemFile>,
    /// Client certificate and key for mutual TLS (`client_cert`, `client_key`).
    pub client_auth: Option<ClientAuth>,
    /// Server name for SNI and certificate verification, when not the URL's host.
    pub sni: Option<String>,
    /// Accept any server certificate (signatures are still checked, the chain is not).
    pub insecure_skip_verify: bool,
}

/// A client certificate (chain) and its private key, both PEM, as read at load time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientAuth {
    /// The certificate chain, leaf first.
    pub cert: PemFile,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PemFile,
}

/// A PEM file named in the config with the bytes read when the config was loaded; a file
/// rewritten at the same path is a changed config (the hash covers it). `Debug` shows the path
/// only, never the bytes (they may be a private key).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PemFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its contents (validated to hold at least one PEM item of the expected kind).
    pub pem: Vec<u8>,
}

impl fmt::Debug for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PemFile({})", self.path.display())
    }
}

/// A region gate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegionCheck {
    /// Name within the region.
    pub name: String,
    /// URL probed.
    pub url: http::Uri,
    /// Time between checks.
    pub interval: Duration,
    /// Check timeout.
    pub timeout: Duration,
    /// Consecutive successes to pass.
    pub rise: NonZeroU32,
    /// Consecutive failures to fail.
    pub fall: NonZeroU32,
    /// Statuses counted as success.
    pub expect_status: BTreeSet<u16>,
    /// Whether a failing check takes the region down.
    pub required: bool,
    /// How the check connects over HTTPS.
    pub tls: ProbeTls,
    /// File whose contents are sent as a bearer token, read at every check (a rotated token,
    /// such as a projected service-account token, is used from the next check on).
    pub bearer_token_file: Option<PathBuf>,
}

/// Healthy endpoints needed for a region to be up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinHealthy {
    /// At least this many.
    Count(u32),
    /// At least this percentage (1..=100) of the region's endpoints, rounded up.
    Percent(u32),
}

impl MinHealthy {
    /// The number of healthy endpoints needed out of `total`, at least 1 when `total > 0`.
    pub fn required(self, total: usize) -> usize {
        let needed = match self {
            Self::Count(n) => n as usize,
            Self::Percent(p) => (total * p as usize).div_ceil(100),
        };
        needed.clamp(usize::from(total > 0), total.max(1))
    }
}

/// Passive ejection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveSettings {
    /// Consecutive live failures that eject an endpoint.
    pub consecutive_failures: NonZeroU32,
    /// First ejection time.
    pub ejection: Duration,
    /// Ejection time cap.
    pub max_ejection: Duration,
    /// Share of the region's endpoints passive ejection may have ejected at once, per mille
    /// (at least one endpoint).
    pub max_ejected_permille: u32,
    /// Latency outlier ejection; `None` when disabled.
    pub latency: Option<LatencyEjection>,
}

/// Latency outlier ejection: `min_samples` consecutive answers slower than `factor` times the
/// median of the region's other endpoints, and than `min_latency`, eject an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyEjection {
    /// The factor, per mille (3× is 3000).
    pub factor_permille: u32,
    /// Consecutive slow answers that eject.
    pub min_samples: NonZeroU32,
    /// Answers faster than this never count as slow.
    pub min_latency: Duration,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Unique name.
    pub name: Arc<str>,
    /// Host pattern.
    pub host: HostPattern,
    /// Path prefix, starting with `/`.
    pub path_prefix: String,
    /// Priority tiers, highest first.
    pub tiers: Vec<Tier>,
    /// Regions the route may be served from.
    pub allowed_regions: Vec<RegionName>,
    /// Failback hysteresis.
    pub failback_hold_down: Duration,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Timeouts.
    pub timeouts: RouteTimeouts,
    /// Sticky sessions, if enabled.
    pub sticky: Option<StickySettings>,
    /// What the route does when every allowed region looks down.
    pub on_all_down: OnAllDown,
    /// Requests in flight on the route at most, if limited.
    pub max_in_flight: Option<u32>,
    /// Bytes of a request body at most, if limited (gRPC requests: see below).
    pub max_body_bytes: Option<u64>,
    /// Bytes of a gRPC request's whole stream at most: `max_body_bytes` when the route set it,
    /// else none (the default body limit does not apply to gRPC streams).
    pub max_grpc_stream_bytes: Option<u64>,
    /// Bytes of one gRPC message at most (its length prefix), if limited.
    pub max_grpc_message_bytes: Option<u64>,
    /// Failover for slowness, when enabled.
    pub degraded: Option<Degraded>,
}

/// When a region counts as degraded for a route: its median endpoint time to first byte above
/// `ttfb` for `for_` (with fresh answers), until `recover_after` has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Degraded {
    /// The SLO.
    pub ttfb: Duration,
    /// How long slow before degraded.
    pub for_: Duration,
    /// How long degraded before it is offered traffic again.
    pub recover_after: Duration,
}

/// What a route does when every allowed region looks down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnAllDown {
    /// Try the allowed regions' endpoints anyway, in tier order (drained regions excepted):
    /// health checks may be wrong, the apps probably are fine.
    FailOpen,
    /// Answer 503 at once.
    Reject,
}

/// What hosts a route matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Any host.
    Any,
    /// Exactly this host (lowercase, no port).
    Exact(String),
    /// Any subdomain of this suffix (`*.example.com` holds `example.com`).
    Wildcard(String),
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(h) => f.write_str(h),
            Self::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// A priority tier: one or more regions with weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// Regions of the tier with their weights (all 1 for an unweighted tier).
    pub regions: Vec<(RegionName, NonZeroU32)>,
}

/// Retry policy of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub attempts: u32,
    /// Retry on connect failures (always safe: nothing reached the app).
    pub on_connect: bool,
    /// Retry on a reset before any response byte.
    pub on_reset: bool,
    /// Retry idempotent requests on upstream timeouts.
    pub on_timeout: bool,
    /// Retry idempotent requests on these statuses.
    pub on_status: BTreeSet<u16>,
    /// Retries allowed as per mille of requests (200 = 20%).
    pub budget_permille: u32,
    /// Early retry of late first bytes; `None` when disabled.
    pub early: Option<EarlyRetry>,
}

/// Early retry: a `GET`, `HEAD` or `OPTIONS` without a body whose first response byte is later
/// than `clamp(p99 × factor, min_delay, max_delay)` (p99 of the route's recent times to first
/// byte) is cut and retried on another endpoint, within `budget_permille` of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyRetry {
    /// The factor, per mille (3× is 3000).
    pub factor_permille: u32,
    /// The shortest deadline.
    pub min_delay: Duration,
    /// The longest deadline (and the deadline before there is enough to learn from).
    pub max_delay: Duration,
    /// Early retries allowed as per mille of requests over 10 seconds.
    pub budget_permille: u32,
    /// Race the first attempt (hedge) instead of abandoning it (HTTP/1.1 upstreams).
    pub hedge: bool,
}

/// Timeouts of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTimeouts {
    /// Connect timeout.
    pub connect: Duration,
    /// Total deadline from the request's arrival to the end of its response, retries
    /// included; `None` when `off`. Upgraded connections are not bound by it.
    pub request: Option<Duration>,
    /// Longest wait between two upstream reads, including for the response header.
    pub read: Duration,
    /// Idle timeout of pooled upstream connections.
    pub idle: Duration,
}

/// Sticky-session settings of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickySettings {
    /// Cookie name.
    pub cookie: String,
    /// Session lifetime.
    pub ttl: Duration,
    /// Behaviour after failback.
    pub on_failback: OnFailback,
    /// Header used for rendezvous-hash affinity, lowercase.
    pub header: Option<String>,
    /// Cookie `Path`.
    pub path: String,
    /// Cookie `Domain`.
    pub domain: Option<String>,
    /// Cookie `Secure`.
    pub secure: bool,
    /// Cookie `HttpOnly`.
    pub http_only: bool,
    /// Cookie `SameSite`.
    pub same_site: SameSite,
}

/// What a sticky session does after failback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailback {
    /// Stay on the endpoint it was moved to.
    Stay,
    /// Return to the primary tier.
    Return,
}

/// Cookie `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `Lax`.
    Lax,
    /// `Strict`.
    Strict,
    /// `None`.
    None,
}

/// A sticky-cookie key.
#[derive(Clone, PartialEq, Eq)]
pub struct StickyKey {
    /// Key id.
    pub id: String,
    /// Secret bytes.
    pub secret: Vec<u8>,
}

impl fmt::Debug for StickyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StickyKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
