//! Files on hosts (the Log Agent): which files a node may serve ([`LogRoots`]), the last `n`
//! matching lines of a file and its rotated siblings ([`tail`], over the scanning core in
//! [`scan`]), following a file as it grows, rotates and is truncated, and the listing of what
//! a node serves ([`LogRoots::list`]).
//!
//! Invariants:
//! - Only files under a configured log root are opened: a name is resolved against the roots,
//!   canonicalized (symlinks followed) and refused unless the result lies inside a root.
//! - Everything here is blocking file I/O: callers run it on the blocking pool, never on a
//!   runtime worker, and receive lines through a [`Sink`] whose back-pressure paces the scan.
//! - Memory is bounded by the chunk size plus `n` times the line limit (the latter only for
//!   ascending order and gzipped siblings, which must be read forwards).
//! - Knows nothing of HTTP; `http/files.rs` maps [`FilesError`] to statuses.

mod mapped;
pub mod scan;

use flate2::read::MultiGzDecoder;
use mapped::Mapped;
use scan::{Assembler, Backward, ChunkSource, Line, Matcher, Prefetch, ScanOptions};
use serde::Serialize;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What ends a stream early when reading fails after lines were sent.
pub const ERROR_LINE_PREFIX: &str = "logmesh-error: ";
/// Appended to a line cut at the line limit.
pub const CUT_MARKER: &str = " [logmesh: line cut]";
/// How often a followed file is checked for new lines, rotation and truncation.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Files listed at most per root, and directory depth walked.
const LIST_MAX_FILES: usize = 10_000;
const LIST_MAX_DEPTH: usize = 8;

/// The longest `filename` accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_FILENAME_BYTES: usize = 4096;

/// The longest part of a `filename` between slashes (Linux's `NAME_MAX`).
pub const MAX_NAME_PART_BYTES: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The name itself is malformed (too long, a component too long).
    #[error("{0}")]
    BadName(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Io(String),
}

/// The directories a node serves files from, canonicalized.
#[derive(Debug, Clone)]
pub struct LogRoots {
    roots: Vec<Root>,
}

#[derive(Debug, Clone)]
struct Root {
    /// The directory's own name: `name/file` addresses a file in this root.
    name: String,
    path: PathBuf,
}

impl LogRoots {
    /// The given directories, which must exist.
    pub fn new(dirs: &[PathBuf]) -> io::Result<LogRoots> {
        let mut roots = Vec::new();
        for dir in dirs {
            let path = fs::canonicalize(dir).map_err(|e| {
                io::Error::new(e.kind(), format!("log root {}: {e}", dir.display()))
            })?;
            if !path.is_dir() {
                return Err(io::Error::other(format!(
                    "log root {} is not a directory",
                    dir.display()
                )));
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "/".to_owned());
            roots.push(Root { name, path });
        }
        Ok(LogRoots { roots })
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.roots.iter().map(|root| root.path.clone()).collect()
    }

