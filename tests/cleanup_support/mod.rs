//! Helpers shared by the engine's retention and compaction tests: logs of keyed records and
//! what they hold.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use lmqfs::engine::config::CleanupPolicy;
use lmqfs::engine::{Log, LogConfig, NewRecord, Record};

/// A compacted topic's config with segments of about `segment_bytes`.
pub fn compacted(segment_bytes: u32) -> LogConfig {
    LogConfig {
        segment_bytes,
        cleanup_policy: CleanupPolicy {
            delete: false,
            compact: true,
        },
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

pub fn keyed(key: &str, value: &str) -> NewRecord {
    NewRecord {
        key: Some(key.as_bytes().to_vec()),
        value: Some(value.as_bytes().to_vec()),
        ..NewRecord::default()
    }
}

pub fn tombstone(key: &str) -> NewRecord {
    NewRecord {
        key: Some(key.as_bytes().to_vec()),
        value: None,
        ..NewRecord::default()
    }
}

pub fn open(dir: &Path, config: LogConfig) -> Log {
    Log::open(dir, config).expect("open log")
}

/// Every record from the log start to the log end, in offset order.
pub fn all_records(log: &Log) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let batches = log.read_batches(offset, 1 << 20).expect("read");
        if batches.is_empty() {
            break;
        }
        for batch in &batches {
            let decoded = lmqfs::engine::record::decode_batch(&batch.bytes).expect("decode");
            out.extend(
                decoded
                    .records
                    .into_iter()
                    .filter(|r| r.offset >= offset && r.offset >= log.log_start_offset()),
            );
            offset = offset.max(batch.header.next_offset());
        }
    }
    for pair in out.windows(2) {
        assert!(pair[0].offset < pair[1].offset, "offsets strictly increase");
    }
    out
}

/// Key -> (offset, value) of each key's latest record (value `None` for a tombstone).
pub fn latest_by_key(records: &[Record]) -> BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)> {
    let mut latest = BTreeMap::new();
    for r in records {
        if let Some(key) = &r.key {
            latest.insert(key.clone(), (r.offset, r.value.clone()));
        }
    }
    latest
}

/// A record as `(offset, key, value)`.
pub type Triple = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// `(offset, key, value)` of every record, for exact comparisons.
pub fn triples(records: &[Record]) -> Vec<Triple> {
    records
        .iter()
        .map(|r| (r.offset, r.key.clone(), r.value.clone()))
        .collect()
}

/// Appends `rounds` passes over `keys` keys, one record per append, values `"{key}@{round}"`.
pub fn write_rounds(log: &Log, keys: usize, rounds: usize) {
    for round in 0..rounds {
        for k in 0..keys {
            log.append(&[keyed(&format!("k{k}"), &format!("k{k}@{round}"))])
                .expect("append");
        }
    }
}

/// Number of files in `dir` whose name ends with `suffix`.
pub fn files_ending(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter(|e| {
            e.as_ref()
                .map(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .unwrap_or(false)
        })
        .count()
}
