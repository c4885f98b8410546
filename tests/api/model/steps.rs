//! The steps of the model test: one CreateTask, GetTask, ListTasks, UpdateTask or DeleteTask,
//! its answer checked against the model, and the model updated to match.

use todo_tests::adversary::Rng;
use todo_tests::pb::task::v1::task_service_client::TaskServiceClient;
use todo_tests::pb::task::v1::{
    CreateTaskRequest, DeleteTaskRequest, GetTaskRequest, ListTasksRequest, Task, UpdateTaskRequest,
};
use todo_tests::*;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

use super::inputs::{Target, description, due_time, etag_for, pick_target, title, truncated};
use super::{Entry, Key, Model, User};

fn check(result: Result<tonic::Response<impl Sized>, tonic::Status>, expected: Code, ctx: &str) {
    match result {
        Ok(_) if expected == Code::Ok => {}
        Ok(_) => panic!("{ctx}: expected {expected:?}, got OK"),
        Err(status) => assert_eq!(status.code(), expected, "{ctx}: {status:?}"),
    }
}

pub(super) async fn create_step(
    rng: &mut Rng,
    client: &mut TaskServiceClient<Channel>,
    users: &[User],
    model: &mut Model,
    user: usize,
    ctx: &str,
) -> &'static str {
    let invalid = rng.chance(5);
    let request = CreateTaskRequest {
        title: if invalid { (*rng.pick(&["", " ", "\t\n"])).to_owned() } else { title(rng) },
        description: description(rng),
        due_time: if rng.chance(30) { Some(due_time(rng)) } else { None },
        // A small shared pool, so keys are retried and collide across users.
        request_id: if rng.chance(35) { format!("key-{}", rng.below(4)) } else { String::new() },
    };
    let mut request = request;
    // Often a retry: the same key with the same content as its first use (a title that
    // differs only in surrounding whitespace is the same title).
    if let Some(key) = model.keys.get(&(user, request.request_id.clone())).filter(|_| !invalid && rng.chance(60)) {
        (request.title, request.description, request.due_time) = key.fingerprint.clone();
        request.title = format!(" {} ", request.title);
    }
    let ctx = format!("{ctx} {request:?}");
    let result = client.create_task(bearer(&users[user].token, request.clone())).await;
    if invalid {
        check(result, Code::InvalidArgument, &ctx);
        return "invalid";
    }
    let fingerprint =
        (request.title.trim().to_owned(), request.description.clone(), request.due_time.as_ref().map(truncated));
    let previous =
        (!request.request_id.is_empty()).then(|| model.keys.get(&(user, request.request_id.clone()))).flatten();
    match previous {
        Some(key) if key.fingerprint != fingerprint => {
            check(result, Code::InvalidArgument, &ctx);
            "request_id reused with other content"
        }
        Some(key) => match model.live.get(&key.task_id) {
            None => {
                check(result, Code::NotFound, &format!("{ctx} (retry of a deleted task)"));
                "retry of a deleted task"
            }
            Some(entry) => {
                let task = result.unwrap_or_else(|e| panic!("{ctx}: {e:?}")).into_inner().task.unwrap();
                assert_eq!(task, entry.task, "{ctx}: a retry returns the task as it is now");
                "retry"
            }
        },
        None => {
            let task = result.unwrap_or_else(|e| panic!("{ctx}: {e:?}")).into_inner().task.unwrap();
            let id = Uuid::parse_str(&task.id).unwrap();
            assert_eq!(id.get_version_num(), 7, "{ctx}");
            assert!(!model.owners.contains_key(&task.id), "{ctx}: id {} reused", task.id);
            assert_eq!(task.title, fingerprint.0, "{ctx}");
            assert_eq!(task.description, fingerprint.1, "{ctx}");
            assert_eq!(task.due_time, fingerprint.2, "{ctx}");
            assert!(!task.completed, "{ctx}");
            assert!(task.create_time.is_some() && task.create_time == task.update_time, "{ctx}");
            assert!(!task.etag.is_empty(), "{ctx}");
            let keyed = !request.request_id.is_empty();
            if keyed {
                model.keys.insert((user, request.request_id), Key { fingerprint, task_id: task.id.clone() });
            }
            model.owners.insert(task.id.clone(), user);
            model.live.insert(task.id.clone(), Entry { owner: user, task, version: 1, old_etags: Vec::new() });
            if keyed { "created with a request_id" } else { "created" }
        }
    }
}

