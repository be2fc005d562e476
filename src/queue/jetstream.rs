//! JetStream adapter of the ingest queue (the cluster shape): every node publishes the events
//! it accepts to one stream; every node's store writer pulls from one shared durable consumer
//! (competing consumers), and every node's event log writer from a durable consumer of its own.
//!
//! Invariants:
//! - [`IngestQueue::append`] returns only after JetStream acknowledged every event of the call
//!   (the stream stores on file).
//! - A call's events travel in as few messages as the server's `max_payload` allows (NDJSON,
//!   one event per line): one message per event would cap the cluster near JetStream's message
//!   rate, and every node's event log consumer reads every message. A message's `Nats-Msg-Id`
//!   derives from its event ids (the id itself for a single event, a UUIDv5 of the ids
//!   otherwise), so a one-message request sent again unchanged within the stream's duplicate
//!   window is dropped by JetStream; the store drops re-sent ids at any time.
//! - A request is stored whole or not at all: one that needs several messages is published as
//!   one JetStream atomic batch (NATS 2.12+, the stream's `allow_atomic`), so a stream that
//!   fills half-way through stores none of it and the client's retry leaves no duplicates.
//!   Where atomic batches are not available, such a request is refused as too large (413).
//! - An event's `seq` is `stream sequence << 20 | index in its message`: strictly increasing
//!   along the stream, so the event log file can resume in the middle of a message.
//! - The stream keeps a message until every consumer acknowledged it (interest retention) and
//!   refuses new ones past its limits (discard new): a slow database fills the stream and ingest
//!   answers 503, instead of anything growing without bound.
//! - A consumer acknowledges messages only through [`QueueConsumer::ack`], which the pipeline
//!   calls after its sink committed; a writer that dies leaves its messages to be redelivered
//!   (after `ack_wait`) to whichever node fetches next.
//! - The event log consumer skips stream sequences its file already holds (the file is its own
//!   cursor), so a replay after a crash never writes a line twice.
//! - A restarted node's event log first reads, straight from the stream, the messages its dead
//!   predecessor had fetched but not acknowledged ("orphans"), before anything newer. JetStream
//!   would redeliver them only after `ack_wait`, after newer messages: by then the file's last
//!   `seq` is past them and they would be skipped as already written, leaving a hole.

use super::{Batch, ConsumerRole, IngestQueue, QueueConsumer, QueueDepth, QueueError, QueuedEvent};
use crate::event::Event;
use crate::nats::{
    self, REQUEST_TIMEOUT, means_full, nats_safe_name, publish_refused_as_full,
    server_version_at_least,
};
use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    context::{GetStreamErrorKind, PublishErrorKind},
    message::{Acker, PublishMessage},
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often the cached stream depth is refreshed.
const DEPTH_REFRESH: Duration = Duration::from_secs(1);
/// Bits of an event's `seq` that hold its index within its message.
const INDEX_BITS: u32 = 20;
/// Room left in a message for headers and protocol framing.
const MESSAGE_HEADROOM: usize = 4 * 1024;
/// Namespace of the UUIDv5 message ids of multi-event messages.
const BATCH_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6c6f_676d_6573_6800_0000_0000_0000_0001);
/// What a fetch assumes an event weighs before it has seen any.
const ASSUMED_EVENT_BYTES: usize = 512;
/// The most messages a JetStream atomic batch may hold (the server's default `max_msgs`).
const MAX_ATOMIC_BATCH: usize = 1000;
/// The first NATS server release with atomic batch publishing (ADR-50).
const ATOMIC_BATCH_SERVER: (u64, u64) = (2, 12);

