//! I/O errors injected through the engine's I/O seam (`engine::io::FaultFs`): EIO and ENOSPC
//! on write, fsync, rename and mmap. The caller gets the error, nothing partial stays visible
//! (same log end, same records, same file length), and once the fault is gone the log works
//! again, also across a reopen.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use lmqfs::engine::io::{set_file_system, FaultFs, Op};
use lmqfs::engine::{EngineError, Log, LogConfig, NewRecord};

fn fault_fs() -> &'static FaultFs {
    static FS: OnceLock<FaultFs> = OnceLock::new();
    FS.get_or_init(|| {
        let fs = FaultFs::new();
        assert!(set_file_system(Arc::new(fs.share())));
        fs
    })
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 128,
        segment_index_bytes: 4096,
        segment_ms: i64::MAX,
        ..LogConfig::default()
    }
}

fn value_of(offset: i64) -> Vec<u8> {
    format!("value {offset} ").repeat(3).into_bytes()
}

fn records(first: i64, n: usize) -> Vec<NewRecord> {
    (first..first + n as i64)
        .map(|o| NewRecord {
            key: None,
            value: Some(value_of(o)),
            headers: vec![],
            timestamp: None,
        })
        .collect()
}

fn append(log: &Log, n: usize) -> Result<(), EngineError> {
    log.append(&records(log.log_end_offset(), n)).map(drop)
}

fn assert_holds(log: &Log, end: i64, context: &str) {
    assert_eq!(log.log_end_offset(), end, "{context}: log end");
    let mut next = 0;
    while next < end {
        let got = log.read(next, 1 << 20).unwrap();
        assert!(!got.is_empty(), "{context}: nothing at {next}");
        for r in got {
            assert_eq!(
                (r.offset, r.value),
                (next, Some(value_of(next))),
                "{context}"
            );
            next += 1;
        }
    }
}

