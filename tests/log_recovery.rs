//! Opening a partition log after clean and unclean stops, after Kafka's `LogLoaderTest` and
//! `LogTest` recovery scenarios. A crash is a `Log` dropped without `close`; a power loss also
//! cuts what was not fsynced; corruption is bytes changed in the files between the two.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use lmqfs::engine::checkpoint::{Checkpoint, CHECKPOINT_FILE, CLEAN_SHUTDOWN_FILE};
use lmqfs::engine::record::{BatchHeader, Header};
use lmqfs::engine::{EngineError, Log, LogConfig, NewRecord};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BASE_TIMESTAMP: i64 = 1_600_000_000_000;

/// Small segments and dense indexes, so a few hundred records span several segments and each
/// segment has several index entries.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 400,
        segment_index_bytes: 4096,
        // The records' timestamps are years old: no roll by age.
        segment_ms: i64::MAX,
        ..LogConfig::default()
    }
}

/// Every record is a function of its offset, so any read can be checked on its own.
fn value_of(offset: i64) -> Vec<u8> {
    format!("value-{offset};")
        .repeat(1 + (offset % 5) as usize)
        .into_bytes()
}

fn key_of(offset: i64) -> Vec<u8> {
    format!("key-{}", offset % 13).into_bytes()
}

/// Strictly increasing with the offset, 10 ms apart.
fn timestamp_of(offset: i64) -> i64 {
    BASE_TIMESTAMP + 10 * offset
}

fn record_at(offset: i64) -> NewRecord {
    NewRecord {
        key: Some(key_of(offset)),
        value: Some(value_of(offset)),
        headers: vec![Header {
            key: "offset".into(),
            value: Some(offset.to_string().into_bytes()),
        }],
        timestamp: Some(timestamp_of(offset)),
    }
}

/// Appends one batch of `n` records at the log end.
fn append(log: &Log, n: usize) {
    let first = log.log_end_offset();
    let records: Vec<NewRecord> = (first..first + n as i64).map(record_at).collect();
    let info = log.append(&records).unwrap();
    assert_eq!(info.first_offset, first);
    assert_eq!(info.last_offset, first + n as i64 - 1);
}

/// Appends batches of 1..=6 records until the log end reaches at least `records`.
fn append_records(log: &Log, records: i64, rng: &mut StdRng) {
    while log.log_end_offset() < records {
        append(log, rng.random_range(1..=6));
    }
}

/// Asserts the log holds exactly the offsets `0..end`, each with its key, value, header and
/// timestamp, and that every record is found by its timestamp.
fn assert_holds(log: &Log, end: i64) {
    assert_eq!(log.log_end_offset(), end, "log end offset");
    let mut next = log.log_start_offset();
    assert_eq!(next, 0);
    loop {
        let records = log.read(next, 8192).unwrap();
        let Some(last) = records.last() else { break };
        for r in &records {
            assert_eq!(r.offset, next, "offsets are contiguous");
            assert_eq!(
                r.value.as_deref(),
                Some(&value_of(next)[..]),
                "value of {next}"
            );
            assert_eq!(r.key.as_deref(), Some(&key_of(next)[..]), "key of {next}");
            assert_eq!(r.timestamp, timestamp_of(next), "timestamp of {next}");
            assert_eq!(r.headers[0].value, Some(next.to_string().into_bytes()));
            next += 1;
        }
        assert_eq!(last.offset + 1, next);
    }
    assert_eq!(next, end, "every offset below the log end reads back");
    assert!(log.read(end, 8192).unwrap().is_empty());
    assert_time_lookups(log, end);
}

/// `offset_for_timestamp` for every record's timestamp, just below it, and past the end.
fn assert_time_lookups(log: &Log, end: i64) {
    for offset in 0..end {
        assert_eq!(
            log.offset_for_timestamp(timestamp_of(offset)).unwrap(),
            offset,
            "record at its own timestamp"
        );
        assert_eq!(
            log.offset_for_timestamp(timestamp_of(offset) - 5).unwrap(),
            offset,
            "record just after a timestamp"
        );
    }
    assert_eq!(log.offset_for_timestamp(timestamp_of(end)).unwrap(), end);
}

