//! Asynchronous work over HTTP: the seed's curl flow, de-duplication, every kind, bad
//! submissions, retries up to the limit, the TTL, the CLI, and in a three-node cluster a job
//! whose node is killed with -9 mid-export finishing on another node.

mod common;

use common::cluster::TestCluster;
use common::databases::{Server, TestDatabase};
use common::services::nats_url;
use common::{TestNode, cli, eventually};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::HashSet;
use std::time::Duration;

const FOO: &str = "ACBD18DB4CC2F85CEDEF654FCCC4A4D8";
/// Generous: processes share two cores with NATS and the database.
const DEADLINE: Duration = Duration::from_secs(60);

async fn submit(client: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    common::post_json(client, &format!("{url}/api/v1/work"), &body).await
}

/// Waits until the node at `url` says it is ready.
async fn ready(client: &reqwest::Client, url: &str) {
    eventually(&format!("{url} to be ready"), DEADLINE, || async {
        client
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

/// Batch `batch` of 5,000 events for the long exports, ids `e{n}`, as NDJSON.
fn export_lines(batch: usize) -> String {
    (0..5000)
        .map(|i| {
            let n = batch * 5000 + i;
            format!(
                "{}\n",
                json!({"id": format!("e{n}"), "service": "export",
                       "message": format!("line {n} of the long export")})
            )
        })
        .collect()
}

async fn status(client: &reqwest::Client, url: &str, callback: &str) -> (u16, Value) {
    let response = client
        .get(format!("{url}/api/v1/work/{callback}"))
        .send()
        .await
        .expect("the node answers");
    let code = response.status().as_u16();
    (code, response.json().await.expect("JSON"))
}

async fn result(client: &reqwest::Client, url: &str, callback: &str) -> (u16, String, String) {
    let response = client
        .get(format!("{url}/api/v1/work/{callback}/result"))
        .send()
        .await
        .expect("the node answers");
    let code = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (code, content_type, response.text().await.unwrap())
}

/// Polls the job until it is worked or failed; returns every status seen, in order, and the
/// final record.
async fn follow(client: &reqwest::Client, url: &str, callback: &str) -> (Vec<String>, Value) {
    let seen: RefCell<Vec<String>> = RefCell::default();
    let last = RefCell::new(Value::Null);
    eventually(&format!("job {callback} to end"), DEADLINE, || async {
        let (code, record) = status(client, url, callback).await;
        assert_eq!(code, 200, "{record}");
        let now = record["status"].as_str().unwrap().to_owned();
        let mut seen = seen.borrow_mut();
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        *last.borrow_mut() = record;
        now == "worked" || now == "failed"
    })
    .await;
    (seen.into_inner(), last.into_inner())
}

/// Waits until an export job is running (`with_progress`: and has written some of its result,
/// which reaches the record at each renewal of the lease); returns the worker's name. Fails if
/// the job ends first: the export must be long enough to be interrupted.
async fn export_under_way(
    client: &reqwest::Client,
    url: &str,
    callback: &str,
    with_progress: bool,
) -> String {
    let worker = RefCell::new(None);
    eventually("the export to be under way", DEADLINE, || async {
        let (_, record) = status(client, url, callback).await;
        assert_ne!(
            record["status"], "worked",
            "the export ended before it could be interrupted: make it longer"
        );
        let progress = record["progress"].as_u64().unwrap_or(0);
        if record["status"] == "working" && (progress > 0 || !with_progress) {
            *worker.borrow_mut() = record["worker"].as_str().map(str::to_owned);
        }
        worker.borrow().is_some()
    })
    .await;
    worker.into_inner().unwrap()
}

/// Statuses only move forward (a retry may go back to pending).
fn assert_moves_forward(seen: &[String]) {
    let order = ["accepted", "pending", "working", "worked"];
    let ranks: Vec<usize> = seen
        .iter()
        .map(|s| order.iter().position(|o| o == s).expect("a known status"))
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}

async fn ingest(node: &TestNode, lines: &[Value]) {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let response = node
        .post("/api/v1/logs")
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    node.wait_for_stored(lines.len() as i64).await;
}

fn events() -> Vec<Value> {
    let mut lines = vec![
        json!({"id": "f1", "service": "api", "severity": "warn", "message": "foo happened",
               "timestamp": "2026-11-23T10:00:00Z"}),
        json!({"id": "f2", "service": "db", "severity": "error", "message": "the foo failed",
               "timestamp": "2026-11-23T10:00:01Z"}),
    ];
    for i in 0..30 {
        let service = ["api", "db", "web"][i % 3];
        let severity = ["info", "error"][i % 2];
        lines.push(
            json!({"id": format!("b{i}"), "service": service, "severity": severity,
            "message": format!("bar {i}"), "timestamp": format!("2026-11-23T11:00:{i:02}Z")}),
        );
    }
    lines
}

#[tokio::test]
async fn the_seeds_curl_flow_works_and_the_record_expires_after_its_ttl() {
    let node = TestNode::start(|config| config.work.ttl = Duration::from_secs(2)).await;
    ingest(&node, &events()).await;
    let client = &node.client;

    let (code, accepted) = submit(client, &node.url, json!({"data": "foo"})).await;
    assert_eq!(code, 202, "{accepted}");
    assert_eq!(
        accepted,
        json!({"accepted_by": "test-node", "callback": FOO, "data": "foo", "status": "accepted"})
    );
    let (seen, record) = follow(client, &node.url, FOO).await;
    assert_moves_forward(&seen);
    assert_eq!(record["status"], "worked", "{record}");
    assert_eq!(record["attempts"], 1);
    assert_eq!(record["kind"], "search");
    assert_eq!(record["worker"], "test-node");
    assert_eq!(record["result_items"], 2);
    assert!(record["finished_at"].is_string() && record["started_at"].is_string());

    let (code, content_type, body) = result(client, &node.url, FOO).await;
    assert_eq!((code, content_type.as_str()), (200, "application/json"));
    let found: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = found["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["f2", "f1"], "newest first");
    assert_eq!(found["truncated"], false);

    // Lower-case callbacks are the same job.
    let (code, _) = status(client, &node.url, &FOO.to_lowercase()).await;
    assert_eq!(code, 200);

    eventually("the record to expire", DEADLINE, || async {
        status(client, &node.url, FOO).await.0 == 404
    })
    .await;
    let (code, _, body) = result(client, &node.url, FOO).await;
    assert_eq!(code, 404, "{body}");
    let results = node.config.work_dir().join("results");
    eventually(
        "the expired result file to be deleted",
        DEADLINE,
        || async { std::fs::read_dir(&results).unwrap().next().is_none() },
    )
    .await;
    // Expired work runs again when submitted again.
    let (code, again) = submit(client, &node.url, json!({"data": "foo"})).await;
    assert_eq!((code, again["status"].as_str()), (202, Some("accepted")));
    let (_, record) = follow(client, &node.url, FOO).await;
    assert_eq!(record["status"], "worked");
}

#[tokio::test]
async fn identical_work_is_done_once() {
    let node = TestNode::start(|_| {}).await;
    ingest(&node, &events()).await;
    let client = &node.client;
    let body =
        json!({"kind": "count", "data": {"by": ["service"], "since": "2026-11-23T00:00:00Z"}});
    let (_, first) = submit(client, &node.url, body.clone()).await;
    let callback = first["callback"].as_str().unwrap().to_owned();
    let (_, done) = follow(client, &node.url, &callback).await;
    // The same work, spelled differently.
    let (code, second) = submit(
        client,
        &node.url,
        json!({"data": {"since": "2026-11-23T00:00:00Z", "by": ["service"]}, "kind": "count"}),
    )
    .await;
    assert_eq!(code, 202);
    assert_eq!(second["callback"], callback.as_str());
    assert_eq!(second["status"], "worked", "answered from the record");
    let (_, record) = status(client, &node.url, &callback).await;
    assert_eq!(record["attempts"], 1, "not run again");
    assert_eq!(record["started_at"], done["started_at"]);
    // Different work gets another callback.
    let (_, other) = submit(client, &node.url, json!({"kind": "count", "data": {}})).await;
    assert_ne!(other["callback"], callback.as_str());
}

/// Submits, waits for `worked`, and fetches the result.
async fn run_to_result(client: &reqwest::Client, url: &str, body: Value) -> (u16, String, String) {
    let (code, accepted) = submit(client, url, body).await;
    assert_eq!(code, 202, "{accepted}");
    let callback = accepted["callback"].as_str().unwrap().to_owned();
    let (_, record) = follow(client, url, &callback).await;
    assert_eq!(record["status"], "worked", "{record}");
    result(client, url, &callback).await
}

#[tokio::test]
async fn every_kind_produces_its_result() {
    let node = TestNode::start(|_| {}).await;
    ingest(&node, &events()).await;
    let client = &node.client;
    let run = |body: Value| run_to_result(client, &node.url, body);

    let (_, content_type, body) = run(json!({"kind": "count", "data": {
        "by": ["service", "severity"], "since": "2026-11-23T11:00:00Z"}}))
    .await;
    assert_eq!(content_type, "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"groups": [
            {"service": "api", "severity": "info", "count": 5},
            {"service": "api", "severity": "error", "count": 5},
            {"service": "db", "severity": "info", "count": 5},
            {"service": "db", "severity": "error", "count": 5},
            {"service": "web", "severity": "info", "count": 5},
            {"service": "web", "severity": "error", "count": 5},
        ], "total": 30})
    );
    let (_, _, body) = run(json!({"kind": "count", "data": {"by": [], "severity": "error"}})).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"groups": [{"count": 16}], "total": 16})
    );

    let (_, _, body) = run(json!({"data": {"q": "bar", "service": "web", "limit": 3}})).await;
    let found: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = found["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b29", "b26", "b23"]);
    assert_eq!(found["truncated"], true);

    let (_, content_type, body) = run(json!({"kind": "export", "data": {"service": "api"}})).await;
    assert_eq!(content_type, "application/x-ndjson");
    let exported: Vec<Value> = body
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(exported.len(), 11, "f1 and ten bars");
    assert!(exported.iter().all(|e| e["service"] == "api"));
    assert_eq!(exported[0]["id"], "b27", "newest first");
    let (_, _, body) = run(json!({"kind": "export", "data": "nothing-matches-this"})).await;
    assert_eq!(body, "");
}

