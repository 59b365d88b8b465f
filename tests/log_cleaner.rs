//! Key compaction, after Kafka's `LogCleanerTest` scenarios: cleaning segments, deletes and
//! tombstone expiry, partial cleaning with a small offset map, grouping of sparse segments,
//! cleaning across offset gaps, compressed batches, the dirty-ratio trigger,
//! `min.compaction.lag.ms`, and recovery after a crash at every step of the segment swap.

mod cleanup_support;

use std::collections::BTreeMap;
use std::path::Path;

use cleanup_support::*;
use lmqfs::engine::cleaner::SwapStep;
use lmqfs::engine::record::decode_batch;
use lmqfs::engine::{now_ms, CleanerConfig, Compression, EngineError, Log, LogConfig, NewRecord};
use tempfile::tempdir;

fn cleaner() -> CleanerConfig {
    CleanerConfig::default()
}

/// Checks what compaction promises against the records before it: every key keeps its latest
/// record (unless it is a tombstone the cleaner may drop), every kept record is the same record
/// at the same offset, and nothing else is kept for keys whose latest is in a cleaned segment.
fn assert_compacted_from(
    before: &[lmqfs::engine::Record],
    after: &[lmqfs::engine::Record],
    tombstones_may_go: bool,
) {
    let by_offset: BTreeMap<i64, _> = before.iter().map(|r| (r.offset, r)).collect();
    for r in after {
        let original = by_offset
            .get(&r.offset)
            .unwrap_or_else(|| panic!("offset {} was not in the log before", r.offset));
        assert_eq!(
            (&r.key, &r.value, r.timestamp),
            (&original.key, &original.value, original.timestamp),
            "record at offset {} changed",
            r.offset
        );
    }
    let latest_before = latest_by_key(before);
    let latest_after = latest_by_key(after);
    for (key, (offset, value)) in &latest_before {
        match latest_after.get(key) {
            Some(kept) => assert_eq!(kept, &(*offset, value.clone()), "key {key:?}"),
            None => assert!(
                tombstones_may_go && value.is_none(),
                "key {key:?} lost its latest record at offset {offset}"
            ),
        }
    }
}

fn roll_all(log: &Log) {
    log.roll().expect("roll");
}

#[test]
fn clean_segments_keep_the_latest_record_per_key() {
    let dir = tempdir().unwrap();
    let log = open(dir.path(), compacted(1024));
    write_rounds(&log, 10, 5);
    roll_all(&log);
    let before = all_records(&log);
    let segments_before = log.segment_count();
    assert!(segments_before > 3, "small segments: {segments_before}");
    let end = log.log_end_offset();

    let outcome = log.compact(now_ms(), true, &cleaner()).unwrap();
    assert_eq!(outcome.skipped, None);
    assert_eq!(outcome.records_removed, 40);
    assert!(outcome.bytes_reclaimed() > 0);
    // Full segments cannot be grouped (Kafka groups by the sizes before cleaning); the next
    // run merges the shrunken ones.
    assert!(outcome.segments_after <= outcome.segments_before);
    let merge = log.compact(now_ms(), true, &cleaner()).unwrap();
    assert_eq!(
        (merge.records_removed, merge.segments_after),
        (0, 1),
        "{merge}"
    );
    let after = all_records(&log);
    assert_compacted_from(&before, &after, false);
    assert_eq!(after.len(), 10, "one record per key: {:?}", triples(&after));
    assert!(log.segment_count() < segments_before);
    assert_eq!(log.log_end_offset(), end, "the log end never moves");
    assert_eq!(log.stats().first_dirty_offset, end);

    // A removed offset is gone; a kept one reads back.
    assert_eq!(log.read_record(0).unwrap(), None);
    let kept = after[0].offset;
    assert_eq!(
        log.read_record(kept).unwrap().unwrap().value,
        after[0].value
    );

    // The active segment takes appends as before, and a reopen sees the same log.
    log.append(&[keyed("k0", "new")]).unwrap();
    let expected = all_records(&log);
    log.close().unwrap();
    let log = open(dir.path(), compacted(1024));
    assert_eq!(triples(&all_records(&log)), triples(&expected));
    log.close().unwrap();
    assert_eq!(files_ending(dir.path(), ".cleaned"), 0);
    assert_eq!(files_ending(dir.path(), ".swap"), 0);
    // `lmqfs dump-log --verify <partition dir>/*`: cleaned segments and their indexes verify,
    // the metadata files beside them are skipped.
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    let ok = lmqfs::dump::dump_log(&files, true, &mut out).unwrap();
    assert!(ok, "{}", String::from_utf8_lossy(&out));
}

