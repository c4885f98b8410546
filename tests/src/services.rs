//! Running services: auth-service and task-service configured for tests and started
//! in-process on `127.0.0.1:0`, stopped when dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use todo_shared::config::Logging;
use todo_shared::cors::AllowedOrigins;
use todo_shared::db::PoolSettings;
use todo_shared::limits::ServerLimits;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::{Backend, TestDb, WEB_ORIGIN, token_config};

/// A service running in-process; stopped when dropped.
pub struct Running {
    pub addr: SocketAddr,
    /// Shared, so a restarted service or a second replica can use the same database.
    pub db: Arc<TestDb>,
    /// Where `/metrics` is served, when the config asked for it (`metrics_addr`).
    pub metrics: Option<SocketAddr>,
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
/// The auth-service configuration tests use (port 0, the given database).
pub fn auth_config(db: &TestDb) -> auth_service::Config {
    auth_service::Config {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        metrics_addr: None,
        database: db.url.clone(),
        pool: PoolSettings::default(),
        token: token_config(),
        sessions: auth_service::sessions::SessionPolicy::default(),
        logging: Logging::default(),
        worker_threads: None,
        cors: AllowedOrigins::parse(WEB_ORIGIN).expect("origin"),
        hashing: auth_service::password::HashLimits::default(),
        // Off here: the suite signs up and logs in far faster than any person. Throttling has
        // its own tests, with limits small enough to reach.
        throttle: auth_service::throttle::ThrottleConfig::off(),
        limits: test_limits(auth_service::DEFAULT_MAX_REQUEST_BYTES),
        tls: None,
    }
}

/// The production defaults, but a shorter drain so stopping a test server is quick.
pub fn test_limits(max_request_bytes: usize) -> ServerLimits {
    ServerLimits { drain_timeout: Duration::from_secs(5), ..ServerLimits::with_max_request_bytes(max_request_bytes) }
}

pub fn task_config(db: &TestDb) -> task_service::Config {
    task_service::Config {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        metrics_addr: None,
        database: db.url.clone(),
        pool: PoolSettings::default(),
        token: token_config(),
        logging: Logging::default(),
        worker_threads: None,
        cors: AllowedOrigins::parse(WEB_ORIGIN).expect("origin"),
        limits: test_limits(task_service::DEFAULT_MAX_REQUEST_BYTES),
        auth_service_url: None,
        revocation_max_staleness: None,
        watch: task_service::watch::WatchLimits::default(),
        change_retention: task_service::Config::DEFAULT_CHANGE_RETENTION,
        // Off here, as auth-service's throttles are: the suite is far faster than any person.
        // The rate has its own test.
        rate_per_user: None,
        max_tasks_per_user: task_service::Config::DEFAULT_MAX_TASKS_PER_USER,
        tls: None,
        auth_tls: None,
    }
}

/// Runs a built service in the background until the returned [`Running`] is dropped, and
/// waits until its health says SERVING.
async fn run_in_background<F>(
    addr: SocketAddr,
    db: Arc<TestDb>,
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
    db: impl Into<Arc<TestDb>>,
    run: impl FnOnce(tokio::sync::oneshot::Receiver<()>) -> F,
) -> Running
where
    F: std::future::Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(run(stopped));
    Running { addr, db: db.into(), metrics: None, stop: Some(stop), served: Some(served) }
}

/// Starts auth-service with `config` and waits until it is SERVING.
pub async fn start_auth_with(config: auth_service::Config, db: impl Into<Arc<TestDb>>) -> Running {
    let app = auth_service::Application::build(config).await.expect("auth-service starts");
    let (addr, metrics) = (app.local_addr(), app.metrics_addr());
    let mut running =
        run_in_background(addr, db.into(), |stopped| app.run_until(async move { drop(stopped.await) })).await;
    running.metrics = metrics;
    running
}

pub async fn start_auth(backend: Backend) -> Running {
    let db = TestDb::new(backend).await;
    start_auth_with(auth_config(&db), db).await
}

pub async fn start_tasks_with(config: task_service::Config, db: impl Into<Arc<TestDb>>) -> Running {
    let app = task_service::Application::build(config).await.expect("task-service starts");
    let (addr, metrics) = (app.local_addr(), app.metrics_addr());
    let mut running =
        run_in_background(addr, db.into(), |stopped| app.run_until(async move { drop(stopped.await) })).await;
    running.metrics = metrics;
    running
}

pub async fn start_tasks(backend: Backend) -> Running {
    let db = TestDb::new(backend).await;
    start_tasks_with(task_config(&db), db).await
}

/// auth-service and a task-service that follows its session feed, each with a fresh database.
pub struct Pair {
    pub auth: Running,
    pub tasks: Running,
}

pub async fn start_pair(backend: Backend) -> Pair {
    let auth = start_auth(backend).await;
    let tasks = start_tasks_following(&auth, TestDb::new(backend).await).await;
    Pair { auth, tasks }
}

/// A task-service on `db` following `auth`'s session feed; returns once the feed has caught
/// up (its health entry is SERVING).
pub async fn start_tasks_following(auth: &Running, db: impl Into<Arc<TestDb>>) -> Running {
    let db = db.into();
    let mut config = task_config(&db);
    config.auth_service_url = Some(auth.url());
    let tasks = start_tasks_with(config, db).await;
    wait_until_serving(&tasks, task_service::follower::FEED_HEALTH_NAME).await;
    tasks
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
