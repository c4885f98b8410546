//! Test support: fresh databases on PostgreSQL and SQLite, the real services started
//! in-process on `127.0.0.1:0`, generated clients connected to them, and token forgery.
//!
//! PostgreSQL tests need `TEST_DATABASE_URL` to name a server we may create databases on.
//! Without it they fail with one line saying so; `cargo test -- --skip postgres` excludes them
//! explicitly (every PostgreSQL test has `postgres` in its path), and the run counts them as
//! filtered out.

pub mod adversary;
pub mod proxy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::ConnectOptions as _;
use sqlx::postgres::PgConnectOptions;
use todo_contract::auth::v1::auth_service_client::AuthServiceClient;
use todo_contract::task::v1::task_service_client::TaskServiceClient;
use todo_shared::config::{LogFilter, TokenConfig};
use todo_shared::cors::AllowedOrigins;
use todo_shared::db::{DatabaseUrl, Pool, PoolSettings};
use todo_shared::limits::ServerLimits;
use todo_shared::token::{JwtSecret, TokenKeys};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub use todo_contract as pb;

/// The secret every test service shares.
pub const SECRET: &str = "test-secret-that-is-long-enough-for-hs256!";
pub const ISSUER: &str = TokenConfig::DEFAULT_ISSUER;
pub const AUDIENCE: &str = TokenConfig::DEFAULT_AUDIENCE;
/// The browser origin the test servers allow through CORS.
pub const WEB_ORIGIN: &str = "https://app.example.test";

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

/// A service running in-process; stopped when dropped.
pub struct Running {
    pub addr: SocketAddr,
    pub db: TestDb,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).expect("url").connect().await.expect("connect")
    }

    /// Asks the service to shut down gracefully.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the service and waits until it has drained and its server returned.
    pub async fn shutdown(mut self) -> Result<(), tonic::transport::Error> {
        self.stop();
        match self.served.take() {
            Some(served) => served.await.expect("the server task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn token_config() -> TokenConfig {
    TokenConfig {
        secret: JwtSecret::new(SECRET.as_bytes().to_vec()).expect("secret"),
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
    }
}

/// The auth-service configuration tests use (port 0, the given database).
pub fn auth_config(db: &TestDb) -> auth_service::Config {
    auth_service::Config {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        database: db.url.clone(),
        pool: PoolSettings::default(),
        token: token_config(),
        access_token_ttl: auth_service::Config::DEFAULT_TOKEN_TTL,
        log_filter: LogFilter::default(),
        worker_threads: None,
        cors: AllowedOrigins::parse(WEB_ORIGIN).expect("origin"),
        hashing: auth_service::password::HashLimits::default(),
        // Off here: the suite signs up and logs in far faster than any person. Throttling has
        // its own tests, with limits small enough to reach.
        throttle: auth_service::throttle::ThrottleConfig::off(),
        limits: test_limits(auth_service::DEFAULT_MAX_REQUEST_BYTES),
    }
}

/// The production defaults, but a shorter drain so stopping a test server is quick.
pub fn test_limits(max_request_bytes: usize) -> ServerLimits {
    ServerLimits { drain_timeout: Duration::from_secs(5), ..ServerLimits::with_max_request_bytes(max_request_bytes) }
}

pub fn task_config(db: &TestDb) -> task_service::Config {
    task_service::Config {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        database: db.url.clone(),
        pool: PoolSettings::default(),
        token: token_config(),
        log_filter: LogFilter::default(),
        worker_threads: None,
        cors: AllowedOrigins::parse(WEB_ORIGIN).expect("origin"),
        limits: test_limits(task_service::DEFAULT_MAX_REQUEST_BYTES),
    }
}

/// Runs a built service in the background until the returned [`Running`] is dropped, and
/// waits until its health says SERVING.
async fn run_in_background<F>(
    addr: SocketAddr,
    db: TestDb,
    run: impl FnOnce(tokio::sync::oneshot::Receiver<()>) -> F,
) -> Running
where
    F: std::future::Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
{
    let running = spawn_unready(addr, db, run);
    wait_until_serving(&running, "").await;
    running
}

/// Like [`run_in_background`], without waiting for SERVING (for tests of a service whose
/// database is down).
pub fn spawn_unready<F>(
    addr: SocketAddr,
    db: TestDb,
    run: impl FnOnce(tokio::sync::oneshot::Receiver<()>) -> F,
) -> Running
where
    F: std::future::Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(run(stopped));
    Running { addr, db, stop: Some(stop), served: Some(served) }
}

/// Starts auth-service with `config` and waits until it is SERVING.
pub async fn start_auth_with(config: auth_service::Config, db: TestDb) -> Running {
    let app = auth_service::Application::build(config).await.expect("auth-service starts");
    let addr = app.local_addr();
    run_in_background(addr, db, |stopped| app.run_until(async move { drop(stopped.await) })).await
}

pub async fn start_auth(backend: Backend) -> Running {
    let db = TestDb::new(backend).await;
    start_auth_with(auth_config(&db), db).await
}

pub async fn start_tasks_with(config: task_service::Config, db: TestDb) -> Running {
    let app = task_service::Application::build(config).await.expect("task-service starts");
    let addr = app.local_addr();
    run_in_background(addr, db, |stopped| app.run_until(async move { drop(stopped.await) })).await
}

pub async fn start_tasks(backend: Backend) -> Running {
    let db = TestDb::new(backend).await;
    start_tasks_with(task_config(&db), db).await
}

/// Follows the health Watch stream until `service` is SERVING (migrations done, database up).
pub async fn wait_until_serving(running: &Running, service: &str) {
    let mut health = HealthClient::new(running.channel().await);
    let mut stream =
        health.watch(HealthCheckRequest { service: service.to_owned() }).await.expect("health watch").into_inner();
    let wait = async {
        while let Some(update) = stream.message().await.expect("health stream") {
            if update.status == ServingStatus::Serving as i32 {
                return;
            }
        }
        panic!("health stream ended before SERVING");
    };
    tokio::time::timeout(Duration::from_secs(30), wait).await.expect("service became SERVING within 30 s");
}

pub async fn auth_client(running: &Running) -> AuthServiceClient<Channel> {
    AuthServiceClient::new(running.channel().await)
}

pub async fn task_client(running: &Running) -> TaskServiceClient<Channel> {
    TaskServiceClient::new(running.channel().await)
}

/// A user of task-service: an id and a token minted for it.
pub struct Caller {
    pub id: uuid::Uuid,
    pub token: String,
}

/// A fresh user with an hour-long token.
pub fn caller() -> Caller {
    let id = uuid::Uuid::new_v4();
    let token = keys().mint(id, &format!("{id}@example.com"), Duration::from_secs(3600)).expect("mint").token;
    Caller { id, token }
}

/// Creates a task titled `title` for `who` and returns it.
pub async fn create(
    client: &mut TaskServiceClient<Channel>,
    who: &Caller,
    title: &str,
) -> todo_contract::task::v1::Task {
    let request = todo_contract::task::v1::CreateTaskRequest { title: title.into(), ..Default::default() };
    client.create_task(bearer(&who.token, request)).await.expect("create task").into_inner().task.expect("task")
}

/// Wraps `message` in a request with `authorization: Bearer <token>`.
pub fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    with_authorization(&format!("Bearer {token}"), message)
}

