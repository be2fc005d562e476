//! `serve` configuration: flags, then `LOGMESH_*` environment variables (plus the log
//! monitoring seed's `BATCHSIZE` and `FLUSHINTERVAL`), then an optional TOML file, then
//! defaults. The first source that sets a value wins; every value is checked here, so a bad
//! one is a start-up error that names its source, never a panic later.

use crate::counters::CounterLimits;
use crate::event::parse::check_name;
use crate::eventlog::Rotation;
use crate::http::HttpLimits;
use crate::http::body::BodyPace;
use crate::http::server::ServerLimits;
use crate::node::{ClusterConfig, LogFormat, NodeConfig};
use crate::queue::QueueLimits;
use crate::store::{DatabaseUrl, redact_url};
use crate::work::WorkSettings;
use clap::Args;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:5555";
pub const DEFAULT_DATA_DIR: &str = "./logmesh-data";
pub const DEFAULT_BATCH_SIZE: usize = 5_000;
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
pub const DEFAULT_QUEUE_MAX_EVENTS: usize = 250_000;
pub const DEFAULT_QUEUE_MAX_BYTES: usize = 128 * 1024 * 1024;
pub const DEFAULT_EVENT_LOG_MAX_BYTES: u64 = 100 * 1024 * 1024;
pub const DEFAULT_EVENT_LOG_KEEP: u32 = 5;
pub const DEFAULT_NATS_STREAM: &str = "LOGMESH_EVENTS";
pub const DEFAULT_NATS_SUBJECT: &str = "logmesh.events";
pub const DEFAULT_NATS_MAX_ACK_PENDING: usize = 20_000;
pub const DEFAULT_NATS_ACK_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_REPLICA_MAX_OFFLINE: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_MEMBER_TTL: Duration = Duration::from_secs(15);

