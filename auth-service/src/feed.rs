//! `SessionEventService`: the session-event log, streamed to task-service.
//!
//! A follower's stream reads the log from its own position; [`FeedSignal`] only wakes it.
//! Events this process records wake it at once; events another replica records are noticed
//! by [`watch_head`], which polls the log's head while anyone follows. A missed wake-up
//! delays an event by at most the heartbeat interval, and never loses it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use todo_contract::auth::internal::v1 as pb;
use todo_contract::auth::internal::v1::session_event_service_server::SessionEventService;
use todo_shared::auth::authenticate_service;
use todo_shared::readiness::Readiness;
use todo_shared::token::TokenKeys;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::store::{Change, SessionEvent, Store};

/// Events sent per read of the log.
const BATCH: i64 = 256;
/// A follower hears from the stream at least this often, so it can tell a quiet log from a
/// dead link.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How often the head is polled for other replicas' events: well inside the one-second
/// promise for revocations, and one indexed single-row read per interval per process.
const HEAD_POLL: Duration = Duration::from_millis(250);

/// Wakes the follower streams of this process.
#[derive(Clone, Debug)]
pub struct FeedSignal(Arc<watch::Sender<u64>>);

impl Default for FeedSignal {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl FeedSignal {
    /// The log may have grown.
    pub fn notify(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }

    fn has_followers(&self) -> bool {
        self.0.receiver_count() > 0
    }
}

/// Polls the head of the log while anyone follows, and wakes the followers when it moved.
pub async fn watch_head(store: Arc<dyn Store>, signal: FeedSignal) {
    let mut last = None;
    let mut tick = tokio::time::interval(HEAD_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !signal.has_followers() {
            last = None;
            continue;
        }
        // A database that is down is reported by the supervisor; the followers' own reads
        // fail and they reconnect.
        if let Ok(head) = store.head_position().await
            && last.replace(head).is_some_and(|seen| seen != head)
        {
            signal.notify();
        }
    }
}

pub struct FeedApi {
    /// How long a revocation stays in force (`SessionPolicy::revocation_lifetime`).
    lifetime: Duration,
    store: Arc<dyn Store>,
    keys: Arc<TokenKeys>,
    signal: FeedSignal,
    readiness: Readiness,
}

impl FeedApi {
    pub fn new(
        lifetime: Duration,
        store: Arc<dyn Store>,
        keys: Arc<TokenKeys>,
        signal: FeedSignal,
        readiness: Readiness,
    ) -> Self {
        Self { lifetime, store, keys, signal, readiness }
    }
}

fn to_proto(event: SessionEvent, lifetime: Duration) -> pb::FollowSessionEventsResponse {
    let lifetime = time::Duration::try_from(lifetime).unwrap_or(time::Duration::MAX);
    let expire_time = todo_shared::timestamp::to_proto(event.created_at.saturating_add(lifetime));
    use pb::session_event::Change as Wire;
    let change = match event.change {
        Change::SessionRevoked(session) => Wire::SessionRevoked(pb::SessionRevoked { session_id: session.to_string() }),
        Change::TokensRevoked { not_before } => {
            Wire::TokensRevoked(pb::TokensRevoked { not_before: Some(todo_shared::timestamp::to_proto(not_before)) })
        }
        Change::AccountDeleted => Wire::AccountDeleted(pb::AccountDeleted {}),
    };
    let event = pb::SessionEvent {
        position: event.position,
        user_id: event.user_id.to_string(),
        create_time: Some(todo_shared::timestamp::to_proto(event.created_at)),
        change: Some(change),
        expire_time: Some(expire_time),
    };
    pb::FollowSessionEventsResponse { kind: Some(pb::follow_session_events_response::Kind::Event(event)) }
}

fn heartbeat(position: i64) -> pb::FollowSessionEventsResponse {
    pb::FollowSessionEventsResponse {
        kind: Some(pb::follow_session_events_response::Kind::Heartbeat(pb::Heartbeat { position })),
    }
}

type Sent = Result<pb::FollowSessionEventsResponse, Status>;

#[tonic::async_trait]
impl SessionEventService for FeedApi {
    type FollowSessionEventsStream = Pin<Box<dyn Stream<Item = Sent> + Send>>;

    async fn follow_session_events(
        &self,
        request: Request<pb::FollowSessionEventsRequest>,
    ) -> Result<Response<Self::FollowSessionEventsStream>, Status> {
        let service = authenticate_service(&self.keys, request.metadata())?;
        let after = request.into_inner().after_position;
        if after < 0 {
            return Err(Status::invalid_argument("after_position must be 0 or a position the feed sent"));
        }
        tracing::info!(%service, after, "session-event follower connected");
        let (tx, rx) = mpsc::channel(64);
        let follow = Follow {
            store: Arc::clone(&self.store),
            wake: self.signal.subscribe(),
            lifecycle: self.readiness.subscribe(),
            tx,
            position: after,
            lifetime: self.lifetime,
        };
        tokio::spawn(follow.run());
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One follower's stream.
struct Follow {
    store: Arc<dyn Store>,
    wake: watch::Receiver<u64>,
    lifecycle: watch::Receiver<todo_shared::readiness::Published>,
    tx: mpsc::Sender<Sent>,
    position: i64,
    lifetime: Duration,
}

impl Follow {
    async fn run(mut self) {
        loop {
            self.wake.borrow_and_update();
            let batch = match self.store.events_after(self.position, BATCH).await {
                Ok(batch) => batch,
                Err(err) => {
                    let _ = self.tx.send(Err(Status::from(err))).await;
                    return;
                }
            };
            let full = batch.len() as i64 == BATCH;
            for event in batch {
                self.position = event.position;
                if self.tx.send(Ok(to_proto(event, self.lifetime))).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            if self.tx.send(Ok(heartbeat(self.position))).await.is_err() {
                return;
            }
            tokio::select! {
                _ = self.wake.changed() => {}
                () = tokio::time::sleep(HEARTBEAT) => {}
                () = self.tx.closed() => return,
                _ = async { self.lifecycle.wait_for(|state| state.shutting_down).await.is_ok() } => {
                    // An open stream would hold the graceful drain: end it, and the follower
                    // reconnects to another replica.
                    let _ = self.tx.send(Err(Status::unavailable("auth-service is shutting down"))).await;
                    return;
                }
            }
        }
    }
}
