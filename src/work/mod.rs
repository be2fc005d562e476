//! Asynchronous work (the CQRS seed made real): a job is accepted over HTTP with a callback id,
//! queued durably, done by a worker on some node, and its status and result are kept for a TTL.
//!
//! - [`submission`] checks a request and derives its callback (MD5 of the data, or of the
//!   canonical request); bad input never becomes a job.
//! - [`WorkBackend`] is the port: job records with compare-and-swap revisions, a durable queue
//!   with acknowledgement and redelivery, and result blobs. Adapters: [`local::LocalWork`]
//!   (embedded: one SQLite file and result files in the data directory) and
//!   [`jetstream::JetStreamWork`] (cluster: a work-queue stream, a KV bucket with a TTL for the
//!   records, an object store for the results).
//! - [`Work`] is what the API calls: submit (with de-duplication), status, result.
//! - [`worker`] runs jobs on every node.
//!
//! Invariants:
//! - A record's status only moves through [`Work`] and the workers, each change a
//!   compare-and-swap on the revision it read, so two nodes never both believe they own a job.
//! - A job runs at most once at a time: a worker holds a lease on the record, renews it while it
//!   works and gives up the job as soon as a renewal finds the record changed under it. Another
//!   worker takes a job only when its lease has run out (in the embedded shape also when the
//!   holder was a previous run of this process, which the data directory lock proves dead).
//! - A record (and its result) lives for the TTL after its last change, then is gone (404).

pub mod jetstream;
pub mod local;
mod run;
pub mod submission;
pub mod worker;

use crate::event::{format_us, now_us};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
pub use submission::{Job, Kind, Submission};

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Recorded by the node that took the request; about to be queued.
    Accepted,
    /// Queued, waiting for a free worker (or for its next attempt after a failed one).
    Pending,
    /// A worker is running it.
    Working,
    /// Done; the result can be fetched.
    Worked,
    /// Given up: the error says why.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Pending => "pending",
            Status::Working => "working",
            Status::Worked => "worked",
            Status::Failed => "failed",
        }
    }

    pub fn is_done(self) -> bool {
        matches!(self, Status::Worked | Status::Failed)
    }
}

/// Where a job's result blob lives and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultInfo {
    /// The blob's name in the backend's result store (one per attempt, so a stale attempt can
    /// never overwrite the result of the attempt that owns the job).
    pub key: String,
    pub bytes: u64,
    /// Items in it: events for search and export, groups for count.
    pub items: u64,
}

/// A job's record, as stored by the backend (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub callback: String,
    pub kind: Kind,
    pub data: Value,
    pub status: Status,
    pub accepted_by: String,
    /// The node running or that last ran the job.
    pub worker: Option<String>,
    /// Which run of that node's process: tells a live holder from a dead one.
    pub holder: Option<String>,
    pub attempts: u32,
    pub max_attempts: u32,
    /// The last attempt's error (kept while a retry is pending).
    pub error: Option<String>,
    /// Items processed so far by the running attempt.
    pub progress: u64,
    pub submitted_us: i64,
    pub started_us: Option<i64>,
    pub finished_us: Option<i64>,
    pub updated_us: i64,
    /// While working: the holder must renew before this, or another worker may take the job.
    pub lease_until_us: Option<i64>,
    /// While pending after a failed attempt: not to be tried before this.
    pub retry_at_us: Option<i64>,
    pub result: Option<ResultInfo>,
}

/// A record with the revision a compare-and-swap must name.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub record: JobRecord,
    pub revision: u64,
}

/// What happened to a create.
#[derive(Debug)]
pub enum Created {
    New(u64),
    /// A live record already has this callback.
    Exists(Box<Versioned>),
}

#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    /// The request is not a job we can run; nothing was recorded.
    #[error("{0}")]
    Invalid(String),
    #[error("no job has callback {0} (it never existed or its TTL has passed)")]
    NotFound(String),
    /// The job exists but has no result to give (yet).
    #[error("{0}")]
    NotWorked(String),
    /// Too many jobs are queued; try again later.
    #[error("{0}")]
    Full(String),
    /// The queue, record or result store cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// The backend's configuration conflicts with this node's.
    #[error("{0}")]
    Config(String),
    /// A result is larger than a job may keep, or the results kept fill their limit
    /// (`--work-max-result-bytes`, `--work-max-results-bytes`); nothing of it is kept.
    #[error("{0}")]
    ResultLimit(String),
}

