//! `lmqfs dump-log`: print and verify segment files, like Kafka's `kafka-dump-log.sh
//! --deep-iteration --print-data-log`.
//!
//! The files are only read, never opened through the engine's index types (which would create
//! or resize them), so dumping the files of a live log is safe.
//!
//! Output, per file (the field names are Kafka's):
//!
//! ```text
//! Dumping 00000000000000000000.log
//! Log starting offset: 0
//! baseOffset: 0 lastOffset: 1 count: 2 baseSequence: -1 lastSequence: -1 producerId: -1 ... position: 0 CreateTime: 1700000000001 size: 90 magic: 2 compresscodec: none crc: 123 isvalid: true
//! | offset: 0 CreateTime: 1700000000000 keySize: 1 valueSize: 2 sequence: -1 headers: [h=v] key: k payload: v0
//! Dumping 00000000000000000000.index
//! offset: 1 position: 0
//! Dumping 00000000000000000000.timeindex
//! timestamp: 1700000000001 offset: 1
//! ```
//!
//! As in Kafka, a batch's `CreateTime:` / `LogAppendTime:` field is its max timestamp. Every
//! problem is a line starting with `ERROR`.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::engine::index::{OffsetIndex, TimeIndex};
use crate::engine::record::{decode_batch, BatchHeader, Record, BATCH_HEADER_SIZE, LOG_OVERHEAD};
use crate::engine::TimestampType;

/// Key, value and header bytes printed per record; longer ones end in `...`.
const MAX_PRINTED_CHARS: usize = 200;

/// The files beside the segments of a partition directory that are not segment data.
const PARTITION_METADATA_FILES: &[&str] = &[
    crate::engine::checkpoint::CHECKPOINT_FILE,
    crate::engine::checkpoint::CLEAN_SHUTDOWN_FILE,
    crate::engine::cleaner::CLEANER_CHECKPOINT_FILE,
    crate::engine::cleaner::SWAP_MARKER_FILE,
    crate::engine::keys::KEYS_SNAPSHOT_FILE,
    crate::engine::log::VIEW_STATE_FILE,
];

/// Prints every batch and record of each `.log` file (and the entries of each `.index` /
/// `.timeindex`) to `out`. With `verify`, checks every CRC and every index entry against its
/// `.log`. Returns `Ok(true)` when no problem was found; problems are printed, not returned as
/// errors, so one bad file does not hide the rest.
///
/// Problems found by reading alone (an unreadable file, a truncated or unparsable batch, a CRC
/// mismatch, a misordered index) are reported with or without `verify`. `verify` adds the
/// cross-checks: offsets increasing across batches and not below the file's base offset,
/// records within their batch's offsets and max timestamp, and every index entry against the
/// sibling `.log`. Files named `*.deleted`, `*.cleaned` or `*.swap` are dumped by their inner
/// extension. Partition metadata files (checkpoints, the key snapshot) are skipped with a note.
/// Only an error writing to `out` is returned as `Err`.
pub fn dump_log(files: &[PathBuf], verify: bool, out: &mut dyn Write) -> std::io::Result<bool> {
    let mut ok = true;
    for path in files {
        let mut report = Report {
            out: &mut *out,
            path,
            ok: true,
        };
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if PARTITION_METADATA_FILES.contains(&name.as_ref()) {
            // Not segment data: a `dump-log --verify <partition dir>/*` stays clean.
            report.line(format_args!(
                "Skipping {}: partition metadata, not a segment file",
                path.display()
            ))?;
            continue;
        }
        report.line(format_args!("Dumping {}", path.display()))?;
        match FileKind::of(path) {
            Some(FileKind::Log) => dump_log_file(&mut report, verify)?,
            Some(FileKind::OffsetIndex) => dump_offset_index(&mut report, verify)?,
            Some(FileKind::TimeIndex) => dump_time_index(&mut report, verify)?,
            None => report.error(format_args!(
                "not a .log, .index or .timeindex file; not dumped"
            ))?,
        }
        ok &= report.ok;
    }
    Ok(ok)
}

/// Output for one file; remembers whether a problem was reported.
struct Report<'a> {
    out: &'a mut dyn Write,
    path: &'a Path,
    ok: bool,
}

impl Report<'_> {
    fn line(&mut self, line: fmt::Arguments) -> std::io::Result<()> {
        writeln!(self.out, "{line}")
    }
    fn error(&mut self, problem: fmt::Arguments) -> std::io::Result<()> {
        self.ok = false;
        writeln!(self.out, "ERROR {}: {problem}", self.path.display())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Log,
    OffsetIndex,
    TimeIndex,
}

