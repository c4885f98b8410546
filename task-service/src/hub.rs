//! Wake-ups for WatchTasks streams. A stream reads the change log from its own position; the
//! hub only tells it when to look again, so a lost wake-up delays an event (until the stream's
//! next bookmark, when it reads the log anyway) but never loses it.
//!
//! A change made in this process also hands its log entry to the user's streams: a stream
//! whose next position it is sends it without reading the log (with 1,000 watchers, that read
//! per change cost the writers a third of their throughput); any other stream, and any wake-up
//! from another replica, reads the log as before.
//!
//! Changes made by this process wake its streams directly. On PostgreSQL, every change is also
//! announced to the other replicas with NOTIFY, after it commits ([`announce`]), and
//! [`listen`] wakes this process's streams for changes made by other replicas; after the
//! listening connection is lost and re-established, every stream is woken, since notifications
//! sent meanwhile are gone.
//!
//! Why not `pg_notify` inside the change's own statement: PostgreSQL makes every committing
//! transaction that has notifications take one database-wide lock and hold it through its
//! commit (the WAL flush included), so notifying writers commit one at a time. Measured
//! (BENCHMARKS.md, "Live sync"), that halved CreateTask and UpdateTask throughput at 16 in
//! flight. Sent after the commit by one task, one NOTIFY carries every user changed since the
//! previous one went out: the lock is taken once per batch, and under load batches grow
//! instead of writers queueing. A change whose announcement is lost (the process dies between
//! the commit and the NOTIFY, or the database refuses it) reaches other replicas' watchers at
//! their next bookmark.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::watch;
use uuid::Uuid;

use crate::store::Change;

#[derive(Debug)]
pub struct Hub {
    /// Per user with open streams: the latest change made here, and a counter of wake-ups
    /// that say "read the log".
    users: Mutex<HashMap<Uuid, watch::Sender<Latest>>>,
    /// Bumped when every stream must look again (the listener reconnected).
    all: watch::Sender<u64>,
    /// Tells the other replicas (PostgreSQL); none on SQLite, which is one process.
    announcer: Option<Arc<Announcer>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(None)
    }
}

/// What one stream waits on.
pub struct Wakeups {
    pub user: watch::Receiver<Latest>,
    pub all: watch::Receiver<u64>,
}

/// The state of one watched user's wake-ups.
#[derive(Debug, Clone, Default)]
pub struct Latest {
    /// Bumped by wake-ups that carry no change (another replica's): streams read the log.
    pub read_log: u64,
    /// The newest change committed by this process, with its position.
    pub change: Option<Arc<Change>>,
}

impl Hub {
    pub fn new(announcer: Option<Arc<Announcer>>) -> Self {
        Self { users: Mutex::new(HashMap::new()), all: watch::channel(0).0, announcer }
    }

    /// A change of `user`'s tasks committed here: hands it to their streams here and tells
    /// the other replicas. `change` is built only if the user has streams here.
    pub fn changed(&self, user: Uuid, change: impl FnOnce() -> Change) {
        {
            let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(sender) = users.get(&user) {
                let change = change();
                // Writers of one user commit in position order but may get here in any order:
                // an older change never replaces a newer one (its streams read the log anyway).
                sender.send_if_modified(|latest| {
                    let newer = latest.change.as_ref().is_none_or(|c| c.position < change.position);
                    if newer {
                        latest.change = Some(Arc::new(change));
                    }
                    newer
                });
            }
        }
        if let Some(announcer) = &self.announcer {
            announcer.add(user);
        }
    }

    pub fn subscribe(&self, user: Uuid) -> Wakeups {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let sender = users.entry(user).or_insert_with(|| watch::channel(Latest::default()).0);
        Wakeups { user: sender.subscribe(), all: self.all.subscribe() }
    }