/// An `AsyncRead` that fails once more than `allowed` bytes came through, so a result store
/// never takes more than its limits; [`Capped::exceeded`] tells that failure from others.
pub struct Capped<'a> {
    inner: &'a mut (dyn tokio::io::AsyncRead + Send + Unpin),
    left: u64,
    exceeded: bool,
}

impl<'a> Capped<'a> {
    pub fn new(inner: &'a mut (dyn tokio::io::AsyncRead + Send + Unpin), allowed: u64) -> Self {
        Capped {
            inner,
            left: allowed,
            exceeded: false,
        }
    }

    pub fn exceeded(&self) -> bool {
        self.exceeded
    }
}

impl tokio::io::AsyncRead for Capped<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut *self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &polled {
            let read = (buf.filled().len() - before) as u64;
            if read > self.left {
                self.exceeded = true;
                return std::task::Poll::Ready(Err(std::io::Error::other(
                    "the result passed its size limit",
                )));
            }
            self.left -= read;
        }
        polled
    }
}

/// The refusal of a result past `allowed` bytes: the job's own limit, or what the result
/// store had room for.
pub fn result_limit(max_result_bytes: u64, used: u64, max_results_bytes: u64) -> WorkError {
    let room = max_results_bytes.saturating_sub(used);
    WorkError::ResultLimit(if room < max_result_bytes {
        format!(
            "the results kept fill the result store: {used} bytes of its {max_results_bytes}-byte \
             limit (--work-max-results-bytes) are held, and this result needed more than the \
             {room} left; results go after --work-ttl"
        )
    } else {
        format!(
            "the result is larger than the {max_result_bytes} bytes a job may keep \
             (--work-max-result-bytes); narrow the job's filters"
        )
    })
}

/// A blob being read back: a result, streamed.
pub type ResultReader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// A job taken from the queue by one worker. Until it is acknowledged or handed back, the
/// queue gives it to no one else for the lease; [`Delivery::in_progress`] extends that.
#[async_trait]
pub trait Delivery: Send {
    fn callback(&self) -> &str;
    async fn in_progress(&self) -> Result<(), WorkError>;
    /// Done with it (worked, failed for good, or no longer exists): remove it from the queue.
    async fn ack(self: Box<Self>) -> Result<(), WorkError>;
    /// Give it back, to be delivered again after `delay`.
    async fn retry_after(self: Box<Self>, delay: Duration) -> Result<(), WorkError>;
}

/// The work port: records, queue and results. See the module docs for what callers rely on.
#[async_trait]
pub trait WorkBackend: Send + Sync + 'static {
    /// Stores `record` under its callback unless a live record has it already.
    async fn create(&self, record: &JobRecord) -> Result<Created, WorkError>;
    /// The live record of `callback`.
    async fn get(&self, callback: &str) -> Result<Option<Versioned>, WorkError>;
    /// Replaces the record if its revision is still `revision`; `None` when it changed (or
    /// expired) meanwhile. A replace starts the record's TTL again.
    async fn replace(&self, record: &JobRecord, revision: u64) -> Result<Option<u64>, WorkError>;
    /// Deletes the record if its revision is still `revision` (else leaves it be).
    async fn remove(&self, callback: &str, revision: u64) -> Result<(), WorkError>;
    /// Puts the job on the queue.
    async fn enqueue(&self, callback: &str) -> Result<(), WorkError>;
    /// The next job due, waiting up to `wait` for one.
    async fn next(&self, wait: Duration) -> Result<Option<Box<dyn Delivery>>, WorkError>;
    /// Stores a result blob read to its end from `data`; returns its size. A blob past
    /// `max_bytes`, or past the room the backend's total limit leaves, is refused whole with
    /// [`WorkError::ResultLimit`].
    async fn put_result(
        &self,
        key: &str,
        data: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
        max_bytes: u64,
    ) -> Result<u64, WorkError>;
    async fn open_result(&self, key: &str) -> Result<Option<ResultReader>, WorkError>;
    async fn delete_result(&self, key: &str) -> Result<(), WorkError>;
    /// How long a record lives after its last change.
    fn ttl(&self) -> Duration;
    /// True when one process alone uses the backend (embedded): a holder that is not this
    /// process is dead.
    fn exclusive(&self) -> bool;
}

