//! Kafka v2 record batches ("magic 2"): the unit of append, storage and replication.
//!
//! Byte layout of one batch (all integers big-endian; this is what a `.log` file is a sequence of):
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset             i64   offset of the first record
//!      8     4  batch_length            i32   bytes after this field (total size = 12 + batch_length)
//!     12     4  partition_leader_epoch  i32
//!     16     1  magic                   i8    always 2
//!     17     4  crc                     u32   CRC-32C (Castagnoli) of bytes 21..end
//!     21     2  attributes              i16   bits 0-2 compression, 3 timestamp type,
//!                                             4 transactional, 5 control
//!     23     4  last_offset_delta       i32
//!     27     8  base_timestamp          i64   ("first timestamp")
//!     35     8  max_timestamp           i64
//!     43     8  producer_id             i64   -1 when none
//!     51     2  producer_epoch          i16   -1 when none
//!     53     4  base_sequence           i32   -1 when none
//!     57     4  records_count           i32
//!     61     .  records                 (compressed as a whole when attributes say so)
//! ```
//!
//! Each record: `length` varint, `attributes` i8 (0), `timestamp_delta` varlong,
//! `offset_delta` varint, `key_length` varint (-1 = null) + key, `value_length` varint
//! (-1 = null, a tombstone) + value, `headers_count` varint, then per header
//! `key_length` varint + key (UTF-8), `value_length` varint (-1 = null) + value.
//! Varints are zigzag-encoded, as in protobuf.
//!
//! The CRC does not cover `base_offset`, `batch_length`, `partition_leader_epoch` or `magic`, so
//! the log can encode (and compress) a batch before it knows the offset, then patch
//! `base_offset` in place under its lock.
//!
//! Decoding any byte string returns either records or a typed [`RecordError`]; it never panics.

pub mod batch;
pub mod compression;
pub mod memory_records;
pub mod varint;

pub use batch::{
    decode_batch, encode_batch, encode_value_batch, find_record, for_each_record,
    for_each_record_in_verified, set_base_offset, verify_batch, BatchHeader, BatchRecords,
    DecodedBatch, HeadersRef, RecordRef,
};
pub use compression::MAX_DECOMPRESSED_BYTES;
pub use memory_records::MemoryRecords;

/// Bytes in a v2 batch header, before the records.
pub const BATCH_HEADER_SIZE: usize = 61;
/// Bytes of `base_offset` + `batch_length`, the prefix every log entry has.
pub const LOG_OVERHEAD: usize = 12;
/// The only batch format this engine writes and reads.
pub const MAGIC_V2: i8 = 2;
/// `producer_id` when there is no idempotent producer.
pub const NO_PRODUCER_ID: i64 = -1;
/// `producer_epoch` when there is no idempotent producer.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// `base_sequence` when there is no idempotent producer.
pub const NO_SEQUENCE: i32 = -1;

/// Which clock a batch's timestamps come from (attribute bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// The producer's timestamp, per record.
    CreateTime,
    /// The log's clock at append; every record of the batch reads `max_timestamp`.
    LogAppendTime,
}

impl TimestampType {
    /// Kafka's name for the type, as `message.timestamp.type` spells it.
    pub fn name(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }
}

/// Batch compression codec (attribute bits 0-2), with Kafka's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Compression {
    /// Kafka's name for the codec, as `compression.type` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// The codec with Kafka's id `id` (attribute bits 0-2), if there is one.
    pub fn from_id(id: u8) -> Option<Compression> {
        Some(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => return None,
        })
    }

    /// Every codec, in id order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
}

/// A record header. Keys are strings in Kafka; values are nullable bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// A record to append: the log assigns its offset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewRecord {
    pub key: Option<Vec<u8>>,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    /// Used under `CreateTime`; `None` means "now".
    pub timestamp: Option<i64>,
}

impl NewRecord {
    /// A record with only a value.
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        NewRecord {
            value: Some(value.into()),
            ..Default::default()
        }
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub timestamp: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
}

/// Why a byte string is not a valid v2 record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("unsupported magic {0} (only v2 is supported)")]
    UnsupportedMagic(i8),
    #[error("invalid batch length {0}")]
    InvalidBatchLength(i32),
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("unknown compression codec id {0}")]
    UnknownCompression(u8),
    #[error("{codec} decompression failed: {reason}")]
    Decompression { codec: &'static str, reason: String },
    #[error("{codec} compression failed: {reason}")]
    Compression { codec: &'static str, reason: String },
    #[error("malformed record {index}: {reason}")]
    MalformedRecord { index: usize, reason: String },
    #[error("record count {declared} does not match the {actual} records present")]
    RecordCountMismatch { declared: i32, actual: usize },
    #[error("header key is not UTF-8 in record {index}")]
    HeaderKeyNotUtf8 { index: usize },
    #[error("batch has no records")]
    Empty,
}
