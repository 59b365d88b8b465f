//! The daemon's life cycle: remount, kill -9, SIGTERM, background mode, refused mounts, and the
//! on-disk files it leaves behind.

mod common;

use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{open_append, read, read_string, sh_ok, wait_timeout, wait_until, write_once, Mount};

fn config_has(m: &Mount, topic: &str, line: &str) -> bool {
    read_string(&m.path(&format!("{topic}/config")))
        .lines()
        .any(|l| l.trim() == line)
}

fn topics(m: &Mount) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| m.path(n).is_dir())
        .collect();
    names.sort();
    names
}

#[test]
fn topics_partitions_configs_and_records_survive_remount() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("alpha", 1);
    m.create_topic("beta", 3);
    write_once(
        &m.path("beta/config"),
        b"retention.ms=123456\ncompression.type=gzip\n",
    )
    .unwrap();
    write_once(&m.path("alpha/config"), b"max.message.bytes=5000\n").unwrap();
    let alpha: String = (0..100).map(|i| format!("alpha record {i}\n")).collect();
    write_once(&m.path("alpha/0/append"), alpha.as_bytes()).unwrap();
    write_once(&m.path("beta/0/append"), b"beta zero\n").unwrap();
    write_once(
        &m.path("beta/2/append.jsonl"),
        br#"{"key":"k1","value":"keyed","headers":{"h":"v"}}
"#,
    )
    .unwrap();
    let beta2_json = read_string(&m.path("beta/2/0.json"));

    m.remount();

    assert_eq!(topics(&m), ["alpha", "beta"]);
    assert_eq!(read_string(&m.path("beta/partitions")).trim(), "3");
    assert_eq!(read_string(&m.path("alpha/partitions")).trim(), "1");
    assert!(m.path("beta/2").is_dir());
    assert!(config_has(&m, "beta", "retention.ms=123456"));
    assert!(config_has(&m, "beta", "compression.type=gzip"));
    assert!(config_has(&m, "alpha", "max.message.bytes=5000"));
    assert_eq!(read_string(&m.path("alpha/0/log")), alpha);
    assert_eq!(read_string(&m.path("beta/0/log")), "beta zero\n");
    assert_eq!(read_string(&m.path("beta/2/0.json")), beta2_json);
    // Offsets continue where they were.
    sh_ok(&m.mnt, "echo next > alpha/0/append");
    assert_eq!(read(&m.path("alpha/0/100")), b"next");
    assert_eq!(common::stat_i64(&m.path("alpha/0"), "log_end_offset"), 101);
}

#[test]
fn records_whose_write_returned_survive_kill_9() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("k", 2);
    write_once(&m.path("k/config"), b"segment.bytes=4096\n").unwrap();
    let mut f = open_append(&m.path("k/0/append")).unwrap();
    let mut expected = String::new();
    for i in 0..300 {
        let l = format!("survivor {i}\n");
        assert_eq!(f.write(l.as_bytes()).unwrap(), l.len());
        expected.push_str(&l);
    }
    write_once(&m.path("k/1/append"), b"other partition\n").unwrap();
    // No fsync, no flush, no close: only write() returned.
    m.kill9();
    drop(f);

    m.remount();

    assert_eq!(read_string(&m.path("k/0/log")), expected);
    assert_eq!(read_string(&m.path("k/1/log")), "other partition\n");
    assert_eq!(read_string(&m.path("k/partitions")).trim(), "2");
    assert!(config_has(&m, "k", "segment.bytes=4096"));
    sh_ok(&m.mnt, "echo after > k/0/append");
    assert_eq!(read(&m.path("k/0/300")), b"after");
    let log = m.daemon_log().to_lowercase();
    assert!(
        log.contains("unclean shutdown") && log.contains("recovering"),
        "the mount after kill -9 does not log a recovery:\n{log}"
    );
}

