//! WatchTasks: the caller's current tasks, then every change after them, read from the
//! change log at the stream's own position (see `store::ChangeLog` and [`crate::hub`]).

use std::collections::HashMap;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use todo_contract::task::v1 as pb;
use todo_contract::task::v1::watch_tasks_response::EventType;
use todo_shared::auth::{AuthError, AuthenticatedUser};
use todo_shared::readiness::Published;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::Stream;
use tonic::Status;
use uuid::Uuid;

use crate::error::Error;
use crate::hub::Hub;
use crate::resume_token::ResumeTokens;
use crate::revocations::Revocations;
use crate::store::{ChangeKind, Store};

/// Changes read from the log per query.
const BATCH: i64 = 256;

/// The limits of WatchTasks streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchLimits {
    /// `TASK_WATCH_MAX_STREAMS_PER_USER`: open streams per user (a few devices, a few tabs).
    pub per_user: usize,
    /// `TASK_WATCH_MAX_STREAMS`: open streams per process.
    pub per_process: usize,
    /// `TASK_WATCH_BOOKMARK_INTERVAL`: how often an idle stream gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// `TASK_WATCH_MAX_AGE`: streams end (UNAVAILABLE) after this, so clients rebalance.
    pub max_age: Duration,
    /// Events buffered for a stream before the server waits for the client to read.
    pub buffer: usize,
    /// How long the server waits for a client that does not read before ending its stream.
    pub slow_consumer: Duration,
}

impl Default for WatchLimits {
    fn default() -> Self {
        Self {
            per_user: 16,
            per_process: 20_000,
            bookmark_interval: Duration::from_secs(30),
            max_age: Duration::from_secs(30 * 60),
            buffer: 64,
            slow_consumer: Duration::from_secs(10),
        }
    }
}

pub type Event = Result<pb::WatchTasksResponse, Status>;

/// The response stream: buffered events, unless the server ended the stream with a status,
/// which then goes out at once, ahead of whatever is still buffered.
///
/// Events are boxed in the channel: tokio's bounded channel allocates its slots in blocks of
/// 32 when it is created, and 32 unboxed events (232 bytes each) would cost every idle stream
/// 7 KiB; boxed, the block is 256 bytes.
pub struct WatchStream {
    events: mpsc::Receiver<Box<pb::WatchTasksResponse>>,
    end: oneshot::Receiver<Status>,
    ended: bool,
}

impl Stream for WatchStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(Ok(status)) = Pin::new(&mut self.end).poll(cx) {
            self.ended = true;
            return Poll::Ready(Some(Err(status)));
        }
        self.events.poll_recv(cx).map(|event| event.map(|event| Ok(*event)))
    }
}

pub struct Watchers {
    store: Arc<dyn Store>,
    tokens: ResumeTokens,
    hub: Arc<Hub>,
    revocations: Arc<Revocations>,
    lifecycle: watch::Receiver<Published>,
    limits: WatchLimits,
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_user: HashMap<Uuid, usize>,
}

/// One open stream's place in the limits, given back when the stream ends.
struct Slot {
    open: Arc<Mutex<Open>>,
    user: Uuid,
    hub: Arc<Hub>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_user.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_user.remove(&self.user);
            }
        }
        drop(open);
        self.hub.release(self.user);
    }
}

impl Watchers {
    /// Registers `todo_watch_streams_open`, read when scraped.
    pub fn register_metrics(&self, metrics: &todo_shared::metrics::Metrics) {
        let open = Arc::clone(&self.open);
        metrics.sample(todo_shared::metrics::Sampled::gauge(
            "todo_watch_streams_open",
            "WatchTasks streams open on this process.",
            move || open.lock().unwrap_or_else(|p| p.into_inner()).total as f64,
        ));
        let max = self.limits.per_process as f64;
        metrics.sample(todo_shared::metrics::Sampled::gauge(
            "todo_watch_streams_max",
            "The limit on open WatchTasks streams (TASK_WATCH_MAX_STREAMS); beyond it, RESOURCE_EXHAUSTED.",
            move || max,
        ));
    }

    pub fn new(
        store: Arc<dyn Store>,
        tokens: ResumeTokens,
        hub: Arc<Hub>,
        revocations: Arc<Revocations>,
        lifecycle: watch::Receiver<Published>,
        limits: WatchLimits,
    ) -> Self {
        Self { store, tokens, hub, revocations, lifecycle, limits, open: Arc::default() }
    }

