//! OpenTelemetry logs over OTLP/HTTP, driven by the SDKs people run, unchanged: the Python SDK
//! (PyPI's `opentelemetry-sdk` with `opentelemetry-exporter-otlp-proto-http`, through the
//! `logging` bridge; protobuf, plain and gzip) and the JS SDK (`@opentelemetry/sdk-logs` with
//! `exporter-logs-otlp-proto` and `exporter-logs-otlp-http`, which sends OTLP/JSON). Then the
//! answers the specification asks for: `partial_success` when some records are rejected, a
//! `google.rpc.Status` in the request's encoding for a refused body, which stores nothing; and
//! records through one node of a cluster reaching every node's event log.

mod common;

use common::cluster::TestCluster;
use common::databases::{Server, TestDatabase};
use common::services::nats_url;
use common::tier::js_clients;
use common::{TestNode, eventually};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
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

/// Logs through Python's `logging` with the SDK's handler and OTLP/HTTP exporter; prints one
/// JSON line: how many exports ran and whether every one succeeded.
const PYTHON_SDK: &str = r#"
import json, logging, sys, warnings
warnings.simplefilter("ignore")
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
endpoint, compression, count, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
exporter = OTLPLogExporter(
    endpoint=endpoint,
    compression=Compression.Gzip if compression == "gzip" else Compression.NoCompression,
    headers={"Authorization": f"Bearer {token}"})
results = []
export = exporter.export
def recording_export(batch):
    result = export(batch)
    results.append(result)
    return result
exporter.export = recording_export
provider = LoggerProvider(resource=Resource.create({"service.name": "py-shop"}))
provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
log = logging.getLogger("shop.orders")
log.propagate = False
log.setLevel(logging.DEBUG)
log.addHandler(LoggingHandler(level=logging.NOTSET, logger_provider=provider))
for i in range(count):
    if i % 2:
        log.warning("order %d declined (%s)", i, compression, extra={"order_id": i})
    else:
        log.info("order %d paid (%s)", i, compression, extra={"order_id": i})
try:
    1 / 0
except ZeroDivisionError:
    log.exception("checkout crashed (%s)", compression)
provider.shutdown()
print(json.dumps({"exports": len(results),
                  "ok": bool(results) and all(r.name == "SUCCESS" for r in results)}))
"#;

