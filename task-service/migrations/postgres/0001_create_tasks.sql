-- Tasks. Owned by task-service, which never reads auth-service's tables: `user_id` is the
-- `sub` of a verified token, so there is no foreign key to a users table here.
CREATE TABLE tasks (
    -- Server-assigned UUID v7 (time-ordered: new rows land at the end of the primary key).
    id          uuid        PRIMARY KEY,
    user_id     uuid        NOT NULL,
    -- Trimmed by the service; the checks are a second line of defence for the same limits.
    title       text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    description text        NOT NULL DEFAULT '' CHECK (char_length(description) <= 10000),
    completed   boolean     NOT NULL DEFAULT false,
    due_time    timestamptz,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    -- Incremented by every update; the etag clients see is derived from it.
    version     bigint      NOT NULL DEFAULT 1
);

-- Serves ListTasks: one user's tasks, newest first, with the id as tie-break, so a keyset
-- page is one index range scan whatever the page depth.
CREATE INDEX tasks_user_created_idx ON tasks (user_id, created_at DESC, id DESC);
