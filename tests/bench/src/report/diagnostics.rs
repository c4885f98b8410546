//! The tables after the main ones: interference while Login runs, token verification
//! overhead, memory, and one example message of each non-OK answer.

use std::fmt::Write as _;

use crate::load::Stats;

use super::{Report, errors, mean, mib, ms, rate};

impl Report {
    /// Probes at 1 in flight, alone and while Login runs at 16 in flight.
    pub(super) fn render_interference(&self, out: &mut String) {
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
    }

    /// GetTask on the task hosts with and without token verification.
    pub(super) fn render_overhead(&self, out: &mut String) {
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
    }

    /// Resident memory of each service: idle at the start and end, and its peak.
    pub(super) fn render_memory(&self, out: &mut String) {
        let _ = writeln!(out, "\n### Memory (RSS, MiB)\n");
        let _ = writeln!(out, "| Service | idle after start | idle after the run | VmHWM (peak of the whole run) |");
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for m in &self.memory.services {
            let _ = writeln!(out, "| {} | {} | {} | {} |", m.name, mib(m.idle_start), mib(m.idle_end), mib(m.hwm));
        }
    }

    /// One example message of each kind of non-OK answer.
    pub(super) fn render_non_ok(&self, out: &mut String) {
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
    }
}
