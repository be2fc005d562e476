//! The node's event log file (Logman's behaviour): every event the node receives from the
//! queue is appended as one JSON line to `<dir>/events.log`, rotated by size into
//! `events.log.1` (newest) … `events.log.<keep>` (oldest). Rotated files past an age
//! (`--event-log-retention`) or past a total size of all the files
//! (`--event-log-max-total-bytes`) are removed, oldest first ([`EventLogFile::expire`]).
//!
//! Line format (JSON Lines, one event per line; JSON escaping keeps newlines in messages from
//! breaking lines):
//! `{"ts":"2026-11-23T10:15:00.5Z","severity":"error","service":"api","message":"…",
//!   "attributes":{…},"id":"…","node":"n1","seq":42}` (`attributes` only when present).
//!
//! Invariants:
//! - The file is its own cursor: `seq` increases line by line, and at start-up the last
//!   complete line says where to resume, so a replayed event is never written twice and a torn
//!   last line (a crash mid-write) is cut off.
//! - A batch is synced before the queue is told it was written.
//! - Blocking file I/O; callers run it off the async runtime.
//! - Only rotated files are removed, never `events.log`, which is being written; a reader that
//!   has a removed file open reads it to its end (the kernel keeps it until closed).

use crate::event::{Event, format_us, write_integer, write_json_string};
use crate::queue::QueuedEvent;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub const FILE_NAME: &str = "events.log";

/// Rotation and retention settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a line would take the file past this size.
    pub max_bytes: u64,
    /// Rotated files kept (`events.log.1` … `events.log.<keep>`); older ones are deleted.
    pub keep: u32,
    /// Rotated files last written longer ago than this are removed; `None`: kept by age.
    pub max_age: Option<Duration>,
    /// The oldest rotated files are removed while all the files together (`events.log`
    /// included) are larger than this; `None`: no total.
    pub max_total_bytes: Option<u64>,
}

/// The default age after which rotated event log files go (as the stored events' default).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: 100 * 1024 * 1024,
            keep: 5,
            max_age: Some(DEFAULT_RETENTION),
            max_total_bytes: None,
        }
    }
}

/// A rotated file [`EventLogFile::expire`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub path: PathBuf,
    pub bytes: u64,
}

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    severity: &'a str,
    service: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<&'a RawValue>,
    id: &'a str,
    node: &'a str,
    seq: u64,
}

impl<'a> Line<'a> {
    fn new(event: &'a Event, seq: u64) -> Self {
        Line {
            ts: format_us(event.ts_us),
            severity: event.severity.as_str(),
            service: &event.service,
            message: &event.message,
            attributes: event.attributes.as_deref(),
            id: &event.id,
            node: &event.node,
            seq,
        }
    }

    /// Appends the line's JSON, byte for byte what its `Serialize` writes, with strings
    /// escaped as the queue's records are (`event::write_json_string`).
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"ts\":");
        write_json_string(out, &self.ts);
        out.extend_from_slice(b",\"severity\":");
        write_json_string(out, self.severity);
        out.extend_from_slice(b",\"service\":");
        write_json_string(out, self.service);
        out.extend_from_slice(b",\"message\":");
        write_json_string(out, self.message);
        if let Some(attributes) = self.attributes {
            out.extend_from_slice(b",\"attributes\":");
            out.extend_from_slice(attributes.get().as_bytes());
        }
        out.extend_from_slice(b",\"id\":");
        write_json_string(out, self.id);
        out.extend_from_slice(b",\"node\":");
        write_json_string(out, self.node);
        out.extend_from_slice(b",\"seq\":");
        write_integer(out, self.seq);
        out.push(b'}');
    }
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// An open event log file.
pub struct EventLogFile {
    dir: PathBuf,
    file: File,
    len: u64,
    rotation: Rotation,
    last_seq: u64,
}

impl EventLogFile {
    /// Opens `<dir>/events.log` for appending and finds the last seq written.
    pub fn open(dir: &Path, rotation: Rotation) -> io::Result<EventLogFile> {
        fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let mut last_line = cut_torn_tail_and_read_last_line(&mut file)?;
        if last_line.is_none() {
            // Just rotated: the newest line is in the first rotated file.
            if let Ok(mut rotated) = File::open(dir.join(format!("{FILE_NAME}.1"))) {
                last_line = read_last_line(&mut rotated)?;
            }
        }
        let last_seq = match last_line {
            None => 0,
            Some(line) => match serde_json::from_slice::<SeqOnly>(&line) {
                Ok(parsed) => parsed.seq,
                Err(error) => {
                    tracing::warn!(
                        path = %path.display(),
                        error = %error,
                        "The last line of the event log has no seq; events may be written again."
                    );
                    0
                }
            },
        };
        let len = file.metadata()?.len();
        Ok(EventLogFile {
            dir: dir.to_owned(),
            file,
            len,
            rotation,
            last_seq,
        })
    }

