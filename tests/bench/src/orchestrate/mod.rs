//! One run of the matrix: fresh databases, each service in its own process, the seed data,
//! every scenario with its same-run ceilings, the interference and token-overhead checks,
//! then everything stopped and dropped again (also on error and on Ctrl-C).

mod header;
mod interference;
mod matrix;
mod overhead;
mod probe;
mod revocation;
mod scale;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fixture::Fixture;
use crate::load::{Group, Kind, Stats, Timing};
use crate::procs::{CpuUsage, Proc, RssSampler};
use crate::report::{MemoryNotes, Report, ServiceMemory};
use crate::{Options, Result, ceilings, fixture, load, pg, procs};

use header::machine_header;
use probe::Probe;

/// What `--only` accepts.
pub const SECTIONS: &[&str] = &[
    "login",
    "get-current-user",
    "refresh",
    "get-task",
    "list-tasks",
    "create-task",
    "update-task",
    "mixed",
    "interference",
    "token-overhead",
    "revocation",
    "watch",
];

/// The matrix, in running order. Mixed runs last: it deletes and creates tasks.
const MATRIX: &[(&str, Kind)] = &[
    ("login", Kind::Login),
    ("get-current-user", Kind::GetCurrentUser),
    ("refresh", Kind::Refresh),
    ("get-task", Kind::GetTask),
    ("list-tasks", Kind::ListTasks),
    ("create-task", Kind::CreateTask),
    ("update-task", Kind::UpdateTask),
    ("mixed", Kind::Mixed),
];

/// Variables the services read; passed through when set, and printed so a run says so.
const SERVICE_ENV: &[&str] = &[
    "AUTH_MAX_CONCURRENT_HASHES",
    "AUTH_HASHING_PRIORITY",
    "AUTH_THROTTLE_PER_EMAIL",
    "DATABASE_MAX_CONNECTIONS",
    "DATABASE_ACQUIRE_TIMEOUT_MS",
    "DATABASE_STATEMENT_TIMEOUT",
    "GRPC_MAX_IN_FLIGHT",
    "GRPC_MAX_CONCURRENT_STREAMS",
    "GRPC_REQUEST_TIMEOUT",
    // Unset, the services log at their default (`info`), as they run for everyone else.
    "RUST_LOG",
    "TOKIO_WORKER_THREADS",
];

/// The load generator logs in from one address far faster than a person: the per-address
/// throttle (120/min by default) exists to refuse exactly that. Set so high it never
/// refuses, the throttle's code still runs on every attempt.
const THROTTLE_PER_ADDRESS: &str = "1000000/s";

struct Harness {
    options: Options,
    exe_dir: PathBuf,
    log_dir: PathBuf,
    pgbench: PathBuf,
    admin: String,
    /// The auth and tasks databases this run creates; `databases` holds those it has created.
    planned_databases: [String; 2],
    databases: Vec<String>,
    auth_url: String,
    tasks_url: String,
    secret: String,
    procs: Vec<Proc>,
    /// Each started service's `METRICS_ADDR`, by its index in `procs`.
    metrics: Vec<SocketAddr>,
    sampler: RssSampler,
    started: Instant,
    fixture: Option<Arc<Fixture>>,
}

pub async fn run(options: Options) -> Result<()> {
    let exe = std::env::current_exe()?;
    let exe_dir = exe.parent().ok_or("cannot locate the directory of the todo-bench executable")?.to_owned();
    for binary in ["auth-service", "task-service"] {
        if !exe_dir.join(binary).is_file() {
            return Err(format!(
                "{} not found: the harness runs the release binaries next to it; build them first:\n    \
                 cargo build --release -p auth-service -p task-service",
                exe_dir.join(binary).display()
            )
            .into());
        }
    }
    if !exe_dir.ends_with("release") {
        eprintln!(
            "warning: {} is not a release build directory: numbers from debug builds mean little",
            exe_dir.display()
        );
    }
    let pgbench = pg::pgbench_path().ok_or("pgbench not found (set BENCH_PGBENCH, or install postgresql-client)")?;
    let log_dir = exe_dir.join("bench-logs");
    std::fs::create_dir_all(&log_dir)?;
    let admin = pg::admin_url();
    let run_id = std::process::id();
    let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let [auth_db, tasks_db] = [format!("todo_bench_{run_id}_auth"), format!("todo_bench_{run_id}_tasks")];
    let mut harness = Harness {
        exe_dir,
        log_dir,
        pgbench,
        auth_url: pg::with_database(&admin, &auth_db),
        tasks_url: pg::with_database(&admin, &tasks_db),
        planned_databases: [auth_db, tasks_db],
        admin,
        databases: Vec::new(),
        secret,
        procs: Vec::new(),
        metrics: Vec::new(),
        sampler: RssSampler::start()?,
        started: Instant::now(),
        fixture: None,
        options,
    };
    // SIGTERM too (what `timeout` and `kill` send): stopped either way, a run still stops its
    // services and drops its databases.
    let terminated = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => signal.recv().await,
            Err(_) => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        outcome = harness.run_selected() => outcome,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        _ = terminated => Err("terminated".into()),
    };
    harness.teardown().await;
    let report = outcome?;
    println!("{report}");
    eprintln!(
        "\n(total {:.0} s; service logs in {})",
        harness.started.elapsed().as_secs_f64(),
        harness.log_dir.display()
    );
    Ok(())
}

