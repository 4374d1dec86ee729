//! Upstream selection: which region, then which endpoint, for one attempt of a request.
//!
//! First attempt: the route's active tier (see [`crate::routing::failover`]); within the tier, up
//! regions by weight; within a region, the better of two healthy endpoints (power of two
//! choices: the lower peak-EWMA time to first byte times attempts in flight, see
//! [`gateway_health::latency`]), so a slow endpoint gets less traffic before any probe or
//! ejection notices it. Retries never reuse an
//! endpoint already tried for the request, and after a failure in a region they prefer the other
//! allowed regions (the active tier's, then lower tiers, then higher ones) before the failed
//! region's other endpoints. Only regions of the route's tiers are ever candidates, and those
//! are validated to be within `allowed_regions`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use gateway_config::Region;
use gateway_health::hub::RegionMembers;
use gateway_health::latency::Latency;
use gateway_health::EndpointHealth;

use crate::routing::snapshot::{RegionIndex, RoutePlan, RoutingSnapshot};

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
    pub(crate) fn of(
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

/// Counts an attempt in flight to its endpoint (for latency-aware choice) until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<EndpointHealth>);

impl InFlight {
    /// Starts counting an attempt to `endpoint`.
    pub fn start(endpoint: &Arc<EndpointHealth>) -> Self {
        endpoint.latency.start();
        Self(endpoint.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.latency.finish();
    }
}

/// Why no endpoint was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoChoice {
    /// No region of the route is up (the residency 503).
    AllRegionsDown,
    /// Regions are up but every one is at its capacity (an overloaded 503).
    AtCapacity,
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
            .ok_or_else(|| {
                let full = plan.tiers.iter().flatten().any(|(r, _)| {
                    let target = &snapshot.regions[*r];
                    target.health.is_up() && !target.has_room()
                });
                if full {
                    NoChoice::AtCapacity
                } else {
                    NoChoice::AllRegionsDown
                }
            });
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

/// Fail-open (every allowed region looks down, `on_all_down: fail_open`): the next untried
/// endpoint in tier order, whatever health says, never in a drained region (a drain is an
/// operator's decision, not a guess) nor one at capacity.
pub fn choose_fail_open(
    snapshot: &RoutingSnapshot,
    plan: &RoutePlan,
    tried: &[Choice],
) -> Option<Choice> {
    fail_open_candidates(snapshot, plan, tried).next()
}

/// Whether fail-open has an endpoint left to try.
pub fn has_untried_fail_open(
    snapshot: &RoutingSnapshot,
    plan: &RoutePlan,
    tried: &[Choice],
) -> bool {
    fail_open_candidates(snapshot, plan, tried).next().is_some()
}

fn fail_open_candidates<'a>(
    snapshot: &'a RoutingSnapshot,
    plan: &'a RoutePlan,
    tried: &'a [Choice],
) -> impl Iterator<Item = Choice> + 'a {
    plan.tiers.iter().flatten().flat_map(move |(region, _)| {
        let target = &snapshot.regions[*region];
        let members = target.health.members();
        let open = target.health.drain_remaining().is_none() && target.has_room();
        let candidates: Vec<Choice> = members
            .endpoints
            .iter()
            .filter(|e| open && !tried.iter().any(|c| Arc::ptr_eq(&c.endpoint, e)))
            .filter_map(|e| Choice::of(*region, e, &members))
            .collect();
        candidates
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
    // A region degraded for the route (slower than its SLO, `degraded.rs`) comes last, after
    // the weighted pick among the others: tried only when they have nothing left.
    let mut up: Vec<(RegionIndex, u32)> = Vec::with_capacity(regions.len());
    let mut slow = Vec::new();
    for (position, &(r, w)) in regions.iter().enumerate() {
        let target = &snapshot.regions[r];
        if !(target.health.is_up() && target.has_room()) {
            continue;
        }
        if plan.skips_degraded(tier, position) {
            slow.push(r);
        } else {
            up.push((r, w));
        }
    }
    if up.len() <= 1 {
        return up.into_iter().map(|(r, _)| r).chain(slow).collect();
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
    order.extend(slow);
    order
}

/// An untried routable endpoint of `region`: of two candidates, the one with the lower latency
/// load. The first candidate goes round robin, the second is drawn at random among the others,
/// so that every endpoint is compared and a tie keeps the round robin's spread.
pub(crate) fn pick_endpoint(
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
    let eligible = |e: &&Arc<EndpointHealth>| {
        e.is_routable() && !tried.iter().any(|c| Arc::ptr_eq(&c.endpoint, e))
    };
    let start = target.health.cursor.fetch_add(1, Ordering::Relaxed);
    let (offset, first) = (0..n)
        .map(|k| (k, &members.endpoints[(start + k) % n]))
        .find(|(_, e)| eligible(e))?;
    let chosen = match second_candidate(&members.endpoints, start + offset, eligible) {
        Some(second) => {
            let now = tokio::time::Instant::now();
            if std::ptr::eq(
                Latency::better(&first.latency, &second.latency, now),
                &second.latency,
            ) {
                second
            } else {
                first
            }
        }
        None => first,
    };
    Choice::of(region, chosen, &members)
}

/// An eligible endpoint other than the one at `first`, from a random place onwards.
fn second_candidate<'a>(
    endpoints: &'a [Arc<EndpointHealth>],
    first: usize,
    eligible: impl Fn(&&'a Arc<EndpointHealth>) -> bool,
) -> Option<&'a Arc<EndpointHealth>> {
    let n = endpoints.len();
    if n < 2 {
        return None;
    }
    let from = fastrand::usize(1..n);
    (0..n - 1)
        .map(|k| &endpoints[(first + 1 + (from - 1 + k) % (n - 1)) % n])
        .find(|e| eligible(e))
}
