//! The local durable queue of the embedded shape: an append-only log of segment files in
//! `<data-dir>/queue/`, with group commit.
//!
//! Invariants:
//! - Only the appender thread touches segment files after start-up; nothing on the async
//!   runtime blocks on disk. Appends reach it through a channel and wait on a oneshot reply.
//! - A reply of `Ok` is sent only after `fdatasync` returned for the record holding the events;
//!   every append waiting at that moment shares the one sync (group commit).
//! - Events are visible to consumers only once durable, and stay in memory until every role
//!   acknowledged them; the memory held is bounded by [`QueueLimits`], which appends check
//!   before they are written.
//! - A segment file is deleted only when every role acknowledged its last event.
//!
//! Segment format: files named `<first seq, 20 digits>.seg`, each a run of records
//! `[len: u32 LE][crc32: u32 LE][first_seq: u64 LE][count: u32 LE][count JSON lines]`, where
//! `len` counts the bytes after the crc and the crc covers them. A torn record at the end of a
//! file (a crash mid-write, never acknowledged) is cut off at start-up. The file `released`
//! holds the highest seq every role acknowledged, so start-up skips what is already consumed;
//! it is written without fsync because a stale value only replays more (consumers de-duplicate).

use super::{
    Batch, ConsumerRole, IngestQueue, QueueConsumer, QueueDepth, QueueError, QueueLimits,
    QueuedEvent,
};
use crate::event::Event;
use async_trait::async_trait;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// A segment is closed once it grows past this; closed segments are deleted when released.
const SEGMENT_TARGET_BYTES: u64 = 64 * 1024 * 1024;
/// One group commit writes at most about this much before syncing.
const GROUP_MAX_BYTES: usize = 32 * 1024 * 1024;
const RECORD_HEADER_BYTES: usize = 4 + 4 + 8 + 4;

pub struct LocalQueue {
    shared: Arc<Shared>,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    appender: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct Shared {
    limits: QueueLimits,
    state: Mutex<State>,
    /// The highest durable seq; consumers wait on it.
    durable_seq: watch::Sender<u64>,
}

struct State {
    /// Durable events not yet acknowledged by every role, in seq order, with encoded size.
    retained: VecDeque<(QueuedEvent, usize)>,
    /// Events and bytes retained or being appended: what the limits are checked against.
    reserved: QueueDepth,
    /// Per role (index of [`ConsumerRole::ALL`]): every seq up to this one is acknowledged.
    acked: [u64; ConsumerRole::ALL.len()],
    failure: Option<String>,
    appends_stopped: bool,
    /// Set when an append is refused as [`QueueError::Full`]: [`IngestQueue::shedding`] then
    /// answers the refusal until the consumers have drained the queue below [`RESUME_BELOW`]
    /// of its limits. Appends themselves are still taken while they fit (a syslog datagram
    /// already parsed is not dropped for it).
    shedding: bool,
}

/// The share of its limits (tenths) a shedding queue must drain below before requests are
/// parsed again. Under sustained overload a queue kept at the brim would refuse most requests
/// only after they were read, parsed and encoded — four in ten of the node's requests in a
/// profiled run — taking that CPU from the store writer that drains it; refusing until a tenth
/// has drained lets the node refuse them before parsing instead ([`IngestQueue::shedding`]).
const RESUME_BELOW: u64 = 9;

impl State {
    fn full(&self) -> QueueError {
        QueueError::Full {
            events: self.reserved.events,
            bytes: self.reserved.bytes,
        }
    }

