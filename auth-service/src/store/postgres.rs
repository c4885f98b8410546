use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;
use todo_shared::db::PostgresPool;
use uuid::Uuid;

use super::{NewUser, StoredCredentials, UserStore, map_insert_error};
use crate::domain::User;
use crate::error::Error;

pub struct PgStore {
    pub(super) pool: PostgresPool,
}

impl PgStore {
    pub fn new(pool: PostgresPool) -> Self {
        Self { pool }
    }
}

fn user_from_row(row: &PgRow) -> Result<User, sqlx::Error> {
    Ok(User { id: row.try_get("id")?, email: row.try_get("email")?, created_at: row.try_get("created_at")? })
}

#[tonic::async_trait]
impl UserStore for PgStore {
    async fn create_user(&self, user: NewUser) -> Result<User, Error> {
        sqlx::query("INSERT INTO users (id, email, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
            .bind(user.id)
            .bind(user.email.as_str())
            .bind(&user.password_hash)
            .bind(user.created_at)
            .execute(&mut self.pool.acquire().await?)
            .await
            .map_err(map_insert_error)?;
        Ok(User { id: user.id, email: user.email.as_str().to_owned(), created_at: user.created_at })
    }

    async fn find_credentials(&self, email: &str) -> Result<Option<StoredCredentials>, Error> {
        let row = sqlx::query("SELECT id, email, created_at, password_hash FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&mut self.pool.acquire().await?)
            .await?;
        Ok(match row {
            None => None,
            Some(row) => {
                Some(StoredCredentials { user: user_from_row(&row)?, password_hash: row.try_get("password_hash")? })
            }
        })
    }

    async fn find_user(&self, id: Uuid) -> Result<Option<User>, Error> {
        let row = sqlx::query("SELECT id, email, created_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut self.pool.acquire().await?)
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    async fn update_password_hash(&self, id: Uuid, password_hash: &str, at: OffsetDateTime) -> Result<(), Error> {
        sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(password_hash)
            .bind(at)
            .execute(&mut self.pool.acquire().await?)
            .await?;
        Ok(())
    }
}
