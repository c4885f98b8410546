//! Tries to break in and to break down, each attempt checked by its status code *and* by the
//! database afterwards: forged tokens against every RPC of the descriptor, identity smuggled in
//! metadata and unknown fields, other users' task ids, oversized and malformed requests,
//! extreme page sizes and forged page tokens, invalid UTF-8.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use prost::Message as _;
use todo_tests::adversary::*;
use todo_tests::pb::auth::v1::{GetCurrentUserRequest, LoginRequest, SignUpRequest};
use todo_tests::pb::task::v1::{
    CreateTaskRequest, DeleteTaskRequest, GetTaskRequest, ListTasksRequest, ListTasksResponse, UpdateTaskRequest,
};
use todo_tests::proxy::{FaultyProxy, Mode};
use todo_tests::*;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use uuid::Uuid;

on_both_backends!(
    every_task_rpc_refuses_every_bad_token_and_changes_nothing,
    get_current_user_refuses_every_bad_token,
    identity_comes_only_from_the_token,
    another_users_task_and_a_random_id_give_identical_not_found,
    oversized_task_requests_are_refused_and_the_service_stays_healthy,
    oversized_auth_requests_are_refused_and_the_service_stays_healthy,
    extreme_page_sizes_and_forged_page_tokens_are_invalid_arguments,
    invalid_utf8_and_malformed_protobuf_are_refused_and_the_services_stay_healthy,
    nul_characters_in_strings_are_not_server_errors,
    authorization_beyond_the_header_limit_is_refused,
    gzip_requests_are_accepted_and_bombs_and_garbage_refused,
    two_authorization_entries_are_refused_whichever_comes_first,
);

const PASSWORD: &str = "plum-kettle-orbit-42";

/// Size limits of decoded requests (the services' defaults).
const AUTH_LIMIT: usize = auth_service::DEFAULT_MAX_REQUEST_BYTES;
const TASK_LIMIT: usize = task_service::DEFAULT_MAX_REQUEST_BYTES;

/// The answer to a request message over the server's decoding limit: RESOURCE_EXHAUSTED, as
/// the gRPC status-code guide names it (tonic itself says OUT_OF_RANGE; the server rewrites it).
const OVERSIZED: [Code; 1] = [Code::ResourceExhausted];

/// The answer to a request that does not decode (invalid UTF-8 in a string field, a malformed
/// varint): the client's fault, INVALID_ARGUMENT (tonic itself says INTERNAL; the server
/// rewrites it).
const UNDECODABLE: Code = Code::InvalidArgument;

fn task_rpcs() -> Vec<Rpc> {
    let rpcs = rpcs(task_service::SERVICE_NAME);
    let names: BTreeSet<&str> = rpcs.iter().map(|r| r.name.as_str()).collect();
    for known in ["CreateTask", "GetTask", "ListTasks", "UpdateTask", "DeleteTask"] {
        assert!(names.contains(known), "{known} is missing from the descriptor: {names:?}");
    }
    rpcs
}

fn auth_rpc(name: &str) -> Rpc {
    rpcs(auth_service::SERVICE_NAME).into_iter().find(|r| r.name == name).unwrap()
}

fn authorization(value: &Option<Vec<u8>>) -> Metadata {
    value.iter().map(|v| ("authorization".to_owned(), v.clone())).collect()
}

fn concat(a: Vec<u8>, b: &[u8]) -> Vec<u8> {
    let mut out = a;
    out.extend_from_slice(b);
    out
}

/// A normal call succeeds and health says SERVING: the service took no harm.
async fn assert_task_service_healthy(tasks: &Running) {
    assert_serving(tasks, task_service::SERVICE_NAME).await;
    let mut client = task_client(tasks).await;
    let who = caller();
    let task = create(&mut client, &who, "still alive").await;
    let listed = client.list_tasks(bearer(&who.token, ListTasksRequest::default())).await.unwrap().into_inner();
    assert_eq!(listed.tasks, [task]);
    let panics = service_panics();
    assert!(panics.is_empty(), "panics outside the test code (in this process, maybe another test's): {panics:#?}");
}