    /// Whether requests are still refused unparsed after a refusal for room; ends the shedding
    /// once the queue has drained below [`RESUME_BELOW`] tenths of both limits. A queue that
    /// is closed or failed sheds nothing: its appends answer why.
    fn shedding(&mut self, limits: &QueueLimits) -> Option<QueueError> {
        let below = |reserved: usize, limit: usize| {
            (reserved as u64).saturating_mul(10) < (limit as u64).saturating_mul(RESUME_BELOW)
        };
        if self.shedding
            && below(self.reserved.events, limits.max_events)
            && below(self.reserved.bytes, limits.max_bytes)
        {
            self.shedding = false;
        }
        let refusing = self.shedding && !self.appends_stopped && self.failure.is_none();
        refusing.then(|| self.full())
    }
}

enum Command {
    Append(PendingAppend),
    /// Every role acknowledged every seq up to `upto`.
    Release {
        upto: u64,
    },
    Stop,
}

struct PendingAppend {
    events: Vec<Event>,
    sizes: Vec<usize>,
    payload: Vec<u8>,
    done: oneshot::Sender<Result<(), QueueError>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave State half-updated in a way that matters more
    // than stopping the node would; keep serving.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LocalQueue {
    /// Opens (or creates) the queue in `dir`, replaying what a previous run left. Blocking.
    ///
    /// `seq_floor` is the highest seq a consumer has already seen (e.g. the last line of the
    /// event log file), so that a queue directory deleted by hand never reuses a seq.
    pub fn open(dir: &Path, limits: QueueLimits, seq_floor: u64) -> Result<LocalQueue, QueueError> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, "create", &e))?;
        let recovered = recover(dir)?;
        let next_seq = recovered.next_seq.max(seq_floor + 1).max(1);
        let active_path = segment_path(dir, next_seq);
        let active = create_segment(dir, &active_path)?;

        let front = recovered
            .events
            .front()
            .map(|(e, _)| e.seq)
            .unwrap_or(next_seq);
        let reserved = QueueDepth {
            events: recovered.events.len(),
            bytes: recovered.events.iter().map(|(_, size)| size).sum(),
        };
        if !recovered.events.is_empty() {
            tracing::info!(
                events = reserved.events,
                first_seq = front,
                "Replaying events a previous run left in the ingest queue."
            );
        }
        let (durable_seq, _) = watch::channel(next_seq - 1);
        let shared = Arc::new(Shared {
            limits,
            state: Mutex::new(State {
                retained: recovered.events,
                reserved,
                acked: [front - 1; ConsumerRole::ALL.len()],
                failure: None,
                appends_stopped: false,
                shedding: false,
            }),
            durable_seq,
        });
        let (commands, receiver) = mpsc::channel();
        let mut appender = Appender {
            shared: shared.clone(),
            dir: dir.to_owned(),
            active,
            active_path,
            active_len: 0,
            closed: recovered.segments,
            next_seq,
            released_upto: front - 1,
        };
        let thread = std::thread::Builder::new()
            .name("queue-appender".into())
            .spawn(move || appender.run(receiver))
            .map_err(|e| QueueError::Io(format!("cannot start the queue appender: {e}")))?;
        Ok(LocalQueue {
            shared,
            commands: Mutex::new(Some(commands)),
            appender: Mutex::new(Some(thread)),
        })
    }

    fn sender(&self) -> Option<mpsc::Sender<Command>> {
        self.commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn reserve(&self, events: usize, bytes: usize) -> Result<(), QueueError> {
        let limits = self.shared.limits;
        let mut state = lock(&self.shared.state);
        if state.appends_stopped {
            return Err(QueueError::Closed);
        }
        if let Some(failure) = &state.failure {
            return Err(QueueError::Io(failure.clone()));
        }
        if events > limits.max_events || bytes > limits.max_bytes {
            return Err(QueueError::TooLarge {
                events,
                bytes,
                max_events: limits.max_events,
                max_bytes: limits.max_bytes,
            });
        }
        if state.reserved.events + events > limits.max_events
            || state.reserved.bytes + bytes > limits.max_bytes
        {
            state.shedding = true;
            return Err(state.full());
        }
        state.reserved.events += events;
        state.reserved.bytes += bytes;
        Ok(())
    }

    fn unreserve(&self, events: usize, bytes: usize) {
        let mut state = lock(&self.shared.state);
        state.reserved.events -= events;
        state.reserved.bytes -= bytes;
    }
}

