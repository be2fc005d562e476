//! Where every ingest path hands over its events (the HTTP endpoints, the syslog listeners): the
//! durable queue, the node's ingest metrics, and, in the embedded shape, the live feed (in a
//! cluster the live feed follows the stream instead, so that it sees every node's events).

use crate::disk::Watermark;
use crate::event::Event;
use crate::live::LiveFeed;
use crate::metrics::NodeMetrics;
use crate::queue::{IngestQueue, QueueError};
use std::sync::Arc;

pub struct Intake {
    queue: Arc<dyn IngestQueue>,
    live: Arc<LiveFeed>,
    metrics: Arc<NodeMetrics>,
    /// `--min-free-disk`: below it nothing new is taken.
    watermark: Option<Watermark>,
    /// `--retention`: events older than it are refused by the parsers, or taken and counted
    /// as expired (`--late-events`).
    retention: Option<std::time::Duration>,
    late_events: LateEvents,
}

/// What becomes of an event that arrives already past the retention period (`--late-events`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LateEvents {
    /// Refused, the way its protocol refuses one item.
    #[default]
    Refuse,
    /// Acknowledged like the others, then counted as expired and not stored, as if expiry
    /// had removed it at once.
    Expire,
}

impl LateEvents {
    pub fn parse(text: &str) -> Result<LateEvents, String> {
        match text {
            "refuse" => Ok(LateEvents::Refuse),
            "expire" => Ok(LateEvents::Expire),
            _ => Err("expected refuse or expire".into()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LateEvents::Refuse => "refuse",
            LateEvents::Expire => "expire",
        }
    }
}

impl Intake {
    pub fn new(
        queue: Arc<dyn IngestQueue>,
        live: Arc<LiveFeed>,
        metrics: Arc<NodeMetrics>,
        watermark: Option<Watermark>,
        retention: Option<std::time::Duration>,
        late_events: LateEvents,
    ) -> Intake {
        Intake {
            queue,
            live,
            metrics,
            watermark,
            retention,
            late_events,
        }
    }

    /// The oldest timestamp the parsers take at `now_us` (epoch µs), for
    /// [`IngestContext::oldest_us`](crate::event::IngestContext): the start of the retention
    /// period, or `i64::MIN` without one or when late events are taken and expired here.
    pub fn oldest_us(&self, now_us: i64) -> i64 {
        match self.late_events {
            LateEvents::Refuse => self.cutoff_us(now_us),
            LateEvents::Expire => i64::MIN,
        }
    }

    fn cutoff_us(&self, now_us: i64) -> i64 {
        self.retention.map_or(i64::MIN, |retention| {
            now_us.saturating_sub(i64::try_from(retention.as_micros()).unwrap_or(i64::MAX))
        })
    }

    /// Makes `events` durable, then offers them to live clients; refuses them while the data
    /// directory's disk is below `--min-free-disk`. With `--late-events expire`, those already
    /// past the retention period are counted as expired instead of queued.
    pub async fn append(&self, mut events: Vec<Event>) -> Result<(), QueueError> {
        let count = events.len();
        if let Some(error) = self.watermark.as_ref().and_then(|w| w.check().err()) {
            self.metrics.events_refused(count);
            return Err(error);
        }
        if self.late_events == LateEvents::Expire {
            let cutoff = self.cutoff_us(crate::event::now_us());
            events.retain(|event| event.ts_us >= cutoff);
        }
        let expired = count - events.len();
        let offered = if events.is_empty() {
            None
        } else {
            let offered =
                (self.live.fed_by_ingest() && self.live.has_clients()).then(|| events.clone());
            if let Err(error) = self.queue.append(events).await {
                // Refused whole: the expired ones with the others.
                self.metrics.events_refused(count);
                return Err(error);
            }
            offered
        };
        if expired > 0 {
            self.metrics.events_expired_on_arrival(expired);
        }
        self.metrics.events_accepted(count);
        for event in offered.into_iter().flatten() {
            self.live.offer(Arc::new(event));
        }
        Ok(())
    }

    /// The queue's refusal while it sheds load (see [`IngestQueue::shedding`]), counted as a
    /// request shed: a request can then be refused before it is parsed. Below
    /// `--min-free-disk` the refusal is the disk's instead, which says when to expect room.
    pub fn check_shedding(&self) -> Result<(), QueueError> {
        let Some(full) = self.queue.shedding() else {
            return Ok(());
        };
        if let Some(low) = self.watermark.as_ref().and_then(|w| w.check().err()) {
            return Err(low);
        }
        self.metrics.request_shed();
        Err(full)
    }

    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }
}
