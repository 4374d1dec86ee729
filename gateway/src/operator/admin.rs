//! Admin API (its own listener, loopback by default).
//!
//! - `GET /healthz`: liveness.
//! - `GET /readyz`: 200 once the first probe round is done and every client listener accepts
//!   connections; 503 before that, while drained and while shutting down.
//! - `GET /status`: JSON: config version and hash, last reload, regions, endpoints with probe
//!   results, each route's active region, drains, recent failover events.
//! - `GET /metrics`: Prometheus text.
//! - `GET /`: the status page for people: one self-contained HTML file (no external assets)
//!   whose script polls `/status` every second and redraws in place; browsers log in with HTTP
//!   Basic auth (any user name, the token as password).
//! - `POST /regions/{name}/drain?for=30m`, `POST /regions/{name}/undrain`, `POST /reload`.
//! - `POST /drain`, `POST /undrain`: the whole gateway. Readiness turns false (so BGP
//!   withdraws the anycast route and load balancers stop sending) while requests that still
//!   arrive are served; a Kubernetes `preStop` (`gateway drain`) uses it before SIGTERM.
//!
//! When the config has an admin token, every endpoint but `/healthz` and `/readyz` needs
//! `Authorization: Bearer <token>` (a token is required when the admin API is not on loopback).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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

use crate::control::app::App;

// Log lines keep the target this module had before the folders: operators filter on it.
const LOG_TARGET: &str = "gateway::admin";

/// The admin API server.
pub struct AdminService {
    bind: SocketAddr,
    state: Arc<AdminState>,
}

struct AdminState {
    gateway: App,
    traffic: std::sync::Mutex<TrafficHistory>,
}

/// How often region traffic is sampled for the status page's rates, and how many samples are
/// kept (five minutes).
const TRAFFIC_EVERY: Duration = Duration::from_secs(2);
const TRAFFIC_SAMPLES: usize = 151;

/// Each region's `(answered, 5xx)` totals every [`TRAFFIC_EVERY`], newest last, by region name
/// (so a reload that keeps a region keeps its history).
#[derive(Default)]
struct TrafficHistory(std::collections::HashMap<String, std::collections::VecDeque<(u64, u64)>>);

impl TrafficHistory {
    fn sample(&mut self, regions: &[crate::routing::snapshot::RegionTarget]) {
        self.0
            .retain(|name, _| regions.iter().any(|r| r.name.as_str() == name));
        for region in regions {
            let samples = self.0.entry(region.name.to_string()).or_default();
            if samples.len() == TRAFFIC_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(region.health.traffic.totals());
        }
    }

    /// Requests and 5xx per second in each sampled interval, oldest first.
    fn rates(&self, region: &str) -> (Vec<f64>, Vec<f64>) {
        let per_s = |a: u64, b: u64| b.saturating_sub(a) as f64 / TRAFFIC_EVERY.as_secs_f64();
        let Some(samples) = self.0.get(region) else {
            return (Vec::new(), Vec::new());
        };
        let pairs = samples.iter().zip(samples.iter().skip(1));
        pairs
            .map(|(a, b)| (per_s(a.0, b.0), per_s(a.1, b.1)))
            .unzip()
    }
}

