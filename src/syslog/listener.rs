//! The TCP, RELP and UDP listeners: framing, batching, back-pressure.

use super::parse::{ServiceFrom, event_from_message};
use super::{Access, Transport};
use crate::event::{Event, IngestContext, now_us};
use crate::intake::Intake;
use crate::queue::QueueError;
use bytes::{Buf, BytesMut};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// The longest message taken: a longer newline-framed line or a larger octet count closes the
/// connection (its framing can no longer be trusted).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Messages appended together, and their bytes at most (past which a batch is cut short):
/// what one connection holds while its previous batch is made durable.
pub(super) const BATCH: usize = 1_000;
pub(super) const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Between retries of a batch the queue refused for now.
const RETRY: Duration = Duration::from_millis(100);
/// Connections one TCP listener serves at once; more are closed at once and counted
/// (`refused`).
pub const MAX_CONNECTIONS: usize = 1_024;
/// How long connections get, once the node stops, to hand over what they have read.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a `tls://` client gets to complete its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub(super) struct Context {
    pub intake: Arc<Intake>,
    pub node: Arc<str>,
    pub access: Access,
    pub stop: watch::Receiver<bool>,
    /// The listener's URL, for metrics and logs.
    pub name: Arc<str>,
    pub service: Arc<ServiceFrom>,
}

impl Context {
    pub(super) fn count(&self, what: &'static str, n: u64) {
        self.intake.metrics().syslog(&self.name, what, n);
    }

    /// The events of `messages`, counting those that did not parse.
    pub(super) fn events(&self, messages: &[&[u8]]) -> Vec<Event> {
        let now = now_us();
        let ctx = IngestContext {
            node: &self.node,
            now_us: now,
            oldest_us: self.intake.oldest_us(now),
        };
        let mut unparsed = 0;
        let events = messages
            .iter()
            .map(|message| {
                let (event, parsed) = event_from_message(message, ctx, &self.service);
                unparsed += u64::from(!parsed);
                event
            })
            .collect();
        self.count("messages", messages.len() as u64);
        if unparsed > 0 {
            self.count("unparsed", unparsed);
        }
        events
    }
}

/// A TCP listener serving plain syslog (`Transport::Tcp`), syslog inside TLS
/// (`Transport::Tls`, with `tls`) or RELP (`Transport::Relp`).
pub(super) async fn start_stream(
    addr: SocketAddr,
    transport: Transport,
    tls: Option<TlsAcceptor>,
    mut context: Context,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let scheme = match transport {
        Transport::Relp => "relp",
        Transport::Tls => "tls",
        Transport::Tcp | Transport::Udp => "tcp",
    };
    context.name = Arc::from(format!("{scheme}://{bound}"));
    let task = tokio::spawn(async move {
        let mut stop = context.stop.clone();
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|stop| *stop) => break,
                // Reap finished connections as they end.
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(listener = %context.name, %error, "Syslog accept failed.");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            // Connections that ended since the last accept free their places first.
            while connections.try_join_next().is_some() {}
            if !context.access.admits(peer.ip()) || connections.len() >= MAX_CONNECTIONS {
                context.count("refused", 1);
                continue;
            }
            context.count("connections", 1);
            let context = context.clone();
            let tls = tls.clone();
            connections.spawn(async move {
                let served = match (transport, tls) {
                    (Transport::Relp, _) => super::relp::serve_connection(stream, &context).await,
                    (_, Some(tls)) => match tokio::time::timeout(HANDSHAKE, tls.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, &context).await,
                        Ok(Err(error)) => {
                            context.count("broken", 1);
                            Err(format!("TLS handshake: {error}"))
                        }
                        Err(_) => {
                            context.count("broken", 1);
                            Err(format!("no TLS handshake within {HANDSHAKE:?}"))
                        }
                    },
                    _ => serve_connection(stream, &context).await,
                };
                if let Err(why) = served {
                    tracing::info!(listener = %context.name, %peer, why, "Closed a syslog connection.");
                }
            });
        }
        // No new connections while the others end (the kernel would take them and their data,
        // then reset them).
        drop(listener);
        // Each connection appends what it has read, then ends; one the queue cannot take
        // within the grace is cut off, and what it held is lost (logged: the count of its
        // messages is not known here).
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                listener = %context.name,
                connections = connections.len(),
                "Syslog connections could not hand over what they had read before the node stopped."
            );
            connections.abort_all();
        }
    });
    Ok((bound, task))
}

