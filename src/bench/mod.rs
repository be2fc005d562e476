//! `logmesh bench`: load generators that report throughput and latency. `ingest` drives
//! running nodes over HTTP (acknowledgement latency and, with `--event-log`, replication lag);
//! `relp` ([`relp`]) drives a RELP listener; `store` ([`store`]) writes straight into a database through the store port (commit
//! latency); `search` ([`search`]) fills a database through the store port and times keyword
//! searches. Speed is measured here, never in tests.

pub mod counter;
pub mod expiry;
pub mod relp;
mod replication;
pub mod search;
pub mod store;
pub mod work;

use crate::units::parse_duration;
use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a load-generator connection pauses after a 503 before sending again.
const SHED_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Ingest load: NDJSON batches to /api/v1/logs or single events to /event.
    Ingest(IngestBenchArgs),
    /// Store load: batches of generated events written straight into an empty, throwaway
    /// database through the store port.
    Store(store::StoreBenchArgs),
    /// Counter load: POST /metrics increments from many connections.
    Counter(counter::CounterBenchArgs),
    /// Search latency: fills an empty, throwaway database with generated events through the
    /// store port, then times keyword searches of three selectivities.
    Search(search::SearchBenchArgs),
    /// Work throughput: small count jobs from submission to worked, and their latency.
    Work(work::WorkBenchArgs),
    /// RELP load: senders as rsyslog's omrelp against a node's relp:// listener; messages
    /// answered per second and the latency to each answer (given once durable).
    Relp(relp::RelpBenchArgs),
    /// Expiry: fills an empty, throwaway database with old events through the store port,
    /// then times their expiry and the store writer's rate during it against without it.
    Expiry(expiry::ExpiryBenchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestMode {
    /// POST /api/v1/logs with NDJSON bodies of --batch-events events.
    Ndjson,
    /// POST /event with one raw-text event per request.
    Single,
    /// POST /_bulk with Elasticsearch bulk bodies of --batch-events documents.
    Bulk,
    /// POST /v1/logs with OTLP protobuf bodies of --batch-events records (one resource per
    /// service, as an SDK or Collector batches them).
    Otlp,
    /// POST /loki/api/v1/push with snappy-compressed protobuf bodies of --batch-events entries
    /// (one stream per service and level, as Promtail batches them).
    Loki,
}

#[derive(Debug, Clone, Args)]
pub struct IngestBenchArgs {
    /// Node to drive; repeat to spread the connections over several nodes.
    #[arg(long = "url", default_value = "http://127.0.0.1:5555")]
    pub urls: Vec<String>,
    /// Bearer token, if the node requires one.
    #[arg(long, env = "LOGMESH_API_TOKEN")]
    pub api_token: Option<String>,
    #[arg(long, value_enum, default_value = "ndjson")]
    pub mode: IngestMode,
    /// How long to send for, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Concurrent connections [default: 8 for ndjson and bulk, 64 for single].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Events per NDJSON request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_events: u32,
    /// Approximate size of one event's JSON, in bytes.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(64..=65_536))]
    pub event_bytes: u32,
    /// Total events per second to offer (spread over the connections); unlimited if unset.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// An event log directory of a node on this machine; repeat for every node. Probe events
    /// are then sent every 10 ms and the report gives the lag from their 202 to their line in
    /// every one of these directories' events.log.
    #[arg(long = "event-log", value_name = "DIR")]
    pub event_logs: Vec<std::path::PathBuf>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What a benchmark run measured.
#[derive(Debug, Serialize)]
pub struct IngestReport {
    pub mode: IngestMode,
    pub connections: usize,
    pub seconds: f64,
    pub requests_acknowledged: u64,
    pub events_acknowledged: u64,
    pub requests_shed_503: u64,
    pub requests_failed: u64,
    pub events_per_second: f64,
    pub requests_per_second: f64,
    pub ack_latency_ms_p50: f64,
    pub ack_latency_ms_p99: f64,
    pub ack_latency_ms_max: f64,
    /// From a probe's 202 to its line in the last of the `--event-log` files.
    pub replication: Option<replication::LagReport>,
}

pub async fn run(command: BenchCommand) -> ExitCode {
    match command {
        BenchCommand::Ingest(args) => match ingest(&args).await {
            Ok(report) => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).expect("report serialises")
                    );
                } else {
                    print_report(&report);
                }
                if report.requests_acknowledged == 0 {
                    eprintln!("logmesh bench: no request was acknowledged");
                    return ExitCode::FAILURE;
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("logmesh bench: {error}");
                ExitCode::FAILURE
            }
        },
        BenchCommand::Store(args) => store::run(args).await,
        BenchCommand::Counter(args) => counter::run(args).await,
        BenchCommand::Search(args) => search::run(args).await,
        BenchCommand::Work(args) => work::run(args).await,
        BenchCommand::Relp(args) => relp::run(args).await,
        BenchCommand::Expiry(args) => expiry::run(args).await,
    }
}

