-- Each user's number of tasks, on the user's change-head row. Every create, delete and purge
-- updates it in the same statement as the change, under the head row's lock, so
-- TASK_MAX_TASKS_PER_USER is checked against it exactly however many creates race.
ALTER TABLE task_change_heads ADD COLUMN tasks bigint NOT NULL DEFAULT 0;

-- Users with tasks but no change yet get a head at position 0 (the same as none).
INSERT INTO task_change_heads (user_id, position, tasks)
SELECT user_id, 0, count(*) FROM tasks GROUP BY user_id
ON CONFLICT (user_id) DO UPDATE SET tasks = EXCLUDED.tasks;
