//! The response to the client: the sticky cookie its header carries, the gateway's own JSON
//! page when a request fails before its response started, and the visible end of one that
//! fails after.

use http::header;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use crate::proxy::context::RequestCtx;
use crate::proxy::errors::{json_string, respond_grpc, respond_json, ErrorPage, TruncationCause};
use crate::proxy::grpc::Code;
use crate::proxy::request::overloaded_body;
use crate::routing::admission::ShedReason;
use crate::telemetry::metrics::LabelSet;

/// Issues or replaces the sticky cookie when the endpoint that served is not the one the
/// request's cookie named (or there was no valid cookie), and counts the outcome.
pub(super) fn sticky_cookie(response: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
    let (Some(plan), Some(affinity), Some(served)) =
        (ctx.plan(), ctx.sticky.as_deref(), ctx.current())
    else {
        return Ok(());
    };
    let Some(settings) = &plan.route.sticky else {
        return Ok(());
    };
    let (cookie, outcome) = affinity.response_cookie(&ctx.snapshot, plan, settings, served);
    if let Some(cookie) = cookie {
        response.append_header(header::SET_COOKIE, cookie)?;
    }
    ctx.sticky_outcome = Some(outcome);
    Ok(())
}

/// The JSON body of the gateway's own answer `page` (its `message`, and the route's allowed
/// regions, the shed reason or the attempts made).
pub(super) fn error_body(page: ErrorPage, ctx: &RequestCtx) -> String {
    let message = page.message();
    if let ErrorPage::Overloaded(reason) = page {
        overloaded_body(ctx, reason)
    } else if page == ErrorPage::AllRegionsDown {
        let allowed = allowed_regions(ctx);
        format!(
            "{{\"error\":\"{message}\",\"route\":{},\"allowed_regions\":{}}}\n",
            json_string(ctx.route_name()),
            serde_json::Value::from(allowed)
        )
    } else {
        format!(
            "{{\"error\":\"{message}\",\"route\":{},\"attempts\":{}}}\n",
            json_string(ctx.route_name()),
            ctx.tried.len()
        )
    }
}

/// Writes the gateway's own answer: `json` with `status`, or, to a gRPC request, a
/// Trailers-Only answer with the gRPC status and reason `grpc` gives, noted for the access log
/// and metrics (a 503's JSON carries `Retry-After`, its gRPC form `grpc-retry-pushback-ms`).
/// Only the form the request takes is built.
pub(super) async fn answer(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    json: impl FnOnce(&RequestCtx) -> String,
    grpc: impl FnOnce(&RequestCtx) -> (Code, String),
) -> Result<()> {
    let Some(kind) = ctx.grpc else {
        let body = json(ctx);
        return respond_json(session, ctx.request_id_echo(), status, body).await;
    };
    let (code, reason) = grpc(ctx);
    ctx.grpc_answer = Some(code);
    respond_grpc(
        session,
        ctx.request_id_echo(),
        kind,
        (code, &reason),
        status == 503,
    )
    .await
}

/// The gRPC status and reason of the gateway's own answer `page` (the README's table).
pub(super) fn grpc_status(page: ErrorPage, ctx: &RequestCtx) -> (Code, String) {
    let route = ctx.route_name();
    let attempts = ctx.tried.len();
    match page {
        ErrorPage::AllRegionsDown => (
            Code::Unavailable,
            format!(
                "route {route}: no allowed region is up (allowed: {})",
                allowed_regions(ctx).join(", ")
            ),
        ),
        ErrorPage::Overloaded(reason) => (Code::Unavailable, overloaded_reason(ctx, reason)),
        ErrorPage::UpstreamFailed => (
            Code::Unavailable,
            format!("route {route}: the upstream failed before answering (attempts: {attempts})"),
        ),
        ErrorPage::UpstreamTimeout if ctx.deadline_passed() => {
            (Code::DeadlineExceeded, deadline_reason(ctx))
        }
        ErrorPage::UpstreamTimeout => (
            Code::Unavailable,
            format!("route {route}: upstream timeout (attempts: {attempts})"),
        ),
        ErrorPage::BodyTooLarge(limit) => (
            Code::ResourceExhausted,
            format!(
                "route {route}: request over {} ({} bytes)",
                limit.field, limit.max
            ),
        ),
        ErrorPage::BodyTimeout => (
            Code::DeadlineExceeded,
            format!("{} while the request body was read", deadline_reason(ctx)),
        ),
        other => (
            Code::of_http(other.status()),
            format!("route {route}: {}", other.message()),
        ),
    }
}

/// The route's allowed regions, by name.
fn allowed_regions(ctx: &RequestCtx) -> Vec<String> {
    ctx.plan()
        .map(|p| {
            p.route
                .allowed_regions
                .iter()
                .map(|r| r.to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Why a request's deadline passed: whose it was.
fn deadline_reason(ctx: &RequestCtx) -> String {
    let route = ctx.route_name();
    match ctx.grpc_timeout {
        Some((timeout, true)) => {
            format!("route {route}: deadline passed (the client's grpc-timeout, {timeout:?})")
        }
        _ => format!("route {route}: deadline passed (the route's timeouts.request)"),
    }
}

/// The reason of an overloaded answer to a gRPC request.
pub(super) fn overloaded_reason(ctx: &RequestCtx, reason: ShedReason) -> String {
    format!(
        "route {}: overloaded (shed: {})",
        ctx.route_name(),
        reason.label()
    )
}

/// Ends a response that failed after it started: nothing more is written, the client's
/// side ends abnormally (HTTP/1.1: the connection closes; HTTP/2: RST_STREAM with
/// INTERNAL_ERROR, other streams unharmed), and the truncation is counted and logged once.
pub(super) async fn truncate(session: &mut Session, e: &Error, ctx: &RequestCtx) {
    let cause = TruncationCause::of(e);
    let (region, endpoint) = ctx
        .current()
        .map(|c| {
            (
                ctx.snapshot.regions[c.region].name.to_string(),
                c.endpoint.key.id.to_string(),
            )
        })
        .unwrap_or_else(|| ("none".into(), "none".into()));
    crate::telemetry::metrics::truncated(ctx.route_name(), &region, &endpoint, cause.label());
    if cause == TruncationCause::Client {
        let reason = if *e.etype() == ErrorType::WriteTimedout {
            "send_timeout"
        } else {
            "truncated"
        };
        crate::telemetry::clientlog::record(reason, e);
        session.shutdown().await;
        return;
    }
    tracing::warn!(
        target: super::LOG_TARGET,
        route = ctx.route_name(),
        region,
        endpoint,
        cause = cause.label(),
        error = %e,
        "response truncated after it started"
    );
    session.shutdown().await;
}
