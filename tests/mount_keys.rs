//! `keys/`: a partition as a key-value map, driven by shell tools and plain file I/O:
//! `ls`, `cat`, `echo >`, `>>`, `touch`, `truncate`, `rm`, before and after compaction, across
//! remounts and a kill -9, with concurrent writers, bad names and oversized values.

mod common;

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{
    errno_of, ls, read, read_string, sh, sh_ok, stat_i64, write_once, Mount, MANUAL_CLEANUP,
};

fn compacted_topic(m: &Mount, name: &str) {
    m.create_topic(name, 1);
    sh_ok(
        &m.mnt,
        &format!("echo cleanup.policy=compact > {name}/config"),
    );
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn last_record(m: &Mount, partition: &str) -> serde_json::Value {
    let log = read_string(&m.path(&format!("{partition}/log.jsonl")));
    serde_json::from_str(log.lines().last().expect("a record")).unwrap()
}

#[test]
fn ls_cat_echo_rm_on_a_compacted_topic() {
    let Some(m) = Mount::with_options(MANUAL_CLEANUP) else {
        return;
    };
    compacted_topic(&m, "kv");
    let keys = m.path("kv/0/keys");
    assert!(ls(&m.path("kv/0")).contains(&"keys".to_string()));
    assert_eq!(mode(&keys), 0o755);
    assert_eq!(ls(&keys), Vec::<String>::new());

    sh_ok(
        &m.mnt,
        "echo v1 > kv/0/keys/a && printf v2 > kv/0/keys/b && touch kv/0/keys/empty",
    );
    // A file created and closed without a write (`touch`) appends an empty value when the
    // kernel releases it, just after close() returned.
    assert!(
        common::wait_until(std::time::Duration::from_secs(5), || ls(&keys).len() == 3),
        "{:?}",
        ls(&keys)
    );
    assert_eq!(ls(&keys), ["a", "b", "empty"]);
    assert_eq!(sh_ok(&m.mnt, "cat kv/0/keys/a"), "v1\n");
    assert_eq!(read(&keys.join("b")), b"v2");
    assert_eq!(read(&keys.join("empty")), b"");
    assert_eq!(fs::metadata(keys.join("a")).unwrap().len(), 3);
    assert_eq!(mode(&keys.join("a")), 0o644);
    // One record per written file, keyed, with the written bytes as value.
    assert_eq!(stat_i64(&m.path("kv/0"), "log_end_offset"), 3);
    let r = last_record(&m, "kv/0");
    assert_eq!(
        (r["key"].as_str(), r["value"].as_str()),
        (Some("empty"), Some(""))
    );

    // `>` replaces, `>>` adds to the current value.
    sh_ok(
        &m.mnt,
        "echo new > kv/0/keys/a && printf more >> kv/0/keys/b",
    );
    assert_eq!(read(&keys.join("a")), b"new\n");
    assert_eq!(read(&keys.join("b")), b"v2more");
    assert_eq!(stat_i64(&m.path("kv/0"), "log_end_offset"), 5);

    // Reading, or opening for writing without writing, appends nothing.
    sh_ok(
        &m.mnt,
        "cat kv/0/keys/a kv/0/keys/b >/dev/null; : >> kv/0/keys/a",
    );
    assert_eq!(stat_i64(&m.path("kv/0"), "log_end_offset"), 5);

    // `truncate` without an open file sets the value cut to that size.
    sh_ok(&m.mnt, "truncate -s 2 kv/0/keys/b");
    assert_eq!(read(&keys.join("b")), b"v2");

    // `rm` appends a tombstone; the key is gone.
    sh_ok(&m.mnt, "rm kv/0/keys/b");
    assert_eq!(ls(&keys), ["a", "empty"]);
    let r = last_record(&m, "kv/0");
    assert_eq!(r["key"], "b");
    assert_eq!(r["value"], serde_json::Value::Null);
    assert_eq!(errno_of("cat b", fs::read(keys.join("b"))), libc::ENOENT);
    assert_eq!(
        errno_of("rm b again", fs::remove_file(keys.join("b"))),
        libc::ENOENT
    );
    // A tombstone through append.jsonl removes a key too, and a new value brings it back.
    write_once(
        &m.path("kv/0/append.jsonl"),
        b"{\"key\":\"empty\",\"value\":null}\n{\"key\":\"b\",\"value\":\"back\"}\n",
    )
    .unwrap();
    assert_eq!(ls(&keys), ["a", "b"]);
    assert_eq!(read(&keys.join("b")), b"back");

    // Compaction changes no answer.
    sh_ok(
        &m.mnt,
        "echo roll > kv/0/control && echo compact > kv/0/control",
    );
    assert!(
        stats_i64(&m, "kv/0", &["last_compaction", "records_removed"]) > 0,
        "nothing was compacted"
    );
    assert_eq!(ls(&keys), ["a", "b"]);
    assert_eq!(read(&keys.join("a")), b"new\n");
    assert_eq!(read(&keys.join("b")), b"back");
    assert_eq!(
        errno_of("cat empty", fs::read(keys.join("empty"))),
        libc::ENOENT
    );
}

fn stats_i64(m: &Mount, partition: &str, path: &[&str]) -> i64 {
    let mut v = common::stats(&m.path(partition));
    for key in path {
        v = v[*key].clone();
    }
    v.as_i64()
        .unwrap_or_else(|| panic!("stats {path:?} is not an integer: {v}"))
}

#[test]
fn keys_work_on_a_topic_that_is_not_compacted() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("plain", 2);
    write_once(&m.path("plain/1/append"), b"keyless lines\nare fine here\n").unwrap();
    sh_ok(&m.mnt, "echo hello > plain/1/keys/greeting");
    assert_eq!(ls(&m.path("plain/1/keys")), ["greeting"]);
    assert_eq!(ls(&m.path("plain/0/keys")), Vec::<String>::new());
    assert_eq!(read(&m.path("plain/1/keys/greeting")), b"hello\n");
    assert_eq!(read(&m.path("plain/1/2")), b"hello\n");
    sh_ok(&m.mnt, "rm plain/1/keys/greeting");
    assert_eq!(ls(&m.path("plain/1/keys")), Vec::<String>::new());
}

