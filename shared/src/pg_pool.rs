//! PostgreSQL connections pooled by bb8, lent and taken back without a round trip.
//!
//! sqlx's own pool pings every connection as it comes back (`PoolConnection`'s drop sends a
//! Sync and waits for ReadyForQuery), so each query costs a second round trip and a spawned
//! task. bb8 asks its manager instead, synchronously at check-in (`has_broken`) and at
//! check-out (`is_valid`); [`PgManager`] answers from what it knows of the connection rather
//! than by asking the server:
//!
//! - every query runs through [`PgConn`]'s [`Executor`], which notes when a query starts and
//!   ends and whether it failed at the connection level (I/O, protocol);
//! - a connection returned with a query still running (a cancelled call), after a
//!   connection-level failure, with unsent bytes (a dropped transaction queues its ROLLBACK
//!   unsent), inside a transaction, or marked [`PgConn::retire`] is closed, never lent again,
//!   and PostgreSQL rolls back whatever it held;
//! - a connection-level failure also marks every connection opened before it as stale (after
//!   a restart or a network cut they are all dead), so the next queries connect afresh
//!   instead of each finding a dead socket.
//!
//! Lifetime, idle timeout, the size bound and the acquire timeout are bb8's.

use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::metrics::{Gauge, Histogram, Metrics, Sampled};
use crate::telemetry::LogEvery;
use bb8::ManageConnection;
use futures_core::Stream;
use sqlx::postgres::{PgConnectOptions, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{ConnectOptions, Connection, Either, Execute, Executor, PgConnection, Postgres};

/// Connections are closed this long after they were opened (sqlx's default): server-side
/// memory held by a long-lived backend is returned, and a fail-over is picked up.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Connections unused this long are closed (sqlx's default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type BoxStream<'a, T> = Pin<Box<dyn Stream<Item = T> + Send + 'a>>;

/// A pool of PostgreSQL connections. Cheap to clone.
#[derive(Clone)]
pub struct PostgresPool {
    pool: bb8::Pool<PgManager>,
    shared: Arc<Shared>,
    max_connections: u32,
    /// Callers waiting for a connection now (bb8 counts waits, not waiters).
    waiting: Gauge,
    /// Seconds each loan took, the wait for a new connection included.
    acquire_seconds: Histogram,
}

/// What the manager and every lent connection share.
#[derive(Debug, Default)]
struct Shared {
    /// Bumped by each connection-level failure; connections opened before it are stale.
    generation: AtomicU64,
    closed: AtomicBool,
}

impl fmt::Debug for PostgresPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.pool.state();
        f.debug_struct("PostgresPool")
            .field("connections", &state.connections)
            .field("idle", &state.idle_connections)
            .finish()
    }
}

impl PostgresPool {
    /// A pool that connects on first use.
    pub fn new(options: PgConnectOptions, max_connections: u32, acquire_timeout: Duration) -> Self {
        let shared = Arc::new(Shared::default());
        let manager = PgManager { options, shared: shared.clone() };
        let pool = bb8::Pool::builder()
            .max_size(max_connections.max(1))
            .connection_timeout(acquire_timeout)
            .max_lifetime(MAX_LIFETIME)
            .idle_timeout(IDLE_TIMEOUT)
            // `is_valid` asks no server: it only drops connections known to be stale.
            .test_on_check_out(true)
            // The most recently used first, so a quiet service keeps a few connections warm
            // and lets the rest reach the idle timeout.
            .queue_strategy(bb8::QueueStrategy::Lifo)
            // bb8 connects in the background and a waiting caller only sees a timeout: the
            // reason (refused, bad password, no such database) is logged here.
            .error_sink(Box::new(ConnectErrorLog::default()))
            .build_unchecked(manager);
        Self {
            pool,
            shared,
            max_connections: max_connections.max(1),
            waiting: Gauge::default(),
            acquire_seconds: Histogram::new(ACQUIRE_BUCKETS),
        }
    }

