//! Oversized requests: messages over the decoding limit, fields over their own limits, and an
//! `authorization` value beyond the HTTP/2 header-list limit.

use prost::Message as _;
use todo_tests::adversary::*;
use todo_tests::pb::auth::v1::{LoginRequest, SignUpRequest};
use todo_tests::pb::task::v1::{
    CreateTaskRequest, DeleteTaskRequest, GetTaskRequest, ListTasksRequest, UpdateTaskRequest,
};
use todo_tests::*;
use tonic::Code;

use super::{AUTH_LIMIT, PASSWORD, TASK_LIMIT, assert_auth_service_healthy, assert_task_service_healthy, task_rpcs};

on_both_backends!(
    oversized_task_requests_are_refused_and_the_service_stays_healthy,
    oversized_auth_requests_are_refused_and_the_service_stays_healthy,
    authorization_beyond_the_header_limit_is_refused,
);

/// The answer to a request message over the server's decoding limit: RESOURCE_EXHAUSTED, as
/// the gRPC status-code guide names it (tonic itself says OUT_OF_RANGE; the server rewrites it).
const OVERSIZED: [Code; 1] = [Code::ResourceExhausted];

/// A CreateTask request of exactly `size` encoded bytes: title "ok" and a description of
/// ASCII filler.
fn create_task_of_size(size: usize) -> Vec<u8> {
    let fixed = CreateTaskRequest { title: "ok".into(), ..Default::default() }.encoded_len();
    // Field key (1 byte) + length varint + the description itself.
    let mut len = size - fixed - 1;
    while len + prost::length_delimiter_len(len) > size - fixed - 1 {
        len -= 1;
    }
    let body =
        CreateTaskRequest { title: "ok".into(), description: "d".repeat(len), ..Default::default() }.encode_to_vec();
    assert_eq!(body.len(), size, "could not build a request of exactly {size} bytes");
    body
}

