//! Password hashing with argon2id, off the async runtime and behind a bound.
//!
//! Each hash takes ~19 MiB and tens of milliseconds of one core. Running them on the async
//! workers would stall every other RPC, and running an unbounded number would exhaust memory
//! under a login flood. So at most `max_in_flight` run at once, at most `max_queued` more wait
//! (each for at most `max_wait`), and the rest are refused at once with RESOURCE_EXHAUSTED.
//!
//! The hashes run on `max_in_flight` dedicated threads rather than tokio's blocking pool, and
//! each thread keeps its own 19 MiB of argon2 memory for as long as it is busy (released after
//! a quiet minute). Measured: with tokio's pool (up to 512 threads, each with a glibc arena
//! that keeps freed buffers) a flood of 400 sign-ups left the process at 556 MB; with fixed
//! threads allocating per hash, 226 MB; with memory reused per thread, the bound is
//! `max_in_flight` x 19 MiB whatever the flood.
//!
//! On Linux the hashing threads run at the lowest CPU priority: SCHED_BATCH at nice 19. With
//! one hashing thread per core, a login flood otherwise occupies every core in 16 ms stretches
//! and every other RPC, here and in any service sharing the machine, waits its turn behind
//! them: measured, GetTask's p99 on task-service went from 0.46 ms to 4.5 ms while Login
//! saturated auth-service. Nice 19 alone brought it to 2-4x; SCHED_BATCH as well (the kernel
//! then treats the threads as CPU-bound and lets a waking request thread in at once) to ~1x.
//! Hashes still get every cycle nothing else wants, so Login throughput on an otherwise idle
//! machine is unchanged.
//!
//! Priority alone did not protect this process's own other RPCs: with every core hashing, a
//! GetCurrentUser's p99 went from ~0.4 ms to 1-3 ms (the kernel lets a running thread finish
//! its slice before a woken tokio worker gets the CPU, whatever the nice value). So while other
//! RPCs are arriving (one in the last [`HashLimits::foreground_window`]), hashes leave
//! [`HashLimits::spare_cores`] cores to them and the rest of the slots wait. Nor did it protect
//! other processes on hosts whose kernel behaves the same way: there GetTask's p99 on
//! task-service went 3.8x during a login flood. So hashes also leave those cores while other
//! work on the machine uses CPU ([`crate::cpu_demand`]). A flood of logins alone still hashes
//! on every core.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::cpu_demand::CpuDemand;
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
    /// CPU priority of the hashing threads.
    pub priority: HashingPriority,
    /// How long a hashing thread keeps its memory after its last hash.
    pub release_memory_after: Duration,
    /// Cores left free of hashing while other RPCs are arriving or other work on the machine
    /// uses CPU (default 1, or 0 with a single slot); always fewer than `max_in_flight`.
    pub spare_cores: usize,
    /// How long after another RPC arrived the spare cores stay reserved.
    pub foreground_window: Duration,
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

/// Most hashes running at once, whatever the core count: each holds 19 MiB while it runs.
pub const MAX_CONCURRENT_HASHES: usize = 64;

/// One hash per core, within 1..=[`MAX_CONCURRENT_HASHES`].
fn default_max_in_flight(cores: usize) -> usize {
    cores.clamp(1, MAX_CONCURRENT_HASHES)
}

/// One core for other RPCs, unless that would leave no slot for hashing.
pub fn default_spare_cores(max_in_flight: usize) -> usize {
    max_in_flight.saturating_sub(1).min(1)
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
            spare_cores: default_spare_cores(max_in_flight),
            // Longer than a hash (15-40 ms), so a steady stream of requests keeps its core
            // between one request and the next; short enough that a lull hands it back fast.
            foreground_window: Duration::from_millis(100),
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

/// Salt length: the PHC and OWASP recommendation.
const SALT_LEN: usize = 16;
/// Hash output length (argon2's default).
const OUTPUT_LEN: usize = 32;

/// Work for a hashing thread, and the slot it holds until the thread is free again.
struct Job {
    work: Box<dyn FnOnce(&mut Memory) + Send>,
    slot: Slot,
}

/// A slot whose hash has been let start; dropping it ends the hash's claim on a core.
struct Slot {
    _permit: OwnedSemaphorePermit,
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.hashing.fetch_sub(1, Ordering::AcqRel);
        self.gate.hash_ended.notify_waiters();
    }
}