#[test]
fn clean_unmount_means_no_recovery_on_next_mount() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 1);
    sh_ok(&m.mnt, "seq 1 1000 > t/0/append");
    let status = m.unmount();
    assert!(
        status.success(),
        "daemon exit status after umount: {status}"
    );
    assert!(!common::is_mounted(&m.mnt));
    m.remount();
    let log = m.daemon_log().to_lowercase();
    assert!(
        log.contains("clean shutdown, skipped recovery"),
        "the mount after a clean stop does not say so:\n{log}"
    );
    assert!(
        !log.contains("recovering"),
        "the mount after a clean stop recovers:\n{log}"
    );
    assert_eq!(sh_ok(&m.mnt, "wc -l < t/0/log").trim(), "1000");
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 1);
    sh_ok(&m.mnt, "echo kept > t/0/append");
    let pid = m.pid() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert!(
        wait_until(Duration::from_secs(15), || !common::is_mounted(&m.mnt)),
        "still mounted 15 s after SIGTERM"
    );
    let status = m.wait_exit();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    m.remount();
    let log = m.daemon_log().to_lowercase();
    assert!(log.contains("clean shutdown, skipped recovery"), "{log}");
    assert!(!log.contains("recovering"), "{log}");
    assert_eq!(read_string(&m.path("t/0/log")), "kept\n");
}

#[test]
fn background_mount_returns_when_ready_and_umount_stops_the_daemon() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 1);
    sh_ok(&m.mnt, "echo one > t/0/append");
    assert!(m.unmount().success());

    let guard = common::UnmountGuard(m.mnt.clone());
    let out_path = m.scratch().join("background.out");
    let daemon_log = m.scratch().join("background-daemon.log");
    let status = Command::new(common::BIN)
        .arg("mount")
        .arg(&m.mnt)
        .arg("--data-dir")
        .arg(&m.data)
        .env("RUST_LOG", "info")
        .env("LMQFS_LOG_FILE", &daemon_log)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&out_path).unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "background mount failed: {}",
        fs::read_to_string(&out_path).unwrap_or_default()
    );
    // Ready when it returns: no polling.
    assert!(
        m.path("README").exists(),
        "README not there when mount returned"
    );
    assert_eq!(read_string(&m.path("t/0/log")), "one\n");
    sh_ok(&m.mnt, "echo two > t/0/append");
    let mnt_arg = m.mnt.to_str().unwrap().to_string();
    let daemons = common::pids_with_arg(&mnt_arg);
    assert!(
        !daemons.is_empty(),
        "no daemon process names the mountpoint"
    );

    sh_ok(m.scratch(), &format!("umount '{mnt_arg}'"));
    assert!(
        wait_until(Duration::from_secs(15), || {
            daemons.iter().all(|p| {
                !std::path::Path::new(&format!("/proc/{p}/cmdline")).exists()
                    || fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.is_empty())
            })
        }),
        "daemon still running 15 s after umount"
    );
    drop(guard);
    // LMQFS_LOG_FILE collects the background daemon's log.
    let background_log = fs::read_to_string(&daemon_log).unwrap_or_default();
    assert!(
        background_log.contains(m.data.to_str().unwrap()),
        "the background daemon's log does not show its data directory:\n{background_log}"
    );

    // The background daemon stopped cleanly: the next mount needs no recovery.
    m.remount();
    let log = m.daemon_log().to_lowercase();
    assert!(log.contains("clean shutdown, skipped recovery"), "{log}");
    assert!(!log.contains("recovering"), "{log}");
    assert_eq!(read_string(&m.path("t/0/log")), "one\ntwo\n");
}

