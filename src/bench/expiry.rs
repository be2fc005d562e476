//! `logmesh bench expiry`: how long the store takes to expire a backlog of events past the
//! retention period, in the steps a node takes ([`EXPIRY_STEP`] rows a transaction), and how
//! much the store writer's rate drops while it does. Through the [`Store`] port, like
//! `bench store`: fills an empty, throwaway database with `--events` old events, writes new
//! batches for `--seconds` without expiry (the baseline), then again while the backlog is
//! expired, and compares.

use super::store::Generator;
use crate::client::EXIT_USAGE;
use crate::event::now_us;
use crate::store::retained::{EXPIRY_STEP, expiry_step};
use crate::store::{self, DatabaseUrl, Store};
use clap::Args;
use serde::Serialize;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct ExpiryBenchArgs {
    /// Database to fill and expire: sqlite://PATH, postgres://… or mysql://…; an empty,
    /// throwaway one (the bench refuses a database that already holds events).
    #[arg(long, value_name = "URL")]
    pub database: String,
    /// Old events to expire.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub events: u64,
    /// Events per batch the writer commits, as a node's store writer would.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_size: u32,
    /// How long the baseline (ingest without expiry) runs.
    #[arg(long, default_value = "10s", value_parser = crate::units::parse_duration)]
    pub seconds: Duration,
    /// How long ingest runs while the backlog is expired (default: until it is expired); a
    /// large backlog on a slow database would otherwise write tens of millions of new rows.
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub ingest_during: Option<Duration>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct ExpiryReport {
    pub database: String,
    pub events_expired: u64,
    pub expiry_seconds: f64,
    pub expired_rows_per_second: f64,
    pub ingest_rows_per_second_without_expiry: f64,
    pub ingest_rows_per_second_during_expiry: f64,
    /// During / without.
    pub ingest_ratio: f64,
}

pub async fn run(args: ExpiryBenchArgs) -> ExitCode {
    let url = match DatabaseUrl::parse(&args.database) {
        Ok(url) => url,
        Err(error) => {
            eprintln!("logmesh bench expiry: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let store = match store::open(&url).await {
        Ok(store) => store,
        Err(error) => {
            eprintln!("logmesh bench expiry: {error}");
            return ExitCode::FAILURE;
        }
    };
    match store.severity_counts().await {
        Ok(counts) if counts.iter().map(|c| c.count).sum::<i64>() > 0 => {
            eprintln!(
                "logmesh bench expiry: {url} already holds events; give it an empty, throwaway \
                 database"
            );
            return ExitCode::from(EXIT_USAGE);
        }
        Ok(_) => {}
        Err(error) => {
            eprintln!("logmesh bench expiry: {error}");
            return ExitCode::FAILURE;
        }
    }
    match measure(store, &url, &args).await {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serialises")
                );
            } else {
                println!(
                    "{}: {} events expired in {:.1} s ({:.0} rows/s, steps of {EXPIRY_STEP}); \
                     ingest {:.0} rows/s without expiry, {:.0} rows/s during it ({:.2}×)",
                    report.database,
                    report.events_expired,
                    report.expiry_seconds,
                    report.expired_rows_per_second,
                    report.ingest_rows_per_second_without_expiry,
                    report.ingest_rows_per_second_during_expiry,
                    report.ingest_ratio
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("logmesh bench expiry: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Writes batches of fresh events, at least one, until `done` turns true (or `until`);
/// answers rows/s.
async fn ingest(
    store: &dyn Store,
    generator: &mut Generator,
    batch_size: usize,
    until: Option<Instant>,
    done: &AtomicBool,
) -> Result<f64, String> {
    let started = Instant::now();
    let mut rows = 0u64;
    loop {
        let batch = generator.batch_at(batch_size, now_us());
        store
            .write_batch(batch)
            .await
            .map_err(|e| format!("a batch failed: {e}"))?;
        rows += batch_size as u64;
        if done.load(Ordering::Relaxed) || until.is_some_and(|until| Instant::now() >= until) {
            break;
        }
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

async fn measure(
    store: Arc<dyn Store>,
    url: &DatabaseUrl,
    args: &ExpiryBenchArgs,
) -> Result<ExpiryReport, String> {
    let batch_size = args.batch_size as usize;
    let mut generator = Generator::new();
    // Two days old: past any retention of a day.
    let old = now_us() - 2 * 86_400_000_000;
    let mut filled = 0u64;
    let started = Instant::now();
    while filled < args.events {
        let size = (args.events - filled).min(batch_size as u64) as usize;
        store
            .write_batch(generator.batch_at(size, old))
            .await
            .map_err(|e| format!("filling: {e}"))?;
        filled += size as u64;
    }
    eprintln!(
        "filled {filled} old events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let never = AtomicBool::new(false);
    let without = ingest(
        store.as_ref(),
        &mut generator,
        batch_size,
        Some(Instant::now() + args.seconds),
        &never,
    )
    .await?;
    eprintln!("baseline: {without:.0} rows/s");
    let cutoff = now_us() - 86_400_000_000;
    let done = Arc::new(AtomicBool::new(false));
    let expiry = {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut expired = 0u64;
            let result = loop {
                // The node's own steps, pauses included.
                match expiry_step(store.as_ref(), cutoff).await {
                    Ok(step) => {
                        expired += step as u64;
                        if step < EXPIRY_STEP {
                            break Ok((expired, started.elapsed()));
                        }
                    }
                    Err(error) => break Err(format!("expiring: {error}")),
                }
            };
            done.store(true, Ordering::Relaxed);
            result
        })
    };
    let until = args.ingest_during.map(|during| Instant::now() + during);
    let during = ingest(store.as_ref(), &mut generator, batch_size, until, &done).await?;
    let (expired, took) = expiry.await.map_err(|e| e.to_string())??;
    if expired != filled {
        return Err(format!("expired {expired} of the {filled} old events"));
    }
    Ok(ExpiryReport {
        database: url.to_string(),
        events_expired: expired,
        expiry_seconds: took.as_secs_f64(),
        expired_rows_per_second: expired as f64 / took.as_secs_f64(),
        ingest_rows_per_second_without_expiry: without,
        ingest_rows_per_second_during_expiry: during,
        ingest_ratio: during / without,
    })
}