async fn python_sdk(endpoint: &str, compression: &str, count: usize, token: &str) -> Value {
    let output = Command::new("python3")
        .args([
            "-c",
            PYTHON_SDK,
            endpoint,
            compression,
            &count.to_string(),
            token,
        ])
        .env(
            "PYTHONPATH",
            std::env::var("LOGMESH_TEST_OTEL_PYTHONPATH").unwrap(),
        )
        .output()
        .await
        .expect("run python3");
    assert!(
        output.status.success(),
        "the OpenTelemetry Python SDK failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

/// Runs tests/js-clients/otlp.mjs: the JS SDK exporting `count` records as `service`.
async fn js_sdk(url: &str, encoding: &str, service: &str, count: usize, token: &str) {
    let output = Command::new("node")
        .current_dir(js_clients())
        .args([
            "otlp.mjs",
            url,
            encoding,
            service,
            &count.to_string(),
            token,
        ])
        .output()
        .await
        .expect("run node");
    assert!(
        output.status.success(),
        "the OpenTelemetry JS SDK ({encoding}) failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `GET /api/v1/logs/stats` of a node with the tests' token.
async fn stats(node: &TestNode) -> Value {
    node.get("/api/v1/logs/stats")
        .bearer_auth("otel-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn search(node: &TestNode, query: &str) -> Vec<Value> {
    let page: Value = node
        .get(&format!("/api/v1/logs/search?{query}"))
        .bearer_auth("otel-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["events"].as_array().expect("events").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_exports_logging_records_as_protobuf_plain_and_gzip() {
    needs!(Python3, OtelPython);
    let node = TestNode::start(|config| config.api_token = Some("otel-token".into())).await;
    let endpoint = format!("{}/v1/logs", node.url);
    for compression in ["none", "gzip"] {
        let sent = python_sdk(&endpoint, compression, 100, "otel-token").await;
        assert_eq!(sent["ok"], true, "{compression}: {sent}");
    }
    eventually("202 records stored", Duration::from_secs(20), || async {
        let stats: Value = stats(&node).await;
        stats["total"] == 202
    })
    .await;
    let stats: Value = stats(&node).await;
    assert_eq!(
        stats["rows"],
        json!([
            {"service": "py-shop", "severity": "error", "count": 2},
            {"service": "py-shop", "severity": "info", "count": 100},
            {"service": "py-shop", "severity": "warn", "count": 100},
        ])
    );
    let declined = search(&node, "q=declined%20gzip&service=py-shop&limit=100").await;
    assert_eq!(declined.len(), 50);
    let event = &declined[0];
    assert_eq!(event["severity"], "warn");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .starts_with("order 99 declined (gzip)"),
        "{event}"
    );
    let attributes = &event["attributes"];
    assert_eq!(attributes["order_id"], 99);
    assert_eq!(attributes["scope.name"], "shop.orders");
    assert_eq!(attributes["severity_text"], "WARN");
    assert_eq!(attributes["code.function.name"], "<module>");
    assert_eq!(attributes["telemetry.sdk.language"], "python");
    let crashed = search(&node, "q=crashed&severity=error").await;
    assert_eq!(crashed.len(), 2);
    assert_eq!(
        crashed[0]["attributes"]["exception.type"],
        "ZeroDivisionError"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_sdk_exports_protobuf_and_otlp_json_with_trace_ids() {
    needs!(JsClients);
    let node = TestNode::start(|config| config.api_token = Some("otel-token".into())).await;
    js_sdk(
        &format!("{}/v1/logs", node.url),
        "protobuf",
        "js-proto",
        600,
        "otel-token",
    )
    .await;
    js_sdk(
        &format!("{}/otlp/v1/logs", node.url),
        "json",
        "js-json",
        600,
        "otel-token",
    )
    .await;
    eventually("1200 records stored", Duration::from_secs(20), || async {
        let stats: Value = stats(&node).await;
        stats["total"] == 1200
    })
    .await;
    // Trace ids are found by exact value, whichever the encoding.
    let traced = search(
        &node,
        "attr.trace_id=5b8efff798038103d269b633813fc60c&attr.span_id=eee19b7ec3c1b174&limit=1000",
    )
    .await;
    assert_eq!(traced.len(), 1000);
    for (service, encoding) in [("js-proto", "protobuf"), ("js-json", "json")] {
        let warned = search(
            &node,
            &format!("service={service}&severity=warn&limit=1000"),
        )
        .await;
        assert_eq!(warned.len(), 300, "{service}");
        let event = search(&node, &format!("service={service}&q=record%20599")).await;
        assert_eq!(event.len(), 1, "{service}");
        let event = &event[0];
        assert_eq!(event["message"], format!("otel {encoding} record 599"));
        assert_eq!(
            event["attributes"],
            json!({
                "deployment.environment": "test",
                "record.number": 599,
                "http.route": "/pay",
                "scope.name": "js-clients",
                "scope.version": "1.0.0",
                "severity_text": "WARN",
                "trace_id": "5b8efff798038103d269b633813fc60c",
                "span_id": "eee19b7ec3c1b174",
            }),
            "{service}"
        );
    }
}

fn string_value(text: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(text.into())),
    })
}

fn record(body: &str, time_unix_nano: u64) -> LogRecord {
    LogRecord {
        time_unix_nano,
        severity_number: 17,
        body: string_value(body),
        ..Default::default()
    }
}

fn request(service: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: string_value(service),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A `google.rpc.Status`, as the error bodies carry it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

const FUTURE_NANOS: u64 = 4_102_444_800_000_000_000;
const NOW_NANOS: u64 = 1_795_428_900_000_000_000;

#[tokio::test]
async fn rejected_records_are_partial_success_and_refused_bodies_store_nothing() {
    let node = TestNode::start(|_| {}).await;
    let protobuf = |path: &str, body: Vec<u8>| {
        node.post(path)
            .header("content-type", "application/x-protobuf")
            .body(body)
    };

    // One good record, one from the future: the good one is stored, the other reported.
    let mixed = request(
        "shop",
        vec![record("kept", NOW_NANOS), record("too late", FUTURE_NANOS)],
    );
    let response = protobuf("/v1/logs", mixed.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let answer = ExportLogsServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    let partial = answer.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_log_records, 1);
    assert!(
        partial.error_message.contains("from the future"),
        "{}",
        partial.error_message
    );
    // The same in OTLP/JSON: the answer is JSON, int64 as a string.
    let json_body = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": NOW_NANOS.to_string(), "body": {"stringValue": "kept as json"}},
        {"timeUnixNano": FUTURE_NANOS.to_string(), "body": {"stringValue": "too late"}},
    ]}]}]});
    let response = node
        .post("/otlp/v1/logs")
        .json(&json_body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedLogRecords"], "1");
    node.wait_for_stored(2).await;

    // Everything accepted: an empty answer.
    let response = protobuf(
        "/v1/logs",
        request("shop", vec![record("all good", NOW_NANOS)]).encode_to_vec(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer = ExportLogsServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(answer.partial_success, None);
    node.wait_for_stored(3).await;

    // Refused whole, each in the protocol's shape, and nothing stored.
    let good = request("shop", vec![record("never stored", NOW_NANOS)]).encode_to_vec();
    let truncated = good[..good.len() - 3].to_vec();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(b"not protobuf at all").unwrap();
    let cases: Vec<RefusedCase> = vec![
        (
            "truncated protobuf",
            "application/x-protobuf",
            None,
            truncated,
            StatusCode::BAD_REQUEST,
            "not a protobuf ExportLogsServiceRequest",
        ),
        (
            "gzip of something else",
            "application/x-protobuf",
            Some("gzip"),
            gzip.finish().unwrap(),
            StatusCode::BAD_REQUEST,
            "not a protobuf",
        ),
        (
            "not gzip",
            "application/x-protobuf",
            Some("gzip"),
            good.clone(),
            StatusCode::BAD_REQUEST,
            "not valid gzip",
        ),
        (
            "zstd",
            "application/x-protobuf",
            Some("zstd"),
            good.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Encoding",
        ),
        (
            "every record rejected",
            "application/x-protobuf",
            None,
            request("has space", vec![record("m", NOW_NANOS)]).encode_to_vec(),
            StatusCode::BAD_REQUEST,
            "service.name",
        ),
        (
            "enum names in JSON",
            "application/json",
            None,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":"SEVERITY_NUMBER_WARN"}]}]}]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "OTLP/JSON",
        ),
        (
            "JSON that is not a request",
            "application/json",
            None,
            b"[1, 2]".to_vec(),
            StatusCode::BAD_REQUEST,
            "OTLP/JSON",
        ),
        (
            "wrong content type",
            "text/plain",
            None,
            good.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/x-protobuf or application/json",
        ),
        (
            "too large",
            "application/x-protobuf",
            None,
            vec![0x0a; 11 << 20],
            StatusCode::PAYLOAD_TOO_LARGE,
            "--max-body-bytes",
        ),
    ];
    for (case, content_type, encoding, body, status, message) in cases {
        let mut post = node
            .post("/v1/logs")
            .header("content-type", content_type)
            .body(body);
        if let Some(encoding) = encoding {
            post = post.header("content-encoding", encoding);
        }
        let response = post.send().await.unwrap();
        assert_eq!(response.status(), status, "{case}");
        let protobuf_answer = response.headers()["content-type"] == "application/x-protobuf";
        let bytes = response.bytes().await.unwrap();
        let error = if protobuf_answer {
            RpcStatus::decode(bytes).expect("a google.rpc.Status")
        } else {
            let value: Value = serde_json::from_slice(&bytes).expect("a JSON Status");
            RpcStatus {
                code: value["code"].as_i64().unwrap() as i32,
                message: value["message"].as_str().unwrap().to_owned(),
            }
        };
        assert!(error.code > 0, "{case}");
        assert!(error.message.contains(message), "{case}: {}", error.message);
        assert_eq!(
            protobuf_answer,
            content_type == "application/x-protobuf",
            "{case}"
        );
    }
    assert_eq!(node.stats_total().await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_through_one_node_reach_every_node() {
    needs!(Nats, Postgres, JsClients);
    let database = TestDatabase::create(Server::Postgres).await;
    let cluster = TestCluster::start(3, &nats_url(), database.url(), &[]);
    js_sdk(
        &format!("{}/v1/logs", cluster.nodes[1].url()),
        "protobuf",
        "otel-cluster",
        50,
        "",
    )
    .await;
    cluster.wait_for_everywhere("otel-cluster", 50).await;
}
