use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::*;
use crate::dns::Resolved;

/// A resolver answering from a table, each name after its own delay (on the tokio clock).
#[derive(Clone, Default)]
struct ScriptedDns(Arc<Mutex<HashMap<String, Script>>>);

/// The addresses of one name and how long its answers take.
type Script = (Vec<IpAddr>, Duration);

impl ScriptedDns {
    fn set(&self, host: &str, ips: &[&str], delay: Duration) {
        let ips = ips.iter().map(|ip| ip.parse().expect("ip")).collect();
        self.0
            .lock()
            .expect("lock")
            .insert(host.to_string(), (ips, delay));
    }

    fn monitor(&self) -> HealthMonitor {
        let dns = self.clone();
        HealthMonitor::with_resolver(
            HealthHub::new(),
            Box::new(move |_| Ok(Arc::new(dns.clone()) as Arc<dyn Resolve>)),
        )
    }
}

#[async_trait::async_trait]
impl Resolve for ScriptedDns {
    async fn resolve(&self, host: &str, port: u16) -> Result<Resolved, DnsError> {
        // The answer as the table stood when the query was sent.
        let entry = self.0.lock().expect("lock").get(host).cloned();
        let Some((ips, delay)) = entry else {
            return Err(DnsError::Lookup {
                host: host.into(),
                reason: "NXDOMAIN".into(),
            });
        };
        tokio::time::sleep(delay).await;
        let mut addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        addrs.sort();
        Ok(Resolved {
            addrs,
            refresh_in: Duration::from_secs(1),
        })
    }

    fn retry_in(&self) -> Duration {
        Duration::from_millis(200)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(2)
    }
}

/// One region `fra` with one endpoint at `address`, probed as `probe`.
fn config(address: &str, probe: &str) -> GatewayConfig {
    let text = format!(
        r#"
listeners: [{{ name: http, bind: "127.0.0.1:1" }}]
regions:
  fra:
    endpoints: [{{ id: fra-1, address: "{address}" }}]
    probe: {probe}
routes: [{{ name: app, regions: [fra] }}]
"#
    );
    gateway_config::parse(&text, Path::new("test.yaml")).expect("valid config")
}

/// TCP probes rarely: the tests look at addresses, not health.
const RARE_PROBES: &str = "{ interval: 1h, timeout: 1s }";

fn fra_addresses(monitor: &HealthMonitor) -> Vec<SocketAddr> {
    let name = RegionName::try_new("fra").expect("name");
    monitor
        .hub()
        .region(&name)
        .members()
        .endpoints
        .iter()
        .map(|e| e.key.addr)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_late_answer_for_a_replaced_host_name_is_discarded() {
    let dns = ScriptedDns::default();
    dns.set("new.test", &["127.0.0.2"], Duration::ZERO);
    dns.set("old.test", &["127.0.0.3"], Duration::from_secs(3));
    let monitor = dns.monitor();
    let new: SocketAddr = "127.0.0.2:9".parse().expect("addr");
    monitor.apply(&config("new.test:9", RARE_PROBES));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(fra_addresses(&monitor), [new]);

    monitor.apply(&config("old.test:9", RARE_PROBES));
    tokio::time::sleep(Duration::from_millis(100)).await;
    monitor.apply(&config("new.test:9", RARE_PROBES));
    // The old.test answer is due 3 s after its query; let it and several TTLs (1 s) pass.
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            fra_addresses(&monitor),
            [new],
            "at {:?}",
            tokio::time::Instant::now()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_changed_host_name_drops_the_old_addresses_at_once() {
    let dns = ScriptedDns::default();
    dns.set("a.test", &["127.0.0.2"], Duration::ZERO);
    dns.set("b.test", &["127.0.0.3"], Duration::from_secs(1));
    let monitor = dns.monitor();
    monitor.apply(&config("a.test:9", RARE_PROBES));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(fra_addresses(&monitor).len(), 1);
    monitor.apply(&config("b.test:9", RARE_PROBES));
    assert_eq!(
        fra_addresses(&monitor),
        [],
        "a.test's address kept for b.test"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        fra_addresses(&monitor),
        ["127.0.0.3:9".parse::<SocketAddr>().expect("addr")]
    );
}

#[tokio::test(start_paused = true)]
async fn the_first_round_waits_for_the_first_probe_of_discovered_addresses() {
    // Accepts connections (the kernel's backlog) and never answers: an HTTP probe times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let dns = ScriptedDns::default();
    dns.set("slow.test", &["127.0.0.1"], Duration::ZERO);
    let monitor = dns.monitor();
    monitor.apply(&config(
        &format!("slow.test:{port}"),
        "{ http: { path: /healthz }, interval: 1h, timeout: 3s }",
    ));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        fra_addresses(&monitor).len(),
        1,
        "the address was discovered"
    );
    assert!(
        !monitor.first_round_done(),
        "first round done before the discovered address was probed"
    );
    monitor.wait_first_round().await;
    let name = RegionName::try_new("fra").expect("name");
    let health = monitor.hub().region(&name).members().endpoints[0]
        .status()
        .health;
    assert_eq!(health, crate::Health::Down, "probed: timed out");
    drop(silent);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_first_lookup_holds_the_first_round_only_until_the_dns_timeout() {
    let dns = ScriptedDns::default();
    dns.set("mute.test", &["127.0.0.2"], Duration::from_secs(3600));
    let monitor = dns.monitor();
    monitor.apply(&config("mute.test:9", RARE_PROBES));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!monitor.first_round_done(), "the lookup may still answer");
    // The resolver's timeout is 2 s.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(monitor.first_round_done());
    assert_eq!(fra_addresses(&monitor), []);
}
