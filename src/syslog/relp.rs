//! RELP, rsyslog's Reliable Event Logging Protocol (librelp), served on `relp://` listeners.
//!
//! A frame is `TXNR SP COMMAND SP DATALEN [SP DATA] LF`. The sender opens a session (`open`,
//! answered with our offers), sends `syslog` frames without waiting for answers, up to its
//! window (128 unanswered by default), and ends with `close`. Each `syslog` frame is answered
//! `rsp 6 200 OK` only once its message is durable in the queue: the frames read together are
//! appended together, then answered together.
//!
//! The node never answers a message with an error: rsyslog (8.2302, librelp 1.11) takes
//! `rsp 500` as final and does not send that message again. So while the queue is full or
//! unavailable the answers are held (the sender's window fills and it waits), and when a
//! batch cannot be queued at all the connection is closed unanswered: the sender reconnects
//! and sends every unanswered message again. The guarantee is at least once: a message is
//! stored twice only when a connection breaks after the message was made durable and before
//! the sender read its answer, so at most one window of messages per broken connection.

use super::listener::{
    Appending, BATCH, BATCH_BYTES, Context, MAX_MESSAGE_BYTES, READ_CHUNK, Step, append_or_wait,
    settle,
};
use bytes::{Buf, BytesMut};
use std::fmt::Write as _;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a sender gets to take the node's answers off the connection; one that does not
/// read them is closed (its unanswered messages it sends again).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// What this node tells senders it is, in its `open` answer.
const SOFTWARE: &str = concat!("logmesh,", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Open,
    Syslog,
    Close,
    Other(String),
}