/// Wraps `message` in a request with the given raw `authorization` value.
pub fn with_authorization<T>(value: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", value.parse().expect("ASCII metadata"));
    request
}

/// The keys the test services use, for minting tokens with chosen claims.
pub fn keys() -> Arc<TokenKeys> {
    Arc::new(TokenKeys::new(&token_config().secret, ISSUER, AUDIENCE).expect("keys"))
}

pub fn now_secs() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).expect("time")
}

/// Valid claims for `user` (a JSON object), to alter before signing.
pub fn claims_for(user: uuid::Uuid) -> serde_json::Value {
    let now = now_secs();
    serde_json::json!({
        "sub": user.to_string(),
        "email": "someone@example.com",
        "iat": now,
        "exp": now + 3600,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "jti": uuid::Uuid::new_v4().to_string(),
    })
}

/// A JWT with any header `alg`, signed with HMAC-SHA256 over `secret` (or unsigned when
/// `secret` is `None`): the raw material of forged tokens.
pub fn forge(alg: &str, claims: &serde_json::Value, secret: Option<&[u8]>) -> String {
    let header = URL_SAFE_NO_PAD.encode(serde_json::json!({ "alg": alg, "typ": "JWT" }).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let signature = match secret {
        None => String::new(),
        Some(secret) => {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("hmac key");
            mac.update(signing_input.as_bytes());
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        }
    };
    format!("{signing_input}.{signature}")
}

/// The decoded payload of a JWT, without verifying it (to inspect what the server minted).
pub fn payload_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json")
}

/// A catalogue of bad bearer values and tokens, each with a label, for `user`.
pub fn bad_authorizations(user: uuid::Uuid) -> Vec<(&'static str, Option<String>)> {
    let secret = SECRET.as_bytes();
    let good = forge("HS256", &claims_for(user), Some(secret));
    let mut expired = claims_for(user);
    expired["iat"] = serde_json::json!(now_secs() - 7200);
    expired["exp"] = serde_json::json!(now_secs() - 3600);
    let mut wrong_aud = claims_for(user);
    wrong_aud["aud"] = serde_json::json!("someone-else");
    let mut wrong_iss = claims_for(user);
    wrong_iss["iss"] = serde_json::json!("evil-issuer");
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims_for(user),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("hs512");
    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        let mut claims = claims_for(user);
        claims["sub"] = serde_json::json!(uuid::Uuid::new_v4().to_string());
        format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2])
    };
    vec![
        ("no authorization metadata", None),
        ("Basic scheme", Some("Basic dXNlcjpwYXNz".to_owned())),
        ("Bearer with no token", Some("Bearer ".to_owned())),
        ("malformed token", Some("Bearer not-a-jwt".to_owned())),
        ("expired token", Some(format!("Bearer {}", forge("HS256", &expired, Some(secret))))),
        (
            "token signed with another secret",
            Some(format!(
                "Bearer {}",
                forge("HS256", &claims_for(user), Some(b"another-secret-another-secret-another"))
            )),
        ),
        ("alg none", Some(format!("Bearer {}", forge("none", &claims_for(user), None)))),
        ("HS512 token", Some(format!("Bearer {hs512}"))),
        ("tampered payload", Some(format!("Bearer {tampered}"))),
        ("wrong audience", Some(format!("Bearer {}", forge("HS256", &wrong_aud, Some(secret))))),
        ("wrong issuer", Some(format!("Bearer {}", forge("HS256", &wrong_iss, Some(secret))))),
    ]
}

/// Attaches the `authorization` value, if any.
pub fn authorized<T>(authorization: &Option<String>, message: T) -> tonic::Request<T> {
    match authorization {
        Some(value) => with_authorization(value, message),
        None => tonic::Request::new(message),
    }
}

/// The fields named by the `google.rpc.BadRequest` detail of `status`.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt as _;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Generates one `#[tokio::test]` per backend for each scenario, so every behavioural test
/// runs on PostgreSQL and on SQLite.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await;
                }
            )*
        }
    };
}