impl AdminService {
    /// An admin API on `bind` over the gateway's state.
    pub fn new(bind: SocketAddr, gateway: App) -> Self {
        Self {
            bind,
            state: Arc::new(AdminState {
                gateway,
                traffic: Default::default(),
            }),
        }
    }
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // During a binary upgrade the old process keeps the admin port for its grace period:
        // keep trying until it is free.
        let mut logged = false;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.bind).await {
                Ok(l) => break l,
                Err(e) => {
                    if !logged {
                        tracing::warn!(target: LOG_TARGET, bind = %self.bind, error = %e, "admin API cannot listen yet; retrying");
                        logged = true;
                    }
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                    }
                }
            }
        };
        tracing::info!(target: LOG_TARGET, bind = %self.bind, "admin API listening");
        let sampler = {
            let state = self.state.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(TRAFFIC_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let snapshot = state.gateway.snapshot.load_full();
                    lock(&state.traffic).sample(&snapshot.regions);
                }
            })
        };
        let _stop_sampler = AbortOnDrop(sampler);
        // After shutdown starts, keep answering (readiness false) for the grace period so that
        // health checkers see the drain instead of a closed port.
        let mut stop_at: Option<tokio::time::Instant> = None;
        loop {
            let stop = async {
                match stop_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed(), if stop_at.is_none() => {
                    stop_at = Some(tokio::time::Instant::now() + self.state.gateway.grace_period);
                }
                _ = stop => return,
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

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The status page (`GET /`).
const STATUS_PAGE: &str = include_str!("status_page.html");

async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if !matches!(path.as_str(), "/healthz" | "/readyz") && !authorized(state, &req) {
        // The page asks a browser for the token (as the Basic password); API clients are told
        // to send it as a bearer token.
        let (challenge, message) = if path == "/" {
            (
                "Basic realm=\"gateway admin\", charset=\"UTF-8\"",
                "missing or wrong admin token: enter it as the password (any user name)\n",
            )
        } else {
            ("Bearer", "missing or wrong bearer token\n")
        };
        let mut resp = text(StatusCode::UNAUTHORIZED, message);
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(challenge),
        );
        return resp;
    }
    match (method.as_str(), path.as_str()) {
        ("GET", "/healthz") => text(StatusCode::OK, "ok\n"),
        ("GET", "/readyz") => match not_ready(state).await {
            None => text(StatusCode::OK, "ready\n"),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{why}\n")),
        },
        ("GET", "/status") => {
            let ready = not_ready(state).await.is_none();
            let body = status_json(state, ready);
            json_response(StatusCode::OK, &body)
        }
        ("GET", "/metrics") => {
            let snapshot = state.gateway.snapshot.load();
            crate::telemetry::metrics::export_health(
                snapshot.regions.iter().map(|r| r.health.as_ref()),
            );
            let mut resp = text(StatusCode::OK, &state.gateway.metrics.render());
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        ("GET", "/") => {
            let mut resp = text(StatusCode::OK, STATUS_PAGE);
            let headers = resp.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            // Everything is inline: nothing else may load or run.
            headers.insert(
                http::header::CONTENT_SECURITY_POLICY,
                http::HeaderValue::from_static("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:"),
            );
            headers.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            resp
        }
        ("POST", "/reload") => match state.gateway.reloader.reload("admin") {
            Ok(diff) => json_response(
                StatusCode::OK,
                &serde_json::json!({"result": if diff.is_empty() { "unchanged" } else { "ok" }, "changes": diff.summary()}),
            ),
            Err(e) => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({"result": "error", "error": e.to_string()}),
            ),
        },
        ("POST", "/drain" | "/undrain") => {
            let draining = path == "/drain";
            state.gateway.readiness.set_draining(draining);
            if draining {
                tracing::warn!(target: LOG_TARGET, "gateway drained by the admin API: readiness false, still serving");
            } else {
                tracing::info!(target: LOG_TARGET, "gateway undrained by the admin API");
            }
            json_response(StatusCode::OK, &serde_json::json!({ "draining": draining }))
        }
        ("POST", p) if p.starts_with("/regions/") => {
            region_action(state, p, req.uri().query()).await
        }
        (
            _,
            "/healthz" | "/readyz" | "/status" | "/metrics" | "/" | "/reload" | "/drain"
            | "/undrain",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn authorized(state: &AdminState, req: &Request<Incoming>) -> bool {
    let Some(token) = state.gateway.snapshot.load().config.admin.token.clone() else {
        return true;
    };
    let Some(given) = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(given_token)
    else {
        return false;
    };
    // Constant-time comparison: the token guards state changes.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The token in an `Authorization` value: `Bearer TOKEN`, or `Basic` with the token as the
/// password (what a browser sends for the status page; the user name is not checked).
fn given_token(value: &str) -> Option<String> {
    use base64::Engine as _;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.to_string());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    decoded.split_once(':').map(|(_, token)| token.to_string())
}

/// `POST /regions/{name}/drain?for=DURATION` and `POST /regions/{name}/undrain`.
async fn region_action(
    state: &AdminState,
    path: &str,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut parts = path.trim_start_matches("/regions/").splitn(2, '/');
    let (Some(name), Some(action)) = (parts.next(), parts.next()) else {
        return text(
            StatusCode::NOT_FOUND,
            "use POST /regions/{name}/drain?for=30m or /regions/{name}/undrain\n",
        );
    };
    let snapshot = state.gateway.snapshot.load_full();
    let Some(region) = snapshot.regions.iter().find(|r| r.name.as_str() == name) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": format!("no region `{name}`")}),
        );
    };
    match action {
        "drain" => {
            let param = |name: &str| {
                query.and_then(|q| {
                    q.split('&').find_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        (k == name).then(|| percent_decode(v))
                    })
                })
            };
            let text_for = param("for").unwrap_or_else(|| "30m".into());
            let text_for = text_for.as_str();
            let duration = match gateway_config::values::parse_duration(text_for) {
                Ok(d) if !d.is_zero() && d <= std::time::Duration::from_secs(7 * 24 * 3600) => d,
                _ => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &serde_json::json!({"error": format!("bad duration `{text_for}`: use e.g. for=30m (at most 7d)")}),
                    )
                }
            };
            let note = gateway_health::DrainNote {
                reason: param("reason").unwrap_or_default(),
                by: param("by").unwrap_or_default(),
            };
            if note.reason.len() > 500 || note.by.len() > 200 {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": "reason (500 bytes) or by (200 bytes) too long"}),
                );
            }
            region.health.drain(duration, note.clone());
            state.gateway.failover.settle().await;
            json_response(
                StatusCode::OK,
                &serde_json::json!({"region": name, "drained_for_ms": duration.as_millis() as u64, "reason": note.reason, "by": note.by}),
            )
        }
        "undrain" => {
            region.health.undrain();
            state.gateway.failover.settle().await;
            json_response(
                StatusCode::OK,
                &serde_json::json!({"region": name, "drained": false}),
            )
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "unknown action: use drain or undrain\n",
        ),
    }
}

