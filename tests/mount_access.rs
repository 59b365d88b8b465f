//! Who can use a mount and how: the default data directory, read-only mounts, other users with
//! and without `allow_other`, and the kernel enforcing the file modes for them.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{errno_of, read_string, sh, sh_ok, wait_timeout, write_once, Mount, UnmountGuard};

/// Runs `sh -c script` in `dir` as user and group nobody (65534), without supplementary groups.
fn as_nobody(dir: &std::path::Path, script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A scratch directory for a test that starts its own daemon, or `None` (skip or fail, by
/// `LMQFS_REQUIRE_FUSE`) when this machine has no FUSE.
fn scratch_dir() -> Option<tempfile::TempDir> {
    if !std::path::Path::new("/dev/fuse").exists() {
        common::skip_or_fail("/dev/fuse is missing");
        return None;
    }
    Some(
        tempfile::Builder::new()
            .prefix("lmqfs-test.")
            .tempdir()
            .unwrap(),
    )
}

#[test]
fn default_data_dir_needs_no_setup() {
    let Some(base) = scratch_dir() else {
        return;
    };
    let mnt = base.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let xdg = base.path().join("xdg");
    let _guard = UnmountGuard(mnt.clone());
    let mut child = Command::new(common::BIN)
        .arg("mount")
        .arg(&mnt)
        .arg("--foreground")
        .env("XDG_DATA_HOME", &xdg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(base.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let ready = common::wait_until(Duration::from_secs(20), || mnt.join("README").exists());
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        let log = fs::read_to_string(base.path().join("log")).unwrap_or_default();
        common::skip_or_fail(&format!(
            "mount with the default data directory failed: {log}"
        ));
        return;
    }
    fs::create_dir(mnt.join("t")).unwrap();
    write_once(&mnt.join("t/0/append"), b"stored by default\n").unwrap();
    let data = xdg.join("lmqfs");
    assert!(
        data.is_dir(),
        "no data directory under $XDG_DATA_HOME/lmqfs"
    );
    assert_eq!(
        fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    let status = wait_timeout(&mut child, Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        common::files_under(&data)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "log")),
        "no segment under the default data directory"
    );
}

#[test]
fn read_only_mount_serves_reads_and_refuses_changes() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 1);
    write_once(&m.path("t/0/append"), b"before ro\n").unwrap();
    m.set_options(&["ro"]);
    m.remount();
    assert_eq!(read_string(&m.path("t/0/log")), "before ro\n");
    assert!(read_string(&m.path("t/0/0.json")).contains("before ro"));
    let erofs = libc::EROFS;
    assert_eq!(errno_of("mkdir", fs::create_dir(m.path("u"))), erofs);
    assert_eq!(
        errno_of("append", write_once(&m.path("t/0/append"), b"x\n")),
        erofs
    );
    assert_eq!(
        errno_of(
            "config",
            write_once(&m.path("t/config"), b"retention.ms=1\n")
        ),
        erofs
    );
    assert_eq!(errno_of("rmdir", fs::remove_dir(m.path("t"))), erofs);
    assert_eq!(read_string(&m.path("t/0/log")), "before ro\n");
}

#[test]
fn other_users_are_kept_out_unless_allow_other() {
    if !is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let Some(mut m) = Mount::new() else { return };
    // Let others reach the mountpoint itself (the temporary directory is private).
    fs::set_permissions(m.scratch(), fs::Permissions::from_mode(0o755)).unwrap();
    m.create_topic("t", 1);
    write_once(&m.path("t/0/append"), b"private\n").unwrap();
    let out = as_nobody(&m.mnt, "cat README");
    assert!(
        !out.status.success(),
        "another user read the mount without allow_other"
    );

    m.set_options(&["allow_other"]);
    m.remount();
    // Others may read what the modes let them read...
    let out = as_nobody(&m.mnt, "cat t/0/log");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"private\n");
    // ...and the kernel enforces the modes for them: no writes, no read of append.
    for script in [
        "echo x >> t/0/append",
        "cat t/0/append",
        "echo retention.ms=1 > t/config",
        "mkdir u",
    ] {
        let out = as_nobody(&m.mnt, script);
        assert!(!out.status.success(), "nobody could `{script}`");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(err.contains("permission denied"), "`{script}`: {err}");
    }
    assert_eq!(sh_ok(&m.mnt, "cat t/0/log"), "private\n");
    assert!(!sh(&m.mnt, "ls u").status.success());
}

