//! A cluster of real `logmesh` processes on loopback, sharing one NATS server and one SQL
//! database, each test on a stream and database of its own.

use super::services::free_port;
use super::{NodeProcess, Stored, event_log_lines, eventually};
use sqlx::Connection;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tempfile::TempDir;

pub struct ClusterNode {
    pub name: String,
    pub listen: String,
    pub dir: TempDir,
    pub process: Option<NodeProcess>,
}

impl ClusterNode {
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    pub fn event_log_dir(&self) -> PathBuf {
        self.dir.path().join("eventlog")
    }

    pub fn process(&mut self) -> &mut NodeProcess {
        self.process.as_mut().expect("the node is running")
    }
}

pub struct TestCluster {
    pub nats_url: String,
    pub database_url: String,
    /// The stream name: also names the membership bucket and the consumers.
    pub stream: String,
    /// Flags every node gets, besides the cluster's own.
    pub extra_args: Vec<String>,
    pub nodes: Vec<ClusterNode>,
    pub client: reqwest::Client,
}

impl TestCluster {
    /// Starts `n` nodes named node-0 … node-(n-1).
    pub fn start(n: usize, nats_url: &str, database_url: &str, extra_args: &[&str]) -> TestCluster {
        let mut cluster = TestCluster {
            nats_url: nats_url.to_owned(),
            database_url: database_url.to_owned(),
            stream: format!("T_{}", uuid::Uuid::now_v7().simple()),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            nodes: Vec::new(),
            client: reqwest::Client::new(),
        };
        for i in 0..n {
            cluster.add_node(&format!("node-{i}"));
        }
        cluster
    }

    pub fn add_node(&mut self, name: &str) -> usize {
        let node = ClusterNode {
            name: name.to_owned(),
            listen: format!("127.0.0.1:{}", free_port()),
            dir: tempfile::tempdir().expect("temp dir"),
            process: None,
        };
        self.nodes.push(node);
        let index = self.nodes.len() - 1;
        self.start_node(index);
        index
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--nats".to_owned(),
            self.nats_url.clone(),
            "--database".to_owned(),
            self.database_url.clone(),
            "--nats-stream".to_owned(),
            self.stream.clone(),
            "--nats-subject".to_owned(),
            format!("test.{}", self.stream),
        ];
        if !self.extra_args.iter().any(|a| a == "--flush-interval") {
            args.extend(["--flush-interval".to_owned(), "200ms".to_owned()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Starts (or restarts) node `index` on its own address and data directory.
    pub fn start_node(&mut self, index: usize) {
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = &mut self.nodes[index];
        node.process = Some(NodeProcess::spawn_as(
            &node.name,
            &node.listen,
            node.dir.path(),
            &args,
            &[],
        ));
    }

    pub fn kill9(&mut self, index: usize) {
        self.nodes[index].process().kill9();
        self.nodes[index].process = None;
    }

    pub fn terminate(&mut self, index: usize) {
        let status = self.nodes[index].process().terminate();
        assert!(status.success(), "node {index} exited with {status}");
        self.nodes[index].process = None;
    }

    /// POSTs NDJSON to node `index`; returns the status.
    pub async fn post_ndjson(&self, index: usize, body: String) -> reqwest::StatusCode {
        self.client
            .post(format!("{}/api/v1/logs", self.nodes[index].url()))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("the node answers")
            .status()
    }

    /// Event ids in node `index`'s event log file, with how often each appears.
    pub fn event_log_ids(&self, index: usize) -> HashMap<String, usize> {
        let mut ids = HashMap::new();
        for line in event_log_lines(&self.nodes[index].event_log_dir()) {
            *ids.entry(line["id"].as_str().expect("id").to_owned())
                .or_default() += 1;
        }
        ids
    }

    pub async fn stored(&self) -> Stored {
        stored_sql(&self.database_url).await
    }

    /// Waits until every node's event log holds `count` events of `service`, then until the
    /// store holds `count` events in all (the store writer commits on its own schedule, not
    /// with the event logs).
    pub async fn wait_for_everywhere(&self, service: &str, count: usize) {
        for node in &self.nodes {
            eventually(
                &format!("{count} events of {service} in {}'s event log", node.name),
                Duration::from_secs(30),
                || async {
                    event_log_lines(&node.event_log_dir())
                        .iter()
                        .filter(|line| line["service"] == service)
                        .count()
                        == count
                },
            )
            .await;
        }
        eventually("every event stored", Duration::from_secs(30), || async {
            self.stored().await.ids.len() == count
        })
        .await;
    }
}

/// What a PostgreSQL or MySQL database holds.
pub async fn stored_sql(url: &str) -> Stored {
    let (rows, severity_sum, ids): (i64, i64, Vec<(String, i64)>) = if url.starts_with("postgres") {
        let mut db = sqlx::PgConnection::connect(url)
            .await
            .expect("connect to PostgreSQL");
        let rows = sqlx::query_scalar("SELECT count(*) FROM service_logs")
            .fetch_one(&mut db)
            .await
            .expect("count rows");
        let sum = sqlx::query_scalar(
            "SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM service_severity",
        )
        .fetch_one(&mut db)
        .await
        .expect("sum counts");
        let ids = sqlx::query_as("SELECT id, count(*) FROM service_logs GROUP BY id")
            .fetch_all(&mut db)
            .await
            .expect("ids");
        (rows, sum, ids)
    } else {
        let mut db = sqlx::MySqlConnection::connect(url)
            .await
            .expect("connect to MySQL");
        let rows = sqlx::query_scalar("SELECT count(*) FROM service_logs")
            .fetch_one(&mut db)
            .await
            .expect("count rows");
        let sum = sqlx::query_scalar(
            "SELECT CAST(coalesce(sum(count), 0) AS SIGNED) FROM service_severity",
        )
        .fetch_one(&mut db)
        .await
        .expect("sum counts");
        let ids = sqlx::query_as("SELECT id, count(*) FROM service_logs GROUP BY id")
            .fetch_all(&mut db)
            .await
            .expect("ids");
        (rows, sum, ids)
    };
    Stored {
        rows,
        severity_sum,
        ids: ids.into_iter().collect(),
    }
}
