//! DNS discovery: `host:port` endpoints are resolved with hickory, re-resolved when the answer's
//! TTL runs out (clamped), and each address becomes a target with its own health. A failed
//! resolution keeps the last good addresses and is reported. The scheduler
//! ([`crate::monitor`]) decides which answers still count; this module only looks names up,
//! behind the [`Resolve`] trait so that the scheduler's races can be tested on a paused clock.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
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

/// Looks up the addresses of host names.
#[async_trait]
pub trait Resolve: Send + Sync + 'static {
    /// Resolves `host` and attaches `port`. Fails with [`DnsError::Lookup`] on an error, an
    /// empty answer or no answer in time.
    async fn resolve(&self, host: &str, port: u16) -> Result<Resolved, DnsError>;

    /// How long to wait before retrying after a failed lookup.
    fn retry_in(&self) -> Duration;

    /// How long one lookup may take; the first lookup of a name holds readiness back at most
    /// this long.
    fn timeout(&self) -> Duration;
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
    pub async fn lookup(&self, host: &str, port: u16) -> Result<Resolved, DnsError> {
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
}

#[async_trait]
impl Resolve for Discovery {
    async fn resolve(&self, host: &str, port: u16) -> Result<Resolved, DnsError> {
        self.lookup(host, port).await
    }

    fn retry_in(&self) -> Duration {
        self.settings.min_ttl
    }

    fn timeout(&self) -> Duration {
        self.settings.timeout
    }
}
