-- Sessions: one per Login, alive until Logout, RevokeSession, ChangePassword, DeleteAccount,
-- reuse of a rotated refresh token, or expiry. Ending a session deletes its row: the row's
-- absence is what refuses its access tokens here, and `session_events` tells task-service.
CREATE TABLE sessions (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    -- The last Login or Refresh; the idle timeout counts from here.
    last_used_at timestamptz NOT NULL,
    -- The absolute end: no Refresh after it, no access token valid beyond it.
    expires_at   timestamptz NOT NULL,
    -- The Login's `user-agent`, trimmed to 256 characters, for the user's sessions list.
    user_agent   text        NOT NULL
);
CREATE INDEX sessions_user_id_created_at ON sessions (user_id, created_at DESC);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- Every refresh token a session has had. The current one has no `replaced_at`; the earlier
-- ones stay until the session ends, so presenting one after the reuse grace is recognised
-- as theft rather than as an unknown token.
CREATE TABLE refresh_tokens (
    -- SHA-256 of the token. The token is 256 random bits: a fast hash is enough, and the
    -- database never holds a usable token.
    token_hash       bytea       PRIMARY KEY,
    session_id       uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at       timestamptz NOT NULL,
    replaced_at      timestamptz,
    -- The token that replaced this one, XORed with a hash of this one: only a holder of
    -- this token can recover its successor (the reuse grace returns it), the database alone
    -- cannot.
    sealed_successor bytea
);
CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

-- Access tokens without a session (minted before sessions existed) issued at or before
-- this second are refused (Logout with LOGOUT_SCOPE_ALL or OTHERS, ChangePassword).
ALTER TABLE users ADD COLUMN tokens_not_before timestamptz;

-- The durable, ordered log task-service follows (SessionEventService). Positions come from
-- `session_event_head`, whose single row every appending transaction updates: the row lock
-- makes appends commit in position order, so a reader that has seen position N can never
-- later find a committed N-1 (a sequence alone would not promise that).
CREATE TABLE session_events (
    position   bigint      PRIMARY KEY,
    kind       text        NOT NULL
               CONSTRAINT session_events_kind_check
               CHECK (kind IN ('session_revoked', 'tokens_revoked', 'account_deleted')),
    user_id    uuid        NOT NULL,
    session_id uuid,
    not_before timestamptz,
    created_at timestamptz NOT NULL
);
CREATE INDEX session_events_created_at ON session_events (created_at);

CREATE TABLE session_event_head (
    singleton boolean PRIMARY KEY DEFAULT true CONSTRAINT session_event_head_singleton CHECK (singleton),
    position  bigint  NOT NULL
);
INSERT INTO session_event_head (singleton, position) VALUES (true, 0);
