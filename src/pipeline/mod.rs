//! The background writers: each takes batches from the ingest queue (up to the batch size, or
//! whatever arrived within the flush interval) and hands them to a sink: the SQL store, or the
//! node's event log file, at most the batch size per write.
//!
//! Invariants:
//! - A batch is acknowledged to the queue only after its sink reported success, so a crash at
//!   any point leaves it to be delivered again; sinks de-duplicate.
//! - A batch the sink refused is retried, with backoff, before anything newer is fetched:
//!   order is kept and nothing is skipped.
//! - Only fetching is ever cancelled (by shutdown); a write in progress always completes.

use crate::eventlog::EventLogFile;
use crate::lane::Lane;
use crate::metrics::NodeMetrics;
use crate::queue::{Batch, QueueConsumer, QueueError};
use crate::store::Store;
use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Where a pipeline delivers batches.
#[async_trait]
pub trait BatchSink: Send + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Writes the batch; returns how many events were new (the rest were duplicates).
    async fn write(&mut self, batch: &Batch) -> Result<usize, String>;
}

/// Whether a writer keeps up: since when it has held a batch without completing a write.
/// `GET /readyz` reports a writer stalled past `--writer-stall-timeout`, so a node that accepts
/// events but no longer stores them (a hung database, a starved thread) is taken out of
/// rotation instead of looking healthy.
#[derive(Debug)]
pub struct WriterWatch {
    name: &'static str,
    /// Milliseconds since `origin` when the current stretch of work began; 0 when idle.
    busy_since_ms: AtomicU64,
    origin: Instant,
}

