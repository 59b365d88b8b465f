//! The thin FUSE adapter: each `fuser::Filesystem` callback calls one function of [`crate::fs`]
//! and maps its result; [`errno`] is the one place where errors become errno values.
//!
//! Session setup ([`start`]) mounts with `default_permissions` always on (the kernel enforces
//! the modes the filesystem reports), `allow_other` only when asked, and several worker
//! threads, each with its own cloned `/dev/fuse` descriptor.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, PollEvents, PollFlags,
    PollNotifier, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyOpen, ReplyPoll, ReplyWrite, ReplyXattr, Request, SessionACL,
    TimeOrNow, WriteFlags,
};
use log::{debug, error, info, warn};

pub mod streams;

use streams::Streams;

use crate::fs::{AccessMode, Attr, CachePolicy, Entry, FileKind, FsError, LmqFs, SetAttr};
use crate::storage::StorageError;

/// Largest write the kernel sends in one request (its own cap is 1 MiB).
pub const MAX_WRITE_BYTES: u32 = 1024 * 1024;

/// The errno for each error of the filesystem layer. Exhaustive, without a wildcard, so a new
/// error variant forces a decision here.
pub fn errno(error: &FsError) -> Errno {
    match error {
        FsError::NotFound(_) => Errno::ENOENT,
        FsError::InvalidInput(_) => Errno::EINVAL,
        FsError::NotPermitted(_) => Errno::EPERM,
        FsError::AccessDenied(_) => Errno::EACCES,
        FsError::BadHandle(_) => Errno::EBADF,
        FsError::NameTooLong(_) => Errno::ENAMETOOLONG,
        FsError::NotADirectory(_) => Errno::ENOTDIR,
        FsError::IsADirectory(_) => Errno::EISDIR,
        FsError::Busy(_) => Errno::EBUSY,
        FsError::ReadOnly => Errno::EROFS,
        FsError::NotImplemented(_) => Errno::EOPNOTSUPP,
        // Only a plain read of a stream; the adapter parks those instead.
        FsError::WouldBlock(_) => Errno::EAGAIN,
        // An old view generation whose segment files were deleted: the handle is stale.
        FsError::Gone(_) => Errno::ESTALE,
        FsError::Io { source, .. } => io_errno(source),
        FsError::Storage(e) => match e {
            StorageError::Io { source, .. } => io_errno(source),
            StorageError::Record(_)
            | StorageError::Corrupt { .. }
            | StorageError::CorruptIndex { .. } => Errno::EIO,
            // Name lookups turn this into NotFound; it only arrives here from a command's
            // offset argument, which is then the caller's mistake.
            StorageError::OffsetOutOfRange { .. } => Errno::EINVAL,
            StorageError::RecordTooLarge { .. } => Errno::EFBIG,
            StorageError::InvalidArgument(_)
            | StorageError::Config(_)
            | StorageError::InvalidTopicName { .. }
            | StorageError::PartitionCountDecrease { .. } => Errno::EINVAL,
            StorageError::TopicExists(_) => Errno::EEXIST,
            StorageError::UnknownTopic(_) | StorageError::UnknownPartition { .. } => Errno::ENOENT,
            // Never raised while serving (the lock is taken before mounting).
            StorageError::DataDirLocked { .. } => Errno::EBUSY,
            // The daemon is shutting down.
            StorageError::Closed => Errno::ESHUTDOWN,
            StorageError::Unsupported(_) => Errno::EOPNOTSUPP,
            // A retry may succeed (broker restarting, leader moving): EAGAIN tells the caller
            // so; anything else from the cluster is an I/O error.
            StorageError::Cluster {
                retriable: true, ..
            } => Errno::EAGAIN,
            StorageError::Cluster {
                retriable: false, ..
            } => Errno::EIO,
        },
    }
}

fn io_errno(e: &io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_i32)
}

/// Logs a refused request with its reason and returns its errno.
fn refuse(op: &str, error: FsError) -> Errno {
    let code = errno(&error);
    match &error {
        // Shells and tools probe names all the time: not worth more than debug.
        FsError::NotFound(_) => debug!("{op}: {error} (errno {})", code.code()),
        FsError::Io { .. }
        | FsError::Storage(
            StorageError::Io { .. } | StorageError::Corrupt { .. } | StorageError::Cluster { .. },
        ) => {
            error!("{op}: {error} (errno {})", code.code())
        }
        _ => info!("refused {op}: {error} (errno {})", code.code()),
    }
    code
}

