//! One partition of a cluster mount: its log start/end as last seen, its view generation, its
//! key index, and the fetch path through the mount's batch cache.
//!
//! Thread-safety: `offsets` and `keys` are separate mutexes, never held together by one
//! thread except `keys` then `offsets` (through `fetch` while the key index scans); network
//! calls are made under `offsets` so that concurrent readers wait for one refresh instead of
//! each sending their own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use super::cache::{approximate_size, encode_records, Chunk};
use super::client::{kafka_error, lock, to_record, Failure, OutgoingRecord};
use super::Shared;
use crate::storage::{
    decode_batch, AppendInfo, CompactionOutcome, FetchedBatch, LogConfig, LogStats, NewRecord,
    Partition, Record, Result, RetentionOutcome, SegmentInfo, StorageError, ViewGeneration,
};

/// How long a fetch waits without a record before it returns what it has.
const FETCH_IDLE: Duration = Duration::from_millis(300);
/// How long a check of the log end waits after the last record: the rest of a batch arrives
/// with its first record.
const PROBE_IDLE: Duration = Duration::from_millis(10);
/// How long a check of the log end waits for its first record.
const PROBE_EMPTY: Duration = Duration::from_millis(500);
/// How long a fetch with nothing at all waits before it gives up for now (offsets below the
/// log end that hold no record a consumer sees: transaction markers, aborted records).
const FETCH_EMPTY: Duration = Duration::from_secs(2);

/// Log start and end as last asked, and the view generation they imply.
#[derive(Debug)]
struct Offsets {
    refreshed: Option<Instant>,
    log_start_offset: i64,
    log_end_offset: i64,
    /// Goes up each time the log start is seen to move.
    generation: u64,
    /// The log end the leader last answered (before the check against fetched records).
    reported_high: i64,
}

/// Live keys from the records scanned so far: key -> (offset of its latest record, whether
/// that record has a value).
#[derive(Debug, Default)]
struct KeyIndex {
    generation: u64,
    next_offset: i64,
    latest: BTreeMap<Vec<u8>, (i64, bool)>,
}

/// A partition of a topic on the cluster.
pub struct ClusterPartition {
    shared: Arc<Shared>,
    topic: String,
    partition: u32,
    offsets: Mutex<Offsets>,
    keys: Mutex<KeyIndex>,
    /// When a file last used the partition (ms since the storage connected), for watching.
    last_used_ms: AtomicU64,
    /// The log end the watcher last saw.
    watched_end: AtomicI64,
}

