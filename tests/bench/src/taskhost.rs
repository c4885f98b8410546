//! `todo-bench task-host <auth|no-auth>`: task-service assembled from its library exactly as
//! `task_service::Application::build` does (same configuration from the environment, same
//! `GrpcHost`, pool, store, page tokens and message limit), with one difference: `no-auth`
//! replaces the bearer-token check by an interceptor that inserts a fixed caller
//! (`BENCH_FIXED_USER`, a user id). Running both builds of the same code side by side isolates
//! what token verification costs.

use std::sync::Arc;

use task_service::Config;
use task_service::page_token::PageTokens;
use task_service::service::TaskApi;
use task_service::store;
use task_service::tasks::Tasks;
use todo_contract::task::v1::task_service_server::TaskServiceServer;
use todo_shared::auth::{AuthenticatedUser, RequireBearer};
use todo_shared::config::Env;
use todo_shared::db::Pool;
use todo_shared::readiness::Readiness;
use todo_shared::server::GrpcHost;
use todo_shared::token::TokenKeys;
use tonic::codec::CompressionEncoding;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};

use crate::Result;

#[derive(Clone)]
enum Caller {
    Bearer(RequireBearer),
    Fixed(AuthenticatedUser),
}

/// task-service's `Gate` (private there): the caller first, then readiness.
#[derive(Clone)]
struct Gate {
    caller: Caller,
    readiness: Readiness,
}

impl Interceptor for Gate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let request = match &mut self.caller {
            Caller::Bearer(bearer) => bearer.call(request)?,
            Caller::Fixed(user) => {
                let mut request = request;
                request.extensions_mut().insert(user.clone());
                request
            }
        };
        self.readiness.check()?;
        Ok(request)
    }
}

pub async fn serve(mode: Option<&str>) -> Result<()> {
    let verify = match mode {
        Some("auth") => true,
        Some("no-auth") => false,
        _ => return Err("usage: todo-bench task-host <auth|no-auth>".into()),
    };
    let config = Config::from_env(&Env::process()).map_err(|e| format!("configuration error: {e}"))?;
    todo_shared::telemetry::init(&config.logging);

    let keys = Arc::new(TokenKeys::new(&config.token.secret, &config.token.issuer, &config.token.audience)?);
    let page_tokens = PageTokens::new(config.token.secret.expose_for_key_derivation());
    let pool = Pool::connect_lazy(&config.database, &config.pool)?;
    let host = GrpcHost::bind(config.listen_addr, task_service::SERVICE_NAME)
        .await?
        .with_limits(config.limits.clone())
        .with_cors(config.cors.clone());

    let caller = if verify {
        Caller::Bearer(RequireBearer::new(keys))
    } else {
        let id = std::env::var("BENCH_FIXED_USER").map_err(|_| "BENCH_FIXED_USER is not set")?;
        let id = uuid::Uuid::try_parse(&id).map_err(|e| format!("BENCH_FIXED_USER: {e}"))?;
        Caller::Fixed(AuthenticatedUser {
            id,
            email: "fixed@bench.example.com".to_owned(),
            session_id: None,
            issued_at: 0,
            expires_at: u64::MAX,
        })
    };
    let store = store::for_pool(&pool);
    let hub = Arc::new(task_service::hub::Hub::default());
    let tasks = Arc::new(Tasks::new(
        Arc::clone(&store) as Arc<dyn store::TaskStore>,
        page_tokens,
        Arc::clone(&hub),
        task_service::Config::DEFAULT_MAX_TASKS_PER_USER,
    ));
    let watchers = Arc::new(task_service::watch::Watchers::new(
        store,
        task_service::resume_token::ResumeTokens::new(config.token.secret.expose_for_key_derivation()),
        hub,
        Arc::new(task_service::revocations::Revocations::default()),
        host.readiness().subscribe(),
        config.watch.clone(),
    ));
    let api = TaskServiceServer::new(TaskApi::new(tasks, watchers))
        .max_decoding_message_size(config.limits.max_request_bytes)
        .accept_compressed(CompressionEncoding::Gzip);
    let gate = Gate { caller, readiness: host.readiness() };
    let host = host.add_service(InterceptedService::new(api, gate)).supervise_database(pool, &store::MIGRATIONS);
    host.serve(todo_shared::server::shutdown_signal()).await?;
    Ok(())
}
