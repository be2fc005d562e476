//! A full disk under the embedded shape. Nothing may be acknowledged that is not durable, a
//! write cut short by the full disk must leave no torn record or line behind, and once space is
//! freed everything recovers by itself: every acknowledged event ends up stored once and in the
//! event log once, also across a kill -9 and restart.
//!
//! The disk is a tmpfs of a few MiB that the test mounts (so the tests need root, as
//! scripts/test.sh does) and fills with a file of its own.

mod common;

use common::{NodeProcess, event_log_lines, eventually, ndjson_line, parse_events, stored};
use logmesh::eventlog::{EventLogFile, Rotation};
use logmesh::queue::local::LocalQueue;
use logmesh::queue::{ConsumerRole, IngestQueue, QueueError, QueueLimits, QueuedEvent};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

const DEADLINE: Duration = Duration::from_secs(60);

/// A tmpfs of `size` mounted on a temporary directory; unmounted on drop.
struct SmallDisk {
    mount_point: TempDir,
}

impl SmallDisk {
    /// Writes a filler file that leaves about `left` bytes free.
    fn fill_leaving(&self, left: u64) {
        let free = logmesh::disk::free_bytes(self.path()).expect("free space");
        let mut filler = std::fs::File::create(self.filler()).expect("create the filler");
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0;
        while written + (chunk.len() as u64) + left <= free {
            filler.write_all(&chunk).expect("fill");
            written += chunk.len() as u64;
        }
    }

    fn mount(size: &str) -> SmallDisk {
        let mount_point = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("logmesh-test")
            .arg(mount_point.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs: {status}");
        SmallDisk { mount_point }
    }

    fn path(&self) -> &Path {
        self.mount_point.path()
    }

    /// Writes a filler file until the disk refuses another byte.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.filler()).expect("create the filler");
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match filler.write_all(&chunk) {
                Ok(()) => {}
                Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(error) => panic!("fill the disk: {error}"),
            }
        }
        // Also the last few bytes a 64 KiB write did not fit.
        while filler.write_all(&[0u8; 512]).is_ok() {}
        while filler.write_all(&[0u8]).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove the filler");
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a child that is still exiting may hold files open.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mount_point.path())
            .status();
    }
}

/// `count` events of about 1 KB each with ids `{prefix}-{i}`.
fn events(prefix: &str, count: usize) -> Vec<logmesh::event::Event> {
    let body: String = (0..count)
        .map(|i| ndjson_line(&format!("{prefix}-{i}"), "disk", "info", &"x".repeat(1000)))
        .collect();
    parse_events(&body)
}

fn queued(events: Vec<logmesh::event::Event>, first_seq: u64) -> Vec<QueuedEvent> {
    events
        .into_iter()
        .zip(first_seq..)
        .map(|(event, seq)| QueuedEvent {
            seq,
            event: Arc::new(event),
        })
        .collect()
}

#[test]
fn an_event_log_write_cut_by_a_full_disk_is_undone_and_written_again() {
    needs!(Root);
    let disk = SmallDisk::mount("1m");
    let rotation = Rotation {
        max_bytes: 64 << 20,
        keep: 1,
        ..Rotation::default()
    };
    let mut log = EventLogFile::open(disk.path(), rotation).unwrap();
    assert_eq!(log.append(&queued(events("a", 100), 1)).unwrap(), 100);
    disk.fill();
    let batch = queued(events("b", 200), 101);
    let error = log.append(&batch).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");
    assert_eq!(
        log.last_seq(),
        100,
        "nothing of the failed write counts as written"
    );
    disk.free();
    // The pipeline retries the same batch: all of it must be written now.
    assert_eq!(log.append(&batch).unwrap(), 200);
    drop(log);

    let lines = event_log_lines(disk.path());
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=300).collect::<Vec<_>>(),
        "every line once, in order"
    );
    let reopened = EventLogFile::open(disk.path(), rotation).unwrap();
    assert_eq!(reopened.last_seq(), 300);
}

fn local_queue(dir: &Path) -> LocalQueue {
    LocalQueue::open(
        dir,
        QueueLimits {
            max_events: 1_000_000,
            max_bytes: 256 << 20,
        },
        0,
    )
    .unwrap()
}

#[tokio::test]
async fn a_queue_append_cut_by_a_full_disk_is_refused_and_leaves_no_torn_record() {
    needs!(Root);
    let disk = SmallDisk::mount("2m");
    let queue = local_queue(disk.path());
    queue.append(events("a", 100)).await.unwrap();
    disk.fill();
    let error = queue.append(events("b", 300)).await.unwrap_err();
    assert!(matches!(error, QueueError::Io(_)), "{error}");
    assert!(error.to_string().contains("No space left"), "{error}");
    disk.free();
    queue.append(events("c", 300)).await.unwrap();
    queue.close().await;
    drop(queue);

    // After a restart the queue holds exactly what was acknowledged, in order.
    let queue = local_queue(disk.path());
    let mut consumer = queue.consumer(ConsumerRole::Store).await.unwrap();
    let mut ids = Vec::new();
    let until = std::time::Instant::now() + DEADLINE;
    while ids.len() < 400 {
        assert!(std::time::Instant::now() < until, "only {} came", ids.len());
        let batch = consumer
            .fetch(1_000, Duration::from_millis(200))
            .await
            .unwrap();
        ids.extend(batch.events.iter().map(|e| e.event.id.clone()));
    }
    let expected: Vec<String> = (0..100)
        .map(|i| format!("a-{i}"))
        .chain((0..300).map(|i| format!("c-{i}")))
        .collect();
    assert_eq!(ids, expected);
    let rest = consumer.fetch(1_000, Duration::ZERO).await.unwrap();
    assert!(rest.events.is_empty(), "{} more", rest.events.len());
}

