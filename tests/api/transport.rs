//! The transport under connection abuse, measured from the client's side with connections
//! the tests open themselves: connections that never send a request are closed at the
//! handshake deadline; accepted sockets carry TCP keep-alive; the listen backlog is 1,024;
//! streams the server resets for a client's protocol errors end in GOAWAY past hyper's limit.
//! A normal client on a fresh connection is served throughout. Every wait is bounded.

use std::time::{Duration, Instant};

use todo_tests::pb::task::v1::ListTasksRequest;
use todo_tests::*;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

async fn served(tasks: &Running) {
    let me = caller();
    let mut client = task_client(tasks).await;
    client.list_tasks(bearer(&me.token, ListTasksRequest::default())).await.expect("a normal client is served");
}

/// Waits for the server to close `stream` (EOF or reset); returns how long that took, or
/// `None` if it was still open after `within`. Bytes the server sends first are skipped.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_send_a_request_are_closed_at_the_handshake_deadline() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = task_config(&db);
    config.limits.handshake_timeout = Duration::from_secs(2);
    let tasks = start_tasks_with(config, db).await;

    let half_preface = &PREFACE[..10];
    let half_http1 = b"POST /todo.task.v1.TaskService/ListTasks HTTP/1.1\r\nhost: x\r\n".as_slice();
    let mut abusive = Vec::new();
    for first_bytes in [&b""[..], half_preface, PREFACE, half_http1] {
        for _ in 0..25 {
            let mut stream = TcpStream::connect(tasks.addr).await.unwrap();
            stream.write_all(first_bytes).await.unwrap();
            abusive.push((first_bytes, stream));
        }
    }
    // A well-behaved HTTP/2 client that then goes quiet is not this deadline's business.
    let mut quiet = TcpStream::connect(tasks.addr).await.unwrap();
    quiet.write_all(&[PREFACE, &SETTINGS].concat()).await.unwrap();

    served(&tasks).await;
    for (first_bytes, stream) in &mut abusive {
        let closed = closed_within(stream, Duration::from_secs(8)).await;
        let after = closed.unwrap_or_else(|| panic!("still open after 8 s, having sent {first_bytes:?}"));
        assert!(after <= Duration::from_secs(5), "closed after {after:?}");
    }
    assert_eq!(closed_within(&mut quiet, Duration::from_secs(2)).await, None, "a real client's connection is kept");
    served(&tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_sockets_have_tcp_keepalive_and_the_backlog_is_1024() {
    let db = TestDb::new(Backend::Sqlite).await;
    let tasks = start_tasks_with(task_config(&db), db).await;
    let _client = TcpStream::connect(tasks.addr).await.unwrap();
    let port = tasks.addr.port();
    let ss = |args: &[&str]| {
        let out = std::process::Command::new("ss").args(args).output().expect("ss (iproute2) runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The server's side of the connection: its local port is the service's.
    let filter = format!("( sport = :{port} )");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let established = ss(&["-Htno", "state", "established", &filter]);
        if established.contains("timer:(keepalive") {
            break;
        }
        assert!(Instant::now() < deadline, "no keep-alive timer on the accepted socket:\n{established}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A listening socket's Send-Q is its backlog (capped by the kernel's somaxconn).
    let listening = ss(&["-Hltn", &filter]);
    let backlog: u32 = listening.split_whitespace().nth(2).and_then(|q| q.parse().ok()).expect(&listening);
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap();
    assert_eq!(backlog, 1024.min(somaxconn), "{listening}");
}

/// The pseudo-headers of a ListTasks request, which must come first in a header block.
fn request_pseudo_headers() -> Vec<u8> {
    let mut block = Vec::new();
    literal(&mut block, ":method", "POST");
    literal(&mut block, ":scheme", "http");
    literal(&mut block, ":path", "/todo.task.v1.TaskService/ListTasks");
    literal(&mut block, ":authority", "x");
    block
}

/// An HPACK literal header field, not indexed, with a literal name (RFC 7541, 6.2.2).
fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0);
    for text in [name, value] {
        string_length(block, text.len());
        block.extend_from_slice(text.as_bytes());
    }
}

/// An HPACK string length: an integer with a 7-bit prefix, no Huffman (RFC 7541, 5.1).
fn string_length(block: &mut Vec<u8>, mut length: usize) {
    if length < 127 {
        block.push(length as u8);
        return;
    }
    block.push(127);
    length -= 127;
    while length >= 128 {
        block.push((length % 128 + 128) as u8);
        length /= 128;
    }
    block.push(length as u8);
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = payload.len() as u32;
    let mut frame = vec![(length >> 16) as u8, (length >> 8) as u8, length as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// What the server answered a connection that sent `n` malformed requests and then a PING.
#[derive(Debug)]
struct Answer {
    resets: usize,
    /// GOAWAY's error code and debug data.
    goaway: Option<(u32, String)>,
    ping_acked: bool,
}

async fn malformed_requests(tasks: &Running, n: u32) -> Answer {
    let mut stream = TcpStream::connect(tasks.addr).await.unwrap();
    // Each request carries a connection-specific header, which HTTP/2 forbids, so the server
    // itself must reset it (the "MadeYouReset" pattern).
    let mut block = request_pseudo_headers();
    literal(&mut block, "connection", "keep-alive");
    let mut bytes = [PREFACE, &SETTINGS].concat();
    for i in 0..n {
        // END_STREAM | END_HEADERS
        bytes.extend(frame(1, 0x5, 2 * i + 1, &block));
    }
    bytes.extend(frame(6, 0, 0, b"still-on"));
    let (mut read, mut write) = stream.split();
    // The server may close before it has read everything: a failed write is expected then.
    let writer = async {
        let _ = write.write_all(&bytes).await;
    };
    // Until the server closes, or answers the PING or with GOAWAY, or 5 s pass.
    let reader = frames_until(&mut read, Duration::from_secs(5), |frames| {
        frames.iter().any(|f| f.kind == 6 && f.flags & 1 == 1) || goaway(frames).is_some()
    });
    let ((), frames) = tokio::join!(writer, reader);
    Answer {
        resets: frames.iter().filter(|f| f.kind == 3).count(),
        goaway: goaway(&frames).map(|f| {
            let code = u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]);
            (code, String::from_utf8_lossy(&f.payload[8..]).into_owned())
        }),
        ping_acked: frames.iter().any(|f| f.kind == 6 && f.flags & 1 == 1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_for_protocol_errors_end_in_goaway_past_the_limit() {
    let db = TestDb::new(Backend::Sqlite).await;
    let tasks = start_tasks_with(task_config(&db), db).await;

    // Below the limit (1,024): every malformed request is reset, and the connection lives on.
    let below = malformed_requests(&tasks, 1000).await;
    assert_eq!((below.resets, below.goaway.clone(), below.ping_acked), (1000, None, true), "{below:?}");

    // Past it: the server stops answering stream by stream and sends GOAWAY ENHANCE_YOUR_CALM.
    let flood = malformed_requests(&tasks, 2000).await;
    let (code, reason) = flood.goaway.clone().unwrap_or_else(|| panic!("no GOAWAY: {flood:?}"));
    assert_eq!((code, reason.as_str()), (0xb, "too_many_internal_resets"), "{flood:?}");
    assert!(flood.resets <= 1024 && !flood.ping_acked, "{flood:?}");
    served(&tasks).await;
}

/// A valid gRPC request head for stream `id` (with `token`, if any), without END_STREAM: the
/// server waits for its body.
fn open_request(id: u32, token: Option<&str>) -> Vec<u8> {
    let mut block = request_pseudo_headers();
    literal(&mut block, "content-type", "application/grpc");
    literal(&mut block, "te", "trailers");
    // After the pseudo-headers, which must come first.
    if let Some(token) = token {
        literal(&mut block, "authorization", &format!("Bearer {token}"));
    }
    // END_HEADERS only.
    frame(1, 0x4, id, &block)
}

/// The frames the server sends on `stream` within `within` (or until it closes): type, flags,
/// stream id, payload.
async fn frames_until(
    stream: &mut (impl AsyncRead + Unpin),
    within: Duration,
    done: impl Fn(&[Frame]) -> bool,
) -> Vec<Frame> {
    let deadline = tokio::time::Instant::now() + within;
    let (mut received, mut buf) = (Vec::new(), vec![0u8; 64 * 1024]);
    loop {
        let frames = parse_frames(&received);
        if done(&frames) {
            return frames;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return frames,
            Ok(Ok(got)) => received.extend_from_slice(&buf[..got]),
        }
    }
}

#[derive(Debug, Clone)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn parse_frames(bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let length = (usize::from(bytes[at]) << 16) | (usize::from(bytes[at + 1]) << 8) | usize::from(bytes[at + 2]);
        if at + 9 + length > bytes.len() {
            break;
        }
        let stream = u32::from_be_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]]) & 0x7fff_ffff;
        frames.push(Frame {
            kind: bytes[at + 3],
            flags: bytes[at + 4],
            stream,
            payload: bytes[at + 9..at + 9 + length].to_vec(),
        });
        at += 9 + length;
    }
    frames
}

