//! OpenTelemetry span export (`server.otlp`): one span per sampled request, sent as OTLP/HTTP
//! with the JSON encoding (`POST` to the collector's `/v1/traces`). Spans are handed to an
//! exporter thread through a bounded queue; when it is full the span is dropped and counted
//! (`gateway_otlp_spans_dropped_total{reason="queue_full"}`), never waited for. The exporter
//! sends a batch when it holds `max_batch` spans or its oldest span has waited `interval`; a
//! batch the collector does not take is retried twice when OTLP/HTTP calls the failure
//! retryable (429, 502, 503, 504, a refused connection: after the collector's `Retry-After`, at
//! most 5 s, or 200 ms then 400 ms), and otherwise, or after the third try, dropped and counted
//! (`reason="export_failed"`), so a collector outage costs spans, not memory. Settings apply on reload, except the queue's size.

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

// Log lines keep the target this module had before the folders: operators filter on it.
const LOG_TARGET: &str = "gateway::otlp";

/// One span's JSON object (`Span` of OTLP/HTTP JSON), written on the request path straight into
/// one string: the header fields, then attributes, then events with their own attributes.
pub struct SpanJson {
    out: String,
    /// Whether an event is open (attributes go to it), and whether the list being written is
    /// still empty.
    in_event: bool,
    first: bool,
}

impl SpanJson {
    /// Starts a SERVER span; times in nanoseconds since the Unix epoch; `error` sets status
    /// ERROR.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        trace_id: &str,
        span_id: u64,
        parent_span_id: Option<u64>,
        name: &str,
        start_unix_nanos: u64,
        end_unix_nanos: u64,
        error: bool,
    ) -> Self {
        let mut out = String::with_capacity(1024);
        out.push_str("{\"traceId\":");
        crate::telemetry::json::push_str(&mut out, trace_id);
        let _ = write!(out, ",\"spanId\":\"{span_id:016x}\"");
        if let Some(parent) = parent_span_id {
            let _ = write!(out, ",\"parentSpanId\":\"{parent:016x}\"");
        }
        out.push_str(",\"name\":");
        crate::telemetry::json::push_str(&mut out, name);
        let _ = write!(
            out,
            ",\"kind\":2,\"startTimeUnixNano\":\"{start_unix_nanos}\",\"endTimeUnixNano\":\"{end_unix_nanos}\",\"status\":{{\"code\":{}}},\"attributes\":[",
            if error { 2 } else { 0 }
        );
        Self {
            out,
            in_event: false,
            first: true,
        }
    }

    fn attr(&mut self, key: &str, kind: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        // Keys and kinds are the gateway's own names, which need no escaping.
        debug_assert!(
            !key.bytes().any(crate::telemetry::json::needs_escape),
            "{key}"
        );
        self.out.push_str("{\"key\":\"");
        self.out.push_str(key);
        self.out.push_str("\",\"value\":{\"");
        self.out.push_str(kind);
        self.out.push_str("\":");
        &mut self.out
    }

    /// A string attribute (of the span, or of the event last started).
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        crate::telemetry::json::push_str(self.attr(key, "stringValue"), value);
        self.out.push_str("}}");
        self
    }

    /// An integer attribute (a string in OTLP JSON, which keeps 64-bit integers exact).
    pub fn int(&mut self, key: &str, value: u64) -> &mut Self {
        let out = self.attr(key, "intValue");
        out.push('"');
        crate::telemetry::json::push_u64(out, value);
        out.push_str("\"}}");
        self
    }

    /// An address attribute.
    pub fn ip(&mut self, key: &str, value: std::net::IpAddr) -> &mut Self {
        let out = self.attr(key, "stringValue");
        out.push('"');
        crate::telemetry::json::push_ip(out, value);
        out.push_str("\"}}");
        self
    }

    /// A socket address attribute.
    pub fn socket_addr(&mut self, key: &str, value: std::net::SocketAddr) -> &mut Self {
        let out = self.attr(key, "stringValue");
        out.push('"');
        crate::telemetry::json::push_socket_addr(out, value);
        out.push_str("\"}}");
        self
    }

    /// A boolean attribute.
    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        let _ = write!(self.attr(key, "boolValue"), "{value}}}}}");
        self
    }

    /// Starts an event at `at_unix_nanos`; attributes written next are the event's.
    pub fn event(&mut self, at_unix_nanos: u64, name: &str) -> &mut Self {
        self.out.push_str(if self.in_event {
            "]},"
        } else {
            "],\"events\":["
        });
        let _ = write!(self.out, "{{\"timeUnixNano\":\"{at_unix_nanos}\",\"name\":");
        crate::telemetry::json::push_str(&mut self.out, name);
        self.out.push_str(",\"attributes\":[");
        self.in_event = true;
        self.first = true;
        self
    }

    /// The finished object.
    pub fn finish(mut self) -> String {
        self.out.push_str(if self.in_event {
            "]}]}"
        } else {
            "],\"events\":[]}"
        });
        self.out
    }
}