async fn post(client: &reqwest::Client, url: &str, prefix: &str, count: usize) -> (u16, String) {
    let body: String = (0..count)
        .map(|i| ndjson_line(&format!("{prefix}-{i}"), "disk", "info", &"x".repeat(200)))
        .collect();
    let response = client
        .post(format!("{url}/api/v1/logs"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("the node answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn a_node_on_a_full_disk_sheds_load_and_recovers_once_space_is_freed() {
    needs!(Root);
    let disk = SmallDisk::mount("24m");
    let data = disk.path().join("data");
    // Without the free-disk floor: this is what happens when the disk fills regardless.
    let args = ["--flush-interval", "50ms", "--min-free-disk", "off"];
    let mut node = NodeProcess::spawn(&data, &args, &[]);
    let client = reqwest::Client::new();
    let mut acknowledged: HashSet<String> = HashSet::new();
    let accept = |acknowledged: &mut HashSet<String>, prefix: &str, count: usize| {
        acknowledged.extend((0..count).map(|i| format!("{prefix}-{i}")));
    };

    let (code, body) = post(&client, &node.url, "before", 1_000).await;
    assert_eq!(code, 202, "{body}");
    accept(&mut acknowledged, "before", 1_000);
    disk.fill();
    // Nothing can be made durable: every request is refused, none acknowledged.
    for n in 0..5 {
        let (code, body) = post(&client, &node.url, &format!("full{n}"), 1_000).await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("queue_unavailable"), "{body}");
        assert!(body.contains("No space left"), "{body}");
    }
    disk.free();
    // Without a restart, the node takes events again, and its writers catch up.
    for n in 0..5 {
        let prefix = format!("after{n}");
        let (code, body) = post(&client, &node.url, &prefix, 1_000).await;
        assert_eq!(code, 202, "{body}");
        accept(&mut acknowledged, &prefix, 1_000);
    }
    let db = data.join("logmesh.db");
    let event_log = data.join("eventlog");
    let all_there = |acknowledged: &HashSet<String>| {
        let rows = stored(&db);
        let logged: HashSet<String> = event_log_lines(&event_log)
            .iter()
            .map(|line| line["id"].as_str().unwrap().to_owned())
            .collect();
        rows.rows == acknowledged.len() as i64 && &logged == acknowledged
    };
    eventually(
        "every acknowledged event stored and logged",
        DEADLINE,
        || async { all_there(&acknowledged) },
    )
    .await;

    node.kill9();
    let node = NodeProcess::spawn(&data, &args, &[]);
    let (code, body) = post(&client, &node.url, "restarted", 10).await;
    assert_eq!(code, 202, "{body}");
    accept(&mut acknowledged, "restarted", 10);
    eventually(
        "the restarted node's events stored and logged",
        DEADLINE,
        || async { all_there(&acknowledged) },
    )
    .await;
    let rows = stored(&db);
    assert_eq!(rows.severity_sum, rows.rows, "counts agree with rows");
    assert!(rows.ids.values().all(|&n| n == 1), "every id stored once");
    let lines = event_log_lines(&event_log);
    assert_eq!(lines.len(), acknowledged.len(), "every event logged once");
}

#[tokio::test]
async fn below_the_free_disk_floor_new_events_are_refused_before_the_disk_is_full() {
    needs!(Root);
    let disk = SmallDisk::mount("32m");
    let data = disk.path().join("data");
    let args = ["--flush-interval", "50ms", "--min-free-disk", "8MiB"];
    let node = NodeProcess::spawn(&data, &args, &[]);
    let client = reqwest::Client::new();
    let mut acknowledged: HashSet<String> = HashSet::new();
    let (code, body) = post(&client, &node.url, "before", 1_000).await;
    assert_eq!(code, 202, "{body}");
    acknowledged.extend((0..1_000).map(|i| format!("before-{i}")));
    // 4 MiB left: under the floor, far from full.
    disk.fill_leaving(4 << 20);
    for n in 0..3 {
        let (code, body) = post(&client, &node.url, &format!("low{n}"), 100).await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("disk_low"), "{body}");
        assert!(
            body.contains(&data.display().to_string()),
            "names the disk: {body}"
        );
        assert!(body.contains("--min-free-disk"), "{body}");
    }
    let free = logmesh::disk::free_bytes(disk.path()).unwrap();
    assert!(
        free > 2 << 20,
        "refused well before the disk filled: {free} bytes free"
    );
    // Space returns: events are taken again, without a restart.
    disk.free();
    let (code, body) = post(&client, &node.url, "after", 1_000).await;
    assert_eq!(code, 202, "{body}");
    acknowledged.extend((0..1_000).map(|i| format!("after-{i}")));
    let db = data.join("logmesh.db");
    eventually("every acknowledged event stored", DEADLINE, || async {
        let rows = stored(&db);
        rows.rows == acknowledged.len() as i64
            && acknowledged.iter().all(|id| rows.ids.contains_key(id))
    })
    .await;
    let rows = stored(&db);
    assert_eq!(rows.severity_sum, rows.rows);
}
