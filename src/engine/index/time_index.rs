//! The `.timeindex` file of a segment.

use std::path::{Path, PathBuf};

use crate::engine::Result;

/// A timestamp and the offset of the first record known to carry it (or a later timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub timestamp: i64,
    pub offset: i64,
}

/// Sparse map from timestamp to offset.
///
/// Layout: 12-byte entries, big-endian `timestamp: i64` then `relative_offset: u32`. Entries are
/// strictly increasing in timestamp and non-decreasing in offset; an entry is added (at most one
/// per `index.interval.bytes` of log) only when the segment's max timestamp grew. Not checksummed;
/// rebuilt from the `.log` when its segment is recovered; [`TimeIndex::sanity_check`] rejects an
/// implausible file.
///
/// Thread-safety: `&mut self` for every change; the owning segment serializes access.
#[derive(Debug)]
pub struct TimeIndex {
    path: PathBuf,
    base_offset: i64,
}

impl TimeIndex {
    pub const ENTRY_SIZE: usize = 12;

    /// As [`super::OffsetIndex::open`].
    pub fn open(path: &Path, base_offset: i64, max_index_size: usize) -> Result<Self> {
        let _ = (path, base_offset, max_index_size);
        todo!()
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn entries(&self) -> usize {
        todo!()
    }
    pub fn max_entries(&self) -> usize {
        todo!()
    }
    pub fn is_full(&self) -> bool {
        self.entries() >= self.max_entries()
    }
    /// The last entry, or `(-1, base_offset)` when empty (Kafka's convention).
    pub fn last_entry(&self) -> TimestampOffset {
        todo!()
    }
    pub fn entry(&self, n: usize) -> TimestampOffset {
        let _ = n;
        todo!()
    }
    /// Appends `(timestamp, offset)` if `timestamp` is greater than the last entry's (otherwise a
    /// no-op). An offset smaller than the last entry's, or a full index, is an error.
    /// With `skip_full_check`, a full index is ignored silently (used when a segment closes).
    pub fn maybe_append(&mut self, timestamp: i64, offset: i64, skip_full_check: bool) -> Result<()> {
        let _ = (timestamp, offset, skip_full_check);
        todo!()
    }
    /// The entry with the largest timestamp <= `target_timestamp`, or `(-1, base_offset)`.
    pub fn lookup(&self, target_timestamp: i64) -> TimestampOffset {
        let _ = target_timestamp;
        todo!()
    }
    /// Removes every entry with offset >= `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        let _ = offset;
        todo!()
    }
    pub fn reset(&mut self) -> Result<()> {
        self.truncate_to(self.base_offset)
    }
    pub fn trim_to_valid_size(&mut self) -> Result<()> {
        todo!()
    }
    pub fn resize(&mut self, max_index_size: usize) -> Result<()> {
        let _ = max_index_size;
        todo!()
    }
    pub fn flush(&self) -> Result<()> {
        todo!()
    }
    /// Entries strictly increasing in timestamp, non-decreasing offsets >= base_offset, whole
    /// entries only.
    pub fn sanity_check(&self) -> Result<()> {
        todo!()
    }
    pub fn delete(self) -> Result<()> {
        todo!()
    }
    pub fn rename_to(&mut self, path: &Path) -> Result<()> {
        let _ = path;
        todo!()
    }
}
