use sqlx::postgres::PgRow;
use sqlx::{Executor, Postgres, Row};
use time::OffsetDateTime;
use todo_shared::db::PostgresPool;
use todo_shared::timestamp::from_unix_micros;
use uuid::Uuid;

use super::postgres_sql as sql;
use super::{IdempotencyKey, PageQuery, TaskStore, no_row_error, replay};

use crate::domain::{Task, TaskPatch};
use crate::error::Error;

pub struct PgTaskStore {
    pub(super) pool: PostgresPool,
}

impl PgTaskStore {
    pub fn new(pool: PostgresPool) -> Self {
        Self { pool }
    }

    async fn current_version(&self, user_id: Uuid, id: Uuid) -> Result<Option<i64>, Error> {
        Ok(sqlx::query_scalar("SELECT version FROM tasks WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .fetch_optional(&mut self.pool.acquire().await?)
            .await?)
    }
}

/// Inserts `task` and its change ([`sql::INSERT_TASK`]): the change's position, or
/// [`Error::TaskQuota`] when its user already has `max_tasks` tasks.
async fn insert_row<'c>(
    conn: impl Executor<'c, Database = Postgres>,
    task: &Task,
    max_tasks: i64,
) -> Result<i64, Error> {
    let position: Option<i64> = sqlx::query_scalar(sql::INSERT_TASK)
        .bind(task.id)
        .bind(task.user_id)
        .bind(&task.title)
        .bind(&task.description)
        .bind(task.completed)
        .bind(task.due_time)
        .bind(task.created_at)
        .bind(task.updated_at)
        .bind(task.version)
        .bind(max_tasks)
        .fetch_optional(conn)
        .await?;
    position.ok_or(Error::TaskQuota { max: max_tasks })
}

/// Reads a row selected with `task_columns!()`, by position: looking each column up by name
/// hashes its name, nine times a row, a hundred rows a page.
pub(super) fn task_from_row(row: &PgRow) -> Result<Task, sqlx::Error> {
    Ok(Task {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        title: row.try_get(2)?,
        description: row.try_get(3)?,
        completed: row.try_get(4)?,
        due_time: row.try_get(5)?,
        created_at: row.try_get(6)?,
        updated_at: row.try_get(7)?,
        version: row.try_get(8)?,
    })
}

