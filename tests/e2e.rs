//! The load tools and the end-to-end proof with the real binary: `logmesh pub` and
//! `logmesh sim` against a node (summaries checked against the stats, input from a file and
//! stdin, a full queue's 503 waited out, bad input refused with nothing sent), and
//! `logmesh e2e` for 10 s against three-node clusters on PostgreSQL and on MariaDB, and for 15 s
//! with a node killed with -9 and restarted mid-run.

mod common;

use common::cluster::TestCluster;
use common::databases::{Server, TestDatabase};
use common::services::nats_url;
use common::{TestNode, eventually};
use serde_json::Value;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// How long an e2e run may take as a whole: the 10 s load, the drain, start-up on two shared
/// cores.
const E2E_DEADLINE: Duration = Duration::from_secs(120);

fn logmesh(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_logmesh"));
    command
        .args(args)
        .env_remove("LOGMESH_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run(args: &[&str]) -> Output {
    logmesh(args).output().await.expect("run logmesh")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

#[tokio::test]
async fn pub_publishes_n_events_and_its_summary_matches_the_stats() {
    let node = TestNode::start(|_| {}).await;
    let output = run(&[
        "pub", "1200", "--url", &node.url, "--batch", "500", "--json",
    ])
    .await;
    assert_exit(&output, 0);
    let summary: Value = serde_json::from_slice(&output.stdout).expect("JSON summary");
    assert_eq!(summary["events_sent"], 1200);
    assert_eq!(summary["batches"], 3);
    assert_eq!(summary["events_acknowledged"], 1200);
    assert_eq!(summary["events_rejected"], 0);
    assert_eq!(summary["nodes"][0]["events_acknowledged"], 1200);
    node.wait_for_stored(1200).await;
    let stats = node.get_json("/api/v1/logs/stats").await;
    let services: Vec<&str> = stats["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["service"].as_str().unwrap())
        .collect();
    assert!(services.len() > 1, "random services: {services:?}");

    // The plain summary names the same figures.
    let output = run(&["pub", "10", "--url", &node.url]).await;
    assert_exit(&output, 0);
    let line = text(&output.stdout);
    assert!(
        line.starts_with("sent 10 events in 1 batches: 10 acknowledged, 0 rejected"),
        "{line}"
    );
    node.wait_for_stored(1210).await;
}

#[tokio::test]
async fn pub_waits_out_a_full_queue_and_sends_the_same_events_again() {
    // Room for one request of 10 events; the writers empty the queue every 500 ms, so the
    // request right after an accepted one finds it full (503, Retry-After: 1).
    let node = TestNode::start(|config| {
        config.queue_limits.max_events = 10;
        config.batch_size = 1000;
        config.flush_interval = Duration::from_millis(500);
    })
    .await;
    let output = run(&[
        "pub",
        "50",
        "--url",
        &node.url,
        "--batch",
        "10",
        "--concurrency",
        "1",
        "--json",
    ])
    .await;
    assert_exit(&output, 0);
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["events_acknowledged"], 50, "{summary:#}");
    assert!(
        summary["nodes"][0]["requests_shed_503"].as_u64().unwrap() >= 1,
        "the queue never filled: {summary:#}"
    );
    node.wait_for_stored(50).await;
}

#[tokio::test]
async fn pub_reads_ndjson_from_a_file_and_from_stdin() {
    let node = TestNode::start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    std::fs::write(
        &file,
        "{\"id\":\"from-file-1\",\"service\":\"billing\",\"severity\":\"error\",\"message\":\"card declined\"}\n\
         {\"service\":\"billing\",\"message\":\"paid\",\"attributes\":{\"amount\":12}}\n\n\
         {\"service\":\"auth\",\"severity\":\"warning\",\"message\":\"slow login\"}\n",
    )
    .unwrap();
    let output = run(&["pub", "--file", file.to_str().unwrap(), "--url", &node.url]).await;
    assert_exit(&output, 0);
    assert!(
        text(&output.stdout).starts_with("sent 3 events"),
        "{}",
        text(&output.stdout)
    );

    let mut child = logmesh(&["pub", "--file", "-", "--url", &node.url, "--json"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"id\":\"from-stdin-1\",\"service\":\"api\",\"message\":\"hello\"}\n{\"id\":\"from-stdin-2\",\"service\":\"api\",\"message\":\"again\"}\n")
        .await
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert_exit(&output, 0);
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["events_acknowledged"], 2);

    node.wait_for_stored(5).await;
    let found = node
        .get_json("/api/v1/logs/search?service=billing&severity=error")
        .await;
    assert_eq!(found["events"][0]["id"], "from-file-1");
    // Empty input is bad input.
    let output = run(&["pub", "-f", "-", "--url", &node.url]).await;
    assert_exit(&output, 2);
}

#[tokio::test]
async fn sim_sends_from_several_services_and_its_summary_matches_the_stats() {
    let node = TestNode::start(|_| {}).await;
    let output = run(&[
        "sim",
        "--url",
        &node.url,
        "--duration",
        "2s",
        "--services",
        "3",
        "--rate",
        "50",
        "--json",
    ])
    .await;
    assert_exit(&output, 0);
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    let acknowledged = summary["events_acknowledged"].as_i64().unwrap();
    assert!(acknowledged > 0, "{summary:#}");
    assert_eq!(summary["events_sent"], summary["events_acknowledged"]);
    node.wait_for_stored(acknowledged).await;
    let stats = node.get_json("/api/v1/logs/stats").await;
    let services: std::collections::BTreeSet<&str> = stats["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["service"].as_str().unwrap())
        .collect();
    assert_eq!(
        services,
        ["auth", "checkout", "payments"].into_iter().collect()
    );
}

#[tokio::test]
async fn bad_usage_and_bad_input_are_refused_with_nothing_sent() {
    let node = TestNode::start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(
        &bad,
        "{\"service\":\"a\",\"message\":\"fine\"}\n{\"service\":\"a\",\"message\":\"x\",\"sevrity\":\"info\"}\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.ndjson");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["pub", "many", "--url", &node.url], "many"),
        (vec!["pub", "--url", &node.url], "N"),
        (vec!["pub", "10", "--url", ""], "no node URL"),
        (
            vec!["pub", "10", "--url", "localhost:5555"],
            "not a node URL",
        ),
        (
            vec![
                "pub",
                "--file",
                missing.to_str().unwrap(),
                "--url",
                &node.url,
            ],
            "missing.ndjson",
        ),
        (
            vec!["pub", "--file", bad.to_str().unwrap(), "--url", &node.url],
            "line 2",
        ),
        (
            vec!["sim", "--duration", "0", "--url", &node.url],
            "duration",
        ),
        (
            vec!["sim", "--duration", "5s", "--url", "nope"],
            "not a node URL",
        ),
        (vec!["e2e", "--duration", "5s"], "--nodes"),
        (
            vec!["e2e", "--nodes", "", "--duration", "5s"],
            "no node URL",
        ),
        (
            vec!["e2e", "--nodes", "http://", "--duration", "5s"],
            "not a node URL",
        ),
        (
            vec!["e2e", "--nodes", &node.url, "--duration", "0s"],
            "duration",
        ),
    ];
    for (args, says) in cases {
        let output = run(&args).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&output.stderr)
        );
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(says),
            "{args:?} should say {says:?}: {stderr}"
        );
        assert!(
            output.stdout.is_empty(),
            "{args:?} printed {}",
            text(&output.stdout)
        );
    }
    // Nothing reached the node: not a single ingest request.
    let metrics = node
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("route=\"/api/v1/logs\""),
        "something was sent: {metrics}"
    );
    assert_eq!(node.stats_total().await, 0);
}

