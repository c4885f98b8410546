//! Login starts a session; Refresh rotates its refresh token, with a reuse grace, and treats
//! later reuse as theft.

use std::time::Duration;

use sha2::Digest as _;
use todo_tests::pb::auth::v1::GetCurrentUserRequest;
use todo_tests::*;
use tonic::Code;

use super::{auth_code, login, refresh_request, sign_up, until_refused};

on_both_backends!(
    login_starts_a_session_with_a_hashed_refresh_token_and_a_sid_claim,
    refresh_rotates_and_a_rotated_token_within_the_grace_returns_the_current_pair,
    reuse_after_the_grace_revokes_the_session_at_both_services,
    concurrent_refreshes_with_one_token_leave_one_live_token,
    every_unusable_refresh_token_gets_one_message,
);

async fn login_starts_a_session_with_a_hashed_refresh_token_and_a_sid_claim(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;
    let account = sign_up(&mut client, "session@example.com").await;
    let session = login(&mut client, "session@example.com").await;

    assert_eq!(session.expires_in, 604_800);
    assert_eq!(session.refresh_token.len(), 43);
    assert_eq!(session.refresh_token_expires_in, 30 * 24 * 3600);
    let sid = uuid::Uuid::parse_str(&session.session_id).unwrap();
    let claims = payload_of(&session.access_token);
    assert_eq!(claims["sid"], session.session_id.as_str());
    assert_eq!(claims["sub"], account.id.to_string().as_str());
    let header = payload_of(&format!("x.{}", session.access_token.split('.').next().unwrap()));
    let kid = header["kid"].as_str().unwrap();
    assert!(kid.len() == 16 && kid.chars().all(|c| c.is_ascii_hexdigit()), "{kid}");

    // The database holds the token's SHA-256, never the token.
    let hash_sql = match backend {
        Backend::Postgres => "SELECT encode(token_hash, 'hex') FROM refresh_tokens WHERE session_id = $1",
        Backend::Sqlite => "SELECT lower(hex(token_hash)) FROM refresh_tokens WHERE session_id = $1",
    };
    let stored = auth.db.text(hash_sql, sid).await;
    let raw = base64_decode(&session.refresh_token);
    let expected: String = sha2::Sha256::digest(&raw).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(stored, expected);
    assert_eq!(auth.db.scalar("SELECT count(*) FROM sessions WHERE user_id = $1", Some(account.id)).await, 1);
}

fn base64_decode(token: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).unwrap()
}

async fn refresh_rotates_and_a_rotated_token_within_the_grace_returns_the_current_pair(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;
    sign_up(&mut client, "rotate@example.com").await;
    let first = login(&mut client, "rotate@example.com").await;

    let second = client.refresh(refresh_request(&first.refresh_token)).await.unwrap().into_inner();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.access_token, first.access_token);
    assert_eq!((second.token_type.as_str(), second.expires_in), ("bearer", 604_800));
    assert_eq!(payload_of(&second.access_token)["sid"], first.session_id.as_str());
    let me = client.get_current_user(bearer(&second.access_token, GetCurrentUserRequest {})).await.unwrap();
    assert_eq!(me.into_inner().user.unwrap().email, "rotate@example.com");

    // A second tab presenting the rotated token within the grace gets the current one.
    let again = client.refresh(refresh_request(&first.refresh_token)).await.unwrap().into_inner();
    assert_eq!(again.refresh_token, second.refresh_token);
    // And the current one still rotates normally; the first is now two rotations old but
    // still within the grace, so it leads to the newest.
    let third = client.refresh(refresh_request(&second.refresh_token)).await.unwrap().into_inner();
    let via_first = client.refresh(refresh_request(&first.refresh_token)).await.unwrap().into_inner();
    assert_eq!(via_first.refresh_token, third.refresh_token);
    // The access tokens minted before still work: rotation revokes nothing.
    assert_eq!(auth_code(&mut client, &first.access_token).await, Code::Ok);
}

async fn reuse_after_the_grace_revokes_the_session_at_both_services(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = auth_config(&db);
    config.sessions.reuse_grace = Duration::ZERO;
    let auth = start_auth_with(config, db).await;
    let tasks = start_tasks_following(&auth, TestDb::new(backend).await).await;
    let mut client = auth_client(&auth).await;
    sign_up(&mut client, "stolen@example.com").await;
    let victim = login(&mut client, "stolen@example.com").await;
    let other_device = login(&mut client, "stolen@example.com").await;

    let rotated = client.refresh(refresh_request(&victim.refresh_token)).await.unwrap().into_inner();
    assert_eq!(super::task_code(&tasks, &rotated.access_token).await, Code::Ok);
    // The thief replays the old token: the whole session ends.
    let err = client.refresh(refresh_request(&victim.refresh_token)).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unauthenticated, BAD_REFRESH));
    let err = client.refresh(refresh_request(&rotated.refresh_token)).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unauthenticated, BAD_REFRESH));
    for token in [&victim.access_token, &rotated.access_token] {
        assert_eq!(auth_code(&mut client, token).await, Code::Unauthenticated);
        until_refused(&tasks, token, Duration::from_secs(1)).await;
    }
    // Another session of the same user is untouched.
    assert_eq!(auth_code(&mut client, &other_device.access_token).await, Code::Ok);
    assert_eq!(super::task_code(&tasks, &other_device.access_token).await, Code::Ok);
}

async fn concurrent_refreshes_with_one_token_leave_one_live_token(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;
    sign_up(&mut client, "tabs@example.com").await;
    let session = login(&mut client, "tabs@example.com").await;
    let sid = uuid::Uuid::parse_str(&session.session_id).unwrap();

    let mut handles = Vec::new();
    for _ in 0..16 {
        let mut client = auth_client(&auth).await;
        let token = session.refresh_token.clone();
        handles.push(tokio::spawn(async move { client.refresh(refresh_request(&token)).await }));
    }
    let mut answers = std::collections::HashSet::new();
    for handle in handles {
        answers.insert(handle.await.unwrap().expect("every parallel refresh succeeds").into_inner().refresh_token);
    }
    assert_eq!(answers.len(), 1, "one token family: every caller got the same new refresh token");
    let live =
        auth.db.scalar("SELECT count(*) FROM refresh_tokens WHERE session_id = $1 AND replaced_at IS NULL", Some(sid));
    assert_eq!(live.await, 1);
}

async fn every_unusable_refresh_token_gets_one_message(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;
    sign_up(&mut client, "bad-refresh@example.com").await;
    let ended = login(&mut client, "bad-refresh@example.com").await;
    client.logout(bearer(&ended.access_token, todo_tests::pb::auth::v1::LogoutRequest { scope: 0 })).await.unwrap();
    let expired = login(&mut client, "bad-refresh@example.com").await;
    let sid = uuid::Uuid::parse_str(&expired.session_id).unwrap();
    let past = match backend {
        Backend::Postgres => "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1",
        Backend::Sqlite => "UPDATE sessions SET expires_at = 0 WHERE id = $1",
    };
    assert_eq!(auth.db.execute(past, sid, None).await, 1);

    let unknown = "A".repeat(43);
    for (label, token) in [
        ("empty", ""),
        ("malformed", "not-a-refresh-token"),
        ("oversized", &"A".repeat(5000)),
        ("unknown", unknown.as_str()),
        ("logged out", ended.refresh_token.as_str()),
        ("expired", expired.refresh_token.as_str()),
    ] {
        let err = client.refresh(refresh_request(token)).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::Unauthenticated, BAD_REFRESH), "{label}");
    }
}
