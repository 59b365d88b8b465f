//! The `.timeindex` file of a segment.

use std::path::Path;

use super::{be_i64, be_u32, relative_offset, IndexFile};
use crate::engine::{EngineError, Result};

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
/// An entry `(t, o)` means "the records with timestamp >= t start at or after offset o", so a
/// time lookup scans the log from `lookup(t).offset`. The relative offset fits in
/// 0..=`i32::MAX`, as in the offset index.
///
/// Preallocation and crashes work as for [`super::OffsetIndex`]: the file is sized to
/// `segment.index.bytes` while active and trimmed on close; after a crash the unused zero
/// entries of an untrimmed file are counted as entries and fail `sanity_check` (their
/// timestamps do not increase), which makes the segment rebuild the index.
///
/// Thread-safety: `&mut self` for every change; the owning segment serializes access. The type
/// is `Send + Sync`; lookups take `&self` and may run concurrently with each other.
#[derive(Debug)]
pub struct TimeIndex {
    base_offset: i64,
    file: IndexFile,
}

impl TimeIndex {
    pub const ENTRY_SIZE: usize = 12;

    /// As [`super::OffsetIndex::open`].
    pub fn open(path: &Path, base_offset: i64, max_index_size: usize) -> Result<Self> {
        Ok(TimeIndex {
            base_offset,
            file: IndexFile::open(path, Self::ENTRY_SIZE, max_index_size)?,
        })
    }
    pub fn path(&self) -> &Path {
        self.file.path()
    }
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn entries(&self) -> usize {
        self.file.entries()
    }
    pub fn max_entries(&self) -> usize {
        self.file.max_entries()
    }
    /// Reserves disk blocks for the next `count` entries (see `IndexFile::reserve`).
    pub fn reserve(&mut self, count: usize) -> Result<()> {
        self.file.reserve(count)
    }

