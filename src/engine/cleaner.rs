//! Key compaction: Kafka's LogCleaner for one partition log.
//!
//! A compacted log has three sections:
//! - **clean**: `[log start, first dirty offset)`, already compacted: at most one record per key
//!   (as of the last run);
//! - **dirty**: `[first dirty offset, first uncleanable offset)`, appended since;
//! - **uncleanable**: the active segment, and every segment from the first one holding a record
//!   newer than `min.compaction.lag.ms` on. Never touched.
//!
//! The first dirty offset is the *cleaner checkpoint* (`lmqfs-cleaner-checkpoint` in the
//! partition directory). A run is due when the dirty ratio, dirty bytes / (clean + dirty bytes),
//! passes `min.cleanable.dirty.ratio`; the `compact` command runs whatever the ratio.
//!
//! A run reads the dirty section into an [`OffsetMap`] (key digest -> latest offset) of fixed
//! size; when the map fills, the run covers only up to that point (`map end`) and the next run
//! goes on from there. It then rewrites every segment below the map end, grouped into runs of
//! consecutive segments that fit one segment (`segment.bytes`, the index size, and offsets
//! within 2^31 of the group's base): a record is kept unless the map holds a later offset for
//! its key. Records are never renumbered, so offsets have gaps afterwards. Keyless records are
//! kept (a compacted topic refuses new ones). Batches that lose nothing are copied byte for
//! byte; others are re-encoded with their codec (see
//! [`crate::engine::record::batch::encode_retained`]).
//!
//! Tombstones (null values) are delete markers: the first run that cleans one stamps its batch
//! with a delete horizon, now + `delete.retention.ms` (Kafka's KIP-534, attribute bit 6), so a
//! consumer has that long to see it; a later run after the horizon drops it.
//!
//! Segments are replaced crash-safely, one group at a time, in offset order:
//! 1. the group's cleaned copy is written as `<base>.log.cleaned` (+ indexes) and fsynced;
//! 2. a swap marker (`lmqfs-cleaner-swap`: the group's base and end offsets) is written
//!    atomically;
//! 3. the copy's indexes, then its `.log`, are renamed to `.swap`: the `.log.swap` is the commit;
//! 4. the old segments are renamed `.deleted` (kept open for readers of older view generations,
//!    removed after `file.delete.delay.ms`), the `.swap` files renamed live, the marker removed.
//!
//! At startup (see [`crate::engine::loader`]) a marker with a `.log.swap` completes the swap
//! (old segments in the marker's range go, the `.swap` files go live); a marker without one
//! rolls back (the copy is removed). Either way the log holds the old or the new group, never a
//! mix, and no key loses its latest record.
//!
//! The cleaner holds the log's cleanup lock throughout (so retention and truncation wait) but
//! its state lock only for the swap, so appends and reads go on while it reads and writes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use log::{info, warn};

use super::checkpoint::write_atomically;
use super::error::IoResultExt;
use super::log::Log;
use super::offset_map::OffsetMap;
use super::record::{self, BatchHeader};
use super::retention::SegmentFacts;
use super::segment::{BatchReader, LogSegment, SegmentParams};
use super::{EngineError, LogConfig, Result};

/// File name of the cleaner checkpoint in a partition directory.
pub const CLEANER_CHECKPOINT_FILE: &str = "lmqfs-cleaner-checkpoint";
/// File name of the swap marker, present only while a swap is in flight.
pub const SWAP_MARKER_FILE: &str = "lmqfs-cleaner-swap";
/// Suffix of a cleaned copy being written.
pub const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a cleaned copy committed to replace its group.
pub const SWAP_SUFFIX: &str = ".swap";
/// Suffix of replaced or retention-deleted segment files awaiting removal.
pub const DELETED_SUFFIX: &str = ".deleted";
/// Bytes of cleaned batches buffered before one write to the cleaned segment.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Mount-wide cleaner settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanerConfig {
    /// `log.cleaner.dedupe.buffer.size`: bytes of the offset map of one cleaning run.
    pub dedupe_buffer_bytes: usize,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            dedupe_buffer_bytes: 16 * 1024 * 1024,
        }
    }
}

