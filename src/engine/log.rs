//! The partition log: an ordered list of segments, the last of which is active.

use std::path::{Path, PathBuf};

use super::record::{BatchHeader, NewRecord, Record};
use super::{LogConfig, Result};

/// What one append produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    /// The batch's max timestamp (its append time under `LogAppendTime`).
    pub max_timestamp: i64,
    /// Bytes the batch takes in the `.log`.
    pub batch_bytes: usize,
}

/// One batch as stored, with its header parsed and its raw bytes (CRC verified on read).
#[derive(Debug, Clone)]
pub struct FetchedBatch {
    pub header: BatchHeader,
    pub bytes: Vec<u8>,
}

/// A segment as seen from outside the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: i64,
    pub size_bytes: u64,
    pub log_path: PathBuf,
    pub offset_index_path: PathBuf,
    pub time_index_path: PathBuf,
    pub is_active: bool,
}

/// The outcome of the last roll, for `stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollOutcome {
    pub time_ms: i64,
    pub reason: String,
    pub new_base_offset: i64,
}

/// Facts about a partition log, for `stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStats {
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub recovery_point: i64,
    pub size_bytes: u64,
    pub segment_count: usize,
    pub last_roll: Option<RollOutcome>,
}

/// A partition's log.
pub struct Log {
    dir: PathBuf,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`. After an unclean stop, recovers from the
    /// recovery point; after a clean one, scans nothing.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log> {
        let _ = (dir, config);
        todo!()
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> LogConfig {
        todo!()
    }
    /// Applies a new config (roll/flush/size limits take effect from the next append).
    pub fn update_config(&self, config: LogConfig) {
        let _ = config;
        todo!()
    }
    /// Appends `records` as one batch, atomically: either all get offsets or none does.
    /// `RecordTooLarge` if the batch exceeds `max.message.bytes`.
    pub fn append(&self, records: &[NewRecord]) -> Result<AppendInfo> {
        let _ = records;
        todo!()
    }
    /// Records with offset >= `start_offset`, whole batches, until `max_bytes` of batch data
    /// (always at least one batch if any exists). `OffsetOutOfRange` below the log start or
    /// past the log end; an empty vector at the log end.
    pub fn read(&self, start_offset: i64, max_bytes: usize) -> Result<Vec<Record>> {
        let _ = (start_offset, max_bytes);
        todo!()
    }
    /// As [`Self::read`], but raw batches (the first may begin before `start_offset`).
    pub fn read_batches(&self, start_offset: i64, max_bytes: usize) -> Result<Vec<FetchedBatch>> {
        let _ = (start_offset, max_bytes);
        todo!()
    }
    /// The record at `offset`: `OffsetOutOfRange` outside [log start, log end), `Ok(None)` for
    /// an offset inside the range that no record has (removed by compaction).
    pub fn read_record(&self, offset: i64) -> Result<Option<Record>> {
        let _ = offset;
        todo!()
    }
    pub fn log_start_offset(&self) -> i64 {
        todo!()
    }
    pub fn log_end_offset(&self) -> i64 {
        todo!()
    }
    /// The first offset not yet known to be on disk.
    pub fn recovery_point(&self) -> i64 {
        todo!()
    }
    pub fn size_bytes(&self) -> u64 {
        todo!()
    }
    pub fn segment_count(&self) -> usize {
        todo!()
    }
    pub fn segments(&self) -> Vec<SegmentInfo> {
        todo!()
    }
    pub fn stats(&self) -> LogStats {
        todo!()
    }
    /// Kafka's ListOffsets: the first offset whose timestamp >= `timestamp_ms`, or the log end
    /// offset when there is none.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<i64> {
        let _ = timestamp_ms;
        todo!()
    }
    /// Rolls a new active segment (a no-op when the active segment is empty).
    pub fn roll(&self) -> Result<()> {
        todo!()
    }
    /// fsyncs everything appended so far and advances the recovery point.
    pub fn flush(&self) -> Result<()> {
        todo!()
    }
    /// Flushes if `flush.ms` says the oldest unflushed record is due. Called periodically.
    pub fn flush_if_due(&self, now_ms: i64) -> Result<bool> {
        let _ = now_ms;
        todo!()
    }
    /// Kafka's DeleteRecords: advances the log start offset to `offset` (at most the log end).
    /// Returns the new log start offset.
    pub fn delete_records(&self, offset: i64) -> Result<i64> {
        let _ = offset;
        todo!()
    }
    /// Removes every record with offset >= `offset`.
    pub fn truncate_to(&self, offset: i64) -> Result<()> {
        let _ = offset;
        todo!()
    }
    /// Flushes, trims the active indexes and writes the clean-shutdown marker. The log refuses
    /// further changes.
    pub fn close(&self) -> Result<()> {
        todo!()
    }
}
