//! The OpenAPI document (`GET /openapi.json`): it describes every route the node serves, and
//! schemathesis (PyPI), run against a live node from that document, finds no server error, no
//! answer that violates the document, and no crash.

mod common;

use common::TestNode;
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;

/// Every operation the API has, as docs/http-api.md lists them.
const OPERATIONS: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/api/v1/cluster"),
    ("post", "/api/v1/logs"),
    ("get", "/api/v1/logs/search"),
    ("get", "/api/v1/logs/stats"),
    ("get", "/api/v1/node/stats"),
    ("get", "/api/v1/tail"),
    ("post", "/api/v1/work"),
    ("get", "/api/v1/work/{callback}"),
    ("get", "/api/v1/work/{callback}/result"),
    ("get", "/console/{file}"),
    ("post", "/event"),
    ("get", "/healthz"),
    ("get", "/logs"),
    ("get", "/logs/files"),
    ("get", "/metrics"),
    ("post", "/metrics"),
    ("get", "/metrics/query"),
    ("get", "/openapi.json"),
    ("get", "/readyz"),
    ("post", "/_bulk"),
    ("put", "/_bulk"),
    ("post", "/{index}/_bulk"),
    ("put", "/{index}/_bulk"),
    ("post", "/v1/logs"),
    ("post", "/otlp/v1/logs"),
    ("post", "/loki/api/v1/push"),
];

fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            found.insert((method.clone(), path.clone()));
        }
    }
    found
}

#[tokio::test]
async fn the_document_describes_every_route_and_every_described_route_is_served() {
    let node = TestNode::start(|_| {}).await;
    let response = node.get("/openapi.json").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    let expected: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(operations(&document), expected);
    // The document is the one the library builds (the router is built from the same list).
    let built = serde_json::to_value(logmesh::http::openapi_document()).unwrap();
    assert_eq!(built, document);
    for (method, path) in OPERATIONS {
        let operation = &document["paths"][path][method];
        assert!(
            operation["responses"]["default"]["content"]["application/json"].is_object(),
            "{method} {path} documents the error shape"
        );
        if *path == "/api/v1/tail" {
            continue; // An endless stream.
        }
        let url = path
            .replace("{callback}", "ACBD18DB4CC2F85CEDEF654FCCC4A4D8")
            .replace("{file}", "app.js")
            .replace("{index}", "web");
        let request = match *method {
            "get" => node.get(&url),
            "put" => node.client.put(format!("{}{url}", node.url)).body("x"),
            _ => node.post(&url).body("x"),
        };
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap();
        // The router's fallbacks: no such endpoint, or not with this method.
        assert!(
            status != 405 && !body.contains("no such endpoint"),
            "{method} {path} is documented but not served: {status} {body}"
        );
    }
    let answer = node.get("/not/a/route").send().await.unwrap();
    assert_eq!(answer.status(), 404);
}

/// Runs schemathesis against `url`'s document; answers its exit status and output.
fn schemathesis(url: &str, extra: &[&str]) -> (bool, String) {
    let binary = std::env::var("LOGMESH_TEST_SCHEMATHESIS")
        .expect("LOGMESH_TEST_SCHEMATHESIS is not set: run the tests through scripts/test.sh");
    let pythonpath = std::env::var("LOGMESH_TEST_SCHEMATHESIS_PYTHONPATH").unwrap_or_default();
    // Schemathesis keeps a cache (`.schemathesis/`) in its working directory: not in the tree.
    let workdir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(binary)
        .current_dir(workdir.path())
        .env("PYTHONPATH", pythonpath)
        .env("SCHEMATHESIS_HOOKS", "")
        .args([
            "run",
            &format!("{url}/openapi.json"),
            // No 5xx, answers as documented (status, content type, headers, body), no crash.
            // The data acceptance checks are left out: whether a value is valid is often more
            // than a schema can say (a PromQL subset, a cursor this node handed out).
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance,negative_data_rejection",
            // An endless stream by design.
            "--exclude-path",
            "/api/v1/tail",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--request-timeout",
            "20",
            "--generation-database",
            "none",
            "--no-color",
        ])
        .args(extra)
        .output()
        .expect("schemathesis runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    needs!(Schemathesis);
    // An empty log root: no generated request can start an endless follow stream.
    let logs = tempfile::tempdir().unwrap();
    let roots = vec![logs.path().to_owned()];
    let node = TestNode::start(|config| {
        config.log_roots = roots;
        config.api_token = Some("fuzz-token".into());
    })
    .await;
    let url = node.url.clone();
    let (passed, output) = tokio::task::spawn_blocking(move || {
        schemathesis(&url, &["--header", "Authorization: Bearer fuzz-token"])
    })
    .await
    .unwrap();
    assert!(passed, "{output}");
    assert!(output.contains("passed"), "{output}");
    // Still serving after all of it.
    let ready = node
        .get("/readyz")
        .bearer_auth("fuzz-token")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn requests_are_counted_by_the_route_that_matched_and_nothing_else() {
    let node = TestNode::start(|_| {}).await;
    node.get("/api/v1/work/ACBD18DB4CC2F85CEDEF654FCCC4A4D8/result")
        .send()
        .await
        .unwrap();
    node.get("/console/app.js").send().await.unwrap();
    // Random paths and methods must not grow the label set.
    for n in 0..5 {
        node.get(&format!("/scan/{n}")).send().await.unwrap();
        node.client
            .request(
                reqwest::Method::from_bytes(format!("FOO{n}").as_bytes()).unwrap(),
                format!("{}/healthz", node.url),
            )
            .send()
            .await
            .unwrap();
    }
    let text = node
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("logmesh_http_requests_total{"))
        .collect();
    let has = |route: &str, method: &str| {
        counted.iter().any(|line| {
            line.contains(&format!("route=\"{route}\""))
                && line.contains(&format!("method=\"{method}\""))
        })
    };
    assert!(has("/api/v1/work/{callback}/result", "GET"), "{counted:#?}");
    assert!(has("/console/{file}", "GET"), "{counted:#?}");
    assert!(has("other", "GET"), "{counted:#?}");
    assert!(has("/healthz", "other"), "{counted:#?}");
    assert!(
        !text.contains("/scan/") && !text.contains("FOO"),
        "{counted:#?}"
    );
}
