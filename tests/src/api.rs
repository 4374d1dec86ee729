//! An HTTPS server shaped like a Kubernetes API server's health endpoints, for region checks:
//! `GET /readyz` (also `/livez`, and `/healthz` for endpoint probes) answers `200 ok` when the request carries the expected bearer token (any
//! request when none is expected) and `401` otherwise; with a client CA it requires a client
//! certificate signed by it (the TLS handshake fails without one). Its certificate comes from a
//! [`crate::TestPki`] leaf; it records every `Authorization` header it was sent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A running API-like HTTPS server on an ephemeral loopback port; stops when dropped.
pub struct ApiServer {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<ApiState>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ApiState {
    token: Option<String>,
    seen: Vec<Option<String>>,
}

impl ApiServer {
    /// Serves with the certificate `cert_pem`/`key_pem`; requires client certificates signed
    /// by `client_ca` (DER) when given.
    pub async fn start(
        cert_pem: &str,
        key_pem: &str,
        client_ca: Option<&CertificateDer<'static>>,
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("server cert");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("server key");
        let builder = rustls::ServerConfig::builder();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.clone()).expect("client CA");
                let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(ApiState::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = shared.clone();
                tokio::spawn(async move {
                    // A failed handshake (wrong CA on the client's side, no client
                    // certificate) just ends this connection.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, &req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// From now on, `/readyz` answers 200 only to `Authorization: Bearer <token>`.
    pub fn require_token(&self, token: &str) {
        self.lock().token = Some(token.to_string());
    }

    /// Every `Authorization` header received so far, in order (`None`: request without one).
    pub fn seen(&self) -> Vec<Option<String>> {
        self.lock().seen.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ApiState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer<B>(state: &Mutex<ApiState>, req: &Request<B>) -> Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    st.seen.push(auth.clone());
    let allowed = match &st.token {
        None => true,
        Some(t) => auth.as_deref() == Some(format!("Bearer {t}").as_str()),
    };
    let (status, body) = match (req.uri().path(), allowed) {
        ("/readyz" | "/livez" | "/healthz", true) => (200, "ok"),
        ("/readyz" | "/livez" | "/healthz", false) => (401, "Unauthorized"),
        _ => (404, "not found"),
    };
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
