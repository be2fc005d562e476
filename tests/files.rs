//! Files on hosts: `GET /logs` and `GET /logs/files` on real nodes over real files in temporary
//! log roots, the `logmesh tail` command, and routing through a real two-node cluster.

mod common;

use common::services::nats_url;

use common::cluster::TestCluster;
use common::databases::{Server, TestDatabase};
use common::{TestNode, eventually};
use reqwest::StatusCode;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

const DEADLINE: Duration = Duration::from_secs(20);

/// A node serving the temporary directory it returns.
async fn node_with_root() -> (TestNode, TempDir) {
    let root = tempfile::tempdir().expect("temp dir");
    let path = root.path().to_owned();
    let node = TestNode::start(|config| config.log_roots = vec![path]).await;
    (node, root)
}

async fn get(node: &TestNode, path_and_query: &str) -> (StatusCode, String) {
    let response = node
        .get(path_and_query)
        .send()
        .await
        .expect("the node answers");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

fn lines(body: &str) -> Vec<&str> {
    body.lines().collect()
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).expect("write the log file");
}

fn append(path: &Path, text: &str) {
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("open for append")
        .write_all(text.as_bytes())
        .expect("append");
}

fn gzip(path: &Path, text: &str) {
    let mut encoder = flate2::write::GzEncoder::new(
        fs::File::create(path).expect("create gz"),
        flate2::Compression::default(),
    );
    encoder.write_all(text.as_bytes()).expect("gzip");
    encoder.finish().expect("finish gz");
}

/// `line <i>` for 0..n, with ` key` on every third.
fn numbered(n: usize) -> String {
    (0..n)
        .map(|i| {
            if i % 3 == 0 {
                format!("line {i} key\n")
            } else {
                format!("line {i}\n")
            }
        })
        .collect()
}

#[tokio::test]
async fn the_last_n_matching_lines_come_newest_first_or_oldest_first() {
    let (node, root) = node_with_root().await;
    write(&root.path().join("app.log"), &numbered(100));
    let (status, body) = get(&node, "/logs?filename=app.log&keyword=key&n=3").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(lines(&body), ["line 99 key", "line 96 key", "line 93 key"]);
    let (_, body) = get(&node, "/logs?filename=app.log&keyword=key&n=3&order=asc").await;
    assert_eq!(lines(&body), ["line 93 key", "line 96 key", "line 99 key"]);
    // Without a keyword every line matches; n defaults to 10.
    let (_, body) = get(&node, "/logs?filename=app.log").await;
    assert_eq!(lines(&body).len(), 10);
    assert_eq!(lines(&body)[0], "line 99 key");
    // Fewer matches than n: all of them.
    let (_, body) = get(&node, "/logs?filename=app.log&keyword=line%2099&n=50").await;
    assert_eq!(lines(&body), ["line 99 key"]);
}

#[tokio::test]
async fn regex_and_ignore_case_select_lines() {
    let (node, root) = node_with_root().await;
    write(
        &root.path().join("app.log"),
        "GET /a 200\nGET /b 500\nPOST /c 503\nError: boom\nerror again\n",
    );
    let (_, body) = get(&node, "/logs?filename=app.log&regex=%205%5Cd%5Cd%24&n=10").await;
    assert_eq!(lines(&body), ["POST /c 503", "GET /b 500"]);
    let (_, body) = get(
        &node,
        "/logs?filename=app.log&keyword=ERROR&ignore_case=true",
    )
    .await;
    assert_eq!(lines(&body), ["error again", "Error: boom"]);
    let (_, body) = get(&node, "/logs?filename=app.log&keyword=ERROR").await;
    assert_eq!(body, "");
    let (_, body) = get(
        &node,
        "/logs?filename=app.log&regex=%5Eget&ignore_case=1&order=asc",
    )
    .await;
    assert_eq!(lines(&body), ["GET /a 200", "GET /b 500"]);
}