impl ClusterPartition {
    pub(crate) fn new(shared: Arc<Shared>, topic: String, partition: u32) -> ClusterPartition {
        ClusterPartition {
            shared,
            topic,
            partition,
            offsets: Mutex::new(Offsets {
                refreshed: None,
                log_start_offset: 0,
                log_end_offset: 0,
                generation: 0,
                reported_high: -1,
            }),
            keys: Mutex::new(KeyIndex::default()),
            last_used_ms: AtomicU64::new(0),
            watched_end: AtomicI64::new(-1),
        }
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition's number.
    pub fn partition_id(&self) -> u32 {
        self.partition
    }

    /// When a file last used the partition.
    pub(crate) fn last_used(&self) -> u64 {
        self.last_used_ms.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        let ms = self.shared.started.elapsed().as_millis() as u64;
        self.last_used_ms.store(ms, Ordering::Relaxed);
    }

    /// Asks the log end; true if it grew since the last call (not on the first).
    pub(crate) fn grew_since_last_watch(&self) -> bool {
        let Ok((_, end, _)) = self.offsets(false) else {
            return false;
        };
        let before = self.watched_end.swap(end, Ordering::Relaxed);
        before >= 0 && end > before
    }

    fn failure(&self, operation: &'static str) -> Failure<'_> {
        Failure {
            operation,
            topic: Some(&self.topic),
            partition: Some(self.partition),
        }
    }

    fn key(&self) -> (String, u32) {
        (self.topic.clone(), self.partition)
    }

    /// ListOffsets (earliest, latest) of the partition's leader.
    fn watermarks(&self) -> Result<(i64, i64)> {
        self.shared
            .metadata
            .fetch_watermarks(
                &self.topic,
                self.partition as i32,
                self.shared.options.client.request_timeout,
            )
            .map_err(|e| kafka_error(self.failure("ListOffsets"), e))
    }

    /// Log start, log end and generation, asked of the leader when older than the mount's
    /// `offsets_max_age` (or always, with `force`).
    fn offsets(&self, force: bool) -> Result<(i64, i64, u64)> {
        let mut o = lock(&self.offsets);
        let fresh = o
            .refreshed
            .is_some_and(|t| t.elapsed() < self.shared.options.offsets_max_age);
        if fresh && !force {
            return Ok((o.log_start_offset, o.log_end_offset, o.generation));
        }
        let (low, mut high) = self.watermarks()?;
        if high > low && high != o.reported_high {
            // Some brokers answer ListOffsets(latest) with the last batch's base offset + 1
            // (Tansu 0.6), however many records that batch has. So each new answer is checked
            // against the records fetched from its last offset on: one short fetch per change
            // of the answer, and the cache keeps what it read for the readers.
            drop(o);
            let probed = self.end_seen_from(high - 1)?;
            o = lock(&self.offsets);
            if probed > high {
                log::debug!(
                    "{}-{}: ListOffsets answered {high}, records go on to {probed}",
                    self.topic,
                    self.partition
                );
            }
            o.reported_high = high;
            high = high.max(probed);
        }
        if o.refreshed.is_some() && low != o.log_start_offset {
            o.generation += 1;
            log::info!(
                "{}-{}: log start offset moved from {} to {low} (view generation {})",
                self.topic,
                self.partition,
                o.log_start_offset,
                o.generation
            );
        }
        o.log_start_offset = low;
        if high < o.log_end_offset {
            // A leader change may briefly report an older high watermark; an acknowledged
            // append is never taken back.
            log::debug!(
                "{}-{}: high watermark {high} below the acknowledged end {}",
                self.topic,
                self.partition,
                o.log_end_offset
            );
        }
        o.log_end_offset = o.log_end_offset.max(high);
        o.refreshed = Some(Instant::now());
        Ok((o.log_start_offset, o.log_end_offset, o.generation))
    }

    /// The offset after the last record fetched in one run from `low` (the cache answers
    /// when it covers `low`).
    fn end_seen_from(&self, low: i64) -> Result<i64> {
        let cached = lock(&self.shared.cache).covered_end(&self.key(), low);
        if let Some(end) = cached {
            return Ok(end);
        }
        let stop = lock(&self.shared.cache)
            .next_start(&self.key(), low)
            .unwrap_or(i64::MAX);
        let chunk = self.fetch_from_cluster(low, stop, 1024 * 1024, PROBE_IDLE)?;
        if chunk.end == stop {
            if let Some(end) = lock(&self.shared.cache).covered_end(&self.key(), stop) {
                return Ok(end);
            }
        }
        Ok(chunk.end)
    }

    /// The offsets as last known, refreshed if stale; a failed refresh is logged (by
    /// [`kafka_error`]) and answered with the last known values.
    fn offsets_or_last(&self) -> (i64, i64, u64) {
        self.offsets(false).unwrap_or_else(|_| {
            let o = lock(&self.offsets);
            (o.log_start_offset, o.log_end_offset, o.generation)
        })
    }

    fn out_of_range(&self, offset: i64, start: i64, end: i64) -> StorageError {
        StorageError::OffsetOutOfRange {
            offset,
            log_start_offset: start,
            log_end_offset: end,
        }
    }

    /// Reads records from `from` on from the brokers, up to about `max_bytes`, stopping at
    /// `stop` (the log end, or where the next cached chunk begins); caches and returns them.
    fn fetch_from_cluster(
        &self,
        from: i64,
        stop: i64,
        max_bytes: usize,
        idle_limit: Duration,
    ) -> Result<Chunk> {
        let mut reader = self
            .shared
            .readers
            .take(&self.topic, self.partition, from)
            .map_err(|e| kafka_error(self.failure("Fetch"), e))?;
        reader
            .seek(&self.topic, self.partition, from)
            .map_err(|e| kafka_error(self.failure("Fetch"), e))?;
        let started = Instant::now();
        let mut last_record = Instant::now();
        let mut records: Vec<Record> = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        while next < stop && bytes < max_bytes {
            let idle = last_record.elapsed();
            let empty_limit = if idle_limit < FETCH_IDLE {
                PROBE_EMPTY
            } else {
                FETCH_EMPTY
            };
            if (!records.is_empty() && idle >= idle_limit)
                || (records.is_empty() && idle >= empty_limit)
            {
                break;
            }
            let Some(polled) = reader.consumer.poll(Duration::from_millis(5)) else {
                continue;
            };
            let message = match polled {
                Ok(message) => message,
                Err(KafkaError::PartitionEOF(_)) => continue,
                Err(e) => {
                    reader.position = None;
                    let code = e.rdkafka_error_code();
                    if matches!(
                        code,
                        Some(
                            RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange
                        )
                    ) {
                        let (start, end) = self.watermarks()?;
                        return Err(self.out_of_range(from, start, end));
                    }
                    return Err(kafka_error(self.failure("Fetch"), e));
                }
            };
            use rdkafka::Message;
            if message.topic() != self.topic || message.partition() != self.partition as i32 {
                continue;
            }
            let offset = message.offset();
            if offset < next {
                continue;
            }
            if offset >= stop {
                // Already cached (or beyond the end asked for); the reader stands past it.
                reader.position = None;
                next = stop;
                break;
            }
            let record = to_record(&message);
            bytes += approximate_size(&record);
            records.push(record);
            next = offset + 1;
            reader.position = Some((self.topic.clone(), self.partition, next));
            last_record = Instant::now();
        }
        log::debug!(
            "{}-{}: fetched {} records ({bytes} bytes) from offset {from} in {:?}",
            self.topic,
            self.partition,
            records.len(),
            started.elapsed()
        );
        let batches = encode_records(&records)?;
        let chunk = Chunk {
            start: from,
            end: next,
            batches,
        };
        if chunk.end > chunk.start {
            lock(&self.shared.cache).insert(self.key(), chunk.clone());
        }
        Ok(chunk)
    }

    /// Brings the key index up to the log end.
    fn update_keys(&self) -> Result<std::sync::MutexGuard<'_, KeyIndex>> {
        let mut keys = lock(&self.keys);
        let (start, end, generation) = self.offsets(false)?;
        if keys.generation != generation || keys.next_offset < start {
            *keys = KeyIndex {
                generation,
                next_offset: start,
                latest: BTreeMap::new(),
            };
        }
        while keys.next_offset < end {
            let batches = self.fetch(generation, keys.next_offset, 1024 * 1024)?;
            let mut progressed = false;
            for batch in batches {
                let next = batch.header.next_offset();
                if next <= keys.next_offset {
                    continue;
                }
                for record in decode_batch(&batch.bytes)?.records {
                    if record.offset < keys.next_offset {
                        continue;
                    }
                    if let Some(key) = record.key {
                        keys.latest
                            .insert(key, (record.offset, record.value.is_some()));
                    }
                }
                keys.next_offset = next;
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        Ok(keys)
    }

    /// The offset of the first record from `offset` on whose timestamp is >= `timestamp_ms`,
    /// or `end`.
    fn first_at_or_after(&self, offset: i64, end: i64, timestamp_ms: i64) -> Result<i64> {
        let generation = lock(&self.offsets).generation;
        let mut next = offset;
        while next < end {
            let batches = self.fetch(generation, next, 1024 * 1024)?;
            let mut progressed = false;
            for batch in batches {
                if batch.header.next_offset() <= next {
                    continue;
                }
                for record in decode_batch(&batch.bytes)?.records {
                    if record.offset >= next && record.timestamp >= timestamp_ms {
                        return Ok(record.offset);
                    }
                }
                next = batch.header.next_offset();
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        Ok(end)
    }
}

impl Partition for ClusterPartition {
    fn location(&self) -> PathBuf {
        self.shared.location(&self.topic, self.partition)
    }

    fn append(&self, records: &[NewRecord]) -> Result<AppendInfo> {
        self.touch();
        if records.is_empty() {
            return Err(StorageError::InvalidArgument("no records to append".into()));
        }
        let outgoing: Vec<OutgoingRecord<'_>> = records
            .iter()
            .map(|r| OutgoingRecord {
                key: r.key.as_deref(),
                value: r.value.as_deref(),
                headers: r
                    .headers
                    .iter()
                    .map(|h| (h.key.as_str(), h.value.as_deref()))
                    .collect(),
                timestamp: r.timestamp,
            })
            .collect();
        let batch_bytes: usize = records
            .iter()
            .map(|r| {
                approximate_size(&Record {
                    offset: 0,
                    timestamp: 0,
                    timestamp_type: crate::storage::TimestampType::CreateTime,
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r.headers.clone(),
                })
            })
            .sum::<usize>()
            + 61;
        let delivered =
            match self
                .shared
                .producer
                .produce(&self.topic, self.partition as i32, &outgoing)
            {
                Ok(d) => d,
                Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
                    let limit = self.config().max_message_bytes as usize;
                    log::info!(
                        "Produce to {}-{}: the broker refused {batch_bytes} bytes: {e}",
                        self.topic,
                        self.partition
                    );
                    return Err(StorageError::RecordTooLarge {
                        size: batch_bytes,
                        max_message_bytes: limit,
                    });
                }
                Err(e) => return Err(kafka_error(self.failure("Produce"), e)),
            };
        let first_offset = delivered[0].offset;
        let last_offset = delivered[delivered.len() - 1].offset;
        if last_offset - first_offset + 1 != delivered.len() as i64 {
            log::warn!(
                "Produce to {}-{}: {} records got offsets {first_offset}..={last_offset}, not \
                 one contiguous batch",
                self.topic,
                self.partition,
                delivered.len()
            );
        }
        let max_timestamp = delivered.iter().map(|d| d.timestamp).max().unwrap_or(-1);
        let mut o = lock(&self.offsets);
        o.log_end_offset = o.log_end_offset.max(last_offset + 1);
        if o.refreshed.is_none() {
            drop(o);
            // First sight of the partition: learn its log start too.
            let _ = self.offsets(true);
        } else {
            o.refreshed = Some(Instant::now());
        }
        Ok(AppendInfo {
            first_offset,
            last_offset,
            max_timestamp,
            batch_bytes,
        })
    }

    fn fetch(&self, generation: u64, offset: i64, max_bytes: usize) -> Result<Vec<FetchedBatch>> {
        self.touch();
        let (start, end, current) = self.offsets(false)?;
        let from = if generation >= current {
            offset.max(start)
        } else {
            offset
        };
        let mut from = from;
        {
            let mut cache = lock(&self.shared.cache);
            if let Some(batches) = cache.get(&self.key(), from, max_bytes) {
                if !batches.is_empty() {
                    return Ok(batches);
                }
                // The cached run holds no record from `from` on: read on from its end.
                if let Some(end_of_run) = cache.covered_end(&self.key(), from) {
                    from = end_of_run;
                }
            }
        }
        if from >= end {
            return Ok(Vec::new());
        }
        if from < start {
            // An old generation's records the cluster no longer has and the cache lost: the
            // view reports its handle stale.
            return Ok(Vec::new());
        }
        let stop = lock(&self.shared.cache)
            .next_start(&self.key(), from)
            .map_or(end, |s| s.min(end));
        let chunk = self.fetch_from_cluster(from, stop, max_bytes, FETCH_IDLE)?;
        Ok(chunk.batches)
    }

    fn read_record(&self, offset: i64) -> Result<Option<Record>> {
        let (mut start, mut end, _) = self.offsets(false)?;
        if offset < start || offset >= end {
            (start, end, _) = self.offsets(true)?;
            if offset < start || offset >= end {
                return Err(self.out_of_range(offset, start, end));
            }
        }
        let generation = lock(&self.offsets).generation;
        for batch in self.fetch(generation, offset, 1)? {
            if batch.header.last_offset() < offset {
                continue;
            }
            if batch.header.base_offset > offset {
                return Ok(None);
            }
            return Ok(decode_batch(&batch.bytes)?
                .records
                .into_iter()
                .find(|r| r.offset == offset));
        }
        Ok(None)
    }

    fn view_generation(&self) -> ViewGeneration {
        let (log_start_offset, _, generation) = self.offsets_or_last();
        ViewGeneration {
            generation,
            log_start_offset,
        }
    }

    fn log_start_offset(&self) -> i64 {
        self.offsets_or_last().0
    }

    fn log_end_offset(&self) -> i64 {
        self.offsets_or_last().1
    }

    fn list_offsets(&self, timestamp_ms: i64) -> Result<i64> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.topic,
            self.partition as i32,
            Offset::Offset(timestamp_ms),
        )
        .map_err(|e| kafka_error(self.failure("ListOffsets"), e))?;
        let answer = self
            .shared
            .metadata
            .offsets_for_times(tpl, self.shared.options.client.request_timeout)
            .map_err(|e| kafka_error(self.failure("ListOffsets"), e))?;
        let element = answer
            .find_partition(&self.topic, self.partition as i32)
            .ok_or_else(|| StorageError::UnknownPartition {
                topic: self.topic.clone(),
                partition: self.partition,
            })?;
        element
            .error()
            .map_err(|e| kafka_error(self.failure("ListOffsets"), e))?;
        let end = self.offsets(true)?.1;
        match element.offset() {
            // Some brokers (Tansu 0.6) answer the first offset of the batch that holds the
            // time, or the earliest offset when no record is that recent: from their answer
            // on, the first record at or after the time is the one Kafka would name.
            Offset::Offset(n) if n >= 0 && n < end => self.first_at_or_after(n, end, timestamp_ms),
            // No record at or after the time: the log end, as Kafka answers -1 for "latest".
            _ => Ok(end),
        }
    }

    fn config(&self) -> LogConfig {
        self.shared.config(&self.topic).unwrap_or_else(|e| {
            log::warn!("config of {}: {e}; using the defaults", self.topic);
            LogConfig::default()
        })
    }

    fn stats(&self) -> LogStats {
        let (log_start_offset, log_end_offset, generation) = self.offsets_or_last();
        LogStats {
            log_start_offset,
            log_end_offset,
            // Acknowledged with acks=all: on every in-sync replica.
            recovery_point: log_end_offset,
            // Segments are the brokers'; their sizes are not asked for.
            size_bytes: 0,
            segment_count: 0,
            last_roll: None,
            last_retention: None,
            last_compaction: None,
            first_dirty_offset: log_start_offset,
            view_generation: generation,
        }
    }

    fn flush(&self) -> Result<i64> {
        self.shared
            .producer
            .flush()
            .map_err(|e| kafka_error(self.failure("flush"), e))?;
        Ok(self.offsets(true)?.1)
    }

    fn roll(&self) -> Result<()> {
        Err(StorageError::Unsupported(
            "roll: the cluster's brokers roll their own segments".into(),
        ))
    }

    fn delete_records(&self, offset: i64) -> Result<i64> {
        let (start, end, _) = self.offsets(true)?;
        if offset < 0 || offset > end {
            return Err(self.out_of_range(offset, start, end));
        }
        if offset <= start {
            return Ok(start);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, self.partition as i32, Offset::Offset(offset))
            .map_err(|e| kafka_error(self.failure("DeleteRecords"), e))?;
        let answer = super::wait(
            self.shared
                .admin
                .delete_records(&tpl, &self.shared.admin_options()),
        )
        .map_err(|e| kafka_error(self.failure("DeleteRecords"), e))?;
        if let Some(element) = answer.find_partition(&self.topic, self.partition as i32) {
            element
                .error()
                .map_err(|e| kafka_error(self.failure("DeleteRecords"), e))?;
        }
        let (start, _, generation) = self.offsets(true)?;
        log::info!(
            "{}-{}: DeleteRecords to {offset}: log start offset {start} (view generation \
             {generation})",
            self.topic,
            self.partition
        );
        Ok(start)
    }

    fn retention(&self) -> Result<RetentionOutcome> {
        Err(StorageError::Unsupported(
            "retention: the cluster's brokers run retention on their own schedule".into(),
        ))
    }

    fn compact(&self) -> Result<CompactionOutcome> {
        Err(StorageError::Unsupported(
            "compact: the cluster's brokers compact on their own schedule".into(),
        ))
    }

    fn segments(&self) -> Vec<SegmentInfo> {
        Vec::new()
    }

    fn live_keys(&self) -> Result<Vec<Vec<u8>>> {
        let keys = self.update_keys()?;
        Ok(keys
            .latest
            .iter()
            .filter(|(_, (_, live))| *live)
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn latest_for_key(&self, key: &[u8]) -> Result<Option<Record>> {
        let offset = match self.update_keys()?.latest.get(key) {
            Some(&(offset, true)) => offset,
            _ => return Ok(None),
        };
        self.read_record(offset)
    }

    fn commit_offset(&self, group: &str, offset: i64) -> Result<()> {
        let consumer = self
            .shared
            .groups
            .get(group)
            .map_err(|e| kafka_error(self.failure("OffsetCommit"), e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, self.partition as i32, Offset::Offset(offset))
            .map_err(|e| kafka_error(self.failure("OffsetCommit"), e))?;
        consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| kafka_error(self.failure("OffsetCommit"), e))
    }

    fn committed_offset(&self, group: &str) -> Result<Option<i64>> {
        let consumer = self
            .shared
            .groups
            .get(group)
            .map_err(|e| kafka_error(self.failure("OffsetFetch"), e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, self.partition as i32);
        let answer = consumer
            .committed_offsets(tpl, self.shared.options.client.request_timeout)
            .map_err(|e| kafka_error(self.failure("OffsetFetch"), e))?;
        let Some(element) = answer.find_partition(&self.topic, self.partition as i32) else {
            return Ok(None);
        };
        element
            .error()
            .map_err(|e| kafka_error(self.failure("OffsetFetch"), e))?;
        Ok(match element.offset() {
            Offset::Offset(n) if n >= 0 => Some(n),
            _ => None,
        })
    }

    fn groups(&self) -> Result<Vec<String>> {
        let list = self
            .shared
            .metadata
            .fetch_group_list(None, self.shared.options.client.request_timeout)
            .map_err(|e| kafka_error(self.failure("ListGroups"), e))?;
        let mut names: Vec<String> = list.groups().iter().map(|g| g.name().to_string()).collect();
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for name in names {
            if self.committed_offset(&name)?.is_some() {
                out.push(name);
            }
        }
        Ok(out)
    }
}
