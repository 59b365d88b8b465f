//! One segment on its own, after Kafka's `LogSegmentTest` scenarios: reads before, after and
//! between batches, truncation, timestamp lookups, offset translation, recovery of a clean
//! segment and the next offset after reopening.

use std::path::Path;

use lmqfs::engine::record::{encode_batch, set_base_offset, BatchHeader};
use lmqfs::engine::segment::{LogSegment, SegmentParams};
use lmqfs::engine::{Compression, NewRecord, TimestampType};
use tempfile::TempDir;

/// Index every batch after the first (an entry needs more than this many bytes since the last).
const DENSE: SegmentParams = SegmentParams {
    max_index_bytes: 4096,
    index_interval_bytes: 0,
};

/// No index entries at all for the small segments these tests write: lookups scan from 0.
const SPARSE: SegmentParams = SegmentParams {
    max_index_bytes: 4096,
    index_interval_bytes: 1 << 20,
};

/// One batch at `base_offset` holding a record per timestamp, values naming their offsets.
fn batch_with_timestamps(base_offset: i64, timestamps: &[i64]) -> (Vec<u8>, BatchHeader) {
    let records: Vec<NewRecord> = timestamps
        .iter()
        .enumerate()
        .map(|(i, &ts)| NewRecord {
            key: Some(format!("k{}", base_offset + i as i64).into_bytes()),
            value: Some(value_of(base_offset + i as i64)),
            headers: vec![],
            timestamp: Some(ts),
        })
        .collect();
    let mut bytes =
        encode_batch(0, &records, Compression::None, TimestampType::CreateTime, 0).unwrap();
    set_base_offset(&mut bytes, base_offset);
    let header = BatchHeader::parse(&bytes).unwrap();
    (bytes, header)
}

/// A batch of the offsets `first..=last`, timestamps `1000 + offset`.
fn batch(first: i64, last: i64) -> (Vec<u8>, BatchHeader) {
    let timestamps: Vec<i64> = (first..=last).map(|o| 1000 + o).collect();
    batch_with_timestamps(first, &timestamps)
}

fn value_of(offset: i64) -> Vec<u8> {
    format!("value of offset {offset}").into_bytes()
}

fn append(segment: &mut LogSegment, (bytes, header): &(Vec<u8>, BatchHeader)) {
    segment.append(bytes, std::slice::from_ref(header)).unwrap();
}

fn new_segment(dir: &TempDir, base_offset: i64, params: SegmentParams) -> LogSegment {
    LogSegment::create(dir.path(), base_offset, params).unwrap()
}

/// Base offsets of the batches a read returns.
fn read_bases(segment: &mut LogSegment, offset: i64, max_bytes: usize) -> Vec<i64> {
    segment
        .read(offset, max_bytes)
        .unwrap()
        .iter()
        .map(|(h, _)| h.base_offset)
        .collect()
}

/// Every record offset a whole-segment read returns, with its value checked.
fn all_offsets(segment: &mut LogSegment) -> Vec<i64> {
    let mut offsets = Vec::new();
    for (_, bytes) in segment.read(0, usize::MAX / 2).unwrap() {
        for r in lmqfs::engine::record::decode_batch(&bytes).unwrap().records {
            assert_eq!(r.value, Some(value_of(r.offset)));
            offsets.push(r.offset);
        }
    }
    offsets
}

#[test]
fn read_of_an_empty_segment_returns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = new_segment(&dir, 40, DENSE);
    assert!(segment.is_empty());
    assert!(segment.read(40, 1000).unwrap().is_empty());
    assert!(segment.read(0, 1000).unwrap().is_empty());
    assert!(segment.read(41, 1000).unwrap().is_empty());
    assert_eq!(segment.next_offset().unwrap(), 40);
    assert_eq!(segment.find_offset_by_timestamp(0, 40).unwrap(), None);
}

#[test]
fn read_before_the_first_offset_returns_the_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = new_segment(&dir, 40, DENSE);
    let first = batch(50, 59);
    append(&mut segment, &first);
    append(&mut segment, &batch(60, 64));
    // Below the first batch, even below the base offset: the first batch is what follows.
    for offset in [0, 40, 41, 49] {
        let batches = segment.read(offset, 1).unwrap();
        assert_eq!(batches.len(), 1, "read from {offset}");
        assert_eq!(batches[0].0, first.1);
        assert_eq!(batches[0].1, first.0, "the batch comes back byte for byte");
    }
}