#[tokio::test]
async fn n_is_met_from_rotated_and_gzipped_siblings_newest_first() {
    let (node, root) = node_with_root().await;
    let dir = root.path();
    write(&dir.join("app.log"), "now key 1\nnoise\nnow key 2\n");
    write(&dir.join("app.log.1"), "one key 1\none key 2\n");
    gzip(
        &dir.join("app.log.2.gz"),
        "two key 1\nnoise\ntwo key 2\ntwo key 3\n",
    );
    write(&dir.join("other.log"), "other key\n");
    let (_, body) = get(&node, "/logs?filename=app.log&keyword=key&n=6").await;
    assert_eq!(
        lines(&body),
        [
            "now key 2",
            "now key 1",
            "one key 2",
            "one key 1",
            "two key 3",
            "two key 2"
        ]
    );
    let (_, body) = get(&node, "/logs?filename=app.log&keyword=key&n=5&order=asc").await;
    assert_eq!(
        lines(&body),
        [
            "two key 3",
            "one key 1",
            "one key 2",
            "now key 1",
            "now key 2"
        ]
    );
    let (_, body) = get(&node, "/logs?filename=app.log&keyword=key&n=100&order=asc").await;
    assert_eq!(
        lines(&body),
        [
            "two key 1",
            "two key 2",
            "two key 3",
            "one key 1",
            "one key 2",
            "now key 1",
            "now key 2"
        ]
    );
}

#[tokio::test]
async fn long_lines_are_cut_and_invalid_utf8_passes_lossily() {
    let (node, root) = node_with_root().await;
    let path = root.path().join("app.log");
    let long = format!("key{}", "x".repeat(200_000));
    let mut bytes = b"bad \xff\xfe key\n".to_vec();
    bytes.extend_from_slice(long.as_bytes());
    bytes.extend_from_slice(b"\nlast key\n");
    fs::write(&path, bytes).unwrap();
    let (status, body) = get(&node, "/logs?filename=app.log&keyword=key&n=3").await;
    assert_eq!(status, StatusCode::OK);
    let got = lines(&body);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], "last key");
    assert!(got[1].starts_with("keyxxx"));
    assert!(got[1].ends_with(logmesh::files::CUT_MARKER), "cut marker");
    assert!(
        got[1].len() < 70 * 1024,
        "the line is cut: {}",
        got[1].len()
    );
    assert_eq!(got[2], "bad \u{fffd}\u{fffd} key");
}

