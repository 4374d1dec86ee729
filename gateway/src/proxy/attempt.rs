//! One attempt of a request: which endpoint it goes to (sticky, chosen, or failing open), how
//! long each read may wait, whether its first byte has an early-retry deadline (and a hedge),
//! the slots it holds while in flight; then, when the answer's head arrives, the hedge that
//! may have won and the time to first byte fed to the endpoint's latency and the route's
//! early-retry histogram.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_config::{OnAllDown, RouteTimeouts};
use gateway_health::Slowness;
use pingora::prelude::*;
use pingora::protocols::ALPN;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use crate::proxy::context::RequestCtx;
use crate::proxy::errors::ErrorPage;
use crate::proxy::hedge::{HedgeSlot, RequestHedge};
use crate::proxy::selection::{choose_fail_open, has_untried, Choice, InFlight, NoChoice};
use crate::routing::admission::{ShedReason, Slot};
use crate::routing::snapshot::{RoutePlan, RoutingSnapshot};
use crate::telemetry::lag::Lag;

/// The endpoint of the next attempt: the sticky one when it is honoured, else the selection's
/// choice from the serving tier; when every allowed region looks down, or a retry has tried
/// every endpoint of those that look up, the route fails open (unless it says `reject`). No
/// endpoint is an error that says why (the residency 503, *overloaded*, or the last failure).
pub(super) fn choose(
    ctx: &mut RequestCtx,
    snapshot: &RoutingSnapshot,
    plan: &RoutePlan,
) -> Result<Choice> {
    let sticky_choice = match (&ctx.sticky, &plan.route.sticky) {
        (Some(affinity), Some(settings)) => affinity.choose(snapshot, plan, settings, &ctx.tried),
        _ => None,
    };
    let chosen = match sticky_choice {
        Some(choice) => Ok(choice),
        None if ctx.fail_open => {
            choose_fail_open(snapshot, plan, &ctx.tried).ok_or(NoChoice::Exhausted)
        }
        None => match crate::proxy::selection::choose(snapshot, plan, &ctx.tried) {
            // Health may be wrong (the apps are probably fine): when every allowed region
            // looks down, or a retry has tried every endpoint of those that look up (the
            // last one just failed, and health has not seen it yet), try the allowed
            // regions' other endpoints in tier order rather than failing the request.
            Err(why @ (NoChoice::AllRegionsDown | NoChoice::Exhausted))
                if plan.route.on_all_down == OnAllDown::FailOpen =>
            {
                match choose_fail_open(snapshot, plan, &ctx.tried) {
                    Some(choice) => {
                        ctx.fail_open = true;
                        plan.metrics.failed_open();
                        tracing::debug!(target: super::LOG_TARGET, route = %plan.route.name, "no allowed region that looks up has an endpoint left: failing open");
                        Ok(choice)
                    }
                    None => Err(why),
                }
            }
            other => other,
        },
    };
    match chosen {
        Ok(choice) => Ok(choice),
        Err(NoChoice::AllRegionsDown) => {
            let message = format!("route {}: no allowed region is up", plan.route.name);
            ctx.refusal = Some(ErrorPage::AllRegionsDown);
            Err(Error::explain(ErrorType::HTTPStatus(503), message))
        }
        Err(NoChoice::AtCapacity) => {
            plan.metrics.shed(ShedReason::Capacity);
            ctx.shed = Some(ShedReason::Capacity);
            ctx.refusal = Some(ErrorPage::Overloaded(ShedReason::Capacity));
            let message = format!(
                "route {}: every allowed region is at capacity",
                plan.route.name
            );
            Err(Error::explain(ErrorType::HTTPStatus(503), message))
        }
        Err(NoChoice::Exhausted) => {
            let etype = ctx.last_failure.clone().unwrap_or(ErrorType::ConnectError);
            let mut e = Error::explain(etype, "no endpoint left to try");
            e.as_up();
            Err(e)
        }
    }
}

/// How long each read of the attempt may wait: the route's read timeout, at most what is left
/// of the total deadline (retries included); a deadline already passed is a read timeout.
pub(super) fn read_timeout(ctx: &RequestCtx, timeouts: &RouteTimeouts) -> Result<Duration> {
    let Some(end) = ctx.deadline else {
        return Ok(timeouts.read);
    };
    let left = end.saturating_duration_since(Instant::now());
    if left.is_zero() {
        let mut e = Error::explain(ErrorType::ReadTimedout, "request deadline passed");
        e.as_up();
        return Err(e);
    }
    Ok(timeouts.read.min(left))
}

