use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};
use time::OffsetDateTime;
use todo_shared::timestamp::{from_unix_micros, to_unix_micros};
use uuid::Uuid;

use super::{ChangeKind, IdempotencyKey, PageQuery, TaskStore, no_row_error, replay};
use crate::domain::{Task, TaskPatch};
use crate::error::Error;

pub struct SqliteTaskStore {
    pub(super) pool: SqlitePool,
}

impl SqliteTaskStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    async fn current_version(&self, user_id: Uuid, id: Uuid) -> Result<Option<i64>, Error> {
        Ok(sqlx::query_scalar("SELECT version FROM tasks WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?)
    }
}

pub(super) fn time_from(micros: i64) -> Result<OffsetDateTime, sqlx::Error> {
    from_unix_micros(micros).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

async fn insert_row(conn: &mut sqlx::SqliteConnection, task: &Task) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tasks (id, user_id, title, description, completed, due_time, created_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(task.id)
    .bind(task.user_id)
    .bind(&task.title)
    .bind(&task.description)
    .bind(task.completed)
    .bind(task.due_time.map(to_unix_micros))
    .bind(to_unix_micros(task.created_at))
    .bind(to_unix_micros(task.updated_at))
    .bind(task.version)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts one more task for `user_id`, unless they already have `max_tasks`.
async fn count_new_task(conn: &mut sqlx::SqliteConnection, user_id: Uuid, max_tasks: i64) -> Result<(), Error> {
    let counted = sqlx::query(
        "INSERT INTO task_change_heads (user_id, position, tasks) VALUES ($1, 0, 1) \
         ON CONFLICT (user_id) DO UPDATE SET tasks = tasks + 1 WHERE tasks < $2",
    )
    .bind(user_id)
    .bind(max_tasks)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if counted == 1 { Ok(()) } else { Err(Error::TaskQuota { max: max_tasks }) }
}

/// Records a change of `user_id`'s tasks inside the caller's (write) transaction: the next
/// position from the user's head row, then the change itself.
async fn record(
    conn: &mut sqlx::SqliteConnection,
    user_id: Uuid,
    change: &ChangeKind,
    at: OffsetDateTime,
) -> Result<i64, sqlx::Error> {
    let position: i64 = sqlx::query_scalar(
        "INSERT INTO task_change_heads (user_id, position) VALUES ($1, 1) \
         ON CONFLICT (user_id) DO UPDATE SET position = task_change_heads.position + 1 RETURNING position",
    )
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await?;
    let query = sqlx::query(
        "INSERT INTO task_changes (user_id, position, kind, task_id, title, description, completed, due_time, \
         created_at, updated_at, version, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(user_id)
    .bind(position);
    let query = match change {
        ChangeKind::Upserted(task) => query
            .bind("upserted")
            .bind(task.id)
            .bind(&task.title)
            .bind(&task.description)
            .bind(task.completed)
            .bind(task.due_time.map(to_unix_micros))
            .bind(to_unix_micros(task.created_at))
            .bind(to_unix_micros(task.updated_at))
            .bind(task.version),
        ChangeKind::Deleted(id) => query
            .bind("deleted")
            .bind(*id)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<bool>)
            .bind(None::<i64>)
            .bind(None::<i64>)
            .bind(None::<i64>)
            .bind(None::<i64>),
    };
    query.bind(to_unix_micros(at)).execute(&mut *conn).await?;
    Ok(position)
}

pub(super) fn task_from_row(row: &SqliteRow) -> Result<Task, sqlx::Error> {
    let due_time: Option<i64> = row.try_get("due_time")?;
    Ok(Task {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        completed: row.try_get("completed")?,
        due_time: due_time.map(time_from).transpose()?,
        created_at: time_from(row.try_get("created_at")?)?,
        updated_at: time_from(row.try_get("updated_at")?)?,
        version: row.try_get("version")?,
    })
}

#[tonic::async_trait]
impl TaskStore for SqliteTaskStore {
    async fn insert_task(
        &self,
        task: &Task,
        key: Option<&IdempotencyKey<'_>>,
        max_tasks: i64,
    ) -> Result<(Task, Option<i64>), Error> {
        // SQLite runs one writer at a time; BEGIN IMMEDIATE takes the write lock at once, so
        // the claim, the count, the insert and its change are atomic with respect to parallel
        // creates. Over the limit, the dropped transaction rolls back whatever it did.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(key) = key else {
            count_new_task(&mut tx, task.user_id, max_tasks).await?;
            insert_row(&mut tx, task).await?;
            let position = record(&mut tx, task.user_id, &ChangeKind::Upserted(task.clone()), task.updated_at).await?;
            tx.commit().await?;
            return Ok((task.clone(), Some(position)));
        };
        let claimed = sqlx::query(
            "INSERT INTO task_create_requests (user_id, request_id, fingerprint, task_id, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, request_id) DO NOTHING",
        )
        .bind(task.user_id)
        .bind(key.request_id)
        .bind(&key.fingerprint[..])
        .bind(task.id)
        .bind(to_unix_micros(task.created_at))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if claimed {
            count_new_task(&mut tx, task.user_id, max_tasks).await?;
            insert_row(&mut tx, task).await?;
            let position = record(&mut tx, task.user_id, &ChangeKind::Upserted(task.clone()), task.updated_at).await?;
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
        Ok((replay(&fingerprint, key, self.get_task(task.user_id, task_id).await?)?, None))
    }

    async fn get_task(&self, user_id: Uuid, id: Uuid) -> Result<Option<Task>, Error> {
        let sql = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1 AND user_id = $2");
        let row = sqlx::query(sql).bind(id).bind(user_id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(task_from_row).transpose()?)
    }

    async fn list_tasks(&self, user_id: Uuid, query: PageQuery) -> Result<Vec<Task>, Error> {
        // With no cursor, the bound (i64::MAX, max uuid) lies after every row, so one
        // statement serves both cases; SQLite plans per statement text, not generically.
        let (after_micros, after_id) = match query.after {
            Some(cursor) => (cursor.created_at_micros, cursor.id),
            None => (i64::MAX, Uuid::max()),
        };
        let sql = concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE user_id = $1 AND ($2 IS NULL OR completed = $2) \
             AND (created_at, id) < ($4, $5) \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        );
        let rows = sqlx::query(sql)
            .bind(user_id)
            .bind(query.completed)
            .bind(i64::from(query.limit))
            .bind(after_micros)
            .bind(after_id)
            .fetch_all(&self.pool)
            .await?;
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
            "UPDATE tasks SET \
                 title = COALESCE($3, title), \
                 description = COALESCE($4, description), \
                 completed = COALESCE($5, completed), \
                 due_time = CASE WHEN $6 THEN $7 ELSE due_time END, \
                 updated_at = $8, \
                 version = version + 1 \
             WHERE id = $1 AND user_id = $2 AND ($9 IS NULL OR version = $9) \
             RETURNING ",
            task_columns!()
        );
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(sql)
            .bind(id)
            .bind(user_id)
            .bind(patch.title.as_ref().map(|t| t.as_str()))
            .bind(patch.description.as_ref().map(|d| d.as_str()))
            .bind(patch.completed)
            .bind(patch.due_time.is_some())
            .bind(patch.due_time.flatten().map(to_unix_micros))
            .bind(to_unix_micros(at))
            .bind(patch.expected_version)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            drop(tx);
            return Err(no_row_error(self.current_version(user_id, id).await?));
        };
        let task = task_from_row(&row)?;
        let position = record(&mut tx, user_id, &ChangeKind::Upserted(task.clone()), at).await?;
        tx.commit().await?;
        Ok((task, position))
    }