/// `read_record` keeps the batch it last read (`cat <offset>` asks three times); a record
/// compaction removed must not come back from it.
#[test]
fn a_record_read_just_before_compaction_is_gone_after_it() {
    let dir = tempdir().unwrap();
    let log = open(dir.path(), compacted(1024));
    write_rounds(&log, 10, 5);
    roll_all(&log);
    let first = log
        .read_record(0)
        .unwrap()
        .expect("offset 0 before compaction");
    assert_eq!(log.read_record(0).unwrap(), Some(first), "read twice");
    log.compact(now_ms(), true, &cleaner()).unwrap();
    assert_eq!(log.read_record(0).unwrap(), None, "removed by compaction");
}

#[test]
fn cleaning_with_deletes_keeps_only_the_tombstone() {
    let dir = tempdir().unwrap();
    let log = open(dir.path(), compacted(1024));
    write_rounds(&log, 6, 3);
    log.append(&[tombstone("k1"), tombstone("k4")]).unwrap();
    write_rounds(&log, 2, 1); // k0 and k1 again: k1 comes back to life
    roll_all(&log);
    let before = all_records(&log);
    log.compact(now_ms(), true, &cleaner()).unwrap();
    let after = all_records(&log);
    assert_compacted_from(&before, &after, false);
    let latest = latest_by_key(&after);
    assert_eq!(latest[&b"k4".to_vec()].1, None, "the tombstone stays");
    assert_eq!(latest[&b"k1".to_vec()].1, Some(b"k1@0".to_vec()));
    let k4: Vec<_> = after
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"k4"))
        .collect();
    assert_eq!(k4.len(), 1, "no value of a deleted key survives");
    assert_eq!(log.latest_for_key(b"k4").unwrap(), None);
    let live = log.live_keys().unwrap();
    assert_eq!(
        live,
        vec![
            b"k0".to_vec(),
            b"k1".to_vec(),
            b"k2".to_vec(),
            b"k3".to_vec(),
            b"k5".to_vec()
        ]
    );
}

#[test]
fn tombstones_are_dropped_only_after_delete_retention_ms() {
    let dir = tempdir().unwrap();
    let config = LogConfig {
        delete_retention_ms: 10_000,
        ..compacted(1 << 20)
    };
    let log = open(dir.path(), config);
    log.append(&[keyed("a", "1"), keyed("b", "1")]).unwrap();
    log.append(&[tombstone("a")]).unwrap();
    roll_all(&log);
    let t0 = now_ms();
    let first = log.compact(t0, true, &cleaner()).unwrap();
    assert_eq!((first.records_removed, first.tombstones_removed), (1, 0));
    let tombstone_batch = log
        .read_batches(2, 1 << 20)
        .unwrap()
        .into_iter()
        .find(|b| b.header.last_offset() >= 2)
        .unwrap();
    assert_eq!(
        tombstone_batch.header.delete_horizon_ms(),
        Some(t0 + 10_000),
        "the first cleaning stamps the delete horizon"
    );
    assert_eq!(
        decode_batch(&tombstone_batch.bytes).unwrap().records[0].value,
        None
    );

    // Before the horizon the tombstone stays, even when forced.
    let early = log.compact(t0 + 9_999, true, &cleaner()).unwrap();
    assert_eq!(early.tombstones_removed, 0);
    assert_eq!(latest_by_key(&all_records(&log))[&b"a".to_vec()].1, None);
    assert_eq!(log.read_record(2).unwrap().map(|r| r.value), Some(None));

    // After it, even an unforced run (nothing dirty) drops it: the horizon makes it due.
    let late = log.compact(t0 + 10_000, false, &cleaner()).unwrap();
    assert_eq!(late.skipped, None, "{late}");
    assert_eq!(late.tombstones_removed, 1);
    let after = all_records(&log);
    assert_eq!(
        triples(&after),
        vec![(1, Some(b"b".to_vec()), Some(b"1".to_vec()))]
    );
    assert_eq!(log.read_record(2).unwrap(), None);
}

