//! The partition log: an ordered list of segments, the last of which is active.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use log::{error, info};

use super::checkpoint::{self, Checkpoint};
use super::cleaner::{CleanerConfig, CompactionOutcome};
use super::loader;
use super::record::{self, BatchHeader, NewRecord, Record};
use super::retention::RetentionOutcome;
use super::segment::{LogSegment, SegmentParams};
use super::{now_ms, EngineError, LogConfig, Result};

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
    pub last_retention: Option<RetentionOutcome>,
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
/// Thread-safety: `Send + Sync`; every method takes `&self` and serializes on `inner`.
pub struct Log {
    dir: PathBuf,
    /// The only lock of a log; nothing is called with it held that takes another log's lock.
    inner: Mutex<LogInner>,
}

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
    closed: bool,
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
        Ok(Log {
            dir: dir.to_path_buf(),
            inner: Mutex::new(LogInner {
                config,
                segments: loaded.segments,
                log_start_offset: loaded.log_start_offset,
                log_end_offset: loaded.log_end_offset,
                recovery_point: loaded.recovery_point,
                unflushed_messages: 0,
                first_unflushed_ms: None,
                last_roll: None,
                closed: false,
            }),
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
            return Err(EngineError::Closed);
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
        let now = now_ms();
        let mut encoded = Vec::new();
        encode_within_limit(records, &config, now, &mut encoded)?;

        let total_bytes: usize = encoded.iter().map(Vec::len).sum();
        let mut headers = encoded
            .iter()
            .map(|batch| BatchHeader::parse(batch))
            .collect::<Result<Vec<_>, _>>()?;
        let max_timestamp = headers.iter().map(|h| h.max_timestamp).max().unwrap_or(-1);

        let mut inner = self.lock_open()?;
        let incoming = Incoming {
            records: records.len() as u64,
            bytes: total_bytes,
            max_timestamp,
        };
        inner.maybe_roll(&self.dir, incoming, now)?;
        let first_offset = inner.log_end_offset;
        let mut data = Vec::with_capacity(total_bytes);
        let mut next = first_offset;
        for (batch, header) in encoded.iter_mut().zip(&mut headers) {
            record::batch::set_base_offset(batch, next);
            header.base_offset = next;
            next = header.next_offset();
            data.extend_from_slice(batch);
        }
        inner.active_segment().append(&data, &headers)?;
        inner.log_end_offset = next;
        inner.unflushed_messages += records.len() as u64;
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
    pub fn read(&self, start_offset: i64, max_bytes: usize) -> Result<Vec<Record>> {
        let (log_start_offset, log_end_offset) = {
            let inner = self.lock();
            (inner.log_start_offset, inner.log_end_offset)
        };
        if start_offset < log_start_offset || start_offset > log_end_offset {
            return Err(EngineError::OffsetOutOfRange {
                offset: start_offset,
                log_start_offset,
                log_end_offset,
            });
        }
        let mut records = Vec::new();
        for batch in self.read_batches(start_offset, max_bytes)? {
            let decoded = record::decode_batch(&batch.bytes)?;
            records.extend(
                decoded
                    .records
                    .into_iter()
                    .filter(|r| r.offset >= start_offset),
            );
        }
        Ok(records)
    }

    /// Raw batches from the one containing `start_offset` (it may begin before it), until
    /// `max_bytes` (at least one batch if any exists). Unlike [`Self::read`] this does not refuse
    /// offsets below the log start offset: it serves whatever is still physically present, so a
    /// reader that opened a view before a `delete-records` keeps its coordinates. Past the log
    /// end, or before the first retained segment, it returns what exists from there (possibly
    /// nothing). CRCs are verified.
    pub fn read_batches(&self, start_offset: i64, max_bytes: usize) -> Result<Vec<FetchedBatch>> {
        let mut inner = self.lock();
        let from = inner
            .segments
            .range(..=start_offset)
            .next_back()
            .map(|(&base, _)| base)
            .unwrap_or(i64::MIN);
        for (_, segment) in inner.segments.range_mut(from..) {
            let batches = segment.read(start_offset, max_bytes)?;
            if !batches.is_empty() {
                return Ok(batches
                    .into_iter()
                    .map(|(header, bytes)| FetchedBatch { header, bytes })
                    .collect());
            }
        }
        Ok(Vec::new())
    }

    /// The record at `offset`: `OffsetOutOfRange` outside [log start, log end), `Ok(None)` for
    /// an offset inside the range that no record has (removed by compaction).
    pub fn read_record(&self, offset: i64) -> Result<Option<Record>> {
        let (log_start_offset, log_end_offset) = {
            let inner = self.lock();
            (inner.log_start_offset, inner.log_end_offset)
        };
        if offset < log_start_offset || offset >= log_end_offset {
            return Err(EngineError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            });
        }
        let batches = self.read_batches(offset, 1)?;
        let Some(batch) = batches.first() else {
            return Ok(None);
        };
        let decoded = record::decode_batch(&batch.bytes)?;
        Ok(decoded.records.into_iter().find(|r| r.offset == offset))
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
            last_retention: None,
            last_compaction: None,
            first_dirty_offset: 0,
            view_generation: 0,
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
            inner.write_checkpoint(&self.dir)?;
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
        let mut inner = self.lock_open()?;
        if offset >= inner.log_end_offset {
            return Ok(());
        }
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
        inner.write_checkpoint(&self.dir)?;
        Ok(())
    }

    /// The current view generation (see [`ViewGeneration`]).
    pub fn view_generation(&self) -> ViewGeneration {
        todo!()
    }

    /// Like [`Self::read_batches`], but as the log was at view generation `generation`:
    /// segments that retention or compaction replaced since are read while their files are
    /// kept (`file.delete.delay.ms`), and segments that compaction wrote later are not.
    pub fn read_batches_at(
        &self,
        generation: u64,
        start_offset: i64,
        max_bytes: usize,
    ) -> Result<Vec<FetchedBatch>> {
        let _ = (generation, start_offset, max_bytes);
        todo!()
    }

    /// Deletes closed segments by `retention.ms`, `retention.bytes` (when `cleanup.policy`
    /// contains `delete`) and those wholly below the log start offset (always). Idempotent.
    pub fn run_retention(&self, now_ms: i64) -> Result<RetentionOutcome> {
        let _ = now_ms;
        todo!()
    }

    /// Compacts the cleanable section when the dirty ratio passes `min.cleanable.dirty.ratio`,
    /// or whenever anything is cleanable if `force`. `InvalidArgument` when `cleanup.policy`
    /// does not contain `compact`.
    pub fn compact(
        &self,
        now_ms: i64,
        force: bool,
        cleaner: &CleanerConfig,
    ) -> Result<CompactionOutcome> {
        let _ = (now_ms, force, cleaner);
        todo!()
    }

    /// Removes the files of segments retired at least `file.delete.delay.ms` ago. Returns how
    /// many segments' files were removed.
    pub fn delete_expired_files(&self, now_ms: i64) -> Result<usize> {
        let _ = now_ms;
        todo!()
    }

    /// The live keys (latest record not a tombstone), sorted bytewise.
    pub fn live_keys(&self) -> Result<Vec<Vec<u8>>> {
        todo!()
    }

    /// The latest record of `key`, `None` when the key is not live.
    pub fn latest_for_key(&self, key: &[u8]) -> Result<Option<Record>> {
        let _ = key;
        todo!()
    }

    /// Flushes, trims the active indexes and writes the clean-shutdown marker. The log refuses
    /// further changes. Idempotent.
    pub fn close(&self) -> Result<()> {
        let mut inner = self.lock();
        if inner.closed {
            return Ok(());
        }
        inner.flush(&self.dir)?;
        inner.active_segment().close_active()?;
        inner.active_segment().flush()?;
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

/// What an append is about to add, for the roll decision.
#[derive(Debug, Clone, Copy)]
struct Incoming {
    records: u64,
    bytes: usize,
    max_timestamp: i64,
}

impl LogInner {
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
        let segment = LogSegment::create(dir, new_base, params)?;
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

/// Encodes `records` into as few batches as fit `max.message.bytes`, by halving.
fn encode_within_limit(
    records: &[NewRecord],
    config: &LogConfig,
    now: i64,
    out: &mut Vec<Vec<u8>>,
) -> Result<()> {
    let batch = record::encode_batch(
        0,
        records,
        config.compression_type,
        config.message_timestamp_type,
        now,
    )?;
    let limit = config.max_message_bytes as usize;
    if batch.len() <= limit {
        out.push(batch);
        return Ok(());
    }
    if records.len() == 1 {
        return Err(EngineError::RecordTooLarge {
            size: batch.len(),
            max_message_bytes: limit,
        });
    }
    let (left, right) = records.split_at(records.len() / 2);
    encode_within_limit(left, config, now, out)?;
    encode_within_limit(right, config, now, out)
}
