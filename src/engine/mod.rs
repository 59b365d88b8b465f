//! The storage engine: Kafka's on-disk format, byte for byte.
//!
//! A partition is a directory of segments; each segment is a `.log` file of v2 record batches
//! plus a sparse `.index` (offset -> position) and `.timeindex` (timestamp -> offset).

pub mod checkpoint;
pub mod cleaner;
pub mod config;
pub mod error;
pub mod index;
pub mod io;
pub mod keys;
pub mod loader;
pub mod log;
pub mod manager;
pub mod offset_map;
pub mod offsets;
pub mod record;
pub mod retention;
pub mod segment;

pub use cleaner::{CleanerConfig, CompactionOutcome};
pub use config::LogConfig;
pub use error::{EngineError, Result};
pub use log::{AppendInfo, Log, ViewGeneration};
pub use manager::CleanupSettings;
pub use manager::LogManager;
pub use offsets::{ConsumerOffsets, GroupPartition, CONSUMER_OFFSETS_TOPIC};
pub use record::{Compression, Header, MemoryRecords, NewRecord, Record, TimestampType};
pub use retention::RetentionOutcome;

/// Milliseconds since the Unix epoch, as Kafka timestamps are.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
