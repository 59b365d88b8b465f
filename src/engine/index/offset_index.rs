//! The `.index` file of a segment.

use std::path::Path;

use super::{be_u32, relative_offset, IndexFile};
use crate::engine::{EngineError, Result};

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
/// Sparseness: the segment adds an entry for the first batch written after at least
/// `index.interval.bytes` of log since the previous entry, so a lookup lands at most about that
/// many bytes before the wanted batch and the reader scans batch headers from there. The
/// relative offset fits in 0..=`i32::MAX`, as in Kafka; an offset beyond that rolls the segment.
///
/// Preallocation: while its segment is active the file is sized to `segment.index.bytes` and
/// mapped once, so appends are plain stores; the entry count lives only in memory. A closed
/// segment's index is trimmed to its entries, so a reopened file's length gives its entry count.
/// After a crash an untrimmed file reopens with its unused zero entries counted as entries; they
/// are not increasing, so `sanity_check` fails and the segment rebuilds the index (a file of a
/// single zero entry is the valid entry `(base_offset, 0)`). Entries removed by
/// [`OffsetIndex::truncate_to`] are zeroed for the same reason.
///
/// Thread-safety: `&mut self` for every change; the owning segment serializes access. The type
/// is `Send + Sync`; lookups take `&self` and may run concurrently with each other.
#[derive(Debug)]
pub struct OffsetIndex {
    base_offset: i64,
    file: IndexFile,
}

impl OffsetIndex {
    pub const ENTRY_SIZE: usize = 8;

