//! The wire contract and the pieces both services must agree on.
//!
//! - [`pb`]: code generated from `proto/` (messages, clients, servers) and the encoded
//!   descriptor set served by reflection.
//! - [`token`]: the JWT contract. Minting (auth-service) and verifying (both services) live
//!   side by side so the two can never drift apart.
//! - [`auth`]: the bearer-token interceptor that puts the [`auth::AuthenticatedUser`] into the
//!   request extensions.
//! - [`config`], [`cors`], [`db`], [`pg_pool`], [`server`], [`telemetry`]: start-up plumbing
//!   shared by both binaries: typed configuration, the database pools (PostgreSQL's our own)
//!   and their supervisor, the gRPC host with health, reflection and gRPC-web, and one tracing
//!   line per RPC.
//! - [`validation`] and [`timestamp`]: request-edge helpers.

pub mod auth;
pub mod config;
pub mod cors;
pub mod db;
pub mod health;
pub mod limits;
pub mod pg_pool;
pub mod readiness;
pub mod server;
pub mod supervisor;
pub mod telemetry;
pub mod timestamp;
pub mod token;
pub mod validation;

/// Code generated from `proto/`. Generated code is not held to our lints.
#[allow(clippy::all)]
pub mod pb {
    pub mod auth {
        pub mod v1 {
            tonic::include_proto!("todo.auth.v1");
        }
    }
    pub mod task {
        pub mod v1 {
            tonic::include_proto!("todo.task.v1");
        }
    }

    /// Encoded `FileDescriptorSet` of every file in `proto/` and its imports, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("todo_descriptor");
}