#[async_trait]
impl IngestQueue for LocalQueue {
    async fn append(&self, events: Vec<Event>) -> Result<(), QueueError> {
        let count = events.len();
        if count == 0 {
            return Ok(());
        }
        // Encoding happens here, on the request's task, so that it spreads over the runtime's
        // threads instead of queueing behind the single appender.
        let mut payload = Vec::with_capacity(count * 256);
        let mut sizes = Vec::with_capacity(count);
        for event in &events {
            let start = payload.len();
            event.write_json(&mut payload);
            payload.push(b'\n');
            sizes.push(payload.len() - start);
        }
        let bytes = payload.len();
        self.reserve(count, bytes)?;
        let (done, reply) = oneshot::channel();
        let command = Command::Append(PendingAppend {
            events,
            sizes,
            payload,
            done,
        });
        let sent = self
            .sender()
            .map(|s| s.send(command).is_ok())
            .unwrap_or(false);
        let result = if sent {
            reply
                .await
                .unwrap_or_else(|_| Err(QueueError::Io("the queue appender stopped".into())))
        } else {
            Err(QueueError::Closed)
        };
        if result.is_err() {
            self.unreserve(count, bytes);
        }
        result
    }

    async fn consumer(&self, role: ConsumerRole) -> Result<Box<dyn QueueConsumer>, QueueError> {
        let role_index = role_index(role);
        let delivered = lock(&self.shared.state).acked[role_index];
        Ok(Box::new(LocalConsumer {
            shared: self.shared.clone(),
            commands: self.sender(),
            role_index,
            delivered,
            durable_seq: self.shared.durable_seq.subscribe(),
        }))
    }

    async fn health(&self) -> Result<(), QueueError> {
        let state = lock(&self.shared.state);
        match &state.failure {
            Some(failure) => Err(QueueError::Io(failure.clone())),
            None => Ok(()),
        }
    }

    fn shedding(&self) -> Option<QueueError> {
        lock(&self.shared.state).shedding(&self.shared.limits)
    }

    fn depth(&self) -> QueueDepth {
        lock(&self.shared.state).reserved
    }