/// What one compaction run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompactionOutcome {
    /// When the run started, ms since the epoch.
    pub time_ms: i64,
    pub duration_ms: u64,
    /// Why nothing was cleaned, when nothing was (the run's other counts are then 0).
    pub skipped: Option<String>,
    /// Segments replaced, and the segments that replaced them.
    pub segments_before: usize,
    pub segments_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Bytes of the dirty section indexed into the offset map this run.
    pub dirty_bytes: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    /// The dirty ratio when the run started.
    pub dirty_ratio: f64,
    /// The first offset not yet cleaned, after the run (the cleaner checkpoint).
    pub first_dirty_offset: i64,
}

impl CompactionOutcome {
    pub fn bytes_reclaimed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

impl std::fmt::Display for CompactionOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(reason) = &self.skipped {
            return write!(f, "nothing cleaned: {reason}");
        }
        write!(
            f,
            "{} segments cleaned into {}, {} bytes reclaimed, {} records removed ({} tombstones), {} dirty bytes, {} ms",
            self.segments_before,
            self.segments_after,
            self.bytes_reclaimed(),
            self.records_removed,
            self.tombstones_removed,
            self.dirty_bytes,
            self.duration_ms
        )
    }
}

/// The cleaner checkpoint: `version=1` and `first_dirty_offset=<N>` lines, replaced atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CleanerCheckpoint {
    pub first_dirty_offset: i64,
}

impl CleanerCheckpoint {
    /// Reads `dir`'s checkpoint; a missing file is offset 0.
    pub fn read(dir: &Path) -> Result<CleanerCheckpoint> {
        let Some(pairs) = read_pairs(&dir.join(CLEANER_CHECKPOINT_FILE))? else {
            return Ok(CleanerCheckpoint::default());
        };
        Ok(CleanerCheckpoint {
            first_dirty_offset: pairs.get("first_dirty_offset").copied().unwrap_or(0),
        })
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        write_atomically(
            &dir.join(CLEANER_CHECKPOINT_FILE),
            format!(
                "version=1\nfirst_dirty_offset={}\n",
                self.first_dirty_offset
            )
            .as_bytes(),
        )
    }
}

/// The swap in flight: segments with base offsets in `[base_offset, end_offset)` are being
/// replaced by the cleaned segment `base_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapMarker {
    pub base_offset: i64,
    pub end_offset: i64,
}

impl SwapMarker {
    /// `Ok(None)` when no swap is in flight.
    pub fn read(dir: &Path) -> Result<Option<SwapMarker>> {
        let path = dir.join(SWAP_MARKER_FILE);
        let Some(pairs) = read_pairs(&path)? else {
            return Ok(None);
        };
        match (pairs.get("base_offset"), pairs.get("end_offset")) {
            (Some(&base_offset), Some(&end_offset)) if base_offset < end_offset => {
                Ok(Some(SwapMarker {
                    base_offset,
                    end_offset,
                }))
            }
            _ => Err(EngineError::Corrupt {
                path,
                position: 0,
                reason: "swap marker without a valid base_offset < end_offset".into(),
            }),
        }
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        write_atomically(
            &dir.join(SWAP_MARKER_FILE),
            format!(
                "version=1\nbase_offset={}\nend_offset={}\n",
                self.base_offset, self.end_offset
            )
            .as_bytes(),
        )
    }

    pub fn remove(dir: &Path) -> Result<()> {
        super::segment::remove_if_exists(&dir.join(SWAP_MARKER_FILE))?;
        super::checkpoint::fsync_dir(dir)
    }
}

