//! A GCRA rate limiter ("leaky bucket as a meter") over hashed keys, and the `N/s`, `N/min`,
//! `N/h` syntax of its rates: auth-service's throttles and task-service's per-user rate.
//!
//! A key may spend a burst of `count` requests, then one every `period / count`. Its whole
//! state is one instant per key (the theoretical arrival time), checked and advanced under
//! one lock. Keys are kept as 64-bit keyed hashes in a fixed number of slots: memory stays
//! bounded however many distinct keys arrive.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `N/s`, `N/min` or `N/h`: a burst of N attempts, refilled evenly over the period; or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl Rate {
    pub const fn per_minute(count: u32) -> Self {
        Self { count, period: Duration::from_secs(60) }
    }

    /// Minimum spacing of attempts once the burst is spent.
    pub fn interval(&self) -> Duration {
        self.period / self.count
    }

    /// How far ahead of now a key's theoretical arrival time may run: (burst - 1) intervals.
    pub fn tolerance(&self) -> Duration {
        self.interval() * (self.count - 1)
    }

    /// `Ok(None)` for `off`.
    pub fn parse(raw: &str) -> Result<Option<Self>, String> {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let expected = || format!("expected a rate such as 10/min, 5/s or 100/h (or off), got {raw:?}");
        let (count, unit) = raw.split_once('/').ok_or_else(expected)?;
        let count: u32 = count.trim().parse().map_err(|_| expected())?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(expected()),
        };
        if count == 0 || count > 1_000_000 {
            return Err(format!("the count must be from 1 to 1000000, got {count}"));
        }
        Ok(Some(Self { count, period }))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            3600 => "h",
            _ => "min",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Keys tracked per limiter before the least constraining ones are forgotten. 2^17 keys of
/// 16 bytes each (plus the map's overhead): a few MiB at most.
const MAX_KEYS: usize = 1 << 17;
const SHARDS: usize = 64;

/// One GCRA limiter over hashed keys.
pub struct Limiter {
    /// Minimum spacing of attempts once the burst is spent.
    interval: Duration,
    /// How far ahead of now the theoretical arrival time may run: (burst - 1) intervals.
    tolerance: Duration,
    epoch: Instant,
    hasher: RandomState,
    /// Theoretical arrival time per key, in nanoseconds since `epoch`.
    shards: Box<[Mutex<HashMap<u64, u64>>]>,
}

impl Limiter {
    pub fn new(rate: Rate) -> Self {
        Self {
            interval: rate.interval(),
            tolerance: rate.tolerance(),
            epoch: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Counts an attempt for `key`, or says how long until one would be allowed.
    pub fn check(&self, key: impl Hash, now: Instant) -> Result<(), Duration> {
        let (hash, now) = (self.hasher.hash_one(key), self.nanos(now));
        let (interval, tolerance) = (nanos(self.interval), nanos(self.tolerance));
        let mut shard = self.shard(hash);
        let tat = shard.get(&hash).copied().unwrap_or(now).max(now);
        if tat - now > tolerance {
            return Err(Duration::from_nanos(tat - now - tolerance));
        }
        if shard.len() >= MAX_KEYS / SHARDS && !shard.contains_key(&hash) {
            make_room(&mut shard, now);
        }
        shard.insert(hash, tat + interval);
        Ok(())
    }

    /// Forgets `key`'s attempts (a successful login).
    pub fn forgive(&self, key: impl Hash) {
        let hash = self.hasher.hash_one(key);
        self.shard(hash).remove(&hash);
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        // The map is valid after any panic (every update is one insert or remove).
        self.shards[(hash as usize) % SHARDS].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn nanos(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.epoch))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Drops keys that are back to a full burst (they behave exactly like unseen keys); if none
/// are, the one closest to it, so a flood of fresh keys cannot erase a key under penalty
/// before the others.
fn make_room(shard: &mut HashMap<u64, u64>, now: u64) {
    shard.retain(|_, tat| *tat > now);
    if shard.len() >= MAX_KEYS / SHARDS
        && let Some((&oldest, _)) = shard.iter().min_by_key(|(_, tat)| **tat)
    {
        shard.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_one_attempt_per_interval() {
        let limiter = Limiter::new(Rate { count: 3, period: Duration::from_secs(3) });
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check("ada", t0).unwrap();
        }
        let wait = limiter.check("ada", t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // Refused attempts cost nothing; after the interval, exactly one more is allowed.
        assert!(limiter.check("ada", t0 + Duration::from_millis(999)).is_err());
        limiter.check("ada", t0 + Duration::from_secs(1)).unwrap();
        assert!(limiter.check("ada", t0 + Duration::from_secs(1)).is_err());
        // Other keys are independent; forgiving resets the key.
        limiter.check("grace", t0).unwrap();
        limiter.forgive("ada");
        limiter.check("ada", t0 + Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn memory_stays_bounded_and_recovered_keys_are_forgotten_first() {
        let limiter = Limiter::new(Rate { count: 2, period: Duration::from_secs(2) });
        let t0 = Instant::now();
        for i in 0..MAX_KEYS {
            limiter.check(i, t0).unwrap();
        }
        // Later, a victim is under penalty while a flood of fresh keys arrives.
        let later = t0 + Duration::from_secs(10);
        limiter.check("victim", later).unwrap();
        limiter.check("victim", later).unwrap();
        for i in MAX_KEYS..(MAX_KEYS * 2) {
            limiter.check(i, later).unwrap();
        }
        let tracked: usize = limiter.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(tracked <= MAX_KEYS, "{tracked} keys tracked");
        assert!(limiter.check("victim", later).is_err(), "the flood did not reset the victim");
    }

    #[test]
    fn rates_parse_with_their_unit() {
        assert_eq!(Rate::parse("10/min").unwrap(), Some(Rate::per_minute(10)));
        assert_eq!(Rate::parse(" 5/s ").unwrap(), Some(Rate { count: 5, period: Duration::from_secs(1) }));
        assert_eq!(Rate::parse("OFF").unwrap(), None);
        for bad in ["10", "10/day", "0/min", "-1/s", "ten/min"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Rate::per_minute(120).to_string(), "120/min");
    }
}