async fn oversized_task_requests_are_refused_and_the_service_stays_healthy(backend: Backend) {
    watch_panics();
    let tasks = start_tasks(backend).await;
    let channel = tasks.channel().await;
    let mut client = task_client(&tasks).await;
    let owner = caller();
    let task = create(&mut client, &owner, "keep").await;
    let before = snapshot(&tasks.db).await;
    let auth = bearer_metadata(&owner.token);
    let path = |name: &str| format!("/{}/{name}", task_service::SERVICE_NAME);

    // At the limit the message is decoded (and refused for its description); one byte over,
    // it is not decoded at all; far over, the same.
    let at_limit = call_raw(&channel, &path("CreateTask"), create_task_of_size(TASK_LIMIT), &auth).await.unwrap_err();
    assert_eq!(at_limit.code(), Code::InvalidArgument, "{at_limit:?}");
    assert_eq!(violated_fields(&at_limit), ["description"]);
    for size in [TASK_LIMIT + 1, 4 * TASK_LIMIT, 8 * 1024 * 1024] {
        let err = call_raw(&channel, &path("CreateTask"), create_task_of_size(size), &auth).await.unwrap_err();
        assert!(OVERSIZED.contains(&err.code()), "CreateTask of {size} bytes: {err:?}");
        eprintln!("CreateTask of {size} bytes: {:?} {:?}", err.code(), err.message());
    }
    let huge_list = Wire::new().varint(1, 10).bytes(2, &vec![b'A'; TASK_LIMIT + 10]).finish();
    let err = call_raw(&channel, &path("ListTasks"), huge_list, &auth).await.unwrap_err();
    assert!(OVERSIZED.contains(&err.code()), "{err:?}");
    // Without a token, the token is refused first: an anonymous client cannot make the
    // server read a big message.
    let err = call_raw(&channel, &path("CreateTask"), create_task_of_size(4 * TASK_LIMIT), &Metadata::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Fields over their own limits inside a message under the decoding limit.
    let long = "x".repeat(60_000);
    let creates = [
        ("201-character title", CreateTaskRequest { title: "t".repeat(201), ..Default::default() }, "title"),
        ("201 four-byte characters", CreateTaskRequest { title: "😀".repeat(201), ..Default::default() }, "title"),
        (
            "10,001 four-byte characters",
            CreateTaskRequest { title: "ok".into(), description: "😀".repeat(10_001), ..Default::default() },
            "description",
        ),
        ("60 KB title", CreateTaskRequest { title: long.clone(), ..Default::default() }, "title"),
        (
            "129-character request_id",
            CreateTaskRequest { title: "ok".into(), request_id: "r".repeat(129), ..Default::default() },
            "request_id",
        ),
        (
            "60 KB request_id",
            CreateTaskRequest { title: "ok".into(), request_id: long.clone(), ..Default::default() },
            "request_id",
        ),
    ];
    for (label, request, field) in creates {
        let err = client.create_task(bearer(&owner.token, request)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{label}: {err:?}");
        assert_eq!(violated_fields(&err), [field], "{label}");
    }
    let err = client.get_task(bearer(&owner.token, GetTaskRequest { id: long.clone() })).await.unwrap_err();
    assert_eq!((err.code(), violated_fields(&err)), (Code::InvalidArgument, vec!["id".to_owned()]));
    let stale =
        UpdateTaskRequest { id: task.id.clone(), completed: Some(true), etag: long.clone(), ..Default::default() };
    assert_eq!(client.update_task(bearer(&owner.token, stale)).await.unwrap_err().code(), Code::Aborted);
    let delete = DeleteTaskRequest { id: task.id.clone(), etag: long.clone() };
    assert_eq!(client.delete_task(bearer(&owner.token, delete)).await.unwrap_err().code(), Code::Aborted);
    let list = ListTasksRequest { page_token: long, ..Default::default() };
    let err = client.list_tasks(bearer(&owner.token, list)).await.unwrap_err();
    assert_eq!((err.code(), violated_fields(&err)), (Code::InvalidArgument, vec!["page_token".to_owned()]));

    assert_eq!(snapshot(&tasks.db).await, before, "a refused request changed the database");
    assert_task_service_healthy(&tasks).await;
}

/// A SignUp request of exactly `size` encoded bytes, its password the filler.
fn sign_up_of_size(size: usize) -> Vec<u8> {
    let fixed = SignUpRequest { email: "big@example.com".into(), password: String::new() }.encoded_len();
    let mut len = size - fixed - 1;
    while len + prost::length_delimiter_len(len) > size - fixed - 1 {
        len -= 1;
    }
    let body = SignUpRequest { email: "big@example.com".into(), password: "p".repeat(len) }.encode_to_vec();
    assert_eq!(body.len(), size);
    body
}

async fn oversized_auth_requests_are_refused_and_the_service_stays_healthy(backend: Backend) {
    watch_panics();
    let auth = start_auth(backend).await;
    let channel = auth.channel().await;
    let mut client = auth_client(&auth).await;
    let email = "owner@example.com";
    client.sign_up(SignUpRequest { email: email.into(), password: PASSWORD.into() }).await.unwrap();
    let token = client
        .login(LoginRequest { email: email.into(), password: PASSWORD.into() })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let before = snapshot(&auth.db).await;
    let path = |name: &str| format!("/{}/{name}", auth_service::SERVICE_NAME);
    let none = Metadata::new();

    let at_limit = call_raw(&channel, &path("SignUp"), sign_up_of_size(AUTH_LIMIT), &none).await.unwrap_err();
    assert_eq!(at_limit.code(), Code::InvalidArgument, "{at_limit:?}");
    assert_eq!(violated_fields(&at_limit), ["password"]);
    for size in [AUTH_LIMIT + 1, 64 * 1024, 8 * 1024 * 1024] {
        let err = call_raw(&channel, &path("SignUp"), sign_up_of_size(size), &none).await.unwrap_err();
        assert!(OVERSIZED.contains(&err.code()), "SignUp of {size} bytes: {err:?}");
        eprintln!("SignUp of {size} bytes: {:?} {:?}", err.code(), err.message());
    }
    let login = LoginRequest { email: email.into(), password: "p".repeat(AUTH_LIMIT) }.encode_to_vec();
    let err = call_raw(&channel, &path("Login"), login, &none).await.unwrap_err();
    assert!(OVERSIZED.contains(&err.code()), "{err:?}");
    // GetCurrentUser's request is empty; unknown fields are ignored, but not without bound.
    let padding = |n: usize| Wire::new().bytes(15, &vec![0u8; n]).finish();
    let err =
        call_raw(&channel, &path("GetCurrentUser"), padding(AUTH_LIMIT), &bearer_metadata(&token)).await.unwrap_err();
    assert!(OVERSIZED.contains(&err.code()), "{err:?}");
    call_raw(&channel, &path("GetCurrentUser"), padding(1024), &bearer_metadata(&token)).await.unwrap();

    // Fields over their own limits, inside the decoding limit: refused before any hashing.
    let cases = [
        (
            "129-character password",
            SignUpRequest { email: "a@example.com".into(), password: "p".repeat(129) },
            "password",
        ),
        (
            "129 four-byte characters",
            SignUpRequest { email: "b@example.com".into(), password: "😀".repeat(129) },
            "password",
        ),
        ("10 KB password", SignUpRequest { email: "c@example.com".into(), password: "p".repeat(10_000) }, "password"),
        (
            "255-character email",
            SignUpRequest { email: format!("{}@example.com", "e".repeat(243)), password: PASSWORD.into() },
            "email",
        ),
    ];
    for (label, request, field) in cases {
        let err = client.sign_up(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{label}: {err:?}");
        assert_eq!(violated_fields(&err), [field], "{label}");
    }
    let err = client.login(LoginRequest { email: email.into(), password: "p".repeat(10_000) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    assert_eq!(snapshot(&auth.db).await, before, "a refused request changed the database");
    assert_auth_service_healthy(&auth).await;
}

/// An `authorization` value beyond the HTTP/2 header-list limit (16 KiB by default) never
/// reaches the token check; whatever the transport answers, it is a refusal that writes
/// nothing and leaves the service healthy.
async fn authorization_beyond_the_header_limit_is_refused(backend: Backend) {
    watch_panics();
    let tasks = start_tasks(backend).await;
    let channel = tasks.channel().await;
    let owner = caller();
    let task = create(&mut task_client(&tasks).await, &owner, "keep").await;
    let before = snapshot(&tasks.db).await;
    for size in [20 * 1024, 1024 * 1024] {
        let value = format!("Bearer {}", "A".repeat(size)).into_bytes();
        for rpc in task_rpcs() {
            let metadata = vec![("authorization".to_owned(), value.clone())];
            let err = call_raw(&channel, &rpc.path, sample_request(&rpc, &task.id), &metadata)
                .await
                .expect_err("an oversized authorization was accepted");
            eprintln!("{} with a {size}-byte authorization: {:?} {:?}", rpc.name, err.code(), err.message());
            assert_ne!(err.code(), Code::Ok);
        }
    }
    assert_eq!(snapshot(&tasks.db).await, before);
    assert_task_service_healthy(&tasks).await;
}