/// The GOAWAY frame among `frames`, if any.
fn goaway(frames: &[Frame]) -> Option<&Frame> {
    frames.iter().find(|f| f.kind == 7 && f.payload.len() >= 8)
}

fn goaway_code(frames: &[Frame]) -> Option<u32> {
    goaway(frames).map(|f| u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_ends_in_goaway() {
    let db = TestDb::new(Backend::Sqlite).await;
    let tasks = start_tasks_with(task_config(&db), db).await;
    let mut stream = TcpStream::connect(tasks.addr).await.unwrap();
    // CVE-2023-44487: open a stream and cancel it at once, a thousand times.
    let mut bytes = [PREFACE, &SETTINGS].concat();
    for i in 0..1000u32 {
        bytes.extend(open_request(2 * i + 1, None));
        bytes.extend(frame(3, 0, 2 * i + 1, &8u32.to_be_bytes()));
    }
    let started = Instant::now();
    let _ = stream.write_all(&bytes).await;
    let frames = frames_until(&mut stream, Duration::from_secs(5), |f| goaway_code(f).is_some()).await;
    assert_eq!(
        goaway_code(&frames),
        Some(0xb),
        "GOAWAY ENHANCE_YOUR_CALM: {:?}",
        frames.iter().map(|f| f.kind).collect::<Vec<_>>()
    );
    assert!(started.elapsed() < Duration::from_secs(2), "cut short, not served: {:?}", started.elapsed());
    served(&tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_128_on_one_connection_are_refused() {
    let db = TestDb::new(Backend::Sqlite).await;
    let tasks = start_tasks_with(task_config(&db), db).await;
    let mut stream = TcpStream::connect(tasks.addr).await.unwrap();
    // With a valid token each request waits for its message, which never comes: 128 stay open.
    let me = caller();
    let mut bytes = [PREFACE, &SETTINGS].concat();
    for i in 0..129u32 {
        bytes.extend(open_request(2 * i + 1, Some(&me.token)));
    }
    stream.write_all(&bytes).await.unwrap();
    let last = 2 * 128 + 1;
    let frames =
        frames_until(&mut stream, Duration::from_secs(5), |f| f.iter().any(|f| f.kind == 3 && f.stream == last)).await;
    // The server announced the limit in its SETTINGS (MAX_CONCURRENT_STREAMS, id 3)...
    let settings = frames.iter().find(|f| f.kind == 4 && f.flags & 1 == 0).expect("the server's SETTINGS");
    let announced =
        settings.payload.chunks(6).find(|s| s[..2] == [0, 3]).map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert_eq!(announced, Some(128));
    // ...and refuses the stream past it (REFUSED_STREAM, 7), and only that one.
    let resets: Vec<(u32, u32)> = frames
        .iter()
        .filter(|f| f.kind == 3)
        .map(|f| (f.stream, u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]])))
        .collect();
    assert_eq!(resets, [(last, 7)], "{resets:?}");
    // A normal client on a fresh connection is served meanwhile.
    served(&tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_body_never_comes_ends_at_the_request_deadline() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = task_config(&db);
    config.limits.request_timeout = Duration::from_secs(2);
    let tasks = start_tasks_with(config, db).await;
    let me = caller();
    let tcp = TcpStream::connect(tasks.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{}/todo.task.v1.TaskService/ListTasks", tasks.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", me.token))
        .body(())
        .unwrap();
    // Headers sent, the body stream left open and empty.
    let (response, _body) = client.send_request(request, false).unwrap();
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.expect("answered").unwrap();
    let status = response.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(status.as_deref(), Some("4"), "DEADLINE_EXCEEDED: {:?}", response.headers());
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(5)).contains(&started.elapsed()),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_header_list_is_refused() {
    let db = TestDb::new(Backend::Sqlite).await;
    let tasks = start_tasks_with(task_config(&db), db).await;
    let mut stream = TcpStream::connect(tasks.addr).await.unwrap();
    // 1 MiB of headers: a HEADERS frame without END_HEADERS, then CONTINUATION frames.
    let first = request_pseudo_headers();
    let mut bytes = [PREFACE, &SETTINGS].concat();
    bytes.extend(frame(1, 0x1, 1, &first));
    let mut filler = Vec::new();
    literal(&mut filler, "x-filler", &"a".repeat(100));
    let per_frame: Vec<u8> = filler.iter().copied().cycle().take(filler.len() * 100).collect();
    let frames = (1024 * 1024) / per_frame.len();
    for n in 0..frames {
        let flags = if n + 1 == frames { 0x4 } else { 0 };
        bytes.extend(frame(9, flags, 1, &per_frame));
    }
    let started = Instant::now();
    let _ = stream.write_all(&bytes).await;
    let frames = frames_until(&mut stream, Duration::from_secs(5), |f| {
        goaway_code(f).is_some() || f.iter().any(|f| f.kind == 3)
    })
    .await;
    let refused = goaway_code(&frames).is_some() || frames.iter().any(|f| f.kind == 3 && f.stream == 1);
    assert!(
        refused,
        "neither GOAWAY nor RST_STREAM: {:?}",
        frames.iter().map(|f| (f.kind, f.stream)).collect::<Vec<_>>()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    served(&tasks).await;
}
