//! The file interface file by file: what each file holds, how views behave as the log changes,
//! modes, config, stats, durability points and topic life cycle.

mod common;

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use serde_json::Value;

use common::{
    errno_of, open_append, read, read_string, sh_ok, stat_i64, stats, write_once, Follower, Mount,
};

fn json(path: &std::path::Path) -> Value {
    let text = read_string(path);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {text}", path.display()))
}

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn readme_is_read_only_usage_help() {
    let Some(m) = Mount::new() else { return };
    let readme = read_string(&m.path("README"));
    for word in [
        "append",
        "log",
        "config",
        "partitions",
        "control",
        "stats",
        "keys/",
        "retention",
        "compact",
    ] {
        assert!(readme.contains(word), "README does not mention {word}");
    }
    assert_eq!(mode(&m.path("README")) & 0o222, 0, "README is writable");
    assert_eq!(
        fs::metadata(m.path("README")).unwrap().len(),
        readme.len() as u64
    );
}

#[test]
fn file_modes_are_honest_and_owned_by_the_mounting_user() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    sh_ok(&m.mnt, "echo x > t/0/append");
    let write_only = ["t/0/append", "t/0/append.jsonl"];
    let read_only = [
        "README",
        "t/0/log",
        "t/0/log.jsonl",
        "t/0/stats",
        "t/0/0",
        "t/0/0.json",
        "t/0/from/0",
        "t/0/time/0",
    ];
    let read_write = ["t/config", "t/partitions"];
    for f in write_only {
        let mode = mode(&m.path(f));
        assert_eq!(mode & 0o444, 0, "{f} is readable: {mode:o}");
        assert_ne!(mode & 0o200, 0, "{f} is not writable: {mode:o}");
    }
    for f in read_only {
        let mode = mode(&m.path(f));
        assert_eq!(mode & 0o222, 0, "{f} is writable: {mode:o}");
        assert_ne!(mode & 0o400, 0, "{f} is not readable: {mode:o}");
    }
    for f in read_write {
        let mode = mode(&m.path(f));
        assert_eq!(mode & 0o600, 0o600, "{f} is not read-write: {mode:o}");
    }
    for f in ["control", "t/control", "t/0/control"] {
        assert_ne!(mode(&m.path(f)) & 0o200, 0, "{f} is not writable");
    }
    // Only the mounting user by default: nothing for group or others to write.
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    for f in ["README", "t", "t/0", "t/0/append", "t/0/log", "t/config"] {
        let meta = fs::metadata(m.path(f)).unwrap();
        assert_eq!(meta.uid(), uid, "{f} not owned by the mounting user");
        assert_eq!(meta.mode() & 0o022, 0, "{f} writable by group/others");
    }
}

#[test]
fn data_dir_is_created_private() {
    let Some(m) = Mount::new() else { return };
    assert_eq!(mode(&m.data) & 0o777, 0o700);
}

#[test]
fn config_lists_every_key_and_writes_change_only_those_keys() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 1);
    let config = read_string(&m.path("t/config"));
    let keys: Vec<&str> = config
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect();
    for key in [
        "segment.bytes",
        "segment.ms",
        "segment.messages",
        "segment.index.bytes",
        "index.interval.bytes",
        "retention.ms",
        "retention.bytes",
        "cleanup.policy",
        "min.cleanable.dirty.ratio",
        "delete.retention.ms",
        "min.compaction.lag.ms",
        "max.message.bytes",
        "message.timestamp.type",
        "compression.type",
        "flush.messages",
        "flush.ms",
        "file.delete.delay.ms",
    ] {
        assert!(keys.contains(&key), "config lacks {key}:\n{config}");
    }
    for line in [
        "segment.bytes=1073741824",
        "retention.ms=604800000",
        "retention.bytes=-1",
        "cleanup.policy=delete",
        "max.message.bytes=1048576",
        "message.timestamp.type=CreateTime",
        "compression.type=none",
        "file.delete.delay.ms=60000",
    ] {
        assert!(
            config.lines().any(|l| l == line),
            "config lacks default {line}:\n{config}"
        );
    }
    // `>` (O_TRUNC) and a multi-line write both work; other keys keep their values.
    sh_ok(&m.mnt, "echo retention.ms=5000 > t/config");
    write_once(
        &m.path("t/config"),
        b"segment.bytes=1048576\ncompression.type=zstd\n",
    )
    .unwrap();
    let changed = read_string(&m.path("t/config"));
    let expected: Vec<String> = config
        .lines()
        .map(|l| match l.split_once('=').map(|(k, _)| k) {
            Some("retention.ms") => "retention.ms=5000".to_string(),
            Some("segment.bytes") => "segment.bytes=1048576".to_string(),
            Some("compression.type") => "compression.type=zstd".to_string(),
            _ => l.to_string(),
        })
        .collect();
    assert_eq!(changed.lines().collect::<Vec<_>>(), expected);
    m.remount();
    assert_eq!(read_string(&m.path("t/config")), changed);
}

