//! PostgreSQL primary failover under write load, through the highly available topology of
//! `deploy/ha/cluster` (Patroni + etcd, two PostgreSQL instances with synchronous replication,
//! HAProxy in front of them and of two replicas of each service).
//!
//! Writers create tasks and sign up users through the load balancer; the primary's node is
//! killed (its Patroni and its PostgreSQL, SIGKILL). Patroni promotes the standby. The run
//! passes when the calls that failed meanwhile all failed with UNAVAILABLE, every writer
//! succeeds again without any service being restarted, and every acknowledged write is in
//! the new primary. It reports the window of failed calls and the time to recover.
//!
//! Across the replicas, before and after the failover: a logout reaches both task-service
//! replicas within 1 s; and a watcher on task1 (WatchTasks, resuming with its token whenever
//! its stream ends) receives every acknowledged task created through task2, before, during
//! and after the failover.
//!
//! `deploy/ha/test` runs it against a cluster it brings up and tears down; by hand:
//! `deploy/ha/cluster up && cargo run -p todo-tests --bin ha_failover; deploy/ha/cluster down`

// A test driver: a failed expectation is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::ConnectOptions as _;
use todo_contract::auth::v1::auth_service_client::AuthServiceClient;
use todo_contract::auth::v1::{LoginRequest, LogoutRequest, SignUpRequest};
use todo_contract::task::v1::task_service_client::TaskServiceClient;
use todo_contract::task::v1::watch_tasks_response::EventType;
use todo_contract::task::v1::{CreateTaskRequest, ListTasksRequest, WatchTasksRequest};
use todo_tests::ha::{Cluster, channel, host_port, http_get, request as with_deadline, signal};
use tonic::Code;
use tonic::transport::Channel;

const PASSWORD: &str = "plum-kettle-orbit-42";
const TASK_WRITERS: usize = 4;

/// Signs up and logs in a fresh account through the load balancer; returns its access token.
async fn account(auth: &mut AuthServiceClient<Channel>, name: &str) -> Result<String, String> {
    let email = format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple());
    auth.sign_up(with_deadline(SignUpRequest { email: email.clone(), password: PASSWORD.into() }, None))
        .await
        .map_err(|s| format!("sign-up of {name}: {s}"))?;
    let login = auth
        .login(with_deadline(LoginRequest { email, password: PASSWORD.into() }, None))
        .await
        .map_err(|s| format!("login of {name}: {s}"))?;
    Ok(login.into_inner().access_token)
}

