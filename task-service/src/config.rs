//! task-service configuration, read once from the environment.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use todo_shared::config::{ConfigError, Env, Logging, TokenConfig};
use todo_shared::cors::AllowedOrigins;
use todo_shared::db::{DatabaseUrl, PoolSettings};
use todo_shared::limits::ServerLimits;
use todo_shared::rate_limit::Rate;
use todo_shared::tls::ServerTls;
use todo_shared::tls::client::PeerTls;

use crate::watch::WatchLimits;

#[derive(Debug, Clone)]
pub struct Config {
    /// `TASK_LISTEN_ADDR`, default `127.0.0.1:50052`.
    pub listen_addr: SocketAddr,
    /// `DATABASE_URL`, default `sqlite://data/tasks.db`.
    /// `METRICS_ADDR`: where `/metrics` is served (unset: nowhere).
    pub metrics_addr: Option<SocketAddr>,
    pub database: DatabaseUrl,
    pub pool: PoolSettings,
    /// `JWT_SECRET`, `JWT_ISSUER`, `JWT_AUDIENCE`: must match auth-service's.
    pub token: TokenConfig,
    /// `RUST_LOG`, default `info`.
    pub logging: Logging,
    /// `TOKIO_WORKER_THREADS`, default one per core.
    pub worker_threads: Option<usize>,
    /// `CORS_ALLOWED_ORIGINS`, default none.
    pub cors: AllowedOrigins,
    /// `GRPC_*`: message size, streams, in-flight cap, timeouts, keep-alive, drain.
    pub limits: ServerLimits,
    /// `AUTH_SERVICE_URL`: where auth-service's session-event feed is. Unset: revoked
    /// sessions stay valid here until their tokens expire (and start-up says so).
    pub auth_service_url: Option<String>,
    /// `REVOCATION_MAX_STALENESS` in seconds: refuse RPCs (UNAVAILABLE) once the feed has
    /// been silent this long. Unset (the default): keep serving on the last known state.
    pub revocation_max_staleness: Option<Duration>,
    /// `TASK_WATCH_*`: WatchTasks stream limits.
    pub watch: WatchLimits,
    /// `TASK_CHANGE_RETENTION` in seconds, default 7 days: how long the change log keeps a
    /// change, so how long a WatchTasks client may stay away and still resume.
    pub change_retention: Duration,
    /// `TASK_RATE_PER_USER`, default `100/s`: requests one account may make (a burst of N,
    /// then N per period), per replica; `off` for none.
    pub rate_per_user: Option<Rate>,
    /// `TASK_MAX_TASKS_PER_USER`, default 100,000 (as Google Tasks): tasks one account may
    /// hold; CreateTask beyond it is RESOURCE_EXHAUSTED.
    pub max_tasks_per_user: i64,
    /// `TLS_CERT_FILE`, `TLS_KEY_FILE`; `TLS_CLIENT_CA_FILE` (then every TaskService call
    /// needs a client certificate; health and reflection do not). Unset: plaintext.
    pub tls: Option<ServerTls>,
    /// `AUTH_CA_FILE`, `AUTH_CLIENT_CERT_FILE`, `AUTH_CLIENT_KEY_FILE`: TLS to an `https://`
    /// `AUTH_SERVICE_URL`.
    pub auth_tls: Option<PeerTls>,
}

impl Config {
    pub const DEFAULT_LISTEN_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 50052);
    pub const DEFAULT_SQLITE_FILE: &'static str = "data/tasks.db";
    pub const DEFAULT_CHANGE_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);
    /// Far above what a person's devices send (a page of tasks, a few edits a second), far
    /// below what one replica serves (thousands a second), so one account cannot starve the
    /// others.
    pub const DEFAULT_MAX_TASKS_PER_USER: i64 = 100_000;
    pub const DEFAULT_RATE_PER_USER: Rate = Rate { count: 100, period: Duration::from_secs(1) };

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let auth_service_url = auth_service_url(env)?;
        // The scheme as the URL parser reads it (case-insensitive), as tonic will.
        let https = auth_service_url.as_deref().is_some_and(|url| {
            tonic::transport::Endpoint::from_shared(url.to_owned()).is_ok_and(|e| e.uri().scheme_str() == Some("https"))
        });
        Ok(Self {
            listen_addr: env.socket_addr("TASK_LISTEN_ADDR", Self::DEFAULT_LISTEN_ADDR)?,
            metrics_addr: env.metrics_addr()?,
            database: env.database_url(Self::DEFAULT_SQLITE_FILE)?,
            pool: env.pool_settings()?,
            token: env.token_config()?,
            logging: env.logging()?,
            worker_threads: env.worker_threads()?,
            cors: env.cors_origins()?,
            limits: ServerLimits::from_env(env, crate::DEFAULT_MAX_REQUEST_BYTES)?,
            auth_service_url,
            auth_tls: todo_shared::tls::client::peer_from_env(env, https)?,
            tls: todo_shared::tls::server_from_env(env)?,
            revocation_max_staleness: revocation_max_staleness(env)?,
            watch: watch_limits(env)?,
            max_tasks_per_user: {
                let expected = "a whole number from 1 to 10000000";
                let max: i64 = env.parse_or("TASK_MAX_TASKS_PER_USER", Self::DEFAULT_MAX_TASKS_PER_USER, expected)?;
                if !(1..=10_000_000).contains(&max) {
                    return Err(ConfigError::new("TASK_MAX_TASKS_PER_USER", format!("expected {expected}, got {max}")));
                }
                max
            },
            rate_per_user: match env.get("TASK_RATE_PER_USER")? {
                None => Some(Self::DEFAULT_RATE_PER_USER),
                Some(raw) => Rate::parse(&raw).map_err(|reason| ConfigError::new("TASK_RATE_PER_USER", reason))?,
            },
            change_retention: env.seconds(
                "TASK_CHANGE_RETENTION",
                Self::DEFAULT_CHANGE_RETENTION,
                60..=366 * 24 * 60 * 60,
            )?,
        })
    }
}

