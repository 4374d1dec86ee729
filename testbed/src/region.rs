//! A simulated regional app: HTTP/1.1 and h2c, with fault injection switched at run time.
//!
//! One [`RegionServer`] is one endpoint; [`crate::fleet::Fleet`] groups them into regions and
//! owns the one control API (`POST /{region}/{mode}`). In-process callers switch a server with
//! [`RegionServer::set_mode`].
//!
//! Every response names the region and endpoint that answered (`x-region`, `x-endpoint` headers
//! and the JSON body). Paths:
//!
//! | path | answer |
//! |---|---|
//! | `/healthz` | `200 ok` (subject to the current [`Mode`]) |
//! | `/stream/{bytes}` | a chunked body of that many bytes |
//! | `/slow/{ms}` | waits, then echoes |
//! | `/ws` | WebSocket echo |
//! | `/grpc` | echoes the body with gRPC-style trailers (`grpc-status: 0`) |
//! | anything else | JSON echo of method, path, version, headers, body size and the peer address |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Boxed response body used by the app.
pub type AppBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// How the simulated app behaves right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Answer normally.
    Ok,
    /// Close the listener: new connections are refused. Existing connections are closed.
    Refuse,
    /// Accept connections and read requests, never answer.
    Blackhole,
    /// Answer every request (health checks included) with this status.
    Status(u16),
    /// Wait this long before answering.
    Slow(Duration),
    /// Close the connection after sending part of the response.
    Reset,
    /// Alternate between `Refuse` and `Ok`, each for this long.
    Flap(Duration),
    /// Lose this many requests in a thousand, health checks included: half of them stall (never
    /// answered, the connection held), half have their connection closed before any answer
    /// (as a reset by the network would). The others are answered normally.
    Lossy(u32),
}

impl std::str::FromStr for Mode {
    type Err = String;

    /// Parses `ok`, `refuse`, `blackhole`, `status=503`, `slow=500ms`, `reset`, `flap=300ms` or
    /// `lossy=10%` (the `%` may be left out, as in a URL path).
    /// Delays are durations as in the config (`500ms`, `2s`); a bare number is milliseconds.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            None => match s {
                "ok" => Ok(Self::Ok),
                "refuse" => Ok(Self::Refuse),
                "blackhole" => Ok(Self::Blackhole),
                "reset" => Ok(Self::Reset),
                _ => Err(format!("unknown mode `{s}`")),
            },
            Some(("status", code)) => code
                .parse::<u16>()
                .ok()
                .filter(|c| (100..600).contains(c))
                .map(Self::Status)
                .ok_or_else(|| format!("bad status `{code}`")),
            Some(("slow", delay)) => mode_delay(delay)
                .map(Self::Slow)
                .map_err(|e| format!("bad delay `{delay}` ({e}; e.g. `slow=500ms`)")),
            Some(("flap", period)) => mode_delay(period)
                .and_then(|d| {
                    if d.is_zero() {
                        Err("must be above zero".to_string())
                    } else {
                        Ok(d)
                    }
                })
                .map(Self::Flap)
                .map_err(|e| format!("bad period `{period}` ({e}; e.g. `flap=300ms`)")),
            Some(("lossy", share)) => share
                .strip_suffix('%')
                .unwrap_or(share)
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .map(|p| Self::Lossy((p * 10.0).round() as u32))
                .ok_or_else(|| format!("bad share `{share}` (e.g. `lossy=10%`)")),
            Some((other, _)) => Err(format!("unknown mode `{other}`")),
        }
    }
}

/// A mode's delay: a config duration (`500ms`, `2s`), or a bare number of milliseconds.
fn mode_delay(text: &str) -> Result<Duration, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return gateway_config::parse_duration(&format!("{text}ms"));
    }
    gateway_config::parse_duration(text)
}

