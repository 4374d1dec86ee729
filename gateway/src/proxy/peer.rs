//! The upstream peer of one attempt: address, TLS, ALPN, timeouts and the abortable connect,
//! all from the chosen endpoint and the settings it came with.

use std::sync::Arc;
use std::time::Duration;

use gateway_config::{RouteTimeouts, UpstreamProtocol};
use pingora::prelude::HttpPeer;
use pingora::protocols::ALPN;

use crate::proxy::selection::Choice;
use crate::proxy::upstream::AbortableConnect;

/// The peer for an attempt at `choice`. `read_timeout` is what is left of the request's
/// deadline, capped by `timeouts.read`; `upgrade` for WebSocket and other upgrades.
pub(crate) fn for_attempt(
    choice: &Choice,
    timeouts: &RouteTimeouts,
    read_timeout: Duration,
    upgrade: bool,
) -> HttpPeer {
    let region = &choice.settings;
    let (token, generation) = choice.endpoint.abort_token();
    let sni = region
        .tls
        .as_ref()
        .map(|t| t.sni.clone())
        .unwrap_or_default();
    let mut peer = HttpPeer::new(choice.endpoint.key.addr, region.tls.is_some(), sni);
    // Connections opened before the endpoint was last marked down are never reused.
    peer.group_key = generation;
    let opts = &mut peer.options;
    opts.custom_l4 = Some(Arc::new(AbortableConnect {
        endpoint: choice.endpoint.clone(),
        token,
        generation,
        connect_timeout: timeouts.connect,
    }));
    opts.connection_timeout = Some(timeouts.connect);
    if region.tls.is_some() {
        opts.total_connection_timeout = Some(timeouts.connect.saturating_mul(2));
    }
    opts.read_timeout = Some(read_timeout);
    opts.write_timeout = Some(read_timeout);
    opts.idle_timeout = Some(timeouts.idle);
    // Pingora's default is one stream per HTTP/2 connection; share connections instead
    // (Pingora also respects the endpoint's SETTINGS_MAX_CONCURRENT_STREAMS).
    opts.max_h2_streams = region.h2_streams;
    if let Some(tls) = &region.tls {
        opts.verify_cert = tls.verify;
        opts.verify_hostname = tls.verify;
    }
    // WebSocket upgrades need HTTP/1.1 to the upstream.
    opts.alpn = match (region.protocol, region.tls.is_some()) {
        _ if upgrade => ALPN::H1,
        (UpstreamProtocol::Http1, _) => ALPN::H1,
        (UpstreamProtocol::Http2, _) => ALPN::H2,
        (UpstreamProtocol::Auto, true) => ALPN::H2H1,
        (UpstreamProtocol::Auto, false) => ALPN::H1,
    };
    peer
}

#[cfg(test)]
mod tests {
    //! Issue 9, reload as one swap: region members are published by the health monitor and the
    //! snapshot by the reloader, so for a moment a request may see one config's snapshot and
    //! the other config's members. Each endpoint must still get its own config's settings.

    use super::*;
    use crate::proxy::selection::choose;
    use crate::routing::failover::FailoverBook;
    use crate::routing::snapshot::RoutingSnapshot;
    use gateway_health::{HealthHub, HealthMonitor};

    const PLAIN: &str =
        "  fra:\n    endpoints: [{ id: f1, address: \"127.0.0.1:9\" }]\n    protocol: http1\n";
    const TLS: &str = "  fra:\n    endpoints: [{ id: f2, address: \"127.0.0.1:10\" }]\n    protocol: http2\n    tls: { sni: fra.test }\n";

    fn config(region: &str) -> Arc<gateway_config::GatewayConfig> {
        let text = format!("listeners: [{{ name: http, bind: \"127.0.0.1:18080\" }}]\nregions:\n{region}routes:\n  - {{ name: app, regions: [fra] }}\n");
        Arc::new(gateway_config::parse(&text, std::path::Path::new("t.yaml")).expect("valid"))
    }

    /// The peer of the first attempt over `snapshot`.
    fn first_peer(snapshot: &RoutingSnapshot) -> HttpPeer {
        let plan = &snapshot.routes[0];
        let choice = choose(snapshot, plan, &[]).expect("an endpoint");
        let t = plan.route.timeouts;
        for_attempt(&choice, &t, t.read, false)
    }

    #[tokio::test]
    async fn an_endpoint_always_gets_the_settings_of_the_config_it_came_from() {
        let (plain, tls) = (config(PLAIN), config(TLS));
        let hub = HealthHub::new();
        let book = Arc::new(FailoverBook::default());
        let monitor = HealthMonitor::new(hub.clone());
        let snapshot = |c: &Arc<gateway_config::GatewayConfig>| {
            RoutingSnapshot::build(c.clone(), hub.clone(), book.clone(), Default::default())
        };

        // Running the plaintext config; a reload to the TLS one has published its members but
        // not yet its snapshot.
        monitor.apply(&plain);
        let old = snapshot(&plain);
        monitor.apply(&tls);
        let peer = first_peer(&old);
        assert_eq!(peer._address.to_string(), "127.0.0.1:10");
        assert!(peer.is_tls(), "the TLS endpoint is dialled with TLS");
        assert_eq!(peer.sni, "fra.test");
        assert_eq!(peer.options.alpn, ALPN::H2);

        // The other way round: the TLS config's snapshot over the plaintext config's members.
        let new = snapshot(&tls);
        monitor.apply(&plain);
        let peer = first_peer(&new);
        assert_eq!(peer._address.to_string(), "127.0.0.1:9");
        assert!(
            !peer.is_tls(),
            "the plaintext endpoint is dialled without TLS"
        );
        assert_eq!(peer.options.alpn, ALPN::H1);
    }
}
