//! The cleaner's offset map: key digest -> latest offset, in a fixed block of memory.
//!
//! Kafka's `SkimpyOffsetMap`. Keys are not stored: each is reduced to a 16-byte digest
//! (XXH3-128), and a slot holds the digest and the offset, 24 bytes in all. The table is one
//! `Vec<u8>` of `memory_bytes / 24` slots allocated up front, probed linearly, and filled to at
//! most [`LOAD_FACTOR`] of its slots, so memory is the configured budget whatever the number of
//! keys (`log.cleaner.dedupe.buffer.size`). When it is full the cleaner stops indexing at a
//! segment boundary and cleans what the map covers; the rest waits for the next round.
//!
//! Two keys with the same 128-bit digest would be taken for one (the older record of one of them
//! could be removed). With a million keys the chance of any such pair is about 2^-88.
//!
//! Thread-safety: none; a map belongs to one cleaning run.

use xxhash_rust::xxh3::xxh3_128;

/// Bytes of a key digest.
pub const DIGEST_BYTES: usize = 16;
/// Bytes of one slot: digest, then the offset (big-endian, +1 so that 0 marks an empty slot).
pub const SLOT_BYTES: usize = DIGEST_BYTES + 8;
/// Fraction of slots the map fills before it reports full (Kafka's `log.cleaner.io.buffer.load.factor`).
pub const LOAD_FACTOR: f64 = 0.9;

/// A fixed-memory map from key digests to offsets. See the module docs.
pub struct OffsetMap {
    slots: Vec<u8>,
    slot_count: usize,
    entries: usize,
    max_entries: usize,
    /// The largest offset put since the last `clear`, or -1.
    latest_offset: i64,
}

impl std::fmt::Debug for OffsetMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffsetMap")
            .field("slot_count", &self.slot_count)
            .field("entries", &self.entries)
            .field("latest_offset", &self.latest_offset)
            .finish()
    }
}

impl OffsetMap {
    /// A map in `memory_bytes` of memory (at least one slot's worth is used).
    pub fn with_memory(memory_bytes: usize) -> OffsetMap {
        let slot_count = (memory_bytes / SLOT_BYTES).max(2);
        let max_entries = ((slot_count as f64 * LOAD_FACTOR) as usize).clamp(1, slot_count - 1);
        OffsetMap {
            slots: vec![0u8; slot_count * SLOT_BYTES],
            slot_count,
            entries: 0,
            max_entries,
            latest_offset: -1,
        }
    }

    /// The memory the table takes, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len()
    }

    /// How many distinct keys the map takes before it is full.
    pub fn capacity(&self) -> usize {
        self.max_entries
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    pub fn is_full(&self) -> bool {
        self.entries >= self.max_entries
    }

    /// The largest offset put since the last clear, or -1.
    pub fn latest_offset(&self) -> i64 {
        self.latest_offset
    }

    pub fn clear(&mut self) {
        self.slots.fill(0);
        self.entries = 0;
        self.latest_offset = -1;
    }

    fn digest(key: &[u8]) -> [u8; DIGEST_BYTES] {
        xxh3_128(key).to_be_bytes()
    }

    /// The slot holding `digest`, or the empty slot where it would go.
    fn find(&self, digest: &[u8; DIGEST_BYTES]) -> (usize, bool) {
        let start =
            u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) as usize % self.slot_count;
        let mut i = start;
        loop {
            let slot = &self.slots[i * SLOT_BYTES..(i + 1) * SLOT_BYTES];
            let stored = u64::from_be_bytes(slot[DIGEST_BYTES..].try_into().expect("8 bytes"));
            if stored == 0 {
                return (i, false);
            }
            if slot[..DIGEST_BYTES] == digest[..] {
                return (i, true);
            }
            i = (i + 1) % self.slot_count;
            // The load factor keeps at least one slot empty, so the probe ends.
            debug_assert_ne!(i, start, "offset map probed every slot");
        }
    }

    /// Records that `key`'s latest record is at `offset` (offsets are put in increasing order).
    /// A new key in a full map is refused with `false`; an existing key is always updated.
    pub fn put(&mut self, key: &[u8], offset: i64) -> bool {
        debug_assert!(offset >= 0, "offsets are non-negative");
        let digest = Self::digest(key);
        let (i, present) = self.find(&digest);
        if !present {
            if self.is_full() {
                return false;
            }
            self.entries += 1;
        }
        let slot = &mut self.slots[i * SLOT_BYTES..(i + 1) * SLOT_BYTES];
        slot[..DIGEST_BYTES].copy_from_slice(&digest);
        slot[DIGEST_BYTES..].copy_from_slice(&((offset as u64) + 1).to_be_bytes());
        self.latest_offset = self.latest_offset.max(offset);
        true
    }

    /// The latest offset put for `key`.
    pub fn get(&self, key: &[u8]) -> Option<i64> {
        let digest = Self::digest(key);
        let (i, present) = self.find(&digest);
        present.then(|| {
            let slot = &self.slots[i * SLOT_BYTES..(i + 1) * SLOT_BYTES];
            u64::from_be_bytes(slot[DIGEST_BYTES..].try_into().expect("8 bytes")) as i64 - 1
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_offset_per_key() {
        let mut map = OffsetMap::with_memory(24 * 100);
        assert!(map.put(b"a", 0));
        assert!(map.put(b"b", 1));
        assert!(map.put(b"a", 2));
        assert_eq!(map.get(b"a"), Some(2));
        assert_eq!(map.get(b"b"), Some(1));
        assert_eq!(map.get(b"c"), None);
        assert_eq!(map.len(), 2);
        assert_eq!(map.latest_offset(), 2);
        map.clear();
        assert_eq!(map.get(b"a"), None);
        assert!(map.is_empty());
    }

    #[test]
    fn memory_is_fixed_and_a_full_map_refuses_new_keys() {
        let mut map = OffsetMap::with_memory(24 * 1000);
        assert_eq!(map.memory_bytes(), 24 * 1000);
        assert_eq!(map.capacity(), 900);
        for i in 0..900 {
            assert!(map.put(format!("key-{i}").as_bytes(), i));
        }
        assert!(map.is_full());
        assert!(!map.put(b"one more", 1000));
        assert!(map.put(b"key-7", 1001), "existing keys still update");
        assert_eq!(map.get(b"key-7"), Some(1001));
        for i in (0..900).filter(|i| *i != 7) {
            assert_eq!(map.get(format!("key-{i}").as_bytes()), Some(i));
        }
        assert_eq!(map.memory_bytes(), 24 * 1000);
    }

    #[test]
    fn offset_zero_and_empty_keys_are_distinct_from_empty_slots() {
        let mut map = OffsetMap::with_memory(24 * 4);
        assert!(map.put(b"", 0));
        assert_eq!(map.get(b""), Some(0));
    }
}
