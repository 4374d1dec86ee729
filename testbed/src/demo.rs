//! The demo: two simulated regions, `fra` (primary) and `ber` (secondary), with two endpoints
//! each, the control listener, and the real `gateway` binary in front of them.
//!
//! This module holds what the demo *is* (its fleet, its config, its banner); the `demo` binary
//! (`src/bin/demo.rs`) runs it: it starts the fleet and the control listener, writes the config
//! to a visible file, starts `gateway run --config <file>` through [`crate::launcher`], prints
//! the banner, and on Ctrl-C (SIGINT) or SIGTERM stops the gateway and removes the file.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::fleet::Fleet;
use crate::launcher::{loopback, Ports};
use crate::yaml::{GatewayYaml, Probe, Route};

/// The demo's regions and their endpoint counts, in failover order.
pub const REGIONS: &[(&str, usize)] = &[("fra", 2), ("ber", 2)];

/// The fault modes the banner and the README name.
pub const MODES: &str = "ok, refuse, blackhole, status=503, slow=500ms, reset, flap=300ms";

/// Addresses of the demo's moving parts.
#[derive(Debug, Clone, Copy)]
pub struct DemoAddrs {
    /// Gateway listener.
    pub listen: SocketAddr,
    /// Gateway admin API.
    pub admin: SocketAddr,
    /// Fault-injection control listener (`POST /{region}/{mode}`).
    pub control: SocketAddr,
}

impl DemoAddrs {
    /// The demo's default addresses, the ones the README shows: the gateway on
    /// `127.0.0.1:8080`, its admin API on `:9901`, the control listener on `:9902`.
    pub const DEFAULT: Self = Self {
        listen: loopback(8080),
        admin: loopback(9901),
        control: loopback(9902),
    };

    /// The gateway's listener and admin API.
    pub fn ports(&self) -> Ports {
        Ports {
            listen: self.listen,
            admin: self.admin,
        }
    }
}

/// The demo's gateway config for `fleet`: probes every 500 ms (timeout 250 ms, rise 2, fall 2);
/// one route over `fra` then `ber` with 3 attempts, a 5 s failback hold-down and timeouts of
/// 250 ms (connect) and 10 s (request).
pub fn config(addrs: &DemoAddrs, fleet: &Fleet) -> GatewayYaml {
    let probe = Probe::http(
        "/healthz",
        Duration::from_millis(500),
        Duration::from_millis(250),
    )
    .rise_fall(2, 2);
    let tiers: Vec<&str> = REGIONS.iter().map(|(name, _)| *name).collect();
    GatewayYaml::new(addrs.ports()).fleet(fleet, &probe).route(
        Route::new("app", &tiers)
            .path_prefix("/")
            .allowed_regions(&tiers)
            .retry_attempts(3)
            .hold_down(Duration::from_secs(5))
            .timeouts(Duration::from_millis(250), Duration::from_secs(10)),
    )
}

/// The comment at the top of the config file.
pub const CONFIG_HEADER: &str =
    "Written by the demo for its simulated regions (their ports change on every start).\n\
     Edit and save it: the gateway reloads it. The demo removes it when it stops.";

/// What the demo prints once the gateway is ready (`pid` is the gateway's process id).
pub fn banner(addrs: DemoAddrs, config_path: &Path, pid: u32) -> String {
    let DemoAddrs {
        listen,
        admin,
        control,
    } = addrs;
    format!(
        "\nfailover gateway demo\n\
         ---------------------\n\
         gateway      http://{listen}/   (HTTP/1.1 and h2c; `gateway run`, pid {pid})\n\
         admin        http://{admin}/status\n\
         control      http://{control}/{{region}}/{{mode}}\n\
         config       {config}\n             \
                      (edit and save it: the gateway reloads it; removed when the demo stops)\n\n\
         try:\n  \
           curl -s http://{listen}/hello                 # answered by fra: see \"region\" in the JSON\n  \
           curl -s --http2-prior-knowledge http://{listen}/hello\n  \
           curl -s -X POST http://{control}/fra/refuse    # crash fra (its ports close)\n  \
           curl -s http://{listen}/hello                 # answered by ber, no error\n  \
           curl -s -X POST http://{control}/fra/ok        # bring fra back: traffic returns after the hold-down (5-10 s)\n  \
           curl -s -X POST 'http://{admin}/regions/fra/drain?for=30s'   # a drill\n  \
           curl -s http://{admin}/status                # admin API (HTML at http://{admin}/)\n  \
           curl -s http://{admin}/metrics | grep gateway_region_up\n\n\
         modes: {MODES}\n\
         stop with Ctrl-C\n",
        config = config_path.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's demo block is what the demo prints with its default addresses.
    #[test]
    fn readme_demo_block_is_the_banner() {
        let readme = include_str!("../../README.md");
        let block = readme
            .split_once("It prints what to try:\n\n```sh\n")
            .and_then(|(_, rest)| rest.split_once("```"))
            .map(|(block, _)| block)
            .expect("README has the demo block");
        let banner = banner(DemoAddrs::DEFAULT, Path::new("/tmp/demo/gateway.yaml"), 1);
        let tried: Vec<&str> = banner
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("curl "))
            .collect();
        let documented: Vec<&str> = block.lines().map(str::trim).collect();
        assert_eq!(documented, tried);
    }

    /// The README names the same fault modes as the banner.
    #[test]
    fn readme_names_the_banners_modes() {
        let readme = include_str!("../../README.md");
        for mode in MODES.split(", ").filter(|m| !matches!(*m, "ok" | "refuse")) {
            assert!(readme.contains(&format!("`{mode}`")), "README lacks {mode}");
        }
    }

    #[tokio::test]
    async fn the_demo_config_is_valid() {
        let fleet = Fleet::start(REGIONS).await.expect("fleet");
        let text = config(&DemoAddrs::DEFAULT, &fleet)
            .to_yaml(CONFIG_HEADER)
            .expect("yaml");
        let config = gateway_config::parse(&text, Path::new("demo.yaml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let route = &config.routes[0];
        assert_eq!(&*route.name, "app");
        assert_eq!(route.path_prefix, "/");
        assert_eq!(route.tiers.len(), 2);
        assert_eq!(config.regions.len(), 2);
        fleet.shutdown().await;
    }
}
