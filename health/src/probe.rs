//! Probes: one check of one target, behind a trait so schedulers and tests share them.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use gateway_config::HttpProbe;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

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
    client: HttpsClient,
    uri: http::Uri,
    method: http::Method,
    host: Option<String>,
    expect: std::collections::BTreeSet<u16>,
    body_contains: Option<String>,
}

/// Builds the shared HTTP(S) client used by probes.
fn client() -> HttpsClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let connector = match builder.with_native_roots() {
        Ok(b) => b.https_or_http().enable_http1().build(),
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build(),
    };
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1)
        .build(connector)
}

impl HttpProber {
    /// Probes `settings.path` on an endpoint address.
    pub fn endpoint(addr: SocketAddr, settings: &HttpProbe, tls: bool) -> Self {
        let scheme = if tls { "https" } else { "http" };
        let uri = format!("{scheme}://{addr}{}", settings.path)
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/"));
        Self {
            client: client(),
            uri,
            method: settings.method.clone(),
            host: settings.host.clone(),
            expect: settings.expect_status.clone(),
            body_contains: settings.body_contains.clone(),
        }
    }

    /// Probes a full URL (region checks).
    pub fn url(uri: http::Uri, expect: std::collections::BTreeSet<u16>) -> Self {
        Self {
            client: client(),
            uri,
            method: http::Method::GET,
            host: None,
            expect,
            body_contains: None,
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
        let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
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