impl WriterWatch {
    pub fn new(name: &'static str) -> Arc<WriterWatch> {
        Arc::new(WriterWatch {
            name,
            busy_since_ms: AtomicU64::new(0),
            origin: Instant::now(),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn now_ms(&self) -> u64 {
        (self.origin.elapsed().as_millis() as u64).max(1)
    }

    /// Holding a batch: starts the clock unless it runs.
    fn busy(&self) {
        let _ = self.busy_since_ms.compare_exchange(
            0,
            self.now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// A write completed: the clock starts again.
    fn progressed(&self) {
        self.busy_since_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn idle(&self) {
        self.busy_since_ms.store(0, Ordering::Relaxed);
    }

    /// How long the writer has held a batch without completing a write, if it holds one.
    pub fn stalled_for(&self) -> Option<Duration> {
        match self.busy_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(self.now_ms().saturating_sub(since))),
        }
    }
}

/// What one step of a pipeline did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing arrived within the wait.
    Idle,
    /// A batch was written and acknowledged.
    Delivered { events: usize, new: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("the {sink} refused a batch of {events} events: {reason}")]
    Sink {
        sink: &'static str,
        events: usize,
        reason: String,
    },
}

pub struct Pipeline<S> {
    consumer: Box<dyn QueueConsumer>,
    sink: S,
    batch_size: usize,
    flush_interval: Duration,
    /// A fetched batch not yet written; retried before fetching anything else.
    pending: Option<Batch>,
    /// How many of the pending batch's events are written already, and how many of those
    /// were new.
    pending_written: usize,
    pending_new: usize,
    /// Whether shutdown first delivers everything the queue holds (see [`Pipeline::run`]).
    drain: bool,
    metrics: Option<Arc<NodeMetrics>>,
    watch: Option<Arc<WriterWatch>>,
}

impl<S: BatchSink> Pipeline<S> {
    pub fn new(
        consumer: Box<dyn QueueConsumer>,
        sink: S,
        batch_size: usize,
        flush_interval: Duration,
    ) -> Self {
        Pipeline {
            consumer,
            sink,
            batch_size,
            flush_interval,
            pending: None,
            pending_written: 0,
            pending_new: 0,
            drain: true,
            metrics: None,
            watch: None,
        }
    }

    /// Reports progress to `watch` (for `GET /readyz`).
    pub fn with_watch(mut self, watch: Arc<WriterWatch>) -> Self {
        self.watch = Some(watch);
        self
    }

    /// Records batch sizes and write durations in the node's metrics.
    pub fn with_metrics(mut self, metrics: Arc<NodeMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Stops at shutdown without draining the queue: for a shared queue (the cluster shape),
    /// where other nodes, or this one after its restart, deliver what is left.
    pub fn without_drain(mut self) -> Self {
        self.drain = false;
        self
    }

    /// Fetches (waiting at most `wait`) and delivers one batch.
    pub async fn run_once(&mut self, wait: Duration) -> Result<Outcome, PipelineError> {
        if self.pending.is_none() {
            let batch = self.consumer.fetch(self.batch_size, wait).await?;
            if batch.is_empty() {
                if let Some(watch) = &self.watch {
                    watch.idle();
                }
                return Ok(Outcome::Idle);
            }
            self.pending = Some(batch);
        }
        self.deliver_pending().await
    }

    /// Writes the pending batch, at most `batch_size` events per sink write: a fetch may bring
    /// more (a JetStream message carries a whole request), and `--batch-size` promises events
    /// per store transaction. Acknowledges the batch once all of it is written. A write that
    /// fails keeps the batch pending; the retry resumes at the part that failed.
    async fn deliver_pending(&mut self) -> Result<Outcome, PipelineError> {
        let Some(batch) = self.pending.take() else {
            return Ok(Outcome::Idle);
        };
        if let Some(watch) = &self.watch {
            watch.busy();
        }
        while self.pending_written < batch.len() {
            let end = (self.pending_written + self.batch_size).min(batch.len());
            let part = if self.pending_written == 0 && end == batch.len() {
                None
            } else {
                Some(Batch {
                    events: batch.events[self.pending_written..end].to_vec(),
                })
            };
            let part_ref = part.as_ref().unwrap_or(&batch);
            let started = Instant::now();
            match self.sink.write(part_ref).await {
                Ok(new) => {
                    if let Some(metrics) = &self.metrics {
                        metrics.batch_written(self.sink.name(), part_ref.len(), started.elapsed());
                    }
                    tracing::debug!(
                        sink = self.sink.name(),
                        events = part_ref.len(),
                        new,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "Wrote a batch."
                    );
                    self.pending_new += new;
                    self.pending_written = end;
                    if let Some(watch) = &self.watch {
                        watch.progressed();
                    }
                }
                Err(reason) => {
                    let error = PipelineError::Sink {
                        sink: self.sink.name(),
                        events: part_ref.len(),
                        reason,
                    };
                    self.pending = Some(batch);
                    return Err(error);
                }
            }
        }
        let new = std::mem::take(&mut self.pending_new);
        self.pending_written = 0;
        self.consumer.ack(&batch).await?;
        Ok(Outcome::Delivered {
            events: batch.len(),
            new,
        })
    }

    /// Runs until `shutdown` turns true (or its sender is dropped), then delivers everything
    /// the queue still holds and returns. If the sink fails while draining, the rest stays
    /// durable in the queue for the next start. Without drain it finishes the fetch and the
    /// write in progress, then returns, leaving the rest to other consumers.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::default();
        let mut draining = false;
        loop {
            draining = draining || *shutdown.borrow_and_update();
            if draining && !self.drain {
                return;
            }
            let result = if self.pending.is_some() {
                self.deliver_pending().await
            } else {
                let wait = if draining {
                    Duration::ZERO
                } else {
                    self.flush_interval
                };
                tokio::select! {
                    result = self.run_once(wait) => result,
                    // Without drain the fetch runs to its end (at most the flush interval): a
                    // shared queue has already handed this writer the messages it is
                    // collecting, and abandoning them would hold them back from every other
                    // writer until the acknowledgement deadline.
                    changed = shutdown.changed(), if !draining && self.drain => {
                        draining = changed.is_err() || *shutdown.borrow();
                        continue;
                    }
                }
            };
            match result {
                Ok(Outcome::Idle) if draining => return,
                Ok(_) => backoff.reset(),
                Err(error) if draining => {
                    tracing::warn!(
                        error = %error,
                        "Stopping with events left in the ingest queue; they are delivered at the next start."
                    );
                    return;
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "Will retry the batch.");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        changed = shutdown.changed() => {
                            draining = changed.is_err() || *shutdown.borrow();
                        }
                    }
                }
            }
        }
    }
}

/// Exponential backoff from 100 ms to 10 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Backoff::FIRST,
        }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        delay
    }

    fn reset(&mut self) {
        self.next = Backoff::FIRST;
    }
}

