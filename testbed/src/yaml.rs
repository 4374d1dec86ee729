//! A typed writer for gateway config files.
//!
//! The test bed describes the fleets it runs as values ([`GatewayYaml`] and the section types
//! below) and writes them out with `serde_yaml`, instead of YAML templates patched with string
//! replacement. It covers what the test bed's fleets use; every field left `None` is omitted, so
//! the gateway's default applies. The output is read by the real config loader
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
    /// `regions`, in this order.
    pub regions: IndexMap<String, Region>,
    /// `routes[]`.
    pub routes: Vec<Route>,
}

/// `listeners[]`: a plaintext listener.
#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    /// `name`.
    pub name: String,
    /// `bind`.
    pub bind: SocketAddr,
}

/// `admin`.
#[derive(Debug, Clone, Serialize)]
pub struct Admin {
    /// `bind`.
    pub bind: SocketAddr,
}

/// `server`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Server {
    /// `upstream_keepalive_pool`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_keepalive_pool: Option<u32>,
}

/// `regions.<name>`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Region {
    /// `endpoints[]`.
    pub endpoints: Vec<Endpoint>,
    /// `probe`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
}

/// `regions.<name>.endpoints[]`.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// `id`.
    pub id: String,
    /// `address` (`ip:port`).
    pub address: SocketAddr,
}

/// `regions.<name>.probe`: an HTTP probe.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// `http`.
    pub http: HttpProbe,
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
}

/// `probe.http`.
#[derive(Debug, Clone, Serialize)]
pub struct HttpProbe {
    /// `path`.
    pub path: String,
}

/// `routes[]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Route {
    /// `name`.
    pub name: String,
    /// `match`.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<Match>,
    /// `regions`: tiers in priority order, one region each.
    pub regions: Vec<String>,
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
}

/// `routes[].match`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Match {
    /// `path_prefix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
}

/// `routes[].retry`.
#[derive(Debug, Clone, Serialize)]
pub struct Retry {
    /// `attempts`.
    pub attempts: u32,
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
}

/// A duration written the way the config reads it: whole seconds as `5s`, else milliseconds
/// (`250ms`), else microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
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

impl GatewayYaml {
    /// One plaintext listener `http` on `ports.listen` and the admin API on `ports.admin`; no
    /// regions or routes yet.
    pub fn new(ports: Ports) -> Self {
        Self {
            listeners: vec![Listener {
                name: "http".into(),
                bind: ports.listen,
            }],
            admin: Some(Admin { bind: ports.admin }),
            ..Self::default()
        }
    }

    /// Adds every region of `fleet` with its endpoints, each probed by `probe`.
    pub fn fleet(mut self, fleet: &Fleet, probe: &Probe) -> Self {
        for (name, servers) in fleet.regions() {
            self = self.region(name, Region::of(servers).probe(probe.clone()));
        }
        self
    }

    /// With `server` settings.
    pub fn server(mut self, server: Server) -> Self {
        self.server = Some(server);
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

impl Region {
    /// A region of `endpoints`, without a probe (the gateway's default: TCP).
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        Self {
            endpoints,
            probe: None,
        }
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
}

impl Endpoint {
    /// Endpoint `id` at `address`.
    pub fn new(id: &str, address: SocketAddr) -> Self {
        Self {
            id: id.into(),
            address,
        }
    }

    /// `server`'s endpoint id and address.
    pub fn of(server: &RegionServer) -> Self {
        Self {
            id: server.identity().endpoint.clone(),
            address: server.addr(),
        }
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
            http: HttpProbe { path: path.into() },
            interval: Some(Dur(interval)),
            timeout: Some(Dur(timeout)),
            rise: None,
            fall: None,
        }
    }

    /// With `rise` and `fall`.
    pub fn rise_fall(mut self, rise: u32, fall: u32) -> Self {
        self.rise = Some(rise);
        self.fall = Some(fall);
        self
    }
}

impl Route {
    /// Route `name` over `tiers` (one region each, in priority order), matching every request.
    pub fn new(name: &str, tiers: &[&str]) -> Self {
        Self {
            name: name.into(),
            regions: tiers.iter().map(|t| t.to_string()).collect(),
            ..Self::default()
        }
    }

    /// `match: { path_prefix }`.
    pub fn path_prefix(mut self, prefix: &str) -> Self {
        self.matches = Some(Match {
            path_prefix: Some(prefix.into()),
        });
        self
    }

    /// `allowed_regions`.
    pub fn allowed_regions(mut self, regions: &[&str]) -> Self {
        self.allowed_regions = Some(regions.iter().map(|r| r.to_string()).collect());
        self
    }

    /// `retry: { attempts }`.
    pub fn retry_attempts(mut self, attempts: u32) -> Self {
        self.retry = Some(Retry { attempts });
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
        });
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
    async fn an_endpoint_list_is_yaml() {
        let fleet = Fleet::start(&[("fra", 2)]).await.expect("fleet");
        let list = endpoint_list(fleet.region("fra").expect("fra"));
        let value: serde_yaml::Value = serde_yaml::from_str(&list).expect("yaml");
        assert_eq!(value[1]["id"], "fra-2");
        fleet.shutdown().await;
    }
}
