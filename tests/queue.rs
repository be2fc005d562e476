//! The ingest queue conformance suite. Every adapter must: deliver each appended event to every
//! consumer role with a strictly increasing seq, forget an event for a role only once that role
//! acknowledged it, deliver unacknowledged events again to a new consumer, and refuse appends
//! past its limits with `QueueError::Full`. Written once; run against the local queue and
//! JetStream. JetStream-only behaviour (de-duplication by event id, competing store writers,
//! stream checks) follows the shared suite.

mod common;

use common::services::{NatsServer, nats_url};

use logmesh::event::Event;
use logmesh::queue::jetstream::{JetStreamQueue, JetStreamSettings};
use logmesh::queue::local::LocalQueue;
use logmesh::queue::{ConsumerRole, IngestQueue, QueueError, QueueLimits};
use std::collections::BTreeSet;
use std::time::Duration;

/// Long enough for a loaded machine to answer a fetch.
const FETCH_WAIT: Duration = Duration::from_millis(500);

fn events(ids: &[&str]) -> Vec<Event> {
    let body: String = ids
        .iter()
        .map(|id| common::ndjson_line(id, "api", "info", &format!("message {id}")))
        .collect();
    common::parse_events(&body)
}

/// Settings with a stream of its own, so tests sharing the server never meet.
fn jetstream_settings(max_events: usize) -> JetStreamSettings {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    JetStreamSettings {
        url: nats_url(),
        stream: format!("T_{unique}"),
        subject: format!("test.{unique}"),
        max_events,
        max_bytes: 64 << 20,
        max_ack_pending: 10_000,
        ack_wait: Duration::from_secs(1),
        replica_max_offline: Duration::from_secs(60),
        node_name: "node-a".into(),
    }
}

async fn fetch_ids(
    consumer: &mut Box<dyn logmesh::queue::QueueConsumer>,
    want: usize,
) -> (Vec<String>, logmesh::queue::Batch) {
    let batch = consumer.fetch(want, FETCH_WAIT).await.unwrap();
    let ids = batch.events.iter().map(|e| e.event.id.clone()).collect();
    (ids, batch)
}

/// Fetches and acknowledges until `n` events came, or panics after a deadline.
async fn collect(
    consumer: &mut Box<dyn logmesh::queue::QueueConsumer>,
    n: usize,
) -> Vec<(u64, String)> {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while seen.len() < n {
        assert!(
            std::time::Instant::now() < until,
            "only {seen:?} of {n} events came"
        );
        let batch = consumer.fetch(n, FETCH_WAIT).await.unwrap();
        seen.extend(batch.events.iter().map(|e| (e.seq, e.event.id.clone())));
        consumer.ack(&batch).await.unwrap();
    }
    seen
}

async fn every_role_sees_every_event_in_order(queue: &dyn IngestQueue) {
    // Consumers are opened before anything is appended, as a node does before serving: a
    // JetStream stream keeps messages only for the consumers that exist.
    let mut consumers = Vec::new();
    for role in ConsumerRole::ALL {
        consumers.push((role, queue.consumer(role).await.unwrap()));
    }
    queue.append(events(&["a", "b"])).await.unwrap();
    queue.append(events(&["c"])).await.unwrap();
    for (role, mut consumer) in consumers {
        let seen = collect(&mut consumer, 3).await;
        let ids: Vec<&str> = seen.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"], "{role:?}");
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
    }
}

async fn unacknowledged_events_come_again(queue: &dyn IngestQueue) {
    queue.append(events(&["x", "y"])).await.unwrap();
    let mut consumer = queue.consumer(ConsumerRole::Store).await.unwrap();
    let (first, _batch) = fetch_ids(&mut consumer, 10).await;
    assert_eq!(first, ["x", "y"]);
    drop(consumer);
    // A new consumer (a restarted node, or another node) gets them again once they are due.
    let mut consumer = queue.consumer(ConsumerRole::Store).await.unwrap();
    let again = collect(&mut consumer, 2).await;
    let ids: Vec<&str> = again.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, ["x", "y"]);
    let (rest, _) = fetch_ids(&mut consumer, 10).await;
    assert!(rest.is_empty(), "acknowledged events came back: {rest:?}");
}

