//! FUSE daemons the benchmark mounts: the real `lmqfs` binary, and this benchmark's own no-op
//! filesystem (run as a child process, so both are pinned and measured the same way).

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{context, pin_current_thread, Result};

/// How long a mount may take to start serving (a 10 GB data directory included).
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a daemon may take to exit after `umount` (it flushes).
const EXIT_TIMEOUT: Duration = Duration::from_secs(300);

/// A mounted FUSE daemon, unmounted (and waited for) on [`Daemon::stop`] or drop.
pub struct Daemon {
    pub mnt: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    /// From spawn until the mount served its first file.
    pub startup: Duration,
}

impl Daemon {
    /// `lmqfs mount MNT --foreground --data-dir DATA [-o options]`, on `cpus` if given.
    pub fn lmqfs(
        bin: &Path,
        mnt: &Path,
        data: &Path,
        options: &[&str],
        cpus: Option<&[usize]>,
    ) -> Result<Daemon> {
        let mut cmd = Command::new(bin);
        cmd.arg("mount")
            .arg(mnt)
            .arg("--foreground")
            .arg("--data-dir")
            .arg(data);
        if !options.is_empty() {
            cmd.arg("-o").arg(options.join(","));
        }
        Daemon::spawn(cmd, mnt, "README", cpus)
    }

    /// This benchmark's no-op filesystem (see `noop.rs`), on `cpus` if given.
    pub fn noop(mnt: &Path, cpus: Option<&[usize]>) -> Result<Daemon> {
        let me = context(
            std::env::current_exe(),
            "finding the benchmark's own binary",
        )?;
        let mut cmd = Command::new(me);
        cmd.arg("--serve-noop").arg(mnt);
        Daemon::spawn(cmd, mnt, "append", cpus)
    }

    fn spawn(
        mut cmd: Command,
        mnt: &Path,
        ready_file: &str,
        cpus: Option<&[usize]>,
    ) -> Result<Daemon> {
        context(
            fs::create_dir_all(mnt),
            &format!("creating {}", mnt.display()),
        )?;
        let log = mnt.with_extension("log");
        let out = context(File::create(&log), &format!("creating {}", log.display()))?;
        let err = context(out.try_clone(), "duplicating the log file")?;
        cmd.env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(cpus) = cpus {
            let cpus = cpus.to_vec();
            // SAFETY: between fork and exec this only calls sched_setaffinity, which is
            // async-signal-safe; every thread the daemon starts inherits the mask.
            unsafe {
                cmd.pre_exec(move || pin_current_thread(&cpus));
            }
        }
        let started = Instant::now();
        let mut child = context(cmd.spawn(), &format!("starting {:?}", cmd.get_program()))?;
        loop {
            if mnt.join(ready_file).exists() {
                return Ok(Daemon {
                    mnt: mnt.to_path_buf(),
                    child: Some(child),
                    log,
                    startup: started.elapsed(),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{:?} exited with {status} before serving; its log:\n{}",
                    cmd.get_program(),
                    fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            if started.elapsed() > READY_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                unmount(mnt);
                return Err(format!(
                    "{} not serving after {READY_TIMEOUT:?}",
                    mnt.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `VmRSS` and `VmHWM` of the daemon, in bytes, from `/proc/PID/status`.
    pub fn memory(&self) -> Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.pid());
        let status = context(fs::read_to_string(&path), &format!("reading {path}"))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map(|kib| kib * 1024)
                .ok_or_else(|| format!("no {name} in {path}"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// A clean stop: `umount`, then waits for the daemon to flush and exit.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    /// Unmounts and kills the daemon without waiting for it to flush: for a data directory
    /// that is thrown away (a clean stop of 1000 partitions spends minutes in `fdatasync`).
    pub fn discard(mut self) {
        if let Some(mut child) = self.child.take() {
            unmount(&self.mnt);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn stop_inner(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        unmount(&self.mnt);
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!(
                        "the daemon of {} exited with {status}; its log:\n{}",
                        self.mnt.display(),
                        fs::read_to_string(&self.log).unwrap_or_default()
                    ))
                }
                Ok(None) if started.elapsed() > EXIT_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "the daemon of {} did not exit within {EXIT_TIMEOUT:?} of umount",
                        self.mnt.display()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(format!("waiting for the daemon: {e}")),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            eprintln!("lmqfs bench: {e}");
        }
    }
}

/// `umount`, falling back to a lazy unmount so that nothing is left mounted.
fn unmount(mnt: &Path) {
    let quiet = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .arg(mnt)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !quiet("umount", &[]) && !quiet("fusermount3", &["-u"]) {
        quiet("umount", &["-l"]);
    }
}
