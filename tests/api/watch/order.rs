//! What a watcher sees: the initial state, then every change in commit order, exactly once,
//! also across a resume and under concurrent writers; and only its own.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use todo_tests::pb::task::v1::watch_tasks_response::EventType;
use todo_tests::pb::task::v1::{
    CreateTaskRequest, DeleteTaskRequest, ListTasksRequest, UpdateTaskRequest, WatchTasksRequest,
};
use todo_tests::*;
use tonic::Code;

use super::{initial_state, kind, next, watch};

on_both_backends!(
    the_initial_state_then_current_then_live_changes_in_order,
    resuming_from_any_event_replays_exactly_the_changes_after_it,
    concurrent_writers_are_seen_once_each_in_a_gap_free_order,
    a_watcher_that_disconnects_and_resumes_at_random_rebuilds_the_list,
    watchers_see_only_their_own_changes_and_tokens,
    a_token_older_than_the_retention_is_failed_precondition,
    idle_streams_get_bookmarks,
    an_idempotent_create_is_one_event_and_its_retries_none,
);

fn update(id: &str, title: &str) -> UpdateTaskRequest {
    UpdateTaskRequest { id: id.into(), title: Some(title.into()), ..Default::default() }
}

async fn the_initial_state_then_current_then_live_changes_in_order(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let me = caller();
    let first = create(&mut client, &me, "first").await;
    let second = create(&mut client, &me, "second").await;

    let mut stream = watch(&mut client, &me, "").await;
    let (ids, _) = initial_state(&mut stream).await;
    assert_eq!(ids, [second.id.clone(), first.id.clone()], "every task, newest first, then CURRENT");

    let third = create(&mut client, &me, "third").await;
    client.update_task(bearer(&me.token, update(&first.id, "first, renamed"))).await.unwrap();
    client
        .delete_task(bearer(&me.token, DeleteTaskRequest { id: second.id.clone(), etag: String::new() }))
        .await
        .unwrap();

    let created = next(&mut stream, Duration::from_secs(5)).await;
    assert_eq!((kind(&created), created.task.as_ref().map(|t| t.title.as_str())), (EventType::Upserted, Some("third")));
    assert_eq!(created.task.unwrap(), third, "the full task, as CreateTask returned it");
    let renamed = next(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(kind(&renamed), EventType::Upserted);
    let task = renamed.task.unwrap();
    assert_eq!(
        (task.id.as_str(), task.title.as_str(), task.etag.as_str()),
        (first.id.as_str(), "first, renamed", "\"2\"")
    );
    let deleted = next(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(
        (kind(&deleted), deleted.task_id.as_str(), deleted.task.is_none()),
        (EventType::Deleted, second.id.as_str(), true)
    );
    let tokens: HashSet<_> =
        [&created.resume_token, &renamed.resume_token, &deleted.resume_token].into_iter().collect();
    assert_eq!(tokens.len(), 3, "every event has its own position");
}

async fn resuming_from_any_event_replays_exactly_the_changes_after_it(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let me = caller();
    let mut stream = watch(&mut client, &me, "").await;
    let (_, current) = initial_state(&mut stream).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(create(&mut client, &me, &format!("task {i}")).await.id);
    }
    client.update_task(bearer(&me.token, update(&ids[0], "zero"))).await.unwrap();
    client.delete_task(bearer(&me.token, DeleteTaskRequest { id: ids[1].clone(), etag: String::new() })).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(next(&mut stream, Duration::from_secs(5)).await);
    }
    drop(stream);

    // From CURRENT: all six; from the third event: the last three, and nothing more.
    for (from, token) in [(0, current.clone()), (3, seen[2].resume_token.clone())] {
        let mut resumed = watch(&mut client, &me, &token).await;
        for expected in &seen[from..] {
            let got = next(&mut resumed, Duration::from_secs(5)).await;
            assert_eq!(got, *expected, "resumed from event {from}");
        }
        let more = tokio::time::timeout(Duration::from_millis(300), resumed.message()).await;
        assert!(more.is_err(), "nothing after the last change: {more:?}");
    }
    // The last event's token, once more changes happened, gives just those.
    let last = seen[5].resume_token.clone();
    let later = create(&mut client, &me, "later").await;
    let mut resumed = watch(&mut client, &me, &last).await;
    let got = next(&mut resumed, Duration::from_secs(5)).await;
    assert_eq!(got.task.map(|t| t.id), Some(later.id));
}

