//! Reference-model property test for log cleanup: compaction, retention and delete-records,
//! mixed with keyed appends, tombstones, rolls, clean close/reopen and simulated crashes.
//!
//! Each case opens a real [`Log`] in a temporary directory with a compacted topic
//! (`cleanup.policy=compact` or `compact,delete`), small segments (`segment.messages` 2..=7,
//! small `segment.bytes`), a random codec, `delete.retention.ms` of 0, 50 or "forever",
//! `min.compaction.lag.ms` of 0 or more, and `file.delete.delay.ms=0`. Time is a virtual clock:
//! records carry it as their timestamp and `compact`/`run_retention` are given it as "now".
//!
//! The model keeps every record ever appended (offsets are never reused: nothing here truncates)
//! and the set of offsets the log held after the previous step. After every step it checks:
//!
//! 1. the log start and end offsets are the model's (retention may move the start, see 6);
//! 2. reading everything from the log start gives strictly increasing offsets, and each record
//!    has exactly the offset, key, value, headers and timestamp it was appended with;
//! 3. only compaction and retention remove records, and nothing removed comes back (not after a
//!    reopen, not after a crash); records just appended are all there;
//! 4. a record compaction removed was in a closed segment (below the active segment's base as
//!    it was before the run), was older than `min.compaction.lag.ms`, and was superseded by a
//!    later record of its key, unless it is a tombstone that an earlier cleaning run saw at
//!    least `delete.retention.ms` before;
//! 5. per key, the latest record appended is the key's latest record in the log when it is at or
//!    above the log start offset; a key whose latest record is a tombstone is either absent or
//!    has that tombstone last; a key whose records are all below the log start is absent;
//! 6. retention only moves the log start forward, to the first remaining segment's base, never
//!    past the active segment; without `delete` in the policy it only drops segments wholly below
//!    the log start; with `retention.bytes` off, every record it removed was older than
//!    `retention.ms`; with it on, the first closed segment left could not go without taking
//!    the log below `retention.bytes`; and no segment wholly below the log start is left;
//! 7. `live_keys()` and `latest_for_key()` agree with the model, and `read_record()` answers
//!    `Some` exactly for the offsets the scan returned;
//! 8. after a forced compaction with an offset map big enough for every key and no compaction
//!    lag, the closed segments hold at most one record per key.
//!
//! Appends of keyless records are refused (compacted topics need keys) and change nothing.
//! A crash drops the `Log` without closing it (after a flush or not): every record whose append
//! returned was written, so the reopened log has all of them. A crash during compaction stops a
//! forced run at one of the steps of one of its segment swaps (`Log::set_swap_crash`), drops the
//! log and reopens it: the log must then read as if each group was either swapped or not, so the
//! checks of a compaction step apply.
//!
//! `PROPTEST_CASES` sets the number of cases (48 when unset).

use std::collections::{BTreeMap, BTreeSet};

use lmqfs::engine::cleaner::SwapStep;
use lmqfs::engine::config::CleanupPolicy;
use lmqfs::engine::log::SegmentInfo;
use lmqfs::engine::record::Header;
use lmqfs::engine::{
    CleanerConfig, Compression, EngineError, Log, LogConfig, NewRecord, Record, TimestampType,
};
use proptest::prelude::*;

/// Number of distinct keys.
const KEY_SPACE: u8 = 20;
/// The most records one append carries (the small offset map must hold one batch).
const MAX_BATCH: usize = 5;
/// An offset map of 8 slots, 7 keys: several rounds are needed to clean 20 keys.
const SMALL_DEDUPE_BUFFER: usize = 8 * 24;
/// An offset map for 900 keys: one round cleans everything.
const BIG_DEDUPE_BUFFER: usize = 1000 * 24;
/// `delete.retention.ms` meaning "longer than any case runs".
const FOREVER_MS: i64 = 1 << 40;

fn key_bytes(key: u8) -> Vec<u8> {
    format!("key-{key:02}").into_bytes()
}

