//! Views' position maps stored at a clean stop (`lmqfs-view-state` in the partition directory):
//! after a remount the views are byte for byte what they were, the first `stat` maps only what
//! the stored state does not cover (the daemon log says where it resumed), and a state that is
//! missing, corrupt or stale is ignored and the views are mapped from the log. Lines written to
//! `append` keep the `log` map up to date, so a partition never read is stored too; a part of
//! the state found damaged only when a read needs it makes the view be mapped from the log.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{open_append, read, sh_ok, write_once, Mount};
use std::io::Write;

/// What a user sees of a partition's views.
#[derive(Debug, PartialEq, Eq)]
struct Views {
    log_size: u64,
    jsonl_size: u64,
    log: Vec<u8>,
    jsonl: Vec<u8>,
    from: Vec<u8>,
    tail: String,
}

/// `stat` first (the first `stat` after a start is what resumes a map), then the bytes.
fn views(m: &Mount, partition: &str, from: i64) -> Views {
    let dir = m.path(partition);
    let log_size = fs::metadata(dir.join("log")).unwrap().len();
    let jsonl_size = fs::metadata(dir.join("log.jsonl")).unwrap().len();
    let views = Views {
        log_size,
        jsonl_size,
        log: read(&dir.join("log")),
        jsonl: read(&dir.join("log.jsonl")),
        from: read(&dir.join(format!("from/{from}"))),
        tail: sh_ok(&dir, "tail -n 1 log"),
    };
    assert_eq!(views.log.len() as u64, views.log_size);
    assert_eq!(views.jsonl.len() as u64, views.jsonl_size);
    views
}

/// `count` records of lengths varying from 8 to about 110 bytes, numbered from `first`.
fn append_lines(m: &Mount, partition: &str, first: usize, count: usize) {
    sh_ok(
        &m.mnt,
        &format!(
            "awk 'BEGIN {{ for (i = {first}; i < {}; i++) {{ s = \"\"; \
             for (j = 0; j < i % 97; j++) s = s \"x\"; print \"record \" i \" \" s }} }}' \
             > {partition}/append",
            first + count
        ),
    );
}

fn state_file(m: &Mount, topic_partition: &str) -> PathBuf {
    m.data.join(topic_partition).join("lmqfs-view-state")
}

fn resumed_line(kind: &str, start: i64, end: i64) -> String {
    format!("{kind} view resumed from stored state: offsets {start}..{end} mapped")
}

fn clean_unmount(m: &mut Mount) {
    let status = m.unmount();
    assert!(status.success(), "umount: {status}\n{}", m.daemon_log());
}

