//! The scanning core: a [`Matcher`] (literal keyword with memmem, or a regex), [`Backward`],
//! which yields the matching lines of a `Read + Seek` newest first by reading it backwards in
//! large chunks, and [`for_each_match_forward`] and [`match_window_forward`] for streams that
//! can only be read forwards (a gzipped rotated file).
//!
//! Invariants:
//! - Memory is bounded by the chunk size (the scan's own, or up to what the source allows
//!   through [`ChunkSource::largest_chunk`]: a mapped file's chunks grow to 8 MiB) plus the line
//!   limit (plus a window's byte budget for [`match_window_forward`]), never by the number of
//!   lines asked for: a line longer than [`ScanOptions::line_limit`] is cut to its first
//!   `line_limit` bytes (and flagged), whatever its length in the file.
//! - Lines are searched where they lie in the chunk: the matcher runs over the whole chunk and
//!   only the lines around its hits are delimited, so a keyword that never occurs costs one
//!   SIMD pass over the bytes.
//! - Pure blocking I/O over the reader it is given; no HTTP, no runtime.

use memchr::memmem::Finder;
use memchr::{memchr, memrchr};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, mpsc};

/// Bytes read per step when scanning backwards.
pub const DEFAULT_CHUNK_BYTES: usize = 1024 * 1024;
/// Lines longer than this are cut.
pub const DEFAULT_LINE_LIMIT: usize = 64 * 1024;

/// What a line must contain.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// A literal keyword (empty: every line).
    Literal(Box<Finder<'static>>),
    /// A regular expression (also used for case-insensitive keywords), with a literal every
    /// match contains when the pattern has one: lines are then located by that literal and
    /// only they are given to the regex.
    Regex(regex::bytes::Regex, Option<Box<Finder<'static>>>),
}

impl Matcher {
    /// A literal keyword; with `ignore_case`, an escaped case-insensitive regex.
    pub fn keyword(keyword: &str, ignore_case: bool) -> Matcher {
        if ignore_case && !keyword.is_empty() {
            let regex = regex::bytes::RegexBuilder::new(&regex::escape(keyword))
                .case_insensitive(true)
                .build()
                .expect("an escaped literal is a valid regex");
            Matcher::Regex(regex, None)
        } else {
            Matcher::Literal(Box::new(Finder::new(keyword.as_bytes()).into_owned()))
        }
    }

    /// A regular expression in the `regex` crate's syntax; `^` and `$` match at line bounds.
    pub fn regex(pattern: &str, ignore_case: bool) -> Result<Matcher, regex::Error> {
        let regex = regex::bytes::RegexBuilder::new(pattern)
            .case_insensitive(ignore_case)
            .multi_line(true)
            .size_limit(10 * 1024 * 1024)
            .build()?;
        let required = if ignore_case {
            None
        } else {
            required_literal(pattern).map(|literal| Box::new(Finder::new(&literal).into_owned()))
        };
        Ok(Matcher::Regex(regex, required))
    }

    /// Where the first match at or after `from` starts.
    fn find_at(&self, haystack: &[u8], from: usize) -> Option<usize> {
        match self {
            Matcher::Literal(finder) => finder.find(&haystack[from..]).map(|at| at + from),
            // Any position on the line will do: the caller checks the line with the regex.
            Matcher::Regex(_, Some(required)) => {
                required.find(&haystack[from..]).map(|at| at + from)
            }
            Matcher::Regex(regex, None) => regex.find_at(haystack, from).map(|m| m.start()),
        }
    }

    pub fn is_match(&self, line: &[u8]) -> bool {
        match self {
            Matcher::Literal(finder) => finder.find(line).is_some(),
            Matcher::Regex(regex, _) => regex.is_match(line),
        }
    }
}

/// The longest literal (of at least 3 bytes, without a newline) that every match of `pattern`
/// contains: a literal item of the pattern's top-level concatenation, as ripgrep uses inner
/// literals. `None` when there is none or the pattern does not parse.
fn required_literal(pattern: &str) -> Option<Vec<u8>> {
    use regex_syntax::hir::{HirKind, Literal};
    let mut hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    while let HirKind::Capture(capture) = hir.kind() {
        hir = (*capture.sub).clone();
    }
    let items = match hir.kind() {
        HirKind::Concat(items) => items.clone(),
        _ => vec![hir],
    };
    items
        .iter()
        .filter_map(|item| match item.kind() {
            HirKind::Literal(Literal(bytes)) if bytes.len() >= 3 && !bytes.contains(&b'\n') => {
                Some(bytes.to_vec())
            }
            _ => None,
        })
        .max_by_key(Vec::len)
}

#[derive(Debug, Clone, Copy)]
pub struct ScanOptions {
    pub chunk_bytes: usize,
    pub line_limit: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            line_limit: DEFAULT_LINE_LIMIT,
        }
    }
}

