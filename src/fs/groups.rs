//! `groups/` and `consume/`: consumer groups as files (SPEC 1.7).
//!
//! - `groups/<group>` reads as the group's committed offset of the partition and a newline;
//!   ENOENT when the group never committed there. Writing a decimal offset (surrounding
//!   whitespace and a trailing newline allowed) commits it: storage's OffsetCommit, which
//!   returns once the commit is appended, so the `write()` returns a durable commit. Anything
//!   that is not a number, a negative number or an offset past the log end is EINVAL and
//!   changes nothing. One offset per `write()`, as `control` takes one command per `write()`.
//!   `echo 42 > groups/g` creates the group (the `create` of a name that does not exist).
//!   `ls groups/` lists the groups that committed an offset of the partition.
//! - `consume/<group>` opened for reading is a snapshot of the records from the group's
//!   committed offset (or the log start, when it never committed or retention removed that
//!   offset since) to the log end at open, rendered as `log` renders them (value and `\n`).
//!   Closing it commits the offset after the last *whole* record the reader was given (the
//!   highest byte position any `read()` returned), so the next open goes on from there.
//!   Opening it while another open of the same group and partition is live fails with EBUSY.
//!   `ls consume/` lists the same groups as `groups/`; any valid group name opens.
//! - Group names follow topic naming rules (1 to 249 characters of `[A-Za-z0-9._-]`, not `.`
//!   or `..`); another name is EINVAL at lookup and at create.
//!
//! When the commit happens: at the first `close()` (FUSE flush) that follows a `read()`, and
//! at the release when that never came. FUSE sends the release after `close()` has returned,
//! so committing (and ending the EBUSY claim) only then would let a second `cat` that starts
//! right after the first one see the old offset or EBUSY. A `close()` before any `read()` —
//! a shell opening `< consume/g`, `dup2`-ing it and closing the first descriptor — commits
//! nothing and keeps the claim. Reads after that commit (through a descriptor shared with
//! another process) commit again at their own close.
//!
//! The guarantee is at-most-once: what `read()` returned counts as consumed, even if the
//! reader dies before it has processed it. For at-least-once, read `from/$(cat groups/g)` and
//! write the next offset to `groups/g` after processing (see SEMANTICS.md).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

use log::{debug, info};

use crate::fs::error::{FsError, FsResult};
use crate::fs::filesystem::{lock, AccessMode, Entry, Handle, LmqFs, Opened};
use crate::fs::node::{Node, PartitionId, ViewId, ViewKind};
use crate::fs::view::{ReadState, ViewMap};
use crate::storage::{Partition, StorageError};

/// The (partition, group) pairs with a live `consume/<group>` open.
pub type ConsumerClaims = HashSet<(PartitionId, Arc<str>)>;

/// An open `consume/<group>`.
pub struct ConsumeHandle {
    partition: PartitionId,
    group: Arc<str>,
    log: Arc<dyn Partition>,
    map: Arc<ViewMap>,
    /// Where the snapshot starts in the map: the position of `start_offset`.
    base: u64,
    /// Bytes of the snapshot: the records in `[start_offset, end_offset)`.
    len: u64,
    start_offset: i64,
    /// The log end offset at open.
    end_offset: i64,
    state: Mutex<ConsumeState>,
}

struct ConsumeState {
    reader: ReadState,
    /// The highest snapshot byte any `read()` returned up to.
    read_to: u64,
    /// Whether a `read()` came since the open.
    read_called: bool,
    /// The offset this handle committed last (`start_offset` until it commits).
    committed: i64,
    /// Whether this handle still holds the (partition, group) claim.
    claimed: bool,
}

impl ConsumeHandle {
    pub fn partition(&self) -> &PartitionId {
        &self.partition
    }

    /// The snapshot's length in bytes (what `stat` of the open file shows).
    pub fn len_bytes(&self) -> u64 {
        self.len
    }
}

/// Parses what a `write()` to `groups/<group>` carries: one decimal offset.
pub fn parse_commit(data: &[u8]) -> FsResult<i64> {
    let text = std::str::from_utf8(data).unwrap_or("").trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FsError::invalid(format!(
            "groups: expected a decimal offset, got {:?}",
            String::from_utf8_lossy(data)
        )));
    }
    text.parse::<i64>()
        .map_err(|e| FsError::invalid(format!("groups: offset {text:?}: {e}")))
}

