use std::process::ExitCode;

use auth_service::{Application, Config};
use todo_shared::config::{EXIT_BAD_CONFIG, Env};

fn main() -> ExitCode {
    // The container health check: the image has no shell and no probe binary.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "healthcheck") {
        return todo_shared::health::healthcheck_command(
            "auth-service",
            "AUTH_LISTEN_ADDR",
            Config::DEFAULT_LISTEN_ADDR,
        );
    }
    let config = match Config::from_env(&Env::process()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("auth-service: configuration error: {err}");
            return ExitCode::from(EXIT_BAD_CONFIG as u8);
        }
    };
    match todo_shared::server::runtime(config.worker_threads) {
        Ok(runtime) => runtime.block_on(serve(config)),
        Err(err) => {
            eprintln!("auth-service: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    todo_shared::telemetry::init(&config.logging);
    todo_shared::listener::raise_open_files_limit_and_log();

    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(err) => {
            eprintln!("auth-service: {err}");
            let code = if err.is_configuration() { EXIT_BAD_CONFIG as u8 } else { 1 };
            return ExitCode::from(code);
        }
    };
    match app.run_until(todo_shared::server::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("auth-service: server error: {err}");
            ExitCode::FAILURE
        }
    }
}
