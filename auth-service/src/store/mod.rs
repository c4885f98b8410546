//! Persistence of accounts: a trait of domain operations, one implementation per backend.

mod postgres;
mod sqlite;

use std::sync::Arc;

use time::OffsetDateTime;
use todo_shared::db::{MigrationFile, Migrations, Pool};
use uuid::Uuid;

use crate::domain::{Email, User};
use crate::error::Error;

/// The schema, embedded in the binary and applied at start-up.
pub static MIGRATIONS: Migrations = Migrations {
    table: "_auth_service_migrations",
    postgres: &[MigrationFile {
        version: 1,
        description: "create users",
        sql: include_str!("../../migrations/postgres/0001_create_users.sql"),
    }],
    sqlite: &[MigrationFile {
        version: 1,
        description: "create users",
        sql: include_str!("../../migrations/sqlite/0001_create_users.sql"),
    }],
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

/// The store for the pool's backend.
pub fn for_pool(pool: &Pool) -> Arc<dyn UserStore> {
    match pool {
        Pool::Postgres(pool) => Arc::new(postgres::PgUserStore::new(pool.clone())),
        Pool::Sqlite(pool) => Arc::new(sqlite::SqliteUserStore::new(pool.clone())),
    }
}

/// Maps the unique violation of `users.email` to [`Error::EmailTaken`].
fn map_insert_error(err: sqlx::Error) -> Error {
    match todo_shared::db::classify(&err) {
        todo_shared::db::Failure::UniqueViolation => Error::EmailTaken,
        _ => Error::from(err),
    }
}
