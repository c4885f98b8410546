//! The main tables: throughput, latency, errors, memory and CPU of every row, and each row
//! against its same-run ceilings.

use std::fmt::Write as _;

use crate::load::Kind;

use super::{BUSY_OTHER_PCT, Report, errors, mib, ms, rate};

impl Report {
    /// Throughput, latency, errors, peak RSS and CPU of every scenario and level.
    pub(super) fn render_throughput(&self, out: &mut String) {
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
    }

    /// Every row against its framework, storage and combined (or argon2id) ceilings.
    pub(super) fn render_ceilings(&self, out: &mut String) {
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
    }
}
