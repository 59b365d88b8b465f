//! Shared harness for the mounted tests: a real `lmqfs mount` of a temporary data directory on a
//! temporary mountpoint, driven from outside like a user would.
//!
//! FUSE availability: when `/dev/fuse` is missing or the first mount fails, a test fails if
//! `LMQFS_REQUIRE_FUSE=1` (CI) and otherwise prints `skipped: no FUSE (...)` and returns. Every
//! mount is unmounted on drop (`umount`, then `fusermount3 -u`, then a lazy unmount), and the daemon
//! is waited for (killed if it hangs), so a failing test never leaves a stale mount behind.
#![allow(dead_code)]

pub mod broker;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_lmqfs");

/// How long a mount may take to start serving.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the daemon may take to exit after `umount`.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// True when the environment says FUSE must be there (CI), so tests fail instead of skipping.
pub fn fuse_required() -> bool {
    std::env::var("LMQFS_REQUIRE_FUSE").is_ok_and(|v| v == "1")
}

/// Fails the test when FUSE is required, else prints why it is skipped.
pub fn skip_or_fail(reason: &str) {
    if fuse_required() {
        panic!("LMQFS_REQUIRE_FUSE=1 but the mount is unavailable: {reason}");
    }
    eprintln!("skipped: no FUSE ({reason})");
}

/// A running `lmqfs mount --foreground` on temporary directories.
pub struct Mount {
    /// The mountpoint.
    pub mnt: PathBuf,
    /// The data directory (kept across [`Mount::remount`]).
    pub data: PathBuf,
    /// `-o` options given at every start.
    options: Vec<String>,
    /// `--bootstrap-server` of a cluster mount (then `data` is not used).
    bootstrap: Option<String>,
    child: Option<Child>,
    /// Daemon logs (stdout and stderr), one file per start.
    logs: Vec<PathBuf>,
    /// Holds `data`, `mnt` and the logs; removed after the unmount in `Drop`.
    base: tempfile::TempDir,
}

impl Mount {
    /// Mounts a fresh data directory with no options. `None` when the test is skipped.
    pub fn new() -> Option<Mount> {
        Mount::with_options(&[])
    }

    /// Mounts a fresh data directory with `-o options` (joined by commas). `None` when skipped.
    pub fn with_options(options: &[&str]) -> Option<Mount> {
        Mount::start_new(options, None)
    }

    /// Mounts the topics of `broker` (`--bootstrap-server`). `None` when skipped.
    pub fn on_cluster(broker: &broker::Broker) -> Option<Mount> {
        Mount::start_new(&[], Some(broker.bootstrap()))
    }

    /// Mounts the topics of `broker` with `-o options`. `None` when skipped.
    pub fn on_cluster_with_options(broker: &broker::Broker, options: &[&str]) -> Option<Mount> {
        Mount::start_new(options, Some(broker.bootstrap()))
    }

    /// True for a cluster mount.
    pub fn is_cluster(&self) -> bool {
        self.bootstrap.is_some()
    }

    fn start_new(options: &[&str], bootstrap: Option<String>) -> Option<Mount> {
        if !Path::new("/dev/fuse").exists() {
            skip_or_fail("/dev/fuse is missing");
            return None;
        }
        let base = tempfile::Builder::new()
            .prefix("lmqfs-test.")
            .tempdir()
            .expect("create temporary directory");
        let mnt = base.path().join("mnt");
        fs::create_dir(&mnt).expect("create mountpoint");
        let mut mount = Mount {
            data: base.path().join("data"),
            mnt,
            options: options.iter().map(|s| s.to_string()).collect(),
            bootstrap,
            child: None,
            logs: Vec::new(),
            base,
        };
        match mount.start() {
            Ok(()) => Some(mount),
            Err(reason) => {
                skip_or_fail(&reason);
                None
            }
        }
    }

    /// Replaces the `-o` options used from the next [`Mount::remount`] on.
    pub fn set_options(&mut self, options: &[&str]) {
        self.options = options.iter().map(|s| s.to_string()).collect();
    }

    /// A scratch directory beside the mount (not inside it), removed with the mount.
    pub fn scratch(&self) -> &Path {
        self.base.path()
    }