/// Where the events travel in the cluster shape; see `logmesh serve --help`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamSettings {
    pub url: String,
    /// The stream's name, created if missing and checked if present.
    pub stream: String,
    /// The subject events are published on (the stream's only subject when it is created).
    pub subject: String,
    /// Stream limits: events and bytes not yet acknowledged by every consumer.
    pub max_events: usize,
    pub max_bytes: usize,
    /// The shared store consumer's bound on messages fetched but not yet acknowledged.
    pub max_ack_pending: usize,
    /// How long a fetched message may stay unacknowledged before it is redelivered elsewhere.
    pub ack_wait: Duration,
    /// How long a node may stay away and still find its event log consumer (and so catch up).
    pub replica_max_offline: Duration,
    /// Names this node's event log consumer.
    pub node_name: String,
}

impl JetStreamSettings {
    /// The name of the consumer every node's store writer shares.
    pub fn store_consumer(&self) -> String {
        format!("{}_store", self.stream.to_lowercase())
    }

    /// The name of this node's own event log consumer.
    pub fn event_log_consumer(&self) -> String {
        format!(
            "{}_eventlog_{}",
            self.stream.to_lowercase(),
            nats_safe_name(&self.node_name)
        )
    }
}

pub struct JetStreamQueue {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    settings: JetStreamSettings,
    /// The highest stream sequence the node's event log file already holds.
    event_log_floor: u64,
    depth_events: Arc<AtomicU64>,
    depth_bytes: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
    /// Whether the stream takes atomic batches, so a request may span several messages.
    atomic_batches: bool,
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(format!("{what}: {error}"))
}

impl JetStreamQueue {
    /// Connects, creates the stream if it is missing (or checks it if present) and creates the
    /// shared store consumer, so that no event is published before a consumer keeps it.
    pub async fn connect(
        settings: JetStreamSettings,
        event_log_floor: u64,
    ) -> Result<JetStreamQueue, QueueError> {
        let (client, jetstream) = nats::connect(&settings.url, &settings.node_name)
            .await
            .map_err(QueueError::Config)?;
        let mut queue = JetStreamQueue {
            client,
            jetstream,
            settings,
            event_log_floor,
            depth_events: Arc::default(),
            depth_bytes: Arc::default(),
            closed: Arc::default(),
            atomic_batches: false,
        };
        queue.atomic_batches = queue.ensure_stream().await?;
        if !queue.atomic_batches {
            tracing::warn!(
                server = %queue.client.server_info().version,
                max_request_bytes = queue.message_limit(),
                "This NATS server takes no atomic batches (2.12 and newer do): a request larger \
                 than one message is refused (413)."
            );
        }
        queue.store_consumer().await?;
        queue.refresh_depth().await?;
        queue.spawn_depth_refresher();
        Ok(queue)
    }

    /// The stream as this adapter needs it: on file, kept while any consumer still needs a
    /// message, refusing new messages when full.
    fn wanted_stream(&self) -> stream::Config {
        stream::Config {
            name: self.settings.stream.clone(),
            subjects: vec![self.settings.subject.clone()],
            retention: RetentionPolicy::Interest,
            discard: DiscardPolicy::New,
            storage: StorageType::File,
            max_messages: self.settings.max_events as i64,
            max_bytes: self.settings.max_bytes as i64,
            description: Some("logmesh events".to_owned()),
            allow_atomic_publish: self.server_has_atomic_batches(),
            ..Default::default()
        }
    }

    /// Whether the server is recent enough for atomic batch publishing.
    fn server_has_atomic_batches(&self) -> bool {
        server_version_at_least(&self.client.server_info().version, ATOMIC_BATCH_SERVER)
    }

