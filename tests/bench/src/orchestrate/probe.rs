//! The probe around each load window: CPU use and peak RSS of the watched processes.

use crate::load::WindowProbe;
use crate::procs;
use crate::procs::{CpuSnapshot, CpuUsage, Proc, RssSampler};

/// Measures CPU and peak RSS of the watched processes around one load window.
pub(super) struct Probe<'a> {
    sampler: &'a RssSampler,
    watched: Vec<(String, u32)>,
    before: Option<CpuSnapshot>,
    pub(super) usage: CpuUsage,
}

impl<'a> Probe<'a> {
    /// `watched`: (role shown in the tables, process).
    pub(super) fn new(sampler: &'a RssSampler, watched: &[(&str, &Proc)]) -> Self {
        Self {
            sampler,
            watched: watched.iter().map(|(role, p)| ((*role).to_owned(), p.pid())).collect(),
            before: None,
            usage: CpuUsage::default(),
        }
    }

    pub(super) fn rss(&self) -> Vec<(String, Option<u64>)> {
        self.watched.iter().map(|(name, pid)| (name.clone(), self.sampler.peak(*pid))).collect()
    }
}

impl WindowProbe for Probe<'_> {
    fn warmup_started(&mut self) {
        self.sampler.reset();
    }

    fn window_started(&mut self) {
        self.before = Some(procs::cpu_snapshot(&self.watched));
    }

    fn window_ended(&mut self) {
        if let Some(before) = &self.before {
            self.usage = procs::cpu_usage(before, &procs::cpu_snapshot(&self.watched), &self.watched);
        }
    }
}