/// Flags of `logmesh serve`. Each is optional here so that the environment, the file and the
/// defaults can fill in what the command line leaves out.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on [env: LOGMESH_LISTEN] [default: 127.0.0.1:5555]
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Directory for the queue, the SQLite database and the event log [env: LOGMESH_DATA_DIR]
    /// [default: ./logmesh-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// This node's name in the cluster [env: LOGMESH_NODE_NAME] [default: the host name]
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Where events are stored: sqlite://PATH, postgres://USER:PASSWORD@HOST/DB or
    /// mysql://USER:PASSWORD@HOST/DB (mariadb:// too) [env: LOGMESH_DATABASE]
    /// [default: sqlite://<data-dir>/logmesh.db]
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// Require `Authorization: Bearer TOKEN` on every request [env: LOGMESH_API_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    pub api_token: Option<String>,
    /// Allow listening on a non-loopback address without an API token [env: LOGMESH_INSECURE]
    #[arg(long)]
    pub insecure: bool,
    /// Events per store batch [env: LOGMESH_BATCH_SIZE or BATCHSIZE] [default: 5000]
    #[arg(long, value_name = "N")]
    pub batch_size: Option<String>,
    /// Longest wait before a partial batch is stored, e.g. 500ms, 20s, 1m; a bare number is
    /// seconds [env: LOGMESH_FLUSH_INTERVAL or FLUSHINTERVAL] [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub flush_interval: Option<String>,
    /// Largest request body, e.g. 10MiB [env: LOGMESH_MAX_BODY_BYTES] [default: 10MiB]
    #[arg(long, value_name = "SIZE")]
    pub max_body_bytes: Option<String>,
    /// Events the ingest queue holds before answering 503 [env: LOGMESH_QUEUE_MAX_EVENTS]
    /// [default: 250000]
    #[arg(long, value_name = "N")]
    pub queue_max_events: Option<String>,
    /// Bytes the ingest queue holds before answering 503 [env: LOGMESH_QUEUE_MAX_BYTES]
    /// [default: 128MiB]
    #[arg(long, value_name = "SIZE")]
    pub queue_max_bytes: Option<String>,
    /// Size at which the event log file rotates [env: LOGMESH_EVENT_LOG_MAX_BYTES]
    /// [default: 100MiB]
    #[arg(long, value_name = "SIZE")]
    pub event_log_max_bytes: Option<String>,
    /// Rotated event log files kept [env: LOGMESH_EVENT_LOG_KEEP] [default: 5]
    #[arg(long, value_name = "N")]
    pub event_log_keep: Option<String>,
    /// Run as a cluster node: NATS server with JetStream, e.g. nats://127.0.0.1:4222; needs a
    /// postgres:// or mysql:// --database [env: LOGMESH_NATS]
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// JetStream stream carrying events; also prefixes the membership bucket and consumers
    /// [env: LOGMESH_NATS_STREAM] [default: LOGMESH_EVENTS]
    #[arg(long, value_name = "NAME")]
    pub nats_stream: Option<String>,
    /// Subject events are published on [env: LOGMESH_NATS_SUBJECT] [default: logmesh.events]
    #[arg(long, value_name = "SUBJECT")]
    pub nats_subject: Option<String>,
    /// Events fetched by store writers but not yet stored, cluster-wide
    /// [env: LOGMESH_NATS_MAX_ACK_PENDING] [default: 20000]
    #[arg(long, value_name = "N")]
    pub nats_max_ack_pending: Option<String>,
    /// How long a fetched batch may stay unstored before another node gets it
    /// [env: LOGMESH_NATS_ACK_WAIT] [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub nats_ack_wait: Option<String>,
    /// How long a node may be down and still catch up its event log when it returns
    /// [env: LOGMESH_REPLICA_MAX_OFFLINE] [default: 24h]
    #[arg(long, value_name = "DURATION")]
    pub replica_max_offline: Option<String>,
    /// A node that stops heart-beating leaves the membership after this long
    /// [env: LOGMESH_MEMBER_TTL] [default: 15s]
    #[arg(long, value_name = "DURATION")]
    pub member_ttl: Option<String>,
    /// The URL other nodes and clients reach this node's API at
    /// [env: LOGMESH_ADVERTISE] [default: http://<listen address>]
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// Events a live tail client (GET /api/v1/tail) may fall behind before it is dropped
    /// [env: LOGMESH_TAIL_BUFFER] [default: 4096]
    #[arg(long, value_name = "N")]
    pub tail_buffer: Option<String>,
    /// A directory whose files `GET /logs` may serve; repeatable [env: LOGMESH_LOG_ROOT,
    /// colon-separated] [default: <data-dir>/eventlog]
    #[arg(long = "log-root", value_name = "DIR")]
    pub log_root: Vec<String>,
    /// Jobs (POST /api/v1/work) this node runs at once; 0: it accepts jobs but runs none
    /// [env: LOGMESH_WORK_CONCURRENCY] [default: 2]
    #[arg(long, value_name = "N")]
    pub work_concurrency: Option<String>,
    /// Jobs that may wait to be run (in the cluster: on all nodes together) before submissions
    /// get 503 [env: LOGMESH_WORK_MAX_QUEUED] [default: 100000]
    #[arg(long, value_name = "N")]
    pub work_max_queued: Option<String>,
    /// How long a job's status and result are kept after its last change
    /// [env: LOGMESH_WORK_TTL] [default: 10m]
    #[arg(long, value_name = "DURATION")]
    pub work_ttl: Option<String>,
    /// How long a worker may go silent before its job is given to another worker
    /// [env: LOGMESH_WORK_LEASE] [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub work_lease: Option<String>,
    /// Attempts a job gets before it fails for good [env: LOGMESH_WORK_MAX_ATTEMPTS] [default: 5]
    #[arg(long, value_name = "N")]
    pub work_max_attempts: Option<String>,
    /// Wait before a failed job's second attempt, doubling after each further failure (at most
    /// 1m) [env: LOGMESH_WORK_RETRY_BACKOFF] [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub work_retry_backoff: Option<String>,
    /// Largest result one job may keep, e.g. 100MiB [env: LOGMESH_WORK_MAX_RESULT_BYTES]
    /// [default: 1GiB]
    #[arg(long, value_name = "SIZE")]
    pub work_max_result_bytes: Option<String>,
    /// Bytes the results kept may hold together (in a cluster: on all nodes together); past
    /// it jobs fail [env: LOGMESH_WORK_MAX_RESULTS_BYTES] [default: 4GiB]
    #[arg(long, value_name = "SIZE")]
    pub work_max_results_bytes: Option<String>,
    /// Connections served at once; one more gets 503 [env: LOGMESH_MAX_CONNECTIONS]
    /// [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<String>,
    /// Time a client has to send a request's head (and an idle kept-alive connection lives)
    /// [env: LOGMESH_HEADER_READ_TIMEOUT] [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub header_read_timeout: Option<String>,
    /// Time a request body has before --body-min-rate applies; one second more per
    /// --body-min-rate bytes received, else 408 [env: LOGMESH_BODY_READ_TIMEOUT] [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub body_read_timeout: Option<String>,
    /// Bytes per second a request body must keep up, e.g. 8KiB [env: LOGMESH_BODY_MIN_RATE]
    /// [default: 8KiB]
    #[arg(long, value_name = "SIZE")]
    pub body_min_rate: Option<String>,
    /// GET /logs streams (follow included) served at once; more get 503
    /// [env: LOGMESH_MAX_FILE_STREAMS] [default: 64]
    #[arg(long, value_name = "N")]
    pub max_file_streams: Option<String>,
    /// GET /api/v1/tail clients served at once; more get 503 [env: LOGMESH_MAX_LIVE_CLIENTS]
    /// [default: 256]
    #[arg(long, value_name = "N")]
    pub max_live_clients: Option<String>,
    /// How long a response may wait for the client to take more of it before the connection
    /// is closed [env: LOGMESH_SEND_TIMEOUT] [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub send_timeout: Option<String>,
    /// How long another member may take to answer a forwarded request
    /// [env: LOGMESH_PEER_TIMEOUT] [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub peer_timeout: Option<String>,
    /// Host names the node answers to besides loopback ones (comma-separated; `.example.com`
    /// for a domain, `*` for any); on a loopback address only loopback names are served
    /// otherwise [env: LOGMESH_ALLOWED_HOSTS] [default: loopback names on a loopback address,
    /// any name otherwise]
    #[arg(long, value_name = "HOSTS")]
    pub allowed_hosts: Option<String>,
    /// How long requests in flight get to finish when the node stops
    /// [env: LOGMESH_SHUTDOWN_GRACE] [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub shutdown_grace: Option<String>,
    /// Bytes of events a live tail client's queue holds [env: LOGMESH_TAIL_BUFFER_BYTES]
    /// [default: 4MiB]
    #[arg(long, value_name = "SIZE")]
    pub tail_buffer_bytes: Option<String>,
    /// A writer holding events this long without writing any makes GET /readyz fail
    /// [env: LOGMESH_WRITER_STALL_TIMEOUT] [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub writer_stall_timeout: Option<String>,
    /// Counters (name and label set) in all [env: LOGMESH_COUNTER_MAX_SERIES]
    /// [default: 10000]
    #[arg(long, value_name = "N")]
    pub counter_max_series: Option<String>,
    /// Label sets one counter name may have [env: LOGMESH_COUNTER_MAX_SERIES_PER_METRIC]
    /// [default: 1000]
    #[arg(long, value_name = "N")]
    pub counter_max_series_per_metric: Option<String>,
    /// Labels one counter may have [env: LOGMESH_COUNTER_MAX_LABELS] [default: 16]
    #[arg(long, value_name = "N")]
    pub counter_max_labels: Option<String>,
    /// Bytes of label names and values one counter may have, together
    /// [env: LOGMESH_COUNTER_MAX_LABEL_BYTES] [default: 1KiB]
    #[arg(long, value_name = "SIZE")]
    pub counter_max_label_bytes: Option<String>,
    /// Format of logmesh's own logs: human or json [env: LOGMESH_LOG_FORMAT] [default: human]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// TOML file with any of these settings, keys spelled like the flags (batch-size = 5000)
    /// [env: LOGMESH_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Where a setting's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File(PathBuf, &'static str),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(name) => write!(f, "--{name}"),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::File(path, key) => write!(f, "`{key}` in {}", path.display()),
            Source::Default => f.write_str("the default"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid value {value:?} for {origin}: {reason}")]
    Invalid {
        value: String,
        origin: Source,
        reason: String,
    },
    #[error("cannot read the config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Conflict(String),
}

