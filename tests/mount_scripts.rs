//! mount-scripts/mount.lmqfs run for real: directly, as mount(8) would call it, and (as root in
//! CI) through `mount -t fuse.lmqfs` and an fstab line.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{is_mounted, pids_with_arg, read, read_string, wait_until, write_once, UnmountGuard};

const HELPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/mount-scripts/mount.lmqfs");
/// Where mount(8) looks for the helper of type `fuse.lmqfs`.
const INSTALLED_HELPER: &str = "/sbin/mount.fuse.lmqfs";

fn fuse_or_skip() -> bool {
    if Path::new("/dev/fuse").exists() {
        true
    } else {
        common::skip_or_fail("/dev/fuse is missing");
        false
    }
}

/// `sh mount-scripts/mount.lmqfs ARGS...` with LMQFS_BIN pointing at the built binary.
fn helper(args: &[&std::ffi::OsStr]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg(HELPER).args(args).env("LMQFS_BIN", common::BIN);
    cmd
}

/// Runs a command to completion with stdin closed and stdout/stderr captured in a file (a
/// background daemon may keep inherited pipes open, so no pipes).
fn run(cmd: &mut Command, out_path: &Path) -> (bool, String) {
    let out = fs::File::create(out_path).unwrap();
    let status = cmd
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .unwrap();
    (
        status.success(),
        fs::read_to_string(out_path).unwrap_or_default(),
    )
}

/// umount, then wait until no daemon for `mnt` is left.
fn unmount_and_wait(mnt: &Path) {
    let daemons = pids_with_arg(mnt.to_str().unwrap());
    let st = Command::new("umount").arg(mnt).status().unwrap();
    assert!(st.success(), "umount {} failed", mnt.display());
    assert!(!is_mounted(mnt));
    assert!(
        wait_until(Duration::from_secs(15), || daemons.iter().all(|p| {
            fs::read(format!("/proc/{p}/cmdline")).map_or(true, |c| c.is_empty())
        })),
        "daemon still running after umount"
    );
}

/// Checks a mount made with `compression.type=...`: serving at once, the topic default taken.
fn check_mount(mnt: &Path, data: &Path, codec_name: &str, codec: u16) {
    assert!(is_mounted(mnt), "not mounted when the helper returned");
    assert!(mnt.join("README").exists());
    fs::create_dir(mnt.join("t")).unwrap();
    let config = read_string(&mnt.join("t/config"));
    assert!(
        config
            .lines()
            .any(|l| l == format!("compression.type={codec_name}")),
        "the option did not reach the topic config:\n{config}"
    );
    let lines: String = (0..50)
        .map(|i| format!("through the helper {i}\n"))
        .collect();
    write_once(&mnt.join("t/0/append"), lines.as_bytes()).unwrap();
    assert_eq!(read_string(&mnt.join("t/0/log")), lines);
    let segment = read(&mnt.join("t/0/segments/00000000000000000000.log"));
    assert_eq!(common::batch_compressions(&segment), [codec]);
    assert!(
        data.is_dir(),
        "the data directory is not the SOURCE argument"
    );
}

struct Dirs {
    _base: tempfile::TempDir,
    data: PathBuf,
    mnt: PathBuf,
    out: PathBuf,
}

fn dirs() -> Dirs {
    let base = tempfile::Builder::new()
        .prefix("lmqfs-test.")
        .tempdir()
        .unwrap();
    let mnt = base.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    Dirs {
        data: base.path().join("data"),
        out: base.path().join("helper.out"),
        mnt,
        _base: base,
    }
}

#[test]
fn mount_helper_mounts_as_mount_8_calls_it() {
    if !fuse_or_skip() {
        return;
    }
    let d = dirs();
    let _guard = UnmountGuard(d.mnt.clone());
    // As mount(8) calls it: SOURCE MOUNTPOINT -o OPTIONS, with mount(8)'s own options mixed in.
    let (ok, out) = run(
        &mut helper(&[
            d.data.as_os_str(),
            d.mnt.as_os_str(),
            "-o".as_ref(),
            "rw,compression.type=lz4,_netdev,defaults".as_ref(),
            "-t".as_ref(),
            "fuse.lmqfs".as_ref(),
        ]),
        &d.out,
    );
    if !ok && !common::fuse_required() && !is_mounted(&d.mnt) {
        common::skip_or_fail(&format!("the helper could not mount: {out}"));
        return;
    }
    assert!(ok, "helper failed: {out}");
    check_mount(&d.mnt, &d.data, "lz4", 3);
    unmount_and_wait(&d.mnt);
}

