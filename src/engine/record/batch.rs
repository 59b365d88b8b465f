//! Encoding and decoding of whole v2 record batches. See the module docs of
//! [`crate::engine::record`] for the byte layout.

use super::compression;
use super::varint::{self, read_varint, read_varlong, VarintError};
use super::{
    Compression, Header, NewRecord, Record, RecordError, TimestampType, BATCH_HEADER_SIZE,
    LOG_OVERHEAD, MAGIC_V2, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};

/// Byte position of `base_offset` in a batch.
pub const BASE_OFFSET_OFFSET: usize = 0;
/// Byte position of `batch_length`.
pub const BATCH_LENGTH_OFFSET: usize = 8;
/// Byte position of `partition_leader_epoch`.
pub const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
/// Byte position of `magic`.
pub const MAGIC_OFFSET: usize = 16;
/// Byte position of `crc`.
pub const CRC_OFFSET: usize = 17;
/// Byte position of `attributes`, where the CRC-covered region starts.
pub const ATTRIBUTES_OFFSET: usize = 21;
/// Byte position of `last_offset_delta`.
pub const LAST_OFFSET_DELTA_OFFSET: usize = 23;
/// Byte position of `base_timestamp`.
pub const BASE_TIMESTAMP_OFFSET: usize = 27;
/// Byte position of `max_timestamp`.
pub const MAX_TIMESTAMP_OFFSET: usize = 35;
/// Byte position of `producer_id`.
pub const PRODUCER_ID_OFFSET: usize = 43;
/// Byte position of `producer_epoch`.
pub const PRODUCER_EPOCH_OFFSET: usize = 51;
/// Byte position of `base_sequence`.
pub const BASE_SEQUENCE_OFFSET: usize = 53;
/// Byte position of `records_count`.
pub const RECORDS_COUNT_OFFSET: usize = 57;

/// Attribute bits 0-2: the compression codec id.
pub const COMPRESSION_CODEC_MASK: i16 = 0x07;
/// Attribute bit 3: set when timestamps are `LogAppendTime`.
pub const TIMESTAMP_TYPE_MASK: i16 = 0x08;
/// Attribute bit 4: transactional batch.
pub const TRANSACTIONAL_FLAG_MASK: i16 = 0x10;
/// Attribute bit 5: control batch.
pub const CONTROL_FLAG_MASK: i16 = 0x20;
/// Attribute bit 6: `base_timestamp` holds the batch's delete horizon (Kafka's KIP-534): the time
/// after which the cleaner may drop its tombstones. Record timestamps stay exact: their deltas
/// are relative to whatever `base_timestamp` holds.
pub const DELETE_HORIZON_FLAG_MASK: i16 = 0x40;

/// Smallest encoded record: a one-byte length, then attributes, timestamp delta, offset delta,
/// key length, value length and header count, one byte each.
const MIN_RECORD_SIZE: usize = 7;

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
    ///
    /// When at least the 17 bytes up to `magic` are present and magic is not 2, the error is
    /// [`RecordError::UnsupportedMagic`] (older message formats are shorter than 61 bytes).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, RecordError> {
        if let Some(&magic) = buf.get(MAGIC_OFFSET) {
            if magic as i8 != MAGIC_V2 {
                return Err(RecordError::UnsupportedMagic(magic as i8));
            }
        }
        let Some(h) = buf.first_chunk::<BATCH_HEADER_SIZE>() else {
            return Err(RecordError::Truncated {
                needed: BATCH_HEADER_SIZE,
                available: buf.len(),
            });
        };
        let header = BatchHeader {
            base_offset: i64::from_be_bytes(field(h, BASE_OFFSET_OFFSET)),
            batch_length: i32::from_be_bytes(field(h, BATCH_LENGTH_OFFSET)),
            partition_leader_epoch: i32::from_be_bytes(field(h, PARTITION_LEADER_EPOCH_OFFSET)),
            magic: h[MAGIC_OFFSET] as i8,
            crc: u32::from_be_bytes(field(h, CRC_OFFSET)),
            attributes: i16::from_be_bytes(field(h, ATTRIBUTES_OFFSET)),
            last_offset_delta: i32::from_be_bytes(field(h, LAST_OFFSET_DELTA_OFFSET)),
            base_timestamp: i64::from_be_bytes(field(h, BASE_TIMESTAMP_OFFSET)),
            max_timestamp: i64::from_be_bytes(field(h, MAX_TIMESTAMP_OFFSET)),
            producer_id: i64::from_be_bytes(field(h, PRODUCER_ID_OFFSET)),
            producer_epoch: i16::from_be_bytes(field(h, PRODUCER_EPOCH_OFFSET)),
            base_sequence: i32::from_be_bytes(field(h, BASE_SEQUENCE_OFFSET)),
            records_count: i32::from_be_bytes(field(h, RECORDS_COUNT_OFFSET)),
        };
        if (header.batch_length as i64) < (BATCH_HEADER_SIZE - LOG_OVERHEAD) as i64 {
            return Err(RecordError::InvalidBatchLength(header.batch_length));
        }
        Ok(header)
    }
    /// Offset of the last record: `base_offset + last_offset_delta`.
    /// Wraps rather than overflows on a corrupt header, so callers validating offsets see a
    /// wrong value instead of a panic.
    pub fn last_offset(&self) -> i64 {
        self.base_offset.wrapping_add(self.last_offset_delta as i64)
    }
    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }
    /// Bytes the whole batch occupies in the log: 12 + `batch_length`.
    pub fn total_size(&self) -> usize {
        super::LOG_OVERHEAD + self.batch_length as usize
    }
    /// The codec in attribute bits 0-2; ids 5-7 are [`RecordError::UnknownCompression`].
    pub fn compression(&self) -> Result<Compression, RecordError> {
        let id = (self.attributes & 0x07) as u8;
        Compression::from_id(id).ok_or(RecordError::UnknownCompression(id))
    }
    /// The timestamp type in attribute bit 3.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & 0x08 != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
    /// Attribute bit 4.
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    /// Attribute bit 5.
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
    /// The delete horizon the cleaner stamped on this batch (attribute bit 6), if any.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes & DELETE_HORIZON_FLAG_MASK != 0).then_some(self.base_timestamp)
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
///
/// As in Kafka's `MemoryRecordsBuilder`, `base_timestamp` is the first record's timestamp (not
/// the smallest) and deltas may be negative. Under `LogAppendTime` the records' own
/// timestamps are not used, so `base_timestamp` is `now_ms` too and every delta is 0: then even
/// a reader that ignores the timestamp-type bit reads the log append time.
pub fn encode_batch(
    base_offset: i64,
    records: &[NewRecord],
    compression: Compression,
    timestamp_type: TimestampType,
    now_ms: i64,
) -> Result<Vec<u8>, RecordError> {
    let Some(first) = records.first() else {
        return Err(RecordError::Empty);
    };
    let last_index = records.len() - 1;
    let last_offset_delta =
        i32::try_from(last_index).map_err(|_| RecordError::MalformedRecord {
            index: last_index,
            reason: format!("{} records do not fit one batch", records.len()),
        })?;
    let (base_timestamp, max_timestamp) = match timestamp_type {
        TimestampType::CreateTime => {
            let max = records
                .iter()
                .map(|r| r.timestamp.unwrap_or(now_ms))
                .max()
                .unwrap_or(now_ms);
            (first.timestamp.unwrap_or(now_ms), max)
        }
        TimestampType::LogAppendTime => (now_ms, now_ms),
    };

    let records_estimate: usize = records.iter().map(estimated_record_size).sum();
    let mut body = Vec::with_capacity(BATCH_HEADER_SIZE + records_estimate);
    if compression == Compression::None {
        body.resize(BATCH_HEADER_SIZE, 0);
    }
    write_records(&mut body, records, timestamp_type, base_timestamp, now_ms)?;
    finish_new_batch(
        body,
        NewBatch {
            base_offset,
            last_index,
            last_offset_delta,
            base_timestamp,
            max_timestamp,
            compression,
            timestamp_type,
        },
    )
}

/// What [`finish_new_batch`] writes into the header of a batch made here.
struct NewBatch {
    base_offset: i64,
    last_index: usize,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    compression: Compression,
    timestamp_type: TimestampType,
}

/// The common end of [`encode_batch`] and [`encode_value_batch`]: `body` holds the records,
/// behind a zeroed header when uncompressed and alone otherwise; they are compressed if asked,
/// then the header is filled in and sealed with its CRC.
fn finish_new_batch(body: Vec<u8>, batch: NewBatch) -> Result<Vec<u8>, RecordError> {
    let mut out = if batch.compression == Compression::None {
        body
    } else {
        let compressed = compression::compress(batch.compression, &body)?;
        let mut out = Vec::with_capacity(BATCH_HEADER_SIZE + compressed.len());
        out.resize(BATCH_HEADER_SIZE, 0);
        out.extend_from_slice(&compressed);
        out
    };
    let batch_length = batch_length(&out, batch.last_index)?;
    seal(&batch.header(batch_length), &mut out);
    Ok(out)
}

impl NewBatch {
    /// The header of this batch once its `batch_length` is known (CRC 0: [`seal`] sets it).
    fn header(&self, batch_length: i32) -> BatchHeader {
        let mut attributes = self.compression as i16;
        if self.timestamp_type == TimestampType::LogAppendTime {
            attributes |= TIMESTAMP_TYPE_MASK;
        }
        BatchHeader {
            base_offset: self.base_offset,
            batch_length,
            partition_leader_epoch: 0,
            magic: MAGIC_V2,
            crc: 0,
            attributes,
            last_offset_delta: self.last_offset_delta,
            base_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            records_count: self.last_offset_delta + 1,
        }
    }
}

