//! The byte mapping behind `log`, `log.jsonl` and `from/<offset>`: a view is the concatenation
//! of every record's rendering (value + `\n`, or a JSON line) from a start offset on.
//!
//! A [`ViewMap`] serves one (partition, view kind, generation). It keeps sparse checkpoints,
//! `(offset, position)` pairs saying "the record at `offset` starts at byte `position` of the
//! view", one at least every [`CHECKPOINT_INTERVAL_BYTES`] of view bytes, plus the view's
//! current end. It is built incrementally: each [`ViewMap::len_bytes`] decodes only the batches
//! appended since the last call, so the cost of following a growing log is proportional to
//! what was appended, and the whole log is decoded at most once per map.
//!
//! A read at byte `p` binary-searches the checkpoints for the last one at or before `p` and
//! decodes forward from there: O(log n) plus a scan bounded by the checkpoint interval (plus
//! one batch). Sequential readers pass back a [`Cursor`] so the next read starts where the
//! previous one stopped instead of at the checkpoint.
//!
//! Positions never move within a generation: records are only appended, and records below the
//! generation's start are never part of it. The generation is the log's view generation
//! ([`ViewGeneration`]) when the view was looked up; it changes whenever records below the log
//! end are removed (`delete-records`, retention, compaction). Every read goes through
//! `Log::read_batches_at(generation, ..)`, which serves the log as it was at that generation:
//! segments that retention deleted or compaction replaced stay readable to it for
//! `file.delete.delay.ms`, and records appended later are seen as they arrive. So a reader of an
//! old generation keeps its coordinates across all three. If the old files are gone, reads
//! fail with [`FsError::Gone`] rather than returning wrong bytes.
//!
//! Compaction leaves offset gaps, so the record at the generation's start offset may not
//! exist: the first checkpoint names the generation's start until the first record is mapped,
//! then that record.
//!
//! Thread-safety: the map's state is behind one `Mutex`; decoding for a read happens outside
//! it (only the checkpoint lookup is under the lock), while extension holds it so that two
//! concurrent extenders cannot both append the same records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::error::{FsError, FsResult};
use crate::fs::json::write_record_json;
use crate::fs::node::ViewKind;
use crate::storage::{
    decode_batch, for_each_record, Partition, Record, StorageError, ViewGeneration,
};

/// View bytes between checkpoints: bounds the forward scan of a read.
pub const CHECKPOINT_INTERVAL_BYTES: u64 = 64 * 1024;
/// Batch bytes asked of the engine per call while scanning.
const SCAN_CHUNK_BYTES: usize = 256 * 1024;
/// `from/<offset>` start positions remembered per map.
const FROM_POSITION_CACHE: usize = 1024;

/// "The record at `offset` starts at byte `position`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub offset: i64,
    pub position: u64,
}

#[derive(Debug)]
struct MapState {
    /// Sorted by offset and by position; the first is `(start offset, 0)`, then
    /// `(first record's offset, 0)` once a record is mapped.
    checkpoints: Vec<Cursor>,
    /// The first offset not yet mapped.
    next_offset: i64,
    /// The view's length up to `next_offset`.
    total_bytes: u64,
    bytes_since_checkpoint: u64,
    from_positions: HashMap<i64, u64>,
    /// Damage in the log where mapping stopped (a batch failed its CRC, a torn or cut batch):
    /// the view ends there, and a read at its end gets this error (EIO) instead of end of file.
    damage: Option<Damage>,
}

/// Where a view's log is damaged: the engine's `Corrupt` error, kept to be answered again.
#[derive(Debug, Clone)]
struct Damage {
    path: std::path::PathBuf,
    position: u64,
    reason: String,
}

impl Damage {
    fn error(&self) -> FsError {
        FsError::Storage(crate::storage::StorageError::Corrupt {
            path: self.path.clone(),
            position: self.position,
            reason: self.reason.clone(),
        })
    }
}

