-- Idempotency keys of CreateTask: which task a user's `request_id` created, and a digest of
-- what was asked, so a retry returns that task and a reused key with other content is refused.
-- Kept apart from `tasks` so that deleting the task does not free the key for a late retry.
CREATE TABLE task_create_requests (
    user_id     uuid        NOT NULL,
    request_id  text        NOT NULL CHECK (char_length(request_id) BETWEEN 1 AND 128),
    -- SHA-256 of the validated title, description and due time.
    fingerprint bytea       NOT NULL,
    task_id     uuid        NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, request_id)
);
