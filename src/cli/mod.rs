//! The command line: one binary, one subcommand per job. Exit codes scripts can rely on:
//! 0 success, 1 a failure while running, 2 bad usage or configuration.

mod counter;
pub mod pub_cmd;
pub mod search;
pub mod sim;
mod status;
mod work;

use crate::bench::BenchCommand;
use crate::config::{self, ServeArgs};
use crate::node::Node;
use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;

pub mod tail;

/// The node a client command talks to, and its token (`logmesh counter`, `logmesh work`).
#[derive(Debug, Args)]
pub struct NodeTarget {
    /// The node to talk to [env: LOGMESH_URL]
    #[arg(
        long,
        env = "LOGMESH_URL",
        default_value = "http://127.0.0.1:5555",
        global = true
    )]
    pub url: String,
    /// Bearer token, if the node requires one [env: LOGMESH_API_TOKEN]
    #[arg(long, env = "LOGMESH_API_TOKEN", global = true, hide_env_values = true)]
    pub api_token: Option<String>,
}

#[derive(Debug, Parser)]
#[command(
    name = "logmesh",
    version,
    about = "One binary that turns any number of machines into a log platform."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: ingest over HTTP, durable queue, batched store, event log file.
    Serve(Box<ServeArgs>),
    /// Print the last lines of a file on a node that contain a keyword or match a regex.
    Tail(Box<tail::TailArgs>),
    /// Search stored events on a node: one line per event, newest first.
    Search(search::SearchArgs),
    /// Measure a running node, or a database through the store.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Bump, read and query cluster-wide counters.
    Counter(counter::CounterArgs),
    /// Submit asynchronous work (search, count, export) and follow it to its result.
    Work(work::WorkArgs),
    /// Publish N generated events, or the events of an NDJSON file or stdin, to nodes.
    Pub(pub_cmd::PubArgs),
    /// Show what a node (or every member) holds: stored events, their oldest, the store's
    /// size, the event log files, the free disk, the queue.
    Status(status::StatusArgs),
    /// Simulate several services sending at varying, bursty rates to several nodes.
    Sim(sim::SimArgs),
    /// The end-to-end proof: load a running cluster, then verify that every acknowledged
    /// event was stored once, counted, and logged by every node.
    E2e(crate::e2e::E2eArgs),
}

pub use crate::client::EXIT_USAGE;

pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Tail(args) => tail::run(*args).await,
        Command::Search(args) => search::run(args).await,
        Command::Bench(command) => crate::bench::run(command).await,
        Command::Counter(args) => counter::run(args).await,
        Command::Work(args) => work::run(args).await,
        Command::Pub(args) => pub_cmd::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Sim(args) => sim::run(args).await,
        Command::E2e(args) => crate::e2e::run(args).await,
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let config = match config::resolve(&args, &|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("logmesh serve: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    crate::telemetry::init(config.log_format);
    let started = match crate::node::bind(&config).await {
        Ok(listener) => {
            let stop = async {
                wait_for_signal().await;
                tracing::info!("Shutting down on signal.");
            };
            Node::run(config, listener, stop).await
        }
        Err(error) => Err(error),
    };
    match started {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "The node could not start.");
            eprintln!("logmesh serve: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM.
async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
