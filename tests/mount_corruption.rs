//! A data directory damaged while the daemon was stopped, then mounted: each case states which
//! records are readable, which errno a reader gets where, what the daemon logs, and that the
//! other topics are served. The outcomes are the table in SEMANTICS.md, "Corruption and
//! recovery".

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{read_string, sh, write_once, Mount};

/// Batches written to topic `t` (one `write()` each), and records per batch.
const BATCHES: usize = 12;
const PER_BATCH: usize = 10;
const EIO: i32 = 5;

fn line(batch: usize, i: usize) -> String {
    format!("rec-{batch:02}-{i:02}\n")
}

/// The `log` bytes of batches `from..to`.
fn lines(from: usize, to: usize) -> String {
    (from..to)
        .flat_map(|b| (0..PER_BATCH).map(move |i| line(b, i)))
        .collect()
}

/// A running mount whose topic `t` has `BATCHES` batches in three 1 KiB segments (four
/// batches each, the last four in the active one) and whose topic `other` has two records.
fn filled_mount() -> Option<Mount> {
    let m = Mount::with_options(common::MANUAL_CLEANUP)?;
    m.create_topic("t", 1);
    m.create_topic("other", 1);
    write_once(
        &m.path("t/config"),
        b"segment.bytes=1024\nindex.interval.bytes=100\n",
    )
    .unwrap();
    for b in 0..BATCHES {
        let batch: String = (0..PER_BATCH).map(|i| line(b, i)).collect();
        write_once(&m.path("t/0/append"), batch.as_bytes()).unwrap();
    }
    write_once(&m.path("other/0/append"), b"o1\no2\n").unwrap();
    Some(m)
}

/// [`filled_mount`], stopped cleanly. Returns the mount (not running) and `t`'s partition
/// directory.
fn stopped_mount() -> Option<(Mount, PathBuf)> {
    let mut m = filled_mount()?;
    let status = m.unmount();
    assert!(status.success(), "clean unmount: {status}");
    let dir = m.data.join("t-0");
    assert_eq!(segments(&dir).len(), 3, "segments: {:?}", segments(&dir));
    Some((m, dir))
}

/// The `.log` files of a partition directory, by base offset.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

/// The position of batch `n` (0-based) of a `.log`, from the batch length fields.
fn batch_position(log: &Path, n: usize) -> u64 {
    let bytes = fs::read(log).unwrap();
    let mut position = 0usize;
    for _ in 0..n {
        let len = u32::from_be_bytes(bytes[position + 8..position + 12].try_into().unwrap());
        position += 12 + len as usize;
    }
    position as u64
}

fn flip_byte(path: &Path, position: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, position).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], position).unwrap();
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn cut_short(path: &Path, bytes: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - bytes).unwrap();
}

/// Reads `path` as `cat` does, in 4 KiB `read()`s: the bytes before the first error and that
/// error's errno (`None` at a clean end of file).
fn read_until_error(path: &Path) -> (String, Option<i32>) {
    let mut f = File::open(path).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return (String::from_utf8(out).unwrap(), None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (String::from_utf8(out).unwrap(), e.raw_os_error()),
        }
    }
}

/// Asserts the daemon serves `other` and that `t` takes a new record after whatever it holds.
fn assert_serving_and_writable(m: &mut Mount) {
    m.assert_serving();
    assert_eq!(read_string(&m.path("other/0/log")), "o1\no2\n");
    write_once(&m.path("t/0/append"), b"after\n").unwrap();
    let end = common::stat_i64(&m.path("t/0"), "log_end_offset");
    assert_eq!(read_string(&m.path(&format!("t/0/{}", end - 1))), "after");
}