/// One matching line, without its newline; `cut` when it was longer than the line limit and
/// `bytes` holds only its beginning; `start` is the offset of its first byte in what was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub bytes: Vec<u8>,
    pub cut: bool,
    pub start: u64,
}

impl Line {
    fn new(bytes: &[u8], limit: usize, start: u64) -> Line {
        Line {
            bytes: bytes[..bytes.len().min(limit)].to_vec(),
            cut: bytes.len() > limit,
            start,
        }
    }
}

/// Where [`Backward`] gets its chunks from: any `Read + Seek`, a [`Prefetch`], or a mapped
/// file (`files::mapped`).
pub trait ChunkSource {
    /// Exactly the `len` bytes at `start`: read into `buffer`, or the source's own bytes.
    fn chunk<'a>(
        &'a mut self,
        start: u64,
        len: usize,
        buffer: &'a mut Vec<u8>,
    ) -> io::Result<&'a [u8]>;

    /// Asked after the last chunk was searched and before any of its lines is given out: an
    /// error when the bytes searched were not the file's (a mapping the file shrank under).
    fn intact(&self) -> io::Result<()> {
        Ok(())
    }

    /// The largest chunk worth asking for, given the scan's own chunk size: a source that
    /// copies keeps to it (its buffers are the scan's memory); one that does not can let the
    /// chunks grow, so a long scan is searched in pieces large enough to split over threads.
    fn largest_chunk(&self, chunk_bytes: usize) -> usize {
        chunk_bytes
    }
}

impl<R: Read + Seek> ChunkSource for R {
    fn chunk<'a>(
        &'a mut self,
        start: u64,
        len: usize,
        buffer: &'a mut Vec<u8>,
    ) -> io::Result<&'a [u8]> {
        buffer.resize(len, 0);
        self.seek(SeekFrom::Start(start))?;
        self.read_exact(buffer)?;
        Ok(buffer)
    }
}

/// A file read backwards chunk by chunk with the next (earlier) chunk read ahead on a helper
/// thread, so that copying from the page cache and searching overlap. Holds at most two
/// chunks; the helper stops when this is dropped.
pub struct Prefetch {
    file: Arc<File>,
    chunk_bytes: usize,
    requests: Option<mpsc::SyncSender<(u64, Vec<u8>)>>,
    results: mpsc::Receiver<(u64, io::Result<Vec<u8>>)>,
    /// The start of the chunk the helper is reading.
    expected: Option<u64>,
    spare: Vec<u8>,
}

impl Prefetch {
    pub fn new(file: File, chunk_bytes: usize) -> Prefetch {
        let file = Arc::new(file);
        let (requests, jobs) = mpsc::sync_channel::<(u64, Vec<u8>)>(1);
        let (done, results) = mpsc::sync_channel(1);
        let reader = file.clone();
        std::thread::spawn(move || {
            for (start, mut buffer) in jobs {
                let result = reader.read_exact_at(&mut buffer, start).map(|()| buffer);
                if done.send((start, result)).is_err() {
                    return;
                }
            }
        });
        Prefetch {
            file,
            chunk_bytes,
            requests: Some(requests),
            results,
            expected: None,
            spare: Vec::new(),
        }
    }
}

