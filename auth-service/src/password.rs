//! Password hashing with argon2id, off the async runtime and behind a bound.
//!
//! Each hash takes ~19 MiB and tens of milliseconds of one core. Running them on the async
//! workers would stall every other RPC, and running an unbounded number would exhaust memory
//! under a login flood. So at most `max_in_flight` run at once, at most `max_queued` more wait
//! (each for at most `max_wait`), and the rest are refused at once with RESOURCE_EXHAUSTED.
//!
//! The hashes run on `max_in_flight` dedicated threads rather than tokio's blocking pool, and
//! each thread keeps its own argon2 memory while it is busy (released after a quiet minute):
//! the blocking pool grows to hundreds of threads, each with a malloc arena that keeps freed
//! buffers, while here memory stays at `max_in_flight` x 19 MiB whatever the flood.
//!
//! On Linux the hashing threads run at the lowest CPU priority (SCHED_BATCH, nice 19), so any
//! other thread on the machine that wants a core goes first, and hashes still get every cycle
//! nothing else wants. How much a login flood may still slow other work on a shared host is a
//! deployment decision (CPU limits, fewer hashing slots, a separate replica): see the README.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use argon2::Params;
use argon2::password_hash::phc::PasswordHash;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use todo_shared::metrics::{Counter, Histogram, Metrics, Sampled};

use crate::argon2id::{M_COST_KIB, Memory, OUTPUT_LEN, P_COST, T_COST, hash_with, is_weaker_than_current, verify_with};
use crate::domain::Password;
use crate::error::Error;

/// Bounds on concurrent hashing.
#[derive(Debug, Clone)]
pub struct HashLimits {
    /// Hashes running at once (default: the number of cores).
    pub max_in_flight: usize,
    /// Requests waiting for a slot beyond those running.
    pub max_queued: usize,
    /// Longest wait for a slot before RESOURCE_EXHAUSTED.
    pub max_wait: Duration,
    /// CPU priority of the hashing threads.
    pub priority: HashingPriority,
    /// How long a hashing thread keeps its memory after its last hash.
    pub release_memory_after: Duration,
}

/// CPU priority of the hashing threads (`AUTH_HASHING_PRIORITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashingPriority {
    /// SCHED_BATCH at nice 19 on Linux: every other thread on the machine goes first.
    /// Elsewhere the same as `Normal` (priorities there apply to the whole process).
    Low,
    /// As the rest of the process: logins compete with requests as equals.
    Normal,
}

impl std::str::FromStr for HashingPriority {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(Self::Low),
            "normal" => Ok(Self::Normal),
            _ => Err(()),
        }
    }
}

/// Hash times in seconds: tens of milliseconds alone on a core, seconds when starved.
const HASH_BUCKETS: [f64; 10] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

/// Most hashes running at once, whatever the core count: each holds 19 MiB while it runs.
pub const MAX_CONCURRENT_HASHES: usize = 64;

/// One hash per core, within 1..=[`MAX_CONCURRENT_HASHES`].
fn default_max_in_flight(cores: usize) -> usize {
    cores.clamp(1, MAX_CONCURRENT_HASHES)
}

