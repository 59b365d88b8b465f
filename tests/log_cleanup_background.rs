//! The log manager's background cleanup: compaction when the dirty ratio asks for it, retention
//! on its interval, removal of `.deleted` files after their delay, on command per partition,
//! and a prompt shutdown.

mod cleanup_support;

use std::time::{Duration, Instant};

use cleanup_support::*;
use lmqfs::engine::{CleanerConfig, CleanupSettings, EngineError, LogConfig, LogManager};
use tempfile::tempdir;

fn settings() -> CleanupSettings {
    CleanupSettings {
        cleaner: CleanerConfig::default(),
        cleaner_backoff_ms: 50,
        retention_check_interval_ms: 50,
    }
}

/// Waits up to 20 s for `done`.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_background_cleaner_compacts_and_applies_retention() {
    let dir = tempdir().unwrap();
    let manager = LogManager::open_with(dir.path(), LogConfig::default(), 1, settings()).unwrap();
    manager
        .create_topic(
            "table",
            None,
            &pairs(&[("cleanup.policy", "compact"), ("segment.bytes", "2048")]),
        )
        .unwrap();
    manager
        .create_topic(
            "events",
            None,
            &pairs(&[
                ("retention.ms", "1000"),
                ("file.delete.delay.ms", "100"),
                ("segment.bytes", "2048"),
            ]),
        )
        .unwrap();
    let table = manager.log("table", 0).unwrap();
    write_rounds(&table, 10, 20);
    table.roll().unwrap();
    eventually("background compaction", || {
        table
            .stats()
            .last_compaction
            .is_some_and(|c| c.records_removed > 0)
    });
    eventually("one record per key in the closed segments", || {
        all_records(&table).len() == 10
    });

    let events = manager.log("events", 0).unwrap();
    let old = lmqfs::engine::now_ms() - 60_000;
    for i in 0..50 {
        events
            .append(&[lmqfs::engine::NewRecord {
                timestamp: Some(old),
                ..lmqfs::engine::NewRecord::value(format!("old event {i} {}", "x".repeat(100)))
            }])
            .unwrap();
    }
    events.roll().unwrap();
    eventually("background retention", || events.segment_count() == 1);
    let partition_dir = dir.path().join("events-0");
    eventually(".deleted files removed after file.delete.delay.ms", || {
        files_ending(&partition_dir, ".deleted") == 0
    });
    assert!(events.stats().last_retention.unwrap().segments_deleted > 0);

    let started = Instant::now();
    manager.shutdown().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown does not wait for another cleanup interval"
    );
}

#[test]
fn commands_run_now_and_refuse_what_does_not_apply() {
    let dir = tempdir().unwrap();
    // Long intervals: only the commands clean.
    let manager = LogManager::open_with(
        dir.path(),
        LogConfig::default(),
        2,
        CleanupSettings {
            cleaner_backoff_ms: 3_600_000,
            retention_check_interval_ms: 3_600_000,
            ..settings()
        },
    )
    .unwrap();
    manager
        .create_topic(
            "table",
            None,
            &pairs(&[
                ("cleanup.policy", "compact,delete"),
                ("segment.bytes", "2048"),
            ]),
        )
        .unwrap();
    manager.create_topic("plain", None, &[]).unwrap();
    let table = manager.log("table", 1).unwrap();
    write_rounds(&table, 5, 10);
    table.roll().unwrap();
    let outcome = manager.compact("table", 1).unwrap();
    assert_eq!(outcome.records_removed, 45);
    assert_eq!(all_records(&table).len(), 5);
    // Nothing new: a second run changes nothing.
    assert_eq!(manager.compact("table", 1).unwrap().records_removed, 0);
    assert!(matches!(
        manager.compact("plain", 0),
        Err(EngineError::InvalidArgument(_))
    ));
    assert!(matches!(
        manager.compact("nope", 0),
        Err(EngineError::UnknownTopic(_))
    ));
    table.delete_records(table.log_end_offset()).unwrap();
    let retention = manager.retention("table", 1).unwrap();
    assert!(retention.segments_deleted > 0);
    assert_eq!(manager.retention("table", 1).unwrap().segments_deleted, 0);
    assert_eq!(
        manager.cleanup_settings().cleaner_backoff_ms,
        3_600_000,
        "the settings given at open"
    );
}
