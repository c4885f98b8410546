//! Wake-ups for WatchTasks streams. A stream reads the change log from its own position; the
//! hub only tells it when to look again, so a lost wake-up delays an event (until the stream's
//! next bookmark, when it reads the log anyway) but never loses it.
//!
//! Changes made by this process wake its streams directly. On PostgreSQL, every change is also
//! announced with NOTIFY (in the statement that records it), and [`listen`] wakes this
//! process's streams for changes made by other replicas; after the listening connection is
//! lost and re-established, every stream is woken, since notifications sent meanwhile are gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::watch;
use uuid::Uuid;

#[derive(Debug)]
pub struct Hub {
    /// Per user with open streams: a counter bumped on each change.
    users: Mutex<HashMap<Uuid, watch::Sender<u64>>>,
    /// Bumped when every stream must look again (the listener reconnected).
    all: watch::Sender<u64>,
}

impl Default for Hub {
    fn default() -> Self {
        Self { users: Mutex::new(HashMap::new()), all: watch::channel(0).0 }
    }
}

/// What one stream waits on.
pub struct Wakeups {
    pub user: watch::Receiver<u64>,
    pub all: watch::Receiver<u64>,
}

impl Hub {
    pub fn subscribe(&self, user: Uuid) -> Wakeups {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let sender = users.entry(user).or_insert_with(|| watch::channel(0).0);
        Wakeups { user: sender.subscribe(), all: self.all.subscribe() }
    }

    /// Forgets `user`'s entry once no stream of theirs is left.
    pub fn release(&self, user: Uuid) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if users.get(&user).is_some_and(|sender| sender.receiver_count() == 0) {
            users.remove(&user);
        }
    }

    pub fn wake(&self, user: Uuid) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = users.get(&user) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
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
                    if let Ok(user) = Uuid::try_parse(notification.payload()) {
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
