//! Running out of file descriptors must not take a service down. CI runs this alone (it
//! lowers its own open-files limit, which the test suite's parallel tests would feel).
//!
//! task-service runs in this process with 64 descriptors to spare; silent connections use
//! them all up, so accepting fails with EMFILE. The service must not spin (accept backs off:
//! the process stays under a fifth of a core), and once the silent clients are gone (here
//! they leave; a real attacker's are cut at the handshake deadline) a new client is served,
//! without a restart.
//!
//! `cargo run -p todo-tests --bin fd_exhaustion`

// A test driver: a failed expectation is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rlimit::Resource;
use todo_tests::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// CPU seconds this process has used (user + system), from `/proc/self/stat`, opened before
/// the descriptors run out (reading it must not need a new one).
fn cpu_seconds(stat: &mut std::fs::File, ticks_per_second: f64) -> f64 {
    use std::io::{Read as _, Seek as _};
    let mut text = String::new();
    stat.rewind().unwrap();
    stat.read_to_string(&mut text).unwrap();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = text.rsplit_once(')').unwrap().1.split_whitespace().collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks_per_second
}

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = task_config(&db);
    config.limits.handshake_timeout = Duration::from_secs(3);
    let tasks = start_tasks_with(config, db).await;
    // Warm: the SQLite pool's connections and the runtime's descriptors are open by now.
    let mut health = HealthClient::new(tasks.channel().await);
    health.check(HealthCheckRequest::default()).await.unwrap();

    let ticks_per_second: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    let mut stat = std::fs::File::open("/proc/self/stat").unwrap();
    let (_, hard) = rlimit::getrlimit(Resource::NOFILE).unwrap();
    let spare = 64;
    rlimit::setrlimit(Resource::NOFILE, open_descriptors() + spare, hard).unwrap();

    // Silent connections until this process has no descriptor left to connect with; the
    // service accepts some, and the rest wait in the backlog while accept fails.
    let mut silent = Vec::new();
    while silent.len() < 4 * spare as usize {
        match std::net::TcpStream::connect(tasks.addr) {
            Ok(stream) => silent.push(stream),
            Err(_) => break,
        }
    }
    println!("{} silent connections; no descriptor left", silent.len());

    // Out of descriptors, the service must not spin on accept.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu_before, wall) = (cpu_seconds(&mut stat, ticks_per_second), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let share = (cpu_seconds(&mut stat, ticks_per_second) - cpu_before) / wall.elapsed().as_secs_f64();
    println!("CPU while out of descriptors: {:.0}% of one core", share * 100.0);
    let spinning = share > 0.2;

    // The clients leave: the service recovers by itself.
    drop(silent);
    let recovered = async {
        loop {
            if let Ok(channel) = tonic::transport::Channel::from_shared(tasks.url()).unwrap().connect().await
                && HealthClient::new(channel).check(HealthCheckRequest::default()).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let started = Instant::now();
    let recovered = tokio::time::timeout(Duration::from_secs(15), recovered).await.is_ok();
    println!("served a new client again after {:.1} s: {recovered}", started.elapsed().as_secs_f64());

    if spinning || !recovered {
        eprintln!("FAILED: spinning {spinning}, recovered {recovered}");
        return ExitCode::FAILURE;
    }
    println!("ok");
    ExitCode::SUCCESS
}
