//! TLS on the gRPC port (`TLS_CERT_FILE`, `TLS_KEY_FILE`, `TLS_CLIENT_CA_FILE`) and on
//! task-service's calls to auth-service (`AUTH_CA_FILE`, `AUTH_CLIENT_CERT_FILE`,
//! `AUTH_CLIENT_KEY_FILE`), with rustls and ring.
//!
//! The server's handshakes are ours ([`incoming`]), not tonic's: tonic's `ServerTlsConfig`
//! is fixed when the server starts, while certificates issued by cert-manager or an ACME
//! client are replaced on disk every few weeks. [`Reloading`] rebuilds the rustls
//! configuration when the files change, and each new connection gets the current one.
//!
//! Client certificates, when `TLS_CLIENT_CA_FILE` is set, are asked for on every handshake
//! and checked against that CA when presented (a certificate from another CA fails the
//! handshake), but not demanded there: which calls need one is decided per service
//! ([`RequireClientCert`]), so auth-service can demand them on its internal RPC while browsers
//! keep calling its public API, and health probes keep working everywhere.

pub mod client;
pub mod incoming;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::config::{ConfigError, Env};

/// The gRPC port's certificate, key and (for mutual TLS) client CA files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// `TLS_CERT_FILE`: PEM, the server's certificate first, then its chain.
    pub cert_file: PathBuf,
    /// `TLS_KEY_FILE`: PEM, the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `TLS_CLIENT_CA_FILE`: PEM, the CA(s) client certificates must be signed by.
    pub client_ca_file: Option<PathBuf>,
}

/// `TLS_CERT_FILE` and `TLS_KEY_FILE` (both or neither) and `TLS_CLIENT_CA_FILE`, checked by
/// building the configuration once: a file that cannot be read or parsed, or a key that does
/// not match the certificate, is bad configuration.
pub fn server_from_env(env: &Env) -> Result<Option<ServerTls>, ConfigError> {
    let path = |var| env.get(var).map(|v| v.map(|v| PathBuf::from(v.trim())));
    let client_ca_file = path("TLS_CLIENT_CA_FILE")?;
    let tls = match (path("TLS_CERT_FILE")?, path("TLS_KEY_FILE")?) {
        (None, None) if client_ca_file.is_some() => {
            return Err(ConfigError::new(
                "TLS_CLIENT_CA_FILE",
                "client certificates need TLS: set TLS_CERT_FILE and TLS_KEY_FILE too",
            ));
        }
        (None, None) => return Ok(None),
        (Some(_), None) => return Err(ConfigError::new("TLS_KEY_FILE", "TLS_CERT_FILE is set: set its key too")),
        (None, Some(_)) => {
            return Err(ConfigError::new("TLS_CERT_FILE", "TLS_KEY_FILE is set: set its certificate too"));
        }
        (Some(cert_file), Some(key_file)) => ServerTls { cert_file, key_file, client_ca_file },
    };
    tls.server_config(&tls.read()?)?;
    Ok(Some(tls))
}

/// The files' bytes, compared to tell whether anything changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

fn read(var: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::new(var, format!("cannot read {}: {e}", path.display())))
}

