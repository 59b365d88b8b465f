//! Consumer groups as files: `groups/<group>` (commit and read back a group's offset) and
//! `consume/<group>` (what is new since the last run, committed on close), across remounts and a
//! kill -9, one consumer per group and partition, bad input, and the internal
//! `__consumer_offsets` topic that holds the commits.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::{errno_of, ls, read_string, sh, sh_ok, stat_i64, wait_until, write_once, Mount};

/// `echo OFFSET > path`, as a shell does it (`O_CREAT|O_TRUNC`, one write).
fn commit(m: &Mount, rel: &str, offset: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path(rel))?;
    f.write_all(format!("{offset}\n").as_bytes())
}

fn committed(m: &Mount, rel: &str) -> String {
    read_string(&m.path(rel)).trim_end().to_string()
}

#[test]
fn commit_read_back_remount_read_back() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("orders", 1);
    write_once(&m.path("orders/0/append"), b"a\nb\nc\nd\ne\n").unwrap();
    let p = m.path("orders/0");
    assert!(ls(&p).contains(&"groups".to_string()));
    assert!(ls(&p).contains(&"consume".to_string()));
    assert_eq!(ls(&p.join("groups")), Vec::<String>::new());
    assert_eq!(
        errno_of("cat groups/billing", fs::read(p.join("groups/billing"))),
        libc::ENOENT
    );

    sh_ok(&p, "echo 3 > groups/billing");
    assert_eq!(read_string(&p.join("groups/billing")), "3\n");
    assert_eq!(ls(&p.join("groups")), ["billing"]);
    assert_eq!(ls(&p.join("consume")), ["billing"]);
    // An existing group: `>` again, then `printf` without a newline.
    sh_ok(&p, "echo 4 > groups/billing && printf 5 > groups/billing");
    assert_eq!(committed(&m, "orders/0/groups/billing"), "5");
    let meta = fs::metadata(p.join("groups/billing")).unwrap();
    assert_eq!(meta.len(), 2, "size of \"5\\n\"");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o644
    );
    // The log itself is untouched by commits.
    assert_eq!(stat_i64(&p, "log_end_offset"), 5);

    m.remount();

    assert_eq!(committed(&m, "orders/0/groups/billing"), "5");
    assert_eq!(ls(&m.path("orders/0/groups")), ["billing"]);
    sh_ok(&m.path("orders/0"), "echo 2 > groups/billing");
    m.remount();
    assert_eq!(committed(&m, "orders/0/groups/billing"), "2");
}

#[test]
fn two_groups_are_independent() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 2);
    write_once(&m.path("t/0/append"), b"0\n1\n2\n3\n4\n5\n").unwrap();
    write_once(&m.path("t/1/append"), b"x\ny\n").unwrap();
    commit(&m, "t/0/groups/a", "1").unwrap();
    commit(&m, "t/0/groups/b", "4").unwrap();
    commit(&m, "t/1/groups/a", "2").unwrap();
    assert_eq!(committed(&m, "t/0/groups/a"), "1");
    assert_eq!(committed(&m, "t/0/groups/b"), "4");
    assert_eq!(committed(&m, "t/1/groups/a"), "2");
    assert_eq!(ls(&m.path("t/0/groups")), ["a", "b"]);
    assert_eq!(ls(&m.path("t/1/groups")), ["a"]);
    assert_eq!(
        errno_of("t/1/groups/b", fs::read(m.path("t/1/groups/b"))),
        libc::ENOENT
    );
    // Consuming as b moves b only, and only on its partition.
    assert_eq!(read_string(&m.path("t/0/consume/b")), "4\n5\n");
    assert_eq!(committed(&m, "t/0/groups/b"), "6");
    assert_eq!(committed(&m, "t/0/groups/a"), "1");
    assert_eq!(committed(&m, "t/1/groups/a"), "2");
    assert_eq!(read_string(&m.path("t/0/consume/a")), "1\n2\n3\n4\n5\n");
    assert_eq!(committed(&m, "t/0/groups/a"), "6");
    assert_eq!(committed(&m, "t/1/groups/a"), "2");
}