/// Three nodes with a small batch size and flush interval, as scripts/e2e.sh starts them.
/// A short `ack_wait` makes JetStream hand a killed node's unacknowledged batches to the
/// others after 5 s rather than 30 s, which keeps the kill test short.
fn small_batches_cluster(database: &TestDatabase) -> TestCluster {
    TestCluster::start(
        3,
        &nats_url(),
        database.url(),
        &[
            "--batch-size",
            "50",
            "--flush-interval",
            "200ms",
            "--nats-ack-wait",
            "5s",
        ],
    )
}

fn e2e_args(cluster: &TestCluster, report: &std::path::Path, duration: &str) -> Vec<String> {
    let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    [
        "e2e",
        "--nodes",
        &nodes.join(","),
        "--duration",
        duration,
        "--drain-timeout",
        "60s",
        "--services",
        "3",
        "--rate",
        "40",
        "--report",
        report.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The checks every passing run's report must show.
fn assert_report_passed(report: &std::path::Path, members: usize) -> Value {
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(report).expect("the report file")).unwrap();
    let verification = &report["verification"];
    assert_eq!(report["passed"], true, "{report:#}");
    let acknowledged = verification["acknowledged"].as_u64().unwrap();
    assert!(
        acknowledged > 100,
        "only {acknowledged} events acknowledged"
    );
    assert_eq!(
        verification["service_logs_rows"].as_u64().unwrap(),
        acknowledged + verification["stored_in_doubt"].as_u64().unwrap()
    );
    assert_eq!(
        verification["service_severity_total"].as_u64(),
        verification["service_logs_rows"].as_u64()
    );
    let logs = verification["event_logs"].as_array().unwrap();
    assert_eq!(logs.len(), members, "{logs:?}");
    assert!(logs.iter().all(|log| log["acknowledged_missing"] == 0));
    assert!(report["lag"]["samples"].as_u64().unwrap() > 0, "{report:#}");
    let flushes: f64 = report["batches"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|node| node["during_run"]["store_flushes"].as_f64())
        .sum();
    assert!(flushes > 0.0, "no flush observed: {report:#}");
    report
}

async fn e2e_passes_against_three_nodes(server: Server) {
    let database = TestDatabase::create(server).await;
    let cluster = small_batches_cluster(&database);
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let args = e2e_args(&cluster, &report, "10s");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = tokio::time::timeout(E2E_DEADLINE, run(&args))
        .await
        .expect("e2e finishes");
    assert_exit(&output, 0);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("PASSED"), "{stdout}");
    assert_report_passed(&report, 3);
    // The report's figures are the database's own: nothing else of the run is there.
    let stored = cluster.stored().await;
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        stored.rows as u64,
        report["verification"]["service_logs_rows"]
            .as_u64()
            .unwrap()
    );
    assert_eq!(stored.rows, stored.severity_sum);
}

