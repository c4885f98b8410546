//! `grpc.health.v1`, answered from [`Readiness`].
//!
//! Our own implementation rather than `tonic_health`'s reporter for one reason: on shutdown a
//! `Watch` stream must end. An open stream is an in-flight call, so with streams that never
//! end, every client watching health (gRPC's client-side health checking does) would hold
//! shutdown until the drain deadline. Here a watcher gets NOT_SERVING and then the stream ends
//! with OK, which the protocol tells clients to treat as "retry elsewhere with back-off".

use std::pin::Pin;

use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::readiness::{Published, Readiness};

pub struct HealthApi {
    readiness: Readiness,
}

impl HealthApi {
    pub fn server(readiness: Readiness) -> HealthServer<Self> {
        HealthServer::new(Self { readiness })
    }

    /// `""` is the whole server and the service's full protobuf name is the service: both
    /// have the same status. A dependency (see [`Readiness::add_dependency`]) answers under
    /// its own name with its own state.
    fn knows(&self, service: &str) -> Option<Subject> {
        if service.is_empty() || service == self.readiness.service_name() {
            Some(Subject::Server)
        } else if service == LIVENESS {
            Some(Subject::Process)
        } else if self.readiness.dependency().is_some_and(|(name, _)| name == service) {
            Some(Subject::Dependency)
        } else {
            None
        }
    }
}

#[derive(Clone, Copy)]
enum Subject {
    Server,
    Dependency,
    /// [`LIVENESS`]: the process answers.
    Process,
}

/// The name a liveness probe asks for: SERVING whenever the process answers, even while its
/// database or a peer is down (a restart would not bring them back; readiness takes the
/// instance out of rotation instead), until it shuts down.
pub const LIVENESS: &str = "liveness";

fn status_of(subject: Option<Subject>, state: &Published) -> ServingStatus {
    match subject {
        None => ServingStatus::ServiceUnknown,
        Some(Subject::Server) if state.serving => ServingStatus::Serving,
        Some(Subject::Dependency) if state.dependency_up && !state.shutting_down => ServingStatus::Serving,
        Some(Subject::Process) if !state.shutting_down => ServingStatus::Serving,
        Some(_) => ServingStatus::NotServing,
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status as i32 }
}

#[tonic::async_trait]
impl Health for HealthApi {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        let Some(subject) = self.knows(&service) else {
            return Err(Status::not_found(format!(
                "unknown service {service:?}: ask for \"\" (the server) or {:?}",
                self.readiness.service_name()
            )));
        };
        let state = *self.readiness.subscribe().borrow();
        Ok(Response::new(response(status_of(Some(subject), &state))))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let known = self.knows(&request.into_inner().service);
        let mut changes = self.readiness.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let (status, last) = {
                    let state = changes.borrow_and_update();
                    (status_of(known, &state), state.shutting_down)
                };
                if tx.send(Ok(response(status))).await.is_err() || last {
                    return;
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    // The client went away: stop at once rather than at the next change.
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// `<binary> healthcheck`: asks the service listening on `addr` (an unspecified address means
/// this host) for its `grpc.health.v1` status, as a container's health check does without a
/// shell or a probe binary in the image; over TLS when `tls` (the certificate is not checked:
/// see [`connect_unverified`](crate::tls::client::connect_unverified)). `Ok(())` when
/// SERVING; otherwise a line saying why.
pub fn probe(mut addr: std::net::SocketAddr, tls: bool) -> Result<(), String> {
    use tonic_health::pb::health_client::HealthClient;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("{addr}: {e}"))?
            .connect_timeout(std::time::Duration::from_secs(2))
            .timeout(std::time::Duration::from_secs(3));
        let channel = if tls {
            let connect = tower::service_fn(move |_| crate::tls::client::connect_unverified(addr));
            endpoint.connect_with_connector(connect).await
        } else {
            endpoint.connect().await
        };
        let channel = channel.map_err(|e| format!("{addr}: cannot connect: {}", crate::telemetry::error_chain(&e)))?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest { service: String::new() })
            .await
            .map_err(|status| format!("{addr}: {:?}: {}", status.code(), status.message()))?;
        match ServingStatus::try_from(answer.into_inner().status) {
            Ok(ServingStatus::Serving) => Ok(()),
            Ok(status) => Err(format!("{addr}: {}", status.as_str_name())),
            Err(_) => Err(format!("{addr}: unknown status")),
        }
    })
}

/// The `healthcheck` subcommand of a service binary: probes the address `listen_var` names
/// (default `default`). Exit 0 when SERVING, 1 when not, 2 when the address is misconfigured.
pub fn healthcheck_command(
    binary: &str,
    listen_var: &'static str,
    default: std::net::SocketAddr,
) -> std::process::ExitCode {
    let env = crate::config::Env::process();
    // The service serves TLS when it has a certificate: then so must the probe.
    let target = env.socket_addr(listen_var, default).and_then(|addr| Ok((addr, env.get("TLS_CERT_FILE")?.is_some())));
    let (addr, tls) = match target {
        Ok(target) => target,
        Err(err) => {
            eprintln!("{binary} healthcheck: configuration error: {err}");
            return std::process::ExitCode::from(crate::config::EXIT_BAD_CONFIG as u8);
        }
    };
    match probe(addr, tls) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("{binary} healthcheck: not serving: {why}");
            std::process::ExitCode::FAILURE
        }
    }
}
