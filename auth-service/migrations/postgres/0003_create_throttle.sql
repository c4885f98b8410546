-- Password-attempt throttles (src/throttle/), shared by every replica of auth-service: one
-- row per throttled key holding its GCRA theoretical arrival time. A key whose `tat` has
-- passed has its whole burst again, exactly as if it had no row; such rows are pruned.
--
-- UNLOGGED: a write here costs no WAL record and no flush (nor, with synchronous
-- replication, a round trip to the standby), and a refused attempt writes nothing durable.
-- The price: after a crash or a failover the counts start again from zero, once. That is
-- not something a client can cause, and it hands each attacker one fresh burst at most.
CREATE UNLOGGED TABLE auth_throttle (
    -- HMAC-SHA256 (under a key derived from JWT_SECRET) of the limit's tag and the email or
    -- address, truncated to 128 bits: the table holds no email and no address.
    key bytea       PRIMARY KEY,
    tat timestamptz NOT NULL
);
