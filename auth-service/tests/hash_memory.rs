//! A hashing thread's argon2 memory really goes back to the OS when it is released.
//!
//! Its own test binary, so that no other test's hashing moves this process's resident set.

// Test helpers may unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use auth_service::domain::Password;
use auth_service::password::{HashLimits, HashingPriority, PasswordHasher};

const MIB: f64 = 1024.0 * 1024.0;
/// auth-service's argon2id memory cost: 19 MiB per hash in flight.
const BLOCK_MIB: f64 = 19.0;

fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024.0 / MIB
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn released_hashing_memory_leaves_the_resident_set_every_time() {
    let limits = HashLimits {
        max_in_flight: 2,
        priority: HashingPriority::Normal,
        release_memory_after: Duration::from_millis(200),
        ..HashLimits::default()
    };
    let hasher = PasswordHasher::new(&limits).unwrap();
    let password = || Password::parse_new("correct horse battery").unwrap();
    // Let the start-up work (the dummy hash) settle first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = resident_mib();

    for round in 0..4 {
        let (a, b) = tokio::join!(hasher.hash(password()), hasher.hash(password()));
        a.unwrap();
        b.unwrap();
        let busy = resident_mib();
        assert!(
            busy - baseline > 1.5 * BLOCK_MIB,
            "round {round}: two hashes at once should hold two blocks: {busy:.1} MiB vs {baseline:.1} at rest"
        );
        assert!(
            busy - baseline < 2.0 * BLOCK_MIB + 8.0,
            "round {round}: more than two blocks resident: {busy:.1} MiB vs {baseline:.1} at rest"
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
        let released = resident_mib();
        assert!(
            released - baseline < 8.0,
            "round {round}: released memory stayed resident: {released:.1} MiB vs {baseline:.1} at rest"
        );
    }
}
