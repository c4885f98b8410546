//! task-service, observed through its generated client with tokens minted by the shared keys.

use std::collections::{HashMap, HashSet};

use todo_tests::pb::task::v1::task_service_client::TaskServiceClient;
use todo_tests::pb::task::v1::{
    CreateTaskRequest, DeleteTaskRequest, GetTaskRequest, ListTasksRequest, Task, UpdateTaskRequest,
};
use todo_tests::*;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

on_both_backends!(
    another_user_can_neither_see_nor_change_a_task,
    concurrent_reads_answer_each_caller_with_its_own_tasks_only,
    every_rpc_refuses_bad_tokens_and_writes_nothing,
    paging_through_a_thousand_tasks_returns_each_exactly_once,
    paging_stays_exact_while_tasks_are_inserted_and_deleted,
    forged_cross_user_and_refiltered_page_tokens_are_invalid,
    page_size_defaults_caps_and_refuses_negatives,
    completed_filter_lists_only_matching_tasks,
    each_invalid_request_class_names_its_field,
    concurrent_updates_with_the_same_etag_have_one_winner,
    stale_etag_on_delete_is_aborted_and_deletes_nothing,
    create_with_a_request_id_is_idempotent_per_user,
);

/// Creates `n` tasks for `who` with 16 requests in flight.
async fn create_many(running: &Running, who: &Caller, n: usize) -> Vec<String> {
    let mut handles = Vec::new();
    for worker in 0..16 {
        let mut client = task_client(running).await;
        let token = who.token.clone();
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (worker..n).step_by(16) {
                let request = bearer(&token, CreateTaskRequest { title: format!("task {i}"), ..Default::default() });
                ids.push(client.create_task(request).await.unwrap().into_inner().task.unwrap().id);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for handle in handles {
        ids.extend(handle.await.unwrap());
    }
    ids
}

/// Follows next_page_token to the end; returns the ids in the order received.
async fn walk(
    client: &mut TaskServiceClient<Channel>,
    who: &Caller,
    page_size: i32,
    completed: Option<bool>,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_tasks(bearer(&who.token, ListTasksRequest { page_size, page_token, completed }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.tasks.len() <= page_size as usize);
        ids.extend(page.tasks.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

async fn another_user_can_neither_see_nor_change_a_task(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let (alice, bob) = (caller(), caller());
    let task = create(&mut client, &alice, "alice's secret").await;
    let id = Uuid::parse_str(&task.id).unwrap();

    let get = client.get_task(bearer(&bob.token, GetTaskRequest { id: task.id.clone() })).await.unwrap_err();
    let update = client
        .update_task(bearer(
            &bob.token,
            UpdateTaskRequest { id: task.id.clone(), title: Some("pwned".into()), ..Default::default() },
        ))
        .await
        .unwrap_err();
    let delete = client
        .delete_task(bearer(&bob.token, DeleteTaskRequest { id: task.id.clone(), etag: String::new() }))
        .await
        .unwrap_err();
    let random =
        client.get_task(bearer(&bob.token, GetTaskRequest { id: Uuid::now_v7().to_string() })).await.unwrap_err();
    for err in [&get, &update, &delete] {
        assert_eq!(err.code(), Code::NotFound);
        // Byte for byte what a task that does not exist gives: existence does not leak.
        assert_eq!(err.message(), random.message());
        assert_eq!(err.details(), random.details());
    }
    let listed = client.list_tasks(bearer(&bob.token, ListTasksRequest::default())).await.unwrap().into_inner();
    assert!(listed.tasks.is_empty());

    assert_eq!(tasks.db.scalar("SELECT version FROM tasks WHERE id = $1", Some(id)).await, 1);
    assert_eq!(tasks.db.text("SELECT title FROM tasks WHERE id = $1", id).await, "alice's secret");
    assert_eq!(tasks.db.scalar("SELECT count(*) FROM tasks WHERE user_id = $1", Some(alice.id)).await, 1);
    let still_there = client.get_task(bearer(&alice.token, GetTaskRequest { id: task.id.clone() })).await.unwrap();
    assert_eq!(still_there.into_inner().task, Some(task));
}

/// Many GetTasks at once, from two users asking for their own tasks, each other's and ones
/// that do not exist: under load PostgreSQL answers them in shared queries, and still each
/// caller sees exactly its own tasks, and NOT_FOUND, the same as for a missing task, for the rest.
async fn concurrent_reads_answer_each_caller_with_its_own_tasks_only(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let (alice, bob) = (caller(), caller());
    let mut owned: Vec<(String, String)> = Vec::new();
    for (who, name) in [(&alice, "alice"), (&bob, "bob")] {
        for i in 0..4 {
            let task = create(&mut client, who, &format!("{name} {i}")).await;
            owned.push((name.to_owned(), task.id));
        }
    }
    let missing = Uuid::now_v7().to_string();

    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(task_client(&tasks).await);
    }
    let mut handles = Vec::new();
    for worker in 0..64 {
        let mut client = clients[worker % clients.len()].clone();
        let (who, name) = if worker % 2 == 0 { (&alice, "alice") } else { (&bob, "bob") };
        let (owner, id) = match worker % 3 {
            2 => (None, missing.clone()),
            _ => {
                let (owner, id) = owned[worker % owned.len()].clone();
                (Some(owner), id)
            }
        };
        let token = who.token.clone();
        let name = name.to_owned();
        handles.push(tokio::spawn(async move {
            let got = client.get_task(bearer(&token, GetTaskRequest { id: id.clone() })).await;
            (name, owner, id, got)
        }));
    }
    let (mut found, mut refused) = (0, 0);
    for handle in handles {
        let (asker, owner, id, got) = handle.await.unwrap();
        if owner.as_deref() == Some(asker.as_str()) {
            let task = got.unwrap().into_inner().task.unwrap();
            assert_eq!(task.id, id);
            assert!(task.title.starts_with(&asker), "{asker} got {:?}", task.title);
            found += 1;
        } else {
            let err = got.unwrap_err();
            assert_eq!((err.code(), err.message()), (Code::NotFound, "task not found"), "{asker} asking for {id}");
            refused += 1;
        }
    }
    assert!(found > 0 && refused > 0, "found {found}, refused {refused}");
}

async fn every_rpc_refuses_bad_tokens_and_writes_nothing(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let owner = caller();
    let task = create(&mut client, &owner, "untouchable").await;

    for (label, authorization) in bad_authorizations(owner.id) {
        let results = [
            client
                .create_task(authorized(&authorization, CreateTaskRequest { title: "x".into(), ..Default::default() }))
                .await
                .map(drop),
            client.get_task(authorized(&authorization, GetTaskRequest { id: task.id.clone() })).await.map(drop),
            client.list_tasks(authorized(&authorization, ListTasksRequest::default())).await.map(drop),
            client
                .update_task(authorized(
                    &authorization,
                    UpdateTaskRequest { id: task.id.clone(), completed: Some(true), ..Default::default() },
                ))
                .await
                .map(drop),
            client
                .delete_task(authorized(&authorization, DeleteTaskRequest { id: task.id.clone(), etag: String::new() }))
                .await
                .map(drop),
        ];
        for (rpc, result) in results.into_iter().enumerate() {
            let err = result.expect_err(label);
            assert_eq!(err.code(), Code::Unauthenticated, "{label}, rpc #{rpc}: {err:?}");
        }
    }
    assert_eq!(tasks.db.scalar("SELECT count(*) FROM tasks", None).await, 1);
    let id = Uuid::parse_str(&task.id).unwrap();
    assert_eq!(tasks.db.scalar("SELECT version FROM tasks WHERE id = $1", Some(id)).await, 1);
}

async fn paging_through_a_thousand_tasks_returns_each_exactly_once(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let owner = caller();
    let created: HashSet<String> = create_many(&tasks, &owner, 1000).await.into_iter().collect();
    assert_eq!(created.len(), 1000);
    create(&mut client, &caller(), "someone else's").await;

    for page_size in [1, 7, 500] {
        let ids = walk(&mut client, &owner, page_size, None).await;
        assert_eq!(ids.len(), 1000, "page size {page_size}");
        assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), created, "page size {page_size}");
    }

    // Newest first, ties broken by id: the order is total and the same on every walk.
    let full = client
        .list_tasks(bearer(&owner.token, ListTasksRequest { page_size: 500, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<_> =
        full.tasks.iter().map(|t| (t.create_time.as_ref().map(|c| (c.seconds, c.nanos)), t.id.clone())).collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(keys, sorted);
}

async fn paging_stays_exact_while_tasks_are_inserted_and_deleted(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let owner = caller();
    let ids = create_many(&tasks, &owner, 300).await;
    // Every third task may be deleted during the walk; the others must each be seen once.
    let deletable: Vec<String> = ids.iter().step_by(3).cloned().collect();
    let stable: HashSet<String> = ids.iter().filter(|id| !deletable.contains(id)).cloned().collect();

    let mut writer = task_client(&tasks).await;
    let token = owner.token.clone();
    let churn = tokio::spawn(async move {
        for (i, id) in deletable.into_iter().enumerate() {
            writer
                .create_task(bearer(&token, CreateTaskRequest { title: format!("new {i}"), ..Default::default() }))
                .await
                .unwrap();
            writer.delete_task(bearer(&token, DeleteTaskRequest { id, etag: String::new() })).await.unwrap();
        }
    });
    let seen = walk(&mut client, &owner, 7, None).await;
    churn.await.unwrap();

    let mut counts: HashMap<&String, usize> = HashMap::new();
    for id in &seen {
        *counts.entry(id).or_default() += 1;
    }
    assert!(counts.values().all(|&n| n == 1), "a task was returned twice");
    for id in &stable {
        assert_eq!(counts.get(id), Some(&1), "task {id} was skipped");
    }
}

async fn forged_cross_user_and_refiltered_page_tokens_are_invalid(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let (alice, bob) = (caller(), caller());
    create_many(&tasks, &alice, 5).await;
    let mut client = task_client(&tasks).await;
    let first = client
        .list_tasks(bearer(&alice.token, ListTasksRequest { page_size: 2, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token;
    assert!(!token.is_empty());

    let mut flipped = token.clone().into_bytes();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let cases = [
        ("another user's token", &bob, token.clone(), None),
        ("truncated", &alice, token[..token.len() - 4].to_owned(), None),
        ("one character changed", &alice, String::from_utf8(flipped).unwrap(), None),
        ("an offset", &alice, "2".to_owned(), None),
        ("base64 json", &alice, "eyJvZmZzZXQiOjJ9".to_owned(), None),
        ("filter changed", &alice, token.clone(), Some(true)),
    ];
    for (label, who, page_token, completed) in cases {
        let err = client
            .list_tasks(bearer(&who.token, ListTasksRequest { page_size: 2, page_token, completed }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{label}");
        assert_eq!(violated_fields(&err), ["page_token"], "{label}");
    }
    // The genuine token still works for its owner.
    let second = client
        .list_tasks(bearer(&alice.token, ListTasksRequest { page_size: 2, page_token: token, completed: None }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.tasks.len(), 2);
}

async fn page_size_defaults_caps_and_refuses_negatives(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let owner = caller();
    create_many(&tasks, &owner, 520).await;
    let mut client = task_client(&tasks).await;
    let list = |page_size| bearer(&owner.token, ListTasksRequest { page_size, ..Default::default() });

    let default = client.list_tasks(list(0)).await.unwrap().into_inner();
    assert_eq!(default.tasks.len(), 50);
    assert!(!default.next_page_token.is_empty());
    let capped = client.list_tasks(list(i32::MAX)).await.unwrap().into_inner();
    assert_eq!(capped.tasks.len(), 500);
    let err = client.list_tasks(list(-1)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["page_size"]);
}

async fn completed_filter_lists_only_matching_tasks(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let owner = caller();
    let mut done = HashSet::new();
    for i in 0..9 {
        let task = create(&mut client, &owner, &format!("task {i}")).await;
        if i % 3 == 0 {
            let update = UpdateTaskRequest { id: task.id.clone(), completed: Some(true), ..Default::default() };
            client.update_task(bearer(&owner.token, update)).await.unwrap();
            done.insert(task.id);
        }
    }
    let completed: HashSet<String> = walk(&mut client, &owner, 2, Some(true)).await.into_iter().collect();
    assert_eq!(completed, done);
    let open = walk(&mut client, &owner, 2, Some(false)).await;
    assert_eq!(open.len(), 6);
    assert!(open.iter().all(|id| !done.contains(id)));
}

async fn each_invalid_request_class_names_its_field(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let owner = caller();
    let task = create(&mut client, &owner, "valid").await;
    let token = &owner.token;

    let creates = [
        ("empty title", CreateTaskRequest { title: "".into(), ..Default::default() }, vec!["title"]),
        ("whitespace title", CreateTaskRequest { title: " \t\n ".into(), ..Default::default() }, vec!["title"]),
        ("201-character title", CreateTaskRequest { title: "x".repeat(201), ..Default::default() }, vec!["title"]),
        (
            "10,001-character description",
            CreateTaskRequest { title: "ok".into(), description: "d".repeat(10_001), ..Default::default() },
            vec!["description"],
        ),
        (
            "bad due_time nanos",
            CreateTaskRequest {
                title: "ok".into(),
                due_time: Some(prost_types::Timestamp { seconds: 0, nanos: -5 }),
                ..Default::default()
            },
            vec!["due_time"],
        ),
    ];
    for (label, request, fields) in creates {
        let err = client.create_task(bearer(token, request)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{label}");
        assert_eq!(violated_fields(&err), fields, "{label}");
    }

    let empty_update = client
        .update_task(bearer(token, UpdateTaskRequest { id: task.id.clone(), ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(empty_update.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&empty_update), ["update"]);
    let blank_title = UpdateTaskRequest { id: task.id.clone(), title: Some("  ".into()), ..Default::default() };
    assert_eq!(violated_fields(&client.update_task(bearer(token, blank_title)).await.unwrap_err()), ["title"]);

    for malformed in ["", "not-a-uuid", "123", "0192f0c1-7b5e-7c3a-9d4e"] {
        let get = client.get_task(bearer(token, GetTaskRequest { id: malformed.into() })).await.unwrap_err();
        let update = client
            .update_task(bearer(
                token,
                UpdateTaskRequest { id: malformed.into(), completed: Some(true), ..Default::default() },
            ))
            .await
            .unwrap_err();
        let delete = client
            .delete_task(bearer(token, DeleteTaskRequest { id: malformed.into(), etag: String::new() }))
            .await
            .unwrap_err();
        for err in [get, update, delete] {
            assert_eq!(err.code(), Code::InvalidArgument, "{malformed:?}");
            assert_eq!(violated_fields(&err), ["id"], "{malformed:?}");
        }
    }

    // Nothing was written by any of them.
    assert_eq!(tasks.db.scalar("SELECT count(*) FROM tasks", None).await, 1);
    let id = Uuid::parse_str(&task.id).unwrap();
    assert_eq!(tasks.db.scalar("SELECT version FROM tasks WHERE id = $1", Some(id)).await, 1);
    // The limits themselves are accepted.
    let edge = CreateTaskRequest { title: "é".repeat(200), description: "é".repeat(10_000), ..Default::default() };
    client.create_task(bearer(token, edge)).await.unwrap();
}

async fn concurrent_updates_with_the_same_etag_have_one_winner(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let owner = caller();
    let task = create(&mut client, &owner, "contended").await;

    let attempts: Vec<_> = ["first", "second", "third", "fourth"]
        .into_iter()
        .map(|title| {
            let url = tasks.url();
            let request = UpdateTaskRequest {
                id: task.id.clone(),
                title: Some(title.into()),
                etag: task.etag.clone(),
                ..Default::default()
            };
            let token = owner.token.clone();
            tokio::spawn(async move {
                let mut client = TaskServiceClient::connect(url).await.unwrap();
                client
                    .update_task(bearer(&token, request))
                    .await
                    .map(|r| r.into_inner().task.unwrap())
                    .map_err(|s| s.code())
            })
        })
        .collect();
    let mut results = Vec::new();
    for attempt in attempts {
        results.push(attempt.await.unwrap());
    }
    let winners: Vec<&Task> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|c| *c == Code::Aborted), "{results:?}");

    let id = Uuid::parse_str(&task.id).unwrap();
    assert_eq!(tasks.db.scalar("SELECT version FROM tasks WHERE id = $1", Some(id)).await, 2);
    assert_eq!(tasks.db.text("SELECT title FROM tasks WHERE id = $1", id).await, winners[0].title);

    // The winner's etag is the current one and works; the stale one keeps failing.
    let stale =
        UpdateTaskRequest { id: task.id.clone(), completed: Some(true), etag: task.etag.clone(), ..Default::default() };
    assert_eq!(client.update_task(bearer(&owner.token, stale)).await.unwrap_err().code(), Code::Aborted);
    let fresh = UpdateTaskRequest {
        id: task.id.clone(),
        completed: Some(true),
        etag: winners[0].etag.clone(),
        ..Default::default()
    };
    client.update_task(bearer(&owner.token, fresh)).await.unwrap();
}

async fn stale_etag_on_delete_is_aborted_and_deletes_nothing(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let owner = caller();
    let task = create(&mut client, &owner, "keep me").await;
    let update = UpdateTaskRequest { id: task.id.clone(), description: Some("changed".into()), ..Default::default() };
    let updated = client.update_task(bearer(&owner.token, update)).await.unwrap().into_inner().task.unwrap();

    // Stale, foreign, and near-misses of the current etag ("2"): only the etag as issued
    // (or its bare number) names a version.
    assert_eq!(updated.etag, "\"2\"");
    for etag in [task.etag.clone(), "bogus".to_owned(), "\"02\"".to_owned(), "+2".to_owned(), " \"2\"".to_owned()] {
        let err = client
            .delete_task(bearer(&owner.token, DeleteTaskRequest { id: task.id.clone(), etag: etag.clone() }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Aborted, "{etag:?}");
    }
    assert_eq!(tasks.db.scalar("SELECT count(*) FROM tasks", None).await, 1);
    client
        .delete_task(bearer(&owner.token, DeleteTaskRequest { id: task.id.clone(), etag: updated.etag }))
        .await
        .unwrap();
    assert_eq!(tasks.db.scalar("SELECT count(*) FROM tasks", None).await, 0);
}

async fn create_with_a_request_id_is_idempotent_per_user(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let (alice, bob) = (caller(), caller());
    let mut client = task_client(&tasks).await;
    let request = |title: &str, request_id: &str| CreateTaskRequest {
        title: title.into(),
        description: "once".into(),
        due_time: Some(prost_types::Timestamp { seconds: 1_900_000_000, nanos: 0 }),
        request_id: request_id.into(),
    };
    let key = Uuid::new_v4().to_string();
    let count = |user: Uuid| {
        let db = &tasks.db;
        async move { db.scalar("SELECT count(*) FROM tasks WHERE user_id = $1", Some(user)).await }
    };

    let first =
        client.create_task(bearer(&alice.token, request("Pay rent", &key))).await.unwrap().into_inner().task.unwrap();
    let again =
        client.create_task(bearer(&alice.token, request("Pay rent", &key))).await.unwrap().into_inner().task.unwrap();
    assert_eq!(again, first, "a retry returns the task the first call created");
    assert_eq!(count(alice.id).await, 1);

    // Ten retries at once (a client that timed out and retried on every connection).
    let parallel_key = Uuid::new_v4().to_string();
    let mut handles = Vec::new();
    for _ in 0..10 {
        let mut client = task_client(&tasks).await;
        let (token, req) = (alice.token.clone(), request("Renew passport", &parallel_key));
        handles.push(tokio::spawn(async move {
            client.create_task(bearer(&token, req)).await.unwrap().into_inner().task.unwrap()
        }));
    }
    let mut ids = HashSet::new();
    for handle in handles {
        ids.insert(handle.await.unwrap().id);
    }
    assert_eq!(ids.len(), 1, "parallel retries all get the same task");
    assert_eq!(count(alice.id).await, 2, "and exactly one row was created");

    // The same key with different content is a client bug, not a retry.
    let reused = client.create_task(bearer(&alice.token, request("Pay the gas bill", &key))).await.unwrap_err();
    assert_eq!(reused.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&reused), ["request_id"]);
    assert!(reused.message().ends_with("request_id: was already used for a task with a different title, description or due time: use a new request_id for a new task"), "{reused:?}");
    assert_eq!(count(alice.id).await, 2, "nothing written");

    // Keys are per user: Bob's identical key creates Bob's own task.
    let bobs =
        client.create_task(bearer(&bob.token, request("Pay rent", &key))).await.unwrap().into_inner().task.unwrap();
    assert_ne!(bobs.id, first.id);
    assert_eq!(count(bob.id).await, 1);

    // A retry after the task was updated returns it as it is now; after it was deleted, NOT_FOUND
    // and nothing is re-created.
    let done = UpdateTaskRequest { id: first.id.clone(), completed: Some(true), ..Default::default() };
    let updated = client.update_task(bearer(&alice.token, done)).await.unwrap().into_inner().task.unwrap();
    let again =
        client.create_task(bearer(&alice.token, request("Pay rent", &key))).await.unwrap().into_inner().task.unwrap();
    assert_eq!(again, updated);
    client
        .delete_task(bearer(&alice.token, DeleteTaskRequest { id: first.id.clone(), etag: String::new() }))
        .await
        .unwrap();
    let gone = client.create_task(bearer(&alice.token, request("Pay rent", &key))).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(count(alice.id).await, 1, "only the parallel one is left");

    for bad in ["has space", "\u{e9}t\u{e9}", &"x".repeat(129)] {
        let status = client.create_task(bearer(&alice.token, request("Bad key", bad))).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
        assert_eq!(violated_fields(&status), ["request_id"], "{bad:?}");
    }
    assert_eq!(count(alice.id).await, 1);
}
