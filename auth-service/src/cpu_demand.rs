//! Whether the rest of the machine wants CPU, so that hashing can leave it a core.
//!
//! The hashing threads run at nice 19, and the kernel books a niced thread's time in the
//! `nice` column of `/proc/stat`. Everything at normal priority (another service on the same
//! box, its database, this process's own request handling) is booked in `user`, `system`,
//! `irq` and `softirq`. So the growth of those four columns is CPU that other work used while
//! hashes ran: a login flood alone keeps it at a few percent of a core (the logins' own
//! requests and queries), a service answering requests beside it does not.
//!
//! Why a machine-wide figure: auth-service cannot see a task-service request, yet on a 2-core
//! box both hashing threads held the CPU that task-service's workers woke up to, and GetTask's
//! p99 on task-service went from 0.46 ms to 1.74 ms during a login flood (with one core left
//! free: 0.49 ms). The counters tick at 1/100 s (USER_HZ), so a sample spans [`PERIOD`], many
//! hashes, rather than one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one sample spans: twenty ticks of the kernel's counters.
pub const PERIOD: Duration = Duration::from_millis(200);

/// Share of one core that other work must use over a sample before hashing leaves it a core.
/// A login flood alone measured 0-15% of a core here in most samples and up to 30% in a few
/// (its own requests, queries and client); a stream of requests at one call in flight to
/// another service on the box uses most of a core.
const THRESHOLD: f64 = 0.4;

/// The kernel's CPU accounting unit in `/proc/stat`: USER_HZ, 100 on every Linux architecture
/// this service builds for.
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads the machine's total normal-priority busy time, in ticks.
pub type Reader = Box<dyn Fn() -> Option<u64> + Send + Sync>;

pub struct CpuDemand {
    read: Reader,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The latest reading and when it was taken.
    last: Option<(Instant, u64)>,
    /// Whether other work used more than [`THRESHOLD`] over the latest sample.
    busy: bool,
}

impl State {
    fn record(&mut self, now: Instant, ticks: u64) {
        if let Some((at, before)) = self.last {
            let share = core_share(ticks.saturating_sub(before), now.saturating_duration_since(at));
            let busy = share >= THRESHOLD;
            if busy != self.busy {
                tracing::debug!(
                    other_work_cores = share,
                    "other work on this machine {} CPU: hashes {} a core",
                    if busy { "wants" } else { "no longer wants" },
                    if busy { "leave it" } else { "take back" }
                );
            }
            self.busy = busy;
        }
        self.last = Some((now, ticks));
    }
}

impl CpuDemand {
    /// Reads `/proc/stat`; `None` where it cannot be read or parsed (not Linux), and hashing
    /// then goes by this process's own requests alone.
    pub fn from_proc() -> Option<Self> {
        let read: Reader = Box::new(|| normal_priority_ticks(&std::fs::read_to_string("/proc/stat").ok()?));
        read().is_some().then(|| Self::with_reader(read))
    }

    pub fn with_reader(read: Reader) -> Self {
        Self { read, state: Mutex::new(State::default()) }
    }

    /// If other work wanted CPU over the latest sample: how long until the next sample is due.
    /// Takes a new sample when the latest is [`PERIOD`] old.
    pub fn busy_for(&self, now: Instant) -> Option<Duration> {
        // Hash starts are rare (tens per second per core): the lock sees no contention.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let due = state.last.map(|(at, _)| at + PERIOD);
        if due.is_none_or(|due| due <= now)
            && let Some(ticks) = (self.read)()
        {
            state.record(now, ticks);
        }
        let next = state.last.map_or(now, |(at, _)| at + PERIOD);
        state.busy.then(|| next.saturating_duration_since(now).max(Duration::from_millis(1)))
    }
}

/// Cores' worth of CPU that `ticks` over `elapsed` amount to.
fn core_share(ticks: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        return 0.0;
    }
    // Tick counts stay far below 2^52 for centuries, so the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    let seconds = ticks as f64 / TICKS_PER_SECOND;
    seconds / elapsed.as_secs_f64()
}

