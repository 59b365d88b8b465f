//! `follow/`: streams that wait for new records (SPEC 1.7).
//!
//! `follow/<offset>`, `follow/end` and their `.jsonl` forms are streams, not files: st_size is
//! 0, they are not seekable, and each open has its own position, starting at the offset (or,
//! for `end`, at the log end when opened). A read returns the whole records available at the
//! position, rendered like `log` (value + `\n`) or `log.jsonl`, as many as fit the read's size
//! (a record larger than that is returned over several reads); when none is available it
//! would block ([`StreamRead::WouldBlock`]).
//!
//! Blocking is the adapter's business: it parks the reply without holding a thread and asks
//! again when [`StreamListener::appended`] says the partition grew. Every append made through
//! the mount calls the listener once it is readable. A stream whose topic was deleted reads
//! end-of-file. Retention that passes a stream's position moves it to the new log start;
//! offsets compaction removed are skipped.
//!
//! Thread-safety: a stream's position is behind its own mutex; concurrent reads of one open
//! file each get different records.

use std::sync::{Arc, Mutex};

use crate::fs::error::{FsError, FsResult};
use crate::fs::filesystem::{lock, Handle, LmqFs};
use crate::fs::json::write_record_json;
use crate::fs::node::{FollowFrom, PartitionId, ViewKind};
use crate::storage::{decode_batch, AppendInfo, NewRecord, Partition, StorageError};

/// Batch bytes fetched per step while filling a read.
const FETCH_BYTES: usize = 256 * 1024;

/// Told when a stream may have something new to read.
pub trait StreamListener: Send + Sync {
    /// Records were appended to `partition` and are readable.
    fn appended(&self, partition: &PartitionId);
    /// `topic` was deleted: its streams read end-of-file.
    fn topic_deleted(&self, topic: &str);
}

/// What a read of a stream found.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamRead {
    Data(Vec<u8>),
    /// Nothing to read yet.
    WouldBlock,
    /// The stream ended (its topic was deleted).
    Eof,
}

/// The position of one open stream.
#[derive(Debug)]
pub struct StreamState {
    /// The offset of the next record to return.
    next_offset: i64,
    /// Rendered bytes of a record larger than the last read, not returned yet.
    pending: Vec<u8>,
}

impl StreamState {
    pub fn new(next_offset: i64) -> StreamState {
        StreamState {
            next_offset,
            pending: Vec::new(),
        }
    }
}

/// The bytes of `record` in a stream of `kind`.
fn render(kind: ViewKind, record: &crate::storage::Record, out: &mut Vec<u8>) {
    match kind {
        ViewKind::Log => out.extend_from_slice(record.value.as_deref().unwrap_or_default()),
        ViewKind::Jsonl => write_record_json(record, out),
    }
    out.push(b'\n');
}

/// Fills up to `size` bytes of whole records from `state`'s position.
fn fill(
    log: &dyn Partition,
    kind: ViewKind,
    state: &mut StreamState,
    size: usize,
) -> FsResult<Vec<u8>> {
    let size = size.max(1);
    if !state.pending.is_empty() {
        let n = size.min(state.pending.len());
        return Ok(state.pending.drain(..n).collect());
    }
    let log_start = log.log_start_offset();
    if state.next_offset < log_start {
        state.next_offset = log_start;
    }
    let mut out = Vec::new();
    let mut record_bytes = Vec::new();
    loop {
        let log_end = log.log_end_offset();
        if state.next_offset >= log_end {
            return Ok(out);
        }
        let generation = log.view_generation().generation;
        let batches = log.fetch(generation, state.next_offset, FETCH_BYTES.max(size))?;
        if batches.is_empty() {
            return Ok(out);
        }
        for batch in batches {
            let next = batch.header.next_offset();
            if next <= state.next_offset {
                continue;
            }
            let decoded = decode_batch(&batch.bytes).map_err(StorageError::from)?;
            for record in decoded.records {
                if record.offset < state.next_offset || record.offset >= log_end {
                    continue;
                }
                record_bytes.clear();
                render(kind, &record, &mut record_bytes);
                if !out.is_empty() && out.len() + record_bytes.len() > size {
                    return Ok(out);
                }
                state.next_offset = record.offset + 1;
                if record_bytes.len() > size {
                    // Only this record, over several reads.
                    out.extend_from_slice(&record_bytes[..size]);
                    state.pending = record_bytes.split_off(size);
                    return Ok(out);
                }
                out.extend_from_slice(&record_bytes);
            }
            // Offsets compaction removed at the end of the batch.
            state.next_offset = state.next_offset.max(next.min(log_end));
        }
        if out.len() >= size {
            return Ok(out);
        }
    }
}

impl LmqFs {
    /// The state of a new stream of `partition` starting at `from`.
    pub(super) fn open_stream(
        &self,
        partition: &PartitionId,
        from: FollowFrom,
        kind: ViewKind,
    ) -> FsResult<Handle> {
        let log = self.partition_log(partition)?;
        let next_offset = match from {
            FollowFrom::Offset(offset) => offset,
            FollowFrom::End => log.log_end_offset(),
        };
        Ok(Handle::Stream {
            partition: partition.clone(),
            log,
            kind,
            state: Mutex::new(StreamState::new(next_offset)),
        })
    }

    /// The partition a stream handle follows, `None` if `fh` is not a stream.
    pub fn stream_partition(&self, fh: u64) -> Option<PartitionId> {
        match &*self.handle(fh).ok()? {
            Handle::Stream { partition, .. } => Some(partition.clone()),
            _ => None,
        }
    }

