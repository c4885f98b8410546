//! Database faults under load, through a fault-injecting proxy between task-service and
//! PostgreSQL: connections cut (a restart), a slow network, a half-open one. Clients get
//! UNAVAILABLE (or DEADLINE_EXCEEDED at the deadline), health says NOT_SERVING, the service
//! recovers by itself, and no acknowledged write is lost or half-done.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use todo_contract::task::v1::CreateTaskRequest;
use todo_tests::proxy::{FaultyProxy, Mode};
use todo_tests::*;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

struct Setup {
    tasks: Running,
    proxy: FaultyProxy,
    token: String,
}

async fn through_proxy(request_timeout: Duration) -> Setup {
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = FaultyProxy::start(db.postgres_addr()).await;
    let mut config = task_config(&db);
    config.database = db.url_via(proxy.addr);
    config.limits.request_timeout = request_timeout;
    let tasks = start_tasks_with(config, db).await;
    let token = keys().mint(uuid::Uuid::new_v4(), "faults@example.com", Duration::from_secs(600)).unwrap().token;
    Setup { tasks, proxy, token }
}

fn create(title: &str, request_id: &str) -> CreateTaskRequest {
    CreateTaskRequest { title: title.into(), request_id: request_id.into(), ..Default::default() }
}

/// Records every status health reports, in order.
fn watch_health(running: &Running) -> tokio::task::JoinHandle<Vec<ServingStatus>> {
    let url = running.url();
    tokio::spawn(async move {
        let channel = tonic::transport::Channel::from_shared(url).unwrap().connect().await.unwrap();
        let mut stream =
            HealthClient::new(channel).watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
        let mut seen = Vec::new();
        while let Ok(Some(update)) = stream.message().await {
            seen.push(ServingStatus::try_from(update.status).unwrap());
        }
        seen
    })
}

async fn until_serving_is(running: &Running, want: ServingStatus, within: Duration) -> Duration {
    let mut health = HealthClient::new(running.channel().await);
    let started = Instant::now();
    while started.elapsed() < within {
        let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status;
        if status == want as i32 {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("health was not {want:?} within {within:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_connections_cut_under_load_and_the_service_recovers_by_itself_on_postgres() {
    require(Backend::Postgres);
    let Setup { tasks, proxy, token } = through_proxy(Duration::from_secs(5)).await;
    let health = watch_health(&tasks);
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for worker in 0..4 {
        let (mut client, token, stop) = (task_client(&tasks).await, token.clone(), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            // request_id -> what the client was told.
            let mut outcomes: Vec<(String, Result<String, Code>)> = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{worker}-{n}");
                let result = client.create_task(bearer(&token, create(&key, &key))).await;
                outcomes.push((key, result.map(|r| r.into_inner().task.unwrap().id).map_err(|s| s.code())));
                n += 1;
            }
            outcomes
        }));
    }

    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.cut();
    until_serving_is(&tasks, ServingStatus::NotServing, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();
    let recovered_in = until_serving_is(&tasks, ServingStatus::Serving, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);

    let mut outcomes = Vec::new();
    for writer in writers {
        let mine = writer.await.unwrap();
        // Each writer's last calls, after recovery, succeeded: no restart was needed.
        assert!(mine.last().is_some_and(|(_, r)| r.is_ok()), "writes resumed (recovered in {recovered_in:?})");
        outcomes.extend(mine);
    }
    let acknowledged: HashMap<&str, &str> =
        outcomes.iter().filter_map(|(key, r)| r.as_ref().ok().map(|id| (key.as_str(), id.as_str()))).collect();
    let failed: Vec<&(String, Result<String, Code>)> = outcomes.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(!failed.is_empty(), "the outage was felt");
    for (key, result) in &failed {
        assert_eq!(result.as_ref().unwrap_err(), &Code::Unavailable, "{key}: only UNAVAILABLE during an outage");
    }

    // Every acknowledged task is stored, and every key has its task and vice versa.
    let db = &tasks.db;
    for (key, id) in &acknowledged {
        let stored =
            db.scalar("SELECT count(*) FROM tasks WHERE id = $1", Some(uuid::Uuid::parse_str(id).unwrap())).await;
        assert_eq!(stored, 1, "acknowledged task {key} ({id}) is missing");
    }
    let orphans = "SELECT (SELECT count(*) FROM task_create_requests r WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = r.task_id)) \
                   + (SELECT count(*) FROM tasks t WHERE NOT EXISTS (SELECT 1 FROM task_create_requests r WHERE r.task_id = t.id))";
    assert_eq!(db.scalar(orphans, None).await, 0, "no half-done create");

    // Retrying every failed request with its request_id settles each to exactly one task:
    // those whose commit happened but whose answer was lost come back as they were.
    let mut client = task_client(&tasks).await;
    for (key, _) in &failed {
        client.create_task(bearer(&token, create(key, key))).await.unwrap();
    }
    let total = db.scalar("SELECT count(*) FROM tasks", None).await;
    assert_eq!(total as usize, outcomes.len(), "one task per request, no duplicates");
    assert_eq!(db.scalar(orphans, None).await, 0);

    let seen = {
        drop(tasks);
        health.await.unwrap()
    };
    let first_down = seen.iter().position(|s| *s == ServingStatus::NotServing).expect("health said NOT_SERVING");
    assert!(seen[first_down..].contains(&ServingStatus::Serving), "and SERVING again afterwards: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_half_open_database_gives_a_prompt_answer_and_recovers_on_postgres() {
    require(Backend::Postgres);
    let Setup { tasks, proxy, token } = through_proxy(Duration::from_secs(2)).await;
    let mut client = task_client(&tasks).await;

    for (label, mode) in [("slow", Mode::Delay(Duration::from_secs(3))), ("half-open", Mode::Blackhole)] {
        proxy.set(mode);
        let started = Instant::now();
        let status = client.create_task(bearer(&token, create(label, label))).await.unwrap_err();
        assert!(matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded), "{label}: {status:?}");
        assert!(started.elapsed() < Duration::from_secs(4), "{label}: answered in {:?}", started.elapsed());
        until_serving_is(&tasks, ServingStatus::NotServing, Duration::from_secs(6)).await;
        let refused = client.create_task(bearer(&token, create(label, label))).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{label}: refused at the gate while not serving");

        proxy.restore();
        until_serving_is(&tasks, ServingStatus::Serving, Duration::from_secs(10)).await;
        let task = client.create_task(bearer(&token, create(label, label))).await.unwrap().into_inner().task.unwrap();
        assert_eq!(task.title, label);
    }
    // Whatever the first, timed-out attempts did, each request_id holds one task.
    assert_eq!(tasks.db.scalar("SELECT count(*) FROM tasks", None).await, 2);
}
