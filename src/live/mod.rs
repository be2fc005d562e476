//! The live feed: newly accepted events, fanned out to `GET /api/v1/tail` clients.
//!
//! In the embedded shape the ingest handlers offer every event once the queue made it durable;
//! in the cluster shape a task follows the JetStream stream (an ordered consumer that starts at
//! the newest message), so every node's clients see the events every node accepted, and only
//! those JetStream stored.
//!
//! Invariants:
//! - Offering never waits: each client has its own queue, bounded in events and in bytes
//!   ([`ClientLimits`]), and ingest never slows down for a client.
//! - A client whose queue is full misses events, and is told so where they were missed
//!   ([`LiveItem::Dropped`], as Loki's tail reports `dropped_entries`); one that stays behind
//!   (misses as many events as its queue holds in one stretch, or is behind for
//!   [`STAY_BEHIND`]) is cut off: its queue is freed at once and it gets a final `Dropped`.
//!   Nothing is ever skipped silently.

use crate::event::{Event, Severity};
use futures_util::Stream;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Events a client's queue holds.
pub const DEFAULT_CLIENT_BUFFER: usize = 4096;
/// Bytes of events a client's queue holds.
pub const DEFAULT_CLIENT_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// A client missing events for this long without catching up is cut off.
pub const STAY_BEHIND: Duration = Duration::from_secs(30);

/// How much one client may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    pub events: usize,
    /// One event larger than this is still queued when the queue is empty.
    pub bytes: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            events: DEFAULT_CLIENT_BUFFER,
            bytes: DEFAULT_CLIENT_BUFFER_BYTES,
        }
    }
}

pub struct LiveFeed {
    clients: Mutex<Vec<Arc<Client>>>,
    limits: ClientLimits,
    /// Whether ingest handlers offer events (embedded) or a bus follower does (cluster).
    fed_by_ingest: bool,
}

/// What a client receives.
#[derive(Debug, Clone)]
pub enum LiveItem {
    Event(Arc<Event>),
    /// The client's queue was full and `missed` matching events were not queued for it here;
    /// with `disconnected`, it stayed behind and the stream ends.
    Dropped {
        missed: u64,
        disconnected: bool,
    },
}

struct Client {
    filter: LiveFilter,
    queue: Mutex<ClientQueue>,
    ready: Notify,
}

#[derive(Default)]
struct ClientQueue {
    items: VecDeque<Queued>,
    events: usize,
    bytes: usize,
    /// Events missed since the queue last drained.
    missed_in_stretch: u64,
    behind_since: Option<Instant>,
    /// Cut off after missing this many: the queue is freed and only the final report is left.
    cut: Option<u64>,
    cut_reported: bool,
    /// The client's stream is gone.
    gone: bool,
}

enum Queued {
    Event(Arc<Event>, usize),
    Gap(u64),
}

/// Roughly the memory an event holds.
fn size_of(event: &Event) -> usize {
    128 + event.id.len()
        + event.service.len()
        + event.message.len()
        + event.node.len()
        + event.attributes.as_ref().map_or(0, |a| a.get().len())
}

impl Client {
    fn offer(&self, event: &Arc<Event>, limits: ClientLimits, now: Instant) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.cut.is_some() || queue.gone {
            return;
        }
        let size = size_of(event);
        let fits = queue.events == 0
            || (queue.events < limits.events && queue.bytes + size <= limits.bytes);
        if fits {
            queue.items.push_back(Queued::Event(event.clone(), size));
            queue.events += 1;
            queue.bytes += size;
        } else {
            queue.missed_in_stretch += 1;
            let behind_since = *queue.behind_since.get_or_insert(now);
            match queue.items.back_mut() {
                Some(Queued::Gap(missed)) => *missed += 1,
                _ => queue.items.push_back(Queued::Gap(1)),
            }
            let stays_behind = queue.missed_in_stretch >= limits.events as u64
                || now.duration_since(behind_since) >= STAY_BEHIND;
            if stays_behind {
                let missed = queue.events as u64
                    + queue
                        .items
                        .iter()
                        .map(|item| match item {
                            Queued::Gap(missed) => *missed,
                            Queued::Event(..) => 0,
                        })
                        .sum::<u64>();
                queue.items = VecDeque::new();
                queue.events = 0;
                queue.bytes = 0;
                queue.cut = Some(missed);
            }
        }
        drop(queue);
        self.ready.notify_one();
    }

    /// The next item, or `None` when the stream ends (after a cut).
    async fn next(&self) -> Option<LiveItem> {
        loop {
            {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(missed) = queue.cut {
                    if queue.cut_reported {
                        return None;
                    }
                    queue.cut_reported = true;
                    return Some(LiveItem::Dropped {
                        missed,
                        disconnected: true,
                    });
                }
                if let Some(item) = queue.items.pop_front() {
                    if queue.items.is_empty() {
                        queue.missed_in_stretch = 0;
                        queue.behind_since = None;
                    }
                    return Some(match item {
                        Queued::Event(event, size) => {
                            queue.events -= 1;
                            queue.bytes -= size;
                            LiveItem::Event(event)
                        }
                        Queued::Gap(missed) => LiveItem::Dropped {
                            missed,
                            disconnected: false,
                        },
                    });
                }
            }
            self.ready.notified().await;
        }
    }
}

