//! One segment: a `.log` file of batches and its two indexes.

use std::fs::File;
use std::io::IoSlice;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use log::{info, warn};

use super::error::IoResultExt;
use super::index::{OffsetIndex, TimeIndex};
use super::io::{file_system, FileHandle, OpenMode};
use super::record::{self, BatchHeader, RecordError, BATCH_HEADER_SIZE, LOG_OVERHEAD};
use super::{EngineError, Result};

/// File name suffixes of a segment's files.
pub const LOG_SUFFIX: &str = ".log";
pub const INDEX_SUFFIX: &str = ".index";
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";

/// Largest batch recovery accepts, whatever `max.message.bytes` says now (a config change must not
/// make old data unreadable); it only guards against absurd lengths in a corrupt header.
const MAX_BATCH_BYTES: usize = i32::MAX as usize;

/// `<dir>/<20-digit base offset><suffix>`, Kafka's file naming.
pub fn segment_file(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}{suffix}"))
}

/// The base offset a segment file name encodes, if it is one (`00000000000000000042.log` → 42).
pub fn parse_segment_file_name(name: &str, suffix: &str) -> Option<i64> {
    let stem = name.strip_suffix(suffix)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Batch headers a read looks at, past the first batch, to end its pread where a batch ends
/// (see `LogSegment::read_extent`).
const READ_EXTENT_HOPS: usize = 8;

/// Where a batch sits in a segment's `.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLocation {
    pub position: u32,
    pub header: BatchHeader,
}

/// Sizing and indexing parameters a segment needs from the log's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentParams {
    /// `segment.index.bytes`: preallocated size of each index while the segment is active.
    pub max_index_bytes: u32,
    /// `index.interval.bytes`: log bytes between sparse index entries.
    pub index_interval_bytes: u32,
}

/// What [`LogSegment::recover`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryOutcome {
    pub valid_bytes: u32,
    pub truncated_bytes: u64,
    pub batches: u64,
}

/// What [`LogSegment::verify_tail`] cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailRepair {
    /// Where the invalid bytes started (the `.log`'s length now).
    pub position: u32,
    pub removed_bytes: u64,
}

/// A segment of a partition log: `<base>.log`, `<base>.index` and `<base>.timeindex`.
///
/// The `.log` is a plain concatenation of v2 record batches (see [`crate::engine::record`]),
/// each checksummed by its own CRC-32C; `size` is the number of valid bytes, and every offset in
/// it is `>= base_offset`, strictly increasing. The indexes are sparse (an entry per
/// `index.interval.bytes` of log) and are not checksummed: [`LogSegment::recover`] rebuilds them
/// from the `.log` after an unclean stop, and a missing or implausible index of a segment that
/// needs no recovery is rebuilt when first used.
///
/// Indexes are opened lazily, so opening a log after a clean stop maps nothing.
///
/// Thread-safety: none inside; the owning [`crate::engine::Log`] serializes all access under its
/// lock.
#[derive(Debug)]
pub struct LogSegment {
    base_offset: i64,
    dir: PathBuf,
    /// Appended to every file name: "" for a live segment, or `.cleaned`, `.swap`, `.deleted`
    /// while the cleaner or retention moves it (Kafka's file suffixes).
    file_suffix: String,
    file: Box<dyn FileHandle>,
    /// Valid bytes in the `.log`; the file is never longer except transiently during a write.
    size: u32,
    params: SegmentParams,
    /// Whether this segment is the log's active one: its indexes are kept preallocated.
    active: bool,
    offset_index: Option<OffsetIndex>,
    time_index: Option<TimeIndex>,
    bytes_since_last_index_entry: u32,
    /// Largest batch `max_timestamp` and the last offset of the first batch that reached it;
    /// `None` until known (loaded lazily from the time index for a segment not yet touched).
    max_timestamp: Option<(i64, i64)>,
    /// The offset after the last batch, cached once known.
    next_offset: Option<i64>,
    /// `max_timestamp` of the first batch (Kafka's rolling-based timestamp for `segment.ms`).
    first_batch_timestamp: Option<i64>,
}

impl LogSegment {
    /// Creates a new, empty segment (its files must not exist with content).
    pub fn create(dir: &Path, base_offset: i64, params: SegmentParams) -> Result<LogSegment> {
        LogSegment::create_with_suffix(dir, base_offset, params, "")
    }

