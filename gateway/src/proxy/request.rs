//! The request phase, before any upstream is chosen: the parsed head checked, the request id
//! and trace context, the route, a declared body over the route's limit, admission, the
//! deadlines, the request counted in the route's budgets and its sticky cookie read; then the
//! headers forwarded upstream and the body checked as it is read. Each check that answers the
//! client itself returns `true` (answered).

use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use pingora::http::{FieldWriter, RequestHeader};
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use crate::proxy::affinity::Affinity;
use crate::proxy::context::RequestCtx;
use crate::proxy::errors::{json_echo, json_string, BodyLimit, ErrorPage};
use crate::proxy::grpc::{self, Code, GrpcKind};
use crate::proxy::headers;
use crate::proxy::response::{answer, grpc_status, overloaded_reason};
use crate::proxy::GatewayProxy;
use crate::routing::admission::{ShedReason, Slot};
use crate::routing::snapshot::RoutePlan;
use crate::routing::table::host_without_port;
use crate::telemetry::metrics::LabelSet;
use crate::telemetry::trace::TraceContext;

/// W3C trace context headers.
// Parsed names: a `&str` name is parsed again on every lookup.
pub(super) const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

impl GatewayProxy {
    /// Starts the lag monitor on the proxy's runtime at its first request, with the adaptive
    /// in-flight limit following the lag.
    pub(super) fn start_lag_monitor(&self) {
        self.lag.start_here(|| {
            let (limit, snapshot) = (self.limit.clone(), self.snapshot.clone());
            Box::new(move |lag| {
                let server = &snapshot.load().config.server;
                if server.adaptive_limit {
                    let next = limit.adjust(lag, server.max_in_flight as usize);
                    crate::telemetry::metrics::admission_limit(next);
                }
            })
        });
    }

    /// Admits the request into the process's and the route's in-flight limits, or answers a
    /// 503 *overloaded* naming the one that is full.
    pub(super) async fn refuse_overload(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let Err(reason) = self.admit(ctx) else {
            return Ok(false);
        };
        if let Some(plan) = ctx.plan() {
            plan.metrics.shed(reason);
        }
        ctx.shed = Some(reason);
        answer(
            session,
            ctx,
            503,
            |ctx| overloaded_body(ctx, reason),
            |ctx| (Code::Unavailable, overloaded_reason(ctx, reason)),
        )
        .await?;
        Ok(true)
    }

    /// Admits the request into the process's and the route's in-flight limits, or says which
    /// one is full.
    fn admit(&self, ctx: &mut RequestCtx) -> Result<(), ShedReason> {
        let server = &ctx.snapshot.config.server;
        let process = self
            .limit
            .admit(server.max_in_flight as usize, server.adaptive_limit)?;
        if let Some(plan) = ctx.plan() {
            if let Some(limit) = plan.route.max_in_flight {
                let route = Slot::try_enter(&plan.failover.in_flight, limit as usize)
                    .ok_or(ShedReason::Route)?;
                ctx.route_slot = Some(route);
            }
        }
        ctx.process_slot = Some(process);
        Ok(())
    }
}

/// A head Pingora parsed but the limits refuse (missing `Host` 400, target 414, header size or
/// count 431): answered, and the connection closed.
pub(super) async fn refuse_bad_head(session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    let Some(violation) =
        headers::violation(session.req_header(), &ctx.snapshot.config.server.limits)
    else {
        return Ok(false);
    };
    crate::telemetry::clientlog::record(violation.label(), &violation.status());
    session.set_keepalive(None);
    let status = violation.status();
    answer(
        session,
        ctx,
        status,
        |_| format!("{{\"error\":\"{}\"}}\n", violation.label()),
        |_| {
            let code = grpc::Code::of_http(status);
            (code, format!("request refused: {}", violation.label()))
        },
    )
    .await?;
    Ok(true)
}

/// Notes whether the request speaks gRPC (its `content-type`): the gateway's own answers to it
/// are gRPC statuses, and its body is limited per message.
pub(super) fn note_grpc(session: &Session, ctx: &mut RequestCtx) {
    let req = session.req_header();
    // gRPC is always a POST: other requests skip the header lookup.
    if req.method == http::Method::POST {
        ctx.grpc = GrpcKind::of(&req.headers);
    }
}

