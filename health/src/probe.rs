//! Probes: one check of one target, behind a trait so schedulers and tests share them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use gateway_config::{GrpcProbe, HttpProbe, ProbeTls, RegionCheck};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::ServerName;

use crate::hub::ProbeRecord;

/// A health check of one target.
#[async_trait]
pub trait Probe: Send + Sync {
    /// Runs one check with a deadline. Never panics; failures are `ok: false` records.
    async fn probe(&self, timeout: Duration) -> ProbeRecord;
}

/// Runs one check under a deadline and records its outcome and duration.
async fn timed(
    timeout: Duration,
    check: impl std::future::Future<Output = Result<String, String>>,
) -> ProbeRecord {
    let started = Instant::now();
    let (ok, detail) = match tokio::time::timeout(timeout, check).await {
        Ok(Ok(detail)) => (true, detail),
        Ok(Err(e)) => (false, e),
        Err(_) => (false, format!("timeout after {timeout:?}")),
    };
    ProbeRecord {
        at: SystemTime::now(),
        ok,
        duration: started.elapsed(),
        detail,
    }
}

/// TCP connect probe.
pub struct TcpProbe {
    /// Target.
    pub addr: SocketAddr,
}

#[async_trait]
impl Probe for TcpProbe {
    async fn probe(&self, timeout: Duration) -> ProbeRecord {
        timed(timeout, async {
            tokio::net::TcpStream::connect(self.addr)
                .await
                .map(|_| "connected".to_string())
                .map_err(|e| format!("connect: {e}"))
        })
        .await
    }
}

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

type GrpcClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// HTTP(S) probe. Connections are kept alive and reused between probes where the target allows.
pub struct HttpProber {
    /// The client, or why it could not be built from the TLS settings (every probe then fails
    /// with that detail).
    client: Result<Arc<HttpsClient>, String>,
    uri: http::Uri,
    method: http::Method,
    host: Option<String>,
    expect: std::collections::BTreeSet<u16>,
    body_contains: Option<String>,
    bearer_token_file: Option<PathBuf>,
}

/// Clients by TLS settings, held weakly: one per distinct settings while a prober uses them.
struct SharedClients<C>(
    std::sync::Mutex<Option<std::collections::HashMap<ProbeTls, std::sync::Weak<C>>>>,
);

impl<C> SharedClients<C> {
    const fn new() -> Self {
        Self(std::sync::Mutex::new(None))
    }

    /// The client for `tls`, built by `build` when no prober holds one.
    fn get(
        &self,
        tls: &ProbeTls,
        build: impl FnOnce(&ProbeTls) -> Result<C, String>,
    ) -> Result<Arc<C>, String> {
        let mut clients = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let clients = clients.get_or_insert_with(Default::default);
        if let Some(client) = clients.get(tls).and_then(std::sync::Weak::upgrade) {
            return Ok(client);
        }
        // Settings no prober uses any more are forgotten here (their clients are gone).
        clients.retain(|_, c| c.strong_count() > 0);
        let client = Arc::new(build(tls)?);
        clients.insert(tls.clone(), Arc::downgrade(&client));
        Ok(client)
    }
}

/// The client for probes with these TLS settings, shared by every prober that has them: one
/// connection pool (a connection per endpoint, kept between probes) and one TLS config for a
/// whole fleet, instead of one each. A region of 1000 endpoints probed every second cost
/// 10 % of a core with a client per endpoint (cold caches on every probe), 6 % with shared
/// trust anchors, and less with one client.
fn shared_client(tls: &ProbeTls) -> Result<Arc<HttpsClient>, String> {
    static CLIENTS: SharedClients<HttpsClient> = SharedClients::new();
    CLIENTS.get(tls, |tls| {
        Ok(pool().build(connector(tls)?.enable_http1().build()))
    })
}

/// The HTTP/2-only client of gRPC probes with these TLS settings (h2c by prior knowledge to
/// `http://`, ALPN `h2` to `https://`), shared as [`shared_client`]'s: one connection per
/// endpoint, its streams used by one probe after another.
fn shared_grpc_client(tls: &ProbeTls) -> Result<Arc<GrpcClient>, String> {
    static CLIENTS: SharedClients<GrpcClient> = SharedClients::new();
    CLIENTS.get(tls, |tls| {
        Ok(pool()
            .http2_only(true)
            // A connection whose peer went silent (a lost NAT entry, a black-holed path) would
            // otherwise keep taking every probe's stream, and the endpoint would stay down
            // until TCP gives up, long after a new connection would work: an unanswered ping
            // closes it, and the next probe dials afresh.
            .timer(hyper_util::rt::TokioTimer::new())
            .http2_keep_alive_interval(GRPC_PING_EVERY)
            .http2_keep_alive_timeout(GRPC_PING_EVERY)
            .http2_keep_alive_while_idle(true)
            .build(connector(tls)?.enable_http2().build()))
    })
}