/// `user + system + irq + softirq` from the `cpu` line of `/proc/stat`: everything busy at
/// normal priority (guest time is already inside `user`), leaving out `nice`, idle, I/O wait
/// and time stolen by the hypervisor.
fn normal_priority_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().next()?;
    let mut fields = line.split_ascii_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.take(7).map(str::parse).collect::<Result<_, _>>().ok()?;
    let [user, _nice, system, _idle, _iowait, irq, softirq] = values.try_into().ok()?;
    user.checked_add(system)?.checked_add(irq)?.checked_add(softirq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn counts_normal_priority_time_and_not_niced_idle_or_stolen_time() {
        let stat = "cpu  5918 700 6295 1249802 517 3 92 125 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1\n";
        assert_eq!(normal_priority_ticks(stat), Some(5918 + 6295 + 3 + 92));
    }

    #[test]
    fn refuses_what_is_not_the_cpu_line() {
        assert_eq!(normal_priority_ticks(""), None);
        assert_eq!(normal_priority_ticks("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(normal_priority_ticks("cpu 1 2 3"), None);
        assert_eq!(normal_priority_ticks("cpu 1 2 x 4 5 6 7 8"), None);
    }

    #[test]
    fn the_machine_counters_parse_here() {
        if cfg!(target_os = "linux") {
            assert!(CpuDemand::from_proc().is_some(), "/proc/stat did not parse");
        }
    }

    /// A demand whose counter the test sets.
    fn fake() -> (CpuDemand, Arc<AtomicU64>) {
        let ticks = Arc::new(AtomicU64::new(1000));
        let reader = ticks.clone();
        (CpuDemand::with_reader(Box::new(move || Some(reader.load(Ordering::Relaxed)))), ticks)
    }

    #[test]
    fn busy_when_other_work_used_nearly_half_a_core_over_a_sample() {
        let (demand, ticks) = fake();
        let start = Instant::now();
        assert_eq!(demand.busy_for(start), None, "a first reading has nothing to compare with");
        // 200 ms later, other work used 10 ticks (100 ms): half a core.
        ticks.fetch_add(10, Ordering::Relaxed);
        let later = start + PERIOD;
        assert_eq!(demand.busy_for(later), Some(PERIOD), "busy until the next sample is due");
        // Within the period the decision holds without a new reading.
        ticks.fetch_add(1000, Ordering::Relaxed);
        assert_eq!(demand.busy_for(later + PERIOD / 2), Some(PERIOD / 2));
    }

    #[test]
    fn idle_when_other_work_stayed_below_the_threshold() {
        let (demand, ticks) = fake();
        let start = Instant::now();
        demand.busy_for(start);
        // 7 ticks in 200 ms: 35% of a core.
        ticks.fetch_add(7, Ordering::Relaxed);
        assert_eq!(demand.busy_for(start + PERIOD), None);
        // Then a burst: 9 ticks in the next 200 ms, 45%.
        ticks.fetch_add(9, Ordering::Relaxed);
        assert!(demand.busy_for(start + 2 * PERIOD).is_some());
        // And quiet again.
        assert_eq!(demand.busy_for(start + 3 * PERIOD), None);
    }

    #[test]
    fn an_unreadable_counter_keeps_the_last_decision_and_sample() {
        let readings = Arc::new(Mutex::new(vec![Some(1000), None, Some(1020)]));
        let source = readings.clone();
        let demand = CpuDemand::with_reader(Box::new(move || {
            let mut readings = source.lock().unwrap();
            if readings.is_empty() { None } else { readings.remove(0) }
        }));
        let start = Instant::now();
        demand.busy_for(start);
        assert_eq!(demand.busy_for(start + PERIOD), None);
        // 20 ticks over the 400 ms since the last good reading: half a core.
        assert!(demand.busy_for(start + 2 * PERIOD).is_some());
    }
}
