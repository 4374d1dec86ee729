//! Real gRPC servers and clients on loopback.
//!
//! - [`GrpcHealth`], for probe tests: tonic's `grpc.health.v1.Health` service (`tonic-health`,
//!   as gRPC servers in Rust ship it) over h2c or TLS. The overall service `""` starts
//!   `SERVING`; [`GrpcHealth::set`] changes any service's status, and a service never set is
//!   unknown to it (`NOT_FOUND`).
//! - [`GrpcEcho`], for traffic through the gateway: a `test.Echo` service served by tonic's
//!   gRPC machinery (prost messages, tonic's codec and its default 4 MiB message limit), with
//!   `Unary` (echo, or a reply of a size asked for, after a delay asked for) and `Upload` (a
//!   client stream, summed up). It records each call's `grpc-timeout` and every handler
//!   dropped before it answered (the caller cancelled). It does not enforce `grpc-timeout`
//!   itself (tonic's `Server` would), so a test can tell whose deadline ended a call.
//! - [`EchoClient`]: tonic's client (`tonic::client::Grpc` over a `Channel`, h2c or TLS) for
//!   that service, at the library's default limits.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// A running gRPC health server; stops when dropped.
pub struct GrpcHealth {
    /// Where it listens.
    pub addr: SocketAddr,
    reporter: HealthReporter,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcHealth {
    /// Serves h2c (plaintext HTTP/2), or TLS with the certificate and key given (PEM).
    pub async fn start(tls: Option<(&str, &str)>) -> Self {
        Self::start_requiring(tls, None).await
    }

    /// As [`GrpcHealth::start`]; with `token`, a call without `authorization: Bearer <token>`
    /// metadata is refused with `UNAUTHENTICATED`, as an authenticating interceptor does.
    pub async fn start_requiring(tls: Option<(&str, &str)>, token: Option<&str>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (reporter, service) = tonic_health::server::health_reporter();
        let mut server = Server::builder();
        if let Some((cert, key)) = tls {
            server = server
                .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
                .expect("tls config");
        }
        let expected = token.map(|t| format!("Bearer {t}"));
        let service = tonic::service::interceptor::InterceptedService::new(
            service,
            move |req: tonic::Request<()>| match &expected {
                Some(want)
                    if req
                        .metadata()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        != Some(want.as_str()) =>
                {
                    Err(tonic::Status::unauthenticated(
                        "bad or missing bearer token",
                    ))
                }
                _ => Ok(req),
            },
        );
        let router = server.add_service(service);
        let task = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        Self {
            addr,
            reporter,
            task,
        }
    }

    /// Sets the status of `service` (`""`: the server as a whole).
    pub async fn set(&self, service: &str, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status(service, status).await;
    }
}

impl Drop for GrpcHealth {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A message of `test.Echo`: `data` carried; `reply_bytes` asks `Unary` for a reply of that
/// many data bytes (0: `data` echoed); `delay_ms` makes it wait that long first.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// The bytes carried.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    /// Reply size asked for.
    #[prost(uint64, tag = "2")]
    pub reply_bytes: u64,
    /// Delay asked for, in milliseconds.
    #[prost(uint64, tag = "3")]
    pub delay_ms: u64,
}

impl Payload {
    /// A payload whose encoding (the gRPC message, without its 5-byte prefix) is exactly
    /// `size` bytes (at least 2).
    pub fn sized(size: usize) -> Self {
        // One tag byte, the length as a varint, the bytes.
        let data_len = (1..=5)
            .map(|varint| size - 1 - varint)
            .find(|len| 1 + prost::encoding::encoded_len_varint(*len as u64) + len == size)
            .expect("a size a varint can reach");
        let payload = Self {
            data: vec![0x5a; data_len],
            ..Self::default()
        };
        assert_eq!(prost::Message::encoded_len(&payload), size);
        payload
    }
}

/// What `Upload` answers: the messages and data bytes it received.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// Messages received.
    #[prost(uint64, tag = "1")]
    pub messages: u64,
    /// Data bytes received.
    #[prost(uint64, tag = "2")]
    pub bytes: u64,
}

