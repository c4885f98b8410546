//! The per-RPC metrics every gRPC server in a Prometheus shop exports, under the names
//! go-grpc-prometheus made the de-facto standard (dashboards and alerts written for them work
//! unchanged): `grpc_server_started_total`, `grpc_server_handled_total` and
//! `grpc_server_handling_seconds`, labelled by `grpc_type`, `grpc_service`, `grpc_method` and
//! (handled) `grpc_code`, spelled as Go spells the codes.
//!
//! Labels are bounded: the service and method come from a fixed table built from the
//! descriptor sets compiled into the binary (the contract, health, reflection); any other path
//! is counted as `unknown`. Nothing from the request (a user, an email, a task id) is a label.
//!
//! The layer sits inside gRPC-web (so it sees native gRPC: the status in the headers of a
//! trailers-only answer, or in the trailers of a streamed one) and outside the limits (so
//! shed and timed-out calls are counted with the code the client got). A call whose response
//! is dropped before its status (the client went away) is counted as `Canceled`, as grpc-go
//! does.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::HeaderMap;
use http_body::{Body, Frame};
use prometheus_client::encoding::EncodeLabelSet;
use prost::Message as _;
use tower::{Layer, Service};

use super::{Counter, Family, Histogram, LATENCY_BUCKETS, Metrics};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

const UNKNOWN: MethodLabels = MethodLabels { grpc_type: "unknown", grpc_service: "unknown", grpc_method: "unknown" };

/// Every method this binary can serve, by HTTP path, from the compiled descriptor sets.
fn methods() -> &'static HashMap<String, MethodLabels> {
    static METHODS: OnceLock<HashMap<String, MethodLabels>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let sets = [
            todo_contract::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut methods = HashMap::new();
        for encoded in sets {
            // Compiled into the binary: a set that does not decode is a misbuilt binary (the
            // tests would fail); its methods are then counted as `unknown`.
            let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else { continue };
            for file in set.file {
                let package = file.package();
                for service in &file.service {
                    let full = if package.is_empty() {
                        service.name().to_owned()
                    } else {
                        format!("{package}.{}", service.name())
                    };
                    // Leaked once per process (the table is built once): a few dozen names.
                    let full: &'static str = Box::leak(full.into_boxed_str());
                    for method in &service.method {
                        let name: &'static str = Box::leak(method.name().to_owned().into_boxed_str());
                        let grpc_type = match (method.client_streaming(), method.server_streaming()) {
                            (false, false) => "unary",
                            (true, false) => "client_stream",
                            (false, true) => "server_stream",
                            (true, true) => "bidi_stream",
                        };
                        methods.insert(
                            format!("/{full}/{name}"),
                            MethodLabels { grpc_type, grpc_service: full, grpc_method: name },
                        );
                    }
                }
            }
        }
        methods
    })
}

/// Go's names of the status codes, by number.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The index of `code` in [`CODE_NAMES`]; a number outside the table is Unknown (2).
fn code_index(code: i32) -> usize {
    usize::try_from(code).ok().filter(|i| *i < CODE_NAMES.len()).unwrap_or(2)
}

/// The `grpc-status` in `headers`, if there is one; a malformed one counts as Unknown (2).
fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status").map(|v| v.to_str().ok().and_then(|s| s.parse().ok()).unwrap_or(2))
}

/// The three families, and each known method's handles into them, made on the method's first
/// call: a call then touches two counters and a histogram, without locking a family or
/// hashing its labels.
struct RpcFigures {
    started: Family<MethodLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling: Family<MethodLabels, Histogram>,
    /// By path: one lookup per call finds the labels and the handles.
    methods: HashMap<&'static str, Slot>,
    unknown: Slot,
}

struct Slot {
    labels: MethodLabels,
    figures: OnceLock<Arc<MethodFigures>>,
}

struct MethodFigures {
    labels: MethodLabels,
    started: Counter,
    handling: Histogram,
    /// By status code, each made on its first use (most methods only ever see a few codes).
    handled: [OnceLock<Counter>; CODE_NAMES.len()],
    handled_family: Family<HandledLabels, Counter>,
}

impl RpcFigures {
    fn method(&self, path: &str) -> &Arc<MethodFigures> {
        let slot = self.methods.get(path).unwrap_or(&self.unknown);
        slot.figures.get_or_init(|| {
            let labels = slot.labels.clone();
            Arc::new(MethodFigures {
                started: self.started.get_or_create_owned(&labels),
                handling: self.handling.get_or_create_owned(&labels),
                labels,
                handled: Default::default(),
                handled_family: self.handled.clone(),
            })
        })
    }
}

