//! Writes: invalid requests name their field, etags settle concurrent updates and stale
//! deletes, and a `request_id` makes CreateTask idempotent per user.

use std::collections::HashSet;

use todo_tests::pb::task::v1::task_service_client::TaskServiceClient;
use todo_tests::pb::task::v1::{CreateTaskRequest, DeleteTaskRequest, GetTaskRequest, Task, UpdateTaskRequest};
use todo_tests::*;
use tonic::Code;
use uuid::Uuid;

on_both_backends!(
    each_invalid_request_class_names_its_field,
    concurrent_updates_with_the_same_etag_have_one_winner,
    stale_etag_on_delete_is_aborted_and_deletes_nothing,
    create_with_a_request_id_is_idempotent_per_user,
);

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
