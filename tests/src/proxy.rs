//! A TCP proxy between a service and its database that tests can break on purpose.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Forward everything, each chunk this much later (a slow or congested network).
    Delay(Duration),
    /// Half-open: connections stay up but nothing gets through, either way, and new ones are
    /// accepted and then ignored (a peer that vanished without closing, a dropped route).
    Blackhole,
}

/// Forwards every connection to `target`, with faults on demand: [`FaultyProxy::cut`] drops
/// every connection at once and refuses new ones (a database restart), [`FaultyProxy::set`]
/// switches between forwarding, delaying and black-holing.
pub struct FaultyProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    state: Arc<Mutex<State>>,
    acceptor: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    cut: bool,
    links: Vec<JoinHandle<()>>,
}

impl FaultyProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(Mutex::new(State::default()));
        let (mode, _) = watch::channel(Mode::Pass);
        let (shared, modes) = (Arc::clone(&state), mode.clone());
        let acceptor = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut state = shared.lock().expect("proxy state");
                if state.cut {
                    // Accept-then-close, as a server that is going down does.
                    drop(client);
                    continue;
                }
                state.links.retain(|link| !link.is_finished());
                state.links.push(tokio::spawn(link(client, target, modes.subscribe())));
            }
        });
        Self { addr, mode, state, acceptor }
    }

    /// Drops every open connection and refuses new ones until [`FaultyProxy::restore`].
    pub fn cut(&self) {
        let mut state = self.state.lock().expect("proxy state");
        state.cut = true;
        for link in state.links.drain(..) {
            link.abort();
        }
    }

    /// Accepts and forwards again. Connections black-holed until now are dropped, as the
    /// peer's TCP stack would eventually do once the route came back.
    pub fn restore(&self) {
        let mut state = self.state.lock().expect("proxy state");
        if *self.mode.borrow() == Mode::Blackhole {
            for link in state.links.drain(..) {
                link.abort();
            }
        }
        state.cut = false;
        self.mode.send_replace(Mode::Pass);
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.cut();
        self.acceptor.abort();
    }
}

async fn link(client: TcpStream, target: SocketAddr, modes: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(target).await else { return };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pump(client_read, server_write, modes.clone()) => {}
        () = pump(server_read, client_write, modes) => {}
    }
}

/// Copies one direction, applying the current mode to every chunk.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, modes: watch::Receiver<Mode>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mode = *modes.borrow();
        match mode {
            Mode::Pass => {}
            Mode::Delay(by) => tokio::time::sleep(by).await,
            // Swallowed: the sender believes it was sent, the receiver never hears of it.
            Mode::Blackhole => continue,
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