    /// Lends a connection: an idle one if there is one, else a new one. Fails with
    /// `PoolTimedOut` when none is ready within the acquire timeout (the connect included), and
    /// with `PoolClosed` after [`PostgresPool::close`].
    pub async fn acquire(&self) -> Result<PgConn, sqlx::Error> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed);
        }
        let _waiting = Waiting::new(&self.waiting);
        let started = std::time::Instant::now();
        let loan = self.pool.get_owned().await;
        self.acquire_seconds.observe(started.elapsed().as_secs_f64());
        match loan {
            Ok(conn) => Ok(PgConn(conn)),
            Err(bb8::RunError::User(err)) => Err(err),
            Err(bb8::RunError::TimedOut) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    /// Registers the pool's figures: connections open and idle, its size, callers waiting,
    /// the time each loan took, and loans that timed out.
    pub fn register_metrics(&self, metrics: &Metrics) {
        let pool = self.pool.clone();
        metrics.sample(Sampled::gauge("todo_db_pool_connections", "Database connections open.", move || {
            f64::from(pool.state().connections)
        }));
        let pool = self.pool.clone();
        metrics.sample(Sampled::gauge(
            "todo_db_pool_idle_connections",
            "Open database connections not lent.",
            move || f64::from(pool.state().idle_connections),
        ));
        let max_size = f64::from(self.max_connections);
        metrics.sample(Sampled::gauge(
            "todo_db_pool_max_connections",
            "The pool's size limit (DATABASE_MAX_CONNECTIONS).",
            move || max_size,
        ));
        metrics.register("todo_db_pool_waiting", "Callers waiting for a database connection.", self.waiting.clone());
        metrics.register(
            "todo_db_pool_acquire_seconds",
            "Time to get a database connection from the pool (connecting included), in seconds.",
            self.acquire_seconds.clone(),
        );
        let pool = self.pool.clone();
        metrics.sample(Sampled::counter(
            "todo_db_pool_acquire_timeouts",
            "Loans that found no connection within the acquire timeout (answered UNAVAILABLE).",
            move || pool.state().statistics.get_timed_out,
        ));
    }

    pub fn idle_count(&self) -> usize {
        self.pool.state().idle_connections as usize
    }

    /// Marks every connection opened so far as stale (a ping failed on one of them, so they
    /// are presumed dead): idle ones are dropped when next taken, lent ones when they return.
    pub fn forget_idle(&self) {
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Refuses new loans and closes the idle connections; lent ones close when returned.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        // bb8 has no close: each idle connection taken out is refused on its way back.
        while self.idle_count() > 0 {
            match tokio::time::timeout(Duration::from_millis(100), self.pool.get()).await {
                Ok(Ok(conn)) => drop(conn),
                _ => break,
            }
        }
    }
}

/// Acquire times: from a warm loan (microseconds) to the 2 s acquire timeout.
const ACQUIRE_BUCKETS: [f64; 12] = [0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5];

/// Counts a caller as waiting for as long as it lives (a cancelled acquire included).
struct Waiting<'a>(&'a Gauge);

impl<'a> Waiting<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Logs why connecting failed, at most once per 10 s: bb8 retries in the background while
/// the database is down, several times a second.
#[derive(Debug, Clone)]
struct ConnectErrorLog(LogEvery);

impl Default for ConnectErrorLog {
    fn default() -> Self {
        Self(LogEvery::new(Duration::from_secs(10)))
    }
}

impl bb8::ErrorSink<sqlx::Error> for ConnectErrorLog {
    fn sink(&self, error: sqlx::Error) {
        if self.0.due() {
            tracing::warn!(error = %error, "cannot connect to PostgreSQL; retrying");
        }
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<sqlx::Error>> {
        Box::new(self.clone())
    }
}

/// bb8's view of a PostgreSQL server.
pub struct PgManager {
    options: PgConnectOptions,
    shared: Arc<Shared>,
}

/// A connection with what the pool needs to know about it.
pub struct Tracked {
    conn: PgConnection,
    generation: u64,
    /// A query started and has not finished: returned now, the connection is mid-protocol.
    busy: bool,
    /// A query failed at the connection level: the connection is unusable.
    broken: bool,
    /// Close rather than lend again.
    retire: bool,
    shared: Arc<Shared>,
}

impl ManageConnection for PgManager {
    type Connection = Tracked;
    type Error = sqlx::Error;

    async fn connect(&self) -> Result<Tracked, sqlx::Error> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        let conn = self.options.connect().await?;
        Ok(Tracked { conn, generation, busy: false, broken: false, retire: false, shared: self.shared.clone() })
    }