    /// Creates the stream, or checks the one there; answers whether it takes atomic batches.
    async fn ensure_stream(&self) -> Result<bool, QueueError> {
        let wanted = self.wanted_stream();
        let name = &self.settings.stream;
        match self.jetstream.get_stream(name).await {
            Ok(mut stream) => {
                let info = stream
                    .info()
                    .await
                    .map_err(|e| unavailable("cannot read the stream", e))?;
                check_stream(&info.config, &wanted)?;
                if info.config.allow_atomic_publish || !wanted.allow_atomic_publish {
                    return Ok(info.config.allow_atomic_publish);
                }
                // A stream made by an older release or server: allowing atomic batches changes
                // nothing for the messages it holds.
                let mut config = info.config.clone();
                config.allow_atomic_publish = true;
                match self.jetstream.update_stream(config).await {
                    Ok(_) => Ok(true),
                    Err(error) => {
                        tracing::warn!(
                            stream = %name,
                            %error,
                            "Cannot allow atomic batches on the stream: a request larger than \
                             one NATS message will be refused."
                        );
                        Ok(false)
                    }
                }
            }
            Err(error)
                if matches!(error.kind(), GetStreamErrorKind::JetStream(ref e)
                    if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                let atomic = wanted.allow_atomic_publish;
                self.jetstream.create_stream(wanted).await.map_err(|e| {
                    QueueError::Config(format!("cannot create the stream {name}: {e}"))
                })?;
                tracing::info!(stream = %name, subject = %self.settings.subject, "Created the JetStream stream.");
                Ok(atomic)
            }
            Err(error) => Err(QueueError::Config(format!(
                "cannot look up the stream {name}: {error}"
            ))),
        }
    }

    /// The JetStream context, shared with membership.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    async fn stream(&self) -> Result<stream::Stream<()>, QueueError> {
        self.jetstream
            .get_stream_no_info(&self.settings.stream)
            .await
            .map_err(|e| unavailable("cannot reach the stream", e))
    }

    async fn store_consumer(&self) -> Result<PullConsumer, QueueError> {
        let name = self.settings.store_consumer();
        self.stream()
            .await?
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    description: Some("logmesh store writers (all nodes)".to_owned()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.settings.ack_wait,
                    max_ack_pending: self.settings.max_ack_pending as i64,
                    deliver_policy: DeliverPolicy::All,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| unavailable("cannot open the store consumer", e))
    }

    async fn event_log_consumer(&self) -> Result<PullConsumer, QueueError> {
        let name = self.settings.event_log_consumer();
        // Start at the message holding the file's last event: the rest of it may be missing.
        let deliver_policy = match self.event_log_floor >> INDEX_BITS {
            0 => DeliverPolicy::All,
            start_sequence => DeliverPolicy::ByStartSequence { start_sequence },
        };
        self.stream()
            .await?
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    description: Some(format!(
                        "logmesh event log of node {}",
                        self.settings.node_name
                    )),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.settings.ack_wait,
                    // The server's default (1,000) would cap every fetch below a batch.
                    max_ack_pending: self.settings.max_ack_pending as i64,
                    deliver_policy,
                    inactive_threshold: self.settings.replica_max_offline,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| unavailable("cannot open the event log consumer", e))
    }

    async fn refresh_depth(&self) -> Result<(), QueueError> {
        let stream = self
            .jetstream
            .get_stream(&self.settings.stream)
            .await
            .map_err(|e| unavailable("cannot read the stream", e))?;
        let state = &stream.cached_info().state;
        self.depth_events.store(state.messages, Ordering::Relaxed);
        self.depth_bytes.store(state.bytes, Ordering::Relaxed);
        Ok(())
    }

    fn spawn_depth_refresher(&self) {
        let (jetstream, name) = (self.jetstream.clone(), self.settings.stream.clone());
        let (events, bytes, closed) = (
            self.depth_events.clone(),
            self.depth_bytes.clone(),
            self.closed.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DEPTH_REFRESH);
            while !closed.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Ok(stream) = jetstream.get_stream(&name).await {
                    let state = &stream.cached_info().state;
                    events.store(state.messages, Ordering::Relaxed);
                    bytes.store(state.bytes, Ordering::Relaxed);
                }
            }
        });
    }

    /// The largest payload a message may carry on this server.
    fn message_limit(&self) -> usize {
        self.client
            .server_info()
            .max_payload
            .saturating_sub(MESSAGE_HEADROOM)
            .max(MESSAGE_HEADROOM)
    }

    /// Publishes one request's messages as a JetStream atomic batch (ADR-50): the stream
    /// stores all of them, in order and contiguous, when the last one commits, or none.
    async fn publish_atomically(&self, messages: Vec<(String, Vec<u8>)>) -> Result<(), QueueError> {
        // No `Nats-Msg-Id`: the server refuses a batch holding an id it already has, where a
        // resent request should simply be taken again; the store drops re-sent event ids.
        let batch_id = uuid::Uuid::now_v7().simple().to_string();
        let last = messages.len();
        for (index, (_, payload)) in messages.into_iter().enumerate() {
            let sequence = index + 1;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Batch-Id", batch_id.as_str());
            headers.insert("Nats-Batch-Sequence", sequence.to_string().as_str());
            if sequence == last {
                headers.insert("Nats-Batch-Commit", "1");
            }
            let subject = self.settings.subject.clone();
            if sequence != 1 && sequence != last {
                self.client
                    .publish_with_headers(subject, headers, Bytes::from(payload))
                    .await
                    .map_err(|e| unavailable("publishing to JetStream failed", e))?;
                continue;
            }
            // The first message is answered once the server opened the batch (empty), the
            // last with the batch's publish acknowledgement; either may be an error instead.
            let request = async_nats::Request::new()
                .headers(headers)
                .payload(Bytes::from(payload))
                .timeout(Some(REQUEST_TIMEOUT));
            let reply = self
                .client
                .send_request(subject, request)
                .await
                .map_err(|e| unavailable("publishing to JetStream failed", e))?;
            check_batch_reply(&reply.payload, sequence == last, last, self.depth())?;
        }
        Ok(())
    }

    fn connected(&self) -> Result<(), QueueError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(QueueError::Unavailable(format!(
                "not connected to NATS at {} ({state:?})",
                self.settings.url
            ))),
        }
    }
}

