//! The embedded engine behind the storage seam: [`LogManager`] is the [`Storage`], each
//! partition's [`Log`] (with the mount's cleaner settings) a [`Partition`]. Group offsets go to
//! the manager's internal `__consumer_offsets` topic ([`ConsumerOffsets`]).

use std::path::PathBuf;
use std::sync::Arc;

use super::{
    AppendInfo, CompactionOutcome, FetchedBatch, LogConfig, LogStats, NewRecord, Partition, Record,
    Result, RetentionOutcome, SegmentInfo, Storage, ViewGeneration,
};
use crate::engine::{
    now_ms, CleanerConfig, ConsumerOffsets, GroupPartition, Log, LogManager, MemoryRecords,
};

impl Storage for LogManager {
    fn topics(&self) -> Vec<String> {
        LogManager::topics(self)
    }

    fn validate_topic_name(&self, name: &str) -> Result<()> {
        LogManager::validate_topic_name(name)
    }

    fn create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        overrides: &[(String, String)],
    ) -> Result<()> {
        LogManager::create_topic(self, name, partitions, overrides)
    }

    fn delete_topic(&self, name: &str) -> Result<()> {
        LogManager::delete_topic(self, name)
    }

    fn partition_count(&self, topic: &str) -> Result<u32> {
        LogManager::partition_count(self, topic)
    }

    fn create_partitions(&self, topic: &str, count: u32) -> Result<()> {
        self.set_partition_count(topic, count)
    }

    fn describe_config(&self, topic: &str) -> Result<LogConfig> {
        self.topic_config(topic)
    }

    fn alter_config(&self, topic: &str, pairs: &[(String, String)]) -> Result<()> {
        self.alter_topic_config(topic, pairs)
    }

    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<dyn Partition>> {
        let log = self.log(topic, partition)?;
        if let Some(reason) = log.unavailable_reason() {
            // Quarantined at startup: everything under the partition answers EIO.
            return Err(crate::engine::EngineError::Corrupt {
                path: log.dir().to_path_buf(),
                position: 0,
                reason: format!("partition quarantined at startup: {reason}"),
            });
        }
        Ok(Arc::new(EmbeddedPartition {
            log,
            cleaner: self.cleanup_settings().cleaner,
            groups: Some(PartitionGroups {
                offsets: Arc::clone(self.consumer_offsets()),
                topic: topic.to_string(),
                partition,
            }),
        }))
    }

    fn flush_all(&self) -> Result<()> {
        LogManager::flush_all(self)
    }
}

/// A partition of the embedded engine.
pub struct EmbeddedPartition {
    log: Arc<Log>,
    cleaner: CleanerConfig,
    /// Where this partition's group offsets are stored; `None` for a bare log.
    groups: Option<PartitionGroups>,
}

/// A partition's place in the consumer offsets topic.
struct PartitionGroups {
    offsets: Arc<ConsumerOffsets>,
    topic: String,
    partition: u32,
}

impl PartitionGroups {
    fn key(&self, group: &str) -> GroupPartition {
        GroupPartition {
            group: group.to_string(),
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }
}

impl EmbeddedPartition {
    /// A partition over a bare `log` (no log manager), compacted with `cleaner` on command.
    /// Its group offset calls are `Unsupported`: offsets live in a data directory.
    pub fn new(log: Arc<Log>, cleaner: CleanerConfig) -> EmbeddedPartition {
        EmbeddedPartition {
            log,
            cleaner,
            groups: None,
        }
    }

    fn groups(&self) -> Result<&PartitionGroups> {
        self.groups.as_ref().ok_or_else(|| {
            crate::engine::EngineError::Unsupported(
                "consumer group offsets of a log outside a data directory".into(),
            )
        })
    }
}

impl Partition for EmbeddedPartition {
    fn location(&self) -> PathBuf {
        self.log.dir().to_path_buf()
    }

    fn append(&self, records: &[NewRecord]) -> Result<AppendInfo> {
        self.log.append(records)
    }

    fn append_values(&self, values: &[&[u8]]) -> Result<AppendInfo> {
        self.log.append_values(values)
    }

    fn fetch(&self, generation: u64, offset: i64, max_bytes: usize) -> Result<Vec<FetchedBatch>> {
        self.log.read_batches_at(generation, offset, max_bytes)
    }

    fn fetch_into(
        &self,
        generation: u64,
        offset: i64,
        max_bytes: usize,
        records: &mut MemoryRecords,
    ) -> Result<()> {
        self.log
            .read_into_at(generation, offset, max_bytes, records)
    }

    fn read_record(&self, offset: i64) -> Result<Option<Record>> {
        self.log.read_record(offset)
    }

    fn view_generation(&self) -> ViewGeneration {
        self.log.view_generation()
    }

    fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }

    fn list_offsets(&self, timestamp_ms: i64) -> Result<i64> {
        self.log.offset_for_timestamp(timestamp_ms)
    }

    fn config(&self) -> LogConfig {
        self.log.config()
    }

    fn stats(&self) -> LogStats {
        self.log.stats()
    }

    fn flush(&self) -> Result<i64> {
        self.log.flush()?;
        Ok(self.log.recovery_point())
    }

    fn roll(&self) -> Result<()> {
        self.log.roll()
    }

    fn delete_records(&self, offset: i64) -> Result<i64> {
        self.log.delete_records(offset)
    }

    fn retention(&self) -> Result<RetentionOutcome> {
        self.log.run_retention(now_ms())
    }

    fn compact(&self) -> Result<CompactionOutcome> {
        self.log.compact(now_ms(), true, &self.cleaner)
    }

    fn segments(&self) -> Vec<SegmentInfo> {
        self.log.segments()
    }

    fn live_keys(&self) -> Result<Vec<Vec<u8>>> {
        self.log.live_keys()
    }

    fn latest_for_key(&self, key: &[u8]) -> Result<Option<Record>> {
        self.log.latest_for_key(key)
    }

    /// `InvalidArgument` for a bad group name, an offset below 0 or past the log end.
    fn commit_offset(&self, group: &str, offset: i64) -> Result<()> {
        let groups = self.groups()?;
        groups.offsets.commit(&groups.key(group), offset, &self.log)
    }

    fn committed_offset(&self, group: &str) -> Result<Option<i64>> {
        let groups = self.groups()?;
        groups.offsets.committed(&groups.key(group))
    }

    fn groups(&self) -> Result<Vec<String>> {
        let groups = EmbeddedPartition::groups(self)?;
        groups.offsets.groups(&groups.topic, groups.partition)
    }

    fn store_view_state(&self, generation: u64, state: &[u8]) -> Result<bool> {
        self.log.store_view_state(generation, state)
    }

    fn read_view_state(&self, generation: u64, position: u64, max_bytes: usize) -> Option<Vec<u8>> {
        self.log.read_view_state(generation, position, max_bytes)
    }
}
