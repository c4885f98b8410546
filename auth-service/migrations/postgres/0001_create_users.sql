-- Accounts. Owned by auth-service; no other service reads this table.
CREATE TABLE users (
    -- Server-assigned UUID (v4): reveals nothing about sign-up order.
    id            uuid        PRIMARY KEY,
    -- Normalised by the service (trimmed, lower-cased) before it gets here, so a plain
    -- unique constraint makes emails unique case-insensitively, also under concurrent sign-ups.
    email         text        NOT NULL CONSTRAINT users_email_key UNIQUE,
    -- argon2id PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash); never the password.
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL,
    -- Changes when the account changes (today: when the password hash is upgraded).
    updated_at    timestamptz NOT NULL
);
