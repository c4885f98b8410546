//! Logging: one span and one line per RPC, with the method, the status code and the latency
//! (successful calls at `debug`: see [`outcome_level`]).
//! User ids are recorded by the authentication code; emails, passwords and tokens never are.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};
use tracing::Instrument;

use crate::config::LogFilter;

/// Installs the global subscriber. Call once, from `main`.
pub fn init(filter: &LogFilter) {
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(filter.as_str())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(LogFilter::DEFAULT));
    // `try_init` fails only when a subscriber is already installed, which is fine.
    // Colour only for a person watching; escape codes in a log file or collector are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).try_init();
}

/// Tower layer that wraps every request in an `rpc` span and logs its outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcTraceLayer;

impl<S> Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTrace { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcTrace<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcTrace<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let span = tracing::info_span!(
            "rpc",
            method = %request.uri().path(),
            user_id = tracing::field::Empty,
        );
        let start = Instant::now();
        // Entered while the inner service is called, so interceptors that run synchronously
        // (authentication) record into this span.
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let result = future.await;
                let latency_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                match &result {
                    // A failing unary call is a trailers-only response whose `grpc-status` is in
                    // the headers; a successful one carries status 0 in the trailers.
                    Ok(response) => {
                        let code = response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i32>().ok())
                            .map_or(tonic::Code::Ok, tonic::Code::from_i32);
                        log_outcome(code, latency_us);
                    }
                    Err(err) => tracing::warn!(error = %err, latency_us, "rpc failed in transport"),
                }
                result
            }
            .instrument(span),
        )
    }
}

/// One line per finished RPC, at the level [`outcome_level`] gives it.
fn log_outcome(code: tonic::Code, latency_us: u64) {
    match outcome_level(code) {
        tracing::Level::WARN => tracing::warn!(code = ?code, latency_us, "rpc finished"),
        tracing::Level::INFO => tracing::info!(code = ?code, latency_us, "rpc finished"),
        _ => tracing::debug!(code = ?code, latency_us, "rpc finished"),
    }
}

/// Successful calls log at `debug`: at 20,000 calls a second a line for each cost 15 µs of CPU
/// per call, a quarter of a GetTask, and -17% throughput (todo-bench A/B, BENCHMARKS.md).
/// Refusals the client caused log at `info`; failures on the server's side, or of what it
/// depends on, at `warn`.
fn outcome_level(code: tonic::Code) -> tracing::Level {
    use tonic::Code;
    match code {
        Code::Ok => tracing::Level::DEBUG,
        Code::Internal | Code::Unknown | Code::Unavailable | Code::DataLoss | Code::DeadlineExceeded => {
            tracing::Level::WARN
        }
        _ => tracing::Level::INFO,
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tracing::Level;

    use super::outcome_level;

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
