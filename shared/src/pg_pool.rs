//! A PostgreSQL connection pool that lends and takes back connections without a round trip.
//!
//! sqlx's own pool pings every connection as it comes back (`PoolConnection`'s drop spawns a
//! task that sends a Sync and waits for ReadyForQuery), so each query costs two round trips
//! and a task. Measured with todo-bench against a sqlx-core patched to skip that ping:
//! +9% GetTask, +14% CreateTask, +19% UpdateTask at 16 in flight, with PostgreSQL spending
//! 5-11 µs less CPU per call. The ping exists to catch connections left in a bad state; this
//! pool knows that state instead of asking the server:
//!
//! - every query runs through [`PgConn`]'s [`Executor`], which notes when a query starts and
//!   ends and whether it failed at the connection level (I/O, protocol);
//! - a connection whose query was cancelled midway, that failed at the connection level, that
//!   has unsent bytes (a dropped transaction queues its ROLLBACK unsent) or an open
//!   transaction is closed, never lent again: PostgreSQL rolls back whatever it held;
//! - a connection-level failure also drops the idle connections (after a restart or a network
//!   cut they are all dead), so the next queries connect afresh instead of each finding a
//!   dead socket;
//! - connections are retired after [`MAX_LIFETIME`] and after [`IDLE_TIMEOUT`] unused.
//!
//! Everything else is what the services asked of sqlx's pool: at most `max_connections`,
//! connecting lazily, and an acquire that gives up after `acquire_timeout` with
//! [`sqlx::Error::PoolTimedOut`] (UNAVAILABLE to the client).

use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use sqlx::postgres::{PgConnectOptions, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{ConnectOptions, Connection, Either, Execute, Executor, PgConnection, Postgres};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections are closed this long after they were opened (sqlx's default): server-side
/// memory held by a long-lived backend is returned, and a fail-over is picked up.
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Connections unused this long are closed (sqlx's default).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Longest wait for a graceful close (the Terminate message) before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type BoxStream<'a, T> = Pin<Box<dyn Stream<Item = T> + Send + 'a>>;

/// A pool of PostgreSQL connections. Cheap to clone.
#[derive(Clone)]
pub struct PgPool {
    inner: Arc<Inner>,
}

struct Inner {
    options: PgConnectOptions,
    acquire_timeout: Duration,
    /// One permit per connection that may exist (lent or idle).
    permits: Arc<Semaphore>,
    /// Most recently used last: lending from the end keeps a few connections warm and lets the
    /// rest age out.
    idle: Mutex<Vec<Idle>>,
    closed: AtomicBool,
}

struct Idle {
    conn: PgConnection,
    opened: Instant,
    since: Instant,
}

impl fmt::Debug for PgPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgPool")
            .field("max_connections", &self.inner.permits.available_permits())
            .field("idle", &self.idle_count())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl PgPool {
    /// A pool that connects on first use.
    pub fn new(options: PgConnectOptions, max_connections: u32, acquire_timeout: Duration) -> Self {
        let max = usize::try_from(max_connections.max(1)).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        Self {
            inner: Arc::new(Inner {
                options,
                acquire_timeout,
                permits: Arc::new(Semaphore::new(max)),
                idle: Mutex::new(Vec::with_capacity(max)),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Lends a connection: an idle one if there is one, else a new one. Fails with
    /// `PoolTimedOut` when none is free within the acquire timeout (the connect included), with
    /// the connect error when the database refuses, and with `PoolClosed` after [`close`].
    ///
    /// [`close`]: PgPool::close
    pub async fn acquire(&self) -> Result<PgConn, sqlx::Error> {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + inner.acquire_timeout;
        if inner.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed);
        }
        let permit = tokio::time::timeout_at(deadline, inner.permits.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        while let Some(idle) = self.pop_idle() {
            if idle.opened.elapsed() < MAX_LIFETIME && idle.since.elapsed() < IDLE_TIMEOUT {
                return Ok(PgConn::new(idle.conn, idle.opened, self.inner.clone(), permit));
            }
            close_in_background(idle.conn);
        }
        let conn = tokio::time::timeout_at(deadline, inner.options.connect())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        Ok(PgConn::new(conn, Instant::now(), self.inner.clone(), permit))
    }

    /// Closes the idle connections that have outlived [`MAX_LIFETIME`] or [`IDLE_TIMEOUT`].
    /// Lending checks too; this catches the ones a quiet pool never reaches.
    pub fn retire_expired(&self) {
        let expired: Vec<Idle> = {
            let mut idle = self.inner.lock_idle();
            let (keep, expired) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|i| i.opened.elapsed() < MAX_LIFETIME && i.since.elapsed() < IDLE_TIMEOUT);
            *idle = keep;
            expired
        };
        for idle in expired {
            close_in_background(idle.conn);
        }
    }

    /// Drops every idle connection (they are presumed dead: the database failed a ping).
    pub fn forget_idle(&self) {
        self.inner.forget_idle();
    }

    pub fn idle_count(&self) -> usize {
        self.inner.lock_idle().len()
    }

    /// Refuses new loans, and closes the idle connections; lent ones close when returned.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.permits.close();
        let idle = std::mem::take(&mut *self.inner.lock_idle());
        for idle in idle {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, idle.conn.close()).await;
        }
    }

    fn pop_idle(&self) -> Option<Idle> {
        self.inner.lock_idle().pop()
    }
}

impl Inner {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic while holding the lock cannot leave the list inconsistent (push/pop/take).
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn forget_idle(&self) {
        let idle = std::mem::take(&mut *self.lock_idle());
        // Dropped, not closed: a dead socket would only make the Terminate wait.
        drop(idle);
    }
}

fn close_in_background(conn: PgConnection) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close()).await;
        });
    }
}

