//! The PostgreSQL pool (`todo_shared::pg_pool`, bb8 with our manager): it lends connections
//! back without pinging them, so these tests pin down what a ping would guarantee: a
//! connection is reused only when it is known to be clean, and a dead or mid-protocol one is
//! never lent again.

use std::time::{Duration, Instant};

use todo_shared::db::{DatabaseUrl, PgConn, PostgresPool};
use todo_tests::proxy::{FaultyProxy, Mode};
use todo_tests::*;

pub(crate) fn pool_for(url: &DatabaseUrl, max: u32, acquire_timeout: Duration) -> PostgresPool {
    let DatabaseUrl::Postgres(options) = url else { panic!("PostgreSQL only") };
    PostgresPool::new(options.clone(), max, acquire_timeout)
}

async fn backend_pid(conn: &mut PgConn) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(conn).await.unwrap()
}

pub(crate) async fn postgres() -> TestDb {
    TestDb::new(Backend::Postgres).await
}

/// Sessions of the test database other than ours, as PostgreSQL sees them.
async fn sessions(db: &TestDb) -> i64 {
    db.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        None,
    )
    .await
}

#[tokio::test]
async fn a_clean_connection_is_lent_again_and_a_database_error_keeps_it_clean() {
    let db = postgres().await;
    let pool = pool_for(&db.url, 4, Duration::from_secs(2));
    let first = backend_pid(&mut pool.acquire().await.unwrap()).await;
    assert_eq!(pool.idle_count(), 1);
    assert_eq!(backend_pid(&mut pool.acquire().await.unwrap()).await, first, "the idle connection was not reused");

    // A statement PostgreSQL refuses leaves the session usable: it stays in the pool.
    let err = sqlx::query("SELECT 1 / 0").execute(&mut pool.acquire().await.unwrap()).await.unwrap_err();
    assert!(matches!(err, sqlx::Error::Database(_)), "{err:?}");
    assert_eq!(pool.idle_count(), 1);
    assert_eq!(backend_pid(&mut pool.acquire().await.unwrap()).await, first);
    pool.close().await;
}

#[tokio::test]
async fn a_query_cancelled_midway_closes_its_connection() {
    let db = postgres().await;
    let pool = pool_for(&db.url, 4, Duration::from_secs(2));
    let mut conn = pool.acquire().await.unwrap();
    let cancelled = backend_pid(&mut conn).await;
    let query = sqlx::query("SELECT pg_sleep(30)").execute(&mut conn);
    assert!(tokio::time::timeout(Duration::from_millis(200), query).await.is_err());
    drop(conn);
    assert_eq!(pool.idle_count(), 0, "a connection with a query in flight went back to the pool");

    // The next caller gets a fresh session at once, not the one still sleeping.
    let started = Instant::now();
    let next = backend_pid(&mut pool.acquire().await.unwrap()).await;
    assert_ne!(next, cancelled);
    assert!(started.elapsed() < Duration::from_secs(5), "waited {:?}", started.elapsed());
    pool.close().await;
}

#[tokio::test]
async fn a_transaction_dropped_uncommitted_releases_its_locks_at_once() {
    let db = postgres().await;
    let pool = pool_for(&db.url, 4, Duration::from_secs(2));
    sqlx::query("CREATE TABLE items (id uuid PRIMARY KEY, note text)")
        .execute(&mut pool.acquire().await.unwrap())
        .await
        .unwrap();
    let id = uuid::Uuid::new_v4();
    {
        let mut conn = pool.acquire().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("INSERT INTO items (id, note) VALUES ($1, 'uncommitted')")
            .bind(id)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("LOCK TABLE items IN ACCESS EXCLUSIVE MODE").execute(&mut *tx).await.unwrap();
        // Dropped without commit: sqlx queues a ROLLBACK that nothing would send.
    }
    assert_eq!(pool.idle_count(), 0, "a connection with an unsent ROLLBACK went back to the pool");
    // Another session can take the table at once: the lock went with the closed session.
    let lock_free =
        tokio::time::timeout(Duration::from_secs(3), db.scalar("SELECT count(*) FROM items WHERE id = $1", Some(id)))
            .await;
    assert_eq!(lock_free.ok(), Some(0), "the dropped transaction still held its lock, or its row was kept");
    pool.close().await;
}

#[tokio::test]
async fn a_transaction_cancelled_while_beginning_closes_its_connection() {
    let db = postgres().await;
    let proxy = FaultyProxy::start(db.postgres_addr()).await;
    let pool = pool_for(&db.url_via(proxy.addr), 4, Duration::from_secs(2));
    let mut conn = pool.acquire().await.unwrap();
    let pid = backend_pid(&mut conn).await;
    proxy.set(Mode::Delay(Duration::from_millis(300)));
    // Cancelled before BEGIN's answer arrives (a deadline, a client hanging up): the server has
    // a transaction open that sqlx has not counted yet.
    assert!(tokio::time::timeout(Duration::from_millis(50), conn.begin()).await.is_err());
    drop(conn);
    assert_eq!(pool.idle_count(), 0, "a connection whose BEGIN was cancelled went back to the pool");
    proxy.set(Mode::Pass);
    assert_ne!(backend_pid(&mut pool.acquire().await.unwrap()).await, pid);
}

#[tokio::test]
async fn a_connection_level_failure_drops_the_idle_connections_and_the_pool_recovers() {
    let db = postgres().await;
    let proxy = FaultyProxy::start(db.postgres_addr()).await;
    let pool = pool_for(&db.url_via(proxy.addr), 4, Duration::from_secs(2));
    {
        // Three sessions open and idle.
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = pool.acquire().await.unwrap();
            backend_pid(&mut conn).await;
            held.push(conn);
        }
    }
    assert_eq!(pool.idle_count(), 3);

    proxy.cut();
    proxy.restore();
    // The first query finds a dead socket: UNAVAILABLE-class error, and the dead idle ones go too.
    let err = sqlx::query("SELECT 1").execute(&mut pool.acquire().await.unwrap()).await.unwrap_err();
    assert_eq!(todo_shared::db::classify(&err), todo_shared::db::Failure::Unavailable, "{err:?}");
    // So the next queries, three at once, connect afresh and succeed: none is lent a dead socket.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
        held.push(conn);
    }
    pool.close().await;
}

#[tokio::test]
async fn an_exhausted_pool_times_out_and_a_closed_one_refuses() {
    let db = postgres().await;
    let pool = pool_for(&db.url, 1, Duration::from_millis(300));
    let held = pool.acquire().await.unwrap();
    let started = Instant::now();
    let err = pool.acquire().await.unwrap_err();
    assert!(matches!(err, sqlx::Error::PoolTimedOut), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(250) && started.elapsed() < Duration::from_secs(2));
    drop(held);
    assert_eq!(pool.idle_count(), 1);

    pool.close().await;
    assert!(matches!(pool.acquire().await.unwrap_err(), sqlx::Error::PoolClosed));
    // Closing ended the idle session on the server too.
    for _ in 0..100 {
        if sessions(&db).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the closed pool left {} sessions open", sessions(&db).await);
}

#[tokio::test]
async fn a_retired_connection_is_closed_not_lent() {
    let db = postgres().await;
    let pool = pool_for(&db.url, 2, Duration::from_secs(2));
    let mut conn = pool.acquire().await.unwrap();
    let pid = backend_pid(&mut conn).await;
    conn.retire();
    drop(conn);
    assert_eq!(pool.idle_count(), 0);
    assert_ne!(backend_pid(&mut pool.acquire().await.unwrap()).await, pid);
    pool.close().await;
}