#[test]
fn a_small_offset_map_cleans_part_of_the_dirty_section_per_run() {
    let dir = tempdir().unwrap();
    let log = open(dir.path(), compacted(1 << 20));
    // 40 keys twice in one segment; the map holds 10 keys.
    write_rounds(&log, 40, 2);
    roll_all(&log);
    let before = all_records(&log);
    let small = CleanerConfig {
        dedupe_buffer_bytes: 24 * 12,
    };
    let end = log.log_end_offset();
    let first = log.compact(now_ms(), true, &small).unwrap();
    assert!(
        first.first_dirty_offset > 0 && first.first_dirty_offset < end,
        "a partial run stops inside the dirty section: {first:?}"
    );
    assert_compacted_from(&before, &all_records(&log), false);
    let mut runs = 1;
    while log.stats().first_dirty_offset < end {
        log.compact(now_ms(), true, &small).unwrap();
        assert_compacted_from(&before, &all_records(&log), false);
        runs += 1;
        assert!(runs < 20, "the cleaner makes progress");
    }
    assert!(runs >= 4, "40 keys through a 10-key map: {runs} runs");
    let after = all_records(&log);
    assert_eq!(after.len(), 40, "one record per key in the end");
}

#[test]
fn segments_with_sparse_offsets_are_grouped_and_still_indexed() {
    let dir = tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 0, // an index entry per batch: lookups must use the new index
        ..compacted(2048)
    };
    let log = open(dir.path(), config.clone());
    write_rounds(&log, 20, 10);
    roll_all(&log);
    let segments_before = log.segment_count();
    log.compact(now_ms(), true, &cleaner()).unwrap();
    // The second run groups the segments the first one shrank.
    log.compact(now_ms(), true, &cleaner()).unwrap();
    let after = all_records(&log);
    assert_eq!(after.len(), 20);
    assert!(
        log.segment_count() < segments_before / 2,
        "{} segments became {}",
        segments_before,
        log.segment_count()
    );
    // Offsets are sparse now: each kept offset reads back by index lookup, and an offset in
    // a gap reads as the next record.
    for r in &after {
        assert_eq!(log.read_record(r.offset).unwrap().as_ref(), Some(r));
        if r.offset > 0 && !after.iter().any(|o| o.offset == r.offset - 1) {
            assert_eq!(log.read_record(r.offset - 1).unwrap(), None);
            let from_gap = log.read(r.offset - 1, 1).unwrap();
            assert_eq!(from_gap.first().map(|x| x.offset), Some(r.offset));
        }
    }
    // Sparse segments group again with new data.
    write_rounds(&log, 20, 3);
    roll_all(&log);
    let before = all_records(&log);
    log.compact(now_ms(), true, &cleaner()).unwrap();
    assert_compacted_from(&before, &all_records(&log), false);
    assert_eq!(all_records(&log).len(), 20);
    log.close().unwrap();
    let log = open(dir.path(), config);
    assert_eq!(all_records(&log).len(), 20);
    for segment in log.segments() {
        assert!(segment.size_bytes <= 2048 || segment.is_active);
    }
}

#[test]
fn cleaning_goes_on_beyond_missing_offsets() {
    let dir = tempdir().unwrap();
    let log = open(dir.path(), compacted(1024));
    for (key, value) in [("a", "1"), ("b", "1"), ("a", "2"), ("c", "1"), ("a", "3")] {
        log.append(&[keyed(key, value)]).unwrap();
    }
    roll_all(&log);
    log.compact(now_ms(), true, &cleaner()).unwrap();
    let kept: Vec<i64> = all_records(&log).iter().map(|r| r.offset).collect();
    assert_eq!(kept, vec![1, 3, 4]);
    // The log start moves into a gap left by compaction.
    let gap = 2;
    log.delete_records(gap).unwrap();
    write_rounds(&log, 7, 2);
    roll_all(&log);
    let before = all_records(&log);
    assert!(before.iter().all(|r| r.offset >= gap));
    log.compact(now_ms(), true, &cleaner()).unwrap();
    let after = all_records(&log);
    assert_compacted_from(&before, &after, false);
    assert_eq!(after.len(), 9, "a, c and k0..k6: {:?}", triples(&after));
    assert!(after.iter().all(|r| r.offset >= gap));
}

#[test]
fn compressed_batches_are_recompressed_with_their_codec() {
    for codec in Compression::ALL {
        let dir = tempdir().unwrap();
        let config = LogConfig {
            compression_type: codec,
            ..compacted(1 << 20)
        };
        let log = open(dir.path(), config);
        for round in 0..4 {
            let batch: Vec<NewRecord> = (0..10)
                .map(|k| keyed(&format!("k{}", (k + round) % 12), &format!("v{round}-{k}")))
                .collect();
            log.append(&batch).unwrap();
        }
        roll_all(&log);
        let before = all_records(&log);
        let outcome = log.compact(now_ms(), true, &cleaner()).unwrap();
        assert!(outcome.records_removed > 0, "{codec:?}");
        let after = all_records(&log);
        assert_compacted_from(&before, &after, false);
        assert_eq!(after.len(), 12, "{codec:?}");
        let batches = log.read_batches(0, 1 << 20).unwrap();
        assert!(
            batches
                .iter()
                .any(|b| b.header.records_count < 10 && b.header.records_count > 0),
            "{codec:?}: some batch was re-encoded with fewer records"
        );
        for b in &batches {
            assert_eq!(b.header.compression().unwrap(), codec);
        }
    }
}

