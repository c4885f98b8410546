//! The PostgreSQL statements of the task operations, as text: the store runs them, and
//! `todo-bench` runs the very same text under pgbench (the storage ceiling) and `EXPLAIN`
//! (the scale mode's query plans), so what is measured cannot drift from what is served.

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

/// One task of one user: `$1` id, `$2` user.
pub const GET_TASK: &str = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1 AND user_id = $2");

/// The first page of a user's tasks, newest first: `$1` user, `$2` completed filter or NULL,
/// `$3` limit.
///
/// The first page and the later ones are two statements rather than one with `$4 IS NULL OR
/// …`: a generic prepared plan cannot turn an optional condition into an index range, and
/// the cursor must be one.
pub const LIST_FIRST_PAGE: &str = concat!(
    "SELECT ",
    task_columns!(),
    " FROM tasks WHERE user_id = $1 AND ($2::boolean IS NULL OR completed = $2) \
     ORDER BY created_at DESC, id DESC LIMIT $3"
);

/// A later page: as [`LIST_FIRST_PAGE`], after the keyset cursor (`$4` created_at, `$5` id).
pub const LIST_AFTER: &str = concat!(
    "SELECT ",
    task_columns!(),
    " FROM tasks WHERE user_id = $1 AND ($2::boolean IS NULL OR completed = $2) \
     AND (created_at, id) < ($4, $5) \
     ORDER BY created_at DESC, id DESC LIMIT $3"
);

/// Inserts a task (`$1`…`$9`: the columns in table order) and its change, in one statement
/// (so it needs no transaction of its own), unless its user already has `$10` tasks: the
/// head row's count is raised first, under its lock and only while below the limit, and the
/// task is inserted only if it was (`FROM h`), so racing creates can never overshoot. The
/// head upsert takes the user's next position and holds its row lock until commit. Returns
/// the change's position, or no row over the limit.
pub const INSERT_TASK: &str = concat!(
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

/// Applies a patch and records the change: `$1` id, `$2` user, `$3` title, `$4`
/// description, `$5` completed (each NULL to keep), `$6` whether to set the due time to
/// `$7`, `$8` updated_at, `$9` expected version or NULL. Returns the task's columns and the
/// change's position, or no row when the task is not the user's or the version differs.
pub const UPDATE_TASK: &str = concat!(
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

/// Deletes a task and records its `deleted` change: `$1` id, `$2` user, `$3` expected
/// version or NULL, `$4` the change's time. Returns the position, or no row as
/// [`UPDATE_TASK`].
pub const DELETE_TASK: &str = "WITH t AS (DELETE FROM tasks WHERE id = $1 AND user_id = $2 AND ($3::bigint IS NULL OR version = $3) \
     RETURNING id, user_id), \
     h AS (INSERT INTO task_change_heads (user_id, position, tasks) SELECT user_id, 1, 0 FROM t \
     ON CONFLICT (user_id) DO UPDATE SET position = task_change_heads.position + 1, \
     tasks = GREATEST(task_change_heads.tasks - 1, 0) RETURNING position), \
     c AS (INSERT INTO task_changes (user_id, position, kind, task_id, recorded_at) \
     SELECT t.user_id, h.position, 'deleted', t.id, $4 FROM t, h) \
     SELECT h.position FROM t, h";
