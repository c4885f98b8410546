-- auth-service's throttle statement (auth-service/src/store/postgres_throttle.rs) as pgbench
-- runs it: one login attempt charging a random address (120/min) then a random email
-- (10/min). Set up and run (BENCHMARKS.md, "Throttles shared by replicas"):
--   createdb -h 127.0.0.1 -U postgres throttle_bench
--   psql -h 127.0.0.1 -U postgres throttle_bench -c "CREATE UNLOGGED TABLE auth_throttle (key bytea PRIMARY KEY, tat timestamptz NOT NULL)"
--   pgbench -h 127.0.0.1 -U postgres -n -M prepared -c 1 -j 1 -T 6 -f tests/bench/sql/throttle_spend.sql throttle_bench
-- For the logged comparison, create the table without UNLOGGED.
\set a random(1, 100000)
\set e random(1000001, 2000000)
WITH first AS (
    INSERT INTO auth_throttle AS t (key, tat)
    VALUES (int8send(:a::int8), now() + 500000 * interval '1 microsecond')
    ON CONFLICT (key) DO UPDATE SET tat = greatest(t.tat, now()) + 500000 * interval '1 microsecond'
        WHERE t.tat <= now() + 59500000 * interval '1 microsecond'
    RETURNING 1
), second AS (
    INSERT INTO auth_throttle AS t (key, tat)
    SELECT int8send(:e::int8), now() + 6000000 * interval '1 microsecond'
    WHERE EXISTS (SELECT 1 FROM first)
    ON CONFLICT (key) DO UPDATE SET tat = greatest(t.tat, now()) + 6000000 * interval '1 microsecond'
        WHERE t.tat <= now() + 54000000 * interval '1 microsecond'
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM first), EXISTS (SELECT 1 FROM second),
    (SELECT (extract(epoch FROM tat - now()) * 1000000)::int8 FROM auth_throttle WHERE key = int8send(:a::int8)),
    (SELECT (extract(epoch FROM tat - now()) * 1000000)::int8 FROM auth_throttle WHERE key = int8send(:e::int8));
