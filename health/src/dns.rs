//! DNS discovery: `host:port` endpoints are resolved with hickory, re-resolved when the answer's
//! TTL runs out (clamped), and each address becomes a target with its own health. A failed
//! resolution keeps the last good addresses and is reported.

use std::net::SocketAddr;
use std::time::Duration;

use gateway_config::DnsSettings;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

/// Why a resolver could not be built or a name not resolved.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The system resolver configuration could not be read.
    #[error("resolver setup: {0}")]
    Setup(String),
    /// The lookup failed.
    #[error("lookup of {host}: {reason}")]
    Lookup {
        /// Name looked up.
        host: String,
        /// Why.
        reason: String,
    },
}

/// A resolver honouring the config's servers and TTL clamps.
#[derive(Clone)]
pub struct Discovery {
    resolver: TokioResolver,
    settings: DnsSettings,
}

/// The addresses of one name and how long they are valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Addresses with the endpoint's port, sorted.
    pub addrs: Vec<SocketAddr>,
    /// When to resolve again (TTL clamped to `min_ttl..=max_ttl`).
    pub refresh_in: Duration,
}

impl Discovery {
    /// A resolver for `settings` (its servers, or the system's when none are given).
    pub fn new(settings: &DnsSettings) -> Result<Self, DnsError> {
        let mut opts = ResolverOpts::default();
        opts.timeout = settings.timeout;
        opts.attempts = 1;
        opts.cache_size = 0;
        let builder = if settings.servers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| DnsError::Setup(e.to_string()))?
        } else {
            let servers = settings
                .servers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                TokioRuntimeProvider::default(),
            )
        };
        let resolver = builder
            .with_options(opts)
            .build()
            .map_err(|e| DnsError::Setup(e.to_string()))?;
        Ok(Self {
            resolver,
            settings: settings.clone(),
        })
    }

    /// Resolves `host` and attaches `port`.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Resolved, DnsError> {
        let fqdn = if host.ends_with('.') {
            host.to_string()
        } else {
            format!("{host}.")
        };
        let lookup =
            self.resolver
                .lookup_ip(fqdn.as_str())
                .await
                .map_err(|e| DnsError::Lookup {
                    host: host.to_string(),
                    reason: e.to_string(),
                })?;
        let mut addrs: Vec<SocketAddr> =
            lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(DnsError::Lookup {
                host: host.to_string(),
                reason: "no addresses".into(),
            });
        }
        let ttl = lookup
            .valid_until()
            .saturating_duration_since(std::time::Instant::now());
        Ok(Resolved {
            addrs,
            refresh_in: ttl.clamp(self.settings.min_ttl, self.settings.max_ttl),
        })
    }

    /// How long to wait before retrying after a failed lookup.
    pub fn retry_in(&self) -> Duration {
        self.settings.min_ttl
    }
}