impl std::fmt::Display for Mode {
    /// The form [`Mode::from_str`](std::str::FromStr) parses, as used in the control API's paths.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok => f.write_str("ok"),
            Self::Refuse => f.write_str("refuse"),
            Self::Blackhole => f.write_str("blackhole"),
            Self::Status(code) => write!(f, "status={code}"),
            Self::Slow(d) => write!(f, "slow={}ms", d.as_millis()),
            Self::Reset => f.write_str("reset"),
            Self::Flap(d) => write!(f, "flap={}ms", d.as_millis()),
            Self::Lossy(permille) => write!(f, "lossy={}%", f64::from(*permille) / 10.0),
        }
    }
}

/// Requests seen by an endpoint (health checks excluded).
#[derive(Debug, Default)]
pub struct Counters {
    /// All requests other than `/healthz`.
    pub requests: std::sync::atomic::AtomicU64,
    /// Requests with a method other than GET and HEAD.
    pub unsafe_requests: std::sync::atomic::AtomicU64,
    /// Connections accepted.
    pub connections: std::sync::atomic::AtomicU64,
}

/// Identity of a simulated endpoint.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Region name, e.g. `fra`.
    pub region: String,
    /// Endpoint id, e.g. `fra-1`.
    pub endpoint: String,
}

/// A running simulated endpoint. Dropping the handle does not stop it; call [`Self::shutdown`].
pub struct RegionServer {
    addr: SocketAddr,
    identity: Arc<Identity>,
    counters: Arc<Counters>,
    requested: std::sync::Mutex<(Mode, Option<tokio::task::JoinHandle<()>>)>,
    mode: watch::Sender<Mode>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RegionServer {
    /// Starts an endpoint on an already bound listener (use port 0 for an ephemeral port).
    pub fn start(listener: TcpListener, identity: Identity) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (mode, mode_rx) = watch::channel(Mode::Ok);
        let (stop, stop_rx) = watch::channel(false);
        let identity = Arc::new(identity);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(
            listener,
            addr,
            identity.clone(),
            counters.clone(),
            mode_rx,
            stop_rx,
        ));
        Ok(Self {
            addr,
            identity,
            counters,
            requested: std::sync::Mutex::new((Mode::Ok, None)),
            mode,
            stop,
            task,
        })
    }

    /// Binds `addr` and starts an endpoint there.
    pub async fn bind(addr: SocketAddr, identity: Identity) -> std::io::Result<Self> {
        Self::start(TcpListener::bind(addr).await?, identity)
    }

    /// The address the endpoint listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The region and endpoint id this endpoint answers as.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Switches behaviour; takes effect for new requests (and, for `Refuse`, closes the port).
    pub fn set_mode(&self, mode: Mode) {
        let mut requested = self.requested.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flapper) = requested.1.take() {
            flapper.abort();
        }
        requested.0 = mode.clone();
        match mode {
            Mode::Flap(period) => {
                let tx = self.mode.clone();
                requested.1 = Some(tokio::spawn(async move {
                    loop {
                        tx.send_replace(Mode::Refuse);
                        tokio::time::sleep(period).await;
                        tx.send_replace(Mode::Ok);
                        tokio::time::sleep(period).await;
                    }
                }));
            }
            other => {
                self.mode.send_replace(other);
            }
        }
    }

    /// The behaviour last asked for (`Flap` while flapping).
    pub fn requested_mode(&self) -> Mode {
        self.requested
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Requests received so far (health checks excluded).
    pub fn requests(&self) -> u64 {
        self.counters
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connections accepted so far (health probes included).
    pub fn connections(&self) -> u64 {
        self.counters
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Requests with a method other than GET/HEAD received so far.
    pub fn unsafe_requests(&self) -> u64 {
        self.counters
            .unsafe_requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The current behaviour.
    pub fn mode(&self) -> Mode {
        self.mode.borrow().clone()
    }

    /// Stops accepting and closes the listener.
    pub async fn shutdown(self) {
        if let Some(flapper) = self
            .requested
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .take()
        {
            flapper.abort();
        }
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    identity: Arc<Identity>,
    counters: Arc<Counters>,
    mut mode: watch::Receiver<Mode>,
    mut stop: watch::Receiver<bool>,
) {
    let mut listener = Some(listener);
    // Connections watch this to close themselves when the mode turns to `Refuse`.
    let (conn_close, _) = watch::channel(false);
    loop {
        let refusing = *mode.borrow() == Mode::Refuse;
        if refusing && listener.is_some() {
            listener = None;
            conn_close.send_replace(true);
        } else if !refusing && listener.is_none() {
            conn_close.send_replace(false);
            // Re-bind the same port; retry briefly if the kernel still holds it.
            for _ in 0..50 {
                if let Ok(l) = TcpListener::bind(addr).await {
                    listener = Some(l);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = mode.changed() => continue,
            accepted = async {
                match &listener {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            } => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                counters.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let identity = identity.clone();
                let counters = counters.clone();
                let mode = mode.clone();
                let mut close = conn_close.subscribe();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                        req.extensions_mut().insert(Peer(peer));
                        let identity = identity.clone();
                        let mode = mode.borrow().clone();
                        if req.uri().path() != "/healthz" {
                            counters.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if !matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
                                counters.unsafe_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                        async move {
                            if let Mode::Lossy(permille) = mode {
                                let draw = fastrand::u32(0..1000);
                                if draw < permille / 2 {
                                    std::future::pending::<()>().await;
                                } else if draw < permille {
                                    // An error from the service makes hyper close the
                                    // connection without an answer.
                                    return Err(std::io::Error::new(
                                        std::io::ErrorKind::ConnectionReset,
                                        "injected loss",
                                    ));
                                }
                            }
                            Ok::<_, std::io::Error>(handle(req, &identity, mode).await)
                        }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = close.wait_for(|c| *c) => {}
                    }
                });
            }
        }
    }
}

async fn handle(req: Request<Incoming>, id: &Identity, mode: Mode) -> Response<AppBody> {
    match mode {
        Mode::Ok | Mode::Refuse | Mode::Flap(_) | Mode::Lossy(_) => {}
        Mode::Blackhole => std::future::pending::<()>().await,
        Mode::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return respond(
                id,
                status,
                format!(
                    "{{\"region\":\"{}\",\"endpoint\":\"{}\",\"fault\":\"status\"}}\n",
                    id.region, id.endpoint
                ),
            );
        }
        Mode::Slow(d) => tokio::time::sleep(d).await,
        Mode::Reset => {
            // A response whose body errors: hyper aborts the connection mid-response.
            let body = StreamBody::new(futures_util::stream::iter([
                Ok(Frame::data(Bytes::from_static(b"partial"))),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected reset",
                )),
            ]));
            return with_identity(id, Response::new(BodyExt::boxed(body)));
        }
    }
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return respond(id, StatusCode::OK, "ok\n".to_string());
    }
    if path == "/ws" {
        return websocket(req, id);
    }
    if path == "/grpc" {
        return grpc(req, id).await;
    }
    if let Some(n) = path
        .strip_prefix("/stream/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        return stream_bytes(id, n);
    }
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    echo(req, id).await
}

