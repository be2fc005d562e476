//! `logmesh bench work`: small count jobs from submission to `worked`. Submits `--jobs`
//! distinct count jobs (each over its own one-second window a day back) from `--clients` concurrent connections, then reads every job's record
//! and reports jobs per second (first submission to last finish, by the nodes' own clocks) and
//! the latency of each job from submission to worked (its record's `elapsed_ms`).

use clap::Args;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Clone, Args)]
pub struct WorkBenchArgs {
    /// Node to drive; repeat to spread the submissions over several nodes.
    #[arg(long = "url", default_value = "http://127.0.0.1:5555")]
    pub urls: Vec<String>,
    /// Bearer token, if the nodes require one.
    #[arg(long, env = "LOGMESH_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Jobs to submit.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub jobs: u64,
    /// Concurrent submitting connections.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub clients: u64,
    /// Submit at this many jobs per second (latency below saturation); without it, as fast as
    /// the clients can (throughput, with queueing in the latency).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to wait for the last job to end.
    #[arg(long, default_value = "5m", value_parser = crate::units::parse_duration)]
    pub timeout: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct WorkReport {
    pub jobs: u64,
    pub worked: u64,
    pub failed: u64,
    pub seconds: f64,
    pub jobs_per_second: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
}

pub async fn run(args: WorkBenchArgs) -> ExitCode {
    match measure(&args).await {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serialises")
                );
            } else {
                println!(
                    "{} count jobs ({} worked, {} failed) in {:.2} s: {:.0} jobs/s; submission \
                     to worked p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    report.jobs,
                    report.worked,
                    report.failed,
                    report.seconds,
                    report.jobs_per_second,
                    report.latency_ms_p50,
                    report.latency_ms_p99,
                    report.latency_ms_max
                );
            }
            if report.failed > 0 {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("logmesh bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn time_of(record: &Value, field: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(record[field].as_str()?, &Rfc3339).ok()
}

pub async fn measure(args: &WorkBenchArgs) -> Result<WorkReport, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let authorize = |request: reqwest::RequestBuilder| match &args.api_token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    // A different one-second window per job and per run, a day back: distinct callbacks (so
    // nothing is de-duplicated) and small counts (an index range of at most a second's events),
    // so the figure measures the work path, not the count.
    let nonce = OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000 - 86_400_000;
    if args
        .rate
        .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
    {
        return Err("--rate must be a positive number of jobs per second".into());
    }
    let started = tokio::time::Instant::now();
    let submitted: Vec<Result<(String, String), String>> = futures_util::stream::iter(0..args.jobs)
        .map(|job| {
            let due = args
                .rate
                .map(|rate| started + Duration::from_secs_f64(job as f64 / rate));
            let base = args.urls[job as usize % args.urls.len()]
                .trim_end_matches('/')
                .to_owned();
            let request = authorize(client.post(format!("{base}/api/v1/work")).json(
                &json!({"kind": "count", "data": {
                        "since": nonce - job as i64 * 1000,
                        "until": nonce - job as i64 * 1000 + 1000,
                        "by": ["severity"]}}),
            ));
            async move {
                if let Some(due) = due {
                    tokio::time::sleep_until(due).await;
                }
                let response = request.send().await.map_err(|e| format!("{base}: {e}"))?;
                let status = response.status();
                let body: Value = response.json().await.map_err(|e| format!("{base}: {e}"))?;
                if status != reqwest::StatusCode::ACCEPTED {
                    return Err(format!("{base} answered {status}: {body}"));
                }
                Ok((base, body["callback"].as_str().unwrap_or("").to_owned()))
            }
        })
        .buffer_unordered(args.clients as usize)
        .collect()
        .await;
    let submitted: Vec<(String, String)> = submitted.into_iter().collect::<Result<_, _>>()?;

    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
    let (mut first, mut last) = (None::<OffsetDateTime>, None::<OffsetDateTime>);
    let (mut worked, mut failed) = (0, 0);
    for (base, callback) in &submitted {
        let record = loop {
            let record: Value = authorize(client.get(format!("{base}/api/v1/work/{callback}")))
                .send()
                .await
                .map_err(|e| format!("{base}: {e}"))?
                .json()
                .await
                .map_err(|e| format!("{base}: {e}"))?;
            if matches!(record["status"].as_str(), Some("worked" | "failed")) {
                break record;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "job {callback} did not end within the timeout: {record}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        match record["status"].as_str() {
            Some("worked") => worked += 1,
            _ => failed += 1,
        }
        let micros = (record["elapsed_ms"].as_f64().unwrap_or(0.0) * 1000.0) as u64;
        let _ = latencies.record(micros.max(1));
        if let (Some(start), Some(end)) = (
            time_of(&record, "submitted_at"),
            time_of(&record, "finished_at"),
        ) {
            first = Some(first.map_or(start, |f| f.min(start)));
            last = Some(last.map_or(end, |l| l.max(end)));
        }
    }
    let seconds = match (first, last) {
        (Some(first), Some(last)) => (last - first).as_seconds_f64().max(1e-6),
        _ => return Err("no job reported its times".into()),
    };
    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok(WorkReport {
        jobs: args.jobs,
        worked,
        failed,
        seconds,
        jobs_per_second: args.jobs as f64 / seconds,
        latency_ms_p50: ms(latencies.value_at_quantile(0.5)),
        latency_ms_p99: ms(latencies.value_at_quantile(0.99)),
        latency_ms_max: ms(latencies.max()),
    })
}
