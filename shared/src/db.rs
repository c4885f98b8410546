//! The database connection: backend chosen once from the URL scheme, a lazily connecting pool,
//! embedded migrations, and how database failures become gRPC statuses.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{SqlSafeStr, Sqlite, SqlitePool};

pub use crate::pg_pool::{PgConn, PostgresPool};
use tonic::Status;

/// Which database a service talks to, from `DATABASE_URL`.
#[derive(Clone)]
pub enum DatabaseUrl {
    Postgres(PgConnectOptions),
    Sqlite(SqliteConnectOptions),
}

impl DatabaseUrl {
    /// Parses `postgres://…`, `postgresql://…` or `sqlite:…` (`sqlite://path`, `sqlite::memory:`).
    pub fn parse(url: &str) -> Result<Self, String> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
        match scheme.as_str() {
            "postgres" | "postgresql" => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|e| format!("not a valid PostgreSQL URL: {}", redact(&e.to_string())))?;
                // TLS (rustls) follows libpq's `sslmode`: `prefer` (the default) uses it when the
                // server offers it; `require` insists; `verify-ca` and `verify-full` also check
                // the certificate against `sslrootcert` (or the bundled Mozilla roots), and
                // `verify-full` its name. A root certificate file that cannot be read would
                // fail every connection: refused now, not retried as if the database were down.
                if let Some(path) = query_parameter(url, "sslrootcert")
                    && let Err(err) = std::fs::File::open(&path)
                {
                    return Err(format!("sslrootcert={path}: cannot read it: {err}"));
                }
                Ok(Self::Postgres(options))
            }
            "sqlite" => {
                let options =
                    SqliteConnectOptions::from_str(url).map_err(|e| format!("not a valid SQLite URL: {e}"))?;
                // `sqlite:` alone would be a private temporary database, lost at every restart.
                if options.get_filename().as_os_str().is_empty() {
                    return Err("names no SQLite file: use sqlite://path/to/file.db (or sqlite::memory: for a \
                                throw-away store)"
                        .to_owned());
                }
                Ok(Self::Sqlite(options))
            }
            _ => Err("must start with postgres://, postgresql:// or sqlite:".to_owned()),
        }
    }

    /// An SQLite database file, created (with its directory) on first use.
    pub fn sqlite_file(path: impl AsRef<Path>) -> Self {
        Self::Sqlite(SqliteConnectOptions::new().filename(path.as_ref()))
    }
}

/// The percent-decoded value of `name` in `url`'s query string, if present.
fn query_parameter(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned())
    })
}

/// Error texts from URL parsing may quote the URL; never let a password through.
fn redact(text: &str) -> String {
    if text.contains('@') {
        "check the user, password, host, port and database parts".to_owned()
    } else {
        text.to_owned()
    }
}

impl fmt::Debug for DatabaseUrl {
    // Never prints credentials: only where the data lives.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(o) => {
                write!(f, "postgres://{}:{}/{}", o.get_host(), o.get_port(), o.get_database().unwrap_or(""))
            }
            Self::Sqlite(o) => write!(f, "sqlite:{}", o.get_filename().display()),
        }
    }
}

/// Pool sizing and timeouts.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long an RPC may wait for a connection before it gets UNAVAILABLE. Short, so an
    /// exhausted pool or a dead database turns into a fast, retryable error, not a hang.
    pub acquire_timeout: Duration,
    /// Server-side cap on one statement (PostgreSQL `statement_timeout`).
    pub statement_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self { max_connections: 8, acquire_timeout: Duration::from_secs(2), statement_timeout: Duration::from_secs(5) }
    }
}

/// A connection pool for one of the two backends.
#[derive(Clone, Debug)]
pub enum Pool {
    Postgres(PostgresPool),
    Sqlite(SqlitePool),
}

