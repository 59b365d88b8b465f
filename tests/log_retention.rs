//! Retention: by time and by size, idempotent, never the active segment, asynchronous deletion
//! that keeps readers of the old view generation going, `delete-records` followed by retention,
//! and removal of leftover `.deleted` files at startup.

mod cleanup_support;

use cleanup_support::*;
use lmqfs::engine::{now_ms, Log, LogConfig, NewRecord};
use tempfile::tempdir;

fn delete_policy(segment_bytes: u32) -> LogConfig {
    LogConfig {
        segment_bytes,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

fn at(value: &str, timestamp: i64) -> NewRecord {
    NewRecord {
        timestamp: Some(timestamp),
        ..NewRecord::value(value)
    }
}

/// `segments` closed segments of `per_segment` records each, timestamps from `first_ts` on,
/// one second apart per segment, plus an active segment with one record at `now`.
fn fill(log: &Log, segments: usize, per_segment: usize, first_ts: i64) {
    for s in 0..segments {
        let records: Vec<NewRecord> = (0..per_segment)
            .map(|i| at(&format!("s{s}-r{i}"), first_ts + s as i64 * 1000))
            .collect();
        log.append(&records).unwrap();
        log.roll().unwrap();
    }
    log.append(&[at("active", now_ms())]).unwrap();
}

fn values(log: &Log) -> Vec<String> {
    all_records(log)
        .into_iter()
        .map(|r| String::from_utf8(r.value.unwrap()).unwrap())
        .collect()
}

#[test]
fn retention_ms_deletes_expired_segments_oldest_first_never_the_active_one() {
    let dir = tempdir().unwrap();
    let now = now_ms();
    let config = LogConfig {
        retention_ms: 10_000,
        ..delete_policy(1 << 20)
    };
    let log = open(dir.path(), config);
    // Segments with timestamps 60 s, 59 s, 58 s ago, then two recent ones.
    fill(&log, 3, 4, now - 60_000);
    log.append(&[at("recent", now)]).unwrap();
    log.roll().unwrap();
    log.append(&[at("active", now)]).unwrap();
    let size_before = log.size_bytes();
    let outcome = log.run_retention(now).unwrap();
    assert_eq!(outcome.segments_deleted, 3);
    assert_eq!(outcome.records_removed, 12);
    assert_eq!(outcome.log_start_offset, 12);
    assert_eq!(size_before - log.size_bytes(), outcome.bytes_reclaimed);
    assert!(outcome.reasons[0].contains("retention.ms"), "{outcome}");
    assert_eq!(log.log_start_offset(), 12);
    assert_eq!(values(&log), vec!["active", "recent", "active"]);
    assert_eq!(files_ending(dir.path(), ".log"), 2);

    // Idempotent.
    let again = log.run_retention(now).unwrap();
    assert_eq!((again.segments_deleted, again.bytes_reclaimed), (0, 0));

    // Everything expired: the active segment still stays.
    let much_later = log.run_retention(now + 3_600_000).unwrap();
    assert_eq!(much_later.segments_deleted, 1);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(values(&log), vec!["active"]);
    assert_eq!(log.stats().last_retention, Some(much_later));
}

#[test]
fn retention_bytes_keeps_the_newest_segments_within_the_limit() {
    let dir = tempdir().unwrap();
    let log = open(dir.path(), delete_policy(1 << 20));
    fill(&log, 6, 10, now_ms());
    let segment_bytes = log.segments()[0].size_bytes as i64;
    log.update_config(LogConfig {
        retention_bytes: segment_bytes * 3,
        ..log.config()
    });
    let outcome = log.run_retention(now_ms()).unwrap();
    // 6 full segments + a small active one: deleting 3 leaves 3 full + active >= the limit
    // while deleting a 4th would go below.
    assert_eq!(outcome.segments_deleted, 3, "{outcome}");
    assert!(log.size_bytes() as i64 >= segment_bytes * 3);
    assert!(outcome.reasons[0].contains("retention.bytes"));
    assert_eq!(log.log_start_offset(), 30);
    assert_eq!(log.run_retention(now_ms()).unwrap().segments_deleted, 0);
    // A compact-only log ignores both limits.
    log.update_config(LogConfig {
        retention_bytes: 0,
        retention_ms: 0,
        ..compacted(1 << 20)
    });
    assert_eq!(log.run_retention(now_ms()).unwrap().segments_deleted, 0);
}

#[test]
fn delete_records_then_retention_frees_the_space() {
    let dir = tempdir().unwrap();
    let log = open(dir.path(), delete_policy(1 << 20));
    fill(&log, 4, 5, now_ms());
    let size_before = log.size_bytes();
    // Offset 12 is inside the third segment: only the first two lie wholly below it.
    log.delete_records(12).unwrap();
    assert_eq!(
        log.size_bytes(),
        size_before,
        "delete-records alone frees nothing"
    );
    let outcome = log.run_retention(now_ms()).unwrap();
    assert_eq!(outcome.segments_deleted, 2);
    assert_eq!(outcome.records_removed, 10);
    assert!(outcome.reasons[0].contains("log start offset"));
    assert_eq!(log.log_start_offset(), 12);
    assert!(log.size_bytes() < size_before);
    assert_eq!(all_records(&log)[0].offset, 12);
    // The same works under cleanup.policy=compact, which has no time or size limit.
    log.update_config(compacted(1 << 20));
    log.delete_records(20).unwrap();
    assert_eq!(log.run_retention(now_ms()).unwrap().segments_deleted, 2);
}

#[test]
fn deleted_segments_stay_readable_for_the_old_generation_until_the_delay() {
    let dir = tempdir().unwrap();
    let now = now_ms();
    let config = LogConfig {
        retention_ms: 1000,
        file_delete_delay_ms: 30_000,
        ..delete_policy(1 << 20)
    };
    let log = open(dir.path(), config);
    fill(&log, 3, 5, now - 100_000);
    let old = log.view_generation();
    let old_first = log.read_batches_at(old.generation, 0, 1 << 20).unwrap();
    let outcome = log.run_retention(now).unwrap();
    assert_eq!(outcome.segments_deleted, 3);
    let new = log.view_generation();
    assert!(new.generation > old.generation);
    assert_eq!(new.log_start_offset, 15);
    // The files wait under .deleted, and the old generation still reads them, byte for byte.
    assert_eq!(files_ending(dir.path(), ".log.deleted"), 3);
    let again = log.read_batches_at(old.generation, 0, 1 << 20).unwrap();
    assert_eq!(again[0].bytes, old_first[0].bytes);
    assert_eq!(
        log.read_batches_at(old.generation, 10, 1 << 20).unwrap()[0]
            .header
            .base_offset,
        10
    );
    // The current generation does not see them.
    assert_eq!(
        log.read_batches(0, 1 << 20).unwrap()[0].header.base_offset,
        15
    );
    // Not yet due; then due.
    assert_eq!(log.delete_expired_files(now + 29_999).unwrap(), 0);
    assert_eq!(log.delete_expired_files(now + 30_000).unwrap(), 3);
    assert_eq!(files_ending(dir.path(), ".deleted"), 0);
    let gone = log.read_batches_at(old.generation, 0, 1 << 20).unwrap();
    assert_eq!(
        gone.first().map(|b| b.header.base_offset),
        Some(15),
        "once the files are gone the old generation skips to what exists"
    );
}

#[test]
fn leftover_deleted_files_are_removed_at_startup() {
    let dir = tempdir().unwrap();
    let now = now_ms();
    let config = LogConfig {
        retention_ms: 1000,
        file_delete_delay_ms: 3_600_000,
        ..delete_policy(1 << 20)
    };
    let log = open(dir.path(), config.clone());
    fill(&log, 2, 3, now - 100_000);
    log.run_retention(now).unwrap();
    assert_eq!(
        files_ending(dir.path(), ".deleted"),
        6,
        "three files per segment"
    );
    drop(log); // a crash: nothing removed them
    let log = open(dir.path(), config.clone());
    assert_eq!(files_ending(dir.path(), ".deleted"), 0);
    assert_eq!(values(&log), vec!["active"]);
    // A clean close removes them too.
    log.append(&[at("x", now)]).unwrap();
    log.close().unwrap();
    assert_eq!(files_ending(dir.path(), ".deleted"), 0);
}
