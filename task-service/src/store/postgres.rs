use sqlx::postgres::PgRow;
use sqlx::{Executor, Postgres, Row};
use time::OffsetDateTime;
use todo_shared::db::PostgresPool;
use todo_shared::timestamp::from_unix_micros;
use uuid::Uuid;

use super::{IdempotencyKey, PageQuery, TaskStore, no_row_error, replay};

/// The CTE `h` that takes the next position of the user of the rows in CTE `t` (an update:
/// the count of tasks is unchanged).
macro_rules! head_cte {
    () => {
        "h AS (INSERT INTO task_change_heads (user_id, position) SELECT user_id, 1 FROM t \
         ON CONFLICT (user_id) DO UPDATE SET position = task_change_heads.position + 1 RETURNING position)"
    };
}

/// The `upserted` change of the task in CTE `t` at the position in CTE `h`, recorded at the
/// task's `updated_at` (the change's own time).
macro_rules! upserted_change {
    () => {
        "INSERT INTO task_changes (user_id, position, kind, task_id, title, description, completed, due_time, \
         created_at, updated_at, version, recorded_at) \
         SELECT t.user_id, h.position, 'upserted', t.id, t.title, t.description, t.completed, t.due_time, \
         t.created_at, t.updated_at, t.version, t.updated_at FROM t, h"
    };
}
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

/// The task's insert and its change, in one statement (so it needs no transaction of its own):
/// the head upsert takes the user's next position and holds its row lock until commit.
/// Inserts `task` and records its change; the change's position.
/// Inserts `task` and its change, unless its user already has `max_tasks` tasks: the head
/// row's count is raised first, under its lock and only while below the limit, and the task
/// is inserted only if it was (`FROM h`), so racing creates can never overshoot.
async fn insert_row<'c>(
    conn: impl Executor<'c, Database = Postgres>,
    task: &Task,
    max_tasks: i64,
) -> Result<i64, Error> {
    let sql = concat!(
        "WITH h AS (INSERT INTO task_change_heads (user_id, position, tasks) VALUES ($2, 1, 1) \
           ON CONFLICT (user_id) DO UPDATE \
           SET position = task_change_heads.position + 1, tasks = task_change_heads.tasks + 1 \
           WHERE task_change_heads.tasks < $10 RETURNING position), \
         t AS (\
           INSERT INTO tasks (id, user_id, title, description, completed, due_time, created_at, updated_at, version) \
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM h RETURNING *), \
         c AS (",
        upserted_change!(),
        ") SELECT h.position FROM h"
    );
    let position: Option<i64> = sqlx::query_scalar(sql)
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
        let sql = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1 AND user_id = $2");
        let row = sqlx::query(sql).bind(id).bind(user_id).fetch_optional(&mut self.pool.acquire().await?).await?;
        Ok(row.as_ref().map(task_from_row).transpose()?)
    }

    async fn list_tasks(&self, user_id: Uuid, query: PageQuery) -> Result<Vec<Task>, Error> {
        // Two statements rather than one with `$3 IS NULL OR …`: a generic prepared plan cannot
        // turn an optional condition into an index range, and the cursor must be one.
        let rows = match query.after {
            None => {
                let sql = concat!(
                    "SELECT ",
                    task_columns!(),
                    " FROM tasks WHERE user_id = $1 AND ($2::boolean IS NULL OR completed = $2) \
                     ORDER BY created_at DESC, id DESC LIMIT $3"
                );
                sqlx::query(sql)
                    .bind(user_id)
                    .bind(query.completed)
                    .bind(i64::from(query.limit))
                    .fetch_all(&mut self.pool.acquire().await?)
                    .await?
            }
            Some(cursor) => {
                let after = from_unix_micros(cursor.created_at_micros).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                let sql = concat!(
                    "SELECT ",
                    task_columns!(),
                    " FROM tasks WHERE user_id = $1 AND ($2::boolean IS NULL OR completed = $2) \
                     AND (created_at, id) < ($4, $5) \
                     ORDER BY created_at DESC, id DESC LIMIT $3"
                );
                sqlx::query(sql)
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
        let sql = concat!(
            "WITH t AS (UPDATE tasks SET \
                 title = COALESCE($3, title), \
                 description = COALESCE($4, description), \
                 completed = COALESCE($5, completed), \
                 due_time = CASE WHEN $6 THEN $7 ELSE due_time END, \
                 updated_at = $8, \
                 version = version + 1 \
             WHERE id = $1 AND user_id = $2 AND ($9::bigint IS NULL OR version = $9) \
             RETURNING *), ",
            head_cte!(),
            ", c AS (",
            upserted_change!(),
            ") SELECT t.id, t.user_id, t.title, t.description, t.completed, t.due_time, t.created_at, t.updated_at, \
             t.version, h.position FROM t, h"
        );
        let row = sqlx::query(sql)
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
        let sql = concat!(
            "WITH t AS (DELETE FROM tasks WHERE id = $1 AND user_id = $2 AND ($3::bigint IS NULL OR version = $3) \
             RETURNING id, user_id), \
             h AS (INSERT INTO task_change_heads (user_id, position, tasks) SELECT user_id, 1, 0 FROM t \
             ON CONFLICT (user_id) DO UPDATE SET position = task_change_heads.position + 1, \
             tasks = GREATEST(task_change_heads.tasks - 1, 0) RETURNING position)",
            ", c AS (INSERT INTO task_changes (user_id, position, kind, task_id, recorded_at) \
             SELECT t.user_id, h.position, 'deleted', t.id, $4 FROM t, h) \
             SELECT h.position FROM t, h"
        );
        let position: Option<i64> = sqlx::query_scalar(sql)
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
