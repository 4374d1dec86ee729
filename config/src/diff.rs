//! What changed between two validated configs: drives reload logs, metrics and whether a
//! restart is needed.

use std::collections::BTreeSet;

use crate::model::{Endpoint, GatewayConfig};

/// Changes from one config to the next, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Routes only in the new config.
    pub routes_added: Vec<String>,
    /// Routes only in the old config.
    pub routes_removed: Vec<String>,
    /// Routes in both whose settings differ.
    pub routes_changed: Vec<String>,
    /// Regions only in the new config.
    pub regions_added: Vec<String>,
    /// Regions only in the old config.
    pub regions_removed: Vec<String>,
    /// Regions in both whose settings (other than endpoints) differ.
    pub regions_changed: Vec<String>,
    /// Endpoints (`region/id=address`) only in the new config.
    pub endpoints_added: Vec<String>,
    /// Endpoints only in the old config.
    pub endpoints_removed: Vec<String>,
    /// Listener addresses or TLS-ness changed: applies only after a restart or upgrade.
    pub listeners_need_restart: Vec<String>,
    /// The admin address changed: applies only after a restart or upgrade.
    pub admin_needs_restart: bool,
    /// The admin token changed, was added or removed (applied live).
    pub admin_token_changed: bool,
    /// Certificates or keys of a listener changed, also when rewritten at the same path
    /// (applied live).
    pub certificates_changed: Vec<String>,
    /// Sticky key ids only in the new config (applied live).
    pub sticky_keys_added: Vec<String>,
    /// Sticky key ids only in the old config.
    pub sticky_keys_removed: Vec<String>,
    /// Sticky key ids in both whose secret differs (a rotated secret file).
    pub sticky_keys_changed: Vec<String>,
    /// The signing key (the first) is another id than before.
    pub sticky_signing_key_changed: bool,
}