#[test]
fn consume_twice_returns_only_new_records() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("jobs", 1);
    let p = m.path("jobs/0");
    write_once(&p.join("append"), b"a\nb\nc\n").unwrap();

    // As a cron job would run it: the first run sees everything, from the log start.
    assert_eq!(sh_ok(&p, "cat consume/nightly"), "a\nb\nc\n");
    assert_eq!(committed(&m, "jobs/0/groups/nightly"), "3");
    // Right after it: nothing new, nothing committed anew.
    assert_eq!(sh_ok(&p, "cat consume/nightly"), "");
    assert_eq!(committed(&m, "jobs/0/groups/nightly"), "3");
    write_once(&p.join("append"), b"d\ne\n").unwrap();
    assert_eq!(sh_ok(&p, "cat consume/nightly"), "d\ne\n");
    assert_eq!(committed(&m, "jobs/0/groups/nightly"), "5");

    // A reader that stops in the middle of a record commits the whole records before it.
    write_once(&p.join("append"), b"ff\ngg\nhh\n").unwrap();
    let mut f = File::open(p.join("consume/nightly")).unwrap();
    let mut buf = [0u8; 4];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ff\ng");
    drop(f);
    assert_eq!(committed(&m, "jobs/0/groups/nightly"), "6");
    assert_eq!(sh_ok(&p, "cat consume/nightly"), "gg\nhh\n");

    // Opening and closing without reading commits nothing; the snapshot ends at the log end
    // at open, records appended later are for the next run.
    write_once(&p.join("append"), b"i\n").unwrap();
    drop(File::open(p.join("consume/nightly")).unwrap());
    let mut f = wait_open(&p.join("consume/nightly"));
    write_once(&p.join("append"), b"j\n").unwrap();
    let mut got = String::new();
    f.read_to_string(&mut got).unwrap();
    assert_eq!(got, "i\n");
    drop(f);
    assert_eq!(committed(&m, "jobs/0/groups/nightly"), "9");

    // The position survives a remount; a commit through groups/ rewinds.
    m.remount();
    let p = m.path("jobs/0");
    assert_eq!(sh_ok(&p, "cat consume/nightly"), "j\n");
    sh_ok(&p, "echo 7 > groups/nightly");
    assert_eq!(sh_ok(&p, "cat consume/nightly"), "hh\ni\nj\n");
    assert_eq!(sh_ok(&p, "cat consume/nightly"), "");
    // A new group starts at the log start; after delete-records, at the new log start.
    write_once(&p.join("control"), b"delete-records 4\n").unwrap();
    assert_eq!(
        sh_ok(&p, "cat consume/late"),
        "e\nff\ngg\nhh\ni\nj\n",
        "from the log start"
    );
}

#[test]
fn the_at_least_once_pattern_commits_only_after_processing() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("orders", 1);
    let p = m.path("orders/0");
    write_once(&p.join("append"), b"o1\no2\no3\n").unwrap();
    write_once(&p.join("control"), b"delete-records 1\n").unwrap();
    let out = m.scratch().join("processed");
    // SEMANTICS.md's script, with `jq` spelled in grep for machines without it.
    let run = |process: &str| {
        let field = |name: &str| format!("grep -o '\"{name}\": *[0-9]*' stats | grep -o '[0-9]*$'");
        sh(
            &p,
            &format!(
                "start=$(cat groups/billing 2>/dev/null || {}) && end=$({}) && \
                 head -n $((end - start)) from/$start | {process} && echo $end > groups/billing",
                field("log_start_offset"),
                field("log_end_offset")
            ),
        )
    };
    // Processing fails: nothing is committed, the next run sees the same records.
    assert!(!run("false").status.success());
    assert_eq!(
        errno_of("no commit", fs::read(p.join("groups/billing"))),
        libc::ENOENT
    );
    let process = format!("cat >> {}", out.display());
    assert!(run(&process).status.success());
    assert_eq!(read_string(&out), "o2\no3\n");
    assert_eq!(committed(&m, "orders/0/groups/billing"), "3");
    write_once(&p.join("append"), b"o4\no5\n").unwrap();
    assert!(!run("false").status.success());
    assert_eq!(committed(&m, "orders/0/groups/billing"), "3");
    assert!(run(&process).status.success());
    assert_eq!(read_string(&out), "o2\no3\no4\no5\n");
    assert_eq!(committed(&m, "orders/0/groups/billing"), "5");
}

/// Opens `path` for reading, retrying while the kernel has not yet released an earlier open
/// that was closed without a read (the claim of such an open ends with its release).
fn wait_open(path: &Path) -> File {
    let mut file = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            file = File::open(path).ok();
            file.is_some()
        }),
        "{} stayed busy",
        path.display()
    );
    file.unwrap()
}

#[test]
fn a_second_consumer_of_the_same_group_gets_ebusy() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 2);
    write_once(&m.path("t/0/append"), b"a\nb\n").unwrap();
    let mut first = File::open(m.path("t/0/consume/g")).unwrap();
    assert_eq!(
        errno_of("second open", File::open(m.path("t/0/consume/g"))),
        libc::EBUSY
    );
    let out = sh(&m.path("t/0"), "cat consume/g");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("busy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Other groups, and the same group on another partition, are free.
    assert_eq!(read_string(&m.path("t/0/consume/other")), "a\nb\n");
    assert_eq!(read_string(&m.path("t/1/consume/g")), "");
    // Nothing changed for g.
    assert_eq!(
        errno_of("g has no commit", fs::read(m.path("t/0/groups/g"))),
        libc::ENOENT
    );
    let mut got = String::new();
    first.read_to_string(&mut got).unwrap();
    assert_eq!(got, "a\nb\n");
    drop(first);
    // close() committed and ended the claim: the next consumer opens at once.
    assert_eq!(committed(&m, "t/0/groups/g"), "2");
    assert_eq!(read_string(&m.path("t/0/consume/g")), "");
    // consume/ is read-only.
    assert_eq!(
        errno_of(
            "write consume/g",
            OpenOptions::new().write(true).open(m.path("t/0/consume/g"))
        ),
        libc::EACCES
    );
}

