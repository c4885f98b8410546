//! Database state: whole-database snapshots and the rows of the tasks table, to check what a
//! request did (or did not) write.

use std::collections::BTreeMap;

use todo_shared::db::Pool;
use uuid::Uuid;

/// Every row of every table of the service (migration bookkeeping excluded), each rendered as
/// text, sorted: two equal snapshots mean nothing was written in between.
pub async fn snapshot(db: &crate::TestDb) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    match &db.pool {
        Pool::Postgres(pool) => {
            let mut conn = pool.acquire().await.expect("connection");
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name NOT LIKE '\\_%'",
            )
            .fetch_all(&mut conn)
            .await
            .expect("list tables");
            for table in tables {
                let sql = format!("SELECT CAST(t AS text) FROM \"{table}\" t ORDER BY 1");
                let rows: Vec<String> =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&mut conn).await.expect("snapshot");
                out.insert(table, rows);
            }
        }
        Pool::Sqlite(pool) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_%' ESCAPE '\\'",
            )
            .fetch_all(pool)
            .await
            .expect("list tables");
            for table in tables {
                let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
                    .bind(&table)
                    .fetch_all(pool)
                    .await
                    .expect("columns");
                let row = columns.iter().map(|c| format!("quote(\"{c}\")")).collect::<Vec<_>>().join(" || '|' || ");
                let sql = format!("SELECT {row} FROM \"{table}\" ORDER BY 1");
                let rows: Vec<String> =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.expect("snapshot");
                out.insert(table, rows);
            }
        }
    }
    assert!(!out.is_empty(), "the snapshot found no tables");
    out
}

/// A stored task as the database has it (times left out: they are checked through the API).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TaskRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub title: String,
    pub description: String,
    pub completed: bool,
    pub version: i64,
}

/// Every row of `tasks`, by id.
pub async fn task_rows(db: &crate::TestDb) -> BTreeMap<Uuid, TaskRow> {
    const SQL: &str = "SELECT id, user_id, title, description, completed, version FROM tasks";
    type Row = (Uuid, Uuid, String, String, bool, i64);
    let rows: Vec<Row> = match &db.pool {
        Pool::Postgres(pool) => {
            sqlx::query_as(SQL).fetch_all(&mut pool.acquire().await.expect("connection")).await.expect("tasks")
        }
        Pool::Sqlite(pool) => sqlx::query_as(SQL).fetch_all(pool).await.expect("tasks"),
    };
    rows.into_iter()
        .map(|(id, user_id, title, description, completed, version)| {
            (id, TaskRow { id, user_id, title, description, completed, version })
        })
        .collect()
}
