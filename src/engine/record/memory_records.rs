//! Batches read from a log into memory, and their records borrowed from them (Kafka's
//! `MemoryRecords`): what [`crate::engine::Log::read_into`] fills.
//!
//! Reading this way allocates nothing per record and, once the buffers have grown to the
//! reads' size, nothing per read: the batches' bytes are one `pread` into a buffer the caller
//! keeps, each batch's CRC-32C is checked once (when read), compressed batches are
//! decompressed once (when read) into a second kept buffer, and [`MemoryRecords::records`]
//! yields [`RecordRef`]s pointing into those bytes.

use std::ops::Range;

use super::batch::{BatchRecords, RecordRef};
use super::{compression, BatchHeader, Compression, RecordError, BATCH_HEADER_SIZE};

/// Whole batches read from a log, CRC verified, with their records sections ready to walk.
/// Reuse one for many reads: its buffers keep their allocations.
///
/// Only the log fills it, so every batch in it passed its CRC check; the records are checked
/// as they are walked (a malformed record, or compressed records that do not decompress, is
/// the [`RecordError`] [`super::decode_batch`] gives, in the same order).
#[derive(Default)]
pub struct MemoryRecords {
    /// The batches' bytes, back to back from the start; bytes after the last batch are stale.
    bytes: Vec<u8>,
    /// Each batch's header and position in `bytes`.
    batches: Vec<(BatchHeader, usize)>,
    /// Each batch's records section, in `bytes` (uncompressed) or in `decompressed`.
    sections: Vec<Section>,
    /// The records sections of the compressed batches, decompressed, back to back.
    decompressed: Vec<u8>,
    /// Records below it are not yielded (the first batch may start before it).
    start_offset: i64,
}

impl std::fmt::Debug for MemoryRecords {
    /// The batches' headers, not their bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRecords")
            .field("start_offset", &self.start_offset)
            .field("size_bytes", &self.size_bytes())
            .field("batches", &self.batches)
            .finish_non_exhaustive()
    }
}

/// Where a batch's (uncompressed) records section is.
#[derive(Debug, Clone)]
enum Section {
    Raw(Range<usize>),
    Decompressed(Range<usize>),
    /// Its codec is unknown, or its records did not decompress.
    Failed(RecordError),
}

impl MemoryRecords {
    /// An empty set, with no buffers allocated yet.
    pub fn new() -> MemoryRecords {
        MemoryRecords::default()
    }

    /// The offset the read asked for: [`Self::records`] starts there.
    pub fn start_offset(&self) -> i64 {
        self.start_offset
    }

    /// Whether the read found no batch (at the log end).
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Bytes of the batches, as stored in the log.
    pub fn size_bytes(&self) -> usize {
        self.batches
            .last()
            .map_or(0, |(header, at)| at + header.total_size())
    }

    /// The offset after the last batch: where the next read continues. `None` when empty.
    pub fn next_offset(&self) -> Option<i64> {
        self.batches.last().map(|(header, _)| header.next_offset())
    }

