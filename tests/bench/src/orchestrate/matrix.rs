//! The matrix: every scenario at every in-flight level with its same-run ceilings, or, in A/B
//! mode, every measurement on A and B alternately.

use std::path::Path;
use std::time::Duration;

use crate::fixture::Fixture;
use crate::load::{Group, Kind};
use crate::report::{Comparison, Row};
use crate::{Result, pg};

use super::{Harness, MATRIX};

impl Harness {
    /// A/B mode: B's pair on the same databases, every measurement on A and B alternately.
    pub(super) async fn compare(&mut self, dir: &Path, auth: usize, task: usize) -> Result<Vec<Comparison>> {
        let owned = self.options.compare_env.clone();
        let env: Vec<(&str, String)> = owned.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let auth_b = self.start("auth-b", &dir.join("auth-service"), &[], &env)?;
        self.procs[auth_b].wait_serving(Duration::from_secs(30)).await?;
        // B's task-service follows B's auth-service, unless --compare-env says otherwise
        // (`AUTH_SERVICE_URL=` runs it without the feed: no revocation set to check).
        let mut task_env = vec![("AUTH_SERVICE_URL", self.url_of(auth_b))];
        task_env.extend(env.iter().cloned());
        let task_b = self.start("task-b", &dir.join("task-service"), &[], &task_env)?;
        self.procs[task_b].wait_serving(Duration::from_secs(30)).await?;
        let mut results = Vec::new();
        for &(section, kind) in MATRIX {
            if !self.options.wants(section) {
                continue;
            }
            for &n in &self.options.in_flight.clone() {
                results.push(self.alternate(kind, n, (auth, task), (auth_b, task_b)).await?);
            }
        }
        Ok(results)
    }

    /// One measurement on A and B alternately (A B, then B A, ...), `--rounds` times; each
    /// variant is an (auth-service, task-service) pair of started processes.
    pub(super) async fn alternate(
        &self,
        kind: Kind,
        in_flight: usize,
        a: (usize, usize),
        b: (usize, usize),
    ) -> Result<Comparison> {
        let mut comparison = Comparison { kind, in_flight, a: Vec::new(), b: Vec::new() };
        for round in 0..self.options.rounds {
            let order = if round % 2 == 0 { [false, true] } else { [true, false] };
            for is_b in order {
                let (auth, task) = if is_b { b } else { a };
                let service = if kind.on_auth_service() { auth } else { task };
                let group = Group { kind, in_flight, addr: self.procs[service].addr, echo: false };
                let watched = [("auth", &self.procs[auth]), ("task", &self.procs[task])];
                let (mut stats, cpu, _) = self.measure(&[group], &watched).await?;
                let stats = stats.pop().ok_or("no stats")?;
                if is_b { &mut comparison.b } else { &mut comparison.a }.push((stats, cpu));
            }
        }
        eprintln!("{} {}", self.elapsed(), comparison.summary());
        Ok(comparison)
    }

    /// Every scenario of the matrix at every in-flight level, each with its same-run ceilings.
    pub(super) async fn matrix_rows(
        &self,
        auth: usize,
        task: usize,
        echo: usize,
        fixture: &Fixture,
    ) -> Result<Vec<Row>> {
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
                        fixture,
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
        Ok(rows)
    }
}
