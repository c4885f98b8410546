//! The load generator: N workers in a closed loop (each sends its next request as soon as the
//! previous one is answered), spread round-robin over up to eight HTTP/2 connections, a
//! warm-up, then a measured window. Every answer is checked: a non-OK status, or an OK with
//! the wrong content, is counted by kind and never as a success.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use todo_contract::auth::v1 as auth_pb;
use todo_contract::auth::v1::auth_service_client::AuthServiceClient;
use todo_contract::task::v1 as task_pb;
use todo_contract::task::v1::task_service_client::TaskServiceClient;
use tonic::transport::Channel;

use crate::Result;
use crate::fixture::{Fixture, LIST_TASKS, authed, connect, new_task};

/// Connections per target: enough to spread the work over the server's runtime workers
/// without one connection per in-flight request.
const MAX_CONNECTIONS: usize = 8;
/// A call that takes this long is a failure of its own ("client timeout"), not a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Login,
    GetCurrentUser,
    GetTask,
    ListTasks,
    CreateTask,
    UpdateTask,
    Mixed,
    /// GetTask on the hundred tasks of one user (the ListTasks user): the token-overhead
    /// comparison, where the no-auth host serves a single fixed user.
    GetTaskOneUser,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Login => "Login",
            Self::GetCurrentUser => "GetCurrentUser",
            Self::GetTask => "GetTask",
            Self::ListTasks => "ListTasks(100)",
            Self::CreateTask => "CreateTask",
            Self::UpdateTask => "UpdateTask",
            Self::Mixed => "Mixed",
            Self::GetTaskOneUser => "GetTask(one user)",
        }
    }

    pub fn on_auth_service(self) -> bool {
        matches!(self, Self::Login | Self::GetCurrentUser)
    }
}

/// One set of workers driving one kind of request at one server.
#[derive(Debug, Clone)]
pub struct Group {
    pub kind: Kind,
    pub in_flight: usize,
    pub addr: SocketAddr,
    /// The echo server cannot know whose token it got: skip the per-user content checks.
    pub echo: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub window: Duration,
}

/// What one group did in the measured window (errors: warm-up included).
#[derive(Debug, Clone)]
pub struct Stats {
    pub kind: Kind,
    pub in_flight: usize,
    pub ok: u64,
    pub elapsed: Duration,
    /// Latencies of the successful calls answered in the window, sorted, in nanoseconds.
    pub latencies: Vec<u64>,
    /// Failures by kind, with one example message each.
    pub errors: BTreeMap<String, (u64, String)>,
}

impl Stats {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Nearest-rank percentile, in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1] as f64 / 1e6
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().map(|(n, _)| n).sum()
    }
}

/// Why one call failed.
struct Failure {
    label: String,
    message: String,
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Self { label: format!("{:?}", status.code()), message: status.message().to_owned() }
    }
}

fn wrong(message: &str) -> Failure {
    Failure { label: "wrong answer".to_owned(), message: message.to_owned() }
}

/// Tasks of one user that one mixed worker owns for the length of a run.
struct Owned {
    user: usize,
    deletable: Vec<String>,
}

struct Worker {
    kind: Kind,
    index: usize,
    echo: bool,
    fixture: Arc<Fixture>,
    auth: AuthServiceClient<Channel>,
    tasks: TaskServiceClient<Channel>,
    rng: u64,
    count: u64,
    owned: Vec<Owned>,
}

impl Worker {
    fn new(group: &Group, index: usize, fixture: Arc<Fixture>, channel: Channel) -> Self {
        let (kind, in_flight) = (group.kind, group.in_flight);
        let owned = if kind == Kind::Mixed {
            // Each user belongs to exactly one worker, so no two workers ever race on a task
            // (a delete racing a read would be a harness-made NOT_FOUND).
            let mut pool = fixture.mixed_pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (0..pool.len())
                .filter(|u| u % in_flight == index)
                .map(|user| {
                    // Runs against the echo server get a copy: its made-up ids must not
                    // reach the real runs.
                    let deletable = if group.echo { pool[user].clone() } else { std::mem::take(&mut pool[user]) };
                    Owned { user, deletable }
                })
                .collect()
        } else {
            Vec::new()
        };
        Self {
            kind,
            index,
            echo: group.echo,
            auth: AuthServiceClient::new(channel.clone()),
            tasks: TaskServiceClient::new(channel),
            fixture,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
            count: 0,
            owned,
        }
    }

    fn random(&mut self, bound: usize) -> usize {
        // xorshift64*: plenty for picking operations and rows.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % bound.max(1)
    }

