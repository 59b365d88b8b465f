//! The engine in-process: `lmqfs::engine::Log` against the `commitlog` crate on the same
//! values, each side through its fastest public API, as a user of the library who wants speed
//! would call it. Neither fsyncs while timed; the page cache is warm.
//!
//! - Append: about 256 KiB of values per append, the same values every time. Each side encodes
//!   them inside the timer, every append: lmqfs's `Log::append_values` takes the values as
//!   slices (it encodes a v2 batch with its CRC-32C), and commitlog's `MessageBuf` is refilled
//!   from them (`clear`, then `push` of each value, which writes its header and CRC-32C) before
//!   `CommitLog::append`. commitlog keeps one `MessageBuf` across appends, its cheapest way
//!   of appending new data.
//! - Between the two, outside the timers, each side flushes its log (`Log::flush`,
//!   `CommitLog::flush`), so the kernel's writeback of the appended data does not run during
//!   the reads (on a machine of two CPUs it took one of them for part of the short read phase,
//!   on either side by chance).
//! - Read: from offset 0, 1 MiB per read, each record's value counted, until the log end; both
//!   logs must return every value byte appended. lmqfs reads with `Log::read_into` into one
//!   `MemoryRecords` kept across reads (one `pread`, each batch's CRC checked once, records
//!   borrowed from the batch bytes); commitlog with `CommitLog::read` (a `pread` into a new
//!   buffer, each message's CRC checked) and its message iterator.

use std::path::Path;
use std::time::{Duration, Instant};

use commitlog::message::{MessageBuf, MessageSet};
use commitlog::{CommitLog, LogOptions, ReadLimit};
use lmqfs::engine::{Log, LogConfig, MemoryRecords};

use crate::util::{context, line_block, Result};

/// Values per append: about this many bytes, at least one record.
const BATCH_VALUE_BYTES: usize = 256 * 1024;
/// Bytes asked for per read.
const READ_BYTES: usize = 1024 * 1024;

/// One engine's times for `records` records of one size.
pub struct EngineRun {
    pub append: Duration,
    pub read: Duration,
}

/// The records of one batch: `record_bytes`-byte values (the lines of the produce input,
/// without their newline).
fn batch_values(record_bytes: usize) -> Vec<Vec<u8>> {
    let block = line_block(record_bytes, BATCH_VALUE_BYTES, 0, 7);
    block
        .chunks(record_bytes)
        .map(|line| line[..record_bytes - 1].to_vec())
        .collect()
}

/// How many appends of one batch make about `total_bytes`.
fn appends_for(total_bytes: u64, batch: &[Vec<u8>]) -> u64 {
    let batch_bytes: usize = batch.iter().map(Vec::len).sum();
    (total_bytes / batch_bytes.max(1) as u64).max(1)
}

/// lmqfs's `Log`: appends and reads back; returns the times and the value bytes read.
pub fn lmqfs_log(dir: &Path, record_bytes: usize, total_bytes: u64) -> Result<(EngineRun, u64)> {
    let values = batch_values(record_bytes);
    let appends = appends_for(total_bytes, &values);
    let batch: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let log = context(
        Log::open(dir, LogConfig::default()),
        "opening the lmqfs log",
    )?;
    let started = Instant::now();
    for _ in 0..appends {
        context(log.append_values(&batch), "lmqfs Log::append_values")?;
    }
    let append = started.elapsed();
    // Written back before the reads are timed (see the module doc).
    context(log.flush(), "lmqfs Log::flush")?;

    let end = log.log_end_offset();
    let started = Instant::now();
    let mut records = MemoryRecords::new();
    let mut offset = 0i64;
    let mut bytes = 0u64;
    while offset < end {
        context(
            log.read_into(offset, READ_BYTES, &mut records),
            "lmqfs Log::read_into",
        )?;
        let mut last = None;
        for record in records.records() {
            let record = context(record, "lmqfs MemoryRecords::records")?;
            bytes += record.value.map_or(0, <[u8]>::len) as u64;
            last = Some(record.offset);
        }
        let Some(last) = last else {
            return Err(format!(
                "lmqfs Log::read_into at {offset} returned nothing before {end}"
            ));
        };
        offset = last + 1;
    }
    let read = started.elapsed();
    context(log.close(), "closing the lmqfs log")?;
    let expected = appends * values.iter().map(Vec::len).sum::<usize>() as u64;
    if bytes != expected {
        return Err(format!(
            "lmqfs Log read {bytes} value bytes, {expected} were appended"
        ));
    }
    Ok((EngineRun { append, read }, bytes))
}

/// The `commitlog` crate: the same appends and reads.
pub fn commitlog(dir: &Path, record_bytes: usize, total_bytes: u64) -> Result<(EngineRun, u64)> {
    let values = batch_values(record_bytes);
    let appends = appends_for(total_bytes, &values);
    let mut log = context(
        CommitLog::new(LogOptions::new(dir)),
        "opening the commitlog log",
    )?;
    let mut batch = MessageBuf::default();
    let started = Instant::now();
    for _ in 0..appends {
        batch.clear();
        for v in &values {
            batch
                .push(v)
                .map_err(|e| format!("building a commitlog batch: {e:?}"))?;
        }
        log.append(&mut batch)
            .map_err(|e| format!("commitlog append: {e:?}"))?;
    }
    let append = started.elapsed();
    log.flush().map_err(|e| format!("commitlog flush: {e:?}"))?;

    let end = log.next_offset();
    let started = Instant::now();
    let mut offset = 0u64;
    let mut bytes = 0u64;
    while offset < end {
        let read = log
            .read(offset, ReadLimit::max_bytes(READ_BYTES))
            .map_err(|e| format!("commitlog read at {offset}: {e:?}"))?;
        let mut last = None;
        for message in read.iter() {
            bytes += message.payload().len() as u64;
            last = Some(message.offset());
        }
        let Some(last) = last else {
            return Err(format!(
                "commitlog read at {offset} returned nothing before {end}"
            ));
        };
        offset = last + 1;
    }
    let read = started.elapsed();
    let expected = appends * values.iter().map(Vec::len).sum::<usize>() as u64;
    if bytes != expected {
        return Err(format!(
            "commitlog read {bytes} value bytes, {expected} were appended"
        ));
    }
    Ok((EngineRun { append, read }, bytes))
}
