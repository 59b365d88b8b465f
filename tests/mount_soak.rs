//! Soak: for a bounded time, writers produce to a size-retained topic and to a compacted one,
//! readers read the logs end to end and commit group offsets, and a housekeeper rolls segments
//! and asks for retention and compaction, while the daemon's own background retention and
//! cleaner run too. Then the whole log is compared with a reference model: what each writer got
//! acknowledged (all of it, in its order, after the retained start) and, for the compacted
//! topic, the latest value of every key.
//!
//! Not flaky on a loaded machine: nothing is timed. The run lasts a fixed time and checks only
//! content; whatever interleaving the machine produces, the same invariants hold. Retention and
//! compaction are asked for once more explicitly after the writers stop, so the final state does
//! not depend on when the background threads happened to run.
//!
//! `LMQFS_SOAK_SECS` sets how long the load runs (default 40 s).

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{stat_i64, write_once, Mount};

const PARTITIONS: u32 = 2;
/// Writers per partition of `events`, and writers of `kv`.
const EVENT_WRITERS: usize = 2;
const KV_WRITERS: usize = 2;
const KEYS_PER_WRITER: usize = 40;
/// Records written before the load may stop (see the wait after the run).
const MIN_EVENTS_PER_PARTITION: i64 = 10_000;
const MIN_KV_RECORDS: i64 = 1000;

fn soak_secs() -> u64 {
    std::env::var("LMQFS_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

/// Checks one read of an `events` log: per writer, records are consecutive and in order (a
/// prefix may be gone to retention). Returns each writer's (first, last) sequence number.
fn check_events_log(text: &str, what: &str) -> BTreeMap<String, (u64, u64)> {
    let mut seen: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        let (Some(id), Some(seq)) = (parts.next(), parts.next()) else {
            panic!("{what}: malformed line {line:?}");
        };
        let seq: u64 = seq
            .parse()
            .unwrap_or_else(|_| panic!("{what}: bad line {line:?}"));
        match seen.get_mut(id) {
            None => {
                seen.insert(id.to_string(), (seq, seq));
            }
            Some((_, last)) => {
                assert_eq!(
                    seq,
                    *last + 1,
                    "{what}: writer {id} has {seq} after {last} (lost, duplicated or reordered)"
                );
                *last = seq;
            }
        }
    }
    seen
}

/// True for errors a reader may meet while retention or compaction replaces segments under it
/// (a view generation deleted, a file gone between lookup and open); it then reads again.
fn transient(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ESTALE) | Some(libc::ENOENT))
}