/// Encodes plain values (no key, no headers, timestamp `now_ms`) as one v2 batch starting at
/// `base_offset`: the bytes [`encode_batch`] writes for `NewRecord::value` of each, without a
/// `NewRecord` per value. Errors only when `values` is empty or compression fails.
pub fn encode_value_batch(
    base_offset: i64,
    values: &[&[u8]],
    compression: Compression,
    timestamp_type: TimestampType,
    now_ms: i64,
) -> Result<Vec<u8>, RecordError> {
    let mut out = VectoredBatches::new(Vec::new(), usize::MAX);
    encode_value_batch_vectored(&mut out, values, compression, timestamp_type, now_ms)?;
    out.set_base_offset(0, base_offset);
    Ok(out.into_buffer())
}

/// Batches encoded for one vectored write (`pwritev`): the bytes made here (batch headers,
/// record prefixes, short values) and the long values, borrowed from the caller instead of
/// copied, in write order. Base offsets are 0 until [`Self::set_base_offset`].
///
/// This is the produce path: a long value is read once (by the CRC) and copied once (by the
/// kernel, into the page cache). A short one is cheaper to copy beside its prefix than to give
/// its own `iovec`.
#[derive(Debug)]
pub struct VectoredBatches<'v> {
    /// Headers, prefixes and short values.
    own: Vec<u8>,
    /// The write, in order: ranges of `own` and borrowed values.
    pieces: Vec<Piece<'v>>,
    /// Where each batch starts.
    batches: Vec<BatchMark>,
    /// Bytes of all the pieces.
    len: usize,
    /// Values at least this long are borrowed.
    borrow_from: usize,
}

#[derive(Debug, Clone, Copy)]
enum Piece<'v> {
    Own { start: usize, end: usize },
    Borrowed(&'v [u8]),
}

/// Where a batch starts in a [`VectoredBatches`] (its header is at `own` in its own bytes).
#[derive(Debug, Clone, Copy)]
struct BatchMark {
    own: usize,
    pieces: usize,
    len: usize,
}

impl<'v> VectoredBatches<'v> {
    /// Batches made in `buffer` (emptied; a buffer kept from an earlier append saves
    /// growing a new one), borrowing values of at least `borrow_from` bytes.
    pub fn new(mut buffer: Vec<u8>, borrow_from: usize) -> Self {
        buffer.clear();
        VectoredBatches {
            own: buffer,
            pieces: Vec::new(),
            batches: Vec::new(),
            len: 0,
            borrow_from,
        }
    }

    /// The buffer of the bytes made here, for reuse (or, when nothing was borrowed, the batches
    /// themselves).
    pub fn into_buffer(self) -> Vec<u8> {
        self.own
    }

    /// Bytes of all the batches.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many batches there are.
    pub fn batch_count(&self) -> usize {
        self.batches.len()
    }

    /// Adds a batch encoded elsewhere (taken over as the buffer when it is the first and the
    /// buffer has less room, else copied).
    pub fn push_batch(&mut self, batch: Vec<u8>) {
        let mark = self.mark();
        self.len += batch.len();
        if self.own.is_empty() && self.own.capacity() < batch.len() {
            self.own = batch;
        } else {
            self.own.extend_from_slice(&batch);
        }
        self.seal_own(mark.own);
        self.batches.push(mark);
    }

    /// Drops the batches from the `count`th on.
    pub fn truncate_batches(&mut self, count: usize) {
        if let Some(&mark) = self.batches.get(count) {
            self.own.truncate(mark.own);
            self.pieces.truncate(mark.pieces);
            self.len = mark.len;
            self.batches.truncate(count);
        }
    }

    /// The first [`BATCH_HEADER_SIZE`] bytes of batch `index`.
    pub fn header_bytes(&self, index: usize) -> &[u8] {
        let at = self.batches[index].own;
        &self.own[at..at + BATCH_HEADER_SIZE]
    }

    /// Sets the base offset of batch `index` (not covered by its CRC).
    pub fn set_base_offset(&mut self, index: usize, base_offset: i64) {
        let at = self.batches[index].own;
        set_base_offset(&mut self.own[at..], base_offset);
    }

    /// The pieces to write, in order.
    pub fn io_slices(&self) -> Vec<std::io::IoSlice<'_>> {
        self.pieces
            .iter()
            .map(|piece| match *piece {
                Piece::Own { start, end } => std::io::IoSlice::new(&self.own[start..end]),
                Piece::Borrowed(value) => std::io::IoSlice::new(value),
            })
            .collect()
    }

    fn mark(&self) -> BatchMark {
        BatchMark {
            own: self.own.len(),
            pieces: self.pieces.len(),
            len: self.len,
        }
    }

    /// Makes `own[start..]` the next piece (if it is not empty).
    fn seal_own(&mut self, start: usize) {
        let end = self.own.len();
        if end > start {
            self.pieces.push(Piece::Own { start, end });
        }
    }
}

/// [`encode_value_batch`] adding the batch to `out` (base offset 0); on error `out` is as it
/// was.
///
/// Uncompressed, the header is known before the records (their count and the timestamps; the
/// batch length is outside the CRC), so the CRC-32C is computed right behind the writing, while
/// those bytes are still in cache, and over borrowed values where they are.
pub fn encode_value_batch_vectored<'v>(
    out: &mut VectoredBatches<'v>,
    values: &[&'v [u8]],
    compression: Compression,
    timestamp_type: TimestampType,
    now_ms: i64,
) -> Result<(), RecordError> {
    if values.is_empty() {
        return Err(RecordError::Empty);
    }
    let last_index = values.len() - 1;
    let last_offset_delta =
        i32::try_from(last_index).map_err(|_| RecordError::MalformedRecord {
            index: last_index,
            reason: format!("{} records do not fit one batch", values.len()),
        })?;
    // One cheap pass for the room the records take at most, and to refuse a value the format
    // cannot hold (the exact error comes from `check_value_record`).
    let (mut value_bytes, mut longest) = (0usize, 0usize);
    for value in values {
        value_bytes += value.len();
        longest = longest.max(value.len());
    }
    if longest > MAX_PLAIN_VALUE_BYTES {
        for (index, value) in values.iter().enumerate() {
            check_value_record(index, value.len())?;
        }
    }
    let room = value_bytes + values.len() * MAX_VALUE_RECORD_OVERHEAD;
    let batch = NewBatch {
        base_offset: 0,
        last_index,
        last_offset_delta,
        base_timestamp: now_ms,
        max_timestamp: now_ms,
        compression,
        timestamp_type,
    };
    if compression != Compression::None {
        let mut raw = Vec::with_capacity(room);
        let mut offset_delta_size = OffsetDeltaSize::default();
        for (index, value) in values.iter().enumerate() {
            put_value_prefix(&mut raw, index, offset_delta_size.next(index), value.len());
            raw.extend_from_slice(value);
            raw.push(0);
        }
        out.push_batch(finish_new_batch(raw, batch)?);
        return Ok(());
    }
    let mark = out.mark();
    let own_room = if longest < out.borrow_from {
        room
    } else {
        values.len() * MAX_VALUE_RECORD_OVERHEAD
    };
    out.own.reserve(BATCH_HEADER_SIZE + own_room);
    out.own.resize(mark.own + BATCH_HEADER_SIZE, 0);
    write_header(&batch.header(0), &mut out.own[mark.own..]);
    let mut crc = crc32c::crc32c(&out.own[mark.own + ATTRIBUTES_OFFSET..]);
    // Own bytes not yet in a piece, and not yet in the CRC.
    let (mut piece_from, mut crc_from) = (mark.own, mark.own + BATCH_HEADER_SIZE);
    let mut borrowed = 0;
    let mut offset_delta_size = OffsetDeltaSize::default();
    for (index, &value) in values.iter().enumerate() {
        put_value_prefix(
            &mut out.own,
            index,
            offset_delta_size.next(index),
            value.len(),
        );
        if value.len() >= out.borrow_from {
            crc = crc32c::crc32c_append(crc, &out.own[crc_from..]);
            crc = crc32c::crc32c_append(crc, value);
            crc_from = out.own.len();
            out.seal_own(piece_from);
            out.pieces.push(Piece::Borrowed(value));
            piece_from = out.own.len();
            borrowed += value.len();
        } else {
            out.own.extend_from_slice(value);
        }
        out.own.push(0);
        if out.own.len() - crc_from >= CRC_CHUNK_BYTES {
            crc = crc32c::crc32c_append(crc, &out.own[crc_from..]);
            crc_from = out.own.len();
        }
    }
    crc = crc32c::crc32c_append(crc, &out.own[crc_from..]);
    out.seal_own(piece_from);
    let total = out.own.len() - mark.own + borrowed;
    let Ok(batch_length) = i32::try_from(total - LOG_OVERHEAD) else {
        out.own.truncate(mark.own);
        out.pieces.truncate(mark.pieces);
        return Err(RecordError::MalformedRecord {
            index: last_index,
            reason: format!("batch of {total} bytes exceeds the format's 2 GiB limit"),
        });
    };
    let header = &mut out.own[mark.own..mark.own + BATCH_HEADER_SIZE];
    header[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4]
        .copy_from_slice(&batch_length.to_be_bytes());
    header[CRC_OFFSET..ATTRIBUTES_OFFSET].copy_from_slice(&crc.to_be_bytes());
    out.len += total;
    out.batches.push(mark);
    Ok(())
}

/// How many own bytes the CRC of [`encode_value_batch_vectored`] lets pile up: few enough to
/// still be in the L1/L2 cache.
const CRC_CHUNK_BYTES: usize = 16 * 1024;

/// Values up to this long always make a record the format can hold (its body length, an
/// `i32`, adds at most [`MAX_VALUE_RECORD_OVERHEAD`] bytes).
const MAX_PLAIN_VALUE_BYTES: usize = i32::MAX as usize - 32;

/// Most bytes a plain value's record adds to the value: a body length, attributes, timestamp
/// delta, offset delta, key length, value length and header count.
const MAX_VALUE_RECORD_OVERHEAD: usize = 5 + 1 + 1 + 5 + 1 + 5 + 1;

