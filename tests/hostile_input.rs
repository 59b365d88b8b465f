//! Hostile input: random and mutated bytes fed to every parser, seeded and repeatable. The
//! record-batch decoder, the log loader on mutated segment files, `dump-log`, and every parser
//! of the file interface (topic, group and key names, offsets, time values, config, control
//! commands, group commits, JSON appends) must never panic: bad input is an error. Through a
//! real mount, names that try to reach outside the data directory (`..`, very long names, the
//! data directory's own internal names) get an error or stay inside it, and the daemon serves on.
//!
//! `LMQFS_HOSTILE_CASES` multiplies the number of cases (default 1); `LMQFS_HOSTILE_SEED` sets
//! the seed (default fixed, so CI runs are repeatable).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use lmqfs::engine::record::{decode_batch, encode_batch, verify_batch, BatchHeader};
use lmqfs::engine::{Compression, Header, Log, LogConfig, LogManager, NewRecord, TimestampType};
use lmqfs::fs::control::{parse_command, Scope};
use lmqfs::fs::groups::parse_commit;
use lmqfs::fs::json::parse_record_line;
use lmqfs::fs::node::{
    is_key_file_name, parse_from_entry, parse_offset, parse_partition, parse_partition_entry,
    parse_topic_file,
};
use lmqfs::fs::time::{parse_rfc3339_ms, parse_timestamp_ms};
use lmqfs::fs::{AccessMode, FsOptions, LmqFs};

/// Every input tried, over all tests of this binary (printed at the end of each).
static TRIED: AtomicU64 = AtomicU64::new(0);

fn cases(base: u32) -> u32 {
    let factor: u32 = std::env::var("LMQFS_HOSTILE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    base.saturating_mul(factor.max(1))
}

fn runner(base_cases: u32) -> TestRunner {
    let seed: u64 = std::env::var("LMQFS_HOSTILE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6c6d_7166_735f_6675);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases: cases(base_cases),
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// One mutation of a byte string: flip, set, insert, remove, truncate, or splice a chunk.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    Zero(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Set(p, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(p, v)| Mutation::Insert(p, v)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Mutation::Remove(p, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..400).prop_map(|(p, n)| Mutation::Zero(p, n)),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    let len = data.len();
    let at = |p: usize| if len == 0 { 0 } else { p % (len + 1) };
    match m {
        Mutation::Flip(p, b) if len > 0 => data[p % len] ^= b,
        Mutation::Set(p, b) if len > 0 => data[p % len] = *b,
        Mutation::Insert(p, v) => {
            let p = at(*p);
            data.splice(p..p, v.iter().copied());
        }
        Mutation::Remove(p, n) if len > 0 => {
            let p = p % len;
            data.drain(p..(p + n).min(len));
        }
        Mutation::Truncate(p) => data.truncate(at(*p)),
        Mutation::Zero(p, n) if len > 0 => {
            let p = p % len;
            data[p..(p + n).min(len)].fill(0);
        }
        _ => {}
    }
}

fn mutated(seeds: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        (0..seeds.len(), prop::collection::vec(mutation(), 0..6)).prop_map(move |(i, ms)| {
            let mut d = seeds[i].to_vec();
            for m in &ms {
                apply(&mut d, m);
            }
            d
        }),
    ]
}

fn codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Gzip),
        Just(Compression::Snappy),
        Just(Compression::Lz4),
        Just(Compression::Zstd),
    ]
}

fn new_record() -> impl Strategy<Value = NewRecord> {
    (
        prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
        prop::collection::vec(
            (
                "[a-z]{0,5}",
                prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
            ),
            0..3,
        ),
        prop::option::of(any::<i64>()),
    )
        .prop_map(|(key, value, headers, timestamp)| NewRecord {
            key,
            value,
            headers: headers
                .into_iter()
                .map(|(key, value)| Header { key, value })
                .collect(),
            timestamp,
        })
}

