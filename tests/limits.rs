//! Every limit of the HTTP API, tried as a hostile or careless client would: the limit holds,
//! the answer is a 4xx/503 that names it, the node stays healthy, and nothing already
//! acknowledged is lost.

mod common;

use common::TestNode;
use serde_json::Value;

/// The node still answers and stores: a request that hit a limit took nothing else down.
async fn assert_healthy(node: &TestNode) {
    let ready = node.get("/readyz").send().await.expect("the node answers");
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    let before = node.stats_total().await;
    let response = node
        .post("/api/v1/logs")
        .body(r#"{"service":"health","message":"still here"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    node.wait_for_stored(before + 1).await;
}

/// The JSON error's code and message, after checking the status.
async fn error_of(response: reqwest::Response, status: u16) -> (String, String) {
    assert_eq!(
        response.status(),
        status,
        "{:?}",
        response.headers().get("content-type")
    );
    let body: Value = response.json().await.expect("a JSON error");
    (
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn a_promql_expression_is_bounded_before_it_is_parsed() {
    let node = TestNode::start(|_| {}).await;
    // 50,000 unary minus signs overflowed a runtime thread's stack inside the parser.
    for (expression, expected) in [
        (
            format!("{}a", "-".repeat(50_000)),
            "at most 4096 are allowed",
        ),
        (format!("{}a", "-".repeat(1_000)), "operators"),
        (
            format!("{}a{}", "(".repeat(1_000), ")".repeat(1_000)),
            "levels",
        ),
    ] {
        let response = node
            .get("/metrics/query")
            .query(&[("expression", &expression)])
            .send()
            .await
            .expect("the node answers");
        let (code, message) = error_of(response, 400).await;
        assert_eq!(code, "bad_request");
        assert!(message.contains(expected), "{message}");
    }
    assert_healthy(&node).await;
}

#[tokio::test]
async fn deeply_nested_json_is_refused_on_every_json_endpoint() {
    let node = TestNode::start(|_| {}).await;
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    for (path, body) in [
        (
            "/api/v1/logs",
            format!(
                r#"{{"service":"a","message":"m","attributes":{{"x":{}}}}}"#,
                deep(5_000)
            ),
        ),
        ("/api/v1/logs", deep(5_000)),
        ("/api/v1/work", format!(r#"{{"data":{}}}"#, deep(5_000))),
        (
            "/metrics",
            format!(r#"{{"name":"c","by":{}}}"#, deep(5_000)),
        ),
    ] {
        let response = node.post(path).body(body).send().await.unwrap();
        let (code, message) = error_of(response, 400).await;
        assert_eq!(code, "bad_request", "{path}: {message}");
    }
    assert_eq!(node.stats_total().await, 0);
    assert_healthy(&node).await;
}
