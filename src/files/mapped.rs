//! A plain file mapped read-only for scanning, safe against the file shrinking under it.
//!
//! A mapped scan reads the page cache in place, where `pread` copies every byte first (the copy
//! is half the time of a full scan). But reading a mapped page past the file's end — the file
//! was truncated after it was mapped, as logrotate's `copytruncate` does to the very files a
//! node tails — raises `SIGBUS`, whose default action kills the process. So this module owns
//! one process-wide `SIGBUS` handler, installed with the first mapping: a fault inside a live
//! [`Mapped`] gets a page of zeros mapped over the faulting page (the read is retried and
//! sees zeros) and marks that mapping, and [`Mapped::intact`] then reports that the bytes read
//! were not the file's. A fault anywhere else goes back to the handler that was there before
//! (the Rust runtime's stack-overflow handler, or the default action), as if this one had
//! never been installed.
//!
//! Invariants:
//! - The handler only reads atomics and calls `mmap`, `sigaction` and `raise` (system calls,
//!   safe in a signal handler); it never allocates or locks. A `SIGBUS` sent by another process
//!   (no fault) is raised again under the previous disposition, never swallowed.
//! - A slot is `ACTIVE` only while its mapping exists: it is claimed after `mmap` and freed
//!   before `munmap`.
//! - At most [`SLOTS`] mappings are guarded at once; [`Mapped::new`] answers `None` beyond that
//!   (and for an empty file), and the caller reads with `pread` instead.

use super::scan::ChunkSource;
use memmap2::{Mmap, MmapOptions, UncheckedAdvice};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

/// Chunks of a mapped file grow to this (nothing is copied, so nothing is held but page
/// table entries): large enough to be searched by two threads at once.
const LARGEST_CHUNK: usize = 8 * 1024 * 1024;

/// Mappings guarded at once: as many as the file streams a node serves by default
/// (`--max-file-streams`).
const SLOTS: usize = 64;

const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const ACTIVE: u8 = 2;

struct Slot {
    state: AtomicU8,
    /// Bumped when the slot turns `ACTIVE` and when it is freed: the handler reads the range
    /// between two equal readings of it, so never half of one mapping's range and half of the
    /// next one's.
    version: AtomicUsize,
    start: AtomicUsize,
    end: AtomicUsize,
    faulted: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // the initializer of each array element
const EMPTY_SLOT: Slot = Slot {
    state: AtomicU8::new(FREE),
    version: AtomicUsize::new(0),
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    faulted: AtomicBool::new(false),
};

static GUARDED: [Slot; SLOTS] = [EMPTY_SLOT; SLOTS];
static PAGE_BYTES: AtomicUsize = AtomicUsize::new(4096);
static INSTALL: Once = Once::new();
/// Whether the handler is installed (`sigaction` can fail; then nothing is mapped).
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The disposition before ours, restored for a fault that is not ours. Written once, before
/// the handler that reads it is installed.
static mut PREVIOUS: Option<libc::sigaction> = None;

/// The first `len` bytes of a file, mapped; see the module's documentation.
pub struct Mapped {
    map: Mmap,
    slot: &'static Slot,
    /// The file, for its length: bytes past a new end within the last page read as zeros
    /// without a fault.
    file: File,
    /// The range given out last, dropped from memory when the next is asked for.
    last_chunk: Option<(usize, usize)>,
    /// The process's major faults when the last chunk was given out.
    major_faults: Option<i64>,
    /// Whether this scan has read pages from the disk (a major fault while it ran): only then
    /// is readahead asked for past the first chunk. Asking it for pages already cached walks
    /// the page cache page by page, and had taken 30 % of a cached 1 GiB scan's time.
    reading_from_disk: bool,
    /// Readahead requests made, for tests.
    advised: usize,
}

/// Major page faults of this process so far (pages read from the disk on access).
fn major_faults() -> i64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) == 0 {
            #[allow(clippy::unnecessary_cast)] // a `c_long`: 32 bits on some targets
            let faults = usage.ru_majflt as i64;
            faults
        } else {
            0
        }
    }
}

