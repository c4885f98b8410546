//! `todo-dev`: auth-service and task-service in one process, for trying the pair on a fresh
//! machine with nothing else installed.
//!
//! - Both stores are SQLite files under `./data/` (`TODO_DATA_DIR` to move it).
//! - The JWT secret is generated on first run into `./data/dev-jwt-secret` (mode 0600) and
//!   reused afterwards, so tokens survive a restart. `JWT_SECRET`, if set, wins.
//! - Browsers on `http://localhost:*` and `http://127.0.0.1:*` may call both services unless
//!   `CORS_ALLOWED_ORIGINS` says otherwise.
//! - task-service follows auth-service's session feed (`AUTH_SERVICE_URL` is set to it).
//! - Each service serves `/metrics` on a loopback port of its own, picked at start-up and
//!   printed (`METRICS_ADDR` cannot name one address for two services).
//! - Every other variable (`AUTH_LISTEN_ADDR`, `TASK_LISTEN_ADDR`, `RUST_LOG`, ...) means what
//!   it means for the services.
//!
//! Production runs each service on its own, with `JWT_SECRET` and `DATABASE_URL` set.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use todo_shared::config::{EXIT_BAD_CONFIG, Env};
use tokio::sync::watch;

const SECRET_FILE: &str = "dev-jwt-secret";
const DEV_ORIGINS: &str = "http://localhost:*,http://127.0.0.1:*";

/// How the launcher stops on error: a one-line message and the exit status.
struct Exit {
    message: String,
    code: u8,
}

impl Exit {
    fn config(message: impl Into<String>) -> Self {
        Self { message: message.into(), code: EXIT_BAD_CONFIG as u8 }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("todo-dev: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn run() -> Result<(), Exit> {
    let data_dir = PathBuf::from(std::env::var_os("TODO_DATA_DIR").unwrap_or_else(|| "data".into()));
    create_private_dir(&data_dir)
        .map_err(|e| Exit::config(format!("TODO_DATA_DIR: cannot create {}: {e}", data_dir.display())))?;

    let secret =
        if env_is_set("JWT_SECRET") { None } else { Some(load_or_create_secret(&data_dir.join(SECRET_FILE))?) };
    let env_for = |file: &str| {
        let mut overrides = vec![("DATABASE_URL", format!("sqlite://{}", data_dir.join(file).display()))];
        if let Some(secret) = &secret {
            overrides.push(("JWT_SECRET", secret.value.clone()));
        }
        if !env_is_set("CORS_ALLOWED_ORIGINS") {
            overrides.push(("CORS_ALLOWED_ORIGINS", DEV_ORIGINS.to_owned()));
        }
        Env::process_with(overrides)
    };
    let config_error = |service: &str, err| Exit::config(format!("{service}: configuration error: {err}"));
    let auth_config =
        auth_service::Config::from_env(&env_for("auth.db")).map_err(|e| config_error("auth-service", e))?;
    let mut task_config =
        task_service::Config::from_env(&env_for("tasks.db")).map_err(|e| config_error("task-service", e))?;
    let any_loopback_port = Some(std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)));
    let mut auth_config = auth_config;
    auth_config.metrics_addr = any_loopback_port;
    task_config.metrics_addr = any_loopback_port;
    let origins = format!("{:?}", auth_config.cors);
    todo_shared::telemetry::init(&auth_config.logging);
    todo_shared::listener::raise_open_files_limit_and_log();

    let start_error = |service: &str, message: String, is_config: bool| Exit {
        message: format!("{service}: {message}"),
        code: if is_config { EXIT_BAD_CONFIG as u8 } else { 1 },
    };
    let auth = auth_service::Application::build(auth_config)
        .await
        .map_err(|e| start_error("auth-service", e.to_string(), e.is_configuration()))?;
    // task-service follows auth-service's session feed: the launcher knows where it is.
    if task_config.auth_service_url.is_none() {
        let mut addr = auth.local_addr();
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        task_config.auth_service_url = Some(format!("http://{addr}"));
    }
    let tasks = task_service::Application::build(task_config)
        .await
        .map_err(|e| start_error("task-service", e.to_string(), e.is_configuration()))?;

