//! The gRPC host both services run in: one listener serving native gRPC and gRPC-web, with
//! health, reflection (v1 and v1alpha), per-RPC tracing, the limits, the database supervisor,
//! and graceful shutdown with a bounded drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::{Routes, RoutesBuilder};

use crate::config::ConfigError;
use crate::cors::AllowedOrigins;
use crate::db::{Migrations, Pool};
use crate::limits::{LimitLayer, ServerLimits};
use crate::listener::Incoming;
use crate::metrics::rpc::RpcMetricsLayer;
use crate::metrics::{self, Metrics, Sampled};
use crate::readiness::Readiness;
use crate::tls::incoming::TlsIncoming;
use crate::tls::{Reloading, ServerTls};

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received: shutting down"),
        () = terminate => tracing::info!("SIGTERM received: shutting down"),
    }
}

/// A bound listener plus the services to serve on it.
pub struct GrpcHost {
    listener: TcpListener,
    local_addr: SocketAddr,
    readiness: Readiness,
    routes: RoutesBuilder,
    limits: ServerLimits,
    cors: AllowedOrigins,
    /// The service's pool and the task that migrates and watches it.
    database: Option<(Pool, tokio::task::JoinHandle<()>)>,
    metrics: Metrics,
    /// `METRICS_ADDR`'s listener, when there is one.
    metrics_listener: Option<(TcpListener, SocketAddr)>,
    /// `TLS_CERT_FILE` and company; plaintext without.
    tls: Option<Arc<Reloading>>,
}

impl GrpcHost {
    /// Binds `addr` now (so port 0 resolves and callers can connect at once) and registers
    /// health and reflection. `service_name` is the full protobuf name whose health is reported.
    pub async fn bind(addr: SocketAddr, service_name: &'static str) -> std::io::Result<Self> {
        let listener = crate::listener::bind(addr)?;
        let local_addr = listener.local_addr()?;

        let readiness = Readiness::new(service_name);
        let health_service = crate::health::HealthApi::server(readiness.clone());

        let mut routes = Routes::builder();
        routes.add_service(health_service);
        add_reflection(&mut routes, service_name);
        let metrics = Metrics::default();
        let state = readiness.clone();
        metrics.sample(Sampled::gauge(
            "todo_serving",
            "1 while health reports SERVING (database up, not shutting down, required peers up), else 0.",
            move || metrics::flag(state.is_ready()),
        ));
        let state = readiness.clone();
        metrics.sample(Sampled::gauge(
            "todo_database_up",
            "1 while the database answers the supervisor's checks, else 0.",
            move || metrics::flag(state.database_up()),
        ));
        Ok(Self {
            listener,
            local_addr,
            readiness,
            routes,
            limits: ServerLimits::with_max_request_bytes(64 * 1024),
            cors: AllowedOrigins::none(),
            database: None,
            metrics,
            metrics_listener: None,
            tls: None,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// The service's metrics, for its own figures to be registered in.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Binds `addr` for `/metrics` now (port 0 resolves at once); served with the RPCs.
    pub async fn serve_metrics_on(mut self, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        self.metrics_listener = Some((listener, local));
        Ok(self)
    }

    /// Where `/metrics` is served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, addr)| *addr)
    }

    /// The limits the server enforces (the services apply `max_request_bytes` themselves,
    /// per service).
    pub fn with_limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Serves TLS with these files (reloaded when they change), or plaintext for `None`.
    pub fn with_tls(mut self, tls: Option<ServerTls>) -> Result<Self, ConfigError> {
        self.tls = tls.map(Reloading::new).transpose()?.map(Arc::new);
        Ok(self)
    }

    /// Browser origins allowed to call through gRPC-web (none by default).
    pub fn with_cors(mut self, origins: AllowedOrigins) -> Self {
        self.cors = origins;
        self
    }

    /// Migrates `pool` (retrying until the database answers) and keeps readiness in step with
    /// it, in the background; the pool is closed when the server stops.
    pub fn supervise_database(mut self, pool: Pool, migrations: &'static Migrations) -> Self {
        pool.register_metrics(&self.metrics);
        let supervisor =
            tokio::spawn(crate::supervisor::supervise_database(pool.clone(), migrations, self.readiness()));
        self.database = Some((pool, supervisor));
        self
    }

    pub fn add_service<S, B>(mut self, service: S) -> Self
    where
        B: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
        S: tower::Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self
    }

    /// Serves until `shutdown` resolves, then drains: health goes NOT_SERVING, the listener
    /// closes, in-flight calls get up to the drain timeout to finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), tonic::transport::Error> {
        let readiness = self.readiness.clone();
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            readiness.begin_shutdown();
            let _ = drain_tx.send(());
        };

