//! `logmesh tail`: the last matching lines of a file on a node (or every node), printed as
//! plain lines for pipes. Exit codes: 0 success, 1 the node failed or the stream ended with
//! its error line, 2 bad usage.
//!
//! Invariant: stdout carries only the file's lines; every problem goes to stderr on one line.

use crate::files::ERROR_LINE_PREFIX;
use crate::http::files::MAX_N;
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The node to ask
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:5555")]
    pub url: String,
    /// The cluster member whose file to read, or '*' for every member (lines are then prefixed
    /// with the member's name) [default: the node at --url]
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Only lines containing this text
    #[arg(long, value_name = "TEXT")]
    pub keyword: Option<String>,
    /// Only lines matching this regular expression (Rust regex syntax)
    #[arg(long, value_name = "REGEX", conflicts_with = "keyword")]
    pub regex: Option<String>,
    /// Match the keyword or regex without regard to case
    #[arg(long)]
    pub ignore_case: bool,
    /// How many lines
    #[arg(short = 'n', value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=MAX_N as i64))]
    pub n: u32,
    /// desc: newest first; asc: oldest of the n first, like tail(1)
    #[arg(long, value_enum, default_value_t = OrderArg::Desc)]
    pub order: OrderArg,
    /// Keep printing new matching lines as they are written (until interrupted)
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Bearer token for a node started with --api-token [env: LOGMESH_API_TOKEN]
    #[arg(long, value_name = "TOKEN", env = "LOGMESH_API_TOKEN", hide_env = true)]
    pub api_token: Option<String>,
    /// The file, relative to one of the node's log roots (see GET /logs/files)
    pub file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrderArg {
    Asc,
    Desc,
}

pub async fn run(args: TailArgs) -> ExitCode {
    match tail(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("logmesh tail: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn tail(args: &TailArgs) -> Result<(), String> {
    let mut query: Vec<(&str, String)> = vec![
        ("filename", args.file.clone()),
        ("n", args.n.to_string()),
        (
            "order",
            match args.order {
                OrderArg::Asc => "asc",
                OrderArg::Desc => "desc",
            }
            .to_owned(),
        ),
    ];
    if let Some(host) = &args.host {
        query.push(("hostname", host.clone()));
    }
    if let Some(keyword) = &args.keyword {
        query.push(("keyword", keyword.clone()));
    }
    if let Some(regex) = &args.regex {
        query.push(("regex", regex.clone()));
    }
    if args.ignore_case {
        query.push(("ignore_case", "true".into()));
    }
    if args.follow {
        query.push(("follow", "true".into()));
    }
    let url = format!("{}/logs", args.url.trim_end_matches('/'));
    let mut request = reqwest::Client::new().get(&url).query(&query);
    if let Some(token) = &args.api_token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {}", one_line(&e)))?;
    let status = response.status();
    if !status.is_success() {
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("no error message");
        return Err(format!("{url} answered {status}: {message}"));
    }
    let mut body = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let stdout = std::io::stdout();
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| format!("the stream from {url} broke: {}", one_line(&e)))?;
        pending.extend_from_slice(&piece);
        let Some(end) = memchr::memrchr(b'\n', &pending) else {
            continue;
        };
        let mut out = stdout.lock();
        for line in pending[..=end].split_inclusive(|b| *b == b'\n') {
            if let Some(message) = line.strip_prefix(ERROR_LINE_PREFIX.as_bytes()) {
                let _ = out.flush();
                return Err(String::from_utf8_lossy(message).trim_end().to_owned());
            }
            if let Err(error) = out.write_all(line) {
                // A closed pipe (`| head`) means the reader has what it wanted.
                return if error.kind() == std::io::ErrorKind::BrokenPipe {
                    Ok(())
                } else {
                    Err(format!("cannot write to stdout: {error}"))
                };
            }
        }
        let _ = out.flush();
        pending.drain(..=end);
    }
    if !pending.is_empty() {
        let mut out = stdout.lock();
        let _ = out.write_all(&pending);
        let _ = out.write_all(b"\n");
    }
    Ok(())
}

fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.replace('\n', " ")
}
