-- Where task-service is in auth-service's session-event log: every account deletion up to
-- `position` has had its tasks purged. On start, deletions after it are purged again
-- (idempotent), so a deletion that happened while task-service was down is not missed.
CREATE TABLE auth_feed_position (
    singleton boolean PRIMARY KEY DEFAULT true CONSTRAINT auth_feed_position_singleton CHECK (singleton),
    position  bigint  NOT NULL
);
INSERT INTO auth_feed_position (singleton, position) VALUES (true, 0);
