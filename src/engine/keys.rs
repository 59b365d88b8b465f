//! The key index behind `keys/`: each live key of a partition and the offset of its latest value.
//!
//! A [`KeyIndex`] is the state behind a partition's `keys/` directory: for every key whose latest
//! record is a value (not a tombstone), the offset of that record, plus [`KeyIndex::next_offset`],
//! the first offset not yet applied. The owning log feeds it every record in offset order
//! ([`KeyIndex::apply`]), skips it over offsets that hold no record ([`KeyIndex::advance_to`]) and
//! drops keys whose latest value retention deleted ([`KeyIndex::prune_below`]).
//!
//! # Memory
//!
//! Keys live in a `HashMap<Box<[u8]>, i64>` (std's hashbrown table, SipHash, so user-chosen keys
//! cannot force collisions). Per live key that costs:
//!
//! - a 24-byte bucket: the key's fat pointer (`Box<[u8]>`, 16 bytes) and the offset (`i64`, 8);
//! - one control byte per bucket;
//! - buckets are a power of two filled to at most 7/8, so 1.14 to 2.3 buckets per key, about 1.6
//!   on average: about 40 bytes of table per key (25 bytes per bucket);
//! - the key's own allocation: its length plus about 8 bytes of allocator header, rounded up to
//!   16, at least 32 bytes (an empty key allocates nothing).
//!
//! So **about 56 bytes plus the key's length per live key** (a million 20-byte keys: about
//! 72 MB). [`KeyIndex::memory_bytes`] is this estimate: 40 bytes of table per live key plus each
//! key's estimated allocation. Right after a table grows it uses up to 57 bytes of table per key;
//! after many tombstones it keeps its buckets until it is next resized ([`KeyIndex::prune_below`]
//! shrinks a table that has become mostly empty).
//!
//! # Snapshot
//!
//! At a clean close the owning log writes the index to `<partition dir>/lmqfs-keys-snapshot`
//! ([`KEYS_SNAPSHOT_FILE`]) so the next open need not re-read the whole log. All integers are
//! big-endian, as in Kafka's formats:
//!
//! ```text
//! offset  size  field
//! 0       4     magic "LMQK"
//! 4       4     version: u32 = 1
//! 8       8     next_offset: i64
//! 16      8     entry count: u64
//! 24      ...   entries, in strictly ascending bytewise key order, each:
//!                 key length: u32
//!                 key bytes
//!                 offset: i64 (below next_offset)
//! end-4   4     CRC-32C (Castagnoli): u32, of every byte before it
//! ```
//!
//! The checksum covers the whole file but itself: header and entries. The file is replaced
//! atomically (write `.tmp`, fsync, rename, fsync the directory), so it is either the old or the
//! new snapshot. A reader rejects, as [`EngineError::Corrupt`] with the byte position of the
//! problem, anything that is not exactly this layout: a wrong magic or version, a bad checksum, a
//! length that overruns the file, trailing bytes, keys out of order or repeated, an offset not
//! below `next_offset`. Lengths read from the file are checked against the file's size before
//! anything is allocated for them, so reading costs memory in proportion to the file's size.
//! [`KeyIndex::snapshot_next_offset`] reads only the first 16 bytes (magic, version, next offset)
//! and does not verify the checksum.
//!
//! A snapshot is the state after applying the log's prefix `[.., next_offset)`: it stays valid
//! while the log is not truncated below `next_offset` (records after it are replayed on open). An
//! unclean recovery may truncate the log, so the owning log removes the snapshot
//! ([`KeyIndex::remove_snapshot`]) after one and rebuilds the index from the log.
//! Retention does not invalidate a snapshot: keys whose latest value has since been deleted
//! are dropped by [`KeyIndex::prune_below`] with the current log start offset.
//!
//! Thread-safety: none inside. A `KeyIndex` belongs to one partition's [`crate::engine::Log`],
//! which serializes every access (and every snapshot file operation) under its lock.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::checkpoint::{fsync_dir, write_atomically};
use super::{EngineError, Result};

/// File name of the snapshot written at a clean close.
pub const KEYS_SNAPSHOT_FILE: &str = "lmqfs-keys-snapshot";

