//! Session affinity: which endpoint a sticky request goes to, and which cookie its response
//! carries. The token format is in [`crate::routing::sticky`] (a leaf module, so that the routing
//! snapshot can name its outcomes without a module cycle).

use gateway_config::{OnFailback, StickySettings};
use http::HeaderMap;

use crate::proxy::selection::{pick_endpoint, Choice};
use crate::routing::snapshot::{RegionIndex, RoutePlan, RoutingSnapshot};
use crate::routing::sticky::{
    find_cookie, now_unix, rendezvous_score, set_cookie, Outcome, StickyToken,
};

/// What a request on a sticky route brought: a valid cookie's pin, or else an affinity-header
/// key.
pub(crate) struct Affinity {
    pin: Option<StickyToken>,
    header_key: Option<String>,
}

impl Affinity {
    /// Reads the cookie (an invalid one is counted and ignored) and the affinity header.
    pub fn of_request(
        headers: &HeaderMap,
        settings: &StickySettings,
        snapshot: &RoutingSnapshot,
        plan: &RoutePlan,
    ) -> Self {
        let mut pin = None;
        let cookies = headers
            .get_all(http::header::COOKIE)
            .iter()
            .map(|v| v.as_bytes());
        if let Some(raw) = find_cookie(cookies, &settings.cookie) {
            match StickyToken::decode(
                raw,
                &snapshot.config.sticky_keys,
                &plan.route.name,
                now_unix(),
            ) {
                Ok(t) => pin = Some(t),
                Err(reason) => plan.metrics.sticky(Outcome::Invalid(reason)),
            }
        }
        let header_key = match (&pin, &settings.header) {
            (None, Some(h)) => headers
                .get(h.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            _ => None,
        };
        Self { pin, header_key }
    }

    /// The endpoint for the next attempt, when affinity decides it: the first attempt goes to
    /// the pin (or its region) or the header key's endpoint; the first retry stays in the region
    /// holding the session's state. `None`: the normal failover order decides.
    pub fn choose(
        &self,
        snapshot: &RoutingSnapshot,
        plan: &RoutePlan,
        settings: &StickySettings,
        tried: &[Choice],
    ) -> Option<Choice> {
        match tried {
            [] => match (&self.pin, &self.header_key) {
                (Some(pin), _) => choose_pinned(
                    snapshot,
                    plan,
                    &pin.region,
                    &pin.endpoint,
                    settings.on_failback == OnFailback::Return,
                )
                .map(|(c, _)| c),
                (None, Some(key)) => choose_rendezvous(snapshot, plan, key),
                (None, None) => None,
            },
            [first] => choose_in_region(snapshot, first.region, tried),
            _ => None,
        }
    }

    /// The `Set-Cookie` value for a response served by `served`, unless the request's cookie
    /// already named it; counts the outcome (honoured, repinned, issued) and returns its label.
    pub fn response_cookie(
        &self,
        snapshot: &RoutingSnapshot,
        plan: &RoutePlan,
        settings: &StickySettings,
        served: &Choice,
    ) -> (Option<String>, &'static str) {
        let mut label = "";
        let cookie = self.cookie_for(snapshot, plan, settings, served, &mut label);
        (cookie, label)
    }

    fn cookie_for(
        &self,
        snapshot: &RoutingSnapshot,
        plan: &RoutePlan,
        settings: &StickySettings,
        served: &Choice,
        label: &mut &'static str,
    ) -> Option<String> {
        let region = snapshot.regions[served.region].name.as_str();
        let endpoint = served.endpoint.key.id.as_str();
        let outcome = match &self.pin {
            Some(pin) if pin.region == region && pin.endpoint == endpoint => Outcome::Honoured,
            Some(_) => Outcome::Repinned,
            None => Outcome::Issued,
        };
        plan.metrics.sticky(outcome);
        *label = crate::telemetry::metrics::LabelSet::label(outcome);
        if outcome == Outcome::Honoured {
            return None;
        }
        let key = snapshot.config.sticky_keys.first()?;
        let now = now_unix();
        let token = StickyToken {
            route: plan.route.name.to_string(),
            region: region.to_string(),
            endpoint: endpoint.to_string(),
            issued: now,
            expires: now + settings.ttl.as_secs().max(1),
        };
        Some(set_cookie(settings, &token.encode(key)))
    }
}

/// The endpoint a sticky session is pinned to, or a re-pin inside the same region.
///
/// `None` when the session must be placed afresh: the region is not one of the route's, is down
/// or drained, is in a higher tier than the one serving now (inside its failback hold-down), or
/// (with `on_failback: return`) is in a lower tier than the one serving now.
fn choose_pinned(
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
    // A full region keeps its sessions only while it has room; the excess is placed afresh
    // (and spills like other traffic).
    if !target.health.is_up() || !target.has_room() {
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
fn choose_rendezvous(snapshot: &RoutingSnapshot, plan: &RoutePlan, key: &str) -> Option<Choice> {
    let tier = plan.serving_tier()?;
    let mut best: Option<(u64, Choice)> = None;
    for (region, _) in plan.tiers.get(tier)? {
        let target = &snapshot.regions[*region];
        if !target.health.is_up() || !target.has_room() {
            continue;
        }
        let members = target.health.members();
        for e in members.endpoints.iter().filter(|e| e.is_routable()) {
            let score = rendezvous_score(key, e.key.id.as_str());
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
fn choose_in_region(
    snapshot: &RoutingSnapshot,
    region: RegionIndex,
    tried: &[Choice],
) -> Option<Choice> {
    let target = snapshot.regions.get(region)?;
    if !target.health.is_up() || !target.has_room() {
        return None;
    }
    pick_endpoint(snapshot, region, tried)
}
