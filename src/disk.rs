//! Free space on the disk holding the node's data directory, and the watermark below which the
//! node refuses new events (`--min-free-disk`): 503 naming the disk, before the queue, the
//! event log or SQLite run into ENOSPC. Refusing early leaves room for what was already
//! acknowledged to be written (the writers drain the queue into the store and the event log),
//! and for SQLite's journal.

use crate::queue::QueueError;
use std::io;
use std::path::{Path, PathBuf};

/// The bytes an unprivileged process may still write on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    // SAFETY: statvfs(3) with a NUL-terminated path and a zeroed struct it fills.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// The free-space floor of the data directory's disk.
#[derive(Debug, Clone)]
pub struct Watermark {
    path: PathBuf,
    min_free: u64,
}

impl Watermark {
    pub fn new(path: &Path, min_free: u64) -> Watermark {
        Watermark {
            path: path.to_owned(),
            min_free,
        }
    }

    /// `QueueError::DiskLow` while the disk has less than the floor free. A disk whose free
    /// space cannot be read is not refused for it (the writes themselves still report ENOSPC).
    pub fn check(&self) -> Result<(), QueueError> {
        match free_bytes(&self.path) {
            Ok(free) if free < self.min_free => Err(QueueError::DiskLow {
                path: self.path.display().to_string(),
                free,
                min_free: self.min_free,
            }),
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::debug!(path = %self.path.display(), %error, "Could not read the free disk space.");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_and_the_floor_applies() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        assert!(Watermark::new(dir.path(), 0).check().is_ok());
        let error = Watermark::new(dir.path(), u64::MAX).check().unwrap_err();
        let text = error.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains("--min-free-disk"), "{text}");
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }
}