/// One record of an append, before the offset (and so the value prefix) is known.
#[derive(Debug, Clone)]
struct Draft {
    key: u8,
    /// `None` is a tombstone; otherwise padding after the offset prefix of the value.
    value: Option<Vec<u8>>,
    header: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Draft>),
    /// An append with a keyless record among keyed ones: refused as a whole.
    AppendKeyless,
    Tick(u16),
    Roll,
    Compact {
        force: bool,
        small_buffer: bool,
    },
    Retention,
    DeleteRecords {
        back: u16,
    },
    Reopen,
    Crash {
        flush: bool,
    },
    /// A forced compaction that stops at `step` of its swap number `swap` (if it gets that far)
    /// as a crash would; the log is then dropped without close and reopened.
    CompactCrash {
        step: SwapStep,
        swap: usize,
        small_buffer: bool,
    },
}

fn draft() -> impl Strategy<Value = Draft> {
    (
        0..KEY_SPACE,
        prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..24)),
        prop::option::weighted(0.15, prop::collection::vec(any::<u8>(), 0..6)),
    )
        .prop_map(|(key, value, header)| Draft { key, value, header })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec(draft(), 1..=1).prop_map(Op::Append),
        3 => prop::collection::vec(draft(), 2..=MAX_BATCH).prop_map(Op::Append),
        1 => Just(Op::AppendKeyless),
        3 => (0u16..100).prop_map(Op::Tick),
        2 => Just(Op::Roll),
        4 => (any::<bool>(), any::<bool>())
            .prop_map(|(force, small_buffer)| Op::Compact { force, small_buffer }),
        2 => Just(Op::Retention),
        1 => any::<u16>().prop_map(|back| Op::DeleteRecords { back }),
        1 => Just(Op::Reopen),
        1 => any::<bool>().prop_map(|flush| Op::Crash { flush }),
        1 => (prop::sample::select(SwapStep::ALL.to_vec()), 0usize..3, any::<bool>())
            .prop_map(|(step, swap, small_buffer)| Op::CompactCrash { step, swap, small_buffer }),
    ]
}

fn config() -> impl Strategy<Value = LogConfig> {
    (
        (300u32..3000, 2u64..=7, 0u32..300, 4u32..40),
        any::<bool>(),
        prop_oneof![Just(-1i64), 20i64..600],
        prop_oneof![Just(-1i64), 100i64..2000],
        prop::sample::select(vec![0i64, 50, FOREVER_MS]),
        prop_oneof![3 => Just(0i64), 1 => 20i64..300],
        prop::sample::select(vec![0.0f64, 0.5, 0.99]),
        prop::sample::select(Compression::ALL.to_vec()),
    )
        .prop_map(
            |(
                (segment_bytes, messages, interval, index_entries),
                with_delete,
                retention_ms,
                retention_bytes,
                delete_retention_ms,
                min_compaction_lag_ms,
                min_cleanable_dirty_ratio,
                compression_type,
            )| LogConfig {
                segment_bytes,
                segment_messages: Some(messages),
                index_interval_bytes: interval,
                segment_index_bytes: index_entries * 12,
                retention_ms,
                retention_bytes,
                cleanup_policy: CleanupPolicy {
                    delete: with_delete,
                    compact: true,
                },
                delete_retention_ms,
                min_compaction_lag_ms,
                min_cleanable_dirty_ratio,
                compression_type,
                message_timestamp_type: TimestampType::CreateTime,
                file_delete_delay_ms: 0,
                ..LogConfig::default()
            },
        )
}

/// A record as appended.
#[derive(Debug, Clone, PartialEq)]
struct Appended {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    headers: Vec<Header>,
    timestamp: i64,
}

impl Appended {
    fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// A compaction run that cleaned something: its "now" and the log end when it ran.
#[derive(Debug, Clone, Copy)]
struct Cleaning {
    now_ms: i64,
    log_end_offset: i64,
}

struct Model {
    config: LogConfig,
    /// Every record appended, indexed by offset (offsets start at 0 and are never reused).
    history: Vec<Appended>,
    log_start_offset: i64,
    /// The virtual clock: record timestamps and the "now" of cleanup.
    clock: i64,
    /// The offsets the log held after the previous step.
    present: BTreeSet<i64>,
    /// Compaction runs that were not skipped, oldest first.
    cleanings: Vec<Cleaning>,
}

impl Model {
    fn log_end_offset(&self) -> i64 {
        self.history.len() as i64
    }

    fn record(&self, offset: i64) -> &Appended {
        &self.history[offset as usize]
    }

