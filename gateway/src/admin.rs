//! Admin API (its own listener, loopback by default): liveness, readiness and status.
//!
//! `GET /healthz` answers while the process runs. `GET /readyz` answers 200 once every client
//! listener accepts connections, 503 before. `GET /status` gives the active config as JSON.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::server::GatewayState;
use crate::snapshot::RoutingSnapshot;

/// The admin API server.
pub struct AdminService {
    bind: SocketAddr,
    state: Arc<AdminState>,
}

struct AdminState {
    gateway: GatewayState,
    /// Listeners accepted connections once; never reset.
    listening: AtomicBool,
}

impl AdminService {
    /// An admin API on `bind` over the gateway's state.
    pub fn new(bind: SocketAddr, gateway: GatewayState) -> Self {
        Self {
            bind,
            state: Arc::new(AdminState {
                gateway,
                listening: AtomicBool::new(false),
            }),
        }
    }
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let listener = match tokio::net::TcpListener::bind(self.bind).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(bind = %self.bind, error = %e, "admin API cannot listen");
                return;
            }
        };
        tracing::info!(bind = %self.bind, "admin API listening");
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let state = self.state.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(handle(&state, req).await) }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        }
    }
}

async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/healthz") => text(StatusCode::OK, "ok\n"),
        ("GET", "/readyz") => {
            if is_ready(state).await {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        ("GET", "/status") => {
            let ready =
                state.listening.load(Ordering::Relaxed) && state.gateway.monitor.first_round_done();
            let body = status_json(&state.gateway.snapshot.load(), ready);
            let mut resp = text(StatusCode::OK, &format!("{body:#}\n"));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            resp
        }
        (_, "/healthz" | "/readyz" | "/status") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Ready once the first probe round is done and every client listener accepts connections.
async fn is_ready(state: &AdminState) -> bool {
    if !state.gateway.monitor.first_round_done() {
        return false;
    }
    if state.listening.load(Ordering::Relaxed) {
        return true;
    }
    let snapshot = state.gateway.snapshot.load_full();
    for listener in &snapshot.config.listeners {
        let target = connectable(listener.bind);
        let connect = tokio::net::TcpStream::connect(target);
        match tokio::time::timeout(Duration::from_secs(1), connect).await {
            Ok(Ok(_)) => {}
            _ => return false,
        }
    }
    state.listening.store(true, Ordering::Relaxed);
    true
}

/// The address to dial to reach a listener bound to `bind` (unspecified → loopback).
fn connectable(bind: SocketAddr) -> SocketAddr {
    match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), bind.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), bind.port())
        }
        _ => bind,
    }
}

fn status_json(s: &RoutingSnapshot, ready: bool) -> serde_json::Value {
    use serde_json::json;
    let millis = |d: std::time::Duration| d.as_millis() as u64;
    let unix_ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(millis)
            .unwrap_or(0)
    };
    json!({
        "ready": ready,
        "config": { "file": s.config.source.display().to_string(), "hash": s.config.hash },
        "listeners": s.config.listeners.iter().map(|l| json!({
            "name": l.name, "bind": l.bind.to_string(), "tls": l.tls.is_some(),
        })).collect::<Vec<_>>(),
        "regions": s.regions.iter().map(|r| {
            let members = r.health.members();
            let (healthy, needed) = r.health.healthy_count();
            json!({
                "name": r.name.as_str(),
                "up": r.health.is_up(),
                "up_for_ms": r.health.up_for(&s.hub).map(millis),
                "healthy_endpoints": healthy,
                "min_healthy": needed,
                "endpoints": members.endpoints.iter().map(|e| {
                    let st = e.status();
                    json!({
                        "id": st.key.id.as_str(),
                        "address": st.key.addr.to_string(),
                        "health": format!("{:?}", st.health).to_lowercase(),
                        "ejected_for_ms": st.ejected_for.map(millis),
                        "last_probe": st.last_probe.map(|p| json!({
                            "ok": p.ok, "at_unix_ms": unix_ms(p.at), "duration_ms": millis(p.duration), "detail": p.detail,
                        })),
                    })
                }).collect::<Vec<_>>(),
                "checks": members.checks.iter().map(|c| {
                    let (health, last) = c.status();
                    json!({
                        "name": c.name, "required": c.required, "passing": c.is_passing(),
                        "health": format!("{health:?}").to_lowercase(),
                        "last_probe": last.map(|p| json!({"ok": p.ok, "detail": p.detail, "duration_ms": millis(p.duration)})),
                    })
                }).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
        "routes": s.routes.iter().map(|p| {
            let active = s.current_tier(p);
            json!({
                "name": &*p.route.name,
                "host": p.route.host.to_string(),
                "path_prefix": p.route.path_prefix,
                "tiers": p.route.tiers.iter().map(|t| t.regions.iter().map(|(n, w)| json!({"region": n.as_str(), "weight": w.get()})).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "allowed_regions": p.route.allowed_regions.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "active_tier": active,
                "active_regions": active.map(|t| p.tier_health[t].iter().filter(|r| r.is_up()).map(|r| r.name.to_string()).collect::<Vec<_>>()),
            })
        }).collect::<Vec<_>>(),
        "failover_events": s.book.recent().iter().rev().map(|e| json!({
            "at_unix_ms": unix_ms(e.at),
            "route": &*e.route,
            "kind": e.kind,
            "from": e.from,
            "to": e.to,
            "cause": e.cause,
            "elapsed_ms": e.elapsed.map(millis),
        })).collect::<Vec<_>>(),
    })
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp
}
