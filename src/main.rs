//! The `lmqfs` command: `mount` (the FUSE daemon) and `dump-log`.
//!
//! Without `--foreground`, `mount` starts itself again with `--foreground` in a new session,
//! stdio on `/dev/null`, and waits on a pipe (its write end named by `LMQFS_READY_FD`) until the
//! daemon reports that the mount serves (exit 0) or why it could not (printed, exit 1).

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use log::{error, info, warn};

use lmqfs::engine::{CleanupSettings, EngineError, LogConfig, LogManager};
use lmqfs::fs::{FsOptions, LmqFs};
use lmqfs::fuse::{self, MountSettings};
use lmqfs::storage::cluster::{ClusterOptions, ClusterStorage};
use lmqfs::storage::Storage;

/// Names the write end of the readiness pipe in the daemon's environment.
const READY_FD_ENV: &str = "LMQFS_READY_FD";
/// If set, the background daemon's log goes to this file instead of `/dev/null`.
const LOG_FILE_ENV: &str = "LMQFS_LOG_FILE";

#[derive(Parser, Debug)]
#[command(
    name = "lmqfs",
    version,
    about = "A Kafka-style commit log as files, through FUSE"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Mount the data directory's topics at MOUNTPOINT.
    ///
    /// Returns once the mount serves, the daemon running in the background (unless
    /// --foreground). Unmount with `umount MOUNTPOINT`; SIGTERM and SIGINT also unmount, flush
    /// and exit cleanly. The log goes to stderr (RUST_LOG, default info); in the background to
    /// the file named by LMQFS_LOG_FILE, if set.
    Mount {
        /// An existing, empty directory to mount on.
        mountpoint: PathBuf,
        /// Where topics are stored [default: $XDG_DATA_HOME/lmqfs or ~/.local/share/lmqfs].
        #[arg(long, value_name = "DIR", conflicts_with = "bootstrap_server")]
        data_dir: Option<PathBuf>,
        /// Serve the topics of a Kafka-protocol cluster (Apache Kafka, Redpanda, Tansu)
        /// instead of a data directory: its brokers, HOST:PORT[,HOST:PORT...].
        #[arg(long, value_name = "HOST:PORT[,...]")]
        bootstrap_server: Option<String>,
        /// Stay in the foreground instead of daemonizing.
        #[arg(long)]
        foreground: bool,
        /// Comma-separated options: allow_other, allow_root, ro, default.partitions=N, any
        /// topic config key as a default (compression.type=lz4, retention.ms=..., ...), and the
        /// cleanup settings log.cleaner.dedupe.buffer.size=BYTES (16 MiB),
        /// log.cleaner.backoff.ms=MS (15 s), log.retention.check.interval.ms=MS (5 min).
        /// With --bootstrap-server: replication.factor=N (-1, the brokers' default),
        /// enable.idempotence=true|false (true), fetch.cache.bytes=BYTES (256 MiB),
        /// request.timeout.ms=MS (30 s).
        #[arg(short = 'o', value_name = "OPT[,OPT...]", value_delimiter = ',')]
        options: Vec<String>,
    },
    /// Print the batches and records of segment files, like kafka-dump-log.sh.
    DumpLog {
        /// .log, .index or .timeindex files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Check every CRC and index entry; exit 1 if any is wrong.
        #[arg(long)]
        verify: bool,
    },
}

/// The `-o` options, sorted out.
#[derive(Debug, Default)]
struct MountOptions {
    allow_other: bool,
    allow_root: bool,
    read_only: bool,
    fsname: Option<String>,
    default_partitions: u32,
    config: Vec<(String, String)>,
    cleanup: CleanupSettings,
    cluster: ClusterMountOptions,
}

/// The `-o` options that only a cluster mount (`--bootstrap-server`) takes.
#[derive(Debug, Default)]
struct ClusterMountOptions {
    replication_factor: Option<i32>,
    idempotence: Option<bool>,
    cache_bytes: Option<usize>,
    request_timeout_ms: Option<u64>,
}

impl ClusterMountOptions {
    /// The first option given, for the error of a mount without a cluster.
    fn first_given(&self) -> Option<&'static str> {
        if self.replication_factor.is_some() {
            Some("replication.factor")
        } else if self.idempotence.is_some() {
            Some("enable.idempotence")
        } else if self.cache_bytes.is_some() {
            Some("fetch.cache.bytes")
        } else if self.request_timeout_ms.is_some() {
            Some("request.timeout.ms")
        } else {
            None
        }
    }
}