/// How a connection frames its messages, decided by its first bytes (RFC 6587).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `LEN SP MSG`.
    OctetCounting,
    /// Messages ended by LF (or NUL, as Python's `SysLogHandler` ends them).
    Delimited,
}

/// The framing `buffer`'s first bytes show, or `None` while they do not tell yet: octet
/// counting is digits, a space and a PRI's `<` (`57 <14>…`); anything else (a line starting
/// `2026-11-23 …` or `12 apples`, too) is delimited.
fn framing_of(buffer: &[u8], at_end: bool) -> Option<Framing> {
    let start = buffer.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &buffer[start..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Some(Framing::Delimited);
    }
    match rest.get(digits..digits + 2) {
        Some([b' ', b'<']) => Some(Framing::OctetCounting),
        Some(_) => Some(Framing::Delimited),
        None if at_end || digits > 7 => Some(Framing::Delimited),
        None => None,
    }
}

/// The complete frames at the start of `buffer` (removed from it), and why the stream's
/// framing broke, if it did (the frames before the break are good).
fn frames(
    buffer: &mut BytesMut,
    framing: Framing,
    at_end: bool,
    limit: usize,
) -> (Vec<BytesMut>, Option<String>) {
    let mut frames = Vec::new();
    let mut bytes = 0;
    let broken = loop {
        if frames.len() >= limit || bytes >= BATCH_BYTES {
            break None;
        }
        match framing {
            Framing::Delimited => match memchr::memchr2(b'\n', b'\0', buffer) {
                Some(end) if end > MAX_MESSAGE_BYTES => {
                    break Some(format!("a line longer than {MAX_MESSAGE_BYTES} bytes"));
                }
                Some(end) => {
                    let frame = buffer.split_to(end + 1);
                    if frame.iter().any(|b| !b.is_ascii_whitespace() && *b != 0) {
                        bytes += frame.len();
                        frames.push(frame);
                    }
                }
                None if buffer.len() > MAX_MESSAGE_BYTES => {
                    break Some(format!(
                        "a line longer than {MAX_MESSAGE_BYTES} bytes without a newline"
                    ));
                }
                None => {
                    if at_end && buffer.iter().any(|b| !b.is_ascii_whitespace()) {
                        frames.push(buffer.split());
                    }
                    break None;
                }
            },
            Framing::OctetCounting => {
                // Tolerate the newline some senders add after a frame.
                while buffer.first().is_some_and(|b| b.is_ascii_whitespace()) {
                    buffer.advance(1);
                }
                let Some(space) = buffer.iter().take(8).position(|b| *b == b' ') else {
                    if buffer.len() >= 8 || (at_end && !buffer.is_empty()) {
                        break Some("an octet count that is not `LEN SP`".into());
                    }
                    break None;
                };
                let length = buffer[..space].iter().try_fold(0usize, |n, b| {
                    b.is_ascii_digit().then(|| n * 10 + usize::from(b - b'0'))
                });
                let Some(length) = length.filter(|length| *length > 0 && space > 0) else {
                    break Some("an octet count that is not a positive number".into());
                };
                if length > MAX_MESSAGE_BYTES {
                    break Some(format!(
                        "an octet count of {length}, more than {MAX_MESSAGE_BYTES}"
                    ));
                }
                if buffer.len() < space + 1 + length {
                    if at_end {
                        break Some("the connection ended inside a frame".into());
                    }
                    break None;
                }
                buffer.advance(space + 1);
                bytes += length;
                frames.push(buffer.split_to(length));
            }
        }
    };
    (frames, broken)
}

