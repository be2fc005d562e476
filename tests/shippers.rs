//! Senders that were not written for logmesh, unchanged: Python's standard
//! `logging.handlers.HTTPHandler` posting log records to `POST /event`, and JSON lines of any
//! shape (Docker's json-file logs) posted to `POST /api/v1/logs` with a field mapping, embedded
//! and through a cluster. Plain form-encoded text (`curl --data`) keeps being stored as text.

mod common;

use common::cluster::TestCluster;
use common::databases::{Server, TestDatabase};
use common::services::nats_url;
use common::{TestNode, event_log_lines, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::process::Command;

/// Logs through Python's own HTTPHandler: one record per line of `records`
/// (`level|message|args as a Python expression`), to `url_path` on `host`.
const HTTP_HANDLER: &str = r#"
import logging, logging.handlers, sys
host, url_path, logger_name = sys.argv[1], sys.argv[2], sys.argv[3]
credentials = ("python", sys.argv[4]) if len(sys.argv) > 4 else None
logger = logging.getLogger(logger_name)
logger.propagate = False
logger.setLevel(logging.DEBUG)
logger.addHandler(
    logging.handlers.HTTPHandler(host, url_path, method="POST", credentials=credentials))
logger.warning("user %s has %d items, %r", "alice", 3, "x")
logger.info("100% plain")
logger.error("%(who)s failed after %(ms).1f ms", {"who": "checkout", "ms": 12.345})
logger.debug("args that do not fit: %s %s", "only-one-given-below"[:4])
"#;

/// Runs the script off the runtime: the node under test serves from the same runtime.
async fn run_http_handler(host: &str, url_path: &str, logger: &str) {
    run_http_handler_with(host, url_path, logger, &[]).await;
}

/// The same with more arguments: a token, sent as the password of Basic credentials.
async fn run_http_handler_with(host: &str, url_path: &str, logger: &str, extra: &[&str]) {
    let output = Command::new("python3")
        .args(["-c", HTTP_HANDLER, host, url_path, logger])
        .args(extra)
        .output()
        .await
        .expect("run python3");
    // The last record's args do not fit its message: HTTPHandler sends it all the same (it
    // posts the record's fields; nothing formats them on the client).
    assert!(
        output.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The stored events of `service`, oldest first.
async fn events_of(node_url: &str, service: &str) -> Vec<Value> {
    let page: Value = reqwest::get(format!(
        "{node_url}/api/v1/logs/search?service={service}&limit=100"
    ))
    .await
    .expect("search")
    .json()
    .await
    .expect("search JSON");
    let mut events = page["events"].as_array().expect("events").clone();
    events.reverse();
    events
}

fn host_of(url: &str) -> &str {
    url.trim_start_matches("http://")
}

#[tokio::test]
async fn pythons_http_handler_records_are_stored_formatted() {
    needs!(Python3);
    let node = TestNode::start(|_| {}).await;
    run_http_handler(host_of(&node.url), "/event", "shop.db").await;
    node.wait_for_stored(4).await;
    let events = events_of(&node.url, "shop.db").await;
    let summary: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["severity"].as_str().unwrap(),
                e["message"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("warn", "user alice has 3 items, 'x'"),
            ("info", "100% plain"),
            ("error", "checkout failed after 12.3 ms"),
            ("debug", "args that do not fit: %s %s"),
        ]
    );
    let first = &events[0]["attributes"];
    assert_eq!(first["funcName"], "<module>");
    assert!(first["lineno"].as_i64().unwrap() > 0, "{first}");
    assert_eq!(first["threadName"], "MainThread");
    assert_eq!(events[3]["attributes"]["args"], "('only',)");
    // The record's own time, not the arrival's.
    let at = events[0]["timestamp"].as_str().unwrap();
    assert!(at.starts_with("20"), "{at}");

    // A service in the URL wins over the logger name, which is kept.
    run_http_handler(host_of(&node.url), "/event?service=shop", "shop.payments").await;
    node.wait_for_stored(8).await;
    let named = events_of(&node.url, "shop").await;
    assert_eq!(named.len(), 4);
    assert_eq!(named[0]["attributes"]["logger"], "shop.payments");
}

#[tokio::test]
async fn pythons_http_handler_sends_the_token_as_basic_credentials() {
    needs!(Python3);
    let node = TestNode::start(|config| config.api_token = Some("py-token".into())).await;
    run_http_handler_with(host_of(&node.url), "/event", "wrong.token", &["not-it"]).await;
    run_http_handler_with(host_of(&node.url), "/event", "right.token", &["py-token"]).await;
    let stats = || async {
        node.get("/api/v1/logs/stats")
            .bearer_auth("py-token")
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    eventually(
        "the records sent with the token",
        Duration::from_secs(20),
        || async { stats().await["total"] == 4 },
    )
    .await;
    let rows = stats().await["rows"].clone();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|row| row["service"] == "right.token"),
        "{rows}"
    );
}

#[tokio::test]
async fn form_encoded_text_is_still_stored_as_text() {
    let node = TestNode::start(|_| {}).await;
    // What `curl --data 'disk almost full'` sends.
    for body in [
        "disk almost full",
        "name=x&msg=not a record: no level nor time",
    ] {
        let response = node
            .post("/event?service=db")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    node.wait_for_stored(2).await;
    let messages: Vec<String> = events_of(&node.url, "db")
        .await
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        messages,
        [
            "disk almost full",
            "name=x&msg=not a record: no level nor time"
        ]
    );

    // A record with a bad field, or with a severity the record contradicts, changes nothing.
    let record = "name=x&msg=m&args=()&levelname=INFO&created=";
    for (path, body, expected) in [
        ("/event", format!("{record}tomorrow"), "`created`"),
        ("/event", format!("{record}2000000000000"), "`created`"),
        (
            "/event?severity=error",
            format!("{record}1795428900"),
            "its own level",
        ),
        (
            "/event?service=a%20b",
            format!("{record}1795428900"),
            "query parameter `service`",
        ),
        (
            "/event",
            "name=a b&msg=m&args=()&levelname=INFO&created=1".to_owned(),
            "`name`",
        ),
    ] {
        let response = node
            .post(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let error: Value = response.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
    }
    assert_eq!(node.stats_total().await, 2);
}

/// Lines as Docker's json-file log driver writes them.
fn docker_lines(n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({
                "log": format!("GET /item/{i} 200\n"),
                "stream": if i % 2 == 0 { "stdout" } else { "stderr" },
                "time": format!("2026-11-23T10:15:{:02}.123456789Z", i % 60),
            })
            .to_string()
                + "\n"
        })
        .collect()
}

