//! The live-sync (WatchTasks) section: idle streams, delivery with 1,000 watchers, and across
//! two replicas, each against the target.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Report, mean, mib, ms, rate};
use crate::procs::CpuUsage;

/// Resident-set cost per idle stream the issue asks for at most.
const TARGET_BYTES_PER_STREAM: f64 = 16.0 * 1024.0;
/// Delivery p99 targets, one replica and across two, in ms.
const TARGET_P99_MS: f64 = 50.0;
const TARGET_CROSS_P99_MS: f64 = 100.0;
/// CreateTask throughput with the watchers attached, as a share of none.
const TARGET_THROUGHPUT_SHARE: f64 = 0.8;

pub struct WatchReport {
    pub idle: IdleStreams,
    pub delivery: Delivery,
    pub cross: Delivery,
}

pub struct IdleStreams {
    pub streams: usize,
    pub connections: usize,
    pub rss_before: Option<u64>,
    pub rss_after: Option<u64>,
    /// task-service's and PostgreSQL's CPU over `window` with every stream idle.
    pub cpu: CpuUsage,
    pub window: Duration,
    /// Heartbeats the streams received within the window.
    pub bookmarks: u64,
}

impl IdleStreams {
    fn bytes_per_stream(&self) -> Option<f64> {
        let grown = self.rss_after?.saturating_sub(self.rss_before?);
        Some(grown as f64 / self.streams as f64)
    }
}

#[derive(Default)]
pub struct Delivery {
    pub watchers: usize,
    /// CreateTask calls in flight.
    pub writers: usize,
    /// 1: writers and watchers on one task-service; 2: watchers on a second replica.
    pub replicas: usize,
    /// Writer's OK -> watcher's receipt, ms (0 when the watcher had it first).
    pub latencies_ms: Vec<f64>,
    /// Acknowledged changes never delivered.
    pub missed: usize,
    /// CreateTask calls/s per window, and the CPU used in it, with the watchers attached and
    /// with none.
    pub with_watchers: Vec<(f64, CpuUsage)>,
    pub without_watchers: Vec<(f64, CpuUsage)>,
    pub failed: u64,
}

impl Delivery {
    fn percentile(&self, q: f64) -> f64 {
        let mut sorted = self.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
        sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
    }
}

/// Mean core-µs per CreateTask of every watched task-service, PostgreSQL and the harness (the
/// writers and the watchers' client side) over `windows`.
fn per_call(windows: &[(f64, CpuUsage)]) -> String {
    if windows.is_empty() {
        return "-".to_owned();
    }
    let us = |pct: f64, rate: f64| if rate > 0.0 { pct / 100.0 / rate * 1e6 } else { f64::NAN };
    let service = mean(windows.iter().map(|(r, c)| us(c.watched.iter().map(|(_, p)| p).sum(), *r)));
    let postgres = mean(windows.iter().map(|(r, c)| us(c.postgres, *r)));
    let harness = mean(windows.iter().map(|(r, c)| us(c.client, *r)));
    format!("{service:.0} / {postgres:.0} / {harness:.0}")
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

impl Report {
    pub(super) fn render_watch(&self, out: &mut String) {
        let Some(w) = &self.watch else { return };
        let _ = writeln!(out, "\n### Live sync (WatchTasks)\n");

        let idle = &w.idle;
        let per_stream = idle.bytes_per_stream();
        let task_cpu = idle.cpu.watched.first().map_or(f64::NAN, |(_, pct)| *pct);
        let _ = writeln!(
            out,
            "{} idle streams on one task-service ({} users, {} HTTP/2 connections), then {} s idle (one bookmark interval).\n",
            idle.streams,
            idle.streams,
            idle.connections,
            idle.window.as_secs()
        );
        let _ = writeln!(
            out,
            "| RSS before MiB | RSS with streams MiB | per stream KiB | task-service CPU idle % | PostgreSQL CPU % | bookmarks received |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.1} | {} |\n",
            mib(idle.rss_before),
            mib(idle.rss_after),
            per_stream.map_or("-".to_owned(), |b| format!("{:.1}", b / 1024.0)),
            task_cpu,
            idle.cpu.postgres,
            idle.bookmarks
        );

        let _ = writeln!(
            out,
            "Delivery: writer's OK -> watcher's receipt of the UPSERTED event, CreateTask at {} in flight (0 when the watcher had it first).\n",
            w.delivery.writers
        );
        let _ = writeln!(
            out,
            "| Setup | changes | p50 ms | p99 ms | max ms | missed | CreateTask/s with watchers | without | share | CPU µs/call task-service / postgres / harness, with | without | failed calls |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|");
        for d in [&w.delivery, &w.cross] {
            let setup = if d.replicas == 1 {
                format!("{} watchers, one replica", d.watchers)
            } else {
                format!("{} watchers on replica 2, writes to replica 1", d.watchers)
            };
            let with = mean(d.with_watchers.iter().map(|(r, _)| *r));
            let without = mean(d.without_watchers.iter().map(|(r, _)| *r));
            let share =
                if d.without_watchers.is_empty() { "-".to_owned() } else { format!("{:.0}%", with / without * 100.0) };
            let list = |v: &[(f64, CpuUsage)]| v.iter().map(|(r, _)| rate(*r)).collect::<Vec<_>>().join(" / ");
            let _ = writeln!(
                out,
                "| {setup} | {} | {} | {} | {} | {} | {} | {} | {share} | {} | {} | {} |",
                d.latencies_ms.len(),
                ms(d.percentile(0.5)),
                ms(d.percentile(0.99)),
                ms(d.percentile(1.0)),
                d.missed,
                list(&d.with_watchers),
                if d.without_watchers.is_empty() { "-".to_owned() } else { list(&d.without_watchers) },
                per_call(&d.with_watchers),
                per_call(&d.without_watchers),
                d.failed
            );
        }

        let share = mean(w.delivery.with_watchers.iter().map(|(r, _)| *r))
            / mean(w.delivery.without_watchers.iter().map(|(r, _)| *r));
        let _ = writeln!(out, "\nTargets:");
        let _ = writeln!(
            out,
            "- RSS per idle stream ≤ 16 KiB: {}",
            per_stream.map_or("not measured".to_owned(), |b| verdict(b <= TARGET_BYTES_PER_STREAM).to_owned())
        );
        let _ = writeln!(
            out,
            "- delivery p99 ≤ {TARGET_P99_MS:.0} ms with {} watchers: {}",
            w.delivery.watchers,
            verdict(w.delivery.percentile(0.99) <= TARGET_P99_MS)
        );
        let _ = writeln!(
            out,
            "- CreateTask with the watchers ≥ {:.0}% of none: {} ({:.0}%)",
            TARGET_THROUGHPUT_SHARE * 100.0,
            verdict(share >= TARGET_THROUGHPUT_SHARE),
            share * 100.0
        );
        let _ = writeln!(
            out,
            "- across two replicas p99 ≤ {TARGET_CROSS_P99_MS:.0} ms: {}",
            verdict(w.cross.percentile(0.99) <= TARGET_CROSS_P99_MS)
        );
        let _ = writeln!(out, "- nothing missed: {}", verdict(w.delivery.missed == 0 && w.cross.missed == 0));
    }
}
