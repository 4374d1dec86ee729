//! Upstream selection: which region, then which endpoint, for one attempt of a request.
//!
//! First attempt: the route's active tier (see [`crate::failover`]); within the tier, up
//! regions by weight; within a region, healthy endpoints by round robin. Retries never reuse an
//! endpoint already tried for the request, and after a failure in a region they prefer the other
//! allowed regions (the active tier's, then lower tiers, then higher ones) before the failed
//! region's other endpoints. Only regions of the route's tiers are ever candidates, and those
//! are validated to be within `allowed_regions`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use gateway_config::Region;
use gateway_health::hub::RegionMembers;
use gateway_health::EndpointHealth;

use crate::snapshot::{RegionIndex, RoutePlan, RoutingSnapshot};

/// One endpoint chosen for an attempt.
#[derive(Debug, Clone)]
pub struct Choice {
    /// Region index in the snapshot.
    pub region: RegionIndex,
    /// The endpoint address and its health.
    pub endpoint: Arc<EndpointHealth>,
    /// The region config the endpoint is a member by (its TLS, protocol and HTTP/2
    /// settings), read with the endpoint from the same members.
    pub settings: Arc<Region>,
}

impl Choice {
    /// `endpoint` of `members` in `region`; `None` for members without a config (they have no
    /// endpoints either).
    fn of(
        region: RegionIndex,
        endpoint: &Arc<EndpointHealth>,
        members: &RegionMembers,
    ) -> Option<Self> {
        Some(Self {
            region,
            endpoint: endpoint.clone(),
            settings: members.config.clone()?,
        })
    }
}

/// Why no endpoint was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoChoice {
    /// No region of the route is up (the residency 503).
    AllRegionsDown,
    /// Every healthy candidate was tried already.
    Exhausted,
}

/// Picks the endpoint for the next attempt.
pub fn choose(
    snapshot: &RoutingSnapshot,
    plan: &RoutePlan,
    tried: &[Choice],
) -> Result<Choice, NoChoice> {
    let active = plan.serving_tier();
    if tried.is_empty() {
        let tier = active.ok_or(NoChoice::AllRegionsDown)?;
        return tier_order(plan, tier, snapshot)
            .into_iter()
            .find_map(|region| pick_endpoint(snapshot, region, tried))
            .or_else(|| any_endpoint(snapshot, plan, active.unwrap_or(0), tried))
            .ok_or(NoChoice::AllRegionsDown);
    }
    any_endpoint(snapshot, plan, active.unwrap_or(0), tried).ok_or(NoChoice::Exhausted)
}

/// Whether a healthy endpoint not yet tried is left among the route's up regions.
pub fn has_untried(snapshot: &RoutingSnapshot, plan: &RoutePlan, tried: &[Choice]) -> bool {
    plan.tiers.iter().flatten().any(|(region, _)| {
        let target = &snapshot.regions[*region];
        target.health.is_up()
            && target
                .health
                .members()
                .endpoints
                .iter()
                .any(|e| e.is_routable() && !tried.iter().any(|c| Arc::ptr_eq(&c.endpoint, e)))
    })
}

/// Any untried healthy endpoint of an up region: regions without failures first, tiers from
/// `start` onwards, then the ones before it.
fn any_endpoint(
    snapshot: &RoutingSnapshot,
    plan: &RoutePlan,
    start: usize,
    tried: &[Choice],
) -> Option<Choice> {
    let n = plan.tiers.len();
    let order: Vec<usize> = (start..n).chain(0..start.min(n)).collect();
    for avoid_failed in [true, false] {
        for &t in &order {
            for region in tier_order(plan, t, snapshot) {
                if avoid_failed && tried.iter().any(|c| c.region == region) {
                    continue;
                }
                if let Some(choice) = pick_endpoint(snapshot, region, tried) {
                    return Some(choice);
                }
            }
        }
    }
    None
}

