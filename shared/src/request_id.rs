//! Request ids: every RPC has one, so a user's error report can be found in the logs.
//!
//! The caller's `x-request-id` is kept if it is sane (1 to 128 printable ASCII characters, no
//! spaces), else a new one (a UUID) replaces it. It is returned in the response metadata, put
//! in the `rpc` span (so it is on every log line of the call: `telemetry.rs`), and added to the
//! status details of every error as a `google.rpc.RequestInfo`.
//!
//! Two layers, because gRPC-web turns trailers into body bytes: [`RequestIdLayer`] (outermost)
//! settles the id before the span is made and sets the response header; [`RequestInfoLayer`]
//! (inside gRPC-web) adds the `RequestInfo` to an error's details, in the headers of a
//! trailers-only answer or in the trailers of a streamed one.
//!
//! One answer escapes both: tonic enforces a client's `grpc-timeout` outside every layer, and
//! its CANCELLED carries no request id. The limits layer answers such deadlines itself 1 ms
//! earlier (DEADLINE_EXCEEDED, with the id), so that answer is a race lost, not the rule.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame};
use prost::Message as _;
use tower::{Layer, Service};

/// The metadata key of the request id, in requests and responses.
pub const HEADER: &str = "x-request-id";
/// Longest request id kept from a caller.
pub const MAX_LEN: usize = 128;
const DETAILS: &str = "grpc-status-details-bin";
const REQUEST_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RequestInfo";

/// gRPC's binary-header base64: written without padding, read with or without.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Whether a caller's request id is kept.
pub fn is_sane(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
}

fn fresh() -> HeaderValue {
    // A hyphenated UUID is always a valid header value; the fallback is never taken.
    HeaderValue::try_from(uuid::Uuid::new_v4().to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Settles the request id (see the module docs) and returns it in the response headers.
/// tower-http's `SetRequestIdLayer` keeps any id a caller sends; this one also replaces ids
/// that are too long or not printable, since they go into every log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestId { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestId<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RequestId<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let id = match request.headers().get(HEADER) {
            Some(value) if is_sane(value) => value.clone(),
            _ => fresh(),
        };
        // Exactly one value from here on: the span, the details and the answer agree.
        request.headers_mut().insert(HEADER, id.clone());
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            response.headers_mut().insert(HEADER, id);
            Ok(response)
        })
    }
}

/// Adds a `google.rpc.RequestInfo` with the request id to the details of every error status.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestInfoLayer;

impl<S> Layer<S> for RequestInfoLayer {
    type Service = RequestInfo<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestInfo { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestInfo<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RequestInfo<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<WithRequestInfo<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let id = request.headers().get(HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            let (mut parts, body) = response.into_parts();
            if let Some(id) = &id {
                add_request_info(&mut parts.headers, id);
            }
            Ok(http::Response::from_parts(parts, WithRequestInfo { inner: body, id }))
        })
    }
}

/// A response body whose trailers get the request id in their error details.
#[derive(Debug)]
pub struct WithRequestInfo<B> {
    inner: B,
    id: Option<String>,
}

