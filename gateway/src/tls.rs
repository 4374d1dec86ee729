//! TLS termination: certificates chosen by SNI, with a default for clients without SNI.

use std::sync::Arc;

use arc_swap::ArcSwap;

use gateway_config::{CertPair, ListenerTls};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, ServerName};

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

/// Picks a certificate by SNI: the first certificate valid for the requested name (exact or
/// wildcard, as a client would verify it), else the default.
///
/// The certificate set can be replaced at run time ([`Self::update`]): reloads swap it without
/// touching the listener.
#[derive(Debug)]
pub struct SniResolver {
    current: ArcSwap<CertSet>,
}

#[derive(Debug)]
struct CertSet {
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
    /// Loads the listener's certificates.
    pub fn new(tls: &ListenerTls) -> Result<Self, TlsError> {
        Ok(Self {
            current: ArcSwap::from_pointee(CertSet::load(tls)?),
        })
    }

    /// Replaces the certificates; on error the old ones stay in use.
    pub fn update(&self, tls: &ListenerTls) -> Result<(), TlsError> {
        self.current.store(Arc::new(CertSet::load(tls)?));
        Ok(())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.load();
        hello
            .server_name()
            .and_then(|name| set.for_name(name))
            .or_else(|| set.certs.get(set.default_cert))
            .cloned()
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
