//! Whether the service can serve RPCs: its database answers and it is not shutting down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tonic::{Request, Status};

/// Whether the service can serve RPCs: its database answers and it is not shutting down.
/// Drives both the `grpc.health.v1` status and the gate in front of the RPCs.
#[derive(Clone, Debug)]
pub struct Readiness {
    inner: Arc<ReadinessInner>,
}

#[derive(Debug)]
struct ReadinessInner {
    database_up: AtomicBool,
    /// A peer this service depends on (task-service: auth-service's session-event feed).
    dependency: std::sync::OnceLock<Dependency>,
    shutting_down: AtomicBool,
    /// What health reports; changes wake every `Health/Watch` stream.
    published: tokio::sync::watch::Sender<Published>,
    service_name: &'static str,
}

#[derive(Debug)]
struct Dependency {
    /// Its health name: `Health/Check` answers for it too.
    name: &'static str,
    up: AtomicBool,
    /// Whether the service refuses RPCs while it is down, or only reports it.
    required: bool,
    /// What a refused RPC is told.
    refusal: &'static str,
}

/// The state `Health/Watch` streams follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    pub serving: bool,
    /// The dependency's own state (true when there is none).
    pub dependency_up: bool,
    /// Final: watchers send NOT_SERVING and end their stream.
    pub shutting_down: bool,
}

impl Readiness {
    /// Not ready until the database supervisor says the database is up.
    pub fn new(service_name: &'static str) -> Self {
        let initial = Published { serving: false, dependency_up: true, shutting_down: false };
        let (published, _) = tokio::sync::watch::channel(initial);
        Self {
            inner: Arc::new(ReadinessInner {
                database_up: AtomicBool::new(false),
                dependency: std::sync::OnceLock::new(),
                shutting_down: AtomicBool::new(false),
                published,
                service_name,
            }),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.inner.database_up.load(Ordering::Acquire)
            && !self.inner.shutting_down.load(Ordering::Acquire)
            && !self.dependency_blocks()
    }

    /// Whether the database answered the supervisor's last check.
    pub fn database_up(&self) -> bool {
        self.inner.database_up.load(Ordering::Acquire)
    }

    /// Declares a dependency, down until [`Readiness::set_dependency_up`] says otherwise.
    /// `required`: RPCs are refused with `refusal` (UNAVAILABLE) while it is down; otherwise
    /// its state is only reported, under `name`, by health.
    pub fn add_dependency(&self, name: &'static str, required: bool, refusal: &'static str) {
        let dependency = Dependency { name, up: AtomicBool::new(false), required, refusal };
        if self.inner.dependency.set(dependency).is_ok() {
            self.publish();
        }
    }

    pub fn set_dependency_up(&self, up: bool) {
        if let Some(dependency) = self.inner.dependency.get()
            && dependency.up.swap(up, Ordering::AcqRel) != up
        {
            self.publish();
        }
    }

    /// The dependency's health name and whether it is up.
    pub fn dependency(&self) -> Option<(&'static str, bool)> {
        self.inner.dependency.get().map(|d| (d.name, d.up.load(Ordering::Acquire)))
    }

    fn dependency_blocks(&self) -> bool {
        self.inner.dependency.get().is_some_and(|d| d.required && !d.up.load(Ordering::Acquire))
    }

    /// UNAVAILABLE unless ready. Called before every RPC of the service.
    pub fn check(&self) -> Result<(), Status> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            Err(Status::unavailable("the service is shutting down; retry on another instance"))
        } else if !self.inner.database_up.load(Ordering::Acquire) {
            Err(Status::unavailable("the database is unavailable; retry with back-off"))
        } else if let Some(dependency) = self.inner.dependency.get().filter(|_| self.dependency_blocks()) {
            Err(Status::unavailable(dependency.refusal))
        } else {
            Ok(())
        }
    }

    /// Publishes only on a change: every publish wakes every `Health/Watch` stream, and the
    /// supervisor reports the database's state every second.
    pub fn set_database_up(&self, up: bool) {
        if self.inner.database_up.swap(up, Ordering::AcqRel) == up {
            return;
        }
        if up {
            tracing::info!("database reachable: serving");
        } else {
            tracing::warn!("database unreachable: not serving");
        }
        self.publish();
    }

    /// Flips health to NOT_SERVING for good.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        self.publish();
    }

    pub fn service_name(&self) -> &'static str {
        self.inner.service_name
    }

    /// The published state, for `Health/Watch`.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Published> {
        self.inner.published.subscribe()
    }

    fn publish(&self) {
        let next = Published {
            serving: self.is_ready(),
            dependency_up: self.dependency().is_none_or(|(_, up)| up),
            shutting_down: self.inner.shutting_down.load(Ordering::Acquire),
        };
        self.inner.published.send_if_modified(|current| std::mem::replace(current, next) != next);
    }
}

/// The interceptor that refuses RPCs while the service is not ready.
#[derive(Clone, Debug)]
pub struct ReadyGate(pub Readiness);

impl tonic::service::Interceptor for ReadyGate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0.check()?;
        Ok(request)
    }
}