    /// Creates a new, empty segment whose file names end in `file_suffix` (`.cleaned` for the
    /// cleaner's output).
    pub fn create_with_suffix(
        dir: &Path,
        base_offset: i64,
        params: SegmentParams,
        file_suffix: &str,
    ) -> Result<LogSegment> {
        let path = suffixed(segment_file(dir, base_offset, LOG_SUFFIX), file_suffix);
        let file = file_system().open(&path, OpenMode::Truncate).at(&path)?;
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            remove_if_exists(&suffixed(
                segment_file(dir, base_offset, suffix),
                file_suffix,
            ))?;
        }
        let mut segment = LogSegment::from_file(dir, base_offset, file, 0, params);
        segment.file_suffix = file_suffix.to_string();
        segment.active = true;
        segment.max_timestamp = Some((-1, base_offset));
        segment.next_offset = Some(base_offset);
        segment.open_indexes()?;
        Ok(segment)
    }

    /// Opens an existing segment without reading it: its size is the `.log` file's length.
    pub fn open(dir: &Path, base_offset: i64, params: SegmentParams) -> Result<LogSegment> {
        let path = segment_file(dir, base_offset, LOG_SUFFIX);
        let file = file_system().open(&path, OpenMode::Existing).at(&path)?;
        let len = file.size().at(&path)?;
        let size = u32::try_from(len).map_err(|_| EngineError::Corrupt {
            path: path.clone(),
            position: len,
            reason: "segment file larger than 4 GiB".into(),
        })?;
        Ok(LogSegment::from_file(dir, base_offset, file, size, params))
    }

    fn from_file(
        dir: &Path,
        base_offset: i64,
        file: Box<dyn FileHandle>,
        size: u32,
        params: SegmentParams,
    ) -> Self {
        LogSegment {
            base_offset,
            dir: dir.to_path_buf(),
            file_suffix: String::new(),
            file,
            size,
            params,
            active: false,
            offset_index: None,
            time_index: None,
            bytes_since_last_index_entry: 0,
            max_timestamp: None,
            next_offset: None,
            first_batch_timestamp: None,
        }
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn size(&self) -> u32 {
        self.size
    }
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
    pub fn log_path(&self) -> PathBuf {
        suffixed(
            segment_file(&self.dir, self.base_offset, LOG_SUFFIX),
            &self.file_suffix,
        )
    }
    pub fn offset_index_path(&self) -> PathBuf {
        suffixed(
            segment_file(&self.dir, self.base_offset, INDEX_SUFFIX),
            &self.file_suffix,
        )
    }
    pub fn time_index_path(&self) -> PathBuf {
        suffixed(
            segment_file(&self.dir, self.base_offset, TIME_INDEX_SUFFIX),
            &self.file_suffix,
        )
    }
    /// The suffix after the file extensions ("" for a live segment).
    pub fn file_suffix(&self) -> &str {
        &self.file_suffix
    }

    /// Renames the segment's three files to end in `new_suffix` instead of the current suffix,
    /// the `.log` last, so a `.log` with the new suffix means all three were renamed. Open file
    /// handles and index mappings stay valid. The caller fsyncs the directory.
    pub fn change_file_suffix(&mut self, new_suffix: &str) -> Result<()> {
        self.change_index_suffixes(new_suffix)?;
        self.change_log_suffix(new_suffix)
    }

    /// The index half of [`Self::change_file_suffix`]: afterwards only the `.log` has the old
    /// suffix.
    pub fn change_index_suffixes(&mut self, new_suffix: &str) -> Result<()> {
        let (old_index, old_time) = (self.offset_index_path(), self.time_index_path());
        let new_index = self.resuffixed(&old_index, new_suffix);
        let new_time = self.resuffixed(&old_time, new_suffix);
        match &mut self.offset_index {
            Some(index) => index.rename_to(&new_index)?,
            None => rename_if_exists(&old_index, &new_index)?,
        }
        match &mut self.time_index {
            Some(index) => index.rename_to(&new_time)?,
            None => rename_if_exists(&old_time, &new_time)?,
        }
        Ok(())
    }

    /// The `.log` half of [`Self::change_file_suffix`]; the segment's suffix is `new_suffix`
    /// afterwards.
    pub fn change_log_suffix(&mut self, new_suffix: &str) -> Result<()> {
        let old_log = self.log_path();
        let new_log = self.resuffixed(&old_log, new_suffix);
        file_system().rename(&old_log, &new_log).at(&old_log)?;
        self.file_suffix = new_suffix.to_string();
        Ok(())
    }

    /// `path` (one of this segment's files) with `new_suffix` in place of the current suffix.
    fn resuffixed(&self, path: &Path, new_suffix: &str) -> PathBuf {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let bare = name
            .strip_suffix(self.file_suffix.as_str())
            .unwrap_or(&name)
            .to_string();
        suffixed(path.with_file_name(bare), new_suffix)
    }

    /// Every batch header with its position, read from the `.log` in order (61 bytes per batch).
    pub fn batch_headers(&self) -> Result<Vec<BatchLocation>> {
        let mut out = Vec::new();
        let mut position = 0u32;
        while let Some(header) = self.header_at(position)? {
            out.push(BatchLocation { position, header });
            position += header.total_size() as u32;
        }
        Ok(out)
    }

    /// A sequential reader of this segment's batches through its own file handle, usable
    /// without the owning log's lock while the segment is closed (its bytes never change).
    pub fn batch_reader(&self) -> Result<BatchReader> {
        let path = self.log_path();
        let file = File::open(&path).at(&path)?;
        Ok(BatchReader {
            reader: std::io::BufReader::with_capacity(1 << 20, file),
            path,
            position: 0,
            size: self.size,
        })
    }
    pub fn is_active(&self) -> bool {
        self.active
    }
    pub fn set_params(&mut self, params: SegmentParams) {
        self.params = params;
    }

    /// Makes this the active segment: its indexes grow back to their preallocated size.
    pub fn make_active(&mut self) -> Result<()> {
        self.active = true;
        if self.offset_index.is_some() {
            let max = self.params.max_index_bytes as usize;
            self.offset_index_mut()?.resize(max)?;
            self.time_index_mut()?.resize(max)?;
        }
        Ok(())
    }

    /// Opens both indexes, sized for the segment's role. A missing or implausible index is
    /// rebuilt from the `.log`.
    fn open_indexes(&mut self) -> Result<()> {
        if self.offset_index.is_some() && self.time_index.is_some() {
            return Ok(());
        }
        let index_path = self.offset_index_path();
        let time_path = self.time_index_path();
        let both_exist = index_path.exists() && time_path.exists();
        let max = if self.active || !both_exist {
            self.params.max_index_bytes as usize
        } else {
            0 // an existing closed index keeps its length
        };
        self.offset_index = Some(OffsetIndex::open(&index_path, self.base_offset, max)?);
        self.time_index = Some(TimeIndex::open(&time_path, self.base_offset, max)?);
        if self.size == 0 {
            return Ok(());
        }
        if !both_exist {
            warn!(
                "index files of segment {} are missing; rebuilding them",
                self.log_path().display()
            );
            self.rebuild_indexes()?;
        } else if let Err(e) = self.check_indexes() {
            warn!(
                "{e}; rebuilding the indexes of {}",
                self.log_path().display()
            );
            self.rebuild_indexes()?;
        }
        Ok(())
    }

    /// Rebuilds both indexes (and validates the log) for a segment opened without recovery.
    fn rebuild_indexes(&mut self) -> Result<()> {
        let outcome = self.recover()?;
        if outcome.truncated_bytes > 0 {
            warn!(
                "truncated {} invalid bytes at position {} of {} while rebuilding its indexes",
                outcome.truncated_bytes,
                outcome.valid_bytes,
                self.log_path().display()
            );
        }
        if !self.active {
            // Adds the final time index entry (the segment's max timestamp) and trims.
            self.close_active()?;
        }
        Ok(())
    }

    /// Invariants of the indexes against this segment's `.log`.
    fn check_indexes(&self) -> Result<()> {
        let offset_index = self.offset_index.as_ref().expect("indexes open");
        let time_index = self.time_index.as_ref().expect("indexes open");
        offset_index.sanity_check()?;
        time_index.sanity_check()?;
        if offset_index.entries() > 0 {
            let last = offset_index.entry(offset_index.entries() - 1);
            if last.position >= self.size {
                return Err(EngineError::CorruptIndex {
                    path: offset_index.path().to_path_buf(),
                    reason: format!(
                        "last entry points at position {} but the log has {} bytes",
                        last.position, self.size
                    ),
                });
            }
        }
        Ok(())
    }

    fn offset_index_mut(&mut self) -> Result<&mut OffsetIndex> {
        self.open_indexes()?;
        Ok(self.offset_index.as_mut().expect("opened above"))
    }

    fn time_index_mut(&mut self) -> Result<&mut TimeIndex> {
        self.open_indexes()?;
        Ok(self.time_index.as_mut().expect("opened above"))
    }

    /// Appends already-encoded batches (with final offsets) in one write, then indexes them.
    /// `batches` are their headers, in order; `data` is their concatenation.
    pub fn append(&mut self, data: &[u8], batches: &[BatchHeader]) -> Result<()> {
        self.append_vectored(&[IoSlice::new(data)], batches)
    }

    /// [`Self::append`] of the concatenation of `data`, written by `pwritev` without joining
    /// the pieces first.
    pub fn append_vectored(&mut self, data: &[IoSlice<'_>], batches: &[BatchHeader]) -> Result<()> {
        let data_len: usize = data.iter().map(|d| d.len()).sum();
        let new_size = self.size as u64 + data_len as u64;
        if new_size > u32::MAX as u64 {
            return Err(EngineError::InvalidArgument(format!(
                "segment {} would exceed 4 GiB",
                self.base_offset
            )));
        }
        self.open_indexes()?;
        self.load_max_timestamp()?;
        // At most one entry per batch in each index: their blocks are reserved before the
        // data is written, so indexing cannot fail half-way through an append.
        self.offset_index_mut()?.reserve(batches.len())?;
        self.time_index_mut()?.reserve(batches.len())?;
        let path = self.log_path();
        if let Err(e) = self.file.write_all_vectored_at(data, self.size as u64) {
            // A full disk or a failing device: whatever part of it was written is cut off
            // (best effort; if that fails too, `size` still hides it and the next append
            // overwrites it, and the next start truncates it).
            let _ = self.file.set_len(self.size as u64);
            return Err(EngineError::io(&path, e));
        }
        let mut position = self.size;
        for header in batches {
            self.index_batch(header, position)?;
            position += header.total_size() as u32;
        }
        debug_assert_eq!(position as u64, new_size);
        self.size = position;
        Ok(())
    }

    /// Updates in-memory facts and the sparse indexes for a batch written at `position`.
    fn index_batch(&mut self, header: &BatchHeader, position: u32) -> Result<()> {
        if self.first_batch_timestamp.is_none() {
            self.first_batch_timestamp = Some(header.max_timestamp);
        }
        let (max_ts, _) = self.max_timestamp.unwrap_or((-1, self.base_offset));
        if header.max_timestamp > max_ts || self.max_timestamp.is_none() {
            self.max_timestamp = Some((header.max_timestamp, header.last_offset()));
        }
        if self.bytes_since_last_index_entry > self.params.index_interval_bytes {
            let (ts, ts_offset) = self.max_timestamp.expect("set above");
            let offset_index = self.offset_index.as_mut().expect("indexes open");
            if !offset_index.is_full() {
                offset_index.append(header.last_offset(), position)?;
            }
            let time_index = self.time_index.as_mut().expect("indexes open");
            if time_index.entries() + 1 < time_index.max_entries() {
                time_index.maybe_append(ts, ts_offset, false)?;
            }
            self.bytes_since_last_index_entry = 0;
        }
        self.bytes_since_last_index_entry += header.total_size() as u32;
        self.next_offset = Some(header.next_offset());
        Ok(())
    }

    /// Whether the indexes can take no more entries (a reason to roll). The time index counts
    /// as full one entry early, keeping room for the entry [`Self::close_active`] adds.
    pub fn indexes_full(&mut self) -> Result<bool> {
        self.open_indexes()?;
        let time_index = self.time_index.as_ref().expect("open");
        Ok(self.offset_index.as_ref().expect("open").is_full()
            || time_index.entries() + 1 >= time_index.max_entries())
    }

    /// Reads the batch header at `position`, or `None` at the end of the valid bytes.
    fn header_at(&self, position: u32) -> Result<Option<BatchHeader>> {
        if position as u64 + LOG_OVERHEAD as u64 > self.size as u64 {
            return Ok(None);
        }
        let mut buf = [0u8; BATCH_HEADER_SIZE];
        let available = (self.size - position) as usize;
        let want = available.min(BATCH_HEADER_SIZE);
        let path = self.log_path();
        self.file
            .read_exact_at(&mut buf[..want], position as u64)
            .at(&path)?;
        let header = BatchHeader::parse(&buf[..want]).map_err(|e| self.corrupt(position, e))?;
        if position as u64 + header.total_size() as u64 > self.size as u64 {
            return Err(self.corrupt(
                position,
                RecordError::Truncated {
                    needed: header.total_size(),
                    available,
                },
            ));
        }
        Ok(Some(header))
    }

    fn corrupt(&self, position: u32, e: RecordError) -> EngineError {
        EngineError::Corrupt {
            path: self.log_path(),
            position: position as u64,
            reason: e.to_string(),
        }
    }

    /// The first batch at or after `starting_position` whose last offset is >= `offset`.
    pub fn translate_offset(
        &mut self,
        offset: i64,
        starting_position: u32,
    ) -> Result<Option<BatchLocation>> {
        let mut position = starting_position;
        while let Some(header) = self.header_at(position)? {
            if header.last_offset() >= offset {
                return Ok(Some(BatchLocation { position, header }));
            }
            position += header.total_size() as u32;
        }
        Ok(None)
    }

    /// Where the batch holding `offset` (or the first after it) starts: index lookup + scan.
    pub fn find_batch(&mut self, offset: i64) -> Result<Option<BatchLocation>> {
        let start = self.offset_index_mut()?.lookup(offset).position;
        self.translate_offset(offset, start)
    }

    /// Whole batches from the one containing `start_offset`, up to `max_bytes` (at least one).
    /// Each batch's CRC is verified.
    pub fn read(
        &mut self,
        start_offset: i64,
        max_bytes: usize,
    ) -> Result<Vec<(BatchHeader, Vec<u8>)>> {
        let mut buf = Vec::new();
        let mut batches = Vec::new();
        self.read_into(start_offset, max_bytes, &mut buf, &mut batches)?;
        Ok(batches
            .into_iter()
            .map(|(header, at)| (header, buf[at..at + header.total_size()].to_vec()))
            .collect())
    }

    /// [`Self::read`] into `buf`, with one pread and no copy: the batches are
    /// `buf[at..at + header.total_size()]` for each `(header, at)` pushed onto `batches`, back
    /// to back from `buf[0]`. `buf` is grown when too short, never shrunk, so a reader that
    /// keeps it reads without allocating; bytes after the last batch are left as they are.
    /// `batches` is cleared first; it stays empty past the segment's last batch.
    pub fn read_into(
        &mut self,
        start_offset: i64,
        max_bytes: usize,
        buf: &mut Vec<u8>,
        batches: &mut Vec<(BatchHeader, usize)>,
    ) -> Result<()> {
        batches.clear();
        let Some(first) = self.find_batch(start_offset)? else {
            return Ok(());
        };
        let len = self.read_extent(&first, max_bytes)?;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let buf = &mut buf[..len];
        let path = self.log_path();
        self.file
            .read_exact_at(buf, first.position as u64)
            .at(&path)?;
        let mut at = 0usize;
        while at + LOG_OVERHEAD <= buf.len() {
            // Damage after a good batch ends this answer; the next read starts at the damage
            // and gets the error, so a reader has every batch before it.
            let header = match BatchHeader::parse(&buf[at..]) {
                Ok(h) => h,
                Err(_) if !batches.is_empty() => break,
                Err(e) => return Err(self.corrupt(first.position + at as u32, e)),
            };
            let total = header.total_size();
            if at + total > buf.len() {
                if batches.is_empty() {
                    return Err(self.corrupt(
                        first.position,
                        RecordError::Truncated {
                            needed: total,
                            available: buf.len(),
                        },
                    ));
                }
                break;
            }
            if let Err(e) = record::batch::verify_batch(&buf[at..at + total]) {
                if batches.is_empty() {
                    return Err(self.corrupt(first.position + at as u32, e));
                }
                break;
            }
            batches.push((header, at));
            at += total;
        }
        Ok(())
    }

    /// How many bytes from `first` a read of `max_bytes` takes in one pread: at least the
    /// first batch, and up to `max_bytes`, ending where a batch ends when the next few batch
    /// headers show where (a batch cut by `max_bytes` would be read only to be dropped: with
    /// large batches that is a quarter of a 1 MiB read). Past [`READ_EXTENT_HOPS`] headers the
    /// batches are small, and the read takes `max_bytes` whole. A header that does not parse
    /// ends the extent there, where the read stops anyway.
    fn read_extent(&self, first: &BatchLocation, max_bytes: usize) -> Result<usize> {
        let start = first.position as u64;
        let limit = start
            .saturating_add(max_bytes.max(first.header.total_size()) as u64)
            .min(self.size as u64);
        let mut end = start + first.header.total_size() as u64;
        for _ in 0..READ_EXTENT_HOPS {
            if end >= limit {
                return Ok((end.min(limit) - start) as usize);
            }
            match self.header_at(end as u32) {
                Ok(Some(header)) if end + header.total_size() as u64 <= limit => {
                    end += header.total_size() as u64;
                }
                _ => return Ok((end - start) as usize),
            }
        }
        Ok((limit - start) as usize)
    }

    /// The offset after this segment's last batch (scans from the last index entry).
    pub fn next_offset(&mut self) -> Result<i64> {
        if let Some(next) = self.next_offset {
            return Ok(next);
        }
        let last = self.offset_index_mut()?.lookup(i64::MAX);
        let mut position = last.position;
        let mut next = self.base_offset;
        while let Some(header) = self.header_at(position)? {
            next = header.next_offset();
            position += header.total_size() as u32;
        }
        self.next_offset = Some(next);
        Ok(next)
    }

    fn load_max_timestamp(&mut self) -> Result<(i64, i64)> {
        if let Some(m) = self.max_timestamp {
            return Ok(m);
        }
        // Opening the indexes may rebuild them, which computes the max from the log itself.
        self.open_indexes()?;
        if let Some(m) = self.max_timestamp {
            return Ok(m);
        }
        let last = self.time_index_mut()?.last_entry();
        // The time index's final entry (added at close) is the segment's max; entries only lag
        // behind it in the active segment, which always has the value in memory.
        let mut max = (last.timestamp, last.offset);
        if last.timestamp < 0 && self.size > 0 {
            // No entry at all: a small segment. Scan its headers.
            let mut position = 0;
            while let Some(h) = self.header_at(position)? {
                if h.max_timestamp > max.0 {
                    max = (h.max_timestamp, h.last_offset());
                }
                position += h.total_size() as u32;
            }
        }
        self.max_timestamp = Some(max);
        Ok(max)
    }

    /// The largest timestamp of any record in the segment (-1 when empty).
    pub fn largest_timestamp(&mut self) -> Result<i64> {
        Ok(self.load_max_timestamp()?.0)
    }

    /// `max_timestamp` of the first batch, for `segment.ms`.
    pub fn first_batch_timestamp(&mut self) -> Result<Option<i64>> {
        if self.first_batch_timestamp.is_none() {
            self.first_batch_timestamp = self.header_at(0)?.map(|h| h.max_timestamp);
        }
        Ok(self.first_batch_timestamp)
    }

    /// Kafka's `findOffsetByTimestamp`: the first record with timestamp >= `timestamp_ms` and
    /// offset >= `start_offset` in this segment.
    pub fn find_offset_by_timestamp(
        &mut self,
        timestamp_ms: i64,
        start_offset: i64,
    ) -> Result<Option<i64>> {
        let entry = self.time_index_mut()?.lookup(timestamp_ms);
        let from = entry.offset.max(start_offset);
        let mut position = self.offset_index_mut()?.lookup(from).position;
        while let Some(header) = self.header_at(position)? {
            if header.max_timestamp >= timestamp_ms && header.last_offset() >= start_offset {
                let batch = self.read_batch_at(position, &header)?;
                let decoded =
                    record::decode_batch(&batch).map_err(|e| self.corrupt(position, e))?;
                if let Some(r) = decoded
                    .records
                    .iter()
                    .find(|r| r.timestamp >= timestamp_ms && r.offset >= start_offset)
                {
                    return Ok(Some(r.offset));
                }
            }
            position += header.total_size() as u32;
        }
        Ok(None)
    }

    fn read_batch_at(&self, position: u32, header: &BatchHeader) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; header.total_size()];
        let path = self.log_path();
        self.file
            .read_exact_at(&mut buf, position as u64)
            .at(&path)?;
        Ok(buf)
    }

    /// Validates every batch from the start (header, CRC, offsets increasing and >= base),
    /// truncates the `.log` at the first invalid byte, and rebuilds both indexes.
    pub fn recover(&mut self) -> Result<RecoveryOutcome> {
        // Indexes are rebuilt from scratch; open them at full size first.
        let max = self.params.max_index_bytes as usize;
        match (&mut self.offset_index, &mut self.time_index) {
            (Some(offset_index), Some(time_index)) => {
                offset_index.resize(max)?;
                time_index.resize(max)?;
            }
            _ => {
                let offset_index =
                    OffsetIndex::open(&self.offset_index_path(), self.base_offset, max)?;
                let time_index = TimeIndex::open(&self.time_index_path(), self.base_offset, max)?;
                self.offset_index = Some(offset_index);
                self.time_index = Some(time_index);
            }
        }
        self.offset_index.as_mut().expect("open").reset()?;
        self.time_index.as_mut().expect("open").reset()?;
        self.bytes_since_last_index_entry = 0;
        self.max_timestamp = Some((-1, self.base_offset));
        self.first_batch_timestamp = None;
        self.next_offset = Some(self.base_offset);

        let path = self.log_path();
        let file_len = self.file.size().at(&path)?;
        self.size = u32::try_from(file_len).unwrap_or(u32::MAX);
        let mut position: u32 = 0;
        let mut batches = 0u64;
        let mut expected_min_offset = self.base_offset;
        let mut buf = Vec::new();
        loop {
            let header = match self.header_at(position) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(EngineError::Corrupt { reason, .. }) => {
                    warn!(
                        "{}: invalid batch at position {position}: {reason}",
                        path.display()
                    );
                    break;
                }
                Err(e) => return Err(e),
            };
            let total = header.total_size();
            if total > MAX_BATCH_BYTES {
                break;
            }
            buf.resize(total, 0);
            self.file
                .read_exact_at(&mut buf, position as u64)
                .at(&path)?;
            if let Err(e) = record::batch::verify_batch(&buf) {
                warn!(
                    "{}: invalid batch at position {position}: {e}",
                    path.display()
                );
                break;
            }
            if header.base_offset < expected_min_offset
                || header.last_offset_delta < 0
                || header.last_offset() - self.base_offset > i32::MAX as i64
            {
                warn!(
                    "{}: batch at position {position} has offsets {}..={} out of order (expected >= {expected_min_offset})",
                    path.display(),
                    header.base_offset,
                    header.last_offset()
                );
                break;
            }
            self.index_batch(&header, position)?;
            expected_min_offset = header.next_offset();
            position += total as u32;
            batches += 1;
        }
        let truncated = file_len - position as u64;
        if truncated > 0 {
            self.file.set_len(position as u64).at(&path)?;
        }
        self.size = position;
        Ok(RecoveryOutcome {
            valid_bytes: position,
            truncated_bytes: truncated,
            batches,
        })
    }

    /// Checks the batches after the last offset index entry (at most `index.interval.bytes`
    /// plus one batch): headers, lengths, CRCs and offsets. A clean-shutdown marker says the
    /// daemon stopped cleanly, not that the bytes are intact (a torn write or garbage may follow
    /// the last batch), so the loader checks the active segment's tail even then.
    ///
    /// Bytes at the end that do not form a whole batch (garbage, zeros, a batch cut short) are
    /// truncated: nothing can be read past them. A whole batch whose CRC fails is kept (the
    /// batches after it are intact); reads report it. Returns the truncation, if any.
    pub fn verify_tail(&mut self) -> Result<Option<TailRepair>> {
        let path = self.log_path();
        let mut position = self.offset_index_mut()?.lookup(i64::MAX).position;
        let mut next_offset = None;
        let mut buf = Vec::new();
        let mut damaged_batches = Vec::new();
        while (position as u64) < self.size as u64 {
            let header = match self.header_at(position) {
                Ok(Some(h)) => h,
                // Fewer bytes than a batch header, or a header that cannot be a batch's.
                Ok(None) | Err(EngineError::Corrupt { .. }) => break,
                Err(e) => return Err(e),
            };
            if next_offset.is_some_and(|next| header.base_offset < next)
                || header.last_offset_delta < 0
            {
                break;
            }
            buf.resize(header.total_size(), 0);
            self.file
                .read_exact_at(&mut buf, position as u64)
                .at(&path)?;
            if let Err(e) = record::batch::verify_batch(&buf) {
                damaged_batches.push((position, e));
            }
            next_offset = Some(header.next_offset());
            position += header.total_size() as u32;
        }
        for (at, e) in damaged_batches {
            log::error!(
                "{}: batch at position {at} is damaged ({e}); kept, and reads of it fail with EIO",
                path.display()
            );
        }
        if position as u64 >= self.size as u64 {
            return Ok(None);
        }
        let removed = self.size as u64 - position as u64;
        // With nothing valid after the last index entry, that entry names the invalid bytes.
        let next = match next_offset {
            Some(next) => next,
            None => self.offset_index_mut()?.lookup(i64::MAX).offset,
        };
        self.truncate_at(position, next)?;
        Ok(Some(TailRepair {
            position,
            removed_bytes: removed,
        }))
    }

    /// Removes every batch from the one containing `offset` on. Returns the bytes removed.
    pub fn truncate_to(&mut self, offset: i64) -> Result<u64> {
        let Some(location) = self.find_batch(offset)? else {
            return Ok(0);
        };
        let position = location.position;
        let removed = (self.size - position) as u64;
        self.truncate_at(position, offset)?;
        Ok(removed)
    }

    /// Cuts the `.log` at `position`, where the batch holding `offset` (or garbage) starts,
    /// and the indexes before `offset`, then recomputes the in-memory facts.
    fn truncate_at(&mut self, position: u32, offset: i64) -> Result<()> {
        self.offset_index_mut()?.truncate_to(offset)?;
        self.time_index_mut()?.truncate_to(offset)?;
        let path = self.log_path();
        self.file.set_len(position as u64).at(&path)?;
        self.size = position;
        // Recompute in-memory facts from what remains (bounded: the last index entry on).
        self.next_offset = None;
        self.max_timestamp = None;
        self.first_batch_timestamp = None;
        let last = self.time_index_mut()?.last_entry();
        self.max_timestamp = Some((last.timestamp, last.offset));
        let mut scan_from = self.offset_index_mut()?.lookup(i64::MAX).position;
        self.bytes_since_last_index_entry = 0;
        while let Some(h) = self.header_at(scan_from)? {
            let (ts, _) = self.max_timestamp.expect("set");
            if h.max_timestamp > ts {
                self.max_timestamp = Some((h.max_timestamp, h.last_offset()));
            }
            self.bytes_since_last_index_entry += h.total_size() as u32;
            scan_from += h.total_size() as u32;
        }
        self.next_offset()?;
        Ok(())
    }

    /// fsyncs the `.log` and msyncs the indexes.
    pub fn flush(&mut self) -> Result<()> {
        let path = self.log_path();
        self.file.sync_data().at(&path)?;
        if let Some(index) = &self.offset_index {
            index.flush()?;
        }
        if let Some(index) = &self.time_index {
            index.flush()?;
        }
        Ok(())
    }

    /// Makes the segment inactive: adds the final time index entry (so the index's last entry
    /// is the segment's max timestamp) and trims both indexes to their entries.
    pub fn close_active(&mut self) -> Result<()> {
        if self.offset_index.is_some() {
            let (ts, offset) = self.load_max_timestamp()?;
            if ts >= 0 {
                self.time_index_mut()?.maybe_append(ts, offset, true)?;
            }
            self.trim_indexes()?;
        }
        self.active = false;
        Ok(())
    }

    fn trim_indexes(&mut self) -> Result<()> {
        if let Some(index) = &mut self.offset_index {
            index.trim_to_valid_size()?;
        }
        if let Some(index) = &mut self.time_index {
            index.trim_to_valid_size()?;
        }
        Ok(())
    }

    /// Deletes the segment's files.
    pub fn delete(mut self) -> Result<()> {
        if let Some(index) = self.offset_index.take() {
            index.delete()?;
        }
        if let Some(index) = self.time_index.take() {
            index.delete()?;
        }
        for path in [
            self.log_path(),
            self.offset_index_path(),
            self.time_index_path(),
        ] {
            remove_if_exists(&path)?;
        }
        info!(
            "deleted segment {} of {}",
            self.base_offset,
            self.dir.display()
        );
        Ok(())
    }
}