    /// Per key, the offset of its latest appended record.
    fn latest_offsets(&self) -> BTreeMap<Vec<u8>, i64> {
        let mut latest = BTreeMap::new();
        for (offset, r) in self.history.iter().enumerate() {
            latest.insert(r.key.clone(), offset as i64);
        }
        latest
    }

    /// The keys the log should call live: latest record at or above the log start, not a
    /// tombstone.
    fn live_keys(&self) -> BTreeMap<Vec<u8>, i64> {
        self.latest_offsets()
            .into_iter()
            .filter(|(_, offset)| {
                *offset >= self.log_start_offset && !self.record(*offset).is_tombstone()
            })
            .collect()
    }
}

/// Which records a step may remove from those present before it (records below the log start
/// offset always go).
#[derive(Debug, Clone, Copy)]
enum Removal {
    Nothing,
    /// A compaction run at `now_ms`; the active segment then started at `active_base`.
    Compaction {
        now_ms: i64,
        active_base: i64,
    },
}

/// How many offsets `read_record` is asked about after a step.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Probe {
    /// Every offset in [log start, log end).
    All,
    /// The last few offsets only.
    Tail,
}

fn active_base(segments: &[SegmentInfo]) -> i64 {
    let last = segments.last().expect("a log always has a segment");
    assert!(last.is_active, "the last segment is the active one");
    last.base_offset
}

/// Reads every record from the log start to the log end.
fn scan(log: &Log, model: &Model) -> BTreeMap<i64, Record> {
    let end = model.log_end_offset();
    let mut records = BTreeMap::new();
    let mut next = model.log_start_offset;
    let mut last_offset = -1;
    while next < end {
        let batch = log.read(next, 700).expect("read from the log start");
        if batch.is_empty() {
            // Everything from `next` on was compacted away and the active segment is empty.
            break;
        }
        for r in batch {
            assert!(
                r.offset > last_offset,
                "offsets must strictly increase: {} after {last_offset}",
                r.offset
            );
            assert!(
                r.offset >= next && r.offset < end,
                "read at {next} returned offset {} outside [{next}, {end})",
                r.offset
            );
            last_offset = r.offset;
            records.insert(r.offset, r);
        }
        next = last_offset + 1;
    }
    records
}

fn assert_is_appended(got: &Record, want: &Appended) {
    let offset = got.offset;
    assert_eq!(got.key.as_deref(), Some(&want.key[..]), "key at {offset}");
    assert_eq!(got.value, want.value, "value at {offset}");
    assert_eq!(got.headers, want.headers, "headers at {offset}");
    assert_eq!(got.timestamp, want.timestamp, "timestamp at {offset}");
}