    /// Reads up to `size` bytes of whole records from the stream `fh`, or says it would block.
    pub fn stream_read(&self, fh: u64, size: u32) -> FsResult<StreamRead> {
        let handle = self.handle(fh)?;
        let Handle::Stream {
            partition,
            log,
            kind,
            state,
        } = &*handle
        else {
            return Err(FsError::BadHandle(format!(
                "file handle {fh} is not a stream"
            )));
        };
        let mut state = lock(state);
        if state.pending.is_empty() && self.partition_log(partition).is_err() {
            return Ok(StreamRead::Eof);
        }
        let data = fill(&**log, *kind, &mut state, size as usize)?;
        Ok(if data.is_empty() {
            StreamRead::WouldBlock
        } else {
            StreamRead::Data(data)
        })
    }

    /// Whether a read of stream `fh` would not block (data, or end-of-file).
    pub fn stream_ready(&self, fh: u64) -> FsResult<bool> {
        let handle = self.handle(fh)?;
        let Handle::Stream {
            partition,
            log,
            state,
            ..
        } = &*handle
        else {
            return Ok(true);
        };
        let state = lock(state);
        if !state.pending.is_empty() || self.partition_log(partition).is_err() {
            return Ok(true);
        }
        // A position below the log start jumps to it, where there may be records.
        Ok(state.next_offset.max(log.log_start_offset()) < log.log_end_offset())
    }

    /// Registers who is told about appends and deleted topics (the FUSE adapter).
    pub fn set_stream_listener(&self, listener: Arc<dyn StreamListener>) {
        // Records other writers append to a shared cluster wake streams too. Weak: the
        // listener owns this filesystem, which owns the storage.
        let weak = Arc::downgrade(&listener);
        self.storage()
            .watch_appends(Arc::new(move |topic: &str, partition: u32| {
                if let Some(listener) = weak.upgrade() {
                    listener.appended(&PartitionId {
                        topic: topic.into(),
                        partition,
                    });
                }
            }));
        *lock(&self.stream_listener) = Some(listener);
    }

    /// Every append of the file interface: appends `records` to `log` (the partition `p`),
    /// then wakes the streams that follow it.
    pub(super) fn append_records(
        &self,
        p: &PartitionId,
        log: &dyn Partition,
        records: &[NewRecord],
    ) -> Result<AppendInfo, StorageError> {
        let info = log.append(records)?;
        let listener = lock(&self.stream_listener).clone();
        if let Some(listener) = listener {
            listener.appended(p);
        }
        Ok(info)
    }

    /// [`Self::append_records`] of plain values (the lines of `append`).
    pub(super) fn append_values(
        &self,
        p: &PartitionId,
        log: &dyn Partition,
        values: &[&[u8]],
    ) -> Result<AppendInfo, StorageError> {
        let info = log.append_values(values)?;
        let listener = lock(&self.stream_listener).clone();
        if let Some(listener) = listener {
            listener.appended(p);
        }
        Ok(info)
    }

    /// Tells the listener that `topic` is gone.
    pub(super) fn notify_topic_deleted(&self, topic: &str) {
        let listener = lock(&self.stream_listener).clone();
        if let Some(listener) = listener {
            listener.topic_deleted(topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Log, LogConfig, NewRecord};
    use crate::storage::embedded::EmbeddedPartition;

    fn partition(dir: &std::path::Path, config: LogConfig) -> (Arc<Log>, EmbeddedPartition) {
        let log = Arc::new(Log::open(dir, config).unwrap());
        let p = EmbeddedPartition::new(Arc::clone(&log), Default::default());
        (log, p)
    }

    #[test]
    fn fills_whole_records_and_splits_only_an_oversized_one() {
        let dir = tempfile::tempdir().unwrap();
        let (log, p) = partition(dir.path(), LogConfig::default());
        let mut state = StreamState::new(0);
        assert_eq!(fill(&p, ViewKind::Log, &mut state, 100).unwrap(), b"");
        log.append(&[NewRecord::value("one"), NewRecord::value("two")])
            .unwrap();
        // Six bytes: "one\n" fits, "two\n" would not.
        assert_eq!(fill(&p, ViewKind::Log, &mut state, 6).unwrap(), b"one\n");
        assert_eq!(fill(&p, ViewKind::Log, &mut state, 6).unwrap(), b"two\n");
        assert_eq!(fill(&p, ViewKind::Log, &mut state, 6).unwrap(), b"");
        log.append(&[NewRecord::value("a long record")]).unwrap();
        assert_eq!(fill(&p, ViewKind::Log, &mut state, 5).unwrap(), b"a lon");
        assert_eq!(fill(&p, ViewKind::Log, &mut state, 5).unwrap(), b"g rec");
        assert_eq!(fill(&p, ViewKind::Log, &mut state, 50).unwrap(), b"ord\n");
        log.append(&[NewRecord::value("x")]).unwrap();
        let json = fill(&p, ViewKind::Jsonl, &mut state, 1000).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            (value["offset"].as_i64(), value["value"].as_str()),
            (Some(3), Some("x"))
        );
    }

    #[test]
    fn a_position_passed_by_retention_moves_to_the_log_start() {
        let dir = tempfile::tempdir().unwrap();
        let (log, p) = partition(dir.path(), LogConfig::default());
        for i in 0..5 {
            log.append(&[NewRecord::value(format!("r{i}"))]).unwrap();
        }
        let mut state = StreamState::new(1);
        log.delete_records(3).unwrap();
        assert_eq!(
            fill(&p, ViewKind::Log, &mut state, 100).unwrap(),
            b"r3\nr4\n"
        );
    }
}