/// The directory's files with one of `suffixes`, sorted by name.
fn files_with(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            suffixes.iter().any(|s| name.ends_with(s))
        })
        .collect();
    files.sort();
    files
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    files_with(dir, &[".log"])
}

fn base_offset_of(path: &Path) -> i64 {
    let name = path.file_name().unwrap().to_str().unwrap();
    name.split('.').next().unwrap().parse().unwrap()
}

/// `(position, header)` of every batch in a `.log`, framed by the length fields.
fn batches_in(path: &Path) -> Vec<(usize, BatchHeader)> {
    let bytes = std::fs::read(path).unwrap();
    let mut batches = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let header = BatchHeader::parse(&bytes[position..]).unwrap();
        batches.push((position, header));
        position += header.total_size();
    }
    batches
}

/// `lmqfs dump-log --verify` over every segment file of `dir`.
fn assert_dump_verifies(dir: &Path) {
    let files = files_with(dir, &[".log", ".index", ".timeindex"]);
    assert!(!files.is_empty());
    let mut out = Vec::new();
    let ok = lmqfs::dump::dump_log(&files, true, &mut out).unwrap();
    assert!(
        ok,
        "dump-log --verify found problems:\n{}",
        String::from_utf8_lossy(&out)
    );
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn xor_byte(path: &Path, position: usize, mask: u8) {
    assert_ne!(mask, 0);
    let mut bytes = std::fs::read(path).unwrap();
    bytes[position] ^= mask;
    std::fs::write(path, &bytes).unwrap();
}

fn append_to_file(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

/// A position in the middle of a batch's records: covered by its CRC, not by any length field.
fn middle_of_records(position: usize, header: &BatchHeader) -> usize {
    position + 61 + (header.total_size() - 61) / 2
}

/// A log of several segments holding `records` records, dropped without close.
fn crashed_log(dir: &Path, records: i64, rng: &mut StdRng) {
    let log = Log::open(dir, config()).unwrap();
    append_records(&log, records, rng);
    assert!(log.segment_count() >= 3, "the test needs several segments");
    drop(log);
}

/// A log of several segments holding `records` records, closed cleanly.
fn closed_log(dir: &Path, records: i64, rng: &mut StdRng) {
    let log = Log::open(dir, config()).unwrap();
    append_records(&log, records, rng);
    assert!(log.segment_count() >= 3, "the test needs several segments");
    log.close().unwrap();
}

#[test]
fn recovery_truncates_at_a_corrupt_batch_at_a_random_position() {
    let mut rng = StdRng::seed_from_u64(20_240_601);
    for iteration in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let records = rng.random_range(150..300);
        crashed_log(dir.path(), records, &mut rng);
        let written_end = {
            let files = log_files(dir.path());
            let (_, last) = *batches_in(files.last().unwrap()).last().unwrap();
            last.next_offset()
        };

        // Odd iterations lose the checkpoint, so every segment is recovered and the corruption
        // may be in any of them; even ones corrupt the segment at the recovery point.
        let full_recovery = iteration % 2 == 1;
        if full_recovery {
            std::fs::remove_file(dir.path().join(CHECKPOINT_FILE)).unwrap();
        }
        let files = log_files(dir.path());
        let victim_file = if full_recovery {
            files[rng.random_range(0..files.len())].clone()
        } else {
            files.last().unwrap().clone()
        };
        let batches = batches_in(&victim_file);
        let (position, header) = batches[rng.random_range(0..batches.len())];
        let what = if rng.random_bool(0.5) {
            // One byte changed where the format can tell: the length field, or anything from
            // the magic byte on (the CRC covers attributes..end; base offset and leader epoch
            // are outside every check, in Kafka too).
            let at = if rng.random_bool(0.2) {
                position + rng.random_range(8..12)
            } else {
                position + rng.random_range(16..header.total_size())
            };
            xor_byte(&victim_file, at, rng.random_range(1..=255));
            format!("byte {at} flipped")
        } else {
            // Kafka's scenario: garbage from a point in the batch to the end of the file.
            let at = position + rng.random_range(0..header.total_size());
            let mut bytes = std::fs::read(&victim_file).unwrap();
            rng.fill(&mut bytes[at..]);
            std::fs::write(&victim_file, &bytes).unwrap();
            format!("garbage from byte {at}")
        };
        let what = format!(
            "iteration {iteration}: {} {what}, in the batch {}..={} at {position}",
            victim_file.display(),
            header.base_offset,
            header.last_offset()
        );

        let log = Log::open(dir.path(), config()).unwrap();
        assert_holds(&log, header.base_offset);
        assert!(header.base_offset < written_end);
        assert_eq!(file_len(&victim_file), position as u64, "{what}");
        let victim_base = base_offset_of(&victim_file);
        let remaining = log_files(dir.path());
        assert_eq!(
            remaining,
            files
                .iter()
                .filter(|f| base_offset_of(f) <= victim_base)
                .cloned()
                .collect::<Vec<_>>(),
            "{what}: the segments after the corruption are gone"
        );
        // The log goes on from there, and says so again after a clean close.
        append(&log, 3);
        log.close().unwrap();
        assert_dump_verifies(dir.path());
        let log = Log::open(dir.path(), config()).unwrap();
        assert_holds(&log, header.base_offset + 3);
        log.close().unwrap();
    }
}

#[test]
fn recovery_removes_random_bytes_appended_to_the_active_log_and_indexes() {
    let mut rng = StdRng::seed_from_u64(7);
    for iteration in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let records = rng.random_range(100..250);
        crashed_log(dir.path(), records, &mut rng);
        let end = {
            let files = log_files(dir.path());
            let (_, last) = *batches_in(files.last().unwrap()).last().unwrap();
            last.next_offset()
        };
        let active = log_files(dir.path()).pop().unwrap();
        let active_len = file_len(&active);
        for suffix in [".log", ".index", ".timeindex"] {
            let path = active.with_extension(&suffix[1..]);
            let mut garbage = vec![0u8; rng.random_range(1..=1024)];
            rng.fill(&mut garbage[..]);
            append_to_file(&path, &garbage);
        }

        let log = Log::open(dir.path(), config()).unwrap();
        assert_holds(&log, end);
        assert_eq!(file_len(&active), active_len, "iteration {iteration}");
        append(&log, 2);
        log.close().unwrap();
        assert_dump_verifies(dir.path());
        let log = Log::open(dir.path(), config()).unwrap();
        assert_holds(&log, end + 2);
    }
}