#[test]
fn bad_input_table() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    write_once(&m.path("t/0/append"), b"0\n1\n2\n3\n4\n").unwrap();
    commit(&m, "t/0/groups/g", "2").unwrap();
    let state = |m: &Mount| {
        (
            committed(m, "t/0/groups/g"),
            ls(&m.path("t/0/groups")),
            read_string(&m.path("t/0/log")),
            stat_i64(&m.path("t/0"), "log_end_offset"),
        )
    };
    let before = state(&m);

    let long_250 = "g".repeat(250);
    let long_300 = "g".repeat(300);
    let mut failures = Vec::new();
    let mut check = |what: String, want: i32, result: std::io::Result<()>| {
        match result {
            Ok(()) => failures.push(format!("{what}: succeeded, expected errno {want}")),
            Err(e) if e.raw_os_error() == Some(want) => {}
            Err(e) => failures.push(format!("{what}: got {e}, expected errno {want}")),
        }
        let after = state(&m);
        if after != before {
            failures.push(format!("{what}: changed {before:?} to {after:?}"));
        }
    };
    // Offsets: not numbers, negative, past the log end (5), to an existing and a new group.
    for group in ["g", "new"] {
        for offset in [
            "abc",
            "-1",
            "+1",
            "1.5",
            "0x1",
            "",
            "6",
            "99999999999999999999",
        ] {
            check(
                format!("echo {offset:?} > groups/{group}"),
                libc::EINVAL,
                commit(&m, &format!("t/0/groups/{group}"), offset),
            );
        }
    }
    // Group names follow topic naming rules, at create, lookup and for consume/.
    for name in ["a b", "a:b", "ü", "a*b", &long_250, &long_300] {
        let short = &name[..name.len().min(12)];
        check(
            format!("echo 1 > groups/{short}.. ({} bytes)", name.len()),
            libc::EINVAL,
            commit(&m, &format!("t/0/groups/{name}"), "1"),
        );
        check(
            format!("cat groups/{short}.."),
            libc::EINVAL,
            fs::read(m.path(&format!("t/0/groups/{name}"))).map(drop),
        );
        check(
            format!("cat consume/{short}.."),
            libc::EINVAL,
            fs::read(m.path(&format!("t/0/consume/{name}"))).map(drop),
        );
    }
    // Refused operations.
    check(
        "mkdir groups/x".into(),
        libc::EPERM,
        fs::create_dir(m.path("t/0/groups/x")),
    );
    // Removing a group file changes nothing (the rule for everything inside a topic).
    let before = fs::read_to_string(m.path("t/0/groups/g")).unwrap();
    fs::remove_file(m.path("t/0/groups/g")).unwrap();
    assert_eq!(fs::read_to_string(m.path("t/0/groups/g")).unwrap(), before);
    check(
        "write consume/g".into(),
        libc::EACCES,
        OpenOptions::new()
            .write(true)
            .open(m.path("t/0/consume/g"))
            .map(drop),
    );
    check(
        "groups/ of a missing partition".into(),
        libc::ENOENT,
        commit(&m, "t/1/groups/g", "0"),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The log end itself is a valid commit: everything consumed.
    commit(&m, "t/0/groups/g", "5").unwrap();
    assert_eq!(committed(&m, "t/0/groups/g"), "5");
    assert!(m.daemon_log().contains("invalid group name"));
}

#[test]
fn the_internal_topic_is_reserved_and_hidden() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    write_once(&m.path("t/0/append"), b"x\n").unwrap();
    commit(&m, "t/0/groups/g", "1").unwrap();
    assert_eq!(
        errno_of(
            "mkdir __consumer_offsets",
            fs::create_dir(m.path("__consumer_offsets"))
        ),
        libc::EINVAL
    );
    assert_eq!(ls(&m.mnt), ["README", "control", "t"]);
    assert_eq!(
        errno_of(
            "cat __consumer_offsets/0/log",
            fs::read(m.path("__consumer_offsets/0/log"))
        ),
        libc::ENOENT
    );
    // The commits are Kafka segments in a directory of their own.
    let internal = m.data.join(".lmqfs-internal/__consumer_offsets-0");
    let log = internal.join("00000000000000000000.log");
    assert!(fs::metadata(&log).unwrap().len() > 0);
    let out = std::process::Command::new(common::BIN)
        .arg("dump-log")
        .arg("--verify")
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The root flush reaches it too.
    write_once(&m.path("control"), b"flush\n").unwrap();
}

