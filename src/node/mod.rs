//! A running node: [`Node::start`] opens the data directory, the queue, the store and the
//! event log, starts the background writers and serves the API on a bound port;
//! [`Node::shutdown`] stops it gracefully.
//!
//! Start-up order matters: the event log is read first (its last seq is the queue's floor),
//! then the queue replays what a crash left, then the store migrates, and only then does the
//! node accept requests. Shutdown runs the other way: stop accepting, let the writers drain
//! the queue into the store and the event log, stop the queue.

mod shape;

use crate::cluster::{ClusterError, Member};
use crate::counters::CounterLimits;
use crate::eventlog::{EventLogFile, Rotation};
use crate::files::LogRoots;
use crate::http::server::{self as http_server, Shutdown};
use crate::http::{self, AppParts, AppState, HttpLimits};
use crate::intake::Intake;
use crate::live::{ClientLimits, LiveFeed};
use crate::pipeline::{EventLogSink, Pipeline, StoreSink, WriterWatch};
use crate::queue::{ConsumerRole, IngestQueue, QueueError, QueueLimits};
use crate::store::{DatabaseUrl, StoreError};
use crate::syslog::{self, Listeners, SyslogListen, SyslogSettings};
use crate::work::worker::Workers;
use crate::work::{Work, WorkError, WorkSettings};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::telemetry::LogFormat;

/// Everything a node needs to start; built by [`crate::config::resolve`] or by hand.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `host:port`; port 0 picks a free one (see [`Node::local_addr`]).
    pub listen: String,
    pub data_dir: PathBuf,
    pub node_name: String,
    pub database: DatabaseUrl,
    pub api_token: Option<String>,
    pub insecure: bool,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub max_body_bytes: usize,
    pub queue_limits: QueueLimits,
    pub event_log: Rotation,
    pub log_format: LogFormat,
    /// `Some` in the cluster shape.
    pub cluster: Option<ClusterConfig>,
    /// The URL others reach this node at; `None`: `http://<bound address>`.
    pub advertise: Option<String>,
    /// Events a live tail client's queue holds.
    pub tail_buffer: usize,
    /// Bytes of events a live tail client's queue holds.
    pub tail_buffer_bytes: usize,
    /// Directories whose files `GET /logs` serves (default: the event log directory).
    pub log_roots: Vec<PathBuf>,
    /// Asynchronous work (`--work-*`).
    pub work: WorkSettings,
    /// Connections, request bodies, file streams, peers and host names (`--max-connections`
    /// and friends).
    pub http: HttpLimits,
    /// A writer holding a batch this long without completing a write makes the node unready.
    pub writer_stall_timeout: Duration,
    /// How many counters there may be, and how large (`--counter-max-*`).
    pub counters: CounterLimits,
    /// Syslog listeners (`--syslog-listen`, `--syslog-allow`).
    pub syslog: SyslogSettings,
    /// Below this many free bytes on the data directory's disk, new events are refused
    /// (`--min-free-disk`); `None`: never.
    pub min_free_disk: Option<u64>,
    /// Stored events older than this are hidden from queries and removed (`--retention`);
    /// `None`: kept for ever.
    pub retention: Option<Duration>,
    /// Past this many bytes of stored events, the oldest are removed (`--max-store-bytes`);
    /// `None`: no cap.
    pub max_store_bytes: Option<u64>,
    /// What becomes of an event that arrives already past `retention` (`--late-events`).
    pub late_events: crate::intake::LateEvents,
}

/// `--retention`'s default, as VictoriaLogs'.
pub const DEFAULT_RETENTION: Duration = crate::eventlog::DEFAULT_RETENTION;

/// `--min-free-disk`'s default.
pub const DEFAULT_MIN_FREE_DISK: u64 = 100 * 1024 * 1024;

/// The default of [`NodeConfig::writer_stall_timeout`].
pub const DEFAULT_WRITER_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Where a node keeps its data unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "./logmesh-data";

/// The cluster shape's settings (`--nats` and friends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub nats_url: String,
    pub stream: String,
    pub subject: String,
    pub max_ack_pending: usize,
    pub ack_wait: Duration,
    pub replica_max_offline: Duration,
    pub member_ttl: Duration,
}

