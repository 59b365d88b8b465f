//! The partition log: an ordered list of segments, the last of which is active.
//!
//! A partition directory holds, besides the segments:
//! - `lmqfs-checkpoint`: recovery point and log start offset ([`super::checkpoint`]);
//! - `.lmqfs-clean-shutdown`: present only after a clean close;
//! - `lmqfs-cleaner-checkpoint`: the first offset compaction has not seen
//!   ([`super::cleaner`]), and `lmqfs-cleaner-swap` while a compaction swap is in flight;
//! - `lmqfs-keys-snapshot`: the key index as of the last clean close ([`super::keys`]);
//! - `lmqfs-view-state`: an opaque blob the file layer stored about the log's records (its view
//!   position maps), written at a clean close and kept only while it still describes them
//!   ([`Log::store_view_state`]);
//! - `*.deleted`: segments retention or compaction removed, kept for `file.delete.delay.ms`.
//!
//! Cleanup and readers: retention and compaction never rewrite a segment in place; they take
//! segments out of the list (retired, renamed `.deleted`, still open) and put compacted copies
//! in. Each such change, and each `delete_records`, starts a new *view generation*. A reader
//! that started in an older generation (an open `log` file) asks [`Log::read_batches_at`] and
//! gets the segments of its generation: retired ones while their files are kept, none of the
//! copies written after it. New readers get the current generation.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use log::{error, info, warn};

use super::checkpoint::{self, Checkpoint};
use super::cleaner::{self, CleanerCheckpoint, CleanerConfig, CompactionOutcome};
use super::error::IoResultExt;
use super::io::{file_system, OpenMode};
use super::keys::KeyIndex;
use super::loader;
use super::record::batch::VectoredBatches;
use super::record::{self, BatchHeader, MemoryRecords, NewRecord, Record};
use super::retention::{self, RetentionOutcome, SegmentFacts};
use super::segment::{LogSegment, SegmentParams};
use super::{now_ms, EngineError, LogConfig, Result};

thread_local! {
    /// The buffer [`Log::append_values`] encodes into, kept by each thread between appends.
    static ENCODE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Above this capacity the buffer of an append is freed rather than kept for the next one.
const MAX_KEPT_ENCODE_BUFFER_BYTES: usize = 4 << 20;

/// Values at least this long are written from the caller's memory (one `iovec` each) rather
/// than copied into the encode buffer first. Measured on `cat` into `append`: 1 KiB lines
/// took about a fifth less daemon CPU borrowed than copied; 100-byte lines borrowed took more
/// than twice as much (the kernel walks an `iovec` per value, the CRC runs over short pieces).
const BORROWED_VALUE_MIN_BYTES: usize = 512;

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
#[derive(Debug, Clone, PartialEq)]
pub struct LogStats {
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub recovery_point: i64,
    pub size_bytes: u64,
    pub segment_count: usize,
    pub last_roll: Option<RollOutcome>,
    /// The last retention run that deleted segments.
    pub last_retention: Option<RetentionOutcome>,
    /// The last compaction run that cleaned (was not skipped).
    pub last_compaction: Option<CompactionOutcome>,
    /// The cleaner checkpoint: offsets below it have been compacted.
    pub first_dirty_offset: i64,
    pub view_generation: u64,
}

/// The log as a view sees it: a generation number that changes whenever records below the log
/// end are removed (retention, compaction, delete-records), and the log start offset then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ViewGeneration {
    pub generation: u64,
    pub log_start_offset: i64,
}

/// A partition's log: segments ordered by base offset, the last one active.
///
/// Offsets are assigned here, under one lock, so an append is atomic for readers: its batches
/// become visible together when the log end offset moves. Records are encoded (and compressed)
/// before the lock is taken; only the base offset is patched under it (it is outside the CRC).
///
/// Durability: `append` returns after `pwrite`, so the data survives a crash of the process;
/// it survives power loss once [`Log::flush`] (or the `flush.messages` / `flush.ms` policy)
/// fsynced it, which also advances the recovery point.
///
/// Cleanup (retention, compaction) removes whole closed segments or replaces them with
/// compacted copies. Each such change, and each `delete_records`, starts a new *view
/// generation*; the replaced segments are renamed `.deleted` and kept open for
/// `file.delete.delay.ms`, so [`Log::read_batches_at`] serves a reader of an older generation
/// the bytes it started with.
///
/// Thread-safety: `Send + Sync`; every method takes `&self`.
/// Lock order: `cleanup` before `keys_build` before `inner`. `inner` is held for every state
/// change and read, but never while compaction reads and writes segments: the cleaner holds
/// only `cleanup` then, and takes `inner` for the final swap (renames only).
pub struct Log {
    dir: PathBuf,
    /// Serializes the operations that remove or replace segments: retention, compaction and
    /// truncation. Closed segments do not change while it is held.
    cleanup: Mutex<()>,
    /// Serializes building the key index (see [`Log::live_keys`]).
    keys_build: Mutex<()>,
    /// Mirrors `LogInner::closed`, for the cleaner to stop early without the lock.
    closed_flag: AtomicBool,
    /// Nothing is called with it held that takes another log's lock.
    inner: Mutex<LogInner>,
    /// Why the directory could not be opened, for a quarantined log (see [`Log::unavailable`]).
    unavailable: Option<String>,
    /// Names this log (this opening of it) in [`RECORD_BATCH`].
    id: u64,
}

/// The batch the last [`Log::read_record`] of any log found its record in (CRC verified when
/// read), with the log and the view generation it was read in: `cat <offset>` asks for the
/// same record at lookup, stat and open, and nearby offsets share batches. A batch's bytes
/// never change within a generation (every removal or replacement of records starts a new
/// one), so a hit of the current generation is what a read of the segment would return. One
/// batch for the whole process, so memory stays bounded by partition count. A leaf lock.
static RECORD_BATCH: Mutex<Option<(u64, u64, Arc<FetchedBatch>)>> = Mutex::new(None);

/// The next [`Log::id`].
static NEXT_LOG_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct LogInner {
    config: LogConfig,
    segments: BTreeMap<i64, LogSegment>,
    log_start_offset: i64,
    log_end_offset: i64,
    recovery_point: i64,
    /// Records appended since the last flush, and when the first of them was.
    unflushed_messages: u64,
    first_unflushed_ms: Option<i64>,
    last_roll: Option<RollOutcome>,
    last_retention: Option<RetentionOutcome>,
    last_compaction: Option<CompactionOutcome>,
    closed: bool,
    /// The view generation: bumped whenever records below the log end are removed.
    generation: u64,
    /// The generation in which a live segment written by the cleaner appeared; segments not
    /// listed are visible to every generation.
    introduced: HashMap<i64, u64>,
    /// Segments removed by retention or replaced by compaction, renamed `.deleted` and kept
    /// readable for older generations until `delete_after_ms`.
    retired: Vec<RetiredSegment>,
    /// The cleaner checkpoint: the first offset compaction has not yet seen.
    first_dirty_offset: i64,
    /// The earliest delete horizon of a tombstone kept by compaction, when the cleaner should
    /// look again even if nothing is dirty (not persisted: the next cleaning finds it again).
    next_tombstone_horizon_ms: Option<i64>,
    /// The key index, built on first use (see [`Log::live_keys`]).
    keys: Option<KeyIndex>,
    /// Where a test makes a swap stop (see [`Log::set_swap_crash`]).
    swap_crash: Option<(cleaner::SwapStep, usize)>,
    /// The view generation the `lmqfs-view-state` file describes, if there is one.
    view_state_generation: Option<u64>,
    /// A view state stored for the generation it names, not yet written: [`Log::close`]
    /// writes it (see [`Log::store_view_state`]).
    pending_view_state: Option<(u64, Arc<[u8]>)>,
}

