//! Server limits under a database that stops answering (a table locked by the test): load
//! shedding, the per-request deadline, pool exhaustion, and shutdown with calls in flight.
//! PostgreSQL only: a lock held from another session is how a real database gets stuck.

use std::time::Duration;

use todo_contract::task::v1::{CreateTaskRequest, ListTasksRequest};
use todo_shared::db::{DatabaseUrl, PoolSettings};
use todo_tests::adversary::raw_h2_status;
use todo_tests::*;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt as _;

fn token() -> String {
    let user = uuid::Uuid::new_v4();
    keys().mint(user, "limits@example.com", Duration::from_secs(600)).unwrap().token
}

/// A session of its own (not from the service's pool) holding `tasks` exclusively: every task
/// query waits behind it until [`TableLock::release`] or until it is dropped (the socket
/// closes, PostgreSQL rolls back).
struct TableLock(sqlx::PgConnection);

impl TableLock {
    async fn release(mut self) {
        sqlx::query("ROLLBACK").execute(&mut self.0).await.unwrap();
    }
}

async fn lock_tasks(db: &TestDb) -> TableLock {
    use sqlx::ConnectOptions as _;
    let DatabaseUrl::Postgres(options) = &db.url else { panic!("PostgreSQL only") };
    let mut conn = options.connect().await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE").execute(&mut conn).await.unwrap();
    TableLock(conn)
}

/// Waits until `n` sessions of the test database are blocked on a lock.
async fn until_blocked(db: &TestDb, n: i64) {
    for _ in 0..200 {
        let waiting = db
            .scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                None,
            )
            .await;
        if waiting >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{n} queries never blocked on the lock");
}

async fn list(tasks: &Running, token: &str) -> Result<usize, tonic::Status> {
    let mut client = task_client(tasks).await;
    client.list_tasks(bearer(token, ListTasksRequest::default())).await.map(|r| r.into_inner().tasks.len())
}

async fn started(config: task_service::Config, db: TestDb, token: &str) -> Running {
    let tasks = start_tasks_with(config, db).await;
    // The first query creates nothing but proves the table and the token work.
    let mut client = task_client(&tasks).await;
    client.create_task(bearer(token, CreateTaskRequest { title: "one".into(), ..Default::default() })).await.unwrap();
    tasks
}

