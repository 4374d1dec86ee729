//! The per-request context every callback of the request path reads and writes: the snapshot
//! the request keeps to its end, the route, the attempts made, the slots held, and what the
//! access log and the span report.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gateway_config::OnAllDown;
use http::header::HeaderValue;
use pingora::ErrorType;

use crate::proxy::affinity::Affinity;
use crate::proxy::errors::ErrorPage;
use crate::proxy::grpc::{Code, GrpcKind, Messages};
use crate::proxy::hedge::HedgeSlot;
use crate::proxy::selection::{has_untried, has_untried_fail_open, Choice, InFlight};
use crate::routing::admission::{ShedReason, Slot};
use crate::routing::snapshot::{RoutePlan, RoutingSnapshot};
use crate::routing::table::RouteIndex;
use crate::telemetry::trace::TraceContext;

/// Per-request state.
pub(crate) struct RequestCtx {
    pub(super) snapshot: Arc<RoutingSnapshot>,
    pub(super) route: Option<RouteIndex>,
    pub(super) request_id: Option<HeaderValue>,
    /// Endpoints tried so far, in order; the last one is the current attempt.
    pub(super) tried: Vec<Choice>,
    /// When the current attempt began (for passive health: timeouts of attempts that all
    /// waited through one slow moment count once).
    pub(super) attempt_started: tokio::time::Instant,
    /// Request body bytes sent in the current attempt (for `max_body_bytes`).
    pub(super) body_bytes: u64,
    /// Why the gateway itself answers, when selection decided it (the residency 503).
    pub(super) refusal: Option<ErrorPage>,
    /// The current attempt's response status is to be retried (set in the response filter).
    pub(super) status_retry: bool,
    /// Type of the last upstream failure, reported when no endpoint is left to try.
    pub(super) last_failure: Option<ErrorType>,
    /// Sticky-session state, on routes with `sticky` (boxed: 112 bytes that every other
    /// request would carry in its future).
    pub(super) sticky: Option<Box<Affinity>>,
    /// Whether the response to the client has started; the error path decides from it.
    pub(super) response: ResponsePhase,
    /// The request's total deadline: the route's `timeouts.request` (unless off or the
    /// request upgrades), or the client's `grpc-timeout` when that ends sooner.
    pub(super) deadline: Option<Instant>,
    /// How the request speaks gRPC, if it does (its `content-type`).
    pub(super) grpc: Option<GrpcKind>,
    /// A gRPC client's `grpc-timeout`, and whether it set the deadline (it ends sooner than
    /// the route's).
    pub(super) grpc_timeout: Option<(std::time::Duration, bool)>,
    /// The gRPC request body's messages as they pass in the current attempt (their limit).
    pub(super) grpc_messages: Messages,
    /// The gRPC status of the gateway's own answer to a gRPC request, for the access log and
    /// metrics.
    pub(super) grpc_answer: Option<Code>,
    pub(super) started: Instant,
    /// Held while the request is in flight (the process's and the route's limits).
    pub(super) process_slot: Option<Slot>,
    pub(super) route_slot: Option<Slot>,
    /// Held while the current attempt is in flight to its region (capacity).
    pub(super) region_slot: Option<Slot>,
    /// Held while the current attempt is in flight to its endpoint (latency-aware choice).
    pub(super) endpoint_attempt: Option<InFlight>,
    /// The route fails open (every allowed region looked down, or a retry had tried every
    /// endpoint of those that looked up): attempts ignore health.
    pub(super) fail_open: bool,
    /// The current attempt's hedge, when it may be hedged (`hedge.rs`).
    pub(super) hedge: Option<Arc<HedgeSlot>>,
    /// For the access log: why each retry was made, the sticky outcome, why the request was
    /// shed, whether a hedge answered.
    pub(super) retries: Vec<String>,
    pub(super) sticky_outcome: Option<&'static str>,
    pub(super) shed: Option<ShedReason>,
    pub(super) hedge_won: bool,
    /// The W3C trace context to forward.
    pub(super) trace: TraceContext,
    /// The request's span is exported (`server.otlp` is set and the trace is sampled).
    pub(super) export_span: bool,
    /// When each attempt began, after `started`, and how many retry causes `retries` held then;
    /// kept only for an exported span.
    pub(super) attempt_times: Vec<(std::time::Duration, usize)>,
}