impl FileKind {
    const ALL: [(FileKind, &'static str); 3] = [
        (FileKind::Log, ".log"),
        (FileKind::OffsetIndex, ".index"),
        (FileKind::TimeIndex, ".timeindex"),
    ];

    fn of(path: &Path) -> Option<FileKind> {
        let (_, kind, _) = split_name(path)?;
        Some(kind)
    }
}

/// Splits `00000000000000000042.index.swap` into (`00000000000000000042`, index, `.swap`).
fn split_name(path: &Path) -> Option<(&str, FileKind, &str)> {
    let name = path.file_name()?.to_str()?;
    let mut name_without_suffix = name;
    let mut suffix = "";
    for temporary in [".deleted", ".cleaned", ".swap"] {
        if let Some(stripped) = name.strip_suffix(temporary) {
            name_without_suffix = stripped;
            suffix = temporary;
        }
    }
    FileKind::ALL.iter().find_map(|&(kind, extension)| {
        let stem = name_without_suffix.strip_suffix(extension)?;
        Some((stem, kind, suffix))
    })
}

/// The base offset a segment file's 20-digit name gives, if it has one.
fn base_offset_from_name(path: &Path) -> Option<i64> {
    let (stem, _, _) = split_name(path)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The `.log` an index file belongs to: same directory, stem and temporary suffix.
fn sibling_log(path: &Path) -> Option<PathBuf> {
    let (stem, _, suffix) = split_name(path)?;
    Some(path.with_file_name(format!("{stem}.log{suffix}")))
}

// ---------------------------------------------------------------------------------------------
// .log files

/// One step of a scan through a `.log` file.
enum Frame {
    /// A whole batch, by its length field (not yet parsed or checked).
    Batch {
        position: u64,
        bytes: Vec<u8>,
    },
    /// The bytes from `position` on cannot be framed as batches; the scan stops here.
    BadTail {
        position: u64,
        reason: String,
    },
    End,
}

/// Reads a `.log` batch by batch, using only each batch's length field to find the next one.
struct LogScan {
    file: File,
    len: u64,
    position: u64,
}

impl LogScan {
    fn open(path: &Path) -> std::io::Result<LogScan> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(LogScan {
            file,
            len,
            position: 0,
        })
    }

    fn next_frame(&mut self) -> std::io::Result<Frame> {
        let position = self.position;
        let left = self.len - position;
        if left == 0 {
            return Ok(Frame::End);
        }
        let mut bad_tail = |reason: String| {
            self.position = self.len;
            Ok(Frame::BadTail { position, reason })
        };
        if left < BATCH_HEADER_SIZE as u64 {
            return bad_tail(format!(
                "truncated batch: {left} bytes left, less than a {BATCH_HEADER_SIZE}-byte batch \
                 header"
            ));
        }
        let mut prefix = [0u8; LOG_OVERHEAD];
        self.file.read_exact_at(&mut prefix, position)?;
        let batch_length = i32::from_be_bytes(prefix[8..12].try_into().expect("4 bytes"));
        if batch_length < (BATCH_HEADER_SIZE - LOG_OVERHEAD) as i32 {
            return bad_tail(format!(
                "invalid batch length {batch_length} (a batch header alone needs {})",
                BATCH_HEADER_SIZE - LOG_OVERHEAD
            ));
        }
        let size = LOG_OVERHEAD as u64 + batch_length as u64;
        if size > left {
            return bad_tail(format!(
                "truncated batch: its length field says {size} bytes, {left} are left in the file"
            ));
        }
        let mut bytes = vec![0u8; size as usize];
        self.file.read_exact_at(&mut bytes, position)?;
        self.position += size;
        Ok(Frame::Batch { position, bytes })
    }
}

fn dump_log_file(report: &mut Report, verify: bool) -> std::io::Result<()> {
    let path = report.path;
    let file_base_offset = base_offset_from_name(path);
    match file_base_offset {
        Some(base_offset) => report.line(format_args!("Log starting offset: {base_offset}"))?,
        None if verify => report.line(format_args!(
            "(the file name is not a 20-digit base offset; batch offsets are not checked \
             against it)"
        ))?,
        None => {}
    }
    let mut scan = match LogScan::open(path) {
        Ok(scan) => scan,
        Err(e) => return report.error(format_args!("cannot open: {e}")),
    };
    let mut previous_last_offset: Option<i64> = None;
    loop {
        let (position, bytes) = match scan.next_frame() {
            Ok(Frame::Batch { position, bytes }) => (position, bytes),
            Ok(Frame::BadTail { position, reason }) => {
                return report.error(format_args!("at position {position}: {reason}"));
            }
            Ok(Frame::End) => return Ok(()),
            Err(e) => {
                return report.error(format_args!(
                    "read error at position {}: {e}",
                    scan.position
                ))
            }
        };
        let header = match BatchHeader::parse(&bytes) {
            Ok(header) => header,
            Err(e) => {
                // Without a valid header the length field cannot be trusted to frame the rest.
                return report.error(format_args!(
                    "batch at position {position}: {e}; not reading further"
                ));
            }
        };
        let decoded = decode_batch(&bytes);
        let crc_valid = !matches!(
            decoded,
            Err(crate::engine::record::RecordError::CrcMismatch { .. })
        );
        print_batch(report, &header, position, crc_valid)?;
        match decoded {
            Ok(batch) => {
                for record in &batch.records {
                    print_record(report, &header, record)?;
                }
                if verify {
                    verify_records(report, &header, position, &batch.records)?;
                }
            }
            Err(e) => report.error(format_args!("batch at position {position}: {e}"))?,
        }
        if verify {
            if header.last_offset_delta < 0 {
                report.error(format_args!(
                    "batch at position {position}: negative last offset delta {}",
                    header.last_offset_delta
                ))?;
            }
            if let Some(base_offset) = file_base_offset {
                if header.base_offset < base_offset {
                    report.error(format_args!(
                        "batch at position {position}: base offset {} is below the file's base \
                         offset {base_offset}",
                        header.base_offset
                    ))?;
                }
            }
            if let Some(previous) = previous_last_offset {
                if header.base_offset <= previous {
                    report.error(format_args!(
                        "batch at position {position}: base offset {} is not after the previous \
                         batch's last offset {previous}",
                        header.base_offset
                    ))?;
                }
            }
        }
        previous_last_offset = Some(header.last_offset());
    }
}

fn print_batch(
    report: &mut Report,
    header: &BatchHeader,
    position: u64,
    crc_valid: bool,
) -> std::io::Result<()> {
    let codec = match header.compression() {
        Ok(codec) => codec.name().to_string(),
        Err(_) => format!("unknown({})", header.attributes & 0x07),
    };
    report.line(format_args!(
        "baseOffset: {} lastOffset: {} count: {} baseSequence: {} lastSequence: {} \
         producerId: {} producerEpoch: {} partitionLeaderEpoch: {} isTransactional: {} \
         isControl: {} position: {position} {}: {} size: {} magic: {} compresscodec: {codec} \
         crc: {} isvalid: {crc_valid}",
        header.base_offset,
        header.last_offset(),
        header.records_count,
        header.base_sequence,
        sequence_at(header, header.last_offset_delta),
        header.producer_id,
        header.producer_epoch,
        header.partition_leader_epoch,
        header.is_transactional(),
        header.is_control(),
        header.timestamp_type().name(),
        header.max_timestamp,
        header.total_size(),
        header.magic,
        header.crc,
    ))
}

/// The producer sequence of the record `offset_delta` into a batch, or -1 without a producer.
fn sequence_at(header: &BatchHeader, offset_delta: i32) -> i64 {
    if header.base_sequence < 0 {
        -1
    } else {
        // Sequences wrap at i32::MAX, as in Kafka.
        (header.base_sequence as i64 + offset_delta as i64) % (i32::MAX as i64 + 1)
    }
}

fn print_record(report: &mut Report, header: &BatchHeader, record: &Record) -> std::io::Result<()> {
    let headers: Vec<String> = record
        .headers
        .iter()
        .map(|h| format!("{}={}", printable(h.key.as_bytes()), nullable(&h.value)))
        .collect();
    let offset_delta = (record.offset - header.base_offset).clamp(0, i32::MAX as i64) as i32;
    report.line(format_args!(
        "| offset: {} {}: {} keySize: {} valueSize: {} sequence: {} headers: [{}] key: {} \
         payload: {}",
        record.offset,
        record.timestamp_type.name(),
        record.timestamp,
        record.key.as_ref().map_or(-1, |k| k.len() as i64),
        record.value.as_ref().map_or(-1, |v| v.len() as i64),
        sequence_at(header, offset_delta),
        headers.join(", "),
        nullable(&record.key),
        nullable(&record.value),
    ))
}

/// Checks the records of a decoded batch against its header.
fn verify_records(
    report: &mut Report,
    header: &BatchHeader,
    position: u64,
    records: &[Record],
) -> std::io::Result<()> {
    let mut previous: Option<i64> = None;
    for record in records {
        if record.offset < header.base_offset || record.offset > header.last_offset() {
            report.error(format_args!(
                "batch at position {position}: record offset {} is outside the batch's offsets \
                 {}..={}",
                record.offset,
                header.base_offset,
                header.last_offset()
            ))?;
        }
        if previous.is_some_and(|p| record.offset <= p) {
            report.error(format_args!(
                "batch at position {position}: record offset {} does not increase",
                record.offset
            ))?;
        }
        if header.timestamp_type() == TimestampType::CreateTime
            && record.timestamp > header.max_timestamp
        {
            report.error(format_args!(
                "batch at position {position}: record {} has timestamp {} above the batch's max \
                 timestamp {}",
                record.offset, record.timestamp, header.max_timestamp
            ))?;
        }
        previous = Some(record.offset);
    }
    Ok(())
}

fn nullable(bytes: &Option<Vec<u8>>) -> String {
    bytes
        .as_deref()
        .map_or_else(|| "null".to_string(), printable)
}

/// Lossy UTF-8 on one line: control characters escaped, cut after [`MAX_PRINTED_CHARS`].
fn printable(bytes: &[u8]) -> String {
    // Four bytes per char at most, so this prefix holds every char that can be printed.
    let prefix = &bytes[..bytes.len().min(MAX_PRINTED_CHARS * 4)];
    let text = String::from_utf8_lossy(prefix);
    let mut printed = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == MAX_PRINTED_CHARS {
            printed.push_str("...");
            return printed;
        }
        if c.is_control() {
            printed.extend(c.escape_default());
        } else {
            printed.push(c);
        }
    }
    if prefix.len() < bytes.len() {
        printed.push_str("...");
    }
    printed
}