/// Every setting: its flag/file key and the environment variables that may set it.
const SETTINGS: &[(&str, &[&str])] = &[
    ("listen", &["LOGMESH_LISTEN"]),
    ("data-dir", &["LOGMESH_DATA_DIR"]),
    ("node-name", &["LOGMESH_NODE_NAME"]),
    ("database", &["LOGMESH_DATABASE"]),
    ("api-token", &["LOGMESH_API_TOKEN"]),
    ("insecure", &["LOGMESH_INSECURE"]),
    ("batch-size", &["LOGMESH_BATCH_SIZE", "BATCHSIZE"]),
    (
        "flush-interval",
        &["LOGMESH_FLUSH_INTERVAL", "FLUSHINTERVAL"],
    ),
    ("max-body-bytes", &["LOGMESH_MAX_BODY_BYTES"]),
    ("queue-max-events", &["LOGMESH_QUEUE_MAX_EVENTS"]),
    ("queue-max-bytes", &["LOGMESH_QUEUE_MAX_BYTES"]),
    ("event-log-max-bytes", &["LOGMESH_EVENT_LOG_MAX_BYTES"]),
    ("event-log-keep", &["LOGMESH_EVENT_LOG_KEEP"]),
    ("log-format", &["LOGMESH_LOG_FORMAT"]),
    ("nats", &["LOGMESH_NATS"]),
    ("nats-stream", &["LOGMESH_NATS_STREAM"]),
    ("nats-subject", &["LOGMESH_NATS_SUBJECT"]),
    ("nats-max-ack-pending", &["LOGMESH_NATS_MAX_ACK_PENDING"]),
    ("nats-ack-wait", &["LOGMESH_NATS_ACK_WAIT"]),
    ("replica-max-offline", &["LOGMESH_REPLICA_MAX_OFFLINE"]),
    ("member-ttl", &["LOGMESH_MEMBER_TTL"]),
    ("advertise", &["LOGMESH_ADVERTISE"]),
    ("tail-buffer", &["LOGMESH_TAIL_BUFFER"]),
    ("log-root", &["LOGMESH_LOG_ROOT"]),
    ("work-concurrency", &["LOGMESH_WORK_CONCURRENCY"]),
    ("work-max-queued", &["LOGMESH_WORK_MAX_QUEUED"]),
    ("work-ttl", &["LOGMESH_WORK_TTL"]),
    ("work-lease", &["LOGMESH_WORK_LEASE"]),
    ("work-max-attempts", &["LOGMESH_WORK_MAX_ATTEMPTS"]),
    ("work-retry-backoff", &["LOGMESH_WORK_RETRY_BACKOFF"]),
    ("work-max-result-bytes", &["LOGMESH_WORK_MAX_RESULT_BYTES"]),
    (
        "work-max-results-bytes",
        &["LOGMESH_WORK_MAX_RESULTS_BYTES"],
    ),
    ("max-connections", &["LOGMESH_MAX_CONNECTIONS"]),
    ("header-read-timeout", &["LOGMESH_HEADER_READ_TIMEOUT"]),
    ("body-read-timeout", &["LOGMESH_BODY_READ_TIMEOUT"]),
    ("body-min-rate", &["LOGMESH_BODY_MIN_RATE"]),
    ("max-file-streams", &["LOGMESH_MAX_FILE_STREAMS"]),
    ("peer-timeout", &["LOGMESH_PEER_TIMEOUT"]),
    ("max-live-clients", &["LOGMESH_MAX_LIVE_CLIENTS"]),
    ("send-timeout", &["LOGMESH_SEND_TIMEOUT"]),
    ("allowed-hosts", &["LOGMESH_ALLOWED_HOSTS"]),
    ("shutdown-grace", &["LOGMESH_SHUTDOWN_GRACE"]),
    ("tail-buffer-bytes", &["LOGMESH_TAIL_BUFFER_BYTES"]),
    ("writer-stall-timeout", &["LOGMESH_WRITER_STALL_TIMEOUT"]),
    ("counter-max-series", &["LOGMESH_COUNTER_MAX_SERIES"]),
    (
        "counter-max-series-per-metric",
        &["LOGMESH_COUNTER_MAX_SERIES_PER_METRIC"],
    ),
    ("counter-max-labels", &["LOGMESH_COUNTER_MAX_LABELS"]),
    (
        "counter-max-label-bytes",
        &["LOGMESH_COUNTER_MAX_LABEL_BYTES"],
    ),
];

struct Resolver<'a> {
    flags: BTreeMap<&'static str, String>,
    env: &'a dyn Fn(&str) -> Option<String>,
    file: Option<(PathBuf, BTreeMap<String, String>)>,
}

impl Resolver<'_> {
    /// The raw value of `key` from the first source that sets it.
    fn raw(&self, key: &'static str) -> Option<(String, Source)> {
        if let Some(value) = self.flags.get(key) {
            return Some((value.clone(), Source::Flag(key)));
        }
        let (_, envs) = SETTINGS
            .iter()
            .find(|(name, _)| *name == key)
            .expect("every key is in SETTINGS");
        for name in *envs {
            if let Some(value) = (self.env)(name).filter(|v| !v.is_empty()) {
                return Some((value, Source::Env(name)));
            }
        }
        let (path, table) = self.file.as_ref()?;
        table
            .get(key)
            .map(|value| (value.clone(), Source::File(path.clone(), key)))
    }

    /// Parses `key` with `parse`, or returns `default` when no source sets it.
    fn get<T>(
        &self,
        key: &'static str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some((value, origin)) => parse(&value).map_err(|reason| ConfigError::Invalid {
                value,
                origin,
                reason,
            }),
        }
    }
}