async fn appends_past_the_limit_are_refused(queue: &dyn IngestQueue, limit: usize) {
    for i in 0..limit {
        queue.append(events(&[&format!("fill-{i}")])).await.unwrap();
    }
    let error = queue.append(events(&["one-too-many"])).await.unwrap_err();
    assert!(matches!(error, QueueError::Full { .. }), "{error}");
}

fn local_queue(dir: &std::path::Path, max_events: usize) -> LocalQueue {
    LocalQueue::open(
        dir,
        QueueLimits {
            max_events,
            max_bytes: 64 << 20,
        },
        0,
    )
    .unwrap()
}

#[tokio::test]
async fn local_queue_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let queue = local_queue(dir.path(), 1_000);
    every_role_sees_every_event_in_order(&queue).await;
    let dir = tempfile::tempdir().unwrap();
    let queue = local_queue(dir.path(), 1_000);
    unacknowledged_events_come_again(&queue).await;
    let dir = tempfile::tempdir().unwrap();
    appends_past_the_limit_are_refused(&local_queue(dir.path(), 5), 5).await;
}

#[tokio::test]
async fn jetstream_queue_conforms() {
    needs!(Nats);
    let queue = JetStreamQueue::connect(jetstream_settings(1_000), 0)
        .await
        .unwrap();
    every_role_sees_every_event_in_order(&queue).await;
    let queue = JetStreamQueue::connect(jetstream_settings(1_000), 0)
        .await
        .unwrap();
    unacknowledged_events_come_again(&queue).await;
    let queue = JetStreamQueue::connect(jetstream_settings(5), 0)
        .await
        .unwrap();
    appends_past_the_limit_are_refused(&queue, 5).await;
}

#[tokio::test]
async fn jetstream_drops_a_request_or_an_event_published_again() {
    needs!(Nats);
    let queue = JetStreamQueue::connect(jetstream_settings(1_000), 0)
        .await
        .unwrap();
    let mut consumer = queue.consumer(ConsumerRole::Store).await.unwrap();
    queue.append(events(&["a", "b"])).await.unwrap();
    queue.append(events(&["a", "b"])).await.unwrap();
    queue.append(events(&["single"])).await.unwrap();
    queue.append(events(&["single"])).await.unwrap();
    // Another request holding a known id still gets through: the store drops that one.
    queue.append(events(&["b", "c"])).await.unwrap();
    let ids: Vec<String> = collect(&mut consumer, 5)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(ids, ["a", "b", "single", "b", "c"]);
    let (rest, _) = fetch_ids(&mut consumer, 10).await;
    assert!(rest.is_empty(), "{rest:?}");
}

/// `count` events of about 1 KB each, with ids `{prefix}-0`, `{prefix}-1`, …
fn kilobyte_events(prefix: &str, count: usize) -> Vec<Event> {
    let ids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    let mut events = events(&ids.iter().map(String::as_str).collect::<Vec<_>>());
    for event in &mut events {
        event.message = "x".repeat(1000);
    }
    events
}

/// The messages the stream holds right now.
async fn stream_messages(settings: &JetStreamSettings) -> u64 {
    let client = async_nats::connect(&settings.url).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(&settings.stream)
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test]
async fn jetstream_stores_a_request_of_several_messages_whole_or_not_at_all() {
    needs!(Nats);
    // Room for about three messages of the server's 1 MiB max_payload.
    let settings = JetStreamSettings {
        max_bytes: 3 << 20,
        ..jetstream_settings(1_000_000)
    };
    let queue = JetStreamQueue::connect(settings.clone(), 0).await.unwrap();
    let mut consumer = queue.consumer(ConsumerRole::Store).await.unwrap();

    // 1.2 MB: two messages, both stored.
    queue.append(kilobyte_events("a", 1_200)).await.unwrap();
    assert_eq!(stream_messages(&settings).await, 2);
    // 1.9 MB: its first message would still fit, its second not. Published one by one, the
    // first would stay behind the 503 and be stored again beside the client's retry.
    let error = queue.append(kilobyte_events("b", 1_900)).await.unwrap_err();
    assert!(matches!(error, QueueError::Full { .. }), "{error}");
    assert_eq!(
        stream_messages(&settings).await,
        2,
        "nothing of the refused request is kept"
    );

    let ids: Vec<String> = collect(&mut consumer, 1_200)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let expected: Vec<String> = (0..1_200).map(|i| format!("a-{i}")).collect();
    assert_eq!(ids, expected);
    // Once the stream has room again the same request is taken whole.
    queue.append(kilobyte_events("b", 1_900)).await.unwrap();
    let ids = collect(&mut consumer, 1_900).await;
    assert_eq!(ids.len(), 1_900);
    assert!(ids.iter().all(|(_, id)| id.starts_with("b-")));
    assert!(ids.windows(2).all(|pair| pair[0].0 < pair[1].0), "in order");
}