    /// The seq of the last line written (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Appends the events with a seq after [`Self::last_seq`], rotating as needed, and syncs.
    /// Returns how many lines were written.
    /// On an error (a full disk, say) the file is as before the call's failed write: nothing of
    /// that write stays, and [`Self::last_seq`] is the last line synced, so calling again with
    /// the same events writes the rest.
    pub fn append(&mut self, events: &[QueuedEvent]) -> io::Result<usize> {
        let mut buffer = Vec::new();
        let mut written = 0;
        let resume_after = self.last_seq;
        // The seq of the buffer's last line.
        let mut buffered_seq = resume_after;
        for queued in events.iter().filter(|e| e.seq > resume_after) {
            let start = buffer.len();
            Line::new(&queued.event, queued.seq).write(&mut buffer);
            buffer.push(b'\n');
            if self.len + start as u64 > 0
                && self.len + buffer.len() as u64 > self.rotation.max_bytes
            {
                // Flush what precedes this line into the current file, then rotate.
                self.write_synced(&buffer[..start], buffered_seq)?;
                buffer.drain(..start);
                self.rotate()?;
            }
            buffered_seq = queued.seq;
            written += 1;
        }
        self.write_synced(&buffer, buffered_seq)?;
        Ok(written)
    }

    /// Appends `bytes` (whole lines, the last one of seq `last_seq`) and syncs them; on failure
    /// cuts off whatever part of them reached the file, so the next write starts a line.
    fn write_synced(&mut self, bytes: &[u8], last_seq: u64) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let synced = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(error) = synced {
            return match self.file.set_len(self.len) {
                Ok(()) => Err(error),
                Err(cut) => Err(io::Error::new(
                    error.kind(),
                    format!("{error}; the part written could not be cut off either: {cut}"),
                )),
            };
        }
        self.len += bytes.len() as u64;
        self.last_seq = last_seq;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let rotated = |n: u32| self.dir.join(format!("{FILE_NAME}.{n}"));
        if self.rotation.keep == 0 {
            fs::remove_file(self.path())?;
        } else {
            match fs::remove_file(rotated(self.rotation.keep)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            for n in (1..self.rotation.keep).rev() {
                match fs::rename(rotated(n), rotated(n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(self.path(), rotated(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(self.path())?;
        File::open(&self.dir)?.sync_all()?;
        self.len = 0;
        if let Err(error) = self.expire(SystemTime::now()) {
            tracing::warn!(dir = %self.dir.display(), %error, "Could not remove old event log files.");
        }
        Ok(())
    }

    /// Removes the rotated files past `max_age` at `now`, then, oldest first, those that would
    /// take all the files past `max_total_bytes` once `events.log` reaches its rotation size;
    /// `events.log` itself is never removed.
    pub fn expire(&mut self, now: SystemTime) -> io::Result<Vec<Removed>> {
        let Rotation {
            max_age,
            max_total_bytes,
            ..
        } = self.rotation;
        if max_age.is_none() && max_total_bytes.is_none() {
            return Ok(Vec::new());
        }
        // Rotated files, oldest (highest number) first.
        let mut rotated = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|name| name.strip_prefix(FILE_NAME))
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let metadata = entry.metadata()?;
            if metadata.is_file() {
                rotated.push((n, entry.path(), metadata.len(), metadata.modified()?));
            }
        }
        rotated.sort_by_key(|(n, ..)| std::cmp::Reverse(*n));
        // `events.log` counted at the size it may grow to before the next rotation, so that
        // the files never take more than the total, not only just after a rotation.
        let mut total = self.len.max(self.rotation.max_bytes)
            + rotated.iter().map(|(_, _, len, _)| len).sum::<u64>();
        let mut removed = Vec::new();
        for (_, path, bytes, modified) in rotated {
            let too_old = max_age.is_some_and(|age| {
                now.duration_since(modified)
                    .is_ok_and(|elapsed| elapsed > age)
            });
            let too_much = max_total_bytes.is_some_and(|max| total > max);
            if !too_old && !too_much {
                // Newer files are younger and the total only shrinks: nothing more to remove.
                break;
            }
            fs::remove_file(&path)?;
            total -= bytes;
            removed.push(Removed { path, bytes });
        }
        if !removed.is_empty() {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(removed)
    }
}

/// The bytes of `events.log` and its rotated siblings in `dir` (0 when there is none yet).
pub fn files_bytes(dir: &Path) -> io::Result<u64> {
    let entries = match fs::read_dir(dir) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        entries => entries?,
    };
    let mut total = 0;
    for entry in entries {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(FILE_NAME))
        {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// Cuts anything after the last newline (a line torn by a crash) and returns the last line.
fn cut_torn_tail_and_read_last_line(file: &mut File) -> io::Result<Option<Vec<u8>>> {
    let len = file.metadata()?.len();
    let complete = match last_newline_before(file, len)? {
        Some(at) => at + 1,
        None => 0,
    };
    if complete < len {
        tracing::warn!(
            bytes = len - complete,
            "Cutting a torn last line off the event log."
        );
        file.set_len(complete)?;
        file.sync_all()?;
    }
    read_last_line(file)
}

/// The last complete line of `file` (without its newline), if any.
fn read_last_line(file: &mut File) -> io::Result<Option<Vec<u8>>> {
    let len = file.metadata()?.len();
    let Some(end) = last_newline_before(file, len)? else {
        return Ok(None);
    };
    let start = last_newline_before(file, end)?
        .map(|at| at + 1)
        .unwrap_or(0);
    let mut line = vec![0; (end - start) as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut line)?;
    Ok(Some(line))
}

/// The offset of the last `\n` before `end`, reading backwards in chunks.
fn last_newline_before(file: &mut File, end: u64) -> io::Result<Option<u64>> {
    const CHUNK: u64 = 64 * 1024;
    let mut chunk_end = end;
    let mut buffer = vec![0; CHUNK as usize];
    while chunk_end > 0 {
        let chunk_start = chunk_end.saturating_sub(CHUNK);
        let chunk = &mut buffer[..(chunk_end - chunk_start) as usize];
        file.seek(SeekFrom::Start(chunk_start))?;
        file.read_exact(chunk)?;
        if let Some(at) = memchr::memrchr(b'\n', chunk) {
            return Ok(Some(chunk_start + at as u64));
        }
        chunk_end = chunk_start;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{IngestContext, parse_json_body};
    use std::sync::Arc;

    const BIG: Rotation = Rotation {
        max_bytes: 1 << 30,
        keep: 3,
        max_age: None,
        max_total_bytes: None,
    };

    #[test]
    fn lines_are_written_exactly_as_serde_writes_them() {
        let messages = ["plain", "quote \" back \\ nul \u{0} tab \t", "café ☕"];
        for (i, event) in queued(1, &messages).iter().enumerate() {
            let mut event = (*event.event).clone();
            event.attributes =
                (i != 1).then(|| RawValue::from_string(r#"{"k":"v \" w","n":1}"#.into()).unwrap());
            let line = Line::new(&event, u64::MAX - i as u64);
            let mut ours = Vec::new();
            line.write(&mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&line).unwrap()
            );
        }
    }

    fn queued(first_seq: u64, messages: &[&str]) -> Vec<QueuedEvent> {
        let body: String = messages
            .iter()
            .map(|m| {
                serde_json::json!({"service": "api", "message": m, "timestamp": 0}).to_string()
            })
            .collect::<Vec<_>>()
            .join("\n");
        parse_json_body(
            body.as_bytes(),
            IngestContext {
                node: "n1",
                now_us: 1,
                oldest_us: i64::MIN,
            },
        )
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, event)| QueuedEvent {
            seq: first_seq + i as u64,
            event: Arc::new(event),
        })
        .collect()
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn events_become_json_lines_with_newlines_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLogFile::open(dir.path(), BIG).unwrap();
        assert_eq!(log.append(&queued(1, &["one\ntwo", "three"])).unwrap(), 2);
        let text = fs::read_to_string(log.path()).unwrap();
        assert_eq!(text.lines().count(), 2);
        let first = &lines(&log.path())[0];
        assert_eq!(first["message"], "one\ntwo");
        assert_eq!(first["ts"], "1970-01-01T00:00:00Z");
        assert_eq!(first["service"], "api");
        assert_eq!(first["severity"], "info");
        assert_eq!(first["node"], "n1");
        assert_eq!(first["seq"], 1);
        assert!(first.get("attributes").is_none());
    }

    #[test]
    fn reopening_resumes_after_the_last_seq_so_nothing_is_written_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLogFile::open(dir.path(), BIG).unwrap();
        log.append(&queued(1, &["a", "b"])).unwrap();
        drop(log);
        let mut log = EventLogFile::open(dir.path(), BIG).unwrap();
        assert_eq!(log.last_seq(), 2);
        assert_eq!(log.append(&queued(1, &["a", "b", "c"])).unwrap(), 1);
        let seqs: Vec<_> = lines(&log.path())
            .iter()
            .map(|l| l["seq"].clone())
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
    }

    #[test]
    fn a_torn_last_line_is_cut_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLogFile::open(dir.path(), BIG).unwrap();
        log.append(&queued(1, &["a"])).unwrap();
        let path = log.path();
        drop(log);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(br#"{"ts":"1970","seq":2,"mess"#)
            .unwrap();
        let mut log = EventLogFile::open(dir.path(), BIG).unwrap();
        assert_eq!(log.last_seq(), 1);
        log.append(&queued(2, &["b"])).unwrap();
        assert_eq!(lines(&path).len(), 2);
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_the_configured_number() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = Rotation {
            max_bytes: 400,
            keep: 2,
            ..BIG
        };
        let mut log = EventLogFile::open(dir.path(), rotation).unwrap();
        for seq in 1..=12 {
            log.append(&queued(seq, &["0123456789abcdef"])).unwrap();
        }
        let current = dir.path().join(FILE_NAME);
        let first = dir.path().join("events.log.1");
        let second = dir.path().join("events.log.2");
        assert!(!dir.path().join("events.log.3").exists());
        for path in [&current, &first, &second] {
            assert!(
                fs::metadata(path).unwrap().len() <= 400,
                "{path:?} is too big"
            );
        }
        // Newest lines are in events.log, then .1, then .2; seqs run on without gaps.
        let all: Vec<u64> = [&second, &first, &current]
            .iter()
            .flat_map(|p| lines(p))
            .map(|l| l["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(all.last(), Some(&12));
        assert!(all.windows(2).all(|w| w[1] == w[0] + 1));
        // Just after a rotation, the last seq is read from events.log.1.
        drop(log);
        let newest_rotated = lines(&first).last().unwrap()["seq"].as_u64().unwrap();
        fs::write(&current, "").unwrap();
        assert_eq!(
            EventLogFile::open(dir.path(), rotation).unwrap().last_seq(),
            newest_rotated
        );
    }

    #[test]
    fn rotated_files_past_the_total_size_go_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = Rotation {
            max_bytes: 400,
            keep: 10,
            max_age: None,
            max_total_bytes: Some(1_000),
        };
        let mut log = EventLogFile::open(dir.path(), rotation).unwrap();
        for seq in 1..=40 {
            log.append(&queued(seq, &["0123456789abcdef"])).unwrap();
        }
        // Each rotation removed what took the files past 1,000 bytes: the newest stay.
        assert!(files_bytes(dir.path()).unwrap() <= 1_000);
        assert!(dir.path().join("events.log.1").exists());
        assert!(!dir.path().join("events.log.4").exists());
        let newest = lines(&dir.path().join(FILE_NAME));
        assert_eq!(newest.last().unwrap()["seq"], 40);
    }

    #[test]
    fn rotated_files_past_the_age_go_and_the_current_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = Rotation {
            max_bytes: 400,
            keep: 10,
            max_age: Some(Duration::from_secs(3600)),
            max_total_bytes: None,
        };
        let mut log = EventLogFile::open(dir.path(), rotation).unwrap();
        for seq in 1..=12 {
            log.append(&queued(seq, &["0123456789abcdef"])).unwrap();
        }
        let rotated: Vec<PathBuf> = (1..=10)
            .map(|n| dir.path().join(format!("{FILE_NAME}.{n}")))
            .filter(|path| path.exists())
            .collect();
        assert!(rotated.len() >= 2, "{rotated:?}");
        // The oldest is two hours old, the others new.
        let oldest = rotated.last().unwrap();
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(oldest)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        let removed = log.expire(SystemTime::now()).unwrap();
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert_eq!(&removed[0].path, oldest);
        assert!(!oldest.exists());
        // A day later, everything rotated goes, and events.log stays.
        let removed = log
            .expire(SystemTime::now() + Duration::from_secs(86_400))
            .unwrap();
        assert_eq!(removed.len(), rotated.len() - 1);
        assert!(dir.path().join(FILE_NAME).exists());
        // Appending goes on after the gaps.
        log.append(&queued(13, &["after"])).unwrap();
        assert_eq!(log.last_seq(), 13);
    }
}
