//! Coalesced point lookups (`todo_shared::coalesce`, GetTask's in
//! `task_service::store::point_reads`) on PostgreSQL: lookups that arrive while a query is out
//! share the next one, and each caller still gets only a task that is its own.

use std::time::Duration;

use task_service::store::point_reads::PointReads;
use todo_shared::db::{DatabaseUrl, PgPool};
use todo_tests::proxy::{FaultyProxy, Mode};
use todo_tests::*;
use uuid::Uuid;

async fn postgres() -> Option<TestDb> {
    let db = crate::pool::postgres().await?;
    db.pool.migrate(&task_service::store::MIGRATIONS).await.unwrap();
    Some(db)
}

fn pool_for(url: &DatabaseUrl) -> PgPool {
    crate::pool::pool_for(url, 8, Duration::from_secs(10))
}

/// Inserts a task of `owner`'s titled `title` and returns its id.
async fn insert(db: &TestDb, owner: Uuid, title: &str) -> Uuid {
    let id = Uuid::now_v7();
    let inserted = db
        .execute(
            &format!(
                "INSERT INTO tasks (id, user_id, title, description, completed, created_at, updated_at, version) \
                 VALUES ('{id}', $1, $2, '', false, now(), now(), 1)"
            ),
            owner,
            Some(title),
        )
        .await;
    assert_eq!(inserted, 1);
    id
}

#[tokio::test]
async fn lookups_that_queue_share_one_query_and_each_gets_only_its_own_task() {
    let Some(db) = postgres().await else { return };
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let alices = [insert(&db, alice, "a0").await, insert(&db, alice, "a1").await, insert(&db, alice, "a2").await];
    let bobs = [insert(&db, bob, "b0").await, insert(&db, bob, "b1").await];
    let missing = Uuid::now_v7();

    // (who asks, for which id, the title they must get: None = not found). Alice asks for
    // Bob's tasks while Bob asks for them too, so the batch's query returns rows Alice must
    // not get; and the same lookup twice.
    let mut lookups = Vec::new();
    for round in 0..5 {
        lookups.push((alice, alices[round % 3], Some(format!("a{}", round % 3))));
        lookups.push((bob, bobs[round % 2], Some(format!("b{}", round % 2))));
        lookups.push((alice, bobs[round % 2], None));
        lookups.push((bob, alices[round % 3], None));
        lookups.push((alice, missing, None));
        lookups.push((Uuid::new_v4(), alices[0], None));
    }
    lookups.push((alice, alices[1], Some("a1".to_owned())));

    let reads = PointReads::new(pool_for(&db.url));
    // This test runs on one thread: every spawned lookup makes its first move before any
    // answer from PostgreSQL is read, so the first takes the one lane and the rest queue.
    let handles: Vec<_> = lookups
        .iter()
        .map(|&(user, id, _)| {
            let reads = reads.clone();
            tokio::spawn(async move { reads.get((user, id)).await })
        })
        .collect();
    for ((user, id, expected), handle) in lookups.iter().zip(handles) {
        let got = handle.await.unwrap().unwrap();
        assert_eq!(got.as_ref().map(|t| t.title.clone()), *expected, "{user} asking for {id}");
        if let Some(task) = got {
            assert_eq!((task.id, task.user_id), (*id, *user));
        }
    }
    assert_eq!(reads.queries_sent(), 2, "the first lookup's query, then one for the {} queued", lookups.len() - 1);

    // Alone, a lookup is a query of its own, right away.
    let alone = reads.get((bob, bobs[1])).await.unwrap().unwrap();
    assert_eq!(alone.title, "b1");
    assert_eq!(reads.queries_sent(), 3);
}

#[tokio::test]
async fn queued_lookups_are_answered_when_the_caller_ahead_of_them_goes_away() {
    let Some(db) = postgres().await else { return };
    let alice = Uuid::new_v4();
    let ids = [insert(&db, alice, "t0").await, insert(&db, alice, "t1").await, insert(&db, alice, "t2").await];
    let proxy = FaultyProxy::start(db.postgres_addr()).await;
    let reads = PointReads::new(pool_for(&db.url_via(proxy.addr)));
    // A connection ready in the pool, then a slow network: the next query stays out a while.
    assert!(reads.get((alice, ids[0])).await.unwrap().is_some());
    proxy.set(Mode::Delay(Duration::from_millis(50)));

    let first = {
        let reads = reads.clone();
        tokio::spawn(async move { reads.get((alice, ids[0])).await })
    };
    tokio::task::yield_now().await;
    let queued: Vec<_> = ids
        .iter()
        .map(|&id| {
            let reads = reads.clone();
            tokio::spawn(async move { reads.get((alice, id)).await })
        })
        .collect();
    tokio::task::yield_now().await;
    // The RPC that holds the lane is cancelled mid-query (a deadline, a client hanging up).
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());

    for (id, handle) in ids.iter().zip(queued) {
        let task = tokio::time::timeout(Duration::from_secs(20), handle)
            .await
            .expect("a queued lookup was stranded")
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(task.id, *id);
    }
}

#[tokio::test]
async fn a_failed_batch_fails_every_lookup_in_it_and_the_next_ones_recover() {
    let Some(db) = postgres().await else { return };
    let alice = Uuid::new_v4();
    let ids = [insert(&db, alice, "t0").await, insert(&db, alice, "t1").await];
    let proxy = FaultyProxy::start(db.postgres_addr()).await;
    let reads = PointReads::new(pool_for(&db.url_via(proxy.addr)));
    assert!(reads.get((alice, ids[0])).await.unwrap().is_some());

    // The database goes away with lookups queued: each gets an error, none hangs.
    proxy.set(Mode::Delay(Duration::from_millis(100)));
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let reads = reads.clone();
            let id = ids[i % 2];
            tokio::spawn(async move { reads.get((alice, id)).await })
        })
        .collect();
    tokio::task::yield_now().await;
    proxy.cut();
    for handle in handles {
        let result = tokio::time::timeout(Duration::from_secs(30), handle).await.expect("a lookup hung").unwrap();
        let err = result.expect_err("answered with the database cut off");
        let status = tonic::Status::from(task_service::error::Error::Database(err));
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }

    proxy.restore();
    let task = reads.get((alice, ids[1])).await.unwrap().unwrap();
    assert_eq!(task.title, "t1");
}
