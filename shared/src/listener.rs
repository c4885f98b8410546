//! The listening socket and the connections it accepts, with what tonic's own `TcpIncoming`
//! leaves out when a listener is handed to it:
//!
//! - **A backlog of [`BACKLOG`]**, not mio's 128: a burst of connects beyond the backlog has
//!   its SYNs dropped, and each dropped client waits a 1 s retransmission.
//! - **TCP keep-alive on every accepted socket** (tonic applies its `tcp_keepalive` setting
//!   only to listeners it binds itself), so a peer that vanished without a FIN is found even
//!   when HTTP/2 pings are not flowing.
//! - **Accept errors back off.** Out of file descriptors (EMFILE, ENFILE) or memory, accept
//!   fails at once and would fail again at once: retrying in a loop spins a core while the
//!   connections that hold the descriptors stay. The stream waits (10 ms, doubling to 1 s)
//!   and logs at most once per 10 s.
//! - **A handshake deadline.** hyper-util's protocol detection reads the first bytes with no
//!   timeout (hyper issue 3962), so a connection that never sends a request is held until
//!   the maximum connection age. [`Handshake`] closes a connection that has not sent the
//!   HTTP/2 preface and its SETTINGS frame, or an HTTP/1.1 request head, within the deadline.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Sleep;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use crate::telemetry::LogEvery;

/// Connections the kernel queues before they are accepted: enough for a burst of a thousand
/// clients reconnecting at once (a replica restart). The kernel caps it at `somaxconn`.
pub const BACKLOG: u32 = 1024;

/// Binds `addr` with [`BACKLOG`] and `SO_REUSEADDR` (a restarted service can listen at once,
/// whatever connections of its predecessor are still in TIME_WAIT).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The plaintext connections of a listener, as tonic's server consumes them.
pub struct Incoming {
    accept: Accept,
    handshake_timeout: Duration,
}

impl Incoming {
    /// `keepalive`: idle time before the first TCP keep-alive probe (and between probes).
    pub fn new(listener: TcpListener, keepalive: Duration, handshake_timeout: Duration) -> Self {
        Self { accept: Accept::new(listener, keepalive), handshake_timeout }
    }
}

impl Stream for Incoming {
    type Item = io::Result<Handshake<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let timeout = self.handshake_timeout;
        Pin::new(&mut self.accept).poll_next(cx).map(|next| next.map(|accepted| Ok(Handshake::new(accepted?, timeout))))
    }
}

/// Accepted TCP connections, with their socket options set; accept errors back off.
pub struct Accept {
    listener: TcpListener,
    keepalive: TcpKeepalive,
    backoff: Option<(Pin<Box<Sleep>>, Duration)>,
    accept_errors: LogEvery,
}

impl Accept {
    pub fn new(listener: TcpListener, keepalive: Duration) -> Self {
        Self {
            listener,
            keepalive: TcpKeepalive::new().with_time(keepalive).with_interval(keepalive),
            backoff: None,
            accept_errors: LogEvery::new(Duration::from_secs(10)),
        }
    }

    fn log_accept_error(&self, error: &io::Error, retry_in: Duration) {
        if self.accept_errors.due() {
            tracing::warn!(error = %error, retry_in_ms = retry_in.as_millis() as u64,
                "cannot accept connections (out of file descriptors or memory?); retrying");
        }
    }
}

/// Errors that concern one connection (it was reset before it was accepted, say): the next
/// accept may well succeed at once.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
    )
}

