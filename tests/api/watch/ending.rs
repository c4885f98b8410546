//! How WatchTasks streams end, and what they survive: token expiry, a revoked session, the
//! stream limits, a client that does not read, shutdown, the maximum age, the unary deadline,
//! and (PostgreSQL) a lost LISTEN connection and changes made through another replica.

use std::time::{Duration, Instant};

use todo_tests::pb::auth::v1::LogoutRequest;
use todo_tests::pb::task::v1::watch_tasks_response::EventType;
use todo_tests::pb::task::v1::{CreateTaskRequest, WatchTasksRequest};
use todo_tests::*;
use tonic::Code;

use super::{ending, initial_state, kind, next, watch};

on_both_backends!(
    the_stream_ends_when_its_token_expires,
    the_stream_ends_when_its_session_is_revoked,
    streams_beyond_the_limits_are_resource_exhausted,
    a_client_that_does_not_read_is_ended_with_a_status_it_can_resume_from,
    shutdown_ends_streams_at_once_with_unavailable,
    streams_outlive_the_unary_deadline_but_not_their_maximum_age,
);

mod postgres_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_a_change_through_another_replica_reaches_the_watcher() {
        require(Backend::Postgres);
        super::a_change_through_another_replica_reaches_the_watcher().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_a_killed_listening_connection_loses_nothing() {
        require(Backend::Postgres);
        super::a_killed_listening_connection_loses_nothing().await;
    }
}

async fn the_stream_ends_when_its_token_expires(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let short = expiring_caller();
    let mut stream = watch(&mut client, &short, "").await;
    initial_state(&mut stream).await;
    let status = ending(&mut stream, Duration::from_secs(5)).await;
    assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "token has expired: log in again"));
}

async fn the_stream_ends_when_its_session_is_revoked(backend: Backend) {
    let pair = start_pair(backend).await;
    let mut auth = auth_client(&pair.auth).await;
    let signup = todo_tests::pb::auth::v1::SignUpRequest {
        email: "watcher@example.com".into(),
        password: "tulip-anchor-93".into(),
    };
    let user = auth.sign_up(signup).await.unwrap().into_inner().user.unwrap();
    let login = todo_tests::pb::auth::v1::LoginRequest {
        email: "watcher@example.com".into(),
        password: "tulip-anchor-93".into(),
    };
    let session = auth.login(login).await.unwrap().into_inner();
    let me = Caller { id: uuid::Uuid::parse_str(&user.id).unwrap(), token: session.access_token.clone() };
    let mut client = task_client(&pair.tasks).await;
    let mut stream = watch(&mut client, &me, "").await;
    initial_state(&mut stream).await;

    auth.logout(bearer(&session.access_token, LogoutRequest { scope: 0 })).await.unwrap();
    let start = Instant::now();
    let status = ending(&mut stream, Duration::from_secs(2)).await;
    assert_eq!((status.code(), status.message()), (Code::Unauthenticated, REVOKED));
    assert!(start.elapsed() < Duration::from_secs(1), "ended within a second: {:?}", start.elapsed());
}