async fn assert_auth_service_healthy(auth: &Running) {
    assert_serving(auth, auth_service::SERVICE_NAME).await;
    let mut client = auth_client(auth).await;
    let email = format!("alive-{}@example.com", Uuid::new_v4().simple());
    client.sign_up(SignUpRequest { email: email.clone(), password: PASSWORD.into() }).await.unwrap();
    let session = client.login(LoginRequest { email, password: PASSWORD.into() }).await.unwrap().into_inner();
    client.get_current_user(bearer(&session.access_token, GetCurrentUserRequest {})).await.unwrap();
    let panics = service_panics();
    assert!(panics.is_empty(), "panics outside the test code (in this process, maybe another test's): {panics:#?}");
}

// ---------------------------------------------------------------------------------------------
// 1. Tokens.

async fn every_task_rpc_refuses_every_bad_token_and_changes_nothing(backend: Backend) {
    watch_panics();
    let tasks = start_tasks(backend).await;
    let channel = tasks.channel().await;
    let mut client = task_client(&tasks).await;
    let owner = caller();
    let task = create(&mut client, &owner, "untouchable").await;
    let update = UpdateTaskRequest { id: task.id.clone(), completed: Some(true), ..Default::default() };
    client.update_task(bearer(&owner.token, update)).await.unwrap();
    let before = snapshot(&tasks.db).await;

    let attacks = token_attacks(owner.id);
    let rpcs = task_rpcs();
    for rpc in &rpcs {
        let body = sample_request(rpc, &task.id);
        for (label, value) in &attacks {
            let result = call_raw(&channel, &rpc.path, body.clone(), &authorization(value)).await;
            let err = result.expect_err(&format!("{} accepted {label}", rpc.name));
            assert_eq!(err.code(), Code::Unauthenticated, "{} with {label}: {err:?}", rpc.name);
            // Nothing of the task, and nothing of the token, comes back.
            assert!(!err.message().contains(&task.id) && !err.message().contains("untouchable"), "{label}");
            assert!(!err.message().contains("eyJ"), "{} echoes the token for {label}: {err:?}", rpc.name);
        }
    }
    assert_eq!(snapshot(&tasks.db).await, before, "a refused request changed the database");

    // The same requests with a good token get past the gate, so the refusals above were the
    // token's doing. A token 10 s past `exp` is still inside the 30 s leeway.
    let mut late = claims_for(owner.id);
    late["iat"] = serde_json::json!(now_secs() - 3600);
    late["exp"] = serde_json::json!(now_secs() - 10);
    let late = forge("HS256", &late, Some(SECRET.as_bytes()));
    for token in [&late, &owner.token] {
        for rpc in &rpcs {
            let body = sample_request(rpc, &task.id);
            if let Err(err) = call_raw(&channel, &rpc.path, body, &bearer_metadata(token)).await {
                assert_ne!(err.code(), Code::Unauthenticated, "{} refused a valid token: {err:?}", rpc.name);
            }
        }
    }
    assert_task_service_healthy(&tasks).await;
}

/// PostgreSQL only (SQLite cannot be made unreachable): with the database black-holed, a read
/// would hang for seconds. Every bad token is still refused at once, so none of them reads
/// anything; a good token, for contrast, cannot be served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_without_reading_the_database_on_postgres() {
    require(Backend::Postgres);
    watch_panics();
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = FaultyProxy::start(db.postgres_addr()).await;
    let mut config = task_config(&db);
    config.database = db.url_via(proxy.addr);
    let tasks = start_tasks_with(config, db).await;
    let channel = tasks.channel().await;
    let owner = caller();
    let task = create(&mut task_client(&tasks).await, &owner, "untouchable").await;
    let before = snapshot(&tasks.db).await;

    proxy.set(Mode::Blackhole);
    let attacks = token_attacks(owner.id);
    for rpc in &task_rpcs() {
        let body = sample_request(rpc, &task.id);
        for (label, value) in &attacks {
            let started = Instant::now();
            let result = call_raw(&channel, &rpc.path, body.clone(), &authorization(value)).await;
            let err = result.expect_err(&format!("{} accepted {label}", rpc.name));
            assert_eq!(err.code(), Code::Unauthenticated, "{} with {label}: {err:?}", rpc.name);
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(1),
                "{} with {label} took {took:?}: did it wait for the database?",
                rpc.name
            );
        }
    }
    // The contrast: once health has noticed, a good token gets UNAVAILABLE.
    let mut health = HealthClient::new(tasks.channel().await);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status;
        if status == ServingStatus::NotServing as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "health never noticed the black-holed database");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = task_rpcs().into_iter().find(|r| r.name == "ListTasks").unwrap();
    let err =
        call_raw(&channel, &list.path, sample_request(&list, ""), &bearer_metadata(&owner.token)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    proxy.restore();
    wait_until_serving(&tasks, "").await;
    assert_eq!(snapshot(&tasks.db).await, before, "a refused request changed the database");
    assert_task_service_healthy(&tasks).await;
}