/// Refuses a value whose record the format cannot hold (its length and its record's body length
/// are `i32`s).
fn check_value_record(index: usize, value_len: usize) -> Result<(), RecordError> {
    let value_len = i32::try_from(value_len).map_err(|_| RecordError::MalformedRecord {
        index,
        reason: format!("value of {value_len} bytes exceeds the format's 2 GiB limit"),
    })?;
    let body_size = 1
        + 1
        + varint::varint_size(index as i32)
        + 1
        + varint::varint_size(value_len)
        + value_len as usize
        + 1;
    i32::try_from(body_size).map_err(|_| RecordError::MalformedRecord {
        index,
        reason: format!("record of {body_size} bytes exceeds the format's 2 GiB limit"),
    })?;
    Ok(())
}

/// The varint size of consecutive offset deltas 0, 1, 2...: one byte more at 64, 8192, ...
#[derive(Debug)]
struct OffsetDeltaSize {
    size: usize,
    next_size_at: usize,
}

impl Default for OffsetDeltaSize {
    fn default() -> Self {
        OffsetDeltaSize {
            size: 1,
            next_size_at: 64,
        }
    }
}

impl OffsetDeltaSize {
    /// The size for `index`, the one after the previous call's.
    #[inline(always)]
    fn next(&mut self, index: usize) -> usize {
        if index == self.next_size_at {
            self.size += 1;
            self.next_size_at <<= 7;
        }
        debug_assert_eq!(self.size, varint::varint_size(index as i32));
        self.size
    }
}

/// Appends the record prefix of a plain value (lengths checked by [`check_value_record`]):
/// body length, attributes 0, timestamp delta 0, offset delta, key length -1, value length.
/// The value and the header count 0 follow it.
///
/// Each byte is pushed on its own: assembled in a stack array and copied as one block, the
/// copy waited on the byte stores (a store-forwarding stall that cost more than the rest).
#[inline(always)]
fn put_value_prefix(out: &mut Vec<u8>, index: usize, offset_delta_size: usize, value_len: usize) {
    let value_len = value_len as i32;
    let body_len = 4 + offset_delta_size as i32 + varint::varint_size(value_len) as i32 + value_len;
    put_varint(out, body_len);
    out.push(0);
    out.push(0);
    put_varint(out, index as i32);
    out.push(1);
    put_varint(out, value_len);
}

/// Appends `value` as a zigzag varint to `out`.
#[inline(always)]
fn put_varint(out: &mut Vec<u8>, value: i32) {
    let mut v = varint::zigzag_encode_i32(value);
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Re-encodes the `records` kept from the batch `original` (a non-empty subset of its records,
/// in offset order), as Kafka's cleaner does: same base offset, codec (the records are
/// recompressed), timestamp type, producer fields and leader epoch; each record keeps its offset,
/// timestamp, key, value and headers. `last_offset_delta` and `records_count` describe the kept
/// records. With `delete_horizon_ms`, attribute bit 6 is set and `base_timestamp` holds it.
pub fn encode_retained(
    original: &BatchHeader,
    records: &[Record],
    delete_horizon_ms: Option<i64>,
) -> Result<Vec<u8>, RecordError> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Err(RecordError::Empty);
    };
    let compression = original.compression()?;
    let timestamp_type = original.timestamp_type();
    let last_offset_delta = i32::try_from(last.offset - original.base_offset).map_err(|_| {
        RecordError::MalformedRecord {
            index: records.len() - 1,
            reason: "offset too far from the batch's base offset".into(),
        }
    })?;
    let base_timestamp = match (delete_horizon_ms, timestamp_type) {
        (Some(horizon), _) => horizon,
        (None, TimestampType::CreateTime) => first.timestamp,
        (None, TimestampType::LogAppendTime) => original.base_timestamp,
    };
    let max_timestamp = match timestamp_type {
        TimestampType::CreateTime => records.iter().map(|r| r.timestamp).max().unwrap_or(-1),
        TimestampType::LogAppendTime => original.max_timestamp,
    };
    let mut raw = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let offset_delta = i32::try_from(record.offset - original.base_offset)
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| RecordError::MalformedRecord {
                index,
                reason: format!(
                    "offset {} is outside the batch at {}",
                    record.offset, original.base_offset
                ),
            })?;
        let timestamp_delta = match timestamp_type {
            TimestampType::CreateTime => record.timestamp.wrapping_sub(base_timestamp),
            TimestampType::LogAppendTime => 0,
        };
        let new = NewRecord {
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record.headers.clone(),
            timestamp: Some(record.timestamp),
        };
        write_record(&mut raw, index, &new, offset_delta, timestamp_delta)?;
    }
    let mut out = Vec::with_capacity(BATCH_HEADER_SIZE + raw.len());
    out.resize(BATCH_HEADER_SIZE, 0);
    if compression == Compression::None {
        out.extend_from_slice(&raw);
    } else {
        out.extend_from_slice(&compression::compress(compression, &raw)?);
    }
    let batch_length = batch_length(&out, records.len() - 1)?;
    let mut attributes = original.attributes & !DELETE_HORIZON_FLAG_MASK;
    if delete_horizon_ms.is_some() {
        attributes |= DELETE_HORIZON_FLAG_MASK;
    }
    let header = BatchHeader {
        base_offset: original.base_offset,
        batch_length,
        partition_leader_epoch: original.partition_leader_epoch,
        magic: MAGIC_V2,
        crc: 0,
        attributes,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id: original.producer_id,
        producer_epoch: original.producer_epoch,
        base_sequence: original.base_sequence,
        records_count: records.len() as i32,
    };
    seal(&header, &mut out);
    Ok(out)
}

/// The `batch_length` field of the batch in `out` (header included), checked to fit.
fn batch_length(out: &[u8], last_index: usize) -> Result<i32, RecordError> {
    i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| RecordError::MalformedRecord {
        index: last_index,
        reason: format!(
            "batch of {} bytes exceeds the format's 2 GiB limit",
            out.len()
        ),
    })
}

/// Writes `header` (its CRC field ignored) into the batch in `out`, then the CRC-32C of
/// attributes..end.
fn seal(header: &BatchHeader, out: &mut [u8]) {
    write_header(header, &mut out[..BATCH_HEADER_SIZE]);
    let crc = crc32c::crc32c(&out[ATTRIBUTES_OFFSET..]);
    out[CRC_OFFSET..ATTRIBUTES_OFFSET].copy_from_slice(&crc.to_be_bytes());
    debug_assert_eq!(verify_batch(out).map(|h| h.crc), Ok(crc));
}

/// Checks a whole batch (`buf` is exactly one batch): header, length and CRC-32C.
///
/// `buf` shorter than the batch's `batch_length` says is [`RecordError::Truncated`]; longer is
/// [`RecordError::InvalidBatchLength`], since the caller sliced it by some other length.
pub fn verify_batch(buf: &[u8]) -> Result<BatchHeader, RecordError> {
    let header = BatchHeader::parse(buf)?;
    let total = header.total_size();
    if buf.len() < total {
        return Err(RecordError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    if buf.len() > total {
        return Err(RecordError::InvalidBatchLength(header.batch_length));
    }
    let computed = crc32c::crc32c(&buf[ATTRIBUTES_OFFSET..]);
    if computed != header.crc {
        return Err(RecordError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Decodes one whole batch (`buf` is exactly one batch, as `verify_batch` takes), verifying
/// its CRC, decompressing, and returning every record with absolute offsets and timestamps
/// (under `LogAppendTime`, every record's timestamp is the batch's `max_timestamp`).
///
/// A batch with `records_count` 0 (Kafka keeps such batches after compaction) decodes to no
/// records. Compressed records may expand to at most
/// [`compression::MAX_DECOMPRESSED_BYTES`].
pub fn decode_batch(buf: &[u8]) -> Result<DecodedBatch, RecordError> {
    let mut scratch = Vec::new();
    let (header, section) = open_batch(buf, true, &mut scratch)?;
    let records = decode_records(&header, section)?;
    Ok(DecodedBatch { header, records })
}

/// A record of a batch, borrowed from the batch's (or its decompressed records') bytes: what
/// [`for_each_record`] and [`BatchRecords`] yield. Every field was checked as
/// [`decode_batch`] checks it (header keys are UTF-8); [`RecordRef::to_record`] makes the
/// owned [`Record`] `decode_batch` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: HeadersRef<'a>,
}

impl RecordRef<'_> {
    /// The record, owned.
    pub fn to_record(&self) -> Record {
        Record {
            offset: self.offset,
            timestamp: self.timestamp,
            timestamp_type: self.timestamp_type,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self
                .headers
                .iter()
                .map(|(key, value)| Header {
                    key: key.to_owned(),
                    value: value.map(<[u8]>::to_vec),
                })
                .collect(),
        }
    }
}

/// The headers of a [`RecordRef`], still encoded: `count` headers of (varint key length, UTF-8
/// key, varint value length (-1 = null), value), checked when the record was parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadersRef<'a> {
    count: usize,
    bytes: &'a [u8],
}

impl<'a> HeadersRef<'a> {
    /// How many headers the record has.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the record has no headers.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Each header's key and value (`None` = null), in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        let mut c = Cursor {
            buf: self.bytes,
            index: 0,
        };
        // `record_ref` parsed these bytes with the same steps and they passed, so no step
        // fails here; were one to, the header would be skipped rather than a panic.
        (0..self.count).map(move |_| c.header().unwrap_or(("", None)))
    }
}

/// The records of one batch's records section (uncompressed), in order, borrowed from it;
/// records before `from_offset` are skipped by their length prefix alone (see
/// [`for_each_record`]). Yields exactly the records [`decode_batch`] returns (those from
/// `from_offset`), and the same [`RecordError`] where one is malformed, after which it ends.
/// It checks the declared count against the records found and, once all were read, that no
/// bytes follow them.
///
/// [`BatchRecords::next_record`] is the loop for callers that stop at the first error (`?`).
#[derive(Clone)]
pub struct BatchRecords<'a> {
    rest: &'a [u8],
    /// The index of the next record.
    index: usize,
    /// The declared `records_count`, checked non-negative.
    count: usize,
    context: RecordContext,
    from_offset: i64,
    /// Set after an error, or once the end was checked.
    done: bool,
}

