//! Live sync at scale (WatchTasks): what idle streams cost a task-service, how fast a change
//! reaches its watcher while writers run flat out, what the watchers cost those writers, and
//! how fast a change made through one replica reaches a watcher on another.
//!
//! The watchers are users of their own, with access tokens minted with the run's secret:
//! signing up 10,000 users would spend minutes on argon2id and measure nothing of this.
//! They run on a task-service of their own, started fresh, so its resident set before the
//! streams open is the baseline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use todo_contract::task::v1 as task_pb;
use todo_contract::task::v1::task_service_client::TaskServiceClient;
use todo_contract::task::v1::watch_tasks_response::EventType;
use todo_shared::config::TokenConfig;
use todo_shared::token::{JwtSecret, TokenKeys};
use tokio::task::JoinSet;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::fixture::{authed, connect, new_task};
use crate::procs::CpuUsage;
use crate::report::{Delivery, IdleStreams, WatchReport};
use crate::{Result, procs};

use super::Harness;

/// Idle streams held open on one task-service.
pub const IDLE_STREAMS: usize = 10_000;
/// Streams per HTTP/2 connection, below the services' default limit of 128: the harness's
/// own process would run out of file descriptors with one connection per stream.
const STREAMS_PER_CONNECTION: usize = 100;
/// Watchers whose users receive the writers' changes.
pub const WATCHERS: usize = 1_000;
/// Watchers on the second replica, for the cross-replica delivery.
pub const CROSS_WATCHERS: usize = 100;
/// CreateTask calls in flight while watchers are attached (as the matrix's middle level).
pub const WRITERS: usize = 16;
/// The idle window spans one bookmark interval (30 s by default), so every stream's
/// heartbeat (and the log read before it) falls inside it once.
const IDLE_WINDOW: Duration = Duration::from_secs(31);
/// An acknowledged change not delivered this long after the window is counted as missed.
const DELIVERY_GRACE: Duration = Duration::from_secs(2);

/// A watcher: `Bearer <token>` of a user of its own.
struct Identity {
    bearer: AsciiMetadataValue,
}

fn identities(secret: &str, n: usize) -> Result<Vec<Identity>> {
    let secret = JwtSecret::new(secret.as_bytes().to_vec()).map_err(|e| e.to_string())?;
    let keys = TokenKeys::new(&secret, TokenConfig::DEFAULT_ISSUER, TokenConfig::DEFAULT_AUDIENCE)?;
    (0..n)
        .map(|i| {
            let user = uuid::Uuid::new_v4();
            let email = format!("watcher-{i}@bench.example.com");
            let token = keys.mint_for_session(user, &email, uuid::Uuid::new_v4(), Duration::from_secs(3600))?.token;
            Ok(Identity { bearer: format!("Bearer {token}").parse()? })
        })
        .collect()
}

/// Opens a stream from the beginning and reads up to CURRENT.
async fn open(channel: Channel, bearer: AsciiMetadataValue) -> Result<tonic::Streaming<task_pb::WatchTasksResponse>> {
    let mut client = TaskServiceClient::new(channel);
    let mut stream = client.watch_tasks(authed(task_pb::WatchTasksRequest::default(), &bearer)).await?.into_inner();
    loop {
        let event = stream.message().await?.ok_or("the stream ended before CURRENT")?;
        if event.r#type == EventType::Current as i32 {
            return Ok(stream);
        }
    }
}

/// Opens one stream per identity, spread over `channels`, and keeps reading each on a task of
/// its own; `on_event` sees every event after CURRENT. Returns once every stream is current.
async fn attach(
    channels: &[Channel],
    who: &[Identity],
    on_event: Arc<dyn Fn(task_pb::WatchTasksResponse) + Send + Sync>,
) -> Result<JoinSet<()>> {
    let mut opening = JoinSet::new();
    for (c, channel) in channels.iter().enumerate() {
        let mine: Vec<AsciiMetadataValue> =
            who.iter().skip(c).step_by(channels.len()).map(|w| w.bearer.clone()).collect();
        let channel = channel.clone();
        opening.spawn(async move {
            let mut streams = Vec::with_capacity(mine.len());
            for bearer in mine {
                streams.push(open(channel.clone(), bearer).await?);
            }
            Ok::<_, crate::Error>(streams)
        });
    }
    let mut readers = JoinSet::new();
    while let Some(opened) = opening.join_next().await {
        for mut stream in opened?? {
            let on_event = on_event.clone();
            readers.spawn(async move {
                while let Ok(Some(event)) = stream.message().await {
                    on_event(event);
                }
            });
        }
    }
    Ok(readers)
}