/// The request id (the client's, when usable, else a new one) and the trace context to
/// forward; whether the request's span is exported.
pub(super) fn identify(session: &Session, ctx: &mut RequestCtx) {
    let id_header = &ctx.snapshot.config.server.request_id_header;
    let mut id = match session.req_header().headers.get(id_header) {
        Some(v) if !v.is_empty() && v.len() <= 200 => v.clone(),
        _ => new_request_id(),
    };
    never_indexed(&mut id);
    ctx.request_id = Some(id);
    ctx.trace = TraceContext::of(
        session.req_header().headers.get(&TRACEPARENT),
        ctx.snapshot.config.server.start_traces,
    );
    ctx.export_span = crate::telemetry::otlp::on()
        && ctx
            .trace
            .sampled(session.req_header().headers.get(&TRACEPARENT));
}

/// Looks the route up by host and path; no route is a 404 echoing at most 256 bytes of each.
pub(super) async fn refuse_unrouted(session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    let req = session.req_header();
    let authority = req
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let host = host_without_port(authority);
    ctx.route = ctx.snapshot.table.lookup(host, req.uri.path());
    if ctx.route.is_some() {
        return Ok(false);
    }
    let (host, path) = (host.to_string(), req.uri.path().to_string());
    answer(
        session,
        ctx,
        404,
        |_| {
            format!(
                "{{\"error\":\"no route\",\"host\":{},\"path\":{}}}\n",
                json_echo(&host),
                json_echo(&path)
            )
        },
        |_| {
            let reason = format!(
                "no route for host {} and path {}",
                json_echo(&host),
                json_echo(&path)
            );
            (Code::Unimplemented, reason)
        },
    )
    .await?;
    Ok(true)
}

/// A declared body (`Content-Length`) over the route's limit on the whole body (a gRPC
/// stream's, or `max_body_bytes`): 413 (gRPC: `RESOURCE_EXHAUSTED`) before anything is read or
/// sent upstream.
pub(super) async fn refuse_declared_body(
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let Some(max) = ctx.plan().and_then(|p| body_limits(p, ctx.grpc).0) else {
        return Ok(false);
    };
    let declared = session
        .req_header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if session.is_upgrade_req() || declared.is_none_or(|n| n <= max) {
        return Ok(false);
    }
    crate::telemetry::clientlog::record("body_too_large", &max);
    session.set_keepalive(None);
    let page = ErrorPage::BodyTooLarge(BodyLimit {
        field: "max_body_bytes",
        max,
    });
    answer(
        session,
        ctx,
        413,
        |_| format!("{{\"error\":\"body too large\",\"max_bytes\":{max}}}\n"),
        |ctx| grpc_status(page, ctx),
    )
    .await?;
    Ok(true)
}

/// The limits on a request body: on its whole length, and on each gRPC message. A gRPC stream
/// (whose messages the gateway reads) is bound by `max_body_bytes` only where the route set
/// it, and by `max_grpc_message_bytes`; anything else by `max_body_bytes`.
fn body_limits(plan: &RoutePlan, grpc: Option<GrpcKind>) -> (Option<u64>, Option<u64>) {
    match grpc {
        Some(kind) if kind.framed() => (
            plan.route.max_grpc_stream_bytes,
            plan.route.max_grpc_message_bytes,
        ),
        _ => (plan.route.max_body_bytes, None),
    }
}

