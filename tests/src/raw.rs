//! Scripted upstreams and clients on raw sockets, for the faults a real server never makes on
//! purpose: a response cut off after its headers, a reset in the middle of a chunk, bytes past
//! `Content-Length`, an HTTP/2 stream whose connection dies between two gRPC messages.
//!
//! - [`RawUpstream`]: HTTP/1.1 on a plain TCP listener; each request (in arrival order, its
//!   body read by `Content-Length`) plays a list of [`Step`]s. Connections that send nothing (the gateway's TCP probes) are closed.
//! - [`H2Upstream`]: HTTP/2 (h2c) with the `h2` crate; each stream plays a list of [`H2Step`]s,
//!   including killing the whole TCP connection with a reset.
//! - [`read_until_closed`] and [`H2Reply`]: clients that report exactly what arrived and how the
//!   stream ended, which is what a truncation test asserts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::DEADLINE;

/// A go-ahead from the test to a scripted upstream: each [`Signal::fire`] releases one
/// [`Signal::wait`], whether the wait started before or after it.
#[derive(Clone)]
pub struct Signal(Arc<tokio::sync::Semaphore>);

impl Default for Signal {
    fn default() -> Self {
        Self::new()
    }
}

impl Signal {
    /// A signal with nothing fired yet.
    pub fn new() -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(0)))
    }

    /// Releases one waiter (now or the next to come).
    pub fn fire(&self) {
        self.0.add_permits(1);
    }

    async fn wait(&self) {
        if let Ok(permit) = self.0.acquire().await {
            permit.forget();
        }
    }
}

/// One thing a scripted upstream does while answering a request.
#[derive(Clone)]
pub enum Step {
    /// Write these bytes (and flush).
    Write(Bytes),
    /// Wait until the test signals (e.g. once the client has seen the bytes written so far, so
    /// the fault that follows cannot overtake them).
    WaitFor(Signal),
    /// Sleep (a trickling response).
    Pause(Duration),
    /// Abort the connection: `SO_LINGER` 0, then close, so the peer gets a TCP RST.
    Reset,
    /// Close the connection cleanly (FIN).
    Close,
    /// Never answer: wait until the gateway closes the connection (counted in
    /// [`RawUpstream::closed_by_peer`], so a test sees a cancelled attempt).
    StallUntilClosed,
}

/// Which steps answer the `n`-th request (0-based, counted across connections).
pub type Script = Arc<dyn Fn(usize) -> Vec<Step> + Send + Sync>;

/// Requests as they arrived: (connection number, request line).
type RequestLog = Arc<std::sync::Mutex<Vec<(usize, String)>>>;

/// An HTTP/1.1 upstream that answers each request by playing its script.
pub struct RawUpstream {
    requests: Arc<AtomicUsize>,
    /// Connections that carried at least one request and were then closed by the peer (seen
    /// as end of file or as a failed write).
    closed_by_peer: Arc<AtomicUsize>,
    log: RequestLog,
    listening: Listening,
}

