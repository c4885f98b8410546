//! Browsers: gRPC-web (binary and text) over HTTP/1.1 on the native gRPC port, behind CORS.
//! Spoken here with raw HTTP/1.1 so the test sees exactly the headers a browser would.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prost::Message as _;
use todo_contract::auth::v1::{SignUpRequest, SignUpResponse};
use todo_contract::task::v1::ListTasksRequest;
use todo_tests::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

on_both_backends!(
    preflight_needs_no_token_and_only_allowed_origins_get_cors_headers,
    grpc_web_binary_and_text_carry_real_status_codes_to_the_browser
);

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn header_list(&self, name: &str) -> Vec<String> {
        self.header(name).map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()).collect()).unwrap_or_default()
    }
}

/// One HTTP/1.1 exchange on a fresh connection.
async fn http(running: &Running, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    let mut stream = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n", running.addr);
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();

    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    HttpResponse { status, headers, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
        raw = &raw[line_end + 2 + size + 2..];
    }
}

/// A gRPC-web frame: flag byte, big-endian length, payload.
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut framed = vec![flag];
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(payload);
    framed
}

/// Splits a gRPC-web body into its message frames and its trailers.
fn frames(mut body: &[u8]) -> (Vec<Vec<u8>>, Vec<(String, String)>) {
    let (mut messages, mut trailers) = (Vec::new(), Vec::new());
    while !body.is_empty() {
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let payload = &body[5..5 + len];
        if body[0] & 0x80 == 0 {
            messages.push(payload.to_vec());
        } else {
            for line in std::str::from_utf8(payload).unwrap().split("\r\n").filter(|l| !l.is_empty()) {
                let (name, value) = line.split_once(':').unwrap();
                trailers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        body = &body[5 + len..];
    }
    (messages, trailers)
}

fn grpc_web_headers<'a>(content_type: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        ("origin", WEB_ORIGIN),
        ("content-type", content_type),
        ("x-grpc-web", "1"),
        ("x-user-agent", "grpc-web-test"),
    ];
    headers.extend_from_slice(extra);
    headers
}

async fn preflight_needs_no_token_and_only_allowed_origins_get_cors_headers(backend: Backend) {
    let auth = start_auth(backend).await;
    let tasks = start_tasks(backend).await;
    for (running, path) in
        [(&auth, "/todo.auth.v1.AuthService/GetCurrentUser"), (&tasks, "/todo.task.v1.TaskService/ListTasks")]
    {
        let asks = |origin| {
            [
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "authorization,content-type,x-grpc-web,x-user-agent,grpc-timeout"),
            ]
        };
        let allowed = http(running, "OPTIONS", path, &asks(WEB_ORIGIN), b"").await;
        assert!(allowed.status == 200 || allowed.status == 204, "{path}: HTTP {}", allowed.status);
        assert_eq!(allowed.header("access-control-allow-origin"), Some(WEB_ORIGIN), "{path}");
        let allowed_headers = allowed.header_list("access-control-allow-headers");
        for header in ["authorization", "content-type", "x-grpc-web", "x-user-agent", "grpc-timeout"] {
            assert!(allowed_headers.iter().any(|h| h == header), "{path}: {header} not in {allowed_headers:?}");
        }
        assert!(allowed.header_list("access-control-allow-methods").contains(&"post".to_owned()), "{path}");
        assert!(allowed.header("access-control-max-age").is_some(), "{path}: preflights should be cacheable");

        let foreign = http(running, "OPTIONS", path, &asks("https://evil.example.test"), b"").await;
        assert_eq!(foreign.header("access-control-allow-origin"), None, "{path}: a foreign origin must not be allowed");
    }
}

async fn grpc_web_binary_and_text_carry_real_status_codes_to_the_browser(backend: Backend) {
    let auth = start_auth(backend).await;
    let tasks = start_tasks(backend).await;

    // Binary gRPC-web: a successful SignUp, its message in a data frame, status in the trailer frame.
    let sign_up = SignUpRequest { email: "browser@example.com".into(), password: "plum-kettle-orbit-42".into() };
    let body = frame(0, &sign_up.encode_to_vec());
    let headers = grpc_web_headers("application/grpc-web+proto", &[]);
    let response = http(&auth, "POST", "/todo.auth.v1.AuthService/SignUp", &headers, &body).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("access-control-allow-origin"), Some(WEB_ORIGIN));
    let (messages, trailers) = frames(&response.body);
    let user = SignUpResponse::decode(messages[0].as_slice()).unwrap().user.unwrap();
    assert_eq!(user.email, "browser@example.com");
    assert!(trailers.contains(&("grpc-status".to_owned(), "0".to_owned())), "{trailers:?}");
    assert_eq!(auth.db.scalar("SELECT count(*) FROM users", None).await, 1);

    // Text gRPC-web without a token: UNAUTHENTICATED, readable by the page (exposed headers).
    let body = STANDARD.encode(frame(0, &ListTasksRequest::default().encode_to_vec()));
    let headers = grpc_web_headers("application/grpc-web-text", &[]);
    let response = http(&tasks, "POST", "/todo.task.v1.TaskService/ListTasks", &headers, body.as_bytes()).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("grpc-status"), Some("16"), "{:?}", response.headers);
    assert!(response.header("grpc-message").is_some_and(|m| m.to_ascii_lowercase().contains("authorization")));
    let exposed = response.header_list("access-control-expose-headers");
    for header in ["grpc-status", "grpc-message", "grpc-status-details-bin", "x-request-id"] {
        assert!(exposed.iter().any(|h| h == header), "{header} not exposed: {exposed:?}");
    }
    assert!(response.header("x-request-id").is_some_and(|id| uuid::Uuid::try_parse(id).is_ok()), "a fresh request id");

    // Text gRPC-web, bad input: INVALID_ARGUMENT with the field violations in grpc-status-details-bin.
    let bad = SignUpRequest { email: "not-an-email".into(), password: "short".into() };
    let body = STANDARD.encode(frame(0, &bad.encode_to_vec()));
    let response = http(&auth, "POST", "/todo.auth.v1.AuthService/SignUp", &headers, body.as_bytes()).await;
    assert_eq!(response.header("grpc-status"), Some("3"), "{:?}", response.headers);
    let details = response.header("grpc-status-details-bin").expect("rich error details");
    let status = tonic::Status::with_details(
        tonic::Code::InvalidArgument,
        "",
        base64::engine::general_purpose::STANDARD_NO_PAD.decode(details.trim_end_matches('=')).unwrap().into(),
    );
    let mut fields = violated_fields(&status);
    fields.sort();
    assert_eq!(fields, ["email", "password"]);
    assert_eq!(auth.db.scalar("SELECT count(*) FROM users", None).await, 1, "nothing written");
}
