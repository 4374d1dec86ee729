//! OpenTelemetry span export (`server.otlp`): one span per sampled request, sent as OTLP/HTTP
//! with the JSON encoding (`POST` to the collector's `/v1/traces`). Spans are handed to an
//! exporter thread through a bounded queue; when it is full the span is dropped and counted
//! (`gateway_otlp_spans_dropped_total{reason="queue_full"}`), never waited for. The exporter
//! sends a batch when it holds `max_batch` spans or its oldest span has waited `interval`; a
//! batch the collector does not take (an error, a timeout, a status other than 2xx) is dropped
//! and counted (`reason="export_failed"`), not retried, so a collector outage costs spans, not
//! memory. Settings apply on reload, except the queue's size.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gateway_config::OtlpExport;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

/// A finished request's span, as the request path hands it over (encoded by the exporter).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// This span's id.
    pub span_id: u64,
    /// The caller's span (the `traceparent`'s parent id), when the trace came with the request.
    pub parent_span_id: Option<u64>,
    /// `GET api` (method and route).
    pub name: String,
    /// Start and end, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End.
    pub end_unix_nanos: u64,
    /// Whether the request failed (a 5xx, or no response).
    pub error: bool,
    /// The span's attributes.
    pub attributes: Vec<(&'static str, Value)>,
    /// One event per attempt.
    pub events: Vec<Event>,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

/// A timed event of a span (an attempt).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When, nanoseconds since the Unix epoch.
    pub at_unix_nanos: u64,
    /// The event's name.
    pub name: &'static str,
    /// Its attributes.
    pub attributes: Vec<(&'static str, Value)>,
}

struct Exporter {
    tx: mpsc::Sender<Span>,
    on: AtomicBool,
    settings: Mutex<Option<OtlpExport>>,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Applies `settings` (at start and on every reload): the exporter thread starts the first
/// time export is configured; `None` stops exporting (spans still queued are dropped, counted
/// as `export_off`).
pub fn configure(settings: Option<&OtlpExport>) {
    let exporter = match (EXPORTER.get(), settings) {
        (Some(exporter), _) => exporter,
        (None, None) => return,
        (None, Some(first)) => EXPORTER.get_or_init(|| start(first.queue as usize)),
    };
    *exporter.settings.lock().unwrap_or_else(|e| e.into_inner()) = settings.cloned();
    exporter.on.store(settings.is_some(), Ordering::Release);
}

/// Starts the exporter thread (its own single-threaded runtime) behind a queue of `queue` spans.
fn start(queue: usize) -> Exporter {
    let (tx, rx) = mpsc::channel(queue);
    let spawned = std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(export(rx)),
                Err(e) => tracing::error!(error = %e, "cannot start the OTLP exporter"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the OTLP exporter");
    }
    Exporter {
        tx,
        on: AtomicBool::new(false),
        settings: Mutex::new(None),
    }
}

/// Whether spans are exported (one atomic load).
pub fn on() -> bool {
    EXPORTER.get().is_some_and(|e| e.on.load(Ordering::Acquire))
}

/// Queues a span; dropped and counted when the queue is full.
pub fn export_span(span: Span) {
    let Some(exporter) = EXPORTER.get() else {
        return;
    };
    match exporter.tx.try_send(span) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => crate::telemetry::otlp_dropped("queue_full", 1),
        // The exporter thread could not start (logged then).
        Err(mpsc::error::TrySendError::Closed(_)) => {
            crate::telemetry::otlp_dropped("exporter_down", 1)
        }
    }
}

/// Nanoseconds since the Unix epoch, `ago` before now.
pub fn unix_nanos_ago(ago: Duration) -> u64 {
    SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(UNIX_EPOCH)
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn settings() -> Option<OtlpExport> {
    EXPORTER
        .get()?
        .settings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// The exporter: batches by size and age, one export request at a time.
async fn export(mut rx: mpsc::Receiver<Span>) {
    let client: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        let Some(settings) = settings() else {
            // Export was turned off: what was queued is dropped, as counted.
            crate::telemetry::otlp_dropped("export_off", 1);
            continue;
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + settings.interval;
        while batch.len() < settings.max_batch as usize {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let body = encode(&settings.service_name, &batch);
        let req = http::Request::post(settings.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "failover-gateway")
            .body(Full::new(Bytes::from(body)));
        let sent = match req {
            Ok(req) => match tokio::time::timeout(settings.timeout, async {
                let resp = client.request(req).await.map_err(|e| e.to_string())?;
                let status = resp.status();
                // The body is read so the connection can be reused.
                let _ = resp.into_body().collect().await;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("status {}", status.as_u16()))
                }
            })
            .await
            {
                Ok(result) => result,
                Err(_) => Err(format!("timeout after {:?}", settings.timeout)),
            },
            Err(e) => Err(e.to_string()),
        };
        match sent {
            Ok(()) => crate::telemetry::otlp_exported(batch.len() as u64),
            Err(e) => {
                crate::telemetry::otlp_dropped("export_failed", batch.len() as u64);
                tracing::warn!(endpoint = %settings.endpoint, spans = batch.len(), error = %e, "OTLP export failed; its spans are dropped");
            }
        }
        batch.clear();
    }
}

/// The OTLP/HTTP JSON body of `spans` (`ExportTraceServiceRequest`): ids in hex, times as
/// decimal strings, span kind SERVER, status ERROR for failed requests.
pub fn encode(service_name: &str, spans: &[Span]) -> String {
    let spans: Vec<serde_json::Value> = spans
        .iter()
        .map(|s| {
            let mut span = serde_json::json!({
                "traceId": s.trace_id,
                "spanId": hex16(s.span_id),
                "name": s.name,
                "kind": 2,
                "startTimeUnixNano": s.start_unix_nanos.to_string(),
                "endTimeUnixNano": s.end_unix_nanos.to_string(),
                "attributes": attributes(&s.attributes),
                "events": s.events.iter().map(|e| serde_json::json!({
                    "timeUnixNano": e.at_unix_nanos.to_string(),
                    "name": e.name,
                    "attributes": attributes(&e.attributes),
                })).collect::<Vec<_>>(),
                "status": { "code": if s.error { 2 } else { 0 } },
            });
            if let Some(parent) = s.parent_span_id {
                span["parentSpanId"] = hex16(parent).into();
            }
            span
        })
        .collect();
    serde_json::json!({
        "resourceSpans": [{
            "resource": { "attributes": attributes(&[("service.name", Value::Str(service_name.into()))]) },
            "scopeSpans": [{
                "scope": { "name": "failover-gateway", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }],
        }],
    })
    .to_string()
}

fn attributes(list: &[(&'static str, Value)]) -> Vec<serde_json::Value> {
    list.iter()
        .map(|(key, value)| {
            let value = match value {
                Value::Str(s) => serde_json::json!({ "stringValue": s }),
                // OTLP JSON writes 64-bit integers as strings.
                Value::Int(n) => serde_json::json!({ "intValue": n.to_string() }),
                Value::Bool(b) => serde_json::json!({ "boolValue": b }),
            };
            serde_json::json!({ "key": key, "value": value })
        })
        .collect()
}

fn hex16(id: u64) -> String {
    let mut out = String::with_capacity(16);
    let _ = write!(out, "{id:016x}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_encoded_as_otlp_json() {
        let span = Span {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: 0xab,
            parent_span_id: Some(0x00f0_67aa_0ba9_02b7),
            name: "GET api".into(),
            start_unix_nanos: 1_000,
            end_unix_nanos: 2_000,
            error: true,
            attributes: vec![
                ("http.response.status_code", Value::Int(502)),
                ("gateway.region", Value::Str("fra".into())),
                ("gateway.fail_open", Value::Bool(false)),
            ],
            events: vec![Event {
                at_unix_nanos: 1_500,
                name: "attempt",
                attributes: vec![("gateway.endpoint", Value::Str("fra-1".into()))],
            }],
        };
        let body: serde_json::Value = serde_json::from_str(&encode("edge", &[span])).expect("json");
        let rs = &body["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0],
            serde_json::json!({"key": "service.name", "value": {"stringValue": "edge"}})
        );
        let s = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s["spanId"], "00000000000000ab");
        assert_eq!(s["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(s["kind"], 2);
        assert_eq!(s["startTimeUnixNano"], "1000");
        assert_eq!(s["status"]["code"], 2);
        assert_eq!(
            s["attributes"][0],
            serde_json::json!({"key": "http.response.status_code", "value": {"intValue": "502"}})
        );
        assert_eq!(s["attributes"][2]["value"]["boolValue"], false);
        assert_eq!(s["events"][0]["name"], "attempt");
        assert_eq!(s["events"][0]["timeUnixNano"], "1500");
    }
}