impl<B> Body for WithRequestInfo<B>
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
        Poll::Ready(frame.map(|frame| {
            frame.map(|frame| match (frame.into_trailers(), &self.id) {
                (Ok(mut trailers), Some(id)) => {
                    add_request_info(&mut trailers, id);
                    Frame::trailers(trailers)
                }
                (Ok(trailers), None) => Frame::trailers(trailers),
                (Err(frame), _) => frame,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Default> Default for WithRequestInfo<B> {
    fn default() -> Self {
        Self { inner: B::default(), id: None }
    }
}

/// If `headers` carry an error status, adds `RequestInfo{request_id: id}` to its details
/// (replacing an earlier `RequestInfo`), keeping every other detail as it was, whatever its
/// type. Details that do not decode are left alone rather than replaced.
fn add_request_info(headers: &mut HeaderMap, id: &str) {
    let Some(code) = headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    if code == 0 {
        return;
    }
    let mut status = match headers.get(DETAILS) {
        Some(value) => {
            let Some(status) =
                BASE64.decode(value.as_bytes()).ok().and_then(|b| tonic_types::pb::Status::decode(&b[..]).ok())
            else {
                return;
            };
            status
        }
        None => tonic_types::pb::Status {
            code,
            // `grpc-message` is percent-encoded UTF-8.
            message: headers
                .get("grpc-message")
                .map(|m| percent_encoding::percent_decode(m.as_bytes()).decode_utf8_lossy().into_owned())
                .unwrap_or_default(),
            details: Vec::new(),
        },
    };
    status.details.retain(|any| any.type_url != REQUEST_INFO_TYPE);
    let info = tonic_types::pb::RequestInfo { request_id: id.to_owned(), serving_data: String::new() };
    status.details.push(prost_types::Any { type_url: REQUEST_INFO_TYPE.to_owned(), value: info.encode_to_vec() });
    if let Ok(value) = HeaderValue::try_from(BASE64.encode(status.encode_to_vec())) {
        headers.insert(DETAILS, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    #[test]
    fn only_short_printable_ids_are_kept() {
        for kept in ["a", "req-1234", "01J9Z3T0Q9", &"x".repeat(MAX_LEN)] {
            assert!(is_sane(&HeaderValue::from_str(kept).unwrap()), "{kept:?}");
        }
        for refused in ["", "has space", &"x".repeat(MAX_LEN + 1), "tab\there"] {
            assert!(!is_sane(&HeaderValue::from_str(refused).unwrap()), "{refused:?}");
        }
        assert!(!is_sane(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()), "non-ASCII");
    }

    #[test]
    fn error_details_gain_the_request_id_and_keep_what_was_there() {
        let status = tonic::Status::with_error_details(
            tonic::Code::InvalidArgument,
            "bad title",
            ErrorDetails::with_bad_request_violation("title", "is required"),
        );
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        add_request_info(&mut headers, "req-42");
        let back = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!((back.code(), back.message()), (tonic::Code::InvalidArgument, "bad title"));
        let details = back.get_error_details();
        assert_eq!(details.request_info().map(|i| i.request_id.as_str()), Some("req-42"));
        assert_eq!(details.bad_request().map(|b| b.field_violations.len()), Some(1));

        let mut ok = HeaderMap::new();
        ok.insert("grpc-status", HeaderValue::from_static("0"));
        add_request_info(&mut ok, "req-42");
        assert!(ok.get(DETAILS).is_none(), "a success gets no details");
    }

    #[test]
    fn a_status_without_details_gets_one_with_its_code_and_message() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("16"));
        headers.insert("grpc-message", HeaderValue::from_static("token%20expired%3A%20caf%C3%A9"));
        add_request_info(&mut headers, "req-7");
        let raw = BASE64.decode(headers.get(DETAILS).unwrap().as_bytes()).unwrap();
        let status = tonic_types::pb::Status::decode(&raw[..]).unwrap();
        assert_eq!((status.code, status.message.as_str()), (16, "token expired: café"));
        assert_eq!(status.details.len(), 1);
    }

    #[test]
    fn details_of_unknown_types_are_kept_and_an_old_request_info_replaced() {
        let foreign = prost_types::Any { type_url: "type.example.com/acme.Custom".into(), value: vec![1, 2, 3] };
        let old = tonic_types::pb::RequestInfo { request_id: "old".into(), serving_data: String::new() };
        let status = tonic_types::pb::Status {
            code: 13,
            message: "boom".into(),
            details: vec![
                foreign.clone(),
                foreign.clone(),
                prost_types::Any { type_url: REQUEST_INFO_TYPE.into(), value: old.encode_to_vec() },
            ],
        };
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("13"));
        headers.insert(DETAILS, HeaderValue::try_from(BASE64.encode(status.encode_to_vec())).unwrap());
        add_request_info(&mut headers, "new");
        let raw = BASE64.decode(headers.get(DETAILS).unwrap().as_bytes()).unwrap();
        let back = tonic_types::pb::Status::decode(&raw[..]).unwrap();
        assert_eq!(back.details[..2], [foreign.clone(), foreign]);
        assert_eq!(back.details.len(), 3);
        let info = tonic_types::pb::RequestInfo::decode(&back.details[2].value[..]).unwrap();
        assert_eq!(info.request_id, "new");

        let mut garbage = HeaderMap::new();
        garbage.insert("grpc-status", HeaderValue::from_static("13"));
        garbage.insert(DETAILS, HeaderValue::from_static("!!not base64!!"));
        add_request_info(&mut garbage, "new");
        assert_eq!(garbage.get(DETAILS).unwrap(), "!!not base64!!", "left alone, no panic");
    }
}
