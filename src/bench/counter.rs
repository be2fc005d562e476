//! `logmesh bench counter`: `POST /metrics` increments from many connections against one or
//! more nodes; reports increments per second and latency. With `--keys 1` every increment hits
//! one hot counter (the worst case for row contention); more keys spread the load.

use crate::units::parse_duration;
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct CounterBenchArgs {
    /// Node to drive; repeat to spread the connections over several nodes.
    #[arg(long = "url", default_value = "http://127.0.0.1:5555")]
    pub urls: Vec<String>,
    /// Bearer token, if the node requires one.
    #[arg(long, env = "LOGMESH_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// How long to send for, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub connections: u64,
    /// Distinct counters (label values) the increments are spread over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub keys: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct CounterReport {
    pub connections: u64,
    pub keys: u64,
    pub seconds: f64,
    pub increments: u64,
    pub failed: u64,
    pub increments_per_second: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
}

pub async fn run(args: CounterBenchArgs) -> ExitCode {
    match measure(&args).await {
        Ok(report) if report.increments > 0 => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serialises")
                );
            } else {
                println!(
                    "{} connections, {} counter(s), {:.1} s: {} increments ({} failed), {:.0}/s; \
                     latency p50 {:.2} ms, p99 {:.2} ms",
                    report.connections,
                    report.keys,
                    report.seconds,
                    report.increments,
                    report.failed,
                    report.increments_per_second,
                    report.latency_ms_p50,
                    report.latency_ms_p99
                );
            }
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("logmesh bench: no increment succeeded");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("logmesh bench: {error}");
            ExitCode::FAILURE
        }
    }
}

pub async fn measure(args: &CounterBenchArgs) -> Result<CounterReport, String> {
    let started = Instant::now();
    let deadline = started + args.duration;
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..args.connections {
        let target = Target::parse(&args.urls[worker as usize % args.urls.len()])?;
        let (token, failed, keys) = (args.api_token.clone(), failed.clone(), args.keys);
        workers.push(tokio::spawn(async move {
            let mut latencies =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut connection = target.connect().await?;
            let mut n = worker;
            while Instant::now() < deadline {
                let body = format!(
                    r#"{{"name":"bench_increments_total","labels":{{"key":"{}"}}}}"#,
                    n % keys
                );
                n += 1;
                let request = target.request(body, token.as_deref())?;
                let sent = Instant::now();
                connection.ready().await.map_err(|e| target.failure(e))?;
                let response = connection
                    .send_request(request)
                    .await
                    .map_err(|e| target.failure(e))?;
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| target.failure(e))?
                    .to_bytes();
                if status.is_success() {
                    let _ = latencies.record((sent.elapsed().as_micros() as u64).max(1));
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    if status.is_client_error() {
                        return Err(format!(
                            "{} answered {status}: {}",
                            target.url,
                            String::from_utf8_lossy(&body)
                        ));
                    }
                }
            }
            Ok(latencies)
        }));
    }
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
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
    if let Some(error) = first_error
        && latencies.is_empty()
    {
        return Err(error);
    }
    let seconds = started.elapsed().as_secs_f64();
    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok(CounterReport {
        connections: args.connections,
        keys: args.keys,
        seconds,
        increments: latencies.len(),
        failed: failed.load(Ordering::Relaxed),
        increments_per_second: latencies.len() as f64 / seconds,
        latency_ms_p50: ms(latencies.value_at_quantile(0.50)),
        latency_ms_p99: ms(latencies.value_at_quantile(0.99)),
    })
}

/// One node's `/metrics` endpoint, driven over plain HTTP/1.1 connections of our own (one per
/// worker, no pool), so the load generator costs as little CPU as it can: it shares the
/// machine's cores with the node under test, as `redis-benchmark` shares them with Redis.
struct Target {
    url: String,
    path: String,
    address: String,
    host: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| format!("--url {url}: not a URL: {e}"))?;
        if parsed.scheme() != "http" {
            return Err(format!(
                "--url {url}: bench counter speaks plain http only; run it next to the node"
            ));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("--url {url}: no host"))?
            .to_owned();
        let port = parsed.port_or_known_default().unwrap_or(80);
        Ok(Target {
            url: format!("{}/metrics", url.trim_end_matches('/')),
            path: format!("{}/metrics", parsed.path().trim_end_matches('/')),
            address: format!("{host}:{port}"),
            host,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(|e| format!("{}: cannot connect: {e}", self.url))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.failure(e))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    fn request(
        &self,
        body: String,
        token: Option<&str>,
    ) -> Result<hyper::Request<Full<Bytes>>, String> {
        let mut request = hyper::Request::post(self.path.as_str())
            .header(hyper::header::HOST, self.host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("{}: {e}", self.url))
    }

    fn failure(&self, error: impl std::fmt::Display) -> String {
        format!("{}: {error}", self.url)
    }
}