#[test]
fn mount_options_set_the_default_topic_config() {
    let Some(mut m) = Mount::with_options(&["default.partitions=3", "compression.type=lz4"]) else {
        return;
    };
    m.create_topic("t", 1);
    assert_eq!(read_string(&m.path("t/partitions")).trim(), "3");
    assert!(read_string(&m.path("t/config"))
        .lines()
        .any(|l| l == "compression.type=lz4"));
    let lines: String = (0..100)
        .map(|i| format!("compressible line {i}\n"))
        .collect();
    write_once(&m.path("t/2/append"), lines.as_bytes()).unwrap();
    assert_eq!(read_string(&m.path("t/2/log")), lines);
    // The batch on disk is lz4-compressed (codec 3).
    let segment = read(&m.path("t/2/segments/00000000000000000000.log"));
    assert_eq!(common::batch_compressions(&segment), [3]);
    m.remount();
    assert_eq!(read_string(&m.path("t/2/log")), lines);
}

#[test]
fn stats_reports_offsets_size_and_outcomes_as_json() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    let empty = stats(&m.path("t/0"));
    assert_eq!(empty["log_start_offset"], 0);
    assert_eq!(empty["log_end_offset"], 0);
    write_once(&m.path("t/0/append"), b"a\nb\nc\n").unwrap();
    write_once(&m.path("t/0/control"), b"roll\n").unwrap();
    write_once(&m.path("t/0/append"), b"d\n").unwrap();
    let s = stats(&m.path("t/0"));
    assert_eq!(s["log_start_offset"], 0, "{s}");
    assert_eq!(s["log_end_offset"], 4, "{s}");
    assert_eq!(s["segment_count"], 2, "{s}");
    assert!(
        s["recovery_point"]
            .as_i64()
            .is_some_and(|r| (0..=4).contains(&r)),
        "{s}"
    );
    let on_disk: u64 = common::files_under(&m.data)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(s["size_bytes"].as_u64(), Some(on_disk), "{s}");
    let keys: Vec<&String> = s.as_object().unwrap().keys().collect();
    for outcome in ["roll", "retention", "compaction"] {
        assert!(
            keys.iter().any(|k| k.contains(outcome)),
            "stats has no {outcome} outcome: {s}"
        );
    }
}

