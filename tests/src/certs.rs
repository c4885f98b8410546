//! Certificates a test makes itself (rcgen): a CA, certificates it issues for `localhost` and
//! 127.0.0.1 (servers) or a name (clients), written as PEM files the services read, and a
//! raw TLS client that reports which certificate a server presented.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate authority of the test's own.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// The certificate as the TLS handshake carries it.
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("PEM").to_vec()
    }
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let pem = params.self_signed(&key).expect("self-signed").pem();
        Self { issuer: Issuer::new(params, key), pem }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Issued {
        self.issue(&["localhost", "127.0.0.1"], "localhost", ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate naming `who`.
    pub fn client(&self, who: &str) -> Issued {
        self.issue(&[who], who, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, names: &[&str], common_name: &str, usage: ExtendedKeyUsagePurpose) -> Issued {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

/// A directory of PEM files, removed when dropped.
pub struct PemDir(PathBuf);

impl PemDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("todo-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    /// Writes `contents` to `name` (replacing it) and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write PEM");
        path
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Default for PemDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PemDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server's TLS files in `dir`: `server.pem`, `server.key` and, if given, `clients-ca.pem`.
pub fn server_tls(dir: &PemDir, server: &Issued, client_ca: Option<&TestCa>) -> todo_shared::tls::ServerTls {
    todo_shared::tls::ServerTls {
        cert_file: dir.write("server.pem", &server.cert_pem),
        key_file: dir.write("server.key", &server.key_pem),
        client_ca_file: client_ca.map(|ca| dir.write("clients-ca.pem", &ca.pem)),
    }
}

/// A rustls client trusting `ca`, presenting `identity` if given, offering `alpn`.
pub fn client_config(ca: &TestCa, identity: Option<&Issued>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).expect("CA PEM")).expect("CA");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(id.cert_pem.as_bytes()).expect("PEM")],
                PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("key PEM"),
            )
            .expect("client identity"),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `addr` as `localhost`.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config).connect(ServerName::try_from("localhost").expect("name"), tcp).await
}

/// The certificate the server at `addr` presents to a new connection (DER).
pub async fn presented_certificate(addr: std::net::SocketAddr, ca: &TestCa) -> Vec<u8> {
    let tls = tls_connect(addr, client_config(ca, None, &[b"h2"])).await.expect("TLS handshake");
    tls.get_ref().1.peer_certificates().and_then(|c| c.first()).expect("a certificate").to_vec()
}

/// A tonic channel to `addr` over TLS, trusting `ca`, presenting `identity` if given.
pub async fn tls_channel(
    addr: std::net::SocketAddr,
    ca: &TestCa,
    identity: Option<&Issued>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    tonic::transport::Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .expect("url")
        .tls_config(tls)?
        .connect()
        .await
}