/// What a [`GrpcEcho`] saw.
#[derive(Default)]
pub struct EchoSeen {
    /// The `grpc-timeout` of each call, in arrival order (`None`: not sent).
    pub timeouts: std::sync::Mutex<Vec<Option<String>>>,
    /// Calls whose handler was dropped before it answered (the caller cancelled).
    pub cancelled: std::sync::atomic::AtomicU64,
    /// Calls answered.
    pub answered: std::sync::atomic::AtomicU64,
}

/// A running `test.Echo` server; stops when dropped.
pub struct GrpcEcho {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub seen: std::sync::Arc<EchoSeen>,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcEcho {
    /// Serves h2c, or TLS (ALPN `h2`) with the certificate and key given (PEM).
    pub async fn start(tls: Option<(&str, &str)>) -> Self {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let acceptor = tls.map(|(cert, key)| {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .expect("server cert");
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("server key");
            let mut config = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("server config");
            config.alpn_protocols = vec![b"h2".to_vec()];
            tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = std::sync::Arc::new(EchoSeen::default());
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let service = echo::EchoService(shared.clone());
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                echo::serve(tls, service).await;
                            }
                        }
                        None => echo::serve(tcp, service).await,
                    }
                });
            }
        });
        Self { addr, seen, task }
    }

    /// The `grpc-timeout` values seen so far.
    pub fn timeouts(&self) -> Vec<Option<String>> {
        self.seen.timeouts.lock().expect("lock").clone()
    }

    /// Calls cancelled by their caller so far.
    pub fn cancelled(&self) -> u64 {
        self.seen
            .cancelled
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Calls answered so far.
    pub fn answered(&self) -> u64 {
        self.seen.answered.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for GrpcEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The service behind [`GrpcEcho`], written as tonic's code generator writes a server (no
/// `protoc` needed).
mod echo {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tonic::codegen::{http, BoxFuture, Service};
    use tonic::{Request, Response, Status, Streaming};

    use super::{EchoSeen, Payload, Summary};

    /// Serves one connection over HTTP/2 (hyper), without tonic's `Server` and so without its
    /// `grpc-timeout` enforcement.
    pub(super) async fn serve<IO>(io: IO, service: EchoService)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = hyper_util::service::TowerToHyperService::new(service);
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), service)
            .await;
    }

    #[derive(Clone)]
    pub(super) struct EchoService(pub(super) Arc<EchoSeen>);

    /// Counts the call cancelled unless it answered.
    struct Answering<'a>(&'a EchoSeen, bool);

    impl Drop for Answering<'_> {
        fn drop(&mut self) {
            if self.1 {
                self.0.answered.fetch_add(1, Ordering::SeqCst);
            } else {
                self.0.cancelled.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    struct UnarySvc(Arc<EchoSeen>);

    impl tonic::server::UnaryService<Payload> for UnarySvc {
        type Response = Payload;
        type Future = BoxFuture<Response<Payload>, Status>;

        fn call(&mut self, request: Request<Payload>) -> Self::Future {
            let seen = self.0.clone();
            Box::pin(async move {
                let mut answering = Answering(&seen, false);
                let asked = request.into_inner();
                tokio::time::sleep(Duration::from_millis(asked.delay_ms)).await;
                let data = match asked.reply_bytes {
                    0 => asked.data,
                    n => vec![0xa5; n as usize],
                };
                answering.1 = true;
                Ok(Response::new(Payload {
                    data,
                    ..Payload::default()
                }))
            })
        }
    }

    struct UploadSvc(Arc<EchoSeen>);

    impl tonic::server::ClientStreamingService<Payload> for UploadSvc {
        type Response = Summary;
        type Future = BoxFuture<Response<Summary>, Status>;

        fn call(&mut self, request: Request<Streaming<Payload>>) -> Self::Future {
            let seen = self.0.clone();
            Box::pin(async move {
                let mut answering = Answering(&seen, false);
                let mut stream = request.into_inner();
                let mut summary = Summary::default();
                while let Some(message) = stream.message().await? {
                    summary.messages += 1;
                    summary.bytes += message.data.len() as u64;
                }
                answering.1 = true;
                Ok(Response::new(summary))
            })
        }
    }

    impl<B> Service<http::Request<B>> for EchoService
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<tonic::codegen::StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<B>) -> Self::Future {
            let timeout = req
                .headers()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            self.0.timeouts.lock().expect("lock").push(timeout);
            let seen = self.0.clone();
            let path = req.uri().path().to_string();
            Box::pin(async move {
                let codec = tonic_prost::ProstCodec::<Summary, Payload>::default();
                Ok(match path.as_str() {
                    "/test.Echo/Unary" => {
                        let codec = tonic_prost::ProstCodec::<Payload, Payload>::default();
                        let mut grpc = tonic::server::Grpc::new(codec);
                        grpc.unary(UnarySvc(seen), req).await
                    }
                    "/test.Echo/Upload" => {
                        let mut grpc = tonic::server::Grpc::new(codec);
                        grpc.client_streaming(UploadSvc(seen), req).await
                    }
                    _ => Status::unimplemented(path).into_http(),
                })
            })
        }
    }
}

