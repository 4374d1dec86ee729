//! Real clients for the integration tests: HTTP/1.1, h2c, TLS (h2 and HTTP/1.1), WebSocket.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// Boxed request body.
pub type ReqBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A response with its body and trailers collected.
#[derive(Debug)]
pub struct Collected {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// Body bytes.
    pub body: Bytes,
    /// Trailers, if any.
    pub trailers: Option<http::HeaderMap>,
    /// HTTP version of the response.
    pub version: http::Version,
}

impl Collected {
    /// The value of the cookie `name` this response sets, if it sets one.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                v.strip_prefix(prefix.as_str())
                    .map(|rest| rest.split(';').next().unwrap_or("").to_string())
            })
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A fixed request body.
pub fn full(data: impl Into<Bytes>) -> ReqBody {
    BodyExt::boxed(Full::new(data.into()).map_err(|never| match never {}))
}

/// An empty request body.
pub fn empty() -> ReqBody {
    full(Bytes::new())
}

/// Collects a response.
pub async fn collect<B>(resp: Response<B>) -> Collected
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("read response body");
    let trailers = collected.trailers().cloned();
    Collected {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
        version: parts.version,
    }
}

/// An HTTP/1.1 connection (requests go one after another on the same connection).
pub struct H1 {
    sender: hyper::client::conn::http1::SendRequest<ReqBody>,
}

impl H1 {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("h1 handshake");
        tokio::spawn(conn.with_upgrades());
        Self { sender }
    }

    /// Sends a request and collects the response.
    pub async fn send(&mut self, req: Request<ReqBody>) -> Collected {
        self.sender.ready().await.expect("connection ready");
        let resp = self.sender.send_request(req).await.expect("send request");
        collect(resp).await
    }

    /// Connects, or `None` on failure.
    pub async fn try_connect(addr: SocketAddr) -> Option<Self> {
        let stream = TcpStream::connect(addr).await.ok()?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        Some(Self { sender })
    }

    /// Sends a request, or `None` on a transport error.
    pub async fn try_send(&mut self, req: Request<ReqBody>) -> Option<Collected> {
        self.sender.ready().await.ok()?;
        let resp = self.sender.send_request(req).await.ok()?;
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.ok()?;
        let trailers = collected.trailers().cloned();
        Some(Collected {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
            version: parts.version,
        })
    }

    /// Whether the connection is still usable.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }
}

/// An HTTP/2 connection, plaintext (h2c prior knowledge) or over TLS; a clone sends its
/// requests as further streams of the same connection.
#[derive(Clone)]
pub struct H2 {
    sender: hyper::client::conn::http2::SendRequest<ReqBody>,
}

impl H2 {
    /// h2c with prior knowledge.
    pub async fn connect_h2c(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::handshake(TokioIo::new(stream)).await
    }

    async fn handshake<T>(io: T) -> Self
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        Self { sender }
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends a request and collects the response (trailers included).
    pub async fn send(&mut self, req: Request<ReqBody>) -> Collected {
        self.sender.ready().await.expect("connection ready");
        let resp = self.sender.send_request(req).await.expect("send request");
        collect(resp).await
    }
}

/// A TLS connection's outcome: which certificate the server presented and what ALPN chose.
pub struct TlsInfo {
    /// Leaf certificate presented by the server.
    pub peer_cert: CertificateDer<'static>,
    /// Negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
}

/// Connects with TLS trusting `ca`, sending `sni` (or none when it is an IP address), offering
/// `alpn`. Returns the stream and what was negotiated.
pub async fn tls_connect(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    sni: &str,
    alpn: &[&[u8]],
) -> (tokio_rustls::client::TlsStream<TcpStream>, TlsInfo) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("add CA");
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    handshake(config, addr, sni).await
}

/// A TLS handshake that accepts any server certificate (to see which one a server presents).
pub async fn tls_connect_any(
    addr: SocketAddr,
    sni: &str,
) -> (tokio_rustls::client::TlsStream<TcpStream>, TlsInfo) {
    #[derive(Debug)]
    struct AcceptAny;
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    handshake(config, addr, sni).await
}

/// HTTP/2 over TLS.
pub async fn h2_tls(addr: SocketAddr, ca: &CertificateDer<'static>, sni: &str) -> (H2, TlsInfo) {
    let (tls, info) = tls_connect(addr, ca, sni, &[b"h2"]).await;
    (H2::handshake(TokioIo::new(tls)).await, info)
}

/// HTTP/1.1 over TLS.
pub async fn h1_tls(addr: SocketAddr, ca: &CertificateDer<'static>, sni: &str) -> (H1, TlsInfo) {
    let (tls, info) = tls_connect(addr, ca, sni, &[b"http/1.1"]).await;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    (H1 { sender }, info)
}

/// A GET request for `path` with `host`.
pub fn get(host: &str, path: &str) -> Request<ReqBody> {
    Request::get(path)
        .header(http::header::HOST, host)
        .body(empty())
        .expect("request")
}

/// `GET path` on a fresh HTTP/1.1 connection to `addr`: (status, body).
pub async fn get_status(addr: SocketAddr, path: &str) -> Result<(u16, Bytes), std::io::Error> {
    testbed::launcher::http_request(addr, "GET", path, "localhost", None).await
}

/// Connects with `config`; an IP address as `sni` sends no SNI at all.
async fn handshake(
    config: rustls::ClientConfig,
    addr: SocketAddr,
    sni: &str,
) -> (tokio_rustls::client::TlsStream<TcpStream>, TlsInfo) {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    let tls = connector
        .connect(name, stream)
        .await
        .expect("TLS handshake");
    let (_, session) = tls.get_ref();
    let info = TlsInfo {
        peer_cert: session
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .expect("peer cert"),
        alpn: session.alpn_protocol().map(|p| p.to_vec()),
    };
    (tls, info)
}
