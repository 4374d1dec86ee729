//! Upstream selection: which region, then which endpoint, for one attempt of a request.
//!
//! The policy, in order: tiers by priority; within a tier, regions by weight; within a region,
//! endpoints by round robin. An attempt never reuses an endpoint already tried for the request,
//! and after a failure in a region the remaining regions are preferred over that region's other
//! endpoints. Health and sticky sessions plug in as filters on the candidates (later issues).

use std::sync::atomic::Ordering;

use crate::snapshot::{RegionIndex, RoutePlan, RoutingSnapshot};

/// One endpoint chosen for an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Region index in the snapshot.
    pub region: RegionIndex,
    /// Endpoint index in the region.
    pub endpoint: usize,
}

/// Picks the endpoint for the next attempt, or `None` when every candidate was tried.
pub fn choose(snapshot: &RoutingSnapshot, plan: &RoutePlan, tried: &[Choice]) -> Option<Choice> {
    let failed_regions: Vec<RegionIndex> = tried.iter().map(|c| c.region).collect();
    // First pass: regions where nothing failed yet; second pass: any untried endpoint.
    for avoid_failed_regions in [true, false] {
        for tier in &plan.tiers {
            for region in tier_order(plan, tier) {
                if avoid_failed_regions && failed_regions.contains(&region) {
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

/// Whether an endpoint not yet in `tried` is left for another attempt.
pub fn has_untried(snapshot: &RoutingSnapshot, plan: &RoutePlan, tried: &[Choice]) -> bool {
    plan.tiers.iter().flatten().any(|(region, _)| {
        snapshot.regions.get(*region).is_some_and(|target| {
            target.endpoints.iter().enumerate().any(|(endpoint, e)| {
                e.socket.is_some()
                    && !tried.contains(&Choice {
                        region: *region,
                        endpoint,
                    })
            })
        })
    })
}

/// Regions of a tier in the order to try them: a weighted rotation, then the rest.
fn tier_order(plan: &RoutePlan, tier: &[(RegionIndex, u32)]) -> Vec<RegionIndex> {
    if tier.len() == 1 {
        return vec![tier[0].0];
    }
    let total: u32 = tier.iter().map(|(_, w)| *w).sum();
    let ticket = (plan.tier_cursor.fetch_add(1, Ordering::Relaxed) as u32) % total.max(1);
    let mut acc = 0;
    let first = tier
        .iter()
        .find(|(_, w)| {
            acc += *w;
            ticket < acc
        })
        .map(|(r, _)| *r)
        .unwrap_or(tier[0].0);
    let mut order = vec![first];
    order.extend(tier.iter().map(|(r, _)| *r).filter(|r| *r != first));
    order
}

fn pick_endpoint(
    snapshot: &RoutingSnapshot,
    region: RegionIndex,
    tried: &[Choice],
) -> Option<Choice> {
    let target = snapshot.regions.get(region)?;
    let n = target.endpoints.len();
    if n == 0 {
        return None;
    }
    let start = target.cursor.fetch_add(1, Ordering::Relaxed);
    (0..n)
        .map(|k| (start + k) % n)
        .filter(|&e| target.endpoints[e].socket.is_some())
        .map(|endpoint| Choice { region, endpoint })
        .find(|c| !tried.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;

    fn snapshot(routes: &str) -> RoutingSnapshot {
        let yaml = format!(
            "listeners: [{{ name: h, bind: \"127.0.0.1:1\" }}]\nregions:\n  fra: {{ endpoints: [{{ id: f1, address: \"127.0.0.1:11\" }}, {{ id: f2, address: \"127.0.0.1:12\" }}] }}\n  ber: {{ endpoints: [{{ id: b1, address: \"127.0.0.1:21\" }}] }}\n  ams: {{ endpoints: [{{ id: a1, address: \"127.0.0.1:31\" }}] }}\nroutes:\n{routes}"
        );
        let config = gateway_config::parse(&yaml, Path::new("t.yaml")).expect("valid");
        RoutingSnapshot::build(Arc::new(config))
    }

    #[test]
    fn first_tier_round_robin_then_other_region_after_failure() {
        let s = snapshot("  - { name: r, regions: [fra, ber] }\n");
        let plan = &s.routes[0];
        let a = choose(&s, plan, &[]).expect("some");
        let b = choose(&s, plan, &[]).expect("some");
        assert_eq!((a.region, b.region), (0, 0));
        assert_ne!(a.endpoint, b.endpoint);
        // After a failure in fra, the retry goes to ber before fra's other endpoint.
        let retry = choose(&s, plan, &[a]).expect("some");
        assert_eq!(retry.region, 1);
        let last = choose(&s, plan, &[a, retry]).expect("some");
        assert_eq!(
            last,
            Choice {
                region: 0,
                endpoint: 1 - a.endpoint
            }
        );
        assert!(has_untried(&s, plan, &[a, retry]));
        assert!(!has_untried(&s, plan, &[a, retry, last]));
        assert_eq!(choose(&s, plan, &[a, retry, last]), None);
    }

    #[test]
    fn weights_split_a_tier() {
        let s = snapshot("  - { name: r, regions: [{ fra: 3, ber: 1 }, ams] }\n");
        let plan = &s.routes[0];
        let mut counts = [0; 3];
        for _ in 0..400 {
            counts[choose(&s, plan, &[]).expect("some").region] += 1;
        }
        assert_eq!(counts, [300, 100, 0]);
    }
}