/// The `fuser::Filesystem` over [`LmqFs`].
pub struct FuseAdapter {
    fs: Arc<LmqFs>,
    /// Parked reads and polls of `follow/` streams.
    streams: Arc<Streams>,
    uid: u32,
    gid: u32,
    /// Set by [`start`] once the session exists; taken by `destroy` (see there).
    unmounter: Arc<Mutex<Option<fuser::SessionUnmounter>>>,
    /// Whether the kernel granted FUSE passthrough (set at `init`).
    passthrough: AtomicBool,
    /// The kernel's backing files of passthrough opens (see [`FuseAdapter::open_passthrough`]).
    backing: Mutex<Backing>,
}

/// Backing files registered with the kernel for passthrough opens. The kernel refuses two
/// different backing files on one inode at once, so every open of an inode shares the first
/// one's registration until its last open is released.
#[derive(Default)]
struct Backing {
    /// By inode: the registration and how many open handles use it.
    by_ino: HashMap<u64, (BackingId, usize)>,
    /// The inode of each open handle that uses one.
    handles: HashMap<u64, u64>,
}

impl FuseAdapter {
    pub fn new(fs: Arc<LmqFs>, streams: Arc<Streams>, uid: u32, gid: u32) -> FuseAdapter {
        FuseAdapter {
            fs,
            streams,
            uid,
            gid,
            unmounter: Arc::new(Mutex::new(None)),
            passthrough: AtomicBool::new(false),
            backing: Mutex::new(Backing::default()),
        }
    }

    /// Answers an open of a segment file: with FUSE passthrough (the kernel reads the segment
    /// file itself, at the speed of a plain file) when the kernel granted it and lets us
    /// register the file (it needs `CAP_SYS_ADMIN`), else `direct_io` reads served by us.
    fn open_passthrough(&self, ino: u64, fh: u64, reply: ReplyOpen) {
        let fallback = FopenFlags::FOPEN_DIRECT_IO;
        if !self.passthrough.load(Ordering::Relaxed) {
            return reply.opened(FileHandle(fh), fallback);
        }
        let mut guard = self.backing.lock().unwrap_or_else(|e| e.into_inner());
        let backing = &mut *guard;
        let entry = match backing.by_ino.entry(ino) {
            MapEntry::Occupied(entry) => entry.into_mut(),
            MapEntry::Vacant(vacant) => {
                let registered = self
                    .fs
                    .passthrough_file(fh)
                    .map_err(|e| e.to_string())
                    .and_then(|file| reply.open_backing(&file).map_err(|e| e.to_string()));
                match registered {
                    Ok(id) => vacant.insert((id, 0)),
                    Err(e) => {
                        // Not permitted (not root) or not supported by the backing
                        // filesystem: serve this and every later open ourselves.
                        info!(
                            "segment files are read through the daemon: passthrough refused ({e})"
                        );
                        self.passthrough.store(false, Ordering::Relaxed);
                        return reply.opened(FileHandle(fh), fallback);
                    }
                }
            }
        };
        entry.1 += 1;
        backing.handles.insert(fh, ino);
        reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &entry.0);
    }

    /// Drops a released handle's use of its backing file, and the registration with its last.
    fn release_passthrough(&self, fh: u64) {
        let mut backing = self.backing.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ino) = backing.handles.remove(&fh) else {
            return;
        };
        if let Some((_, users)) = backing.by_ino.get_mut(&ino) {
            *users -= 1;
            if *users == 0 {
                backing.by_ino.remove(&ino);
            }
        }
    }

    fn file_attr(&self, attr: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(attr.ino),
            size: attr.size,
            blocks: attr.size.div_ceil(512),
            atime: attr.mtime,
            mtime: attr.mtime,
            ctime: attr.mtime,
            crtime: attr.mtime,
            kind: match attr.kind {
                FileKind::Directory => FileType::Directory,
                FileKind::RegularFile => FileType::RegularFile,
            },
            perm: attr.perm,
            nlink: attr.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: attr.blksize,
            flags: 0,
        }
    }

    fn reply_entry(&self, entry: Entry, reply: ReplyEntry) {
        reply.entry(&entry.ttl, &self.file_attr(&entry.attr), Generation(0));
    }
}

fn access_mode(flags: OpenFlags) -> AccessMode {
    match flags.acc_mode() {
        OpenAccMode::O_RDONLY => AccessMode::Read,
        OpenAccMode::O_WRONLY => AccessMode::Write,
        OpenAccMode::O_RDWR => AccessMode::ReadWrite,
    }
}

/// `O_TRUNC`, which reaches `open` because of `FUSE_ATOMIC_O_TRUNC`.
fn truncates(flags: OpenFlags) -> bool {
    flags.0 & libc::O_TRUNC != 0
}