#[test]
fn keys_survive_compaction_remount_and_kill_9() {
    let Some(mut m) = Mount::with_options(MANUAL_CLEANUP) else {
        return;
    };
    compacted_topic(&m, "kv");
    let keys = m.path("kv/0/keys");
    for i in 0..20 {
        fs::write(keys.join(format!("key-{i:02}")), format!("first {i}")).unwrap();
    }
    for i in 0..10 {
        fs::write(keys.join(format!("key-{i:02}")), format!("second {i}")).unwrap();
    }
    fs::remove_file(keys.join("key-19")).unwrap();
    let expected = |extra: &[(&str, &str)]| {
        let mut want: Vec<(String, String)> = (0..19)
            .map(|i| {
                let value = if i < 10 { "second" } else { "first" };
                (format!("key-{i:02}"), format!("{value} {i}"))
            })
            .collect();
        want.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        want.sort();
        want
    };
    let check = |want: &[(String, String)], when: &str| {
        let names = ls(&keys);
        let listed: Vec<&String> = want.iter().map(|(k, _)| k).collect();
        assert_eq!(names.iter().collect::<Vec<_>>(), listed, "{when}");
        for (k, v) in want {
            assert_eq!(read_string(&keys.join(k)), *v, "{k} {when}");
        }
        assert_eq!(
            errno_of("cat key-19", fs::read(keys.join("key-19"))),
            libc::ENOENT,
            "{when}"
        );
    };
    check(&expected(&[]), "before compaction");

    sh_ok(
        &m.mnt,
        "echo roll > kv/0/control && echo compact > kv/0/control",
    );
    assert!(stats_i64(&m, "kv/0", &["last_compaction", "records_removed"]) >= 10);
    check(&expected(&[]), "after compaction");

    m.remount();
    check(&expected(&[]), "after remount");

    fs::write(keys.join("after-remount"), "written, then kill -9").unwrap();
    fs::write(keys.join("key-00"), "third 0").unwrap();
    m.kill9();
    m.remount();
    let mut want = expected(&[("after-remount", "written, then kill -9")]);
    for (k, v) in want.iter_mut() {
        if k == "key-00" {
            *v = "third 0".into();
        }
    }
    check(&want, "after kill -9");
    // And the map goes on working.
    fs::remove_file(keys.join("after-remount")).unwrap();
    assert!(!ls(&keys).contains(&"after-remount".to_string()));
}

#[test]
fn concurrent_writers_on_different_keys_and_on_the_same_key() {
    let Some(m) = Mount::with_options(MANUAL_CLEANUP) else {
        return;
    };
    compacted_topic(&m, "kv");
    // Each writer writes its own keys and, in between, a 200 KB value of one letter to the
    // shared key, which `tr` writes in several write() calls.
    let writer = |letter: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "set -e; for i in $(seq 1 20); do \
                   printf '{letter}%s' $i > kv/0/keys/{letter}-$i; \
                   head -c 200000 /dev/zero | tr '\\0' '{letter}' > kv/0/keys/same; \
                 done"
            ))
            .current_dir(&m.mnt)
            .spawn()
            .unwrap()
    };
    let mut a = writer("A");
    let mut b = writer("B");
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());

    let keys = m.path("kv/0/keys");
    let names = ls(&keys);
    assert_eq!(names.len(), 41, "{names:?}");
    for letter in ["A", "B"] {
        for i in 1..=20 {
            assert_eq!(
                read_string(&keys.join(format!("{letter}-{i}"))),
                format!("{letter}{i}")
            );
        }
    }
    let same = read(&keys.join("same"));
    assert_eq!(same.len(), 200_000);
    assert!(
        same.iter().all(|b| *b == b'A') || same.iter().all(|b| *b == b'B'),
        "the value mixes writers"
    );
    // Every record of the shared key is one writer's whole value.
    let mut count = 0;
    for line in read_string(&m.path("kv/0/log.jsonl")).lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        if r["key"] == "same" {
            let v = r["value"].as_str().unwrap();
            assert_eq!(v.len(), 200_000);
            assert!(v.bytes().all(|b| b == v.as_bytes()[0]), "a torn value");
            count += 1;
        }
    }
    assert_eq!(count, 40);
    // The last record of the key is what keys/ shows.
    assert_eq!(stat_i64(&m.path("kv/0"), "log_end_offset"), 80);
}

