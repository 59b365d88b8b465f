//! `keys/`: a partition as a key-value map (SPEC 1.6).
//!
//! - `ls keys/` lists the live keys (latest record not a tombstone) whose bytes are a valid file
//!   name ([`is_key_file_name`]); other keys are reachable through `append.jsonl` and
//!   `log.jsonl` only.
//! - `cat keys/<key>` reads the latest value, byte for byte; its size is the value's length. A
//!   key that is not live is ENOENT.
//! - A file of `keys/` opened for writing is a buffer ([`KeyBuffer`]): it starts empty when the
//!   open created or truncated it (`>`, `O_TRUNC`, `create`), and as the current value
//!   otherwise (so `>>` adds to it); writes land at their offsets. When the file is closed, the
//!   buffer is appended as ONE record with that key, if the open wrote to it; a close error
//!   (EFBIG, ENOSPC, ...) reaches `close()`. A file that was created or truncated but never
//!   written appends an empty value when the kernel releases it (just after the last `close()`
//!   returns): shells open the target of `>`, `dup2` it and close the original descriptor before
//!   writing, so a close with nothing written yet cannot tell `touch` from `echo`, and appending
//!   an empty value there would show a value nobody wrote. A read-only open appends nothing.
//! - A write that would make the record larger than the topic's `max.message.bytes` fails with
//!   EFBIG, and then the handle appends nothing at all.
//! - `rm keys/<key>` appends a tombstone for the key.
//!
//! The engine serializes appends, so concurrent writers of one key each append one whole
//! record, and the last append wins.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

use log::{debug, info};

use crate::fs::error::{FsError, FsResult};
use crate::fs::filesystem::{lock, AccessMode, Entry, Handle, LmqFs, Opened};
use crate::fs::node::{is_key_file_name, Node, PartitionDir, PartitionId, MAX_FILE_NAME_BYTES};
use crate::storage::{NewRecord, Partition, StorageError};

/// Bytes a single-record batch adds to its key and value, at most: the v2 batch header (61)
/// plus the record's framing (length, attributes, timestamp and offset deltas, key and value
/// lengths, header count as varints: 28). Used to refuse a value at `write()` time that the
/// engine could not append at close.
pub const SINGLE_RECORD_BATCH_OVERHEAD_BYTES: usize = 61 + 28;

/// The largest value `key` may have under `max_message_bytes`. The value is counted
/// uncompressed, so the limit does not depend on how well it compresses.
pub fn max_value_bytes(max_message_bytes: u32, key: &[u8]) -> usize {
    (max_message_bytes as usize).saturating_sub(SINGLE_RECORD_BATCH_OVERHEAD_BYTES + key.len())
}

/// What an open file of `keys/` holds until it is closed.
#[derive(Debug, Default)]
pub struct KeyBuffer {
    content: Vec<u8>,
    /// Written to (or cut to a non-zero size) since the last append: the next close appends.
    written: bool,
    /// Created or truncated to empty since the last append: the release appends, even without
    /// a write.
    reset: bool,
    /// A write was refused (too large): this handle appends nothing.
    failed: bool,
}

impl KeyBuffer {
    /// A buffer holding `content`; `reset` when the open created or truncated the file.
    pub fn new(content: Vec<u8>, reset: bool) -> KeyBuffer {
        KeyBuffer {
            content,
            written: false,
            reset,
            failed: false,
        }
    }

    pub fn content(&self) -> &[u8] {
        &self.content
    }

    pub fn len(&self) -> usize {
        self.content.len()
    }

    pub fn is_empty(&self) -> bool {
        self.content.is_empty()
    }

