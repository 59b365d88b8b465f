//! The system under operational faults and the defects found trying it as a new user would:
//! a long partial line in the same write as a complete one, removing a topic with the usual
//! recursive removers, a second daemon, a stale mount left by a killed daemon, unmounting while
//! files are open, a user without access to `/dev/fuse`, and a quiet daemon log for normal use.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    errno_of, open_append, read_string, sh, sh_ok, stat_i64, wait_timeout, write_once, Mount,
};

/// Runs `lmqfs mount --foreground` with `args`; it must fail within 20 s. Its stderr.
fn failing_mount(args: &[&std::ffi::OsStr], as_nobody: bool) -> String {
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(common::BIN);
        c
    } else {
        Command::new(common::BIN)
    };
    let mut child = cmd
        .arg("mount")
        .args(args)
        .arg("--foreground")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lmqfs mount");
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    match status {
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the mount kept running: {err}");
        }
        Some(s) => assert!(!s.success(), "the mount succeeded: {err}"),
    }
    err
}

/// `print()` of a line longer than `max.message.bytes` after a short one writes `ok-line\n`
/// and the start of the long line in ONE write: that write fails with EFBIG and appends
/// nothing, not even `ok-line`.
#[test]
fn a_long_partial_line_fails_the_write_that_carries_it() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    write_once(&m.path("t/config"), b"max.message.bytes=1024\n").unwrap();
    write_once(&m.path("t/0/append"), b"before\n").unwrap();
    let data = [&b"ok-line\n"[..], &[b'x'; 2000]].concat();
    let mut f = open_append(&m.path("t/0/append")).unwrap();
    let e = errno_of("write ok-line + long partial line", f.write(&data));
    assert_eq!(e, libc::EFBIG);
    assert_eq!(
        read_string(&m.path("t/0/log")),
        "before\n",
        "nothing appended"
    );
    // The open file continues from a clean line boundary.
    f.write_all(b"after\n").unwrap();
    drop(f);
    assert_eq!(read_string(&m.path("t/0/log")), "before\nafter\n");

    // The same through Python's print(), which buffers and writes exactly like that.
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys\n\
             f = open(sys.argv[1], 'w')\n\
             try:\n\
             \x20   print('ok-line\\n' + 'y' * 3000, file=f, end='')\n\
             \x20   f.flush()\n\
             \x20   print('no error')\n\
             except OSError as e:\n\
             \x20   print('errno', e.errno)\n",
        )
        .arg(m.path("t/0/append"))
        .output()
        .expect("run python3");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.trim(), format!("errno {}", libc::EFBIG), "{said}");
    assert_eq!(read_string(&m.path("t/0/log")), "before\nafter\n");
    assert_eq!(stat_i64(&m.path("t/0"), "log_end_offset"), 2);
    assert!(
        m.daemon_log().contains("max.message.bytes"),
        "the daemon does not log why:\n{}",
        m.daemon_log()
    );
}

/// A topic with records, keys, a group and several partitions.
fn populated_topic(m: &Mount, name: &str) {
    m.create_topic(name, 3);
    write_once(&m.path(&format!("{name}/config")), b"segment.bytes=2048\n").unwrap();
    for p in 0..3 {
        sh_ok(&m.mnt, &format!("seq 1 300 > {name}/{p}/append"));
        write_once(&m.path(&format!("{name}/{p}/control")), b"roll\n").unwrap();
    }
    sh_ok(&m.mnt, &format!("echo 5 > {name}/0/groups/readers"));
}

