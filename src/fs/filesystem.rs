//! [`LmqFs`]: every operation of the file interface, as plain functions over inode numbers.
//!
//! The FUSE adapter calls exactly one method per callback and maps the result; nothing here
//! knows about `fuser`. Tests drive it directly.
//!
//! Caching decisions (the adapter passes them on to the kernel):
//! - Every file but the record files is opened `direct_io` ([`CachePolicy::DirectIo`]): each
//!   `read()` reaches us and is answered from the log as it is now, and writes to `append` go
//!   straight to storage. Record files (`<offset>`, `<offset>.json`) never change while they
//!   exist, so they are read through the page cache, dropped at each open
//!   ([`CachePolicy::PageCache`]), and their entries and attributes live [`RECORD_TTL`]: a
//!   `cat <offset>` costs a lookup, an open and one read.
//!   Views (`log`, `log.jsonl`, `from/*`) are not served from the page cache even though a
//!   generation's bytes below any size never change: the last page of a growing view is
//!   partial, the kernel zero-fills the rest of a page a read answered short, and its
//!   `filemap_read` checks `i_size` only *after* taking the page, so a reader holding that page
//!   while another process's `stat` grows the size copies the zeros as data. Invalidating
//!   the page (our notifier, or the kernel's own invalidation on a size change) cannot take
//!   back a page a reader already holds. `tests/mount_concurrency.rs` provokes exactly this
//!   (with `FOPEN_KEEP_CACHE` both its tests see zero bytes, the first in about half of its
//!   runs). An exact cached design would have to put the real bytes into that page before
//!   any reader can see a size past it, and the kernel offers no way to: `FUSE_NOTIFY_STORE`
//!   publishes the new size first and copies the bytes into the page after (its handler in
//!   `fs/fuse/dev.c` calls `fuse_write_update_attr` before `fuse_copy_folio`), which leaves
//!   the same window open. So views stay `direct_io`, and their speed comes from the daemon.
//! - Other files' attributes and entries have a zero TTL ([`FILE_TTL`]): every `stat`, every lookup
//!   of `log` (which resolves to the current generation) and every read past the kernel's
//!   cached size ask us, which is how `tail -f` sees growth and how a new open sees the
//!   current log start.
//! - Views and append files report an `st_blksize` of [`BULK_BLKSIZE`] (1 MiB), so `cat` and
//!   `cp` move 1 MiB per call instead of 128 KiB (one FUSE round trip each).
//! - Directories have a short TTL ([`DIR_TTL`]); structural changes made through the mount
//!   (mkdir, rmdir) invalidate the kernel's entries themselves.
//!
//! Lock order: `inodes`, `handles`, `views` and `outcomes` are leaf locks: none is held while
//! taking another or while calling into storage, except `views` around creating a map
//! (which does no I/O) and a handle's own `pending` mutex around its append.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use log::{debug, info};

use crate::fs::append::{AppendFormat, PendingLine};
use crate::fs::caller::process_of;
use crate::fs::control::{self, OutcomeLog, Scope};
use crate::fs::error::{FsError, FsResult};
use crate::fs::follow::{StreamListener, StreamRead, StreamState};
use crate::fs::groups::{ConsumeHandle, ConsumerClaims};
use crate::fs::inode::{InodeTable, ROOT_INO};
use crate::fs::json::record_json_line;
use crate::fs::keys::KeyBuffer;
use crate::fs::node::{
    self, is_segment_file_name, parse_from_entry, parse_partition, parse_partition_entry,
    parse_topic_file, partition_dir_name, partition_file_name, topic_file_name, Node, PartitionDir,
    PartitionEntry, PartitionFile, PartitionId, RecordFormat, TopicFile, ViewId, ViewKind,
};
use crate::fs::node::{parse_follow_entry, FollowFrom};
use crate::fs::stats::stats_json;
use crate::fs::time::parse_timestamp_ms;
use crate::fs::view::{ReadState, ViewMap};
use crate::storage::{Partition, Storage, StorageError};

/// Attribute and entry lifetime of directories.
pub const DIR_TTL: Duration = Duration::from_secs(1);
/// Attribute and entry lifetime of files: zero, so sizes are never stale.
pub const FILE_TTL: Duration = Duration::ZERO;
/// Attribute and entry lifetime of record files (`<offset>`, `<offset>.json`): a record's
/// content never changes while it exists, so the kernel may keep its entry and size; only its
/// removal (retention, compaction, `delete-records`, `rmdir` of the topic) can go unseen for
/// this long, and then an `open` still asks us and gets ENOENT.
pub const RECORD_TTL: Duration = Duration::from_secs(1);
/// `st_blksize` of views and append files: tools size their reads and writes by it.
pub const BULK_BLKSIZE: u32 = 1024 * 1024;
/// `st_blksize` of every other file and directory.
pub const DEFAULT_BLKSIZE: u32 = 4096;

/// The root `README`.
pub const README_TEXT: &str = "\
lmqfs: a Kafka-style commit log as files.

  mkdir TOPIC                        create a topic (mount's default config and partitions)
  rmdir TOPIC  (or rm -rf TOPIC)     delete a topic and its data
  control                            write: flush | retention | compact  (every topic)
  TOPIC/config                       read: effective config; write key=value lines to change
  TOPIC/partitions                   read: count; write a larger number to add partitions
  TOPIC/control                      write: roll | flush | retention | compact
  TOPIC/P/append                     write: one record per line
  TOPIC/P/append.jsonl               write: one JSON record per line:
                                     {\"key\":..,\"value\":..,\"headers\":{..},\"timestamp\":ms}
  TOPIC/P/OFFSET                     read: the value of the record at OFFSET
  TOPIC/P/OFFSET.json                read: the record at OFFSET as JSON
  TOPIC/P/log, log.jsonl             read: every record, one per line (tail -f works)
  TOPIC/P/from/OFFSET[.jsonl]        read: like log, from OFFSET on
  TOPIC/P/follow/OFFSET, follow/end  read: a stream that waits for new records
                                     (also .jsonl); poll/select wake on data
  TOPIC/P/time/T                     read: first offset with timestamp >= T (ms or RFC 3339)
  TOPIC/P/keys/                      ls: live keys; cat KEY: latest value;
                                     echo v > KEY: append a keyed record (on close);
                                     rm KEY: append a tombstone
  TOPIC/P/groups/                    ls: consumer groups that committed; cat GROUP: its
                                     committed offset; echo N > GROUP: commit offset N
  TOPIC/P/consume/GROUP              read: records from GROUP's committed offset to the end;
                                     close commits what was read (one reader per group)
  TOPIC/P/stats                      read: JSON facts about the partition, last cleanup runs
  TOPIC/P/control                    write: roll | flush | retention | compact
                                            | delete-records OFFSET
  TOPIC/P/segments/                  read: the raw segment and index files

Cleanup: retention deletes old segments (retention.ms, retention.bytes, delete-records);
compaction (cleanup.policy=compact) keeps the latest record per key, offsets unchanged.
Both run in the background and on command; a command returns when it finished.
A compacted topic refuses records without a key (EINVAL): use keys/ or append.jsonl.
An open log keeps its byte positions across cleanup; a new open sees the log as it is now.

Examples:
  mkdir orders && echo 'hello' > orders/0/append && cat orders/0/log
  tail -f orders/0/log.jsonl | jq .value
  mkdir users && echo cleanup.policy=compact > users/config
  echo alice > users/0/keys/u1 && cat users/0/keys/u1 && ls users/0/keys
  echo compact > users/0/control && cat users/0/stats
  cat orders/0/consume/nightly | ./process   # again later: only what is new
";

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    RegularFile,
}

/// What `stat` shows. Owner and timestamps other than `mtime` are the adapter's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    pub perm: u16,
    pub size: u64,
    pub nlink: u32,
    pub mtime: SystemTime,
    /// The I/O size tools should use (`st_blksize`).
    pub blksize: u32,
}

/// A looked-up or stat-ed node with how long the kernel may cache it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

