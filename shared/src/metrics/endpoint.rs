//! `GET /metrics` on its own address (`METRICS_ADDR`), over HTTP/1.1: what Prometheus and
//! every other scraper speak. Kept off the gRPC port so it needs no route, no CORS and no
//! token there, and so it can be exposed to the monitoring network only.
//!
//! `GET /ready` on the same address answers 200 while health reports SERVING and 503
//! otherwise: for load balancers and probes that speak HTTP/1.1 but not gRPC (HAProxy's
//! checks, Kubernetes' `httpGet`). A check that matched `todo_serving 1` in `/metrics` would
//! break once the page outgrows the checker's buffer (HAProxy reads 16 KiB), as it does
//! after a few hundred distinct RPC outcomes.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::{CONTENT_TYPE, Metrics};

/// A scraper that has not sent its request headers within this is cut off.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `metrics`, and `ready()` at `/ready`, on `listener` until the task is dropped.
/// Accept errors (out of file descriptors, say) are logged and retried after a pause, never
/// fatal.
pub async fn serve<R>(listener: TcpListener, metrics: Metrics, ready: R)
where
    R: Fn() -> bool + Clone + Send + Sync + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "metrics endpoint: accept failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (metrics, ready) = (metrics.clone(), ready.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let (metrics, ready) = (metrics.clone(), ready.clone());
                async move { Ok::<_, Infallible>(respond(&request, &metrics, ready())) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "metrics endpoint: connection ended with an error");
            }
        });
    }
}

fn respond(request: &Request<Incoming>, metrics: &Metrics, ready: bool) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &'static str, body: Bytes| {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
        response
    };
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => (StatusCode::OK, CONTENT_TYPE, Bytes::from(metrics.encode())),
        "/ready" if ready => (StatusCode::OK, "text/plain", Bytes::from_static(b"SERVING\n")),
        "/ready" => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", Bytes::from_static(b"NOT_SERVING\n")),
        _ => {
            let body = Bytes::from_static(b"not found: metrics are at /metrics, readiness at /ready\n");
            return reply(StatusCode::NOT_FOUND, "text/plain", body);
        }
    };
    match *request.method() {
        Method::GET => reply(status, content_type, body),
        Method::HEAD => reply(status, content_type, Bytes::new()),
        _ => {
            let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", Bytes::from_static(b"use GET\n"));
            response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            response
        }
    }
}
