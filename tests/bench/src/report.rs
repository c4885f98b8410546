//! The tables (Markdown, so a run pastes straight into BENCHMARKS.md) and the targets.

use std::fmt::Write as _;

use crate::load::{Kind, Stats};
use crate::pg::StorageCeiling;
use crate::procs::CpuUsage;

const MIB: f64 = 1024.0 * 1024.0;
/// CPU (% of one core) used by processes outside the run above which a row is flagged: its
/// numbers were measured on a machine doing something else too.
pub const BUSY_OTHER_PCT: f64 = 20.0;

/// One scenario at one concurrency, with its same-run ceilings.
pub struct Row {
    pub stats: Stats,
    pub cpu: CpuUsage,
    /// Peak resident set per service during the scenario (warm-up included).
    pub rss: Vec<(String, Option<u64>)>,
    pub framework: Option<Stats>,
    /// The echo server's CPU per call, core-µs.
    pub framework_us_per_call: Option<f64>,
    pub storage: Option<StorageCeiling>,
    /// Login only: argon2id verifications/s on all cores, the mean of one measurement just
    /// before this row and one just after.
    pub hash_ceiling: Option<f64>,
}

impl Row {
    /// 1 / (1/framework + 1/storage): both costs paid in series for each call.
    pub fn combined_ceiling(&self) -> Option<f64> {
        let f = self.framework.as_ref()?.rps();
        let s = self.storage.as_ref()?.calls_per_sec;
        (f > 0.0 && s > 0.0).then(|| 1.0 / (1.0 / f + 1.0 / s))
    }
}

pub struct Interference {
    pub probe: Kind,
    pub unloaded: Stats,
    pub loaded: Stats,
    pub login: Stats,
    /// The logins ran on a second auth-service process (a diagnostic row, not a target).
    pub elsewhere: bool,
    /// Mean run-queue wait of the probed service's async workers per timeslice, in µs,
    /// alone and during Login (a diagnostic: the mechanism behind the p99, robust to a slow host).
    pub worker_wait_us: (Option<f64>, Option<f64>),
}

impl Interference {
    pub fn label(&self) -> String {
        let diagnostic = if self.elsewhere { " (logins on a second auth-service: diagnostic)" } else { "" };
        format!("{}{diagnostic}", self.probe.name())
    }
}

pub struct Overhead {
    pub in_flight: usize,
    /// (variant, each round's stats, each round's server core-µs per call)
    pub variants: Vec<(String, Vec<Stats>, Vec<f64>)>,
    /// Core-µs to verify one token in-process.
    pub verify_us: f64,
    /// The same for a token seen for the first time (the full check).
    pub first_verify_us: f64,
}

/// Resident memory of one service, in bytes.
pub struct ServiceMemory {
    pub name: String,
    /// Once SERVING, before any load.
    pub idle_start: Option<u64>,
    /// After the whole run, once quiet for a second.
    pub idle_end: Option<u64>,
    /// VmHWM: the peak of the process's life.
    pub hwm: Option<u64>,
}

pub struct MemoryNotes {
    pub services: Vec<ServiceMemory>,
    pub hash_slots: usize,
    pub hash_mib: f64,
}

/// One measurement of the A/B mode: every round's stats and CPU, per variant.
pub struct Comparison {
    pub kind: Kind,
    pub in_flight: usize,
    pub a: Vec<(Stats, CpuUsage)>,
    pub b: Vec<(Stats, CpuUsage)>,
}

/// Means over the rounds: (req/s, p99 ms, service core-µs per call, postgres core-µs per call).
fn variant_means(kind: Kind, runs: &[(Stats, CpuUsage)]) -> (f64, f64, f64, f64) {
    let per_call = |stats: &Stats, pct: f64| pct / 100.0 * 1e6 / stats.rps().max(1e-9);
    let service = |cpu: &CpuUsage| {
        let role = if kind.on_auth_service() { "auth" } else { "task" };
        cpu.watched.iter().find(|(n, _)| n == role).map_or(0.0, |(_, p)| *p)
    };
    (
        mean(runs.iter().map(|(s, _)| s.rps())),
        mean(runs.iter().map(|(s, _)| s.percentile_ms(0.99))),
        mean(runs.iter().map(|(s, c)| per_call(s, service(c)))),
        mean(runs.iter().map(|(s, c)| per_call(s, c.postgres))),
    )
}