/// Up regions of a tier in the order to try them: a weighted pick first, then the rest.
fn tier_order(plan: &RoutePlan, tier: usize, snapshot: &RoutingSnapshot) -> Vec<RegionIndex> {
    let Some(regions) = plan.tiers.get(tier) else {
        return Vec::new();
    };
    let up: Vec<(RegionIndex, u32)> = regions
        .iter()
        .copied()
        .filter(|(r, _)| snapshot.regions[*r].health.is_up())
        .collect();
    if up.len() <= 1 {
        return up.into_iter().map(|(r, _)| r).collect();
    }
    let total: u64 = up.iter().map(|(_, w)| u64::from(*w)).sum();
    let ticket = (plan.failover.next_ticket() as u64) % total.max(1);
    let mut acc = 0u64;
    let first = up
        .iter()
        .find(|(_, w)| {
            acc += u64::from(*w);
            ticket < acc
        })
        .map_or(up[0].0, |(r, _)| *r);
    let mut order = vec![first];
    order.extend(up.iter().map(|(r, _)| *r).filter(|r| *r != first));
    order
}

fn pick_endpoint(
    snapshot: &RoutingSnapshot,
    region: RegionIndex,
    tried: &[Choice],
) -> Option<Choice> {
    let target = snapshot.regions.get(region)?;
    let members = target.health.members();
    let n = members.endpoints.len();
    if n == 0 {
        return None;
    }
    let start = target.health.cursor.fetch_add(1, Ordering::Relaxed);
    (0..n)
        .map(|k| &members.endpoints[(start + k) % n])
        .find(|e| e.is_routable() && !tried.iter().any(|c| Arc::ptr_eq(&c.endpoint, e)))
        .and_then(|e| Choice::of(region, e, &members))
}

/// The endpoint a sticky session is pinned to, or a re-pin inside the same region.
///
/// `None` when the session must be placed afresh: the region is not one of the route's, is down
/// or drained, is in a higher tier than the one serving now (inside its failback hold-down), or
/// (with `on_failback: return`) is in a lower tier than the one serving now.
pub fn choose_pinned(
    snapshot: &RoutingSnapshot,
    plan: &RoutePlan,
    region_name: &str,
    endpoint_id: &str,
    return_on_failback: bool,
) -> Option<(Choice, bool)> {
    let region = snapshot
        .regions
        .iter()
        .position(|r| r.name.as_str() == region_name)?;
    let tier = plan
        .tiers
        .iter()
        .position(|t| t.iter().any(|(r, _)| *r == region))?;
    let target = &snapshot.regions[region];
    if !target.health.is_up() {
        return None;
    }
    let active = plan.serving_tier();
    // A region above the serving tier is inside its failback hold-down (or flapping): a pin
    // to it waits like all other traffic, and the session is placed afresh.
    if active.is_some_and(|active| tier < active) {
        return None;
    }
    if return_on_failback && active.is_some_and(|active| active < tier) {
        return None;
    }
    let members = target.health.members();
    if let Some(e) = members
        .endpoints
        .iter()
        .find(|e| e.key.id.as_str() == endpoint_id && e.is_routable())
    {
        return Choice::of(region, e, &members).map(|c| (c, true));
    }
    // Pinned endpoint unhealthy or gone: same region first.
    pick_endpoint(snapshot, region, &[]).map(|c| (c, false))
}

/// Rendezvous hashing of `key` over the healthy endpoints of the serving tier's up regions: the
/// same answer in every PoP, and losing an endpoint moves only the keys it had.
pub fn choose_rendezvous(
    snapshot: &RoutingSnapshot,
    plan: &RoutePlan,
    key: &str,
) -> Option<Choice> {
    let tier = plan.serving_tier()?;
    let mut best: Option<(u64, Choice)> = None;
    for (region, _) in plan.tiers.get(tier)? {
        let target = &snapshot.regions[*region];
        if !target.health.is_up() {
            continue;
        }
        let members = target.health.members();
        for e in members.endpoints.iter().filter(|e| e.is_routable()) {
            let score = crate::sticky::rendezvous_score(key, e.key.id.as_str());
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                if let Some(choice) = Choice::of(*region, e, &members) {
                    best = Some((score, choice));
                }
            }
        }
    }
    best.map(|(_, c)| c)
}

/// An untried healthy endpoint in `region` (if the region is up): sticky sessions retry inside
/// the region that holds their state before failing over.
pub fn choose_in_region(
    snapshot: &RoutingSnapshot,
    region: RegionIndex,
    tried: &[Choice],
) -> Option<Choice> {
    if !snapshot.regions.get(region)?.health.is_up() {
        return None;
    }
    pick_endpoint(snapshot, region, tried)
}
