//! The pieces both services must agree on, and the scaffolding they both run in. The wire
//! contract itself (generated code, descriptor set) is the `todo-contract` crate.
//!
//! - [`token`]: the JWT contract. Minting (auth-service) and verifying (both services) live
//!   side by side so the two can never drift apart.
//! - [`auth`]: the bearer-token interceptor that puts the [`auth::AuthenticatedUser`] into the
//!   request extensions.
//! - [`config`]: typed configuration read once from the environment.
//! - [`db`] and [`pg_pool`]: the database, chosen from the URL, its pools (PostgreSQL's is bb8
//!   with a manager of ours), migrations, and how its failures become statuses.
//! - [`server`]: the gRPC host, with [`telemetry`], [`cors`] and [`limits`] as its layers,
//!   [`readiness`] and [`health`], and the database [`supervisor`].
//! - [`validation`] and [`timestamp`]: request-edge helpers.

pub mod auth;
pub mod config;
pub mod cors;
pub mod db;
pub mod health;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod pg_pool;
pub mod rate_limit;
pub mod readiness;
pub mod request_id;
pub mod server;
pub mod supervisor;
pub mod telemetry;
pub mod timestamp;
pub mod tls;
pub mod token;
pub mod validation;
