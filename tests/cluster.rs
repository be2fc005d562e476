//! The cluster shape with real processes: several `logmesh serve --nats … --database …` nodes
//! on loopback, a real NATS server and real PostgreSQL / MariaDB. Tests that stop NATS or the
//! database start a throwaway instance of their own; the others share the suite's servers on
//! a stream and a database of their own.

mod common;

use common::cluster::TestCluster;
use common::databases::{Server, TestDatabase};
use common::eventually;
use common::services::{NatsServer, Postgres, nats_url};
use reqwest::StatusCode;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Generous: several processes share two cores with NATS and the database.
const CONVERGE: Duration = Duration::from_secs(60);

fn ndjson(ids: &[String]) -> String {
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let severity = ["info", "warn", "error"][i % 3];
            common::ndjson_line(id, &format!("svc-{}", i % 4), severity, "hello")
        })
        .collect()
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Every id in `expected` is in the database exactly once, nothing is there twice, and the
/// counts add up.
async fn assert_stored_exactly_once(cluster: &TestCluster, expected: &BTreeSet<String>) {
    eventually("every event stored", CONVERGE, || async {
        let stored = cluster.stored().await;
        expected.iter().all(|id| stored.ids.contains_key(id))
    })
    .await;
    let stored = cluster.stored().await;
    let twice: Vec<_> = stored.ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    assert_eq!(stored.rows, stored.severity_sum, "the two tables disagree");
}

/// Node `index`'s event log holds every id of `expected`, and no id twice.
async fn assert_logged_exactly_once(
    cluster: &TestCluster,
    index: usize,
    expected: &BTreeSet<String>,
) {
    eventually(
        &format!("node {index}'s event log to hold every event"),
        CONVERGE,
        || async {
            let logged = cluster.event_log_ids(index);
            expected.iter().all(|id| logged.contains_key(id))
        },
    )
    .await;
    let logged = cluster.event_log_ids(index);
    let twice: Vec<_> = logged.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "node {index} logged twice: {twice:?}");
}

async fn three_nodes_store_once_and_log_everywhere(database: TestDatabase) {
    let cluster = TestCluster::start(3, &nats_url(), database.url(), &[]);
    let mut expected = BTreeSet::new();
    for node in 0..3 {
        let batch = ids(&format!("node{node}"), 300);
        assert_eq!(
            cluster.post_ndjson(node, ndjson(&batch)).await,
            StatusCode::ACCEPTED
        );
        expected.extend(batch);
    }
    assert_stored_exactly_once(&cluster, &expected).await;
    assert_eq!(cluster.stored().await.rows, 900);
    for node in 0..3 {
        assert_logged_exactly_once(&cluster, node, &expected).await;
        assert_eq!(cluster.event_log_ids(node).len(), 900);
    }
}

#[tokio::test]
async fn three_nodes_on_postgres_store_once_and_log_everywhere() {
    needs!(Nats, Postgres);
    three_nodes_store_once_and_log_everywhere(TestDatabase::create(Server::Postgres).await).await;
}

#[tokio::test]
async fn three_nodes_on_mariadb_store_once_and_log_everywhere() {
    needs!(Nats, Mysql);
    three_nodes_store_once_and_log_everywhere(TestDatabase::create(Server::Mysql).await).await;
}

async fn members(cluster: &TestCluster, index: usize) -> Vec<serde_json::Value> {
    let body: serde_json::Value = cluster
        .client
        .get(format!("{}/api/v1/cluster", cluster.nodes[index].url()))
        .send()
        .await
        .expect("cluster request")
        .json()
        .await
        .expect("cluster JSON");
    body["members"].as_array().expect("members").clone()
}

