//! The live feed: newly accepted events, fanned out to `GET /api/v1/tail` clients.
//!
//! In the embedded shape the ingest handlers offer every event once the queue made it durable;
//! in the cluster shape a task follows the JetStream stream (an ordered consumer that starts at
//! the newest message), so every node's clients see the events every node accepted, and only
//! those JetStream stored.
//!
//! Invariants:
//! - Offering never waits: the feed is a bounded broadcast ring, and ingest never slows down for
//!   a client.
//! - A client that falls further behind than the ring holds is dropped with a final
//!   [`LiveItem::Dropped`], never silently skipped ahead.

use crate::event::{Event, Severity};
use futures_util::Stream;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Events a client may fall behind before it is dropped.
pub const DEFAULT_CLIENT_BUFFER: usize = 4096;

pub struct LiveFeed {
    sender: broadcast::Sender<Arc<Event>>,
    /// Whether ingest handlers offer events (embedded) or a bus follower does (cluster).
    fed_by_ingest: bool,
}

/// What a client receives.
#[derive(Debug, Clone)]
pub enum LiveItem {
    Event(Arc<Event>),
    /// The client fell `missed` events behind and is disconnected.
    Dropped {
        missed: u64,
    },
}

/// Which events a client wants; `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveFilter {
    pub services: Option<Vec<String>>,
    pub severities: Option<Vec<Severity>>,
}

impl LiveFilter {
    pub fn matches(&self, event: &Event) -> bool {
        self.services
            .as_ref()
            .is_none_or(|services| services.contains(&event.service))
            && self
                .severities
                .as_ref()
                .is_none_or(|severities| severities.contains(&event.severity))
    }
}

impl LiveFeed {
    /// A feed whose clients may each fall `client_buffer` events behind.
    pub fn new(client_buffer: usize, fed_by_ingest: bool) -> LiveFeed {
        let (sender, _) = broadcast::channel(client_buffer.max(1));
        LiveFeed {
            sender,
            fed_by_ingest,
        }
    }

    /// Whether the ingest handlers should offer what they accepted.
    pub fn fed_by_ingest(&self) -> bool {
        self.fed_by_ingest
    }

    /// Whether anyone listens: offering is skipped (no clone) when nobody does.
    pub fn has_clients(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// Hands `event` to every client; never waits.
    pub fn offer(&self, event: Arc<Event>) {
        // An error only means there is no client right now.
        let _ = self.sender.send(event);
    }

    /// A client's view of the feed: matching events from now on, ending with `Dropped` if the
    /// client falls behind by more than the buffer.
    pub fn subscribe(&self, filter: LiveFilter) -> impl Stream<Item = LiveItem> + Send + use<> {
        let receiver = self.sender.subscribe();
        futures_util::stream::unfold(Some(receiver), move |receiver| {
            let filter = filter.clone();
            async move {
                let mut receiver = receiver?;
                loop {
                    match receiver.recv().await {
                        Ok(event) if filter.matches(&event) => {
                            return Some((LiveItem::Event(event), Some(receiver)));
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            return Some((LiveItem::Dropped { missed }, None));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{IngestContext, parse_json_body};
    use futures_util::StreamExt;

    fn event(id: &str, service: &str, severity: &str) -> Arc<Event> {
        let line = format!(
            r#"{{"id":"{id}","service":"{service}","severity":"{severity}","message":"m"}}"#
        );
        let mut events = parse_json_body(
            line.as_bytes(),
            IngestContext {
                node: "n",
                now_us: 1,
            },
        )
        .unwrap();
        Arc::new(events.remove(0))
    }

    fn id(item: &LiveItem) -> &str {
        match item {
            LiveItem::Event(event) => &event.id,
            LiveItem::Dropped { .. } => "dropped",
        }
    }

    #[tokio::test]
    async fn clients_get_matching_events_in_order() {
        let feed = LiveFeed::new(16, true);
        let filter = LiveFilter {
            services: Some(vec!["api".into()]),
            severities: Some(vec![Severity::Error, Severity::Warn]),
        };
        let client = feed.subscribe(filter);
        let all = feed.subscribe(LiveFilter::default());
        assert!(feed.has_clients());
        feed.offer(event("1", "api", "error"));
        feed.offer(event("2", "db", "error"));
        feed.offer(event("3", "api", "info"));
        feed.offer(event("4", "api", "warn"));
        let got: Vec<LiveItem> = client.take(2).collect().await;
        assert_eq!(got.iter().map(id).collect::<Vec<_>>(), ["1", "4"]);
        let got: Vec<LiveItem> = all.take(4).collect().await;
        assert_eq!(got.iter().map(id).collect::<Vec<_>>(), ["1", "2", "3", "4"]);
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_is_dropped_with_a_final_item() {
        let feed = LiveFeed::new(4, true);
        let client = feed.subscribe(LiveFilter::default());
        for n in 0..10 {
            feed.offer(event(&n.to_string(), "api", "info"));
        }
        let got: Vec<LiveItem> = client.collect().await;
        assert!(
            matches!(got.as_slice(), [LiveItem::Dropped { missed: 6 }]),
            "{got:?}"
        );
    }

    #[test]
    fn offering_without_clients_is_harmless() {
        let feed = LiveFeed::new(4, true);
        assert!(!feed.has_clients());
        feed.offer(event("1", "api", "info"));
    }
}