struct Exporter {
    tx: mpsc::Sender<String>,
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
    let (tx, rx) = mpsc::channel::<String>(queue);
    let spawned = std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(export(rx)),
                Err(e) => tracing::error!(target: LOG_TARGET, error = %e, "cannot start the OTLP exporter"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(target: LOG_TARGET, error = %e, "cannot start the OTLP exporter");
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

/// Queues a span (its JSON, from [`SpanJson::finish`]); dropped and counted when the queue is
/// full.
pub fn export_span(span: String) {
    let Some(exporter) = EXPORTER.get() else {
        return;
    };
    match exporter.tx.try_send(span) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            crate::telemetry::metrics::otlp_dropped("queue_full", 1)
        }
        // The exporter thread could not start (logged then).
        Err(mpsc::error::TrySendError::Closed(_)) => {
            crate::telemetry::metrics::otlp_dropped("exporter_down", 1)
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
async fn export(mut rx: mpsc::Receiver<String>) {
    let client: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        let Some(settings) = settings() else {
            // Export was turned off: what was queued is dropped, as counted.
            crate::telemetry::metrics::otlp_dropped("export_off", 1);
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
        let body = Bytes::from(encode(&settings.service_name, &batch));
        let mut tries = 0;
        let sent = loop {
            tries += 1;
            match send(&client, &settings, body.clone()).await {
                Err(f) if f.retry && tries < EXPORT_TRIES => {
                    // OTLP/HTTP: a throttled or unavailable collector is retried after its
                    // `Retry-After`, or with exponential backoff; spans queued meanwhile wait.
                    let backoff = RETRY_BACKOFF * 2u32.pow(tries - 1);
                    tokio::time::sleep(f.retry_after.unwrap_or(backoff).min(MAX_RETRY_WAIT)).await;
                }
                other => break other,
            }
        };
        match sent {
            Ok(()) => crate::telemetry::metrics::otlp_exported(batch.len() as u64),
            Err(f) => {
                crate::telemetry::metrics::otlp_dropped("export_failed", batch.len() as u64);
                tracing::warn!(target: LOG_TARGET, endpoint = %settings.endpoint, spans = batch.len(), tries, error = %f.text, "OTLP export failed; its spans are dropped");
            }
        }
        batch.clear();
    }
}

/// Attempts per batch: the first and two retries.
const EXPORT_TRIES: u32 = 3;
/// Wait before the first retry (doubled for the next) when the collector gives no
/// `Retry-After`.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait before a retry, whatever `Retry-After` asks.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// Why an export request failed, and whether OTLP/HTTP calls it retryable.
struct Failure {
    text: String,
    /// 429, 502, 503, 504 or no answer at all (the connection failed).
    retry: bool,
    /// The collector's `Retry-After` (seconds).
    retry_after: Option<Duration>,
}

/// One export request of `body` (an `ExportTraceServiceRequest`).
async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    settings: &OtlpExport,
    body: Bytes,
) -> Result<(), Failure> {
    let failure = |text: String, retry: bool| Failure {
        text,
        retry,
        retry_after: None,
    };
    let req = http::Request::post(settings.endpoint.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "failover-gateway")
        .body(Full::new(body))
        .map_err(|e| failure(e.to_string(), false))?;
    let answer = tokio::time::timeout(settings.timeout, async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| failure(e.to_string(), e.is_connect()))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // The body is read so the connection can be reused.
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            return Ok(());
        }
        Err(Failure {
            text: format!("status {}", status.as_u16()),
            retry: matches!(status.as_u16(), 429 | 502 | 503 | 504),
            retry_after,
        })
    });
    match answer.await {
        Ok(result) => result,
        // A collector that took `timeout` once is not asked again at once.
        Err(_) => Err(failure(
            format!("timeout after {:?}", settings.timeout),
            false,
        )),
    }
}