/// A segment no longer in the log, kept for readers of the generations that had it.
struct RetiredSegment {
    segment: LogSegment,
    /// Visible to generations `introduced ..retired`.
    introduced: u64,
    retired: u64,
    delete_after_ms: i64,
}

fn segment_params(config: &LogConfig) -> SegmentParams {
    SegmentParams {
        max_index_bytes: config.segment_index_bytes,
        index_interval_bytes: config.index_interval_bytes,
    }
}

impl Log {
    /// Opens (creating if needed) the log in `dir`. After an unclean stop, recovers from the
    /// recovery point; after a clean one, scans nothing.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log> {
        let loaded = loader::load(dir, segment_params(&config))?;
        if loaded.recovered {
            // The key snapshot is a prefix state of the log it was written for; after an
            // unclean stop the log may have lost its tail, so the index is rebuilt.
            KeyIndex::remove_snapshot(dir)?;
        } else if KeyIndex::snapshot_next_offset(dir).is_some_and(|n| n > loaded.log_end_offset) {
            warn!(
                "{}: key snapshot is ahead of the log end {}; it will be rebuilt",
                dir.display(),
                loaded.log_end_offset
            );
            KeyIndex::remove_snapshot(dir)?;
        }
        // Like the key snapshot, the view state describes the log as it was at the last clean
        // close; after an unclean stop the log may differ, so it is dropped.
        let view_state_generation = if loaded.recovered {
            remove_view_state(dir)?;
            None
        } else {
            dir.join(VIEW_STATE_FILE).exists().then_some(0)
        };
        let first_dirty_offset = CleanerCheckpoint::read(dir)
            .unwrap_or_else(|e| {
                warn!("{e}; compaction starts again from the log start");
                CleanerCheckpoint::default()
            })
            .first_dirty_offset
            .clamp(loaded.log_start_offset, loaded.log_end_offset);
        Ok(Log {
            dir: dir.to_path_buf(),
            cleanup: Mutex::new(()),
            keys_build: Mutex::new(()),
            id: NEXT_LOG_ID.fetch_add(1, Ordering::Relaxed),
            closed_flag: AtomicBool::new(false),
            inner: Mutex::new(LogInner {
                config,
                segments: loaded.segments,
                log_start_offset: loaded.log_start_offset,
                log_end_offset: loaded.log_end_offset,
                recovery_point: loaded.recovery_point,
                unflushed_messages: 0,
                first_unflushed_ms: None,
                last_roll: None,
                last_retention: None,
                last_compaction: None,
                closed: false,
                generation: 0,
                introduced: HashMap::new(),
                retired: Vec::new(),
                first_dirty_offset,
                next_tombstone_horizon_ms: None,
                keys: None,
                swap_crash: None,
                view_state_generation,
                pending_view_state: None,
            }),
            unavailable: None,
        })
    }

    /// A quarantined partition: `dir` could not be opened (`reason`). It holds nothing and
    /// touches no file; every read and change fails with `Corrupt` naming `dir` and the reason,
    /// so its data stays as it was for someone to inspect and repair, while the other
    /// partitions are served.
    pub fn unavailable(dir: &Path, config: LogConfig, reason: String) -> Log {
        Log {
            dir: dir.to_path_buf(),
            cleanup: Mutex::new(()),
            keys_build: Mutex::new(()),
            id: NEXT_LOG_ID.fetch_add(1, Ordering::Relaxed),
            closed_flag: AtomicBool::new(true),
            inner: Mutex::new(LogInner {
                config,
                segments: BTreeMap::new(),
                log_start_offset: 0,
                log_end_offset: 0,
                recovery_point: 0,
                unflushed_messages: 0,
                first_unflushed_ms: None,
                last_roll: None,
                last_retention: None,
                last_compaction: None,
                closed: true,
                generation: 0,
                introduced: HashMap::new(),
                retired: Vec::new(),
                first_dirty_offset: 0,
                next_tombstone_horizon_ms: None,
                keys: None,
                swap_crash: None,
                view_state_generation: None,
                pending_view_state: None,
            }),
            unavailable: Some(reason),
        }
    }

    /// Why this partition is quarantined, if it is (see [`Log::unavailable`]).
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// The error every operation of a quarantined log answers.
    fn unavailable_error(&self) -> Option<EngineError> {
        self.unavailable
            .as_ref()
            .map(|reason| EngineError::Corrupt {
                path: self.dir.clone(),
                position: 0,
                reason: format!("partition quarantined at startup: {reason}"),
            })
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|poisoned| {
            error!(
                "{}: a previous operation panicked; continuing",
                self.dir.display()
            );
            poisoned.into_inner()
        })
    }

    fn lock_open(&self) -> Result<MutexGuard<'_, LogInner>> {
        let inner = self.lock();
        if inner.closed {
            return Err(self.unavailable_error().unwrap_or(EngineError::Closed));
        }
        Ok(inner)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.lock().config.clone()
    }

    /// Applies a new config (roll/flush/size limits take effect from the next append).
    pub fn update_config(&self, config: LogConfig) {
        let mut inner = self.lock();
        let params = segment_params(&config);
        for segment in inner.segments.values_mut() {
            segment.set_params(params);
        }
        inner.config = config;
    }

    /// Appends `records` atomically: all get consecutive offsets and become readable together,
    /// or none does. They form one batch, or several when one would exceed `max.message.bytes`
    /// (each batch is then at most that size); a single record too large for it is
    /// `RecordTooLarge`. An empty slice is `InvalidArgument`.
    pub fn append(&self, records: &[NewRecord]) -> Result<AppendInfo> {
        if records.is_empty() {
            return Err(EngineError::InvalidArgument("append of no records".into()));
        }
        let config = self.config();
        if config.cleanup_policy.compact {
            if let Some(i) = records.iter().position(|r| r.key.is_none()) {
                // Kafka refuses these too: compaction keeps the latest record *per key*.
                return Err(EngineError::InvalidArgument(format!(
                    "record {i} has no key, and cleanup.policy={} needs one \
                     (write to keys/<key>, or give \"key\" in append.jsonl)",
                    config.cleanup_policy.name()
                )));
            }
        }
        let now = now_ms();
        let mut encoded = VectoredBatches::new(Vec::new(), usize::MAX);
        let limit = config.max_message_bytes as usize;
        let encode = |out: &mut VectoredBatches, run: &[NewRecord]| {
            let batch = record::encode_batch(
                0,
                run,
                config.compression_type,
                config.message_timestamp_type,
                now,
            )?;
            out.push_batch(batch);
            Ok(())
        };
        encode_within_limit(records, limit, &encode, &mut encoded)?;
        self.append_encoded(&mut encoded, records.len(), now, |keys, first_offset| {
            for (i, r) in records.iter().enumerate() {
                keys.apply(first_offset + i as i64, r.key.as_deref(), r.value.is_none());
            }
        })
    }

    /// [`Self::append`] of plain values (no key, no headers, the append time as timestamp),
    /// encoded straight from the slices: what `append` of `NewRecord::value` of each does,
    /// without a record per value.
    pub fn append_values<'v>(&self, values: &[&'v [u8]]) -> Result<AppendInfo> {
        if values.is_empty() {
            return Err(EngineError::InvalidArgument("append of no records".into()));
        }
        let config = self.config();
        if config.cleanup_policy.compact {
            return Err(EngineError::InvalidArgument(format!(
                "record 0 has no key, and cleanup.policy={} needs one \
                 (write to keys/<key>, or give \"key\" in append.jsonl)",
                config.cleanup_policy.name()
            )));
        }
        let now = now_ms();
        let limit = config.max_message_bytes as usize;
        let encode = |out: &mut VectoredBatches<'v>, run: &[&'v [u8]]| {
            record::batch::encode_value_batch_vectored(
                out,
                run,
                config.compression_type,
                config.message_timestamp_type,
                now,
            )
        };
        // Long values go to the file straight from `values`; the rest is encoded into a
        // buffer this thread keeps (a FUSE worker appends write after write of about 1 MiB:
        // the same warm pages each time).
        let buffer = ENCODE_BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
        let mut encoded = VectoredBatches::new(buffer, BORROWED_VALUE_MIN_BYTES);
        let appended = encode_within_limit(values, limit, &encode, &mut encoded).and_then(|()| {
            self.append_encoded(&mut encoded, values.len(), now, |keys, first_offset| {
                keys.advance_to(first_offset + values.len() as i64);
            })
        });
        let buffer = encoded.into_buffer();
        if buffer.capacity() <= MAX_KEPT_ENCODE_BUFFER_BYTES {
            ENCODE_BUFFER.with(|b| *b.borrow_mut() = buffer);
        }
        appended
    }

    /// Appends `encoded`, the concatenation of encoded batches (base offsets still to be set)
    /// holding `record_count` records, in one write under the lock; `index_keys` brings a
    /// loaded key index up to date.
    fn append_encoded(
        &self,
        encoded: &mut VectoredBatches<'_>,
        record_count: usize,
        now: i64,
        index_keys: impl FnOnce(&mut KeyIndex, i64),
    ) -> Result<AppendInfo> {
        let total_bytes = encoded.len();
        let mut headers = (0..encoded.batch_count())
            .map(|i| BatchHeader::parse(encoded.header_bytes(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let max_timestamp = headers.iter().map(|h| h.max_timestamp).max().unwrap_or(-1);

        let mut inner = self.lock_open()?;
        let incoming = Incoming {
            records: record_count as u64,
            bytes: total_bytes,
            max_timestamp,
        };
        inner.maybe_roll(&self.dir, incoming, now)?;
        let first_offset = inner.log_end_offset;
        let mut next = first_offset;
        for (i, header) in headers.iter_mut().enumerate() {
            encoded.set_base_offset(i, next);
            header.base_offset = next;
            next = header.next_offset();
        }
        inner
            .active_segment()
            .append_vectored(&encoded.io_slices(), &headers)?;
        inner.log_end_offset = next;
        if let Some(keys) = inner.keys.as_mut() {
            index_keys(keys, first_offset);
        }
        inner.unflushed_messages += record_count as u64;
        inner.first_unflushed_ms.get_or_insert(now);
        if inner
            .config
            .flush_messages
            .is_some_and(|limit| inner.unflushed_messages >= limit)
        {
            inner.flush(&self.dir)?;
        }
        Ok(AppendInfo {
            first_offset,
            last_offset: next - 1,
            max_timestamp,
            batch_bytes: total_bytes,
        })
    }

    /// Records with offset >= `start_offset`, whole batches, until `max_bytes` of batch data
    /// (always at least one batch if any exists). `OffsetOutOfRange` below the log start or
    /// past the log end; an empty vector at the log end.
    ///
    /// Each record is its own allocation; [`Self::read_into`] reads the same records without.
    pub fn read(&self, start_offset: i64, max_bytes: usize) -> Result<Vec<Record>> {
        let mut memory = MemoryRecords::new();
        self.read_into(start_offset, max_bytes, &mut memory)?;
        let records = memory
            .records()
            .map(|r| r.map(|r| r.to_record()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(records)
    }

    /// [`Self::read`] into `records`, the fast way: the batches are read with one `pread` into
    /// `records`' buffer (kept from earlier reads), each CRC checked once, compressed ones
    /// decompressed once, and [`MemoryRecords::records`] then yields each record borrowed from
    /// those bytes, without an allocation per record. What was in `records` is replaced; on an
    /// error it is left empty. A malformed batch (records that do not parse or decompress) is
    /// the error of [`MemoryRecords::records`] when the walk gets to it, as [`Self::read`]
    /// gives it.
    ///
    /// ```no_run
    /// # fn main() -> lmqfs::engine::Result<()> {
    /// use lmqfs::engine::{Log, LogConfig, MemoryRecords};
    /// let log = Log::open(std::path::Path::new("/var/lib/topic-0"), LogConfig::default())?;
    /// let mut records = MemoryRecords::new();
    /// let mut offset = log.log_start_offset();
    /// while offset < log.log_end_offset() {
    ///     log.read_into(offset, 1 << 20, &mut records)?;
    ///     for record in records.records() {
    ///         let record = record?;
    ///         println!("{}: {:?}", record.offset, record.value);
    ///     }
    ///     offset = records.next_offset().unwrap_or(offset);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_into(
        &self,
        start_offset: i64,
        max_bytes: usize,
        records: &mut MemoryRecords,
    ) -> Result<()> {
        let (bytes, batches) = records.start_read(start_offset);
        {
            let mut inner = self.lock();
            let (log_start_offset, log_end_offset) = (inner.log_start_offset, inner.log_end_offset);
            if start_offset < log_start_offset || start_offset > log_end_offset {
                return Err(EngineError::OffsetOutOfRange {
                    offset: start_offset,
                    log_start_offset,
                    log_end_offset,
                });
            }
            if let Some(e) = self.unavailable_error() {
                return Err(e);
            }
            inner.read_into(start_offset, max_bytes, bytes, batches)?;
        }
        records.finish_read();
        Ok(())
    }

    /// [`Self::read_into`] as the log was at view generation `generation` (see
    /// [`Self::read_batches_at`]): whole batches from the one holding `start_offset` (it may
    /// begin before it), without refusing offsets below the log start. The current
    /// generation's batches are read straight into `records`' buffer; an older generation's
    /// are copied in from [`Self::read_batches_at`].
    pub fn read_into_at(
        &self,
        generation: u64,
        start_offset: i64,
        max_bytes: usize,
        records: &mut MemoryRecords,
    ) -> Result<()> {
        if let Some(e) = self.unavailable_error() {
            records.fill(start_offset, []);
            return Err(e);
        }
        {
            let mut inner = self.lock();
            if generation >= inner.generation {
                let (bytes, batches) = records.start_read(start_offset);
                let read = inner.read_into(start_offset, max_bytes, bytes, batches);
                drop(inner);
                if read.is_err() {
                    batches.clear();
                }
                records.finish_read();
                return read;
            }
        }
        let batches = match self.read_batches_at(generation, start_offset, max_bytes) {
            Ok(batches) => batches,
            Err(e) => {
                records.fill(start_offset, []);
                return Err(e);
            }
        };
        records.fill(
            start_offset,
            batches.iter().map(|b| (b.header, b.bytes.as_slice())),
        );
        Ok(())
    }

    /// Raw batches from the one containing `start_offset` (it may begin before it), until
    /// `max_bytes` (at least one batch if any exists). Unlike [`Self::read`] this does not refuse
    /// offsets below the log start offset: it serves whatever is still physically present, so a
    /// reader that opened a view before a `delete-records` keeps its coordinates. Past the log
    /// end, or before the first retained segment, it returns what exists from there (possibly
    /// nothing). CRCs are verified.
    pub fn read_batches(&self, start_offset: i64, max_bytes: usize) -> Result<Vec<FetchedBatch>> {
        if let Some(e) = self.unavailable_error() {
            return Err(e);
        }
        self.lock().read_batches(start_offset, max_bytes)
    }

    /// The record at `offset`: `OffsetOutOfRange` outside [log start, log end), `Ok(None)` for
    /// an offset inside the range that no record has (removed by compaction).
    pub fn read_record(&self, offset: i64) -> Result<Option<Record>> {
        let (log_start_offset, log_end_offset, generation) = {
            let inner = self.lock();
            (
                inner.log_start_offset,
                inner.log_end_offset,
                inner.generation,
            )
        };
        if offset < log_start_offset || offset >= log_end_offset {
            return Err(EngineError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            });
        }
        let cached = lock_unpoisoned(&RECORD_BATCH)
            .as_ref()
            .filter(|(id, g, b)| {
                *id == self.id
                    && *g == generation
                    && b.header.base_offset <= offset
                    && offset <= b.header.last_offset()
            })
            .map(|(_, _, b)| Arc::clone(b));
        let batch = match cached {
            Some(batch) => batch,
            None => {
                let Some(batch) = self.read_batches(offset, 1)?.into_iter().next() else {
                    return Ok(None);
                };
                let batch = Arc::new(batch);
                *lock_unpoisoned(&RECORD_BATCH) = Some((self.id, generation, Arc::clone(&batch)));
                batch
            }
        };
        // Only the one record is decoded, however large its batch.
        Ok(record::batch::find_record_in_verified(
            &batch.bytes,
            offset,
        )?)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.lock().log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.lock().log_end_offset
    }

    /// The first offset not yet known to be on disk.
    pub fn recovery_point(&self) -> i64 {
        self.lock().recovery_point
    }

    pub fn size_bytes(&self) -> u64 {
        self.lock().size_bytes()
    }

    pub fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        let inner = self.lock();
        inner
            .segments
            .values()
            .map(|s| SegmentInfo {
                base_offset: s.base_offset(),
                size_bytes: s.size() as u64,
                log_path: s.log_path(),
                offset_index_path: s.offset_index_path(),
                time_index_path: s.time_index_path(),
                is_active: s.is_active(),
            })
            .collect()
    }

    pub fn stats(&self) -> LogStats {
        let inner = self.lock();
        LogStats {
            log_start_offset: inner.log_start_offset,
            log_end_offset: inner.log_end_offset,
            recovery_point: inner.recovery_point,
            size_bytes: inner.size_bytes(),
            segment_count: inner.segments.len(),
            last_roll: inner.last_roll.clone(),
            last_retention: inner.last_retention.clone(),
            last_compaction: inner.last_compaction.clone(),
            first_dirty_offset: inner.first_dirty_offset,
            view_generation: inner.generation,
        }
    }

    /// Kafka's ListOffsets: the first offset whose timestamp >= `timestamp_ms`, or the log end
    /// offset when there is none.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<i64> {
        let mut inner = self.lock();
        let log_start_offset = inner.log_start_offset;
        let log_end_offset = inner.log_end_offset;
        for segment in inner.segments.values_mut() {
            if segment.is_empty() || segment.largest_timestamp()? < timestamp_ms {
                continue;
            }
            if let Some(offset) =
                segment.find_offset_by_timestamp(timestamp_ms, log_start_offset)?
            {
                return Ok(offset);
            }
        }
        Ok(log_end_offset)
    }

    /// Rolls a new active segment (a no-op when the active segment is empty).
    pub fn roll(&self) -> Result<()> {
        let mut inner = self.lock_open()?;
        if inner.active_segment().is_empty() {
            return Ok(());
        }
        inner.roll(&self.dir, "requested", now_ms())
    }

    /// fsyncs everything appended so far and advances the recovery point.
    pub fn flush(&self) -> Result<()> {
        let mut inner = self.lock_open()?;
        inner.flush(&self.dir)
    }

    /// Flushes if `flush.ms` says the oldest unflushed record is due. Called periodically.
    pub fn flush_if_due(&self, now_ms: i64) -> Result<bool> {
        let mut inner = self.lock();
        if inner.closed {
            return Ok(false);
        }
        let due = match (inner.config.flush_ms, inner.first_unflushed_ms) {
            (Some(flush_ms), Some(first)) => now_ms - first >= flush_ms,
            _ => false,
        };
        if due {
            inner.flush(&self.dir)?;
        }
        Ok(due)
    }

    /// Kafka's DeleteRecords: advances the log start offset to `offset` (at most the log end).
    /// Returns the new log start offset. The records below it are no longer served by
    /// [`Self::read`]; retention removes the segments wholly below it.
    pub fn delete_records(&self, offset: i64) -> Result<i64> {
        let mut inner = self.lock_open()?;
        if offset < 0 || offset > inner.log_end_offset {
            return Err(EngineError::OffsetOutOfRange {
                offset,
                log_start_offset: inner.log_start_offset,
                log_end_offset: inner.log_end_offset,
            });
        }
        if offset > inner.log_start_offset {
            inner.log_start_offset = offset;
            inner.generation += 1;
            inner.first_dirty_offset = inner.first_dirty_offset.max(offset);
            match inner.write_checkpoint(&self.dir) {
                Ok(()) => {}
                Err(e) if is_no_space(&e) => {
                    // A full disk: delete-records must still free space, or nothing through the
                    // mount could. So the segments wholly below `offset` (and those retention
                    // already set aside) are deleted now, then the checkpoint is written.
                    //
                    // Crash safety: a crash between the two leaves the old checkpoint, whose log
                    // start offset is below the first remaining segment. The loader takes the
                    // larger of the two, so the log starts at the first remaining segment: every
                    // record at or after `offset` is there (only whole segments below it were
                    // deleted), nothing deleted comes back, and the records of that segment
                    // below `offset` are served again, as if this call had not happened; it had
                    // not returned.
                    let freed = inner.delete_segments_below(offset)?;
                    warn!(
                        "{}: {e}; deleted {freed} segment(s) below offset {offset} first to free \
                         space",
                        self.dir.display()
                    );
                    inner.write_checkpoint(&self.dir)?;
                }
                Err(e) => return Err(e),
            }
            info!(
                "{}: log start offset advanced to {offset}",
                self.dir.display()
            );
        }
        Ok(inner.log_start_offset)
    }

    /// Removes every record with offset >= `offset` (whole batches: the batch holding `offset`
    /// goes too, so the log end may end up below `offset`).
    pub fn truncate_to(&self, offset: i64) -> Result<()> {
        let _cleanup = lock_unpoisoned(&self.cleanup);
        let mut inner = self.lock_open()?;
        if offset >= inner.log_end_offset {
            return Ok(());
        }
        // Removed records may have been keys' latest values: rebuild the index on next use.
        inner.keys = None;
        KeyIndex::remove_snapshot(&self.dir)?;
        inner.generation += 1;
        let params = segment_params(&inner.config);
        if offset <= inner.log_start_offset {
            // Nothing retained survives: start afresh at `offset`.
            for (_, segment) in std::mem::take(&mut inner.segments) {
                segment.delete()?;
            }
            let segment = LogSegment::create(&self.dir, offset, params)?;
            inner.segments.insert(offset, segment);
            inner.log_start_offset = offset;
            inner.log_end_offset = offset;
        } else {
            let doomed: Vec<i64> = inner
                .segments
                .range(offset + 1..)
                .map(|(&b, _)| b)
                .collect();
            for base in doomed {
                if inner.segments.len() == 1 {
                    break;
                }
                let segment = inner.segments.remove(&base).expect("listed above");
                segment.delete()?;
            }
            let active = inner.active_segment();
            active.truncate_to(offset)?;
            active.make_active()?;
            inner.log_end_offset = inner.active_segment().next_offset()?;
            if inner.log_end_offset < inner.log_start_offset {
                inner.log_start_offset = inner.log_end_offset;
            }
        }
        inner.recovery_point = inner.recovery_point.min(inner.log_end_offset);
        inner.first_dirty_offset = inner
            .first_dirty_offset
            .clamp(inner.log_start_offset, inner.log_end_offset);
        inner.write_checkpoint(&self.dir)?;
        Ok(())
    }

    /// The current view generation (see [`ViewGeneration`]).
    pub fn view_generation(&self) -> ViewGeneration {
        let inner = self.lock();
        ViewGeneration {
            generation: inner.generation,
            log_start_offset: inner.log_start_offset,
        }
    }

    /// Like [`Self::read_batches`], but as the log was at view generation `generation`:
    /// segments that retention or compaction replaced since are read while their files are
    /// kept (`file.delete.delay.ms`), and segments that compaction wrote later are not. Once a
    /// replaced segment's files are gone, its batches are simply missing from the answer (the
    /// caller sees records it did not expect, or none).
    pub fn read_batches_at(
        &self,
        generation: u64,
        start_offset: i64,
        max_bytes: usize,
    ) -> Result<Vec<FetchedBatch>> {
        if let Some(e) = self.unavailable_error() {
            return Err(e);
        }
        let mut inner = self.lock();
        if generation >= inner.generation {
            return inner.read_batches(start_offset, max_bytes);
        }
        let inner = &mut *inner;
        // The segments of that generation, by base offset.
        enum Source {
            Live(i64),
            Retired(usize),
        }
        let mut sources: Vec<(i64, Source)> = inner
            .segments
            .keys()
            .filter(|base| inner.introduced.get(base).is_none_or(|g| *g <= generation))
            .map(|&base| (base, Source::Live(base)))
            .collect();
        sources.extend(
            inner
                .retired
                .iter()
                .enumerate()
                .filter(|(_, r)| r.introduced <= generation && generation < r.retired)
                .map(|(i, r)| (r.segment.base_offset(), Source::Retired(i))),
        );
        sources.sort_by_key(|(base, _)| *base);
        let first = sources
            .iter()
            .rposition(|(base, _)| *base <= start_offset)
            .unwrap_or(0);
        for (_, source) in &sources[first..] {
            let segment = match source {
                Source::Live(base) => inner.segments.get_mut(base).expect("listed above"),
                Source::Retired(i) => &mut inner.retired[*i].segment,
            };
            let batches = segment.read(start_offset, max_bytes)?;
            if !batches.is_empty() {
                return Ok(fetched(batches));
            }
        }
        Ok(Vec::new())
    }

    /// Deletes closed segments by `retention.ms`, `retention.bytes` (when `cleanup.policy`
    /// contains `delete`) and those wholly below the log start offset (always); see
    /// [`super::retention`]. The segments' files are renamed `.deleted` and removed after
    /// `file.delete.delay.ms`. Idempotent: a second run finds nothing more to delete.
    pub fn run_retention(&self, now_ms: i64) -> Result<RetentionOutcome> {
        let started = std::time::Instant::now();
        let _cleanup = lock_unpoisoned(&self.cleanup);
        let (plan, doomed) = {
            let mut inner = self.lock_open()?;
            let closed = inner.closed_segment_facts()?;
            let plan = retention::plan(
                &closed,
                inner.size_bytes(),
                &inner.config,
                inner.log_start_offset,
                now_ms,
            );
            let doomed: Vec<SegmentFacts> = closed.into_iter().take(plan.segments).collect();
            (plan, doomed)
        };
        // Counted without the lock: closed segments do not change while `cleanup` is held.
        let mut records_removed = 0u64;
        for segment in &doomed {
            records_removed +=
                super::segment::count_records(&segment.log_path, segment.size_bytes)?;
        }
        let mut inner = self.lock_open()?;
        if !doomed.is_empty() {
            let bases: Vec<i64> = doomed.iter().map(|s| s.base_offset).collect();
            inner.retire(&self.dir, &bases, now_ms)?;
            let first_base = *inner
                .segments
                .keys()
                .next()
                .expect("the active segment stays");
            inner.log_start_offset = inner.log_start_offset.max(first_base);
            inner.first_dirty_offset = inner.first_dirty_offset.max(inner.log_start_offset);
            let log_start_offset = inner.log_start_offset;
            if let Some(keys) = inner.keys.as_mut() {
                keys.prune_below(log_start_offset);
            }
            inner.write_checkpoint(&self.dir)?;
        }
        let outcome = RetentionOutcome {
            time_ms: now_ms,
            duration_ms: started.elapsed().as_millis() as u64,
            segments_deleted: doomed.len(),
            bytes_reclaimed: doomed.iter().map(|s| s.size_bytes).sum(),
            records_removed,
            log_start_offset: inner.log_start_offset,
            reasons: plan.reasons,
        };
        if !doomed.is_empty() {
            info!("{}: retention: {outcome}", self.dir.display());
        }
        if outcome.segments_deleted > 0 {
            inner.last_retention = Some(outcome.clone());
        }
        inner.delete_expired(now_ms)?;
        Ok(outcome)
    }

    /// Compacts the cleanable section when the dirty ratio passes `min.cleanable.dirty.ratio`
    /// (or a kept tombstone's delete horizon has passed), or whenever anything is cleanable if
    /// `force`; see [`super::cleaner`]. `InvalidArgument` when `cleanup.policy` does not contain
    /// `compact`. Appends and reads go on while it runs, except during each final swap.
    pub fn compact(
        &self,
        now_ms: i64,
        force: bool,
        cleaner: &CleanerConfig,
    ) -> Result<CompactionOutcome> {
        let _cleanup = lock_unpoisoned(&self.cleanup);
        let result = cleaner::clean(self, now_ms, force, cleaner);
        match &result {
            Err(EngineError::Closed) => {
                info!("{}: compaction stopped: log closed", self.dir.display())
            }
            Err(e) => error!("{}: compaction failed: {e}", self.dir.display()),
            Ok(_) => {}
        }
        let mut inner = self.lock();
        if let Ok(outcome) = &result {
            if outcome.skipped.is_none() {
                inner.last_compaction = Some(outcome.clone());
            }
        }
        inner.delete_expired(now_ms)?;
        result
    }

    /// Removes the files of segments retired at least `file.delete.delay.ms` ago. Returns how
    /// many segments' files were removed.
    pub fn delete_expired_files(&self, now_ms: i64) -> Result<usize> {
        self.lock().delete_expired(now_ms)
    }

    /// The live keys (latest record not a tombstone), sorted bytewise.
    pub fn live_keys(&self) -> Result<Vec<Vec<u8>>> {
        self.with_keys(|keys, log_start_offset| {
            keys.keys()
                .into_iter()
                .filter(|k| keys.get(k).is_some_and(|o| o >= log_start_offset))
                .collect()
        })
    }

    /// The latest record of `key`, `None` when the key is not live.
    pub fn latest_for_key(&self, key: &[u8]) -> Result<Option<Record>> {
        let Some(offset) = self.with_keys(|keys, start| keys.get(key).filter(|o| *o >= start))?
        else {
            return Ok(None);
        };
        match self.read_record(offset) {
            Ok(Some(record)) if record.value.is_some() && record.key.as_deref() == Some(key) => {
                Ok(Some(record))
            }
            Ok(_) | Err(EngineError::OffsetOutOfRange { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs `f` on the key index, building it first if needed: from the snapshot a clean close
    /// left (if any), then from the log up to its end. The bulk of the catching up happens
    /// without the state lock; the last stretch and the install happen under it, so no
    /// append is missed.
    fn with_keys<T>(&self, f: impl FnOnce(&KeyIndex, i64) -> T) -> Result<T> {
        {
            let inner = self.lock_open()?;
            if let Some(keys) = &inner.keys {
                return Ok(f(keys, inner.log_start_offset));
            }
        }
        let _build = lock_unpoisoned(&self.keys_build);
        {
            let inner = self.lock_open()?;
            if let Some(keys) = &inner.keys {
                return Ok(f(keys, inner.log_start_offset));
            }
        }
        let (log_start, log_end) = {
            let inner = self.lock();
            (inner.log_start_offset, inner.log_end_offset)
        };
        let mut keys = match KeyIndex::read_snapshot(&self.dir) {
            Ok(Some(keys)) if keys.next_offset() <= log_end => keys,
            Ok(_) => KeyIndex::new(log_start),
            Err(e) => {
                warn!("{e}; rebuilding the key index from the log");
                KeyIndex::new(log_start)
            }
        };
        let started = std::time::Instant::now();
        let from = keys.next_offset();
        while keys.next_offset() < self.log_end_offset() {
            let batches = self.read_batches(keys.next_offset(), 1 << 20)?;
            if !apply_batches(&mut keys, &batches)? {
                break;
            }
        }
        let mut inner = self.lock_open()?;
        loop {
            let end = inner.log_end_offset;
            if keys.next_offset() >= end {
                break;
            }
            let batches = inner.read_batches(keys.next_offset(), 1 << 20)?;
            if !apply_batches(&mut keys, &batches)? {
                keys.advance_to(end);
            }
        }
        keys.prune_below(inner.log_start_offset);
        info!(
            "{}: key index built: {} live keys, {} bytes, offsets {from}..{} read in {} ms",
            self.dir.display(),
            keys.len(),
            keys.memory_bytes(),
            keys.next_offset(),
            started.elapsed().as_millis()
        );
        let result = f(&keys, inner.log_start_offset);
        inner.keys = Some(keys);
        Ok(result)
    }

    /// Whether [`Self::close`] was called (the cleaner checks it to stop early).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed_flag.load(Ordering::Acquire)
    }

    /// What a compaction run needs to know, taken under the lock. `InvalidArgument` when the
    /// policy does not contain `compact`.
    pub(crate) fn cleanable(&self) -> Result<cleaner::CleanableLog> {
        let mut inner = self.lock_open()?;
        if !inner.config.cleanup_policy.compact {
            return Err(EngineError::InvalidArgument(format!(
                "cleanup.policy={} does not include compact",
                inner.config.cleanup_policy.name()
            )));
        }
        Ok(cleaner::CleanableLog {
            dir: self.dir.clone(),
            config: inner.config.clone(),
            log_start_offset: inner.log_start_offset,
            first_dirty_offset: inner.first_dirty_offset,
            active_base_offset: inner.active_segment().base_offset(),
            closed: inner.closed_segment_facts()?,
            next_tombstone_horizon_ms: inner.next_tombstone_horizon_ms,
        })
    }

    /// The final swap of a compaction group (see [`super::cleaner`]): `cleaned` (fsynced,
    /// named `.cleaned`) replaces the segments `bases`, which cover offsets up to `end_offset`.
    pub(crate) fn swap_cleaned(
        &self,
        bases: &[i64],
        end_offset: i64,
        mut cleaned: LogSegment,
        now_ms: i64,
    ) -> Result<()> {
        let base_offset = cleaned.base_offset();
        let mut inner = self.lock_open()?;
        let crash = match inner.swap_crash {
            Some((step, 0)) => Some(step),
            Some((step, n)) => {
                inner.swap_crash = Some((step, n - 1));
                None
            }
            None => None,
        };
        let crash_at = |step: cleaner::SwapStep| -> Result<()> {
            if crash == Some(step) {
                return Err(cleaner::simulated_crash(step));
            }
            Ok(())
        };
        checkpoint::fsync_dir(&self.dir)?;
        crash_at(cleaner::SwapStep::Cleaned)?;
        cleaner::SwapMarker {
            base_offset,
            end_offset,
        }
        .write(&self.dir)?;
        crash_at(cleaner::SwapStep::Marker)?;
        cleaned.change_index_suffixes(cleaner::SWAP_SUFFIX)?;
        crash_at(cleaner::SwapStep::IndexesSwapped)?;
        cleaned.change_log_suffix(cleaner::SWAP_SUFFIX)?;
        checkpoint::fsync_dir(&self.dir)?;
        crash_at(cleaner::SwapStep::Swapped)?;
        inner.retire(&self.dir, bases, now_ms)?;
        crash_at(cleaner::SwapStep::OldDeleted)?;
        cleaned.change_file_suffix("")?;
        checkpoint::fsync_dir(&self.dir)?;
        crash_at(cleaner::SwapStep::Live)?;
        cleaner::SwapMarker::remove(&self.dir)?;
        let generation = inner.generation;
        inner.introduced.insert(base_offset, generation);
        inner.segments.insert(base_offset, cleaned);
        Ok(())
    }

    /// Records a finished compaction run: the new cleaner checkpoint and tombstone horizon.
    pub(crate) fn finish_compaction(
        &self,
        outcome: &CompactionOutcome,
        next_tombstone_horizon_ms: Option<i64>,
    ) -> Result<()> {
        let mut inner = self.lock_open()?;
        inner.next_tombstone_horizon_ms = next_tombstone_horizon_ms;
        if outcome.tombstones_removed > 0 && inner.keys.is_none() {
            // A snapshot older than a dropped tombstone would bring its key back to life: the
            // next use rebuilds the index from the log instead. (A loaded index saw the
            // tombstone when it was appended.)
            KeyIndex::remove_snapshot(&self.dir)?;
        }
        let first_dirty_offset = outcome
            .first_dirty_offset
            .clamp(inner.log_start_offset, inner.log_end_offset);
        if first_dirty_offset != inner.first_dirty_offset {
            inner.first_dirty_offset = first_dirty_offset;
            CleanerCheckpoint { first_dirty_offset }.write(&self.dir)?;
        }
        Ok(())
    }

    /// Makes compaction swap number `n` (0: the next) of this log stop at `step` with an
    /// error, as a crash would, leaving the files as they are then. For recovery tests.
    #[doc(hidden)]
    pub fn set_swap_crash(&self, crash: Option<(cleaner::SwapStep, usize)>) {
        self.lock().swap_crash = crash;
    }

    /// Stores `state`, an opaque blob the caller derived from the records of view generation
    /// `generation`. Returns false, storing nothing, when the log has moved on to another
    /// generation. The blob is kept in memory and written by [`Self::close`] to
    /// `lmqfs-view-state` (atomically, before the clean-shutdown marker, so that a stop of many
    /// partitions writes them in parallel and shares the marker's directory fsync). The file
    /// is kept across a clean close while the generation it describes is still the current
    /// one, removed otherwise (at close, and at open after an unclean stop), so what
    /// [`Self::read_view_state`] returns always describes a prefix of that generation's records
    /// (records appended later are not in it).
    pub fn store_view_state(&self, generation: u64, state: &[u8]) -> Result<bool> {
        let mut inner = self.lock_open()?;
        if generation != inner.generation {
            return Ok(false);
        }
        inner.pending_view_state = Some((generation, Arc::from(state)));
        Ok(true)
    }

    /// Up to `max_bytes` of the view state stored for view generation `generation`, from byte
    /// `position` on (fewer at its end, none past it): the blob last given to
    /// [`Self::store_view_state`] in this run, or else the file a clean close left, when it
    /// describes that generation. `None` when there is none, it describes another generation,
    /// the log is closed, or the file cannot be read. A caller that reads the blob in parts
    /// checks each part (a later store replaces it).
    pub fn read_view_state(
        &self,
        generation: u64,
        position: u64,
        max_bytes: usize,
    ) -> Option<Vec<u8>> {
        let part = |bytes: &[u8]| {
            let from = usize::try_from(position)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            bytes[from..from + max_bytes.min(bytes.len() - from)].to_vec()
        };
        {
            let inner = self.lock();
            if inner.closed {
                return None;
            }
            match &inner.pending_view_state {
                Some((stored, bytes)) if *stored == generation => return Some(part(bytes)),
                _ => {}
            }
            if inner.view_state_generation != Some(generation) {
                return None;
            }
        }
        let path = self.dir.join(VIEW_STATE_FILE);
        let read = || -> std::io::Result<Vec<u8>> {
            let file = file_system().open(&path, OpenMode::Existing)?;
            let size = file.size()?;
            let len = size.saturating_sub(position).min(max_bytes as u64) as usize;
            let mut bytes = vec![0; len];
            file.read_exact_at(&mut bytes, position)?;
            Ok(bytes)
        };
        match read() {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                info!("{}: cannot read it ({e})", path.display());
                None
            }
        }
    }

    /// The whole view state stored for the current generation (see [`Self::read_view_state`]).
    pub fn load_view_state(&self) -> Option<Vec<u8>> {
        let generation = self.lock().generation;
        self.read_view_state(generation, 0, usize::MAX)
    }

    /// Flushes, trims the active indexes and writes the clean-shutdown marker. The log refuses
    /// further changes. Idempotent.
    pub fn close(&self) -> Result<()> {
        let mut inner = self.lock();
        if inner.closed {
            return Ok(());
        }
        self.closed_flag.store(true, Ordering::Release);
        inner.flush(&self.dir)?;
        inner.active_segment().close_active()?;
        inner.active_segment().flush()?;
        // No reader outlives the log: retired segments go now.
        for retired in std::mem::take(&mut inner.retired) {
            retired.segment.delete()?;
        }
        if let Some(keys) = &inner.keys {
            keys.write_snapshot(&self.dir)?;
        }
        if let Some((generation, state)) = inner.pending_view_state.take() {
            if generation == inner.generation {
                match write_view_state(&self.dir, &state) {
                    Ok(()) => inner.view_state_generation = Some(generation),
                    // The file, if any, is still the one from before: a prefix of these
                    // records when its generation is this one, removed below otherwise.
                    Err(e) => warn!(
                        "{}: could not write its view state ({e}); the next start maps its \
                         views from the log",
                        self.dir.display()
                    ),
                }
            }
        }
        if inner
            .view_state_generation
            .is_some_and(|g| g != inner.generation)
        {
            // Records below the log end were removed since it was stored: it no longer
            // describes the log.
            remove_view_state(&self.dir)?;
            inner.view_state_generation = None;
        }
        checkpoint::write_clean_shutdown_marker(&self.dir)?;
        inner.closed = true;
        info!(
            "{}: closed cleanly at log end offset {}",
            self.dir.display(),
            inner.log_end_offset
        );
        Ok(())
    }
}

/// File name of the blob [`Log::store_view_state`] stores.
pub const VIEW_STATE_FILE: &str = "lmqfs-view-state";

/// Writes the view state file whole or not at all: a `.tmp` sibling, fdatasync, rename. The
/// rename is made durable by the directory fsync of the clean-shutdown marker written after
/// it; without that marker the next open drops the file anyway.
fn write_view_state(dir: &Path, state: &[u8]) -> Result<()> {
    let path = dir.join(VIEW_STATE_FILE);
    let tmp = dir.join(format!("{VIEW_STATE_FILE}.tmp"));
    let file = file_system().open(&tmp, OpenMode::Truncate).at(&tmp)?;
    file.write_all_at(state, 0).at(&tmp)?;
    file.sync_data().at(&tmp)?;
    drop(file);
    file_system().rename(&tmp, &path).at(&path)
}

/// Removes the view state file, if any (durably).
fn remove_view_state(dir: &Path) -> Result<()> {
    let path = dir.join(VIEW_STATE_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => checkpoint::fsync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EngineError::io(&path, e)),
    }
}

/// What an append is about to add, for the roll decision.
#[derive(Debug, Clone, Copy)]
struct Incoming {
    records: u64,
    bytes: usize,
    max_timestamp: i64,
}

impl LogInner {
    /// See [`Log::read_batches`]: [`Self::read_into`], each batch then copied out on its own.
    fn read_batches(&mut self, start_offset: i64, max_bytes: usize) -> Result<Vec<FetchedBatch>> {
        let (mut buf, mut batches) = (Vec::new(), Vec::new());
        self.read_into(start_offset, max_bytes, &mut buf, &mut batches)?;
        Ok(batches
            .into_iter()
            .map(|(header, at)| FetchedBatch {
                header,
                bytes: buf[at..at + header.total_size()].to_vec(),
            })
            .collect())
    }

    /// See [`Log::read_into`]: [`Self::read_batches`] into `buf` (see
    /// [`LogSegment::read_into`]).
    fn read_into(
        &mut self,
        start_offset: i64,
        max_bytes: usize,
        buf: &mut Vec<u8>,
        batches: &mut Vec<(BatchHeader, usize)>,
    ) -> Result<()> {
        let from = self
            .segments
            .range(..=start_offset)
            .next_back()
            .map(|(&base, _)| base)
            .unwrap_or(i64::MIN);
        for (_, segment) in self.segments.range_mut(from..) {
            segment.read_into(start_offset, max_bytes, buf, batches)?;
            if !batches.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Facts about every closed segment, oldest first.
    fn closed_segment_facts(&mut self) -> Result<Vec<SegmentFacts>> {
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        let mut facts = Vec::with_capacity(bases.len().saturating_sub(1));
        for pair in bases.windows(2) {
            let segment = self.segments.get_mut(&pair[0]).expect("listed above");
            facts.push(SegmentFacts {
                base_offset: pair[0],
                end_offset: pair[1],
                size_bytes: segment.size() as u64,
                largest_timestamp: segment.largest_timestamp()?,
                log_path: segment.log_path(),
            });
        }
        Ok(facts)
    }

    /// Takes the segments `bases` out of the log: renamed `.deleted`, kept for readers of the
    /// generations that had them, removed after `file.delete.delay.ms`. Starts a generation.
    fn retire(&mut self, dir: &Path, bases: &[i64], now_ms: i64) -> Result<()> {
        let retired_in = self.generation + 1;
        let delete_after_ms = now_ms.saturating_add(self.config.file_delete_delay_ms);
        for base in bases {
            let Some(mut segment) = self.segments.remove(base) else {
                continue;
            };
            let introduced = self.introduced.remove(base).unwrap_or(0);
            if let Err(e) = segment.change_file_suffix(cleaner::DELETED_SUFFIX) {
                self.segments.insert(*base, segment);
                return Err(e);
            }
            self.retired.push(RetiredSegment {
                segment,
                introduced,
                retired: retired_in,
                delete_after_ms,
            });
        }
        self.generation = retired_in;
        checkpoint::fsync_dir(dir)
    }

    /// Deletes now (not after `file.delete.delay.ms`) the closed segments wholly below
    /// `offset` and every retired segment; readers of older generations that still wanted them
    /// get `Gone`. Starts a generation. Returns how many segments' files were removed.
    fn delete_segments_below(&mut self, offset: i64) -> Result<usize> {
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        let doomed: Vec<i64> = bases
            .windows(2)
            .take_while(|pair| pair[1] <= offset)
            .map(|pair| pair[0])
            .collect();
        let mut count = self.delete_expired(i64::MAX)?;
        for base in doomed {
            if let Some(segment) = self.segments.remove(&base) {
                self.introduced.remove(&base);
                segment.delete()?;
                count += 1;
            }
        }
        self.generation += 1;
        Ok(count)
    }

    /// Removes the files of retired segments whose delay has passed.
    fn delete_expired(&mut self, now_ms: i64) -> Result<usize> {
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|r| r.delete_after_ms <= now_ms);
        self.retired = kept;
        let count = expired.len();
        for retired in expired {
            retired.segment.delete()?;
        }
        Ok(count)
    }

    fn active_segment(&mut self) -> &mut LogSegment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size() as u64).sum()
    }

    /// Rolls before an append if a limit says so. Like Kafka, `segment.ms` compares the
    /// incoming batches' max timestamp with the segment's first batch's, not the wall clock, so
    /// records carrying old timestamps (an import) do not roll a segment per append.
    fn maybe_roll(&mut self, dir: &Path, incoming: Incoming, now: i64) -> Result<()> {
        let Incoming {
            records,
            bytes,
            max_timestamp,
        } = incoming;
        let log_end_offset = self.log_end_offset;
        let config = self.config.clone();
        let active = self.active_segment();
        if active.is_empty() {
            return Ok(());
        }
        let base = active.base_offset();
        let reason = if active.size() as u64 + bytes as u64 > config.segment_bytes as u64 {
            Some(format!("segment.bytes={} reached", config.segment_bytes))
        } else if config
            .segment_messages
            .is_some_and(|limit| (log_end_offset - base) as u64 + records > limit)
        {
            Some(format!(
                "segment.messages={} reached",
                config.segment_messages.unwrap_or_default()
            ))
        } else if active
            .first_batch_timestamp()?
            .is_some_and(|first| max_timestamp - first > config.segment_ms)
        {
            Some(format!("segment.ms={} elapsed", config.segment_ms))
        } else if active.indexes_full()? {
            Some("index full".to_string())
        } else if log_end_offset + records as i64 - 1 - base > i32::MAX as i64 {
            Some("relative offset overflow".to_string())
        } else {
            None
        };
        match reason {
            Some(reason) => self.roll(dir, &reason, now),
            None => Ok(()),
        }
    }

    /// Closes the active segment (flushed, indexes trimmed) and starts one at the log end.
    fn roll(&mut self, dir: &Path, reason: &str, now: i64) -> Result<()> {
        let new_base = self.log_end_offset;
        let params = segment_params(&self.config);
        let old = self.active_segment();
        old.close_active()?;
        old.flush()?;
        let segment = match LogSegment::create(dir, new_base, params) {
            Ok(segment) => segment,
            Err(e) => {
                // The old segment stays the active one; the next append tries the roll again.
                if let Err(again) = self.active_segment().make_active() {
                    warn!(
                        "{}: reactivating the segment after a failed roll: {again}",
                        dir.display()
                    );
                }
                return Err(e);
            }
        };
        self.segments.insert(new_base, segment);
        checkpoint::fsync_dir(dir)?;
        // Everything before the new segment is on disk now.
        if self.recovery_point < new_base {
            self.recovery_point = new_base;
            self.write_checkpoint(dir)?;
        }
        info!(
            "{}: rolled new segment at offset {new_base} ({reason})",
            dir.display()
        );
        self.last_roll = Some(RollOutcome {
            time_ms: now,
            reason: reason.to_string(),
            new_base_offset: new_base,
        });
        Ok(())
    }

    fn flush(&mut self, dir: &Path) -> Result<()> {
        let recovery_point = self.recovery_point;
        let from = self
            .segments
            .range(..=recovery_point)
            .next_back()
            .map(|(&b, _)| b)
            .unwrap_or(i64::MIN);
        for (_, segment) in self.segments.range_mut(from..) {
            segment.flush()?;
        }
        self.unflushed_messages = 0;
        self.first_unflushed_ms = None;
        if self.recovery_point != self.log_end_offset {
            self.recovery_point = self.log_end_offset;
            self.write_checkpoint(dir)?;
        }
        Ok(())
    }

    fn write_checkpoint(&self, dir: &Path) -> Result<()> {
        Checkpoint {
            recovery_point: self.recovery_point,
            log_start_offset: self.log_start_offset,
        }
        .write(dir)
    }
}