/// `key=<i64>` lines of a small text file; `None` if it does not exist.
fn read_pairs(path: &Path) -> Result<Option<std::collections::HashMap<String, i64>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::io(path, e)),
    };
    let mut pairs = std::collections::HashMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parsed = line
            .split_once('=')
            .and_then(|(k, v)| Some((k.trim().to_string(), v.trim().parse::<i64>().ok()?)));
        let Some((key, value)) = parsed else {
            return Err(EngineError::Corrupt {
                path: path.to_path_buf(),
                position: 0,
                reason: format!("not a key=number line: {line:?}"),
            });
        };
        pairs.insert(key, value);
    }
    if pairs.get("version").copied() != Some(1) {
        return Err(EngineError::Corrupt {
            path: path.to_path_buf(),
            position: 0,
            reason: "missing or unsupported version".into(),
        });
    }
    Ok(Some(pairs))
}

/// What the cleaner takes from the log under its lock, to work on without it.
#[derive(Debug, Clone)]
pub(crate) struct CleanableLog {
    pub dir: PathBuf,
    pub config: LogConfig,
    pub log_start_offset: i64,
    pub first_dirty_offset: i64,
    pub active_base_offset: i64,
    /// Every closed segment, oldest first.
    pub closed: Vec<SegmentFacts>,
    pub next_tombstone_horizon_ms: Option<i64>,
}

/// Counts of one group's cleaning.
#[derive(Debug, Default)]
struct GroupStats {
    bytes_before: u64,
    bytes_after: u64,
    records_removed: u64,
    tombstones_removed: u64,
    /// The earliest delete horizon of a tombstone kept.
    next_tombstone_horizon_ms: Option<i64>,
}