pub(super) async fn get_step(
    rng: &mut Rng,
    client: &mut TaskServiceClient<Channel>,
    users: &[User],
    model: &Model,
    user: usize,
    ctx: &str,
) -> &'static str {
    match pick_target(rng, model, user) {
        Target::Own(id) => {
            let got = client.get_task(bearer(&users[user].token, GetTaskRequest { id: id.clone() })).await;
            let got = got.unwrap_or_else(|e| panic!("{ctx} {id}: {e:?}")).into_inner().task.unwrap();
            assert_eq!(got, model.live[&id].task, "{ctx} {id}");
            "found"
        }
        Target::NotMine(id) => {
            let result = client.get_task(bearer(&users[user].token, GetTaskRequest { id: id.clone() })).await;
            check(result, Code::NotFound, &format!("{ctx} {id} (not the caller's)"));
            "not found"
        }
    }
}

pub(super) async fn list_step(
    rng: &mut Rng,
    client: &mut TaskServiceClient<Channel>,
    users: &[User],
    model: &Model,
    user: usize,
    ctx: &str,
) -> &'static str {
    let completed = *rng.pick(&[None, None, Some(true), Some(false)]);
    let page_size = *rng.pick(&[0, 1, 2, 3, 5, 8, 600]);
    let effective = match page_size {
        0 => 50,
        n if n > 500 => 500,
        n => n as usize,
    };
    let expected = model.listing(user, completed);
    let ctx = format!("{ctx} page_size {page_size}, completed {completed:?}");
    let mut seen: Vec<Task> = Vec::new();
    let mut page_token = String::new();
    for page_number in 0.. {
        let request = ListTasksRequest { page_size, page_token, completed };
        let page = client.list_tasks(bearer(&users[user].token, request)).await;
        let page = page.unwrap_or_else(|e| panic!("{ctx}, page {page_number}: {e:?}")).into_inner();
        for task in &page.tasks {
            assert_eq!(
                model.owners.get(&task.id),
                Some(&user),
                "{ctx}: page {page_number} shows a task of another user (or an unknown one): {task:?}"
            );
        }
        assert!(page.tasks.len() <= effective, "{ctx}: page {page_number} has {} tasks", page.tasks.len());
        let last = page.next_page_token.is_empty();
        if !last {
            assert_eq!(page.tasks.len(), effective, "{ctx}: page {page_number} is short but not the last");
        }
        seen.extend(page.tasks);
        if last {
            break;
        }
        assert!(seen.len() <= expected.len(), "{ctx}: more pages than tasks");
        page_token = page.next_page_token;
    }
    assert_eq!(seen, expected, "{ctx}");
    match (completed, seen.len()) {
        (_, 0) => "empty",
        (None, _) => "all",
        (Some(_), _) => "filtered",
    }
}

