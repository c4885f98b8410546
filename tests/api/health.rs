//! `grpc.health.v1` on both services: Check and Watch for `""` and the service name, no token
//! needed, NOT_SERVING while the database is unreachable and during shutdown.

use std::time::Duration;

use todo_contract::auth::v1::SignUpRequest;
use todo_contract::task::v1::ListTasksRequest;
use todo_tests::proxy::FaultyProxy;
use todo_tests::*;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

on_both_backends!(
    check_and_watch_need_no_token_for_the_server_and_each_service,
    shutdown_reports_not_serving_ends_watches_and_refuses_calls
);

fn request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest { service: service.to_owned() }
}

async fn status(health: &mut HealthClient<Channel>, service: &str) -> ServingStatus {
    let status = health.check(request(service)).await.unwrap().into_inner().status;
    ServingStatus::try_from(status).unwrap()
}

/// The next status a Watch stream reports.
async fn next(stream: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>) -> Option<ServingStatus> {
    let message = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("a health update");
    message.unwrap().map(|m| ServingStatus::try_from(m.status).unwrap())
}

async fn check_and_watch_need_no_token_for_the_server_and_each_service(backend: Backend) {
    let auth = start_auth(backend).await;
    let tasks = start_tasks(backend).await;
    for (running, name) in [(&auth, auth_service::SERVICE_NAME), (&tasks, task_service::SERVICE_NAME)] {
        // No authorization metadata anywhere in this test: health is not behind the token.
        let mut health = HealthClient::new(running.channel().await);
        for service in ["", name] {
            assert_eq!(status(&mut health, service).await, ServingStatus::Serving, "{name} {service:?}");
            let mut watch = health.watch(request(service)).await.unwrap().into_inner();
            assert_eq!(next(&mut watch).await, Some(ServingStatus::Serving), "{name} {service:?}");
        }
        let unknown = health.check(request("todo.nothing.v1.Nothing")).await.unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound, "{name}");
        assert!(unknown.message().contains(name), "the error names the known service: {}", unknown.message());
        // Watch on an unknown name says so and stays open, as the protocol asks.
        let mut watch = health.watch(request("todo.nothing.v1.Nothing")).await.unwrap().into_inner();
        assert_eq!(next(&mut watch).await, Some(ServingStatus::ServiceUnknown));
    }
}

async fn shutdown_reports_not_serving_ends_watches_and_refuses_calls(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = auth_config(&db);
    // Long enough that a shutdown held up by the open Watch stream would time the test out.
    config.limits.drain_timeout = Duration::from_secs(60);
    let auth = start_auth_with(config, db).await;
    let addr = auth.url();
    let mut health = HealthClient::new(auth.channel().await);
    let mut watch = health.watch(request(auth_service::SERVICE_NAME)).await.unwrap().into_inner();
    assert_eq!(next(&mut watch).await, Some(ServingStatus::Serving));

    let stopped = tokio::spawn(auth.shutdown());
    assert_eq!(next(&mut watch).await, Some(ServingStatus::NotServing));
    assert_eq!(next(&mut watch).await, None, "the Watch stream ends so it cannot hold up the drain");
    let served = tokio::time::timeout(Duration::from_secs(20), stopped).await.expect("drained without the deadline");
    served.unwrap().unwrap();

    // The listener is closed: new calls cannot even connect.
    assert!(Channel::from_shared(addr).unwrap().connect().await.is_err());
}

/// PostgreSQL only: SQLite is a file and cannot become unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_while_the_database_is_unreachable_then_recovers_by_itself_on_postgres() {
    require(Backend::Postgres);
    let (auth_db, task_db) = (TestDb::new(Backend::Postgres).await, TestDb::new(Backend::Postgres).await);
    let auth_proxy = FaultyProxy::start(auth_db.postgres_addr()).await;
    let task_proxy = FaultyProxy::start(task_db.postgres_addr()).await;
    // Down from the start: the services must start anyway, say NOT_SERVING, and retry.
    auth_proxy.cut();
    task_proxy.cut();
    let mut auth_cfg = auth_config(&auth_db);
    auth_cfg.database = auth_db.url_via(auth_proxy.addr);
    let mut task_cfg = task_config(&task_db);
    task_cfg.database = task_db.url_via(task_proxy.addr);
    let auth_app = auth_service::Application::build(auth_cfg).await.unwrap();
    let auth_addr = auth_app.local_addr();
    let auth = spawn_unready(auth_addr, auth_db, |stop| auth_app.run_until(async move { drop(stop.await) }));
    let task_app = task_service::Application::build(task_cfg).await.unwrap();
    let task_addr = task_app.local_addr();
    let tasks = spawn_unready(task_addr, task_db, |stop| task_app.run_until(async move { drop(stop.await) }));

    let mut auth_health = HealthClient::new(auth.channel().await);
    let mut task_health = HealthClient::new(tasks.channel().await);
    for (health, name) in
        [(&mut auth_health, auth_service::SERVICE_NAME), (&mut task_health, task_service::SERVICE_NAME)]
    {
        for service in ["", name] {
            assert_eq!(status(health, service).await, ServingStatus::NotServing, "{name} {service:?}");
        }
        // The liveness probe's name: the process answers, so it must not be restarted for an
        // outage a restart cannot fix.
        assert_eq!(status(health, "liveness").await, ServingStatus::Serving, "{name} liveness");
    }
    let mut auth_client = auth_client(&auth).await;
    let sign_up = || SignUpRequest { email: "outage@example.com".into(), password: "plum-kettle-orbit-42".into() };
    let refused = auth_client.sign_up(sign_up()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let token = keys().mint(uuid::Uuid::new_v4(), "outage@example.com", Duration::from_secs(600)).unwrap().token;
    let mut task_client = task_client(&tasks).await;
    let refused = task_client.list_tasks(bearer(&token, ListTasksRequest::default())).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // The database comes back: both recover without a restart.
    let mut auth_watch = auth_health.watch(request("")).await.unwrap().into_inner();
    let mut task_watch = task_health.watch(request("")).await.unwrap().into_inner();
    assert_eq!(next(&mut auth_watch).await, Some(ServingStatus::NotServing));
    assert_eq!(next(&mut task_watch).await, Some(ServingStatus::NotServing));
    auth_proxy.restore();
    task_proxy.restore();
    assert_eq!(next(&mut auth_watch).await, Some(ServingStatus::Serving));
    assert_eq!(next(&mut task_watch).await, Some(ServingStatus::Serving));
    auth_client.sign_up(sign_up()).await.unwrap();
    task_client.list_tasks(bearer(&token, ListTasksRequest::default())).await.unwrap();
    assert_eq!(auth.db.scalar("SELECT count(*) FROM users", None).await, 1);

    // It goes away again mid-flight: NOT_SERVING and UNAVAILABLE, never INTERNAL, then back.
    auth_proxy.cut();
    assert_eq!(next(&mut auth_watch).await, Some(ServingStatus::NotServing));
    let refused =
        auth_client.sign_up(SignUpRequest { email: "second@example.com".into(), ..sign_up() }).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    auth_proxy.restore();
    assert_eq!(next(&mut auth_watch).await, Some(ServingStatus::Serving));
    auth_client.sign_up(SignUpRequest { email: "second@example.com".into(), ..sign_up() }).await.unwrap();
    assert_eq!(auth.db.scalar("SELECT count(*) FROM users", None).await, 2);
}
