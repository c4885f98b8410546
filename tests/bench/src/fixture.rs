//! The data every scenario works on, created through the real services' own RPCs: users
//! (signed up and logged in, so their tokens are real), ten tasks each, and one user with
//! exactly the hundred tasks ListTasks returns.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use todo_contract::auth::v1 as auth_pb;
use todo_contract::auth::v1::auth_service_client::AuthServiceClient;
use todo_contract::task::v1 as task_pb;
use todo_contract::task::v1::task_service_client::TaskServiceClient;
use tonic::Request;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::Result;

/// Users the per-user scenarios and the mixed workload spread over.
pub const USERS: usize = 100;
/// Tasks seeded per user. The first is never deleted (GetTask, UpdateTask and their pgbench
/// twins use it); the mixed workload deletes and re-creates among the others.
pub const TASKS_PER_USER: usize = 10;
/// Tasks of the ListTasks user: one full page.
pub const LIST_TASKS: usize = 100;

/// A 60-character description, the same on every task the harness writes.
pub const DESCRIPTION: &str = "Benchmark task description: sixty characters of plain text.";

pub struct User {
    pub id: String,
    pub email: String,
    pub password: String,
    /// `Bearer <token>` from a real Login.
    pub bearer: AsciiMetadataValue,
    /// The session's current refresh token; the Refresh scenario rotates it (one worker per
    /// user, so never two at once).
    pub refresh: Mutex<String>,
    /// Ids of the tasks seeded for this user, oldest first.
    pub tasks: Vec<String>,
    /// The scale mode's deep page: ListTasks page 50 of 20.
    pub deep_page: Option<DeepPage>,
}

/// The scale mode's ListTasks page size.
pub const SCALE_PAGE_SIZE: usize = 20;

/// A page far into a user's list: the token that asks for it and the id it starts with.
pub struct DeepPage {
    pub token: String,
    pub first_id: String,
}

pub struct Fixture {
    pub users: Vec<User>,
    pub list_user: User,
    /// Per user: the ids the mixed workload may delete (everything but `tasks[0]`), handed to
    /// the workers that own the user for the length of a run.
    pub mixed_pool: Mutex<Vec<Vec<String>>>,
    /// GetTask and UpdateTask pick any of the user's tasks (the scale mode, where which rows
    /// are touched matters), not always the first (the matrix, whose pgbench twins do that).
    pub any_task: bool,
}

pub async fn connect(addr: SocketAddr) -> Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?)
}

pub fn authed<T>(message: T, bearer: &AsciiMetadataValue) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", bearer.clone());
    request
}

pub fn new_task(title: String) -> task_pb::CreateTaskRequest {
    task_pb::CreateTaskRequest {
        title,
        description: DESCRIPTION.to_owned(),
        due_time: Some(prost_types::Timestamp { seconds: 1_798_761_600, nanos: 0 }),
        // No idempotency key: the plain one-statement insert.
        ..Default::default()
    }
}

pub async fn sign_up_and_login(auth: Channel, index: usize, prefix: &str) -> Result<User> {
    let mut client = AuthServiceClient::new(auth);
    let email = format!("{prefix}-{index}@bench.example.com");
    let password = format!("bench password {index}");
    let user = client
        .sign_up(auth_pb::SignUpRequest { email: email.clone(), password: password.clone() })
        .await?
        .into_inner()
        .user
        .ok_or("SignUp answered without a user")?;
    let login = client.login(auth_pb::LoginRequest { email: email.clone(), password: password.clone() }).await?;
    let login = login.into_inner();
    let bearer = format!("Bearer {}", login.access_token).parse()?;
    Ok(User {
        id: user.id,
        email,
        password,
        bearer,
        refresh: Mutex::new(login.refresh_token),
        tasks: Vec::new(),
        deep_page: None,
    })
}

async fn seed_tasks(tasks: Channel, user: &mut User, count: usize) -> Result<()> {
    let mut client = TaskServiceClient::new(tasks);
    for i in 0..count {
        let created = client.create_task(authed(new_task(format!("Seeded task {i}")), &user.bearer)).await?;
        let task = created.into_inner().task.ok_or("CreateTask answered without a task")?;
        user.tasks.push(task.id);
    }
    Ok(())
}

/// Signs up and logs in [`USERS`] + 1 users (four at a time: each costs two argon2id hashes
/// and the service has one hashing slot per core), then seeds their tasks sixteen at a time.
pub async fn seed(auth_addr: SocketAddr, task_addr: SocketAddr) -> Result<Fixture> {
    let auth = connect(auth_addr).await?;
    let tasks = connect(task_addr).await?;
    let run = std::process::id();
    let prefix = format!("user-{run}");

    let mut users: Vec<Option<User>> = (0..=USERS).map(|_| None).collect();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (auth, next, prefix) = (auth.clone(), next.clone(), prefix.clone());
        set.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i > USERS {
                    return Ok::<_, crate::Error>(done);
                }
                done.push((i, sign_up_and_login(auth.clone(), i, &prefix).await?));
            }
        });
    }
    while let Some(done) = set.join_next().await {
        for (i, user) in done?? {
            users[i] = Some(user);
        }
    }
    let mut users: Vec<User> = users.into_iter().collect::<Option<_>>().ok_or("a user was not seeded")?;
    let mut list_user = users.pop().ok_or("no list user")?;

    let mut set = tokio::task::JoinSet::new();
    let chunk = USERS.div_ceil(16);
    let mut index = 0;
    while !users.is_empty() {
        let batch: Vec<User> = users.drain(..chunk.min(users.len())).collect();
        let tasks = tasks.clone();
        let first = index;
        index += batch.len();
        set.spawn(async move {
            let mut batch = batch;
            for user in &mut batch {
                seed_tasks(tasks.clone(), user, TASKS_PER_USER).await?;
            }
            Ok::<_, crate::Error>((first, batch))
        });
    }
    seed_tasks(tasks.clone(), &mut list_user, LIST_TASKS).await?;
    let mut batches = Vec::new();
    while let Some(done) = set.join_next().await {
        batches.push(done??);
    }
    batches.sort_by_key(|(first, _)| *first);
    let users: Vec<User> = batches.into_iter().flat_map(|(_, batch)| batch).collect();
    let mixed_pool = Mutex::new(users.iter().map(|u| u.tasks[1..].to_vec()).collect());
    Ok(Fixture { users, list_user, mixed_pool, any_task: false })
}