/// Whether `e` says the disk (or the user's quota) is full.
fn is_no_space(e: &EngineError) -> bool {
    matches!(e, EngineError::Io { source, .. }
        if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)))
}

fn fetched(batches: Vec<(BatchHeader, Vec<u8>)>) -> Vec<FetchedBatch> {
    batches
        .into_iter()
        .map(|(header, bytes)| FetchedBatch { header, bytes })
        .collect()
}

/// Applies the records of `batches` to `keys`; `false` when there was nothing to apply.
fn apply_batches(keys: &mut KeyIndex, batches: &[FetchedBatch]) -> Result<bool> {
    let mut progressed = false;
    for batch in batches {
        let next = batch.header.next_offset();
        if next <= keys.next_offset() {
            continue;
        }
        let decoded = record::decode_batch(&batch.bytes)?;
        let from = keys.next_offset();
        for r in decoded.records.iter().filter(|r| r.offset >= from) {
            keys.apply(r.offset, r.key.as_deref(), r.value.is_none());
        }
        keys.advance_to(next);
        progressed = true;
    }
    Ok(progressed)
}

/// Locks `m`, going on after a panic elsewhere (what it guards is `()` or rebuilt state).
fn lock_unpoisoned<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Encodes `items` into as few batches as fit `limit` (`max.message.bytes`), by halving;
/// `encode` appends one batch of a run of them to `out`. `RecordTooLarge` when one item alone
/// does not fit; `out` then holds the batches made before it.
fn encode_within_limit<'v, T>(
    items: &[T],
    limit: usize,
    encode: &impl Fn(&mut VectoredBatches<'v>, &[T]) -> std::result::Result<(), record::RecordError>,
    out: &mut VectoredBatches<'v>,
) -> Result<()> {
    let (start_batches, start_len) = (out.batch_count(), out.len());
    encode(out, items)?;
    let size = out.len() - start_len;
    if size <= limit {
        return Ok(());
    }
    out.truncate_batches(start_batches);
    if items.len() == 1 {
        return Err(EngineError::RecordTooLarge {
            size,
            max_message_bytes: limit,
        });
    }
    let (left, right) = items.split_at(items.len() / 2);
    encode_within_limit(left, limit, encode, out)?;
    encode_within_limit(right, limit, encode, out)
}

