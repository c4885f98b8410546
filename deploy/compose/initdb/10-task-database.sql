-- The compose deployment's second database: task-service's (auth-service's is POSTGRES_DB).
CREATE DATABASE todo_tasks OWNER todo;
