//! Model-based property test: random sequences of CreateTask, GetTask, ListTasks (paged, with
//! and without the `completed` filter), UpdateTask (with no, the current or a stale etag) and
//! DeleteTask by three users, each answer checked against an in-memory model, and the tasks
//! table compared with the model after every step. No answer may ever contain a task of
//! another user.
//!
//! The run is reproducible: `TEST_MODEL_SEED=<seed>` replays a run (the seed is printed at the
//! start and in every failure), `TEST_MODEL_STEPS=<n>` changes its length (default 300).
//!
//! Here the model and the run; `inputs` draws the random requests, `steps` sends one operation
//! and checks its answer against the model.

mod inputs;
mod steps;

use std::collections::BTreeMap;
use std::time::Duration;

use prost_types::Timestamp;
use todo_tests::adversary::{Rng, TaskRow, task_rows};
use todo_tests::pb::task::v1::{ListTasksRequest, Task};
use todo_tests::*;
use uuid::Uuid;

use steps::{create_step, delete_step, get_step, list_step, update_step};

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

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
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
