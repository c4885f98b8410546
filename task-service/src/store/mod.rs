//! Persistence of tasks: a trait of domain operations, one implementation per backend.
//! Every query names the owner in its `WHERE`, so no code path can touch another user's task.

/// The columns every task query returns, in the order the row mappers read them.
macro_rules! task_columns {
    () => {
        "id, user_id, title, description, completed, due_time, created_at, updated_at, version"
    };
}

mod postgres;
mod postgres_changes;
pub mod postgres_sql;
mod sqlite;
mod sqlite_changes;

use std::sync::Arc;

use time::OffsetDateTime;
use todo_shared::db::{MigrationFile, Migrations, Pool};
use uuid::Uuid;

use crate::domain::{Task, TaskPatch};
use crate::error::Error;
use crate::page_token::Cursor;

pub static MIGRATIONS: Migrations = Migrations {
    table: "_task_service_migrations",
    postgres: &[
        MigrationFile {
            version: 1,
            description: "create tasks",
            sql: include_str!("../../migrations/postgres/0001_create_tasks.sql"),
        },
        MigrationFile {
            version: 2,
            description: "create requests",
            sql: include_str!("../../migrations/postgres/0002_create_requests.sql"),
        },
        MigrationFile {
            version: 3,
            description: "create auth feed",
            sql: include_str!("../../migrations/postgres/0003_create_auth_feed.sql"),
        },
        MigrationFile {
            version: 4,
            description: "create task changes",
            sql: include_str!("../../migrations/postgres/0004_create_task_changes.sql"),
        },
        MigrationFile {
            version: 5,
            description: "count tasks",
            sql: include_str!("../../migrations/postgres/0005_count_tasks.sql"),
        },
    ],
    sqlite: &[
        MigrationFile {
            version: 1,
            description: "create tasks",
            sql: include_str!("../../migrations/sqlite/0001_create_tasks.sql"),
        },
        MigrationFile {
            version: 2,
            description: "create requests",
            sql: include_str!("../../migrations/sqlite/0002_create_requests.sql"),
        },
        MigrationFile {
            version: 3,
            description: "create auth feed",
            sql: include_str!("../../migrations/sqlite/0003_create_auth_feed.sql"),
        },
        MigrationFile {
            version: 4,
            description: "create task changes",
            sql: include_str!("../../migrations/sqlite/0004_create_task_changes.sql"),
        },
        MigrationFile {
            version: 5,
            description: "count tasks",
            sql: include_str!("../../migrations/sqlite/0005_count_tasks.sql"),
        },
    ],
};

/// A CreateTask `request_id` and the fingerprint of what it asked for.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyKey<'a> {
    pub request_id: &'a str,
    pub fingerprint: [u8; 32],
}

/// What a claimed key says about a replayed request.
fn replay(stored_fingerprint: &[u8], key: &IdempotencyKey<'_>, task: Option<Task>) -> Result<Task, Error> {
    if stored_fingerprint != key.fingerprint {
        return Err(Error::RequestIdReused);
    }
    task.ok_or(Error::CreatedTaskDeleted)
}

/// One page of a listing, in (created_at DESC, id DESC) order.
#[derive(Debug, Clone, Copy)]
pub struct PageQuery {
    pub completed: Option<bool>,
    pub after: Option<Cursor>,
    pub limit: u32,
}

#[tonic::async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Stores a new task and records its change. With an idempotency key, in one transaction
    /// with the key: the first call stores both and returns `task`; a retry stores nothing and
    /// returns the task the key created ([`Error::RequestIdReused`] if the content differs,
    /// [`Error::CreatedTaskDeleted`] if that task is gone). The position is that of the
    /// recorded change (none for a retry, which records nothing).
    /// Inserts `task` unless its user already has `max_tasks` (then [`Error::TaskQuota`]).
    async fn insert_task(
        &self,
        task: &Task,
        key: Option<&IdempotencyKey<'_>>,
        max_tasks: i64,
    ) -> Result<(Task, Option<i64>), Error>;

    async fn get_task(&self, user_id: Uuid, id: Uuid) -> Result<Option<Task>, Error>;

    async fn list_tasks(&self, user_id: Uuid, query: PageQuery) -> Result<Vec<Task>, Error>;

    /// Applies `patch` in one statement that checks owner and version in its `WHERE`, and
    /// records the change; returns the task and the change's position.
    /// [`Error::NotFound`] or [`Error::EtagMismatch`] when it matched nothing.
    async fn update_task(
        &self,
        user_id: Uuid,
        id: Uuid,
        patch: &TaskPatch,
        at: OffsetDateTime,
    ) -> Result<(Task, i64), Error>;

    /// Same rules as [`TaskStore::update_task`]; returns the change's position.
    async fn delete_task(&self, user_id: Uuid, id: Uuid, expected_version: Option<i64>) -> Result<i64, Error>;

    /// Deletes every task (and idempotency key) of a deleted account and records that the
    /// session-event log is handled up to `position`, in one transaction. Returns the number
    /// of tasks deleted.
    async fn purge_user(&self, user_id: Uuid, position: i64) -> Result<u64, Error>;

    /// The position [`TaskStore::purge_user`] last recorded.
    async fn feed_position(&self) -> Result<i64, Error>;
}

/// The PostgreSQL channel on which replicas announce changes to each other (payload: the ids
/// of the users whose tasks changed, comma-separated); see `hub.rs`.
pub const NOTIFY_CHANNEL: &str = "todo_task_changes";

/// One entry of a user's change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The user's change position: 1, 2, 3, ... in commit order, without gaps.
    pub position: i64,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// The task as the change left it.
    Upserted(Task),
    Deleted(Uuid),
}

/// A user's tasks and the position of the change log they reflect.
#[derive(Debug)]
pub struct Snapshot {
    pub position: i64,
    pub tasks: Vec<Task>,
}

/// Where a user's retained change log starts and ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// The user's latest position (0: no change ever).
    pub head: i64,
    /// The oldest retained position, if any change is retained.
    pub oldest: Option<i64>,
}

/// The change log's read side, for WatchTasks.
#[tonic::async_trait]
pub trait ChangeLog: Send + Sync + 'static {
    /// The user's tasks and the log position they reflect, read consistently.
    async fn snapshot(&self, user_id: Uuid) -> Result<Snapshot, Error>;

    /// Up to `limit` changes after `position`, in order.
    async fn changes_after(&self, user_id: Uuid, position: i64, limit: i64) -> Result<Vec<Change>, Error>;

    async fn bounds(&self, user_id: Uuid) -> Result<LogBounds, Error>;

    /// Deletes changes recorded before `before` (retention). Returns how many.
    async fn prune_changes(&self, before: OffsetDateTime) -> Result<u64, Error>;
}

/// Everything task-service stores.
pub trait Store: TaskStore + ChangeLog {}
impl<T: TaskStore + ChangeLog> Store for T {}

pub fn for_pool(pool: &Pool) -> Arc<dyn Store> {
    match pool {
        Pool::Postgres(pool) => Arc::new(postgres::PgTaskStore::new(pool.clone())),
        Pool::Sqlite(pool) => Arc::new(sqlite::SqliteTaskStore::new(pool.clone())),
    }
}

/// Why a conditional change matched no row: the task is the caller's but at another version
/// (ABORTED), or there is no such task of the caller's (NOT_FOUND).
fn no_row_error(current_version: Option<i64>) -> Error {
    match current_version {
        Some(_) => Error::EtagMismatch,
        None => Error::NotFound,
    }
}