fn index_files(dir: &Path) -> Vec<PathBuf> {
    files_with(dir, &[".index", ".timeindex"])
}

fn read_all(paths: &[PathBuf]) -> Vec<Vec<u8>> {
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn deleted_indexes_are_rebuilt(crash: bool) {
    let mut rng = StdRng::seed_from_u64(11);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    append_records(&log, 250, &mut rng);
    let end = log.log_end_offset();
    log.close().unwrap();
    let indexes = index_files(dir.path());
    let original = read_all(&indexes);
    assert_eq!(indexes.len(), 2 * log_files(dir.path()).len());

    if crash {
        // Reopen and crash, so the next open recovers.
        let log = Log::open(dir.path(), config()).unwrap();
        drop(log);
        assert!(!dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
    }
    for path in &indexes {
        std::fs::remove_file(path).unwrap();
    }

    let log = Log::open(dir.path(), config()).unwrap();
    // Time lookups first: they are what opens (and rebuilds) the missing indexes.
    assert_time_lookups(&log, end);
    assert_holds(&log, end);
    for path in &indexes {
        assert!(path.exists(), "{} is rebuilt once used", path.display());
    }
    log.close().unwrap();
    assert_dump_verifies(dir.path());
    assert_eq!(
        read_all(&indexes),
        original,
        "the rebuilt indexes are the ones the log wrote"
    );
    // And they serve a later clean open.
    let log = Log::open(dir.path(), config()).unwrap();
    assert_holds(&log, end);
    log.close().unwrap();
}

#[test]
fn deleted_indexes_are_rebuilt_after_a_clean_close() {
    deleted_indexes_are_rebuilt(false);
}

#[test]
fn deleted_indexes_are_rebuilt_after_a_crash() {
    deleted_indexes_are_rebuilt(true);
}

/// Overwrites entry `n` of an index file with `bytes`.
fn write_entry(path: &Path, n: usize, bytes: &[u8]) {
    let mut content = std::fs::read(path).unwrap();
    content[n * bytes.len()..(n + 1) * bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, &content).unwrap();
}

fn offset_entry(relative_offset: u32, position: u32) -> [u8; 8] {
    let mut e = [0u8; 8];
    e[..4].copy_from_slice(&relative_offset.to_be_bytes());
    e[4..].copy_from_slice(&position.to_be_bytes());
    e
}

fn time_entry(timestamp: i64, relative_offset: u32) -> [u8; 12] {
    let mut e = [0u8; 12];
    e[..8].copy_from_slice(&timestamp.to_be_bytes());
    e[8..].copy_from_slice(&relative_offset.to_be_bytes());
    e
}

/// Damages the indexes of the first three segments in three ways: decreasing offset entries,
/// a last entry pointing past the end of the `.log`, decreasing timestamps.
fn corrupt_indexes(dir: &Path) {
    let logs = log_files(dir);
    assert!(logs.len() >= 4);
    let index = |log: &PathBuf| log.with_extension("index");
    let time_index = |log: &PathBuf| log.with_extension("timeindex");
    for log in &logs[..3] {
        assert!(
            file_len(&index(log)) >= 16,
            "{} has 2 entries",
            log.display()
        );
        assert!(file_len(&time_index(log)) >= 24);
    }
    write_entry(&index(&logs[0]), 0, &offset_entry(40, 900));
    write_entry(&index(&logs[0]), 1, &offset_entry(3, 100));
    // The last entry keeps its offset but points past the end of the `.log`.
    let content = std::fs::read(index(&logs[1])).unwrap();
    let last = content.len() / 8 - 1;
    let relative_offset = u32::from_be_bytes(content[last * 8..last * 8 + 4].try_into().unwrap());
    let past_end = file_len(&logs[1]) as u32 + 100;
    write_entry(
        &index(&logs[1]),
        last,
        &offset_entry(relative_offset, past_end),
    );
    write_entry(&time_index(&logs[2]), 0, &time_entry(BASE_TIMESTAMP * 2, 1));
    write_entry(&time_index(&logs[2]), 1, &time_entry(BASE_TIMESTAMP, 2));
}

#[test]
fn corrupt_indexes_are_rebuilt_after_a_clean_close() {
    let mut rng = StdRng::seed_from_u64(12);
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path(), 300, &mut rng);
    let end = batches_in(log_files(dir.path()).last().unwrap())
        .last()
        .unwrap()
        .1
        .next_offset();
    corrupt_indexes(dir.path());

    let log = Log::open(dir.path(), config()).unwrap();
    // Time lookups first: they are what opens (and rebuilds) the damaged indexes.
    assert_time_lookups(&log, end);
    assert_holds(&log, end);
    log.close().unwrap();
    assert_dump_verifies(dir.path());
    let log = Log::open(dir.path(), config()).unwrap();
    assert_holds(&log, end);
}

#[test]
fn corrupt_indexes_are_rebuilt_after_a_crash() {
    let mut rng = StdRng::seed_from_u64(13);
    let dir = tempfile::tempdir().unwrap();
    crashed_log(dir.path(), 300, &mut rng);
    corrupt_indexes(dir.path());
    // The active segment's index too: it is recovered rather than checked lazily.
    let active = log_files(dir.path()).pop().unwrap();
    write_entry(&active.with_extension("index"), 0, &offset_entry(9, 50_000));

    let log = Log::open(dir.path(), config()).unwrap();
    let end = log.log_end_offset();
    assert!(end >= 300);
    assert_time_lookups(&log, end);
    assert_holds(&log, end);
    log.close().unwrap();
    assert_dump_verifies(dir.path());
    let log = Log::open(dir.path(), config()).unwrap();
    assert_holds(&log, end);
}

#[test]
fn an_index_without_its_log_is_removed_at_open() {
    let mut rng = StdRng::seed_from_u64(14);
    for crash in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        if crash {
            crashed_log(dir.path(), 200, &mut rng);
        } else {
            closed_log(dir.path(), 200, &mut rng);
        }
        let end = batches_in(log_files(dir.path()).last().unwrap())
            .last()
            .unwrap()
            .1
            .next_offset();
        let orphans = [
            dir.path().join("00000000000000099999.index"),
            dir.path().join("00000000000000099999.timeindex"),
            dir.path().join("00000000000000088888.index"),
        ];
        for orphan in &orphans {
            std::fs::write(orphan, offset_entry(1, 1)).unwrap();
        }
        let log = Log::open(dir.path(), config()).unwrap();
        for orphan in &orphans {
            assert!(!orphan.exists(), "{} is removed", orphan.display());
        }
        assert_holds(&log, end);
        log.close().unwrap();
        assert_dump_verifies(dir.path());
    }
}

