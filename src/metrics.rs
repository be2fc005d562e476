//! The node's own operational metrics, on the official Prometheus client (`prometheus-client`):
//! one registry per node, so several nodes in one process (the tests) never mix their figures.
//! Rendered after the stored counters by `GET /metrics`, and as plain figures
//! ([`NodeMetrics::snapshot`]) by `GET /api/v1/node/stats` for the web console.

use crate::queue::QueueDepth;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

type Labels = Vec<(&'static str, String)>;

/// Why events were removed, the label of `logmesh_store_rows_expired_total`.
#[derive(Debug, Clone, Copy)]
pub enum Expired {
    /// Past `--retention`.
    Age,
    /// Over `--max-store-bytes`.
    Size,
}

impl Expired {
    pub fn label(self) -> &'static str {
        match self {
            Expired::Age => "age",
            Expired::Size => "size",
        }
    }
}

fn batch_size_histogram() -> Histogram {
    // 1 … 262,144 events.
    Histogram::new(exponential_buckets(1.0, 4.0, 10))
}

fn duration_histogram() -> Histogram {
    // 0.5 ms … ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct NodeMetrics {
    registry: Registry,
    ingest_events: Family<Labels, Counter>,
    batch_events: Family<Labels, Histogram>,
    batch_seconds: Family<Labels, Histogram>,
    http_requests: Family<Labels, Counter>,
    syslog: Family<Labels, Counter>,
    rows_expired: Family<Labels, Counter>,
    expiry_rounds: Counter,
    expired_on_arrival: Counter,
    requests_shed: Counter,
    queue_events: Gauge,
    queue_bytes: Gauge,
    /// Totals per sink for [`NodeMetrics::snapshot`]: the client's histograms do not expose
    /// their sums outside its test feature, and a family cannot be walked.
    sinks: Mutex<BTreeMap<&'static str, SinkStats>>,
    /// The syslog counters per listener, for the same reason.
    listeners: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
}

/// This node's operational figures at one instant: cumulative counts, so a client derives
/// rates and mean batch sizes from two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStats {
    pub events_accepted: u64,
    pub events_refused: u64,
    pub queue_depth_events: u64,
    pub queue_depth_bytes: u64,
    pub sinks: Vec<SinkStats>,
    /// Each syslog listener's counters (absent while it has counted nothing).
    pub syslog: Vec<ListenerStats>,
}

/// One syslog listener's counts so far: `connections`, `messages`, `bytes`, `unparsed`,
/// `dropped`, … as in `logmesh_syslog_total`.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerStats {
    pub listener: String,
    #[serde(flatten)]
    pub counts: BTreeMap<&'static str, u64>,
}

/// One writer's batches so far.
#[derive(Debug, Clone, Serialize)]
pub struct SinkStats {
    pub sink: &'static str,
    pub batches: u64,
    /// Events over all batches.
    pub events: u64,
    /// Seconds spent writing (flushing) all batches.
    pub write_seconds: f64,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics::new()
    }
}