/// The position map of one (partition, view kind, generation). See the module docs.
pub struct ViewMap {
    log: Arc<dyn Partition>,
    kind: ViewKind,
    generation: ViewGeneration,
    state: Mutex<MapState>,
}

impl std::fmt::Debug for ViewMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewMap")
            .field("log", &self.log.location())
            .field("kind", &self.kind)
            .field("generation", &self.generation)
            .finish()
    }
}

/// A record as a scan sees it: its value borrowed from the batch for `log` (no per-record
/// allocation), the whole decoded record for `log.jsonl`.
#[derive(Debug, Clone, Copy)]
struct Seen<'a> {
    offset: i64,
    value: Option<&'a [u8]>,
    /// Set for [`ViewKind::Jsonl`] scans only.
    record: Option<&'a Record>,
}

impl<'a> Seen<'a> {
    fn whole(record: &'a Record) -> Seen<'a> {
        Seen {
            offset: record.offset,
            value: record.value.as_deref(),
            record: Some(record),
        }
    }

    /// The record's JSON line (without `\n`) in `scratch`.
    fn json<'s>(&self, scratch: &'s mut Vec<u8>) -> &'s [u8] {
        scratch.clear();
        write_record_json(self.record.expect("JSON views scan whole records"), scratch);
        scratch
    }
}

/// Bytes of `record` in a view of `kind`. `scratch` is reused for JSON rendering.
fn rendered_len(kind: ViewKind, record: &Seen, scratch: &mut Vec<u8>) -> u64 {
    match kind {
        ViewKind::Log => record.value.map_or(0, <[u8]>::len) as u64 + 1,
        ViewKind::Jsonl => record.json(scratch).len() as u64 + 1,
    }
}