/// Bytes a connection reads at a time.
pub(super) const READ_CHUNK: usize = 64 * 1024;

/// An append in flight while the connection reads the next batch.
pub(super) type Appending<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<usize>, NotQueued>> + Send + 'a>>;

/// The in-flight append's outcome; pending forever when there is none (its `select!` branch is
/// disabled then).
pub(super) async fn settle(appending: &mut Option<Appending<'_>>) -> Result<Vec<usize>, NotQueued> {
    match appending {
        Some(append) => append.await,
        None => std::future::pending().await,
    }
}

/// What a connection's wait ended with.
pub(super) enum Step {
    Appended(Result<Vec<usize>, NotQueued>),
    Read(std::io::Result<usize>),
    Stop,
}

/// Reads a connection, and appends its messages a batch at a time: while one batch is being
/// made durable the next is read (the pipeline that lets a fast sender fill batches of
/// `BATCH`), and while a full batch waits, nothing more is read (back-pressure).
async fn serve_connection(
    mut stream: impl AsyncRead + Unpin,
    context: &Context,
) -> Result<(), String> {
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    let mut framing = None;
    let mut stop = context.stop.clone();
    let mut batch: Vec<BytesMut> = Vec::new();
    let mut appending: Option<Appending<'_>> = None;
    // The sender closed its side: a last line without a newline is a whole message.
    let mut eof = false;
    // No more reading: the sender closed, the node stops, the framing broke or a read failed.
    let mut ended = false;
    let mut broken = None;
    let mut failed = None;
    loop {
        if framing.is_none() {
            // Blank lines before the first message tell nothing, and are not kept.
            let blank = buffer
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            buffer.advance(blank);
            framing = framing_of(&buffer, eof);
        }
        if let Some(framing) = framing
            && broken.is_none()
        {
            let (frames, why) = frames(&mut buffer, framing, eof, BATCH - batch.len());
            batch.extend(frames);
            if why.is_some() {
                // The frame it broke in is not stored: its bounds are unknown.
                context.count("broken", 1);
                broken = why;
                ended = true;
            }
        }
        if appending.is_none() && !batch.is_empty() {
            let messages: Vec<&[u8]> = batch.iter().map(|frame| &frame[..]).collect();
            let events = context.events(&messages);
            batch.clear();
            appending = Some(Box::pin(append_or_wait(context, events)));
        }
        if appending.is_none() && ended {
            if broken.is_none() && buffer.iter().any(|b| !b.is_ascii_whitespace()) {
                // Part of a message when the node stopped or the connection failed.
                context.count("lost", 1);
            }
            return match (broken, failed) {
                (Some(why), _) | (None, Some(why)) => Err(why),
                (None, None) => Ok(()),
            };
        }
        let can_read = !ended && batch.len() < BATCH;
        if can_read && buffer.capacity() - buffer.len() < READ_CHUNK / 4 {
            buffer.reserve(READ_CHUNK);
        }
        let step = tokio::select! {
            appended = settle(&mut appending), if appending.is_some() => Step::Appended(appended),
            read = stream.read_buf(&mut buffer), if can_read => Step::Read(read),
            // Once the node stops, nothing more is read; what was read is still appended.
            _ = stop.wait_for(|stop| *stop), if !ended => Step::Stop,
        };
        match step {
            Step::Appended(Ok(refused)) => {
                appending = None;
                if !refused.is_empty() {
                    // Each larger than the queue can ever take: counted, and the rest goes on.
                    context.count("lost", refused.len() as u64);
                }
            }
            Step::Appended(Err(not_queued)) => {
                // The queue is closing: what this connection holds is lost, and counted.
                context.count("lost", (not_queued.count + batch.len()) as u64);
                return Err(not_queued.to_string());
            }
            Step::Read(Ok(0)) => (eof, ended) = (true, true),
            Step::Stop => ended = true,
            Step::Read(Ok(read)) => context.count("bytes", read as u64),
            // What was read before is still appended.
            Step::Read(Err(error)) => (failed, ended) = (Some(error.to_string()), true),
        }
    }
}