    /// Forgets `user`'s entry once no stream of theirs is left.
    pub fn release(&self, user: Uuid) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if users.get(&user).is_some_and(|sender| sender.receiver_count() == 0) {
            users.remove(&user);
        }
    }

    /// Tells `user`'s streams to read the log (a change made elsewhere).
    pub fn wake(&self, user: Uuid) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = users.get(&user) {
            sender.send_modify(|latest| latest.read_log = latest.read_log.wrapping_add(1));
        }
    }

    pub fn wake_all(&self) {
        self.all.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// LISTENs for changes announced by any replica on this database, for as long as the process
/// runs, reconnecting after any failure.
pub async fn listen(options: PgConnectOptions, channel: &'static str, hub: Arc<Hub>) {
    // sqlx's listener reconnects through a pool of its own; one connection, never recycled.
    let pool = PgPoolOptions::new().max_connections(1).idle_timeout(None).max_lifetime(None).connect_lazy_with(options);
    let mut announced_loss = false;
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(err) => {
                if !announced_loss {
                    tracing::warn!(error = %err, "cannot LISTEN for task changes; other replicas' changes reach watchers at their next bookmark");
                    announced_loss = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(err) = listener.listen(channel).await {
            tracing::warn!(error = %err, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if announced_loss {
            tracing::info!("listening for task changes again");
            announced_loss = false;
        }
        // Whatever was announced before this LISTEN took effect is unknown: look again.
        hub.wake_all();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    // This replica's own announcements come back too: its streams have them already.
                    // A payload without an origin is a bare id, from a replica of an earlier
                    // release during a rolling upgrade.
                    let (origin, users) =
                        notification.payload().split_once(';').unwrap_or(("", notification.payload()));
                    if hub.announcer.as_ref().is_some_and(|a| a.origin == origin) {
                        continue;
                    }
                    for user in users.split(',').filter_map(|id| Uuid::try_parse(id).ok()) {
                        hub.wake(user);
                    }
                }
                // The connection was lost; sqlx reconnects and LISTENs again on the next call.
                Ok(None) => {
                    tracing::info!("task-change listener reconnecting");
                    hub.wake_all();
                }
                Err(err) => {
                    tracing::warn!(error = %err, "task-change listener failed; reconnecting");
                    hub.wake_all();
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The users whose tasks changed here and whom the other replicas have not been told of yet.
#[derive(Debug)]
pub struct Announcer {
    /// This process's mark on its announcements (random), so it can skip its own.
    origin: String,
    pending: Mutex<HashSet<Uuid>>,
    ready: tokio::sync::Notify,
}

impl Default for Announcer {
    fn default() -> Self {
        Self { origin: Uuid::new_v4().simple().to_string(), pending: Mutex::default(), ready: Default::default() }
    }
}

/// Largest NOTIFY payload sent: PostgreSQL refuses 8,000 bytes and more.
const MAX_PAYLOAD: usize = 7_900;

/// The pause after each announcement: at most this often does a replica NOTIFY, however fast
/// it writes. A NOTIFY per change is a transaction per change (measured, it nearly doubled
/// CreateTask's CPU per call in both task-service and PostgreSQL at 1 in flight); this way
/// other replicas' watchers wait at most this long more, far inside the 100 ms the live-sync
/// target allows, and this replica's own watchers are woken at once regardless.
const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(10);
/// The pause before announcing again after the database refused an announcement.
const ANNOUNCE_RETRY: Duration = Duration::from_secs(1);

impl Announcer {
    fn add(&self, user: Uuid) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(user);
        self.ready.notify_one();
    }

    fn take(&self) -> Vec<Uuid> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner())).into_iter().collect()
    }

    /// Puts back users whose announcement failed, for the next attempt.
    fn retry(&self, users: &[Uuid]) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).extend(users.iter().copied());
        self.ready.notify_one();
    }
}

/// `users` as comma-separated payloads of at most [`MAX_PAYLOAD`] bytes.
/// `origin;user,user,...`: the users as payloads of at most [`MAX_PAYLOAD`] bytes.
fn payloads(origin: &str, users: &[Uuid]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for user in users {
        if !current.is_empty() && current.len() + 1 + 36 > MAX_PAYLOAD {
            out.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current.push_str(origin);
            current.push(';');
        } else {
            current.push(',');
        }
        current.push_str(&user.to_string());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Sends the announcer's users on `channel`, one NOTIFY per batch, for as long as the process
/// runs.
pub async fn announce(options: PgConnectOptions, channel: &'static str, announcer: Arc<Announcer>) {
    let pool = PgPoolOptions::new().max_connections(1).idle_timeout(None).max_lifetime(None).connect_lazy_with(options);
    let mut failing = false;
    loop {
        announcer.ready.notified().await;
        let users = announcer.take();
        let mut failed = false;
        for payload in payloads(&announcer.origin, &users) {
            match sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(&payload).execute(&pool).await {
                Ok(_) if failing => {
                    tracing::info!("announcing task changes to other replicas again");
                    failing = false;
                }
                Ok(_) => {}
                Err(err) => {
                    if !failing {
                        tracing::warn!(
                            error = %err,
                            "cannot announce task changes to other replicas; retrying (their watchers see the changes at their next bookmark meanwhile)"
                        );
                        failing = true;
                    }
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            // The whole batch again (a user told twice reads the log twice, no more).
            announcer.retry(&users);
            tokio::time::sleep(ANNOUNCE_RETRY).await;
        } else {
            tokio::time::sleep(ANNOUNCE_INTERVAL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_hold_every_user_once_in_order_and_stay_under_the_limit() {
        let users: Vec<Uuid> = (0..1000).map(|_| Uuid::new_v4()).collect();
        let sent = payloads("0123456789abcdef0123456789abcdef", &users);
        assert!(sent.len() > 1, "1,000 ids do not fit one payload");
        assert!(sent.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let back: Vec<Uuid> = sent
            .iter()
            .flat_map(|p| {
                let (origin, ids) = p.split_once(';').unwrap();
                assert_eq!(origin, "0123456789abcdef0123456789abcdef");
                ids.split(',').map(|id| Uuid::try_parse(id).unwrap())
            })
            .collect();
        assert_eq!(back, users);
        assert!(payloads("x", &[]).is_empty());
    }
}