/// Packs events into NDJSON payloads of at most `limit` bytes, in order, each with its message
/// id. An event that alone exceeds `limit` is refused.
fn pack(events: &[Event], limit: usize) -> Result<Vec<(String, Vec<u8>)>, QueueError> {
    let mut messages = Vec::new();
    let mut payload = Vec::new();
    let mut ids: Vec<&str> = Vec::new();
    let finish = |payload: &mut Vec<u8>, ids: &mut Vec<&str>, messages: &mut Vec<_>| {
        let id = match ids.as_slice() {
            [only] => (*only).to_owned(),
            many => format!(
                "logmesh-batch-{}",
                uuid::Uuid::new_v5(&BATCH_ID_NAMESPACE, many.join("\n").as_bytes())
            ),
        };
        messages.push((id, std::mem::take(payload)));
        ids.clear();
    };
    let mut line = Vec::new();
    for event in events {
        line.clear();
        event.write_json(&mut line);
        if line.len() + 1 > limit {
            return Err(QueueError::TooLarge {
                events: 1,
                bytes: line.len(),
                max_events: 1 << INDEX_BITS,
                max_bytes: limit,
            });
        }
        if !payload.is_empty()
            && (payload.len() + line.len() + 1 > limit || ids.len() == 1 << INDEX_BITS)
        {
            finish(&mut payload, &mut ids, &mut messages);
        }
        payload.extend_from_slice(&line);
        payload.push(b'\n');
        ids.push(&event.id);
    }
    if !payload.is_empty() {
        finish(&mut payload, &mut ids, &mut messages);
    }
    Ok(messages)
}

