//! The admin CLI: `gateway status`, `gateway drain [REGION]`, `gateway undrain [REGION]` and
//! `gateway reload` talk to a running gateway's admin API. With `--config` the address and the
//! bearer token come from the gateway's own config file, so an SRE types no token.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::operator::admin::connectable;

/// The admin API's address when neither `--config` nor `--admin` says.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// Where the admin API is and the token it wants.
#[derive(Debug, Clone)]
pub struct Target {
    /// The address to dial.
    pub addr: SocketAddr,
    /// The bearer token, when the admin API has one.
    pub token: Option<String>,
}

impl Target {
    /// From the gateway's config file (`admin.bind`, `admin.token_file`), overridden by
    /// `admin` and `token_file` when given; without a config, `admin` or 127.0.0.1:9901.
    pub fn resolve(
        config: Option<&Path>,
        admin: Option<SocketAddr>,
        token_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut target = match config {
            Some(path) => {
                let config = gateway_config::load(path)
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(|| format!("reading the admin settings of {}", path.display()))?;
                Self {
                    addr: connectable(config.admin.bind),
                    token: config.admin.token.clone(),
                }
            }
            None => Self {
                addr: DEFAULT_ADMIN.parse().expect("a socket address"),
                token: None,
            },
        };
        if let Some(addr) = admin {
            target.addr = connectable(addr);
        }
        if let Some(file) = token_file {
            let token = std::fs::read_to_string(file)
                .with_context(|| format!("reading the token file {}", file.display()))?;
            target.token = Some(token.trim().to_string());
        }
        Ok(target)
    }

    /// `method path` on the admin API: the status and body of a 2xx answer, or an error that
    /// says what went wrong (nothing listening, a refused token, the API's own error).
    pub async fn call(&self, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let call = async {
            let resp = client.request(req.body(Empty::new())?).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        let (status, body) = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .map_err(|_| anyhow::anyhow!("{method} {path}: no answer from {} in 10 s", self.addr))?
            .with_context(|| {
                format!(
                    "{method} {path}: no gateway admin API answers on {} (is the gateway running? --config or --admin names it)",
                    self.addr
                )
            })?;
        match status {
            200..=299 => Ok((status, body)),
            401 => anyhow::bail!(
                "{method} {path}: the admin API refused the token (401): use --config with the gateway's config file, or --token-file with its admin.token_file"
            ),
            _ => anyhow::bail!("{method} {path}: {status}: {}", body.trim()),
        }
    }
}

/// Who is acting, for a drain's audit line: `$USER@host`.
pub fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

/// `value` escaped for a URL query.
pub fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `/status` as one terminal screen: the gateway, routes with their tiers in words and what
/// serves them, regions with health, drains and endpoints, and the latest failover events.
pub fn render_status(s: &Value, now_unix_ms: u64) -> String {
    let mut out = String::new();
    let str_of = |v: &Value| v.as_str().unwrap_or("").to_string();
    out.push_str(&format!(
        "gateway: {}  config {} (version {}, hash {})  last reload: {}\n",
        if s["draining"] == true {
            "DRAINING (readiness false, still serving)"
        } else if s["ready"] == true {
            "ready"
        } else {
            "NOT READY"
        },
        str_of(&s["config"]["file"]),
        s["config"]["version"],
        str_of(&s["config"]["hash"]),
        match s["last_reload"]["result"].as_str() {
            Some(result) => format!("{result} {}", str_of(&s["last_reload"]["detail"])),
            None => "none".into(),
        }
        .trim_end(),
    ));
    out.push_str("\nroutes:\n");
    for r in s["routes"].as_array().into_iter().flatten() {
        let tiers: Vec<String> = r["tiers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|tier| {
                let regions: Vec<String> = tier
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| match t["weight"].as_u64() {
                        Some(w) if tier.as_array().is_some_and(|a| a.len() > 1) => {
                            format!("{} {w}", str_of(&t["region"]))
                        }
                        _ => str_of(&t["region"]),
                    })
                    .collect();
                regions.join(" + ")
            })
            .collect();
        let serving = match r["active_regions"].as_array() {
            Some(a) if !a.is_empty() => a.iter().map(str_of).collect::<Vec<_>>().join(", "),
            _ if r["failing_open"] == true => "NONE UP (failing open)".into(),
            _ => "NONE UP (503)".into(),
        };
        out.push_str(&format!(
            "  {:<12} {:<28} {:<24} serving: {serving}\n",
            str_of(&r["name"]),
            format!("{}{}", str_of(&r["host"]), str_of(&r["path_prefix"])),
            tiers.join(" → "),
        ));
    }
    out.push_str("\nregions:\n");
    for r in s["regions"].as_array().into_iter().flatten() {
        let endpoints = r["endpoints"].as_array().cloned().unwrap_or_default();
        let state = if let Some(ms) = r["drained_for_ms"].as_u64() {
            let note = &r["drain"];
            let mut text = format!("DRAINED ({} left)", human(ms));
            if note["reason"].as_str().is_some_and(|t| !t.is_empty()) {
                text.push_str(&format!(" \"{}\"", str_of(&note["reason"])));
            }
            if note["by"].as_str().is_some_and(|t| !t.is_empty()) {
                text.push_str(&format!(" by {}", str_of(&note["by"])));
            }
            text
        } else if r["up"] == true {
            "up".into()
        } else {
            "DOWN".into()
        };
        out.push_str(&format!(
            "  {:<12} {:<8} {}/{} endpoints healthy (min {})\n",
            str_of(&r["name"]),
            state,
            r["healthy_endpoints"],
            endpoints.len(),
            r["min_healthy"],
        ));
        for e in &endpoints {
            let ttfb = e["latency"]["ttfb_ms"]
                .as_f64()
                .map(|ms| format!("ttfb {ms:.1} ms"))
                .unwrap_or_else(|| "no answers yet".into());
            let ejected = e["ejected_for_ms"]
                .as_u64()
                .map(|ms| format!(", ejected {} more", human(ms)))
                .unwrap_or_default();
            let probe = match &e["last_probe"] {
                Value::Null => String::new(),
                p => format!(
                    ", last probe {} ({})",
                    if p["ok"] == true { "ok" } else { "FAILED" },
                    str_of(&p["detail"])
                ),
            };
            out.push_str(&format!(
                "      {:<14} {:<22} {:<5} {ttfb}{ejected}{probe}\n",
                str_of(&e["id"]),
                str_of(&e["address"]),
                str_of(&e["health"]),
            ));
        }
    }
    let events = s["failover_events"].as_array().cloned().unwrap_or_default();
    out.push_str("\nfailover events (newest first):\n");
    if events.is_empty() {
        out.push_str("  none\n");
    }
    for e in events.iter().take(8) {
        let ago = e["at_unix_ms"]
            .as_u64()
            .map(|at| format!("{} ago", human(now_unix_ms.saturating_sub(at))))
            .unwrap_or_default();
        let names = |v: &Value| {
            let list: Vec<String> = v.as_array().into_iter().flatten().map(str_of).collect();
            if list.is_empty() {
                "none".to_string()
            } else {
                list.join(", ")
            }
        };
        let elapsed = e["elapsed_ms"]
            .as_u64()
            .map(|ms| format!(" ({} ms)", ms))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {ago:>9}  {:<12} {:<9} {} → {}: {}{elapsed}\n",
            str_of(&e["route"]),
            str_of(&e["kind"]),
            names(&e["from"]),
            names(&e["to"]),
            str_of(&e["cause"]),
        ));
    }
    out
}