impl LmqFs {
    /// Topic naming rules for a group name; EINVAL (not ENOENT) for any other name.
    fn check_group_name(&self, name: &str) -> FsResult<()> {
        match self.storage().validate_topic_name(name) {
            Ok(()) => Ok(()),
            Err(StorageError::InvalidTopicName { reason, .. }) => Err(FsError::invalid(format!(
                "invalid group name {name:?}: {reason} (group names follow topic naming rules)"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    fn group_name<'n>(&self, name: &'n OsStr) -> FsResult<&'n str> {
        let name = std::str::from_utf8(name.as_bytes())
            .map_err(|_| FsError::invalid("group names are ASCII [A-Za-z0-9._-]"))?;
        self.check_group_name(name)?;
        Ok(name)
    }

    /// `groups/<name>`: the node of a group that committed an offset of `p`.
    pub(super) fn resolve_group(&self, p: &PartitionId, name: &str) -> FsResult<Node> {
        self.check_group_name(name)?;
        if self.partition_log(p)?.committed_offset(name)?.is_none() {
            return Err(FsError::not_found(format!(
                "/{p}/groups/{name}: the group never committed an offset here"
            )));
        }
        Ok(Node::Group(p.clone(), Arc::from(name)))
    }

    /// `consume/<name>`: any valid group name.
    pub(super) fn resolve_consume(&self, p: &PartitionId, name: &str) -> FsResult<Node> {
        self.check_group_name(name)?;
        self.partition_log(p)?;
        Ok(Node::Consume(p.clone(), Arc::from(name)))
    }

    /// The partition exists and the name is valid (a group file may not have a commit yet
    /// between its `create` and its first write).
    pub(super) fn validate_group(&self, p: &PartitionId, group: &str) -> FsResult<()> {
        self.check_group_name(group)?;
        self.partition_log(p).map(drop)
    }

    /// The content of `groups/<group>`: the committed offset and a newline.
    pub(super) fn group_text(&self, p: &PartitionId, group: &str) -> FsResult<Vec<u8>> {
        match self.partition_log(p)?.committed_offset(group)? {
            Some(offset) => Ok(format!("{offset}\n").into_bytes()),
            None => Err(FsError::not_found(format!(
                "/{p}/groups/{group}: the group never committed an offset here"
            ))),
        }
    }

    /// The size `stat` shows for `groups/<group>`: 0 before the first commit.
    pub(super) fn group_size(&self, p: &PartitionId, group: &str) -> FsResult<u64> {
        match self.group_text(p, group) {
            Ok(text) => Ok(text.len() as u64),
            Err(FsError::NotFound(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// The entries of `groups/` (as `Node::Group`) or `consume/` (as `Node::Consume`): the
    /// groups that committed an offset of `p`, sorted.
    pub(super) fn list_groups(
        &self,
        p: &PartitionId,
        consume: bool,
    ) -> FsResult<Vec<(Node, String)>> {
        let groups = self.partition_log(p)?.groups()?;
        Ok(groups
            .into_iter()
            .map(|g| {
                let name: Arc<str> = Arc::from(g.as_str());
                let node = if consume {
                    Node::Consume(p.clone(), name)
                } else {
                    Node::Group(p.clone(), name)
                };
                (node, g)
            })
            .collect())
    }

    /// A `write()` to `groups/<group>`: commits the offset it carries.
    pub(super) fn write_group(&self, p: &PartitionId, group: &str, data: &[u8]) -> FsResult<()> {
        let offset = parse_commit(data)?;
        self.partition_log(p)?.commit_offset(group, offset)?;
        info!("/{p}/groups/{group}: committed offset {offset}");
        Ok(())
    }

    /// `create` in `groups/` (`echo 42 > groups/g` of a new group): an open group file whose
    /// writes commit. Nothing is stored until the first write.
    pub(super) fn create_group(
        &self,
        p: &PartitionId,
        name: &OsStr,
        mode: AccessMode,
    ) -> FsResult<(Entry, Opened)> {
        self.check_writable_mount()?;
        let group = self.group_name(name)?;
        self.partition_log(p)?;
        let node = Node::Group(p.clone(), Arc::from(group));
        let _ = mode; // Reads of a created group file see it empty, whatever the mode.
        let opened = self.open_handle(Handle::Writable {
            node: node.clone(),
            snapshot: Vec::new(),
        });
        let ino = lock(&self.inodes).lookup(&node);
        let entry = self.attr_of(ino, &node, None)?;
        debug!("/{p}/groups/{group}: created (inode {ino})");
        Ok((entry, opened))
    }

    /// Opens `consume/<group>`: claims the (partition, group) pair (EBUSY if taken) and
    /// snapshots the range [committed offset or log start, log end).
    pub(super) fn open_consume(
        &self,
        p: &PartitionId,
        group: &Arc<str>,
        mode: AccessMode,
    ) -> FsResult<Opened> {
        if mode.writes() {
            return Err(FsError::AccessDenied(format!(
                "/{p}/consume/{group}: read-only; commit by writing to groups/{group}"
            )));
        }
        let log = self.partition_log(p)?;
        let claim = (p.clone(), group.clone());
        if !lock(&self.consumers).insert(claim.clone()) {
            return Err(FsError::Busy(format!(
                "/{p}/consume/{group} is already open: one consumer per group and partition"
            )));
        }
        match self.snapshot_consume(p, group, log) {
            Ok(handle) => {
                debug!(
                    "/{p}/consume/{group}: opened at offsets {}..{} ({} bytes)",
                    handle.start_offset, handle.end_offset, handle.len
                );
                Ok(self.open_handle(Handle::Consume(handle)))
            }
            Err(e) => {
                lock(&self.consumers).remove(&claim);
                Err(e)
            }
        }
    }

    fn snapshot_consume(
        &self,
        p: &PartitionId,
        group: &Arc<str>,
        log: Arc<dyn Partition>,
    ) -> FsResult<ConsumeHandle> {
        let committed = log.committed_offset(group)?;
        let generation = log.view_generation();
        let end_offset = log.log_end_offset();
        let start_offset = committed.unwrap_or(generation.log_start_offset).clamp(
            generation.log_start_offset,
            end_offset.max(generation.log_start_offset),
        );
        let map = self.view_map(&ViewId {
            partition: p.clone(),
            kind: ViewKind::Log,
            generation: generation.generation,
            start_offset: generation.log_start_offset,
            from: None,
        })?;
        let base = map.position_of(start_offset)?;
        let end = map.position_of(end_offset)?;
        Ok(ConsumeHandle {
            partition: p.clone(),
            group: group.clone(),
            log,
            map,
            base,
            len: end.saturating_sub(base),
            start_offset,
            end_offset,
            state: Mutex::new(ConsumeState {
                reader: ReadState::default(),
                read_to: 0,
                read_called: false,
                committed: start_offset,
                claimed: true,
            }),
        })
    }

    /// A `read()` of an open `consume/<group>`: the snapshot's bytes at `offset`.
    pub(super) fn read_consume(
        &self,
        handle: &ConsumeHandle,
        offset: u64,
        size: u32,
    ) -> FsResult<Vec<u8>> {
        let mut state = lock(&handle.state);
        state.read_called = true;
        if offset >= handle.len {
            return Ok(Vec::new());
        }
        let size = (size as u64).min(handle.len - offset) as usize;
        let data = handle
            .map
            .read(handle.base + offset, size, &mut state.reader)?;
        state.read_to = state.read_to.max(offset + data.len() as u64);
        Ok(data)
    }

    /// A `close()` (`released` false) or the release of an open `consume/<group>`: commits
    /// the offset after the last whole record read, if that is past what this handle
    /// committed, and ends the claim. A `close()` before any `read()` does neither.
    pub(super) fn close_consume(&self, handle: &ConsumeHandle, released: bool) -> FsResult<()> {
        let mut state = lock(&handle.state);
        if !released && !state.read_called {
            return Ok(());
        }
        let result = self.commit_consumed(handle, &mut state);
        if state.claimed && (released || result.is_ok()) {
            state.claimed = false;
            lock(&self.consumers).remove(&(handle.partition.clone(), handle.group.clone()));
        }
        result
    }

    fn commit_consumed(&self, handle: &ConsumeHandle, state: &mut ConsumeState) -> FsResult<()> {
        let next = if state.read_to == 0 {
            return Ok(());
        } else if state.read_to >= handle.len {
            handle.end_offset
        } else {
            handle
                .map
                .offset_after_whole_records(handle.base + state.read_to)?
                .clamp(handle.start_offset, handle.end_offset)
        };
        if next <= state.committed {
            return Ok(());
        }
        handle.log.commit_offset(&handle.group, next)?;
        info!(
            "/{}/consume/{}: committed offset {next} (consumed offsets {}..{next})",
            handle.partition, handle.group, state.committed
        );
        state.committed = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{LogConfig, LogManager};
    use crate::fs::inode::ROOT_INO;
    use crate::fs::FsOptions;

    fn ino(fs: &LmqFs, path: &str) -> FsResult<u64> {
        let mut ino = ROOT_INO;
        for part in path.split('/') {
            ino = fs.lookup(ino, OsStr::new(part))?.attr.ino;
        }
        Ok(ino)
    }

    #[test]
    fn groups_and_consume_without_a_mount() {
        let dir = tempfile::tempdir().unwrap();
        let manager = LogManager::open(dir.path(), LogConfig::default(), 1).unwrap();
        let fs = LmqFs::new(Arc::new(manager), FsOptions::default());
        fs.mkdir(ROOT_INO, OsStr::new("t")).unwrap();
        let append = ino(&fs, "t/0/append").unwrap();
        let fh = fs.open(append, AccessMode::Write, false).unwrap().fh;
        fs.write(append, fh, 0, b"aa\nbb\ncc\n", 0).unwrap();
        fs.release(append, fh).unwrap();

        // A new group through create, committed by the write.
        let groups = ino(&fs, "t/0/groups").unwrap();
        assert!(matches!(
            ino(&fs, "t/0/groups/g"),
            Err(FsError::NotFound(_))
        ));
        assert!(matches!(
            fs.create(groups, OsStr::new("a b"), AccessMode::Write),
            Err(FsError::InvalidInput(_))
        ));
        let (entry, opened) = fs
            .create(groups, OsStr::new("g"), AccessMode::Write)
            .unwrap();
        let g = entry.attr.ino;
        assert!(matches!(
            fs.write(g, opened.fh, 0, b"4\n", 0),
            Err(FsError::Storage(StorageError::InvalidArgument(_)))
        ));
        fs.write(g, opened.fh, 0, b"1\n", 0).unwrap();
        fs.release(g, opened.fh).unwrap();
        let names: Vec<String> = fs
            .readdir(groups)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, [".", "..", "g"]);

        // consume/g from offset 1; a second open is busy; a read that stops inside a record
        // commits the whole records before it, at close.
        let consume = ino(&fs, "t/0/consume/g").unwrap();
        let fh = fs.open(consume, AccessMode::Read, false).unwrap().fh;
        assert!(matches!(
            fs.open(consume, AccessMode::Read, false),
            Err(FsError::Busy(_))
        ));
        assert_eq!(fs.getattr(consume, Some(fh)).unwrap().attr.size, 6);
        assert_eq!(fs.read(consume, fh, 0, 4).unwrap(), b"bb\nc");
        fs.flush(consume, fh, 0).unwrap();
        let g = ino(&fs, "t/0/groups/g").unwrap();
        let rfh = fs.open(g, AccessMode::Read, false).unwrap().fh;
        assert_eq!(fs.read(g, rfh, 0, 100).unwrap(), b"2\n");
        fs.release(g, rfh).unwrap();
        // The close ended the claim; the release commits nothing more.
        let again = fs.open(consume, AccessMode::Read, false).unwrap().fh;
        fs.release(consume, fh).unwrap();
        assert_eq!(fs.read(consume, again, 0, 100).unwrap(), b"cc\n");
        fs.release(consume, again).unwrap();
        let fh = fs.open(consume, AccessMode::Read, false).unwrap().fh;
        assert_eq!(fs.read(consume, fh, 0, 100).unwrap(), b"");
        fs.release(consume, fh).unwrap();
    }

    #[test]
    fn commits_are_one_decimal_offset() {
        assert_eq!(parse_commit(b"42\n").unwrap(), 42);
        assert_eq!(parse_commit(b"0").unwrap(), 0);
        assert_eq!(parse_commit(b" 7 \n").unwrap(), 7);
        for bad in [
            &b""[..],
            b"\n",
            b"-1\n",
            b"+1",
            b"abc",
            b"1 2",
            b"1.5",
            b"0x10",
            b"99999999999999999999",
            b"\xff",
        ] {
            assert!(
                matches!(parse_commit(bad), Err(FsError::InvalidInput(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