/// Decides when a hash holding a slot may start: at once while only logins are arriving; while
/// other RPCs are too, or other work on the machine wants CPU, only if that leaves `spare`
/// cores free of hashing.
struct Gate {
    slots: usize,
    spare: usize,
    window: Duration,
    /// Hashes started and not yet ended.
    hashing: AtomicUsize,
    hash_ended: Notify,
    epoch: Instant,
    /// When another RPC last arrived, in µs since `epoch` (0: never).
    foreground_at: AtomicU64,
    /// The machine-wide signal; `None` where it is unavailable or meaningless (hashing at
    /// normal priority books its own time where other work's goes).
    other_work: Option<CpuDemand>,
}

impl Gate {
    fn note_foreground(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
        self.foreground_at.fetch_max(now, Ordering::Relaxed);
    }

    /// How much longer the spare cores stay reserved, if they are.
    fn reserved_for(&self) -> Option<Duration> {
        if self.spare == 0 {
            return None;
        }
        let elapsed = self.epoch.elapsed();
        let at = self.foreground_at.load(Ordering::Relaxed);
        let ours = (at != 0)
            .then(|| (Duration::from_micros(at) + self.window).saturating_sub(elapsed))
            .filter(|left| !left.is_zero());
        ours.or_else(|| self.other_work.as_ref()?.busy_for(self.epoch + elapsed))
    }

    /// Counts a hash as started if it may start now; otherwise how long the reservation lasts.
    fn try_start(&self) -> Result<(), Option<Duration>> {
        let claim = |limit: usize| {
            self.hashing.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1)).is_ok()
        };
        // The reservation is only looked up for a hash that would take a spared core.
        if claim(self.slots - self.spare) {
            return Ok(());
        }
        let reserved = self.reserved_for();
        if reserved.is_none() && claim(self.slots) { Ok(()) } else { Err(reserved) }
    }

    /// Waits until a hash may start, and counts it as started.
    async fn start(&self) {
        loop {
            // Registered before the check, so a hash ending in between is not missed.
            let ended = self.hash_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            match self.try_start() {
                Ok(()) => return,
                Err(Some(reserved)) => {
                    tokio::select! {
                        () = ended => {}
                        () = tokio::time::sleep(reserved) => {}
                    }
                }
                Err(None) => ended.await,
            }
        }
    }
}

/// A thread's argon2 working memory, allocated on first use and kept while busy.
struct Memory(Vec<Block>);

/// Bytes reserved for each thread's memory, whatever the parameters need: more than glibc's
/// largest dynamic mmap threshold (32 MiB). Below it, the first 19 MiB block freed raises
/// the threshold past 19 MiB, later blocks come from malloc's arenas, and freeing them
/// returns nothing to the OS: auth-service then sat at ~88 MiB after a login burst, four
/// blocks, instead of going back to ~9 MiB. Above it every block is its own mapping and
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

pub struct PasswordHasher {
    params: Params,
    /// The senders of the threads that are free to take a job. Holding a `running` slot
    /// guarantees one is here. The threads exit when the hasher is dropped.
    idle: Arc<Mutex<Vec<mpsc::Sender<Job>>>>,
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    gate: Arc<Gate>,
    max_wait: Duration,
    /// Checked against when the email is unknown, so that case costs the same time as a
    /// wrong password (no account enumeration by timing).
    dummy_hash: String,
}

impl PasswordHasher {
    pub fn new(limits: &HashLimits) -> Result<Self, Error> {
        let watch_machine = limits.priority == HashingPriority::Low && limits.spare_cores > 0;
        Self::with_other_work(limits, if watch_machine { CpuDemand::from_proc() } else { None })
    }