pub(super) async fn update_step(
    rng: &mut Rng,
    client: &mut TaskServiceClient<Channel>,
    users: &[User],
    model: &mut Model,
    user: usize,
    ctx: &str,
) -> &'static str {
    let target = pick_target(rng, model, user);
    let id = match &target {
        Target::Own(id) | Target::NotMine(id) => id.clone(),
    };
    let entry = match &target {
        Target::Own(id) => Some(model.live[id].clone()),
        Target::NotMine(_) => None,
    };
    let (etag, stale) = etag_for(rng, entry.as_ref());
    let mut request = UpdateTaskRequest { id: id.clone(), etag, ..Default::default() };
    let mut invalid = false;
    match rng.below(100) {
        0..=2 => invalid = true, // nothing to change
        3..=5 => {
            request.title = Some("  ".into());
            invalid = true;
        }
        6..=7 => {
            request.due_time = Some(due_time(rng));
            request.clear_due_time = true;
            invalid = true;
        }
        _ => {
            while request.title.is_none()
                && request.description.is_none()
                && request.completed.is_none()
                && request.due_time.is_none()
                && !request.clear_due_time
            {
                if rng.chance(40) {
                    request.title = Some(title(rng));
                }
                if rng.chance(30) {
                    request.description = Some(description(rng));
                }
                if rng.chance(50) {
                    request.completed = Some(rng.chance(50));
                }
                match rng.below(10) {
                    0 => request.due_time = Some(due_time(rng)),
                    1 => request.clear_due_time = true,
                    _ => {}
                }
            }
        }
    }
    let ctx = format!("{ctx} {request:?}");
    let result = client.update_task(bearer(&users[user].token, request.clone())).await;
    let Some(entry) = entry.filter(|_| !invalid) else {
        // Validation comes first; then a task that is not the caller's is NOT_FOUND, whatever etag.
        check(result, if invalid { Code::InvalidArgument } else { Code::NotFound }, &ctx);
        return if invalid { "invalid" } else { "not found" };
    };
    if stale {
        check(result, Code::Aborted, &ctx);
        return "stale etag";
    }
    let task = result.unwrap_or_else(|e| panic!("{ctx}: {e:?}")).into_inner().task.unwrap();
    let before = &entry.task;
    let mut expected = before.clone();
    if let Some(title) = &request.title {
        expected.title = title.trim().to_owned();
    }
    if let Some(description) = &request.description {
        expected.description = description.clone();
    }
    if let Some(completed) = request.completed {
        expected.completed = completed;
    }
    if let Some(due) = &request.due_time {
        expected.due_time = Some(truncated(due));
    }
    if request.clear_due_time {
        expected.due_time = None;
    }
    expected.update_time = task.update_time;
    expected.etag = task.etag.clone();
    assert_eq!(task, expected, "{ctx}");
    let (old, new) = (before.update_time.unwrap(), task.update_time.unwrap());
    assert!((new.seconds, new.nanos) >= (old.seconds, old.nanos), "{ctx}: update_time went back");
    assert_ne!(task.etag, before.etag, "{ctx}: the etag did not change");
    assert!(!entry.old_etags.contains(&task.etag), "{ctx}: an old etag came back");
    let live = model.live.get_mut(&id).unwrap();
    live.old_etags.push(before.etag.clone());
    live.task = task;
    live.version += 1;
    if request.etag.is_empty() { "updated" } else { "updated with its etag" }
}

pub(super) async fn delete_step(
    rng: &mut Rng,
    client: &mut TaskServiceClient<Channel>,
    users: &[User],
    model: &mut Model,
    user: usize,
    ctx: &str,
) -> &'static str {
    let target = pick_target(rng, model, user);
    let (id, entry) = match &target {
        Target::Own(id) => (id.clone(), Some(model.live[id].clone())),
        Target::NotMine(id) => (id.clone(), None),
    };
    let (etag, stale) = etag_for(rng, entry.as_ref());
    let request = DeleteTaskRequest { id: id.clone(), etag };
    let ctx = format!("{ctx} {request:?}");
    let result = client.delete_task(bearer(&users[user].token, request)).await;
    match entry {
        None => {
            check(result, Code::NotFound, &ctx);
            "not found"
        }
        Some(_) if stale => {
            check(result, Code::Aborted, &ctx);
            "stale etag"
        }
        Some(_) => {
            check(result, Code::Ok, &ctx);
            model.live.remove(&id);
            model.deleted.push(id);
            "deleted"
        }
    }
}
