//! Syslog listeners, driven by real senders: Debian's rsyslogd forwarding a file with `omfwd`
//! over TCP (octet-counted RFC 5424 and newline-framed RFC 3164) and UDP, and Python's
//! `logging.handlers.SysLogHandler` over TCP (NUL-terminated frames without timestamps); then
//! malformed input over raw sockets (kept raw, or the connection closed, and the node
//! healthy), a sender faster than the store (slowed, nothing dropped), and a cluster.

mod common;

use common::cluster::TestCluster;
use common::databases::{Server, TestDatabase};
use common::services::{nats_url, start_rsyslogd};
use common::{TestNode, event_log_lines, eventually, metrics_text, sample_value};
use logmesh::syslog::{SyslogListen, Transport};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

async fn node_with_listeners() -> (TestNode, SocketAddr, SocketAddr) {
    let node = TestNode::start(|config| {
        config.syslog.listen = vec![
            SyslogListen::parse("tcp://127.0.0.1:0").unwrap(),
            SyslogListen::parse("udp://127.0.0.1:0").unwrap(),
        ];
    })
    .await;
    let listeners = node.node.as_ref().unwrap().syslog_listeners().to_vec();
    let find = |transport| {
        listeners
            .iter()
            .find(|listen| listen.transport == transport)
            .unwrap()
            .addr
    };
    let (tcp, udp) = (find(Transport::Tcp), find(Transport::Udp));
    (node, tcp, udp)
}

async fn events(node: &TestNode, query: &str) -> Vec<Value> {
    node.get_json(&format!("/api/v1/logs/search?{query}&limit=1000"))
        .await["events"]
        .as_array()
        .unwrap()
        .clone()
}

