//! The response to the client: the sticky cookie its header carries, the gateway's own JSON
//! page when a request fails before its response started, and the visible end of one that
//! fails after.

use http::header;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use crate::proxy::context::RequestCtx;
use crate::proxy::errors::{json_string, ErrorPage, TruncationCause};
use crate::proxy::request::overloaded_body;

/// Issues or replaces the sticky cookie when the endpoint that served is not the one the
/// request's cookie named (or there was no valid cookie), and counts the outcome.
pub(super) fn sticky_cookie(response: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
    let (Some(plan), Some(affinity), Some(served)) =
        (ctx.plan(), ctx.sticky.as_ref(), ctx.current())
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
        let allowed: Vec<String> = ctx
            .plan()
            .map(|p| {
                p.route
                    .allowed_regions
                    .iter()
                    .map(|r| r.to_string())
                    .collect()
            })
            .unwrap_or_default();
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
