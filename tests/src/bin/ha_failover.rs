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
use todo_contract::auth::v1::{LoginRequest, SignUpRequest};
use todo_contract::task::v1::CreateTaskRequest;
use todo_contract::task::v1::task_service_client::TaskServiceClient;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;
use tonic::transport::Channel;

const PASSWORD: &str = "plum-kettle-orbit-42";
/// Each call's deadline: longer than the services' wait for a pooled connection (2 s), so a
/// database that is away is answered by the service (UNAVAILABLE), not by the client's clock.
const CALL_DEADLINE: Duration = Duration::from_secs(5);
const TASK_WRITERS: usize = 4;

/// `deploy/ha/cluster env`, as a map.
fn cluster_env() -> HashMap<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/ha/cluster");
    let output = std::process::Command::new(script).arg("env").output().expect("deploy/ha/cluster env");
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .lines()
        .filter_map(|line| line.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// The HTTP status of `GET path` on `addr`, or `None` if nothing answers.
async fn http_status(addr: &str, path: &str) -> Option<u16> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        String::from_utf8_lossy(&raw).split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange).await.ok().flatten()
}

fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}

async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_owned()).expect("url").connect().await.expect("connect to the load balancer")
}

fn with_deadline<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_DEADLINE);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
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
    let env = cluster_env();
    let get = |key: &str| env.get(key).cloned().ok_or_else(|| format!("deploy/ha/cluster env has no {key}"));
    let (auth_url, task_url, ha_dir) = (get("HA_AUTH_URL")?, get("HA_TASK_URL")?, get("HA_DIR")?);
    let patroni = [get("HA_PATRONI1")?, get("HA_PATRONI2")?];

    // Who is primary now.
    let mut primary = None;
    for (i, rest) in patroni.iter().enumerate() {
        if http_status(host_port(rest), "/primary").await == Some(200) {
            primary = Some(i);
        }
    }
    let primary = primary.ok_or("no Patroni member reports itself primary: is the cluster up?")?;
    let standby = 1 - primary;
    let node = format!("pg{}", primary + 1);
    println!("primary: {node}; standby: pg{}", standby + 1);

    // Writers, each with an account of its own, through the load balancer.
    let mut accounts = AuthServiceClient::new(channel(&auth_url).await);
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
        let (mut tasks, stop) = (TaskServiceClient::new(channel(&task_url).await), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("w{w}-{n}");
                let request = CreateTaskRequest { title: key.clone(), request_id: key.clone(), ..Default::default() };
                let result = tasks.create_task(with_deadline(request, Some(&token))).await;
                let result =
                    result.map(|r| r.into_inner().task.map(|t| t.id).unwrap_or_default()).map_err(|s| s.code());
                outcomes.push(Outcome { at: Instant::now(), key, result });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            outcomes
        }));
    }
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
    let patroni_pid = std::fs::read_to_string(format!("{ha_dir}/run/{node}.pid")).map_err(|e| e.to_string())?;
    let postmaster =
        std::fs::read_to_string(format!("{ha_dir}/{node}/data/postmaster.pid")).map_err(|e| e.to_string())?;
    let postmaster_pid = postmaster.lines().next().unwrap_or_default().trim().to_owned();
    let killed_at = Instant::now();
    for pid in [patroni_pid.trim(), postmaster_pid.as_str()] {
        let status = std::process::Command::new("kill").args(["-KILL", pid]).status().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("kill -KILL {pid} failed"));
        }
    }
    println!("killed {node}: Patroni (pid {}) and PostgreSQL (pid {postmaster_pid}), SIGKILL", patroni_pid.trim());

    let promoted = loop {
        if http_status(host_port(&patroni[standby]), "/primary").await == Some(200) {
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
    if signup_outcomes.last().is_none_or(|o| o.result.is_err()) {
        return Err("the last sign-up, after the failover, failed".into());
    }

    let all: Vec<&Outcome> = task_outcomes.iter().chain(&signup_outcomes).collect();
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
    let acked_tasks: Vec<uuid::Uuid> =
        task_outcomes.iter().filter_map(|o| o.result.as_ref().ok()).map(|id| id.parse().unwrap()).collect();
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
    Ok(())
}