    /// Writes `data` at `offset` (a gap before it reads as zeros, as in any file). Fails with
    /// `RecordTooLarge` when the content would pass `max_value_bytes`; the buffer is then
    /// poisoned and appends nothing.
    pub fn write_at(&mut self, offset: u64, data: &[u8], max_value_bytes: usize) -> FsResult<()> {
        let end = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(data.len()))
            .unwrap_or(usize::MAX);
        let new_len = end.max(self.content.len());
        if self.failed || new_len > max_value_bytes {
            self.failed = true;
            return Err(StorageError::RecordTooLarge {
                size: new_len,
                max_message_bytes: max_value_bytes,
            }
            .into());
        }
        if self.content.len() < end {
            self.content.resize(end, 0);
        }
        self.content[end - data.len()..end].copy_from_slice(data);
        self.written = true;
        Ok(())
    }

    /// `ftruncate` / `O_TRUNC` of the open file.
    pub fn truncate(&mut self, size: u64, max_value_bytes: usize) -> FsResult<()> {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > max_value_bytes {
            return Err(StorageError::RecordTooLarge {
                size,
                max_message_bytes: max_value_bytes,
            }
            .into());
        }
        self.content.resize(size, 0);
        if size == 0 {
            self.reset = true;
        } else {
            self.written = true;
        }
        Ok(())
    }

    /// The value a `close()` appends, if any: the content, once written. The buffer is then
    /// clean until the next change.
    pub fn take_on_close(&mut self) -> Option<Vec<u8>> {
        if self.failed || !self.written {
            return None;
        }
        self.written = false;
        self.reset = false;
        Some(self.content.clone())
    }

    /// The value the release (after the last close) appends, if any: also the empty value of a
    /// file created or truncated and never written.
    pub fn take_on_release(&mut self) -> Option<Vec<u8>> {
        if self.failed || !(self.written || self.reset) {
            return None;
        }
        self.written = false;
        self.reset = false;
        Some(self.content.clone())
    }
}

/// A keyed record with `value` (`None`: a tombstone).
fn keyed_record(key: &str, value: Option<Vec<u8>>) -> NewRecord {
    NewRecord {
        key: Some(key.as_bytes().to_vec()),
        value,
        headers: vec![],
        timestamp: None,
    }
}

fn key_name(name: &OsStr) -> FsResult<&str> {
    if name.len() > MAX_FILE_NAME_BYTES {
        return Err(FsError::NameTooLong(format!(
            "a key file name has at most {MAX_FILE_NAME_BYTES} bytes, got {}",
            name.len()
        )));
    }
    if !is_key_file_name(name.as_bytes()) {
        return Err(FsError::invalid(format!(
            "{:?} cannot be a key file name: keys/ holds UTF-8 keys without '/' or NUL, \
             not '.' or '..', of 1 to 255 bytes (other keys: use append.jsonl)",
            name.to_string_lossy()
        )));
    }
    Ok(std::str::from_utf8(name.as_bytes()).expect("checked above"))
}

impl LmqFs {
    /// `keys/<name>`: the node of a live key.
    pub(super) fn resolve_key(&self, p: &PartitionId, name: &str) -> FsResult<Node> {
        let log = self.partition_log(p)?;
        if !is_key_file_name(name.as_bytes()) || log.latest_for_key(name.as_bytes())?.is_none() {
            return Err(FsError::not_found(format!("/{p}/keys/{name}: no live key")));
        }
        Ok(Node::Key(p.clone(), Arc::from(name)))
    }

    /// The latest value of a live key.
    pub(super) fn key_value(&self, p: &PartitionId, key: &str) -> FsResult<Vec<u8>> {
        let log = self.partition_log(p)?;
        match log.latest_for_key(key.as_bytes())? {
            Some(record) => Ok(record.value.unwrap_or_default()),
            None => Err(FsError::not_found(format!("/{p}/keys/{key}: no live key"))),
        }
    }

    /// The entries of `keys/`: live keys that are valid file names, sorted bytewise.
    pub(super) fn list_keys(&self, p: &PartitionId) -> FsResult<Vec<(Node, String)>> {
        let log = self.partition_log(p)?;
        Ok(log
            .live_keys()?
            .into_iter()
            .filter(|key| is_key_file_name(key))
            .filter_map(|key| String::from_utf8(key).ok())
            .map(|key| (Node::Key(p.clone(), Arc::from(key.as_str())), key))
            .collect())
    }

    fn max_value_bytes(log: &dyn Partition, key: &str) -> usize {
        max_value_bytes(log.config().max_message_bytes, key.as_bytes())
    }

    /// Opens `keys/<key>`: reads see the value at open (empty when `truncate`), writes fill a
    /// buffer that closing appends.
    pub(super) fn open_key(
        &self,
        p: &PartitionId,
        key: &Arc<str>,
        mode: AccessMode,
        truncate: bool,
    ) -> FsResult<Opened> {
        if mode.writes() {
            self.check_writable_mount()?;
        }
        let log = self.partition_log(p)?;
        let value = self.key_value(p, key)?;
        let truncate = truncate && mode.writes();
        let content = if truncate { Vec::new() } else { value };
        Ok(self.open_handle(Handle::Key {
            partition: p.clone(),
            log,
            key: key.clone(),
            writable: mode.writes(),
            buffer: Mutex::new(KeyBuffer::new(content, truncate)),
        }))
    }

