//! `lmqfs-bench`: small benchmarks of the storage engine, through its public API only.
//!
//! ```text
//! lmqfs-bench cleaner [--records N] [--keys K] [--value-bytes B] [--segment-bytes S]
//!                     [--dedupe-buffer-bytes M] [--index-keys I] [--dir D] [--keep]
//! ```
//!
//! `cleaner` measures two things:
//!
//! 1. **Compaction throughput.** It builds a compacted log (`cleanup.policy=compact`) of N keyed
//!    records spread over K distinct keys (16-byte keys, B-byte values, S-byte segments), rolls
//!    it so every record is in a closed segment, then times forced [`Log::compact`] runs until
//!    the whole log is clean (one run when the offset map holds every key, more otherwise). It
//!    prints the dirty bytes indexed, the rate of cleaning (dirty MB per second of wall time),
//!    the log size before and after, the records removed, and the offset map's memory
//!    (`log.cleaner.dedupe.buffer.size`, fixed whatever the number of keys).
//! 2. **Key index memory.** It fills a [`KeyIndex`] (the state behind `keys/`) with I distinct
//!    16-byte keys and prints the index's own estimate ([`KeyIndex::memory_bytes`]) and the
//!    growth of the process's resident set (from `/proc/self/statm`), both per million keys.
//!    This runs first, in a process that has not yet allocated much, so that memory freed by
//!    the log build cannot be reused and hide the growth; it is printed last.
//!
//! The log lives in a fresh directory under `--dir` (default: the system temp directory) and is
//! removed at the end unless `--keep` is given.

use std::fmt::Display;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use lmqfs::engine::config::CleanupPolicy;
use lmqfs::engine::keys::KeyIndex;
use lmqfs::engine::offset_map::OffsetMap;
use lmqfs::engine::{now_ms, CleanerConfig, CompactionOutcome, Log, LogConfig, NewRecord};

/// Benchmarks of the lmqfs storage engine.
#[derive(Parser)]
#[command(name = "lmqfs-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time compaction of a log with many superseded records; measure key index memory.
    Cleaner(CleanerArgs),
}

/// Options of `lmqfs-bench cleaner`.
#[derive(Args)]
struct CleanerArgs {
    /// Records to append.
    #[arg(long, default_value_t = 2_000_000)]
    records: u64,
    /// Distinct keys the records are spread over (uniformly at random).
    #[arg(long, default_value_t = 200_000)]
    keys: u64,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// `segment.bytes` of the log.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    segment_bytes: u32,
    /// Memory of the cleaner's offset map (`log.cleaner.dedupe.buffer.size`).
    #[arg(long, default_value_t = CleanerConfig::default().dedupe_buffer_bytes)]
    dedupe_buffer_bytes: usize,
    /// Records per append.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Keys put in the key index for the memory measurement.
    #[arg(long, default_value_t = 1_000_000)]
    index_keys: u64,
    /// Directory in which the benchmark's log directory is created.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Leave the log directory in place afterwards.
    #[arg(long)]
    keep: bool,
}

/// Errors are reported as text with what was being done.
type Result<T> = std::result::Result<T, String>;

/// Adds what was being done to an error.
fn context<T, E: Display>(result: std::result::Result<T, E>, what: &str) -> Result<T> {
    result.map_err(|e| format!("{what}: {e}"))
}

fn main() -> std::process::ExitCode {
    // The engine logs each "offset map full" round at warn; RUST_LOG=warn shows them.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Cleaner(args) => cleaner(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lmqfs-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A small deterministic pseudo-random generator (SplitMix64): the same log every run.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Key number `n` as 16 bytes: `key-` and 12 decimal digits.
fn key(n: u64) -> Vec<u8> {
    format!("key-{n:012}").into_bytes()
}

const MB: f64 = 1_000_000.0;
const MIB: f64 = 1024.0 * 1024.0;

fn mb(bytes: u64) -> f64 {
    bytes as f64 / MB
}

fn per_second(bytes: u64, elapsed: Duration) -> f64 {
    mb(bytes) / elapsed.as_secs_f64().max(1e-9)
}

/// The process's resident set size in bytes, from `/proc/self/statm`.
fn resident_bytes() -> Result<u64> {
    let statm = context(
        fs::read_to_string("/proc/self/statm"),
        "reading /proc/self/statm",
    )?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| format!("unexpected /proc/self/statm: {statm:?}"))?;
    // SAFETY: sysconf only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page_size = u64::try_from(page_size).map_err(|_| "sysconf(_SC_PAGESIZE) failed")?;
    Ok(pages * page_size)
}

