//! The engine's error type. Each variant carries what a person needs to act on it.

use std::path::PathBuf;

use crate::engine::config::ConfigError;
use crate::engine::record::RecordError;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid record batch: {0}")]
    Record(#[from] RecordError),

    #[error("corrupt data in {path} at position {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },

    #[error("corrupt index {path}: {reason}")]
    CorruptIndex { path: PathBuf, reason: String },

    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset})")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },

    #[error("record batch of {size} bytes exceeds max.message.bytes={max_message_bytes}")]
    RecordTooLarge {
        size: usize,
        max_message_bytes: usize,
    },

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: String },

    #[error("topic {0:?} already exists")]
    TopicExists(String),

    #[error("unknown topic {0:?}")]
    UnknownTopic(String),

    #[error("unknown partition {partition} of topic {topic:?}")]
    UnknownPartition { topic: String, partition: u32 },

    #[error("partition count of {topic:?} can only grow: it has {current}, asked for {requested}")]
    PartitionCountDecrease {
        topic: String,
        current: u32,
        requested: u32,
    },

    #[error("data directory {path} is in use by another lmqfs process (lock file {lock})")]
    DataDirLocked { path: PathBuf, lock: PathBuf },

    #[error("the log is closed")]
    Closed,

    /// The storage behind the mount cannot do this (a cluster has no local segments to roll).
    #[error("not supported by this storage: {0}")]
    Unsupported(String),
}

impl EngineError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Adds a path to `std::io::Result`s: `file.sync_all().at(&path)?`.
pub trait IoResultExt<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoResultExt<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| EngineError::io(path, source))
    }
}
