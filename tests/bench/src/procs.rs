//! Child processes (start, wait for SERVING, stop with SIGTERM) and what they cost: resident
//! memory sampled every 20 ms, CPU time from `/proc`.

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use todo_contract::task::v1::task_service_client::TaskServiceClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::Result;

/// `/proc` reports CPU times in USER_HZ ticks, which Linux fixes at 100 per second.
const TICKS_PER_SEC: f64 = 100.0;

/// A port that was free a moment ago (the child binds it right after).
pub fn free_addr() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// A process the harness started and must stop.
pub struct Proc {
    pub name: String,
    pub addr: SocketAddr,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// Starts `program` with `envs` added to the environment, output to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        envs: &[(&str, String)],
        addr: SocketAddr,
        log: PathBuf,
    ) -> Result<Self> {
        let out = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command.spawn().map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        Ok(Self { name: name.to_owned(), addr, log, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the gRPC health check of the server (`""`) says SERVING.
    pub async fn wait_serving(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let uri = format!("http://{}", self.addr);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(
                    format!("{} exited with {status} before serving; see {}", self.name, self.log.display()).into()
                );
            }
            if let Ok(channel) = tonic::transport::Endpoint::from_shared(uri.clone())?.connect().await {
                let answer = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
                if answer.is_ok_and(|r| r.get_ref().status == ServingStatus::Serving as i32) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("{} not SERVING after {timeout:?}; see {}", self.name, self.log.display()).into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until a server without health (the echo server) accepts a gRPC call.
    pub async fn wait_accepting(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let uri = format!("http://{}", self.addr);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(
                    format!("{} exited with {status} before serving; see {}", self.name, self.log.display()).into()
                );
            }
            if let Ok(channel) = tonic::transport::Endpoint::from_shared(uri.clone())?.connect().await {
                let request = todo_contract::task::v1::DeleteTaskRequest::default();
                if TaskServiceClient::new(channel).delete_task(request).await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("{} not answering after {timeout:?}; see {}", self.name, self.log.display()).into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM (through `kill(1)`: this crate has no unsafe code), then up to 15 s for the
    /// drain, then SIGKILL.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop within 15 s of SIGTERM: killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `VmRSS:`-style line of `/proc/<pid>/status`, in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Samples the resident set of the watched processes every 20 ms and keeps the peak since the
/// last reset.
pub struct RssSampler {
    shared: Arc<Mutex<SamplerState>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct SamplerState {
    pids: Vec<u32>,
    peaks: HashMap<u32, u64>,
}

impl RssSampler {
    pub fn start() -> Result<Self> {
        let shared = Arc::new(Mutex::new(SamplerState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new().name("rss-sampler".into()).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let pids = shared.lock().unwrap_or_else(PoisonError::into_inner).pids.clone();
                    let samples: Vec<(u32, u64)> =
                        pids.iter().filter_map(|&pid| status_bytes(pid, "VmRSS:").map(|rss| (pid, rss))).collect();
                    let mut state = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    for (pid, rss) in samples {
                        let peak = state.peaks.entry(pid).or_default();
                        *peak = (*peak).max(rss);
                    }
                    drop(state);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })?
        };
        Ok(Self { shared, stop, thread: Some(thread) })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SamplerState> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn watch(&self, pid: u32) {
        let mut state = self.state();
        if !state.pids.contains(&pid) {
            state.pids.push(pid);
        }
    }

    pub fn unwatch(&self, pid: u32) {
        let mut state = self.state();
        state.pids.retain(|&p| p != pid);
        state.peaks.remove(&pid);
    }

    /// Forgets the peaks: the next [`RssSampler::peak`] covers only what follows.
    pub fn reset(&self) {
        let mut state = self.state();
        state.peaks.clear();
        let pids = state.pids.clone();
        for pid in pids {
            if let Some(rss) = status_bytes(pid, "VmRSS:") {
                state.peaks.insert(pid, rss);
            }
        }
    }

    pub fn peak(&self, pid: u32) -> Option<u64> {
        self.state().peaks.get(&pid).copied()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Scheduler accounting of a process's async worker threads (tokio's, named
/// `tokio-rt-worker`; `tokio-runtime-worker`, cut to 15 bytes, before tokio 1.4x), summed from
/// `/proc/<pid>/task/*/schedstat`: time spent runnable but waiting for a CPU, and how many
/// times they got one. Waiting is the guest scheduler's queue, not the host's (time the
/// hypervisor takes shows up as running or steal), so it tells contention inside the machine
/// from a slow host.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerWaits {
    pub wait_ns: u64,
    pub slices: u64,
}

impl WorkerWaits {
    pub fn of(pid: u32) -> Option<Self> {
        let mut total = Self::default();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.filter_map(|e| e.ok()) {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if !(comm.starts_with("tokio-rt-worker") || comm.starts_with("tokio-runtime-w")) {
                continue;
            }
            let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
            // Fields: time on CPU, time waiting on a run queue (both ns), timeslices run.
            let fields: Vec<u64> = stat.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            if let [_, wait, slices] = fields[..] {
                total.wait_ns += wait;
                total.slices += slices;
            }
        }
        Some(total)
    }

    /// Mean wait for a CPU per timeslice since `earlier`, in µs.
    pub fn mean_wait_us_since(&self, earlier: &Self) -> Option<f64> {
        let slices = self.slices.checked_sub(earlier.slices).filter(|&n| n > 0)?;
        Some(self.wait_ns.saturating_sub(earlier.wait_ns) as f64 / slices as f64 / 1e3)
    }
}

/// `utime + stime` (and with `children`, `cutime + cstime`: reaped children such as pgbench)
/// of a process, in ticks.
fn process_ticks(pid: &str, children: bool) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15, cutime 16, cstime 17 (1-based).
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let own = field(14)? + field(15)?;
    Some(if children { own + field(16)? + field(17)? } else { own })
}

/// CPU ticks of every process named `postgres` (the server and all its backends).
fn postgres_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let comm = std::fs::read_to_string(format!("/proc/{name}/comm")).ok()?;
            (comm.trim() == "postgres").then(|| process_ticks(&name, false)).flatten()
        })
        .sum()
}

/// CPU seconds used so far by every `postgres` process alive now.
pub fn postgres_cpu_seconds() -> f64 {
    postgres_ticks() as f64 / TICKS_PER_SEC
}

/// (busy, total) ticks of the whole machine, from `/proc/stat`.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return (0, 0) };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    (busy, busy + get(3) + get(4))
}

/// How busy the machine is (percent of one core) over `window`, before the harness starts
/// anything: other work on the box skews every number that follows.
pub fn machine_busy(window: Duration) -> f64 {
    let (before, _) = machine_ticks();
    let start = Instant::now();
    std::thread::sleep(window);
    let (after, _) = machine_ticks();
    after.saturating_sub(before) as f64 / TICKS_PER_SEC / start.elapsed().as_secs_f64() * 100.0
}

/// CPU counters at one instant.
pub struct CpuSnapshot {
    at: Instant,
    watched: Vec<Option<u64>>,
    postgres: u64,
    own: u64,
    machine_busy: u64,
}

/// Where the CPU went during a window, in percent of one core (this machine has
/// `available_parallelism` cores: 200% is all of a 2-core box).
#[derive(Debug, Clone, Default)]
pub struct CpuUsage {
    /// Per watched process, in the order given.
    pub watched: Vec<(String, f64)>,
    pub postgres: f64,
    /// The harness itself (load generator) plus reaped children (pgbench).
    pub client: f64,
    /// Busy time of the machine not accounted for above (other users of the box).
    pub other: f64,
}

pub fn cpu_snapshot(watched: &[(String, u32)]) -> CpuSnapshot {
    let (machine_busy, _) = machine_ticks();
    CpuSnapshot {
        at: Instant::now(),
        watched: watched.iter().map(|(_, pid)| process_ticks(&pid.to_string(), false)).collect(),
        postgres: postgres_ticks(),
        own: process_ticks("self", true).unwrap_or(0),
        machine_busy,
    }
}

pub fn cpu_usage(before: &CpuSnapshot, after: &CpuSnapshot, watched: &[(String, u32)]) -> CpuUsage {
    let secs = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let pct = |ticks: u64| ticks as f64 / TICKS_PER_SEC / secs * 100.0;
    let watched: Vec<(String, f64)> = watched
        .iter()
        .zip(before.watched.iter().zip(&after.watched))
        .map(|((name, _), (b, a))| (name.clone(), pct(a.unwrap_or(0).saturating_sub(b.unwrap_or(0)))))
        .collect();
    let postgres = pct(after.postgres.saturating_sub(before.postgres));
    let client = pct(after.own.saturating_sub(before.own));
    let machine = pct(after.machine_busy.saturating_sub(before.machine_busy));
    let accounted: f64 = watched.iter().map(|(_, p)| p).sum::<f64>() + postgres + client;
    CpuUsage { watched, postgres, client, other: (machine - accounted).max(0.0) }
}

/// The body of `GET path` on `addr` over plain HTTP/1.1, if it answers 200 within 2 s.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let timeout = std::time::Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}
