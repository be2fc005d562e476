//! The Elasticsearch bulk API, driven by the official Python client (PyPI's `elasticsearch`,
//! installed by scripts/services.sh): `helpers.bulk` of 10,000 documents, a bulk with one bad
//! document (per item, as Elasticsearch answers), the version document the client reads, bodies
//! refused whole, and a bulk through one node of a cluster reaching every node's event log; and
//! by rsyslog's `omelasticsearch` (Debian), shipping a log file with the configuration
//! docs/sending-logs.md gives.

mod common;

use common::TestNode;
use common::cluster::TestCluster;
use common::databases::{Server, TestDatabase};
use common::services::{nats_url, start_rsyslogd};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::Command;

/// Sends with the official client; prints one JSON line with what the client saw.
const CLIENT: &str = r#"
import json, sys
from elasticsearch import Elasticsearch, helpers
url, mode = sys.argv[1], sys.argv[2]
es = Elasticsearch(url, request_timeout=60, http_compress=(mode == "gzip"))
def docs(n, bad=()):
    for i in range(n):
        source = {"message": f"GET /item/{i} 200", "@timestamp": "2026-11-23T10:15:00.5Z",
                  "log": {"level": "warn" if i % 2 else "info"}, "http": {"status": 200}}
        if i in bad:
            del source["message"]
        yield {"_index": "web", "_id": f"{mode}-{i}", "_source": source}
if mode == "info":
    print(json.dumps(es.info().body))
elif mode in ("bulk", "gzip"):
    ok, errors = helpers.bulk(es, docs(10_000), chunk_size=2_000)
    print(json.dumps({"ok": ok, "errors": errors}))
elif mode == "one-bad":
    ok, errors = helpers.bulk(es, docs(10, bad={3}), raise_on_error=False)
    print(json.dumps({"ok": ok, "errors": errors}))
"#;

