//! Retention and compaction through the mount: the `retention` and `compact` commands at
//! partition, topic and root level, their outcomes in `control` and `stats`, keyless appends on
//! compacted topics, background cleanup driven by the mount options, and open `log` files that
//! keep their coordinates while cleanup removes records under them.

mod common;

use std::fs;
use std::io::Read;
use std::time::Duration;

use common::{
    errno_of, ls, read, read_string, sh, sh_ok, stat_i64, stats, write_once, Follower, Mount,
    MANUAL_CLEANUP,
};

fn command(m: &Mount, control: &str, command: &str) {
    write_once(&m.path(control), format!("{command}\n").as_bytes())
        .unwrap_or_else(|e| panic!("{command} > {control}: {e}\n{}", m.daemon_log()));
}

/// `rounds` segments of `per_round` records `"<partition> r<round> <i>"`, each closed by a roll.
fn fill_rounds(m: &Mount, partition: &str, rounds: usize, per_round: usize) {
    for round in 0..rounds {
        let lines: String = (0..per_round)
            .map(|i| format!("{partition} r{round} {i}\n"))
            .collect();
        write_once(&m.path(&format!("{partition}/append")), lines.as_bytes()).unwrap();
        command(m, &format!("{partition}/control"), "roll");
    }
}

/// `rounds` segments, each with one record per key `k0..k<keys>` (`"k<i> v<round>"`) and
/// closed by a roll: offset `round * keys + i` holds key `k<i>`.
fn fill_keyed_rounds(m: &Mount, partition: &str, rounds: usize, keys: usize) {
    for round in 0..rounds {
        let lines: String = (0..keys)
            .map(|i| format!("{{\"key\":\"k{i}\",\"value\":\"k{i} v{round}\"}}\n"))
            .collect();
        write_once(
            &m.path(&format!("{partition}/append.jsonl")),
            lines.as_bytes(),
        )
        .unwrap();
        command(m, &format!("{partition}/control"), "roll");
    }
}

fn log_files(m: &Mount, partition: &str) -> Vec<String> {
    ls(&m.path(&format!("{partition}/segments")))
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect()
}

fn jsonl(m: &Mount, rel: &str) -> Vec<serde_json::Value> {
    read_string(&m.path(rel))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{rel}: {e}: {l}")))
        .collect()
}