    /// `create` in `keys/`: a new (or, in a race, truncated) key file, open. Closing it appends
    /// the written content, or an empty value when nothing was written.
    pub(super) fn create_key(
        &self,
        p: &PartitionId,
        name: &OsStr,
        mode: AccessMode,
    ) -> FsResult<(Entry, Opened)> {
        self.check_writable_mount()?;
        let key = key_name(name)?;
        let log = self.partition_log(p)?;
        let node = Node::Key(p.clone(), Arc::from(key));
        let opened = self.open_handle(Handle::Key {
            partition: p.clone(),
            log,
            key: Arc::from(key),
            writable: true,
            buffer: Mutex::new(KeyBuffer::new(Vec::new(), true)),
        });
        let _ = mode; // Reads of a created file see its buffer, whatever the mode.
        let ino = {
            let mut inodes = lock(&self.inodes);
            // A key created after it was removed is a new file.
            inodes.detach(&node);
            inodes.lookup(&node)
        };
        let entry = self.attr_of(ino, &node, Some(&*self.handle(opened.fh)?))?;
        debug!("/{p}/keys/{key}: created (inode {ino})");
        Ok((entry, opened))
    }

    /// `rm keys/<key>`: appends a tombstone.
    pub(super) fn remove_key(&self, p: &PartitionId, key: &Arc<str>) -> FsResult<()> {
        self.check_writable_mount()?;
        let log = self.partition_log(p)?;
        let info = self.append_records(p, &*log, &[keyed_record(key, None)])?;
        lock(&self.inodes).detach(&Node::Key(p.clone(), key.clone()));
        info!(
            "/{p}/keys/{key}: removed (tombstone at offset {})",
            info.first_offset
        );
        Ok(())
    }

    /// `truncate keys/<key>` without an open file: appends the value cut (or zero-extended) to
    /// `size` bytes.
    pub(super) fn truncate_key(&self, p: &PartitionId, key: &str, size: u64) -> FsResult<()> {
        self.check_writable_mount()?;
        let log = self.partition_log(p)?;
        let mut buffer = KeyBuffer::new(self.key_value(p, key)?, false);
        buffer.truncate(size, Self::max_value_bytes(&*log, key))?;
        if let Some(value) = buffer.take_on_release() {
            self.append_records(p, &*log, &[keyed_record(key, Some(value))])?;
        }
        Ok(())
    }

