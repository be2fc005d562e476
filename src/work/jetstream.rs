//! The cluster shape's work backend, all of it JetStream:
//! - records in the KV bucket `<stream>_work` (history 1, `max_age` = the TTL, so a record is
//!   gone the TTL after its last change); `create` and revision-checked `update` are the
//!   compare-and-swap the workers' claims rely on;
//! - the queue is the work-queue stream `<stream>_WORK` (file storage, at most
//!   `--work-max-queued` messages, discard new) with one durable pull consumer,
//!   `<stream>_workers`, shared by every node's workers: `ack_wait` is the lease, so a job whose
//!   worker died is delivered again once the lease has run out, and in-progress acks renew it;
//! - results in the object store `<stream>_work_results`, kept a lease longer than the TTL so
//!   a result outlives its record.

use super::{
    Capped, Created, Delivery, JobRecord, ResultReader, Versioned, WorkBackend, WorkError,
    result_limit,
};
use crate::nats::{nats_safe_name, open_kv_with_ttl, publish_refused_as_full};
use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, PullConsumer, pull},
    kv, object_store,
    stream::{DiscardPolicy, RetentionPolicy, StorageType},
};
use async_trait::async_trait;
use futures_util::StreamExt;
use std::time::Duration;

pub struct JetStreamWork {
    jetstream: jetstream::Context,
    records: kv::Store,
    results: object_store::ObjectStore,
    consumer: PullConsumer,
    subject: String,
    ttl: Duration,
    /// The queue stream's message limit (the stream's own when it existed already).
    max_queued: i64,
    /// The stream behind the result store, whose size is the bytes the results hold.
    results_stream: String,
    max_results_bytes: u64,
    /// Where a result is written whole, within its limits, before it is put in the result
    /// store: a put cut short would leave its chunks in the stream until they expire.
    staging: std::path::PathBuf,
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> WorkError {
    WorkError::Unavailable(format!("{what}: {error}"))
}

impl JetStreamWork {
    /// Opens the bucket, stream, consumer and object store named after `stream` (the ingest
    /// stream's name), creating what is missing. An existing bucket's TTL and an existing
    /// stream's `max_queued` win over this node's (with a warning), so every node behaves alike.
    pub async fn open(
        jetstream: jetstream::Context,
        stream: &str,
        ttl: Duration,
        lease: Duration,
        max_queued: usize,
        max_results_bytes: u64,
        staging: &std::path::Path,
    ) -> Result<JetStreamWork, WorkError> {
        let config_error = |what: &str, e: &dyn std::fmt::Display| {
            WorkError::Config(format!("cannot open the work {what}: {e}"))
        };
        let bucket = format!("{stream}_work");
        let (records, ttl) = open_kv_with_ttl(&jetstream, &bucket, "logmesh work records", ttl)
            .await
            .map_err(|e| config_error("bucket", &e))?;
        let results_bucket = format!("{stream}_work_results");
        let results = match jetstream.get_object_store(&results_bucket).await {
            Ok(results) => results,
            Err(_) => {
                let created = jetstream
                    .create_object_store(object_store::Config {
                        bucket: results_bucket.clone(),
                        description: Some("logmesh work results".to_owned()),
                        max_age: ttl + lease,
                        // No `max_bytes`: JetStream would reserve that much of the server's
                        // storage for the bucket up front. Puts check the room themselves.
                        storage: StorageType::File,
                        ..Default::default()
                    })
                    .await;
                match created {
                    Ok(results) => results,
                    Err(error) => jetstream
                        .get_object_store(&results_bucket)
                        .await
                        .map_err(|_| config_error("result store", &error))?,
                }
            }
        };
        let subject = format!("logmesh.work.{}", nats_safe_name(stream));
        let mut queue = jetstream
            .get_or_create_stream(jetstream::stream::Config {
                name: format!("{stream}_WORK"),
                description: Some("logmesh work queue".to_owned()),
                subjects: vec![subject.clone()],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                max_messages: max_queued as i64,
                discard: DiscardPolicy::New,
                // A job nobody took within the TTL has no record left to run for.
                max_age: ttl,
                ..Default::default()
            })
            .await
            .map_err(|e| config_error("queue", &e))?;
        let stream_max = queue
            .info()
            .await
            .map_err(|e| config_error("queue", &e))?
            .config
            .max_messages;
        if stream_max != max_queued as i64 {
            tracing::warn!(
                stream = %format!("{stream}_WORK"),
                max_queued = stream_max,
                "The work queue exists with another --work-max-queued than this node's; using \
                 the queue's."
            );
        }
        let consumer_name = format!("{stream}_workers");
        let consumer = queue
            .create_consumer(pull::Config {
                durable_name: Some(consumer_name.clone()),
                description: Some("logmesh workers (all nodes)".to_owned()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: lease,
                max_ack_pending: 10_000,
                ..Default::default()
            })
            .await
            .map_err(|e| config_error("queue consumer", &e))?;
        Ok(JetStreamWork {
            jetstream,
            records,
            results,
            consumer,
            subject,
            ttl,
            max_queued: stream_max,
            results_stream: format!("OBJ_{results_bucket}"),
            max_results_bytes,
            staging: staging.to_owned(),
        })
    }
}

/// Whether a revision-checked KV write failed only because the entry changed meanwhile.
fn wrong_revision(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(server) = cause.downcast_ref::<jetstream::Error>() {
            return server.error_code() == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE;
        }
        source = cause.source();
    }
    false
}

fn decode(entry: kv::Entry) -> Result<Option<Versioned>, WorkError> {
    if entry.operation != kv::Operation::Put {
        return Ok(None);
    }
    let record = serde_json::from_slice(&entry.value)
        .map_err(|e| WorkError::Unavailable(format!("a work record is unreadable: {e}")))?;
    Ok(Some(Versioned {
        record,
        revision: entry.revision,
    }))
}

#[async_trait]
impl WorkBackend for JetStreamWork {
    async fn create(&self, record: &JobRecord) -> Result<Created, WorkError> {
        let value = serde_json::to_vec(record).expect("a record serialises");
        for _ in 0..4 {
            match self
                .records
                .create(&record.callback, value.clone().into())
                .await
            {
                Ok(revision) => return Ok(Created::New(revision)),
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                    // Gone again (expired) between the two calls: create once more.
                    if let Some(existing) = self.get(&record.callback).await? {
                        return Ok(Created::Exists(Box::new(existing)));
                    }
                }
                Err(error) => return Err(unavailable("cannot record the job", error)),
            }
        }
        Err(WorkError::Unavailable(
            "the job's record kept appearing and expiring; try again".into(),
        ))
    }