/// A task-service with default limits, its one task created, and then the `tasks` table locked.
async fn started_and_stuck() -> (Running, String, TableLock) {
    let db = TestDb::new(Backend::Postgres).await;
    let token = token();
    let tasks = started(task_config(&db), db, &token).await;
    let lock = lock_tasks(&tasks.db).await;
    (tasks, token, lock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_at_once_health_still_answers_and_a_stuck_call_hits_the_deadline_on_postgres() {
    require(Backend::Postgres);
    let db = TestDb::new(Backend::Postgres).await;
    let mut config = task_config(&db);
    config.limits.max_in_flight = 2;
    config.limits.request_timeout = Duration::from_secs(2);
    config.metrics_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let token = token();
    let tasks = started(config, db, &token).await;

    let lock = lock_tasks(&tasks.db).await;
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let (addr, token) = (tasks.url(), token.clone());
            tokio::spawn(async move {
                let mut client =
                    todo_tests::pb::task::v1::task_service_client::TaskServiceClient::connect(addr).await.unwrap();
                client.list_tasks(bearer(&token, ListTasksRequest::default())).await.map(|_| ()).unwrap_err()
            })
        })
        .collect();
    until_blocked(&tasks.db, 2).await;

    // The third call finds both slots taken: refused at once, with a retry hint.
    let started_at = std::time::Instant::now();
    let shed = list(&tasks, &token).await.unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted, "{shed:?}");
    assert!(shed.get_details_retry_info().is_some(), "RetryInfo attached");
    assert!(started_at.elapsed() < Duration::from_secs(1), "refused without queueing");
    // Operators see the saturation: both slots taken, one call shed, counted under its code.
    let metrics = scrape(tasks.metrics.expect("metrics served")).await;
    assert_eq!(metrics.value("todo_requests_in_flight", &[]), Some(2.0), "{}", metrics.text);
    assert_eq!(metrics.value("todo_requests_shed_total", &[]), Some(1.0), "{}", metrics.text);
    let shed_calls = [("grpc_method", "ListTasks"), ("grpc_code", "ResourceExhausted")];
    assert_eq!(metrics.value("grpc_server_handled_total", &shed_calls), Some(1.0), "{}", metrics.text);
    // Health is exempt from shedding.
    let mut health = HealthClient::new(tasks.channel().await);
    let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::Serving as i32);

    // The stuck calls end at the server's deadline with DEADLINE_EXCEEDED (not CANCELLED).
    for call in stuck {
        let status = call.await.unwrap();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }
    lock.release().await;
    assert_eq!(list(&tasks, &token).await.unwrap(), 1, "served again once the database answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_grpc_timeout_ends_a_stuck_call_with_deadline_exceeded_on_postgres() {
    require(Backend::Postgres);
    let (tasks, token, lock) = started_and_stuck().await;

    // `grpc-timeout` over raw HTTP/2: a tonic client runs its own timer and would report its
    // own error first; this asks what the server answers, as curl, proxies and clients without
    // a timer see it (tonic's own answer would be CANCELLED "Timeout expired").
    let path = format!("/{}/ListTasks", task_service::SERVICE_NAME);
    let authorization = format!("Bearer {token}");
    let call = |timeout: &'static str| {
        let (tasks, path, authorization) = (&tasks, path.clone(), authorization.clone());
        async move {
            let headers = [("authorization", authorization.as_str()), ("grpc-timeout", timeout)];
            // An empty ListTasksRequest is zero bytes.
            raw_h2_status(tasks, &path, &headers, 0, &[]).await
        }
    };
    let deadline_exceeded = (Code::DeadlineExceeded as i32).to_string();
    let started_at = std::time::Instant::now();
    let (code, message) = call("400m").await;
    assert_eq!(code, deadline_exceeded, "{message}");
    assert!(message.contains("grpc-timeout"), "{message}");
    let took = started_at.elapsed();
    assert!(took >= Duration::from_millis(350) && took < Duration::from_secs(5), "ended at the deadline: {took:?}");

    // An already-expired deadline is answered the same way, without waiting.
    assert_eq!(call("1n").await.0, deadline_exceeded);

    lock.release().await;
    assert_eq!(call("5S").await.0, (Code::Ok as i32).to_string(), "a deadline that can be met is");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_and_a_stuck_statement_give_unavailable_never_internal_or_a_hang_on_postgres() {
    require(Backend::Postgres);
    let db = TestDb::new(Backend::Postgres).await;
    let mut config = task_config(&db);
    config.pool = PoolSettings {
        max_connections: 2,
        acquire_timeout: Duration::from_millis(300),
        statement_timeout: Duration::from_secs(1),
    };
    let token = token();
    let tasks = started(config, db, &token).await;

    let lock = lock_tasks(&tasks.db).await;
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let (addr, token) = (tasks.url(), token.clone());
            tokio::spawn(async move {
                let mut client =
                    todo_tests::pb::task::v1::task_service_client::TaskServiceClient::connect(addr).await.unwrap();
                let started_at = std::time::Instant::now();
                let result = client.list_tasks(bearer(&token, ListTasksRequest::default())).await;
                (result.map(|_| ()).unwrap_err(), started_at.elapsed())
            })
        })
        .collect();
    for call in calls {
        let (status, took) = call.await.unwrap();
        // Two hold the connections until the statement timeout; the rest time out waiting for one.
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(took < Duration::from_secs(5), "answered in {took:?}, not left hanging");
    }
    lock.release().await;
    wait_until_serving(&tasks, "").await;
    assert_eq!(list(&tasks, &token).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_calls_in_flight_finish_refuses_new_ones_and_is_bounded_when_one_is_stuck_on_postgres() {
    require(Backend::Postgres);
    // A call in flight when shutdown begins completes normally.
    let (tasks, token, lock) = started_and_stuck().await;
    let mut client = task_client(&tasks).await;
    let in_flight = {
        let mut client = client.clone();
        let token = token.clone();
        tokio::spawn(async move { client.list_tasks(bearer(&token, ListTasksRequest::default())).await })
    };
    until_blocked(&tasks.db, 1).await;
    let mut health = HealthClient::new(tasks.channel().await);
    let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::Serving as i32);
    let addr = tasks.url();
    let stopping = tokio::spawn(tasks.shutdown());
    assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::NotServing as i32);
    // New calls are refused while the old one drains: the listener is closed, and the open
    // connection has been told to go away (tonic's client reports that as CANCELLED; a stream
    // the client opened just as the final GOAWAY crossed it comes back as hyper's
    // "GoAway(NO_ERROR, Remote)", which tonic labels INTERNAL: the server never saw it).
    assert!(tonic::transport::Channel::from_shared(addr).unwrap().connect().await.is_err());
    let create = CreateTaskRequest { title: "too late".into(), ..Default::default() };
    let refused = client.create_task(bearer(&token, create)).await.unwrap_err();
    let went_away =
        refused.code() == Code::Internal && format!("{:?}", refused).contains("GoAway(b\"\", NO_ERROR, Remote)");
    assert!(matches!(refused.code(), Code::Unavailable | Code::Cancelled) || went_away, "{refused:?}");
    lock.release().await;
    assert_eq!(in_flight.await.unwrap().unwrap().into_inner().tasks.len(), 1, "the in-flight call finished");
    tokio::time::timeout(Duration::from_secs(10), stopping).await.unwrap().unwrap().unwrap();

    // A call that never finishes cannot hold the process past the drain deadline.
    let db = TestDb::new(Backend::Postgres).await;
    let mut config = task_config(&db);
    config.limits.drain_timeout = Duration::from_secs(1);
    let tasks = started(config, db, &token).await;
    let _lock = lock_tasks(&tasks.db).await;
    let stuck = {
        let mut client = task_client(&tasks).await;
        let token = token.clone();
        tokio::spawn(async move { client.list_tasks(bearer(&token, ListTasksRequest::default())).await })
    };
    until_blocked(&tasks.db, 1).await;
    let started_at = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), tasks.shutdown()).await.expect("shutdown is bounded").unwrap();
    assert!(
        started_at.elapsed() < Duration::from_secs(5),
        "stopped at the drain deadline, took {:?}",
        started_at.elapsed()
    );
    // (In-process, the abandoned connection's task lives on in the test's runtime; in the real
    // binary the process exits here.)
    drop(stuck);
}

