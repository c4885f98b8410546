//! task-service configuration, read once from the environment.

use std::net::{Ipv4Addr, SocketAddr};

use todo_shared::config::{ConfigError, Env, LogFilter, TokenConfig};
use todo_shared::cors::AllowedOrigins;
use todo_shared::db::{DatabaseUrl, PoolSettings};
use todo_shared::limits::ServerLimits;

#[derive(Debug, Clone)]
pub struct Config {
    /// `TASK_LISTEN_ADDR`, default `127.0.0.1:50052`.
    pub listen_addr: SocketAddr,
    /// `DATABASE_URL`, default `sqlite://data/tasks.db`.
    pub database: DatabaseUrl,
    pub pool: PoolSettings,
    /// `JWT_SECRET`, `JWT_ISSUER`, `JWT_AUDIENCE`: must match auth-service's.
    pub token: TokenConfig,
    /// `RUST_LOG`, default `info`.
    pub log_filter: LogFilter,
    /// `TOKIO_WORKER_THREADS`, default one per core.
    pub worker_threads: Option<usize>,
    /// `CORS_ALLOWED_ORIGINS`, default none.
    pub cors: AllowedOrigins,
    /// `GRPC_*`: message size, streams, in-flight cap, timeouts, keep-alive, drain.
    pub limits: ServerLimits,
}

impl Config {
    pub const DEFAULT_LISTEN_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 50052);
    pub const DEFAULT_SQLITE_FILE: &'static str = "data/tasks.db";

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            listen_addr: env.socket_addr("TASK_LISTEN_ADDR", Self::DEFAULT_LISTEN_ADDR)?,
            database: env.database_url(Self::DEFAULT_SQLITE_FILE)?,
            pool: env.pool_settings()?,
            token: env.token_config()?,
            log_filter: env.log_filter()?,
            worker_threads: env.worker_threads()?,
            cors: env.cors_origins()?,
            limits: ServerLimits::from_env(env, crate::DEFAULT_MAX_REQUEST_BYTES)?,
        })
    }
}