    /// The file `filename` names: relative to the first root that holds it, or `name/rest`
    /// with `name` a root directory's own name. Anything that would leave the roots is
    /// [`FilesError::Forbidden`].
    pub fn resolve(&self, filename: &str) -> Result<PathBuf, FilesError> {
        let forbidden = |why: &str| {
            FilesError::Forbidden(format!(
                "`filename` {}: {why}; names are relative to a log root",
                filename.escape_debug()
            ))
        };
        if filename.is_empty() {
            return Err(forbidden("is empty"));
        }
        if filename.contains('\0') {
            return Err(forbidden("contains a NUL byte"));
        }
        if filename.len() > MAX_FILENAME_BYTES {
            return Err(FilesError::BadName(format!(
                "`filename` is {} bytes; at most {MAX_FILENAME_BYTES} are allowed",
                filename.len()
            )));
        }
        let relative = Path::new(filename);
        if let Some(long) = relative
            .components()
            .find(|part| part.as_os_str().len() > MAX_NAME_PART_BYTES)
        {
            return Err(FilesError::BadName(format!(
                "`filename` has a part of {} bytes; at most {MAX_NAME_PART_BYTES} are allowed",
                long.as_os_str().len()
            )));
        }
        if relative.is_absolute() {
            return Err(forbidden("is an absolute path"));
        }
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(forbidden("contains `..`"));
        }
        let mut candidates: Vec<PathBuf> =
            self.roots.iter().map(|r| r.path.join(relative)).collect();
        let mut parts = relative.components();
        if let Some(Component::Normal(first)) = parts.next() {
            let rest = parts.as_path();
            for root in &self.roots {
                if first.to_string_lossy() == root.name && !rest.as_os_str().is_empty() {
                    candidates.push(root.path.join(rest));
                }
            }
        }
        for candidate in candidates {
            match fs::canonicalize(&candidate) {
                Ok(real) => {
                    if !self.roots.iter().any(|root| real.starts_with(&root.path)) {
                        return Err(forbidden("leads outside the log roots"));
                    }
                    let meta = fs::metadata(&real)
                        .map_err(|e| FilesError::Io(format!("{filename}: {e}")))?;
                    if !meta.is_file() {
                        return Err(FilesError::Forbidden(format!(
                            "`{}` is not a regular file ({}); only regular files are served",
                            filename.escape_debug(),
                            kind_of(&meta.file_type())
                        )));
                    }
                    return Ok(real);
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) if error.raw_os_error() == Some(libc::ENAMETOOLONG) => {
                    return Err(FilesError::BadName(format!(
                        "`filename` has a part longer than the file system allows: {error}"
                    )));
                }
                // A file used as a directory (`app.log/x`): not here, maybe in the next root.
                Err(error) if error.raw_os_error() == Some(libc::ENOTDIR) => continue,
                Err(error) if matches!(error.raw_os_error(), Some(libc::ELOOP | libc::EACCES)) => {
                    return Err(forbidden(&format!("cannot be resolved: {error}")));
                }
                Err(error) => return Err(FilesError::Io(format!("{filename}: {error}"))),
            }
        }
        Err(FilesError::NotFound(format!(
            "no file `{}` under the log roots (GET /logs/files lists them)",
            filename.escape_debug()
        )))
    }

    /// Every file under the roots, with its rotated siblings grouped under it.
    pub fn list(&self) -> Vec<FileInfo> {
        let mut files = Vec::new();
        for root in &self.roots {
            let mut found = Vec::new();
            walk(&root.path, &root.path, 0, &mut found);
            found.sort();
            let names: std::collections::BTreeSet<&PathBuf> = found.iter().collect();
            for relative in &found {
                if rotation_of(relative).is_some_and(|(base, _)| names.contains(&base)) {
                    continue;
                }
                let path = root.path.join(relative);
                let Some(info) = stat(&path, relative) else {
                    continue;
                };
                let rotated = siblings(&path)
                    .iter()
                    .filter_map(|(sibling, _)| {
                        let name = relative.with_file_name(sibling.file_name()?);
                        stat(sibling, &name)
                    })
                    .collect();
                files.push(FileInfo {
                    root: root.name.clone(),
                    rotated,
                    ..info
                });
            }
        }
        files
    }
}

fn walk(root: &Path, dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if found.len() >= LIST_MAX_FILES {
            return;
        }
        let path = entry.path();
        // Symlinks are listed only when they stay inside the root.
        let Ok(real) = fs::canonicalize(&path) else {
            continue;
        };
        if !real.starts_with(root) {
            continue;
        }
        if real.is_dir() {
            if depth < LIST_MAX_DEPTH && !entry.file_type().is_ok_and(|t| t.is_symlink()) {
                walk(root, &path, depth + 1, found);
            }
        } else if real.is_file()
            && let Ok(relative) = path.strip_prefix(root)
        {
            found.push(relative.to_owned());
        }
    }
}

/// `app.log.3` or `app.log.3.gz` → (`app.log`, 3).
fn rotation_of(path: &Path) -> Option<(PathBuf, u32)> {
    let name = path.file_name()?.to_str()?;
    let name = name.strip_suffix(".gz").unwrap_or(name);
    let (base, number) = name.rsplit_once('.')?;
    let number: u32 = number.parse().ok()?;
    if base.is_empty() {
        return None;
    }
    Some((path.with_file_name(base), number))
}