/// One account over `TASK_RATE_PER_USER` is refused with QuotaFailure and RetryInfo; another
/// account is served meanwhile, and operators see the refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_over_its_rate_is_refused_and_the_others_are_not() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = task_config(&db);
    config.rate_per_user = Some(todo_shared::rate_limit::Rate::per_minute(3));
    config.metrics_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let tasks = start_tasks_with(config, db).await;
    let mut client = task_client(&tasks).await;
    let (greedy, other) = (caller(), caller());
    for _ in 0..3 {
        client.list_tasks(bearer(&greedy.token, ListTasksRequest::default())).await.expect("within the burst");
    }
    let refused = client.list_tasks(bearer(&greedy.token, ListTasksRequest::default())).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("3/min"), "{}", refused.message());
    let details = refused.get_error_details();
    let violations = &details.quota_failure().expect("QuotaFailure").violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].subject, "user");
    let retry = details.retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert!((Duration::from_secs(15)..=Duration::from_secs(20)).contains(&retry), "{retry:?}");
    // Streams count too.
    let watch = client.watch_tasks(bearer(&greedy.token, todo_contract::task::v1::WatchTasksRequest::default())).await;
    assert_eq!(watch.map(|_| ()).unwrap_err().code(), Code::ResourceExhausted);

    // Another account is not starved by the first.
    client.list_tasks(bearer(&other.token, ListTasksRequest::default())).await.expect("another account is served");
    let scrape = scrape(tasks.metrics.expect("metrics served")).await;
    assert_eq!(scrape.value("todo_rate_per_user_refusals_total", &[]), Some(2.0), "{}", scrape.text);
}
