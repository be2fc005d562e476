//! Every limit of the HTTP API, tried as a hostile or careless client would: the limit holds,
//! the answer is a 4xx/503 that names it, the node stays healthy, and nothing already
//! acknowledged is lost.

mod common;

use common::TestNode;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The node still answers and stores: a request that hit a limit took nothing else down.
async fn assert_healthy(node: &TestNode) {
    let ready = node.get("/readyz").send().await.expect("the node answers");
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    let id = format!("health-{}", uuid::Uuid::now_v7().simple());
    let response = node
        .post("/api/v1/logs")
        .body(format!(
            r#"{{"id":"{id}","service":"health","message":"still here"}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let db = node.db_path();
    common::eventually(
        "the health event stored",
        Duration::from_secs(20),
        || async { common::stored(&db).ids.get(&id) == Some(&1) },
    )
    .await;
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

/// Sends `request` on a new connection and reads the answer until the node closes it.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn slow_bodies_cost_only_their_own_request() {
    let node = TestNode::start(|config| {
        config.max_body_bytes = 10 << 20;
        config.http.body_pace.read_timeout = Duration::from_secs(1);
        config.http.body_pace.min_rate = 1024;
    })
    .await;
    let addr = node.node.as_ref().unwrap().local_addr();
    // More trickling clients than the budget holds maximum-size bodies, plain and gzip.
    let mut tricklers = Vec::new();
    for n in 0..2 * logmesh::http::BODY_BUDGET_IN_MAX_BODIES {
        let encoding = if n % 2 == 0 {
            ""
        } else {
            "Content-Encoding: gzip\r\n"
        };
        let request = format!(
            "POST /api/v1/logs HTTP/1.1\r\nHost: 127.0.0.1\r\n{encoding}Content-Length: {}\r\n\r\n",
            10 << 20
        );
        tricklers.push(tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let started = Instant::now();
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            loop {
                // One byte every 300 ms: far below 1 KiB/s.
                tokio::select! {
                    read = stream.read_to_end(&mut answer) => { read.unwrap(); break; }
                    () = tokio::time::sleep(Duration::from_millis(300)) => {
                        if stream.write_all(b"{").await.is_err() {
                            let _ = stream.read_to_end(&mut answer).await;
                            break;
                        }
                    }
                }
            }
            (
                String::from_utf8_lossy(&answer).into_owned(),
                started.elapsed(),
            )
        }));
    }
    // Meanwhile everyone else is served.
    for n in 0..5 {
        let response = node
            .post("/api/v1/logs")
            .body(format!(r#"{{"service":"fast","message":"m{n}"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    for trickler in tricklers {
        let (answer, took) = trickler.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.contains("body_too_slow") && answer.contains("--body-min-rate"),
            "{answer}"
        );
        assert!(took < Duration::from_secs(10), "cut after {took:?}");
    }
    node.wait_for_stored(5).await;
    assert_healthy(&node).await;
}

#[tokio::test]
async fn a_half_sent_request_head_is_cut_after_the_header_timeout() {
    let node = TestNode::start(|config| {
        config.http.server.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = node.node.as_ref().unwrap().local_addr();
    let started = Instant::now();
    let answer = raw_exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!answer.contains("200 OK"), "{answer}");
    // An idle connection that never sends a request is closed too.
    let started = Instant::now();
    raw_exchange(addr, b"").await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_healthy(&node).await;
}

#[tokio::test]
async fn connections_past_the_cap_get_503_naming_the_limit() {
    let node = TestNode::start(|config| {
        config.http.server.max_connections = 4;
        config.http.server.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = node.node.as_ref().unwrap().local_addr();
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // The node counts a connection once it accepted it: wait until the four are.
    let until = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let answer = raw_exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
        if answer.starts_with("HTTP/1.1 503") || Instant::now() > until {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(
        answer.contains("too_many_connections") && answer.contains("--max-connections"),
        "{answer}"
    );
    drop(idle);
    common::eventually(
        "connections served again",
        Duration::from_secs(10),
        || async {
            raw_exchange(
                addr,
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )
            .await
            .starts_with("HTTP/1.1 200")
        },
    )
    .await;
    assert_healthy(&node).await;
}

#[tokio::test]
async fn dns_rebinding_and_cross_site_posts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.log"), "secret line\n").unwrap();
    let roots = vec![dir.path().to_owned()];
    let node = TestNode::start(|config| config.log_roots = roots).await;
    let addr = node.node.as_ref().unwrap().local_addr();
    // A page on evil.example whose name now resolves to 127.0.0.1.
    let answer = raw_exchange(
        addr,
        b"GET /logs?filename=app.log HTTP/1.1\r\nHost: evil.example:5555\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains("host_not_allowed") && !answer.contains("secret"),
        "{answer}"
    );
    // A form on another site posting to the node.
    let response = node
        .post("/event")
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("injected=1")
        .send()
        .await
        .unwrap();
    let (code, _) = error_of(response, 403).await;
    assert_eq!(code, "cross_site_request");
    // The console's own origin works.
    let response = node
        .post("/event")
        .header("origin", &node.url)
        .body("from the console")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    node.wait_for_stored(1).await;
    assert_eq!(common::stored(&node.db_path()).rows, 1, "nothing injected");
}

#[tokio::test]
async fn allowed_hosts_let_a_proxy_name_through() {
    let node = TestNode::start(|config| {
        config.http.allowed_hosts = vec!["logs.example.com".into()];
    })
    .await;
    let addr = node.node.as_ref().unwrap().local_addr();
    let answer = raw_exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: logs.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = raw_exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: other.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
}

#[tokio::test]
async fn a_stalled_writer_makes_the_node_unready_until_it_writes_again() {
    let node = TestNode::start(|config| {
        config.writer_stall_timeout = Duration::from_secs(1);
    })
    .await;
    // Another process holds SQLite's write lock: the store writer cannot commit.
    let blocker = rusqlite::Connection::open(node.db_path()).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let response = node
        .post("/event")
        .body("waits in the queue")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    common::eventually(
        "readyz reports the stalled writer",
        Duration::from_secs(30),
        || async {
            let response = node.get("/readyz").send().await.unwrap();
            if response.status() != 503 {
                return false;
            }
            let body: Value = response.json().await.unwrap();
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            message.contains("store writer") && message.contains("--writer-stall-timeout")
        },
    )
    .await;
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    node.wait_for_stored(1).await;
    assert_healthy(&node).await;
}

#[tokio::test]
async fn sigterm_ends_the_node_while_streams_are_open() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    std::fs::write(logs.path().join("app.log"), "one\n").unwrap();
    let mut node = common::NodeProcess::spawn(
        dir.path(),
        &["--log-root", logs.path().to_str().unwrap()],
        &[],
    );
    let client = reqwest::Client::new();
    let mut follow = client
        .get(format!("{}/logs?filename=app.log&follow=true", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    let tail = client
        .get(format!("{}/api/v1/tail", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 200);
    let first = follow.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"one\n");
    let status = tokio::task::spawn_blocking(move || node.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut rest = Vec::new();
    while let Ok(Some(chunk)) = follow.chunk().await {
        rest.extend_from_slice(&chunk);
    }
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains("logmesh-error: the node is stopping"),
        "{rest}"
    );
}

#[tokio::test]
async fn counter_cardinality_is_bounded_and_the_refusal_names_the_limit() {
    let node = TestNode::start(|config| {
        config.counters.max_series = 50;
        config.counters.max_series_per_metric = 40;
    })
    .await;
    let url = format!("{}/metrics", node.url);
    let mut refused = Vec::new();
    for n in 0..100 {
        let body =
            serde_json::json!({"name": format!("m{}", n % 2), "labels": {"id": n.to_string()}});
        let (status, answer) = common::post_json(&node.client, &url, &body).await;
        if status != 200 {
            assert_eq!(status, 400, "{answer}");
            assert_eq!(answer["error"]["code"], "limit_exceeded", "{answer}");
            refused.push(answer["error"]["message"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(refused.len(), 50);
    assert!(
        refused.iter().any(|m| m.contains("--counter-max-series")),
        "{refused:?}"
    );
    let all = node
        .get("/metrics")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(all["counters"].as_array().unwrap().len(), 50);
    // An increment body past its limit is a JSON 413, not axum's plain text.
    let big = serde_json::json!({"name": "c", "labels": {"v": "x".repeat(100_000)}});
    let response = node.post("/metrics").json(&big).send().await.unwrap();
    let (code, message) = error_of(response, 413).await;
    assert_eq!(code, "payload_too_large");
    assert!(message.contains("65536"), "{message}");
    assert_healthy(&node).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_the_send_timeout() {
    let node = TestNode::start(|config| {
        config.http.server.send_timeout = Duration::from_secs(1);
        config.http.max_live_clients = 1;
        config.tail_buffer_bytes = 64 << 20;
        config.tail_buffer = 1_000_000;
    })
    .await;
    let addr = node.node.as_ref().unwrap().local_addr();
    // A live tail that reads nothing, over a raw socket with a small receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stalled,
        b"GET /api/v1/tail HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .await
    .unwrap();
    common::eventually(
        "the one live client slot taken",
        Duration::from_secs(10),
        || async { node.get("/api/v1/tail").send().await.unwrap().status() == 503 },
    )
    .await;
    // Far more than the socket buffers hold.
    let message = "x".repeat(8 * 1024);
    for round in 0..20 {
        let body: String = (0..100)
            .map(|i| common::ndjson_line(&format!("{round}-{i}"), "api", "info", &message))
            .collect();
        let response = node.post("/api/v1/logs").body(body).send().await.unwrap();
        assert_eq!(response.status(), 202);
    }
    // The stalled connection is closed, its slot free again.
    common::eventually(
        "the stalled client closed",
        Duration::from_secs(20),
        || async { node.get("/api/v1/tail").send().await.unwrap().status() == 200 },
    )
    .await;
    drop(stalled);
    assert_healthy(&node).await;
}

#[tokio::test]
async fn a_request_head_past_its_limit_is_refused_by_the_http_layer() {
    let node = TestNode::start(|_| {}).await;
    let addr = node.node.as_ref().unwrap().local_addr();
    let long_uri = format!(
        "GET /api/v1/logs/search?q={} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "a".repeat(100_000)
    );
    let answer = raw_exchange(addr, long_uri.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 414") || answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    let long_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(100_000)
    );
    let answer = raw_exchange(addr, long_header.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert_healthy(&node).await;
}
