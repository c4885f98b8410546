//! One worker of the load generator: its next request of the group's kind, the check of the
//! answer, and the closed loop that times each call and counts failures by kind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use todo_contract::auth::v1 as auth_pb;
use todo_contract::auth::v1::auth_service_client::AuthServiceClient;
use todo_contract::task::v1 as task_pb;
use todo_contract::task::v1::task_service_client::TaskServiceClient;
use tonic::transport::Channel;

use crate::Result;
use crate::fixture::{Fixture, LIST_TASKS, SCALE_PAGE_SIZE, authed, new_task};

use super::{CALL_TIMEOUT, Group, Kind, MEASURE, STOP};

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

pub(super) struct Worker {
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
    pub(super) fn new(group: &Group, index: usize, fixture: Arc<Fixture>, channel: Channel) -> Self {
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
            Kind::Refresh => {
                let user = &self.fixture.users[self.own_user()];
                let token = user.refresh.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                let answer = self.auth.refresh(auth_pb::RefreshRequest { refresh_token: token }).await?.into_inner();
                if answer.access_token.is_empty() || answer.refresh_token.is_empty() {
                    return Err(wrong("Refresh without a token pair"));
                }
                // The echo server's token is made up: the real one must survive for real runs.
                if !self.echo {
                    *user.refresh.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = answer.refresh_token;
                }
            }
            Kind::GetTask => {
                let id = self.task_of_own_user();
                self.get_task(id, self.own_user()).await?;
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
                let id = self.task_of_own_user();
                self.update_task(id, self.own_user()).await?;
            }
            Kind::ListFirstPage | Kind::ListPage50 => {
                let user = &self.fixture.users[self.own_user()];
                let deep = if self.kind == Kind::ListPage50 {
                    Some(user.deep_page.as_ref().ok_or_else(|| wrong("no page-50 token for this user"))?)
                } else {
                    None
                };
                let request = task_pb::ListTasksRequest {
                    page_size: SCALE_PAGE_SIZE as i32,
                    page_token: deep.map(|d| d.token.clone()).unwrap_or_default(),
                    ..Default::default()
                };
                let answer = self.tasks.list_tasks(authed(request, &user.bearer)).await?.into_inner();
                if answer.tasks.len() != SCALE_PAGE_SIZE {
                    return Err(wrong("ListTasks did not return a full page"));
                }
                if deep.is_some_and(|d| answer.tasks[0].id != d.first_id) {
                    return Err(wrong("ListTasks page 50 did not start where the token says"));
                }
            }
            Kind::Mixed => self.mixed().await?,
        }
        Ok(())
    }

    /// The task GetTask and UpdateTask touch: the user's first, or any (`Fixture::any_task`).
    fn task_of_own_user(&mut self) -> String {
        let count = self.fixture.users[self.own_user()].tasks.len();
        let i = if self.fixture.any_task { self.random(count) } else { 0 };
        self.fixture.users[self.own_user()].tasks[i].clone()
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

pub(super) struct WorkerOut {
    pub(super) ok: u64,
    pub(super) latencies: Vec<u64>,
    pub(super) errors: BTreeMap<String, (u64, String)>,
}

pub(super) async fn drive(mut worker: Worker, phase: Arc<AtomicU8>) -> WorkerOut {
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
