-- The change log WatchTasks reads; see the PostgreSQL migration for the columns. SQLite runs
-- one writer at a time, so positions commit in order by themselves; the head row keeps the
-- per-user counter the same way on both backends.
CREATE TABLE task_change_heads (
    user_id  BLOB    PRIMARY KEY NOT NULL,
    position INTEGER NOT NULL
) STRICT;

CREATE TABLE task_changes (
    user_id     BLOB    NOT NULL,
    position    INTEGER NOT NULL,
    kind        TEXT    NOT NULL CONSTRAINT task_changes_kind_check CHECK (kind IN ('upserted', 'deleted')),
    task_id     BLOB    NOT NULL,
    title       TEXT,
    description TEXT,
    completed   INTEGER,
    due_time    INTEGER,
    created_at  INTEGER,
    updated_at  INTEGER,
    version     INTEGER,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, position)
) STRICT;
CREATE INDEX task_changes_recorded_at ON task_changes (recorded_at);