    let secret_note = match &secret {
        Some(s) if s.created => format!("generated into {} (mode 0600)", s.path.display()),
        Some(s) => format!("read from {}", s.path.display()),
        None => "from JWT_SECRET".to_owned(),
    };
    eprintln!(
        "\n\
        ************************************************************************\n\
        * DEVELOPMENT SETUP: not for production.                               *\n\
        ************************************************************************\n  \
          data:        {data}/auth.db and {data}/tasks.db (SQLite)\n  \
          JWT secret:  {secret_note}; whoever can read it can mint tokens\n  \
          CORS:        {origins}\n  \
          Production runs each service on its own with JWT_SECRET and DATABASE_URL set.\n",
        data = data_dir.display(),
    );
    let (auth_addr, task_addr) = (auth.local_addr(), tasks.local_addr());
    println!("auth-service  http://{auth_addr}  (gRPC and gRPC-web; todo.auth.v1.AuthService)");
    println!("task-service  http://{task_addr}  (gRPC and gRPC-web; todo.task.v1.TaskService)");
    for (service, addr) in [("auth-service", auth.metrics_addr()), ("task-service", tasks.metrics_addr())] {
        if let Some(addr) = addr {
            println!("metrics       http://{addr}/metrics  ({service}, Prometheus)");
        }
    }
    println!(
        "try:          npx --yes @bufbuild/buf curl --protocol grpc --http2-prior-knowledge \
         -d '{{\"email\":\"ada@example.com\",\"password\":\"plum-kettle-orbit-42\"}}' \
         http://{auth_addr}/todo.auth.v1.AuthService/SignUp"
    );
    println!("Ctrl-C stops both.");

    // One stop signal for both services; either one stopping on its own stops the other too.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let signal_tx = Arc::clone(&stop_tx);
    tokio::spawn(async move {
        todo_shared::server::shutdown_signal().await;
        signal_tx.send_replace(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let (auth_stop, task_stop) = (Arc::clone(&stop_tx), Arc::clone(&stop_tx));
    let (auth_result, task_result) = tokio::join!(
        async move {
            let result = auth.run_until(stopped(stop_rx.clone())).await;
            auth_stop.send_replace(true);
            result
        },
        async move {
            let result = tasks.run_until(stopped(stop_tx.subscribe())).await;
            task_stop.send_replace(true);
            result
        },
    );
    auth_result.map_err(|e| Exit { message: format!("auth-service: server error: {e}"), code: 1 })?;
    task_result.map_err(|e| Exit { message: format!("task-service: server error: {e}"), code: 1 })?;
    Ok(())
}

fn env_is_set(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}

struct DevSecret {
    value: String,
    path: PathBuf,
    created: bool,
}

/// Reads the saved development secret, or generates one (384 random bits) and saves it
/// readable by the owner only.
fn load_or_create_secret(path: &Path) -> Result<DevSecret, Exit> {
    let unreadable =
        |e: std::io::Error| Exit::config(format!("{}: cannot read the development secret: {e}", path.display()));
    match std::fs::read_to_string(path) {
        Ok(saved) => {
            let value = saved.trim().to_owned();
            if value.len() < 32 {
                return Err(Exit::config(format!(
                    "{}: the saved development secret is shorter than 32 bytes; delete the file to generate a new one",
                    path.display()
                )));
            }
            Ok(DevSecret { value, path: path.to_owned(), created: false })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 48];
            getrandom::fill(&mut bytes)
                .map_err(|e| Exit::config(format!("cannot generate a development secret: {e}")))?;
            let value = URL_SAFE_NO_PAD.encode(bytes);
            match write_private_file(path, &format!("{value}\n")) {
                Ok(()) => Ok(DevSecret { value, path: path.to_owned(), created: true }),
                // Another launcher got there first: use its secret.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_secret(path),
                Err(e) => Err(Exit::config(format!("{}: cannot save the development secret: {e}", path.display()))),
            }
        }
        Err(e) => Err(unreadable(e)),
    }
}

#[cfg(unix)]
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}
