//! Counters over HTTP: increments, the Prometheus exposition (checked by PyPI's reference
//! parser), JSON, PromQL queries, bad input, and exact totals under concurrency through a
//! three-node cluster.

mod common;

use common::cluster::TestCluster;
use common::databases::{Server, TestDatabase};
use common::{TestNode, cli};
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};

async fn increment(client: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    common::post_json(client, &format!("{url}/metrics"), &body).await
}

async fn exposition(node: &TestNode) -> String {
    let response = node.get("/metrics").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    response.text().await.unwrap()
}

/// The stored counters' families (and `logmesh_events_total`) of a parsed exposition, after
/// checking that every family of the node's own metrics parsed with its declared type.
fn counter_families(parsed: Value) -> Value {
    let mut counters = Vec::new();
    for family in parsed.as_array().unwrap() {
        let name = family[0].as_str().unwrap();
        assert_ne!(
            family[1], "unknown",
            "{name} parsed without a type: {family}"
        );
        // The stored counters, and the stored events per service and severity (a gauge, as
        // expiry lowers it: its name keeps its `_total`).
        if !name.starts_with("logmesh_") || name == "logmesh_events_total" {
            counters.push(family.clone());
        }
    }
    Value::Array(counters)
}

/// Parses the exposition with prometheus_client's parser: `[(family, type, [(name, labels,
/// value)])]`.
fn parse_with_prometheus_client(text: &str) -> Value {
    let path = std::env::var("LOGMESH_TEST_PYTHONPATH")
        .expect("LOGMESH_TEST_PYTHONPATH is not set: run the tests through scripts/test.sh");
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    out.append([family.name, family.type,
                [[s.name, s.labels, s.value] for s in family.samples]])
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("PYTHONPATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the reference parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn increments_return_the_new_value_and_round_trip_through_the_reference_parser() {
    needs!(PrometheusClient);
    let node = TestNode::start(|_| {}).await;
    let tricky = "quote \" backslash \\ newline \n tab \t ünïcode";
    let (status, body) = increment(
        &node.client,
        &node.url,
        json!({"name": "jobs_total", "labels": {"queue": tricky, "a": "1"}, "by": 5}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], 5);
    let (_, body) = increment(
        &node.client,
        &node.url,
        json!({"name": "jobs_total", "labels": {"a": "1", "queue": tricky}}),
    )
    .await;
    assert_eq!(
        body["value"], 6,
        "by defaults to 1; label order is irrelevant"
    );
    let (_, body) = increment(&node.client, &node.url, json!({"name": "plain", "by": 0})).await;
    assert_eq!(body["value"], 0, "a new counter starts at 0");

    node.post("/api/v1/logs")
        .body(common::ndjson_line("e1", "api", "error", "x"))
        .send()
        .await
        .unwrap();
    node.wait_for_stored(1).await;

    let text = exposition(&node).await;
    let parsed = parse_with_prometheus_client(&text);
    // The node's own metrics are there too, and parse with their types.
    assert!(
        text.contains("logmesh_ingest_events_total{outcome=\"accepted\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("logmesh_batch_events_count{sink=\"store\"}"),
        "{text}"
    );
    assert_eq!(
        counter_families(parsed),
        json!([
            ["jobs", "counter", [["jobs_total", {"a": "1", "queue": tricky}, 6.0]]],
            ["plain", "counter", [["plain_total", {}, 0.0]]],
            ["logmesh_events_total", "gauge",
                [["logmesh_events_total", {"service": "api", "severity": "error"}, 1.0]]]
        ])
    );

    let json: Value = node
        .get("/metrics")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        json["counters"][0],
        json!({"name": "jobs_total", "labels": {"a": "1", "queue": tricky}, "value": 6})
    );
}

#[tokio::test]
async fn bad_increments_are_rejected_and_change_nothing() {
    needs!(PrometheusClient);
    let node = TestNode::start(|_| {}).await;
    let many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("l{i}"), json!("v"))).collect();
    let cases = [
        (json!({"name": "1bad"}), "is not a metric name"),
        (json!({"name": "has-dash"}), "is not a metric name"),
        (json!({"name": "logmesh_mine"}), "reserved"),
        (
            json!({"name": "ok", "by": -1}),
            "`by`: -1 is not an integer",
        ),
        (
            json!({"name": "ok", "by": 1.5}),
            "`by`: 1.5 is not an integer",
        ),
        (
            json!({"name": "ok", "by": "2"}),
            "`by`: \"2\" is not an integer",
        ),
        (
            json!({"name": "ok", "labels": {"bad-label": "v"}}),
            "is not a label name",
        ),
        (json!({"name": "ok", "labels": {"__x": "v"}}), "reserved"),
        (
            json!({"name": "ok", "labels": {"l": 5}}),
            "the body must be",
        ),
        (json!({"name": "ok", "labels": many}), "at most 16"),
        (
            json!({"name": "ok", "labels": {"l": "v".repeat(1025)}}),
            "1026 bytes of label names and values",
        ),
        (json!({"name": "ok", "extra": 1}), "unknown field `extra`"),
        (json!({"labels": {}}), "missing field `name`"),
    ];
    for (body, expected) in cases {
        let (status, error) = increment(&node.client, &node.url, body.clone()).await;
        assert_eq!(status, 400, "{body}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let response = node
        .post("/metrics")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let (status, _) = increment(
        &node.client,
        &node.url,
        json!({"name": "big", "by": i64::MAX}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, error) = increment(&node.client, &node.url, json!({"name": "big"})).await;
    assert_eq!(status, 400);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("largest value")
    );
    // Nothing but `big` exists.
    let parsed = counter_families(parse_with_prometheus_client(&exposition(&node).await));
    assert_eq!(parsed.as_array().unwrap().len(), 2, "{parsed}");
    assert_eq!(parsed[0][0], "big");
}

async fn query(node: &TestNode, expression: &str) -> (u16, Value) {
    let url = reqwest::Url::parse_with_params(
        &format!("{}/metrics/query", node.url),
        &[("expression", expression)],
    )
    .unwrap();
    let response = node.client.get(url).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn queries_answer_in_the_prometheus_api_shape() {
    let node = TestNode::start(|_| {}).await;
    for (code, path, by) in [("200", "/a", 5), ("500", "/a", 1), ("200", "/b", 3)] {
        let body = json!({"name": "req_total", "labels": {"code": code, "path": path}, "by": by});
        assert_eq!(increment(&node.client, &node.url, body).await.0, 200);
    }
    let (status, body) = query(&node, r#"sum by (code) (req_total{path=~"/.*"})"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["resultType"], "vector");
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 2);
    assert_eq!(result[0]["metric"], json!({"code": "200"}));
    assert_eq!(result[0]["value"][1], "8");
    assert!(result[0]["value"][0].as_f64().unwrap() > 1.7e9);
    assert_eq!(result[1]["value"][1], "1");

    let (_, body) = query(&node, r#"req_total{code!="200"}"#).await;
    assert_eq!(
        body["data"]["result"][0]["metric"],
        json!({"__name__": "req_total", "code": "500", "path": "/a"})
    );
    let (_, body) = query(&node, "count without (code) (req_total)").await;
    assert_eq!(body["data"]["result"].as_array().unwrap().len(), 2);
    let (_, body) = query(&node, "avg(req_total)").await;
    assert_eq!(body["data"]["result"][0]["value"][1], "3");

    for (expression, expected) in [
        ("rate(req_total[5m])", "the function `rate`"),
        ("req_total / 2", "a binary operator"),
        ("topk(1, req_total)", "the aggregation `topk`"),
        ("req_total{", "does not parse"),
    ] {
        let (status, body) = query(&node, expression).await;
        assert_eq!(status, 400, "{expression}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{expression}: {message}");
    }
    let response = node.get("/metrics/query").send().await.unwrap();
    assert_eq!(response.status(), 400);
    let response = node
        .get("/metrics/query?expression=x&step=1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn concurrent_increments_through_three_nodes_are_exact() {
    needs!(Nats, Postgres);
    const CLIENTS: usize = 12;
    const INCREMENTS: usize = 40;
    let database = TestDatabase::create(Server::Postgres).await;
    let nats = common::services::nats_url();
    let cluster = TestCluster::start(3, &nats, database.url(), &[]);
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let urls = urls.clone();
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..INCREMENTS {
                let url = &urls[(client + i) % urls.len()];
                let hot = json!({"name": "hot_total", "labels": {"k": "shared"}, "by": 1});
                assert_eq!(increment(&http, url, hot).await.0, 200);
                let own =
                    json!({"name": "own_total", "labels": {"client": client.to_string()}, "by": 2});
                assert_eq!(increment(&http, url, own).await.0, 200);
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    // Read through every node: each sees the same exact values.
    for url in &urls {
        let json: Value = cluster
            .client
            .get(format!("{url}/metrics"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let counters = json["counters"].as_array().unwrap();
        let hot = counters.iter().find(|c| c["name"] == "hot_total").unwrap();
        assert_eq!(hot["value"], (CLIENTS * INCREMENTS) as i64);
        let own: Vec<&Value> = counters
            .iter()
            .filter(|c| c["name"] == "own_total")
            .collect();
        assert_eq!(own.len(), CLIENTS);
        assert!(own.iter().all(|c| c["value"] == (2 * INCREMENTS) as i64));
    }
}

#[tokio::test]
async fn the_counter_command_increments_reads_and_queries() {
    let node = TestNode::start(|_| {}).await;
    let url = node.url.as_str();
    let inc = [
        "counter",
        "inc",
        "--url",
        url,
        "req_total",
        "-l",
        "code=200",
        "-l",
    ];
    let (code, out, err) = cli(&[&inc[..], &["path=/a \"q\"", "--by", "3"]].concat()).await;
    assert_eq!((code, out.as_str()), (Some(0), "3\n"), "{err}");
    let (_, out, _) = cli(&[
        "counter",
        "inc",
        "--url",
        url,
        "req_total",
        "-l",
        "code=500",
    ])
    .await;
    assert_eq!(out, "1\n");
    let (code, out, _) = cli(&["counter", "get", "--url", url]).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        "req_total{code=\"200\",path=\"/a \\\"q\\\"\"} 3\nreq_total{code=\"500\"} 1\n"
    );
    let (_, out, _) = cli(&["counter", "get", "--url", url, "other_total"]).await;
    assert_eq!(out, "");
    let (code, out, _) = cli(&[
        "counter",
        "query",
        "--url",
        url,
        "sum by (code) (req_total)",
    ])
    .await;
    assert_eq!(code, Some(0));
    assert_eq!(out, "{code=\"200\"} 3\n{code=\"500\"} 1\n");

    let (code, _, err) = cli(&["counter", "inc", "--url", url, "1bad"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("is not a metric name"), "{err}");
    let (code, _, err) = cli(&["counter", "query", "--url", url, "rate(x[1m])"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("the function `rate`"), "{err}");
    let (code, _, err) = cli(&["counter", "inc", "--url", url, "ok", "-l", "novalue"]).await;
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = cli(&["counter", "inc", "--url", url, "ok", "--by", "-1"]).await;
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = cli(&["counter", "get", "--url", "http://127.0.0.1:9"]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with("logmesh counter: http://127.0.0.1:9"),
        "{err}"
    );
}

#[tokio::test]
async fn the_counter_benchmark_reports_what_it_stored() {
    let node = TestNode::start(|_| {}).await;
    let url = node.url.as_str();
    let (code, out, err) = cli(&[
        "bench",
        "counter",
        "--url",
        url,
        "--duration",
        "500ms",
        "--connections",
        "4",
        "--keys",
        "3",
        "--json",
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    let report: Value = serde_json::from_str(&out).expect("a JSON report");
    let reported = report["increments"].as_u64().unwrap();
    assert!(reported > 0, "{report}");
    assert_eq!(report["failed"], 0, "{report}");

    let (_, out, _) = cli(&["counter", "get", "--url", url, "bench_increments_total"]).await;
    let stored: u64 = out
        .lines()
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(out.lines().count(), 3, "{out}");
    assert_eq!(stored, reported, "every reported increment is stored once");

    for (bad, says) in [
        ("https://127.0.0.1:1", "plain http only"),
        ("not a url", "not a URL"),
        ("http://127.0.0.1:9", "cannot connect"),
    ] {
        let (code, _, err) = cli(&["bench", "counter", "--url", bad, "--duration", "100ms"]).await;
        assert_eq!(code, Some(1), "{bad}: {err}");
        assert!(err.contains(says), "{bad}: {err}");
    }
}
