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
use crate::metrics::{Expired, NodeMetrics};
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
    step(store, cutoff, EXPIRY_STEP).await
}

/// Removes up to `max_rows` events stamped before `before_us`, then, if it removed that many,
/// pauses as long as it took.
async fn step(store: &dyn Store, before_us: i64, max_rows: usize) -> Result<usize, StoreError> {
    let started = std::time::Instant::now();
    let removed = store.expire(before_us, max_rows).await?;
    if removed == max_rows {
        tokio::time::sleep(started.elapsed()).await;
    }
    Ok(removed)
}

/// What expiry holds the store to: an age (`--retention`) and a size (`--max-store-bytes`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub retention: Option<Duration>,
    pub max_bytes: Option<u64>,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.retention.is_some() || self.max_bytes.is_some()
    }
}

/// Share of `--max-store-bytes` the size cap brings the store down to once it is passed, so
/// that it is not at the cap again a few batches later.
const SIZE_CAP_TARGET: f64 = 0.9;

/// The size of the stored events as the cap sees it. SQLite's file shrinks as soon as events
/// are removed, so its bytes are taken as they are. PostgreSQL and InnoDB keep freed pages
/// inside their files (and reuse them for new rows), and MariaDB's figures are statistics
/// refreshed now and then, so after a removal their bytes would make the store look as full as
/// before and the cap would remove everything: there the cap counts rows (exact, from
/// `service_severity`) times the bytes a row takes, measured while the store grows.
#[derive(Debug, Default)]
pub struct SizeEstimate {
    /// Bytes per stored row.
    per_row: Option<f64>,
    /// The largest size measured: a store larger than that has no freed space left to reuse,
    /// so its bytes per row are measured afresh.
    largest: u64,
}

impl SizeEstimate {
    /// Learns from `storage` holding `rows` and answers how many of the oldest rows to remove
    /// to bring the store to [`SIZE_CAP_TARGET`] of `max_bytes`: 0 while it is under
    /// `max_bytes`.
    pub fn excess_rows(&mut self, storage: Storage, rows: i64, max_bytes: u64) -> u64 {
        let bytes = storage.bytes;
        if rows <= 0 {
            self.largest = self.largest.max(bytes);
            return 0;
        }
        let measured = bytes as f64 / rows as f64;
        let per_row = match self.per_row {
            // A store that gives freed pages back, or one grown past anything seen (its rows
            // fill its files): the figure is true.
            Some(_) if storage.shrinks_on_removal || bytes > self.largest => measured,
            // Freed space inside the files makes a row look larger than it is.
            Some(per_row) => per_row.min(measured),
            None => measured,
        };
        self.per_row = Some(per_row);
        self.largest = self.largest.max(bytes);
        if bytes <= max_bytes || rows as f64 * per_row <= max_bytes as f64 {
            return 0;
        }
        let keep = (max_bytes as f64 * SIZE_CAP_TARGET / per_row).floor() as i64;
        (rows - keep).max(0) as u64
    }
}

/// Removes up to `rows` of the oldest events whatever their age, a step at a time with the
/// same pauses as [`expiry_step`]; answers how many it removed.
pub async fn remove_oldest(
    store: &dyn Store,
    rows: u64,
    mut keep_going: impl FnMut() -> bool,
) -> Result<u64, StoreError> {
    // Whatever their age: every row up to a year ahead (a fresh bound each call, so that the
    // store starts this removal at its oldest row).
    let before_us = now_us().saturating_add(365 * 86_400_000_000);
    let mut removed = 0;
    while removed < rows && keep_going() {
        let max_rows = (rows - removed).min(EXPIRY_STEP as u64) as usize;
        let done = step(store, before_us, max_rows).await?;
        removed += done as u64;
        if done < max_rows {
            break;
        }
    }
    Ok(removed)
}

