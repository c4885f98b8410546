//! Database fixtures: the backend a test runs on and a fresh database of its own, dropped
//! (PostgreSQL) or deleted (SQLite) afterwards, with helpers to arrange and inspect its rows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use sqlx::ConnectOptions as _;
use sqlx::postgres::PgConnectOptions;
use todo_shared::db::{DatabaseUrl, Pool, PoolSettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The URL of the PostgreSQL server to create test databases on. A run without one fails
/// rather than report PostgreSQL tests as passed that never ran.
fn postgres_admin_url() -> String {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "TEST_DATABASE_URL is not set: point it at a PostgreSQL server the tests may create databases on \
             (postgres://postgres@127.0.0.1:5432/postgres), or exclude the PostgreSQL tests explicitly with \
             `cargo test --workspace -- --skip postgres` (they are then counted as filtered out)"
        ),
    }
}

/// Checks that tests on `backend` can run here: fails the test with one clear line when
/// PostgreSQL's are asked for without `TEST_DATABASE_URL`.
pub fn require(backend: Backend) {
    if backend == Backend::Postgres {
        postgres_admin_url();
    }
}

/// Logs to stderr when `TEST_LOG` is set (e.g. `TEST_LOG=debug`); quiet otherwise.
fn init_logging() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A database of its own for one test, dropped (PostgreSQL) or deleted (SQLite) afterwards.
pub struct TestDb {
    pub url: DatabaseUrl,
    /// A pool of the test's own, for arranging and asserting on database state.
    pub pool: Pool,
    cleanup: Cleanup,
}

enum Cleanup {
    Postgres { admin: Box<PgConnectOptions>, name: String },
    Sqlite { dir: PathBuf },
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        init_logging();
        match backend {
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let admin = PgConnectOptions::from_str(&admin_url).expect("TEST_DATABASE_URL is not a PostgreSQL URL");
                let name = format!("todo_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = admin.connect().await.expect("cannot connect to TEST_DATABASE_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("CREATE DATABASE failed");
                let url = DatabaseUrl::Postgres(admin.clone().database(&name));
                let pool = Pool::connect_lazy(&url, &PoolSettings::default()).expect("pool");
                Self { url, pool, cleanup: Cleanup::Postgres { admin: Box::new(admin), name } }
            }
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("todo-test-{}", uuid::Uuid::new_v4().simple()));
                let url = DatabaseUrl::sqlite_file(dir.join("test.db"));
                let pool = Pool::connect_lazy(&url, &PoolSettings::default()).expect("pool");
                Self { url, pool, cleanup: Cleanup::Sqlite { dir } }
            }
        }
    }

    /// The PostgreSQL server's address (for putting a proxy in front of it).
    pub fn postgres_addr(&self) -> SocketAddr {
        let DatabaseUrl::Postgres(options) = &self.url else { panic!("not a PostgreSQL database") };
        let host = match options.get_host() {
            "localhost" => "127.0.0.1",
            host => host,
        };
        format!("{host}:{}", options.get_port()).parse().expect("TEST_DATABASE_URL names an IP address and port")
    }

    /// This database's URL, reached through `addr` instead.
    pub fn url_via(&self, addr: SocketAddr) -> DatabaseUrl {
        let DatabaseUrl::Postgres(options) = &self.url else { panic!("not a PostgreSQL database") };
        DatabaseUrl::Postgres(options.clone().host(&addr.ip().to_string()).port(addr.port()))
    }

    /// Runs a query returning one integer (`count(*)` and the like). `$1`, if present, is bound
    /// to `param`.
    pub async fn scalar(&self, sql: &str, param: Option<uuid::Uuid>) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.pool {
            Pool::Postgres(pool) => {
                let q = sqlx::query_scalar::<_, i64>(sql);
                let q = if let Some(p) = param { q.bind(p) } else { q };
                q.fetch_one(&mut pool.acquire().await.expect("connection")).await.expect("scalar query")
            }
            Pool::Sqlite(pool) => {
                let q = sqlx::query_scalar::<_, i64>(sql);
                let q = if let Some(p) = param { q.bind(p) } else { q };
                q.fetch_one(pool).await.expect("scalar query")
            }
        }
    }

    /// Runs a query returning one text value, with `$1` bound to `param`.
    pub async fn text(&self, sql: &str, param: uuid::Uuid) -> String {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.pool {
            Pool::Postgres(pool) => sqlx::query_scalar(sql)
                .bind(param)
                .fetch_one(&mut pool.acquire().await.expect("connection"))
                .await
                .expect("text query"),
            Pool::Sqlite(pool) => sqlx::query_scalar(sql).bind(param).fetch_one(pool).await.expect("text query"),
        }
    }

    /// Executes a statement with `$1` bound to `param` and `$2` to `text`, if given.
    pub async fn execute(&self, sql: &str, param: uuid::Uuid, text: Option<&str>) -> u64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.pool {
            Pool::Postgres(pool) => {
                let q = sqlx::query(sql).bind(param);
                let q = if let Some(t) = text { q.bind(t) } else { q };
                q.execute(&mut pool.acquire().await.expect("connection")).await.expect("execute").rows_affected()
            }
            Pool::Sqlite(pool) => {
                let q = sqlx::query(sql).bind(param);
                let q = if let Some(t) = text { q.bind(t) } else { q };
                q.execute(pool).await.expect("execute").rows_affected()
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin, name } => {
                // Drop runs inside the test's runtime, which cannot block on async work: use a
                // thread with a runtime of its own. FORCE ends the services' open connections.
                let admin = (**admin).clone();
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let dropped = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    rt.block_on(async move {
                        let mut conn = admin.connect().await?;
                        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                    })
                })
                .join();
                if !matches!(dropped, Ok(Ok(()))) {
                    eprintln!("warning: could not drop test database {name}");
                }
            }
        }
    }
}
