//! One run of the matrix: fresh databases, each service in its own process, the seed data,
//! every scenario with its same-run ceilings, the interference and token-overhead checks,
//! then everything stopped and dropped again (also on error and on Ctrl-C).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fixture::Fixture;
use crate::load::{Group, Kind, Stats, Timing, WindowProbe};
use crate::procs::{CpuSnapshot, CpuUsage, Proc, RssSampler, WorkerWaits};
use crate::report::{Comparison, Interference, MemoryNotes, Overhead, Report, Row, ServiceMemory};
use crate::{Options, Result, ceilings, fixture, load, pg, procs};

/// What `--only` accepts.
pub const SECTIONS: &[&str] = &[
    "login",
    "get-current-user",
    "get-task",
    "list-tasks",
    "create-task",
    "update-task",
    "mixed",
    "interference",
    "token-overhead",
];

/// The matrix, in running order. Mixed runs last: it deletes and creates tasks.
const MATRIX: &[(&str, Kind)] = &[
    ("login", Kind::Login),
    ("get-current-user", Kind::GetCurrentUser),
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

/// Measures CPU and peak RSS of the watched processes around one load window.
struct Probe<'a> {
    sampler: &'a RssSampler,
    watched: Vec<(String, u32)>,
    before: Option<CpuSnapshot>,
    usage: CpuUsage,
}

impl<'a> Probe<'a> {
    /// `watched`: (role shown in the tables, process).
    fn new(sampler: &'a RssSampler, watched: &[(&str, &Proc)]) -> Self {
        Self {
            sampler,
            watched: watched.iter().map(|(role, p)| ((*role).to_owned(), p.pid())).collect(),
            before: None,
            usage: CpuUsage::default(),
        }
    }

    fn rss(&self) -> Vec<(String, Option<u64>)> {
        self.watched.iter().map(|(name, pid)| (name.clone(), self.sampler.peak(*pid))).collect()
    }
}

impl WindowProbe for Probe<'_> {
    fn warmup_started(&mut self) {
        self.sampler.reset();
    }

    fn window_started(&mut self) {
        self.before = Some(procs::cpu_snapshot(&self.watched));
    }

    fn window_ended(&mut self) {
        if let Some(before) = &self.before {
            self.usage = procs::cpu_usage(before, &procs::cpu_snapshot(&self.watched), &self.watched);
        }
    }
}

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
        sampler: RssSampler::start()?,
        started: Instant::now(),
        fixture: None,
        options,
    };
    let outcome = tokio::select! {
        outcome = harness.run_all() => outcome,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    };
    harness.teardown().await;
    let report = outcome?;
    println!("{}", report.render());
    eprintln!(
        "\n(total {:.0} s; service logs in {})",
        harness.started.elapsed().as_secs_f64(),
        harness.log_dir.display()
    );
    Ok(())
}