/// What the key index measurement found.
struct KeyIndexMemory {
    keys: u64,
    estimate_bytes: usize,
    rss_growth_bytes: u64,
    build_time: Duration,
}

/// Fills a key index with `keys` distinct 16-byte keys and measures its memory.
fn measure_key_index(keys: u64) -> Result<KeyIndexMemory> {
    let rss_before = resident_bytes()?;
    let started = Instant::now();
    let mut index = KeyIndex::new(0);
    for n in 0..keys {
        index.apply(n as i64, Some(&key(n)), false);
    }
    let build_time = started.elapsed();
    let rss_after = resident_bytes()?;
    if index.len() as u64 != keys {
        return Err(format!(
            "the key index holds {} keys, {keys} were put",
            index.len()
        ));
    }
    Ok(KeyIndexMemory {
        keys,
        estimate_bytes: index.memory_bytes(),
        rss_growth_bytes: rss_after.saturating_sub(rss_before),
        build_time,
    })
}

/// The benchmark log's configuration: compacted, nothing else in the way.
fn log_config(args: &CleanerArgs) -> LogConfig {
    LogConfig {
        segment_bytes: args.segment_bytes,
        cleanup_policy: CleanupPolicy {
            delete: false,
            compact: true,
        },
        min_compaction_lag_ms: 0,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

/// Appends `args.records` records over `args.keys` keys, then rolls so all are closed.
fn build_log(log: &Log, args: &CleanerArgs) -> Result<Duration> {
    let mut rng = SplitMix64(0x6C6D_7166_7362_656E);
    let started = Instant::now();
    let mut appended = 0u64;
    let mut batch = Vec::with_capacity(args.batch);
    while appended < args.records {
        let count = (args.records - appended).min(args.batch as u64);
        let timestamp = now_ms();
        batch.clear();
        for _ in 0..count {
            let mut value = vec![0u8; args.value_bytes];
            rng.fill(&mut value);
            batch.push(NewRecord {
                key: Some(key(rng.next_u64() % args.keys)),
                value: Some(value),
                headers: Vec::new(),
                timestamp: Some(timestamp),
            });
        }
        context(log.append(&batch), "append")?;
        appended += count;
    }
    context(log.roll(), "roll")?;
    context(log.flush(), "flush")?;
    Ok(started.elapsed())
}

/// Runs forced compactions until the whole log is clean; returns each run and the wall time.
fn compact_all(log: &Log, cleaner: &CleanerConfig) -> Result<(Vec<CompactionOutcome>, Duration)> {
    let log_end_offset = log.log_end_offset();
    let started = Instant::now();
    let mut runs = Vec::new();
    loop {
        let outcome = context(log.compact(now_ms(), true, cleaner), "compact")?;
        let done = outcome.skipped.is_some() || outcome.first_dirty_offset >= log_end_offset;
        runs.push(outcome);
        if done {
            break;
        }
        if runs.len() >= 1000 {
            return Err("the log is still not clean after 1000 compaction runs".into());
        }
    }
    Ok((runs, started.elapsed()))
}

fn cleaner(args: &CleanerArgs) -> Result<()> {
    if args.keys == 0 || args.records == 0 || args.batch == 0 {
        return Err("--records, --keys and --batch must be positive".into());
    }
    println!(
        "cleaner benchmark: {} records over {} keys, 16-byte keys, {}-byte values, {:.0} MiB segments",
        args.records,
        args.keys,
        args.value_bytes,
        args.segment_bytes as f64 / MIB
    );

    // First, while the process is small (see the module docs).
    let key_index = measure_key_index(args.index_keys)?;

    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = parent.join(format!("lmqfs-bench-{}", std::process::id()));
    context(
        fs::create_dir_all(&dir),
        &format!("creating {}", dir.display()),
    )?;
    let result = run_cleaner(&dir, args, &key_index);
    if args.keep {
        println!("log kept in {}", dir.display());
    } else if let Err(e) = fs::remove_dir_all(&dir) {
        eprintln!("lmqfs-bench: could not remove {}: {e}", dir.display());
    }
    result
}

fn run_cleaner(dir: &Path, args: &CleanerArgs, key_index: &KeyIndexMemory) -> Result<()> {
    let log = context(Log::open(dir, log_config(args)), "opening the log")?;
    let build_time = build_log(&log, args)?;
    let size_before = log.size_bytes();
    println!(
        "built:      {:.1} MB in {} segments in {:.2} s ({:.1} MB/s appended)",
        mb(size_before),
        log.segment_count(),
        build_time.as_secs_f64(),
        per_second(size_before, build_time)
    );

    let cleaner = CleanerConfig {
        dedupe_buffer_bytes: args.dedupe_buffer_bytes,
    };
    let map_capacity = OffsetMap::with_memory(cleaner.dedupe_buffer_bytes).capacity();
    let (runs, wall) = compact_all(&log, &cleaner)?;
    let size_after = log.size_bytes();
    let live_keys = context(log.live_keys(), "live_keys")?.len();
    context(log.close(), "close")?;

    println!();
    println!(
        "{:>4} {:>10} {:>10} {:>10} {:>12} {:>10} {:>9}",
        "run", "dirty MB", "before MB", "after MB", "removed", "ms", "MB/s"
    );
    for (i, run) in runs.iter().enumerate() {
        if let Some(reason) = &run.skipped {
            println!("{:>4} skipped: {reason}", i + 1);
            continue;
        }
        println!(
            "{:>4} {:>10.1} {:>10.1} {:>10.1} {:>12} {:>10} {:>9.1}",
            i + 1,
            mb(run.dirty_bytes),
            mb(run.bytes_before),
            mb(run.bytes_after),
            run.records_removed,
            run.duration_ms,
            per_second(run.dirty_bytes, Duration::from_millis(run.duration_ms))
        );
    }

    let dirty: u64 = runs.iter().map(|r| r.dirty_bytes).sum();
    let removed: u64 = runs.iter().map(|r| r.records_removed).sum();
    let per_million = |bytes: f64| bytes * 1_000_000.0 / key_index.keys.max(1) as f64 / MIB;
    println!();
    let rows: Vec<(&str, String)> = vec![
        ("dirty log indexed", format!("{:.1} MB", mb(dirty))),
        (
            "cleaning rate",
            format!("{:.1} MB/s of dirty log", per_second(dirty, wall)),
        ),
        ("log before", format!("{:.1} MB", mb(size_before))),
        ("log after", format!("{:.1} MB", mb(size_after))),
        (
            "records removed",
            format!("{removed} of {} ({live_keys} live keys)", args.records),
        ),
        ("compaction runs", runs.len().to_string()),
        ("wall time", format!("{:.2} s", wall.as_secs_f64())),
        (
            "offset map memory",
            format!(
                "{:.1} MiB (dedupe buffer), holds {map_capacity} keys",
                args.dedupe_buffer_bytes as f64 / MIB
            ),
        ),
        (
            "key index, estimate",
            format!(
                "{:.1} MiB per million 16-byte keys ({} keys: {} bytes)",
                per_million(key_index.estimate_bytes as f64),
                key_index.keys,
                key_index.estimate_bytes
            ),
        ),
        (
            "key index, RSS growth",
            format!(
                "{:.1} MiB per million 16-byte keys (built in {:.2} s)",
                per_million(key_index.rss_growth_bytes as f64),
                key_index.build_time.as_secs_f64()
            ),
        ),
    ];
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    for (name, value) in rows {
        println!("{name:<width$}  {value}");
    }
    Ok(())
}
