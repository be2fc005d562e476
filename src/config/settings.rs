//! Every `logmesh serve` setting, declared once: its name (the flag and the TOML key), its
//! environment variables, what its value looks like, its help, where its default comes from,
//! and how a value is checked and applied to a [`NodeConfig`]. The command line, the config
//! file, the precedence resolution, the error messages and the configuration table of
//! docs/configuration.md are all made from [`SETTINGS`] (a test holds the page to it).
//!
//! Adding a setting is one entry here, in the order settings are applied (a setting that
//! depends on another comes after it), plus the code that reads the field it sets.

use crate::event::parse::check_name;
use crate::node::{ClusterConfig, LogFormat, NodeConfig};
use crate::store::DatabaseUrl;
use crate::syslog::SyslogListen;
use crate::units::{
    format_duration, format_size, parse_bool, parse_count, parse_duration, parse_duration_between,
    parse_size,
};
use std::path::PathBuf;
use std::time::Duration;

/// One setting.
pub struct Setting {
    /// `--key` on the command line, `key` in the TOML file.
    pub key: &'static str,
    /// The environment variables that set it, the first the `LOGMESH_*` one.
    pub env: &'static [&'static str],
    pub value: ValueKind,
    pub help: &'static str,
    /// The default as shown in `--help` and docs/configuration.md.
    pub default: Shown,
    /// How much of a bad value an error message may show.
    pub secret: Secret,
    /// Checks a value and sets it in the configuration (a list arrives one item per line).
    pub apply: fn(&mut NodeConfig, &str) -> Result<(), String>,
}

