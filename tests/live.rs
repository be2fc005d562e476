//! `GET /api/v1/tail`: live events as Server-Sent Events, embedded and across a cluster.

mod common;

use common::cluster::TestCluster;
use common::databases::{Server, TestDatabase};
use common::{TestNode, ndjson_line};
use std::time::{Duration, Instant};

/// How long a test waits for an event to come through the live feed.
const LIVE_DEADLINE: Duration = Duration::from_secs(30);

/// Reads SSE frames from `response` until `done` says enough (or panics after the deadline);
/// returns every `(event name, data)` seen.
async fn read_sse(
    response: &mut reqwest::Response,
    mut done: impl FnMut(&[(String, serde_json::Value)]) -> bool,
) -> Vec<(String, serde_json::Value)> {
    let until = Instant::now() + LIVE_DEADLINE;
    let mut buffer = String::new();
    let mut frames = Vec::new();
    while !done(&frames) {
        let left = until.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out; frames so far: {frames:?}");
        let chunk = match tokio::time::timeout(left, response.chunk()).await {
            Ok(chunk) => chunk.expect("the stream reads"),
            Err(_) => panic!("timed out; frames so far: {frames:?}"),
        };
        let Some(chunk) = chunk else { break };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let mut name = "message".to_owned();
            let mut data = None;
            for line in frame.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data = serde_json::from_str(value.trim()).ok();
                }
            }
            if let Some(data) = data {
                frames.push((name, data));
            }
        }
    }
    frames
}

fn ids(frames: &[(String, serde_json::Value)]) -> Vec<String> {
    frames
        .iter()
        .filter(|(name, _)| name == "log")
        .map(|(_, data)| data["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn clients_see_new_events_that_match_their_filter() {
    let node = TestNode::start(|_| {}).await;
    let mut response = node
        .get("/api/v1/tail?service=api,db&severity=error,warning")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let body = [
        ndjson_line("1", "api", "error", "boom"),
        ndjson_line("2", "web", "error", "other service"),
        ndjson_line("3", "api", "info", "too quiet"),
        ndjson_line("4", "db", "warn", "slow"),
    ]
    .concat();
    let posted = node.post("/api/v1/logs").body(body).send().await.unwrap();
    assert_eq!(posted.status(), 202);
    let frames = read_sse(&mut response, |frames| ids(frames).len() >= 2).await;
    assert_eq!(ids(&frames), ["1", "4"]);
    let first = &frames[0].1;
    assert_eq!(first["service"], "api");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["message"], "boom");
    assert_eq!(first["node"], "test-node");
    assert!(first["ts"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn a_slow_client_is_dropped_with_a_final_event_and_ingest_goes_on() {
    let node = TestNode::start(|config| config.tail_buffer = 4).await;
    let mut response = node.get("/api/v1/tail").send().await.unwrap();
    // The client reads nothing while far more than its buffer and the socket's arrive.
    let message = "x".repeat(1000);
    for round in 0..40 {
        let body: String = (0..250)
            .map(|i| ndjson_line(&format!("{round}-{i}"), "api", "info", &message))
            .collect();
        let posted = node.post("/api/v1/logs").body(body).send().await.unwrap();
        assert_eq!(
            posted.status(),
            202,
            "ingest must not wait for live clients"
        );
    }
    let frames = read_sse(&mut response, |frames| {
        frames.iter().any(|(name, _)| name == "dropped")
    })
    .await;
    let (name, data) = frames.last().unwrap();
    assert_eq!(name, "dropped");
    assert!(data["missed"].as_u64().unwrap() > 0, "{data}");
    // And the stream ends there.
    assert!(response.chunk().await.unwrap().is_none());
}

#[tokio::test]
async fn bad_tail_parameters_are_rejected() {
    let node = TestNode::start(|_| {}).await;
    for (query, expected) in [
        ("severity=loud", "unknown severity `loud`"),
        ("service=api,,db", "empty service name"),
        ("hostname=x", "unknown field `hostname`"),
    ] {
        let response = node
            .get(&format!("/api/v1/tail?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: serde_json::Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{query}: {message}");
    }
}

#[tokio::test]
async fn a_cluster_node_streams_events_accepted_by_another() {
    needs!(Nats, Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let nats = common::services::nats_url();
    let cluster = TestCluster::start(2, &nats, database.url(), &[]);
    let mut response = cluster
        .client
        .get(format!(
            "{}/api/v1/tail?service=live",
            cluster.nodes[1].url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The follower starts with the node; post until one event comes through, then one more
    // that must arrive too.
    let mut posted = 0;
    let mut frames = Vec::new();
    let until = Instant::now() + LIVE_DEADLINE;
    while ids(&frames).is_empty() {
        assert!(Instant::now() < until, "no live event came through");
        let body = ndjson_line(&format!("probe-{posted}"), "live", "info", "via node-0");
        assert_eq!(cluster.post_ndjson(0, body).await, 202);
        posted += 1;
        let more = tokio::time::timeout(Duration::from_millis(500), async {
            read_sse(&mut response, |frames| !ids(frames).is_empty()).await
        })
        .await;
        if let Ok(more) = more {
            frames.extend(more);
        }
    }
    let body = ndjson_line("last", "live", "info", "via node-0");
    assert_eq!(cluster.post_ndjson(0, body).await, 202);
    let rest = read_sse(&mut response, |frames| {
        ids(frames).contains(&"last".to_owned())
    })
    .await;
    let first = &frames[0].1;
    assert_eq!(first["node"], "node-0");
    assert!(ids(&rest).contains(&"last".to_owned()));
}

#[tokio::test]
async fn a_stalled_client_is_bounded_in_bytes_and_told_what_it_missed() {
    // Room for 10,000 events by count, but only 64 KiB of them.
    let node = TestNode::start(|config| {
        config.tail_buffer = 10_000;
        config.tail_buffer_bytes = 64 * 1024;
    })
    .await;
    let mut response = node.get("/api/v1/tail").send().await.unwrap();
    // 1,000 events of 8 KiB while the client reads nothing: far past its bytes and the socket's.
    let message = "x".repeat(8 * 1024);
    for round in 0..10 {
        let body: String = (0..100)
            .map(|i| ndjson_line(&format!("{round}-{i}"), "api", "info", &message))
            .collect();
        let posted = node.post("/api/v1/logs").body(body).send().await.unwrap();
        assert_eq!(
            posted.status(),
            202,
            "ingest must not wait for live clients"
        );
    }
    // Every event is either delivered or counted where it was missed: none is skipped silently.
    let missed = |frames: &[(String, serde_json::Value)]| -> u64 {
        frames
            .iter()
            .filter(|(name, _)| name == "dropped")
            .map(|(_, data)| data["missed"].as_u64().unwrap())
            .sum()
    };
    let frames = read_sse(&mut response, |frames| {
        ids(frames).len() as u64 + missed(frames) == 1000
    })
    .await;
    assert!(
        missed(&frames) > 500,
        "64 KiB hold 8 events of 8 KiB: most were missed ({} delivered)",
        ids(&frames).len()
    );
    assert!(
        frames
            .iter()
            .filter(|(name, _)| name == "dropped")
            .all(|(_, data)| data["disconnected"] == false),
        "behind, but not cut off: {frames:?}"
    );
}