    /// Opens (creating if absent) the index at `path`. An existing file's entry count is its
    /// length / 8 (a trailing partial entry is dropped). The file is then sized to
    /// `max_index_size` (rounded down to a whole entry) so appends need no remap; call
    /// [`Self::trim_to_valid_size`] when the segment closes.
    pub fn open(path: &Path, base_offset: i64, max_index_size: usize) -> Result<Self> {
        Ok(OffsetIndex {
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
    /// Number of entries.
    pub fn entries(&self) -> usize {
        self.file.entries()
    }
    /// Largest number of entries the preallocated file can hold.
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
    /// The offset of the last entry, or `base_offset` when empty.
    pub fn last_offset(&self) -> i64 {
        match self.entries() {
            0 => self.base_offset,
            n => self.entry(n - 1).offset,
        }
    }
    /// The n-th entry (absolute offset). Panics if `n >= entries()`.
    pub fn entry(&self, n: usize) -> OffsetPosition {
        self.parse(self.file.entry(n))
    }
    /// Whether `offset` can be stored relative to this index's base offset (if not, the segment
    /// must roll before taking it).
    pub fn can_append_offset(&self, offset: i64) -> bool {
        relative_offset(self.path(), self.base_offset, offset).is_ok()
    }
    /// Appends an entry. `offset` must be greater than the last entry's and fit in a relative u32;
    /// a full index or a non-increasing offset is an `InvalidArgument` error. `position` must
    /// also be greater than the last entry's (each entry is a different batch).
    pub fn append(&mut self, offset: i64, position: u32) -> Result<()> {
        if self.is_full() {
            return Err(EngineError::InvalidArgument(format!(
                "offset index {} is full ({} entries); cannot append offset {offset}",
                self.path().display(),
                self.entries()
            )));
        }
        if let Some(last) = self.entries().checked_sub(1).map(|n| self.entry(n)) {
            if offset <= last.offset || position <= last.position {
                return Err(EngineError::InvalidArgument(format!(
                    "entry (offset {offset}, position {position}) is not after the last entry \
                     (offset {}, position {}) of offset index {}",
                    last.offset,
                    last.position,
                    self.path().display()
                )));
            }
        }
        let relative = relative_offset(self.path(), self.base_offset, offset)?;
        let mut bytes = [0u8; Self::ENTRY_SIZE];
        bytes[..4].copy_from_slice(&relative.to_be_bytes());
        bytes[4..].copy_from_slice(&position.to_be_bytes());
        self.file.push(&bytes)?;
        debug_assert_eq!(
            self.entry(self.entries() - 1),
            OffsetPosition { offset, position }
        );
        Ok(())
    }
    /// The entry with the largest offset <= `target_offset`, or `(base_offset, 0)` if none.
    pub fn lookup(&self, target_offset: i64) -> OffsetPosition {
        match self.slots_at_or_below(target_offset) {
            0 => OffsetPosition {
                offset: self.base_offset,
                position: 0,
            },
            n => self.entry(n - 1),
        }
    }
    /// The first entry whose position is at least `start_position + fetch_size`, if any: an
    /// upper bound on the bytes a read of `fetch_size` bytes from `start_position` needs.
    pub fn fetch_upper_bound(
        &self,
        start_position: u32,
        fetch_size: u32,
    ) -> Option<OffsetPosition> {
        let limit = u64::from(start_position) + u64::from(fetch_size);
        let slot = self
            .file
            .search(i64::try_from(limit).unwrap_or(i64::MAX) - 1, |e| {
                i64::from(be_u32(&e[4..]))
            });
        (slot < self.entries()).then(|| self.entry(slot))
    }
    /// Removes every entry with offset >= `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        let keep = if offset <= self.base_offset {
            // Every entry is >= base_offset; this also empties an unsorted (corrupt) index.
            0
        } else {
            self.slots_at_or_below(offset - 1)
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
    /// Re-sizes the file to `max_index_size` again (a closed segment reopened as active).
    /// Never drops entries: the size is at least the valid entries.
    pub fn resize(&mut self, max_index_size: usize) -> Result<()> {
        self.file.resize(max_index_size)
    }
    /// msync of the mapping.
    pub fn flush(&self) -> Result<()> {
        self.file.flush()
    }
    /// Checks the invariants: entries strictly increasing in offset and position, every offset
    /// >= base_offset, and the file length a whole number of entries.
    pub fn sanity_check(&self) -> Result<()> {
        self.file.check_length()?;
        let mut previous: Option<OffsetPosition> = None;
        for n in 0..self.entries() {
            let relative = be_u32(self.file.entry(n));
            if relative > i32::MAX as u32 {
                return Err(self.file.corrupt(format!(
                    "entry {n} has relative offset {relative}, beyond i32::MAX"
                )));
            }
            let entry = self.entry(n);
            if let Some(prev) = previous {
                if entry.offset <= prev.offset || entry.position <= prev.position {
                    return Err(self.file.corrupt(format!(
                        "entry {n} (offset {}, position {}) is not after entry {} (offset {}, \
                         position {})",
                        entry.offset,
                        entry.position,
                        n - 1,
                        prev.offset,
                        prev.position
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

    /// How many leading entries have offset <= `target_offset`.
    fn slots_at_or_below(&self, target_offset: i64) -> usize {
        let base_offset = self.base_offset;
        self.file
            .search(target_offset, |e| base_offset + i64::from(be_u32(e)))
    }
    fn parse(&self, bytes: &[u8]) -> OffsetPosition {
        OffsetPosition {
            offset: self.base_offset + i64::from(be_u32(bytes)),
            position: be_u32(&bytes[4..]),
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
    const MAX_SIZE: usize = 30 * OffsetIndex::ENTRY_SIZE;

    fn open(dir: &tempfile::TempDir, max_index_size: usize) -> OffsetIndex {
        OffsetIndex::open(&dir.path().join("index"), BASE, max_index_size).unwrap()
    }

    fn op(offset: i64, position: u32) -> OffsetPosition {
        OffsetPosition { offset, position }
    }

    /// Appends `(BASE + i * 2 + 1, i * 10)` for i in 0..n, the shape Kafka's tests use.
    fn fill(index: &mut OffsetIndex, n: u32) {
        for i in 0..n {
            index.append(BASE + i as i64 * 2 + 1, i * 10).unwrap();
        }
    }

    fn assert_invalid_argument(result: Result<()>) {
        assert!(
            matches!(result, Err(EngineError::InvalidArgument(_))),
            "expected InvalidArgument, got {result:?}"
        );
    }

    fn assert_corrupt(index: &OffsetIndex) {
        let result = index.sanity_check();
        assert!(
            matches!(result, Err(EngineError::CorruptIndex { .. })),
            "expected CorruptIndex, got {result:?}"
        );
    }

    #[test]
    fn random_lookups_match_a_sorted_map() {
        let dir = tempfile::tempdir().unwrap();
        // More entries than the warm section holds, so both search paths run.
        let mut index = open(&dir, 5000 * OffsetIndex::ENTRY_SIZE);
        let mut rng = StdRng::seed_from_u64(7);
        let mut model = BTreeMap::new();
        let (mut offset, mut position) = (BASE, 0u32);
        for _ in 0..3000 {
            offset += rng.random_range(1..20);
            position += rng.random_range(1..5000);
            index.append(offset, position).unwrap();
            model.insert(offset, position);
        }
        index.sanity_check().unwrap();
        let expected = |target: i64| {
            model
                .range(..=target)
                .next_back()
                .map_or(op(BASE, 0), |(&o, &p)| op(o, p))
        };
        for &o in model.keys() {
            for target in [o - 1, o, o + 1] {
                assert_eq!(index.lookup(target), expected(target), "target {target}");
            }
        }
        for _ in 0..2000 {
            let target = rng.random_range(BASE - 10..offset + 10);
            assert_eq!(index.lookup(target), expected(target), "target {target}");
        }
    }

    #[test]
    fn lookup_extreme_cases() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        assert_eq!(index.lookup(BASE), op(BASE, 0), "empty index");
        assert_eq!(index.lookup(i64::MAX), op(BASE, 0), "empty index");
        index.append(BASE + 5, 100).unwrap();
        index.append(BASE + 9, 250).unwrap();
        assert_eq!(index.lookup(BASE), op(BASE, 0), "before the first entry");
        assert_eq!(
            index.lookup(BASE + 4),
            op(BASE, 0),
            "before the first entry"
        );
        assert_eq!(index.lookup(i64::MIN), op(BASE, 0), "far below");
        assert_eq!(
            index.lookup(BASE + 5),
            op(BASE + 5, 100),
            "exactly the first"
        );
        assert_eq!(index.lookup(BASE + 8), op(BASE + 5, 100), "between entries");
        assert_eq!(
            index.lookup(BASE + 9),
            op(BASE + 9, 250),
            "exactly the last"
        );
        assert_eq!(index.lookup(i64::MAX), op(BASE + 9, 250), "after the last");
    }

    #[test]
    fn entries_are_absolute_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        fill(&mut index, 10);
        assert_eq!(index.entries(), 10);
        for i in 0..10u32 {
            assert_eq!(index.entry(i as usize), op(BASE + i as i64 * 2 + 1, i * 10));
        }
        assert_eq!(index.last_offset(), BASE + 19);
    }

    #[test]
    #[should_panic(expected = "entry 1 requested")]
    fn entry_past_the_end_panics() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        index.append(BASE, 0).unwrap();
        index.entry(1);
    }

    #[test]
    fn empty_index_reports_base_offset_as_last() {
        let dir = tempfile::tempdir().unwrap();
        let index = open(&dir, MAX_SIZE);
        assert_eq!(index.entries(), 0);
        assert_eq!(index.last_offset(), BASE);
        assert_eq!(index.max_entries(), 30);
        index.sanity_check().unwrap();
    }

    #[test]
    fn append_out_of_order_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        index.append(BASE + 51, 100).unwrap();
        assert_invalid_argument(index.append(BASE + 51, 200));
        assert_invalid_argument(index.append(BASE + 50, 200));
        assert_invalid_argument(index.append(BASE + 52, 100));
        assert_invalid_argument(index.append(BASE + 52, 99));
        assert_eq!(
            index.entries(),
            1,
            "rejected appends leave the index unchanged"
        );
        index.append(BASE + 52, 101).unwrap();
        index.sanity_check().unwrap();
    }

    #[test]
    fn offsets_outside_the_relative_range_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        assert!(!index.can_append_offset(BASE - 1));
        assert_invalid_argument(index.append(BASE - 1, 0));
        let last_fitting = BASE + i32::MAX as i64;
        assert!(index.can_append_offset(last_fitting));
        assert!(!index.can_append_offset(last_fitting + 1));
        assert_invalid_argument(index.append(last_fitting + 1, 0));
        index.append(BASE, 0).unwrap();
        index.append(last_fitting, 10).unwrap();
        assert_eq!(index.lookup(i64::MAX), op(last_fitting, 10));
        index.sanity_check().unwrap();
    }

    #[test]
    fn append_to_full_index_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        fill(&mut index, 30);
        assert!(index.is_full());
        assert_invalid_argument(index.append(BASE + 1000, 10_000));
        assert_eq!(index.entries(), 30);
    }

    #[test]
    fn max_index_size_is_rounded_down_to_whole_entries() {
        let dir = tempfile::tempdir().unwrap();
        let index = open(&dir, 8 * 3 + 7);
        assert_eq!(index.max_entries(), 3);
        assert_eq!(std::fs::metadata(index.path()).unwrap().len(), 24);
    }

    #[test]
    fn truncate_to_middle_before_first_and_past_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        fill(&mut index, 10); // offsets BASE+1, BASE+3, ..., BASE+19

        index.truncate_to(BASE + 100).unwrap();
        assert_eq!(index.entries(), 10, "past the end removes nothing");

        index.truncate_to(BASE + 12).unwrap();
        assert_eq!(index.entries(), 6, "removes offsets >= target only");
        assert_eq!(index.last_offset(), BASE + 11);
        assert_eq!(index.lookup(BASE + 19), op(BASE + 11, 50));

        index.truncate_to(BASE + 11).unwrap();
        assert_eq!(index.entries(), 5, "an entry at exactly the target goes");
        assert_eq!(index.last_offset(), BASE + 9);

        index.truncate_to(BASE).unwrap();
        assert_eq!(
            index.entries(),
            0,
            "before the first entry empties the index"
        );
        assert_eq!(index.lookup(BASE + 19), op(BASE, 0));

        fill(&mut index, 3);
        index.reset().unwrap();
        assert_eq!(index.entries(), 0);
        index.append(BASE + 2, 7).unwrap();
        index.sanity_check().unwrap();
    }

    #[test]
    fn reopen_after_trim_preserves_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        fill(&mut index, 7);
        index.flush().unwrap();
        index.trim_to_valid_size().unwrap();
        assert_eq!(std::fs::metadata(index.path()).unwrap().len(), 7 * 8);
        assert!(index.is_full(), "a trimmed index has no room");
        drop(index);

        let mut index = open(&dir, MAX_SIZE);
        assert_eq!(index.entries(), 7);
        assert_eq!(index.max_entries(), 30, "reopened with room to append");
        assert_eq!(
            std::fs::metadata(index.path()).unwrap().len(),
            MAX_SIZE as u64
        );
        index.sanity_check().unwrap();
        assert_eq!(index.lookup(BASE + 6), op(BASE + 5, 20));
        assert_eq!(index.last_offset(), BASE + 13);
        index.append(BASE + 20, 1000).unwrap();
        assert_eq!(index.entries(), 8);
    }

    #[test]
    fn reopen_with_smaller_max_size_keeps_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        fill(&mut index, 10);
        index.trim_to_valid_size().unwrap();
        drop(index);
        let index = open(&dir, 4 * 8);
        assert_eq!(index.entries(), 10);
        assert!(index.is_full());
        index.sanity_check().unwrap();
    }

    #[test]
    fn untrimmed_preallocated_file_fails_sanity_check_until_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        fill(&mut index, 4);
        index.flush().unwrap();
        drop(index); // a crash: never trimmed

        let mut index = open(&dir, MAX_SIZE);
        assert_eq!(index.entries(), 30, "the zero tail counts as entries");
        assert_corrupt(&index);

        index.reset().unwrap();
        assert_eq!(index.entries(), 0);
        index.sanity_check().unwrap();
        fill(&mut index, 4);
        index.sanity_check().unwrap();
    }

    #[test]
    fn untrimmed_empty_preallocated_file_fails_sanity_check() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(&dir, MAX_SIZE));
        let index = open(&dir, MAX_SIZE);
        assert_eq!(index.entries(), 30);
        assert_corrupt(&index);
    }

