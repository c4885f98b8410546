//! The behavioural suite: every scenario runs on PostgreSQL and on SQLite.

mod adversarial;
mod auth;
mod e2e;
mod faults;
mod health;
mod limits;
mod model;
mod point_reads;
mod pool;
mod reflection;
mod tasks;
mod throttle;
mod web;