#[test]
fn produce_consume_roll_retention_and_compaction_match_the_model() {
    let Some(m) = Mount::with_options(&[
        "log.retention.check.interval.ms=1000",
        "log.cleaner.backoff.ms=500",
    ]) else {
        return;
    };
    let m = Arc::new(m);
    m.create_topic("events", PARTITIONS);
    write_once(
        &m.path("events/config"),
        b"segment.bytes=16384\nretention.bytes=65536\ncompression.type=lz4\n",
    )
    .unwrap();
    m.create_topic("kv", 1);
    write_once(
        &m.path("kv/config"),
        b"cleanup.policy=compact\nsegment.bytes=8192\nmin.cleanable.dirty.ratio=0.01\n\
          compression.type=zstd\n",
    )
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();

    // Event writers: lines `<writer> <seq> <padding>`, one to five per write(); each returns
    // its last acknowledged sequence number.
    let mut event_writers = Vec::new();
    for p in 0..PARTITIONS {
        for w in 0..EVENT_WRITERS {
            let (m, stop) = (Arc::clone(&m), Arc::clone(&stop));
            let id = format!("p{p}w{w}");
            event_writers.push((
                p,
                id.clone(),
                std::thread::spawn(move || {
                    let mut f = OpenOptions::new()
                        .append(true)
                        .open(m.path(&format!("events/{p}/append")))
                        .unwrap();
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let n = 1 + seq % 5;
                        let data: String = (seq..seq + n)
                            .map(|s| format!("{id} {s} {}\n", "e".repeat((s % 97) as usize)))
                            .collect();
                        let written = f.write(data.as_bytes()).unwrap_or_else(|e| {
                            panic!("{id}: write failed: {e}");
                        });
                        assert_eq!(written, data.len());
                        seq += n;
                    }
                    seq - 1
                }),
            ));
        }
    }

    // Compacted-topic writers: each owns its keys; the model is the last value per key.
    let mut kv_writers = Vec::new();
    for w in 0..KV_WRITERS {
        let (m, stop) = (Arc::clone(&m), Arc::clone(&stop));
        kv_writers.push(std::thread::spawn(move || {
            let mut f = OpenOptions::new()
                .append(true)
                .open(m.path("kv/0/append.jsonl"))
                .unwrap();
            let mut model: BTreeMap<String, String> = BTreeMap::new();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut data = String::new();
                for _ in 0..1 + seq % 3 {
                    let key = format!("w{w}-k{}", (seq * 7) % KEYS_PER_WRITER as u64);
                    let value = format!("w{w}-v{seq}");
                    data.push_str(&format!("{{\"key\":\"{key}\",\"value\":\"{value}\"}}\n"));
                    model.insert(key, value);
                    seq += 1;
                }
                f.write_all(data.as_bytes())
                    .unwrap_or_else(|e| panic!("kv writer {w}: {e}"));
            }
            (model, seq)
        }));
    }

    // Readers: whole logs end to end, checked for order; and group commits.
    for p in 0..PARTITIONS {
        let (m, stop, reads) = (Arc::clone(&m), Arc::clone(&stop), Arc::clone(&reads));
        handles.push(std::thread::spawn(move || {
            let mut committed = 0i64;
            while !stop.load(Ordering::Relaxed) {
                match common::read_to_eof(&m.path(&format!("events/{p}/log"))) {
                    Ok(bytes) => {
                        let text = String::from_utf8(bytes).expect("UTF-8");
                        check_events_log(&text, &format!("a read of events/{p}/log"));
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if transient(&e) => continue,
                    Err(e) => panic!("reading events/{p}/log: {e}"),
                }
                let end = stat_i64(&m.path(&format!("events/{p}")), "log_end_offset");
                if end > committed {
                    fs::write(
                        m.path(&format!("events/{p}/groups/soak")),
                        format!("{end}\n"),
                    )
                    .unwrap();
                    committed = end;
                }
            }
            committed
        }));
    }
    {
        let (m, stop, reads) = (Arc::clone(&m), Arc::clone(&stop), Arc::clone(&reads));
        handles.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match common::read_to_eof(&m.path("kv/0/log.jsonl")) {
                    Ok(bytes) => {
                        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                            let v: serde_json::Value = serde_json::from_slice(line)
                                .unwrap_or_else(|e| panic!("kv log.jsonl line: {e}"));
                            assert!(v["key"].is_string(), "a record without a key: {v}");
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if transient(&e) => continue,
                    Err(e) => panic!("reading kv/0/log.jsonl: {e}"),
                }
            }
            0
        }));
    }
    // Housekeeper: rolls, retention and compaction asked for through control files.
    {
        let (m, stop) = (Arc::clone(&m), Arc::clone(&stop));
        handles.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (path, command) = match i % 4 {
                    0 => ("events/control", "roll\n"),
                    1 => ("events/control", "retention\n"),
                    2 => ("kv/0/control", "roll\n"),
                    _ => ("kv/0/control", "compact\n"),
                };
                write_once(&m.path(path), command.as_bytes())
                    .unwrap_or_else(|e| panic!("{command:?} to {path}: {e}"));
                i += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            i as i64
        }));
    }

    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(soak_secs()));
    // However slow the machine, enough is written that retention and compaction have work:
    // several times `retention.bytes` per partition, several values per key.
    let enough = common::wait_until(Duration::from_secs(600), || {
        (0..PARTITIONS).all(|p| {
            stat_i64(&m.path(&format!("events/{p}")), "log_end_offset") >= MIN_EVENTS_PER_PARTITION
        }) && stat_i64(&m.path("kv/0"), "log_end_offset") >= MIN_KV_RECORDS
    });
    stop.store(true, Ordering::Relaxed);
    assert!(enough, "the writers did not get far enough in 10 minutes");
    let mut acked: BTreeMap<String, (u32, u64)> = BTreeMap::new();
    for (p, id, h) in event_writers {
        let last = h.join().expect("event writer panicked");
        acked.insert(id, (p, last));
    }
    let mut kv_model: BTreeMap<String, String> = BTreeMap::new();
    let mut kv_writes = 0;
    for h in kv_writers {
        let (model, writes) = h.join().expect("kv writer panicked");
        kv_model.extend(model);
        kv_writes += writes;
    }
    for h in handles {
        h.join().expect("reader or housekeeper panicked");
    }
    let elapsed = started.elapsed();

    // Settle: retention and compaction once more, explicitly.
    write_once(&m.path("events/control"), b"retention\n").unwrap();
    write_once(&m.path("kv/0/control"), b"roll\n").unwrap();
    write_once(&m.path("kv/0/control"), b"compact\n").unwrap();

    // The model against the whole log.
    let mut events_written = 0;
    for p in 0..PARTITIONS {
        let dir = m.path(&format!("events/{p}"));
        let text = common::read_string(&dir.join("log"));
        let seen = check_events_log(&text, &format!("events/{p}/log after the run"));
        let start = stat_i64(&dir, "log_start_offset");
        let end = stat_i64(&dir, "log_end_offset");
        assert_eq!(
            text.lines().count() as i64,
            end - start,
            "events/{p}: the log has gaps"
        );
        assert!(start > 0, "events/{p}: retention never deleted anything");
        for (id, (part, last)) in &acked {
            if *part != p {
                continue;
            }
            events_written += last + 1;
            let (_, seen_last) = seen
                .get(id)
                .unwrap_or_else(|| panic!("events/{p}: writer {id} has no record left"));
            assert_eq!(
                seen_last, last,
                "events/{p}: writer {id} got {last} acknowledged, the log ends at {seen_last}"
            );
        }
    }
    let bytes = common::read(&m.path("kv/0/log.jsonl"));
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    let mut kv_records = 0;
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        latest.insert(
            v["key"].as_str().unwrap().to_string(),
            v["value"].as_str().unwrap().to_string(),
        );
        kv_records += 1;
    }
    assert_eq!(latest, kv_model, "kv: the latest value per key differs");
    assert!(
        (kv_records as u64) < kv_writes,
        "kv: compaction removed nothing ({kv_records} records of {kv_writes} writes)"
    );
    for (key, value) in kv_model.iter().step_by(7) {
        assert_eq!(
            common::read_string(&m.path(&format!("kv/0/keys/{key}"))),
            *value
        );
    }
    eprintln!(
        "soak: {:?}, {events_written} event records and {kv_writes} keyed records acknowledged \
         and all found, {} whole-log reads, {} keys, {kv_records} records left after compaction",
        elapsed,
        reads.load(Ordering::Relaxed),
        kv_model.len(),
    );
    let Ok(mut m) = Arc::try_unwrap(m) else {
        panic!("a thread still holds the mount");
    };
    m.assert_serving();
}