impl Harness {
    fn elapsed(&self) -> String {
        format!("[{:>4.0}s]", self.started.elapsed().as_secs_f64())
    }

    /// The `http://` URL of a started service.
    fn url_of(&self, index: usize) -> String {
        format!("http://{}", self.procs[index].addr)
    }

    fn timing(&self) -> Timing {
        Timing { warmup: self.options.warmup, window: self.options.window }
    }

    fn start(&mut self, name: &str, program: &Path, args: &[&str], extra_env: &[(&str, String)]) -> Result<usize> {
        let addr = procs::free_addr()?;
        let metrics = procs::free_addr()?;
        let is_auth = name.starts_with("auth");
        let listen_var = if is_auth { "AUTH_LISTEN_ADDR" } else { "TASK_LISTEN_ADDR" };
        let database = if is_auth { self.auth_url.clone() } else { self.tasks_url.clone() };
        let mut env = vec![
            ("DATABASE_URL", database),
            ("JWT_SECRET", self.secret.clone()),
            (listen_var, addr.to_string()),
            ("AUTH_THROTTLE_PER_ADDRESS", THROTTLE_PER_ADDRESS.to_owned()),
            // A bench user makes hundreds of calls a second; the limit has its own test.
            ("TASK_RATE_PER_USER", "off".to_owned()),
            // Served (never scraped during a measurement), so what a run leaves is kept.
            ("METRICS_ADDR", metrics.to_string()),
        ];
        env.extend(extra_env.iter().cloned());
        let mut args: Vec<&str> = args.to_vec();
        let addr_arg = addr.to_string();
        if name == "echo" {
            args.push(&addr_arg);
        }
        let log = self.log_dir.join(format!("{name}.log"));
        let proc = Proc::spawn(name, program, &args, &env, addr, log)?;
        self.sampler.watch(proc.pid());
        self.procs.push(proc);
        self.metrics.push(metrics);
        Ok(self.procs.len() - 1)
    }

    fn stop(&mut self, index: usize) {
        let pid = self.procs[index].pid();
        self.procs[index].stop();
        self.sampler.unwatch(pid);
    }

    async fn teardown(&mut self) {
        // What each service's /metrics said at the end, next to its log (a build without
        // metrics, such as an older B, has nothing to say).
        for (proc, addr) in self.procs.iter().zip(&self.metrics) {
            if let Some(text) = procs::http_get(*addr, "/metrics") {
                let _ = std::fs::write(proc.log.with_extension("metrics"), text);
            }
        }
        for index in (0..self.procs.len()).rev() {
            self.stop(index);
        }
        for database in std::mem::take(&mut self.databases) {
            if let Err(err) = pg::drop_database(&self.admin, &database).await {
                eprintln!("warning: could not drop database {database}: {err}");
            }
        }
    }

    async fn measure(
        &self,
        groups: &[Group],
        watched: &[(&str, &Proc)],
    ) -> Result<(Vec<Stats>, CpuUsage, Vec<(String, Option<u64>)>)> {
        let mut probe = Probe::new(&self.sampler, watched);
        let fixture = self.fixture_handle()?;
        let stats = load::run(groups, &fixture, self.timing(), &mut probe).await?;
        Ok((stats, probe.usage.clone(), probe.rss()))
    }

    fn fixture_handle(&self) -> Result<Arc<Fixture>> {
        self.fixture.clone().ok_or_else(|| "no fixture yet".into())
    }

