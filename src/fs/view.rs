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
//! only the records appended after the stored state. The blob is checksummed and checked against
//! the log (its start offset, its end, and the segments it covered, by base offset and size); a
//! blob that is missing, corrupt or stale is ignored with a log line and the map is built from
//! the log. Storage drops the blob when records below the log end are removed (retention,
//! compaction, `delete-records`, truncation) or after an unclean stop.
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
    decode_batch, for_each_record_verified, FetchedBatch, Partition, Record, StorageError,
    ViewGeneration,
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

/// Where one reader of a view (an open handle) stands: the record its last read stopped in
/// and the batch holding it, so a sequential reader neither fetches nor walks that batch's
/// first records again. Reads at other positions start from the checkpoints as usual.
#[derive(Debug, Default)]
pub struct ReadState {
    cursor: Option<Cursor>,
    batch: Option<FetchedBatch>,
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
    pub fn new(log: Arc<dyn Partition>, kind: ViewKind, generation: ViewGeneration) -> ViewMap {
        let start = generation.log_start_offset;
        let mut state = MapState {
            checkpoints: vec![Cursor {
                offset: start,
                position: 0,
            }],
            next_offset: start,
            total_bytes: 0,
            bytes_since_checkpoint: 0,
            from_positions: HashMap::new(),
            damage: None,
        };
        if let Some(stored) = load_map_state(log.as_ref(), kind, generation) {
            state.bytes_since_checkpoint =
                stored.total_bytes - stored.checkpoints.last().map_or(0, |c| c.position);
            state.checkpoints = stored.checkpoints;
            state.next_offset = stored.next_offset;
            state.total_bytes = stored.total_bytes;
        }
        ViewMap {
            log,
            kind,
            generation,
            state: Mutex::new(state),
        }
    }