    /// `MNT/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Starts the daemon and waits until `MNT/README` exists.
    fn start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "daemon already running");
        let log = self
            .base
            .path()
            .join(format!("daemon-{}.log", self.logs.len() + 1));
        let out = File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        self.logs.push(log);
        let mut cmd = Command::new(BIN);
        cmd.arg("mount").arg(&self.mnt).arg("--foreground");
        match &self.bootstrap {
            Some(servers) => cmd.arg("--bootstrap-server").arg(servers),
            None => cmd.arg("--data-dir").arg(&self.data),
        };
        if !self.options.is_empty() {
            cmd.arg("-o").arg(self.options.join(","));
        }
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = cmd.spawn().map_err(|e| format!("spawn {BIN}: {e}"))?;
        let started = Instant::now();
        loop {
            if self.mnt.join("README").exists() {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                force_unmount(&self.mnt);
                return Err(format!(
                    "`lmqfs mount` exited with {status} before serving; its log:\n{}",
                    self.daemon_log()
                ));
            }
            if started.elapsed() > READY_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                force_unmount(&self.mnt);
                return Err(format!(
                    "mount not serving after {READY_TIMEOUT:?}; daemon log:\n{}",
                    self.daemon_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log (stdout + stderr) of the current, or last, daemon start.
    pub fn daemon_log(&self) -> String {
        self.logs
            .last()
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The logs of every start so far, oldest first.
    pub fn daemon_logs(&self) -> Vec<String> {
        self.logs
            .iter()
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Asserts the daemon is alive and answers: the root `README` reads and is not empty.
    pub fn assert_serving(&mut self) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!("daemon exited with {status}; log:\n{}", self.daemon_log());
        }
        let readme = fs::read(self.path("README"))
            .unwrap_or_else(|e| panic!("README unreadable: {e}; log:\n{}", self.daemon_log()));
        assert!(!readme.is_empty(), "README is empty");
    }

    /// `umount MNT` and waits for the daemon, which must exit by itself. Returns its status.
    pub fn unmount(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let umount = Command::new("umount")
            .arg(&self.mnt)
            .stdin(Stdio::null())
            .output()
            .expect("run umount");
        if !umount.status.success() {
            let _ = child.kill();
            let _ = child.wait();
            force_unmount(&self.mnt);
            panic!(
                "`umount {}` failed: {}",
                self.mnt.display(),
                String::from_utf8_lossy(&umount.stderr)
            );
        }
        match wait_timeout(&mut child, EXIT_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                force_unmount(&self.mnt);
                panic!(
                    "daemon still running {EXIT_TIMEOUT:?} after umount; log:\n{}",
                    self.daemon_log()
                );
            }
        }
    }

    /// Waits for a daemon that stops by itself (after SIGTERM); returns its exit status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        match wait_timeout(&mut child, EXIT_TIMEOUT) {
            Some(status) => {
                force_unmount(&self.mnt);
                status
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                force_unmount(&self.mnt);
                panic!("daemon did not exit within {EXIT_TIMEOUT:?}");
            }
        }
    }

    /// Kills the daemon with SIGKILL (no chance to flush) and removes the dead mount.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        child.kill().expect("kill -9 the daemon");
        let _ = child.wait();
        force_unmount(&self.mnt);
    }

    /// Kills the daemon with SIGKILL and leaves its dead mount in place (a stale mount, as a
    /// crashed daemon leaves it; `Drop` still removes it).
    pub fn kill9_leave_mount(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        child.kill().expect("kill -9 the daemon");
        let _ = child.wait();
    }

    /// Sends `signal` to the daemon and waits for it to exit by itself; its exit status.
    pub fn signal_and_wait(&mut self, signal: i32) -> ExitStatus {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
        self.wait_exit()
    }

    /// Mounts again after the daemon stopped (by [`Mount::kill9`] or by itself), without
    /// unmounting first; the start's error when it does not come up.
    pub fn try_start(&mut self) -> Result<(), String> {
        self.start()
    }

    /// Unmounts cleanly (asserting exit status 0) if running, then mounts the same data
    /// directory again with the same options.
    pub fn remount(&mut self) {
        if self.child.is_some() {
            let status = self.unmount();
            assert!(
                status.success(),
                "daemon exited with {status} after umount; log:\n{}",
                self.daemon_log()
            );
        }
        if let Err(reason) = self.start() {
            panic!("remount failed: {reason}");
        }
    }

    /// Creates topic `name`, with `partitions` partitions when more than 1.
    pub fn create_topic(&self, name: &str, partitions: u32) -> PathBuf {
        let dir = self.path(name);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        if partitions > 1 {
            write_once(
                &dir.join("partitions"),
                format!("{partitions}\n").as_bytes(),
            )
            .unwrap_or_else(|e| panic!("grow {name} to {partitions}: {e}"));
        }
        dir
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            force_unmount(&self.mnt);
            return;
        };
        if !run_quiet("umount", &[self.mnt.as_os_str()]) {
            run_quiet("fusermount3", &["-u".as_ref(), self.mnt.as_os_str()]);
        }
        if wait_timeout(&mut child, EXIT_TIMEOUT).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        force_unmount(&self.mnt);
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.daemon_log());
        }
    }
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if started.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a program, discarding its output; true on success.
fn run_quiet<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when `path` is a mountpoint in this mount namespace.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp == want)
}

/// Removes every mount on `path`: `umount`, then `fusermount3 -u`, then lazily.
pub fn force_unmount(path: &Path) {
    for _ in 0..4 {
        if !is_mounted(path) {
            return;
        }
        if run_quiet("umount", &[path.as_os_str()]) {
            continue;
        }
        if run_quiet("fusermount3", &["-u".as_ref(), path.as_os_str()]) {
            continue;
        }
        if !run_quiet("umount", &["-l".as_ref(), path.as_os_str()]) {
            run_quiet("fusermount3", &["-uz".as_ref(), path.as_os_str()]);
        }
    }
}

/// Unmounts `path` on drop (for mounts made by something other than [`Mount`]).
pub struct UnmountGuard(pub PathBuf);

