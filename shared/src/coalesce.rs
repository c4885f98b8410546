//! Point lookups (one row by key), coalesced under load.
//!
//! A lookup by primary key costs PostgreSQL almost nothing; nearly all of its cost is per
//! query: a round trip, the protocol messages, a backend woken on the other side. One lookup
//! at a time runs as its own query, exactly the statement a lone lookup would send. A lookup
//! that arrives while that query is out joins a queue instead, and when the query returns,
//! the whole queue (up to [`MAX_BATCH`]) goes out as one query. An idle or lightly loaded
//! service never waits for a batch to form; a busy one pays the per-query cost once per
//! batch instead of once per call, and the busier it gets the larger the batches.
//!
//! Measured on 2 cores (BENCHMARKS.md), GetTask: +36% at 16 in flight, +62% at 64, with
//! PostgreSQL's CPU per call 30 -> 14 µs and the same latency at 1 in flight; GetCurrentUser
//! +46% / +53%, PostgreSQL 34 -> 11 µs. Two queries
//! at a time instead of one made smaller batches and was 9-16% slower at 16-64 in flight.
//! One query in flight does not cap throughput the way one connection would: the batch
//! grows with the queue.
//!
//! Batches run on spawned tasks, so a caller that goes away (deadline, cancelled RPC) never
//! strands the callers queued behind it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::pg_pool::{PgConn, PgPool};

/// Most lookups one query carries: a queue longer than this is served by several queries.
pub const MAX_BATCH: usize = 128;

/// Queries in flight at once (see the module documentation).
const LANES: usize = 1;

/// One kind of point lookup: its statement alone and its statement for many keys.
pub trait Lookup: Default + Send + Sync + 'static {
    type Key: Copy + Send + Sync + 'static;
    type Row: Clone + Send + 'static;

    /// The statement a lookup sends when it runs alone.
    fn one(
        &self,
        conn: &mut PgConn,
        key: Self::Key,
    ) -> impl Future<Output = Result<Option<Self::Row>, sqlx::Error>> + Send;

    /// One statement for all of `keys`. It may return rows no key asked for (a query over
    /// several owners, say); each caller gets only a row that [`Lookup::answers`] its key.
    fn many(
        &self,
        conn: &mut PgConn,
        keys: &[Self::Key],
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send;

    /// Whether `row` is the answer to `key`.
    fn answers(row: &Self::Row, key: &Self::Key) -> bool;
}

/// Lookups of kind `L` over a pool. Cheap to clone.
pub struct Coalesced<L: Lookup> {
    inner: Arc<Inner<L>>,
}

impl<L: Lookup> Clone for Coalesced<L> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

struct Inner<L: Lookup> {
    lookup: L,
    pool: PgPool,
    state: Mutex<State<L>>,
    /// Queries sent, for tests and for anyone asking how well lookups coalesce.
    queries: AtomicU64,
}

struct State<L: Lookup> {
    free_lanes: usize,
    queue: Vec<Waiting<L>>,
}

/// The answer to one lookup. Shared: one failed query answers every lookup of its batch.
pub type Answer<R> = Result<Option<R>, Arc<sqlx::Error>>;

struct Waiting<L: Lookup> {
    key: L::Key,
    reply: oneshot::Sender<Answer<L::Row>>,
}

impl<L: Lookup> Coalesced<L> {
    pub fn new(pool: PgPool) -> Self {
        Self {
            inner: Arc::new(Inner {
                lookup: L::default(),
                pool,
                state: Mutex::new(State { free_lanes: LANES, queue: Vec::new() }),
                queries: AtomicU64::new(0),
            }),
        }
    }

    /// The row for `key`, or `None`.
    pub async fn get(&self, key: L::Key) -> Answer<L::Row> {
        let queued = {
            let mut state = self.inner.lock();
            if state.free_lanes > 0 {
                state.free_lanes -= 1;
                None
            } else {
                let (reply, answer) = oneshot::channel();
                state.queue.push(Waiting { key, reply });
                Some(answer)
            }
        };
        match queued {
            None => {
                // Dropped on every exit, cancellation included: hands the lane to the queue.
                let _lane = Lane(self.inner.clone());
                self.inner.one(key).await
            }
            // The sender only goes away without an answer when the runtime is shutting down.
            Some(answer) => answer.await.unwrap_or_else(|_| Err(Arc::new(sqlx::Error::PoolClosed))),
        }
    }

    /// How many queries the lookups so far took.
    pub fn queries_sent(&self) -> u64 {
        self.inner.queries.load(Ordering::Relaxed)
    }
}

impl<L: Lookup> Inner<L> {
    fn lock(&self) -> MutexGuard<'_, State<L>> {
        // The state is consistent after every statement that changes it; a panic elsewhere
        // while holding the lock leaves nothing half-done.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next batch for a lane that just finished, or `None` (and the lane is free again).
    fn next_batch_or_release(&self) -> Option<Vec<Waiting<L>>> {
        let mut state = self.lock();
        if state.queue.is_empty() {
            state.free_lanes += 1;
            return None;
        }
        let take = state.queue.len().min(MAX_BATCH);
        Some(state.queue.drain(..take).collect())
    }

    async fn one(&self, key: L::Key) -> Answer<L::Row> {
        let mut conn = self.pool.acquire().await?;
        self.queries.fetch_add(1, Ordering::Relaxed);
        Ok(self.lookup.one(&mut conn, key).await?)
    }

    async fn many(&self, keys: &[L::Key]) -> Result<Vec<L::Row>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.lookup.many(&mut conn, keys).await
    }

    async fn answer(&self, batch: Vec<Waiting<L>>) {
        let batch = match <[Waiting<L>; 1]>::try_from(batch) {
            Ok([one]) => {
                let _ = one.reply.send(self.one(one.key).await);
                return;
            }
            Err(batch) => batch,
        };
        let keys: Vec<L::Key> = batch.iter().map(|w| w.key).collect();
        match self.many(&keys).await {
            Ok(rows) => {
                for waiting in batch {
                    let row = rows.iter().find(|row| L::answers(row, &waiting.key)).cloned();
                    let _ = waiting.reply.send(Ok(row));
                }
            }
            Err(err) => {
                let err = Arc::new(err);
                for waiting in batch {
                    let _ = waiting.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// A lane in use. On drop it serves the queue or becomes free: whoever holds a lane when
/// lookups are queued is the one who serves them, so none waits forever.
struct Lane<L: Lookup>(Arc<Inner<L>>);

impl<L: Lookup> Drop for Lane<L> {
    fn drop(&mut self) {
        if let Some(batch) = self.0.next_batch_or_release() {
            // Lanes are dropped inside tasks; only a runtime being torn down drops one outside,
            // and then the waiters see their sender go away and answer UNAVAILABLE.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                drop(runtime.spawn(serve(self.0.clone(), batch)));
            }
        }
    }
}

/// Answers one batch on the lane it was handed; dropping the lane then serves the next.
async fn serve<L: Lookup>(inner: Arc<Inner<L>>, batch: Vec<Waiting<L>>) {
    let lane = Lane(inner);
    lane.0.answer(batch).await;
}
