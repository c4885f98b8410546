//! Both services together: a token minted by auth-service opens task-service.

use todo_tests::pb::auth::v1::{LoginRequest, SignUpRequest};
use todo_tests::pb::task::v1::{
    CreateTaskRequest, DeleteTaskRequest, GetTaskRequest, ListTasksRequest, UpdateTaskRequest,
};
use todo_tests::*;
use tonic::Code;

on_both_backends!(a_user_signs_up_logs_in_and_manages_tasks_with_the_minted_token);

async fn a_user_signs_up_logs_in_and_manages_tasks_with_the_minted_token(backend: Backend) {
    let auth = start_auth(backend).await;
    let tasks = start_tasks(backend).await;
    let mut accounts = auth_client(&auth).await;
    let mut client = task_client(&tasks).await;

    accounts
        .sign_up(SignUpRequest { email: "e2e@example.com".into(), password: "tulip-anchor-93".into() })
        .await
        .unwrap();
    let token = accounts
        .login(LoginRequest { email: "e2e@example.com".into(), password: "tulip-anchor-93".into() })
        .await
        .unwrap()
        .into_inner()
        .access_token;

    let due = prost_types::Timestamp { seconds: 1_900_000_000, nanos: 500_000_000 };
    let created = client
        .create_task(bearer(
            &token,
            CreateTaskRequest {
                title: "  Write the report ".into(),
                description: "by Friday".into(),
                due_time: Some(due),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let id = uuid::Uuid::parse_str(&created.id).unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(created.title, "Write the report");
    assert_eq!(created.description, "by Friday");
    assert!(!created.completed);
    assert_eq!(created.due_time, Some(due));
    assert_eq!(created.create_time, created.update_time);
    assert!(!created.etag.is_empty());

    let fetched =
        client.get_task(bearer(&token, GetTaskRequest { id: created.id.clone() })).await.unwrap().into_inner().task;
    assert_eq!(fetched.as_ref(), Some(&created));

    let listed = client.list_tasks(bearer(&token, ListTasksRequest::default())).await.unwrap().into_inner();
    assert_eq!(listed.tasks, vec![created.clone()]);
    assert!(listed.next_page_token.is_empty());

    // Toggle: complete, then reopen.
    let completed = client
        .update_task(bearer(
            &token,
            UpdateTaskRequest { id: created.id.clone(), completed: Some(true), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert!(completed.completed);
    assert_eq!(completed.title, created.title, "fields not in the request are kept");
    assert_eq!(completed.due_time, created.due_time);
    assert_ne!(completed.etag, created.etag);
    assert!(completed.update_time.as_ref().unwrap().seconds >= created.update_time.as_ref().unwrap().seconds);
    assert_eq!(tasks.db.scalar("SELECT count(*) FROM tasks WHERE completed", None).await, 1);

    let reopened = client
        .update_task(bearer(
            &token,
            UpdateTaskRequest {
                id: created.id.clone(),
                completed: Some(false),
                clear_due_time: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert!(!reopened.completed);
    assert_eq!(reopened.due_time, None);
    assert_eq!(tasks.db.scalar("SELECT version FROM tasks WHERE id = $1", Some(id)).await, 3);

    client
        .delete_task(bearer(&token, DeleteTaskRequest { id: created.id.clone(), etag: String::new() }))
        .await
        .unwrap();
    assert_eq!(tasks.db.scalar("SELECT count(*) FROM tasks", None).await, 0);
    let again =
        client.delete_task(bearer(&token, DeleteTaskRequest { id: created.id.clone(), etag: String::new() })).await;
    assert_eq!(again.unwrap_err().code(), Code::NotFound);
}
