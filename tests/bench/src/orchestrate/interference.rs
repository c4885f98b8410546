//! The interference check: probes at 1 in flight, alone and while Login runs at 16 in flight.

use std::path::Path;
use std::time::Duration;

use crate::Result;
use crate::load::{Group, Kind};
use crate::procs::WorkerWaits;
use crate::report::Interference;

use super::Harness;

impl Harness {
    /// GetTask and GetCurrentUser probes alone and during a Login flood (the last with the
    /// logins on a second auth-service process, a diagnostic).
    pub(super) async fn interference(
        &mut self,
        auth_bin: &Path,
        auth: usize,
        task: usize,
    ) -> Result<Vec<Interference>> {
        let mut interference = Vec::new();
        if self.options.wants("interference") {
            // The third probe is a diagnostic, not a target: the same GetCurrentUser probe while
            // the logins hash in a second auth-service process on the same database. Near 1x
            // there while the first GetCurrentUser row misses, and the cause is inside the
            // process (its hashing threads and its async runtime); high in both, the machine.
            let auth_login = self.start("auth-login", auth_bin, &[], &[])?;
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
        Ok(interference)
    }
}