// ---------------------------------------------------------------------------------------------
// .index and .timeindex files

/// Where a batch of the sibling `.log` is and what it holds, for checking index entries.
#[derive(Debug, Clone, Copy)]
struct BatchSummary {
    position: u64,
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
}

/// The batches of `log` that can be framed, in file order (problems in the log itself are
/// reported when the log is dumped, not here).
fn summarize_log(log: &Path) -> std::io::Result<Vec<BatchSummary>> {
    let mut scan = LogScan::open(log)?;
    let mut batches = Vec::new();
    while let Frame::Batch { position, bytes } = scan.next_frame()? {
        let Ok(header) = BatchHeader::parse(&bytes) else {
            break;
        };
        batches.push(BatchSummary {
            position,
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
        });
    }
    Ok(batches)
}

/// The sibling log's batches, or `None` (reported) when it cannot be read.
fn load_sibling_log(report: &mut Report) -> std::io::Result<Option<Vec<BatchSummary>>> {
    let Some(log) = sibling_log(report.path) else {
        report.error(format_args!("cannot tell which .log this index belongs to"))?;
        return Ok(None);
    };
    match summarize_log(&log) {
        Ok(batches) => Ok(Some(batches)),
        Err(e) => {
            report.error(format_args!("cannot verify against {}: {e}", log.display()))?;
            Ok(None)
        }
    }
}

