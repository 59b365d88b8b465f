//! The fetched-batch cache of a cluster mount, and the re-encoding that fills it.
//!
//! The Kafka client hands over records, not the broker's batches, so records are re-encoded
//! locally into v2 batches that keep each record's offset, timestamp (and timestamp type), key,
//! value and headers ([`encode_records`]). Those batches are what [`super::ClusterPartition`]'s
//! `fetch` returns and what the file views decode.
//!
//! A [`Chunk`] is what one fetch from the broker returned: the batches of the records with
//! offsets in `[start, end)`, where `end` is the fetch position after the last record (offsets
//! in between without a record were skipped by the broker: compaction, transaction markers).
//! Chunks of a partition never overlap: a fetch from the broker stops where the next cached
//! chunk begins, and a chunk from a racing fetch replaces those it overlaps. The cache keeps chunks of every partition within one byte budget and evicts
//! the least recently used first; a chunk larger than the budget is served but not kept.
//!
//! Cached records stay valid for as long as they are kept: a partition's records are never
//! rewritten in place, only removed from its start (`delete-records`, the brokers' retention
//! and compaction). A read of the current view generation below the log start is refused by the
//! partition before it reaches the cache; an old generation may still be served from it.
//!
//! Thread-safety: [`BatchCache`] is used under its owner's `Mutex`.

use std::collections::{BTreeMap, HashMap};

use crate::engine::record::batch::{encode_retained, BatchHeader};
use crate::engine::record::RecordError;
use crate::engine::{Record, TimestampType};
use crate::storage::FetchedBatch;

/// Raw record bytes per re-encoded batch: small enough that `cat <offset>` decodes little,
/// large enough that the per-batch header (61 bytes) is noise.
pub const BATCH_TARGET_BYTES: usize = 16 * 1024;

/// `attributes` bit of a v2 batch: the timestamps are the log append time.
const LOG_APPEND_TIME_ATTRIBUTE: i16 = 0x08;

/// Encodes `records` (in offset order) into v2 batches, uncompressed, each record keeping its
/// offset and timestamp. A batch holds records of one timestamp type (and, under
/// `LogAppendTime`, of one timestamp, which the batch header carries), at most about
/// [`BATCH_TARGET_BYTES`] of record bytes.
pub fn encode_records(records: &[Record]) -> Result<Vec<FetchedBatch>, RecordError> {
    let mut batches = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let first = &records[start];
        let mut end = start + 1;
        let mut bytes = approximate_size(first);
        while end < records.len() {
            let next = &records[end];
            let same_kind = next.timestamp_type == first.timestamp_type
                && (first.timestamp_type == TimestampType::CreateTime
                    || next.timestamp == first.timestamp);
            let delta_fits = next.offset - first.offset <= i64::from(i32::MAX);
            if !same_kind || !delta_fits || bytes >= BATCH_TARGET_BYTES {
                break;
            }
            bytes += approximate_size(next);
            end += 1;
        }
        batches.push(encode_one(&records[start..end])?);
        start = end;
    }
    Ok(batches)
}

/// One batch of `records` (non-empty, one timestamp type, offsets within an `i32` delta).
fn encode_one(records: &[Record]) -> Result<FetchedBatch, RecordError> {
    let first = &records[0];
    let log_append_time = first.timestamp_type == TimestampType::LogAppendTime;
    // `encode_retained` takes codec, timestamp type, producer fields and (under LogAppendTime)
    // the timestamps from this header; lengths, counts and the CRC are computed from `records`.
    let original = BatchHeader {
        base_offset: first.offset,
        batch_length: 0,
        partition_leader_epoch: -1,
        magic: 2,
        crc: 0,
        attributes: if log_append_time {
            LOG_APPEND_TIME_ATTRIBUTE
        } else {
            0
        },
        last_offset_delta: 0,
        base_timestamp: first.timestamp,
        max_timestamp: first.timestamp,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records_count: 0,
    };
    let bytes = encode_retained(&original, records, None)?;
    let header = BatchHeader::parse(&bytes)?;
    Ok(FetchedBatch { header, bytes })
}

/// About what a record takes in a batch, for sizing batches and the cache.
pub fn approximate_size(record: &Record) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len) + 4)
        .sum();
    20 + record.key.as_ref().map_or(0, Vec::len)
        + record.value.as_ref().map_or(0, Vec::len)
        + headers
}

/// The records of one fetch, re-encoded: every record with offset in `[start, end)`.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub start: i64,
    pub end: i64,
    pub batches: Vec<FetchedBatch>,
}

impl Chunk {
    fn bytes(&self) -> usize {
        self.batches.iter().map(|b| b.bytes.len()).sum::<usize>() + 64
    }
}

struct Entry {
    chunk: Chunk,
    last_used: u64,
}

