//! Follows auth-service's session-event feed: applies revocations to [`Revocations`], purges
//! the tasks of deleted accounts, and reports whether what it knows is current.
//!
//! Each process replays the log from its start on boot (the log holds exactly what is still in
//! force, plus account deletions), so no revocation is lost across restarts; purges resume from
//! the position stored in the task database, so a deletion made while task-service was down is
//! purged when it comes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use todo_contract::auth::internal::v1 as pb;
use todo_contract::auth::internal::v1::session_event_service_client::SessionEventServiceClient;
use todo_shared::readiness::Readiness;
use todo_shared::tls::client::PeerTls;
use todo_shared::token::TokenKeys;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;
use uuid::Uuid;

use crate::revocations::{Revocation, Revocations};
use crate::store::TaskStore;

/// The health name under which task-service reports the feed.
pub const FEED_HEALTH_NAME: &str = "todo.auth.internal.v1.SessionEventService";
/// The service name in the service token.
const SERVICE: &str = "task-service";
/// auth-service sends a heartbeat every 2 s; three missed ones mean the link is dead even if
/// the connection still looks open (a half-open TCP connection never errors by itself).
const SILENCE_LIMIT: Duration = Duration::from_secs(6);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often staleness is re-evaluated and expired revocations forgotten.
const MONITOR_INTERVAL: Duration = Duration::from_millis(500);

/// When the feed was last heard from, for the staleness policy.
#[derive(Debug)]
pub struct Freshness {
    started: Instant,
    /// Milliseconds since `started` of the last message; `u64::MAX`: never.
    last_heard_ms: AtomicU64,
}

impl Default for Freshness {
    fn default() -> Self {
        Self { started: Instant::now(), last_heard_ms: AtomicU64::new(u64::MAX) }
    }
}

impl Freshness {
    fn heard(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_heard_ms.store(ms, Ordering::Release);
    }

    /// How long since the feed was last heard from, or since start-up if never: how stale
    /// this process's view of revocations may be.
    pub fn lag(&self) -> Duration {
        self.silence().unwrap_or_else(|| self.started.elapsed())
    }

    /// How long since the feed was last heard from; `None` if never.
    pub fn silence(&self) -> Option<Duration> {
        let last = self.last_heard_ms.load(Ordering::Acquire);
        (last != u64::MAX).then(|| self.started.elapsed().saturating_sub(Duration::from_millis(last)))
    }
}

pub struct Follower {
    pub endpoint: Endpoint,
    /// TLS to an `https://` auth-service, its files read again for every connection (so a
    /// rotated client certificate is presented from the next one on).
    pub tls: Option<PeerTls>,
    pub keys: Arc<TokenKeys>,
    pub revocations: Arc<Revocations>,
    pub freshness: Arc<Freshness>,
    pub store: Arc<dyn TaskStore>,
    pub readiness: Readiness,
    /// `REVOCATION_MAX_STALENESS`: `None` keeps serving on the last known state.
    pub max_staleness: Option<Duration>,
}