impl Default for HashLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let max_in_flight = default_max_in_flight(cores);
        Self {
            max_in_flight,
            // Enough to absorb a burst of logins without letting memory or latency grow unbounded.
            max_queued: max_in_flight * 32,
            max_wait: Duration::from_secs(5),
            priority: HashingPriority::Low,
            release_memory_after: Duration::from_secs(60),
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

/// Work for a hashing thread, and the slot it holds until the thread is free again: if the
/// caller goes away mid-hash, the slot stays taken until the hash really ends, so the bound
/// holds.
struct Job {
    work: Box<dyn FnOnce(&mut Memory) + Send>,
    _slot: OwnedSemaphorePermit,
}

pub struct PasswordHasher {
    params: Params,
    /// The senders of the threads that are free to take a job. Holding a `running` slot
    /// guarantees one is here. The threads exit when the hasher is dropped.
    idle: Arc<Mutex<Vec<mpsc::Sender<Job>>>>,
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    max_wait: Duration,
    refused: Counter,
    hash_seconds: Histogram,
    max_in_flight: usize,
    max_queued: usize,
    /// Checked against when the email is unknown, so that case costs the same time as a
    /// wrong password (no account enumeration by timing).
    dummy_hash: String,
}

impl PasswordHasher {
    pub fn new(limits: &HashLimits) -> Result<Self, Error> {
        let params =
            Params::new(M_COST_KIB, T_COST, P_COST, Some(OUTPUT_LEN)).map_err(|e| Error::Hashing(e.to_string()))?;
        let dummy_hash = hash_with(&params, b"dummy password for unknown emails", &mut Memory::default())?;
        let max_in_flight = limits.max_in_flight.max(1);
        let idle = Arc::new(Mutex::new(Vec::with_capacity(max_in_flight)));
        let (priority, release_memory_after) = (limits.priority, limits.release_memory_after);
        for i in 0..max_in_flight {
            let (tx, rx) = mpsc::channel::<Job>();
            let (me, idle_list) = (tx.clone(), Arc::downgrade(&idle));
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    set_priority(priority);
                    let mut memory = Memory::default();
                    loop {
                        match rx.recv_timeout(release_memory_after) {
                            Ok(Job { work, _slot: slot }) => {
                                work(&mut memory);
                                // Back on the idle list before the slot is released, so whoever
                                // gets the slot finds a free thread.
                                let Some(idle) = idle_list.upgrade() else { return };
                                idle.lock().unwrap_or_else(|p| p.into_inner()).push(me.clone());
                                drop(slot);
                            }
                            Err(mpsc::RecvTimeoutError::Timeout) => memory = Memory::default(),
                            Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                })
                .map_err(|e| Error::Hashing(format!("cannot start hashing thread: {e}")))?;
            idle.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        }
        Ok(Self {
            params,
            idle,
            running: Arc::new(Semaphore::new(max_in_flight)),
            admitted: Arc::new(Semaphore::new(max_in_flight + limits.max_queued)),
            max_wait: limits.max_wait,
            refused: Counter::default(),
            hash_seconds: Histogram::new(HASH_BUCKETS),
            max_in_flight,
            max_queued: limits.max_queued,
            dummy_hash,
        })
    }

    /// Registers the hasher's figures: hashes running and queued (read from its semaphores
    /// when scraped), refusals, and the time each hash took on its thread.
    pub fn register_metrics(&self, metrics: &Metrics) {
        let (running, max) = (Arc::clone(&self.running), self.max_in_flight);
        metrics.sample(Sampled::gauge(
            "todo_password_hashes_running",
            "Password hashes (argon2id) running now, at most AUTH_MAX_CONCURRENT_HASHES.",
            move || max.saturating_sub(running.available_permits()) as f64,
        ));
        let (running, admitted, admitted_max) =
            (Arc::clone(&self.running), Arc::clone(&self.admitted), self.max_in_flight + self.max_queued);
        metrics.sample(Sampled::gauge(
            "todo_password_hashes_queued",
            "Password hashes waiting for a hashing thread.",
            move || {
                let admitted = admitted_max.saturating_sub(admitted.available_permits());
                admitted.saturating_sub(max.saturating_sub(running.available_permits())) as f64
            },
        ));
        metrics.register(
            "todo_password_hashes_refused",
            "Password hashes refused with RESOURCE_EXHAUSTED: the queue was full or the wait too long.",
            self.refused.clone(),
        );
        metrics.register(
            "todo_password_hash_seconds",
            "Time one password hash or check took on its hashing thread, in seconds.",
            self.hash_seconds.clone(),
        );
    }

    /// The PHC string of a fresh argon2id hash of `password`.
    pub async fn hash(&self, password: Password) -> Result<String, Error> {
        let params = self.params.clone();
        self.run(move |memory| hash_with(&params, password.as_bytes(), memory)).await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no account.
    pub async fn verify(&self, password: Password, stored: Option<String>) -> Result<Verification, Error> {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_hash.clone());
        let verification = self
            .run(move |memory| {
                let Ok(hash) = PasswordHash::new(&phc) else {
                    tracing::error!("stored password hash is not a valid PHC string");
                    return Verification::Mismatch;
                };
                match verify_with(&hash, password.as_bytes(), memory) {
                    Ok(true) => Verification::Match { needs_rehash: is_weaker_than_current(&hash) },
                    Ok(false) => Verification::Mismatch,
                    Err(err) => {
                        tracing::error!(error = %err, "stored password hash cannot be checked");
                        Verification::Mismatch
                    }
                }
            })
            .await?;
        Ok(if known { verification } else { Verification::Mismatch })
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce(&mut Memory) -> T + Send + 'static) -> Result<T, Error> {
        let overloaded = || {
            self.refused.inc();
            Error::Overloaded { retry_after: Duration::from_secs(1) }
        };
        let _admitted = self.admitted.clone().try_acquire_owned().map_err(|_| overloaded())?;
        let slot = tokio::time::timeout(self.max_wait, self.running.clone().acquire_owned())
            .await
            .map_err(|_| overloaded())?
            .map_err(|_| overloaded())?;
        let span = tracing::Span::current();
        let (done, result) = tokio::sync::oneshot::channel();
        let hash_seconds = self.hash_seconds.clone();
        let job = Job {
            work: Box::new(move |memory| {
                let started = std::time::Instant::now();
                let outcome = span.in_scope(|| work(memory));
                hash_seconds.observe(started.elapsed().as_secs_f64());
                let _ = done.send(outcome);
            }),
            _slot: slot,
        };
        let thread = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let stopped = || Error::Hashing("hashing threads stopped".to_owned());
        thread.ok_or_else(stopped)?.send(job).map_err(|_| stopped())?;
        result.await.map_err(|_| Error::Hashing("hashing thread panicked".to_owned()))
    }
}

/// Puts the calling thread in the `Low` class. Needs no privilege (it only lowers); failing is
/// not fatal (hashes then compete with requests as equals), so it is logged and hashing goes on.
#[cfg(target_os = "linux")]
fn set_priority(priority: HashingPriority) {
    use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
    if priority == HashingPriority::Normal {
        return;
    }
    // `Min` under a normal policy is nice 19; the call applies to this thread only.
    let batch = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
    if let Err(err) =
        thread_priority::set_thread_priority_and_policy(thread_priority::thread_native_id(), ThreadPriority::Min, batch)
    {
        tracing::warn!(error = ?err, "cannot lower the priority of a hashing thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn set_priority(_priority: HashingPriority) {}

#[cfg(test)]
mod tests {
    use argon2::{Algorithm, Argon2, Version};

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
    async fn our_hashes_are_standard_phc_strings_the_reference_verifier_accepts() {
        use argon2::PasswordVerifier as _;
        let phc = hasher().hash(Password::parse_new("correct horse").unwrap()).await.unwrap();
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"wrong horse", &parsed).is_err());
        // Fresh salt every time.
        assert_ne!(phc, hasher().hash(Password::parse_new("correct horse").unwrap()).await.unwrap());
    }

    #[tokio::test]
    async fn weaker_hashes_are_flagged_for_rehash() {
        use argon2::PasswordHasher as _;
        let weak = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(4096, 1, 1, None).unwrap())
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        let verification = hasher().verify(Password::parse_login("correct horse").unwrap(), Some(weak)).await;
        assert_eq!(verification.unwrap(), Verification::Match { needs_rehash: true });
    }

    #[test]
    fn the_default_is_one_hash_per_core_within_the_cap() {
        assert_eq!(default_max_in_flight(1), 1);
        assert_eq!(default_max_in_flight(2), 2);
        assert_eq!(default_max_in_flight(64), 64);
        // A big host starts with the cap instead of refusing its own default.
        assert_eq!(default_max_in_flight(192), MAX_CONCURRENT_HASHES);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_not_queued() {
        let limits = HashLimits {
            max_in_flight: 1,
            max_queued: 0,
            max_wait: Duration::from_secs(5),
            priority: HashingPriority::Normal,
            ..HashLimits::default()
        };
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