#[test]
fn bad_names_oversized_values_and_refused_operations() {
    let Some(m) = Mount::with_options(MANUAL_CLEANUP) else {
        return;
    };
    compacted_topic(&m, "kv");
    sh_ok(&m.mnt, "echo max.message.bytes=1024 > kv/config");
    let keys = m.path("kv/0/keys");
    sh_ok(&m.mnt, "printf small > kv/0/keys/ok");
    let end = || stat_i64(&m.path("kv/0"), "log_end_offset");
    assert_eq!(end(), 1);

    // Names: not UTF-8 is EINVAL to create and ENOENT to read; too long is the kernel's
    // ENAMETOOLONG; a missing key is ENOENT.
    let not_utf8 = keys.join(OsStr::from_bytes(b"caf\xe9"));
    assert_eq!(
        errno_of("create non-UTF-8", fs::write(&not_utf8, "x")),
        libc::EINVAL
    );
    assert_eq!(errno_of("cat non-UTF-8", fs::read(&not_utf8)), libc::ENOENT);
    assert_eq!(
        errno_of(
            "create 256 bytes",
            fs::write(keys.join("k".repeat(256)), "x")
        ),
        libc::ENAMETOOLONG
    );
    fs::write(keys.join("k".repeat(255)), "longest name").unwrap();
    assert_eq!(read(&keys.join("k".repeat(255))), b"longest name");
    assert_eq!(
        errno_of("cat missing", fs::read(keys.join("missing"))),
        libc::ENOENT
    );
    assert_eq!(
        errno_of("rm missing", fs::remove_file(keys.join("missing"))),
        libc::ENOENT
    );
    assert_eq!(end(), 2);

    // Keys that cannot be file names live in the log but are not listed.
    write_once(
        &m.path("kv/0/append.jsonl"),
        b"{\"key\":\"a/b\",\"value\":\"slash\"}\n{\"key\":\"..\",\"value\":\"dots\"}\n\
          {\"key_b64\":\"/w==\",\"value\":\"binary\"}\n{\"key\":\"\",\"value\":\"empty\"}\n",
    )
    .unwrap();
    assert_eq!(end(), 6);
    assert_eq!(ls(&keys), ["k".repeat(255), "ok".to_string()]);
    let jsonl = read_string(&m.path("kv/0/log.jsonl"));
    assert!(jsonl.contains("\"key\":\"a/b\""), "{jsonl}");

    // A value over max.message.bytes: EFBIG at write time, nothing appended, close is fine.
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(keys.join("big"))
        .unwrap();
    f.write_all(&[b'x'; 600]).unwrap();
    assert_eq!(
        errno_of("write past the limit", f.write(&[b'y'; 600])),
        libc::EFBIG
    );
    drop(f);
    assert_eq!(end(), 6);
    assert_eq!(
        errno_of("cat big", fs::read(keys.join("big"))),
        libc::ENOENT
    );
    let out = sh(&m.mnt, "head -c 5000 /dev/zero > kv/0/keys/ok");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("too large"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&keys.join("ok")), b"small", "the old value stays");
    assert_eq!(end(), 6);

    // Only regular files, and only by their names.
    assert_eq!(
        errno_of("mkdir in keys", fs::create_dir(keys.join("d"))),
        libc::EPERM
    );
    assert_eq!(
        errno_of(
            "symlink in keys",
            std::os::unix::fs::symlink("ok", keys.join("link"))
        ),
        libc::EPERM
    );
    assert_eq!(
        errno_of(
            "rename a key",
            fs::rename(keys.join("ok"), keys.join("ok2"))
        ),
        libc::EPERM
    );
    // Files are still created nowhere else.
    assert_eq!(
        errno_of(
            "create in a partition",
            fs::write(m.path("kv/0/newfile"), "x")
        ),
        libc::EPERM
    );
    assert_eq!(end(), 6);
}