    async fn close(&self) {
        lock(&self.shared.state).appends_stopped = true;
        let commands = self
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(commands) = commands {
            let _ = commands.send(Command::Stop);
        }
        let thread = self
            .appender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for LocalQueue {
    fn drop(&mut self) {
        if let Some(commands) = self.commands.get_mut().ok().and_then(Option::take) {
            let _ = commands.send(Command::Stop);
        }
    }
}

fn role_index(role: ConsumerRole) -> usize {
    ConsumerRole::ALL
        .iter()
        .position(|r| *r == role)
        .expect("every role is in ConsumerRole::ALL")
}

struct LocalConsumer {
    shared: Arc<Shared>,
    commands: Option<mpsc::Sender<Command>>,
    role_index: usize,
    /// Every seq up to this one was handed out by `fetch`.
    delivered: u64,
    durable_seq: watch::Receiver<u64>,
}

impl LocalConsumer {
    fn take(&mut self, max: usize) -> Batch {
        let state = lock(&self.shared.state);
        let Some(front) = state.retained.front().map(|(e, _)| e.seq) else {
            return Batch::default();
        };
        let skip = (self.delivered + 1).saturating_sub(front) as usize;
        let events: Vec<QueuedEvent> = state
            .retained
            .iter()
            .skip(skip)
            .take(max)
            .map(|(event, _)| event.clone())
            .collect();
        if let Some(last) = events.last() {
            self.delivered = last.seq;
        }
        Batch { events }
    }
}

#[async_trait]
impl QueueConsumer for LocalConsumer {
    async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Batch, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let durable = *self.durable_seq.borrow_and_update();
            let available = durable.saturating_sub(self.delivered) as usize;
            let expired = Instant::now() >= deadline;
            if available >= max || (available > 0 && expired) {
                return Ok(self.take(max));
            }
            if expired {
                return Ok(Batch::default());
            }
            tokio::select! {
                changed = self.durable_seq.changed() => {
                    // The sender lives in `Shared`, which we hold: it cannot be dropped.
                    debug_assert!(changed.is_ok());
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn ack(&mut self, batch: &Batch) -> Result<(), QueueError> {
        let Some(last) = batch.last_seq() else {
            return Ok(());
        };
        let released = {
            let mut state = lock(&self.shared.state);
            let before = *state.acked.iter().min().expect("roles exist");
            let acked = &mut state.acked[self.role_index];
            *acked = (*acked).max(last);
            let upto = *state.acked.iter().min().expect("roles exist");
            while let Some((event, size)) = state.retained.front() {
                if event.seq > upto {
                    break;
                }
                let size = *size;
                state.retained.pop_front();
                state.reserved.events -= 1;
                state.reserved.bytes -= size;
            }
            (upto > before).then_some(upto)
        };
        if let (Some(upto), Some(commands)) = (released, &self.commands) {
            // Deleting files is the appender's job; if it has stopped, the files are replayed
            // and de-duplicated at the next start, which is correct, only slower.
            let _ = commands.send(Command::Release { upto });
        }
        Ok(())
    }
}

/// The thread that owns the segment files.
struct Appender {
    shared: Arc<Shared>,
    dir: PathBuf,
    active: File,
    active_path: PathBuf,
    active_len: u64,
    /// Closed segments, oldest first, with the last seq each holds.
    closed: VecDeque<(PathBuf, u64)>,
    next_seq: u64,
    released_upto: u64,
}

impl Appender {
    fn run(&mut self, commands: mpsc::Receiver<Command>) {
        while let Ok(first) = commands.recv() {
            let mut group = Vec::new();
            let mut group_bytes = 0;
            let mut release = None;
            let mut stop = false;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append(append) => {
                        group_bytes += append.payload.len();
                        group.push(append);
                    }
                    Command::Release { upto } => release = Some(upto),
                    Command::Stop => stop = true,
                }
                if group_bytes < GROUP_MAX_BYTES && !stop {
                    next = commands.try_recv().ok();
                }
            }
            if !group.is_empty() {
                self.write_group(group);
            }
            if let Some(upto) = release {
                self.release(upto);
            }
            if stop {
                break;
            }
        }
    }

    fn write_group(&mut self, group: Vec<PendingAppend>) {
        let total: usize = group
            .iter()
            .map(|a| a.payload.len() + RECORD_HEADER_BYTES)
            .sum();
        let mut buffer = Vec::with_capacity(total);
        let mut seq = self.next_seq;
        for append in &group {
            encode_record(
                &mut buffer,
                seq,
                append.events.len() as u32,
                &append.payload,
            );
            seq += append.events.len() as u64;
        }
        let written = self
            .active
            .write_all(&buffer)
            .and_then(|()| self.active.sync_data());
        if let Err(error) = written {
            let message = format!("{}: {error}", self.active_path.display());
            tracing::error!(error = %message, "Could not write to the ingest queue; the appends are refused.");
            // Cut the partial write so the next record starts on a clean boundary.
            let repaired = self
                .active
                .set_len(self.active_len)
                .and_then(|()| self.active.seek(SeekFrom::Start(self.active_len)).map(drop));
            if let Err(repair) = repaired {
                lock(&self.shared.state).failure = Some(format!(
                    "{message}; the segment could not be repaired: {repair}"
                ));
            }
            for append in group {
                let _ = append.done.send(Err(QueueError::Io(message.clone())));
            }
            return;
        }
        self.active_len += buffer.len() as u64;
        let mut replies = Vec::with_capacity(group.len());
        {
            let mut state = lock(&self.shared.state);
            let mut seq = self.next_seq;
            for append in group {
                for (event, size) in append.events.into_iter().zip(append.sizes) {
                    let event = Arc::new(event);
                    state.retained.push_back((QueuedEvent { seq, event }, size));
                    seq += 1;
                }
                replies.push(append.done);
            }
        }
        self.next_seq = seq;
        self.shared.durable_seq.send_replace(seq - 1);
        for reply in replies {
            let _ = reply.send(Ok(()));
        }
        if self.active_len >= SEGMENT_TARGET_BYTES {
            self.roll();
        }
    }

    fn roll(&mut self) {
        let path = segment_path(&self.dir, self.next_seq);
        match create_segment(&self.dir, &path) {
            Ok(file) => {
                let old_path = std::mem::replace(&mut self.active_path, path);
                self.active = file;
                self.active_len = 0;
                self.closed.push_back((old_path, self.next_seq - 1));
                self.release(self.released_upto);
            }
            Err(error) => {
                // Keep appending to the current segment; it only grows past its target.
                tracing::warn!(error = %error, "Could not start a new queue segment.");
            }
        }
    }

    fn release(&mut self, upto: u64) {
        if upto > self.released_upto {
            let temporary = self.dir.join("released.tmp");
            let written = fs::write(&temporary, upto.to_string())
                .and_then(|()| fs::rename(&temporary, self.dir.join("released")));
            if let Err(error) = written {
                tracing::warn!(error = %error, "Could not record the released queue position.");
            }
        }
        self.released_upto = self.released_upto.max(upto);
        while let Some((path, last_seq)) = self.closed.front() {
            if *last_seq > self.released_upto {
                break;
            }
            if let Err(error) = fs::remove_file(path)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %error, "Could not delete a released queue segment.");
                break;
            }
            self.closed.pop_front();
        }
    }
}