/// First bytes of a snapshot.
const MAGIC: &[u8; 4] = b"LMQK";
/// The snapshot format version this code writes and reads.
const VERSION: u32 = 1;
/// Bytes before the entry count: magic, version, next offset (all `snapshot_next_offset` reads).
const SHORT_HEADER_BYTES: usize = 16;
/// Bytes before the first entry: magic, version, next offset, entry count.
const HEADER_BYTES: usize = 24;
/// Bytes of the trailing CRC-32C.
const CRC_BYTES: usize = 4;
/// Fixed bytes of one entry besides its key: key length (u32) and offset (i64).
const ENTRY_FIXED_BYTES: usize = 4 + 8;

/// Bytes of one table bucket: the key's `Box<[u8]>` (pointer + length) and the `i64` offset.
const BUCKET_BYTES: usize = std::mem::size_of::<(Box<[u8]>, i64)>();
/// Control bytes per bucket in hashbrown.
const CONTROL_BYTES_PER_BUCKET: usize = 1;
/// Table bytes per live key: hashbrown doubles its power-of-two bucket count when 7/8 full, so a
/// table holds 1.14 to 2.3 buckets per key, about 1.6 on average (16/7 * ln 2); 25 * 1.6 = 40.
const TABLE_BYTES_PER_KEY: usize = (BUCKET_BYTES + CONTROL_BYTES_PER_BUCKET) * 8 / 5;

/// Live keys of one partition -> offset of their latest (non-tombstone) record.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyIndex {
    /// Live key -> offset of its latest value.
    map: HashMap<Box<[u8]>, i64>,
    /// The first offset not yet applied.
    next_offset: i64,
    /// Estimated heap bytes of the keys' own allocations (see [`key_allocation_bytes`]).
    key_heap_bytes: usize,
}

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys themselves could be millions; show the shape only.
        f.debug_struct("KeyIndex")
            .field("next_offset", &self.next_offset)
            .field("len", &self.map.len())
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

impl KeyIndex {
    /// An empty index that has applied nothing below `start_offset`.
    pub fn new(start_offset: i64) -> KeyIndex {
        KeyIndex {
            map: HashMap::new(),
            next_offset: start_offset,
            key_heap_bytes: 0,
        }
    }

    /// The first offset not yet applied.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Applies the record at `offset` (offsets strictly increasing across calls). A keyless
    /// record changes nothing but the next offset; a tombstone removes its key; any other
    /// record makes `offset` its key's latest.
    pub fn apply(&mut self, offset: i64, key: Option<&[u8]>, tombstone: bool) {
        debug_assert!(
            offset >= self.next_offset,
            "key index applied offset {offset} below its next offset {}",
            self.next_offset
        );
        self.next_offset = self.next_offset.max(offset.saturating_add(1));
        let Some(key) = key else {
            return;
        };
        if tombstone {
            if self.map.remove(key).is_some() {
                self.key_heap_bytes -= key_allocation_bytes(key.len());
            }
        } else if let Some(latest) = self.map.get_mut(key) {
            *latest = offset;
        } else {
            self.map.insert(Box::from(key), offset);
            self.key_heap_bytes += key_allocation_bytes(key.len());
        }
    }

    /// Moves the next offset forward to `next_offset` (offsets with no record: compaction gaps,
    /// the tail of a batch).
    pub fn advance_to(&mut self, next_offset: i64) {
        self.next_offset = self.next_offset.max(next_offset);
    }

    /// The offset of `key`'s latest value, if the key is live.
    pub fn get(&self, key: &[u8]) -> Option<i64> {
        self.map.get(key).copied()
    }

    /// Forgets keys whose latest value is below `log_start_offset` (retention removed it).
    pub fn prune_below(&mut self, log_start_offset: i64) {
        let mut freed = 0;
        self.map.retain(|key, offset| {
            let keep = *offset >= log_start_offset;
            if !keep {
                freed += key_allocation_bytes(key.len());
            }
            keep
        });
        self.key_heap_bytes -= freed;
        // Retention can empty most of the table at once; give the memory back then.
        if self.map.capacity() > 4 * self.map.len().max(16) {
            self.map.shrink_to_fit();
        }
    }