    /// The buffer and value limit of an open key file opened for writing.
    fn writable_key_buffer<'h>(
        &self,
        handle: &'h Handle,
    ) -> FsResult<(&'h PartitionId, &'h Arc<str>, &'h Mutex<KeyBuffer>, usize)> {
        let Handle::Key {
            partition,
            log,
            key,
            writable,
            buffer,
        } = handle
        else {
            return Err(FsError::BadHandle("not a key file".into()));
        };
        if !writable {
            return Err(FsError::BadHandle(format!(
                "/{partition}/keys/{key} is open read-only"
            )));
        }
        self.check_writable_mount()?;
        Ok((partition, key, buffer, Self::max_value_bytes(&**log, key)))
    }

    /// A write to an open key file: into its buffer, at `offset`.
    pub(super) fn write_key(&self, handle: &Handle, offset: u64, data: &[u8]) -> FsResult<()> {
        let (partition, key, buffer, limit) = self.writable_key_buffer(handle)?;
        lock(buffer).write_at(offset, data, limit).inspect_err(|_| {
            info!(
                "/{partition}/keys/{key}: value over max.message.bytes (at most {limit} bytes \
                 of value for this key); this open file will append nothing"
            )
        })
    }

    /// `ftruncate` (or `O_TRUNC` sent as a truncate) of an open key file.
    pub(super) fn truncate_open_key(&self, handle: &Handle, size: u64) -> FsResult<()> {
        let (_, _, buffer, limit) = self.writable_key_buffer(handle)?;
        lock(buffer).truncate(size, limit)
    }

    /// Appends the buffer of a key file: on a `close()` (`released` false) if it was written,
    /// on the release also if it was created or truncated.
    pub(super) fn append_key_value(&self, handle: &Handle, released: bool) -> FsResult<()> {
        let Handle::Key {
            partition,
            log,
            key,
            buffer,
            ..
        } = handle
        else {
            return Ok(());
        };
        let mut buffer = lock(buffer);
        let value = if released {
            buffer.take_on_release()
        } else {
            buffer.take_on_close()
        };
        let Some(value) = value else {
            return Ok(());
        };
        let size = value.len();
        match self.append_records(partition, &**log, &[keyed_record(key, Some(value))]) {
            Ok(info) => {
                // The key's inode may be a fresh one now (created after a removal).
                debug!(
                    "/{partition}/keys/{key}: {size} bytes appended at offset {}",
                    info.first_offset
                );
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The size `stat` shows for a key file: the open buffer's through a handle, else the
    /// latest value's.
    pub(super) fn key_size(
        &self,
        p: &PartitionId,
        key: &str,
        handle: Option<&Handle>,
    ) -> FsResult<u64> {
        if let Some(Handle::Key { buffer, .. }) = handle {
            return Ok(lock(buffer).len() as u64);
        }
        match self.key_value(p, key) {
            Ok(value) => Ok(value.len() as u64),
            // Created and still open, not yet appended: the kernel asks for the new inode's
            // attributes before the creating process writes.
            Err(e @ FsError::NotFound(_)) => self.open_key_buffer_len(p, key).ok_or(e),
            Err(e) => Err(e),
        }
    }

    /// Whether `node` is the `keys/` directory (the only place files can be created).
    pub(super) fn is_keys_dir(node: &Node) -> bool {
        matches!(node, Node::PartitionDir(_, PartitionDir::Keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_writes_land_at_offsets_and_append_once() {
        let mut b = KeyBuffer::new(b"old value".to_vec(), false);
        assert_eq!(b.take_on_close(), None, "an untouched open appends nothing");
        assert_eq!(
            b.take_on_release(),
            None,
            "an untouched open appends nothing"
        );
        b.write_at(4, b"VALUE!", 100).unwrap();
        assert_eq!(b.content(), b"old VALUE!");
        b.write_at(12, b"x", 100).unwrap();
        assert_eq!(b.content(), b"old VALUE!\0\0x");
        assert_eq!(b.take_on_close().as_deref(), Some(&b"old VALUE!\0\0x"[..]));
        assert_eq!(b.take_on_close(), None, "appended once");
        assert_eq!(b.take_on_release(), None, "appended once");
    }

    #[test]
    fn created_or_truncated_files_append_an_empty_value_on_release_only() {
        let mut b = KeyBuffer::new(Vec::new(), true);
        // The close of a dup'ed descriptor before the first write appends nothing ...
        assert_eq!(b.take_on_close(), None);
        // ... the write then goes in whole, once.
        b.write_at(0, b"v\n", 100).unwrap();
        assert_eq!(b.take_on_close().as_deref(), Some(&b"v\n"[..]));
        assert_eq!(b.take_on_release(), None);
        // Never written: the release appends the empty value.
        let mut b = KeyBuffer::new(Vec::new(), true);
        assert_eq!(b.take_on_close(), None);
        assert_eq!(b.take_on_release().as_deref(), Some(&b""[..]));
        // ftruncate to 0 of an open file is a reset too.
        let mut b = KeyBuffer::new(b"old".to_vec(), false);
        b.truncate(0, 100).unwrap();
        assert_eq!(b.take_on_close(), None);
        assert_eq!(b.take_on_release().as_deref(), Some(&b""[..]));
    }

    #[test]
    fn a_too_large_write_poisons_the_buffer() {
        let mut b = KeyBuffer::new(Vec::new(), true);
        b.write_at(0, b"12345", 8).unwrap();
        let e = b.write_at(5, b"6789", 8).unwrap_err();
        assert!(matches!(
            e,
            FsError::Storage(StorageError::RecordTooLarge { size: 9, .. })
        ));
        assert!(b.write_at(0, b"1", 8).is_err(), "later writes fail too");
        assert_eq!(b.take_on_close(), None, "nothing is appended");
        assert_eq!(b.take_on_release(), None, "nothing is appended");
    }

    #[test]
    fn the_value_limit_leaves_room_for_the_batch() {
        assert_eq!(max_value_bytes(1000, b"key"), 1000 - 89 - 3);
        assert_eq!(max_value_bytes(10, b"key"), 0);
    }
}