/// Where the response to the client stands. Before its header goes out, a failure may still be
/// retried or answered with an error page; from then on the only honest answer to a failure is
/// to end the response abnormally (HTTP/1.1: close the connection before the final chunk or the
/// declared length; HTTP/2: RST_STREAM), writing no byte the upstream did not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResponsePhase {
    /// No response byte has gone to the client.
    NotStarted,
    /// The response header (or a `101` upgrade) has been handed to the client.
    Started,
}

impl RequestCtx {
    /// A new request's context over `snapshot`, which it keeps to its end.
    pub(super) fn new(snapshot: Arc<RoutingSnapshot>) -> Self {
        // One clock read for both starts (a read costs more than the rest of this function).
        let now = tokio::time::Instant::now();
        RequestCtx {
            snapshot,
            route: None,
            request_id: None,
            tried: Vec::new(),
            attempt_started: now,
            body_bytes: 0,
            refusal: None,
            status_retry: false,
            last_failure: None,
            sticky: None,
            response: ResponsePhase::NotStarted,
            deadline: None,
            grpc: None,
            grpc_timeout: None,
            grpc_messages: Messages::default(),
            grpc_answer: None,
            started: now.into_std(),
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

    pub(super) fn plan(&self) -> Option<&RoutePlan> {
        self.route.and_then(|r| self.snapshot.routes.get(r))
    }

    pub(super) fn route_name(&self) -> &str {
        self.plan().map(|p| &*p.route.name).unwrap_or("-")
    }

    /// Whether another attempt is allowed by the route's attempt count and, when
    /// `budgeted`, the retry budget.
    ///
    /// `budgeted: false` is for requests stuck on an endpoint that health has just marked down:
    /// they are bounded by the requests in flight, and moving them to a healthy region is the
    /// failover itself, so they do not spend the budget that protects a sick fleet.
    pub(super) fn may_retry_with(&self, budgeted: bool) -> bool {
        let Some(plan) = self.plan() else {
            return false;
        };
        let retries_done = self.tried.len().saturating_sub(1) as u32;
        // A retry that finds no untried endpoint in a region that looks up may still fail
        // open (see `attempt::choose`).
        let fails_open = self.fail_open || plan.route.on_all_down == OnAllDown::FailOpen;
        retries_done < plan.route.retry.attempts
            && ((!self.fail_open && has_untried(&self.snapshot, plan, &self.tried))
                || (fails_open && has_untried_fail_open(&self.snapshot, plan, &self.tried)))
            && (!budgeted || plan.failover.budget.try_retry())
    }

    /// Feeds the current attempt's wait so far into its endpoint's latency: a wait that ended
    /// without an answer (cut early, or lost to a hedge) was real, and latency-aware choice
    /// should see it.
    pub(super) fn observe_current_wait(&self) {
        if let Some(current) = self.current() {
            let now = tokio::time::Instant::now();
            current
                .endpoint
                .latency
                .observe(now.saturating_duration_since(self.attempt_started), now);
        }
    }

    /// Whether the request's total deadline has passed.
    pub(super) fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|end| Instant::now() >= end)
    }

    /// The current attempt's endpoint choice.
    pub(super) fn current(&self) -> Option<&Choice> {
        self.tried.last()
    }

    /// The request id header (name and value) to echo on the gateway's own answers.
    pub(super) fn request_id_echo(&self) -> Option<(&Bytes, &HeaderValue)> {
        self.request_id
            .as_ref()
            .map(|v| (&self.snapshot.request_id_header, v))
    }
}