impl Comparison {
    pub fn summary(&self) -> String {
        let (a, b) = (variant_means(self.kind, &self.a), variant_means(self.kind, &self.b));
        format!(
            "{:<16} @{:<3} A {:>7.0} req/s p99 {:>6.2} ms cpu {:>4.0}/{:<4.0} | B {:>7.0} req/s p99 {:>6.2} ms cpu {:>4.0}/{:<4.0} | B/A {:.2}",
            self.kind.name(),
            self.in_flight,
            a.0,
            a.1,
            a.2,
            a.3,
            b.0,
            b.1,
            b.2,
            b.3,
            b.0 / a.0
        )
    }
}

pub struct Report {
    pub header: Vec<String>,
    pub comparison: Vec<Comparison>,
    pub rows: Vec<Row>,
    pub interference: Vec<Interference>,
    pub overhead: Option<Overhead>,
    pub memory: MemoryNotes,
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".to_owned(), |b| format!("{:.1}", b as f64 / MIB))
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".to_owned()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

fn rate(v: f64) -> String {
    if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
}

pub fn errors(stats: &Stats) -> String {
    if stats.errors.is_empty() {
        return "0".to_owned();
    }
    stats.errors.iter().map(|(label, (n, _))| format!("{n} {label}")).collect::<Vec<_>>().join(", ")
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / f64::from(n) }
}

impl Report {
    pub fn comparison(header: Vec<String>, comparison: Vec<Comparison>) -> Self {
        Self {
            header,
            rows: Vec::new(),
            interference: Vec::new(),
            overhead: None,
            memory: MemoryNotes { services: Vec::new(), hash_slots: 0, hash_mib: 0.0 },
            comparison,
        }
    }