fn with_identity(id: &Identity, mut resp: Response<AppBody>) -> Response<AppBody> {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id.region) {
        h.insert("x-region", v);
    }
    if let Ok(v) = HeaderValue::from_str(&id.endpoint) {
        h.insert("x-endpoint", v);
    }
    resp
}

fn full(body: impl Into<Bytes>) -> AppBody {
    BodyExt::boxed(Full::new(body.into()).map_err(|never: Infallible| match never {}))
}

fn respond(id: &Identity, status: StatusCode, body: String) -> Response<AppBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    with_identity(id, resp)
}

fn headers_json(headers: &HeaderMap) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let v = serde_json::Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match map.get_mut(name.as_str()) {
            Some(serde_json::Value::Array(list)) => list.push(v),
            _ => {
                map.insert(name.as_str().to_string(), serde_json::Value::Array(vec![v]));
            }
        }
    }
    serde_json::Value::Object(map)
}

async fn echo(req: Request<Incoming>, id: &Identity) -> Response<AppBody> {
    let (parts, body) = req.into_parts();
    let mut bytes = 0u64;
    let mut checksum = 0u64;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(data) = f.data_ref() {
                    bytes += data.len() as u64;
                    checksum = data.iter().fold(checksum, |acc, b| {
                        acc.wrapping_mul(31).wrapping_add(u64::from(*b))
                    });
                }
            }
            Err(_) => break,
        }
    }
    let peer = parts.extensions.get::<Peer>().map(|p| p.0.to_string());
    let doc = serde_json::json!({
        "region": id.region,
        "endpoint": id.endpoint,
        "peer": peer,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "version": format!("{:?}", parts.version),
        "headers": headers_json(&parts.headers),
        "body_bytes": bytes,
        "body_checksum": checksum,
    });
    respond(id, StatusCode::OK, format!("{doc}\n"))
}