fn encode_record(buffer: &mut Vec<u8>, first_seq: u64, count: u32, payload: &[u8]) {
    let len = (8 + 4 + payload.len()) as u32;
    let body_start = buffer.len() + 8;
    buffer.extend_from_slice(&len.to_le_bytes());
    buffer.extend_from_slice(&[0; 4]);
    buffer.extend_from_slice(&first_seq.to_le_bytes());
    buffer.extend_from_slice(&count.to_le_bytes());
    buffer.extend_from_slice(payload);
    let crc = crc32fast::hash(&buffer[body_start..]);
    buffer[body_start - 4..body_start].copy_from_slice(&crc.to_le_bytes());
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

fn io_error(path: &Path, action: &str, error: &std::io::Error) -> QueueError {
    QueueError::Io(format!("cannot {action} {}: {error}", path.display()))
}

fn create_segment(dir: &Path, path: &Path) -> Result<File, QueueError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(|e| io_error(path, "create", &e))?;
    // The new name must be durable too, or a crash could lose a synced segment's entry.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, "sync", &e))?;
    Ok(file)
}

struct Recovered {
    events: VecDeque<(QueuedEvent, usize)>,
    segments: VecDeque<(PathBuf, u64)>,
    next_seq: u64,
}

/// Reads every segment in `dir`, cutting torn tails and deleting empty segments.
fn recover(dir: &Path) -> Result<Recovered, QueueError> {
    let mut paths: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .map_err(|e| io_error(dir, "read", &e))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let path = entry.path();
            let name = path.file_name()?.to_str()?;
            let seq = name.strip_suffix(".seg")?.parse::<u64>().ok()?;
            Some((seq, path))
        })
        .collect();
    paths.sort();
    let released = fs::read_to_string(dir.join("released"))
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let mut recovered = Recovered {
        events: VecDeque::new(),
        segments: VecDeque::new(),
        next_seq: released + 1,
    };
    for (name_seq, path) in paths {
        recovered.next_seq = recovered.next_seq.max(name_seq);
        let last = read_segment(&path, released, &mut recovered.events)?;
        if let Some(last_seq) = last {
            recovered.next_seq = recovered.next_seq.max(last_seq + 1);
        }
        match last {
            Some(last_seq) if last_seq > released => {
                recovered.segments.push_back((path, last_seq));
            }
            _ => {
                fs::remove_file(&path).map_err(|e| io_error(&path, "delete", &e))?;
            }
        }
    }
    Ok(recovered)
}