/// A `test.Echo` client (tonic, at its default limits) over one HTTP/2 connection: over
/// tonic's `Channel` ([`EchoClient::h2c`], [`EchoClient::tls`]), which ends a call itself when
/// its `grpc-timeout` passes, or over a bare hyper client ([`EchoClient::h2c_bare`]), which
/// leaves that to the other side, so a test sees who answered.
pub struct EchoClient<T = tonic::transport::Channel>(tonic::client::Grpc<T>);

/// The bare transport of [`EchoClient::h2c_bare`].
pub type Bare = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    tonic::body::Body,
>;

impl EchoClient {
    /// Connects over h2c to `addr`.
    pub async fn h2c(addr: SocketAddr) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        Self(tonic::client::Grpc::new(channel))
    }

    /// Connects over TLS to `addr`, trusting `ca_pem` and asking for `name` (SNI, and the
    /// name the certificate must carry).
    pub async fn tls(addr: SocketAddr, ca_pem: &str, name: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
            .domain_name(name);
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls config")
            .connect()
            .await
            .expect("connect");
        Self(tonic::client::Grpc::new(channel))
    }
}

impl EchoClient<Bare> {
    /// h2c to `addr` over hyper's client: tonic's call machinery without its `Channel`.
    pub fn h2c_bare(addr: SocketAddr) -> Self {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http();
        let origin = format!("http://{addr}").parse().expect("origin");
        Self(tonic::client::Grpc::with_origin(client, origin))
    }
}

impl<T> EchoClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    /// Calls `Unary` (or `path`, another method of the same shape) with `payload`, with a
    /// `grpc-timeout` of `timeout` when given.
    pub async fn unary_at(
        &mut self,
        path: &'static str,
        payload: Payload,
        timeout: Option<std::time::Duration>,
    ) -> Result<Payload, tonic::Status> {
        let mut request = tonic::Request::new(payload);
        if let Some(t) = timeout {
            request.set_timeout(t);
        }
        self.0
            .ready()
            .await
            .map_err(|e| tonic::Status::unknown(e.into().to_string()))?;
        let codec = tonic_prost::ProstCodec::<Payload, Payload>::default();
        let path = http::uri::PathAndQuery::from_static(path);
        self.0
            .unary(request, path, codec)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Calls `Unary` with `payload`.
    pub async fn unary(&mut self, payload: Payload) -> Result<Payload, tonic::Status> {
        self.unary_at("/test.Echo/Unary", payload, None).await
    }

    /// Streams `messages` payloads of `size` data bytes each to `Upload`.
    pub async fn upload(&mut self, messages: usize, size: usize) -> Result<Summary, tonic::Status> {
        self.0
            .ready()
            .await
            .map_err(|e| tonic::Status::unknown(e.into().to_string()))?;
        let stream = futures_util::stream::iter((0..messages).map(move |_| Payload {
            data: vec![0x3c; size],
            ..Payload::default()
        }));
        let codec = tonic_prost::ProstCodec::<Payload, Summary>::default();
        let path = http::uri::PathAndQuery::from_static("/test.Echo/Upload");
        self.0
            .client_streaming(tonic::Request::new(stream), path, codec)
            .await
            .map(tonic::Response::into_inner)
    }
}