fn dump_log_verify(file: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lmqfs"))
        .arg("dump-log")
        .arg("--verify")
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn garbage_after_the_last_batch_of_the_active_segment_is_truncated() {
    for (what, tail) in [
        (
            "garbage",
            (0..100u32).map(|i| (i * 37 + 11) as u8).collect(),
        ),
        ("zeros", vec![0u8; 300]),
    ] {
        let Some((mut m, dir)) = stopped_mount() else {
            return;
        };
        let active = segments(&dir).pop().unwrap();
        append_bytes(&active, &tail);
        m.remount();
        assert_eq!(
            read_until_error(&m.path("t/0/log")),
            (lines(0, BATCHES), None),
            "{what}"
        );
        let log = m.daemon_log();
        assert!(
            log.contains("clean-shutdown marker was present") && log.contains("truncated"),
            "{what}: no log line about the truncation:\n{log}"
        );
        assert_serving_and_writable(&mut m);
        assert!(dump_log_verify(&active).0, "{what}: dump-log --verify");
    }
}

#[test]
fn an_active_segment_cut_short_under_the_marker_loses_only_the_cut_batch() {
    let Some((mut m, dir)) = stopped_mount() else {
        return;
    };
    let active = segments(&dir).pop().unwrap();
    cut_short(&active, 50);
    m.remount();
    assert_eq!(
        read_until_error(&m.path("t/0/log")),
        (lines(0, BATCHES - 1), None)
    );
    assert!(m.daemon_log().contains("clean-shutdown marker was present"));
    assert_serving_and_writable(&mut m);
}

/// Damage to the second segment (batches 4..8): which batch it breaks, and how.
enum ClosedDamage {
    /// A byte in the middle of batch 5's records: its CRC fails.
    FlippedByte,
    /// A byte of batch 5's length field: it no longer frames the batch.
    FlippedLength,
    /// The segment cut 50 bytes short: batch 7, its last, is cut.
    CutShort,
}

#[test]
fn damage_in_a_closed_segment_is_eio_at_its_position_after_every_record_before_it() {
    for damage in [
        ClosedDamage::FlippedByte,
        ClosedDamage::FlippedLength,
        ClosedDamage::CutShort,
    ] {
        let Some((mut m, dir)) = stopped_mount() else {
            return;
        };
        let second = &segments(&dir)[1];
        let (name, batch) = match damage {
            ClosedDamage::FlippedByte => {
                flip_byte(second, batch_position(second, 1) + 100);
                ("flipped byte", 5)
            }
            ClosedDamage::FlippedLength => {
                flip_byte(second, batch_position(second, 1) + 11);
                ("flipped length byte", 5)
            }
            ClosedDamage::CutShort => {
                cut_short(second, 50);
                ("cut short", 7)
            }
        };
        let damaged_at = batch_position(second, batch - 4);
        m.remount();
        // Every record before the damaged batch, then EIO: never a silent gap.
        assert_eq!(
            read_until_error(&m.path("t/0/log")),
            (lines(0, batch), Some(EIO)),
            "{name}"
        );
        assert_eq!(
            read_until_error(&m.path("t/0/log.jsonl")).1,
            Some(EIO),
            "{name}: log.jsonl"
        );
        let head = sh(&m.mnt, "head -1 t/0/log");
        assert!(head.status.success(), "{name}: head -1");
        assert_eq!(String::from_utf8_lossy(&head.stdout), line(0, 0), "{name}");
        // Records of undamaged batches and segments are still served one by one.
        for ok in [35, 45, 85, 115] {
            let (b, i) = (ok / 10, ok % 10);
            assert_eq!(
                read_string(&m.path(&format!("t/0/{ok}"))),
                line(b, i).trim_end(),
                "{name}: record {ok}"
            );
        }
        let bad = batch * 10 + 5;
        assert_eq!(
            common::errno_of(
                &format!("{name}: cat t/0/{bad}"),
                fs::read(m.path(&format!("t/0/{bad}")))
            ),
            EIO
        );
        // `from/<offset>` is a window on the same view, which ends at the damage.
        assert_eq!(
            read_until_error(&m.path("t/0/from/80")),
            (String::new(), Some(EIO)),
            "{name}"
        );
        let log = m.daemon_log();
        assert!(
            log.contains(&format!("{}", second.display()))
                && log.contains(&format!("damaged at position {damaged_at}")),
            "{name}: the daemon log names the damaged file and position:\n{log}"
        );
        assert_serving_and_writable(&mut m);
        let (ok, report) = dump_log_verify(second);
        assert!(
            !ok,
            "{name}: dump-log --verify passes a damaged file:\n{report}"
        );
        assert!(
            report.contains(&format!("position {damaged_at}")),
            "{name}: dump-log names the position:\n{report}"
        );
    }
}

#[test]
fn a_flipped_byte_in_the_active_segment_under_the_marker_is_eio_at_that_position() {
    let Some((mut m, dir)) = stopped_mount() else {
        return;
    };
    // The second batch of the active segment (batch 9); two intact batches follow it.
    let active = segments(&dir).pop().unwrap();
    flip_byte(&active, batch_position(&active, 1) + 100);
    m.remount();
    assert_eq!(
        read_until_error(&m.path("t/0/log")),
        (lines(0, 9), Some(EIO))
    );
    assert_eq!(read_string(&m.path("t/0/105")), line(10, 5).trim_end());
    assert!(m.daemon_log().contains("damaged"), "{}", m.daemon_log());
    m.assert_serving();
    assert_eq!(read_string(&m.path("other/0/log")), "o1\no2\n");
}

#[test]
fn a_flipped_byte_in_unflushed_data_is_cut_by_recovery() {
    let Some(mut m) = filled_mount() else {
        return;
    };
    // No flush since the last roll: the active segment is past the recovery point.
    m.kill9();
    let dir = m.data.join("t-0");
    let active = segments(&dir).pop().unwrap();
    flip_byte(&active, batch_position(&active, 1) + 100);
    m.remount();
    // Recovery validates everything after the recovery point and cuts at the damage.
    assert_eq!(read_until_error(&m.path("t/0/log")), (lines(0, 9), None));
    let log = m.daemon_log();
    assert!(
        log.contains("unclean shutdown") && log.contains("invalid bytes truncated"),
        "{log}"
    );
    assert_serving_and_writable(&mut m);
}

#[test]
fn missing_or_damaged_indexes_are_rebuilt() {
    type Damage = fn(&Path);
    let cases: [(&str, Damage); 4] = [
        ("deleted .index", |p| {
            fs::remove_file(p.with_extension("index")).unwrap()
        }),
        ("deleted .timeindex", |p| {
            fs::remove_file(p.with_extension("timeindex")).unwrap()
        }),
        ("truncated .index", |p| {
            cut_short(&p.with_extension("index"), 3)
        }),
        ("truncated .timeindex", |p| {
            cut_short(&p.with_extension("timeindex"), 5)
        }),
    ];
    for (what, damage) in cases {
        let Some((mut m, dir)) = stopped_mount() else {
            return;
        };
        let second = &segments(&dir)[1];
        damage(second);
        m.remount();
        assert_eq!(
            read_until_error(&m.path("t/0/log")),
            (lines(0, BATCHES), None),
            "{what}"
        );
        assert_eq!(
            read_string(&m.path("t/0/55")),
            line(5, 5).trim_end(),
            "{what}"
        );
        assert_serving_and_writable(&mut m);
        m.unmount();
        for file in segments(&dir) {
            let (ok, report) = dump_log_verify(&file.with_extension("index"));
            assert!(
                ok,
                "{what}: index of {} not rebuilt:\n{report}",
                file.display()
            );
        }
    }
}

#[test]
fn an_emptied_closed_segment_is_reported_and_the_rest_served() {
    let Some((mut m, dir)) = stopped_mount() else {
        return;
    };
    let second = &segments(&dir)[1];
    File::create(second).unwrap();
    m.remount();
    let mut expected = lines(0, 4);
    expected.push_str(&lines(8, BATCHES));
    assert_eq!(read_until_error(&m.path("t/0/log")), (expected, None));
    let log = m.daemon_log();
    assert!(
        log.contains("is empty: the records at offsets [40, 80) are missing"),
        "{log}"
    );
    assert_serving_and_writable(&mut m);
}

#[test]
fn stray_and_unknown_files_in_a_partition_directory() {
    let Some((mut m, dir)) = stopped_mount() else {
        return;
    };
    let second = segments(&dir)[1].clone();
    let name = second.file_name().unwrap().to_str().unwrap().to_string();
    for suffix in [".cleaned", ".swap", ".deleted"] {
        fs::write(dir.join(format!("{name}{suffix}")), b"leftover").unwrap();
    }
    fs::write(dir.join("notes.txt"), b"mine").unwrap();
    fs::write(dir.join(format!("{name}.bak")), b"a copy").unwrap();
    m.remount();
    assert_eq!(
        read_until_error(&m.path("t/0/log")),
        (lines(0, BATCHES), None)
    );
    // Leftovers of an interrupted clean or delete go; files lmqfs does not know stay.
    for suffix in [".cleaned", ".swap", ".deleted"] {
        assert!(!dir.join(format!("{name}{suffix}")).exists(), "{suffix}");
    }
    assert_eq!(fs::read(dir.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(
        fs::read(dir.join(format!("{name}.bak"))).unwrap(),
        b"a copy"
    );
    assert!(m.daemon_log().contains("removing stray file"));
    assert_serving_and_writable(&mut m);
}

#[test]
fn a_missing_or_corrupt_checkpoint_falls_back_to_the_segments() {
    for corrupt in [false, true] {
        let Some((mut m, dir)) = stopped_mount() else {
            return;
        };
        let checkpoint = dir.join("lmqfs-checkpoint");
        if corrupt {
            fs::write(&checkpoint, b"\x00\x01garbage\xff").unwrap();
        } else {
            fs::remove_file(&checkpoint).unwrap();
        }
        m.remount();
        assert_eq!(
            read_until_error(&m.path("t/0/log")),
            (lines(0, BATCHES), None),
            "corrupt={corrupt}"
        );
        if corrupt {
            assert!(
                m.daemon_log().contains("lmqfs-checkpoint"),
                "{}",
                m.daemon_log()
            );
        }
        assert_serving_and_writable(&mut m);
    }
}

#[test]
fn a_corrupt_topic_metadata_file_quarantines_only_that_topic() {
    let Some((mut m, dir)) = stopped_mount() else {
        return;
    };
    let metadata = m.data.join(".lmqfs-topics").join("t");
    fs::write(&metadata, b"topic=t\npartitions=banana\n").unwrap();
    m.remount();
    assert!(!m.path("t").exists(), "a quarantined topic is not served");
    assert_eq!(read_string(&m.path("other/0/log")), "o1\no2\n");
    let log = m.daemon_log();
    assert!(
        log.contains("QUARANTINED topic \"t\"") && log.contains(&metadata.display().to_string()),
        "{log}"
    );
    // Its data is untouched, and repairing the file brings it back.
    assert_eq!(segments(&dir).len(), 3);
    m.unmount();
    fs::write(&metadata, b"topic=t\npartitions=1\nsegment.bytes=1024\n").unwrap();
    m.remount();
    assert_eq!(
        read_until_error(&m.path("t/0/log")),
        (lines(0, BATCHES), None)
    );
}

#[test]
fn a_deleted_topic_metadata_file_is_adopted_loudly() {
    let Some((mut m, _dir)) = stopped_mount() else {
        return;
    };
    fs::remove_file(m.data.join(".lmqfs-topics").join("t")).unwrap();
    m.remount();
    assert_eq!(
        read_until_error(&m.path("t/0/log")),
        (lines(0, BATCHES), None)
    );
    assert_eq!(read_string(&m.path("t/partitions")).trim(), "1");
    assert!(
        m.daemon_log().contains("ADOPTED topic \"t\""),
        "{}",
        m.daemon_log()
    );
    assert!(m.data.join(".lmqfs-topics").join("t").exists());
    assert_serving_and_writable(&mut m);
}

#[test]
fn a_partition_that_cannot_be_opened_is_quarantined_and_the_rest_served() {
    let Some((mut m, dir)) = stopped_mount() else {
        return;
    };
    // A directory where a segment file should be: opening the partition fails (EISDIR).
    let bogus = dir.join("00000000000000000200.log");
    fs::create_dir(&bogus).unwrap();
    m.remount();
    assert_eq!(
        common::errno_of("cat t/0/log", fs::read(m.path("t/0/log"))),
        EIO
    );
    assert_eq!(
        common::errno_of(
            "write t/0/append",
            write_once(&m.path("t/0/append"), b"x\n")
        ),
        EIO
    );
    assert_eq!(read_string(&m.path("other/0/log")), "o1\no2\n");
    write_once(&m.path("other/0/append"), b"o3\n").unwrap();
    let log = m.daemon_log();
    assert!(
        log.contains("QUARANTINED partition 0 of topic \"t\"")
            && log.contains(&dir.display().to_string()),
        "{log}"
    );
    // Nothing of it was changed; removing the bogus entry brings it back.
    m.unmount();
    assert_eq!(segments(&dir).len(), 4);
    fs::remove_dir(&bogus).unwrap();
    m.remount();
    assert_eq!(
        read_until_error(&m.path("t/0/log")),
        (lines(0, BATCHES), None)
    );
}