/// Writes batches to the SQL store.
pub struct StoreSink {
    pub store: Arc<dyn Store>,
}

#[async_trait]
impl BatchSink for StoreSink {
    fn name(&self) -> &'static str {
        "store"
    }

    async fn write(&mut self, batch: &Batch) -> Result<usize, String> {
        let events = batch.events.iter().map(|e| e.event.clone()).collect();
        let outcome = self
            .store
            .write_batch(events)
            .await
            .map_err(|e| e.to_string())?;
        Ok(outcome.inserted)
    }
}

/// Appends batches to the node's event log file, on the file's own thread, and removes the
/// rotated files past their age or the total size every [`EVENT_LOG_EXPIRY`] (on the same
/// thread, so never while a rotation renames them; rotation itself also removes them).
pub struct EventLogSink {
    file: Lane<EventLogFile>,
    path: std::path::PathBuf,
    expiry: tokio::task::JoinHandle<()>,
}

/// How often the event log's rotated files are checked for age, between rotations.
pub const EVENT_LOG_EXPIRY: std::time::Duration = std::time::Duration::from_secs(60);

impl EventLogSink {
    pub fn new(file: EventLogFile) -> std::io::Result<Self> {
        let path = file.path();
        let file = Lane::spawn("eventlog-writer", file)?;
        let expiry = tokio::spawn(expire_event_log(file.clone(), path.clone()));
        Ok(EventLogSink { file, path, expiry })
    }
}

impl Drop for EventLogSink {
    fn drop(&mut self) {
        // Its handle to the lane would keep the file's thread alive.
        self.expiry.abort();
    }
}