/// Resolves the node configuration. `env` reads an environment variable (injected so tests do
/// not touch the process environment).
pub fn resolve(
    args: &ServeArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<NodeConfig, ConfigError> {
    let mut flags = BTreeMap::new();
    let mut set = |key: &'static str, value: &Option<String>| {
        if let Some(value) = value {
            flags.insert(key, value.clone());
        }
    };
    set("listen", &args.listen);
    set("data-dir", &args.data_dir);
    set("node-name", &args.node_name);
    set("database", &args.database);
    set("api-token", &args.api_token);
    set("batch-size", &args.batch_size);
    set("flush-interval", &args.flush_interval);
    set("max-body-bytes", &args.max_body_bytes);
    set("queue-max-events", &args.queue_max_events);
    set("queue-max-bytes", &args.queue_max_bytes);
    set("event-log-max-bytes", &args.event_log_max_bytes);
    set("event-log-keep", &args.event_log_keep);
    set("log-format", &args.log_format);
    set("nats", &args.nats);
    set("nats-stream", &args.nats_stream);
    set("nats-subject", &args.nats_subject);
    set("nats-max-ack-pending", &args.nats_max_ack_pending);
    set("nats-ack-wait", &args.nats_ack_wait);
    set("replica-max-offline", &args.replica_max_offline);
    set("member-ttl", &args.member_ttl);
    set("advertise", &args.advertise);
    set("tail-buffer", &args.tail_buffer);
    set("work-concurrency", &args.work_concurrency);
    set("work-max-queued", &args.work_max_queued);
    set("work-ttl", &args.work_ttl);
    set("work-lease", &args.work_lease);
    set("work-max-attempts", &args.work_max_attempts);
    set("work-retry-backoff", &args.work_retry_backoff);
    set("work-max-result-bytes", &args.work_max_result_bytes);
    set("work-max-results-bytes", &args.work_max_results_bytes);
    set("max-connections", &args.max_connections);
    set("header-read-timeout", &args.header_read_timeout);
    set("body-read-timeout", &args.body_read_timeout);
    set("body-min-rate", &args.body_min_rate);
    set("max-file-streams", &args.max_file_streams);
    set("peer-timeout", &args.peer_timeout);
    set("max-live-clients", &args.max_live_clients);
    set("send-timeout", &args.send_timeout);
    set("allowed-hosts", &args.allowed_hosts);
    set("shutdown-grace", &args.shutdown_grace);
    set("tail-buffer-bytes", &args.tail_buffer_bytes);
    set("writer-stall-timeout", &args.writer_stall_timeout);
    set("counter-max-series", &args.counter_max_series);
    set(
        "counter-max-series-per-metric",
        &args.counter_max_series_per_metric,
    );
    set("counter-max-labels", &args.counter_max_labels);
    set("counter-max-label-bytes", &args.counter_max_label_bytes);
    if args.insecure {
        flags.insert("insecure", "true".to_owned());
    }
    if !args.log_root.is_empty() {
        flags.insert("log-root", args.log_root.join("\n"));
    }
    let config_path = args.config.clone().or_else(|| {
        env("LOGMESH_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let file = match config_path {
        Some(path) => {
            let table = read_file(&path)?;
            Some((path, table))
        }
        None => None,
    };
    let resolver = Resolver { flags, env, file };

    let listen = resolver.get("listen", DEFAULT_LISTEN.to_owned(), parse_listen)?;
    let data_dir = resolver.get("data-dir", PathBuf::from(DEFAULT_DATA_DIR), |v| {
        Ok(PathBuf::from(v))
    })?;
    let node_name = match resolver.raw("node-name") {
        Some(_) => resolver.get("node-name", String::new(), |v| {
            check_name(v).map(str::to_owned)
        })?,
        None => default_node_name(),
    };
    let default_database = DatabaseUrl::Sqlite(data_dir.join("logmesh.db"));
    let database = resolver
        .get("database", default_database, DatabaseUrl::parse)
        .map_err(|error| match error {
            // A database URL may hold a password: never echo it.
            ConfigError::Invalid {
                value,
                origin,
                reason,
            } => ConfigError::Invalid {
                value: redact_url(&value),
                origin,
                reason,
            },
            other => other,
        })?;
    let api_token = resolver
        .get("api-token", None, |v| {
            if v.is_empty() {
                Err(
                    "an empty token would refuse every request; give a token or leave the \
                     setting out"
                        .into(),
                )
            } else if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err("tokens cannot contain whitespace or control characters".into())
            } else {
                Ok(Some(v.to_owned()))
            }
        })
        // A token is a secret even when it is invalid: never echo it.
        .map_err(|error| match error {
            ConfigError::Invalid { origin, reason, .. } => ConfigError::Invalid {
                value: "***".into(),
                origin,
                reason,
            },
            other => other,
        })?;
    let insecure = resolver.get("insecure", false, parse_bool)?;
    let batch_size = resolver.get("batch-size", DEFAULT_BATCH_SIZE, |v| {
        parse_count(v, 1, 1_000_000)
    })?;
    let flush_interval = resolver.get("flush-interval", DEFAULT_FLUSH_INTERVAL, parse_duration)?;
    let max_body_bytes = resolver.get("max-body-bytes", DEFAULT_MAX_BODY_BYTES, |v| {
        parse_size(v, 1024, 1 << 30).map(|n| n as usize)
    })?;
    let max_events = resolver.get("queue-max-events", DEFAULT_QUEUE_MAX_EVENTS, |v| {
        parse_count(v, 1, 100_000_000)
    })?;
    let max_bytes = resolver.get("queue-max-bytes", DEFAULT_QUEUE_MAX_BYTES, |v| {
        parse_size(v, 1024, 64 << 30).map(|n| n as usize)
    })?;
    let event_log_max_bytes =
        resolver.get("event-log-max-bytes", DEFAULT_EVENT_LOG_MAX_BYTES, |v| {
            parse_size(v, 1024, u64::MAX)
        })?;
    let event_log_keep = resolver.get("event-log-keep", DEFAULT_EVENT_LOG_KEEP, |v| {
        parse_count(v, 0, 1000).map(|n| n as u32)
    })?;
    let log_format = resolver.get("log-format", LogFormat::Human, |v| match v {
        "human" => Ok(LogFormat::Human),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected human or json".into()),
    })?;
    let cluster = resolve_cluster(&resolver, &database, batch_size, flush_interval)?;
    let advertise = resolver.get("advertise", None, |v| parse_http_url(v).map(Some))?;
    let tail_buffer = resolver.get("tail-buffer", crate::live::DEFAULT_CLIENT_BUFFER, |v| {
        parse_count(v, 1, 1_000_000)
    })?;
    let log_roots = match resolver.raw("log-root") {
        None => vec![data_dir.join("eventlog")],
        Some((value, origin)) => {
            // Flags and the file's array arrive one per line; the environment is colon-separated.
            let separator = if matches!(origin, Source::Env(_)) {
                ':'
            } else {
                '\n'
            };
            let roots: Vec<PathBuf> = value
                .split(separator)
                .filter(|root| !root.is_empty())
                .map(PathBuf::from)
                .collect();
            if roots.is_empty() {
                return Err(ConfigError::Invalid {
                    value,
                    origin,
                    reason: "expected at least one directory".into(),
                });
            }
            roots
        }
    };
    let work = resolve_work(&resolver)?;
    let http = resolve_http(&resolver)?;
    let tail_buffer_bytes = resolver.get(
        "tail-buffer-bytes",
        crate::live::DEFAULT_CLIENT_BUFFER_BYTES,
        |v| parse_size(v, 1024, 1 << 30).map(|n| n as usize),
    )?;
    let writer_stall_timeout = resolver.get(
        "writer-stall-timeout",
        crate::node::DEFAULT_WRITER_STALL_TIMEOUT,
        |v| parse_duration_between(v, Duration::from_secs(1), Duration::from_secs(3600)),
    )?;
    let counters = resolve_counters(&resolver)?;
    if max_bytes < max_body_bytes {
        return Err(ConfigError::Conflict(format!(
            "queue-max-bytes ({max_bytes}) is smaller than max-body-bytes ({max_body_bytes}): \
             a request of the largest allowed size could never be queued"
        )));
    }
    Ok(NodeConfig {
        listen,
        data_dir,
        node_name,
        database,
        api_token,
        insecure,
        batch_size,
        flush_interval,
        max_body_bytes,
        queue_limits: QueueLimits {
            max_events,
            max_bytes,
        },
        event_log: Rotation {
            max_bytes: event_log_max_bytes,
            keep: event_log_keep,
        },
        log_format,
        cluster,
        advertise,
        tail_buffer,
        tail_buffer_bytes,
        log_roots,
        work,
        http,
        writer_stall_timeout,
        counters,
    })
}

fn resolve_http(resolver: &Resolver) -> Result<HttpLimits, ConfigError> {
    use crate::http::body::{DEFAULT_BODY_MIN_RATE, DEFAULT_BODY_READ_TIMEOUT};
    use crate::http::server::{
        DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_SEND_TIMEOUT,
        DEFAULT_SHUTDOWN_GRACE,
    };
    use crate::http::{DEFAULT_MAX_FILE_STREAMS, DEFAULT_MAX_LIVE_CLIENTS, DEFAULT_PEER_TIMEOUT};
    let timeout =
        |v: &str| parse_duration_between(v, Duration::from_millis(100), Duration::from_secs(3600));
    let max_connections = resolver.get("max-connections", DEFAULT_MAX_CONNECTIONS, |v| {
        parse_count(v, 1, 1_000_000)
    })?;
    let header_read_timeout =
        resolver.get("header-read-timeout", DEFAULT_HEADER_READ_TIMEOUT, timeout)?;
    let read_timeout = resolver.get("body-read-timeout", DEFAULT_BODY_READ_TIMEOUT, timeout)?;
    let min_rate = resolver.get("body-min-rate", DEFAULT_BODY_MIN_RATE, |v| {
        parse_size(v, 1, 1 << 30)
    })?;
    let max_file_streams = resolver.get("max-file-streams", DEFAULT_MAX_FILE_STREAMS, |v| {
        parse_count(v, 1, 100_000)
    })?;
    let peer_timeout = resolver.get("peer-timeout", DEFAULT_PEER_TIMEOUT, timeout)?;
    let max_live_clients = resolver.get("max-live-clients", DEFAULT_MAX_LIVE_CLIENTS, |v| {
        parse_count(v, 1, 100_000)
    })?;
    let send_timeout = resolver.get("send-timeout", DEFAULT_SEND_TIMEOUT, timeout)?;
    let shutdown_grace = resolver.get("shutdown-grace", DEFAULT_SHUTDOWN_GRACE, timeout)?;
    let allowed_hosts = resolver.get("allowed-hosts", Vec::new(), parse_host_list)?;
    Ok(HttpLimits {
        server: ServerLimits {
            max_connections,
            header_read_timeout,
            send_timeout,
            shutdown_grace,
        },
        body_pace: BodyPace {
            read_timeout,
            min_rate,
        },
        max_file_streams,
        max_live_clients,
        peer_timeout,
        allowed_hosts,
    })
}

/// A comma-separated list of host names: `name`, `.domain` or `*`.
fn parse_host_list(value: &str) -> Result<Vec<String>, String> {
    let hosts: Vec<String> = value
        .split([',', '\n'])
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(str::to_owned)
        .collect();
    if hosts.is_empty() {
        return Err("expected host names separated by commas".into());
    }
    for host in &hosts {
        let name = host.strip_prefix('.').unwrap_or(host);
        let valid = host == "*"
            || (!name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']')
                }));
        if !valid {
            return Err(format!(
                "`{host}` is not a host name (give names such as logs.example.com, \
                 .example.com for a domain, or * for any)"
            ));
        }
    }
    Ok(hosts)
}

