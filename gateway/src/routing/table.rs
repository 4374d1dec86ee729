//! Route matching: exact host beats wildcard beats any-host; within a host, the longest path
//! prefix wins.
//!
//! Lookups do not scan routes: hosts are hash-map keys, wildcards are tried by stripping one label
//! at a time, and path prefixes are looked up by the few distinct prefix lengths a host has.

use std::collections::HashMap;

use gateway_config::{HostPattern, Route};

/// Index of a route in the snapshot's route list.
pub type RouteIndex = usize;

/// Routes indexed for matching.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, PrefixSet>,
    wildcard: HashMap<String, PrefixSet>,
    any: PrefixSet,
}

/// The path prefixes of one host pattern.
#[derive(Debug, Default)]
struct PrefixSet {
    by_prefix: HashMap<String, RouteIndex>,
    /// Distinct prefix lengths, longest first.
    lengths: Vec<usize>,
}

impl PrefixSet {
    fn insert(&mut self, prefix: &str, route: RouteIndex) {
        // Validation rejects duplicate (host, prefix) pairs; keep the first if one slips through.
        self.by_prefix.entry(prefix.to_string()).or_insert(route);
        if let Err(pos) = self.lengths.binary_search_by(|l| prefix.len().cmp(l)) {
            self.lengths.insert(pos, prefix.len());
        }
    }

    fn lookup(&self, path: &str) -> Option<RouteIndex> {
        self.lengths
            .iter()
            .filter(|len| **len <= path.len() && path.is_char_boundary(**len))
            .find_map(|len| self.by_prefix.get(&path[..*len]).copied())
    }
}

impl RouteTable {
    /// Indexes `routes`; indices refer to positions in that slice.
    pub fn new(routes: &[Route]) -> Self {
        let mut table = Self::default();
        for (i, route) in routes.iter().enumerate() {
            let set = match &route.host {
                HostPattern::Any => &mut table.any,
                HostPattern::Exact(h) => table.exact.entry(h.clone()).or_default(),
                HostPattern::Wildcard(s) => table.wildcard.entry(s.clone()).or_default(),
            };
            set.insert(&route.path_prefix, i);
        }
        table
    }

    /// The route for `host` (without port, any case) and `path`.
    ///
    /// Host candidates are tried from most to least specific (exact, then wildcards from the
    /// longest suffix, then any-host); the first candidate with a matching prefix wins.
    pub fn lookup(&self, host: &str, path: &str) -> Option<RouteIndex> {
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if let Some(found) = self.exact.get(host).and_then(|s| s.lookup(path)) {
            return Some(found);
        }
        if !self.wildcard.is_empty() {
            let mut rest = host;
            while let Some((_, suffix)) = rest.split_once('.') {
                if let Some(found) = self.wildcard.get(suffix).and_then(|s| s.lookup(path)) {
                    return Some(found);
                }
                rest = suffix;
            }
        }
        self.any.lookup(path)
    }
}

/// Strips the port from a `Host` header value or `:authority` (`[::1]:80` → `[::1]`).
pub fn host_without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn routes(spec: &[(&str, &str)]) -> Vec<Route> {
        let mut yaml = String::from(
            "listeners: [{ name: h, bind: \"127.0.0.1:1\" }]\nregions: { fra: { endpoints: [{ id: a, address: \"127.0.0.1:2\" }] } }\nroutes:\n",
        );
        for (i, (host, prefix)) in spec.iter().enumerate() {
            let host = if host.is_empty() {
                String::new()
            } else {
                format!("host: \"{host}\", ")
            };
            yaml.push_str(&format!("  - {{ name: r{i}, match: {{ {host}path_prefix: \"{prefix}\" }}, regions: [fra] }}\n"));
        }
        gateway_config::parse(&yaml, Path::new("t.yaml"))
            .expect("valid")
            .routes
    }

    #[test]
    fn precedence() {
        let r = routes(&[
            ("", "/"),
            ("*.example.com", "/"),
            ("api.example.com", "/"),
            ("api.example.com", "/v1/"),
            ("*.example.com", "/static/"),
            ("*.b.example.com", "/"),
        ]);
        let t = RouteTable::new(&r);
        assert_eq!(t.lookup("api.example.com", "/v1/users"), Some(3));
        assert_eq!(t.lookup("API.Example.com", "/v2"), Some(2));
        // Host precedence comes first: the exact host's `/` beats the wildcard's `/static/`.
        assert_eq!(t.lookup("api.example.com", "/static/x"), Some(2));
        assert_eq!(t.lookup("www.example.com", "/static/x"), Some(4));
        assert_eq!(t.lookup("www.example.com", "/x"), Some(1));
        assert_eq!(t.lookup("x.b.example.com", "/"), Some(5));
        assert_eq!(t.lookup("example.com", "/"), Some(0));
        assert_eq!(t.lookup("other.org", "/anything"), Some(0));
    }

    #[test]
    fn no_match_and_fall_through() {
        let r = routes(&[("api.example.com", "/v1/"), ("*.example.com", "/v2/")]);
        let t = RouteTable::new(&r);
        // The exact host has no matching prefix: the wildcard's routes are tried next.
        assert_eq!(t.lookup("api.example.com", "/v2/x"), Some(1));
        assert_eq!(t.lookup("api.example.com", "/v2"), None);
        assert_eq!(t.lookup("other", "/v1/"), None);
    }

    #[test]
    fn many_routes() {
        let spec: Vec<(String, String)> = (0..3000)
            .map(|i| (format!("h{}.example.com", i % 300), format!("/p{i}/")))
            .collect();
        let spec_ref: Vec<(&str, &str)> =
            spec.iter().map(|(h, p)| (h.as_str(), p.as_str())).collect();
        let t = RouteTable::new(&routes(&spec_ref));
        assert_eq!(t.lookup("h7.example.com", "/p2107/x"), Some(2107));
        assert_eq!(t.lookup("h7.example.com", "/p2108/x"), None);
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(host_without_port("a.example:8080"), "a.example");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("a.example"), "a.example");
    }
}