/// One compaction run over `log` (the caller holds the log's cleanup lock). See the module docs.
pub(crate) fn clean(
    log: &Log,
    now_ms: i64,
    force: bool,
    cleaner: &CleanerConfig,
) -> Result<CompactionOutcome> {
    let started = Instant::now();
    let snapshot = log.cleanable()?;
    let config = &snapshot.config;
    let log_start = snapshot.log_start_offset;
    let segments: Vec<&SegmentFacts> = snapshot
        .closed
        .iter()
        .filter(|s| s.end_offset > log_start)
        .collect();
    let first_dirty = snapshot.first_dirty_offset.max(log_start);

    // The first uncleanable offset: the active segment, or the first segment holding a record
    // within min.compaction.lag.ms.
    let mut first_uncleanable = snapshot.active_base_offset;
    if config.min_compaction_lag_ms > 0 {
        let newest_cleanable_ms = now_ms.saturating_sub(config.min_compaction_lag_ms);
        if let Some(s) = segments
            .iter()
            .find(|s| s.end_offset > first_dirty && s.largest_timestamp > newest_cleanable_ms)
        {
            first_uncleanable = first_uncleanable.min(s.base_offset.max(first_dirty));
        }
    }
    let clean_bytes: u64 = segments
        .iter()
        .filter(|s| s.end_offset <= first_dirty)
        .map(|s| s.size_bytes)
        .sum();
    let dirty: Vec<&SegmentFacts> = segments
        .iter()
        .copied()
        .filter(|s| s.end_offset > first_dirty && s.base_offset < first_uncleanable)
        .collect();
    let dirty_bytes: u64 = dirty.iter().map(|s| s.size_bytes).sum();
    let dirty_ratio = if clean_bytes + dirty_bytes == 0 {
        0.0
    } else {
        dirty_bytes as f64 / (clean_bytes + dirty_bytes) as f64
    };
    let horizon_due = snapshot
        .next_tombstone_horizon_ms
        .is_some_and(|h| now_ms >= h);
    let skipped = |reason: String| CompactionOutcome {
        time_ms: now_ms,
        duration_ms: started.elapsed().as_millis() as u64,
        skipped: Some(reason),
        dirty_ratio,
        first_dirty_offset: first_dirty,
        ..CompactionOutcome::default()
    };
    if segments.is_empty() {
        return Ok(skipped(
            "no closed segments (the active segment is never cleaned)".into(),
        ));
    }
    if dirty_bytes == 0 && !force && !horizon_due {
        return Ok(skipped(
            if first_uncleanable < snapshot.active_base_offset {
                format!(
                    "the dirty records are within min.compaction.lag.ms={}",
                    config.min_compaction_lag_ms
                )
            } else {
                "no dirty records".into()
            },
        ));
    }
    if !force && !horizon_due && dirty_ratio <= config.min_cleanable_dirty_ratio {
        return Ok(skipped(format!(
            "dirty ratio {dirty_ratio:.3} <= min.cleanable.dirty.ratio={}",
            config.min_cleanable_dirty_ratio
        )));
    }

    let mut map = OffsetMap::with_memory(cleaner.dedupe_buffer_bytes);
    let (map_end, indexed_bytes) =
        build_offset_map(log, &dirty, first_dirty, first_uncleanable, &mut map)?;
    let to_clean: Vec<&SegmentFacts> = segments
        .iter()
        .copied()
        .filter(|s| s.base_offset < map_end)
        .collect();
    let params = SegmentParams {
        max_index_bytes: config.segment_index_bytes,
        index_interval_bytes: config.index_interval_bytes,
    };
    let mut outcome = CompactionOutcome {
        time_ms: now_ms,
        dirty_ratio,
        dirty_bytes: indexed_bytes,
        first_dirty_offset: map_end,
        ..CompactionOutcome::default()
    };
    let mut next_horizon: Option<i64> = None;
    for group in group_segments(&to_clean, config) {
        if log.is_closed() {
            return Err(EngineError::Closed);
        }
        let (cleaned, stats) =
            clean_group(&snapshot.dir, &group, &map, map_end, now_ms, config, params)?;
        next_horizon = min_option(next_horizon, stats.next_tombstone_horizon_ms);
        let Some(cleaned) = cleaned else {
            continue;
        };
        let bases: Vec<i64> = group.iter().map(|s| s.base_offset).collect();
        let end = group.last().expect("groups are non-empty").end_offset;
        outcome.segments_before += group.len();
        outcome.segments_after += 1;
        outcome.bytes_before += stats.bytes_before;
        outcome.bytes_after += stats.bytes_after;
        outcome.records_removed += stats.records_removed;
        outcome.tombstones_removed += stats.tombstones_removed;
        log.swap_cleaned(&bases, end, cleaned, now_ms)?;
    }
    outcome.duration_ms = started.elapsed().as_millis() as u64;
    info!(
        "{}: compaction: {outcome} (dirty ratio {dirty_ratio:.3}, cleaned up to offset {map_end})",
        snapshot.dir.display()
    );
    log.finish_compaction(&outcome, next_horizon)?;
    Ok(outcome)
}

