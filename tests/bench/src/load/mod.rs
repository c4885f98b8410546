//! The load generator: N workers in a closed loop (each sends its next request as soon as the
//! previous one is answered), spread round-robin over up to eight HTTP/2 connections, a
//! warm-up, then a measured window. Every answer is checked: a non-OK status, or an OK with
//! the wrong content, is counted by kind and never as a success.

mod worker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::Result;
use crate::fixture::{Fixture, connect};

use worker::{Worker, drive};

/// Connections per target: enough to spread the work over the server's runtime workers
/// without one connection per in-flight request.
const MAX_CONNECTIONS: usize = 8;
/// A call that takes this long is a failure of its own ("client timeout"), not a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Login,
    GetCurrentUser,
    /// Each worker refreshes its own user's session, keeping the rotated token.
    Refresh,
    GetTask,
    ListTasks,
    /// The scale mode's ListTasks: the first page of 20 of the worker's own user.
    ListFirstPage,
    /// Page 50 of 20 (a keyset cursor from a page token), of the worker's own user.
    ListPage50,
    CreateTask,
    UpdateTask,
    Mixed,
    /// GetTask on the hundred tasks of one user (the ListTasks user): the token-overhead
    /// comparison, where the no-auth host serves a single fixed user.
    GetTaskOneUser,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Login => "Login",
            Self::GetCurrentUser => "GetCurrentUser",
            Self::Refresh => "Refresh",
            Self::GetTask => "GetTask",
            Self::ListTasks => "ListTasks(100)",
            Self::ListFirstPage => "ListTasks(first 20)",
            Self::ListPage50 => "ListTasks(page 50)",
            Self::CreateTask => "CreateTask",
            Self::UpdateTask => "UpdateTask",
            Self::Mixed => "Mixed",
            Self::GetTaskOneUser => "GetTask(one user)",
        }
    }

    pub fn on_auth_service(self) -> bool {
        matches!(self, Self::Login | Self::GetCurrentUser | Self::Refresh)
    }
}

/// One set of workers driving one kind of request at one server.
#[derive(Debug, Clone)]
pub struct Group {
    pub kind: Kind,
    pub in_flight: usize,
    pub addr: SocketAddr,
    /// The echo server cannot know whose token it got: skip the per-user content checks.
    pub echo: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub window: Duration,
}

/// What one group did in the measured window (errors: warm-up included).
#[derive(Debug, Clone)]
pub struct Stats {
    pub kind: Kind,
    pub in_flight: usize,
    pub ok: u64,
    pub elapsed: Duration,
    /// Latencies of the successful calls answered in the window, sorted, in nanoseconds.
    pub latencies: Vec<u64>,
    /// Failures by kind, with one example message each.
    pub errors: BTreeMap<String, (u64, String)>,
}

impl Stats {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Nearest-rank percentile, in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1] as f64 / 1e6
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().map(|(n, _)| n).sum()
    }
}

/// Hooks the orchestrator runs at the edges of the measured window (CPU counters, RSS peaks).
pub trait WindowProbe {
    fn warmup_started(&mut self);
    fn window_started(&mut self);
    fn window_ended(&mut self);
}

/// Runs all `groups` at once under one warm-up and one window.
pub async fn run(
    groups: &[Group],
    fixture: &Arc<Fixture>,
    timing: Timing,
    probe: &mut dyn WindowProbe,
) -> Result<Vec<Stats>> {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let mut handles = Vec::new();
    for group in groups {
        let connections = group.in_flight.min(MAX_CONNECTIONS);
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections {
            channels.push(connect(group.addr).await?);
        }
        let workers: Vec<_> = (0..group.in_flight)
            .map(|i| {
                let worker = Worker::new(group, i, fixture.clone(), channels[i % connections].clone());
                tokio::spawn(drive(worker, phase.clone()))
            })
            .collect();
        handles.push(workers);
    }
    probe.warmup_started();
    tokio::time::sleep(timing.warmup).await;
    probe.window_started();
    phase.store(MEASURE, Ordering::Release);
    let start = Instant::now();
    tokio::time::sleep(timing.window).await;
    phase.store(STOP, Ordering::Release);
    let elapsed = start.elapsed();
    probe.window_ended();

    let mut results = Vec::new();
    for (group, workers) in groups.iter().zip(handles) {
        let mut stats = Stats {
            kind: group.kind,
            in_flight: group.in_flight,
            ok: 0,
            elapsed,
            latencies: Vec::new(),
            errors: BTreeMap::new(),
        };
        for worker in workers {
            let out = worker.await?;
            stats.ok += out.ok;
            stats.latencies.extend(out.latencies);
            for (label, (n, message)) in out.errors {
                stats.errors.entry(label).or_insert((0, message)).0 += n;
            }
        }
        stats.latencies.sort_unstable();
        results.push(stats);
    }
    Ok(results)
}