impl ChunkSource for Prefetch {
    fn chunk<'a>(
        &'a mut self,
        start: u64,
        len: usize,
        into: &'a mut Vec<u8>,
    ) -> io::Result<&'a [u8]> {
        let ahead = match self.expected.take() {
            Some(expected) => match self.results.recv() {
                Ok((at, result)) if at == expected => Some((at, result?)),
                _ => None,
            },
            None => None,
        };
        match ahead {
            Some((at, buffer)) if at == start && buffer.len() == len => {
                self.spare = std::mem::replace(into, buffer);
            }
            Some((_, buffer)) => {
                self.spare = buffer;
                into.resize(len, 0);
                self.file.read_exact_at(into, start)?;
            }
            None => {
                into.resize(len, 0);
                self.file.read_exact_at(into, start)?;
            }
        }
        let next_len = start.min(self.chunk_bytes as u64) as usize;
        if next_len > 0
            && let Some(requests) = &self.requests
        {
            let mut buffer = std::mem::take(&mut self.spare);
            buffer.resize(next_len, 0);
            let next_start = start - next_len as u64;
            if requests.send((next_start, buffer)).is_ok() {
                self.expected = Some(next_start);
            } else {
                self.requests = None;
            }
        }
        Ok(into)
    }
}

/// The matching lines of `reader`'s first `len` bytes, newest first.
pub struct Backward<R> {
    reader: R,
    matcher: Matcher,
    options: ScanOptions,
    /// Start of the bytes not read yet.
    pos: u64,
    /// The beginning (at most `line_limit` bytes) of the line that starts before `pos` and
    /// ends in bytes already scanned.
    carry: Vec<u8>,
    /// Whether part of the carried line dropped from `carry` matched.
    carry_matched: bool,
    /// Whether the carried line is longer than `carry`.
    carry_cut: bool,
    /// Nothing scanned yet: an empty last line (the file's final newline) is not a line.
    at_end: bool,
    ready: VecDeque<Line>,
    buffer: Vec<u8>,
    /// The size of the next chunk: the scan's chunk size at first, doubling up to what the
    /// source allows.
    next_chunk: usize,
    done: bool,
}

impl<R: ChunkSource> Backward<R> {
    /// Scans `reader` from byte `len` (its length when the scan starts) back to the start.
    pub fn new(reader: R, len: u64, matcher: Matcher, options: ScanOptions) -> Backward<R> {
        Backward {
            reader,
            matcher,
            options,
            pos: len,
            carry: Vec::new(),
            carry_matched: false,
            carry_cut: false,
            at_end: true,
            ready: VecDeque::new(),
            buffer: Vec::new(),
            next_chunk: options.chunk_bytes,
            done: false,
        }
    }

    /// Whether the next line is known without reading more of the file.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Reads the chunk before `pos` and queues its matching lines, newest first.
    fn scan_chunk(&mut self) -> io::Result<()> {
        let size = (self.pos.min(self.next_chunk as u64)) as usize;
        self.next_chunk = self
            .next_chunk
            .saturating_mul(2)
            .min(self.reader.largest_chunk(self.options.chunk_bytes));
        let start = self.pos - size as u64;
        let chunk = self.reader.chunk(start, size, &mut self.buffer)?;
        self.pos = start;
        let limit = self.options.line_limit;
        // This chunk's matching lines, newest first; queued once the source says its bytes
        // were the file's.
        let mut newest_first = Vec::new();

        // The line that continues into the carry: from after the chunk's last newline.
        let last_nl = memrchr(b'\n', chunk);
        let tail_start = last_nl.map_or(0, |at| at + 1);
        let mut joined = Vec::with_capacity(chunk.len() - tail_start + self.carry.len());
        joined.extend_from_slice(&chunk[tail_start..]);
        joined.extend_from_slice(&self.carry);
        let joined_matched = self.carry_matched || self.matcher.is_match(&joined);
        let joined_cut = self.carry_cut || joined.len() > limit;
        joined.truncate(limit);
        let at_end = std::mem::replace(&mut self.at_end, false);
        match last_nl {
            Some(_) => {
                let empty_last_line = at_end && joined.is_empty();
                if joined_matched && !empty_last_line {
                    newest_first.push(Line {
                        bytes: joined,
                        cut: joined_cut,
                        start: start + tail_start as u64,
                    });
                }
                self.carry.clear();
                self.carry_matched = false;
                self.carry_cut = false;
            }
            None => {
                // No newline at all: the whole chunk belongs to the carried line.
                self.carry = joined;
                self.carry_matched = joined_matched;
                self.carry_cut = joined_cut;
            }
        }

        if let Some(last_nl) = last_nl {
            let first_nl = memchr(b'\n', chunk).expect("a last newline is a newline");
            // Whole lines: between the first and the last newline.
            let region_start = first_nl + 1;
            let region = &chunk[..last_nl];
            let found = matching_lines(&self.matcher, region, region_start, start, limit);
            newest_first.extend(found.into_iter().rev());
            // The part before the first newline starts in an earlier chunk.
            let head = &chunk[..first_nl];
            self.carry_matched = self.matcher.is_match(head);
            self.carry_cut = head.len() > limit;
            self.carry = head[..head.len().min(limit)].to_vec();
        }
        self.reader.intact()?;
        self.ready.extend(newest_first);
        if self.pos == 0 {
            // The carried line starts at the beginning of the file: it is the first line.
            if self.carry_matched {
                self.ready.push_back(Line {
                    bytes: std::mem::take(&mut self.carry),
                    cut: self.carry_cut,
                    start: 0,
                });
            }
            self.done = true;
        }
        Ok(())
    }
}

