//! argon2id itself: today's parameters, the working memory a hashing thread reuses, and PHC
//! strings, formatted and parsed by the argon2 crate's `PasswordHash`. The crate's own
//! `PasswordHasher`/`PasswordVerifier` traits allocate fresh memory for every hash; only
//! `hash_password_into_with_memory` takes memory the caller keeps, so hashing goes through it.

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, Version};

use crate::error::Error;

/// OWASP Password Storage Cheat Sheet: argon2id, m = 19 MiB, t = 2, p = 1.
pub const M_COST_KIB: u32 = 19_456;
pub const T_COST: u32 = 2;
pub const P_COST: u32 = 1;

/// Salt length: the PHC and OWASP recommendation.
const SALT_LEN: usize = 16;
/// Hash output length (argon2's default).
pub const OUTPUT_LEN: usize = 32;

/// A thread's argon2 working memory, allocated on first use and kept while busy.
#[derive(Default)]
pub struct Memory(Vec<Block>);

/// Bytes reserved for each thread's memory, whatever the parameters need: more than glibc's
/// largest dynamic mmap threshold (32 MiB). Below it, the first 19 MiB block freed raises
/// the threshold past 19 MiB, later blocks come from malloc's arenas, and freeing them
/// returns nothing to the OS: after a login burst auth-service kept a block per thread
/// resident instead of going back to its idle size. Above it every block is its own mapping and
/// freeing unmaps it. Only the pages argon2 touches become resident.
const RESERVE_BYTES: usize = 33 << 20;

impl Memory {
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.0.len() < count {
            self.0 = Vec::new();
            let reserve = count.max(RESERVE_BYTES / std::mem::size_of::<Block>());
            self.0.reserve_exact(reserve);
            self.0.resize(count, Block::new());
        }
        &mut self.0[..count]
    }
}
fn hashing_error(err: impl std::fmt::Display) -> Error {
    Error::Hashing(err.to_string())
}

/// argon2id of `password` under a fresh random salt, as a PHC string, computed in `memory`.
pub fn hash_with(params: &Params, password: &[u8], memory: &mut Memory) -> Result<String, Error> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(hashing_error)?;
    let mut output = [0u8; OUTPUT_LEN];
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    argon2
        .hash_password_into_with_memory(password, &salt, &mut output, memory.blocks(params.block_count()))
        .map_err(hashing_error)?;
    let phc = PasswordHash {
        algorithm: ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(hashing_error)?,
        salt: Some(Salt::new(&salt).map_err(hashing_error)?),
        hash: Some(Output::new(&output).map_err(hashing_error)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the stored hash, under the hash's own algorithm and parameters
/// (older, weaker ones included), compared in constant time.
pub fn verify_with(stored: &PasswordHash, password: &[u8], memory: &mut Memory) -> Result<bool, Error> {
    let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else { return Ok(false) };
    let algorithm = Algorithm::try_from(stored.algorithm.as_str()).map_err(hashing_error)?;
    let version = stored.version.map(Version::try_from).transpose().map_err(hashing_error)?.unwrap_or_default();
    let params = Params::try_from(stored).map_err(hashing_error)?;
    let mut output = [0u8; Output::MAX_LENGTH];
    let output = output.get_mut(..expected.len()).ok_or_else(|| hashing_error("hash output too long"))?;
    Argon2::new(algorithm, version, params.clone())
        .hash_password_into_with_memory(password, salt.as_ref(), output, memory.blocks(params.block_count()))
        .map_err(hashing_error)?;
    Ok(Output::new(output).map_err(hashing_error)? == *expected)
}

pub fn is_weaker_than_current(hash: &PasswordHash) -> bool {
    if hash.algorithm.as_str() != "argon2id" {
        return true;
    }
    match Params::try_from(hash) {
        Ok(params) => params.m_cost() < M_COST_KIB || params.t_cost() < T_COST,
        Err(_) => true,
    }
}