async fn concurrent_writers_are_seen_once_each_in_a_gap_free_order(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let me = caller();
    let mut stream = watch(&mut client, &me, "").await;
    initial_state(&mut stream).await;

    let mut writers = Vec::new();
    for w in 0..4 {
        let mut client = task_client(&tasks).await;
        let token = me.token.clone();
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..25 {
                let request =
                    todo_tests::pb::task::v1::CreateTaskRequest { title: format!("w{w} t{i}"), ..Default::default() };
                let task = client.create_task(bearer(&token, request)).await.unwrap().into_inner().task.unwrap();
                // Every other one is changed again at once, racing the other writers.
                if i % 2 == 0 {
                    client.update_task(bearer(&token, update(&task.id, &format!("w{w} t{i}!")))).await.unwrap();
                }
                ids.push(task.id);
            }
            ids
        }));
    }
    let mut created = HashSet::new();
    for writer in writers {
        created.extend(writer.await.unwrap());
    }
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for _ in 0..(100 + 52) {
        let event = next(&mut stream, Duration::from_secs(10)).await;
        let task = event.task.expect("upserts only");
        seen.entry(task.id.clone()).or_default().push(task.etag);
    }
    assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), created, "every task, no other");
    for (id, etags) in &seen {
        assert!(etags == &["\"1\""] || etags == &["\"1\"", "\"2\""], "{id}: each version once, in order: {etags:?}");
    }
    let more = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(more.is_err(), "no change twice: {more:?}");
    let positions = tasks.db.scalar("SELECT count(*) FROM task_changes WHERE user_id = $1", Some(me.id)).await;
    let highest = tasks.db.scalar("SELECT max(position) FROM task_changes WHERE user_id = $1", Some(me.id)).await;
    assert_eq!((positions, highest), (152, 152), "positions 1..=152 without a gap");
}

/// Writers change tasks while a watcher reads a few events, drops its stream and resumes from
/// its last token, again and again: its rebuilt list equals ListTasks after every round.
async fn a_watcher_that_disconnects_and_resumes_at_random_rebuilds_the_list(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let me = caller();
    let mut state: HashMap<String, String> = HashMap::new();
    let mut stream = watch(&mut client, &me, "").await;
    let (_, mut token) = initial_state(&mut stream).await;
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut live: Vec<String> = Vec::new();
    for round in 0..12 {
        let changes = 1 + random(6);
        for c in 0..changes {
            match (random(3), live.is_empty()) {
                (0, false) => {
                    let id = live.remove(random(live.len() as u64) as usize);
                    client.delete_task(bearer(&me.token, DeleteTaskRequest { id, etag: String::new() })).await.unwrap();
                }
                (1, false) => {
                    let id = live[random(live.len() as u64) as usize].clone();
                    client.update_task(bearer(&me.token, update(&id, &format!("r{round} c{c}")))).await.unwrap();
                }
                _ => live.push(create(&mut client, &me, &format!("r{round} c{c}")).await.id),
            }
        }
        // Read some of the events, then go away and come back from the last one read.
        let mut read = 0;
        let take = random(changes + 1);
        while read < take {
            apply(&mut state, &next(&mut stream, Duration::from_secs(5)).await, &mut token);
            read += 1;
        }
        drop(stream);
        stream = watch(&mut client, &me, &token).await;
        for _ in read..changes {
            apply(&mut state, &next(&mut stream, Duration::from_secs(5)).await, &mut token);
        }
        let listed = client.list_tasks(bearer(&me.token, ListTasksRequest { page_size: 500, ..Default::default() }));
        let listed: HashMap<String, String> =
            listed.await.unwrap().into_inner().tasks.into_iter().map(|t| (t.id, t.title)).collect();
        assert_eq!(state, listed, "round {round}");
    }
}

fn apply(
    state: &mut HashMap<String, String>,
    event: &todo_tests::pb::task::v1::WatchTasksResponse,
    token: &mut String,
) {
    match kind(event) {
        EventType::Upserted => {
            let task = event.task.as_ref().expect("task");
            state.insert(task.id.clone(), task.title.clone());
        }
        EventType::Deleted => {
            state.remove(&event.task_id);
        }
        other => panic!("unexpected {other:?}"),
    }
    *token = event.resume_token.clone();
}