    /// Each whole batch, its header and bytes (CRC verified), in offset order. The first may
    /// hold records before [`Self::start_offset`].
    pub fn batches(&self) -> impl ExactSizeIterator<Item = (&BatchHeader, &[u8])> + '_ {
        self.batches
            .iter()
            .map(|(header, at)| (header, &self.bytes[*at..*at + header.total_size()]))
    }

    /// How many batches it holds.
    pub fn batch_count(&self) -> usize {
        self.batches.len()
    }

    /// Whether one of its batches holds `offset` (between its base offset and its last).
    pub fn holds(&self, offset: i64) -> bool {
        self.batches
            .iter()
            .any(|(header, _)| header.base_offset <= offset && offset < header.next_offset())
    }

    /// Batch `i`'s header and its records from `from_offset` on (see [`BatchRecords::new`]),
    /// walked in its records section as read (decompressed once, when it was read).
    pub fn batch_records(
        &self,
        i: usize,
        from_offset: i64,
    ) -> Result<(&BatchHeader, BatchRecords<'_>), RecordError> {
        let (header, section) = self.section(i)?;
        Ok((header, BatchRecords::new(header, section, from_offset)?))
    }

    /// Replaces its content by `batches` (whole batches, CRC verified, in offset order) read
    /// from `start_offset`: what a log fills it with when its batches come from elsewhere.
    pub(crate) fn fill<'b>(
        &mut self,
        start_offset: i64,
        batches: impl IntoIterator<Item = (BatchHeader, &'b [u8])>,
    ) {
        let (bytes, headers) = self.start_read(start_offset);
        let mut at = 0;
        for (header, batch) in batches {
            if bytes.len() < at + batch.len() {
                bytes.resize(at + batch.len(), 0);
            }
            bytes[at..at + batch.len()].copy_from_slice(batch);
            headers.push((header, at));
            at += batch.len();
        }
        self.finish_read();
    }

    /// Every record from [`Self::start_offset`] on, in offset order, borrowed from the
    /// batches. A malformed record (in any batch, before the start offset too) is an error,
    /// and the last item.
    pub fn records(&self) -> Records<'_> {
        Records {
            memory: self,
            next_batch: 0,
            current: BatchRecords::empty(),
        }
    }

    /// Empties the set, keeping its buffers, and hands the log the buffers to read into (see
    /// [`crate::engine::segment::LogSegment::read_into`]).
    pub(crate) fn start_read(
        &mut self,
        start_offset: i64,
    ) -> (&mut Vec<u8>, &mut Vec<(BatchHeader, usize)>) {
        self.start_offset = start_offset;
        self.batches.clear();
        self.sections.clear();
        self.decompressed.clear();
        (&mut self.bytes, &mut self.batches)
    }

    /// Finds each batch's records section, decompressing the compressed ones. A batch whose
    /// codec is unknown or whose records do not decompress is kept, with its error:
    /// [`Self::records`] gives it when the walk gets there, after the batches before it.
    pub(crate) fn finish_read(&mut self) {
        for (header, at) in &self.batches {
            let records = at + BATCH_HEADER_SIZE..at + header.total_size();
            let section = match header.compression() {
                Ok(Compression::None) => Section::Raw(records),
                Ok(codec) => {
                    let start = self.decompressed.len();
                    let bytes = &self.bytes[records];
                    match compression::decompress_into(codec, bytes, &mut self.decompressed) {
                        Ok(()) => Section::Decompressed(start..self.decompressed.len()),
                        Err(e) => {
                            self.decompressed.truncate(start);
                            Section::Failed(e)
                        }
                    }
                }
                Err(e) => Section::Failed(e),
            };
            self.sections.push(section);
        }
    }

    /// The header and records section of batch `i`.
    fn section(&self, i: usize) -> Result<(&BatchHeader, &[u8]), RecordError> {
        let section = match &self.sections[i] {
            Section::Raw(range) => &self.bytes[range.clone()],
            Section::Decompressed(range) => &self.decompressed[range.clone()],
            Section::Failed(e) => return Err(e.clone()),
        };
        Ok((&self.batches[i].0, section))
    }
}

/// The records of a [`MemoryRecords`], from its start offset: see [`MemoryRecords::records`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    memory: &'a MemoryRecords,
    next_batch: usize,
    /// The batch being walked (at first an empty walk, so the hot path has no `Option`).
    current: BatchRecords<'a>,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordRef<'a>, RecordError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        while let Some(record) = self.current.next_common() {
            if record.offset >= self.memory.start_offset {
                return Some(Ok(record));
            }
        }
        self.next_in_full()
    }
}