impl Mapped {
    /// Maps the first `len` bytes of `file`. `None` when `len` is 0 or every guard slot is in
    /// use; an error when mapping fails.
    pub fn new(file: &File, len: u64) -> io::Result<Option<Mapped>> {
        if len == 0 {
            return Ok(None);
        }
        install_handler();
        if !INSTALLED.load(Ordering::Acquire) {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
        let file_for_len = file.try_clone()?;
        let Some(slot) = GUARDED.iter().find(|slot| {
            slot.state
                .compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        }) else {
            return Ok(None);
        };
        // SAFETY: the mapping is read-only and private to this value. Bytes another process
        // writes into the file meanwhile may be seen (a scan of a growing log accepts that),
        // and a shrinking file is the guarded fault this module handles.
        let map = match unsafe { MmapOptions::new().len(len).map(file) } {
            Ok(map) => map,
            Err(error) => {
                slot.state.store(FREE, Ordering::Release);
                return Err(error);
            }
        };
        let start = map.as_ptr() as usize;
        slot.start.store(start, Ordering::SeqCst);
        slot.end.store(start + len, Ordering::SeqCst);
        slot.faulted.store(false, Ordering::SeqCst);
        slot.version.fetch_add(1, Ordering::SeqCst);
        slot.state.store(ACTIVE, Ordering::SeqCst);
        Ok(Some(Mapped {
            map,
            slot,
            file: file_for_len,
            last_chunk: None,
            major_faults: None,
            reading_from_disk: false,
            advised: 0,
        }))
    }

    /// Asks the kernel to read `start..start + len` of the file ahead (a scan going
    /// backwards gets no readahead of its own). Through the file, not the mapping: advice on
    /// the mapping would map the pages too, and a long scan's memory would grow with it. Only
    /// advice: errors are ignored.
    fn will_need(&mut self, start: usize, len: usize) {
        self.advised += 1;
        // SAFETY: a plain system call on a descriptor this value owns.
        unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                start as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            );
        }
    }

    /// An error when some byte read through this mapping may not have been the file's: it
    /// shrank (a fault, or a length now short of the mapping's), or reading a page failed.
    pub fn intact(&self) -> io::Result<()> {
        if self.slot.faulted.load(Ordering::SeqCst)
            || self.file.metadata()?.len() < self.map.len() as u64
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was read (truncated?)",
            ));
        }
        Ok(())
    }
}

impl ChunkSource for Mapped {
    fn chunk<'a>(&'a mut self, start: u64, len: usize, _: &'a mut Vec<u8>) -> io::Result<&'a [u8]> {
        let start =
            usize::try_from(start).map_err(|_| io::Error::other("offset past the mapping"))?;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= self.map.len())
            .ok_or_else(|| io::Error::other("chunk past the mapping"))?;
        // A backward scan asks for the chunk before this one next: readahead for the two
        // before it with the first chunk, then only once this scan has met pages that were not
        // cached (another thread's fault may count too: that costs one needless request).
        let faults = major_faults();
        let first = match self.major_faults.replace(faults) {
            None => true,
            Some(before) => {
                self.reading_from_disk |= faults > before;
                false
            }
        };
        let ahead = start.saturating_sub(len.saturating_mul(2));
        if ahead < start && (first || self.reading_from_disk) {
            self.will_need(ahead, start - ahead);
        }
        // It is done with the chunk after this one: its pages leave this process's memory (not
        // the page cache).
        if let Some((done_start, done_len)) = self.last_chunk.replace((start, len)) {
            // SAFETY: the mapping is read-only: dropping its pages loses nothing, and a page
            // read again is read from the file.
            let _ = unsafe {
                self.map
                    .unchecked_advise_range(UncheckedAdvice::DontNeed, done_start, done_len)
            };
        }
        Ok(&self.map[start..end])
    }

    fn intact(&self) -> io::Result<()> {
        Mapped::intact(self)
    }

    fn largest_chunk(&self, chunk_bytes: usize) -> usize {
        chunk_bytes.max(LARGEST_CHUNK)
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // Freed before `map` is dropped (fields drop after this), so no slot names an
        // unmapped range.
        self.slot.state.store(FREE, Ordering::SeqCst);
        self.slot.version.fetch_add(1, Ordering::SeqCst);
    }
}