        let endpoint = self.metrics_listener.map(|(listener, addr)| {
            tracing::info!(addr = %addr, "metrics at http://{addr}/metrics");
            let readiness = self.readiness.clone();
            tokio::spawn(crate::metrics::endpoint::serve(listener, self.metrics.clone(), move || readiness.is_ready()))
        });
        let limits = &self.limits;
        let router = tonic::transport::Server::builder()
            // gRPC-web arrives over HTTP/1.1 as well as HTTP/2.
            .accept_http1(true)
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .max_connection_age(limits.max_connection_age)
            .max_connection_age_grace(limits.max_connection_age_grace)
            .http2_max_pending_accept_reset_streams(Some(limits.max_pending_reset_streams))
            .http2_max_local_error_reset_streams(Some(limits.max_local_error_reset_streams))
            .http2_max_header_list_size(limits.max_header_list_bytes)
            // Outermost, so the span and every layer below see the settled request id.
            .layer(crate::request_id::RequestIdLayer)
            // So every call, a refused preflight included, has its span.
            .layer(crate::telemetry::rpc_trace_layer())
            // Before the rest, so a preflight is answered before the token or readiness checks.
            .layer(self.cors.layer())
            .layer(tonic_web::GrpcWebLayer::new())
            // Inside gRPC-web, which turns trailers into body bytes, and outside the limits, so
            // their refusals carry the request id too.
            .layer(crate::request_id::RequestInfoLayer)
            // Inside gRPC-web (native gRPC statuses) and outside the limits (shed calls count).
            .layer(RpcMetricsLayer::new(&self.metrics))
            // Inside gRPC-web, so its refusals reach browsers as gRPC-web too.
            .layer(LimitLayer::new(limits, &self.metrics))
            .add_routes(self.routes.routes());
        let (keepalive, handshake_timeout) = (limits.keepalive_interval, limits.handshake_timeout);
        let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
            match self.tls {
                Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
                    TlsIncoming::new(self.listener, keepalive, handshake_timeout, tls),
                    signal,
                )),
                None => {
                    if !self.local_addr.ip().is_loopback() {
                        tracing::warn!(addr = %self.local_addr,
                        "serving plaintext beyond loopback: passwords and tokens cross the network unencrypted \
                         unless a proxy in front terminates TLS; set TLS_CERT_FILE and TLS_KEY_FILE to serve TLS");
                    }
                    Box::pin(router.serve_with_incoming_shutdown(
                        Incoming::new(self.listener, keepalive, handshake_timeout),
                        signal,
                    ))
                }
            };

        let drain_timeout = self.limits.drain_timeout;
        let database = self.database;
        let mut server = server;
        let deadline = async move {
            if drain_rx.await.is_ok() {
                tokio::time::sleep(drain_timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            result = &mut server => result,
            () = deadline => {
                tracing::warn!(drain_timeout_ms = drain_timeout.as_millis() as u64, "drain deadline passed; abandoning calls still in flight");
                Ok(())
            }
        };
        if let Some(endpoint) = endpoint {
            endpoint.abort();
        }
        if let Some((pool, supervisor)) = database {
            supervisor.abort();
            // Closing drops the idle connections (SQLite's pool also waits for lent ones, and
            // a call abandoned at the drain deadline may hold one until its statement times
            // out): give it a moment, then let the process exit (the database ends the
            // session when the socket closes).
            if tokio::time::timeout(Duration::from_secs(1), pool.close()).await.is_err() {
                tracing::warn!("database connections still busy at exit; closing them with the process");
            }
        }
        result
    }
}

/// Full names of the reflection services, as each version advertises itself.
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";
const HEALTH: &str = tonic_health::pb::health_server::SERVICE_NAME;

fn add_reflection(routes: &mut RoutesBuilder, service_name: &'static str) {
    // Both versions: grpcurl asks v1 first, and older tools (and some `buf curl` versions)
    // only speak v1alpha. The descriptor set holds both services' files (one contract crate),
    // so the services to list are named: a port advertises what it serves and nothing else,
    // or tools would offer the other service's methods and get UNIMPLEMENTED.
    let builder = |reflection: &'static str| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(todo_contract::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(service_name)
            .with_service_name(HEALTH)
            .with_service_name(reflection)
    };
    // The descriptor sets are compiled into the binary; building from them fails only for a
    // misbuilt binary, which the tests catch.
    match builder(REFLECTION_V1).build_v1() {
        Ok(service) => {
            routes.add_service(service);
        }
        Err(err) => tracing::error!(error = %err, "reflection v1 unavailable"),
    }
    match builder(REFLECTION_V1ALPHA).build_v1alpha() {
        Ok(service) => {
            routes.add_service(service);
        }
        Err(err) => tracing::error!(error = %err, "reflection v1alpha unavailable"),
    }
}

/// The multi-threaded tokio runtime a service's `main` runs on: `worker_threads` from
/// [`Env::worker_threads`](crate::config::Env::worker_threads), or one per core.
pub fn runtime(worker_threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    builder
        .worker_threads(worker_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)));
    builder.build()
}
