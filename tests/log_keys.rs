//! The key index behind `keys/`: live keys and latest values through appends, tombstones,
//! compaction, retention, clean and unclean restarts and concurrent writers; and compaction
//! going on beside appends and reads.

mod cleanup_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cleanup_support::*;
use lmqfs::engine::keys::KeyIndex;
use lmqfs::engine::{now_ms, CleanerConfig, Log, LogConfig, NewRecord};
use tempfile::tempdir;

fn value_of(log: &Log, key: &str) -> Option<String> {
    log.latest_for_key(key.as_bytes())
        .unwrap()
        .map(|r| String::from_utf8(r.value.unwrap()).unwrap())
}

fn live(log: &Log) -> Vec<String> {
    log.live_keys()
        .unwrap()
        .into_iter()
        .map(|k| String::from_utf8(k).unwrap())
        .collect()
}

#[test]
fn keys_follow_appends_tombstones_compaction_and_retention() {
    let dir = tempdir().unwrap();
    let log = open(dir.path(), compacted(1024));
    write_rounds(&log, 5, 3);
    assert_eq!(live(&log), vec!["k0", "k1", "k2", "k3", "k4"]);
    assert_eq!(value_of(&log, "k3").as_deref(), Some("k3@2"));
    log.append(&[tombstone("k3"), keyed("k1", "new")]).unwrap();
    assert_eq!(live(&log), vec!["k0", "k1", "k2", "k4"]);
    assert_eq!(value_of(&log, "k3"), None);
    assert_eq!(value_of(&log, "k1").as_deref(), Some("new"));
    assert_eq!(value_of(&log, "nope"), None);
    log.roll().unwrap();
    log.compact(now_ms(), true, &CleanerConfig::default())
        .unwrap();
    assert_eq!(live(&log), vec!["k0", "k1", "k2", "k4"]);
    assert_eq!(value_of(&log, "k1").as_deref(), Some("new"));
    assert_eq!(value_of(&log, "k0").as_deref(), Some("k0@2"));
    // A key whose latest record retention removed is gone.
    log.update_config(LogConfig {
        cleanup_policy: lmqfs::engine::config::CleanupPolicy {
            delete: true,
            compact: true,
        },
        ..log.config()
    });
    log.delete_records(log.log_end_offset()).unwrap();
    log.run_retention(now_ms()).unwrap();
    assert_eq!(live(&log), Vec::<String>::new());
    log.append(&[keyed("z", "1")]).unwrap();
    assert_eq!(live(&log), vec!["z"]);
}

#[test]
fn a_clean_close_leaves_a_snapshot_that_the_next_open_continues_from() {
    let dir = tempdir().unwrap();
    let log = open(dir.path(), compacted(1 << 20));
    write_rounds(&log, 50, 2);
    assert_eq!(live(&log).len(), 50);
    let end = log.log_end_offset();
    log.close().unwrap();
    assert_eq!(KeyIndex::snapshot_next_offset(dir.path()), Some(end));

    let log = open(dir.path(), compacted(1 << 20));
    log.append(&[tombstone("k7"), keyed("k8", "after restart")])
        .unwrap();
    assert_eq!(live(&log).len(), 49);
    assert_eq!(value_of(&log, "k8").as_deref(), Some("after restart"));
    assert_eq!(value_of(&log, "k9").as_deref(), Some("k9@1"));
    log.close().unwrap();
    assert_eq!(KeyIndex::snapshot_next_offset(dir.path()), Some(end + 2));

    // A log that never built its index keeps the older snapshot, still a valid prefix.
    let log = open(dir.path(), compacted(1 << 20));
    log.append(&[keyed("k0", "unseen")]).unwrap();
    log.close().unwrap();
    assert_eq!(KeyIndex::snapshot_next_offset(dir.path()), Some(end + 2));
    let log = open(dir.path(), compacted(1 << 20));
    assert_eq!(value_of(&log, "k0").as_deref(), Some("unseen"));
    assert_eq!(value_of(&log, "k7"), None);
}

#[test]
fn an_unclean_stop_drops_the_snapshot_and_the_index_is_rebuilt() {
    let dir = tempdir().unwrap();
    let log = open(dir.path(), compacted(1 << 20));
    write_rounds(&log, 10, 1);
    assert_eq!(live(&log).len(), 10);
    log.close().unwrap();
    let log = open(dir.path(), compacted(1 << 20));
    log.append(&[tombstone("k0"), keyed("x", "1")]).unwrap();
    drop(log); // kill -9: no close
    let log = open(dir.path(), compacted(1 << 20));
    assert_eq!(KeyIndex::snapshot_next_offset(dir.path()), None);
    let keys = live(&log);
    assert_eq!(keys.len(), 10);
    assert!(!keys.contains(&"k0".to_string()) && keys.contains(&"x".to_string()));
}