/// Arms the first-byte deadline of early retry (and, to an HTTP/1.1 endpoint with `hedge`, the
/// hedge it may race) on a first attempt of a bodiless `GET`/`HEAD`/`OPTIONS` that has another
/// endpoint to go to. An attempt failing open is never cut early.
pub(super) fn arm_early_retry(
    session: &mut Session,
    ctx: &mut RequestCtx,
    snapshot: &Arc<RoutingSnapshot>,
    plan: &RoutePlan,
    choice: &Choice,
    peer: &mut HttpPeer,
    read_timeout: Duration,
) {
    let Some(early) = plan.early.as_ref().filter(|_| ctx.tried.is_empty()) else {
        return;
    };
    let body_empty = session.as_mut().is_body_empty();
    if ctx.fail_open
        || plan.route.retry.attempts == 0
        || !crate::routing::early::eligible(
            session.req_header(),
            body_empty,
            session.is_upgrade_req(),
        )
        || !has_untried(snapshot, plan, std::slice::from_ref(choice))
    {
        return;
    }
    let mut first_byte = early.first_byte();
    if early.settings.hedge && matches!(peer.options.alpn, ALPN::H1) {
        let slot = Arc::new(HedgeSlot::default());
        first_byte.hedge = Some(Arc::new(RequestHedge {
            snapshot: snapshot.clone(),
            route: ctx.route.unwrap_or_default(),
            first: choice.clone(),
            timeouts: plan.route.timeouts,
            read_timeout,
            slot: slot.clone(),
        }));
        ctx.hedge = Some(slot);
    }
    peer.options.first_byte = Some(first_byte);
}

/// Starts the attempt on `choice`: counted, holding a slot in its region's in-flight count
/// (the previous attempt's released) and counted in flight to its endpoint.
pub(super) fn begin(
    ctx: &mut RequestCtx,
    snapshot: &RoutingSnapshot,
    plan: &RoutePlan,
    choice: Choice,
) {
    plan.metrics.attempt(choice.region, !ctx.tried.is_empty());
    ctx.region_slot = Some(Slot::enter(
        &snapshot.regions[choice.region].health.in_flight,
    ));
    ctx.endpoint_attempt = Some(InFlight::start(&choice.endpoint));
    // Most requests make one attempt: room for it alone (a first push makes room for four,
    // 96 bytes held to the request's end).
    ctx.tried.reserve_exact(1);
    ctx.tried.push(choice);
    ctx.attempt_started = tokio::time::Instant::now();
    if ctx.export_span {
        ctx.attempt_times
            .push((ctx.started.elapsed(), ctx.retries.len()));
    }
    ctx.body_bytes = 0;
    ctx.grpc_messages = Default::default();
}

/// When the hedge answered first, the attempt becomes the hedge's (its endpoint, start and
/// in-flight count). The first attempt's wait was real (latency-aware choice sees it); its
/// connection is closed.
pub(super) fn adopt_hedge_winner(ctx: &mut RequestCtx) {
    let Some(hedged) = ctx.hedge.take().and_then(|slot| slot.take_winner()) else {
        return;
    };
    ctx.observe_current_wait();
    if let Some(early) = ctx.plan().and_then(|p| p.early.as_ref()) {
        early.won();
    }
    ctx.tried.push(hedged.choice);
    ctx.hedge_won = true;
    ctx.attempt_started = hedged.started;
    if ctx.export_span {
        let at = hedged.started.into_std();
        ctx.attempt_times
            .push((at.saturating_duration_since(ctx.started), ctx.retries.len()));
    }
    ctx.endpoint_attempt = Some(hedged.in_flight);
}

/// The attempt's time to first byte: into the route's early-retry histogram (when it has
/// early retry) and the endpoint's latency, which may count the answer as slow, unless the
/// gateway itself lags (`lag`): then its own delay is in the time, and only latency-aware
/// choice sees it.
pub(super) fn observe_first_byte(ctx: &RequestCtx, lag: &Lag) {
    let Some(c) = ctx.current() else {
        return;
    };
    let now = tokio::time::Instant::now();
    let ttfb = now.saturating_duration_since(ctx.attempt_started);
    let lagging = lag.saturated_at(now.into_std());
    if let Some(early) = ctx.plan().and_then(|p| p.early.as_ref()) {
        early.state.record_at(ttfb, now);
        // The answer of an early retry or of the hedge that won: fast, it gives its early
        // retry back (`EarlyState::settle`), unless the gateway lags (no evidence then, and
        // no time to add attempts).
        if !lagging
            && (ctx.hedge_won
                || (ctx.tried.len() == 2 && ctx.retries.first().is_some_and(|r| r == "early")))
        {
            early
                .state
                .settle(ttfb, early.state.deadline(&early.settings));
        }
    }
    let slowness = c.endpoint.observe(ttfb, now, lagging);
    // An excused answer is not counted: it comes with every answer of a saturated moment,
    // when the gateway can least afford the work.
    if !matches!(slowness, Slowness::Fine | Slowness::Excused) {
        let region = ctx.snapshot.regions[c.region].name.as_str();
        crate::telemetry::metrics::slow_answer(region, slowness);
        tracing::debug!(target: super::LOG_TARGET, region, endpoint = %c.endpoint.key.id, ?slowness, "slow answer");
    }
}
