//! Who sees what: another user's task is invisible and untouchable, concurrent reads answer
//! each caller with its own tasks only, and bad tokens are refused by every RPC.

use todo_tests::pb::task::v1::{
    CreateTaskRequest, DeleteTaskRequest, GetTaskRequest, ListTasksRequest, UpdateTaskRequest,
};
use todo_tests::*;
use tonic::Code;
use uuid::Uuid;

on_both_backends!(
    another_user_can_neither_see_nor_change_a_task,
    concurrent_reads_answer_each_caller_with_its_own_tasks_only,
    every_rpc_refuses_bad_tokens_and_writes_nothing,
);

async fn another_user_can_neither_see_nor_change_a_task(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let (alice, bob) = (caller(), caller());
    let task = create(&mut client, &alice, "alice's secret").await;
    let id = Uuid::parse_str(&task.id).unwrap();

    // One request id for all: it is in every error's details, and those are compared below.
    let same = |request| with_request_id(request, "compare-1");
    let get = client.get_task(same(bearer(&bob.token, GetTaskRequest { id: task.id.clone() }))).await.unwrap_err();
    let update = client
        .update_task(with_request_id(
            bearer(
                &bob.token,
                UpdateTaskRequest { id: task.id.clone(), title: Some("pwned".into()), ..Default::default() },
            ),
            "compare-1",
        ))
        .await
        .unwrap_err();
    let delete = client
        .delete_task(with_request_id(
            bearer(&bob.token, DeleteTaskRequest { id: task.id.clone(), etag: String::new() }),
            "compare-1",
        ))
        .await
        .unwrap_err();
    let random =
        client.get_task(same(bearer(&bob.token, GetTaskRequest { id: Uuid::now_v7().to_string() }))).await.unwrap_err();
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
