//! Sparse, memory-mapped segment indexes: `.index` (offset -> position) and `.timeindex`
//! (timestamp -> offset). Both are preallocated to `segment.index.bytes` while their segment is
//! active and trimmed to their entries when it closes.
//!
//! The two index types share `IndexFile`, which owns the file, its mapping and the entry count
//! and knows nothing of what an entry means; each type adds its entry layout and invariants.

pub mod offset_index;
pub mod time_index;

pub use offset_index::{OffsetIndex, OffsetPosition};
pub use time_index::{TimeIndex, TimestampOffset};

use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::engine::error::{EngineError, IoResultExt, Result};
use crate::engine::io::{file_system, FileHandle, OpenMode};

/// Blocks of the file are reserved this many bytes at a time before entries are written into
/// them through the mapping (see [`IndexFile::push`]).
const RESERVE_BYTES: usize = 4096;

/// Bytes at the end of an index that a lookup searches first (see [`IndexFile::search`]).
const WARM_SECTION_BYTES: usize = 8192;

/// A memory-mapped file of fixed-size entries: the first `entries` are valid, the rest (up to
/// the file length) are preallocated room for appends.
///
/// Invariants: the mapping covers the whole file; the file length is a multiple of
/// `entry_size`; `entries * entry_size <= file length`.
#[derive(Debug)]
struct IndexFile {
    path: PathBuf,
    entry_size: usize,
    file: Box<dyn FileHandle>,
    mmap: MmapMut,
    entries: usize,
    /// Bytes from the start known to have disk blocks (written, or reserved by `push`).
    reserved: usize,
    /// Bytes of a partial trailing entry the file had when opened. They are dropped at open,
    /// but such a file was not written by this code, so [`Self::check_length`] reports it until
    /// the entries are discarded.
    partial_entry_bytes: usize,
}

impl IndexFile {
    /// Opens or creates `path`; existing whole entries are kept, and the file is sized to
    /// `max_index_size` rounded down to whole entries, but never below the existing entries.
    fn open(path: &Path, entry_size: usize, max_index_size: usize) -> Result<IndexFile> {
        let file = file_system().open(path, OpenMode::Create).at(path)?;
        let len = file.size().at(path)?;
        let len = usize::try_from(len).map_err(|_| EngineError::CorruptIndex {
            path: path.to_path_buf(),
            reason: format!("file length {len} does not fit in memory"),
        })?;
        let entries = len / entry_size;
        let partial_entry_bytes = len % entry_size;
        let size = round_down(max_index_size, entry_size).max(entries * entry_size);
        if size != len {
            file.set_len(size as u64).at(path)?;
        }
        let mmap = file.map(size).at(path)?;
        let index = IndexFile {
            path: path.to_path_buf(),
            entry_size,
            file,
            mmap,
            entries,
            reserved: entries * entry_size,
            partial_entry_bytes,
        };
        index.assert_invariants();
        Ok(index)
    }

