//! `logmesh e2e`: the end-to-end proof. Runs the simulator (`cli::sim`) against a running
//! cluster, keeps a tally of every event id a node acknowledged, waits for the pipeline to
//! drain, and verifies through the cluster's own HTTP API that what was acknowledged is what
//! was stored — in `service_logs` and `service_severity`, per service and severity, each id
//! once — and that every member's event log file holds it. Then it reports (terminal and
//! `--report FILE` JSON) and exits 0 only when everything matched.
//!
//! Invariants:
//! - A run is tagged: every event id and every service name of the run carries its tag
//!   (`e2e-<tag>-checkout`), so its `service_severity` rows are exactly its own increments
//!   and several runs against one cluster never mix.
//! - Only a 202 counts as acknowledged (`cli::send`); a dead node's connection errors make the
//!   sender fail over, never count as lost events.
//! - The drain is waited for by polling with a deadline (`--drain-timeout`), never a sleep.
//!
//! The pure parts (`verify`: tally and verdict, `report`: metrics, lag percentiles, the
//! report) are unit-tested without servers; `observe` is the HTTP edge.

pub mod observe;
pub mod report;
pub mod verify;

use crate::client::load::{self, LoadArgs, Observer, Simulation, progress_bar, run_tag};
use crate::client::{ClientEvent, EXIT_USAGE, Outcome, Sender, check_urls};
use crate::event::{format_us, now_us};
use crate::units::parse_duration;
use clap::Args;
use observe::ClusterApi;
use report::{LagFigures, NodeBatches, Report};
use serde_json::value::RawValue;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use verify::{Tally, verify};

/// How often a lag probe is sent.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long a probe is looked for before it gives no sample.
const PROBE_PATIENCE: Duration = Duration::from_secs(30);
/// How often the probes' search is repeated.
const PROBE_POLL: Duration = Duration::from_millis(10);
/// How often the drain is checked.
const DRAIN_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    #[error("cannot build an HTTP client: {0}")]
    Client(String),
    #[error("no node answered: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Answer(String),
    #[error(
        "{member}'s event log has {} or more lines of {service}, more than GET /logs returns; \
         run shorter or with a lower --rate",
        crate::http::files::MAX_N
    )]
    TooManyLines { member: String, service: String },
    #[error("cannot write the report to {path}: {reason}")]
    Report { path: String, reason: String },
}