    async fn is_valid(&self, conn: &mut Tracked) -> Result<(), sqlx::Error> {
        // Once closed, only `close` takes connections out, to drop them: refusing one here
        // would make bb8 open a new connection in its place.
        let closed = self.shared.closed.load(Ordering::Acquire);
        if !closed && self.is_stale(conn) { Err(sqlx::Error::PoolClosed) } else { Ok(()) }
    }

    fn has_broken(&self, conn: &mut Tracked) -> bool {
        // `should_flush`: bytes queued but unsent, e.g. the ROLLBACK a dropped transaction
        // leaves behind. Lending such a connection would keep that transaction's locks until
        // its next use.
        conn.busy
            || conn.broken
            || conn.retire
            || conn.conn.should_flush()
            || conn.conn.is_in_transaction()
            || self.is_stale(conn)
    }
}

impl PgManager {
    fn is_stale(&self, conn: &Tracked) -> bool {
        self.shared.closed.load(Ordering::Acquire) || conn.generation < self.shared.generation.load(Ordering::Acquire)
    }
}

/// A lent connection. Run queries with `&mut conn` as the executor, or open a transaction
/// with `conn.begin()` (through `DerefMut`). Dropping it returns the connection to the pool,
/// which closes it unless it is known to be clean.
pub struct PgConn(bb8::PooledConnection<'static, PgManager>);

impl fmt::Debug for PgConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConn").field("busy", &self.0.busy).field("broken", &self.0.broken).finish_non_exhaustive()
    }
}

impl PgConn {
    /// Closes this connection when returned instead of lending it again: for work that may
    /// leave session state behind (migrations take a session-level advisory lock, which an
    /// error midway would leave held).
    pub fn retire(&mut self) {
        self.0.retire = true;
    }

    /// Opens a transaction. Through here rather than `PgConnection::begin`: sqlx counts the
    /// transaction only once BEGIN's answer arrives, so a call cancelled while waiting for it
    /// would otherwise return a connection that looks clean with a transaction open on the
    /// server (transact-rs/sqlx#4393), and every later autocommit write on it would be lost.
    pub async fn begin(&mut self) -> Result<sqlx::Transaction<'_, Postgres>, sqlx::Error> {
        let (conn, busy, broken, shared) = self.parts();
        *busy = true;
        match conn.begin().await {
            Ok(transaction) => {
                *busy = false;
                Ok(transaction)
            }
            // Left busy: whatever BEGIN did, the connection is not lent again.
            Err(err) => {
                note_failure(&err, broken, shared);
                Err(err)
            }
        }
    }

    /// The connection and its two flags, borrowed separately.
    fn parts(&mut self) -> (&mut PgConnection, &mut bool, &mut bool, &Shared) {
        let tracked = &mut *self.0;
        (&mut tracked.conn, &mut tracked.busy, &mut tracked.broken, &tracked.shared)
    }
}

impl Deref for PgConn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.0.conn
    }
}

impl DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.0.conn
    }
}

/// Notes a query's outcome: a connection-level failure breaks this connection and makes every
/// connection opened before it stale.
fn note_failure(err: &sqlx::Error, broken: &mut bool, shared: &Shared) {
    if matches!(err, sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed) {
        *broken = true;
        shared.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl<'c> Executor<'c> for &'c mut PgConn {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let (conn, busy, broken, shared) = self.parts();
        *busy = true;
        Box::pin(TrackedStream { inner: conn.fetch_many(query), busy, broken, shared })
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        Box::pin(async move {
            let (conn, busy, broken, shared) = self.parts();
            *busy = true;
            let result = conn.fetch_optional(query).await;
            *busy = false;
            if let Err(err) = &result {
                note_failure(err, broken, shared);
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
            let (conn, busy, broken, shared) = self.parts();
            *busy = true;
            let result = conn.prepare_with(sql, parameters).await;
            *busy = false;
            if let Err(err) = &result {
                note_failure(err, broken, shared);
            }
            result
        })
    }
}

/// A query's result stream that keeps its connection's flags current: busy until the stream
/// ends or fails, broken on a connection-level error.
struct TrackedStream<'e, S> {
    inner: S,
    busy: &'e mut bool,
    broken: &'e mut bool,
    shared: &'e Shared,
}

impl<S, T> Stream for TrackedStream<'_, S>
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
                let this = &mut *self;
                note_failure(err, this.broken, this.shared);
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(item)
    }
}