impl Command {
    fn of(name: &[u8]) -> Command {
        match name {
            b"open" => Command::Open,
            b"syslog" => Command::Syslog,
            b"close" => Command::Close,
            other => Command::Other(String::from_utf8_lossy(other).into_owned()),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub txnr: u32,
    pub command: Command,
    pub data: BytesMut,
    /// Data beyond `MAX_MESSAGE_BYTES` was dropped.
    pub truncated: bool,
}

/// A frame's header: its transaction number, command, data length, and the header's length
/// with the byte after DATALEN (SP before data, or the frame's LF when there is none).
#[derive(Debug, PartialEq, Eq)]
struct Header {
    txnr: u32,
    command: Command,
    length: usize,
    size: usize,
}

/// The header at the start of `buffer`, `None` while it is incomplete. As librelp: TXNR and
/// DATALEN are 1 to 9 digits, COMMAND 1 to 32 letters; so a header never exceeds 54 bytes.
fn header(buffer: &[u8]) -> Result<Option<Header>, String> {
    let (mut txnr, mut length) = (0u32, 0usize);
    let (mut field, mut count, mut command_start) = (0, 0, 0);
    for (at, &byte) in buffer.iter().enumerate() {
        match field {
            0 if byte.is_ascii_digit() && count < 9 => {
                txnr = txnr * 10 + u32::from(byte - b'0');
                count += 1;
            }
            0 if byte == b' ' && count > 0 => (field, count, command_start) = (1, 0, at + 1),
            0 => return Err("a transaction number that is not 1 to 9 digits".into()),
            1 if byte.is_ascii_alphabetic() && count < 32 => count += 1,
            1 if byte == b' ' && count > 0 => (field, count) = (2, 0),
            1 => return Err("a command that is not 1 to 32 letters".into()),
            _ if byte.is_ascii_digit() && count < 9 => {
                length = length * 10 + usize::from(byte - b'0');
                count += 1;
            }
            _ if count > 0 && ((length == 0 && byte == b'\n') || (length > 0 && byte == b' ')) => {
                let command = Command::of(&buffer[command_start..at - count - 1]);
                return Ok(Some(Header {
                    txnr,
                    command,
                    length,
                    size: at + 1,
                }));
            }
            _ => return Err("a data length that is not 1 to 9 digits".into()),
        }
    }
    Ok(None)
}

/// Reads frames off a connection's buffer. Data longer than `MAX_MESSAGE_BYTES` is truncated
/// (as librelp's default `oversizeMode="truncate"`) rather than closing the connection, which
/// would make the sender send it again, forever.
#[derive(Default)]
pub(crate) struct FrameReader {
    /// A truncated frame and how many of its data bytes are still to be skipped.
    truncated: Option<(Frame, usize)>,
}

impl FrameReader {
    /// Whether a truncated frame's data is still being skipped.
    fn inside_frame(&self) -> bool {
        self.truncated.is_some()
    }

    /// The next complete frame, removed from `buffer`; `None` until one is complete.
    pub(crate) fn next(&mut self, buffer: &mut BytesMut) -> Result<Option<Frame>, String> {
        if let Some((_, left)) = &mut self.truncated {
            let skip = (*left).min(buffer.len());
            buffer.advance(skip);
            *left -= skip;
            if *left > 0 || buffer.is_empty() {
                return Ok(None);
            }
            if buffer[0] != b'\n' {
                return Err("a frame whose data is not followed by LF (its length lies)".into());
            }
            buffer.advance(1);
            return Ok(self.truncated.take().map(|(frame, _)| frame));
        }
        let Some(Header {
            txnr,
            command,
            length,
            size,
        }) = header(buffer)?
        else {
            return Ok(None);
        };
        if length == 0 {
            buffer.advance(size);
            return Ok(Some(Frame {
                txnr,
                command,
                data: BytesMut::new(),
                truncated: false,
            }));
        }
        if length > MAX_MESSAGE_BYTES {
            if buffer.len() < size + MAX_MESSAGE_BYTES {
                return Ok(None);
            }
            buffer.advance(size);
            let frame = Frame {
                txnr,
                command,
                data: buffer.split_to(MAX_MESSAGE_BYTES),
                truncated: true,
            };
            self.truncated = Some((frame, length - MAX_MESSAGE_BYTES));
            return self.next(buffer);
        }
        if buffer.len() < size + length + 1 {
            return Ok(None);
        }
        if buffer[size + length] != b'\n' {
            return Err("a frame whose data is not followed by LF (its length lies)".into());
        }
        buffer.advance(size);
        let data = buffer.split_to(length);
        buffer.advance(1);
        Ok(Some(Frame {
            txnr,
            command,
            data,
            truncated: false,
        }))
    }
}

/// Appends `rsp` for `txnr` to `answers`.
fn answer(answers: &mut BytesMut, txnr: u32, text: &str) {
    let _ = if text.is_empty() {
        writeln!(answers, "{txnr} rsp 0")
    } else {
        writeln!(answers, "{txnr} rsp {} {text}", text.len())
    };
}

/// The answer to an `open` with these offers (`name=value,value` lines), and whether the
/// session may go on: the sender must offer the `syslog` command and a protocol version.
fn open_answer(offers: &[u8]) -> (String, bool) {
    let offers = String::from_utf8_lossy(offers);
    let mut version = None;
    let mut syslog = false;
    for line in offers.lines() {
        match line.split_once('=') {
            Some(("relp_version", value)) => version = value.trim().parse::<u32>().ok(),
            Some(("commands", values)) => syslog = values.split(',').any(|c| c == "syslog"),
            _ => {}
        }
    }
    match (version, syslog) {
        (None, _) => ("500 no relp_version offered".into(), false),
        (_, false) => ("500 required command not supported by client".into(), false),
        // Version 0 is the only one there is; a newer sender is answered with 0.
        (Some(_), true) => (
            format!("200 OK\nrelp_version=0\nrelp_software={SOFTWARE}\ncommands=syslog"),
            true,
        ),
    }
}

/// What a control frame (anything but `syslog`) leaves of the session.
enum Flow {
    Continue,
    /// The sender closed the session.
    Closed,
    /// The session cannot go on.
    Broken(String),
}

/// Answers `open`, `close` and unknown commands.
fn control(frame: Frame, open: &mut bool, answers: &mut BytesMut) -> Flow {
    match frame.command {
        Command::Open if *open => {
            answer(
                answers,
                frame.txnr,
                "500 protocol error: connection already open",
            );
            Flow::Broken("a second open".into())
        }
        Command::Open => {
            let (text, accepted) = open_answer(&frame.data);
            answer(answers, frame.txnr, &text);
            if !accepted {
                return Flow::Broken(format!("open refused: {text}"));
            }
            *open = true;
            Flow::Continue
        }
        Command::Close => {
            answer(answers, frame.txnr, "");
            Flow::Closed
        }
        Command::Syslog => unreachable!("syslog frames are batched, not controls"),
        Command::Other(name) => {
            answer(
                answers,
                frame.txnr,
                &format!("500 command `{}` not supported", name.escape_debug()),
            );
            Flow::Continue
        }
    }
}

/// Serves one RELP session: `syslog` frames are appended a batch at a time, the next batch
/// read while one is being made durable (the sender's window keeps both full), and each
/// batch answered once durable. A control frame waits for the messages before it, so that
/// answers go out in the order of the frames.
pub(super) async fn serve_connection(
    mut stream: TcpStream,
    context: &Context,
) -> Result<(), String> {
    // Answers are small and the sender waits for them: Nagle's algorithm would hold each for
    // the peer's delayed ACK (40 ms).
    let _ = stream.set_nodelay(true);
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    let mut reader = FrameReader::default();
    let mut open = false;
    let mut stop = context.stop.clone();
    let mut batch: Vec<Frame> = Vec::new();
    let mut batch_bytes = 0;
    let mut appending: Option<Appending<'_>> = None;
    let mut answering: Vec<u32> = Vec::new();
    let mut waiting_control: Option<Frame> = None;
    // No more reading: the sender closed, the node stops, or the framing broke.
    let mut ended = false;
    let mut stopping = false;
    let mut broken: Option<String> = None;
    loop {
        while waiting_control.is_none()
            && broken.is_none()
            && batch.len() < BATCH
            && batch_bytes < BATCH_BYTES
        {
            match reader.next(&mut buffer) {
                Ok(Some(frame)) if frame.command == Command::Syslog && open => {
                    batch_bytes += frame.data.len();
                    batch.push(frame);
                }
                Ok(Some(frame)) if frame.command == Command::Syslog => {
                    context.count("broken", 1);
                    broken = Some("a syslog frame before the session was opened".into());
                }
                Ok(Some(frame)) => waiting_control = Some(frame),
                Ok(None) => break,
                Err(why) => {
                    context.count("broken", 1);
                    broken = Some(why);
                }
            }
        }
        if appending.is_none() && !batch.is_empty() {
            let slices: Vec<&[u8]> = batch.iter().map(|frame| &frame.data[..]).collect();
            let events = context.events(&slices);
            let truncated = batch.iter().filter(|frame| frame.truncated).count();
            if truncated > 0 {
                context.count("truncated", truncated as u64);
            }
            answering = batch.drain(..).map(|frame| frame.txnr).collect();
            batch_bytes = 0;
            appending = Some(Box::pin(append_or_wait(context, events)));
        }
        if appending.is_none() && batch.is_empty() {
            // Every message before it is answered: the control frame's turn.
            if let Some(frame) = waiting_control.take() {
                let mut answers = BytesMut::new();
                let flow = control(frame, &mut open, &mut answers);
                write(&mut stream, &answers).await?;
                match flow {
                    Flow::Continue => continue,
                    Flow::Closed => {
                        let _ = stream.shutdown().await;
                        return Ok(());
                    }
                    Flow::Broken(why) => {
                        context.count("broken", 1);
                        return Err(why);
                    }
                }
            }
            if let Some(why) = broken {
                return Err(why);
            }
            if ended {
                if !stopping && (!buffer.is_empty() || reader.inside_frame()) {
                    // Not answered, so the sender sends it again if it can.
                    context.count("broken", 1);
                    return Err("the connection ended inside a frame".into());
                }
                if stopping {
                    // librelp's hint that the server goes away: the sender reconnects later
                    // and sends again whatever is still unanswered.
                    write(&mut stream, b"0 serverclose 0\n").await?;
                }
                return Ok(());
            }
        }
        let can_read = !ended
            && broken.is_none()
            && waiting_control.is_none()
            && batch.len() < BATCH
            && batch_bytes < BATCH_BYTES;
        if can_read && buffer.capacity() - buffer.len() < READ_CHUNK / 4 {
            buffer.reserve(READ_CHUNK);
        }
        let step = tokio::select! {
            appended = settle(&mut appending), if appending.is_some() => Step::Appended(appended),
            read = stream.read_buf(&mut buffer), if can_read => Step::Read(read),
            // Once the node stops, nothing more is read; what was read is still answered.
            _ = stop.wait_for(|stop| *stop), if !ended => Step::Stop,
        };
        match step {
            Step::Appended(appended) => {
                appending = None;
                // Unanswered, the messages are not lost: the sender sends them again after
                // reconnecting.
                let refused = appended.map_err(|not_queued| {
                    format!("{not_queued}; closed unanswered, so that the sender sends them again")
                })?;
                let mut answers = BytesMut::new();
                for (position, txnr) in answering.drain(..).enumerate() {
                    if refused.contains(&position) {
                        // Larger than the queue can ever take: sending it again would block
                        // the sender's queue for good, so this is the one refusal answered
                        // with an error (rsyslog logs it and goes on); counted.
                        answer(
                            &mut answers,
                            txnr,
                            "500 message larger than the queue can take",
                        );
                    } else {
                        answer(&mut answers, txnr, "200 OK");
                    }
                }
                if !refused.is_empty() {
                    context.count("lost", refused.len() as u64);
                }
                write(&mut stream, &answers).await?;
            }
            Step::Read(Ok(0)) => ended = true,
            Step::Read(Ok(read)) => context.count("bytes", read as u64),
            // Nothing can be answered any more; the sender sends the unanswered again.
            Step::Read(Err(error)) => return Err(error.to_string()),
            Step::Stop => (ended, stopping) = (true, true),
        }
    }
}

async fn write(stream: &mut TcpStream, answers: &[u8]) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(answers)).await {
        Ok(written) => written.map_err(|e| format!("answering: {e}")),
        Err(_) => Err(format!("the sender took no answers for {WRITE_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Result<Vec<(u32, Command, Vec<u8>)>, String> {
        let mut buffer = BytesMut::from(input);
        let mut reader = FrameReader::default();
        let mut found = Vec::new();
        while let Some(frame) = reader.next(&mut buffer)? {
            found.push((frame.txnr, frame.command, frame.data.to_vec()));
        }
        Ok(found)
    }

    #[test]
    fn frames_are_read_as_librelp_writes_them() {
        let input = b"1 open 86 relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog\n2 syslog 5 <14>a\n3 close 0\n";
        let found = frames(input).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].1, Command::Open);
        assert_eq!(found[1], (2, Command::Syslog, b"<14>a".to_vec()));
        assert_eq!(found[2], (3, Command::Close, Vec::new()));
        // Incomplete frames wait for more.
        for cut in 1..input.len() {
            let mut buffer = BytesMut::from(&input[..cut]);
            let mut reader = FrameReader::default();
            while reader.next(&mut buffer).unwrap().is_some() {}
        }
    }