/// Seals a batch's CRC after a mutation, so the decoder's later stages see the bytes too.
fn reseal(batch: &mut [u8]) {
    if batch.len() >= 21 {
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

#[test]
fn the_batch_decoder_never_panics() {
    let mut runner = runner(4000);
    let strategy = (
        prop::collection::vec(new_record(), 1..6),
        codec(),
        any::<i64>(),
        prop::collection::vec(mutation(), 0..5),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..200),
    );
    runner
        .run(
            &strategy,
            |(records, codec, base, mutations, seal, random)| {
                TRIED.fetch_add(2, Ordering::Relaxed);
                // Pure noise.
                let _ = BatchHeader::parse(&random);
                let _ = verify_batch(&random);
                let _ = decode_batch(&random);
                let mut batch =
                    encode_batch(base, &records, codec, TimestampType::CreateTime, 1_000)
                        .expect("encode");
                let clean = batch.clone();
                for m in &mutations {
                    apply(&mut batch, m);
                }
                if seal {
                    reseal(&mut batch);
                }
                let _ = BatchHeader::parse(&batch);
                let _ = verify_batch(&batch);
                let decoded = decode_batch(&batch);
                if batch == clean {
                    prop_assert!(decoded.is_ok(), "a valid batch fails: {decoded:?}");
                }
                Ok(())
            },
        )
        .unwrap();
    eprintln!("inputs tried so far: {}", TRIED.load(Ordering::Relaxed));
}

/// Builds a small log (several segments) in `dir` and closes it.
fn small_log(dir: &Path, codec: &str) {
    let config = LogConfig::default()
        .apply(&[
            ("segment.bytes".into(), "2048".into()),
            ("compression.type".into(), codec.into()),
            ("segment.index.bytes".into(), "4096".into()),
            ("index.interval.bytes".into(), "128".into()),
        ])
        .unwrap();
    let log = Log::open(dir, config).unwrap();
    for i in 0..40 {
        let records: Vec<NewRecord> = (0..3)
            .map(|j| NewRecord {
                key: Some(format!("k{}", (i + j) % 7).into_bytes()),
                ..NewRecord::value(format!("record {i}-{j} {}", "v".repeat(i * 3)))
            })
            .collect();
        log.append(&records).unwrap();
    }
    log.close().unwrap();
}

#[test]
fn the_loader_and_dump_log_never_panic_on_mutated_segment_files() {
    let mut runner = runner(150);
    let strategy = (
        prop_oneof![Just("none"), Just("lz4"), Just("zstd")],
        any::<usize>(),
        prop::collection::vec(mutation(), 1..5),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(codec, which, mutations, unclean)| {
            TRIED.fetch_add(1, Ordering::Relaxed);
            let base = tempfile::tempdir().unwrap();
            let dir = base.path().join("t-0");
            small_log(&dir, codec);
            let mut files: Vec<_> = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            let victim = &files[which % files.len()];
            let mut bytes = fs::read(victim).unwrap();
            for m in &mutations {
                apply(&mut bytes, m);
            }
            fs::write(victim, &bytes).unwrap();
            if unclean {
                let _ = fs::remove_file(dir.join(".lmqfs-clean-shutdown"));
            }
            let segment_files: Vec<_> = files
                .iter()
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "log" || e == "index" || e == "timeindex")
                })
                .cloned()
                .collect();
            let _ = lmqfs::dump::dump_log(&segment_files, true, &mut std::io::sink());
            let config = LogConfig::default();
            if let Ok(log) = Log::open(&dir, config) {
                let mut offset = log.log_start_offset();
                while offset < log.log_end_offset() {
                    match log.read(offset, 4096) {
                        Ok(records) if !records.is_empty() => {
                            offset = records.last().unwrap().offset + 1;
                        }
                        _ => break,
                    }
                }
                let _ = log.append(&[NewRecord::value("after")]);
                let _ = log.close();
            }
            Ok(())
        })
        .unwrap();
    eprintln!("inputs tried so far: {}", TRIED.load(Ordering::Relaxed));
}

const CONFIG_SEEDS: &[&[u8]] = &[
    b"retention.ms=1000\n",
    b"segment.bytes=1048576\ncompression.type=lz4\n",
    b"cleanup.policy=compact,delete\nmin.cleanable.dirty.ratio=0.5\n",
    b"max.message.bytes=100\n# comment\n\n",
    b"message.timestamp.type=LogAppendTime\nflush.messages=1\n",
];
const CONTROL_SEEDS: &[&[u8]] = &[
    b"roll\n",
    b"flush",
    b"retention\n",
    b"compact\n",
    b"delete-records 3\n",
    b"delete-records 9223372036854775807\n",
];
const JSON_SEEDS: &[&[u8]] = &[
    br#"{"value":"v"}"#,
    br#"{"key":"k","value":null,"headers":{"h":"x","n":null},"timestamp":5}"#,
    br#"{"key_b64":"AAEC","value_b64":"/w==","offset":3,"timestamp_type":"CreateTime"}"#,
    br#"{"value":"\u00e9\ud83d\ude00","headers":{}}"#,
];
const SCALAR_SEEDS: &[&[u8]] = &[
    b"0",
    b"42\n",
    b"-1",
    b"9223372036854775807",
    b"2026-12-03T13:00:00Z",
    b"2026-12-03T13:00:00.123+02:00",
    b"1796300000000",
    b"00000000000000000000.log",
    b"from",
    b"3.json",
    b"end.jsonl",
];