#[derive(Debug, Clone, Args)]
pub struct E2eArgs {
    /// The cluster's nodes, comma-separated (or repeat the flag); the load goes to all of them
    /// in turn, verification reads from the first that answers.
    #[arg(long, value_delimiter = ',', required = true, value_name = "URL,URL,…")]
    pub nodes: Vec<String>,
    /// Bearer token, if the nodes require one.
    #[arg(long, env = "LOGMESH_API_TOKEN", hide_env = true)]
    pub api_token: Option<String>,
    /// How long to send for, e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// How long to wait, after sending, for everything to be stored and logged.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

pub async fn run(args: E2eArgs) -> ExitCode {
    if let Err(message) = check_urls(&args.nodes) {
        eprintln!("logmesh e2e: {message}");
        return ExitCode::from(EXIT_USAGE);
    }
    match prove(&args).await {
        Ok(report) => {
            print!("{}", report.render());
            if let Some(path) = &args.report
                && let Err(error) = write_report(path, &report)
            {
                eprintln!("logmesh e2e: {error}");
                return ExitCode::FAILURE;
            }
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("logmesh e2e: {error}");
            ExitCode::FAILURE
        }
    }
}

fn write_report(path: &std::path::Path, report: &Report) -> Result<(), E2eError> {
    let json = serde_json::to_string_pretty(report).expect("the report serialises");
    std::fs::write(path, json + "\n").map_err(|e| E2eError::Report {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The whole run: load, drain, verification, report.
pub async fn prove(args: &E2eArgs) -> Result<Report, E2eError> {
    let tag = run_tag();
    let prefix = format!("e2e-{tag}-");
    let api = ClusterApi::new(&args.nodes, args.api_token.clone())?;
    // Reachable at all? Fail fast, before any load.
    let members = api.members().await?;
    let mut before = Vec::new();
    for url in &args.nodes {
        before.push(api.batch_figures(url).await);
    }
    // The load's own patience with one batch is the drain timeout: past it the run fails anyway.
    let sender = Arc::new(
        Sender::new(&args.nodes, args.api_token.clone(), args.drain_timeout)
            .map_err(E2eError::Client)?,
    );
    let simulation = Simulation {
        id_prefix: prefix.clone(),
        services: Simulation::service_names(&prefix, args.load.services),
        base_rate: args.load.rate,
        duration: args.duration,
        attributes: Some(format!(r#"{{"run":"{tag}"}}"#)),
    };
    let probe_service = format!("{prefix}probe");
    let mut services = simulation.services.clone();
    services.push(probe_service.clone());

    let tally = Arc::new(Mutex::new(Tally::default()));
    let observer: Observer = {
        let tally = tally.clone();
        Arc::new(move |events, outcome| {
            let acknowledged = matches!(outcome, Outcome::Acknowledged { .. });
            lock(&tally).record(events, acknowledged);
        })
    };
    eprintln!(
        "logmesh e2e: run {tag}: {} services at ~{}/s each to {} nodes for {}",
        args.load.services,
        args.load.rate,
        args.nodes.len(),
        humantime::format_duration(args.duration)
    );
    let progress = progress_bar(args.duration);
    let deadline = Instant::now() + args.duration;
    let probes = {
        let (sender, observer) = (sender.clone(), observer.clone());
        let (service, prefix, tag) = (probe_service.clone(), prefix.clone(), tag.clone());
        let api = ClusterApi::new(&args.nodes, args.api_token.clone())?;
        tokio::spawn(async move {
            probe_lag(&api, &sender, &observer, &service, &prefix, &tag, deadline).await
        })
    };
    let load = load::simulate(&simulation, sender.clone(), observer, &progress).await;
    let probed = probes.await.unwrap_or_default();
    progress.finish_and_clear();

    let drain_started = Instant::now();
    let drain_deadline = drain_started + args.drain_timeout;
    let verification = loop {
        let acknowledged = lock(&tally).acknowledged();
        // The cheap check first: the run's counts must at least reach what was acknowledged.
        let counted: i64 = api
            .stats(&prefix)
            .await
            .map(|s| s.values().sum())
            .unwrap_or(0);
        let last_chance = Instant::now() >= drain_deadline;
        if counted >= acknowledged as i64 || last_chance {
            let observed = api.observe(&prefix, &services).await;
            let verdict = verify(&lock(&tally), &observed);
            if verdict.passed || Instant::now() >= drain_deadline {
                break verdict;
            }
        }
        tokio::time::sleep(DRAIN_POLL).await;
    };
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    let mut batches = Vec::new();
    for (url, before) in args.nodes.iter().zip(before) {
        let after = api.batch_figures(url).await;
        batches.push(NodeBatches::new(url, before, after));
    }
    Ok(Report {
        run: tag,
        passed: verification.passed,
        nodes: args.nodes.clone(),
        members,
        load: {
            // The probes are events of the run like the others, sent through the same sender.
            let mut load = load;
            load.events_sent += probed.sent;
            load.events_acknowledged += probed.acknowledged;
            load.events_not_acknowledged += probed.sent - probed.acknowledged;
            load.acknowledged_per_second = load.events_acknowledged as f64 / load.seconds.max(1e-9);
            load.nodes = sender.counts();
            load
        },
        batches,
        lag: LagFigures::from_samples(&probed.lags),
        drain_seconds,
        verification,
    })
}

fn lock(tally: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the lag prober did.
#[derive(Debug, Default)]
struct Probed {
    lags: Vec<Duration>,
    sent: u64,
    acknowledged: u64,
}

/// Until `deadline`, sends a probe event every [`PROBE_EVERY`], with its timestamp set here;
/// meanwhile one search (the probes since the oldest one not yet seen) every [`PROBE_POLL`]
/// notes when each becomes searchable. A probe's lag is from its 202 to that search. Probes
/// are part of the run (tallied and verified like the load); one not seen within
/// [`PROBE_PATIENCE`] gives no sample (the verification still looks for it).
async fn probe_lag(
    api: &ClusterApi,
    sender: &Sender,
    observer: &Observer,
    service: &str,
    prefix: &str,
    tag: &str,
    deadline: Instant,
) -> Probed {
    let mut probed = Probed::default();
    let mut send = tokio::time::interval(PROBE_EVERY);
    send.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(PROBE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let attributes = RawValue::from_string(format!(r#"{{"run":"{tag}"}}"#)).expect("JSON");
    // id → (when it was acknowledged, its timestamp); oldest first by construction.
    let mut pending: Vec<(String, Instant, String)> = Vec::new();
    let mut n = 0u64;
    loop {
        let sending = Instant::now() < deadline;
        if !sending && pending.is_empty() {
            return probed;
        }
        tokio::select! {
            _ = send.tick(), if sending => {
                let timestamp = format_us(now_us());
                let events = [ClientEvent {
                    id: format!("{prefix}probe-{n}"),
                    timestamp: Some(timestamp.clone()),
                    service: service.to_owned(),
                    severity: "info".to_owned(),
                    message: format!("lag probe {n}"),
                    attributes: Some(attributes.clone()),
                }];
                n += 1;
                let outcome = sender.send(&events).await;
                observer(&events, &outcome);
                probed.sent += 1;
                if matches!(outcome, Outcome::Acknowledged { .. }) {
                    probed.acknowledged += 1;
                    let [event] = events;
                    pending.push((event.id, Instant::now(), timestamp));
                }
            }
            _ = poll.tick(), if !pending.is_empty() => {
                if let Ok(found) = api.ids_since(service, &pending[0].2).await {
                    pending.retain(|(id, acknowledged, _)| {
                        let seen = found.contains(id);
                        if seen {
                            probed.lags.push(acknowledged.elapsed());
                        }
                        !seen
                    });
                }
                pending.retain(|(_, acknowledged, _)| acknowledged.elapsed() < PROBE_PATIENCE);
            }
        }
    }
}