fn fopen_flags(cache: CachePolicy) -> FopenFlags {
    match cache {
        CachePolicy::DirectIo => FopenFlags::FOPEN_DIRECT_IO,
        CachePolicy::KeepCache => FopenFlags::FOPEN_KEEP_CACHE,
        CachePolicy::PageCache => FopenFlags::empty(),
        CachePolicy::Passthrough => FopenFlags::FOPEN_DIRECT_IO,
        CachePolicy::Stream => {
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE | FopenFlags::FOPEN_STREAM
        }
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_WRITE_BYTES) {
            let _ = config.set_max_write(max);
        }
        if let Err(max) = config.set_max_readahead(MAX_WRITE_BYTES) {
            let _ = config.set_max_readahead(max);
        }
        // Segment files are read by the kernel itself where it can (see `open_passthrough`);
        // a depth of 2 lets their data directory be on a stacked filesystem (overlayfs).
        if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
        }
        // O_TRUNC arrives as an open flag (ignored) rather than a separate truncate;
        // lookups in one directory may run in parallel.
        for flag in [
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            if config.capabilities().contains(flag) {
                let _ = config.add_capabilities(flag);
            }
        }
        Ok(())
    }

    /// The session is over (the kernel let go of the mount, or [`Running::unmount`] ran).
    /// fuser unmounts once more when the session ends, which after a plain `umount` fails
    /// with EINVAL and logs a warning; taking its unmounter here does that step instead, where
    /// "not mounted any more" is the expected outcome of a clean unmount and stays quiet.
    fn destroy(&mut self) {
        let unmounter = self
            .unmounter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut unmounter) = unmounter {
            match unmounter.unmount() {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    debug!("session ended; the mount was already gone ({e})")
                }
                Err(e) => warn!("unmount after the session ended failed: {e}"),
            }
        }
    }

    /// No file of the interface is a terminal or takes control requests: ENOTTY, which is
    /// what `isatty()` (TCGETS) and other probes of regular files expect, without a log line.
    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        debug!("ioctl {cmd:#x} on inode {ino}: ENOTTY");
        reply.error(Errno::ENOTTY);
    }

    /// No extended attributes. ENOSYS (not ENODATA) makes the kernel stop asking for the rest
    /// of the mount, so a write does not cost a `security.capability` lookup each time; the
    /// first ask is expected and not logged.
    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, _size: u32, reply: ReplyXattr) {
        debug!("getxattr {name:?} on inode {ino}: no extended attributes");
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, _size: u32, reply: ReplyXattr) {
        debug!("listxattr on inode {ino}: no extended attributes");
        reply.error(Errno::ENOSYS);
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name) {
            Ok(entry) => self.reply_entry(entry, reply),
            Err(e) => reply.error(refuse(&format!("lookup {name:?} in inode {parent}"), e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0, fh.map(|f| f.0)) {
            Ok(entry) => reply.attr(&entry.ttl, &self.file_attr(&entry.attr)),
            Err(e) => reply.error(refuse(&format!("getattr inode {ino}"), e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = SetAttr {
            size,
            mode,
            uid,
            gid,
            times: atime.is_some() || mtime.is_some(),
        };
        match self.fs.setattr(ino.0, fh.map(|f| f.0), change) {
            Ok(entry) => reply.attr(&entry.ttl, &self.file_attr(&entry.attr)),
            Err(e) => reply.error(refuse(&format!("setattr inode {ino}"), e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.fs.mkdir(parent.0, name) {
            Ok(entry) => self.reply_entry(entry, reply),
            Err(e) => reply.error(refuse(&format!("mkdir {name:?}"), e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let e = self.fs.refuse_creation(parent.0, name);
        reply.error(refuse(&format!("mknod {name:?}"), e));
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self
            .fs
            .create(parent.0, name, access_mode(OpenFlags(flags)))
        {
            Ok((entry, opened)) => reply.created(
                &entry.ttl,
                &self.file_attr(&entry.attr),
                Generation(0),
                FileHandle(opened.fh),
                fopen_flags(opened.cache),
            ),
            Err(e) => reply.error(refuse(&format!("create {name:?}"), e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(refuse(&format!("unlink {name:?}"), e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(refuse(&format!("rmdir {name:?}"), e)),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        let e = self.fs.refuse_creation(parent.0, link_name);
        reply.error(refuse(&format!("symlink {link_name:?}"), e));
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let e = self.fs.refuse_creation(newparent.0, newname);
        reply.error(refuse(&format!("link {newname:?}"), e));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let e = self
            .fs
            .rename(parent.0, name)
            .expect_err("rename is refused");
        reply.error(refuse(&format!("rename {name:?} to {newname:?}"), e));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(ino.0, access_mode(flags), truncates(flags)) {
            Ok(opened) if opened.cache == CachePolicy::Passthrough => {
                self.open_passthrough(ino.0, opened.fh, reply)
            }
            Ok(opened) => reply.opened(FileHandle(opened.fh), fopen_flags(opened.cache)),
            Err(e) => reply.error(refuse(&format!("open inode {ino}"), e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if self.streams.is_stream(fh.0).is_some() {
            return self.streams.read(fh.0, size, req.pid(), reply);
        }
        match self.fs.read(ino.0, fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(refuse(&format!("read inode {ino} at {offset}"), e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(ino.0, fh.0, offset, data, req.pid()) {
            Ok(written) => reply.written(written),
            Err(e) => reply.error(refuse(
                &format!("write of {} bytes to inode {ino}", data.len()),
                e,
            )),
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.fs.flush(ino.0, fh.0, req.pid()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(refuse(&format!("close of inode {ino}"), e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.release_passthrough(fh.0);
        match self.fs.release(ino.0, fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(refuse(&format!("release of inode {ino}"), e)),
        }
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        ph: PollNotifier,
        _events: PollEvents,
        _flags: PollFlags,
        reply: ReplyPoll,
    ) {
        match self.streams.is_stream(fh.0) {
            Some(partition) => self.streams.poll(partition, fh.0, ph, reply),
            // Every other file is always ready (never ENOSYS: the kernel would stop asking
            // for the streams too).
            None => reply.poll(
                PollEvents::POLLIN
                    | PollEvents::POLLRDNORM
                    | PollEvents::POLLOUT
                    | PollEvents::POLLWRNORM,
            ),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.fsync(ino.0, fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(refuse(&format!("fsync of inode {ino}"), e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(ino.0) {
            Ok(entries) => {
                for (i, entry) in entries.iter().enumerate().skip(offset as usize) {
                    let kind = match entry.kind {
                        FileKind::Directory => FileType::Directory,
                        FileKind::RegularFile => FileType::RegularFile,
                    };
                    if reply.add(INodeNo(entry.ino), (i + 1) as u64, kind, &entry.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(refuse(&format!("readdir inode {ino}"), e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: fuser::ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }
}

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountSettings {
    pub mountpoint: PathBuf,
    /// Shown as the mount's source (the data directory).
    pub fsname: String,
    pub allow_other: bool,
    pub allow_root: bool,
    pub read_only: bool,
    /// Worker threads serving requests.
    pub threads: usize,
}

/// A mounted, serving session.
pub struct Running {
    unmounter: fuser::SessionUnmounter,
    worker: JoinHandle<io::Result<()>>,
    streams: Arc<Streams>,
}

impl Running {
    /// Ends blocked `follow/` readers with end-of-file, then unmounts; the session ends once
    /// the kernel has let go.
    pub fn unmount(&mut self) -> io::Result<()> {
        self.streams.shutdown();
        self.unmounter.unmount()
    }

    /// Whether the session has ended (unmounted from outside, or after [`Self::unmount`]).
    pub fn is_finished(&self) -> bool {
        self.worker.is_finished()
    }

    /// Waits for the session to end.
    pub fn join(self) -> io::Result<()> {
        self.worker
            .join()
            .map_err(|_| io::Error::other("the FUSE session thread panicked"))?
    }

    /// Waits up to `timeout` for the session to end; returns whether it did.
    pub fn wait_finished(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !self.worker.is_finished() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

/// Mounts `fs` and starts serving on `settings.threads` threads. Returns once the kernel has
/// completed the FUSE handshake, so the mount is ready for requests.
pub fn start(fs: Arc<LmqFs>, settings: &MountSettings) -> io::Result<Running> {
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let streams = Streams::start(Arc::clone(&fs))?;
    let adapter = FuseAdapter::new(fs, Arc::clone(&streams), uid, gid);
    let destroy_unmounter = Arc::clone(&adapter.unmounter);
    let mut options = vec![
        MountOption::FSName(settings.fsname.clone()),
        // As a kernel option, so that the mount's type reads `fuse.lmqfs` also when the
        // kernel mount is done directly (fuser passes `Subtype` only to fusermount).
        MountOption::CUSTOM("subtype=lmqfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    options.push(if settings.read_only {
        MountOption::RO
    } else {
        MountOption::RW
    });
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = if settings.allow_other {
        SessionACL::All
    } else if settings.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(settings.threads.max(1));
    config.clone_fd = settings.threads > 1;
    let mut session = fuser::Session::new(adapter, &settings.mountpoint, &config)?;
    let unmounter = session.unmount_callable();
    *destroy_unmounter.lock().unwrap_or_else(|e| e.into_inner()) = Some(session.unmount_callable());
    let worker = std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || session.run())?;
    if worker.is_finished() {
        warn!("the FUSE session ended right after mounting");
    }
    Ok(Running {
        unmounter,
        worker,
        streams,
    })
}