/// Refuses a stream that exists with settings that would break the guarantees.
fn check_stream(actual: &stream::Config, wanted: &stream::Config) -> Result<(), QueueError> {
    let mut problems = Vec::new();
    if actual.storage != StorageType::File {
        problems.push("its storage is memory, not file".to_owned());
    }
    if actual.retention != RetentionPolicy::Interest {
        problems.push(format!(
            "its retention is {:?}, not interest",
            actual.retention
        ));
    }
    if actual.discard != DiscardPolicy::New {
        problems.push("it discards old messages when full, not new ones".to_owned());
    }
    if !actual.subjects.contains(&wanted.subjects[0]) {
        problems.push(format!(
            "its subjects {:?} do not include {}",
            actual.subjects, wanted.subjects[0]
        ));
    }
    if !problems.is_empty() {
        return Err(QueueError::Config(format!(
            "the stream {} exists but {}; delete it or pick another --nats-stream",
            actual.name,
            problems.join(", ")
        )));
    }
    if actual.max_messages != wanted.max_messages || actual.max_bytes != wanted.max_bytes {
        tracing::warn!(
            stream = %actual.name,
            max_events = actual.max_messages,
            max_bytes = actual.max_bytes,
            "The stream exists with other limits than this node's; keeping the stream's."
        );
    }
    Ok(())
}

/// What the server answers to a message of an atomic batch.
#[derive(serde::Deserialize)]
struct BatchReply {
    error: Option<jetstream::Error>,
    /// Set on the commit's acknowledgement: how many messages the batch stored.
    count: Option<usize>,
}

/// Checks the server's answer to the first (`commit` false) or the last message of an atomic
/// batch of `messages`.
fn check_batch_reply(
    payload: &[u8],
    commit: bool,
    messages: usize,
    depth: QueueDepth,
) -> Result<(), QueueError> {
    if payload.is_empty() && !commit {
        return Ok(());
    }
    let reply: BatchReply = serde_json::from_slice(payload).map_err(|e| {
        unavailable(
            "JetStream answered an atomic batch with something unexpected",
            format!("{e}: {}", String::from_utf8_lossy(payload)),
        )
    })?;
    if let Some(error) = reply.error {
        return Err(server_refused(error, depth));
    }
    match (commit, reply.count) {
        (false, _) => Ok(()),
        (true, Some(count)) if count == messages => Ok(()),
        (true, count) => Err(QueueError::Unavailable(format!(
            "JetStream committed an atomic batch of {messages} messages as {count:?}"
        ))),
    }
}

/// Maps an error JetStream answered a publish with to what the client should hear.
fn server_refused(error: jetstream::Error, depth: QueueDepth) -> QueueError {
    if means_full(error.error_code()) {
        return QueueError::Full {
            events: depth.events,
            bytes: depth.bytes,
        };
    }
    unavailable("JetStream refused the events", error)
}

/// Maps a failed publish to what the client should hear.
fn publish_failed(
    error: async_nats::jetstream::context::PublishError,
    depth: QueueDepth,
) -> QueueError {
    if publish_refused_as_full(&error) {
        return QueueError::Full {
            events: depth.events,
            bytes: depth.bytes,
        };
    }
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded => QueueError::Unavailable(format!(
            "an event is larger than the NATS server's max_payload: {error}"
        )),
        _ => unavailable("publishing to JetStream failed", error),
    }
}