/// How the kernel should cache an open file's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// Bypass the page cache: every read and write reaches us.
    DirectIo,
    /// Keep cached pages across opens. Unused for now: see the module docs on views.
    KeepCache,
    /// Read through the page cache, dropped at every open: for files whose content is fixed
    /// when they are opened and never grows while open (record files), so a reader's short
    /// last read and its end-of-file read cost no round trip.
    PageCache,
    /// A stream: no page cache, no seeking (`follow/`).
    Stream,
    /// Reads go straight from the kernel to the file [`LmqFs::passthrough_file`] gives
    /// (`segments/`): FUSE passthrough where the kernel and our privileges allow it, else
    /// `direct_io` reads answered by us from the same file.
    Passthrough,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    pub cache: CachePolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMode {
    Read,
    Write,
    ReadWrite,
}

impl AccessMode {
    pub fn reads(self) -> bool {
        matches!(self, AccessMode::Read | AccessMode::ReadWrite)
    }
    pub fn writes(self) -> bool {
        matches!(self, AccessMode::Write | AccessMode::ReadWrite)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: FileKind,
    pub name: String,
}

/// The changes a `setattr` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// atime/mtime changes (`touch`): accepted and ignored.
    pub times: bool,
}

/// Mount-wide settings of the filesystem layer.
#[derive(Debug, Clone, Default)]
pub struct FsOptions {
    pub read_only: bool,
}

/// Identifies one position map: a partition's view kind at one generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ViewKey {
    partition: PartitionId,
    kind: ViewKind,
    generation: u64,
}

/// An open file.
pub(super) enum Handle {
    /// Content rendered at open (README, stats, `<offset>`, `time/<T>`, ...).
    Snapshot(Vec<u8>),
    /// `control`, `config`, `partitions`: each write is applied at once; reads see the
    /// content rendered at open.
    Writable {
        node: Node,
        snapshot: Vec<u8>,
    },
    Append {
        partition: PartitionId,
        log: Arc<dyn Partition>,
        format: AppendFormat,
        pending: Mutex<PendingLine>,
        /// The process whose write left the pending line (see [`LmqFs::flush`]).
        writer: Mutex<Writer>,
    },
    View {
        map: Arc<ViewMap>,
        /// Where this view starts in the map (non-zero for `from/<offset>`).
        base: u64,
        reader: Mutex<ReadState>,
    },
    Segment {
        file: std::fs::File,
        name: String,
    },
    /// `follow/...`: see [`crate::fs::follow`].
    Stream {
        partition: PartitionId,
        log: Arc<dyn Partition>,
        kind: ViewKind,
        state: Mutex<StreamState>,
    },
    /// `keys/<key>`: see [`crate::fs::keys`].
    Key {
        partition: PartitionId,
        log: Arc<dyn Partition>,
        key: Arc<str>,
        writable: bool,
        buffer: Mutex<KeyBuffer>,
    },
    /// `consume/<group>`: see [`crate::fs::groups`].
    Consume(ConsumeHandle),
}

/// The filesystem semantics over a [`Storage`] (the embedded engine, or a cluster).
/// Shareable across threads.
pub struct LmqFs {
    storage: Arc<dyn Storage>,
    options: FsOptions,
    started: SystemTime,
    pub(super) inodes: Mutex<InodeTable>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    views: Mutex<HashMap<ViewKey, Arc<ViewMap>>>,
    /// Recent control outcomes by scope: "" (root), "topic", "topic/partition".
    pub(super) outcomes: Mutex<HashMap<String, OutcomeLog>>,
    /// The open `consume/<group>` files' (partition, group) pairs (a leaf lock).
    pub(super) consumers: Mutex<ConsumerClaims>,
    /// Told about appends and deleted topics, for `follow/` readers (see [`crate::fs::follow`]).
    pub(super) stream_listener: Mutex<Option<Arc<dyn StreamListener>>>,
    /// The record last read by offset (a leaf lock): a `cat <offset>` asks for it at lookup,
    /// at open and for the attributes.
    last_record: Mutex<Option<RecordMemo>>,
}

/// One record read by offset, valid while its partition object is the same one (not a topic
/// deleted and created again) and in the same view generation (nothing removed since).
struct RecordMemo {
    log: std::sync::Weak<dyn Partition>,
    generation: u64,
    offset: i64,
    record: crate::storage::Record,
}

/// The process (thread group) that wrote last through an append handle, known from the thread
/// id a request carries.
#[derive(Debug, Default)]
pub(super) struct Writer {
    /// The thread of the last write, and its process when it could be found.
    thread: u32,
    process: Option<u32>,
}

impl Writer {
    /// A write by thread `caller` left a pending line.
    fn wrote(&mut self, caller: u32) {
        if caller != self.thread || self.process.is_none() {
            self.thread = caller;
            self.process = process_of(caller);
        }
    }

