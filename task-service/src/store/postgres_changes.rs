//! The change log's read side on PostgreSQL.

use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;
use uuid::Uuid;

use super::postgres::{PgTaskStore, task_from_row};
use super::{Change, ChangeKind, ChangeLog, LogBounds, Snapshot};
use crate::domain::Task;
use crate::error::Error;

fn change_from_row(user_id: Uuid, row: &PgRow) -> Result<Change, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let task_id: Uuid = row.try_get("task_id")?;
    let kind = match kind.as_str() {
        "deleted" => ChangeKind::Deleted(task_id),
        _ => ChangeKind::Upserted(Task {
            id: task_id,
            user_id,
            title: row.try_get::<Option<String>, _>("title")?.unwrap_or_default(),
            description: row.try_get::<Option<String>, _>("description")?.unwrap_or_default(),
            completed: row.try_get::<Option<bool>, _>("completed")?.unwrap_or_default(),
            due_time: row.try_get("due_time")?,
            created_at: row.try_get::<Option<OffsetDateTime>, _>("created_at")?.unwrap_or(OffsetDateTime::UNIX_EPOCH),
            updated_at: row.try_get::<Option<OffsetDateTime>, _>("updated_at")?.unwrap_or(OffsetDateTime::UNIX_EPOCH),
            version: row.try_get::<Option<i64>, _>("version")?.unwrap_or(1),
        }),
    };
    Ok(Change { position: row.try_get("position")?, kind })
}

#[tonic::async_trait]
impl ChangeLog for PgTaskStore {
    async fn snapshot(&self, user_id: Uuid) -> Result<Snapshot, Error> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        // One snapshot for both reads: the head and the tasks agree.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        let position: Option<i64> = sqlx::query_scalar("SELECT position FROM task_change_heads WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        let sql =
            concat!("SELECT ", task_columns!(), " FROM tasks WHERE user_id = $1 ORDER BY created_at DESC, id DESC");
        let rows = sqlx::query(sql).bind(user_id).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let tasks = rows.iter().map(task_from_row).collect::<Result<_, _>>()?;
        Ok(Snapshot { position: position.unwrap_or(0), tasks })
    }

    async fn changes_after(&self, user_id: Uuid, position: i64, limit: i64) -> Result<Vec<Change>, Error> {
        let rows = sqlx::query(
            "SELECT position, kind, task_id, title, description, completed, due_time, created_at, updated_at, version \
             FROM task_changes WHERE user_id = $1 AND position > $2 ORDER BY position LIMIT $3",
        )
        .bind(user_id)
        .bind(position)
        .bind(limit)
        .fetch_all(&mut self.pool.acquire().await?)
        .await?;
        Ok(rows.iter().map(|row| change_from_row(user_id, row)).collect::<Result<_, _>>()?)
    }

    async fn bounds(&self, user_id: Uuid) -> Result<LogBounds, Error> {
        let (head, oldest): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT position FROM task_change_heads WHERE user_id = $1), \
                    (SELECT min(position) FROM task_changes WHERE user_id = $1)",
        )
        .bind(user_id)
        .fetch_one(&mut self.pool.acquire().await?)
        .await?;
        Ok(LogBounds { head: head.unwrap_or(0), oldest })
    }

    async fn prune_changes(&self, before: OffsetDateTime) -> Result<u64, Error> {
        Ok(sqlx::query("DELETE FROM task_changes WHERE recorded_at < $1")
            .bind(before)
            .execute(&mut self.pool.acquire().await?)
            .await?
            .rows_affected())
    }
}
