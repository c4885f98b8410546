//! todo-bench: the benchmark harness of issue 6 (see `BENCHMARKS.md`).
//!
//! `todo-bench [--quick]` runs the whole matrix against the release binaries of both
//! services, each in its own process, on fresh PostgreSQL databases, and prints the tables.
//! The other subcommands are the helper processes it starts itself:
//! `todo-bench echo-server [addr]` (the framework ceiling) and
//! `todo-bench task-host <auth|no-auth>` (task-service with or without token verification).

mod bulk;
mod ceilings;
mod echo;
mod fixture;
mod load;
mod orchestrate;
mod pg;
mod plans;
mod procs;
mod report;
mod taskhost;

use std::process::ExitCode;
use std::time::Duration;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;

const USAGE: &str = "\
usage: todo-bench [--quick] [--no-ceilings] [--compare DIR [--compare-env LIST] [--rounds N]] [--only SCENARIOS] [--in-flight LEVELS] [--warmup SECS] [--window SECS]
       todo-bench --scale [--scale-tasks N] [--quick] [--rounds N] [--in-flight LEVELS] [--warmup SECS] [--window SECS]
       todo-bench echo-server [ADDR]
       todo-bench task-host <auth|no-auth>
       todo-bench hash-ceiling          (argon2id verifications/s on all cores, alone)
       todo-bench token-verify-cost     (µs per TokenKeys::verify of a real-sized token, one core)
       todo-bench revocation-check-cost (ns per task-service revocation check, populated set, one core)

Runs the benchmark matrix against target/release/auth-service and task-service (build them
first: cargo build --release -p auth-service -p task-service).

  --quick              0.5 s warm-up + 1 s window, baselines at 16 in flight only (about a minute)
  --only SCENARIOS     comma-separated subset of: login, get-current-user, get-task, list-tasks,
                       create-task, update-task, mixed, interference, token-overhead,
                       revocation, watch
  --in-flight LEVELS   comma-separated in-flight levels (default 1,16,64)
  --no-ceilings        skip the echo-server and pgbench baselines
  --compare DIR        A/B mode: also start auth-service and task-service from DIR (B) next to
                       the usual ones (A), on the same databases, and run every measurement on
                       A and B alternately (A B, then B A, ...); prints the comparison only
  --compare-env LIST   comma-separated VAR=VALUE set for B only (B may be the same binaries:
                       --compare target/release --compare-env TOKIO_WORKER_THREADS=1)
  --rounds N           A/B (or small/large) rounds per measurement (default 2)
  --scale              the scale mode instead of the matrix: GetTask, ListTasks first page and
                       page 50, CreateTask and UpdateTask on a small and a large task database
                       (loaded with COPY), alternately, with both databases' query plans.
                       In flight: 16 unless --in-flight says otherwise
  --scale-tasks N      tasks in the large database, over N/100 users (default 1000000, at
                       most 10000000: the harness holds them in memory while it loads them)
  --warmup SECS        warm-up per measurement (default 3, quick 0.5)
  --window SECS        measured window per measurement (default 10, quick 1)

Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres) names a
PostgreSQL server on which the harness may create and drop databases; BENCH_PGBENCH the
pgbench executable (default: pgbench on PATH, then /usr/bin/pgbench).";

/// What the matrix run was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub only: Option<Vec<String>>,
    pub in_flight: Vec<usize>,
    pub warmup: Duration,
    pub window: Duration,
    /// In-flight levels at which the framework and storage ceilings are measured.
    pub baseline_levels: Vec<usize>,
    /// A/B mode: the directory of the B binaries, B's extra environment, rounds.
    pub compare: Option<std::path::PathBuf>,
    pub compare_env: Vec<(String, String)>,
    pub rounds: usize,
    /// The scale mode, with the number of tasks of its large data set.
    pub scale: Option<usize>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut quick = false;
        let mut no_ceilings = false;
        let mut compare = None;
        let mut compare_env = Vec::new();
        let mut rounds = 2;
        let mut only = None;
        let mut in_flight = None;
        let mut scale = false;
        let mut scale_tasks = None;
        let mut warmup = None;
        let mut window = None;
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let mut value = |name: &str| iter.next().cloned().ok_or_else(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--quick" => quick = true,
                "--no-ceilings" => no_ceilings = true,
                "--compare" => compare = Some(std::path::PathBuf::from(value("--compare")?)),
                "--compare-env" => {
                    for pair in value("--compare-env")?.split(',').filter(|p| !p.trim().is_empty()) {
                        let (key, val) = pair
                            .split_once('=')
                            .ok_or_else(|| format!("--compare-env: expected VAR=VALUE, got {pair:?}"))?;
                        compare_env.push((key.trim().to_owned(), val.trim().to_owned()));
                    }
                }
                "--rounds" => {
                    rounds = value("--rounds")?
                        .parse()
                        .ok()
                        .filter(|n| (1..=20).contains(n))
                        .ok_or("--rounds: expected a whole number from 1 to 20")?;
                }
                "--only" => {
                    let list: Vec<String> = value("--only")?.split(',').map(|s| s.trim().to_owned()).collect();
                    for name in &list {
                        if !orchestrate::SECTIONS.contains(&name.as_str()) {
                            return Err(format!("--only: unknown scenario {name:?}"));
                        }
                    }
                    only = Some(list);
                }
                "--scale" => scale = true,
                "--scale-tasks" => {
                    scale_tasks = value("--scale-tasks")?
                        .parse()
                        .ok()
                        .filter(|n| (20_000..=10_000_000).contains(n))
                        .map(Some)
                        .ok_or("--scale-tasks: expected a whole number from 20000 to 10000000")?;
                }
                "--in-flight" => {
                    in_flight = value("--in-flight")?
                        .split(',')
                        .map(|s| s.trim().parse::<usize>().ok().filter(|n| (1..=1000).contains(n)))
                        .collect::<Option<Vec<_>>>()
                        .map(Some)
                        .ok_or("--in-flight: expected comma-separated whole numbers from 1 to 1000")?;
                }
                "--warmup" => warmup = Some(seconds("--warmup", &value("--warmup")?)?),
                "--window" => window = Some(seconds("--window", &value("--window")?)?),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if scale && (compare.is_some() || !compare_env.is_empty() || only.is_some()) {
            return Err("--scale runs its own scenarios on its own data: it cannot be combined with \
                        --compare, --compare-env or --only"
                .to_owned());
        }
        if scale_tasks.is_some() && !scale {
            return Err("--scale-tasks sizes the scale mode: add --scale".to_owned());
        }
        let in_flight = in_flight.unwrap_or_else(|| if scale { vec![16] } else { vec![1, 16, 64] });
        let (default_warmup, default_window) = if quick {
            (Duration::from_millis(500), Duration::from_secs(1))
        } else {
            (Duration::from_secs(3), Duration::from_secs(10))
        };
        let baseline_levels = if no_ceilings || scale {
            Vec::new()
        } else if quick {
            vec![16]
        } else {
            in_flight.clone()
        };
        Ok(Self {
            quick,
            only,
            in_flight,
            warmup: warmup.unwrap_or(default_warmup),
            window: window.unwrap_or(default_window),
            baseline_levels,
            compare,
            compare_env,
            rounds,
            scale: scale.then_some(scale_tasks.unwrap_or(1_000_000)),
        })
    }

    pub fn wants(&self, section: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.iter().any(|s| s == section))
    }
}