async fn streams_beyond_the_limits_are_resource_exhausted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = task_config(&db);
    config.watch.per_user = 2;
    config.watch.per_process = 3;
    let tasks = start_tasks_with(config, db).await;
    let mut client = task_client(&tasks).await;
    let (me, other, third) = (caller(), caller(), caller());
    let first = watch(&mut client, &me, "").await;
    let _second = watch(&mut client, &me, "").await;
    let err = client.watch_tasks(bearer(&me.token, WatchTasksRequest::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "a third for one user: {}", err.message());
    let _others = watch(&mut client, &other, "").await;
    let err = client.watch_tasks(bearer(&third.token, WatchTasksRequest::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "a fourth for the process: {}", err.message());
    // Closing one frees its place.
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(stream) = client.watch_tasks(bearer(&third.token, WatchTasksRequest::default())).await {
            again = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a closed stream gives its place back");
}

async fn a_client_that_does_not_read_is_ended_with_a_status_it_can_resume_from(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = task_config(&db);
    config.watch.buffer = 2;
    config.watch.slow_consumer = Duration::from_millis(500);
    let tasks = start_tasks_with(config, db).await;
    // A client with HTTP/2's smallest windows (hyper's client defaults hold megabytes), so
    // the server feels it not reading.
    let small = tonic::transport::Endpoint::from_shared(tasks.url())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut client = todo_tests::pb::task::v1::task_service_client::TaskServiceClient::new(small);
    let me = caller();
    let mut stream = watch(&mut client, &me, "").await;
    let (_, mut token) = initial_state(&mut stream).await;
    // Far more than the HTTP/2 window and the buffer hold, while the client reads nothing.
    let description = "x".repeat(9_000);
    for i in 0..40 {
        let request =
            CreateTaskRequest { title: format!("t{i}"), description: description.clone(), ..Default::default() };
        client.create_task(bearer(&me.token, request)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut received = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("in time") {
            Ok(Some(event)) => {
                received += 1;
                token = event.resume_token;
            }
            Ok(None) => panic!("ended with OK"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    assert!(received < 40, "ended before delivering everything ({received})");
    // Resuming from the last event received delivers the rest, exactly.
    let mut resumed = watch(&mut client, &me, &token).await;
    for _ in received..40 {
        assert_eq!(kind(&next(&mut resumed, Duration::from_secs(5)).await), EventType::Upserted);
    }
    assert!(tokio::time::timeout(Duration::from_millis(300), resumed.message()).await.is_err());
}

async fn shutdown_ends_streams_at_once_with_unavailable(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let me = caller();
    let mut stream = watch(&mut client, &me, "").await;
    initial_state(&mut stream).await;
    let start = Instant::now();
    let stopped = tokio::spawn(tasks.shutdown());
    let status = ending(&mut stream, Duration::from_secs(3)).await;
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    stopped.await.unwrap().expect("the server stops cleanly");
    // The drain did not wait for the stream (the test drain timeout is 5 s).
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
}

async fn streams_outlive_the_unary_deadline_but_not_their_maximum_age(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = task_config(&db);
    config.limits.request_timeout = Duration::from_secs(1);
    config.watch.max_age = Duration::from_secs(3);
    let tasks = start_tasks_with(config, db).await;
    let mut client = task_client(&tasks).await;
    let me = caller();
    let mut stream = watch(&mut client, &me, "").await;
    initial_state(&mut stream).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let task = create(&mut client, &me, "after the unary deadline").await;
    let event = next(&mut stream, Duration::from_secs(1)).await;
    assert_eq!(event.task.map(|t| t.id), Some(task.id), "still open past GRPC_REQUEST_TIMEOUT");
    let status = ending(&mut stream, Duration::from_secs(3)).await;
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(status.message().contains("maximum age"), "{}", status.message());
}

/// Two replicas on one PostgreSQL database; a watcher on the first.
async fn two_replicas() -> (Running, Running) {
    let db = std::sync::Arc::new(TestDb::new(Backend::Postgres).await);
    let one = start_tasks_with(task_config(&db), std::sync::Arc::clone(&db)).await;
    let two = start_tasks_with(task_config(&db), db).await;
    (one, two)
}

async fn a_change_through_another_replica_reaches_the_watcher() {
    let (one, two) = two_replicas().await;
    let me = caller();
    let mut stream = watch(&mut task_client(&one).await, &me, "").await;
    initial_state(&mut stream).await;
    let mut other = task_client(&two).await;
    for i in 0..5 {
        let task = create(&mut other, &me, &format!("elsewhere {i}")).await;
        let event = next(&mut stream, Duration::from_secs(2)).await;
        assert_eq!(event.task.map(|t| t.id), Some(task.id));
    }
}

async fn a_killed_listening_connection_loses_nothing() {
    let (one, two) = two_replicas().await;
    let me = caller();
    let mut stream = watch(&mut task_client(&one).await, &me, "").await;
    initial_state(&mut stream).await;
    // Kill both replicas' LISTEN connections, then write through the second one.
    let killed = one
        .db
        .scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            None,
        )
        .await;
    assert!(killed >= 1, "a LISTEN connection to kill");
    let mut other = task_client(&two).await;
    let mut created = Vec::new();
    for i in 0..3 {
        created.push(create(&mut other, &me, &format!("during the outage {i}")).await.id);
    }
    for id in created {
        let event = next(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(event.task.map(|t| t.id), Some(id));
    }
}