fn resolve_counters(resolver: &Resolver) -> Result<CounterLimits, ConfigError> {
    use crate::counters::*;
    let max_series = resolver.get("counter-max-series", DEFAULT_MAX_SERIES, |v| {
        parse_count(v, 1, 10_000_000)
    })?;
    let max_series_per_metric = resolver.get(
        "counter-max-series-per-metric",
        DEFAULT_MAX_SERIES_PER_METRIC,
        |v| parse_count(v, 1, 10_000_000),
    )?;
    let max_labels = resolver.get("counter-max-labels", DEFAULT_MAX_LABELS, |v| {
        parse_count(v, 0, 64)
    })?;
    let max_label_bytes =
        resolver.get("counter-max-label-bytes", DEFAULT_MAX_LABEL_BYTES, |v| {
            parse_size(v, 16, 64 * 1024).map(|n| n as usize)
        })?;
    Ok(CounterLimits {
        max_series,
        max_series_per_metric,
        max_labels,
        max_label_bytes,
    })
}

fn resolve_work(resolver: &Resolver) -> Result<WorkSettings, ConfigError> {
    use crate::work::*;
    let concurrency = resolver.get("work-concurrency", DEFAULT_WORK_CONCURRENCY, |v| {
        parse_count(v, 0, 1024)
    })?;
    let max_queued = resolver.get("work-max-queued", DEFAULT_WORK_MAX_QUEUED, |v| {
        parse_count(v, 1, 10_000_000)
    })?;
    let ttl = resolver.get("work-ttl", DEFAULT_WORK_TTL, |v| {
        parse_duration_between(
            v,
            Duration::from_secs(1),
            Duration::from_secs(30 * 24 * 3600),
        )
    })?;
    let lease = resolver.get("work-lease", DEFAULT_WORK_LEASE, |v| {
        parse_duration_between(v, Duration::from_secs(1), Duration::from_secs(3600))
    })?;
    let max_attempts = resolver.get("work-max-attempts", DEFAULT_WORK_MAX_ATTEMPTS, |v| {
        parse_count(v, 1, 100).map(|n| n as u32)
    })?;
    let retry_backoff = resolver.get("work-retry-backoff", DEFAULT_WORK_RETRY_BACKOFF, |v| {
        parse_duration_between(v, Duration::from_millis(1), crate::work::MAX_RETRY_BACKOFF)
    })?;
    let max_result_bytes = resolver.get(
        "work-max-result-bytes",
        DEFAULT_WORK_MAX_RESULT_BYTES,
        |v| parse_size(v, 1024, 1 << 40),
    )?;
    let max_results_bytes = resolver.get(
        "work-max-results-bytes",
        DEFAULT_WORK_MAX_RESULTS_BYTES,
        |v| parse_size(v, 1024, 1 << 50),
    )?;
    if max_results_bytes < max_result_bytes {
        return Err(ConfigError::Conflict(format!(
            "work-max-results-bytes ({max_results_bytes}) is smaller than work-max-result-bytes \
             ({max_result_bytes}): a result of the largest allowed size could never be kept"
        )));
    }
    Ok(WorkSettings {
        concurrency,
        max_queued,
        ttl,
        lease,
        max_attempts,
        retry_backoff,
        max_result_bytes,
        max_results_bytes,
    })
}

fn resolve_cluster(
    resolver: &Resolver,
    database: &DatabaseUrl,
    batch_size: usize,
    flush_interval: Duration,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(nats_url) = resolver.get("nats", None, |v| parse_nats_url(v).map(Some))? else {
        return Ok(None);
    };
    if matches!(database, DatabaseUrl::Sqlite(_)) {
        return Err(ConfigError::Conflict(
            "--nats needs a database every node shares: set --database to a postgres:// or \
             mysql:// URL (each node's own SQLite file would hold only part of the events)"
                .into(),
        ));
    }
    let stream = resolver.get(
        "nats-stream",
        DEFAULT_NATS_STREAM.to_owned(),
        parse_stream_name,
    )?;
    let subject = resolver.get(
        "nats-subject",
        DEFAULT_NATS_SUBJECT.to_owned(),
        parse_subject,
    )?;
    let max_ack_pending =
        resolver.get("nats-max-ack-pending", DEFAULT_NATS_MAX_ACK_PENDING, |v| {
            parse_count(v, 1, 10_000_000)
        })?;
    if max_ack_pending < batch_size {
        return Err(ConfigError::Conflict(format!(
            "nats-max-ack-pending ({max_ack_pending}) is smaller than batch-size ({batch_size}): \
             a store writer could never fetch a whole batch"
        )));
    }
    let ack_wait = resolver.get("nats-ack-wait", DEFAULT_NATS_ACK_WAIT, |v| {
        parse_duration_between(v, Duration::from_secs(1), Duration::from_secs(3600))
    })?;
    if ack_wait <= flush_interval * 2 {
        return Err(ConfigError::Conflict(format!(
            "nats-ack-wait ({}) must be more than twice flush-interval ({}): a writer still \
             filling its batch would see the batch redelivered elsewhere",
            humantime::format_duration(ack_wait),
            humantime::format_duration(flush_interval)
        )));
    }
    let replica_max_offline =
        resolver.get("replica-max-offline", DEFAULT_REPLICA_MAX_OFFLINE, |v| {
            parse_duration_between(
                v,
                Duration::from_secs(60),
                Duration::from_secs(365 * 86_400),
            )
        })?;
    let member_ttl = resolver.get("member-ttl", DEFAULT_MEMBER_TTL, |v| {
        parse_duration_between(v, Duration::from_secs(1), Duration::from_secs(3600))
    })?;
    Ok(Some(ClusterConfig {
        nats_url,
        stream,
        subject,
        max_ack_pending,
        ack_wait,
        replica_max_offline,
        member_ttl,
    }))
}

