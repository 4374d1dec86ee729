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
    client: Result<HttpsClient, String>,
    uri: http::Uri,
    method: http::Method,
    host: Option<String>,
    expect: std::collections::BTreeSet<u16>,
    body_contains: Option<String>,
    bearer_token_file: Option<PathBuf>,
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
        use hyper_rustls::ConfigBuilderExt;
        let native = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls setup: {e}"))?
            .with_native_roots();
        match native {
            Ok(b) => b,
            Err(_) => builder.with_webpki_roots(),
        }
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
        .pool_max_idle_per_host(1)
        .build(connector.enable_http1().build()))
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
            client: client(&settings.tls),
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
            client: client(&check.tls),
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