#[test]
fn clean_shutdown_marker_skips_recovery() {
    let mut rng = StdRng::seed_from_u64(15);
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path(), 300, &mut rng);
    assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
    let files = log_files(dir.path());
    let lengths: Vec<u64> = files.iter().map(|f| file_len(f)).collect();
    // A byte inside the records of a middle batch of a closed segment and of the last segment:
    // a scan would truncate there.
    let mut damaged = Vec::new();
    for file in [&files[1], files.last().unwrap()] {
        let batches = batches_in(file);
        let (position, header) = batches[batches.len() / 2];
        xor_byte(file, middle_of_records(position, &header), 0x40);
        damaged.push(header);
    }
    let end = batches_in(files.last().unwrap())
        .last()
        .unwrap()
        .1
        .next_offset();

    let log = Log::open(dir.path(), config()).unwrap();
    assert!(
        !dir.path().join(CLEAN_SHUTDOWN_FILE).exists(),
        "the marker is consumed at open"
    );
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.recovery_point(), end);
    assert_eq!(
        files.iter().map(|f| file_len(f)).collect::<Vec<_>>(),
        lengths,
        "nothing was truncated: nothing was scanned"
    );
    // The damage is still caught where it is read: the CRC is checked on every read.
    for header in &damaged {
        match log.read_record(header.base_offset) {
            Err(EngineError::Corrupt { .. }) => {}
            other => panic!("read of a damaged batch: {other:?}"),
        }
    }
    assert_eq!(
        log.read_record(damaged[0].base_offset - 1)
            .unwrap()
            .unwrap()
            .value,
        Some(value_of(damaged[0].base_offset - 1))
    );
    drop(log);

    // The same damage after a crash: the segment at the recovery point is scanned and cut at
    // the damaged batch. (The closed segment, below the recovery point, is trusted.)
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_end_offset(), damaged[1].base_offset);
    let last = files.last().unwrap();
    assert!(file_len(last) < *lengths.last().unwrap());
    assert_eq!(file_len(&files[1]), lengths[1]);
}