/// Pure parsers of the file interface: random and mutated input is an error, never a panic.
#[test]
fn the_file_interface_parsers_never_panic() {
    let mut runner = runner(6000);
    let strategy = (
        mutated(CONFIG_SEEDS),
        mutated(CONTROL_SEEDS),
        mutated(JSON_SEEDS),
        mutated(SCALAR_SEEDS),
    );
    runner
        .run(&strategy, |(config, control, json, scalar)| {
            TRIED.fetch_add(4, Ordering::Relaxed);
            let config_text = String::from_utf8_lossy(&config);
            if let Ok(pairs) = LogConfig::parse_properties(&config_text) {
                let _ = LogConfig::default().apply(&pairs);
            }
            for scope in [Scope::Root, Scope::Topic, Scope::Partition] {
                let _ = parse_command(&control, scope);
            }
            let _ = parse_record_line(&json);
            let _ = parse_commit(&scalar);
            let _ = is_key_file_name(&scalar);
            let text = String::from_utf8_lossy(&scalar);
            let _ = parse_timestamp_ms(&text);
            let _ = parse_rfc3339_ms(&text);
            let _ = parse_offset(&text);
            let _ = parse_partition(&text, 3);
            let _ = parse_partition_entry(&text);
            let _ = parse_topic_file(&text);
            let _ = parse_from_entry(&text);
            let _ = LogManager::validate_topic_name(&text);
            Ok(())
        })
        .unwrap();
    eprintln!("inputs tried so far: {}", TRIED.load(Ordering::Relaxed));
}

/// The same inputs through the whole file layer (no mount): names looked up and created in every
/// directory, bytes written to every writable file. Nothing panics, every refusal is an error,
/// and the filesystem still works afterwards.
#[test]
fn the_file_layer_survives_random_names_and_writes() {
    let base = tempfile::tempdir().unwrap();
    let manager = LogManager::open(&base.path().join("data"), LogConfig::default(), 2).unwrap();
    let fs_ = Arc::new(LmqFs::new(Arc::new(manager), FsOptions::default()));
    let root = 1u64;
    fs_.mkdir(root, OsStr::new("t")).unwrap();
    let try_ino = |path: &str| -> lmqfs::fs::FsResult<u64> {
        let mut ino = root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = fs_.lookup(ino, OsStr::new(part))?.attr.ino;
        }
        Ok(ino)
    };
    let ino = |path: &str| try_ino(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let write = |path: &str, data: &[u8]| {
        let Ok(ino) = try_ino(path) else {
            return;
        };
        if let Ok(opened) = fs_.open(ino, AccessMode::Write, false) {
            let _ = fs_.write(ino, opened.fh, 0, data, 0);
            let _ = fs_.flush(ino, opened.fh, 0);
            let _ = fs_.release(ino, opened.fh);
        }
    };
    write("t/0/append", b"zero\none\ntwo\n");
    let dirs = [
        "",
        "t",
        "t/0",
        "t/0/from",
        "t/0/time",
        "t/0/keys",
        "t/0/groups",
        "t/0/consume",
        "t/0/follow",
        "t/0/segments",
    ];
    let writable = [
        "t/config",
        "t/partitions",
        "control",
        "t/control",
        "t/0/control",
        "t/0/append",
        "t/0/append.jsonl",
    ];
    let mut runner = runner(1500);
    let strategy = (
        0..dirs.len(),
        mutated(SCALAR_SEEDS),
        0..writable.len(),
        prop_oneof![
            mutated(CONFIG_SEEDS),
            mutated(CONTROL_SEEDS),
            mutated(JSON_SEEDS),
            mutated(SCALAR_SEEDS),
        ],
    );
    runner
        .run(&strategy, |(dir, name, target, data)| {
            TRIED.fetch_add(2, Ordering::Relaxed);
            let parent = ino(dirs[dir]);
            let name = OsStr::from_bytes(&name);
            if let Ok(entry) = fs_.lookup(parent, name) {
                if let Ok(opened) = fs_.open(entry.attr.ino, AccessMode::Read, false) {
                    let _ = fs_.read(entry.attr.ino, opened.fh, 0, 4096);
                    let _ = fs_.release(entry.attr.ino, opened.fh);
                }
                let _ = fs_.readdir(entry.attr.ino);
            }
            if dirs[dir] == "t/0/keys" || dirs[dir] == "t/0/groups" {
                if let Ok((entry, opened)) = fs_.create(parent, name, AccessMode::Write) {
                    let _ = fs_.write(entry.attr.ino, opened.fh, 0, &data, 0);
                    let _ = fs_.flush(entry.attr.ino, opened.fh, 0);
                    let _ = fs_.release(entry.attr.ino, opened.fh);
                }
            }
            // Names made at the root are topics; drop them again so the run stays small.
            if dir == 0 && fs_.mkdir(root, name).is_ok() {
                fs_.rmdir(root, name).unwrap();
            }
            // Keep the log and its config sane between cases: only the last of these
            // writes may change something.
            let path = writable[target];
            if path != "t/partitions" {
                write(path, &data);
            }
            Ok(())
        })
        .unwrap();
    // Still working: an append is read back.
    write(
        "t/config",
        b"max.message.bytes=1048576\ncleanup.policy=delete\n",
    );
    write("t/0/append", b"\nstill works\n");
    let log = ino("t/0/log");
    let opened = fs_.open(log, AccessMode::Read, false).unwrap();
    let size = fs_.getattr(log, None).unwrap().attr.size;
    let tail = fs_
        .read(log, opened.fh, size.saturating_sub(12), 12)
        .unwrap();
    assert_eq!(tail, b"still works\n");
    eprintln!("inputs tried so far: {}", TRIED.load(Ordering::Relaxed));
}

