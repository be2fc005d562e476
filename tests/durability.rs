//! Durability of the real binary: `kill -9` mid-stream, replay at start-up, flush on SIGTERM.
//! "202 means durable": every acknowledged event ends up stored exactly once.

mod common;

use common::{NodeProcess, event_log_lines, eventually, ndjson_line, stored};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn post_batch(client: &reqwest::Client, url: &str, ids: &[String]) -> bool {
    let body: String = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            ndjson_line(
                id,
                ["api", "db", "auth"][i % 3],
                ["info", "warn", "error"][i % 3],
                "payload",
            )
        })
        .collect();
    matches!(
        client.post(format!("{url}/api/v1/logs")).body(body).send().await,
        Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED
    )
}

fn assert_stored_exactly_once(data_dir: &Path, acknowledged: &HashSet<String>) {
    let db = stored(&data_dir.join("logmesh.db"));
    for id in acknowledged {
        assert_eq!(
            db.ids.get(id),
            Some(&1),
            "acknowledged event {id} is stored once"
        );
    }
    assert_eq!(
        db.rows, db.severity_sum,
        "service_severity agrees with service_logs"
    );
    let lines = event_log_lines(&data_dir.join("eventlog"));
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for line in &lines {
        *per_id.entry(line["id"].as_str().unwrap()).or_default() += 1;
    }
    for id in acknowledged {
        assert_eq!(
            per_id.get(id.as_str()),
            Some(&1),
            "event {id} is in the event log once"
        );
    }
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "event log seqs increase"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::spawn(
        dir.path(),
        &["--batch-size", "700", "--flush-interval", "100ms"],
        &[],
    );
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let mut clients = Vec::new();
    for client_no in 0..4 {
        let url = node.url.clone();
        let acknowledged = acknowledged.clone();
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for round in 0.. {
                if client_no == 3 {
                    // One client sends single raw events and keeps the ids the node generated.
                    let response = client
                        .post(format!("{url}/event?service=raw"))
                        .body(format!("raw {round}"))
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => {
                            let body: serde_json::Value = match r.json().await {
                                Ok(b) => b,
                                Err(_) => return,
                            };
                            acknowledged
                                .lock()
                                .unwrap()
                                .insert(body["id"].as_str().unwrap().to_owned());
                        }
                        _ => return,
                    }
                } else {
                    let ids: Vec<String> = (0..50)
                        .map(|i| format!("c{client_no}-{round}-{i}"))
                        .collect();
                    if !post_batch(&client, &url, &ids).await {
                        return;
                    }
                    acknowledged.lock().unwrap().extend(ids);
                }
            }
        }));
    }
    eventually(
        "20000 acknowledged events",
        Duration::from_secs(60),
        || async { acknowledged.lock().unwrap().len() >= 20_000 },
    )
    .await;
    node.kill9();
    for client in clients {
        client.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let restarted = NodeProcess::spawn(dir.path(), &["--flush-interval", "100ms"], &[]);
    let db_path = dir.path().join("logmesh.db");
    eventually(
        "every acknowledged event stored after the restart",
        Duration::from_secs(60),
        || async {
            let db = stored(&db_path);
            acknowledged.iter().all(|id| db.ids.contains_key(id))
        },
    )
    .await;
    eventually(
        "every acknowledged event in the event log",
        Duration::from_secs(60),
        || async {
            let logged: HashSet<String> = event_log_lines(&dir.path().join("eventlog"))
                .iter()
                .map(|l| l["id"].as_str().unwrap().to_owned())
                .collect();
            acknowledged.is_subset(&logged)
        },
    )
    .await;
    drop(restarted);
    assert_stored_exactly_once(dir.path(), &acknowledged);
}

#[tokio::test]
async fn start_up_replays_what_a_crash_left_in_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    // The writers would wait an hour, so the events are only in the queue when the node dies.
    let mut node = NodeProcess::spawn(
        dir.path(),
        &["--batch-size", "1000000", "--flush-interval", "1h"],
        &[],
    );
    let ids: Vec<String> = (0..100).map(|i| format!("replay-{i}")).collect();
    assert!(post_batch(&reqwest::Client::new(), &node.url, &ids).await);
    assert_eq!(stored(&dir.path().join("logmesh.db")).rows, 0);
    node.kill9();

    let restarted = NodeProcess::spawn(dir.path(), &["--flush-interval", "50ms"], &[]);
    let db_path = dir.path().join("logmesh.db");
    eventually(
        "the replayed events stored",
        Duration::from_secs(30),
        || async { stored(&db_path).rows == 100 },
    )
    .await;
    eventually(
        "the replayed events logged",
        Duration::from_secs(30),
        || async { event_log_lines(&dir.path().join("eventlog")).len() == 100 },
    )
    .await;
    drop(restarted);
    assert_stored_exactly_once(dir.path(), &ids.into_iter().collect());
}

#[tokio::test]
async fn sigterm_flushes_the_queue_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::spawn(
        dir.path(),
        &[],
        &[("BATCHSIZE", "1000000"), ("FLUSHINTERVAL", "3600")],
    );
    let ids: Vec<String> = (0..100).map(|i| format!("term-{i}")).collect();
    assert!(post_batch(&reqwest::Client::new(), &node.url, &ids).await);
    assert_eq!(
        stored(&dir.path().join("logmesh.db")).rows,
        0,
        "BATCHSIZE/FLUSHINTERVAL held the batch"
    );
    let status = node.terminate();
    assert!(status.success(), "exit status {status:?}");
    let db = stored(&dir.path().join("logmesh.db"));
    assert_eq!((db.rows, db.severity_sum), (100, 100));
    assert_stored_exactly_once(dir.path(), &ids.into_iter().collect());
}
