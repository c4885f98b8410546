//! Measures whether a failed Login tells an unknown email from a wrong password by its timing.
//!
//! Starts auth-service in-process (PostgreSQL when `TEST_DATABASE_URL` is set, a temporary
//! SQLite file otherwise) with throttling off, signs up one account, then sends interleaved, in
//! random order, TRIALS logins with an unknown email and TRIALS with the right email and a
//! wrong password (after a warm-up of each kind). Prints the median and p90 of both and the
//! ratio of the medians, and exits 1 when the medians differ by more than 10%.
//!
//! ```sh
//! cargo run --release -p todo-tests --bin login-timing
//! TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --release -p todo-tests --bin login-timing
//! ```
//!
//! `LOGIN_TIMING_TRIALS` (default 200 of each kind) and `LOGIN_TIMING_SEED` override the run.
//! Run it in release: in a debug build the service's own overhead is not what production has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use todo_tests::adversary::Rng;
use todo_tests::pb::auth::v1::{LoginRequest, SignUpRequest};
use todo_tests::{Backend, TestDb, auth_client, auth_config, start_auth_with};
use tonic::Code;

const EMAIL: &str = "timing@example.com";
const PASSWORD: &str = "plum-kettle-orbit-42";
const WARM_UP: usize = 10;
/// Largest accepted difference between the two medians, relative to the smaller one.
const TOLERANCE: f64 = 0.10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    UnknownEmail,
    WrongPassword,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// The `q`-quantile (nearest rank) of sorted durations, in milliseconds.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> ExitCode {
    let trials: usize = env_or("LOGIN_TIMING_TRIALS", 200);
    let seed: u64 = env_or("LOGIN_TIMING_SEED", Rng::fresh_seed());
    let backend = match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run with --release for numbers that mean something");
    }

    let db = TestDb::new(backend).await;
    let mut config = auth_config(&db);
    // Hundreds of failed logins from one address in a few seconds: the throttle would answer
    // RESOURCE_EXHAUSTED without checking anything, and there would be nothing to measure.
    config.throttle = auth_service::throttle::ThrottleConfig::off();
    let auth = start_auth_with(config, db).await;
    let mut client = auth_client(&auth).await;
    client.sign_up(SignUpRequest { email: EMAIL.into(), password: PASSWORD.into() }).await.expect("sign up");
    // The account logs in: the wrong-password trials below differ from a success only in the password.
    client.login(LoginRequest { email: EMAIL.into(), password: PASSWORD.into() }).await.expect("login");

    let mut rng = Rng::new(seed);
    let mut plan: Vec<(Kind, bool)> = Vec::new();
    for kind in [Kind::UnknownEmail, Kind::WrongPassword] {
        plan.extend(std::iter::repeat_n((kind, true), WARM_UP));
        plan.extend(std::iter::repeat_n((kind, false), trials));
    }
    rng.shuffle(&mut plan);
    // Warm-up first (in its shuffled order), then the measured trials.
    plan.sort_by_key(|(_, warm_up)| !warm_up);

    let mut unknown_email = Vec::with_capacity(trials);
    let mut wrong_password = Vec::with_capacity(trials);
    for (i, (kind, warm_up)) in plan.into_iter().enumerate() {
        let request = match kind {
            // A fresh email every time: nothing about it can be cached.
            Kind::UnknownEmail => {
                LoginRequest { email: format!("nobody-{:016x}@example.com", rng.next_u64()), password: PASSWORD.into() }
            }
            Kind::WrongPassword => {
                LoginRequest { email: EMAIL.into(), password: format!("wrong-kettle-{:016x}", rng.next_u64()) }
            }
        };
        let started = Instant::now();
        let result = client.login(request).await;
        let elapsed = started.elapsed();
        match result {
            Err(status) if status.code() == Code::Unauthenticated => {}
            other => {
                eprintln!("trial {i} ({kind:?}): expected UNAUTHENTICATED, got {other:?}");
                return ExitCode::from(2);
            }
        }
        if !warm_up {
            match kind {
                Kind::UnknownEmail => unknown_email.push(elapsed),
                Kind::WrongPassword => wrong_password.push(elapsed),
            }
        }
    }
    drop(auth);

    unknown_email.sort();
    wrong_password.sort();
    let (unknown_median, wrong_median) = (quantile(&unknown_email, 0.5), quantile(&wrong_password, 0.5));
    let ratio = unknown_median / wrong_median;
    println!(
        "login timing on {backend:?}, {trials} interleaved trials of each kind (+{WARM_UP} warm-up each), seed {seed}"
    );
    println!("  unknown email:  median {unknown_median:8.3} ms   p90 {:8.3} ms", quantile(&unknown_email, 0.9));
    println!("  wrong password: median {wrong_median:8.3} ms   p90 {:8.3} ms", quantile(&wrong_password, 0.9));
    println!("  ratio of medians (unknown / wrong): {ratio:.4}");
    let difference = unknown_median.max(wrong_median) / unknown_median.min(wrong_median) - 1.0;
    if difference > TOLERANCE {
        println!("FAIL: the medians differ by {:.1}% (more than {:.0}%)", difference * 100.0, TOLERANCE * 100.0);
        ExitCode::FAILURE
    } else {
        println!("ok: the medians differ by {:.1}% (at most {:.0}%)", difference * 100.0, TOLERANCE * 100.0);
        ExitCode::SUCCESS
    }
}
