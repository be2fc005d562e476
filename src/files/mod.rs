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

pub mod scan;

use flate2::read::MultiGzDecoder;
use scan::{Assembler, Backward, Line, Matcher, Prefetch, ScanOptions};
use serde::Serialize;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
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

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
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
        let relative = Path::new(filename);
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
                    if !real.is_file() {
                        return Err(FilesError::NotFound(format!(
                            "`{}` is not a regular file",
                            filename.escape_debug()
                        )));
                    }
                    return Ok(real);
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
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
/// symlinks are skipped, so siblings stay inside the root `path` is in.
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
            // A symlinked sibling could lead out of the root; rotation never makes one.
            if entry.file_type().ok()?.is_symlink() {
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
    pub matcher: Matcher,
    pub n: usize,
    pub order: Order,
    pub follow: bool,
    pub scan: ScanOptions,
    pub poll: Duration,
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

/// Streams the last `n` matching lines of the file and then, with `follow`, new ones, until
/// the sink closes. Blocking. An error returned after lines were sent must be reported to the
/// client as the error line.
pub fn tail(request: &TailRequest, sink: &mut dyn Sink) -> Result<(), FilesError> {
    let io = |path: &Path, e: io::Error| FilesError::Io(format!("{}: {e}", display_name(path)));
    let file = File::open(&request.path).map_err(|e| io(&request.path, e))?;
    let len = file.metadata().map_err(|e| io(&request.path, e))?.len();
    let ino = file.metadata().map_err(|e| io(&request.path, e))?.ino();
    let mut out = Vec::new();
    let mut remaining = request.n;
    let mut collected: Vec<Line> = Vec::new();
    let emit = |line: Line, out: &mut Vec<u8>, collected: &mut Vec<Line>| match request.order {
        Order::Desc => render(&line, out),
        Order::Asc => collected.push(line),
    };
    {
        let ahead = file.try_clone().map_err(|e| io(&request.path, e))?;
        let source = Prefetch::new(ahead, request.scan.chunk_bytes);
        let mut lines = Backward::new(source, len, request.matcher.clone(), request.scan);
        while remaining > 0 {
            let Some(line) = lines.next() else {
                break;
            };
            let line = line.map_err(|e| io(&request.path, e))?;
            emit(line, &mut out, &mut collected);
            remaining -= 1;
            let flush = out.len() >= BATCH_BYTES || (!out.is_empty() && !lines.has_ready());
            if flush && !sink.send(std::mem::take(&mut out)) {
                return Ok(());
            }
        }
    }
    for (sibling, gz) in siblings(&request.path) {
        if remaining == 0 {
            break;
        }
        let opened = File::open(&sibling).map_err(|e| io(&sibling, e))?;
        let lines = if gz {
            scan::last_matches_forward(
                MultiGzDecoder::new(BufReader::new(opened)),
                &request.matcher,
                remaining,
                request.scan.line_limit,
            )
            .map_err(|e| io(&sibling, e))?
        } else {
            let len = opened.metadata().map_err(|e| io(&sibling, e))?.len();
            let source = Prefetch::new(opened, request.scan.chunk_bytes);
            Backward::new(source, len, request.matcher.clone(), request.scan)
                .take(remaining)
                .collect::<io::Result<Vec<Line>>>()
                .map_err(|e| io(&sibling, e))?
        };
        remaining -= lines.len();
        for line in lines {
            emit(line, &mut out, &mut collected);
        }
        if !out.is_empty() && !sink.send(std::mem::take(&mut out)) {
            return Ok(());
        }
    }
    for line in collected.iter().rev() {
        render(line, &mut out);
        if out.len() >= BATCH_BYTES && !sink.send(std::mem::take(&mut out)) {
            return Ok(());
        }
    }
    drop(collected);
    if !out.is_empty() && !sink.send(std::mem::take(&mut out)) {
        return Ok(());
    }
    if request.follow {
        follow(request, file, ino, len, sink)?;
    }
    Ok(())
}

/// Streams the lines appended to the file from `offset` on; survives rotation (the name now
/// names another file: the old one is read to its end first) and truncation (read again from
/// the start). Returns when the sink closes.
fn follow(
    request: &TailRequest,
    mut file: File,
    mut ino: u64,
    mut offset: u64,
    sink: &mut dyn Sink,
) -> Result<(), FilesError> {
    let path = &request.path;
    let io = |e: io::Error| FilesError::Io(format!("{}: {e}", display_name(path)));
    let mut lines = Assembler::new(request.scan.line_limit);
    let mut block = vec![0u8; 256 * 1024];
    loop {
        if sink.is_closed() {
            return Ok(());
        }
        let len = file.metadata().map_err(io)?.len();
        if len < offset {
            // Truncated in place: what is there now is new.
            offset = 0;
            lines.clear();
        }
        if len > offset {
            file.seek(SeekFrom::Start(offset)).map_err(io)?;
            let want = ((len - offset) as usize).min(block.len());
            let read = file.read(&mut block[..want]).map_err(io)?;
            offset += read as u64;
            let mut out = Vec::new();
            lines.push(&block[..read], &request.matcher, &mut |line| {
                render(&line, &mut out)
            });
            if !out.is_empty() && !sink.send(out) {
                return Ok(());
            }
            continue;
        }
        // At the end of the file we hold: has the name moved on to a new file?
        match fs::metadata(path) {
            Ok(meta) if meta.ino() != ino => {
                if let Ok(next) = File::open(path) {
                    file = next;
                    ino = meta.ino();
                    offset = 0;
                    lines.clear();
                    continue;
                }
            }
            _ => {}
        }
        std::thread::sleep(request.poll);
    }
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
