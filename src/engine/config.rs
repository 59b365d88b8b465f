//! Per-topic log configuration, with Kafka's key names, units and defaults.

use super::record::{Compression, TimestampType};

/// Which cleanup a topic's closed segments get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

/// The effective configuration of one partition log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes` (1 GiB): roll when the active segment would exceed this.
    pub segment_bytes: u32,
    /// `segment.ms` (7 d): roll when the active segment's first batch is this old.
    pub segment_ms: i64,
    /// `segment.messages` (unlimited = None): roll after this many records.
    pub segment_messages: Option<u64>,
    /// `segment.index.bytes` (10 MiB): preallocated size of each index.
    pub segment_index_bytes: u32,
    /// `index.interval.bytes` (4096): log bytes between index entries.
    pub index_interval_bytes: u32,
    /// `retention.ms` (7 d; -1 = unlimited).
    pub retention_ms: i64,
    /// `retention.bytes` (-1 = unlimited).
    pub retention_bytes: i64,
    /// `cleanup.policy` (`delete`).
    pub cleanup_policy: CleanupPolicy,
    /// `min.cleanable.dirty.ratio` (0.5).
    pub min_cleanable_dirty_ratio: f64,
    /// `delete.retention.ms` (1 d).
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms` (0).
    pub min_compaction_lag_ms: i64,
    /// `max.message.bytes` (1 MiB): largest batch accepted, in bytes.
    pub max_message_bytes: u32,
    /// `message.timestamp.type` (`CreateTime`).
    pub message_timestamp_type: TimestampType,
    /// `compression.type` (`none` here; Kafka's `producer` has no meaning without a producer).
    pub compression_type: Compression,
    /// `flush.messages` (off = None): fsync after this many unflushed records.
    pub flush_messages: Option<u64>,
    /// `flush.ms` (off = None): fsync when the oldest unflushed record is this old.
    pub flush_ms: Option<i64>,
    /// `file.delete.delay.ms` (60 s).
    pub file_delete_delay_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            segment_messages: None,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            cleanup_policy: CleanupPolicy {
                delete: true,
                compact: false,
            },
            min_cleanable_dirty_ratio: 0.5,
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
            max_message_bytes: 1024 * 1024,
            message_timestamp_type: TimestampType::CreateTime,
            compression_type: Compression::None,
            flush_messages: None,
            flush_ms: None,
            file_delete_delay_ms: 60_000,
        }
    }
}

/// Why a config key or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown config key {key:?}")]
    UnknownKey { key: String },
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("malformed config line {line:?}: expected key=value")]
    MalformedLine { line: String },
}
