//! Malformed encodings: invalid UTF-8 and malformed protobuf, NUL characters in strings, and
//! gzip-compressed requests (bombs, garbage, unannounced and unknown encodings).

use std::collections::BTreeSet;

use todo_tests::adversary::*;
use todo_tests::pb::auth::v1::{LoginRequest, SignUpRequest};
use todo_tests::pb::task::v1::{CreateTaskRequest, GetTaskRequest, UpdateTaskRequest};
use todo_tests::*;
use tonic::Code;

use super::{PASSWORD, TASK_LIMIT, assert_auth_service_healthy, assert_task_service_healthy, task_rpcs};

on_both_backends!(
    invalid_utf8_and_malformed_protobuf_are_refused_and_the_services_stay_healthy,
    nul_characters_in_strings_are_not_server_errors,
    gzip_requests_are_accepted_and_bombs_and_garbage_refused,
);

/// The answer to a request that does not decode (invalid UTF-8 in a string field, a malformed
/// varint): the client's fault, INVALID_ARGUMENT (tonic itself says INTERNAL; the server
/// rewrites it).
const UNDECODABLE: Code = Code::InvalidArgument;

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
