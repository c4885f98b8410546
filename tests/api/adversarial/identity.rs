//! Identity comes only from the token: a user smuggled in metadata and unknown fields is
//! ignored, and another user's task answers exactly as a task that does not exist.

use std::collections::BTreeSet;

use prost::Message as _;
use todo_tests::adversary::*;
use todo_tests::pb::task::v1::{
    CreateTaskRequest, DeleteTaskRequest, GetTaskRequest, ListTasksResponse, UpdateTaskRequest,
};
use todo_tests::*;
use tonic::Code;
use uuid::Uuid;

use super::{assert_task_service_healthy, task_rpcs};

on_both_backends!(identity_comes_only_from_the_token, another_users_task_and_a_random_id_give_identical_not_found);

fn concat(a: Vec<u8>, b: &[u8]) -> Vec<u8> {
    let mut out = a;
    out.extend_from_slice(b);
    out
}

async fn identity_comes_only_from_the_token(backend: Backend) {
    watch_panics();
    let tasks = start_tasks(backend).await;
    let channel = tasks.channel().await;
    let mut client = task_client(&tasks).await;
    let (alice, bob) = (caller(), caller());
    let secret_request =
        CreateTaskRequest { title: "alice's secret".into(), request_id: "shared-key-1".into(), ..Default::default() };
    let alice_task = client.create_task(bearer(&alice.token, secret_request.clone())).await.unwrap().into_inner();
    let alice_task = alice_task.task.unwrap();
    let other_request =
        CreateTaskRequest { title: "alice's diary".into(), request_id: "shared-key-2".into(), ..Default::default() };
    client.create_task(bearer(&alice.token, other_request)).await.unwrap();
    create(&mut client, &bob, "bob's own").await;
    let alice_rows = |rows: &std::collections::BTreeMap<Uuid, TaskRow>| -> Vec<TaskRow> {
        rows.values().filter(|r| r.user_id == alice.id).cloned().collect()
    };
    let alice_before = alice_rows(&task_rows(&tasks.db).await);
    assert_eq!(alice_before.len(), 2);
    let alice_ids: Vec<String> = alice_before.iter().map(|r| r.id.to_string()).collect();

    // Every header a careless server (or proxy) might take a user from, naming alice.
    // (A second `authorization` entry is refused outright: see
    // `two_authorization_entries_are_refused_whichever_comes_first`.)
    let victim = alice.id.to_string();
    let smuggling: Vec<(&str, Metadata)> = vec![
        ("x-user-id", vec![("x-user-id".into(), victim.clone().into_bytes())]),
        ("x-user", vec![("x-user".into(), victim.clone().into_bytes())]),
        ("user-id", vec![("user-id".into(), victim.clone().into_bytes())]),
        ("user_id", vec![("user_id".into(), victim.clone().into_bytes())]),
        ("sub", vec![("sub".into(), victim.clone().into_bytes())]),
        ("x-forwarded-user", vec![("x-forwarded-user".into(), victim.clone().into_bytes())]),
        ("x-remote-user", vec![("x-remote-user".into(), victim.clone().into_bytes())]),
        ("x-authenticated-userid", vec![("x-authenticated-userid".into(), victim.clone().into_bytes())]),
        ("x-user-email", vec![("x-user-email".into(), format!("{victim}@example.com").into_bytes())]),
        ("x-user-id-bin", vec![("x-user-id-bin".into(), alice.id.as_bytes().to_vec())]),
        (
            "all of them at once",
            ["x-user-id", "x-user", "user-id", "x-forwarded-user", "x-remote-user"]
                .into_iter()
                .map(|k| (k.to_owned(), victim.clone().into_bytes()))
                .collect(),
        ),
    ];

    let rpcs = task_rpcs();
    let smuggled_fields = smuggled_user_fields(alice.id);
    for (label, extra) in &smuggling {
        for with_fields in [false, true] {
            let mut metadata = bearer_metadata(&bob.token);
            metadata.extend(extra.iter().cloned());
            for rpc in &rpcs {
                let mut body = sample_request(rpc, &alice_task.id);
                if with_fields {
                    body = concat(body, &smuggled_fields);
                }
                let context = format!("{} with {label}, unknown fields: {with_fields}", rpc.name);
                let result = call_raw(&channel, &rpc.path, body, &metadata).await;
                let seen = match &result {
                    Ok(bytes) => bytes.clone(),
                    Err(err) => [err.message().as_bytes(), err.details()].concat(),
                };
                for secret in alice_ids.iter().map(String::as_str).chain(["alice's"]) {
                    assert!(!contains(&seen, secret.as_bytes()), "{context}: the answer shows {secret}");
                }
                // Alice's task id names no task of bob's.
                if rpc.takes_id() {
                    assert_eq!(result.unwrap_err().code(), Code::NotFound, "{context}");
                } else {
                    result.unwrap_or_else(|e| panic!("{context}: {e:?}"));
                }
            }

            // Bob's listing, taken apart: exactly bob's tasks, as the database has them.
            let rpc = rpcs.iter().find(|r| r.name == "ListTasks").unwrap();
            let body = Wire::new().varint(1, 500).raw(&smuggled_fields).finish();
            let page = call_raw(&channel, &rpc.path, body, &metadata).await.unwrap();
            let page = ListTasksResponse::decode(page.as_slice()).unwrap();
            let listed: BTreeSet<Uuid> = page.tasks.iter().map(|t| Uuid::parse_str(&t.id).unwrap()).collect();
            let rows = task_rows(&tasks.db).await;
            let bobs: BTreeSet<Uuid> = rows.values().filter(|r| r.user_id == bob.id).map(|r| r.id).collect();
            assert_eq!(listed, bobs, "{label}");
        }
    }

    // Idempotency keys are per user: bob reusing alice's keys gets tasks of his own, and a key
    // alice used with other content is not "reused with different content" for bob.
    let mut metadata = bearer_metadata(&bob.token);
    metadata.extend(smuggling[0].1.iter().cloned());
    let create_path = rpcs.iter().find(|r| r.name == "CreateTask").unwrap().path.clone();
    let differs =
        CreateTaskRequest { title: "bob's own copy".into(), request_id: "shared-key-2".into(), ..Default::default() };
    for request in [secret_request, differs] {
        let body = concat(request.encode_to_vec(), &smuggled_fields);
        let created = call_raw(&channel, &create_path, body, &metadata)
            .await
            .unwrap_or_else(|e| panic!("bob's CreateTask with alice's request_id {:?}: {e:?}", request.request_id));
        let created = todo_tests::pb::task::v1::CreateTaskResponse::decode(created.as_slice()).unwrap().task.unwrap();
        assert!(!alice_ids.contains(&created.id), "bob was given alice's task for her request_id");
        let row = task_rows(&tasks.db).await[&Uuid::parse_str(&created.id).unwrap()].clone();
        assert_eq!(row.user_id, bob.id);
    }

    // Alice's tasks are exactly as they were; every task created above is bob's.
    let rows = task_rows(&tasks.db).await;
    assert_eq!(alice_rows(&rows), alice_before);
    assert!(rows.values().all(|r| r.user_id == alice.id || r.user_id == bob.id));
    let got = client.get_task(bearer(&alice.token, GetTaskRequest { id: alice_task.id.clone() })).await.unwrap();
    assert_eq!(got.into_inner().task, Some(alice_task));
    assert_task_service_healthy(&tasks).await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn another_users_task_and_a_random_id_give_identical_not_found(backend: Backend) {
    watch_panics();
    let tasks = start_tasks(backend).await;
    let channel = tasks.channel().await;
    let mut client = task_client(&tasks).await;
    let (alice, bob) = (caller(), caller());
    let first = create(&mut client, &alice, "alice's").await;
    let update = UpdateTaskRequest { id: first.id.clone(), description: Some("v2".into()), ..Default::default() };
    let task = client.update_task(bearer(&alice.token, update)).await.unwrap().into_inner().task.unwrap();
    let (current_etag, stale_etag) = (task.etag.clone(), first.etag.clone());
    assert_ne!(current_etag, stale_etag);
    create(&mut client, &bob, "bob's").await;
    let gone = create(&mut client, &bob, "bob's, deleted").await;
    client
        .delete_task(bearer(&bob.token, DeleteTaskRequest { id: gone.id.clone(), etag: String::new() }))
        .await
        .unwrap();
    let before = snapshot(&tasks.db).await;

    let id = Uuid::parse_str(&task.id).unwrap();
    // Every spelling of alice's id that parses as her UUID.
    let alice_spellings = [
        id.hyphenated().to_string(),
        id.hyphenated().to_string().to_uppercase(),
        id.simple().to_string(),
        id.braced().to_string(),
        id.urn().to_string(),
        format!("  {id}\t"),
    ];
    let id_rpcs: Vec<Rpc> = task_rpcs().into_iter().filter(Rpc::takes_id).collect();
    let names: BTreeSet<&str> = id_rpcs.iter().map(|r| r.name.as_str()).collect();
    assert!(["GetTask", "UpdateTask", "DeleteTask"].iter().all(|n| names.contains(n)), "{names:?}");

    // One request id for every call: it is in every error's details, and those are compared.
    let compared = |token: &str| {
        let mut metadata = bearer_metadata(token);
        metadata.push(("x-request-id".to_owned(), b"compare-3".to_vec()));
        metadata
    };
    for rpc in &id_rpcs {
        // With an etag field: no etag, alice's current one, a stale one, a foreign one. Even the
        // right etag must not turn NOT_FOUND into ABORTED or OK.
        let etags: Vec<&str> = match rpc.input_field("etag") {
            Some(_) => vec!["", &current_etag, &stale_etag, "\"999\"", "garbage"],
            None => vec![""],
        };
        for etag in etags {
            let body = |id: &str| {
                let mut body = sample_request(rpc, id);
                if let Some(field) = rpc.input_field("etag").filter(|_| !etag.is_empty()) {
                    body.extend(Wire::new().string(u32::try_from(field.number()).unwrap(), etag).finish());
                }
                body
            };
            let context = |what: &str| format!("{} (etag {etag:?}) by bob on {what}", rpc.name);
            let random = call_raw(&channel, &rpc.path, body(&Uuid::now_v7().to_string()), &compared(&bob.token))
                .await
                .unwrap_err();
            assert_eq!(random.code(), Code::NotFound, "{}: {random:?}", context("a random id"));
            let reference = observable(&random);

            let mut others: Vec<(String, String, &Caller)> =
                alice_spellings.iter().map(|s| (format!("alice's task as {s:?}"), s.clone(), &bob)).collect();
            others.push(("another random v7 id".into(), Uuid::now_v7().to_string(), &bob));
            others.push(("a random v4 id".into(), Uuid::new_v4().to_string(), &bob));
            others.push(("the nil id".into(), Uuid::nil().to_string(), &bob));
            others.push(("bob's own deleted task".into(), gone.id.clone(), &bob));
            others.push(("a random id, asked by alice".into(), Uuid::now_v7().to_string(), &alice));
            others.push(("bob's deleted task, asked by alice".into(), gone.id.clone(), &alice));
            for (what, target, who) in others {
                let err = call_raw(&channel, &rpc.path, body(&target), &compared(&who.token))
                    .await
                    .expect_err(&context(&what));
                assert_eq!(observable(&err), reference, "{}: not the answer for a random id", context(&what));
            }
        }
    }

    assert_eq!(snapshot(&tasks.db).await, before, "bob's attempts changed the database");
    let got = client.get_task(bearer(&alice.token, GetTaskRequest { id: task.id.clone() })).await.unwrap();
    assert_eq!(got.into_inner().task, Some(task));
    assert_task_service_healthy(&tasks).await;
}