impl<'a> Records<'a> {
    /// [`Iterator::next`] past the common case: a record the careful parse reads, the end of
    /// a batch, or an error (the last item).
    #[inline(never)]
    fn next_in_full(&mut self) -> Option<Result<RecordRef<'a>, RecordError>> {
        loop {
            match self.current.next_record() {
                Ok(Some(record)) if record.offset >= self.memory.start_offset => {
                    return Some(Ok(record))
                }
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => return Some(Err(self.stop(e))),
            }
            if self.next_batch >= self.memory.sections.len() {
                return None;
            }
            let section = self.memory.section(self.next_batch);
            self.next_batch += 1;
            let (header, section) = match section {
                Ok(found) => found,
                Err(e) => return Some(Err(self.stop(e))),
            };
            // Every record is parsed, those before the start offset too, so a malformed one
            // is the error `decode_batch` gives (as `Log::read` always did).
            match BatchRecords::new(header, section, i64::MIN) {
                Ok(records) => self.current = records,
                Err(e) => return Some(Err(self.stop(e))),
            }
        }
    }

    /// Ends the walk after `e`.
    #[cold]
    fn stop(&mut self, e: RecordError) -> RecordError {
        self.current = BatchRecords::empty();
        self.next_batch = self.memory.sections.len();
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::record::{NewRecord, Record};
    use crate::engine::{EngineError, Header, Log, LogConfig};

    /// A log in `dir` of batches of 1..40 records (some keyed, some with headers, some
    /// tombstones, values from empty to 3 KiB), written with `codec`.
    fn log_with_batches(dir: &std::path::Path, codec: Compression) -> Log {
        let config = LogConfig {
            compression_type: codec,
            ..LogConfig::default()
        };
        let log = Log::open(dir, config).unwrap();
        let mut n = 0usize;
        for batch in 0..60usize {
            let records: Vec<NewRecord> = (0..1 + batch * 7 % 40)
                .map(|_| {
                    n += 1;
                    NewRecord {
                        key: (n % 3 == 0).then(|| format!("key-{}", n % 11).into_bytes()),
                        value: (n % 17 != 0).then(|| vec![n as u8; n * 37 % 3000]),
                        headers: if n % 5 == 0 {
                            vec![Header {
                                key: "h".into(),
                                value: Some(n.to_string().into_bytes()),
                            }]
                        } else {
                            Vec::new()
                        },
                        timestamp: Some(1_700_000_000_000 + (n as i64 * 7919) % 100_000),
                    }
                })
                .collect();
            log.append(&records).unwrap();
        }
        log
    }

    #[test]
    fn read_into_with_one_kept_buffer_matches_read() {
        for codec in Compression::ALL {
            let dir = tempfile::tempdir().unwrap();
            let log = log_with_batches(dir.path(), codec);
            let end = log.log_end_offset();
            let mut memory = MemoryRecords::new();
            // Large reads then small ones, so later reads find stale bytes after theirs.
            for max_bytes in [1 << 20, 50_000, 4096, 1, 300_000] {
                for offset in (0..=end).step_by(13) {
                    log.read_into(offset, max_bytes, &mut memory).unwrap();
                    let got: Vec<_> = memory.records().map(|r| r.unwrap().to_record()).collect();
                    assert_eq!(got, log.read(offset, max_bytes).unwrap(), "{codec:?}");
                    let batches = log.read_batches(offset, max_bytes).unwrap();
                    assert_eq!(memory.batches().len(), batches.len());
                    for ((header, bytes), fetched) in memory.batches().zip(&batches) {
                        assert_eq!((header, bytes), (&fetched.header, &fetched.bytes[..]));
                    }
                    assert_eq!(
                        memory.next_offset(),
                        batches.last().map(|b| b.header.next_offset())
                    );
                    assert_eq!(memory.is_empty(), offset == end);
                    assert_eq!(memory.start_offset(), offset);
                    if let Some(first) = got.first() {
                        assert_eq!(first.offset, offset);
                    }
                }
            }
        }
    }

    #[test]
    fn read_into_every_record_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with_batches(dir.path(), Compression::None);
        let mut memory = MemoryRecords::new();
        let mut offset = 0;
        let mut seen = 0;
        while offset < log.log_end_offset() {
            log.read_into(offset, 10_000, &mut memory).unwrap();
            for record in memory.records() {
                assert_eq!(record.unwrap().offset, seen);
                seen += 1;
            }
            offset = memory.next_offset().unwrap();
        }
        assert_eq!(seen, log.log_end_offset());
    }

    /// What `Log::read` returned before it read through `MemoryRecords`: each batch decoded
    /// whole by `decode_batch`, then the records from `offset` (errors as text, to compare).
    fn read_by_decoding_batches(
        log: &Log,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Vec<Record>, String> {
        let result = log.read_batches(offset, max_bytes).and_then(|batches| {
            let mut records = Vec::new();
            for batch in batches {
                let decoded = crate::engine::record::decode_batch(&batch.bytes)?;
                records.extend(decoded.records.into_iter().filter(|r| r.offset >= offset));
            }
            Ok(records)
        });
        result.map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn read_of_malformed_batches_gives_the_errors_decoding_them_gave() {
        for codec in [Compression::None, Compression::Lz4] {
            let dir = tempfile::tempdir().unwrap();
            log_with_batches(dir.path(), codec).close().unwrap();
            let path = dir.path().join(format!("{:020}.log", 0));
            let clean = std::fs::read(&path).unwrap();
            // Batch starts, to find each byte's batch and re-sign it after a change.
            let mut starts = Vec::new();
            let mut at = 0;
            while at < clean.len() {
                starts.push(at);
                at += BatchHeader::parse(&clean[at..]).unwrap().total_size();
            }
            let mut errors = 0;
            // About 40 changed bytes, spread over the file.
            let step = (clean.len() / 40) | 1;
            for (case, byte_at) in (BATCH_HEADER_SIZE..clean.len()).step_by(step).enumerate() {
                let start = *starts.iter().rev().find(|s| **s <= byte_at).unwrap();
                if byte_at < start + BATCH_HEADER_SIZE {
                    continue;
                }
                let mut bytes = clean.clone();
                bytes[byte_at] ^= [0x01, 0x80, 0xff, 0x40][case % 4];
                let end = start + BatchHeader::parse(&bytes[start..]).unwrap().total_size();
                let crc = crc32c::crc32c(&bytes[start + 21..end]);
                bytes[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
                std::fs::write(&path, &bytes).unwrap();
                let log = Log::open(dir.path(), LogConfig::default()).unwrap();
                let mut memory = MemoryRecords::new();
                for offset in (0..log.log_end_offset()).step_by(41) {
                    for max_bytes in [1, 20_000] {
                        let want = read_by_decoding_batches(&log, offset, max_bytes);
                        errors += usize::from(want.is_err());
                        let got = log.read(offset, max_bytes).map_err(|e| format!("{e:?}"));
                        assert!(got == want, "{codec:?} byte {byte_at} offset {offset}");
                        log.read_into(offset, max_bytes, &mut memory).unwrap();
                        let walked: Result<Vec<_>, RecordError> =
                            memory.records().map(|r| r.map(|r| r.to_record())).collect();
                        let walked = walked.map_err(|e| format!("{:?}", EngineError::from(e)));
                        assert!(walked == want, "{codec:?} byte {byte_at} offset {offset}");
                    }
                }
                log.close().unwrap();
            }
            assert!(errors > 0, "no case hit a malformed record");
        }
    }

    #[test]
    fn read_into_out_of_range_is_an_error_and_leaves_it_empty() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with_batches(dir.path(), Compression::Lz4);
        let mut memory = MemoryRecords::new();
        log.read_into(0, 1 << 20, &mut memory).unwrap();
        assert!(!memory.is_empty());
        let end = log.log_end_offset();
        for offset in [-1, end + 1] {
            assert!(matches!(
                log.read_into(offset, 1 << 20, &mut memory),
                Err(EngineError::OffsetOutOfRange { .. })
            ));
            assert!(memory.is_empty());
            assert_eq!(memory.records().count(), 0);
            assert_eq!(memory.size_bytes(), 0);
        }
        log.read_into(end, 1 << 20, &mut memory).unwrap();
        assert!(memory.is_empty() && memory.next_offset().is_none());
    }
}