/// Renames `from` to `to`; a missing `from` (an index never written) is not an error.
fn rename_if_exists(from: &Path, to: &Path) -> Result<()> {
    match file_system().rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EngineError::io(from, e)),
    }
}

/// The number of records in the first `size_bytes` of the `.log` at `path`, from the batch
/// headers alone (61 bytes read per batch).
pub fn count_records(path: &Path, size_bytes: u64) -> Result<u64> {
    let file = File::open(path).at(path)?;
    let mut records = 0u64;
    let mut position = 0u64;
    let mut buf = [0u8; BATCH_HEADER_SIZE];
    while position + BATCH_HEADER_SIZE as u64 <= size_bytes {
        file.read_exact_at(&mut buf, position).at(path)?;
        let header = BatchHeader::parse(&buf).map_err(|e| EngineError::Corrupt {
            path: path.to_path_buf(),
            position,
            reason: e.to_string(),
        })?;
        records += header.records_count.max(0) as u64;
        position += header.total_size() as u64;
    }
    Ok(records)
}

/// `path` with `suffix` appended to its file name.
pub fn suffixed(path: PathBuf, suffix: &str) -> PathBuf {
    if suffix.is_empty() {
        return path;
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Reads a closed segment's batches in order through its own buffered file handle.
pub struct BatchReader {
    reader: std::io::BufReader<File>,
    path: PathBuf,
    position: u32,
    size: u32,
}

impl BatchReader {
    /// A reader of the first `size_bytes` of the `.log` at `path`.
    pub fn open(path: &Path, size_bytes: u64) -> Result<BatchReader> {
        let file = File::open(path).at(path)?;
        Ok(BatchReader {
            reader: std::io::BufReader::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            position: 0,
            size: u32::try_from(size_bytes).unwrap_or(u32::MAX),
        })
    }

    /// The next whole batch (CRC verified) and its position, `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<(u32, BatchHeader, Vec<u8>)>> {
        use std::io::Read;
        if self.position as u64 + LOG_OVERHEAD as u64 > self.size as u64 {
            return Ok(None);
        }
        let position = self.position;
        let corrupt = |e: RecordError| EngineError::Corrupt {
            path: self.path.clone(),
            position: position as u64,
            reason: e.to_string(),
        };
        let available = (self.size - position) as usize;
        let mut head = vec![0u8; BATCH_HEADER_SIZE.min(available)];
        self.reader.read_exact(&mut head).at(&self.path)?;
        let header = BatchHeader::parse(&head).map_err(corrupt)?;
        let total = header.total_size();
        if total > available {
            return Err(corrupt(RecordError::Truncated {
                needed: total,
                available,
            }));
        }
        let mut bytes = head;
        bytes.resize(total, 0);
        self.reader
            .read_exact(&mut bytes[BATCH_HEADER_SIZE..])
            .at(&self.path)?;
        record::batch::verify_batch(&bytes).map_err(corrupt)?;
        self.position += total as u32;
        Ok(Some((position, header, bytes)))
    }
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match file_system().remove(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EngineError::io(path, e)),
    }
}
