//! The retention period (`--retention`) over any store: [`Retained`] keeps queries from
//! seeing events older than `now - retention`, even before expiry has removed them, and
//! [`run_expiry`] removes them in small steps.
//!
//! Invariants:
//! - Searches, counts (`count_events`) and plans start no earlier than the cutoff; the
//!   `service_severity` counts ([`Store::severity_counts`]) are given less the events older
//!   than the cutoff not removed yet, so that stats, the console and `/metrics` agree with
//!   search at every moment.
//! - Expiry runs in steps of [`EXPIRY_STEP`] rows, each its own transaction that takes its
//!   rows off `service_severity` too (see [`Store::expire`]), so the store writer's batches
//!   pass between steps and the counts stay in step with the rows; after each step it pauses as
//!   long as the step took, so ingest keeps most of its rate during a large expiry.
//! - In a cluster one node at a time expires: the one holding the `expiry` lease in the
//!   `<stream>_leases` bucket. (Two at once would still be correct: their steps lock
//!   different rows.)

use super::{BatchOutcome, SearchPage, SearchQuery, SeverityCount, Storage, Store, StoreError};
use crate::counters::{Counter, CounterKey};
use crate::event::{Event, now_us};
use crate::metrics::NodeMetrics;
use crate::nats::KvLease;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Rows one expiry step removes (one transaction).
pub const EXPIRY_STEP: usize = 2_000;
/// How often expiry looks for events past the retention period.
pub const EXPIRY_INTERVAL: Duration = Duration::from_secs(10);
/// How often a long expiry renews its lease (a third of its length, 30 s).
const LEASE_RENEWAL: Duration = Duration::from_secs(10);

/// A store whose queries stop at the retention period.
pub struct Retained {
    inner: Arc<dyn Store>,
    retention: Duration,
}

impl Retained {
    pub fn new(inner: Arc<dyn Store>, retention: Duration) -> Retained {
        Retained { inner, retention }
    }

    /// Events with a timestamp before this (epoch µs) are past the retention period.
    pub fn cutoff_us(&self) -> i64 {
        cutoff_us(self.retention)
    }

    /// `query` starting no earlier than the cutoff; `None` when it ends before the cutoff (it
    /// can find nothing: answered empty, not refused as `since` after `until`).
    fn within(&self, query: &SearchQuery) -> Option<SearchQuery> {
        let cutoff = self.cutoff_us();
        if query.until.is_some_and(|until| until <= cutoff) {
            return None;
        }
        let mut query = query.clone();
        query.since = Some(query.since.map_or(cutoff, |since| since.max(cutoff)));
        Some(query)
    }
}

fn cutoff_us(retention: Duration) -> i64 {
    now_us().saturating_sub(i64::try_from(retention.as_micros()).unwrap_or(i64::MAX))
}

#[async_trait]
impl Store for Retained {
    async fn write_batch(&self, events: Vec<Arc<Event>>) -> Result<BatchOutcome, StoreError> {
        self.inner.write_batch(events).await
    }

    async fn severity_counts(&self) -> Result<Vec<SeverityCount>, StoreError> {
        let cutoff = self.cutoff_us();
        let counts = self.inner.severity_counts().await?;
        // Usually nothing is past the cutoff (expiry keeps up): one look at the oldest event
        // (the time index) spares counting.
        let oldest = self.inner.storage().await?.oldest_us;
        if oldest.is_none_or(|oldest| oldest >= cutoff) {
            return Ok(counts);
        }
        let expired = self
            .inner
            .count_events(&SearchQuery {
                until: Some(cutoff),
                ..SearchQuery::default()
            })
            .await?;
        if expired.is_empty() {
            return Ok(counts);
        }
        let expired: HashMap<(String, String), i64> = expired
            .into_iter()
            .map(|row| ((row.service, row.severity), row.count))
            .collect();
        Ok(counts
            .into_iter()
            .filter_map(|mut row| {
                let key = (row.service.clone(), row.severity.clone());
                row.count -= expired.get(&key).copied().unwrap_or(0);
                (row.count > 0).then_some(row)
            })
            .collect())
    }

    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        query.check()?;
        match self.within(query) {
            Some(query) => self.inner.search(&query).await,
            None => Ok(SearchPage::from_rows(Vec::new(), query.limit)),
        }
    }

    async fn count_events(&self, query: &SearchQuery) -> Result<Vec<SeverityCount>, StoreError> {
        query.check()?;
        match self.within(query) {
            Some(query) => self.inner.count_events(&query).await,
            None => Ok(Vec::new()),
        }
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.inner.health().await
    }

    async fn increment_counter(&self, key: &CounterKey, by: i64) -> Result<i64, StoreError> {
        self.inner.increment_counter(key, by).await
    }

    async fn counters(&self) -> Result<Vec<Counter>, StoreError> {
        self.inner.counters().await
    }

    async fn explain_search(&self, query: &SearchQuery) -> Result<String, StoreError> {
        let query = self.within(query).unwrap_or_else(|| query.clone());
        self.inner.explain_search(&query).await
    }

    async fn expire(&self, before_us: i64, max_rows: usize) -> Result<usize, StoreError> {
        self.inner.expire(before_us, max_rows).await
    }

    async fn storage(&self) -> Result<Storage, StoreError> {
        self.inner.storage().await
    }
}

/// One expiry step: removes up to [`EXPIRY_STEP`] events stamped before `cutoff`, and answers
/// how many. After a full step (more may be left) it pauses as long as the step took, so that
/// expiry takes at most about half of the store's time and the writer's batches keep most of
/// their pace.
pub async fn expiry_step(store: &dyn Store, cutoff: i64) -> Result<usize, StoreError> {
    let started = std::time::Instant::now();
    let removed = store.expire(cutoff, EXPIRY_STEP).await?;
    if removed == EXPIRY_STEP {
        tokio::time::sleep(started.elapsed()).await;
    }
    Ok(removed)
}

/// Removes the events past `retention` every [`EXPIRY_INTERVAL`], a step at a time, until
/// `stop` turns true; counts them in `metrics`. With a `lease` (a cluster), only while this node
/// holds it: one node at a time expires, renewing the lease between steps (a node that dies
/// mid-way leaves whole steps behind, and another takes over once the lease lapses).
pub async fn run_expiry(
    store: Arc<dyn Store>,
    retention: Duration,
    mut lease: Option<KvLease>,
    metrics: Arc<NodeMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        if let Some(lease) = &mut lease
            && !lease.hold().await
        {
            continue;
        }
        let mut renewed = std::time::Instant::now();
        let cutoff = cutoff_us(retention);
        let mut removed = 0;
        loop {
            if *stop.borrow() {
                return;
            }
            if let Some(lease) = &mut lease
                && renewed.elapsed() >= LEASE_RENEWAL
            {
                if !lease.hold().await {
                    break;
                }
                renewed = std::time::Instant::now();
            }
            match expiry_step(store.as_ref(), cutoff).await {
                Ok(step) => {
                    removed += step;
                    metrics.rows_expired(step);
                    if step < EXPIRY_STEP {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "Could not remove expired events; trying again later.");
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "Removed events past the retention period.");
        }
    }
}
