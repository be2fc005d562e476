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
    /// `--retention`: events older than it are refused by the parsers.
    retention: Option<std::time::Duration>,
}

impl Intake {
    pub fn new(
        queue: Arc<dyn IngestQueue>,
        live: Arc<LiveFeed>,
        metrics: Arc<NodeMetrics>,
        watermark: Option<Watermark>,
        retention: Option<std::time::Duration>,
    ) -> Intake {
        Intake {
            queue,
            live,
            metrics,
            watermark,
            retention,
        }
    }

    /// The start of the retention period at `now_us` (epoch µs), for
    /// [`IngestContext::oldest_us`](crate::event::IngestContext); `i64::MIN` without one.
    pub fn oldest_us(&self, now_us: i64) -> i64 {
        self.retention.map_or(i64::MIN, |retention| {
            now_us.saturating_sub(i64::try_from(retention.as_micros()).unwrap_or(i64::MAX))
        })
    }

    /// Makes `events` durable, then offers them to live clients; refuses them while the data
    /// directory's disk is below `--min-free-disk`.
    pub async fn append(&self, events: Vec<Event>) -> Result<(), QueueError> {
        let count = events.len();
        if let Some(error) = self.watermark.as_ref().and_then(|w| w.check().err()) {
            self.metrics.events_refused(count);
            return Err(error);
        }
        let offered =
            (self.live.fed_by_ingest() && self.live.has_clients()).then(|| events.clone());
        if let Err(error) = self.queue.append(events).await {
            self.metrics.events_refused(count);
            return Err(error);
        }
        self.metrics.events_accepted(count);
        for event in offered.into_iter().flatten() {
            self.live.offer(Arc::new(event));
        }
        Ok(())
    }

    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }
}
