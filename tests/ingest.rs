//! Ingest over real HTTP into a real node: every input form, every rejection, back-pressure,
//! auth, and what reaches SQLite and the event log file.

mod common;

use common::{TestNode, event_log_lines, metrics_text, ndjson_line, sample_value, stored};
use logmesh::node::{Node, NodeConfig, NodeError};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

async fn error_of(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("errors are JSON");
    (
        status,
        body["error"]["code"].as_str().expect("code").to_owned(),
        body["error"]["message"]
            .as_str()
            .expect("message")
            .to_owned(),
    )
}

#[tokio::test]
async fn a_raw_event_is_stored_counted_and_logged() {
    let node = TestNode::start(|_| {}).await;
    let response = node
        .post("/event?service=checkout&severity=WARNING")
        .body("card declined\nretrying")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], 1);
    let id = body["id"].as_str().unwrap().to_owned();

    node.wait_for_stored(1).await;
    let stats: Value = node
        .get("/api/v1/logs/stats")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["rows"],
        json!([{"service": "checkout", "severity": "warn", "count": 1}])
    );
    let db = stored(&node.db_path());
    assert_eq!(db.ids.get(&id), Some(&1));

    common::eventually("the event log line", Duration::from_secs(10), || async {
        !event_log_lines(&node.event_log_dir()).is_empty()
    })
    .await;
    let lines = event_log_lines(&node.event_log_dir());
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], id.as_str());
    assert_eq!(lines[0]["message"], "card declined\nretrying");
    assert_eq!(lines[0]["node"], "test-node");
    let raw = std::fs::read_to_string(node.event_log_dir().join("events.log")).unwrap();
    assert_eq!(
        raw.lines().count(),
        1,
        "the newline in the message is escaped"
    );
}

