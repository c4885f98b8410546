//! auth-service configuration, read once from the environment.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use todo_shared::config::{ConfigError, Env, Logging, TokenConfig};
use todo_shared::cors::AllowedOrigins;
use todo_shared::db::{DatabaseUrl, PoolSettings};
use todo_shared::limits::ServerLimits;
use todo_shared::tls::ServerTls;

use crate::password::{HashLimits, MAX_CONCURRENT_HASHES};
use crate::sessions::SessionPolicy;
use crate::throttle::{Rate, ThrottleConfig, TrustedProxies};

fn throttle_config(env: &Env) -> Result<ThrottleConfig, ConfigError> {
    let rate = |var: &'static str, default: Rate| match env.get(var)? {
        None => Ok(Some(default)),
        Some(raw) => Rate::parse(&raw).map_err(|reason| ConfigError::new(var, reason)),
    };
    let trusted_proxies = match env.get("AUTH_TRUSTED_PROXIES")? {
        None => TrustedProxies::default(),
        Some(raw) => TrustedProxies::parse(&raw).map_err(|reason| ConfigError::new("AUTH_TRUSTED_PROXIES", reason))?,
    };
    Ok(ThrottleConfig {
        per_address: rate("AUTH_THROTTLE_PER_ADDRESS", ThrottleConfig::DEFAULT_PER_ADDRESS)?,
        per_email: rate("AUTH_THROTTLE_PER_EMAIL", ThrottleConfig::DEFAULT_PER_EMAIL)?,
        trusted_proxies,
    })
}

fn session_policy(env: &Env) -> Result<SessionPolicy, ConfigError> {
    let ttl = env.seconds("ACCESS_TOKEN_TTL", Config::DEFAULT_TOKEN_TTL, 1..=Config::MAX_TOKEN_TTL_SECS)?;
    let max = Config::MAX_TOKEN_TTL_SECS * 10;
    let max_age = env.seconds("SESSION_MAX_AGE", SessionPolicy::DEFAULT_MAX_AGE, 1..=max)?;
    let idle_timeout = env.seconds("SESSION_IDLE_TIMEOUT", SessionPolicy::DEFAULT_IDLE_TIMEOUT, 1..=max)?;
    let reuse_grace = env.seconds("REFRESH_REUSE_GRACE", SessionPolicy::DEFAULT_REUSE_GRACE, 0..=300)?;
    // An access token outliving its session's refresh window would outlive the session row
    // too, and auth-service would refuse a token task-service still honours.
    if idle_timeout < ttl {
        return Err(ConfigError::new(
            "SESSION_IDLE_TIMEOUT",
            format!("must be at least ACCESS_TOKEN_TTL ({} s)", ttl.as_secs()),
        ));
    }
    if max_age < idle_timeout {
        return Err(ConfigError::new(
            "SESSION_MAX_AGE",
            format!("must be at least SESSION_IDLE_TIMEOUT ({} s)", idle_timeout.as_secs()),
        ));
    }
    Ok(SessionPolicy { access_token_ttl: ttl, max_age, idle_timeout, reuse_grace })
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `AUTH_LISTEN_ADDR`, default `127.0.0.1:50051`.
    pub listen_addr: SocketAddr,
    /// `DATABASE_URL`, default `sqlite://data/auth.db`.
    /// `METRICS_ADDR`: where `/metrics` is served (unset: nowhere).
    pub metrics_addr: Option<SocketAddr>,
    pub database: DatabaseUrl,
    pub pool: PoolSettings,
    /// `JWT_SECRET`, `JWT_ISSUER`, `JWT_AUDIENCE`.
    pub token: TokenConfig,
    /// `ACCESS_TOKEN_TTL`, `SESSION_MAX_AGE`, `SESSION_IDLE_TIMEOUT` (seconds),
    /// `REFRESH_REUSE_GRACE` (seconds).
    pub sessions: SessionPolicy,
    /// `RUST_LOG`, default `info`.
    pub logging: Logging,
    /// `TOKIO_WORKER_THREADS`, default one per core.
    pub worker_threads: Option<usize>,
    /// `CORS_ALLOWED_ORIGINS`, default none.
    pub cors: AllowedOrigins,
    /// `AUTH_MAX_CONCURRENT_HASHES`, default the number of cores (at most 64);
    /// `AUTH_HASHING_PRIORITY`, default low.
    pub hashing: HashLimits,
    /// `AUTH_THROTTLE_PER_ADDRESS`, `AUTH_THROTTLE_PER_EMAIL`, `AUTH_TRUSTED_PROXIES`.
    pub throttle: ThrottleConfig,
    /// `GRPC_*`: message size, streams, in-flight cap, timeouts, keep-alive, drain.
    pub limits: ServerLimits,
    /// `TLS_CERT_FILE`, `TLS_KEY_FILE`; `TLS_CLIENT_CA_FILE` (demanded on the internal
    /// session-event RPC only). Unset: plaintext.
    pub tls: Option<ServerTls>,
}