/// Messages of a batch that could not be queued, and why.
pub(super) struct NotQueued {
    pub count: usize,
    pub error: QueueError,
}

impl std::fmt::Display for NotQueued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} messages could not be queued: {}",
            self.count, self.error
        )
    }
}

/// Appends a connection's batch, waiting while the queue is full (the connection is not read
/// meanwhile: back-pressure, not loss); a batch larger than the queue can take at once goes
/// in halves. While the node stops it keeps trying: the writers still drain the queue until
/// every listener has ended. Returns the positions (in `events`) of the messages left out,
/// each larger than the queue can ever take.
pub(super) async fn append_or_wait(
    context: &Context,
    events: Vec<Event>,
) -> Result<Vec<usize>, NotQueued> {
    // Each with the position of its first event in the whole batch.
    let mut pending = vec![(0, events)];
    let mut refused = Vec::new();
    while let Some((offset, events)) = pending.pop() {
        match context.intake.append(events.clone()).await {
            Ok(()) => {}
            Err(QueueError::TooLarge { .. } | QueueError::TooManyMessages { .. })
                if events.len() > 1 =>
            {
                let mut first = events;
                let second = first.split_off(first.len() / 2);
                // Popped from the end: the first half goes first.
                pending.push((offset + first.len(), second));
                pending.push((offset, first));
            }
            Err(QueueError::TooLarge { .. } | QueueError::TooManyMessages { .. }) => {
                refused.push(offset);
            }
            Err(
                QueueError::Full { .. }
                | QueueError::Unavailable(_)
                | QueueError::Io(_)
                | QueueError::DiskLow { .. },
            ) => {
                pending.push((offset, events));
                tokio::time::sleep(RETRY).await;
            }
            Err(error) => {
                let count = pending
                    .iter()
                    .map(|(_, events)| events.len())
                    .sum::<usize>()
                    + events.len();
                return Err(NotQueued { count, error });
            }
        }
    }
    Ok(refused)
}

/// Bytes of datagrams the kernel may hold for a UDP listener while the node is busy (as
/// rsyslog's `imudp` `RcvBufSize`); the kernel caps it at `net.core.rmem_max`, which an
/// administrator may raise.
const UDP_RECEIVE_BUFFER: usize = 8 * 1024 * 1024;

fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if let Err(error) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::debug!(%error, "Could not enlarge a syslog UDP receive buffer.");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