    /// The user of the per-user scenarios: worker i is user i (mod 100), so at up to 100 in
    /// flight every worker has a user and a task to itself, as every pgbench client does.
    fn own_user(&self) -> usize {
        self.index % self.fixture.users.len()
    }

    async fn call(&mut self) -> Result<(), Failure> {
        self.count += 1;
        match self.kind {
            Kind::Login => {
                let user = &self.fixture.users[self.own_user()];
                let request = auth_pb::LoginRequest { email: user.email.clone(), password: user.password.clone() };
                let answer = self.auth.login(request).await?.into_inner();
                if answer.access_token.is_empty() {
                    return Err(wrong("Login without an access token"));
                }
            }
            Kind::GetCurrentUser => {
                let user = &self.fixture.users[self.own_user()];
                let request = authed(auth_pb::GetCurrentUserRequest {}, &user.bearer);
                let answer = self.auth.get_current_user(request).await?.into_inner();
                let id = answer.user.map(|u| u.id);
                if id.is_none() || (!self.echo && id.as_deref() != Some(user.id.as_str())) {
                    return Err(wrong("GetCurrentUser returned another user"));
                }
            }
            Kind::GetTask => {
                let user = &self.fixture.users[self.own_user()];
                self.get_task(user.tasks[0].clone(), self.own_user()).await?;
            }
            Kind::GetTaskOneUser => {
                let user = &self.fixture.list_user;
                let id = user.tasks[self.index % user.tasks.len()].clone();
                let request = authed(task_pb::GetTaskRequest { id: id.clone() }, &user.bearer);
                let answer = self.tasks.get_task(request).await?.into_inner();
                if answer.task.map(|t| t.id) != Some(id) {
                    return Err(wrong("GetTask returned another task"));
                }
            }
            Kind::ListTasks => {
                let user = &self.fixture.list_user;
                let request = authed(task_pb::ListTasksRequest { page_size: 100, ..Default::default() }, &user.bearer);
                let answer = self.tasks.list_tasks(request).await?.into_inner();
                if answer.tasks.len() != LIST_TASKS {
                    return Err(wrong("ListTasks did not return the user's 100 tasks"));
                }
            }
            Kind::CreateTask => {
                self.create_task(self.own_user()).await?;
            }
            Kind::UpdateTask => {
                let id = self.fixture.users[self.own_user()].tasks[0].clone();
                self.update_task(id, self.own_user()).await?;
            }
            Kind::Mixed => self.mixed().await?,
        }
        Ok(())
    }

    async fn get_task(&mut self, id: String, user: usize) -> Result<(), Failure> {
        let request = authed(task_pb::GetTaskRequest { id: id.clone() }, &self.fixture.users[user].bearer);
        let answer = self.tasks.get_task(request).await?.into_inner();
        if answer.task.map(|t| t.id) != Some(id) {
            return Err(wrong("GetTask returned another task"));
        }
        Ok(())
    }

    async fn create_task(&mut self, user: usize) -> Result<String, Failure> {
        let title = format!("Benchmark task {}-{}", self.index, self.count);
        let request = authed(new_task(title), &self.fixture.users[user].bearer);
        let answer = self.tasks.create_task(request).await?.into_inner();
        answer.task.map(|t| t.id).ok_or_else(|| wrong("CreateTask without a task"))
    }

    async fn update_task(&mut self, id: String, user: usize) -> Result<(), Failure> {
        let request = task_pb::UpdateTaskRequest {
            id,
            title: Some(format!("Updated task {}-{}", self.index, self.count)),
            completed: Some(self.count.is_multiple_of(2)),
            ..Default::default()
        };
        let answer = self.tasks.update_task(authed(request, &self.fixture.users[user].bearer)).await?.into_inner();
        if answer.task.is_none() {
            return Err(wrong("UpdateTask without a task"));
        }
        Ok(())
    }