#[test]
fn read_after_the_last_offset_returns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = new_segment(&dir, 40, DENSE);
    append(&mut segment, &batch(50, 59));
    assert_eq!(read_bases(&mut segment, 59, 1), vec![50]);
    for offset in [60, 61, 1000, i64::MAX] {
        assert!(
            segment.read(offset, 1 << 20).unwrap().is_empty(),
            "read from {offset}"
        );
    }
}

#[test]
fn read_from_a_gap_returns_the_batch_after_it() {
    for params in [DENSE, SPARSE] {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = new_segment(&dir, 40, params);
        append(&mut segment, &batch(50, 59));
        append(&mut segment, &batch(70, 79));
        for offset in 60..70 {
            assert_eq!(
                read_bases(&mut segment, offset, 1),
                vec![70],
                "from {offset}"
            );
        }
        // Inside a batch: the whole batch, from its base offset.
        assert_eq!(read_bases(&mut segment, 55, 1), vec![50]);
        assert_eq!(read_bases(&mut segment, 75, 1), vec![70]);
        // A budget covering both returns both.
        assert_eq!(read_bases(&mut segment, 65, 1 << 20), vec![70]);
        assert_eq!(read_bases(&mut segment, 50, 1 << 20), vec![50, 70]);
    }
}

#[test]
fn read_returns_whole_batches_within_the_byte_budget_but_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = new_segment(&dir, 0, DENSE);
    let batches: Vec<_> = (0..10).map(|i| batch(i * 5, i * 5 + 4)).collect();
    for b in &batches {
        append(&mut segment, b);
    }
    let size =
        |from: usize, to: usize| -> usize { batches[from..to].iter().map(|b| b.0.len()).sum() };
    // Smaller than one batch: still that batch.
    assert_eq!(read_bases(&mut segment, 12, 1), vec![10]);
    // Room for exactly three batches, and for three and a half.
    assert_eq!(read_bases(&mut segment, 12, size(2, 5)), vec![10, 15, 20]);
    assert_eq!(
        read_bases(&mut segment, 12, size(2, 5) + size(5, 6) / 2),
        vec![10, 15, 20]
    );
    assert_eq!(
        read_bases(&mut segment, 12, size(2, 6)),
        vec![10, 15, 20, 25]
    );
    // More batches than a read looks ahead at (it then reads the whole budget at once).
    let all: Vec<i64> = (0..10).map(|i| i * 5).collect();
    assert_eq!(read_bases(&mut segment, 0, size(0, 10)), all);
    assert_eq!(read_bases(&mut segment, 0, size(0, 10) - 1), all[..9]);
    assert_eq!(read_bases(&mut segment, 0, size(0, 9) + 1), all[..9]);
}

#[test]
fn truncate_to_the_middle_of_a_batch_removes_it_and_appends_continue() {
    for params in [DENSE, SPARSE] {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = new_segment(&dir, 100, params);
        let batches: Vec<_> = (0..10).map(|i| batch(100 + 3 * i, 102 + 3 * i)).collect();
        for b in &batches {
            append(&mut segment, b);
        }
        let size_before_batch_5: usize = batches[..5].iter().map(|b| b.0.len()).sum();
        // 116 is inside the batch 115..=117: that batch goes too.
        let removed = segment.truncate_to(116).unwrap();
        assert_eq!(
            removed as usize,
            batches[5..].iter().map(|b| b.0.len()).sum::<usize>()
        );
        assert_eq!(segment.size() as usize, size_before_batch_5);
        assert_eq!(segment.next_offset().unwrap(), 115);
        assert!(segment.read(115, 1 << 20).unwrap().is_empty());
        assert_eq!(read_bases(&mut segment, 113, 1), vec![112]);
        assert_eq!(all_offsets(&mut segment), (100..115).collect::<Vec<_>>());
        let file_len = std::fs::metadata(segment.log_path()).unwrap().len();
        assert_eq!(
            file_len as usize, size_before_batch_5,
            "the file is cut too"
        );

        // Appends continue at the new end, and are found through the indexes.
        append(&mut segment, &batch(115, 120));
        append(&mut segment, &batch(121, 121));
        assert_eq!(segment.next_offset().unwrap(), 122);
        assert_eq!(read_bases(&mut segment, 118, 1), vec![115]);
        assert_eq!(read_bases(&mut segment, 121, 1), vec![121]);
        assert_eq!(all_offsets(&mut segment), (100..122).collect::<Vec<_>>());
        assert_eq!(
            segment.find_offset_by_timestamp(1000 + 119, 0).unwrap(),
            Some(119)
        );
        assert_eq!(
            segment.find_offset_by_timestamp(1000 + 122, 0).unwrap(),
            None
        );
    }
}

