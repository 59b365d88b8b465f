//! The FUSE floor: a filesystem built with fuser, as lmqfs is, that does no work. Its root holds
//! `append` (a write is accepted and dropped) and a file for every decimal name (`0`, `1`, ...,
//! each reading as one 100-byte record), so `open`+`read`+`close` of a random `<n>` costs the
//! same kernel round trips (lookup, open, read, flush, release) as `cat <offset>` on lmqfs, and
//! nothing else. It serves on as many threads as lmqfs does.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyWrite, Request, WriteFlags,
};

/// The size of each numbered file: one 100-byte record.
pub const RECORD_BYTES: usize = 100;
const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;
const APPEND: u64 = 2;
/// `<n>` is inode `FIRST_RECORD + n`.
const FIRST_RECORD: u64 = 3;

struct Noop {
    record: Vec<u8>,
}

fn attr(ino: u64) -> FileAttr {
    let (kind, perm, size, nlink) = match ino {
        ROOT => (FileType::Directory, 0o755, 0, 2),
        APPEND => (FileType::RegularFile, 0o644, 0, 1),
        _ => (FileType::RegularFile, 0o444, RECORD_BYTES as u64, 1),
    };
    let now = SystemTime::UNIX_EPOCH;
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind,
        perm,
        nlink,
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        uid: unsafe { libc::getuid() },
        gid: unsafe { libc::getgid() },
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for Noop {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 != ROOT {
            return reply.error(Errno::ENOENT);
        }
        let ino = match name.to_str() {
            Some("append") => APPEND,
            Some(n) => match n.parse::<u64>() {
                Ok(n) => FIRST_RECORD + n,
                Err(_) => return reply.error(Errno::ENOENT),
            },
            None => return reply.error(Errno::ENOENT),
        };
        reply.entry(&TTL, &attr(ino), Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&TTL, &attr(ino.0));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // Writes go straight to the daemon, as lmqfs's `append` does; reads may use the page
        // cache (the cheapest a FUSE read can be).
        let cache = match flags.acc_mode() {
            OpenAccMode::O_RDONLY => FopenFlags::empty(),
            _ => FopenFlags::FOPEN_DIRECT_IO,
        };
        reply.opened(FileHandle(ino.0), cache);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let start = (offset as usize).min(self.record.len());
        let end = (start + size as usize).min(self.record.len());
        reply.data(&self.record[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }
}

/// Mounts the no-op filesystem at `mnt` and serves until it is unmounted.
pub fn serve(mnt: &Path) -> io::Result<()> {
    let mut record = vec![b'x'; RECORD_BYTES];
    record[RECORD_BYTES - 1] = b'\n';
    // The thread count lmqfs picks for itself (two per CPU it may use, 4 to 16).
    let threads = std::thread::available_parallelism()
        .map_or(4, |n| n.get() * 2)
        .clamp(4, 16);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("noop".into()),
        MountOption::DefaultPermissions,
        MountOption::RW,
    ];
    config.n_threads = Some(threads);
    config.clone_fd = threads > 1;
    fuser::Session::new(Noop { record }, mnt, &config)?.run()
}