impl RawUpstream {
    /// Starts on an ephemeral loopback port.
    pub async fn start(script: impl Fn(usize) -> Vec<Step> + Send + Sync + 'static) -> Self {
        let script: Script = Arc::new(script);
        let requests = Arc::new(AtomicUsize::new(0));
        let closed_by_peer = Arc::new(AtomicUsize::new(0));
        let log = RequestLog::default();
        let (r, c, l) = (requests.clone(), closed_by_peer.clone(), log.clone());
        let listening = Listening::start("bind upstream", move |stream, conn| {
            let (script, r, c, l) = (script.clone(), r.clone(), c.clone(), l.clone());
            serve_raw(stream, conn, script, r, c, l)
        })
        .await;
        Self {
            requests,
            closed_by_peer,
            log,
            listening,
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.listening.addr
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Every request so far: (connection number, request line), in arrival order.
    pub fn log(&self) -> Vec<(usize, String)> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Connections that served a request and were then closed by the gateway.
    pub fn closed_by_peer(&self) -> usize {
        self.closed_by_peer.load(Ordering::SeqCst)
    }
}

/// A loopback listener that hands every connection to a task of its own, until dropped.
struct Listening {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Listening {
    /// Binds an ephemeral loopback port (panicking with `what` if it cannot) and serves each
    /// accepted connection, numbered from 1, with `serve`.
    async fn start<F>(what: &str, serve: impl Fn(TcpStream, usize) -> F + Send + 'static) -> Self
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut conn = 0;
            while let Ok((stream, _)) = listener.accept().await {
                conn += 1;
                tokio::spawn(serve(stream, conn));
            }
        });
        Self { addr, task }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_raw(
    mut stream: TcpStream,
    conn: usize,
    script: Script,
    requests: Arc<AtomicUsize>,
    closed_by_peer: Arc<AtomicUsize>,
    log: RequestLog,
) {
    let mut buf = Vec::new();
    let mut served = false;
    loop {
        // Read one request head (the tests send no request bodies).
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    if served {
                        closed_by_peer.fetch_add(1, Ordering::SeqCst);
                    }
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head: Vec<u8> = buf.drain(..head_end).collect();
        served = true;
        let n = requests.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut log) = log.lock() {
            let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
            log.push((conn, String::from_utf8_lossy(line).into_owned()));
        }
        // Read the request body, when it has a length (the app "reads the request").
        let mut body_left = content_length(&head).saturating_sub(buf.len());
        buf.drain(..buf.len().min(content_length(&head)));
        while body_left > 0 {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    closed_by_peer.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(k) => {
                    let used = k.min(body_left);
                    body_left -= used;
                    buf.extend_from_slice(&chunk[used..k]);
                }
            }
        }
        for step in script(n) {
            match step {
                Step::Write(bytes) => {
                    if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
                        closed_by_peer.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
                Step::WaitFor(signal) => signal.wait().await,
                Step::Pause(d) => tokio::time::sleep(d).await,
                Step::Reset => {
                    let _ = stream.set_zero_linger();
                    return;
                }
                Step::Close => {
                    let _ = stream.shutdown().await;
                    return;
                }
                Step::StallUntilClosed => {
                    let mut chunk = [0u8; 4096];
                    while matches!(stream.read(&mut chunk).await, Ok(n) if n > 0) {}
                    closed_by_peer.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

/// The `Content-Length` of a request head, or 0.
fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// How a raw client connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The peer closed cleanly (read returned 0).
    Closed,
    /// The peer reset the connection.
    Reset,
    /// Nothing more arrived and the connection stayed open until the deadline.
    StillOpen,
}

/// Sends `request` on `stream`, then reads until `seen` appears in what arrived, calls `then`
/// (the test releases the upstream's fault there), and reads on until the connection ends.
/// Returns everything that arrived and how it ended. `idle` bounds the wait for more bytes
/// after `then` (a connection that stays open that long counts as [`End::StillOpen`]).
pub async fn read_until_closed<S>(
    stream: &mut S,
    request: &[u8],
    seen: &[u8],
    then: impl FnOnce(),
    idle: Duration,
) -> (Vec<u8>, End)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(request).await.expect("send request");
    let mut got = Vec::new();
    let mut then = Some(then);
    let mut chunk = [0u8; 8192];
    loop {
        if then.is_some() && find(&got, seen).is_some() {
            if let Some(f) = then.take() {
                f();
            }
        }
        let wait = if then.is_some() { DEADLINE } else { idle };
        match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
            Err(_) if then.is_some() => panic!(
                "{:?} never arrived; got {:?}",
                String::from_utf8_lossy(seen),
                String::from_utf8_lossy(&got)
            ),
            Err(_) => return (got, End::StillOpen),
            Ok(Ok(0)) => return (got, End::Closed),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => return (got, End::Reset),
        }
    }
}

/// Splits a raw HTTP/1.1 response into its head (status line and headers, lowercased) and the
/// body bytes exactly as they came on the wire (chunk framing included).
pub fn split_response(raw: &[u8]) -> (String, Vec<u8>) {
    let end = find(raw, b"\r\n\r\n").expect("a complete response head");
    (
        String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase(),
        raw[end + 4..].to_vec(),
    )
}

/// One thing an HTTP/2 upstream stream does.
#[derive(Clone)]
pub enum H2Step {
    /// Send response headers (`:status` and these headers).
    Headers(u16, Vec<(&'static str, &'static str)>),
    /// Send a DATA frame (never END_STREAM).
    Data(Bytes),
    /// Send trailers, ending the stream.
    Trailers(Vec<(&'static str, &'static str)>),
    /// Wait for the test's signal.
    WaitFor(Signal),
    /// Sleep.
    Pause(Duration),
    /// Kill the whole TCP connection with a reset (`SO_LINGER` 0): a crashed pod.
    KillConnection,
    /// Never answer: wait until the gateway resets the stream (counted in
    /// [`H2Upstream::resets`], so a test sees a cancelled attempt).
    StallUntilReset,
}

/// An h2c upstream whose streams play scripted steps; `n` counts streams across connections.
pub struct H2Upstream {
    streams: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    resets: Arc<AtomicUsize>,
    listening: Listening,
}

impl H2Upstream {
    /// Starts on an ephemeral loopback port, advertising `max_streams` concurrent streams.
    pub async fn start(
        max_streams: u32,
        script: impl Fn(usize) -> Vec<H2Step> + Send + Sync + 'static,
    ) -> Self {
        let script: Arc<dyn Fn(usize) -> Vec<H2Step> + Send + Sync> = Arc::new(script);
        let streams = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let resets = Arc::new(AtomicUsize::new(0));
        let (s, c, r) = (streams.clone(), connections.clone(), resets.clone());
        let listening = Listening::start("bind h2 upstream", move |tcp, _| {
            let (script, s, c, r) = (script.clone(), s.clone(), c.clone(), r.clone());
            serve_h2(tcp, max_streams, script, s, c, r)
        })
        .await;
        Self {
            streams,
            connections,
            resets,
            listening,
        }
    }

    /// Streams that waited in [`H2Step::StallUntilReset`] and were reset by the gateway.
    pub fn resets(&self) -> usize {
        self.resets.load(Ordering::SeqCst)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.listening.addr
    }

    /// Streams (requests) received so far.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::SeqCst)
    }

    /// HTTP/2 connections that completed the handshake (probes' bare TCP connects excluded).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve_h2(
    tcp: TcpStream,
    max_streams: u32,
    script: Arc<dyn Fn(usize) -> Vec<H2Step> + Send + Sync>,
    streams: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    resets: Arc<AtomicUsize>,
) {
    let _ = tcp.set_zero_linger();
    let Ok(mut conn) = h2::server::Builder::new()
        .max_concurrent_streams(max_streams)
        .handshake::<_, Bytes>(tcp)
        .await
    else {
        return;
    };
    connections.fetch_add(1, Ordering::SeqCst);
    let kill = Arc::new(tokio::sync::Notify::new());
    loop {
        tokio::select! {
            accepted = conn.accept() => {
                let Some(Ok((req, respond))) = accepted else { return };
                let n = streams.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(play_h2(req, respond, script(n), kill.clone(), resets.clone()));
            }
            // Dropping the connection (and with it the socket, linger 0) sends a TCP RST.
            _ = kill.notified() => return,
        }
    }
}

async fn play_h2(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    steps: Vec<H2Step>,
    kill: Arc<tokio::sync::Notify>,
    resets: Arc<AtomicUsize>,
) {
    // Read the request body to its end first (gRPC requests are small).
    let mut body = req.into_body();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let mut send: Option<h2::SendStream<Bytes>> = None;
    for step in steps {
        match step {
            H2Step::Headers(status, headers) => {
                let mut resp = http::Response::builder().status(status);
                for (k, v) in headers {
                    resp = resp.header(k, v);
                }
                match respond.send_response(resp.body(()).expect("response"), false) {
                    Ok(s) => send = Some(s),
                    Err(_) => return,
                }
            }
            H2Step::Data(bytes) => {
                if let Some(s) = send.as_mut() {
                    s.reserve_capacity(bytes.len());
                    if s.send_data(bytes, false).is_err() {
                        return;
                    }
                }
            }
            H2Step::Trailers(trailers) => {
                let mut map = http::HeaderMap::new();
                for (k, v) in trailers {
                    map.insert(
                        http::header::HeaderName::from_static(k),
                        http::HeaderValue::from_static(v),
                    );
                }
                if let Some(s) = send.as_mut() {
                    let _ = s.send_trailers(map);
                }
            }
            H2Step::WaitFor(signal) => signal.wait().await,
            H2Step::Pause(d) => tokio::time::sleep(d).await,
            H2Step::KillConnection => {
                kill.notify_one();
                return;
            }
            H2Step::StallUntilReset => {
                if std::future::poll_fn(|cx| respond.poll_reset(cx))
                    .await
                    .is_ok()
                {
                    resets.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
        }
    }
}

/// What an HTTP/2 client saw of one response.
#[derive(Debug)]
pub struct H2Reply {
    /// Response status.
    pub status: u16,
    /// Every DATA byte, in order.
    pub body: Vec<u8>,
    /// Trailers, if the stream ended with them.
    pub trailers: Option<http::HeaderMap>,
    /// `None` when the stream ended cleanly (END_STREAM); otherwise the RST_STREAM reason or
    /// the connection error that ended it.
    pub reset: Option<h2::Reason>,
    /// The stream ended with an error that carried no reason (e.g. the connection vanished).
    pub broken: bool,
}

/// Sends `req` on an `h2` client connection and reads the response to its end, calling
/// `on_body(bytes so far)` after each DATA frame (a test releases the upstream's fault there).
pub async fn h2_exchange(
    client: &mut h2::client::SendRequest<Bytes>,
    req: http::Request<()>,
    body: Option<Bytes>,
    mut on_body: impl FnMut(&[u8]),
) -> H2Reply {
    let mut ready = client.clone().ready().await.expect("h2 ready");
    let (resp, mut send) = ready
        .send_request(req, body.is_none())
        .expect("send request");
    if let Some(b) = body {
        send.send_data(b, true).expect("send body");
    }
    let resp = tokio::time::timeout(DEADLINE, resp)
        .await
        .expect("response headers in time")
        .expect("response headers");
    let status = resp.status().as_u16();
    let mut stream = resp.into_body();
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout(DEADLINE, stream.data())
            .await
            .expect("body in time")
        {
            Some(Ok(chunk)) => {
                let _ = stream.flow_control().release_capacity(chunk.len());
                body.extend_from_slice(&chunk);
                on_body(&body);
            }
            Some(Err(e)) => {
                return H2Reply {
                    status,
                    body,
                    trailers: None,
                    reset: e.reason(),
                    broken: e.reason().is_none(),
                }
            }
            None => break,
        }
    }
    match tokio::time::timeout(DEADLINE, stream.trailers())
        .await
        .expect("trailers in time")
    {
        Ok(trailers) => H2Reply {
            status,
            body,
            trailers,
            reset: None,
            broken: false,
        },
        Err(e) => H2Reply {
            status,
            body,
            trailers: None,
            reset: e.reason(),
            broken: e.reason().is_none(),
        },
    }
}

/// An `h2` client over `io` (h2c prior knowledge, or TLS with ALPN h2); the connection is
/// driven by a spawned task.
pub async fn h2_client<T>(io: T) -> h2::client::SendRequest<Bytes>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A gRPC length-prefixed message (uncompressed).
pub fn grpc_message(payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}