#[test]
fn mount_on_a_missing_mountpoint_fails_clearly() {
    if !std::path::Path::new("/dev/fuse").exists() {
        common::skip_or_fail("/dev/fuse is missing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let mut child = Command::new(common::BIN)
        .arg("mount")
        .arg(&missing)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--foreground")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.path().join("err")).unwrap())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    let err = fs::read_to_string(dir.path().join("err")).unwrap();
    assert!(
        status.is_some_and(|s| !s.success()),
        "expected a failure exit, got {status:?}"
    );
    assert!(
        err.contains(missing.to_str().unwrap()),
        "error does not name the mountpoint: {err}"
    );
}

/// Runs a second `lmqfs mount --foreground`, which must fail; cleans up if it does not.
fn second_mount_fails(
    mnt: &std::path::Path,
    data: &std::path::Path,
    err_path: &std::path::Path,
) -> String {
    mount_fails(mnt, data, &[], err_path)
}

/// Runs `lmqfs mount --foreground [-o options]`, which must fail; cleans up if it does not.
fn mount_fails(
    mnt: &std::path::Path,
    data: &std::path::Path,
    options: &[&str],
    err_path: &std::path::Path,
) -> String {
    let mut cmd = Command::new(common::BIN);
    cmd.arg("mount")
        .arg(mnt)
        .arg("--data-dir")
        .arg(data)
        .arg("--foreground");
    if !options.is_empty() {
        cmd.arg("-o").arg(options.join(","));
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(err_path).unwrap())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    let err = fs::read_to_string(err_path).unwrap_or_default();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the mount kept running: {err}");
    }
    let status = status.unwrap();
    assert!(!status.success(), "the mount succeeded: {err}");
    assert!(!err.trim().is_empty(), "the mount failed without a message");
    err
}

#[test]
fn second_mount_of_the_same_data_dir_fails_clearly() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 1);
    sh_ok(&m.mnt, "echo safe > t/0/append");
    let other = m.scratch().join("mnt2");
    fs::create_dir(&other).unwrap();
    let _guard = common::UnmountGuard(other.clone());
    let err = second_mount_fails(&other, &m.data, &m.scratch().join("second.err"));
    assert!(
        err.contains(m.data.to_str().unwrap()) || err.to_lowercase().contains("lock"),
        "the error names neither the data directory nor its lock: {err}"
    );
    assert!(!common::is_mounted(&other));
    m.assert_serving();
    assert_eq!(read_string(&m.path("t/0/log")), "safe\n");
}

#[test]
fn mount_with_an_invalid_option_fails() {
    if !std::path::Path::new("/dev/fuse").exists() {
        common::skip_or_fail("/dev/fuse is missing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let _guard = common::UnmountGuard(mnt.clone());
    for bad in [
        "compression.type=brotli",
        "no.such.option=1",
        "default.partitions=zero",
        "log.cleaner.dedupe.buffer.size=lots",
        "log.cleaner.backoff.ms=-1",
        "log.retention.check.interval.ms=0",
    ] {
        let err = mount_fails(
            &mnt,
            &dir.path().join("data"),
            &[bad],
            &dir.path().join("err"),
        );
        let key = bad.split('=').next().unwrap();
        assert!(
            err.contains(key),
            "the error for -o {bad} does not name {key}: {err}"
        );
        assert!(!common::is_mounted(&mnt));
    }
}

#[test]
fn mount_on_a_mountpoint_in_use_fails() {
    let Some(mut m) = Mount::new() else { return };
    let other_data = m.scratch().join("data2");
    second_mount_fails(&m.mnt, &other_data, &m.scratch().join("second.err"));
    m.assert_serving();
}

#[test]
fn dump_log_verifies_every_segment_after_a_run() {
    let Some(mut m) = Mount::with_options(&["compression.type=lz4"]) else {
        return;
    };
    m.create_topic("plain", 1);
    write_once(
        &m.path("plain/config"),
        b"compression.type=none\nsegment.bytes=2048\n",
    )
    .unwrap();
    m.create_topic("gz", 2);
    write_once(&m.path("gz/config"), b"compression.type=gzip\n").unwrap();
    m.create_topic("lz", 1);
    for topic in ["plain/0", "gz/0", "gz/1", "lz/0"] {
        let text: String = (0..200).map(|i| format!("{topic} record {i}\n")).collect();
        let mut f = open_append(&m.path(&format!("{topic}/append"))).unwrap();
        for chunk in text.as_bytes().chunks(700) {
            // Chunks split lines: the remainder is joined on the next write.
            assert_eq!(f.write(chunk).unwrap(), chunk.len());
        }
        drop(f);
        write_once(
            &m.path(&format!("{topic}/append.jsonl")),
            br#"{"key":"k","value":"v","headers":{"a":"b"}}
"#,
        )
        .unwrap();
        write_once(&m.path(&format!("{topic}/control")), b"roll\n").unwrap();
        write_once(&m.path(&format!("{topic}/append")), b"after roll\n").unwrap();
    }
    assert!(m.unmount().success());

    let logs: Vec<_> = common::files_under(&m.data)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert!(logs.len() >= 8, "expected several segments, found {logs:?}");
    let out = Command::new(common::BIN)
        .arg("dump-log")
        .arg("--verify")
        .args(&logs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dump-log --verify failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty(), "dump-log printed nothing");
}