fn min_option(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Indexes the dirty segments' keys into `map` until it is full. Returns the map end (the
/// first offset not indexed) and the bytes read.
fn build_offset_map(
    log: &Log,
    dirty: &[&SegmentFacts],
    first_dirty: i64,
    first_uncleanable: i64,
    map: &mut OffsetMap,
) -> Result<(i64, u64)> {
    let mut map_end = first_dirty;
    let mut indexed_bytes = 0u64;
    for segment in dirty {
        if log.is_closed() {
            return Err(EngineError::Closed);
        }
        let mut reader = BatchReader::open(&segment.log_path, segment.size_bytes)?;
        while let Some((_, header, bytes)) = reader.next_batch()? {
            if header.next_offset() <= first_dirty {
                continue;
            }
            if header.base_offset >= first_uncleanable {
                return Ok((
                    map_end.max(first_uncleanable.min(header.base_offset)),
                    indexed_bytes,
                ));
            }
            let batch = record::decode_batch(&bytes)?;
            // Stop before a batch whose keys might not all fit, at a batch boundary.
            if map.len() + batch.records.len() > map.capacity() {
                if map_end == first_dirty && map.is_empty() {
                    return Err(EngineError::InvalidArgument(format!(
                        "log.cleaner.dedupe.buffer.size={} holds {} keys, fewer than the {} records of the batch at offset {}",
                        map.memory_bytes(),
                        map.capacity(),
                        batch.records.len(),
                        header.base_offset
                    )));
                }
                warn!(
                    "offset map full ({} keys); this run cleans up to offset {map_end}, the next goes on from there",
                    map.len()
                );
                return Ok((map_end, indexed_bytes));
            }
            // A batch may straddle the first dirty offset (a log start inside it) or the first
            // uncleanable one (records within min.compaction.lag.ms): only records between
            // the two count, and the map ends at the uncleanable offset at the latest.
            for r in batch
                .records
                .iter()
                .filter(|r| r.offset >= first_dirty && r.offset < first_uncleanable)
            {
                if let Some(key) = &r.key {
                    map.put(key, r.offset);
                }
            }
            indexed_bytes += bytes.len() as u64;
            map_end = header.next_offset().min(first_uncleanable);
            if map_end == first_uncleanable {
                return Ok((map_end, indexed_bytes));
            }
        }
        map_end = map_end.max(segment.end_offset.min(first_uncleanable));
    }
    Ok((map_end, indexed_bytes))
}

/// Consecutive segments whose cleaned copy fits one segment: total size within
/// `segment.bytes`, index entries within `segment.index.bytes`, offsets within 2^31 of the
/// group's base.
fn group_segments<'a>(
    segments: &[&'a SegmentFacts],
    config: &LogConfig,
) -> Vec<Vec<&'a SegmentFacts>> {
    let max_bytes = config.segment_bytes as u64;
    // A time index entry (12 bytes) per index.interval.bytes at most, plus the closing one.
    let interval = config.index_interval_bytes.max(1) as u64;
    let index_entries = |bytes: u64| bytes / interval + 2;
    let max_entries = config.segment_index_bytes as u64 / 12;
    let mut groups: Vec<Vec<&SegmentFacts>> = Vec::new();
    for &segment in segments {
        if let Some(group) = groups.last_mut() {
            let base = group[0].base_offset;
            let bytes: u64 = group.iter().map(|s| s.size_bytes).sum::<u64>() + segment.size_bytes;
            let fits = bytes <= max_bytes
                && index_entries(bytes) <= max_entries
                && segment.end_offset - 1 - base <= i32::MAX as i64;
            if fits {
                group.push(segment);
                continue;
            }
        }
        groups.push(vec![segment]);
    }
    groups
}

/// Writes the cleaned copy of `group` as a `.cleaned` segment. No copy when cleaning would
/// change nothing: no record removed, no horizon stamped, a single segment (several are
/// merged into one even when nothing else changes).
fn clean_group(
    dir: &Path,
    group: &[&SegmentFacts],
    map: &OffsetMap,
    map_end: i64,
    now_ms: i64,
    config: &LogConfig,
    params: SegmentParams,
) -> Result<(Option<LogSegment>, GroupStats)> {
    let base = group[0].base_offset;
    let mut cleaned = LogSegment::create_with_suffix(dir, base, params, CLEANED_SUFFIX)?;
    let result = write_cleaned(&mut cleaned, group, map, map_end, now_ms, config);
    match result {
        Ok((stats, changed)) if changed || group.len() > 1 => {
            cleaned.close_active()?;
            cleaned.flush()?;
            Ok((Some(cleaned), stats))
        }
        Ok((stats, _)) => {
            cleaned.delete()?;
            Ok((None, stats))
        }
        Err(e) => {
            if let Err(undo) = cleaned.delete() {
                warn!("could not remove a cleaned copy after an error: {undo}");
            }
            Err(e)
        }
    }
}