/// Options mount(8) and fstab pass to helpers that mean nothing to lmqfs.
const IGNORED_OPTIONS: &[&str] = &[
    "rw",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "defaults",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "async",
    "default_permissions",
];

/// The smallest offset map a cleaner run may have (a few dozen keys per pass: small enough to
/// try multi-pass cleaning, large enough to make progress).
const MIN_DEDUPE_BUFFER_BYTES: usize = 1024;

/// A cleanup setting: a decimal integer of at least `min` (in `unit`).
fn parse_setting<T>(key: &str, value: &str, min: T, unit: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    value
        .parse::<T>()
        .ok()
        .filter(|v| *v >= min)
        .ok_or_else(|| {
            format!("{key} must be a whole number of {unit}, at least {min}; got {value:?}")
        })
}

fn parse_mount_options(raw: &[String]) -> Result<(MountOptions, LogConfig), String> {
    let mut options = MountOptions {
        default_partitions: 1,
        ..Default::default()
    };
    let mut defaults = LogConfig::default();
    for option in raw.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        match option {
            "allow_other" => options.allow_other = true,
            "allow_root" => options.allow_root = true,
            "ro" => options.read_only = true,
            o if IGNORED_OPTIONS.contains(&o) => {}
            o if o.starts_with("x-") || o.starts_with("comment=") || o.starts_with("subtype=") => {}
            o => {
                let Some((key, value)) = o.split_once('=') else {
                    return Err(format!("unknown mount option {o:?}"));
                };
                match key {
                    "fsname" => options.fsname = Some(value.to_string()),
                    "log.cleaner.dedupe.buffer.size" => {
                        options.cleanup.cleaner.dedupe_buffer_bytes =
                            parse_setting(key, value, MIN_DEDUPE_BUFFER_BYTES, "bytes")?;
                    }
                    "log.cleaner.backoff.ms" => {
                        options.cleanup.cleaner_backoff_ms =
                            parse_setting(key, value, 1, "milliseconds")?;
                    }
                    "log.retention.check.interval.ms" => {
                        options.cleanup.retention_check_interval_ms =
                            parse_setting(key, value, 1, "milliseconds")?;
                    }
                    "replication.factor" => {
                        options.cluster.replication_factor = Some(
                            value
                                .parse::<i32>()
                                .ok()
                                .filter(|n| *n >= 1 || *n == -1)
                                .ok_or_else(|| {
                                    format!(
                                        "replication.factor must be a number >= 1, or -1 for \
                                         the brokers' default; got {value:?}"
                                    )
                                })?,
                        );
                    }
                    "enable.idempotence" => {
                        options.cluster.idempotence = Some(match value {
                            "true" => true,
                            "false" => false,
                            _ => {
                                return Err(format!(
                                    "enable.idempotence must be true or false, got {value:?}"
                                ))
                            }
                        });
                    }
                    "fetch.cache.bytes" => {
                        options.cluster.cache_bytes =
                            Some(parse_setting(key, value, 0usize, "bytes")?);
                    }
                    "request.timeout.ms" => {
                        options.cluster.request_timeout_ms =
                            Some(parse_setting(key, value, 100u64, "milliseconds")?);
                    }
                    "default.partitions" => {
                        options.default_partitions = value
                            .parse::<u32>()
                            .ok()
                            .filter(|n| *n >= 1)
                            .ok_or_else(|| {
                                format!("default.partitions must be a number >= 1, got {value:?}")
                            })?;
                    }
                    _ => {
                        defaults
                            .set(key, value)
                            .map_err(|e| format!("mount option {o:?}: {e}"))?;
                        options.config.push((key.to_string(), value.to_string()));
                    }
                }
            }
        }
    }
    Ok((options, defaults))
}

fn default_data_dir() -> Result<PathBuf, String> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from) {
        if xdg.is_absolute() {
            return Ok(xdg.join("lmqfs"));
        }
    }
    match std::env::var_os("HOME").map(PathBuf::from) {
        Some(home) if home.is_absolute() => Ok(home.join(".local/share/lmqfs")),
        _ => Err("no data directory: pass --data-dir, or set HOME or XDG_DATA_HOME".into()),
    }
}

