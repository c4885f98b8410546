//! The TLS connections of a listener: each accepted connection's handshake runs in a task of
//! its own (a slow client holds up nobody), within the handshake deadline, with the current
//! certificate; the HTTP/2 preface (or HTTP/1.1 request head) must then arrive within what is
//! left of the same deadline.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;

use super::Reloading;
use crate::listener::{Accept, Handshake};

pub type TlsConnection = Handshake<TlsStream<TcpStream>>;

/// Handshakes under way at once. Beyond it, connections wait in the kernel's backlog (and a
/// flood pushes back there) rather than each holding a task and a descriptor here.
const MAX_HANDSHAKES: usize = 1024;

pub struct TlsIncoming {
    accept: Accept,
    config: Arc<Reloading>,
    handshake_timeout: Duration,
    /// Handshakes under way; dropped (and aborted) with the stream when the server stops.
    handshakes: JoinSet<Option<TlsConnection>>,
}

impl TlsIncoming {
    pub fn new(
        listener: TcpListener,
        keepalive: Duration,
        handshake_timeout: Duration,
        config: Arc<Reloading>,
    ) -> Self {
        Self { accept: Accept::new(listener, keepalive), config, handshake_timeout, handshakes: JoinSet::new() }
    }

    fn start_handshake(&mut self, tcp: TcpStream) {
        let acceptor = TlsAcceptor::from(self.config.current());
        let deadline = tokio::time::Instant::now() + self.handshake_timeout;
        self.handshakes.spawn(async move {
            match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Some(Handshake::until(tls, deadline)),
                // A client's problem (no common version, an untrusted client certificate, not
                // TLS at all): it sees the alert; nothing for the operator to do.
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!("closing a connection whose TLS handshake did not finish within the deadline");
                    None
                }
            }
        });
    }
}

impl Stream for TlsIncoming {
    type Item = io::Result<TlsConnection>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            // Finished handshakes first: their deadline is running, and a stream of new
            // connects must not keep them waiting. Polled again after every handshake started,
            // so the set's waker covers it.
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(connection)))) => return Poll::Ready(Some(Ok(connection))),
                // Failed, timed out, or (never expected) panicked: on to the next.
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) | Poll::Pending => {}
            }
            // At the cap, accept nothing: a finishing handshake wakes us (registered above).
            if this.handshakes.len() >= MAX_HANDSHAKES {
                return Poll::Pending;
            }
            match Pin::new(&mut this.accept).poll_next(cx) {
                Poll::Ready(Some(Ok(tcp))) => this.start_handshake(tcp),
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => return Poll::Ready(None),
                // The listener wakes us, or a handshake under way.
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
