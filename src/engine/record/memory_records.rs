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
/// as they are walked (a malformed record is the [`RecordError`] [`super::decode_batch`]
/// gives).
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

    /// Every record from [`Self::start_offset`] on, in offset order, borrowed from the
    /// batches. A malformed record is an error, and the last item.
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

    /// Finds each batch's records section, decompressing the compressed ones. On an error
    /// the set is left empty.
    pub(crate) fn finish_read(&mut self) -> Result<(), RecordError> {
        let result = self.locate_sections();
        if result.is_err() {
            self.batches.clear();
            self.sections.clear();
        }
        result
    }

    fn locate_sections(&mut self) -> Result<(), RecordError> {
        for (header, at) in &self.batches {
            let records = at + BATCH_HEADER_SIZE..at + header.total_size();
            let section = match header.compression()? {
                Compression::None => Section::Raw(records),
                codec => {
                    let start = self.decompressed.len();
                    compression::decompress_into(
                        codec,
                        &self.bytes[records],
                        &mut self.decompressed,
                    )?;
                    Section::Decompressed(start..self.decompressed.len())
                }
            };
            self.sections.push(section);
        }
        Ok(())
    }

    /// The header and records section of batch `i`.
    fn section(&self, i: usize) -> (&BatchHeader, &[u8]) {
        let section = match &self.sections[i] {
            Section::Raw(range) => &self.bytes[range.clone()],
            Section::Decompressed(range) => &self.decompressed[range.clone()],
        };
        (&self.batches[i].0, section)
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
        match self.current.next_common() {
            Some(record) => Some(Ok(record)),
            None => self.next_in_full(),
        }
    }
}

impl<'a> Records<'a> {
    /// [`Iterator::next`] past the common case: a record the careful parse reads, the end of
    /// a batch, or an error (the last item).
    #[inline(never)]
    fn next_in_full(&mut self) -> Option<Result<RecordRef<'a>, RecordError>> {
        loop {
            match self.current.next_record() {
                Ok(Some(record)) => return Some(Ok(record)),
                Ok(None) => {}
                Err(e) => return Some(Err(self.stop(e))),
            }
            if self.next_batch >= self.memory.sections.len() {
                return None;
            }
            let (header, section) = self.memory.section(self.next_batch);
            self.next_batch += 1;
            match BatchRecords::new(header, section, self.memory.start_offset) {
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
    use crate::engine::record::NewRecord;
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