impl ConfigDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// One line for logs.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let mut list = |what: &str, v: &[String]| {
            if !v.is_empty() {
                parts.push(format!("{what}: {}", v.join(", ")));
            }
        };
        list("routes added", &self.routes_added);
        list("routes removed", &self.routes_removed);
        list("routes changed", &self.routes_changed);
        list("regions added", &self.regions_added);
        list("regions removed", &self.regions_removed);
        list("regions changed", &self.regions_changed);
        list("endpoints added", &self.endpoints_added);
        list("endpoints removed", &self.endpoints_removed);
        list("certificates changed", &self.certificates_changed);
        list("listeners needing a restart", &self.listeners_need_restart);
        list("sticky keys added", &self.sticky_keys_added);
        list("sticky keys removed", &self.sticky_keys_removed);
        if self.admin_needs_restart {
            parts.push("admin listener changed (needs a restart)".into());
        }
        if self.admin_token_changed {
            parts.push("admin token changed".into());
        }
        for id in &self.sticky_keys_changed {
            parts.push(format!("sticky key {id} changed"));
        }
        if self.sticky_signing_key_changed {
            parts.push("sticky signing key changed".into());
        }
        if parts.is_empty() {
            "no changes".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Computes the changes from `old` to `new`.
pub fn diff(old: &GatewayConfig, new: &GatewayConfig) -> ConfigDiff {
    let mut d = ConfigDiff::default();
    let names = |v: Vec<&str>| {
        v.into_iter()
            .map(str::to_string)
            .collect::<BTreeSet<String>>()
    };

    let old_routes = names(old.routes.iter().map(|r| &*r.name).collect());
    let new_routes = names(new.routes.iter().map(|r| &*r.name).collect());
    d.routes_added = new_routes.difference(&old_routes).cloned().collect();
    d.routes_removed = old_routes.difference(&new_routes).cloned().collect();
    for r in &new.routes {
        if let Some(o) = old.routes.iter().find(|o| o.name == r.name) {
            if format!("{o:?}") != format!("{r:?}") {
                d.routes_changed.push(r.name.to_string());
            }
        }
    }

    let old_regions = names(old.regions.iter().map(|r| r.name.as_str()).collect());
    let new_regions = names(new.regions.iter().map(|r| r.name.as_str()).collect());
    d.regions_added = new_regions.difference(&old_regions).cloned().collect();
    d.regions_removed = old_regions.difference(&new_regions).cloned().collect();
    let endpoint_keys = |c: &GatewayConfig| -> BTreeSet<String> {
        c.regions
            .iter()
            .flat_map(|r| {
                r.endpoints
                    .iter()
                    .map(move |e: &Endpoint| format!("{}/{}={}", r.name, e.id, e.address))
            })
            .collect()
    };
    let (oe, ne) = (endpoint_keys(old), endpoint_keys(new));
    d.endpoints_added = ne.difference(&oe).cloned().collect();
    d.endpoints_removed = oe.difference(&ne).cloned().collect();
    for r in &new.regions {
        if let Some(o) = old.regions.iter().find(|o| o.name == r.name) {
            let mut o = o.clone();
            let mut n = r.clone();
            o.endpoints.clear();
            n.endpoints.clear();
            if format!("{o:?}") != format!("{n:?}") {
                d.regions_changed.push(r.name.to_string());
            }
        }
    }

    for l in &new.listeners {
        match old.listeners.iter().find(|o| o.name == l.name) {
            Some(o) if o.bind == l.bind && o.tls.is_some() == l.tls.is_some() => {
                let pems = |t: &Option<crate::model::ListenerTls>| {
                    t.as_ref().map(|t| {
                        t.certs
                            .iter()
                            .map(|c| (c.cert_pem.clone(), c.key_pem.clone()))
                            .collect::<Vec<_>>()
                    })
                };
                if pems(&o.tls) != pems(&l.tls)
                    || o.tls.as_ref().map(|t| t.default_cert)
                        != l.tls.as_ref().map(|t| t.default_cert)
                {
                    d.certificates_changed.push(l.name.clone());
                }
            }
            _ => d.listeners_need_restart.push(l.name.clone()),
        }
    }
    for o in &old.listeners {
        if !new.listeners.iter().any(|l| l.name == o.name) {
            d.listeners_need_restart.push(o.name.clone());
        }
    }
    d.admin_needs_restart = old.admin.bind != new.admin.bind;
    d.admin_token_changed = old.admin.token != new.admin.token;
    let old_keys = names(old.sticky_keys.iter().map(|k| k.id.as_str()).collect());
    let new_keys = names(new.sticky_keys.iter().map(|k| k.id.as_str()).collect());
    d.sticky_keys_added = new_keys.difference(&old_keys).cloned().collect();
    d.sticky_keys_removed = old_keys.difference(&new_keys).cloned().collect();
    d.sticky_keys_changed = new
        .sticky_keys
        .iter()
        .filter(|k| {
            old.sticky_keys
                .iter()
                .any(|o| o.id == k.id && o.secret != k.secret)
        })
        .map(|k| k.id.clone())
        .collect();
    d.sticky_signing_key_changed = !old.sticky_keys.is_empty()
        && !new.sticky_keys.is_empty()
        && old.sticky_keys[0].id != new.sticky_keys[0].id;
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = "listeners: [{ name: http, bind: \"127.0.0.1:8080\" }]\nregions:\n  fra: { endpoints: [{ id: f1, address: \"127.0.0.1:1\" }] }\n  ber: { endpoints: [{ id: b1, address: \"127.0.0.1:2\" }] }\nroutes:\n  - { name: a, regions: [fra, ber] }\n";

    fn parse(text: &str) -> GatewayConfig {
        crate::parse(text, Path::new("t.yaml")).expect("valid")
    }

    #[test]
    fn same_config_has_no_changes() {
        assert!(diff(&parse(BASE), &parse(BASE)).is_empty());
    }

    #[test]
    fn changes_are_named() {
        let new = BASE
            .replace("127.0.0.1:2\" }]", "127.0.0.1:3\" }]")
            .replace("regions: [fra, ber] }", "regions: [ber, fra] }\n  - { name: b, match: { path_prefix: /b/ }, regions: [ber] }")
            .replace("127.0.0.1:8080", "127.0.0.1:8081");
        let d = diff(&parse(BASE), &parse(&new));
        assert_eq!(d.routes_added, ["b"]);
        assert_eq!(d.routes_changed, ["a"]);
        assert_eq!(d.endpoints_added, ["ber/b1=127.0.0.1:3"]);
        assert_eq!(d.endpoints_removed, ["ber/b1=127.0.0.1:2"]);
        assert!(d.regions_changed.is_empty());
        assert_eq!(d.listeners_need_restart, ["http"]);
        assert!(d.summary().contains("routes added: b"));
    }
}
