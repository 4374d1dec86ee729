//! What a finished request leaves behind: the region's traffic sample and the route's request
//! metrics (through handles registered with the snapshot), the access line, the exported span
//! and the `request` debug line. The access line and the span are written straight into one
//! string each (`telemetry::json`), built only when the log wants the request or the trace is
//! sampled.

use std::time::Duration;

use http::header;
use pingora::proxy::Session;
use pingora::Error;

use crate::proxy::context::RequestCtx;
use crate::proxy::request::TRACEPARENT;
use crate::routing::admission::ShedReason;
use crate::routing::table::host_without_port;
use crate::telemetry::metrics::LabelSet;
use crate::telemetry::trace::TraceContext;

/// Records the finished request: traffic, metrics, the access line and span when wanted, and
/// the `request` line at debug level (target `gateway::proxy`).
pub(super) fn record(session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .unwrap_or(0);
    let served = ctx.current().map(|c| c.region);
    let elapsed = ctx.started.elapsed();
    if let Some(region) = served {
        ctx.snapshot.regions[region].health.traffic.record(status);
    }
    if let Some(plan) = ctx.plan() {
        plan.metrics.request(served, status, elapsed.as_secs_f64());
    }
    if let Some(code) = ctx.grpc_answer {
        crate::telemetry::metrics::grpc_answer(ctx.route_name(), code.name());
    }
    if crate::telemetry::access_log::wants(status) {
        crate::telemetry::access_log::write(access_line(session, e, ctx, status, elapsed));
    }
    if ctx.export_span {
        if let Some(span) = request_span(session, e, ctx, status, elapsed) {
            crate::telemetry::otlp::export_span(span);
        }
    }
    tracing::debug!(
        target: super::LOG_TARGET,
        route = ctx.route_name(),
        status,
        attempts = ctx.tried.len(),
        elapsed_ms = elapsed.as_millis() as u64,
        error = e.map(|e| e.to_string()),
        "request"
    );
}

/// The request's access log line (field names in the README's table), written straight into
/// one string.
fn access_line(
    session: &Session,
    e: Option<&Error>,
    ctx: &RequestCtx,
    status: u16,
    elapsed: Duration,
) -> String {
    let req = session.req_header();
    let header = |name: header::HeaderName| req.headers.get(name).and_then(|v| v.to_str().ok());
    let served = ctx.current();
    let tls = session.digest().and_then(|d| d.ssl_digest.as_ref());
    let mut line = String::with_capacity(640);
    let mut o = crate::telemetry::json::Obj::new(&mut line);
    crate::telemetry::access_log::now_rfc3339(o.key("time"));
    o.opt_str(
        "request_id",
        ctx.request_id.as_ref().and_then(|v| v.to_str().ok()),
    )
    .opt_str(
        "trace_id",
        match &ctx.trace {
            TraceContext::Started { value, .. } => {
                crate::telemetry::trace::trace_id(value.as_bytes())
            }
            TraceContext::Passed => req
                .headers
                .get(&TRACEPARENT)
                .and_then(|v| crate::telemetry::trace::trace_id(v.as_bytes())),
            TraceContext::None => None,
        },
    );
    match session.client_addr().and_then(|a| a.as_inet()) {
        Some(a) => o.ip("client_ip", a.ip()),
        None => o.null("client_ip"),
    };
    o.str("method", req.method.as_str())
        .opt_str(
            "host",
            header(header::HOST).or_else(|| req.uri.authority().map(|a| a.as_str())),
        )
        .str(
            "path",
            req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        )
        .str("protocol", version_name(req.version))
        .int("status", u64::from(status))
        .opt_num("grpc_status", ctx.grpc_answer.map(|c| c.value()))
        .int("bytes_in", session.as_ref().body_bytes_read() as u64)
        .int("bytes_out", session.as_ref().body_bytes_sent() as u64)
        .num("duration_ms", (elapsed.as_secs_f64() * 1e6).round() / 1e3)
        .opt_str("route", ctx.plan().map(|p| &*p.route.name))
        .opt_str(
            "region",
            served.map(|c| ctx.snapshot.regions[c.region].name.as_str()),
        )
        .opt_str("endpoint", served.map(|c| c.endpoint.key.id.as_str()));
    match served {
        Some(c) => o.socket_addr("upstream_address", c.endpoint.key.addr),
        None => o.null("upstream_address"),
    };
    o.opt_str(
        "upstream_protocol",
        served.map(|c| match c.settings.protocol {
            gateway_config::UpstreamProtocol::Http1 => "http1",
            gateway_config::UpstreamProtocol::Http2 => "http2",
            gateway_config::UpstreamProtocol::Auto => "auto",
        }),
    )
    .opt_num(
        "tier",
        served.and_then(|c| {
            ctx.plan()?
                .tiers
                .iter()
                .position(|t| t.iter().any(|(r, _)| *r == c.region))
        }),
    )
    .int("attempts", ctx.tried.len() as u64)
    .strs("retries", ctx.retries.iter().map(String::as_str))
    .bool("hedge_won", ctx.hedge_won)
    .opt_str("sticky", ctx.sticky_outcome)
    .bool("fail_open", ctx.fail_open)
    .opt_str("shed", ctx.shed.map(ShedReason::label))
    .opt_str("tls", tls.map(|t| &*t.version))
    .opt_str(
        "sni",
        tls.and_then(|t| t.extension.get::<crate::routing::tls::ClientSni>())
            .map(|sni| sni.0.as_str()),
    )
    .opt_str("user_agent", header(header::USER_AGENT))
    .opt_str("error", e.map(|e| e.etype().as_str()));
    o.end();
    line
}

