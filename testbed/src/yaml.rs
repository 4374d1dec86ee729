//! A typed writer for gateway config files.
//!
//! The test bed describes the fleets it runs as values ([`GatewayYaml`] and the section types
//! below) and writes them out with `serde_yaml`, instead of YAML templates patched with string
//! replacement. It covers what the test bed's fleets and the integration tests configure; every
//! field left `None` is omitted, so the gateway's default applies. `bind` values are text, so a
//! config can also carry the placeholders the integration harness fills in (`{listen}`, ...). The output is read by the real config loader
//! (`gateway_config`), which stays the only judge of what is valid: the tests below load what
//! this module writes.
//!
//! Integration tests whose subject is the YAML itself keep literal YAML.

use std::net::SocketAddr;
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Serialize, Serializer};

use crate::fleet::Fleet;
use crate::launcher::Ports;
use crate::region::RegionServer;

/// A whole config file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayYaml {
    /// `listeners[]`.
    pub listeners: Vec<Listener>,
    /// `admin`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
    /// `server`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<Server>,
    /// `dns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// `sticky_keys[]`, signing key first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sticky_keys: Vec<StickyKey>,
    /// `regions`, in this order.
    pub regions: IndexMap<String, Region>,
    /// `routes[]`.
    pub routes: Vec<Route>,
}

/// `listeners[]`.
#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    /// `name`.
    pub name: String,
    /// `bind`: `ip:port`, or a placeholder that whoever starts the gateway fills in first.
    pub bind: String,
    /// `tls`; none for a plaintext listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
}

/// `listeners[].tls`.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerTls {
    /// `certs[]`.
    pub certs: Vec<Cert>,
    /// `default_cert`: the index of the certificate for clients whose SNI matches none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_cert: Option<usize>,
}

/// `listeners[].tls.certs[]`: file paths, relative to the config file's directory.
#[derive(Debug, Clone, Serialize)]
pub struct Cert {
    /// `cert`.
    pub cert: String,
    /// `key`.
    pub key: String,
}

/// `admin`.
#[derive(Debug, Clone, Serialize)]
pub struct Admin {
    /// `bind`, like [`Listener::bind`].
    pub bind: String,
    /// `token_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

/// `server`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Server {
    /// `upstream_keepalive_pool`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_keepalive_pool: Option<u32>,
    /// `grace_period`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<Dur>,
    /// `adaptive_limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive_limit: Option<bool>,
    /// `request_head_timeout`: an HTTP/1 request head must be complete this long after its
    /// first byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_head_timeout: Option<Dur>,
    /// `max_connections`: client connections held at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

/// `dns`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Dns {
    /// `servers[]` (`ip:port`).
    pub servers: Vec<String>,
    /// `min_ttl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_ttl: Option<Dur>,
    /// `max_ttl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<Dur>,
    /// `timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
}

/// `sticky_keys[]`.
#[derive(Debug, Clone, Serialize)]
pub struct StickyKey {
    /// `id`.
    pub id: String,
    /// `secret_file`.
    pub secret_file: String,
}

/// `regions.<name>`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Region {
    /// `endpoints[]`.
    pub endpoints: Vec<Endpoint>,
    /// `protocol`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// `probe`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    /// `passive`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passive: Option<Passive>,
}

/// `regions.<name>.protocol`: the HTTP version spoken to the endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `http1`.
    Http1,
    /// `http2` (h2c without TLS).
    Http2,
}

/// `regions.<name>.endpoints[]`.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// `id`.
    pub id: String,
    /// `address`: `ip:port`, or `host:port` for DNS discovery.
    pub address: String,
}

/// `regions.<name>.probe`: an HTTP probe, or a TCP connect probe without `http`.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// `http`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// `interval`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Dur>,
    /// `timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// `rise`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    /// `fall`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
    /// `jitter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Percent>,
}

/// `probe.http`.
#[derive(Debug, Clone, Serialize)]
pub struct HttpProbe {
    /// `path`.
    pub path: String,
}

/// `regions.<name>.passive`: ejection after failures of live traffic.
#[derive(Debug, Clone, Serialize)]
pub struct Passive {
    /// `consecutive_failures`.
    pub consecutive_failures: u32,
    /// `ejection`.
    pub ejection: Dur,
    /// `max_ejection`.
    pub max_ejection: Dur,
}