#[tonic::async_trait]
impl TaskStore for PgTaskStore {
    async fn insert_task(
        &self,
        task: &Task,
        key: Option<&IdempotencyKey<'_>>,
        max_tasks: i64,
    ) -> Result<(Task, Option<i64>), Error> {
        let Some(key) = key else {
            let position = insert_row(&mut self.pool.acquire().await?, task, max_tasks).await?;
            return Ok((task.clone(), Some(position)));
        };
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        // A concurrent first call holding the same key makes this wait for its outcome, so
        // exactly one of any number of parallel retries inserts.
        let claimed = sqlx::query(
            "INSERT INTO task_create_requests (user_id, request_id, fingerprint, task_id, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, request_id) DO NOTHING",
        )
        .bind(task.user_id)
        .bind(key.request_id)
        .bind(&key.fingerprint[..])
        .bind(task.id)
        .bind(task.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if claimed {
            // Over the limit, the transaction is dropped and the claim with it.
            let position = insert_row(&mut *tx, task, max_tasks).await?;
            tx.commit().await?;
            return Ok((task.clone(), Some(position)));
        }
        let (fingerprint, task_id): (Vec<u8>, Uuid) = sqlx::query_as(
            "SELECT fingerprint, task_id FROM task_create_requests WHERE user_id = $1 AND request_id = $2",
        )
        .bind(task.user_id)
        .bind(key.request_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        // Back to the pool before taking another: holding two at once can deadlock a full pool.
        drop(conn);
        Ok((replay(&fingerprint, key, self.get_task(task.user_id, task_id).await?)?, None))
    }

    async fn get_task(&self, user_id: Uuid, id: Uuid) -> Result<Option<Task>, Error> {
        let row =
            sqlx::query(sql::GET_TASK).bind(id).bind(user_id).fetch_optional(&mut self.pool.acquire().await?).await?;
        Ok(row.as_ref().map(task_from_row).transpose()?)
    }

    async fn list_tasks(&self, user_id: Uuid, query: PageQuery) -> Result<Vec<Task>, Error> {
        let rows = match query.after {
            None => {
                sqlx::query(sql::LIST_FIRST_PAGE)
                    .bind(user_id)
                    .bind(query.completed)
                    .bind(i64::from(query.limit))
                    .fetch_all(&mut self.pool.acquire().await?)
                    .await?
            }
            Some(cursor) => {
                let after = from_unix_micros(cursor.created_at_micros).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                sqlx::query(sql::LIST_AFTER)
                    .bind(user_id)
                    .bind(query.completed)
                    .bind(i64::from(query.limit))
                    .bind(after)
                    .bind(cursor.id)
                    .fetch_all(&mut self.pool.acquire().await?)
                    .await?
            }
        };
        Ok(rows.iter().map(task_from_row).collect::<Result<_, _>>()?)
    }

    async fn update_task(
        &self,
        user_id: Uuid,
        id: Uuid,
        patch: &TaskPatch,
        at: OffsetDateTime,
    ) -> Result<(Task, i64), Error> {
        let row = sqlx::query(sql::UPDATE_TASK)
            .bind(id)
            .bind(user_id)
            .bind(patch.title.as_ref().map(|t| t.as_str()))
            .bind(patch.description.as_ref().map(|d| d.as_str()))
            .bind(patch.completed)
            .bind(patch.due_time.is_some())
            .bind(patch.due_time.flatten())
            .bind(at)
            .bind(patch.expected_version)
            .fetch_optional(&mut self.pool.acquire().await?)
            .await?;
        match row {
            Some(row) => Ok((task_from_row(&row)?, row.try_get(9)?)),
            None => Err(no_row_error(self.current_version(user_id, id).await?)),
        }
    }

    async fn delete_task(&self, user_id: Uuid, id: Uuid, expected_version: Option<i64>) -> Result<i64, Error> {
        let position: Option<i64> = sqlx::query_scalar(sql::DELETE_TASK)
            .bind(id)
            .bind(user_id)
            .bind(expected_version)
            .bind(todo_shared::timestamp::now())
            .fetch_optional(&mut self.pool.acquire().await?)
            .await?;
        match position {
            Some(position) => Ok(position),
            None => Err(no_row_error(self.current_version(user_id, id).await?)),
        }
    }

    async fn purge_user(&self, user_id: Uuid, position: i64) -> Result<u64, Error> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        // One `deleted` change per task, at consecutive positions after the user's head.
        let tasks: i64 = sqlx::query_scalar(
            "WITH d AS (DELETE FROM tasks WHERE user_id = $1 RETURNING id), \
             n AS (SELECT count(*) AS c FROM d), \
             h AS (INSERT INTO task_change_heads (user_id, position) SELECT $1, c FROM n WHERE c > 0 \
                   ON CONFLICT (user_id) DO UPDATE SET position = task_change_heads.position + EXCLUDED.position, tasks = 0 \
                   RETURNING position), \
             ch AS (INSERT INTO task_changes (user_id, position, kind, task_id, recorded_at) \
                   SELECT $1, h.position - n.c + row_number() OVER (ORDER BY d.id), 'deleted', d.id, $2 \
                   FROM d, h, n) \
             SELECT c FROM n",
        )
        .bind(user_id)
        .bind(todo_shared::timestamp::now())
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM task_create_requests WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        sqlx::query("UPDATE auth_feed_position SET position = GREATEST(position, $1)")
            .bind(position)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(u64::try_from(tasks).unwrap_or(0))
    }

    async fn feed_position(&self) -> Result<i64, Error> {
        Ok(sqlx::query_scalar("SELECT position FROM auth_feed_position")
            .fetch_one(&mut self.pool.acquire().await?)
            .await?)
    }
}