fn parse_nats_url(value: &str) -> Result<String, String> {
    let rest = ["nats://", "tls://"]
        .iter()
        .find_map(|scheme| value.strip_prefix(scheme))
        .ok_or("expected nats://HOST:PORT (or tls://HOST:PORT)")?;
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err("expected nats://HOST:PORT (or tls://HOST:PORT)".into());
    }
    Ok(value.to_owned())
}

fn parse_http_url(value: &str) -> Result<String, String> {
    let rest = ["http://", "https://"]
        .iter()
        .find_map(|scheme| value.strip_prefix(scheme))
        .ok_or("expected http://HOST:PORT or https://HOST:PORT")?;
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err("expected http://HOST:PORT or https://HOST:PORT".into());
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// Stream names also name the membership bucket, whose names allow only these characters.
fn parse_stream_name(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(value.to_owned())
    } else {
        Err("expected 1-64 letters, digits, `_` or `-`".into())
    }
}

fn parse_subject(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && !token.contains(|c: char| c.is_whitespace() || c.is_control())
        });
    if valid {
        Ok(value.to_owned())
    } else {
        Err("expected a NATS subject such as logmesh.events (dot-separated tokens, no wildcards or spaces)".into())
    }
}

fn default_node_name() -> String {
    hostname::get()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| check_name(name).is_ok())
        .unwrap_or_else(|| "logmesh".to_owned())
}

/// Reads a TOML file into key → raw value, rejecting unknown keys and nested tables.
fn read_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_error(e.to_string().trim_end().replace('\n', " ")))?;
    let mut values = BTreeMap::new();
    for (key, value) in table {
        if !SETTINGS.iter().any(|(name, _)| *name == key) {
            let known: Vec<&str> = SETTINGS.iter().map(|(name, _)| *name).collect();
            return Err(file_error(format!(
                "unknown key `{key}` (known keys: {})",
                known.join(", ")
            )));
        }
        let raw = match value {
            toml::Value::Array(items) if key == "log-root" || key == "allowed-hosts" => {
                let mut roots = Vec::new();
                for item in items {
                    match item {
                        toml::Value::String(root) if !root.contains('\n') => roots.push(root),
                        other => {
                            return Err(file_error(format!(
                                "`{key}` must list names, not {}",
                                other.type_str()
                            )));
                        }
                    }
                }
                roots.join("\n")
            }
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(file_error(format!(
                    "`{key}` must be a string, an integer or a boolean, not {}",
                    other.type_str()
                )));
            }
        };
        values.insert(key, raw);
    }
    Ok(values)
}

fn parse_listen(value: &str) -> Result<String, String> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or("expected ADDR:PORT, e.g. 127.0.0.1:5555")?;
    if host.is_empty() {
        return Err("the address is missing (use 0.0.0.0:PORT for every interface)".into());
    }
    port.parse::<u16>()
        .map_err(|_| format!("`{port}` is not a port number (0-65535)"))?;
    Ok(value.to_owned())
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn parse_count(value: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = value
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| "expected a whole number".to_string())?;
    if n < min || n > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(n)
}

/// A duration such as `500ms`, `20s`, `1m` or `1m30s`; a bare number is seconds (as the log
/// monitoring seed's FLUSHINTERVAL was).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    parse_duration_between(value, Duration::from_nanos(1), Duration::from_secs(3600))
}

/// A duration as [`parse_duration`] reads it, within `min..=max`.
pub fn parse_duration_between(
    value: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let value = value.trim();
    let duration = if value.chars().all(|c| c.is_ascii_digit()) && !value.is_empty() {
        Duration::from_secs(value.parse().map_err(|_| "number too large".to_string())?)
    } else {
        humantime::parse_duration(value)
            .map_err(|e| format!("{e}; expected e.g. 500ms, 20s or 1m"))?
    };
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    if duration < min {
        return Err(format!(
            "must be at least {}",
            humantime::format_duration(min)
        ));
    }
    if duration > max {
        return Err(format!(
            "must be at most {}",
            humantime::format_duration(max)
        ));
    }
    Ok(duration)
}

