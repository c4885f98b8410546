//! The server's resource limits, each one chosen here rather than left to a library default,
//! and the layer that enforces the two tonic has no gRPC-shaped answer for: load shedding
//! (RESOURCE_EXHAUSTED at once, instead of an unbounded queue) and a per-request deadline
//! (DEADLINE_EXCEEDED; tonic's own timeout answers CANCELLED, which tells a client nothing).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt as _};
use tower::{Layer, Service};

use crate::config::{ConfigError, Env};
use crate::metrics::{Counter, Metrics, Sampled};

/// Every limit of the gRPC host. docs/reference.md lists each with its default and its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// `GRPC_MAX_REQUEST_BYTES`: largest decoded request message.
    pub max_request_bytes: usize,
    /// `GRPC_MAX_CONCURRENT_STREAMS`: HTTP/2 streams one connection may have open.
    pub max_concurrent_streams: u32,
    /// `GRPC_MAX_IN_FLIGHT`: requests being handled at once, all connections together; more
    /// are refused at once with RESOURCE_EXHAUSTED. Health checks are never refused.
    pub max_in_flight: usize,
    /// `GRPC_REQUEST_TIMEOUT`: longest a handler may run (a client's shorter `grpc-timeout`
    /// applies too).
    pub request_timeout: Duration,
    /// `GRPC_KEEPALIVE_INTERVAL` and `GRPC_KEEPALIVE_TIMEOUT`: HTTP/2 pings that find dead peers.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// `GRPC_MAX_CONNECTION_AGE`: connections are asked to go away (GOAWAY) after this, so
    /// clients rebalance across instances; in-flight calls get `max_connection_age_grace`.
    pub max_connection_age: Duration,
    pub max_connection_age_grace: Duration,
    /// Streams a client may open and reset before the server handles them (the HTTP/2
    /// "rapid reset" flood, CVE-2023-44487); the connection is closed beyond it.
    pub max_pending_reset_streams: usize,
    /// Largest header block: a bearer token is well under 1 KiB.
    pub max_header_list_bytes: u32,
    /// `GRPC_HANDSHAKE_TIMEOUT`: a connection that has not sent the HTTP/2 preface and
    /// SETTINGS (or an HTTP/1.1 request head) by then is closed (`listener.rs`).
    pub handshake_timeout: Duration,
    /// Streams the server may reset for a client's protocol errors before it sends GOAWAY
    /// (hyper's own default, which tonic leaves unset, meaning no limit).
    pub max_local_error_reset_streams: usize,
    /// `GRPC_DRAIN_TIMEOUT`: how long in-flight calls get to finish after a shutdown signal.
    pub drain_timeout: Duration,
}

impl ServerLimits {
    /// The defaults, with the service's own request-size limit.
    pub fn with_max_request_bytes(max_request_bytes: usize) -> Self {
        Self {
            max_request_bytes,
            max_concurrent_streams: 128,
            max_in_flight: 1024,
            request_timeout: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(30 * 60),
            max_connection_age_grace: Duration::from_secs(30),
            max_pending_reset_streams: 32,
            max_header_list_bytes: 16 * 1024,
            // grpc-go waits 120 s and nginx 60 s for a request head. A real client sends its
            // preface and SETTINGS in its first flight, a round trip after connecting, so 20 s
            // spares the slowest mobile link while a slowloris must reconnect three times a
            // minute to hold a descriptor.
            handshake_timeout: Duration::from_secs(20),
            max_local_error_reset_streams: 1024,
            drain_timeout: Duration::from_secs(10),
        }
    }