/// Regions at least this large are searched by two threads, each over one half.
const SPLIT_BYTES: usize = 4 * 1024 * 1024;

/// The matching lines of `region` from `from` on, oldest first: `region` is whole lines
/// (without the last one's newline), `from` a line's start, `offset` where `region` starts in
/// the file. A large region is split at a line boundary near its middle and its halves
/// searched at once (the search, not the copying, is what a scan of a mapped file waits for).
fn matching_lines(
    matcher: &Matcher,
    region: &[u8],
    from: usize,
    offset: u64,
    limit: usize,
) -> Vec<Line> {
    let middle = from + (region.len().saturating_sub(from)) / 2;
    let split = (region.len().saturating_sub(from) >= SPLIT_BYTES)
        .then(|| memchr(b'\n', &region[middle..]).map(|at| middle + at + 1))
        .flatten();
    if let Some(split) = split {
        let halves = std::thread::scope(|scope| {
            let later = std::thread::Builder::new()
                .name("file-scan".into())
                .spawn_scoped(scope, || {
                    matching_lines_alone(matcher, region, split, offset, limit)
                })
                .ok()?;
            let mut lines =
                matching_lines_alone(matcher, &region[..split - 1], from, offset, limit);
            match later.join() {
                Ok(later) => lines.extend(later),
                Err(panic) => std::panic::resume_unwind(panic),
            }
            Some(lines)
        });
        // No thread to be had: searched alone.
        if let Some(lines) = halves {
            return lines;
        }
    }
    matching_lines_alone(matcher, region, from, offset, limit)
}

/// [`matching_lines`] on one thread.
fn matching_lines_alone(
    matcher: &Matcher,
    region: &[u8],
    mut from: usize,
    offset: u64,
    limit: usize,
) -> Vec<Line> {
    let mut found = Vec::new();
    while from <= region.len() {
        let Some(hit) = matcher.find_at(region, from) else {
            break;
        };
        let line_start = memrchr(b'\n', &region[from..hit]).map_or(from, |at| from + at + 1);
        let line_end = memchr(b'\n', &region[hit..]).map_or(region.len(), |at| hit + at);
        let line = &region[line_start..line_end];
        // A regex may match across a newline; the line itself must match.
        if matches!(matcher, Matcher::Literal(_)) || matcher.is_match(line) {
            found.push(Line::new(line, limit, offset + line_start as u64));
        }
        if line_end >= region.len() {
            break;
        }
        from = line_end + 1;
    }
    found
}

impl<R: ChunkSource> Iterator for Backward<R> {
    type Item = io::Result<Line>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Some(Ok(line));
            }
            if self.done {
                return None;
            }
            if self.pos == 0 {
                // An empty file.
                self.done = true;
                return None;
            }
            if let Err(error) = self.scan_chunk() {
                self.done = true;
                return Some(Err(error));
            }
        }
    }
}

/// Assembles lines from pieces read forwards, keeping at most `line_limit` bytes of each.
#[derive(Debug)]
pub struct Assembler {
    current: Vec<u8>,
    matched: bool,
    cut: bool,
    limit: usize,
    /// Bytes pushed so far, and where the current line started.
    position: u64,
    line_start: u64,
}

