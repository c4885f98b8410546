//! auth-service: user accounts and the bearer tokens that prove them.
//!
//! [`Application`] is the whole service; `main` and the tests start it the same way.

pub mod account_requests;
pub mod accounts;
pub mod argon2id;
pub mod config;
pub mod domain;
pub mod error;
pub mod feed;
pub mod password;
pub mod refresh_token;
pub mod service;
pub mod sessions;
pub mod store;
pub mod throttle;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use todo_contract::auth::internal::v1::session_event_service_server::SessionEventServiceServer;
use todo_contract::auth::v1::auth_service_server::AuthServiceServer;
use todo_shared::db::Pool;
use todo_shared::readiness::{Readiness, ReadyGate};
use todo_shared::server::GrpcHost;
use todo_shared::tls::RequireClientCert;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;

use crate::accounts::Accounts;
pub use crate::config::Config;
use crate::feed::{FeedApi, FeedSignal};
use crate::password::PasswordHasher;
use crate::service::AuthApi;
use crate::sessions::Sessions;

/// The protobuf name of the service, as reported by health.
pub const SERVICE_NAME: &str = "todo.auth.v1.AuthService";

/// Largest request accepted. The biggest legitimate one is a SignUp with a 254-character
/// email and a 128-character password: well under 2 KiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("AUTH_LISTEN_ADDR: cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("METRICS_ADDR: cannot listen on {addr}: {source}")]
    MetricsBind { addr: SocketAddr, source: std::io::Error },
    #[error("DATABASE_URL: cannot prepare the SQLite file: {0}")]
    Database(std::io::Error),
    #[error(transparent)]
    Token(#[from] todo_shared::token::SelfTestFailed),
    #[error("password hasher: {0}")]
    Hasher(#[from] error::Error),
    #[error(transparent)]
    Tls(todo_shared::config::ConfigError),
}

impl StartError {
    /// Whether the operator's configuration is at fault (exit status 2) rather than the binary.
    pub fn is_configuration(&self) -> bool {
        matches!(self, Self::Bind { .. } | Self::MetricsBind { .. } | Self::Database(_) | Self::Tls(_))
    }
}

pub struct Application {
    host: GrpcHost,
}

impl Application {
    /// Binds the listener and wires the service. The database is connected in the background:
    /// until it answers, health says NOT_SERVING and RPCs get UNAVAILABLE.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let keys = Arc::new(config.token.keys()?);
        let hasher = Arc::new(PasswordHasher::new(&config.hashing)?);
        let blocked = domain::load_password_blocklist();
        tracing::debug!(blocked, "common-password blocklist loaded");
        let pool = Pool::connect_lazy(&config.database, &config.pool).map_err(StartError::Database)?;
        let mut host = GrpcHost::bind(config.listen_addr, SERVICE_NAME)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen_addr, source })?
            .with_limits(config.limits.clone())
            .with_cors(config.cors.clone())
            .with_tls(config.tls.clone())
            .map_err(StartError::Tls)?;
        if let Some(addr) = config.metrics_addr {
            host = host.serve_metrics_on(addr).await.map_err(|source| StartError::MetricsBind { addr, source })?;
        }
        hasher.register_metrics(&host.metrics());

        let store = store::for_pool(&pool);
        let signal = FeedSignal::default();
        let sessions = Arc::new(Sessions::new(Arc::clone(&store), Arc::clone(&keys), config.sessions, signal.clone()));
        let accounts = Arc::new(Accounts::new(Arc::clone(&store), hasher, Arc::clone(&sessions)));
        let mut throttle = throttle::Throttle::new(&config.throttle);
        if let Some(shared) = store::shared_throttle(&pool) {
            throttle = throttle.shared_through(shared, config.token.secret.expose_for_key_derivation());
        }
        let throttle = Arc::new(throttle);
        throttle.register_metrics(&host.metrics());
        // Compressed requests are accepted (the size limit applies to the decompressed
        // message); answers go out uncompressed: they are small, and compressing costs CPU.
        let api = AuthServiceServer::new(AuthApi::new(accounts, Arc::clone(&throttle)))
            .max_decoding_message_size(config.limits.max_request_bytes)
            .accept_compressed(CompressionEncoding::Gzip);
        let feed = SessionEventServiceServer::new(FeedApi::new(
            config.sessions.revocation_lifetime(),
            Arc::clone(&store),
            Arc::clone(&keys),
            signal.clone(),
            host.readiness(),
        ));
        let gate = ReadyGate(host.readiness());
        // The internal RPC: with TLS_CLIENT_CA_FILE, for holders of a client certificate
        // only (task-service); the public API stays open to browsers and apps.
        let client_ca = config.tls.as_ref().is_some_and(|tls| tls.client_ca_file.is_some());
        let internal = RequireClientCert { required: client_ca, inner: gate.clone() };
        let host = host
            .add_service(InterceptedService::new(api, gate))
            .add_service(InterceptedService::new(feed, internal))
            .supervise_database(pool, &store::MIGRATIONS);
        tokio::spawn(feed::watch_head(Arc::clone(&store), signal));
        let readiness = host.readiness();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(sessions::PRUNE_INTERVAL);
            loop {
                tick.tick().await;
                // Not before the database is up and migrated (the first tick comes at start-up).
                if !readiness.is_ready() {
                    continue;
                }
                if let Err(err) = sessions.prune().await {
                    tracing::warn!(error = %err, "pruning expired sessions failed; retrying later");
                }
                match throttle.prune().await {
                    Ok(0) => {}
                    Ok(counts) => tracing::debug!(counts, "refilled throttle counts pruned"),
                    Err(err) => tracing::warn!(error = %err, "pruning throttle counts failed; retrying later"),
                }
            }
        });

        tracing::info!(addr = %host.local_addr(), tls = config.tls.is_some(), client_ca, database = ?config.database,
            signing_kid = keys.signing_key_id(), "auth-service listening");
        Ok(Self { host })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.host.local_addr()
    }

    pub fn readiness(&self) -> Readiness {
        self.host.readiness()
    }

    /// Where `/metrics` is served (`METRICS_ADDR`), if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.host.metrics_addr()
    }

    /// Serves until `shutdown` resolves, then drains and closes the database pool.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), tonic::transport::Error> {
        self.host.serve(shutdown).await
    }
}