pub(super) async fn start_udp(
    addr: SocketAddr,
    mut context: Context,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let socket = udp_socket(addr)?;
    let bound = socket.local_addr()?;
    context.name = Arc::from(format!("udp://{bound}"));
    let task = tokio::spawn(async move {
        let mut stop = context.stop.clone();
        let mut datagram = vec![0u8; 65_536];
        loop {
            let received = tokio::select! {
                received = socket.recv_from(&mut datagram) => received,
                _ = stop.wait_for(|stop| *stop) => break,
            };
            let mut messages: Vec<Vec<u8>> = Vec::new();
            let take = |messages: &mut Vec<Vec<u8>>,
                        result: std::io::Result<(usize, SocketAddr)>,
                        datagram: &[u8]| match result {
                Ok((length, peer)) if context.access.admits(peer.ip()) => {
                    context.count("bytes", length as u64);
                    messages.push(datagram[..length].to_vec());
                }
                Ok(_) => context.count("refused", 1),
                Err(error) => {
                    tracing::debug!(listener = %context.name, %error, "A syslog datagram failed.")
                }
            };
            take(&mut messages, received, &datagram);
            // Whatever else has arrived goes in the same batch (refused ones count too, so a
            // flood of them cannot hold the thread).
            for _ in 1..BATCH {
                match socket.try_recv_from(&mut datagram) {
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                    result => take(&mut messages, result, &datagram),
                }
            }
            if messages.is_empty() {
                tokio::task::yield_now().await;
                continue;
            }
            let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let events = context.events(&slices);
            let count = events.len() as u64;
            // UDP has no acknowledgement and no back-pressure: what the queue cannot take now
            // is dropped, and counted.
            if let Err(error) = context.intake.append(events).await {
                context.count("dropped", count);
                tracing::debug!(listener = %context.name, %error, count, "Dropped syslog datagrams.");
            }
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[u8], framing: Framing, at_end: bool) -> Result<Vec<Vec<u8>>, String> {
        let mut buffer = BytesMut::from(input);
        match frames(&mut buffer, framing, at_end, BATCH) {
            (_, Some(broken)) => Err(broken),
            (frames, None) => Ok(frames.into_iter().map(|b| b.to_vec()).collect()),
        }
    }

    #[test]
    fn framing_is_read_from_the_first_bytes() {
        assert_eq!(
            framing_of(b"57 <14>1 ...", false),
            Some(Framing::OctetCounting)
        );
        assert_eq!(
            framing_of(b"\n57 <14>", false),
            Some(Framing::OctetCounting)
        );
        assert_eq!(framing_of(b"<14>Nov 23", false), Some(Framing::Delimited));
        assert_eq!(
            framing_of(b"2026-11-23 started", false),
            Some(Framing::Delimited)
        );
        assert_eq!(framing_of(b"12 apples\n", false), Some(Framing::Delimited));
        // Not yet known: only whitespace, or digits so far.
        assert_eq!(framing_of(b"\n", false), None);
        assert_eq!(framing_of(b"57", false), None);
        assert_eq!(framing_of(b"57", true), Some(Framing::Delimited));
    }

    #[test]
    fn octet_counted_frames_are_split_exactly() {
        let input = b"5 <14>a6 <14>bc\n9 <14>x\ny\nz";
        assert_eq!(
            split(input, Framing::OctetCounting, false).unwrap(),
            [
                b"<14>a".to_vec(),
                b"<14>bc".to_vec(),
                b"<14>x\ny\nz".to_vec()
            ]
        );
        // A partial frame waits for more, unless the stream ended.
        assert_eq!(
            split(b"10 <14>", Framing::OctetCounting, false)
                .unwrap()
                .len(),
            0
        );
        assert!(split(b"10 <14>", Framing::OctetCounting, true).is_err());
        assert!(split(b"99999999 x", Framing::OctetCounting, false).is_err());
        assert!(split(b"70000 x", Framing::OctetCounting, false).is_err());
        assert!(split(b"12a x", Framing::OctetCounting, false).is_err());
        assert!(split(b"+5 <14>a", Framing::OctetCounting, false).is_err());
        assert!(split(b"0 <14>a", Framing::OctetCounting, false).is_err());
        // The frames before a break are kept.
        let mut buffer = BytesMut::from(&b"5 <14>a70000 x"[..]);
        let (good, broken) = frames(&mut buffer, Framing::OctetCounting, false, BATCH);
        assert_eq!(good.len(), 1);
        assert!(broken.is_some());
    }

    #[test]
    fn delimited_frames_end_at_newline_or_nul() {
        assert_eq!(
            split(b"<14>a\n\r\n<14>b\0<14>c", Framing::Delimited, false).unwrap(),
            [b"<14>a\n".to_vec(), b"<14>b\0".to_vec()]
        );
        assert_eq!(
            split(b"<14>c", Framing::Delimited, true).unwrap(),
            [b"<14>c".to_vec()]
        );
        assert!(
            split(
                &vec![b'x'; MAX_MESSAGE_BYTES + 1],
                Framing::Delimited,
                false
            )
            .is_err()
        );
        let mut long = vec![b'x'; MAX_MESSAGE_BYTES + 10];
        long.push(b'\n');
        assert!(split(&long, Framing::Delimited, false).is_err());
    }
}