fn offset_files_hold_exact_values_and_json_records(m: &Mount) {
    m.create_topic("t", 1);
    write_once(&m.path("t/0/append"), b"first\nsecond value\n").unwrap();
    assert_eq!(read(&m.path("t/0/0")), b"first");
    assert_eq!(read(&m.path("t/0/1")), b"second value");
    assert_eq!(fs::metadata(m.path("t/0/1")).unwrap().len(), 12);
    let before = common::now_ms();
    let j = json(&m.path("t/0/1.json"));
    assert_eq!(j["offset"], 1);
    assert_eq!(j["value"], "second value");
    assert_eq!(j["key"], Value::Null);
    assert_eq!(j["headers"], serde_json::json!({}));
    assert_eq!(j["timestamp_type"], "CreateTime");
    let ts = j["timestamp"].as_i64().unwrap();
    assert!(
        ts > before - 60_000 && ts <= before,
        "timestamp {ts} is not the append time"
    );
    // Offsets resolve by name but are not listed.
    let listed: Vec<String> = fs::read_dir(m.path("t/0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !listed.contains(&"0".to_string()),
        "offsets are listed: {listed:?}"
    );
    for name in [
        "append",
        "append.jsonl",
        "log",
        "log.jsonl",
        "stats",
        "control",
        "from",
        "time",
        "segments",
        "keys",
    ] {
        assert!(
            listed.iter().any(|l| l == name),
            "{name} not listed: {listed:?}"
        );
    }
}

fn append_jsonl_carries_keys_headers_timestamps_and_binary_values(m: &Mount) {
    m.create_topic("t", 1);
    write_once(
        &m.path("t/0/append.jsonl"),
        br#"{"key":"user-1","value":"hello","headers":{"trace":"abc","n":"1"},"timestamp":1700000000000}
{"value_b64":"/wABAg==","key_b64":"gA=="}
{"key":"gone","value":null}
"#,
    )
    .unwrap();
    let r0 = json(&m.path("t/0/0.json"));
    assert_eq!(r0["key"], "user-1");
    assert_eq!(r0["value"], "hello");
    assert_eq!(r0["headers"], serde_json::json!({"trace":"abc","n":"1"}));
    assert_eq!(r0["timestamp"], 1_700_000_000_000i64);
    assert_eq!(r0["timestamp_type"], "CreateTime");
    assert_eq!(read(&m.path("t/0/0")), b"hello");
    // Binary value and key: exact bytes in <offset>, base64 in JSON.
    assert_eq!(read(&m.path("t/0/1")), [0xff, 0x00, 0x01, 0x02]);
    let r1 = json(&m.path("t/0/1.json"));
    assert_eq!(r1["value_b64"], "/wABAg==");
    assert_eq!(r1["key_b64"], "gA==");
    // A tombstone: null value.
    let r2 = json(&m.path("t/0/2.json"));
    assert_eq!(r2["key"], "gone");
    assert_eq!(r2["value"], Value::Null);
    assert!(r2.get("value_b64").is_none());
    // log.jsonl: one JSON record per line, the same as the .json files.
    let lines: Vec<Value> = read_string(&m.path("t/0/log.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, [r0, r1, r2]);
}

#[test]
fn log_append_time_replaces_the_producer_timestamp() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    write_once(
        &m.path("t/config"),
        b"message.timestamp.type=LogAppendTime\n",
    )
    .unwrap();
    let before = common::now_ms();
    write_once(
        &m.path("t/0/append.jsonl"),
        br#"{"value":"v","timestamp":1000}
"#,
    )
    .unwrap();
    let after = common::now_ms();
    let r = json(&m.path("t/0/0.json"));
    assert_eq!(r["timestamp_type"], "LogAppendTime");
    let ts = r["timestamp"].as_i64().unwrap();
    assert!(
        (before..=after).contains(&ts),
        "timestamp {ts} not in [{before}, {after}]"
    );
}

fn from_offset_views_start_at_that_record(m: &Mount) {
    m.create_topic("t", 1);
    write_once(&m.path("t/0/append"), b"r0\nr1\nr2\nr3\n").unwrap();
    assert_eq!(read_string(&m.path("t/0/from/2")), "r2\nr3\n");
    assert_eq!(read_string(&m.path("t/0/from/0")), "r0\nr1\nr2\nr3\n");
    let jsonl = read_string(&m.path("t/0/from/3.jsonl"));
    let v: Value = serde_json::from_str(jsonl.trim_end()).unwrap();
    assert_eq!(
        (v["offset"].as_i64(), v["value"].as_str()),
        (Some(3), Some("r3"))
    );
    assert_eq!(fs::metadata(m.path("t/0/from/2")).unwrap().len(), 6);
    // from/<log end offset> is an empty view that follows new records.
    let mut at_end = File::open(m.path("t/0/from/4")).unwrap();
    let mut s = String::new();
    at_end.read_to_string(&mut s).unwrap();
    assert_eq!(s, "");
    // The view grows like log does.
    write_once(&m.path("t/0/append"), b"r4\n").unwrap();
    assert_eq!(read_string(&m.path("t/0/from/2")), "r2\nr3\nr4\n");
    at_end.read_to_string(&mut s).unwrap();
    assert_eq!(s, "r4\n");
    assert_eq!(sh_ok(&m.mnt, "tail -n 1 t/0/from/1"), "r4\n");
}

fn time_lookup_accepts_milliseconds_and_rfc3339(m: &Mount) {
    m.create_topic("t", 1);
    // 1700000000000 ms is 2023-11-14T22:13:20Z.
    write_once(
        &m.path("t/0/append.jsonl"),
        br#"{"value":"a","timestamp":1700000000000}
{"value":"b","timestamp":1700000001000}
{"value":"c","timestamp":1700000002000}
"#,
    )
    .unwrap();
    for (t, offset) in [
        ("0", 0),
        ("1700000000000", 0),
        ("1700000000500", 1),
        ("1700000001000", 1),
        ("1700000002000", 2),
        ("1700000002001", 3),
        ("2023-11-14T22:13:20Z", 0),
        ("2023-11-14T22:13:20.500Z", 1),
        ("2023-11-14T23:13:21+01:00", 1),
        ("2023-11-14T22:13:21.001Z", 2),
        ("2030-01-01T00:00:00Z", 3),
    ] {
        let got = read_string(&m.path(&format!("t/0/time/{t}")));
        assert_eq!(got.trim(), offset.to_string(), "time/{t}");
    }
    let e = errno_of("time/yesterday", fs::read(m.path("t/0/time/yesterday")));
    assert_eq!(e, libc::EINVAL);
}

fn log_size_is_exact_and_an_open_reader_sees_growth(m: &Mount) {
    m.create_topic("t", 1);
    let log = m.path("t/0/log");
    assert_eq!(fs::metadata(&log).unwrap().len(), 0);
    assert_eq!(read(&log), b"");
    let mut reader = File::open(&log).unwrap();
    let mut seen = Vec::new();
    for i in 0..50 {
        let line = format!("growth {i}\n");
        write_once(&m.path("t/0/append"), line.as_bytes()).unwrap();
        // Never stale: size and content show the record as soon as write() returned.
        let expected_len = seen.len() + line.len();
        assert_eq!(fs::metadata(&log).unwrap().len(), expected_len as u64);
        assert_eq!(reader.metadata().unwrap().len(), expected_len as u64);
        let mut chunk = Vec::new();
        reader.read_to_end(&mut chunk).unwrap();
        assert_eq!(chunk, line.as_bytes(), "record {i} through the open reader");
        seen.extend_from_slice(&chunk);
    }
    // Seek-then-read on the same handle.
    reader
        .seek(SeekFrom::Start(seen.len() as u64 - 10))
        .unwrap();
    let mut tail = String::new();
    reader.read_to_string(&mut tail).unwrap();
    assert_eq!(tail, "growth 49\n");
    let jsonl = m.path("t/0/log.jsonl");
    assert_eq!(
        fs::metadata(&jsonl).unwrap().len(),
        read(&jsonl).len() as u64
    );
}

#[test]
fn a_line_split_across_writes_is_joined() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    let mut f = open_append(&m.path("t/0/append")).unwrap();
    f.write_all(b"hel").unwrap();
    assert_eq!(
        stat_i64(&m.path("t/0"), "log_end_offset"),
        0,
        "half a line was appended"
    );
    f.write_all(b"lo\nwor").unwrap();
    assert_eq!(read_string(&m.path("t/0/log")), "hello\n");
    f.write_all(b"ld\n").unwrap();
    assert_eq!(read_string(&m.path("t/0/log")), "hello\nworld\n");
    drop(f);
    assert_eq!(read_string(&m.path("t/0/log")), "hello\nworld\n");
}

#[test]
fn an_unterminated_last_line_is_appended_on_close() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    let mut f = open_append(&m.path("t/0/append")).unwrap();
    f.write_all(b"a\nb").unwrap();
    assert_eq!(read_string(&m.path("t/0/log")), "a\n");
    drop(f);
    assert_eq!(read_string(&m.path("t/0/log")), "a\nb\n");
    sh_ok(&m.mnt, "printf 'no newline' > t/0/append");
    assert_eq!(read(&m.path("t/0/2")), b"no newline");
    // Two open files: their partial lines never mix.
    let mut x = open_append(&m.path("t/0/append")).unwrap();
    let mut y = open_append(&m.path("t/0/append")).unwrap();
    x.write_all(b"xx-").unwrap();
    y.write_all(b"yy-").unwrap();
    x.write_all(b"xx\n").unwrap();
    y.write_all(b"yy\n").unwrap();
    drop((x, y));
    assert_eq!(read_string(&m.path("t/0/from/3")), "xx-xx\nyy-yy\n");
}