#[test]
fn truncate_before_the_first_offset_empties_the_segment() {
    for target in [0, 100, 101, 102] {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = new_segment(&dir, 100, DENSE);
        for i in 0..4 {
            append(&mut segment, &batch(100 + 3 * i, 102 + 3 * i));
        }
        segment.truncate_to(target).unwrap();
        assert!(segment.is_empty(), "truncate to {target}");
        assert_eq!(segment.next_offset().unwrap(), 100);
        assert!(segment.read(0, 1 << 20).unwrap().is_empty());
        assert_eq!(segment.largest_timestamp().unwrap(), -1);
        assert_eq!(segment.find_offset_by_timestamp(0, 0).unwrap(), None);
        assert_eq!(std::fs::metadata(segment.log_path()).unwrap().len(), 0);

        append(&mut segment, &batch(100, 104));
        append(&mut segment, &batch(105, 109));
        assert_eq!(segment.next_offset().unwrap(), 110);
        assert_eq!(all_offsets(&mut segment), (100..110).collect::<Vec<_>>());
        assert_eq!(read_bases(&mut segment, 107, 1), vec![105]);
    }
}

#[test]
fn truncate_past_the_end_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = new_segment(&dir, 100, DENSE);
    for i in 0..4 {
        append(&mut segment, &batch(100 + 3 * i, 102 + 3 * i));
    }
    let size = segment.size();
    for target in [112, 113, 1000] {
        assert_eq!(
            segment.truncate_to(target).unwrap(),
            0,
            "truncate to {target}"
        );
        assert_eq!(segment.size(), size);
        assert_eq!(segment.next_offset().unwrap(), 112);
    }
    append(&mut segment, &batch(112, 113));
    assert_eq!(segment.next_offset().unwrap(), 114);
    assert_eq!(all_offsets(&mut segment), (100..114).collect::<Vec<_>>());
}

/// The first record (in offset order) with timestamp >= `target` and offset >= `start`.
fn expected_offset_for_timestamp(records: &[(i64, i64)], target: i64, start: i64) -> Option<i64> {
    records
        .iter()
        .find(|&&(offset, ts)| ts >= target && offset >= start)
        .map(|&(offset, _)| offset)
}

#[test]
fn find_offset_by_timestamp_returns_the_first_record_at_or_after_it() {
    // (base offset, timestamps): increasing, decreasing within a batch, repeated values,
    // a batch whose max is below an earlier one, and a gap in the offsets.
    let layout: Vec<(i64, Vec<i64>)> = vec![
        (10, vec![100, 105, 110]),
        (13, vec![120, 115, 120]),
        (16, vec![130]),
        (17, vec![125, 125, 126]),
        (20, vec![200, 150, 140]),
        (30, vec![200, 200, 210]),
        (33, vec![205]),
        (34, vec![300, 299, 301, 305]),
    ];
    for params in [DENSE, SPARSE] {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = new_segment(&dir, 10, params);
        let mut records = Vec::new();
        for (base, timestamps) in &layout {
            append(&mut segment, &batch_with_timestamps(*base, timestamps));
            records.extend(
                timestamps
                    .iter()
                    .enumerate()
                    .map(|(i, &ts)| (base + i as i64, ts)),
            );
        }
        assert_eq!(segment.largest_timestamp().unwrap(), 305);
        let mut checked_some = 0;
        for target in 90..=310 {
            for start in [0, 10, 14, 18, 25, 33, 37] {
                let want = expected_offset_for_timestamp(&records, target, start);
                let got = segment.find_offset_by_timestamp(target, start).unwrap();
                assert_eq!(got, want, "timestamp {target} from offset {start}");
                checked_some += usize::from(got.is_some());
            }
        }
        assert!(checked_some > 1000);
        // Spot checks a reader would make.
        assert_eq!(segment.find_offset_by_timestamp(120, 0).unwrap(), Some(13));
        assert_eq!(segment.find_offset_by_timestamp(125, 0).unwrap(), Some(16));
        assert_eq!(segment.find_offset_by_timestamp(200, 0).unwrap(), Some(20));
        assert_eq!(segment.find_offset_by_timestamp(200, 21).unwrap(), Some(30));
        assert_eq!(segment.find_offset_by_timestamp(305, 0).unwrap(), Some(37));
        assert_eq!(segment.find_offset_by_timestamp(306, 0).unwrap(), None);
        assert_eq!(segment.find_offset_by_timestamp(i64::MAX, 0).unwrap(), None);
        assert_eq!(
            segment.find_offset_by_timestamp(i64::MIN, 0).unwrap(),
            Some(10)
        );

        // The same answers after the segment is closed and reopened from disk.
        segment.close_active().unwrap();
        segment.flush().unwrap();
        drop(segment);
        let mut reopened = LogSegment::open(dir.path(), 10, params).unwrap();
        assert_eq!(reopened.largest_timestamp().unwrap(), 305);
        for target in 90..=310 {
            assert_eq!(
                reopened.find_offset_by_timestamp(target, 0).unwrap(),
                expected_offset_for_timestamp(&records, target, 0),
                "after reopen, timestamp {target}"
            );
        }
    }
}