#[test]
fn mount_helper_fake_and_usage_errors_do_not_mount() {
    let d = dirs();
    let _guard = UnmountGuard(d.mnt.clone());
    // -f (fake): everything but the mount.
    let (ok, out) = run(
        &mut helper(&[
            d.data.as_os_str(),
            d.mnt.as_os_str(),
            "-f".as_ref(),
            "-v".as_ref(),
        ]),
        &d.out,
    );
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("mount {}", d.mnt.display())),
        "-v shows the command: {out}"
    );
    assert!(!is_mounted(&d.mnt));
    // A missing argument is a usage error.
    let (ok, out) = run(&mut helper(&[d.data.as_os_str()]), &d.out);
    assert!(!ok);
    assert!(out.contains("usage"), "{out}");
    // No lmqfs program: a clear message.
    let (ok, out) = run(
        helper(&[d.data.as_os_str(), d.mnt.as_os_str()]).env("LMQFS_BIN", "/nonexistent/lmqfs"),
        &d.out,
    );
    assert!(!ok);
    assert!(out.contains("lmqfs"), "{out}");
    assert!(!is_mounted(&d.mnt));
}

/// Removes the installed helper on drop.
struct InstalledHelper;

impl Drop for InstalledHelper {
    fn drop(&mut self) {
        let _ = fs::remove_file(INSTALLED_HELPER);
    }
}

fn mount_8(args: &[&std::ffi::OsStr], out_path: &Path) -> (bool, String) {
    // mount(8) passes its environment on to the helper.
    run(
        Command::new("mount")
            .args(args)
            .env("LMQFS_BIN", common::BIN),
        out_path,
    )
}

/// Through mount(8): `mount -t fuse.lmqfs DATA MNT -o ...` and an fstab line. This installs the
/// helper as /sbin/mount.fuse.lmqfs for the duration of the test, so it runs only as root, only
/// where the environment asks for the mounted tests (LMQFS_REQUIRE_FUSE=1, as CI does), and
/// never over a helper that is already installed.
#[test]
fn mount_t_fuse_lmqfs_and_fstab_use_the_helper() {
    if !fuse_or_skip() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !common::fuse_required() || Path::new(INSTALLED_HELPER).exists() {
        eprintln!(
            "skipped: mount -t fuse.lmqfs needs root, LMQFS_REQUIRE_FUSE=1 and no {INSTALLED_HELPER} yet"
        );
        return;
    }
    fs::copy(HELPER, INSTALLED_HELPER).unwrap();
    let _installed = InstalledHelper;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(INSTALLED_HELPER, fs::Permissions::from_mode(0o755)).unwrap();

    let d = dirs();
    let _guard = UnmountGuard(d.mnt.clone());
    let (ok, out) = mount_8(
        &[
            "-t".as_ref(),
            "fuse.lmqfs".as_ref(),
            d.data.as_os_str(),
            d.mnt.as_os_str(),
            "-o".as_ref(),
            "compression.type=gzip".as_ref(),
        ],
        &d.out,
    );
    assert!(ok, "mount -t fuse.lmqfs failed: {out}");
    check_mount(&d.mnt, &d.data, "gzip", 1);
    unmount_and_wait(&d.mnt);

    // An fstab line, from an alternative fstab file (`mount -T FILE MOUNTPOINT`).
    let e = dirs();
    let _guard2 = UnmountGuard(e.mnt.clone());
    let fstab = e.out.with_file_name("fstab");
    fs::write(
        &fstab,
        format!(
            "{} {} fuse.lmqfs defaults,_netdev,compression.type=snappy 0 0\n",
            e.data.display(),
            e.mnt.display()
        ),
    )
    .unwrap();
    let (ok, out) = mount_8(
        &["-T".as_ref(), fstab.as_os_str(), e.mnt.as_os_str()],
        &e.out,
    );
    assert!(ok, "mount via fstab failed: {out}");
    check_mount(&e.mnt, &e.data, "snappy", 2);
    unmount_and_wait(&e.mnt);
}
