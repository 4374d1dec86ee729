//! Hedging (`retry.early.hedge`, on with early retry): when a first attempt's first byte is
//! late, the same request goes to another endpoint (another region first) over a connection
//! of its own, and whichever answers first carries the response; the other connection is
//! closed, so its server sees the request cancelled (vendor patch 19's `Hedge`).
//!
//! [`RequestHedge`] is what Pingora calls when the deadline passes and the early-retry budget
//! allowed it: it picks the endpoint as a retry would, connects, and notes the choice in the
//! request's [`HedgeSlot`]; the proxy reads the slot when the response head arrives, so the
//! answer is attributed to the endpoint that gave it (latency, passive health, sticky cookie).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use gateway_config::RouteTimeouts;
use pingora::connectors::TransportConnector;
use pingora::protocols::{Stream, ALPN};
use pingora::upstreams::peer::Hedge;

use crate::proxy::selection::{choose, Choice, InFlight};
use crate::routing::snapshot::RoutingSnapshot;
use crate::routing::table::RouteIndex;

/// The hedge of one request, once sent: where it went and since when.
pub struct Hedged {
    /// The endpoint it went to.
    pub choice: Choice,
    /// When its request was sent.
    pub started: tokio::time::Instant,
    /// Counts it in flight to its endpoint.
    pub in_flight: InFlight,
}

/// What the proxy learns of a request's hedge.
#[derive(Default)]
pub struct HedgeSlot {
    sent: Mutex<Option<Hedged>>,
    won: AtomicBool,
}

impl HedgeSlot {
    /// The hedge, if it was sent and answered first. Either way the slot is emptied (a hedge
    /// that lost stops counting in flight to its endpoint).
    pub fn take_winner(&self) -> Option<Hedged> {
        let sent = self.sent.lock().ok()?.take();
        sent.filter(|_| self.won.load(Ordering::Acquire))
    }
}

/// The hedge Pingora may send for one request's first attempt.
pub struct RequestHedge {
    /// The snapshot the request is served by.
    pub snapshot: Arc<RoutingSnapshot>,
    /// Its route.
    pub route: RouteIndex,
    /// The first attempt's endpoint (never hedged to).
    pub first: Choice,
    /// The route's timeouts.
    pub timeouts: RouteTimeouts,
    /// The first attempt's read timeout (what was left of the deadline).
    pub read_timeout: Duration,
    /// Shared with the request.
    pub slot: Arc<HedgeSlot>,
}

/// The connector of hedge connections (plain and TLS), one per process; hedges are never
/// pooled (the winner's connection is closed after its response).
fn connector() -> &'static TransportConnector {
    static CONNECTOR: OnceLock<TransportConnector> = OnceLock::new();
    CONNECTOR.get_or_init(|| TransportConnector::new(None))
}

impl Hedge for RequestHedge {
    fn connect(&self) -> Pin<Box<dyn Future<Output = Option<Stream>> + Send>> {
        let (snapshot, route, first) = (self.snapshot.clone(), self.route, self.first.clone());
        let (timeouts, read_timeout, slot) = (self.timeouts, self.read_timeout, self.slot.clone());
        Box::pin(async move {
            let plan = snapshot.routes.get(route)?;
            let choice = choose(&snapshot, plan, std::slice::from_ref(&first)).ok()?;
            let peer = crate::proxy::peer::for_attempt(&choice, &timeouts, read_timeout, false);
            // The hedge speaks the first attempt's HTTP/1.1 head.
            if !matches!(peer.options.alpn, ALPN::H1) {
                return None;
            }
            let stream = connector().new_stream(&peer).await.ok()?;
            if let Some(early) = &plan.early {
                early.sent();
            }
            let in_flight = InFlight::start(&choice.endpoint);
            if let Ok(mut sent) = slot.sent.lock() {
                *sent = Some(Hedged {
                    choice,
                    started: tokio::time::Instant::now(),
                    in_flight,
                });
            }
            Some(stream)
        })
    }

    fn won(&self) {
        self.slot.won.store(true, Ordering::Release);
    }
}