#[test]
fn crash_right_after_a_roll_leaves_an_empty_active_segment_that_takes_appends() {
    let mut rng = StdRng::seed_from_u64(16);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    append_records(&log, 100, &mut rng);
    let roll_point = log.log_end_offset();
    log.roll().unwrap();
    let segments = log.segment_count();
    drop(log);
    let empty = dir.path().join(format!("{roll_point:020}.log"));
    assert_eq!(file_len(&empty), 0);

    let log = Log::open(dir.path(), config()).unwrap();
    assert_holds(&log, roll_point);
    assert_eq!(log.segment_count(), segments);
    let active = log.segments().pop().unwrap();
    assert_eq!(active.base_offset, roll_point);
    assert!(active.is_active);
    append(&log, 4);
    assert_eq!(file_len(&empty) as usize, {
        let batches = batches_in(&empty);
        assert_eq!(batches.len(), 1, "the empty segment took the append");
        batches[0].1.total_size()
    });
    assert_holds(&log, roll_point + 4);
    log.close().unwrap();
    assert_dump_verifies(dir.path());
}

#[test]
fn crash_after_a_roll_whose_checkpoint_was_not_written_recovers_every_segment() {
    let mut rng = StdRng::seed_from_u64(17);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    append_records(&log, 100, &mut rng);
    let roll_point = log.log_end_offset();
    log.roll().unwrap();
    drop(log);
    // As if the crash came before the new recovery point was written: nothing is trusted.
    Checkpoint::default().write(dir.path()).unwrap();

    let log = Log::open(dir.path(), config()).unwrap();
    assert_holds(&log, roll_point);
    assert_eq!(log.segments().pop().unwrap().base_offset, roll_point);
    assert_eq!(log.recovery_point(), roll_point);
    append(&log, 2);
    assert_holds(&log, roll_point + 2);
    log.close().unwrap();
    assert_dump_verifies(dir.path());
}

