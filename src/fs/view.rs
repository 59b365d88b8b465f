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
//! Persistence: a clean stop stores each partition's maps ([`store_view_state`], a
//! [`ViewState`] blob kept by storage through [`Partition::store_view_state`]), and a new map of
//! the same records resumes from it ([`ViewMap::new`]), so the first `stat` after a restart maps
//! only the records appended after the stored state. That first `stat` reads only the blob's
//! header (each map's end and length, the segments it covered): its cost does not grow with
//! the log. The checkpoints are read later, in pieces of [`CHECKPOINTS_PER_PIECE`], by the
//! first read that needs them. The header is checksummed and checked against the log (its start
//! offset, its end, and the segments it covered, by base offset and size); a blob that is
//! missing, corrupt or stale is ignored with a log line and the map is built from the log. Each
//! piece, and the directory of pieces, has its own checksum, named by the part before it; a
//! piece found damaged when a read needs it makes the map drop the stored state and map the
//! log again (with a log line), so it never serves positions it cannot vouch for. Storage drops
//! the blob when records below the log end are removed (retention, compaction,
//! `delete-records`, truncation) or after an unclean stop.
//!
//! Appends through `append` keep the `log` map of the current generation caught up without
//! decoding ([`ViewMap::lines_appended`]): the view's bytes of a batch of lines are exactly the
//! lines, newlines included. So a partition written but never read still has its `log` map
//! stored at a clean stop. `log.jsonl` is not kept this way: the length of a record's JSON line
//! depends on every byte of its value (escapes, base64 of what is not UTF-8), which an append
//! would have to scan; it is mapped from the log on first use, as before.
//!
//! Thread-safety: the map's state is behind one `Mutex`; decoding for a read happens outside
//! it (only the checkpoint lookup, which may read a piece of stored state, is under the lock),
//! while extension holds it so that two concurrent extenders cannot both append the same
//! records. An append's update only tries the lock: it skips a map that is busy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::error::{FsError, FsResult};
use crate::fs::filesystem::LmqFs;
use crate::fs::json::write_record_json;
use crate::fs::node::{PartitionId, ViewId, ViewKind};
use crate::storage::{AppendInfo, MemoryRecords, Partition, Record, StorageError, ViewGeneration};

/// View bytes between checkpoints: bounds the forward scan of a read.
pub const CHECKPOINT_INTERVAL_BYTES: u64 = 64 * 1024;
/// Batch bytes asked of the engine per call while scanning.
const SCAN_CHUNK_BYTES: usize = 256 * 1024;
/// `from/<offset>` start positions remembered per map.
const FROM_POSITION_CACHE: usize = 1024;
/// The shortest map stored at a clean stop: a shorter one is mapped again from the log faster
/// than its state is written and read back (and a stop of many small partitions would write
/// one file each).
pub const MIN_STORED_VIEW_BYTES: u64 = CHECKPOINT_INTERVAL_BYTES;
/// Checkpoints per piece of stored state (64 KiB of them, about 256 MiB of view): what a read
/// loads of a stored map at a time.
#[cfg(not(test))]
pub const CHECKPOINTS_PER_PIECE: usize = 4096;
/// A few, so that unit tests' maps are stored in several pieces.
#[cfg(test)]
pub const CHECKPOINTS_PER_PIECE: usize = 3;

/// "The record at `offset` starts at byte `position`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub offset: i64,
    pub position: u64,
}

/// Which checkpoint a lookup wants: the last one at or before an offset, or a view byte.
#[derive(Debug, Clone, Copy)]
enum Key {
    Offset(i64),
    Position(u64),
}

impl Key {
    /// Whether `c` is at or before this key.
    fn at_or_before(self, c: &Cursor) -> bool {
        match self {
            Key::Offset(offset) => c.offset <= offset,
            Key::Position(position) => c.position <= position,
        }
    }
}

/// The index of the last of `sorted` at or before `key`; 0 when none is.
fn last_at_or_before(sorted: &[Cursor], key: Key) -> usize {
    sorted
        .partition_point(|c| key.at_or_before(c))
        .saturating_sub(1)
}

#[derive(Debug)]
struct MapState {
    /// The checkpoints of the stored state the map resumed from (they come before
    /// `checkpoints`), read piece by piece as lookups need them; `None` for a map built from
    /// the log.
    stored: Option<StoredCheckpoints>,
    /// Sorted by offset and by position. Without `stored`, the first is `(start offset, 0)`,
    /// then `(first record's offset, 0)` once a record is mapped; with it, the checkpoints
    /// added since (possibly none).
    checkpoints: Vec<Cursor>,
    /// The first offset not yet mapped.
    next_offset: i64,
    /// The view's length up to `next_offset`.
    total_bytes: u64,
    bytes_since_checkpoint: u64,
    /// `next_offset` when the map resumed from stored state (`None` if it did not): a map
    /// still there has nothing to store that the stored state does not hold.
    resumed_at: Option<i64>,
    from_positions: HashMap<i64, u64>,
    /// Damage in the log where mapping stopped (a batch failed its CRC, a torn or cut batch):
    /// the view ends there, and a read at its end gets this error (EIO) instead of end of file.
    damage: Option<Damage>,
}

impl MapState {
    /// A map of nothing yet, from `start`.
    fn empty(start: i64) -> MapState {
        MapState {
            stored: None,
            checkpoints: vec![Cursor {
                offset: start,
                position: 0,
            }],
            next_offset: start,
            total_bytes: 0,
            bytes_since_checkpoint: 0,
            resumed_at: None,
            from_positions: HashMap::new(),
            damage: None,
        }
    }

    /// The last checkpoint at or before `key` among those in memory, `None` when it is among
    /// the stored ones.
    fn in_memory_checkpoint(&self, key: Key) -> Option<Cursor> {
        match self.checkpoints.first() {
            Some(first) if self.stored.is_none() || key.at_or_before(first) => {
                Some(self.checkpoints[last_at_or_before(&self.checkpoints, key)])
            }
            _ => None,
        }
    }
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

/// Where one reader of a view (an open handle) stands: the record its last read stopped in
/// and the batches that read fetched (kept with their buffers), so a sequential reader fetches
/// and walks each batch once, into buffers it reuses. A reader that reaches the view's end
/// lets the buffers go. Reads at other positions start from the checkpoints as usual.
#[derive(Debug, Default)]
pub struct ReadState {
    cursor: Option<Cursor>,
    records: MemoryRecords,
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
    /// A map of `log`'s records in `generation`, resumed from the state a clean stop stored
    /// when that state is valid (see the module docs), else empty.
    /// Reads only the stored state's header: the checkpoints stay where they are until a
    /// lookup needs them.
    pub fn new(log: Arc<dyn Partition>, kind: ViewKind, generation: ViewGeneration) -> ViewMap {
        let mut state = MapState::empty(generation.log_start_offset);
        if let Some(stored) = load_map_header(log.as_ref(), kind, generation) {
            state.next_offset = stored.next_offset;
            state.total_bytes = stored.total_bytes;
            state.resumed_at = Some(stored.next_offset);
            if stored.total_bytes > 0 {
                // Else its one checkpoint is `(start, 0)`, as in an empty map.
                state.bytes_since_checkpoint = stored.total_bytes - stored.last.position;
                state.checkpoints.clear();
                state.stored = Some(StoredCheckpoints {
                    map: stored,
                    directory: None,
                    pieces: HashMap::new(),
                });
            }
        }
        ViewMap {
            log,
            kind,
            generation,
            state: Mutex::new(state),
        }
    }

    /// Whether the map is worth storing: it has mapped at least [`MIN_STORED_VIEW_BYTES`].
    fn worth_storing(&self) -> bool {
        self.lock().total_bytes >= MIN_STORED_VIEW_BYTES
    }

    /// What this map has learned, for [`store_view_state`]: `None` when its stored checkpoints
    /// cannot be read back (said in the log).
    fn stored(&self) -> Option<StoredMap> {
        let mut state = self.lock();
        let mut checkpoints = match &mut state.stored {
            None => Vec::new(),
            Some(stored) => match stored.all(self.log.as_ref(), self.generation) {
                Ok(checkpoints) => checkpoints,
                Err(reason) => {
                    log::warn!(
                        "{}: {:?} view: its stored checkpoints are unusable ({reason}); it is \
                         not stored again",
                        self.log.location().display(),
                        self.kind
                    );
                    return None;
                }
            },
        };
        checkpoints.extend_from_slice(&state.checkpoints);
        Some(StoredMap {
            kind: self.kind,
            next_offset: state.next_offset,
            total_bytes: state.total_bytes,
            checkpoints,
        })
    }