impl Pool {
    /// Builds the pool without connecting: a database that is down at start-up is retried by
    /// [`crate::supervisor::supervise_database`], not fatal.
    pub fn connect_lazy(url: &DatabaseUrl, settings: &PoolSettings) -> std::io::Result<Self> {
        match url {
            DatabaseUrl::Postgres(options) => {
                let timeout_ms = settings.statement_timeout.as_millis().to_string();
                let options = options.clone().options([("statement_timeout", timeout_ms.as_str())]);
                // bb8 with our manager, not sqlx's pool: see `pg_pool` for the round trip it saves.
                let pool = PostgresPool::new(options, settings.max_connections, settings.acquire_timeout);
                Ok(Self::Postgres(pool))
            }
            DatabaseUrl::Sqlite(options) => {
                let file = options.get_filename();
                let in_memory = is_in_memory(file);
                // A `file:` name is an SQLite URI, opened by SQLite itself: not a path to create.
                if !in_memory && !file.to_string_lossy().starts_with("file:") {
                    create_private(file)
                        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
                }
                let options = options
                    .clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: an acknowledged write survives power loss, as on PostgreSQL.
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    // SQLite has one writer at a time; others wait this long instead of failing.
                    .busy_timeout(settings.statement_timeout);
                let mut pool = PoolOptions::<Sqlite>::new()
                    .max_connections(settings.max_connections)
                    .acquire_timeout(settings.acquire_timeout);
                if in_memory {
                    // Every connection to `:memory:` is its own database: keep exactly one,
                    // forever.
                    pool = pool.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
                }
                Ok(Self::Sqlite(pool.connect_lazy_with(options)))
            }
        }
    }

    /// Registers the pool's figures (`todo_db_pool_*`). SQLite's pool (sqlx's) reports its
    /// connections; the wait and acquire figures are the PostgreSQL pool's, which is ours.
    pub fn register_metrics(&self, metrics: &crate::metrics::Metrics) {
        use crate::metrics::Sampled;
        match self {
            Self::Postgres(pool) => pool.register_metrics(metrics),
            Self::Sqlite(pool) => {
                let open = pool.clone();
                metrics.sample(Sampled::gauge("todo_db_pool_connections", "Database connections open.", move || {
                    f64::from(open.size())
                }));
                let idle = pool.clone();
                metrics.sample(Sampled::gauge(
                    "todo_db_pool_idle_connections",
                    "Open database connections not lent.",
                    move || idle.num_idle() as f64,
                ));
                let max = f64::from(pool.options().get_max_connections());
                metrics.sample(Sampled::gauge(
                    "todo_db_pool_max_connections",
                    "The pool's size limit (DATABASE_MAX_CONNECTIONS).",
                    move || max,
                ));
            }
        }
    }

    /// Applies the backend's embedded migrations.
    pub async fn migrate(&self, migrations: &Migrations) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Self::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                conn.retire();
                // `run_direct` is what `run` calls; `run(&mut *conn)` trips the compiler's "Acquire
                // is not general enough" inside a spawned task (sqlx documents the workaround).
                let conn: &mut sqlx::PgConnection = &mut conn;
                migrations.migrator(migrations.postgres).run_direct(None, conn, false).await
            }
            Self::Sqlite(pool) => migrations.migrator(migrations.sqlite).run(pool).await,
        }
    }

    /// Whether the database answers a query within `within`. On PostgreSQL a connection that
    /// was lent but then failed or timed out marks the others stale (after a restart or a
    /// network cut they are all dead); a busy pool that lends none within its acquire timeout
    /// says nothing about them.
    pub async fn is_reachable(&self, within: Duration) -> bool {
        match self {
            Self::Postgres(pool) => {
                let Ok(mut conn) = pool.acquire().await else { return false };
                let answered = tokio::time::timeout(within, sqlx::query("SELECT 1").execute(&mut conn)).await;
                let up = matches!(answered, Ok(Ok(_)));
                if !up {
                    pool.forget_idle();
                }
                up
            }
            Self::Sqlite(pool) => {
                matches!(tokio::time::timeout(within, sqlx::query("SELECT 1").execute(pool)).await, Ok(Ok(_)))
            }
        }
    }

    pub async fn close(&self) {
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Sqlite(pool) => pool.close().await,
        }
    }
}

/// `sqlite::memory:` reaches here as `file:sqlx-in-memory-<n>` (sqlx names each in-memory
/// database so its connections can share it).
fn is_in_memory(file: &Path) -> bool {
    let name = file.to_string_lossy();
    name.is_empty() || name.contains(":memory:") || name.starts_with("file:sqlx-in-memory-")
}

/// Creates a new database file's directory and the file itself, readable by the service's
/// user only: it holds emails and password hashes. (SQLite gives the `-wal` and `-shm` files
/// the database file's permissions.) An existing file or directory is left exactly as it is,
/// not even opened.
fn create_private(file: &Path) -> std::io::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(file) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// One embedded migration file.
#[derive(Debug, Clone, Copy)]
pub struct MigrationFile {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

/// A service's migrations for both backends.
///
/// Each service records its migrations in its own table (`table`), so two services can share
/// one database without mistaking each other's history for missing migrations.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub table: &'static str,
    pub postgres: &'static [MigrationFile],
    pub sqlite: &'static [MigrationFile],
}