#[tokio::test]
async fn json_lines_of_any_shape_are_mapped_by_the_query() {
    let node = TestNode::start(|_| {}).await;
    let response = node
        .post("/api/v1/logs?_msg_field=log&_time_field=time&service=web")
        .body(docker_lines(50))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], 50);
    node.wait_for_stored(50).await;
    let events = events_of(&node.url, "web").await;
    assert_eq!(events.len(), 50);
    let first = events
        .iter()
        .find(|e| e["message"] == "GET /item/0 200\n")
        .expect("line 0");
    assert_eq!(first["timestamp"], "2026-11-23T10:15:00.123456Z");
    assert_eq!(first["attributes"], json!({"stream": "stdout"}));

    // A JSON logger's fields by their usual names, nested ones by dotted name.
    let response = node
        .post("/api/v1/logs?_severity_field=log.level&_service_field=service.name")
        .body(r#"{"message":"slow","service":{"name":"api"},"log":{"level":"warning"},"ms":812}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    node.wait_for_stored(51).await;
    let api = events_of(&node.url, "api").await;
    assert_eq!(api[0]["severity"], "warn");
    assert_eq!(api[0]["attributes"], json!({"ms": 812}));

    // Bad mappings and documents that do not map are refused whole.
    let bad = [
        ("/api/v1/logs?_msg_field=", docker_lines(2), "`_msg_field`"),
        (
            "/api/v1/logs?_msg_field=a,,b",
            docker_lines(2),
            "`_msg_field`",
        ),
        (
            "/api/v1/logs?_msg_fields=log",
            docker_lines(2),
            "_msg_fields",
        ),
        ("/api/v1/logs?service=a%20b", docker_lines(2), "`service`"),
        (
            "/api/v1/logs?_msg_field=message&service=web",
            docker_lines(2),
            "line 1: no message",
        ),
        ("/api/v1/logs?_msg_field=log", docker_lines(2), "no service"),
        (
            "/api/v1/logs?_msg_field=log&service=web",
            docker_lines(2) + "{\"log\":\"x\",\"time\":\"later\"}\n",
            "line 3",
        ),
    ];
    for (path, body, expected) in bad {
        let response = node.post(path).body(body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let error: Value = response.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{path}: {message}");
    }
    assert_eq!(node.stats_total().await, 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shippers_reach_every_node_of_a_cluster() {
    needs!(Nats, Postgres, Python3);
    let database = TestDatabase::create(Server::Postgres).await;
    let cluster = TestCluster::start(3, &nats_url(), database.url(), &[]);
    run_http_handler(host_of(&cluster.nodes[1].url()), "/event", "cluster.py").await;
    let response = cluster
        .client
        .post(format!(
            "{}/api/v1/logs?_msg_field=log&_time_field=time&service=docker",
            cluster.nodes[2].url()
        ))
        .body(docker_lines(10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    for node in &cluster.nodes {
        eventually(
            &format!("14 events in {}'s event log", node.name),
            Duration::from_secs(30),
            || async {
                let lines = event_log_lines(&node.event_log_dir());
                let count =
                    |service: &str| lines.iter().filter(|l| l["service"] == service).count();
                count("cluster.py") == 4 && count("docker") == 10
            },
        )
        .await;
    }
    // The store writer commits on its own schedule, not with the event logs.
    eventually("every event stored", Duration::from_secs(30), || async {
        cluster.stored().await.ids.len() == 14
    })
    .await;
    let stored = cluster.stored().await;
    assert_eq!(stored.ids.len(), 14);
    assert!(stored.ids.values().all(|n| *n == 1));
}