/// Appends the events of one segment after `released` to `events`; returns the last seq the
/// segment held.
fn read_segment(
    path: &Path,
    released: u64,
    events: &mut VecDeque<(QueuedEvent, usize)>,
) -> Result<Option<u64>, QueueError> {
    let bytes = fs::read(path).map_err(|e| io_error(path, "read", &e))?;
    let mut offset = 0;
    let mut last_seq = None;
    let mut problem = None;
    while offset < bytes.len() {
        match decode_record(&bytes[offset..]) {
            Ok((record_len, first_seq, lines)) => {
                let mut seq = first_seq;
                for line in lines {
                    last_seq = Some(seq);
                    if seq <= released {
                        seq += 1;
                        continue;
                    }
                    let event: Event = serde_json::from_slice(line).map_err(|e| {
                        QueueError::Io(format!(
                            "{}: an event at seq {seq} does not decode: {e}",
                            path.display()
                        ))
                    })?;
                    if let Some((previous, _)) = events.back()
                        && previous.seq >= seq
                    {
                        return Err(QueueError::Io(format!(
                            "{}: seq {seq} does not follow {}; the queue is corrupt",
                            path.display(),
                            previous.seq
                        )));
                    }
                    events.push_back((
                        QueuedEvent {
                            seq,
                            event: Arc::new(event),
                        },
                        line.len() + 1,
                    ));
                    seq += 1;
                }
                offset += record_len;
            }
            Err(reason) => {
                problem = Some(reason);
                break;
            }
        }
    }
    if let Some(reason) = problem {
        tracing::warn!(
            path = %path.display(),
            offset,
            reason,
            "Cutting a torn record off a queue segment; it was never acknowledged."
        );
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(offset as u64).and_then(|()| f.sync_all()))
            .map_err(|e| io_error(path, "truncate", &e))?;
    }
    Ok(last_seq)
}

