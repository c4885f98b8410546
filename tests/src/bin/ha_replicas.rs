//! Service replicas failing and restarting under load, through the load balancer of
//! `deploy/ha/cluster`:
//!
//! 1. **A replica of each service killed** (SIGKILL, auth1 and task1 together): only calls in
//!    flight on them may fail, and HAProxy takes them out of rotation within its health-check
//!    interval (measured from its statistics page). They are started again afterwards.
//! 2. **A rolling restart of every replica** (SIGTERM, wait for the exit, start, wait until
//!    HAProxy has it back, next): zero failed calls, with clients retrying UNAVAILABLE as gRPC
//!    allows (a call refused before it ran), at most three attempts.
//!
//! `deploy/ha/test` runs it; by hand: `deploy/ha/cluster up && cargo run -p todo-tests --bin ha_replicas`

// A test driver: a failed expectation is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use todo_contract::auth::v1::auth_service_client::AuthServiceClient;
use todo_contract::auth::v1::{GetCurrentUserRequest, LoginRequest, SignUpRequest};
use todo_contract::task::v1::task_service_client::TaskServiceClient;
use todo_contract::task::v1::{CreateTaskRequest, GetTaskRequest};
use todo_tests::ha::{Cluster, channel, request, signal};
use tonic::Code;
use tonic::transport::Channel;

const PASSWORD: &str = "plum-kettle-orbit-42";
/// Workers per service, each making one call at a time.
const WORKERS: usize = 4;
/// HAProxy's check of a replica (`inter 500ms fall 1`, a 2 s check timeout): the longest it
/// may take to stop sending to a dead one.
const CHECK_BOUND: Duration = Duration::from_millis(2500);

#[derive(Clone, Copy)]
enum Retry {
    Never,
    /// Up to three attempts for UNAVAILABLE, 100 ms apart.
    Unavailable,
}

struct Outcome {
    at: Instant,
    attempts: u32,
    result: Result<(), Code>,
}

/// Calls `call` once, or as `retry` allows.
async fn with_retry<F, Fut>(retry: Retry, mut call: F) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = call().await.map_err(|s| s.code());
        let again = matches!(retry, Retry::Unavailable) && result == Err(Code::Unavailable) && attempts < 3;
        if !again {
            return Outcome { at: Instant::now(), attempts, result };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Load through both load balancers until `stop`: half the workers on task-service (a create,
/// then a read), half on auth-service (GetCurrentUser, which reads the user). Each worker is
/// its own account, paced well under `TASK_RATE_PER_USER` even when one replica takes all.
fn load(
    auth: &Channel,
    tasks: &Channel,
    tokens: &[String],
    retry: Retry,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Outcome>>> {
    let mut workers = Vec::new();
    for (w, token) in tokens.iter().enumerate() {
        let (mut client, token, stop) = (TaskServiceClient::new(tasks.clone()), token.clone(), Arc::clone(stop));
        workers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("r{w}-{n}-{}", uuid::Uuid::new_v4().simple());
                let token = token.clone();
                let created = with_retry(retry, || {
                    let (mut client, token, key) = (client.clone(), token.clone(), key.clone());
                    async move {
                        let create = CreateTaskRequest { title: key.clone(), request_id: key, ..Default::default() };
                        client.create_task(request(create, Some(&token))).await.map(|_| ())
                    }
                })
                .await;
                outcomes.push(created);
                let read = with_retry(retry, || {
                    let (mut client, token) = (client.clone(), token.clone());
                    async move {
                        let get = GetTaskRequest { id: uuid::Uuid::new_v4().to_string() };
                        // A task nobody has: NOT_FOUND is the answer that means "served".
                        match client.get_task(request(get, Some(&token))).await {
                            Err(status) if status.code() == Code::NotFound => Ok(()),
                            other => other.map(|_| ()),
                        }
                    }
                })
                .await;
                outcomes.push(read);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = &mut client;
            outcomes
        }));
    }
    for token in tokens {
        let (client, token, stop) = (AuthServiceClient::new(auth.clone()), token.clone(), Arc::clone(stop));
        workers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let token = token.clone();
                let outcome =
                    with_retry(retry, || {
                        let (mut client, token) = (client.clone(), token.clone());
                        async move {
                            client.get_current_user(request(GetCurrentUserRequest {}, Some(&token))).await.map(|_| ())
                        }
                    })
                    .await;
                outcomes.push(outcome);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            outcomes
        }));
    }
    workers
}

async fn collect(workers: Vec<tokio::task::JoinHandle<Vec<Outcome>>>) -> Result<Vec<Outcome>, String> {
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.map_err(|e| e.to_string())?);
    }
    Ok(all)
}