    fn render_comparison(&self, out: &mut String) {
        let _ = writeln!(out, "\n### A/B comparison (means over the rounds)\n");
        let _ = writeln!(
            out,
            "| Scenario | In flight | A req/s | B req/s | B/A | A p99 ms | B p99 ms | A CPU µs/call service / postgres | B CPU µs/call service / postgres | non-OK A / B |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---|---|---|");
        for c in &self.comparison {
            let (a, b) = (variant_means(c.kind, &c.a), variant_means(c.kind, &c.b));
            let errs = |runs: &[(Stats, CpuUsage)]| runs.iter().map(|(s, _)| s.error_count()).sum::<u64>();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.2} | {} | {} | {:.0} / {:.0} | {:.0} / {:.0} | {} / {} |",
                c.kind.name(),
                c.in_flight,
                rate(a.0),
                rate(b.0),
                b.0 / a.0,
                ms(a.1),
                ms(b.1),
                a.2,
                a.3,
                b.2,
                b.3,
                errs(&c.a),
                errs(&c.b)
            );
        }
    }

    fn row(&self, kind: Kind, in_flight: usize) -> Option<&Row> {
        self.rows.iter().find(|r| r.stats.kind == kind && r.stats.in_flight == in_flight)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.header {
            let _ = writeln!(out, "{line}");
        }
        if !self.comparison.is_empty() {
            self.render_comparison(&mut out);
            return out;
        }

        let _ = writeln!(out, "\n### Throughput, latency, errors, memory, CPU\n");
        let _ = writeln!(
            out,
            "CPU is in % of one core over the measured window (this box has {} cores); `client` is the load generator (and pgbench), `other` is busy time of processes outside the run. CPU per call (core-µs) is the steadiest figure on a shared machine.\n",
            std::thread::available_parallelism().map_or(2, |n| n.get())
        );
        let busy = self.rows.iter().filter(|r| r.cpu.other > BUSY_OTHER_PCT).count();
        if busy > 0 {
            let _ = writeln!(
                out,
                "**{busy} of {} rows are marked (busy)**: processes outside the run used more than {BUSY_OTHER_PCT:.0}% of a core during their window, so they measure a shared machine. Rerun on a quiet one before comparing.\n",
                self.rows.len()
            );
        }
        let _ = writeln!(
            out,
            "| Scenario | In flight | req/s | p50 ms | p99 ms | non-OK | auth RSS peak MiB | task RSS peak MiB | CPU % auth / task / postgres / client / other | CPU µs per call: service / postgres |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---|---:|---:|---|---|");
        for row in &self.rows {
            let s = &row.stats;
            let rss = |name: &str| mib(row.rss.iter().find(|(n, _)| n == name).and_then(|(_, b)| *b));
            let cpu = |name: &str| row.cpu.watched.iter().find(|(n, _)| n == name).map_or(0.0, |(_, p)| *p);
            // % of a core -> core-microseconds per successful call.
            let per_call = |pct: f64| if s.ok == 0 { f64::NAN } else { pct / 100.0 * 1e6 / s.rps() };
            let service = if s.kind.on_auth_service() { cpu("auth") } else { cpu("task") };
            let _ = writeln!(
                out,
                "| {}{} | {} | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} / {:.0} / {:.0} / {:.0} | {:.0} / {:.0} |",
                s.kind.name(),
                if row.cpu.other > BUSY_OTHER_PCT { " (busy)" } else { "" },
                s.in_flight,
                rate(s.rps()),
                ms(s.percentile_ms(0.50)),
                ms(s.percentile_ms(0.99)),
                errors(s),
                rss("auth"),
                rss("task"),
                cpu("auth"),
                cpu("task"),
                row.cpu.postgres,
                row.cpu.client,
                row.cpu.other,
                per_call(service),
                per_call(row.cpu.postgres),
            );
        }

        let _ = writeln!(out, "\n### Against the same-run ceilings\n");
        let _ = writeln!(
            out,
            "framework = the same load against a bare tonic echo server; storage = pgbench running the scenario's SQL with as many clients as calls in flight; combined = 1 / (1/framework + 1/storage); Login is measured against the argon2id ceiling instead.\n"
        );
        let _ = writeln!(
            out,
            "| Scenario | In flight | req/s | framework req/s | storage calls/s | combined | efficiency | CPU µs per call: service / echo | postgres CPU µs per call: service / pgbench |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---|---|");
        for row in &self.rows {
            let s = &row.stats;
            let framework = row.framework.as_ref().map_or("-".to_owned(), |f| {
                let errs = f.error_count();
                if errs > 0 { format!("{} ({errs} non-OK)", rate(f.rps())) } else { rate(f.rps()) }
            });
            let storage = row.storage.as_ref().map_or("-".to_owned(), |st| {
                if st.failed > 0 {
                    format!("{} ({} failed)", rate(st.calls_per_sec), st.failed)
                } else {
                    rate(st.calls_per_sec)
                }
            });
            let (combined, efficiency) = if s.kind == Kind::Login {
                match row.hash_ceiling {
                    Some(h) => (format!("{} (hashes/s)", rate(h)), format!("{:.2}", s.rps() / h)),
                    None => ("-".to_owned(), "-".to_owned()),
                }
            } else {
                match row.combined_ceiling() {
                    Some(c) => (rate(c), format!("{:.2}", s.rps() / c)),
                    None => ("-".to_owned(), "-".to_owned()),
                }
            };
            let per_call = |pct: f64| pct / 100.0 * 1e6 / s.rps().max(1e-9);
            let role = if s.kind.on_auth_service() { "auth" } else { "task" };
            let service_us = row.cpu.watched.iter().find(|(n, _)| n == role).map(|(_, p)| per_call(*p));
            let us = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {framework} | {storage} | {combined} | {efficiency} | {} / {} | {} / {} |",
                s.kind.name(),
                s.in_flight,
                rate(s.rps()),
                us(service_us),
                us(row.framework_us_per_call),
                us(Some(per_call(row.cpu.postgres))),
                us(row.storage.as_ref().and_then(|st| st.postgres_us_per_call)),
            );
        }
        let hash_ceilings: Vec<String> = self
            .rows
            .iter()
            .filter_map(|r| r.hash_ceiling.map(|h| format!("{h:.1} (@{})", r.stats.in_flight)))
            .collect();
        if !hash_ceilings.is_empty() {
            let _ = writeln!(
                out,
                "\nargon2id ceiling (m=19456 KiB, t=2, p=1, one thread per core), the mean of a measurement just before and one just after each Login level: {} hashes/s.",
                hash_ceilings.join(", ")
            );
        }

        if !self.interference.is_empty() {
            let _ = writeln!(out, "\n### Interference: probes at 1 in flight while Login runs at 16 in flight\n");
            let _ = writeln!(
                out,
                "| Probe | unloaded p50 / p99 ms | during Login p50 / p99 ms | p99 ratio | Login req/s meanwhile | async workers' wait for a CPU per timeslice, µs: unloaded / during Login | non-OK |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---|");
            for i in &self.interference {
                let ratio = i.loaded.percentile_ms(0.99) / i.unloaded.percentile_ms(0.99);
                let _ = writeln!(
                    out,
                    "| {} | {} / {} | {} / {} | {ratio:.1}x | {} | {} / {} | {} / {} / {} |",
                    i.label(),
                    ms(i.unloaded.percentile_ms(0.5)),
                    ms(i.unloaded.percentile_ms(0.99)),
                    ms(i.loaded.percentile_ms(0.5)),
                    ms(i.loaded.percentile_ms(0.99)),
                    rate(i.login.rps()),
                    i.worker_wait_us.0.map_or("-".to_owned(), |w| format!("{w:.0}")),
                    i.worker_wait_us.1.map_or("-".to_owned(), |w| format!("{w:.0}")),
                    errors(&i.unloaded),
                    errors(&i.loaded),
                    errors(&i.login),
                );
            }
        }

        if let Some(o) = &self.overhead {
            let _ = writeln!(
                out,
                "\n### Token verification overhead: GetTask (one user's 100 tasks) at {} in flight\n",
                o.in_flight
            );
            let _ = writeln!(
                out,
                "| Server | req/s per round | mean req/s | p99 ms (last round) | server CPU µs per call | non-OK |"
            );
            let _ = writeln!(out, "|---|---|---:|---:|---:|---|");
            for (name, runs, cpu) in &o.variants {
                let rounds: Vec<String> = runs.iter().map(|s| rate(s.rps())).collect();
                let errs: u64 = runs.iter().map(Stats::error_count).sum();
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {} | {:.0} | {errs} |",
                    rounds.join(", "),
                    rate(mean(runs.iter().map(Stats::rps))),
                    runs.last().map_or("-".to_owned(), |s| ms(s.percentile_ms(0.99))),
                    mean(cpu.iter().copied()),
                );
            }
            if let Some(cost) = self.token_cost() {
                let _ = writeln!(
                    out,
                    "\nToken verification costs {:.1}% of throughput at saturation (task-host auth vs no-auth, means over the rounds){}.",
                    cost * 100.0,
                    self.token_cpu_cost()
                        .map_or(String::new(), |c| format!(", and {:+.1}% server CPU per call", c * 100.0))
                );
            }
            let base = o
                .variants
                .iter()
                .find(|(n, _, _)| n.starts_with("task-host no-auth"))
                .map(|(_, _, c)| mean(c.iter().copied()));
            if let Some(base) = base.filter(|b| *b > 0.0) {
                let _ = writeln!(
                    out,
                    "Verifying a client's token in-process takes {:.2} µs (remembered after its first call; {:.2} µs the first time, the full check): {:.1}% (first time {:.1}%) of the no-auth host's {:.0} µs of CPU per call.",
                    o.verify_us,
                    o.first_verify_us,
                    o.verify_us / base * 100.0,
                    o.first_verify_us / base * 100.0,
                    base
                );
            }
        }

        let _ = writeln!(out, "\n### Memory (RSS, MiB)\n");
        let _ = writeln!(out, "| Service | idle after start | idle after the run | VmHWM (peak of the whole run) |");
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for m in &self.memory.services {
            let _ = writeln!(out, "| {} | {} | {} | {} |", m.name, mib(m.idle_start), mib(m.idle_end), mib(m.hwm));
        }

        let samples: Vec<String> = self
            .rows
            .iter()
            .flat_map(|r| std::iter::once(&r.stats).chain(r.framework.as_ref()))
            .chain(self.interference.iter().flat_map(|i| [&i.unloaded, &i.loaded, &i.login]))
            .chain(self.overhead.iter().flat_map(|o| o.variants.iter().flat_map(|(_, runs, _)| runs.iter())))
            .flat_map(|s| {
                s.errors
                    .iter()
                    .map(move |(label, (n, msg))| format!("- {} @{}: {n} x {label}: {msg}", s.kind.name(), s.in_flight))
            })
            .collect();
        if !samples.is_empty() {
            let _ = writeln!(out, "\n### Non-OK answers (one example message each)\n");
            for line in samples {
                let _ = writeln!(out, "{line}");
            }
        }

        let _ = writeln!(out, "\n### Targets (issue 6)\n");
        let _ = writeln!(out, "| Target | Measured | |");
        let _ = writeln!(out, "|---|---|---|");
        for (target, measured, met) in self.targets() {
            let verdict = match met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "not measured",
            };
            let _ = writeln!(out, "| {target} | {measured} | {verdict} |");
        }
        out
    }

    fn token_cost(&self) -> Option<f64> {
        let o = self.overhead.as_ref()?;
        let rps = |name: &str| {
            o.variants.iter().find(|(n, _, _)| n.starts_with(name)).map(|(_, r, _)| mean(r.iter().map(Stats::rps)))
        };
        let (with, without) = (rps("task-host auth")?, rps("task-host no-auth")?);
        Some(1.0 - with / without)
    }

    fn token_cpu_cost(&self) -> Option<f64> {
        let o = self.overhead.as_ref()?;
        let cpu = |name: &str| {
            o.variants.iter().find(|(n, _, _)| n.starts_with(name)).map(|(_, _, c)| mean(c.iter().copied()))
        };
        let (with, without) = (cpu("task-host auth")?, cpu("task-host no-auth")?);
        Some(with / without - 1.0)
    }

    fn targets(&self) -> Vec<(String, String, Option<bool>)> {
        let mut targets = Vec::new();
        for kind in [Kind::GetTask, Kind::CreateTask, Kind::UpdateTask, Kind::ListTasks] {
            let efficiency = self.row(kind, 16).and_then(|r| Some(r.stats.rps() / r.combined_ceiling()?));
            targets.push((
                format!("{} efficiency at 16 in flight >= 0.7", kind.name()),
                efficiency.map_or("-".to_owned(), |e| format!("{e:.2}")),
                efficiency.map(|e| e >= 0.7),
            ));
        }
        let login = self.row(Kind::Login, 16).and_then(|r| Some(r.stats.rps() / r.hash_ceiling?));
        targets.push((
            "Login at 16 in flight >= 0.9 of the hash ceiling".to_owned(),
            login.map_or("-".to_owned(), |e| format!("{e:.2}")),
            login.map(|e| e >= 0.9),
        ));
        let cost = self.token_cost();
        targets.push((
            "Token verification <= 5% at saturation".to_owned(),
            cost.map_or("-".to_owned(), |c| format!("{:.1}%", c * 100.0)),
            cost.map(|c| c <= 0.05),
        ));
        for i in self.interference.iter().filter(|i| !i.elsewhere) {
            let ratio = i.loaded.percentile_ms(0.99) / i.unloaded.percentile_ms(0.99);
            targets.push((
                format!("{} p99 during a Login flood within 2x of unloaded", i.probe.name()),
                format!(
                    "{ratio:.1}x ({} vs {} ms)",
                    ms(i.loaded.percentile_ms(0.99)),
                    ms(i.unloaded.percentile_ms(0.99))
                ),
                Some(ratio <= 2.0),
            ));
        }
        for kind in [Kind::GetTask, Kind::CreateTask] {
            let p99 = self.row(kind, 1).map(|r| r.stats.percentile_ms(0.99));
            targets.push((
                format!("{} p99 at 1 in flight < 1 ms", kind.name()),
                p99.map_or("-".to_owned(), |p| format!("{} ms", ms(p))),
                p99.map(|p| p < 1.0),
            ));
        }
        for ServiceMemory { name, idle_start: start, .. } in &self.memory.services {
            targets.push((
                format!("{name}-service idle RSS < 20 MiB"),
                format!("{} MiB", mib(*start)),
                start.map(|b| (b as f64) < 20.0 * MIB),
            ));
            let peak_at_64 = self
                .rows
                .iter()
                .filter(|r| r.stats.in_flight == 64 && r.stats.kind != Kind::Login)
                .filter_map(|r| r.rss.iter().find(|(n, _)| n == name).and_then(|(_, b)| *b))
                .max();
            targets.push((
                format!("{name}-service RSS < 64 MiB at 64 in flight (Login aside)"),
                format!("{} MiB", mib(peak_at_64)),
                peak_at_64.map(|b| (b as f64) < 64.0 * MIB),
            ));
            if name == "auth" {
                // What serving 64 calls costs a process of this stack besides hashing (buffers,
                // tasks, pool connections), measured on task-service, which does no hashing.
                let task_idle = self.memory.services.iter().find(|m| m.name == "task").and_then(|m| m.idle_start);
                let serving = self
                    .rows
                    .iter()
                    .filter(|r| r.stats.in_flight == 64 && r.stats.kind != Kind::Login)
                    .filter_map(|r| r.rss.iter().find(|(n, _)| n == "task").and_then(|(_, b)| *b))
                    .max()
                    .zip(task_idle)
                    .map_or(0.0, |(peak, idle)| peak.saturating_sub(idle) as f64);
                let bound =
                    start.map(|b| b as f64 + self.memory.hash_slots as f64 * self.memory.hash_mib * MIB + serving);
                let flood = self
                    .rows
                    .iter()
                    .filter(|r| r.stats.kind == Kind::Login)
                    .filter_map(|r| r.rss.iter().find(|(n, _)| n == "auth").and_then(|(_, b)| *b))
                    .max();
                targets.push((
                    format!(
                        "auth-service RSS under a Login flood <= idle + {} hashing slots x {:.0} MiB + serving 64 calls ({:.1} MiB, task-service's growth at 64 in flight)",
                        self.memory.hash_slots,
                        self.memory.hash_mib,
                        serving / MIB
                    ),
                    format!(
                        "{} MiB (bound {})",
                        mib(flood),
                        bound.map_or("-".to_owned(), |b| format!("{:.1}", b / MIB))
                    ),
                    flood.zip(bound).map(|(f, b)| f as f64 <= b),
                ));
            }
        }
        let non_ok: u64 = self
            .rows
            .iter()
            .map(|r| r.stats.error_count())
            .chain(
                self.interference
                    .iter()
                    .map(|i| i.unloaded.error_count() + i.loaded.error_count() + i.login.error_count()),
            )
            .chain(
                self.overhead
                    .iter()
                    .flat_map(|o| o.variants.iter().flat_map(|(_, r, _)| r.iter().map(Stats::error_count))),
            )
            .sum();
        targets.push(("No non-OK status in any scenario".to_owned(), format!("{non_ok} non-OK"), Some(non_ok == 0)));
        targets
    }
}