/// Copies the part of `record`'s rendering that falls in view bytes `[from, to)` to `out`,
/// the record starting at view byte `record_start`.
fn copy_rendered(
    kind: ViewKind,
    record: &Seen,
    record_start: u64,
    from: u64,
    to: u64,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> u64 {
    let body: &[u8] = match kind {
        ViewKind::Log => record.value.unwrap_or_default(),
        ViewKind::Jsonl => record.json(scratch),
    };
    let newline: &[u8] = b"\n";
    let len = (body.len() + 1) as u64;
    if from <= record_start && record_start + len <= to {
        // The common case: the whole record.
        out.extend_from_slice(body);
        out.push(b'\n');
        return len;
    }
    let lo = from.saturating_sub(record_start).min(len) as usize;
    let hi = to.saturating_sub(record_start).min(len) as usize;
    for (piece_start, piece) in [(0usize, body), (body.len(), newline)] {
        let a = lo.max(piece_start);
        let b = hi.min(piece_start + piece.len());
        if a < b {
            out.extend_from_slice(&piece[a - piece_start..b - piece_start]);
        }
    }
    len
}

impl ViewMap {
    pub fn new(log: Arc<dyn Partition>, kind: ViewKind, generation: ViewGeneration) -> ViewMap {
        let start = generation.log_start_offset;
        ViewMap {
            log,
            kind,
            generation,
            state: Mutex::new(MapState {
                checkpoints: vec![Cursor {
                    offset: start,
                    position: 0,
                }],
                next_offset: start,
                total_bytes: 0,
                bytes_since_checkpoint: 0,
                from_positions: HashMap::new(),
                damage: None,
            }),
        }
    }

    pub fn kind(&self) -> ViewKind {
        self.kind
    }

    pub fn generation(&self) -> ViewGeneration {
        self.generation
    }

    pub fn log(&self) -> &Arc<dyn Partition> {
        &self.log
    }

    fn lock(&self) -> MutexGuard<'_, MapState> {
        // A panic while holding the lock leaves a map that is at worst incomplete: every
        // field is updated record by record, so the state is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decodes records from `start` on, calling `visit` for each record with offset >=
    /// `start` until it returns false, asking the engine for about `chunk_bytes` of batches at
    /// a time. Returns the offset after the last batch that was fully visited (so a caller can
    /// skip trailing gaps left by compaction).
    fn scan(
        &self,
        start: i64,
        chunk_bytes: usize,
        mut visit: impl FnMut(&Seen) -> bool,
    ) -> FsResult<i64> {
        let mut offset = start;
        let mut scratch = Vec::new();
        loop {
            let batches = self
                .log
                .fetch(self.generation.generation, offset, chunk_bytes)?;
            let mut progressed = false;
            for fetched in batches {
                let next = fetched.header.next_offset();
                if next <= offset {
                    continue;
                }
                let mut stopped = false;
                match self.kind {
                    ViewKind::Log => {
                        for_each_record(&fetched.bytes, offset, &mut scratch, |r| {
                            let seen = Seen {
                                offset: r.offset,
                                value: r.value,
                                record: None,
                            };
                            stopped = !visit(&seen);
                            !stopped
                        })
                        .map_err(StorageError::from)?;
                    }
                    ViewKind::Jsonl => {
                        let decoded = decode_batch(&fetched.bytes).map_err(StorageError::from)?;
                        for record in decoded.records.iter().filter(|r| r.offset >= offset) {
                            if !visit(&Seen::whole(record)) {
                                stopped = true;
                                break;
                            }
                        }
                    }
                }
                if stopped {
                    return Ok(offset);
                }
                offset = next;
                progressed = true;
            }
            if !progressed {
                return Ok(offset);
            }
        }
    }

    /// Maps every record up to the current log end and returns the view's length in bytes.
    pub fn len_bytes(&self) -> FsResult<u64> {
        let mut state = self.lock();
        let log_end_offset = self.log.log_end_offset();
        if state.next_offset >= log_end_offset {
            return Ok(state.total_bytes);
        }
        let kind = self.kind;
        let mut scratch = Vec::new();
        let start = state.next_offset;
        let st = &mut *state;
        let scanned = self.scan(start, SCAN_CHUNK_BYTES, |record| {
            if record.offset >= log_end_offset {
                return false;
            }
            if st.total_bytes == 0 && st.checkpoints.len() == 1 {
                // The first record mapped: a cursor must name a record that exists.
                st.checkpoints[0].offset = record.offset;
            }
            if st.bytes_since_checkpoint >= CHECKPOINT_INTERVAL_BYTES {
                st.checkpoints.push(Cursor {
                    offset: record.offset,
                    position: st.total_bytes,
                });
                st.bytes_since_checkpoint = 0;
            }
            let len = rendered_len(kind, record, &mut scratch);
            st.total_bytes += len;
            st.bytes_since_checkpoint += len;
            st.next_offset = record.offset + 1;
            true
        });
        let batch_end = match scanned {
            Ok(end) => end,
            // Damaged data ends the view: every record before it stays readable, and a read
            // at the end answers the damage (see `read`). Found again on each call.
            Err(FsError::Storage(crate::storage::StorageError::Corrupt {
                path,
                position,
                reason,
            })) => {
                if st.damage.is_none() {
                    log::error!(
                        "{}: the log is damaged at position {position} of {} ({reason}); its \
                         views end there with EIO; `lmqfs dump-log --verify` on the file shows \
                         the damage",
                        self.log.location().display(),
                        path.display()
                    );
                }
                st.damage = Some(Damage {
                    path,
                    position,
                    reason,
                });
                return Ok(st.total_bytes);
            }
            Err(e) => return Err(e),
        };
        st.damage = None;
        // Offsets with no record (compacted away) at the end of a fully visited batch.
        st.next_offset = st.next_offset.max(batch_end.min(log_end_offset));
        Ok(st.total_bytes)
    }

    /// The view position where the first record with offset >= `offset` starts (the view's
    /// end if there is none yet). `offset` must be >= the generation.
    pub fn position_of(&self, offset: i64) -> FsResult<u64> {
        let total = self.len_bytes()?;
        let (start, next_offset) = {
            let state = self.lock();
            if let Some(position) = state.from_positions.get(&offset) {
                return Ok(*position);
            }
            let i = state.checkpoints.partition_point(|c| c.offset <= offset);
            (state.checkpoints[i.saturating_sub(1)], state.next_offset)
        };
        if offset >= next_offset {
            return Ok(total);
        }
        let mut position = start.position;
        let mut scratch = Vec::new();
        let kind = self.kind;
        self.scan(start.offset, SCAN_CHUNK_BYTES, |record| {
            if record.offset >= offset {
                return false;
            }
            position += rendered_len(kind, record, &mut scratch);
            true
        })?;
        let position = position.min(total);
        let mut state = self.lock();
        if state.from_positions.len() >= FROM_POSITION_CACHE {
            state.from_positions.clear();
        }
        state.from_positions.insert(offset, position);
        Ok(position)
    }

    /// Reads up to `size` bytes at view byte `position`. `hint` is where a previous read of
    /// the same reader stopped; the returned cursor is the hint for the next read.
    pub fn read(
        &self,
        position: u64,
        size: usize,
        hint: Option<Cursor>,
    ) -> FsResult<(Vec<u8>, Option<Cursor>)> {
        let total = self.len_bytes()?;
        if position >= total || size == 0 {
            if size > 0 && position == total {
                if let Some(damage) = &self.lock().damage {
                    return Err(damage.error());
                }
            }
            return Ok((Vec::new(), hint));
        }
        let end = total.min(position + size as u64);
        let checkpoint = {
            let state = self.lock();
            let i = state
                .checkpoints
                .partition_point(|c| c.position <= position);
            state.checkpoints[i.saturating_sub(1)]
        };
        let start = match hint {
            Some(h) if h.position <= position && h.position >= checkpoint.position => h,
            _ => checkpoint,
        };
        let mut out = Vec::with_capacity((end - position) as usize);
        let mut scratch = Vec::new();
        let mut record_start = start.position;
        let mut first = true;
        let mut gone = false;
        let mut last = None;
        let kind = self.kind;
        // Batches take at least the view's bytes for `log` (plus record and batch overhead):
        // one fetch covers most reads.
        let chunk_bytes = (end - start.position) as usize + SCAN_CHUNK_BYTES;
        self.scan(start.offset, chunk_bytes, |record| {
            if first {
                first = false;
                // A cursor always names a record that exists in this generation; another
                // first record means its segment has been deleted since.
                if record.offset != start.offset {
                    gone = true;
                    return false;
                }
            }
            let len = copy_rendered(
                kind,
                record,
                record_start,
                position,
                end,
                &mut scratch,
                &mut out,
            );
            last = Some(Cursor {
                offset: record.offset,
                position: record_start,
            });
            record_start += len;
            record_start < end
        })?;
        if gone || (first && out.len() < (end - position) as usize) {
            return Err(FsError::Gone(format!(
                "records from offset {} of view generation {} of {}",
                start.offset,
                self.generation.generation,
                self.log.location().display()
            )));
        }
        Ok((out, last))
    }

    /// The offset after the last record whose rendering ends at or before view byte
    /// `position`: where a reader that has read the view's bytes up to `position` stands,
    /// counting whole records only. Costs a checkpoint lookup and a bounded scan, as a read.
    pub fn offset_after_whole_records(&self, position: u64) -> FsResult<i64> {
        self.len_bytes()?;
        let checkpoint = {
            let state = self.lock();
            let i = state
                .checkpoints
                .partition_point(|c| c.position <= position);
            state.checkpoints[i.saturating_sub(1)]
        };
        // Every record before the checkpoint ends at or before its position.
        let mut after = checkpoint.offset;
        let mut record_start = checkpoint.position;
        let mut scratch = Vec::new();
        let kind = self.kind;
        self.scan(checkpoint.offset, SCAN_CHUNK_BYTES, |record| {
            let end = record_start + rendered_len(kind, record, &mut scratch);
            if end > position {
                return false;
            }
            after = record.offset + 1;
            record_start = end;
            true
        })?;
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Log, LogConfig, NewRecord, TimestampType};

    /// `log` behind the storage seam, as the filesystem sees it.
    fn partition(log: &Arc<Log>) -> Arc<dyn Partition> {
        Arc::new(crate::storage::embedded::EmbeddedPartition::new(
            Arc::clone(log),
            Default::default(),
        ))
    }

    fn record(offset: i64, value: Option<&[u8]>) -> Record {
        Record {
            offset,
            timestamp: 0,
            timestamp_type: TimestampType::CreateTime,
            key: None,
            value: value.map(<[u8]>::to_vec),
            headers: vec![],
        }
    }

    #[test]
    fn copy_rendered_slices_value_and_newline() {
        let r = record(3, Some(b"abc"));
        let r = &Seen::whole(&r);
        let mut scratch = Vec::new();
        let mut out = Vec::new();
        assert_eq!(
            copy_rendered(ViewKind::Log, r, 10, 0, 100, &mut scratch, &mut out),
            4
        );
        assert_eq!(out, b"abc\n");
        out.clear();
        copy_rendered(ViewKind::Log, r, 10, 11, 14, &mut scratch, &mut out);
        assert_eq!(out, b"bc\n");
        out.clear();
        copy_rendered(ViewKind::Log, r, 10, 13, 20, &mut scratch, &mut out);
        assert_eq!(out, b"\n");
        out.clear();
        copy_rendered(ViewKind::Log, r, 10, 10, 12, &mut scratch, &mut out);
        assert_eq!(out, b"ab");
        out.clear();
        let tomb = record(4, None);
        assert_eq!(
            copy_rendered(
                ViewKind::Log,
                &Seen::whole(&tomb),
                0,
                0,
                9,
                &mut scratch,
                &mut out
            ),
            1
        );
        assert_eq!(out, b"\n");
    }

    fn open_log(dir: &std::path::Path) -> Arc<Log> {
        Arc::new(Log::open(dir, LogConfig::default()).expect("open log"))
    }

    /// The expected view bytes, rendered the slow way.
    fn expected(log: &Log, kind: ViewKind, from: i64) -> Vec<u8> {
        let mut out = Vec::new();
        let end = log.log_end_offset();
        let mut offset = from;
        while offset < end {
            let records = log.read(offset, 1 << 20).unwrap();
            for r in &records {
                match kind {
                    ViewKind::Log => {
                        out.extend_from_slice(r.value.as_deref().unwrap_or_default());
                    }
                    ViewKind::Jsonl => write_record_json(r, &mut out),
                }
                out.push(b'\n');
                offset = r.offset + 1;
            }
        }
        out
    }

    fn fill(log: &Log, batches: usize, per_batch: usize) {
        for b in 0..batches {
            let records: Vec<NewRecord> = (0..per_batch)
                .map(|i| {
                    NewRecord::value(format!(
                        "batch {b} record {i} {}",
                        "x".repeat((b * 7 + i) % 50)
                    ))
                })
                .collect();
            log.append(&records).unwrap();
        }
    }

    #[test]
    fn reads_match_the_rendered_log_at_every_position() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        fill(&log, 300, 40);
        for kind in [ViewKind::Log, ViewKind::Jsonl] {
            let map = ViewMap::new(partition(&log), kind, log.view_generation());
            let want = expected(&log, kind, 0);
            assert_eq!(map.len_bytes().unwrap(), want.len() as u64);
            assert!(map.lock().checkpoints.len() > 2, "checkpoints were added");
            // Random-ish positions and sizes, without hints.
            let mut position = 0u64;
            while position < want.len() as u64 {
                let size = 1 + (position as usize * 31 % 9000);
                let (got, _) = map.read(position, size, None).unwrap();
                let end = (position as usize + size).min(want.len());
                assert_eq!(got, &want[position as usize..end], "{kind:?} at {position}");
                position += 4099;
            }
            // Sequential reads with hints reproduce the whole view.
            let mut all = Vec::new();
            let mut hint = None;
            loop {
                let (chunk, next) = map.read(all.len() as u64, 128 * 1024, hint).unwrap();
                if chunk.is_empty() {
                    break;
                }
                all.extend_from_slice(&chunk);
                hint = next;
            }
            assert_eq!(all, want);
        }
    }

    #[test]
    fn offset_after_whole_records_counts_only_records_read_to_their_end() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        fill(&log, 200, 40);
        let map = ViewMap::new(partition(&log), ViewKind::Log, log.view_generation());
        let want = expected(&log, ViewKind::Log, 0);
        // The record ends, the slow way: after the n-th newline, n records are whole.
        let mut whole = 0i64;
        for (i, byte) in want.iter().enumerate() {
            if i % 997 == 0 {
                assert_eq!(map.offset_after_whole_records(i as u64).unwrap(), whole);
            }
            if *byte == b'\n' {
                whole += 1;
                assert_eq!(
                    map.offset_after_whole_records(i as u64 + 1).unwrap(),
                    whole,
                    "at {}",
                    i + 1
                );
            }
        }
        assert_eq!(whole, log.log_end_offset());
    }

    #[test]
    fn map_grows_with_the_log_and_from_positions_match() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        let map = ViewMap::new(partition(&log), ViewKind::Log, log.view_generation());
        assert_eq!(map.len_bytes().unwrap(), 0);
        assert_eq!(map.read(0, 10, None).unwrap().0, b"");
        fill(&log, 10, 5);
        let first = expected(&log, ViewKind::Log, 0);
        assert_eq!(map.len_bytes().unwrap(), first.len() as u64);
        fill(&log, 10, 5);
        let second = expected(&log, ViewKind::Log, 0);
        assert_eq!(map.len_bytes().unwrap(), second.len() as u64);
        assert_eq!(&second[..first.len()], &first[..], "old bytes never change");
        for from in [0, 1, 17, 49, 99, 100] {
            let tail = expected(&log, ViewKind::Log, from);
            assert_eq!(
                map.position_of(from).unwrap(),
                (second.len() - tail.len()) as u64
            );
        }
    }

    #[test]
    fn old_generation_keeps_coordinates_after_delete_records() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        fill(&log, 20, 5);
        let old = ViewMap::new(partition(&log), ViewKind::Log, log.view_generation());
        let before = expected(&log, ViewKind::Log, 0);
        assert_eq!(old.len_bytes().unwrap(), before.len() as u64);
        log.delete_records(50).unwrap();
        fill(&log, 1, 1);
        let generation = log.view_generation();
        assert_ne!(generation, old.generation());
        assert_eq!(generation.log_start_offset, 50);
        let new = ViewMap::new(partition(&log), ViewKind::Log, generation);
        let new_bytes = expected(&log, ViewKind::Log, 50);
        assert_eq!(new.len_bytes().unwrap(), new_bytes.len() as u64);
        // The old generation grew by exactly the new record and kept its prefix.
        let grown = old.len_bytes().unwrap();
        let (tail, _) = old.read(before.len() as u64, 1 << 20, None).unwrap();
        assert_eq!(grown, before.len() as u64 + tail.len() as u64);
        assert_eq!(tail, &new_bytes[new_bytes.len() - tail.len()..]);
        let (head, _) = old.read(0, 10, None).unwrap();
        assert_eq!(head, &before[..10]);
    }

    /// A log of a compacted topic: keys `k0..k4` written `rounds` times each, one segment per
    /// round, then an empty active segment.
    fn compacted_topic_log(dir: &std::path::Path, rounds: usize) -> Arc<Log> {
        let mut config = LogConfig::default();
        config.set("cleanup.policy", "compact").unwrap();
        let log = Arc::new(Log::open(dir, config).expect("open log"));
        for round in 0..rounds {
            let records: Vec<NewRecord> = (0..5)
                .map(|k| NewRecord {
                    key: Some(format!("k{k}").into_bytes()),
                    value: Some(format!("k{k} round {round}").into_bytes()),
                    headers: vec![],
                    timestamp: None,
                })
                .collect();
            log.append(&records).unwrap();
            log.roll().unwrap();
        }
        log
    }

    #[test]
    fn old_generation_keeps_coordinates_across_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let log = compacted_topic_log(dir.path(), 4);
        let old = ViewMap::new(partition(&log), ViewKind::Log, log.view_generation());
        let before = expected(&log, ViewKind::Log, 0);
        assert_eq!(old.len_bytes().unwrap(), before.len() as u64);
        let (head, hint) = old.read(0, 30, None).unwrap();
        assert_eq!(head, &before[..30]);

        let outcome = log
            .compact(crate::engine::now_ms(), true, &Default::default())
            .unwrap();
        assert!(outcome.records_removed > 0, "{outcome}");
        let generation = log.view_generation();
        assert_ne!(
            generation,
            old.generation(),
            "compaction makes a new generation"
        );
        // Offsets 0..15 were superseded: the new generation starts at a gap.
        assert_eq!(generation.log_start_offset, 0);
        let new = ViewMap::new(partition(&log), ViewKind::Log, generation);
        let compacted = expected(&log, ViewKind::Log, 0);
        assert_eq!(
            String::from_utf8(compacted.clone()).unwrap(),
            "k0 round 3\nk1 round 3\nk2 round 3\nk3 round 3\nk4 round 3\n"
        );
        assert_eq!(new.len_bytes().unwrap(), compacted.len() as u64);
        assert_eq!(new.read(0, 1 << 20, None).unwrap().0, compacted);
        assert_eq!(new.position_of(0).unwrap(), 0);
        assert_eq!(new.position_of(16).unwrap(), 11);

        // The old map still reads the bytes it mapped, and follows new appends.
        let (rest, _) = old.read(30, 1 << 20, hint).unwrap();
        assert_eq!([head, rest].concat(), before);
        log.append(&[NewRecord {
            key: Some(b"k9".to_vec()),
            value: Some(b"late".to_vec()),
            headers: vec![],
            timestamp: None,
        }])
        .unwrap();
        assert_eq!(old.len_bytes().unwrap(), before.len() as u64 + 5);
        assert_eq!(
            old.read(before.len() as u64, 100, None).unwrap().0,
            b"late\n"
        );
        assert_eq!(
            new.read(compacted.len() as u64, 100, None).unwrap().0,
            b"late\n"
        );
    }
}

