//! Reference-model property test: random appends, reads, time lookups, rolls, flushes,
//! delete-records, truncations, clean close/reopen and simulated crashes, run against the engine
//! and against a plain `Vec` of records, compared after every step.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use lmqfs::engine::record::Header;
use lmqfs::engine::{Compression, EngineError, Log, LogConfig, NewRecord, TimestampType};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq)]
struct ModelRecord {
    offset: i64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<Header>,
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<NewRecord>),
    Read {
        back: u16,
        max_bytes: u16,
    },
    ReadRecord {
        back: u16,
    },
    OffsetForTimestamp(i64),
    Roll,
    Flush,
    DeleteRecords {
        back: u16,
    },
    TruncateTo {
        back: u16,
    },
    Reopen,
    /// Drop without close; then cut `chop` bytes (at most the unflushed tail) off the last
    /// `.log` and append `garbage` bytes, as a power loss and a torn write would.
    Crash {
        chop: u16,
        garbage: Vec<u8>,
    },
}

fn new_record() -> impl Strategy<Value = NewRecord> {
    (
        prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
        prop::option::weighted(0.9, prop::collection::vec(any::<u8>(), 0..120)),
        prop::collection::vec(
            (
                "[a-z]{0,4}",
                prop::option::of(prop::collection::vec(any::<u8>(), 0..6)),
            ),
            0..3,
        ),
        1_000i64..1_100,
    )
        .prop_map(|(key, value, headers, timestamp)| NewRecord {
            key,
            value,
            headers: headers
                .into_iter()
                .map(|(key, value)| Header { key, value })
                .collect(),
            timestamp: Some(timestamp),
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec(new_record(), 1..12).prop_map(Op::Append),
        3 => (any::<u16>(), 1u16..2000).prop_map(|(back, max_bytes)| Op::Read { back, max_bytes }),
        3 => any::<u16>().prop_map(|back| Op::ReadRecord { back }),
        2 => (990i64..1_110).prop_map(Op::OffsetForTimestamp),
        1 => Just(Op::Roll),
        1 => Just(Op::Flush),
        1 => any::<u16>().prop_map(|back| Op::DeleteRecords { back }),
        1 => any::<u16>().prop_map(|back| Op::TruncateTo { back }),
        1 => Just(Op::Reopen),
        1 => (any::<u16>(), prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(chop, garbage)| Op::Crash { chop, garbage }),
    ]
}

fn config() -> impl Strategy<Value = LogConfig> {
    (
        300u32..4000,
        0u32..600,
        prop::option::of(3u64..40),
        2u32..30,
        400u32..3000,
        prop::sample::select(Compression::ALL.to_vec()),
        prop::bool::ANY,
    )
        .prop_map(
            |(
                segment_bytes,
                interval,
                messages,
                index_entries,
                max_message,
                codec,
                append_time,
            )| {
                LogConfig {
                    segment_bytes,
                    index_interval_bytes: interval,
                    segment_messages: messages,
                    segment_index_bytes: index_entries * 12,
                    max_message_bytes: max_message,
                    compression_type: codec,
                    message_timestamp_type: if append_time {
                        TimestampType::LogAppendTime
                    } else {
                        TimestampType::CreateTime
                    },
                    ..LogConfig::default()
                }
            },
        )
}

struct Model {
    records: Vec<ModelRecord>,
    log_start_offset: i64,
    log_end_offset: i64,
}

impl Model {
    fn retained(&self) -> impl Iterator<Item = &ModelRecord> {
        self.records
            .iter()
            .filter(move |r| r.offset >= self.log_start_offset)
    }
}

/// Picks an offset around the retained range from a random number.
fn pick(model: &Model, back: u16) -> i64 {
    let span = model.log_end_offset - model.log_start_offset + 3;
    model.log_start_offset - 1 + (back as i64 % span)
}

fn assert_same(log: &Log, model: &Model) {
    assert_eq!(log.log_end_offset(), model.log_end_offset, "log end offset");
    assert_eq!(
        log.log_start_offset(),
        model.log_start_offset,
        "log start offset"
    );
    let mut all = Vec::new();
    let mut next = model.log_start_offset;
    while next < model.log_end_offset {
        let records = log.read(next, 500).expect("read");
        assert!(
            !records.is_empty(),
            "read at {next} returned nothing before the end"
        );
        next = records.last().unwrap().offset + 1;
        all.extend(records);
    }
    let expected: Vec<&ModelRecord> = model.retained().collect();
    assert_eq!(all.len(), expected.len(), "record count");
    for (got, want) in all.iter().zip(expected) {
        assert_eq!(got.offset, want.offset);
        assert_eq!(
            got.timestamp, want.timestamp,
            "timestamp of {}",
            want.offset
        );
        assert_eq!(got.key, want.key, "key of {}", want.offset);
        assert_eq!(got.value, want.value, "value of {}", want.offset);
        assert_eq!(got.headers, want.headers, "headers of {}", want.offset);
    }
}

fn last_log_file(dir: &Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a .log file")
}

fn run(config: LogConfig, ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    let mut model = Model {
        records: Vec::new(),
        log_start_offset: 0,
        log_end_offset: 0,
    };
    // The last `.log` and its byte length at the recovery point: a crash may lose bytes after it.
    let mut flushed: (std::path::PathBuf, u64) = (last_log_file(dir.path()), 0);
    let mut recovery_point = 0;
    for op in ops {
        match op {
            Op::Append(records) => match log.append(&records) {
                Ok(info) => {
                    assert_eq!(info.first_offset, model.log_end_offset);
                    assert_eq!(
                        info.last_offset,
                        model.log_end_offset + records.len() as i64 - 1
                    );
                    for (i, r) in records.into_iter().enumerate() {
                        model.records.push(ModelRecord {
                            offset: info.first_offset + i as i64,
                            timestamp: match config.message_timestamp_type {
                                TimestampType::CreateTime => r.timestamp.unwrap(),
                                TimestampType::LogAppendTime => info.max_timestamp,
                            },
                            key: r.key,
                            value: r.value,
                            headers: r.headers,
                        });
                    }
                    model.log_end_offset = info.last_offset + 1;
                }
                Err(EngineError::RecordTooLarge { .. }) => {}
                Err(e) => panic!("append failed: {e}"),
            },
            Op::Read { back, max_bytes } => {
                let offset = pick(&model, back);
                match log.read(offset, max_bytes as usize) {
                    Ok(records) => {
                        let expected: Vec<&ModelRecord> =
                            model.retained().filter(|r| r.offset >= offset).collect();
                        assert!(offset >= model.log_start_offset && offset <= model.log_end_offset);
                        assert_eq!(records.is_empty(), expected.is_empty());
                        for (got, want) in records.iter().zip(&expected) {
                            assert_eq!(got.offset, want.offset);
                            assert_eq!(got.value, want.value);
                        }
                        assert!(records.len() <= expected.len());
                    }
                    Err(EngineError::OffsetOutOfRange { .. }) => {
                        assert!(offset < model.log_start_offset || offset > model.log_end_offset)
                    }
                    Err(e) => panic!("read failed: {e}"),
                }
            }
            Op::ReadRecord { back } => {
                let offset = pick(&model, back);
                match log.read_record(offset) {
                    Ok(Some(r)) => {
                        let want = model.retained().find(|m| m.offset == offset).unwrap();
                        assert_eq!(r.value, want.value);
                        assert_eq!(r.key, want.key);
                    }
                    Ok(None) => panic!("no record at {offset} inside the range"),
                    Err(EngineError::OffsetOutOfRange { .. }) => {
                        assert!(offset < model.log_start_offset || offset >= model.log_end_offset)
                    }
                    Err(e) => panic!("read_record failed: {e}"),
                }
            }
            Op::OffsetForTimestamp(ts) => {
                let want = model
                    .retained()
                    .find(|r| r.timestamp >= ts)
                    .map(|r| r.offset)
                    .unwrap_or(model.log_end_offset);
                assert_eq!(
                    log.offset_for_timestamp(ts).unwrap(),
                    want,
                    "time lookup {ts}"
                );
            }
            Op::Roll => log.roll().unwrap(),
            Op::Flush => log.flush().unwrap(),
            Op::DeleteRecords { back } => {
                let offset = pick(&model, back);
                match log.delete_records(offset) {
                    Ok(start) => {
                        model.log_start_offset = model.log_start_offset.max(offset);
                        assert_eq!(start, model.log_start_offset);
                    }
                    Err(EngineError::OffsetOutOfRange { .. }) => {
                        assert!(offset < 0 || offset > model.log_end_offset)
                    }
                    Err(e) => panic!("delete_records failed: {e}"),
                }
            }
            Op::TruncateTo { back } => {
                let offset = pick(&model, back).max(0);
                log.truncate_to(offset).unwrap();
                if offset >= model.log_end_offset {
                    // A no-op.
                } else if offset <= model.log_start_offset {
                    // Nothing retained survives: the log starts afresh at `offset`.
                    model.records.clear();
                    model.log_start_offset = offset;
                    model.log_end_offset = offset;
                } else {
                    // Whole batches go, so the log may end a little before `offset` (an
                    // append has at most 11 records).
                    let end = log.log_end_offset();
                    assert!(
                        end <= offset && end > offset - 12,
                        "truncated to {offset}, end {end}"
                    );
                    model.records.retain(|r| r.offset < end);
                    model.log_end_offset = end;
                    model.log_start_offset = model.log_start_offset.min(end);
                }
            }
            Op::Reopen => {
                log.close().unwrap();
                drop(log);
                log = Log::open(dir.path(), config.clone()).unwrap();
            }
            Op::Crash { chop, garbage } => {
                drop(log);
                let last = last_log_file(dir.path());
                let len = std::fs::metadata(&last).unwrap().len();
                let durable = if last == flushed.0 { flushed.1 } else { 0 };
                let cut = (chop as u64).min(len.saturating_sub(durable));
                let file = OpenOptions::new().append(true).open(&last).unwrap();
                file.set_len(len - cut).unwrap();
                (&file).write_all(&garbage).unwrap();
                drop(file);
                log = Log::open(dir.path(), config.clone()).unwrap();
                let end = log.log_end_offset();
                assert!(
                    end >= recovery_point,
                    "lost flushed data: end {end} < {recovery_point}"
                );
                assert!(end <= model.log_end_offset);
                model.records.retain(|r| r.offset < end);
                model.log_end_offset = end;
                model.log_start_offset = model.log_start_offset.min(end);
            }
        }
        assert_same(&log, &model);
        if log.recovery_point() != recovery_point {
            recovery_point = log.recovery_point();
            let last = last_log_file(dir.path());
            let active_base: i64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            let bytes = if recovery_point == active_base {
                0
            } else {
                std::fs::metadata(&last).unwrap().len()
            };
            flushed = (last, bytes);
        }
    }
    log.close().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn engine_matches_reference_model(config in config(), ops in prop::collection::vec(op(), 1..60)) {
        run(config, ops);
    }
}