#[test]
fn crash_after_a_roll_over_unflushed_data_drops_the_empty_segment_past_the_torn_tail() {
    let mut rng = StdRng::seed_from_u64(18);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    append_records(&log, 100, &mut rng);
    let roll_point = log.log_end_offset();
    log.roll().unwrap();
    drop(log);
    // A power loss before the rolled segment reached the disk: its last batch is torn, and
    // the recovery point never moved past the start of the log.
    Checkpoint::default().write(dir.path()).unwrap();
    let files = log_files(dir.path());
    let rolled = &files[files.len() - 2];
    let (position, last) = *batches_in(rolled).last().unwrap();
    assert_eq!(last.next_offset(), roll_point);
    let torn = position as u64 + last.total_size() as u64 / 2;
    OpenOptions::new()
        .write(true)
        .open(rolled)
        .unwrap()
        .set_len(torn)
        .unwrap();

    let log = Log::open(dir.path(), config()).unwrap();
    assert_holds(&log, last.base_offset);
    assert!(
        !files.last().unwrap().exists(),
        "the segment past the new log end is gone"
    );
    assert_eq!(log.segments().pop().unwrap().log_path, *rolled);
    append(&log, 3);
    assert_holds(&log, last.base_offset + 3);
    log.close().unwrap();
    assert_dump_verifies(dir.path());
}

#[test]
fn flushed_data_survives_a_power_loss() {
    let mut rng = StdRng::seed_from_u64(19);
    for iteration in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 1 << 20,
            ..config()
        };
        let log = Log::open(dir.path(), config.clone()).unwrap();
        append_records(&log, rng.random_range(20..80), &mut rng);
        log.flush().unwrap();
        let flushed_end = log.log_end_offset();
        assert_eq!(log.recovery_point(), flushed_end);
        let path = log_files(dir.path()).pop().unwrap();
        let flushed_len = file_len(&path);
        append_records(&log, flushed_end + rng.random_range(1..60), &mut rng);
        let written_end = log.log_end_offset();
        drop(log);
        // Power loss: any part of what was not fsynced may be lost; the last iteration loses
        // all of it.
        let len = file_len(&path);
        let keep = if iteration == 9 {
            flushed_len
        } else {
            rng.random_range(flushed_len..len)
        };
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(keep)
            .unwrap();

        let log = Log::open(dir.path(), config.clone()).unwrap();
        let end = log.log_end_offset();
        assert!(
            (flushed_end..written_end).contains(&end),
            "iteration {iteration}: end {end}, flushed {flushed_end}, written {written_end}"
        );
        if iteration == 9 {
            assert_eq!(end, flushed_end);
        }
        assert_holds(&log, end);
        assert_eq!(log.recovery_point(), end, "recovered data is fsynced");
        log.close().unwrap();
        assert_dump_verifies(dir.path());
    }
}