#[cfg(test)]
mod concurrency_tests {
    use super::*;
    use crate::engine::{Log, LogConfig, NewRecord};

    #[test]
    fn readers_never_see_torn_bytes_while_the_log_grows() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
        let writer = {
            let log = log.clone();
            std::thread::spawn(move || {
                for b in 0..2000 {
                    let records: Vec<NewRecord> = (0..5)
                        .map(|i| NewRecord::value(format!("r{b:05}-{i}-{}", "y".repeat(40))))
                        .collect();
                    log.append(&records).unwrap();
                }
            })
        };
        let storage: Arc<dyn Partition> = Arc::new(
            crate::storage::embedded::EmbeddedPartition::new(log.clone(), Default::default()),
        );
        let map = Arc::new(ViewMap::new(storage, ViewKind::Log, log.view_generation()));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let map = map.clone();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let total = map.len_bytes().unwrap();
                        let mut got = Vec::new();
                        let mut hint = None;
                        while (got.len() as u64) < total {
                            let (chunk, next) = map.read(got.len() as u64, 4096, hint).unwrap();
                            assert!(!chunk.is_empty());
                            got.extend_from_slice(&chunk);
                            hint = next;
                        }
                        for line in got[..total as usize].split(|b| *b == b'\n') {
                            assert!(
                                line.is_empty() || line.len() == 49,
                                "{:?}",
                                String::from_utf8_lossy(line)
                            );
                        }
                    }
                })
            })
            .collect();
        writer.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
    }
}