impl Migrations {
    fn migrator(&self, files: &'static [MigrationFile]) -> Migrator {
        let migrations = files
            .iter()
            .map(|f| {
                Migration::new(
                    f.version,
                    Cow::Borrowed(f.description),
                    MigrationType::Simple,
                    f.sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        let mut migrator = Migrator::with_migrations(migrations);
        migrator.dangerous_set_table_name(self.table);
        migrator
    }
}

/// What a database failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database is down, unreachable, overloaded or timed out: retry later.
    Unavailable,
    /// A concurrent transaction won (serialization failure, deadlock): retry the operation.
    Conflict,
    /// A unique constraint was violated.
    UniqueViolation,
    /// Anything else: a bug or a schema problem.
    Internal,
}

/// Classifies `err` by what a client can do about it.
pub fn classify(err: &sqlx::Error) -> Failure {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Failure::Unavailable,
        sqlx::Error::Database(db) => {
            if db.is_unique_violation() {
                return Failure::UniqueViolation;
            }
            let code = db.code().unwrap_or_default();
            // A PostgreSQL SQLSTATE is always five characters; SQLite's (extended) result
            // codes are numbers below 10,000. Telling them apart by shape matters: many
            // SQLSTATEs are all digits too (22021 has 5 in its low byte, like SQLITE_BUSY).
            if code.len() == 5 {
                match code.as_ref() {
                    // serialization_failure, deadlock_detected.
                    "40001" | "40P01" => Failure::Conflict,
                    // query_canceled (statement_timeout), admin_shutdown, crash_shutdown,
                    // cannot_connect_now, too_many_connections, insufficient_resources.
                    "57014" | "57P01" | "57P02" | "57P03" | "53300" | "53000" => Failure::Unavailable,
                    // Class 08: connection exceptions.
                    c if c.starts_with("08") => Failure::Unavailable,
                    _ => Failure::Internal,
                }
            } else {
                // SQLITE_BUSY and SQLITE_LOCKED with their extended codes (low byte 5 or 6).
                match code.parse::<i32>() {
                    Ok(n) if matches!(n & 0xff, 5 | 6) => Failure::Unavailable,
                    _ => Failure::Internal,
                }
            }
        }
        _ => Failure::Internal,
    }
}

/// The status for a database failure that the service did not handle itself. Internal
/// failures are logged with their cause; the client never sees SQL or driver text.
pub fn status_for(err: &sqlx::Error) -> Status {
    match classify(err) {
        Failure::Unavailable => {
            tracing::warn!(error = %err, "database unavailable");
            Status::unavailable("the database is unavailable; retry with back-off")
        }
        Failure::Conflict => {
            tracing::info!(error = %err, "transaction conflict");
            Status::aborted("a concurrent change conflicted with this one; retry")
        }
        Failure::UniqueViolation | Failure::Internal => {
            tracing::error!(error = %err, "database error");
            Status::internal("internal error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_sqlite_database_is_private_to_the_services_user() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = std::env::temp_dir().join(format!("todo-db-perms-{}", uuid::Uuid::new_v4()));
        let file = root.join("data").join("x.db");
        let pool = Pool::connect_lazy(&DatabaseUrl::sqlite_file(&file), &PoolSettings::default()).unwrap();
        assert!(pool.is_reachable(Duration::from_secs(5)).await);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root.join("data")), 0o700);
        assert_eq!(mode(&file), 0o600);
        pool.close().await;
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[tokio::test]
    async fn an_in_memory_database_creates_no_file_and_keeps_one_connection() {
        let DatabaseUrl::Sqlite(options) = DatabaseUrl::parse("sqlite::memory:").unwrap() else { panic!() };
        let name = options.get_filename().to_owned();
        assert!(is_in_memory(&name), "{name:?}");
        let pool = Pool::connect_lazy(&DatabaseUrl::Sqlite(options), &PoolSettings::default()).unwrap();
        assert!(pool.is_reachable(Duration::from_secs(5)).await);
        assert!(!name.exists(), "{name:?} was created on disk");
        pool.close().await;
    }

    #[test]
    fn debug_never_prints_the_password() {
        let url = DatabaseUrl::parse("postgres://user:hunter2@127.0.0.1:5432/app").unwrap();
        let shown = format!("{url:?}");
        assert_eq!(shown, "postgres://127.0.0.1:5432/app");
    }

    #[test]
    fn malformed_urls_are_refused() {
        assert!(DatabaseUrl::parse("postgres://u:p@host:notaport/db").is_err());
        assert!(DatabaseUrl::parse("http://x").is_err());
        assert!(DatabaseUrl::parse("sqlite::memory:").is_ok());
    }
}