    /// Whether the state stored for this map's generation already holds all it knows.
    fn unchanged_since_resumed(&self) -> bool {
        let state = self.lock();
        state.resumed_at == Some(state.next_offset)
    }

    /// The last checkpoint at or before `key`, and the view's length as mapped. Reads the
    /// piece of stored state it is in if that is not in memory yet; when the stored state
    /// turns out unusable there, drops it (said in the log) and maps the view from the log.
    fn checkpoint_before(&self, key: Key) -> FsResult<(Cursor, u64)> {
        {
            let mut guard = self.lock();
            let state = &mut *guard;
            if let Some(c) = state.in_memory_checkpoint(key) {
                return Ok((c, state.total_bytes));
            }
            let stored = state.stored.as_mut().expect("no checkpoint in memory");
            match stored.checkpoint_before(key, self.log.as_ref(), self.generation) {
                Ok(c) => return Ok((c, state.total_bytes)),
                Err(reason) => {
                    log::warn!(
                        "{}: {:?} view: stored view state ignored (corrupt: {reason}); the \
                         view is mapped again from the log",
                        self.log.location().display(),
                        self.kind
                    );
                    *state = MapState::empty(self.generation.log_start_offset);
                }
            }
        }
        self.len_bytes()?;
        let state = self.lock();
        let c = state
            .in_memory_checkpoint(key)
            .expect("a map without stored state holds its checkpoints");
        Ok((c, state.total_bytes))
    }