#[cfg(test)]
mod view_state_tests {
    use super::*;

    fn open(dir: &Path) -> Log {
        Log::open(dir, LogConfig::default()).unwrap()
    }

    #[test]
    fn view_state_is_written_at_close_read_in_parts_and_dropped_with_its_generation() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(VIEW_STATE_FILE);
        let log = open(dir.path());
        log.append(&[NewRecord::value("a"), NewRecord::value("b")])
            .unwrap();
        assert!(log.read_view_state(0, 0, 100).is_none());
        let blob: Vec<u8> = (0..=255u8).collect();
        assert!(log.store_view_state(0, &blob).unwrap());
        assert!(!log.store_view_state(1, b"another generation").unwrap());
        // Served from memory until the close writes it.
        assert!(!file.exists());
        assert_eq!(log.read_view_state(0, 10, 5).unwrap(), &blob[10..15]);
        assert_eq!(log.read_view_state(0, 250, 100).unwrap(), &blob[250..]);
        assert_eq!(log.read_view_state(0, 300, 100).unwrap(), b"");
        assert!(log.read_view_state(1, 0, 100).is_none());
        log.close().unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), blob);
        assert!(!dir.path().join(format!("{VIEW_STATE_FILE}.tmp")).exists());
        assert!(log.read_view_state(0, 0, 10).is_none(), "closed");

        // From the file after a clean close, in parts.
        let log = open(dir.path());
        assert_eq!(log.load_view_state().unwrap(), blob);
        assert_eq!(log.read_view_state(0, 100, 3).unwrap(), &blob[100..103]);
        assert_eq!(log.read_view_state(0, 254, 9).unwrap(), &blob[254..]);
        // Another generation: the file still describes the old one (its readers may read it),
        // not the current one; a close removes it.
        log.delete_records(1).unwrap();
        assert!(log.load_view_state().is_none());
        assert!(log.read_view_state(1, 0, 10).is_none());
        assert_eq!(log.read_view_state(0, 0, 2).unwrap(), &blob[..2]);
        log.close().unwrap();
        assert!(!file.exists());

        // After an unclean stop (no close), the next open drops it.
        let log = open(dir.path());
        assert!(log.store_view_state(0, &blob).unwrap());
        log.close().unwrap();
        assert!(file.exists());
        let log = open(dir.path());
        log.append(&[NewRecord::value("c")]).unwrap();
        drop(log);
        let log = open(dir.path());
        assert!(!file.exists());
        assert!(log.load_view_state().is_none());
    }
}