fn watch_limits(env: &Env) -> Result<WatchLimits, ConfigError> {
    let d = WatchLimits::default();
    let count = |var: &'static str, default: usize, max: usize| -> Result<usize, ConfigError> {
        let expected = format!("a whole number from 1 to {max}");
        let n: usize = env.parse_or(var, default, &expected)?;
        if (1..=max).contains(&n) { Ok(n) } else { Err(ConfigError::new(var, format!("expected {expected}"))) }
    };
    Ok(WatchLimits {
        per_user: count("TASK_WATCH_MAX_STREAMS_PER_USER", d.per_user, 1024)?,
        per_process: count("TASK_WATCH_MAX_STREAMS", d.per_process, 1_000_000)?,
        bookmark_interval: env.seconds("TASK_WATCH_BOOKMARK_INTERVAL", d.bookmark_interval, 1..=3600)?,
        max_age: env.seconds("TASK_WATCH_MAX_AGE", d.max_age, 10..=7 * 24 * 3600)?,
        ..d
    })
}

fn auth_service_url(env: &Env) -> Result<Option<String>, ConfigError> {
    let Some(url) = env.get("AUTH_SERVICE_URL")? else { return Ok(None) };
    let parsed = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| ConfigError::new("AUTH_SERVICE_URL", format!("{url:?} is not a URL: {e}")))?;
    match parsed.uri().scheme_str() {
        Some("http" | "https") => Ok(Some(url)),
        _ => Err(ConfigError::new(
            "AUTH_SERVICE_URL",
            format!("expected http://host:port or https://host:port, got {url:?}"),
        )),
    }
}

fn revocation_max_staleness(env: &Env) -> Result<Option<Duration>, ConfigError> {
    let Some(_) = env.get("REVOCATION_MAX_STALENESS")? else { return Ok(None) };
    let staleness = env.seconds("REVOCATION_MAX_STALENESS", Duration::ZERO, 1..=86_400)?;
    if env.get("AUTH_SERVICE_URL")?.is_none() {
        return Err(ConfigError::new(
            "REVOCATION_MAX_STALENESS",
            "needs AUTH_SERVICE_URL: without the feed every RPC would be refused",
        ));
    }
    Ok(Some(staleness))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn config(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        Config::from_env(&Env::from_pairs([("JWT_SECRET", SECRET)].into_iter().chain(pairs.iter().copied())))
    }

    #[test]
    fn the_rate_per_user_is_on_by_default_and_can_be_set_or_switched_off() {
        assert_eq!(config(&[]).unwrap().rate_per_user, Some(Config::DEFAULT_RATE_PER_USER));
        assert_eq!(config(&[("TASK_RATE_PER_USER", "off")]).unwrap().rate_per_user, None);
        assert_eq!(
            config(&[("TASK_RATE_PER_USER", "20/s")]).unwrap().rate_per_user.map(|r| r.to_string()),
            Some("20/s".into())
        );
        assert_eq!(config(&[("TASK_RATE_PER_USER", "lots")]).unwrap_err().var, "TASK_RATE_PER_USER");
        assert_eq!(config(&[]).unwrap().max_tasks_per_user, 100_000);
        assert_eq!(config(&[("TASK_MAX_TASKS_PER_USER", "5")]).unwrap().max_tasks_per_user, 5);
        for bad in ["0", "-1", "many", "10000001"] {
            assert_eq!(
                config(&[("TASK_MAX_TASKS_PER_USER", bad)]).unwrap_err().var,
                "TASK_MAX_TASKS_PER_USER",
                "{bad}"
            );
        }
    }

    #[test]
    fn the_feed_is_optional_and_staleness_needs_it() {
        let plain = config(&[]).unwrap();
        assert_eq!((plain.auth_service_url, plain.revocation_max_staleness), (None, None));
        let url = config(&[("AUTH_SERVICE_URL", "http://127.0.0.1:50051")]).unwrap();
        assert_eq!(url.auth_service_url.as_deref(), Some("http://127.0.0.1:50051"));
        assert_eq!(config(&[("AUTH_SERVICE_URL", "127.0.0.1:50051")]).unwrap_err().var, "AUTH_SERVICE_URL");
        assert_eq!(config(&[("AUTH_SERVICE_URL", "ftp://x")]).unwrap_err().var, "AUTH_SERVICE_URL");
        let err = config(&[("REVOCATION_MAX_STALENESS", "30")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "REVOCATION_MAX_STALENESS: needs AUTH_SERVICE_URL: without the feed every RPC would be refused"
        );
        let strict = config(&[("AUTH_SERVICE_URL", "http://127.0.0.1:50051"), ("REVOCATION_MAX_STALENESS", "30")]);
        assert_eq!(strict.unwrap().revocation_max_staleness, Some(Duration::from_secs(30)));
    }
}