/// Chunks of every partition of a mount, within `budget_bytes`, least recently used evicted.
pub struct BatchCache {
    budget_bytes: usize,
    used_bytes: usize,
    tick: u64,
    /// (topic, partition) -> start offset -> chunk.
    partitions: HashMap<(String, u32), BTreeMap<i64, Entry>>,
}

impl BatchCache {
    /// An empty cache that keeps at most `budget_bytes` of batches.
    pub fn new(budget_bytes: usize) -> BatchCache {
        BatchCache {
            budget_bytes,
            used_bytes: 0,
            tick: 0,
            partitions: HashMap::new(),
        }
    }

    /// Bytes of batches held now.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// Cached batches from the one holding `offset` on, across adjacent chunks, up to about
    /// `max_bytes` (at least one batch, or none when the chunk covering `offset` has no
    /// record at or after it). `None` when no chunk covers `offset`.
    pub fn get(
        &mut self,
        key: &(String, u32),
        offset: i64,
        max_bytes: usize,
    ) -> Option<Vec<FetchedBatch>> {
        self.tick += 1;
        let tick = self.tick;
        let chunks = self.partitions.get_mut(key)?;
        let (&first_start, first) = chunks.range(..=offset).next_back()?;
        if offset >= first.chunk.end {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut next_start = first_start;
        while let Some(entry) = chunks.get_mut(&next_start) {
            entry.last_used = tick;
            for batch in &entry.chunk.batches {
                if batch.header.last_offset() < offset {
                    continue;
                }
                if !out.is_empty() && bytes >= max_bytes {
                    return Some(out);
                }
                bytes += batch.bytes.len();
                out.push(batch.clone());
            }
            if bytes >= max_bytes {
                break;
            }
            next_start = entry.chunk.end;
        }
        Some(out)
    }

    /// The end of the run of adjacent chunks that starts with the one covering `offset`.
    pub fn covered_end(&self, key: &(String, u32), offset: i64) -> Option<i64> {
        let chunks = self.partitions.get(key)?;
        let (_, first) = chunks.range(..=offset).next_back()?;
        if offset >= first.chunk.end {
            return None;
        }
        let mut end = first.chunk.end;
        while let Some(next) = chunks.get(&end) {
            end = next.chunk.end;
        }
        Some(end)
    }

    /// The start of the first chunk of the partition at or after `offset` (where a fetch from
    /// the broker that starts at `offset` must stop).
    pub fn next_start(&self, key: &(String, u32), offset: i64) -> Option<i64> {
        let chunks = self.partitions.get(key)?;
        chunks.range(offset..).next().map(|(&start, _)| start)
    }

    /// Keeps `chunk`, replacing cached chunks of the partition it overlaps, and evicts the
    /// least recently used chunks to stay within the budget.
    pub fn insert(&mut self, key: (String, u32), chunk: Chunk) {
        let size = chunk.bytes();
        if size > self.budget_bytes || chunk.start >= chunk.end {
            return;
        }
        self.tick += 1;
        let tick = self.tick;
        let chunks = self.partitions.entry(key).or_default();
        // Two fetches of one partition can race (a reader and a check of the log end); both
        // hold the same records, so the newer chunk replaces every chunk it overlaps.
        let overlapping: Vec<i64> = chunks
            .range(..chunk.end)
            .filter(|(_, e)| e.chunk.end > chunk.start)
            .map(|(&s, _)| s)
            .collect();
        for start in overlapping {
            let old = chunks.remove(&start).expect("listed above");
            self.used_bytes -= old.chunk.bytes();
        }
        chunks.insert(
            chunk.start,
            Entry {
                chunk,
                last_used: tick,
            },
        );
        self.used_bytes += size;
        while self.used_bytes > self.budget_bytes {
            if !self.evict_one() {
                break;
            }
        }
    }

    /// Forgets every chunk of a partition (its topic was deleted).
    pub fn forget_partition(&mut self, key: &(String, u32)) {
        if let Some(chunks) = self.partitions.remove(key) {
            self.used_bytes -= chunks.values().map(|e| e.chunk.bytes()).sum::<usize>();
        }
    }

    /// Forgets every chunk of every partition of `topic`.
    pub fn forget_topic(&mut self, topic: &str) {
        let keys: Vec<_> = self
            .partitions
            .keys()
            .filter(|(t, _)| t == topic)
            .cloned()
            .collect();
        for key in keys {
            self.forget_partition(&key);
        }
    }

    fn evict_one(&mut self) -> bool {
        let oldest = self
            .partitions
            .iter()
            .flat_map(|(key, chunks)| chunks.iter().map(move |(s, e)| (e.last_used, key, *s)))
            .min_by_key(|(used, _, _)| *used)
            .map(|(_, key, start)| (key.clone(), start));
        let Some((key, start)) = oldest else {
            return false;
        };
        let chunks = self.partitions.get_mut(&key).expect("found above");
        let entry = chunks.remove(&start).expect("found above");
        self.used_bytes -= entry.chunk.bytes();
        if chunks.is_empty() {
            self.partitions.remove(&key);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::record::batch::decode_batch;
    use crate::engine::Header;

    fn record(offset: i64, value: &str) -> Record {
        Record {
            offset,
            timestamp: 1_700_000_000_000 + offset,
            timestamp_type: TimestampType::CreateTime,
            key: Some(format!("k{offset}").into_bytes()),
            value: Some(value.as_bytes().to_vec()),
            headers: vec![Header {
                key: "h".into(),
                value: Some(b"v".to_vec()),
            }],
        }
    }

    #[test]
    fn reencoded_batches_keep_offsets_with_gaps_timestamps_keys_and_headers() {
        let mut records = vec![record(5, "a"), record(6, "b"), record(9, "c")];
        records.push(Record {
            offset: 10,
            timestamp: 42,
            timestamp_type: TimestampType::LogAppendTime,
            key: None,
            value: None,
            headers: vec![],
        });
        let batches = encode_records(&records).unwrap();
        assert_eq!(batches.len(), 2, "one batch per timestamp type");
        let decoded: Vec<Record> = batches
            .iter()
            .flat_map(|b| decode_batch(&b.bytes).unwrap().records)
            .collect();
        assert_eq!(decoded, records);
        assert_eq!(batches[0].header.base_offset, 5);
        assert_eq!(batches[0].header.last_offset(), 9);
        assert_eq!(
            batches[1].header.timestamp_type(),
            TimestampType::LogAppendTime
        );
    }

    #[test]
    fn large_runs_split_into_batches_of_about_the_target_size() {
        let value = "x".repeat(1000);
        let records: Vec<Record> = (0..100).map(|o| record(o, &value)).collect();
        let batches = encode_records(&records).unwrap();
        assert!(batches.len() >= 5, "{} batches", batches.len());
        let mut next = 0;
        for b in &batches {
            assert_eq!(b.header.base_offset, next);
            next = b.header.next_offset();
        }
        assert_eq!(next, 100);
    }

    fn chunk(start: i64, end: i64) -> Chunk {
        let records: Vec<Record> = (start..end).map(|o| record(o, "v")).collect();
        Chunk {
            start,
            end,
            batches: encode_records(&records).unwrap(),
        }
    }

    #[test]
    fn get_serves_the_batch_holding_the_offset_and_continues_into_adjacent_chunks() {
        let key = ("t".to_string(), 0);
        let mut cache = BatchCache::new(1 << 20);
        cache.insert(key.clone(), chunk(0, 10));
        cache.insert(key.clone(), chunk(10, 20));
        cache.insert(key.clone(), chunk(30, 40));
        let got = cache.get(&key, 5, usize::MAX).unwrap();
        assert_eq!(got.first().unwrap().header.base_offset, 0);
        assert_eq!(got.last().unwrap().header.next_offset(), 20);
        assert!(cache.get(&key, 20, 1).is_none(), "20..30 is not cached");
        assert_eq!(cache.next_start(&key, 20), Some(30));
        assert!(cache.get(&("t".to_string(), 1), 0, 1).is_none());
    }

    #[test]
    fn an_overlapping_chunk_replaces_the_chunks_it_overlaps() {
        let key = ("t".to_string(), 0);
        let mut cache = BatchCache::new(1 << 20);
        cache.insert(key.clone(), chunk(0, 10));
        cache.insert(key.clone(), chunk(10, 20));
        cache.insert(key.clone(), chunk(5, 15));
        assert_eq!(cache.covered_end(&key, 5), Some(15));
        assert!(cache.get(&key, 2, 1).is_none());
        let got = cache.get(&key, 12, usize::MAX).unwrap();
        assert_eq!(got.last().unwrap().header.next_offset(), 15);
        assert_eq!(cache.used_bytes(), chunk(5, 15).bytes());
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used_chunk() {
        let key = ("t".to_string(), 0);
        let one = chunk(0, 10).bytes();
        let mut cache = BatchCache::new(one * 2 + one / 2);
        cache.insert(key.clone(), chunk(0, 10));
        cache.insert(key.clone(), chunk(10, 20));
        cache.get(&key, 0, 1).unwrap();
        cache.insert(key.clone(), chunk(20, 30));
        assert!(cache.get(&key, 0, 1).is_some(), "recently used: kept");
        assert!(
            cache.get(&key, 10, 1).is_none(),
            "least recently used: evicted"
        );
        assert!(cache.used_bytes() <= one * 2 + one / 2);
        cache.forget_topic("t");
        assert_eq!(cache.used_bytes(), 0);
    }
}