impl std::fmt::Debug for BatchRecords<'_> {
    /// Where the walk is, not the bytes left.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRecords")
            .field("index", &self.index)
            .field("count", &self.count)
            .field("bytes_left", &self.rest.len())
            .field("from_offset", &self.from_offset)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<'a> BatchRecords<'a> {
    /// The records of `section`, the records of the batch whose header is `header` (after
    /// decompression when the batch is compressed), from `from_offset`. A negative
    /// `records_count` is [`RecordError::RecordCountMismatch`].
    pub fn new(
        header: &BatchHeader,
        section: &'a [u8],
        from_offset: i64,
    ) -> Result<BatchRecords<'a>, RecordError> {
        let declared = header.records_count;
        let Ok(count) = usize::try_from(declared) else {
            return Err(RecordError::RecordCountMismatch {
                declared,
                actual: 0,
            });
        };
        Ok(BatchRecords {
            rest: section,
            index: 0,
            count,
            context: RecordContext {
                base_offset: header.base_offset,
                base_timestamp: header.base_timestamp,
                max_timestamp: header.max_timestamp,
                timestamp_type: header.timestamp_type(),
            },
            from_offset,
            done: false,
        })
    }

    /// A walk that has ended: no records.
    pub(crate) fn empty() -> BatchRecords<'static> {
        BatchRecords {
            rest: &[],
            index: 0,
            count: 0,
            context: RecordContext {
                base_offset: 0,
                base_timestamp: 0,
                max_timestamp: 0,
                timestamp_type: TimestampType::CreateTime,
            },
            from_offset: 0,
            done: true,
        }
    }

    /// The next record, `None` after the last; an error ends the walk (later calls return
    /// `None`).
    #[inline(always)]
    pub fn next_record(&mut self) -> Result<Option<RecordRef<'a>>, RecordError> {
        if let Some(record) = self.next_common() {
            return Ok(Some(record));
        }
        self.next_in_full()
    }

    /// [`Self::next_record`] of any record, any position, any error: the careful parse.
    #[inline(never)]
    fn next_in_full(&mut self) -> Result<Option<RecordRef<'a>>, RecordError> {
        if self.done {
            return Ok(None);
        }
        match self.step() {
            Ok(found) => Ok(found),
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    /// The next record when it has the common shape: at or after `from_offset`, every
    /// varint of at most 3 bytes, no headers, and not in the last few bytes of the section
    /// (so each varint is one 4-byte load). `None` for anything else, the state then
    /// untouched: [`Self::next_in_full`] takes over and parses it (or finds the error) as
    /// [`decode_batch`] would. Where both parse a record they agree: same fields, same checks.
    #[inline(always)]
    pub(crate) fn next_common(&mut self) -> Option<RecordRef<'a>> {
        let index = self.index;
        if self.done || index >= self.count {
            return None;
        }
        let ctx = &self.context;
        let offset_base = ctx.base_offset;
        if offset_base.wrapping_add(index as i64) < self.from_offset {
            return None;
        }
        let rest = self.rest;
        let (body_len, mut at) = short_varint_at(rest, 0)?;
        let body_len = usize::try_from(body_len).ok()?;
        let body_end = at.checked_add(body_len)?;
        if body_end > rest.len() {
            return None;
        }
        at += 1; // attributes
        let (timestamp_delta, used) = short_varint_at(rest, at)?;
        at = used;
        let (offset_delta, used) = short_varint_at(rest, at)?;
        at = used;
        let (key_len, used) = short_varint_at(rest, at)?;
        at = used;
        let key = match key_len {
            -1 => None,
            len => {
                let end = at + usize::try_from(len).ok()?;
                let key = rest.get(at..end)?;
                at = end;
                Some(key)
            }
        };
        let (value_len, used) = short_varint_at(rest, at)?;
        at = used;
        let value = match value_len {
            -1 => None,
            len => {
                let end = at + usize::try_from(len).ok()?;
                let value = rest.get(at..end)?;
                at = end;
                Some(value)
            }
        };
        // No headers: a header count of 0, and the body ends there.
        if at + 1 != body_end || rest[at] != 0 {
            return None;
        }
        self.rest = &rest[body_end..];
        self.index = index + 1;
        let timestamp = match ctx.timestamp_type {
            TimestampType::CreateTime => ctx.base_timestamp.wrapping_add(timestamp_delta as i64),
            TimestampType::LogAppendTime => ctx.max_timestamp,
        };
        Some(RecordRef {
            offset: offset_base.wrapping_add(offset_delta as i64),
            timestamp,
            timestamp_type: ctx.timestamp_type,
            key,
            value,
            headers: HeadersRef {
                count: 0,
                bytes: &[],
            },
        })
    }

    /// The body of the next record, with its index; `None` after the last (then the end is
    /// checked).
    #[inline(always)]
    fn next_body(&mut self) -> Result<Option<(usize, &'a [u8])>, RecordError> {
        let index = self.index;
        if index == self.count {
            self.done = true;
            if !self.rest.is_empty() {
                return Err(trailing_bytes(self.count, self.rest.len()));
            }
            return Ok(None);
        }
        if self.rest.is_empty() {
            return Err(RecordError::RecordCountMismatch {
                declared: self.count as i32,
                actual: index,
            });
        }
        let mut cursor = Cursor {
            buf: self.rest,
            index,
        };
        let body_len = cursor.length("negative record length")?;
        let body = cursor.take(body_len, "record body")?;
        self.rest = cursor.buf;
        self.index = index + 1;
        Ok(Some((index, body)))
    }

    #[inline(always)]
    fn step(&mut self) -> Result<Option<RecordRef<'a>>, RecordError> {
        loop {
            let Some((index, body)) = self.next_body()? else {
                return Ok(None);
            };
            let base_offset = self.context.base_offset;
            if base_offset.wrapping_add(index as i64) < self.from_offset {
                // Offset deltas strictly increase from 0, so delta >= index: only a record
                // whose index puts it before `from_offset` needs its delta read to know.
                let mut c = Cursor { buf: body, index };
                c.take(1, "attributes")?;
                c.varlong()?;
                if base_offset.wrapping_add(c.varint()? as i64) < self.from_offset {
                    continue;
                }
            }
            return record_ref(&self.context, index, body).map(Some);
        }
    }
}

impl<'a> Iterator for BatchRecords<'a> {
    type Item = Result<RecordRef<'a>, RecordError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// The zigzag varint at `buf[at..]` and the position after it, read with one 4-byte load:
/// `None` when it is longer than 3 bytes or fewer than 4 bytes are left (the careful reader
/// decides those).
#[inline(always)]
fn short_varint_at(buf: &[u8], at: usize) -> Option<(i32, usize)> {
    let word = u32::from_le_bytes(*buf.get(at..)?.first_chunk::<4>()?);
    let (raw, used) = if word & 0x80 == 0 {
        (word & 0x7f, 1)
    } else if word & 0x8000 == 0 {
        ((word & 0x7f) | ((word >> 1) & 0x3f80), 2)
    } else if word & 0x80_0000 == 0 {
        (
            (word & 0x7f) | ((word >> 1) & 0x3f80) | ((word >> 2) & 0x1f_c000),
            3,
        )
    } else {
        return None;
    };
    Some((varint::zigzag_decode_i32(raw), at + used))
}

#[cold]
#[inline(never)]
fn trailing_bytes(count: usize, left: usize) -> RecordError {
    RecordError::MalformedRecord {
        index: count,
        reason: format!("{left} bytes after the {count} declared records"),
    }
}

/// Visits the records of one whole batch (`buf` is exactly one batch, CRC verified as
/// [`decode_batch`] does) in order, without allocating per record, until `visit` returns
/// false. Only records with offset >= `from_offset` are visited; records of an uncompressed
/// batch before it are skipped by their length prefix alone, so finding one record in a large
/// batch reads each earlier record's first byte or two. A compressed batch is decompressed
/// once into `scratch` (whose allocation is reused). Returns the batch header.
///
/// The records visited are exactly those [`decode_batch`] returns; a malformed record is
/// the same [`RecordError`] (records skipped by length are checked only for fitting).
pub fn for_each_record<'a>(
    buf: &'a [u8],
    from_offset: i64,
    scratch: &'a mut Vec<u8>,
    visit: impl FnMut(RecordRef<'a>) -> bool,
) -> Result<BatchHeader, RecordError> {
    for_each_record_in(buf, true, from_offset, scratch, visit)
}

/// [`for_each_record`] of a batch whose CRC was verified when it was read (a batch from
/// [`crate::engine::Log::read_batches`]): the CRC is not computed again, which for a large
/// batch is most of the cost of visiting its records. Everything else is checked as there.
pub fn for_each_record_in_verified<'a>(
    buf: &'a [u8],
    from_offset: i64,
    scratch: &'a mut Vec<u8>,
    visit: impl FnMut(RecordRef<'a>) -> bool,
) -> Result<BatchHeader, RecordError> {
    for_each_record_in(buf, false, from_offset, scratch, visit)
}

fn for_each_record_in<'a>(
    buf: &'a [u8],
    verify: bool,
    from_offset: i64,
    scratch: &'a mut Vec<u8>,
    mut visit: impl FnMut(RecordRef<'a>) -> bool,
) -> Result<BatchHeader, RecordError> {
    let (header, section) = open_batch(buf, verify, scratch)?;
    let mut records = BatchRecords::new(&header, section, from_offset)?;
    while let Some(record) = records.next_record()? {
        if !visit(record) {
            break;
        }
    }
    Ok(header)
}

/// The record at `offset` in one whole batch (CRC verified), decoded alone: the records before
/// it are skipped by their length prefix (see [`for_each_record`]). `None` when the batch has
/// no record at `offset` (compaction removed it, or it is outside the batch).
pub fn find_record(buf: &[u8], offset: i64) -> Result<Option<Record>, RecordError> {
    find_record_in(buf, true, offset)
}

/// [`find_record`] in a batch whose CRC was verified when it was read (a cached batch): the
/// CRC is not computed again.
pub fn find_record_in_verified(buf: &[u8], offset: i64) -> Result<Option<Record>, RecordError> {
    find_record_in(buf, false, offset)
}

fn find_record_in(buf: &[u8], verify: bool, offset: i64) -> Result<Option<Record>, RecordError> {
    let mut scratch = Vec::new();
    let (header, section) = open_batch(buf, verify, &mut scratch)?;
    let first = BatchRecords::new(&header, section, offset)?.next_record()?;
    Ok(first.filter(|r| r.offset == offset).map(|r| r.to_record()))
}

/// The header and the (uncompressed) records section of one whole batch: `buf` itself past
/// the header, or its records decompressed into `scratch` (cleared first). `verify`: check the
/// CRC (else only that `buf` is exactly one batch).
fn open_batch<'a>(
    buf: &'a [u8],
    verify: bool,
    scratch: &'a mut Vec<u8>,
) -> Result<(BatchHeader, &'a [u8]), RecordError> {
    let header = if verify {
        verify_batch(buf)?
    } else {
        let header = BatchHeader::parse(buf)?;
        if buf.len() != header.total_size() {
            return Err(RecordError::InvalidBatchLength(header.batch_length));
        }
        header
    };
    let codec = header.compression()?;
    let section: &'a [u8] = if codec == Compression::None {
        &buf[BATCH_HEADER_SIZE..]
    } else {
        scratch.clear();
        compression::decompress_into(codec, &buf[BATCH_HEADER_SIZE..], scratch)?;
        scratch.as_slice()
    };
    Ok((header, section))
}