impl MethodFigures {
    fn handled(&self, code: i32) -> &Counter {
        let index = code_index(code);
        self.handled[index].get_or_init(|| {
            let MethodLabels { grpc_type, grpc_service, grpc_method } = self.labels.clone();
            let labels = HandledLabels { grpc_type, grpc_service, grpc_method, grpc_code: CODE_NAMES[index] };
            self.handled_family.get_or_create_owned(&labels)
        })
    }
}

/// The layer; [`RpcMetricsLayer::new`] registers its three families.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    figures: Arc<RpcFigures>,
}

impl RpcMetricsLayer {
    pub fn new(metrics: &Metrics) -> Self {
        let figures = RpcFigures {
            started: Family::default(),
            handled: Family::default(),
            handling: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            methods: methods()
                .iter()
                .map(|(path, labels)| (path.as_str(), Slot { labels: labels.clone(), figures: OnceLock::new() }))
                .collect(),
            unknown: Slot { labels: UNKNOWN, figures: OnceLock::new() },
        };
        metrics.register("grpc_server_started", "RPCs started on the server.", figures.started.clone());
        metrics.register(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their status.",
            figures.handled.clone(),
        );
        metrics.register(
            "grpc_server_handling_seconds",
            "Time from the request's arrival to the response's status (the whole stream, for streams), in seconds.",
            figures.handling.clone(),
        );
        Self { figures: Arc::new(figures) }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner, figures: Arc::clone(&self.figures) }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    figures: Arc<RpcFigures>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Observed<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = Arc::clone(self.figures.method(request.uri().path()));
        method.started.inc();
        // Dropped with the future if the call is abandoned before its response: Canceled.
        let mut observation = Observation(Some(Running { method, start: Instant::now() }));
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            let (parts, body) = response.into_parts();
            // Trailers-only: the status is already here.
            if let Some(code) = grpc_status(&parts.headers) {
                observation.finish(code);
            }
            Ok(http::Response::from_parts(parts, Observed { inner: body, observation }))
        })
    }
}

/// One call being timed. Its outcome is recorded once: at [`Observation::finish`], or, if the
/// call ends without a status, on drop as Canceled.
struct Observation(Option<Running>);

struct Running {
    method: Arc<MethodFigures>,
    start: Instant,
}

impl Observation {
    fn finish(&mut self, code: i32) {
        let Some(Running { method, start }) = self.0.take() else { return };
        method.handling.observe(start.elapsed().as_secs_f64());
        method.handled(code).inc();
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        self.finish(1);
    }
}

/// A response body that records the call's outcome when its trailers pass, or when it ends
/// or is dropped without them.
pub struct Observed<B> {
    inner: B,
    observation: Observation,
}

impl<B> Body for Observed<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    // Trailers without a status break the protocol: Unknown, as clients see it.
                    self.observation.finish(grpc_status(trailers).unwrap_or(2));
                }
            }
            // The body failed mid-stream: the client sees the stream reset.
            Some(Err(_)) => self.observation.finish(2),
            // Ended without trailers.
            None => self.observation.finish(2),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Default> Default for Observed<B> {
    fn default() -> Self {
        Self { inner: B::default(), observation: Observation(None) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_knows_every_served_method_with_its_type() {
        let methods = methods();
        let create = &methods["/todo.task.v1.TaskService/CreateTask"];
        assert_eq!(
            (create.grpc_type, create.grpc_service, create.grpc_method),
            ("unary", "todo.task.v1.TaskService", "CreateTask")
        );
        assert_eq!(methods["/todo.task.v1.TaskService/WatchTasks"].grpc_type, "server_stream");
        assert_eq!(methods["/grpc.health.v1.Health/Watch"].grpc_type, "server_stream");
        assert_eq!(methods["/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"].grpc_type, "bidi_stream");
        assert!(methods.contains_key("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"));
        assert!(methods.contains_key("/todo.auth.v1.AuthService/Login"));
        assert!(!methods.contains_key("/todo.auth.v1.AuthService/Nope"));
    }

    #[test]
    fn codes_are_spelled_as_go_spells_them() {
        let code_name = |code| CODE_NAMES[code_index(code)];
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(1), "Canceled");
        assert_eq!(code_name(16), "Unauthenticated");
        assert_eq!(code_name(17), "Unknown");
        assert_eq!(code_name(-1), "Unknown");
        for (i, name) in CODE_NAMES.iter().enumerate() {
            let code = tonic::Code::from_i32(i as i32);
            // tonic spells them `Ok` and `Cancelled`.
            let tonic = format!("{code:?}").replace("Cancelled", "Canceled");
            assert!(tonic.eq_ignore_ascii_case(name), "{tonic} vs {name}");
        }
    }
}
