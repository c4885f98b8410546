//! Listing: paging through many tasks (also while they change), page tokens, page sizes and
//! the `completed` filter.

use std::collections::{HashMap, HashSet};

use todo_tests::pb::task::v1::task_service_client::TaskServiceClient;
use todo_tests::pb::task::v1::{CreateTaskRequest, DeleteTaskRequest, ListTasksRequest, UpdateTaskRequest};
use todo_tests::*;
use tonic::Code;
use tonic::transport::Channel;

on_both_backends!(
    paging_through_a_thousand_tasks_returns_each_exactly_once,
    paging_stays_exact_while_tasks_are_inserted_and_deleted,
    forged_cross_user_and_refiltered_page_tokens_are_invalid,
    page_size_defaults_caps_and_refuses_negatives,
    completed_filter_lists_only_matching_tasks,
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
