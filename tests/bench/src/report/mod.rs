//! The tables (Markdown, so a run pastes straight into BENCHMARKS.md) and the targets.

mod comparison;
mod diagnostics;
mod scale;
mod tables;
mod targets;
mod watch;

pub use scale::ScaleReport;
pub use watch::{Delivery, IdleStreams, WatchReport};

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

pub struct Report {
    pub header: Vec<String>,
    pub comparison: Vec<Comparison>,
    pub rows: Vec<Row>,
    pub interference: Vec<Interference>,
    pub overhead: Option<Overhead>,
    pub memory: MemoryNotes,
    pub revocation: Option<RevocationDelay>,
    pub watch: Option<WatchReport>,
}

/// How long after Logout returned each task-service replica refused the session's token.
pub struct RevocationDelay {
    pub replicas: usize,
    pub revocations: usize,
    /// One per (revocation, replica), in ms.
    pub delays_ms: Vec<f64>,
    /// Revocations the replicas hold (the seeded set plus these).
    pub held: String,
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
            revocation: None,
            watch: None,
            comparison,
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

        self.render_throughput(&mut out);
        self.render_ceilings(&mut out);
        self.render_interference(&mut out);
        self.render_overhead(&mut out);
        self.render_memory(&mut out);
        self.render_revocation(&mut out);
        self.render_watch(&mut out);
        self.render_non_ok(&mut out);
        self.render_targets(&mut out);
        out
    }
}

impl Report {
    fn render_revocation(&self, out: &mut String) {
        let Some(r) = &self.revocation else { return };
        let mut delays = r.delays_ms.clone();
        delays.sort_by(f64::total_cmp);
        let pick = |q: f64| delays.get(((delays.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied();
        let show = |v: Option<f64>| v.map_or("-".to_owned(), ms);
        let _ = writeln!(out, "\n### Revocation delay\n");
        let _ = writeln!(
            out,
            "Logout returned -> the session's access token refused by task-service; {} revocations x {} replicas, {}.\n",
            r.revocations, r.replicas, r.held
        );
        let _ = writeln!(out, "| Samples | p50 ms | p99 ms | max ms | over 1 s |");
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|");
        let over = delays.iter().filter(|d| **d > 1000.0).count();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            delays.len(),
            show(pick(0.5)),
            show(pick(0.99)),
            show(delays.last().copied()),
            over
        );
    }
}
