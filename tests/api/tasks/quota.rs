//! `TASK_MAX_TASKS_PER_USER`: an account holds at most that many tasks, exactly, however many
//! creates race; a delete makes room; an idempotent retry of a create is not a new task; other
//! accounts are not affected; the count survives in the database (deleted accounts included).

use todo_contract::task::v1::{CreateTaskRequest, DeleteTaskRequest};
use todo_tests::*;
use tonic::Code;
use tonic_types::StatusExt as _;

on_both_backends!(the_task_limit_holds_exactly_under_sixteen_concurrent_creators);

const MAX: i64 = 5;

async fn the_task_limit_holds_exactly_under_sixteen_concurrent_creators(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = task_config(&db);
    config.max_tasks_per_user = MAX;
    let tasks = start_tasks_with(config, db).await;
    let me = caller();
    let mut client = task_client(&tasks).await;
    // One task exists already, with an idempotency key.
    let keyed = CreateTaskRequest { title: "keyed".into(), request_id: "first-one".into(), ..Default::default() };
    let first = client.create_task(bearer(&me.token, keyed.clone())).await.unwrap().into_inner().task.unwrap();

    let creators: Vec<_> = (0..16)
        .map(|i| {
            let (mut client, token) = (client.clone(), me.token.clone());
            tokio::spawn(async move {
                let request = CreateTaskRequest { title: format!("racing {i}"), ..Default::default() };
                client.create_task(bearer(&token, request)).await
            })
        })
        .collect();
    let mut refusals = Vec::new();
    let mut created = 0;
    for creator in creators {
        match creator.await.unwrap() {
            Ok(_) => created += 1,
            Err(status) => refusals.push(status),
        }
    }
    assert_eq!(created, MAX - 1, "exactly up to the limit");
    assert_eq!(refusals.len() as i64, 16 - (MAX - 1));
    for refused in &refusals {
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(refused.message().contains("limit of 5 tasks"), "{}", refused.message());
        let details = refused.get_error_details();
        let violations = &details.quota_failure().expect("QuotaFailure").violations;
        assert_eq!((violations.len(), violations[0].subject.as_str()), (1, "user"));
        assert!(details.retry_info().is_none(), "waiting does not help: deleting does");
    }
    const COUNT: &str = "SELECT count(*) FROM tasks WHERE user_id = $1";
    assert_eq!(tasks.db.scalar(COUNT, Some(me.id)).await, MAX);

    // A retry of a create that succeeded is answered with its task, not refused.
    let again = client.create_task(bearer(&me.token, keyed)).await.unwrap().into_inner().task.unwrap();
    assert_eq!(again.id, first.id);
    // Another account is not affected.
    let other = caller();
    create(&mut client, &other, "someone else's").await;
    // A delete makes room for exactly one more.
    client
        .delete_task(bearer(&me.token, DeleteTaskRequest { id: first.id.clone(), ..Default::default() }))
        .await
        .unwrap();
    create(&mut client, &me, "in the freed place").await;
    let full = client
        .create_task(bearer(&me.token, CreateTaskRequest { title: "one too many".into(), ..Default::default() }))
        .await;
    assert_eq!(full.unwrap_err().code(), Code::ResourceExhausted);
    assert_eq!(tasks.db.scalar(COUNT, Some(me.id)).await, MAX);
}