#[tokio::test]
async fn e2e_passes_against_three_nodes_on_postgres() {
    needs!(Nats, Postgres);
    e2e_passes_against_three_nodes(Server::Postgres).await;
}

#[tokio::test]
async fn e2e_passes_against_three_nodes_on_mariadb() {
    needs!(Nats, Mysql);
    e2e_passes_against_three_nodes(Server::Mysql).await;
}

#[tokio::test]
async fn e2e_passes_when_a_node_is_killed_and_restarted_mid_run() {
    needs!(Nats, Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let mut cluster = small_batches_cluster(&database);
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    // Longer than the others: the kill and the restart must both fall inside the run, also on
    // a loaded machine.
    let run_for = Duration::from_secs(15);
    let args = e2e_args(&cluster, &report, "15s");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let e2e = logmesh(&args).spawn().expect("start e2e");

    // Mid-run: once the cluster is storing the run's events, kill node 1 ...
    let stats_total = |url: String| async move {
        let stats: Value = reqwest::get(format!("{url}/api/v1/logs/stats"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        stats["total"].as_i64()
    };
    eventually(
        "the run's first events stored",
        Duration::from_secs(30),
        || {
            let url = cluster.nodes[0].url();
            async move { stats_total(url).await.unwrap_or(0) > 50 }
        },
    )
    .await;
    let at_kill = stats_total(cluster.nodes[0].url()).await.unwrap();
    cluster.kill9(1);
    // ... let the other two carry the load for a while (the run goes on) ...
    eventually(
        "the load going on without node 1",
        Duration::from_secs(30),
        || {
            let url = cluster.nodes[0].url();
            async move { stats_total(url).await.unwrap_or(0) > at_kill + 100 }
        },
    )
    .await;
    // ... and bring it back before the run ends.
    cluster.start_node(1);
    assert!(
        started.elapsed() < run_for,
        "the kill and restart took the whole run ({:?}); the test proves nothing",
        started.elapsed()
    );

    let output = tokio::time::timeout(E2E_DEADLINE, e2e.wait_with_output())
        .await
        .expect("e2e finishes")
        .unwrap();
    assert_exit(&output, 0);
    let report = assert_report_passed(&report, 3);
    // The e2e command met the dead node and went around it.
    let node1 = &report["load"]["nodes"][1];
    assert!(
        node1["requests_failed"].as_u64().unwrap() > 0,
        "the dead node was never met: {report:#}"
    );
    assert_eq!(report["load"]["events_not_acknowledged"], 0, "{report:#}");
}

#[tokio::test]
async fn e2e_fails_and_names_the_mismatch_when_the_counts_disagree() {
    needs!(Nats, Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let cluster = TestCluster::start(1, &nats_url(), database.url(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let mut e2e = logmesh(&[
        "e2e",
        "--nodes",
        &cluster.nodes[0].url(),
        "--duration",
        "4s",
        "--drain-timeout",
        "3s",
        "--services",
        "2",
        "--rate",
        "20",
        "--report",
        report.to_str().unwrap(),
    ])
    .spawn()
    .unwrap();
    // The run announces its tag first: "logmesh e2e: run <tag>: …".
    let mut stderr = tokio::io::BufReader::new(e2e.stderr.take().unwrap());
    let mut first = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut stderr, &mut first)
        .await
        .unwrap();
    let tag = first
        .strip_prefix("logmesh e2e: run ")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no run tag in {first:?}"))
        .to_owned();
    // Once the run's counts exist, bump one behind the store's back.
    let db = <sqlx::PgConnection as sqlx::Connection>::connect(database.url())
        .await
        .unwrap();
    let pattern = format!("e2e-{tag}-%");
    let db = tokio::sync::Mutex::new(db);
    eventually(
        "the run's counts to exist",
        Duration::from_secs(30),
        || async {
            let updated = sqlx::query(
                "UPDATE service_severity SET count = count + 1000 \
             WHERE (service, severity) IN \
             (SELECT service, severity FROM service_severity WHERE service LIKE $1 LIMIT 1)",
            )
            .bind(&pattern)
            .execute(&mut *db.lock().await)
            .await
            .unwrap();
            updated.rows_affected() > 0
        },
    )
    .await;

    let output = tokio::time::timeout(E2E_DEADLINE, e2e.wait_with_output())
        .await
        .expect("e2e finishes")
        .unwrap();
    assert_exit(&output, 1);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("FAILED"), "{stdout}");
    assert!(stdout.contains("MISMATCH: "), "{stdout}");
    assert!(stdout.contains("in service_severity"), "{stdout}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["passed"], false);
    assert_eq!(
        report["verification"]["missing_from_store"], 0,
        "{report:#}"
    );
}
