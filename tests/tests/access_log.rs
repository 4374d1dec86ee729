//! The access log and tracing (issue 14): one JSON line per request with what happened to it
//! (retried, failed over, shed, sticky), written to a file that SIGUSR1 reopens; W3C trace
//! context; one OTLP span per sampled request, sent to a loopback OTLP/HTTP receiver. Real
//! gateway process, real upstreams.

use std::path::PathBuf;
use std::time::Duration;

use gateway_tests::client::{get, H1};
use gateway_tests::{endpoints, eventually, free_port, Gateway, Mode};

const KEY: &[(&str, &[u8])] = &[("k1.key", b"k1-secret-0123456789abcdef0123456789")];

/// The access log's lines so far, parsed.
fn lines(path: &PathBuf) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits until the log has a line for `path` (the request path) and returns it.
async fn line_for(log: &PathBuf, path: &str) -> serde_json::Value {
    let mut found = None;
    eventually(&format!("an access log line for {path}"), || {
        found = lines(log).into_iter().find(|l| l["path"] == path);
        let done = found.is_some();
        async move { done }
    })
    .await;
    found.expect("found")
}

#[tokio::test]
async fn each_request_gets_one_line_saying_what_happened_and_sigusr1_reopens_the_file() {
    let fra = [gateway_tests::region("fra", "fra-1").await];
    let ber = [gateway_tests::region("ber", "ber-1").await];
    let slow = [gateway_tests::region("slow", "slow-1").await];
    slow[0].set_mode(Mode::Slow(Duration::from_millis(1500)));
    let gone = free_port();
    let config = format!(
        r#"admin: {{ bind: "{{admin}}" }}
listeners:
  - {{ name: http, bind: "{{listen}}" }}
server:
  access_log: {{ output: access.log }}
sticky_keys: [{{ id: k1, secret_file: "{{dir}}/k1.key" }}]
regions:
  fra:
    endpoints: {fra}
    probe: {{ interval: 1h, timeout: 1s }}
  ber:
    endpoints: {ber}
    probe: {{ interval: 1h, timeout: 1s }}
  gone:
    endpoints: [{{ id: gone-1, address: "{gone}" }}]
    probe: {{ interval: 1h, timeout: 1s }}
  slow:
    endpoints: {slow}
    probe: {{ interval: 1h, timeout: 1s }}
routes:
  - {{ name: retried, match: {{ path_prefix: /retried }}, regions: [fra, ber] }}
  - {{ name: failed-over, match: {{ path_prefix: /failed-over }}, regions: [gone, ber] }}
  - {{ name: shed, match: {{ path_prefix: /shed }}, regions: [slow], max_in_flight: 1 }}
  - {{ name: sticky, match: {{ path_prefix: /sticky }}, regions: [ber], sticky: {{ secure: false }} }}
"#,
        fra = endpoints(&fra),
        ber = endpoints(&ber),
        slow = endpoints(&slow),
    );
    let (gw, _) = Gateway::start(&config, KEY).await;
    let log = gw.config_path().parent().expect("dir").join("access.log");
    let mut conn = H1::connect(gw.addr).await;

    // Retried: fra answers 503, the retry goes to ber.
    fra[0].set_mode(Mode::Status(503));
    let resp = conn
        .send(
            http::Request::get("/retried?q=1")
                .header("host", "app.test")
                .header("user-agent", "access-log-test")
                .body(gateway_tests::client::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(resp.status, 200);
    let l = line_for(&log, "/retried?q=1").await;
    assert_eq!(l["status"], 200, "{l}");
    assert_eq!(l["method"], "GET", "{l}");
    assert_eq!(l["host"], "app.test", "{l}");
    assert_eq!(l["route"], "retried", "{l}");
    assert_eq!(
        (&l["region"], &l["endpoint"]),
        (&"ber".into(), &"ber-1".into()),
        "{l}"
    );
    assert_eq!(l["attempts"], 2, "{l}");
    assert_eq!(l["retries"], serde_json::json!(["status 503"]), "{l}");
    assert_eq!(l["tier"], 1, "{l}");
    assert_eq!(l["client_ip"], "127.0.0.1", "{l}");
    assert_eq!(l["user_agent"], "access-log-test", "{l}");
    assert_eq!(l["protocol"], "HTTP/1.1", "{l}");
    assert_eq!(l["upstream_protocol"], "http1", "{l}");
    assert!(l["bytes_out"].as_u64() > Some(0), "{l}");
    assert!(l["duration_ms"].as_f64() > Some(0.0), "{l}");
    assert_eq!(l["request_id"].as_str().map(str::len), Some(32), "{l}");
    assert!(l["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{l}");
    assert_eq!(resp.header("x-request-id"), l["request_id"].as_str());

    // Failed over: `gone` is down (nothing listens), so the route serves from ber.
    assert_eq!(conn.send(get("app.test", "/failed-over")).await.status, 200);
    let l = line_for(&log, "/failed-over").await;
    assert_eq!(
        (&l["region"], &l["tier"], &l["attempts"]),
        (&"ber".into(), &1.into(), &1.into()),
        "{l}"
    );
    assert_eq!(l["retries"], serde_json::json!([]), "{l}");

    // Shed: one slow request holds the route's only slot.
    let addr = gw.addr;
    let held = tokio::spawn(async move {
        H1::connect(addr)
            .await
            .send(get("app.test", "/shed/held"))
            .await
            .status
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        conn.send(get("app.test", "/shed/refused")).await.status,
        503
    );
    let l = line_for(&log, "/shed/refused").await;
    assert_eq!(
        (&l["status"], &l["shed"]),
        (&503.into(), &"route".into()),
        "{l}"
    );
    assert_eq!(l["attempts"], 0, "{l}");
    assert_eq!(held.await.expect("held"), 200);

    // Sticky: the first request gets a cookie.
    assert_eq!(conn.send(get("app.test", "/sticky")).await.status, 200);
    let l = line_for(&log, "/sticky").await;
    assert_eq!(l["sticky"], "issued", "{l}");

    // One line per request.
    for path in ["/retried?q=1", "/failed-over", "/shed/refused", "/sticky"] {
        assert_eq!(
            lines(&log).iter().filter(|l| l["path"] == path).count(),
            1,
            "{path}"
        );
    }

    // logrotate: move the file, SIGUSR1, and the next line goes to a new file.
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    gw.signal("USR1");
    eventually("the access log reopened", || {
        let exists = log.exists();
        async move { exists }
    })
    .await;
    assert_eq!(
        conn.send(get("app.test", "/after-rotation")).await.status,
        404
    );
    let l = line_for(&log, "/after-rotation").await;
    assert_eq!(l["status"], 404, "{l}");
    assert!(lines(&rotated)
        .iter()
        .all(|l| l["path"] != "/after-rotation"));
}

#[tokio::test]
async fn sampled_out_successes_are_not_logged_but_errors_always_are() {
    let ber = [gateway_tests::region("ber", "ber-1").await];
    let config = format!(
        r#"admin: {{ bind: "{{admin}}" }}
listeners:
  - {{ name: http, bind: "{{listen}}" }}
server:
  access_log: {{ output: access.log, sample: 0% }}
regions:
  ber:
    endpoints: {ber}
    probe: {{ interval: 1h, timeout: 1s }}
routes:
  - {{ name: app, match: {{ path_prefix: /app }}, regions: [ber] }}
"#,
        ber = endpoints(&ber),
    );
    let (gw, _) = Gateway::start(&config, &[]).await;
    let log = gw.config_path().parent().expect("dir").join("access.log");
    let mut conn = H1::connect(gw.addr).await;
    for _ in 0..5 {
        assert_eq!(conn.send(get("a", "/app/ok")).await.status, 200);
    }
    assert_eq!(conn.send(get("a", "/missing")).await.status, 404);
    ber[0].set_mode(Mode::Status(500));
    assert_eq!(conn.send(get("a", "/app/broken")).await.status, 500);
    line_for(&log, "/missing").await;
    line_for(&log, "/app/broken").await;
    assert!(
        lines(&log).iter().all(|l| l["path"] != "/app/ok"),
        "{:?}",
        lines(&log)
    );
}

#[tokio::test]
async fn a_valid_trace_context_passes_unchanged_a_missing_or_invalid_one_is_started_and_logged() {
    let ber = [gateway_tests::region("ber", "ber-1").await];
    let config = format!(
        r#"admin: {{ bind: "{{admin}}" }}
listeners:
  - {{ name: http, bind: "{{listen}}" }}
server:
  access_log: {{ output: access.log }}
regions:
  ber:
    endpoints: {ber}
    probe: {{ interval: 1h, timeout: 1s }}
routes:
  - {{ name: app, regions: [ber] }}
"#,
        ber = endpoints(&ber),
    );
    let (gw, _) = Gateway::start(&config, &[]).await;
    let log = gw.config_path().parent().expect("dir").join("access.log");
    let mut conn = H1::connect(gw.addr).await;
    let send = |path: &str, headers: &[(&str, &str)]| {
        let mut req = http::Request::get(path).header("host", "a");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(gateway_tests::client::empty()).expect("request")
    };
    let upstream_saw = |resp: &gateway_tests::client::Collected, name: &str| {
        resp.json()["headers"][name]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    // Valid: both headers reach the app unchanged; the log has its trace id.
    let resp = conn
        .send(send(
            "/valid",
            &[("traceparent", VALID), ("tracestate", "vendor=1")],
        ))
        .await;
    assert_eq!(upstream_saw(&resp, "traceparent"), [VALID]);
    assert_eq!(upstream_saw(&resp, "tracestate"), ["vendor=1"]);
    let l = line_for(&log, "/valid").await;
    assert_eq!(l["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{l}");

    // Missing: a new sampled trace starts; the log names the same trace.
    let resp = conn.send(send("/missing", &[])).await;
    let started = upstream_saw(&resp, "traceparent");
    assert_eq!(started.len(), 1, "{started:?}");
    let t = &started[0];
    assert!(
        t.len() == 55 && t.starts_with("00-") && t.ends_with("-01"),
        "{t}"
    );
    let l = line_for(&log, "/missing").await;
    assert_eq!(l["trace_id"].as_str(), Some(&t[3..35]), "{l}");

    // Invalid: replaced by a new trace, its tracestate dropped.
    let resp = conn
        .send(send(
            "/invalid",
            &[("traceparent", "00-nothex-01"), ("tracestate", "vendor=1")],
        ))
        .await;
    let replaced = upstream_saw(&resp, "traceparent");
    assert_eq!(replaced.len(), 1);
    assert_ne!(replaced[0], "00-nothex-01");
    assert!(upstream_saw(&resp, "tracestate").is_empty(), "{resp:?}");
}

#[tokio::test]
async fn each_sampled_request_is_exported_as_one_otlp_span_with_its_attempts() {
    use gateway_tests::otlp::{attribute, OtlpReceiver};
    let receiver = OtlpReceiver::start().await;
    let fra = [gateway_tests::region("fra", "fra-1").await];
    let ber = [gateway_tests::region("ber", "ber-1").await];
    let config = format!(
        r#"admin: {{ bind: "{{admin}}" }}
listeners:
  - {{ name: http, bind: "{{listen}}" }}
server:
  otlp: {{ endpoint: "{endpoint}", service_name: edge-test, interval: 100ms }}
regions:
  fra:
    endpoints: {fra}
    probe: {{ interval: 1h, timeout: 1s }}
  ber:
    endpoints: {ber}
    probe: {{ interval: 1h, timeout: 1s }}
routes:
  - {{ name: retried, regions: [fra, ber] }}
"#,
        endpoint = receiver.endpoint(),
        fra = endpoints(&fra),
        ber = endpoints(&ber),
    );
    let (gw, _) = Gateway::start(&config, &[]).await;
    let mut conn = H1::connect(gw.addr).await;
    let send = |path: &str, traceparent: Option<&str>| {
        let mut req = http::Request::get(path).header("host", "app.test");
        if let Some(t) = traceparent {
            req = req.header("traceparent", t);
        }
        req.body(gateway_tests::client::empty()).expect("request")
    };
    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    // A caller's trace, retried from fra (503) to ber: one span, a child of the caller's span,
    // with an event per attempt; the traceparent reaches the app unchanged.
    fra[0].set_mode(Mode::Status(503));
    let resp = conn.send(send("/retried", Some(CALLER))).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["headers"]["traceparent"][0], CALLER);
    let span = receiver.span_of("4bf92f3577b34da6a3ce929d0e0e4736").await;
    assert_eq!(span["service.name"], "edge-test", "{span}");
    assert_eq!(span["parentSpanId"], "00f067aa0ba902b7", "{span}");
    let id = span["spanId"].as_str().unwrap_or_default();
    assert!(
        id.len() == 16 && id != "0000000000000000" && id != "00f067aa0ba902b7",
        "{span}"
    );
    assert_eq!(
        (&span["name"], &span["kind"]),
        (&"GET retried".into(), &2.into()),
        "{span}"
    );
    let attrs = &span["attributes"];
    assert_eq!(attribute(attrs, "gateway.route"), "retried", "{span}");
    assert_eq!(attribute(attrs, "gateway.region"), "ber", "{span}");
    assert_eq!(attribute(attrs, "gateway.endpoint"), "ber-1", "{span}");
    assert_eq!(attribute(attrs, "gateway.attempts"), 2, "{span}");
    assert_eq!(attribute(attrs, "http.response.status_code"), 200, "{span}");
    assert_eq!(attribute(attrs, "http.request.method"), "GET", "{span}");
    assert_eq!(attribute(attrs, "url.path"), "/retried", "{span}");
    assert_eq!(attribute(attrs, "server.address"), "app.test", "{span}");
    assert_eq!(span["status"]["code"], 0, "{span}");
    let events = span["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 2, "{span}");
    let nanos = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let (start, end) = (
        nanos(&span["startTimeUnixNano"]),
        nanos(&span["endTimeUnixNano"]),
    );
    assert!(start > 0 && start < end, "{span}");
    for (i, (endpoint, retried_for)) in [
        ("fra-1", "status 503".into()),
        ("ber-1", serde_json::Value::Null),
    ]
    .into_iter()
    .enumerate()
    {
        let e = &events[i];
        assert_eq!(e["name"], "attempt", "{span}");
        assert_eq!(
            attribute(&e["attributes"], "gateway.attempt"),
            i as i64 + 1,
            "{span}"
        );
        assert_eq!(
            attribute(&e["attributes"], "gateway.endpoint"),
            endpoint,
            "{span}"
        );
        assert_eq!(
            attribute(&e["attributes"], "gateway.retried_for"),
            retried_for,
            "{span}"
        );
        let at = nanos(&e["timeUnixNano"]);
        assert!(start <= at && at <= end, "event outside its span: {span}");
    }
    // The retry began after the first attempt's 503 came back, not at the span's start.
    assert!(
        nanos(&events[0]["timeUnixNano"]) < nanos(&events[1]["timeUnixNano"]),
        "{span}"
    );
    let (content_type, _) = &receiver.exports()[0];
    assert_eq!(content_type, "application/json");

    // No trace: the gateway starts one; its span is the root and the app's parent.
    fra[0].set_mode(Mode::Ok);
    let resp = conn.send(send("/started", None)).await;
    let started = resp.json()["headers"]["traceparent"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(started.len(), 55, "{resp:?}");
    let span = receiver.span_of(&started[3..35]).await;
    assert_eq!(span["spanId"], &started[36..52], "{span}");
    assert!(span.get("parentSpanId").is_none(), "{span}");

    // A caller's trace that is not sampled is not exported: the span after it arrives alone.
    let unsampled = "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-00f067aa0ba902b7-00";
    conn.send(send("/unsampled", Some(unsampled))).await;
    let after = "00-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-00f067aa0ba902b7-01";
    conn.send(send("/after", Some(after))).await;
    receiver.span_of("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb").await;
    assert!(
        receiver
            .spans()
            .iter()
            .all(|s| s["traceId"] != "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        "an unsampled trace was exported"
    );
    assert_eq!(receiver.spans().len(), 3);

    // The collector stays unavailable: requests are unharmed; the batch is tried three times
    // (OTLP/HTTP retries a 503), then dropped and counted; once it takes them again, new spans
    // arrive.
    receiver.fail_with(503);
    let refused = "00-cccccccccccccccccccccccccccccccc-00f067aa0ba902b7-01";
    assert_eq!(conn.send(send("/refused", Some(refused))).await.status, 200);
    eventually("the failed export counted", || async {
        let (_, metrics) = gw.admin_call("GET", "/metrics", None).await;
        metrics.contains("gateway_otlp_spans_dropped_total{reason=\"export_failed\"} 1")
    })
    .await;
    assert_eq!(receiver.refused(), 3, "{:?}", receiver.answers());
    receiver.fail_with(0);
    let back = "00-dddddddddddddddddddddddddddddddd-00f067aa0ba902b7-01";
    conn.send(send("/back", Some(back))).await;
    receiver.span_of("dddddddddddddddddddddddddddddddd").await;
    let (_, metrics) = gw.admin_call("GET", "/metrics", None).await;
    assert!(
        metrics.contains("gateway_otlp_spans_exported_total 4"),
        "{metrics}"
    );

    // A throttled collector (429 with `Retry-After: 1`) gets the batch again no sooner than it
    // asked; a brief 502 is retried with backoff: both spans arrive, nothing more is dropped.
    receiver.fail_next(429, 1, Some(1));
    let throttled = "00-eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-00f067aa0ba902b7-01";
    conn.send(send("/throttled", Some(throttled))).await;
    receiver.span_of("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee").await;
    let answers = receiver.answers();
    let (refused_at, accepted_at) = (answers[answers.len() - 2], answers[answers.len() - 1]);
    assert_eq!((refused_at.1, accepted_at.1), (429, 200), "{answers:?}");
    assert!(
        accepted_at.0 - refused_at.0 >= Duration::from_millis(950),
        "retried {:?} after a Retry-After of 1 s",
        accepted_at.0 - refused_at.0
    );
    receiver.fail_next(502, 2, None);
    let blip = "00-ffffffffffffffffffffffffffffffff-00f067aa0ba902b7-01";
    conn.send(send("/blip", Some(blip))).await;
    receiver.span_of("ffffffffffffffffffffffffffffffff").await;
    // A refusal OTLP calls permanent (400) is not retried.
    receiver.fail_next(400, 1, None);
    let bad = "00-abababababababababababababababab-00f067aa0ba902b7-01";
    conn.send(send("/permanent", Some(bad))).await;
    eventually("the refused batch dropped", || async {
        let (_, metrics) = gw.admin_call("GET", "/metrics", None).await;
        metrics.contains("gateway_otlp_spans_dropped_total{reason=\"export_failed\"} 2")
    })
    .await;
    let (_, metrics) = gw.admin_call("GET", "/metrics", None).await;
    assert!(
        metrics.contains("gateway_otlp_spans_exported_total 6"),
        "{metrics}"
    );
    let statuses: Vec<u16> = receiver.answers()[..].iter().map(|a| a.1).collect();
    assert_eq!(
        statuses[statuses.len() - 6..],
        [429, 200, 502, 502, 200, 400],
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_request_over_tls_logs_and_traces_the_server_name_the_client_asked_for() {
    use gateway_tests::client::{h1_tls, tls_connect_any};
    use gateway_tests::otlp::{attribute, OtlpReceiver};
    let receiver = OtlpReceiver::start().await;
    let ber = [gateway_tests::region("ber", "ber-1").await];
    let pki = gateway_tests::TestPki::new(&[&["a.test", "*.a.test"]]);
    let config = format!(
        r#"admin: {{ bind: "{{admin}}" }}
listeners:
  - {{ name: http, bind: "{{listen}}" }}
  - {{ name: https, bind: "{{tls}}", tls: {{ certs: [{{ cert: a.pem, key: a.key }}] }} }}
server:
  access_log: {{ output: access.log }}
  otlp: {{ endpoint: "{endpoint}", interval: 50ms }}
regions:
  ber:
    endpoints: {ber}
    probe: {{ interval: 1h, timeout: 1s }}
routes:
  - {{ name: app, regions: [ber] }}
"#,
        endpoint = receiver.endpoint(),
        ber = endpoints(&ber),
    );
    let (gw, tls_addr) = Gateway::start(&config, &pki.files(&[("a.pem", "a.key")])).await;
    let log = gw.config_path().parent().expect("dir").join("access.log");

    // The name asked for in the handshake, not the Host header.
    let (mut conn, _) = h1_tls(tls_addr, &pki.ca_der, "www.a.test").await;
    assert_eq!(conn.send(get("a.test", "/over-tls")).await.status, 200);
    let l = line_for(&log, "/over-tls").await;
    assert_eq!(l["sni"], "www.a.test", "{l}");
    assert!(
        l["tls"].as_str().is_some_and(|v| v.starts_with("TLS")),
        "{l}"
    );
    // Its span says the same in OpenTelemetry's terms.
    let span = receiver
        .span_of(l["trace_id"].as_str().expect("trace id"))
        .await;
    let attrs = &span["attributes"];
    assert_eq!(attribute(attrs, "tls.client.server_name"), "www.a.test");
    assert_eq!(attribute(attrs, "tls.protocol.name"), "tls");
    assert_eq!(
        attribute(attrs, "tls.protocol.version"),
        l["tls"].as_str().expect("tls")["TLSv".len()..],
        "{attrs}"
    );

    // A client that sends no SNI (it connects by address) and a plaintext one: no name.
    let (stream, _) = tls_connect_any(tls_addr, "127.0.0.1").await;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("h1 handshake");
    tokio::spawn(connection);
    let resp = sender
        .send_request(get("a.test", "/no-sni"))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    let l = line_for(&log, "/no-sni").await;
    assert!(l["sni"].is_null() && l["tls"].is_string(), "{l}");
    let mut plain = H1::connect(gw.addr).await;
    assert_eq!(plain.send(get("a.test", "/plain")).await.status, 200);
    let l = line_for(&log, "/plain").await;
    assert!(l["sni"].is_null() && l["tls"].is_null(), "{l}");
}

/// A collector that takes the connection and never answers holds the exporter: the spans that
/// do not fit the bounded queue are dropped and counted, and no request waits for them.
#[tokio::test]
async fn spans_beyond_the_queue_of_a_stuck_collector_are_dropped_and_requests_never_wait() {
    // Connections complete in the kernel's backlog; nothing ever reads or answers them.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let fra = [gateway_tests::region("fra", "fra-1").await];
    const QUEUE: u64 = 4;
    let config = format!(
        r#"admin: {{ bind: "{{admin}}" }}
listeners:
  - {{ name: http, bind: "{{listen}}" }}
server:
  otlp: {{ endpoint: "http://{stuck}/v1/traces", queue: {QUEUE}, max_batch: 1, interval: 10ms, timeout: 1h }}
regions:
  fra:
    endpoints: {fra}
    probe: {{ interval: 1h, timeout: 1s }}
routes:
  - {{ name: app, regions: [fra] }}
"#,
        stuck = stuck.local_addr().expect("addr"),
        fra = endpoints(&fra),
    );
    let (gw, _) = Gateway::start(&config, &[]).await;
    let mut conn = H1::connect(gw.addr).await;
    const REQUESTS: u64 = 30;
    for i in 0..REQUESTS {
        let req = http::Request::get(format!("/r{i}"))
            .header("host", "app.test")
            .body(gateway_tests::client::empty())
            .expect("request");
        assert_eq!(conn.send(req).await.status, 200, "request {i}");
    }
    // One span is in the exporter's hands, at most `QUEUE` wait behind it: the rest are dropped.
    // A request's span is recorded once its answer is written, so on a busy machine the last
    // one may be counted a moment after the client has read it.
    let dropped_now = || async {
        let (_, metrics) = gw.admin_call("GET", "/metrics", None).await;
        let dropped = gateway_tests::metric(
            &metrics,
            "gateway_otlp_spans_dropped_total{reason=\"queue_full\"}",
        );
        (dropped, metrics)
    };
    eventually("the spans beyond the queue counted as dropped", || async {
        dropped_now().await.0 >= (REQUESTS - 1 - QUEUE) as f64
    })
    .await;
    let (dropped, metrics) = dropped_now().await;
    assert!(
        dropped >= (REQUESTS - 1 - QUEUE) as f64,
        "dropped {dropped} of {REQUESTS}:\n{metrics}"
    );
    assert_eq!(
        gateway_tests::metric(&metrics, "gateway_otlp_spans_exported_total "),
        0.0,
        "nothing reached a collector that never answers:\n{metrics}"
    );
}
