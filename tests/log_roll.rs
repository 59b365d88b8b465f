//! When the active segment rolls, and what a roll leaves behind.

use lmqfs::engine::{Log, LogConfig, NewRecord};

fn record_at(timestamp: i64, value: &str) -> NewRecord {
    NewRecord {
        value: Some(value.as_bytes().to_vec()),
        timestamp: Some(timestamp),
        ..NewRecord::default()
    }
}

fn base_offsets(log: &Log) -> Vec<i64> {
    log.segments().iter().map(|s| s.base_offset).collect()
}

#[test]
fn segment_bytes_rolls_before_the_append_that_would_exceed_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 300,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..10 {
        log.append(&[NewRecord::value(format!("value-{i:040}"))])
            .unwrap();
    }
    let segments = log.segments();
    assert!(segments.len() > 2, "{segments:?}");
    for s in &segments {
        assert!(s.size_bytes <= 300, "segment over segment.bytes: {s:?}");
    }
    assert!(log
        .stats()
        .last_roll
        .unwrap()
        .reason
        .contains("segment.bytes"));
}

#[test]
fn segment_messages_rolls_after_that_many_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_messages: Some(3),
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..7 {
        log.append(&[NewRecord::value(format!("{i}"))]).unwrap();
    }
    assert_eq!(base_offsets(&log), vec![0, 3, 6]);
}

#[test]
fn segment_ms_compares_record_timestamps_not_the_wall_clock() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 1_000,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    // Old timestamps, close together: an import of history does not roll per append.
    for i in 0..5 {
        log.append(&[record_at(1_000_000 + i * 100, "old")])
            .unwrap();
    }
    assert_eq!(base_offsets(&log), vec![0]);
    // A record more than segment.ms after the segment's first batch rolls.
    log.append(&[record_at(1_000_000 + 1_001, "later")])
        .unwrap();
    assert_eq!(base_offsets(&log), vec![0, 5]);
    assert!(log.stats().last_roll.unwrap().reason.contains("segment.ms"));
}

#[test]
fn a_full_index_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 0,
        segment_index_bytes: 4 * 12, // four time index entries, one kept for close
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..20 {
        log.append(&[record_at(1_000 + i, "x")]).unwrap();
    }
    assert!(log.segment_count() > 2);
    assert!(log.stats().last_roll.unwrap().reason.contains("index full"));
    for i in 0..20 {
        assert_eq!(log.offset_for_timestamp(1_000 + i).unwrap(), i);
    }
}

#[test]
fn roll_on_request_flushes_and_trims_the_previous_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.roll().unwrap();
    assert_eq!(
        log.segment_count(),
        1,
        "rolling an empty segment is a no-op"
    );
    log.append(&[NewRecord::value("a"), NewRecord::value("b")])
        .unwrap();
    log.roll().unwrap();
    let segments = log.segments();
    assert_eq!(base_offsets(&log), vec![0, 2]);
    assert_eq!(log.recovery_point(), 2, "the rolled segment was flushed");
    let closed = &segments[0];
    assert!(!closed.is_active && segments[1].is_active);
    // Trimmed: the closed segment's indexes hold only their entries (the time index has its
    // closing entry), while the active one's are preallocated.
    assert_eq!(
        std::fs::metadata(&closed.offset_index_path).unwrap().len(),
        0
    );
    assert_eq!(
        std::fs::metadata(&closed.time_index_path).unwrap().len(),
        12
    );
    let active_index = std::fs::metadata(&segments[1].offset_index_path).unwrap();
    assert_eq!(active_index.len(), 10 * 1024 * 1024);
    assert_eq!(log.read(0, 1 << 20).unwrap().len(), 2);
}
