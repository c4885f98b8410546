//! The behavioural suite: every scenario runs on PostgreSQL and on SQLite.
//! Every test that needs PostgreSQL has `postgres` in its path (see `todo_tests::require`).

mod adversarial;
mod auth;
mod e2e;
mod faults;
mod health;
mod limits;
mod metrics;
mod model;
mod postgres_pool;
mod postgres_tls;
mod reflection;
mod request_id;
mod sessions;
mod tasks;
mod throttle;
mod tls;
mod transport;
mod watch;
mod web;