/// The batch whose offsets include `offset`, if any.
fn batch_containing(batches: &[BatchSummary], offset: i64) -> Option<&BatchSummary> {
    let n = batches.partition_point(|b| b.last_offset < offset);
    batches.get(n).filter(|b| b.base_offset <= offset)
}

/// Reads an index file and splits it into its entries, reporting a partial trailing entry.
/// Returns the entries in use and how many trailing all-zero (preallocated) entries follow.
fn read_entries(
    report: &mut Report,
    entry_size: usize,
) -> std::io::Result<Option<(Vec<Vec<u8>>, usize)>> {
    let bytes = match std::fs::read(report.path) {
        Ok(bytes) => bytes,
        Err(e) => {
            report.error(format_args!("cannot read: {e}"))?;
            return Ok(None);
        }
    };
    if bytes.len() % entry_size != 0 {
        report.error(format_args!(
            "file length {} is not a multiple of the {entry_size}-byte entry size; the last {} \
             bytes are ignored",
            bytes.len(),
            bytes.len() % entry_size
        ))?;
    }
    let entries: Vec<Vec<u8>> = bytes.chunks_exact(entry_size).map(<[u8]>::to_vec).collect();
    // A preallocated index that was never trimmed ends in zero entries. An all-zero first
    // entry is a real entry only if something follows it: alone it says nothing a lookup of an
    // empty index would not.
    let is_zero = |e: &Vec<u8>| e.iter().all(|&b| b == 0);
    let in_use = entries
        .iter()
        .rposition(|e| !is_zero(e))
        .map_or(0, |n| n + 1);
    let unused = entries.len() - in_use;
    let mut entries = entries;
    entries.truncate(in_use);
    Ok(Some((entries, unused)))
}

fn report_unused(report: &mut Report, unused: usize) -> std::io::Result<()> {
    if unused > 0 {
        report.line(format_args!(
            "{unused} unused preallocated entries (all zeros; the index was not trimmed)"
        ))?;
    }
    Ok(())
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"))
}