    fn take_slot(&self, user: Uuid) -> Result<Slot, Error> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.limits.per_process {
            return Err(Error::TooManyStreams("this server has as many watch streams as it allows: retry shortly"));
        }
        let mine = open.per_user.entry(user).or_insert(0);
        if *mine >= self.limits.per_user {
            return Err(Error::TooManyStreams("too many watch streams for this user: close one first"));
        }
        *mine += 1;
        open.total += 1;
        Ok(Slot { open: Arc::clone(&self.open), user, hub: Arc::clone(&self.hub) })
    }

    /// Opens a stream for `caller`, from the start (`resume_token` empty) or after a token.
    pub async fn open(&self, caller: AuthenticatedUser, resume_token: &str) -> Result<WatchStream, Error> {
        let user = caller.id;
        let after = if resume_token.is_empty() {
            None
        } else {
            let position = self.tokens.decode(user, resume_token).map_err(|e| {
                Error::from(todo_shared::validation::FieldViolations::single("resume_token", e.to_string()))
            })?;
            Some(position)
        };
        let slot = self.take_slot(user)?;
        if let Some(position) = after {
            let bounds = self.store.bounds(user).await?;
            let pruned = bounds.head > position && bounds.oldest.is_none_or(|oldest| oldest > position + 1);
            if position > bounds.head || pruned {
                return Err(Error::ResumeTokenExpired);
            }
        }
        // Subscribed before the first read: a change committed after it wakes the stream.
        let wakeups = self.hub.subscribe(user);
        let (tx, events) = mpsc::channel(self.limits.buffer);
        let (end_tx, end) = oneshot::channel();
        let follow = Follow {
            store: Arc::clone(&self.store),
            tokens: self.tokens.clone(),
            revocations: Arc::clone(&self.revocations),
            lifecycle: self.lifecycle.clone(),
            limits: self.limits.clone(),
            caller,
            tx,
            end: Some(end_tx),
            wakeups,
            _slot: slot,
        };
        tracing::debug!(user_id = %user, resuming = after.is_some(), "watch stream opened");
        tokio::spawn(follow.run(after));
        Ok(WatchStream { events, end, ended: false })
    }
}

/// Why a stream ended early, as the status its client gets.
enum Ending {
    Status(Status),
    /// The client went away.
    Gone,
}

struct Follow {
    store: Arc<dyn Store>,
    tokens: ResumeTokens,
    revocations: Arc<Revocations>,
    lifecycle: watch::Receiver<Published>,
    limits: WatchLimits,
    caller: AuthenticatedUser,
    tx: mpsc::Sender<Box<pb::WatchTasksResponse>>,
    end: Option<oneshot::Sender<Status>>,
    wakeups: crate::hub::Wakeups,
    _slot: Slot,
}

