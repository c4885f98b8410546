//! Reading configuration from the environment, once, into typed values.
//!
//! Every failure names the variable and says what is wrong with it in one line, so `main`
//! can print it and exit with status 2. Values are looked up through [`Env`], which tests
//! build from pairs instead of mutating the process environment.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::cors::AllowedOrigins;
use crate::db::{DatabaseUrl, PoolSettings};
use crate::token::{JwtSecret, SelfTestFailed, TokenKeys};

/// Exit status for bad configuration (as `sysexits`' EX_USAGE is too obscure, 2 is what
/// shells and init systems already treat as "wrong invocation").
pub const EXIT_BAD_CONFIG: i32 = 2;

/// A variable with a bad value, or a missing required one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub fn new(var: &'static str, reason: impl Into<String>) -> Self {
        Self { var, reason: reason.into() }
    }
}

type Source = Box<dyn Fn(&str) -> Option<OsString> + Send + Sync>;

/// Where configuration values come from.
pub struct Env {
    lookup: Source,
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self { lookup: Box::new(|name| std::env::var_os(name)) }
    }

    /// A fixed set of variables (for tests and tools).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let map: HashMap<String, OsString> =
            pairs.into_iter().map(|(k, v)| (k.to_owned(), OsString::from(v))).collect();
        Self { lookup: Box::new(move |name| map.get(name).cloned()) }
    }

    /// The process environment, with `overrides` taking precedence (for launchers that pick
    /// some values themselves).
    pub fn process_with(overrides: impl IntoIterator<Item = (&'static str, String)>) -> Self {
        let map: HashMap<&'static str, OsString> = overrides.into_iter().map(|(k, v)| (k, OsString::from(v))).collect();
        Self { lookup: Box::new(move |name| map.get(name).cloned().or_else(|| std::env::var_os(name))) }
    }

    /// The variable's value; `None` when it is unset or blank.
    pub fn get(&self, var: &'static str) -> Result<Option<String>, ConfigError> {
        match (self.lookup)(var) {
            None => Ok(None),
            Some(value) => {
                let value = value.into_string().map_err(|_| ConfigError::new(var, "is not valid UTF-8"))?;
                Ok((!value.trim().is_empty()).then_some(value))
            }
        }
    }

    /// A secret: `var`, or the contents of the file `<var>_FILE` names (Docker and Kubernetes
    /// mount secrets as files), without its final line ending. Setting both is refused.
    pub fn secret(&self, var: &'static str) -> Result<Option<String>, ConfigError> {
        let file_var = match var {
            "JWT_SECRET" => "JWT_SECRET_FILE",
            "JWT_VERIFICATION_SECRETS" => "JWT_VERIFICATION_SECRETS_FILE",
            "DATABASE_URL" => "DATABASE_URL_FILE",
            _ => return self.get(var),
        };
        match (self.get(var)?, self.get(file_var)?) {
            (Some(_), Some(_)) => Err(ConfigError::new(file_var, format!("is set and so is {var}: set only one"))),
            (value, None) => Ok(value),
            (None, Some(path)) => {
                let contents = std::fs::read_to_string(path.trim())
                    .map_err(|e| ConfigError::new(file_var, format!("cannot read {}: {e}", path.trim())))?;
                let value = contents.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&contents);
                Ok((!value.trim().is_empty()).then(|| value.to_owned()))
            }
        }
    }

    /// A value parsed with `FromStr`, or `default` when unset.
    pub fn parse_or<T: FromStr>(&self, var: &'static str, default: T, expected: &str) -> Result<T, ConfigError> {
        match self.get(var)? {
            None => Ok(default),
            Some(raw) => {
                raw.trim().parse().map_err(|_| ConfigError::new(var, format!("expected {expected}, got {raw:?}")))
            }
        }
    }

    /// A listen address such as `127.0.0.1:50051` or `[::]:50051`.
    pub fn socket_addr(&self, var: &'static str, default: SocketAddr) -> Result<SocketAddr, ConfigError> {
        self.parse_or(var, default, &format!("an IP address and port such as {default}"))
    }

    /// `METRICS_ADDR`: where `/metrics` is served; unset, there is no endpoint.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.get("METRICS_ADDR")? {
            None => Ok(None),
            Some(raw) => raw.trim().parse().map(Some).map_err(|_| {
                ConfigError::new(
                    "METRICS_ADDR",
                    format!("expected an IP address and port such as 127.0.0.1:9090, got {raw:?}"),
                )
            }),
        }
    }

    /// A whole number of seconds within `range`.
    pub fn seconds(
        &self,
        var: &'static str,
        default: Duration,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        let expected = format!("a whole number of seconds from {} to {}", range.start(), range.end());
        let secs: u64 = self.parse_or(var, default.as_secs(), &expected)?;
        if range.contains(&secs) {
            Ok(Duration::from_secs(secs))
        } else {
            Err(ConfigError::new(var, format!("expected {expected}, got {secs}")))
        }
    }

    /// A plain string with a default.
    pub fn string_or(&self, var: &'static str, default: &str) -> Result<String, ConfigError> {
        Ok(self.get(var)?.map(|s| s.trim().to_owned()).unwrap_or_else(|| default.to_owned()))
    }

    /// `DATABASE_URL`, or the embedded SQLite default at `default_sqlite_file`.
    pub fn database_url(&self, default_sqlite_file: &str) -> Result<DatabaseUrl, ConfigError> {
        match self.secret("DATABASE_URL")? {
            None => Ok(DatabaseUrl::sqlite_file(default_sqlite_file)),
            Some(raw) => DatabaseUrl::parse(raw.trim()).map_err(|reason| ConfigError::new("DATABASE_URL", reason)),
        }
    }

    /// `DATABASE_MAX_CONNECTIONS`, `DATABASE_ACQUIRE_TIMEOUT_MS`, `DATABASE_STATEMENT_TIMEOUT`.
    pub fn pool_settings(&self) -> Result<PoolSettings, ConfigError> {
        let d = PoolSettings::default();
        let max_connections: u32 =
            self.parse_or("DATABASE_MAX_CONNECTIONS", d.max_connections, "a whole number from 1 to 256")?;
        if !(1..=256).contains(&max_connections) {
            return Err(ConfigError::new("DATABASE_MAX_CONNECTIONS", "expected a whole number from 1 to 256"));
        }
        let acquire_ms: u64 = self.parse_or(
            "DATABASE_ACQUIRE_TIMEOUT_MS",
            d.acquire_timeout.as_millis() as u64,
            "a whole number of milliseconds from 10 to 60000",
        )?;
        if !(10..=60_000).contains(&acquire_ms) {
            return Err(ConfigError::new(
                "DATABASE_ACQUIRE_TIMEOUT_MS",
                "expected a whole number of milliseconds from 10 to 60000",
            ));
        }
        Ok(PoolSettings {
            max_connections,
            acquire_timeout: Duration::from_millis(acquire_ms),
            statement_timeout: self.seconds("DATABASE_STATEMENT_TIMEOUT", d.statement_timeout, 1..=3600)?,
        })
    }

    /// `CORS_ALLOWED_ORIGINS`: which browser origins may call the service; none when unset.
    pub fn cors_origins(&self) -> Result<AllowedOrigins, ConfigError> {
        match self.get("CORS_ALLOWED_ORIGINS")? {
            None => Ok(AllowedOrigins::none()),
            Some(raw) => AllowedOrigins::parse(&raw).map_err(|reason| ConfigError::new("CORS_ALLOWED_ORIGINS", reason)),
        }
    }

    /// `TOKIO_WORKER_THREADS`: async runtime worker threads, default one per core. tokio reads
    /// this variable itself and panics on a value it cannot parse, so it is checked here first
    /// and the runtime is then built with the number given explicitly.
    pub fn worker_threads(&self) -> Result<Option<usize>, ConfigError> {
        const EXPECTED: &str = "a whole number from 1 to 1024";
        let Some(raw) = self.get("TOKIO_WORKER_THREADS")? else { return Ok(None) };
        match raw.trim().parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(Some(n)),
            _ => Err(ConfigError::new("TOKIO_WORKER_THREADS", format!("expected {EXPECTED}, got {raw:?}"))),
        }
    }

    /// `RUST_LOG` and `LOG_FORMAT`, validated now so a typo stops start-up instead of
    /// silencing the logs.
    pub fn logging(&self) -> Result<Logging, ConfigError> {
        let raw = self.string_or("RUST_LOG", Logging::DEFAULT)?;
        tracing_subscriber::EnvFilter::builder()
            .parse(&raw)
            .map_err(|e| ConfigError::new("RUST_LOG", format!("invalid filter {raw:?}: {e}")))?;
        let format = match self.get("LOG_FORMAT")?.as_deref().map(str::trim) {
            None | Some("" | "text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(ConfigError::new("LOG_FORMAT", format!("expected text or json, got {other:?}"))),
        };
        Ok(Logging { filter: raw, format })
    }

    /// `JWT_SECRET`, `JWT_ISSUER` and `JWT_AUDIENCE`.
    pub fn token_config(&self) -> Result<TokenConfig, ConfigError> {
        let secret = self.secret("JWT_SECRET")?.ok_or_else(|| {
            ConfigError::new(
                "JWT_SECRET",
                "is not set (or blank): set it to a random string of at least 32 bytes (e.g. `openssl rand -base64 48`)",
            )
        })?;
        // Both services must hold the same bytes: a newline kept by one (from `$(cat file)` in
        // one shell and a file read raw in another) would make every token fail on the other.
        if secret.trim() != secret {
            return Err(ConfigError::new(
                "JWT_SECRET",
                "begins or ends with whitespace (a stray newline?): remove it, on both services",
            ));
        }
        let secret = JwtSecret::new(secret.into_bytes()).map_err(|e| ConfigError::new("JWT_SECRET", e.to_string()))?;
        let mut verification_secrets = Vec::new();
        for (n, raw) in self.secret("JWT_VERIFICATION_SECRETS")?.unwrap_or_default().split(',').enumerate() {
            let raw = raw.trim();
            if raw.is_empty() {
                continue;
            }
            let secret = JwtSecret::new(raw.as_bytes().to_vec())
                .map_err(|e| ConfigError::new("JWT_VERIFICATION_SECRETS", format!("secret #{}: {e}", n + 1)))?;
            verification_secrets.push(secret);
        }
        Ok(TokenConfig {
            secret,
            verification_secrets,
            issuer: self.string_or("JWT_ISSUER", TokenConfig::DEFAULT_ISSUER)?,
            audience: self.string_or("JWT_AUDIENCE", TokenConfig::DEFAULT_AUDIENCE)?,
        })
    }
}