#[test]
fn translate_offset_finds_the_batch_holding_an_offset_from_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = new_segment(&dir, 0, DENSE);
    let batches = [batch(0, 4), batch(5, 9), batch(20, 24), batch(25, 25)];
    let mut positions = Vec::new();
    let mut position = 0u32;
    for b in &batches {
        positions.push(position);
        append(&mut segment, b);
        position += b.0.len() as u32;
    }
    let cases = [
        (0, 0, Some(0)),
        (3, 0, Some(0)),
        (5, 0, Some(1)),
        (9, 0, Some(1)),
        (10, 0, Some(2)), // in the gap: the batch after it
        (19, 0, Some(2)),
        (24, 0, Some(2)),
        (25, 0, Some(3)),
        (26, 0, None),
        // Starting further on skips the earlier batches.
        (0, positions[2], Some(2)),
        (25, positions[3], Some(3)),
        (26, positions[3], None),
        (0, segment.size(), None),
    ];
    for (offset, from, want) in cases {
        let got = segment.translate_offset(offset, from).unwrap();
        match want {
            None => assert!(got.is_none(), "offset {offset} from {from}: {got:?}"),
            Some(n) => {
                let location = got.unwrap_or_else(|| panic!("offset {offset} from {from}"));
                assert_eq!(
                    location.position, positions[n],
                    "offset {offset} from {from}"
                );
                assert_eq!(location.header, batches[n].1);
            }
        }
    }
    let found = segment.find_batch(22).unwrap().unwrap();
    assert_eq!(found.position, positions[2]);
}

fn read_file(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn recover_of_a_clean_segment_keeps_everything_and_rebuilds_equal_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let params = SegmentParams {
        max_index_bytes: 4096,
        index_interval_bytes: 200,
    };
    let mut segment = new_segment(&dir, 1000, params);
    let mut offset = 1000;
    let mut expected_batches = 0;
    for i in 0..40 {
        let n = 1 + i % 4;
        let timestamps: Vec<i64> = (0..n).map(|j| 5000 + 7 * offset - 3 * j).collect();
        append(&mut segment, &batch_with_timestamps(offset, &timestamps));
        offset += n;
        expected_batches += 1;
    }
    segment.close_active().unwrap();
    segment.flush().unwrap();
    let size = segment.size();
    let index = read_file(&segment.offset_index_path());
    let time_index = read_file(&segment.time_index_path());
    assert!(index.len() >= 3 * 8, "the test needs several index entries");
    assert!(time_index.len() >= 3 * 12);
    drop(segment);

    let mut reopened = LogSegment::open(dir.path(), 1000, params).unwrap();
    let outcome = reopened.recover().unwrap();
    assert_eq!(outcome.valid_bytes, size);
    assert_eq!(outcome.truncated_bytes, 0);
    assert_eq!(outcome.batches, expected_batches);
    assert_eq!(reopened.size(), size);
    assert_eq!(reopened.next_offset().unwrap(), offset);
    reopened.close_active().unwrap();
    reopened.flush().unwrap();
    assert_eq!(read_file(&reopened.offset_index_path()), index);
    assert_eq!(read_file(&reopened.time_index_path()), time_index);
    assert_eq!(
        std::fs::metadata(reopened.log_path()).unwrap().len(),
        size as u64
    );
    let reads: Vec<i64> = (1000..offset)
        .map(|o| reopened.read(o, 1).unwrap()[0].0.base_offset)
        .collect();
    assert!(reads.iter().zip(1000..).all(|(&base, o)| base <= o));
}