/// How long after a logout through the load balancer both task-service replicas refuse its
/// token (each asked directly).
async fn revocation_delay(auth: &mut AuthServiceClient<Channel>, replicas: &[Channel]) -> Result<Duration, String> {
    let token = account(auth, "revoked").await?;
    for replica in replicas {
        TaskServiceClient::new(replica.clone())
            .list_tasks(with_deadline(ListTasksRequest::default(), Some(&token)))
            .await
            .map_err(|s| format!("ListTasks before the logout: {s}"))?;
    }
    auth.logout(with_deadline(LogoutRequest::default(), Some(&token))).await.map_err(|s| format!("logout: {s}"))?;
    let logged_out = Instant::now();
    for replica in replicas {
        let mut client = TaskServiceClient::new(replica.clone());
        loop {
            match client.list_tasks(with_deadline(ListTasksRequest::default(), Some(&token))).await {
                Err(status) if status.code() == Code::Unauthenticated => break,
                _ if logged_out.elapsed() > Duration::from_secs(10) => {
                    return Err("a task-service replica still honoured a logged-out token after 10 s".into());
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    Ok(logged_out.elapsed())
}

/// Follows `token`'s tasks on `replica` until `stop`, resuming from its last token whenever
/// the stream ends (the database going away ends it with UNAVAILABLE); returns every task id
/// it was sent as UPSERTED.
async fn watch(replica: Channel, token: String, stop: Arc<AtomicBool>) -> (Vec<String>, usize) {
    let (mut seen, mut resumes, mut resume_token) = (Vec::new(), 0, String::new());
    let mut client = TaskServiceClient::new(replica);
    while !stop.load(Ordering::Relaxed) {
        let mut request = tonic::Request::new(WatchTasksRequest { resume_token: resume_token.clone() });
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        if let Ok(stream) = client.watch_tasks(request).await {
            let mut stream = stream.into_inner();
            loop {
                let next = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
                match next {
                    Ok(Ok(Some(event))) => {
                        if event.r#type == EventType::Upserted as i32
                            && let Some(task) = event.task
                        {
                            seen.push(task.id);
                        }
                        if !event.resume_token.is_empty() {
                            resume_token = event.resume_token;
                        }
                    }
                    Ok(_) => break,
                    Err(_) if stop.load(Ordering::Relaxed) => return (seen, resumes),
                    Err(_) => {}
                }
            }
        }
        resumes += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (seen, resumes)
}

/// Creates tasks `{prefix}-0`, `{prefix}-1`, ... (each its own request id) with `token`,
/// `pause` apart, until `stop`; returns each call's outcome, the task id when acknowledged.
async fn create_tasks(
    mut tasks: TaskServiceClient<Channel>,
    token: String,
    prefix: String,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("{prefix}-{n}");
        let request = CreateTaskRequest { title: key.clone(), request_id: key.clone(), ..Default::default() };
        let result = tasks.create_task(with_deadline(request, Some(&token))).await;
        let result = result.map(|r| r.into_inner().task.map(|t| t.id).unwrap_or_default()).map_err(|s| s.code());
        outcomes.push(Outcome { at: Instant::now(), key, result });
        tokio::time::sleep(pause).await;
    }
    outcomes
}

/// One call's outcome: when it ended, what it was, and its result.
struct Outcome {
    at: Instant,
    key: String,
    result: Result<String, Code>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("ha_failover: FAILED: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let cluster = Cluster::from_script();
    let get = |key: &str| -> Result<String, String> { Ok(cluster.get(key)) };
    let (auth_url, task_url, ha_dir) = (get("HA_AUTH_URL")?, get("HA_TASK_URL")?, get("HA_DIR")?);
    let patroni = [get("HA_PATRONI1")?, get("HA_PATRONI2")?];

    // Who is primary now.
    let mut primary = None;
    for (i, rest) in patroni.iter().enumerate() {
        if http_get(host_port(rest), "/primary").await.map(|(status, _)| status) == Some(200) {
            primary = Some(i);
        }
    }
    let primary = primary.ok_or("no Patroni member reports itself primary: is the cluster up?")?;
    let standby = 1 - primary;
    let node = format!("pg{}", primary + 1);
    println!("primary: {node}; standby: pg{}", standby + 1);

    let mut accounts = AuthServiceClient::new(channel(&auth_url).await);
    let url = |key: &str| format!("http://{}", cluster.get(key));
    let replicas = [channel(&url("HA_TASK1")).await, channel(&url("HA_TASK2")).await];
    let revoked_before = revocation_delay(&mut accounts, &replicas).await?;

    // A watcher on task1 and a writer on task2, for one account.
    let watched = account(&mut accounts, "watched").await?;
    let watching = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch(replicas[0].clone(), watched.clone(), Arc::clone(&watching)));

    // Writers, each with an account of its own, through the load balancer.
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..TASK_WRITERS {
        let email = format!("writer-{w}-{run_id}@example.com");
        accounts
            .sign_up(with_deadline(SignUpRequest { email: email.clone(), password: PASSWORD.into() }, None))
            .await
            .map_err(|s| format!("sign-up before the failover: {s}"))?;
        let token = accounts
            .login(with_deadline(LoginRequest { email, password: PASSWORD.into() }, None))
            .await
            .map_err(|s| format!("login before the failover: {s}"))?
            .into_inner()
            .access_token;
        let tasks = TaskServiceClient::new(channel(&task_url).await);
        writers.push(tokio::spawn(create_tasks(
            tasks,
            token,
            format!("w{w}"),
            Duration::from_millis(10),
            Arc::clone(&stop),
        )));
    }
    let across = tokio::spawn(create_tasks(
        TaskServiceClient::new(replicas[1].clone()),
        watched.clone(),
        "across".to_owned(),
        Duration::from_millis(50),
        Arc::clone(&stop),
    ));
    let sign_ups = {
        let (mut accounts, stop, run_id) = (accounts.clone(), Arc::clone(&stop), run_id.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let email = format!("signup-{n}-{run_id}@example.com");
                let request = SignUpRequest { email: email.clone(), password: PASSWORD.into() };
                let result = accounts.sign_up(with_deadline(request, None)).await;
                let result = result.map(|_| email.clone()).map_err(|s| s.code());
                outcomes.push(Outcome { at: Instant::now(), key: email, result });
            }
            outcomes
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The primary's node dies: its Patroni first (so nothing restarts PostgreSQL), then
    // PostgreSQL's postmaster.
    let patroni_pid = cluster.pid(&node)?;
    let postmaster =
        std::fs::read_to_string(format!("{ha_dir}/{node}/data/postmaster.pid")).map_err(|e| e.to_string())?;
    let postmaster_pid = postmaster.lines().next().unwrap_or_default().trim().to_owned();
    let killed_at = Instant::now();
    for pid in [patroni_pid.as_str(), postmaster_pid.as_str()] {
        signal(pid, "KILL")?;
    }
    println!("killed {node}: Patroni (pid {patroni_pid}) and PostgreSQL (pid {postmaster_pid}), SIGKILL");

    let promoted = loop {
        if http_get(host_port(&patroni[standby]), "/primary").await.map(|(status, _)| status) == Some(200) {
            break killed_at.elapsed();
        }
        if killed_at.elapsed() > Duration::from_secs(60) {
            return Err(format!("pg{} was not promoted within 60 s", standby + 1));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("pg{} promoted {:.1} s after the kill", standby + 1, promoted.as_secs_f64());
    // Then load until every writer has been served again for a while.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);

    let mut task_outcomes = Vec::new();
    for writer in writers {
        let mine = writer.await.map_err(|e| e.to_string())?;
        if mine.last().is_none_or(|o| o.result.is_err()) {
            return Err("a task writer's last call, after the failover, failed".into());
        }
        task_outcomes.extend(mine);
    }
    let signup_outcomes = sign_ups.await.map_err(|e| e.to_string())?;
    let across_outcomes = across.await.map_err(|e| e.to_string())?;
    // The watcher gets a moment for the last changes, then must have every acknowledged one.
    let acked_across: Vec<String> = across_outcomes.iter().filter_map(|o| o.result.as_ref().ok().cloned()).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    watching.store(true, Ordering::Relaxed);
    let (seen, resumes) = watcher.await.map_err(|e| e.to_string())?;
    let missing: Vec<&String> = acked_across.iter().filter(|id| !seen.contains(id)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "the watcher on task1 missed {} of {} tasks acknowledged through task2 (resumed {resumes} times)",
            missing.len(),
            acked_across.len()
        ));
    }
    let revoked_after = revocation_delay(&mut accounts, &replicas).await?;
    for (when, delay) in [("before", revoked_before), ("after", revoked_after)] {
        if delay > Duration::from_secs(1) {
            return Err(format!("a logout took {delay:?} to reach both task-service replicas {when} the failover"));
        }
    }
    if signup_outcomes.last().is_none_or(|o| o.result.is_err()) {
        return Err("the last sign-up, after the failover, failed".into());
    }

    let all: Vec<&Outcome> = task_outcomes.iter().chain(&signup_outcomes).chain(&across_outcomes).collect();
    let failed: Vec<&&Outcome> = all.iter().filter(|o| o.result.is_err()).collect();
    let mut codes: HashMap<String, usize> = HashMap::new();
    for outcome in &failed {
        *codes.entry(format!("{:?}", outcome.result.as_ref().unwrap_err())).or_default() += 1;
    }
    if let Some(odd) = failed.iter().find(|o| o.result.as_ref().err() != Some(&Code::Unavailable)) {
        return Err(format!("{} failed with {:?}; only UNAVAILABLE is acceptable ({codes:?})", odd.key, odd.result));
    }
    let window = match (failed.iter().map(|o| o.at).min(), failed.iter().map(|o| o.at).max()) {
        (Some(first), Some(last)) => Some((first.duration_since(killed_at), last.duration_since(killed_at))),
        _ => None,
    };
    let last_failure = failed.iter().map(|o| o.at).max().unwrap_or(killed_at);
    let recovered = all
        .iter()
        .filter(|o| o.result.is_ok() && o.at > last_failure)
        .map(|o| o.at)
        .min()
        .map(|at| at.duration_since(killed_at));

    // Every acknowledged write is on the new primary (straight to it, not through HAProxy).
    let pg_url = get(if standby == 0 { "HA_PG1_URL" } else { "HA_PG2_URL" })?;
    let connect = |db: &str| {
        let url = format!("{pg_url}/{db}?sslmode=disable");
        async move { url.parse::<sqlx::postgres::PgConnectOptions>().unwrap().connect().await }
    };
    let mut tasks_db = connect("todo_tasks").await.map_err(|e| e.to_string())?;
    let mut auth_db = connect("todo_auth").await.map_err(|e| e.to_string())?;
    let acked_tasks: Vec<uuid::Uuid> = task_outcomes
        .iter()
        .chain(&across_outcomes)
        .filter_map(|o| o.result.as_ref().ok())
        .map(|id| id.parse().unwrap())
        .collect();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE id = ANY($1)")
        .bind(&acked_tasks)
        .fetch_one(&mut tasks_db)
        .await
        .map_err(|e| e.to_string())?;
    let acked_users: Vec<String> = signup_outcomes.iter().filter_map(|o| o.result.as_ref().ok().cloned()).collect();
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = ANY($1)")
        .bind(&acked_users)
        .fetch_one(&mut auth_db)
        .await
        .map_err(|e| e.to_string())?;
    if stored as usize != acked_tasks.len() || users as usize != acked_users.len() {
        return Err(format!(
            "acknowledged writes lost: {stored} of {} tasks and {users} of {} users on the new primary",
            acked_tasks.len(),
            acked_users.len()
        ));
    }

    println!("| | |");
    println!("|---|---|");
    println!("| promotion after the kill | {:.1} s |", promoted.as_secs_f64());
    match window {
        Some((first, last)) => println!(
            "| failed calls | {} of {} ({codes:?}), from {:.1} s to {:.1} s after the kill |",
            failed.len(),
            all.len(),
            first.as_secs_f64(),
            last.as_secs_f64()
        ),
        None => println!("| failed calls | none of {} |", all.len()),
    }
    match recovered {
        Some(at) => {
            println!("| recovered (first success after the last failure) | {:.1} s after the kill |", at.as_secs_f64())
        }
        None => println!("| recovered | no success after the last failure |"),
    }
    println!("| acknowledged writes checked on the new primary | {} tasks, {} sign-ups: all present |", stored, users);
    println!(
        "| watcher on task1, writes through task2 | all {} acknowledged tasks received (the stream resumed {resumes} times) |",
        acked_across.len()
    );
    println!(
        "| logout reaching both task-service replicas | {:.0} ms before the failover, {:.0} ms after |",
        revoked_before.as_secs_f64() * 1000.0,
        revoked_after.as_secs_f64() * 1000.0
    );
    Ok(())
}