/// A size in bytes: a number with an optional unit (B, KiB, MiB, GiB, KB, MB, GB).
pub fn parse_size(value: &str, min: u64, max: u64) -> Result<u64, String> {
    let value = value.trim().replace('_', "");
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| "expected a size such as 1048576, 512KiB or 10MiB".to_string())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown unit `{other}` (use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    let bytes = number
        .checked_mul(multiplier)
        .ok_or_else(|| "too large".to_string())?;
    if bytes < min || bytes > max {
        return Err(format!("must be between {min} and {max} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn no_env() -> impl Fn(&str) -> Option<String> {
        env_of(&[])
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = resolve(&ServeArgs::default(), &no_env()).unwrap();
        assert_eq!(config.listen, "127.0.0.1:5555");
        assert_eq!(config.data_dir, PathBuf::from("./logmesh-data"));
        assert_eq!(
            config.database,
            DatabaseUrl::Sqlite(PathBuf::from("./logmesh-data/logmesh.db"))
        );
        assert_eq!(config.batch_size, 5000);
        assert_eq!(config.flush_interval, Duration::from_secs(1));
        assert_eq!(config.max_body_bytes, 10 << 20);
        assert!(!config.node_name.is_empty());
        assert_eq!(config.api_token, None);
        assert!(!config.insecure);
    }

    #[test]
    fn flags_beat_environment_beats_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("logmesh.toml");
        std::fs::write(
            &file,
            "batch-size = 10\nflush-interval = \"20s\"\nnode-name = \"from-file\"\nqueue-max-events = 77\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            batch_size: Some("30".into()),
            ..ServeArgs::default()
        };
        let env = env_of(&[
            ("LOGMESH_BATCH_SIZE", "20"),
            ("LOGMESH_FLUSH_INTERVAL", "500ms"),
        ]);
        let config = resolve(&args, &env).unwrap();
        assert_eq!(config.batch_size, 30, "flag wins over env and file");
        assert_eq!(
            config.flush_interval,
            Duration::from_millis(500),
            "env wins over file"
        );
        assert_eq!(config.node_name, "from-file", "file wins over default");
        assert_eq!(config.queue_limits.max_events, 77);
        assert_eq!(
            config.queue_limits.max_bytes, DEFAULT_QUEUE_MAX_BYTES,
            "default last"
        );
    }

    #[test]
    fn seed_variables_batchsize_and_flushinterval_are_honoured() {
        let env = env_of(&[("BATCHSIZE", "10"), ("FLUSHINTERVAL", "20")]);
        let config = resolve(&ServeArgs::default(), &env).unwrap();
        assert_eq!(config.batch_size, 10);
        assert_eq!(config.flush_interval, Duration::from_secs(20));
        let both = env_of(&[("BATCHSIZE", "10"), ("LOGMESH_BATCH_SIZE", "11")]);
        assert_eq!(
            resolve(&ServeArgs::default(), &both).unwrap().batch_size,
            11
        );
    }

    #[test]
    fn log_roots_come_from_repeated_flags_a_colon_list_or_a_toml_array() {
        let default = resolve(&ServeArgs::default(), &no_env()).unwrap();
        assert_eq!(
            default.log_roots,
            [PathBuf::from("./logmesh-data/eventlog")]
        );
        let args = ServeArgs {
            log_root: vec!["/var/log/a".into(), "/var/log/b".into()],
            ..ServeArgs::default()
        };
        let env = env_of(&[("LOGMESH_LOG_ROOT", "/x:/y")]);
        let config = resolve(&args, &env).unwrap();
        assert_eq!(
            config.log_roots,
            [PathBuf::from("/var/log/a"), "/var/log/b".into()]
        );
        let config = resolve(&ServeArgs::default(), &env).unwrap();
        assert_eq!(config.log_roots, [PathBuf::from("/x"), "/y".into()]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        for (toml, expected) in [
            ("log-root = [\"/p\", \"/q\"]\n", vec!["/p", "/q"]),
            ("log-root = \"/p\"\n", vec!["/p"]),
        ] {
            std::fs::write(&file, toml).unwrap();
            let args = ServeArgs {
                config: Some(file.clone()),
                ..ServeArgs::default()
            };
            let config = resolve(&args, &no_env()).unwrap();
            let expected: Vec<PathBuf> = expected.into_iter().map(PathBuf::from).collect();
            assert_eq!(config.log_roots, expected);
        }
        std::fs::write(&file, "log-root = [1]\n").unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        };
        assert!(resolve(&args, &no_env()).is_err());
    }

    #[test]
    fn the_config_file_may_come_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "insecure = true\nlisten = \"0.0.0.0:9000\"\n").unwrap();
        let env = env_of(&[("LOGMESH_CONFIG", file.to_str().unwrap())]);
        let config = resolve(&ServeArgs::default(), &env).unwrap();
        assert!(config.insecure);
        assert_eq!(config.listen, "0.0.0.0:9000");
    }

    #[test]
    fn cluster_settings_resolve_with_their_defaults() {
        let env = env_of(&[
            ("LOGMESH_NATS", "nats://10.0.0.1:4222"),
            ("LOGMESH_DATABASE", "postgres://logmesh@db/logmesh"),
            ("LOGMESH_MEMBER_TTL", "5s"),
        ]);
        let config = resolve(&ServeArgs::default(), &env).unwrap();
        let cluster = config.cluster.expect("cluster shape");
        assert_eq!(cluster.nats_url, "nats://10.0.0.1:4222");
        assert_eq!(cluster.stream, DEFAULT_NATS_STREAM);
        assert_eq!(cluster.subject, DEFAULT_NATS_SUBJECT);
        assert_eq!(cluster.member_ttl, Duration::from_secs(5));
        assert_eq!(cluster.replica_max_offline, DEFAULT_REPLICA_MAX_OFFLINE);
        assert_eq!(cluster.membership_bucket(), "LOGMESH_EVENTS_members");
        assert!(
            resolve(&ServeArgs::default(), &no_env())
                .unwrap()
                .cluster
                .is_none()
        );
    }

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_size("10MiB", 1, u64::MAX), Ok(10 << 20));
        assert_eq!(parse_size("512 KiB", 1, u64::MAX), Ok(512 << 10));
        assert_eq!(parse_size("1_000", 1, u64::MAX), Ok(1000));
        assert_eq!(parse_size("2MB", 1, u64::MAX), Ok(2_000_000));
        assert!(parse_size("10 parsecs", 1, u64::MAX).is_err());
        assert!(parse_size("-1", 1, u64::MAX).is_err());
        assert!(parse_size("99999999999999GiB", 1, u64::MAX).is_err());
    }

    #[test]
    fn limits_resolve_from_flags_environment_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("logmesh.toml");
        std::fs::write(
            &file,
            "allowed-hosts = [\"logs.example.com\", \".corp.example\"]\ncounter-max-series = 20\n",
        )
        .unwrap();
        let args = ServeArgs {
            max_file_streams: Some("8".into()),
            config: Some(file),
            ..Default::default()
        };
        let env = env_of(&[
            ("LOGMESH_BODY_MIN_RATE", "1KiB"),
            ("LOGMESH_TAIL_BUFFER_BYTES", "1MiB"),
        ]);
        let config = resolve(&args, &env).unwrap();
        assert_eq!(config.http.max_file_streams, 8);
        assert_eq!(config.http.body_pace.min_rate, 1024);
        assert_eq!(config.tail_buffer_bytes, 1 << 20);
        assert_eq!(
            config.http.allowed_hosts,
            ["logs.example.com", ".corp.example"]
        );
        assert_eq!(config.counters.max_series, 20);
        let defaults = resolve(&ServeArgs::default(), &no_env()).unwrap();
        assert_eq!(defaults.http, HttpLimits::default());
        assert_eq!(defaults.counters, CounterLimits::default());
        assert_eq!(defaults.work, WorkSettings::default());
    }

    #[test]
    fn invalid_values_are_errors_that_name_their_source() {
        type Case = (ServeArgs, Vec<(&'static str, &'static str)>, &'static str);
        let cases: Vec<Case> = vec![
            (
                ServeArgs {
                    api_token: Some(String::new()),
                    ..Default::default()
                },
                vec![],
                "invalid value \"***\" for --api-token: an empty token would refuse every request",
            ),
            (
                ServeArgs {
                    max_connections: Some("0".into()),
                    ..Default::default()
                },
                vec![],
                "invalid value \"0\" for --max-connections: must be between 1 and 1000000",
            ),
            (
                ServeArgs::default(),
                vec![("LOGMESH_BODY_MIN_RATE", "fast")],
                "for environment variable LOGMESH_BODY_MIN_RATE: expected a size",
            ),
            (
                ServeArgs {
                    header_read_timeout: Some("1ms".into()),
                    ..Default::default()
                },
                vec![],
                "for --header-read-timeout: must be at least 100ms",
            ),
            (
                ServeArgs {
                    allowed_hosts: Some("logs.example.com, bad/host".into()),
                    ..Default::default()
                },
                vec![],
                "for --allowed-hosts: `bad/host` is not a host name",
            ),
            (
                ServeArgs {
                    counter_max_labels: Some("65".into()),
                    ..Default::default()
                },
                vec![],
                "for --counter-max-labels: must be between 0 and 64",
            ),
            (
                ServeArgs {
                    work_max_result_bytes: Some("2GiB".into()),
                    work_max_results_bytes: Some("1GiB".into()),
                    ..Default::default()
                },
                vec![],
                "work-max-results-bytes (1073741824) is smaller than work-max-result-bytes",
            ),
            (
                ServeArgs {
                    batch_size: Some("many".into()),
                    ..Default::default()
                },
                vec![],
                "invalid value \"many\" for --batch-size: expected a whole number",
            ),
            (
                ServeArgs::default(),
                vec![("BATCHSIZE", "0")],
                "invalid value \"0\" for environment variable BATCHSIZE: must be between 1 and 1000000",
            ),
            (
                ServeArgs::default(),
                vec![("FLUSHINTERVAL", "soon")],
                "invalid value \"soon\" for environment variable FLUSHINTERVAL:",
            ),
            (
                ServeArgs {
                    listen: Some("5555".into()),
                    ..Default::default()
                },
                vec![],
                "invalid value \"5555\" for --listen: expected ADDR:PORT",
            ),
            (
                ServeArgs {
                    listen: Some("127.0.0.1:99999".into()),
                    ..Default::default()
                },
                vec![],
                "`99999` is not a port number",
            ),
            (
                ServeArgs {
                    database: Some("oracle://u:secret@x/db".into()),
                    ..Default::default()
                },
                vec![],
                "invalid value \"oracle://u:***@x/db\" for --database: \
                 `oracle://u:***@x/db` is not a database URL",
            ),
            (
                ServeArgs {
                    node_name: Some("my node".into()),
                    ..Default::default()
                },
                vec![],
                "for --node-name: `my node` contains whitespace",
            ),
            (
                ServeArgs {
                    api_token: Some("s3cret token".into()),
                    ..Default::default()
                },
                vec![],
                "invalid value \"***\" for --api-token: tokens cannot contain whitespace",
            ),
            (
                ServeArgs::default(),
                vec![("LOGMESH_TAIL_BUFFER", "0")],
                "for environment variable LOGMESH_TAIL_BUFFER: must be between 1 and 1000000",
            ),
            (
                ServeArgs {
                    work_concurrency: Some("1025".into()),
                    ..Default::default()
                },
                vec![],
                "for --work-concurrency: must be between 0 and 1024",
            ),
            (
                ServeArgs {
                    work_max_queued: Some("0".into()),
                    ..Default::default()
                },
                vec![],
                "for --work-max-queued: must be between 1 and 10000000",
            ),
            (
                ServeArgs::default(),
                vec![("LOGMESH_WORK_MAX_QUEUED", "lots")],
                "for environment variable LOGMESH_WORK_MAX_QUEUED",
            ),
            (
                ServeArgs::default(),
                vec![("LOGMESH_WORK_TTL", "ten minutes")],
                "for environment variable LOGMESH_WORK_TTL",
            ),
            (
                ServeArgs {
                    work_max_attempts: Some("0".into()),
                    ..Default::default()
                },
                vec![],
                "for --work-max-attempts: must be between 1 and 100",
            ),
            (
                ServeArgs {
                    work_retry_backoff: Some("2m".into()),
                    ..Default::default()
                },
                vec![],
                "for --work-retry-backoff",
            ),
            (
                ServeArgs::default(),
                vec![("LOGMESH_INSECURE", "maybe")],
                "for environment variable LOGMESH_INSECURE: expected true or false",
            ),
            (
                ServeArgs {
                    log_format: Some("xml".into()),
                    ..Default::default()
                },
                vec![],
                "expected human or json",
            ),
            (
                ServeArgs {
                    queue_max_bytes: Some("1MiB".into()),
                    ..Default::default()
                },
                vec![],
                "queue-max-bytes (1048576) is smaller than max-body-bytes",
            ),
            (
                ServeArgs {
                    nats: Some("nats://127.0.0.1:4222".into()),
                    ..Default::default()
                },
                vec![],
                "--nats needs a database every node shares",
            ),
            (
                ServeArgs {
                    nats: Some("127.0.0.1:4222".into()),
                    ..Default::default()
                },
                vec![],
                "for --nats: expected nats://HOST:PORT",
            ),
            (
                ServeArgs {
                    nats: Some("nats://127.0.0.1:4222".into()),
                    database: Some("postgres://u@h/db".into()),
                    nats_stream: Some("my.stream".into()),
                    ..Default::default()
                },
                vec![],
                "for --nats-stream: expected 1-64 letters, digits",
            ),
            (
                ServeArgs {
                    nats: Some("nats://127.0.0.1:4222".into()),
                    database: Some("postgres://u@h/db".into()),
                    nats_subject: Some("logs.>".into()),
                    ..Default::default()
                },
                vec![],
                "for --nats-subject: expected a NATS subject",
            ),
            (
                ServeArgs {
                    nats: Some("nats://127.0.0.1:4222".into()),
                    database: Some("postgres://u@h/db".into()),
                    batch_size: Some("5000".into()),
                    nats_max_ack_pending: Some("100".into()),
                    ..Default::default()
                },
                vec![],
                "nats-max-ack-pending (100) is smaller than batch-size (5000)",
            ),
            (
                ServeArgs {
                    nats: Some("nats://127.0.0.1:4222".into()),
                    database: Some("postgres://u@h/db".into()),
                    flush_interval: Some("20s".into()),
                    ..Default::default()
                },
                vec![],
                "nats-ack-wait (30s) must be more than twice flush-interval (20s)",
            ),
            (
                ServeArgs {
                    nats: Some("nats://127.0.0.1:4222".into()),
                    database: Some("postgres://u@h/db".into()),
                    member_ttl: Some("100ms".into()),
                    ..Default::default()
                },
                vec![],
                "for --member-ttl: must be at least 1s",
            ),
            (
                ServeArgs {
                    nats: Some("nats://127.0.0.1:4222".into()),
                    database: Some("postgres://u@h/db".into()),
                    replica_max_offline: Some("forever".into()),
                    ..Default::default()
                },
                vec![],
                "for --replica-max-offline:",
            ),
            (
                ServeArgs {
                    advertise: Some("node-1:5555".into()),
                    ..Default::default()
                },
                vec![],
                "for --advertise: expected http://HOST:PORT",
            ),
        ];
        for (args, env, expected) in cases {
            let error = resolve(&args, &env_of(&env)).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "got {error:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn bad_config_files_are_rejected_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "batch-size = 5000\nbatchsize = 3\n",
                "unknown key `batchsize`",
            ),
            (
                "batch-size = [1]\n",
                "must be a string, an integer or a boolean, not array",
            ),
            ("batch-size = \n", "cannot read the config file"),
            (
                "batch-size = \"x\"\n",
                "invalid value \"x\" for `batch-size` in",
            ),
        ];
        for (text, expected) in cases {
            let file = dir.path().join("bad.toml");
            std::fs::write(&file, text).unwrap();
            let args = ServeArgs {
                config: Some(file),
                ..Default::default()
            };
            let error = resolve(&args, &no_env()).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "got {error:?}, expected {expected:?}"
            );
        }
        let args = ServeArgs {
            config: Some(dir.path().join("missing.toml")),
            ..Default::default()
        };
        let error = resolve(&args, &no_env()).unwrap_err().to_string();
        assert!(error.starts_with("cannot read the config file"), "{error}");
    }
}
