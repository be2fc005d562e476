//! Running one job against the store and writing its result blob.
//!
//! Search and count results are small (a search is capped) and built in memory; an export
//! streams: pages of events are written through a bounded pipe into the result store while it
//! uploads, so an export of any size holds one page in memory.

use super::submission::{GroupBy, Job};
use super::{ResultInfo, WorkBackend, WorkError};
use crate::event::Severity;
use crate::store::{Cursor, MAX_SEARCH_LIMIT, SearchQuery, Store, StoreError, StoredEventJson};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncWriteExt;

/// Why an attempt failed.
#[derive(Debug)]
pub struct JobError {
    pub message: String,
    /// Worth another attempt (the database or the result store was unreachable); otherwise
    /// the job can never succeed as asked.
    pub transient: bool,
}

impl From<StoreError> for JobError {
    fn from(error: StoreError) -> Self {
        JobError {
            transient: !matches!(error, StoreError::InvalidQuery(_) | StoreError::Rejected(_)),
            message: error.to_string(),
        }
    }
}

impl From<WorkError> for JobError {
    fn from(error: WorkError) -> Self {
        JobError {
            // A result past a limit would be past it again.
            transient: !matches!(error, WorkError::ResultLimit(_)),
            message: format!("cannot store the result: {error}"),
        }
    }
}

/// Bytes an export may have in flight between the store and the result store.
const EXPORT_PIPE_BYTES: usize = 256 * 1024;

/// Runs `job`, stores its result (at most `max_bytes`) under `key`, and counts processed items
/// in `progress`.
pub async fn run(
    job: &Job,
    store: &dyn Store,
    backend: &dyn WorkBackend,
    key: &str,
    progress: &AtomicU64,
    max_bytes: u64,
) -> Result<ResultInfo, JobError> {
    match job {
        Job::Search { filter, cap } => {
            let (events, truncated) = search(store, filter, *cap, progress).await?;
            let items = events.len() as u64;
            #[derive(serde::Serialize)]
            struct Found {
                events: Vec<StoredEventJson>,
                truncated: bool,
            }
            let body = serde_json::to_vec(&Found { events, truncated }).expect("events serialise");
            put(backend, key, &body, items, max_bytes).await
        }
        Job::Count { filter, by } => {
            let rows = store.count_events(filter).await?;
            let (groups, total) = group(rows, *by);
            progress.store(total, Ordering::Relaxed);
            let items = groups.len() as u64;
            let body = serde_json::to_vec(&json!({"groups": groups, "total": total}))
                .expect("counts serialise");
            put(backend, key, &body, items, max_bytes).await
        }
        Job::Export { filter } => export(store, backend, filter, key, progress, max_bytes).await,
    }
}

async fn put(
    backend: &dyn WorkBackend,
    key: &str,
    body: &[u8],
    items: u64,
    max_bytes: u64,
) -> Result<ResultInfo, JobError> {
    let mut reader = body;
    let bytes = backend.put_result(key, &mut reader, max_bytes).await?;
    Ok(ResultInfo {
        key: key.to_owned(),
        bytes,
        items,
    })
}

/// One page after another, newest first, until `f` says stop or the events run out.
async fn pages<F: AsyncPageFn>(
    store: &dyn Store,
    filter: &SearchQuery,
    f: &mut F,
) -> Result<(), JobError> {
    let mut query = SearchQuery {
        limit: MAX_SEARCH_LIMIT,
        cursor: None,
        ..filter.clone()
    };
    loop {
        query.limit = f.wanted().clamp(1, u64::from(MAX_SEARCH_LIMIT)) as u32;
        let page = store.search(&query).await?;
        let more = page.next_cursor.is_some();
        let last = page.events.last().map(|e| Cursor {
            ts_us: e.ts_us,
            row_id: e.row_id,
        });
        if !f.page(page.events, more).await? || !more {
            return Ok(());
        }
        query.cursor = last;
    }
}

/// What [`pages`] calls back: how many events it wants next, and each page.
trait AsyncPageFn {
    fn wanted(&self) -> u64;
    /// Takes a page; false stops.
    async fn page(
        &mut self,
        events: Vec<crate::store::StoredEvent>,
        more: bool,
    ) -> Result<bool, JobError>;
}

struct Collect<'a> {
    events: Vec<StoredEventJson>,
    cap: u64,
    truncated: bool,
    progress: &'a AtomicU64,
}

impl AsyncPageFn for Collect<'_> {
    fn wanted(&self) -> u64 {
        self.cap - self.events.len() as u64
    }

    async fn page(
        &mut self,
        events: Vec<crate::store::StoredEvent>,
        more: bool,
    ) -> Result<bool, JobError> {
        self.events
            .extend(events.into_iter().map(StoredEventJson::from));
        self.progress
            .store(self.events.len() as u64, Ordering::Relaxed);
        if self.events.len() as u64 >= self.cap {
            self.truncated = more;
            return Ok(false);
        }
        Ok(true)
    }
}

async fn search(
    store: &dyn Store,
    filter: &SearchQuery,
    cap: u64,
    progress: &AtomicU64,
) -> Result<(Vec<StoredEventJson>, bool), JobError> {
    let mut collect = Collect {
        events: Vec::new(),
        cap,
        truncated: false,
        progress,
    };
    pages(store, filter, &mut collect).await?;
    Ok((collect.events, collect.truncated))
}