    /// The defaults, overridden by the `GRPC_*` variables.
    pub fn from_env(env: &Env, default_max_request_bytes: usize) -> Result<Self, ConfigError> {
        let d = Self::with_max_request_bytes(default_max_request_bytes);
        let whole = |var: &'static str, default: usize, range: std::ops::RangeInclusive<usize>| {
            let expected = format!("a whole number from {} to {}", range.start(), range.end());
            let value: usize = env.parse_or(var, default, &expected)?;
            if range.contains(&value) {
                Ok(value)
            } else {
                Err(ConfigError::new(var, format!("expected {expected}, got {value}")))
            }
        };
        Ok(Self {
            max_request_bytes: whole("GRPC_MAX_REQUEST_BYTES", d.max_request_bytes, 1024..=(4 << 20))?,
            max_concurrent_streams: whole("GRPC_MAX_CONCURRENT_STREAMS", d.max_concurrent_streams as usize, 1..=10_000)?
                as u32,
            max_in_flight: whole("GRPC_MAX_IN_FLIGHT", d.max_in_flight, 1..=1_000_000)?,
            request_timeout: env.seconds("GRPC_REQUEST_TIMEOUT", d.request_timeout, 1..=3600)?,
            keepalive_interval: env.seconds("GRPC_KEEPALIVE_INTERVAL", d.keepalive_interval, 1..=3600)?,
            keepalive_timeout: env.seconds("GRPC_KEEPALIVE_TIMEOUT", d.keepalive_timeout, 1..=600)?,
            max_connection_age: env.seconds("GRPC_MAX_CONNECTION_AGE", d.max_connection_age, 10..=7 * 24 * 3600)?,
            drain_timeout: env.seconds("GRPC_DRAIN_TIMEOUT", d.drain_timeout, 1..=600)?,
            handshake_timeout: env.seconds("GRPC_HANDSHAKE_TIMEOUT", d.handshake_timeout, 1..=300)?,
            ..d
        })
    }
}

/// Load shedding and the per-request deadline.
#[derive(Clone)]
pub struct LimitLayer {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    timeout: Duration,
    shed: Counter,
}

impl LimitLayer {
    /// The layer, with its figures registered in `metrics`: requests in flight (read from the
    /// semaphore when scraped), the limit, and requests shed.
    pub fn new(limits: &ServerLimits, metrics: &Metrics) -> Self {
        let layer = Self {
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            max_in_flight: limits.max_in_flight,
            timeout: limits.request_timeout,
            shed: Counter::default(),
        };
        let (semaphore, max) = (Arc::clone(&layer.in_flight), layer.max_in_flight);
        metrics.sample(Sampled::gauge(
            "todo_requests_in_flight",
            "Requests being handled now (health checks not counted).",
            move || max.saturating_sub(semaphore.available_permits()) as f64,
        ));
        metrics.sample(Sampled::gauge(
            "todo_requests_max_in_flight",
            "The in-flight limit (GRPC_MAX_IN_FLIGHT); requests beyond it are shed.",
            move || max as f64,
        ));
        metrics.register(
            "todo_requests_shed",
            "Requests refused at once with RESOURCE_EXHAUSTED because the in-flight limit was reached.",
            layer.shed.clone(),
        );
        layer
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Limit { inner, limits: self.clone() }
    }
}

#[derive(Clone)]
pub struct Limit<S> {
    inner: S,
    limits: LimitLayer,
}

/// Health must answer while the server is saturated, or an orchestrator restarts a busy
/// instance instead of a broken one.
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Limit<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if exempt(request.uri().path()) {
            let call = self.inner.call(request);
            return Box::pin(async move { call.await.map(client_fault_codes) });
        }
        let Ok(permit) = Arc::clone(&self.limits.in_flight).try_acquire_owned() else {
            self.limits.shed.inc();
            let status = Status::with_error_details(
                tonic::Code::ResourceExhausted,
                format!(
                    "the server is at its limit of {} requests in flight; retry with back-off",
                    self.limits.max_in_flight
                ),
                ErrorDetails::with_retry_info(Some(Duration::from_millis(100))),
            );
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        let server_limit = self.limits.timeout;
        let client_deadline = client_timeout(request.headers()).map(|t| t.saturating_sub(CLIENT_DEADLINE_MARGIN));
        let timeout = client_deadline.map_or(server_limit, |client| client.min(server_limit));
        // The deadline is fixed now, not at the first poll (which may come later, on another
        // task): tonic's own grpc-timeout timer started just before this call.
        let deadline = tokio::time::Instant::now() + timeout;
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = tokio::time::timeout_at(deadline, call).await;
            drop(permit);
            match result {
                Ok(response) => response.map(client_fault_codes),
                Err(_) if timeout < server_limit => {
                    tracing::info!(timeout_ms = timeout.as_millis() as u64, "request exceeded the client's deadline");
                    Ok(Status::deadline_exceeded("the request did not complete within the client's grpc-timeout")
                        .into_http())
                }
                Err(_) => {
                    tracing::warn!(timeout_ms = timeout.as_millis() as u64, "request exceeded the server's deadline");
                    Ok(Status::deadline_exceeded(format!(
                        "the request did not complete within the server's limit of {} s",
                        server_limit.as_secs()
                    ))
                    .into_http())
                }
            }
        })
    }
}