async fn watchers_see_only_their_own_changes_and_tokens(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let (alice, bob) = (caller(), caller());
    create(&mut client, &alice, "alice's").await;
    let mut bobs = watch(&mut client, &bob, "").await;
    let (ids, bob_token) = initial_state(&mut bobs).await;
    assert!(ids.is_empty(), "bob sees none of alice's tasks");
    let mut alices = watch(&mut client, &alice, "").await;
    let (_, alice_token) = initial_state(&mut alices).await;
    create(&mut client, &alice, "alice's second").await;
    let mine = create(&mut client, &bob, "bob's").await;
    let got = next(&mut bobs, Duration::from_secs(5)).await;
    assert_eq!(got.task.map(|t| t.id), Some(mine.id), "bob's first live event is his own");
    let more = tokio::time::timeout(Duration::from_millis(300), bobs.message()).await;
    assert!(more.is_err(), "and nothing of alice's");

    for (label, token) in
        [("another user's", alice_token.as_str()), ("malformed", "not-a-token"), ("altered", &bob_token[1..])]
    {
        let request = WatchTasksRequest { resume_token: token.into() };
        let err = client.watch_tasks(bearer(&bob.token, request)).await.unwrap_err();
        assert_eq!(
            (err.code(), violated_fields(&err)),
            (Code::InvalidArgument, vec!["resume_token".to_owned()]),
            "{label}"
        );
    }
}

async fn a_token_older_than_the_retention_is_failed_precondition(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let me = caller();
    let mut stream = watch(&mut client, &me, "").await;
    initial_state(&mut stream).await;
    for i in 0..3 {
        create(&mut client, &me, &format!("t{i}")).await;
    }
    let first = next(&mut stream, Duration::from_secs(5)).await;
    drop(stream);
    // Retention removed the first two changes: resuming after the first would miss the second.
    let pruned = tasks.db.execute("DELETE FROM task_changes WHERE user_id = $1 AND position <= 2", me.id, None).await;
    assert_eq!(pruned, 2);
    let request = WatchTasksRequest { resume_token: first.resume_token.clone() };
    let err = client.watch_tasks(bearer(&me.token, request)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    // An empty token starts again.
    let mut fresh = watch(&mut client, &me, "").await;
    assert_eq!(initial_state(&mut fresh).await.0.len(), 3);
}

async fn idle_streams_get_bookmarks(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = task_config(&db);
    config.watch.bookmark_interval = Duration::from_millis(500);
    let tasks = start_tasks_with(config, db).await;
    let mut client = task_client(&tasks).await;
    let me = caller();
    let mut stream = watch(&mut client, &me, "").await;
    let (_, current) = initial_state(&mut stream).await;
    let bookmark = next(&mut stream, Duration::from_secs(3)).await;
    assert_eq!(kind(&bookmark), EventType::Bookmark);
    assert!(!bookmark.resume_token.is_empty());
    // Resuming from a bookmark gives what came after it, here nothing yet, then a new change.
    let mut resumed = watch(&mut client, &me, &bookmark.resume_token).await;
    let task = create(&mut client, &me, "after the bookmark").await;
    let event = next(&mut resumed, Duration::from_secs(5)).await;
    assert_eq!((kind(&event), event.task.map(|t| t.id)), (EventType::Upserted, Some(task.id)));
    assert_eq!(bookmark.resume_token, current, "nothing changed between CURRENT and the bookmark");
}

async fn an_idempotent_create_is_one_event_and_its_retries_none(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let me = caller();
    let mut stream = watch(&mut client, &me, "").await;
    initial_state(&mut stream).await;

    let request = CreateTaskRequest { title: "once".into(), request_id: "retry-key-1".into(), ..Default::default() };
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(client.create_task(bearer(&me.token, request.clone())).await.unwrap().into_inner().task.unwrap());
    }
    assert!(created.windows(2).all(|w| w[0] == w[1]), "retries answer with the first call's task");
    let marker = create(&mut client, &me, "marker").await;

    let first = next(&mut stream, Duration::from_secs(5)).await;
    assert_eq!((kind(&first), first.task_id.as_str()), (EventType::Upserted, created[0].id.as_str()));
    let second = next(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(
        (kind(&second), second.task_id.as_str()),
        (EventType::Upserted, marker.id.as_str()),
        "the retries, which changed nothing, are not in the log"
    );
}
