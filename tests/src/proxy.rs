//! A TCP proxy between a service and its database that tests can break on purpose.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards every connection to `target` until [`FaultyProxy::cut`]: then every open
/// connection is dropped at once (as when the database restarts) and new ones are refused
/// until [`FaultyProxy::restore`].
pub struct FaultyProxy {
    pub addr: SocketAddr,
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
        let shared = Arc::clone(&state);
        let acceptor = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut state = shared.lock().expect("proxy state");
                if state.cut {
                    // Accept-then-close, as a server that is going down does.
                    drop(client);
                    continue;
                }
                state.links.retain(|link| !link.is_finished());
                state.links.push(tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        Self { addr, state, acceptor }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        let mut state = self.state.lock().expect("proxy state");
        state.cut = true;
        for link in state.links.drain(..) {
            link.abort();
        }
    }

    pub fn restore(&self) {
        self.state.lock().expect("proxy state").cut = false;
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.cut();
        self.acceptor.abort();
    }
}
