//! ChangePassword and DeleteAccount.

use std::time::Duration;

use todo_tests::pb::auth::v1::{ChangePasswordRequest, DeleteAccountRequest, LoginRequest};
use todo_tests::pb::task::v1::ListTasksRequest;
use todo_tests::*;
use tonic::Code;

use super::{PASSWORD, auth_code, eventually, login, refresh_request, sign_up, task_code, until_refused};

on_both_backends!(
    change_password_keeps_the_current_session_and_ends_the_others,
    delete_account_removes_the_user_their_sessions_and_their_tasks,
    a_deletion_made_while_task_service_was_down_is_purged_when_it_starts,
);

fn change(current: &str, new: &str) -> ChangePasswordRequest {
    ChangePasswordRequest { current_password: current.into(), new_password: new.into() }
}

async fn change_password_keeps_the_current_session_and_ends_the_others(backend: Backend) {
    let pair = start_pair(backend).await;
    let mut client = auth_client(&pair.auth).await;
    sign_up(&mut client, "changer-acct@example.com").await;
    let here = login(&mut client, "changer-acct@example.com").await;
    let elsewhere = login(&mut client, "changer-acct@example.com").await;

    let wrong = client.change_password(bearer(&here.access_token, change("not-it-at-all", "new-sturdy-pass-7"))).await;
    let wrong = wrong.unwrap_err();
    assert_eq!((wrong.code(), wrong.message()), (Code::Unauthenticated, "the password is incorrect"));
    for (new, why) in [("password", "common"), ("short", "too short"), ("changer-acct", "the email's local part")] {
        let err = client.change_password(bearer(&here.access_token, change(PASSWORD, new))).await.unwrap_err();
        assert_eq!(
            (err.code(), violated_fields(&err)),
            (Code::InvalidArgument, vec!["new_password".to_owned()]),
            "{why}"
        );
    }
    assert_eq!(auth_code(&mut client, &elsewhere.access_token).await, Code::Ok, "failed attempts end nothing");

    let changed = client.change_password(bearer(&here.access_token, change(PASSWORD, "new-sturdy-pass-7"))).await;
    assert_eq!(changed.unwrap().into_inner().revoked_sessions, 1);
    assert_eq!(auth_code(&mut client, &here.access_token).await, Code::Ok);
    assert_eq!(task_code(&pair.tasks, &here.access_token).await, Code::Ok);
    client.refresh(refresh_request(&here.refresh_token)).await.expect("the current session still refreshes");
    assert_eq!(auth_code(&mut client, &elsewhere.access_token).await, Code::Unauthenticated);
    until_refused(&pair.tasks, &elsewhere.access_token, Duration::from_secs(1)).await;

    let old = client.login(LoginRequest { email: "changer-acct@example.com".into(), password: PASSWORD.into() }).await;
    assert_eq!(old.unwrap_err().code(), Code::Unauthenticated);
    let new = LoginRequest { email: "changer-acct@example.com".into(), password: "new-sturdy-pass-7".into() };
    client.login(new).await.expect("the new password logs in");
}

async fn delete_account_removes_the_user_their_sessions_and_their_tasks(backend: Backend) {
    let pair = start_pair(backend).await;
    let mut client = auth_client(&pair.auth).await;
    let account = sign_up(&mut client, "leaver@example.com").await;
    let session = login(&mut client, "leaver@example.com").await;
    let mut tasks = task_client(&pair.tasks).await;
    let caller = Caller { id: account.id, token: session.access_token.clone() };
    for title in ["one", "two", "three"] {
        create(&mut tasks, &caller, title).await;
    }
    let count = "SELECT count(*) FROM tasks WHERE user_id = $1";
    assert_eq!(pair.tasks.db.scalar(count, Some(account.id)).await, 3);

    let wrong =
        client.delete_account(bearer(&session.access_token, DeleteAccountRequest { password: "nope-nope".into() }));
    assert_eq!(wrong.await.unwrap_err().code(), Code::Unauthenticated);
    client
        .delete_account(bearer(&session.access_token, DeleteAccountRequest { password: PASSWORD.into() }))
        .await
        .unwrap();

    assert_eq!(auth_code(&mut client, &session.access_token).await, Code::Unauthenticated);
    until_refused(&pair.tasks, &session.access_token, Duration::from_secs(1)).await;
    assert_eq!(pair.auth.db.scalar("SELECT count(*) FROM users WHERE id = $1", Some(account.id)).await, 0);
    assert_eq!(pair.auth.db.scalar("SELECT count(*) FROM sessions WHERE user_id = $1", Some(account.id)).await, 0);
    let db = &pair.tasks.db;
    eventually(Duration::from_secs(5), "tasks purged", || async { db.scalar(count, Some(account.id)).await == 0 })
        .await;

    // The email signs up again as somebody new, who sees nothing of the old account.
    let reborn = sign_up(&mut client, "leaver@example.com").await;
    assert_ne!(reborn.id, account.id);
    let fresh = login(&mut client, "leaver@example.com").await;
    let listed = tasks.list_tasks(bearer(&fresh.access_token, ListTasksRequest::default())).await.unwrap();
    assert!(listed.into_inner().tasks.is_empty());
}

async fn a_deletion_made_while_task_service_was_down_is_purged_when_it_starts(backend: Backend) {
    let auth = start_auth(backend).await;
    let task_db = std::sync::Arc::new(TestDb::new(backend).await);
    let tasks = start_tasks_following(&auth, std::sync::Arc::clone(&task_db)).await;
    let mut client = auth_client(&auth).await;
    let (leaver, stayer) =
        (sign_up(&mut client, "gone@example.com").await, sign_up(&mut client, "kept@example.com").await);
    let (leaver_session, stayer_session) =
        (login(&mut client, "gone@example.com").await, login(&mut client, "kept@example.com").await);
    let mut task_api = task_client(&tasks).await;
    create(&mut task_api, &Caller { id: leaver.id, token: leaver_session.access_token.clone() }, "mine").await;
    create(&mut task_api, &Caller { id: stayer.id, token: stayer_session.access_token.clone() }, "theirs").await;
    drop(task_api);
    tasks.shutdown().await.expect("task-service stops");

    let delete = DeleteAccountRequest { password: PASSWORD.into() };
    client.delete_account(bearer(&leaver_session.access_token, delete)).await.unwrap();

    let restarted = start_tasks_following(&auth, std::sync::Arc::clone(&task_db)).await;
    let count = "SELECT count(*) FROM tasks WHERE user_id = $1";
    eventually(Duration::from_secs(5), "tasks purged after restart", || async {
        task_db.scalar(count, Some(leaver.id)).await == 0
    })
    .await;
    assert_eq!(task_db.scalar(count, Some(stayer.id)).await, 1, "another user's tasks stay");
    assert_eq!(task_code(&restarted, &leaver_session.access_token).await, Code::Unauthenticated);
    assert_eq!(task_code(&restarted, &stayer_session.access_token).await, Code::Ok);
}