/// Settings of the work capability (`--work-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkSettings {
    /// Jobs one node runs at once; 0 makes a node that accepts jobs but runs none.
    pub concurrency: usize,
    /// Jobs that may wait in the queue (per cluster, or node); past it, submissions get 503.
    pub max_queued: usize,
    pub ttl: Duration,
    /// How long a worker may go without renewing before its job is given to another.
    pub lease: Duration,
    /// Attempts (first run included) before a job fails for good.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles per attempt, at most [`MAX_RETRY_BACKOFF`].
    pub retry_backoff: Duration,
    /// Bytes one job's result may hold.
    pub max_result_bytes: u64,
    /// Bytes the results kept may hold together (per cluster, or node).
    pub max_results_bytes: u64,
}

pub const DEFAULT_WORK_CONCURRENCY: usize = 2;
pub const DEFAULT_WORK_MAX_QUEUED: usize = 100_000;
pub const DEFAULT_WORK_TTL: Duration = Duration::from_secs(600);
pub const DEFAULT_WORK_LEASE: Duration = Duration::from_secs(30);
pub const DEFAULT_WORK_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_WORK_RETRY_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);
pub const DEFAULT_WORK_MAX_RESULT_BYTES: u64 = 1 << 30;
pub const DEFAULT_WORK_MAX_RESULTS_BYTES: u64 = 4 << 30;

impl Default for WorkSettings {
    fn default() -> Self {
        WorkSettings {
            concurrency: DEFAULT_WORK_CONCURRENCY,
            max_queued: DEFAULT_WORK_MAX_QUEUED,
            ttl: DEFAULT_WORK_TTL,
            lease: DEFAULT_WORK_LEASE,
            max_attempts: DEFAULT_WORK_MAX_ATTEMPTS,
            retry_backoff: DEFAULT_WORK_RETRY_BACKOFF,
            max_result_bytes: DEFAULT_WORK_MAX_RESULT_BYTES,
            max_results_bytes: DEFAULT_WORK_MAX_RESULTS_BYTES,
        }
    }
}

impl WorkSettings {
    /// The wait before attempt `attempts + 1`, after `attempts` failed ones.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(20);
        self.retry_backoff
            .saturating_mul(1 << doublings)
            .min(MAX_RETRY_BACKOFF)
    }
}

pub(crate) fn us(duration: Duration) -> i64 {
    duration.as_micros().min(i64::MAX as u128) as i64
}

/// What the API answers for a submission.
#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    pub accepted_by: String,
    pub callback: String,
    pub data: Value,
    pub status: Status,
}

/// A record as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub callback: String,
    pub kind: Kind,
    pub data: Value,
    pub status: Status,
    pub accepted_by: String,
    pub worker: Option<String>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub error: Option<String>,
    pub progress: u64,
    pub submitted_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: String,
    /// Time from submission to the end, or so far.
    pub elapsed_ms: f64,
    pub retry_at: Option<String>,
    pub result_bytes: Option<u64>,
    pub result_items: Option<u64>,
    /// When the record goes, unless it changes again.
    pub expires_at: String,
}

impl StatusView {
    fn new(record: JobRecord, ttl: Duration) -> StatusView {
        let end = record.finished_us.unwrap_or_else(now_us);
        StatusView {
            elapsed_ms: (end - record.submitted_us).max(0) as f64 / 1000.0,
            expires_at: format_us(record.updated_us.saturating_add(us(ttl))),
            submitted_at: format_us(record.submitted_us),
            started_at: record.started_us.map(format_us),
            finished_at: record.finished_us.map(format_us),
            updated_at: format_us(record.updated_us),
            retry_at: record.retry_at_us.map(format_us),
            result_bytes: record.result.as_ref().map(|r| r.bytes),
            result_items: record.result.as_ref().map(|r| r.items),
            callback: record.callback,
            kind: record.kind,
            data: record.data,
            status: record.status,
            accepted_by: record.accepted_by,
            worker: record.worker,
            attempts: record.attempts,
            max_attempts: record.max_attempts,
            error: record.error,
            progress: record.progress,
        }
    }
}

/// A result ready to stream.
pub struct ResultBlob {
    pub kind: Kind,
    pub bytes: u64,
    pub reader: ResultReader,
}

/// The API's side of work: submit, status, result.
pub struct Work {
    backend: std::sync::Arc<dyn WorkBackend>,
    node: String,
    settings: WorkSettings,
}

impl Work {
    pub fn new(
        backend: std::sync::Arc<dyn WorkBackend>,
        node: &str,
        settings: WorkSettings,
    ) -> Work {
        Work {
            backend,
            node: node.to_owned(),
            settings,
        }
    }