/// A child that inherits an open `append` (here: a command run while the file is open; the
/// descriptor is close-on-exec, so the child's exec closes its copy) does not cut the line
/// its parent is writing: only the writer's close, or the last close, appends a partial line.
#[test]
fn a_child_closing_an_inherited_append_does_not_cut_the_parents_line() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    let mut f = open_append(&m.path("t/0/append")).unwrap();
    f.write_all(b"first half, ").unwrap();
    for _ in 0..3 {
        let status = std::process::Command::new("true").status().unwrap();
        assert!(status.success());
    }
    assert_eq!(read_string(&m.path("t/0/log")), "");
    f.write_all(b"second half\nand a tail").unwrap();
    assert_eq!(read_string(&m.path("t/0/log")), "first half, second half\n");
    drop(f);
    assert_eq!(
        read_string(&m.path("t/0/log")),
        "first half, second half\nand a tail\n"
    );
}

#[test]
fn fsync_and_flush_make_records_durable() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    let mut f = open_append(&m.path("t/0/append")).unwrap();
    for i in 0..10 {
        f.write_all(format!("r{i}\n").as_bytes()).unwrap();
    }
    f.sync_all().unwrap();
    let s = stats(&m.path("t/0"));
    assert_eq!(s["log_end_offset"], 10);
    assert_eq!(
        s["recovery_point"], 10,
        "fsync returned before the records were on disk: {s}"
    );
    drop(f);
    for (control, n) in [("t/0/control", 11), ("t/control", 12), ("control", 13)] {
        write_once(&m.path("t/0/append"), b"more\n").unwrap();
        write_once(&m.path(control), b"flush\n").unwrap();
        assert_eq!(
            stat_i64(&m.path("t/0"), "recovery_point"),
            n,
            "after flush on {control}"
        );
    }
    // fsync on append.jsonl too.
    let mut j = open_append(&m.path("t/0/append.jsonl")).unwrap();
    j.write_all(
        br#"{"value":"j"}
"#,
    )
    .unwrap();
    j.sync_data().unwrap();
    assert_eq!(stat_i64(&m.path("t/0"), "recovery_point"), 14);
}