/// rsyslogd reading `input` and forwarding it with `omfwd` as `protocol` and `framing`.
fn rsyslog_config(
    work: &std::path::Path,
    input: &std::path::Path,
    target: SocketAddr,
    protocol: &str,
    extra: &str,
) -> String {
    format!(
        r#"global(workDirectory="{work}")
module(load="imfile")
input(type="imfile" File="{input}" Tag="shop:" Severity="warning" Facility="local3")
action(type="omfwd" target="127.0.0.1" port="{port}" protocol="{protocol}" {extra})
"#,
        work = work.display(),
        input = input.display(),
        port = target.port(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_forwards_over_tcp_both_framings_and_udp() {
    needs!(Rsyslog);
    let (node, tcp, udp) = node_with_listeners().await;
    let cases = [
        (
            "octet",
            tcp,
            "tcp",
            r#"TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format""#,
            2_000,
        ),
        ("newline", tcp, "tcp", "", 2_000),
        // UDP loses what overflows the socket's receive buffer (the kernel's default, ~200 KB
        // of accounting, ~170 small datagrams) while the node is busy: a burst it holds.
        ("udp", udp, "udp", "", 100),
    ];
    let mut expected = 0;
    for (name, target, protocol, extra, lines) in cases {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let input = dir.path().join("in.log");
        let text: String = (1..=lines)
            .map(|i| format!("{name} line {i} paid\n"))
            .collect();
        std::fs::write(&input, text).unwrap();
        let mut rsyslogd = start_rsyslogd(
            dir.path(),
            &rsyslog_config(&work, &input, target, protocol, extra),
        );
        expected += lines;
        node.wait_for_stored(expected as i64).await;
        rsyslogd.kill().await.unwrap();
        let found = events(&node, &format!("q={name}%20line%201%20paid&service=shop")).await;
        let event = found
            .iter()
            .find(|event| event["message"] == format!("{name} line 1 paid"))
            .unwrap_or_else(|| panic!("{name}: {found:?}"));
        assert_eq!(event["severity"], "warn", "{name}: {event}");
        assert_eq!(event["attributes"]["facility"], "local3", "{name}: {event}");
        assert!(
            event["attributes"]["hostname"].is_string(),
            "{name}: {event}"
        );
    }
    let stats = node.get_json("/api/v1/logs/stats").await;
    assert_eq!(stats["rows"][0]["service"], "shop");
    assert_eq!(stats["rows"][0]["count"], expected);
}

/// Python's SysLogHandler over TCP: `<PRI>tag: message\0`, no timestamp, no hostname.
const SYSLOG_HANDLER: &str = r#"
import logging, logging.handlers, socket, sys
handler = logging.handlers.SysLogHandler(address=("127.0.0.1", int(sys.argv[1])),
                                         socktype=socket.SOCK_STREAM, facility="local3")
handler.setFormatter(logging.Formatter("checkout[%(process)d]: %(message)s"))
log = logging.getLogger("checkout")
log.addHandler(handler)
log.warning("card declined")
log.error("payment failed")
handler.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pythons_syslog_handler_sends_over_tcp() {
    needs!(Python3);
    let (node, tcp, _) = node_with_listeners().await;
    let output = Command::new("python3")
        .args(["-c", SYSLOG_HANDLER, &tcp.port().to_string()])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    node.wait_for_stored(2).await;
    let found = events(&node, "service=checkout").await;
    let severities: Vec<&str> = found
        .iter()
        .map(|event| event["severity"].as_str().unwrap())
        .collect();
    assert_eq!(severities.len(), 2);
    assert!(severities.contains(&"warn") && severities.contains(&"error"));
    assert!(found[0]["attributes"]["procid"].is_string());
}

/// Writes `bytes` on a new connection and says whether the node closed it (EOF) unasked.
async fn closed_after(addr: SocketAddr, bytes: &[u8]) -> bool {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_kept_raw_or_closes_the_connection() {
    let (node, tcp, udp) = node_with_listeners().await;
    // Garbage lines and binary noise are kept as raw text, service syslog.
    let mut stream = tokio::net::TcpStream::connect(tcp).await.unwrap();
    stream
        .write_all(b"hello without a header\n\xff\xfe\x00")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    drop(stream);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(b"\x01\x02\x03 noise", udp).await.unwrap();
    // Two lines (the second ended by its NUL) and the datagram.
    node.wait_for_stored(3).await;
    let raw = events(&node, "service=syslog").await;
    assert!(
        raw.iter()
            .any(|event| event["message"] == "hello without a header"),
        "{raw:?}"
    );
    // Framing that cannot be trusted closes the connection, and stores nothing of it.
    assert!(
        closed_after(tcp, b"99999999 <14>x").await,
        "a count past the limit"
    );
    assert!(
        closed_after(tcp, b"70000 <14>x").await,
        "a count over 64 KiB"
    );
    // A count that says more than the sender sends: the frame never completes, and when the
    // sender closes, nothing of it is stored.
    let mut stream = tokio::net::TcpStream::connect(tcp).await.unwrap();
    stream.write_all(b"50 <14>only ten").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(
        closed_after(tcp, &vec![b'x'; 1 << 20]).await,
        "a 1 MiB line"
    );
    // The node stays healthy and the listener keeps serving, after 1 MiB of blank lines too
    // (skipped, not buffered).
    let mut stream = tokio::net::TcpStream::connect(tcp).await.unwrap();
    stream.write_all(&vec![b'\n'; 1 << 20]).await.unwrap();
    stream
        .write_all(b"<14>1 2026-11-23T10:15:00Z h after - - - still serving\n")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    node.wait_for_stored(4).await;
    eventually("the unparsed counter", Duration::from_secs(5), || async {
        syslog_counter(&node, &format!("tcp://{tcp}"), "unparsed").await == 2
    })
    .await;
    assert_eq!(node.get("/readyz").send().await.unwrap().status(), 200);
    assert_eq!(node.stats_total().await, 4);
}

#[tokio::test]
async fn listeners_refuse_what_they_cannot_serve() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = logmesh::node::NodeConfig::ephemeral(dir.path());
    config.api_token = Some("t".into());
    config.syslog.listen = vec![SyslogListen::parse("tcp://0.0.0.0:0").unwrap()];
    let error = logmesh::node::Node::start(config).await.err().unwrap();
    assert!(error.to_string().contains("--syslog-allow"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_faster_than_the_store_is_slowed_not_dropped() {
    // A queue of 300 events (less than a listener's batch) the writers drain every 100 ms:
    // the sender outruns it.
    let node = TestNode::start(|config| {
        config.queue_limits.max_events = 300;
        config.flush_interval = Duration::from_millis(100);
        config.batch_size = 1_000;
        config.syslog.listen = vec![SyslogListen::parse("tcp://127.0.0.1:0").unwrap()];
    })
    .await;
    let tcp = node.node.as_ref().unwrap().syslog_listeners()[0].addr;
    let lines: String = (0..5_000)
        .map(|i| format!("<14>1 2026-11-23T10:15:00Z h fast - - - message {i}\n"))
        .collect();
    let mut stream = tokio::net::TcpStream::connect(tcp).await.unwrap();
    stream.write_all(lines.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    eventually("every message stored", Duration::from_secs(60), || async {
        node.stats_total().await == 5_000
    })
    .await;
    // The queue did refuse batches (the listener waited), and none was lost.
    let metrics = metrics_text(&node.url).await;
    let refused = sample_value(&metrics, "logmesh_ingest_events_total{outcome=\"refused\"}");
    assert!(refused > 0, "the queue never filled: {metrics}");
    let dropped = metrics
        .lines()
        .any(|line| line.contains("what=\"dropped\""));
    assert!(!dropped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_into_one_node_reaches_every_node() {
    needs!(Nats, Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let mut cluster = TestCluster::start(
        3,
        &nats_url(),
        database.url(),
        &["--syslog-listen", "tcp://127.0.0.1:0"],
    );
    // The node logs each listener it bound, with its real port.
    let lines = cluster.nodes[1].process().stderr.lock().unwrap().clone();
    let listener = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["message"] == "Syslog listener is serving.")
        .and_then(|line| line["fields"]["listener"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no listener in the log: {lines:?}"));
    let addr: SocketAddr = listener.trim_start_matches("tcp://").parse().unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let lines: String = (0..50)
        .map(|i| format!("<11>1 2026-11-23T10:15:00Z h relay - - - message {i}\n"))
        .collect();
    stream.write_all(lines.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    cluster.wait_for_everywhere("relay", 50).await;
    for node in &cluster.nodes {
        let lines = event_log_lines(&node.event_log_dir());
        assert!(
            lines.iter().all(|line| line["severity"] == "error"),
            "{}: {lines:?}",
            node.name
        );
    }
}

/// rsyslogd reading `input` and forwarding it with `omrelp` (rsyslog-relp) to `target`, with
/// the action options `extra`.
fn rsyslog_relp_config(
    work: &std::path::Path,
    input: &std::path::Path,
    tag: &str,
    target: SocketAddr,
    extra: &str,
) -> String {
    format!(
        r#"global(workDirectory="{work}")
module(load="imfile")
module(load="omrelp")
input(type="imfile" File="{input}" Tag="{tag}:" Severity="err" Facility="local5")
action(type="omrelp" target="127.0.0.1" port="{port}" {extra})
"#,
        work = work.display(),
        input = input.display(),
        port = target.port(),
    )
}

/// A temp dir with rsyslog's work directory and an input file of `lines` numbered lines.
fn relp_sender_files(prefix: &str, lines: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("work")).unwrap();
    let input = dir.path().join("in.log");
    let text: String = (1..=lines).map(|i| format!("{prefix} {i}\n")).collect();
    std::fs::write(&input, text).unwrap();
    (dir, input)
}

/// The value of `logmesh_syslog_total` for this listener and counter, 0 when absent.
async fn syslog_counter(node: &TestNode, listener: &str, what: &str) -> u64 {
    sample_value(
        &metrics_text(&node.url).await,
        &format!("logmesh_syslog_total{{listener=\"{listener}\",what=\"{what}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_sends_over_relp_and_waits_while_the_queue_is_full() {
    needs!(Rsyslog);
    // A queue of 100 events the writers drain every 100 ms: rsyslog's window of 128 more
    // than fills it, and the listener must hold its answers (never answer 500, which would
    // make rsyslog drop the message) until the queue takes the messages.
    let node = TestNode::start(|config| {
        config.queue_limits.max_events = 100;
        config.flush_interval = Duration::from_millis(100);
        config.syslog.listen = vec![SyslogListen::parse("relp://127.0.0.1:0").unwrap()];
    })
    .await;
    let relp = node.node.as_ref().unwrap().syslog_listeners()[0];
    assert_eq!(relp.transport, Transport::Relp);
    let lines = 5_000;
    let (dir, input) = relp_sender_files("relp line", lines);
    let mut rsyslogd = start_rsyslogd(
        dir.path(),
        &rsyslog_relp_config(&dir.path().join("work"), &input, "billing", relp.addr, ""),
    );
    node.wait_for_stored(lines as i64).await;
    rsyslogd.kill().await.unwrap();
    // Exactly once: nothing lost, and with no broken connection nothing sent twice.
    let stats = node.get_json("/api/v1/logs/stats").await;
    assert_eq!(stats["rows"][0]["service"], "billing", "{stats}");
    assert_eq!(stats["rows"][0]["count"], lines, "{stats}");
    let found = events(&node, "q=%22relp%20line%204999%22&service=billing").await;
    let event = found
        .iter()
        .find(|event| event["message"] == "relp line 4999")
        .unwrap_or_else(|| panic!("{found:?}"));
    assert_eq!(event["severity"], "error", "{event}");
    assert_eq!(event["attributes"]["facility"], "local5", "{event}");
    assert!(event["attributes"]["hostname"].is_string(), "{event}");
    let name = relp.to_string();
    assert_eq!(syslog_counter(&node, &name, "messages").await, lines as u64);
    assert!(syslog_counter(&node, &name, "connections").await >= 1);
    assert_eq!(syslog_counter(&node, &name, "broken").await, 0);
    let metrics = metrics_text(&node.url).await;
    assert!(
        sample_value(&metrics, "logmesh_ingest_events_total{outcome=\"refused\"}") > 0,
        "the queue never filled: {metrics}"
    );
}

/// Every `prefix N` message stored in a node's SQLite database, and how often.
fn stored_numbers(db: &std::path::Path, prefix: &str) -> std::collections::HashMap<u64, u64> {
    let connection =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut query = connection
        .prepare("SELECT message FROM service_logs WHERE service = 'seq'")
        .unwrap();
    let mut numbers = std::collections::HashMap::new();
    for message in query.query_map([], |row| row.get::<_, String>(0)).unwrap() {
        let message = message.unwrap();
        let number = message
            .strip_prefix(prefix)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected message {message:?}"));
        *numbers.entry(number).or_insert(0) += 1;
    }
    numbers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relp_with_a_disk_assisted_queue_loses_nothing_across_kill_9() {
    needs!(Rsyslog);
    let data = tempfile::tempdir().unwrap();
    let port = common::services::free_port();
    let listen = format!("relp://127.0.0.1:{port}");
    let args = [
        "--syslog-listen",
        listen.as_str(),
        "--flush-interval",
        "50ms",
    ];
    let mut node = common::NodeProcess::spawn(data.path(), &args, &[]);
    let lines = 30_000;
    let (dir, input) = relp_sender_files("seq", lines);
    // A disk-assisted action queue kept across restarts, retried forever, as rsyslog's
    // documentation advises for RELP that must lose nothing.
    let queue = r#"windowSize="128" action.resumeRetryCount="-1" action.resumeInterval="1"
        queue.type="LinkedList" queue.filename="relp_out" queue.saveOnShutdown="on"
        queue.size="100000""#;
    let _rsyslogd = start_rsyslogd(
        dir.path(),
        &rsyslog_relp_config(
            &dir.path().join("work"),
            &input,
            "seq",
            SocketAddr::from(([127, 0, 0, 1], port)),
            queue,
        ),
    );
    let db = data.path().join("logmesh.db");
    let stored_count = |db: &std::path::Path| {
        if db.exists() {
            stored_numbers(db, "seq ").values().sum::<u64>()
        } else {
            0
        }
    };
    // Killed twice mid-sequence, each time restarted on the same port.
    let mut kills = 0;
    for threshold in [5_000, 15_000] {
        eventually("messages arriving", Duration::from_secs(120), || async {
            stored_count(&db) >= threshold
        })
        .await;
        node.kill9();
        kills += 1;
        node = common::NodeProcess::spawn(data.path(), &args, &[]);
    }
    eventually("every number stored", Duration::from_secs(180), || async {
        stored_numbers(&db, "seq ").len() == lines
    })
    .await;
    let numbers = stored_numbers(&db, "seq ");
    assert!((1..=lines as u64).all(|n| numbers.contains_key(&n)));
    // Stored twice only what was durable but unanswered when a connection broke: at most one
    // window (128) per kill.
    let twice: u64 = numbers.values().map(|n| n - 1).sum();
    assert!(
        twice <= 128 * kills,
        "{twice} messages stored twice after {kills} kills"
    );
    assert!(numbers.values().all(|n| *n <= 1 + kills));
    drop(node);
}

/// Sends `bytes` on a new RELP connection, closes its sending side, and returns every answer
/// the node wrote before it closed the connection.
async fn relp_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut answers = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answers))
        .await
        .expect("the node closes the connection")
        .ok();
    String::from_utf8_lossy(&answers).into_owned()
}

/// A RELP frame.
fn relp(txnr: u32, command: &str, data: &str) -> String {
    if data.is_empty() {
        format!("{txnr} {command} 0\n")
    } else {
        format!("{txnr} {command} {} {data}\n", data.len())
    }
}

const RELP_OFFERS: &str = "relp_version=0\nrelp_software=test\ncommands=syslog";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_relp_is_answered_or_closed_and_nothing_is_lost() {
    let node = TestNode::start(|config| {
        config.syslog.listen = vec![SyslogListen::parse("relp://127.0.0.1:0").unwrap()];
    })
    .await;
    let addr = node.node.as_ref().unwrap().syslog_listeners()[0].addr;
    let open = relp(1, "open", RELP_OFFERS);
    let message = |txnr, text: &str| {
        relp(
            txnr,
            "syslog",
            &format!("<11>1 2026-11-23T10:15:00Z h relpcheck - - - {text}"),
        )
    };

    // A whole session: open answered with our offers, each message 200 once stored, an
    // unknown command refused without ending the session, close answered empty.
    let session = format!(
        "{open}{}{}{}{}",
        message(2, "one"),
        relp(3, "starttls", ""),
        message(4, "two"),
        relp(5, "close", "")
    );
    let answers = relp_exchange(addr, session.as_bytes()).await;
    let lines: Vec<&str> = answers.lines().collect();
    assert!(answers.starts_with("1 rsp "), "{answers}");
    assert!(answers.contains("200 OK\nrelp_version=0\n"), "{answers}");
    assert!(answers.contains("\ncommands=syslog\n"), "{answers}");
    assert!(lines.contains(&"2 rsp 6 200 OK"), "{answers}");
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("3 rsp ") && line.contains(" 500 ")),
        "{answers}"
    );
    assert!(lines.contains(&"4 rsp 6 200 OK"), "{answers}");
    assert_eq!(lines.last(), Some(&"5 rsp 0"), "{answers}");
    node.wait_for_stored(2).await;

    // Broken sessions close without answering what follows; answered messages are stored.
    for (what, bytes, expect_answers) in [
        ("garbage", "\u{1}\u{2} hello\n".to_owned(), ""),
        ("a message before open", message(1, "early"), ""),
        (
            "a count that lies",
            format!(
                "{open}{}2 syslog 500 <11>short\n{}",
                message(2, "kept"),
                message(3, "after")
            ),
            "2 rsp 6 200 OK",
        ),
        (
            "an open without the syslog command",
            relp(1, "open", "relp_version=0\ncommands=other"),
            "500 required command not supported",
        ),
        (
            "a second open",
            format!("{open}{}", relp(2, "open", RELP_OFFERS)),
            "2 rsp 43 500 protocol error: connection already open",
        ),
    ] {
        let answers = relp_exchange(addr, bytes.as_bytes()).await;
        assert!(answers.contains(expect_answers), "{what}: {answers}");
        assert!(
            !answers.contains("3 rsp"),
            "{what}: answered past the break: {answers}"
        );
    }
    // "kept" was answered, so it is stored; "after" came after the break and was not.
    node.wait_for_stored(3).await;
    let found = events(&node, "service=relpcheck").await;
    let messages: Vec<&str> = found.iter().filter_map(|e| e["message"].as_str()).collect();
    assert!(messages.contains(&"kept"), "{messages:?}");
    assert!(
        !messages.contains(&"after") && !messages.contains(&"early"),
        "{messages:?}"
    );

    // 1 MiB of data: kept truncated to 64 KiB, answered, and the session goes on.
    let big = format!(
        "<11>1 2026-11-23T10:15:00Z h relpcheck - - - {}",
        "y".repeat(1 << 20)
    );
    let session = format!(
        "{open}{}{}{}",
        relp(2, "syslog", &big),
        message(3, "next"),
        relp(4, "close", "")
    );
    let answers = relp_exchange(addr, session.as_bytes()).await;
    assert!(
        answers.contains("2 rsp 6 200 OK\n3 rsp 6 200 OK\n4 rsp 0"),
        "{answers}"
    );
    node.wait_for_stored(5).await;
    let name = format!("relp://{addr}");
    assert_eq!(syslog_counter(&node, &name, "truncated").await, 1);
    // Garbage, a message before open, the lying count (it ended inside its frame), the refused
    // open and the second open.
    assert_eq!(syslog_counter(&node, &name, "broken").await, 5);
    assert_eq!(node.get("/readyz").send().await.unwrap().status(), 200);
    assert_eq!(node.stats_total().await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_queue_can_never_take_is_counted_lost() {
    // A queue of 2 KB: a 4 KB message can never be queued, even alone.
    let node = TestNode::start(|config| {
        config.queue_limits.max_bytes = 2_000;
        config.syslog.listen = vec![
            SyslogListen::parse("tcp://127.0.0.1:0").unwrap(),
            SyslogListen::parse("relp://127.0.0.1:0").unwrap(),
        ];
    })
    .await;
    let listeners = node.node.as_ref().unwrap().syslog_listeners().to_vec();
    let (tcp, relp_addr) = (listeners[0].addr, listeners[1].addr);
    let big = format!(
        "<14>1 2026-11-23T10:15:00Z h big - - - {}",
        "z".repeat(4_000)
    );
    // TCP: the big one is skipped and counted; the connection goes on with the next.
    let mut stream = tokio::net::TcpStream::connect(tcp).await.unwrap();
    stream
        .write_all(format!("{big}\n<14>1 2026-11-23T10:15:00Z h small - - - fits\n").as_bytes())
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    node.wait_for_stored(1).await;
    assert_eq!(
        syslog_counter(&node, &format!("tcp://{tcp}"), "lost").await,
        1
    );
    // RELP: the one error answer, for the message that can never be taken; the others 200.
    let session = format!(
        "{}{}{}{}",
        relp(1, "open", RELP_OFFERS),
        relp(2, "syslog", &big),
        relp(
            3,
            "syslog",
            "<14>1 2026-11-23T10:15:00Z h small - - - fits too"
        ),
        relp(4, "close", "")
    );
    let answers = relp_exchange(relp_addr, session.as_bytes()).await;
    assert!(
        answers.contains("\n2 rsp 42 500 message larger than the queue can take\n"),
        "{answers}"
    );
    assert!(answers.contains("\n3 rsp 6 200 OK\n4 rsp 0\n"), "{answers}");
    assert_eq!(
        syslog_counter(&node, &format!("relp://{relp_addr}"), "lost").await,
        1
    );
    node.wait_for_stored(2).await;
    assert_eq!(node.stats_total().await, 2);
}

/// A self-signed certificate for localhost and 127.0.0.1, and its key, made by openssl.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "openssl: {made:?}");
    (cert, key)
}

/// A node with one TLS syslog listener, its certificate self-signed into `dir`; the
/// certificate's path, for senders to verify the node with.
async fn node_with_a_tls_listener(dir: &std::path::Path) -> (TestNode, std::path::PathBuf) {
    let (cert, key) = self_signed(dir);
    let node = TestNode::start(|config| {
        config.syslog.listen = vec![SyslogListen::parse("tls://127.0.0.1:0").unwrap()];
        config.syslog.tls.cert = Some(cert.clone());
        config.syslog.tls.key = Some(key);
    })
    .await;
    (node, cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_sends_over_tls_and_verifies_the_node() {
    needs!(Rsyslog);
    let dir = tempfile::tempdir().unwrap();
    let (node, cert) = node_with_a_tls_listener(dir.path()).await;
    let tls = node.node.as_ref().unwrap().syslog_listeners()[0];
    assert_eq!(tls.to_string(), format!("tls://{}", tls.addr));
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let input = dir.path().join("in.log");
    let lines = 2_000;
    let text: String = (1..=lines).map(|i| format!("tls line {i}\n")).collect();
    std::fs::write(&input, text).unwrap();
    // rsyslog's GnuTLS driver checks the node's certificate against it (x509/name), as a
    // deployment with its own CA would.
    let config = format!(
        r#"global(workDirectory="{work}" DefaultNetstreamDriverCAFile="{cert}")
module(load="imfile")
input(type="imfile" File="{input}" Tag="vault:" Severity="notice" Facility="auth")
action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" StreamDriver="gtls"
       StreamDriverMode="1" StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="localhost"
       TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
"#,
        work = work.display(),
        cert = cert.display(),
        input = input.display(),
        port = tls.addr.port(),
    );
    let mut rsyslogd = start_rsyslogd(dir.path(), &config);
    node.wait_for_stored(lines).await;
    rsyslogd.kill().await.unwrap();
    let found = events(&node, "q=%22tls%20line%20777%22&service=vault").await;
    let event = found
        .iter()
        .find(|event| event["message"] == "tls line 777")
        .unwrap_or_else(|| panic!("{found:?}"));
    assert_eq!(event["severity"], "info", "{event}");
    assert_eq!(event["attributes"]["facility"], "auth", "{event}");
    // Plain text on the TLS port: no handshake (the node answers with a TLS alert and closes),
    // counted, nothing stored, the node healthy.
    let mut plain = tokio::net::TcpStream::connect(tls.addr).await.unwrap();
    plain
        .write_all(b"<14>1 2026-11-23T10:15:00Z h plain - - - not tls\n")
        .await
        .unwrap();
    let mut alert = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut alert))
        .await
        .expect("the node closes a connection that does not speak TLS")
        .ok();
    let name = tls.to_string();
    eventually(
        "the broken handshake counted",
        Duration::from_secs(10),
        || async { syslog_counter(&node, &name, "broken").await == 1 },
    )
    .await;
    assert_eq!(node.stats_total().await, lines);
    assert_eq!(node.get("/readyz").send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_starts_tls_is_closed_after_the_handshake_timeout() {
    // openssl, which makes the certificate and is the other sender, comes with the rsyslog
    // services.
    needs!(Rsyslog);
    let dir = tempfile::tempdir().unwrap();
    let (node, cert) = node_with_a_tls_listener(dir.path()).await;
    let tls = node.node.as_ref().unwrap().syslog_listeners()[0];
    let opened = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(tls.addr).await.unwrap();

    // Meanwhile another sender's handshake and message get through.
    let mut client = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-CAfile"])
        .arg(&cert)
        .args([
            "-connect",
            &tls.addr.to_string(),
            "-servername",
            "localhost",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run openssl s_client");
    let mut stdin = client.stdin.take().unwrap();
    stdin
        .write_all(b"<14>1 2026-11-23T10:15:00Z h app - - - beside a silent one\n")
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    node.wait_for_stored(1).await;
    client.kill().await.unwrap();

    let mut read = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), silent.read_to_end(&mut read))
        .await
        .expect("the node closes a connection that never starts its handshake")
        .ok();
    assert!(read.is_empty(), "{read:?}");
    assert!(
        opened.elapsed() >= Duration::from_secs(9),
        "closed after {:?}, before the 10 s handshake timeout",
        opened.elapsed()
    );
    let name = tls.to_string();
    eventually(
        "the handshake timeout counted",
        Duration::from_secs(10),
        || async { syslog_counter(&node, &name, "broken").await == 1 },
    )
    .await;
}

#[tokio::test]
async fn tls_listeners_need_a_certificate_and_key_that_fit() {
    // openssl, which makes the certificates, comes with the rsyslog services.
    needs!(Rsyslog);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let (other_cert, _) = {
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        self_signed(&other)
    };
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    for (cert, key, says) in [
        (
            None,
            Some(key.clone()),
            "needs --syslog-tls-cert and --syslog-tls-key",
        ),
        (
            Some(dir.path().join("missing.pem")),
            Some(key.clone()),
            "missing.pem",
        ),
        (
            Some(not_pem.clone()),
            Some(key.clone()),
            "holds no PEM certificate",
        ),
        (
            Some(cert.clone()),
            Some(not_pem.clone()),
            "--syslog-tls-key",
        ),
        (
            Some(other_cert.clone()),
            Some(key.clone()),
            "does not go with",
        ),
    ] {
        let data = tempfile::tempdir().unwrap();
        let mut config = logmesh::node::NodeConfig::ephemeral(data.path());
        config.syslog.listen = vec![SyslogListen::parse("tls://127.0.0.1:0").unwrap()];
        config.syslog.tls.cert = cert;
        config.syslog.tls.key = key;
        let error = logmesh::node::Node::start(config).await.err().unwrap();
        assert!(error.to_string().contains(says), "{says}: {error}");
    }
}