/// Unregisters a client when its stream is dropped.
struct Subscription {
    client: Arc<Client>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut queue = self.client.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.gone = true;
        queue.items = VecDeque::new();
    }
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
    /// A feed whose clients each queue at most `limits`.
    pub fn new(limits: ClientLimits, fed_by_ingest: bool) -> LiveFeed {
        LiveFeed {
            clients: Mutex::new(Vec::new()),
            limits: ClientLimits {
                events: limits.events.max(1),
                bytes: limits.bytes,
            },
            fed_by_ingest,
        }
    }

    /// Whether the ingest handlers should offer what they accepted.
    pub fn fed_by_ingest(&self) -> bool {
        self.fed_by_ingest
    }

    /// Whether anyone listens: offering is skipped (no clone) when nobody does.
    pub fn has_clients(&self) -> bool {
        !self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Hands `event` to every client whose filter it matches; never waits.
    pub fn offer(&self, event: Arc<Event>) {
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.retain(|client| !client.queue.lock().unwrap_or_else(|p| p.into_inner()).gone);
        for client in clients.iter() {
            if client.filter.matches(&event) {
                client.offer(&event, self.limits, now);
            }
        }
    }

    /// A client's view of the feed: matching events from now on, with a `Dropped` where its
    /// queue overflowed, ending with a final one if it stays behind.
    pub fn subscribe(&self, filter: LiveFilter) -> impl Stream<Item = LiveItem> + Send + use<> {
        let client = Arc::new(Client {
            filter,
            queue: Mutex::new(ClientQueue::default()),
            ready: Notify::new(),
        });
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(client.clone());
        let subscription = Subscription { client };
        futures_util::stream::unfold(subscription, |subscription| async move {
            let item = subscription.client.next().await?;
            Some((item, subscription))
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
                oldest_us: i64::MIN,
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
        let feed = LiveFeed::new(limits(16, 1 << 20), true);
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

    fn limits(events: usize, bytes: usize) -> ClientLimits {
        ClientLimits { events, bytes }
    }

    fn ids(items: &[LiveItem]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                LiveItem::Event(event) => event.id.clone(),
                LiveItem::Dropped {
                    missed,
                    disconnected,
                } => format!(
                    "dropped {missed}{}",
                    if *disconnected { " cut" } else { "" }
                ),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_is_told_where_and_catches_up() {
        let feed = LiveFeed::new(limits(4, 1 << 20), true);
        let mut client = Box::pin(feed.subscribe(LiveFilter::default()));
        for n in 0..6 {
            feed.offer(event(&n.to_string(), "api", "info"));
        }
        let got: Vec<LiveItem> = (&mut client).take(5).collect().await;
        assert_eq!(ids(&got), ["0", "1", "2", "3", "dropped 2"]);
        feed.offer(event("6", "api", "info"));
        let got: Vec<LiveItem> = (&mut client).take(1).collect().await;
        assert_eq!(ids(&got), ["6"]);
    }

    #[tokio::test]
    async fn a_client_that_stays_behind_is_cut_off_and_its_queue_freed() {
        let feed = LiveFeed::new(limits(4, 1 << 20), true);
        let client = feed.subscribe(LiveFilter::default());
        for n in 0..10 {
            feed.offer(event(&n.to_string(), "api", "info"));
        }
        let got: Vec<LiveItem> = client.collect().await;
        assert_eq!(ids(&got), ["dropped 8 cut"]);
    }

    #[tokio::test]
    async fn a_client_queue_is_bounded_in_bytes_too() {
        let feed = LiveFeed::new(limits(1000, 1000), true);
        let mut client = Box::pin(feed.subscribe(LiveFilter::default()));
        let big = |id: &str| {
            let line = format!(
                r#"{{"id":"{id}","service":"a","message":"{}"}}"#,
                "x".repeat(600)
            );
            let mut events = parse_json_body(
                line.as_bytes(),
                IngestContext {
                    node: "n",
                    now_us: 1,
                    oldest_us: i64::MIN,
                },
            )
            .unwrap();
            Arc::new(events.remove(0))
        };
        feed.offer(big("a"));
        feed.offer(big("b"));
        feed.offer(big("c"));
        let got: Vec<LiveItem> = (&mut client).take(2).collect().await;
        assert_eq!(ids(&got), ["a", "dropped 2"]);
        // One event larger than the whole budget still goes through an empty queue.
        let huge = format!(
            r#"{{"id":"h","service":"a","message":"{}"}}"#,
            "x".repeat(5000)
        );
        let mut events = parse_json_body(
            huge.as_bytes(),
            IngestContext {
                node: "n",
                now_us: 1,
                oldest_us: i64::MIN,
            },
        )
        .unwrap();
        feed.offer(Arc::new(events.remove(0)));
        let got: Vec<LiveItem> = (&mut client).take(1).collect().await;
        assert_eq!(ids(&got), ["h"]);
    }

    #[tokio::test]
    async fn a_client_that_goes_away_is_forgotten() {
        let feed = LiveFeed::new(limits(4, 1 << 20), true);
        let client = feed.subscribe(LiveFilter::default());
        assert!(feed.has_clients());
        drop(client);
        feed.offer(event("1", "api", "info"));
        assert!(!feed.has_clients());
    }

    #[test]
    fn offering_without_clients_is_harmless() {
        let feed = LiveFeed::new(limits(4, 1 << 20), true);
        assert!(!feed.has_clients());
        feed.offer(event("1", "api", "info"));
    }
}