fn event(kind: EventType, task: Option<pb::Task>, task_id: String, resume_token: String) -> pb::WatchTasksResponse {
    pb::WatchTasksResponse { r#type: kind as i32, task, task_id, resume_token }
}

impl Follow {
    async fn run(mut self, after: Option<i64>) {
        let user = self.caller.id;
        let ending = self.follow(after).await;
        match ending {
            Ending::Gone => tracing::debug!(user_id = %user, "watch stream closed by the client"),
            Ending::Status(status) => {
                if status.code() == tonic::Code::Internal || status.code() == tonic::Code::Unavailable {
                    tracing::info!(user_id = %user, code = ?status.code(), message = status.message(), "watch stream ended");
                } else {
                    tracing::debug!(user_id = %user, code = ?status.code(), "watch stream ended");
                }
                if let Some(end) = self.end.take() {
                    let _ = end.send(status);
                }
            }
        }
    }

    async fn send(&self, event: pb::WatchTasksResponse) -> Result<(), Ending> {
        match tokio::time::timeout(self.limits.slow_consumer, self.tx.send(Box::new(event))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ending::Gone),
            Err(_) => Err(Ending::Status(Status::resource_exhausted(
                "the client read too slowly and the stream's buffer is full: resume from the last resume_token",
            ))),
        }
    }

    fn token(&self, position: i64) -> String {
        self.tokens.encode(self.caller.id, position)
    }

    /// The event of the change at `position`.
    fn message(&self, kind: ChangeKind, position: i64) -> pb::WatchTasksResponse {
        let token = self.token(position);
        match kind {
            ChangeKind::Upserted(task) => {
                let id = task.id.to_string();
                event(EventType::Upserted, Some(task.into()), id, token)
            }
            ChangeKind::Deleted(id) => event(EventType::Deleted, None, id.to_string(), token),
        }
    }

    async fn follow(&mut self, after: Option<i64>) -> Ending {
        match self.follow_inner(after).await {
            Ok(never) => match never {},
            Err(ending) => ending,
        }
    }

    async fn follow_inner(&mut self, after: Option<i64>) -> Result<std::convert::Infallible, Ending> {
        let user = self.caller.id;
        let db = |err: Error| Ending::Status(Status::from(err));
        let mut position = match after {
            Some(position) => position,
            None => {
                let snapshot = self.store.snapshot(user).await.map_err(db)?;
                let token = self.token(snapshot.position);
                for task in snapshot.tasks {
                    let id = task.id.to_string();
                    self.send(event(EventType::Upserted, Some(task.into()), id, token.clone())).await?;
                }
                self.send(event(EventType::Current, None, String::new(), token)).await?;
                snapshot.position
            }
        };
        let started = tokio::time::Instant::now();
        let expires = token_deadline(&self.caller);
        let too_old = started + self.limits.max_age;
        let mut bookmark =
            tokio::time::interval_at(started + self.limits.bookmark_interval, self.limits.bookmark_interval);
        bookmark.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut revoked = self.revocations.subscribe();
        let mut due_bookmark = false;
        // Whether the log must be read before waiting again; `log_reads` is the hub's count of
        // "read the log" wake-ups this stream has acted on.
        let mut read = true;
        let mut log_reads = 0;
        loop {
            if read {
                self.wakeups.all.borrow_and_update();
                log_reads = self.wakeups.user.borrow_and_update().read_log;
                let changes = self.store.changes_after(user, position, BATCH).await.map_err(db)?;
                if changes.first().is_some_and(|first| first.position != position + 1) {
                    // Retention removed changes this stream had not sent yet.
                    return Err(Ending::Status(Error::ResumeTokenExpired.into()));
                }
                let full = changes.len() as i64 == BATCH;
                let sent_any = !changes.is_empty();
                for change in changes {
                    position = change.position;
                    self.send(self.message(change.kind, position)).await?;
                }
                if full {
                    continue;
                }
                if due_bookmark && !sent_any {
                    self.send(event(EventType::Bookmark, None, String::new(), self.token(position))).await?;
                }
                due_bookmark = false;
                read = false;
            }
            tokio::select! {
                _ = self.wakeups.user.changed() => {
                    let latest = self.wakeups.user.borrow_and_update().clone();
                    if latest.read_log != log_reads {
                        read = true;
                    } else if let Some(change) = latest.change.filter(|c| c.position > position) {
                        if change.position == position + 1 {
                            // The next change, handed over by its writer in this process.
                            position = change.position;
                            self.send(self.message(change.kind.clone(), position)).await?;
                        } else {
                            read = true;
                        }
                    }
                }
                _ = self.wakeups.all.changed() => read = true,
                // Read the log before each bookmark: a wake-up that got lost is caught here.
                _ = bookmark.tick() => {
                    due_bookmark = true;
                    read = true;
                }
                // One timer for both deadlines (each timer is state every idle stream carries).
                () = tokio::time::sleep_until(expires.min(too_old)) => {
                    if expires <= too_old {
                        return Err(Ending::Status(AuthError::Token(todo_shared::token::TokenError::Expired).into()));
                    }
                    return Err(Ending::Status(Status::unavailable(
                        "the stream reached its maximum age: resume from the last resume_token",
                    )));
                }
                _ = revoked.changed() => {
                    if let Err(err) = self.revocations.check(&self.caller) {
                        return Err(Ending::Status(err.into()));
                    }
                }
                _ = async { self.lifecycle.wait_for(|state| state.shutting_down).await.is_ok() } => {
                    return Err(Ending::Status(Status::unavailable(
                        "task-service is shutting down: resume from the last resume_token on another instance",
                    )));
                }
                () = self.tx.closed() => return Err(Ending::Gone),
            }
        }
    }
}

/// When the caller's access token stops being accepted (its `exp` plus the clock-skew leeway
/// every verification allows), as an instant of the runtime's clock.
fn token_deadline(caller: &AuthenticatedUser) -> tokio::time::Instant {
    let now_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let until = caller.expires_at.saturating_add(todo_shared::token::LEEWAY.as_secs());
    let left = Duration::from_secs(until.saturating_sub(now_unix));
    // Far enough for any token; `Instant + Duration` must not overflow.
    tokio::time::Instant::now() + left.min(Duration::from_secs(10 * 365 * 24 * 3600))
}
