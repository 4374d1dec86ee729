//! The Pingora proxy: route matching, upstream selection, proxy headers, retries, error pages.
//!
//! Each request loads the current [`RoutingSnapshot`] once, in `new_ctx`, and keeps it to the
//! end, so a reload never changes the rules under a request in flight.
//!
//! This folder is the request path. This file holds the `ProxyHttp` callbacks in the order
//! Pingora calls them, each a short sequence of named steps; the files beside it hold the
//! steps and the decisions they call:
//!
//! - [`context`]: the per-request state;
//! - [`request`]: the request phase (head checks, id and trace, route, admission, deadlines,
//!   affinity read, headers forwarded upstream, the body as it is read);
//! - [`attempt`]: one attempt (its endpoint, read timeout, early-retry deadline and hedge, its
//!   slots; the hedge that won and the time to first byte);
//! - [`failure`]: what a failed attempt means (passive health, the retry verdict);
//! - [`response`]: the sticky cookie, the gateway's own error pages, truncation;
//! - [`record`]: the metrics, access line and span of a finished request;
//! - the decisions: [`selection`], [`affinity`], [`retry`], [`hedge`], [`peer`],
//!   [`upstream`], [`headers`], [`grpc`] and [`errors`].
//!
//! Imports `routing` and `telemetry`, never the control plane. Every log line of this folder
//! has the target `gateway::proxy` (operators filter on it).

pub(crate) mod affinity;
mod attempt;
mod context;
pub(crate) mod errors;
mod failure;
pub(crate) mod grpc;
pub mod headers;
pub(crate) mod hedge;
pub(crate) mod peer;
mod record;
mod request;
mod response;
pub(crate) mod retry;
pub(crate) mod selection;
pub(crate) mod upstream;

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use pingora::http::{FieldWriter, RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::{Error, ErrorSource, ErrorType};

use crate::proxy::context::{RequestCtx, ResponsePhase};
use crate::proxy::errors::ErrorPage;
use crate::routing::admission::{Connections, ProcessLimit};
use crate::routing::snapshot::RoutingSnapshot;
use crate::telemetry::lag::Lag;

/// The target of every log line of the request path, whichever file of this folder writes it.
const LOG_TARGET: &str = "gateway::proxy";

/// The gateway's proxy logic; cheap to share across Pingora's workers.
pub(crate) struct GatewayProxy {
    snapshot: Arc<ArcSwap<RoutingSnapshot>>,
    /// Requests in flight through the process and its limit (admission control).
    limit: Arc<ProcessLimit>,
    /// The proxy runtime's scheduling lag.
    lag: Arc<Lag>,
    /// Open client connections (`server.max_connections`, and what shutdown waits for).
    connections: Arc<Connections>,
}

impl GatewayProxy {
    /// A proxy that reads routing from `snapshot` (swapped on reload), admits requests under
    /// `limit` and client connections into `connections`.
    pub fn new(
        snapshot: Arc<ArcSwap<RoutingSnapshot>>,
        limit: Arc<ProcessLimit>,
        connections: Arc<Connections>,
    ) -> Self {
        Self {
            snapshot,
            limit,
            lag: Arc::default(),
            connections,
        }
    }
}

impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::new(self.snapshot.load_full())
    }

    /// No downstream modules. Pingora's default is a response-compression module at level 0
    /// (never compressing) whose per-request context and filters cost three allocations and
    /// about 900 instructions per request; the gateway passes bodies as they come.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// Counts every client connection in [`Connections`] from its first byte after the TLS
    /// handshake until it closes: all its requests (HTTP/2 streams until the connection ends),
    /// upgrades, the time it is parked while idle, and the shutdown linger. A connection above
    /// `server.max_connections` is closed at once, unanswered (as Envoy's connection limit
    /// does; the client may retry elsewhere).
    fn admit_connection(&self) -> Option<pingora::apps::ConnectionToken> {
        let (connection, open) = self.connections.enter();
        let limit = self.snapshot.load().config.server.max_connections as usize;
        if open > limit {
            crate::telemetry::metrics::connection_refused();
            tracing::debug!(
                open,
                limit,
                "client connection refused: server.max_connections"
            );
            return None;
        }
        Some(Box::new(connection))
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        self.start_lag_monitor();
        // Pipelined HTTP/1.1 requests are answered in order (Pingora's default closes after the
        // first answer and drops the rest).
        session.as_mut().set_pipelining_enabled(true);
        request::note_grpc(session, ctx);
        if request::refuse_bad_head(session, ctx).await? {
            return Ok(true);
        }
        request::identify(session, ctx);
        if request::refuse_unrouted(session, ctx).await?
            || request::refuse_declared_body(session, ctx).await?
            || self.refuse_overload(session, ctx).await?
        {
            return Ok(true);
        }
        request::set_deadlines(session, ctx);
        request::count_and_read_affinity(session, ctx);
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
        let choice = attempt::choose(ctx, &snapshot, plan)?;
        let timeouts = plan.route.timeouts;
        let read_timeout = attempt::read_timeout(ctx, &timeouts)?;
        let mut peer =
            peer::for_attempt(&choice, &timeouts, read_timeout, session.is_upgrade_req());
        attempt::arm_early_retry(
            session,
            ctx,
            &snapshot,
            plan,
            &choice,
            &mut peer,
            read_timeout,
        );
        attempt::begin(ctx, &snapshot, plan, choice);
        Ok(Box::new(peer))
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let status = response.status.as_u16();
        attempt::adopt_hedge_winner(ctx);
        attempt::observe_first_byte(ctx, &self.lag);
        if status == 101 || status < 500 {
            if let Some(c) = ctx.current() {
                c.endpoint.report_success();
            }
            return Ok(());
        }
        self.status_failed(session, ctx, status)
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
        if ctx
            .deadline
            .is_some_and(|end| std::time::Instant::now() >= end)
        {
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
        request::forward_headers(session, upstream, ctx)
    }

    fn upstream_request_fields(
        &self,
        session: &Session,
        fields: &mut FieldWriter<'_>,
        ctx: &mut Self::CTX,
    ) -> Result<bool> {
        request::forward_fields(session, fields, ctx)
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
        response::sticky_cookie(response, ctx)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        e: Box<Error>,
    ) -> Box<Error> {
        self.connect_failed(session, ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        _client_reused: bool,
    ) -> Box<Error> {
        self.proxy_failed(peer, session, e, ctx)
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
        match body.as_ref() {
            Some(chunk) => request::check_body_chunk(session, ctx, chunk),
            None => Ok(()),
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, error: &Error) -> bool {
        // A truncation is logged once, by `response::truncate`, with its cause.
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
            response::truncate(session, e, ctx).await;
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let page = ctx.refusal.unwrap_or_else(|| ErrorPage::of(e));
        let code = page.status();
        if code > 0 {
            let written = response::answer(
                session,
                ctx,
                code,
                |ctx| response::error_body(page, ctx),
                |ctx| response::grpc_status(page, ctx),
            )
            .await;
            if let Err(write_err) = written {
                tracing::debug!(error = %write_err, "could not send error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        record::record(session, e, ctx);
    }
}
