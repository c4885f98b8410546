//! GetTask's lookups on PostgreSQL, coalesced under load ([`todo_shared::coalesce`]): one at
//! a time as its own statement, the ones that arrive meanwhile together as the next.

use sqlx::postgres::PgRow;
use todo_shared::coalesce::{Coalesced, Lookup};
use todo_shared::db::PgConn;
use uuid::Uuid;

use super::postgres::task_from_row;
use crate::domain::Task;

/// Task lookups by (owner, id).
pub type PointReads = Coalesced<TaskById>;

#[derive(Debug, Default)]
pub struct TaskById;

impl Lookup for TaskById {
    /// (owner, task id).
    type Key = (Uuid, Uuid);
    type Row = Task;

    async fn one(&self, conn: &mut PgConn, (user_id, id): (Uuid, Uuid)) -> Result<Option<Task>, sqlx::Error> {
        let sql = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1 AND user_id = $2");
        let row = sqlx::query(sql).bind(id).bind(user_id).fetch_optional(conn).await?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// `id = ANY` is a primary-key index scan whatever the batch size, a plan a prepared
    /// statement keeps; the owner condition keeps every row the query can return one of the
    /// callers' own, and [`TaskById::answers`] matches id and owner pairwise.
    async fn many(&self, conn: &mut PgConn, keys: &[(Uuid, Uuid)]) -> Result<Vec<Task>, sqlx::Error> {
        let sql = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = ANY($1) AND user_id = ANY($2)");
        let ids: Vec<Uuid> = keys.iter().map(|&(_, id)| id).collect();
        let mut owners: Vec<Uuid> = keys.iter().map(|&(owner, _)| owner).collect();
        owners.sort_unstable();
        owners.dedup();
        let rows: Vec<PgRow> = sqlx::query(sql).bind(&ids).bind(&owners).fetch_all(conn).await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Each caller gets only the row with its own id *and* its own user id.
    fn answers(task: &Task, &(user_id, id): &(Uuid, Uuid)) -> bool {
        task.id == id && task.user_id == user_id
    }
}