/// Waits until HAProxy reports `server` as `want` (`UP`, `DOWN`); returns when it did.
async fn until_haproxy(cluster: &Cluster, server: &str, want: &str, within: Duration) -> Result<Instant, String> {
    let started = Instant::now();
    loop {
        let status = cluster.haproxy_servers().await.get(server).cloned().unwrap_or_default();
        if status.starts_with(want) {
            return Ok(Instant::now());
        }
        if started.elapsed() > within {
            return Err(format!("HAProxy did not report {server} {want} within {within:?} (last: {status})"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("ha_replicas: FAILED: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let cluster = Cluster::from_script();
    let (auth, tasks) = (channel(&cluster.get("HA_AUTH_URL")).await, channel(&cluster.get("HA_TASK_URL")).await);
    let mut accounts = AuthServiceClient::new(auth.clone());
    let mut tokens = Vec::new();
    for _ in 0..WORKERS {
        let email = format!("replicas-{}@example.com", uuid::Uuid::new_v4().simple());
        accounts
            .sign_up(request(SignUpRequest { email: email.clone(), password: PASSWORD.into() }, None))
            .await
            .map_err(|s| format!("sign-up: {s}"))?;
        let login = LoginRequest { email, password: PASSWORD.into() };
        let session = accounts.login(request(login, None)).await.map_err(|s| format!("login: {s}"))?;
        tokens.push(session.into_inner().access_token);
    }

    // 1. A replica of each service killed under load.
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(&auth, &tasks, &tokens, Retry::Never, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = Instant::now();
    for name in ["auth1", "task1"] {
        signal(&cluster.pid(name)?, "KILL")?;
    }
    let mut out_of_rotation = Vec::new();
    for name in ["auth1", "task1"] {
        let down = until_haproxy(&cluster, name, "DOWN", Duration::from_secs(10)).await?;
        out_of_rotation.push((name, down.duration_since(killed_at)));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = collect(workers).await?;
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    if let Some(odd) = failed.iter().find(|o| o.result != Err(Code::Unavailable)) {
        return Err(format!("a call failed with {:?} after the kill; only UNAVAILABLE is acceptable", odd.result));
    }
    let latest = out_of_rotation.iter().map(|(_, d)| *d).max().unwrap_or_default();
    if let Some(late) = failed.iter().find(|o| o.at.duration_since(killed_at) > latest + CALL_BOUND_AFTER_DOWN) {
        return Err(format!(
            "a call failed {:.2} s after the kill, after HAProxy had taken the replicas out ({:.2} s)",
            late.at.duration_since(killed_at).as_secs_f64(),
            latest.as_secs_f64()
        ));
    }
    if failed.len() > 2 * WORKERS {
        return Err(format!("{} calls failed: more than were in flight ({})", failed.len(), 2 * WORKERS));
    }
    for (name, after) in &out_of_rotation {
        if *after > CHECK_BOUND {
            return Err(format!("HAProxy took {after:?} to take {name} out (bound {CHECK_BOUND:?})"));
        }
    }
    println!(
        "killed auth1 and task1 under load: {} of {} calls failed (UNAVAILABLE); HAProxy took them out after {}",
        failed.len(),
        outcomes.len(),
        out_of_rotation.iter().map(|(n, d)| format!("{n} {:.2} s", d.as_secs_f64())).collect::<Vec<_>>().join(", ")
    );
    for name in ["auth1", "task1"] {
        cluster.script(&["start", name])?;
        until_haproxy(&cluster, name, "UP", Duration::from_secs(20)).await?;
    }

    // 2. A rolling restart of every replica under load: nothing fails.
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(&auth, &tasks, &tokens, Retry::Unavailable, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rolling = Instant::now();
    for name in ["auth1", "auth2", "task1", "task2"] {
        cluster.script(&["stop", name, "TERM"])?;
        cluster.script(&["start", name])?;
        until_haproxy(&cluster, name, "UP", Duration::from_secs(20)).await?;
    }
    let rolled = rolling.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = collect(workers).await?;
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    let retried = outcomes.iter().filter(|o| o.attempts > 1).count();
    if !failed.is_empty() {
        let codes: Vec<String> = failed.iter().map(|o| format!("{:?}", o.result)).collect();
        return Err(format!(
            "{} of {} calls failed during the rolling restart: {codes:?}",
            failed.len(),
            outcomes.len()
        ));
    }
    println!(
        "rolling restart of auth1, auth2, task1, task2 under load in {:.1} s: 0 of {} calls failed ({retried} needed a retry of UNAVAILABLE)",
        rolled.as_secs_f64(),
        outcomes.len()
    );
    Ok(())
}

/// A call that was in flight on a replica when it died ends by the time HAProxy has noticed,
/// or shortly after: the margin for its answer to arrive.
const CALL_BOUND_AFTER_DOWN: Duration = Duration::from_millis(500);
