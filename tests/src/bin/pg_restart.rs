//! A real PostgreSQL restart under load (CI runs it after the test suite, alone, because it
//! restarts the server every test uses): both services keep running, answer UNAVAILABLE and
//! report NOT_SERVING while the database is down, recover by themselves, and lose no
//! acknowledged write.
//!
//! `TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run -p todo-tests --bin pg_restart`
//! The restart command defaults to `pg_ctlcluster --skip-systemctl-redirect <version> main restart`
//! (the version read from /etc/postgresql); set `PG_RESTART_COMMAND` to override it.

// A test driver: a failed expectation is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use todo_contract::auth::v1::{GetCurrentUserRequest, LoginRequest, SignUpRequest};
use todo_contract::task::v1::CreateTaskRequest;
use todo_tests::*;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const PASSWORD: &str = "plum-kettle-orbit-42";

fn restart_command() -> String {
    if let Ok(command) = std::env::var("PG_RESTART_COMMAND") {
        return command;
    }
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut entries| entries.next())
        .and_then(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .expect("no PostgreSQL cluster under /etc/postgresql; set PG_RESTART_COMMAND");
    format!("pg_ctlcluster --skip-systemctl-redirect {version} main restart")
}

/// Polls health until it is `want`, returning how long that took.
async fn until(running: &Running, want: ServingStatus, within: Duration) -> Result<Duration, String> {
    let mut health = HealthClient::new(running.channel().await);
    let started = Instant::now();
    while started.elapsed() < within {
        if let Ok(reply) = health.check(HealthCheckRequest { service: String::new() }).await
            && reply.into_inner().status == want as i32
        {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("health of {} was not {want:?} within {within:?}", running.url()))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("pg_restart: FAILED: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let auth = start_auth(Backend::Postgres).await;
    let tasks = start_tasks(Backend::Postgres).await;
    let mut accounts = auth_client(&auth).await;
    let email = "restart@example.com".to_owned();
    accounts
        .sign_up(SignUpRequest { email: email.clone(), password: PASSWORD.into() })
        .await
        .map_err(|s| s.to_string())?;
    let login = || LoginRequest { email: email.clone(), password: PASSWORD.into() };
    let token = accounts.login(login()).await.map_err(|s| s.to_string())?.into_inner().access_token;

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for worker in 0..4 {
        let (mut client, token, stop) = (task_client(&tasks).await, token.clone(), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{worker}-{n}");
                let request = CreateTaskRequest { title: key.clone(), request_id: key.clone(), ..Default::default() };
                let result = client.create_task(bearer(&token, request)).await;
                outcomes.push((key, result.map(|r| r.into_inner().task.unwrap().id).map_err(|s| s.code())));
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            outcomes
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let command = restart_command();
    println!("restarting PostgreSQL: {command}");
    let restarted_at = Instant::now();
    let status = std::process::Command::new("sh").args(["-c", &command]).status().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("`{command}` failed: {status}"));
    }
    println!("PostgreSQL restarted in {:?}", restarted_at.elapsed());
    let auth_back = until(&auth, ServingStatus::Serving, Duration::from_secs(30)).await?;
    let tasks_back = until(&tasks, ServingStatus::Serving, Duration::from_secs(30)).await?;
    println!(
        "SERVING again: auth-service after {auth_back:?}, task-service after {tasks_back:?} (from the restart's end)"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);

    let mut outcomes = Vec::new();
    for writer in writers {
        let mine = writer.await.map_err(|e| e.to_string())?;
        if !mine.last().is_some_and(|(_, r)| r.is_ok()) {
            return Err("a writer's last call after recovery failed".into());
        }
        outcomes.extend(mine);
    }
    let failed: Vec<_> = outcomes.iter().filter(|(_, r)| r.is_err()).collect();
    if let Some((key, code)) = failed.iter().find(|(_, r)| r.as_ref().err() != Some(&Code::Unavailable)) {
        return Err(format!("{key}: {code:?} during the restart; only UNAVAILABLE is acceptable"));
    }
    let acknowledged: Vec<_> = outcomes.iter().filter_map(|(k, r)| r.as_ref().ok().map(|id| (k, id))).collect();
    for (key, id) in &acknowledged {
        let stored =
            tasks.db.scalar("SELECT count(*) FROM tasks WHERE id = $1", Some(uuid::Uuid::parse_str(id).unwrap())).await;
        if stored != 1 {
            return Err(format!("acknowledged task {key} ({id}) is missing after the restart"));
        }
    }
    // Retried with their request_id, the failed ones settle to one task each.
    let mut client = task_client(&tasks).await;
    for (key, _) in &failed {
        let request = CreateTaskRequest { title: key.clone(), request_id: key.clone(), ..Default::default() };
        client.create_task(bearer(&token, request)).await.map_err(|s| format!("retrying {key}: {s}"))?;
    }
    let total = tasks.db.scalar("SELECT count(*) FROM tasks", None).await;
    if total as usize != outcomes.len() {
        return Err(format!("{total} tasks for {} distinct requests", outcomes.len()));
    }
    // auth-service recovered too: a login and a token check work.
    accounts.login(login()).await.map_err(|s| format!("login after the restart: {s}"))?;
    accounts
        .get_current_user(bearer(&token, GetCurrentUserRequest {}))
        .await
        .map_err(|s| format!("GetCurrentUser after the restart: {s}"))?;

    println!(
        "ok: {} creates, {} acknowledged and all stored, {} refused with UNAVAILABLE during the restart and settled by retry",
        outcomes.len(),
        acknowledged.len(),
        failed.len()
    );
    Ok(())
}