impl ClusterConfig {
    /// The settings with their defaults, on the NATS server at `nats_url`.
    pub fn new(nats_url: &str) -> ClusterConfig {
        ClusterConfig {
            nats_url: nats_url.to_owned(),
            stream: "LOGMESH_EVENTS".to_owned(),
            subject: "logmesh.events".to_owned(),
            max_ack_pending: 20_000,
            ack_wait: Duration::from_secs(30),
            replica_max_offline: Duration::from_secs(24 * 3600),
            member_ttl: Duration::from_secs(15),
        }
    }

    /// The key-value bucket members register in.
    pub fn membership_bucket(&self) -> String {
        format!("{}_members", self.stream)
    }
}

/// The defaults: `127.0.0.1:5555`, data in `./logmesh-data`, named after the host.
impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig::in_dir(Path::new(DEFAULT_DATA_DIR))
    }
}

impl NodeConfig {
    /// The defaults, with all data under `data_dir`.
    pub fn in_dir(data_dir: &Path) -> NodeConfig {
        NodeConfig {
            listen: "127.0.0.1:5555".to_owned(),
            data_dir: data_dir.to_owned(),
            node_name: default_node_name(),
            database: DatabaseUrl::Sqlite(data_dir.join("logmesh.db")),
            api_token: None,
            insecure: false,
            batch_size: 5_000,
            flush_interval: Duration::from_secs(1),
            max_body_bytes: 10 * 1024 * 1024,
            queue_limits: QueueLimits::default(),
            event_log: Rotation::default(),
            min_free_disk: Some(DEFAULT_MIN_FREE_DISK),
            retention: Some(DEFAULT_RETENTION),
            max_store_bytes: None,
            late_events: crate::intake::LateEvents::Refuse,
            log_format: LogFormat::Human,
            cluster: None,
            advertise: None,
            tail_buffer: crate::live::DEFAULT_CLIENT_BUFFER,
            tail_buffer_bytes: crate::live::DEFAULT_CLIENT_BUFFER_BYTES,
            log_roots: vec![data_dir.join("eventlog")],
            work: WorkSettings::default(),
            http: HttpLimits::default(),
            writer_stall_timeout: DEFAULT_WRITER_STALL_TIMEOUT,
            counters: CounterLimits::default(),
            syslog: SyslogSettings::default(),
        }
    }

    /// The defaults, with all data under `data_dir`, an ephemeral loopback port and the name
    /// `test-node`.
    pub fn ephemeral(data_dir: &Path) -> NodeConfig {
        NodeConfig {
            listen: "127.0.0.1:0".to_owned(),
            node_name: "test-node".to_owned(),
            ..NodeConfig::in_dir(data_dir)
        }
    }

    /// Moves the data to `data_dir`, and with it the defaults that live there (the SQLite
    /// database, the event log root) unless they were changed.
    pub fn set_data_dir(&mut self, data_dir: &Path) {
        let before = NodeConfig::in_dir(&self.data_dir);
        let after = NodeConfig::in_dir(data_dir);
        if self.database == before.database {
            self.database = after.database;
        }
        if self.log_roots == before.log_roots {
            self.log_roots = after.log_roots;
        }
        self.data_dir = after.data_dir;
    }

    /// Where the node's event log file lives.
    pub fn event_log_dir(&self) -> PathBuf {
        self.data_dir.join("eventlog")
    }

    pub fn queue_dir(&self) -> PathBuf {
        self.data_dir.join("queue")
    }

    /// Where the embedded shape keeps its work records and results.
    pub fn work_dir(&self) -> PathBuf {
        self.data_dir.join("work")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {listen}: {reason}")]
    Listen { listen: String, reason: String },
    #[error(
        "refusing to listen on {addr}, which other machines can reach, without an API token: \
         set --api-token (or LOGMESH_API_TOKEN), or --insecure to allow it anyway"
    )]
    Insecure { addr: SocketAddr },
    #[error("cannot use the data directory {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error("cannot serve files: {0}")]
    LogRoot(String),
    #[error("{0}")]
    Syslog(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("cannot start the workers: {0}")]
    Work(#[from] WorkError),
}