    fn assert_invariants(&self) {
        debug_assert_eq!(self.mmap.len() % self.entry_size, 0);
        debug_assert!(self.entries <= self.max_entries());
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn entries(&self) -> usize {
        self.entries
    }

    fn max_entries(&self) -> usize {
        self.mmap.len() / self.entry_size
    }

    fn is_full(&self) -> bool {
        self.entries >= self.max_entries()
    }

    /// The bytes of entry `n`. Panics if `n` is not a valid entry.
    fn entry(&self, n: usize) -> &[u8] {
        assert!(
            n < self.entries,
            "entry {n} requested from {} which has {} entries",
            self.path.display(),
            self.entries
        );
        &self.mmap[n * self.entry_size..(n + 1) * self.entry_size]
    }

    /// Reserves disk blocks for the next `count` entries (as many as fit), so the pushes of
    /// an append cannot fail after its data was written: a full disk fails the append before
    /// it writes anything.
    fn reserve(&mut self, count: usize) -> Result<()> {
        let end = ((self.entries + count) * self.entry_size).min(self.mmap.len());
        if end <= self.reserved {
            return Ok(());
        }
        let from = self.reserved - self.reserved % RESERVE_BYTES;
        let to = end.div_ceil(RESERVE_BYTES) * RESERVE_BYTES;
        let to = to.min(self.mmap.len());
        self.file
            .allocate(from as u64, (to - from) as u64)
            .at(&self.path)?;
        self.reserved = to;
        Ok(())
    }

    /// Writes `bytes` as the next entry. The caller has checked that the index is not full.
    ///
    /// The preallocated part of the file is sparse: the first write into one of its pages
    /// through the mapping needs a disk block, and on a full disk that would be a SIGBUS that
    /// kills the daemon. So blocks are reserved (`fallocate`) ahead of the entries, where a
    /// full disk is an ordinary error (ENOSPC) and nothing is written.
    fn push(&mut self, bytes: &[u8]) -> Result<()> {
        assert_eq!(bytes.len(), self.entry_size);
        assert!(
            !self.is_full(),
            "push to full index {}",
            self.path.display()
        );
        let start = self.entries * self.entry_size;
        let end = start + self.entry_size;
        if end > self.reserved {
            let from = start - start % RESERVE_BYTES;
            let to = (from + RESERVE_BYTES).max(end).min(self.mmap.len());
            self.file
                .allocate(from as u64, (to - from) as u64)
                .at(&self.path)?;
            self.reserved = to;
        }
        self.mmap[start..end].copy_from_slice(bytes);
        self.entries += 1;
        Ok(())
    }

    /// Keeps the first `n` entries (no-op if there are fewer) and zeroes the dropped ones, so a
    /// crash before the file is trimmed cannot bring stale but well-ordered entries back: the
    /// zeros break the ordering that `sanity_check` requires.
    fn truncate_to_entries(&mut self, n: usize) {
        if n >= self.entries {
            return;
        }
        let start = n * self.entry_size;
        let end = self.entries * self.entry_size;
        // Only write entries that are not already zero: writing a page of a preallocated
        // (sparse) file would allocate disk blocks for nothing.
        for chunk in self.mmap[start..end].chunks_mut(self.entry_size) {
            if chunk.iter().any(|&b| b != 0) {
                chunk.fill(0);
            }
        }
        self.entries = n;
        if n == 0 {
            self.partial_entry_bytes = 0;
        }
    }

    /// Sizes the file (and mapping) to `max_index_size` rounded down to whole entries, but never
    /// below the valid entries.
    fn resize(&mut self, max_index_size: usize) -> Result<()> {
        let size = round_down(max_index_size, self.entry_size).max(self.entries * self.entry_size);
        if size == self.mmap.len() {
            return Ok(());
        }
        // The old mapping is not touched between the new length and the new mapping: its
        // pages past the new end would fault.
        self.file.set_len(size as u64).at(&self.path)?;
        self.mmap = self.file.map(size).at(&self.path)?;
        self.reserved = self.reserved.min(size);
        self.assert_invariants();
        Ok(())
    }

    fn trim_to_valid_size(&mut self) -> Result<()> {
        self.resize(self.entries * self.entry_size)
    }

    fn flush(&self) -> Result<()> {
        self.mmap.flush().at(&self.path)
    }

    fn delete(self) -> Result<()> {
        let IndexFile { path, mmap, .. } = self;
        drop(mmap);
        match file_system().remove(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other.at(&path),
        }
    }

    fn rename_to(&mut self, path: &Path) -> Result<()> {
        file_system().rename(&self.path, path).at(&self.path)?;
        self.path = path.to_path_buf();
        Ok(())
    }

    /// The length part of a sanity check: whole entries only.
    fn check_length(&self) -> Result<()> {
        if self.partial_entry_bytes != 0 {
            return Err(self.corrupt(format!(
                "file length is not a multiple of the {}-byte entry size ({} trailing bytes)",
                self.entry_size, self.partial_entry_bytes
            )));
        }
        if self.mmap.len() % self.entry_size != 0 {
            return Err(self.corrupt(format!(
                "mapped length {} is not a multiple of the {}-byte entry size",
                self.mmap.len(),
                self.entry_size
            )));
        }
        Ok(())
    }

    fn corrupt(&self, reason: String) -> EngineError {
        EngineError::CorruptIndex {
            path: self.path.clone(),
            reason,
        }
    }

    /// The number of leading entries whose `key` is <= `target`, for entries sorted by `key`:
    /// so the last entry with key <= target is slot `search(..) - 1`.
    ///
    /// Appends touch the end of the file and most lookups (tailing readers) target it too, so
    /// those pages stay resident while the start of a large index may be paged out. A plain
    /// binary search would touch the cold middle pages first on every lookup; searching the
    /// last few KiB first, when the target is there, keeps such lookups on warm pages (Kafka's
    /// `AbstractIndex` does the same).
    fn search(&self, target: i64, key: impl Fn(&[u8]) -> i64) -> usize {
        let warm_entries = WARM_SECTION_BYTES / self.entry_size;
        let warm_start = self.entries.saturating_sub(warm_entries);
        if warm_start > 0 && key(self.entry(warm_start)) <= target {
            self.partition_point(warm_start, self.entries, |e| key(e) <= target)
        } else if warm_start > 0 {
            self.partition_point(0, warm_start, |e| key(e) <= target)
        } else {
            self.partition_point(0, self.entries, |e| key(e) <= target)
        }
    }

    /// The first slot in `lo..hi` for which `pred` is false, given that `pred` holds for a
    /// prefix of the slots.
    fn partition_point(&self, mut lo: usize, mut hi: usize, pred: impl Fn(&[u8]) -> bool) -> usize {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.entry(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

fn round_down(n: usize, multiple: usize) -> usize {
    n - n % multiple
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"))
}

fn be_i64(bytes: &[u8]) -> i64 {
    i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
}

/// `offset - base_offset` as stored in an entry: it must fit in a non-negative i32, as in Kafka.
fn relative_offset(path: &Path, base_offset: i64, offset: i64) -> Result<u32> {
    match offset.checked_sub(base_offset) {
        Some(rel) if (0..=i32::MAX as i64).contains(&rel) => Ok(rel as u32),
        _ => Err(EngineError::InvalidArgument(format!(
            "offset {offset} cannot be stored relative to base offset {base_offset} in {}",
            path.display()
        ))),
    }
}