#[test]
fn a_user_topic_named_consumer_offsets_still_opens_and_serves() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("legacy", 1);
    write_once(&m.path("legacy/0/append"), b"old 0\nold 1\n").unwrap();
    let status = m.unmount();
    assert!(status.success());
    // A data directory from before the name was reserved.
    let topics = m.data.join(".lmqfs-topics");
    let meta = fs::read_to_string(topics.join("legacy")).unwrap();
    fs::write(
        topics.join("__consumer_offsets"),
        meta.replace("topic=legacy", "topic=__consumer_offsets"),
    )
    .unwrap();
    fs::remove_file(topics.join("legacy")).unwrap();
    fs::rename(m.data.join("legacy-0"), m.data.join("__consumer_offsets-0")).unwrap();

    m.remount();
    let log = m.daemon_log();
    assert!(
        log.contains("__consumer_offsets") && log.contains("reserved"),
        "no log line about the reserved name:\n{log}"
    );
    assert_eq!(ls(&m.mnt), ["README", "__consumer_offsets", "control"]);
    let p = m.path("__consumer_offsets/0");
    assert_eq!(read_string(&p.join("log")), "old 0\nold 1\n");
    write_once(&p.join("append"), b"new 2\n").unwrap();
    // Groups work on it like on any topic, and land apart from its records.
    assert_eq!(sh_ok(&p, "cat consume/g"), "old 0\nold 1\nnew 2\n");
    assert_eq!(committed(&m, "__consumer_offsets/0/groups/g"), "3");
    assert_eq!(read_string(&p.join("log")), "old 0\nold 1\nnew 2\n");
    m.remount();
    assert_eq!(committed(&m, "__consumer_offsets/0/groups/g"), "3");
    // Deleting it works; taking the name again does not.
    fs::remove_dir(m.path("__consumer_offsets")).unwrap();
    assert_eq!(
        errno_of(
            "mkdir __consumer_offsets",
            fs::create_dir(m.path("__consumer_offsets"))
        ),
        libc::EINVAL
    );
}

#[test]
fn commits_whose_write_returned_survive_kill_9() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("k", 2);
    let records: String = (0..100).map(|i| format!("r{i}\n")).collect();
    write_once(&m.path("k/0/append"), records.as_bytes()).unwrap();
    write_once(&m.path("k/1/append"), b"x\ny\n").unwrap();
    // Many commits through one open file (one offset per write), and through new opens.
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("k/0/groups/stream"))
        .unwrap();
    for offset in 1..=60 {
        f.write_all(format!("{offset}\n").as_bytes()).unwrap();
    }
    for (i, group) in ["a", "b", "c"].iter().enumerate() {
        commit(
            &m,
            &format!("k/0/groups/{group}"),
            &(10 * i + 7).to_string(),
        )
        .unwrap();
    }
    assert_eq!(sh_ok(&m.path("k/1"), "cat consume/tail"), "x\ny\n");
    // No flush, no clean stop: only write() (and close() of consume/) returned.
    m.kill9();
    drop(f);

    m.remount();

    assert_eq!(committed(&m, "k/0/groups/stream"), "60");
    assert_eq!(committed(&m, "k/0/groups/a"), "7");
    assert_eq!(committed(&m, "k/0/groups/b"), "17");
    assert_eq!(committed(&m, "k/0/groups/c"), "27");
    assert_eq!(committed(&m, "k/1/groups/tail"), "2");
    assert_eq!(ls(&m.path("k/0/groups")), ["a", "b", "c", "stream"]);
    assert_eq!(sh_ok(&m.path("k/1"), "cat consume/tail"), "");
    assert_eq!(sh_ok(&m.path("k/0"), "cat consume/c | wc -l").trim(), "73");
}

#[test]
fn deleting_a_topic_drops_its_groups() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 1);
    write_once(&m.path("t/0/append"), b"a\nb\n").unwrap();
    commit(&m, "t/0/groups/g", "2").unwrap();
    fs::remove_dir(m.path("t")).unwrap();
    m.create_topic("t", 1);
    write_once(&m.path("t/0/append"), b"c\n").unwrap();
    assert_eq!(ls(&m.path("t/0/groups")), Vec::<String>::new());
    assert_eq!(read_string(&m.path("t/0/consume/g")), "c\n");
    m.remount();
    assert_eq!(ls(&m.path("t/0/groups")), ["g"]);
    assert_eq!(committed(&m, "t/0/groups/g"), "1");
}
