//! Logout scopes, the sessions list and RevokeSession.

use std::time::Duration;

use todo_tests::pb::auth::v1::{ListSessionsRequest, LogoutRequest, LogoutScope, RevokeSessionRequest};
use todo_tests::*;
use tonic::Code;

use super::{auth_code, login, refresh_request, sign_up, task_code, until_refused};

on_both_backends!(
    logout_scopes_end_the_current_the_others_or_all_sessions,
    the_sessions_list_shows_only_the_callers_live_sessions,
    revoking_another_users_session_is_indistinguishable_from_an_unknown_one,
    a_token_without_a_session_can_only_log_out_everywhere,
);

fn logout(scope: LogoutScope) -> LogoutRequest {
    LogoutRequest { scope: scope as i32 }
}

async fn logout_scopes_end_the_current_the_others_or_all_sessions(backend: Backend) {
    let pair = start_pair(backend).await;
    let mut client = auth_client(&pair.auth).await;
    sign_up(&mut client, "scopes@example.com").await;
    let (a, b, c) = (
        login(&mut client, "scopes@example.com").await,
        login(&mut client, "scopes@example.com").await,
        login(&mut client, "scopes@example.com").await,
    );

    let others = client.logout(bearer(&a.access_token, logout(LogoutScope::Others))).await.unwrap().into_inner();
    assert_eq!(others.revoked_sessions, 2);
    for ended in [&b, &c] {
        assert_eq!(auth_code(&mut client, &ended.access_token).await, Code::Unauthenticated);
        until_refused(&pair.tasks, &ended.access_token, Duration::from_secs(1)).await;
        let err = client.refresh(refresh_request(&ended.refresh_token)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    assert_eq!(auth_code(&mut client, &a.access_token).await, Code::Ok);
    assert_eq!(task_code(&pair.tasks, &a.access_token).await, Code::Ok);

    // UNSPECIFIED means the current session.
    let current = client.logout(bearer(&a.access_token, logout(LogoutScope::Unspecified))).await.unwrap();
    assert_eq!(current.into_inner().revoked_sessions, 1);
    assert_eq!(auth_code(&mut client, &a.access_token).await, Code::Unauthenticated);
    until_refused(&pair.tasks, &a.access_token, Duration::from_secs(1)).await;

    let (d, e) = (login(&mut client, "scopes@example.com").await, login(&mut client, "scopes@example.com").await);
    let all = client.logout(bearer(&d.access_token, logout(LogoutScope::All))).await.unwrap().into_inner();
    assert_eq!(all.revoked_sessions, 2);
    for ended in [&d, &e] {
        assert_eq!(auth_code(&mut client, &ended.access_token).await, Code::Unauthenticated);
        until_refused(&pair.tasks, &ended.access_token, Duration::from_secs(1)).await;
    }
    // A scope from a newer contract is refused, not guessed at.
    let fresh = login(&mut client, "scopes@example.com").await;
    let err = client.logout(bearer(&fresh.access_token, LogoutRequest { scope: 99 })).await.unwrap_err();
    assert_eq!((err.code(), violated_fields(&err)), (Code::InvalidArgument, vec!["scope".to_owned()]));
}

async fn the_sessions_list_shows_only_the_callers_live_sessions(backend: Backend) {
    let auth = start_auth(backend).await;
    let channel = tonic::transport::Channel::from_shared(auth.url())
        .unwrap()
        .user_agent("todo-tests-phone/1.0")
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut phone = todo_tests::pb::auth::v1::auth_service_client::AuthServiceClient::new(channel);
    let mut laptop = auth_client(&auth).await;
    sign_up(&mut laptop, "list@example.com").await;
    sign_up(&mut laptop, "someone-else@example.com").await;
    let on_phone = login(&mut phone, "list@example.com").await;
    let on_laptop = login(&mut laptop, "list@example.com").await;
    login(&mut laptop, "someone-else@example.com").await;

    let list = laptop.list_sessions(bearer(&on_laptop.access_token, ListSessionsRequest {})).await.unwrap();
    let sessions = list.into_inner().sessions;
    let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [on_laptop.session_id.as_str(), on_phone.session_id.as_str()], "newest first, own only");
    assert!(sessions[0].current && !sessions[1].current);
    assert!(sessions[1].user_agent.starts_with("todo-tests-phone/1.0"), "{}", sessions[1].user_agent);
    assert!(sessions.iter().all(|s| s.create_time.is_some() && s.last_use_time.is_some()));

    // A refresh moves last_use_time.
    let before = sessions[1].last_use_time.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    phone.refresh(refresh_request(&on_phone.refresh_token)).await.unwrap();
    let list = laptop.list_sessions(bearer(&on_laptop.access_token, ListSessionsRequest {})).await.unwrap();
    let after = list.into_inner().sessions[1].last_use_time.unwrap();
    assert!((after.seconds, after.nanos) > (before.seconds, before.nanos));
}

async fn revoking_another_users_session_is_indistinguishable_from_an_unknown_one(backend: Backend) {
    let pair = start_pair(backend).await;
    let mut client = auth_client(&pair.auth).await;
    sign_up(&mut client, "alice@example.com").await;
    sign_up(&mut client, "bob@example.com").await;
    let alice = login(&mut client, "alice@example.com").await;
    let alice_phone = login(&mut client, "alice@example.com").await;
    let bob = login(&mut client, "bob@example.com").await;

    let revoke = |id: &str| RevokeSessionRequest { id: id.to_owned() };
    let theirs = client.revoke_session(bearer(&alice.access_token, revoke(&bob.session_id))).await.unwrap_err();
    let unknown = uuid::Uuid::new_v4().to_string();
    let nobodys = client.revoke_session(bearer(&alice.access_token, revoke(&unknown))).await.unwrap_err();
    assert_eq!((theirs.code(), theirs.message()), (Code::NotFound, "no such session"));
    assert_eq!((nobodys.code(), nobodys.message()), (theirs.code(), theirs.message()));
    assert_eq!(auth_code(&mut client, &bob.access_token).await, Code::Ok);

    let malformed = client.revoke_session(bearer(&alice.access_token, revoke("not-a-uuid"))).await.unwrap_err();
    assert_eq!((malformed.code(), violated_fields(&malformed)), (Code::InvalidArgument, vec!["id".to_owned()]));

    client.revoke_session(bearer(&alice.access_token, revoke(&alice_phone.session_id))).await.unwrap();
    until_refused(&pair.tasks, &alice_phone.access_token, Duration::from_secs(1)).await;
    assert_eq!(
        client.refresh(refresh_request(&alice_phone.refresh_token)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(task_code(&pair.tasks, &alice.access_token).await, Code::Ok);
    // Revoking it twice: it is no longer one of hers.
    let twice = client.revoke_session(bearer(&alice.access_token, revoke(&alice_phone.session_id))).await;
    assert_eq!(twice.unwrap_err().code(), Code::NotFound);
}

async fn a_token_without_a_session_can_only_log_out_everywhere(backend: Backend) {
    let pair = start_pair(backend).await;
    let mut client = auth_client(&pair.auth).await;
    let account = sign_up(&mut client, "legacy-token@example.com").await;
    // Minted as tokens were before sessions existed: no `sid`.
    let legacy = keys().mint(account.id, &account.email, Duration::from_secs(600)).unwrap().token;
    assert_eq!(auth_code(&mut client, &legacy).await, Code::Ok);
    assert_eq!(task_code(&pair.tasks, &legacy).await, Code::Ok);

    for scope in [LogoutScope::Current, LogoutScope::Others] {
        let err = client.logout(bearer(&legacy, logout(scope))).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{scope:?}");
    }
    let session = login(&mut client, "legacy-token@example.com").await;
    let all = client.logout(bearer(&legacy, logout(LogoutScope::All))).await.unwrap().into_inner();
    assert_eq!(all.revoked_sessions, 1);
    assert_eq!(auth_code(&mut client, &legacy).await, Code::Unauthenticated);
    until_refused(&pair.tasks, &legacy, Duration::from_secs(1)).await;
    until_refused(&pair.tasks, &session.access_token, Duration::from_secs(1)).await;
    // A new login after it works.
    let later = login(&mut client, "legacy-token@example.com").await;
    assert_eq!(task_code(&pair.tasks, &later.access_token).await, Code::Ok);
}
