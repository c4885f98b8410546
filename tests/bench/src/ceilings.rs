//! The login ceiling: argon2id verifications per second on every core, with auth-service's
//! parameters, straight from the argon2 crate (no runtime, no RPC, no database).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use auth_service::argon2id::{M_COST_KIB, P_COST, T_COST};

use crate::Result;
use crate::load::Timing;

/// Verifications per second with one thread per core, counted like the load generator counts
/// calls: those finished inside the window, after a warm-up.
pub fn hashes_per_second(timing: Timing) -> Result<f64> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(|e| e.to_string())?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let phc = argon2.hash_password(b"bench password 0").map_err(|e| e.to_string())?.to_string();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let phase = Arc::new(AtomicU8::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (argon2, phc, phase, done) = (argon2.clone(), phc.clone(), phase.clone(), done.clone());
        handles.push(std::thread::spawn(move || -> Result<(), String> {
            let hash = PasswordHash::new(&phc).map_err(|e| e.to_string())?;
            while phase.load(Ordering::Acquire) != 2 {
                argon2.verify_password(b"bench password 0", &hash).map_err(|e| e.to_string())?;
                if phase.load(Ordering::Acquire) == 1 {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        }));
    }
    std::thread::sleep(timing.warmup);
    phase.store(1, Ordering::Release);
    let start = Instant::now();
    std::thread::sleep(timing.window.max(Duration::from_millis(500)));
    phase.store(2, Ordering::Release);
    let elapsed = start.elapsed();
    for handle in handles {
        handle.join().map_err(|_| "hashing thread panicked")??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}
