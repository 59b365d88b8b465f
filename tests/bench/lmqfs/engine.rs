//! The engine in-process: `lmqfs::engine::Log` against the `commitlog` crate on the same
//! records, each appended in the same batches (about 256 KiB of values per append, neither
//! fsyncing) and read back from the start, 1 MiB per read, with the page cache warm.

use std::path::Path;
use std::time::{Duration, Instant};

use commitlog::message::{MessageBuf, MessageSet};
use commitlog::{CommitLog, LogOptions, ReadLimit};
use lmqfs::engine::{now_ms, Log, LogConfig, NewRecord};

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
    let timestamp = now_ms();
    let batch: Vec<NewRecord> = values
        .iter()
        .map(|v| NewRecord {
            key: None,
            value: Some(v.clone()),
            headers: Vec::new(),
            timestamp: Some(timestamp),
        })
        .collect();
    let log = context(
        Log::open(dir, LogConfig::default()),
        "opening the lmqfs log",
    )?;
    let started = Instant::now();
    for _ in 0..appends {
        context(log.append(&batch), "lmqfs Log::append")?;
    }
    let append = started.elapsed();

    let end = log.log_end_offset();
    let started = Instant::now();
    let mut offset = 0i64;
    let mut bytes = 0u64;
    while offset < end {
        let records = context(log.read(offset, READ_BYTES), "lmqfs Log::read")?;
        let Some(last) = records.last() else {
            return Err(format!(
                "lmqfs Log::read at {offset} returned nothing before {end}"
            ));
        };
        offset = last.offset + 1;
        bytes += records
            .iter()
            .map(|r| r.value.as_ref().map_or(0, Vec::len) as u64)
            .sum::<u64>();
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
    let mut batch = MessageBuf::default();
    for v in &values {
        batch
            .push(v)
            .map_err(|e| format!("building a commitlog batch: {e:?}"))?;
    }
    let mut log = context(
        CommitLog::new(LogOptions::new(dir)),
        "opening the commitlog log",
    )?;
    let started = Instant::now();
    for _ in 0..appends {
        log.append(&mut batch)
            .map_err(|e| format!("commitlog append: {e:?}"))?;
    }
    let append = started.elapsed();

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