#[async_trait]
impl IngestQueue for JetStreamQueue {
    async fn append(&self, events: Vec<Event>) -> Result<(), QueueError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(QueueError::Closed);
        }
        // Fail fast while disconnected rather than after the acknowledgement timeout.
        self.connected()?;
        let messages = pack(&events, self.message_limit())?;
        if messages.len() > 1 {
            let most = if self.atomic_batches {
                MAX_ATOMIC_BATCH
            } else {
                1
            };
            if messages.len() > most {
                let why = if self.atomic_batches {
                    format!("one request may take at most {MAX_ATOMIC_BATCH} (one atomic batch)")
                } else {
                    format!(
                        "this NATS server ({}) takes a request in one message only (atomic \
                         batches need NATS 2.12 or newer)",
                        self.client.server_info().version
                    )
                };
                return Err(QueueError::TooManyMessages {
                    bytes: messages.iter().map(|(_, payload)| payload.len()).sum(),
                    messages: messages.len(),
                    message_bytes: self.message_limit(),
                    why,
                });
            }
            return self.publish_atomically(messages).await;
        }
        let mut acks = Vec::with_capacity(messages.len());
        for (id, payload) in messages {
            let publish = PublishMessage::build()
                .payload(Bytes::from(payload))
                .message_id(id);
            acks.push(
                self.jetstream
                    .send_publish(self.settings.subject.clone(), publish)
                    .await
                    .map_err(|e| publish_failed(e, self.depth()))?,
            );
        }
        // Publishes are pipelined: all are in flight before the first acknowledgement is awaited.
        let results =
            futures_util::future::join_all(acks.into_iter().map(|a| a.into_future())).await;
        for result in results {
            result.map_err(|e| publish_failed(e, self.depth()))?;
        }
        Ok(())
    }

    async fn consumer(&self, role: ConsumerRole) -> Result<Box<dyn QueueConsumer>, QueueError> {
        let (consumer, floor) = match role {
            ConsumerRole::Store => (self.store_consumer().await?, 0),
            ConsumerRole::EventLog => (self.event_log_consumer().await?, self.event_log_floor),
        };
        let orphans = match role {
            // The store is idempotent by id: its orphans may come back late, in any order.
            ConsumerRole::Store => VecDeque::new(),
            ConsumerRole::EventLog => {
                // Nothing was fetched yet by this process: whatever is pending is an orphan.
                let info = consumer
                    .get_info()
                    .await
                    .map_err(|e| unavailable("cannot read the event log consumer", e))?;
                if info.num_ack_pending == 0 {
                    VecDeque::new()
                } else {
                    let first = (info.ack_floor.stream_sequence + 1).max(floor >> INDEX_BITS);
                    (first..=info.delivered.stream_sequence).collect()
                }
            }
        };
        if !orphans.is_empty() {
            tracing::info!(
                messages = orphans.len(),
                "Reading the messages a previous run of this node fetched but did not log."
            );
        }
        Ok(Box::new(JetStreamConsumer {
            consumer,
            stream: self.stream().await?,
            orphans,
            role,
            floor,
            in_flight: HashMap::new(),
            message_limit: self.message_limit(),
            event_bytes: ASSUMED_EVENT_BYTES,
        }))
    }

    async fn health(&self) -> Result<(), QueueError> {
        self.connected()?;
        self.refresh_depth().await
    }

    fn depth(&self) -> QueueDepth {
        QueueDepth {
            events: self.depth_events.load(Ordering::Relaxed) as usize,
            bytes: self.depth_bytes.load(Ordering::Relaxed) as usize,
        }
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        // Acknowledgements are fire-and-forget publishes: send what is buffered before leaving.
        if let Err(error) = self.client.flush().await {
            tracing::debug!(%error, "Could not flush the NATS connection at shutdown.");
        }
    }
}

struct JetStreamConsumer {
    consumer: PullConsumer,
    stream: stream::Stream<()>,
    /// Stream sequences to read straight from the stream before fetching (see the module doc).
    orphans: VecDeque<u64>,
    role: ConsumerRole,
    /// Stream sequences at or below this are already in the event log file: acknowledged
    /// without being delivered again.
    floor: u64,
    /// Fetched messages awaiting [`QueueConsumer::ack`], by stream sequence.
    in_flight: HashMap<u64, Acker>,
    /// The largest message: a fetch must allow at least this many bytes.
    message_limit: usize,
    /// Average encoded size of the events seen so far, to size fetches in bytes.
    event_bytes: usize,
}