    pub fn is_full(&self) -> bool {
        self.entries() >= self.max_entries()
    }
    /// The last entry, or `(-1, base_offset)` when empty (Kafka's convention).
    pub fn last_entry(&self) -> TimestampOffset {
        match self.entries() {
            0 => self.empty_entry(),
            n => self.entry(n - 1),
        }
    }
    /// The n-th entry (absolute offset). Panics if `n >= entries()`.
    pub fn entry(&self, n: usize) -> TimestampOffset {
        self.parse(self.file.entry(n))
    }
    /// Appends `(timestamp, offset)` if `timestamp` is greater than the last entry's (otherwise a
    /// no-op). An offset smaller than the last entry's, or a full index, is an error.
    /// With `skip_full_check`, a full index is ignored silently (used when a segment closes).
    pub fn maybe_append(
        &mut self,
        timestamp: i64,
        offset: i64,
        skip_full_check: bool,
    ) -> Result<()> {
        if self.is_full() && !skip_full_check {
            return Err(EngineError::InvalidArgument(format!(
                "time index {} is full ({} entries); cannot append ({timestamp}, {offset})",
                self.path().display(),
                self.entries()
            )));
        }
        let last = self.last_entry();
        if self.entries() > 0 && offset < last.offset {
            return Err(EngineError::InvalidArgument(format!(
                "offset {offset} is before the last entry's offset {} in time index {}",
                last.offset,
                self.path().display()
            )));
        }
        let relative = relative_offset(self.path(), self.base_offset, offset)?;
        if timestamp <= last.timestamp || self.is_full() {
            return Ok(());
        }
        let mut bytes = [0u8; Self::ENTRY_SIZE];
        bytes[..8].copy_from_slice(&timestamp.to_be_bytes());
        bytes[8..].copy_from_slice(&relative.to_be_bytes());
        self.file.push(&bytes)?;
        debug_assert_eq!(self.last_entry(), TimestampOffset { timestamp, offset });
        Ok(())
    }
    /// The entry with the largest timestamp <= `target_timestamp`, or `(-1, base_offset)`.
    pub fn lookup(&self, target_timestamp: i64) -> TimestampOffset {
        match self.file.search(target_timestamp, be_i64) {
            0 => self.empty_entry(),
            n => self.entry(n - 1),
        }
    }
    /// Removes every entry with offset >= `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        let keep = if offset <= self.base_offset {
            // Every entry is >= base_offset; this also empties an unsorted (corrupt) index.
            0
        } else {
            // Offsets are non-decreasing, so the entries to keep are a prefix.
            let base_offset = self.base_offset;
            self.file
                .search(offset - 1, |e| base_offset + i64::from(be_u32(&e[8..])))
        };
        self.file.truncate_to_entries(keep);
        Ok(())
    }
    /// Removes all entries (also from a corrupt index, before a rebuild).
    pub fn reset(&mut self) -> Result<()> {
        self.truncate_to(self.base_offset)
    }
    /// Shrinks the file to exactly its entries (on segment close).
    pub fn trim_to_valid_size(&mut self) -> Result<()> {
        self.file.trim_to_valid_size()
    }
    /// Re-sizes the file to `max_index_size` again; never below the valid entries.
    pub fn resize(&mut self, max_index_size: usize) -> Result<()> {
        self.file.resize(max_index_size)
    }
    /// msync of the mapping.
    pub fn flush(&self) -> Result<()> {
        self.file.flush()
    }
    /// Entries strictly increasing in timestamp, non-decreasing offsets >= base_offset, whole
    /// entries only.
    pub fn sanity_check(&self) -> Result<()> {
        self.file.check_length()?;
        let mut previous: Option<TimestampOffset> = None;
        for n in 0..self.entries() {
            let relative = be_u32(&self.file.entry(n)[8..]);
            if relative > i32::MAX as u32 {
                return Err(self.file.corrupt(format!(
                    "entry {n} has relative offset {relative}, beyond i32::MAX"
                )));
            }
            let entry = self.entry(n);
            if let Some(prev) = previous {
                if entry.timestamp <= prev.timestamp || entry.offset < prev.offset {
                    return Err(self.file.corrupt(format!(
                        "entry {n} (timestamp {}, offset {}) does not follow entry {} \
                         (timestamp {}, offset {})",
                        entry.timestamp,
                        entry.offset,
                        n - 1,
                        prev.timestamp,
                        prev.offset
                    )));
                }
            }
            previous = Some(entry);
        }
        Ok(())
    }
    /// Unmaps and deletes the file (a file already gone is not an error).
    pub fn delete(self) -> Result<()> {
        self.file.delete()
    }
    /// Renames the file (the mapping stays valid).
    pub fn rename_to(&mut self, path: &Path) -> Result<()> {
        self.file.rename_to(path)
    }

    fn empty_entry(&self) -> TimestampOffset {
        TimestampOffset {
            timestamp: -1,
            offset: self.base_offset,
        }
    }
    fn parse(&self, bytes: &[u8]) -> TimestampOffset {
        TimestampOffset {
            timestamp: be_i64(bytes),
            offset: self.base_offset + i64::from(be_u32(&bytes[8..])),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    const BASE: i64 = 45;
    const MAX_ENTRIES: usize = 30;
    const MAX_SIZE: usize = MAX_ENTRIES * TimeIndex::ENTRY_SIZE;

    fn open(dir: &tempfile::TempDir, max_index_size: usize) -> TimeIndex {
        TimeIndex::open(&dir.path().join("timeindex"), BASE, max_index_size).unwrap()
    }

    fn to(timestamp: i64, offset: i64) -> TimestampOffset {
        TimestampOffset { timestamp, offset }
    }

    /// Appends `(i * 10, BASE + i * 10)` for i in 1..=n, the shape Kafka's tests use.
    fn fill(index: &mut TimeIndex, n: i64) {
        for i in 1..=n {
            index.maybe_append(i * 10, BASE + i * 10, false).unwrap();
        }
    }

    fn assert_invalid_argument(result: Result<()>) {
        assert!(
            matches!(result, Err(EngineError::InvalidArgument(_))),
            "expected InvalidArgument, got {result:?}"
        );
    }

    fn assert_corrupt(index: &TimeIndex) {
        let result = index.sanity_check();
        assert!(
            matches!(result, Err(EngineError::CorruptIndex { .. })),
            "expected CorruptIndex, got {result:?}"
        );
    }

    fn write_raw(path: &Path, entries: &[(i64, u32)]) {
        let bytes: Vec<u8> = entries
            .iter()
            .flat_map(|(ts, rel)| [ts.to_be_bytes().as_slice(), &rel.to_be_bytes()].concat())
            .collect();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn random_lookups_match_a_sorted_map() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, 3000 * TimeIndex::ENTRY_SIZE);
        let mut rng = StdRng::seed_from_u64(11);
        let mut model = BTreeMap::new();
        let (mut timestamp, mut offset) = (1_700_000_000_000i64, BASE);
        for _ in 0..2000 {
            timestamp += rng.random_range(1..1000);
            offset += rng.random_range(0..3);
            index.maybe_append(timestamp, offset, false).unwrap();
            model.insert(timestamp, offset);
        }
        index.sanity_check().unwrap();
        let expected = |target: i64| {
            model
                .range(..=target)
                .next_back()
                .map_or(to(-1, BASE), |(&t, &o)| to(t, o))
        };
        for &t in model.keys() {
            for target in [t - 1, t, t + 1] {
                assert_eq!(index.lookup(target), expected(target), "target {target}");
            }
        }
        for _ in 0..2000 {
            let target = rng.random_range(1_699_999_999_000..timestamp + 1000);
            assert_eq!(index.lookup(target), expected(target), "target {target}");
        }
    }

    #[test]
    fn lookup_extreme_cases() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        assert_eq!(index.lookup(100), to(-1, BASE), "empty index");
        assert_eq!(index.last_entry(), to(-1, BASE), "empty index");
        fill(&mut index, 3); // (10, 55), (20, 65), (30, 75)
        assert_eq!(index.lookup(i64::MIN), to(-1, BASE), "far below");
        assert_eq!(index.lookup(9), to(-1, BASE), "before the first entry");
        assert_eq!(index.lookup(10), to(10, BASE + 10), "exactly the first");
        assert_eq!(index.lookup(25), to(20, BASE + 20), "between entries");
        assert_eq!(index.lookup(30), to(30, BASE + 30), "exactly the last");
        assert_eq!(index.lookup(i64::MAX), to(30, BASE + 30), "after the last");
        assert_eq!(index.last_entry(), to(30, BASE + 30));
        assert_eq!(index.entry(1), to(20, BASE + 20));
    }

    #[test]
    fn maybe_append_ignores_non_increasing_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        index.maybe_append(-1, BASE, false).unwrap();
        assert_eq!(index.entries(), 0, "no timestamp is never indexed");
        index.maybe_append(100, BASE + 1, false).unwrap();
        index.maybe_append(100, BASE + 2, false).unwrap();
        index.maybe_append(50, BASE + 3, false).unwrap();
        assert_eq!(index.entries(), 1);
        assert_eq!(index.last_entry(), to(100, BASE + 1));
        index.maybe_append(101, BASE + 1, false).unwrap();
        assert_eq!(
            index.entries(),
            2,
            "the same offset with a larger timestamp is kept"
        );
        index.sanity_check().unwrap();
    }

    #[test]
    fn maybe_append_rejects_offsets_going_backwards_or_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        assert_invalid_argument(index.maybe_append(10, BASE - 1, false));
        assert_invalid_argument(index.maybe_append(10, BASE + i32::MAX as i64 + 1, false));
        index.maybe_append(10, BASE + 10, false).unwrap();
        assert_invalid_argument(index.maybe_append(20, BASE + 9, false));
        assert_invalid_argument(index.maybe_append(5, BASE + 9, false));
        assert_eq!(index.entries(), 1);
    }

    #[test]
    fn full_index_rejects_appends_unless_told_to_skip_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        fill(&mut index, MAX_ENTRIES as i64);
        assert!(index.is_full());
        assert_invalid_argument(index.maybe_append(1000, BASE + 1000, false));
        index.maybe_append(1000, BASE + 1000, true).unwrap();
        assert_eq!(index.entries(), MAX_ENTRIES, "skipped silently");
        assert_eq!(index.last_entry(), to(300, BASE + 300));
    }

    #[test]
    fn truncate_to_middle_before_first_and_past_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        fill(&mut index, 10); // offsets BASE+10, ..., BASE+100

        index.truncate_to(BASE + 1000).unwrap();
        assert_eq!(index.entries(), 10, "past the end removes nothing");

        index.truncate_to(BASE + 55).unwrap();
        assert_eq!(index.entries(), 5);
        assert_eq!(index.last_entry(), to(50, BASE + 50));
        assert_eq!(index.lookup(1000), to(50, BASE + 50));

        index.truncate_to(BASE + 50).unwrap();
        assert_eq!(index.entries(), 4, "an entry at exactly the target goes");

        index.truncate_to(BASE + 5).unwrap();
        assert_eq!(
            index.entries(),
            0,
            "before the first entry empties the index"
        );
        assert_eq!(index.last_entry(), to(-1, BASE));
        fill(&mut index, 2);
        index.sanity_check().unwrap();
    }

    #[test]
    fn truncate_removes_every_entry_sharing_the_target_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        index.maybe_append(10, BASE + 1, false).unwrap();
        index.maybe_append(20, BASE + 5, false).unwrap();
        index.maybe_append(30, BASE + 5, false).unwrap();
        index.maybe_append(40, BASE + 5, false).unwrap();
        index.maybe_append(50, BASE + 8, false).unwrap();
        index.truncate_to(BASE + 5).unwrap();
        assert_eq!(index.entries(), 1);
        assert_eq!(index.last_entry(), to(10, BASE + 1));
    }

    #[test]
    fn reopen_after_trim_preserves_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        fill(&mut index, 7);
        index.flush().unwrap();
        index.trim_to_valid_size().unwrap();
        assert_eq!(std::fs::metadata(index.path()).unwrap().len(), 7 * 12);
        drop(index);

        let mut index = open(&dir, MAX_SIZE);
        assert_eq!(index.entries(), 7);
        assert_eq!(index.max_entries(), MAX_ENTRIES);
        index.sanity_check().unwrap();
        assert_eq!(index.last_entry(), to(70, BASE + 70));
        assert_eq!(index.lookup(35), to(30, BASE + 30));
        index.maybe_append(80, BASE + 80, false).unwrap();
        assert_eq!(index.entries(), 8);
    }

    #[test]
    fn untrimmed_preallocated_file_fails_sanity_check_until_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        fill(&mut index, 4);
        index.flush().unwrap();
        drop(index); // a crash: never trimmed

        let mut index = open(&dir, MAX_SIZE);
        assert_eq!(
            index.entries(),
            MAX_ENTRIES,
            "the zero tail counts as entries"
        );
        assert_corrupt(&index);
        index.reset().unwrap();
        index.sanity_check().unwrap();
        fill(&mut index, 4);
        index.sanity_check().unwrap();

        let dir = tempfile::tempdir().unwrap();
        drop(open(&dir, MAX_SIZE));
        assert_corrupt(&open(&dir, MAX_SIZE));
    }

    #[test]
    fn sanity_check_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timeindex");
        let check = |entries: &[(i64, u32)]| {
            write_raw(&path, entries);
            TimeIndex::open(&path, BASE, 0).unwrap()
        };
        check(&[(10, 1), (20, 1), (30, 4)]).sanity_check().unwrap();
        check(&[(0, 0)]).sanity_check().unwrap();
        assert_corrupt(&check(&[(10, 1), (10, 2)]));
        assert_corrupt(&check(&[(20, 1), (10, 2)]));
        assert_corrupt(&check(&[(10, 5), (20, 4)]));
        assert_corrupt(&check(&[(10, u32::MAX)]));

        write_raw(&path, &[(10, 1), (20, 2)]);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, &[1; 11]).unwrap();
        let index = TimeIndex::open(&path, BASE, 0).unwrap();
        assert_eq!(index.entries(), 2, "the partial entry is dropped");
        assert_corrupt(&index);
    }

    #[test]
    fn resize_and_trim_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        fill(&mut index, 5);
        index.trim_to_valid_size().unwrap();
        assert!(index.is_full());
        index.maybe_append(60, BASE + 60, true).unwrap();
        assert_eq!(index.entries(), 5);
        index.resize(MAX_SIZE + 5).unwrap();
        assert_eq!(index.max_entries(), MAX_ENTRIES);
        assert_eq!(
            std::fs::metadata(index.path()).unwrap().len(),
            MAX_SIZE as u64
        );
        index.maybe_append(60, BASE + 60, false).unwrap();
        assert_eq!(index.lookup(65), to(60, BASE + 60));
        index.sanity_check().unwrap();
    }

    #[test]
    fn rename_keeps_the_mapping_and_delete_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        fill(&mut index, 2);
        let new_path = dir.path().join("timeindex.swap");
        index.rename_to(&new_path).unwrap();
        assert!(!dir.path().join("timeindex").exists());
        index.maybe_append(30, BASE + 30, false).unwrap();
        assert_eq!(index.last_entry(), to(30, BASE + 30));
        index.delete().unwrap();
        assert!(!new_path.exists());
    }
}
