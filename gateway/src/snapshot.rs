//! The immutable routing snapshot: everything the request path needs from config, in one value
//! that is published with one atomic swap.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use gateway_config::{
    EndpointAddress, EndpointId, GatewayConfig, RegionName, Route, UpstreamProtocol, UpstreamTls,
};

use crate::routing::RouteTable;

/// Position of a region in [`RoutingSnapshot::regions`].
pub type RegionIndex = usize;

/// Routes, regions and endpoints that must agree, built from one validated config.
#[derive(Debug)]
pub struct RoutingSnapshot {
    /// The config this snapshot was built from.
    pub config: Arc<GatewayConfig>,
    /// Route index for matching.
    pub table: RouteTable,
    /// Routes with region names resolved to indices.
    pub routes: Vec<RoutePlan>,
    /// Regions in config order.
    pub regions: Vec<RegionTarget>,
}

/// A route with its tiers resolved to region indices.
#[derive(Debug)]
pub struct RoutePlan {
    /// The validated route.
    pub route: Route,
    /// Tiers, highest priority first: `(region, weight)`.
    pub tiers: Vec<Vec<(RegionIndex, u32)>>,
    /// Rotates weighted choices within a tier.
    pub tier_cursor: AtomicUsize,
}

/// A region as the proxy sees it.
#[derive(Debug)]
pub struct RegionTarget {
    /// Region name.
    pub name: RegionName,
    /// Endpoints in config order.
    pub endpoints: Vec<EndpointTarget>,
    /// TLS towards the endpoints.
    pub tls: Option<UpstreamTls>,
    /// HTTP version towards the endpoints.
    pub protocol: UpstreamProtocol,
    /// Round-robin cursor.
    pub cursor: AtomicUsize,
}

/// An endpoint with its connect address.
#[derive(Debug)]
pub struct EndpointTarget {
    /// Stable id.
    pub id: EndpointId,
    /// Address as configured.
    pub address: EndpointAddress,
    /// Where to connect; `None` when a host name did not resolve.
    pub socket: Option<SocketAddr>,
}

impl RoutingSnapshot {
    /// Builds a snapshot. Host-name endpoints are resolved once here (DNS discovery with TTLs
    /// replaces this with the health crate).
    pub fn build(config: Arc<GatewayConfig>) -> Self {
        let regions: Vec<RegionTarget> = config
            .regions
            .iter()
            .map(|r| RegionTarget {
                name: r.name.clone(),
                endpoints: r
                    .endpoints
                    .iter()
                    .map(|e| EndpointTarget {
                        id: e.id.clone(),
                        address: e.address.clone(),
                        socket: resolve(&e.address),
                    })
                    .collect(),
                tls: r.tls.clone(),
                protocol: r.protocol,
                cursor: AtomicUsize::new(0),
            })
            .collect();
        let index_of = |name: &RegionName| regions.iter().position(|r| &r.name == name);
        let routes = config
            .routes
            .iter()
            .map(|route| RoutePlan {
                tiers: route
                    .tiers
                    .iter()
                    .map(|tier| {
                        tier.regions
                            .iter()
                            .filter_map(|(name, w)| index_of(name).map(|i| (i, w.get())))
                            .collect()
                    })
                    .collect(),
                route: route.clone(),
                tier_cursor: AtomicUsize::new(0),
            })
            .collect();
        Self {
            table: RouteTable::new(&config.routes),
            routes,
            regions,
            config,
        }
    }
}

fn resolve(address: &EndpointAddress) -> Option<SocketAddr> {
    match address {
        EndpointAddress::Socket(addr) => Some(*addr),
        EndpointAddress::Host { host, port } => {
            let resolved = (host.as_str(), *port).to_socket_addrs().ok()?.next();
            if resolved.is_none() {
                tracing::warn!(%host, port, "endpoint host name did not resolve");
            }
            resolved
        }
    }
}
