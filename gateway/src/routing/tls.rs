//! TLS termination: certificates chosen by SNI, with a default for clients without SNI.

use std::collections::HashMap;
use std::sync::Arc;

use gateway_config::{CertPair, GatewayConfig, ListenerTls};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, ServerName};

/// The server name a TLS client asked for (SNI), kept in its connection's TLS digest
/// (`SslDigest::extension`) for the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSni(pub String);

/// Keeps each TLS client's SNI in its connection's digest, once per handshake.
pub struct KeepSni;

#[async_trait::async_trait]
impl pingora::listeners::TlsAccept for KeepSni {
    async fn handshake_complete_callback(
        &self,
        tls: &pingora::protocols::tls::TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        tls.server_name().map(|name| {
            Arc::new(ClientSni(name.to_string())) as Arc<dyn std::any::Any + Send + Sync>
        })
    }
}

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file held no usable certificate.
    #[error("{path}: no usable certificate: {reason}")]
    Cert {
        /// Certificate file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The key could not be used for signing.
    #[error("{path}: unusable private key: {reason}")]
    Key {
        /// Key file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// Every TLS listener's certificates, by listener name. They are part of the routing
/// snapshot, so a reload publishes new certificates in the same store as everything else, and
/// only once every one of them loaded.
#[derive(Debug, Default, Clone)]
pub struct Certificates(HashMap<String, Arc<CertSet>>);

/// A certificate that could not be loaded, with its listener.
#[derive(Debug, thiserror::Error)]
#[error("listener `{listener}`: {source}")]
pub struct ListenerTlsError {
    /// Listener name.
    pub listener: String,
    /// The certificate problem.
    #[source]
    pub source: TlsError,
}

impl Certificates {
    /// Loads the certificates of every TLS listener of `config`.
    pub fn load(config: &GatewayConfig) -> Result<Self, ListenerTlsError> {
        let mut sets = HashMap::new();
        for listener in &config.listeners {
            if let Some(tls) = &listener.tls {
                sets.insert(listener.name.clone(), load_set(&listener.name, tls)?);
            }
        }
        Ok(Self(sets))
    }

    /// The certificates after a reload to `config`: the listeners in `changed` are loaded
    /// anew, every other keeps what `self` has (a listener whose address changed needs a
    /// restart and keeps serving what it started with). Nothing is published here.
    pub fn reload<'a>(
        &self,
        config: &GatewayConfig,
        changed: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ListenerTlsError> {
        let mut sets = self.0.clone();
        for name in changed {
            let tls = config
                .listeners
                .iter()
                .find(|l| l.name == name)
                .and_then(|l| l.tls.as_ref());
            if let Some(tls) = tls {
                sets.insert(name.to_string(), load_set(name, tls)?);
            }
        }
        Ok(Self(sets))
    }

    fn get(&self, listener: &str) -> Option<&Arc<CertSet>> {
        self.0.get(listener)
    }
}

fn load_set(listener: &str, tls: &ListenerTls) -> Result<Arc<CertSet>, ListenerTlsError> {
    CertSet::load(tls)
        .map(Arc::new)
        .map_err(|source| ListenerTlsError {
            listener: listener.to_string(),
            source,
        })
}

/// Where a listener's resolver finds the current [`Certificates`] (the routing snapshot).
pub trait CertSource: Send + Sync {
    /// Calls `f` with the current certificates.
    fn with_certificates(&self, f: &mut dyn FnMut(&Certificates));
}

/// Picks a certificate by SNI for one listener: the first certificate valid for the requested
/// name (exact or wildcard, as a client would verify it), else the default. It reads the
/// current certificates at every handshake, so reloads need not touch the listener.
pub struct SniResolver {
    listener: String,
    source: Arc<dyn CertSource>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("listener", &self.listener)
            .finish()
    }
}

/// One listener's certificates.
#[derive(Debug)]
pub struct CertSet {
    certs: Vec<Arc<CertifiedKey>>,
    default_cert: usize,
}

impl CertSet {
    fn load(tls: &ListenerTls) -> Result<Self, TlsError> {
        let certs = tls
            .certs
            .iter()
            .map(load_pair)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            certs,
            default_cert: tls.default_cert.min(tls.certs.len().saturating_sub(1)),
        })
    }

    fn for_name(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let server_name = ServerName::try_from(name).ok()?;
        self.certs.iter().find(|ck| {
            ck.cert.first().is_some_and(|der| {
                webpki::EndEntityCert::try_from(der)
                    .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&server_name).is_ok())
            })
        })
    }
}

impl SniResolver {
    /// The resolver of `listener`, reading certificates from `source`.
    pub fn new(listener: &str, source: Arc<dyn CertSource>) -> Self {
        Self {
            listener: listener.to_string(),
            source,
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut chosen = None;
        self.source.with_certificates(&mut |certs| {
            let Some(set) = certs.get(&self.listener) else {
                return;
            };
            chosen = hello
                .server_name()
                .and_then(|name| set.for_name(name))
                .or_else(|| set.certs.get(set.default_cert))
                .cloned();
        });
        chosen
    }
}

fn load_pair(pair: &CertPair) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_path = pair.cert_path.display().to_string();
    let key_path = pair.key_path.display().to_string();
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pair.cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert_path,
            reason: "no PEM certificate".into(),
        });
    }
    let key = rustls_pemfile::private_key(&mut pair.key_pem.as_slice())
        .map_err(|e| TlsError::Key {
            path: key_path.clone(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| TlsError::Key {
            path: key_path.clone(),
            reason: "no PEM private key".into(),
        })?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::Key {
            path: key_path,
            reason: e.to_string(),
        })?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}