fn names(members: &[serde_json::Value]) -> Vec<String> {
    members
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn members_join_heartbeat_leave_and_expire() {
    needs!(Nats, Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let mut cluster = TestCluster::start(3, &nats_url(), database.url(), &["--member-ttl", "2s"]);
    eventually("three members", CONVERGE, || async {
        names(&members(&cluster, 0).await) == ["node-0", "node-1", "node-2"]
    })
    .await;
    let listed = members(&cluster, 1).await;
    for (member, node) in listed.iter().zip(&cluster.nodes) {
        assert_eq!(member["address"], node.url());
        assert_eq!(member["state"], "serving");
        assert_eq!(member["version"], env!("CARGO_PKG_VERSION"));
        assert!(member["started_at"].as_str().unwrap().len() >= 20);
    }

    let first_beat = listed[2]["last_heartbeat"].clone();
    // By name: with a 2 s TTL on a loaded machine, a member may be missing from one listing
    // between a late heartbeat and the next.
    eventually("a newer heartbeat from node-2", CONVERGE, || async {
        members(&cluster, 0)
            .await
            .iter()
            .find(|member| member["name"] == "node-2")
            .is_some_and(|member| member["last_heartbeat"] != first_beat)
    })
    .await;

    // A node that shuts down takes itself out; one that dies goes when its TTL runs out.
    cluster.terminate(1);
    eventually("node-1 gone after it left", CONVERGE, || async {
        names(&members(&cluster, 0).await) == ["node-0", "node-2"]
    })
    .await;
    cluster.kill9(2);
    eventually("node-2 expired", CONVERGE, || async {
        names(&members(&cluster, 0).await) == ["node-0"]
    })
    .await;
    cluster.add_node("node-3");
    eventually("node-3 joined", CONVERGE, || async {
        names(&members(&cluster, 0).await) == ["node-0", "node-3"]
    })
    .await;
}

#[tokio::test]
async fn a_second_live_node_with_the_same_name_is_refused() {
    needs!(Nats, Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let cluster = TestCluster::start(1, &nats_url(), database.url(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_logmesh"))
        .args(["serve", "--listen", "127.0.0.1:0", "--node-name", "node-0"])
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--nats",
            &cluster.nats_url,
            "--database",
            &cluster.database_url,
        ])
        .args(["--nats-stream", &cluster.stream])
        .args(["--nats-subject", &format!("test.{}", cluster.stream)])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("a node named node-0 is already a member"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_stopped_node_catches_up_without_writing_twice() {
    needs!(Nats, Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let mut cluster = TestCluster::start(3, &nats_url(), database.url(), &[]);
    let before = ids("before", 200);
    assert_eq!(
        cluster.post_ndjson(0, ndjson(&before)).await,
        StatusCode::ACCEPTED
    );
    let mut expected: BTreeSet<String> = before.into_iter().collect();
    assert_logged_exactly_once(&cluster, 2, &expected).await;

    cluster.terminate(2);
    let after_stop = ids("while-stopped", 200);
    assert_eq!(
        cluster.post_ndjson(0, ndjson(&after_stop[..100])).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        cluster.post_ndjson(1, ndjson(&after_stop[100..])).await,
        StatusCode::ACCEPTED
    );
    expected.extend(after_stop);
    cluster.start_node(2);
    assert_logged_exactly_once(&cluster, 2, &expected).await;

    // Killed without a chance to acknowledge what it wrote: the file, not the consumer, says
    // where to resume.
    let during_kill = ids("around-kill", 300);
    assert_eq!(
        cluster.post_ndjson(0, ndjson(&during_kill)).await,
        StatusCode::ACCEPTED
    );
    cluster.kill9(2);
    cluster.start_node(2);
    expected.extend(during_kill);
    assert_logged_exactly_once(&cluster, 2, &expected).await;
    assert_eq!(cluster.event_log_ids(2).len(), expected.len());
    assert_stored_exactly_once(&cluster, &expected).await;
    assert_eq!(cluster.stored().await.rows as usize, expected.len());
}

#[tokio::test]
async fn a_writer_killed_mid_batch_leaves_it_to_another_node() {
    needs!(Nats, Postgres);
    use sqlx::Connection;
    let database = TestDatabase::create(Server::Postgres).await;
    let mut cluster =
        TestCluster::start(1, &nats_url(), database.url(), &["--nats-ack-wait", "2s"]);
    // Hold a lock the store writer needs, so that its batch transaction hangs mid-way.
    let mut blocker = sqlx::PgConnection::connect(database.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE service_severity IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let batch = ids("held", 500);
    assert_eq!(
        cluster.post_ndjson(0, ndjson(&batch)).await,
        StatusCode::ACCEPTED
    );
    let watcher = sqlx::PgPool::connect(database.url()).await.unwrap();
    eventually(
        "node-0's writer waiting inside its transaction",
        CONVERGE,
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND datname = current_database()",
            )
            .fetch_one(&watcher)
            .await
            .unwrap();
            waiting > 0
        },
    )
    .await;
    cluster.kill9(0);
    cluster.add_node("node-1");
    sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();
    let expected: BTreeSet<String> = batch.into_iter().collect();
    assert_stored_exactly_once(&cluster, &expected).await;
    assert_eq!(cluster.stored().await.rows, 500);
}

/// Posts batches of fresh ids to the cluster's running nodes, in turn, until stopped;
/// remembers which ids were acknowledged with 202.
struct Loader {
    acknowledged: Arc<Mutex<BTreeSet<String>>>,
    refused: Arc<Mutex<HashMap<u16, usize>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Pause between two requests of the loader: a steady trickle, not a flood.
const LOAD_PACE: Duration = Duration::from_millis(20);

impl Loader {
    fn start(urls: Vec<String>) -> Loader {
        let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
        let refused = Arc::new(Mutex::new(HashMap::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (acked, refusals) = (acknowledged.clone(), refused.clone());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut round = 0usize;
            while !*stopped.borrow() {
                let batch = ids(&format!("load{round}"), 50);
                let url = &urls[round % urls.len()];
                let result = client
                    .post(format!("{url}/api/v1/logs"))
                    .header("content-type", "application/x-ndjson")
                    .body(ndjson(&batch))
                    .send()
                    .await;
                match result.map(|r| r.status()) {
                    Ok(StatusCode::ACCEPTED) => acked.lock().unwrap().extend(batch),
                    Ok(status) => {
                        *refusals.lock().unwrap().entry(status.as_u16()).or_default() += 1
                    }
                    Err(_) => *refusals.lock().unwrap().entry(0).or_default() += 1,
                }
                round += 1;
                tokio::time::sleep(LOAD_PACE).await;
            }
        });
        Loader {
            acknowledged,
            refused,
            stop,
            task,
        }
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    async fn wait_for_more(&self, more: usize) {
        let target = self.acknowledged() + more;
        eventually(
            &format!("{target} acknowledged events"),
            CONVERGE,
            || async { self.acknowledged() >= target },
        )
        .await;
    }

    async fn finish(self) -> (BTreeSet<String>, HashMap<u16, usize>) {
        let _ = self.stop.send(true);
        self.task.await.unwrap();
        let acked = self.acknowledged.lock().unwrap().clone();
        let refused = self.refused.lock().unwrap().clone();
        (acked, refused)
    }
}

async fn status_of(client: &reqwest::Client, url: String) -> u16 {
    client
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn nats_restarted_during_ingest_loses_and_duplicates_nothing() {
    needs!(NatsServer, Postgres);
    let mut nats = NatsServer::start();
    let database = TestDatabase::create(Server::Postgres).await;
    let cluster = TestCluster::start(2, &nats.url(), database.url(), &[]);
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    let loader = Loader::start(urls.clone());
    loader.wait_for_more(500).await;

    nats.stop();
    eventually("readyz failing while NATS is down", CONVERGE, || async {
        status_of(&cluster.client, format!("{}/readyz", urls[0])).await == 503
    })
    .await;
    let refused = cluster.post_ndjson(0, ndjson(&ids("outage", 5))).await;
    assert_eq!(refused, StatusCode::SERVICE_UNAVAILABLE);
    // Requests caught mid-publish are refused too (after the acknowledgement timeout).
    eventually("the loader to be refused", CONVERGE, || async {
        loader.refused.lock().unwrap().contains_key(&503)
    })
    .await;

    nats.start_again();
    eventually("readyz passing again", CONVERGE, || async {
        status_of(&cluster.client, format!("{}/readyz", urls[0])).await == 200
    })
    .await;
    loader.wait_for_more(500).await;
    let (acknowledged, refused) = loader.finish().await;
    assert!(
        refused.contains_key(&503),
        "no 503 during the outage: {refused:?}"
    );
    assert_stored_exactly_once(&cluster, &acknowledged).await;
    for node in 0..2 {
        assert_logged_exactly_once(&cluster, node, &acknowledged).await;
    }
}

#[tokio::test]
async fn database_restarted_during_ingest_loses_and_duplicates_nothing() {
    needs!(Nats, PostgresServer);
    let mut postgres = Postgres::start().await;
    let cluster = TestCluster::start(
        2,
        &nats_url(),
        &postgres.url(),
        &["--queue-max-events", "3000"],
    );
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    let loader = Loader::start(urls.clone());
    loader.wait_for_more(500).await;

    postgres.stop();
    eventually(
        "readyz failing while the database is down",
        CONVERGE,
        || async { status_of(&cluster.client, format!("{}/readyz", urls[1])).await == 503 },
    )
    .await;
    // Ingest goes on into JetStream while the database is away, up to the stream's limits.
    loader.wait_for_more(1000).await;
    eventually("503 once the stream is full", CONVERGE, || async {
        cluster
            .post_ndjson(1, ndjson(&ids(&uuid::Uuid::now_v7().to_string(), 50)))
            .await
            == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;

    postgres.start_again().await;
    loader.wait_for_more(500).await;
    let (acknowledged, _) = loader.finish().await;
    assert_stored_exactly_once(&cluster, &acknowledged).await;
}

#[tokio::test]
async fn a_request_larger_than_a_nats_message_is_stored_once_and_logged_everywhere() {
    needs!(Nats, Postgres);
    // 3,000 events of ~1 KB: about 3 MiB, several of NATS's 1 MiB messages, published as one
    // atomic batch; the consumers read its messages like any others.
    let database = TestDatabase::create(Server::Postgres).await;
    let cluster = TestCluster::start(2, &nats_url(), database.url(), &[]);
    let batch = ids("big", 3_000);
    let body: String = batch
        .iter()
        .map(|id| common::ndjson_line(id, "api", "info", &"x".repeat(1_000)))
        .collect();
    assert_eq!(cluster.post_ndjson(0, body).await, StatusCode::ACCEPTED);
    let expected: BTreeSet<String> = batch.into_iter().collect();
    assert_stored_exactly_once(&cluster, &expected).await;
    assert_eq!(cluster.stored().await.rows, 3_000);
    for node in 0..2 {
        assert_logged_exactly_once(&cluster, node, &expected).await;
        assert_eq!(cluster.event_log_ids(node).len(), 3_000);
    }
}

#[tokio::test]
async fn batch_size_bounds_the_events_per_store_transaction_in_the_cluster_too() {
    needs!(Nats, Postgres);
    // One request of 1,000 events is one JetStream message, fetched whole; with
    // --batch-size 100 the store still writes it 100 events per transaction.
    let database = TestDatabase::create(Server::Postgres).await;
    let cluster = TestCluster::start(1, &nats_url(), database.url(), &["--batch-size", "100"]);
    let batch = ids("sized", 1_000);
    assert_eq!(
        cluster.post_ndjson(0, ndjson(&batch)).await,
        StatusCode::ACCEPTED
    );
    assert_stored_exactly_once(&cluster, &batch.into_iter().collect()).await;
    let stats: serde_json::Value = cluster
        .client
        .get(format!("{}/api/v1/node/stats", cluster.nodes[0].url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let store = stats["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|sink| sink["sink"] == "store")
        .unwrap_or_else(|| panic!("no store writer in {stats}"));
    assert_eq!(store["events"], 1_000, "{stats}");
    assert!(store["batches"].as_u64().unwrap() >= 10, "{stats}");
}

#[tokio::test]
async fn an_event_larger_than_a_nats_message_is_refused_whole() {
    needs!(Nats, Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let cluster = TestCluster::start(1, &nats_url(), database.url(), &[]);
    // Under the body limit (10 MiB), over NATS's max_payload (1 MiB).
    let huge = "x".repeat(2 << 20);
    let body = format!(
        "{}{}",
        common::ndjson_line("small", "api", "info", "fits"),
        common::ndjson_line("huge", "api", "info", &huge)
    );
    let response = cluster
        .client
        .post(format!("{}/api/v1/logs", cluster.nodes[0].url()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "payload_too_large");
    // Nothing of the request was published: a later event is the only one stored.
    let after = ids("after", 1);
    assert_eq!(
        cluster.post_ndjson(0, ndjson(&after)).await,
        StatusCode::ACCEPTED
    );
    assert_stored_exactly_once(&cluster, &after.into_iter().collect()).await;
    assert_eq!(cluster.stored().await.rows, 1);
}
