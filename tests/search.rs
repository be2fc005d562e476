//! `GET /api/v1/logs/search` and `logmesh search`: every parameter and every bad input against
//! an in-process node on SQLite, the same search on a node whose `--database` is PostgreSQL,
//! and the command's output and exit codes against a real node.

mod common;

use common::TestNode;
use common::databases::{Server, TestDatabase};
use logmesh::store::DatabaseUrl;
use serde_json::{Value, json};
use std::process::{Command, Output};

/// Six events over two services, with known timestamps (2026-11-23T10:00:0Ns, N = 1..=6).
const BASE_MS: i64 = 1_795_428_000_000;

fn body() -> String {
    let lines = [
        ("e1", "api", "debug", "request served in 5 ms", None),
        ("e2", "api", "warn", "slow request: timeout close", None),
        (
            "e3",
            "billing",
            "error",
            "payment timeout\nretrying",
            Some(json!({"order": 7})),
        ),
        ("e4", "api", "error", "Timeout talking to billing", None),
        ("e5", "billing", "info", "payment accepted", None),
        ("e6", "api", "fatal", "out of memory", None),
    ];
    lines
        .iter()
        .enumerate()
        .map(|(i, (id, service, severity, message, attributes))| {
            let mut event = json!({"id": id, "service": service, "severity": severity,
                                   "message": message, "timestamp": BASE_MS + 1000 * (i as i64 + 1)});
            if let Some(attributes) = attributes {
                event["attributes"] = attributes.clone();
            }
            event.to_string() + "\n"
        })
        .collect()
}