#[test]
fn roll_starts_a_new_segment_and_segments_mirror_the_data_dir() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("seg", 1);
    let first: String = (0..300).map(|i| format!("segment record {i}\n")).collect();
    write_once(&m.path("seg/0/append"), first.as_bytes()).unwrap();
    write_once(&m.path("seg/0/control"), b"roll\n").unwrap();
    write_once(&m.path("seg/0/append"), b"in the second segment\n").unwrap();
    write_once(&m.path("seg/0/control"), b"flush\n").unwrap();
    assert_eq!(stat_i64(&m.path("seg/0"), "segment_count"), 2);
    assert_eq!(
        read_string(&m.path("seg/0/log")),
        first + "in the second segment\n"
    );

    let mut names: Vec<String> = fs::read_dir(m.path("seg/0/segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for want in [
        "00000000000000000000.log",
        "00000000000000000000.index",
        "00000000000000000000.timeindex",
        "00000000000000000300.log",
        "00000000000000000300.index",
        "00000000000000000300.timeindex",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "segments/ lacks {want}: {names:?}"
        );
    }
    let on_disk = common::files_under(&m.data);
    for name in &names {
        let matches: Vec<_> = on_disk
            .iter()
            .filter(|p| p.file_name().is_some_and(|f| f == name.as_str()))
            .collect();
        assert_eq!(matches.len(), 1, "{name} in the data dir: {matches:?}");
        let through_mount = read(&m.path(&format!("seg/0/segments/{name}")));
        assert!(
            through_mount == read(matches[0]),
            "segments/{name} differs from {}",
            matches[0].display()
        );
        assert_eq!(
            fs::metadata(m.path(&format!("seg/0/segments/{name}")))
                .unwrap()
                .len(),
            through_mount.len() as u64
        );
    }
    // Roll on an empty active segment is a no-op.
    write_once(&m.path("seg/control"), b"roll\n").unwrap();
    write_once(&m.path("seg/control"), b"roll\n").unwrap();
    assert_eq!(stat_i64(&m.path("seg/0"), "segment_count"), 3);
}

