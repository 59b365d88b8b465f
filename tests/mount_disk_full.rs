//! Resource faults on a real mount: a data directory on a small tmpfs that fills up, and a
//! read-only data directory.

mod common;

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{read_string, write_once, Mount};

/// A tmpfs mounted by the test; unmounted when dropped (declare it before the `Mount`, so
/// the daemon is gone first).
#[derive(Default)]
struct Tmpfs(RefCell<Option<PathBuf>>);

impl Tmpfs {
    fn mount(&self, dir: &Path, options: &str) -> bool {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            *self.0.borrow_mut() = Some(dir.to_path_buf());
        }
        ok
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Some(dir) = self.0.borrow_mut().take() {
            let _ = Command::new("umount").arg("-l").arg(&dir).status();
        }
    }
}

/// Skips (or fails under LMQFS_REQUIRE_FUSE) when tmpfs cannot be mounted (not root).
fn tmpfs_or_skip(tmpfs: &Tmpfs, dir: &Path, options: &str) -> bool {
    if tmpfs.mount(dir, options) {
        return true;
    }
    common::skip_or_fail("cannot mount a tmpfs (needs root)");
    false
}

fn line(i: usize) -> String {
    format!("{i:06} {}\n", "x".repeat(4000))
}

#[test]
fn a_full_disk_fails_writes_with_enospc_and_delete_records_frees_space() {
    let tmpfs = Tmpfs::default();
    let Some(mut m) = Mount::with_options(common::MANUAL_CLEANUP) else {
        return;
    };
    m.create_topic("t", 1);
    write_once(&m.path("t/config"), b"segment.bytes=65536\n").unwrap();
    m.unmount();
    // The data directory moves onto a 2 MiB tmpfs.
    let aside = m.scratch().join("data.aside");
    fs::rename(&m.data, &aside).unwrap();
    fs::create_dir(&m.data).unwrap();
    if !tmpfs_or_skip(&tmpfs, &m.data, "size=2m,mode=0700") {
        return;
    }
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", aside.display()))
        .arg(&m.data)
        .status()
        .unwrap();
    assert!(copied.success());
    m.remount();

    let mut written = String::new();
    let mut failure = None;
    for i in 0..2000 {
        let l = line(i);
        match write_once(&m.path("t/0/append"), l.as_bytes()) {
            Ok(()) => written.push_str(&l),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("a 2 MiB disk never filled up");
    assert_eq!(failure.raw_os_error(), Some(libc::ENOSPC), "{failure}");
    let count = written.lines().count();
    assert!(count > 100, "only {count} records fit");
    // Nothing partial: the log is exactly the writes that returned.
    assert_eq!(read_string(&m.path("t/0/log")), written);
    assert_eq!(
        common::stat_i64(&m.path("t/0"), "log_end_offset"),
        count as i64
    );
    m.assert_serving();

    // delete-records frees the space of the segments below it, even on a full disk.
    let cut = count as i64 / 2;
    write_once(
        &m.path("t/0/control"),
        format!("delete-records {cut}\n").as_bytes(),
    )
    .unwrap_or_else(|e| panic!("delete-records on a full disk: {e}\n{}", m.daemon_log()));
    write_once(&m.path("t/0/append"), line(9999).as_bytes())
        .unwrap_or_else(|e| panic!("append after delete-records: {e}\n{}", m.daemon_log()));
    let log = read_string(&m.path("t/0/log"));
    assert!(log.ends_with(&line(9999)));
    assert!(log.starts_with(&line(cut as usize)));
    assert_eq!(common::stat_i64(&m.path("t/0"), "log_start_offset"), cut);
    m.unmount();
}

#[test]
fn a_read_only_data_directory_is_a_clear_startup_error() {
    let tmpfs = Tmpfs::default();
    let base = tempfile::tempdir().unwrap();
    let (data, mnt) = (base.path().join("data"), base.path().join("mnt"));
    fs::create_dir(&data).unwrap();
    fs::create_dir(&mnt).unwrap();
    if !tmpfs_or_skip(&tmpfs, &data, "size=1m,mode=0700,ro") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lmqfs"))
        .arg("mount")
        .arg(&mnt)
        .arg("--data-dir")
        .arg(&data)
        .arg("--foreground")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mounted a read-only data directory");
    assert!(
        stderr.contains(&data.display().to_string())
            && stderr.contains("Read-only file system")
            && stderr.contains("must be writable"),
        "{stderr}"
    );
    assert!(!common::is_mounted(&mnt));
}