async fn node_with_events(configure: impl FnOnce(&mut logmesh::node::NodeConfig)) -> TestNode {
    let node = TestNode::start(configure).await;
    let response = node
        .post("/api/v1/logs")
        .header("content-type", "application/x-ndjson")
        .body(body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    node.wait_for_stored(6).await;
    node
}

async fn get(node: &TestNode, query: &str) -> (u16, Value) {
    let response = node
        .get(&format!("/api/v1/logs/search{query}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn ids(node: &TestNode, query: &str) -> Vec<String> {
    let (status, body) = get(node, query).await;
    assert_eq!(status, 200, "{query}: {body}");
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every parameter, on whichever store the node has.
async fn every_parameter_narrows_the_search(node: &TestNode) {
    assert_eq!(ids(node, "").await, ["e6", "e5", "e4", "e3", "e2", "e1"]);
    assert_eq!(ids(node, "?q=timeout").await, ["e4", "e3", "e2"]);
    assert_eq!(ids(node, "?q=TIMEOUT%20billing").await, ["e4"]);
    assert_eq!(
        ids(node, "?q=").await.len(),
        6,
        "an empty q searches everything"
    );
    assert_eq!(ids(node, "?service=billing").await, ["e5", "e3"]);
    assert_eq!(ids(node, "?severity=error").await, ["e6", "e4", "e3"]);
    assert_eq!(
        ids(node, "?severity=WARNING&service=api").await,
        ["e6", "e4", "e2"]
    );
    // since (inclusive) and until (exclusive), RFC 3339 or epoch milliseconds.
    assert_eq!(ids(node, "?since=2026-11-23T10:00:05Z").await, ["e6", "e5"]);
    let since = BASE_MS + 2000;
    let until = BASE_MS + 4000;
    assert_eq!(
        ids(node, &format!("?since={since}&until={until}")).await,
        ["e3", "e2"]
    );
    assert_eq!(
        ids(node, "?until=2026-11-23T11:00:02%2B01:00").await,
        ["e1"]
    );
    // limit and cursor: pages of two, following next_cursor to the end.
    let (_, first) = get(node, "?limit=2").await;
    assert_eq!(first["events"].as_array().unwrap().len(), 2);
    let mut cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let mut all: Vec<String> = vec!["e6".into(), "e5".into()];
    loop {
        let (status, page) = get(node, &format!("?limit=2&cursor={cursor}")).await;
        assert_eq!(status, 200);
        all.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => {
                assert!(page["next_cursor"].is_null());
                break;
            }
        }
    }
    assert_eq!(all, ["e6", "e5", "e4", "e3", "e2", "e1"]);
    // The event's shape.
    let (_, page) = get(node, "?q=payment&severity=error").await;
    assert_eq!(
        page,
        json!({"events": [{
            "id": "e3", "timestamp": "2026-11-23T10:00:03Z", "service": "billing",
            "severity": "error", "message": "payment timeout\nretrying",
            "attributes": {"order": 7}, "node": "test-node"
        }], "next_cursor": null})
    );
    let (_, page) = get(node, "?q=memory").await;
    assert!(page["events"][0].get("attributes").is_none(), "{page}");
}

#[tokio::test]
async fn search_answers_every_parameter_on_sqlite() {
    let node = node_with_events(|_| {}).await;
    every_parameter_narrows_the_search(&node).await;
}

#[tokio::test]
async fn search_answers_every_parameter_on_postgres() {
    needs!(Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let url = database.url().to_owned();
    let node = node_with_events(|config| {
        config.database = DatabaseUrl::parse(&url).unwrap();
    })
    .await;
    every_parameter_narrows_the_search(&node).await;
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let node = node_with_events(|_| {}).await;
    let cases = [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=ten", "limit"),
        ("?limit=-1", "limit"),
        ("?severity=loud", "severity"),
        ("?since=yesterday", "since"),
        ("?since=-5", "since"),
        ("?until=2026-13-01T00:00:00Z", "until"),
        ("?since=2000&until=1000", "since"),
        ("?cursor=not-a-cursor", "cursor"),
        ("?cursor=bm9wZQ", "cursor"),
        ("?service=", "service"),
        ("?q=%3B%3B%20--", "q"),
        (&format!("?q={}", "a".repeat(2000)), "q"),
        ("?keyword=timeout", "keyword"),
        ("?q=a&q=b", "q"),
        ("?attr.a%22b=x", "attr.a\"b"),
        ("?attr.=x", "attr."),
        ("?attr.a=x&attr.a=y", "attr.a"),
        (&format!("?attr.a={}", "v".repeat(3000)), "attribute `a`"),
        (
            &(0..9)
                .map(|i| format!("attr.a{i}=x"))
                .collect::<Vec<_>>()
                .join("&")
                .replace("attr.a0", "?attr.a0"),
            "attribute filters",
        ),
    ];
    for (query, parameter) in cases {
        let (status, body) = get(&node, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{parameter}`")) || message.contains(parameter),
            "{query}: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_requires_the_token_when_one_is_configured() {
    let node = TestNode::start(|config| config.api_token = Some("t0ken".into())).await;
    let (status, _) = get(&node, "").await;
    assert_eq!(status, 401);
    let response = node
        .get("/api/v1/logs/search?q=payment")
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let url = node.url.clone();
    let (with, without) = tokio::task::spawn_blocking(move || {
        (
            logmesh(&["search", "--url", &url, "--api-token", "t0ken", "payment"]),
            logmesh(&["search", "--url", &url, "payment"]),
        )
    })
    .await
    .unwrap();
    assert_eq!(with.status.code(), Some(0), "{with:?}");
    assert_eq!(without.status.code(), Some(2), "{without:?}");
    assert!(String::from_utf8_lossy(&without.stderr).contains("--api-token"));
}

fn logmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_logmesh"))
        .args(args)
        .env_remove("LOGMESH_API_TOKEN")
        .output()
        .expect("run logmesh")
}

fn stdout_lines(output: &Output) -> Vec<String> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_command_prints_lines_and_exits_with_codes_scripts_rely_on() {
    let node = node_with_events(|_| {}).await;
    let url = node.url.clone();
    let run = move |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            logmesh(&args)
        })
    };
    let args = |extra: &[&str]| -> Vec<String> {
        ["search", "--url", url.as_str()]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    // Found: one plain line per event, newest first, newlines escaped.
    let found = run(args(&["timeout"])).await.unwrap();
    assert_eq!(found.status.code(), Some(0), "{found:?}");
    assert_eq!(
        stdout_lines(&found),
        [
            "2026-11-23T10:00:04Z error api test-node Timeout talking to billing",
            "2026-11-23T10:00:03Z error billing test-node payment timeout\\nretrying",
            "2026-11-23T10:00:02Z warn api test-node slow request: timeout close",
        ]
    );
    // Filters, --all over pages of one, --json.
    let all = run(args(&[
        "--service",
        "billing",
        "--severity",
        "info",
        "--since",
        "2026-11-23T10:00:00Z",
        "--until",
        &(BASE_MS + 10_000).to_string(),
        "--limit",
        "1",
        "--all",
        "--json",
    ]))
    .await
    .unwrap();
    assert_eq!(all.status.code(), Some(0), "{all:?}");
    let events: Vec<Value> = stdout_lines(&all)
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["e5", "e3"]);
    // Exact attribute values.
    let attr = run(args(&["--attr", "order=7", "--json"])).await.unwrap();
    assert_eq!(attr.status.code(), Some(0), "{attr:?}");
    let found: Vec<Value> = stdout_lines(&attr)
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], "e3");
    // Without --all, one page.
    let one = run(args(&["--limit", "1"])).await.unwrap();
    assert_eq!(stdout_lines(&one).len(), 1);
    // Nothing found is still a successful search.
    let none = run(args(&["zeppelin"])).await.unwrap();
    assert_eq!(none.status.code(), Some(0), "{none:?}");
    assert!(none.stdout.is_empty());
    // Bad usage: refused by clap, or by the node (400).
    for bad in [
        args(&["--limit", "0"]),
        args(&["--since", "yesterday"]),
        args(&["--severity", "loud"]),
        args(&["--attr", "order"]),
        args(&["--attr", "a b=1"]),
    ] {
        let output = run(bad.clone()).await.unwrap();
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {output:?}");
        assert!(!output.stderr.is_empty());
    }
    let since = run(args(&["--since", "yesterday"])).await.unwrap();
    assert!(
        String::from_utf8_lossy(&since.stderr).contains("since"),
        "{since:?}"
    );
    // No node answers: 1. Port 1 on loopback refuses at once.
    let down = run(vec![
        "search".into(),
        "--url".into(),
        "http://127.0.0.1:1".into(),
        "timeout".into(),
    ])
    .await
    .unwrap();
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    assert!(String::from_utf8_lossy(&down.stderr).contains("no node could be reached"));
    // A dead first --url falls back to the next.
    let fallback = run(vec![
        "search".into(),
        "--url".into(),
        "http://127.0.0.1:1".into(),
        "--url".into(),
        node.url.clone(),
        "memory".into(),
    ])
    .await
    .unwrap();
    assert_eq!(fallback.status.code(), Some(0), "{fallback:?}");
    assert_eq!(stdout_lines(&fallback).len(), 1);
}
