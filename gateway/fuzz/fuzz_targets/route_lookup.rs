//! Fuzzes route matching: for any host and path, the route found matches them (its host
//! pattern holds the host, its prefix starts the path), and no more specific route does.
//! Run: `cargo +nightly fuzz run route_lookup` in `gateway/`.
#![no_main]

use std::sync::OnceLock;

use gateway::routing::table::RouteTable;
use gateway_config::{GatewayConfig, HostPattern, Route};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
listeners: [{ name: http, bind: "127.0.0.1:1" }]
regions:
  fra: { endpoints: [{ id: fra-1, address: "127.0.0.1:2" }] }
routes:
  - { name: exact, match: { host: app.example }, regions: [fra] }
  - { name: exact-api, match: { host: app.example, path_prefix: /api }, regions: [fra] }
  - { name: wild, match: { host: "*.example" }, regions: [fra] }
  - { name: wild-deep, match: { host: "*.a.example", path_prefix: /x/y }, regions: [fra] }
  - { name: any-static, match: { path_prefix: /static }, regions: [fra] }
  - { name: any, regions: [fra] }
"#;

fn config() -> &'static GatewayConfig {
    static CONFIG_CELL: OnceLock<GatewayConfig> = OnceLock::new();
    CONFIG_CELL.get_or_init(|| {
        gateway_config::parse(CONFIG, std::path::Path::new("fuzz.yaml")).expect("fixed config")
    })
}

/// How specific a host pattern is for `host` (higher wins), if it holds it at all.
fn host_rank(pattern: &HostPattern, host: &str) -> Option<usize> {
    match pattern {
        HostPattern::Exact(h) => (h == host).then_some(usize::MAX),
        HostPattern::Wildcard(suffix) => host
            .strip_suffix(suffix.as_str())
            .filter(|rest| rest.ends_with('.'))
            .map(|_| suffix.len() + 1),
        HostPattern::Any => Some(0),
    }
}

fn matches(route: &Route, host: &str, path: &str) -> Option<(usize, usize)> {
    let rank = host_rank(&route.host, host)?;
    path.starts_with(route.path_prefix.as_str())
        .then_some((rank, route.path_prefix.len()))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (host, path) = text.split_once('\n').unwrap_or((text, "/"));
    let routes = &config().routes;
    let table = RouteTable::new(routes);
    let found = table.lookup(host, path);
    // Hosts match in any case and with one trailing dot (an absolute DNS name).
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host).to_string();
    // The best match by the documented rule: the most specific host pattern that has a
    // matching prefix, then the longest prefix.
    let mut ranked: Vec<(usize, (usize, usize))> = routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| matches(r, &host, path).map(|m| (i, m)))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1));
    assert_eq!(
        found,
        ranked.first().map(|(i, _)| *i),
        "host {host:?} path {path:?}: {ranked:?}"
    );
});