#[test]
fn retention_frees_segments_at_partition_topic_and_root_level() {
    let Some(m) = Mount::with_options(MANUAL_CLEANUP) else {
        return;
    };
    m.create_topic("r", 2);
    fill_rounds(&m, "r/0", 3, 10);
    fill_rounds(&m, "r/1", 3, 10);
    assert_eq!(log_files(&m, "r/0").len(), 4);
    let size_before = stat_i64(&m.path("r/0"), "size_bytes");
    assert!(size_before > 0);
    sh_ok(&m.mnt, "echo retention.bytes=0 > r/config");

    // One partition.
    command(&m, "r/0/control", "retention");
    assert_eq!(
        ls(&m.path("r/0/segments")),
        [
            "00000000000000000030.index",
            "00000000000000000030.log",
            "00000000000000000030.timeindex"
        ]
    );
    let s = stats(&m.path("r/0"));
    assert_eq!(s["log_start_offset"], 30, "{s}");
    assert_eq!(s["segment_count"], 1, "{s}");
    assert_eq!(s["size_bytes"], 0, "{s}");
    let run = &s["last_retention"];
    assert_eq!(run["segments_deleted"], 3, "{s}");
    assert_eq!(run["records_removed"], 30, "{s}");
    assert_eq!(run["bytes_reclaimed"].as_i64(), Some(size_before), "{s}");
    assert!(
        run["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{s}"
    );
    assert!(run["duration_ms"].is_u64(), "{s}");
    assert_eq!(read_string(&m.path("r/0/log")), "");
    assert_eq!(
        errno_of("cat r/0/0", fs::read(m.path("r/0/0"))),
        libc::ENOENT
    );
    let shown = read_string(&m.path("r/0/control"));
    assert!(
        shown.contains("retention: ok (3 segments deleted"),
        "{shown}"
    );
    assert_eq!(
        stat_i64(&m.path("r/1"), "segment_count"),
        4,
        "r/1 untouched"
    );

    // The topic: every partition.
    command(&m, "r/control", "retention");
    assert_eq!(log_files(&m, "r/1"), ["00000000000000000030.log"]);
    assert_eq!(stat_i64(&m.path("r/1"), "log_start_offset"), 30);
    let shown = read_string(&m.path("r/control"));
    assert!(shown.contains("r/0: 0 segments deleted"), "{shown}");
    assert!(shown.contains("r/1: 3 segments deleted"), "{shown}");

    // The root: every topic; here `old` breaches retention.ms with old record timestamps.
    m.create_topic("old", 1);
    write_once(
        &m.path("old/0/append.jsonl"),
        b"{\"value\":\"a\",\"timestamp\":1000}\n{\"value\":\"b\",\"timestamp\":2000}\n",
    )
    .unwrap();
    command(&m, "old/0/control", "roll");
    write_once(&m.path("old/0/append"), b"new\n").unwrap();
    sh_ok(&m.mnt, "echo retention.ms=3600000 > old/config");
    command(&m, "control", "retention");
    assert_eq!(read_string(&m.path("old/0/log")), "new\n");
    let s = stats(&m.path("old/0"));
    assert_eq!(s["log_start_offset"], 2, "{s}");
    assert_eq!(s["last_retention"]["records_removed"], 2, "{s}");
    let reasons = s["last_retention"]["reasons"].to_string();
    assert!(reasons.contains("retention.ms"), "{s}");
    let shown = read_string(&m.path("control"));
    assert!(shown.contains("old/0: 1 segments deleted"), "{shown}");
    assert!(shown.contains("r/1: 0 segments deleted"), "{shown}");
}

#[test]
fn delete_records_then_retention_frees_the_space() {
    let Some(m) = Mount::with_options(MANUAL_CLEANUP) else {
        return;
    };
    m.create_topic("d", 1);
    fill_rounds(&m, "d/0", 3, 10);
    let size_before = stat_i64(&m.path("d/0"), "size_bytes");
    command(&m, "d/0/control", "delete-records 25");
    let s = stats(&m.path("d/0"));
    assert_eq!(s["log_start_offset"], 25, "{s}");
    assert_eq!(
        s["segment_count"], 4,
        "delete-records alone frees nothing: {s}"
    );
    assert_eq!(s["size_bytes"].as_i64(), Some(size_before), "{s}");

    command(&m, "d/0/control", "retention");
    let s = stats(&m.path("d/0"));
    assert_eq!(s["segment_count"], 2, "{s}");
    assert_eq!(s["last_retention"]["segments_deleted"], 2, "{s}");
    assert_eq!(s["last_retention"]["records_removed"], 20, "{s}");
    assert!(s["size_bytes"].as_i64().unwrap() < size_before, "{s}");
    assert_eq!(
        log_files(&m, "d/0"),
        ["00000000000000000020.log", "00000000000000000030.log"]
    );
    assert_eq!(
        read_string(&m.path("d/0/log")),
        "d/0 r2 5\nd/0 r2 6\nd/0 r2 7\nd/0 r2 8\nd/0 r2 9\n"
    );
    // Retention again finds nothing more to do.
    command(&m, "d/0/control", "retention");
    assert_eq!(stat_i64(&m.path("d/0"), "segment_count"), 2);
}

#[test]
fn compact_keeps_the_latest_value_per_key_and_preserves_offsets() {
    let Some(m) = Mount::with_options(MANUAL_CLEANUP) else {
        return;
    };
    m.create_topic("c", 1);
    sh_ok(&m.mnt, "echo cleanup.policy=compact > c/config");
    fill_keyed_rounds(&m, "c/0", 4, 4);
    // One more value of k0 in the active segment, which compaction never touches.
    write_once(
        &m.path("c/0/append.jsonl"),
        b"{\"key\":\"k0\",\"value\":\"k0 v4\"}\n",
    )
    .unwrap();
    let before = jsonl(&m, "c/0/log.jsonl");
    assert_eq!(before.len(), 17);

    command(&m, "c/0/control", "compact");

    let after = jsonl(&m, "c/0/log.jsonl");
    let offsets: Vec<i64> = after
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect();
    // Superseded records of the cleaned section are gone, the latest per key kept.
    assert!(
        offsets.iter().all(|o| *o >= 12),
        "superseded records remain: {offsets:?}"
    );
    for (key, offset) in [("k1", 13), ("k2", 14), ("k3", 15), ("k0", 16)] {
        let record = after
            .iter()
            .find(|r| r["offset"] == offset)
            .unwrap_or_else(|| panic!("offset {offset} of {key} missing: {offsets:?}"));
        assert_eq!(record["key"], key);
        // The same record, at the same offset, as before compaction.
        assert_eq!(record, &before[offset as usize]);
    }
    assert_eq!(read(&m.path("c/0/13")), b"k1 v3");
    for removed in [0, 1, 5, 11] {
        assert_eq!(
            errno_of(
                &format!("cat c/0/{removed}"),
                fs::read(m.path(&format!("c/0/{removed}")))
            ),
            libc::ENOENT
        );
    }
    let log = read_string(&m.path("c/0/log"));
    assert!(log.ends_with("k1 v3\nk2 v3\nk3 v3\nk0 v4\n"), "{log}");
    assert_eq!(stat_i64(&m.path("c/0"), "log_end_offset"), 17);
    assert_eq!(stat_i64(&m.path("c/0"), "log_start_offset"), 0);

    let s = stats(&m.path("c/0"));
    let run = &s["last_compaction"];
    assert!(run["records_removed"].as_i64().unwrap() >= 12, "{s}");
    assert!(run["segments_before"].as_i64().unwrap() >= 1, "{s}");
    assert!(run["bytes_reclaimed"].as_i64().unwrap() > 0, "{s}");
    assert_eq!(run["skipped"], serde_json::Value::Null, "{s}");
    assert_eq!(s["first_dirty_offset"], 16, "{s}");
    assert!(s["view_generation"].is_u64(), "{s}");
    let shown = read_string(&m.path("c/0/control"));
    assert!(
        shown.contains("compact: ok (") && shown.contains("records removed"),
        "{shown}"
    );
    // The keys agree.
    assert_eq!(ls(&m.path("c/0/keys")), ["k0", "k1", "k2", "k3"]);
    assert_eq!(read(&m.path("c/0/keys/k0")), b"k0 v4");
    // `dump-log --verify` accepts the cleaned segments.
    let partition_dir = m.data.join("c-0");
    let out = std::process::Command::new(common::BIN)
        .arg("dump-log")
        .arg("--verify")
        .args(
            common::files_under(&partition_dir)
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "log")),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn compact_at_topic_and_root_level_skips_topics_that_are_not_compacted() {
    let Some(m) = Mount::with_options(MANUAL_CLEANUP) else {
        return;
    };
    m.create_topic("kv", 2);
    sh_ok(&m.mnt, "echo cleanup.policy=compact > kv/config");
    m.create_topic("plain", 1);
    fill_keyed_rounds(&m, "kv/0", 2, 3);
    fill_keyed_rounds(&m, "kv/1", 2, 3);
    fill_keyed_rounds(&m, "plain/0", 2, 3);

    // One partition of a topic that is not compacted: EINVAL, and it says why.
    let e = errno_of(
        "compact > plain/0/control",
        write_once(&m.path("plain/0/control"), b"compact\n"),
    );
    assert_eq!(e, libc::EINVAL);
    let shown = read_string(&m.path("plain/0/control"));
    assert!(shown.contains("compact: error"), "{shown}");
    assert_eq!(read_string(&m.path("plain/0/log")).lines().count(), 6);

    // The topic level skips it, successfully.
    command(&m, "plain/control", "compact");
    let shown = read_string(&m.path("plain/control"));
    assert!(
        shown.contains("plain: skipped (cleanup.policy=delete)"),
        "{shown}"
    );

    // A compacted topic: every partition.
    command(&m, "kv/control", "compact");
    for p in ["kv/0", "kv/1"] {
        assert_eq!(
            read_string(&m.path(&format!("{p}/log"))),
            "k0 v1\nk1 v1\nk2 v1\n",
            "{p}"
        );
        assert_eq!(
            errno_of("cat 0", fs::read(m.path(&format!("{p}/0")))),
            libc::ENOENT
        );
    }
    let shown = read_string(&m.path("kv/control"));
    assert!(
        shown.contains("kv/0: ") && shown.contains("kv/1: "),
        "{shown}"
    );

    // The root: every compacted topic, the others skipped.
    fill_keyed_rounds(&m, "kv/1", 1, 3);
    command(&m, "control", "compact");
    assert_eq!(read_string(&m.path("kv/1/log")), "k0 v0\nk1 v0\nk2 v0\n");
    assert_eq!(
        stat_i64(&m.path("kv/1"), "log_end_offset"),
        9,
        "offsets are kept"
    );
    let shown = read_string(&m.path("control"));
    assert!(
        shown.contains("plain: skipped") && shown.contains("kv/1: "),
        "{shown}"
    );
    assert_eq!(read_string(&m.path("plain/0/log")).lines().count(), 6);
}

#[test]
fn keyless_append_on_a_compacted_topic_is_einval_and_appends_nothing() {
    let Some(m) = Mount::with_options(MANUAL_CLEANUP) else {
        return;
    };
    m.create_topic("c", 1);
    sh_ok(&m.mnt, "echo cleanup.policy=compact > c/config");
    let out = sh(&m.mnt, "echo x >> c/0/append");
    assert!(!out.status.success(), "a keyless echo was accepted");
    assert_eq!(
        errno_of("append", write_once(&m.path("c/0/append"), b"x\ny\n")),
        libc::EINVAL
    );
    assert_eq!(
        errno_of(
            "append.jsonl",
            write_once(&m.path("c/0/append.jsonl"), b"{\"value\":\"no key\"}\n")
        ),
        libc::EINVAL
    );
    assert_eq!(stat_i64(&m.path("c/0"), "log_end_offset"), 0);
    // Keyed records go in.
    write_once(
        &m.path("c/0/append.jsonl"),
        b"{\"key\":\"k\",\"value\":\"v\"}\n",
    )
    .unwrap();
    assert_eq!(read_string(&m.path("c/0/log")), "v\n");
}

#[test]
fn an_open_log_keeps_its_coordinates_across_retention_and_compaction() {
    let Some(m) = Mount::with_options(MANUAL_CLEANUP) else {
        return;
    };
    m.create_topic("t", 1);
    sh_ok(
        &m.mnt,
        "printf 'cleanup.policy=compact,delete\\nretention.ms=3600000\\n' > t/config",
    );
    // Round 0 is old (past retention.ms); rounds 1..3 are new. Keys k0..k4 in each.
    let old: String = (0..5)
        .map(|i| format!("{{\"key\":\"k{i}\",\"value\":\"k{i} v0\",\"timestamp\":1000}}\n"))
        .collect();
    write_once(&m.path("t/0/append.jsonl"), old.as_bytes()).unwrap();
    command(&m, "t/0/control", "roll");
    for round in 1..4 {
        let lines: String = (0..5)
            .map(|i| format!("{{\"key\":\"k{i}\",\"value\":\"k{i} v{round}\"}}\n"))
            .collect();
        write_once(&m.path("t/0/append.jsonl"), lines.as_bytes()).unwrap();
        command(&m, "t/0/control", "roll");
    }
    let full = read_string(&m.path("t/0/log"));
    assert_eq!(full.lines().count(), 20);

    let mut tail = Follower::spawn(
        &m.mnt,
        "tail -n +1 -f t/0/log",
        &m.scratch().join("tail.err"),
    );
    assert!(
        tail.wait_for_lines(20, Duration::from_secs(10)),
        "{:?}",
        tail.seen
    );
    let mut reader = fs::File::open(m.path("t/0/log")).unwrap();
    let mut got = vec![0u8; 30];
    reader.read_exact(&mut got).unwrap();

    // Retention removes round 0 under the open file.
    command(&m, "t/0/control", "retention");
    assert_eq!(stat_i64(&m.path("t/0"), "log_start_offset"), 5);
    assert!(read_string(&m.path("t/0/log")).starts_with("k0 v1\n"));
    let mut more = vec![0u8; 30];
    reader.read_exact(&mut more).unwrap();
    got.extend_from_slice(&more);

    // Compaction removes rounds 1 and 2 under it.
    command(&m, "t/0/control", "compact");
    assert_eq!(
        read_string(&m.path("t/0/log")),
        "k0 v3\nk1 v3\nk2 v3\nk3 v3\nk4 v3\n"
    );
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    got.extend_from_slice(&rest);
    assert_eq!(
        String::from_utf8(got).unwrap(),
        full,
        "the open file's bytes moved"
    );

    // It keeps following the log, as does `tail -f`, which neither re-prints nor truncates.
    write_once(
        &m.path("t/0/append.jsonl"),
        b"{\"key\":\"k9\",\"value\":\"late\"}\n",
    )
    .unwrap();
    let mut late = Vec::new();
    reader.read_to_end(&mut late).unwrap();
    assert_eq!(late, b"late\n");
    assert!(
        tail.wait_for_lines(21, Duration::from_secs(10)),
        "{:?}",
        tail.seen
    );
    tail.drain_for(Duration::from_millis(1500));
    let mut expected: Vec<String> = full.lines().map(str::to_string).collect();
    expected.push("late".into());
    assert_eq!(tail.seen, expected);
    assert!(!tail.stderr().contains("truncated"), "{}", tail.stderr());
    // A new open sees the log as it is now.
    assert_eq!(
        read_string(&m.path("t/0/log")),
        "k0 v3\nk1 v3\nk2 v3\nk3 v3\nk4 v3\nlate\n"
    );
}

#[test]
fn background_cleanup_follows_the_mount_options() {
    let Some(m) = Mount::with_options(&[
        "log.retention.check.interval.ms=200",
        "log.cleaner.backoff.ms=200",
        "log.cleaner.dedupe.buffer.size=1048576",
    ]) else {
        return;
    };
    m.create_topic("old", 1);
    write_once(
        &m.path("old/0/append.jsonl"),
        b"{\"value\":\"a\",\"timestamp\":1000}\n",
    )
    .unwrap();
    command(&m, "old/0/control", "roll");
    sh_ok(&m.mnt, "echo retention.ms=3600000 > old/config");
    assert!(
        common::wait_until(Duration::from_secs(15), || stat_i64(
            &m.path("old/0"),
            "log_start_offset"
        ) == 1),
        "retention did not run by itself: {}",
        stats(&m.path("old/0"))
    );

    m.create_topic("kv", 1);
    sh_ok(&m.mnt, "echo cleanup.policy=compact > kv/config");
    fill_keyed_rounds(&m, "kv/0", 3, 2);
    assert!(
        common::wait_until(Duration::from_secs(15), || {
            read_string(&m.path("kv/0/log")) == "k0 v2\nk1 v2\n"
        }),
        "the cleaner did not compact by itself: {}",
        stats(&m.path("kv/0"))
    );
    // The cleaner may have run once after all rounds (4 removed) or between rounds too; the
    // run that left the log in this state removed at least the 2 records of the last round
    // before.
    let shown = stats(&m.path("kv/0"));
    assert!(
        shown["last_compaction"]["records_removed"]
            .as_i64()
            .is_some_and(|n| n >= 2),
        "{shown}"
    );
}

#[test]
fn an_old_log_whose_files_are_gone_reads_as_estale() {
    let Some(m) = Mount::with_options(MANUAL_CLEANUP) else {
        return;
    };
    m.create_topic("t", 1);
    sh_ok(
        &m.mnt,
        "printf 'file.delete.delay.ms=0\\nretention.bytes=0\\n' > t/config",
    );
    fill_rounds(&m, "t/0", 3, 10);
    let mut reader = fs::File::open(m.path("t/0/log")).unwrap();
    let mut head = vec![0u8; 8];
    reader.read_exact(&mut head).unwrap();
    assert_eq!(head, b"t/0 r0 0");
    command(&m, "t/0/control", "retention");
    // The segments this handle reads were removed at once: no wrong bytes, ESTALE.
    let mut rest = Vec::new();
    assert_eq!(
        errno_of("read an old generation", reader.read_to_end(&mut rest)),
        libc::ESTALE
    );
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    // A new open reads the log as it is.
    write_once(&m.path("t/0/append"), b"new\n").unwrap();
    assert_eq!(read_string(&m.path("t/0/log")), "new\n");
}