/// The route's total deadline (`timeouts.request`, not for upgrades) and the client write
/// timeout within what is left of it.
pub(super) fn set_deadlines(session: &mut Session, ctx: &mut RequestCtx) {
    if let Some(limit) = ctx.plan().and_then(|p| p.route.timeouts.request) {
        if !session.is_upgrade_req() {
            ctx.deadline = Some(ctx.started + limit);
        }
    }
    // A gRPC client's deadline bounds the request when it ends sooner; what is left of it is
    // forwarded with each attempt (`forward_headers`).
    if ctx.grpc.is_some() {
        let timeout = session
            .req_header()
            .headers
            .get(grpc::GRPC_TIMEOUT)
            .and_then(grpc::parse_timeout);
        if let Some(timeout) = timeout {
            let end = ctx.started + timeout;
            let sooner = ctx.deadline.is_none_or(|route| end < route);
            if sooner {
                ctx.deadline = Some(end);
            }
            ctx.grpc_timeout = Some((timeout, sooner));
        }
    }
    // A client that stops taking the response is cut when one write has waited
    // `server.send_timeout`, or the route's deadline, whichever comes first; meanwhile the
    // upstream is not read further (backpressure), so it costs a few body buffers.
    let send = ctx.snapshot.config.server.limits.send_timeout;
    let send = ctx.deadline.map_or(send, |end| {
        // From the request's start (microseconds ago), not a fresh clock read.
        send.min(end.saturating_duration_since(ctx.started))
            .max(std::time::Duration::from_millis(1))
    });
    session.as_mut().set_write_timeout(Some(send));
}

/// Counts the admitted request in the route's retry and early-retry budgets and reads its
/// sticky cookie or affinity header.
pub(super) fn count_and_read_affinity(session: &Session, ctx: &mut RequestCtx) {
    let Some(plan) = ctx.plan() else {
        return;
    };
    // The request's start, read once when its context was made, counts it in both budgets.
    let arrived = tokio::time::Instant::from_std(ctx.started);
    plan.failover.budget.on_request_at(arrived);
    if let Some(early) = &plan.early {
        early.state.budget.on_request_at(arrived);
    }
    if let Some(settings) = &plan.route.sticky {
        ctx.sticky = Some(Box::new(Affinity::of_request(
            &session.req_header().headers,
            settings,
            &ctx.snapshot,
            plan,
        )));
    }
}

/// What the gateway adds to the upstream request: forwarding headers (the client's kept only
/// from `server.trusted_proxies`), `X-Forwarded-Proto`, the request id, a gRPC request's
/// `grpc-timeout` and a `traceparent` the gateway started.
fn forwarding<'a>(session: &Session, ctx: &'a RequestCtx) -> headers::Forwarding<'a> {
    let client_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let trusted_proxies = &ctx.snapshot.config.server.trusted_proxies;
    let trusted = !trusted_proxies.is_empty()
        && client_ip.is_some_and(|ip| trusted_proxies.iter().any(|net| net.contains(&ip)));
    let grpc_timeout = match (ctx.grpc_timeout, ctx.deadline) {
        (Some(_), Some(end)) => Some(grpc::format_timeout(
            end.saturating_duration_since(Instant::now()),
        )),
        _ => None,
    };
    let trace = match &ctx.trace {
        TraceContext::Started { value, replaced } => Some((value, *replaced)),
        _ => None,
    };
    headers::Forwarding {
        client_ip,
        trusted,
        upgrade: session.is_upgrade_req(),
        tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
        request_id: ctx.request_id.as_ref().map(|id| {
            (
                &ctx.snapshot.config.server.request_id_header,
                &ctx.snapshot.request_id_header,
                id,
            )
        }),
        grpc_timeout,
        trace,
    }
}

/// The upstream request's head, from a copy of the client's (see [`forwarding`]).
pub(super) fn forward_headers(
    session: &Session,
    upstream: &mut RequestHeader,
    ctx: &RequestCtx,
) -> Result<()> {
    headers::forward(session.req_header(), upstream, &forwarding(session, ctx))
}

/// The upstream request's head as the client's with fields added, when that is all that
/// changes (see [`headers::forward_fields`]).
pub(super) fn forward_fields(
    session: &Session,
    fields: &mut FieldWriter<'_>,
    ctx: &RequestCtx,
) -> Result<bool> {
    headers::forward_fields(session.req_header(), fields, &forwarding(session, ctx))
}