/// `routes[]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Route {
    /// `name`.
    pub name: String,
    /// `match`.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<Match>,
    /// `regions`: tiers in priority order.
    pub regions: Vec<Tier>,
    /// `allowed_regions`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_regions: Option<Vec<String>>,
    /// `retry`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// `failback`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failback: Option<Failback>,
    /// `timeouts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// `sticky`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// `on_all_down`: `fail_open` or `reject`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_all_down: Option<String>,
    /// `max_body_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
}

/// `routes[].regions[]`: one priority tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Tier {
    /// A single region: `fra`.
    One(String),
    /// Regions sharing the tier by weight: `{fra: 70, ber: 30}`.
    Weighted(IndexMap<String, u32>),
}

impl Tier {
    /// A tier of region `name` alone.
    pub fn one(name: &str) -> Self {
        Self::One(name.into())
    }

    /// A tier shared by `(region, weight)`, in this order.
    pub fn weighted(shares: &[(&str, u32)]) -> Self {
        Self::Weighted(
            shares
                .iter()
                .map(|(name, weight)| (name.to_string(), *weight))
                .collect(),
        )
    }
}

/// `routes[].match`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Match {
    /// `host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `path_prefix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
}

/// `routes[].retry`.
#[derive(Debug, Clone, Serialize)]
pub struct Retry {
    /// `attempts`.
    pub attempts: u32,
    /// `budget`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Percent>,
    /// `early`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early: Option<EarlyRetry>,
}

/// `routes[].retry.early` (only `enabled`; the rest default).
#[derive(Debug, Clone, Serialize)]
pub struct EarlyRetry {
    /// `enabled`.
    pub enabled: bool,
}

/// `routes[].failback`.
#[derive(Debug, Clone, Serialize)]
pub struct Failback {
    /// `hold_down`.
    pub hold_down: Dur,
}

/// `routes[].timeouts`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeouts {
    /// `connect`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<Dur>,
    /// `request`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Dur>,
    /// `idle`: how long a pooled upstream connection may stay idle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<Dur>,
}

/// `routes[].sticky`: session affinity.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sticky {
    /// `ttl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Dur>,
    /// `on_failback`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_failback: Option<OnFailback>,
    /// `header`: affinity by this request header instead of a cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// `secure`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
}

/// `routes[].sticky.on_failback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailback {
    /// `stay`: a pinned session stays where it was moved.
    Stay,
    /// `return`: a pinned session goes back to the primary.
    Return,
}

/// A duration written the way the config reads it: whole hours as `1h`, whole seconds as `5s`,
/// else milliseconds (`250ms`), else microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 && d.as_secs() > 0 && d.as_secs() % 3600 == 0 {
            write!(f, "{}h", d.as_secs() / 3600)
        } else if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.subsec_nanos() % 1_000_000 == 0 {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}us", d.as_micros())
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A percentage, written `10%`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percent(pub u32);

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}%", self.0))
    }
}

impl GatewayYaml {
    /// One plaintext listener `http` on `ports.listen` and the admin API on `ports.admin`; no
    /// regions or routes yet.
    pub fn new(ports: Ports) -> Self {
        Self::bound(&ports.listen.to_string(), &ports.admin.to_string())
    }

    /// Like [`GatewayYaml::new`], with `bind` values given as text (addresses or placeholders).
    pub fn bound(listen: &str, admin: &str) -> Self {
        Self {
            listeners: vec![Listener::plain("http", listen)],
            admin: Some(Admin {
                bind: admin.into(),
                token_file: None,
            }),
            ..Self::default()
        }
    }

    /// Adds every region of `fleet` with its endpoints, each probed by `probe`.
    pub fn fleet(self, fleet: &Fleet, probe: &Probe) -> Self {
        self.fleet_with(fleet, &Region::default().probe(probe.clone()))
    }

    /// Adds every region of `fleet` with its endpoints and the other settings of `region`.
    pub fn fleet_with(mut self, fleet: &Fleet, region: &Region) -> Self {
        for (name, servers) in fleet.regions() {
            let endpoints = Region::of(servers).endpoints;
            self = self.region(
                name,
                Region {
                    endpoints,
                    ..region.clone()
                },
            );
        }
        self
    }

