//! Sessions: refresh-token rotation, logout, the sessions list, password change, account
//! deletion, and revocations reaching task-service.

mod account;
mod feed;
mod logout;
mod refresh;
mod rotation;

use std::time::Duration;

use todo_tests::pb::auth::v1::auth_service_client::AuthServiceClient;
use todo_tests::pb::auth::v1::{GetCurrentUserRequest, LoginRequest, LoginResponse, RefreshRequest, SignUpRequest};
use todo_tests::pb::task::v1::ListTasksRequest;
use todo_tests::*;
use tonic::Code;
use tonic::transport::Channel;

pub const PASSWORD: &str = "tulip-anchor-93";

/// A signed-up user.
pub struct Account {
    pub id: uuid::Uuid,
    pub email: String,
}

pub async fn sign_up(client: &mut AuthServiceClient<Channel>, email: &str) -> Account {
    let request = SignUpRequest { email: email.into(), password: PASSWORD.into() };
    let user = client.sign_up(request).await.expect("sign up").into_inner().user.expect("user");
    Account { id: uuid::Uuid::parse_str(&user.id).expect("uuid"), email: user.email }
}

pub async fn login(client: &mut AuthServiceClient<Channel>, email: &str) -> LoginResponse {
    let request = LoginRequest { email: email.into(), password: PASSWORD.into() };
    client.login(request).await.expect("login").into_inner()
}

pub fn refresh_request(token: &str) -> RefreshRequest {
    RefreshRequest { refresh_token: token.into() }
}

/// The code GetCurrentUser answers `token` with (OK or the error's).
pub async fn auth_code(client: &mut AuthServiceClient<Channel>, token: &str) -> Code {
    match client.get_current_user(bearer(token, GetCurrentUserRequest {})).await {
        Ok(_) => Code::Ok,
        Err(status) => {
            if status.code() == Code::Unauthenticated {
                assert_eq!(status.message(), REVOKED);
            }
            status.code()
        }
    }
}

/// The code task-service answers `token` with on ListTasks.
pub async fn task_code(tasks: &Running, token: &str) -> Code {
    let mut client = task_client(tasks).await;
    match client.list_tasks(bearer(token, ListTasksRequest::default())).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Waits until task-service refuses `token` as revoked; panics after `within`.
pub async fn until_refused(tasks: &Running, token: &str, within: Duration) -> Duration {
    let start = std::time::Instant::now();
    let mut client = task_client(tasks).await;
    loop {
        match client.list_tasks(bearer(token, ListTasksRequest::default())).await {
            Err(status) if status.code() == Code::Unauthenticated => {
                assert_eq!(status.message(), REVOKED);
                return start.elapsed();
            }
            other => {
                assert!(
                    start.elapsed() < within,
                    "still {:?} after {within:?}",
                    other.map(|_| ()).map_err(|s| s.code())
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Waits until `check` holds, polling; panics after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The claims of a JWT, decoded without verification.
pub fn claims_of(token: &str) -> serde_json::Value {
    payload_of(token)
}