/// Copies the records of `group` that compaction keeps into `cleaned`. Returns the counts and
/// whether anything changed.
fn write_cleaned(
    cleaned: &mut LogSegment,
    group: &[&SegmentFacts],
    map: &OffsetMap,
    map_end: i64,
    now_ms: i64,
    config: &LogConfig,
) -> Result<(GroupStats, bool)> {
    let mut stats = GroupStats::default();
    let mut changed = false;
    let mut data = Vec::with_capacity(WRITE_BUFFER_BYTES);
    let mut headers: Vec<BatchHeader> = Vec::new();
    for segment in group {
        stats.bytes_before += segment.size_bytes;
        let mut reader = BatchReader::open(&segment.log_path, segment.size_bytes)?;
        while let Some((_, header, bytes)) = reader.next_batch()? {
            let (kept, kept_header) = if header.base_offset >= map_end || header.is_control() {
                (bytes, header)
            } else {
                let cleaned_batch = clean_batch(&header, &bytes, map, map_end, now_ms, config)?;
                stats.records_removed += cleaned_batch.removed;
                stats.tombstones_removed += cleaned_batch.tombstones_removed;
                stats.next_tombstone_horizon_ms = min_option(
                    stats.next_tombstone_horizon_ms,
                    cleaned_batch.tombstone_horizon_ms,
                );
                match cleaned_batch.fate {
                    BatchFate::Unchanged => (bytes, header),
                    BatchFate::Rewritten(rewritten) => {
                        changed = true;
                        let rewritten_header = BatchHeader::parse(&rewritten)?;
                        (rewritten, rewritten_header)
                    }
                    BatchFate::Dropped => {
                        changed = true;
                        continue;
                    }
                }
            };
            data.extend_from_slice(&kept);
            headers.push(kept_header);
            if data.len() >= WRITE_BUFFER_BYTES {
                cleaned.append(&data, &headers)?;
                data.clear();
                headers.clear();
            }
        }
    }
    if !data.is_empty() {
        cleaned.append(&data, &headers)?;
    }
    stats.bytes_after = cleaned.size() as u64;
    Ok((stats, changed))
}

/// What compaction does with one batch.
enum BatchFate {
    /// Kept byte for byte.
    Unchanged,
    /// Re-encoded with fewer records or a new delete horizon.
    Rewritten(Vec<u8>),
    /// No record kept.
    Dropped,
}

/// One batch after compaction, with what it lost.
struct CleanedBatch {
    fate: BatchFate,
    removed: u64,
    tombstones_removed: u64,
    /// The delete horizon of the tombstones it keeps.
    tombstone_horizon_ms: Option<i64>,
}

/// The batch as compaction leaves it.
fn clean_batch(
    header: &BatchHeader,
    bytes: &[u8],
    map: &OffsetMap,
    map_end: i64,
    now_ms: i64,
    config: &LogConfig,
) -> Result<CleanedBatch> {
    let batch = record::decode_batch(bytes)?;
    let horizon = header.delete_horizon_ms();
    let tombstones_expired = horizon.is_some_and(|h| now_ms >= h);
    let total = batch.records.len();
    let mut kept = Vec::with_capacity(total);
    let (mut removed, mut tombstones_removed) = (0u64, 0u64);
    let mut keeps_tombstone = false;
    for r in batch.records {
        let superseded = r.offset < map_end
            && r.key
                .as_deref()
                .and_then(|k| map.get(k))
                .is_some_and(|latest| latest > r.offset);
        let tombstone = r.key.is_some() && r.value.is_none();
        let expired = tombstone && r.offset < map_end && tombstones_expired;
        if superseded || expired {
            removed += 1;
            if tombstone {
                tombstones_removed += 1;
            }
        } else {
            keeps_tombstone |= tombstone;
            kept.push(r);
        }
    }
    let new_horizon = match (keeps_tombstone, horizon) {
        (false, _) => None,
        (true, Some(h)) => Some(h),
        (true, None) => Some(now_ms.saturating_add(config.delete_retention_ms)),
    };
    let fate = if kept.is_empty() {
        BatchFate::Dropped
    } else if kept.len() == total && new_horizon == horizon {
        BatchFate::Unchanged
    } else {
        BatchFate::Rewritten(record::batch::encode_retained(header, &kept, new_horizon)?)
    };
    Ok(CleanedBatch {
        fate,
        removed,
        tombstones_removed,
        tombstone_horizon_ms: new_horizon,
    })
}

