//! The targets, each with what this run measured and whether it was met.

use std::fmt::Write as _;

use crate::load::{Kind, Stats};

use super::{MIB, Report, ServiceMemory, mean, mib, ms};

impl Report {
    /// The targets table.
    pub(super) fn render_targets(&self, out: &mut String) {
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
    }

    pub(super) fn token_cost(&self) -> Option<f64> {
        let o = self.overhead.as_ref()?;
        let rps = |name: &str| {
            o.variants.iter().find(|(n, _, _)| n.starts_with(name)).map(|(_, r, _)| mean(r.iter().map(Stats::rps)))
        };
        let (with, without) = (rps("task-host auth")?, rps("task-host no-auth")?);
        Some(1.0 - with / without)
    }

    pub(super) fn token_cpu_cost(&self) -> Option<f64> {
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
