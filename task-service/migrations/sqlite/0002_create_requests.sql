-- Idempotency keys of CreateTask; see the PostgreSQL migration for the reasoning.
CREATE TABLE task_create_requests (
    user_id     BLOB    NOT NULL,
    request_id  TEXT    NOT NULL CHECK (length(request_id) BETWEEN 1 AND 128),
    fingerprint BLOB    NOT NULL,
    task_id     BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, request_id)
) STRICT;
