//! The A/B mode's table: means over the rounds of each variant, side by side.

use std::fmt::Write as _;

use crate::load::{Kind, Stats};
use crate::procs::CpuUsage;

use super::{Comparison, Report, mean, ms, rate};

/// Means over the rounds: (req/s, p99 ms, service core-µs per call, postgres core-µs per call).
pub(super) fn variant_means(kind: Kind, runs: &[(Stats, CpuUsage)]) -> (f64, f64, f64, f64) {
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

impl Report {
    pub(super) fn render_comparison(&self, out: &mut String) {
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
}