#[tokio::test]
async fn bad_submissions_are_refused_and_record_nothing() {
    let node = TestNode::start(|_| {}).await;
    let client = &node.client;
    for (body, says) in [
        (
            json!({"kind": "delete", "data": "x"}),
            "unknown kind `delete`",
        ),
        (json!({"data": 42}), "a search takes a keyword string"),
        (
            json!({"kind": "count", "data": "x"}),
            "a count takes an object",
        ),
        (
            json!({"kind": "count", "data": {"by": ["node"]}}),
            "`by` may hold",
        ),
        (json!({"data": {"since": "later"}}), "`since`"),
        (json!({"data": {"limit": 0}}), "`limit`"),
        (json!({}), "`data` is missing"),
    ] {
        let (code, answer) = submit(client, &node.url, body.clone()).await;
        assert_eq!(code, 400, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
        let callback =
            logmesh::work::submission::callback(logmesh::work::Kind::Search, &body["data"]);
        assert_eq!(status(client, &node.url, &callback).await.0, 404);
    }
    let response = node
        .post("/api/v1/work")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = node
        .post("/api/v1/work")
        .body(vec![b' '; 100 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let (code, answer) = status(client, &node.url, "not-a-callback").await;
    assert_eq!(code, 400, "{answer}");
    let (code, answer) = status(client, &node.url, FOO).await;
    assert_eq!(code, 404, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains(FOO));
    let (code, _, _) = result(client, &node.url, FOO).await;
    assert_eq!(code, 404);
}

/// On a node whose queue holds at most two jobs and that runs none (`--work-concurrency 0`,
/// so nothing drains the queue): two jobs wait, a third is 503 with `Retry-After` and leaves
/// no record, and resubmitting a waiting job still answers its record.
async fn a_full_work_queue_refuses_more(client: &reqwest::Client, url: &str) {
    for keyword in ["one", "two"] {
        let (code, accepted) = submit(client, url, json!({ "data": keyword })).await;
        assert_eq!(code, 202, "{accepted}");
    }
    let response = client
        .post(format!("{url}/api/v1/work"))
        .json(&json!({"data": "three"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "overloaded", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("2 jobs are already queued"), "{message}");
    let three = logmesh::work::submission::callback(logmesh::work::Kind::Search, &json!("three"));
    let (code, record) = status(client, url, &three).await;
    assert_eq!(code, 404, "a refused job leaves no record: {record}");

    let (code, again) = submit(client, url, json!({"data": "one"})).await;
    assert_eq!(code, 202, "{again}");
    assert_eq!(again["status"], "pending", "{again}");
    let one = again["callback"].as_str().unwrap();
    let (code, record) = status(client, url, one).await;
    assert_eq!((code, record["status"].as_str()), (200, Some("pending")));
}

#[tokio::test]
async fn a_full_work_queue_answers_503_and_records_nothing() {
    let node = TestNode::start(|config| {
        config.work.concurrency = 0;
        config.work.max_queued = 2;
    })
    .await;
    a_full_work_queue_refuses_more(&node.client, &node.url).await;
}

#[tokio::test]
async fn a_full_cluster_work_queue_answers_503_and_records_nothing() {
    needs!(Nats, Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let cluster = TestCluster::start(
        1,
        &nats_url(),
        database.url(),
        &["--work-concurrency", "0", "--work-max-queued", "2"],
    );
    let url = cluster.nodes[0].url();
    ready(&cluster.client, &url).await;
    a_full_work_queue_refuses_more(&cluster.client, &url).await;
}

#[tokio::test]
async fn a_job_that_keeps_failing_fails_after_the_retry_limit() {
    let node = TestNode::start(|config| {
        config.work.max_attempts = 3;
        config.work.retry_backoff = Duration::from_millis(50);
    })
    .await;
    ingest(&node, &events()).await;
    // The result directory becomes a file: every attempt fails to store its result.
    let results = node.config.work_dir().join("results");
    std::fs::remove_dir_all(&results).unwrap();
    std::fs::write(&results, "in the way").unwrap();

    let client = &node.client;
    let (_, accepted) = submit(client, &node.url, json!({"data": "foo"})).await;
    let (seen, record) = follow(client, &node.url, FOO).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["attempts"], 3);
    let error = record["error"].as_str().unwrap();
    assert!(
        error.starts_with("gave up after 3 attempt(s): cannot store the result"),
        "{error}"
    );
    assert!(seen.contains(&"failed".to_owned()), "{seen:?} {accepted}");
    let (code, _, body) = result(client, &node.url, FOO).await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("failed after 3 attempt(s)"), "{body}");

    // Once the disk is fixed, submitting the work again starts it over.
    std::fs::remove_file(&results).unwrap();
    std::fs::create_dir(&results).unwrap();
    let (code, again) = submit(client, &node.url, json!({"data": "foo"})).await;
    assert_eq!((code, again["status"].as_str()), (202, Some("accepted")));
    let (_, record) = follow(client, &node.url, FOO).await;
    assert_eq!(record["status"], "worked", "{record}");
    assert_eq!(record["attempts"], 1);
}

#[tokio::test]
async fn the_work_command_submits_waits_and_fetches() {
    let node = TestNode::start(|_| {}).await;
    ingest(&node, &events()).await;
    let url = node.url.as_str();
    let (code, out, err) = cli(&["work", "submit", "--url", url, "foo"]).await;
    assert_eq!(
        (code, out.as_str()),
        (Some(0), format!("{FOO}\n").as_str()),
        "{err}"
    );
    let (code, out, err) = cli(&["work", "result", "--url", url, "--wait", FOO]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\"foo happened\""), "{out}");
    let (code, out, _) = cli(&["work", "status", "--url", url, FOO]).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["status"],
        "worked"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.ndjson");
    let (code, out, err) = cli(&[
        "work",
        "submit",
        "--url",
        url,
        "--kind",
        "export",
        "--wait",
        "-o",
        file.to_str().unwrap(),
        r#"{"service":"db"}"#,
    ])
    .await;
    assert_eq!((code, out.as_str()), (Some(0), ""), "{err}");
    assert!(err.contains(": worked"), "progress on stderr: {err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 11);

    let (code, _, err) = cli(&["work", "submit", "--url", url, "--kind", "count", "x"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("a count takes an object"), "{err}");
    let (code, _, err) = cli(&[
        "work",
        "status",
        "--url",
        url,
        FOO.replace('A', "0").as_str(),
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(err.contains("404"), "{err}");
    let (code, _, _) = cli(&["work", "submit", "--url", url, "--kind", "sort", "x"]).await;
    assert_eq!(code, Some(2));
    let (code, _, err) = cli(&["work", "status", "--url", "http://127.0.0.1:9", FOO]).await;
    assert_eq!(code, Some(1));
    assert!(err.starts_with("logmesh work: http://127.0.0.1:9"), "{err}");
}

/// The seed's flow through a cluster: submitted on one node, followed on another, fetched
/// from a third, de-duplicated through any, gone everywhere after the TTL.
#[tokio::test]
async fn cluster_nodes_share_jobs_and_their_ttl() {
    needs!(Nats, Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let cluster = TestCluster::start(3, &nats_url(), database.url(), &["--work-ttl", "3s"]);
    let client = &cluster.client;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    let lines: String = events().iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(cluster.post_ndjson(0, lines).await, 202);
    eventually("events stored", DEADLINE, || async {
        cluster.stored().await.rows == 32
    })
    .await;

    let (code, accepted) = submit(client, &urls[0], json!({"data": "foo"})).await;
    assert_eq!(code, 202, "{accepted}");
    assert_eq!(accepted["callback"], FOO);
    assert_eq!(accepted["accepted_by"], "node-0");
    let (seen, record) = follow(client, &urls[1], FOO).await;
    assert_moves_forward(&seen);
    assert_eq!(record["status"], "worked", "{record}");
    let (code, _, body) = result(client, &urls[2], FOO).await;
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["events"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (_, again) = submit(client, &urls[2], json!({"data": "foo"})).await;
    assert_eq!(again["status"], "worked");
    assert_eq!(again["accepted_by"], "node-0", "the original record");

    let (_, count) = submit(
        client,
        &urls[1],
        json!({"kind": "count", "data": {"by": ["severity"]}}),
    )
    .await;
    let callback = count["callback"].as_str().unwrap();
    let (_, record) = follow(client, &urls[0], callback).await;
    assert_eq!(record["status"], "worked");
    let (_, _, body) = result(client, &urls[2], callback).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["total"], 32);

    for url in &urls {
        eventually("the record to expire everywhere", DEADLINE, || async {
            status(client, url, FOO).await.0 == 404
        })
        .await;
        assert_eq!(result(client, url, FOO).await.0, 404);
    }
}

const LONG_EXPORT_EVENTS: usize = 150_000;

/// A three-node cluster (one worker each, the given lease) with 150,000 stored events and an
/// export of all of them under way (`with_progress`: some of it written already): the database guard, the cluster, the job's callback and
/// the index of the node running it.
async fn long_export_under_way(
    lease: &str,
    with_progress: bool,
) -> (TestDatabase, TestCluster, String, usize) {
    let database = TestDatabase::create(Server::Postgres).await;
    let cluster = TestCluster::start(
        3,
        &nats_url(),
        database.url(),
        &["--work-lease", lease, "--work-concurrency", "1"],
    );
    let client = cluster.client.clone();
    let url = cluster.nodes[0].url();
    for batch in 0..(LONG_EXPORT_EVENTS / 5000) {
        let lines = export_lines(batch);
        assert_eq!(cluster.post_ndjson(batch % 3, lines).await, 202);
    }
    eventually("events stored", Duration::from_secs(120), || async {
        cluster.stored().await.rows == LONG_EXPORT_EVENTS as i64
    })
    .await;

    let body = json!({"kind": "export", "data": {"service": "export"}});
    let (code, accepted) = submit(&client, &url, body).await;
    assert_eq!(code, 202, "{accepted}");
    let callback = accepted["callback"].as_str().unwrap().to_owned();
    let running_on = export_under_way(&client, &url, &callback, with_progress).await;
    let (code, _, body) = result(&client, &url, &callback).await;
    assert_eq!(code, 409, "no result while it runs: {body}");
    assert!(body.contains("is working"), "{body}");
    let index = cluster
        .nodes
        .iter()
        .position(|n| n.name == running_on)
        .unwrap();
    (database, cluster, callback, index)
}

/// The export ended `worked` on another node than `gone`, after `attempts`, with every event
/// exactly once.
async fn assert_export_finished_elsewhere(
    cluster: &TestCluster,
    callback: &str,
    gone: usize,
    attempts: u32,
) {
    let client = &cluster.client;
    let survivor = cluster.nodes[(gone + 1) % 3].url();
    let (_, record) = follow(client, &survivor, callback).await;
    assert_eq!(record["status"], "worked", "{record}");
    assert_eq!(record["attempts"], attempts, "{record}");
    assert_ne!(
        record["worker"].as_str(),
        Some(cluster.nodes[gone].name.as_str())
    );
    let (code, _, body) = result(client, &survivor, callback).await;
    assert_eq!(code, 200);
    let ids: Vec<String> = body
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), LONG_EXPORT_EVENTS);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        LONG_EXPORT_EVENTS,
        "no event twice"
    );
}

#[tokio::test]
async fn a_job_whose_node_is_killed_finishes_on_another() {
    needs!(Nats, Postgres);
    let (_database, mut cluster, callback, running_on) = long_export_under_way("2s", true).await;
    cluster.kill9(running_on);
    // The lease runs out, the job is delivered again, and its second attempt runs elsewhere.
    assert_export_finished_elsewhere(&cluster, &callback, running_on, 2).await;
}

#[tokio::test]
async fn a_job_whose_node_stops_is_handed_back_at_once() {
    needs!(Nats, Postgres);
    // A lease far longer than the test may take: only a hand-back lets another node start.
    let (_database, mut cluster, callback, running_on) = long_export_under_way("10m", false).await;
    cluster.terminate(running_on);
    // The cut attempt is not counted: the job's one attempt is the one that finished.
    assert_export_finished_elsewhere(&cluster, &callback, running_on, 1).await;
}

#[tokio::test]
async fn a_cluster_job_that_keeps_failing_fails_after_the_retry_limit() {
    needs!(Nats, Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let cluster = TestCluster::start(
        2,
        &nats_url(),
        database.url(),
        &["--work-max-attempts", "3", "--work-retry-backoff", "100ms"],
    );
    let client = &cluster.client;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    // Both nodes are up (their workers have opened the result store) before it goes away.
    for url in &urls {
        ready(client, url).await;
    }
    let nats = async_nats::connect(nats_url()).await.unwrap();
    async_nats::jetstream::new(nats)
        .delete_object_store(format!("{}_work_results", cluster.stream))
        .await
        .unwrap();

    let (code, accepted) = submit(client, &urls[0], json!({"kind": "count", "data": {}})).await;
    assert_eq!(code, 202, "{accepted}");
    let callback = accepted["callback"].as_str().unwrap().to_owned();
    let (seen, record) = follow(client, &urls[1], &callback).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["attempts"], 3, "{record}");
    let error = record["error"].as_str().unwrap();
    assert!(
        error.starts_with("gave up after 3 attempt(s): cannot store the result"),
        "{error}"
    );
    assert!(seen.contains(&"failed".to_owned()));
    let (code, _, body) = result(client, &urls[0], &callback).await;
    assert_eq!(code, 409, "{body}");
}

#[tokio::test]
async fn an_embedded_job_cut_short_by_kill_9_finishes_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", common::services::free_port());
    // A short lease: the record's progress is written at each renewal (a third of it).
    let args = ["--work-lease", "1s"];
    let mut node = common::NodeProcess::spawn_as("solo", &listen, dir.path(), &args, &[]);
    let client = reqwest::Client::new();
    const EVENTS: usize = 150_000;
    for batch in 0..(EVENTS / 5000) {
        let lines = export_lines(batch);
        let response = client
            .post(format!("{}/api/v1/logs", node.url))
            .header("content-type", "application/x-ndjson")
            .body(lines)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let body = json!({"kind": "export", "data": {"service": "export"}});
    eventually("events stored", Duration::from_secs(120), || async {
        let (_, _, text) = run_count(&client, &node.url).await;
        text.contains(&format!("\"total\":{EVENTS}"))
    })
    .await;

    let (code, accepted) = submit(&client, &node.url, body).await;
    assert_eq!(code, 202, "{accepted}");
    let callback = accepted["callback"].as_str().unwrap().to_owned();
    export_under_way(&client, &node.url, &callback, true).await;
    node.kill9();
    let restarted = common::NodeProcess::spawn_as("solo", &listen, dir.path(), &args, &[]);
    // The old client's pooled connections died with the node.
    let client = reqwest::Client::new();

    let (_, record) = follow(&client, &restarted.url, &callback).await;
    assert_eq!(record["status"], "worked", "{record}");
    assert_eq!(record["attempts"], 2, "{record}");
    let (code, _, body) = result(&client, &restarted.url, &callback).await;
    assert_eq!(code, 200);
    let ids: HashSet<&str> = body
        .lines()
        .map(|line| {
            let start = line.find("\"id\":\"").unwrap() + 6;
            &line[start..start + line[start..].find('"').unwrap()]
        })
        .collect();
    assert_eq!(body.lines().count(), EVENTS);
    assert_eq!(ids.len(), EVENTS, "no event twice");
    // The cut attempt's partial file went at the restart; only attempt 2's result remains.
    let leftovers: Vec<String> = std::fs::read_dir(dir.path().join("work/results"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&callback) || name.ends_with(".part"))
        .collect();
    assert_eq!(leftovers, [format!("{callback}.2")]);
}

/// A count of everything, run as a job: the stored total, through the work path itself.
async fn run_count(client: &reqwest::Client, url: &str) -> (u16, String, String) {
    // A fresh `until` each time, so each poll is new work rather than the same record.
    let until = logmesh::event::now_us() / 1000 + 1;
    run_to_result(
        client,
        url,
        json!({"kind": "count", "data": {"by": [], "until": until}}),
    )
    .await
}

/// Runs an export of `data` to its end; answers the final record.
async fn export_record(client: &reqwest::Client, url: &str, data: Value) -> Value {
    let (code, accepted) = submit(client, url, json!({"kind": "export", "data": data})).await;
    assert_eq!(code, 202, "{accepted}");
    let callback = accepted["callback"].as_str().unwrap().to_owned();
    follow(client, url, &callback).await.1
}

/// A result larger than a job may keep, then one the result store has no room left for: each
/// fails at once (no retry could fit it) with an error naming its limit, and keeps nothing.
async fn results_past_their_limits_fail_and_keep_nothing(client: &reqwest::Client, url: &str) {
    let record = export_record(client, url, json!({})).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["attempts"], 1, "{record}");
    let error = record["error"].as_str().unwrap();
    assert!(error.contains("--work-max-result-bytes"), "{error}");
    // Fits alone: kept.
    let record = export_record(client, url, json!({"service": "web"})).await;
    assert_eq!(record["status"], "worked", "{record}");
    // Fits alone, but not beside the one kept.
    let record = export_record(client, url, json!({"service": "db"})).await;
    assert_eq!(record["status"], "failed", "{record}");
    let error = record["error"].as_str().unwrap();
    assert!(error.contains("--work-max-results-bytes"), "{error}");
}

#[tokio::test]
async fn export_results_are_bounded_per_job_and_in_all() {
    let node = TestNode::start(|config| {
        // The 32 events export to about 4 KB, the 11 of a service to about 1.3 KB.
        config.work.max_result_bytes = 1500;
        config.work.max_results_bytes = 2000;
    })
    .await;
    ingest(&node, &events()).await;
    results_past_their_limits_fail_and_keep_nothing(&node.client, &node.url).await;
    let results = node.config.work_dir().join("results");
    let kept: Vec<String> = std::fs::read_dir(&results)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept.len(), 1, "only the result that fits: {kept:?}");
}

#[tokio::test]
async fn cluster_export_results_are_bounded_per_job_and_in_all() {
    needs!(Nats, Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let cluster = TestCluster::start(
        1,
        &nats_url(),
        database.url(),
        &[
            "--work-max-result-bytes",
            "1500",
            "--work-max-results-bytes",
            "2000",
        ],
    );
    let url = cluster.nodes[0].url();
    ready(&cluster.client, &url).await;
    let lines: String = events().iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(cluster.post_ndjson(0, lines).await, 202);
    eventually("events stored", DEADLINE, || async {
        cluster.stored().await.rows == 32
    })
    .await;
    results_past_their_limits_fail_and_keep_nothing(&cluster.client, &url).await;
}