    #[test]
    fn single_zero_entry_is_the_base_offset_at_position_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        std::fs::write(&path, [0u8; 8]).unwrap();
        let index = OffsetIndex::open(&path, BASE, MAX_SIZE).unwrap();
        assert_eq!(index.entries(), 1);
        assert_eq!(index.entry(0), op(BASE, 0));
        index.sanity_check().unwrap();
    }

    #[test]
    fn truncated_entries_do_not_come_back_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, 10 * 8);
        fill(&mut index, 10);
        index.truncate_to(BASE + 10).unwrap();
        index.flush().unwrap();
        drop(index); // a crash: never trimmed

        let index = open(&dir, 10 * 8);
        assert_eq!(index.entries(), 10);
        assert_corrupt(&index);
    }

    #[test]
    fn sanity_check_rejects_partial_trailing_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let mut bytes = Vec::new();
        for (rel, pos) in [(1u32, 0u32), (3, 40)] {
            bytes.extend_from_slice(&rel.to_be_bytes());
            bytes.extend_from_slice(&pos.to_be_bytes());
        }
        bytes.extend_from_slice(&[0, 0, 0]);
        std::fs::write(&path, &bytes).unwrap();

        let mut index = OffsetIndex::open(&path, BASE, 0).unwrap();
        assert_eq!(index.entries(), 2, "the partial entry is dropped");
        assert_eq!(index.entry(1), op(BASE + 3, 40));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16);
        assert_corrupt(&index);

        index.reset().unwrap();
        index.sanity_check().unwrap();
    }

    #[test]
    fn sanity_check_rejects_unsorted_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let write = |entries: &[(u32, u32)]| {
            let bytes: Vec<u8> = entries
                .iter()
                .flat_map(|(rel, pos)| [rel.to_be_bytes(), pos.to_be_bytes()].concat())
                .collect();
            std::fs::write(&path, bytes).unwrap();
            OffsetIndex::open(&path, BASE, 0).unwrap()
        };
        write(&[(1, 0), (2, 10), (3, 20)]).sanity_check().unwrap();
        assert_corrupt(&write(&[(1, 0), (3, 10), (2, 20)]));
        assert_corrupt(&write(&[(1, 0), (1, 10)]));
        assert_corrupt(&write(&[(1, 10), (2, 10)]));
        assert_corrupt(&write(&[(1, 10), (2, 5)]));
        assert_corrupt(&write(&[(i32::MAX as u32 + 1, 0)]));
    }

    #[test]
    fn resize_and_trim_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        fill(&mut index, 5);
        let len = |index: &OffsetIndex| std::fs::metadata(index.path()).unwrap().len();

        index.trim_to_valid_size().unwrap();
        assert_eq!((len(&index), index.max_entries()), (40, 5));
        index.resize(MAX_SIZE * 2).unwrap();
        assert_eq!((len(&index), index.max_entries()), (480, 60));
        index.resize(8).unwrap();
        assert_eq!(index.max_entries(), 5, "never below the valid entries");
        index.resize(MAX_SIZE).unwrap();

        for i in 5..30u32 {
            index.append(BASE + i as i64 * 2 + 1, i * 10).unwrap();
        }
        assert!(index.is_full());
        index.trim_to_valid_size().unwrap();
        assert_eq!(len(&index), MAX_SIZE as u64);
        index.sanity_check().unwrap();
        assert_eq!(index.lookup(BASE + 58), op(BASE + 57, 280));

        index.reset().unwrap();
        index.trim_to_valid_size().unwrap();
        assert_eq!((len(&index), index.max_entries()), (0, 0));
        assert_eq!(index.lookup(BASE + 10), op(BASE, 0));
        index.resize(MAX_SIZE).unwrap();
        index.append(BASE, 0).unwrap();
        index.sanity_check().unwrap();
    }

    #[test]
    fn fetch_upper_bound_is_the_first_entry_at_or_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        assert_eq!(index.fetch_upper_bound(0, 100), None);
        fill(&mut index, 10); // positions 0, 10, ..., 90
        assert_eq!(index.fetch_upper_bound(0, 30), Some(op(BASE + 7, 30)));
        assert_eq!(index.fetch_upper_bound(5, 30), Some(op(BASE + 9, 40)));
        assert_eq!(index.fetch_upper_bound(0, 0), Some(op(BASE + 1, 0)));
        assert_eq!(index.fetch_upper_bound(60, 31), None);
        assert_eq!(index.fetch_upper_bound(u32::MAX, u32::MAX), None);
    }

    #[test]
    fn rename_keeps_the_mapping_and_delete_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = open(&dir, MAX_SIZE);
        fill(&mut index, 3);
        let new_path = dir.path().join("index.deleted");
        index.rename_to(&new_path).unwrap();
        assert_eq!(index.path(), new_path);
        assert!(!dir.path().join("index").exists());
        index.append(BASE + 100, 1000).unwrap();
        assert_eq!(index.lookup(BASE + 100), op(BASE + 100, 1000));
        index.trim_to_valid_size().unwrap();
        assert_eq!(std::fs::metadata(&new_path).unwrap().len(), 32);
        index.delete().unwrap();
        assert!(!new_path.exists());
    }
}