async fn get_current_user_refuses_every_bad_token(backend: Backend) {
    watch_panics();
    let auth = start_auth(backend).await;
    let channel = auth.channel().await;
    let mut client = auth_client(&auth).await;
    let email = "victim@example.com";
    let user = client
        .sign_up(SignUpRequest { email: email.into(), password: PASSWORD.into() })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let id = Uuid::parse_str(&user.id).unwrap();
    let before = snapshot(&auth.db).await;

    let rpc = auth_rpc("GetCurrentUser");
    let body = sample_request(&rpc, "");
    for (label, value) in token_attacks(id) {
        let err = call_raw(&channel, &rpc.path, body.clone(), &authorization(&value))
            .await
            .expect_err(&format!("GetCurrentUser accepted {label}"));
        assert_eq!(err.code(), Code::Unauthenticated, "{label}: {err:?}");
        assert!(!err.message().contains(email) && !err.message().contains("eyJ"), "{label}: {err:?}");
    }
    assert_eq!(snapshot(&auth.db).await, before, "a refused request changed the database");

    // The user's real token works.
    let session = client.login(LoginRequest { email: email.into(), password: PASSWORD.into() }).await.unwrap();
    let me = call_raw(&channel, &rpc.path, body, &bearer_metadata(&session.into_inner().access_token)).await.unwrap();
    let me = todo_tests::pb::auth::v1::GetCurrentUserResponse::decode(me.as_slice()).unwrap();
    assert_eq!(me.user, Some(user));
    assert_auth_service_healthy(&auth).await;
}

// ---------------------------------------------------------------------------------------------
// 2. Identity comes only from the token.

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

// ---------------------------------------------------------------------------------------------
// 3. Cross-user access.

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
            let random = call_raw(&channel, &rpc.path, body(&Uuid::now_v7().to_string()), &bearer_metadata(&bob.token))
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
                let err = call_raw(&channel, &rpc.path, body(&target), &bearer_metadata(&who.token))
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

// ---------------------------------------------------------------------------------------------
// 5. Oversized, extreme, forged and malformed requests.

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

/// Byte sequences that are not UTF-8.
const NOT_UTF8: [&[u8]; 6] = [
    b"\xFF",
    b"ok\xFE\xFF",
    b"\xC0\xAF",         // overlong '/'
    b"\xED\xA0\x80",     // a UTF-16 surrogate
    b"\xF4\x90\x80\x80", // beyond U+10FFFF
    b"trunc\xE2\x82",    // truncated sequence
];