impl Config {
    pub const DEFAULT_LISTEN_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 50051);
    pub const DEFAULT_SQLITE_FILE: &'static str = "data/auth.db";
    pub const DEFAULT_TOKEN_TTL: Duration = SessionPolicy::DEFAULT_ACCESS_TOKEN_TTL;
    /// A year: longer-lived bearer tokens cannot be revoked in any useful time.
    const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 60 * 60;

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut hashing = HashLimits::default();
        let range = 1..=MAX_CONCURRENT_HASHES;
        let expected = format!("a whole number from 1 to {MAX_CONCURRENT_HASHES}");
        hashing.max_in_flight = env.parse_or("AUTH_MAX_CONCURRENT_HASHES", hashing.max_in_flight, &expected)?;
        if !range.contains(&hashing.max_in_flight) {
            return Err(ConfigError::new("AUTH_MAX_CONCURRENT_HASHES", format!("expected {expected}")));
        }
        hashing.max_queued = hashing.max_in_flight * 32;
        hashing.priority = env.parse_or("AUTH_HASHING_PRIORITY", hashing.priority, "`low` or `normal`")?;
        Ok(Self {
            listen_addr: env.socket_addr("AUTH_LISTEN_ADDR", Self::DEFAULT_LISTEN_ADDR)?,
            metrics_addr: env.metrics_addr()?,
            database: env.database_url(Self::DEFAULT_SQLITE_FILE)?,
            pool: env.pool_settings()?,
            token: env.token_config()?,
            sessions: session_policy(env)?,
            logging: env.logging()?,
            worker_threads: env.worker_threads()?,
            cors: env.cors_origins()?,
            hashing,
            throttle: throttle_config(env)?,
            limits: ServerLimits::from_env(env, crate::DEFAULT_MAX_REQUEST_BYTES)?,
            tls: todo_shared::tls::server_from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn config(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        Config::from_env(&Env::from_pairs([("JWT_SECRET", SECRET)].into_iter().chain(pairs.iter().copied())))
    }

    #[test]
    fn session_lifetimes_default_and_must_nest() {
        let sessions = config(&[]).unwrap().sessions;
        assert_eq!(sessions, SessionPolicy::default());
        assert_eq!(sessions.access_token_ttl.as_secs(), 604_800);
        let err = config(&[("SESSION_IDLE_TIMEOUT", "3600")]).unwrap_err();
        assert_eq!(err.to_string(), "SESSION_IDLE_TIMEOUT: must be at least ACCESS_TOKEN_TTL (604800 s)");
        let err = config(&[("SESSION_MAX_AGE", "1000000")]).unwrap_err();
        assert_eq!(err.to_string(), "SESSION_MAX_AGE: must be at least SESSION_IDLE_TIMEOUT (2592000 s)");
        let short =
            config(&[("ACCESS_TOKEN_TTL", "900"), ("SESSION_IDLE_TIMEOUT", "86400"), ("SESSION_MAX_AGE", "86400")]);
        assert_eq!(short.unwrap().sessions.idle_timeout.as_secs(), 86_400);
        assert_eq!(config(&[("REFRESH_REUSE_GRACE", "301")]).unwrap_err().var, "REFRESH_REUSE_GRACE");
    }
}
