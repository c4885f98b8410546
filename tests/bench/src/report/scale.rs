//! The scale mode's report: each scenario on the small and the large data set, measured
//! alternately in the same run, against the target, then the large set's query plans.

use std::fmt::Write as _;

use crate::load::Stats;
use crate::plans::Plan;
use crate::procs::CpuUsage;

use super::comparison::variant_means;
use super::{Comparison, mean, ms, rate};

/// The issue's target: each scenario on the large data set within this factor of the small.
pub const TARGET: f64 = 1.3;

pub struct ScaleReport {
    pub header: Vec<String>,
    /// What each data set holds and how it was loaded.
    pub data: Vec<String>,
    /// A = the small data set, B = the large one.
    pub comparisons: Vec<Comparison>,
    pub plans: Vec<Plan>,
    /// The same statements on the small data set.
    pub small_plans: Vec<Plan>,
}

fn p50(runs: &[(Stats, CpuUsage)]) -> f64 {
    mean(runs.iter().map(|(s, _)| s.percentile_ms(0.5)))
}

impl ScaleReport {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.header {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "\n### Data sets\n");
        for line in &self.data {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(
            out,
            "\n### Costs as data grows (means over the rounds; large/small is the time per call, from req/s)\n"
        );
        let _ = writeln!(
            out,
            "| Scenario | In flight | small req/s | large req/s | large/small | small p50 / p99 ms | large p50 / p99 ms | task-service µs/call small / large | PostgreSQL µs/call small / large | non-OK | within {TARGET}x |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---|---|---|---|---|---|");
        for c in &self.comparisons {
            let (small, large) = (variant_means(c.kind, &c.a), variant_means(c.kind, &c.b));
            let ratio = small.0 / large.0;
            let errors: u64 = c.a.iter().chain(&c.b).map(|(s, _)| s.error_count()).sum();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.2} | {} / {} | {} / {} | {:.0} / {:.0} | {:.0} / {:.0} | {errors} | {} |",
                c.kind.name(),
                c.in_flight,
                rate(small.0),
                rate(large.0),
                ratio,
                ms(p50(&c.a)),
                ms(small.1),
                ms(p50(&c.b)),
                ms(large.1),
                small.2,
                large.2,
                small.3,
                large.3,
                if ratio <= TARGET && errors == 0 { "yes" } else { "**no**" }
            );
        }
        if !self.plans.is_empty() {
            let _ = writeln!(
                out,
                "\n### Query plans on the large data set as loaded (steady state: the seventh execution)\n"
            );
            for plan in &self.plans {
                let _ = writeln!(out, "{}:\n\n```text\n{}\n```\n", plan.scenario, plan.lines.join("\n"));
                match self.small_plans.iter().find(|p| p.scenario == plan.scenario) {
                    Some(small) if small.shape() == plan.shape() => {
                        let _ = writeln!(out, "(The same plan on the small data set.)\n");
                    }
                    Some(small) => {
                        let _ = writeln!(
                            out,
                            "**Another plan on the small data set:**\n\n```text\n{}\n```\n",
                            small.lines.join("\n")
                        );
                    }
                    None => {}
                }
            }
        }
        out
    }
}