fn install_handler() {
    INSTALL.call_once(|| {
        // SAFETY: plain libc calls on zeroed C structs; PREVIOUS is written here, once, before
        // the handler that reads it exists.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE);
            if page > 0 {
                PAGE_BYTES.store(page as usize, Ordering::Relaxed);
            }
            let mut ours: libc::sigaction = std::mem::zeroed();
            ours.sa_sigaction = on_sigbus as *const () as usize;
            ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut ours.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            // The previous disposition must be known before ours can run.
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
                return;
            }
            PREVIOUS = Some(previous);
            if libc::sigaction(libc::SIGBUS, &ours, std::ptr::null_mut()) == 0 {
                INSTALLED.store(true, Ordering::Release);
            }
        }
    });
}

extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (code, address) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // A code of 0 or less: sent by a process (`kill`), not raised by a fault; no address.
    let fault = code > 0;
    if fault && let Some(slot) = slot_of(address) {
        let page_bytes = PAGE_BYTES.load(Ordering::Relaxed);
        let page = address & !(page_bytes - 1);
        // SAFETY: the page lies inside a live mapping of ours; replacing it with anonymous
        // zeros keeps the address range valid for the reader, which is told by `faulted`.
        let zeros = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                page_bytes,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if zeros != libc::MAP_FAILED {
            slot.faulted.store(true, Ordering::SeqCst);
            return;
        }
        // No zero page (the process is at its limit of mappings, say): the fault stays
        // fatal, as it was without this handler.
    }
    // Not ours: put the previous disposition back. A fault returns and the faulting
    // instruction runs again and meets it; a sent signal is sent again (it is blocked while
    // this runs, and delivered as soon as this returns).
    // SAFETY: PREVIOUS was written before this handler was installed and never again;
    // `sigaction`, `signal` and `raise` are async-signal-safe.
    unsafe {
        let previous = &*std::ptr::addr_of!(PREVIOUS);
        match previous {
            Some(previous) => libc::sigaction(signal, previous, std::ptr::null_mut()),
            None => libc::signal(signal, libc::SIG_DFL) as libc::c_int,
        };
        if !fault {
            libc::raise(signal);
        }
    }
}