#[test]
fn concurrent_writers_and_readers_agree_with_the_log() {
    let dir = tempdir().unwrap();
    let log = Arc::new(open(dir.path(), compacted(4096)));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..500 {
                    let key = format!("k{}", (i * 7 + w) % 23);
                    let record = if i % 11 == 0 {
                        tombstone(&key)
                    } else {
                        keyed(&key, &format!("w{w}-{i}"))
                    };
                    log.append(&[record]).unwrap();
                }
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let log = Arc::clone(&log);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) || reads == 0 {
                for key in log.live_keys().unwrap() {
                    // A live key may be deleted between the two calls, never corrupted.
                    if let Some(r) = log.latest_for_key(&key).unwrap() {
                        assert_eq!(r.key.as_deref(), Some(&key[..]));
                        assert!(r.value.is_some());
                    }
                }
                reads += 1;
            }
        })
    };
    let compactor = {
        let log = Arc::clone(&log);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                log.compact(now_ms(), true, &CleanerConfig::default())
                    .unwrap();
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    compactor.join().unwrap();
    let latest = latest_by_key(&all_records(&log));
    let expected: Vec<String> = latest
        .iter()
        .filter(|(_, (_, v))| v.is_some())
        .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
        .collect();
    assert_eq!(live(&log), expected);
    for (key, (_, value)) in &latest {
        let key = String::from_utf8(key.clone()).unwrap();
        assert_eq!(
            value_of(&log, &key).map(String::into_bytes),
            value.clone(),
            "{key}"
        );
    }
}

#[test]
fn appends_and_reads_go_on_while_compaction_runs() {
    let dir = tempdir().unwrap();
    let log = Arc::new(open(dir.path(), compacted(4 << 20)));
    // About 40 MB of dirty log over few keys: compaction takes a while.
    let value = "v".repeat(400);
    for round in 0..1000 {
        let batch: Vec<NewRecord> = (0..100)
            .map(|k| keyed(&format!("k{k}"), &format!("{round}-{value}")))
            .collect();
        log.append(&batch).unwrap();
    }
    log.roll().unwrap();
    let cleaning = Arc::new(AtomicBool::new(true));
    let compactor = {
        let log = Arc::clone(&log);
        let cleaning = Arc::clone(&cleaning);
        std::thread::spawn(move || {
            let outcome = log
                .compact(now_ms(), true, &CleanerConfig::default())
                .unwrap();
            cleaning.store(false, Ordering::SeqCst);
            outcome
        })
    };
    let mut appends_during = 0;
    let mut reads_during = 0;
    while cleaning.load(Ordering::SeqCst) {
        log.append(&[keyed("live", "x")]).unwrap();
        let _ = log.read(log.log_start_offset(), 4096).unwrap();
        if cleaning.load(Ordering::SeqCst) {
            appends_during += 1;
            reads_during += 1;
        }
    }
    let outcome = compactor.join().unwrap();
    assert!(outcome.records_removed >= 99_000, "{outcome}");
    assert!(
        appends_during > 10 && reads_during > 10,
        "appends ({appends_during}) and reads ({reads_during}) completed while the cleaner ran"
    );
    assert_eq!(live(&log).len(), 101);
}

#[test]
fn a_snapshot_older_than_a_dropped_tombstone_is_not_trusted() {
    let dir = tempdir().unwrap();
    let config = LogConfig {
        delete_retention_ms: 0,
        ..compacted(1 << 20)
    };
    let log = open(dir.path(), config.clone());
    log.append(&[keyed("gone", "1"), keyed("kept", "1")])
        .unwrap();
    assert_eq!(live(&log), vec!["gone", "kept"]);
    log.close().unwrap(); // snapshot: "gone" is live at offset 0
    let log = open(dir.path(), config);
    log.append(&[tombstone("gone")]).unwrap(); // the index is not loaded: it does not see this
    log.roll().unwrap();
    let now = now_ms();
    log.compact(now, true, &CleanerConfig::default()).unwrap();
    let second = log
        .compact(now + 1, true, &CleanerConfig::default())
        .unwrap();
    assert_eq!(second.tombstones_removed, 1, "{second}");
    assert_eq!(live(&log), vec!["kept"]);
    assert_eq!(value_of(&log, "gone"), None);
}