fn dump_log_verify_is_clean(dir: &Path) {
    let files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let out = Command::new(common::BIN)
        .arg("dump-log")
        .arg("--verify")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dump-log --verify {}/* failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn views_resume_from_stored_state_after_a_clean_remount() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 1);
    write_once(&m.path("t/config"), b"segment.bytes=65536\n").unwrap();
    append_lines(&m, "t/0", 0, 6000);
    write_once(
        &m.path("t/0/append.jsonl"),
        br#"{"key":"k","value":"last","headers":{"a":"b"}}
"#,
    )
    .unwrap();
    let before = views(&m, "t/0", 3210);
    assert!(before.log_size > 4 * 65536, "several checkpoints' worth");
    assert_eq!(before.tail, "last\n");
    clean_unmount(&mut m);
    assert!(state_file(&m, "t-0").exists(), "a clean stop stores it");
    dump_log_verify_is_clean(&m.data.join("t-0"));

    m.remount();
    let after = views(&m, "t/0", 3210);
    assert_eq!(after, before);
    let log = m.daemon_log();
    // Both maps resumed at the log end: the first `stat` decoded no record.
    for kind in ["Log", "Jsonl"] {
        assert!(
            log.contains(&resumed_line(kind, 0, 6001)),
            "{kind} did not resume at the log end:\n{log}"
        );
    }
    assert!(!log.contains("stored view state ignored"), "{log}");

    // Records appended after the stored state are mapped on top of it.
    append_lines(&m, "t/0", 6001, 500);
    let grown = views(&m, "t/0", 6100);
    assert_eq!(&grown.log[..before.log.len()], &before.log[..]);
    // 6500 % 97 = 1: one `x`.
    assert_eq!(grown.tail, "record 6500 x\n");
    clean_unmount(&mut m);
    m.remount();
    assert_eq!(views(&m, "t/0", 6100), grown);
    assert!(m.daemon_log().contains(&resumed_line("Log", 0, 6501)));
}

#[test]
fn missing_corrupt_or_stale_state_is_ignored_and_views_are_mapped_from_the_log() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 1);
    write_once(&m.path("t/config"), b"segment.bytes=65536\n").unwrap();
    append_lines(&m, "t/0", 0, 3000);
    let expected = views(&m, "t/0", 1500);
    clean_unmount(&mut m);
    let state = state_file(&m, "t-0");
    let good = fs::read(&state).unwrap();

    // Garbage: ignored, said so, and the views are right.
    fs::write(&state, b"this is not a view state").unwrap();
    m.remount();
    assert_eq!(views(&m, "t/0", 1500), expected);
    let log = m.daemon_log();
    assert!(log.contains("stored view state ignored (corrupt"), "{log}");
    assert!(!log.contains("view resumed"), "{log}");
    clean_unmount(&mut m);
    // Mapped again from the log, a state is stored again, and the next start resumes from it.
    assert_ne!(fs::read(&state).unwrap(), b"this is not a view state");
    m.remount();
    assert_eq!(views(&m, "t/0", 1500), expected);
    assert!(m.daemon_log().contains(&resumed_line("Log", 0, 3000)));
    clean_unmount(&mut m);

    // A valid state with one flipped byte fails its checksum.
    let mut flipped = good.clone();
    flipped[40] ^= 0x20;
    fs::write(&state, &flipped).unwrap();
    m.remount();
    assert_eq!(views(&m, "t/0", 1500), expected);
    assert!(m.daemon_log().contains("checksum"), "{}", m.daemon_log());
    clean_unmount(&mut m);

    // Missing: mapped from the log, quietly.
    fs::remove_file(&state).unwrap();
    m.remount();
    assert_eq!(views(&m, "t/0", 1500), expected);
    let log = m.daemon_log();
    assert!(
        !log.contains("view resumed") && !log.contains("ignored"),
        "{log}"
    );

    // delete-records, then appends: a state from before is stale.
    write_once(&m.path("t/0/control"), b"delete-records 1000\n").unwrap();
    append_lines(&m, "t/0", 3000, 200);
    let after_delete = views(&m, "t/0", 1500);
    assert!(after_delete.log.starts_with(b"record 1000 "));
    clean_unmount(&mut m);
    fs::write(&state, &good).unwrap();
    m.remount();
    assert_eq!(views(&m, "t/0", 1500), after_delete);
    let log = m.daemon_log();
    assert!(log.contains("stored view state ignored (stale"), "{log}");
    assert!(!log.contains("view resumed"), "{log}");
    clean_unmount(&mut m);
    dump_log_verify_is_clean(&m.data.join("t-0"));
}

#[test]
fn compaction_makes_stored_state_stale() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("c", 1);
    write_once(
        &m.path("c/config"),
        b"cleanup.policy=compact\nsegment.bytes=16384\n",
    )
    .unwrap();
    // Keys k0..k49, each written many times across several segments.
    sh_ok(
        &m.mnt,
        "awk 'BEGIN { for (i = 0; i < 2000; i++) \
         printf \"{\\\"key\\\":\\\"k%d\\\",\\\"value\\\":\\\"v%d %s\\\"}\\n\", i % 50, i, \
         substr(\"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\", 1, i % 40) }' \
         > c/0/append.jsonl",
    );
    write_once(&m.path("c/0/control"), b"roll\n").unwrap();
    views(&m, "c/0", 0);
    clean_unmount(&mut m);
    let state = state_file(&m, "c-0");
    let before_compaction = fs::read(&state).unwrap();

    m.remount();
    write_once(&m.path("c/0/control"), b"compact\n").unwrap();
    write_once(
        &m.path("c/0/append.jsonl"),
        br#"{"key":"z","value":"after compaction"}
"#,
    )
    .unwrap();
    // Nothing read the views since the compaction: the stored state describes records that
    // are gone, and the clean stop drops it.
    clean_unmount(&mut m);
    assert!(!state.exists(), "the state outlived a compaction");
    m.remount();
    let expected = views(&m, "c/0", 0);
    assert!(
        expected.log.len() < 2000 * 5,
        "compaction removed records: {} bytes",
        expected.log.len()
    );
    assert_eq!(expected.tail, "after compaction\n");
    clean_unmount(&mut m);

    // The pre-compaction state put back while stopped: it no longer matches the segments.
    fs::write(&state, &before_compaction).unwrap();
    m.remount();
    assert_eq!(views(&m, "c/0", 0), expected);
    let log = m.daemon_log();
    assert!(log.contains("stored view state ignored (stale"), "{log}");
    assert!(!log.contains("view resumed"), "{log}");
}

#[test]
fn kill_9_drops_the_stored_state_and_views_stay_exact() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 1);
    append_lines(&m, "t/0", 0, 2000);
    views(&m, "t/0", 100);
    clean_unmount(&mut m);
    let state = state_file(&m, "t-0");
    assert!(state.exists());
    m.remount();
    append_lines(&m, "t/0", 2000, 300);
    let expected = views(&m, "t/0", 2100);
    m.kill9();
    // The next start recovers the log and drops the state, which may no longer describe it.
    m.remount();
    let after = views(&m, "t/0", 2100);
    assert_eq!(after, expected);
    assert!(!state.exists(), "the state outlived an unclean stop");
    let log = m.daemon_log();
    assert!(!log.contains("view resumed"), "{log}");
    assert!(log.contains("unclean shutdown"), "{log}");
}

/// `count` lines from number `first` on, as `append` gets them: `line N` and a varying tail.
fn numbered_lines(first: usize, count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in first..first + count {
        out.extend_from_slice(format!("line {i} {}\n", "y".repeat(i * 7 % 130)).as_bytes());
    }
    out
}

/// Writes `bytes` to `partition/append` through one open file, `chunk` bytes per `write()`
/// (lines cut across writes), and closes it.
fn write_in_chunks(m: &Mount, partition: &str, bytes: &[u8], chunk: usize) {
    let mut file = open_append(&m.path(&format!("{partition}/append"))).unwrap();
    for piece in bytes.chunks(chunk) {
        file.write_all(piece).unwrap();
    }
}

#[test]
fn a_partition_written_but_never_read_resumes_at_its_end() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("w", 2);
    write_once(&m.path("w/config"), b"segment.bytes=131072\n").unwrap();
    // Through two open files, lines cut across writes; nothing reads `log` in this run.
    let first = numbered_lines(0, 5000);
    let second = numbered_lines(5000, 3000);
    write_in_chunks(&m, "w/0", &first, 4093);
    write_in_chunks(&m, "w/0", &second, 65536);
    write_in_chunks(&m, "w/1", &numbered_lines(0, 10), 7);
    clean_unmount(&mut m);
    assert!(
        state_file(&m, "w-0").exists(),
        "written, never read, stored"
    );
    // Shorter than a checkpoint interval: mapped again faster than stored and read back.
    assert!(!state_file(&m, "w-1").exists());

    m.remount();
    let dir = m.path("w/0");
    let log_size = fs::metadata(dir.join("log")).unwrap().len();
    let log = m.daemon_log();
    // The first `stat` resumed at the log end: it had no record to decode.
    assert!(log.contains(&resumed_line("Log", 0, 8000)), "{log}");
    // `log.jsonl` is not kept up to date by appends: it is mapped from the log.
    assert!(!log.contains("Jsonl view resumed"), "{log}");
    let want = [first, second].concat();
    assert_eq!(log_size, want.len() as u64);
    assert_eq!(read(&dir.join("log")), want);
    assert_eq!(
        sh_ok(&dir, "tail -n 1 log").as_bytes(),
        numbered_lines(7999, 1)
    );
    let from = read(&dir.join("from/4321"));
    assert!(from.starts_with(b"line 4321 "));
    assert!(want.ends_with(&from));
    assert_eq!(read(&m.path("w/1/log")), numbered_lines(0, 10));
    let expected = views(&m, "w/0", 4321);

    // A last line without a newline is appended at close, and decoded by the next `stat`.
    write_once(&m.path("w/0/append"), b"unterminated").unwrap();
    clean_unmount(&mut m);
    m.remount();
    let grown = views(&m, "w/0", 4321);
    assert_eq!(&grown.log[..expected.log.len()], &expected.log[..]);
    assert_eq!(grown.tail, "unterminated\n");
    assert_eq!(
        grown.jsonl_size,
        fs::metadata(m.path("w/0/log.jsonl")).unwrap().len()
    );
    assert!(!m.daemon_log().contains("ignored"), "{}", m.daemon_log());
}

#[test]
fn damaged_checkpoints_found_by_a_read_are_dropped_and_the_view_is_mapped_again() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 1);
    append_lines(&m, "t/0", 0, 4000);
    clean_unmount(&mut m);
    let state = state_file(&m, "t-0");
    let good = fs::read(&state).unwrap();

    m.remount();
    let expected = views(&m, "t/0", 2000);
    clean_unmount(&mut m);
    // The last byte is the last checkpoint's position: its piece no longer matches its
    // checksum, while the header (all the first `stat` reads) is intact.
    let mut damaged = good.clone();
    *damaged.last_mut().unwrap() ^= 0x10;
    fs::write(&state, &damaged).unwrap();
    m.remount();
    let dir = m.path("t/0");
    assert_eq!(
        fs::metadata(dir.join("log")).unwrap().len(),
        expected.log_size
    );
    assert!(m.daemon_log().contains(&resumed_line("Log", 0, 4000)));
    // `tail` reads the end: it needs the damaged piece.
    assert_eq!(sh_ok(&dir, "tail -n 1 log"), expected.tail);
    let log = m.daemon_log();
    assert!(
        log.contains("Log view: stored view state ignored (corrupt: the Log view's piece"),
        "{log}"
    );
    assert!(log.contains("mapped again from the log"), "{log}");
    assert_eq!(views(&m, "t/0", 2000), expected);
    clean_unmount(&mut m);
    // Stored again whole, and used.
    m.remount();
    assert_eq!(views(&m, "t/0", 2000), expected);
    assert!(!m.daemon_log().contains("ignored"), "{}", m.daemon_log());
}
