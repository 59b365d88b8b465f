//! Small helpers of the benchmark: timing statistics, CPU pinning, the page cache, input files.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Errors are reported as text with what was being done.
pub type Result<T> = std::result::Result<T, String>;

/// Adds what was being done to an error.
pub fn context<T, E: std::fmt::Display>(
    result: std::result::Result<T, E>,
    what: &str,
) -> Result<T> {
    result.map_err(|e| format!("{what}: {e}"))
}

pub const MB: f64 = 1_000_000.0;
pub const MIB: f64 = 1024.0 * 1024.0;

/// Megabytes (10^6 bytes) per second.
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / MB / elapsed.as_secs_f64().max(1e-9)
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// The `p`-th percentile (0..=100) of `values`, nearest rank; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// True when the process runs as root (needed to drop the page cache).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Writes dirty pages back, then drops the page cache, dentries and inodes (root only).
pub fn drop_caches() -> Result<()> {
    // SAFETY: sync cannot fail and touches no memory.
    unsafe { libc::sync() };
    context(
        fs::write("/proc/sys/vm/drop_caches", "3\n"),
        "writing /proc/sys/vm/drop_caches",
    )
}

/// The CPUs this process may run on when it started, in order.
pub fn allowed_cpus() -> Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(format!("sched_getaffinity: {}", io::Error::last_os_error()));
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: cpu < CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Pins the calling thread (or, after fork, the process about to exec) to the given CPUs.
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it for cpu < CPU_SETSIZE.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: the set is initialised and its size is given.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A small deterministic pseudo-random generator (SplitMix64): the same inputs every run.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// Fills `line` (whose last byte becomes `\n`) with text that compresses about as well as log
/// lines do: words from a small vocabulary and a counter, so lz4 and zstd have work to do.
pub fn fill_line(line: &mut [u8], number: u64, rng: &mut SplitMix64) {
    const WORDS: [&[u8]; 16] = [
        b"order ",
        b"user=",
        b"id:",
        b"total ",
        b"ok ",
        b"GET ",
        b"/api/v1 ",
        b"200 ",
        b"eu-west ",
        b"latency_ms=",
        b"cart ",
        b"item ",
        b"paid ",
        b"shipped ",
        b"ts=",
        b"sku-",
    ];
    let Some((newline, body)) = line.split_last_mut() else {
        return;
    };
    *newline = b'\n';
    let head = format!("{number:010} ");
    let mut at = 0;
    for &b in head.as_bytes().iter().take(body.len()) {
        body[at] = b;
        at += 1;
    }
    while at < body.len() {
        let r = rng.next_u64();
        let word = WORDS[(r % 16) as usize];
        for &b in word {
            if at == body.len() {
                break;
            }
            body[at] = b;
            at += 1;
        }
        // A few digits after each word.
        for shift in 0..((r >> 8) % 4) {
            if at == body.len() {
                break;
            }
            body[at] = b'0' + ((r >> (16 + 4 * shift)) % 10) as u8;
            at += 1;
        }
    }
}

/// Lines of `record_bytes` bytes (newline included), as many as fit in `block_bytes`, as one
/// buffer: what one `write()` of that size carries.
pub fn line_block(record_bytes: usize, block_bytes: usize, first: u64, seed: u64) -> Vec<u8> {
    let lines = (block_bytes / record_bytes).max(1);
    let mut rng = SplitMix64(seed);
    let mut block = vec![0u8; lines * record_bytes];
    for (i, line) in block.chunks_mut(record_bytes).enumerate() {
        fill_line(line, first + i as u64, &mut rng);
    }
    block
}

/// Writes a file of `total_bytes` (rounded down to whole lines) of `record_bytes`-byte lines.
/// Returns its length.
pub fn write_input(path: &Path, record_bytes: usize, total_bytes: u64) -> Result<u64> {
    let file = context(File::create(path), &format!("creating {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let lines = total_bytes / record_bytes as u64;
    let mut rng = SplitMix64(0x6C6D_7166_7362_656E ^ record_bytes as u64);
    let mut line = vec![0u8; record_bytes];
    for n in 0..lines {
        fill_line(&mut line, n, &mut rng);
        context(out.write_all(&line), "writing the input file")?;
    }
    context(out.flush(), "writing the input file")?;
    Ok(lines * record_bytes as u64)
}

/// Runs `program args` with stdout to `stdout` (a file) or /dev/null, and fails on a non-zero
/// exit.
pub fn run(program: &str, args: &[&Path], stdout: Option<File>) -> Result<()> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    match stdout {
        Some(file) => cmd.stdout(file),
        None => cmd.stdout(Stdio::null()),
    };
    let status = context(cmd.status(), &format!("running {program}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {args:?} exited with {status}"))
    }
}
