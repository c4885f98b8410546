//! Test support: fresh databases on PostgreSQL and SQLite, the real services started
//! in-process on `127.0.0.1:0`, generated clients connected to them, and token forgery.
//!
//! PostgreSQL tests need `TEST_DATABASE_URL` to name a server we may create databases on.
//! Without it they fail with one line saying so; `cargo test -- --skip postgres` excludes them
//! explicitly (every PostgreSQL test has `postgres` in its path), and the run counts them as
//! filtered out.

pub mod adversary;
pub mod certs;
mod clients;
mod db;
pub mod ha;
pub mod proxy;
mod scrape;
mod services;
mod tokens;

// The support itself, re-exported whole so `use todo_tests::*;` brings all of it.
pub use clients::*;
pub use db::*;
pub use scrape::*;
pub use services::*;
pub use tokens::*;

use todo_shared::config::TokenConfig;

pub use todo_contract as pb;

/// The secret every test service shares.
pub const SECRET: &str = "test-secret-that-is-long-enough-for-hs256!";
pub const ISSUER: &str = TokenConfig::DEFAULT_ISSUER;
pub const AUDIENCE: &str = TokenConfig::DEFAULT_AUDIENCE;
/// What a revoked (or deleted user's) access token is told, by both services.
pub const REVOKED: &str = "token has been revoked (signed out, password changed or account deleted): log in again";
/// What every unusable refresh token is told.
pub const BAD_REFRESH: &str = "refresh token is invalid, expired or revoked: log in again";
/// The browser origin the test servers allow through CORS.
pub const WEB_ORIGIN: &str = "https://app.example.test";

/// Generates one `#[tokio::test]` per backend for each scenario, so every behavioural test
/// runs on PostgreSQL and on SQLite.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await;
                }
            )*
        }
    };
}
