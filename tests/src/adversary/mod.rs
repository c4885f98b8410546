//! Tools for the adversarial suite: every RPC enumerated from the service descriptor and
//! called with raw protobuf bytes (so hostile encodings can be sent and new RPCs are covered
//! automatically), a wider catalogue of forged tokens, whole-database snapshots, a panic
//! detector, and a small seeded PRNG.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod database;
mod descriptor;
mod health;
mod raw;
mod rng;
mod tokens;
mod wire;

pub use database::*;
pub use descriptor::*;
pub use health::*;
pub use raw::*;
pub use rng::*;
pub use tokens::*;
pub use wire::*;
