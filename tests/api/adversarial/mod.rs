//! Tries to break in and to break down, each attempt checked by its status code *and* by the
//! database afterwards: forged tokens against every RPC of the descriptor, identity smuggled in
//! metadata and unknown fields, other users' task ids, oversized and malformed requests,
//! extreme page sizes and forged page tokens, invalid UTF-8.
//!
//! One module per kind of attack; the helpers they share are here.

mod database_errors;
mod encoding;
mod identity;
mod oversized;
mod paging;
mod tokens;

use std::collections::BTreeSet;

use todo_tests::adversary::*;
use todo_tests::pb::auth::v1::{GetCurrentUserRequest, LoginRequest, SignUpRequest};
use todo_tests::pb::task::v1::ListTasksRequest;
use todo_tests::*;
use uuid::Uuid;

const PASSWORD: &str = "plum-kettle-orbit-42";

/// Size limits of decoded requests (the services' defaults).
const AUTH_LIMIT: usize = auth_service::DEFAULT_MAX_REQUEST_BYTES;
const TASK_LIMIT: usize = task_service::DEFAULT_MAX_REQUEST_BYTES;

fn task_rpcs() -> Vec<Rpc> {
    let rpcs = rpcs(task_service::SERVICE_NAME);
    let names: BTreeSet<&str> = rpcs.iter().map(|r| r.name.as_str()).collect();
    for known in ["CreateTask", "GetTask", "ListTasks", "UpdateTask", "DeleteTask"] {
        assert!(names.contains(known), "{known} is missing from the descriptor: {names:?}");
    }
    rpcs
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