    async fn get(&self, callback: &str) -> Result<Option<Versioned>, WorkError> {
        match self.records.entry(callback).await {
            Ok(Some(entry)) => decode(entry),
            Ok(None) => Ok(None),
            Err(error) => Err(unavailable("cannot read the job's record", error)),
        }
    }

    async fn replace(&self, record: &JobRecord, revision: u64) -> Result<Option<u64>, WorkError> {
        let value = serde_json::to_vec(record).expect("a record serialises");
        match self
            .records
            .update(&record.callback, value.into(), revision)
            .await
        {
            Ok(revision) => Ok(Some(revision)),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(error) => Err(unavailable("cannot update the job's record", error)),
        }
    }

    async fn remove(&self, callback: &str, revision: u64) -> Result<(), WorkError> {
        match self
            .records
            .delete_expect_revision(callback, Some(revision))
            .await
        {
            Ok(()) => Ok(()),
            // Changed meanwhile: whoever changed it owns it now.
            Err(error) if wrong_revision(&error) => Ok(()),
            Err(error) => Err(unavailable("cannot remove the job's record", error)),
        }
    }

    async fn enqueue(&self, callback: &str) -> Result<(), WorkError> {
        let ack = self
            .jetstream
            .publish(self.subject.clone(), callback.to_owned().into())
            .await
            .map_err(|e| unavailable("cannot queue the job", e))?;
        match ack.await {
            Ok(_) => Ok(()),
            Err(error) if publish_refused_as_full(&error) => Err(WorkError::Full(format!(
                "{} jobs are already queued (--work-max-queued); try again later",
                self.max_queued
            ))),
            Err(error) => Err(unavailable("the work queue did not confirm the job", error)),
        }
    }

