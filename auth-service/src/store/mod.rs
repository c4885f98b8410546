//! Persistence of accounts: a trait of domain operations, one implementation per backend.

mod postgres;
mod postgres_sessions;
mod postgres_throttle;
mod sqlite;
mod sqlite_sessions;

use std::sync::Arc;

use time::OffsetDateTime;
use todo_shared::db::{MigrationFile, Migrations, Pool};
use uuid::Uuid;

use crate::domain::{Email, User};
use crate::error::Error;
use crate::refresh_token::RefreshToken;

/// The schema, embedded in the binary and applied at start-up.
pub static MIGRATIONS: Migrations = Migrations {
    table: "_auth_service_migrations",
    postgres: &[
        MigrationFile {
            version: 1,
            description: "create users",
            sql: include_str!("../../migrations/postgres/0001_create_users.sql"),
        },
        MigrationFile {
            version: 2,
            description: "create sessions",
            sql: include_str!("../../migrations/postgres/0002_create_sessions.sql"),
        },
        // SQLite has no counterpart: there the throttle's counts stay in the one process.
        MigrationFile {
            version: 3,
            description: "create throttle",
            sql: include_str!("../../migrations/postgres/0003_create_throttle.sql"),
        },
    ],
    sqlite: &[
        MigrationFile {
            version: 1,
            description: "create users",
            sql: include_str!("../../migrations/sqlite/0001_create_users.sql"),
        },
        MigrationFile {
            version: 2,
            description: "create sessions",
            sql: include_str!("../../migrations/sqlite/0002_create_sessions.sql"),
        },
    ],
};

/// A user about to be stored.
#[derive(Debug)]
pub struct NewUser {
    pub id: Uuid,
    pub email: Email,
    pub password_hash: String,
    pub created_at: OffsetDateTime,
}

/// What Login needs to check a password.
#[derive(Debug)]
pub struct StoredCredentials {
    pub user: User,
    pub password_hash: String,
}

#[tonic::async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Stores a new user. [`Error::EmailTaken`] when the email is in use, decided by the
    /// database's unique constraint so concurrent sign-ups cannot both win.
    async fn create_user(&self, user: NewUser) -> Result<User, Error>;

    /// The account registered under `email` (already normalised), if any.
    async fn find_credentials(&self, email: &str) -> Result<Option<StoredCredentials>, Error>;

    async fn find_user(&self, id: Uuid) -> Result<Option<User>, Error>;

    /// Replaces the password hash (re-hashing with stronger parameters).
    async fn update_password_hash(&self, id: Uuid, password_hash: &str, at: OffsetDateTime) -> Result<(), Error>;
}

/// A session about to be stored, with its first refresh token.
#[derive(Debug)]
pub struct NewSession {
    pub id: Uuid,
    pub user_id: Uuid,
    pub refresh_hash: [u8; 32],
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub user_agent: String,
}

/// A live session, as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: Uuid,
    pub created_at: OffsetDateTime,
    pub last_used_at: OffsetDateTime,
    pub user_agent: String,
}

/// Whose session a refresh token belongs to.
#[derive(Debug, Clone)]
pub struct SessionOwner {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub expires_at: OffsetDateTime,
}

/// What presenting a refresh token did.
#[derive(Debug)]
pub enum Rotation {
    /// It was the current token: `next` replaced it.
    Rotated(SessionOwner),
    /// It was replaced within the reuse grace: here is the session's current token.
    Current(SessionOwner, RefreshToken),
    /// It was replaced before the grace: the session is now revoked.
    Reused(SessionOwner),
    /// Unknown, or its session has expired or ended.
    Invalid,
}

/// The rules a presented refresh token is held to.
#[derive(Debug, Clone, Copy)]
pub struct RefreshRules {
    pub now: OffsetDateTime,
    pub idle_timeout: time::Duration,
    pub reuse_grace: time::Duration,
}

/// Which of a user's sessions to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sessions {
    One(Uuid),
    AllExcept(Option<Uuid>),
}

/// Ending sessions, and what goes with it, in one transaction.
#[derive(Debug)]
pub struct Revocation {
    pub user_id: Uuid,
    pub sessions: Sessions,
    /// Also refuse the user's session-less tokens issued up to now.
    pub sessionless_tokens: bool,
    /// Also replace the password hash (ChangePassword).
    pub new_password_hash: Option<String>,
    pub at: OffsetDateTime,
}

/// One entry of the session-event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    pub position: i64,
    pub user_id: Uuid,
    pub created_at: OffsetDateTime,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    SessionRevoked(Uuid),
    TokensRevoked { not_before: OffsetDateTime },
    AccountDeleted,
}

impl Change {
    fn kind(&self) -> &'static str {
        match self {
            Self::SessionRevoked(_) => "session_revoked",
            Self::TokensRevoked { .. } => "tokens_revoked",
            Self::AccountDeleted => "account_deleted",
        }
    }

    fn from_columns(
        kind: &str,
        session_id: Option<Uuid>,
        not_before: Option<OffsetDateTime>,
    ) -> Result<Self, sqlx::Error> {
        let corrupt = || sqlx::Error::Protocol(format!("session_events row of kind {kind:?} lacks its columns"));
        Ok(match kind {
            "session_revoked" => Self::SessionRevoked(session_id.ok_or_else(corrupt)?),
            "tokens_revoked" => Self::TokensRevoked { not_before: not_before.ok_or_else(corrupt)? },
            "account_deleted" => Self::AccountDeleted,
            _ => return Err(corrupt()),
        })
    }
}

