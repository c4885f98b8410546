-- Tasks. Same columns as the PostgreSQL schema; UUIDs are 16-byte blobs (they compare
-- bytewise, as PostgreSQL's uuid does, so both backends order ties the same way) and times
-- are microseconds since the Unix epoch.
CREATE TABLE tasks (
    id          BLOB    PRIMARY KEY NOT NULL,
    user_id     BLOB    NOT NULL,
    title       TEXT    NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description TEXT    NOT NULL DEFAULT '' CHECK (length(description) <= 10000),
    completed   INTEGER NOT NULL DEFAULT 0 CHECK (completed IN (0, 1)),
    due_time    INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    version     INTEGER NOT NULL DEFAULT 1
) STRICT;

CREATE INDEX tasks_user_created_idx ON tasks (user_id, created_at DESC, id DESC);