#[test]
fn the_dirty_ratio_decides_an_unforced_run() {
    let dir = tempdir().unwrap();
    let config = LogConfig {
        min_cleanable_dirty_ratio: 0.5,
        ..compacted(1024)
    };
    let log = open(dir.path(), config);
    write_rounds(&log, 20, 3);
    roll_all(&log);
    // Nothing clean yet: the ratio is 1.
    let first = log.compact(now_ms(), false, &cleaner()).unwrap();
    assert_eq!(first.skipped, None);
    assert!((first.dirty_ratio - 1.0).abs() < 1e-9);
    // A little dirt over a clean log: below the ratio, skipped.
    log.append(&[keyed("k0", "x")]).unwrap();
    roll_all(&log);
    let second = log.compact(now_ms(), false, &cleaner()).unwrap();
    let reason = second.skipped.clone().expect("skipped");
    assert!(reason.contains("dirty ratio"), "{reason}");
    assert!(second.dirty_ratio < 0.5);
    // Much more dirt: cleaned.
    write_rounds(&log, 20, 3);
    roll_all(&log);
    let third = log.compact(now_ms(), false, &cleaner()).unwrap();
    assert_eq!(third.skipped, None, "{third}");
    assert!(third.dirty_ratio > 0.5);
    assert_eq!(all_records(&log).len(), 20);
}

#[test]
fn records_within_min_compaction_lag_are_left_alone() {
    let dir = tempdir().unwrap();
    let config = LogConfig {
        min_compaction_lag_ms: 60_000,
        ..compacted(1 << 20)
    };
    let log = open(dir.path(), config);
    let now = now_ms();
    let at = |key: &str, value: &str, ts: i64| NewRecord {
        timestamp: Some(ts),
        ..keyed(key, value)
    };
    // An old segment, then a recent one.
    log.append(&[at("a", "1", now - 600_000), at("a", "2", now - 600_000)])
        .unwrap();
    roll_all(&log);
    log.append(&[at("a", "3", now), at("b", "1", now)]).unwrap();
    roll_all(&log);
    let outcome = log.compact(now, true, &cleaner()).unwrap();
    let after = all_records(&log);
    assert_eq!(
        triples(&after)
            .into_iter()
            .map(|(o, _, _)| o)
            .collect::<Vec<_>>(),
        vec![1, 2, 3],
        "offset 0 is superseded within the old segment; the recent segment is untouched: {outcome}"
    );
    // Once the lag has passed, the recent segment is cleanable too.
    log.compact(now + 120_000, true, &cleaner()).unwrap();
    let after = all_records(&log);
    assert_eq!(
        triples(&after),
        vec![
            (2, Some(b"a".to_vec()), Some(b"3".to_vec())),
            (3, Some(b"b".to_vec()), Some(b"1".to_vec()))
        ]
    );
}

#[test]
fn compaction_refuses_a_delete_only_log_and_keyless_appends_are_refused_when_compacted() {
    let dir = tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    log.append(&[NewRecord::value("x")]).unwrap();
    assert!(matches!(
        log.compact(now_ms(), true, &cleaner()),
        Err(EngineError::InvalidArgument(_))
    ));
    let dir = tempdir().unwrap();
    let log = open(dir.path(), compacted(1 << 20));
    let end = log.log_end_offset();
    assert!(matches!(
        log.append(&[keyed("a", "1"), NewRecord::value("no key")]),
        Err(EngineError::InvalidArgument(_))
    ));
    assert_eq!(
        log.log_end_offset(),
        end,
        "nothing of the refused append was written"
    );
}

/// The same writes in `dir`: three closed segments that clean as one group, plus an active one.
fn swap_fixture(dir: &Path) -> Log {
    let config = LogConfig {
        file_delete_delay_ms: 60_000,
        ..compacted(1 << 20)
    };
    let log = open(dir, config);
    for round in 0..3 {
        write_rounds(&log, 8, 2);
        log.append(&[tombstone(&format!("k{round}"))]).unwrap();
        roll_all(&log);
    }
    log.append(&[keyed("k7", "active")]).unwrap();
    log
}