/// How the service logs: a validated `tracing` filter directive string, and the line format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    filter: String,
    pub format: LogFormat,
}

/// `LOG_FORMAT`: lines for people, or one JSON object per line for a log collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Logging {
    pub const DEFAULT: &'static str = "info";

    pub fn filter(&self) -> &str {
        &self.filter
    }
}

impl Default for Logging {
    fn default() -> Self {
        Self { filter: Self::DEFAULT.to_owned(), format: LogFormat::Text }
    }
}

/// What both services need to agree on about tokens.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// `JWT_SECRET`: signs (auth-service) and verifies.
    pub secret: JwtSecret,
    /// `JWT_VERIFICATION_SECRETS`: comma-separated secrets that only verify (key rotation).
    pub verification_secrets: Vec<JwtSecret>,
    pub issuer: String,
    pub audience: String,
}

impl TokenConfig {
    pub const DEFAULT_ISSUER: &'static str = "todo-grpc-auth";
    pub const DEFAULT_AUDIENCE: &'static str = "todo-grpc";

    /// The keys these settings describe.
    pub fn keys(&self) -> Result<TokenKeys, SelfTestFailed> {
        TokenKeys::with_verification_secrets(&self.secret, &self.verification_secrets, &self.issuer, &self.audience)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn missing_and_short_secrets_name_the_variable() {
        let err = Env::from_pairs([]).token_config().unwrap_err();
        assert_eq!(err.var, "JWT_SECRET");
        let err = Env::from_pairs([("JWT_SECRET", "short")]).token_config().unwrap_err();
        assert_eq!(err.to_string(), "JWT_SECRET: must be at least 32 bytes long (got 5)");
    }

    #[test]
    fn defaults_apply_when_unset_or_blank() {
        let env = Env::from_pairs([("JWT_SECRET", SECRET), ("JWT_ISSUER", "  ")]);
        let token = env.token_config().unwrap();
        assert_eq!(token.issuer, TokenConfig::DEFAULT_ISSUER);
        assert_eq!(token.audience, TokenConfig::DEFAULT_AUDIENCE);
    }

    #[test]
    fn bad_values_are_one_line_naming_the_variable() {
        let env = Env::from_pairs([("ADDR", "localhost"), ("TTL", "0"), ("RUST_LOG", "info,[")]);
        let default: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(env.socket_addr("ADDR", default).unwrap_err().var, "ADDR");
        let err = env.seconds("TTL", Duration::from_secs(5), 1..=10).unwrap_err();
        assert_eq!(err.to_string(), "TTL: expected a whole number of seconds from 1 to 10, got 0");
        assert_eq!(env.logging().unwrap_err().var, "RUST_LOG");
        let env = Env::from_pairs([("LOG_FORMAT", "yaml")]);
        assert_eq!(env.logging().unwrap_err().to_string(), "LOG_FORMAT: expected text or json, got \"yaml\"");
        assert_eq!(Env::from_pairs([("LOG_FORMAT", "json")]).logging().unwrap().format, LogFormat::Json);
        assert_eq!(Env::from_pairs([] as [(&str, &str); 0]).logging().unwrap().format, LogFormat::Text);
    }

    #[test]
    fn database_url_defaults_to_sqlite_and_rejects_unknown_schemes() {
        let env = Env::from_pairs([]);
        assert!(matches!(env.database_url("data/x.db").unwrap(), DatabaseUrl::Sqlite(_)));
        let env = Env::from_pairs([("DATABASE_URL", "mysql://localhost/x")]);
        assert_eq!(env.database_url("data/x.db").unwrap_err().var, "DATABASE_URL");
    }

    #[test]
    fn urls_that_can_never_work_are_refused_at_start() {
        for (url, reason) in [
            (
                "postgres://u@127.0.0.1/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
                "sslrootcert=/nonexistent/ca.pem: cannot read it",
            ),
            ("sqlite:", "names no SQLite file"),
            ("sqlite://", "names no SQLite file"),
        ] {
            let err = Env::from_pairs([("DATABASE_URL", url)]).database_url("data/x.db").unwrap_err();
            assert!(err.to_string().starts_with(&format!("DATABASE_URL: {reason}")), "{url}: {err}");
        }
        for url in [
            "postgres://u@127.0.0.1/db?sslmode=prefer",
            "postgres://u@127.0.0.1/db?sslmode=require",
            "postgres://u@127.0.0.1/db",
            "sqlite::memory:",
        ] {
            assert!(Env::from_pairs([("DATABASE_URL", url)]).database_url("data/x.db").is_ok(), "{url}");
        }
        // A root certificate that can be read is accepted (percent-encoded or not).
        let ca = std::env::temp_dir().join(format!("todo-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "not checked at start-up").unwrap();
        let encoded = ca.display().to_string().replace('/', "%2F");
        for path in [ca.display().to_string(), encoded] {
            let url = format!("postgres://u@localhost/db?sslmode=verify-full&sslrootcert={path}");
            assert!(Env::from_pairs([("DATABASE_URL", url.as_str())]).database_url("data/x.db").is_ok(), "{url}");
        }
        std::fs::remove_file(&ca).unwrap();
    }

    #[test]
    fn a_secret_with_surrounding_whitespace_is_refused() {
        let good = "0123456789abcdef0123456789abcdef";
        assert!(Env::from_pairs([("JWT_SECRET", good)]).token_config().is_ok());
        for padded in [format!("{good}\n"), format!(" {good}"), format!("{good}\t")] {
            let err = Env::from_pairs([("JWT_SECRET", padded.as_str())]).token_config().unwrap_err();
            assert!(err.to_string().contains("whitespace"), "{padded:?}: {err}");
        }
        let blank = Env::from_pairs([("JWT_SECRET", "    ")]).token_config().unwrap_err();
        assert!(blank.to_string().contains("is not set (or blank)"), "{blank}");
    }

    #[test]
    fn secrets_come_from_the_variable_or_a_file_without_its_line_ending() {
        let dir = std::env::temp_dir().join(format!("todo-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = "0123456789abcdef0123456789abcdef";
        let file = dir.join("jwt-secret");
        for contents in [format!("{good}\n"), format!("{good}\r\n"), good.to_owned()] {
            std::fs::write(&file, &contents).unwrap();
            let env = Env::from_pairs([("JWT_SECRET_FILE", file.to_str().unwrap())]);
            assert_eq!(env.secret("JWT_SECRET").unwrap().as_deref(), Some(good), "{contents:?}");
            assert!(env.token_config().is_ok());
        }
        std::fs::write(&file, format!("{good}\n\n")).unwrap();
        let env = Env::from_pairs([("JWT_SECRET_FILE", file.to_str().unwrap())]);
        assert!(env.token_config().unwrap_err().to_string().contains("whitespace"), "one line ending only");

        let both = Env::from_pairs([("JWT_SECRET", good), ("JWT_SECRET_FILE", file.to_str().unwrap())]);
        assert_eq!(both.token_config().unwrap_err().var, "JWT_SECRET_FILE");
        let missing = Env::from_pairs([("DATABASE_URL_FILE", "/nonexistent/db-url")]);
        let err = missing.database_url("data/x.db").unwrap_err();
        assert_eq!(err.var, "DATABASE_URL_FILE");
        assert!(err.to_string().starts_with("DATABASE_URL_FILE: cannot read /nonexistent/db-url: "), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn metrics_are_served_only_where_asked_and_a_bad_address_is_refused() {
        assert_eq!(Env::from_pairs([]).metrics_addr().unwrap(), None);
        let addr = Env::from_pairs([("METRICS_ADDR", "0.0.0.0:9464")]).metrics_addr().unwrap();
        assert_eq!(addr, Some("0.0.0.0:9464".parse().unwrap()));
        let err = Env::from_pairs([("METRICS_ADDR", ":9464")]).metrics_addr().unwrap_err();
        assert_eq!(
            err.to_string(),
            "METRICS_ADDR: expected an IP address and port such as 127.0.0.1:9090, got \":9464\""
        );
    }

    #[test]
    fn a_bad_listen_address_names_the_services_own_default() {
        let env = Env::from_pairs([("TASK_LISTEN_ADDR", "localhost")]);
        let err = env.socket_addr("TASK_LISTEN_ADDR", "127.0.0.1:50052".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("such as 127.0.0.1:50052"), "{err}");
    }

    #[test]
    fn verification_secrets_are_a_comma_separated_list_each_long_enough() {
        let two = format!("{SECRET}1,  {SECRET}2 ,");
        let config = Env::from_pairs([("JWT_SECRET", SECRET), ("JWT_VERIFICATION_SECRETS", two.as_str())]);
        assert_eq!(config.token_config().unwrap().verification_secrets.len(), 2);
        let short = Env::from_pairs([("JWT_SECRET", SECRET), ("JWT_VERIFICATION_SECRETS", "short")]);
        let err = short.token_config().unwrap_err();
        assert_eq!(err.to_string(), "JWT_VERIFICATION_SECRETS: secret #1: must be at least 32 bytes long (got 5)");
    }
}
