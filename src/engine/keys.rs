//! The key index behind `keys/`: each live key of a partition and the offset of its latest value.
//!
//! SKELETON: the API below is fixed; the bodies are being written.

use std::path::Path;

use super::Result;

/// File name of the snapshot written at a clean close.
pub const KEYS_SNAPSHOT_FILE: &str = "lmqfs-keys-snapshot";

/// Live keys of one partition -> offset of their latest (non-tombstone) record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIndex {
    _private: (),
}

impl KeyIndex {
    /// An empty index that has applied nothing below `start_offset`.
    pub fn new(start_offset: i64) -> KeyIndex {
        let _ = start_offset;
        todo!()
    }

    /// The first offset not yet applied.
    pub fn next_offset(&self) -> i64 {
        todo!()
    }

    /// Applies the record at `offset` (offsets strictly increasing across calls). A keyless
    /// record changes nothing but the next offset; a tombstone removes its key; any other
    /// record makes `offset` its key's latest.
    pub fn apply(&mut self, offset: i64, key: Option<&[u8]>, tombstone: bool) {
        let _ = (offset, key, tombstone);
        todo!()
    }

    /// Moves the next offset forward to `next_offset` (offsets with no record: compaction gaps,
    /// the tail of a batch).
    pub fn advance_to(&mut self, next_offset: i64) {
        let _ = next_offset;
        todo!()
    }

    /// The offset of `key`'s latest value, if the key is live.
    pub fn get(&self, key: &[u8]) -> Option<i64> {
        let _ = key;
        todo!()
    }

    /// Forgets keys whose latest value is below `log_start_offset` (retention removed it).
    pub fn prune_below(&mut self, log_start_offset: i64) {
        let _ = log_start_offset;
        todo!()
    }

    /// Live keys, sorted bytewise.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        todo!()
    }

    pub fn len(&self) -> usize {
        todo!()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Estimated heap bytes in use (documented per-key cost times keys, plus key bytes).
    pub fn memory_bytes(&self) -> usize {
        todo!()
    }

    /// Writes the index to `dir/KEYS_SNAPSHOT_FILE` atomically (tmp, fsync, rename, fsync dir).
    pub fn write_snapshot(&self, dir: &Path) -> Result<()> {
        let _ = dir;
        todo!()
    }

    /// Reads the snapshot: `Ok(None)` when there is none; a snapshot that fails its checksum or
    /// does not parse is reported as `Err(Corrupt)`.
    pub fn read_snapshot(dir: &Path) -> Result<Option<KeyIndex>> {
        let _ = dir;
        todo!()
    }

    /// The snapshot's next offset from its header alone (a few bytes read), `None` when absent
    /// or unreadable.
    pub fn snapshot_next_offset(dir: &Path) -> Option<i64> {
        let _ = dir;
        todo!()
    }

    /// Removes the snapshot if present (durably).
    pub fn remove_snapshot(dir: &Path) -> Result<()> {
        let _ = dir;
        todo!()
    }
}
