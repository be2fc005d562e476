//! Reading what a cluster holds for a run, through the product's own HTTP API only, so that
//! `logmesh e2e` works against any cluster it can reach: `GET /api/v1/logs/stats`
//! (`service_severity`), `GET /api/v1/logs/search` per service, page by page (`service_logs`),
//! `GET /api/v1/cluster` for the members and `GET /logs?hostname=<member>&filename=events.log`
//! for each member's event log file, and `GET /metrics` for batch figures.

use super::E2eError;
use super::report::BatchFigures;
use super::verify::{Key, Observed, StoredRow};
use crate::files::ERROR_LINE_PREFIX;
use crate::http::files::MAX_N;
use crate::store::MAX_SEARCH_LIMIT;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How long one observation request may take (a page of 1,000 events, a file scan).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The nodes to ask, tried in order: the first that answers is used.
pub struct ClusterApi {
    client: reqwest::Client,
    urls: Vec<String>,
    token: Option<String>,
}

impl ClusterApi {
    pub fn new(urls: &[String], token: Option<String>) -> Result<ClusterApi, E2eError> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| E2eError::Client(e.to_string()))?;
        Ok(ClusterApi {
            client,
            urls: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
            token,
        })
    }

    fn request(&self, url: String) -> reqwest::RequestBuilder {
        let request = self.client.get(url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// GETs `path` with `query` from the first node that answers without a 5xx.
    async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<reqwest::Response, E2eError> {
        let mut last = String::new();
        for url in &self.urls {
            match self
                .request(format!("{url}{path}"))
                .query(query)
                .send()
                .await
            {
                Ok(response) if !response.status().is_server_error() => return Ok(response),
                Ok(response) => last = format!("{url}{path} answered {}", response.status()),
                Err(error) => last = format!("{url}{path}: {error}"),
            }
        }
        Err(E2eError::Unreachable(last))
    }

    async fn get_json(&self, path: &str, query: &[(&str, String)]) -> Result<Value, E2eError> {
        let response = self.get(path, query).await?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(E2eError::Answer(format!(
                "{path} answered {status}: {}",
                text.trim()
            )));
        }
        response
            .json()
            .await
            .map_err(|e| E2eError::Answer(format!("{path}: not JSON: {e}")))
    }

    /// The `service_severity` rows whose service starts with `prefix`.
    pub async fn stats(&self, prefix: &str) -> Result<BTreeMap<Key, i64>, E2eError> {
        let stats = self.get_json("/api/v1/logs/stats", &[]).await?;
        let mut rows = BTreeMap::new();
        for row in stats["rows"].as_array().into_iter().flatten() {
            let service = row["service"].as_str().unwrap_or_default();
            if service.starts_with(prefix) {
                rows.insert(
                    (
                        service.to_owned(),
                        row["severity"].as_str().unwrap_or_default().to_owned(),
                    ),
                    row["count"].as_i64().unwrap_or_default(),
                );
            }
        }
        Ok(rows)
    }

    /// Every stored event of `services`, by id, following the search's cursors.
    pub async fn stored(
        &self,
        services: &[String],
    ) -> Result<HashMap<String, StoredRow>, E2eError> {
        let mut stored: HashMap<String, StoredRow> = HashMap::new();
        for service in services {
            let mut cursor: Option<String> = None;
            loop {
                let mut query = vec![
                    ("service", service.clone()),
                    ("limit", MAX_SEARCH_LIMIT.to_string()),
                ];
                if let Some(cursor) = &cursor {
                    query.push(("cursor", cursor.clone()));
                }
                let page = self.get_json("/api/v1/logs/search", &query).await?;
                for event in page["events"].as_array().into_iter().flatten() {
                    let id = event["id"].as_str().unwrap_or_default().to_owned();
                    stored
                        .entry(id)
                        .or_insert_with(|| StoredRow {
                            service: event["service"].as_str().unwrap_or_default().to_owned(),
                            severity: event["severity"].as_str().unwrap_or_default().to_owned(),
                            rows: 0,
                        })
                        .rows += 1;
                }
                cursor = page["next_cursor"].as_str().map(str::to_owned);
                if cursor.is_none() {
                    break;
                }
            }
        }
        Ok(stored)
    }

    /// The names of the cluster's members.
    pub async fn members(&self) -> Result<Vec<String>, E2eError> {
        let cluster = self.get_json("/api/v1/cluster", &[]).await?;
        let mut names: Vec<String> = cluster["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// How many lines of `member`'s event log carry each id of `services`.
    pub async fn event_log(
        &self,
        member: &str,
        services: &[String],
    ) -> Result<HashMap<String, u64>, E2eError> {
        let mut ids = HashMap::new();
        for service in services {
            let query = [
                ("hostname", member.to_owned()),
                ("filename", "events.log".to_owned()),
                // The event log's own JSON spelling, so that a message quoting the name does not match.
                ("keyword", format!("\"service\":\"{service}\"")),
                ("n", MAX_N.to_string()),
            ];
            let response = self.get("/logs", &query).await?;
            let status = response.status();
            if status == reqwest::StatusCode::NOT_FOUND {
                // After a run with acknowledged events every member has an event log file.
                return Err(E2eError::Answer(format!(
                    "{member} serves no events.log: GET /logs reads only a node's log roots, \
                     which by default are <data-dir>/eventlog; a node started with --log-root \
                     must list that directory too"
                )));
            }
            let text = response
                .text()
                .await
                .map_err(|e| E2eError::Answer(format!("{member}'s event log: {e}")))?;
            if !status.is_success() {
                return Err(E2eError::Answer(format!(
                    "{member}'s event log: {status}: {}",
                    text.trim()
                )));
            }
            let mut lines = 0;
            for line in text.lines() {
                if let Some(error) = line.strip_prefix(ERROR_LINE_PREFIX) {
                    return Err(E2eError::Answer(format!("{member}'s event log: {error}")));
                }
                lines += 1;
                if let Ok(event) = serde_json::from_str::<Value>(line)
                    && let Some(id) = event["id"].as_str()
                {
                    *ids.entry(id.to_owned()).or_default() += 1;
                }
            }
            if lines >= MAX_N {
                return Err(E2eError::TooManyLines {
                    member: member.to_owned(),
                    service: service.clone(),
                });
            }
        }
        Ok(ids)
    }

    /// Everything the verification needs; what could not be read becomes an error of the
    /// observation (the verification then fails, and the drain loop tries again).
    pub async fn observe(&self, prefix: &str, services: &[String]) -> Observed {
        let mut observed = Observed::default();
        match self.stats(prefix).await {
            Ok(stats) => observed.stats = stats,
            Err(error) => observed.errors.push(error.to_string()),
        }
        match self.stored(services).await {
            Ok(stored) => observed.stored = stored,
            Err(error) => observed.errors.push(error.to_string()),
        }
        match self.members().await {
            Ok(members) => {
                for member in members {
                    match self.event_log(&member, services).await {
                        Ok(ids) => {
                            observed.event_logs.insert(member, ids);
                        }
                        Err(error) => observed.errors.push(error.to_string()),
                    }
                }
            }
            Err(error) => observed.errors.push(error.to_string()),
        }
        observed
    }

    /// The ids of `service`'s newest stored events (up to a page) at or after `since`.
    pub async fn ids_since(&self, service: &str, since: &str) -> Result<Vec<String>, E2eError> {
        let query = [
            ("service", service.to_owned()),
            ("since", since.to_owned()),
            ("limit", MAX_SEARCH_LIMIT.to_string()),
        ];
        let page = self.get_json("/api/v1/logs/search", &query).await?;
        Ok(page["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|event| event["id"].as_str().map(str::to_owned))
            .collect())
    }

    /// The batch figures of the node at `url` (that node only: metrics are per node).
    pub async fn batch_figures(&self, url: &str) -> Result<BatchFigures, String> {
        let response = self
            .request(format!("{}/metrics", url.trim_end_matches('/')))
            .send()
            .await
            .map_err(|e| format!("{url}/metrics: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}/metrics answered {}", response.status()));
        }
        let text = response
            .text()
            .await
            .map_err(|e| format!("{url}/metrics: {e}"))?;
        Ok(BatchFigures::from_metrics_text(&text))
    }
}
