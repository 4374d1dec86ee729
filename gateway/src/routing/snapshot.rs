//! The immutable routing snapshot: everything the request path needs from config, in one value
//! that is published with one atomic swap. Health and failover state are referenced, not
//! copied: they live outside the snapshot, keyed by stable names, and survive reloads.

use std::sync::Arc;

use arc_swap::ArcSwap;

use gateway_config::{GatewayConfig, RegionName, Route};
use gateway_health::{HealthHub, RegionHealth};

use crate::routing::admission::ShedReason;
use crate::routing::degraded::Degradation;
use crate::routing::early::EarlyPlan;
use crate::routing::failover::{FailoverBook, RouteFailover};
use crate::routing::sticky::Outcome;
use crate::routing::table::RouteTable;
use crate::routing::tls::{CertSource, Certificates};
use crate::telemetry::metrics::RouteMetrics;

/// Position of a region in [`RoutingSnapshot::regions`].
pub type RegionIndex = usize;

/// Routes and regions that must agree, built from one validated config.
pub struct RoutingSnapshot {
    /// The config this snapshot was built from.
    pub config: Arc<GatewayConfig>,
    /// Route index for matching.
    pub table: RouteTable,
    /// Routes with region names resolved to indices.
    pub routes: Vec<RoutePlan>,
    /// Regions in config order.
    pub regions: Vec<RegionTarget>,
    /// Health of every region and endpoint.
    pub hub: HealthHub,
    /// Failover state of every route.
    pub book: Arc<FailoverBook>,
    /// Certificates of the TLS listeners.
    pub certificates: Certificates,
    /// `server.request_id_header` as written on the wire (cloned per request without copying).
    pub request_id_header: bytes::Bytes,
}

/// A route with its tiers resolved.
pub struct RoutePlan {
    /// The validated route.
    pub route: Route,
    /// Tiers, highest priority first: `(region, weight)`.
    pub tiers: Vec<Vec<(RegionIndex, u32)>>,
    /// Region health per tier, for the failover decision.
    pub tier_health: Vec<Vec<Arc<RegionHealth>>>,
    /// Failover state and retry budget (shared across reloads).
    pub failover: Arc<RouteFailover>,
    /// Metric handles.
    pub metrics: RouteMetrics,
    /// Early retry of late first bytes, when the route has it.
    pub early: Option<EarlyPlan>,
    /// Each tier region's degradation for the route, as `tier_health` (empty without
    /// `degraded`).
    pub degradation: Vec<Vec<Arc<Degradation>>>,
}

impl RoutePlan {
    /// Whether region `position` of tier `tier` is to be skipped for slowness: degraded, while
    /// another region of the tier is up and not degraded.
    pub fn skips_degraded(&self, tier: usize, position: usize) -> bool {
        let Some(cells) = self.degradation.get(tier) else {
            return false;
        };
        cells.get(position).is_some_and(|d| d.is_degraded())
            && cells
                .iter()
                .zip(&self.tier_health[tier])
                .any(|(d, h)| h.is_up() && !d.is_degraded())
    }
}

/// A region as the proxy sees it.
pub struct RegionTarget {
    /// Region name.
    pub name: RegionName,
    /// Health and current endpoints (including DNS-discovered addresses).
    pub health: Arc<RegionHealth>,
    /// Requests in flight to the region at most.
    pub capacity: Option<u32>,
}

impl RegionTarget {
    /// Below its capacity (always, without one). Whether it is up is asked separately.
    pub fn has_room(&self) -> bool {
        crate::routing::admission::has_room(&self.health.in_flight, self.capacity)
    }
}

impl RoutingSnapshot {
    /// Builds a snapshot over `hub` and `book`, serving `certificates` (already loaded: building
    /// cannot fail).
    pub fn build(
        config: Arc<GatewayConfig>,
        hub: HealthHub,
        book: Arc<FailoverBook>,
        certificates: Certificates,
    ) -> Self {
        let regions: Vec<RegionTarget> = config
            .regions
            .iter()
            .map(|r| RegionTarget {
                name: r.name.clone(),
                health: hub.region(&r.name),
                capacity: r.capacity,
            })
            .collect();
        let index_of = |name: &RegionName| regions.iter().position(|r| &r.name == name);
        let region_names: Vec<String> = regions.iter().map(|r| r.name.to_string()).collect();
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let tiers: Vec<Vec<(RegionIndex, u32)>> = route
                    .tiers
                    .iter()
                    .map(|tier| {
                        tier.regions
                            .iter()
                            .filter_map(|(name, w)| index_of(name).map(|i| (i, w.get())))
                            .collect()
                    })
                    .collect();
                let tier_health = tiers
                    .iter()
                    .map(|t| t.iter().map(|(i, _)| regions[*i].health.clone()).collect())
                    .collect();
                let failover = book.route(
                    &route.name,
                    route
                        .tiers
                        .iter()
                        .map(|t| t.regions.iter().map(|(n, _)| n.to_string()).collect())
                        .collect(),
                    route.retry.budget_permille,
                    route.retry.early.map_or(0, |e| e.budget_permille),
                );
                let degradation = if route.degraded.is_some() {
                    tiers
                        .iter()
                        .map(|t| {
                            t.iter()
                                .map(|(i, _)| failover.degradations.of(regions[*i].name.as_str()))
                                .collect()
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                RoutePlan {
                    degradation,
                    metrics: RouteMetrics::new::<Outcome, ShedReason>(
                        &route.name,
                        &region_names,
                        route.sticky.is_some(),
                    ),
                    early: route.retry.early.map(|settings| {
                        EarlyPlan::new(&route.name, settings, failover.early.clone())
                    }),
                    failover,
                    tiers,
                    tier_health,
                    route: route.clone(),
                }
            })
            .collect();
        Self {
            request_id_header: bytes::Bytes::copy_from_slice(
                config.server.request_id_header.as_str().as_bytes(),
            ),
            table: RouteTable::new(&config.routes),
            routes,
            regions,
            config,
            hub,
            book,
            certificates,
        }
    }
}

impl RoutePlan {
    /// The tier serving the route now, or `None` when no region of any tier is up (reads only;
    /// the failover controller switches).
    pub fn serving_tier(&self) -> Option<usize> {
        self.failover
            .serving(&self.tier_health, self.route.failback_hold_down)
    }
}

impl CertSource for ArcSwap<RoutingSnapshot> {
    fn with_certificates(&self, f: &mut dyn FnMut(&Certificates)) {
        f(&self.load().certificates);
    }
}