async fn expire_event_log(file: Lane<EventLogFile>, path: std::path::PathBuf) {
    let mut tick = tokio::time::interval(EVENT_LOG_EXPIRY);
    loop {
        tick.tick().await;
        match file
            .run(|file| file.expire(std::time::SystemTime::now()))
            .await
        {
            Ok(Ok(removed)) => {
                for removed in removed {
                    tracing::info!(path = %removed.path.display(), bytes = removed.bytes, "Removed an old event log file.");
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(path = %path.display(), %error, "Could not remove old event log files.");
            }
            Err(_) => return,
        }
    }
}

#[async_trait]
impl BatchSink for EventLogSink {
    fn name(&self) -> &'static str {
        "event log"
    }

    async fn write(&mut self, batch: &Batch) -> Result<usize, String> {
        let events = batch.events.clone();
        self.file
            .run(move |file| file.append(&events))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{IngestContext, parse_json_body};
    use crate::queue::local::LocalQueue;
    use crate::queue::{ConsumerRole, IngestQueue, QueueLimits};
    use crate::store::sqlite::SqliteStore;

    /// A local queue and a SQLite store in `dir`; the store refuses the event `refused_id`
    /// (trigger `refuse`) until the returned side connection drops the trigger.
    async fn queue_and_store_refusing(
        dir: &std::path::Path,
        refused_id: &str,
    ) -> (LocalQueue, Arc<SqliteStore>, rusqlite::Connection) {
        let limits = QueueLimits {
            max_events: 100,
            max_bytes: 1 << 20,
        };
        let queue = LocalQueue::open(&dir.join("queue"), limits, 0).unwrap();
        let db = dir.join("s.db");
        let store = Arc::new(
            SqliteStore::open(db.clone(), Default::default())
                .await
                .unwrap(),
        );
        let side = rusqlite::Connection::open(&db).unwrap();
        side.execute_batch(&format!(
            "CREATE TRIGGER refuse BEFORE INSERT ON service_logs WHEN NEW.id = '{refused_id}'
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END;"
        ))
        .unwrap();
        (queue, store, side)
    }

    #[tokio::test]
    async fn a_fetch_larger_than_the_batch_size_is_written_in_parts_and_resumed_where_it_failed() {
        // A JetStream message carries a whole request, so a fetch may bring more events than
        // the batch size; the store must still get at most that many per transaction.
        let dir = tempfile::tempdir().unwrap();
        let (queue, store, side) = queue_and_store_refusing(dir.path(), "e14").await;
        let body: String = (0..25)
            .map(|i| format!("{{\"id\":\"e{i}\",\"service\":\"a\",\"message\":\"m\"}}\n"))
            .collect();
        let context = IngestContext {
            node: "n",
            now_us: 1,
            oldest_us: i64::MIN,
        };
        queue
            .append(parse_json_body(body.as_bytes(), context).unwrap())
            .await
            .unwrap();
        let metrics = Arc::new(NodeMetrics::new());
        let mut pipeline = Pipeline::new(
            queue.consumer(ConsumerRole::Store).await.unwrap(),
            StoreSink {
                store: store.clone(),
            },
            10,
            Duration::ZERO,
        )
        .with_metrics(metrics.clone());
        // As a JetStream fetch would: all 25 at once.
        let fetched = pipeline.consumer.fetch(25, Duration::ZERO).await.unwrap();
        assert_eq!(fetched.len(), 25);
        pipeline.pending = Some(fetched);

        let error = pipeline.run_once(Duration::ZERO).await.unwrap_err();
        assert!(
            error.to_string().contains("a batch of 10 events"),
            "{error}"
        );
        let total = || async { store.severity_counts().await.unwrap()[0].count };
        assert_eq!(total().await, 10, "the first part is committed");
        side.execute_batch("DROP TRIGGER refuse").unwrap();
        let delivered = pipeline.run_once(Duration::ZERO).await.unwrap();
        assert_eq!(
            delivered,
            Outcome::Delivered {
                events: 25,
                new: 25
            }
        );
        assert_eq!(total().await, 25);
        let store_stats = metrics.snapshot(Default::default()).sinks;
        let store_stats = store_stats.iter().find(|s| s.sink == "store").unwrap();
        assert_eq!(
            (store_stats.batches, store_stats.events),
            (3, 25),
            "10, 10 and 5"
        );
    }

    #[tokio::test]
    async fn a_refused_batch_stays_queued_and_is_retried_before_anything_newer() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, store, side) = queue_and_store_refusing(dir.path(), "poison").await;
        let context = IngestContext {
            node: "n",
            now_us: 1,
            oldest_us: i64::MIN,
        };
        let body = "{\"id\":\"ok\",\"service\":\"a\",\"message\":\"m\"}\n\
                    {\"id\":\"poison\",\"service\":\"a\",\"message\":\"m\"}\n";
        queue
            .append(parse_json_body(body.as_bytes(), context).unwrap())
            .await
            .unwrap();
        let mut pipeline = Pipeline::new(
            queue.consumer(ConsumerRole::Store).await.unwrap(),
            StoreSink {
                store: store.clone(),
            },
            10,
            Duration::ZERO,
        );
        let error = pipeline.run_once(Duration::ZERO).await.unwrap_err();
        assert!(error.to_string().contains("poisoned"), "{error}");
        assert!(
            store.severity_counts().await.unwrap().is_empty(),
            "all or nothing"
        );

        let later = "{\"id\":\"later\",\"service\":\"a\",\"message\":\"m\"}\n";
        queue
            .append(parse_json_body(later.as_bytes(), context).unwrap())
            .await
            .unwrap();
        side.execute_batch("DROP TRIGGER refuse").unwrap();
        let retried = pipeline.run_once(Duration::ZERO).await.unwrap();
        assert_eq!(
            retried,
            Outcome::Delivered { events: 2, new: 2 },
            "the same batch again"
        );
        let next = pipeline.run_once(Duration::ZERO).await.unwrap();
        assert_eq!(next, Outcome::Delivered { events: 1, new: 1 });
        assert_eq!(store.severity_counts().await.unwrap()[0].count, 3);
    }

    #[test]
    fn backoff_doubles_up_to_a_cap_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<_> = (0..10).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