/// Checks the log against the model after a step (see the module docs) and returns what the
/// log holds now. `prev_end` is the log end offset before the step.
fn check(
    log: &Log,
    model: &Model,
    prev_end: i64,
    removal: Removal,
    probe: Probe,
) -> BTreeMap<i64, Record> {
    let start = model.log_start_offset;
    let end = model.log_end_offset();
    assert_eq!(log.log_end_offset(), end, "log end offset");
    assert_eq!(log.log_start_offset(), start, "log start offset");
    let segments = log.segments();
    assert!(
        segments[0].base_offset <= start,
        "first segment {} starts above the log start offset {start}",
        segments[0].base_offset
    );

    let records = scan(log, model);
    for r in records.values() {
        assert_is_appended(r, model.record(r.offset));
    }

    // 3: records just appended are there; nothing removed comes back.
    for offset in prev_end.max(start)..end {
        assert!(
            records.contains_key(&offset),
            "record {offset}, appended by this step, is missing"
        );
    }
    for offset in records.keys().filter(|o| **o < prev_end) {
        assert!(
            model.present.contains(offset),
            "record {offset} was gone before this step and is back"
        );
    }

    // 4: what this step removed.
    let latest = model.latest_offsets();
    let removed: Vec<i64> = model
        .present
        .range(start..)
        .filter(|o| !records.contains_key(o))
        .copied()
        .collect();
    match removal {
        Removal::Nothing => assert!(
            removed.is_empty(),
            "records {removed:?} disappeared in a step that removes nothing"
        ),
        Removal::Compaction {
            now_ms,
            active_base,
        } => {
            let config = &model.config;
            for &offset in &removed {
                let r = model.record(offset);
                assert!(
                    offset < active_base,
                    "compaction removed {offset} from the active segment (base {active_base})"
                );
                assert!(
                    r.timestamp <= now_ms - config.min_compaction_lag_ms,
                    "compaction at {now_ms} removed {offset} (timestamp {}) within \
                     min.compaction.lag.ms={}",
                    r.timestamp,
                    config.min_compaction_lag_ms
                );
                if latest[&r.key] != offset {
                    continue; // superseded by a later record of its key
                }
                assert!(
                    r.is_tombstone(),
                    "compaction removed {offset}, the latest value of {:?}",
                    String::from_utf8_lossy(&r.key)
                );
                let seen_long_enough = model.cleanings.iter().any(|c| {
                    offset < c.log_end_offset && c.now_ms + config.delete_retention_ms <= now_ms
                });
                assert!(
                    seen_long_enough,
                    "compaction at {now_ms} dropped tombstone {offset} less than \
                     delete.retention.ms={} after a run first cleaned it (runs: {:?})",
                    config.delete_retention_ms, model.cleanings
                );
            }
        }
    }

    // 5: per key, the latest record.
    let mut last_in_log: BTreeMap<&[u8], &Record> = BTreeMap::new();
    for r in records.values() {
        last_in_log.insert(r.key.as_deref().expect("keyed"), r);
    }
    for (key, &offset) in &latest {
        let name = String::from_utf8_lossy(key);
        let want = model.record(offset);
        let got = last_in_log.get(&key[..]);
        if offset < start {
            assert!(
                got.is_none(),
                "{name}: all its records are below the log start {start}, yet {:?} is read",
                got.map(|r| r.offset)
            );
        } else if want.is_tombstone() {
            if let Some(got) = got {
                assert_eq!(
                    got.offset, offset,
                    "{name}: latest is the tombstone at {offset}"
                );
            }
        } else {
            let got = got.unwrap_or_else(|| panic!("{name}: latest value {offset} is missing"));
            assert_eq!(got.offset, offset, "{name}: latest record");
            assert_is_appended(got, want);
        }
    }
    if model.config.delete_retention_ms == FOREVER_MS {
        for (key, &offset) in &latest {
            if offset >= start && model.record(offset).is_tombstone() {
                assert!(
                    records.contains_key(&offset),
                    "tombstone {offset} of {:?} dropped though delete.retention.ms is forever",
                    String::from_utf8_lossy(key)
                );
            }
        }
    }

    // 7: the key index and point reads.
    let live = model.live_keys();
    let want_keys: Vec<Vec<u8>> = live.keys().cloned().collect();
    assert_eq!(log.live_keys().expect("live_keys"), want_keys, "live keys");
    for key in (0..KEY_SPACE + 1).map(key_bytes) {
        let got = log.latest_for_key(&key).expect("latest_for_key");
        match live.get(&key) {
            Some(&offset) => {
                let got = got.unwrap_or_else(|| {
                    panic!(
                        "latest_for_key({:?}) is None, expected {offset}",
                        String::from_utf8_lossy(&key)
                    )
                });
                assert_eq!(got.offset, offset, "latest_for_key offset");
                assert_is_appended(&got, model.record(offset));
            }
            None => assert_eq!(
                got.map(|r| r.offset),
                None,
                "latest_for_key({:?}) of a key that is not live",
                String::from_utf8_lossy(&key)
            ),
        }
    }
    let probe_from = match probe {
        Probe::All => start,
        Probe::Tail => (end - 4).max(start),
    };
    for offset in probe_from..end {
        let got = log.read_record(offset).expect("read_record in range");
        match records.get(&offset) {
            Some(want) => assert_eq!(got.as_ref(), Some(want), "read_record({offset})"),
            None => assert_eq!(got, None, "read_record({offset}) of a removed record"),
        }
    }
    for offset in [start - 1, end] {
        if offset >= 0 {
            assert!(
                matches!(
                    log.read_record(offset),
                    Err(EngineError::OffsetOutOfRange { .. })
                ),
                "read_record({offset}) outside [{start}, {end})"
            );
        }
    }
    records
}