async fn invalid_utf8_and_malformed_protobuf_are_refused_and_the_services_stay_healthy(backend: Backend) {
    watch_panics();
    let tasks = start_tasks(backend).await;
    let auth = start_auth(backend).await;
    let owner = caller();
    let task = create(&mut task_client(&tasks).await, &owner, "keep").await;
    let tasks_before = snapshot(&tasks.db).await;
    let auth_before = snapshot(&auth.db).await;
    let (task_channel, auth_channel) = (tasks.channel().await, auth.channel().await);

    // Every string field of every request of both services, one at a time.
    let services = [
        (&task_channel, task_rpcs(), bearer_metadata(&owner.token)),
        (&auth_channel, rpcs(auth_service::SERVICE_NAME), Metadata::new()),
    ];
    let mut observed = BTreeSet::new();
    for (channel, rpcs, metadata) in &services {
        for rpc in rpcs {
            let strings =
                rpc.input.field.iter().filter(|f| f.r#type() == prost_types::field_descriptor_proto::Type::String);
            for field in strings {
                for bad in NOT_UTF8 {
                    let mut body = sample_request(rpc, &task.id);
                    body.extend(Wire::new().bytes(u32::try_from(field.number()).unwrap(), bad).finish());
                    let err = call_raw(channel, &rpc.path, body, metadata).await.expect_err(&format!(
                        "{} accepted {bad:?} in {}",
                        rpc.name,
                        field.name()
                    ));
                    assert_eq!(err.code(), UNDECODABLE, "{}.{} = {bad:?}: {err:?}", rpc.name, field.name());
                    observed.insert(format!("{:?}: {}", err.code(), err.message()));
                }
            }
        }
    }
    eprintln!("invalid UTF-8 answers: {observed:#?}");

    // Malformed protobuf.
    let create_path = format!("/{}/CreateTask", task_service::SERVICE_NAME);
    let mut nested_groups = Wire::new();
    for _ in 0..30_000 {
        nested_groups.raw(&[(15 << 3) | 3]); // start group 15
    }
    let malformed: [(&str, Vec<u8>); 9] = [
        ("truncated varint", Wire::new().raw_varint(20 << 3).raw(&[0xFF]).finish()),
        ("length beyond the end", vec![0x0A, 0x10, b'a']),
        ("length of 2^32", Wire::new().raw(&[0x0A]).raw_varint(1 << 32).raw(b"x").finish()),
        ("known field with the wrong wire type", Wire::new().varint(1, 7).finish()),
        ("field number 0", vec![0x02, 0x01, b'x']),
        ("unterminated group", vec![(15 << 3) | 3, 0x08, 0x01]),
        ("unmatched end group", vec![(15 << 3) | 4]),
        ("30,000 nested groups", nested_groups.finish()),
        ("due_time with garbage inside", Wire::new().string(1, "ok").bytes(3, &[0x08, 0xFF, 0xFF]).finish()),
    ];
    let metadata = bearer_metadata(&owner.token);
    for (label, body) in malformed {
        let err = call_raw(&task_channel, &create_path, body, &metadata).await.expect_err(label);
        assert_eq!(err.code(), UNDECODABLE, "{label}: {err:?}");
    }
    // Nothing that decodes wrongly reaches the handler, so nothing was written.
    assert_eq!(snapshot(&tasks.db).await, tasks_before);
    assert_eq!(snapshot(&auth.db).await, auth_before);
    assert_task_service_healthy(&tasks).await;
    assert_auth_service_healthy(&auth).await;
}

/// NUL is valid UTF-8 and a valid protobuf string, but PostgreSQL text cannot store it (and
/// SQLite's `length()` stops at it). A title or description with one is an invalid argument,
/// never a server error, and an email with one is simply not an account.
async fn nul_characters_in_strings_are_not_server_errors(backend: Backend) {
    watch_panics();
    let tasks = start_tasks(backend).await;
    let auth = start_auth(backend).await;
    let mut task_client = task_client(&tasks).await;
    let mut auth_client = auth_client(&auth).await;
    let owner = caller();
    let task = create(&mut task_client, &owner, "keep").await;
    let tasks_before = snapshot(&tasks.db).await;
    let users_before = auth.db.scalar("SELECT count(*) FROM users", None).await;

    let mut failures = Vec::new();
    let mut check = |label: &str, result: Result<(), tonic::Status>, allowed: &[Code], field: Option<&str>| {
        let code = result.as_ref().err().map_or(Code::Ok, tonic::Status::code);
        let fields = result.as_ref().err().map(violated_fields).unwrap_or_default();
        if !allowed.contains(&code) || field.is_some_and(|f| fields != [f]) {
            failures.push(format!("{label}: expected one of {allowed:?} naming {field:?}, got {:?}", result.err()));
        }
        code
    };
    let invalid = [Code::InvalidArgument];
    let token = &owner.token;
    for (label, request, field) in [
        ("CreateTask title with NUL", CreateTaskRequest { title: "nul\0title".into(), ..Default::default() }, "title"),
        ("CreateTask title NUL only", CreateTaskRequest { title: "\0".into(), ..Default::default() }, "title"),
        (
            "CreateTask description with NUL",
            CreateTaskRequest { title: "ok".into(), description: "a\0b".into(), ..Default::default() },
            "description",
        ),
        (
            "CreateTask request_id with NUL",
            CreateTaskRequest { title: "ok".into(), request_id: "a\0b".into(), ..Default::default() },
            "request_id",
        ),
    ] {
        check(label, task_client.create_task(bearer(token, request)).await.map(drop), &invalid, Some(field));
    }
    for (label, request, field) in [
        ("UpdateTask title NUL", UpdateTaskRequest { title: Some("\0".into()), ..Default::default() }, "title"),
        (
            "UpdateTask description NUL",
            UpdateTaskRequest { description: Some("\0".into()), ..Default::default() },
            "description",
        ),
    ] {
        let request = UpdateTaskRequest { id: task.id.clone(), ..request };
        check(label, task_client.update_task(bearer(token, request)).await.map(drop), &invalid, Some(field));
    }
    let request = GetTaskRequest { id: format!("{}\0", task.id) };
    let result = task_client.get_task(bearer(token, request)).await.map(drop);
    check("GetTask id with NUL", result, &invalid, Some("id"));
    let request =
        UpdateTaskRequest { id: task.id.clone(), completed: Some(true), etag: "\"1\0\"".into(), ..Default::default() };
    let result = task_client.update_task(bearer(token, request)).await.map(drop);
    check("UpdateTask etag with NUL", result, &[Code::Aborted], None);

    let nul_email = SignUpRequest { email: "nul\0@example.com".into(), password: PASSWORD.into() };
    check("SignUp email with NUL", auth_client.sign_up(nul_email).await.map(drop), &invalid, Some("email"));
    let nul_password =
        SignUpRequest { email: "nul-password@example.com".into(), password: "plum\0kettle-orbit-42".into() };
    let signed_up = check(
        "SignUp password with NUL",
        auth_client.sign_up(nul_password).await.map(drop),
        &[Code::Ok, Code::InvalidArgument],
        None,
    ) == Code::Ok;
    let login = LoginRequest { email: "nul\0@example.com".into(), password: PASSWORD.into() };
    let result = auth_client.login(login).await.map(drop);
    check("Login email with NUL", result, &[Code::Unauthenticated, Code::InvalidArgument], None);

    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(snapshot(&tasks.db).await, tasks_before, "a refused request changed the database");
    let users = auth.db.scalar("SELECT count(*) FROM users", None).await;
    assert_eq!(users, users_before + i64::from(signed_up));
    assert_task_service_healthy(&tasks).await;
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

// ---------------------------------------------------------------------------------------------
// Status mapping of database errors.

/// A database error with a chosen SQLSTATE (PostgreSQL) or result code (SQLite).
#[derive(Debug)]
struct CodedError(&'static str);

impl std::fmt::Display for CodedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "database error {}", self.0)
    }
}

