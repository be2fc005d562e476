//! `logmesh bench store`: writes generated events in batches straight through the [`Store`]
//! port into a database, and reports rows per second and the commit latency of a batch.
//! It measures the store adapters alone, without HTTP, queue or event log.
//!
//! Invariants: every event has a fresh id (UUIDv7), so every row is really inserted (a
//! skipped one is an error); the bench adds rows, so it refuses a database that already holds
//! events rather than mixing its rows into real ones; only `write_batch` is timed, not the
//! generation of the events.

use crate::client::EXIT_USAGE;
use crate::event::{Event, Severity, now_us};
use crate::store::{self, DatabaseUrl, Store};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::value::RawValue;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The longest commit the latency histogram records exactly, in microseconds (10 minutes).
const MAX_RECORDED_US: u64 = 600_000_000;

#[derive(Debug, Clone, Args)]
pub struct StoreBenchArgs {
    /// Database to write into: sqlite://PATH, postgres://… or mysql://… (mariadb:// too).
    /// Use an empty, throwaway database: the bench adds its events to `service_logs` and
    /// `service_severity`, and refuses a database that already holds events.
    #[arg(long, value_name = "URL")]
    pub database: String,
    /// Events to write.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub events: u64,
    /// Events per batch, i.e. per transaction.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_size: u32,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What a store benchmark run measured.
#[derive(Debug, Serialize)]
pub struct StoreReport {
    /// The database, password redacted.
    pub database: String,
    pub events: u64,
    pub batch_size: u32,
    pub batches: u64,
    /// Time spent in `write_batch`, summed over the batches.
    pub seconds: f64,
    pub rows_per_second: f64,
    pub commit_ms_p50: f64,
    pub commit_ms_p99: f64,
    pub commit_ms_max: f64,
}

pub async fn run(args: StoreBenchArgs) -> ExitCode {
    let url = match DatabaseUrl::parse(&args.database) {
        Ok(url) => url,
        Err(error) => {
            eprintln!("logmesh bench store: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let store = match store::open(&url).await {
        Ok(store) => store,
        Err(error) => {
            eprintln!("logmesh bench store: {error}");
            return ExitCode::FAILURE;
        }
    };
    match store.severity_counts().await {
        Ok(counts) => {
            let held: i64 = counts.iter().map(|c| c.count).sum();
            if held > 0 {
                eprintln!(
                    "logmesh bench store: {url} already holds {held} events; the bench adds \
                     rows, so give it an empty, throwaway database (a new sqlite:// file or a \
                     newly created server database)"
                );
                return ExitCode::from(EXIT_USAGE);
            }
        }
        Err(error) => {
            eprintln!("logmesh bench store: {error}");
            return ExitCode::FAILURE;
        }
    }
    match write(store.as_ref(), &url, &args).await {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("report serialises")
                );
            } else {
                print_report(&report);
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("logmesh bench store: {error}");
            ExitCode::FAILURE
        }
    }
}

fn print_report(report: &StoreReport) {
    println!(
        "{}: {} events in {} batches of {}",
        report.database, report.events, report.batches, report.batch_size
    );
    println!(
        "throughput:     {:.0} rows/s ({:.2} s in write_batch)",
        report.rows_per_second, report.seconds
    );
    println!(
        "commit latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        report.commit_ms_p50, report.commit_ms_p99, report.commit_ms_max
    );
}

/// Builds events like a busy node's: four services, four severities, ~85-byte messages of 12
/// words that vary from event to event as log lines do (those of `bench search`, so the
/// keyword indexes cost what they would), attributes on every other event.
pub(crate) struct Generator {
    attributes: Box<RawValue>,
    next: u64,
}

impl Generator {
    pub(crate) fn new() -> Generator {
        let attributes = RawValue::from_string(r#"{"route":"/api/v1/pay","status":200}"#.into())
            .expect("valid JSON");
        Generator {
            attributes,
            next: 0,
        }
    }

    fn batch(&mut self, size: usize) -> Vec<Arc<Event>> {
        self.batch_at(size, now_us())
    }

    /// A batch of events stamped `ts_us`.
    pub(crate) fn batch_at(&mut self, size: usize, ts_us: i64) -> Vec<Arc<Event>> {
        const SERVICES: [&str; 4] = ["api", "billing", "auth", "search"];
        const SEVERITIES: [Severity; 4] = [
            Severity::Info,
            Severity::Warn,
            Severity::Error,
            Severity::Debug,
        ];
        let now = now_us();
        (0..size)
            .map(|_| {
                let n = self.next as usize;
                self.next += 1;
                Arc::new(Event {
                    id: uuid::Uuid::now_v7().to_string(),
                    ts_us,
                    service: SERVICES[n % SERVICES.len()].to_owned(),
                    severity: SEVERITIES[n / SERVICES.len() % SEVERITIES.len()],
                    message: super::search::message(n as u64),
                    attributes: n.is_multiple_of(2).then(|| self.attributes.clone()),
                    node: "bench".to_owned(),
                    received_us: now,
                })
            })
            .collect()
    }
}

pub async fn write(
    store: &dyn Store,
    url: &DatabaseUrl,
    args: &StoreBenchArgs,
) -> Result<StoreReport, String> {
    let mut latencies =
        Histogram::<u64>::new_with_bounds(1, MAX_RECORDED_US, 3).expect("valid histogram bounds");
    let mut generator = Generator::new();
    let (mut written, mut batches) = (0u64, 0u64);
    let mut in_store = Duration::ZERO;
    let started = Instant::now();
    let mut last_progress = started;
    while written < args.events {
        let size = (args.events - written).min(u64::from(args.batch_size)) as usize;
        let batch = generator.batch(size);
        let commit = Instant::now();
        let outcome = store
            .write_batch(batch)
            .await
            .map_err(|e| format!("batch {} failed: {e}", batches + 1))?;
        let took = commit.elapsed();
        in_store += took;
        let _ = latencies.record((took.as_micros() as u64).clamp(1, MAX_RECORDED_US));
        if outcome.inserted != size {
            return Err(format!(
                "the store skipped {} of {size} events with fresh ids",
                size - outcome.inserted
            ));
        }
        written += size as u64;
        batches += 1;
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            eprintln!(
                "[{:>4.0}s] {:>9} of {} events written ({:.0} rows/s in write_batch)",
                started.elapsed().as_secs_f64(),
                written,
                args.events,
                written as f64 / in_store.as_secs_f64()
            );
        }
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    let seconds = in_store.as_secs_f64();
    Ok(StoreReport {
        database: url.to_string(),
        events: written,
        batch_size: args.batch_size,
        batches,
        seconds,
        rows_per_second: written as f64 / seconds,
        commit_ms_p50: ms(latencies.value_at_quantile(0.50)),
        commit_ms_p99: ms(latencies.value_at_quantile(0.99)),
        commit_ms_max: ms(latencies.max()),
    })
}