fn seconds(name: &str, raw: &str) -> Result<Duration, String> {
    raw.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 3600.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{name}: expected a number of seconds"))
}

/// The check task-service runs on every RPC after the signature, against a set holding the
/// same revocations the matrix seeds, for a caller who is not revoked (the common case).
fn revocation_check_cost() {
    use task_service::revocations::{Revocation, Revocations};
    let revocations = Revocations::default();
    let far = i64::MAX;
    for _ in 0..pg::SEEDED_REVOKED_SESSIONS {
        revocations.apply(uuid::Uuid::new_v4(), Revocation::Session(uuid::Uuid::new_v4()), far);
    }
    for _ in 0..pg::SEEDED_REVOKED_USERS {
        revocations.apply(uuid::Uuid::new_v4(), Revocation::SessionlessTokens { not_before: 1 }, far);
    }
    let caller = todo_shared::auth::AuthenticatedUser {
        id: uuid::Uuid::new_v4(),
        email: "user-123456-42@bench.example.com".to_owned(),
        session_id: Some(uuid::Uuid::new_v4()),
        issued_at: 2,
        expires_at: u64::MAX,
    };
    println!("set: {:?} (sessions, users)", revocations.len());
    for _ in 0..3 {
        let n = 5_000_000;
        let start = std::time::Instant::now();
        for _ in 0..n {
            let _ = std::hint::black_box(revocations.check(std::hint::black_box(&caller)));
        }
        println!("{:.1} ns per check", start.elapsed().as_secs_f64() * 1e9 / f64::from(n));
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let helper = matches!(args.first().map(String::as_str), Some("echo-server" | "task-host"));
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if !helper {
        // The load generator keeps one worker per core whatever TOKIO_WORKER_THREADS says:
        // that variable is passed through to the services (and the helper servers, which
        // start like `#[tokio::main]` does) to compare runtime sizes.
        runtime.worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("todo-bench: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.first().map(String::as_str) {
        Some("echo-server") => runtime.block_on(echo::serve(args.get(1).map(String::as_str))),
        Some("task-host") => runtime.block_on(taskhost::serve(args.get(1).map(String::as_str))),
        Some("hash-ceiling") => {
            let timing = load::Timing { warmup: Duration::from_secs(1), window: Duration::from_secs(3) };
            ceilings::hashes_per_second(timing).map(|rate| println!("{rate:.1} argon2id verifications/s on all cores"))
        }
        Some("token-verify-cost") => {
            let secret = todo_shared::token::JwtSecret::new(vec![7u8; 48]).map_err(|e| e.to_string());
            let result: Result<()> = (|| {
                let keys = todo_shared::token::TokenKeys::new(&secret?, "todo-grpc-auth", "todo-grpc")?;
                let token = keys
                    .mint(uuid::Uuid::new_v4(), "user-123456-42@bench.example.com", Duration::from_secs(3600))?
                    .token;
                println!("token {} bytes", token.len());
                for _ in 0..3 {
                    let n = 200_000;
                    let start = std::time::Instant::now();
                    for _ in 0..n {
                        std::hint::black_box(keys.verify(std::hint::black_box(&token))?);
                    }
                    println!("{:.2} µs per verify", start.elapsed().as_secs_f64() * 1e6 / n as f64);
                }
                Ok(())
            })();
            result
        }
        Some("revocation-check-cost") => {
            revocation_check_cost();
            Ok(())
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => match Options::parse(&args) {
            Ok(options) => runtime.block_on(orchestrate::run(options)),
            Err(err) => {
                eprintln!("todo-bench: {err}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("todo-bench: {err}");
            ExitCode::FAILURE
        }
    }
}