/// Decodes the octal escapes of `/proc/self/mountinfo` paths.
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The filesystem type and source mounted at `path`, if it is a mount point.
fn mounted_at(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = path.to_string_lossy();
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 5 || unescape_mountinfo(fields[4]) != wanted {
            return None;
        }
        let sep = fields.iter().position(|f| *f == "-")?;
        let fstype = fields.get(sep + 1).copied().unwrap_or("?");
        let source = fields
            .get(sep + 2)
            .map(|s| unescape_mountinfo(s))
            .unwrap_or_default();
        Some(format!("{fstype} from {source}"))
    })
}

fn check_mountpoint(mountpoint: &Path) -> Result<PathBuf, String> {
    let shown = mountpoint.display();
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("mountpoint {shown} is not a directory")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("mountpoint {shown} does not exist"))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(format!(
                "mountpoint {shown} is a disconnected FUSE mount; run `umount {shown}` first"
            ))
        }
        Err(e) => return Err(format!("mountpoint {shown}: {e}")),
    }
    let canonical =
        std::fs::canonicalize(mountpoint).map_err(|e| format!("mountpoint {shown}: {e}"))?;
    if let Some(what) = mounted_at(&canonical) {
        // Not probed further: a lookup in a mount whose daemon hangs would hang here too.
        return Err(format!(
            "mountpoint {shown} is already a mount point ({what}); if that is a stale mount \
             left by a daemon that was killed, run `umount {shown}` first",
            shown = canonical.display()
        ));
    }
    Ok(canonical)
}

/// Whether this process may open `/dev/fuse` for reading and writing; `Err` says why not.
fn dev_fuse_access() -> Result<(), std::io::Error> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map(drop)
}

/// The first `fusermount3` on `PATH`.
fn fusermount3_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("fusermount3"))
        .find(|p| p.is_file())
}

/// What a failed mount needs to say. A user who cannot open `/dev/fuse` would otherwise see a
/// bare "Permission denied": name the device and what would let the mount work. fuser mounts
/// through `fusermount3` only when the device opens but the `mount` call itself is refused.
fn explain_mount_error(
    error: &std::io::Error,
    dev_fuse: Result<(), std::io::Error>,
    fusermount3: Option<&Path>,
) -> String {
    let Err(device) = dev_fuse else {
        return match (error.kind(), fusermount3) {
            (std::io::ErrorKind::PermissionDenied, None) => format!(
                "{error}: mounting needs root (or CAP_SYS_ADMIN), or the setuid-root \
                 `fusermount3` (package fuse3), which is not installed"
            ),
            _ => error.to_string(),
        };
    };
    let helper = match fusermount3 {
        Some(p) => format!("`{}` exists, but", p.display()),
        None => "no `fusermount3` (package fuse3) is installed, and".to_string(),
    };
    format!(
        "this user cannot open /dev/fuse ({device}); {helper} the mount needs that device. \
         Give this user read and write access to /dev/fuse (most systems ship it as mode 0666: \
         `chmod 0666 /dev/fuse` as root), or mount as root"
    )
}

/// Blocks the termination signals in this thread and every thread it starts later, so that one
/// thread can take them with `sigwait`.
fn block_termination_signals() -> libc::sigset_t {
    // SAFETY: plain libc calls on a local, zero-initialised signal set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Reports the daemon's startup outcome to the waiting launcher, if there is one.
struct Readiness {
    pipe: Option<std::fs::File>,
}

impl Readiness {
    fn from_env() -> Readiness {
        let fd = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<RawFd>().ok())
            .filter(|fd| *fd > 2);
        std::env::remove_var(READY_FD_ENV);
        // SAFETY: the launcher passes the write end of a pipe it created for us and no other
        // code in this process uses that descriptor.
        let pipe = fd.map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
        if let Some(pipe) = &pipe {
            use std::os::fd::AsRawFd;
            // SAFETY: setting FD_CLOEXEC on a descriptor we own.
            unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        Readiness { pipe }
    }

    fn report(&mut self, message: &str) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(message.as_bytes());
        }
    }
}