/// Fails the test when any directory or file under `dir` is open to group or others.
fn assert_private(dir: &std::path::Path) {
    let mut stack = vec![dir.to_path_buf()];
    let mut checked = 0;
    while let Some(d) = stack.pop() {
        let mode = fs::metadata(&d).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{} has mode {:o}",
            d.display(),
            mode & 0o777
        );
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else {
                let mode = meta.permissions().mode();
                assert_eq!(
                    mode & 0o077,
                    0,
                    "{} has mode {:o}",
                    p.display(),
                    mode & 0o777
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 10,
        "only {checked} files checked under {}",
        dir.display()
    );
}

/// Whatever the umask of whoever starts the daemon, the data directory and every file and
/// directory the daemon makes in it (segments, indexes, checkpoints, metadata, groups, the
/// cleaner's files) are the mounting user's alone, and another user can read none of it.
#[test]
fn the_data_dir_and_its_files_are_private_on_disk() {
    let Some(base) = scratch_dir() else {
        return;
    };
    // Others may traverse down to the data directory: only its own modes protect it.
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mnt = base.path().join("mnt");
    let data = base.path().join("data");
    fs::create_dir(&mnt).unwrap();
    let _guard = UnmountGuard(mnt.clone());
    let log = base.path().join("log");
    // A permissive umask, as a careless service manager might leave it.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" mount \"$1\" --data-dir \"$2\" --foreground")
        .arg(common::BIN)
        .arg(&mnt)
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    if !common::wait_until(Duration::from_secs(20), || mnt.join("README").exists()) {
        let _ = child.kill();
        let _ = child.wait();
        let text = fs::read_to_string(&log).unwrap_or_default();
        common::skip_or_fail(&format!("mount failed: {text}"));
        return;
    }
    fs::create_dir(mnt.join("t")).unwrap();
    write_once(&mnt.join("t/partitions"), b"2\n").unwrap();
    write_once(
        &mnt.join("t/config"),
        b"segment.bytes=1024\ncleanup.policy=compact\n",
    )
    .unwrap();
    for i in 0..50 {
        let path = mnt.join(format!("t/{}/keys/k{}", i % 2, i % 7));
        fs::write(path, format!("value {i}\n")).unwrap();
    }
    fs::write(mnt.join("t/0/groups/readers"), b"3\n").unwrap();
    write_once(&mnt.join("t/0/control"), b"compact\n").unwrap();
    write_once(&mnt.join("control"), b"flush\n").unwrap();
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    let status = wait_timeout(&mut child, Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    assert_private(&data);
    if is_root() {
        let segment = common::files_under(&data)
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .expect("a segment file");
        for script in [
            format!("ls {}", data.display()),
            format!("cat {}", segment.display()),
        ] {
            let out = as_nobody(base.path(), &script);
            assert!(!out.status.success(), "another user could `{script}`");
        }
    }
}

/// With `allow_other`, another user can change nothing the modes do not give them: no topic
/// deletion, no control commands, no keys or groups, no partition growth.
#[test]
fn other_users_cannot_change_anything_under_allow_other() {
    if !is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let Some(m) = Mount::with_options(&["allow_other"]) else {
        return;
    };
    fs::set_permissions(m.scratch(), fs::Permissions::from_mode(0o755)).unwrap();
    m.create_topic("t", 1);
    write_once(&m.path("t/config"), b"cleanup.policy=compact\n").unwrap();
    sh_ok(&m.mnt, "echo v > t/0/keys/k && echo 0 > t/0/groups/g");
    let before = sh_ok(&m.mnt, "cat t/0/log t/partitions t/config t/0/stats");
    for script in [
        "rmdir t",
        "rm -rf t",
        "echo roll > t/0/control",
        "echo flush > control",
        "echo 3 > t/partitions",
        "echo w > t/0/keys/k",
        "echo w > t/0/keys/new",
        "rm t/0/keys/k",
        "echo 1 > t/0/groups/g",
        "echo 0 > t/0/groups/new",
        "touch t/0/x",
    ] {
        let out = as_nobody(&m.mnt, script);
        assert!(!out.status.success(), "nobody could `{script}`");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            err.contains("permission denied") || err.contains("operation not permitted"),
            "`{script}`: {err}"
        );
    }
    assert!(m.path("t").is_dir());
    assert_eq!(
        sh_ok(&m.mnt, "cat t/0/log t/partitions t/config t/0/stats"),
        before
    );
}