#[tokio::test]
async fn jetstream_store_writers_compete_and_event_logs_do_not() {
    needs!(Nats);
    let settings = jetstream_settings(1_000);
    let node_a = JetStreamQueue::connect(settings.clone(), 0).await.unwrap();
    let node_b = JetStreamQueue::connect(
        JetStreamSettings {
            node_name: "node-b".into(),
            ..settings
        },
        0,
    )
    .await
    .unwrap();
    let mut store_a = node_a.consumer(ConsumerRole::Store).await.unwrap();
    let mut store_b = node_b.consumer(ConsumerRole::Store).await.unwrap();
    let mut log_a = node_a.consumer(ConsumerRole::EventLog).await.unwrap();
    let mut log_b = node_b.consumer(ConsumerRole::EventLog).await.unwrap();
    node_a.append(events(&["1", "2", "3", "4"])).await.unwrap();

    let (from_a, batch) = fetch_ids(&mut store_a, 2).await;
    store_a.ack(&batch).await.unwrap();
    let (from_b, batch) = fetch_ids(&mut store_b, 10).await;
    store_b.ack(&batch).await.unwrap();
    let stored: BTreeSet<String> = from_a.iter().chain(&from_b).cloned().collect();
    assert_eq!(from_a.len() + from_b.len(), 4, "{from_a:?} {from_b:?}");
    assert_eq!(stored.len(), 4);

    for log in [&mut log_a, &mut log_b] {
        let (ids, _) = fetch_ids(log, 10).await;
        assert_eq!(ids, ["1", "2", "3", "4"]);
    }
}

#[tokio::test]
async fn jetstream_event_log_consumer_starts_after_what_the_file_holds() {
    needs!(Nats);
    let settings = jetstream_settings(1_000);
    let queue = JetStreamQueue::connect(settings.clone(), 0).await.unwrap();
    let mut store = queue.consumer(ConsumerRole::Store).await.unwrap();
    queue
        .append(events(&["old-1", "old-2", "new"]))
        .await
        .unwrap();
    queue.append(events(&["newer"])).await.unwrap();
    // Fetched, not acknowledged: the stream keeps the messages for the store.
    let batch = store.fetch(10, FETCH_WAIT).await.unwrap();
    let seqs: Vec<(u64, String)> = batch
        .events
        .iter()
        .map(|e| (e.seq, e.event.id.clone()))
        .collect();
    assert_eq!(seqs.len(), 4);
    // The file already holds the first two events, which share a message with the third.
    let queue = JetStreamQueue::connect(settings, seqs[1].0).await.unwrap();
    let mut log = queue.consumer(ConsumerRole::EventLog).await.unwrap();
    let resumed: Vec<(u64, String)> = collect(&mut log, 2).await;
    assert_eq!(resumed, seqs[2..]);
}

#[tokio::test]
async fn jetstream_event_log_of_a_restarted_node_first_logs_what_its_dead_run_fetched() {
    needs!(Nats);
    // A long ack_wait: JetStream must not be what brings the orphan back within the test.
    let settings = JetStreamSettings {
        ack_wait: Duration::from_secs(30),
        ..jetstream_settings(1_000)
    };
    let first_run = JetStreamQueue::connect(settings.clone(), 0).await.unwrap();
    let mut log = first_run.consumer(ConsumerRole::EventLog).await.unwrap();
    first_run.append(events(&["a-1", "a-2"])).await.unwrap();
    first_run.append(events(&["b"])).await.unwrap();
    // The first message is logged and acknowledged; the second fetched, then the node dies.
    let (ids, written) = fetch_ids(&mut log, 1).await;
    assert_eq!(ids, ["a-1", "a-2"]);
    log.ack(&written).await.unwrap();
    let (ids, _orphan) = fetch_ids(&mut log, 1).await;
    assert_eq!(ids, ["b"]);
    drop(log);
    first_run.close().await;
    drop(first_run);

    let floor = written.events.last().unwrap().seq;
    let second_run = JetStreamQueue::connect(settings, floor).await.unwrap();
    second_run.append(events(&["c"])).await.unwrap();
    let mut log = second_run.consumer(ConsumerRole::EventLog).await.unwrap();
    let resumed: Vec<String> = collect(&mut log, 2)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(
        resumed,
        ["b", "c"],
        "the orphan first, then what came after"
    );
}