pub struct Node {
    addr: SocketAddr,
    stop_http: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    stop_writers: watch::Sender<bool>,
    writers: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    queue: Arc<dyn IngestQueue>,
    syslog: Listeners,
    /// Held for the node's lifetime: a second node on the same data directory is refused.
    _data_dir_lock: File,
}

impl Node {
    /// Binds `--listen` and starts the node on it.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let listener = bind(&config).await?;
        Node::start_on(config, listener).await
    }

    /// Starts the node and serves it until `stop` resolves, then shuts it down.
    pub async fn run(
        config: NodeConfig,
        listener: TcpListener,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), NodeError> {
        let node = Node::start_on(config, listener).await?;
        stop.await;
        node.shutdown().await;
        Ok(())
    }

    /// Starts the node on an already bound `listener`: opens the data directory, the event log
    /// and the shape's backends ([`shape::open`]), starts the writers and the workers, and
    /// serves the API.
    pub async fn start_on(config: NodeConfig, listener: TcpListener) -> Result<Node, NodeError> {
        syslog::check_access(&config.syslog, config.api_token.is_some(), config.insecure)
            .map_err(NodeError::Syslog)?;
        let lock = lock_data_dir(&config.data_dir)?;
        let addr = listener.local_addr().map_err(|e| NodeError::Listen {
            listen: config.listen.clone(),
            reason: e.to_string(),
        })?;

        let event_log_dir = config.event_log_dir();
        let rotation = config.event_log;
        let event_log = tokio::task::spawn_blocking(move || {
            EventLogFile::open(&event_log_dir, rotation).map_err(|e| (event_log_dir, e.to_string()))
        })
        .await
        .expect("opening the event log does not panic")
        .map_err(|(path, reason)| NodeError::DataDir { path, reason })?;

        let log_roots = LogRoots::new(&config.log_roots).map_err(|e| {
            NodeError::LogRoot(format!("{e} (set --log-root to an existing directory)"))
        })?;
        let floor = event_log.last_seq();
        let advertise = config
            .advertise
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let me = Member::new(&config.node_name, &advertise);
        let metrics = Arc::new(crate::metrics::NodeMetrics::new());
        let (stop_writers, writers_stopped) = watch::channel(false);
        let (stop_http, mut http_stopped) = watch::channel(false);
        let http_stopped_for_workers = http_stopped.clone();
        let shape::Backends {
            queue,
            work: work_backend,
            membership,
            store,
            live_source,
            shared_queue,
            expiry_lease,
        } = shape::open(&config, floor, me).await?;
        // Expiry holds the store to the retention period and the size cap; queries stop at the
        // retention period even before expiry has removed what is past it.
        let limits = crate::store::retained::Limits {
            retention: config.retention,
            max_bytes: config.max_store_bytes,
        };
        let expiry = limits.any().then(|| {
            tokio::spawn(crate::store::retained::run_expiry(
                store.clone(),
                limits,
                expiry_lease,
                metrics.clone(),
                writers_stopped.clone(),
            ))
        });
        let store: Arc<dyn crate::store::Store> = match config.retention {
            Some(retention) => Arc::new(crate::store::retained::Retained::new(store, retention)),
            None => store,
        };
        let membership = Arc::new(membership);
        let live = Arc::new(LiveFeed::new(
            ClientLimits {
                events: config.tail_buffer,
                bytes: config.tail_buffer_bytes,
            },
            live_source.is_none(),
        ));
        let live_follower = live_source.map(|source| source(live.clone(), writers_stopped.clone()));

        let store_watch = WriterWatch::new("store writer");
        let event_log_watch = WriterWatch::new("event log writer");
        let store_writer = Pipeline::new(
            queue.consumer(ConsumerRole::Store).await?,
            StoreSink {
                store: store.clone(),
            },
            config.batch_size,
            config.flush_interval,
        )
        .with_metrics(metrics.clone())
        .with_watch(store_watch.clone());
        let event_log_writer = Pipeline::new(
            queue.consumer(ConsumerRole::EventLog).await?,
            EventLogSink::new(event_log).map_err(|e| NodeError::DataDir {
                path: config.event_log_dir(),
                reason: format!("cannot start the event log writer: {e}"),
            })?,
            config.batch_size,
            config.flush_interval,
        )
        .with_metrics(metrics.clone())
        .with_watch(event_log_watch.clone());
        // A queue the cluster shares is drained by the other nodes, or by this one after a
        // restart; this node's own queue is drained before it stops.
        let (store_writer, event_log_writer) = if shared_queue {
            (
                store_writer.without_drain(),
                event_log_writer.without_drain(),
            )
        } else {
            (store_writer, event_log_writer)
        };
        let heartbeats = membership.clone();
        let heartbeats_stopped = writers_stopped.clone();
        let mut writers = vec![
            tokio::spawn(store_writer.run(writers_stopped.clone())),
            tokio::spawn(event_log_writer.run(writers_stopped)),
            tokio::spawn(async move { heartbeats.run(heartbeats_stopped).await }),
        ];
        writers.extend(live_follower);
        writers.extend(expiry);
        if config.work.concurrency == 0 {
            tracing::warn!(
                "--work-concurrency is 0: this node accepts jobs but runs none; they wait for \
                 another node's workers{}.",
                if !shared_queue {
                    " (embedded, there is none: they wait until a restart with workers)"
                } else {
                    ""
                }
            );
        }
        // Workers stop with the HTTP server, before the writers drain: a job cut short is
        // taken again (by another node, or by this one after a restart) once its lease ends.
        let workers = Workers::new(
            work_backend.clone(),
            store.clone(),
            &config.node_name,
            config.work,
        )
        .start(http_stopped_for_workers);

        let work = Arc::new(Work::new(work_backend, &config.node_name, config.work));
        let watermark = config
            .min_free_disk
            .map(|min_free| crate::disk::Watermark::new(&config.data_dir, min_free));
        let intake = Arc::new(Intake::new(
            queue.clone(),
            live.clone(),
            metrics.clone(),
            watermark,
            config.retention,
            config.late_events,
        ));
        // Syslog listeners stop with the HTTP server, before the writers drain.
        let syslog = syslog::start(
            &config.syslog,
            intake.clone(),
            &config.node_name,
            http_stopped.clone(),
        )
        .await
        .map_err(NodeError::Syslog)?;
        let state = AppState::new(AppParts {
            node_name: config.node_name.clone(),
            intake,
            queue: queue.clone(),
            store,
            max_body_bytes: config.max_body_bytes,
            api_token: config.api_token.clone(),
            membership,
            live,
            metrics,
            log_roots,
            work,
            limits: http_limits(&config.http, &advertise, addr.ip().is_loopback()),
            writers: vec![store_watch, event_log_watch],
            writer_stall_timeout: config.writer_stall_timeout,
            loopback_bind: addr.ip().is_loopback(),
            shutdown: Shutdown::new(http_stopped.clone()),
            data_dir: config.data_dir.clone(),
            event_log_dir: config.event_log_dir(),
        });
        let server_limits = config.http.server;
        let server = tokio::spawn(async move {
            let stop = async move {
                let _ = http_stopped.wait_for(|stop| *stop).await;
            };
            http_server::serve(listener, http::app(state), server_limits, stop).await
        });
        tracing::info!(
            node = %config.node_name,
            %addr,
            data_dir = %config.data_dir.display(),
            "Node is serving."
        );
        Ok(Node {
            addr,
            stop_http,
            server,
            stop_writers,
            writers,
            workers,
            queue,
            syslog,
            _data_dir_lock: lock,
        })
    }

    /// The syslog listeners, with the real ports where 0 was asked for.
    pub fn syslog_listeners(&self) -> &[SyslogListen] {
        &self.syslog.bound
    }

    /// The address the node listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<local_addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests, finishes those in flight, writes everything the queue holds
    /// to the store and the event log, and stops.
    pub async fn shutdown(self) {
        let _ = self.stop_http.send(true);
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "The HTTP server stopped with an error.")
            }
            Err(error) => tracing::warn!(error = %error, "The HTTP server task failed."),
        }
        for worker in self.workers {
            let _ = worker.await;
        }
        self.syslog.join().await;
        tracing::info!(
            events = self.queue.depth().events,
            "Stopped accepting requests; flushing the ingest queue."
        );
        let _ = self.stop_writers.send(true);
        for writer in self.writers {
            let _ = writer.await;
        }
        self.queue.close().await;
        tracing::info!("Node stopped.");
    }
}

