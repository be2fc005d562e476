//! Retention of stored events (`--retention`): queries never show events past it, even before
//! expiry removes them, and expiry removes them with `service_severity` in step. (The store
//! adapters' own expiry is in tests/store.rs's conformance suite, on every backend.)

mod common;

use common::{TestNode, eventually, stored};
use serde_json::json;
use std::time::Duration;

fn ms_ago(ms: i64) -> i64 {
    logmesh::event::now_us() / 1000 - ms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_the_retention_are_hidden_at_once_and_removed_soon() {
    let node = TestNode::start(|config| {
        config.retention = Some(Duration::from_secs(3600));
    })
    .await;
    let two_hours = 2 * 3600 * 1000;
    let body = [
        json!({"id": "old-1", "service": "api", "severity": "error", "message": "stale one", "timestamp": ms_ago(two_hours)}),
        json!({"id": "old-2", "service": "api", "severity": "info", "message": "stale two", "timestamp": ms_ago(two_hours + 1)}),
        json!({"id": "old-3", "service": "cron", "severity": "info", "message": "stale three", "timestamp": ms_ago(two_hours + 2)}),
        json!({"id": "new-1", "service": "api", "severity": "info", "message": "fresh one", "timestamp": ms_ago(1_000)}),
        json!({"id": "new-2", "service": "api", "severity": "error", "message": "fresh two", "timestamp": ms_ago(0)}),
    ]
    .map(|event| event.to_string() + "\n")
    .concat();
    let answer = node
        .post("/api/v1/logs")
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    node.wait_for_stored(2).await;
    // Before expiry has run: search, stats and metrics show only what is within an hour.
    let found = node.get_json("/api/v1/logs/search?q=stale&limit=100").await;
    assert_eq!(found["events"].as_array().unwrap().len(), 0, "{found}");
    let found = node.get_json("/api/v1/logs/search?limit=100").await;
    let ids: Vec<&str> = found["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["new-2", "new-1"]);
    let stats = node.get_json("/api/v1/logs/stats").await;
    let rows = stats["rows"].as_array().unwrap();
    assert!(rows.iter().all(|row| row["service"] == "api"), "{stats}");
    assert_eq!(
        rows.iter()
            .map(|row| row["count"].as_i64().unwrap())
            .sum::<i64>(),
        2
    );
    // Expiry (every 10 s) removes them, counts in step.
    let db = node.db_path();
    eventually(
        "the old events removed",
        Duration::from_secs(40),
        || async {
            let now = stored(&db);
            now.rows == 2 && now.severity_sum == 2
        },
    )
    .await;
    let held = stored(&db);
    assert!(held.ids.contains_key("new-1") && held.ids.contains_key("new-2"));
    let metrics = node
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line == "logmesh_store_rows_expired_total 3"),
        "{metrics}"
    );
}