async fn channels(addr: std::net::SocketAddr, n: usize) -> Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(connect(addr).await?);
    }
    Ok(out)
}

/// When each change was acknowledged to its writer and received by its watcher: whichever
/// comes second completes a sample. Changes acknowledged before `from` (the warm-up) are
/// tracked for `missed` but not sampled.
#[derive(Default)]
struct Deliveries {
    pending: Mutex<HashMap<String, Stamp>>,
    latencies_ms: Mutex<Vec<f64>>,
    from: Mutex<Option<Instant>>,
}

enum Stamp {
    Acknowledged(Instant),
    Received,
}

impl Deliveries {
    fn acknowledged(&self, id: String) {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.remove(&id) {
            // The watcher had it before the writer had its answer.
            Some(Stamp::Received) => self.sample(now, 0.0),
            _ => {
                pending.insert(id, Stamp::Acknowledged(now));
            }
        }
    }

    fn received(&self, event: &task_pb::WatchTasksResponse) {
        if event.r#type != EventType::Upserted as i32 {
            return;
        }
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.remove(&event.task_id) {
            Some(Stamp::Acknowledged(at)) => self.sample(at, now.duration_since(at).as_secs_f64() * 1e3),
            _ => {
                pending.insert(event.task_id.clone(), Stamp::Received);
            }
        }
    }

    fn sample(&self, acknowledged: Instant, ms: f64) {
        let from = *self.from.lock().unwrap_or_else(|e| e.into_inner());
        if from.is_some_and(|from| acknowledged >= from) {
            self.latencies_ms.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
        }
    }

    /// Acknowledged changes no watcher has received.
    fn missed(&self) -> usize {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.values().filter(|s| matches!(s, Stamp::Acknowledged(_))).count()
    }
}

/// One write window: CreateTask calls answered OK per second, failures, and the CPU the
/// watched processes, PostgreSQL and the harness used.
struct Window {
    rate: f64,
    failed: u64,
    cpu: CpuUsage,
}

