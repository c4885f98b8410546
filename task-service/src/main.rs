use std::process::ExitCode;

use task_service::{Application, Config};
use todo_shared::config::{EXIT_BAD_CONFIG, Env};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env(&Env::process()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("task-service: configuration error: {err}");
            return ExitCode::from(EXIT_BAD_CONFIG as u8);
        }
    };
    todo_shared::telemetry::init(&config.log_filter);

    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(err) => {
            eprintln!("task-service: {err}");
            let code = if err.is_configuration() { EXIT_BAD_CONFIG as u8 } else { 1 };
            return ExitCode::from(code);
        }
    };
    match app.run_until(todo_shared::server::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("task-service: server error: {err}");
            ExitCode::FAILURE
        }
    }
}
