-- Accounts. Owned by auth-service; no other service reads this table.
-- Same columns as the PostgreSQL schema; times are microseconds since the Unix epoch, because
-- SQLite has no timestamp type and integers sort and compare exactly.
CREATE TABLE users (
    -- Server-assigned UUID (v4), 16 bytes.
    id            BLOB    PRIMARY KEY NOT NULL,
    -- Normalised (trimmed, lower-cased) by the service; unique.
    email         TEXT    NOT NULL CONSTRAINT users_email_key UNIQUE,
    -- argon2id PHC string; never the password.
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;