    /// Appends a listener.
    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// With the admin API's bearer token read from `path`.
    pub fn token_file(mut self, path: &str) -> Self {
        if let Some(admin) = &mut self.admin {
            admin.token_file = Some(path.into());
        }
        self
    }

    /// With `server` settings.
    pub fn server(mut self, server: Server) -> Self {
        self.server = Some(server);
        self
    }

    /// With `dns` settings.
    pub fn dns(mut self, dns: Dns) -> Self {
        self.dns = Some(dns);
        self
    }

    /// With the sticky keys `(id, secret_file)`, signing key first.
    pub fn sticky_keys(mut self, keys: &[(&str, &str)]) -> Self {
        self.sticky_keys = keys
            .iter()
            .map(|(id, secret_file)| StickyKey {
                id: id.to_string(),
                secret_file: secret_file.to_string(),
            })
            .collect();
        self
    }

    /// Adds (or replaces) region `name`.
    pub fn region(mut self, name: &str, region: Region) -> Self {
        self.regions.insert(name.to_string(), region);
        self
    }

    /// Appends a route.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// The YAML text, starting with `header` as comment lines (none if empty).
    pub fn to_yaml(&self, header: &str) -> Result<String, serde_yaml::Error> {
        let mut text: String = header.lines().map(|l| format!("# {l}\n")).collect();
        text.push_str(&serde_yaml::to_string(self)?);
        Ok(text)
    }
}

impl Listener {
    /// Plaintext listener `name` on `bind`.
    pub fn plain(name: &str, bind: &str) -> Self {
        Self {
            name: name.into(),
            bind: bind.into(),
            tls: None,
        }
    }

    /// TLS listener `name` on `bind` with `certs` (certificate file, key file), the first the
    /// default.
    pub fn tls(name: &str, bind: &str, certs: &[(&str, &str)]) -> Self {
        let certs = certs
            .iter()
            .map(|(cert, key)| Cert {
                cert: cert.to_string(),
                key: key.to_string(),
            })
            .collect();
        Self {
            tls: Some(ListenerTls {
                certs,
                default_cert: None,
            }),
            ..Self::plain(name, bind)
        }
    }

    /// With certificate `index` as the default (a TLS listener).
    pub fn default_cert(mut self, index: usize) -> Self {
        if let Some(tls) = &mut self.tls {
            tls.default_cert = Some(index);
        }
        self
    }
}

impl Region {
    /// A region of `endpoints`, without a probe (the gateway's default: TCP).
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        Self {
            endpoints,
            ..Self::default()
        }
    }

    /// A region of one endpoint, `id` at `address`.
    pub fn one(id: &str, address: SocketAddr) -> Self {
        Self::new(vec![Endpoint::new(id, address)])
    }

    /// A region of `servers`, with their ids and addresses.
    pub fn of(servers: &[RegionServer]) -> Self {
        Self::new(servers.iter().map(Endpoint::of).collect())
    }

    /// With `probe`.
    pub fn probe(mut self, probe: Probe) -> Self {
        self.probe = Some(probe);
        self
    }

    /// Speaking `protocol` to the endpoints.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// With passive ejection: `consecutive_failures` eject an endpoint for `ejection`, growing
    /// up to `max_ejection`.
    pub fn passive(
        mut self,
        consecutive_failures: u32,
        ejection: Duration,
        max_ejection: Duration,
    ) -> Self {
        self.passive = Some(Passive {
            consecutive_failures,
            ejection: Dur(ejection),
            max_ejection: Dur(max_ejection),
        });
        self
    }
}

impl Endpoint {
    /// Endpoint `id` at `address`.
    pub fn new(id: &str, address: SocketAddr) -> Self {
        Self::at(id, &address.to_string())
    }

    /// Endpoint `id` at `address`, `ip:port` or `host:port` (DNS discovery).
    pub fn at(id: &str, address: &str) -> Self {
        Self {
            id: id.into(),
            address: address.into(),
        }
    }

    /// `server`'s endpoint id and address.
    pub fn of(server: &RegionServer) -> Self {
        Self::new(&server.identity().endpoint, server.addr())
    }
}