fn machine_header(pg_version: &str, options: &Options) -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_owned(), |(_, m)| m.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or("?".to_owned(), |kib| format!("{:.1}", kib / 1024.0 / 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut header = vec![
        format!("## todo-bench run, {date}\n"),
        format!("- Machine: {cores} cores, {model}, {mem_gib} GiB RAM, Linux {}", kernel.trim()),
        format!("- PostgreSQL {pg_version} at 127.0.0.1 (the same machine)"),
        format!(
            "- Command: `cargo run --release -p todo-bench --{}{}`",
            if args.is_empty() { "" } else { " " },
            args.join(" ")
        ),
        format!(
            "- Each measurement: {:.1} s warm-up, {:.1} s window; {}",
            options.warmup.as_secs_f64(),
            options.window.as_secs_f64(),
            if options.compare.is_some() || options.baseline_levels.is_empty() {
                "no ceilings".to_owned()
            } else {
                format!(
                    "ceilings at {} in flight",
                    options.baseline_levels.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                )
            }
        ),
    ];
    let overrides: Vec<String> =
        SERVICE_ENV.iter().filter_map(|v| std::env::var(v).ok().map(|value| format!("{v}={value}"))).collect();
    if !overrides.is_empty() {
        header.push(format!("- Service environment overrides: {}", overrides.join(" ")));
    }
    header
}

impl Harness {
    fn elapsed(&self) -> String {
        format!("[{:>4.0}s]", self.started.elapsed().as_secs_f64())
    }

    fn timing(&self) -> Timing {
        Timing { warmup: self.options.warmup, window: self.options.window }
    }

    fn start(&mut self, name: &str, program: &Path, args: &[&str], extra_env: &[(&str, String)]) -> Result<usize> {
        let addr = procs::free_addr()?;
        let is_auth = name.starts_with("auth");
        let listen_var = if is_auth { "AUTH_LISTEN_ADDR" } else { "TASK_LISTEN_ADDR" };
        let database = if is_auth { self.auth_url.clone() } else { self.tasks_url.clone() };
        let mut env = vec![
            ("DATABASE_URL", database),
            ("JWT_SECRET", self.secret.clone()),
            (listen_var, addr.to_string()),
            ("AUTH_THROTTLE_PER_ADDRESS", THROTTLE_PER_ADDRESS.to_owned()),
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
        Ok(self.procs.len() - 1)
    }

    fn stop(&mut self, index: usize) {
        let pid = self.procs[index].pid();
        self.procs[index].stop();
        self.sampler.unwatch(pid);
    }

    async fn teardown(&mut self) {
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

    /// A/B mode: B's pair on the same databases, every measurement on A and B alternately.
    async fn compare(&mut self, dir: &Path, auth: usize, task: usize) -> Result<Vec<Comparison>> {
        let owned = self.options.compare_env.clone();
        let env: Vec<(&str, String)> = owned.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let auth_b = self.start("auth-b", &dir.join("auth-service"), &[], &env)?;
        let task_b = self.start("task-b", &dir.join("task-service"), &[], &env)?;
        self.procs[auth_b].wait_serving(Duration::from_secs(30)).await?;
        self.procs[task_b].wait_serving(Duration::from_secs(30)).await?;
        let mut results = Vec::new();
        for &(section, kind) in MATRIX {
            if !self.options.wants(section) {
                continue;
            }
            for &n in &self.options.in_flight.clone() {
                let mut comparison = Comparison { kind, in_flight: n, a: Vec::new(), b: Vec::new() };
                for round in 0..self.options.rounds {
                    let order = if round % 2 == 0 { [false, true] } else { [true, false] };
                    for is_b in order {
                        let (auth_i, task_i) = if is_b { (auth_b, task_b) } else { (auth, task) };
                        let service = if kind.on_auth_service() { auth_i } else { task_i };
                        let group = Group { kind, in_flight: n, addr: self.procs[service].addr, echo: false };
                        let watched = [("auth", &self.procs[auth_i]), ("task", &self.procs[task_i])];
                        let (mut stats, cpu, _) = self.measure(&[group], &watched).await?;
                        let stats = stats.pop().ok_or("no stats")?;
                        if is_b { &mut comparison.b } else { &mut comparison.a }.push((stats, cpu));
                    }
                }
                eprintln!("{} {}", self.elapsed(), comparison.summary());
                results.push(comparison);
            }
        }
        Ok(results)
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
        let task = self.start("task", &task_bin, &[], &[])?;
        let echo = self.start("echo", &bench_bin, &["echo-server"], &[])?;
        self.procs[auth].wait_serving(Duration::from_secs(30)).await?;
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

        let mut rows = Vec::new();
        let work_dir = self.log_dir.clone();
        for &(section, kind) in MATRIX {
            if !self.options.wants(section) {
                continue;
            }
            for &n in &self.options.in_flight.clone() {
                let service = if kind.on_auth_service() { auth } else { task };
                let group = Group { kind, in_flight: n, addr: self.procs[service].addr, echo: false };
                let watched = [("auth", &self.procs[auth]), ("task", &self.procs[task])];
                // Hashing speed drifts by 10% and more within a minute on a shared machine
                // (other tenants' memory traffic), so Login's ceiling brackets each level: the
                // mean of one measurement just before and one just after.
                let (hash_before, mut hash_ceiling) =
                    if kind == Kind::Login { (Some(self.hash_ceiling().await?), None) } else { (None, None) };
                let (mut stats, cpu, rss) = self.measure(&[group], &watched).await?;
                let stats = stats.pop().ok_or("no stats")?;
                let (mut framework, mut storage, mut framework_us_per_call) = (None, None, None);
                if self.options.baseline_levels.contains(&n) {
                    let group = Group { kind, in_flight: n, addr: self.procs[echo].addr, echo: true };
                    let (mut echo_stats, echo_cpu, _) = self.measure(&[group], &[("echo", &self.procs[echo])]).await?;
                    framework = echo_stats.pop();
                    framework_us_per_call = framework
                        .as_ref()
                        .and_then(|f| echo_cpu.watched.first().map(|(_, pct)| pct / 100.0 * 1e6 / f.rps().max(1e-9)));
                    let secs = self.options.window.as_secs_f64().round().max(1.0) as u64;
                    storage = pg::storage_ceiling(
                        &self.pgbench,
                        kind,
                        n,
                        secs,
                        &fixture,
                        &self.auth_url,
                        &self.tasks_url,
                        &work_dir,
                    )
                    .await?;
                }
                if let Some(before) = hash_before {
                    let after = self.hash_ceiling().await?;
                    hash_ceiling = Some((before + after) / 2.0);
                    eprintln!("{} argon2id ceiling {before:.1} before, {after:.1} after", self.elapsed());
                }
                eprintln!(
                    "{} {:<16} @{n:<3} {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  non-OK {}{}{}{}",
                    self.elapsed(),
                    kind.name(),
                    stats.rps(),
                    stats.percentile_ms(0.5),
                    stats.percentile_ms(0.99),
                    crate::report::errors(&stats),
                    framework.as_ref().map_or(String::new(), |f| format!("  | echo {:.0} req/s", f.rps())),
                    storage.as_ref().map_or(String::new(), |s| format!("  | pgbench {:.0} calls/s", s.calls_per_sec)),
                    hash_ceiling.map_or(String::new(), |h| format!("  | argon2id {h:.1} hashes/s")),
                );
                rows.push(Row { stats, cpu, rss, framework, framework_us_per_call, storage, hash_ceiling });
            }
        }

        let mut interference = Vec::new();
        if self.options.wants("interference") {
            // The third probe is a diagnostic, not a target: the same GetCurrentUser probe while
            // the logins hash in a second auth-service process on the same database. Near 1x
            // there while the first GetCurrentUser row misses, and the cause is inside the
            // process (its hashing threads and its async runtime); high in both, the machine.
            let auth_login = self.start("auth-login", &auth_bin, &[], &[])?;
            self.procs[auth_login].wait_serving(Duration::from_secs(30)).await?;
            let probes = [
                (Kind::GetTask, task, auth),
                (Kind::GetCurrentUser, auth, auth),
                (Kind::GetCurrentUser, auth, auth_login),
            ];
            for (probe_kind, service, login_at) in probes {
                let probe = Group { kind: probe_kind, in_flight: 1, addr: self.procs[service].addr, echo: false };
                let login = Group { kind: Kind::Login, in_flight: 16, addr: self.procs[login_at].addr, echo: false };
                let watched = [("auth", &self.procs[auth]), ("task", &self.procs[task])];
                let probed = self.procs[service].pid();
                let start = WorkerWaits::of(probed);
                let (mut alone, _, _) = self.measure(std::slice::from_ref(&probe), &watched).await?;
                let middle = WorkerWaits::of(probed);
                let (mut both, _, _) = self.measure(&[probe, login], &watched).await?;
                let end = WorkerWaits::of(probed);
                let wait = |from: Option<WorkerWaits>, to: Option<WorkerWaits>| to?.mean_wait_us_since(&from?);
                let login = both.pop().ok_or("no stats")?;
                let loaded = both.pop().ok_or("no stats")?;
                let unloaded = alone.pop().ok_or("no stats")?;
                let measured = Interference {
                    probe: probe_kind,
                    unloaded,
                    loaded,
                    login,
                    elsewhere: login_at != auth,
                    worker_wait_us: (wait(start, middle), wait(middle, end)),
                };
                let us = |w: Option<f64>| w.map_or("-".to_owned(), |w| format!("{w:.0}"));
                eprintln!(
                    "{} interference: {} p99 {:.2} ms alone, {:.2} ms during Login ({:.1} logins/s); workers wait {} / {} µs per timeslice",
                    self.elapsed(),
                    measured.label(),
                    measured.unloaded.percentile_ms(0.99),
                    measured.loaded.percentile_ms(0.99),
                    measured.login.rps(),
                    us(measured.worker_wait_us.0),
                    us(measured.worker_wait_us.1),
                );
                interference.push(measured);
            }
            self.stop(auth_login);
        }

        let mut overhead = None;
        if self.options.wants("token-overhead") {
            let fixed = [("BENCH_FIXED_USER", fixture.list_user.id.clone())];
            let with = self.start("task-host-auth", &bench_bin, &["task-host", "auth"], &fixed)?;
            let without = self.start("task-host-no-auth", &bench_bin, &["task-host", "no-auth"], &fixed)?;
            self.procs[with].wait_serving(Duration::from_secs(30)).await?;
            self.procs[without].wait_serving(Duration::from_secs(30)).await?;
            let n = self.options.in_flight.iter().copied().max().unwrap_or(64);
            // Four rounds, A B C / C B A / A B C / C B A: each variant sits at each position
            // equally often, so drift over the run cancels out.
            let rounds = if self.options.quick { 1 } else { 4 };
            let variants = [
                ("task-host no-auth (fixed caller)", without),
                ("task-host auth (bearer token verified)", with),
                ("task-service binary", task),
            ];
            let mut results: Vec<(String, Vec<Stats>, Vec<f64>)> =
                variants.iter().map(|(name, _)| ((*name).to_owned(), Vec::new(), Vec::new())).collect();
            if !self.options.quick {
                // One unmeasured pass: the first measurement after the hosts start runs on cold
                // connections, statement caches and buffers, and was 10-25% low.
                for (_, index) in &variants {
                    let group =
                        Group { kind: Kind::GetTaskOneUser, in_flight: n, addr: self.procs[*index].addr, echo: false };
                    self.measure(&[group], &[("task", &self.procs[*index])]).await?;
                }
            }
            for round in 0..rounds {
                // Forwards, then backwards: drift over the run does not favour one variant.
                let order: Vec<usize> =
                    if round % 2 == 0 { (0..variants.len()).collect() } else { (0..variants.len()).rev().collect() };
                for i in order {
                    let index = &variants[i].1;
                    let group =
                        Group { kind: Kind::GetTaskOneUser, in_flight: n, addr: self.procs[*index].addr, echo: false };
                    let (mut stats, cpu, _) = self.measure(&[group], &[("task", &self.procs[*index])]).await?;
                    let stats = stats.pop().ok_or("no stats")?;
                    let server_pct = cpu.watched.first().map_or(0.0, |(_, pct)| *pct);
                    let per_call = server_pct / 100.0 * 1e6 / stats.rps().max(1e-9);
                    eprintln!(
                        "{} token overhead: {} {:.0} req/s, {per_call:.0} µs of server CPU per call",
                        self.elapsed(),
                        results[i].0,
                        stats.rps()
                    );
                    results[i].1.push(stats);
                    results[i].2.push(per_call);
                }
            }
            self.stop(without);
            self.stop(with);
            let (verify_us, first_verify_us) = verify_cost_us(&self.secret, &fixture.list_user.bearer)?;
            eprintln!(
                "{} token overhead: verifying takes {verify_us:.2} µs in-process ({first_verify_us:.2} µs the first time)",
                self.elapsed()
            );
            overhead = Some(Overhead { in_flight: n, variants: results, verify_us, first_verify_us });
        }

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
        Ok(Report { header, rows, interference, overhead, memory, comparison: Vec::new() })
    }
}

/// Core-µs to verify a token in-process, on one thread: the fixture's real token again and
/// again (as a client's calls do; remembered after the first time), and 20,000 fresh tokens
/// once each (the full check). Figures free of the load generator's and scheduler's noise, to
/// set beside the server's CPU per call.
fn verify_cost_us(secret: &str, bearer: &tonic::metadata::AsciiMetadataValue) -> Result<(f64, f64)> {
    use todo_shared::config::TokenConfig;
    let secret = todo_shared::token::JwtSecret::new(secret.as_bytes().to_vec())?;
    let keys = todo_shared::token::TokenKeys::new(&secret, TokenConfig::DEFAULT_ISSUER, TokenConfig::DEFAULT_AUDIENCE)?;
    let token = bearer.to_str()?.trim_start_matches("Bearer ").to_owned();
    keys.verify(&token).map_err(|e| format!("the fixture's token does not verify: {e}"))?;
    const N: u32 = 200_000;
    let start = std::time::Instant::now();
    for _ in 0..N {
        std::hint::black_box(keys.verify(std::hint::black_box(&token)).is_ok());
    }
    let again = start.elapsed().as_secs_f64() * 1e6 / f64::from(N);

    const FRESH: u32 = 20_000;
    let ttl = std::time::Duration::from_secs(3600);
    let fresh = (0..FRESH)
        .map(|i| keys.mint(uuid::Uuid::new_v4(), &format!("bench-{i}@example.com"), ttl).map(|m| m.token))
        .collect::<Result<Vec<_>, _>>()?;
    let start = std::time::Instant::now();
    for token in &fresh {
        std::hint::black_box(keys.verify(std::hint::black_box(token)).is_ok());
    }
    let first = start.elapsed().as_secs_f64() * 1e6 / f64::from(FRESH);
    Ok((again, first))
}
