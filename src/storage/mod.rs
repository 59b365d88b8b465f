//! The one seam between the file interface and storage.
//!
//! [`crate::fs`] reaches records only through [`Storage`] (topics, partitions, configs) and
//! [`Partition`] (one partition's log), in Kafka's words: append, fetch, list offsets, create
//! topics and partitions, describe and alter configs, delete records, flush. The embedded engine
//! implements them first ([`embedded`]); a Kafka-protocol cluster can implement them next, and
//! answers [`StorageError::Unsupported`] for what has no meaning there (`roll`, `compact`,
//! `retention`, `segments/`).
//!
//! Errors are the engine's [`StorageError`] (= [`crate::engine::EngineError`]): its variants
//! already name what the file interface maps to an errno (unknown topic, offset out of range,
//! record too large, invalid argument, corrupt data, I/O).
//!
//! The types that cross the seam are plain data re-exported here: records to append
//! ([`NewRecord`]) and read ([`Record`]), raw batches ([`FetchedBatch`], decoded with
//! [`decode_batch`]), configs ([`LogConfig`]) and outcomes.

pub mod cluster;
pub mod embedded;

use std::path::PathBuf;
use std::sync::Arc;

pub use crate::engine::log::{AppendInfo, FetchedBatch, LogStats, RollOutcome, SegmentInfo};
pub use crate::engine::record::batch::{
    decode_batch, for_each_record, for_each_record_in_verified, RecordRef,
};
pub use crate::engine::{now_ms, EngineError as StorageError, Result};
pub use crate::engine::{
    CompactionOutcome, Header, LogConfig, MemoryRecords, NewRecord, Record, RetentionOutcome,
    TimestampType, ViewGeneration,
};

/// Topics, their partitions and configs: the cluster-wide half of storage.
///
/// Implementations are shared between the filesystem's threads.
pub trait Storage: Send + Sync {
    /// Every topic name, sorted.
    fn topics(&self) -> Vec<String>;

    /// Kafka's topic name rules; `InvalidTopicName` says why a name is refused.
    fn validate_topic_name(&self, name: &str) -> Result<()>;

    /// CreateTopics: `partitions` (`None`: the default) with config `overrides`.
    fn create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        overrides: &[(String, String)],
    ) -> Result<()>;

    /// DeleteTopics: the topic and all its data.
    fn delete_topic(&self, name: &str) -> Result<()>;

    /// The topic's partition count (`UnknownTopic` if there is no such topic).
    fn partition_count(&self, topic: &str) -> Result<u32>;

    /// CreatePartitions: grows the topic to `count` partitions (never shrinks).
    fn create_partitions(&self, topic: &str, count: u32) -> Result<()>;

    /// DescribeConfigs: the effective config of the topic.
    fn describe_config(&self, topic: &str) -> Result<LogConfig>;

    /// IncrementalAlterConfigs: sets the given keys, all validated before any changes.
    fn alter_config(&self, topic: &str, pairs: &[(String, String)]) -> Result<()>;

    /// One partition (`UnknownTopic` / `UnknownPartition`).
    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<dyn Partition>>;

    /// Makes everything appended so far durable, on every partition.
    fn flush_all(&self) -> Result<()>;

    /// Registers `watcher`, called with (topic, partition) when records that other writers
    /// appended (another mount or client of a shared cluster) become readable, so waiting
    /// readers wake. Appends through this mount are the file interface's to announce. Storage
    /// that only this mount writes never calls it: the default does nothing.
    fn watch_appends(&self, _watcher: AppendWatcher) {}
}

/// Told about records other writers appended: (topic, partition).
pub type AppendWatcher = Arc<dyn Fn(&str, u32) + Send + Sync>;

/// One partition's log.
pub trait Partition: Send + Sync {
    /// Where this partition lives, for log lines (a directory, or `topic-partition@cluster`).
    fn location(&self) -> PathBuf;

    /// Produce: appends `records` atomically, readable by every reader when this returns.
    fn append(&self, records: &[NewRecord]) -> Result<AppendInfo>;

