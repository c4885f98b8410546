//! Forged and malformed tokens against every RPC of the descriptor (also with the database
//! black-holed), against GetCurrentUser, and two `authorization` entries in one request.

use std::time::{Duration, Instant};

use prost::Message as _;
use todo_tests::adversary::*;
use todo_tests::pb::auth::v1::{LoginRequest, SignUpRequest};
use todo_tests::pb::task::v1::UpdateTaskRequest;
use todo_tests::proxy::{FaultyProxy, Mode};
use todo_tests::*;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use uuid::Uuid;

use super::{PASSWORD, assert_auth_service_healthy, assert_task_service_healthy, task_rpcs};

on_both_backends!(
    every_task_rpc_refuses_every_bad_token_and_changes_nothing,
    get_current_user_refuses_every_bad_token,
    two_authorization_entries_are_refused_whichever_comes_first,
);

fn auth_rpc(name: &str) -> Rpc {
    rpcs(auth_service::SERVICE_NAME).into_iter().find(|r| r.name == name).unwrap()
}

fn authorization(value: &Option<Vec<u8>>) -> Metadata {
    value.iter().map(|v| ("authorization".to_owned(), v.clone())).collect()
}

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