impl Assembler {
    pub fn new(limit: usize) -> Assembler {
        Assembler {
            current: Vec::new(),
            matched: false,
            cut: false,
            limit,
            position: 0,
            line_start: 0,
        }
    }

    /// Adds the bytes of `block` to the lines; calls `done` with every completed line that
    /// matches.
    pub fn push(&mut self, block: &[u8], matcher: &Matcher, done: &mut dyn FnMut(Line)) {
        let mut rest = block;
        while !rest.is_empty() {
            let (piece, ended) = match memchr(b'\n', rest) {
                Some(at) => (&rest[..at], Some(at + 1)),
                None => (rest, None),
            };
            if self.current.len() + piece.len() > self.limit || self.cut {
                // Only a long line gets here: match its pieces with the kept beginning so that
                // a keyword across the boundary is still found.
                self.current.extend_from_slice(piece);
                self.matched = self.matched || matcher.is_match(&self.current);
                self.cut = true;
                self.current.truncate(self.limit);
            } else {
                self.current.extend_from_slice(piece);
            }
            match ended {
                Some(advance) => {
                    self.position += advance as u64;
                    if let Some(line) = self.take(matcher) {
                        done(line);
                    }
                    rest = &rest[advance..];
                }
                None => {
                    self.position += rest.len() as u64;
                    rest = &[];
                }
            }
        }
    }

    /// The line assembled so far, if it matches; starts a new one.
    pub fn take(&mut self, matcher: &Matcher) -> Option<Line> {
        let matched = self.matched || matcher.is_match(&self.current);
        let line = Line {
            bytes: std::mem::take(&mut self.current),
            cut: self.cut,
            start: self.line_start,
        };
        self.line_start = self.position;
        self.matched = false;
        self.cut = false;
        matched.then_some(line)
    }

    /// Whether part of a line is waiting for its newline.
    pub fn is_pending(&self) -> bool {
        !self.current.is_empty() || self.cut
    }

    /// Forgets the line in progress; what is pushed next starts a line at `position`.
    pub fn restart_at(&mut self, position: u64) {
        self.current.clear();
        self.matched = false;
        self.cut = false;
        self.position = position;
        self.line_start = position;
    }
}

/// Block size of forward reads.
const FORWARD_BLOCK: usize = 256 * 1024;

/// Calls `each` with every matching line of a forward-only stream, in order, with its index
/// among the matches; stops early when `each` returns false. Answers the number of matches
/// seen. Memory: one block and one line.
pub fn for_each_match_forward(
    mut reader: impl Read,
    matcher: &Matcher,
    line_limit: usize,
    each: &mut dyn FnMut(u64, Line) -> bool,
) -> io::Result<u64> {
    let mut block = vec![0u8; FORWARD_BLOCK];
    let mut lines = Assembler::new(line_limit);
    let mut index = 0u64;
    let mut going = true;
    loop {
        let read = match reader.read(&mut block) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        lines.push(&block[..read], matcher, &mut |line| {
            if going {
                going = each(index, line);
            }
            index += 1;
        });
        if !going {
            return Ok(index);
        }
    }
    if lines.is_pending()
        && let Some(line) = lines.take(matcher)
        && going
    {
        each(index, line);
        index += 1;
    }
    Ok(index)
}

/// What a kept [`Line`] costs besides its bytes, for window budgets.
const LINE_OVERHEAD: usize = std::mem::size_of::<Line>();