#[test]
fn recover_truncates_at_a_corrupt_batch() {
    // Kafka's recovery-with-corrupt-message scenario: garbage from a random point inside a
    // random batch's header to the end of the file.
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5e9);
    for iteration in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = new_segment(&dir, 0, DENSE);
        let mut positions = Vec::new();
        for i in 0..50 {
            positions.push(segment.size());
            append(&mut segment, &batch(2 * i, 2 * i + 1));
        }
        segment.flush().unwrap();
        drop(segment);
        let victim = rng.random_range(0..50usize);
        let position = positions[victim] as usize + rng.random_range(0..15usize);
        let path = dir.path().join("00000000000000000000.log");
        let mut bytes = read_file(&path);
        rng.fill(&mut bytes[position..]);
        std::fs::write(&path, &bytes).unwrap();

        let mut reopened = LogSegment::open(dir.path(), 0, DENSE).unwrap();
        let outcome = reopened.recover().unwrap();
        assert_eq!(
            outcome.valid_bytes, positions[victim],
            "iteration {iteration}: batch {victim}"
        );
        assert_eq!(outcome.batches, victim as u64);
        assert_eq!(reopened.next_offset().unwrap(), 2 * victim as i64);
        assert_eq!(
            all_offsets(&mut reopened),
            (0..2 * victim as i64).collect::<Vec<_>>()
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            positions[victim] as u64
        );
    }
}

#[test]
fn next_offset_survives_reopen() {
    for params in [DENSE, SPARSE] {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = new_segment(&dir, 40, params);
        for i in 0..20 {
            append(&mut segment, &batch(50 + 4 * i, 52 + 4 * i));
        }
        assert_eq!(segment.next_offset().unwrap(), 129);
        segment.close_active().unwrap();
        segment.flush().unwrap();
        drop(segment);
        let mut reopened = LogSegment::open(dir.path(), 40, params).unwrap();
        assert_eq!(reopened.next_offset().unwrap(), 129);
        assert_eq!(reopened.base_offset(), 40);
        // Reopened as the active segment, it takes appends at that offset.
        reopened.make_active().unwrap();
        append(&mut reopened, &batch(129, 132));
        assert_eq!(reopened.next_offset().unwrap(), 133);
        assert_eq!(read_bases(&mut reopened, 131, 1), vec![129]);
        assert_eq!(read_bases(&mut reopened, 127, 1), vec![126]);
    }
    // An empty segment reopens at its base offset.
    let dir = tempfile::tempdir().unwrap();
    let mut segment = new_segment(&dir, 7, DENSE);
    segment.close_active().unwrap();
    drop(segment);
    let mut reopened = LogSegment::open(dir.path(), 7, DENSE).unwrap();
    assert_eq!(reopened.next_offset().unwrap(), 7);
    assert!(reopened.is_empty());
}

#[test]
fn indexes_missing_at_reopen_are_rebuilt_with_the_true_max_timestamp() {
    let params = SegmentParams {
        max_index_bytes: 4096,
        index_interval_bytes: 200,
    };
    for reopen_as_active in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = new_segment(&dir, 0, params);
        for i in 0..30 {
            append(&mut segment, &batch(2 * i, 2 * i + 1));
        }
        segment.close_active().unwrap();
        segment.flush().unwrap();
        let (index, time_index) = (segment.offset_index_path(), segment.time_index_path());
        drop(segment);
        std::fs::remove_file(&index).unwrap();
        std::fs::remove_file(&time_index).unwrap();

        let mut reopened = LogSegment::open(dir.path(), 0, params).unwrap();
        if reopen_as_active {
            reopened.make_active().unwrap();
        }
        // The first use rebuilds the indexes; the max comes from the whole log, not from
        // the last sparse entry.
        assert_eq!(
            reopened.largest_timestamp().unwrap(),
            1000 + 59,
            "reopened as active: {reopen_as_active}"
        );
        assert!(index.exists() && time_index.exists());
        assert_eq!(
            reopened.find_offset_by_timestamp(1000 + 59, 0).unwrap(),
            Some(59)
        );
        if !reopen_as_active {
            // Rebuilt as a closed segment: a later open trusts the time index's last entry.
            drop(reopened);
            let mut again = LogSegment::open(dir.path(), 0, params).unwrap();
            assert_eq!(again.largest_timestamp().unwrap(), 1000 + 59);
        }
    }
}