/// 6: what a retention run did, given the segments and records before it.
fn check_retention(
    log: &Log,
    config: &LogConfig,
    now_ms: i64,
    old_start: i64,
    before: &[SegmentInfo],
    records_before: &BTreeMap<i64, Record>,
) -> i64 {
    let new_start = log.log_start_offset();
    let after = log.segments();
    assert!(new_start >= old_start, "retention moved the log start back");
    assert_eq!(
        new_start,
        old_start.max(after[0].base_offset),
        "the log start is the first remaining segment's base"
    );
    assert_eq!(
        active_base(&after),
        active_base(before),
        "retention never deletes the active segment"
    );
    if after.len() >= 2 {
        assert!(
            after[1].base_offset > new_start,
            "segment {} is wholly below the log start {new_start} and was kept",
            after[0].base_offset
        );
    }
    let removed: Vec<&Record> = records_before
        .range(old_start..new_start)
        .map(|(_, r)| r)
        .collect();
    if !config.cleanup_policy.delete {
        assert_eq!(
            new_start, old_start,
            "without delete in cleanup.policy retention only drops segments below the log start"
        );
    } else if config.retention_bytes < 0 {
        for r in removed {
            assert!(
                config.retention_ms >= 0 && now_ms - r.timestamp > config.retention_ms,
                "retention at {now_ms} removed {} (timestamp {}) with retention.ms={} and no \
                 retention.bytes",
                r.offset,
                r.timestamp,
                config.retention_ms
            );
        }
    }
    if config.cleanup_policy.delete && config.retention_bytes >= 0 && !after[0].is_active {
        let size: u64 = after.iter().map(|s| s.size_bytes).sum();
        assert!(
            ((size - after[0].size_bytes) as i64) < config.retention_bytes,
            "retention.bytes={} left {size} bytes though the first segment ({} bytes) could go",
            config.retention_bytes,
            after[0].size_bytes
        );
    }
    new_start
}

/// 8: closed segments hold at most one record per key.
fn assert_closed_segments_compacted(log: &Log, records: &BTreeMap<i64, Record>) {
    let base = active_base(&log.segments());
    let mut seen: BTreeMap<&[u8], i64> = BTreeMap::new();
    for r in records.range(..base).map(|(_, r)| r) {
        let key = r.key.as_deref().expect("keyed");
        if let Some(first) = seen.insert(key, r.offset) {
            panic!(
                "after a full compaction {:?} has records {first} and {} below the active \
                 segment {base}",
                String::from_utf8_lossy(key),
                r.offset
            );
        }
    }
}