impl std::error::Error for CodedError {}

impl sqlx::error::DatabaseError for CodedError {
    fn message(&self) -> &str {
        "synthetic"
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.0.into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}

/// A PostgreSQL SQLSTATE that happens to be all digits must not be read as a SQLite result
/// code. 22021 (character_not_in_repertoire: a NUL in text, which reached the database before
/// control characters were refused), 22022 and 42501 (insufficient_privilege) have 5 or 6 in
/// their low byte as numbers, like SQLITE_BUSY and SQLITE_LOCKED, and were answered
/// UNAVAILABLE ("retry with back-off") although no retry can succeed.
#[test]
fn sqlstates_are_not_mistaken_for_sqlite_busy_codes() {
    use todo_shared::db::{Failure, classify};
    let failure = |code: &'static str| classify(&sqlx::Error::Database(Box::new(CodedError(code))));
    let mut wrong = Vec::new();
    for code in ["22021", "22022", "42501", "23502", "22001", "42P01"] {
        if failure(code) != Failure::Internal {
            wrong.push(format!("SQLSTATE {code}: {:?}", failure(code)));
        }
    }
    // The SQLite codes the mapping is meant for stay retryable: SQLITE_BUSY (5),
    // SQLITE_LOCKED (6), SQLITE_BUSY_SNAPSHOT (517), SQLITE_LOCKED_SHAREDCACHE (262).
    for code in ["5", "6", "517", "262"] {
        assert_eq!(failure(code), Failure::Unavailable, "SQLite {code}");
    }
    assert!(wrong.is_empty(), "PostgreSQL errors that are not retryable classified as retryable: {wrong:#?}");
}

// ---------------------------------------------------------------------------------------------
// Compression.

async fn gzip_requests_are_accepted_and_bombs_and_garbage_refused(backend: Backend) {
    use tonic::codec::CompressionEncoding::Gzip;
    watch_panics();
    let tasks = start_tasks(backend).await;
    let auth = start_auth(backend).await;
    let owner = caller();

    // What grpc-java, grpc-go and others send when compression is switched on.
    let mut accounts = auth_client(&auth).await.send_compressed(Gzip);
    let email = "gzip@example.com".to_owned();
    accounts.sign_up(SignUpRequest { email: email.clone(), password: PASSWORD.into() }).await.unwrap();
    let login = accounts.login(LoginRequest { email, password: PASSWORD.into() }).await.unwrap().into_inner();
    assert_eq!(login.user.unwrap().email, "gzip@example.com");
    let mut client = task_client(&tasks).await.send_compressed(Gzip);
    let request =
        CreateTaskRequest { title: "compressed".into(), description: "d".repeat(5_000), ..Default::default() };
    let created = client.create_task(bearer(&owner.token, request)).await.unwrap().into_inner().task.unwrap();
    assert_eq!((created.title.as_str(), created.description.len()), ("compressed", 5_000));
    let before = snapshot(&tasks.db).await;

    // A bomb: 8 MiB of description squeezed into a few KiB. The size limit applies to what it
    // decompresses to, so it is refused like any oversized request, and nothing is written.
    let bomb = CreateTaskRequest { title: "bomb".into(), description: "x".repeat(8 << 20), ..Default::default() };
    let err = client.create_task(bearer(&owner.token, bomb)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains(&TASK_LIMIT.to_string()), "the limit is named: {}", err.message());

    // A frame flagged compressed that is not gzip: the client's fault, INVALID_ARGUMENT.
    let path = format!("/{}/CreateTask", task_service::SERVICE_NAME);
    let token = format!("Bearer {}", owner.token);
    let garbage = b"definitely not gzip".as_slice();
    let announced = [("authorization", token.as_str()), ("grpc-encoding", "gzip")];
    let (code, message) = raw_h2_status(&tasks, &path, &announced, 1, garbage).await;
    assert_eq!(code, (Code::InvalidArgument as i32).to_string(), "{message}");
    let unannounced = [("authorization", token.as_str())];
    let (code, message) = raw_h2_status(&tasks, &path, &unannounced, 1, garbage).await;
    // The gRPC compression spec: a compressed message without grpc-encoding MUST be INTERNAL.
    assert_eq!(code, (Code::Internal as i32).to_string(), "{message}");
    assert!(message.contains("no%20grpc-encoding"), "{message}");
    // An encoding the server does not speak: UNIMPLEMENTED, as the gRPC spec asks.
    let zstd = [("authorization", token.as_str()), ("grpc-encoding", "zstd")];
    let (code, message) = raw_h2_status(&tasks, &path, &zstd, 1, garbage).await;
    assert_eq!(code, (Code::Unimplemented as i32).to_string(), "{message}");

    assert_eq!(snapshot(&tasks.db).await, before);
    assert_task_service_healthy(&tasks).await;
    assert_auth_service_healthy(&auth).await;
}

async fn two_authorization_entries_are_refused_whichever_comes_first(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let auth = start_auth(backend).await;
    let (alice, bob) = (caller(), caller());
    create(&mut task_client(&tasks).await, &alice, "alice's").await;
    let list = format!("/{}/ListTasks", task_service::SERVICE_NAME);
    let me = format!("/{}/GetCurrentUser", auth_service::SERVICE_NAME);
    let (task_channel, auth_channel) = (tasks.channel().await, auth.channel().await);
    let garbage = "Bearer not-a-token".to_owned();
    let pairs = [
        [format!("Bearer {}", alice.token), garbage.clone()],
        [garbage, format!("Bearer {}", alice.token)],
        [format!("Bearer {}", alice.token), format!("Bearer {}", bob.token)],
    ];
    for pair in pairs {
        let metadata: Metadata = pair.iter().map(|v| ("authorization".to_owned(), v.clone().into_bytes())).collect();
        for (channel, path) in [(&task_channel, &list), (&auth_channel, &me)] {
            let err = call_raw(channel, path, Vec::new(), &metadata).await.unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{path}: {err:?}");
            assert!(err.message().contains("more than one `authorization`"), "{path}: {}", err.message());
        }
    }
}