#[tokio::test]
async fn jetstream_before_2_12_refuses_a_request_larger_than_one_message() {
    needs!(NatsServerMinimum);
    // NATS 2.10 and 2.11 have no atomic batches: a request is taken only if one message holds it.
    let server = NatsServer::start_minimum();
    let settings = JetStreamSettings {
        url: server.url(),
        ..jetstream_settings(1_000_000)
    };
    let queue = JetStreamQueue::connect(settings.clone(), 0).await.unwrap();
    let mut consumer = queue.consumer(ConsumerRole::Store).await.unwrap();
    queue.append(kilobyte_events("small", 500)).await.unwrap();
    let error = queue
        .append(kilobyte_events("big", 2_500))
        .await
        .unwrap_err();
    assert!(
        matches!(error, QueueError::TooManyMessages { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("this NATS server (2.10.26) takes a request in one message only"),
        "{message}"
    );
    assert!(message.contains("split it"), "{message}");
    assert_eq!(
        stream_messages(&settings).await,
        1,
        "nothing of the refused request is kept"
    );
    let ids = collect(&mut consumer, 500).await;
    assert!(
        ids.iter().all(|(_, id)| id.starts_with("small-")),
        "{ids:?}"
    );
}

#[tokio::test]
async fn jetstream_allows_atomic_batches_on_a_stream_made_without_them() {
    needs!(Nats);
    use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
    // As an earlier release (or a NATS server before 2.12) left it.
    let settings = jetstream_settings(1_000_000);
    let client = async_nats::connect(&settings.url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    jetstream
        .create_stream(Config {
            name: settings.stream.clone(),
            subjects: vec![settings.subject.clone()],
            retention: RetentionPolicy::Interest,
            discard: DiscardPolicy::New,
            storage: StorageType::File,
            max_messages: 1_000_000,
            max_bytes: 64 << 20,
            ..Default::default()
        })
        .await
        .unwrap();
    let queue = JetStreamQueue::connect(settings.clone(), 0).await.unwrap();
    let mut stream = jetstream.get_stream(&settings.stream).await.unwrap();
    assert!(stream.info().await.unwrap().config.allow_atomic_publish);
    let mut consumer = queue.consumer(ConsumerRole::Store).await.unwrap();
    queue.append(kilobyte_events("big", 2_500)).await.unwrap();
    assert_eq!(collect(&mut consumer, 2_500).await.len(), 2_500);
}

#[tokio::test]
async fn jetstream_refuses_an_incompatible_existing_stream() {
    needs!(Nats);
    let settings = jetstream_settings(1_000);
    let client = async_nats::connect(&settings.url).await.unwrap();
    async_nats::jetstream::new(client)
        .create_stream(async_nats::jetstream::stream::Config {
            name: settings.stream.clone(),
            subjects: vec![settings.subject.clone()],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
    let error = JetStreamQueue::connect(settings, 0)
        .await
        .err()
        .expect("an incompatible stream is refused");
    let message = error.to_string();
    assert!(message.contains("memory"), "{message}");
    assert!(message.contains("retention"), "{message}");
}

#[tokio::test]
async fn jetstream_unreachable_at_start_is_a_clear_error() {
    needs!(Nats);
    let port = common::services::free_port();
    let settings = JetStreamSettings {
        url: format!("nats://127.0.0.1:{port}"),
        ..jetstream_settings(10)
    };
    let error = JetStreamQueue::connect(settings, 0)
        .await
        .err()
        .expect("no server, no queue");
    assert!(
        error.to_string().contains("cannot connect to NATS"),
        "{error}"
    );
}
