//! Metrics as a scraper sees them: `/metrics` over HTTP/1.1 on `METRICS_ADDR`, per-RPC
//! counters and latencies under the names gRPC dashboards expect (streams and cancelled calls
//! included), the service's own state, and labels that never carry a user's data.

use std::net::SocketAddr;
use std::time::Duration;

use todo_tests::pb::auth::v1::{LoginRequest, SignUpRequest};
use todo_tests::pb::task::v1::{GetTaskRequest, ListTasksRequest, WatchTasksRequest};
use todo_tests::*;
use tonic::Code;

use crate::watch::initial_state;

on_both_backends!(
    rpcs_and_streams_are_counted_by_method_and_code_and_no_label_names_a_user,
    password_hashing_is_timed_and_its_queue_reported,
);

fn any_loopback_port() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Scrapes until `check` holds (state that settles after a call returns: a stream's end).
async fn scrape_until(addr: SocketAddr, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = scrape(addr).await;
        if check(&scrape) {
            return scrape;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} never showed:\n{}", scrape.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rpcs_and_streams_are_counted_by_method_and_code_and_no_label_names_a_user(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = task_config(&db);
    config.metrics_addr = any_loopback_port();
    let tasks = start_tasks_with(config, db).await;
    let metrics = tasks.metrics.expect("metrics served");
    let mut client = task_client(&tasks).await;
    let me = caller();

    let first = create(&mut client, &me, "first").await;
    let second = create(&mut client, &me, "second").await;
    let bad = client.get_task(bearer(&me.token, GetTaskRequest { id: "not-a-uuid".into() })).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let anonymous = client.list_tasks(ListTasksRequest::default()).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    // A method this port does not serve is counted under its (bounded) name.
    let mut wrong_port = todo_tests::pb::auth::v1::auth_service_client::AuthServiceClient::new(tasks.channel().await);
    let err = wrong_port.login(LoginRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    let mut stream = client.watch_tasks(bearer(&me.token, WatchTasksRequest::default())).await.unwrap().into_inner();
    let (ids, _) = initial_state(&mut stream).await;
    assert_eq!(ids.len(), 2);

    let scrape = scrape(metrics).await;
    let value = |name: &str, labels: &[(&str, &str)]| scrape.value(name, labels);
    let create_task = [("grpc_service", "todo.task.v1.TaskService"), ("grpc_method", "CreateTask")];
    assert_eq!(value("grpc_server_started_total", &create_task), Some(2.0), "{}", scrape.text);
    let ok = [create_task.as_slice(), &[("grpc_code", "OK"), ("grpc_type", "unary")]].concat();
    assert_eq!(value("grpc_server_handled_total", &ok), Some(2.0), "{}", scrape.text);
    assert_eq!(value("grpc_server_handling_seconds_count", &create_task), Some(2.0));
    let all = [create_task.as_slice(), &[("le", "+Inf")]].concat();
    assert_eq!(value("grpc_server_handling_seconds_bucket", &all), Some(2.0));
    let get = [("grpc_method", "GetTask"), ("grpc_code", "InvalidArgument")];
    assert_eq!(value("grpc_server_handled_total", &get), Some(1.0), "{}", scrape.text);
    let anonymous = [("grpc_method", "ListTasks"), ("grpc_code", "Unauthenticated")];
    assert_eq!(value("grpc_server_handled_total", &anonymous), Some(1.0), "{}", scrape.text);
    let login =
        [("grpc_service", "todo.auth.v1.AuthService"), ("grpc_method", "Login"), ("grpc_code", "Unimplemented")];
    assert_eq!(value("grpc_server_handled_total", &login), Some(1.0), "{}", scrape.text);
    // The open stream: started, not yet handled, and counted among the open streams.
    let watch = [("grpc_method", "WatchTasks"), ("grpc_type", "server_stream")];
    assert_eq!(value("grpc_server_started_total", &watch), Some(1.0), "{}", scrape.text);
    assert_eq!(value("grpc_server_handled_total", &watch), None, "{}", scrape.text);
    assert_eq!(value("todo_watch_streams_open", &[]), Some(1.0), "{}", scrape.text);
    // The service's own state.
    assert_eq!(value("todo_serving", &[]), Some(1.0));
    assert_eq!(value("todo_database_up", &[]), Some(1.0));
    assert_eq!(value("todo_requests_in_flight", &[]), Some(0.0), "a stream holds no slot once open");
    assert_eq!(value("todo_requests_shed_total", &[]), Some(0.0));
    assert_eq!(value("todo_db_pool_max_connections", &[]), Some(8.0));
    assert!(value("todo_db_pool_connections", &[]).is_some_and(|open| (1.0..=8.0).contains(&open)));
    if backend == Backend::Postgres {
        assert!(value("todo_db_pool_acquire_seconds_count", &[]).is_some_and(|n| n >= 3.0), "{}", scrape.text);
        assert_eq!(value("todo_db_pool_waiting", &[]), Some(0.0));
        assert_eq!(value("todo_db_pool_acquire_timeouts_total", &[]), Some(0.0));
    }
    // Labels are bounded: no user, task or request id anywhere in the exposition.
    for private in [me.id.to_string(), first.id, second.id] {
        assert!(!scrape.text.contains(&private), "{private} leaked into the metrics");
    }
    for label in ["grpc_method", "grpc_service", "grpc_code", "grpc_type"] {
        assert!(scrape.label_values("grpc_server_started_total", label).len() <= 8, "{label} is bounded");
    }

    // The client goes away: the stream is counted as Canceled, and no longer open.
    drop(stream);
    let canceled = [("grpc_method", "WatchTasks"), ("grpc_code", "Canceled")];
    scrape_until(metrics, "the cancelled stream", |s| {
        s.value("grpc_server_handled_total", &canceled) == Some(1.0)
            && s.value("todo_watch_streams_open", &[]) == Some(0.0)
    })
    .await;

    // /ready is what HTTP-only load balancers check: 200 while SERVING.
    let (status, _, body) = http_get(metrics, "GET", "/ready").await;
    assert_eq!((status, body.as_str()), (200, "SERVING\n"));

    // Only /metrics and /ready are served, and only read.
    assert_eq!(http_get(metrics, "GET", "/").await.0, 404);
    assert_eq!(http_get(metrics, "POST", "/metrics").await.0, 405);
    let (status, _, body) = http_get(metrics, "HEAD", "/metrics").await;
    assert_eq!((status, body.as_str()), (200, ""));
}

async fn password_hashing_is_timed_and_its_queue_reported(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = auth_config(&db);
    config.metrics_addr = any_loopback_port();
    let auth = start_auth_with(config, db).await;
    let mut client = auth_client(&auth).await;
    let (email, password) = ("hashed@example.com", "plum-kettle-orbit-42");
    client.sign_up(SignUpRequest { email: email.into(), password: password.into() }).await.unwrap();
    client.login(LoginRequest { email: email.into(), password: password.into() }).await.unwrap();
    let wrong = client.login(LoginRequest { email: email.into(), password: "not-it-at-all".into() }).await;
    assert_eq!(wrong.unwrap_err().code(), Code::Unauthenticated);

    // A hashing thread gives its slot back just after it hands over its result, so the call
    // can return a moment before the slot is free: wait for the gauges to settle.
    let idle = |s: &Scrape| {
        s.value("todo_password_hashes_running", &[]) == Some(0.0)
            && s.value("todo_password_hashes_queued", &[]) == Some(0.0)
    };
    let scrape = scrape_until(auth.metrics.expect("metrics served"), "idle hashing threads", idle).await;
    // One hash for the sign-up, one check per login.
    assert_eq!(scrape.value("todo_password_hash_seconds_count", &[]), Some(3.0), "{}", scrape.text);
    assert!(scrape.value("todo_password_hash_seconds_sum", &[]).is_some_and(|s| s > 0.0));
    assert_eq!(scrape.value("todo_password_hashes_refused_total", &[]), Some(0.0));
    let login = [("grpc_method", "Login")];
    assert_eq!(scrape.value("grpc_server_handled_total", &[login[0], ("grpc_code", "OK")]), Some(1.0));
    assert_eq!(scrape.value("grpc_server_handled_total", &[login[0], ("grpc_code", "Unauthenticated")]), Some(1.0));
    assert!(!scrape.text.contains(email), "no email in any label");
}

/// task-service reports how current its view of revocations is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_feed_is_reported_up_and_current() {
    let auth = start_auth(Backend::Sqlite).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = task_config(&db);
    config.auth_service_url = Some(auth.url());
    config.metrics_addr = any_loopback_port();
    let tasks = start_tasks_with(config, db).await;
    wait_until_serving(&tasks, task_service::follower::FEED_HEALTH_NAME).await;
    let metrics = tasks.metrics.expect("metrics served");
    let scrape = scrape_until(metrics, "the feed up", |s| s.value("todo_revocation_feed_up", &[]) == Some(1.0)).await;
    // Heard from within the heartbeat interval (2 s) plus scheduling slack.
    let lag = scrape.value("todo_revocation_feed_lag_seconds", &[]).expect("lag reported");
    assert!((0.0..6.0).contains(&lag), "{lag}");

    drop(auth);
    scrape_until(metrics, "the feed down", |s| {
        s.value("todo_revocation_feed_up", &[]) == Some(0.0)
            && s.value("todo_revocation_feed_lag_seconds", &[]).is_some_and(|lag| lag >= 2.0)
    })
    .await;
}

/// While the database cannot be reached, `/ready` answers 503, so an HTTP load balancer takes
/// the replica out of rotation; `/metrics` still answers, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_the_database_is_unreachable() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = task_config(&db);
    // Nothing listens on port 1: the pool keeps retrying, health stays NOT_SERVING.
    config.database = todo_shared::db::DatabaseUrl::parse("postgres://postgres@127.0.0.1:1/none").unwrap();
    config.metrics_addr = any_loopback_port();
    let app = task_service::Application::build(config).await.expect("a database that is down is not a start-up error");
    let metrics = app.metrics_addr().expect("metrics served");
    let _tasks = spawn_unready(app.local_addr(), db, |stop| app.run_until(async move { drop(stop.await) }));
    let (status, _, body) = http_get(metrics, "GET", "/ready").await;
    assert_eq!((status, body.as_str()), (503, "NOT_SERVING\n"));
    let (status, _, _) = http_get(metrics, "HEAD", "/ready").await;
    assert_eq!(status, 503);
    let scrape = scrape(metrics).await;
    assert_eq!(scrape.value("todo_database_up", &[]), Some(0.0));
}