/// Where a crash is simulated during a swap (tests of recovery; see `Log::set_swap_crash`).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapStep {
    /// The cleaned copy is written (`.cleaned`), no marker yet.
    Cleaned,
    /// The marker is written, nothing renamed.
    Marker,
    /// The copy's indexes are `.swap`, its `.log` still `.cleaned`.
    IndexesSwapped,
    /// The copy is `.swap` (committed); the old segments are live.
    Swapped,
    /// The old segments are `.deleted`; the copy is still `.swap`.
    OldDeleted,
    /// The copy is live; the marker is still there.
    Live,
}

impl SwapStep {
    pub const ALL: [SwapStep; 6] = [
        SwapStep::Cleaned,
        SwapStep::Marker,
        SwapStep::IndexesSwapped,
        SwapStep::Swapped,
        SwapStep::OldDeleted,
        SwapStep::Live,
    ];
}

/// The error a simulated crash returns.
pub(crate) fn simulated_crash(step: SwapStep) -> EngineError {
    EngineError::Io {
        path: PathBuf::from(format!("<simulated crash after {step:?}>")),
        source: std::io::Error::other("simulated crash"),
    }
}

/// Completes or rolls back a swap interrupted by a crash (called when opening a partition).
pub(crate) fn recover_interrupted_swap(dir: &Path) -> Result<()> {
    use super::segment::{parse_segment_file_name, remove_if_exists, segment_file, suffixed};
    use super::segment::{INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
    let marker = match SwapMarker::read(dir) {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(()),
        Err(e) => {
            // Written atomically, so this is outside damage; the .swap files (if any) are then
            // removed as strays and the old segments kept.
            warn!("{e}; ignoring the swap marker");
            return SwapMarker::remove(dir);
        }
    };
    let swap_log = suffixed(
        segment_file(dir, marker.base_offset, LOG_SUFFIX),
        SWAP_SUFFIX,
    );
    if swap_log.exists() {
        info!(
            "{}: completing an interrupted compaction swap of offsets [{}, {})",
            dir.display(),
            marker.base_offset,
            marker.end_offset
        );
        for entry in std::fs::read_dir(dir).at(dir)? {
            let entry = entry.at(dir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let base = [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX]
                .iter()
                .find_map(|suffix| parse_segment_file_name(&name, suffix));
            if base.is_some_and(|b| b >= marker.base_offset && b < marker.end_offset) {
                remove_if_exists(&entry.path())?;
            }
        }
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
            let live = segment_file(dir, marker.base_offset, suffix);
            let swap = suffixed(live.clone(), SWAP_SUFFIX);
            match std::fs::rename(&swap, &live) {
                Ok(()) => {}
                // An index that was not renamed yet is rebuilt from the .log.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(EngineError::io(&swap, e)),
            }
        }
    } else {
        info!(
            "{}: rolling back an interrupted compaction swap of offsets [{}, {})",
            dir.display(),
            marker.base_offset,
            marker.end_offset
        );
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
            let live = segment_file(dir, marker.base_offset, suffix);
            remove_if_exists(&suffixed(live.clone(), SWAP_SUFFIX))?;
            remove_if_exists(&suffixed(live, CLEANED_SUFFIX))?;
        }
    }
    super::checkpoint::fsync_dir(dir)?;
    SwapMarker::remove(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(sizes: &[(i64, u64)], last_end: i64) -> Vec<SegmentFacts> {
        let mut out: Vec<SegmentFacts> = Vec::new();
        for (i, &(base, size)) in sizes.iter().enumerate() {
            let end = sizes.get(i + 1).map_or(last_end, |(b, _)| *b);
            out.push(SegmentFacts {
                base_offset: base,
                end_offset: end,
                size_bytes: size,
                largest_timestamp: 0,
                log_path: PathBuf::new(),
            });
        }
        out
    }

    fn bases(groups: &[Vec<&SegmentFacts>]) -> Vec<Vec<i64>> {
        groups
            .iter()
            .map(|g| g.iter().map(|s| s.base_offset).collect())
            .collect()
    }

    #[test]
    fn groups_fit_one_segment_by_size() {
        let config = LogConfig {
            segment_bytes: 1000,
            ..LogConfig::default()
        };
        let segments = facts(&[(0, 400), (10, 400), (20, 400), (30, 100), (40, 1000)], 50);
        let refs: Vec<&SegmentFacts> = segments.iter().collect();
        assert_eq!(
            bases(&group_segments(&refs, &config)),
            vec![vec![0, 10], vec![20, 30], vec![40]]
        );
    }

    #[test]
    fn groups_keep_offsets_within_2_pow_31_of_their_base() {
        let config = LogConfig::default();
        let max = i32::MAX as i64;
        // Sparse offsets: tiny segments far apart.
        let segments = facts(&[(0, 10), (max - 5, 10), (max, 10), (max + 1, 10)], max + 2);
        let refs: Vec<&SegmentFacts> = segments.iter().collect();
        // Last offsets max-6, max-1 and max are within i32::MAX of base 0; max+1 is not.
        assert_eq!(
            bases(&group_segments(&refs, &config)),
            vec![vec![0, max - 5, max], vec![max + 1]]
        );
    }

    #[test]
    fn groups_keep_the_index_within_segment_index_bytes() {
        let config = LogConfig {
            segment_bytes: 1 << 30,
            index_interval_bytes: 100,
            segment_index_bytes: 12 * 30,
            ..LogConfig::default()
        };
        // 1000 bytes need about 12 time index entries: two fit (24 + 2), three do not.
        let segments = facts(&[(0, 1000), (10, 1000), (20, 1000)], 30);
        let refs: Vec<&SegmentFacts> = segments.iter().collect();
        assert_eq!(
            bases(&group_segments(&refs, &config)),
            vec![vec![0, 10], vec![20]]
        );
    }

    #[test]
    fn checkpoint_and_marker_round_trip_and_refuse_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            CleanerCheckpoint::read(dir.path()).unwrap(),
            CleanerCheckpoint::default()
        );
        CleanerCheckpoint {
            first_dirty_offset: 42,
        }
        .write(dir.path())
        .unwrap();
        assert_eq!(
            CleanerCheckpoint::read(dir.path())
                .unwrap()
                .first_dirty_offset,
            42
        );
        assert_eq!(SwapMarker::read(dir.path()).unwrap(), None);
        let marker = SwapMarker {
            base_offset: 5,
            end_offset: 9,
        };
        marker.write(dir.path()).unwrap();
        assert_eq!(SwapMarker::read(dir.path()).unwrap(), Some(marker));
        SwapMarker::remove(dir.path()).unwrap();
        assert_eq!(SwapMarker::read(dir.path()).unwrap(), None);
        for garbage in [
            "first_dirty_offset=x\n",
            "version=2\nfirst_dirty_offset=1\n",
            "nonsense",
        ] {
            std::fs::write(dir.path().join(CLEANER_CHECKPOINT_FILE), garbage).unwrap();
            assert!(
                matches!(
                    CleanerCheckpoint::read(dir.path()),
                    Err(EngineError::Corrupt { .. })
                ),
                "{garbage:?}"
            );
        }
        std::fs::write(
            dir.path().join(SWAP_MARKER_FILE),
            "version=1\nbase_offset=9\nend_offset=5\n",
        )
        .unwrap();
        assert!(SwapMarker::read(dir.path()).is_err());
        // A broken marker is dropped at recovery rather than acted on.
        recover_interrupted_swap(dir.path()).unwrap();
        assert!(!dir.path().join(SWAP_MARKER_FILE).exists());
    }
}