/// `servers` as a one-line list of endpoints (JSON, which YAML reads as a flow sequence), for
/// tests that write the rest of their config as literal YAML.
pub fn endpoint_list(servers: &[RegionServer]) -> String {
    let endpoints: Vec<Endpoint> = servers.iter().map(Endpoint::of).collect();
    serde_json::to_string(&endpoints).unwrap_or_default()
}

impl Probe {
    /// `GET path` every `interval`, failing after `timeout`; the gateway's `rise` and `fall`.
    pub fn http(path: &str, interval: Duration, timeout: Duration) -> Self {
        Self {
            http: Some(HttpProbe { path: path.into() }),
            ..Self::tcp(interval, timeout)
        }
    }

    /// A TCP connect every `interval`, failing after `timeout`; the gateway's `rise` and `fall`.
    pub fn tcp(interval: Duration, timeout: Duration) -> Self {
        Self {
            http: None,
            interval: Some(Dur(interval)),
            timeout: Some(Dur(timeout)),
            rise: None,
            fall: None,
            jitter: None,
        }
    }

    /// With `rise` and `fall`.
    pub fn rise_fall(mut self, rise: u32, fall: u32) -> Self {
        self.rise = Some(rise);
        self.fall = Some(fall);
        self
    }

    /// With `jitter` percent of random spread of the interval.
    pub fn jitter(mut self, percent: u32) -> Self {
        self.jitter = Some(Percent(percent));
        self
    }
}

impl Route {
    /// Route `name` over `tiers` (one region each, in priority order), matching every request.
    pub fn new(name: &str, tiers: &[&str]) -> Self {
        Self::tiered(name, tiers.iter().map(|t| Tier::one(t)).collect())
    }

    /// Route `name` over `tiers` (single or weighted), matching every request.
    pub fn tiered(name: &str, tiers: Vec<Tier>) -> Self {
        Self {
            name: name.into(),
            regions: tiers,
            ..Self::default()
        }
    }

    /// `match: { path_prefix }` (with the host, if one is matched too).
    pub fn path_prefix(mut self, prefix: &str) -> Self {
        self.matches.get_or_insert_with(Match::default).path_prefix = Some(prefix.into());
        self
    }

    /// `match: { host }` (with the path prefix, if one is matched too).
    pub fn host(mut self, host: &str) -> Self {
        self.matches.get_or_insert_with(Match::default).host = Some(host.into());
        self
    }

    /// `on_all_down: reject`: a 503 at once when every allowed region is down.
    pub fn reject_when_all_down(mut self) -> Self {
        self.on_all_down = Some("reject".into());
        self
    }

    /// `max_body_bytes: bytes`.
    pub fn max_body_bytes(mut self, bytes: u64) -> Self {
        self.max_body_bytes = Some(bytes);
        self
    }

    /// `allowed_regions`.
    pub fn allowed_regions(mut self, regions: &[&str]) -> Self {
        self.allowed_regions = Some(regions.iter().map(|r| r.to_string()).collect());
        self
    }

    /// `retry: { attempts }`.
    pub fn retry_attempts(mut self, attempts: u32) -> Self {
        self.retry = Some(Retry {
            attempts,
            budget: None,
            early: None,
        });
        self
    }

    /// `retry: { early: { enabled: true } }`, beside the attempts set before (default 2).
    pub fn early_retry(self) -> Self {
        self.early(true)
    }

    /// `retry: { early: { enabled: false } }` (early retry is on by default), beside the
    /// attempts set before (default 2).
    pub fn no_early_retry(self) -> Self {
        self.early(false)
    }

    fn early(mut self, enabled: bool) -> Self {
        let retry = self.retry.get_or_insert(Retry {
            attempts: 2,
            budget: None,
            early: None,
        });
        retry.early = Some(EarlyRetry { enabled });
        self
    }

    /// `retry: { attempts, budget }`.
    pub fn retry_budget(mut self, attempts: u32, budget_percent: u32) -> Self {
        self.retry = Some(Retry {
            attempts,
            budget: Some(Percent(budget_percent)),
            early: None,
        });
        self
    }

