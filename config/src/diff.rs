//! What changed between two validated configs, as typed [`Change`]s: drives reload logs,
//! metrics, which certificates are reloaded and whether a restart is needed. Settings are
//! compared with `PartialEq` on the validated types.

use std::collections::BTreeSet;

use crate::model::{Endpoint, GatewayConfig, ListenerTls};

/// One change from one config to the next, by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// A route only in the new config.
    RouteAdded(String),
    /// A route only in the old config.
    RouteRemoved(String),
    /// A route in both whose settings differ.
    RouteChanged(String),
    /// A region only in the new config.
    RegionAdded(String),
    /// A region only in the old config.
    RegionRemoved(String),
    /// A region in both whose settings (other than endpoints) differ.
    RegionChanged(String),
    /// An endpoint (`region/id=address`) only in the new config.
    EndpointAdded(String),
    /// An endpoint only in the old config.
    EndpointRemoved(String),
    /// Certificates or keys of a listener changed, also when rewritten at the same path
    /// (applied live).
    CertificatesChanged(String),
    /// A listener's address or TLS-ness changed, or it was added or removed: applies only after
    /// a restart or upgrade.
    ListenerNeedsRestart(String),
    /// A sticky key id only in the new config (applied live).
    StickyKeyAdded(String),
    /// A sticky key id only in the old config.
    StickyKeyRemoved(String),
    /// The admin address changed: applies only after a restart or upgrade.
    AdminNeedsRestart,
    /// The admin token changed, was added or removed (applied live).
    AdminTokenChanged,
    /// A sticky key id in both whose secret differs (a rotated secret file).
    StickyKeyChanged(String),
    /// The signing key (the first) is another id than before.
    StickySigningKeyChanged,
}

/// Changes from one config to the next, in the order of [`Change`]'s variants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// The changes, sorted.
    pub changes: Vec<Change>,
}

impl ConfigDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Listeners whose certificates changed.
    pub fn certificates_changed(&self) -> impl Iterator<Item = &str> {
        self.changes.iter().filter_map(|c| match c {
            Change::CertificatesChanged(l) => Some(l.as_str()),
            _ => None,
        })
    }

    /// Listeners that need a restart.
    pub fn listeners_needing_restart(&self) -> Vec<String> {
        self.changes
            .iter()
            .filter_map(|c| match c {
                Change::ListenerNeedsRestart(l) => Some(l.clone()),
                _ => None,
            })
            .collect()
    }

    /// Whether the admin address changed.
    pub fn admin_needs_restart(&self) -> bool {
        self.changes.contains(&Change::AdminNeedsRestart)
    }

    /// Replaces the restart-needing changes: a reload states them against the sockets bound
    /// at start, not against the previous config.
    pub fn set_restart_needed(&mut self, listeners: Vec<String>, admin: bool) {
        self.changes.retain(|c| {
            !matches!(
                c,
                Change::ListenerNeedsRestart(_) | Change::AdminNeedsRestart
            )
        });
        self.changes
            .extend(listeners.into_iter().map(Change::ListenerNeedsRestart));
        if admin {
            self.changes.push(Change::AdminNeedsRestart);
        }
        self.changes.sort();
    }

    /// One line for logs: the listed kinds as `label: a, b`, the others as sentences, in the
    /// order of [`Change`]'s variants.
    pub fn summary(&self) -> String {
        let mut changes: Vec<&Change> = self.changes.iter().collect();
        changes.sort();
        let mut parts: Vec<String> = Vec::new();
        let mut group: Option<(&str, Vec<&str>)> = None;
        let flush = |group: &mut Option<(&str, Vec<&str>)>, parts: &mut Vec<String>| {
            if let Some((label, names)) = group.take() {
                parts.push(format!("{label}: {}", names.join(", ")));
            }
        };
        for change in changes {
            match change.listed() {
                Ok((label, name)) => match &mut group {
                    Some((l, names)) if *l == label => names.push(name),
                    _ => {
                        flush(&mut group, &mut parts);
                        group = Some((label, vec![name]));
                    }
                },
                Err(sentence) => {
                    flush(&mut group, &mut parts);
                    parts.push(sentence);
                }
            }
        }
        flush(&mut group, &mut parts);
        if parts.is_empty() {
            "no changes".into()
        } else {
            parts.join("; ")
        }
    }
}

impl Change {
    /// How the summary shows it: in a list under a label, or as a sentence of its own.
    fn listed(&self) -> Result<(&'static str, &str), String> {
        Ok(match self {
            Self::RouteAdded(n) => ("routes added", n),
            Self::RouteRemoved(n) => ("routes removed", n),
            Self::RouteChanged(n) => ("routes changed", n),
            Self::RegionAdded(n) => ("regions added", n),
            Self::RegionRemoved(n) => ("regions removed", n),
            Self::RegionChanged(n) => ("regions changed", n),
            Self::EndpointAdded(n) => ("endpoints added", n),
            Self::EndpointRemoved(n) => ("endpoints removed", n),
            Self::CertificatesChanged(n) => ("certificates changed", n),
            Self::ListenerNeedsRestart(n) => ("listeners needing a restart", n),
            Self::StickyKeyAdded(n) => ("sticky keys added", n),
            Self::StickyKeyRemoved(n) => ("sticky keys removed", n),
            Self::AdminNeedsRestart => {
                return Err("admin listener changed (needs a restart)".into())
            }
            Self::AdminTokenChanged => return Err("admin token changed".into()),
            Self::StickyKeyChanged(id) => return Err(format!("sticky key {id} changed")),
            Self::StickySigningKeyChanged => return Err("sticky signing key changed".into()),
        })
    }
}

