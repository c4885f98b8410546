//! Model-based property test: random sequences of CreateTask, GetTask, ListTasks (paged, with
//! and without the `completed` filter), UpdateTask (with no, the current or a stale etag) and
//! DeleteTask by three users, each answer checked against an in-memory model, and the tasks
//! table compared with the model after every step. No answer may ever contain a task of
//! another user.
//!
//! The run is reproducible: `TEST_MODEL_SEED=<seed>` replays a run (the seed is printed at the
//! start and in every failure), `TEST_MODEL_STEPS=<n>` changes its length (default 300).

use std::collections::BTreeMap;
use std::time::Duration;

use prost_types::Timestamp;
use todo_tests::adversary::{Rng, TaskRow, task_rows};
use todo_tests::pb::task::v1::task_service_client::TaskServiceClient;
use todo_tests::pb::task::v1::{
    CreateTaskRequest, DeleteTaskRequest, GetTaskRequest, ListTasksRequest, Task, UpdateTaskRequest,
};
use todo_tests::*;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

on_both_backends!(random_operations_by_three_users_match_the_model);

const DEFAULT_STEPS: usize = 300;
const USERS: usize = 3;

struct User {
    id: Uuid,
    token: String,
}

/// A live task as the model knows it.
#[derive(Debug, Clone)]
struct Entry {
    owner: usize,
    /// Exactly what the server must answer for it.
    task: Task,
    /// The `version` column: 1 plus the number of successful updates.
    version: i64,
    /// Etags it had before the current one.
    old_etags: Vec<String>,
}

/// What a CreateTask `request_id` was first used for.
#[derive(Debug, Clone)]
struct Key {
    fingerprint: (String, String, Option<Timestamp>),
    task_id: String,
}

#[derive(Default)]
struct Model {
    live: BTreeMap<String, Entry>,
    /// Every task id ever created, with its owner (deleted ones included).
    owners: BTreeMap<String, usize>,
    deleted: Vec<String>,
    keys: BTreeMap<(usize, String), Key>,
}

impl Model {
    /// The user's tasks that match `completed`, newest first (ties: larger id first).
    fn listing(&self, user: usize, completed: Option<bool>) -> Vec<Task> {
        let mut tasks: Vec<Task> = self
            .live
            .values()
            .filter(|e| e.owner == user && completed.is_none_or(|c| e.task.completed == c))
            .map(|e| e.task.clone())
            .collect();
        let key = |t: &Task| {
            let created = t.create_time.as_ref().map(|c| (c.seconds, c.nanos));
            (created, Uuid::parse_str(&t.id).unwrap())
        };
        tasks.sort_by_key(|t| std::cmp::Reverse(key(t)));
        tasks
    }
}

/// A text of 1..=max characters from a mixed alphabet (multi-byte characters included).
fn text(rng: &mut Rng, max: usize) -> String {
    const ALPHABET: &[&str] = &["a", "b", "k", "z", "Q", "7", " ", "é", "ß", "中", "😀", "-", "'"];
    let len = 1 + rng.below(max);
    let mut s: String = (0..len).map(|_| *rng.pick(ALPHABET)).collect();
    if s.trim().is_empty() {
        s.push('x');
    }
    s
}

/// A title as a client might type it: surrounding whitespace the server trims.
fn title(rng: &mut Rng) -> String {
    let pad =
        |rng: &mut Rng| if rng.chance(30) { (*rng.pick(&[" ", "  ", "\t", "\n "])).to_owned() } else { String::new() };
    format!("{}{}{}", pad(rng), text(rng, 24), pad(rng))
}

fn description(rng: &mut Rng) -> String {
    if rng.chance(20) { String::new() } else { text(rng, 40) }
}

/// A due time anywhere from 1970 to 2096, with nanoseconds the server truncates to micros.
fn due_time(rng: &mut Rng) -> Timestamp {
    Timestamp { seconds: (rng.next_u64() % 4_000_000_000) as i64, nanos: (rng.next_u64() % 1_000_000_000) as i32 }
}

