//! Encoding and decoding of whole v2 record batches. See the module docs of
//! [`crate::engine::record`] for the byte layout.

use super::{Compression, NewRecord, Record, RecordError, TimestampType};

/// The fixed 61-byte header of a v2 batch, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf` (at least 61 bytes), checking magic and that
    /// `batch_length` is at least the header's remainder. Does not check the CRC.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, RecordError> {
        let _ = buf;
        todo!()
    }
    /// Offset of the last record: `base_offset + last_offset_delta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    /// Bytes the whole batch occupies in the log: 12 + `batch_length`.
    pub fn total_size(&self) -> usize {
        super::LOG_OVERHEAD + self.batch_length as usize
    }
    pub fn compression(&self) -> Result<Compression, RecordError> {
        let id = (self.attributes & 0x07) as u8;
        Compression::from_id(id).ok_or(RecordError::UnknownCompression(id))
    }
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & 0x08 != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
}

/// A batch with its records decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBatch {
    pub header: BatchHeader,
    pub records: Vec<Record>,
}

/// Encodes `records` as one v2 batch starting at `base_offset`.
///
/// Under `CreateTime` each record's timestamp is its own (`None` = `now_ms`); under
/// `LogAppendTime` the batch's `max_timestamp` is `now_ms` and the attribute bit is set.
/// `partition_leader_epoch` is 0; producer id/epoch/sequence are -1. Records get offset deltas
/// 0..n. Errors only when `records` is empty or compression fails.
pub fn encode_batch(
    base_offset: i64,
    records: &[NewRecord],
    compression: Compression,
    timestamp_type: TimestampType,
    now_ms: i64,
) -> Result<Vec<u8>, RecordError> {
    let _ = (base_offset, records, compression, timestamp_type, now_ms);
    todo!()
}

/// Checks a whole batch (`buf` is exactly one batch): header, length and CRC-32C.
pub fn verify_batch(buf: &[u8]) -> Result<BatchHeader, RecordError> {
    let _ = buf;
    todo!()
}

/// Decodes one whole batch (`buf` is exactly one batch, as `verify_batch` takes), verifying
/// its CRC, decompressing, and returning every record with absolute offsets and timestamps
/// (under `LogAppendTime`, every record's timestamp is the batch's `max_timestamp`).
pub fn decode_batch(buf: &[u8]) -> Result<DecodedBatch, RecordError> {
    let _ = buf;
    todo!()
}

/// Overwrites the `base_offset` field of an encoded batch in place (not covered by the CRC).
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
}