struct WriteLines<'a> {
    out: tokio::io::DuplexStream,
    progress: &'a AtomicU64,
    items: u64,
}

impl AsyncPageFn for WriteLines<'_> {
    fn wanted(&self) -> u64 {
        u64::from(MAX_SEARCH_LIMIT)
    }

    async fn page(
        &mut self,
        events: Vec<crate::store::StoredEvent>,
        _more: bool,
    ) -> Result<bool, JobError> {
        let mut lines = Vec::with_capacity(events.len() * 256);
        for event in events {
            serde_json::to_writer(&mut lines, &StoredEventJson::from(event))
                .expect("an event serialises");
            lines.push(b'\n');
            self.items += 1;
        }
        // The reader side only goes away when the upload failed; its error is the one to show.
        if self.out.write_all(&lines).await.is_err() {
            return Ok(false);
        }
        self.progress.store(self.items, Ordering::Relaxed);
        Ok(true)
    }
}

async fn export(
    store: &dyn Store,
    backend: &dyn WorkBackend,
    filter: &SearchQuery,
    key: &str,
    progress: &AtomicU64,
    max_bytes: u64,
) -> Result<ResultInfo, JobError> {
    let (out, mut reader) = tokio::io::duplex(EXPORT_PIPE_BYTES);
    let mut writer = WriteLines {
        out,
        progress,
        items: 0,
    };
    let produce = async {
        let result = pages(store, filter, &mut writer).await;
        // Closing the pipe ends the upload: only after the last page, or on failure.
        let _ = writer.out.shutdown().await;
        result
    };
    let upload = async move {
        let uploaded = backend.put_result(key, &mut reader, max_bytes).await;
        // An upload that stopped early (a limit) must not leave the pages waiting on the pipe.
        drop(reader);
        uploaded
    };
    let (produced, uploaded) = tokio::join!(produce, upload);
    match (produced, uploaded) {
        (Ok(()), Ok(bytes)) => Ok(ResultInfo {
            key: key.to_owned(),
            bytes,
            items: writer.items,
        }),
        (Err(error), uploaded) => {
            // The upload got a truncated stream: never leave it as a result.
            if uploaded.is_ok() {
                let _ = backend.delete_result(key).await;
            }
            Err(error)
        }
        (Ok(()), Err(error)) => Err(error.into()),
    }
}

/// Folds per-(service, severity) counts into the asked grouping: groups ordered by service,
/// then by severity from trace to fatal.
fn group(rows: Vec<crate::store::SeverityCount>, by: GroupBy) -> (Vec<Value>, u64) {
    // Keyed by service, then severity rank and name, so groups come out in display order.
    type Group = (Option<String>, Option<(usize, String)>);
    let mut groups: BTreeMap<Group, i64> = BTreeMap::new();
    let mut total = 0u64;
    for row in rows {
        total += row.count.max(0) as u64;
        let service = by.service.then(|| row.service.clone());
        let severity = by.severity.then(|| {
            let rank = Severity::ALL
                .iter()
                .position(|s| s.as_str() == row.severity)
                .unwrap_or(usize::MAX);
            (rank, row.severity.clone())
        });
        *groups.entry((service, severity)).or_default() += row.count;
    }
    let groups = groups
        .into_iter()
        .map(|((service, severity), count)| {
            let mut group = serde_json::Map::new();
            if let Some(service) = service {
                group.insert("service".into(), service.into());
            }
            if let Some((_, severity)) = severity {
                group.insert("severity".into(), severity.into());
            }
            group.insert("count".into(), count.into());
            Value::Object(group)
        })
        .collect();
    (groups, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SeverityCount;

    fn rows() -> Vec<SeverityCount> {
        [
            ("b", "error", 2),
            ("a", "warn", 1),
            ("a", "debug", 4),
            ("b", "debug", 3),
        ]
        .into_iter()
        .map(|(service, severity, count)| SeverityCount {
            service: service.into(),
            severity: severity.into(),
            count,
        })
        .collect()
    }

    #[test]
    fn counts_fold_into_the_asked_groups() {
        let both = GroupBy {
            service: true,
            severity: true,
        };
        let (groups, total) = group(rows(), both);
        assert_eq!(total, 10);
        assert_eq!(
            Value::Array(groups),
            json!([
                {"service": "a", "severity": "debug", "count": 4},
                {"service": "a", "severity": "warn", "count": 1},
                {"service": "b", "severity": "debug", "count": 3},
                {"service": "b", "severity": "error", "count": 2},
            ])
        );
        let severity = GroupBy {
            service: false,
            severity: true,
        };
        assert_eq!(
            Value::Array(group(rows(), severity).0),
            json!([
                {"severity": "debug", "count": 7},
                {"severity": "warn", "count": 1},
                {"severity": "error", "count": 2},
            ])
        );
        let none = GroupBy {
            service: false,
            severity: false,
        };
        assert_eq!(Value::Array(group(rows(), none).0), json!([{"count": 10}]));
        assert_eq!(group(Vec::new(), none), (Vec::new(), 0));
    }
}
