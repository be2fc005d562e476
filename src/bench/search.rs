//! `logmesh bench search`: fills an empty, throwaway database with generated events through
//! the [`Store`] port (batches of `--batch-size`, one transaction each, text index maintained
//! as in production), then times [`Store::search`] keyword queries of three selectivities and
//! reports p50/p99/max per class.
//!
//! Invariants: the bench refuses a database that already holds events unless `--skip-fill`
//! says it holds a previous run's events (then it only queries); only `search` calls are timed
//! in the query phase; every query must find at least one event, or the run fails.

use crate::client::EXIT_USAGE;
use crate::event::{Event, Severity};
use crate::store::{self, DatabaseUrl, SearchQuery, Store};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use sqlx::Connection;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often fill progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The longest query the histogram records exactly, in microseconds (10 minutes).
const MAX_RECORDED_US: u64 = 600_000_000;

/// The first generated event's timestamp (2026-01-01T00:00:00Z); one event per millisecond.
const FIRST_TS_US: i64 = 1_767_225_600_000_000;

#[derive(Debug, Clone, Args)]
pub struct SearchBenchArgs {
    /// Database to fill and query: sqlite://PATH, postgres://… or mysql://… (mariadb:// too).
    /// Use an empty, throwaway database and drop it afterwards.
    #[arg(long, value_name = "URL")]
    pub database: String,
    /// Events to generate.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(100_000..=100_000_000))]
    pub events: u64,
    /// Events per batch (transaction) while filling.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_size: u32,
    /// Queries per selectivity class.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub queries: u32,
    /// Results per query (the search's limit).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// The database already holds this bench's events (a previous run): only query.
    #[arg(long)]
    pub skip_fill: bool,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Latency of one class of keyword queries.
#[derive(Debug, Serialize)]
pub struct QueryClass {
    /// How many events hold the word, e.g. "1 in 1,000".
    pub matches: String,
    pub queries: u32,
    pub ms_p50: f64,
    pub ms_p99: f64,
    pub ms_max: f64,
}

#[derive(Debug, Serialize)]
pub struct SearchReport {
    /// The database, password redacted.
    pub database: String,
    pub events: u64,
    /// Seconds spent filling (0 with `--skip-fill`).
    pub fill_seconds: f64,
    pub fill_rows_per_second: f64,
    pub limit: u32,
    pub classes: Vec<QueryClass>,
}

/// The words a generated message holds beyond its fixed ones: `rare<n>` is in 1 event of
/// 100,000, `tok<n>` in 1 of 1,000, `grp<n>` in 1 of 10.
pub(crate) fn message(n: u64) -> String {
    format!(
        "GET /api/v1/orders/{} user u{} status {} took {} ms rare{:05} tok{:03} grp{}",
        n % 100_000,
        n % 7_919,
        [200, 201, 404, 500][(n % 4) as usize],
        n % 997,
        n % 100_000,
        (n / 7) % 1_000,
        (n / 3) % 10
    )
}

fn batch(from: u64, size: u64) -> Vec<Arc<Event>> {
    const SERVICES: [&str; 4] = ["api", "billing", "auth", "search"];
    const SEVERITIES: [Severity; 4] = [
        Severity::Info,
        Severity::Warn,
        Severity::Error,
        Severity::Debug,
    ];
    (from..from + size)
        .map(|n| {
            let ts = FIRST_TS_US + n as i64 * 1_000;
            Arc::new(Event {
                id: uuid::Uuid::now_v7().to_string(),
                ts_us: ts,
                service: SERVICES[(n % 4) as usize].to_owned(),
                severity: SEVERITIES[((n / 4) % 4) as usize],
                message: message(n),
                attributes: None,
                node: "bench".to_owned(),
                received_us: ts,
            })
        })
        .collect()
}

pub async fn run(args: SearchBenchArgs) -> ExitCode {
    let url = match DatabaseUrl::parse(&args.database) {
        Ok(url) => url,
        Err(error) => {
            eprintln!("logmesh bench search: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let store = match store::open(&url).await {
        Ok(store) => store,
        Err(error) => {
            eprintln!("logmesh bench search: {error}");
            return ExitCode::FAILURE;
        }
    };
    let held: i64 = match store.severity_counts().await {
        Ok(counts) => counts.iter().map(|c| c.count).sum(),
        Err(error) => {
            eprintln!("logmesh bench search: {error}");
            return ExitCode::FAILURE;
        }
    };
    if !args.skip_fill && held > 0 {
        eprintln!(
            "logmesh bench search: {url} already holds {held} events; give it an empty, \
             throwaway database, or pass --skip-fill to query a previous run's events"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if args.skip_fill && held as u64 != args.events {
        eprintln!(
            "logmesh bench search: --skip-fill, but {url} holds {held} events, not --events \
             {}",
            args.events
        );
        return ExitCode::from(EXIT_USAGE);
    }
    match bench(store.as_ref(), &url, &args).await {
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
            eprintln!("logmesh bench search: {error}");
            ExitCode::FAILURE
        }
    }
}

fn print_report(report: &SearchReport) {
    println!("{}: {} events", report.database, report.events);
    if report.fill_seconds > 0.0 {
        println!(
            "fill:    {:.0} rows/s ({:.1} s, text index maintained)",
            report.fill_rows_per_second, report.fill_seconds
        );
    }
    for class in &report.classes {
        println!(
            "keyword in {:>11} events: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} queries, limit {})",
            class.matches, class.ms_p50, class.ms_p99, class.ms_max, class.queries, report.limit
        );
    }
}

async fn fill(store: &dyn Store, args: &SearchBenchArgs) -> Result<f64, String> {
    let started = Instant::now();
    let mut last_progress = started;
    let mut written = 0;
    while written < args.events {
        let size = (args.events - written).min(u64::from(args.batch_size));
        let outcome = store
            .write_batch(batch(written, size))
            .await
            .map_err(|e| format!("filling: {e}"))?;
        if outcome.inserted as u64 != size {
            return Err(format!(
                "the store skipped {} of {size} events with fresh ids",
                size - outcome.inserted as u64
            ));
        }
        written += size;
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            eprintln!(
                "[{:>5.0}s] {written:>10} of {} events written ({:.0} rows/s)",
                started.elapsed().as_secs_f64(),
                args.events,
                written as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Fresh planner statistics after the bulk load, as an operator would have after autovacuum
/// or a nightly ANALYZE. On PostgreSQL a VACUUM too: the planner costs the GIN words index
/// from counts only VACUUM updates (autovacuum does both after enough inserts).
async fn analyze(url: &DatabaseUrl) -> Result<(), String> {
    let failed = |e: sqlx::Error| format!("ANALYZE failed: {e}");
    match url {
        DatabaseUrl::Sqlite(_) => {}
        DatabaseUrl::Postgres(url) => {
            let mut connection = sqlx::PgConnection::connect(url).await.map_err(failed)?;
            sqlx::query("VACUUM ANALYZE service_logs")
                .execute(&mut connection)
                .await
                .map_err(failed)?;
        }
        DatabaseUrl::Mysql(url) => {
            let mut connection = sqlx::MySqlConnection::connect(url).await.map_err(failed)?;
            sqlx::query("ANALYZE TABLE service_logs")
                .execute(&mut connection)
                .await
                .map_err(failed)?;
        }
    }
    Ok(())
}

/// The `i`-th word of a query class.
type WordFn = fn(u64) -> String;

pub async fn bench(
    store: &dyn Store,
    url: &DatabaseUrl,
    args: &SearchBenchArgs,
) -> Result<SearchReport, String> {
    let fill_seconds = if args.skip_fill {
        0.0
    } else {
        fill(store, args).await?
    };
    analyze(url).await?;
    let classes: [(&str, u64, WordFn); 3] = [
        ("1 in 100,000", 100_000, |i| {
            format!("rare{:05}", i % 100_000)
        }),
        ("1 in 1,000", 1_000, |i| format!("tok{:03}", i % 1_000)),
        ("1 in 10", 10, |i| format!("grp{}", i % 10)),
    ];
    let mut report = Vec::new();
    for (matches, words, word) in classes {
        let mut latencies = Histogram::<u64>::new_with_bounds(1, MAX_RECORDED_US, 3)
            .expect("valid histogram bounds");
        for i in 0..u64::from(args.queries) {
            // Spread the words over their range, so queries do not repeat one word.
            let query = SearchQuery {
                q: Some(word(i * 7_919 % words)),
                limit: args.limit,
                ..SearchQuery::default()
            };
            let started = Instant::now();
            let page = store
                .search(&query)
                .await
                .map_err(|e| format!("query {:?}: {e}", query.q))?;
            let took = started.elapsed();
            if page.events.is_empty() {
                return Err(format!("query {:?} found nothing", query.q));
            }
            let _ = latencies.record((took.as_micros() as u64).clamp(1, MAX_RECORDED_US));
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        report.push(QueryClass {
            matches: matches.to_owned(),
            queries: args.queries,
            ms_p50: ms(latencies.value_at_quantile(0.50)),
            ms_p99: ms(latencies.value_at_quantile(0.99)),
            ms_max: ms(latencies.max()),
        });
    }
    Ok(SearchReport {
        database: url.to_string(),
        events: args.events,
        fill_seconds,
        fill_rows_per_second: if fill_seconds > 0.0 {
            args.events as f64 / fill_seconds
        } else {
            0.0
        },
        limit: args.limit,
        classes: report,
    })
}