/// Names through a real mount never reach outside the data directory, never make files
/// there that are not the engine's, and never crash the daemon.
#[test]
fn hostile_names_through_the_mount_stay_inside_the_data_dir() {
    let Some(mut m) = common::Mount::new() else {
        return;
    };
    m.create_topic("t", 1);
    common::write_once(&m.path("t/0/append"), b"kept\n").unwrap();
    // The names go to topic `h` (writes to keys/ and groups/ there are legitimate records).
    m.create_topic("h", 1);
    let outside = m.scratch().join("outside");
    fs::create_dir(&outside).unwrap();
    let long = "n".repeat(300);
    let names = [
        // (`..` is resolved by the kernel and never reaches the daemon; a `/` separates names.)
        "..",
        ".",
        "..%2f..",
        ".lmqfs-topics",
        ".lmqfs-work",
        ".lmqfs-internal",
        ".lock",
        "t-0",
        "__consumer_offsets",
        long.as_str(),
        &long[..249],
        &long[..250],
        "a\\b",
        "-",
        "\u{202e}evil",
    ];
    let mut tried = 0;
    for name in names {
        for dir in [
            "",
            "h",
            "h/0",
            "h/0/keys",
            "h/0/groups",
            "h/0/from",
            "h/0/time",
        ] {
            let p = m.mnt.join(dir).join(name);
            tried += 4;
            let _ = fs::create_dir(&p);
            let _ = fs::metadata(&p);
            let _ = fs::write(&p, b"x\n");
            let _ = fs::read(&p);
            m.assert_serving();
        }
    }
    // NUL cannot cross the system call boundary: the path is refused before the kernel.
    let nul = m.path("h/0/keys/a\0b");
    assert!(fs::write(&nul, b"x").is_err());

    // Nothing appeared outside the data directory.
    assert!(
        common::ls(&outside).is_empty(),
        "files outside the data dir"
    );
    let mut beside: Vec<String> = common::ls(m.scratch())
        .into_iter()
        .filter(|n| !n.starts_with("daemon-"))
        .collect();
    beside.sort();
    assert_eq!(beside, ["data", "mnt", "outside"]);
    // Inside it, only topic directories and the engine's own entries.
    for entry in common::ls(&m.data) {
        assert!(
            entry.starts_with(".lmqfs-") || entry == ".lock" || entry.ends_with("-0"),
            "unexpected entry {entry:?} in the data directory"
        );
    }
    // Topics named like the data directory's internal entries are ordinary topics (their
    // partition directories get a `-0` suffix) and survive a remount.
    let internal = [".lmqfs-topics", ".lmqfs-work", ".lmqfs-internal", ".lock"];
    for name in internal {
        assert!(m.path(name).is_dir(), "{name} was not created as a topic");
        common::write_once(&m.path(&format!("{name}/0/append")), b"inside\n").unwrap();
    }
    m.remount();
    assert_eq!(common::read_string(&m.path("t/0/log")), "kept\n");
    for name in internal {
        let log = common::read_string(&m.path(&format!("{name}/0/log")));
        assert!(log.ends_with("inside\n"), "{name}: {log:?}");
    }
    eprintln!("hostile names tried through the mount: {tried}");
}