    async fn next(&self, wait: Duration) -> Result<Option<Box<dyn Delivery>>, WorkError> {
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| unavailable("cannot fetch from the work queue", e))?;
        match batch.next().await {
            None => Ok(None),
            Some(Err(error)) => Err(unavailable("cannot fetch from the work queue", error)),
            Some(Ok(message)) => {
                let callback = String::from_utf8_lossy(&message.payload).into_owned();
                Ok(Some(Box::new(JetStreamDelivery { message, callback })))
            }
        }
    }

    async fn put_result(
        &self,
        key: &str,
        data: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
        max_bytes: u64,
    ) -> Result<u64, WorkError> {
        let used = self
            .jetstream
            .get_stream(&self.results_stream)
            .await
            .map_err(|e| unavailable("cannot read the result store's size", e))?
            .info()
            .await
            .map_err(|e| unavailable("cannot read the result store's size", e))?
            .state
            .bytes;
        let allowed = max_bytes.min(self.max_results_bytes.saturating_sub(used));
        let staged = self.staging.join(format!("{key}.part"));
        let failed = |e: std::io::Error| unavailable(&format!("{}", staged.display()), e);
        let mut file = tokio::fs::File::create(&staged).await.map_err(failed)?;
        let mut capped = Capped::new(data, allowed);
        let copied = tokio::io::copy(&mut capped, &mut file).await;
        let exceeded = capped.exceeded();
        drop(file);
        let put = match copied {
            _ if exceeded => Err(result_limit(max_bytes, used, self.max_results_bytes)),
            Err(error) => Err(failed(error)),
            Ok(_) => match tokio::fs::File::open(&staged).await {
                Ok(mut file) => self
                    .results
                    .put(key, &mut file)
                    .await
                    .map(|info| info.size as u64)
                    .map_err(|e| unavailable("cannot store the result", e)),
                Err(error) => Err(failed(error)),
            },
        };
        let _ = tokio::fs::remove_file(&staged).await;
        put
    }

    async fn open_result(&self, key: &str) -> Result<Option<ResultReader>, WorkError> {
        match self.results.get(key).await {
            Ok(object) => Ok(Some(Box::new(object))),
            Err(error) if error.kind() == object_store::GetErrorKind::NotFound => Ok(None),
            Err(error) => Err(unavailable("cannot read the result", error)),
        }
    }

    async fn delete_result(&self, key: &str) -> Result<(), WorkError> {
        match self.results.delete(key).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == object_store::DeleteErrorKind::NotFound => Ok(()),
            Err(error) => Err(unavailable("cannot delete the result", error)),
        }
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }

    fn exclusive(&self) -> bool {
        false
    }
}

struct JetStreamDelivery {
    message: jetstream::Message,
    callback: String,
}

#[async_trait]
impl Delivery for JetStreamDelivery {
    fn callback(&self) -> &str {
        &self.callback
    }

    async fn in_progress(&self) -> Result<(), WorkError> {
        self.message
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| unavailable("cannot renew the job on the queue", e))
    }

    async fn ack(self: Box<Self>) -> Result<(), WorkError> {
        self.message
            .ack()
            .await
            .map_err(|e| unavailable("cannot acknowledge the job", e))
    }

    async fn retry_after(self: Box<Self>, delay: Duration) -> Result<(), WorkError> {
        self.message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| unavailable("cannot hand the job back", e))
    }
}
