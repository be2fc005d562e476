//! Retention of stored events (`--retention`): queries never show events past it, even before
//! expiry removes them; expiry removes them with `service_severity` in step; events that
//! arrive already past it are refused the way each protocol refuses an item. (The store
//! adapters' own expiry is in tests/store.rs's conformance suite, on every backend.)

mod common;

use common::{TestNode, eventually, metrics_text, sample_value, stored};
use logmesh::syslog::SyslogListen;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn ms_ago(ms: i64) -> i64 {
    logmesh::event::now_us() / 1000 - ms
}

async fn post_ndjson(node: &TestNode, events: &[Value]) -> (u16, String) {
    let body: String = events
        .iter()
        .map(|event| event.to_string() + "\n")
        .collect();
    post_ndjson_text(node, body).await
}

async fn post_ndjson_text(node: &TestNode, body: String) -> (u16, String) {
    let answer = node
        .post("/api/v1/logs")
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

/// Two NDJSON events, `fresh` stamped now and `late` at `late_ms`.
fn fresh_and_late(late_ms: i64) -> [Value; 2] {
    [
        json!({"id": "fresh", "service": "api", "message": "now"}),
        json!({"id": "late", "service": "api", "message": "then", "timestamp": late_ms}),
    ]
}

/// An Elasticsearch bulk request of a fresh document and one stamped `late_ms`: the answer.
async fn bulk_fresh_and_late(node: &TestNode, late_ms: i64) -> Value {
    let bulk = format!(
        "{}\n{}\n{}\n{}\n",
        json!({"create": {"_index": "api"}}),
        json!({"message": "fresh bulk", "@timestamp": ms_ago(0)}),
        json!({"create": {"_index": "api"}}),
        json!({"message": "late bulk", "@timestamp": late_ms}),
    );
    let answer = node
        .post("/_bulk")
        .header("content-type", "application/x-ndjson")
        .body(bulk)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer.json().await.unwrap()
}

async fn search_ids(node: &TestNode) -> Vec<String> {
    let found = node.get_json("/api/v1/logs/search?limit=100").await;
    found["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_the_retention_are_hidden_at_once_and_removed_soon() {
    // 10 s: events 9 s old when sent are within it, and past it a second later, while the
    // others stay within it for 10 s more.
    let node = TestNode::start(|config| {
        config.retention = Some(Duration::from_secs(10));
    })
    .await;
    let (status, body) = post_ndjson(
        &node,
        &[
            json!({"id": "old-1", "service": "cron", "severity": "error", "message": "stale one", "timestamp": ms_ago(9_000)}),
            json!({"id": "old-2", "service": "cron", "severity": "info", "message": "stale two", "timestamp": ms_ago(9_001)}),
            json!({"id": "new-1", "service": "api", "severity": "info", "message": "fresh one", "timestamp": ms_ago(0)}),
        ],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    node.wait_for_stored(3).await;
    // Past the cutoff, not removed yet: search, stats and metrics agree.
    eventually("the old events hidden", Duration::from_secs(5), || async {
        search_ids(&node).await == ["new-1"]
    })
    .await;
    let stats = node.get_json("/api/v1/logs/stats").await;
    assert_eq!(stats["rows"].as_array().unwrap().len(), 1, "{stats}");
    assert_eq!(stats["rows"][0]["service"], "api", "{stats}");
    let stale = node.get_json("/api/v1/logs/search?q=stale").await;
    assert_eq!(stale["events"].as_array().unwrap().len(), 0, "{stale}");
    // A search that ends before the cutoff finds nothing; it is not refused.
    let before = node
        .get_json("/api/v1/logs/search?until=2020-01-01T00:00:00Z")
        .await;
    assert_eq!(before["events"].as_array().unwrap().len(), 0, "{before}");
    // Expiry (every 10 s) removes them, counts in step.
    let db = node.db_path();
    eventually(
        "the old events removed",
        Duration::from_secs(40),
        || async {
            let held = stored(&db);
            !held.ids.contains_key("old-1") && !held.ids.contains_key("old-2")
        },
    )
    .await;
    let held = stored(&db);
    assert_eq!(held.rows, held.severity_sum);
    let metrics = metrics_text(&node.url).await;
    let expired = sample_value(&metrics, AGED_OUT);
    assert!(expired >= 2, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_arrive_past_the_retention_are_refused_as_each_protocol_refuses_an_item() {
    let node = TestNode::start(|config| {
        config.retention = Some(Duration::from_secs(3600));
        config.syslog.listen = vec![SyslogListen::parse("tcp://127.0.0.1:0").unwrap()];
    })
    .await;
    let two_hours_ago = ms_ago(2 * 3600 * 1000);
    // NDJSON: the request is refused whole, naming the item and the setting.
    let (status, body) = post_ndjson(&node, &fresh_and_late(two_hours_ago)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("--retention"), "{body}");
    assert!(
        body.contains("line 2") || body.contains("item 2") || body.contains("[1]"),
        "{body}"
    );
    // Elasticsearch bulk: that document refused, the others stored.
    let answer = bulk_fresh_and_late(&node, two_hours_ago).await;
    assert_eq!(answer["errors"], true, "{answer}");
    assert_eq!(answer["items"][0]["create"]["status"], 201, "{answer}");
    assert_eq!(answer["items"][1]["create"]["status"], 400, "{answer}");
    assert!(
        answer["items"][1]["create"]["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("--retention"),
        "{answer}"
    );
    // Syslog cannot refuse: the message is kept at its arrival time, its own timestamp kept.
    let tcp = node.node.as_ref().unwrap().syslog_listeners()[0].addr;
    let mut stream = tokio::net::TcpStream::connect(tcp).await.unwrap();
    stream
        .write_all(b"<14>1 2020-01-01T00:00:00Z h vault - - - very late\n")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    node.wait_for_stored(2).await;
    let found = node.get_json("/api/v1/logs/search?service=vault").await;
    let event = &found["events"][0];
    assert_eq!(event["message"], "very late", "{found}");
    assert!(
        event["attributes"]["syslog.timestamp"]
            .as_str()
            .unwrap()
            .starts_with("2020-01-01"),
        "{found}"
    );
    assert_eq!(node.stats_total().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_figures_are_in_the_metrics_and_the_node_stats() {
    let node = TestNode::start(|_| {}).await;
    let (status, body) = post_ndjson(
        &node,
        &[
            json!({"service": "api", "message": "one", "timestamp": ms_ago(60_000)}),
            json!({"service": "api", "message": "two"}),
        ],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    node.wait_for_stored(2).await;
    let stats = node.get_json("/api/v1/node/stats").await;
    let storage = &stats["storage"];
    assert_eq!(storage["store_rows"], 2, "{stats}");
    assert!(storage["store_bytes"].as_u64().unwrap() > 0, "{stats}");
    assert!(storage["disk_free_bytes"].as_u64().unwrap() > 0, "{stats}");
    let oldest = storage["oldest_event_ms"].as_i64().unwrap();
    assert!(
        (ms_ago(61_000)..ms_ago(59_000)).contains(&oldest),
        "{stats}"
    );
    assert!(storage.get("error").is_none(), "{stats}");
    eventually("the event log written", Duration::from_secs(10), || async {
        node.get_json("/api/v1/node/stats").await["storage"]["event_log_bytes"]
            .as_u64()
            .unwrap()
            > 0
    })
    .await;
    let metrics = metrics_text(&node.url).await;
    for gauge in [
        "logmesh_store_bytes",
        "logmesh_store_rows",
        "logmesh_store_oldest_event_timestamp_seconds",
        "logmesh_event_log_bytes",
        "logmesh_disk_free_bytes",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {gauge} gauge\n{gauge} ")),
            "{gauge}: {metrics}"
        );
    }
    assert!(metrics.contains("\nlogmesh_store_rows 2\n"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_figure_that_cannot_be_read_is_left_out_and_said_why() {
    let node = TestNode::start(|_| {}).await;
    let (status, body) = post_ndjson(&node, &[json!({"service": "api", "message": "one"})]).await;
    assert_eq!(status, 202, "{body}");
    node.wait_for_stored(1).await;
    // The event log directory replaced by a file: its size cannot be listed.
    let dir = node.event_log_dir();
    let aside = dir.with_extension("aside");
    std::fs::rename(&dir, &aside).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();

    let stats = node.get_json("/api/v1/node/stats").await;
    let storage = &stats["storage"];
    let error = storage["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("event log: "), "{stats}");
    assert!(storage.get("event_log_bytes").is_none(), "{stats}");
    assert_eq!(
        storage["store_rows"], 1,
        "the other figures still answer: {stats}"
    );
    let metrics = metrics_text(&node.url).await;
    assert!(!metrics.contains("logmesh_event_log_bytes"), "{metrics}");
    assert!(metrics.contains("\nlogmesh_store_rows 1\n"), "{metrics}");

    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&aside, &dir).unwrap();
}

/// `count` NDJSON events `{prefix}-{i}` stamped `ts_ms`.
fn batch(prefix: &str, count: usize, ts_ms: i64) -> String {
    (0..count)
        .map(|i| {
            let service = ["api", "db", "auth"][i % 3];
            let severity = ["info", "warn", "error"][i % 3];
            let message = format!("{prefix} event {i} {}", "x".repeat(100));
            json!({"id": format!("{prefix}-{i}"), "service": service, "severity": severity,
                   "message": message, "timestamp": ts_ms})
            .to_string()
                + "\n"
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_a_large_expiry_restarts_consistent_and_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let args = ["--retention", "60s", "--flush-interval", "50ms"];
    let mut node = common::NodeProcess::spawn(data.path(), &args, &[]);
    let client = reqwest::Client::new();
    let post = |url: String, body: String| {
        let client = client.clone();
        async move {
            client
                .post(format!("{url}/api/v1/logs"))
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    // 150,000 events stamped 50 s before they are sent: within the 60 s when sent, past it
    // 10 s later.
    for round in 0..150 {
        let status = post(
            node.url.clone(),
            batch(&format!("old{round}"), 1_000, ms_ago(50_000)),
        )
        .await;
        assert_eq!(status, 202, "round {round}");
    }
    let db = data.path().join("logmesh.db");
    // Expiry starts within 10 s of the events passing the cutoff; kill the node mid-way.
    eventually("expiry under way", Duration::from_secs(90), || async {
        let expired = rows_expired(&node.url).await;
        expired > 0 && stored(&db).rows > 0
    })
    .await;
    node.kill9();
    let held = stored(&db);
    assert_eq!(held.rows, held.severity_sum, "consistent at the kill");
    assert!(
        held.rows > 0,
        "killed after the expiry ended: make the backlog larger"
    );
    // Restarted: expiry goes on, new events are taken meanwhile, and nothing acknowledged
    // is lost; the counts agree with the rows at every look.
    let node = common::NodeProcess::spawn(data.path(), &args, &[]);
    let mut fresh = 0;
    for round in 0..10 {
        let status = post(
            node.url.clone(),
            batch(&format!("new{round}"), 1_000, ms_ago(0)),
        )
        .await;
        assert_eq!(status, 202);
        fresh += 1_000;
        let held = stored(&db);
        assert_eq!(held.rows, held.severity_sum, "consistent during expiry");
    }
    eventually(
        "the backlog removed, the new events kept",
        Duration::from_secs(120),
        || async {
            let held = stored(&db);
            assert_eq!(held.rows, held.severity_sum, "consistent during expiry");
            held.rows == fresh && held.ids.keys().all(|id| id.starts_with("new"))
        },
    )
    .await;
}

async fn rows_expired(url: &str) -> u64 {
    sample_value(&metrics_text(url).await, AGED_OUT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_one_node_at_a_time_expires() {
    needs!(Nats, Postgres);
    let database =
        common::databases::TestDatabase::create(common::databases::Server::Postgres).await;
    let cluster = common::cluster::TestCluster::start(
        3,
        &common::services::nats_url(),
        database.url(),
        &["--retention", "60s"],
    );
    let client = reqwest::Client::new();
    // Stamped 55 s before they are sent: within the 60 s when sent, past it 5 s later.
    for round in 0..3 {
        let status = client
            .post(format!("{}/api/v1/logs", cluster.nodes[round].url()))
            .header("content-type", "application/x-ndjson")
            .body(batch(&format!("old{round}"), 1_000, ms_ago(55_000)))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 202);
    }
    let urls: Vec<String> = cluster.nodes.iter().map(|node| node.url()).collect();
    eventually(
        "the 3,000 events expired",
        Duration::from_secs(90),
        || async {
            let mut total = 0;
            for url in &urls {
                total += rows_expired(url).await;
            }
            total == 3_000
        },
    )
    .await;
    let mut by_node = Vec::new();
    for url in &urls {
        by_node.push(rows_expired(url).await);
    }
    assert_eq!(
        by_node.iter().filter(|expired| **expired > 0).count(),
        1,
        "one node expired them all: {by_node:?}"
    );
    let stats: Value = client
        .get(format!("{}/api/v1/logs/stats", urls[1]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["rows"].as_array().unwrap().len(), 0, "{stats}");
}

const AGED_OUT: &str = r#"logmesh_store_rows_expired_total{reason="age"}"#;
const SIZED_OUT: &str = r#"logmesh_store_rows_expired_total{reason="size"}"#;
const EXPIRY_ROUNDS: &str = "logmesh_store_expiry_rounds_total";

/// 30,000 events in batches stamped oldest first, into a store capped at `cap` bytes: the
/// oldest are removed, the newest kept, the counts in step, and once under the cap nothing more
/// goes (PostgreSQL and InnoDB keep their files' size after a removal).
async fn the_size_cap_removes_the_oldest_events(database: Option<&str>, cap: u64) {
    let node = TestNode::start(|config| {
        config.max_store_bytes = Some(cap);
        if let Some(url) = database {
            config.database = logmesh::store::DatabaseUrl::parse(url).unwrap();
        }
    })
    .await;
    const BATCHES: usize = 30;
    for round in 0..BATCHES {
        let body = batch(
            &format!("b{round:02}"),
            1_000,
            ms_ago(((BATCHES - round) * 1_000) as i64),
        );
        let (status, answer) = post_ndjson_text(&node, body).await;
        assert_eq!(status, 202, "batch {round}: {answer}");
    }
    let held = || async {
        match database {
            Some(url) => common::cluster::stored_sql(url).await,
            None => stored(&node.db_path()),
        }
    };
    let store_bytes = || async {
        let stats = node.get_json("/api/v1/node/stats").await;
        stats["storage"]["store_bytes"].as_u64().unwrap()
    };
    // Every event is either stored or counted as removed for the size; SQLite's file, which
    // shrinks as events go (FTS5's segments less than the rows), is under the cap.
    eventually(
        "events removed for the size, the rest stored",
        Duration::from_secs(90),
        || async {
            let removed = sample_value(&metrics_text(&node.url).await, SIZED_OUT);
            removed > 0
                && held().await.rows as u64 + removed == (BATCHES * 1_000) as u64
                && (database.is_some() || store_bytes().await <= cap)
        },
    )
    .await;
    // Two more rounds of expiry remove nothing more from PostgreSQL and MariaDB, whose files
    // keep their size (the runaway the cap's row estimate prevents). SQLite's FTS5 index
    // records deletions and merges them later, so its file may pass the cap once more and
    // lose a few more of the oldest events.
    let metrics = metrics_text(&node.url).await;
    let (removed, rounds) = (
        sample_value(&metrics, SIZED_OUT),
        sample_value(&metrics, EXPIRY_ROUNDS),
    );
    eventually(
        "two more expiry rounds",
        Duration::from_secs(40),
        || async { sample_value(&metrics_text(&node.url).await, EXPIRY_ROUNDS) >= rounds + 2 },
    )
    .await;
    let metrics = metrics_text(&node.url).await;
    if database.is_some() {
        assert_eq!(sample_value(&metrics, SIZED_OUT), removed, "{metrics}");
    }
    assert_eq!(sample_value(&metrics, AGED_OUT), 0, "{metrics}");
    let held = held().await;
    assert_eq!(held.rows, held.severity_sum, "counts in step");
    assert!(held.rows >= 1_000, "the cap left {} events", held.rows);
    // The newest kept: every batch after the oldest one kept is whole.
    let mut per_batch = [0; BATCHES];
    for id in held.ids.keys() {
        per_batch[id[1..3].parse::<usize>().unwrap()] += 1;
    }
    let oldest_kept = per_batch.iter().position(|n| *n > 0).unwrap();
    assert!(oldest_kept > 0, "nothing old removed: {per_batch:?}");
    assert!(
        per_batch[oldest_kept + 1..].iter().all(|n| *n == 1_000),
        "{per_batch:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_cap_removes_the_oldest_events_on_sqlite() {
    the_size_cap_removes_the_oldest_events(None, 4 * 1024 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_cap_removes_the_oldest_events_on_postgres() {
    needs!(Postgres);
    let database =
        common::databases::TestDatabase::create(common::databases::Server::Postgres).await;
    the_size_cap_removes_the_oldest_events(Some(database.url()), 8 * 1024 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_cap_removes_the_oldest_events_on_mariadb() {
    needs!(Mysql);
    let database = common::databases::TestDatabase::create(common::databases::Server::Mysql).await;
    the_size_cap_removes_the_oldest_events(Some(database.url()), 4 * 1024 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_late_events_expire_events_past_the_retention_are_acknowledged_and_counted_not_stored()
{
    let node = TestNode::start(|config| {
        config.retention = Some(Duration::from_secs(3600));
        config.late_events = logmesh::intake::LateEvents::Expire;
    })
    .await;
    let two_hours_ago = ms_ago(2 * 3600 * 1000);
    // NDJSON: accepted whole; the late one is not stored.
    let (status, body) = post_ndjson(&node, &fresh_and_late(two_hours_ago)).await;
    assert_eq!(status, 202, "{body}");
    // Elasticsearch bulk: both documents created, as far as the sender knows.
    let answer = bulk_fresh_and_late(&node, two_hours_ago).await;
    assert_eq!(answer["errors"], false, "{answer}");
    // Loki push of only a late entry: 204, nothing queued.
    let late_ns = (two_hours_ago * 1_000_000).to_string();
    let answer = node
        .post("/loki/api/v1/push")
        .json(&json!({"streams": [{"stream": {"service_name": "api"},
                                   "values": [[late_ns, "late loki"]]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 204);
    node.wait_for_stored(2).await;
    let metrics = metrics_text(&node.url).await;
    assert_eq!(
        sample_value(&metrics, "logmesh_events_expired_on_arrival_total"),
        3,
        "{metrics}"
    );
    let held = stored(&node.db_path());
    assert_eq!(held.rows, 2, "{held:?}");
    assert!(held.ids.contains_key("fresh") && !held.ids.contains_key("late"));
    let found = node.get_json("/api/v1/logs/search?q=late").await;
    assert_eq!(found["events"].as_array().unwrap().len(), 0, "{found}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_lease_is_taken_back_after_a_restart_and_handed_over_on_release() {
    needs!(Nats);
    let client = async_nats::connect(common::services::nats_url())
        .await
        .unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let name = format!("lease_{}", uuid::Uuid::now_v7().simple());
    let (bucket, _) =
        logmesh::nats::open_kv_with_ttl(&jetstream, &name, "test", Duration::from_secs(30))
            .await
            .unwrap();
    let mut a = logmesh::nats::KvLease::new(bucket.clone(), "expiry", "node-a");
    let mut b = logmesh::nats::KvLease::new(bucket.clone(), "expiry", "node-b");
    assert!(a.hold().await);
    assert!(!b.hold().await, "held by node-a");
    assert!(a.hold().await, "renewed");
    // node-a restarts: its new process takes its own entry back without waiting 30 s.
    let mut a_again = logmesh::nats::KvLease::new(bucket.clone(), "expiry", "node-a");
    assert!(a_again.hold().await);
    assert!(!b.hold().await);
    // Stopping gives it up: node-b takes it at its next look.
    a_again.release().await;
    assert!(b.hold().await);
    assert!(!a_again.hold().await, "held by node-b");
    jetstream.delete_key_value(&name).await.unwrap();
}