/// `HTTP/1.1`, as the access log names a request's version.
fn version_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The request's span for OTLP export: attributes named as OpenTelemetry's HTTP conventions
/// where one exists (`http.request.method`, `url.path`, …) and `gateway.*` for the rest, one
/// `attempt` event per endpoint tried. The span's parent is the caller's span when the trace
/// came with the request; a trace the gateway started has the span as its root, with the id
/// the upstream was sent as its parent.
fn request_span(
    session: &Session,
    e: Option<&Error>,
    ctx: &RequestCtx,
    status: u16,
    elapsed: Duration,
) -> Option<String> {
    let req = session.req_header();
    let (trace_id, span_id, parent_span_id) = match &ctx.trace {
        TraceContext::Started { value, .. } => {
            let ids = crate::telemetry::trace::ids(value.as_bytes())?;
            (ids.trace_id, ids.parent_id, None)
        }
        TraceContext::Passed => {
            let ids = crate::telemetry::trace::ids(req.headers.get(&TRACEPARENT)?.as_bytes())?;
            (ids.trace_id, fastrand::u64(1..), Some(ids.parent_id))
        }
        TraceContext::None => return None,
    };
    let start = crate::telemetry::otlp::unix_nanos_ago(elapsed);
    let mut name = String::with_capacity(32);
    name.push_str(req.method.as_str());
    if let Some(plan) = ctx.plan() {
        name.push(' ');
        name.push_str(&plan.route.name);
    }
    let mut span = crate::telemetry::otlp::SpanJson::new(
        trace_id,
        span_id,
        parent_span_id,
        &name,
        start,
        start + elapsed.as_nanos() as u64,
        // The gateway's own gRPC answer is a failure sent with HTTP 200.
        status == 0 || status >= 500 || ctx.grpc_answer.is_some(),
    );
    span.str("http.request.method", req.method.as_str())
        .str("url.path", req.uri.path())
        .str(
            "network.protocol.version",
            match req.version {
                http::Version::HTTP_2 => "2",
                http::Version::HTTP_10 => "1.0",
                _ => "1.1",
            },
        )
        .int("gateway.attempts", ctx.tried.len() as u64);
    if let Some(host) = req
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
    {
        span.str("server.address", host_without_port(host));
    }
    if status > 0 {
        span.int("http.response.status_code", u64::from(status));
    }
    if let Some(code) = ctx.grpc_answer {
        span.int("rpc.grpc.status_code", u64::from(code.value()));
    }
    if let Some(ip) = session.client_addr().and_then(|a| a.as_inet()) {
        span.ip("client.address", ip.ip());
    }
    if let Some(tls) = session.digest().and_then(|d| d.ssl_digest.as_ref()) {
        // OpenTelemetry's names: `tls` and `1.3`, where Pingora says `TLSv1.3`.
        span.str("tls.protocol.name", "tls").str(
            "tls.protocol.version",
            tls.version.strip_prefix("TLSv").unwrap_or(&tls.version),
        );
        if let Some(sni) = tls.extension.get::<crate::routing::tls::ClientSni>() {
            span.str("tls.client.server_name", &sni.0);
        }
    }
    if let Some(plan) = ctx.plan() {
        span.str("gateway.route", &plan.route.name);
    }
    if let Some(c) = ctx.current() {
        span.str(
            "gateway.region",
            ctx.snapshot.regions[c.region].name.as_str(),
        )
        .str("gateway.endpoint", c.endpoint.key.id.as_str());
    }
    if let Some(id) = ctx.request_id.as_ref().and_then(|v| v.to_str().ok()) {
        span.str("gateway.request_id", id);
    }
    if ctx.fail_open {
        span.bool("gateway.fail_open", true);
    }
    if ctx.hedge_won {
        span.bool("gateway.hedge_won", true);
    }
    if let Some(shed) = ctx.shed {
        span.str("gateway.shed", shed.label());
    }
    if let Some(sticky) = ctx.sticky_outcome {
        span.str("gateway.sticky", sticky);
    }
    if let Some(e) = e {
        span.str("error.type", e.etype().as_str());
    }
    for (i, c) in ctx.tried.iter().enumerate() {
        let (after, causes) = ctx.attempt_times.get(i).copied().unwrap_or_default();
        span.event(start + after.as_nanos() as u64, "attempt")
            .int("gateway.attempt", i as u64 + 1)
            .str(
                "gateway.region",
                ctx.snapshot.regions[c.region].name.as_str(),
            )
            .str("gateway.endpoint", c.endpoint.key.id.as_str())
            .socket_addr("server.address", c.endpoint.key.addr);
        // Why this attempt was followed by another one: the cause recorded after it began
        // and before the next one did (a hedge that won follows without one).
        let next = ctx
            .attempt_times
            .get(i + 1)
            .map_or(ctx.retries.len(), |(_, n)| *n);
        if let Some(cause) = ctx.retries.get(causes).filter(|_| causes < next) {
            span.str("gateway.retried_for", cause);
        }
    }
    Some(span.finish())
}