/// How often a gRPC probe's HTTP/2 connection is pinged, and how long a ping may go unanswered.
const GRPC_PING_EVERY: Duration = Duration::from_secs(3);

fn pool() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(Duration::from_secs(30))
        // Per endpoint: the client is shared by all probes with the same TLS settings.
        .pool_max_idle_per_host(1);
    builder
}

/// The connector of one probe's TLS settings: the system roots (native, else webpki) unless
/// `tls.ca` names the CAs to trust, an optional client certificate, an optional fixed server
/// name, or no certificate verification at all; plaintext for `http://`.
fn connector(
    tls: &ProbeTls,
) -> Result<hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsProtocols1>, String>
{
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls setup: {e}"))?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
    } else if let Some(ca) = &tls.ca {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca.pem.as_slice()) {
            let cert = cert.map_err(|e| format!("tls setup: {}: {e}", ca.path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("tls setup: CA in {}: {e}", ca.path.display()))?;
        }
        builder.with_root_certificates(roots)
    } else {
        builder.with_root_certificates(default_roots())
    };
    let config = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let chain = rustls_pemfile::certs(&mut auth.cert.pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls setup: {}: {e}", auth.cert.path.display()))?;
            let key = rustls_pemfile::private_key(&mut auth.key.pem.as_slice())
                .ok()
                .flatten()
                .ok_or_else(|| {
                    format!("tls setup: no private key in {}", auth.key.path.display())
                })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("tls setup: client certificate: {e}"))?
        }
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    Ok(match &tls.sni {
        Some(name) => {
            let name = ServerName::try_from(name.clone())
                .map_err(|e| format!("tls setup: server name `{name}`: {e}"))?;
            connector.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => connector,
    })
}

/// The system's trust anchors, or Mozilla's (bundled) where the system has none: what HTTPS
/// probes without their own CA trust. Loaded once and reused for a minute: reading and decoding
/// the system bundle costs milliseconds, and a region of 1000 endpoints builds 1000 probers (at
/// start and on every reload that changes them), which used to take seconds of CPU.
fn default_roots() -> Arc<rustls::RootCertStore> {
    static CACHE: std::sync::Mutex<Option<(std::time::Instant, Arc<rustls::RootCertStore>)>> =
        std::sync::Mutex::new(None);
    const FRESH: Duration = Duration::from_secs(60);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((loaded, roots)) = cache.as_ref() {
        if loaded.elapsed() < FRESH {
            return roots.clone();
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    let roots = Arc::new(roots);
    *cache = Some((std::time::Instant::now(), roots.clone()));
    roots
}

/// `insecure_skip_verify`: accepts any certificate chain and name, but still checks that the
/// server holds the key of the certificate it sent (handshake signatures).
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An error with its chain of causes, so a probe detail says *why* (`invalid peer
/// certificate: UnknownIssuer`), not only that the client failed.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// `Bearer <the file's content>`, read now: a rotated token (rewritten, or a swapped symlink as
/// with a projected service-account token) is used from the next probe on.
fn bearer(file: &std::path::Path) -> Result<http::HeaderValue, String> {
    let token = std::fs::read_to_string(file)
        .map_err(|e| format!("bearer token file {}: {e}", file.display()))?;
    http::HeaderValue::try_from(format!("Bearer {}", token.trim()))
        .map_err(|_| format!("bearer token file {}: not a header value", file.display()))
}

impl HttpProber {
    /// Probes `settings.path` on an endpoint address (HTTPS when `tls`, with the probe's TLS
    /// settings).
    pub fn endpoint(addr: SocketAddr, settings: &HttpProbe, tls: bool) -> Self {
        let scheme = if tls { "https" } else { "http" };
        let uri = format!("{scheme}://{addr}{}", settings.path)
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/"));
        Self {
            client: shared_client(&settings.tls),
            uri,
            method: settings.method.clone(),
            host: settings.host.clone(),
            expect: settings.expect_status.clone(),
            body_contains: settings.body_contains.clone(),
            bearer_token_file: settings.bearer_token_file.clone(),
        }
    }

    /// Probes a region check's URL with its TLS settings and bearer token.
    pub fn check(check: &RegionCheck) -> Self {
        Self {
            client: shared_client(&check.tls),
            uri: check.url.clone(),
            method: http::Method::GET,
            host: None,
            expect: check.expect_status.clone(),
            body_contains: None,
            bearer_token_file: check.bearer_token_file.clone(),
        }
    }

    async fn run(&self) -> Result<String, String> {
        let mut req = http::Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone())
            .header("user-agent", "failover-gateway-probe");
        if let Some(host) = &self.host {
            req = req.header(http::header::HOST, host);
        }
        if let Some(file) = &self.bearer_token_file {
            req = req.header(http::header::AUTHORIZATION, bearer(file)?);
        }
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("request: {}", chain(&e)))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        if !self.expect.contains(&status) {
            return Err(format!("status {status}"));
        }
        if let Some(needle) = &self.body_contains {
            if !String::from_utf8_lossy(&body).contains(needle.as_str()) {
                return Err(format!("body lacks `{needle}`"));
            }
        }
        Ok(format!("status {status}"))
    }
}

