-- See the PostgreSQL migration: purges of deleted accounts are done up to `position`.
CREATE TABLE auth_feed_position (
    singleton INTEGER PRIMARY KEY NOT NULL DEFAULT 1 CONSTRAINT auth_feed_position_singleton CHECK (singleton = 1),
    position  INTEGER NOT NULL
) STRICT;
INSERT INTO auth_feed_position (singleton, position) VALUES (1, 0);