impl Drop for UnmountGuard {
    fn drop(&mut self) {
        force_unmount(&self.0);
    }
}

/// Runs `sh -c script` in `dir`; the whole output.
pub fn sh(dir: &Path, script: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("sh -c {script:?}: {e}"))
}

/// Runs `sh -c script` in `dir`, asserts it succeeded, returns stdout.
pub fn sh_ok(dir: &Path, script: &str) -> String {
    let out = sh(dir, script);
    assert!(
        out.status.success(),
        "`{script}` failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// Opens `path` write-only (no create, no truncate) and writes `bytes` in ONE `write()` call,
/// which must take all of it; then closes.
pub fn write_once(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    let n = f.write(bytes)?;
    assert_eq!(n, bytes.len(), "short write to {}", path.display());
    Ok(())
}

/// Opens `path` with `O_WRONLY|O_APPEND` (like `>>`).
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

/// Opens `path` with `O_WRONLY|O_TRUNC` and no create (like `>` on an existing file).
pub fn open_trunc(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).truncate(true).open(path)
}

/// Reads a whole file.
pub fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Reads a whole file as UTF-8.
pub fn read_string(path: &Path) -> String {
    String::from_utf8(read(path)).unwrap_or_else(|e| panic!("{} not UTF-8: {e}", path.display()))
}

/// Reads a whole file by repeated `read()` until EOF, as `cat` does (not trusting st_size).
pub fn read_to_eof(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// The errno of a failed call, or a panic describing the unexpected success.
pub fn errno_of<T: std::fmt::Debug>(what: &str, result: io::Result<T>) -> i32 {
    match result {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: error without errno: {e}")),
    }
}

/// Parses a partition's `stats`.
pub fn stats(partition_dir: &Path) -> serde_json::Value {
    let text = read_string(&partition_dir.join("stats"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stats is not JSON ({e}): {text}"))
}

/// `stats` field `key` as an integer.
pub fn stat_i64(partition_dir: &Path, key: &str) -> i64 {
    let s = stats(partition_dir);
    s[key]
        .as_i64()
        .unwrap_or_else(|| panic!("stats has no integer {key:?}: {s}"))
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; the last result.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if started.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Process ids whose command line contains `needle` as one argument (read-only look at /proc).
pub fn pids_with_arg(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(cmdline) = fs::read(e.path().join("cmdline")) {
            if cmdline.split(|&b| b == 0).any(|a| a == needle.as_bytes()) {
                out.push(pid);
            }
        }
    }
    out
}

/// A spawned process whose stdout lines arrive on a channel (for `tail -f`).
pub struct Follower {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Everything received so far.
    pub seen: Vec<String>,
    stderr_path: PathBuf,
}

impl Follower {
    /// Spawns `sh -c script` in `dir`, stderr to `stderr_path`.
    pub fn spawn(dir: &Path, script: &str, stderr_path: &Path) -> Follower {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {script}"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(stderr_path).expect("create stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {script}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower {
            child,
            lines: rx,
            seen: Vec::new(),
            stderr_path: stderr_path.to_path_buf(),
        }
    }

    /// Waits until `count` lines have arrived in total; false on timeout.
    pub fn wait_for_lines(&mut self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.seen.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => return false,
            }
        }
        true
    }

    /// Collects whatever arrives within `window`.
    pub fn drain_for(&mut self, window: Duration) {
        let deadline = Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return,
                Err(_) => return,
            }
        }
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The compression codec bits (attributes & 7: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd) of
/// every record batch in a Kafka v2 `.log` file, walking batch by batch.
pub fn batch_compressions(log: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    // baseOffset(8) batchLength(4) partitionLeaderEpoch(4) magic(1) crc(4) attributes(2)
    while pos + 23 <= log.len() {
        let len = i32::from_be_bytes(log[pos + 8..pos + 12].try_into().unwrap());
        if len <= 0 {
            break;
        }
        out.push(u16::from_be_bytes(log[pos + 21..pos + 23].try_into().unwrap()) & 7);
        pos += 12 + len as usize;
    }
    out
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Runs each named check (`fn name(m: &Mount)`) as two tests: `embedded::name` on a data
/// directory mount and `cluster::name` on a mount of a Tansu broker started for the test.
#[macro_export]
macro_rules! on_both_backends {
    ($($check:ident),+ $(,)?) => {
        mod embedded {
            $(
                #[test]
                fn $check() {
                    let Some(m) = $crate::common::Mount::new() else { return };
                    super::$check(&m);
                }
            )+
        }
        mod cluster {
            $(
                #[test]
                fn $check() {
                    let Some(broker) = $crate::common::broker::Broker::start() else { return };
                    let Some(m) = $crate::common::Mount::on_cluster(&broker) else { return };
                    super::$check(&m);
                }
            )+
        }
    };
}

/// Background cleanup out of the way (one hour), so a test decides when cleanup runs.
pub const MANUAL_CLEANUP: &[&str] = &[
    "log.cleaner.backoff.ms=3600000",
    "log.retention.check.interval.ms=3600000",
];

/// The names in `dir`, sorted.
pub fn ls(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("ls {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}