fn stat(path: &Path, name: &Path) -> Option<FileInfo> {
    let meta = fs::metadata(path).ok()?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .and_then(|d| time::OffsetDateTime::from_unix_timestamp_nanos(d.as_nanos() as i128).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    Some(FileInfo {
        name: name.to_string_lossy().into_owned(),
        root: String::new(),
        size: meta.len(),
        modified,
        rotated: Vec::new(),
    })
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileInfo {
    /// The name to pass as `filename` (relative to its root).
    pub name: String,
    /// The root directory's own name; empty for rotated siblings.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub root: String,
    pub size: u64,
    /// RFC 3339.
    pub modified: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rotated: Vec<FileInfo>,
}

/// The rotated siblings of `path` (`path.1`, `path.2.gz`, …), newest (lowest number) first;
/// only regular files count (no symlinks, FIFOs or devices), so siblings stay inside the root
/// `path` is in.
pub fn siblings(path: &Path) -> Vec<(PathBuf, bool)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, PathBuf, bool)> = entries
        .flatten()
        .filter_map(|entry| {
            // A symlinked sibling could lead out of the root, and a FIFO or device would
            // block or never end; rotation makes regular files only.
            if !entry.file_type().ok()?.is_file() {
                return None;
            }
            let file_name = entry.file_name().into_string().ok()?;
            let rest = file_name.strip_prefix(name)?.strip_prefix('.')?;
            let (number, gz) = match rest.strip_suffix(".gz") {
                Some(number) => (number, true),
                None => (rest, false),
            };
            let number: u32 = number.parse().ok()?;
            Some((number, entry.path(), gz))
        })
        .collect();
    found.sort_by_key(|(number, _, _)| *number);
    found.into_iter().map(|(_, path, gz)| (path, gz)).collect()
}

/// Where a tail sends its output.
pub trait Sink {
    /// Sends a batch of rendered lines; false when the client has gone.
    fn send(&mut self, bytes: Vec<u8>) -> bool;
    /// Whether the client has gone.
    fn is_closed(&self) -> bool;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newest first.
    Desc,
    /// Oldest of the `n` first, like `tail`.
    Asc,
}

#[derive(Debug, Clone)]
pub struct TailRequest {
    /// A file [`LogRoots::resolve`] returned.
    pub path: PathBuf,
    /// The canonical log roots ([`LogRoots::paths`]): every file opened must lie under one.
    pub roots: Vec<PathBuf>,
    pub matcher: Matcher,
    pub n: usize,
    pub order: Order,
    pub follow: bool,
    pub scan: ScanOptions,
}

/// Appends `line` as output: lossy UTF-8, the cut marker, a newline.
pub fn render(line: &Line, out: &mut Vec<u8>) {
    match String::from_utf8_lossy(&line.bytes) {
        std::borrow::Cow::Borrowed(text) => out.extend_from_slice(text.as_bytes()),
        std::borrow::Cow::Owned(text) => out.extend_from_slice(text.as_bytes()),
    }
    if line.cut {
        out.extend_from_slice(CUT_MARKER.as_bytes());
    }
    out.push(b'\n');
}

/// Output is handed to the sink in batches of about this size.
const BATCH_BYTES: usize = 64 * 1024;
/// Bytes of lines a gzipped sibling read newest first holds at once (see
/// [`scan::match_window_forward`]).
const GZ_WINDOW_BYTES: usize = 4 * 1024 * 1024;
/// Windows (each a decompression of the file from its start) a gzipped sibling may take newest
/// first: 256 MiB of matching lines. Past that the stream ends with an error line saying to
/// read oldest first, which takes one pass.
const GZ_MAX_WINDOWS: usize = 64;
/// Bytes a follow step reads at most.
const FOLLOW_BLOCK: usize = 256 * 1024;

/// Opens `path` for reading only if it is a regular file inside one of `roots`, checked on the
/// opened descriptor itself: the last component is never followed as a symlink, the open never
/// blocks (a FIFO would block `open` until a writer came), and the descriptor's real path must
/// lie under a root, so a name swapped for a link between a check and the open is refused.
pub fn open_confined(path: &Path, roots: &[PathBuf]) -> Result<File, FilesError> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = display_name(path);
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            Some(libc::ELOOP) => FilesError::Forbidden(format!(
                "`{name}` is a symbolic link; only files inside the log roots are served"
            )),
            Some(libc::ENOENT) => FilesError::NotFound(format!("`{name}` does not exist")),
            Some(libc::ENAMETOOLONG) => FilesError::Forbidden(format!("`{name}`: name too long")),
            _ => FilesError::Io(format!("{name}: {error}")),
        })?;
    let meta = file
        .metadata()
        .map_err(|error| FilesError::Io(format!("{name}: {error}")))?;
    if !meta.file_type().is_file() {
        return Err(FilesError::Forbidden(format!(
            "`{name}` is not a regular file ({}); only regular files are served",
            kind_of(&meta.file_type())
        )));
    }
    let real = fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&file)
    ))
    .map_err(|error| FilesError::Io(format!("{name}: cannot check where it lies: {error}")))?;
    if !roots.iter().any(|root| real.starts_with(root)) {
        return Err(FilesError::Forbidden(format!(
            "`{name}` leads outside the log roots"
        )));
    }
    Ok(file)
}

