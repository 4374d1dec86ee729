//! Probes: one check of one target, behind a trait so schedulers and tests share them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use gateway_config::{HttpProbe, ProbeTls, RegionCheck};
use http_body_util::{BodyExt, Empty};
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

/// The client for probes with these TLS settings, shared by every prober that has them: one
/// connection pool (a connection per endpoint, kept between probes) and one TLS config for a
/// whole fleet, instead of one each. A region of 1000 endpoints probed every second cost
/// 10 % of a core with a client per endpoint (cold caches on every probe), 6 % with shared
/// trust anchors, and less with one client.
fn shared_client(tls: &ProbeTls) -> Result<Arc<HttpsClient>, String> {
    type Clients = std::collections::HashMap<ProbeTls, std::sync::Weak<HttpsClient>>;
    static CLIENTS: std::sync::Mutex<Option<Clients>> = std::sync::Mutex::new(None);
    let mut clients = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    let clients = clients.get_or_insert_with(Clients::new);
    if let Some(client) = clients.get(tls).and_then(std::sync::Weak::upgrade) {
        return Ok(client);
    }
    // Settings no prober uses any more are forgotten here (their clients are gone).
    clients.retain(|_, c| c.strong_count() > 0);
    let client = Arc::new(client(tls)?);
    clients.insert(tls.clone(), Arc::downgrade(&client));
    Ok(client)
}

/// Builds the HTTP(S) client of one probe from its TLS settings: the system roots (native,
/// else webpki) unless `tls.ca` names the CAs to trust, an optional client certificate, an
/// optional fixed server name, or no certificate verification at all.
fn client(tls: &ProbeTls) -> Result<HttpsClient, String> {
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
    let connector = match &tls.sni {
        Some(name) => {
            let name = ServerName::try_from(name.clone())
                .map_err(|e| format!("tls setup: server name `{name}`: {e}"))?;
            connector.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => connector,
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        // Per endpoint: the client is shared by all probes with the same TLS settings.
        .pool_max_idle_per_host(1)
        .build(connector.enable_http1().build()))
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
            // Read at every probe: a rotated token (rewritten, or a swapped symlink as with a
            // projected service-account token) is used from the next probe on.
            let token = std::fs::read_to_string(file)
                .map_err(|e| format!("bearer token file {}: {e}", file.display()))?;
            let value = http::HeaderValue::try_from(format!("Bearer {}", token.trim()))
                .map_err(|_| format!("bearer token file {}: not a header value", file.display()))?;
            req = req.header(http::header::AUTHORIZATION, value);
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

#[cfg(test)]
mod tests {
    use super::*;

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
