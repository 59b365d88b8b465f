//! Power loss through the engine's I/O seam (`engine::io::FaultFs`), the LazyFS method: a
//! `Log` is dropped without closing (the process died) and everything written since each
//! file's last fsync is thrown away (the machine lost power). After reopening, every record
//! whose append and flush returned is there, and what is there is a valid prefix of what was
//! appended: each offset holds the record appended at it, with no gap and nothing extra.

use std::path::Path;
use std::sync::OnceLock;

use lmqfs::engine::io::{set_file_system, FaultFs};
use lmqfs::engine::{Log, LogConfig, NewRecord};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The process's file system: one `FaultFs` for every test of this binary (each acts only on
/// its own directories).
fn fault_fs() -> &'static FaultFs {
    static FS: OnceLock<FaultFs> = OnceLock::new();
    FS.get_or_init(|| {
        let fs = FaultFs::new();
        assert!(
            set_file_system(std::sync::Arc::new(fs.share())),
            "the fault-injecting file system must be installed before any file operation"
        );
        fs
    })
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        segment_index_bytes: 4096,
        segment_ms: i64::MAX,
        ..LogConfig::default()
    }
}

fn value_of(offset: i64) -> Vec<u8> {
    format!("record {offset} ")
        .repeat(1 + (offset % 7) as usize)
        .into_bytes()
}

fn record_at(offset: i64) -> NewRecord {
    NewRecord {
        key: Some(format!("k{}", offset % 11).into_bytes()),
        value: Some(value_of(offset)),
        headers: vec![],
        timestamp: Some(1_700_000_000_000 + offset),
    }
}

/// Appends one batch of `n` records at the log end.
fn append(log: &Log, n: usize) {
    let first = log.log_end_offset();
    let records: Vec<NewRecord> = (first..first + n as i64).map(record_at).collect();
    log.append(&records).unwrap();
}

/// Asserts the log holds exactly the records `0..end`, each the one appended at its offset.
fn assert_valid_prefix(log: &Log, end: i64, context: &str) {
    assert_eq!(log.log_end_offset(), end, "{context}: log end");
    let mut next = 0;
    while next < end {
        let records = log
            .read(next, 64 * 1024)
            .unwrap_or_else(|e| panic!("{context}: read at {next}: {e}"));
        assert!(!records.is_empty(), "{context}: nothing at {next}");
        for r in records {
            assert_eq!(r.offset, next, "{context}: gap");
            assert_eq!(r.value.as_deref(), Some(&value_of(next)[..]), "{context}");
            next += 1;
        }
    }
}

fn open(dir: &Path) -> Log {
    Log::open(dir, config()).unwrap()
}

#[test]
fn every_flushed_record_survives_a_power_cut_and_the_rest_is_a_valid_prefix() {
    let fs = fault_fs();
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    let mut lost_total = 0i64;
    let mut rounds_with_loss = 0;
    let mut cuts = 0;
    for round in 0..25 {
        let dir = tempfile::tempdir().unwrap();
        fs.watch(dir.path());
        let mut flushed = 0i64;
        let mut appended = 0i64;
        // Several power cuts on the same directory, each reopened and appended to again.
        for cut in 0..5 {
            let log = open(dir.path());
            let context = format!("round {round}, cut {cut}");
            assert!(
                log.log_end_offset() >= flushed && log.log_end_offset() <= appended,
                "{context}: log end {} outside [{flushed}, {appended}]",
                log.log_end_offset()
            );
            let end = log.log_end_offset();
            assert_valid_prefix(&log, end, &context);
            appended = end;
            for _ in 0..rng.random_range(1..40) {
                append(&log, rng.random_range(1..=8));
                appended = log.log_end_offset();
                if rng.random_ratio(1, 5) {
                    log.flush().unwrap();
                    flushed = appended;
                }
            }
            drop(log);
            fs.power_cut(dir.path()).unwrap();
            cuts += 1;
            lost_total += appended - flushed;
            if appended > flushed {
                rounds_with_loss += 1;
            }
        }
        let log = open(dir.path());
        assert!(log.log_end_offset() >= flushed);
        assert_valid_prefix(&log, log.log_end_offset(), &format!("round {round}, last"));
    }
    eprintln!(
        "power cuts: {cuts}, of which {rounds_with_loss} dropped unflushed records \
         ({lost_total} records at risk in all); no flushed record lost"
    );
    // The cuts really dropped data: otherwise this test proves nothing.
    assert!(
        rounds_with_loss > 50,
        "only {rounds_with_loss} cuts lost data"
    );
    assert!(
        lost_total > 1000,
        "only {lost_total} unflushed records at risk"
    );
}

#[test]
fn a_last_write_torn_at_every_byte_recovers_to_the_flushed_prefix() {
    let fs = fault_fs();
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("template");
    std::fs::create_dir(&template).unwrap();
    // What is flushed before the torn write: several segments.
    let log = open(&template);
    for i in 0..30 {
        append(&log, 1 + i % 5);
    }
    log.close().unwrap();
    drop(log);
    let flushed = 30 * 3; // 1+2+3+4+5 per five batches
    let batch_records = 6;
    let batch_bytes = {
        let probe = dir.path().join("probe");
        copy_dir(&template, &probe);
        let log = open(&probe);
        let before = log.size_bytes();
        append(&log, batch_records);
        (log.size_bytes() - before) as usize
    };
    assert!(batch_bytes > 100);
    for kept in 0..=batch_bytes {
        let case = dir.path().join(format!("torn-{kept}"));
        copy_dir(&template, &case);
        fs.watch(&case);
        let log = open(&case);
        assert_eq!(log.log_end_offset(), flushed);
        log.flush().unwrap();
        append(&log, batch_records);
        drop(log);
        fs.power_cut_torn(&case, kept).unwrap();
        let log = open(&case);
        let expected = if kept == batch_bytes {
            flushed + batch_records as i64
        } else {
            flushed
        };
        assert_valid_prefix(
            &log,
            expected,
            &format!("torn at byte {kept} of {batch_bytes}"),
        );
        // The log takes appends again after recovery.
        append(&log, 2);
        assert_valid_prefix(&log, expected + 2, &format!("append after tear at {kept}"));
        drop(log);
        std::fs::remove_dir_all(&case).unwrap();
    }
    eprintln!("torn writes: a {batch_bytes}-byte batch cut at each of its {} byte positions, every one recovered to the flushed prefix", batch_bytes + 1);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
