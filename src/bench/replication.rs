//! Replication lag for `logmesh bench ingest --event-log DIR …`: while the load runs, a probe
//! event with a unique id goes to the nodes every [`PROBE_EVERY`], in turn; one thread per
//! event log directory follows that node's `events.log` and notes when each probe's line
//! appears. A probe's lag is the time from its 202 to its line in the last of the files.
//! Probes travel the same path as the load, so they see the same queues.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a probe is sent.
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// How often a follower looks for new lines once it reached the end of the file.
const FOLLOW_POLL: Duration = Duration::from_millis(1);
/// How long probes acknowledged near the end of the run may take to reach every file.
const GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, Serialize)]
pub struct LagReport {
    pub event_logs: usize,
    pub probes_acknowledged: usize,
    pub probes_replicated: usize,
    pub lag_ms_p50: f64,
    pub lag_ms_p99: f64,
    pub lag_ms_max: f64,
}

/// Per probe id: in how many files its line was seen, and when the last one was.
type Sightings = Arc<Mutex<HashMap<String, (usize, Instant)>>>;

pub struct Probes {
    sender: tokio::task::JoinHandle<HashMap<String, Instant>>,
    followers: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    sightings: Sightings,
    event_logs: usize,
}

impl Probes {
    pub fn start(
        client: reqwest::Client,
        urls: Vec<String>,
        token: Option<String>,
        event_log_dirs: Vec<PathBuf>,
        deadline: Instant,
    ) -> Result<Probes, String> {
        let prefix = format!("probe-{}-", uuid::Uuid::now_v7().simple());
        let stop = Arc::new(AtomicBool::new(false));
        let sightings: Sightings = Arc::default();
        let mut followers = Vec::new();
        for dir in &event_log_dirs {
            let path = dir.join("events.log");
            let file = std::fs::File::open(&path)
                .map_err(|e| format!("cannot follow {}: {e}", path.display()))?;
            let (prefix, stop, sightings) = (prefix.clone(), stop.clone(), sightings.clone());
            followers.push(std::thread::spawn(move || {
                follow(path, file, &prefix, &stop, &sightings)
            }));
        }
        let sender = tokio::spawn(send_probes(client, urls, token, prefix, deadline));
        Ok(Probes {
            sender,
            followers,
            stop,
            sightings,
            event_logs: event_log_dirs.len(),
        })
    }

    /// Waits (up to a grace period) for the acknowledged probes to reach every file.
    pub async fn finish(self) -> LagReport {
        let acknowledged = self.sender.await.unwrap_or_default();
        let all_seen = || {
            let sightings = self.sightings.lock().unwrap_or_else(|p| p.into_inner());
            acknowledged.keys().all(|id| {
                sightings
                    .get(id)
                    .is_some_and(|(files, _)| *files >= self.event_logs)
            })
        };
        let until = Instant::now() + GRACE;
        while !all_seen() && Instant::now() < until {
            tokio::time::sleep(PROBE_EVERY).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        for follower in self.followers {
            let _ = follower.join();
        }
        let mut lags =
            Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
        let sightings = self.sightings.lock().unwrap_or_else(|p| p.into_inner());
        for (id, acked) in &acknowledged {
            if let Some((files, last)) = sightings.get(id)
                && *files >= self.event_logs
            {
                let micros = last.saturating_duration_since(*acked).as_micros() as u64;
                let _ = lags.record(micros.max(1));
            }
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        LagReport {
            event_logs: self.event_logs,
            probes_acknowledged: acknowledged.len(),
            probes_replicated: lags.len() as usize,
            lag_ms_p50: ms(lags.value_at_quantile(0.50)),
            lag_ms_p99: ms(lags.value_at_quantile(0.99)),
            lag_ms_max: ms(lags.max()),
        }
    }
}

async fn send_probes(
    client: reqwest::Client,
    urls: Vec<String>,
    token: Option<String>,
    prefix: String,
    deadline: Instant,
) -> HashMap<String, Instant> {
    let mut acknowledged = HashMap::new();
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    let mut n = 0usize;
    while Instant::now() < deadline {
        ticker.tick().await;
        let id = format!("{prefix}{n}");
        let url = &urls[n % urls.len()];
        n += 1;
        let body = serde_json::json!({"id": id, "service": "bench-probe", "message": "probe"});
        let mut request = client
            .post(format!("{}/api/v1/logs", url.trim_end_matches('/')))
            .json(&body);
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        if let Ok(response) = request.send().await
            && response.status() == reqwest::StatusCode::ACCEPTED
        {
            acknowledged.insert(id, Instant::now());
        }
    }
    acknowledged
}

/// Follows `path` from its current end, through rotations, noting probe lines.
fn follow(
    path: PathBuf,
    mut file: std::fs::File,
    prefix: &str,
    stop: &AtomicBool,
    sightings: &Sightings,
) {
    let needle = format!("\"id\":\"{prefix}");
    let finder = memchr::memmem::Finder::new(needle.as_bytes());
    let mut position = file.seek(SeekFrom::End(0)).unwrap_or(0);
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    while !stop.load(Ordering::Relaxed) {
        let read = file.read(&mut chunk).unwrap_or(0);
        if read == 0 {
            // Rotated (the path names a new, shorter file): start on the new one.
            if let Ok(meta) = std::fs::metadata(&path)
                && meta.len() < position
                && let Ok(reopened) = std::fs::File::open(&path)
            {
                file = reopened;
                position = 0;
                pending.clear();
                continue;
            }
            std::thread::sleep(FOLLOW_POLL);
            continue;
        }
        position += read as u64;
        pending.extend_from_slice(&chunk[..read]);
        let complete = match memchr::memrchr(b'\n', &pending) {
            Some(end) => end + 1,
            None => continue,
        };
        let now = Instant::now();
        for line in pending[..complete].split(|b| *b == b'\n') {
            if let Some(at) = finder.find(line) {
                let start = at + "\"id\":\"".len();
                if let Some(len) = memchr::memchr(b'"', &line[start..]) {
                    let id = String::from_utf8_lossy(&line[start..start + len]).into_owned();
                    let mut sightings = sightings.lock().unwrap_or_else(|p| p.into_inner());
                    let entry = sightings.entry(id).or_insert((0, now));
                    entry.0 += 1;
                    entry.1 = now;
                }
            }
        }
        pending.drain(..complete);
    }
}
