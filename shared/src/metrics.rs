//! Prometheus metrics: one registry per service, filled by the parts that own each figure
//! (the host's RPC layer and limits, the pool, the services' own state), and served as
//! OpenMetrics text at `/metrics` on `METRICS_ADDR` ([`endpoint`]).
//!
//! Counters and histograms are updated where things happen. Figures that already live
//! somewhere (a semaphore's free permits, a pool's idle connections) are read at scrape time
//! by [`Sampled`] instead of being mirrored on every call.

pub mod endpoint;
pub mod rpc;

use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Metric, Registry};

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;

/// A service's metrics. Cheap to clone; every clone registers into the same registry.
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Metrics {
    /// Registers a metric updated by its owner. A counter's `name` is given without `_total`
    /// (the exposition adds it).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        // prometheus-client ends every registered help with a full stop of its own.
        let help = help.strip_suffix('.').unwrap_or(help);
        self.registry.write().unwrap_or_else(PoisonError::into_inner).register(name, help, metric);
    }

    /// Registers a figure read at scrape time.
    pub fn sample(&self, sampled: Sampled) {
        self.registry.write().unwrap_or_else(PoisonError::into_inner).register_collector(Box::new(sampled));
    }

    /// The whole registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let registry = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        // Writing to a String cannot fail; the encoder only fails on a failing writer.
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %err, "encoding metrics failed");
        }
        out
    }
}

/// Seconds buckets for request latencies: from 250 µs (a cached read) to 10 s.
pub const LATENCY_BUCKETS: [f64; 15] =
    [0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A gauge or counter whose value is read when scraped, from a closure over the state that
/// already holds it. prometheus-client's way to do this is a [`Collector`]; this is that
/// collector for one unlabelled value.
pub struct Sampled {
    name: &'static str,
    help: &'static str,
    kind: Kind,
}

enum Kind {
    Gauge(Box<dyn Fn() -> f64 + Send + Sync>),
    Counter(Box<dyn Fn() -> u64 + Send + Sync>),
}

impl Sampled {
    pub fn gauge(name: &'static str, help: &'static str, read: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        Self { name, help, kind: Kind::Gauge(Box::new(read)) }
    }

    /// A counter (`name` without `_total`); `read` must never go down.
    pub fn counter(name: &'static str, help: &'static str, read: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self { name, help, kind: Kind::Counter(Box::new(read)) }
    }
}

impl std::fmt::Debug for Sampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampled").field("name", &self.name).finish()
    }
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match &self.kind {
            Kind::Gauge(read) => {
                let gauge = ConstGauge::new(read());
                gauge.encode(encoder.encode_descriptor(self.name, self.help, None, gauge.metric_type())?)
            }
            Kind::Counter(read) => {
                let counter = ConstCounter::new(read());
                counter.encode(encoder.encode_descriptor(self.name, self.help, None, counter.metric_type())?)
            }
        }
    }
}

/// 1 or 0, for state gauges.
pub fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_and_sampled_figures_are_encoded_as_openmetrics() {
        let metrics = Metrics::default();
        let shed = Counter::<u64>::default();
        metrics.register("todo_requests_shed", "Requests refused.", shed.clone());
        shed.inc_by(3);
        metrics.sample(Sampled::gauge("todo_requests_in_flight", "Requests being handled.", || 7.0));
        metrics.sample(Sampled::counter("todo_things", "Things.", || 5));
        let text = metrics.encode();
        assert!(text.contains("# TYPE todo_requests_shed counter\n"), "{text}");
        assert!(text.contains("# HELP todo_requests_shed Requests refused.\n"), "{text}");
        assert!(text.contains("# HELP todo_things Things.\n"), "{text}");
        assert!(text.contains("todo_requests_shed_total 3\n"), "{text}");
        assert!(text.contains("todo_requests_in_flight 7.0\n"), "{text}");
        assert!(text.contains("todo_things_total 5\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
