//! The wire contract: code generated from `proto/` (messages, clients, servers) and the
//! encoded descriptor set served by reflection.
//!
//! A crate of its own so that a tool or a Rust client can depend on the contract without the
//! servers' scaffolding (sqlx, the pool, the host) that `todo-shared` brings.

/// Code generated from `proto/`. Generated code is not held to our lints.
#[allow(clippy::all)]
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("todo.auth.v1");
    }
    pub mod internal {
        pub mod v1 {
            tonic::include_proto!("todo.auth.internal.v1");
        }
    }
}

#[allow(clippy::all)]
pub mod task {
    pub mod v1 {
        tonic::include_proto!("todo.task.v1");
    }
}

/// Encoded `FileDescriptorSet` of every file in `proto/` and its imports, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("todo_descriptor");