#[tokio::test]
async fn json_objects_arrays_and_ndjson_are_all_accepted() {
    let node = TestNode::start(|_| {}).await;
    let object = json!({"service": "api", "message": "one", "severity": "error",
                        "timestamp": "2026-11-23T10:00:00Z", "attributes": {"user": "ann"}});
    let array = json!([{"service": "api", "message": "two"}, {"service": "db", "message": "three", "severity": 4}]);
    let ndjson = "{\"service\":\"db\",\"message\":\"four\"}\n{\"service\":\"db\",\"message\":\"five\",\"timestamp\":1700000000000}\n";
    for (body, content_type, expected) in [
        (object.to_string(), "application/json", 1),
        (array.to_string(), "application/json", 2),
        (ndjson.to_string(), "application/x-ndjson", 2),
    ] {
        let response = node
            .post("/api/v1/logs")
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"accepted": expected})
        );
    }
    node.wait_for_stored(5).await;
    let stats: Value = node
        .get("/api/v1/logs/stats")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["rows"],
        json!([
            {"service": "api", "severity": "error", "count": 1},
            {"service": "api", "severity": "info", "count": 1},
            {"service": "db", "severity": "info", "count": 2},
            {"service": "db", "severity": "warn", "count": 1},
        ])
    );
    let db = stored(&node.db_path());
    assert_eq!((db.rows, db.severity_sum), (5, 5));
    let connection = rusqlite::Connection::open(node.db_path()).unwrap();
    let (ts, attributes): (i64, String) = connection
        .query_row(
            "SELECT ts_us, attributes FROM service_logs WHERE message = 'one'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(ts, 1_795_428_000_000_000);
    assert_eq!(attributes, r#"{"user":"ann"}"#);
}

#[tokio::test]
async fn bad_input_is_rejected_whole_and_changes_nothing() {
    let node = TestNode::start(|_| {}).await;
    let good = ndjson_line("good-1", "api", "info", "fine");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "/api/v1/logs",
            b"{\"service\":\"api\"".to_vec(),
            "line 1: invalid JSON",
        ),
        (
            "/api/v1/logs",
            format!("{good}{{\"service\":\"api\",\"message\":\"m\",\"severity\":\"loud\"}}\n")
                .into_bytes(),
            "line 2, field `severity`: unknown severity `loud`",
        ),
        (
            "/api/v1/logs",
            format!("{good}{{\"message\":\"m\"}}\n").into_bytes(),
            "line 2, field `service`: missing",
        ),
        (
            "/api/v1/logs",
            format!("{good}{{\"service\":\"a\",\"message\":\"m\",\"timestamp\":\"noon\"}}\n")
                .into_bytes(),
            "line 2, field `timestamp`",
        ),
        (
            "/api/v1/logs",
            format!("{good}{{\"service\":\"a\",\"message\":\"m\",\"attributes\":{{\"a\":[1]}}}}\n")
                .into_bytes(),
            "field `attributes`",
        ),
        (
            "/api/v1/logs",
            [
                good.as_bytes(),
                b"{\"service\":\"a\",\"message\":\"\xff\"}\n",
            ]
            .concat(),
            "line 2: not valid UTF-8",
        ),
        ("/api/v1/logs", b"".to_vec(), "no events"),
        ("/api/v1/logs", b"[]".to_vec(), "no events"),
        (
            "/api/v1/logs?servce=x",
            good.clone().into_bytes(),
            "unknown field `servce`",
        ),
        ("/event", b"".to_vec(), "body: empty"),
        ("/event", b"\xff\xfe".to_vec(), "body: not valid UTF-8"),
        (
            "/event?severity=loud",
            b"m".to_vec(),
            "query parameter `severity`: unknown severity",
        ),
        (
            "/event?service=a%20b",
            b"m".to_vec(),
            "query parameter `service`",
        ),
        ("/event?servce=a", b"m".to_vec(), "unknown field `servce`"),
    ];
    for (path, body, expected) in cases {
        let response = node.post(path).body(body).send().await.unwrap();
        let (status, code, message) = error_of(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {message}");
        assert_eq!(code, "bad_request");
        assert!(
            message.contains(expected),
            "{path}: got {message:?}, expected {expected:?}"
        );
    }
    let response = node
        .post("/api/v1/logs")
        .header("content-encoding", "br")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(response).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(code, "unsupported_encoding");
    assert!(
        message.contains("as gzip, deflate, snappy or uncompressed"),
        "{message}"
    );
    let response = node
        .post("/api/v1/logs")
        .header("content-encoding", "gzip")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    let (status, _, message) = error_of(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("not valid gzip"), "{message}");

    // A marker sent after all of the above is the only event that arrives.
    let response = node
        .post("/api/v1/logs")
        .body(ndjson_line("marker", "api", "info", "m"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    node.wait_for_stored(1).await;
    let db = stored(&node.db_path());
    assert_eq!(db.ids.keys().collect::<Vec<_>>(), ["marker"]);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_whether_declared_or_chunked() {
    let node = TestNode::start(|config| config.max_body_bytes = 1024).await;
    let big = ndjson_line("x", "api", "info", &"a".repeat(2000));
    let response = node
        .post("/api/v1/logs")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(response).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );

    // Chunked: no Content-Length, so the limit is found while reading.
    let addr = node.node.as_ref().unwrap().local_addr();
    let status_line = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let mut request = String::from(
            "POST /event HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        );
        for _ in 0..4 {
            request.push_str(&format!("200\r\n{}\r\n", "b".repeat(0x200)));
        }
        request.push_str("0\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.lines().next().unwrap_or_default().to_owned()
    })
    .await
    .unwrap();
    assert_eq!(status_line, "HTTP/1.1 413 Payload Too Large");

    let response = node.post("/event").body("small").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    node.wait_for_stored(1).await;
}

/// A node whose queue holds 10 events, and whose writers wait for 1000 events or an hour: the
/// events it accepts stay in the queue until shutdown.
async fn node_with_a_queue_of_ten() -> TestNode {
    TestNode::start(|config| {
        config.queue_limits.max_events = 10;
        config.batch_size = 1000;
        config.flush_interval = Duration::from_secs(3600);
    })
    .await
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_shutdown_flushes_it() {
    let mut node = node_with_a_queue_of_ten().await;
    // More than the queue can ever hold: 413, and the queue takes requests on. (Once the queue
    // is full it sheds every request unparsed, this one too: see the next test.)
    let eleven: String = (0..11)
        .map(|i| ndjson_line(&format!("big{i}"), "api", "info", "m"))
        .collect();
    let response = node.post("/api/v1/logs").body(eleven).send().await.unwrap();
    let (status, _, message) = error_of(response).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{message}");

    let ten: String = (0..10)
        .map(|i| ndjson_line(&format!("e{i}"), "api", "info", "m"))
        .collect();
    let response = node.post("/api/v1/logs").body(ten).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let response = node
        .post("/event")
        .body("one too many")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    let (status, code, message) = error_of(response).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
    );
    assert!(message.contains("queue is full"), "{message}");

    assert_eq!(
        stored(&node.db_path()).rows,
        0,
        "nothing is stored before the flush"
    );
    node.shutdown().await;
    let db = stored(&node.db_path());
    assert_eq!(
        (db.rows, db.severity_sum),
        (10, 10),
        "shutdown flushed the queue"
    );
    assert_eq!(event_log_lines(&node.event_log_dir()).len(), 10);
}

#[tokio::test]
async fn a_queue_refused_for_room_sheds_requests_before_parsing_them_until_it_drains() {
    let mut node = node_with_a_queue_of_ten().await;
    let nine: String = (0..9)
        .map(|i| ndjson_line(&format!("e{i}"), "api", "info", "m"))
        .collect();
    let response = node.post("/api/v1/logs").body(nine).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let two: String = (0..2)
        .map(|i| ndjson_line(&format!("t{i}"), "api", "info", "m"))
        .collect();
    let response = node.post("/api/v1/logs").body(two).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Now shedding: one more event would fit, but is refused; and a malformed body is refused
    // the same way, because it is not parsed (it would have been 400).
    let one = ndjson_line("fits", "api", "info", "m");
    for body in [one, "not json\n".to_owned()] {
        let response = node.post("/api/v1/logs").body(body).send().await.unwrap();
        assert_eq!(response.headers().get("retry-after").unwrap(), "1");
        let (status, code, message) = error_of(response).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
        );
        assert!(message.contains("queue is full (9 events"), "{message}");
    }
    // Nor is a compressed body decompressed: this one is not gzip (it would have been 400).
    let response = node
        .post("/api/v1/logs")
        .header("content-encoding", "gzip")
        .body("not gzip at all")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let metrics = metrics_text(&node.url).await;
    assert_eq!(
        sample_value(&metrics, "logmesh_ingest_requests_shed_total"),
        3
    );
    assert_eq!(
        sample_value(&metrics, "logmesh_ingest_events_total{outcome=\"refused\"}"),
        2,
        "only the parsed request's events are counted as refused"
    );
    node.shutdown().await;
    let db = stored(&node.db_path());
    assert_eq!(db.rows, 9, "only the accepted request was kept");
}

#[tokio::test]
async fn while_shedding_bulk_otlp_and_loki_are_refused_unparsed_as_their_senders_expect() {
    let mut node = node_with_a_queue_of_ten().await;
    // Nine taken, then two refused for room: the queue sheds from then on.
    for (n, expected) in [
        (9, StatusCode::ACCEPTED),
        (2, StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let body: String = (0..n)
            .map(|i| ndjson_line(&format!("e{n}-{i}"), "api", "info", "m"))
            .collect();
        let response = node.post("/api/v1/logs").body(body).send().await.unwrap();
        assert_eq!(response.status(), expected);
    }
    // Malformed bodies: each would be a 400 if it were parsed.
    let refusals = [
        (
            "/_bulk",
            "application/x-ndjson",
            StatusCode::TOO_MANY_REQUESTS,
        ),
        (
            "/v1/logs",
            "application/json",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            "/loki/api/v1/push",
            "application/json",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ];
    for (path, content_type, expected) in refusals {
        let response = node
            .post(path)
            .header("content-type", content_type)
            .body("{ not what this endpoint takes")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{path}");
        assert_eq!(
            response.headers().get("retry-after").unwrap(),
            "1",
            "{path}"
        );
    }
    let metrics = metrics_text(&node.url).await;
    assert_eq!(
        sample_value(&metrics, "logmesh_ingest_requests_shed_total"),
        3
    );
    node.shutdown().await;
    assert_eq!(stored(&node.db_path()).rows, 9);
}

#[tokio::test]
async fn resending_an_id_stores_it_once_and_counts_it_once() {
    let node = TestNode::start(|_| {}).await;
    let body = ndjson_line("dup-1", "api", "error", "first")
        + &ndjson_line("dup-1", "api", "error", "again");
    for _ in 0..2 {
        let response = node
            .post("/api/v1/logs")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let marker = ndjson_line("marker", "api", "info", "m");
    node.post("/api/v1/logs").body(marker).send().await.unwrap();
    node.wait_for_stored(2).await;
    let db = stored(&node.db_path());
    assert_eq!((db.rows, db.severity_sum), (2, 2));
    assert_eq!(db.ids.get("dup-1"), Some(&1));
}

#[tokio::test]
async fn with_a_token_every_request_needs_it() {
    let node = TestNode::start(|config| config.api_token = Some("s3cret-token".into())).await;
    for path in ["/healthz", "/api/v1/logs/stats"] {
        let (status, code, _) = error_of(node.get(path).send().await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
    }
    let response = node
        .post("/event")
        .bearer_auth("wrong")
        .body("m")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers().get("www-authenticate").unwrap(),
        "Bearer realm=\"logmesh\""
    );
    assert_eq!(error_of(response).await.0, StatusCode::UNAUTHORIZED);
    // Basic credentials carry the token as their password (any user); anything else is refused.
    for (authorization, status) in [
        ("Basic czNjcmV0", StatusCode::UNAUTHORIZED), // "s3cret": no user:password
        ("Basic dXNlcjpzM2NyZXQ=", StatusCode::UNAUTHORIZED), // "user:s3cret"
        ("Basic not base64!", StatusCode::UNAUTHORIZED),
        ("Token s3cret-token", StatusCode::UNAUTHORIZED),
        ("Basic dXNlcjpzM2NyZXQtdG9rZW4=", StatusCode::ACCEPTED), // "user:s3cret-token"
        ("Basic OnMzY3JldC10b2tlbg==", StatusCode::ACCEPTED),     // ":s3cret-token"
    ] {
        let response = node
            .post("/event")
            .header("authorization", authorization)
            .body("m")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{authorization}");
    }
    let response = node
        .post("/event")
        .bearer_auth("s3cret-token")
        .body("m")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let stats = node
        .get("/api/v1/logs/stats")
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_a_token_no_header_is_needed_and_probes_answer() {
    let node = TestNode::start(|_| {}).await;
    let health: Value = node
        .get("/healthz")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok", "node": "test-node"}));
    let ready = node.get("/readyz").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let (status, code, _) = error_of(node.get("/nope").send().await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, code, _) = error_of(node.get("/event").send().await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

#[tokio::test]
async fn readiness_fails_when_the_store_is_gone() {
    let node = TestNode::start(|_| {}).await;
    let connection = rusqlite::Connection::open(node.db_path()).unwrap();
    connection
        .execute_batch("DROP TABLE logmesh_migrations")
        .unwrap();
    let (status, code, message) = error_of(node.get("/readyz").send().await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    );
    assert!(message.starts_with("store:"), "{message}");
}

#[tokio::test]
async fn a_non_loopback_address_needs_a_token_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::ephemeral(dir.path());
    config.listen = "0.0.0.0:0".into();
    match Node::start(config.clone()).await {
        Err(NodeError::Insecure { .. }) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a non-loopback node started without a token"),
    }
    config.api_token = Some("t".into());
    Node::start(config.clone())
        .await
        .expect("with a token")
        .shutdown()
        .await;
    config.api_token = None;
    config.insecure = true;
    Node::start(config)
        .await
        .expect("with --insecure")
        .shutdown()
        .await;
}

#[tokio::test]
async fn a_second_node_on_the_same_data_dir_is_refused() {
    let node = TestNode::start(|_| {}).await;
    let error = Node::start(node.config.clone())
        .await
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("another logmesh process"),
        "{error}"
    );
}

#[tokio::test]
async fn the_event_log_rotates_and_keeps_every_event_once() {
    let node = TestNode::start(|config| {
        config.event_log.max_bytes = 4096;
        config.event_log.keep = 50;
    })
    .await;
    for batch in 0..10 {
        let body: String = (0..20)
            .map(|i| ndjson_line(&format!("r{batch}-{i}"), "api", "info", &"x".repeat(100)))
            .collect();
        let response = node.post("/api/v1/logs").body(body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    common::eventually(
        "200 lines in the event log",
        Duration::from_secs(20),
        || async { event_log_lines(&node.event_log_dir()).len() >= 200 },
    )
    .await;
    let lines = event_log_lines(&node.event_log_dir());
    let ids: std::collections::HashSet<_> = lines
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!((lines.len(), ids.len()), (200, 200));
    assert!(node.event_log_dir().join("events.log.1").exists());
    for entry in std::fs::read_dir(node.event_log_dir()).unwrap() {
        let size = entry.unwrap().metadata().unwrap().len();
        assert!(size <= 4096, "a rotated file holds {size} bytes");
    }
}

#[tokio::test]
async fn bodies_in_flight_are_bounded_by_the_bytes_received_and_the_excess_is_shed() {
    let node = TestNode::start(|config| config.max_body_bytes = 1024).await;
    let addr = node.node.as_ref().unwrap().local_addr();
    // Connections that only declare a full-size body hold nothing of the budget (16
    // maximum-size bodies): others are served.
    let mut declared = Vec::new();
    for _ in 0..2 * logmesh::http::BODY_BUDGET_IN_MAX_BODIES {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            b"POST /event HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1024\r\n\r\n",
        )
        .await
        .unwrap();
        declared.push(stream);
    }
    let response = node.post("/event").body("m").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // Connections that sent most of their body do hold it, and past the budget requests are
    // shed with 503 + Retry-After.
    let mut sent = Vec::new();
    for stream in declared.iter_mut() {
        tokio::io::AsyncWriteExt::write_all(stream, &[b'x'; 1000])
            .await
            .unwrap();
    }
    common::eventually(
        "a request shed for lack of body budget",
        Duration::from_secs(10),
        || async {
            let response = node
                .post("/event")
                .body("m".repeat(500))
                .send()
                .await
                .unwrap();
            response.status() == StatusCode::SERVICE_UNAVAILABLE
                && response.headers().get("retry-after").is_some()
        },
    )
    .await;
    sent.append(&mut declared);
    drop(sent);
    common::eventually("the budget released", Duration::from_secs(10), || async {
        node.post("/event").body("m").send().await.unwrap().status() == StatusCode::ACCEPTED
    })
    .await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn gzip_bodies_are_decompressed_within_the_limit() {
    let node = TestNode::start(|config| config.max_body_bytes = 64 * 1024).await;
    // NDJSON in two gzip members, as `cat a.gz b.gz` makes them.
    let mut body = gzip(ndjson_line("g1", "api", "info", "first").as_bytes());
    body.extend(gzip(ndjson_line("g2", "api", "warn", "second").as_bytes()));
    let response = node
        .post("/api/v1/logs")
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let response = node
        .post("/event?service=raw")
        .header("content-encoding", "x-gzip")
        .body(gzip(b"a raw line"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    // Small on the wire, past the limit once decompressed: refused whole.
    let bomb: String = (0..2000)
        .map(|i| ndjson_line(&format!("b{i}"), "api", "info", "x"))
        .collect();
    assert!(bomb.len() > 64 * 1024);
    let compressed = gzip(bomb.as_bytes());
    assert!(compressed.len() < 64 * 1024);
    let response = node
        .post("/api/v1/logs")
        .header("content-encoding", "gzip")
        .body(compressed)
        .send()
        .await
        .unwrap();
    let (status, _, message) = error_of(response).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message.contains("decompresses to more than"), "{message}");

    node.wait_for_stored(3).await;
    let db = stored(&node.db_path());
    let mut ids: Vec<&String> = db.ids.keys().collect();
    ids.sort();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.contains(&&"g1".to_owned()) && ids.contains(&&"g2".to_owned()));
    assert!(
        db.ids.keys().all(|id| !id.starts_with('b')),
        "nothing of the bomb"
    );
}
