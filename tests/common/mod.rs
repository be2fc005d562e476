//! Test harness: start real nodes (in-process on an ephemeral port, or as the real binary),
//! wait on conditions with deadlines, and read what reached SQLite and the event log files.
#![allow(dead_code)]

pub mod cluster;
pub mod databases;
pub mod services;
pub mod tier;

use logmesh::node::{Node, NodeConfig};
use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How often [`eventually`] re-checks its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns true; panics naming `what` after `deadline`.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Runs the real `logmesh` binary with `args` (and no `LOGMESH_URL` or `LOGMESH_API_TOKEN`
/// from the environment): its exit code, stdout and stderr.
pub async fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_logmesh"))
        .args(args)
        .env_remove("LOGMESH_URL")
        .env_remove("LOGMESH_API_TOKEN")
        .output()
        .await
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A node running inside the test process, with its own temporary data directory.
pub struct TestNode {
    pub node: Option<Node>,
    pub dir: TempDir,
    pub config: NodeConfig,
    pub url: String,
    pub client: reqwest::Client,
}

impl TestNode {
    pub async fn start(configure: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = NodeConfig::ephemeral(dir.path());
        config.flush_interval = Duration::from_millis(50);
        // Tests send fixed timestamps of days ago; retention is tested where it is set.
        config.retention = None;
        configure(&mut config);
        let node = Node::start(config.clone()).await.expect("node starts");
        let url = node.url();
        TestNode {
            node: Some(node),
            dir,
            config,
            url,
            client: reqwest::Client::new(),
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("logmesh.db")
    }

    pub fn event_log_dir(&self) -> PathBuf {
        self.config.event_log_dir()
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.url))
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.url))
    }

    /// A GET answered with JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("JSON answer")
    }

    /// The `total` of `GET /api/v1/logs/stats`.
    pub async fn stats_total(&self) -> i64 {
        let stats: serde_json::Value = self
            .get("/api/v1/logs/stats")
            .send()
            .await
            .expect("stats request")
            .json()
            .await
            .expect("stats JSON");
        stats["total"].as_i64().expect("total")
    }

    /// Waits until the store holds `n` events in total.
    pub async fn wait_for_stored(&self, n: i64) {
        eventually(
            &format!("{n} stored events"),
            Duration::from_secs(20),
            || async { self.stats_total().await == n },
        )
        .await;
    }

    pub async fn shutdown(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }
}

/// The Prometheus text `GET /metrics` of the node at `url` answers.
pub async fn metrics_text(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics text")
}

/// The value of `sample` (a metric's name and labels, as the exposition writes them) in a
/// metrics text; 0 when it is absent (a counter not counted yet).
pub fn sample_value(metrics: &str, sample: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0, |value| value.parse().expect("an integer sample"))
}

/// What SQLite holds.
#[derive(Debug)]
pub struct Stored {
    pub rows: i64,
    pub severity_sum: i64,
    /// Rows per event id.
    pub ids: HashMap<String, i64>,
}

pub fn stored(db: &Path) -> Stored {
    let mut connection =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database");
    // One read transaction: the counts and the rows from the same snapshot, also while the
    // node writes and expires.
    let connection = connection.transaction().expect("begin a read transaction");
    let rows: i64 = connection
        .query_row("SELECT count(*) FROM service_logs", [], |r| r.get(0))
        .expect("count rows");
    let severity_sum: i64 = connection
        .query_row(
            "SELECT coalesce(sum(count), 0) FROM service_severity",
            [],
            |r| r.get(0),
        )
        .expect("sum counts");
    let mut ids = HashMap::new();
    let mut query = connection
        .prepare("SELECT id, count(*) FROM service_logs GROUP BY id")
        .expect("prepare");
    let found = query
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .expect("query ids");
    for row in found {
        let (id, n) = row.expect("row");
        ids.insert(id, n);
    }
    Stored {
        rows,
        severity_sum,
        ids,
    }
}

/// Every line of the event log files in `dir`, oldest file first.
pub fn event_log_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter_map(|path| {
                    let name = path.file_name()?.to_str()?.to_owned();
                    if name == "events.log" {
                        Some((0, path))
                    } else {
                        let n = name.strip_prefix("events.log.")?.parse().ok()?;
                        Some((n, path))
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    files
        .iter()
        .flat_map(|(_, path)| {
            // A file renamed by a rotation between listing and reading is read on the next
            // poll; the callers wait on a condition.
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(error) => panic!("read event log {}: {error}", path.display()),
            };
            // Complete lines only: a line the node is writing while this reads it is read whole
            // on the next poll (seen once in CI as a torn last line).
            let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
            complete
                .lines()
                .map(|line| serde_json::from_str(line).expect("event log lines are JSON"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// POSTs `body` as JSON to `url`; answers the status and the JSON answer.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = client
        .post(url)
        .json(body)
        .send()
        .await
        .expect("the node answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

/// The events of an NDJSON body, parsed as a node named `n` would at time 1 µs.
pub fn parse_events(body: &str) -> Vec<logmesh::event::Event> {
    logmesh::event::parse_json_body(
        body.as_bytes(),
        logmesh::event::IngestContext {
            node: "n",
            now_us: 1,
            oldest_us: i64::MIN,
        },
    )
    .expect("a valid NDJSON body")
}

/// One NDJSON line for an event with a known id.
pub fn ndjson_line(id: &str, service: &str, severity: &str, message: &str) -> String {
    serde_json::json!({"id": id, "service": service, "severity": severity, "message": message})
        .to_string()
        + "\n"
}

/// The real `logmesh` binary running `serve`, with JSON logs on stderr.
pub struct NodeProcess {
    pub child: Child,
    pub url: String,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl NodeProcess {
    pub fn spawn(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> NodeProcess {
        NodeProcess::spawn_as("proc-node", "127.0.0.1:0", data_dir, args, env)
    }

    /// A node with the given name, listening on `listen` (a fixed port lets a restarted node
    /// keep its address, as it would in production).
    pub fn spawn_as(
        name: &str,
        listen: &str,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> NodeProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_logmesh"));
        command
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--node-name")
            .arg(name)
            .arg("--log-format")
            .arg("json")
            .args(args)
            .env_remove("BATCHSIZE")
            .env_remove("FLUSHINTERVAL")
            // Tests send fixed timestamps of days ago; retention is tested where it is set
            // (a flag overrides this).
            .env("LOGMESH_RETENTION", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn logmesh");
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                    && json["fields"]["message"] == "Node is serving."
                {
                    let _ = addr_tx.send(json["fields"]["addr"].as_str().unwrap_or("").to_owned());
                }
                collected.lock().unwrap().push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the node did not start; stderr: {:?}",
                    lines.lock().unwrap()
                );
            }
        };
        NodeProcess {
            child,
            url: format!("http://{addr}"),
            stderr: lines,
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on a child we spawned and have not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < until,
                "the node did not exit after SIGTERM"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
