//! Clients and requests: generated clients connected to a running service, callers with
//! tokens of their own, and requests carrying an `authorization` value.

use std::time::Duration;

use todo_contract::auth::v1::auth_service_client::AuthServiceClient;
use todo_contract::task::v1::task_service_client::TaskServiceClient;
use tonic::transport::Channel;

use crate::{Running, keys};

pub async fn auth_client(running: &Running) -> AuthServiceClient<Channel> {
    AuthServiceClient::new(running.channel().await)
}

pub async fn task_client(running: &Running) -> TaskServiceClient<Channel> {
    TaskServiceClient::new(running.channel().await)
}

/// A user of task-service: an id and a token minted for it.
pub struct Caller {
    pub id: uuid::Uuid,
    pub token: String,
}

/// A caller whose token expired 29 s ago: still accepted within the 30 s clock-skew leeway,
/// for about a second more (a stream opened with it ends when it lapses).
pub fn expiring_caller() -> Caller {
    let id = uuid::Uuid::new_v4();
    let mut claims = crate::claims_for(id);
    claims["iat"] = serde_json::json!(crate::now_secs() - 60);
    claims["exp"] = serde_json::json!(crate::now_secs() - 29);
    Caller { id, token: crate::forge("HS256", &claims, Some(crate::SECRET.as_bytes())) }
}

/// A fresh user with an hour-long token.
pub fn caller() -> Caller {
    let id = uuid::Uuid::new_v4();
    let token = keys().mint(id, &format!("{id}@example.com"), Duration::from_secs(3600)).expect("mint").token;
    Caller { id, token }
}

/// Creates a task titled `title` for `who` and returns it.
pub async fn create(
    client: &mut TaskServiceClient<Channel>,
    who: &Caller,
    title: &str,
) -> todo_contract::task::v1::Task {
    let request = todo_contract::task::v1::CreateTaskRequest { title: title.into(), ..Default::default() };
    client.create_task(bearer(&who.token, request)).await.expect("create task").into_inner().task.expect("task")
}

/// Wraps `message` in a request with `authorization: Bearer <token>`.
/// `request` with `x-request-id: id`. Every error carries its request id, so answers compared
/// byte for byte (to show nothing leaks) must be asked with the same one.
pub fn with_request_id<T>(mut request: tonic::Request<T>, id: &str) -> tonic::Request<T> {
    request.metadata_mut().insert("x-request-id", id.parse().expect("a valid request id"));
    request
}

pub fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    with_authorization(&format!("Bearer {token}"), message)
}

/// Wraps `message` in a request with the given raw `authorization` value.
pub fn with_authorization<T>(value: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", value.parse().expect("ASCII metadata"));
    request
}
/// Attaches the `authorization` value, if any.
pub fn authorized<T>(authorization: &Option<String>, message: T) -> tonic::Request<T> {
    match authorization {
        Some(value) => with_authorization(value, message),
        None => tonic::Request::new(message),
    }
}

/// The fields named by the `google.rpc.BadRequest` detail of `status`.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt as _;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}
