//! The workers every node runs: take a job from the queue, claim its record, run it while
//! renewing the lease, and record the outcome.
//!
//! [`Workers::run_once`] is one step (one delivery, or none within the wait), so tests can
//! drive a worker by hand; [`Workers::start`] runs `concurrency` loops of it.

use super::run::{self, JobError};
use super::submission::Job;
use super::{Delivery, JobRecord, Status, Versioned, WorkBackend, WorkError, WorkSettings, us};
use crate::event::now_us;
use crate::store::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long one `next` waits for a job before the loop checks for shutdown.
const POLL: Duration = Duration::from_secs(1);
/// Wait after the backend could not be reached.
const UNAVAILABLE_BACKOFF: Duration = Duration::from_secs(1);

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was due.
    Idle,
    Worked(String),
    /// The attempt failed and will be retried.
    Retrying(String),
    Failed(String),
    /// Another worker holds the job, or it is not due yet: handed back.
    Deferred(String),
    /// The record is gone, done already, or was taken over mid-run: nothing to do.
    Skipped(String),
}

#[derive(Clone)]
pub struct Workers {
    backend: Arc<dyn WorkBackend>,
    store: Arc<dyn Store>,
    node: String,
    /// This process's identity as a lease holder.
    holder: String,
    settings: WorkSettings,
    /// Turns true when the node stops (see [`Workers::start`]).
    stop: watch::Receiver<bool>,
}

impl Workers {
    pub fn new(
        backend: Arc<dyn WorkBackend>,
        store: Arc<dyn Store>,
        node: &str,
        settings: WorkSettings,
    ) -> Workers {
        Workers {
            backend,
            store,
            node: node.to_owned(),
            holder: uuid::Uuid::now_v7().to_string(),
            settings,
            // Never stops until `start` hands in the node's signal.
            stop: watch::channel(false).1,
        }
    }

    /// Starts `concurrency` worker loops; they stop when `stop` turns true. A job in progress is
    /// handed back to the queue at once (pending, the cut attempt not counted), so another
    /// node's worker takes it without waiting for the lease.
    pub fn start(mut self, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        self.stop = stop;
        (0..self.settings.concurrency)
            .map(|_| {
                let workers = self.clone();
                tokio::spawn(async move {
                    let mut stop = workers.stop.clone();
                    while !*stop.borrow() {
                        if let Err(error) = workers.run_once(POLL).await {
                            tracing::warn!(%error, "A worker cannot reach the work queue; retrying.");
                            tokio::select! {
                                _ = tokio::time::sleep(UNAVAILABLE_BACKOFF) => {}
                                _ = stopping(&mut stop) => {}
                            }
                        }
                    }
                })
            })
            .collect()
    }

    /// Takes the next due job (waiting up to `wait`) and carries it as far as it goes.
    pub async fn run_once(&self, wait: Duration) -> Result<Outcome, WorkError> {
        let mut stop = self.stop.clone();
        let next = tokio::select! {
            next = self.backend.next(wait) => next?,
            _ = stopping(&mut stop) => None,
        };
        let Some(delivery) = next else {
            return Ok(Outcome::Idle);
        };
        let callback = delivery.callback().to_owned();
        let outcome = self.carry(delivery).await;
        if let Ok(outcome) = &outcome {
            tracing::debug!(callback, ?outcome, "Work step.");
        }
        outcome
    }

    async fn carry(&self, delivery: Box<dyn Delivery>) -> Result<Outcome, WorkError> {
        let callback = delivery.callback().to_owned();
        // A few rounds: the submitting node may move the record from accepted to pending
        // between our read and our claim.
        for _ in 0..4 {
            let Some(Versioned { record, revision }) = self.backend.get(&callback).await? else {
                delivery.ack().await?;
                return Ok(Outcome::Skipped(callback));
            };
            let now = now_us();
            if record.status.is_done() {
                delivery.ack().await?;
                return Ok(Outcome::Skipped(callback));
            }
            if record.status == Status::Working && self.held_by_another_live(&record, now) {
                let left = record.lease_until_us.unwrap_or(now) - now;
                delivery.retry_after(micros(left) + POLL).await?;
                return Ok(Outcome::Deferred(callback));
            }
            if let Some(retry_at) = record.retry_at_us.filter(|at| *at > now)
                && record.status == Status::Pending
            {
                delivery.retry_after(micros(retry_at - now)).await?;
                return Ok(Outcome::Deferred(callback));
            }
            if record.attempts >= record.max_attempts {
                // Its last holder died mid-run (or the limit was lowered): give up.
                let error = format!(
                    "gave up after {} attempt(s); the last: {}",
                    record.attempts,
                    record
                        .error
                        .clone()
                        .unwrap_or_else(|| "its worker stopped before finishing".into())
                );
                let failed = finished(record, Status::Failed, Some(error), None);
                if self.backend.replace(&failed, revision).await?.is_none() {
                    continue;
                }
                delivery.ack().await?;
                return Ok(Outcome::Failed(callback));
            }
            let job = match Job::parse(record.kind, &record.data) {
                Ok(job) => job,
                Err(error) => {
                    let failed = finished(record, Status::Failed, Some(error.to_string()), None);
                    if self.backend.replace(&failed, revision).await?.is_none() {
                        continue;
                    }
                    delivery.ack().await?;
                    return Ok(Outcome::Failed(callback));
                }
            };
            let claimed = JobRecord {
                status: Status::Working,
                worker: Some(self.node.clone()),
                holder: Some(self.holder.clone()),
                attempts: record.attempts + 1,
                progress: 0,
                started_us: Some(now),
                updated_us: now,
                lease_until_us: Some(now + us(self.settings.lease)),
                retry_at_us: None,
                ..record
            };
            let Some(revision) = self.backend.replace(&claimed, revision).await? else {
                continue;
            };
            return self.work(delivery, job, claimed, revision).await;
        }
        delivery.retry_after(POLL).await?;
        Ok(Outcome::Deferred(callback))
    }