fn kind_of(file_type: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// Hands rendered lines to the sink in batches of about [`BATCH_BYTES`].
struct Output<'a> {
    sink: &'a mut dyn Sink,
    out: Vec<u8>,
    /// False once the client has gone.
    open: bool,
}

impl Output<'_> {
    fn line(&mut self, line: &Line) {
        render(line, &mut self.out);
        if self.out.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.open && !self.out.is_empty() {
            self.open = self.sink.send(std::mem::take(&mut self.out));
        }
        self.out.clear();
    }
}

/// One file a tail reads: the followed file or a rotated sibling.
struct Source {
    path: PathBuf,
    file: File,
    gz: bool,
}

impl Source {
    fn io(&self, error: io::Error) -> FilesError {
        FilesError::Io(format!("{}: {error}", display_name(&self.path)))
    }

    fn len(&self) -> Result<u64, FilesError> {
        Ok(self.file.metadata().map_err(|e| self.io(e))?.len())
    }

    /// The first `len` bytes of a plain file, for reading backwards: mapped when it can be
    /// (searched where they lie in the page cache), else — every guard slot taken, a file
    /// system that cannot map, the process out of mappings — copied ahead by a helper thread.
    fn chunks(&self, len: u64, chunk_bytes: usize) -> Result<Chunks, FilesError> {
        match Mapped::new(&self.file, len) {
            Ok(Some(mapped)) => return Ok(Chunks::Mapped(mapped)),
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(path = %self.path.display(), %error, "Cannot map the file; reading it instead.");
            }
        }
        let ahead = self.file.try_clone().map_err(|e| self.io(e))?;
        Ok(Chunks::Copied(Prefetch::new(ahead, chunk_bytes)))
    }

    /// A fresh forward reader of the (decompressed) content.
    fn forward(&self) -> Result<Box<dyn Read + '_>, FilesError> {
        let reader = ReadAt {
            file: &self.file,
            at: 0,
        };
        Ok(if self.gz {
            Box::new(MultiGzDecoder::new(BufReader::new(reader)))
        } else {
            Box::new(reader)
        })
    }
}

/// How [`Source::chunks`] reads a plain file.
enum Chunks {
    Mapped(Mapped),
    Copied(Prefetch),
}

impl ChunkSource for Chunks {
    fn chunk<'a>(
        &'a mut self,
        start: u64,
        len: usize,
        buffer: &'a mut Vec<u8>,
    ) -> io::Result<&'a [u8]> {
        match self {
            Chunks::Mapped(mapped) => mapped.chunk(start, len, buffer),
            Chunks::Copied(prefetch) => prefetch.chunk(start, len, buffer),
        }
    }

    fn intact(&self) -> io::Result<()> {
        match self {
            Chunks::Mapped(mapped) => mapped.intact(),
            Chunks::Copied(prefetch) => prefetch.intact(),
        }
    }

    fn largest_chunk(&self, chunk_bytes: usize) -> usize {
        match self {
            Chunks::Mapped(mapped) => mapped.largest_chunk(chunk_bytes),
            Chunks::Copied(prefetch) => prefetch.largest_chunk(chunk_bytes),
        }
    }
}

/// Reads a file from an offset without moving a shared cursor.
struct ReadAt<'a> {
    file: &'a File,
    at: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let read = self.file.read_at(buf, self.at)?;
        self.at += read as u64;
        Ok(read)
    }
}