    async fn delete_task(&self, user_id: Uuid, id: Uuid, expected_version: Option<i64>) -> Result<i64, Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let deleted = sqlx::query("DELETE FROM tasks WHERE id = $1 AND user_id = $2 AND ($3 IS NULL OR version = $3)")
            .bind(id)
            .bind(user_id)
            .bind(expected_version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted != 1 {
            drop(tx);
            return Err(no_row_error(self.current_version(user_id, id).await?));
        }
        let position = record(&mut tx, user_id, &ChangeKind::Deleted(id), todo_shared::timestamp::now()).await?;
        sqlx::query("UPDATE task_change_heads SET tasks = MAX(tasks - 1, 0) WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(position)
    }

    async fn purge_user(&self, user_id: Uuid, position: i64) -> Result<u64, Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let ids: Vec<Uuid> = sqlx::query_scalar("DELETE FROM tasks WHERE user_id = $1 RETURNING id")
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
        let at = todo_shared::timestamp::now();
        for id in &ids {
            record(&mut tx, user_id, &ChangeKind::Deleted(*id), at).await?;
        }
        sqlx::query("UPDATE task_change_heads SET tasks = 0 WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM task_create_requests WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        sqlx::query("UPDATE auth_feed_position SET position = MAX(position, $1)")
            .bind(position)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    async fn feed_position(&self) -> Result<i64, Error> {
        Ok(sqlx::query_scalar("SELECT position FROM auth_feed_position").fetch_one(&self.pool).await?)
    }
}
