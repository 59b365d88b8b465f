//! The engine's one I/O seam: every file operation of segments, indexes, checkpoints and the
//! clean-shutdown marker goes through a [`FileSystem`], so tests can make them fail or lose
//! what a power cut would lose (after raft-engine's `FileSystem` trait).
//!
//! The file system is process-wide ([`file_system`]): the real one ([`RealFs`]) unless a test
//! installed another with [`set_file_system`] before the engine's first file operation. The
//! fault-injecting one, [`FaultFs`], only acts on the directories it was told about, so tests
//! running side by side in one process do not see each other's faults.
//!
//! Not covered: reads of closed segments by the cleaner and `dump-log` (`BatchReader`), which
//! open the file read-only and only read, and the topic metadata of the log manager.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use memmap2::{MmapMut, MmapOptions};

/// How [`FileSystem::open`] opens a file: always readable and writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The file must exist.
    Existing,
    /// Created if missing; existing content kept.
    Create,
    /// Created if missing, emptied if present.
    Truncate,
}

/// An open file of the engine.
pub trait FileHandle: Send + Sync + std::fmt::Debug {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`; on error some prefix of it may have been written.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Writes the concatenation of `bufs` at `offset`, as [`Self::write_all_at`] would (the
    /// same faults apply); the real file does it with `pwritev`, without joining them first.
    fn write_all_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
        match bufs {
            [one] => self.write_all_at(one, offset),
            _ => {
                let mut joined = Vec::with_capacity(bufs.iter().map(|b| b.len()).sum());
                for buf in bufs {
                    joined.extend_from_slice(buf);
                }
                self.write_all_at(&joined, offset)
            }
        }
    }
    /// fdatasync.
    fn sync_data(&self) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;
    /// Reserves disk blocks for `[offset, offset + len)` (posix_fallocate), so writes through
    /// a mapping of them cannot fail later (a full disk would otherwise be a SIGBUS).
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Maps the first `len` bytes read-write.
    fn map(&self, len: usize) -> io::Result<MmapMut>;
}

/// The file operations the engine uses.
pub trait FileSystem: Send + Sync + std::fmt::Debug {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// fsyncs a directory, making creations, renames and removals in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

static FILE_SYSTEM: OnceLock<Arc<dyn FileSystem>> = OnceLock::new();

/// The process's file system (the real one unless a test installed another).
pub fn file_system() -> &'static dyn FileSystem {
    FILE_SYSTEM.get_or_init(|| Arc::new(RealFs)).as_ref()
}

/// Installs `fs` as the process's file system. Only the first call before any file operation
/// has an effect; returns whether `fs` is now in use.
#[doc(hidden)]
pub fn set_file_system(fs: Arc<dyn FileSystem>) -> bool {
    let _ = FILE_SYSTEM.set(Arc::clone(&fs));
    let current: *const dyn FileSystem = file_system();
    std::ptr::addr_eq(current, Arc::as_ptr(&fs))
}

/// Most slices one `pwritev` takes (Linux's `IOV_MAX`).
const MAX_IOVECS: usize = 1024;

/// The operating system's files.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl FileHandle for RealFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn write_all_vectored_at(&self, bufs: &[IoSlice<'_>], mut offset: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut slices = bufs.to_vec();
        let mut rest = &mut slices[..];
        // Drops leading empty slices, so `rest` empties exactly when all is written.
        IoSlice::advance_slices(&mut rest, 0);
        while !rest.is_empty() {
            let count = rest.len().min(MAX_IOVECS);
            // SAFETY: `IoSlice` is ABI-compatible with `iovec` (std guarantees it on Unix), and
            // the `count` slices it points to outlive the call.
            let written = unsafe {
                libc::pwritev(
                    self.0.as_raw_fd(),
                    rest.as_ptr().cast::<libc::iovec>(),
                    count as libc::c_int,
                    offset as libc::off_t,
                )
            };
            match written {
                -1 => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => {
                    offset += n as u64;
                    IoSlice::advance_slices(&mut rest, n as usize);
                }
            }
        }
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on a descriptor this handle owns.
        let rc = unsafe { libc::posix_fallocate(self.0.as_raw_fd(), offset as i64, len as i64) };
        match rc {
            0 => Ok(()),
            // A file system without it (some network ones): writes then allocate as they go.
            libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
    fn map(&self, len: usize) -> io::Result<MmapMut> {
        // SAFETY: the engine maps only files of its own locked data directory, which no other
        // process writes, and keeps the file at least `len` long while the mapping lives.
        unsafe { MmapOptions::new().len(len).map_mut(&self.0) }
    }
}

fn open_real(path: &Path, mode: OpenMode) -> io::Result<RealFile> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(mode != OpenMode::Existing)
        .truncate(mode == OpenMode::Truncate)
        .open(path)?;
    Ok(RealFile(file))
}

impl FileSystem for RealFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
        Ok(Box::new(open_real(path, mode)?))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// An operation [`FaultFs`] can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A write of file data (a torn one writes a prefix first, see [`FaultFs::fail`]).
    Write,
    /// fdatasync of a file or fsync of a directory.
    Sync,
    Rename,
    /// Mapping an index, and reserving its blocks.
    Map,
}

/// A file system over the real one that fails chosen operations and can simulate a power cut
/// (the LazyFS method: whatever was written but not fsynced is lost), in the directories
/// registered with [`FaultFs::watch`] only.
///
/// Power-cut model: each file's content as of its last fsync is kept; [`FaultFs::power_cut`]
/// puts every watched file back to it (a file never fsynced becomes empty), and undoes the
/// creations, renames and removals not followed by an fsync of their directory, after which
/// the directory is as a machine would find it after losing power. Writes through an index's
/// mapping are not seen: an index keeps what it had at its last resize or fsync of its
/// directory entry (usually nothing), which recovery and the index checks must cope with.
#[derive(Debug, Default)]
pub struct FaultFs {
    state: Arc<Mutex<FaultState>>,
}

#[derive(Debug, Default)]
struct FaultState {
    watched: Vec<PathBuf>,
    /// Failures to inject: (operation, directory, errno, how many more times, bytes a torn
    /// write still writes).
    faults: Vec<Fault>,
    /// Content as of the last fsync of each file written since it was watched.
    durable: HashMap<PathBuf, Vec<u8>>,
    /// Files written since their last fsync.
    dirty: HashMap<PathBuf, ()>,
    /// Creations, renames and removals not yet made durable by an fsync of their directory,
    /// oldest first.
    dir_ops: Vec<DirOp>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Created(PathBuf),
    Renamed {
        from: PathBuf,
        to: PathBuf,
    },
    /// With the content a power cut brings back.
    Removed(PathBuf, Vec<u8>),
}

impl DirOp {
    fn dir(&self) -> Option<&Path> {
        match self {
            DirOp::Created(p) | DirOp::Removed(p, _) => p.parent(),
            DirOp::Renamed { to, .. } => to.parent(),
        }
    }
}

#[derive(Debug, Clone)]
struct Fault {
    op: Op,
    dir: PathBuf,
    errno: i32,
    times: usize,
    torn_bytes: Option<usize>,
}

impl FaultState {
    fn watches(&self, path: &Path) -> bool {
        self.watched.iter().any(|d| path.starts_with(d))
    }

    /// The injected failure of `op` on `path`, if one is due (it is then used up).
    fn take(&mut self, op: Op, path: &Path) -> Option<Fault> {
        let i = self
            .faults
            .iter()
            .position(|f| f.op == op && path.starts_with(&f.dir) && f.times > 0)?;
        let fault = self.faults[i].clone();
        self.faults[i].times -= 1;
        if self.faults[i].times == 0 {
            self.faults.remove(i);
        }
        Some(fault)
    }
}

impl FaultFs {
    pub fn new() -> FaultFs {
        FaultFs::default()
    }

    /// A handle on the same state (to install one and drive the other).
    pub fn share(&self) -> FaultFs {
        FaultFs {
            state: Arc::clone(&self.state),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts tracking writes and fsyncs under `dir` (for [`Self::power_cut`]).
    pub fn watch(&self, dir: &Path) {
        self.lock().watched.push(dir.to_path_buf());
    }

    /// Makes the next `times` operations `op` under `dir` fail with `errno`. A failing
    /// [`Op::Write`] first writes `torn_bytes` bytes of its buffer, when given (a torn write).
    pub fn fail(&self, op: Op, dir: &Path, errno: i32, times: usize, torn_bytes: Option<usize>) {
        self.lock().faults.push(Fault {
            op,
            dir: dir.to_path_buf(),
            errno,
            times,
            torn_bytes,
        });
    }

    /// Removes every pending failure under `dir` (the disk has space again, the device is back).
    pub fn heal(&self, dir: &Path) {
        self.lock().faults.retain(|f| !f.dir.starts_with(dir));
    }

    /// Loses everything written under `dir` since each file's last fsync, as a power cut would.
    /// The engine must not be using `dir` (drop its `Log` first, without closing it).
    pub fn power_cut(&self, dir: &Path) -> io::Result<()> {
        self.power_cut_torn(dir, 0)
    }

    /// [`Self::power_cut`] in the middle of a write: of what each file had beyond its fsynced
    /// content, the first `kept_bytes` bytes reached the disk (a torn last write, when that
    /// was one write appended to the fsynced content).
    pub fn power_cut_torn(&self, dir: &Path, kept_bytes: usize) -> io::Result<()> {
        let mut state = self.lock();
        let dirty: Vec<PathBuf> = state
            .dirty
            .keys()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect();
        for path in dirty {
            state.dirty.remove(&path);
            if !path.exists() {
                continue;
            }
            let durable = state.durable.get(&path).cloned().unwrap_or_default();
            let current = std::fs::read(&path)?;
            let content = if current.starts_with(&durable) {
                &current[..current.len().min(durable.len() + kept_bytes)]
            } else {
                &durable[..]
            };
            std::fs::write(&path, content)?;
        }
        let (undo, keep): (Vec<DirOp>, Vec<DirOp>) = std::mem::take(&mut state.dir_ops)
            .into_iter()
            .partition(|op| op.dir().is_some_and(|d| d.starts_with(dir)));
        state.dir_ops = keep;
        for op in undo.into_iter().rev() {
            match op {
                DirOp::Created(path) => {
                    let _ = std::fs::remove_file(&path);
                    state.durable.remove(&path);
                }
                DirOp::Renamed { from, to } => {
                    if to.exists() {
                        std::fs::rename(&to, &from)?;
                    }
                    if let Some(content) = state.durable.remove(&to) {
                        state.durable.insert(from, content);
                    }
                }
                DirOp::Removed(path, content) => {
                    std::fs::write(&path, &content)?;
                    state.durable.insert(path, content);
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct FaultFile {
    file: RealFile,
    path: PathBuf,
    state: Arc<Mutex<FaultState>>,
}

impl FaultFile {
    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn injected(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

impl FileHandle for FaultFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.lock();
        if let Some(fault) = state.take(Op::Write, &self.path) {
            if let Some(n) = fault.torn_bytes {
                self.file.write_all_at(&buf[..n.min(buf.len())], offset)?;
                if state.watches(&self.path) {
                    state.dirty.insert(self.path.clone(), ());
                }
            }
            return Err(injected(fault.errno));
        }
        self.file.write_all_at(buf, offset)?;
        if state.watches(&self.path) {
            state.dirty.insert(self.path.clone(), ());
        }
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.lock();
        if let Some(fault) = state.take(Op::Sync, &self.path) {
            return Err(injected(fault.errno));
        }
        self.file.sync_data()?;
        if state.watches(&self.path) {
            let content = std::fs::read(&self.path)?;
            state.durable.insert(self.path.clone(), content);
            state.dirty.remove(&self.path);
        }
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        let mut state = self.lock();
        if state.watches(&self.path) {
            state.dirty.insert(self.path.clone(), ());
        }
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        self.file.size()
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        if let Some(fault) = self.lock().take(Op::Map, &self.path) {
            return Err(injected(fault.errno));
        }
        self.file.allocate(offset, len)
    }
    fn map(&self, len: usize) -> io::Result<MmapMut> {
        if let Some(fault) = self.lock().take(Op::Map, &self.path) {
            return Err(injected(fault.errno));
        }
        self.file.map(len)
    }
}

impl FileSystem for FaultFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
        let existed = path.exists();
        let file = open_real(path, mode)?;
        let mut state = self.lock();
        if state.watches(path) && (!existed || mode == OpenMode::Truncate) {
            // New (or emptied) content is not durable until an fsync.
            state.durable.insert(path.to_path_buf(), Vec::new());
            state.dirty.insert(path.to_path_buf(), ());
        }
        if state.watches(path) && !existed {
            state.dir_ops.push(DirOp::Created(path.to_path_buf()));
        }
        drop(state);
        Ok(Box::new(FaultFile {
            file,
            path: path.to_path_buf(),
            state: Arc::clone(&self.state),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if let Some(fault) = state.take(Op::Rename, from) {
            return Err(injected(fault.errno));
        }
        // A rename over an existing file: a power cut brings the old one back.
        if state.watches(to) && to.exists() {
            let content = match state.durable.get(to) {
                Some(content) => content.clone(),
                None => std::fs::read(to)?,
            };
            state
                .dir_ops
                .push(DirOp::Removed(to.to_path_buf(), content));
        }
        std::fs::rename(from, to)?;
        if state.watches(to) {
            state.dir_ops.push(DirOp::Renamed {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
            });
        }
        if let Some(content) = state.durable.remove(from) {
            state.durable.insert(to.to_path_buf(), content);
        }
        if state.dirty.remove(from).is_some() {
            state.dirty.insert(to.to_path_buf(), ());
        }
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let content = if state.watches(path) {
            match state.durable.get(path) {
                Some(content) => Some(content.clone()),
                None => std::fs::read(path).ok(),
            }
        } else {
            None
        };
        std::fs::remove_file(path)?;
        state.durable.remove(path);
        state.dirty.remove(path);
        if let Some(content) = content {
            state
                .dir_ops
                .push(DirOp::Removed(path.to_path_buf(), content));
        }
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if let Some(fault) = state.take(Op::Sync, dir) {
            return Err(injected(fault.errno));
        }
        RealFs.sync_dir(dir)?;
        state.dir_ops.retain(|op| op.dir() != Some(dir));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More slices than one `pwritev` takes, empty ones among them (first and last too).
    fn pieces() -> (Vec<Vec<u8>>, Vec<u8>) {
        let pieces: Vec<Vec<u8>> = (0..3000)
            .map(|i: usize| vec![(i % 251) as u8; if i % 7 == 0 { 0 } else { i % 300 }])
            .chain([Vec::new()])
            .collect();
        let joined = pieces.concat();
        (pieces, joined)
    }

    #[test]
    fn a_vectored_write_writes_the_concatenation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = RealFs.open(&path, OpenMode::Create).unwrap();
        let (pieces, joined) = pieces();
        let slices: Vec<IoSlice> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        file.write_all_at(b"head", 0).unwrap();
        file.write_all_vectored_at(&slices, 4).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            [&b"head"[..], &joined].concat()
        );
    }

    #[test]
    fn a_torn_vectored_write_keeps_a_prefix_of_the_concatenation() {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultFs::new();
        faults.watch(dir.path());
        faults.fail(Op::Write, dir.path(), libc::EIO, 1, Some(1000));
        let path = dir.path().join("f");
        let file = faults.open(&path, OpenMode::Create).unwrap();
        let (pieces, joined) = pieces();
        let slices: Vec<IoSlice> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        let err = file.write_all_vectored_at(&slices, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        assert_eq!(std::fs::read(&path).unwrap(), joined[..1000]);
    }
}