/// What a setting's value looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// `--key VALUE`, shown with this name.
    One(&'static str),
    /// `--key` alone means true; the environment and the file take `true`/`false`.
    Switch,
    /// `--key VALUE`, repeatable; the environment separates items with this character; the
    /// file takes a string or an array of strings.
    List(&'static str, char),
}

/// A default as shown.
pub enum Shown {
    /// Read from the defaults of [`NodeConfig`].
    Value(fn(&NodeConfig) -> String),
    /// Said in words (it depends on other settings or on the machine).
    Text(&'static str),
}

/// How much of a bad value may be echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    No,
    /// A URL that may hold a password: shown with it redacted.
    Url,
    /// Never shown.
    Whole,
}

fn count(min: usize, max: usize) -> impl Fn(&str) -> Result<usize, String> {
    move |v| parse_count(v, min, max)
}

fn size(min: u64, max: u64) -> impl Fn(&str) -> Result<u64, String> {
    move |v| parse_size(v, min, max)
}

fn between(min: Duration, max: Duration) -> impl Fn(&str) -> Result<Duration, String> {
    move |v| parse_duration_between(v, min, max)
}

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const TIMEOUT_MIN: Duration = Duration::from_millis(100);

/// A setting of the cluster shape, ignored without `--nats`.
fn cluster(config: &mut NodeConfig) -> Option<&mut ClusterConfig> {
    config.cluster.as_mut()
}

fn duration(value: Duration) -> String {
    format_duration(value)
}

/// A limit's value, or `off` when there is none.
fn off_or(value: Option<String>) -> String {
    value.unwrap_or_else(|| "off".into())
}

/// `off` or `0`: no limit; anything else as `parse` reads it.
fn off_or_else<T>(
    value: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    match value.trim() {
        "off" | "0" => Ok(None),
        value => parse(value).map(Some),
    }
}

pub static SETTINGS: &[Setting] = &[
    Setting {
        key: "data-dir",
        env: &["LOGMESH_DATA_DIR"],
        value: ValueKind::One("DIR"),
        help: "Queue, database and event log. One node per directory (locked).",
        default: Shown::Value(|c| c.data_dir.display().to_string()),
        secret: Secret::No,
        apply: |c, v| {
            c.set_data_dir(std::path::Path::new(v));
            Ok(())
        },
    },
    Setting {
        key: "listen",
        env: &["LOGMESH_LISTEN"],
        value: ValueKind::One("ADDR:PORT"),
        help: "`ADDR:PORT`; port 0 picks a free port.",
        default: Shown::Value(|c| c.listen.clone()),
        secret: Secret::No,
        apply: |c, v| {
            c.listen = parse_listen(v)?;
            Ok(())
        },
    },
    Setting {
        key: "node-name",
        env: &["LOGMESH_NODE_NAME"],
        value: ValueKind::One("NAME"),
        help: "Recorded in every event the node accepts.",
        default: Shown::Text("host name"),
        secret: Secret::No,
        apply: |c, v| {
            c.node_name = check_name(v)?.to_owned();
            Ok(())
        },
    },
    Setting {
        key: "database",
        env: &["LOGMESH_DATABASE"],
        value: ValueKind::One("URL"),
        help: "`sqlite://PATH`, `postgres://…` or `mysql://…` (`mariadb://` too); see docs/databases.md.",
        default: Shown::Text("`sqlite://<data-dir>/logmesh.db`"),
        secret: Secret::Url,
        apply: |c, v| {
            c.database = DatabaseUrl::parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "api-token",
        env: &["LOGMESH_API_TOKEN"],
        value: ValueKind::One("TOKEN"),
        help: "Every request then needs `Authorization: Bearer <token>` (or Basic credentials \
               with the token as password), health probes included; only the web console's static shell (`/`, `/console/*`, no data) is \
               served without it. An empty token is refused at start-up.",
        default: Shown::Text("none"),
        secret: Secret::Whole,
        apply: |c, v| {
            if v.is_empty() {
                return Err(
                    "an empty token would refuse every request; give a token or leave \
                            the setting out"
                        .into(),
                );
            }
            if v.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
                return Err("tokens cannot contain whitespace or control characters".into());
            }
            c.api_token = Some(v.to_owned());
            Ok(())
        },
    },
    Setting {
        key: "insecure",
        env: &["LOGMESH_INSECURE"],
        value: ValueKind::Switch,
        help: "Allow a non-loopback `--listen` without a token.",
        default: Shown::Value(|c| c.insecure.to_string()),
        secret: Secret::No,
        apply: |c, v| {
            c.insecure = parse_bool(v)?;
            Ok(())
        },
    },
    Setting {
        key: "batch-size",
        env: &["LOGMESH_BATCH_SIZE", "BATCHSIZE"],
        value: ValueKind::One("N"),
        help: "Events per store transaction (1–1,000,000).",
        default: Shown::Value(|c| c.batch_size.to_string()),
        secret: Secret::No,
        apply: |c, v| {
            c.batch_size = count(1, 1_000_000)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "flush-interval",
        env: &["LOGMESH_FLUSH_INTERVAL", "FLUSHINTERVAL"],
        value: ValueKind::One("DURATION"),
        help: "Longest wait before a partial batch is written: `500ms`, `20s`, `1m`; a bare \
               number is seconds.",
        default: Shown::Value(|c| duration(c.flush_interval)),
        secret: Secret::No,
        apply: |c, v| {
            c.flush_interval = parse_duration(v)?;
            Ok(())
        },
    },
    Setting {
        key: "max-body-bytes",
        env: &["LOGMESH_MAX_BODY_BYTES"],
        value: ValueKind::One("SIZE"),
        help: "Largest request body, also once decompressed. Sizes take `B`, `KiB`, `MiB`, \
               `GiB`, `TiB`, `KB`, `MB`, `GB`, `TB`.",
        default: Shown::Value(|c| format_size(c.max_body_bytes as u64)),
        secret: Secret::No,
        apply: |c, v| {
            c.max_body_bytes = size(1024, 1 << 30)(v)? as usize;
            Ok(())
        },
    },
    Setting {
        key: "queue-max-events",
        env: &["LOGMESH_QUEUE_MAX_EVENTS"],
        value: ValueKind::One("N"),
        help: "Accepted-but-not-yet-written events before ingest answers 503. Cluster: the \
               stream's limit in *messages* (a message carries up to 1 MiB of one request's \
               events), set when this node creates the stream.",
        default: Shown::Value(|c| c.queue_limits.max_events.to_string()),
        secret: Secret::No,
        apply: |c, v| {
            c.queue_limits.max_events = count(1, 100_000_000)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "queue-max-bytes",
        env: &["LOGMESH_QUEUE_MAX_BYTES"],
        value: ValueKind::One("SIZE"),
        help: "The same bound in bytes; at least `max-body-bytes`. Cluster: the stream's byte \
               limit, the one that bounds events.",
        default: Shown::Value(|c| format_size(c.queue_limits.max_bytes as u64)),
        secret: Secret::No,
        apply: |c, v| {
            c.queue_limits.max_bytes = size(1024, 64 << 30)(v)? as usize;
            Ok(())
        },
    },
    Setting {
        key: "event-log-max-bytes",
        env: &["LOGMESH_EVENT_LOG_MAX_BYTES"],
        value: ValueKind::One("SIZE"),
        help: "Size at which `events.log` rotates.",
        default: Shown::Value(|c| format_size(c.event_log.max_bytes)),
        secret: Secret::No,
        apply: |c, v| {
            c.event_log.max_bytes = size(1024, u64::MAX)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "retention",
        env: &["LOGMESH_RETENTION"],
        value: ValueKind::One("AGE"),
        help: "Stored events with a timestamp older than this are no longer searched or \
               counted, and are removed in the background, e.g. `30d`; `off` or `0` keeps them \
               for ever.",
        default: Shown::Value(|c| off_or(c.retention.map(duration))),
        secret: Secret::No,
        apply: |c, v| {
            c.retention = off_or_else(v, between(SECOND, Duration::from_secs(100 * 365 * 86_400)))?;
            Ok(())
        },
    },
    Setting {
        key: "late-events",
        env: &["LOGMESH_LATE_EVENTS"],
        value: ValueKind::One("WHAT"),
        help: "What becomes of an event that arrives already past --retention: `refuse` it, the \
               way its protocol refuses one item (400 naming --retention), or `expire` it: \
               acknowledged like the others, not stored, counted in \
               logmesh_events_expired_on_arrival_total.",
        default: Shown::Value(|c| c.late_events.as_str().into()),
        secret: Secret::No,
        apply: |c, v| {
            c.late_events = crate::intake::LateEvents::parse(v.trim())?;
            Ok(())
        },
    },
    Setting {
        key: "max-store-bytes",
        env: &["LOGMESH_MAX_STORE_BYTES"],
        value: ValueKind::One("SIZE"),
        help: "A cap on the stored events' size, e.g. `50GiB`: past it the oldest events are \
               removed (checked every 10 s), whatever --retention says. `off` or `0`: no cap.",
        default: Shown::Value(|c| off_or(c.max_store_bytes.map(format_size))),
        secret: Secret::No,
        apply: |c, v| {
            c.max_store_bytes = off_or_else(v, size(1024 * 1024, u64::MAX))?;
            Ok(())
        },
    },
    Setting {
        key: "min-free-disk",
        env: &["LOGMESH_MIN_FREE_DISK"],
        value: ValueKind::One("SIZE"),
        help: "Below this much free space on the data directory's disk, new events are refused \
               (503 `disk_low` naming the disk; syslog TCP and RELP wait, UDP drops) before \
               anything runs into a full disk; taken again once space returns. `off` or `0`: \
               never (a full disk then refuses with `queue_unavailable`).",
        default: Shown::Value(|c| off_or(c.min_free_disk.map(format_size))),
        secret: Secret::No,
        apply: |c, v| {
            c.min_free_disk = off_or_else(v, size(1, u64::MAX))?;
            Ok(())
        },
    },
    Setting {
        key: "event-log-retention",
        env: &["LOGMESH_EVENT_LOG_RETENTION"],
        value: ValueKind::One("AGE"),
        help: "Rotated event log files last written longer ago than this are removed (checked \
               every minute and at each rotation; `events.log` itself never is), e.g. `30d`; \
               `off` or `0` keeps them whatever their age.",
        default: Shown::Value(|c| off_or(c.event_log.max_age.map(duration))),
        secret: Secret::No,
        apply: |c, v| {
            c.event_log.max_age =
                off_or_else(v, between(SECOND, Duration::from_secs(100 * 365 * 86_400)))?;
            Ok(())
        },
    },
    Setting {
        key: "event-log-max-total-bytes",
        env: &["LOGMESH_EVENT_LOG_MAX_TOTAL_BYTES"],
        value: ValueKind::One("SIZE"),
        help: "The most `events.log` and its rotated files may take together: past it the \
               oldest rotated files are removed. At least twice --event-log-max-bytes; `off` \
               or `0`: no total (--event-log-keep still bounds the files).",
        default: Shown::Value(|c| off_or(c.event_log.max_total_bytes.map(format_size))),
        secret: Secret::No,
        apply: |c, v| {
            c.event_log.max_total_bytes = off_or_else(v, size(2048, u64::MAX))?;
            Ok(())
        },
    },
    Setting {
        key: "event-log-keep",
        env: &["LOGMESH_EVENT_LOG_KEEP"],
        value: ValueKind::One("N"),
        help: "Rotated files kept (`events.log.1` newest … `.5` oldest).",
        default: Shown::Value(|c| c.event_log.keep.to_string()),
        secret: Secret::No,
        apply: |c, v| {
            c.event_log.keep = count(0, 1000)(v)? as u32;
            Ok(())
        },
    },
    Setting {
        key: "nats",
        env: &["LOGMESH_NATS"],
        value: ValueKind::One("URL"),
        help: "`nats://HOST:PORT`: run as a cluster node. Needs a `postgres://` or `mysql://` \
               `--database`.",
        default: Shown::Text("none"),
        secret: Secret::No,
        apply: |c, v| {
            c.cluster = Some(ClusterConfig::new(&parse_nats_url(v)?));
            Ok(())
        },
    },
    Setting {
        key: "nats-stream",
        env: &["LOGMESH_NATS_STREAM"],
        value: ValueKind::One("NAME"),
        help: "The event stream; also prefixes the consumers and the membership bucket. \
               Letters, digits, `_`, `-`.",
        default: Shown::Value(|_| ClusterConfig::new("").stream),
        secret: Secret::No,
        apply: |c, v| {
            let stream = parse_stream_name(v)?;
            if let Some(cluster) = cluster(c) {
                cluster.stream = stream;
            }
            Ok(())
        },
    },
    Setting {
        key: "nats-subject",
        env: &["LOGMESH_NATS_SUBJECT"],
        value: ValueKind::One("SUBJECT"),
        help: "Subject events are published on.",
        default: Shown::Value(|_| ClusterConfig::new("").subject),
        secret: Secret::No,
        apply: |c, v| {
            let subject = parse_subject(v)?;
            if let Some(cluster) = cluster(c) {
                cluster.subject = subject;
            }
            Ok(())
        },
    },
    Setting {
        key: "nats-max-ack-pending",
        env: &["LOGMESH_NATS_MAX_ACK_PENDING"],
        value: ValueKind::One("N"),
        help: "Events fetched by store writers but not yet stored, cluster-wide; at least \
               `batch-size`.",
        default: Shown::Value(|_| ClusterConfig::new("").max_ack_pending.to_string()),
        secret: Secret::No,
        apply: |c, v| {
            let pending = count(1, 10_000_000)(v)?;
            if let Some(cluster) = cluster(c) {
                cluster.max_ack_pending = pending;
            }
            Ok(())
        },
    },
    Setting {
        key: "nats-ack-wait",
        env: &["LOGMESH_NATS_ACK_WAIT"],
        value: ValueKind::One("DURATION"),
        help: "A fetched batch not stored by then goes to another node; more than twice \
               `flush-interval`.",
        default: Shown::Value(|_| duration(ClusterConfig::new("").ack_wait)),
        secret: Secret::No,
        apply: |c, v| {
            let wait = between(SECOND, HOUR)(v)?;
            if let Some(cluster) = cluster(c) {
                cluster.ack_wait = wait;
            }
            Ok(())
        },
    },
    Setting {
        key: "replica-max-offline",
        env: &["LOGMESH_REPLICA_MAX_OFFLINE"],
        value: ValueKind::One("DURATION"),
        help: "How long a node may be down and still catch up its event log.",
        default: Shown::Value(|_| duration(ClusterConfig::new("").replica_max_offline)),
        secret: Secret::No,
        apply: |c, v| {
            let offline = between(Duration::from_secs(60), 365 * 24 * HOUR)(v)?;
            if let Some(cluster) = cluster(c) {
                cluster.replica_max_offline = offline;
            }
            Ok(())
        },
    },
    Setting {
        key: "member-ttl",
        env: &["LOGMESH_MEMBER_TTL"],
        value: ValueKind::One("DURATION"),
        help: "A node that stops heart-beating leaves the membership after this.",
        default: Shown::Value(|_| duration(ClusterConfig::new("").member_ttl)),
        secret: Secret::No,
        apply: |c, v| {
            let ttl = between(SECOND, HOUR)(v)?;
            if let Some(cluster) = cluster(c) {
                cluster.member_ttl = ttl;
            }
            Ok(())
        },
    },
    Setting {
        key: "advertise",
        env: &["LOGMESH_ADVERTISE"],
        value: ValueKind::One("URL"),
        help: "The URL other nodes and clients reach this node at.",
        default: Shown::Text("`http://<listen address>`"),
        secret: Secret::No,
        apply: |c, v| {
            c.advertise = Some(parse_http_url(v)?);
            Ok(())
        },
    },
    Setting {
        key: "tail-buffer",
        env: &["LOGMESH_TAIL_BUFFER"],
        value: ValueKind::One("N"),
        help: "Events a live tail client's queue holds; one that misses this many in a row is \
               cut off.",
        default: Shown::Value(|c| c.tail_buffer.to_string()),
        secret: Secret::No,
        apply: |c, v| {
            c.tail_buffer = count(1, 1_000_000)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "tail-buffer-bytes",
        env: &["LOGMESH_TAIL_BUFFER_BYTES"],
        value: ValueKind::One("SIZE"),
        help: "Bytes of events a live tail client's queue holds (1 KiB – 1 GiB).",
        default: Shown::Value(|c| format_size(c.tail_buffer_bytes as u64)),
        secret: Secret::No,
        apply: |c, v| {
            c.tail_buffer_bytes = size(1024, 1 << 30)(v)? as usize;
            Ok(())
        },
    },
    Setting {
        key: "max-connections",
        env: &["LOGMESH_MAX_CONNECTIONS"],
        value: ValueKind::One("N"),
        help: "Connections served at once; one more is answered 503 `too_many_connections` and \
               closed. Keep the process's file descriptor limit above it.",
        default: Shown::Value(|c| c.http.server.max_connections.to_string()),
        secret: Secret::No,
        apply: |c, v| {
            c.http.server.max_connections = count(1, 1_000_000)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "header-read-timeout",
        env: &["LOGMESH_HEADER_READ_TIMEOUT"],
        value: ValueKind::One("DURATION"),
        help: "Time a client has to send a request's head, and that a kept-alive connection \
               may sit idle; then it is closed.",
        default: Shown::Value(|c| duration(c.http.server.header_read_timeout)),
        secret: Secret::No,
        apply: |c, v| {
            c.http.server.header_read_timeout = between(TIMEOUT_MIN, HOUR)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "body-read-timeout",
        env: &["LOGMESH_BODY_READ_TIMEOUT"],
        value: ValueKind::One("DURATION"),
        help: "Time a request body has before `body-min-rate` applies; a body past it is \
               answered 408 `body_too_slow`.",
        default: Shown::Value(|c| duration(c.http.body_pace.read_timeout)),
        secret: Secret::No,
        apply: |c, v| {
            c.http.body_pace.read_timeout = between(TIMEOUT_MIN, HOUR)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "body-min-rate",
        env: &["LOGMESH_BODY_MIN_RATE"],
        value: ValueKind::One("SIZE"),
        help: "Bytes per second a body must keep up after `body-read-timeout`: each \
               `body-min-rate` bytes received earn one more second.",
        default: Shown::Value(|c| format_size(c.http.body_pace.min_rate)),
        secret: Secret::No,
        apply: |c, v| {
            c.http.body_pace.min_rate = size(1, 1 << 30)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "max-file-streams",
        env: &["LOGMESH_MAX_FILE_STREAMS"],
        value: ValueKind::One("N"),
        help: "`GET /logs` streams (follow included) this node serves at once; one more is \
               503.",
        default: Shown::Value(|c| c.http.max_file_streams.to_string()),
        secret: Secret::No,
        apply: |c, v| {
            c.http.max_file_streams = count(1, 100_000)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "peer-timeout",
        env: &["LOGMESH_PEER_TIMEOUT"],
        value: ValueKind::One("DURATION"),
        help: "How long another member may take to answer a forwarded request (`hostname=`); \
               past it 504, or with `hostname=*` the member is named in the stream's last line.",
        default: Shown::Value(|c| duration(c.http.peer_timeout)),
        secret: Secret::No,
        apply: |c, v| {
            c.http.peer_timeout = between(TIMEOUT_MIN, HOUR)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "max-live-clients",
        env: &["LOGMESH_MAX_LIVE_CLIENTS"],
        value: ValueKind::One("N"),
        help: "`GET /api/v1/tail` clients this node serves at once; one more is 503.",
        default: Shown::Value(|c| c.http.max_live_clients.to_string()),
        secret: Secret::No,
        apply: |c, v| {
            c.http.max_live_clients = count(1, 100_000)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "send-timeout",
        env: &["LOGMESH_SEND_TIMEOUT"],
        value: ValueKind::One("DURATION"),
        help: "How long a response may wait for the client to take more of it; then the \
               connection is closed (a live tail or stream nobody reads cannot hold a \
               connection forever).",
        default: Shown::Value(|c| duration(c.http.server.send_timeout)),
        secret: Secret::No,
        apply: |c, v| {
            c.http.server.send_timeout = between(TIMEOUT_MIN, HOUR)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "allowed-hosts",
        env: &["LOGMESH_ALLOWED_HOSTS"],
        value: ValueKind::List("HOSTS", ','),
        help: "Host names the node answers to besides `localhost` and loopback addresses: \
               `logs.example.com`, `.example.com` for a domain and its subdomains, `*` for any. \
               Other `Host` headers get 403 `host_not_allowed` (a guard against DNS rebinding).",
        default: Shown::Text("loopback names on a loopback `--listen`, any name otherwise"),
        secret: Secret::No,
        apply: |c, v| {
            c.http.allowed_hosts = parse_host_list(v)?;
            Ok(())
        },
    },
    Setting {
        key: "shutdown-grace",
        env: &["LOGMESH_SHUTDOWN_GRACE"],
        value: ValueKind::One("DURATION"),
        help: "How long requests in flight get to finish when the node stops; live streams end \
               at once.",
        default: Shown::Value(|c| duration(c.http.server.shutdown_grace)),
        secret: Secret::No,
        apply: |c, v| {
            c.http.server.shutdown_grace = between(TIMEOUT_MIN, HOUR)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "writer-stall-timeout",
        env: &["LOGMESH_WRITER_STALL_TIMEOUT"],
        value: ValueKind::One("DURATION"),
        help: "A writer (store or event log) that holds events this long without writing any \
               makes `/readyz` answer 503, naming it.",
        default: Shown::Value(|c| duration(c.writer_stall_timeout)),
        secret: Secret::No,
        apply: |c, v| {
            c.writer_stall_timeout = between(SECOND, HOUR)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "counter-max-series",
        env: &["LOGMESH_COUNTER_MAX_SERIES"],
        value: ValueKind::One("N"),
        help: "Counters (name and label set) in all; creating one more is 400 `limit_exceeded`.",
        default: Shown::Value(|c| c.counters.max_series.to_string()),
        secret: Secret::No,
        apply: |c, v| {
            c.counters.max_series = count(1, 10_000_000)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "counter-max-series-per-metric",
        env: &["LOGMESH_COUNTER_MAX_SERIES_PER_METRIC"],
        value: ValueKind::One("N"),
        help: "Label sets one counter name may have.",
        default: Shown::Value(|c| c.counters.max_series_per_metric.to_string()),
        secret: Secret::No,
        apply: |c, v| {
            c.counters.max_series_per_metric = count(1, 10_000_000)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "counter-max-labels",
        env: &["LOGMESH_COUNTER_MAX_LABELS"],
        value: ValueKind::One("N"),
        help: "Labels one counter may have (0–64).",
        default: Shown::Value(|c| c.counters.max_labels.to_string()),
        secret: Secret::No,
        apply: |c, v| {
            c.counters.max_labels = count(0, 64)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "counter-max-label-bytes",
        env: &["LOGMESH_COUNTER_MAX_LABEL_BYTES"],
        value: ValueKind::One("SIZE"),
        help: "Bytes of one counter's label names and values together (16 B – 64 KiB).",
        default: Shown::Value(|c| format_size(c.counters.max_label_bytes as u64)),
        secret: Secret::No,
        apply: |c, v| {
            c.counters.max_label_bytes = size(16, 64 * 1024)(v)? as usize;
            Ok(())
        },
    },
    Setting {
        key: "log-root",
        env: &["LOGMESH_LOG_ROOT"],
        value: ValueKind::List("DIR", ':'),
        help: "A directory whose files `GET /logs` serves; repeat the flag for several. Each \
               must exist at start-up.",
        default: Shown::Text("`<data-dir>/eventlog`"),
        secret: Secret::No,
        apply: |c, v| {
            let roots: Vec<PathBuf> = v
                .lines()
                .filter(|root| !root.is_empty())
                .map(PathBuf::from)
                .collect();
            if roots.is_empty() {
                return Err("expected at least one directory".into());
            }
            c.log_roots = roots;
            Ok(())
        },
    },
    Setting {
        key: "syslog-listen",
        env: &["LOGMESH_SYSLOG_LISTEN"],
        value: ValueKind::List("URL", ','),
        help: "A syslog listener: `tcp://IP:PORT` (RFC 6587, octet counting or newline framing), \
               `udp://IP:PORT`, `tls://IP:PORT` (RFC 5425, with --syslog-tls-cert and \
               --syslog-tls-key) or `relp://IP:PORT` (rsyslog's RELP: each message \
               acknowledged once durable); repeat the flag for several. A non-loopback one needs \
               --api-token with --syslog-allow, or --insecure.",
        default: Shown::Text("none"),
        secret: Secret::No,
        apply: |c, v| {
            c.syslog.listen = v
                .split([',', '\n'])
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(SyslogListen::parse)
                .collect::<Result<_, _>>()?;
            Ok(())
        },
    },
    Setting {
        key: "syslog-allow",
        env: &["LOGMESH_SYSLOG_ALLOW"],
        value: ValueKind::List("CIDR", ','),
        help: "Networks whose peers the non-loopback syslog listeners serve (`10.0.0.0/8`, \
               `192.168.1.7/32`); loopback peers always. Needed with --api-token: syslog \
               carries no token.",
        default: Shown::Text("any peer (only without --api-token)"),
        secret: Secret::No,
        apply: |c, v| {
            c.syslog.allow = v
                .split([',', '\n'])
                .map(str::trim)
                .filter(|net| !net.is_empty())
                .map(|net| {
                    net.parse::<ipnet::IpNet>().map_err(|_| {
                        format!("`{net}` is not a network (give CIDR such as 10.0.0.0/8)")
                    })
                })
                .collect::<Result<_, _>>()?;
            if c.syslog.allow.is_empty() {
                return Err("expected networks separated by commas".into());
            }
            Ok(())
        },
    },
    Setting {
        key: "syslog-service",
        env: &["LOGMESH_SYSLOG_SERVICE"],
        value: ValueKind::One("FROM"),
        help: "Which part of a syslog message names its service: `app-name` (APP-NAME, or the \
               BSD TAG), `hostname`, `facility`, `msgid`, or `fixed:NAME` for one service; \
               `syslog` when the part is missing.",
        default: Shown::Value(|c| c.syslog.service.to_string()),
        secret: Secret::No,
        apply: |c, v| {
            c.syslog.service = crate::syslog::ServiceFrom::parse(v.trim())?;
            Ok(())
        },
    },
    Setting {
        key: "syslog-tls-cert",
        env: &["LOGMESH_SYSLOG_TLS_CERT"],
        value: ValueKind::One("FILE"),
        help: "The certificate chain (PEM, the node's certificate first) of the `tls://` syslog \
               listeners (RFC 5425); needs --syslog-tls-key.",
        default: Shown::Text("none"),
        secret: Secret::No,
        apply: |c, v| {
            c.syslog.tls.cert = Some(tls_file(v)?);
            Ok(())
        },
    },
    Setting {
        key: "syslog-tls-key",
        env: &["LOGMESH_SYSLOG_TLS_KEY"],
        value: ValueKind::One("FILE"),
        help: "The private key (PEM: PKCS#8, PKCS#1 or SEC1) of --syslog-tls-cert.",
        default: Shown::Text("none"),
        secret: Secret::No,
        apply: |c, v| {
            c.syslog.tls.key = Some(tls_file(v)?);
            Ok(())
        },
    },
    Setting {
        key: "work-concurrency",
        env: &["LOGMESH_WORK_CONCURRENCY"],
        value: ValueKind::One("N"),
        help: "Jobs this node runs at once, 0–1024; 0: it accepts jobs but runs none.",
        default: Shown::Value(|c| c.work.concurrency.to_string()),
        secret: Secret::No,
        apply: |c, v| {
            c.work.concurrency = count(0, 1024)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "work-max-queued",
        env: &["LOGMESH_WORK_MAX_QUEUED"],
        value: ValueKind::One("N"),
        help: "Jobs that may wait to be run (cluster: all nodes together; the work stream, once \
               created, keeps its own limit) before submissions get 503.",
        default: Shown::Value(|c| c.work.max_queued.to_string()),
        secret: Secret::No,
        apply: |c, v| {
            c.work.max_queued = count(1, 10_000_000)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "work-ttl",
        env: &["LOGMESH_WORK_TTL"],
        value: ValueKind::One("DURATION"),
        help: "How long a job's record and result live after its last change (1 s – 30 days). \
               In a cluster the existing bucket's TTL wins.",
        default: Shown::Value(|c| duration(c.work.ttl)),
        secret: Secret::No,
        apply: |c, v| {
            c.work.ttl = between(SECOND, 30 * 24 * HOUR)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "work-lease",
        env: &["LOGMESH_WORK_LEASE"],
        value: ValueKind::One("DURATION"),
        help: "A job whose worker has not renewed for this long is given to another worker \
               (1 s – 1 h).",
        default: Shown::Value(|c| duration(c.work.lease)),
        secret: Secret::No,
        apply: |c, v| {
            c.work.lease = between(SECOND, HOUR)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "work-max-attempts",
        env: &["LOGMESH_WORK_MAX_ATTEMPTS"],
        value: ValueKind::One("N"),
        help: "Attempts before a job fails for good (1–100).",
        default: Shown::Value(|c| c.work.max_attempts.to_string()),
        secret: Secret::No,
        apply: |c, v| {
            c.work.max_attempts = count(1, 100)(v)? as u32;
            Ok(())
        },
    },
    Setting {
        key: "work-retry-backoff",
        env: &["LOGMESH_WORK_RETRY_BACKOFF"],
        value: ValueKind::One("DURATION"),
        help: "Wait before a failed job's second attempt; doubles per attempt, at most 1 minute.",
        default: Shown::Value(|c| duration(c.work.retry_backoff)),
        secret: Secret::No,
        apply: |c, v| {
            c.work.retry_backoff =
                between(Duration::from_millis(1), crate::work::MAX_RETRY_BACKOFF)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "work-max-result-bytes",
        env: &["LOGMESH_WORK_MAX_RESULT_BYTES"],
        value: ValueKind::One("SIZE"),
        help: "Bytes one job's result may hold; a larger one fails the job at once, keeping \
               nothing.",
        default: Shown::Value(|c| format_size(c.work.max_result_bytes)),
        secret: Secret::No,
        apply: |c, v| {
            c.work.max_result_bytes = size(1024, 1 << 40)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "work-max-results-bytes",
        env: &["LOGMESH_WORK_MAX_RESULTS_BYTES"],
        value: ValueKind::One("SIZE"),
        help: "Bytes all kept results may hold together (cluster: the object store's size, all \
               nodes together); a result that does not fit fails its job. At least \
               `work-max-result-bytes`.",
        default: Shown::Value(|c| format_size(c.work.max_results_bytes)),
        secret: Secret::No,
        apply: |c, v| {
            c.work.max_results_bytes = size(1024, 1 << 50)(v)?;
            Ok(())
        },
    },
    Setting {
        key: "log-format",
        env: &["LOGMESH_LOG_FORMAT"],
        value: ValueKind::One("FORMAT"),
        help: "`human` or `json` for logmesh's own logs (stderr). Level: `LOGMESH_LOG` or \
               `RUST_LOG`, default `info`.",
        default: Shown::Value(|c| match c.log_format {
            LogFormat::Human => "human".into(),
            LogFormat::Json => "json".into(),
        }),
        secret: Secret::No,
        apply: |c, v| {
            c.log_format = match v {
                "human" => LogFormat::Human,
                "json" => LogFormat::Json,
                _ => return Err("expected human or json".into()),
            };
            Ok(())
        },
    },
];

/// The setting named `key`.
pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|setting| setting.key == key)
}

impl Setting {
    /// The default as shown, from `defaults`.
    pub fn shown_default(&self, defaults: &NodeConfig) -> String {
        match self.default {
            Shown::Value(read) => read(defaults),
            Shown::Text(text) => text.to_owned(),
        }
    }

    /// The `--help` line: the help, the environment variables and the default.
    pub fn help_line(&self, defaults: &NodeConfig) -> String {
        format!(
            "{} [env: {}] [default: {}]",
            self.help,
            self.env.join(" or "),
            self.shown_default(defaults).replace('`', "")
        )
    }
}

/// The configuration table of docs/configuration.md, made from [`SETTINGS`].
pub fn markdown_table() -> String {
    let defaults = NodeConfig::default();
    let mut table =
        String::from("| flag / TOML key | environment | default | |\n|---|---|---|---|\n");
    for setting in SETTINGS {
        let env: Vec<String> = setting.env.iter().map(|name| format!("`{name}`")).collect();
        let mut env = env.join(", ");
        if let ValueKind::List(_, separator) = setting.value {
            let name = if separator == ':' { "colon" } else { "comma" };
            env.push_str(&format!(" ({name}-separated)"));
        }
        let default = match setting.default {
            Shown::Text(text) => text.to_owned(),
            Shown::Value(read) => {
                let value = read(&defaults);
                if value.chars().all(|c| c.is_ascii_digit()) || value == "false" {
                    value
                } else {
                    format!("`{value}`")
                }
            }
        };
        let mut help = setting.help.to_owned();
        if let ValueKind::List(..) = setting.value {
            help.push_str(" TOML: a string or an array of strings.");
        }
        table.push_str(&format!(
            "| `--{key}` `{key}` | {env} | {default} | {help} |\n",
            key = setting.key
        ));
    }
    table
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

/// Host names, one per line or separated by commas: `name`, `.domain` or `*`.
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

/// A TLS file setting: a path, checked to be a readable file when the listener starts.
fn tls_file(value: &str) -> Result<PathBuf, String> {
    let path = value.trim();
    if path.is_empty() {
        return Err("expected a file".into());
    }
    Ok(PathBuf::from(path))
}