/// Segment files are read by the kernel itself (FUSE passthrough, as root): what an open
/// segment shows must stay exactly the file: growth of the active segment seen by an open
/// descriptor, two opens of one segment at once, a reopen after every descriptor closed, and
/// an open segment of a topic deleted meanwhile.
#[test]
fn open_segment_files_read_exactly_what_the_data_dir_holds() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("pt", 1);
    write_once(&m.path("pt/0/append"), b"first\n").unwrap();
    let seg = m.path("pt/0/segments/00000000000000000000.log");
    let on_disk = common::files_under(&m.data)
        .into_iter()
        .find(|p| p.ends_with("00000000000000000000.log"))
        .expect("the first segment in the data dir");

    let mut a = File::open(&seg).unwrap();
    let mut b = File::open(&seg).unwrap();
    let mut first = Vec::new();
    a.read_to_end(&mut first).unwrap();
    assert_eq!(first, fs::read(&on_disk).unwrap());
    let len = first.len() as u64;

    // The active segment grows under the open descriptors.
    write_once(&m.path("pt/0/append"), b"second\n").unwrap();
    let whole = fs::read(&on_disk).unwrap();
    assert!(whole.len() as u64 > len);
    let mut grown = Vec::new();
    a.read_to_end(&mut grown).unwrap();
    assert_eq!(grown, whole[len as usize..]);
    let mut from_b = Vec::new();
    b.read_to_end(&mut from_b).unwrap();
    assert_eq!(from_b, whole);
    drop((a, b));

    // Every descriptor closed: a new open registers the file again.
    assert_eq!(read(&seg), whole);

    // A descriptor open across `rmdir` of the topic still reads the bytes it had.
    let mut kept = File::open(&seg).unwrap();
    fs::remove_dir(m.path("pt")).unwrap();
    let mut after = Vec::new();
    kept.read_to_end(&mut after).unwrap();
    assert_eq!(after, whole);
    assert!(File::open(&seg).is_err(), "segments of a deleted topic");
}

