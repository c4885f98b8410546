//! The behavioural suite: every scenario runs on PostgreSQL and on SQLite.

mod auth;
mod e2e;
mod health;
mod tasks;
mod web;