    #[test]
    fn broken_frames_are_refused() {
        for (input, says) in [
            (&b"x open 0\n"[..], "transaction number"),
            (b"1234567890 open 0\n", "transaction number"),
            (b"1 op3n 0\n", "command"),
            (b"1 syslog x\n", "data length"),
            (b"1 syslog 0 \n", "data length"),
            (b"1 syslog 3 abcd\n", "length lies"),
            (b"1 syslog 1234567890 a", "data length"),
        ] {
            let error = frames(input).unwrap_err();
            assert!(error.contains(says), "{input:?}: {error}");
        }
    }

    #[test]
    fn oversized_data_is_truncated_and_the_stream_goes_on() {
        let big = MAX_MESSAGE_BYTES + 10;
        let mut input = format!("7 syslog {big} ").into_bytes();
        input.extend(std::iter::repeat_n(b'x', big));
        input.extend_from_slice(b"\n8 syslog 1 y\n");
        let mut buffer = BytesMut::new();
        let mut reader = FrameReader::default();
        let mut found = Vec::new();
        // Byte by byte: the skipping survives partial reads.
        for chunk in input.chunks(1000) {
            buffer.extend_from_slice(chunk);
            while let Some(frame) = reader.next(&mut buffer).unwrap() {
                found.push(frame);
            }
        }
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].data.len(), MAX_MESSAGE_BYTES);
        assert!(found[0].truncated);
        assert_eq!(&found[1].data[..], b"y");
    }

    #[test]
    fn open_needs_the_syslog_command_and_a_version() {
        let (text, ok) = open_answer(b"relp_version=0\nrelp_software=librelp\ncommands=syslog");
        assert!(ok);
        assert!(text.starts_with("200 OK\nrelp_version=0\n"), "{text}");
        assert!(text.ends_with("commands=syslog"), "{text}");
        let (text, ok) = open_answer(b"relp_version=1\ncommands=syslog");
        assert!(ok && text.contains("relp_version=0"));
        assert!(!open_answer(b"relp_version=0\ncommands=other").1);
        assert!(!open_answer(b"commands=syslog").1);
    }

    #[test]
    fn answers_are_frames() {
        let mut answers = BytesMut::new();
        answer(&mut answers, 2, "200 OK");
        answer(&mut answers, 3, "");
        assert_eq!(&answers[..], b"2 rsp 6 200 OK\n3 rsp 0\n");
    }
}
