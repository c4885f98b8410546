//! The real binary: bad configuration is one line on stderr and exit status 2, never a
//! backtrace; SIGTERM drains and exits 0.

// Test helpers may unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_task-service");
const LISTEN_VAR: &str = "TASK_LISTEN_ADDR";
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
    assert!(dir.join("data/tasks.db").exists(), "the embedded default database was created");
    let _ = std::fs::remove_dir_all(dir);
}