/// The certificates in a PEM file's bytes; at least one.
pub(crate) fn certificates(
    var: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(var, format!("{}: not PEM certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::new(var, format!("{} holds no PEM certificate", path.display())));
    }
    Ok(certs)
}

pub(crate) fn private_key(var: &'static str, path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| ConfigError::new(var, format!("{}: no PEM private key: {e}", path.display())))
}

pub(crate) fn roots(var: &'static str, path: &Path, pem: &[u8]) -> Result<rustls::RootCertStore, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(var, path, pem)? {
        roots
            .add(cert)
            .map_err(|e| ConfigError::new(var, format!("{}: not a usable CA certificate: {e}", path.display())))?;
    }
    Ok(roots)
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ServerTls {
    fn read(&self) -> Result<Contents, ConfigError> {
        Ok(Contents {
            cert: read("TLS_CERT_FILE", &self.cert_file)?,
            key: read("TLS_KEY_FILE", &self.key_file)?,
            client_ca: self.client_ca_file.as_deref().map(|path| read("TLS_CLIENT_CA_FILE", path)).transpose()?,
        })
    }

    fn server_config(&self, contents: &Contents) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
        let certs = certificates("TLS_CERT_FILE", &self.cert_file, &contents.cert)?;
        let key = private_key("TLS_KEY_FILE", &self.key_file, &contents.key)?;
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new("TLS_CERT_FILE", e.to_string()))?;
        let builder = match (&self.client_ca_file, &contents.client_ca) {
            (Some(path), Some(pem)) => {
                let roots = roots("TLS_CLIENT_CA_FILE", path, pem)?;
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    // Asked for and checked when presented, demanded per RPC (RequireClientCert).
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| ConfigError::new("TLS_CLIENT_CA_FILE", e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        // Also checks that the key is the certificate's.
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            ConfigError::new(
                "TLS_KEY_FILE",
                format!("{}: not the key of TLS_CERT_FILE's certificate: {e}", self.key_file.display()),
            )
        })?;
        // gRPC needs HTTP/2; gRPC-web from browsers may come over HTTP/1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// How often, at most, the files are read again to see whether they changed.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The server's rustls configuration, rebuilt when its files change.
///
/// Checked on the next handshake after [`RELOAD_CHECK_INTERVAL`], by reading the files (a few
/// KiB; a blocking read at most once a second, on whichever thread accepts). Files that
/// cannot be read or do not form a valid pair (the certificate written, its key not yet)
/// leave the previous configuration serving, with a warning, until they do.
pub struct Reloading {
    files: ServerTls,
    state: Mutex<Loaded>,
}

struct Loaded {
    /// What the last check read, whether or not it was usable.
    seen: Contents,
    config: Arc<rustls::ServerConfig>,
    checked: Instant,
    /// A read failure is logged once, not every second.
    unreadable: bool,
}

impl Reloading {
    pub fn new(files: ServerTls) -> Result<Self, ConfigError> {
        let seen = files.read()?;
        let config = files.server_config(&seen)?;
        let state = Mutex::new(Loaded { seen, config, checked: Instant::now(), unreadable: false });
        Ok(Self { files, state })
    }

    /// The configuration for a new connection.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        // Every update leaves `Loaded` whole: usable after a panic elsewhere.
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.checked.elapsed() >= RELOAD_CHECK_INTERVAL {
            state.checked = Instant::now();
            self.check(&mut state);
        }
        Arc::clone(&state.config)
    }

    fn check(&self, state: &mut Loaded) {
        let contents = match self.files.read() {
            Ok(contents) => contents,
            Err(err) => {
                if !state.unreadable {
                    tracing::warn!(error = %err, "TLS files unreadable; still serving the certificate loaded before");
                    state.unreadable = true;
                }
                return;
            }
        };
        state.unreadable = false;
        if contents == state.seen {
            return;
        }
        match self.files.server_config(&contents) {
            Ok(config) => {
                state.config = config;
                tracing::info!(cert = %self.files.cert_file.display(), "TLS certificate reloaded");
            }
            Err(err) => {
                tracing::warn!(error = %err, "new TLS files are not usable (yet); still serving the certificate loaded before");
            }
        }
        state.seen = contents;
    }
}

/// Whether the call came over a connection whose client presented a certificate. The
/// handshake has already checked it against `TLS_CLIENT_CA_FILE`.
pub fn has_client_certificate<T>(request: &Request<T>) -> bool {
    request.peer_certs().is_some_and(|certs| !certs.is_empty())
}

/// An interceptor that refuses calls without a client certificate when `required`, then
/// hands the call to `inner`.
#[derive(Clone)]
pub struct RequireClientCert<I> {
    pub required: bool,
    pub inner: I,
}

impl<I: Interceptor> Interceptor for RequireClientCert<I> {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.required && !has_client_certificate(&request) {
            return Err(Status::unauthenticated(
                "this RPC needs a client certificate (mutual TLS) signed by the CA in the server's TLS_CLIENT_CA_FILE",
            ));
        }
        self.inner.call(request)
    }
}