/// Reads `response` until its body holds every one of `expected`, or panics at the deadline.
async fn read_until(response: &mut reqwest::Response, seen: &mut String, expected: &[&str]) {
    let result = tokio::time::timeout(DEADLINE, async {
        while !expected.iter().all(|line| seen.lines().any(|l| l == *line)) {
            let chunk = response
                .chunk()
                .await
                .expect("the stream goes on")
                .expect("the stream is not over");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "timed out waiting for {expected:?}; got {seen:?}"
    );
}

#[tokio::test]
async fn follow_streams_new_lines_across_rotation_and_truncation() {
    let (node, root) = node_with_root().await;
    let path = root.path().join("app.log");
    write(&path, "old key 1\nold key 2\nnoise\n");
    let mut response = node
        .get("/logs?filename=app.log&keyword=key&n=1&follow=true")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut seen = String::new();
    read_until(&mut response, &mut seen, &["old key 2"]).await;

    append(&path, "noise\nnew key 3\n");
    read_until(&mut response, &mut seen, &["new key 3"]).await;

    // Rotation: the name now names a new file; the old one is read to its end first.
    fs::rename(&path, root.path().join("app.log.1")).unwrap();
    append(&root.path().join("app.log.1"), "late key 4\n");
    write(&path, "rotated key 5\n");
    read_until(&mut response, &mut seen, &["late key 4", "rotated key 5"]).await;

    // Truncation in place: what is written afterwards is new.
    append(&path, "filler key 6\nfiller key 7\n");
    read_until(&mut response, &mut seen, &["filler key 7"]).await;
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&path, "after key 8\n");
    read_until(&mut response, &mut seen, &["after key 8"]).await;
    assert!(!seen.contains("noise"));
    assert!(!seen.contains("old key 1"), "n=1 sends only the last line");
}

#[tokio::test]
async fn names_that_leave_the_log_roots_are_forbidden() {
    let (node, root) = node_with_root().await;
    let outside = tempfile::tempdir().unwrap();
    write(&outside.path().join("secret.log"), "secret key\n");
    fs::create_dir(root.path().join("sub")).unwrap();
    write(&root.path().join("sub/app.log"), "inside key\n");
    std::os::unix::fs::symlink(
        outside.path().join("secret.log"),
        root.path().join("escape.log"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("escape-dir")).unwrap();
    std::os::unix::fs::symlink(
        root.path().join("sub/app.log"),
        root.path().join("inside-link.log"),
    )
    .unwrap();
    // A rotated sibling that is a symlink out is never read.
    std::os::unix::fs::symlink(
        outside.path().join("secret.log"),
        root.path().join("sub/app.log.1"),
    )
    .unwrap();
    let (_, body) = get(&node, "/logs?filename=sub/app.log&keyword=key&n=100").await;
    assert_eq!(body, "inside key\n");
    let secret = outside.path().join("secret.log");
    let attacks = [
        "../secret.log".to_owned(),
        "..".to_owned(),
        "sub/../../secret.log".to_owned(),
        "%2e%2e%2fsecret.log".to_owned(),
        "%2E%2E/%2E%2E/etc/passwd".to_owned(),
        "..%2f..%2fetc%2fpasswd".to_owned(),
        "%2fetc%2fpasswd".to_owned(),
        secret.display().to_string(),
        "app.log%00".to_owned(),
        "escape.log".to_owned(),
        "escape-dir/secret.log".to_owned(),
    ];
    for attack in &attacks {
        let (status, body) = get(&node, &format!("/logs?filename={attack}&keyword=key")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{attack}: {body}");
        assert!(body.contains("\"forbidden\""), "{attack}: {body}");
        assert!(!body.contains("secret key"));
    }
    // Inside the root, also through a symlink that stays inside.
    for fine in ["sub/app.log", "inside-link.log", "./sub/app.log"] {
        let (status, body) = get(&node, &format!("/logs?filename={fine}&keyword=key")).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "inside key\n"),
            "{fine}"
        );
    }
    let (status, body) = get(&node, "/logs?filename=missing.log").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn several_roots_are_searched_in_order_or_named() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    write(&first.path().join("app.log"), "first\n");
    write(&second.path().join("app.log"), "second\n");
    write(&second.path().join("only.log"), "only second\n");
    let roots = vec![first.path().to_owned(), second.path().to_owned()];
    let node = TestNode::start(|config| config.log_roots = roots).await;
    let (_, body) = get(&node, "/logs?filename=app.log").await;
    assert_eq!(body, "first\n");
    let (_, body) = get(&node, "/logs?filename=only.log").await;
    assert_eq!(body, "only second\n");
    let name = second.path().file_name().unwrap().to_str().unwrap();
    let (_, body) = get(&node, &format!("/logs?filename={name}/app.log")).await;
    assert_eq!(body, "second\n");
}

#[tokio::test]
async fn a_read_error_after_streaming_began_ends_with_the_error_line() {
    let (node, root) = node_with_root().await;
    write(&root.path().join("app.log"), "fresh key\n");
    fs::write(
        root.path().join("app.log.1.gz"),
        b"\x1f\x8b\x08\x00garbage that is not deflate",
    )
    .unwrap();
    let (status, body) = get(&node, "/logs?filename=app.log&keyword=key&n=5").await;
    assert_eq!(status, StatusCode::OK);
    let got = lines(&body);
    assert_eq!(got[0], "fresh key");
    assert_eq!(got.len(), 2, "{body}");
    assert!(
        got[1].starts_with("logmesh-error: app.log.1.gz: "),
        "{body}"
    );
}

#[tokio::test]
async fn bad_parameters_are_json_errors_naming_the_parameter() {
    let (node, root) = node_with_root().await;
    write(&root.path().join("app.log"), "x\n");
    let cases = [
        ("/logs?keyword=x", "`filename`"),
        ("/logs?filename=app.log&n=0", "`n`"),
        ("/logs?filename=app.log&n=100001", "`n`"),
        ("/logs?filename=app.log&n=ten", "`n`"),
        ("/logs?filename=app.log&order=sideways", "`order`"),
        ("/logs?filename=app.log&follow=maybe", "`follow`"),
        ("/logs?filename=app.log&ignore_case=yes", "`ignore_case`"),
        ("/logs?filename=app.log&regex=(", "`regex`"),
        (
            "/logs?filename=app.log&regex=a&keyword=a",
            "`keyword` or `regex`",
        ),
        ("/logs?filename=app.log&lines=5", "unknown field `lines`"),
        ("/logs/files?verbose=1", "unknown field `verbose`"),
    ];
    for (query, expected) in cases {
        let (status, body) = get(&node, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
        assert_eq!(json["error"]["code"], "bad_request");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{query}: {message}");
    }
}

#[tokio::test]
async fn the_file_list_shows_sizes_and_rotated_siblings() {
    let (node, root) = node_with_root().await;
    write(&root.path().join("app.log"), "12345\n");
    write(&root.path().join("app.log.1"), "1\n");
    gzip(&root.path().join("app.log.2.gz"), "2\n");
    fs::create_dir(root.path().join("nginx")).unwrap();
    write(&root.path().join("nginx/access.log"), "a\n");
    let (status, body) = get(&node, "/logs/files").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["node"], "test-node");
    let files = json["files"].as_array().unwrap();
    let names: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["app.log", "nginx/access.log"]);
    assert_eq!(files[0]["size"], 6);
    assert!(files[0]["modified"].as_str().unwrap().ends_with('Z'));
    let rotated: Vec<&str> = files[0]["rotated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(rotated, ["app.log.1", "app.log.2.gz"]);
}

#[tokio::test]
async fn the_default_log_root_is_the_event_log_directory() {
    let node = TestNode::start(|_| {}).await;
    let response = node
        .post("/event?service=api")
        .body("hello from the event log")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    eventually("the event in the event log", DEADLINE, || async {
        get(&node, "/logs?filename=events.log&keyword=hello")
            .await
            .1
            .contains("hello from the event log")
    })
    .await;
}

fn logmesh_tail(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_logmesh"))
        .arg("tail")
        .args(args)
        .output()
        .expect("run logmesh tail")
}

#[tokio::test]
async fn the_tail_command_prints_lines_and_exits_by_outcome() {
    let (node, root) = node_with_root().await;
    write(&root.path().join("app.log"), &numbered(30));
    let url = node.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        let ok = logmesh_tail(&["--url", &url, "--keyword", "key", "-n", "2", "app.log"]);
        let asc = logmesh_tail(&[
            "--url", &url, "--regex", "line 2.", "-n", "3", "--order", "asc", "app.log",
        ]);
        let missing = logmesh_tail(&["--url", &url, "nope.log"]);
        let usage = logmesh_tail(&["--url", &url, "-n", "0", "app.log"]);
        let no_file = logmesh_tail(&["--url", &url]);
        (ok, asc, missing, usage, no_file)
    })
    .await
    .unwrap();
    let (ok, asc, missing, usage, no_file) = output;
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "line 27 key\nline 24 key\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&asc.stdout),
        "line 27 key\nline 28\nline 29\n"
    );
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.starts_with("logmesh tail: ") && stderr.contains("404"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
    assert_eq!(usage.status.code(), Some(2));
    assert_eq!(no_file.status.code(), Some(2));

    // The stream ends with the error line: exit 1, the lines before it on stdout.
    fs::write(root.path().join("app.log.1.gz"), b"\x1f\x8b not gzip").unwrap();
    let url = node.url.clone();
    let broken = tokio::task::spawn_blocking(move || {
        logmesh_tail(&["--url", &url, "--keyword", "key", "-n", "50", "app.log"])
    })
    .await
    .unwrap();
    assert_eq!(broken.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&broken.stdout).lines().count(), 10);
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(
        stderr.starts_with("logmesh tail: app.log.1.gz: "),
        "{stderr}"
    );

    // No node at all.
    let unreachable =
        tokio::task::spawn_blocking(|| logmesh_tail(&["--url", "http://127.0.0.1:9", "app.log"]))
            .await
            .unwrap();
    assert_eq!(unreachable.status.code(), Some(1));
}