#[test]
fn delete_records_moves_the_start_while_tail_f_keeps_following() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    write_once(&m.path("t/0/append"), b"l0\nl1\nl2\nl3\nl4\n").unwrap();
    let mut tail = Follower::spawn(&m.mnt, "tail -f t/0/log", &m.scratch().join("tail.err"));
    assert!(
        tail.wait_for_lines(5, Duration::from_secs(10)),
        "{:?}",
        tail.seen
    );

    write_once(&m.path("t/0/control"), b"delete-records 3\n").unwrap();
    assert_eq!(stat_i64(&m.path("t/0"), "log_start_offset"), 3);
    // A new open sees the log as it is now.
    assert_eq!(sh_ok(&m.mnt, "cat t/0/log"), "l3\nl4\n");
    assert_eq!(fs::metadata(m.path("t/0/log")).unwrap().len(), 6);
    assert_eq!(read_string(&m.path("t/0/log.jsonl")).lines().count(), 2);
    assert_eq!(errno_of("read 2", fs::read(m.path("t/0/2"))), libc::ENOENT);

    // The tail started before keeps its coordinates: no re-print, no truncation.
    write_once(&m.path("t/0/append"), b"l5\n").unwrap();
    assert!(
        tail.wait_for_lines(6, Duration::from_secs(10)),
        "{:?}",
        tail.seen
    );
    tail.drain_for(Duration::from_millis(1500));
    assert_eq!(tail.seen, ["l0", "l1", "l2", "l3", "l4", "l5"]);
    assert!(!tail.stderr().contains("truncated"), "{}", tail.stderr());
    assert_eq!(sh_ok(&m.mnt, "cat t/0/log"), "l3\nl4\nl5\n");
}

#[test]
fn partitions_grow_online() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 1);
    write_once(&m.path("t/0/append"), b"p0\n").unwrap();
    let mut reader = File::open(m.path("t/0/log")).unwrap();
    sh_ok(&m.mnt, "echo 4 > t/partitions");
    assert_eq!(read_string(&m.path("t/partitions")).trim(), "4");
    let mut listed: Vec<String> = fs::read_dir(m.path("t"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| m.path(&format!("t/{n}")).is_dir())
        .collect();
    listed.sort();
    assert_eq!(listed, ["0", "1", "2", "3"]);
    sh_ok(&m.mnt, "echo new partition > t/3/append");
    assert_eq!(read_string(&m.path("t/3/log")), "new partition\n");
    assert_eq!(stat_i64(&m.path("t/3"), "log_end_offset"), 1);
    // The existing partition kept serving.
    let mut s = String::new();
    reader.read_to_string(&mut s).unwrap();
    assert_eq!(s, "p0\n");
    drop(reader);
    m.remount();
    assert_eq!(read_string(&m.path("t/3/log")), "new partition\n");
}

#[test]
fn topic_names_follow_kafka_rules() {
    let Some(m) = Mount::new() else { return };
    let longest = "n".repeat(249);
    for name in ["a", "Orders.v2_eu-west", "0", longest.as_str()] {
        fs::create_dir(m.path(name)).unwrap_or_else(|e| panic!("mkdir {name}: {e}"));
        write_once(&m.path(&format!("{name}/0/append")), b"ok\n").unwrap();
        assert_eq!(read_string(&m.path(&format!("{name}/0/log"))), "ok\n");
    }
}

#[test]
fn rmdir_and_rm_rf_delete_a_topic() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("gone", 1);
    sh_ok(&m.mnt, "seq 1 100 > gone/0/append");
    fs::remove_dir(m.path("gone")).unwrap();
    assert!(!m.path("gone").exists());

    m.create_topic("also-gone", 2);
    sh_ok(&m.mnt, "seq 1 100 > also-gone/1/append");
    sh_ok(&m.mnt, "rm -rf also-gone");
    assert!(!m.path("also-gone").exists());
    // Removing a file inside a topic succeeds and changes nothing; the topic stays.
    m.create_topic("still-here", 1);
    sh_ok(&m.mnt, "echo kept > still-here/0/append");
    fs::remove_file(m.path("still-here/0/log")).unwrap();
    assert_eq!(read_string(&m.path("still-here/0/log")), "kept\n");

    m.create_topic("kept", 1);
    // A topic created again under the same name starts empty.
    m.create_topic("gone", 1);
    assert_eq!(read(&m.path("gone/0/log")), b"");
    assert_eq!(stat_i64(&m.path("gone/0"), "log_end_offset"), 0);
    m.remount();
    assert!(!m.path("also-gone").exists());
    assert!(m.path("kept").is_dir());
    assert!(m.path("still-here/0/log").exists());
    assert_eq!(read(&m.path("gone/0/log")), b"");
}