fn run(config: LogConfig, ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = Log::open(dir.path(), config.clone()).expect("open");
    let mut model = Model {
        config: config.clone(),
        history: Vec::new(),
        log_start_offset: 0,
        clock: lmqfs::engine::now_ms(),
        present: BTreeSet::new(),
        cleanings: Vec::new(),
    };
    for op in ops {
        let prev_end = model.log_end_offset();
        let mut removal = Removal::Nothing;
        let mut probe = Probe::Tail;
        let mut full_compaction = false;
        let mut cleaning = None;
        match op {
            Op::Append(drafts) => {
                let records: Vec<NewRecord> = drafts
                    .iter()
                    .enumerate()
                    .map(|(i, d)| NewRecord {
                        key: Some(key_bytes(d.key)),
                        value: d.value.as_ref().map(|pad| {
                            let mut v = format!("{}:", prev_end + i as i64).into_bytes();
                            v.extend_from_slice(pad);
                            v
                        }),
                        headers: d
                            .header
                            .iter()
                            .map(|h| Header {
                                key: "h".to_string(),
                                value: Some(h.clone()),
                            })
                            .collect(),
                        timestamp: Some(model.clock),
                    })
                    .collect();
                let info = log.append(&records).expect("append");
                assert_eq!(info.first_offset, prev_end, "first offset of the append");
                assert_eq!(info.last_offset, prev_end + records.len() as i64 - 1);
                for r in records {
                    model.history.push(Appended {
                        key: r.key.expect("keyed"),
                        value: r.value,
                        headers: r.headers,
                        timestamp: model.clock,
                    });
                }
            }
            Op::AppendKeyless => {
                let records = vec![
                    NewRecord {
                        key: Some(key_bytes(0)),
                        value: Some(b"refused".to_vec()),
                        headers: Vec::new(),
                        timestamp: Some(model.clock),
                    },
                    NewRecord {
                        key: None,
                        value: Some(b"no key".to_vec()),
                        headers: Vec::new(),
                        timestamp: Some(model.clock),
                    },
                ];
                match log.append(&records) {
                    Err(EngineError::InvalidArgument(_)) => {}
                    other => panic!("a keyless record in a compacted topic: {other:?}"),
                }
            }
            Op::Tick(ms) => model.clock += ms as i64,
            Op::Roll => log.roll().expect("roll"),
            Op::Compact {
                force,
                small_buffer,
            } => {
                let active_base = active_base(&log.segments());
                let cleaner = CleanerConfig {
                    dedupe_buffer_bytes: if small_buffer {
                        SMALL_DEDUPE_BUFFER
                    } else {
                        BIG_DEDUPE_BUFFER
                    },
                };
                let outcome = log
                    .compact(model.clock, force, &cleaner)
                    .expect("compact on a compacted topic");
                if outcome.skipped.is_none() {
                    cleaning = Some(Cleaning {
                        now_ms: model.clock,
                        log_end_offset: prev_end,
                    });
                }
                removal = Removal::Compaction {
                    now_ms: model.clock,
                    active_base,
                };
                probe = Probe::All;
                full_compaction = force && !small_buffer && config.min_compaction_lag_ms == 0;
            }
            Op::Retention => {
                let before = log.segments();
                let records_before = scan(&log, &model);
                log.run_retention(model.clock).expect("run_retention");
                model.log_start_offset = check_retention(
                    &log,
                    &config,
                    model.clock,
                    model.log_start_offset,
                    &before,
                    &records_before,
                );
                probe = Probe::All;
            }
            Op::DeleteRecords { back } => {
                let span = prev_end - model.log_start_offset + 3;
                let offset = model.log_start_offset - 1 + back as i64 % span;
                match log.delete_records(offset) {
                    Ok(start) => {
                        assert!((0..=prev_end).contains(&offset), "delete_records({offset})");
                        model.log_start_offset = model.log_start_offset.max(offset);
                        assert_eq!(start, model.log_start_offset, "delete_records result");
                    }
                    Err(EngineError::OffsetOutOfRange { .. }) => assert!(
                        offset < 0 || offset > prev_end,
                        "delete_records({offset}) refused"
                    ),
                    Err(e) => panic!("delete_records({offset}): {e}"),
                }
                probe = Probe::All;
            }
            Op::Reopen => {
                log.close().expect("close");
                drop(log);
                log = Log::open(dir.path(), config.clone()).expect("reopen");
                probe = Probe::All;
            }
            Op::CompactCrash {
                step,
                swap,
                small_buffer,
            } => {
                let active_base = active_base(&log.segments());
                let cleaner = CleanerConfig {
                    dedupe_buffer_bytes: if small_buffer {
                        SMALL_DEDUPE_BUFFER
                    } else {
                        BIG_DEDUPE_BUFFER
                    },
                };
                log.set_swap_crash(Some((step, swap)));
                match log.compact(model.clock, true, &cleaner) {
                    Ok(_) => {}
                    Err(EngineError::Io { .. }) => {}
                    Err(e) => panic!("compaction stopped at {step:?}: unexpected {e}"),
                }
                drop(log);
                log = Log::open(dir.path(), config.clone()).expect("reopen after a crash");
                // Whether it got to stamp tombstones or not, count it as a cleaning run: the
                // tombstone check only asks that some run could have.
                cleaning = Some(Cleaning {
                    now_ms: model.clock,
                    log_end_offset: prev_end,
                });
                removal = Removal::Compaction {
                    now_ms: model.clock,
                    active_base,
                };
                probe = Probe::All;
            }
            Op::Crash { flush } => {
                if flush {
                    log.flush().expect("flush");
                }
                drop(log);
                log = Log::open(dir.path(), config.clone()).expect("reopen after a crash");
                probe = Probe::All;
            }
        }
        let records = check(&log, &model, prev_end, removal, probe);
        if full_compaction {
            assert_closed_segments_compacted(&log, &records);
        }
        model.present = records.into_keys().collect();
        model.cleanings.extend(cleaning);
    }
    log.close().expect("close at the end");
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), .. ProptestConfig::default() })]

    #[test]
    fn cleanup_matches_reference_model(
        config in config(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(config, ops);
    }
}