    /// argon2id verifications/s on all cores, alone, for one window.
    async fn hash_ceiling(&self) -> Result<f64> {
        let timing = self.timing();
        tokio::task::spawn_blocking(move || ceilings::hashes_per_second(timing)).await?
    }

    /// The rendered report of the matrix, or of the scale mode.
    async fn run_selected(&mut self) -> Result<String> {
        match self.options.scale {
            Some(tasks) => Ok(self.run_scale(tasks).await?.render()),
            None => Ok(self.run_all().await?.render()),
        }
    }

    async fn run_all(&mut self) -> Result<Report> {
        let pg_version = pg::server_version(&self.admin).await?;
        let mut header = machine_header(&pg_version, &self.options);
        let busy = tokio::task::spawn_blocking(|| procs::machine_busy(Duration::from_secs(1))).await?;
        header.push(format!("- Machine busy before the run: {busy:.0}% of one core"));
        if busy > crate::report::BUSY_OTHER_PCT {
            header.push(format!(
                "- **Warning: the machine was not idle before the run ({busy:.0}% of a core busy): other work skews these numbers.**"
            ));
        }
        for line in &header {
            eprintln!("{line}");
        }
        for name in self.planned_databases.clone() {
            pg::create_database(&self.admin, &name).await?;
            self.databases.push(name);
        }

        let auth_bin = self.exe_dir.join("auth-service");
        let task_bin = self.exe_dir.join("task-service");
        let bench_bin = std::env::current_exe()?;
        let auth = self.start("auth", &auth_bin, &[], &[])?;
        self.procs[auth].wait_serving(Duration::from_secs(30)).await?;
        pg::seed_revocations(&self.auth_url).await?;
        let task = self.start("task", &task_bin, &[], &[("AUTH_SERVICE_URL", self.url_of(auth))])?;
        let echo = self.start("echo", &bench_bin, &["echo-server"], &[])?;
        self.procs[task].wait_serving(Duration::from_secs(30)).await?;
        self.procs[echo].wait_accepting(Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_start: Vec<Option<u64>> =
            [auth, task].iter().map(|&i| procs::status_bytes(self.procs[i].pid(), "VmRSS:")).collect();
        eprintln!("{} services SERVING; seeding users and tasks", self.elapsed());

        let seeded = fixture::seed(self.procs[auth].addr, self.procs[task].addr).await?;
        let fixture = Arc::new(seeded);
        self.fixture = Some(fixture.clone());
        eprintln!(
            "{} seeded {} users x {} tasks, plus one user with {} tasks",
            self.elapsed(),
            fixture.users.len(),
            fixture::TASKS_PER_USER,
            fixture::LIST_TASKS
        );

        if let Some(dir) = self.options.compare.clone() {
            let comparison = self.compare(&dir, auth, task).await?;
            let mut header = header;
            header.push(format!(
                "- A/B: A = {}, B = {}{}; {} rounds per measurement, alternating A B / B A",
                self.exe_dir.display(),
                dir.display(),
                if self.options.compare_env.is_empty() {
                    String::new()
                } else {
                    let env: Vec<String> = self.options.compare_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!(" with {}", env.join(" "))
                },
                self.options.rounds
            ));
            return Ok(Report::comparison(header, comparison));
        }

        let rows = self.matrix_rows(auth, task, echo, &fixture).await?;
        let interference = self.interference(&auth_bin, auth, task).await?;
        let overhead = self.token_overhead(&bench_bin, task, &fixture).await?;
        let revocation = if self.options.wants("revocation") {
            Some(self.revocation_delay(&task_bin, auth, task).await?)
        } else {
            None
        };

        let watch = if self.options.wants("watch") { Some(self.watch(&task_bin, auth).await?) } else { None };

        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut services = Vec::new();
        for (i, &index) in [auth, task].iter().enumerate() {
            let pid = self.procs[index].pid();
            services.push(ServiceMemory {
                name: self.procs[index].name.clone(),
                idle_start: idle_start[i],
                idle_end: procs::status_bytes(pid, "VmRSS:"),
                hwm: procs::status_bytes(pid, "VmHWM:"),
            });
        }
        let hash_slots = std::env::var("AUTH_MAX_CONCURRENT_HASHES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let memory =
            MemoryNotes { services, hash_slots, hash_mib: f64::from(auth_service::argon2id::M_COST_KIB) / 1024.0 };
        Ok(Report { header, rows, interference, overhead, memory, revocation, watch, comparison: Vec::new() })
    }
}
