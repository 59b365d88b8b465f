//! The `.index` file of a segment.

use std::path::{Path, PathBuf};

use crate::engine::Result;

/// An offset and the byte position in the `.log` of the batch that contains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetPosition {
    pub offset: i64,
    pub position: u32,
}

/// Sparse map from offset to `.log` byte position.
///
/// Layout: 8-byte entries, big-endian `relative_offset: u32` (offset - base_offset), then
/// `position: u32`. Entries are strictly increasing in both fields. Not checksummed: after an
/// unclean shutdown it is rebuilt from the `.log` for every segment being recovered, and
/// [`OffsetIndex::sanity_check`] rejects any index that is not a plausible one.
///
/// Thread-safety: `&mut self` for every change; the owning segment serializes access.
#[derive(Debug)]
pub struct OffsetIndex {
    path: PathBuf,
    base_offset: i64,
}

impl OffsetIndex {
    pub const ENTRY_SIZE: usize = 8;

    /// Opens (creating if absent) the index at `path`. An existing file's entry count is its
    /// length / 8 (a trailing partial entry is dropped). The file is then sized to
    /// `max_index_size` (rounded down to a whole entry) so appends need no remap; call
    /// [`Self::trim_to_valid_size`] when the segment closes.
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
    /// Number of entries.
    pub fn entries(&self) -> usize {
        todo!()
    }
    /// Largest number of entries the preallocated file can hold.
    pub fn max_entries(&self) -> usize {
        todo!()
    }
    pub fn is_full(&self) -> bool {
        self.entries() >= self.max_entries()
    }
    /// The offset of the last entry, or `base_offset` when empty.
    pub fn last_offset(&self) -> i64 {
        todo!()
    }
    /// The n-th entry (absolute offset).
    pub fn entry(&self, n: usize) -> OffsetPosition {
        let _ = n;
        todo!()
    }
    /// Appends an entry. `offset` must be greater than the last entry's and fit in a relative u32;
    /// a full index or a non-increasing offset is an `InvalidArgument` error.
    pub fn append(&mut self, offset: i64, position: u32) -> Result<()> {
        let _ = (offset, position);
        todo!()
    }
    /// The entry with the largest offset <= `target_offset`, or `(base_offset, 0)` if none.
    pub fn lookup(&self, target_offset: i64) -> OffsetPosition {
        let _ = target_offset;
        todo!()
    }
    /// Removes every entry with offset >= `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        let _ = offset;
        todo!()
    }
    /// Removes all entries.
    pub fn reset(&mut self) -> Result<()> {
        self.truncate_to(self.base_offset)
    }
    /// Shrinks the file to exactly its entries (on segment close).
    pub fn trim_to_valid_size(&mut self) -> Result<()> {
        todo!()
    }
    /// Re-sizes the file to `max_index_size` again (a closed segment reopened as active).
    pub fn resize(&mut self, max_index_size: usize) -> Result<()> {
        let _ = max_index_size;
        todo!()
    }
    /// msync of the mapping.
    pub fn flush(&self) -> Result<()> {
        todo!()
    }
    /// Checks the invariants: entries strictly increasing in offset and position, every offset
    /// >= base_offset, and the file length a whole number of entries.
    pub fn sanity_check(&self) -> Result<()> {
        todo!()
    }
    /// Unmaps and deletes the file.
    pub fn delete(self) -> Result<()> {
        todo!()
    }
    /// Renames the file (the mapping stays valid).
    pub fn rename_to(&mut self, path: &Path) -> Result<()> {
        let _ = path;
        todo!()
    }
}