impl Stream for Accept {
    type Item = io::Result<TcpStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some((sleep, _)) = &mut this.backoff {
            std::task::ready!(sleep.as_mut().poll(cx));
        }
        loop {
            match this.listener.poll_accept(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok((stream, _peer))) => {
                    this.backoff = None;
                    let socket = SockRef::from(&stream);
                    // Failing to set an option leaves a working connection: not fatal.
                    if let Err(err) =
                        socket.set_tcp_nodelay(true).and_then(|()| socket.set_tcp_keepalive(&this.keepalive))
                    {
                        tracing::debug!(error = %err, "cannot set TCP options on an accepted connection");
                    }
                    return Poll::Ready(Some(Ok(stream)));
                }
                Poll::Ready(Err(err)) if is_per_connection(&err) => continue,
                Poll::Ready(Err(err)) => {
                    let wait = this
                        .backoff
                        .as_ref()
                        .map_or(Duration::from_millis(10), |(_, d)| (*d * 2).min(Duration::from_secs(1)));
                    this.log_accept_error(&err, wait);
                    let mut sleep = Box::pin(tokio::time::sleep(wait));
                    // Registers the wake-up; the sleep has just begun, so it is pending.
                    let _ = sleep.as_mut().poll(cx);
                    this.backoff = Some((sleep, wait));
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The client preface every HTTP/2 connection starts with (RFC 9113, section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// HTTP/2 frame type of SETTINGS, which must follow the preface.
const SETTINGS: u8 = 0x4;

/// A connection that must show it is a client within a deadline: the HTTP/2 preface and the
/// SETTINGS frame after it, or (any other first bytes: HTTP/1.1, gRPC-web) the end of the
/// first request head. After that it is a plain pass-through; HTTP/2 pings, hyper's header
/// timeout and the request deadline take over.
pub struct Handshake<IO> {
    inner: IO,
    state: State,
}

enum State {
    Waiting { deadline: Pin<Box<Sleep>>, progress: Progress },
    Done,
}

/// How far the first bytes have got, without keeping them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// `n` bytes of the preface matched so far.
    Preface(usize),
    /// The preface, then `n` bytes of the SETTINGS frame header (`length` so far).
    SettingsHeader {
        n: usize,
        length: usize,
    },
    /// The SETTINGS header, then `remaining` bytes of its payload.
    SettingsPayload {
        remaining: usize,
    },
    /// Not HTTP/2: the last bytes seen, looking for the blank line that ends a request head.
    Http1 {
        tail: [u8; 4],
    },
    Complete,
    /// The first frame after the preface was not SETTINGS: a protocol error hyper reports.
    Invalid,
}

impl Progress {
    fn feed(mut self, bytes: &[u8]) -> Self {
        for &byte in bytes {
            self = match self {
                Self::Preface(n) if PREFACE[n] == byte => {
                    if n + 1 == PREFACE.len() {
                        Self::SettingsHeader { n: 0, length: 0 }
                    } else {
                        Self::Preface(n + 1)
                    }
                }
                Self::Preface(n) => {
                    let mut tail = [0; 4];
                    let seen = PREFACE[..n].iter().copied().chain(std::iter::once(byte));
                    for b in seen {
                        tail = [tail[1], tail[2], tail[3], b];
                    }
                    Self::Http1 { tail }.after_http1()
                }
                Self::SettingsHeader { n, length } => match n {
                    0..=2 => Self::SettingsHeader { n: n + 1, length: (length << 8) | usize::from(byte) },
                    3 if byte != SETTINGS => Self::Invalid,
                    8 if length == 0 => Self::Complete,
                    8 => Self::SettingsPayload { remaining: length },
                    _ => Self::SettingsHeader { n: n + 1, length },
                },
                Self::SettingsPayload { remaining: 1 } => Self::Complete,
                Self::SettingsPayload { remaining } => Self::SettingsPayload { remaining: remaining - 1 },
                Self::Http1 { tail } => Self::Http1 { tail: [tail[1], tail[2], tail[3], byte] }.after_http1(),
                done @ (Self::Complete | Self::Invalid) => return done,
            };
        }
        self
    }

    fn after_http1(self) -> Self {
        match self {
            Self::Http1 { tail } if &tail == b"\r\n\r\n" => Self::Complete,
            other => other,
        }
    }
}

impl<IO> Handshake<IO> {
    pub fn new(inner: IO, timeout: Duration) -> Self {
        Self::until(inner, tokio::time::Instant::now() + timeout)
    }

    /// With a deadline already running (a TLS handshake spent part of it).
    pub fn until(inner: IO, deadline: tokio::time::Instant) -> Self {
        let deadline = Box::pin(tokio::time::sleep_until(deadline));
        Self { inner, state: State::Waiting { deadline, progress: Progress::Preface(0) } }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Handshake<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let State::Waiting { deadline, .. } = &mut this.state
            && deadline.as_mut().poll(cx).is_ready()
        {
            tracing::debug!("closing a connection that sent no request within the handshake deadline");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface and SETTINGS, nor an HTTP/1.1 request head, within the handshake deadline",
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), State::Waiting { progress, .. }) = (&polled, &mut this.state) {
            *progress = progress.feed(&buf.filled()[before..]);
            // Invalid: hyper sees the same bytes and closes the connection itself.
            if matches!(progress, Progress::Complete | Progress::Invalid) {
                this.state = State::Done;
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Handshake<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// tonic's `Request::remote_addr` and `peer_certs` read the connection's info (the auth
/// throttles key on the address; mutual TLS checks the certificates): the wrapper passes the
/// wrapped connection's own through.
impl<IO: Connected> Connected for Handshake<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> IO::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Raises the soft limit on open files to the hard limit, once at start-up: the common soft
/// default (1,024) is reached by a thousand idle clients, while the hard limit is usually far
/// higher. Returns the limit now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// [`raise_open_files_limit`], with the outcome logged.
pub fn raise_open_files_limit_and_log() {
    match raise_open_files_limit() {
        Ok(limit) => tracing::info!(open_files = limit, "open files limit raised to the hard limit"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open files limit; keeping it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(chunks: &[&[u8]]) -> Progress {
        chunks.iter().fold(Progress::Preface(0), |p, chunk| p.feed(chunk))
    }

    #[test]
    fn an_http2_client_is_through_after_the_preface_and_its_settings() {
        let settings = [0, 0, 6, SETTINGS, 0, 0, 0, 0, 0, /* payload */ 0, 3, 0, 0, 0, 100];
        assert_eq!(fed(&[PREFACE, &settings]), Progress::Complete);
        // In any chunking, and not before the last byte of the payload.
        let whole: Vec<u8> = PREFACE.iter().chain(&settings).copied().collect();
        for split in 1..whole.len() {
            let (a, b) = whole.split_at(split);
            assert_eq!(fed(&[a, b]), Progress::Complete, "split at {split}");
            assert_ne!(fed(&[a]), Progress::Complete, "complete after only {split} bytes");
        }
        assert_eq!(fed(&[PREFACE, &[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]]), Progress::Complete, "an empty SETTINGS frame");
        assert_eq!(fed(&[PREFACE, &[0, 0, 0, 0x1, 4, 0, 0, 0, 1]]), Progress::Invalid, "HEADERS before SETTINGS");
    }

    #[test]
    fn an_http1_client_is_through_after_its_first_request_head() {
        let head = b"POST /todo.task.v1.TaskService/ListTasks HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web\r\n\r\n";
        assert_eq!(fed(&[head]), Progress::Complete);
        assert!(matches!(fed(&[&head[..head.len() - 1]]), Progress::Http1 { .. }));
        // Diverging from the preface late ("PRI * HTTP/1.1") is HTTP/1 too.
        assert_eq!(fed(&[b"PRI * HTTP/1.1\r\n\r\n"]), Progress::Complete);
        assert_eq!(fed(&[b"GET / HTTP/1.1\r\n", b"\r\n"]), Progress::Complete);
    }

    #[test]
    fn nothing_or_a_partial_preface_is_still_waiting() {
        assert_eq!(fed(&[]), Progress::Preface(0));
        assert_eq!(fed(&[&PREFACE[..10]]), Progress::Preface(10));
        assert!(matches!(fed(&[PREFACE]), Progress::SettingsHeader { n: 0, .. }));
    }

    #[tokio::test]
    async fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let limit = raise_open_files_limit().unwrap();
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert_eq!(limit, soft);
        assert_eq!(soft, hard);
    }
}