/// One rule, whoever removes: `rm -rf`, `shutil.rmtree` and `find -delete` all delete a topic,
/// and another topic is untouched.
#[test]
fn rm_rf_rmtree_and_find_delete_remove_a_topic() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("bystander", 1);
    sh_ok(&m.mnt, "echo stays > bystander/0/append");
    let removers = [
        ("by-rm", "rm -rf by-rm".to_string()),
        (
            "by-rmtree",
            "python3 -c 'import shutil; shutil.rmtree(\"by-rmtree\")'".to_string(),
        ),
        ("by-find", "find by-find -delete".to_string()),
    ];
    for (topic, command) in &removers {
        populated_topic(&m, topic);
        let out = sh(&m.mnt, command);
        assert!(
            out.status.success(),
            "`{command}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!m.path(topic).exists(), "`{command}` left {topic}");
        assert!(
            !common::ls(&m.mnt).contains(&topic.to_string()),
            "{topic} still listed"
        );
    }
    // Removing a file inside a topic is a successful no-op; keys keep their tombstone meaning;
    // the root's files cannot be removed.
    m.create_topic("kv", 1);
    write_once(&m.path("kv/config"), b"cleanup.policy=compact\n").unwrap();
    sh_ok(&m.mnt, "echo v1 > kv/0/keys/k");
    sh_ok(
        &m.mnt,
        "rm kv/0/log kv/0/stats kv/config && rmdir kv/0/segments kv/0",
    );
    assert!(m.path("kv/0/log").exists());
    sh_ok(&m.mnt, "rm kv/0/keys/k");
    assert!(!m.path("kv/0/keys/k").exists(), "the key is tombstoned");
    assert_eq!(
        stat_i64(&m.path("kv/0"), "log_end_offset"),
        2,
        "v1 + tombstone"
    );
    let e = errno_of("unlink README", fs::remove_file(m.path("README")));
    assert_eq!(e, libc::EPERM);

    m.remount();
    for (topic, _) in &removers {
        assert!(!m.path(topic).exists(), "{topic} back after remount");
    }
    assert_eq!(read_string(&m.path("bystander/0/log")), "stays\n");
    assert!(m.path("kv/0/log").exists());
}

/// A second daemon on the same data directory is refused with a message naming the directory;
/// the first keeps serving and loses nothing.
#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    let mut f = open_append(&m.path("t/0/append")).unwrap();
    f.write_all(b"one\n").unwrap();
    let other = m.scratch().join("mnt2");
    fs::create_dir(&other).unwrap();
    let _guard = common::UnmountGuard(other.clone());
    let err = failing_mount(
        &[other.as_os_str(), "--data-dir".as_ref(), m.data.as_os_str()],
        false,
    );
    assert!(
        err.contains(m.data.to_str().unwrap()) && err.contains("mounted already"),
        "unclear refusal: {err}"
    );
    assert!(!common::is_mounted(&other));
    f.write_all(b"two\n").unwrap();
    drop(f);
    assert_eq!(read_string(&m.path("t/0/log")), "one\ntwo\n");
}

/// A daemon killed with SIGKILL leaves a dead mount ("Transport endpoint is not connected").
/// Mounting over it says exactly what to run; after running that, the mount works and every
/// record is there.
#[test]
fn a_stale_mount_left_by_a_killed_daemon_says_what_to_run() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 1);
    sh_ok(&m.mnt, "seq 1 500 > t/0/append");
    m.kill9_leave_mount();
    assert!(
        common::is_mounted(&m.mnt),
        "the dead mount should still be there"
    );
    let e = errno_of(
        "stat a dead mount",
        fs::metadata(m.path("not-looked-up-before")),
    );
    assert_eq!(e, libc::ENOTCONN);
    let err = failing_mount(
        &[m.mnt.as_os_str(), "--data-dir".as_ref(), m.data.as_os_str()],
        false,
    );
    let wanted = format!("run `umount {}` first", m.mnt.display());
    assert!(err.contains(&wanted), "does not say {wanted:?}: {err}");
    // Do exactly what it says.
    let status = Command::new("umount").arg(&m.mnt).status().unwrap();
    assert!(status.success());
    m.try_start().expect("mount after removing the stale mount");
    assert_eq!(sh_ok(&m.mnt, "wc -l < t/0/log").trim(), "500");
}