/// Sessions, refresh tokens and the session-event log.
#[tonic::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn create_session(&self, session: NewSession) -> Result<(), Error>;

    /// Presents a refresh token, atomically: concurrent calls with one token are serialised on
    /// its session, so they never fork it into two live tokens.
    async fn rotate_refresh_token(
        &self,
        presented: &RefreshToken,
        next: &RefreshToken,
        rules: RefreshRules,
    ) -> Result<Rotation, Error>;

    /// Whether an access token of `user_id` with this session (or none) issued at `iat`
    /// (seconds) is still honoured: its session is live, or, without one, the account exists
    /// and no user-wide revocation came after it.
    async fn token_is_live(&self, user_id: Uuid, session_id: Option<Uuid>, iat: i64) -> Result<bool, Error>;

    /// The user's live sessions, newest first.
    async fn list_sessions(&self, user_id: Uuid, rules: RefreshRules) -> Result<Vec<SessionInfo>, Error>;

    /// Ends sessions and records the events; returns how many sessions ended.
    async fn revoke(&self, revocation: Revocation) -> Result<u64, Error>;

    /// Deletes the user (and, by cascade, their sessions) and records the event. `false` if
    /// the user was already gone.
    async fn delete_account(&self, user_id: Uuid, at: OffsetDateTime) -> Result<bool, Error>;

    /// Up to `limit` events after `position`, in order.
    async fn events_after(&self, position: i64, limit: i64) -> Result<Vec<SessionEvent>, Error>;

    /// The position of the newest event.
    async fn head_position(&self) -> Result<i64, Error>;

    /// Deletes expired sessions and the events that can no longer refuse any token (older
    /// than `events_before`; account deletions are kept, see the README). Returns the number
    /// of sessions and events deleted.
    async fn prune(&self, rules: RefreshRules, events_before: OffsetDateTime) -> Result<(u64, u64), Error>;
}

/// A throttle key: 128 bits of an HMAC of the limit and the email or address.
pub type ThrottleKey = [u8; 16];

/// One attempt's charge against one GCRA limit.
#[derive(Debug, Clone, Copy)]
pub struct Charge {
    pub key: ThrottleKey,
    /// Spacing of attempts once the burst is spent.
    pub interval: std::time::Duration,
    /// How far ahead of now the key's theoretical arrival time may run.
    pub tolerance: std::time::Duration,
}

/// Which charge was refused, and how long until it would be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    First(std::time::Duration),
    Then(std::time::Duration),
}

/// Throttle counts shared by every replica (PostgreSQL only).
#[tonic::async_trait]
pub trait ThrottleStore: Send + Sync + 'static {
    /// Spends one attempt of `first` and, only if that was allowed, of `then`, in one
    /// atomic statement on the database's clock.
    async fn spend(&self, first: Charge, then: Option<Charge>) -> Result<Option<Refused>, Error>;

    /// Forgets a key's attempts.
    async fn forgive(&self, key: ThrottleKey) -> Result<(), Error>;

    /// Deletes the counts that are back to a full burst; returns how many.
    async fn prune_throttle(&self) -> Result<u64, Error>;
}

/// Everything auth-service stores.
pub trait Store: UserStore + SessionStore {}
impl<T: UserStore + SessionStore> Store for T {}

/// The store for the pool's backend.
pub fn for_pool(pool: &Pool) -> Arc<dyn Store> {
    match pool {
        Pool::Postgres(pool) => Arc::new(postgres::PgStore::new(pool.clone())),
        Pool::Sqlite(pool) => Arc::new(sqlite::SqliteStore::new(pool.clone())),
    }
}

/// Where throttle counts are shared by replicas: PostgreSQL. `None` on SQLite, which has one
/// process and keeps them in its memory.
pub fn shared_throttle(pool: &Pool) -> Option<Arc<dyn ThrottleStore>> {
    match pool {
        Pool::Postgres(pool) => Some(Arc::new(postgres_throttle::PgThrottle::new(pool.clone()))),
        Pool::Sqlite(_) => None,
    }
}

/// Maps the unique violation of `users.email` to [`Error::EmailTaken`].
fn map_insert_error(err: sqlx::Error) -> Error {
    match todo_shared::db::classify(&err) {
        todo_shared::db::Failure::UniqueViolation => Error::EmailTaken,
        _ => Error::from(err),
    }
}

/// How far a reuse-grace answer follows a session's chain of rotated tokens. Rotating more
/// often than this within the grace is no browser's pattern: refuse rather than walk on.
const MAX_CHAIN: usize = 16;

/// What a presented token is, given when it was replaced (if it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presented {
    Current,
    WithinGrace,
    Reused,
}

fn judge(replaced_at: Option<OffsetDateTime>, rules: &RefreshRules) -> Presented {
    match replaced_at {
        None => Presented::Current,
        Some(at) if rules.now - at <= rules.reuse_grace => Presented::WithinGrace,
        Some(_) => Presented::Reused,
    }
}

/// Whether a session has outlived its absolute lifetime or its idle timeout.
fn has_expired(expires_at: OffsetDateTime, last_used_at: OffsetDateTime, rules: &RefreshRules) -> bool {
    rules.now >= expires_at || rules.now - last_used_at >= rules.idle_timeout
}

/// The columns an event is stored in: `(session_id, not_before)`.
fn event_columns(change: &Change) -> (Option<Uuid>, Option<OffsetDateTime>) {
    match change {
        Change::SessionRevoked(session) => (Some(*session), None),
        Change::TokensRevoked { not_before } => (None, Some(*not_before)),
        Change::AccountDeleted => (None, None),
    }
}

/// The events a revocation records, in order.
fn revocation_events(revoked: &[Uuid], revocation: &Revocation) -> Vec<Change> {
    let mut changes: Vec<Change> = revoked.iter().map(|id| Change::SessionRevoked(*id)).collect();
    if revocation.sessionless_tokens {
        changes.push(Change::TokensRevoked { not_before: revocation.at });
    }
    changes
}