    /// Records that the lines appended as offsets `first_offset..next_offset` take
    /// `view_bytes` of this `log` view (their values plus one `\n` each), when the map has
    /// mapped exactly up to `first_offset` and is not busy; else leaves them to be decoded by
    /// the next [`Self::len_bytes`]. Costs the same whatever the lines; returns whether the map
    /// took them. The batch's first record becomes a checkpoint when one is due, so a read
    /// still scans at most the checkpoint interval plus one batch.
    pub fn lines_appended(&self, first_offset: i64, next_offset: i64, view_bytes: u64) -> bool {
        debug_assert_eq!(
            self.kind,
            ViewKind::Log,
            "JSON lines are not the appended lines"
        );
        let Ok(mut guard) = self.state.try_lock() else {
            return false;
        };
        let st = &mut *guard;
        if st.damage.is_some() || st.next_offset != first_offset || next_offset <= first_offset {
            return false;
        }
        if st.stored.is_none() && st.total_bytes == 0 && st.checkpoints.len() == 1 {
            st.checkpoints[0].offset = first_offset;
        }
        if st.bytes_since_checkpoint >= CHECKPOINT_INTERVAL_BYTES {
            st.checkpoints.push(Cursor {
                offset: first_offset,
                position: st.total_bytes,
            });
            st.bytes_since_checkpoint = 0;
        }
        st.total_bytes += view_bytes;
        st.bytes_since_checkpoint += view_bytes;
        st.next_offset = next_offset;
        true
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
    ///
    /// `kept` is a reader's fetched batches, kept between reads: when they hold `start` (and
    /// the map's generation is still the log's) they are walked first instead of being
    /// fetched again, and the fetches reuse their buffers.
    fn scan(
        &self,
        start: i64,
        chunk_bytes: usize,
        kept: Option<&mut MemoryRecords>,
        mut visit: impl FnMut(&Seen) -> bool,
    ) -> FsResult<i64> {
        let mut local = MemoryRecords::new();
        let memory = kept.unwrap_or(&mut local);
        let mut offset = start;
        // Kept batches of an older generation are not reused: the log decides whether that
        // generation is still readable (its files may be gone: `Gone`).
        let mut fetch = !memory.holds(offset)
            || self.log.view_generation().generation != self.generation.generation;
        loop {
            if fetch {
                self.log
                    .fetch_into(self.generation.generation, offset, chunk_bytes, memory)?;
            }
            fetch = true;
            let mut progressed = false;
            for i in 0..memory.batch_count() {
                let (header, mut records) = memory
                    .batch_records(i, offset)
                    .map_err(StorageError::from)?;
                let next = header.next_offset();
                if next <= offset {
                    continue;
                }
                loop {
                    // The common record without a `Result` around it (the hot loop of `cat`).
                    let record = match records.next_common() {
                        Some(record) => record,
                        None => match records.next_record().map_err(StorageError::from)? {
                            Some(record) => record,
                            None => break,
                        },
                    };
                    let stopped = match self.kind {
                        ViewKind::Log => !visit(&Seen {
                            offset: record.offset,
                            value: record.value,
                            record: None,
                        }),
                        ViewKind::Jsonl => !visit(&Seen::whole(&record.to_record())),
                    };
                    if stopped {
                        return Ok(offset);
                    }
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
        let scanned = self.scan(start, SCAN_CHUNK_BYTES, None, |record| {
            if record.offset >= log_end_offset {
                return false;
            }
            if st.stored.is_none() && st.total_bytes == 0 && st.checkpoints.len() == 1 {
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
        {
            let state = self.lock();
            if let Some(position) = state.from_positions.get(&offset) {
                return Ok(*position);
            }
            if offset >= state.next_offset {
                return Ok(total);
            }
        }
        let (start, total) = self.checkpoint_before(Key::Offset(offset))?;
        let mut position = start.position;
        let mut scratch = Vec::new();
        let kind = self.kind;
        self.scan(start.offset, SCAN_CHUNK_BYTES, None, |record| {
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

    /// Reads up to `size` bytes at view byte `position`. `reader` is where the same reader's
    /// previous read stopped (and the batch it stopped in); it is updated for the next read.
    pub fn read(&self, position: u64, size: usize, reader: &mut ReadState) -> FsResult<Vec<u8>> {
        let hint = reader.cursor;
        let total = self.len_bytes()?;
        if position >= total || size == 0 {
            if size > 0 && position == total {
                if let Some(damage) = &self.lock().damage {
                    return Err(damage.error());
                }
            }
            return Ok(Vec::new());
        }
        let (checkpoint, total) = self.checkpoint_before(Key::Position(position))?;
        if position >= total {
            return Ok(Vec::new());
        }
        let end = total.min(position + size as u64);
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
        let scanned = self.scan(
            start.offset,
            chunk_bytes,
            Some(&mut reader.records),
            |record| {
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
            },
        );
        if scanned.is_err() {
            *reader = ReadState::default();
        }
        scanned?;
        if gone || (first && out.len() < (end - position) as usize) {
            *reader = ReadState::default();
            return Err(FsError::Gone(format!(
                "records from offset {} of view generation {} of {}",
                start.offset,
                self.generation.generation,
                self.log.location().display()
            )));
        }
        reader.cursor = last;
        if end == total {
            // At the end (a `tail -f`, or the last read of a `cat`): nothing to keep.
            reader.records = MemoryRecords::new();
        }
        Ok(out)
    }

    /// The offset after the last record whose rendering ends at or before view byte
    /// `position`: where a reader that has read the view's bytes up to `position` stands,
    /// counting whole records only. Costs a checkpoint lookup and a bounded scan, as a read.
    pub fn offset_after_whole_records(&self, position: u64) -> FsResult<i64> {
        self.len_bytes()?;
        let (checkpoint, _) = self.checkpoint_before(Key::Position(position))?;
        // Every record before the checkpoint ends at or before its position.
        let mut after = checkpoint.offset;
        let mut record_start = checkpoint.position;
        let mut scratch = Vec::new();
        let kind = self.kind;
        self.scan(checkpoint.offset, SCAN_CHUNK_BYTES, None, |record| {
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

// ----- persistence -------------------------------------------------------------------------

/// First bytes of a stored [`ViewState`].
const STATE_MAGIC: &[u8; 4] = b"LMQV";
/// The [`ViewState`] encoding this code writes and reads.
const STATE_VERSION: u32 = 2;
/// Bytes read at first for the header: one read covers the header of a log of up to about
/// 250 segments.
const HEADER_READ_BYTES: usize = 4096;
/// The longest header accepted (a million segments), so that a damaged length allocates
/// nothing absurd.
const MAX_HEADER_BYTES: usize = 16 << 20;
/// Fixed header bytes: magic, version, header length, log start offset, segment count, map
/// count, CRC.
const HEADER_FIXED_BYTES: usize = 4 + 4 + 4 + 8 + 4 + 4 + 4;
/// Bytes of a segment in the header.
const SEGMENT_BYTES: usize = 16;
/// Bytes of a map in the header.
const MAP_HEADER_BYTES: usize = 1 + 8 + 8 + 4 + 16 + 8 + 4 + 4;
/// Bytes of a directory entry.
const PIECE_ENTRY_BYTES: usize = 24;
/// Bytes of a checkpoint.
const CHECKPOINT_BYTES: usize = 16;

/// One map's state as stored: the checkpoints, the first offset not mapped and the length of
/// the view up to it. (Bytes since the last checkpoint are `total_bytes` minus its position.)
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredMap {
    kind: ViewKind,
    next_offset: i64,
    total_bytes: u64,
    checkpoints: Vec<Cursor>,
}

/// The maps of one partition's views, as stored at a clean stop, with what they describe: the
/// log start offset of their generation and the segments (base offset, size in bytes) that
/// held their records. A header, which is all a new map reads, then each map's checkpoints in
/// pieces of at most [`CHECKPOINTS_PER_PIECE`], each with its own checksum, read as lookups
/// need them. All integers big-endian:
///
/// ```text
/// header:
///   "LMQV", version u32 = 2, header bytes u32 (all of the header, its CRC included),
///   log start offset i64,
///   segment count u32, per segment: base offset i64, size u64,
///   map count u32, per map: kind u8 (0 log, 1 log.jsonl), next offset i64, total bytes u64,
///     checkpoint count u32, last checkpoint: offset i64, position u64,
///     directory position u64 (in the blob), piece count u32, CRC-32C u32 of the directory,
///   CRC-32C u32 of the header's bytes before it
/// then per map, in header order, at its directory position:
///   directory: per piece: first checkpoint: offset i64, position u64, checkpoint count u32,
///              CRC-32C u32 of the piece,
///   its pieces, right after it and in its order: per checkpoint: offset i64, position u64
/// ```
///
/// Every part is checked as it is read: the header by its CRC and against the log, the
/// directory and each piece by the CRC the part before names, and all of them for order
/// (checkpoints strictly increasing in offset and position, within their map, the pieces
/// continuing each other, the last checkpoint the one the header names).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ViewState {
    log_start_offset: i64,
    segments: Vec<(i64, u64)>,
    maps: Vec<StoredMap>,
}

/// A map as the header of a stored [`ViewState`] describes it: enough to resume it, and where
/// its checkpoints are.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredMapHeader {
    kind: ViewKind,
    next_offset: i64,
    total_bytes: u64,
    checkpoint_count: u32,
    last: Cursor,
    directory_position: u64,
    piece_count: u32,
    directory_crc: u32,
    /// The generation's start (not stored: the header's log start offset).
    log_start_offset: i64,
}

/// The header of a stored [`ViewState`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct StateHeader {
    log_start_offset: i64,
    segments: Vec<(i64, u64)>,
    maps: Vec<StoredMapHeader>,
}

/// One piece in a map's directory, and where the piece is in the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PieceEntry {
    first: Cursor,
    count: u32,
    crc: u32,
    position: u64,
}

/// The stored checkpoints of a map that resumed from stored state: read from storage piece by
/// piece, as lookups need them, and kept.
#[derive(Debug)]
struct StoredCheckpoints {
    map: StoredMapHeader,
    directory: Option<Vec<PieceEntry>>,
    pieces: HashMap<usize, Vec<Cursor>>,
}

/// `len` bytes of the stored state at `position`, all of them or the reason why not.
fn read_state_part(
    log: &dyn Partition,
    generation: ViewGeneration,
    position: u64,
    len: usize,
    what: &str,
) -> Result<Vec<u8>, String> {
    match log.read_view_state(generation.generation, position, len) {
        Some(bytes) if bytes.len() == len => Ok(bytes),
        Some(bytes) => Err(format!(
            "its {what} at byte {position} is cut short ({} of {len} bytes)",
            bytes.len()
        )),
        None => Err(format!("its {what} can no longer be read")),
    }
}

impl StoredCheckpoints {
    fn directory(
        &mut self,
        log: &dyn Partition,
        generation: ViewGeneration,
    ) -> Result<&[PieceEntry], String> {
        if self.directory.is_none() {
            let len = self.map.piece_count as usize * PIECE_ENTRY_BYTES;
            let bytes = read_state_part(
                log,
                generation,
                self.map.directory_position,
                len,
                "directory",
            )?;
            self.directory = Some(decode_directory(&bytes, &self.map)?);
        }
        Ok(self.directory.as_deref().expect("read above"))
    }

    fn piece(
        &mut self,
        i: usize,
        log: &dyn Partition,
        generation: ViewGeneration,
    ) -> Result<&[Cursor], String> {
        if !self.pieces.contains_key(&i) {
            let directory = self.directory(log, generation)?;
            let (entry, next) = (directory[i], directory.get(i + 1).map(|e| e.first));
            let len = entry.count as usize * CHECKPOINT_BYTES;
            let bytes = read_state_part(log, generation, entry.position, len, "checkpoints")?;
            let piece = decode_piece(&bytes, i, &entry, next, &self.map)?;
            self.pieces.insert(i, piece);
        }
        Ok(&self.pieces[&i])
    }

    /// The last stored checkpoint at or before `key` (the first if none is).
    fn checkpoint_before(
        &mut self,
        key: Key,
        log: &dyn Partition,
        generation: ViewGeneration,
    ) -> Result<Cursor, String> {
        let directory = self.directory(log, generation)?;
        let i = directory
            .partition_point(|e| key.at_or_before(&e.first))
            .saturating_sub(1);
        let piece = self.piece(i, log, generation)?;
        Ok(piece[last_at_or_before(piece, key)])
    }

    /// Every stored checkpoint, in order (read in one go, then kept).
    fn all(
        &mut self,
        log: &dyn Partition,
        generation: ViewGeneration,
    ) -> Result<Vec<Cursor>, String> {
        let directory = self.directory(log, generation)?.to_vec();
        if self.pieces.len() < directory.len() {
            let start = directory[0].position;
            let len = self.map.checkpoint_count as usize * CHECKPOINT_BYTES;
            let bytes = read_state_part(log, generation, start, len, "checkpoints")?;
            for (i, entry) in directory.iter().enumerate() {
                let at = (entry.position - start) as usize;
                let part = &bytes[at..at + entry.count as usize * CHECKPOINT_BYTES];
                let next = directory.get(i + 1).map(|e| e.first);
                self.pieces
                    .insert(i, decode_piece(part, i, entry, next, &self.map)?);
            }
        }
        Ok((0..directory.len())
            .flat_map(|i| self.pieces[&i].iter().copied())
            .collect())
    }
}

fn put_cursor(out: &mut Vec<u8>, c: Cursor) {
    out.extend_from_slice(&c.offset.to_be_bytes());
    out.extend_from_slice(&c.position.to_be_bytes());
}

impl ViewState {
    fn encode(&self) -> Vec<u8> {
        let header_bytes = HEADER_FIXED_BYTES
            + SEGMENT_BYTES * self.segments.len()
            + MAP_HEADER_BYTES * self.maps.len();
        let mut header = Vec::with_capacity(header_bytes);
        header.extend_from_slice(STATE_MAGIC);
        header.extend_from_slice(&STATE_VERSION.to_be_bytes());
        header.extend_from_slice(&(header_bytes as u32).to_be_bytes());
        header.extend_from_slice(&self.log_start_offset.to_be_bytes());
        header.extend_from_slice(&(self.segments.len() as u32).to_be_bytes());
        for (base, size) in &self.segments {
            header.extend_from_slice(&base.to_be_bytes());
            header.extend_from_slice(&size.to_be_bytes());
        }
        header.extend_from_slice(&(self.maps.len() as u32).to_be_bytes());
        let mut body = Vec::new();
        for map in &self.maps {
            let pieces: Vec<&[Cursor]> = map.checkpoints.chunks(CHECKPOINTS_PER_PIECE).collect();
            let mut directory = Vec::with_capacity(pieces.len() * PIECE_ENTRY_BYTES);
            let mut checkpoints = Vec::with_capacity(map.checkpoints.len() * CHECKPOINT_BYTES);
            for piece in &pieces {
                let start = checkpoints.len();
                for c in *piece {
                    put_cursor(&mut checkpoints, *c);
                }
                put_cursor(&mut directory, piece[0]);
                directory.extend_from_slice(&(piece.len() as u32).to_be_bytes());
                directory.extend_from_slice(&crc32c::crc32c(&checkpoints[start..]).to_be_bytes());
            }
            header.push(match map.kind {
                ViewKind::Log => 0,
                ViewKind::Jsonl => 1,
            });
            header.extend_from_slice(&map.next_offset.to_be_bytes());
            header.extend_from_slice(&map.total_bytes.to_be_bytes());
            header.extend_from_slice(&(map.checkpoints.len() as u32).to_be_bytes());
            put_cursor(
                &mut header,
                *map.checkpoints.last().expect("a map has a checkpoint"),
            );
            header.extend_from_slice(&((header_bytes + body.len()) as u64).to_be_bytes());
            header.extend_from_slice(&(pieces.len() as u32).to_be_bytes());
            header.extend_from_slice(&crc32c::crc32c(&directory).to_be_bytes());
            body.extend_from_slice(&directory);
            body.extend_from_slice(&checkpoints);
        }
        let crc = crc32c::crc32c(&header);
        header.extend_from_slice(&crc.to_be_bytes());
        debug_assert_eq!(header.len(), header_bytes);
        header.extend_from_slice(&body);
        header
    }

    /// Parses and checks a whole blob: anything but exactly the layout above, every part
    /// checked, is refused with the reason.
    fn decode(bytes: &[u8]) -> Result<ViewState, String> {
        let header_bytes = header_len(bytes)?;
        if header_bytes > bytes.len() {
            return Err(format!(
                "{} bytes, cut short of its {header_bytes}-byte header",
                bytes.len()
            ));
        }
        let header = StateHeader::decode(&bytes[..header_bytes])?;
        let mut at = header_bytes;
        let mut maps = Vec::with_capacity(header.maps.len());
        for map in &header.maps {
            if map.directory_position != at as u64 {
                return Err(format!(
                    "the {:?} view's checkpoints at byte {} (expected {at})",
                    map.kind, map.directory_position
                ));
            }
            let mut take = |n: usize| -> Result<&[u8], String> {
                let part = bytes
                    .get(at..at.saturating_add(n))
                    .ok_or_else(|| format!("cut short at byte {at}"))?;
                at += n;
                Ok(part)
            };
            let directory =
                decode_directory(take(map.piece_count as usize * PIECE_ENTRY_BYTES)?, map)?;
            let mut checkpoints = Vec::with_capacity(map.checkpoint_count as usize);
            for i in 0..directory.len() {
                let piece = take(directory[i].count as usize * CHECKPOINT_BYTES)?;
                let next = directory.get(i + 1).map(|e| e.first);
                checkpoints.extend(decode_piece(piece, i, &directory[i], next, map)?);
            }
            maps.push(StoredMap {
                kind: map.kind,
                next_offset: map.next_offset,
                total_bytes: map.total_bytes,
                checkpoints,
            });
        }
        if at != bytes.len() {
            return Err(format!("{} trailing bytes", bytes.len() - at));
        }
        Ok(ViewState {
            log_start_offset: header.log_start_offset,
            segments: header.segments,
            maps,
        })
    }
}

/// The header length a blob's first bytes give, after checking its magic and version.
fn header_len(prefix: &[u8]) -> Result<usize, String> {
    if prefix.len() < 12 {
        return Err(format!("{} bytes, too short", prefix.len()));
    }
    if &prefix[..4] != STATE_MAGIC {
        return Err("not a view state (wrong magic)".into());
    }
    let version = u32::from_be_bytes(prefix[4..8].try_into().expect("4 bytes"));
    if version != STATE_VERSION {
        return Err(format!("unsupported version {version}"));
    }
    let len = u32::from_be_bytes(prefix[8..12].try_into().expect("4 bytes")) as usize;
    if !(HEADER_FIXED_BYTES..=MAX_HEADER_BYTES).contains(&len) {
        return Err(format!("a header of {len} bytes"));
    }
    Ok(len)
}

impl StateHeader {
    /// Parses and checks exactly the header's bytes (CRC included).
    fn decode(bytes: &[u8]) -> Result<StateHeader, String> {
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_be_bytes(crc.try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(format!(
                "checksum {stored:#010x} does not match its bytes ({computed:#010x})"
            ));
        }
        let mut r = StateReader {
            bytes: body,
            at: 12,
        };
        let log_start_offset = r.i64()?;
        let count = r.count(SEGMENT_BYTES)?;
        let mut segments = Vec::with_capacity(count);
        for _ in 0..count {
            let base = r.i64()?;
            let size = r.u64()?;
            if segments.last().is_some_and(|(b, _)| *b >= base) {
                return Err(format!("segment base offsets out of order at {base}"));
            }
            segments.push((base, size));
        }
        let count = r.count(MAP_HEADER_BYTES)?;
        let mut maps: Vec<StoredMapHeader> = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = match r.take(1)?[0] {
                0 => ViewKind::Log,
                1 => ViewKind::Jsonl,
                other => return Err(format!("unknown view kind {other}")),
            };
            if maps.iter().any(|m| m.kind == kind) {
                return Err(format!("the {kind:?} view is stored twice"));
            }
            let map = StoredMapHeader {
                kind,
                next_offset: r.i64()?,
                total_bytes: r.u64()?,
                checkpoint_count: r.u32()?,
                last: r.cursor()?,
                directory_position: r.u64()?,
                piece_count: r.u32()?,
                directory_crc: r.u32()?,
                log_start_offset,
            };
            let pieces_needed = (map.checkpoint_count as usize).div_ceil(CHECKPOINTS_PER_PIECE);
            if map.checkpoint_count == 0
                || map.piece_count == 0
                || map.piece_count > map.checkpoint_count
                || (map.piece_count as usize) < pieces_needed
                || map.last.offset < log_start_offset
                || map.last.offset > map.next_offset
                || map.last.position > map.total_bytes
                || (map.checkpoint_count == 1 && map.last.position != 0)
                || map.directory_position < bytes.len() as u64
            {
                return Err(format!(
                    "the {kind:?} view's checkpoints are described inconsistently \
                     ({} in {} pieces, the last ({}, {}), its end ({}, {}))",
                    map.checkpoint_count,
                    map.piece_count,
                    map.last.offset,
                    map.last.position,
                    map.next_offset,
                    map.total_bytes
                ));
            }
            maps.push(map);
        }
        if r.at != body.len() {
            return Err(format!("{} trailing header bytes", body.len() - r.at));
        }
        Ok(StateHeader {
            log_start_offset,
            segments,
            maps,
        })
    }
}

/// Parses and checks `map`'s directory.
fn decode_directory(bytes: &[u8], map: &StoredMapHeader) -> Result<Vec<PieceEntry>, String> {
    let computed = crc32c::crc32c(bytes);
    if computed != map.directory_crc {
        return Err(format!(
            "the {:?} view's directory checksum {computed:#010x} is not {:#010x}",
            map.kind, map.directory_crc
        ));
    }
    let mut r = StateReader { bytes, at: 0 };
    let mut position = map.directory_position + bytes.len() as u64;
    let mut directory: Vec<PieceEntry> = Vec::with_capacity(map.piece_count as usize);
    let mut total = 0u64;
    for _ in 0..map.piece_count {
        let entry = PieceEntry {
            first: r.cursor()?,
            count: r.u32()?,
            crc: r.u32()?,
            position,
        };
        let ordered = match directory.last() {
            None => entry.first.position == 0 && entry.first.offset >= map.log_start_offset,
            Some(last) => {
                entry.first.offset > last.first.offset && entry.first.position > last.first.position
            }
        };
        if !ordered
            || entry.count == 0
            || entry.count as usize > CHECKPOINTS_PER_PIECE
            || entry.first.offset > map.last.offset
            || entry.first.position > map.last.position
        {
            return Err(format!(
                "the {:?} view's piece at ({}, {}) is out of order or outside its map",
                map.kind, entry.first.offset, entry.first.position
            ));
        }
        total += u64::from(entry.count);
        position += u64::from(entry.count) * CHECKPOINT_BYTES as u64;
        directory.push(entry);
    }
    if total != u64::from(map.checkpoint_count) {
        return Err(format!(
            "the {:?} view's pieces hold {total} checkpoints, not {}",
            map.kind, map.checkpoint_count
        ));
    }
    Ok(directory)
}

/// Parses and checks piece `i` of a map's directory, `entry`, followed by a piece starting at
/// `next` (none for the last).
fn decode_piece(
    bytes: &[u8],
    i: usize,
    entry: &PieceEntry,
    next: Option<Cursor>,
    map: &StoredMapHeader,
) -> Result<Vec<Cursor>, String> {
    let computed = crc32c::crc32c(bytes);
    if computed != entry.crc {
        return Err(format!(
            "the {:?} view's piece {i} checksum {computed:#010x} is not {:#010x}",
            map.kind, entry.crc
        ));
    }
    let mut r = StateReader { bytes, at: 0 };
    let mut piece: Vec<Cursor> = Vec::with_capacity(entry.count as usize);
    for _ in 0..entry.count {
        let c = r.cursor()?;
        let ordered = match piece.last() {
            None => c == entry.first,
            Some(last) => c.offset > last.offset && c.position > last.position,
        };
        if !ordered || c.offset > map.last.offset || c.position > map.last.position {
            return Err(format!(
                "checkpoint ({}, {}) of the {:?} view out of order or outside its map",
                c.offset, c.position, map.kind
            ));
        }
        piece.push(c);
    }
    let last = *piece.last().expect("a piece is not empty");
    let continued = match next {
        Some(next) => last.offset < next.offset && last.position < next.position,
        None => last == map.last,
    };
    if !continued || r.at != bytes.len() {
        return Err(format!(
            "the {:?} view's piece {i} does not end where the next part starts",
            map.kind
        ));
    }
    Ok(piece)
}

/// Why a state of these segments and maps (next offset, total bytes) does not describe `log`'s
/// records in `generation`, if it does not: a different log start, a map past the log end, or
/// covered segments that are gone, grew (all but the last) or shrank.
fn mismatch(
    header: &StateHeader,
    log: &dyn Partition,
    generation: ViewGeneration,
) -> Option<String> {
    if header.log_start_offset != generation.log_start_offset {
        return Some(format!(
            "it starts at offset {}, the log at {}",
            header.log_start_offset, generation.log_start_offset
        ));
    }
    let end = log.log_end_offset();
    if let Some(map) = header.maps.iter().find(|m| m.next_offset > end) {
        return Some(format!(
            "it maps up to offset {}, past the log end {end}",
            map.next_offset
        ));
    }
    let Some(&(last_base, last_size)) = header.segments.last() else {
        return header
            .maps
            .iter()
            .any(|m| m.total_bytes > 0)
            .then(|| "it lists no segment".to_string());
    };
    let now: Vec<(i64, u64)> = log
        .segments()
        .iter()
        .filter(|s| s.base_offset <= last_base)
        .map(|s| (s.base_offset, s.size_bytes))
        .collect();
    let same = now.len() == header.segments.len()
        && now
            .iter()
            .zip(&header.segments)
            .all(|((base, size), (old_base, old_size))| {
                base == old_base
                    && if *base == last_base {
                        *size >= last_size
                    } else {
                        size == old_size
                    }
            });
    (!same).then(|| {
        format!(
            "its segments (base offset, bytes) {:?} are now {:?}",
            header.segments, now
        )
    })
}

/// A bounds-checked reader of a [`ViewState`] blob.
struct StateReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> StateReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() - self.at < n {
            return Err(format!("cut short at byte {}", self.at));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn cursor(&mut self) -> Result<Cursor, String> {
        Ok(Cursor {
            offset: self.i64()?,
            position: self.u64()?,
        })
    }

    /// A count of items of at least `min_item_bytes` each, checked against the bytes left
    /// before anything is allocated for it.
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_bytes) > self.bytes.len() - self.at {
            return Err(format!(
                "count {n} at byte {} overruns the state",
                self.at - 4
            ));
        }
        Ok(n)
    }
}

/// The header of the stored state of `log`'s partition if storage has one, it parses, and it
/// describes the records of `generation`; the reason is logged when one is ignored. Reads the
/// header only.
fn load_header(log: &dyn Partition, generation: ViewGeneration) -> Option<StateHeader> {
    let Some(mut bytes) = log.read_view_state(generation.generation, 0, HEADER_READ_BYTES) else {
        log::debug!(
            "{}: no stored view state; views are mapped from the log",
            log.location().display()
        );
        return None;
    };
    let decoded = header_len(&bytes).and_then(|len| {
        if len > bytes.len() && bytes.len() == HEADER_READ_BYTES {
            bytes = log
                .read_view_state(generation.generation, 0, len)
                .unwrap_or_default();
        }
        match bytes.get(..len) {
            Some(header) => StateHeader::decode(header),
            None => Err(format!(
                "{} bytes, cut short of its {len}-byte header",
                bytes.len()
            )),
        }
    });
    let reason = match decoded {
        Ok(header) => match mismatch(&header, log, generation) {
            None => return Some(header),
            Some(reason) => format!("stale: {reason}"),
        },
        Err(reason) => format!("corrupt: {reason}"),
    };
    log::info!(
        "{}: stored view state ignored ({reason}); views are mapped from the log",
        log.location().display()
    );
    None
}

/// The stored map of `kind` (its header), if the stored state is valid for `generation`.
fn load_map_header(
    log: &dyn Partition,
    kind: ViewKind,
    generation: ViewGeneration,
) -> Option<StoredMapHeader> {
    let map = load_header(log, generation)?
        .maps
        .into_iter()
        .find(|m| m.kind == kind)?;
    log::info!(
        "{}: {kind:?} view resumed from stored state: offsets {}..{} mapped ({} bytes, {} \
         checkpoints); mapping continues from offset {}",
        log.location().display(),
        generation.log_start_offset,
        map.next_offset,
        map.total_bytes,
        map.checkpoint_count,
        map.next_offset
    );
    Some(map)
}

/// The stored maps of kinds not in `have`, if the stored state is valid for `generation` and
/// reads back whole.
fn load_other_maps(
    log: &dyn Partition,
    generation: ViewGeneration,
    have: &[ViewKind],
) -> Vec<StoredMap> {
    let Some(header) = load_header(log, generation) else {
        return Vec::new();
    };
    if header.maps.iter().all(|m| have.contains(&m.kind)) {
        return Vec::new();
    }
    let whole = log
        .read_view_state(generation.generation, 0, usize::MAX)
        .ok_or_else(|| "it can no longer be read".to_string())
        .and_then(|bytes| ViewState::decode(&bytes));
    match whole {
        Ok(state) if state.log_start_offset == header.log_start_offset => state
            .maps
            .into_iter()
            .filter(|m| !have.contains(&m.kind))
            .collect(),
        Ok(_) => Vec::new(),
        Err(reason) => {
            log::info!(
                "{}: stored view state not kept ({reason})",
                log.location().display()
            );
            Vec::new()
        }
    }
}

/// Stores what `maps` (one partition's maps, of one generation, at most one per kind) have
/// learned, so the next start resumes from it. Maps shorter than [`MIN_STORED_VIEW_BYTES`] are
/// left out. A kind with no map (or one left out) keeps its stored state when that is still
/// valid. Returns whether storage
/// kept a new state: not when there is nothing new (every map is still where it resumed from
/// the stored state, which stays), nor when the log has moved on to another generation.
pub fn store_view_state(maps: &[Arc<ViewMap>]) -> FsResult<bool> {
    let Some(first) = maps.first() else {
        return Ok(false);
    };
    let log = first.log().as_ref();
    let generation = first.generation();
    let maps: Vec<&Arc<ViewMap>> = maps
        .iter()
        .filter(|m| m.generation() == generation && m.worth_storing())
        .collect();
    if maps.iter().all(|m| m.unchanged_since_resumed()) {
        return Ok(false);
    }
    let mut stored: Vec<StoredMap> = maps.iter().filter_map(|m| m.stored()).collect();
    if stored.is_empty() {
        return Ok(false);
    }
    let have: Vec<ViewKind> = stored.iter().map(|m| m.kind).collect();
    if have.len() < 2 {
        stored.extend(load_other_maps(log, generation, &have));
    }
    // A stable order (log, then log.jsonl): the same maps always encode the same bytes.
    stored.sort_by_key(|m| m.kind == ViewKind::Jsonl);
    let mapped_to = stored.iter().map(|m| m.next_offset).max().unwrap_or(0);
    let state = ViewState {
        log_start_offset: generation.log_start_offset,
        segments: log
            .segments()
            .iter()
            .filter(|s| s.base_offset < mapped_to)
            .map(|s| (s.base_offset, s.size_bytes))
            .collect(),
        maps: stored,
    };
    Ok(log.store_view_state(generation.generation, &state.encode())?)
}

impl LmqFs {
    /// The hook of `append`: lines appended to partition `p` as `info`'s records, `view_bytes`
    /// long with a newline each (what the `log` view grows by), keep the current generation's
    /// `log` map caught up without decoding them ([`ViewMap::lines_appended`]). Creates that
    /// map when there is none, so that a clean stop stores it even if no one read the view.
    pub(super) fn log_view_lines_appended(
        &self,
        p: &PartitionId,
        log: &dyn Partition,
        info: &AppendInfo,
        view_bytes: u64,
    ) {
        let generation = log.view_generation();
        let view = ViewId {
            partition: p.clone(),
            kind: ViewKind::Log,
            generation: generation.generation,
            start_offset: generation.log_start_offset,
            from: None,
        };
        match self.view_map(&view) {
            Ok(map) => {
                map.lines_appended(info.first_offset, info.last_offset + 1, view_bytes);
            }
            Err(e) => log::debug!("{p}: the log view's map is not kept up to date ({e})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ViewMap {
        /// One read with a reader's state (`None`: a new reader), returning the state after.
        pub(super) fn read_with(
            &self,
            position: u64,
            size: usize,
            reader: Option<ReadState>,
        ) -> FsResult<(Vec<u8>, Option<ReadState>)> {
            let mut reader = reader.unwrap_or_default();
            let bytes = self.read(position, size, &mut reader)?;
            Ok((bytes, Some(reader)))
        }
    }
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
                let (got, _) = map.read_with(position, size, None).unwrap();
                let end = (position as usize + size).min(want.len());
                assert_eq!(got, &want[position as usize..end], "{kind:?} at {position}");
                position += 4099;
            }
            // Sequential reads with hints reproduce the whole view.
            let mut all = Vec::new();
            let mut hint = None;
            loop {
                let (chunk, next) = map.read_with(all.len() as u64, 128 * 1024, hint).unwrap();
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
        assert_eq!(map.read_with(0, 10, None).unwrap().0, b"");
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
        let (tail, _) = old.read_with(before.len() as u64, 1 << 20, None).unwrap();
        assert_eq!(grown, before.len() as u64 + tail.len() as u64);
        assert_eq!(tail, &new_bytes[new_bytes.len() - tail.len()..]);
        let (head, _) = old.read_with(0, 10, None).unwrap();
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
        let (head, hint) = old.read_with(0, 30, None).unwrap();
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
        assert_eq!(new.read_with(0, 1 << 20, None).unwrap().0, compacted);
        assert_eq!(new.position_of(0).unwrap(), 0);
        assert_eq!(new.position_of(16).unwrap(), 11);

        // The old map still reads the bytes it mapped, and follows new appends.
        let (rest, _) = old.read_with(30, 1 << 20, hint).unwrap();
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
            old.read_with(before.len() as u64, 100, None).unwrap().0,
            b"late\n"
        );
        assert_eq!(
            new.read_with(compacted.len() as u64, 100, None).unwrap().0,
            b"late\n"
        );
    }
}

#[cfg(test)]
mod state_tests {
    use super::*;
    use crate::engine::{Log, LogConfig, NewRecord};

    fn cursor(offset: i64, position: u64) -> Cursor {
        Cursor { offset, position }
    }

    fn sample() -> ViewState {
        ViewState {
            log_start_offset: 5,
            segments: vec![(0, 4096), (100, 77)],
            maps: vec![
                StoredMap {
                    kind: ViewKind::Log,
                    next_offset: 150,
                    total_bytes: 400_000,
                    // Two pieces: 3 and 2 checkpoints.
                    checkpoints: vec![
                        cursor(5, 0),
                        cursor(40, 65_600),
                        cursor(80, 131_200),
                        cursor(120, 196_800),
                        cursor(140, 262_400),
                    ],
                },
                StoredMap {
                    kind: ViewKind::Jsonl,
                    next_offset: 7,
                    total_bytes: 90,
                    checkpoints: vec![cursor(5, 0)],
                },
            ],
        }
    }

    /// Where the header's CRC is, and `bytes` with it made right again, so the parser sees the
    /// damage of the header.
    fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
        let header = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let crc = crc32c::crc32c(&bytes[..header - 4]);
        bytes[header - 4..header].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn state_round_trips_and_follows_the_documented_layout() {
        let state = sample();
        let bytes = state.encode();
        assert_eq!(ViewState::decode(&bytes), Ok(state.clone()));
        assert_eq!(&bytes[..4], b"LMQV");
        assert_eq!(&bytes[4..8], &2u32.to_be_bytes());
        // fixed 32, segments 2 x 16, maps 2 x 53
        let header = 32 + 32 + 106;
        assert_eq!(&bytes[8..12], &(header as u32).to_be_bytes());
        assert_eq!(&bytes[12..20], &5i64.to_be_bytes());
        assert_eq!(&bytes[20..24], &2u32.to_be_bytes());
        // The log map: 5 checkpoints, the last (140, 262400), its directory right after the
        // header, in 2 pieces.
        let log_map = &bytes[60..60 + 53];
        assert_eq!(log_map[0], 0);
        assert_eq!(&log_map[17..21], &5u32.to_be_bytes());
        assert_eq!(&log_map[21..29], &140i64.to_be_bytes());
        assert_eq!(&log_map[29..37], &262_400u64.to_be_bytes());
        assert_eq!(&log_map[37..45], &(header as u64).to_be_bytes());
        assert_eq!(&log_map[45..49], &2u32.to_be_bytes());
        // Directory (2 x 24) and checkpoints (5 x 16), then the same for log.jsonl (24 + 16).
        assert_eq!(bytes.len(), header + 48 + 80 + 24 + 16);
        let directory = &bytes[header..header + 48];
        assert_eq!(&directory[24..32], &120i64.to_be_bytes());
        assert_eq!(&directory[40..44], &2u32.to_be_bytes());
        let second_piece = &bytes[header + 48 + 48..header + 48 + 80];
        assert_eq!(
            &directory[44..48],
            &crc32c::crc32c(second_piece).to_be_bytes()
        );
        let empty = ViewState {
            log_start_offset: 0,
            segments: vec![],
            maps: vec![],
        };
        assert_eq!(ViewState::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn damaged_state_is_refused_with_a_reason() {
        let good = sample().encode();
        let header = 32 + 32 + 106;
        let mut flipped = good.clone();
        flipped[30] ^= 1;
        assert!(ViewState::decode(&flipped)
            .unwrap_err()
            .contains("checksum"));
        assert!(ViewState::decode(&good[..good.len() - 1]).is_err());
        assert!(ViewState::decode(b"").is_err());
        assert!(ViewState::decode(b"garbage!garbage!").is_err());
        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(ViewState::decode(&resealed(magic))
            .unwrap_err()
            .contains("magic"));
        let mut version = good.clone();
        version[7] = 9;
        assert!(ViewState::decode(&resealed(version))
            .unwrap_err()
            .contains("version"));
        // A segment count that overruns the header is refused before allocating.
        let mut count = good.clone();
        count[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(ViewState::decode(&resealed(count))
            .unwrap_err()
            .contains("overruns"));
        // The directory and each piece have their own checksum.
        let mut directory = good.clone();
        directory[header + 3] ^= 1;
        assert!(ViewState::decode(&directory)
            .unwrap_err()
            .contains("directory checksum"));
        let mut piece = good.clone();
        piece[header + 48 + 60] ^= 1;
        assert!(ViewState::decode(&piece)
            .unwrap_err()
            .contains("piece 1 checksum"));
        // Checkpoints out of order.
        let mut unordered = sample();
        unordered.maps[0].checkpoints[1].position = 0;
        assert!(ViewState::decode(&unordered.encode())
            .unwrap_err()
            .contains("out of order"));
        // A checkpoint past its map's end.
        let mut outside = sample();
        outside.maps[0].checkpoints[4].offset = 151;
        assert!(ViewState::decode(&outside.encode()).is_err());
        // Trailing bytes.
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0; 8]);
        assert!(ViewState::decode(&trailing)
            .unwrap_err()
            .contains("trailing"));
    }

    fn partition(log: &Arc<Log>) -> Arc<dyn Partition> {
        Arc::new(crate::storage::embedded::EmbeddedPartition::new(
            Arc::clone(log),
            Default::default(),
        ))
    }

    fn fill(log: &Log, from: usize, batches: usize) {
        for b in from..from + batches {
            let records: Vec<NewRecord> = (0..50)
                .map(|i| NewRecord::value(format!("batch {b} record {i} {}", "z".repeat(b % 90))))
                .collect();
            log.append(&records).unwrap();
            if b % 40 == 39 {
                log.roll().unwrap();
            }
        }
    }

    /// `log`'s `log` view, mapped whole and its state stored; and the view's bytes.
    fn stored_log_view(log: &Arc<Log>) -> (Arc<ViewMap>, Vec<u8>) {
        let map = Arc::new(ViewMap::new(
            partition(log),
            ViewKind::Log,
            log.view_generation(),
        ));
        let want = whole(&map);
        assert!(store_view_state(std::slice::from_ref(&map)).unwrap());
        (map, want)
    }

    fn whole(map: &ViewMap) -> Vec<u8> {
        let len = map.len_bytes().unwrap();
        let (bytes, _) = map.read_with(0, len as usize + 1, None).unwrap();
        assert_eq!(bytes.len() as u64, len);
        bytes
    }

    /// Every checkpoint (the stored ones read), the next offset, the length and the bytes
    /// since the last checkpoint.
    fn state_of(map: &ViewMap) -> (Vec<Cursor>, i64, u64, u64) {
        let mut s = map.lock();
        let mut checkpoints = match &mut s.stored {
            Some(stored) => stored.all(map.log.as_ref(), map.generation).unwrap(),
            None => Vec::new(),
        };
        checkpoints.extend_from_slice(&s.checkpoints);
        (
            checkpoints,
            s.next_offset,
            s.total_bytes,
            s.bytes_since_checkpoint,
        )
    }

    /// How many pieces of stored checkpoints a map has read: `None` for the directory not
    /// read, or no stored state.
    fn pieces_read(map: &ViewMap) -> Option<usize> {
        let s = map.lock();
        let stored = s.stored.as_ref()?;
        stored.directory.as_ref()?;
        Some(stored.pieces.len())
    }

    #[test]
    fn a_new_map_resumes_from_stored_state_and_maps_only_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
        fill(&log, 0, 200);
        let maps: Vec<Arc<ViewMap>> = [ViewKind::Log, ViewKind::Jsonl]
            .into_iter()
            .map(|kind| Arc::new(ViewMap::new(partition(&log), kind, log.view_generation())))
            .collect();
        let before: Vec<Vec<u8>> = maps.iter().map(|m| whole(m)).collect();
        assert!(state_of(&maps[0]).0.len() > 2 * CHECKPOINTS_PER_PIECE);
        assert!(store_view_state(&maps).unwrap());
        for (map, bytes) in maps.iter().zip(&before) {
            let resumed = ViewMap::new(partition(&log), map.kind(), log.view_generation());
            // Resumed before any scan: the state is the stored one, exactly.
            assert_eq!(state_of(&resumed), state_of(map));
            assert_eq!(&whole(&resumed), bytes);
        }
        // Records appended after the state was stored are mapped on top of it.
        fill(&log, 200, 30);
        for kind in [ViewKind::Log, ViewKind::Jsonl] {
            let fresh_dir = ViewMap::new(partition(&log), kind, log.view_generation());
            let resumed = ViewMap::new(partition(&log), kind, log.view_generation());
            assert!(resumed.lock().next_offset < log.log_end_offset());
            // A map built from nothing, for comparison.
            *fresh_dir.lock() = MapState::empty(0);
            assert_eq!(whole(&resumed), whole(&fresh_dir), "{kind:?}");
            assert_eq!(state_of(&resumed), state_of(&fresh_dir), "{kind:?}");
            for offset in [0, 777, 5_000, 6_400] {
                assert_eq!(
                    resumed.position_of(offset).unwrap(),
                    fresh_dir.position_of(offset).unwrap()
                );
            }
        }
    }

    #[test]
    fn the_first_len_reads_no_checkpoint_and_a_read_reads_one_piece() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
        fill(&log, 0, 400);
        let (map, want) = stored_log_view(&log);

        let resumed = ViewMap::new(partition(&log), ViewKind::Log, log.view_generation());
        assert_eq!(resumed.len_bytes().unwrap(), want.len() as u64);
        assert_eq!(
            pieces_read(&resumed),
            None,
            "the first len read a checkpoint"
        );
        // The last bytes (`tail`): the directory and the last piece.
        let at = want.len() as u64 - 100;
        assert_eq!(
            resumed.read_with(at, 100, None).unwrap().0,
            &want[at as usize..]
        );
        assert_eq!(pieces_read(&resumed), Some(1));
        // Anywhere else: the piece it is in, read once.
        for position in [0, 70_000, 200_000, 70_001] {
            let (got, _) = resumed.read_with(position, 5000, None).unwrap();
            assert_eq!(got, &want[position as usize..position as usize + 5000]);
        }
        let stored_count = state_of(&map).0.len();
        let read = pieces_read(&resumed).unwrap();
        assert!(
            read < stored_count.div_ceil(CHECKPOINTS_PER_PIECE),
            "{read} pieces read"
        );
        assert_eq!(
            resumed.position_of(1234).unwrap(),
            map.position_of(1234).unwrap()
        );
        assert_eq!(
            resumed.offset_after_whole_records(99_999).unwrap(),
            map.offset_after_whole_records(99_999).unwrap()
        );
    }

    #[test]
    fn a_damaged_piece_found_by_a_read_makes_the_map_map_the_log_again() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
        fill(&log, 0, 100);
        let (map, want) = stored_log_view(&log);
        let good = log.load_view_state().unwrap();
        let generation = log.view_generation();

        // One byte of the last piece (the last checkpoint's position), CRCs left as they were.
        let mut bad = good.clone();
        let at = bad.len() - 1;
        bad[at] ^= 0x40;
        assert!(log.store_view_state(generation.generation, &bad).unwrap());
        let resumed = ViewMap::new(partition(&log), ViewKind::Log, generation);
        assert_eq!(resumed.len_bytes().unwrap(), want.len() as u64);
        assert!(resumed.lock().stored.is_some(), "the header is sound");
        let at = want.len() as u64 - 10;
        assert_eq!(
            resumed.read_with(at, 10, None).unwrap().0,
            &want[at as usize..]
        );
        assert!(resumed.lock().stored.is_none(), "it fell back to the log");
        assert_eq!(state_of(&resumed), state_of(&map));
        assert_eq!(whole(&resumed), want);

        // The directory damaged: the same, found by a `from/<offset>` lookup.
        let mut bad = good.clone();
        let header = u32::from_be_bytes(bad[8..12].try_into().unwrap()) as usize;
        bad[header + 1] ^= 1;
        assert!(log.store_view_state(generation.generation, &bad).unwrap());
        let resumed = ViewMap::new(partition(&log), ViewKind::Log, generation);
        assert_eq!(
            resumed.position_of(2500).unwrap(),
            map.position_of(2500).unwrap()
        );
        assert!(resumed.lock().stored.is_none());
        // Nor is a map that cannot read its stored checkpoints stored again.
        let resumed = Arc::new(ViewMap::new(partition(&log), ViewKind::Log, generation));
        fill(&log, 100, 1);
        resumed.len_bytes().unwrap();
        assert!(!store_view_state(&[resumed]).unwrap());

        // Gone altogether (another generation's state now): the same.
        assert!(log.store_view_state(generation.generation, &good).unwrap());
        let resumed = ViewMap::new(partition(&log), ViewKind::Log, generation);
        assert!(resumed.lock().stored.is_some());
        log.delete_records(1).unwrap();
        let moved = log.view_generation();
        assert_ne!(moved, generation);
        let fresh = Arc::new(ViewMap::new(partition(&log), ViewKind::Log, moved));
        whole(&fresh);
        assert!(store_view_state(&[fresh]).unwrap());
        let at = want.len() as u64 - 10;
        assert_eq!(
            resumed.read_with(at, 10, None).unwrap().0,
            &want[at as usize..]
        );
        assert!(resumed.lock().stored.is_none());
    }

    #[test]
    fn lines_appended_keep_a_caught_up_map_exact_without_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
        let storage = partition(&log);
        let map = ViewMap::new(Arc::clone(&storage), ViewKind::Log, log.view_generation());
        let mut taken = 0;
        for b in 0..300usize {
            let lines: Vec<Vec<u8>> = (0..(1 + b % 40))
                .map(|i| format!("line {b}.{i} {}", "q".repeat((b * 13 + i) % 300)).into_bytes())
                .collect();
            let values: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
            let info = storage.append_values(&values).unwrap();
            let bytes = lines.iter().map(|l| l.len() as u64 + 1).sum();
            if map.lines_appended(info.first_offset, info.last_offset + 1, bytes) {
                taken += 1;
            }
            if b % 50 == 49 {
                log.roll().unwrap();
            }
        }
        assert_eq!(taken, 300, "a caught-up map takes every batch");
        assert_eq!(
            map.lock().next_offset,
            log.log_end_offset(),
            "nothing left to decode"
        );
        let fresh = ViewMap::new(Arc::clone(&storage), ViewKind::Log, log.view_generation());
        let want = whole(&fresh);
        assert_eq!(map.lock().total_bytes, want.len() as u64);
        assert!(
            map.lock().checkpoints.len() > 5,
            "checkpoints at batch starts"
        );
        assert_eq!(whole(&map), want);
        for position in (0..want.len() as u64).step_by(7_777) {
            let (got, _) = map.read_with(position, 3000, None).unwrap();
            let end = (position as usize + 3000).min(want.len());
            assert_eq!(got, &want[position as usize..end]);
            assert_eq!(
                map.offset_after_whole_records(position).unwrap(),
                fresh.offset_after_whole_records(position).unwrap()
            );
        }
        for offset in [0, 1, 999, 3000, log.log_end_offset() - 1] {
            assert_eq!(
                map.position_of(offset).unwrap(),
                fresh.position_of(offset).unwrap()
            );
        }

        // Not caught up (records it has not mapped, or already mapped): left to decoding.
        let info = storage.append_values(&[b"one"]).unwrap();
        let info2 = storage.append_values(&[b"two"]).unwrap();
        assert!(!map.lines_appended(info2.first_offset, info2.last_offset + 1, 4));
        assert!(map.lines_appended(info.first_offset, info.last_offset + 1, 4));
        assert!(!map.lines_appended(info.first_offset, info.last_offset + 1, 4));
        assert_eq!(map.len_bytes().unwrap(), want.len() as u64 + 8);
        assert_eq!(
            map.read_with(want.len() as u64, 100, None).unwrap().0,
            b"one\ntwo\n"
        );
        // Busy (a reader is extending it): skipped, not waited for.
        let guard = map.lock();
        let info = storage.append_values(&[b"three"]).unwrap();
        assert!(!map.lines_appended(info.first_offset, info.last_offset + 1, 6));
        drop(guard);
        assert_eq!(map.len_bytes().unwrap(), want.len() as u64 + 14);
    }

    #[test]
    fn a_kind_without_a_map_keeps_its_stored_state() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
        fill(&log, 0, 40);
        let jsonl = Arc::new(ViewMap::new(
            partition(&log),
            ViewKind::Jsonl,
            log.view_generation(),
        ));
        whole(&jsonl);
        assert!(store_view_state(std::slice::from_ref(&jsonl)).unwrap());
        let plain = Arc::new(ViewMap::new(
            partition(&log),
            ViewKind::Log,
            log.view_generation(),
        ));
        whole(&plain);
        assert!(store_view_state(std::slice::from_ref(&plain)).unwrap());
        let resumed = ViewMap::new(partition(&log), ViewKind::Jsonl, log.view_generation());
        assert_eq!(state_of(&resumed), state_of(&jsonl));
        // Maps that learned nothing since they resumed store nothing: the state stays.
        let stored = log.load_view_state().unwrap();
        let resumed = Arc::new(ViewMap::new(
            partition(&log),
            ViewKind::Log,
            log.view_generation(),
        ));
        whole(&resumed);
        assert!(!store_view_state(&[resumed]).unwrap());
        assert_eq!(log.load_view_state().unwrap(), stored);
        // Nor does a map too short to be worth it.
        let short = Arc::new(ViewMap::new(
            partition(&log),
            ViewKind::Log,
            log.view_generation(),
        ));
        *short.lock() = MapState::empty(0);
        assert!(!store_view_state(std::slice::from_ref(&short)).unwrap());
        short.len_bytes().unwrap();
        assert!(short.lock().total_bytes >= MIN_STORED_VIEW_BYTES);
        assert!(store_view_state(&[short]).unwrap());
        let small_dir = tempfile::tempdir().unwrap();
        let small = Arc::new(Log::open(small_dir.path(), LogConfig::default()).unwrap());
        fill(&small, 0, 5);
        let map = Arc::new(ViewMap::new(
            partition(&small),
            ViewKind::Log,
            small.view_generation(),
        ));
        assert!(whole(&map).len() < MIN_STORED_VIEW_BYTES as usize);
        assert!(!store_view_state(&[map]).unwrap());
        assert!(small.load_view_state().is_none());
    }

    #[test]
    fn stale_or_corrupt_state_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
        fill(&log, 0, 100);
        let (map, _) = stored_log_view(&log);
        let good = log.load_view_state().unwrap();
        let generation = log.view_generation().generation;
        let put = |bytes: &[u8]| assert!(log.store_view_state(generation, bytes).unwrap());

        // Garbage: ignored.
        put(b"not a view state at all");
        let fresh = ViewMap::new(partition(&log), ViewKind::Log, log.view_generation());
        assert_eq!(fresh.lock().next_offset, 0);
        assert_eq!(whole(&fresh), whole(&map));

        // Valid bytes that describe other segments: ignored.
        let mut other = ViewState::decode(&good).unwrap();
        other.segments[0].1 += 1;
        put(&other.encode());
        let fresh = ViewMap::new(partition(&log), ViewKind::Log, log.view_generation());
        assert_eq!(fresh.lock().next_offset, 0);

        // Mapping past the log end: ignored.
        let mut ahead = ViewState::decode(&good).unwrap();
        ahead.maps[0].next_offset = log.log_end_offset() + 1;
        put(&ahead.encode());
        let fresh = ViewMap::new(partition(&log), ViewKind::Log, log.view_generation());
        assert_eq!(fresh.lock().next_offset, 0);

        // A header longer than the first read, cut short: ignored.
        let mut cut = good.clone();
        cut[8..12].copy_from_slice(&(HEADER_READ_BYTES as u32 * 2).to_be_bytes());
        cut.resize(HEADER_READ_BYTES + 10, 0);
        put(&cut);
        let fresh = ViewMap::new(partition(&log), ViewKind::Log, log.view_generation());
        assert_eq!(fresh.lock().next_offset, 0);

        // Records removed below the log end: storage no longer offers it.
        put(&good);
        assert!(
            ViewMap::new(partition(&log), ViewKind::Log, log.view_generation())
                .lock()
                .next_offset
                > 0
        );
        log.delete_records(10).unwrap();
        let generation = log.view_generation();
        assert!(log.load_view_state().is_none());
        let fresh = ViewMap::new(partition(&log), ViewKind::Log, generation);
        assert_eq!(fresh.lock().next_offset, 10);
        // A state of an old generation is not stored.
        assert!(!store_view_state(&[map]).unwrap());
    }

    #[test]
    fn a_long_header_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = LogConfig::default();
        config.set("segment.bytes", "16384").unwrap();
        let log = Arc::new(Log::open(dir.path(), config).unwrap());
        fill(&log, 0, 200);
        while log.segments().len() < 300 {
            log.append(&[NewRecord::value("more")]).unwrap();
            log.roll().unwrap();
        }
        let (_, want) = stored_log_view(&log);
        assert!(log.load_view_state().unwrap().len() > HEADER_READ_BYTES);
        let resumed = ViewMap::new(partition(&log), ViewKind::Log, log.view_generation());
        assert_eq!(resumed.lock().resumed_at, Some(log.log_end_offset()));
        assert_eq!(whole(&resumed), want);
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
                            let (chunk, next) =
                                map.read_with(got.len() as u64, 4096, hint).unwrap();
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