/// tonic enforces a client's `grpc-timeout` too, from outside every layer, and answers
/// CANCELLED ("Timeout expired"). This layer's own timer, set this much earlier, answers first
/// with DEADLINE_EXCEEDED, the code the gRPC spec gives an expired deadline.
const CLIENT_DEADLINE_MARGIN: Duration = Duration::from_millis(1);

/// The client's deadline from `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n).
/// A malformed value is ignored, as tonic's own timer ignores it.
fn client_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// tonic answers a request it cannot decode with codes that blame the server: OUT_OF_RANGE for
/// a message over the size limit (gRPC's status guide says RESOURCE_EXHAUSTED) and INTERNAL for
/// bytes that are not the message (invalid UTF-8 in a string, broken protobuf, a compressed
/// message that does not decompress), which is the client's INVALID_ARGUMENT. (A message
/// flagged compressed with no `grpc-encoding` stays INTERNAL: the gRPC compression spec
/// says so.) Those errors come back before any message, in the response headers, where the
/// code is rewritten; tonic's message (percent-encoded) is kept.
fn client_fault_codes<B>(mut response: http::Response<B>) -> http::Response<B> {
    const TOO_LARGE: &[u8] = b"Error,%20decoded%20message%20length%20too%20large";
    const UNDECODABLE: &[u8] = b"failed%20to%20decode%20Protobuf%20message";
    const UNDECOMPRESSABLE: &[u8] = b"Error%20decompressing";
    let headers = response.headers();
    let (Some(status), Some(message)) = (headers.get("grpc-status"), headers.get("grpc-message")) else {
        return response;
    };
    let code = match (status.as_bytes(), message.as_bytes()) {
        (b"11", m) if m.starts_with(TOO_LARGE) => tonic::Code::ResourceExhausted,
        (b"13", m) if m.starts_with(UNDECODABLE) || m.starts_with(UNDECOMPRESSABLE) => tonic::Code::InvalidArgument,
        _ => return response,
    };
    response.headers_mut().insert("grpc-status", http::HeaderValue::from(code as i32));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_timeouts_parse_in_every_unit_and_garbage_is_ignored() {
        let parse = |v: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", http::HeaderValue::from_str(v).unwrap());
            client_timeout(&headers)
        };
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("15S"), Some(Duration::from_secs(15)));
        assert_eq!(parse("500m"), Some(Duration::from_millis(500)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("1n"), Some(Duration::from_nanos(1)));
        for bad in ["", "m", "123456789m", "1x", "-1S", "1.5S", "1 S", "é"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(client_timeout(&http::HeaderMap::new()), None);
    }

    #[test]
    fn variables_override_defaults_and_bad_values_name_the_variable() {
        let env = Env::from_pairs([("GRPC_MAX_IN_FLIGHT", "64"), ("GRPC_REQUEST_TIMEOUT", "3")]);
        let limits = ServerLimits::from_env(&env, 4096).unwrap();
        assert_eq!(limits.max_in_flight, 64);
        assert_eq!(limits.request_timeout, Duration::from_secs(3));
        assert_eq!(limits.max_request_bytes, 4096);
        assert_eq!(limits.max_concurrent_streams, 128);

        for (var, value) in
            [("GRPC_MAX_IN_FLIGHT", "0"), ("GRPC_MAX_REQUEST_BYTES", "1"), ("GRPC_REQUEST_TIMEOUT", "soon")]
        {
            let err = ServerLimits::from_env(&Env::from_pairs([(var, value)]), 4096).unwrap_err();
            assert_eq!(err.var, var);
        }
    }
}