    /// Live keys, sorted bytewise.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = self.map.keys().map(|k| k.to_vec()).collect();
        keys.sort_unstable();
        keys
    }

    /// The number of live keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Estimated heap bytes in use (documented per-key cost times keys, plus key bytes).
    pub fn memory_bytes(&self) -> usize {
        self.map.len() * TABLE_BYTES_PER_KEY + self.key_heap_bytes
    }

    /// Writes the index to `dir/KEYS_SNAPSHOT_FILE` atomically (tmp, fsync, rename, fsync dir).
    pub fn write_snapshot(&self, dir: &Path) -> Result<()> {
        let path = dir.join(KEYS_SNAPSHOT_FILE);
        let mut entries: Vec<(&[u8], i64)> =
            self.map.iter().map(|(k, &off)| (&k[..], off)).collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));

        let body: usize = entries
            .iter()
            .map(|(k, _)| ENTRY_FIXED_BYTES + k.len())
            .sum();
        let mut bytes = Vec::with_capacity(HEADER_BYTES + body + CRC_BYTES);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_be_bytes());
        bytes.extend_from_slice(&self.next_offset.to_be_bytes());
        bytes.extend_from_slice(&(entries.len() as u64).to_be_bytes());
        for (key, offset) in entries {
            // Record keys are at most i32::MAX bytes long (Kafka's varint length), so this
            // cannot happen for keys that came from a log.
            if key.len() > u32::MAX as usize {
                return Err(EngineError::InvalidArgument(format!(
                    "key of {} bytes is too long for the key snapshot {}",
                    key.len(),
                    path.display()
                )));
            }
            bytes.extend_from_slice(&(key.len() as u32).to_be_bytes());
            bytes.extend_from_slice(key);
            bytes.extend_from_slice(&offset.to_be_bytes());
        }
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        write_atomically(&path, &bytes)
    }

    /// Reads the snapshot: `Ok(None)` when there is none; a snapshot that fails its checksum or
    /// does not parse is reported as `Err(Corrupt)`.
    pub fn read_snapshot(dir: &Path) -> Result<Option<KeyIndex>> {
        let path = dir.join(KEYS_SNAPSHOT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(EngineError::io(&path, e)),
        };
        parse_snapshot(&path, &bytes).map(Some)
    }

    /// The snapshot's next offset from its header alone (a few bytes read), `None` when absent
    /// or unreadable.
    pub fn snapshot_next_offset(dir: &Path) -> Option<i64> {
        let path = dir.join(KEYS_SNAPSHOT_FILE);
        let mut header = [0u8; SHORT_HEADER_BYTES];
        File::open(path).ok()?.read_exact(&mut header).ok()?;
        let (magic, rest) = header.split_first_chunk::<4>()?;
        let (version, rest) = rest.split_first_chunk::<4>()?;
        let (next_offset, _) = rest.split_first_chunk::<8>()?;
        if magic != MAGIC || u32::from_be_bytes(*version) != VERSION {
            return None;
        }
        Some(i64::from_be_bytes(*next_offset))
    }

    /// Removes the snapshot if present (durably).
    pub fn remove_snapshot(dir: &Path) -> Result<()> {
        let path = dir.join(KEYS_SNAPSHOT_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EngineError::io(&path, e)),
        }
        // Also when it was already gone: an earlier removal may not have been made durable.
        fsync_dir(dir)
    }
}

/// Estimated heap bytes of one key's `Box<[u8]>` allocation: nothing for an empty key, else its
/// length plus an 8-byte allocator header rounded up to 16, at least 32 (glibc's malloc chunks;
/// other size-class allocators are close).
fn key_allocation_bytes(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len.saturating_add(8).next_multiple_of(16).max(32)
    }
}