    /// [`Self::append`] of plain values (no key, headers or timestamp), as lines of `append`
    /// are. Storage that can encode them without a [`NewRecord`] each overrides this.
    fn append_values(&self, values: &[&[u8]]) -> Result<AppendInfo> {
        let records: Vec<NewRecord> = values.iter().map(|v| NewRecord::value(*v)).collect();
        self.append(&records)
    }

    /// Fetch: whole batches from the one holding `offset`, up to about `max_bytes` (at least
    /// one batch when any exists), as the log was at view generation `generation`.
    fn fetch(&self, generation: u64, offset: i64, max_bytes: usize) -> Result<Vec<FetchedBatch>>;

    /// [`Self::fetch`] into `records`, whose buffers a reader keeps from one fetch to the next
    /// (what it held is replaced; empty after an error). By default a copy of what
    /// [`Self::fetch`] returns.
    fn fetch_into(
        &self,
        generation: u64,
        offset: i64,
        max_bytes: usize,
        records: &mut MemoryRecords,
    ) -> Result<()> {
        match self.fetch(generation, offset, max_bytes) {
            Ok(batches) => {
                records.fill(
                    offset,
                    batches.iter().map(|b| (b.header, b.bytes.as_slice())),
                );
                Ok(())
            }
            Err(e) => {
                records.fill(offset, []);
                Err(e)
            }
        }
    }

    /// The record at `offset`: `OffsetOutOfRange` outside [log start, log end), `None` for an
    /// offset no record has (removed by compaction).
    fn read_record(&self, offset: i64) -> Result<Option<Record>>;

    /// The current view generation: it changes when records below the log end are removed.
    fn view_generation(&self) -> ViewGeneration;

    fn log_start_offset(&self) -> i64;

    fn log_end_offset(&self) -> i64;

    /// ListOffsets: the first offset whose timestamp is >= `timestamp_ms`, or the log end.
    fn list_offsets(&self, timestamp_ms: i64) -> Result<i64>;

    /// The partition's effective config.
    fn config(&self) -> LogConfig;

    /// Facts for `stats`.
    fn stats(&self) -> LogStats;

    /// Makes everything appended so far durable; returns the recovery point after it.
    fn flush(&self) -> Result<i64>;

    /// Starts a new segment (`Unsupported` where segments are not ours).
    fn roll(&self) -> Result<()>;

    /// DeleteRecords: advances the log start offset; returns the new one.
    fn delete_records(&self, offset: i64) -> Result<i64>;

    /// Runs retention now (`Unsupported` on a cluster: the brokers run it).
    fn retention(&self) -> Result<RetentionOutcome>;

    /// Compacts now, whatever the dirty ratio (`Unsupported` on a cluster).
    fn compact(&self) -> Result<CompactionOutcome>;

    /// The segment files (empty where they are not local).
    fn segments(&self) -> Vec<SegmentInfo>;

    /// The live keys (latest record not a tombstone), sorted bytewise.
    fn live_keys(&self) -> Result<Vec<Vec<u8>>>;

    /// The latest record of `key`, `None` when the key is not live.
    fn latest_for_key(&self, key: &[u8]) -> Result<Option<Record>>;

    /// OffsetCommit: stores `offset` as `group`'s committed offset of this partition.
    fn commit_offset(&self, group: &str, offset: i64) -> Result<()>;

    /// OffsetFetch: `group`'s committed offset of this partition, `None` if it never committed.
    fn committed_offset(&self, group: &str) -> Result<Option<i64>>;

    /// The groups that committed an offset of this partition, sorted.
    fn groups(&self) -> Result<Vec<String>>;

    /// Keeps `state`, an opaque blob the file layer derived from the records of view
    /// generation `generation` (its view position maps), across a clean restart. Returns
    /// whether it was stored: not when the generation has moved on, nor by storage that keeps
    /// no such state (the default).
    fn store_view_state(&self, _generation: u64, _state: &[u8]) -> Result<bool> {
        Ok(false)
    }

    /// Up to `max_bytes` of the blob [`Self::store_view_state`] stored for view generation
    /// `generation`, from byte `position` on (fewer at its end), when storage still believes
    /// it describes a prefix of that generation's records. The caller validates it all the
    /// same. The default keeps nothing.
    fn read_view_state(
        &self,
        _generation: u64,
        _position: u64,
        _max_bytes: usize,
    ) -> Option<Vec<u8>> {
        None
    }
}
