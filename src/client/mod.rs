//! The client side the command-line tools share (`logmesh pub`, `sim`, `e2e` and `bench`):
//! sending events to nodes, one NDJSON request per batch, round-robin over the nodes, with the
//! node's back-pressure honoured and dead nodes skipped; the simulated load in [`load`]; the
//! exit codes. Never imported by the library core.
//!
//! Invariants:
//! - A batch counts as acknowledged only when a node answered 202 for it; a connection error
//!   is never an acknowledgement, nor a loss: the same request (same ids) goes to the next
//!   node, which is safe because the store keeps an id once.
//! - A 503 with `Retry-After` is waited out, then the same request goes to the same node again;
//!   a sender never hammers a node that sheds load.
//! - A 4xx is final: the request was refused whole, nothing of it was stored.

pub mod load;

use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Exit code for bad usage or configuration (clap uses the same).
pub const EXIT_USAGE: u8 = 2;

/// How long one request may take before it counts as a failed attempt.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured, so that a confused node cannot park a sender for ever.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// The first pause after a connection error; doubled per failed round over every node.
const FAILOVER_PAUSE: Duration = Duration::from_millis(100);

/// The nodes a client command sends to.
#[derive(Debug, Clone, clap::Args)]
pub struct Targets {
    /// Node to send to; repeat (or separate with commas) for several, used in turn.
    #[arg(
        long = "url",
        default_value = "http://127.0.0.1:5555",
        value_delimiter = ','
    )]
    pub urls: Vec<String>,
    /// Bearer token, if the nodes require one.
    #[arg(long, env = "LOGMESH_API_TOKEN", hide_env = true)]
    pub api_token: Option<String>,
}

/// One event as a client sends it (the fields `POST /api/v1/logs` accepts).
#[derive(Debug, Clone, Serialize)]
pub struct ClientEvent {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    pub service: String,
    pub severity: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Box<RawValue>>,
}

/// How a batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A node (index into the sender's URLs) answered 202.
    Acknowledged { node: usize },
    /// A node refused the request whole (4xx).
    Rejected { node: usize, message: String },
    /// No node acknowledged it before the sender's patience ran out.
    GaveUp { error: String },
}

/// What one node did with the requests sent to it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct NodeCounts {
    pub url: String,
    /// Events in every request sent to this node, retries included.
    pub events_sent: u64,
    pub events_acknowledged: u64,
    pub events_rejected: u64,
    pub requests_shed_503: u64,
    /// Requests that failed without an answer (connection refused or reset, timeout) or with
    /// a 5xx other than 503.
    pub requests_failed: u64,
}

/// Sends batches to a set of nodes and counts, per node, what happened.
pub struct Sender {
    client: reqwest::Client,
    urls: Vec<String>,
    token: Option<String>,
    next: AtomicUsize,
    give_up_after: Duration,
    counts: Mutex<Vec<NodeCounts>>,
}