/// A chunk of the request body as it is read: past the route's total deadline it is a 408,
/// past `max_body_bytes` (a body without a declared length that grew) a 413, both the client's
/// failures.
pub(super) fn check_body_chunk(
    session: &mut Session,
    ctx: &mut RequestCtx,
    chunk: &Bytes,
) -> Result<()> {
    // The route's total deadline runs while the body is read too: a client trickling its
    // upload cannot hold the request (and an upstream connection) past it.
    if ctx.deadline.is_some_and(|end| Instant::now() >= end) {
        return Err(refuse_body(
            session,
            ctx,
            ErrorPage::BodyTimeout,
            ("body_timeout", &"timeouts.request"),
            "request deadline passed while the body was read",
        ));
    }
    let (whole, message) = match ctx.plan() {
        Some(plan) if !session.is_upgrade_req() => body_limits(plan, ctx.grpc),
        _ => return Ok(()),
    };
    // A body without a declared length that grew past the limit, or a gRPC message declared
    // over it: the client's fault.
    let mut over = None;
    if let Some(max) = whole {
        ctx.body_bytes += chunk.len() as u64;
        if ctx.body_bytes > max {
            over = Some(("max_body_bytes", max, "request body over max_body_bytes"));
        }
    }
    if let (None, Some(max)) = (over, message) {
        if ctx.grpc_messages.feed(chunk, max).is_err() {
            let why = "gRPC message over max_grpc_message_bytes";
            over = Some(("max_grpc_message_bytes", max, why));
        }
    }
    let Some((field, max, why)) = over else {
        return Ok(());
    };
    let page = ErrorPage::BodyTooLarge(BodyLimit { field, max });
    Err(refuse_body(
        session,
        ctx,
        page,
        ("body_too_large", &max),
        why,
    ))
}

/// A body the client is refused for: counted as the client's failure (`reason` and its
/// detail), answered with `page` once the proxy ends the request, and the connection closed.
fn refuse_body(
    session: &mut Session,
    ctx: &mut RequestCtx,
    page: ErrorPage,
    (reason, detail): (&'static str, &dyn std::fmt::Display),
    why: &'static str,
) -> Box<Error> {
    crate::telemetry::clientlog::record(reason, detail);
    ctx.refusal = Some(page);
    session.set_keepalive(None);
    let mut e = Error::explain(ErrorType::HTTPStatus(page.status()), why);
    e.as_down();
    e
}

/// The JSON body of an overloaded 503.
pub(super) fn overloaded_body(ctx: &RequestCtx, reason: ShedReason) -> String {
    format!(
        "{{\"error\":\"overloaded\",\"route\":{},\"reason\":\"{}\"}}\n",
        json_string(ctx.route_name()),
        reason.label()
    )
}

/// Marks a value that differs on every request (the request id, a started `traceparent`) as
/// one HPACK must not index: HTTP/2 peers (clients, HTTP/2 upstreams) get it as a
/// never-indexed literal. Indexed, each new value went into the connection's dynamic table,
/// evicting entries that do repeat, and every later value of the name was compared with all
/// the old ones there first (about 57 comparisons per answer on a busy TLS h2 connection).
/// The value's bytes are unchanged.
pub(super) fn never_indexed(value: &mut HeaderValue) {
    value.set_sensitive(true);
}

/// A random 128-bit request id as 32 lowercase hex digits (thread-local PRNG: no syscall per
/// request; written straight into the value, no formatting machinery).
fn new_request_id() -> HeaderValue {
    let mut digits = [0u8; 32];
    crate::telemetry::trace::hex_lower(&fastrand::u128(..).to_be_bytes(), &mut digits);
    HeaderValue::from_bytes(&digits).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new request id is 32 lowercase hex digits; marked never indexed (as `identify` marks
    /// every id it forwards), its bytes stay what they were.
    #[test]
    fn a_new_request_id_is_32_hex_digits_and_is_marked_never_indexed_unchanged() {
        let mut id = new_request_id();
        let bytes = id.as_bytes().to_vec();
        assert_eq!(bytes.len(), 32);
        assert!(
            bytes.iter().all(|b| b"0123456789abcdef".contains(b)),
            "{bytes:?}"
        );
        assert_ne!(new_request_id(), id, "two ids alike");
        never_indexed(&mut id);
        assert!(id.is_sensitive());
        assert_eq!(id.as_bytes(), bytes.as_slice());
    }
}