    /// `failback: { hold_down }`.
    pub fn hold_down(mut self, hold_down: Duration) -> Self {
        self.failback = Some(Failback {
            hold_down: Dur(hold_down),
        });
        self
    }

    /// `timeouts: { connect, request }`.
    pub fn timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.timeouts = Some(Timeouts {
            connect: Some(Dur(connect)),
            request: Some(Dur(request)),
            idle: None,
        });
        self
    }

    /// `timeouts: { request }`.
    pub fn request_timeout(mut self, request: Duration) -> Self {
        self.timeouts = Some(Timeouts {
            connect: None,
            request: Some(Dur(request)),
            idle: None,
        });
        self
    }

    /// `timeouts: { idle }`: pooled upstream connections idle this long are closed (other
    /// timeouts already set are kept).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.timeouts.get_or_insert_with(Timeouts::default).idle = Some(Dur(idle));
        self
    }

    /// `sticky`.
    pub fn sticky(mut self, sticky: Sticky) -> Self {
        self.sticky = Some(sticky);
        self
    }
}

impl Sticky {
    /// Cookies valid for `ttl`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(Dur(ttl));
        self
    }

    /// With `on_failback`.
    pub fn on_failback(mut self, on_failback: OnFailback) -> Self {
        self.on_failback = Some(on_failback);
        self
    }

    /// Affinity by request header `name` instead of a cookie.
    pub fn header(mut self, name: &str) -> Self {
        self.header = Some(name.into());
        self
    }

    /// Cookies without the `Secure` attribute (for plaintext tests).
    pub fn insecure(mut self) -> Self {
        self.secure = Some(false);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::loopback;

    fn ports() -> Ports {
        Ports {
            listen: loopback(18080),
            admin: loopback(19901),
        }
    }

    #[test]
    fn durations_are_written_as_the_config_reads_them() {
        for (d, text) in [
            (Duration::from_secs(5), "5s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_micros(1500), "1500us"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(300), "300s"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(Dur(d).to_string(), text);
            assert_eq!(gateway_config::parse_duration(text), Ok(d));
        }
    }

    #[tokio::test]
    async fn a_fleet_config_is_valid_and_means_what_was_written() {
        let fleet = Fleet::start(&[("fra", 2), ("ber", 1)])
            .await
            .expect("fleet");
        let probe = Probe::http(
            "/healthz",
            Duration::from_millis(500),
            Duration::from_millis(250),
        )
        .rise_fall(2, 3);
        let yaml = GatewayYaml::new(ports())
            .server(Server {
                upstream_keepalive_pool: Some(512),
                ..Server::default()
            })
            .fleet(&fleet, &probe)
            .route(
                Route::new("app", &["fra", "ber"])
                    .path_prefix("/")
                    .allowed_regions(&["fra", "ber"])
                    .retry_attempts(3)
                    .hold_down(Duration::from_secs(5))
                    .timeouts(Duration::from_millis(250), Duration::from_secs(10)),
            );
        let text = yaml
            .to_yaml("written by a test\nsecond line")
            .expect("yaml");
        assert!(
            text.starts_with("# written by a test\n# second line\n"),
            "{text}"
        );
        let config = gateway_config::parse(&text, std::path::Path::new("t.yaml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.admin.bind, ports().admin);
        assert_eq!(config.regions.len(), 2);
        assert_eq!(config.routes.len(), 1);
        assert_eq!(config.server.upstream_keepalive_pool, 512);
        let fra = &fleet.region("fra").expect("fra")[1];
        assert!(
            text.contains("id: fra-2\n") && text.contains(&fra.addr().to_string()),
            "{text}"
        );
        fleet.shutdown().await;
    }

    #[tokio::test]
    async fn every_section_is_valid_and_means_what_was_written() {
        let fleet = Fleet::start(&[("fra", 1), ("ber", 1)])
            .await
            .expect("fleet");
        let dir = tempfile::tempdir().expect("tmp");
        for file in ["admin.token", "k1.key", "k2.key"] {
            let secret = "0123456789abcdef0123456789abcdef";
            std::fs::write(dir.path().join(file), secret).expect("write");
        }
        let probe = Probe::tcp(Duration::from_secs(3600), Duration::from_secs(1)).jitter(0);
        let region = Region::default()
            .probe(probe)
            .protocol(Protocol::Http2)
            .passive(3, Duration::from_secs(5), Duration::from_secs(30));
        let yaml = GatewayYaml::bound("127.0.0.1:18080", "127.0.0.1:19901")
            .token_file("admin.token")
            .server(Server {
                grace_period: Some(Dur(Duration::from_secs(3))),
                ..Server::default()
            })
            .dns(Dns {
                servers: vec!["127.0.0.1:5353".into()],
                min_ttl: Some(Dur(Duration::from_millis(200))),
                max_ttl: Some(Dur(Duration::from_secs(1))),
                timeout: Some(Dur(Duration::from_millis(300))),
            })
            .sticky_keys(&[("k2", "k2.key"), ("k1", "k1.key")])
            .fleet_with(&fleet, &region)
            .region(
                "dns",
                Region::new(vec![Endpoint::at("dns-1", "app.test:8080")]),
            )
            .route(
                Route::new("eu", &["fra"])
                    .host("*.example.com")
                    .path_prefix("/eu/")
                    .retry_budget(3, 0)
                    .request_timeout(Duration::from_millis(300))
                    .sticky(
                        Sticky::default()
                            .ttl(Duration::from_secs(3600))
                            .on_failback(OnFailback::Return)
                            .insecure(),
                    ),
            )
            .route(
                Route::new("app", &["ber", "dns"]).sticky(Sticky::default().header("x-session-id")),
            );
        let text = yaml.to_yaml("").expect("yaml");
        for written in [
            "interval: 1h",
            "jitter: 0%",
            "budget: 0%",
            "protocol: http2",
        ] {
            assert!(text.contains(written), "{written}:\n{text}");
        }
        std::fs::write(dir.path().join("gateway.yaml"), &text).expect("write");
        let config = gateway_config::parse(&text, &dir.path().join("gateway.yaml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.regions.len(), 3);
        assert_eq!(config.routes.len(), 2);
        assert_eq!(config.server.grace_period, Duration::from_secs(3));
        assert_eq!(config.routes[0].path_prefix, "/eu/");
        assert!(text.contains("address: app.test:8080"), "{text}");
        fleet.shutdown().await;
    }

    #[tokio::test]
    async fn weighted_tiers_head_deadline_and_idle_timeout_mean_what_was_written() {
        let fleet = Fleet::start(&[("fra", 1), ("ber", 1), ("ams", 1)])
            .await
            .expect("fleet");
        let probe = Probe::http(
            "/healthz",
            Duration::from_secs(1),
            Duration::from_millis(500),
        );
        let yaml = GatewayYaml::new(ports())
            .server(Server {
                request_head_timeout: Some(Dur(Duration::from_secs(2))),
                ..Server::default()
            })
            .fleet(&fleet, &probe)
            .route(
                Route::tiered(
                    "app",
                    vec![
                        Tier::weighted(&[("fra", 70), ("ber", 30)]),
                        Tier::one("ams"),
                    ],
                )
                .idle_timeout(Duration::from_secs(5)),
            );
        let text = yaml.to_yaml("").expect("yaml");
        let config = gateway_config::parse(&text, std::path::Path::new("t.yaml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            config.server.limits.head_timeout,
            Duration::from_secs(2),
            "{text}"
        );
        let route = &config.routes[0];
        assert_eq!(route.timeouts.idle, Duration::from_secs(5), "{text}");
        assert_eq!(route.tiers.len(), 2, "{text}");
        let first: Vec<(String, u32)> = route.tiers[0]
            .regions
            .iter()
            .map(|(region, weight)| (region.to_string(), weight.get()))
            .collect();
        assert_eq!(first, [("fra".to_string(), 70), ("ber".to_string(), 30)]);
        fleet.shutdown().await;
    }

    #[tokio::test]
    async fn an_endpoint_list_is_yaml() {
        let fleet = Fleet::start(&[("fra", 2)]).await.expect("fleet");
        let list = endpoint_list(fleet.region("fra").expect("fra"));
        let value: serde_yaml::Value = serde_yaml::from_str(&list).expect("yaml");
        assert_eq!(value[1]["id"], "fra-2");
        fleet.shutdown().await;
    }
}
