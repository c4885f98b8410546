//! The token-overhead check: GetTask on task hosts with and without token verification, and
//! the in-process cost of verifying a token.

use std::path::Path;
use std::time::Duration;

use crate::Result;
use crate::fixture::Fixture;
use crate::load::{Group, Kind, Stats};
use crate::report::Overhead;

use super::Harness;

impl Harness {
    /// The task hosts with and without token verification and the task-service binary, in
    /// alternating rounds at the highest in-flight level.
    pub(super) async fn token_overhead(
        &mut self,
        bench_bin: &Path,
        task: usize,
        fixture: &Fixture,
    ) -> Result<Option<Overhead>> {
        let mut overhead = None;
        if self.options.wants("token-overhead") {
            let fixed = [("BENCH_FIXED_USER", fixture.list_user.id.clone())];
            let with = self.start("task-host-auth", bench_bin, &["task-host", "auth"], &fixed)?;
            let without = self.start("task-host-no-auth", bench_bin, &["task-host", "no-auth"], &fixed)?;
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
        Ok(overhead)
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