#[test]
fn control_reads_show_the_commands_and_recent_outcomes() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    write_once(&m.path("t/0/append"), b"a\nb\n").unwrap();
    write_once(&m.path("t/0/control"), b"roll\n").unwrap();
    write_once(&m.path("t/0/control"), b"delete-records 1\n").unwrap();
    let shown = read_string(&m.path("t/0/control"));
    for word in ["roll", "flush", "delete-records"] {
        assert!(
            shown.contains(word),
            "control does not show {word}:\n{shown}"
        );
    }
    let outcomes: Vec<&str> = shown.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(
        outcomes
            .iter()
            .any(|l| l.contains("roll") && l.contains("ok")),
        "no outcome of roll:\n{shown}"
    );
    assert!(
        outcomes
            .iter()
            .any(|l| l.contains("delete-records 1") && l.contains("ok")),
        "no outcome of delete-records:\n{shown}"
    );
    let root = read_string(&m.path("control"));
    assert!(root.contains("flush"), "{root}");
}

#[test]
fn a_write_larger_than_max_message_bytes_is_split_into_batches_atomically() {
    let Some(m) = Mount::new() else { return };
    let topic = m.create_topic("big", 1);
    write_once(&topic.join("config"), b"max.message.bytes=1024\n").unwrap();
    // 40 lines of 100 bytes: each record fits, the whole write does not fit one batch.
    let lines: Vec<String> = (0..40).map(|i| format!("{i:0>99}")).collect();
    let mut payload = lines.join("\n");
    payload.push('\n');
    write_once(&topic.join("0/append"), payload.as_bytes()).unwrap();
    assert_eq!(stat_i64(&topic.join("0"), "log_end_offset"), 40);
    assert_eq!(read_string(&topic.join("0/log")), payload);
    // On disk: several batches, each within max.message.bytes, with consecutive offsets.
    let segment = read(&topic.join("0/segments/00000000000000000000.log"));
    let mut position = 0;
    let mut next_offset = 0;
    let mut batches = 0;
    while position < segment.len() {
        let base = i64::from_be_bytes(segment[position..position + 8].try_into().unwrap());
        let length = i32::from_be_bytes(segment[position + 8..position + 12].try_into().unwrap());
        let last_delta =
            i32::from_be_bytes(segment[position + 23..position + 27].try_into().unwrap());
        assert_eq!(base, next_offset, "batches are consecutive");
        assert!(12 + length as usize <= 1024, "batch over max.message.bytes");
        next_offset = base + last_delta as i64 + 1;
        position += 12 + length as usize;
        batches += 1;
    }
    assert!(batches > 1, "expected several batches, got {batches}");
    assert_eq!(next_offset, 40);
}

crate::on_both_backends!(
    offset_files_hold_exact_values_and_json_records,
    append_jsonl_carries_keys_headers_timestamps_and_binary_values,
    from_offset_views_start_at_that_record,
    time_lookup_accepts_milliseconds_and_rfc3339,
    log_size_is_exact_and_an_open_reader_sees_growth,
);

/// Views and append files ask for 1 MiB I/O (`st_blksize`), so `cat` moves 1 MiB per call;
/// small files keep the page size.
#[test]
fn bulk_files_advertise_one_mebibyte_blocks() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("b", 1);
    for name in ["append", "append.jsonl", "log", "log.jsonl", "from/0"] {
        let blksize = fs::metadata(m.path(&format!("b/0/{name}")))
            .unwrap()
            .blksize();
        assert_eq!(blksize, 1 << 20, "{name}");
    }
    assert_eq!(fs::metadata(m.path("b/0/stats")).unwrap().blksize(), 4096);
}
