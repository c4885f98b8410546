//! task-service, observed through its generated client with tokens minted by the shared keys.
//!
//! One module per concern: who may see what, paging, writes, and the per-account limit.

mod access;
mod paging;
mod quota;
mod writes;