fn dump_offset_index(report: &mut Report, verify: bool) -> std::io::Result<()> {
    let Some((entries, unused)) = read_entries(report, OffsetIndex::ENTRY_SIZE)? else {
        return Ok(());
    };
    // Without a 20-digit name the base offset is unknown: print relative offsets.
    let base_offset = base_offset_from_name(report.path).unwrap_or(0);
    let batches = if verify {
        load_sibling_log(report)?
    } else {
        None
    };
    let mut previous: Option<(i64, u32)> = None;
    for (n, entry) in entries.iter().enumerate() {
        let relative = be_u32(entry);
        let offset = base_offset + i64::from(relative);
        let position = be_u32(&entry[4..]);
        report.line(format_args!("offset: {offset} position: {position}"))?;
        if relative > i32::MAX as u32 {
            report.error(format_args!(
                "entry {n}: relative offset {relative} is beyond i32::MAX"
            ))?;
        }
        if let Some((prev_offset, prev_position)) = previous {
            if offset <= prev_offset || position <= prev_position {
                report.error(format_args!(
                    "entry {n} (offset {offset}, position {position}) is not after the previous \
                     entry (offset {prev_offset}, position {prev_position})"
                ))?;
            }
        }
        previous = Some((offset, position));
        let Some(batches) = &batches else { continue };
        let at = batches.binary_search_by_key(&u64::from(position), |b| b.position);
        match at.map(|i| batches[i]) {
            Err(_) => report.error(format_args!(
                "entry {n} (offset {offset}): no batch starts at position {position} of the log"
            ))?,
            Ok(b) if offset < b.base_offset || offset > b.last_offset => {
                report.error(format_args!(
                    "entry {n}: offset {offset} is not in the batch at position {position}, \
                     which holds offsets {}..={}",
                    b.base_offset, b.last_offset
                ))?
            }
            Ok(_) => {}
        }
    }
    report_unused(report, unused)
}

