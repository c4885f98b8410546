//! The real `todo-dev` binary: both services come up on SQLite in a fresh directory, the
//! generated secret is private and survives a restart (so do tokens and data), and Ctrl-C
//! stops both with exit status 0.

// Test helpers may unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use todo_contract::auth::v1::auth_service_client::AuthServiceClient;
use todo_contract::auth::v1::{GetCurrentUserRequest, LoginRequest, SignUpRequest};
use todo_contract::task::v1::task_service_client::TaskServiceClient;
use todo_contract::task::v1::{CreateTaskRequest, ListTasksRequest};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const BIN: &str = env!("CARGO_BIN_EXE_todo-dev");

struct Pair {
    child: Child,
    auth: String,
    tasks: String,
}

/// Starts the launcher in `dir` on free ports and reads the two addresses it prints.
fn start(dir: &Path) -> Pair {
    let mut child = Command::new(BIN)
        .env_clear()
        .current_dir(dir)
        .envs([("AUTH_LISTEN_ADDR", "127.0.0.1:0"), ("TASK_LISTEN_ADDR", "127.0.0.1:0"), ("RUST_LOG", "warn")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut auth, mut tasks) = (None, None);
    let mut try_line = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let url =
            |prefix: &str| line.strip_prefix(prefix).map(|rest| rest.split_whitespace().next().unwrap().to_owned());
        auth = auth.or_else(|| url("auth-service  "));
        tasks = tasks.or_else(|| url("task-service  "));
        if line.starts_with("try:") {
            try_line = Some(line.clone());
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    let (auth, tasks) = (auth.expect("auth address printed"), tasks.expect("task address printed"));
    let try_line = try_line.expect("a buf curl line is printed");
    assert!(try_line.contains(&format!("{auth}/todo.auth.v1.AuthService/SignUp")), "{try_line}");
    assert!(try_line.contains("--protocol grpc --http2-prior-knowledge"), "{try_line}");
    Pair { child, auth, tasks }
}

/// Ctrl-C (SIGINT), then the exit status and what was printed on stderr.
fn interrupt(mut pair: Pair) -> String {
    let kill = Command::new("kill").args(["-INT", &pair.child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = pair.child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut pair.child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    stderr
}

/// Connects once health says SERVING (a few milliseconds after the addresses are printed,
/// when SQLite is migrated).
async fn connect(url: &str) -> tonic::transport::Channel {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    for _ in 0..100 {
        let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status;
        if status == ServingStatus::Serving as i32 {
            return channel;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{url} not SERVING after 5 s");
}

fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

// Multi-threaded: `interrupt` blocks this thread while the idle clients must still answer the
// server's GOAWAY, as a real client would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_both_services_keeps_the_secret_and_stops_on_ctrl_c() {
    let dir = std::env::temp_dir().join(format!("todo-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let pair = start(&dir);
    let secret_file = dir.join("data/dev-jwt-secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&secret_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the secret file must be private");
    }
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    assert!(secret.trim().len() >= 32);

    let mut auth = AuthServiceClient::new(connect(&pair.auth).await);
    let (email, password) = ("dev@example.com".to_owned(), "plum-kettle-orbit-42".to_owned());
    auth.sign_up(SignUpRequest { email: email.clone(), password: password.clone() }).await.unwrap();
    let login = auth.login(LoginRequest { email: email.clone(), password }).await.unwrap().into_inner();
    let mut tasks = TaskServiceClient::new(connect(&pair.tasks).await);
    let title = "survives a restart".to_owned();
    {
        tasks.create_task(bearer(CreateTaskRequest { title: title.clone(), ..Default::default() }, &login.access_token))
    }
    .await
    .unwrap();

    let stderr = interrupt(pair);
    assert!(stderr.contains("DEVELOPMENT SETUP"), "{stderr}");
    assert!(stderr.contains("generated into"), "{stderr}");
    assert!(!stderr.contains(secret.trim()), "the secret was printed");

    // Same directory again: the same secret, so the old token still works, and the same data.
    let pair = start(&dir);
    assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), secret);
    let mut auth = AuthServiceClient::new(connect(&pair.auth).await);
    let me = auth.get_current_user(bearer(GetCurrentUserRequest {}, &login.access_token)).await.unwrap();
    assert_eq!(me.into_inner().user.unwrap().email, email);
    let mut tasks = TaskServiceClient::new(connect(&pair.tasks).await);
    let listed = tasks.list_tasks(bearer(ListTasksRequest::default(), &login.access_token)).await.unwrap().into_inner();
    assert_eq!(listed.tasks.iter().map(|t| t.title.as_str()).collect::<Vec<_>>(), [title.as_str()]);
    let stderr = interrupt(pair);
    assert!(stderr.contains("read from"), "{stderr}");

    let _ = std::fs::remove_dir_all(dir);
}