    /// Records and queues the job, or answers the live record of identical work. A failed
    /// record is started over; an accepted one that never reached the queue (its node died in
    /// between) is queued again.
    pub async fn submit(&self, submission: Submission) -> Result<Accepted, WorkError> {
        let now = now_us();
        let fresh = JobRecord {
            callback: submission.callback.clone(),
            kind: submission.job.kind(),
            data: submission.data.clone(),
            status: Status::Accepted,
            accepted_by: self.node.clone(),
            worker: None,
            holder: None,
            attempts: 0,
            max_attempts: self.settings.max_attempts,
            error: None,
            progress: 0,
            submitted_us: now,
            started_us: None,
            finished_us: None,
            updated_us: now,
            lease_until_us: None,
            retry_at_us: None,
            result: None,
        };
        for _ in 0..8 {
            match self.backend.create(&fresh).await? {
                Created::New(revision) => return self.queue(fresh, revision).await,
                Created::Exists(existing) => {
                    let stale_accept = existing.record.status == Status::Accepted
                        && now - existing.record.updated_us > us(self.settings.lease);
                    if existing.record.status == Status::Failed || stale_accept {
                        match self.backend.replace(&fresh, existing.revision).await? {
                            Some(revision) => return self.queue(fresh, revision).await,
                            None => continue,
                        }
                    }
                    let record = existing.record;
                    return Ok(Accepted {
                        accepted_by: record.accepted_by,
                        callback: record.callback,
                        data: record.data,
                        status: record.status,
                    });
                }
            }
        }
        Err(WorkError::Unavailable(
            "the job's record kept changing while it was submitted; try again".into(),
        ))
    }

    async fn queue(&self, record: JobRecord, revision: u64) -> Result<Accepted, WorkError> {
        if let Err(error) = self.backend.enqueue(&record.callback).await {
            // The submission is refused (503): it leaves nothing behind. Should the removal
            // fail too, a resubmission starts the stale `accepted` record over after a lease.
            if let Err(removal) = self.backend.remove(&record.callback, revision).await {
                tracing::warn!(callback = %record.callback, error = %removal, "Could not remove the record of a job that could not be queued.");
            }
            return Err(error);
        }
        // Best effort: a worker may already have moved it on, which wins.
        let pending = JobRecord {
            status: Status::Pending,
            updated_us: now_us(),
            ..record.clone()
        };
        let _ = self.backend.replace(&pending, revision).await;
        Ok(Accepted {
            accepted_by: record.accepted_by,
            callback: record.callback,
            data: record.data,
            status: Status::Accepted,
        })
    }

    pub async fn status(&self, callback: &str) -> Result<StatusView, WorkError> {
        let callback = submission::check_callback(callback)?;
        match self.backend.get(&callback).await? {
            Some(versioned) => Ok(StatusView::new(versioned.record, self.backend.ttl())),
            None => Err(WorkError::NotFound(callback)),
        }
    }

    pub async fn result(&self, callback: &str) -> Result<ResultBlob, WorkError> {
        let callback = submission::check_callback(callback)?;
        let Some(Versioned { record, .. }) = self.backend.get(&callback).await? else {
            return Err(WorkError::NotFound(callback));
        };
        let info = match (record.status, record.result) {
            (Status::Worked, Some(info)) => info,
            (Status::Failed, _) => {
                return Err(WorkError::NotWorked(format!(
                    "job {callback} failed after {} attempt(s): {}",
                    record.attempts,
                    record.error.unwrap_or_default()
                )));
            }
            (status, _) => {
                return Err(WorkError::NotWorked(format!(
                    "job {callback} is {}: no result yet",
                    status.as_str()
                )));
            }
        };
        match self.backend.open_result(&info.key).await? {
            Some(reader) => Ok(ResultBlob {
                kind: record.kind,
                bytes: info.bytes,
                reader,
            }),
            None => Err(WorkError::NotFound(callback)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let settings = WorkSettings {
            retry_backoff: Duration::from_millis(500),
            ..WorkSettings::default()
        };
        assert_eq!(settings.backoff(1), Duration::from_millis(500));
        assert_eq!(settings.backoff(2), Duration::from_secs(1));
        assert_eq!(settings.backoff(4), Duration::from_secs(4));
        assert_eq!(settings.backoff(40), MAX_RETRY_BACKOFF);
    }
}