/// The matches of a forward-only stream with an index in `from..until`, as many of the last
/// of them as fit in `budget` bytes (at least one), oldest first, with the index of the first
/// one kept. A caller wanting the newest matches first calls it again with `until` set to that
/// index: memory stays within the budget whatever the number and length of the lines.
pub fn match_window_forward(
    reader: impl Read,
    matcher: &Matcher,
    line_limit: usize,
    from: u64,
    until: u64,
    budget: usize,
) -> io::Result<(Vec<Line>, u64)> {
    let mut kept: VecDeque<Line> = VecDeque::new();
    let mut bytes = 0usize;
    let mut first = until;
    for_each_match_forward(reader, matcher, line_limit, &mut |index, line| {
        if index >= until {
            return false;
        }
        if index >= from {
            bytes += line.bytes.len() + LINE_OVERHEAD;
            kept.push_back(line);
            first = first.min(index);
            while bytes > budget && kept.len() > 1 {
                let dropped = kept.pop_front().expect("more than one line is kept");
                bytes -= dropped.bytes.len() + LINE_OVERHEAD;
                first += 1;
            }
        }
        true
    })?;
    if kept.is_empty() {
        first = until;
    }
    Ok((kept.into(), first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn backward(text: &[u8], matcher: Matcher, chunk: usize, limit: usize) -> Vec<Vec<u8>> {
        let options = ScanOptions {
            chunk_bytes: chunk,
            line_limit: limit,
        };
        Backward::new(Cursor::new(text), text.len() as u64, matcher, options)
            .map(|line| line.unwrap().bytes)
            .collect()
    }

    /// Every match of a forward read, newest first (as [`Backward`] yields them).
    fn forward(text: &[u8], matcher: Matcher, limit: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for_each_match_forward(Cursor::new(text), &matcher, limit, &mut |_, line| {
            got.push(line.bytes);
            true
        })
        .unwrap();
        got.reverse();
        got
    }

    fn lines(text: &[u8], keyword: &str) -> Vec<Vec<u8>> {
        let mut expected: Vec<Vec<u8>> = text
            .strip_suffix(b"\n")
            .unwrap_or(text)
            .split(|b| *b == b'\n')
            .filter(|line| !text.is_empty() && Matcher::keyword(keyword, false).is_match(line))
            .map(<[u8]>::to_vec)
            .collect();
        expected.reverse();
        expected
    }

    #[test]
    fn every_chunk_size_yields_the_same_lines_newest_first() {
        let texts: [&[u8]; 7] = [
            b"",
            b"\n",
            b"\n\n",
            b"one",
            b"alpha\nbeta\n\ngamma alpha\nalphabet\n",
            b"\nalpha\nx\nalpha",
            b"a\nalpha alpha\nb\n\n\nalp\nha\nalpha\n",
        ];
        for text in texts {
            for keyword in ["", "alpha", "a", "zzz"] {
                let expected = lines(text, keyword);
                for chunk in 1..=text.len().max(1) + 1 {
                    let got = backward(text, Matcher::keyword(keyword, false), chunk, 1000);
                    assert_eq!(got, expected, "{text:?} {keyword:?} chunk {chunk}");
                }
                let mut oldest_first = expected.clone();
                oldest_first.reverse();
                let mut got = forward(text, Matcher::keyword(keyword, false), 1000);
                got.reverse();
                assert_eq!(got, oldest_first, "forward {text:?} {keyword:?}");
            }
        }
    }

    #[test]
    fn long_lines_are_cut_to_their_beginning_and_still_match_anywhere() {
        let mut text = b"short key\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 100));
        text.extend(b"key\nlast\n");
        for chunk in [3, 7, 16, 64, 1000] {
            let got: Vec<Line> = Backward::new(
                Cursor::new(&text),
                text.len() as u64,
                Matcher::keyword("key", false),
                ScanOptions {
                    chunk_bytes: chunk,
                    line_limit: 10,
                },
            )
            .map(Result::unwrap)
            .collect();
            assert_eq!(
                got,
                vec![
                    Line {
                        bytes: b"xxxxxxxxxx".to_vec(),
                        cut: true,
                        start: 10,
                    },
                    Line {
                        bytes: b"short key".to_vec(),
                        cut: false,
                        start: 0,
                    },
                ],
                "chunk {chunk}"
            );
        }
        let (got, first) = match_window_forward(
            Cursor::new(&text),
            &Matcher::keyword("key", false),
            10,
            0,
            u64::MAX,
            1 << 20,
        )
        .unwrap();
        assert_eq!(first, 0);
        assert_eq!(got[1].bytes, b"xxxxxxxxxx");
        assert!(got[1].cut);
        assert_eq!(got[1].start, 10);
    }

    #[test]
    fn regexes_and_ignore_case_match_within_a_line_only() {
        let text = b"Error one\nfoo\nbar\nan ERROR two\n";
        assert_eq!(
            backward(text, Matcher::keyword("error", true), 5, 100),
            vec![b"an ERROR two".to_vec(), b"Error one".to_vec()]
        );
        let regex = Matcher::regex(r"foo\s+bar", false).unwrap();
        assert!(backward(text, regex, 1000, 100).is_empty());
        let regex = Matcher::regex(r"^(foo|bar)$", false).unwrap();
        assert_eq!(
            backward(text, regex, 7, 100),
            vec![b"bar".to_vec(), b"foo".to_vec()]
        );
        assert_eq!(
            required_literal(r"user=u\d+ path=/v2/"),
            Some(b" path=/v2/".to_vec())
        );
        assert_eq!(required_literal(r"(a|bcd)x"), None);
        assert_eq!(required_literal(r"(?i)abcd"), None);
        let text = b"user=u1 path=/v2/a\nuser=x path=/v2/b\npath=/v2/ user=u3 path=/v2/c\n";
        assert_eq!(
            backward(
                text,
                Matcher::regex(r"user=u\d+ path=/v2/", false).unwrap(),
                9,
                100
            ),
            vec![
                b"path=/v2/ user=u3 path=/v2/c".to_vec(),
                b"user=u1 path=/v2/a".to_vec()
            ]
        );
    }

    #[test]
    fn prefetching_reads_the_same_lines() {
        let mut file = tempfile::tempfile().unwrap();
        let text: String = (0..5000).map(|i| format!("line {i} {}\n", i % 7)).collect();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        let expected = backward(text.as_bytes(), Matcher::keyword(" 3", false), 1000, 100);
        for chunk in [100, 1000, 4096, 1 << 20] {
            let options = ScanOptions {
                chunk_bytes: chunk,
                line_limit: 100,
            };
            let source = Prefetch::new(file.try_clone().unwrap(), chunk);
            let got: Vec<Vec<u8>> = Backward::new(
                source,
                text.len() as u64,
                Matcher::keyword(" 3", false),
                options,
            )
            .map(|line| line.unwrap().bytes)
            .collect();
            assert_eq!(got, expected, "chunk {chunk}");
        }
    }

    #[test]
    fn a_forward_window_keeps_the_last_matches_that_fit_its_budget() {
        let text = b"k1\nx\nk2\nk3\nk4 long\n";
        let window = |from, until, budget| {
            let (lines, first) = match_window_forward(
                Cursor::new(text),
                &Matcher::keyword("k", false),
                100,
                from,
                until,
                budget,
            )
            .unwrap();
            let lines: Vec<Vec<u8>> = lines.into_iter().map(|l| l.bytes).collect();
            (lines, first)
        };
        assert_eq!(
            window(0, 3, 1 << 20),
            (vec![b"k1".to_vec(), b"k2".to_vec(), b"k3".to_vec()], 0)
        );
        let two = 2 * (2 + LINE_OVERHEAD);
        assert_eq!(window(0, 3, two), (vec![b"k2".to_vec(), b"k3".to_vec()], 1));
        assert_eq!(window(2, u64::MAX, 1), (vec![b"k4 long".to_vec()], 3));
        assert_eq!(window(0, 0, 100), (vec![], 0));
        let starts: Vec<u64> = {
            let mut starts = Vec::new();
            for_each_match_forward(
                Cursor::new(text),
                &Matcher::keyword("k", false),
                100,
                &mut |_, line| {
                    starts.push(line.start);
                    true
                },
            )
            .unwrap();
            starts
        };
        assert_eq!(starts, vec![0, 5, 8, 11]);
    }

    #[test]
    fn backward_lines_know_where_they_start() {
        let text = b"a k\nbb\nccc k\nk";
        for chunk in [2, 3, 5, 100] {
            let starts: Vec<u64> = Backward::new(
                Cursor::new(text),
                text.len() as u64,
                Matcher::keyword("k", false),
                ScanOptions {
                    chunk_bytes: chunk,
                    line_limit: 100,
                },
            )
            .map(|line| line.unwrap().start)
            .collect();
            assert_eq!(starts, vec![13, 7, 0], "chunk {chunk}");
        }
    }
}