fn print_report(report: &IngestReport) {
    println!(
        "mode {:?}, {} connections, {:.1} s",
        report.mode, report.connections, report.seconds
    );
    println!(
        "acknowledged: {} requests, {} events ({} shed with 503 or 429, {} failed)",
        report.requests_acknowledged,
        report.events_acknowledged,
        report.requests_shed_503,
        report.requests_failed
    );
    println!(
        "throughput:   {:.0} events/s, {:.0} requests/s",
        report.events_per_second, report.requests_per_second
    );
    println!(
        "ack latency:  p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        report.ack_latency_ms_p50, report.ack_latency_ms_p99, report.ack_latency_ms_max
    );
    if let Some(lag) = &report.replication {
        println!(
            "replication:  {} of {} probes in all {} event logs; lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            lag.probes_replicated,
            lag.probes_acknowledged,
            lag.event_logs,
            lag.lag_ms_p50,
            lag.lag_ms_p99,
            lag.lag_ms_max
        );
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    events: AtomicU64,
    shed: AtomicU64,
    failed: AtomicU64,
}

/// Event `n`'s message, `len` bytes of ASCII: a request log line whose words change from
/// event to event (ids, users, paths, timings), as real lines do, so that the keyword index
/// does the work real lines give it. (One repeated 140-letter token, as this bench sent
/// before, costs the index one entry a row.)
fn bench_message(n: u64, len: usize) -> String {
    let mut line = format!(
        "{} path=/v1/items/{} trace={:016x} host=web{} region=eu{}",
        search::message(n),
        n % 1_000_003,
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        n % 16,
        n % 3
    );
    while line.len() < len {
        line.push_str(" cache=miss retry=0");
    }
    line.truncate(len);
    line
}

/// Builds request bodies: a few distinct ones, reused round-robin.
fn bodies(args: &IngestBenchArgs) -> Vec<bytes::Bytes> {
    // The JSON envelope around the message is about 60 bytes.
    let message_len = (args.event_bytes as usize).saturating_sub(60).max(8);
    let events = args.batch_events as usize;
    (0..16)
        .map(|variant| {
            let messages: Vec<String> = (0..events)
                .map(|i| bench_message((variant * events + i) as u64, message_len))
                .collect();
            match args.mode {
                IngestMode::Single => {
                    bytes::Bytes::from(bench_message(variant as u64, message_len))
                }
                IngestMode::Bulk => {
                    let mut body = String::new();
                    for (i, message) in messages.iter().enumerate() {
                        body.push_str("{\"index\":{\"_index\":\"bench\"}}\n");
                        let document = serde_json::json!({
                            "service": SERVICES[(i + variant) % SERVICES.len()],
                            "level": SEVERITIES[i % SEVERITIES.len()],
                            "message": message,
                        });
                        body.push_str(&document.to_string());
                        body.push('\n');
                    }
                    bytes::Bytes::from(body)
                }
                IngestMode::Otlp => otlp_body(&messages, variant),
                IngestMode::Loki => loki_body(&messages, variant),
                IngestMode::Ndjson => {
                    let mut body = String::new();
                    for (i, message) in messages.iter().enumerate() {
                        let line = serde_json::json!({
                            "service": SERVICES[(i + variant) % SERVICES.len()],
                            "severity": SEVERITIES[i % SEVERITIES.len()],
                            "message": message,
                        });
                        body.push_str(&line.to_string());
                        body.push('\n');
                    }
                    bytes::Bytes::from(body)
                }
            }
        })
        .collect()
}

const SERVICES: [&str; 4] = ["api", "billing", "auth", "search"];
const SEVERITIES: [&str; 4] = ["info", "warn", "error", "debug"];

/// An OTLP `ExportLogsServiceRequest`, a record per message, over the four services.
fn otlp_body(messages: &[String], variant: usize) -> bytes::Bytes {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;
    let text = |text: &str| {
        Some(AnyValue {
            value: Some(Value::StringValue(text.to_owned())),
        })
    };
    // SDK severity numbers of info, warn, error and debug.
    const NUMBERS: [i32; 4] = [9, 13, 17, 5];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let resource_logs = (0..SERVICES.len())
        .map(|s| ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: text(SERVICES[(s + variant) % SERVICES.len()]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: (0..messages.len())
                    .filter(|i| i % SERVICES.len() == s)
                    .map(|i| LogRecord {
                        time_unix_nano: now,
                        severity_number: NUMBERS[i % NUMBERS.len()],
                        body: text(&messages[i]),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    bytes::Bytes::from(ExportLogsServiceRequest { resource_logs }.encode_to_vec())
}

/// A snappy-compressed Loki `PushRequest`, an entry per message, one stream per service and
/// level.
fn loki_body(messages: &[String], variant: usize) -> bytes::Bytes {
    use crate::event::loki::{EntryAdapter, PushRequest, StreamAdapter};
    use prost::Message;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let timestamp = prost_types::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: now.subsec_nanos() as i32,
    };
    let streams = (0..SERVICES.len() * SEVERITIES.len())
        .map(|stream| StreamAdapter {
            labels: format!(
                "{{service_name=\"{}\", level=\"{}\"}}",
                SERVICES[(stream / SEVERITIES.len() + variant) % SERVICES.len()],
                SEVERITIES[stream % SEVERITIES.len()]
            ),
            entries: (0..messages.len())
                .filter(|i| i % (SERVICES.len() * SEVERITIES.len()) == stream)
                .map(|i| EntryAdapter {
                    timestamp: Some(timestamp),
                    line: messages[i].clone(),
                    structured_metadata: Vec::new(),
                })
                .collect(),
            hash: 0,
        })
        .filter(|stream| !stream.entries.is_empty())
        .collect();
    let encoded = PushRequest { streams }.encode_to_vec();
    bytes::Bytes::from(
        snap::raw::Encoder::new()
            .compress_vec(&encoded)
            .expect("snappy compresses any input"),
    )
}

pub async fn ingest(args: &IngestBenchArgs) -> Result<IngestReport, String> {
    let connections = args.connections.unwrap_or(match args.mode {
        IngestMode::Ndjson | IngestMode::Bulk | IngestMode::Otlp | IngestMode::Loki => 8,
        IngestMode::Single => 64,
    });
    let (path, content_type, events_per_request) = match args.mode {
        IngestMode::Ndjson => (
            "/api/v1/logs",
            "application/x-ndjson",
            u64::from(args.batch_events),
        ),
        IngestMode::Single => ("/event?service=bench&severity=info", "text/plain", 1),
        IngestMode::Bulk => (
            "/_bulk",
            "application/x-ndjson",
            u64::from(args.batch_events),
        ),
        IngestMode::Otlp => (
            "/v1/logs",
            "application/x-protobuf",
            u64::from(args.batch_events),
        ),
        IngestMode::Loki => (
            "/loki/api/v1/push",
            "application/x-protobuf",
            u64::from(args.batch_events),
        ),
    };
    // Elasticsearch's bulk answers 200 with per-item results and refuses with 429 when full.
    let (accepted, shed) = match args.mode {
        IngestMode::Bulk => (
            reqwest::StatusCode::OK,
            reqwest::StatusCode::TOO_MANY_REQUESTS,
        ),
        IngestMode::Otlp => (
            reqwest::StatusCode::OK,
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
        ),
        IngestMode::Loki => (
            reqwest::StatusCode::NO_CONTENT,
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
        ),
        IngestMode::Ndjson | IngestMode::Single => (
            reqwest::StatusCode::ACCEPTED,
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
        ),
    };
    let endpoints: Vec<String> = args
        .urls
        .iter()
        .map(|url| format!("{}{path}", url.trim_end_matches('/')))
        .collect();
    // Each connection sends at most one request per `pace` when a rate is set.
    let pace = args.rate.map(|rate| {
        Duration::from_secs_f64(events_per_request as f64 * connections as f64 / rate as f64)
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let bodies = Arc::new(bodies(args));
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = started + args.duration;
    let progress = tokio::spawn(report_progress(counters.clone(), started, deadline));
    let probes = if args.event_logs.is_empty() {
        None
    } else {
        Some(replication::Probes::start(
            client.clone(),
            args.urls.clone(),
            args.api_token.clone(),
            args.event_logs.clone(),
            deadline,
        )?)
    };
    let mut workers = Vec::with_capacity(connections);
    for worker in 0..connections {
        let client = client.clone();
        let endpoint = endpoints[worker % endpoints.len()].clone();
        let bodies = bodies.clone();
        let counters = counters.clone();
        let token = args.api_token.clone();
        let mode = args.mode;
        workers.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .expect("valid histogram bounds");
            let mut turn = worker;
            let mut ticker = pace.map(|pace| {
                let mut ticker = tokio::time::interval(pace);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker
            });
            while Instant::now() < deadline {
                if let Some(ticker) = &mut ticker {
                    ticker.tick().await;
                }
                let body = bodies[turn % bodies.len()].clone();
                turn += 1;
                let mut request = client
                    .post(&endpoint)
                    .header("content-type", content_type)
                    .body(body);
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let sent = Instant::now();
                match request.send().await {
                    Ok(response) if response.status() == accepted => {
                        let answer = response.bytes().await.unwrap_or_default();
                        // A bulk answer may refuse items, an OTLP answer records (it is
                        // empty when it refuses none); the generated ones never should be.
                        let refused = match mode {
                            IngestMode::Bulk => {
                                memchr::memmem::find(&answer, b"\"errors\":true").is_some()
                            }
                            IngestMode::Otlp => !answer.is_empty(),
                            _ => false,
                        };
                        if refused {
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                            return Err(format!(
                                "{endpoint} refused items: {}",
                                String::from_utf8_lossy(&answer)
                            ));
                        }
                        let micros = sent.elapsed().as_micros() as u64;
                        let _ = latencies.record(micros.max(1));
                        counters.requests.fetch_add(1, Ordering::Relaxed);
                        counters
                            .events
                            .fetch_add(events_per_request, Ordering::Relaxed);
                    }
                    Ok(response) if response.status() == shed => {
                        counters.shed.fetch_add(1, Ordering::Relaxed);
                        let _ = response.bytes().await;
                        // Honour the node's back-pressure instead of hammering it.
                        tokio::time::sleep(SHED_BACKOFF).await;
                    }
                    Ok(response) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        return Err(format!("{endpoint} answered {status}: {text}"));
                    }
                    Err(error) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        return Err(format!("{endpoint}: {error}"));
                    }
                }
            }
            Ok(latencies)
        }));
    }
    let mut latencies =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let mut first_error = None;
    for worker in workers {
        match worker.await {
            Ok(Ok(histogram)) => latencies.add(&histogram).expect("same bounds"),
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(error) => {
                first_error.get_or_insert(error.to_string());
            }
        }
    }
    progress.abort();
    let seconds = started.elapsed().as_secs_f64();
    let replication = match probes {
        Some(probes) => Some(probes.finish().await),
        None => None,
    };
    if let Some(error) = first_error
        && counters.requests.load(Ordering::Relaxed) == 0
    {
        return Err(error);
    }
    let requests = counters.requests.load(Ordering::Relaxed);
    let events = counters.events.load(Ordering::Relaxed);
    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok(IngestReport {
        mode: args.mode,
        connections,
        seconds,
        requests_acknowledged: requests,
        events_acknowledged: events,
        requests_shed_503: counters.shed.load(Ordering::Relaxed),
        requests_failed: counters.failed.load(Ordering::Relaxed),
        events_per_second: events as f64 / seconds,
        requests_per_second: requests as f64 / seconds,
        ack_latency_ms_p50: ms(latencies.value_at_quantile(0.50)),
        ack_latency_ms_p99: ms(latencies.value_at_quantile(0.99)),
        ack_latency_ms_max: ms(latencies.max()),
        replication,
    })
}

async fn report_progress(counters: Arc<Counters>, started: Instant, deadline: Instant) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last_events = 0;
    while Instant::now() < deadline {
        ticker.tick().await;
        let events = counters.events.load(Ordering::Relaxed);
        eprintln!(
            "[{:>4.0}s] {:>9} events acknowledged ({:>7} in the last second), {} shed",
            started.elapsed().as_secs_f64(),
            events,
            events - last_events,
            counters.shed.load(Ordering::Relaxed)
        );
        last_events = events;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_messages_have_the_asked_length_and_words_that_change_per_event() {
        for len in [8, 140, 1_000] {
            assert_eq!(bench_message(7, len).len(), len);
        }
        let words = |n| -> Vec<String> {
            bench_message(n, 140)
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|word| !word.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let (first, second) = (words(1), words(2));
        assert!(first.len() >= 15, "{first:?}");
        let own = first.iter().filter(|word| !second.contains(word)).count();
        assert!(own >= 6, "{first:?} {second:?}");
    }
}
