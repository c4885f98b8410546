//! Logging: one span per RPC and one line per outcome, with the method, the status code and
//! the latency (successful calls at `debug`: see [`outcome_level`]).
//! User ids are recorded by the authentication code; emails, passwords and tokens never are.

use std::time::Duration;

use tower_http::LatencyUnit;
use tower_http::classify::{GrpcErrorsAsFailures, GrpcFailureClass, SharedClassifier};
use tower_http::trace::{DefaultOnEos, DefaultOnResponse, MakeSpan, TraceLayer};
use tracing::Level;

use crate::config::{LogFormat, Logging};

/// Whether the next line of a repeated failure is due: at most one per interval, for loops
/// that retry many times a second (connecting to the database, accepting connections).
/// Clones share one clock.
#[derive(Debug, Clone)]
pub struct LogEvery {
    interval: Duration,
    last: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl LogEvery {
    pub fn new(interval: Duration) -> Self {
        Self { interval, last: Default::default() }
    }

    /// True at most once per interval; the first call is always due.
    pub fn due(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = last.is_none_or(|at| at.elapsed() >= self.interval);
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(logging: &Logging) {
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(logging.filter())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(Logging::DEFAULT));
    // `try_init` fails only when a subscriber is already installed, which is fine.
    let _ = match logging.format {
        LogFormat::Text => {
            // Colour only for a person watching; escape codes in a log file or collector are noise.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).try_init()
        }
        // One object per line: timestamp, level, the event's fields (the message among them)
        // at the top, the target (`audit` lines are told apart by it), and `spans`: the
        // enclosing spans with their fields (the RPC's method, request id and user id).
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_env_filter(filter)
            .try_init(),
    };
}

/// The layer that wraps every request in an `rpc` span and logs its outcome: tower-http's
/// `TraceLayer` with its gRPC classifier, which reads `grpc-status` from the headers of a
/// trailers-only answer and from the trailers of a streamed one.
pub type RpcTraceLayer = TraceLayer<
    SharedClassifier<GrpcErrorsAsFailures>,
    RpcSpan,
    (),
    DefaultOnResponse,
    (),
    DefaultOnEos,
    fn(GrpcFailureClass, Duration, &tracing::Span),
>;

/// The host's tracing layer (see [`RpcTraceLayer`]).
pub fn rpc_trace_layer() -> RpcTraceLayer {
    TraceLayer::new_for_grpc()
        .make_span_with(RpcSpan)
        .on_request(())
        .on_response(DefaultOnResponse::new().level(Level::DEBUG).latency_unit(LatencyUnit::Micros))
        .on_body_chunk(())
        .on_eos(DefaultOnEos::new().level(Level::DEBUG).latency_unit(LatencyUnit::Micros))
        .on_failure(log_failure as fn(GrpcFailureClass, Duration, &tracing::Span))
}

/// The `rpc` span. It is entered while the inner service is called, so interceptors that run
/// synchronously (authentication) record `user_id` into it.
#[derive(Debug, Clone, Copy)]
pub struct RpcSpan;

impl<B> MakeSpan<B> for RpcSpan {
    fn make_span(&mut self, request: &http::Request<B>) -> tracing::Span {
        // The request id is settled (and sane) by the time the span is made: `request_id.rs`.
        let request_id =
            request.headers().get(crate::request_id::HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
        tracing::info_span!("rpc", method = %request.uri().path(), request_id, user_id = tracing::field::Empty)
    }
}

/// One line per failed RPC, at the level [`outcome_level`] gives its code.
fn log_failure(class: GrpcFailureClass, latency: Duration, _span: &tracing::Span) {
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    let code = match class {
        GrpcFailureClass::Code(code) => tonic::Code::from_i32(code.get()),
        GrpcFailureClass::Error(error) => {
            tracing::warn!(error, latency_us, "rpc failed in transport");
            return;
        }
    };
    match outcome_level(code) {
        Level::WARN => tracing::warn!(code = ?code, latency_us, "rpc finished"),
        Level::INFO => tracing::info!(code = ?code, latency_us, "rpc finished"),
        _ => tracing::debug!(code = ?code, latency_us, "rpc finished"),
    }
}

/// Successful calls log at `debug`: a line for each costs CPU on every call (BENCHMARKS.md).
/// Refusals the client caused log at `info`; failures on the server's side, or of what it
/// depends on, at `warn`.
fn outcome_level(code: tonic::Code) -> Level {
    use tonic::Code;
    match code {
        Code::Ok => Level::DEBUG,
        Code::Internal | Code::Unknown | Code::Unavailable | Code::DataLoss | Code::DeadlineExceeded => Level::WARN,
        _ => Level::INFO,
    }
}

/// An error and its causes on one line. tonic's transport errors say only "transport error";
/// the reason (connection refused, a certificate not trusted, ...) is in their sources.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::Code;
    use tracing::Level;

    use super::{LogEvery, outcome_level};

    #[test]
    fn a_repeated_line_is_due_once_per_interval_across_clones() {
        let every = LogEvery::new(Duration::from_secs(3600));
        assert!(every.due());
        assert!(!every.due());
        assert!(!every.clone().due(), "a clone shares the clock");
        assert!(LogEvery::new(Duration::ZERO).due());
    }

    #[test]
    fn only_failures_reach_the_default_info_log() {
        assert_eq!(outcome_level(Code::Ok), Level::DEBUG);
        for code in
            [Code::InvalidArgument, Code::Unauthenticated, Code::NotFound, Code::Aborted, Code::ResourceExhausted]
        {
            assert_eq!(outcome_level(code), Level::INFO, "{code:?}");
        }
        for code in [Code::Internal, Code::Unavailable, Code::DeadlineExceeded, Code::Unknown, Code::DataLoss] {
            assert_eq!(outcome_level(code), Level::WARN, "{code:?}");
        }
    }
}