/// Parses a whole snapshot file (see the module docs for the layout).
fn parse_snapshot(path: &Path, bytes: &[u8]) -> Result<KeyIndex> {
    let corrupt = |position: usize, reason: String| EngineError::Corrupt {
        path: path.to_path_buf(),
        position: position as u64,
        reason,
    };
    let Some((body, stored_crc)) = bytes
        .split_last_chunk::<CRC_BYTES>()
        .filter(|(body, _)| body.len() >= HEADER_BYTES)
    else {
        return Err(corrupt(
            bytes.len(),
            format!(
                "key snapshot is {} bytes, shorter than its {} bytes of header and checksum",
                bytes.len(),
                HEADER_BYTES + CRC_BYTES
            ),
        ));
    };
    let mut reader = Reader {
        bytes: body,
        position: 0,
        path,
    };

    let magic = reader.take(MAGIC.len(), "magic")?;
    if magic != MAGIC {
        return Err(corrupt(
            0,
            format!("bad magic {magic:02x?}, expected \"LMQK\""),
        ));
    }
    let version = reader.u32("version")?;
    if version != VERSION {
        return Err(corrupt(
            4,
            format!("unsupported key snapshot version {version}, expected {VERSION}"),
        ));
    }
    let stored_crc = u32::from_be_bytes(*stored_crc);
    let computed_crc = crc32c::crc32c(body);
    if stored_crc != computed_crc {
        return Err(corrupt(
            body.len(),
            format!(
                "checksum mismatch: stored CRC-32C {stored_crc:#010x}, \
                 computed {computed_crc:#010x}"
            ),
        ));
    }

    let next_offset = reader.i64("next offset")?;
    let count_at = reader.position;
    let count = reader.u64("entry count")?;
    // Every entry takes at least ENTRY_FIXED_BYTES, so the file bounds the count before anything
    // is allocated for it.
    let max_count = (reader.remaining() / ENTRY_FIXED_BYTES) as u64;
    if count > max_count {
        return Err(corrupt(
            count_at,
            format!(
                "entry count {count} does not fit in the {} bytes that follow",
                reader.remaining()
            ),
        ));
    }

    let mut map = HashMap::with_capacity(count as usize);
    let mut key_heap_bytes = 0;
    let mut previous: Option<&[u8]> = None;
    for index in 0..count {
        let entry_at = reader.position;
        let key_len = reader.u32("key length")? as usize;
        let key = reader.take(key_len, "key")?;
        if let Some(previous) = previous {
            if key <= previous {
                return Err(corrupt(
                    entry_at,
                    format!("entry {index}: key is not after the previous key in bytewise order"),
                ));
            }
        }
        previous = Some(key);
        let offset_at = reader.position;
        let offset = reader.i64("offset")?;
        if offset >= next_offset {
            return Err(corrupt(
                offset_at,
                format!("entry {index}: offset {offset} is not below next offset {next_offset}"),
            ));
        }
        map.insert(Box::from(key), offset);
        key_heap_bytes += key_allocation_bytes(key.len());
    }
    if reader.remaining() != 0 {
        return Err(corrupt(
            reader.position,
            format!(
                "{} bytes after the last of {count} entries",
                reader.remaining()
            ),
        ));
    }
    Ok(KeyIndex {
        map,
        next_offset,
        key_heap_bytes,
    })
}