fn errno(e: &EngineError) -> Option<i32> {
    match e {
        EngineError::Io { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

fn active_log_len(log: &Log) -> u64 {
    let active = log.segments().into_iter().last().unwrap();
    std::fs::metadata(active.log_path).unwrap().len()
}

/// A log with 50 records, under fault injection.
fn faulty_log(dir: &Path) -> Log {
    let log = Log::open(dir, config()).unwrap();
    for _ in 0..10 {
        append(&log, 5).unwrap();
    }
    log
}

const ERRNOS: [(&str, i32); 2] = [("EIO", libc::EIO), ("ENOSPC", libc::ENOSPC)];

#[test]
fn a_failed_write_appends_nothing_and_the_next_append_works() {
    let fs = fault_fs();
    for (name, code) in ERRNOS {
        // Whole failure, and torn: part of the batch reached the file before the error.
        for torn in [None, Some(1), Some(70)] {
            let dir = tempfile::tempdir().unwrap();
            let log = faulty_log(dir.path());
            let context = format!("{name}, torn {torn:?}");
            let len = active_log_len(&log);
            fs.fail(Op::Write, dir.path(), code, 1, torn);
            let e = append(&log, 5).unwrap_err();
            assert_eq!(errno(&e), Some(code), "{context}: {e}");
            assert_holds(&log, 50, &context);
            assert_eq!(active_log_len(&log), len, "{context}: partial bytes left");
            fs.heal(dir.path());
            append(&log, 5).unwrap();
            assert_holds(&log, 55, &context);
            // And after a crash and reopen.
            drop(log);
            let log = Log::open(dir.path(), config()).unwrap();
            assert_holds(&log, 55, &format!("{context}, reopened"));
        }
    }
}

#[test]
fn a_failed_fsync_is_reported_and_the_recovery_point_stays() {
    let fs = fault_fs();
    for (name, code) in ERRNOS {
        let dir = tempfile::tempdir().unwrap();
        let log = faulty_log(dir.path());
        log.flush().unwrap();
        append(&log, 5).unwrap();
        let before = log.recovery_point();
        fs.fail(Op::Sync, dir.path(), code, 1, None);
        let e = log.flush().unwrap_err();
        assert_eq!(errno(&e), Some(code), "{name}: {e}");
        assert_eq!(log.recovery_point(), before, "{name}");
        assert_holds(&log, 55, name);
        fs.heal(dir.path());
        log.flush().unwrap();
        assert_eq!(log.recovery_point(), 55, "{name}");
        append(&log, 5).unwrap();
        log.close().unwrap();
        drop(log);
        let log = Log::open(dir.path(), config()).unwrap();
        assert_holds(&log, 60, name);
    }
}

#[test]
fn a_failed_rename_of_the_checkpoint_is_reported_and_the_log_stays_usable() {
    let fs = fault_fs();
    for (name, code) in ERRNOS {
        let dir = tempfile::tempdir().unwrap();
        let log = faulty_log(dir.path());
        fs.fail(Op::Rename, dir.path(), code, 1, None);
        let e = log.flush().unwrap_err();
        assert_eq!(errno(&e), Some(code), "{name}: {e}");
        assert_holds(&log, 50, name);
        fs.heal(dir.path());
        append(&log, 5).unwrap();
        log.flush().unwrap();
        drop(log);
        let log = Log::open(dir.path(), config()).unwrap();
        assert_holds(&log, 55, name);
        assert!(!dir.path().join("lmqfs-checkpoint.tmp").exists());
    }
}

#[test]
fn a_failed_index_mapping_fails_the_roll_and_the_next_append_rolls() {
    let fs = fault_fs();
    for (name, code) in ERRNOS {
        let dir = tempfile::tempdir().unwrap();
        let log = faulty_log(dir.path());
        let segments = log.segment_count();
        // Append until a roll is due, with every mapping failing.
        fs.fail(Op::Map, dir.path(), code, usize::MAX, None);
        let mut failures = 0;
        let mut end = 50;
        while failures == 0 {
            match append(&log, 5) {
                Ok(()) => end += 5,
                Err(e) => {
                    assert_eq!(errno(&e), Some(code), "{name}: {e}");
                    failures += 1;
                }
            }
            assert!(end < 500, "{name}: no roll was attempted");
        }
        assert_holds(&log, end, name);
        assert_eq!(
            log.segment_count(),
            segments,
            "{name}: a half-made segment is listed"
        );
        fs.heal(dir.path());
        append(&log, 5).unwrap();
        assert_eq!(
            log.segment_count(),
            segments + 1,
            "{name}: the roll happened"
        );
        assert_holds(&log, end + 5, name);
        log.close().unwrap();
        drop(log);
        let log = Log::open(dir.path(), config()).unwrap();
        assert_holds(&log, end + 5, name);
    }
}

#[test]
fn delete_records_on_a_full_disk_deletes_the_segments_first() {
    let fs = fault_fs();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    for _ in 0..60 {
        append(&log, 5).unwrap();
    }
    let segments = log.segments();
    assert!(segments.len() >= 4, "{} segments", segments.len());
    let cut = segments[3].base_offset;
    // The checkpoint cannot be written the first time: no space.
    fs.fail(Op::Write, dir.path(), libc::ENOSPC, 1, None);
    assert_eq!(log.delete_records(cut).unwrap(), cut);
    assert_eq!(log.log_start_offset(), cut);
    for gone in &segments[..3] {
        assert!(
            !gone.log_path.exists(),
            "{} not deleted",
            gone.log_path.display()
        );
    }
    assert_eq!(log.read(cut, 1 << 20).unwrap()[0].offset, cut);
    append(&log, 5).unwrap();
    drop(log);
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_start_offset(), cut);
    assert_eq!(log.log_end_offset(), 305);
}

#[test]
fn no_room_for_an_index_page_fails_the_append_before_it_writes() {
    let fs = fault_fs();
    let dir = tempfile::tempdir().unwrap();
    // An index entry per batch, and big indexes: a new index page is needed every 512 batches.
    let config = LogConfig {
        segment_bytes: 1 << 30,
        index_interval_bytes: 1,
        segment_index_bytes: 1 << 20,
        segment_ms: i64::MAX,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    // The first append reserves the first page of each index.
    append(&log, 1).unwrap();
    fs.fail(Op::Map, dir.path(), libc::ENOSPC, 1, None);
    let mut end = 1;
    let failed = loop {
        let len = active_log_len(&log);
        match append(&log, 1) {
            Ok(()) => end += 1,
            Err(e) => break (e, len),
        }
        assert!(end < 5000, "no index page was ever reserved");
    };
    let (e, len) = failed;
    assert_eq!(errno(&e), Some(libc::ENOSPC), "{e}");
    assert!(
        end > 1,
        "the first append after the fault needed a new page"
    );
    assert_eq!(active_log_len(&log), len, "the failed append wrote data");
    assert_holds(&log, end, "after the failed append");
    append(&log, 1).unwrap();
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_holds(&log, end + 1, "reopened after a crash");
    eprintln!("index page reservation failed after {end} appends");
}