impl NodeMetrics {
    pub fn new() -> NodeMetrics {
        let mut registry = Registry::with_prefix("logmesh");
        let ingest_events = Family::<Labels, Counter>::default();
        registry.register(
            "ingest_events",
            "Events this node accepted (outcome=accepted) or had to refuse after parsing them \
             (outcome=refused: queue full or unavailable)",
            ingest_events.clone(),
        );
        let batch_events =
            Family::<Labels, Histogram>::new_with_constructor(batch_size_histogram as fn() -> _);
        registry.register(
            "batch_events",
            "Events per batch written by this node's writers, by sink",
            batch_events.clone(),
        );
        let batch_seconds =
            Family::<Labels, Histogram>::new_with_constructor(duration_histogram as fn() -> _);
        registry.register(
            "batch_write_seconds",
            "Time to write (flush) one batch, by sink",
            batch_seconds.clone(),
        );
        let http_requests = Family::<Labels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests this node answered, by route, method and status",
            http_requests.clone(),
        );
        let syslog = Family::<Labels, Counter>::default();
        registry.register(
            "syslog",
            "What this node's syslog listeners saw, by listener and what: connections, messages, \
             bytes, unparsed (kept raw with service syslog), dropped (UDP datagrams the queue \
             could not take), refused (peers outside --syslog-allow, connections past the cap), \
             broken (connections closed for their framing or, RELP, their protocol), lost (read, refused for good), \
             truncated (RELP messages cut to the longest taken)",
            syslog.clone(),
        );
        let rows_expired = Family::<Labels, Counter>::default();
        registry.register(
            "store_rows_expired",
            "Stored events this node removed, by reason: past --retention (age) or over \
             --max-store-bytes (size)",
            rows_expired.clone(),
        );
        let expiry_rounds = Counter::default();
        registry.register(
            "store_expiry_rounds",
            "Rounds of expiry this node ran (in a cluster, those it ran holding the expiry lease)",
            expiry_rounds.clone(),
        );
        let expired_on_arrival = Counter::default();
        registry.register(
            "events_expired_on_arrival",
            "Events acknowledged but not stored because they arrived already past --retention \
             (--late-events expire)",
            expired_on_arrival.clone(),
        );
        let requests_shed = Counter::default();
        registry.register(
            "ingest_requests_shed",
            "HTTP ingest requests refused (503; 429 for Elasticsearch bulk) before they were \
             parsed, while the full queue drained below nine tenths of its limits; their events \
             are in no ingest_events count",
            requests_shed.clone(),
        );
        let queue_events = Gauge::default();
        registry.register(
            "queue_depth_events",
            "Events accepted but not yet written by every consumer (cluster: stream messages)",
            queue_events.clone(),
        );
        let queue_bytes = Gauge::default();
        registry.register(
            "queue_depth_bytes",
            "Bytes accepted but not yet written by every consumer",
            queue_bytes.clone(),
        );
        NodeMetrics {
            registry,
            ingest_events,
            batch_events,
            batch_seconds,
            http_requests,
            syslog,
            rows_expired,
            expiry_rounds,
            expired_on_arrival,
            requests_shed,
            queue_events,
            queue_bytes,
            sinks: Mutex::new(BTreeMap::new()),
            listeners: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts `n` of `what` (connections, messages, bytes, unparsed, dropped, refused) for the
    /// syslog listener `listener` (its URL).
    pub fn syslog(&self, listener: &str, what: &'static str, n: u64) {
        {
            let mut listeners = self
                .listeners
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !listeners.contains_key(listener) {
                listeners.insert(listener.to_owned(), BTreeMap::new());
            }
            if let Some(counts) = listeners.get_mut(listener) {
                *counts.entry(what).or_insert(0) += n;
            }
        }
        self.syslog
            .get_or_create(&vec![
                ("listener", listener.to_owned()),
                ("what", what.to_owned()),
            ])
            .inc_by(n);
    }

    pub fn rows_expired(&self, reason: Expired, rows: usize) {
        self.rows_expired
            .get_or_create(&vec![("reason", reason.label().to_owned())])
            .inc_by(rows as u64);
    }

    pub fn events_expired_on_arrival(&self, events: usize) {
        self.expired_on_arrival.inc_by(events as u64);
    }

    pub fn request_shed(&self) {
        self.requests_shed.inc();
    }

    pub fn expiry_round(&self) {
        self.expiry_rounds.inc();
    }

    pub fn events_accepted(&self, events: usize) {
        self.ingest_events
            .get_or_create(&vec![("outcome", "accepted".to_owned())])
            .inc_by(events as u64);
    }

    pub fn events_refused(&self, events: usize) {
        self.ingest_events
            .get_or_create(&vec![("outcome", "refused".to_owned())])
            .inc_by(events as u64);
    }

    pub fn batch_written(&self, sink: &'static str, events: usize, took: Duration) {
        {
            let mut sinks = self
                .sinks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let totals = sinks.entry(sink).or_insert(SinkStats {
                sink,
                batches: 0,
                events: 0,
                write_seconds: 0.0,
            });
            totals.batches += 1;
            totals.events += events as u64;
            totals.write_seconds += took.as_secs_f64();
        }
        let labels = vec![("sink", sink.to_owned())];
        self.batch_events
            .get_or_create(&labels)
            .observe(events as f64);
        self.batch_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn http_request(&self, route: &str, method: &str, status: u16) {
        self.http_requests
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("method", method.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
    }

    /// The figures the web console charts: the same events [`Self::render`] exposes, as totals.
    pub fn snapshot(&self, depth: QueueDepth) -> NodeStats {
        let outcome = |outcome: &str| {
            self.ingest_events
                .get(&vec![("outcome", outcome.to_owned())])
                .map_or(0, |counter| counter.get())
        };
        NodeStats {
            events_accepted: outcome("accepted"),
            events_refused: outcome("refused"),
            queue_depth_events: depth.events as u64,
            queue_depth_bytes: depth.bytes as u64,
            sinks: self
                .sinks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .values()
                .cloned()
                .collect(),
            syslog: self
                .listeners
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .iter()
                .map(|(listener, counts)| ListenerStats {
                    listener: listener.clone(),
                    counts: counts.clone(),
                })
                .collect(),
        }
    }

    /// The registry in the Prometheus text format 0.0.4, like the rest of `GET /metrics`.
    pub fn render(&self, depth: QueueDepth) -> String {
        self.queue_events.set(depth.events as i64);
        self.queue_bytes.set(depth.bytes as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        openmetrics_to_text_format(&text)
    }
}

/// The client writes OpenMetrics, where a counter family `x` has samples `x_total` and the text
/// ends with `# EOF`. In the 0.0.4 text format a family is named like its samples, so counter
/// families are renamed `x_total` in their HELP and TYPE lines, and `# EOF` is dropped (the
/// response goes on after it).
fn openmetrics_to_text_format(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_holds_the_cumulative_figures() {
        let metrics = NodeMetrics::new();
        metrics.events_accepted(3);
        metrics.events_accepted(2);
        metrics.events_refused(1);
        metrics.batch_written("store", 4, Duration::from_millis(2));
        metrics.batch_written("store", 1, Duration::from_millis(4));
        let stats = metrics.snapshot(QueueDepth {
            events: 7,
            bytes: 700,
        });
        assert_eq!(stats.events_accepted, 5);
        assert_eq!(stats.events_refused, 1);
        assert_eq!(stats.queue_depth_events, 7);
        assert_eq!(stats.sinks.len(), 1);
        assert_eq!(stats.sinks[0].sink, "store");
        assert_eq!(stats.sinks[0].batches, 2);
        assert_eq!(stats.sinks[0].events, 5);
        assert!((stats.sinks[0].write_seconds - 0.006).abs() < 1e-9);
    }

    #[test]
    fn every_instrument_renders() {
        let metrics = NodeMetrics::new();
        metrics.events_accepted(3);
        metrics.batch_written("store", 3, Duration::from_millis(2));
        metrics.http_request("/api/v1/logs", "POST", 202);
        let text = metrics.render(QueueDepth {
            events: 7,
            bytes: 700,
        });
        assert!(
            text.contains("logmesh_ingest_events_total{outcome=\"accepted\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("logmesh_batch_events_count{sink=\"store\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("logmesh_batch_write_seconds_bucket{le="),
            "{text}"
        );
        assert!(
            text.contains(
                "logmesh_http_requests_total{route=\"/api/v1/logs\",method=\"POST\",status=\"202\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("logmesh_queue_depth_events 7"), "{text}");
        assert!(!text.contains("# EOF"));
        assert!(
            text.contains("# TYPE logmesh_http_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP logmesh_ingest_events_total Events"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE logmesh_batch_events histogram"),
            "{text}"
        );
    }
}
