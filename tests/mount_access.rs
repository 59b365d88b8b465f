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

#[test]
fn default_data_dir_needs_no_setup() {
    if !std::path::Path::new("/dev/fuse").exists() {
        common::skip_or_fail("/dev/fuse is missing");
        return;
    }
    let base = tempfile::Builder::new()
        .prefix("lmqfs-test.")
        .tempdir()
        .unwrap();
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