/// A lent connection. Run queries with `&mut conn` as the executor, or open a transaction
/// with `conn.begin()` (through `DerefMut`). Dropping it returns the connection to the pool
/// when it is known to be clean, and closes it otherwise.
pub struct PgConn {
    conn: Option<PgConnection>,
    opened: Instant,
    /// A query started and has not finished: dropped now, the connection is mid-protocol.
    busy: bool,
    /// A query failed at the connection level: the connection is unusable.
    broken: bool,
    /// Close rather than lend again: see [`PgConn::retire`].
    retire: bool,
    pool: Arc<Inner>,
    /// Held until the connection is back in the idle list or closed.
    _permit: OwnedSemaphorePermit,
}

impl fmt::Debug for PgConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConn").field("busy", &self.busy).field("broken", &self.broken).finish_non_exhaustive()
    }
}

impl PgConn {
    fn new(conn: PgConnection, opened: Instant, pool: Arc<Inner>, permit: OwnedSemaphorePermit) -> Self {
        Self { conn: Some(conn), opened, busy: false, broken: false, retire: false, pool, _permit: permit }
    }

    /// Closes this connection when dropped instead of lending it again: for work that may
    /// leave session state behind (migrations take a session-level advisory lock, which an
    /// error midway would leave held).
    pub fn retire(&mut self) {
        self.retire = true;
    }

    /// The connection and the two flags, borrowed separately.
    fn parts(&mut self) -> Result<(&mut PgConnection, &mut bool, &mut bool), sqlx::Error> {
        match self.conn.as_mut() {
            Some(conn) => Ok((conn, &mut self.busy, &mut self.broken)),
            None => Err(sqlx::Error::PoolClosed),
        }
    }
}

impl Deref for PgConn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        // Only `Drop` takes the connection out.
        self.conn.as_ref().unwrap_or_else(|| unreachable!("PgConn used after drop"))
    }
}

impl DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().unwrap_or_else(|| unreachable!("PgConn used after drop"))
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.broken {
            self.pool.forget_idle();
            return;
        }
        // `should_flush`: bytes queued but unsent, e.g. the ROLLBACK a dropped transaction
        // leaves behind. Lending such a connection would keep that transaction's locks until
        // its next use.
        let clean = !self.busy && !self.retire && !conn.should_flush() && !conn.is_in_transaction();
        if !clean || self.pool.closed.load(Ordering::Acquire) || self.opened.elapsed() >= MAX_LIFETIME {
            close_in_background(conn);
            return;
        }
        self.pool.lock_idle().push(Idle { conn, opened: self.opened, since: Instant::now() });
    }
}

/// Failures after which the connection cannot be trusted with another query.
fn is_connection_failure(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed)
}

impl<'c> Executor<'c> for &'c mut PgConn {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        match self.parts() {
            Ok((conn, busy, broken)) => {
                *busy = true;
                Box::pin(Tracked { inner: conn.fetch_many(query), busy, broken })
            }
            Err(err) => Box::pin(Once(Some(Err(err)))),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        Box::pin(async move {
            let (conn, busy, broken) = self.parts()?;
            *busy = true;
            let result = conn.fetch_optional(query).await;
            *busy = false;
            if let Err(err) = &result {
                *broken |= is_connection_failure(err);
            }
            result
        })
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            let (conn, busy, broken) = self.parts()?;
            *busy = true;
            let result = conn.prepare_with(sql, parameters).await;
            *busy = false;
            if let Err(err) = &result {
                *broken |= is_connection_failure(err);
            }
            result
        })
    }
}

/// A query's result stream that keeps its connection's flags current: busy until the stream
/// ends or fails, broken on a connection-level error.
struct Tracked<'e, S> {
    inner: S,
    busy: &'e mut bool,
    broken: &'e mut bool,
}

impl<S, T> Stream for Tracked<'_, S>
where
    S: Stream<Item = Result<T, sqlx::Error>> + Unpin,
{
    type Item = Result<T, sqlx::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(Pin::new(&mut self.inner).poll_next(cx));
        match &item {
            None => *self.busy = false,
            // An error ends the query (callers stop reading there). A refused statement leaves
            // the session usable: its ReadyForQuery is read before the next query is sent.
            Some(Err(err)) => {
                *self.busy = false;
                *self.broken |= is_connection_failure(err);
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(item)
    }
}

/// A stream of one item.
struct Once<T>(Option<T>);

impl<T: Unpin> Stream for Once<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
        Poll::Ready(self.0.take())
    }
}
