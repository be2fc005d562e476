//! `logmesh status`: what a node (or, with `--all`, every member) holds and takes: stored
//! events and their oldest, the store's bytes, the event log files, the free disk, the queue
//! and what was accepted; from `GET /api/v1/node/stats`. Exit codes: 0 every node answered,
//! 1 the node or a member could not be asked, 2 bad usage.

use crate::units::format_size_approx;
use clap::Args;
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

/// How long the request may take (`--all` asks every member, each within its own limit).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub node: super::NodeTarget,
    /// Every member of the cluster, not only the node asked.
    #[arg(long)]
    pub all: bool,
    /// Print the node's JSON answer as it is.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: StatusArgs) -> ExitCode {
    match ask(&args).await {
        Ok(answer) if args.json => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            let nodes = match answer.get("nodes").and_then(Value::as_array) {
                Some(nodes) => nodes.clone(),
                None => vec![answer],
            };
            let mut all_answered = true;
            for node in &nodes {
                let (lines, answered) = describe(node);
                all_answered &= answered;
                for line in lines {
                    println!("{line}");
                }
            }
            if all_answered {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(message) => {
            eprintln!("logmesh status: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn ask(args: &StatusArgs) -> Result<Value, String> {
    let base = args.node.url.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = client.get(format!("{base}/api/v1/node/stats"));
    if args.all {
        request = request.query(&[("hostname", "*")]);
    }
    if let Some(token) = &args.node.api_token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| format!("{base}: {e}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("{base} answered {status} without JSON: {e}"))?;
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        return Err(format!("{base} answered {status}: {message}"));
    }
    Ok(body)
}

/// One node's figures as aligned lines, and whether it answered.
fn describe(node: &Value) -> (Vec<String>, bool) {
    let name = node["node"].as_str().unwrap_or("?");
    if let Some(error) = node["error"].as_str() {
        return (vec![format!("{name}: could not be asked: {error}")], false);
    }
    let storage = &node["storage"];
    let size = |value: &Value| value.as_u64().map_or("?".to_owned(), format_size_approx);
    let oldest = match storage["oldest_event_ms"].as_i64() {
        Some(ms) => format!(
            " (oldest {})",
            crate::event::format_us(ms.saturating_mul(1000))
        ),
        None => String::new(),
    };
    let figure = |value: &Value| value.as_u64().map_or("?".to_owned(), |n| n.to_string());
    let mut lines = vec![
        name.to_owned(),
        format!(
            "  stored events    {}{oldest}",
            figure(&storage["store_rows"])
        ),
        format!("  store size       {}", size(&storage["store_bytes"])),
        format!("  event log files  {}", size(&storage["event_log_bytes"])),
        format!("  free disk        {}", size(&storage["disk_free_bytes"])),
        format!(
            "  queue            {} events, {}",
            figure(&node["queue_depth_events"]),
            size(&node["queue_depth_bytes"])
        ),
        format!(
            "  events accepted  {} (refused {})",
            figure(&node["events_accepted"]),
            figure(&node["events_refused"])
        ),
    ];
    if let Some(error) = storage["error"].as_str() {
        lines.push(format!("  not read         {error}"));
    }
    (lines, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_is_described_with_its_figures() {
        let (lines, answered) = describe(&json!({
            "node": "node-1", "events_accepted": 5, "events_refused": 1,
            "queue_depth_events": 0, "queue_depth_bytes": 0,
            "storage": {"store_rows": 4, "store_bytes": 2048, "oldest_event_ms": 0,
                        "event_log_bytes": 100, "disk_free_bytes": 1073741824u64}
        }));
        assert!(answered);
        assert_eq!(lines[0], "node-1");
        assert_eq!(
            lines[1],
            "  stored events    4 (oldest 1970-01-01T00:00:00Z)"
        );
        assert_eq!(lines[2], "  store size       2.0 KiB");
        assert_eq!(lines[4], "  free disk        1.0 GiB");
        assert_eq!(lines[6], "  events accepted  5 (refused 1)");
    }

    #[test]
    fn a_member_that_could_not_be_asked_says_so() {
        let (lines, answered) = describe(&json!({"node": "node-2", "error": "timed out"}));
        assert!(!answered);
        assert_eq!(lines, ["node-2: could not be asked: timed out"]);
    }

    #[test]
    fn a_figure_that_could_not_be_read_is_a_question_mark_and_the_reason_is_given() {
        let (lines, _) = describe(&json!({
            "node": "n", "storage": {"error": "store: connection refused"}
        }));
        assert_eq!(lines[1], "  stored events    ?");
        assert_eq!(
            lines.last().unwrap(),
            "  not read         store: connection refused"
        );
    }
}
