//! The ingest queue port: where accepted events become durable before anything else touches
//! them, and from which the store writer and the event log writer consume.
//!
//! Every adapter must:
//! - return from [`IngestQueue::append`] only once every event of the call is durable (on disk
//!   with fsync, or acknowledged by the broker), or fail for all of them;
//! - refuse with [`QueueError::Full`] rather than grow past its configured bounds;
//! - deliver each durable event to every consumer role, in append order, as [`QueuedEvent`]s
//!   with a strictly increasing `seq`;
//! - keep delivering an event until its consumer acknowledged it, across restarts of the node
//!   (at-least-once); consumers de-duplicate (the store by event id, the event log by `seq`).
//!
//! Adapters: [`local::LocalQueue`] (segment files in the data dir, the embedded shape) and
//! [`jetstream::JetStreamQueue`] (a NATS JetStream stream, the cluster shape).

pub mod jetstream;
pub mod jetstream_live;
pub mod local;

use crate::event::Event;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// An event as delivered by the queue, with its position.
#[derive(Debug, Clone)]
pub struct QueuedEvent {
    /// Position in the queue: strictly increasing, never reused.
    pub seq: u64,
    pub event: Arc<Event>,
}

/// Events fetched together, in `seq` order.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<QueuedEvent>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.events.last().map(|e| e.seq)
    }
}

/// Who reads from the queue. Every role sees every event once acknowledged by no one else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsumerRole {
    /// Writes batches to the SQL store (shared by all nodes in the cluster shape).
    Store,
    /// Appends every event to this node's event log file (one per node).
    EventLog,
}

impl ConsumerRole {
    pub const ALL: [ConsumerRole; 2] = [ConsumerRole::Store, ConsumerRole::EventLog];

    pub fn name(self) -> &'static str {
        match self {
            ConsumerRole::Store => "store",
            ConsumerRole::EventLog => "eventlog",
        }
    }
}

/// How full the queue is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub events: usize,
    pub bytes: usize,
}

/// Bounds of a queue; appends that would pass them are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_events: usize,
    pub max_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_events: 250_000,
            max_bytes: 128 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(
        "the ingest queue is full ({events} events, {bytes} bytes waiting to be stored); retry later"
    )]
    Full { events: usize, bytes: usize },
    #[error(
        "the request holds {events} events ({bytes} bytes encoded), more than the ingest queue can \
         ever hold ({max_events} events, {max_bytes} bytes); split it"
    )]
    TooLarge {
        events: usize,
        bytes: usize,
        max_events: usize,
        max_bytes: usize,
    },
    /// The request needs more messages than the message bus takes for one request.
    #[error(
        "the request's events take {bytes} bytes, {messages} NATS messages of at most \
         {message_bytes} bytes; {why}: split it"
    )]
    TooManyMessages {
        bytes: usize,
        messages: usize,
        message_bytes: usize,
        why: String,
    },
    #[error("the ingest queue is shutting down")]
    Closed,
    #[error("the ingest queue could not write to disk: {0}")]
    Io(String),
    /// The message bus cannot be reached right now; the caller should retry later.
    #[error("the message bus is unavailable: {0}; retry later")]
    Unavailable(String),
    /// The queue cannot be set up as configured (bad URL, incompatible stream).
    #[error("{0}")]
    Config(String),
    /// The data directory's disk is below `--min-free-disk`; the caller should retry later.
    #[error(
        "the disk holding {path} has {} free, less than --min-free-disk {}: new events are \
         refused until space returns; retry later",
        crate::units::format_size_approx(*free),
        crate::units::format_size_approx(*min_free)
    )]
    DiskLow {
        path: String,
        free: u64,
        min_free: u64,
    },
}

#[async_trait]
pub trait IngestQueue: Send + Sync + 'static {
    /// Makes `events` durable, all or none.
    async fn append(&self, events: Vec<Event>) -> Result<(), QueueError>;

    /// Opens the consumer for `role`. Each role has one consumer per node.
    async fn consumer(&self, role: ConsumerRole) -> Result<Box<dyn QueueConsumer>, QueueError>;

    /// Fails when the queue cannot take appends (disk failure, broker unreachable).
    async fn health(&self) -> Result<(), QueueError>;

    /// Events and bytes accepted but not yet acknowledged by every consumer.
    fn depth(&self) -> QueueDepth;

    /// [`QueueError::Full`] while requests not yet parsed should be refused: after an append
    /// was refused for room, until the queue has drained (see [`local::LocalQueue`]'s
    /// shedding). Appends that fit are still taken meanwhile. `None` says only that an append
    /// may be taken, not that it will.
    fn shedding(&self) -> Option<QueueError> {
        None
    }

    /// Stops taking appends; already durable events stay readable by consumers.
    async fn close(&self);
}

#[async_trait]
pub trait QueueConsumer: Send {
    /// Returns as soon as `max` events are available, or when `wait` has passed with whatever
    /// arrived by then (possibly nothing). `wait` zero returns what is available now.
    async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Batch, QueueError>;

    /// Acknowledges every event of `batch`: the queue may forget them for this role.
    async fn ack(&mut self, batch: &Batch) -> Result<(), QueueError>;
}
