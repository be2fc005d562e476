//! `logmesh work submit|status|result`: asynchronous work from the command line.
//!
//! `submit` prints the callback (and, with `--wait`, follows the job to its end); `status`
//! prints the record as JSON; `result` writes the result to stdout or `--output`. With
//! `--wait`, progress goes to stderr, one line per change. Exit codes: 0 worked (or accepted,
//! without `--wait`), 1 the job failed or the node refused, 2 bad usage.

use super::EXIT_USAGE;
use clap::{Args, Subcommand, ValueEnum};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `--wait` asks for the status.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Args)]
pub struct WorkArgs {
    #[command(flatten)]
    pub node: super::NodeTarget,
    #[command(subcommand)]
    pub command: WorkCommand,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    Search,
    Count,
    Export,
}

#[derive(Debug, Subcommand)]
pub enum WorkCommand {
    /// Submit a job and print its callback. DATA is JSON (e.g. '{"by":["service"]}') or, if
    /// it is not JSON, a keyword string (a search for it).
    Submit {
        #[arg(long, value_enum, default_value = "search")]
        kind: KindArg,
        data: String,
        /// Follow the job until it ends, then print its result.
        #[arg(long)]
        wait: bool,
        /// With --wait: write the result here instead of stdout.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Print a job's status record as JSON.
    Status {
        callback: String,
        /// Follow the job until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Print a job's result (JSON, or NDJSON for an export).
    Result {
        callback: String,
        /// Wait for the job to end first.
        #[arg(long)]
        wait: bool,
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
}

type Failure = (u8, String);

struct Node {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl Node {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let response = request
            .send()
            .await
            .map_err(|e| (1, format!("{}: {e}", self.base)))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| {
            (
                1,
                format!("{} answered {status} without JSON: {e}", self.base),
            )
        })?;
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("no message");
            return Err((1, format!("{} answered {status}: {message}", self.base)));
        }
        Ok(body)
    }

    /// Polls the status until the job is worked or failed, printing each change to stderr.
    async fn wait(&self, callback: &str) -> Result<Value, Failure> {
        let mut last = String::new();
        loop {
            let record = self
                .json(self.request(reqwest::Method::GET, &format!("/api/v1/work/{callback}")))
                .await?;
            let status = record["status"].as_str().unwrap_or("").to_owned();
            let line = match status.as_str() {
                "working" => format!(
                    "{callback}: working on {} (attempt {}), {} item(s) so far",
                    record["worker"].as_str().unwrap_or("?"),
                    record["attempts"],
                    record["progress"]
                ),
                "pending" if !record["error"].is_null() => format!(
                    "{callback}: pending a retry after: {}",
                    record["error"].as_str().unwrap_or("")
                ),
                other => format!("{callback}: {other}"),
            };
            if line != last {
                eprintln!("{line}");
                last = line;
            }
            match status.as_str() {
                "worked" => return Ok(record),
                "failed" => {
                    return Err((
                        1,
                        format!(
                            "job {callback} failed after {} attempt(s): {}",
                            record["attempts"],
                            record["error"].as_str().unwrap_or("")
                        ),
                    ));
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Streams the result to `output` or stdout.
    async fn result(&self, callback: &str, output: Option<&PathBuf>) -> Result<(), Failure> {
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/work/{callback}/result"),
            )
            .send()
            .await
            .map_err(|e| (1, format!("{}: {e}", self.base)))?;
        let status = response.status();
        if !status.is_success() {
            let body: Value = response.json().await.unwrap_or_default();
            let message = body["error"]["message"].as_str().unwrap_or("no message");
            return Err((1, format!("{} answered {status}: {message}", self.base)));
        }
        let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = match output {
            Some(path) => Box::new(
                tokio::fs::File::create(path)
                    .await
                    .map_err(|e| (1, format!("{}: {e}", path.display())))?,
            ),
            None => Box::new(tokio::io::stdout()),
        };
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| (1, format!("{}: the result broke off: {e}", self.base)))?;
            out.write_all(&chunk)
                .await
                .map_err(|e| (1, format!("cannot write the result: {e}")))?;
        }
        out.flush()
            .await
            .map_err(|e| (1, format!("cannot write the result: {e}")))?;
        Ok(())
    }
}

pub async fn run(args: WorkArgs) -> ExitCode {
    match execute(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("logmesh work: {message}");
            ExitCode::from(code)
        }
    }
}

async fn execute(args: WorkArgs) -> Result<(), Failure> {
    let base = args.node.url.trim_end_matches('/').to_owned();
    reqwest::Url::parse(&base).map_err(|e| (EXIT_USAGE, format!("`{base}` is not a URL: {e}")))?;
    let node = Node {
        client: reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| (1, e.to_string()))?,
        base,
        token: args.node.api_token,
    };
    match args.command {
        WorkCommand::Submit {
            kind,
            data,
            wait,
            output,
        } => {
            let data: Value = serde_json::from_str(&data).unwrap_or(Value::String(data));
            let kind = match kind {
                KindArg::Search => "search",
                KindArg::Count => "count",
                KindArg::Export => "export",
            };
            let accepted = node
                .json(
                    node.request(reqwest::Method::POST, "/api/v1/work")
                        .json(&json!({"kind": kind, "data": data})),
                )
                .await?;
            let callback = accepted["callback"].as_str().unwrap_or("").to_owned();
            if !wait {
                println!("{callback}");
                return Ok(());
            }
            eprintln!("{callback}: {}", accepted["status"].as_str().unwrap_or(""));
            node.wait(&callback).await?;
            node.result(&callback, output.as_ref()).await
        }
        WorkCommand::Status { callback, wait } => {
            let record = if wait {
                node.wait(&callback).await?
            } else {
                node.json(node.request(reqwest::Method::GET, &format!("/api/v1/work/{callback}")))
                    .await?
            };
            println!("{}", serde_json::to_string_pretty(&record).expect("JSON"));
            Ok(())
        }
        WorkCommand::Result {
            callback,
            wait,
            output,
        } => {
            if wait {
                node.wait(&callback).await?;
            }
            node.result(&callback, output.as_ref()).await
        }
    }
}