    /// Whether thread `caller` belongs to the process that wrote last. Unknown threads or
    /// processes count as the writer, so the line is appended at that close as it always was.
    fn is_writer(&self, caller: u32) -> bool {
        if caller == 0 || caller == self.thread || self.thread == 0 {
            return true;
        }
        match (self.process, process_of(caller)) {
            (Some(writer), Some(closer)) => writer == closer,
            _ => true,
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every structure behind these locks stays consistent across a panic in another request
    // (each update is a single insert/remove), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn name_str(name: &OsStr) -> FsResult<&str> {
    std::str::from_utf8(name.as_bytes()).map_err(|_| FsError::not_found("a name that is not UTF-8"))
}

impl LmqFs {
    pub fn new(storage: Arc<dyn Storage>, options: FsOptions) -> LmqFs {
        LmqFs {
            storage,
            options,
            started: SystemTime::now(),
            inodes: Mutex::new(InodeTable::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            views: Mutex::new(HashMap::new()),
            outcomes: Mutex::new(HashMap::new()),
            consumers: Mutex::new(ConsumerClaims::new()),
            stream_listener: Mutex::new(None),
            last_record: Mutex::new(None),
        }
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn node(&self, ino: u64) -> FsResult<Node> {
        lock(&self.inodes)
            .node(ino)
            .cloned()
            .ok_or_else(|| FsError::not_found(format!("inode {ino}")))
    }

    pub(super) fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or_else(|| FsError::BadHandle(format!("unknown file handle {fh}")))
    }

    pub(super) fn check_writable_mount(&self) -> FsResult<()> {
        if self.options.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    // ----- resolving names -------------------------------------------------------------

    pub(super) fn topic_exists(&self, topic: &str) -> FsResult<u32> {
        match self.storage.partition_count(topic) {
            Ok(n) => Ok(n),
            Err(StorageError::UnknownTopic(_)) => {
                Err(FsError::not_found(format!("topic {topic:?}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn partition_log(&self, p: &PartitionId) -> FsResult<Arc<dyn Partition>> {
        match self.storage.partition(&p.topic, p.partition) {
            Ok(log) => Ok(log),
            Err(StorageError::UnknownTopic(_) | StorageError::UnknownPartition { .. }) => {
                Err(FsError::not_found(format!("partition {p}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Checks that `node` still exists (its topic, partition, record, segment).
    fn validate(&self, node: &Node) -> FsResult<()> {
        match node {
            Node::Root | Node::Readme | Node::RootControl => Ok(()),
            Node::Topic(t) | Node::TopicFile(t, _) => self.topic_exists(t).map(drop),
            Node::Partition(p) | Node::PartitionFile(p, _) | Node::PartitionDir(p, _) => {
                self.partition_log(p).map(drop)
            }
            Node::Time(p, _) | Node::View(ViewId { partition: p, .. }) | Node::Follow(p, _, _) => {
                self.partition_log(p).map(drop)
            }
            Node::Record(p, offset, _) => self.read_record(p, *offset).map(drop),
            Node::Segment(p, name) => self.segment_path(p, name).map(drop),
            Node::Key(p, key) => self.key_value(p, key).map(drop),
            Node::Group(p, g) | Node::Consume(p, g) => self.validate_group(p, g),
        }
    }

    fn read_record(&self, p: &PartitionId, offset: i64) -> FsResult<crate::storage::Record> {
        let log = self.partition_log(p)?;
        let generation = log.view_generation().generation;
        let weak = Arc::downgrade(&log);
        if let Some(memo) = lock(&self.last_record).as_ref() {
            if memo.offset == offset
                && memo.generation == generation
                && std::sync::Weak::ptr_eq(&memo.log, &weak)
            {
                return Ok(memo.record.clone());
            }
        }
        match log.read_record(offset) {
            Ok(Some(record)) => {
                *lock(&self.last_record) = Some(RecordMemo {
                    log: weak,
                    generation,
                    offset,
                    record: record.clone(),
                });
                Ok(record)
            }
            Ok(None) => Err(FsError::not_found(format!(
                "offset {offset} of {p}: removed by compaction"
            ))),
            Err(StorageError::OffsetOutOfRange {
                log_start_offset,
                log_end_offset,
                ..
            }) => Err(FsError::not_found(format!(
                "offset {offset} of {p}: outside [{log_start_offset}, {log_end_offset})"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    fn segment_path(&self, p: &PartitionId, name: &str) -> FsResult<std::path::PathBuf> {
        if !is_segment_file_name(name) {
            return Err(FsError::not_found(format!("segment file {name:?}")));
        }
        let log = self.partition_log(p)?;
        for segment in log.segments() {
            for path in [
                &segment.log_path,
                &segment.offset_index_path,
                &segment.time_index_path,
            ] {
                if path.file_name().and_then(OsStr::to_str) == Some(name) {
                    return Ok(path.clone());
                }
            }
        }
        Err(FsError::not_found(format!("segment file {name:?} of {p}")))
    }

    /// The node `name` denotes inside `parent`, checked against the log.
    fn resolve(&self, parent: &Node, name: &str) -> FsResult<Node> {
        let missing = || FsError::not_found(format!("{}/{name}", parent.describe()));
        match parent {
            Node::Root => match name {
                node::README => Ok(Node::Readme),
                node::CONTROL => Ok(Node::RootControl),
                _ => {
                    if self.storage.validate_topic_name(name).is_err() {
                        return Err(missing());
                    }
                    self.topic_exists(name)?;
                    Ok(Node::Topic(Arc::from(name)))
                }
            },
            Node::Topic(t) => {
                if let Some(f) = parse_topic_file(name) {
                    self.topic_exists(t)?;
                    return Ok(Node::TopicFile(t.clone(), f));
                }
                let count = self.topic_exists(t)?;
                let partition = parse_partition(name, count).ok_or_else(missing)?;
                Ok(Node::Partition(PartitionId {
                    topic: t.clone(),
                    partition,
                }))
            }
            Node::Partition(p) => {
                let entry = parse_partition_entry(name).ok_or_else(missing)?;
                let log = self.partition_log(p)?;
                Ok(match entry {
                    PartitionEntry::File(f) => Node::PartitionFile(p.clone(), f),
                    PartitionEntry::Dir(d) => Node::PartitionDir(p.clone(), d),
                    PartitionEntry::View(kind) => Self::current_view(p, kind, None, &*log),
                    PartitionEntry::Record(offset, format) => {
                        self.read_record(p, offset)?;
                        Node::Record(p.clone(), offset, format)
                    }
                })
            }
            Node::PartitionDir(p, PartitionDir::From) => {
                let (offset, kind) = parse_from_entry(name).ok_or_else(missing)?;
                let log = self.partition_log(p)?;
                let view = Self::current_view(p, kind, Some(offset), &*log);
                let start = match &view {
                    Node::View(v) => v.start_offset,
                    _ => unreachable!("current_view makes a view"),
                };
                let end = log.log_end_offset();
                if offset < start || offset > end {
                    return Err(FsError::not_found(format!(
                        "from/{offset} of {p}: outside [{start}, {end}]"
                    )));
                }
                Ok(view)
            }
            Node::PartitionDir(p, PartitionDir::Keys) => self.resolve_key(p, name),
            Node::PartitionDir(p, PartitionDir::Follow) => {
                let (from, kind) = parse_follow_entry(name).ok_or_else(missing)?;
                let log = self.partition_log(p)?;
                if let FollowFrom::Offset(offset) = from {
                    let (start, end) = (log.log_start_offset(), log.log_end_offset());
                    if offset < start || offset > end {
                        return Err(FsError::not_found(format!(
                            "follow/{offset} of {p}: outside [{start}, {end}]"
                        )));
                    }
                }
                Ok(Node::Follow(p.clone(), from, kind))
            }
            Node::PartitionDir(p, PartitionDir::Time) => {
                self.partition_log(p)?;
                let ms = parse_timestamp_ms(name).ok_or_else(|| {
                    FsError::invalid(format!(
                        "time/{name}: expected milliseconds since the epoch or an RFC 3339 time"
                    ))
                })?;
                Ok(Node::Time(p.clone(), ms))
            }
            Node::PartitionDir(p, PartitionDir::Segments) => {
                self.segment_path(p, name)?;
                Ok(Node::Segment(p.clone(), Arc::from(name)))
            }
            Node::PartitionDir(p, PartitionDir::Groups) => self.resolve_group(p, name),
            Node::PartitionDir(p, PartitionDir::Consume) => self.resolve_consume(p, name),
            _ => Err(FsError::NotADirectory(parent.describe())),
        }
    }

    /// The view node of `kind` (from `from`, if given) at the log's current view generation.
    fn current_view(
        p: &PartitionId,
        kind: ViewKind,
        from: Option<i64>,
        log: &dyn Partition,
    ) -> Node {
        let generation = log.view_generation();
        Node::View(ViewId {
            partition: p.clone(),
            kind,
            generation: generation.generation,
            start_offset: generation.log_start_offset,
            from,
        })
    }

    // ----- attributes ------------------------------------------------------------------

    pub(super) fn view_map(&self, view: &ViewId) -> FsResult<Arc<ViewMap>> {
        let key = ViewKey {
            partition: view.partition.clone(),
            kind: view.kind,
            generation: view.generation,
        };
        if let Some(map) = lock(&self.views).get(&key) {
            return Ok(map.clone());
        }
        let log = self.partition_log(&view.partition)?;
        let generation = crate::storage::ViewGeneration {
            generation: view.generation,
            log_start_offset: view.start_offset,
        };
        // Outside the table's lock: a new map may read its stored state from disk.
        let map = Arc::new(ViewMap::new(log, view.kind, generation));
        let mut views = lock(&self.views);
        if let Some(map) = views.get(&key) {
            return Ok(map.clone());
        }
        // Maps of older generations are dropped from the table; open handles keep theirs.
        views.retain(|k, _| {
            !(k.partition == key.partition && k.kind == key.kind && k.generation < key.generation)
        });
        views.insert(key, map.clone());
        Ok(map)
    }

    /// Where `view` starts in its map.
    fn view_base(&self, view: &ViewId, map: &ViewMap) -> FsResult<u64> {
        match view.from {
            None => Ok(0),
            Some(offset) => map.position_of(offset),
        }
    }

    fn config_text(&self, topic: &str) -> FsResult<String> {
        Ok(self.storage.describe_config(topic)?.to_properties())
    }

    fn stats_text(&self, p: &PartitionId) -> FsResult<String> {
        let stats = self.partition_log(p)?.stats();
        let mut text =
            serde_json::to_string_pretty(&stats_json(&stats)).expect("JSON of plain values");
        text.push('\n');
        Ok(text)
    }

    pub(super) fn outcome_scope(node: &Node) -> Option<(String, Scope)> {
        match node {
            Node::RootControl => Some((String::new(), Scope::Root)),
            Node::TopicFile(t, TopicFile::Control) => Some((t.to_string(), Scope::Topic)),
            Node::PartitionFile(p, PartitionFile::Control) => {
                Some((p.to_string(), Scope::Partition))
            }
            _ => None,
        }
    }

    fn control_text(&self, node: &Node) -> String {
        let Some((key, scope)) = Self::outcome_scope(node) else {
            return String::new();
        };
        let outcomes = lock(&self.outcomes);
        control::render(scope, outcomes.get(&key))
    }

    /// The content of a small file, rendered now.
    fn render(&self, node: &Node) -> FsResult<Vec<u8>> {
        Ok(match node {
            Node::Readme => README_TEXT.as_bytes().to_vec(),
            Node::RootControl
            | Node::TopicFile(_, TopicFile::Control)
            | Node::PartitionFile(_, PartitionFile::Control) => {
                self.control_text(node).into_bytes()
            }
            Node::TopicFile(t, TopicFile::Config) => self.config_text(t)?.into_bytes(),
            Node::TopicFile(t, TopicFile::Partitions) => {
                format!("{}\n", self.topic_exists(t)?).into_bytes()
            }
            Node::PartitionFile(p, PartitionFile::Stats) => self.stats_text(p)?.into_bytes(),
            Node::PartitionFile(_, PartitionFile::Append | PartitionFile::AppendJsonl) => {
                Vec::new()
            }
            Node::Record(p, offset, RecordFormat::Value) => {
                self.read_record(p, *offset)?.value.unwrap_or_default()
            }
            Node::Record(p, offset, RecordFormat::Json) => {
                record_json_line(&self.read_record(p, *offset)?)
            }
            Node::Time(p, ms) => {
                let offset = self.partition_log(p)?.list_offsets(*ms)?;
                format!("{offset}\n").into_bytes()
            }
            Node::Key(p, key) => self.key_value(p, key)?,
            Node::Group(p, group) => self.group_text(p, group)?,
            Node::Root
            | Node::Topic(_)
            | Node::Partition(_)
            | Node::PartitionDir(_, _)
            | Node::View(_)
            | Node::Follow(..)
            | Node::Segment(_, _)
            | Node::Consume(_, _) => {
                return Err(FsError::IsADirectory(format!(
                    "{} has no rendered content",
                    node.describe()
                )))
            }
        })
    }

    pub(super) fn attr_of(
        &self,
        ino: u64,
        node: &Node,
        handle: Option<&Handle>,
    ) -> FsResult<Entry> {
        let dir = |nlink: u32| Attr {
            ino,
            kind: FileKind::Directory,
            perm: 0o755,
            size: 0,
            nlink,
            mtime: self.started,
            blksize: DEFAULT_BLKSIZE,
        };
        let file = |perm: u16, size: u64| Attr {
            ino,
            kind: FileKind::RegularFile,
            perm,
            size,
            nlink: 1,
            mtime: self.started,
            blksize: DEFAULT_BLKSIZE,
        };
        let bulk = |attr: Attr| Attr {
            blksize: BULK_BLKSIZE,
            ..attr
        };
        let attr = match node {
            Node::Root => dir(2 + self.storage.topics().len() as u32),
            Node::Topic(t) => dir(2 + self.topic_exists(t)?),
            Node::Partition(p) => {
                self.partition_log(p)?;
                // from, time, keys, segments, follow, groups, consume.
                dir(2 + 7)
            }
            Node::PartitionDir(p, _) => {
                self.partition_log(p)?;
                dir(2)
            }
            Node::Readme => file(0o444, README_TEXT.len() as u64),
            Node::RootControl
            | Node::TopicFile(_, TopicFile::Control)
            | Node::PartitionFile(_, PartitionFile::Control) => {
                self.validate(node)?;
                file(0o600, self.control_text(node).len() as u64)
            }
            Node::TopicFile(_, TopicFile::Config | TopicFile::Partitions) => {
                file(0o644, self.render(node)?.len() as u64)
            }
            Node::PartitionFile(p, PartitionFile::Append | PartitionFile::AppendJsonl) => {
                self.partition_log(p)?;
                bulk(file(0o200, 0))
            }
            Node::PartitionFile(_, PartitionFile::Stats) | Node::Record(..) | Node::Time(..) => {
                file(0o444, self.render(node)?.len() as u64)
            }
            Node::View(view) => {
                let size = match handle {
                    Some(Handle::View { map, base, .. }) => map.len_bytes()? - base,
                    _ => {
                        let map = self.view_map(view)?;
                        let base = self.view_base(view, &map)?;
                        map.len_bytes()? - base
                    }
                };
                bulk(file(0o444, size))
            }
            Node::Segment(p, name) => {
                let size = match handle {
                    Some(Handle::Segment { file, name }) => file
                        .metadata()
                        .map_err(|source| FsError::Io {
                            what: name.clone(),
                            source,
                        })?
                        .len(),
                    _ => {
                        let path = self.segment_path(p, name)?;
                        std::fs::metadata(&path)
                            .map_err(|source| FsError::Io {
                                what: path.display().to_string(),
                                source,
                            })?
                            .len()
                    }
                };
                file(0o444, size)
            }
            Node::Key(p, key) => file(0o644, self.key_size(p, key, handle)?),
            Node::Group(p, group) => file(0o644, self.group_size(p, group)?),
            Node::Consume(p, group) => {
                let size = match handle {
                    Some(Handle::Consume(consume)) => consume.len_bytes(),
                    // The snapshot is taken at open; before it, nothing is promised.
                    _ => {
                        self.validate_group(p, group)?;
                        0
                    }
                };
                file(0o444, size)
            }
            // A stream has no size: readers read until it ends.
            Node::Follow(p, _, _) => {
                self.partition_log(p)?;
                file(0o444, 0)
            }
        };
        let ttl = match node {
            _ if node.is_dir() => DIR_TTL,
            Node::Record(..) => RECORD_TTL,
            _ => FILE_TTL,
        };
        Ok(Entry { attr, ttl })
    }

    // ----- the operations --------------------------------------------------------------

    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<Entry> {
        let parent_node = self.node(parent)?;
        let name = name_str(name)?;
        let node = self.resolve(&parent_node, name)?;
        // Count the lookup in the same critical section that picks the number: a `forget`
        // of this number racing in between would otherwise drop it while the kernel is
        // about to receive it (and every later request on it would get ENOENT).
        let ino = lock(&self.inodes).lookup(&node);
        match self.attr_of(ino, &node, None) {
            Ok(entry) => Ok(entry),
            Err(e) => {
                lock(&self.inodes).forget(ino, 1);
                Err(e)
            }
        }
    }

    pub fn forget(&self, ino: u64, nlookup: u64) {
        lock(&self.inodes).forget(ino, nlookup);
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> FsResult<Entry> {
        let node = self.node(ino)?;
        let handle = fh.and_then(|fh| self.handle(fh).ok());
        self.attr_of(ino, &node, handle.as_deref())
    }

    pub fn setattr(&self, ino: u64, fh: Option<u64>, change: SetAttr) -> FsResult<Entry> {
        let node = self.node(ino)?;
        if change.mode.is_some() || change.uid.is_some() || change.gid.is_some() {
            return Err(FsError::not_permitted(format!(
                "{}: modes and owners are fixed",
                node.describe()
            )));
        }
        if let (Some(size), Node::Key(p, key)) = (change.size, &node) {
            // A key file is a value: truncating changes it (through the open file, at close).
            match fh.map(|fh| self.handle(fh)).transpose()? {
                Some(handle) => self.truncate_open_key(&handle, size)?,
                None => self.truncate_key(p, key, size)?,
            }
            return self.getattr(ino, fh);
        }
        if let Some(size) = change.size {
            let truncatable = matches!(
                node,
                Node::PartitionFile(_, PartitionFile::Append | PartitionFile::AppendJsonl)
                    | Node::PartitionFile(_, PartitionFile::Control)
                    | Node::TopicFile(..)
                    | Node::RootControl
                    | Node::Group(..)
            );
            // Truncation to zero of a write target is what `>` does before writing: accepted
            // and ignored, so `echo x > append` works like `>>`. Anything else would rewrite
            // history.
            if !(truncatable && size == 0) {
                return Err(FsError::not_permitted(format!(
                    "{}: cannot be truncated to {size} bytes",
                    node.describe()
                )));
            }
            self.check_writable_mount()?;
        }
        self.getattr(ino, fh)
    }

    pub fn readdir(&self, ino: u64) -> FsResult<Vec<DirEntry>> {
        let node = self.node(ino)?;
        let mut children: Vec<(Node, String)> = Vec::new();
        match &node {
            Node::Root => {
                children.push((Node::Readme, node::README.into()));
                children.push((Node::RootControl, node::CONTROL.into()));
                for topic in self.storage.topics() {
                    children.push((Node::Topic(Arc::from(topic.as_str())), topic));
                }
            }
            Node::Topic(t) => {
                let count = self.topic_exists(t)?;
                for f in [TopicFile::Config, TopicFile::Partitions, TopicFile::Control] {
                    children.push((Node::TopicFile(t.clone(), f), topic_file_name(f).into()));
                }
                for partition in 0..count {
                    let p = PartitionId {
                        topic: t.clone(),
                        partition,
                    };
                    children.push((Node::Partition(p), partition.to_string()));
                }
            }
            Node::Partition(p) => {
                let log = self.partition_log(p)?;
                for f in [PartitionFile::Append, PartitionFile::AppendJsonl] {
                    children.push((
                        Node::PartitionFile(p.clone(), f),
                        partition_file_name(f).into(),
                    ));
                }
                for (kind, name) in [
                    (ViewKind::Log, node::LOG),
                    (ViewKind::Jsonl, node::LOG_JSONL),
                ] {
                    children.push((Self::current_view(p, kind, None, &*log), name.into()));
                }
                for d in [
                    PartitionDir::From,
                    PartitionDir::Follow,
                    PartitionDir::Time,
                    PartitionDir::Keys,
                ] {
                    children.push((
                        Node::PartitionDir(p.clone(), d),
                        partition_dir_name(d).into(),
                    ));
                }
                for f in [PartitionFile::Stats, PartitionFile::Control] {
                    children.push((
                        Node::PartitionFile(p.clone(), f),
                        partition_file_name(f).into(),
                    ));
                }
                let segments = PartitionDir::Segments;
                children.push((
                    Node::PartitionDir(p.clone(), segments),
                    partition_dir_name(segments).into(),
                ));
                for d in [PartitionDir::Groups, PartitionDir::Consume] {
                    children.push((
                        Node::PartitionDir(p.clone(), d),
                        partition_dir_name(d).into(),
                    ));
                }
            }
            Node::PartitionDir(p, PartitionDir::From | PartitionDir::Time) => {
                // Offsets and times resolve by name only: a partition may hold billions.
                self.partition_log(p)?;
            }
            Node::PartitionDir(p, PartitionDir::Keys) => children = self.list_keys(p)?,
            Node::PartitionDir(p, PartitionDir::Groups) => children = self.list_groups(p, false)?,
            Node::PartitionDir(p, PartitionDir::Consume) => children = self.list_groups(p, true)?,
            Node::PartitionDir(p, PartitionDir::Follow) => {
                // Offsets resolve by name only; `end` is listed for discovery.
                self.partition_log(p)?;
                for (kind, name) in [(ViewKind::Log, "end"), (ViewKind::Jsonl, "end.jsonl")] {
                    children.push((Node::Follow(p.clone(), FollowFrom::End, kind), name.into()));
                }
            }
            Node::PartitionDir(p, PartitionDir::Segments) => {
                let log = self.partition_log(p)?;
                for segment in log.segments() {
                    for path in [
                        &segment.log_path,
                        &segment.offset_index_path,
                        &segment.time_index_path,
                    ] {
                        if let Some(name) = path.file_name().and_then(OsStr::to_str) {
                            children.push((Node::Segment(p.clone(), Arc::from(name)), name.into()));
                        }
                    }
                }
            }
            _ => return Err(FsError::NotADirectory(node.describe())),
        }
        let mut inodes = lock(&self.inodes);
        let mut entries = Vec::with_capacity(children.len() + 2);
        entries.push(DirEntry {
            ino,
            kind: FileKind::Directory,
            name: ".".into(),
        });
        entries.push(DirEntry {
            ino: ROOT_INO.max(ino),
            kind: FileKind::Directory,
            name: "..".into(),
        });
        for (child, name) in children {
            let kind = if child.is_dir() {
                FileKind::Directory
            } else {
                FileKind::RegularFile
            };
            entries.push(DirEntry {
                ino: inodes.ino_of(&child),
                kind,
                name,
            });
        }
        Ok(entries)
    }

    fn insert_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(handle));
        fh
    }

    /// The buffer length of an open file of `keys/<key>` of `p`, if there is one (the largest).
    /// Scans the open files: used only for a key that is not live yet.
    pub(super) fn open_key_buffer_len(&self, p: &PartitionId, key: &str) -> Option<u64> {
        let handles: Vec<Arc<Handle>> = lock(&self.handles).values().cloned().collect();
        handles
            .iter()
            .filter_map(|h| match &**h {
                Handle::Key {
                    partition,
                    key: k,
                    buffer,
                    ..
                } if partition == p && &**k == key => Some(lock(buffer).len() as u64),
                _ => None,
            })
            .max()
    }

    /// Registers an open file, opened direct I/O (see the module docs).
    pub(super) fn open_handle(&self, handle: Handle) -> Opened {
        Opened {
            fh: self.insert_handle(handle),
            cache: CachePolicy::DirectIo,
        }
    }

    /// `open(2)`. `truncate` is `O_TRUNC`: ignored by append, `config`, `partitions` and
    /// `control` files (so `>` works), it empties an open key file.
    pub fn open(&self, ino: u64, mode: AccessMode, truncate: bool) -> FsResult<Opened> {
        let node = self.node(ino)?;
        let refuse = |why: &str| Err(FsError::AccessDenied(format!("{}: {why}", node.describe())));
        let direct = |fh| {
            Ok(Opened {
                fh,
                cache: CachePolicy::DirectIo,
            })
        };
        match &node {
            Node::Root | Node::Topic(_) | Node::Partition(_) | Node::PartitionDir(..) => {
                Err(FsError::IsADirectory(node.describe()))
            }
            Node::PartitionFile(p, f @ (PartitionFile::Append | PartitionFile::AppendJsonl)) => {
                if mode.reads() {
                    return refuse("append files are write-only");
                }
                self.check_writable_mount()?;
                let log = self.partition_log(p)?;
                let format = if *f == PartitionFile::Append {
                    AppendFormat::Lines
                } else {
                    AppendFormat::Jsonl
                };
                direct(self.insert_handle(Handle::Append {
                    partition: p.clone(),
                    log,
                    format,
                    pending: Mutex::new(PendingLine::default()),
                    writer: Mutex::new(Writer::default()),
                }))
            }
            Node::RootControl
            | Node::TopicFile(..)
            | Node::PartitionFile(_, PartitionFile::Control)
            | Node::Group(..) => {
                if mode.writes() {
                    self.check_writable_mount()?;
                }
                self.validate(&node)?;
                let snapshot = if mode.reads() {
                    self.render(&node)?
                } else {
                    Vec::new()
                };
                direct(self.insert_handle(Handle::Writable {
                    node: node.clone(),
                    snapshot,
                }))
            }
            Node::Readme
            | Node::PartitionFile(_, PartitionFile::Stats)
            | Node::Record(..)
            | Node::Time(..) => {
                if mode.writes() {
                    return refuse("read-only file");
                }
                let content = self.render(&node)?;
                let fh = self.insert_handle(Handle::Snapshot(content));
                Ok(Opened {
                    fh,
                    cache: match node {
                        Node::Record(..) => CachePolicy::PageCache,
                        _ => CachePolicy::DirectIo,
                    },
                })
            }
            Node::View(view) => {
                if mode.writes() {
                    return refuse("views are read-only; write to append or append.jsonl");
                }
                let map = self.view_map(view)?;
                let base = self.view_base(view, &map)?;
                let fh = self.insert_handle(Handle::View {
                    map,
                    base,
                    reader: Mutex::new(ReadState::default()),
                });
                // Not `KeepCache`: see the module docs.
                Ok(Opened {
                    fh,
                    cache: CachePolicy::DirectIo,
                })
            }
            Node::Segment(p, name) => {
                if mode.writes() {
                    return refuse("segment files are read-only");
                }
                let path = self.segment_path(p, name)?;
                let file = std::fs::File::open(&path).map_err(|source| FsError::Io {
                    what: path.display().to_string(),
                    source,
                })?;
                let fh = self.insert_handle(Handle::Segment {
                    file,
                    name: name.to_string(),
                });
                Ok(Opened {
                    fh,
                    cache: CachePolicy::Passthrough,
                })
            }
            Node::Key(p, key) => self.open_key(p, key, mode, truncate),
            Node::Consume(p, group) => self.open_consume(p, group, mode),
            Node::Follow(p, from, kind) => {
                if mode.writes() {
                    return refuse("streams are read-only; write to append or append.jsonl");
                }
                let handle = self.open_stream(p, *from, *kind)?;
                Ok(Opened {
                    fh: self.insert_handle(handle),
                    cache: CachePolicy::Stream,
                })
            }
        }
    }

    /// The file behind an open handle opened [`CachePolicy::Passthrough`] (a segment file), for
    /// the kernel to read directly: a new descriptor of the same open file.
    pub fn passthrough_file(&self, fh: u64) -> FsResult<std::fs::File> {
        match &*self.handle(fh)? {
            Handle::Segment { file, name } => file.try_clone().map_err(|source| FsError::Io {
                what: name.clone(),
                source,
            }),
            _ => Err(FsError::BadHandle(format!("{fh} is not a segment file"))),
        }
    }

    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let handle = self.handle(fh)?;
        let slice = |content: &[u8]| {
            let start = (offset as usize).min(content.len());
            let end = start.saturating_add(size as usize).min(content.len());
            content[start..end].to_vec()
        };
        match &*handle {
            Handle::Snapshot(content) => Ok(slice(content)),
            Handle::Writable { snapshot, .. } => Ok(slice(snapshot)),
            Handle::Append { partition, .. } => Err(FsError::BadHandle(format!(
                "{partition}: append files are write-only"
            ))),
            Handle::Key { buffer, .. } => Ok(slice(lock(buffer).content())),
            Handle::Consume(consume) => self.read_consume(consume, offset, size),
            // The FUSE adapter reads streams with `stream_read`, parking the reply when it
            // would block; a plain read that would block says so.
            Handle::Stream { .. } => match self.stream_read(fh, size)? {
                StreamRead::Data(data) => Ok(data),
                StreamRead::Eof => Ok(Vec::new()),
                StreamRead::WouldBlock => Err(FsError::WouldBlock(format!(
                    "inode {ino}: no new records yet"
                ))),
            },
            Handle::View { map, base, reader } => {
                let mut reader = lock(reader);
                map.read(base + offset, size as usize, &mut reader)
            }
            Handle::Segment { file, name } => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; size as usize];
                let mut filled = 0;
                while filled < buf.len() {
                    match file.read_at(&mut buf[filled..], offset + filled as u64) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(source) => {
                            return Err(FsError::Io {
                                what: format!("segment file {name} (inode {ino})"),
                                source,
                            })
                        }
                    }
                }
                buf.truncate(filled);
                Ok(buf)
            }
        }
    }

    /// `write(2)` of `data` at file position `offset` (which only key files use: the others
    /// append or take commands whatever the position).
    /// A `write()` by thread `caller` (0: unknown).
    pub fn write(
        &self,
        _ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        caller: u32,
    ) -> FsResult<u32> {
        let handle = self.handle(fh)?;
        let written = u32::try_from(data.len()).map_err(|_| FsError::invalid("write too large"))?;
        match &*handle {
            Handle::Append {
                partition,
                log,
                format,
                pending,
                writer,
            } => {
                self.check_writable_mount()?;
                let mut pending = lock(pending);
                // Bounds what one open file may hold back, in the write that would pass it.
                let limit = log.config().max_message_bytes as usize;
                let split = match pending.split(data, *format, limit) {
                    Ok(split) => split,
                    Err(e) => {
                        pending.clear();
                        return Err(e);
                    }
                };
                if !split.is_empty() {
                    let appended = match format {
                        AppendFormat::Lines => self
                            .append_values(partition, &**log, &split.values())
                            .inspect(|info| {
                                // The `log` view grows by exactly the complete lines: the
                                // pending tail they continue and this write up to its tail.
                                let view_bytes = (pending.len() + split.tail_start) as u64;
                                self.log_view_lines_appended(partition, &**log, info, view_bytes)
                            }),
                        AppendFormat::Jsonl => {
                            self.append_records(partition, &**log, &split.records)
                        }
                    };
                    if let Err(e) = appended {
                        pending.clear();
                        return Err(e.into());
                    }
                    debug!("{partition}: appended {} records", split.len());
                }
                pending.commit(data, &split);
                if !pending.is_empty() {
                    lock(writer).wrote(caller);
                }
                Ok(written)
            }
            Handle::Writable { node, .. } => {
                self.check_writable_mount()?;
                self.apply_write(node, data)?;
                Ok(written)
            }
            Handle::Key { .. } => {
                self.write_key(&handle, offset, data)?;
                Ok(written)
            }
            Handle::Snapshot(_)
            | Handle::View { .. }
            | Handle::Segment { .. }
            | Handle::Consume(_)
            | Handle::Stream { .. } => Err(FsError::BadHandle("file is read-only".into())),
        }
    }

    /// Appends what a handle holds back until close: the pending unterminated line of an append
    /// file, the value of a written key file.
    fn append_pending(&self, handle: &Handle, released: bool) -> FsResult<()> {
        if let Handle::Key { .. } = handle {
            return self.append_key_value(handle, released);
        }
        if let Handle::Consume(consume) = handle {
            return self.close_consume(consume, released);
        }
        if let Handle::Append {
            partition,
            log,
            format,
            pending,
            ..
        } = handle
        {
            let mut pending = lock(pending);
            if pending.is_empty() {
                return Ok(());
            }
            if let Some(record) = pending.take_record(*format)? {
                self.append_records(partition, &**log, std::slice::from_ref(&record))?;
                debug!("{partition}: appended the unterminated last line on close");
            }
        }
        Ok(())
    }

    /// Called on every `close()` of a descriptor, by thread `caller` (0: unknown). An append
    /// file's unterminated last line is appended by the close of the process that wrote it
    /// (so that close reports any error), not by the close of a process that only inherited
    /// the descriptor: a child that forks and execs closes its copy, and that must not cut a
    /// line its parent is still writing. The last close of the open file
    /// ([`Self::release`]) appends it in any case.
    pub fn flush(&self, _ino: u64, fh: u64, caller: u32) -> FsResult<()> {
        let handle = self.handle(fh)?;
        if let Handle::Append { writer, .. } = &*handle {
            if !lock(writer).is_writer(caller) {
                return Ok(());
            }
        }
        self.append_pending(&handle, false)
    }

    pub fn release(&self, _ino: u64, fh: u64) -> FsResult<()> {
        let handle = lock(&self.handles).remove(&fh);
        match handle {
            Some(handle) => self.append_pending(&handle, true),
            None => Ok(()),
        }
    }

    pub fn fsync(&self, _ino: u64, fh: u64) -> FsResult<()> {
        let handle = self.handle(fh)?;
        if let Handle::Append { log, .. } = &*handle {
            log.flush()?;
        }
        Ok(())
    }

    pub fn mkdir(&self, parent: u64, name: &OsStr) -> FsResult<Entry> {
        let parent_node = self.node(parent)?;
        if parent_node != Node::Root {
            return Err(FsError::not_permitted(format!(
                "mkdir in {}: only topics (directories in the mount root) can be created",
                parent_node.describe()
            )));
        }
        self.check_writable_mount()?;
        let name = std::str::from_utf8(name.as_bytes())
            .map_err(|_| FsError::invalid("topic names are ASCII [A-Za-z0-9._-]"))?;
        self.storage.create_topic(name, None, &[])?;
        info!("created topic {name:?}");
        let node = Node::Topic(Arc::from(name));
        let mut inodes = lock(&self.inodes);
        inodes.detach(&node);
        let ino = inodes.lookup(&node);
        drop(inodes);
        self.attr_of(ino, &node, None)
    }

    fn forget_topic_state(&self, topic: &str) {
        lock(&self.inodes).detach_topic(topic);
        lock(&self.views).retain(|k, _| &*k.partition.topic != topic);
        let prefix = format!("{topic}/");
        lock(&self.outcomes).retain(|k, _| k != topic && !k.starts_with(&prefix));
    }

    /// `rmdir`: of a topic, deletes it (see [`Self::unlink`] for the rule inside a topic).
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        let parent_node = self.node(parent)?;
        let name_s = name_str(name)?;
        let node = self.resolve(&parent_node, name_s)?;
        match &node {
            Node::Topic(t) => {
                self.check_writable_mount()?;
                self.storage.delete_topic(t)?;
                self.forget_topic_state(t);
                self.notify_topic_deleted(t);
                info!("deleted topic {t:?}");
                Ok(())
            }
            Node::Partition(_) | Node::PartitionDir(..) => self.removal_inside_topic(&node),
            _ if !node.is_dir() => Err(FsError::NotADirectory(node.describe())),
            _ => Err(FsError::not_permitted(format!("rmdir {}", node.describe()))),
        }
    }

    /// `unlink`: of `keys/<key>`, writes the key's tombstone; of any other file inside a topic,
    /// succeeds without effect (see [`Self::removal_inside_topic`]); of the root's files, EPERM.
    pub fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        let parent_node = self.node(parent)?;
        let node = self.resolve(&parent_node, name_str(name)?)?;
        if let Node::Key(p, key) = &node {
            return self.remove_key(p, key);
        }
        if node.is_dir() {
            return Err(FsError::IsADirectory(node.describe()));
        }
        if node.topic().is_none() {
            return Err(FsError::not_permitted(format!(
                "{}: fixed files cannot be removed",
                node.describe()
            )));
        }
        self.removal_inside_topic(&node)
    }

    /// One rule for removing what lies inside a topic, whoever asks: a topic goes only as a
    /// whole, by `rmdir TOPIC`. Unlinking one of its files (other than `keys/<key>`) and
    /// rmdir of a partition or of a partition's subdirectory succeed and change nothing.
    /// Recursive removers (`rm -rf`, `shutil.rmtree`, `find -delete`) remove the contents
    /// first and stop at the first refusal, so with this rule they reach the topic's `rmdir`,
    /// which deletes it. (A file "removed" this way is still listed; the names are fixed.)
    fn removal_inside_topic(&self, node: &Node) -> FsResult<()> {
        self.check_writable_mount()?;
        debug!(
            "{}: removal inside a topic changes nothing (rmdir the topic to delete it)",
            node.describe()
        );
        // The kernel now considers the inode removed: the next lookup gets a fresh number.
        lock(&self.inodes).detach(node);
        Ok(())
    }

    pub fn rename(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        let parent_node = self.node(parent)?;
        let node = self.resolve(&parent_node, name_str(name)?)?;
        Err(FsError::not_permitted(format!(
            "{}: names are fixed and cannot be renamed",
            node.describe()
        )))
    }

    /// `create` (open with `O_CREAT` of a name that does not exist): only in `keys/`, where it
    /// makes a key file (see [`crate::fs::keys`]), and in `groups/`, where it makes a group
    /// file (see [`crate::fs::groups`]); EPERM anywhere else.
    pub fn create(&self, parent: u64, name: &OsStr, mode: AccessMode) -> FsResult<(Entry, Opened)> {
        match self.node(parent)? {
            Node::PartitionDir(p, PartitionDir::Keys) => self.create_key(&p, name, mode),
            Node::PartitionDir(p, PartitionDir::Groups) => self.create_group(&p, name, mode),
            _ => Err(self.refuse_creation(parent, name)),
        }
    }

    /// Why `mknod`, `symlink`, `link` (anywhere) and `create` (outside `keys/`) are refused.
    pub fn refuse_creation(&self, parent: u64, name: &OsStr) -> FsError {
        let parent = match self.node(parent) {
            Ok(node) => node,
            Err(e) => return e,
        };
        let hint = if Self::is_keys_dir(&parent) {
            "keys/ holds regular files only: open with O_CREAT, or `echo value > keys/NAME`"
        } else {
            "mkdir in the root creates a topic; keys/NAME creates a key, groups/NAME a group"
        };
        FsError::not_permitted(format!(
            "create {}/{}: files cannot be created here ({hint})",
            parent.describe(),
            name.to_string_lossy()
        ))
    }

    /// Flushes every log (used before shutdown).
    pub fn flush_all(&self) -> FsResult<()> {
        self.storage.flush_all().map_err(FsError::from)
    }

    /// At a clean stop: stores each partition's view position maps (see
    /// [`crate::fs::view::store_view_state`]) so the first `stat` after a restart does not map
    /// the whole log again. Failures are logged; the next start then maps from the log.
    pub fn store_view_states(&self) {
        let mut by_partition: HashMap<PartitionId, Vec<Arc<ViewMap>>> = HashMap::new();
        for (key, map) in lock(&self.views).iter() {
            by_partition
                .entry(key.partition.clone())
                .or_default()
                .push(map.clone());
        }
        let mut stored = 0usize;
        for (_, mut maps) in by_partition {
            // The newest generation's maps only (older ones are dropped from the table as a
            // newer one appears, so this is the usual case anyway).
            let newest = maps.iter().map(|m| m.generation().generation).max();
            maps.retain(|m| Some(m.generation().generation) == newest);
            match crate::fs::view::store_view_state(&maps) {
                Ok(true) => stored += 1,
                Ok(false) => {}
                Err(e) => log::warn!(
                    "{}: could not store its view state ({e}); the next start maps its views \
                     from the log",
                    maps[0].log().location().display()
                ),
            }
        }
        if stored > 0 {
            log::info!("stored the view state of {stored} partition(s)");
        }
    }
}

#[cfg(test)]
mod semantics_tests {
    use super::*;
    use crate::engine::{LogConfig, LogManager};
    use std::ffi::OsStr;

    struct Fixture {
        _dir: tempfile::TempDir,
        fs: LmqFs,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let manager = LogManager::open(&dir.path().join("data"), LogConfig::default(), 2).unwrap();
        let fs = LmqFs::new(Arc::new(manager), FsOptions::default());
        Fixture { _dir: dir, fs }
    }

    impl Fixture {
        fn ino(&self, path: &str) -> FsResult<u64> {
            let mut ino = ROOT_INO;
            for part in path.split('/').filter(|p| !p.is_empty()) {
                ino = self.fs.lookup(ino, OsStr::new(part))?.attr.ino;
            }
            Ok(ino)
        }

        fn write(&self, path: &str, data: &[u8]) -> FsResult<()> {
            let ino = self.ino(path)?;
            let fh = self.fs.open(ino, AccessMode::Write, false)?.fh;
            let result = self.fs.write(ino, fh, 0, data, 0).map(drop);
            let closed = self.fs.flush(ino, fh, 0);
            self.fs.release(ino, fh)?;
            result.and(closed)
        }

        fn read(&self, path: &str) -> FsResult<Vec<u8>> {
            let ino = self.ino(path)?;
            let fh = self.fs.open(ino, AccessMode::Read, false)?.fh;
            let mut out = Vec::new();
            loop {
                let chunk = self.fs.read(ino, fh, out.len() as u64, 1000)?;
                if chunk.is_empty() {
                    break;
                }
                out.extend_from_slice(&chunk);
            }
            self.fs.release(ino, fh)?;
            Ok(out)
        }

        fn size(&self, path: &str) -> u64 {
            self.fs
                .getattr(self.ino(path).unwrap(), None)
                .unwrap()
                .attr
                .size
        }
    }

    #[test]
    fn produce_and_consume_through_files() {
        let f = fixture();
        f.fs.mkdir(ROOT_INO, OsStr::new("orders")).unwrap();
        assert!(f.read("orders/partitions").unwrap() == b"2\n");
        f.write("orders/0/append", b"one\ntwo\nthr").unwrap();
        assert_eq!(f.read("orders/0/log").unwrap(), b"one\ntwo\nthr\n");
        assert_eq!(f.size("orders/0/log"), 12);
        assert_eq!(f.read("orders/0/1").unwrap(), b"two");
        let json: serde_json::Value =
            serde_json::from_slice(&f.read("orders/0/2.json").unwrap()).unwrap();
        assert_eq!(json["value"], "thr");
        assert_eq!(f.read("orders/0/from/1").unwrap(), b"two\nthr\n");
        assert_eq!(f.read("orders/0/from/3").unwrap(), b"");
        assert_eq!(f.read("orders/0/time/0").unwrap(), b"0\n");
        f.write("orders/0/append.jsonl", br#"{"key":"k","value":"v"}"#)
            .unwrap();
        let last = f.read("orders/0/log.jsonl").unwrap();
        let last_line = last.split(|b| *b == b'\n').rev().nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_slice(last_line).unwrap();
        assert_eq!(
            (json["offset"].as_i64(), json["key"].as_str()),
            (Some(3), Some("k"))
        );
        let stats: serde_json::Value =
            serde_json::from_slice(&f.read("orders/0/stats").unwrap()).unwrap();
        assert_eq!(stats["log_end_offset"], 4);
    }

    #[test]
    fn bad_input_changes_nothing() {
        let f = fixture();
        assert!(matches!(
            f.fs.mkdir(ROOT_INO, OsStr::new("bad name")),
            Err(FsError::Storage(StorageError::InvalidTopicName { .. }))
        ));
        f.fs.mkdir(ROOT_INO, OsStr::new("t")).unwrap();
        f.write("t/0/append", b"keep\n").unwrap();
        let before = f.read("t/0/log").unwrap();
        let e = f
            .write("t/0/append.jsonl", b"{\"value\":\"ok\"}\n{bad}\n")
            .unwrap_err();
        assert!(matches!(e, FsError::InvalidInput(_)));
        f.write("t/config", b"max.message.bytes=100\n").unwrap();
        let big = [b'x'; 300];
        let e = f
            .write("t/0/append", &[&b"small\n"[..], &big, b"\n"].concat())
            .unwrap_err();
        assert!(matches!(
            e,
            FsError::Storage(StorageError::RecordTooLarge { .. })
        ));
        assert_eq!(f.read("t/0/log").unwrap(), before);
        for (path, data) in [
            ("t/config", &b"no.such.key=1\n"[..]),
            ("t/config", b"retention.ms=soon\n"),
            ("t/partitions", b"1\n"),
            ("t/partitions", b"many\n"),
            ("t/0/control", b"explode\n"),
        ] {
            assert!(
                matches!(
                    f.write(path, data),
                    Err(FsError::InvalidInput(_) | FsError::Storage(_))
                ),
                "{path} {data:?}"
            );
        }
        assert_eq!(f.read("t/partitions").unwrap(), b"2\n");
        assert!(matches!(f.ino("t/0/1"), Err(FsError::NotFound(_))));
        assert!(matches!(f.ino("t/0/01"), Err(FsError::NotFound(_))));
        assert!(matches!(f.ino("t/2"), Err(FsError::NotFound(_))));
        assert!(matches!(
            f.ino("t/0/time/later"),
            Err(FsError::InvalidInput(_))
        ));
        let append = f.ino("t/0/append").unwrap();
        assert!(matches!(
            f.fs.open(append, AccessMode::Read, false),
            Err(FsError::AccessDenied(_))
        ));
        let log = f.ino("t/0/log").unwrap();
        assert!(matches!(
            f.fs.open(log, AccessMode::Write, false),
            Err(FsError::AccessDenied(_))
        ));
        // Inside a topic an unlink changes nothing (the topic goes by rmdir); at the root
        // the fixed files cannot be removed.
        let part = f.ino("t/0").unwrap();
        f.fs.unlink(part, OsStr::new("log")).unwrap();
        assert_eq!(f.read("t/0/log").unwrap(), before, "still there, unchanged");
        assert!(matches!(
            f.fs.unlink(ROOT_INO, OsStr::new("README")),
            Err(FsError::NotPermitted(_))
        ));
        assert!(matches!(
            f.fs.setattr(
                log,
                None,
                SetAttr {
                    size: Some(0),
                    ..Default::default()
                }
            ),
            Err(FsError::NotPermitted(_))
        ));
        f.fs.setattr(
            append,
            None,
            SetAttr {
                size: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(f.read("t/0/log").unwrap(), before);
    }

    #[test]
    fn old_log_handles_keep_coordinates_after_delete_records() {
        let f = fixture();
        f.fs.mkdir(ROOT_INO, OsStr::new("t")).unwrap();
        f.write("t/0/append", b"a\nb\nc\n").unwrap();
        let old = f.ino("t/0/log").unwrap();
        let fh = f.fs.open(old, AccessMode::Read, false).unwrap().fh;
        f.write("t/0/control", b"delete-records 2\n").unwrap();
        f.write("t/0/append", b"d\n").unwrap();
        assert_eq!(f.fs.getattr(old, Some(fh)).unwrap().attr.size, 8);
        assert_eq!(f.fs.read(old, fh, 6, 100).unwrap(), b"d\n");
        let new = f.ino("t/0/log").unwrap();
        assert_ne!(old, new);
        assert_eq!(f.read("t/0/log").unwrap(), b"c\nd\n");
        assert!(matches!(f.ino("t/0/from/1"), Err(FsError::NotFound(_))));
        f.fs.release(old, fh).unwrap();
        let control = f.read("t/0/control").unwrap();
        assert!(String::from_utf8(control)
            .unwrap()
            .contains("delete-records 2: ok"));
    }

    #[test]
    fn keys_files_append_on_close_and_tombstone_on_unlink() {
        let f = fixture();
        f.fs.mkdir(ROOT_INO, OsStr::new("kv")).unwrap();
        f.write("kv/config", b"cleanup.policy=compact\n").unwrap();
        let keys = f.ino("kv/0/keys").unwrap();
        let (entry, opened) =
            f.fs.create(keys, OsStr::new("k"), AccessMode::Write)
                .unwrap();
        let ino = entry.attr.ino;
        assert_eq!(entry.attr.perm, 0o644);
        f.fs.flush(ino, opened.fh, 0).unwrap();
        assert!(
            matches!(f.ino("kv/0/keys/k"), Err(FsError::NotFound(_))),
            "not yet"
        );
        f.fs.write(ino, opened.fh, 0, b"value", 0).unwrap();
        f.fs.flush(ino, opened.fh, 0).unwrap();
        f.fs.release(ino, opened.fh).unwrap();
        assert_eq!(f.read("kv/0/keys/k").unwrap(), b"value");
        assert_eq!(f.read("kv/0/log").unwrap(), b"value\n", "one record");
        let names: Vec<String> =
            f.fs.readdir(keys)
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .collect();
        assert_eq!(names, [".", "..", "k"]);
        f.fs.unlink(keys, OsStr::new("k")).unwrap();
        assert!(matches!(f.ino("kv/0/keys/k"), Err(FsError::NotFound(_))));
        assert!(matches!(
            f.fs.create(f.ino("kv/0").unwrap(), OsStr::new("x"), AccessMode::Write),
            Err(FsError::NotPermitted(_))
        ));
    }

    #[test]
    fn compact_is_einval_on_a_partition_and_skipped_on_a_topic_without_compact() {
        let f = fixture();
        f.fs.mkdir(ROOT_INO, OsStr::new("t")).unwrap();
        assert!(matches!(
            f.write("t/0/control", b"compact\n"),
            Err(FsError::Storage(StorageError::InvalidArgument(_)))
        ));
        f.write("t/control", b"compact\n").unwrap();
        let shown = String::from_utf8(f.read("t/control").unwrap()).unwrap();
        assert!(
            shown.contains("t: skipped (cleanup.policy=delete)"),
            "{shown}"
        );
        f.write("control", b"retention\n").unwrap();
        let shown = String::from_utf8(f.read("control").unwrap()).unwrap();
        assert!(
            shown.contains("t/0: 0 segments deleted") && shown.contains("t/1: "),
            "{shown}"
        );
    }

    #[test]
    fn rmdir_deletes_a_topic_and_its_names() {
        let f = fixture();
        f.fs.mkdir(ROOT_INO, OsStr::new("t")).unwrap();
        f.write("t/0/append", b"x\n").unwrap();
        let old = f.ino("t").unwrap();
        f.fs.rmdir(ROOT_INO, OsStr::new("t")).unwrap();
        assert!(matches!(f.ino("t"), Err(FsError::NotFound(_))));
        f.fs.mkdir(ROOT_INO, OsStr::new("t")).unwrap();
        assert_ne!(f.ino("t").unwrap(), old);
        assert_eq!(f.read("t/0/log").unwrap(), b"");
    }

    /// The kernel may send `forget` for a number while another lookup of the same name is
    /// being answered. The number a lookup replies with must still resolve afterwards.
    #[test]
    fn a_lookup_racing_a_forget_never_replies_with_a_dropped_number() {
        let f = fixture();
        f.fs.mkdir(ROOT_INO, OsStr::new("t")).unwrap();
        let partition = f.ino("t/0").unwrap();
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..20_000 {
                        let ino = f.fs.lookup(partition, OsStr::new("log")).unwrap().attr.ino;
                        f.fs.getattr(ino, None)
                            .unwrap_or_else(|e| panic!("inode {ino} from a lookup: {e}"));
                        f.fs.forget(ino, 1);
                    }
                });
            }
        });
    }
}