/// Holds the store to `limits` every [`EXPIRY_INTERVAL`] until `stop` turns true: removes the
/// events past the retention period a step at a time, then, over the size cap, the oldest
/// events; counts them in `metrics`. With a `lease` (a cluster), only while this node holds it:
/// one node at a time expires, renewing the lease between steps (a node that dies mid-way
/// leaves whole steps behind, and another takes over once the lease lapses).
pub async fn run_expiry(
    store: Arc<dyn Store>,
    limits: Limits,
    mut lease: Option<KvLease>,
    metrics: Arc<NodeMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut size = SizeEstimate::default();
    'rounds: loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => break 'rounds,
        }
        if let Some(lease) = &mut lease
            && !lease.hold().await
        {
            continue;
        }
        let mut renewed = std::time::Instant::now();
        if let Some(retention) = limits.retention {
            let cutoff = cutoff_us(retention);
            let mut removed = 0;
            loop {
                if *stop.borrow() {
                    break 'rounds;
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
                        metrics.rows_expired(Expired::Age, step);
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
        if let Some(max_bytes) = limits.max_bytes {
            // A lease renewed at the top of the round lasts 30 s; a cap removal taking longer
            // stops at 20 s and goes on next round.
            let deadline = renewed + LEASE_RENEWAL * 2;
            match hold_size(store.as_ref(), &mut size, max_bytes, || {
                !*stop.borrow() && std::time::Instant::now() < deadline
            })
            .await
            {
                Ok(0) => {}
                Ok(removed) => {
                    metrics.rows_expired(Expired::Size, removed as usize);
                    tracing::info!(
                        removed,
                        max_bytes,
                        "Removed the oldest events to keep the store under --max-store-bytes."
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, "Could not hold the store to --max-store-bytes; trying again later.");
                }
            }
        }
        metrics.expiry_round();
    }
    if let Some(lease) = &mut lease {
        lease.release().await;
    }
}

/// One look at the store's size: removes the oldest events if it is over `max_bytes`.
async fn hold_size(
    store: &dyn Store,
    size: &mut SizeEstimate,
    max_bytes: u64,
    keep_going: impl FnMut() -> bool,
) -> Result<u64, StoreError> {
    let (storage, counts) = tokio::try_join!(store.storage(), store.severity_counts())?;
    let rows: i64 = counts.iter().map(|row| row.count).sum();
    let excess = size.excess_rows(storage, rows, max_bytes);
    if excess == 0 {
        return Ok(0);
    }
    remove_oldest(store, excess, keep_going).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What PostgreSQL and InnoDB report: freed pages stay in the files.
    fn kept(bytes: u64) -> Storage {
        Storage {
            bytes,
            ..Storage::default()
        }
    }

    #[test]
    fn under_the_cap_nothing_is_removed() {
        let mut size = SizeEstimate::default();
        assert_eq!(size.excess_rows(kept(900), 9, 1000), 0);
        assert_eq!(size.excess_rows(kept(0), 0, 1000), 0);
    }

    #[test]
    fn over_the_cap_the_rows_past_nine_tenths_are_removed() {
        let mut size = SizeEstimate::default();
        // 100 bytes a row, 20 rows: 2000 bytes against 1000; keep 9.
        assert_eq!(size.excess_rows(kept(2000), 20, 1000), 11);
    }

    #[test]
    fn freed_space_kept_in_the_files_does_not_remove_more() {
        let mut size = SizeEstimate::default();
        assert_eq!(size.excess_rows(kept(2000), 20, 1000), 11);
        // The file keeps its size after the removal: 9 rows in 2000 bytes would look like
        // 222 bytes a row and remove them all again.
        assert_eq!(size.excess_rows(kept(2000), 9, 1000), 0);
        // New rows reuse the freed space: still under the cap by rows.
        assert_eq!(size.excess_rows(kept(2000), 10, 1000), 0);
        // Past the cap by rows again: back to 9.
        assert_eq!(size.excess_rows(kept(2000), 12, 1000), 3);
    }

    #[test]
    fn a_store_grown_past_anything_seen_measures_its_rows_afresh() {
        let mut size = SizeEstimate::default();
        assert_eq!(size.excess_rows(kept(500), 10, 1000), 0);
        // Rows grew to 200 bytes each: 3000 bytes for 15 rows, keep 4.
        assert_eq!(size.excess_rows(kept(3000), 15, 1000), 11);
    }

    #[test]
    fn a_store_that_shrinks_is_taken_at_its_word() {
        let shrinking = |bytes| Storage {
            bytes,
            shrinks_on_removal: true,
            ..Storage::default()
        };
        let mut size = SizeEstimate::default();
        assert_eq!(size.excess_rows(shrinking(2000), 20, 1000), 11);
        // Fragmented pages: 9 rows still take 1100 bytes, so 2 more go.
        assert_eq!(size.excess_rows(shrinking(1100), 9, 1000), 2);
    }
}