    /// True when another process holds a lease that has not run out.
    fn held_by_another_live(&self, record: &JobRecord, now: i64) -> bool {
        let mine = record.holder.as_deref() == Some(self.holder.as_str());
        if self.backend.exclusive() && !mine {
            // Only this process uses the backend: the holder was an earlier run, now dead.
            return false;
        }
        record.lease_until_us.is_some_and(|until| until > now)
    }

    /// Runs a claimed job, renewing the lease, and records how it ended.
    async fn work(
        &self,
        delivery: Box<dyn Delivery>,
        job: Job,
        mut record: JobRecord,
        mut revision: u64,
    ) -> Result<Outcome, WorkError> {
        let callback = record.callback.clone();
        let key = format!("{}.{}", record.callback, record.attempts);
        let progress = AtomicU64::new(0);
        // Renewals also restart the record's TTL: a TTL shorter than the lease must not let the
        // record of a running job expire between two of them.
        let renew_every = self.settings.lease.min(self.backend.ttl()) / 3;
        let result = {
            let running = run::run(
                &job,
                self.store.as_ref(),
                self.backend.as_ref(),
                &key,
                &progress,
                self.settings.max_result_bytes,
            );
            tokio::pin!(running);
            let mut stop = self.stop.clone();
            loop {
                tokio::select! {
                    result = &mut running => break result,
                    _ = stopping(&mut stop) => {
                        // This node is stopping: hand the job back now rather than make it
                        // wait out the lease. The cut attempt does not count against the job.
                        let handed_back = JobRecord {
                            status: Status::Pending,
                            attempts: record.attempts.saturating_sub(1),
                            progress: 0,
                            updated_us: now_us(),
                            lease_until_us: None,
                            ..record.clone()
                        };
                        let _ = self.backend.replace(&handed_back, revision).await;
                        let _ = self.backend.delete_result(&key).await;
                        let _ = delivery.retry_after(Duration::ZERO).await;
                        tracing::info!(callback, "Stopping: handed the job back to the queue.");
                        return Ok(Outcome::Deferred(callback));
                    }
                    _ = tokio::time::sleep(renew_every) => {
                        let now = now_us();
                        let renewed = JobRecord {
                            progress: progress.load(Ordering::Relaxed),
                            updated_us: now,
                            lease_until_us: Some(now + us(self.settings.lease)),
                            ..record.clone()
                        };
                        // A renewal that cannot reach the backend is tried again at the next
                        // tick; the lease has two more ticks to run.
                        match self.backend.replace(&renewed, revision).await {
                            Ok(Some(next)) => {
                                record = renewed;
                                revision = next;
                                let _ = delivery.in_progress().await;
                            }
                            Ok(None) => {
                                tracing::warn!(callback, "Another worker took over the job; abandoning this attempt.");
                                let _ = self.backend.delete_result(&key).await;
                                return Ok(Outcome::Skipped(callback));
                            }
                            Err(error) => tracing::warn!(callback, %error, "Cannot renew the job's lease."),
                        }
                    }
                }
            }
        };
        record.progress = progress.load(Ordering::Relaxed);
        let (next, outcome, retry) = match result {
            Ok(info) => (
                finished(record, Status::Worked, None, Some(info)),
                Outcome::Worked(callback.clone()),
                None,
            ),
            Err(JobError { message, transient })
                if transient && record.attempts < record.max_attempts =>
            {
                let delay = self.settings.backoff(record.attempts);
                let now = now_us();
                let pending = JobRecord {
                    status: Status::Pending,
                    error: Some(message),
                    updated_us: now,
                    lease_until_us: None,
                    retry_at_us: Some(now + us(delay)),
                    ..record
                };
                (pending, Outcome::Retrying(callback.clone()), Some(delay))
            }
            Err(JobError { message, transient }) => {
                let error = if transient {
                    format!("gave up after {} attempt(s): {message}", record.attempts)
                } else {
                    message
                };
                (
                    finished(record, Status::Failed, Some(error), None),
                    Outcome::Failed(callback.clone()),
                    None,
                )
            }
        };
        if self.backend.replace(&next, revision).await?.is_none() {
            // Taken over at the last moment: the other attempt owns the job now.
            let _ = self.backend.delete_result(&key).await;
            return Ok(Outcome::Skipped(callback));
        }
        match retry {
            Some(delay) => delivery.retry_after(delay).await?,
            None => delivery.ack().await?,
        }
        Ok(outcome)
    }
}

fn finished(
    record: JobRecord,
    status: Status,
    error: Option<String>,
    result: Option<super::ResultInfo>,
) -> JobRecord {
    let now = now_us();
    JobRecord {
        status,
        error,
        result,
        finished_us: Some(now),
        updated_us: now,
        lease_until_us: None,
        retry_at_us: None,
        ..record
    }
}

/// Resolves when `stop` turns true; never, if its sender is gone without saying so.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(us.max(0) as u64)
}