fn dump_time_index(report: &mut Report, verify: bool) -> std::io::Result<()> {
    let Some((entries, unused)) = read_entries(report, TimeIndex::ENTRY_SIZE)? else {
        return Ok(());
    };
    let base_offset = base_offset_from_name(report.path).unwrap_or(0);
    let batches = if verify {
        load_sibling_log(report)?
    } else {
        None
    };
    let mut previous: Option<(i64, i64)> = None;
    for (n, entry) in entries.iter().enumerate() {
        let timestamp = i64::from_be_bytes(entry[..8].try_into().expect("8 bytes"));
        let relative = be_u32(&entry[8..]);
        let offset = base_offset + i64::from(relative);
        report.line(format_args!("timestamp: {timestamp} offset: {offset}"))?;
        if relative > i32::MAX as u32 {
            report.error(format_args!(
                "entry {n}: relative offset {relative} is beyond i32::MAX"
            ))?;
        }
        if let Some((prev_timestamp, prev_offset)) = previous {
            if timestamp <= prev_timestamp || offset < prev_offset {
                report.error(format_args!(
                    "entry {n} (timestamp {timestamp}, offset {offset}) does not follow the \
                     previous entry (timestamp {prev_timestamp}, offset {prev_offset})"
                ))?;
            }
        }
        previous = Some((timestamp, offset));
        let Some(batches) = &batches else { continue };
        match batch_containing(batches, offset) {
            None => report.error(format_args!(
                "entry {n} (timestamp {timestamp}): offset {offset} is not in the log"
            ))?,
            Some(b) if timestamp > b.max_timestamp => report.error(format_args!(
                "entry {n}: timestamp {timestamp} is above the max timestamp {} of the batch \
                 holding offset {offset} (position {})",
                b.max_timestamp, b.position
            ))?,
            Some(_) => {}
        }
    }
    report_unused(report, unused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::record::batch::set_base_offset;
    use crate::engine::record::{encode_batch, verify_batch};
    use crate::engine::{Compression, Header, NewRecord};

    const BASE: i64 = 100;
    const T0: i64 = 1_700_000_000_000;

    fn record(i: i64) -> NewRecord {
        NewRecord {
            key: Some(format!("k{i}").into_bytes()),
            value: Some(format!("value-{i}").into_bytes()),
            headers: vec![Header {
                key: "h".to_string(),
                value: Some(b"hv".to_vec()),
            }],
            timestamp: Some(T0 + i),
        }
    }

    /// A segment of batches of 3, 2 and 1 records (offsets 100..=105), with an index entry per
    /// batch and a time index entry per batch. Returns the log path and the batch positions.
    struct Segment {
        dir: tempfile::TempDir,
        positions: Vec<u32>,
    }

    impl Segment {
        fn new(compression: Compression) -> Segment {
            let dir = tempfile::tempdir().unwrap();
            let segment = Segment {
                dir,
                positions: Vec::new(),
            };
            segment.build(compression)
        }

        fn build(mut self, compression: Compression) -> Segment {
            let mut log = Vec::new();
            let mut index = OffsetIndex::open(&self.path("index"), BASE, 1024).unwrap();
            let mut time_index = TimeIndex::open(&self.path("timeindex"), BASE, 1024).unwrap();
            let mut offset = BASE;
            for count in [3, 2, 1] {
                let records: Vec<NewRecord> = (offset..offset + count).map(record).collect();
                let mut batch =
                    encode_batch(0, &records, compression, TimestampType::CreateTime, T0).unwrap();
                set_base_offset(&mut batch, offset);
                let header = verify_batch(&batch).unwrap();
                let position = log.len() as u32;
                index.append(header.last_offset(), position).unwrap();
                time_index
                    .maybe_append(header.max_timestamp, header.last_offset(), false)
                    .unwrap();
                self.positions.push(position);
                log.extend_from_slice(&batch);
                offset += count;
            }
            index.trim_to_valid_size().unwrap();
            time_index.trim_to_valid_size().unwrap();
            std::fs::write(self.path("log"), log).unwrap();
            self
        }

        fn path(&self, extension: &str) -> PathBuf {
            self.dir.path().join(format!("{BASE:020}.{extension}"))
        }

        fn files(&self) -> Vec<PathBuf> {
            ["log", "index", "timeindex"]
                .iter()
                .map(|e| self.path(e))
                .collect()
        }

        fn modify(&self, extension: &str, change: impl FnOnce(&mut Vec<u8>)) {
            let mut bytes = std::fs::read(self.path(extension)).unwrap();
            change(&mut bytes);
            std::fs::write(self.path(extension), bytes).unwrap();
        }
    }

    fn dump(files: &[PathBuf], verify: bool) -> (bool, String) {
        let mut out = Vec::new();
        let ok = dump_log(files, verify, &mut out).unwrap();
        (ok, String::from_utf8(out).unwrap())
    }

    fn assert_has(output: &str, needle: &str) {
        assert!(output.contains(needle), "{needle:?} not in:\n{output}");
    }

    fn error_lines(output: &str) -> Vec<&str> {
        output.lines().filter(|l| l.starts_with("ERROR")).collect()
    }

    #[test]
    fn log_dump_prints_every_batch_and_record() {
        let segment = Segment::new(Compression::None);
        let (ok, output) = dump(&[segment.path("log")], false);
        assert!(ok, "{output}");
        assert_has(
            &output,
            &format!("Dumping {}", segment.path("log").display()),
        );
        assert_has(&output, "Log starting offset: 100");
        assert_has(
            &output,
            "baseOffset: 100 lastOffset: 102 count: 3 baseSequence: -1 lastSequence: -1 \
             producerId: -1 producerEpoch: -1 partitionLeaderEpoch: 0 isTransactional: false \
             isControl: false position: 0 CreateTime: 1700000000102 size: ",
        );
        assert_has(&output, "magic: 2 compresscodec: none crc: ");
        assert_has(&output, "lastOffset: 104 count: 2 baseSequence: -1");
        assert_has(
            &output,
            &format!(
                "position: {} CreateTime: 1700000000105",
                segment.positions[2]
            ),
        );
        assert_eq!(output.matches("isvalid: true").count(), 3);
        assert_has(
            &output,
            "| offset: 101 CreateTime: 1700000000101 keySize: 4 valueSize: 9 sequence: -1 \
             headers: [h=hv] key: k101 payload: value-101",
        );
        assert_eq!(
            output
                .lines()
                .filter(|l| l.starts_with("| offset:"))
                .count(),
            6
        );
    }

    #[test]
    fn compressed_batches_are_iterated_deeply() {
        let segment = Segment::new(Compression::Gzip);
        let (ok, output) = dump(&segment.files(), true);
        assert!(ok, "{output}");
        assert_has(&output, "compresscodec: gzip");
        assert_has(&output, "| offset: 105 CreateTime: 1700000000105");
        assert_has(&output, "key: k105 payload: value-105");
    }

    #[test]
    fn index_dumps_print_their_entries() {
        let segment = Segment::new(Compression::None);
        let (ok, output) = dump(&[segment.path("index"), segment.path("timeindex")], false);
        assert!(ok, "{output}");
        let p = &segment.positions;
        assert_has(
            &output,
            &format!(
                "offset: 102 position: 0\noffset: 104 position: {}\noffset: 105 position: {}\n",
                p[1], p[2]
            ),
        );
        assert_has(
            &output,
            "timestamp: 1700000000102 offset: 102\ntimestamp: 1700000000104 offset: 104\n\
             timestamp: 1700000000105 offset: 105\n",
        );
    }

    #[test]
    fn verify_accepts_a_good_segment() {
        let segment = Segment::new(Compression::None);
        let (ok, output) = dump(&segment.files(), true);
        assert!(ok, "{output}");
        assert!(error_lines(&output).is_empty(), "{output}");
    }

    #[test]
    fn verify_reports_a_flipped_byte_and_continues() {
        let segment = Segment::new(Compression::None);
        let at = segment.positions[1] as usize + BATCH_HEADER_SIZE + 5;
        segment.modify("log", |log| log[at] ^= 0x40);
        let (ok, output) = dump(&segment.files(), true);
        assert!(!ok);
        let errors = error_lines(&output);
        assert_eq!(errors.len(), 1, "{output}");
        assert_has(
            errors[0],
            &format!("batch at position {}: CRC mismatch", segment.positions[1]),
        );
        assert_has(&output, "isvalid: false");
        assert_has(&output, "| offset: 105");
    }

    #[test]
    fn verify_reports_a_truncated_batch_with_its_position() {
        let segment = Segment::new(Compression::None);
        segment.modify("log", |log| log.truncate(log.len() - 3));
        let (ok, output) = dump(&[segment.path("log")], true);
        assert!(!ok);
        assert_has(
            &output,
            &format!("at position {}: truncated batch", segment.positions[2]),
        );

        segment.modify("log", |log| {
            log.truncate(segment.positions[2] as usize + 20)
        });
        let (ok, output) = dump(&[segment.path("log")], false);
        assert!(!ok, "reported without verify too");
        assert_has(
            &output,
            &format!(
                "at position {}: truncated batch: 20 bytes left",
                segment.positions[2]
            ),
        );
    }

    #[test]
    fn verify_reports_an_index_entry_not_at_a_batch() {
        let segment = Segment::new(Compression::None);
        // Entry 1 (offset 104) points 4 bytes into its batch.
        segment.modify("index", |index| {
            let position = segment.positions[1] + 4;
            index[12..16].copy_from_slice(&position.to_be_bytes());
        });
        let (ok, output) = dump(&[segment.path("index")], true);
        assert!(!ok);
        assert_has(
            &output,
            &format!(
                "entry 1 (offset 104): no batch starts at position {} of the log",
                segment.positions[1] + 4
            ),
        );
        let (ok, _) = dump(&[segment.path("index")], false);
        assert!(ok, "only the cross-check finds it");
    }

    #[test]
    fn verify_reports_an_index_entry_for_another_batch() {
        let segment = Segment::new(Compression::None);
        // Entry 0 says offset 103 is at position 0, but that batch holds 100..=102.
        segment.modify("index", |index| {
            index[0..4].copy_from_slice(&3u32.to_be_bytes())
        });
        let (ok, output) = dump(&[segment.path("index")], true);
        assert!(!ok);
        assert_has(
            &output,
            "entry 0: offset 103 is not in the batch at position 0, which holds offsets 100..=102",
        );
    }

    #[test]
    fn verify_reports_time_index_entries_that_disagree_with_the_log() {
        let segment = Segment::new(Compression::None);
        // Entry 2: offset 106 is past the log's end.
        segment.modify("timeindex", |t| {
            t[32..36].copy_from_slice(&6u32.to_be_bytes())
        });
        let (ok, output) = dump(&[segment.path("timeindex")], true);
        assert!(!ok);
        assert_has(
            &output,
            "entry 2 (timestamp 1700000000105): offset 106 is not in the log",
        );

        // Entry 0: a timestamp above its batch's max timestamp.
        let segment = Segment::new(Compression::None);
        segment.modify("timeindex", |t| {
            t[0..8].copy_from_slice(&(T0 + 103).to_be_bytes())
        });
        let (ok, output) = dump(&[segment.path("timeindex")], true);
        assert!(!ok);
        assert_has(
            &output,
            "entry 0: timestamp 1700000000103 is above the max timestamp 1700000000102",
        );
    }

    #[test]
    fn untrimmed_index_reports_unused_entries_without_error() {
        let segment = Segment::new(Compression::None);
        segment.modify("index", |index| index.resize(index.len() + 5 * 8, 0));
        segment.modify("timeindex", |t| t.resize(t.len() + 2 * 12, 0));
        let (ok, output) = dump(&segment.files(), true);
        assert!(ok, "{output}");
        assert_has(&output, "5 unused preallocated entries");
        assert_has(&output, "2 unused preallocated entries");
        assert_eq!(output.matches("offset: 105 position").count(), 1);

        // A freshly preallocated index of an empty segment.
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join(format!("{BASE:020}.index"));
        std::fs::write(&index, [0u8; 80]).unwrap();
        std::fs::write(dir.path().join(format!("{BASE:020}.log")), []).unwrap();
        let (ok, output) = dump(&[index], true);
        assert!(ok, "{output}");
        assert_has(&output, "10 unused preallocated entries");
    }

    #[test]
    fn misordered_and_partial_index_files_are_reported() {
        let segment = Segment::new(Compression::None);
        segment.modify("index", |index| {
            index.swap(3, 11); // relative offsets 2 and 4 trade places
            index.push(1);
        });
        let (ok, output) = dump(&[segment.path("index")], false);
        assert!(!ok);
        assert_has(
            &output,
            "file length 25 is not a multiple of the 8-byte entry size",
        );
        assert_has(&output, "entry 1 (offset 102, position");
        assert_has(
            &output,
            "is not after the previous entry (offset 104, position 0)",
        );
    }

    #[test]
    fn verify_checks_batch_offsets_against_the_file_and_each_other() {
        let segment = Segment::new(Compression::None);
        let second = segment.positions[1] as usize;
        // The second batch claims offsets 100..=101, below the first batch's last offset.
        segment.modify("log", |log| set_base_offset(&mut log[second..], 100));
        let (ok, output) = dump(&[segment.path("log")], true);
        assert!(!ok);
        assert_has(
            &output,
            &format!(
                "batch at position {second}: base offset 100 is not after the previous batch's \
                 last offset 102"
            ),
        );
        let (ok, _) = dump(&[segment.path("log")], false);
        assert!(ok, "offsets are only checked with verify");

        let renamed = segment.dir.path().join(format!("{:020}.log", 101));
        std::fs::rename(segment.path("log"), &renamed).unwrap();
        let (ok, output) = dump(&[renamed], true);
        assert!(!ok);
        assert_has(
            &output,
            "batch at position 0: base offset 100 is below the file's base offset 101",
        );
    }

    #[test]
    fn unreadable_and_unknown_files_are_reported_and_the_rest_dumped() {
        let segment = Segment::new(Compression::None);
        let missing = segment.dir.path().join(format!("{:020}.log", 7));
        let other = segment.dir.path().join("leader-epoch-checkpoint");
        std::fs::write(&other, "0\n").unwrap();
        let (ok, output) = dump(&[missing, other, segment.path("index")], true);
        assert!(!ok);
        let errors = error_lines(&output);
        assert_eq!(errors.len(), 2, "{output}");
        assert_has(errors[0], "cannot open");
        assert_has(errors[1], "not a .log, .index or .timeindex file");
        assert_has(&output, "offset: 105 position");
    }

    #[test]
    fn temporary_suffixes_are_dumped_by_their_inner_kind() {
        let segment = Segment::new(Compression::None);
        let mut renamed = Vec::new();
        for extension in ["log", "index"] {
            let to = PathBuf::from(format!("{}.deleted", segment.path(extension).display()));
            std::fs::rename(segment.path(extension), &to).unwrap();
            renamed.push(to);
        }
        let (ok, output) = dump(&renamed, true);
        assert!(ok, "{output}");
        assert_has(&output, "| offset: 100");
        assert_has(&output, "offset: 104 position");
    }

    #[test]
    fn printed_bytes_are_one_line_and_bounded() {
        assert_eq!(printable(b"a\nb\tc"), "a\\nb\\tc");
        assert_eq!(printable(&[0x66, 0xff, 0x6f]), "f\u{fffd}o");
        let long = "x".repeat(MAX_PRINTED_CHARS + 1);
        assert_eq!(
            printable(long.as_bytes()),
            format!("{}...", &long[..MAX_PRINTED_CHARS])
        );
        let exact = "y".repeat(MAX_PRINTED_CHARS);
        assert_eq!(printable(exact.as_bytes()), exact);
        let wide = "é".repeat(MAX_PRINTED_CHARS * 3);
        assert_eq!(
            printable(wide.as_bytes()).chars().count(),
            MAX_PRINTED_CHARS + 3
        );
        assert_eq!(nullable(&None), "null");
    }

    #[test]
    fn tombstones_and_null_keys_print_as_null() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{:020}.log", 0));
        let records = [NewRecord {
            timestamp: Some(T0),
            ..Default::default()
        }];
        let batch = encode_batch(
            0,
            &records,
            Compression::None,
            TimestampType::CreateTime,
            T0,
        )
        .unwrap();
        std::fs::write(&path, batch).unwrap();
        let (ok, output) = dump(&[path], true);
        assert!(ok, "{output}");
        assert_has(
            &output,
            "keySize: -1 valueSize: -1 sequence: -1 headers: [] key: null payload: null",
        );
    }
}
