-- Sessions, refresh tokens and the session-event log: the PostgreSQL schema's columns and
-- comments apply (times are microseconds since the Unix epoch, ids 16-byte BLOBs). SQLite
-- runs one writer at a time, so appends to the log commit in position order by themselves;
-- the head row is kept for symmetry with PostgreSQL.
CREATE TABLE sessions (
    id           BLOB    PRIMARY KEY NOT NULL,
    user_id      BLOB    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    user_agent   TEXT    NOT NULL
) STRICT;
CREATE INDEX sessions_user_id_created_at ON sessions (user_id, created_at DESC);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE refresh_tokens (
    token_hash       BLOB    PRIMARY KEY NOT NULL,
    session_id       BLOB    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at       INTEGER NOT NULL,
    replaced_at      INTEGER,
    sealed_successor BLOB
) STRICT;
CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

ALTER TABLE users ADD COLUMN tokens_not_before INTEGER;

CREATE TABLE session_events (
    position   INTEGER PRIMARY KEY NOT NULL,
    kind       TEXT    NOT NULL
               CONSTRAINT session_events_kind_check
               CHECK (kind IN ('session_revoked', 'tokens_revoked', 'account_deleted')),
    user_id    BLOB    NOT NULL,
    session_id BLOB,
    not_before INTEGER,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX session_events_created_at ON session_events (created_at);

CREATE TABLE session_event_head (
    singleton INTEGER PRIMARY KEY NOT NULL DEFAULT 1 CONSTRAINT session_event_head_singleton CHECK (singleton = 1),
    position  INTEGER NOT NULL
) STRICT;
INSERT INTO session_event_head (singleton, position) VALUES (1, 0);
