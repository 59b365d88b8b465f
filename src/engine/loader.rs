//! Opening a partition directory: Kafka's `LogLoader`.
//!
//! After a clean stop (the marker of [`super::checkpoint`] is present) almost nothing is
//! scanned: segments are opened by file length, their indexes lazily when first used, and the
//! active segment's batches after its last index entry are checked (the marker says the daemon
//! stopped cleanly, not that the bytes are intact): bytes at its end that are not a whole batch
//! (a torn write, garbage, zeros) are truncated with an error line, and the log end offset is
//! read from there. Damage elsewhere is found by the reads that reach it, which fail with
//! `Corrupt` at its position, after every batch before it.
//!
//! After an unclean stop every segment from the one holding the recovery point on is recovered:
//! each batch's header, CRC and offsets are validated, the `.log` is truncated at the first
//! invalid byte, the indexes are rebuilt, and every later segment is deleted (its data was never
//! acknowledged as durable, and keeping it would leave a gap). Recovered data is then fsynced, so
//! the recovery point moves to the log end.
//!
//! In both cases an interrupted compaction swap is completed or rolled back first (see
//! [`super::cleaner`]), then temporary files (`*.tmp`, `*.cleaned`, `*.swap`, `*.deleted`) are
//! removed, and an index with no `.log` beside it is removed.

use std::collections::BTreeMap;
use std::path::Path;

use log::{error, info, warn};

use super::checkpoint::{self, Checkpoint};
use super::cleaner;
use super::error::IoResultExt;
use super::segment::{
    parse_segment_file_name, remove_if_exists, LogSegment, SegmentParams, INDEX_SUFFIX, LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
};
use super::Result;

/// Suffixes of files that are never live: leftovers of an interrupted write, clean or delete
/// (`.swap` files are strays only once an interrupted swap was completed or rolled back).
const STRAY_SUFFIXES: [&str; 4] = [".tmp", ".cleaned", ".deleted", ".swap"];

/// A loaded partition directory.
pub(crate) struct LoadedLog {
    pub segments: BTreeMap<i64, LogSegment>,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub recovery_point: i64,
    /// Whether the log was recovered after an unclean stop.
    pub recovered: bool,
}

pub(crate) fn load(dir: &Path, params: SegmentParams) -> Result<LoadedLog> {
    std::fs::create_dir_all(dir).at(dir)?;
    let clean = checkpoint::has_clean_shutdown_marker(dir);
    let checkpoint = match Checkpoint::read(dir) {
        Ok(c) => c,
        Err(e) => {
            warn!("{e}; recovering {} from its first segment", dir.display());
            Checkpoint::default()
        }
    };
    // From here on a crash must lead to recovery.
    checkpoint::remove_clean_shutdown_marker(dir)?;
    // Before listing segments: a compaction swap may have been cut short.
    cleaner::recover_interrupted_swap(dir)?;

    let mut log_bases = Vec::new();
    let mut index_files = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if STRAY_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            info!("removing stray file {}", path.display());
            remove_if_exists(&path)?;
        } else if let Some(base) = parse_segment_file_name(&name, LOG_SUFFIX) {
            log_bases.push(base);
        } else if let Some(base) = parse_segment_file_name(&name, INDEX_SUFFIX)
            .or_else(|| parse_segment_file_name(&name, TIME_INDEX_SUFFIX))
        {
            index_files.push((base, path));
        }
    }
    log_bases.sort_unstable();
    for (base, path) in index_files {
        if log_bases.binary_search(&base).is_err() {
            warn!("removing index {} which has no .log", path.display());
            remove_if_exists(&path)?;
        }
    }

    let mut segments = BTreeMap::new();
    for &base in &log_bases {
        segments.insert(base, LogSegment::open(dir, base, params)?);
    }

    // A closed segment with no bytes lost every record it had (it is never created empty):
    // say which offsets are gone, since reads skip them as they skip compacted offsets.
    let bases: Vec<i64> = segments.keys().copied().collect();
    for pair in bases.windows(2) {
        if segments[&pair[0]].is_empty() {
            error!(
                "{}: segment {} is empty: the records at offsets [{}, {}) are missing; reads \
                 skip them",
                dir.display(),
                segments[&pair[0]].log_path().display(),
                pair[0],
                pair[1]
            );
        }
    }

    let recovered = !clean && !segments.is_empty();
    if recovered {
        recover_segments(dir, &mut segments, checkpoint.recovery_point)?;
    }

    let mut log_start_offset = checkpoint.log_start_offset;
    if segments.is_empty() {
        segments.insert(
            log_start_offset,
            LogSegment::create(dir, log_start_offset, params)?,
        );
    }
    let (&first_base, _) = segments.first_key_value().expect("at least one segment");
    log_start_offset = log_start_offset.max(first_base);

    let active = segments
        .values_mut()
        .next_back()
        .expect("at least one segment");
    if clean {
        // The marker says the daemon stopped cleanly, not that the bytes are intact.
        if let Some(repair) = active.verify_tail()? {
            error!(
                "{}: the clean-shutdown marker was present, but the active segment {} ends in \
                 {} bytes that are not a whole batch (a torn write or garbage after the last \
                 batch); truncated them at position {}",
                dir.display(),
                active.log_path().display(),
                repair.removed_bytes,
                repair.position
            );
            active.flush()?;
        }
    }
    active.make_active()?;
    let mut log_end_offset = active.next_offset()?;
    if log_start_offset > log_end_offset {
        // Everything the log start offset promised is gone: start afresh there (Kafka's
        // truncateFullyAndStartAt).
        warn!(
            "{}: log start offset {log_start_offset} is past the recovered log end {log_end_offset}; starting an empty log at {log_start_offset}",
            dir.display()
        );
        for (_, segment) in std::mem::take(&mut segments) {
            segment.delete()?;
        }
        let mut segment = LogSegment::create(dir, log_start_offset, params)?;
        segment.make_active()?;
        segments.insert(log_start_offset, segment);
        log_end_offset = log_start_offset;
    }

    let recovery_point = if clean || recovered {
        log_end_offset
    } else {
        checkpoint.recovery_point.min(log_end_offset)
    };
    if recovered {
        Checkpoint {
            recovery_point,
            log_start_offset,
        }
        .write(dir)?;
    }
    if clean {
        info!(
            "{}: clean shutdown, skipped recovery (log end offset {log_end_offset})",
            dir.display()
        );
    }
    Ok(LoadedLog {
        segments,
        log_start_offset,
        log_end_offset,
        recovery_point,
        recovered,
    })
}

