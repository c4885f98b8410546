//! TLS for calls this process makes: task-service to auth-service (`AUTH_CA_FILE`,
//! `AUTH_CLIENT_CERT_FILE`, `AUTH_CLIENT_KEY_FILE`), and the `healthcheck` subcommand to its
//! own service.

use std::path::PathBuf;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::config::{ConfigError, Env};

/// How task-service reaches an `https://` auth-service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTls {
    /// `AUTH_CA_FILE`: the CA(s) auth-service's certificate must chain to; unset, the public
    /// (Mozilla) roots.
    pub ca_file: Option<PathBuf>,
    /// `AUTH_CLIENT_CERT_FILE` and `AUTH_CLIENT_KEY_FILE`: the certificate presented to
    /// auth-service (mutual TLS).
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// `AUTH_CA_FILE`, `AUTH_CLIENT_CERT_FILE` and `AUTH_CLIENT_KEY_FILE`, for a peer reached at
/// `https` (`Some`) or plain `http` (`None`: then the variables must be unset).
pub fn peer_from_env(env: &Env, https: bool) -> Result<Option<PeerTls>, ConfigError> {
    let path = |var| env.get(var).map(|v| v.map(|v| PathBuf::from(v.trim())));
    let ca_file = path("AUTH_CA_FILE")?;
    let identity = match (path("AUTH_CLIENT_CERT_FILE")?, path("AUTH_CLIENT_KEY_FILE")?) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((cert, key)),
        (Some(_), None) => {
            return Err(ConfigError::new("AUTH_CLIENT_KEY_FILE", "AUTH_CLIENT_CERT_FILE is set: set its key too"));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "AUTH_CLIENT_CERT_FILE",
                "AUTH_CLIENT_KEY_FILE is set: set its certificate too",
            ));
        }
    };
    if !https {
        let set =
            if ca_file.is_some() { Some("AUTH_CA_FILE") } else { identity.as_ref().map(|_| "AUTH_CLIENT_CERT_FILE") };
        return match set {
            Some(var) => Err(ConfigError::new(var, "needs an https:// AUTH_SERVICE_URL")),
            None => Ok(None),
        };
    }
    let tls = PeerTls { ca_file, identity };
    tls.tonic_config()?;
    Ok(Some(tls))
}

impl PeerTls {
    /// tonic's client TLS from the files as they are now: read again for every new connection,
    /// so a rotated client certificate is presented from the next connection on.
    pub fn tonic_config(&self) -> Result<ClientTlsConfig, ConfigError> {
        let mut config = ClientTlsConfig::new();
        match &self.ca_file {
            Some(path) => {
                let pem = super::read("AUTH_CA_FILE", path)?;
                super::roots("AUTH_CA_FILE", path, &pem)?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            None => config = config.with_webpki_roots(),
        }
        if let Some((cert_path, key_path)) = &self.identity {
            let cert = super::read("AUTH_CLIENT_CERT_FILE", cert_path)?;
            let key = super::read("AUTH_CLIENT_KEY_FILE", key_path)?;
            let certs = super::certificates("AUTH_CLIENT_CERT_FILE", cert_path, &cert)?;
            let private = super::private_key("AUTH_CLIENT_KEY_FILE", key_path, &key)?;
            // The same check the server's files get: a key that is not the certificate's
            // would fail every handshake.
            rustls::ClientConfig::builder_with_provider(super::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| ConfigError::new("AUTH_CLIENT_CERT_FILE", e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_client_auth_cert(certs, private)
                .map_err(|e| {
                    ConfigError::new(
                        "AUTH_CLIENT_KEY_FILE",
                        format!("{}: not the key of AUTH_CLIENT_CERT_FILE's certificate: {e}", key_path.display()),
                    )
                })?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        Ok(config)
    }
}

/// Connects over TLS without checking the server's certificate: for the `healthcheck`
/// subcommand only, which asks its own process, on loopback, whether it is serving, sends
/// nothing secret, and cannot know which name the certificate was issued for.
pub async fn connect_unverified(
    addr: std::net::SocketAddr,
) -> std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
    let provider = super::provider();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    Ok(TokioIo::new(TlsConnector::from(Arc::new(config)).connect(name, tcp).await?))
}

/// Accepts any certificate, still checking that the server holds its key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
