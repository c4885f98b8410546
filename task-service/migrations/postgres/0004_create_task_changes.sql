-- The change log WatchTasks reads: every create, update and delete of a user's tasks, written
-- in the same statement or transaction as the change itself.
--
-- Positions are per user and gap-free in commit order: each change takes the next position
-- from the user's row in `task_change_heads` (an upsert that locks the row until commit), so
-- two writers of one user commit in position order, and a reader that has seen position N
-- can never later find a committed N-1. (A sequence would not promise that: numbers are taken
-- at insert, not at commit.)
CREATE TABLE task_change_heads (
    user_id  uuid   PRIMARY KEY,
    -- The position of the user's latest change.
    position bigint NOT NULL
);

CREATE TABLE task_changes (
    user_id     uuid        NOT NULL,
    position    bigint      NOT NULL,
    kind        text        NOT NULL CONSTRAINT task_changes_kind_check CHECK (kind IN ('upserted', 'deleted')),
    task_id     uuid        NOT NULL,
    -- The task as the change left it (upserted only): the log replays exactly what happened,
    -- whatever the task became later.
    title       text,
    description text,
    completed   boolean,
    due_time    timestamptz,
    created_at  timestamptz,
    updated_at  timestamptz,
    version     bigint,
    -- When the change was recorded: retention (TASK_CHANGE_RETENTION) counts from here.
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, position)
);
CREATE INDEX task_changes_recorded_at ON task_changes (recorded_at);