fn reopen(dir: &Path) -> Log {
    open(
        dir,
        LogConfig {
            file_delete_delay_ms: 60_000,
            ..compacted(1 << 20)
        },
    )
}

#[test]
fn a_crash_at_every_swap_step_leaves_the_old_or_the_new_log() {
    let now = now_ms();
    let reference = tempdir().unwrap();
    let (old, new) = {
        let log = swap_fixture(reference.path());
        let old = triples(&all_records(&log));
        log.compact(now, true, &cleaner()).unwrap();
        (old, triples(&all_records(&log)))
    };
    assert_ne!(old, new);
    for step in SwapStep::ALL {
        let dir = tempdir().unwrap();
        let log = swap_fixture(dir.path());
        assert_eq!(triples(&all_records(&log)), old);
        log.set_swap_crash(Some((step, 0)));
        assert!(log.compact(now, true, &cleaner()).is_err(), "{step:?}");
        drop(log); // the crash: no close, no clean-shutdown marker
        let log = reopen(dir.path());
        let got = triples(&all_records(&log));
        let committed = !matches!(
            step,
            SwapStep::Cleaned | SwapStep::Marker | SwapStep::IndexesSwapped
        );
        assert_eq!(
            got,
            if committed { new.clone() } else { old.clone() },
            "after a crash at {step:?}"
        );
        for leftover in [".cleaned", ".swap", ".deleted", "lmqfs-cleaner-swap"] {
            assert_eq!(
                files_ending(dir.path(), leftover),
                0,
                "{leftover} after a crash at {step:?}"
            );
        }
        // The recovered log compacts to the same result.
        log.compact(now, true, &cleaner()).unwrap();
        assert_eq!(triples(&all_records(&log)), new, "{step:?}");
        log.append(&[keyed("k1", "after")]).unwrap();
        log.close().unwrap();
    }
}

#[test]
fn a_crash_after_the_swap_with_deletes_pending_removes_them_at_startup() {
    let dir = tempdir().unwrap();
    let log = swap_fixture(dir.path());
    log.compact(now_ms(), true, &cleaner()).unwrap();
    let new = triples(&all_records(&log));
    assert!(
        files_ending(dir.path(), ".log.deleted") >= 3,
        "replaced segments wait for file.delete.delay.ms"
    );
    drop(log);
    let log = reopen(dir.path());
    assert_eq!(files_ending(dir.path(), ".deleted"), 0);
    assert_eq!(triples(&all_records(&log)), new);
}

#[test]
fn a_crash_between_groups_keeps_every_key() {
    // Small segments clean in several groups; a crash in the second group's swap leaves the
    // first group new and the rest old, and every key's latest record in place.
    let now = now_ms();
    let dir = tempdir().unwrap();
    let config = LogConfig {
        file_delete_delay_ms: 0,
        ..compacted(1500)
    };
    let log = open(dir.path(), config.clone());
    write_rounds(&log, 12, 6);
    roll_all(&log);
    let before = all_records(&log);
    log.set_swap_crash(Some((SwapStep::Marker, 1)));
    assert!(
        log.compact(now, true, &cleaner()).is_err(),
        "the fixture cleans in more than one group"
    );
    assert!(
        files_ending(dir.path(), ".log.deleted") == 0 && log.stats().view_generation == 1,
        "the first group was swapped in before the crash"
    );
    drop(log);
    let log = open(dir.path(), config);
    assert_compacted_from(&before, &all_records(&log), false);
    log.compact(now, true, &cleaner()).unwrap();
    let after = all_records(&log);
    assert_compacted_from(&before, &after, false);
    assert_eq!(after.len(), 12);
}

#[test]
fn a_log_start_inside_a_batch_does_not_let_compaction_past_the_lag() {
    let dir = tempdir().unwrap();
    let config = LogConfig {
        min_compaction_lag_ms: 60_000,
        ..compacted(1 << 20)
    };
    let log = open(dir.path(), config);
    let now = now_ms();
    let at = |key: &str, value: &str| NewRecord {
        timestamp: Some(now),
        ..keyed(key, value)
    };
    log.append(&[at("x", "0"), at("a", "1"), at("a", "2")])
        .unwrap();
    roll_all(&log);
    log.delete_records(1).unwrap();
    let outcome = log.compact(now, true, &cleaner()).unwrap();
    assert_eq!(outcome.records_removed, 0, "{outcome}");
    assert!(log.read_record(1).unwrap().is_some());
}