/// Mounts and serves until unmounted or signalled; reports readiness once the mount serves.
fn serve(
    mountpoint: &Path,
    source: Source,
    raw_options: &[String],
    readiness: &mut Readiness,
) -> Result<(), String> {
    let signals = block_termination_signals();
    // Everything the daemon creates in the data directory (segments, indexes, metadata) is
    // the mounting user's alone: files 0600, directories 0700, whatever the caller's umask.
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe { libc::umask(0o077) };
    let (options, defaults) = parse_mount_options(raw_options)?;
    let mountpoint = check_mountpoint(mountpoint)?;
    let backend = match source {
        Source::DataDir(data_dir) => {
            if let Some(key) = options.cluster.first_given() {
                return Err(format!(
                    "mount option {key} is for a cluster mount (--bootstrap-server)"
                ));
            }
            open_data_dir(&mountpoint, data_dir, &options, defaults)?
        }
        Source::Cluster(servers) => connect_cluster(&servers, &options)?,
    };
    let fs = Arc::new(LmqFs::new(
        backend.storage.clone(),
        FsOptions {
            read_only: options.read_only,
        },
    ));
    let threads = std::thread::available_parallelism()
        .map_or(4, |n| n.get() * 2)
        .clamp(4, 16);
    let settings = MountSettings {
        mountpoint: mountpoint.clone(),
        fsname: options
            .fsname
            .clone()
            .unwrap_or_else(|| backend.name.clone()),
        allow_other: options.allow_other,
        allow_root: options.allow_root,
        read_only: options.read_only,
        threads,
    };
    let mut running = match fuse::start(fs.clone(), &settings) {
        Ok(r) => r,
        Err(e) => {
            backend.shutdown();
            return Err(format!(
                "cannot mount {}: {}",
                mountpoint.display(),
                explain_mount_error(&e, dev_fuse_access(), fusermount3_path().as_deref())
            ));
        }
    };
    info!(
        "serving {} at {} ({} threads{}{})",
        backend.name,
        mountpoint.display(),
        threads,
        if options.read_only { ", read-only" } else { "" },
        if options.allow_other {
            ", allow_other"
        } else {
            ""
        },
    );

    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut signal = 0;
            // SAFETY: waits on the set blocked above; writes only `signal`.
            if unsafe { libc::sigwait(&signals, &mut signal) } == 0 && tx.send(signal).is_err() {
                return;
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    readiness.report("ready\n");
    let outcome = wait_and_stop(&mut running, &rx, &mountpoint);
    fs.store_view_states();
    if let Err(e) = fs.flush_all() {
        warn!("flush before shutdown failed: {e}");
    }
    backend.shutdown();
    outcome
}

/// Where a mount's topics live.
enum Source {
    DataDir(Option<PathBuf>),
    /// `--bootstrap-server`.
    Cluster(String),
}

/// The storage a mount serves, its name for `mount`'s list, and how it stops.
struct Backend {
    storage: Arc<dyn Storage>,
    name: String,
    manager: Option<Arc<LogManager>>,
}

impl Backend {
    fn shutdown(&self) {
        match &self.manager {
            Some(manager) => match manager.shutdown() {
                Ok(()) => info!("clean shutdown of {}", self.name),
                Err(e) => error!("shutdown of {} failed: {e}", self.name),
            },
            None => match self.storage.flush_all() {
                Ok(()) => info!("every append acknowledged by {}", self.name),
                Err(e) => error!("flush of {} failed: {e}", self.name),
            },
        }
    }
}

/// A cluster mount: connects, and fails the mount if the cluster does not answer.
fn connect_cluster(servers: &str, options: &MountOptions) -> Result<Backend, String> {
    let mut cluster = ClusterOptions::new(servers);
    cluster.default_partitions = options.default_partitions;
    cluster.topic_defaults = options.config.clone();
    if let Some(n) = options.cluster.replication_factor {
        cluster.replication_factor = n;
    }
    if let Some(on) = options.cluster.idempotence {
        cluster.client.idempotence = on;
    }
    if let Some(bytes) = options.cluster.cache_bytes {
        cluster.cache_bytes = bytes;
    }
    if let Some(ms) = options.cluster.request_timeout_ms {
        cluster.client.request_timeout = Duration::from_millis(ms);
    }
    let storage = ClusterStorage::connect(cluster)
        .map_err(|e| format!("cannot reach the cluster at {servers}: {e}"))?;
    Ok(Backend {
        storage: Arc::new(storage),
        name: format!("kafka://{servers}"),
        manager: None,
    })
}

/// An embedded-engine mount: opens (and locks) the data directory.
fn open_data_dir(
    mountpoint: &Path,
    data_dir: Option<PathBuf>,
    options: &MountOptions,
    defaults: LogConfig,
) -> Result<Backend, String> {
    let data_dir = match data_dir {
        Some(d) => d,
        None => default_data_dir()?,
    };
    let data_dir = std::path::absolute(&data_dir)
        .map_err(|e| format!("data directory {}: {e}", data_dir.display()))?;
    if data_dir.starts_with(mountpoint) {
        return Err(format!(
            "the data directory {} must not be inside the mount point {}",
            data_dir.display(),
            mountpoint.display()
        ));
    }
    let manager = match LogManager::open_with(
        &data_dir,
        defaults,
        options.default_partitions,
        options.cleanup,
    ) {
        Ok(m) => Arc::new(m),
        Err(e @ EngineError::DataDirLocked { .. }) => {
            return Err(format!(
                "{e}; is it mounted already? (see `mount -t fuse.lmqfs`)"
            ))
        }
        Err(e) => {
            return Err(format!(
                "cannot open data directory {}: {e}",
                data_dir.display()
            ))
        }
    };
    Ok(Backend {
        storage: manager.clone(),
        name: data_dir.display().to_string(),
        manager: Some(manager),
    })
}

/// Serves until the mount goes away or a termination signal arrives, then makes sure the mount
/// is gone.
fn wait_and_stop(
    running: &mut fuse::Running,
    signals: &mpsc::Receiver<i32>,
    mountpoint: &Path,
) -> Result<(), String> {
    loop {
        match signals.recv_timeout(Duration::from_millis(200)) {
            Ok(signal) => {
                info!("signal {signal}: unmounting {}", mountpoint.display());
                let mut detached = false;
                if let Err(e) = running.unmount() {
                    warn!(
                        "unmount of {} failed ({e}); detaching it",
                        mountpoint.display()
                    );
                    lazy_unmount(mountpoint);
                    detached = true;
                }
                if !running.wait_finished(Duration::from_secs(5)) {
                    warn!(
                        "files are still open on {}; shutting down anyway",
                        mountpoint.display()
                    );
                    if !detached {
                        lazy_unmount(mountpoint);
                    }
                }
                return Ok(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if running.is_finished() {
                    info!("{} was unmounted", mountpoint.display());
                    return Ok(());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("the signal thread ended".into());
            }
        }
    }
}

fn lazy_unmount(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
        let status = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(mountpoint)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            warn!("could not detach {}", mountpoint.display());
        }
    }
}

/// Starts the daemon in the background and waits for its readiness report.
fn launch_background(
    mountpoint: &Path,
    data_dir: Option<PathBuf>,
    bootstrap_server: Option<&str>,
    raw_options: &[String],
) -> Result<(), String> {
    // Validate what can be validated here, so errors need no round trip.
    parse_mount_options(raw_options)?;
    let mountpoint_abs =
        std::path::absolute(mountpoint).map_err(|e| format!("{}: {e}", mountpoint.display()))?;
    let data_dir = match data_dir {
        Some(d) => Some(std::path::absolute(&d).map_err(|e| format!("{}: {e}", d.display()))?),
        None => None,
    };
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    // SAFETY: both descriptors were just created and are owned here.
    let mut reader = unsafe { std::fs::File::from_raw_fd(read_fd) };
    let writer = unsafe { std::fs::File::from_raw_fd(write_fd) };

    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let mut command = Command::new(exe);
    command
        .arg("mount")
        .arg(&mountpoint_abs)
        .arg("--foreground");
    if let Some(d) = &data_dir {
        command.arg("--data-dir").arg(d);
    }
    if let Some(servers) = bootstrap_server {
        command.arg("--bootstrap-server").arg(servers);
    }
    if !raw_options.is_empty() {
        command.arg("-o").arg(raw_options.join(","));
    }
    command
        .env(READY_FD_ENV, write_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    match std::env::var_os(LOG_FILE_ENV) {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("{LOG_FILE_ENV}={}: {e}", Path::new(&path).display()))?;
            command.stderr(file);
        }
        None => {
            command.stderr(Stdio::null());
        }
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::fcntl(write_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start the daemon: {e}"))?;
    drop(writer);
    let mut message = String::new();
    let _ = reader.read_to_string(&mut message);
    let message = message.trim();
    if message == "ready" {
        return Ok(());
    }
    if let Some(reason) = message.strip_prefix("error: ") {
        let _ = child.wait();
        return Err(reason.to_string());
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the daemon: {e}"))?;
    Err(format!(
        "the daemon exited before the mount was ready ({status})"
    ))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Mount {
            mountpoint,
            data_dir,
            bootstrap_server,
            foreground,
            options,
        } => {
            if !foreground {
                return match launch_background(
                    &mountpoint,
                    data_dir,
                    bootstrap_server.as_deref(),
                    &options,
                ) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("lmqfs: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
                .init();
            let mut readiness = Readiness::from_env();
            let source = match bootstrap_server {
                Some(servers) => Source::Cluster(servers),
                None => Source::DataDir(data_dir),
            };
            match serve(&mountpoint, source, &options, &mut readiness) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e}");
                    readiness.report(&format!("error: {e}\n"));
                    eprintln!("lmqfs: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::DumpLog { files, verify } => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            match lmqfs::dump::dump_log(&files, verify, &mut out) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    let _ = out.flush();
                    eprintln!("lmqfs dump-log: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(options: &[&str]) -> Result<MountOptions, String> {
        let raw: Vec<String> = options.iter().map(|s| s.to_string()).collect();
        parse_mount_options(&raw).map(|(options, _)| options)
    }

    #[test]
    fn a_mount_without_dev_fuse_access_says_what_is_missing() {
        let denied = || Err(std::io::Error::from_raw_os_error(libc::EACCES));
        let error = std::io::Error::from_raw_os_error(libc::EACCES);
        let said = explain_mount_error(&error, denied(), None);
        assert!(said.contains("cannot open /dev/fuse"), "{said}");
        assert!(said.contains("fusermount3"), "{said}");
        assert!(said.contains("chmod 0666 /dev/fuse"), "{said}");
        let said = explain_mount_error(&error, denied(), Some(Path::new("/usr/bin/fusermount3")));
        assert!(said.contains("/usr/bin/fusermount3"), "{said}");
        // The device opens: the mount call itself was refused.
        let said = explain_mount_error(&error, Ok(()), None);
        assert!(
            said.contains("root") && said.contains("fusermount3"),
            "{said}"
        );
        let other = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(explain_mount_error(&other, Ok(()), None), other.to_string());
    }

    #[test]
    fn cleanup_settings_default_like_kafka_and_parse_from_options() {
        let defaults = parse(&[]).unwrap().cleanup;
        assert_eq!(defaults.cleaner.dedupe_buffer_bytes, 16 * 1024 * 1024);
        assert_eq!(defaults.cleaner_backoff_ms, 15_000);
        assert_eq!(defaults.retention_check_interval_ms, 300_000);
        let set = parse(&[
            "log.cleaner.dedupe.buffer.size=1048576",
            "log.cleaner.backoff.ms=200",
            "log.retention.check.interval.ms=1000",
            "retention.ms=5000",
        ])
        .unwrap();
        assert_eq!(set.cleanup.cleaner.dedupe_buffer_bytes, 1 << 20);
        assert_eq!(set.cleanup.cleaner_backoff_ms, 200);
        assert_eq!(set.cleanup.retention_check_interval_ms, 1000);
        assert_eq!(
            set.config,
            [("retention.ms".to_string(), "5000".to_string())]
        );
    }

    #[test]
    fn cluster_options_parse_and_bad_values_name_the_key() {
        let none = parse(&[]).unwrap().cluster;
        assert_eq!(none.first_given(), None);
        let set = parse(&[
            "replication.factor=3",
            "enable.idempotence=false",
            "fetch.cache.bytes=1048576",
            "request.timeout.ms=2000",
        ])
        .unwrap()
        .cluster;
        assert_eq!(set.replication_factor, Some(3));
        assert_eq!(set.idempotence, Some(false));
        assert_eq!(set.cache_bytes, Some(1 << 20));
        assert_eq!(set.request_timeout_ms, Some(2000));
        assert_eq!(set.first_given(), Some("replication.factor"));
        assert_eq!(
            parse(&["replication.factor=-1"])
                .unwrap()
                .cluster
                .replication_factor,
            Some(-1)
        );
        for (bad, key) in [
            ("replication.factor=0", "replication.factor"),
            ("enable.idempotence=yes", "enable.idempotence"),
            ("request.timeout.ms=5", "request.timeout.ms"),
        ] {
            let e = parse(&[bad]).unwrap_err();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn invalid_cleanup_settings_are_refused_with_the_key_named() {
        for bad in [
            "log.cleaner.dedupe.buffer.size=lots",
            "log.cleaner.dedupe.buffer.size=10",
            "log.cleaner.dedupe.buffer.size=-1",
            "log.cleaner.backoff.ms=0",
            "log.cleaner.backoff.ms=1.5",
            "log.retention.check.interval.ms=",
            "log.retention.check.interval.ms=-5",
        ] {
            let e = parse(&[bad]).unwrap_err();
            let key = bad.split('=').next().unwrap();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }
}
