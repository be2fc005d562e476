//! `logmesh pub`: publish N generated events (random services and severities), or the events
//! of an NDJSON file or stdin, to one or more nodes in batches, with a progress bar and a
//! final summary (sent, acknowledged, rejected, events/s).
//!
//! Invariants: input is read and checked whole before anything is sent, so a bad line stops
//! the command with the line named and nothing published; every event gets its id here
//! (kept from the input or generated), so a batch retried on another node is stored once.
//! Exit codes: 0 every event acknowledged, 1 some were not, 2 bad usage or input.

use super::EXIT_USAGE;
use crate::client::load::{Simulation, pick_severity, run_tag};
use crate::client::{ClientEvent, NodeCounts, Outcome, Sender, Targets, check_urls};
use crate::event::{IngestContext, format_us, now_us, parse_json_body};
use clap::Args;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct PubArgs {
    /// How many generated events to publish (random services and severities).
    #[arg(value_name = "N", required_unless_present = "file",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub count: Option<u64>,
    /// Publish the events of this file instead: NDJSON, a JSON array or one object, as
    /// POST /api/v1/logs takes them; `-` reads stdin.
    #[arg(long, short = 'f', value_name = "FILE", conflicts_with = "count")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub targets: Targets,
    /// Events per request.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `pub` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PubSummary {
    pub events_sent: u64,
    pub batches: u64,
    pub events_acknowledged: u64,
    pub events_rejected: u64,
    pub events_not_acknowledged: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub nodes: Vec<NodeCounts>,
}

pub async fn run(args: PubArgs) -> ExitCode {
    if let Err(message) = check_urls(&args.targets.urls) {
        eprintln!("logmesh pub: {message}");
        return ExitCode::from(EXIT_USAGE);
    }
    let events = match &args.file {
        Some(path) => match read_events(path) {
            Ok(events) => events,
            Err(message) => {
                eprintln!("logmesh pub: {message}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        None => generate(args.count.unwrap_or(0)),
    };
    let sender = match Sender::new(
        &args.targets.urls,
        args.targets.api_token.clone(),
        Duration::from_secs(60),
    ) {
        Ok(sender) => sender,
        Err(message) => {
            eprintln!("logmesh pub: {message}");
            return ExitCode::FAILURE;
        }
    };
    let (summary, first_problem) = publish(&sender, events, &args).await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("the summary serialises")
        );
    } else {
        println!(
            "sent {} events in {} batches: {} acknowledged, {} rejected, {} not acknowledged; \
             {:.0} events/s over {:.2} s",
            summary.events_sent,
            summary.batches,
            summary.events_acknowledged,
            summary.events_rejected,
            summary.events_not_acknowledged,
            summary.events_per_second,
            summary.seconds
        );
    }
    if let Some(problem) = first_problem {
        eprintln!("logmesh pub: {problem}");
    }
    if summary.events_acknowledged == summary.events_sent {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn publish(
    sender: &Sender,
    events: Vec<ClientEvent>,
    args: &PubArgs,
) -> (PubSummary, Option<String>) {
    let total = events.len() as u64;
    let progress = ProgressBar::new(total);
    progress.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} events {msg}")
            .expect("a valid progress template")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let batches: Vec<Vec<ClientEvent>> = events
        .chunks(args.batch as usize)
        .map(<[ClientEvent]>::to_vec)
        .collect();
    let mut summary = PubSummary {
        events_sent: total,
        batches: batches.len() as u64,
        ..PubSummary::default()
    };
    let mut first_problem = None;
    let mut outcomes = futures_util::stream::iter(batches)
        .map(|batch| async move {
            let outcome = sender.send(&batch).await;
            (batch.len() as u64, outcome)
        })
        .buffer_unordered(args.concurrency as usize);
    while let Some((n, outcome)) = outcomes.next().await {
        match outcome {
            Outcome::Acknowledged { .. } => summary.events_acknowledged += n,
            Outcome::Rejected { message, .. } => {
                summary.events_rejected += n;
                first_problem.get_or_insert(message);
            }
            Outcome::GaveUp { error } => {
                summary.events_not_acknowledged += n;
                first_problem.get_or_insert(error);
            }
        }
        progress.inc(n);
    }
    progress.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    summary.events_per_second = summary.events_acknowledged as f64 / summary.seconds.max(1e-9);
    summary.nodes = sender.counts();
    (summary, first_problem)
}

/// `n` events of the simulated services, with random severities and ids `pub-<tag>-<i>`.
pub fn generate(n: u64) -> Vec<ClientEvent> {
    let tag = run_tag();
    let services = Simulation::service_names("", 5);
    let mut rng = StdRng::seed_from_u64(rand::random());
    (0..n)
        .map(|i| ClientEvent {
            id: format!("pub-{tag}-{i}"),
            timestamp: None,
            service: services[rng.random_range(0..services.len())].clone(),
            severity: pick_severity(&mut rng).to_owned(),
            message: format!("published event {i}"),
            attributes: None,
        })
        .collect()
}

/// Reads and checks the events of `path` (`-`: stdin) with the node's own parser; an event
/// without an id gets one now.
pub fn read_events(path: &std::path::Path) -> Result<Vec<ClientEvent>, String> {
    let (name, bytes) = if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        ("stdin".to_owned(), bytes)
    } else {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        (path.display().to_string(), bytes)
    };
    parse_events(&name, &bytes)
}

/// Checks `bytes` as `POST /api/v1/logs` would and turns them into client events.
pub fn parse_events(name: &str, bytes: &[u8]) -> Result<Vec<ClientEvent>, String> {
    let context = IngestContext {
        node: "pub",
        now_us: now_us(),
        oldest_us: i64::MIN,
    };
    let events = parse_json_body(bytes, context).map_err(|e| format!("{name}: {e}"))?;
    if events.is_empty() {
        return Err(format!("{name}: no events in the input"));
    }
    Ok(events
        .into_iter()
        .map(|event| ClientEvent {
            id: event.id,
            timestamp: Some(format_us(event.ts_us)),
            service: event.service,
            severity: event.severity.as_str().to_owned(),
            message: event.message,
            attributes: event.attributes,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_events_have_unique_ids_and_known_services() {
        let events = generate(1000);
        let ids: std::collections::HashSet<_> = events.iter().map(|e| &e.id).collect();
        assert_eq!(ids.len(), 1000);
        assert!(events.iter().all(|e| !e.service.is_empty()));
    }

    #[test]
    fn a_bad_line_is_named_and_nothing_is_returned() {
        let input = b"{\"service\":\"a\",\"message\":\"x\"}\n{\"service\":\"a\",\"message\":\"y\",\"severity\":\"loud\"}\n";
        let error = parse_events("in.ndjson", input).unwrap_err();
        assert!(error.starts_with("in.ndjson: line 2"), "{error}");
        assert!(error.contains("severity"), "{error}");
    }

    #[test]
    fn input_events_keep_their_ids_and_get_one_when_missing() {
        let input = b"{\"id\":\"keep-me\",\"service\":\"a\",\"message\":\"x\",\"attributes\":{\"k\":1}}\n{\"service\":\"b\",\"message\":\"y\"}\n";
        let events = parse_events("in", input).unwrap();
        assert_eq!(events[0].id, "keep-me");
        assert_eq!(events[0].attributes.as_ref().unwrap().get(), r#"{"k":1}"#);
        assert!(!events[1].id.is_empty());
        assert!(events[1].timestamp.is_some());
    }

    #[test]
    fn empty_input_is_an_error() {
        assert!(parse_events("in", b"\n").is_err());
    }
}