fn truncated(ts: &Timestamp) -> Timestamp {
    Timestamp { seconds: ts.seconds, nanos: ts.nanos - ts.nanos % 1_000 }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn check(result: Result<tonic::Response<impl Sized>, tonic::Status>, expected: Code, ctx: &str) {
    match result {
        Ok(_) if expected == Code::Ok => {}
        Ok(_) => panic!("{ctx}: expected {expected:?}, got OK"),
        Err(status) => assert_eq!(status.code(), expected, "{ctx}: {status:?}"),
    }
}

/// Whom a get, update or delete is aimed at.
enum Target {
    Own(String),
    /// Another user's task, a deleted one, or an id that never existed: NOT_FOUND.
    NotMine(String),
}

fn pick_target(rng: &mut Rng, model: &Model, user: usize) -> Target {
    let own: Vec<&String> = model.live.values().filter(|e| e.owner == user).map(|e| &e.task.id).collect();
    let others: Vec<&String> = model.live.values().filter(|e| e.owner != user).map(|e| &e.task.id).collect();
    let roll = rng.below(100);
    if roll < 70 && !own.is_empty() {
        Target::Own((*rng.pick(&own)).clone())
    } else if roll < 82 && !others.is_empty() {
        Target::NotMine((*rng.pick(&others)).clone())
    } else if roll < 92 && !model.deleted.is_empty() {
        Target::NotMine(rng.pick(&model.deleted).clone())
    } else {
        Target::NotMine(Uuid::now_v7().to_string())
    }
}

/// An etag to send: none, the current one, or a stale or foreign one (which must fail).
fn etag_for(rng: &mut Rng, entry: Option<&Entry>) -> (String, bool) {
    match rng.below(10) {
        0..=4 => (String::new(), false),
        5..=7 => (entry.map(|e| e.task.etag.clone()).unwrap_or_else(|| "\"1\"".into()), false),
        _ => match entry {
            Some(e) if !e.old_etags.is_empty() => (rng.pick(&e.old_etags).clone(), true),
            _ => ((*rng.pick(&["\"0\"", "\"999\"", "bogus", "W/\"1\""])).to_owned(), true),
        },
    }
}

async fn random_operations_by_three_users_match_the_model(backend: Backend) {
    let seed: u64 = env_or("TEST_MODEL_SEED", Rng::fresh_seed());
    let steps: usize = env_or("TEST_MODEL_STEPS", DEFAULT_STEPS);
    eprintln!("model test on {backend:?}: TEST_MODEL_SEED={seed} TEST_MODEL_STEPS={steps}");
    let mut rng = Rng::new(seed);

    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let users: Vec<User> = (0..USERS)
        .map(|_| {
            let id = Uuid::new_v4();
            let token = keys().mint(id, &format!("{id}@example.com"), Duration::from_secs(3600)).unwrap().token;
            User { id, token }
        })
        .collect();
    let mut model = Model::default();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();

    for step in 0..steps {
        let user = rng.below(USERS);
        let ctx = |op: &str| format!("seed {seed}, step {step}, user {user}: {op}");
        let op = match rng.below(100) {
            0..=24 => "create",
            25..=39 => "get",
            40..=54 => "list",
            55..=84 => "update",
            _ => "delete",
        };
        *counts.entry(op).or_default() += 1;
        let outcome = match op {
            "create" => create_step(&mut rng, &mut client, &users, &mut model, user, &ctx("create")).await,
            "get" => get_step(&mut rng, &mut client, &users, &model, user, &ctx("get")).await,
            "list" => list_step(&mut rng, &mut client, &users, &model, user, &ctx("list")).await,
            "update" => update_step(&mut rng, &mut client, &users, &mut model, user, &ctx("update")).await,
            _ => delete_step(&mut rng, &mut client, &users, &mut model, user, &ctx("delete")).await,
        };
        *outcomes.entry(format!("{op}: {outcome}")).or_default() += 1;
        assert_database_matches(&tasks.db, &users, &model, &ctx("database after the step")).await;
    }

    // Finally every user's complete listing, one page, against the model.
    for (user, who) in users.iter().enumerate() {
        let listed = client
            .list_tasks(bearer(&who.token, ListTasksRequest { page_size: 500, ..Default::default() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.tasks, model.listing(user, None), "seed {seed}: final listing of user {user}");
    }
    eprintln!(
        "model test on {backend:?}: {steps} steps {counts:?}, {} live tasks, {} deleted; outcomes {outcomes:#?}",
        model.live.len(),
        model.deleted.len()
    );
}

async fn create_step(
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

async fn get_step(
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

async fn list_step(
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

async fn update_step(
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

async fn delete_step(
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

/// The tasks table holds exactly the model's live tasks, each with the right owner, fields
/// and version.
async fn assert_database_matches(db: &TestDb, users: &[User], model: &Model, ctx: &str) {
    let rows = task_rows(db).await;
    let expected: BTreeMap<Uuid, TaskRow> = model
        .live
        .values()
        .map(|e| {
            let id = Uuid::parse_str(&e.task.id).unwrap();
            let row = TaskRow {
                id,
                user_id: users[e.owner].id,
                title: e.task.title.clone(),
                description: e.task.description.clone(),
                completed: e.task.completed,
                version: e.version,
            };
            (id, row)
        })
        .collect();
    if rows != expected {
        let missing: Vec<_> = expected.keys().filter(|k| !rows.contains_key(k)).collect();
        let extra: Vec<_> = rows.keys().filter(|k| !expected.contains_key(k)).collect();
        let differ: Vec<_> =
            expected.iter().filter(|(k, v)| rows.get(k).is_some_and(|r| r != *v)).map(|(k, v)| (v, &rows[k])).collect();
        panic!(
            "{ctx}: the database differs from the model: missing {missing:?}, extra {extra:?}, differing (model, database) {differ:#?}"
        );
    }
}
