//! A real gRPC health server for probe tests: tonic's `grpc.health.v1.Health` service
//! (`tonic-health`, as gRPC servers in Rust ship it) on an ephemeral loopback port, over h2c or
//! TLS. The overall service `""` starts `SERVING`; [`GrpcHealth::set`] changes any service's
//! status, and a service never set is unknown to it (`NOT_FOUND`).

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
