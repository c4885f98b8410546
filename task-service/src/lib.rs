//! task-service: each user's own tasks, behind the bearer-token interceptor.
//!
//! [`Application`] is the whole service; `main` and the tests start it the same way.

pub mod config;
pub mod domain;
pub mod error;
pub mod follower;
pub mod hub;
pub mod page_token;
pub mod resume_token;
pub mod revocations;
pub mod service;
pub mod store;
pub mod tasks;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use todo_contract::task::v1::task_service_server::TaskServiceServer;
use todo_shared::auth::{AuthenticatedUser, RequireBearer};
use todo_shared::db::Pool;
use todo_shared::metrics::{Counter, Sampled};
use todo_shared::rate_limit::{Limiter, Rate};
use todo_shared::readiness::Readiness;
use todo_shared::server::GrpcHost;
use todo_shared::tls::RequireClientCert;
use tonic::codec::CompressionEncoding;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};

pub use crate::config::Config;
use crate::error::Error;
use crate::follower::{Follower, Freshness};
use crate::hub::Hub;
use crate::page_token::PageTokens;
use crate::resume_token::ResumeTokens;
use crate::revocations::Revocations;
use crate::service::TaskApi;
use crate::store::TaskStore;
use crate::tasks::Tasks;
use crate::watch::Watchers;

/// The protobuf name of the service, as reported by health.
pub const SERVICE_NAME: &str = "todo.task.v1.TaskService";

/// Largest request accepted: a CreateTask or UpdateTask with a 200-character title and a
/// 10,000-character description is at most ~41 KiB even if every character takes 4 bytes.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("TASK_LISTEN_ADDR: cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("METRICS_ADDR: cannot listen on {addr}: {source}")]
    MetricsBind { addr: SocketAddr, source: std::io::Error },
    #[error("DATABASE_URL: cannot prepare the SQLite file: {0}")]
    Database(std::io::Error),
    #[error(transparent)]
    Token(#[from] todo_shared::token::SelfTestFailed),
    #[error("AUTH_SERVICE_URL: {0}")]
    AuthUrl(String),
    #[error(transparent)]
    Tls(todo_shared::config::ConfigError),
}

impl StartError {
    /// Whether the operator's configuration is at fault (exit status 2) rather than the binary.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            Self::Bind { .. } | Self::MetricsBind { .. } | Self::Database(_) | Self::AuthUrl(_) | Self::Tls(_)
        )
    }
}

/// Every TaskService RPC passes here first: the token is checked before anything else (a
/// request without a valid one learns nothing, not even whether the database is up), then
/// whether it has been revoked, then readiness.
#[derive(Clone)]
struct Gate {
    bearer: RequireBearer,
    revocations: Arc<Revocations>,
    readiness: Readiness,
    per_user: Option<PerUserRate>,
}

/// `TASK_RATE_PER_USER`: each account's requests, counted per replica.
#[derive(Clone)]
struct PerUserRate {
    rate: Rate,
    limiter: Arc<Limiter>,
    refused: Counter,
}

impl Interceptor for Gate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let request = self.bearer.call(request)?;
        if let Some(caller) = request.extensions().get::<AuthenticatedUser>() {
            self.revocations.check(caller)?;
            if let Some(per_user) = &self.per_user
                && let Err(retry_after) = per_user.limiter.check(caller.id, std::time::Instant::now())
            {
                per_user.refused.inc();
                return Err(Error::RateLimited { rate: per_user.rate, retry_after }.into());
            }
        }
        self.readiness.check()?;
        Ok(request)
    }
}

/// Deletes changes older than the retention, every ten minutes.
async fn prune_changes(store: Arc<dyn store::Store>, retention: std::time::Duration) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10 * 60));
    let retention = time::Duration::try_from(retention).unwrap_or(time::Duration::MAX);
    loop {
        tick.tick().await;
        match store.prune_changes(todo_shared::timestamp::now() - retention).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "changes past their retention pruned"),
            Err(err) => tracing::debug!(error = %err, "pruning the change log failed; retrying later"),
        }
    }
}

pub struct Application {
    host: GrpcHost,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let keys = Arc::new(config.token.keys()?);
        let page_tokens = PageTokens::new(config.token.secret.expose_for_key_derivation());
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
        let metrics = host.metrics();