#[test]
fn stray_temporary_files_are_removed_at_open() {
    let mut rng = StdRng::seed_from_u64(20);
    for crash in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        if crash {
            crashed_log(dir.path(), 150, &mut rng);
        } else {
            closed_log(dir.path(), 150, &mut rng);
        }
        let end = batches_in(log_files(dir.path()).last().unwrap())
            .last()
            .unwrap()
            .1
            .next_offset();
        let strays = [
            "00000000000000000000.log.cleaned",
            "00000000000000000000.index.cleaned",
            "00000000000000000000.log.deleted",
            "00000000000000000000.timeindex.deleted",
            "00000000000000000007.log.tmp",
            "lmqfs-checkpoint.tmp",
            "anything.tmp",
        ]
        .map(|name| dir.path().join(name));
        for stray in &strays {
            std::fs::write(stray, b"leftover bytes").unwrap();
        }
        let live = files_with(dir.path(), &[".log", ".index", ".timeindex"]);

        let log = Log::open(dir.path(), config()).unwrap();
        for stray in &strays {
            assert!(!stray.exists(), "{} is removed", stray.display());
        }
        for file in &live {
            assert!(file.exists(), "{} is kept", file.display());
        }
        assert_holds(&log, end);
    }
}

#[test]
fn flush_checkpoints_the_recovery_point_and_a_crash_trusts_what_is_below_it() {
    let mut rng = StdRng::seed_from_u64(21);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    append_records(&log, 250, &mut rng);
    log.flush().unwrap();
    let end = log.log_end_offset();
    assert_eq!(log.recovery_point(), end);
    assert_eq!(
        Checkpoint::read(dir.path()).unwrap(),
        Checkpoint {
            recovery_point: end,
            log_start_offset: 0
        }
    );
    drop(log);

    // Damage a segment wholly below the recovery point: a crash recovery does not scan it
    // (Kafka trusts fsynced segments), so it is neither truncated nor are later ones dropped.
    let files = log_files(dir.path());
    let lengths: Vec<u64> = files.iter().map(|f| file_len(f)).collect();
    let batches = batches_in(&files[0]);
    let (position, header) = batches[batches.len() / 2];
    xor_byte(&files[0], middle_of_records(position, &header), 0x01);

    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.recovery_point(), end);
    assert_eq!(
        files.iter().map(|f| file_len(f)).collect::<Vec<_>>(),
        lengths
    );
    assert!(matches!(
        log.read_record(header.base_offset),
        Err(EngineError::Corrupt { .. })
    ));
    let after = header.next_offset();
    assert_eq!(
        log.read_record(after).unwrap().unwrap().value,
        Some(value_of(after))
    );
    assert_eq!(
        log.read(end - 1, 1).unwrap()[0].value,
        Some(value_of(end - 1))
    );
}

#[test]
fn a_garbage_checkpoint_still_opens_with_a_full_recovery() {
    let mut rng = StdRng::seed_from_u64(22);
    let dir = tempfile::tempdir().unwrap();
    crashed_log(dir.path(), 250, &mut rng);
    let files = log_files(dir.path());
    let end = batches_in(files.last().unwrap())
        .last()
        .unwrap()
        .1
        .next_offset();
    std::fs::write(
        dir.path().join(CHECKPOINT_FILE),
        b"\x00\xffnot=a checkpoint\n",
    )
    .unwrap();
    // Damage in the first segment, below any recovery point the log had: only a full
    // recovery finds it.
    let batches = batches_in(&files[0]);
    let (position, header) = batches[batches.len() / 2];
    xor_byte(&files[0], middle_of_records(position, &header), 0x10);

    let log = Log::open(dir.path(), config()).unwrap();
    assert!(header.base_offset < end);
    assert_holds(&log, header.base_offset);
    assert_eq!(log_files(dir.path()), vec![files[0].clone()]);
    assert_eq!(
        Checkpoint::read(dir.path()).unwrap().recovery_point,
        header.base_offset,
        "the checkpoint is rewritten"
    );
    log.close().unwrap();
    assert_dump_verifies(dir.path());

    // After a clean close a garbage checkpoint costs nothing either.
    std::fs::write(dir.path().join(CHECKPOINT_FILE), b"recovery_point=oops\n").unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert_holds(&log, header.base_offset);
}