/// The address a request's connection came from (the gateway's side of the upstream
/// connection), echoed as `peer`: it tells which gateway (which anycast PoP) proxied it.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

/// The checksum the echo endpoint reports for `data` (for tests of large bodies).
pub fn body_checksum(data: &[u8]) -> u64 {
    data.iter().fold(0u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(*b))
    })
}

fn stream_bytes(id: &Identity, n: usize) -> Response<AppBody> {
    const CHUNK: usize = 16 * 1024;
    let chunks = (0..n.div_ceil(CHUNK)).map(move |i| {
        let len = CHUNK.min(n - i * CHUNK);
        Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![b'x'; len])))
    });
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    with_identity(id, Response::new(BodyExt::boxed(body)))
}

async fn grpc(req: Request<Incoming>, id: &Identity) -> Response<AppBody> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("grpc-message", HeaderValue::from_static("ok"));
    if let Ok(v) = HeaderValue::from_str(&id.endpoint) {
        trailers.insert("x-trailer-endpoint", v);
    }
    let frames = vec![
        Ok::<_, std::io::Error>(Frame::data(body)),
        Ok(Frame::trailers(trailers)),
    ];
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
        frames,
    ))));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    with_identity(id, resp)
}

fn websocket(mut req: Request<Incoming>, id: &Identity) -> Response<AppBody> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return respond(
            id,
            StatusCode::BAD_REQUEST,
            "{\"error\":\"not a websocket request\"}\n".into(),
        );
    };
    let endpoint = id.endpoint.clone();
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        let _ = ws.send(format!("hello from {endpoint}").into()).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert("sec-websocket-accept", v);
    }
    with_identity(id, resp)
}

#[cfg(test)]
mod tests {
    use super::Mode;
    use std::time::Duration;

    #[test]
    fn modes_parse_and_print_the_same_text() {
        for text in [
            "ok",
            "refuse",
            "blackhole",
            "status=503",
            "slow=500ms",
            "reset",
            "flap=300ms",
            "lossy=10%",
            "lossy=0.5%",
        ] {
            let mode: Mode = text.parse().expect(text);
            assert_eq!(mode.to_string(), text);
        }
    }

    #[test]
    fn a_loss_share_is_a_percentage_up_to_100() {
        assert_eq!("lossy=10%".parse(), Ok(Mode::Lossy(100)));
        // Without the `%`, as in a URL path of the control API.
        assert_eq!("lossy=10".parse(), Ok(Mode::Lossy(100)));
        for bad in ["lossy=101%", "lossy=lots%", "lossy=-1"] {
            assert!(bad.parse::<Mode>().is_err(), "{bad}");
        }
    }

    #[test]
    fn delays_are_config_durations_and_a_bare_number_is_milliseconds() {
        assert_eq!("slow=2s".parse(), Ok(Mode::Slow(Duration::from_secs(2))));
        assert_eq!(
            "slow=500".parse(),
            Ok(Mode::Slow(Duration::from_millis(500)))
        );
        assert_eq!("flap=1m".parse(), Ok(Mode::Flap(Duration::from_secs(60))));
        assert!("flap=0ms".parse::<Mode>().is_err());
        assert!("slow=soon".parse::<Mode>().is_err());
        assert!("status=99".parse::<Mode>().is_err());
        assert!("melt".parse::<Mode>().is_err());
    }
}