/// `umount` while readers and writers hold files open: a plain umount is refused (EBUSY) and
/// nothing changes; a lazy one (`umount -l`) lets the open files finish, and the daemon exits
/// when the last one closes; SIGTERM stops the daemon anyway. In every case each line whose
/// `write()` returned is there after remount.
#[test]
fn unmount_with_open_files_loses_nothing_acknowledged() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 2);
    sh_ok(&m.mnt, "seq 1 100 > t/1/append");
    let mut expected = String::new();
    let mut writer = open_append(&m.path("t/0/append")).unwrap();
    for i in 0..50 {
        let l = format!("before {i}\n");
        writer.write_all(l.as_bytes()).unwrap();
        expected.push_str(&l);
    }
    let reader = fs::File::open(m.path("t/1/log")).unwrap();

    // A plain umount is refused while files are open.
    let out = Command::new("umount").arg(&m.mnt).output().unwrap();
    assert!(!out.status.success(), "umount with open files succeeded");
    m.assert_serving();

    // Lazy: detached from the namespace, the open files keep working.
    let out = Command::new("umount")
        .arg("-l")
        .arg(&m.mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "umount -l failed: {out:?}");
    for i in 0..50 {
        let l = format!("after detach {i}\n");
        writer.write_all(l.as_bytes()).unwrap();
        expected.push_str(&l);
    }
    writer.write_all(b"unterminated").unwrap();
    expected.push_str("unterminated\n");
    let mut text = String::new();
    use std::io::Read;
    let mut reader = reader;
    reader.read_to_string(&mut text).unwrap();
    assert_eq!(text.lines().count(), 100, "the reader reads to the end");
    drop(reader);
    drop(writer);
    let status = m.wait_exit();
    assert!(status.success(), "daemon exit status {status}");
    m.try_start().unwrap();
    assert_eq!(read_string(&m.path("t/0/log")), expected);
    assert_eq!(sh_ok(&m.mnt, "wc -l < t/1/log").trim(), "100");

    // SIGTERM with a writer still holding the file: the daemon stops; what was acknowledged
    // stays.
    let mut writer = open_append(&m.path("t/0/append")).unwrap();
    for i in 0..20 {
        let l = format!("before sigterm {i}\n");
        writer.write_all(l.as_bytes()).unwrap();
        expected.push_str(&l);
    }
    let status = m.signal_and_wait(libc::SIGTERM);
    assert!(status.success(), "daemon exit status {status}");
    drop(writer);
    common::force_unmount(&m.mnt);
    m.try_start().unwrap();
    assert_eq!(read_string(&m.path("t/0/log")), expected);
}

/// A user who cannot open `/dev/fuse` is told so, with what would make the mount work,
/// instead of a bare "Permission denied".
#[test]
fn a_user_without_dev_fuse_access_is_told_what_is_missing() {
    if !std::path::Path::new("/dev/fuse").exists() {
        common::skip_or_fail("/dev/fuse is missing");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let mode = fs::metadata("/dev/fuse").unwrap().permissions().mode();
    if mode & 0o006 == 0o006 {
        eprintln!("skipped: /dev/fuse is open to every user here (mode {mode:o})");
        return;
    }
    let base = tempfile::Builder::new()
        .prefix("lmqfs-test.")
        .tempdir()
        .unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let mnt = base.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    fs::set_permissions(&mnt, fs::Permissions::from_mode(0o777)).unwrap();
    let _guard = common::UnmountGuard(mnt.clone());
    let data = base.path().join("data");
    let err = failing_mount(
        &[mnt.as_os_str(), "--data-dir".as_ref(), data.as_os_str()],
        true,
    );
    assert!(
        err.contains("cannot open /dev/fuse") && err.contains("read and write access"),
        "does not say what is missing: {err}"
    );
    assert!(!common::is_mounted(&mnt));
}

/// Normal use leaves nothing alarming in the daemon's log: `isatty()` on open files is answered
/// ENOTTY quietly, and a clean unmount logs no error.
#[test]
fn normal_use_and_a_clean_unmount_log_no_warnings() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 1);
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import os, sys\n\
             d = sys.argv[1]\n\
             with open(d + '/t/0/append', 'w') as f:\n\
             \x20   print('isatty', f.isatty(), file=f)\n\
             with open(d + '/t/0/log') as f:\n\
             \x20   print(f.isatty(), f.read().strip())\n",
        )
        .arg(&m.mnt)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "False isatty False",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sh_ok(&m.mnt, "cat t/0/log t/0/stats t/config README > /dev/null");
    sh_ok(
        &m.mnt,
        "seq 1 10 > t/0/append && tail -3 t/0/log && ls -la t/0",
    );
    assert!(m.unmount().success());
    let log = m.daemon_log();
    let noisy: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("Failed"))
        .collect();
    assert!(
        noisy.is_empty(),
        "noise in the daemon log:\n{}",
        noisy.join("\n")
    );
}