        let store = store::for_pool(&pool);
        let revocations = Arc::new(Revocations::default());
        match &config.auth_service_url {
            Some(url) => {
                let freshness = Arc::new(Freshness::default());
                let lag = Arc::clone(&freshness);
                metrics.sample(Sampled::gauge(
                    "todo_revocation_feed_lag_seconds",
                    "Seconds since auth-service's session-event feed was last heard from (an event or its 2 s \
                     heartbeat; since start-up if never): how stale this process's view of revocations may be.",
                    move || lag.lag().as_secs_f64(),
                ));
                let readiness = host.readiness();
                metrics.sample(Sampled::gauge(
                    "todo_revocation_feed_up",
                    "1 while the session-event feed is connected and current, else 0.",
                    move || todo_shared::metrics::flag(readiness.dependency().is_some_and(|(_, up)| up)),
                ));
                Follower {
                    endpoint: tonic::transport::Endpoint::from_shared(url.clone())
                        .map_err(|e| StartError::AuthUrl(e.to_string()))?
                        .connect_timeout(std::time::Duration::from_secs(2)),
                    tls: config.auth_tls.clone(),
                    keys: Arc::clone(&keys),
                    revocations: Arc::clone(&revocations),
                    freshness,
                    store: Arc::clone(&store) as Arc<dyn TaskStore>,
                    readiness: host.readiness(),
                    max_staleness: config.revocation_max_staleness,
                }
                .spawn();
            }
            None => tracing::warn!(
                "AUTH_SERVICE_URL is not set: this task-service cannot learn of revoked sessions \
                 (sign-outs, password changes, deleted accounts); their access tokens stay valid here until \
                 they expire, and deleted accounts' tasks are not purged"
            ),
        }
        let hub = match &config.database {
            todo_shared::db::DatabaseUrl::Postgres(options) => {
                let announcer = Arc::new(hub::Announcer::default());
                tokio::spawn(hub::announce(options.clone(), store::NOTIFY_CHANNEL, Arc::clone(&announcer)));
                let hub = Arc::new(Hub::new(Some(announcer)));
                tokio::spawn(hub::listen(options.clone(), store::NOTIFY_CHANNEL, Arc::clone(&hub)));
                hub
            }
            todo_shared::db::DatabaseUrl::Sqlite(_) => Arc::new(Hub::default()),
        };
        let task_store: Arc<dyn TaskStore> = Arc::clone(&store) as Arc<dyn TaskStore>;
        let tasks = Arc::new(Tasks::new(task_store, page_tokens, Arc::clone(&hub), config.max_tasks_per_user));
        let watchers = Arc::new(Watchers::new(
            Arc::clone(&store),
            ResumeTokens::new(config.token.secret.expose_for_key_derivation()),
            hub,
            Arc::clone(&revocations),
            host.readiness().subscribe(),
            config.watch.clone(),
        ));
        watchers.register_metrics(&metrics);
        tokio::spawn(prune_changes(Arc::clone(&store), config.change_retention));
        // Compressed requests are accepted (the size limit applies to the decompressed
        // message); answers go out uncompressed: they are small, and compressing costs CPU.
        let api = TaskServiceServer::new(TaskApi::new(tasks, watchers))
            .max_decoding_message_size(config.limits.max_request_bytes)
            .accept_compressed(CompressionEncoding::Gzip);
        let per_user = config.rate_per_user.map(|rate| {
            let refused = Counter::default();
            metrics.register(
                "todo_rate_per_user_refusals",
                "Requests refused with RESOURCE_EXHAUSTED because their account was over TASK_RATE_PER_USER.",
                refused.clone(),
            );
            PerUserRate { rate, limiter: Arc::new(Limiter::new(rate)), refused }
        });
        let gate = Gate { bearer: RequireBearer::new(keys), revocations, readiness: host.readiness(), per_user };
        // Mutual TLS, when asked for, before anything else: a caller without a client
        // certificate learns nothing more.
        let client_ca = config.tls.as_ref().is_some_and(|tls| tls.client_ca_file.is_some());
        let gate = RequireClientCert { required: client_ca, inner: gate };
        let host = host.add_service(InterceptedService::new(api, gate)).supervise_database(pool, &store::MIGRATIONS);

        tracing::info!(addr = %host.local_addr(), tls = config.tls.is_some(), client_ca, database = ?config.database,
            "task-service listening");
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

    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), tonic::transport::Error> {
        self.host.serve(shutdown).await
    }
}