#[async_trait]
impl Probe for HttpProber {
    async fn probe(&self, timeout: Duration) -> ProbeRecord {
        timed(timeout, self.run()).await
    }
}

/// gRPC health probe: `grpc.health.v1.Health/Check` for one service over h2c, or h2 over TLS,
/// healthy only when the answer is `SERVING`. The HTTP/2 connection is kept between probes.
pub struct GrpcProber {
    client: Result<Arc<GrpcClient>, String>,
    uri: http::Uri,
    /// The framed `HealthCheckRequest`, the same for every probe.
    request: Bytes,
    service: String,
    bearer_token_file: Option<std::path::PathBuf>,
}

impl GrpcProber {
    /// Probes an endpoint address (over TLS when `tls`, with the probe's TLS settings).
    pub fn endpoint(addr: SocketAddr, settings: &GrpcProbe, tls: bool) -> Self {
        let scheme = if tls { "https" } else { "http" };
        let uri = format!("{scheme}://{addr}{}", grpc::CHECK_PATH)
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/"));
        Self {
            client: shared_grpc_client(&settings.tls),
            uri,
            request: grpc::check_request(&settings.service),
            service: settings.service.clone(),
            bearer_token_file: settings.bearer_token_file.clone(),
        }
    }

    async fn run(&self, timeout: Duration) -> Result<String, String> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let mut req = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header(http::header::USER_AGENT, "failover-gateway-probe")
            // The server may stop working on a check the probe no longer waits for.
            .header("grpc-timeout", format!("{}m", timeout.as_millis().max(1)));
        if let Some(file) = &self.bearer_token_file {
            req = req.header(http::header::AUTHORIZATION, bearer(file)?);
        }
        let req = req
            .body(Full::new(self.request.clone()))
            .map_err(|e| e.to_string())?;
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("request: {}", chain(&e)))?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!("HTTP status {}", resp.status().as_u16()));
        }
        let (head, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {}", chain(&e)))?;
        // A trailers-only answer carries its status in the headers.
        let trailers = body.trailers().cloned().unwrap_or_default();
        let field = |name: &str| {
            trailers
                .get(name)
                .or_else(|| head.headers.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        grpc::verdict(
            field("grpc-status").as_deref(),
            field("grpc-message").as_deref(),
            &body.to_bytes(),
            &self.service,
        )
    }
}

#[async_trait]
impl Probe for GrpcProber {
    async fn probe(&self, timeout: Duration) -> ProbeRecord {
        timed(timeout, self.run(timeout)).await
    }
}

/// The few bytes of gRPC and protobuf the health check needs (`grpc/health/v1/health.proto`).
mod grpc {
    use bytes::{BufMut, Bytes, BytesMut};

    /// The method's path.
    pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

    /// A length-prefixed, uncompressed `HealthCheckRequest { service = 1 }`.
    pub fn check_request(service: &str) -> Bytes {
        let mut msg = BytesMut::new();
        if !service.is_empty() {
            msg.put_u8(0x0a); // field 1, length-delimited
            put_varint(&mut msg, service.len() as u64);
            msg.put_slice(service.as_bytes());
        }
        let mut framed = BytesMut::with_capacity(5 + msg.len());
        framed.put_u8(0);
        framed.put_u32(msg.len() as u32);
        framed.put_slice(&msg);
        framed.freeze()
    }

    fn put_varint(out: &mut BytesMut, mut v: u64) {
        while v >= 0x80 {
            out.put_u8((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.put_u8(v as u8);
    }

    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// `HealthCheckResponse.status` (field 1) of one length-prefixed message; unknown fields
    /// are skipped, an absent status is `UNKNOWN` (0), as proto3 says.
    pub fn response_status(body: &[u8]) -> Result<u64, String> {
        let [flag, a, b, c, d, msg @ ..] = body else {
            return Err(format!("response of {} bytes, no message", body.len()));
        };
        if *flag != 0 {
            return Err("compressed response (none was offered)".into());
        }
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        let mut msg = msg.get(..len).ok_or("response message cut short")?;
        let mut status = 0;
        while !msg.is_empty() {
            let key = varint(&mut msg).ok_or("malformed response message")?;
            match key & 7 {
                0 => {
                    let v = varint(&mut msg).ok_or("malformed response message")?;
                    if key >> 3 == 1 {
                        status = v;
                    }
                }
                1 | 5 => {
                    let n = if key & 7 == 1 { 8 } else { 4 };
                    msg = msg.get(n..).ok_or("malformed response message")?;
                }
                2 => {
                    let n = varint(&mut msg).ok_or("malformed response message")? as usize;
                    msg = msg.get(n..).ok_or("malformed response message")?;
                }
                _ => return Err("malformed response message".into()),
            }
        }
        Ok(status)
    }

    /// The probe's outcome from the call's `grpc-status`, `grpc-message` and body.
    pub fn verdict(
        grpc_status: Option<&str>,
        grpc_message: Option<&str>,
        body: &[u8],
        service: &str,
    ) -> Result<String, String> {
        let of = if service.is_empty() {
            String::new()
        } else {
            format!("service `{service}`: ")
        };
        let message = grpc_message
            .filter(|m| !m.is_empty())
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        match grpc_status.map(str::trim) {
            None => return Err("no grpc-status (not a gRPC server?)".into()),
            Some("0") => {}
            Some("5") => {
                return Err(format!(
                    "{of}unknown to the server (grpc-status 5 NOT_FOUND){message}"
                ))
            }
            Some("12") => {
                return Err(format!(
                    "no grpc.health.v1.Health service (grpc-status 12 UNIMPLEMENTED){message}"
                ))
            }
            Some(code) => return Err(format!("grpc-status {code} {}{message}", code_name(code))),
        }
        match response_status(body)? {
            1 => Ok(format!("{of}SERVING")),
            2 => Err(format!("{of}NOT_SERVING")),
            3 => Err(format!("{of}SERVICE_UNKNOWN")),
            0 => Err(format!("{of}UNKNOWN")),
            n => Err(format!("{of}status {n}")),
        }
    }

    fn code_name(code: &str) -> &'static str {
        const NAMES: [&str; 17] = [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ];
        code.parse::<usize>()
            .ok()
            .and_then(|c| NAMES.get(c).copied())
            .unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_health_check_messages_are_encoded_and_read() {
        // protoc --encode of HealthCheckRequest{service: "api"}: 0a 03 61 70 69.
        assert_eq!(
            &grpc::check_request("api")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'p', b'i']
        );
        assert_eq!(&grpc::check_request("")[..], &[0, 0, 0, 0, 0]);
        let serving = [0, 0, 0, 0, 2, 0x08, 1];
        assert_eq!(grpc::response_status(&serving), Ok(1));
        // An empty message is status UNKNOWN; unknown fields are skipped.
        assert_eq!(grpc::response_status(&[0, 0, 0, 0, 0]), Ok(0));
        let extra = [0, 0, 0, 0, 6, 0x12, 2, b'h', b'i', 0x08, 2];
        assert_eq!(grpc::response_status(&extra), Ok(2));
        assert!(grpc::response_status(&[0, 0, 0, 0, 9, 0x08]).is_err());
        assert!(grpc::response_status(&[1, 0, 0, 0, 2, 0x08, 1]).is_err());

        assert_eq!(
            grpc::verdict(Some("0"), None, &serving, ""),
            Ok("SERVING".into())
        );
        assert_eq!(
            grpc::verdict(Some("0"), None, &[0, 0, 0, 0, 2, 0x08, 2], "api"),
            Err("service `api`: NOT_SERVING".into())
        );
        assert_eq!(
            grpc::verdict(Some("5"), Some("unknown service"), &[], "api"),
            Err(
                "service `api`: unknown to the server (grpc-status 5 NOT_FOUND) (unknown service)"
                    .into()
            )
        );
        assert_eq!(
            grpc::verdict(Some("14"), None, &[], ""),
            Err("grpc-status 14 UNAVAILABLE".into())
        );
        assert!(grpc::verdict(None, None, &serving, "").is_err());
    }

    #[test]
    fn default_trust_anchors_are_loaded_once_and_shared() {
        let first = default_roots();
        assert!(!first.is_empty(), "neither system nor bundled roots");
        let second = default_roots();
        assert!(
            Arc::ptr_eq(&first, &second),
            "roots loaded again within a minute"
        );
    }

    #[test]
    fn probers_with_the_same_tls_settings_share_one_client() {
        let plain = ProbeTls::default();
        let other = ProbeTls {
            sni: Some("probe.test".into()),
            ..ProbeTls::default()
        };
        let a = shared_client(&plain).expect("client");
        let b = shared_client(&plain).expect("client");
        let c = shared_client(&other).expect("client");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        // Once no prober holds it, a new one is built.
        let weak = Arc::downgrade(&c);
        drop(c);
        assert!(weak.upgrade().is_none());
    }
}
