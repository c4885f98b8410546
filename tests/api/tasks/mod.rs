//! task-service, observed through its generated client with tokens minted by the shared keys.
//!
//! One module per concern: who may see what, paging, and writes.

mod access;
mod paging;
mod writes;