/// The directory cluster results are written to before they go to the result store; emptied
/// at start-up (what is there is left from a run that died).
fn staging_dir(work_dir: &Path) -> Result<PathBuf, NodeError> {
    let dir = work_dir.join("staging");
    let failed = |e: std::io::Error| NodeError::DataDir {
        path: dir.clone(),
        reason: e.to_string(),
    };
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(failed(error)),
    }
    std::fs::create_dir_all(&dir).map_err(failed)?;
    Ok(dir)
}

/// The HTTP limits with the node's own advertised host name allowed: other members and
/// clients reach the node by it, so whenever `Host` is checked it must pass.
fn http_limits(limits: &HttpLimits, advertise: &str, loopback_bind: bool) -> HttpLimits {
    let mut limits = limits.clone();
    let checked = loopback_bind || !limits.allowed_hosts.is_empty();
    let host = advertise
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(rest))
        .map(|authority| match authority.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => authority,
        })
        .map(|name| name.trim_start_matches('[').trim_end_matches(']'));
    if checked && let Some(host) = host.filter(|host| !host.is_empty()) {
        limits.allowed_hosts.push(host.to_owned());
    }
    limits
}

/// The host name, when it is a valid node name; else `logmesh`.
fn default_node_name() -> String {
    hostname::get()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| crate::event::parse::check_name(name).is_ok())
        .unwrap_or_else(|| "logmesh".to_owned())
}

