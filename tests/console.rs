//! The web console in a real browser: headless Chromium, driven by playwright-core from the
//! Node.js scripts in `tests/console/`, against real nodes this file starts and fills. A
//! script's failure fails the test; a missing browser or `node_modules` fails it loudly.
//! Screenshots of every panel land in `reports/console/` (git-ignored).

mod common;

use common::cluster::TestCluster;
use common::databases::{Server, TestDatabase};
use common::services::nats_url;
use common::{TestNode, eventually, ndjson_line};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Longest a whole script may run; each of its steps has its own, shorter deadline.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A browser script running under Node.js, its stdout read line by line.
struct Script {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    name: String,
}

impl Script {
    fn start(name: &str, env: &[(&str, &str)]) -> Script {
        let dir = manifest_dir().join("tests/console");
        assert!(
            dir.join("node_modules/playwright-core").is_dir(),
            "{}/node_modules/playwright-core is missing: run `npm ci` there (scripts/test.sh does)",
            dir.display()
        );
        let shots = manifest_dir().join("reports/console");
        let mut command = Command::new("node");
        command
            .arg(dir.join(format!("{name}.mjs")))
            .current_dir(&dir)
            .env("LOGMESH_TEST_CHROMIUM", common::tier::chromium())
            .env("LOGMESH_CONSOLE_SCREENSHOTS", &shots)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `node` (Node.js 18 or newer is needed): {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        Script {
            child,
            lines: BufReader::new(stdout).lines(),
            name: name.to_owned(),
        }
    }

    /// Reads the script's output (echoing it) until a line equal to `wanted`; panics if the
    /// script ends first or the deadline passes.
    async fn wait_for_line(&mut self, wanted: &str) {
        let read = async {
            while let Some(line) = self.lines.next_line().await.expect("read the script") {
                println!("{}: {line}", self.name);
                if line == wanted {
                    return true;
                }
            }
            false
        };
        match tokio::time::timeout(SCRIPT_DEADLINE, read).await {
            Ok(true) => {}
            Ok(false) => panic!("{} ended before printing `{wanted}`", self.name),
            Err(_) => panic!(
                "{} did not print `{wanted}` within {SCRIPT_DEADLINE:?}",
                self.name
            ),
        }
    }

    /// Echoes the rest of the output and waits for the exit.
    async fn finish(mut self) -> ExitStatus {
        let name = self.name.clone();
        let run = async {
            while let Some(line) = self.lines.next_line().await.expect("read the script") {
                println!("{name}: {line}");
            }
            self.child.wait().await.expect("wait for the script")
        };
        tokio::time::timeout(SCRIPT_DEADLINE, run)
            .await
            .unwrap_or_else(|_| panic!("{name} did not finish within {SCRIPT_DEADLINE:?}"))
    }
}

/// The page's SSE parser, under Node's own test runner (no browser needed).
#[test]
fn the_live_tail_parses_server_sent_events_split_anywhere() {
    let output = std::process::Command::new("node")
        .args(["--test", "sse.test.mjs"])
        .current_dir(manifest_dir().join("tests/console"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run `node` (Node.js 18 or newer is needed): {e}"));
    assert!(
        output.status.success(),
        "node --test sse.test.mjs failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_panel_shows_real_data_behind_the_token_prompt() {
    needs!(Browser);
    let roots = tempfile::tempdir().expect("temp dir");
    let app = roots.path().join("app");
    std::fs::create_dir(&app).expect("log root");
    std::fs::write(
        app.join("app.log"),
        "hay 0\nneedle 1\nhay\nneedle 2\nneedle 3\n",
    )
    .expect("app.log");
    let token = "console-test-token";
    let node = TestNode::start(|config| {
        config.node_name = "console-node".into();
        config.api_token = Some(token.into());
        config.log_roots = vec![app.clone()];
        config.syslog.listen =
            vec![logmesh::syslog::SyslogListen::parse("tcp://127.0.0.1:0").unwrap()];
    })
    .await;

    // The shell is public, the data is not.
    let page = node.get("/").send().await.expect("GET /");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let module = node
        .get("/console/app.js")
        .send()
        .await
        .expect("GET app.js");
    assert_eq!(module.status(), 200);
    assert_eq!(
        module.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let etag = module.headers()["etag"].clone();
    let again = node
        .get("/console/app.js")
        .header("if-none-match", etag)
        .send()
        .await
        .expect("GET app.js again");
    assert_eq!(again.status(), 304);
    assert_eq!(
        node.get("/console/nope.js").send().await.unwrap().status(),
        404
    );
    for path in [
        "/api/v1/cluster",
        "/api/v1/node/stats",
        "/api/v1/logs/stats",
    ] {
        let status = node.get(path).send().await.unwrap().status();
        assert_eq!(status, 401, "{path} without the token");
    }

    let word = format!("zq{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let mut body = String::new();
    for i in 1..=3 {
        body += &ndjson_line(
            &format!("checkout-{i}"),
            "checkout",
            "error",
            &format!("payment {word} declined {i}"),
        );
    }
    body += &ndjson_line("api-1", "api", "info", "GET /health");
    body += &ndjson_line("api-2", "api", "info", "GET /pay");
    body += &ndjson_line("db-1", "db", "warn", "slow query");
    let accepted = node
        .post("/api/v1/logs")
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("ingest");
    assert_eq!(accepted.status(), 202);
    let counter = node
        .post("/metrics")
        .bearer_auth(token)
        .body(r#"{"name":"orders_total","labels":{"shop":"eu"},"by":5}"#)
        .send()
        .await
        .expect("counter");
    assert_eq!(counter.status(), 200);

    // The figures the ingest panel charts: this node's, or every member's through it.
    let stats: serde_json::Value = node
        .get("/api/v1/node/stats")
        .bearer_auth(token)
        .send()
        .await
        .expect("node stats")
        .json()
        .await
        .expect("node stats JSON");
    assert_eq!(stats["node"], "console-node");
    assert_eq!(stats["events_accepted"], 6, "{stats}");
    let all: serde_json::Value = node
        .get("/api/v1/node/stats?hostname=*")
        .bearer_auth(token)
        .send()
        .await
        .expect("node stats of every member")
        .json()
        .await
        .expect("node stats JSON");
    assert_eq!(all["nodes"][0]["node"], "console-node", "{all}");
    let elsewhere = node
        .get("/api/v1/node/stats?hostname=nobody")
        .bearer_auth(token)
        .send()
        .await
        .expect("node stats of nobody");
    assert_eq!(elsewhere.status(), 404);

    // One syslog message (service billing: between api and checkout, so that the counts
    // panel's orderings stay as it expects), for the ingest panel's listener table.
    let listener = node.node.as_ref().unwrap().syslog_listeners()[0];
    let mut syslog = tokio::net::TcpStream::connect(listener.addr)
        .await
        .expect("syslog connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut syslog,
        b"<14>1 2026-11-23T10:15:00Z vm1 billing - - - invoice sent\n",
    )
    .await
    .expect("syslog write");
    drop(syslog);
    eventually(
        "the syslog message stored",
        Duration::from_secs(30),
        || async {
            let stats: serde_json::Value = node
                .get("/api/v1/node/stats")
                .bearer_auth(token)
                .send()
                .await
                .expect("node stats")
                .json()
                .await
                .expect("node stats JSON");
            stats["syslog"][0]["messages"] == 1 && stats["events_accepted"] == 7
        },
    )
    .await;

    let script = Script::start(
        "panels",
        &[
            ("LOGMESH_CONSOLE_URL", &node.url),
            ("LOGMESH_CONSOLE_TOKEN", token),
            ("LOGMESH_CONSOLE_NODE", "console-node"),
            ("LOGMESH_CONSOLE_WORD", &word),
            ("LOGMESH_CONSOLE_SYSLOG", &listener.to_string()),
        ],
    );
    let status = script.finish().await;
    assert!(
        status.success(),
        "the panels script failed ({status}); see its output above and reports/console/"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn members_joining_leaving_and_dying_show_within_seconds() {
    needs!(Browser, Nats, Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let mut cluster = TestCluster::start(1, &nats_url(), database.url(), &[]);
    let mut script = Script::start(
        "membership",
        &[("LOGMESH_CONSOLE_URL", &cluster.nodes[0].url())],
    );
    script.wait_for_line("waiting: join node-1").await;
    let joined = cluster.add_node("node-1");
    script.wait_for_line("waiting: leave node-1").await;
    cluster.terminate(joined);
    script.wait_for_line("waiting: join node-2").await;
    let doomed = cluster.add_node("node-2");
    script.wait_for_line("waiting: kill node-2").await;
    cluster.kill9(doomed);
    let status = script.finish().await;
    assert!(
        status.success(),
        "the membership script failed ({status}); see its output above and reports/console/"
    );
}
