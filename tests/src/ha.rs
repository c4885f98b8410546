//! Driving the highly available topology of `deploy/ha/cluster` from its failure tests
//! (`src/bin/ha_*.rs`): its addresses, its processes, HAProxy's view of the replicas, and
//! calls through the load balancer with a deadline.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::Channel;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/ha/cluster");

/// Each call's deadline: longer than the services' wait for a pooled connection (2 s), so a
/// database that is away is answered by the service (UNAVAILABLE), not by the client's clock.
pub const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// `deploy/ha/cluster env`: the cluster's addresses and directory.
pub struct Cluster(HashMap<String, String>);

impl Cluster {
    pub fn from_script() -> Self {
        let output = std::process::Command::new(SCRIPT).arg("env").output().expect("deploy/ha/cluster env");
        let vars = String::from_utf8(output.stdout)
            .expect("UTF-8")
            .lines()
            .filter_map(|line| line.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        Self(vars)
    }

    pub fn get(&self, key: &str) -> String {
        self.0.get(key).cloned().unwrap_or_else(|| panic!("deploy/ha/cluster env has no {key}"))
    }

    /// Runs `deploy/ha/cluster <args>`; `Err` with its output if it fails.
    pub fn script(&self, args: &[&str]) -> Result<(), String> {
        let output = std::process::Command::new(SCRIPT).args(args).output().map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "deploy/ha/cluster {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// The pid of one of the cluster's processes (`pg1`, `auth2`, `haproxy`, ...).
    pub fn pid(&self, name: &str) -> Result<String, String> {
        let file = format!("{}/run/{name}.pid", self.get("HA_DIR"));
        std::fs::read_to_string(&file).map(|p| p.trim().to_owned()).map_err(|e| format!("{file}: {e}"))
    }

    /// HAProxy's status of each server (`auth1` -> `UP`, ...), from its statistics page.
    pub async fn haproxy_servers(&self) -> HashMap<String, String> {
        let stats = self.get("HA_HAPROXY_STATS");
        let body = http_get(host_port(&stats), "/;csv").await.map(|(_, body)| body).unwrap_or_default();
        body.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(',').collect();
                let status = fields.get(17)?;
                Some((fields.get(1)?.to_string(), status.to_string()))
            })
            .collect()
    }
}

/// Sends a signal (`KILL`, `TERM`) to `pid`.
pub fn signal(pid: &str, signal: &str) -> Result<(), String> {
    let status =
        std::process::Command::new("kill").args([&format!("-{signal}"), pid]).status().map_err(|e| e.to_string())?;
    if status.success() { Ok(()) } else { Err(format!("kill -{signal} {pid} failed")) }
}

pub fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}

/// `GET path` on `addr`: (status, body), or `None` if nothing answers within 2 s.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let status = raw.split(' ').nth(1)?.parse().ok()?;
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange).await.ok().flatten()
}

/// A channel to the load balancer at `url`.
pub async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_owned()).expect("url").connect().await.expect("connect to the load balancer")
}

/// `message` with [`CALL_DEADLINE`] and, if given, a bearer token.
pub fn request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_DEADLINE);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ASCII"));
    }
    request
}