/// A bounds-checked cursor over a snapshot's bytes (checksum excluded).
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    /// The next `len` bytes, or `Corrupt` when fewer remain.
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8]> {
        if len > self.remaining() {
            return Err(EngineError::Corrupt {
                path: self.path.to_path_buf(),
                position: self.position as u64,
                reason: format!(
                    "{what} of {len} bytes overruns the snapshot ({} bytes remain)",
                    self.remaining()
                ),
            });
        }
        let taken = &self.bytes[self.position..self.position + len];
        self.position += len;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N, what)?);
        Ok(array)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_be_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_be_bytes)
    }

    fn i64(&mut self, what: &str) -> Result<i64> {
        self.array(what).map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn snapshot_path(dir: &Path) -> std::path::PathBuf {
        dir.join(KEYS_SNAPSHOT_FILE)
    }

    /// Replaces the trailing CRC of `bytes` with a correct one, so a test can reach the parser
    /// behind the checksum.
    fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
        let crc_at = bytes.len() - CRC_BYTES;
        let crc = crc32c::crc32c(&bytes[..crc_at]);
        bytes[crc_at..].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    /// Asserts that reading `bytes` as the snapshot of `dir` is `Err(Corrupt)` naming the file.
    fn assert_corrupt(dir: &Path, bytes: &[u8], what: &str) {
        std::fs::write(snapshot_path(dir), bytes).unwrap();
        match KeyIndex::read_snapshot(dir) {
            Err(EngineError::Corrupt { path, position, .. }) => {
                assert_eq!(path, snapshot_path(dir), "{what}");
                assert!(
                    position <= bytes.len() as u64,
                    "{what}: position {position}"
                );
            }
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }

    fn sample_index() -> KeyIndex {
        let mut index = KeyIndex::new(0);
        index.apply(0, Some(b"b"), false);
        index.apply(1, Some(b""), false);
        index.apply(2, Some(&[0xff, 0x00]), false);
        index.apply(3, None, false);
        index.apply(4, Some(b"a"), false);
        index
    }

    #[test]
    fn apply_sets_latest_offset_per_key() {
        let mut index = KeyIndex::new(10);
        assert_eq!(index.next_offset(), 10);
        assert!(index.is_empty());
        index.apply(10, Some(b"k1"), false);
        index.apply(11, Some(b"k2"), false);
        index.apply(12, Some(b"k1"), false);
        assert_eq!(index.get(b"k1"), Some(12));
        assert_eq!(index.get(b"k2"), Some(11));
        assert_eq!(index.get(b"k3"), None);
        assert_eq!(index.len(), 2);
        assert_eq!(index.next_offset(), 13);
    }

    #[test]
    fn tombstone_removes_its_key_only() {
        let mut index = KeyIndex::new(0);
        index.apply(0, Some(b"a"), false);
        index.apply(1, Some(b"b"), false);
        index.apply(2, Some(b"a"), true);
        assert_eq!(index.get(b"a"), None);
        assert_eq!(index.get(b"b"), Some(1));
        assert_eq!(index.next_offset(), 3);
        // A tombstone for an absent key changes nothing but the next offset.
        index.apply(3, Some(b"zz"), true);
        assert_eq!(index.keys(), vec![b"b".to_vec()]);
        assert_eq!(index.next_offset(), 4);
        // A key comes back with a later value.
        index.apply(5, Some(b"a"), false);
        assert_eq!(index.get(b"a"), Some(5));
    }

    #[test]
    fn keyless_records_only_advance_the_next_offset() {
        let mut index = KeyIndex::new(0);
        index.apply(0, Some(b"a"), false);
        let before = index.clone();
        index.apply(1, None, false);
        index.apply(4, None, true);
        assert_eq!(index.next_offset(), 5);
        assert_eq!(index.keys(), before.keys());
        assert_eq!(index.get(b"a"), Some(0));
    }

    #[test]
    fn advance_to_never_moves_backward() {
        let mut index = KeyIndex::new(3);
        index.advance_to(10);
        assert_eq!(index.next_offset(), 10);
        index.advance_to(7);
        assert_eq!(index.next_offset(), 10);
        index.apply(10, Some(b"k"), false);
        assert_eq!(index.next_offset(), 11);
    }

    #[test]
    fn prune_below_forgets_keys_whose_latest_value_is_gone() {
        let mut index = KeyIndex::new(0);
        for offset in 0..100 {
            index.apply(offset, Some(format!("k{offset}").as_bytes()), false);
        }
        index.apply(100, Some(b"k3"), false);
        index.prune_below(50);
        assert_eq!(index.len(), 51);
        assert_eq!(index.get(b"k49"), None);
        assert_eq!(index.get(b"k50"), Some(50));
        assert_eq!(index.get(b"k3"), Some(100));
        assert_eq!(index.next_offset(), 101);
        index.prune_below(1_000);
        assert!(index.is_empty());
        assert_eq!(index.next_offset(), 101);
        assert_eq!(index.memory_bytes(), 0);
    }

    #[test]
    fn keys_are_sorted_bytewise() {
        let index = sample_index();
        assert_eq!(
            index.keys(),
            vec![b"".to_vec(), b"a".to_vec(), b"b".to_vec(), vec![0xff, 0x00]]
        );
    }

    #[test]
    fn memory_bytes_is_about_the_documented_cost_per_key() {
        assert_eq!(KeyIndex::new(0).memory_bytes(), 0);
        let mut index = KeyIndex::new(0);
        let keys = 100_000;
        for offset in 0..keys {
            index.apply(offset, Some(format!("key-{offset:015}").as_bytes()), false);
        }
        // 19-byte keys: 32 bytes of allocation each, plus 40 bytes of table.
        assert_eq!(TABLE_BYTES_PER_KEY, 40);
        assert_eq!(index.memory_bytes(), keys as usize * (40 + 32));
        // Within the documented "about 56 bytes plus the key's length".
        let per_key = index.memory_bytes() / keys as usize;
        assert!((56 + 19 - 8..=56 + 19 + 8).contains(&per_key), "{per_key}");
        // Overwrites allocate nothing new; tombstones give the key's share back.
        let before = index.memory_bytes();
        index.apply(keys, Some(b"key-000000000000000"), false);
        assert_eq!(index.memory_bytes(), before);
        index.apply(keys + 1, Some(b"key-000000000000000"), true);
        assert_eq!(index.get(b"key-000000000000000"), None);
        assert_eq!(index.memory_bytes(), before - (40 + 32));
        // An empty key allocates nothing of its own.
        index.apply(keys + 2, Some(b""), false);
        assert_eq!(index.memory_bytes(), before - 32);
    }

    #[test]
    fn snapshot_round_trips_an_empty_index() {
        let dir = tempfile::tempdir().unwrap();
        let index = KeyIndex::new(42);
        index.write_snapshot(dir.path()).unwrap();
        assert_eq!(KeyIndex::read_snapshot(dir.path()).unwrap(), Some(index));
        assert_eq!(KeyIndex::snapshot_next_offset(dir.path()), Some(42));
        assert_eq!(
            std::fs::metadata(snapshot_path(dir.path())).unwrap().len(),
            (HEADER_BYTES + CRC_BYTES) as u64
        );
    }

    #[test]
    fn snapshot_round_trips_many_keys_including_empty_and_binary() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = KeyIndex::new(0);
        index.apply(0, Some(b""), false);
        for offset in 1..5_000i64 {
            let key: Vec<u8> = (0..=(offset % 40))
                .map(|i| (offset * 31 + i) as u8)
                .collect();
            index.apply(offset, Some(&key), offset % 7 == 0);
        }
        index.apply(5_000, Some(&[0u8; 1000]), false);
        index.advance_to(6_000);
        index.write_snapshot(dir.path()).unwrap();
        let read = KeyIndex::read_snapshot(dir.path()).unwrap().unwrap();
        assert_eq!(read, index);
        assert_eq!(read.keys(), index.keys());
        assert!(read.memory_bytes() > 0);
        assert_eq!(read.get(b""), Some(0));
        assert_eq!(KeyIndex::snapshot_next_offset(dir.path()), Some(6_000));
        assert!(!dir.path().join("lmqfs-keys-snapshot.tmp").exists());

        // A later snapshot replaces the earlier one.
        let small = sample_index();
        small.write_snapshot(dir.path()).unwrap();
        assert_eq!(KeyIndex::read_snapshot(dir.path()).unwrap(), Some(small));
        assert_eq!(KeyIndex::snapshot_next_offset(dir.path()), Some(5));
    }

    #[test]
    fn snapshot_bytes_follow_the_documented_layout() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = KeyIndex::new(0);
        index.apply(7, Some(b"b"), false);
        index.apply(8, Some(b""), false);
        index.write_snapshot(dir.path()).unwrap();
        let bytes = std::fs::read(snapshot_path(dir.path())).unwrap();
        let mut expected = Vec::new();
        expected.extend_from_slice(b"LMQK");
        expected.extend_from_slice(&1u32.to_be_bytes());
        expected.extend_from_slice(&9i64.to_be_bytes());
        expected.extend_from_slice(&2u64.to_be_bytes());
        expected.extend_from_slice(&0u32.to_be_bytes());
        expected.extend_from_slice(&8i64.to_be_bytes());
        expected.extend_from_slice(&1u32.to_be_bytes());
        expected.extend_from_slice(b"b");
        expected.extend_from_slice(&7i64.to_be_bytes());
        let crc = crc32c::crc32c(&expected);
        expected.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(bytes, expected);
    }

    #[test]
    fn missing_snapshot_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(KeyIndex::read_snapshot(dir.path()).unwrap(), None);
        assert_eq!(KeyIndex::snapshot_next_offset(dir.path()), None);
    }

    #[test]
    fn remove_snapshot_removes_it_and_tolerates_absence() {
        let dir = tempfile::tempdir().unwrap();
        KeyIndex::remove_snapshot(dir.path()).unwrap();
        sample_index().write_snapshot(dir.path()).unwrap();
        assert!(snapshot_path(dir.path()).exists());
        KeyIndex::remove_snapshot(dir.path()).unwrap();
        assert!(!snapshot_path(dir.path()).exists());
        assert_eq!(KeyIndex::read_snapshot(dir.path()).unwrap(), None);
        KeyIndex::remove_snapshot(dir.path()).unwrap();
    }

    #[test]
    fn remove_snapshot_reports_errors_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in the snapshot's place cannot be removed as a file.
        std::fs::create_dir(snapshot_path(dir.path())).unwrap();
        match KeyIndex::remove_snapshot(dir.path()) {
            Err(EngineError::Io { path, .. }) => assert_eq!(path, snapshot_path(dir.path())),
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        sample_index().write_snapshot(dir.path()).unwrap();
        let good = std::fs::read(snapshot_path(dir.path())).unwrap();
        for position in 0..good.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[position] ^= flip;
                assert_corrupt(dir.path(), &bad, &format!("byte {position} ^ {flip:#04x}"));
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        sample_index().write_snapshot(dir.path()).unwrap();
        let good = std::fs::read(snapshot_path(dir.path())).unwrap();
        for len in 0..good.len() {
            assert_corrupt(
                dir.path(),
                &good[..len],
                &format!("truncated to {len} bytes"),
            );
        }
        // Trailing garbage is as wrong as a missing tail.
        let mut longer = good.clone();
        longer.extend_from_slice(&[0; 4]);
        assert_corrupt(dir.path(), &longer, "4 extra bytes");
    }

    #[test]
    fn huge_declared_lengths_are_rejected_without_allocating() {
        let dir = tempfile::tempdir().unwrap();
        sample_index().write_snapshot(dir.path()).unwrap();
        let good = std::fs::read(snapshot_path(dir.path())).unwrap();

        for count in [u64::MAX, u64::MAX / 12, 1 << 40, 5] {
            let mut bad = good.clone();
            bad[16..24].copy_from_slice(&count.to_be_bytes());
            assert_corrupt(dir.path(), &reseal(bad), &format!("entry count {count}"));
        }
        // The first entry's key length (the empty key sorts first).
        for key_len in [u32::MAX, 1 << 30, 1_000] {
            let mut bad = good.clone();
            bad[24..28].copy_from_slice(&key_len.to_be_bytes());
            assert_corrupt(dir.path(), &reseal(bad), &format!("key length {key_len}"));
        }
    }

    #[test]
    fn structurally_invalid_snapshots_with_good_checksums_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let header = |next_offset: i64, count: u64| {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(b"LMQK");
            bytes.extend_from_slice(&1u32.to_be_bytes());
            bytes.extend_from_slice(&next_offset.to_be_bytes());
            bytes.extend_from_slice(&count.to_be_bytes());
            bytes
        };
        let entry = |bytes: &mut Vec<u8>, key: &[u8], offset: i64| {
            bytes.extend_from_slice(&(key.len() as u32).to_be_bytes());
            bytes.extend_from_slice(key);
            bytes.extend_from_slice(&offset.to_be_bytes());
        };
        let seal = |mut bytes: Vec<u8>| {
            bytes.extend_from_slice(&[0; 4]);
            reseal(bytes)
        };

        let mut unsorted = header(10, 2);
        entry(&mut unsorted, b"b", 1);
        entry(&mut unsorted, b"a", 2);
        assert_corrupt(dir.path(), &seal(unsorted), "keys out of order");

        let mut repeated = header(10, 2);
        entry(&mut repeated, b"a", 1);
        entry(&mut repeated, b"a", 2);
        assert_corrupt(dir.path(), &seal(repeated), "repeated key");

        let mut beyond = header(10, 1);
        entry(&mut beyond, b"a", 10);
        assert_corrupt(dir.path(), &seal(beyond), "offset at next_offset");

        let mut version = header(10, 0);
        version[4..8].copy_from_slice(&2u32.to_be_bytes());
        let version = seal(version);
        assert_corrupt(dir.path(), &version, "version 2");
        assert_eq!(KeyIndex::snapshot_next_offset(dir.path()), None);

        let mut valid = header(10, 1);
        entry(&mut valid, b"a", 9);
        std::fs::write(snapshot_path(dir.path()), seal(valid)).unwrap();
        let index = KeyIndex::read_snapshot(dir.path()).unwrap().unwrap();
        assert_eq!(index.get(b"a"), Some(9));
        assert_eq!(index.next_offset(), 10);
    }

    #[test]
    fn snapshot_next_offset_needs_a_whole_good_header() {
        let dir = tempfile::tempdir().unwrap();
        KeyIndex::new(1234).write_snapshot(dir.path()).unwrap();
        let good = std::fs::read(snapshot_path(dir.path())).unwrap();
        // The header alone is enough: the entries and checksum are not read.
        std::fs::write(snapshot_path(dir.path()), &good[..SHORT_HEADER_BYTES]).unwrap();
        assert_eq!(KeyIndex::snapshot_next_offset(dir.path()), Some(1234));
        std::fs::write(snapshot_path(dir.path()), &good[..SHORT_HEADER_BYTES - 1]).unwrap();
        assert_eq!(KeyIndex::snapshot_next_offset(dir.path()), None);
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        std::fs::write(snapshot_path(dir.path()), &bad_magic).unwrap();
        assert_eq!(KeyIndex::snapshot_next_offset(dir.path()), None);
    }

    #[test]
    fn read_snapshot_reports_io_errors_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(snapshot_path(dir.path())).unwrap();
        match KeyIndex::read_snapshot(dir.path()) {
            Err(EngineError::Io { path, .. }) => assert_eq!(path, snapshot_path(dir.path())),
            other => panic!("expected Io, got {other:?}"),
        }
        assert_eq!(KeyIndex::snapshot_next_offset(dir.path()), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A record `gap` offsets after the next one.
        Apply {
            gap: u8,
            key: Option<Vec<u8>>,
            tombstone: bool,
        },
        Advance(u8),
        /// Prune below next_offset minus this.
        Prune(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        // A small key space so that keys repeat, are overwritten and deleted.
        let key = proptest::option::weighted(0.9, proptest::collection::vec(0u8..3, 0..3));
        prop_oneof![
            8 => (0u8..3, key, proptest::bool::weighted(0.25))
                .prop_map(|(gap, key, tombstone)| Op::Apply { gap, key, tombstone }),
            1 => any::<u8>().prop_map(|n| Op::Advance(n % 5)),
            1 => any::<u8>().prop_map(|n| Op::Prune(n % 20)),
        ]
    }

    proptest! {
        #[test]
        fn matches_a_btreemap_model(
            start in 0i64..1_000,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let mut index = KeyIndex::new(start);
            let mut model: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
            let mut next = start;
            for op in ops {
                match op {
                    Op::Apply { gap, key, tombstone } => {
                        let offset = next + i64::from(gap);
                        index.apply(offset, key.as_deref(), tombstone);
                        match key {
                            Some(key) if tombstone => { model.remove(&key); }
                            Some(key) => { model.insert(key, offset); }
                            None => {}
                        }
                        next = offset + 1;
                    }
                    Op::Advance(n) => {
                        index.advance_to(next + i64::from(n));
                        next += i64::from(n);
                    }
                    Op::Prune(back) => {
                        let below = next - i64::from(back);
                        index.prune_below(below);
                        model.retain(|_, offset| *offset >= below);
                    }
                }
                prop_assert_eq!(index.next_offset(), next);
                prop_assert_eq!(index.len(), model.len());
                prop_assert_eq!(index.is_empty(), model.is_empty());
            }
            let model_keys: Vec<Vec<u8>> = model.keys().cloned().collect();
            prop_assert_eq!(index.keys(), model_keys);
            for (key, offset) in &model {
                prop_assert_eq!(index.get(key), Some(*offset));
            }
            prop_assert_eq!(index.get(&[9, 9, 9]), None);

            let dir = tempfile::tempdir().unwrap();
            index.write_snapshot(dir.path()).unwrap();
            let read = KeyIndex::read_snapshot(dir.path()).unwrap();
            prop_assert_eq!(read.as_ref(), Some(&index));
            prop_assert_eq!(KeyIndex::snapshot_next_offset(dir.path()), Some(next));
        }
    }
}
