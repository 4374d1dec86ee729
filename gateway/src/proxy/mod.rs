//! The Pingora proxy: route matching, upstream selection, proxy headers, retries, error pages.
//!
//! Each request loads the current [`RoutingSnapshot`] once, in `new_ctx`, and keeps it to the
//! end, so a reload never changes the rules under a request in flight.
//!
//! This folder is the request path: this file holds the `ProxyHttp` callbacks in the order
//! Pingora calls them, and the files beside it the decisions and pieces they call. Imports
//! `routing` and `telemetry`, never the control plane.

pub(crate) mod affinity;
pub(crate) mod errors;
pub mod headers;
pub(crate) mod hedge;
pub(crate) mod peer;
pub(crate) mod retry;
pub(crate) mod selection;
pub(crate) mod upstream;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use gateway_config::OnAllDown;
use gateway_health::{Failure, Passive, Slowness};
use http::header::{self, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::ALPN;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::upstreams::peer::FIRST_BYTE_DEADLINE;
use pingora::{Error, ErrorSource, ErrorType};

use crate::proxy::affinity::Affinity;
use crate::proxy::errors::{json_echo, json_string, respond_json, ErrorPage, TruncationCause};
use crate::proxy::hedge::{HedgeSlot, RequestHedge};
use crate::proxy::selection::{
    choose, choose_fail_open, has_untried, has_untried_fail_open, Choice, InFlight, NoChoice,
};
use crate::routing::admission::{ProcessLimit, ShedReason, Slot};
use crate::routing::snapshot::{RoutePlan, RoutingSnapshot};
use crate::routing::table::{host_without_port, RouteIndex};
use crate::telemetry::lag::Lag;
use crate::telemetry::metrics::LabelSet;
use crate::telemetry::trace::TraceContext;

/// W3C trace context headers.
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The gateway's proxy logic; cheap to share across Pingora's workers.
pub(crate) struct GatewayProxy {
    snapshot: Arc<ArcSwap<RoutingSnapshot>>,
    /// Requests in flight through the process and its limit (admission control).
    limit: Arc<ProcessLimit>,
    /// The proxy runtime's scheduling lag.
    lag: Arc<Lag>,
}

impl GatewayProxy {
    /// A proxy that reads routing from `snapshot` (swapped on reload) and admits requests
    /// under `limit`.
    pub fn new(snapshot: Arc<ArcSwap<RoutingSnapshot>>, limit: Arc<ProcessLimit>) -> Self {
        Self {
            snapshot,
            limit,
            lag: Arc::default(),
        }
    }

    /// Reports a failed attempt to passive health; a timeout while the gateway itself is
    /// saturated is excused (it says nothing about the upstream).
    fn report_failure(
        &self,
        ctx: &RequestCtx,
        kind: Failure,
        cause: &dyn std::fmt::Display,
    ) -> bool {
        let Some(choice) = ctx.current() else {
            return false;
        };
        let timeout = matches!(kind, Failure::Timeout { .. });
        if timeout && self.lag.saturated() {
            crate::telemetry::metrics::timeout_excused();
            tracing::debug!(endpoint = %choice.endpoint.key.id, lag_ms = self.lag.current().as_millis() as u64, "upstream timeout while the gateway is saturated: not counted");
            return false;
        }
        if let Failure::Timeout { started } = kind {
            // The wait was real: latency-aware choice moves traffic away before ejection does.
            // (Its outlier verdict is moot: the timeout itself counts below.)
            let now = tokio::time::Instant::now();
            choice
                .endpoint
                .latency
                .observe(now.saturating_duration_since(started), now);
        }
        let passive = choice.endpoint.report_failure(kind);
        let region = ctx.snapshot.regions[choice.region].name.as_str();
        if passive == Passive::SameMoment {
            tracing::debug!(region, endpoint = %choice.endpoint.key.id, %cause, "timeout in a slow moment already counted: not counted again");
            return true;
        }
        crate::telemetry::metrics::passive_failure(region, timeout);
        tracing::debug!(region, endpoint = %choice.endpoint.key.id, ?kind, ?passive, %cause, "passive failure");
        passive.failing()
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

/// Per-request state.
pub struct RequestCtx {
    snapshot: Arc<RoutingSnapshot>,
    route: Option<RouteIndex>,
    request_id: Option<HeaderValue>,
    /// Endpoints tried so far, in order; the last one is the current attempt.
    tried: Vec<Choice>,
    /// When the current attempt began (for passive health: timeouts of attempts that all
    /// waited through one slow moment count once).
    attempt_started: tokio::time::Instant,
    /// Request body bytes sent in the current attempt (for `max_body_bytes`).
    body_bytes: u64,
    /// Why the gateway itself answers, when selection decided it (the residency 503).
    refusal: Option<ErrorPage>,
    /// The current attempt's response status is to be retried (set in the response filter).
    status_retry: bool,
    /// Type of the last upstream failure, reported when no endpoint is left to try.
    last_failure: Option<ErrorType>,
    /// Sticky-session state, on routes with `sticky`.
    sticky: Option<Affinity>,
    /// Whether the response to the client has started; the error path decides from it.
    response: ResponsePhase,
    /// The route's total deadline (`timeouts.request`), unless off or the request upgrades.
    deadline: Option<Instant>,
    started: Instant,
    /// Held while the request is in flight (the process's and the route's limits).
    process_slot: Option<Slot>,
    route_slot: Option<Slot>,
    /// Held while the current attempt is in flight to its region (capacity).
    region_slot: Option<Slot>,
    /// Held while the current attempt is in flight to its endpoint (latency-aware choice).
    endpoint_attempt: Option<InFlight>,
    /// The route fails open (every allowed region looked down, or a retry had tried every
    /// endpoint of those that looked up): attempts ignore health.
    fail_open: bool,
    /// The current attempt's hedge, when it may be hedged (`hedge.rs`).
    hedge: Option<Arc<HedgeSlot>>,
    /// For the access log: why each retry was made, the sticky outcome, why the request was
    /// shed, whether a hedge answered.
    retries: Vec<String>,
    sticky_outcome: Option<&'static str>,
    shed: Option<&'static str>,
    hedge_won: bool,
    /// The W3C trace context to forward.
    trace: TraceContext,
    /// The request's span is exported (`server.otlp` is set and the trace is sampled).
    export_span: bool,
    /// When each attempt began, after `started`, and how many retry causes `retries` held then;
    /// kept only for an exported span.
    attempt_times: Vec<(std::time::Duration, usize)>,
}

/// Where the response to the client stands. Before its header goes out, a failure may still be
/// retried or answered with an error page; from then on the only honest answer to a failure is
/// to end the response abnormally (HTTP/1.1: close the connection before the final chunk or the
/// declared length; HTTP/2: RST_STREAM), writing no byte the upstream did not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponsePhase {
    /// No response byte has gone to the client.
    NotStarted,
    /// The response header (or a `101` upgrade) has been handed to the client.
    Started,
}

impl RequestCtx {
    fn plan(&self) -> Option<&RoutePlan> {
        self.route.and_then(|r| self.snapshot.routes.get(r))
    }

    fn route_name(&self) -> &str {
        self.plan().map(|p| &*p.route.name).unwrap_or("-")
    }

    /// Whether another attempt is allowed by the route's attempt count and, when
    /// `budgeted`, the retry budget.
    ///
    /// `budgeted: false` is for requests stuck on an endpoint that health has just marked down:
    /// they are bounded by the requests in flight, and moving them to a healthy region is the
    /// failover itself, so they do not spend the budget that protects a sick fleet.
    fn may_retry_with(&self, budgeted: bool) -> bool {
        let Some(plan) = self.plan() else {
            return false;
        };
        let retries_done = self.tried.len().saturating_sub(1) as u32;
        // A retry that finds no untried endpoint in a region that looks up may still fail
        // open (see `upstream_peer`).
        let fails_open = self.fail_open || plan.route.on_all_down == OnAllDown::FailOpen;
        retries_done < plan.route.retry.attempts
            && ((!self.fail_open && has_untried(&self.snapshot, plan, &self.tried))
                || (fails_open && has_untried_fail_open(&self.snapshot, plan, &self.tried)))
            && (!budgeted || plan.failover.budget.try_retry())
    }

    fn current(&self) -> Option<&Choice> {
        self.tried.last()
    }
}

/// The facts about the current attempt that the retry decision needs.
fn attempt_facts(
    session: &Session,
    ctx: &RequestCtx,
    marked_down: bool,
    failing: bool,
) -> retry::Attempt {
    retry::Attempt {
        idempotent: session.req_header().method.is_idempotent(),
        body_replayable: !session.as_ref().retry_buffer_truncated(),
        header_sent: session.upstream_request_header_sent(),
        response_started: ctx.response == ResponsePhase::Started
            || session.response_written().is_some(),
        endpoint_marked_down: marked_down,
        endpoint_failing: failing,
    }
}

/// What an error that ended an attempt means for the retry decision (classified by type).
fn failure_of(e: &Error) -> retry::Failure {
    if *e.esource() == ErrorSource::Downstream {
        return retry::Failure::Client;
    }
    match e.etype() {
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::H2Error => {
            retry::Failure::Reset
        }
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => retry::Failure::Timeout,
        ErrorType::HTTPStatus(code) => retry::Failure::Status(*code),
        ErrorType::ConnectTimedout | ErrorType::ConnectRefused | ErrorType::ConnectError => {
            retry::Failure::Connect
        }
        _ => retry::Failure::Other,
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            snapshot: self.snapshot.load_full(),
            route: None,
            request_id: None,
            tried: Vec::new(),
            attempt_started: tokio::time::Instant::now(),
            body_bytes: 0,
            refusal: None,
            status_retry: false,
            last_failure: None,
            sticky: None,
            response: ResponsePhase::NotStarted,
            deadline: None,
            started: Instant::now(),
            process_slot: None,
            route_slot: None,
            region_slot: None,
            endpoint_attempt: None,
            fail_open: false,
            hedge: None,
            retries: Vec::new(),
            sticky_outcome: None,
            shed: None,
            hedge_won: false,
            trace: TraceContext::None,
            export_span: false,
            attempt_times: Vec::new(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
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
        // Pipelined HTTP/1.1 requests are answered in order (Pingora's default closes after the
        // first answer and drops the rest).
        session.as_mut().set_pipelining_enabled(true);
        if let Some(violation) = crate::proxy::headers::violation(
            session.req_header(),
            &ctx.snapshot.config.server.limits,
        ) {
            crate::telemetry::clientlog::record(violation.label(), &violation.status());
            session.set_keepalive(None);
            let body = format!("{{\"error\":\"{}\"}}\n", violation.label());
            respond_json(session, None, violation.status(), body).await?;
            return Ok(true);
        }
        let id_header = &ctx.snapshot.config.server.request_id_header;
        ctx.request_id = Some(match session.req_header().headers.get(id_header) {
            Some(v) if !v.is_empty() && v.len() <= 200 => v.clone(),
            _ => new_request_id(),
        });
        ctx.trace = TraceContext::of(
            session.req_header().headers.get(TRACEPARENT),
            ctx.snapshot.config.server.start_traces,
        );
        ctx.export_span = crate::telemetry::otlp::on()
            && ctx
                .trace
                .sampled(session.req_header().headers.get(TRACEPARENT));
        let req = session.req_header();
        let authority = req
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        let host = host_without_port(authority);
        ctx.route = ctx.snapshot.table.lookup(host, req.uri.path());
        if ctx.route.is_none() {
            let body = format!(
                "{{\"error\":\"no route\",\"host\":{},\"path\":{}}}\n",
                json_echo(host),
                json_echo(req.uri.path())
            );
            respond_json(session, request_id(ctx), 404, body).await?;
            return Ok(true);
        }
        if let Some(max) = ctx.plan().and_then(|p| p.route.max_body_bytes) {
            let declared = session
                .req_header()
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
            if !session.is_upgrade_req() && declared.is_some_and(|n| n > max) {
                crate::telemetry::clientlog::record("body_too_large", &max);
                session.set_keepalive(None);
                let body = format!("{{\"error\":\"body too large\",\"max_bytes\":{max}}}\n");
                respond_json(session, request_id(ctx), 413, body).await?;
                return Ok(true);
            }
        }
        if let Err(reason) = self.admit(ctx) {
            if let Some(plan) = ctx.plan() {
                plan.metrics.shed(reason);
            }
            ctx.shed = Some(reason.label());
            respond_json(session, request_id(ctx), 503, overloaded_body(ctx, reason)).await?;
            return Ok(true);
        }
        if let Some(limit) = ctx.plan().and_then(|p| p.route.timeouts.request) {
            if !session.is_upgrade_req() {
                ctx.deadline = Some(ctx.started + limit);
            }
        }
        // A client that stops taking the response is cut when one write has waited
        // `server.send_timeout`, or the route's deadline, whichever comes first; meanwhile the
        // upstream is not read further (backpressure), so it costs a few body buffers.
        let send = ctx.snapshot.config.server.limits.send_timeout;
        let send = ctx.deadline.map_or(send, |end| {
            send.min(end.saturating_duration_since(Instant::now()))
                .max(std::time::Duration::from_millis(1))
        });
        session.as_mut().set_write_timeout(Some(send));
        if let Some(plan) = ctx.plan() {
            plan.failover.budget.on_request();
            if let Some(early) = &plan.early {
                early.state.budget.on_request();
            }
            if let Some(settings) = &plan.route.sticky {
                ctx.sticky = Some(Affinity::of_request(
                    &session.req_header().headers,
                    settings,
                    &ctx.snapshot,
                    plan,
                ));
            }
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        ctx.status_retry = false;
        ctx.hedge = None;
        let snapshot = ctx.snapshot.clone();
        let plan = ctx
            .route
            .and_then(|r| snapshot.routes.get(r))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route"))?;
        let sticky_choice = match (&ctx.sticky, &plan.route.sticky) {
            (Some(affinity), Some(settings)) => {
                affinity.choose(&snapshot, plan, settings, &ctx.tried)
            }
            _ => None,
        };
        let chosen = match sticky_choice {
            Some(choice) => Ok(choice),
            None if ctx.fail_open => {
                choose_fail_open(&snapshot, plan, &ctx.tried).ok_or(NoChoice::Exhausted)
            }
            None => match choose(&snapshot, plan, &ctx.tried) {
                // Health may be wrong (the apps are probably fine): when every allowed region
                // looks down, or a retry has tried every endpoint of those that look up (the
                // last one just failed, and health has not seen it yet), try the allowed
                // regions' other endpoints in tier order rather than failing the request.
                Err(why @ (NoChoice::AllRegionsDown | NoChoice::Exhausted))
                    if plan.route.on_all_down == OnAllDown::FailOpen =>
                {
                    match choose_fail_open(&snapshot, plan, &ctx.tried) {
                        Some(choice) => {
                            ctx.fail_open = true;
                            plan.metrics.failed_open();
                            tracing::debug!(route = %plan.route.name, "no allowed region that looks up has an endpoint left: failing open");
                            Ok(choice)
                        }
                        None => Err(why),
                    }
                }
                other => other,
            },
        };
        let choice = match chosen {
            Ok(choice) => choice,
            Err(NoChoice::AllRegionsDown) => {
                let message = format!("route {}: no allowed region is up", plan.route.name);
                ctx.refusal = Some(ErrorPage::AllRegionsDown);
                return Err(Error::explain(ErrorType::HTTPStatus(503), message));
            }
            Err(NoChoice::AtCapacity) => {
                plan.metrics.shed(ShedReason::Capacity);
                ctx.shed = Some(ShedReason::Capacity.label());
                ctx.refusal = Some(ErrorPage::Overloaded(ShedReason::Capacity));
                let message = format!(
                    "route {}: every allowed region is at capacity",
                    plan.route.name
                );
                return Err(Error::explain(ErrorType::HTTPStatus(503), message));
            }
            Err(NoChoice::Exhausted) => {
                let etype = ctx.last_failure.clone().unwrap_or(ErrorType::ConnectError);
                let mut e = Error::explain(etype, "no endpoint left to try");
                e.as_up();
                return Err(e);
            }
        };
        let timeouts = plan.route.timeouts;
        // Each read waits at most what is left of the total deadline (retries included).
        let read_timeout = match ctx.deadline {
            Some(end) => {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let mut e = Error::explain(ErrorType::ReadTimedout, "request deadline passed");
                    e.as_up();
                    return Err(e);
                }
                timeouts.read.min(left)
            }
            None => timeouts.read,
        };
        let mut peer = crate::proxy::peer::for_attempt(
            &choice,
            &timeouts,
            read_timeout,
            session.is_upgrade_req(),
        );
        // Only a first attempt (not one failing open) may be cut early, and only when there is
        // another endpoint to send it to.
        if let Some(early) = plan.early.as_ref().filter(|_| ctx.tried.is_empty()) {
            let body_empty = session.as_mut().is_body_empty();
            if !ctx.fail_open
                && plan.route.retry.attempts > 0
                && crate::routing::early::eligible(
                    session.req_header(),
                    body_empty,
                    session.is_upgrade_req(),
                )
                && has_untried(&snapshot, plan, std::slice::from_ref(&choice))
            {
                let mut first_byte = early.first_byte();
                if early.settings.hedge && matches!(peer.options.alpn, ALPN::H1) {
                    let slot = Arc::new(HedgeSlot::default());
                    first_byte.hedge = Some(Arc::new(RequestHedge {
                        snapshot: snapshot.clone(),
                        route: ctx.route.unwrap_or_default(),
                        first: choice.clone(),
                        timeouts,
                        read_timeout,
                        slot: slot.clone(),
                    }));
                    ctx.hedge = Some(slot);
                }
                peer.options.first_byte = Some(first_byte);
            }
        }
        plan.metrics.attempt(choice.region, !ctx.tried.is_empty());
        // The previous attempt's slot is released as this one takes its own.
        ctx.region_slot = Some(Slot::enter(
            &snapshot.regions[choice.region].health.in_flight,
        ));
        ctx.endpoint_attempt = Some(InFlight::start(&choice.endpoint));
        ctx.tried.push(choice);
        ctx.attempt_started = tokio::time::Instant::now();
        if ctx.export_span {
            ctx.attempt_times
                .push((ctx.started.elapsed(), ctx.retries.len()));
        }
        ctx.body_bytes = 0;
        Ok(Box::new(peer))
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let status = response.status.as_u16();
        if let Some(hedged) = ctx.hedge.take().and_then(|slot| slot.take_winner()) {
            // The hedge answered first: the answer is its endpoint's. The first attempt's wait
            // was real (latency-aware choice sees it); its connection is closed.
            let now = tokio::time::Instant::now();
            if let Some(first) = ctx.current() {
                first
                    .endpoint
                    .latency
                    .observe(now.saturating_duration_since(ctx.attempt_started), now);
            }
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
        if let Some(c) = ctx.current() {
            let now = tokio::time::Instant::now();
            let ttfb = now.saturating_duration_since(ctx.attempt_started);
            if let Some(early) = ctx.plan().and_then(|p| p.early.as_ref()) {
                early.state.record(ttfb);
            }
            let slowness = c.endpoint.observe(ttfb, now);
            if slowness != Slowness::Fine {
                let region = ctx.snapshot.regions[c.region].name.as_str();
                crate::telemetry::metrics::slow_answer(region, slowness);
                tracing::debug!(region, endpoint = %c.endpoint.key.id, ?slowness, "slow answer");
            }
        }
        if status == 101 || status < 500 {
            if let Some(c) = ctx.current() {
                c.endpoint.report_success();
            }
            return Ok(());
        }
        let failing = self.report_failure(ctx, Failure::Definite, &status);
        let retry = ctx.plan().map(|p| {
            retry::decide(
                retry::Failure::Status(status),
                attempt_facts(session, ctx, false, failing),
                &p.route.retry,
            )
        });
        let allowed = match retry {
            Some(retry::Retry::Yes { budgeted }) => ctx.may_retry_with(budgeted),
            _ => false,
        };
        if allowed {
            ctx.status_retry = true;
            ctx.retries.push(format!("status {status}"));
            ctx.last_failure = Some(ErrorType::HTTPStatus(status));
            let mut e = Error::explain(ErrorType::HTTPStatus(status), "retryable upstream status");
            e.as_up();
            e.set_retry(true);
            return Err(e);
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        // The total deadline is checked as the body arrives; an upstream that goes silent is
        // cut by the read timeout, which never exceeds what was left of the deadline.
        if ctx.deadline.is_some_and(|end| Instant::now() >= end) {
            let mut e = Error::explain(ErrorType::ReadTimedout, "request deadline passed mid-body");
            e.as_up();
            return Err(e);
        }
        Ok(None)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let trusted_proxies = &ctx.snapshot.config.server.trusted_proxies;
        let trusted = !trusted_proxies.is_empty()
            && client_ip.is_some_and(|ip| trusted_proxies.iter().any(|net| net.contains(&ip)));
        headers::forward_request(
            session.req_header(),
            upstream,
            session.is_upgrade_req(),
            client_ip,
            trusted,
        )?;
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
        headers::X_FORWARDED_PROTO.insert_request(upstream, proto)?;
        if let Some(id) = &ctx.request_id {
            let name = &ctx.snapshot.config.server.request_id_header;
            upstream.insert_parsed_header(name, &ctx.snapshot.request_id_header, id.clone())?;
        }
        if let TraceContext::Started { value, replaced } = &ctx.trace {
            if *replaced {
                upstream.remove_header(TRACESTATE);
            }
            headers::TRACEPARENT.insert_request(upstream, value.clone())?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // The header is written to the client right after this filter: from here on no error
        // page and no retry.
        ctx.response = ResponsePhase::Started;
        headers::strip_response_hop_by_hop(response);
        if let Some(id) = &ctx.request_id {
            let name = &ctx.snapshot.config.server.request_id_header;
            response.insert_parsed_header(name, &ctx.snapshot.request_id_header, id.clone())?;
        }
        self.sticky_response(response, ctx)?;
        Ok(())
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let kind = match e.etype() {
            ErrorType::ConnectTimedout => Failure::Timeout {
                started: ctx.attempt_started,
            },
            _ => Failure::Definite,
        };
        let failing = self.report_failure(ctx, kind, &e);
        ctx.last_failure = Some(e.etype().clone());
        // Nothing reached the app, so any method may be retried on another endpoint.
        let retry = ctx.plan().map(|p| {
            retry::decide(
                retry::Failure::Connect,
                attempt_facts(session, ctx, false, failing),
                &p.route.retry,
            )
        });
        e.set_retry(match retry {
            Some(retry::Retry::Yes { budgeted }) => ctx.may_retry_with(budgeted),
            _ => false,
        });
        if e.retry() {
            ctx.retries.push("connect".into());
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if ctx.status_retry {
            // Decided in the response filter; budget already taken.
            e.set_retry(true);
            return e;
        }
        let Some(current) = ctx.current().cloned() else {
            return e;
        };
        if *e.etype() == FIRST_BYTE_DEADLINE {
            // Cut at the early-retry deadline, its budget already taken: not a failure of the
            // endpoint, but the wait was real (latency-aware choice sees it).
            let now = tokio::time::Instant::now();
            current
                .endpoint
                .latency
                .observe(now.saturating_duration_since(ctx.attempt_started), now);
            if let Some(early) = ctx.plan().and_then(|p| p.early.as_ref()) {
                early.sent();
            }
            ctx.last_failure = Some(ErrorType::ReadTimedout);
            let retry = ctx.may_retry_with(false);
            if retry {
                ctx.retries.push("early".into());
            }
            e.set_retry(retry);
            return e;
        }
        let failure = failure_of(&e);
        if failure == retry::Failure::Client {
            // The client went away or sent something broken: the upstream did nothing wrong,
            // and a request the client abandoned is never replayed elsewhere.
            e.set_retry(false);
            return e;
        }
        ctx.last_failure = Some(e.etype().clone());
        let marked_down = !current.endpoint.is_routable();
        let kind = match failure {
            retry::Failure::Timeout => Failure::Timeout {
                started: ctx.attempt_started,
            },
            _ => Failure::Definite,
        };
        // A pooled connection that died before the request header could be written says
        // nothing about the endpoint (the upstream closed an idle connection, as it may): not
        // a passive failure. The retry rules treat it as unsent.
        let stale_pooled =
            !session.upstream_request_header_sent() && failure == retry::Failure::Reset;
        let failing = !marked_down && !stale_pooled && self.report_failure(ctx, kind, &e);
        let decision = ctx.plan().map(|p| {
            retry::decide(
                failure,
                attempt_facts(session, ctx, marked_down, failing),
                &p.route.retry,
            )
        });
        let retry = match decision {
            Some(retry::Retry::Yes { budgeted }) => ctx.may_retry_with(budgeted),
            _ => false,
        };
        if retry {
            ctx.retries.push(
                if marked_down {
                    "marked_down"
                } else {
                    failure.label()
                }
                .into(),
            );
        }
        e.set_retry(retry);
        e
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &Self::CTX,
        error: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        // Retries are expected during failover; they are logged at debug level instead.
        if matches!(context, ProxyWarnLogContext::UpstreamRetry) {
            tracing::debug!(route = ctx.route_name(), attempt = ctx.tried.len(), error = %error, "retrying on another endpoint");
            return true;
        }
        false
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let Some(chunk) = body.as_ref() else {
            return Ok(());
        };
        // The route's total deadline runs while the body is read too: a client trickling its
        // upload cannot hold the request (and an upstream connection) past it.
        if ctx.deadline.is_some_and(|end| Instant::now() >= end) {
            crate::telemetry::clientlog::record("body_timeout", &"timeouts.request");
            ctx.refusal = Some(ErrorPage::BodyTimeout);
            session.set_keepalive(None);
            let mut e = Error::explain(
                ErrorType::HTTPStatus(408),
                "request deadline passed while the body was read",
            );
            e.as_down();
            return Err(e);
        }
        let Some(max) = ctx.plan().and_then(|p| p.route.max_body_bytes) else {
            return Ok(());
        };
        ctx.body_bytes += chunk.len() as u64;
        if ctx.body_bytes > max && !session.is_upgrade_req() {
            // A body without a declared length grew past the limit: the client's fault.
            crate::telemetry::clientlog::record("body_too_large", &max);
            ctx.refusal = Some(ErrorPage::BodyTooLarge);
            session.set_keepalive(None);
            let mut e = Error::explain(
                ErrorType::HTTPStatus(413),
                "request body over max_body_bytes",
            );
            e.as_down();
            return Err(e);
        }
        Ok(())
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, error: &Error) -> bool {
        // A truncation is logged once, by `truncated`, with its cause.
        if ctx.response == ResponsePhase::Started {
            return true;
        }
        // The client's own failures are counted and summed up, not logged one by one.
        if *error.esource() == ErrorSource::Downstream {
            crate::telemetry::clientlog::record("aborted", error);
            return true;
        }
        false
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy
    where
        Self::CTX: Send + Sync,
    {
        if ctx.response == ResponsePhase::Started || session.response_written().is_some() {
            self.truncated(session, e, ctx).await;
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let page = ctx.refusal.unwrap_or_else(|| ErrorPage::of(e));
        let code = page.status();
        if code > 0 {
            let message = page.message();
            let body = if let ErrorPage::Overloaded(reason) = page {
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
            };
            if let Err(write_err) = respond_json(session, request_id(ctx), code, body).await {
                tracing::debug!(error = %write_err, "could not send error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let served = ctx.current().map(|c| c.region);
        if let Some(region) = served {
            ctx.snapshot.regions[region].health.traffic.record(status);
        }
        if let Some(plan) = ctx.plan() {
            plan.metrics
                .request(served, status, ctx.started.elapsed().as_secs_f64());
        }
        if crate::telemetry::access_log::wants(status) {
            crate::telemetry::access_log::write(access_line(session, e, ctx, status));
        }
        if ctx.export_span {
            if let Some(span) = request_span(session, e, ctx, status) {
                crate::telemetry::otlp::export_span(span);
            }
        }
        tracing::debug!(
            route = ctx.route_name(),
            status,
            attempts = ctx.tried.len(),
            elapsed_ms = ctx.started.elapsed().as_millis() as u64,
            error = e.map(|e| e.to_string()),
            "request"
        );
    }
}

impl GatewayProxy {
    /// Ends a response that failed after it started: nothing more is written, the client's
    /// side ends abnormally (HTTP/1.1: the connection closes; HTTP/2: RST_STREAM with
    /// INTERNAL_ERROR, other streams unharmed), and the truncation is counted and logged once.
    async fn truncated(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) {
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
            route = ctx.route_name(),
            region,
            endpoint,
            cause = cause.label(),
            error = %e,
            "response truncated after it started"
        );
        session.shutdown().await;
    }

    /// Issues or replaces the sticky cookie when the endpoint that served is not the one the
    /// request's cookie named (or there was no valid cookie), and counts the outcome.
    fn sticky_response(&self, response: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
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
}

/// The request's access log line (field names in the README's table), written straight into
/// one string.
fn access_line(session: &Session, e: Option<&Error>, ctx: &RequestCtx, status: u16) -> String {
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
                .get(TRACEPARENT)
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
        .int("bytes_in", session.as_ref().body_bytes_read() as u64)
        .int("bytes_out", session.as_ref().body_bytes_sent() as u64)
        .num(
            "duration_ms",
            (ctx.started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        )
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
    .opt_str("shed", ctx.shed)
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
) -> Option<String> {
    let req = session.req_header();
    let (trace_id, span_id, parent_span_id) = match &ctx.trace {
        TraceContext::Started { value, .. } => {
            let ids = crate::telemetry::trace::ids(value.as_bytes())?;
            (ids.trace_id, ids.parent_id, None)
        }
        TraceContext::Passed => {
            let ids = crate::telemetry::trace::ids(req.headers.get(TRACEPARENT)?.as_bytes())?;
            (ids.trace_id, fastrand::u64(1..), Some(ids.parent_id))
        }
        TraceContext::None => return None,
    };
    let elapsed = ctx.started.elapsed();
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
        status == 0 || status >= 500,
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
        span.str("gateway.shed", shed);
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

/// The JSON body of an overloaded 503.
fn overloaded_body(ctx: &RequestCtx, reason: ShedReason) -> String {
    format!(
        "{{\"error\":\"overloaded\",\"route\":{},\"reason\":\"{}\"}}\n",
        json_string(ctx.route_name()),
        reason.label()
    )
}

/// The request id header (name and value) to echo on the gateway's own answers.
fn request_id(ctx: &RequestCtx) -> Option<(&bytes::Bytes, &HeaderValue)> {
    ctx.request_id
        .as_ref()
        .map(|v| (&ctx.snapshot.request_id_header, v))
}

/// A random 128-bit request id as 32 lowercase hex digits (thread-local PRNG: no syscall per
/// request; written straight into the value, no formatting machinery).
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 32];
    let id = fastrand::u128(..);
    for (i, d) in digits.iter_mut().enumerate() {
        *d = HEX[((id >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&digits).expect("hex digits are a valid header value")
}
