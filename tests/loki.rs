//! Loki's push API, driven by Loki clients people run, unchanged: winston-loki (npm; it sends
//! snappy-compressed protobuf built from Loki's own `push.proto`, or JSON) and PyPI's
//! python-logging-loki (JSON, both its current and its legacy default form). Then gzip and
//! protobuf bodies built here, every malformed variant refused with nothing stored, and a push
//! through one node of a cluster reaching every node's event log.

mod common;

use common::cluster::TestCluster;
use common::databases::{Server, TestDatabase};
use common::services::nats_url;
use common::tier::js_clients;
use common::{TestNode, eventually};
use logmesh::event::loki::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter};
use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;
use tokio::process::Command;

/// A body the endpoint refuses: what it is, its content type and encoding, the body, and the
/// status and words of the answer.
type RefusedCase = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    StatusCode,
    &'static str,
);

/// Runs tests/js-clients/loki.mjs: winston-loki pushing `count` lines with label `job`.
async fn winston_loki(host: &str, encoding: &str, job: &str, count: usize, token: &str) {
    let output = Command::new("node")
        .current_dir(js_clients())
        .args(["loki.mjs", host, encoding, job, &count.to_string(), token])
        .output()
        .await
        .expect("run node");
    assert!(
        output.status.success(),
        "winston-loki ({encoding}) failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Logs through python-logging-loki's handler (which posts each record and raises, reported
/// by `logging` on stderr, on any answer but 204).
const PYTHON_LOKI: &str = r#"
import logging, sys, warnings
warnings.simplefilter("ignore")
import logging_loki
url, version, token = sys.argv[1], sys.argv[2], sys.argv[3]
handler = logging_loki.LokiHandler(url=url, tags={"application": "py-loki", "env": "test"},
                                   auth=("logmesh", token), version=version)
log = logging.getLogger("shop")
log.propagate = False
log.addHandler(handler)
log.warning("stock low (v%s)", version, extra={"tags": {"sku": "A-1"}})
log.error("payment failed (v%s)", version)
"#;

async fn python_loki(url: &str, version: &str, token: &str) {
    let output = Command::new("python3")
        .args(["-c", PYTHON_LOKI, url, version, token])
        .env(
            "PYTHONPATH",
            std::env::var("LOGMESH_TEST_LOKI_PYTHONPATH").unwrap(),
        )
        .output()
        .await
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stderr.contains("Logging error"),
        "python-logging-loki (v{version}) failed: {stderr}"
    );
}

async fn events(node: &TestNode, query: &str) -> Vec<Value> {
    let page: Value = node
        .get(&format!("/api/v1/logs/search?{query}"))
        .bearer_auth("loki-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["events"].as_array().expect("events").clone()
}

async fn stored(node: &TestNode) -> i64 {
    let stats: Value = node
        .get("/api/v1/logs/stats")
        .bearer_auth("loki-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["total"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn winston_loki_pushes_snappy_protobuf_and_json() {
    needs!(JsClients);
    let node = TestNode::start(|config| config.api_token = Some("loki-token".into())).await;
    winston_loki(&node.url, "protobuf", "web-proto", 500, "loki-token").await;
    winston_loki(&node.url, "json", "web-json", 500, "loki-token").await;
    eventually("1000 lines stored", Duration::from_secs(20), || async {
        stored(&node).await == 1000
    })
    .await;
    for (job, encoding) in [("web-proto", "protobuf"), ("web-json", "json")] {
        let warned = events(&node, &format!("service={job}&severity=warn&limit=1000")).await;
        assert_eq!(warned.len(), 250, "{job}");
        let line = events(&node, &format!("service={job}&q=line%20499")).await;
        assert_eq!(line.len(), 1, "{job}");
        assert_eq!(line[0]["severity"], "warn");
        // winston-loki appends the record's other fields to the line, as it does for Loki.
        assert!(
            line[0]["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("loki {encoding} line 499")),
            "{}",
            line[0]
        );
        assert_eq!(
            line[0]["attributes"],
            json!({"env": "test", "part": "1"}),
            "{job}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_logging_loki_pushes_json_in_both_its_forms() {
    needs!(Python3, LokiPython);
    let node = TestNode::start(|config| config.api_token = Some("loki-token".into())).await;
    let url = format!("{}/loki/api/v1/push", node.url);
    python_loki(&url, "1", "loki-token").await;
    // Version 0, the library's default: the legacy {"labels": "{…}", "entries": […]} form.
    python_loki(&url, "0", "loki-token").await;
    eventually("4 lines stored", Duration::from_secs(20), || async {
        stored(&node).await == 4
    })
    .await;
    for version in ["0", "1"] {
        let low = events(&node, &format!("q=stock%20v{version}")).await;
        assert_eq!(low.len(), 1, "v{version}");
        assert_eq!(low[0]["service"], "py-loki");
        assert_eq!(low[0]["severity"], "warn");
        assert_eq!(low[0]["message"], format!("stock low (v{version})"));
        assert_eq!(
            low[0]["attributes"],
            json!({"env": "test", "logger": "shop", "sku": "A-1"})
        );
        let failed = events(&node, &format!("q=payment%20v{version}&severity=error")).await;
        assert_eq!(failed.len(), 1, "v{version}");
    }
}

fn push(labels: &str, lines: &[&str]) -> PushRequest {
    PushRequest {
        streams: vec![StreamAdapter {
            labels: labels.into(),
            entries: lines
                .iter()
                .enumerate()
                .map(|(i, line)| EntryAdapter {
                    timestamp: Some(prost_types::Timestamp {
                        seconds: 1_795_428_900 + i as i64,
                        nanos: 0,
                    }),
                    line: (*line).into(),
                    structured_metadata: vec![LabelPairAdapter {
                        name: "trace_id".into(),
                        value: format!("t{i}"),
                    }],
                })
                .collect(),
            hash: 0,
        }],
    }
}

fn snappy(bytes: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(bytes).unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn gzip_and_protobuf_variants_are_stored_and_malformed_pushes_store_nothing() {
    let node = TestNode::start(|_| {}).await;
    let post = |content_type: &str, encoding: Option<&str>, body: Vec<u8>| {
        let mut request = node
            .post("/loki/api/v1/push")
            .header("content-type", content_type)
            .body(body);
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        request.send()
    };
    let json_push = json!({"streams": [{"stream": {"service_name": "gz", "level": "error"},
        "values": [["1795428900000000000", "json gzip", {"trace_id": "abc"}]]}]});
    let protobuf = push(r#"{app="pb", detected_level="debug"}"#, &["one", "two"]);
    let accepted = [
        (
            "application/json",
            Some("gzip"),
            gzip(json_push.to_string().as_bytes()),
        ),
        (
            "application/x-protobuf",
            None,
            snappy(&protobuf.encode_to_vec()),
        ),
        (
            "application/x-protobuf",
            Some("gzip"),
            gzip(&snappy(&protobuf.encode_to_vec())),
        ),
        // Vector's loki sink says its snappy block in Content-Encoding.
        (
            "application/x-protobuf",
            Some("snappy"),
            snappy(&protobuf.encode_to_vec()),
        ),
    ];
    for (content_type, encoding, body) in accepted {
        let response = post(content_type, encoding, body).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::NO_CONTENT,
            "{content_type} {encoding:?}"
        );
    }
    node.wait_for_stored(7).await;
    let gz = node.get_json("/api/v1/logs/search?service=gz").await;
    assert_eq!(gz["events"][0]["severity"], "error");
    assert_eq!(gz["events"][0]["attributes"], json!({"trace_id": "abc"}));
    assert_eq!(gz["events"][0]["timestamp"], "2026-11-23T10:15:00Z");
    let pb = node.get_json("/api/v1/logs/search?service=pb&q=two").await;
    assert_eq!(pb["events"][0]["severity"], "debug");
    assert_eq!(pb["events"][0]["attributes"], json!({"trace_id": "t1"}));

    // The service label is configurable.
    let response = node
        .post("/loki/api/v1/push?_service_label=container&service=fallback")
        .json(&json!({"streams": [
            {"stream": {"container": "nginx", "job": "k8s"}, "values": [["1795428900000000000", "a"]]},
            {"stream": {"job": "k8s"}, "values": [["1795428900000000000", "b"]]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    node.wait_for_stored(9).await;
    let nginx = node.get_json("/api/v1/logs/search?service=nginx").await;
    assert_eq!(nginx["events"][0]["attributes"], json!({"job": "k8s"}));
    let fallback = node.get_json("/api/v1/logs/search?service=fallback").await;
    assert_eq!(fallback["events"][0]["message"], "b");

    let many_labels = format!(
        "{{{}}}",
        (0..16)
            .map(|i| format!("l{i}=\"v\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let good = snappy(&push(r#"{app="x"}"#, &["never stored"]).encode_to_vec());
    let refused: Vec<RefusedCase> = vec![
        (
            "protobuf not snappy",
            "application/x-protobuf",
            None,
            push(r#"{app="x"}"#, &["m"]).encode_to_vec(),
            StatusCode::BAD_REQUEST,
            "snappy",
        ),
        (
            "truncated snappy",
            "application/x-protobuf",
            None,
            good[..good.len() - 4].to_vec(),
            StatusCode::BAD_REQUEST,
            "snappy",
        ),
        (
            "snappy of something else",
            "application/x-protobuf",
            None,
            snappy(b"\xff\xff\xff\xff"),
            StatusCode::BAD_REQUEST,
            "logproto.PushRequest",
        ),
        (
            "bad gzip",
            "application/json",
            Some("gzip"),
            b"not gzip".to_vec(),
            StatusCode::BAD_REQUEST,
            "gzip",
        ),
        (
            "16 labels",
            "application/x-protobuf",
            None,
            snappy(&push(&many_labels, &["m"]).encode_to_vec()),
            StatusCode::BAD_REQUEST,
            "16 labels; at most 15",
        ),
        (
            "a regex matcher",
            "application/x-protobuf",
            None,
            snappy(&push(r#"{app=~"x.*"}"#, &["m"]).encode_to_vec()),
            StatusCode::BAD_REQUEST,
            "not =",
        ),
        (
            "a huge label value",
            "application/json",
            None,
            json!({"streams": [{"stream": {"app": "x".repeat(3000)}, "values": [["1", "m"]]}]})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "3000-byte value",
        ),
        (
            "JSON of another shape",
            "application/json",
            None,
            br#"{"streams": [{"stream": {}, "values": [[1, "m"]]}]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "not a Loki JSON push",
        ),
        (
            "a timestamp from the future",
            "application/json",
            None,
            json!({"streams": [{"stream": {"app": "x"}, "values": [["1795428900000000000", "ok"], ["4102444800000000000", "m"]]}]})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "stream 1 entry 2",
        ),
        (
            "another content type, read as snappy protobuf as Loki does",
            "text/plain",
            None,
            br#"{"streams": []}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "snappy",
        ),
    ];
    for (case, content_type, encoding, body, status, message) in refused {
        let response = post(content_type, encoding, body).await.unwrap();
        assert_eq!(response.status(), status, "{case}");
        let text = response.text().await.unwrap();
        assert!(text.contains(message), "{case}: {text}");
    }
    let response = node
        .post("/loki/api/v1/push?_service_label=")
        .json(&json_push)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = node
        .post("/loki/api/v1/push?tenant=x")
        .json(&json_push)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(node.stats_total().await, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_through_one_node_reaches_every_node() {
    needs!(Nats, Postgres, JsClients);
    let database = TestDatabase::create(Server::Postgres).await;
    let cluster = TestCluster::start(3, &nats_url(), database.url(), &[]);
    winston_loki(&cluster.nodes[2].url(), "protobuf", "loki-cluster", 50, "").await;
    cluster.wait_for_everywhere("loki-cluster", 50).await;
}