/// Parses the record `index` of a batch from its `body` (the bytes its length prefix covers).
/// The one record parser: an owned record ([`decode_batch`]) is this and
/// [`RecordRef::to_record`].
#[inline(always)]
fn record_ref<'a>(
    ctx: &RecordContext,
    index: usize,
    body: &'a [u8],
) -> Result<RecordRef<'a>, RecordError> {
    let mut c = Cursor { buf: body, index };
    let _attributes = c.take(1, "attributes")?;
    let timestamp_delta = c.varlong()?;
    let offset_delta = c.varint()?;
    let key = c.nullable_slice("key")?;
    let value = c.nullable_slice("value")?;
    let header_count = c.varint()?;
    let header_count =
        usize::try_from(header_count).map_err(|_| c.malformed("negative header count"))?;
    let headers = c.buf;
    for _ in 0..header_count {
        c.header()?;
    }
    if !c.buf.is_empty() {
        return Err(c.left_over());
    }
    let timestamp = match ctx.timestamp_type {
        TimestampType::CreateTime => ctx.base_timestamp.wrapping_add(timestamp_delta),
        TimestampType::LogAppendTime => ctx.max_timestamp,
    };
    Ok(RecordRef {
        offset: ctx.base_offset.wrapping_add(offset_delta as i64),
        timestamp,
        timestamp_type: ctx.timestamp_type,
        key,
        value,
        headers: HeadersRef {
            count: header_count,
            bytes: headers,
        },
    })
}

/// Overwrites the `base_offset` field of an encoded batch in place (not covered by the CRC).
///
/// Panics if `buf` is shorter than 8 bytes.
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// The `N` bytes of `h` at `at`.
#[inline]
fn field<const N: usize>(h: &[u8; BATCH_HEADER_SIZE], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&h[at..at + N]);
    out
}

/// Writes `header` into the first 61 bytes of a batch.
fn write_header(header: &BatchHeader, out: &mut [u8]) {
    let mut put = |at: usize, bytes: &[u8]| out[at..at + bytes.len()].copy_from_slice(bytes);
    put(BASE_OFFSET_OFFSET, &header.base_offset.to_be_bytes());
    put(BATCH_LENGTH_OFFSET, &header.batch_length.to_be_bytes());
    put(
        PARTITION_LEADER_EPOCH_OFFSET,
        &header.partition_leader_epoch.to_be_bytes(),
    );
    put(MAGIC_OFFSET, &header.magic.to_be_bytes());
    put(CRC_OFFSET, &header.crc.to_be_bytes());
    put(ATTRIBUTES_OFFSET, &header.attributes.to_be_bytes());
    put(
        LAST_OFFSET_DELTA_OFFSET,
        &header.last_offset_delta.to_be_bytes(),
    );
    put(BASE_TIMESTAMP_OFFSET, &header.base_timestamp.to_be_bytes());
    put(MAX_TIMESTAMP_OFFSET, &header.max_timestamp.to_be_bytes());
    put(PRODUCER_ID_OFFSET, &header.producer_id.to_be_bytes());
    put(PRODUCER_EPOCH_OFFSET, &header.producer_epoch.to_be_bytes());
    put(BASE_SEQUENCE_OFFSET, &header.base_sequence.to_be_bytes());
    put(RECORDS_COUNT_OFFSET, &header.records_count.to_be_bytes());
}

fn estimated_record_size(r: &NewRecord) -> usize {
    let headers: usize = r
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len) + 4)
        .sum();
    r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len) + headers + 24
}

/// Appends every record, each framed by its varint length.
fn write_records(
    out: &mut Vec<u8>,
    records: &[NewRecord],
    timestamp_type: TimestampType,
    base_timestamp: i64,
    now_ms: i64,
) -> Result<(), RecordError> {
    for (index, record) in records.iter().enumerate() {
        let timestamp_delta = match timestamp_type {
            TimestampType::CreateTime => record
                .timestamp
                .unwrap_or(now_ms)
                .wrapping_sub(base_timestamp),
            TimestampType::LogAppendTime => 0,
        };
        // `encode_batch` checked that the count fits an i32.
        write_record(out, index, record, index as i32, timestamp_delta)?;
    }
    Ok(())
}

fn write_record(
    out: &mut Vec<u8>,
    index: usize,
    record: &NewRecord,
    offset_delta: i32,
    timestamp_delta: i64,
) -> Result<(), RecordError> {
    let too_long = |what: &str, len: usize| RecordError::MalformedRecord {
        index,
        reason: format!("{what} of {len} bytes exceeds the format's 2 GiB limit"),
    };
    let len_i32 = |what: &str, len: usize| i32::try_from(len).map_err(|_| too_long(what, len));
    let nullable_size = |what: &str, b: &Option<Vec<u8>>| -> Result<usize, RecordError> {
        Ok(match b {
            None => 1,
            Some(b) => varint::varint_size(len_i32(what, b.len())?) + b.len(),
        })
    };

    let mut body_size = 1
        + varint::varlong_size(timestamp_delta)
        + varint::varint_size(offset_delta)
        + nullable_size("key", &record.key)?
        + nullable_size("value", &record.value)?
        + varint::varint_size(len_i32("header count", record.headers.len())?);
    for header in &record.headers {
        body_size += varint::varint_size(len_i32("header key", header.key.len())?)
            + header.key.len()
            + nullable_size("header value", &header.value)?;
    }
    let body_len = len_i32("record", body_size)?;

    out.reserve(varint::varint_size(body_len) + body_size);
    varint::write_varint(out, body_len);
    let body_start = out.len();
    out.push(0); // record attributes: unused in v2
    varint::write_varlong(out, timestamp_delta);
    varint::write_varint(out, offset_delta);
    write_nullable(out, record.key.as_deref());
    write_nullable(out, record.value.as_deref());
    varint::write_varint(out, record.headers.len() as i32);
    for header in &record.headers {
        varint::write_varint(out, header.key.len() as i32);
        out.extend_from_slice(header.key.as_bytes());
        write_nullable(out, header.value.as_deref());
    }
    debug_assert_eq!(out.len() - body_start, body_size, "record {index} size");
    Ok(())
}

/// Writes a varint length (-1 for null) and the bytes. Lengths were checked by the caller.
fn write_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => varint::write_varint(out, -1),
        Some(b) => {
            varint::write_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

/// Decodes the (uncompressed) records section of a batch whose header is `header`.
fn decode_records(header: &BatchHeader, section: &[u8]) -> Result<Vec<Record>, RecordError> {
    // Never trust the declared count for the allocation: each record takes at least
    // MIN_RECORD_SIZE bytes.
    let declared = usize::try_from(header.records_count).unwrap_or(0);
    let mut records = Vec::with_capacity(declared.min(section.len() / MIN_RECORD_SIZE));
    let mut walk = BatchRecords::new(header, section, i64::MIN)?;
    while let Some(record) = walk.next_record()? {
        records.push(record.to_record());
    }
    Ok(records)
}

/// What every record of a batch takes from its header.
#[derive(Debug, Clone, Copy)]
struct RecordContext {
    base_offset: i64,
    base_timestamp: i64,
    max_timestamp: i64,
    timestamp_type: TimestampType,
}

/// Reads the fields of record `index` from the front of `buf`. The checks are inline and the
/// errors built out of line, so the common path is a few compares per field.
struct Cursor<'a> {
    buf: &'a [u8],
    index: usize,
}

impl<'a> Cursor<'a> {
    #[cold]
    #[inline(never)]
    fn malformed(&self, reason: &str) -> RecordError {
        RecordError::MalformedRecord {
            index: self.index,
            reason: reason.to_owned(),
        }
    }

    #[cold]
    #[inline(never)]
    fn varint_error(&self, e: VarintError) -> RecordError {
        RecordError::MalformedRecord {
            index: self.index,
            reason: e.to_string(),
        }
    }

    #[cold]
    #[inline(never)]
    fn short(&self, len: usize, what: &str) -> RecordError {
        self.malformed(&format!(
            "{what} of {len} bytes but only {} left",
            self.buf.len()
        ))
    }

    #[cold]
    #[inline(never)]
    fn bad_length(&self, len: i32, what: &str) -> RecordError {
        self.malformed(&format!("{what} length {len}"))
    }

