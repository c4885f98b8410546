//! The real binary: bad configuration is one line on stderr and exit status 2, never a
//! backtrace; SIGTERM drains and exits 0.

// Test helpers may unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_auth-service");
const LISTEN_VAR: &str = "AUTH_LISTEN_ADDR";
const SECRET: &str = "0123456789abcdef0123456789abcdef-startup";

fn command(dir: &std::path::Path, vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    // Nothing from the caller's environment (CI sets DATABASE_URL and friends).
    cmd.env_clear().current_dir(dir).envs(vars.iter().copied());
    cmd
}

fn temp_dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("startup-{}-{label}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn bad_configuration_is_one_line_and_exit_status_2() {
    let dir = temp_dir("config");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("missing secret", vec![], "JWT_SECRET"),
        ("short secret", vec![("JWT_SECRET", "too-short")], "JWT_SECRET"),
        (
            "unknown database scheme",
            vec![("JWT_SECRET", SECRET), ("DATABASE_URL", "mysql://localhost/x")],
            "DATABASE_URL",
        ),
        (
            "malformed database url",
            vec![("JWT_SECRET", SECRET), ("DATABASE_URL", "postgres://u@127.0.0.1:port/db")],
            "DATABASE_URL",
        ),
        ("malformed listen address", vec![("JWT_SECRET", SECRET), (LISTEN_VAR, "localhost")], LISTEN_VAR),
        ("port in use", vec![("JWT_SECRET", SECRET), (LISTEN_VAR, busy_addr.as_str())], LISTEN_VAR),
        ("bad log filter", vec![("JWT_SECRET", SECRET), ("RUST_LOG", "info,[")], "RUST_LOG"),
        (
            "worker threads not a number",
            vec![("JWT_SECRET", SECRET), ("TOKIO_WORKER_THREADS", "two")],
            "TOKIO_WORKER_THREADS",
        ),
        ("zero worker threads", vec![("JWT_SECRET", SECRET), ("TOKIO_WORKER_THREADS", "0")], "TOKIO_WORKER_THREADS"),
        (
            "unknown hashing priority",
            vec![("JWT_SECRET", SECRET), ("AUTH_HASHING_PRIORITY", "high")],
            "AUTH_HASHING_PRIORITY",
        ),
    ];
    for (label, vars, variable) in cases {
        let output = command(&dir, &vars).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{label}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{label}: {stderr}");
        assert!(stderr.contains(variable), "{label}: {stderr}");
        assert!(!stderr.contains("panicked"), "{label}: {stderr}");
        assert!(!stderr.contains(SECRET), "{label}: the secret was printed");
    }
    drop(busy);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = temp_dir("sigterm");
    let mut child = command(&dir, &[("JWT_SECRET", SECRET), (LISTEN_VAR, "127.0.0.1:0"), ("RUST_LOG", "info")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the "serving" line: the listener is bound and the database migrated.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.by_ref().map_while(Result::ok).any(|line| line.contains("serving")), "service never became ready");

    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(dir.join("data/auth.db").exists(), "the embedded default database was created");
    let _ = std::fs::remove_dir_all(dir);
}

/// (scheduling policy, nice) of each thread of `pid` whose name starts with `argon2-`, from
/// `/proc/<pid>/task/<tid>/stat` (fields 19 and 41, counted after the parenthesised name).
#[cfg(target_os = "linux")]
fn hashing_threads(pid: u32) -> Vec<(u32, i32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else { continue };
        if !comm.starts_with("argon2-") {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        // After the name: field 3 is index 0, so field n is index n - 3.
        threads.push((fields[41 - 3].parse().unwrap(), fields[19 - 3].parse().unwrap()));
    }
    threads
}

#[cfg(target_os = "linux")]
#[test]
fn hashing_threads_run_at_the_configured_priority_and_nothing_else_does() {
    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    for (setting, expected) in [(None, (SCHED_BATCH, 19)), (Some("normal"), (SCHED_OTHER, 0))] {
        let dir = temp_dir("priority");
        let mut vars = vec![("JWT_SECRET", SECRET), (LISTEN_VAR, "127.0.0.1:0"), ("RUST_LOG", "info")];
        vars.extend(setting.map(|value| ("AUTH_HASHING_PRIORITY", value)));
        let mut child = command(&dir, &vars).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.by_ref().map_while(Result::ok).any(|line| line.contains("serving")), "never ready");

        // The threads set their priority as they start; give them a moment.
        let mut threads = Vec::new();
        for _ in 0..100 {
            threads = hashing_threads(child.id());
            if !threads.is_empty() && threads.iter().all(|t| *t == expected) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!threads.is_empty(), "no hashing threads found");
        assert!(threads.iter().all(|t| *t == expected), "{setting:?}: {threads:?}, expected {expected:?}");
        // Only the hashing threads: the process's main thread keeps the default.
        let main = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        let fields: Vec<&str> = main[main.rfind(')').unwrap() + 2..].split(' ').collect();
        assert_eq!((fields[41 - 3], fields[19 - 3]), ("0", "0"), "the main thread's priority changed");

        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(dir);
    }
}
