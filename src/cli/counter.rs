//! `logmesh counter inc|get|query`: counters from the command line, one plain line per result
//! so the output pipes well. Exit codes: 0 success, 1 the node failed or refused, 2 bad usage.

use super::EXIT_USAGE;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct CounterArgs {
    #[command(flatten)]
    pub node: super::NodeTarget,
    #[command(subcommand)]
    pub command: CounterCommand,
}

#[derive(Debug, Subcommand)]
pub enum CounterCommand {
    /// Add to a counter (creating it at 0 first) and print its new value.
    Inc {
        name: String,
        /// A label as NAME=VALUE; repeat for more.
        #[arg(long = "label", short = 'l', value_name = "NAME=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// How much to add (an integer ≥ 0).
        #[arg(long, default_value_t = 1)]
        by: u64,
    },
    /// Print counters as `name{labels} value` lines: all, or those named NAME.
    Get { name: Option<String> },
    /// Evaluate a PromQL expression (the subset logmesh supports) and print `{labels} value`.
    Query { expression: String },
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))
}

fn format_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}={}", serde_json::to_string(value).unwrap()))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

pub async fn run(args: CounterArgs) -> ExitCode {
    match execute(&args).await {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("logmesh counter: {message}");
            ExitCode::from(code)
        }
    }
}

async fn execute(args: &CounterArgs) -> Result<Vec<String>, (u8, String)> {
    let base = args.node.url.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| (1, e.to_string()))?;
    let request = match &args.command {
        CounterCommand::Inc { name, labels, by } => {
            let labels: BTreeMap<&str, &str> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if labels.len() < args_label_count(&args.command) {
                return Err((EXIT_USAGE, "a label is given twice".into()));
            }
            client
                .post(format!("{base}/metrics"))
                .json(&json!({"name": name, "labels": labels, "by": by}))
        }
        CounterCommand::Get { .. } => client
            .get(format!("{base}/metrics"))
            .header("accept", "application/json"),
        CounterCommand::Query { expression } => {
            let url = reqwest::Url::parse_with_params(
                &format!("{base}/metrics/query"),
                &[("expression", expression)],
            )
            .map_err(|e| (EXIT_USAGE, format!("`{base}` is not a URL: {e}")))?;
            client.get(url)
        }
    };
    let request = match &args.node.api_token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let response = request
        .send()
        .await
        .map_err(|e| (1, format!("{base}: {e}")))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| (1, format!("{base} answered {status} without JSON: {e}")))?;
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        return Err((1, format!("{base} answered {status}: {message}")));
    }
    let labels_of = |value: &Value| -> BTreeMap<String, String> {
        serde_json::from_value(value.clone()).unwrap_or_default()
    };
    Ok(match &args.command {
        CounterCommand::Inc { .. } => vec![body["value"].to_string()],
        CounterCommand::Get { name } => body["counters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| name.as_deref().is_none_or(|name| c["name"] == name))
            .map(|c| {
                format!(
                    "{}{} {}",
                    c["name"].as_str().unwrap_or(""),
                    format_labels(&labels_of(&c["labels"])),
                    c["value"]
                )
            })
            .collect(),
        CounterCommand::Query { .. } => body["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|sample| {
                let labels = format_labels(&labels_of(&sample["metric"]));
                let value = sample["value"][1].as_str().unwrap_or("");
                format!("{} {value}", if labels.is_empty() { "{}" } else { &labels })
            })
            .collect(),
    })
}

fn args_label_count(command: &CounterCommand) -> usize {
    match command {
        CounterCommand::Inc { labels, .. } => labels.len(),
        _ => 0,
    }
}