/// A query value with `%XX` escapes and `+` (space) decoded; invalid escapes stay as they are,
/// and bytes that are not UTF-8 become U+FFFD.
fn percent_decode(value: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = text(status, &format!("{body:#}\n"));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Why the gateway is not ready (`shutting down`, `draining`, `not ready`), or `None` when it
/// is: the one answer both `/readyz` and `/status` give.
async fn not_ready(state: &AdminState) -> Option<&'static str> {
    let readiness = &state.gateway.readiness;
    if readiness.shutting_down() {
        Some("shutting down")
    } else if readiness.draining() {
        Some("draining")
    } else if !is_ready(state).await {
        Some("not ready")
    } else {
        None
    }
}

/// Ready once the first probe round is done and every client listener accepts connections.
async fn is_ready(state: &AdminState) -> bool {
    if !state.gateway.monitor.first_round_done() {
        return false;
    }
    if state.gateway.readiness.listening() {
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
    state.gateway.readiness.set_listening();
    true
}

/// The address to dial to reach a listener bound to `bind` (unspecified → loopback).
pub(crate) fn connectable(bind: SocketAddr) -> SocketAddr {
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

fn status_json(state: &AdminState, ready: bool) -> serde_json::Value {
    use serde_json::json;
    let gateway = &state.gateway;
    let traffic = lock(&state.traffic);
    let (s, last_reload, version) = gateway.reloader.view();
    let millis = |d: std::time::Duration| d.as_millis() as u64;
    let unix_ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(millis)
            .unwrap_or(0)
    };
    let now = tokio::time::Instant::now();
    json!({
        "ready": ready,
        "draining": gateway.readiness.draining(),
        "config": { "file": s.config.source.display().to_string(), "hash": s.config.hash, "version": version },
        "last_reload": last_reload.map(|r| json!({
            "at_unix_ms": unix_ms(r.at), "trigger": r.trigger, "result": r.result, "detail": r.detail,
            "restart_needed": r.restart_needed,
        })),
        "admission": {
            "connections": gateway.connections.open(),
            // Idle HTTP/1 connections parked without a task (vendor patch 21), among them.
            "parked": pingora::apps::parked_connections(),
            "max_connections": s.config.server.max_connections,
            "in_flight": gateway.limit.in_flight(),
            "max_in_flight": s.config.server.max_in_flight,
            "adaptive": s.config.server.adaptive_limit,
            "limit": if s.config.server.adaptive_limit {
                gateway.limit.current().min(s.config.server.max_in_flight as usize)
            } else {
                s.config.server.max_in_flight as usize
            },
        },
        "listeners": s.config.listeners.iter().map(|l| json!({
            "name": l.name, "bind": l.bind.to_string(), "tls": l.tls.is_some(),
        })).collect::<Vec<_>>(),
        "regions": s.regions.iter().map(|r| {
            let members = r.health.members();
            let (healthy, needed) = r.health.healthy_count();
            let (answered, server_errors) = r.health.traffic.totals();
            let (requests_per_s, server_errors_per_s) = traffic.rates(r.name.as_str());
            let region_traffic = json!({
                "answered_total": answered,
                "server_errors_total": server_errors,
                "interval_ms": millis(TRAFFIC_EVERY),
                "requests_per_s": requests_per_s,
                "server_errors_per_s": server_errors_per_s,
            });
            json!({
                "name": r.name.as_str(),
                "up": r.health.is_up(),
                "healthy": r.health.is_healthy(),
                "drained_for_ms": r.health.drain_remaining().map(millis),
                "drain": r.health.drain_note().map(|n| json!({"reason": n.reason, "by": n.by})),
                "up_for_ms": r.health.up_duration().map(millis),
                "healthy_endpoints": healthy,
                "capacity": r.capacity,
                "in_flight": r.health.in_flight.load(std::sync::atomic::Ordering::Relaxed),
                "min_healthy": needed,
                "traffic": region_traffic,
                "endpoints": members.endpoints.iter().map(|e| {
                    let st = e.status();
                    json!({
                        "id": st.key.id.as_str(),
                        "address": st.key.addr.to_string(),
                        "health": format!("{:?}", st.health).to_lowercase(),
                        "ejected_for_ms": st.ejected_for.map(millis),
                        "latency": json!({
                            "ttfb_ms": e.latency.estimate(now).map(|d| d.as_secs_f64() * 1000.0),
                            "samples": e.latency.samples(),
                            "in_flight": e.latency.in_flight(),
                        }),
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
            let active = p.serving_tier();
            json!({
                "name": &*p.route.name,
                "host": p.route.host.to_string(),
                "path_prefix": p.route.path_prefix,
                "tiers": p.route.tiers.iter().map(|t| t.regions.iter().map(|(n, w)| json!({"region": n.as_str(), "weight": w.get()})).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "allowed_regions": p.route.allowed_regions.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "active_tier": active,
                "on_all_down": match p.route.on_all_down {
                    gateway_config::OnAllDown::FailOpen => "fail_open",
                    gateway_config::OnAllDown::Reject => "reject",
                },
                "failing_open": active.is_none() && p.route.on_all_down == gateway_config::OnAllDown::FailOpen,
                "max_in_flight": p.route.max_in_flight,
                "in_flight": p.failover.in_flight.load(std::sync::atomic::Ordering::Relaxed),
                "active_regions": active.map(|t| p.tier_health[t].iter().filter(|r| r.is_up()).map(|r| r.name.to_string()).collect::<Vec<_>>()),
                "degraded": p.route.degraded.map(|d| json!({
                    "ttfb_slo_ms": d.ttfb.as_millis() as u64,
                    "regions": p.tier_health.iter().flatten().zip(p.degradation.iter().flatten()).map(|(h, c)| json!({
                        "region": h.name.as_str(),
                        "degraded": c.is_degraded(),
                        "ttfb_ms": c.last_ttfb().map(|t| t.as_secs_f64() * 1000.0),
                    })).collect::<Vec<_>>(),
                })),
                "early_retry": p.early.as_ref().map(|e| {
                    let (sent, refused, won) = e.state.counts();
                    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
                    json!({
                        "deadline_ms": ms(e.state.deadline(&e.settings)),
                        "ttfb_p99_ms": e.state.p99().map(ms),
                        "hedge": e.settings.hedge,
                        "sent": sent,
                        "refused": refused,
                        "won": won,
                        "refunded": e.state.refunded(),
                    })
                }),
            })
        }).collect::<Vec<_>>(),
        "failover_events": s.book.recent().iter().rev().map(|e| json!({
            "at_unix_ms": unix_ms(e.at),
            "route": &*e.route,
            "kind": e.kind.as_str(),
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

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            super::percent_decode("fire+drill%20fra%2Fber"),
            "fire drill fra/ber"
        );
        assert_eq!(super::percent_decode("100%"), "100%");
        assert_eq!(super::percent_decode("%zz%4"), "%zz%4");
        assert_eq!(super::percent_decode("%C3%A9t%C3%A9"), "été");
    }
}