fn lock_data_dir(dir: &Path) -> Result<File, NodeError> {
    let failed = |reason: String| NodeError::DataDir {
        path: dir.to_owned(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    let lock = File::create(dir.join("LOCK")).map_err(|e| failed(e.to_string()))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(failed(
            "another logmesh process is using it (its LOCK file is held)".into(),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e.to_string())),
    }
}

/// Binds `--listen`, refusing a non-loopback address without a token (unless `--insecure`).
pub async fn bind(config: &NodeConfig) -> Result<TcpListener, NodeError> {
    let failed = |reason: String| NodeError::Listen {
        listen: config.listen.clone(),
        reason,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&config.listen)
        .await
        .map_err(|e| failed(e.to_string()))?
        .collect();
    let addr = *addrs
        .first()
        .ok_or_else(|| failed("the name resolves to no address".into()))?;
    if !addr.ip().is_loopback() && config.api_token.is_none() && !config.insecure {
        return Err(NodeError::Insecure { addr });
    }
    if !addr.ip().is_loopback() && config.api_token.is_none() {
        tracing::warn!(%addr, "Listening on a non-loopback address without an API token (--insecure).");
    }
    TcpListener::bind(addr)
        .await
        .map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_host_is_allowed_whenever_hosts_are_checked() {
        let none = HttpLimits::default();
        assert_eq!(
            http_limits(&none, "http://logs.internal:5555", true).allowed_hosts,
            ["logs.internal"]
        );
        assert_eq!(
            http_limits(&none, "https://[fd00::1]:443/", true).allowed_hosts,
            ["fd00::1"]
        );
        // A public bind without a list answers to any name: nothing to add.
        assert!(
            http_limits(&none, "http://10.0.0.2:5555", false)
                .allowed_hosts
                .is_empty()
        );
        let listed = HttpLimits {
            allowed_hosts: vec!["logs.example.com".into()],
            ..HttpLimits::default()
        };
        assert_eq!(
            http_limits(&listed, "http://10.0.0.2:5555", false).allowed_hosts,
            ["logs.example.com", "10.0.0.2"]
        );
    }
}
