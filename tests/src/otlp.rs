//! A loopback OTLP/HTTP receiver: takes `POST /v1/traces` with the JSON encoding, as an
//! OpenTelemetry Collector's `otlphttp` receiver does, and keeps every span it was sent. It
//! answers `200 {}` unless told to fail ([`OtlpReceiver::fail_with`],
//! [`OtlpReceiver::fail_next`]), when it answers that status and keeps nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// A running receiver on an ephemeral loopback port; stops when dropped.
pub struct OtlpReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct State {
    /// Every export request taken: its content type and parsed body.
    exports: Mutex<Vec<(String, serde_json::Value)>>,
    /// Export requests answered with a failure.
    refused: Mutex<u32>,
    fail_with: AtomicU16,
    /// The next answers to fail: (status, how many, `Retry-After` seconds).
    fail_next: Mutex<(u16, u32, Option<u64>)>,
    /// When each export request arrived, and the status it got.
    answers: Mutex<Vec<(std::time::Instant, u16)>>,
}

impl OtlpReceiver {
    /// Starts the receiver.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(take(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// The traces URL to configure (`server.otlp.endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Answers every export with `status` from now on (0: accept again).
    pub fn fail_with(&self, status: u16) {
        self.state.fail_with.store(status, Ordering::SeqCst);
    }

    /// Answers the next `times` exports with `status` (and `Retry-After: retry_after` when
    /// given), then accepts again.
    pub fn fail_next(&self, status: u16, times: u32, retry_after: Option<u64>) {
        *self.state.fail_next.lock().expect("lock") = (status, times, retry_after);
    }

    /// Every export request so far: when it arrived and the status it was answered.
    pub fn answers(&self) -> Vec<(std::time::Instant, u16)> {
        self.state.answers.lock().expect("lock").clone()
    }

    /// Export requests refused so far.
    pub fn refused(&self) -> u32 {
        *self.state.refused.lock().expect("lock")
    }

    /// Every export request taken so far: (content type, body).
    pub fn exports(&self) -> Vec<(String, serde_json::Value)> {
        self.state.exports.lock().expect("lock").clone()
    }

    /// Every span taken so far, each with its resource's `service.name` added as
    /// `"service.name"`.
    pub fn spans(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for (_, body) in self.exports() {
            for rs in body["resourceSpans"].as_array().into_iter().flatten() {
                let service = rs["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["key"] == "service.name")
                    .map(|a| a["value"]["stringValue"].clone())
                    .unwrap_or_default();
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for span in ss["spans"].as_array().into_iter().flatten() {
                        let mut span = span.clone();
                        span["service.name"] = service.clone();
                        out.push(span);
                    }
                }
            }
        }
        out
    }

    /// Waits (up to [`crate::DEADLINE`]) for the span of trace `trace_id` and returns it.
    pub async fn span_of(&self, trace_id: &str) -> serde_json::Value {
        let mut found = None;
        crate::eventually(&format!("a span of trace {trace_id}"), || {
            found = self.spans().into_iter().find(|s| s["traceId"] == trace_id);
            let done = found.is_some();
            async move { done }
        })
        .await;
        found.expect("found")
    }
}

/// The value of attribute `key` in an OTLP attribute list, as plain JSON (`intValue`s as
/// numbers).
pub fn attribute(list: &serde_json::Value, key: &str) -> serde_json::Value {
    let Some(value) = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
    else {
        return serde_json::Value::Null;
    };
    if let Some(n) = value["intValue"].as_str() {
        return n.parse::<i64>().map(Into::into).unwrap_or_default();
    }
    ["stringValue", "boolValue", "intValue", "doubleValue"]
        .iter()
        .map(|k| value[*k].clone())
        .find(|v| !v.is_null())
        .unwrap_or_default()
}

async fn take(state: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let ok = req.method() == hyper::Method::POST && req.uri().path() == "/v1/traces";
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let arrived = std::time::Instant::now();
    let mut fail = state.fail_with.load(Ordering::SeqCst);
    let mut retry_after = None;
    {
        let mut next = state.fail_next.lock().expect("lock");
        if next.1 > 0 {
            next.1 -= 1;
            (fail, retry_after) = (next.0, next.2);
        }
    }
    let status = match serde_json::from_slice::<serde_json::Value>(&body) {
        _ if !ok => 404,
        _ if fail != 0 => fail,
        Ok(json) => {
            state
                .exports
                .lock()
                .expect("lock")
                .push((content_type, json));
            200
        }
        Err(_) => 400,
    };
    if status != 200 {
        *state.refused.lock().expect("lock") += 1;
    }
    state.answers.lock().expect("lock").push((arrived, status));
    let mut resp = Response::builder().status(status);
    if let Some(secs) = retry_after {
        resp = resp.header("retry-after", secs.to_string());
    }
    resp.header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("response")
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