/// A duration in milliseconds as people read it: `850 ms`, `12 s`, `29 min`, `3 h`.
fn human(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=119_999 => format!("{} s", ms / 1000),
        120_000..=7_199_999 => format!("{} min", ms / 60_000),
        _ => format!("{} h", ms / 3_600_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_escaped() {
        assert_eq!(
            query_escape("drill fra/ber & co"),
            "drill%20fra%2Fber%20%26%20co"
        );
        assert_eq!(query_escape("a-b_c.d~e"), "a-b_c.d~e");
    }

    #[test]
    fn the_status_screen_says_it_in_words() {
        let s = serde_json::json!({
            "ready": true, "draining": false,
            "config": {"file": "/etc/gw.yaml", "version": 3, "hash": "abc"},
            "last_reload": {"result": "ok", "detail": ""},
            "routes": [{"name": "api", "host": "api.example.com", "path_prefix": "/",
                "tiers": [[{"region": "fra", "weight": 1}], [{"region": "ber", "weight": 1}]],
                "active_regions": ["ber"], "failing_open": false}],
            "regions": [
                {"name": "fra", "up": false, "drained_for_ms": 1_740_000,
                 "drain": {"reason": "drill", "by": "alice@pop1"}, "healthy_endpoints": 1,
                 "min_healthy": 1, "endpoints": [{"id": "fra-1", "address": "10.0.0.1:80",
                 "health": "up", "latency": {"ttfb_ms": 1.25}, "ejected_for_ms": null,
                 "last_probe": {"ok": true, "detail": "200"}}]},
                {"name": "ber", "up": true, "drained_for_ms": null, "healthy_endpoints": 1,
                 "min_healthy": 1, "endpoints": []}],
            "failover_events": [{"at_unix_ms": 1_000, "route": "api", "kind": "failover",
                "from": ["fra"], "to": ["ber"], "cause": "fra drained", "elapsed_ms": 3}],
        });
        let text = render_status(&s, 13_000);
        for want in [
            "gateway: ready",
            "fra → ber",
            "serving: ber",
            "DRAINED (29 min left) \"drill\" by alice@pop1",
            "fra-1",
            "ttfb 1.2 ms",
            "last probe ok (200)",
            "12 s ago",
            "failover  fra → ber: fra drained (3 ms)",
        ] {
            assert!(text.contains(want), "no `{want}` in:\n{text}");
        }
    }
}