    /// What this map has learned, for [`store_view_state`].
    fn stored(&self) -> StoredMap {
        let state = self.lock();
        StoredMap {
            kind: self.kind,
            next_offset: state.next_offset,
            total_bytes: state.total_bytes,
            checkpoints: state.checkpoints.clone(),
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
    ///
    /// `carry` is a reader's batch kept between reads: a batch holding `start` there is
    /// walked first instead of being fetched again, and the batch a stopped scan ends in is
    /// left there for the next read.
    fn scan(
        &self,
        start: i64,
        chunk_bytes: usize,
        mut carry: Option<&mut Option<FetchedBatch>>,
        mut visit: impl FnMut(&Seen) -> bool,
    ) -> FsResult<i64> {
        let mut offset = start;
        let mut scratch = Vec::new();
        let kept = carry
            .as_deref_mut()
            .and_then(Option::take)
            .filter(|b| b.header.base_offset <= offset && offset < b.header.next_offset());
        if let Some(batch) = kept {
            if self.visit_batch(&batch, offset, &mut scratch, &mut visit)? {
                if let Some(slot) = carry {
                    *slot = Some(batch);
                }
                return Ok(offset);
            }
            offset = batch.header.next_offset();
        }
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
                if self.visit_batch(&fetched, offset, &mut scratch, &mut visit)? {
                    if let Some(slot) = carry {
                        *slot = Some(fetched);
                    }
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

    /// Visits the records of one fetched batch (its CRC verified by the fetch) from `offset`
    /// on; true when `visit` stopped.
    fn visit_batch(
        &self,
        fetched: &FetchedBatch,
        offset: i64,
        scratch: &mut Vec<u8>,
        visit: &mut impl FnMut(&Seen) -> bool,
    ) -> FsResult<bool> {
        let mut stopped = false;
        match self.kind {
            ViewKind::Log => {
                for_each_record_verified(&fetched.bytes, offset, scratch, |r| {
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
        Ok(stopped)
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
        let scanned = self.scan(
            start.offset,
            chunk_bytes,
            Some(&mut reader.batch),
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
        Ok(out)
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
const STATE_VERSION: u32 = 1;

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
/// held their records. All integers big-endian:
///
/// ```text
/// "LMQV", version u32 = 1, log start offset i64,
/// segment count u32, per segment: base offset i64, size u64,
/// map count u32, per map: kind u8 (0 log, 1 log.jsonl), next offset i64, total bytes u64,
///                         checkpoint count u32, per checkpoint: offset i64, position u64,
/// CRC-32C u32 of every byte before it
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
struct ViewState {
    log_start_offset: i64,
    segments: Vec<(i64, u64)>,
    maps: Vec<StoredMap>,
}

impl ViewState {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&STATE_VERSION.to_be_bytes());
        out.extend_from_slice(&self.log_start_offset.to_be_bytes());
        out.extend_from_slice(&(self.segments.len() as u32).to_be_bytes());
        for (base, size) in &self.segments {
            out.extend_from_slice(&base.to_be_bytes());
            out.extend_from_slice(&size.to_be_bytes());
        }
        out.extend_from_slice(&(self.maps.len() as u32).to_be_bytes());
        for map in &self.maps {
            out.push(match map.kind {
                ViewKind::Log => 0,
                ViewKind::Jsonl => 1,
            });
            out.extend_from_slice(&map.next_offset.to_be_bytes());
            out.extend_from_slice(&map.total_bytes.to_be_bytes());
            out.extend_from_slice(&(map.checkpoints.len() as u32).to_be_bytes());
            for c in &map.checkpoints {
                out.extend_from_slice(&c.offset.to_be_bytes());
                out.extend_from_slice(&c.position.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses and checks a blob: anything but exactly the layout above, with checkpoints in
    /// order and within their map, is refused with the reason.
    fn decode(bytes: &[u8]) -> Result<ViewState, String> {
        if bytes.len() < 8 {
            return Err(format!("{} bytes, too short", bytes.len()));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_be_bytes(crc.try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(format!(
                "checksum {stored:#010x} does not match its bytes ({computed:#010x})"
            ));
        }
        let mut r = StateReader { bytes: body, at: 0 };
        if r.take(4)? != STATE_MAGIC {
            return Err("not a view state (wrong magic)".into());
        }
        let version = r.u32()?;
        if version != STATE_VERSION {
            return Err(format!("unsupported version {version}"));
        }
        let log_start_offset = r.i64()?;
        let count = r.count(16)?;
        let mut segments = Vec::with_capacity(count);
        for _ in 0..count {
            let base = r.i64()?;
            let size = r.u64()?;
            if segments.last().is_some_and(|(b, _)| *b >= base) {
                return Err(format!("segment base offsets out of order at {base}"));
            }
            segments.push((base, size));
        }
        let count = r.count(21)?;
        let mut maps: Vec<StoredMap> = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = match r.take(1)?[0] {
                0 => ViewKind::Log,
                1 => ViewKind::Jsonl,
                other => return Err(format!("unknown view kind {other}")),
            };
            if maps.iter().any(|m| m.kind == kind) {
                return Err(format!("the {kind:?} view is stored twice"));
            }
            let next_offset = r.i64()?;
            let total_bytes = r.u64()?;
            let n = r.count(16)?;
            let mut checkpoints: Vec<Cursor> = Vec::with_capacity(n);
            for _ in 0..n {
                let c = Cursor {
                    offset: r.i64()?,
                    position: r.u64()?,
                };
                let ordered = match checkpoints.last() {
                    None => c.position == 0 && c.offset >= log_start_offset,
                    Some(last) => c.offset > last.offset && c.position > last.position,
                };
                if !ordered || c.offset > next_offset || c.position > total_bytes {
                    return Err(format!(
                        "checkpoint ({}, {}) out of order or outside its map",
                        c.offset, c.position
                    ));
                }
                checkpoints.push(c);
            }
            if checkpoints.is_empty() {
                return Err(format!("the {kind:?} view has no checkpoint"));
            }
            maps.push(StoredMap {
                kind,
                next_offset,
                total_bytes,
                checkpoints,
            });
        }
        if r.at != body.len() {
            return Err(format!("{} trailing bytes", body.len() - r.at));
        }
        Ok(ViewState {
            log_start_offset,
            segments,
            maps,
        })
    }

    /// Why this state does not describe `log`'s records in `generation`, if it does not: a
    /// different log start, a map past the log end, or covered segments that are gone, grew
    /// (all but the last) or shrank.
    fn mismatch(&self, log: &dyn Partition, generation: ViewGeneration) -> Option<String> {
        if self.log_start_offset != generation.log_start_offset {
            return Some(format!(
                "it starts at offset {}, the log at {}",
                self.log_start_offset, generation.log_start_offset
            ));
        }
        let end = log.log_end_offset();
        if let Some(map) = self.maps.iter().find(|m| m.next_offset > end) {
            return Some(format!(
                "it maps up to offset {}, past the log end {end}",
                map.next_offset
            ));
        }
        let Some(&(last_base, last_size)) = self.segments.last() else {
            return self
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
        let same = now.len() == self.segments.len()
            && now
                .iter()
                .zip(&self.segments)
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
                self.segments, now
            )
        })
    }
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

/// The stored state of `log`'s partition if storage has one, it parses, and it describes the
/// records of `generation`; the reason is logged when one is ignored.
fn load_state(log: &dyn Partition, generation: ViewGeneration) -> Option<ViewState> {
    let Some(bytes) = log.load_view_state() else {
        log::debug!(
            "{}: no stored view state; views are mapped from the log",
            log.location().display()
        );
        return None;
    };
    let reason = match ViewState::decode(&bytes) {
        Ok(state) => match state.mismatch(log, generation) {
            None => return Some(state),
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

/// The stored map of `kind`, if the stored state is valid for `generation`.
fn load_map_state(
    log: &dyn Partition,
    kind: ViewKind,
    generation: ViewGeneration,
) -> Option<StoredMap> {
    let map = load_state(log, generation)?
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
        map.checkpoints.len(),
        map.next_offset
    );
    Some(map)
}

/// Stores what `maps` (one partition's maps, of one generation, at most one per kind) have
/// learned, so the next start resumes from it. A kind with no map keeps its stored state when
/// that is still valid. Returns whether storage kept it.
pub fn store_view_state(maps: &[Arc<ViewMap>]) -> FsResult<bool> {
    let Some(first) = maps.first() else {
        return Ok(false);
    };
    let log = first.log().as_ref();
    let generation = first.generation();
    let mut stored: Vec<StoredMap> = maps
        .iter()
        .filter(|m| m.generation() == generation)
        .map(|m| m.stored())
        .collect();
    if stored.len() < 2 {
        if let Some(old) = load_state(log, generation) {
            for map in old.maps {
                if stored.iter().all(|m| m.kind != map.kind) {
                    stored.push(map);
                }
            }
        }
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

    fn sample() -> ViewState {
        ViewState {
            log_start_offset: 5,
            segments: vec![(0, 4096), (100, 77)],
            maps: vec![
                StoredMap {
                    kind: ViewKind::Log,
                    next_offset: 150,
                    total_bytes: 70_000,
                    checkpoints: vec![
                        Cursor {
                            offset: 5,
                            position: 0,
                        },
                        Cursor {
                            offset: 120,
                            position: 65_600,
                        },
                    ],
                },
                StoredMap {
                    kind: ViewKind::Jsonl,
                    next_offset: 7,
                    total_bytes: 90,
                    checkpoints: vec![Cursor {
                        offset: 5,
                        position: 0,
                    }],
                },
            ],
        }
    }

    /// `bytes` with its trailing checksum made right again, so the parser sees the damage.
    fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
        let at = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..at]);
        bytes[at..].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn state_round_trips_and_follows_the_documented_layout() {
        let state = sample();
        let bytes = state.encode();
        assert_eq!(ViewState::decode(&bytes), Ok(state.clone()));
        assert_eq!(&bytes[..4], b"LMQV");
        assert_eq!(&bytes[4..8], &1u32.to_be_bytes());
        assert_eq!(&bytes[8..16], &5i64.to_be_bytes());
        assert_eq!(&bytes[16..20], &2u32.to_be_bytes());
        // header 20, segments 2 x 16, map count 4, maps (21 + 2 x 16) + (21 + 16), crc 4
        assert_eq!(bytes.len(), 20 + 32 + 4 + 53 + 37 + 4);
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
        // A segment count that overruns the blob is refused before allocating.
        let mut count = good.clone();
        count[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(ViewState::decode(&resealed(count))
            .unwrap_err()
            .contains("overruns"));
        // Checkpoints out of order.
        let mut unordered = sample();
        unordered.maps[0].checkpoints[1].position = 0;
        assert!(ViewState::decode(&unordered.encode())
            .unwrap_err()
            .contains("out of order"));
        // A checkpoint past its map's end.
        let mut outside = sample();
        outside.maps[0].checkpoints[1].offset = 151;
        assert!(ViewState::decode(&outside.encode()).is_err());
        // Trailing bytes.
        let mut trailing = good[..good.len() - 4].to_vec();
        trailing.extend_from_slice(&[0; 8]);
        assert!(ViewState::decode(&resealed(trailing))
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

    fn whole(map: &ViewMap) -> Vec<u8> {
        let len = map.len_bytes().unwrap();
        let (bytes, _) = map.read_with(0, len as usize + 1, None).unwrap();
        assert_eq!(bytes.len() as u64, len);
        bytes
    }

    fn state_of(map: &ViewMap) -> (Vec<Cursor>, i64, u64, u64) {
        let s = map.lock();
        (
            s.checkpoints.clone(),
            s.next_offset,
            s.total_bytes,
            s.bytes_since_checkpoint,
        )
    }

    #[test]
    fn a_new_map_resumes_from_stored_state_and_maps_only_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
        fill(&log, 0, 100);
        let maps: Vec<Arc<ViewMap>> = [ViewKind::Log, ViewKind::Jsonl]
            .into_iter()
            .map(|kind| Arc::new(ViewMap::new(partition(&log), kind, log.view_generation())))
            .collect();
        let before: Vec<Vec<u8>> = maps.iter().map(|m| whole(m)).collect();
        assert!(store_view_state(&maps).unwrap());
        for (map, bytes) in maps.iter().zip(&before) {
            let resumed = ViewMap::new(partition(&log), map.kind(), log.view_generation());
            // Resumed before any scan: the state is the stored one, exactly.
            assert_eq!(state_of(&resumed), state_of(map));
            assert_eq!(&whole(&resumed), bytes);
        }
        // Records appended after the state was stored are mapped on top of it.
        fill(&log, 100, 30);
        for kind in [ViewKind::Log, ViewKind::Jsonl] {
            let fresh_dir = ViewMap::new(partition(&log), kind, log.view_generation());
            let resumed = ViewMap::new(partition(&log), kind, log.view_generation());
            assert!(resumed.lock().next_offset < log.log_end_offset());
            let mut scratch = fresh_dir.lock();
            // A map built from nothing, for comparison.
            *scratch = MapState {
                checkpoints: vec![Cursor {
                    offset: 0,
                    position: 0,
                }],
                next_offset: 0,
                total_bytes: 0,
                bytes_since_checkpoint: 0,
                from_positions: HashMap::new(),
                damage: None,
            };
            drop(scratch);
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
    fn a_kind_without_a_map_keeps_its_stored_state() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
        fill(&log, 0, 20);
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
    }

    #[test]
    fn stale_or_corrupt_state_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
        fill(&log, 0, 100);
        let map = Arc::new(ViewMap::new(
            partition(&log),
            ViewKind::Log,
            log.view_generation(),
        ));
        whole(&map);
        assert!(store_view_state(std::slice::from_ref(&map)).unwrap());
        let path = dir.path().join(crate::engine::log::VIEW_STATE_FILE);
        let good = std::fs::read(&path).unwrap();

        // Garbage: ignored.
        std::fs::write(&path, b"not a view state at all").unwrap();
        let fresh = ViewMap::new(partition(&log), ViewKind::Log, log.view_generation());
        assert_eq!(fresh.lock().next_offset, 0);
        assert_eq!(whole(&fresh), whole(&map));

        // Valid bytes that describe other segments: ignored.
        let mut other = ViewState::decode(&good).unwrap();
        other.segments[0].1 += 1;
        std::fs::write(&path, other.encode()).unwrap();
        let fresh = ViewMap::new(partition(&log), ViewKind::Log, log.view_generation());
        assert_eq!(fresh.lock().next_offset, 0);

        // Mapping past the log end: ignored.
        let mut ahead = ViewState::decode(&good).unwrap();
        ahead.maps[0].next_offset = log.log_end_offset() + 1;
        std::fs::write(&path, ahead.encode()).unwrap();
        let fresh = ViewMap::new(partition(&log), ViewKind::Log, log.view_generation());
        assert_eq!(fresh.lock().next_offset, 0);

        // Records removed below the log end: storage no longer offers it.
        std::fs::write(&path, &good).unwrap();
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