    fn with_other_work(limits: &HashLimits, other_work: Option<CpuDemand>) -> Result<Self, Error> {
        let params =
            Params::new(M_COST_KIB, T_COST, P_COST, Some(OUTPUT_LEN)).map_err(|e| Error::Hashing(e.to_string()))?;
        let dummy_hash = hash_with(&params, b"dummy password for unknown emails", &mut Memory(Vec::new()))?;
        let max_in_flight = limits.max_in_flight.max(1);
        let gate = Arc::new(Gate {
            slots: max_in_flight,
            spare: limits.spare_cores.min(max_in_flight - 1),
            window: limits.foreground_window,
            hashing: AtomicUsize::new(0),
            hash_ended: Notify::new(),
            epoch: Instant::now(),
            foreground_at: AtomicU64::new(0),
            other_work,
        });
        let idle = Arc::new(Mutex::new(Vec::with_capacity(max_in_flight)));
        let (priority, release_memory_after) = (limits.priority, limits.release_memory_after);
        for i in 0..max_in_flight {
            let (tx, rx) = mpsc::channel::<Job>();
            let (me, idle_list) = (tx.clone(), Arc::downgrade(&idle));
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    set_priority(priority);
                    let mut memory = Memory(Vec::new());
                    loop {
                        match rx.recv_timeout(release_memory_after) {
                            Ok(job) => {
                                (job.work)(&mut memory);
                                // Back on the idle list before the slot is released, so whoever
                                // gets the slot finds a free thread.
                                let Some(idle) = idle_list.upgrade() else { return };
                                idle.lock().unwrap_or_else(|p| p.into_inner()).push(me.clone());
                                drop(job.slot);
                            }
                            Err(mpsc::RecvTimeoutError::Timeout) => memory = Memory(Vec::new()),
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
            gate,
            max_wait: limits.max_wait,
            dummy_hash,
        })
    }

    /// Tells the hasher that an RPC other than a sign-up or login arrived, so that for a while
    /// hashes leave it a core (see the module docs).
    pub fn foreground_request(&self) {
        self.gate.note_foreground();
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
        let overloaded = || Error::Overloaded { retry_after: Duration::from_secs(1) };
        let _admitted = self.admitted.clone().try_acquire_owned().map_err(|_| overloaded())?;
        let slot = tokio::time::timeout(self.max_wait, async {
            let permit = self.running.clone().acquire_owned().await.map_err(|_| overloaded())?;
            self.gate.start().await;
            Ok::<_, Error>(Slot { _permit: permit, gate: self.gate.clone() })
        })
        .await
        .map_err(|_| overloaded())??;
        let span = tracing::Span::current();
        let (done, result) = tokio::sync::oneshot::channel();
        // The slot moves into the job: if the caller goes away mid-hash, the slot stays taken
        // until the hash really ends, so the bound holds.
        let job = Job {
            work: Box::new(move |memory| {
                let _ = done.send(span.in_scope(|| work(memory)));
            }),
            slot,
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

fn hashing_error(err: impl std::fmt::Display) -> Error {
    Error::Hashing(err.to_string())
}

/// argon2id of `password` under a fresh random salt, as a PHC string, computed in `memory`.
fn hash_with(params: &Params, password: &[u8], memory: &mut Memory) -> Result<String, Error> {
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
fn verify_with(stored: &PasswordHash, password: &[u8], memory: &mut Memory) -> Result<bool, Error> {
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

    fn two_slots_one_spare_limits(foreground_window: Duration) -> HashLimits {
        HashLimits {
            max_in_flight: 2,
            spare_cores: 1,
            foreground_window,
            priority: HashingPriority::Normal,
            ..HashLimits::default()
        }
    }

    fn two_slots_one_spare(foreground_window: Duration) -> Arc<PasswordHasher> {
        Arc::new(hasher_with(&two_slots_one_spare_limits(foreground_window)))
    }

    /// Runs `work` on a hashing thread as a hash would, reporting when it starts.
    fn start_job<T: Send + 'static>(
        hasher: &Arc<PasswordHasher>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> (tokio::task::JoinHandle<Result<T, Error>>, tokio::sync::oneshot::Receiver<()>) {
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let hasher = hasher.clone();
        let job = tokio::spawn(async move {
            hasher
                .run(move |_| {
                    let _ = started_tx.send(());
                    work()
                })
                .await
        });
        (job, started)
    }

    /// Like [`two_slots_one_spare`], watching a machine whose busy-tick counter `ticks` returns.
    fn two_slots_one_spare_watching(ticks: impl Fn() -> u64 + Send + Sync + 'static) -> Arc<PasswordHasher> {
        let demand = CpuDemand::with_reader(Box::new(move || Some(ticks())));
        // A first reading one sample ago, so the gate's first look compares against it.
        demand.busy_for(Instant::now().checked_sub(crate::cpu_demand::PERIOD).unwrap());
        let limits = two_slots_one_spare_limits(Duration::from_secs(3600));
        Arc::new(PasswordHasher::with_other_work(&limits, Some(demand)).unwrap())
    }

    #[tokio::test]
    async fn while_other_rpcs_arrive_hashes_leave_a_core_to_them() {
        let hasher = two_slots_one_spare(Duration::from_secs(3600));
        hasher.foreground_request();
        a_second_hash_waits_for_the_first(&hasher).await;
    }

    #[tokio::test]
    async fn while_other_work_uses_the_machine_hashes_leave_it_a_core() {
        // Every reading finds a core's worth of other work since the last.
        let ticks = AtomicU64::new(0);
        let hasher = two_slots_one_spare_watching(move || ticks.fetch_add(100, Ordering::Relaxed));
        a_second_hash_waits_for_the_first(&hasher).await;
    }

    #[tokio::test]
    async fn a_quiet_machine_leaves_every_slot_to_logins() {
        let hasher = two_slots_one_spare_watching(|| 1000);
        both_hashes_run_at_once(&hasher).await;
    }

    #[test]
    fn the_machine_is_watched_only_when_hashing_is_niced_and_a_core_can_be_spared() {
        let limits =
            |priority, spare_cores| HashLimits { max_in_flight: 2, priority, spare_cores, ..HashLimits::default() };
        let watched = |limits: &HashLimits| PasswordHasher::new(limits).unwrap().gate.other_work.is_some();
        assert_eq!(watched(&limits(HashingPriority::Low, 1)), cfg!(target_os = "linux"));
        assert!(!watched(&limits(HashingPriority::Low, 0)));
        // At normal priority the hashes' own time lands where other work's does.
        assert!(!watched(&limits(HashingPriority::Normal, 1)));
    }

    /// Starts a hash that runs until released, then a second: it must not start meanwhile.
    async fn a_second_hash_waits_for_the_first(hasher: &Arc<PasswordHasher>) {
        let (release, released) = mpsc::channel::<()>();
        let (first, first_started) = start_job(hasher, move || released.recv().is_ok());
        tokio::time::timeout(Duration::from_secs(10), first_started).await.unwrap().unwrap();
        let (second, mut second_started) = start_job(hasher, || ());
        // The second hash holds the free slot, but taking its core would leave none for other RPCs.
        while hasher.running.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        // Both tasks run on this one thread, so the second is now parked in the gate or started.
        assert_eq!(hasher.gate.hashing.load(Ordering::Acquire), 1, "a second hash took the spare core");
        assert!(second_started.try_recv().is_err(), "a second hash took the spare core");
        assert!(!second.is_finished());
        release.send(()).unwrap();
        assert!(first.await.unwrap().unwrap());
        second.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn logins_alone_hash_on_every_slot() {
        both_hashes_run_at_once(&two_slots_one_spare(Duration::from_secs(3600))).await;
    }

    async fn both_hashes_run_at_once(hasher: &Arc<PasswordHasher>) {
        let (second_running, wait_for_second) = mpsc::channel::<()>();
        // The first hash only ends once the second has started: both run at once.
        let (first, _) = start_job(hasher, move || wait_for_second.recv_timeout(Duration::from_secs(10)).is_ok());
        let (second, _) = start_job(hasher, move || second_running.send(()).is_ok());
        assert!(first.await.unwrap().unwrap(), "the second hash waited for the first");
        assert!(second.await.unwrap().unwrap());
    }

    #[tokio::test]
    async fn the_spare_core_returns_to_hashing_after_a_lull() {
        let window = Duration::from_millis(100);
        let hasher = two_slots_one_spare(window);
        let since = Instant::now();
        hasher.foreground_request();
        let (second_running, wait_for_second) = mpsc::channel::<()>();
        let (first, _) = start_job(&hasher, move || wait_for_second.recv_timeout(Duration::from_secs(10)).is_ok());
        let (second, _) = start_job(&hasher, move || second_running.send(()).is_ok());
        assert!(first.await.unwrap().unwrap(), "the second hash never started while the first ran");
        assert!(second.await.unwrap().unwrap());
        assert!(since.elapsed() >= window);
    }

    #[test]
    fn one_core_is_spared_unless_there_is_only_one_slot() {
        assert_eq!(default_spare_cores(1), 0);
        assert_eq!(default_spare_cores(2), 1);
        assert_eq!(default_spare_cores(64), 1);
    }
}
