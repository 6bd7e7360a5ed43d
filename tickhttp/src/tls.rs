//! HTTPS with rustls: certificates from PEM files, SNI, ALPN `http/1.1`, TLS 1.2 and 1.3.
//!
//! The handshake and record layer run inside the server's non-blocking loop (rustls does no
//! I/O of its own), so a slow TLS client never stalls other connections.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::Error;

/// Where one certificate chain and its key come from.
#[derive(Debug, Clone)]
struct CertSource {
    sni_name: Option<String>,
    cert: PathBuf,
    key: PathBuf,
}

/// TLS settings: a default certificate, optional per-name certificates (SNI), loaded from PEM
/// files and reloadable from the same files.
///
/// ```no_run
/// let tls = tickhttp::tls::TlsConfig::from_pem_files("cert.pem", "key.pem")?
///     .with_sni("api.example.com", "api-cert.pem", "api-key.pem")?;
/// let config = tickhttp::ServerConfig::default().tls(Some(tls));
/// # Ok::<(), tickhttp::Error>(())
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    sources: Vec<CertSource>,
    rustls: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("certificates", &self.sources)
            .finish()
    }
}

impl TlsConfig {
    /// Loads a certificate chain and its private key. Fails with a message naming the file
    /// when a path is wrong, a file is unreadable or holds no PEM item, or the key does not
    /// match the certificate.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, Error> {
        let sources = vec![CertSource {
            sni_name: None,
            cert: cert.as_ref().to_path_buf(),
            key: key.as_ref().to_path_buf(),
        }];
        let rustls = build(&sources)?;
        Ok(TlsConfig { sources, rustls })
    }

    /// Adds a certificate served when the client asks for `name` (SNI); the first certificate
    /// stays the default.
    pub fn with_sni(
        mut self,
        name: &str,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        self.sources.push(CertSource {
            sni_name: Some(name.to_ascii_lowercase()),
            cert: cert.as_ref().to_path_buf(),
            key: key.as_ref().to_path_buf(),
        });
        self.rustls = build(&self.sources)?;
        Ok(self)
    }

    /// Re-reads every certificate and key from their files. On error the old ones stay.
    pub fn reload(&self) -> Result<TlsConfig, Error> {
        Ok(TlsConfig {
            sources: self.sources.clone(),
            rustls: build(&self.sources)?,
        })
    }

    /// The rustls configuration built from the files.
    pub fn rustls_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.rustls)
    }
}

fn tls_error(path: &Path, what: impl fmt::Display) -> Error {
    Error::config("tls", format!("{}: {what}", path.display()))
}

fn load_key(source: &CertSource) -> Result<Arc<CertifiedKey>, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&source.cert)
        .map_err(|e| tls_error(&source.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(&source.cert, e))?;
    if certs.is_empty() {
        return Err(tls_error(
            &source.cert,
            "no certificate found in the PEM file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&source.key).map_err(|e| tls_error(&source.key, e))?;
    let provider = ring::default_provider();
    let certified = CertifiedKey::from_der(certs, key, &provider).map_err(|e| {
        tls_error(
            &source.key,
            format!("does not match {} ({e})", source.cert.display()),
        )
    })?;
    Ok(Arc::new(certified))
}

fn build(sources: &[CertSource]) -> Result<Arc<rustls::ServerConfig>, Error> {
    let mut default = None;
    let mut by_name = HashMap::new();
    for source in sources {
        let key = load_key(source)?;
        match &source.sni_name {
            None => default = Some(key),
            Some(name) => {
                by_name.insert(name.clone(), key);
            }
        }
    }
    let default = default.ok_or_else(|| Error::config("tls", "no default certificate"))?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::config("tls", e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver { default, by_name }));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = hello
            .server_name()
            .and_then(|n| self.by_name.get(&n.to_ascii_lowercase()));
        Some(Arc::clone(by_name.unwrap_or(&self.default)))
    }
}