/// The live mapping `address` lies in, its range read whole (see [`Slot::version`]).
fn slot_of(address: usize) -> Option<&'static Slot> {
    GUARDED.iter().find(|slot| {
        let version = slot.version.load(Ordering::SeqCst);
        if slot.state.load(Ordering::SeqCst) != ACTIVE {
            return false;
        }
        let (start, end) = (
            slot.start.load(Ordering::SeqCst),
            slot.end.load(Ordering::SeqCst),
        );
        slot.version.load(Ordering::SeqCst) == version
            && slot.state.load(Ordering::SeqCst) == ACTIVE
            && (start..end).contains(&address)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::scan::{Backward, Matcher, ScanOptions};
    use std::io::{Cursor, Write};

    fn options(chunk_bytes: usize) -> ScanOptions {
        ScanOptions {
            chunk_bytes,
            line_limit: 100,
        }
    }

    /// Every chunk of `len` bytes of `mapped`, from the end backwards, each byte read.
    fn read_backwards(mapped: &mut Mapped, len: usize, chunk: usize) -> u64 {
        let mut sum = 0u64;
        let mut buffer = Vec::new();
        let mut end = len;
        while end > 0 {
            let start = end.saturating_sub(chunk);
            let bytes = mapped
                .chunk(start as u64, end - start, &mut buffer)
                .unwrap();
            sum += bytes.iter().map(|b| *b as u64).sum::<u64>();
            end = start;
        }
        sum
    }

    #[test]
    fn readahead_is_asked_past_the_first_chunk_only_for_pages_read_from_the_disk() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let len = 8 << 20;
        file.write_all(&vec![b'x'; len]).unwrap();
        file.as_file().sync_all().unwrap();
        let chunk = 1 << 20;

        // Just written, so cached: the first chunk asks, the seven others do not (unless a
        // page was read from the disk meanwhile, by this scan or another test's).
        let faults_before = major_faults();
        let mut cached = Mapped::new(file.as_file(), len as u64).unwrap().unwrap();
        assert_eq!(
            read_backwards(&mut cached, len, chunk),
            len as u64 * b'x' as u64
        );
        if major_faults() == faults_before {
            assert_eq!(cached.advised, 1, "a cached file needs no readahead");
        }
        drop(cached);

        // Dropped from the page cache (clean pages, synced above), the scan reads from the
        // disk and asks for readahead as it goes. A file system that keeps its pages in memory
        // (tmpfs) cannot drop them; there the scan stays a cached one.
        // SAFETY: a plain system call on an open descriptor.
        unsafe {
            libc::posix_fadvise(
                file.as_file().as_raw_fd(),
                0,
                len as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
        let faults_before = major_faults();
        let mut cold = Mapped::new(file.as_file(), len as u64).unwrap().unwrap();
        assert_eq!(
            read_backwards(&mut cold, len, chunk),
            len as u64 * b'x' as u64
        );
        if major_faults() > faults_before {
            assert!(
                cold.advised > 1,
                "read from the disk: {} requests",
                cold.advised
            );
        } else {
            assert_eq!(cold.advised, 1, "still cached: {} requests", cold.advised);
        }
    }

    #[test]
    fn a_mapped_scan_finds_the_lines_a_copied_one_finds() {
        let mut file = tempfile::tempfile().unwrap();
        let text: String = (0..5000).map(|i| format!("line {i} {}\n", i % 7)).collect();
        file.write_all(text.as_bytes()).unwrap();
        let len = text.len() as u64;
        let matcher = || Matcher::keyword(" 3", false);
        let expected: Vec<_> = Backward::new(Cursor::new(&text), len, matcher(), options(4096))
            .map(|line| line.unwrap())
            .collect();
        assert!(expected.len() > 1_000, "{}", expected.len());
        for chunk in [100, 1000, 4096, 1 << 20] {
            let mapped = Mapped::new(&file, len).unwrap().unwrap();
            let got: Vec<_> = Backward::new(mapped, len, matcher(), options(chunk))
                .map(|line| line.unwrap())
                .collect();
            assert_eq!(got, expected, "chunk {chunk}");
        }
    }

    #[test]
    fn chunks_large_enough_to_be_searched_by_two_threads_give_the_same_lines() {
        let mut file = tempfile::tempfile().unwrap();
        let text: String = (0..450_000)
            .map(|i| format!("{i:07} status={} took={}ms\n", 200 + i % 7, i % 1000))
            .collect();
        // Chunks of 1, 2, 4 and 8 MiB from the end: the ones of 4 MiB and more are split.
        assert!(text.len() > 12 << 20, "{}", text.len());
        file.write_all(text.as_bytes()).unwrap();
        let len = text.len() as u64;
        for (matcher, wanted) in [
            (Matcher::keyword("status=203", false), 450_000 / 7),
            (
                Matcher::regex(r"status=20[35] took=99\dms", false).unwrap(),
                500,
            ),
            (Matcher::keyword("STATUS=206", true), 450_000 / 7),
        ] {
            // Copied in 1 MiB chunks: never split.
            let expected: Vec<_> =
                Backward::new(Cursor::new(&text), len, matcher.clone(), options(1 << 20))
                    .map(|line| line.unwrap())
                    .collect();
            assert!(expected.len() >= wanted, "{matcher:?}: {}", expected.len());
            let mapped = Mapped::new(&file, len).unwrap().unwrap();
            let got: Vec<_> = Backward::new(mapped, len, matcher.clone(), options(1 << 20))
                .map(|line| line.unwrap())
                .collect();
            assert!(got == expected, "{matcher:?}");
        }
    }

    #[test]
    fn a_scan_of_a_file_truncated_under_its_mapping_ends_in_an_error_not_in_zeros() {
        let mut file = tempfile::tempfile().unwrap();
        let page = PAGE_BYTES.load(Ordering::Relaxed).max(4096);
        let text: String = (0..page).map(|i| format!("line {i}\n")).collect();
        file.write_all(text.as_bytes()).unwrap();
        let len = text.len() as u64;
        let mapped = Mapped::new(&file, len).unwrap().unwrap();
        file.set_len(len / 2).unwrap();
        // Every line matches: lines made of zeros would be given out too.
        let mut lines = Backward::new(mapped, len, Matcher::keyword("", false), options(4096));
        let error = lines.next().unwrap().unwrap_err();
        assert!(error.to_string().contains("shrank"), "{error}");
        assert!(lines.next().is_none(), "a scan ends at its error");
    }

    #[test]
    fn a_file_shortened_within_its_last_page_is_not_read_as_zeros_either() {
        let mut file = tempfile::tempfile().unwrap();
        let text = "first\nsecond\nthird\n";
        file.write_all(text.as_bytes()).unwrap();
        let len = text.len() as u64;
        let mapped = Mapped::new(&file, len).unwrap().unwrap();
        // No fault: the page still exists, its end reads as zeros.
        file.set_len(len - 3).unwrap();
        let mut lines = Backward::new(mapped, len, Matcher::keyword("", false), options(4096));
        let error = lines.next().unwrap().unwrap_err();
        assert!(error.to_string().contains("shrank"), "{error}");
    }

    #[test]
    fn a_file_truncated_under_its_mapping_reads_as_not_intact_instead_of_killing_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shrinks.log");
        let mut file = File::create(&path).unwrap();
        let page = PAGE_BYTES.load(Ordering::Relaxed).max(4096);
        file.write_all(&vec![b'x'; page * 4]).unwrap();
        let reader = File::open(&path).unwrap();
        let mapped = Mapped::new(&reader, (page * 4) as u64).unwrap().unwrap();
        assert_eq!(mapped.map[page * 3], b'x');
        mapped.intact().unwrap();

        file.set_len(page as u64).unwrap();
        // Past the new end: a SIGBUS without the guard.
        let past_end: u64 = mapped.map[page * 2..].iter().map(|&b| b as u64).sum();
        assert_eq!(past_end, 0, "the lost pages read as zeros");
        let error = mapped.intact().unwrap_err();
        assert!(error.to_string().contains("shrank"), "{error}");
        // What is still in the file is still read.
        assert_eq!(mapped.map[0], b'x');
        drop(mapped);

        let again = Mapped::new(&reader, page as u64).unwrap().unwrap();
        again.intact().unwrap();
    }

    #[test]
    fn past_the_guarded_mappings_a_file_is_not_mapped_until_one_is_let_go() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"one line\n").unwrap();
        // Other tests may hold a few slots meanwhile: the refusal comes at or before SLOTS.
        let mut held = Vec::new();
        while let Some(mapped) = Mapped::new(&file, 9).unwrap() {
            held.push(mapped);
            assert!(held.len() <= SLOTS, "more mappings than guard slots");
        }
        assert!(held.len() > SLOTS / 2, "{} mappings", held.len());
        held.clear();
        assert!(Mapped::new(&file, 9).unwrap().is_some());
    }

    #[test]
    fn an_empty_file_is_not_mapped() {
        let file = tempfile::tempfile().unwrap();
        assert!(Mapped::new(&file, 0).unwrap().is_none());
    }
}