/// Computes the changes from `old` to `new`.
pub fn diff(old: &GatewayConfig, new: &GatewayConfig) -> ConfigDiff {
    let mut changes = Vec::new();
    let names = |v: Vec<&str>| {
        v.into_iter()
            .map(str::to_string)
            .collect::<BTreeSet<String>>()
    };
    let mut added_removed = |old: BTreeSet<String>,
                             new: BTreeSet<String>,
                             added: fn(String) -> Change,
                             removed: fn(String) -> Change| {
        changes.extend(new.difference(&old).cloned().map(added));
        changes.extend(old.difference(&new).cloned().map(removed));
    };

    added_removed(
        names(old.routes.iter().map(|r| &*r.name).collect()),
        names(new.routes.iter().map(|r| &*r.name).collect()),
        Change::RouteAdded,
        Change::RouteRemoved,
    );
    added_removed(
        names(old.regions.iter().map(|r| r.name.as_str()).collect()),
        names(new.regions.iter().map(|r| r.name.as_str()).collect()),
        Change::RegionAdded,
        Change::RegionRemoved,
    );
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
    added_removed(
        endpoint_keys(old),
        endpoint_keys(new),
        Change::EndpointAdded,
        Change::EndpointRemoved,
    );
    added_removed(
        names(old.sticky_keys.iter().map(|k| k.id.as_str()).collect()),
        names(new.sticky_keys.iter().map(|k| k.id.as_str()).collect()),
        Change::StickyKeyAdded,
        Change::StickyKeyRemoved,
    );
    for r in &new.routes {
        if old.routes.iter().any(|o| o.name == r.name && o != r) {
            changes.push(Change::RouteChanged(r.name.to_string()));
        }
    }
    for r in &new.regions {
        if let Some(o) = old.regions.iter().find(|o| o.name == r.name) {
            // Endpoints are reported one by one above.
            let without_endpoints = |r: &crate::model::Region| crate::model::Region {
                endpoints: Vec::new(),
                ..r.clone()
            };
            if without_endpoints(o) != without_endpoints(r) {
                changes.push(Change::RegionChanged(r.name.to_string()));
            }
        }
    }

    for l in &new.listeners {
        match old.listeners.iter().find(|o| o.name == l.name) {
            Some(o) if o.bind == l.bind && o.tls.is_some() == l.tls.is_some() => {
                /// Certificate and key PEMs, and the default's index.
                type Pems<'a> = (Vec<(&'a [u8], &'a [u8])>, usize);
                fn certs(t: &Option<ListenerTls>) -> Option<Pems<'_>> {
                    t.as_ref().map(|t| {
                        let pems = t.certs.iter().map(|c| (&c.cert_pem[..], &c.key_pem[..]));
                        (pems.collect(), t.default_cert)
                    })
                }
                if certs(&o.tls) != certs(&l.tls) {
                    changes.push(Change::CertificatesChanged(l.name.clone()));
                }
            }
            _ => changes.push(Change::ListenerNeedsRestart(l.name.clone())),
        }
    }
    for o in &old.listeners {
        if !new.listeners.iter().any(|l| l.name == o.name) {
            changes.push(Change::ListenerNeedsRestart(o.name.clone()));
        }
    }
    if old.admin.bind != new.admin.bind {
        changes.push(Change::AdminNeedsRestart);
    }
    if old.admin.token != new.admin.token {
        changes.push(Change::AdminTokenChanged);
    }
    changes.extend(
        new.sticky_keys
            .iter()
            .filter(|k| {
                old.sticky_keys
                    .iter()
                    .any(|o| o.id == k.id && o.secret != k.secret)
            })
            .map(|k| Change::StickyKeyChanged(k.id.clone())),
    );
    if !old.sticky_keys.is_empty()
        && !new.sticky_keys.is_empty()
        && old.sticky_keys[0].id != new.sticky_keys[0].id
    {
        changes.push(Change::StickySigningKeyChanged);
    }
    changes.sort();
    ConfigDiff { changes }
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
    fn a_region_setting_is_a_region_change_and_summaries_keep_their_order() {
        let new = BASE.replace(
            "  ber: { endpoints: [{ id: b1, address: \"127.0.0.1:2\" }] }",
            "  ber: { endpoints: [{ id: b1, address: \"127.0.0.1:2\" }], protocol: http2 }\n  ams: { endpoints: [{ id: a1, address: \"127.0.0.1:4\" }] }",
        );
        let d = diff(&parse(BASE), &parse(&new));
        assert_eq!(
            d.changes,
            [
                Change::RegionAdded("ams".into()),
                Change::RegionChanged("ber".into()),
                Change::EndpointAdded("ams/a1=127.0.0.1:4".into()),
            ]
        );
        assert_eq!(
            d.summary(),
            "regions added: ams; regions changed: ber; endpoints added: ams/a1=127.0.0.1:4"
        );
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
        assert_eq!(
            d.changes,
            [
                Change::RouteAdded("b".into()),
                Change::RouteChanged("a".into()),
                Change::EndpointAdded("ber/b1=127.0.0.1:3".into()),
                Change::EndpointRemoved("ber/b1=127.0.0.1:2".into()),
                Change::ListenerNeedsRestart("http".into()),
            ]
        );
        assert!(d.summary().contains("routes added: b"));
    }
}