/// Decodes the record at the start of `bytes`: its total length, first seq and lines.
fn decode_record(bytes: &[u8]) -> Result<(usize, u64, Vec<&[u8]>), &'static str> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err("incomplete header");
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if len < 12 || bytes.len() < 8 + len {
        return Err("incomplete record");
    }
    let body = &bytes[8..8 + len];
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch");
    }
    let first_seq = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
    let payload = &body[12..];
    let lines: Vec<&[u8]> = payload
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .collect();
    if lines.len() != count {
        return Err("event count does not match the header");
    }
    Ok((8 + len, first_seq, lines))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{IngestContext, parse_json_body};

    const LIMITS: QueueLimits = QueueLimits {
        max_events: 1_000,
        max_bytes: 1 << 20,
    };

    fn events(messages: &[&str]) -> Vec<Event> {
        let body: String = messages
            .iter()
            .map(|m| format!("{{\"service\":\"s\",\"message\":\"{m}\"}}\n"))
            .collect();
        parse_json_body(
            body.as_bytes(),
            IngestContext {
                node: "n",
                now_us: 1,
                oldest_us: i64::MIN,
            },
        )
        .unwrap()
    }

    fn messages(batch: &Batch) -> Vec<String> {
        batch
            .events
            .iter()
            .map(|e| e.event.message.clone())
            .collect()
    }

    #[tokio::test]
    async fn every_role_receives_every_event_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let queue = LocalQueue::open(dir.path(), LIMITS, 0).unwrap();
        queue.append(events(&["a", "b"])).await.unwrap();
        queue.append(events(&["c"])).await.unwrap();
        for role in ConsumerRole::ALL {
            let mut consumer = queue.consumer(role).await.unwrap();
            let batch = consumer.fetch(10, Duration::ZERO).await.unwrap();
            assert_eq!(messages(&batch), ["a", "b", "c"]);
            assert_eq!(
                batch.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
                [1, 2, 3]
            );
        }
    }

    #[tokio::test]
    async fn fetch_returns_a_full_batch_at_once_and_a_partial_one_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let queue = LocalQueue::open(dir.path(), LIMITS, 0).unwrap();
        let mut consumer = queue.consumer(ConsumerRole::Store).await.unwrap();
        queue.append(events(&["a", "b", "c"])).await.unwrap();
        let full = consumer.fetch(2, Duration::from_secs(3600)).await.unwrap();
        assert_eq!(messages(&full), ["a", "b"]);
        let started = std::time::Instant::now();
        let partial = consumer.fetch(2, Duration::from_millis(50)).await.unwrap();
        assert_eq!(messages(&partial), ["c"]);
        assert!(started.elapsed() >= Duration::from_millis(50));
        let empty = consumer.fetch(2, Duration::ZERO).await.unwrap();
        assert!(empty.is_empty());
    }

    #[tokio::test]
    async fn unacknowledged_events_are_replayed_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let queue = LocalQueue::open(dir.path(), LIMITS, 0).unwrap();
            queue.append(events(&["a", "b"])).await.unwrap();
            queue.append(events(&["c"])).await.unwrap();
            let mut store = queue.consumer(ConsumerRole::Store).await.unwrap();
            let mut log = queue.consumer(ConsumerRole::EventLog).await.unwrap();
            let first = store.fetch(1, Duration::ZERO).await.unwrap();
            store.ack(&first).await.unwrap();
            let first = log.fetch(1, Duration::ZERO).await.unwrap();
            log.ack(&first).await.unwrap();
            queue.close().await;
        }
        let queue = LocalQueue::open(dir.path(), LIMITS, 0).unwrap();
        let mut store = queue.consumer(ConsumerRole::Store).await.unwrap();
        let batch = store.fetch(10, Duration::ZERO).await.unwrap();
        assert_eq!(messages(&batch), ["b", "c"]);
        assert_eq!(batch.last_seq(), Some(3));
        queue.append(events(&["d"])).await.unwrap();
        let next = store.fetch(10, Duration::ZERO).await.unwrap();
        assert_eq!(next.events[0].seq, 4, "seqs are never reused");
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_the_rest_replayed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let queue = LocalQueue::open(dir.path(), LIMITS, 0).unwrap();
            queue.append(events(&["a", "b"])).await.unwrap();
            queue.close().await;
        }
        let segment = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| fs::metadata(p).unwrap().len() > 0)
            .unwrap();
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(file);
        let queue = LocalQueue::open(dir.path(), LIMITS, 0).unwrap();
        let mut store = queue.consumer(ConsumerRole::Store).await.unwrap();
        let batch = store.fetch(10, Duration::ZERO).await.unwrap();
        assert_eq!(messages(&batch), ["a", "b"]);
    }

    #[tokio::test]
    async fn appends_past_the_limits_are_refused_until_consumers_acknowledge() {
        let dir = tempfile::tempdir().unwrap();
        let limits = QueueLimits {
            max_events: 3,
            max_bytes: 1 << 20,
        };
        let queue = LocalQueue::open(dir.path(), limits, 0).unwrap();
        queue.append(events(&["a", "b"])).await.unwrap();
        assert!(matches!(
            queue.append(events(&["c", "d"])).await,
            Err(QueueError::Full { events: 2, .. })
        ));
        assert!(matches!(
            queue.append(events(&["1", "2", "3", "4"])).await,
            Err(QueueError::TooLarge { .. })
        ));
        assert_eq!(queue.depth().events, 2);
        for role in ConsumerRole::ALL {
            let mut consumer = queue.consumer(role).await.unwrap();
            let batch = consumer.fetch(10, Duration::ZERO).await.unwrap();
            consumer.ack(&batch).await.unwrap();
        }
        assert_eq!(queue.depth(), QueueDepth::default());
        queue.append(events(&["c", "d"])).await.unwrap();
    }

    /// Nine events of the same size, then a refusal for room, then the shedding until two of
    /// them are acknowledged; `limits` is full at ten such events, by count or by bytes.
    /// Every role acknowledges the oldest event it has not acknowledged yet.
    async fn acknowledge_oldest(queue: &LocalQueue) {
        for role in ConsumerRole::ALL {
            let mut consumer = queue.consumer(role).await.unwrap();
            let batch = consumer.fetch(1, Duration::ZERO).await.unwrap();
            consumer.ack(&batch).await.unwrap();
        }
    }

    async fn shed_and_drain(limits: QueueLimits) {
        let dir = tempfile::tempdir().unwrap();
        let queue = LocalQueue::open(dir.path(), limits, 0).unwrap();
        let nine: Vec<String> = (0..9).map(|n| n.to_string()).collect();
        let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
        queue.append(events(&nine)).await.unwrap();
        assert!(queue.shedding().is_none(), "not refused yet");
        assert!(matches!(
            queue.append(events(&["a", "b"])).await,
            Err(QueueError::Full { events: 9, .. })
        ));
        assert!(matches!(
            queue.shedding(),
            Some(QueueError::Full { events: 9, .. })
        ));
        // Appends that fit are still taken (a syslog message already parsed is not dropped);
        // only requests not yet parsed are refused, through `shedding`.
        queue.append(events(&["c"])).await.unwrap();
        assert!(queue.shedding().is_some(), "full: still shedding");
        acknowledge_oldest(&queue).await;
        assert!(
            queue.shedding().is_some(),
            "9 of 10 is not below nine tenths"
        );
        acknowledge_oldest(&queue).await;
        assert!(queue.shedding().is_none(), "8 of 10 is below nine tenths");
        assert_eq!(queue.depth().events, 8);
    }

    #[tokio::test]
    async fn a_full_queue_sheds_requests_until_it_has_drained_below_nine_tenths_of_its_events() {
        shed_and_drain(QueueLimits {
            max_events: 10,
            max_bytes: 1 << 20,
        })
        .await;
    }

    #[tokio::test]
    async fn a_full_queue_sheds_requests_until_it_has_drained_below_nine_tenths_of_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = LocalQueue::open(dir.path(), LIMITS, 0).unwrap();
        scratch.append(events(&["0"])).await.unwrap();
        let one_event = scratch.depth().bytes;
        shed_and_drain(QueueLimits {
            max_events: 1000,
            max_bytes: 10 * one_event,
        })
        .await;
    }

    #[tokio::test]
    async fn a_closed_queue_sheds_nothing_and_says_it_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let limits = QueueLimits {
            max_events: 1,
            max_bytes: 1 << 20,
        };
        let queue = LocalQueue::open(dir.path(), limits, 0).unwrap();
        queue.append(events(&["a"])).await.unwrap();
        assert!(queue.append(events(&["b"])).await.is_err());
        assert!(queue.shedding().is_some());
        queue.close().await;
        assert!(queue.shedding().is_none(), "its appends say why");
        assert!(matches!(
            queue.append(events(&["b"])).await,
            Err(QueueError::Closed)
        ));
    }

    #[tokio::test]
    async fn the_seq_floor_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let queue = LocalQueue::open(dir.path(), LIMITS, 41).unwrap();
        queue.append(events(&["a"])).await.unwrap();
        let mut consumer = queue.consumer(ConsumerRole::EventLog).await.unwrap();
        let batch = consumer.fetch(1, Duration::ZERO).await.unwrap();
        assert_eq!(batch.last_seq(), Some(42));
    }

    #[tokio::test]
    async fn appends_after_close_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let queue = LocalQueue::open(dir.path(), LIMITS, 0).unwrap();
        queue.close().await;
        assert!(matches!(
            queue.append(events(&["a"])).await,
            Err(QueueError::Closed)
        ));
    }
}