/// Why one connection to the feed ended.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("cannot connect: {}", todo_shared::telemetry::error_chain(.0))]
    Connect(#[from] tonic::transport::Error),
    #[error("{0}")]
    Tls(#[from] todo_shared::config::ConfigError),
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
    #[error("no heartbeat for {} s", SILENCE_LIMIT.as_secs())]
    Silent,
    #[error("the stream ended")]
    Closed,
    #[error("cannot mint a service token: {0}")]
    Mint(#[from] todo_shared::token::MintError),
}

impl Follower {
    /// Runs until the process ends.
    pub fn spawn(self) {
        let required = self.max_staleness.is_some();
        self.readiness.add_dependency(
            FEED_HEALTH_NAME,
            required,
            "cannot confirm that tokens are not revoked: auth-service's session feed is unreachable; retry with back-off",
        );
        let (purges, pending) = mpsc::unbounded_channel();
        tokio::spawn(purge(Arc::clone(&self.store), pending));
        tokio::spawn(monitor(
            Arc::clone(&self.freshness),
            Arc::clone(&self.revocations),
            self.readiness.clone(),
            self.max_staleness,
        ));
        tokio::spawn(self.run(purges));
    }

    async fn run(self, purges: mpsc::UnboundedSender<(i64, Uuid)>) {
        let mut position = 0;
        let mut backoff = Duration::from_millis(100);
        let mut failing = false;
        loop {
            let before = position;
            let ended = self.follow(&mut position, &purges).await;
            if position != before || self.freshness.silence().is_some_and(|s| s < SILENCE_LIMIT) {
                backoff = Duration::from_millis(100);
            }
            // One warning per outage, not one per retry. Before the feed has ever answered
            // (both services starting together), one line at info: health says the rest.
            if !failing && self.freshness.silence().is_none() {
                tracing::info!(error = %ended, "waiting for auth-service's session feed");
                failing = true;
            } else if !failing {
                tracing::warn!(error = %ended, position, "session feed from auth-service lost; reconnecting");
                failing = true;
            } else {
                tracing::debug!(error = %ended, "session feed still unreachable");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if self.freshness.silence().is_some_and(|s| s < SILENCE_LIMIT) {
                failing = false;
            }
        }
    }

    async fn follow(&self, position: &mut i64, purges: &mpsc::UnboundedSender<(i64, Uuid)>) -> Ended {
        match self.follow_inner(position, purges).await {
            Ok(()) => Ended::Closed,
            Err(ended) => ended,
        }
    }

    async fn follow_inner(&self, position: &mut i64, purges: &mpsc::UnboundedSender<(i64, Uuid)>) -> Result<(), Ended> {
        let endpoint = match &self.tls {
            None => self.endpoint.clone(),
            Some(tls) => self.endpoint.clone().tls_config(tls.tonic_config()?)?,
        };
        let channel = endpoint.connect().await?;
        let mut request = tonic::Request::new(pb::FollowSessionEventsRequest { after_position: *position });
        let token = self.keys.mint_service_token(SERVICE)?;
        let bearer = format!("Bearer {token}").parse().map_err(|_| tonic::Status::internal("unprintable token"))?;
        request.metadata_mut().insert("authorization", bearer);
        let mut stream = SessionEventServiceClient::new(channel).follow_session_events(request).await?.into_inner();
        loop {
            let message = tokio::time::timeout(SILENCE_LIMIT, stream.message()).await.map_err(|_| Ended::Silent)??;
            let Some(message) = message else { return Ok(()) };
            match message.kind {
                Some(pb::follow_session_events_response::Kind::Event(event)) => {
                    self.apply(event, position, purges);
                }
                Some(pb::follow_session_events_response::Kind::Heartbeat(heartbeat)) => {
                    if heartbeat.position < *position {
                        // The log is shorter than what was applied: auth-service's database
                        // was replaced. Replay the new one from its start.
                        tracing::warn!(
                            applied = *position,
                            head = heartbeat.position,
                            "session feed went backwards; replaying it from the start"
                        );
                        self.revocations.clear();
                        *position = 0;
                        return Ok(());
                    }
                    if self.freshness.silence().is_none() {
                        tracing::info!(position = *position, "session feed caught up: revocations are current");
                    }
                    self.freshness.heard();
                }
                None => {}
            }
        }
    }

    fn apply(&self, event: pb::SessionEvent, position: &mut i64, purges: &mpsc::UnboundedSender<(i64, Uuid)>) {
        *position = event.position;
        let Ok(user) = Uuid::try_parse(&event.user_id) else {
            tracing::error!(position = event.position, "session event with a malformed user id skipped");
            return;
        };
        let expires = event.expire_time.map_or(i64::MAX, |t| t.seconds);
        let revocation = match event.change {
            Some(pb::session_event::Change::SessionRevoked(revoked)) => match Uuid::try_parse(&revoked.session_id) {
                Ok(session) => Revocation::Session(session),
                Err(_) => {
                    tracing::error!(position = event.position, "session event with a malformed session id skipped");
                    return;
                }
            },
            Some(pb::session_event::Change::TokensRevoked(revoked)) => {
                Revocation::SessionlessTokens { not_before: revoked.not_before.map_or(i64::MAX, |t| t.seconds) }
            }
            Some(pb::session_event::Change::AccountDeleted(_)) => {
                // The receiver lives as long as the process.
                let _ = purges.send((event.position, user));
                Revocation::Account
            }
            None => {
                tracing::warn!(position = event.position, "session event of an unknown kind skipped");
                return;
            }
        };
        self.revocations.apply(user, revocation, expires);
        tracing::debug!(position = event.position, user_id = %user, ?revocation, "session event applied");
    }
}

/// Purges deleted accounts' tasks in log order, retrying while the database is down.
async fn purge(store: Arc<dyn TaskStore>, mut pending: mpsc::UnboundedReceiver<(i64, Uuid)>) {
    let mut done = loop {
        match store.feed_position().await {
            Ok(position) => break position,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    while let Some((position, user)) = pending.recv().await {
        if position <= done {
            continue;
        }
        loop {
            match store.purge_user(user, position).await {
                Ok(tasks) => {
                    tracing::info!(target: "audit", event = "account_tasks_purged", user_id = %user, tasks, position);
                    done = position;
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, user_id = %user, "purging a deleted account's tasks failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Publishes whether the feed is current and forgets expired revocations.
async fn monitor(
    freshness: Arc<Freshness>,
    revocations: Arc<Revocations>,
    readiness: Readiness,
    max_staleness: Option<Duration>,
) {
    let mut tick = tokio::time::interval(MONITOR_INTERVAL);
    let mut current = false;
    let mut said_never = false;
    loop {
        tick.tick().await;
        let silence = freshness.silence();
        let limit = max_staleness.unwrap_or(SILENCE_LIMIT);
        if silence.is_none() && !said_never && freshness.started.elapsed() > limit {
            said_never = true;
            tracing::warn!(
                waited_s = freshness.started.elapsed().as_secs(),
                "auth-service's session feed has not answered since start-up: check AUTH_SERVICE_URL and that auth-service runs"
            );
        }
        let now_current = silence.is_some_and(|s| s <= limit);
        if now_current != current {
            current = now_current;
            readiness.set_dependency_up(current);
            match (current, max_staleness) {
                (true, _) => tracing::info!("session feed current"),
                (false, Some(limit)) => tracing::warn!(
                    limit_s = limit.as_secs(),
                    "session feed stale: refusing RPCs (REVOCATION_MAX_STALENESS) until auth-service is back"
                ),
                (false, None) => tracing::warn!(
                    "session feed stale: serving on the last known revocations until auth-service is back"
                ),
            }
        }
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        revocations.forget_expired(now);
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
