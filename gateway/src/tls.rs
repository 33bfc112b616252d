//! TLS for listeners: a certificate chain and private key read from PEM files into a rustls
//! server configuration (ring as the crypto provider; TLS 1.2 and 1.3; ALPN offering h2 and
//! http/1.1). The handshake runs in the connection's task, on the connection's header clock
//! (`conn`): a client that connects and says nothing holds its slot no longer than that.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a listener's certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read a PEM certificate chain: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("{path}: cannot read a PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(rustls::Error),
}

impl TlsError {
    /// The `tls` key the problem is about, for the config's problem list.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Cert { .. } | TlsError::Config(_) => "tls.cert",
            TlsError::Key { .. } => "tls.key",
        }
    }
}

/// Builds a server configuration from a PEM chain (leaf first) and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let cert_error = |reason: String| TlsError::Cert {
        path: cert.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no CERTIFICATE block in the file".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