/// [`WRITERS`] CreateTask loops over `users`' tokens for `warmup` + `window`.
async fn write(
    channel: Channel,
    users: Arc<Vec<AsciiMetadataValue>>,
    warmup: Duration,
    window: Duration,
    deliveries: Option<Arc<Deliveries>>,
    watched: Vec<(String, u32)>,
) -> Window {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + warmup;
    let end = start + window;
    if let Some(d) = &deliveries {
        *d.from.lock().unwrap_or_else(|e| e.into_inner()) = Some(start);
    }
    let probe = tokio::spawn(async move {
        tokio::time::sleep_until(start.into()).await;
        let before = procs::cpu_snapshot(&watched);
        tokio::time::sleep_until(end.into()).await;
        procs::cpu_usage(&before, &procs::cpu_snapshot(&watched), &watched)
    });
    let mut set = JoinSet::new();
    for w in 0..WRITERS {
        let (channel, users, ok, failed, deliveries) =
            (channel.clone(), users.clone(), ok.clone(), failed.clone(), deliveries.clone());
        set.spawn(async move {
            let mut client = TaskServiceClient::new(channel);
            let mut n = w;
            while Instant::now() < end {
                let bearer = &users[n % users.len()];
                n += WRITERS;
                match client.create_task(authed(new_task(format!("Watched task {n}")), bearer)).await {
                    Ok(created) => {
                        if let (Some(d), Some(task)) = (&deliveries, created.into_inner().task) {
                            d.acknowledged(task.id);
                        }
                        if Instant::now() >= start {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    Window {
        rate: ok.load(Ordering::Relaxed) as f64 / window.as_secs_f64(),
        failed: failed.load(Ordering::Relaxed),
        cpu: probe.await.unwrap_or_default(),
    }
}

impl Harness {
    pub(super) async fn watch(&mut self, task_bin: &std::path::Path, auth: usize) -> Result<WatchReport> {
        let feed = [("AUTH_SERVICE_URL", self.url_of(auth))];
        let task = self.start("task-watch", task_bin, &[], &feed)?;
        self.procs[task].wait_serving(Duration::from_secs(30)).await?;
        let addr = self.procs[task].addr;
        let who = identities(&self.secret, IDLE_STREAMS)?;

        // Idle streams: memory and CPU.
        let connections = IDLE_STREAMS.div_ceil(STREAMS_PER_CONNECTION);
        let links = channels(addr, connections).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pid = self.procs[task].pid();
        let rss_before = procs::status_bytes(pid, "VmRSS:");
        eprintln!("{} watch: opening {IDLE_STREAMS} idle streams over {connections} connections", self.elapsed());
        let bookmarks = Arc::new(AtomicU64::new(0));
        let counter = bookmarks.clone();
        let readers = attach(
            &links,
            &who,
            Arc::new(move |event| {
                if event.r#type == EventType::Bookmark as i32 {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }),
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_after = procs::status_bytes(pid, "VmRSS:");
        eprintln!("{} watch: {IDLE_STREAMS} streams open; {} s idle", self.elapsed(), IDLE_WINDOW.as_secs());
        let watched = vec![("task".to_owned(), pid)];
        let before = procs::cpu_snapshot(&watched);
        bookmarks.store(0, Ordering::Relaxed);
        tokio::time::sleep(IDLE_WINDOW).await;
        let cpu = procs::cpu_usage(&before, &procs::cpu_snapshot(&watched), &watched);
        let idle = IdleStreams {
            streams: IDLE_STREAMS,
            connections,
            rss_before,
            rss_after,
            cpu,
            window: IDLE_WINDOW,
            bookmarks: bookmarks.load(Ordering::Relaxed),
        };
        drop(readers);
        drop(links);

        // 1,000 watchers while 16 writers create tasks for their users, and the same writers
        // with no watchers, alternating (none, with, with, none, none, with) against drift.
        let watchers = &who[..WATCHERS];
        let users: Arc<Vec<AsciiMetadataValue>> = Arc::new(watchers.iter().map(|w| w.bearer.clone()).collect());
        let writer = connect(addr).await?;
        let links = channels(addr, WATCHERS.div_ceil(STREAMS_PER_CONNECTION)).await?;
        let deliveries = Arc::new(Deliveries::default());
        let mut delivery = Delivery { watchers: WATCHERS, writers: WRITERS, replicas: 1, ..Delivery::default() };
        let timing = self.timing();
        for attached in [false, true, true, false, false, true] {
            eprintln!(
                "{} watch: CreateTask at {WRITERS} in flight, {}",
                self.elapsed(),
                if attached { "1,000 watchers attached" } else { "no watchers" }
            );
            let readers = if attached {
                let d = deliveries.clone();
                Some(attach(&links, watchers, Arc::new(move |event| d.received(&event))).await?)
            } else {
                None
            };
            let done = write(
                writer.clone(),
                users.clone(),
                timing.warmup,
                timing.window,
                attached.then(|| deliveries.clone()),
                vec![("task".to_owned(), pid)],
            )
            .await;
            if attached {
                tokio::time::sleep(DELIVERY_GRACE).await;
                delivery.with_watchers.push((done.rate, done.cpu));
            } else {
                delivery.without_watchers.push((done.rate, done.cpu));
            }
            delivery.failed += done.failed;
            drop(readers);
        }
        delivery.missed = deliveries.missed();
        delivery.latencies_ms = std::mem::take(&mut *deliveries.latencies_ms.lock().unwrap_or_else(|e| e.into_inner()));

        // A second replica on the same database: changes written through the first, watched
        // on the second (PostgreSQL LISTEN/NOTIFY wakes it).
        let second = self.start("task-watch-2", task_bin, &[], &feed)?;
        self.procs[second].wait_serving(Duration::from_secs(30)).await?;
        let remote = &who[WATCHERS..WATCHERS + CROSS_WATCHERS];
        let remote_users: Arc<Vec<AsciiMetadataValue>> = Arc::new(remote.iter().map(|w| w.bearer.clone()).collect());
        let remote_links = channels(self.procs[second].addr, 1).await?;
        let crossing = Arc::new(Deliveries::default());
        let d = crossing.clone();
        eprintln!("{} watch: {CROSS_WATCHERS} watchers on a second replica", self.elapsed());
        let readers = attach(&remote_links, remote, Arc::new(move |event| d.received(&event))).await?;
        let remote_pid = self.procs[second].pid();
        let done = write(
            writer.clone(),
            remote_users,
            timing.warmup,
            timing.window,
            Some(crossing.clone()),
            vec![("task".to_owned(), pid), ("task-2".to_owned(), remote_pid)],
        )
        .await;
        tokio::time::sleep(DELIVERY_GRACE).await;
        drop(readers);
        let cross = Delivery {
            watchers: CROSS_WATCHERS,
            writers: WRITERS,
            replicas: 2,
            with_watchers: vec![(done.rate, done.cpu)],
            without_watchers: Vec::new(),
            failed: done.failed,
            missed: crossing.missed(),
            latencies_ms: std::mem::take(&mut *crossing.latencies_ms.lock().unwrap_or_else(|e| e.into_inner())),
        };
        self.stop(second);
        self.stop(task);
        Ok(WatchReport { idle, delivery, cross })
    }
}