async fn client(url: &str, mode: &str) -> Value {
    let output = Command::new("python3")
        .args(["-c", CLIENT, url, mode])
        .env(
            "PYTHONPATH",
            std::env::var("LOGMESH_TEST_ELASTICSEARCH_PYTHONPATH").unwrap(),
        )
        .output()
        .await
        .expect("run python3");
    assert!(
        output.status.success(),
        "the Elasticsearch client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_elasticsearch_client_bulk_indexes_into_logmesh() {
    needs!(Python3, ElasticsearchClient);
    let node = TestNode::start(|_| {}).await;
    let info = client(&node.url, "info").await;
    assert_eq!(info["tagline"], "You Know, for Search");
    assert!(info["version"]["number"].is_string());

    let sent = client(&node.url, "bulk").await;
    assert_eq!(sent, json!({"ok": 10_000, "errors": []}));
    node.wait_for_stored(10_000).await;
    let stats = node.get_json("/api/v1/logs/stats").await;
    assert_eq!(
        stats["rows"],
        json!([
            {"service": "web", "severity": "info", "count": 5_000},
            {"service": "web", "severity": "warn", "count": 5_000},
        ])
    );
    let page = node
        .get_json("/api/v1/logs/search?q=item&service=web&limit=1")
        .await;
    let event = &page["events"][0];
    assert!(
        event["id"].as_str().unwrap().starts_with("bulk-"),
        "{event}"
    );
    assert_eq!(event["timestamp"], "2026-11-23T10:15:00.5Z");
    assert_eq!(event["attributes"], json!({"http.status": 200}));

    // The same ids again, gzip-compressed: answered, stored once.
    let again = client(&node.url, "gzip").await;
    assert_eq!(again["ok"], 10_000);
    node.wait_for_stored(20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_document_is_reported_and_the_others_are_stored() {
    needs!(Python3, ElasticsearchClient);
    let node = TestNode::start(|_| {}).await;
    let sent = client(&node.url, "one-bad").await;
    assert_eq!(sent["ok"], 9);
    let errors = sent["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    let item = &errors[0]["index"];
    assert_eq!(item["status"], 400);
    assert_eq!(item["_id"], "one-bad-3");
    assert_eq!(item["error"]["type"], "document_parsing_exception");
    assert!(
        item["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("no message"),
        "{item}"
    );
    node.wait_for_stored(9).await;
}

#[tokio::test]
async fn malformed_bulk_bodies_store_nothing() {
    let node = TestNode::start(|_| {}).await;
    let good = "{\"index\":{\"_index\":\"web\"}}\n{\"message\":\"m\"}\n";
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "/_bulk",
            format!("{good}{{\"index\":{{}}}}\n").into_bytes(),
            StatusCode::BAD_REQUEST,
            "no document line",
        ),
        (
            "/_bulk",
            format!("{good}{{\"index\":{{}}}}\n{{\"message\":").into_bytes(),
            StatusCode::BAD_REQUEST,
            "Malformed document",
        ),
        (
            "/_bulk",
            format!("{good}{{\"upsert\":{{}}}}\n{{}}\n").into_bytes(),
            StatusCode::BAD_REQUEST,
            "found [upsert]",
        ),
        (
            "/_bulk",
            b"\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "request body is required",
        ),
        (
            "/_bulk",
            b"\xff\xfe".to_vec(),
            StatusCode::BAD_REQUEST,
            "UTF-8",
        ),
        (
            "/web/_bulk",
            vec![b'x'; 11 << 20],
            StatusCode::PAYLOAD_TOO_LARGE,
            "--max-body-bytes",
        ),
    ];
    for (path, body, status, reason) in cases {
        let response = node.post(path).body(body).send().await.unwrap();
        assert_eq!(response.status(), status, "{path} {reason}");
        assert_eq!(response.headers()["x-elastic-product"], "Elasticsearch");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["status"], status.as_u16());
        let text = error["error"]["reason"].as_str().unwrap();
        assert!(text.contains(reason), "{path}: {text}");
    }
    // Delete and update are refused per item; the index item beside them is stored.
    let response = node
        .client
        .put(format!("{}/logs/_bulk", node.url))
        .body(format!(
            "{{\"delete\":{{\"_id\":\"x\"}}}}\n{{\"update\":{{\"_id\":\"x\"}}}}\n{{\"doc\":{{}}}}\n{good}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["errors"], true);
    let statuses: Vec<(String, i64)> = answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let (action, result) = item.as_object().unwrap().iter().next().unwrap();
            (action.clone(), result["status"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("delete".into(), 400),
            ("update".into(), 400),
            ("index".into(), 201)
        ]
    );
    // Exactly the one: none of the refused bodies above stored anything.
    node.wait_for_stored(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_through_one_node_reaches_every_node() {
    needs!(Nats, Postgres, Python3, ElasticsearchClient);
    let database = TestDatabase::create(Server::Postgres).await;
    let cluster = TestCluster::start(3, &nats_url(), database.url(), &[]);
    let sent = client(&cluster.nodes[1].url(), "one-bad").await;
    assert_eq!(sent["ok"], 9);
    cluster.wait_for_everywhere("web", 9).await;
    let stored = cluster.stored().await;
    assert_eq!(stored.ids.len(), 9);
}

#[tokio::test]
async fn the_version_document_is_for_clients_that_ask_for_json() {
    let node = TestNode::start(|config| config.api_token = Some("es-token".into())).await;
    let response = node
        .get("/")
        .header(
            "accept",
            "application/vnd.elasticsearch+json; compatible-with=8",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-elastic-product"], "Elasticsearch");
    let info: Value = response.json().await.unwrap();
    // Served without the token, as the console's page is: it does not name the node.
    assert_eq!(info["name"], "logmesh");
    let page = node
        .get("/")
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    // The bulk API itself needs the token, as Basic credentials too.
    let body = "{\"index\":{\"_index\":\"web\"}}\n{\"message\":\"m\"}\n";
    let refused = node.post("/_bulk").body(body).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let accepted = node
        .post("/_bulk")
        .basic_auth("elastic", Some("es-token"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::OK);
}

/// The configuration docs/sending-logs.md gives, reading `input` and sending to `port`.
fn rsyslog_config(work: &std::path::Path, input: &std::path::Path, port: u16) -> String {
    format!(
        r#"global(workDirectory="{work}")
module(load="imfile")
module(load="omelasticsearch")
template(name="logmesh" type="list" option.jsonf="on") {{
  property(outname="@timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="service" name="programname" format="jsonf")
  property(outname="severity" name="syslogseverity-text" format="jsonf")
  property(outname="host" name="hostname" format="jsonf")
  property(outname="message" name="msg" format="jsonf")
}}
input(type="imfile" File="{input}" Tag="shop:" Severity="warning")
action(type="omelasticsearch" server="127.0.0.1" serverport="{port}" searchIndex="syslog"
       template="logmesh" bulkmode="on" errorFile="{work}/errors.json")
"#,
        work = work.display(),
        input = input.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_ships_a_file_through_omelasticsearch_unchanged() {
    needs!(Rsyslog);
    let node = TestNode::start(|_| {}).await;
    let port = node.url.rsplit(':').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let input = dir.path().join("in.log");
    let lines: String = (1..=3).map(|i| format!("order {i} paid\n")).collect();
    std::fs::write(&input, lines).unwrap();
    let mut rsyslogd = start_rsyslogd(dir.path(), &rsyslog_config(&work, &input, port));
    node.wait_for_stored(3).await;
    let page = node.get_json("/api/v1/logs/search?service=shop").await;
    let mut messages: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            assert_eq!(event["severity"], "warn", "{event}");
            assert!(event["attributes"]["host"].is_string(), "{event}");
            event["message"].as_str().unwrap()
        })
        .collect();
    messages.sort_unstable();
    assert_eq!(messages, ["order 1 paid", "order 2 paid", "order 3 paid"]);
    assert!(
        !work.join("errors.json").exists(),
        "omelasticsearch reported errors: {}",
        std::fs::read_to_string(work.join("errors.json")).unwrap_or_default()
    );
    rsyslogd.kill().await.unwrap();
}
