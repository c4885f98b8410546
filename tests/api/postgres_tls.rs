//! PostgreSQL over TLS with libpq's `sslmode` and `sslrootcert`, against this machine's server
//! (`ssl = on` with Debian's snake-oil certificate, issued to `localhost`): the services'
//! connections are encrypted when asked (seen in `pg_stat_ssl`), a certificate checked against
//! its root passes, and one whose name does not match never connects.

use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use todo_contract::task::v1::ListTasksRequest;
use todo_shared::db::DatabaseUrl;
use todo_tests::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SNAKE_OIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

fn options(db: &TestDb) -> PgConnectOptions {
    let DatabaseUrl::Postgres(options) = &db.url else { panic!("not PostgreSQL") };
    options.clone()
}

/// Whether each connection to the test's database other than the one asking is encrypted,
/// asked over a connection without TLS.
async fn others_encrypted(db: &TestDb) -> Vec<bool> {
    let mut conn = options(db).ssl_mode(PgSslMode::Disable).connect().await.unwrap();
    sqlx::query_scalar(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

/// task-service on `db` reached with `url`, serving a call.
async fn served_with(db: TestDb, url: PgConnectOptions) -> (Running, Vec<bool>) {
    let mut config = task_config(&db);
    config.database = DatabaseUrl::Postgres(url);
    let tasks = start_tasks_with(config, db).await;
    let me = caller();
    task_client(&tasks).await.list_tasks(bearer(&me.token, ListTasksRequest::default())).await.unwrap();
    let encrypted = others_encrypted(&tasks.db).await;
    (tasks, encrypted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_connections_are_encrypted_when_the_url_asks_on_postgres() {
    require(Backend::Postgres);
    for (mode, expected) in [(PgSslMode::Require, true), (PgSslMode::Disable, false)] {
        let db = TestDb::new(Backend::Postgres).await;
        let url = options(&db).ssl_mode(mode);
        let (_tasks, encrypted) = served_with(db, url).await;
        assert!(!encrypted.is_empty(), "{mode:?}: the service has connections");
        assert!(encrypted.iter().all(|&ssl| ssl == expected), "{mode:?}: {encrypted:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_checked_against_its_root_and_its_name_on_postgres() {
    require(Backend::Postgres);
    // verify-ca: the chain only. verify-full: the chain and the name (`localhost`).
    for (mode, host) in [(PgSslMode::VerifyCa, "127.0.0.1"), (PgSslMode::VerifyFull, "localhost")] {
        let db = TestDb::new(Backend::Postgres).await;
        let url = options(&db).host(host).ssl_mode(mode).ssl_root_cert(SNAKE_OIL);
        let (_tasks, encrypted) = served_with(db, url).await;
        assert!(!encrypted.is_empty() && encrypted.iter().all(|&ssl| ssl), "{mode:?}: {encrypted:?}");
    }

    // verify-full to 127.0.0.1: the certificate names `localhost`, so no connection is made.
    let db = TestDb::new(Backend::Postgres).await;
    let url = options(&db).host("127.0.0.1").ssl_mode(PgSslMode::VerifyFull).ssl_root_cert(SNAKE_OIL);
    let err = url.connect().await.expect_err("a certificate for another name is refused");
    assert!(err.to_string().contains("certificate"), "a reason an operator can act on: {err}");
    let mut config = task_config(&db);
    config.database = DatabaseUrl::Postgres(url);
    let app = task_service::Application::build(config).await.expect("bad certificates are not a start-up error");
    let addr = app.local_addr();
    let tasks = spawn_unready(addr, db, |stop| app.run_until(async move { drop(stop.await) }));
    // A negative: nothing to wait on but time, long enough for the supervisor's first checks
    // (one a second) to have tried, and failed, to connect.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut health = HealthClient::new(tasks.channel().await);
    let status = health.check(HealthCheckRequest::default()).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::NotServing as i32, "never ready on a database it must not trust");
}
