//! Password hashing with argon2id, off the async runtime and behind a bound.
//!
//! Each hash takes ~19 MiB and tens of milliseconds of one core. Running them on the async
//! workers would stall every other RPC, and running an unbounded number would exhaust memory
//! under a login flood. So at most `max_in_flight` run at once, at most `max_queued` more wait
//! (each for at most `max_wait`), and the rest are refused at once with RESOURCE_EXHAUSTED.
//!
//! The hashes run on `max_in_flight` dedicated threads rather than tokio's blocking pool. The
//! pool hands work to whichever of its (up to 512) threads is free, and glibc gives each thread
//! its own heap arena that keeps a freed 19 MiB buffer for reuse: measured, a flood of 400
//! sign-ups left the process at 556 MB. With a fixed set of threads, at most `max_in_flight`
//! buffers ever exist.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use tokio::sync::Semaphore;

use crate::domain::Password;
use crate::error::Error;

/// OWASP Password Storage Cheat Sheet: argon2id, m = 19 MiB, t = 2, p = 1.
pub const M_COST_KIB: u32 = 19_456;
pub const T_COST: u32 = 2;
pub const P_COST: u32 = 1;

/// Bounds on concurrent hashing.
#[derive(Debug, Clone)]
pub struct HashLimits {
    /// Hashes running at once (default: the number of cores).
    pub max_in_flight: usize,
    /// Requests waiting for a slot beyond those running.
    pub max_queued: usize,
    /// Longest wait for a slot before RESOURCE_EXHAUSTED.
    pub max_wait: Duration,
}

impl Default for HashLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            max_in_flight: cores,
            // Enough to absorb a burst of logins without letting memory or latency grow unbounded.
            max_queued: cores * 32,
            max_wait: Duration::from_secs(5),
        }
    }
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Right password. `needs_rehash` when the stored hash uses weaker parameters than today's.
    Match {
        needs_rehash: bool,
    },
    Mismatch,
}

type Job = Box<dyn FnOnce() + Send>;

pub struct PasswordHasher {
    argon2: Argon2<'static>,
    /// Feeds the worker threads; they exit when the hasher (and so this sender) is dropped.
    jobs: mpsc::Sender<Job>,
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    max_wait: Duration,
    /// Checked against when the email is unknown, so that case costs the same time as a
    /// wrong password (no account enumeration by timing).
    dummy_hash: String,
}

impl PasswordHasher {
    pub fn new(limits: &HashLimits) -> Result<Self, Error> {
        let params = Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(|e| Error::Hashing(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = argon2
            .hash_password(b"dummy password for unknown emails")
            .map_err(|e| Error::Hashing(e.to_string()))?
            .to_string();
        let max_in_flight = limits.max_in_flight.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..max_in_flight {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job, not while hashing.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| Error::Hashing(format!("cannot start hashing thread: {e}")))?;
        }
        Ok(Self {
            argon2,
            jobs,
            running: Arc::new(Semaphore::new(max_in_flight)),
            admitted: Arc::new(Semaphore::new(max_in_flight + limits.max_queued)),
            max_wait: limits.max_wait,
            dummy_hash,
        })
    }

    /// The PHC string of a fresh argon2id hash of `password`.
    pub async fn hash(&self, password: Password) -> Result<String, Error> {
        let argon2 = self.argon2.clone();
        self.run(move || {
            argon2
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| Error::Hashing(e.to_string()))
        })
        .await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no account.
    pub async fn verify(&self, password: Password, stored: Option<String>) -> Result<Verification, Error> {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_hash.clone());
        let argon2 = self.argon2.clone();
        let verification = self
            .run(move || {
                let Ok(hash) = PasswordHash::new(&phc) else {
                    tracing::error!("stored password hash is not a valid PHC string");
                    return Verification::Mismatch;
                };
                match argon2.verify_password(password.as_bytes(), &hash) {
                    Ok(()) => Verification::Match { needs_rehash: is_weaker_than_current(&hash) },
                    Err(_) => Verification::Mismatch,
                }
            })
            .await?;
        Ok(if known { verification } else { Verification::Mismatch })
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
        let overloaded = || Error::Overloaded { retry_after: Duration::from_secs(1) };
        let _admitted = self.admitted.clone().try_acquire_owned().map_err(|_| overloaded())?;
        let running = tokio::time::timeout(self.max_wait, self.running.clone().acquire_owned())
            .await
            .map_err(|_| overloaded())?
            .map_err(|_| overloaded())?;
        let span = tracing::Span::current();
        let (done, result) = tokio::sync::oneshot::channel();
        // The slot moves into the job: if the caller goes away mid-hash, the slot stays taken
        // until the hash really ends, so the bound holds. Holding a slot also means a worker
        // is free, so the job never waits in the channel.
        let job: Job = Box::new(move || {
            let _running = running;
            let _ = done.send(span.in_scope(work));
        });
        self.jobs.send(job).map_err(|_| Error::Hashing("hashing threads stopped".to_owned()))?;
        result.await.map_err(|_| Error::Hashing("hashing thread panicked".to_owned()))
    }
}

fn is_weaker_than_current(hash: &PasswordHash) -> bool {
    if hash.algorithm.as_str() != "argon2id" {
        return true;
    }
    match Params::try_from(hash) {
        Ok(params) => params.m_cost() < M_COST_KIB || params.t_cost() < T_COST,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> PasswordHasher {
        PasswordHasher::new(&HashLimits::default()).unwrap()
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters() {
        let phc = hasher().hash(Password::parse_new("correct horse").unwrap()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    }

    #[tokio::test]
    async fn verify_tells_right_from_wrong_and_unknown() {
        let hasher = hasher();
        let phc = hasher.hash(Password::parse_new("correct horse").unwrap()).await.unwrap();
        let right = Password::parse_login("correct horse").unwrap();
        let wrong = Password::parse_login("wrong horse").unwrap();
        assert_eq!(
            hasher.verify(right.clone(), Some(phc.clone())).await.unwrap(),
            Verification::Match { needs_rehash: false }
        );
        assert_eq!(hasher.verify(wrong, Some(phc)).await.unwrap(), Verification::Mismatch);
        assert_eq!(hasher.verify(right, None).await.unwrap(), Verification::Mismatch);
    }

    #[tokio::test]
    async fn weaker_hashes_are_flagged_for_rehash() {
        let weak = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(4096, 1, 1, None).unwrap())
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        let verification = hasher().verify(Password::parse_login("correct horse").unwrap(), Some(weak)).await;
        assert_eq!(verification.unwrap(), Verification::Match { needs_rehash: true });
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_not_queued() {
        let limits = HashLimits { max_in_flight: 1, max_queued: 0, max_wait: Duration::from_secs(5) };
        let hasher = Arc::new(hasher_with(&limits));
        let first = {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.hash(Password::parse_new("password one").unwrap()).await })
        };
        // Wait until the first hash holds the only slot.
        while hasher.admitted.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let second = hasher.hash(Password::parse_new("password two").unwrap()).await;
        assert!(matches!(second, Err(Error::Overloaded { .. })));
        assert!(first.await.unwrap().is_ok());
    }

    fn hasher_with(limits: &HashLimits) -> PasswordHasher {
        PasswordHasher::new(limits).unwrap()
    }
}