/// Streams the last `n` matching lines of the file and its rotated siblings to the sink and,
/// with `follow`, answers the [`Follower`] that goes on from the end. Blocking. An error
/// returned after lines were sent must be reported to the client as the error line.
///
/// Memory is bounded independently of `n` and of line lengths: newest first, plain files are
/// read backwards and gzipped ones in windows of [`GZ_WINDOW_BYTES`]; oldest first, the matches
/// are first counted backwards to find where the `n`th from the end starts, then read forwards
/// from there.
pub fn tail(request: &TailRequest, sink: &mut dyn Sink) -> Result<Option<Follower>, FilesError> {
    let main = Source {
        file: open_confined(&request.path, &request.roots)?,
        path: request.path.clone(),
        gz: false,
    };
    let meta = main.file.metadata().map_err(|e| main.io(e))?;
    let (len, dev, ino) = (meta.len(), meta.dev(), meta.ino());
    let mut output = Output {
        sink,
        out: Vec::new(),
        open: true,
    };
    let mut sources = vec![main];
    let mut remaining = request.n;
    let mut next_sibling = siblings(&request.path).into_iter();
    // Newest first: the file, then its siblings while `n` is not met.
    let mut located: Vec<(usize, Start)> = Vec::new();
    loop {
        let index = sources.len() - 1;
        let source = &sources[index];
        let taken = match request.order {
            Order::Desc => emit_newest_first(request, source, remaining, &mut output)?,
            Order::Asc => {
                let (taken, start) = locate(request, source, remaining)?;
                if taken > 0 {
                    located.push((index, start));
                }
                taken
            }
        };
        remaining -= taken;
        output.flush();
        if remaining == 0 || !output.open {
            break;
        }
        let Some((path, gz)) = next_sibling.next() else {
            break;
        };
        let file = match open_confined(&path, &request.roots) {
            Ok(file) => file,
            // Rotated away (or compressed) between the listing and now: the next sibling
            // holds it.
            Err(FilesError::NotFound(_)) => continue,
            Err(error) => return Err(error),
        };
        if request.order == Order::Desc {
            // Newest first never comes back to a sibling: keep only the followed file open.
            sources.truncate(1);
        }
        sources.push(Source { path, file, gz });
    }
    // Oldest first: from the oldest file that holds one of them.
    for (index, start) in located.into_iter().rev() {
        if !output.open {
            break;
        }
        emit_forward_from(request, &sources[index], start, &mut output)?;
        output.flush();
    }
    if !output.open || !request.follow {
        return Ok(None);
    }
    let main = sources.swap_remove(0);
    Ok(Some(Follower {
        path: request.path.clone(),
        roots: request.roots.clone(),
        matcher: request.matcher.clone(),
        file: main.file,
        dev,
        ino,
        offset: len,
        lines: Assembler::new(request.scan.line_limit),
        block: Vec::new(),
    }))
}

/// Where the oldest of the matches a source contributes starts.
enum Start {
    /// A plain file: that line's byte offset (up to the length it had).
    Offset { from: u64, to: u64 },
    /// A gzipped file: the matches to skip before it.
    Skip(u64),
}

/// Emits up to `n` of the source's last matches, newest first; answers how many.
fn emit_newest_first(
    request: &TailRequest,
    source: &Source,
    n: usize,
    output: &mut Output,
) -> Result<usize, FilesError> {
    if n == 0 {
        return Ok(0);
    }
    let matcher = &request.matcher;
    let limit = request.scan.line_limit;
    if !source.gz {
        let len = source.len()?;
        let reader = source.chunks(len, request.scan.chunk_bytes)?;
        let mut lines = Backward::new(reader, len, matcher.clone(), request.scan);
        let mut taken = 0;
        while taken < n && output.open {
            let Some(line) = lines.next() else {
                break;
            };
            output.line(&line.map_err(|e| source.io(e))?);
            taken += 1;
            if !lines.has_ready() {
                output.flush();
            }
        }
        return Ok(taken);
    }
    let total = scan::for_each_match_forward(source.forward()?, matcher, limit, &mut |_, _| true)
        .map_err(|e| source.io(e))?;
    let wanted = total.min(n as u64);
    let floor = total - wanted;
    let mut until = total;
    let mut windows = 0;
    while until > floor && output.open {
        windows += 1;
        if windows > GZ_MAX_WINDOWS {
            return Err(FilesError::Io(format!(
                "{}: the lines asked for are too many to read newest first from a gzipped \
                 file (over {} MiB); ask for fewer (`n`) or oldest first (`order=asc`)",
                display_name(&source.path),
                GZ_MAX_WINDOWS * GZ_WINDOW_BYTES / (1024 * 1024)
            )));
        }
        let (lines, first) = scan::match_window_forward(
            source.forward()?,
            matcher,
            limit,
            floor,
            until,
            GZ_WINDOW_BYTES,
        )
        .map_err(|e| source.io(e))?;
        if lines.is_empty() {
            break;
        }
        for line in lines.iter().rev() {
            output.line(line);
        }
        until = first;
    }
    Ok(wanted as usize)
}