    /// 70% reads (50% GetTask, 20% ListTasks of 20), 20% writes (10% CreateTask, 10%
    /// UpdateTask), 10% DeleteTask, over the users this worker owns.
    async fn mixed(&mut self) -> Result<(), Failure> {
        if self.owned.is_empty() {
            return Err(wrong("mixed worker owns no user"));
        }
        let slot = self.random(self.owned.len());
        let user = self.owned[slot].user;
        let pick_task = |this: &mut Self| {
            let owned = &this.owned[slot];
            let n = owned.deletable.len() + 1;
            let i = (this.rng >> 7) as usize % n;
            if i == 0 { this.fixture.users[user].tasks[0].clone() } else { owned.deletable[i - 1].clone() }
        };
        match self.random(100) {
            0..50 => {
                let id = pick_task(self);
                self.get_task(id, user).await
            }
            50..70 => {
                let request = authed(
                    task_pb::ListTasksRequest { page_size: 20, ..Default::default() },
                    &self.fixture.users[user].bearer,
                );
                self.tasks.list_tasks(request).await?;
                Ok(())
            }
            70..80 => {
                let id = self.create_task(user).await?;
                self.owned[slot].deletable.push(id);
                Ok(())
            }
            80..90 => {
                let id = pick_task(self);
                self.update_task(id, user).await
            }
            _ => {
                if self.owned[slot].deletable.is_empty() {
                    let id = self.create_task(user).await?;
                    self.owned[slot].deletable.push(id);
                    return Ok(());
                }
                let i = self.random(self.owned[slot].deletable.len());
                let id = self.owned[slot].deletable.swap_remove(i);
                let request =
                    authed(task_pb::DeleteTaskRequest { id, etag: String::new() }, &self.fixture.users[user].bearer);
                self.tasks.delete_task(request).await?;
                Ok(())
            }
        }
    }

    /// Hands the owned users' tasks back for the next run.
    fn finish(self) {
        if self.owned.is_empty() || self.echo {
            return;
        }
        let mut pool = self.fixture.mixed_pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for owned in self.owned {
            pool[owned.user] = owned.deletable;
        }
    }
}

struct WorkerOut {
    ok: u64,
    latencies: Vec<u64>,
    errors: BTreeMap<String, (u64, String)>,
}

async fn drive(mut worker: Worker, phase: Arc<AtomicU8>) -> WorkerOut {
    let mut out = WorkerOut { ok: 0, latencies: Vec::with_capacity(1 << 14), errors: BTreeMap::new() };
    while phase.load(Ordering::Acquire) != STOP {
        let start = Instant::now();
        let result = tokio::time::timeout(CALL_TIMEOUT, worker.call()).await;
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // Counted when answered inside the window, whenever sent: in a closed loop at steady
        // state that is the unbiased throughput (dropping calls that straddle the edges would
        // undercount slow RPCs such as Login at 64 in flight).
        let in_window = phase.load(Ordering::Acquire) == MEASURE;
        let failure = match result {
            Ok(Ok(())) => {
                if in_window {
                    out.ok += 1;
                    out.latencies.push(nanos);
                }
                continue;
            }
            Ok(Err(failure)) => failure,
            Err(_) => Failure { label: "client timeout".to_owned(), message: format!("no answer in {CALL_TIMEOUT:?}") },
        };
        let entry = out.errors.entry(failure.label).or_insert((0, failure.message));
        entry.0 += 1;
    }
    worker.finish();
    out
}

/// Hooks the orchestrator runs at the edges of the measured window (CPU counters, RSS peaks).
pub trait WindowProbe {
    fn warmup_started(&mut self);
    fn window_started(&mut self);
    fn window_ended(&mut self);
}

/// Runs all `groups` at once under one warm-up and one window.
pub async fn run(
    groups: &[Group],
    fixture: &Arc<Fixture>,
    timing: Timing,
    probe: &mut dyn WindowProbe,
) -> Result<Vec<Stats>> {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let mut handles = Vec::new();
    for group in groups {
        let connections = group.in_flight.min(MAX_CONNECTIONS);
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections {
            channels.push(connect(group.addr).await?);
        }
        let workers: Vec<_> = (0..group.in_flight)
            .map(|i| {
                let worker = Worker::new(group, i, fixture.clone(), channels[i % connections].clone());
                tokio::spawn(drive(worker, phase.clone()))
            })
            .collect();
        handles.push(workers);
    }
    probe.warmup_started();
    tokio::time::sleep(timing.warmup).await;
    probe.window_started();
    phase.store(MEASURE, Ordering::Release);
    let start = Instant::now();
    tokio::time::sleep(timing.window).await;
    phase.store(STOP, Ordering::Release);
    let elapsed = start.elapsed();
    probe.window_ended();

    let mut results = Vec::new();
    for (group, workers) in groups.iter().zip(handles) {
        let mut stats = Stats {
            kind: group.kind,
            in_flight: group.in_flight,
            ok: 0,
            elapsed,
            latencies: Vec::new(),
            errors: BTreeMap::new(),
        };
        for worker in workers {
            let out = worker.await?;
            stats.ok += out.ok;
            stats.latencies.extend(out.latencies);
            for (label, (n, message)) in out.errors {
                stats.errors.entry(label).or_insert((0, message)).0 += n;
            }
        }
        stats.latencies.sort_unstable();
        results.push(stats);
    }
    Ok(results)
}