/// The cluster's API token: forwarded requests must carry the client's.
const TOKEN: &str = "files-test-token";

async fn cluster_get(cluster: &TestCluster, index: usize, query: &str) -> (StatusCode, String) {
    let response = cluster
        .client
        .get(format!("{}{query}", cluster.nodes[index].url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the node answers");
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn any_member_serves_any_members_files_and_all_of_them_at_once() {
    needs!(Nats, Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let mut cluster = TestCluster::start(2, &nats_url(), database.url(), &["--api-token", TOKEN]);
    for (index, node) in cluster.nodes.iter().enumerate() {
        write(
            &node.event_log_dir().join("app.log"),
            &format!("n{index} key a\nn{index} noise\nn{index} key b\n"),
        );
    }
    eventually("two members", DEADLINE, || async {
        cluster_get(&cluster, 0, "/logs?hostname=node-1&filename=app.log")
            .await
            .0
            == StatusCode::OK
    })
    .await;
    let (status, body) = cluster_get(
        &cluster,
        0,
        "/logs?hostname=node-1&filename=app.log&keyword=key&n=5",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lines(&body), ["n1 key b", "n1 key a"]);

    let (status, body) = cluster_get(
        &cluster,
        1,
        "/logs?hostname=*&filename=app.log&keyword=key&n=5",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut got = lines(&body);
    got.sort();
    assert_eq!(
        got,
        [
            "node-0: n0 key a",
            "node-0: n0 key b",
            "node-1: n1 key a",
            "node-1: n1 key b"
        ]
    );

    let (status, body) = cluster_get(&cluster, 0, "/logs/files?hostname=node-1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("\"node\":\"node-1\"") && body.contains("app.log"),
        "{body}"
    );

    let (status, body) = cluster_get(&cluster, 0, "/logs?hostname=node-9&filename=app.log").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("node-0, node-1"), "{body}");

    // A member killed with -9 keeps its record until the TTL: it is unreachable.
    cluster.kill9(1);
    let (status, body) = cluster_get(&cluster, 0, "/logs?hostname=node-1&filename=app.log").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("node-1"), "{body}");
    // Every member at once: the ones that answer are served, the others named at the end.
    let (status, body) =
        cluster_get(&cluster, 0, "/logs?hostname=*&filename=app.log&keyword=key").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got = lines(&body);
    assert_eq!(got[..2], ["node-0: n0 key b", "node-0: n0 key a"], "{body}");
    assert!(
        got[2].starts_with("logmesh-error: some members were left out: ")
            && got[2].contains("node-1"),
        "{body}"
    );
    let (status, body) = cluster_get(&cluster, 0, "/logs/files?hostname=*").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let nodes = listed["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{body}");
    assert!(
        nodes
            .iter()
            .any(|n| n["node"] == "node-1" && n["error"].is_string()),
        "{body}"
    );
}

#[tokio::test]
async fn a_member_that_hangs_delays_a_forwarded_request_only_to_the_peer_timeout() {
    needs!(Nats, Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let mut cluster = TestCluster::start(2, &nats_url(), database.url(), &["--peer-timeout", "1s"]);
    for (index, node) in cluster.nodes.iter().enumerate() {
        write(
            &node.event_log_dir().join("app.log"),
            &format!("n{index} line\n"),
        );
    }
    eventually("two members", DEADLINE, || async {
        cluster_get(&cluster, 0, "/logs?hostname=node-1&filename=app.log")
            .await
            .0
            == StatusCode::OK
    })
    .await;
    // Stopped, not dead: its socket still accepts connections, it just never answers.
    let pid = cluster.nodes[1].process().child.id() as libc::pid_t;
    // SAFETY: kill(2) on a child process of this test.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let started = std::time::Instant::now();
    let (status, body) = cluster_get(&cluster, 0, "/logs?hostname=*&filename=app.log").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("node-0: n0 line\n"), "{body}");
    assert!(
        body.contains("node-1") && body.contains("--peer-timeout"),
        "{body}"
    );
    let (status, body) = cluster_get(&cluster, 0, "/logs?hostname=node-1&filename=app.log").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let (status, body) = cluster_get(&cluster, 0, "/logs/files?hostname=*").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("--peer-timeout"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
}

/// Reads a streamed body as text, a piece at a time, with a deadline.
struct StreamReader {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    seen: String,
}

impl StreamReader {
    fn new(response: reqwest::Response) -> StreamReader {
        StreamReader {
            body: Box::pin(response.bytes_stream()),
            seen: String::new(),
        }
    }

    /// Reads until `what` was seen; panics if the stream ends or the deadline passes first.
    async fn until(&mut self, what: &str) {
        use futures_util::StreamExt;
        while !self.seen.contains(what) {
            let piece = tokio::time::timeout(DEADLINE, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("waiting for {what:?}; got {:?}", self.seen));
            match piece {
                Some(Ok(bytes)) => self.seen.push_str(&String::from_utf8_lossy(&bytes)),
                _ => panic!("the stream ended waiting for {what:?}; got {:?}", self.seen),
            }
        }
    }

    /// Reads to the end of the stream.
    async fn read_to_end(&mut self) {
        use futures_util::StreamExt;
        while let Some(Ok(bytes)) = tokio::time::timeout(DEADLINE, self.body.next())
            .await
            .expect("the stream ends")
        {
            self.seen.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
}

fn mkfifo(path: &Path) {
    let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0, "mkfifo");
}

#[tokio::test]
async fn fifos_and_devices_are_refused_and_never_block_a_stream() {
    let (node, root) = node_with_root().await;
    let dir = root.path();
    write(&dir.join("app.log"), "only key\n");
    // A FIFO named like a rotated sibling blocked open(2) forever: n is not met by the file,
    // so the siblings are searched.
    mkfifo(&dir.join("app.log.1"));
    let answer = tokio::time::timeout(
        DEADLINE,
        get(&node, "/logs?filename=app.log&keyword=key&n=10"),
    )
    .await
    .expect("the stream ends");
    assert_eq!(answer.0, StatusCode::OK);
    assert_eq!(lines(&answer.1), ["only key"]);
    mkfifo(&dir.join("pipe.log"));
    let (status, body) = tokio::time::timeout(DEADLINE, get(&node, "/logs?filename=pipe.log"))
        .await
        .expect("an answer");
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("not a regular file (a FIFO)"), "{body}");
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.log")).unwrap();
    let (status, body) = get(&node, "/logs?filename=zero.log").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = get(&node, &format!("/logs?filename={}", "a".repeat(5000))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("at most 4096"), "{body}");
    let (status, body) = get(&node, &format!("/logs?filename=d/{}", "a".repeat(300))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let ready = node.get("/readyz").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_follow_stream_never_reads_outside_the_roots_after_rotation() {
    let (node, root) = node_with_root().await;
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.log");
    write(&secret, "TOP SECRET 1\n");
    let path = root.path().join("app.log");
    write(&path, "first\n");
    let response = node
        .get("/logs?filename=app.log&follow=true")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = StreamReader::new(response);
    stream.until("first\n").await;
    // Rotation, but the new name is a link to a file outside the root.
    fs::rename(&path, root.path().join("app.log.1")).unwrap();
    std::os::unix::fs::symlink(&secret, &path).unwrap();
    append(&secret, "TOP SECRET 2\n");
    stream.until("logmesh-error").await;
    stream.read_to_end().await;
    let seen = stream.seen;
    assert!(!seen.contains("SECRET"), "{seen}");
    assert!(seen.contains("outside the log roots"), "{seen}");
}

#[tokio::test]
async fn file_streams_are_capped_and_idle_follows_hold_no_thread() {
    let root = tempfile::tempdir().expect("temp dir");
    write(&root.path().join("app.log"), "hello\n");
    let roots = vec![root.path().to_owned()];
    // More follow streams than tokio's blocking pool has threads (512): when each pinned a
    // thread, the store writer and readiness starved behind them.
    const STREAMS: usize = 520;
    let node = TestNode::start(|config| {
        config.log_roots = roots;
        config.http.max_file_streams = STREAMS;
    })
    .await;
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let response = node
            .get("/logs?filename=app.log&follow=true")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        streams.push(response);
    }
    let response = node.get("/logs?filename=app.log").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("--max-file-streams")
    );
    let ready = node.get("/readyz").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let response = node
        .post("/event")
        .body("stored meanwhile")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    node.wait_for_stored(1).await;
    // Streams that end give their place back.
    drop(streams.pop());
    eventually("a stream slot freed", DEADLINE, || async {
        node.get("/logs?filename=app.log")
            .send()
            .await
            .unwrap()
            .status()
            == StatusCode::OK
    })
    .await;
}

#[tokio::test]
async fn a_followed_name_replaced_by_a_link_inside_the_root_is_followed_once() {
    let (node, root) = node_with_root().await;
    let path = root.path().join("app.log");
    write(&path, "first\n");
    let next = root.path().join("app-2.log");
    write(&next, "second\n");
    let response = node
        .get("/logs?filename=app.log&follow=true")
        .send()
        .await
        .unwrap();
    let mut stream = StreamReader::new(response);
    stream.until("first\n").await;
    // Rotation by a link: app.log now leads to app-2.log, inside the root.
    fs::rename(&path, root.path().join("app.log.1")).unwrap();
    std::os::unix::fs::symlink(&next, &path).unwrap();
    stream.until("second\n").await;
    append(&next, "third\n");
    stream.until("third\n").await;
    let seen = stream.seen;
    assert_eq!(seen, "first\nsecond\nthird\n", "each line once");
}

#[tokio::test]
async fn a_file_used_as_a_directory_is_not_found_not_a_server_error() {
    let (node, root) = node_with_root().await;
    write(&root.path().join("app.log"), "line\n");
    let (status, body) = get(&node, "/logs?filename=app.log/x").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn a_forwarded_follow_stream_is_released_on_the_member_when_the_client_leaves() {
    needs!(Nats, Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let cluster = TestCluster::start(2, &nats_url(), database.url(), &["--max-file-streams", "1"]);
    write(
        &cluster.nodes[1].event_log_dir().join("quiet.log"),
        "line\n",
    );
    eventually("two members", DEADLINE, || async {
        cluster_get(&cluster, 0, "/logs?hostname=node-1&filename=quiet.log")
            .await
            .0
            == StatusCode::OK
    })
    .await;
    // A follow through node-0 that nothing more is written to: node-1's one stream is taken.
    let follow = cluster
        .client
        .get(format!(
            "{}/logs?hostname=node-1&filename=quiet.log&follow=true",
            cluster.nodes[0].url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), StatusCode::OK);
    eventually("node-1's stream taken", DEADLINE, || async {
        cluster_get(&cluster, 1, "/logs?filename=quiet.log").await.0
            == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    // The client leaves: node-0 drops its request to node-1, which frees the stream.
    drop(follow);
    eventually("node-1's stream released", DEADLINE, || async {
        cluster_get(&cluster, 1, "/logs?filename=quiet.log").await.0 == StatusCode::OK
    })
    .await;
}

#[tokio::test]
async fn old_event_log_files_go_oldest_first_and_a_follower_goes_on() {
    // Files of 4 KiB at most, 16 KiB in all: rotation removes the oldest as events arrive.
    let node = TestNode::start(|config| {
        config.event_log.max_bytes = 4 * 1024;
        config.event_log.keep = 100;
        config.event_log.max_total_bytes = Some(16 * 1024);
    })
    .await;
    let dir = node.event_log_dir();
    let mut response = node
        .get("/logs?filename=events.log&follow=true&n=1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut seen = String::new();
    for round in 0..20 {
        let body: String = (0..20)
            .map(|i| {
                format!(
                    "{{\"service\":\"api\",\"message\":\"round {round} event {i} {}\"}}\n",
                    "x".repeat(40)
                )
            })
            .collect();
        let answer = node
            .post("/api/v1/logs")
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
        // The follower sees each round's last event, across the rotations and removals.
        let last = format!("round {round} event 19");
        let result = tokio::time::timeout(DEADLINE, async {
            while !seen.contains(&last) {
                let chunk = response.chunk().await.unwrap().expect("the stream goes on");
                seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
        assert!(result.is_ok(), "no {last} in {seen:?}");
    }
    let mut rotated: Vec<u32> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("events.log.")?.parse().ok()
        })
        .collect();
    rotated.sort();
    let total: u64 = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum();
    assert!(total <= 16 * 1024, "{total} bytes in {rotated:?}");
    // The newest rotated files are kept, with no gap: the oldest went first.
    assert_eq!(rotated.first(), Some(&1), "{rotated:?}");
    assert!(rotated.windows(2).all(|w| w[1] == w[0] + 1), "{rotated:?}");
    assert!(rotated.len() >= 2, "{rotated:?}");
    // Every event is still stored: the event log's files are not the store.
    node.wait_for_stored(400).await;
}
