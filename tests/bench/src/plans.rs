//! The scale mode's query plans: `EXPLAIN (ANALYZE, BUFFERS)` of task-service's own
//! statements, as a long-lived connection of the service runs them.
//!
//! sqlx prepares each statement once per connection with typed parameters; PostgreSQL plans
//! the first five executions for their values and may then switch to a generic plan. So each
//! statement is PREPAREd with the types the service binds and executed six times before the
//! EXPLAIN: the plan shown is the one served at steady state. Writes run in a transaction
//! that is rolled back.

use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use task_service::store::postgres_sql::{GET_TASK, INSERT_TASK, LIST_AFTER, LIST_FIRST_PAGE, UPDATE_TASK};
use uuid::Uuid;

use crate::Result;
use crate::fixture::SCALE_PAGE_SIZE;
use crate::load::Kind;

/// The rows a plan is explained for: one measured user's.
pub struct PlanInputs {
    pub user: Uuid,
    /// A task of the user.
    pub task: Uuid,
    /// The keyset cursor of page 50: the last row of page 49 (created_at as text, id).
    pub cursor: (String, Uuid),
}

/// One statement's plan.
pub struct Plan {
    pub scenario: &'static str,
    pub lines: Vec<String>,
}

impl Plan {
    /// The plan's nodes, conditions and values, without costs, timings and buffer counts:
    /// what differs when PostgreSQL chose another plan.
    pub fn shape(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| {
                // Counters of this execution, not choices of the planner.
                const COUNTERS: [&str; 9] = [
                    "Buffers:",
                    "Planning",
                    "Execution",
                    "Heap Fetches:",
                    "Heap Blocks:",
                    "Rows Removed by",
                    "Sort Method:",
                    "Tuples Inserted:",
                    "Conflicting Tuples:",
                ];
                let l = l.trim_start();
                !COUNTERS.iter().any(|c| l.starts_with(c))
            })
            .map(|l| l.split("  (cost=").next().unwrap_or(l).trim_end().to_owned())
            .collect()
    }
}

fn quoted(value: impl std::fmt::Display, ty: &str) -> String {
    format!("'{value}'::{ty}")
}

pub async fn explain(url: &str, inputs: &PlanInputs) -> Result<Vec<Plan>> {
    let mut conn = PgConnection::connect(url).await?;
    let user = quoted(inputs.user, "uuid");
    let task = quoted(inputs.task, "uuid");
    let (after, after_id) = (quoted(&inputs.cursor.0, "timestamptz"), quoted(inputs.cursor.1, "uuid"));
    let limit = SCALE_PAGE_SIZE + 1; // the service asks one more, to know whether a page follows
    // (scenario, statement, the parameter types the service binds, arguments, write?). EXECUTE
    // evaluates its arguments, so each insert gets an id of its own.
    let statements = [
        (Kind::GetTask, GET_TASK, "uuid, uuid", format!("{task}, {user}"), false),
        (Kind::ListFirstPage, LIST_FIRST_PAGE, "uuid, boolean, bigint", format!("{user}, NULL, {limit}"), false),
        (
            Kind::ListPage50,
            LIST_AFTER,
            "uuid, boolean, bigint, timestamptz, uuid",
            format!("{user}, NULL, {limit}, {after}, {after_id}"),
            false,
        ),
        (
            Kind::CreateTask,
            INSERT_TASK,
            "uuid, uuid, text, text, boolean, timestamptz, timestamptz, timestamptz, bigint, bigint",
            format!("gen_random_uuid(), {user}, 'Explained task', '', false, NULL, now(), now(), 1, 100000"),
            true,
        ),
        (
            Kind::UpdateTask,
            UPDATE_TASK,
            "uuid, uuid, text, text, boolean, boolean, timestamptz, timestamptz, bigint",
            format!("{task}, {user}, 'Explained update', NULL, true, false, NULL, now(), NULL"),
            true,
        ),
    ];
    let mut plans = Vec::new();
    for (kind, sql, types, args, write) in statements {
        if write {
            sqlx::raw_sql("BEGIN").execute(&mut conn).await?;
        }
        sqlx::raw_sql(AssertSqlSafe(format!("PREPARE explained ({types}) AS {sql}"))).execute(&mut conn).await?;
        for _ in 0..6 {
            sqlx::raw_sql(AssertSqlSafe(format!("EXECUTE explained ({args})"))).execute(&mut conn).await?;
        }
        let rows = sqlx::raw_sql(AssertSqlSafe(format!("EXPLAIN (ANALYZE, BUFFERS) EXECUTE explained ({args})")))
            .fetch_all(&mut conn)
            .await?;
        let lines = rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<Vec<_>, _>>()?;
        sqlx::raw_sql("DEALLOCATE explained").execute(&mut conn).await?;
        if write {
            sqlx::raw_sql("ROLLBACK").execute(&mut conn).await?;
        }
        plans.push(Plan { scenario: kind.name(), lines });
    }
    conn.close().await?;
    Ok(plans)
}
