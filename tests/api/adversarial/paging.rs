//! Extreme page sizes (in every varint encoding) and forged page tokens: invalid arguments that
//! change nothing.

use std::time::Duration;

use prost::Message as _;
use todo_tests::adversary::*;
use todo_tests::pb::task::v1::{CreateTaskRequest, ListTasksRequest, ListTasksResponse};
use todo_tests::*;
use tonic::Code;

use super::assert_task_service_healthy;

on_both_backends!(extreme_page_sizes_and_forged_page_tokens_are_invalid_arguments);

async fn extreme_page_sizes_and_forged_page_tokens_are_invalid_arguments(backend: Backend) {
    watch_panics();
    let tasks = start_tasks(backend).await;
    let channel = tasks.channel().await;
    let mut client = task_client(&tasks).await;
    let (alice, bob) = (caller(), caller());
    for i in 0..5 {
        create(&mut client, &alice, &format!("task {i}")).await;
    }
    create(&mut client, &bob, "bob's").await;
    let before = snapshot(&tasks.db).await;
    let list = |who: &Caller, page_size: i32, page_token: &str, completed: Option<bool>| {
        bearer(&who.token, ListTasksRequest { page_size, page_token: page_token.to_owned(), completed })
    };

    // Page sizes.
    for page_size in [-1, -2, -500, i32::MIN] {
        let err = client.list_tasks(list(&alice, page_size, "", None)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "page_size {page_size}");
        assert_eq!(violated_fields(&err), ["page_size"], "page_size {page_size}");
    }
    for page_size in [0, 1, 500, 501, 10_000, i32::MAX] {
        let page = client.list_tasks(list(&alice, page_size, "", None)).await.unwrap().into_inner();
        assert_eq!(page.tasks.len(), if page_size == 1 { 1 } else { 5 }, "page_size {page_size}");
    }
    // The same numbers in the encodings a hand-written client might send: a 5-byte varint
    // (-1 as an unsigned 32-bit number), a 10-byte varint of all ones, a varint over 64 bits.
    let path = format!("/{}/ListTasks", task_service::SERVICE_NAME);
    let auth = bearer_metadata(&alice.token);
    for (label, body) in [
        ("5-byte varint 0xFFFFFFFF", Wire::new().varint(1, 0xFFFF_FFFF).finish()),
        ("u64::MAX varint", Wire::new().varint(1, u64::MAX).finish()),
        ("2^31 as a varint", Wire::new().varint(1, 1 << 31).finish()),
    ] {
        let err = call_raw(&channel, &path, body, &auth).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{label}: {err:?}");
        assert_eq!(violated_fields(&err), ["page_size"], "{label}");
    }
    let body = Wire::new().varint(1, 1 << 32 | 3).finish();
    let page = ListTasksResponse::decode(call_raw(&channel, &path, body, &auth).await.unwrap().as_slice()).unwrap();
    assert_eq!(page.tasks.len(), 3, "2^32 + 3 truncates to 3 as an int32, as protobuf prescribes");

    // Page tokens.
    let first = client.list_tasks(list(&alice, 2, "", None)).await.unwrap().into_inner();
    let token = first.next_page_token;
    assert!(!token.is_empty());
    let mut forged: Vec<(String, &Caller, String, Option<bool>)> = vec![
        ("another user's".into(), &bob, token.clone(), None),
        ("the filter changed to completed".into(), &alice, token.clone(), Some(true)),
        ("the filter changed to open".into(), &alice, token.clone(), Some(false)),
        ("one character appended".into(), &alice, format!("{token}A"), None),
        ("padded".into(), &alice, format!("{token}=="), None),
        ("doubled".into(), &alice, format!("{token}{token}"), None),
        ("standard base64 alphabet".into(), &alice, token.replace('-', "+").replace('_', "/") + "+", None),
        ("garbage".into(), &alice, "garbage".into(), None),
        ("whitespace".into(), &alice, "   ".into(), None),
        ("unicode".into(), &alice, "ページ".into(), None),
        ("a number".into(), &alice, "2".into(), None),
        ("json".into(), &alice, "eyJvZmZzZXQiOjJ9".into(), None),
        ("all zero bytes".into(), &alice, "A".repeat(token.len()), None),
    ];
    for cut in 1..token.len() {
        forged.push((format!("truncated to {cut} characters"), &alice, token[..cut].to_owned(), None));
    }
    // Every single-character alteration.
    for i in 0..token.len() {
        let mut bytes = token.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        forged.push((format!("character {i} altered"), &alice, String::from_utf8(bytes).unwrap(), None));
    }
    // A token of the same shape minted by a service with another secret.
    let foreign = {
        let db = TestDb::new(backend).await;
        let mut config = task_config(&db);
        config.token.secret =
            todo_shared::token::JwtSecret::new(b"a-completely-different-secret-of-40-bytes".to_vec()).unwrap();
        let other = start_tasks_with(config, db).await;
        let mut other_client = task_client(&other).await;
        let other_keys = todo_shared::token::TokenKeys::new(
            &todo_shared::token::JwtSecret::new(b"a-completely-different-secret-of-40-bytes".to_vec()).unwrap(),
            ISSUER,
            AUDIENCE,
        )
        .unwrap();
        let alice_there = other_keys.mint(alice.id, "a@example.com", Duration::from_secs(60)).unwrap().token;
        for i in 0..3 {
            other_client
                .create_task(bearer(&alice_there, CreateTaskRequest { title: format!("t{i}"), ..Default::default() }))
                .await
                .unwrap();
        }
        let page = other_client
            .list_tasks(bearer(&alice_there, ListTasksRequest { page_size: 1, ..Default::default() }))
            .await
            .unwrap()
            .into_inner();
        page.next_page_token
    };
    forged.push(("minted with another secret".into(), &alice, foreign, None));
    for (label, who, page_token, completed) in &forged {
        let err = client.list_tasks(list(who, 2, page_token, *completed)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{label}: {err:?}");
        assert_eq!(violated_fields(&err), ["page_token"], "{label}");
    }
    // The genuine token still works, for its owner and filter only.
    let second = client.list_tasks(list(&alice, 2, &token, None)).await.unwrap().into_inner();
    assert_eq!(second.tasks.len(), 2);

    assert_eq!(snapshot(&tasks.db).await, before, "listing changed the database");
    assert_task_service_healthy(&tasks).await;
}
