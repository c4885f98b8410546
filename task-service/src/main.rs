use std::process::ExitCode;

use task_service::{Application, Config};
use todo_shared::config::{EXIT_BAD_CONFIG, Env};

// mimalloc rather than glibc's malloc: a ListTasks(100) page allocates hundreds of times, and
// glibc spends a good share of task-service's CPU in malloc, free and arena consolidation
// (BENCHMARKS.md has the A/B). auth-service keeps glibc: its 19 MiB argon2 blocks must go
// back to the OS when logins stop, and glibc unmaps them on free where mimalloc keeps them
// until its next purge, which an idle process never reaches.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The container health check: the image has no shell and no probe binary.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "healthcheck") {
        return todo_shared::health::healthcheck_command(
            "task-service",
            "TASK_LISTEN_ADDR",
            Config::DEFAULT_LISTEN_ADDR,
        );
    }
    let config = match Config::from_env(&Env::process()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("task-service: configuration error: {err}");
            return ExitCode::from(EXIT_BAD_CONFIG as u8);
        }
    };
    match todo_shared::server::runtime(config.worker_threads) {
        Ok(runtime) => runtime.block_on(serve(config)),
        Err(err) => {
            eprintln!("task-service: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    todo_shared::telemetry::init(&config.logging);
    todo_shared::listener::raise_open_files_limit_and_log();

    let feedless = config.auth_service_url.is_none();
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(err) => {
            eprintln!("task-service: {err}");
            let code = if err.is_configuration() { EXIT_BAD_CONFIG as u8 } else { 1 };
            return ExitCode::from(code);
        }
    };
    if feedless {
        // On stderr as well as in the log: a log filter must not be able to hide it.
        eprintln!(
            "task-service: WARNING: AUTH_SERVICE_URL is not set: signed-out sessions, changed passwords and deleted \
             accounts are not honoured here until their tokens expire"
        );
    }
    match app.run_until(todo_shared::server::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("task-service: server error: {err}");
            ExitCode::FAILURE
        }
    }
}