impl Sender {
    /// `give_up_after`: how long one batch may be retried before it is reported as not
    /// acknowledged.
    pub fn new(
        urls: &[String],
        token: Option<String>,
        give_up_after: Duration,
    ) -> Result<Sender, String> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let urls: Vec<String> = urls
            .iter()
            .map(|url| url.trim_end_matches('/').to_owned())
            .collect();
        let counts = urls
            .iter()
            .map(|url| NodeCounts {
                url: url.clone(),
                ..NodeCounts::default()
            })
            .collect();
        Ok(Sender {
            client,
            urls,
            token,
            next: AtomicUsize::new(0),
            give_up_after,
            counts: Mutex::new(counts),
        })
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Per node, what happened so far.
    pub fn counts(&self) -> Vec<NodeCounts> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<NodeCounts>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `events` as one NDJSON request to the next node in turn, failing over and
    /// waiting out back-pressure as the module doc says.
    pub async fn send(&self, events: &[ClientEvent]) -> Outcome {
        let body = ndjson(events);
        let n = events.len() as u64;
        let started = Instant::now();
        let mut node = self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len();
        let mut failed_in_a_row = 0u32;
        loop {
            let mut request = self
                .client
                .post(format!("{}/api/v1/logs", self.urls[node]))
                .header("content-type", "application/x-ndjson")
                .body(body.clone());
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            self.lock()[node].events_sent += n;
            let answer = request.send().await;
            let error = match answer {
                Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => {
                    self.lock()[node].events_acknowledged += n;
                    return Outcome::Acknowledged { node };
                }
                Ok(response) if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                    self.lock()[node].requests_shed_503 += 1;
                    let wait = retry_after(response.headers());
                    if started.elapsed() + wait.unwrap_or_default() > self.give_up_after {
                        return Outcome::GaveUp {
                            error: format!("{} kept answering 503", self.urls[node]),
                        };
                    }
                    match wait {
                        // The node asked for a pause: the same request to the same node after it.
                        Some(wait) => {
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        // Unavailable without a hint (a dependency is down): try another node.
                        None => format!("{} answered 503", self.urls[node]),
                    }
                }
                Ok(response) if response.status().is_client_error() => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    self.lock()[node].events_rejected += n;
                    return Outcome::Rejected {
                        node,
                        message: format!("{} answered {status}: {}", self.urls[node], text.trim()),
                    };
                }
                Ok(response) => {
                    self.lock()[node].requests_failed += 1;
                    format!("{} answered {}", self.urls[node], response.status())
                }
                Err(error) => {
                    self.lock()[node].requests_failed += 1;
                    format!("{}: {error}", self.urls[node])
                }
            };
            if started.elapsed() > self.give_up_after {
                return Outcome::GaveUp { error };
            }
            node = (node + 1) % self.urls.len();
            failed_in_a_row += 1;
            // Once every node failed in turn, pause before the next round (growing, bounded).
            if (failed_in_a_row as usize).is_multiple_of(self.urls.len()) {
                let rounds = (failed_in_a_row as usize / self.urls.len()).min(4) as u32;
                tokio::time::sleep(FAILOVER_PAUSE * 2u32.pow(rounds)).await;
            }
        }
    }
}

/// The request body: one JSON object per line.
pub fn ndjson(events: &[ClientEvent]) -> String {
    let mut body = String::with_capacity(events.len() * 160);
    for event in events {
        body.push_str(&serde_json::to_string(event).expect("a client event serialises"));
        body.push('\n');
    }
    body
}

/// The pause a 503 asks for: `Retry-After` in whole seconds (HTTP dates are not sent by
/// logmesh and are treated as absent), capped at [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let seconds: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// Checks the node URLs a client command was given: at least one, each `http://` or
/// `https://` with a host.
pub fn check_urls(urls: &[String]) -> Result<(), String> {
    if urls.is_empty() || urls.iter().all(|u| u.trim().is_empty()) {
        return Err("no node URL given; e.g. --url http://127.0.0.1:5555".into());
    }
    for url in urls {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a node URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!(
                "`{url}` is not a node URL: expected http://HOST:PORT or https://HOST:PORT"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_whole_seconds_and_caps_them() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(reqwest::header::RETRY_AFTER, "100000".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn node_urls_must_be_http_with_a_host() {
        assert!(check_urls(&["http://127.0.0.1:5555".into()]).is_ok());
        assert!(check_urls(&[]).is_err());
        assert!(check_urls(&["".into()]).is_err());
        assert!(check_urls(&["127.0.0.1:5555".into()]).is_err());
        assert!(check_urls(&["ftp://host".into()]).is_err());
    }

    #[test]
    fn ndjson_is_one_object_per_line_without_absent_fields() {
        let event = ClientEvent {
            id: "a-1".into(),
            timestamp: None,
            service: "api".into(),
            severity: "warn".into(),
            message: "two\nlines".into(),
            attributes: None,
        };
        let body = ndjson(&[event.clone(), event]);
        assert_eq!(body.lines().count(), 2);
        assert_eq!(
            body.lines().next().unwrap(),
            r#"{"id":"a-1","service":"api","severity":"warn","message":"two\nlines"}"#
        );
    }
}