#[async_trait]
impl QueueConsumer for JetStreamConsumer {
    async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Batch, QueueError> {
        if !self.orphans.is_empty() {
            return self.read_orphans(max).await;
        }
        // A message holds one event or many: ask for `max` messages but about `max` events'
        // worth of bytes, and never less than one whole message.
        let max_bytes = max
            .saturating_mul(self.event_bytes)
            .max(self.message_limit + MESSAGE_HEADROOM);
        let fetched = if wait.is_zero() {
            self.consumer
                .fetch()
                .max_messages(max)
                .max_bytes(max_bytes)
                .messages()
                .await
        } else {
            self.consumer
                .batch()
                .max_messages(max)
                .max_bytes(max_bytes)
                .expires(wait)
                .messages()
                .await
        };
        let mut messages = fetched.map_err(|e| unavailable("cannot fetch from JetStream", e))?;
        let mut batch = Batch::default();
        let mut done = Vec::new();
        let (mut bytes, mut events) = (0usize, 0usize);
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                // What was fetched before the error is still delivered; the rest comes again.
                Err(error) if !batch.is_empty() => {
                    tracing::debug!(%error, "A fetch ended early.");
                    break;
                }
                Err(error) => return Err(unavailable("cannot fetch from JetStream", error)),
            };
            let stream_seq = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(error) => {
                    tracing::warn!(%error, "Dropping a JetStream message without metadata.");
                    continue;
                }
            };
            let (message, acker) = message.split();
            let decoded = match unpack(&message.payload, stream_seq) {
                Ok(decoded) => decoded,
                Err(error) => {
                    // Not a message logmesh published: it can never be stored, so it must not
                    // block the consumer either.
                    tracing::error!(
                        stream_seq,
                        role = self.role.name(),
                        %error,
                        "Dropping a message on the events subject that is not logmesh events."
                    );
                    let _ = acker.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            bytes += message.payload.len();
            events += decoded.len();
            let before = batch.len();
            batch
                .events
                .extend(decoded.into_iter().filter(|event| event.seq > self.floor));
            if batch.len() == before {
                done.push(acker);
            } else {
                self.in_flight.insert(stream_seq, acker);
            }
        }
        if let Some(average) = bytes.checked_div(events) {
            self.event_bytes = average.max(1);
        }
        for acker in done {
            let _ = acker.ack().await;
        }
        Ok(batch)
    }

    async fn ack(&mut self, batch: &Batch) -> Result<(), QueueError> {
        let ackers: Vec<Acker> = batch
            .events
            .iter()
            .filter_map(|event| self.in_flight.remove(&(event.seq >> INDEX_BITS)))
            .collect();
        let results = futures_util::future::join_all(ackers.iter().map(|acker| acker.ack())).await;
        // A lost acknowledgement only means a redelivery, which the sinks de-duplicate.
        if let Some(Err(error)) = results.into_iter().find(Result::is_err) {
            tracing::debug!(%error, "Could not acknowledge a message; it will be redelivered.");
        }
        Ok(())
    }
}

impl JetStreamConsumer {
    /// The next orphans, in stream order, up to about `max` events. They carry no acker: the
    /// server redelivers them after `ack_wait`, and the file then skips them as written.
    async fn read_orphans(&mut self, max: usize) -> Result<Batch, QueueError> {
        let mut batch = Batch::default();
        while let Some(&stream_seq) = self.orphans.front() {
            if !batch.is_empty() && batch.len() >= max {
                break;
            }
            match self.stream.get_raw_message(stream_seq).await {
                Ok(message) => {
                    if let Ok(decoded) = unpack(&message.payload, stream_seq) {
                        batch
                            .events
                            .extend(decoded.into_iter().filter(|event| event.seq > self.floor));
                    }
                }
                // Gone: every consumer acknowledged it, so this node had logged it.
                Err(error)
                    if error.kind()
                        == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound => {}
                Err(error) => {
                    return Err(unavailable("cannot read a message from the stream", error));
                }
            }
            self.orphans.pop_front();
        }
        Ok(batch)
    }
}