/// Recovers every segment from the one holding `recovery_point` on.
fn recover_segments(
    dir: &Path,
    segments: &mut BTreeMap<i64, LogSegment>,
    recovery_point: i64,
) -> Result<()> {
    let first = segments
        .range(..=recovery_point)
        .next_back()
        .map(|(&base, _)| base)
        .unwrap_or_else(|| *segments.keys().next().expect("non-empty"));
    let to_recover: Vec<i64> = segments.range(first..).map(|(&b, _)| b).collect();
    let total_bytes: u64 = segments.range(first..).map(|(_, s)| s.size() as u64).sum();
    info!(
        "{}: unclean shutdown; recovering {} segment(s), {} bytes, from offset {recovery_point}",
        dir.display(),
        to_recover.len(),
        total_bytes
    );
    let mut done_bytes = 0u64;
    let mut previous_next_offset: Option<i64> = None;
    for (i, base) in to_recover.iter().copied().enumerate() {
        let Some(mut segment) = segments.remove(&base) else {
            continue;
        };
        let out_of_order = previous_next_offset.is_some_and(|next| base < next);
        if out_of_order {
            warn!(
                "{}: segment {base} overlaps the previous segment; deleting it and all later ones",
                dir.display()
            );
            segment.delete()?;
            delete_segments_from(segments, base)?;
            break;
        }
        let outcome = segment.recover()?;
        segment.flush()?;
        done_bytes += outcome.valid_bytes as u64 + outcome.truncated_bytes;
        info!(
            "{}: recovered segment {base} ({}/{}): {} batches, {} bytes valid{} — {:.0}% done",
            dir.display(),
            i + 1,
            to_recover.len(),
            outcome.batches,
            outcome.valid_bytes,
            if outcome.truncated_bytes > 0 {
                format!(", {} invalid bytes truncated", outcome.truncated_bytes)
            } else {
                String::new()
            },
            if total_bytes == 0 {
                100.0
            } else {
                done_bytes as f64 * 100.0 / total_bytes as f64
            }
        );
        let next = segment.next_offset()?;
        let truncated = outcome.truncated_bytes > 0;
        let is_last = i + 1 == to_recover.len();
        segment.close_active()?;
        segments.insert(base, segment);
        previous_next_offset = Some(next);
        if truncated && !is_last {
            warn!(
                "{}: deleting the segments after {base}, which follow invalid data",
                dir.display()
            );
            delete_segments_from(segments, base + 1)?;
            break;
        }
    }
    checkpoint::fsync_dir(dir)
}

/// Deletes every segment whose base offset is >= `from`.
fn delete_segments_from(segments: &mut BTreeMap<i64, LogSegment>, from: i64) -> Result<()> {
    for (_, segment) in segments.split_off(&from) {
        segment.delete()?;
    }
    Ok(())
}
