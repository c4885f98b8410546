//! The README's secret-rotation runbook, walked through: nobody is logged out.

use std::sync::Arc;
use std::time::Duration;

use todo_shared::config::TokenConfig;
use todo_shared::token::{JwtSecret, TokenKeys};
use todo_tests::pb::auth::v1::GetCurrentUserRequest;
use todo_tests::*;
use tonic::Code;

use super::{login, refresh_request, sign_up, task_code};

on_both_backends!(rotating_the_signing_secret_in_the_runbooks_steps_logs_nobody_out);

const NEW_SECRET: &str = "the-next-secret-which-is-also-long-enough";

fn tokens(secret: &str, verification: &[&str]) -> TokenConfig {
    TokenConfig {
        secret: JwtSecret::new(secret.as_bytes().to_vec()).unwrap(),
        verification_secrets: verification.iter().map(|s| JwtSecret::new(s.as_bytes().to_vec()).unwrap()).collect(),
        ..token_config()
    }
}

/// Both services on `auth_db` and `task_db` with these token settings.
async fn start(auth_db: &Arc<TestDb>, task_db: &Arc<TestDb>, token: TokenConfig) -> (Running, Running) {
    let mut config = auth_config(auth_db);
    config.token = token.clone();
    let auth = start_auth_with(config, Arc::clone(auth_db)).await;
    let mut config = task_config(task_db);
    config.token = token;
    config.auth_service_url = Some(auth.url());
    let tasks = start_tasks_with(config, Arc::clone(task_db)).await;
    wait_until_serving(&tasks, task_service::follower::FEED_HEALTH_NAME).await;
    (auth, tasks)
}

async fn works_at_both(auth: &Running, tasks: &Running, token: &str) -> (Code, Code) {
    let mut client = auth_client(auth).await;
    let at_auth = match client.get_current_user(bearer(token, GetCurrentUserRequest {})).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    };
    (at_auth, task_code(tasks, token).await)
}

async fn rotating_the_signing_secret_in_the_runbooks_steps_logs_nobody_out(backend: Backend) {
    let (auth_db, task_db) = (Arc::new(TestDb::new(backend).await), Arc::new(TestDb::new(backend).await));
    let ok = (Code::Ok, Code::Ok);

    // Before: both on the old secret.
    let (auth, tasks) = start(&auth_db, &task_db, tokens(SECRET, &[])).await;
    let mut client = auth_client(&auth).await;
    sign_up(&mut client, "rotation@example.com").await;
    let old = login(&mut client, "rotation@example.com").await;
    drop((client, auth, tasks));

    // Step 1: every replica learns the new secret, for verification only.
    let (auth, tasks) = start(&auth_db, &task_db, tokens(SECRET, &[NEW_SECRET])).await;
    assert_eq!(works_at_both(&auth, &tasks, &old.access_token).await, ok);
    let by_new = TokenKeys::new(&JwtSecret::new(NEW_SECRET.as_bytes().to_vec()).unwrap(), ISSUER, AUDIENCE).unwrap();
    let early = by_new.mint(uuid::Uuid::new_v4(), "x@example.com", Duration::from_secs(60)).unwrap().token;
    assert_eq!(task_code(&tasks, &early).await, Code::Ok, "a replica already signing with the new secret is believed");
    drop((auth, tasks));

    // Step 2: sign with the new secret; the old one verifies what it signed.
    let (auth, tasks) = start(&auth_db, &task_db, tokens(NEW_SECRET, &[SECRET])).await;
    let mut client = auth_client(&auth).await;
    assert_eq!(works_at_both(&auth, &tasks, &old.access_token).await, ok);
    let refreshed = client.refresh(refresh_request(&old.refresh_token)).await.unwrap().into_inner();
    assert_eq!(works_at_both(&auth, &tasks, &refreshed.access_token).await, ok);
    let new = login(&mut client, "rotation@example.com").await;
    assert_eq!(works_at_both(&auth, &tasks, &new.access_token).await, ok);
    drop((client, auth, tasks));

    // Step 3, once every old token has expired: drop the old secret.
    let (auth, tasks) = start(&auth_db, &task_db, tokens(NEW_SECRET, &[])).await;
    assert_eq!(works_at_both(&auth, &tasks, &new.access_token).await, ok);
    assert_eq!(works_at_both(&auth, &tasks, &old.access_token).await, (Code::Unauthenticated, Code::Unauthenticated));
}