    #[cold]
    #[inline(never)]
    fn left_over(&self) -> RecordError {
        self.malformed(&format!(
            "{} bytes left over inside the record",
            self.buf.len()
        ))
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<i32, RecordError> {
        match read_varint(self.buf) {
            Ok((value, used)) => {
                self.buf = &self.buf[used..];
                Ok(value)
            }
            Err(e) => Err(self.varint_error(e)),
        }
    }

    #[inline(always)]
    fn varlong(&mut self) -> Result<i64, RecordError> {
        match read_varlong(self.buf) {
            Ok((value, used)) => {
                self.buf = &self.buf[used..];
                Ok(value)
            }
            Err(e) => Err(self.varint_error(e)),
        }
    }

    /// A varint that must not be negative (the error says `negative` otherwise).
    #[inline(always)]
    fn length(&mut self, negative: &str) -> Result<usize, RecordError> {
        let len = self.varint()?;
        match usize::try_from(len) {
            Ok(len) => Ok(len),
            Err(_) => Err(self.malformed(negative)),
        }
    }

    #[inline(always)]
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], RecordError> {
        match self.buf.split_at_checked(len) {
            Some((taken, rest)) => {
                self.buf = rest;
                Ok(taken)
            }
            None => Err(self.short(len, what)),
        }
    }