/// The events of one message, with their seqs.
pub(super) fn unpack(
    payload: &[u8],
    stream_seq: u64,
) -> Result<Vec<QueuedEvent>, serde_json::Error> {
    payload
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .enumerate()
        .map(|(index, line)| {
            Ok(QueuedEvent {
                seq: stream_seq << INDEX_BITS | index as u64,
                event: Arc::new(serde_json::from_slice::<Event>(line)?),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_safe_and_distinct() {
        assert_eq!(nats_safe_name("node-1"), "node-1");
        assert_eq!(nats_safe_name("a.b"), "a_2eb");
        assert_ne!(nats_safe_name("a.b"), nats_safe_name("a_b"));
        assert_eq!(nats_safe_name("x>*"), "x_3e_2a");
    }

    fn events(ids: &[&str]) -> Vec<Event> {
        let body: String = ids
            .iter()
            .map(|id| format!("{{\"id\":\"{id}\",\"service\":\"s\",\"message\":\"m\"}}\n"))
            .collect();
        crate::event::parse_json_body(
            body.as_bytes(),
            crate::event::IngestContext {
                node: "n",
                now_us: 1,
                oldest_us: i64::MIN,
            },
        )
        .unwrap()
    }

    #[test]
    fn events_pack_into_messages_under_the_limit_and_unpack_in_order() {
        let all = events(&["a", "b", "c", "d", "e"]);
        let one = serde_json::to_vec(&all[0]).unwrap().len() + 1;
        let messages = pack(&all, 2 * one + 1).unwrap();
        assert_eq!(messages.len(), 3);
        assert!(messages[0].0.starts_with("logmesh-batch-"));
        assert_eq!(messages[2].0, "e", "a lone event keeps its own id");
        let mut seqs = Vec::new();
        let mut ids = Vec::new();
        for (i, (_, payload)) in messages.iter().enumerate() {
            for event in unpack(payload, i as u64 + 7).unwrap() {
                seqs.push(event.seq);
                ids.push(event.event.id.clone());
            }
        }
        assert_eq!(ids, ["a", "b", "c", "d", "e"]);
        assert_eq!(seqs[0], 7 << INDEX_BITS);
        assert_eq!(seqs[1], (7 << INDEX_BITS) | 1);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn the_same_events_get_the_same_message_id_and_others_another() {
        let first = pack(&events(&["a", "b"]), 1 << 20).unwrap();
        let again = pack(&events(&["a", "b"]), 1 << 20).unwrap();
        let other = pack(&events(&["a", "c"]), 1 << 20).unwrap();
        assert_eq!(first[0].0, again[0].0);
        assert_ne!(first[0].0, other[0].0);
    }

    #[test]
    fn atomic_batch_replies_are_checked() {
        let depth = QueueDepth {
            events: 7,
            bytes: 9,
        };
        assert!(
            check_batch_reply(b"", false, 3, depth).is_ok(),
            "batch opened"
        );
        assert!(
            check_batch_reply(
                br#"{"stream":"S","seq":9,"batch":"b","count":3}"#,
                true,
                3,
                depth
            )
            .is_ok()
        );
        let short = check_batch_reply(br#"{"stream":"S","seq":9,"count":2}"#, true, 3, depth);
        assert!(
            matches!(short, Err(QueueError::Unavailable(_))),
            "{short:?}"
        );
        let missing = check_batch_reply(b"", true, 3, depth);
        assert!(
            matches!(missing, Err(QueueError::Unavailable(_))),
            "{missing:?}"
        );
        let full =
            br#"{"error":{"code":503,"err_code":10077,"description":"maximum bytes exceeded"}}"#;
        assert!(matches!(
            check_batch_reply(full, true, 3, depth),
            Err(QueueError::Full {
                events: 7,
                bytes: 9
            })
        ));
        let busy = br#"{"error":{"code":429,"err_code":10210,"description":"atomic publish too many inflight"}}"#;
        assert!(matches!(
            check_batch_reply(busy, false, 3, depth),
            Err(QueueError::Full { .. })
        ));
        let other = br#"{"error":{"code":400,"err_code":10176,"description":"batch incomplete"}}"#;
        let error = check_batch_reply(other, false, 3, depth).unwrap_err();
        assert!(error.to_string().contains("batch incomplete"), "{error}");
    }

    #[test]
    fn an_event_larger_than_a_message_is_refused() {
        let error = pack(&events(&["a"]), 10).unwrap_err();
        assert!(matches!(error, QueueError::TooLarge { .. }), "{error}");
    }
}