/// Counts up to `n` of the source's last matches; answers how many and where the oldest of
/// them starts.
fn locate(request: &TailRequest, source: &Source, n: usize) -> Result<(usize, Start), FilesError> {
    let matcher = &request.matcher;
    if source.gz {
        let total = scan::for_each_match_forward(
            source.forward()?,
            matcher,
            request.scan.line_limit,
            &mut |_, _| true,
        )
        .map_err(|e| source.io(e))?;
        let taken = total.min(n as u64);
        return Ok((taken as usize, Start::Skip(total - taken)));
    }
    let len = source.len()?;
    let reader = source.chunks(len, request.scan.chunk_bytes)?;
    let mut taken = 0;
    let mut from = len;
    for line in Backward::new(reader, len, matcher.clone(), request.scan).take(n) {
        from = line.map_err(|e| source.io(e))?.start;
        taken += 1;
    }
    Ok((taken, Start::Offset { from, to: len }))
}

/// Emits the source's matches from `start` on, oldest first.
fn emit_forward_from(
    request: &TailRequest,
    source: &Source,
    start: Start,
    output: &mut Output,
) -> Result<(), FilesError> {
    let limit = request.scan.line_limit;
    let (reader, skip): (Box<dyn Read + '_>, u64) = match start {
        Start::Offset { from, to } => {
            let reader = ReadAt {
                file: &source.file,
                at: from,
            };
            (Box::new(reader.take(to - from)), 0)
        }
        Start::Skip(skip) => (source.forward()?, skip),
    };
    scan::for_each_match_forward(reader, &request.matcher, limit, &mut |index, line| {
        if index >= skip {
            output.line(&line);
        }
        output.open
    })
    .map_err(|e| source.io(e))?;
    Ok(())
}

/// Follows a file from where [`tail`] stopped: each [`Follower::step`] reads what was appended
/// since the last one, and notices rotation (the name now names another file: the old one is
/// read to its end first, then the new one is opened, confined like every open) and truncation
/// (read again from the start). It holds no thread between steps, so an idle follow stream
/// costs a file descriptor and a timer, nothing more.
pub struct Follower {
    path: PathBuf,
    roots: Vec<PathBuf>,
    matcher: Matcher,
    file: File,
    dev: u64,
    ino: u64,
    offset: u64,
    lines: Assembler,
    block: Vec<u8>,
}

impl Follower {
    /// Reads what is new (at most [`FOLLOW_BLOCK`] bytes) and answers the rendered matching
    /// lines, and whether more may be waiting right away. Blocking, but brief.
    pub fn step(&mut self) -> Result<(Vec<u8>, bool), FilesError> {
        let name = display_name(&self.path);
        let io = |e: io::Error| FilesError::Io(format!("{name}: {e}"));
        let len = self.file.metadata().map_err(io)?.len();
        if len < self.offset {
            // Truncated in place: what is there now is new.
            self.offset = 0;
            self.lines.restart_at(0);
        }
        let mut out = Vec::new();
        if len > self.offset {
            use std::os::unix::fs::FileExt;
            let want = ((len - self.offset) as usize).min(FOLLOW_BLOCK);
            self.block.resize(want, 0);
            let read = self
                .file
                .read_at(&mut self.block, self.offset)
                .map_err(io)?;
            self.offset += read as u64;
            self.lines
                .push(&self.block[..read], &self.matcher, &mut |line| {
                    render(&line, &mut out)
                });
            self.block = Vec::new();
            return Ok((out, read > 0));
        }
        // At the end of the file we hold: has the name moved on to a new file? (Followed
        // through a link, so a link to the file we hold is no change.)
        match fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) != (self.dev, self.ino) => {
                let real = match fs::canonicalize(&self.path) {
                    Ok(real) => real,
                    // Between the rename and the new file: try again on the next step.
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {
                        return Ok((out, false));
                    }
                    Err(error) => return Err(io(error)),
                };
                if !self.roots.iter().any(|root| real.starts_with(root)) {
                    return Err(FilesError::Forbidden(format!(
                        "`{name}` was replaced by a link leading outside the log roots; the \
                         follow stops here"
                    )));
                }
                let file = open_confined(&real, &self.roots)?;
                let meta = file.metadata().map_err(io)?;
                (self.dev, self.ino) = (meta.dev(), meta.ino());
                self.file = file;
                self.offset = 0;
                self.lines.restart_at(0);
                Ok((out, true))
            }
            _ => Ok((out, false)),
        }
    }
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