/// The OTLP/HTTP JSON body (`ExportTraceServiceRequest`) of `spans`, each the JSON of one span.
pub fn encode(service_name: &str, spans: &[String]) -> String {
    let mut out = String::with_capacity(256 + spans.iter().map(|s| s.len() + 1).sum::<usize>());
    out.push_str(
        "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":",
    );
    crate::telemetry::json::push_str(&mut out, service_name);
    let _ = write!(
        out,
        "}}}}]}},\"scopeSpans\":[{{\"scope\":{{\"name\":\"failover-gateway\",\"version\":\"{}\"}},\"spans\":[",
        env!("CARGO_PKG_VERSION")
    );
    for (i, span) in spans.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(span);
    }
    out.push_str("]}]}]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_encoded_as_otlp_json() {
        let mut span = SpanJson::new(
            "4bf92f3577b34da6a3ce929d0e0e4736",
            0xab,
            Some(0x00f0_67aa_0ba9_02b7),
            "GET \"api\"",
            1_000,
            2_000,
            true,
        );
        span.int("http.response.status_code", 502)
            .str("gateway.region", "fra")
            .bool("gateway.fail_open", false)
            .socket_addr("server.address", "127.0.0.1:80".parse().expect("addr"));
        span.event(1_500, "attempt")
            .str("gateway.endpoint", "fra-1");
        span.event(1_600, "attempt").int("gateway.attempt", 2);
        let bare = SpanJson::new(
            "4bf92f3577b34da6a3ce929d0e0e4736",
            1,
            None,
            "GET",
            1,
            2,
            false,
        );
        let body: serde_json::Value =
            serde_json::from_str(&encode("ed\"ge", &[span.finish(), bare.finish()])).expect("json");
        let rs = &body["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0],
            serde_json::json!({"key": "service.name", "value": {"stringValue": "ed\"ge"}})
        );
        assert_eq!(rs["scopeSpans"][0]["scope"]["name"], "failover-gateway");
        let s = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s["spanId"], "00000000000000ab");
        assert_eq!(s["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(s["name"], "GET \"api\"");
        assert_eq!(s["kind"], 2);
        assert_eq!(s["startTimeUnixNano"], "1000");
        assert_eq!(s["endTimeUnixNano"], "2000");
        assert_eq!(s["status"]["code"], 2);
        assert_eq!(
            s["attributes"][0],
            serde_json::json!({"key": "http.response.status_code", "value": {"intValue": "502"}})
        );
        assert_eq!(s["attributes"][2]["value"]["boolValue"], false);
        assert_eq!(s["attributes"][3]["value"]["stringValue"], "127.0.0.1:80");
        assert_eq!(s["events"][0]["name"], "attempt");
        assert_eq!(s["events"][0]["timeUnixNano"], "1500");
        assert_eq!(
            s["events"][0]["attributes"][0]["value"]["stringValue"],
            "fra-1"
        );
        assert_eq!(s["events"][1]["attributes"][0]["value"]["intValue"], "2");
        let bare = &rs["scopeSpans"][0]["spans"][1];
        assert!(bare.get("parentSpanId").is_none());
        assert_eq!(bare["status"]["code"], 0);
        assert_eq!(bare["events"], serde_json::json!([]));
        assert_eq!(bare["attributes"], serde_json::json!([]));
    }
}