    /// A varint length (-1 = null) and that many bytes.
    #[inline(always)]
    fn nullable_slice(&mut self, what: &str) -> Result<Option<&'a [u8]>, RecordError> {
        match self.varint()? {
            -1 => Ok(None),
            len if len < 0 => Err(self.bad_length(len, what)),
            len => Ok(Some(self.take(len as usize, what)?)),
        }
    }

    /// One record header: a key (UTF-8) and a nullable value.
    fn header(&mut self) -> Result<(&'a str, Option<&'a [u8]>), RecordError> {
        let key_len = self.varint()?;
        let key_len =
            usize::try_from(key_len).map_err(|_| self.malformed("negative header key length"))?;
        let key_bytes = self.take(key_len, "header key")?;
        let key = std::str::from_utf8(key_bytes)
            .map_err(|_| RecordError::HeaderKeyNotUtf8 { index: self.index })?;
        let value = self.nullable_slice("header value")?;
        Ok((key, value))
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retained_records_keep_offsets_timestamps_and_codec() {
        for codec in Compression::ALL {
            for timestamp_type in [TimestampType::CreateTime, TimestampType::LogAppendTime] {
                let records: Vec<NewRecord> = (0..6)
                    .map(|i| NewRecord {
                        key: Some(format!("k{i}").into_bytes()),
                        value: (i != 3).then(|| format!("v{i}").into_bytes()),
                        headers: vec![Header {
                            key: "h".into(),
                            value: Some(vec![i as u8]),
                        }],
                        timestamp: Some(1000 + 10 * i),
                    })
                    .collect();
                let mut bytes = encode_batch(0, &records, codec, timestamp_type, 5000).unwrap();
                set_base_offset(&mut bytes, 100);
                let original = decode_batch(&bytes).unwrap();
                let kept: Vec<Record> = original
                    .records
                    .iter()
                    .filter(|r| r.offset % 2 == 1)
                    .cloned()
                    .collect();
                for horizon in [None, Some(99_999)] {
                    let encoded = encode_retained(&original.header, &kept, horizon).unwrap();
                    let decoded = decode_batch(&encoded).unwrap();
                    assert_eq!(decoded.records, kept, "{codec:?} {timestamp_type:?}");
                    let h = decoded.header;
                    assert_eq!(h.base_offset, 100);
                    assert_eq!(h.last_offset(), 105);
                    assert_eq!(h.records_count, 3);
                    assert_eq!(h.compression().unwrap(), codec);
                    assert_eq!(h.timestamp_type(), timestamp_type);
                    assert_eq!(h.delete_horizon_ms(), horizon);
                    let want_max = match timestamp_type {
                        TimestampType::CreateTime => 1050,
                        TimestampType::LogAppendTime => 5000,
                    };
                    assert_eq!(h.max_timestamp, want_max);
                }
            }
        }
        let one = encode_batch(
            0,
            &[NewRecord::value("x")],
            Compression::None,
            TimestampType::CreateTime,
            0,
        )
        .unwrap();
        let header = BatchHeader::parse(&one).unwrap();
        assert_eq!(encode_retained(&header, &[], None), Err(RecordError::Empty));
    }
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000_000;

    fn header(key: &str, value: Option<&[u8]>) -> Header {
        Header {
            key: key.to_owned(),
            value: value.map(<[u8]>::to_vec),
        }
    }

    /// A mix of every record shape: keys, null keys, tombstones, empty values, headers with
    /// null values, explicit and default timestamps (out of order, so base != min).
    fn sample_records() -> Vec<NewRecord> {
        vec![
            NewRecord {
                key: Some(b"k1".to_vec()),
                value: Some(b"v1".to_vec()),
                headers: vec![],
                timestamp: Some(NOW - 10),
            },
            NewRecord {
                key: None,
                value: Some(b"no key".to_vec()),
                headers: vec![header("h", Some(b"x")), header("null-value", None)],
                timestamp: Some(NOW - 500),
            },
            NewRecord {
                key: Some(b"k1".to_vec()),
                value: None,
                headers: vec![],
                timestamp: None,
            },
            NewRecord {
                key: Some(Vec::new()),
                value: Some(Vec::new()),
                headers: vec![header("", Some(b""))],
                timestamp: Some(NOW + 1000),
            },
            NewRecord::value(vec![0xab; 300]),
        ]
    }

    fn expected(
        base_offset: i64,
        records: &[NewRecord],
        timestamp_type: TimestampType,
    ) -> Vec<Record> {
        records
            .iter()
            .enumerate()
            .map(|(i, r)| Record {
                offset: base_offset + i as i64,
                timestamp: match timestamp_type {
                    TimestampType::CreateTime => r.timestamp.unwrap_or(NOW),
                    TimestampType::LogAppendTime => NOW,
                },
                timestamp_type,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
            })
            .collect()
    }

    fn be_i64(buf: &[u8], at: usize) -> i64 {
        i64::from_be_bytes(buf[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn value_batches_are_the_bytes_of_value_records() {
        let values: Vec<Vec<u8>> = vec![b"a".to_vec(), vec![], vec![b'x'; 300], b"last".to_vec()];
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let records: Vec<NewRecord> = values.iter().cloned().map(NewRecord::value).collect();
        for codec in Compression::ALL {
            for ts_type in [TimestampType::CreateTime, TimestampType::LogAppendTime] {
                let fast = encode_value_batch(7, &refs, codec, ts_type, NOW).unwrap();
                let slow = encode_batch(7, &records, codec, ts_type, NOW).unwrap();
                if codec == Compression::None || codec == Compression::Lz4 {
                    assert_eq!(fast, slow, "{codec:?} {ts_type:?}");
                }
                assert_eq!(
                    decode_batch(&fast).unwrap(),
                    decode_batch(&slow).unwrap(),
                    "{codec:?} {ts_type:?}"
                );
            }
        }
        assert_eq!(
            encode_value_batch(0, &[], Compression::None, TimestampType::CreateTime, NOW),
            Err(RecordError::Empty)
        );
    }

    #[test]
    fn long_value_batches_are_the_bytes_of_value_records() {
        // Offset deltas of one, two and three varint bytes, values of one and two length bytes,
        // and more than one CRC chunk; appended behind a batch already in the buffer.
        let values: Vec<Vec<u8>> = (0..9000)
            .map(|i: usize| vec![b'a' + (i % 26) as u8; (i * 7) % 150])
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let records: Vec<NewRecord> = values.iter().cloned().map(NewRecord::value).collect();
        for codec in [Compression::None, Compression::Lz4] {
            let slow = encode_batch(3, &records, codec, TimestampType::CreateTime, NOW).unwrap();
            let fast = encode_value_batch(3, &refs, codec, TimestampType::CreateTime, NOW);
            assert_eq!(fast.unwrap(), slow, "{codec:?}");
            // Borrowing the values of 100 bytes and more, behind a batch already there.
            let mut out = VectoredBatches::new(b"stale".to_vec(), 100);
            out.push_batch(b"earlier".to_vec());
            encode_value_batch_vectored(&mut out, &refs, codec, TimestampType::CreateTime, NOW)
                .unwrap();
            out.set_base_offset(1, 3);
            assert_eq!(out.batch_count(), 2);
            assert_eq!(out.len(), 7 + slow.len());
            let written: Vec<u8> = out.io_slices().iter().flat_map(|s| s.to_vec()).collect();
            assert_eq!(&written[..7], b"earlier");
            assert_eq!(written[7..], slow[..], "{codec:?}");
            out.truncate_batches(1);
            assert_eq!((out.batch_count(), out.len()), (1, 7));
        }
    }

    #[test]
    fn for_each_record_visits_what_decode_batch_returns() {
        let records = sample_records();
        for codec in Compression::ALL {
            for ts_type in [TimestampType::CreateTime, TimestampType::LogAppendTime] {
                let buf = encode_batch(42, &records, codec, ts_type, NOW).unwrap();
                let decoded = decode_batch(&buf).unwrap().records;
                for from in [0, 42, 44, 46, 47] {
                    let mut scratch = Vec::new();
                    let mut seen = Vec::new();
                    let header = for_each_record(&buf, from, &mut scratch, |r| {
                        seen.push((
                            r.offset,
                            r.timestamp,
                            r.key.map(<[u8]>::to_vec),
                            r.value.map(<[u8]>::to_vec),
                        ));
                        true
                    })
                    .unwrap();
                    assert_eq!(header.base_offset, 42);
                    let want: Vec<_> = decoded
                        .iter()
                        .filter(|r| r.offset >= from)
                        .map(|r| (r.offset, r.timestamp, r.key.clone(), r.value.clone()))
                        .collect();
                    assert_eq!(seen, want, "{codec:?} {ts_type:?} from {from}");
                }
                let mut scratch = Vec::new();
                let mut first = None;
                for_each_record(&buf, 43, &mut scratch, |r| {
                    first = Some(r.offset);
                    false
                })
                .unwrap();
                assert_eq!(first, Some(43), "stops when told");
                for offset in [41, 42, 45, 46, 47] {
                    let want = decoded.iter().find(|r| r.offset == offset);
                    assert_eq!(find_record(&buf, offset).unwrap().as_ref(), want);
                    assert_eq!(
                        find_record_in_verified(&buf, offset).unwrap().as_ref(),
                        want
                    );
                }
            }
        }
        let mut bad = encode_batch(
            0,
            &records,
            Compression::None,
            TimestampType::CreateTime,
            NOW,
        )
        .unwrap();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            for_each_record(&bad, 0, &mut Vec::new(), |_| true),
            Err(RecordError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn round_trips_every_codec_and_timestamp_type() {
        let records = sample_records();
        for codec in Compression::ALL {
            for ts_type in [TimestampType::CreateTime, TimestampType::LogAppendTime] {
                let buf = encode_batch(42, &records, codec, ts_type, NOW).unwrap();
                let decoded = decode_batch(&buf).unwrap();
                assert_eq!(
                    decoded.records,
                    expected(42, &records, ts_type),
                    "{} {}",
                    codec.name(),
                    ts_type.name()
                );
                let h = decoded.header;
                assert_eq!(h.compression(), Ok(codec));
                assert_eq!(h.timestamp_type(), ts_type);
                assert_eq!(h.base_offset, 42);
                assert_eq!(h.last_offset(), 46);
                assert_eq!(h.next_offset(), 47);
                assert_eq!(h.records_count, 5);
                assert_eq!(h.total_size(), buf.len());
                assert!(!h.is_transactional() && !h.is_control());
            }
        }
    }

    #[test]
    fn header_fields_follow_kafka() {
        let records = sample_records();
        let buf = encode_batch(
            7,
            &records,
            Compression::None,
            TimestampType::CreateTime,
            NOW,
        )
        .unwrap();
        let h = BatchHeader::parse(&buf).unwrap();
        assert_eq!(h.partition_leader_epoch, 0);
        assert_eq!(h.magic, MAGIC_V2);
        assert_eq!(h.attributes, 0);
        assert_eq!(h.producer_id, NO_PRODUCER_ID);
        assert_eq!(h.producer_epoch, NO_PRODUCER_EPOCH);
        assert_eq!(h.base_sequence, NO_SEQUENCE);
        // Kafka's MemoryRecordsBuilder: base = first record's timestamp, max = the largest.
        assert_eq!(h.base_timestamp, NOW - 10);
        assert_eq!(h.max_timestamp, NOW + 1000);

        let lat = encode_batch(
            7,
            &records,
            Compression::Zstd,
            TimestampType::LogAppendTime,
            NOW,
        )
        .unwrap();
        let h = BatchHeader::parse(&lat).unwrap();
        assert_eq!(h.attributes, 0x08 | 4);
        assert_eq!(h.max_timestamp, NOW);
        assert_eq!(h.base_timestamp, NOW);
    }

    #[test]
    fn header_field_positions_match_the_documented_layout() {
        let records = vec![NewRecord::value("x"); 3];
        let buf = encode_batch(
            0x0102_0304_0506_0708,
            &records,
            Compression::Gzip,
            TimestampType::LogAppendTime,
            NOW,
        )
        .unwrap();
        assert_eq!(BATCH_HEADER_SIZE, 61);
        assert_eq!(be_i64(&buf, 0), 0x0102_0304_0506_0708);
        assert_eq!(
            i32::from_be_bytes(buf[8..12].try_into().unwrap()) as usize,
            buf.len() - 12
        );
        assert_eq!(&buf[12..16], &[0, 0, 0, 0]);
        assert_eq!(buf[16], 2);
        assert_eq!(
            u32::from_be_bytes(buf[17..21].try_into().unwrap()),
            crc32c::crc32c(&buf[21..])
        );
        assert_eq!(&buf[21..23], &[0x00, 0x09]);
        assert_eq!(&buf[23..27], &[0, 0, 0, 2]);
        assert_eq!(be_i64(&buf, 27), NOW);
        assert_eq!(be_i64(&buf, 35), NOW);
        assert_eq!(be_i64(&buf, 43), -1);
        assert_eq!(&buf[51..53], &[0xff, 0xff]);
        assert_eq!(&buf[53..57], &[0xff; 4]);
        assert_eq!(&buf[57..61], &[0, 0, 0, 3]);
        assert_eq!(&buf[61..63], &[0x1f, 0x8b], "gzip data starts the records");
    }

    #[test]
    fn uncompressed_records_have_kafka_byte_layout() {
        let records = vec![NewRecord {
            key: Some(b"k".to_vec()),
            value: None,
            headers: vec![header("h", None)],
            timestamp: Some(NOW + 1),
        }];
        let buf = encode_batch(
            0,
            &records,
            Compression::None,
            TimestampType::CreateTime,
            NOW + 1,
        )
        .unwrap();
        // length 10 (zigzag 20), attributes, ts delta 0, offset delta 0, key len 1 (2), "k",
        // value len -1 (1), 1 header (2), key len 1 (2), "h", value len -1 (1).
        assert_eq!(&buf[61..], &[20, 0, 0, 0, 2, b'k', 1, 2, 2, b'h', 1]);
    }

    #[test]
    fn set_base_offset_keeps_the_crc_valid() {
        let mut buf = encode_batch(
            0,
            &sample_records(),
            Compression::Lz4,
            TimestampType::CreateTime,
            NOW,
        )
        .unwrap();
        set_base_offset(&mut buf, 1000);
        let decoded = decode_batch(&buf).unwrap();
        assert_eq!(decoded.records[0].offset, 1000);
        assert_eq!(decoded.records[4].offset, 1004);
    }

    #[test]
    fn large_batches_round_trip() {
        let records: Vec<NewRecord> = (0..5000)
            .map(|i| NewRecord {
                key: Some(format!("key-{}", i % 97).into_bytes()),
                value: Some(format!("value number {i} ").repeat(i % 13 + 1).into_bytes()),
                headers: vec![header("seq", Some(i.to_string().as_bytes()))],
                timestamp: Some(NOW + (i as i64 * 7919) % 100_000 - 50_000),
            })
            .collect();
        let big_value = vec![NewRecord::value(vec![7u8; 3 * 1024 * 1024])];
        for codec in Compression::ALL {
            let buf =
                encode_batch(1 << 40, &records, codec, TimestampType::CreateTime, NOW).unwrap();
            assert_eq!(
                decode_batch(&buf).unwrap().records,
                expected(1 << 40, &records, TimestampType::CreateTime),
                "{}",
                codec.name()
            );
            let buf = encode_batch(0, &big_value, codec, TimestampType::CreateTime, NOW).unwrap();
            assert_eq!(
                decode_batch(&buf).unwrap().records[0].value,
                big_value[0].value
            );
        }
    }

    #[test]
    fn empty_input_is_refused() {
        assert_eq!(
            encode_batch(0, &[], Compression::None, TimestampType::CreateTime, NOW),
            Err(RecordError::Empty)
        );
    }

    #[test]
    fn crc_catches_every_single_bit_flip() {
        for codec in [Compression::None, Compression::Snappy] {
            let buf =
                encode_batch(5, &sample_records(), codec, TimestampType::CreateTime, NOW).unwrap();
            for byte in CRC_OFFSET..buf.len() {
                for bit in 0..8 {
                    let mut corrupt = buf.clone();
                    corrupt[byte] ^= 1 << bit;
                    let err = verify_batch(&corrupt).unwrap_err();
                    assert!(
                        matches!(err, RecordError::CrcMismatch { .. }),
                        "flip of byte {byte} bit {bit}: {err:?}"
                    );
                    assert!(decode_batch(&corrupt).is_err());
                }
            }
        }
    }

    #[test]
    fn parse_reports_why_a_header_is_invalid() {
        let buf = encode_batch(
            0,
            &sample_records(),
            Compression::None,
            TimestampType::CreateTime,
            NOW,
        )
        .unwrap();
        assert_eq!(
            BatchHeader::parse(&buf[..60]),
            Err(RecordError::Truncated {
                needed: 61,
                available: 60
            })
        );
        let mut v1 = buf.clone();
        v1[MAGIC_OFFSET] = 1;
        assert_eq!(
            BatchHeader::parse(&v1[..30]),
            Err(RecordError::UnsupportedMagic(1))
        );
        let mut short = buf.clone();
        short[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&48i32.to_be_bytes());
        assert_eq!(
            BatchHeader::parse(&short),
            Err(RecordError::InvalidBatchLength(48))
        );
        assert_eq!(
            verify_batch(&buf[..buf.len() - 1]),
            Err(RecordError::Truncated {
                needed: buf.len(),
                available: buf.len() - 1
            })
        );
        let mut long = buf.clone();
        long.push(0);
        assert!(matches!(
            verify_batch(&long),
            Err(RecordError::InvalidBatchLength(_))
        ));
    }

    /// Re-signs a batch after a test edits it, so the decoder gets past the CRC.
    fn fix_crc(buf: &mut [u8]) {
        let crc = crc32c::crc32c(&buf[ATTRIBUTES_OFFSET..]);
        buf[CRC_OFFSET..ATTRIBUTES_OFFSET].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn record_count_must_match_the_records_present() {
        let buf = encode_batch(
            0,
            &sample_records(),
            Compression::None,
            TimestampType::CreateTime,
            NOW,
        )
        .unwrap();
        for (declared, want) in [
            (
                6i32,
                RecordError::RecordCountMismatch {
                    declared: 6,
                    actual: 5,
                },
            ),
            (
                -1,
                RecordError::RecordCountMismatch {
                    declared: -1,
                    actual: 0,
                },
            ),
        ] {
            let mut b2 = buf.clone();
            b2[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4]
                .copy_from_slice(&declared.to_be_bytes());
            fix_crc(&mut b2);
            assert_eq!(decode_batch(&b2), Err(want));
        }
        let mut fewer = buf.clone();
        fewer[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4].copy_from_slice(&4i32.to_be_bytes());
        fix_crc(&mut fewer);
        assert!(matches!(
            decode_batch(&fewer),
            Err(RecordError::MalformedRecord { index: 4, .. })
        ));
    }

    #[test]
    fn empty_batch_decodes_to_no_records() {
        // Kafka keeps batches emptied by compaction; they must read as zero records.
        let buf = encode_batch(
            0,
            &[NewRecord::value("x")],
            Compression::None,
            TimestampType::CreateTime,
            NOW,
        )
        .unwrap();
        let mut empty = buf[..BATCH_HEADER_SIZE].to_vec();
        empty[RECORDS_COUNT_OFFSET..].copy_from_slice(&0i32.to_be_bytes());
        empty[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&49i32.to_be_bytes());
        fix_crc(&mut empty);
        assert_eq!(decode_batch(&empty).unwrap().records, vec![]);
    }

    #[test]
    fn malformed_records_are_typed_errors() {
        let one = |key: &str| {
            encode_batch(
                0,
                &[NewRecord {
                    headers: vec![header(key, Some(b"v"))],
                    ..NewRecord::value("x")
                }],
                Compression::None,
                TimestampType::CreateTime,
                NOW,
            )
            .unwrap()
        };
        let mut bad_key = one("é");
        let at = bad_key.len() - 4; // header key 0xc3 0xa9, then value length and "v"
        assert_eq!(&bad_key[at..at + 2], "é".as_bytes());
        bad_key[at] = 0xff;
        fix_crc(&mut bad_key);
        assert_eq!(
            decode_batch(&bad_key),
            Err(RecordError::HeaderKeyNotUtf8 { index: 0 })
        );

        let mut bad_codec = one("k");
        bad_codec[ATTRIBUTES_OFFSET + 1] |= 0x07;
        fix_crc(&mut bad_codec);
        assert_eq!(
            decode_batch(&bad_codec),
            Err(RecordError::UnknownCompression(7))
        );

        let mut bad_length = one("k");
        bad_length[BATCH_HEADER_SIZE] = 0x7f; // record length -64
        fix_crc(&mut bad_length);
        assert!(matches!(
            decode_batch(&bad_length),
            Err(RecordError::MalformedRecord { index: 0, .. })
        ));
    }

    #[test]
    fn compressed_garbage_is_a_decompression_error() {
        let buf = encode_batch(
            0,
            &sample_records(),
            Compression::Zstd,
            TimestampType::CreateTime,
            NOW,
        )
        .unwrap();
        let mut corrupt = buf.clone();
        corrupt[BATCH_HEADER_SIZE] ^= 0xff; // zstd magic
        fix_crc(&mut corrupt);
        assert!(matches!(
            decode_batch(&corrupt),
            Err(RecordError::Decompression { codec: "zstd", .. })
        ));
    }

    #[test]
    fn for_each_record_in_verified_visits_what_for_each_record_visits() {
        let records = sample_records();
        for codec in Compression::ALL {
            let buf = encode_batch(40, &records, codec, TimestampType::CreateTime, NOW).unwrap();
            for from in 38..47 {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let (mut scratch_a, mut scratch_b) = (Vec::new(), Vec::new());
                let ha = for_each_record(&buf, from, &mut scratch_a, |r| {
                    a.push(r.to_record());
                    true
                });
                let hb = for_each_record_in_verified(&buf, from, &mut scratch_b, |r| {
                    b.push(r.to_record());
                    true
                });
                assert_eq!((ha, &a), (hb, &b));
                assert_eq!(
                    a.first().map(|r| r.offset),
                    Some(from.max(40)).filter(|o| *o < 45)
                );
            }
            // Only the CRC is trusted: a batch sliced wrong is still refused.
            let mut scratch = Vec::new();
            assert!(
                for_each_record_in_verified(&buf[..buf.len() - 1], 0, &mut scratch, |_| true)
                    .is_err()
            );
        }
    }

    fn arb_new_record() -> impl Strategy<Value = NewRecord> {
        let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40));
        (
            bytes(),
            bytes(),
            proptest::collection::vec((".{0,8}", bytes()), 0..3),
            proptest::option::of(any::<i64>()),
        )
            .prop_map(|(key, value, headers, timestamp)| NewRecord {
                key,
                value,
                headers: headers
                    .into_iter()
                    .map(|(key, value)| Header { key, value })
                    .collect(),
                timestamp,
            })
    }

    fn arb_codec() -> impl Strategy<Value = Compression> {
        proptest::sample::select(Compression::ALL.to_vec())
    }

    fn arb_timestamp_type() -> impl Strategy<Value = TimestampType> {
        prop_oneof![
            Just(TimestampType::CreateTime),
            Just(TimestampType::LogAppendTime)
        ]
    }

    /// Every entry point on `bytes`; none may panic, and agreement between them is checked.
    fn exercise(bytes: &[u8]) {
        let parsed = BatchHeader::parse(bytes);
        let verified = verify_batch(bytes);
        let decoded = decode_batch(bytes);
        if let Ok(h) = verified {
            assert_eq!(parsed, Ok(h));
        }
        if let Ok(d) = decoded {
            assert_eq!(verified, Ok(d.header));
            assert!(d.records.len() <= bytes.len() / MIN_RECORD_SIZE);
        }
    }

    /// The records of `section` by the careful parse alone (never the common-shape path),
    /// then the error that ended the walk, if any.
    fn walk_in_full<'a>(
        header: &BatchHeader,
        section: &'a [u8],
        from_offset: i64,
    ) -> Vec<Result<RecordRef<'a>, RecordError>> {
        let mut walk = match BatchRecords::new(header, section, from_offset) {
            Ok(walk) => walk,
            Err(e) => return vec![Err(e)],
        };
        let mut out = Vec::new();
        loop {
            match walk.next_in_full() {
                Ok(Some(record)) => out.push(Ok(record)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    /// The same walk as users get it (the common-shape path first).
    fn walk<'a>(
        header: &BatchHeader,
        section: &'a [u8],
        from_offset: i64,
    ) -> Vec<Result<RecordRef<'a>, RecordError>> {
        match BatchRecords::new(header, section, from_offset) {
            Ok(walk) => walk.collect(),
            Err(e) => vec![Err(e)],
        }
    }

    /// Records whose lengths and deltas cross the varint width boundaries (1, 2, 3, 4 bytes).
    fn arb_sized_record() -> impl Strategy<Value = NewRecord> {
        let len = proptest::sample::select(vec![0usize, 1, 15, 63, 64, 100, 8191, 8192, 70_000]);
        (
            proptest::option::of(len.clone()),
            proptest::option::of(len),
            any::<bool>(),
            -100_000i64..100_000,
        )
            .prop_map(|(key, value, header, delta)| NewRecord {
                key: key.map(|n| vec![b'k'; n]),
                value: value.map(|n| vec![b'v'; n]),
                headers: if header {
                    vec![Header {
                        key: "h".into(),
                        value: None,
                    }]
                } else {
                    Vec::new()
                },
                timestamp: Some(NOW + delta),
            })
    }

    proptest! {
        #[test]
        fn the_common_path_agrees_with_the_careful_parse(
            records in proptest::collection::vec(arb_sized_record(), 1..12),
            plain in proptest::collection::vec(0usize..100, 0..200),
            ts_type in arb_timestamp_type(),
            from in 0i64..300,
            mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            truncate_to in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            // Many small value records (deltas past 1 byte) then the sized ones.
            let mut all: Vec<NewRecord> =
                plain.iter().map(|n| NewRecord::value(vec![b'p'; *n])).collect();
            all.extend(records);
            let buf = encode_batch(100, &all, Compression::None, ts_type, NOW).unwrap();
            let header = BatchHeader::parse(&buf).unwrap();
            let mut section = buf[BATCH_HEADER_SIZE..].to_vec();
            for (at, byte) in mutations {
                let i = at.index(section.len());
                section[i] = byte;
            }
            if let Some(t) = truncate_to {
                section.truncate(t.index(section.len() + 1));
            }
            prop_assert_eq!(
                walk(&header, &section, 100 + from),
                walk_in_full(&header, &section, 100 + from)
            );
            for count in [0, 1, all.len() as i32 - 1, all.len() as i32 + 1, -1] {
                let header = BatchHeader { records_count: count, ..header };
                prop_assert_eq!(walk(&header, &section, 0), walk_in_full(&header, &section, 0));
            }
        }

        #[test]
        fn arbitrary_records_round_trip(
            base_offset in 0i64..1 << 50,
            records in proptest::collection::vec(arb_new_record(), 1..20),
            codec in arb_codec(),
            ts_type in arb_timestamp_type(),
        ) {
            let buf = encode_batch(base_offset, &records, codec, ts_type, NOW).unwrap();
            let decoded = decode_batch(&buf).unwrap();
            prop_assert_eq!(decoded.records, expected(base_offset, &records, ts_type));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            exercise(&bytes);
            // Same bytes behind a plausible header, so the record parser sees them too.
            let mut framed = encode_batch(0, &[NewRecord::value("x")], Compression::None,
                TimestampType::CreateTime, NOW).unwrap();
            framed.truncate(BATCH_HEADER_SIZE);
            framed.extend_from_slice(&bytes);
            let len = (framed.len() - LOG_OVERHEAD) as i32;
            framed[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&len.to_be_bytes());
            fix_crc(&mut framed);
            exercise(&framed);
        }

        #[test]
        fn mutated_batches_never_panic(
            records in proptest::collection::vec(arb_new_record(), 1..6),
            codec in arb_codec(),
            ts_type in arb_timestamp_type(),
            mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            truncate_to in proptest::option::of(any::<prop::sample::Index>()),
            resign in any::<bool>(),
        ) {
            let mut buf = encode_batch(0, &records, codec, ts_type, NOW).unwrap();
            for (at, byte) in mutations {
                let i = at.index(buf.len());
                buf[i] = byte;
            }
            if resign && buf.len() > ATTRIBUTES_OFFSET {
                fix_crc(&mut buf);
            }
            if let Some(t) = truncate_to {
                buf.truncate(t.index(buf.len() + 1));
            }
            exercise(&buf);
        }
    }
}
