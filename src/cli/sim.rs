//! `logmesh sim`: several simulated services sending events at varying, bursty rates to
//! several nodes (the log monitoring seed's simulator), on the engine of
//! [`crate::client::load`].

use super::EXIT_USAGE;
use crate::client::load::{LoadArgs, Observer, Simulation, progress_bar, run_tag, simulate};
use crate::client::{Outcome, Sender, Targets, check_urls};
use crate::units::parse_duration;
use clap::Args;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    #[command(flatten)]
    pub targets: Targets,
    /// How long to send for, e.g. 90s or 2m.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    pub duration: Duration,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: SimArgs) -> ExitCode {
    if let Err(message) = check_urls(&args.targets.urls) {
        eprintln!("logmesh sim: {message}");
        return ExitCode::from(EXIT_USAGE);
    }
    let sender = match Sender::new(
        &args.targets.urls,
        args.targets.api_token.clone(),
        Duration::from_secs(60),
    ) {
        Ok(sender) => Arc::new(sender),
        Err(message) => {
            eprintln!("logmesh sim: {message}");
            return ExitCode::FAILURE;
        }
    };
    let tag = run_tag();
    let simulation = Simulation {
        id_prefix: format!("sim-{tag}-"),
        services: Simulation::service_names("", args.load.services),
        base_rate: args.load.rate,
        duration: args.duration,
        attributes: Some(format!(r#"{{"sim":"{tag}"}}"#)),
    };
    let progress = progress_bar(args.duration);
    let first_problem = Arc::new(std::sync::Mutex::new(None::<String>));
    let observer: Observer = {
        let first_problem = first_problem.clone();
        Arc::new(move |_events, outcome| {
            if let Outcome::Rejected { message, .. } | Outcome::GaveUp { error: message } = outcome
            {
                first_problem
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| message.clone());
            }
        })
    };
    let summary = simulate(&simulation, sender, observer, &progress).await;
    progress.finish_and_clear();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("the summary serialises")
        );
    } else {
        print!("{}", summary.render());
    }
    if let Some(problem) = first_problem
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        eprintln!("logmesh sim: {problem}");
    }
    if summary.events_acknowledged == summary.events_sent {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
