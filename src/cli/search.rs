//! `logmesh search`: stored events from a node's `GET /api/v1/logs/search`, one plain line per
//! event (`<timestamp> <severity> <service> <node> <message>`) or one JSON object per line with
//! `--json`, for pipes.
//!
//! Invariants: a line is one event (newlines, carriage returns and backslashes in messages are
//! escaped); exit 0 when the search ran (found or not), 1 when no node answered or a node
//! failed, 2 for bad usage, including a parameter the node refused (400). A closed stdout
//! (`| head`) ends the command quietly with 0.

use super::EXIT_USAGE;
use clap::Args;
use reqwest::StatusCode;
use serde_json::Value;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

/// How long one page may take to arrive.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    /// Node to ask; repeat to name fallbacks, tried in order when one cannot be reached.
    #[arg(long = "url", default_value = "http://127.0.0.1:5555")]
    pub urls: Vec<String>,
    /// Bearer token, if the node requires one.
    #[arg(long, env = "LOGMESH_API_TOKEN")]
    pub api_token: Option<String>,
    /// Only events of this service (exact name).
    #[arg(long)]
    pub service: Option<String>,
    /// Minimum severity: warn also finds error and fatal.
    #[arg(long)]
    pub severity: Option<String>,
    /// Events at or after this time: RFC 3339 or epoch milliseconds.
    #[arg(long)]
    pub since: Option<String>,
    /// Events before this time: RFC 3339 or epoch milliseconds.
    #[arg(long)]
    pub until: Option<String>,
    /// Only events whose attribute NAME is exactly VALUE (e.g. `--attr trace_id=5b8e…`);
    /// repeat for more. Numbers and booleans as their JSON text.
    #[arg(long = "attr", value_name = "NAME=VALUE", value_parser = attribute_filter)]
    pub attributes: Vec<(String, String)>,
    /// Events per page (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Follow next_cursor until every matching event is printed.
    #[arg(long)]
    pub all: bool,
    /// Print each event as one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Words every message must contain (whole words, case-insensitive).
    #[arg(value_name = "QUERY")]
    pub query: Vec<String>,
}

/// `NAME=VALUE` of `--attr`.
fn attribute_filter(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    crate::store::check_attribute_name(name)?;
    Ok((name.to_owned(), value.to_owned()))
}

/// Why the search stopped.
enum Failure {
    /// The node refused the request as asked (400): bad usage.
    Refused(String),
    /// No node answered, or one failed.
    Node(String),
    /// stdout is closed: the reader has what it wanted.
    Closed,
}

pub async fn run(args: SearchArgs) -> ExitCode {
    match search(&args).await {
        Ok(()) | Err(Failure::Closed) => ExitCode::SUCCESS,
        Err(Failure::Refused(message)) => {
            eprintln!("logmesh search: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Node(message)) => {
            eprintln!("logmesh search: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn search(args: &SearchArgs) -> Result<(), Failure> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| Failure::Node(format!("cannot build an HTTP client: {e}")))?;
    let mut params: Vec<(String, String)> = vec![("limit".into(), args.limit.to_string())];
    if !args.query.is_empty() {
        params.push(("q".into(), args.query.join(" ")));
    }
    for (name, value) in &args.attributes {
        params.push((format!("attr.{name}"), value.clone()));
    }
    for (name, value) in [
        ("service", &args.service),
        ("severity", &args.severity),
        ("since", &args.since),
        ("until", &args.until),
    ] {
        if let Some(value) = value {
            params.push((name.into(), value.clone()));
        }
    }
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut cursor: Option<String> = None;
    loop {
        let mut page_params = params.clone();
        if let Some(cursor) = &cursor {
            page_params.push(("cursor".into(), cursor.clone()));
        }
        let page = fetch(&client, args, &page_params).await?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        for event in &events {
            let line = if args.json {
                event.to_string()
            } else {
                plain_line(event)
            };
            writeln!(out, "{line}").map_err(closed_or_failed)?;
        }
        out.flush().map_err(closed_or_failed)?;
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if !args.all || cursor.is_none() {
            return Ok(());
        }
    }
}

fn closed_or_failed(error: io::Error) -> Failure {
    if error.kind() == io::ErrorKind::BrokenPipe {
        Failure::Closed
    } else {
        Failure::Node(format!("cannot write to stdout: {error}"))
    }
}

/// One page from the first node that answers.
async fn fetch(
    client: &reqwest::Client,
    args: &SearchArgs,
    params: &[(String, String)],
) -> Result<Value, Failure> {
    let mut unreachable = Vec::new();
    for url in &args.urls {
        let endpoint = format!("{}/api/v1/logs/search", url.trim_end_matches('/'));
        let endpoint = reqwest::Url::parse_with_params(&endpoint, params)
            .map_err(|e| Failure::Refused(format!("`{url}` is not a URL: {e}")))?;
        let mut request = client.get(endpoint);
        if let Some(token) = &args.api_token {
            request = request.bearer_auth(token);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) if error.is_connect() || error.is_timeout() => {
                unreachable.push(format!("{url}: {error}"));
                continue;
            }
            Err(error) => {
                return Err(Failure::Node(format!("{url}: {error}")));
            }
        };
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| {
            Failure::Node(format!(
                "{url} answered {status} with a body that is not JSON: {e}"
            ))
        })?;
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]["message"]
            .as_str()
            .map_or_else(|| body.to_string(), str::to_owned);
        return Err(if status == StatusCode::BAD_REQUEST {
            Failure::Refused(format!("{url} refused the search: {message}"))
        } else if status == StatusCode::UNAUTHORIZED {
            Failure::Refused(format!(
                "{url}: {message} (pass --api-token or set LOGMESH_API_TOKEN)"
            ))
        } else {
            Failure::Node(format!("{url} answered {status}: {message}"))
        });
    }
    Err(Failure::Node(format!(
        "no node could be reached ({}); is `logmesh serve` running there?",
        unreachable.join("; ")
    )))
}

/// `<timestamp> <severity> <service> <node> <message>`, the message on one line.
fn plain_line(event: &Value) -> String {
    let field = |name: &str| event[name].as_str().unwrap_or("-");
    format!(
        "{} {} {} {} {}",
        field("timestamp"),
        field("severity"),
        field("service"),
        field("node"),
        escape_message(field("message"))
    )
}

/// Backslash, newline and carriage return escaped, so that a message is one line and the
/// escaping can be undone.
pub fn escape_message(message: &str) -> String {
    let mut escaped = String::with_capacity(message.len());
    for c in message.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_escaped_onto_one_line() {
        assert_eq!(escape_message("a\nb\r\nc\\n"), "a\\nb\\r\\nc\\\\n");
        let event = serde_json::json!({"timestamp": "2026-11-23T10:00:00Z", "severity": "warn",
            "service": "api", "node": "n1", "message": "two\nlines"});
        assert_eq!(
            plain_line(&event),
            "2026-11-23T10:00:00Z warn api n1 two\\nlines"
        );
    }
}
