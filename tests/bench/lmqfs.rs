//! The lmqfs benchmark: every figure against its floor, in one run.
//!
//! ```text
//! cargo bench --bench lmqfs -- [--quick] [--rounds N] [--plots DIR] [--markdown FILE]
//!                              [--dir DIR] [--only SECTION,...] [--lmqfs BIN]
//! ```
//!
//! It mounts the real `lmqfs` binary (the one cargo built beside this benchmark, or `--lmqfs`)
//! and, over several rounds that alternate lmqfs and its floor, measures:
//!
//! - `produce`: `cat` of a file of lines into `append` against `cat` into a plain file on the
//!   data directory's filesystem, without and with an `fsync` at the end on both sides; then
//!   `consume`: `cat log > /dev/null` against `cat` of the plain file, with a cold page cache
//!   (root only) and warm. For 16 B, 100 B, 1 KiB and 64 KiB lines, and lz4 and zstd topics.
//! - `latency`: one record per `write()` on an open `append`, and open+read+close of random
//!   `<offset>` files of a large partition, against a no-op FUSE filesystem built with fuser in
//!   this benchmark (`lmqfs/noop.rs`); both daemons pinned to the first CPU, the caller pinned
//!   to the same CPU and then to the other one.
//! - `engine`: `lmqfs::engine::Log` in-process against the `commitlog` crate, append and read.
//! - `startup`: mount time, first `stat log` and `tail -n 1 log` after a clean stop, and the
//!   daemon's memory, for a small and a large data directory.
//! - `memory`: the daemon's memory with 1, 100 and 1000 partitions.
//!
//! Each figure is the median over the rounds. The table gives each figure, its floor, the ratio
//! and the bar of issue 7 (met / NOT MET). `--quick` uses tiny sizes (CI's smoke test); the run
//! fails if any row of the table lacks its figures.

#[path = "lmqfs/daemon.rs"]
mod daemon;
#[path = "lmqfs/engine.rs"]
mod engine;
#[path = "lmqfs/noop.rs"]
mod noop;
#[path = "lmqfs/report.rs"]
mod report;
#[path = "lmqfs/svg.rs"]
mod svg;
#[path = "lmqfs/util.rs"]
mod util;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

use daemon::Daemon;
use report::{Bar, Row, Unit};
use util::{
    allowed_cpus, context, drop_caches, is_root, line_block, mb_per_s, median, percentile,
    pin_current_thread, run, write_input, Result, SplitMix64, MIB,
};

/// The benchmark of lmqfs against its floors.
#[derive(Parser)]
#[command(name = "lmqfs-bench")]
struct Cli {
    /// Tiny sizes: a smoke test of the whole run (well under a minute), not figures to quote.
    #[arg(long)]
    quick: bool,
    /// Rounds of each measurement (each alternating lmqfs and its floor); medians are quoted.
    /// Default 3, or 2 with --quick.
    #[arg(long)]
    rounds: Option<usize>,
    /// Bytes of each produce input (default 1 GiB, 8 MiB with --quick).
    #[arg(long)]
    produce_bytes: Option<u64>,
    /// Write the plots (SVG) of produce and consume throughput into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Also write the table as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Where the scratch directory (data directories, plain files, mountpoints) is made;
    /// the plain-file floors are measured on this filesystem. Default: the system temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Only these sections (comma-separated): produce, latency, engine, startup, memory.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The lmqfs binary to mount (default: the one cargo built with this benchmark).
    #[arg(long)]
    lmqfs: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Internal: serve the no-op FUSE filesystem at this mountpoint (a child of the run).
    #[arg(long, hide = true)]
    serve_noop: Option<PathBuf>,
}

/// The sizes of one run.
struct Sizes {
    rounds: usize,
    produce_bytes: u64,
    latency_records: u64,
    writes: usize,
    reads: usize,
    engine_bytes: u64,
    startup_bytes: [u64; 2],
    partitions: [u32; 3],
    /// Rounds of the memory figures (each makes up to 1000 partitions, seconds of fsyncs).
    memory_rounds: usize,
}

impl Sizes {
    fn new(cli: &Cli) -> Sizes {
        let mut sizes = if cli.quick {
            Sizes {
                rounds: 2,
                produce_bytes: 8 << 20,
                latency_records: 20_000,
                writes: 500,
                reads: 200,
                engine_bytes: 4 << 20,
                startup_bytes: [4_000_000, 40_000_000],
                partitions: [1, 100, 1000],
                memory_rounds: 1,
            }
        } else {
            Sizes {
                rounds: 3,
                produce_bytes: 1 << 30,
                latency_records: 10_000_000,
                writes: 20_000,
                reads: 2_000,
                engine_bytes: 256 << 20,
                startup_bytes: [100_000_000, 10_000_000_000],
                partitions: [1, 100, 1000],
                memory_rounds: 3,
            }
        };
        if let Some(rounds) = cli.rounds {
            sizes.rounds = rounds.max(1);
            sizes.memory_rounds = sizes.rounds;
        }
        if let Some(bytes) = cli.produce_bytes {
            sizes.produce_bytes = bytes;
        }
        sizes
    }
}

/// Record sizes of the produce, consume and engine figures (newline included for lines).
const RECORD_SIZES: [usize; 4] = [16, 100, 1024, 65536];

fn size_name(bytes: usize) -> String {
    match bytes {
        b if b >= 1024 && b % 1024 == 0 => format!("{} KiB", b / 1024),
        b => format!("{b} B"),
    }
}

fn data_name(bytes: u64) -> String {
    if bytes >= 1_000_000_000 {
        format!("{} GB", bytes / 1_000_000_000)
    } else {
        format!("{} MB", bytes / 1_000_000)
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error")).init();
    let cli = Cli::parse();
    if let Some(mnt) = &cli.serve_noop {
        return match noop::serve(mnt) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("no-op filesystem at {}: {e}", mnt.display());
                ExitCode::FAILURE
            }
        };
    }
    match bench(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lmqfs bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything a section needs.
struct Ctx {
    bin: PathBuf,
    scratch: PathBuf,
    sizes: Sizes,
    root: bool,
    cpus: Vec<usize>,
}

impl Ctx {
    fn path(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }

    /// Mounts lmqfs on a fresh data directory `name` (removed first if present).
    fn mount(&self, name: &str, cpus: Option<&[usize]>) -> Result<Daemon> {
        let data = self.path(&format!("{name}-data"));
        if data.exists() {
            context(fs::remove_dir_all(&data), "removing an old data directory")?;
        }
        self.remount(name, cpus)
    }

    /// Mounts lmqfs on data directory `name` as it is.
    fn remount(&self, name: &str, cpus: Option<&[usize]>) -> Result<Daemon> {
        Daemon::lmqfs(
            &self.bin,
            &self.path(&format!("{name}-mnt")),
            &self.path(&format!("{name}-data")),
            &[],
            cpus,
        )
    }
}

fn bench(cli: &Cli) -> Result<()> {
    let bin = match &cli.lmqfs {
        Some(bin) => bin.clone(),
        None => PathBuf::from(env!("CARGO_BIN_EXE_lmqfs")),
    };
    if !bin.is_file() {
        return Err(format!(
            "the lmqfs binary {} is missing: run `cargo build --release` first, or give --lmqfs",
            bin.display()
        ));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing: the benchmark mounts real filesystems".into());
    }
    let sections = ["produce", "latency", "engine", "startup", "memory"];
    for s in &cli.only {
        if !sections.contains(&s.as_str()) {
            return Err(format!(
                "--only {s}: the sections are {}",
                sections.join(", ")
            ));
        }
    }
    let wanted = |s: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == s);

    let parent = cli.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = context(
        tempfile::Builder::new()
            .prefix("lmqfs-bench.")
            .tempdir_in(&parent),
        &format!("creating a scratch directory in {}", parent.display()),
    )?;
    let ctx = Ctx {
        bin,
        scratch: scratch.path().to_path_buf(),
        sizes: Sizes::new(cli),
        root: is_root(),
        cpus: allowed_cpus()?,
    };
    print_machine(&ctx);

    let started = Instant::now();
    let mut rows = Vec::new();
    let mut plots = None;
    for section in sections.into_iter().filter(|s| wanted(s)) {
        let section_started = Instant::now();
        match section {
            "produce" => {
                let (section_rows, produce_plots) = produce_consume(&ctx)?;
                rows.extend(section_rows);
                plots = Some(produce_plots);
            }
            "latency" => rows.extend(latency(&ctx)?),
            "engine" => rows.extend(engine_rows(&ctx)?),
            "startup" => rows.extend(startup(&ctx)?),
            _ => rows.extend(memory(&ctx)?),
        }
        eprintln!(
            "{section}: done in {:.0} s",
            section_started.elapsed().as_secs_f64()
        );
    }
    // One block per section, in the order of the issue.
    let order = [
        "produce", "consume", "latency", "engine", "startup", "memory",
    ];
    rows.sort_by_key(|r| order.iter().position(|&s| s == r.section));

    println!();
    println!(
        "medians of {} rounds; whole run {:.0} s",
        ctx.sizes.rounds,
        started.elapsed().as_secs_f64()
    );
    print!("{}", report::text(&rows));
    let not_met = report::not_met(&rows);
    println!();
    if not_met.is_empty() {
        println!("every bar is met");
    } else {
        println!("bars not met:");
        for line in &not_met {
            println!("  {line}");
        }
    }
    if let Some(path) = &cli.markdown {
        context(
            fs::write(path, report::markdown(&rows)),
            &format!("writing {}", path.display()),
        )?;
    }
    if let (Some(dir), Some(plots)) = (&cli.plots, &plots) {
        write_plots(dir, plots)?;
    }
    if cli.only.is_empty() {
        check_every_row(&rows, ctx.cpus.len().min(2))?;
    }
    let incomplete: Vec<&str> = rows
        .iter()
        .filter(|r| !r.complete())
        .map(|r| r.figure.as_str())
        .collect();
    if !incomplete.is_empty() {
        return Err(format!("rows without figures: {}", incomplete.join("; ")));
    }
    Ok(())
}

/// Every section gave every row it should: a figure dropped by a change fails the smoke test.
fn check_every_row(rows: &[Row], callers: usize) -> Result<()> {
    let expected = [
        ("produce", 12),
        ("consume", 12),
        ("latency", 4 * callers),
        ("engine", 8),
        ("startup", 6),
        ("memory", 10),
    ];
    for (section, count) in expected {
        let got = rows.iter().filter(|r| r.section == section).count();
        if got != count {
            return Err(format!(
                "section {section} has {got} rows, {count} expected"
            ));
        }
    }
    Ok(())
}

/// The machine, as BENCHMARKS.md quotes it.
fn print_machine(ctx: &Ctx) {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let filesystem = Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE", "-T"])
        .arg(&ctx.scratch)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!(
        "machine: {} CPUs ({cpu}), kernel {}, scratch {} on {filesystem}, {}",
        ctx.cpus.len(),
        kernel.trim(),
        ctx.scratch.display(),
        if ctx.root {
            "root (cold rows drop the page cache)"
        } else {
            "not root: cold rows are skipped"
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Produce and consume

/// One produce/consume variant: line size and topic compression.
struct Variant {
    record_bytes: usize,
    compression: Option<&'static str>,
}

impl Variant {
    fn name(&self) -> String {
        match self.compression {
            Some(c) => format!("{} lines, {c}", size_name(self.record_bytes)),
            None => format!("{} lines", size_name(self.record_bytes)),
        }
    }
}

/// Per-round timings of one variant.
#[derive(Default)]
struct ProduceTimes {
    ours: Vec<f64>,
    plain: Vec<f64>,
    ours_fsync: Vec<f64>,
    plain_fsync: Vec<f64>,
    ours_cold: Vec<f64>,
    plain_cold: Vec<f64>,
    ours_warm: Vec<f64>,
    plain_warm: Vec<f64>,
}

/// Medians of produce and consume throughput per uncompressed record size, for the plots.
pub struct Plots {
    sizes: Vec<String>,
    /// lmqfs, plain, lmqfs fsync, plain fsync.
    produce: [Vec<f64>; 4],
    /// lmqfs cold, plain cold, lmqfs warm, plain warm.
    consume: [Vec<f64>; 4],
}

/// `cat input` into `dst`, opened for append (lmqfs) or created and truncated (plain), then
/// `fsync` if asked, then close: the wall time of all of it.
fn cat_into(input: &Path, dst: &Path, plain: bool, fsync: bool) -> Result<Duration> {
    let started = Instant::now();
    let file = if plain {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(dst)
    } else {
        OpenOptions::new().append(true).open(dst)
    };
    let file = context(file, &format!("opening {}", dst.display()))?;
    run(
        "cat",
        &[input],
        Some(context(file.try_clone(), "duplicating a file")?),
    )?;
    if fsync {
        context(file.sync_all(), &format!("fsync of {}", dst.display()))?;
    }
    drop(file);
    Ok(started.elapsed())
}

/// `cat src > /dev/null`, after dropping the page cache if `cold`.
fn cat_out(src: &Path, cold: bool) -> Result<Duration> {
    if cold {
        drop_caches()?;
    }
    let started = Instant::now();
    run("cat", &[src], None)?;
    Ok(started.elapsed())
}

/// Makes topic `name` (one partition) with `compression.type` if given.
fn make_topic(mnt: &Path, name: &str, compression: Option<&str>) -> Result<PathBuf> {
    let topic = mnt.join(name);
    context(
        fs::create_dir(&topic),
        &format!("mkdir {}", topic.display()),
    )?;
    if let Some(c) = compression {
        context(
            fs::write(topic.join("config"), format!("compression.type={c}\n")),
            "setting compression.type",
        )?;
    }
    Ok(topic)
}

fn remove_topic(topic: &Path) -> Result<()> {
    let status = context(
        Command::new("rm").arg("-rf").arg(topic).status(),
        "running rm",
    )?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("rm -rf {} failed", topic.display()))
    }
}

fn produce_consume(ctx: &Ctx) -> Result<(Vec<Row>, Plots)> {
    let variants: Vec<Variant> = RECORD_SIZES
        .iter()
        .map(|&record_bytes| Variant {
            record_bytes,
            compression: None,
        })
        .chain(["lz4", "zstd"].into_iter().map(|c| Variant {
            record_bytes: 100,
            compression: Some(c),
        }))
        .collect();
    let daemon = ctx.mount("produce", None)?;
    let mut rows = Vec::new();
    let mut plots = Plots {
        sizes: Vec::new(),
        produce: Default::default(),
        consume: Default::default(),
    };
    let mut input: Option<(usize, PathBuf, u64)> = None;
    for (v, variant) in variants.iter().enumerate() {
        // One input file per line size, reused by the compressed variants.
        if input.as_ref().map(|(size, _, _)| *size) != Some(variant.record_bytes) {
            if let Some((_, path, _)) = input.take() {
                let _ = fs::remove_file(path);
            }
            let path = ctx.path(&format!("input-{}", variant.record_bytes));
            let bytes = write_input(&path, variant.record_bytes, ctx.sizes.produce_bytes)?;
            input = Some((variant.record_bytes, path, bytes));
        }
        let (_, input_path, input_bytes) = input.as_ref().expect("made above");
        eprintln!(
            "produce/consume {}: {:.0} MiB, {} rounds",
            variant.name(),
            *input_bytes as f64 / MIB,
            ctx.sizes.rounds
        );
        let mut t = ProduceTimes::default();
        for round in 0..ctx.sizes.rounds {
            let plain_first = round % 2 == 1;
            let plain = ctx.path("plain");
            let plain_fsync = ctx.path("plain-fsync");
            // The input in the page cache on both sides.
            run("cat", &[input_path], None)?;
            let topic = make_topic(&daemon.mnt, &format!("p{v}r{round}"), variant.compression)?;
            let topic_fsync =
                make_topic(&daemon.mnt, &format!("p{v}r{round}f"), variant.compression)?;
            let append = topic.join("0/append");
            let append_fsync = topic_fsync.join("0/append");
            let mb = |d: Duration| mb_per_s(*input_bytes, d);
            for plain_turn in [plain_first, !plain_first] {
                if plain_turn {
                    t.plain.push(mb(cat_into(input_path, &plain, true, false)?));
                    t.plain_fsync
                        .push(mb(cat_into(input_path, &plain_fsync, true, true)?));
                } else {
                    t.ours
                        .push(mb(cat_into(input_path, &append, false, false)?));
                    t.ours_fsync
                        .push(mb(cat_into(input_path, &append_fsync, false, true)?));
                }
            }
            let log = topic_fsync.join("0/log");
            if round == 0 && ctx.sizes.produce_bytes < (64 << 20) {
                check_log(&log, input_path)?;
            }
            for plain_turn in [plain_first, !plain_first] {
                let (src, cold, warm) = if plain_turn {
                    (&plain_fsync, &mut t.plain_cold, &mut t.plain_warm)
                } else {
                    (&log, &mut t.ours_cold, &mut t.ours_warm)
                };
                if ctx.root {
                    cold.push(mb(cat_out(src, true)?));
                }
                warm.push(mb(cat_out(src, false)?));
            }
            remove_topic(&topic)?;
            remove_topic(&topic_fsync)?;
            let _ = fs::remove_file(&plain);
            let _ = fs::remove_file(&plain_fsync);
        }
        let name = variant.name();
        let produce_bar = Bar::RatioAtLeast(0.5);
        let ours = [
            median(&t.ours),
            median(&t.plain),
            median(&t.ours_fsync),
            median(&t.plain_fsync),
        ];
        let consume = [
            median(&t.ours_cold),
            median(&t.plain_cold),
            median(&t.ours_warm),
            median(&t.plain_warm),
        ];
        rows.push(
            Row::new(
                "produce",
                format!("produce {name}, no fsync"),
                Unit::MbPerS,
                ours[0],
            )
            .floor(ours[1], "plain file")
            .bar(produce_bar),
        );
        rows.push(
            Row::new(
                "produce",
                format!("produce {name}, fsync"),
                Unit::MbPerS,
                ours[2],
            )
            .floor(ours[3], "plain file")
            .bar(produce_bar),
        );
        let mut cold = Row::new(
            "consume",
            format!("consume {name}, cold"),
            Unit::MbPerS,
            consume[0],
        )
        .floor(consume[1], "plain file")
        .bar(Bar::RatioAtLeast(0.5));
        if !ctx.root {
            cold = cold.skipped("not root, the page cache cannot be dropped");
        }
        rows.push(cold);
        rows.push(
            Row::new(
                "consume",
                format!("consume {name}, warm"),
                Unit::MbPerS,
                consume[2],
            )
            .floor(consume[3], "plain file")
            .bar(Bar::RatioAtLeast(0.7)),
        );
        if variant.compression.is_none() {
            plots.sizes.push(size_name(variant.record_bytes));
            for (series, value) in plots.produce.iter_mut().zip(ours) {
                series.push(value);
            }
            for (series, value) in plots.consume.iter_mut().zip(consume) {
                series.push(value);
            }
        }
    }
    if let Some((_, path, _)) = input {
        let _ = fs::remove_file(path);
    }
    daemon.stop()?;
    Ok((rows, plots))
}

/// The log of a produce must read back as exactly the input (checked in small runs).
fn check_log(log: &Path, input: &Path) -> Result<()> {
    let got = context(fs::read(log), &format!("reading {}", log.display()))?;
    let want = context(fs::read(input), "reading the input")?;
    if got != want {
        return Err(format!(
            "{} reads {} bytes that differ from the {} bytes produced",
            log.display(),
            got.len(),
            want.len()
        ));
    }
    Ok(())
}

fn write_plots(dir: &Path, plots: &Plots) -> Result<()> {
    context(
        fs::create_dir_all(dir),
        &format!("creating {}", dir.display()),
    )?;
    let series = |names: [&str; 4], values: &[Vec<f64>; 4]| -> Vec<svg::Series> {
        let colors = ["#1f77b4", "#aec7e8", "#d62728", "#ff9896"];
        names
            .iter()
            .zip(values)
            .zip(colors)
            .map(|((name, values), color)| svg::Series {
                name: name.to_string(),
                color,
                values: values.clone(),
            })
            .collect()
    };
    let produce = svg::bar_chart(
        "Produce: cat of lines into append vs a plain file (median MB/s)",
        "MB/s",
        &plots.sizes,
        &series(
            ["lmqfs", "plain file", "lmqfs + fsync", "plain file + fsync"],
            &plots.produce,
        ),
    );
    let consume = svg::bar_chart(
        "Consume: cat log vs cat of a plain file (median MB/s)",
        "MB/s",
        &plots.sizes,
        &series(
            [
                "lmqfs cold",
                "plain file cold",
                "lmqfs warm",
                "plain file warm",
            ],
            &plots.consume,
        ),
    );
    for (name, svg) in [("produce.svg", produce), ("consume.svg", consume)] {
        let path = dir.join(name);
        context(
            fs::write(&path, svg),
            &format!("writing {}", path.display()),
        )?;
        println!("plot: {}", path.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Latency: one record per write(), random `cat <offset>`

/// Writes `writes` 100-byte records, one per `write()`, on one open `append`; microseconds each.
fn write_latencies(append: &Path, writes: usize) -> Result<Vec<f64>> {
    let mut record = vec![b'x'; noop::RECORD_BYTES];
    record[noop::RECORD_BYTES - 1] = b'\n';
    let mut file = context(
        OpenOptions::new().append(true).open(append),
        &format!("opening {}", append.display()),
    )?;
    let mut micros = Vec::with_capacity(writes);
    for _ in 0..writes {
        let started = Instant::now();
        let n = context(file.write(&record), "write")?;
        micros.push(started.elapsed().as_secs_f64() * 1e6);
        if n != record.len() {
            return Err(format!("a write of {} bytes wrote {n}", record.len()));
        }
    }
    Ok(micros)
}

/// Open+read to the end+close of `dir/<n>` for `reads` random n below `records`; microseconds.
fn read_latencies(dir: &Path, records: u64, reads: usize, seed: u64) -> Result<Vec<f64>> {
    let mut rng = SplitMix64(seed);
    let mut buf = vec![0u8; 128 * 1024];
    let mut micros = Vec::with_capacity(reads);
    for _ in 0..reads {
        let path = dir.join(rng.below(records).to_string());
        let started = Instant::now();
        let mut file = context(File::open(&path), &format!("opening {}", path.display()))?;
        let mut total = 0;
        loop {
            let n = context(file.read(&mut buf), &format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            total += n;
        }
        drop(file);
        micros.push(started.elapsed().as_secs_f64() * 1e6);
        if total == 0 {
            return Err(format!("{} read empty", path.display()));
        }
    }
    Ok(micros)
}

/// Appends `records` 100-byte lines to `append`, 128 KiB per `write()`.
fn fill_partition(append: &Path, records: u64) -> Result<()> {
    let block = line_block(100, 128 * 1024, 0, 11);
    let per_block = (block.len() / 100) as u64;
    let mut file = context(
        OpenOptions::new().append(true).open(append),
        &format!("opening {}", append.display()),
    )?;
    let mut written = 0;
    while written < records {
        let lines = (records - written).min(per_block);
        context(file.write_all(&block[..lines as usize * 100]), "append")?;
        written += lines;
    }
    Ok(())
}

fn latency(ctx: &Ctx) -> Result<Vec<Row>> {
    let records = ctx.sizes.latency_records;
    let daemon_cpu = ctx.cpus[0];
    let callers: Vec<(&str, usize)> = match ctx.cpus.get(1) {
        Some(&other) => vec![("same CPU", daemon_cpu), ("other CPU", other)],
        None => vec![("same CPU", daemon_cpu)],
    };
    let daemon = ctx.mount("latency", Some(&[daemon_cpu]))?;
    let noop_mnt = ctx.path("noop-mnt");
    let noop = Daemon::noop(&noop_mnt, Some(&[daemon_cpu]))?;
    eprintln!("latency: filling a partition with {records} records");
    let big = make_topic(&daemon.mnt, "big", None)?;
    fill_partition(&big.join("0/append"), records)?;
    let small = make_topic(&daemon.mnt, "w", None)?;

    // [caller][write p50, write p99, read p50, read p99] per side, per round.
    let mut ours = vec![[Vec::new(), Vec::new(), Vec::new(), Vec::new()]; callers.len()];
    let mut floor = vec![[Vec::new(), Vec::new(), Vec::new(), Vec::new()]; callers.len()];
    for round in 0..ctx.sizes.rounds {
        for (c, &(_, cpu)) in callers.iter().enumerate() {
            context(pin_current_thread(&[cpu]), "pinning the caller")?;
            let seed = 0x5EED + round as u64;
            let floor_first = (round + c) % 2 == 1;
            for floor_turn in [floor_first, !floor_first] {
                let (side, writes, reads) = if floor_turn {
                    let w = write_latencies(&noop_mnt.join("append"), ctx.sizes.writes)?;
                    let r = read_latencies(&noop_mnt, records, ctx.sizes.reads, seed)?;
                    (&mut floor[c], w, r)
                } else {
                    let w = write_latencies(&small.join("0/append"), ctx.sizes.writes)?;
                    let r = read_latencies(&big.join("0"), records, ctx.sizes.reads, seed)?;
                    (&mut ours[c], w, r)
                };
                side[0].push(percentile(&writes, 50.0));
                side[1].push(percentile(&writes, 99.0));
                side[2].push(percentile(&reads, 50.0));
                side[3].push(percentile(&reads, 99.0));
            }
        }
    }
    context(pin_current_thread(&ctx.cpus), "unpinning the caller")?;
    noop.stop()?;
    daemon.stop()?;

    let mut rows = Vec::new();
    let records_name = if records >= 1_000_000 {
        format!("{}M", records / 1_000_000)
    } else {
        format!("{}k", records / 1000)
    };
    for (c, (placement, _)) in callers.iter().enumerate() {
        for (i, (what, p, bar)) in [
            ("one-record write()", "p50", Bar::RatioAtMost(2.0)),
            ("one-record write()", "p99", Bar::RatioAtMost(2.0)),
            ("random cat <offset>", "p50", Bar::RatioAtMost(3.0)),
            ("random cat <offset>", "p99", Bar::RatioAtMost(3.0)),
        ]
        .into_iter()
        .enumerate()
        {
            let figure = if i < 2 {
                format!("{what} {p}, caller on {placement}")
            } else {
                format!("{what} {p} of {records_name} records, caller on {placement}")
            };
            rows.push(
                Row::new("latency", figure, Unit::Micros, median(&ours[c][i]))
                    .floor(median(&floor[c][i]), "no-op FUSE")
                    .bar(bar),
            );
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// The engine in-process

fn engine_rows(ctx: &Ctx) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &size in &RECORD_SIZES {
        eprintln!("engine: {} records", size_name(size));
        let (mut append, mut read) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
        for round in 0..ctx.sizes.rounds {
            let ours_dir = ctx.path(&format!("engine-lmqfs-{round}"));
            let theirs_dir = ctx.path(&format!("engine-commitlog-{round}"));
            let commitlog_first = round % 2 == 1;
            for commitlog_turn in [commitlog_first, !commitlog_first] {
                if commitlog_turn {
                    let (run, bytes) =
                        engine::commitlog(&theirs_dir, size, ctx.sizes.engine_bytes)?;
                    append.1.push(mb_per_s(bytes, run.append));
                    read.1.push(mb_per_s(bytes, run.read));
                } else {
                    let (run, bytes) = engine::lmqfs_log(&ours_dir, size, ctx.sizes.engine_bytes)?;
                    append.0.push(mb_per_s(bytes, run.append));
                    read.0.push(mb_per_s(bytes, run.read));
                }
            }
            let _ = fs::remove_dir_all(&ours_dir);
            let _ = fs::remove_dir_all(&theirs_dir);
        }
        for (what, (ours, theirs)) in [("append", &append), ("read", &read)] {
            rows.push(
                Row::new(
                    "engine",
                    format!("engine {what}, {} records", size_name(size)),
                    Unit::MbPerS,
                    median(ours),
                )
                .floor(median(theirs), "commitlog crate")
                .bar(Bar::RatioAtLeast(2.0)),
            );
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Startup and memory

/// Appends about `bytes` of 100-byte lines to `append`, about 1 MiB per `write()`.
fn fill_bytes(append: &Path, bytes: u64) -> Result<()> {
    fill_partition(append, bytes / 100)
}

/// `VmRSS` and `VmHWM` of the daemon in MiB.
fn memory_mib(daemon: &Daemon) -> Result<(f64, f64)> {
    let (rss, hwm) = daemon.memory()?;
    Ok((rss as f64 / MIB, hwm as f64 / MIB))
}

fn startup(ctx: &Ctx) -> Result<Vec<Row>> {
    // [size] -> (startup ms, stat ms, tail ms, rss, hwm) per round.
    let mut figures: Vec<[Vec<f64>; 5]> = Vec::new();
    for (i, &bytes) in ctx.sizes.startup_bytes.iter().enumerate() {
        let name = format!("startup{i}");
        eprintln!("startup: writing a {} data directory", data_name(bytes));
        let daemon = ctx.mount(&name, None)?;
        let topic = make_topic(&daemon.mnt, "t", None)?;
        fill_bytes(&topic.join("0/append"), bytes)?;
        daemon.stop()?;
        let mut f: [Vec<f64>; 5] = Default::default();
        for _ in 0..ctx.sizes.rounds {
            let daemon = ctx.remount(&name, None)?;
            let log = daemon.mnt.join("t/0/log");
            let started = Instant::now();
            let meta = context(fs::metadata(&log), &format!("stat {}", log.display()))?;
            let stat = started.elapsed();
            let started = Instant::now();
            let out = context(
                Command::new("tail")
                    .args(["-n", "1"])
                    .arg(&log)
                    .stderr(Stdio::inherit())
                    .output(),
                "running tail",
            )?;
            let tail = started.elapsed();
            if !out.status.success() || out.stdout.len() != 100 {
                return Err(format!(
                    "tail -n 1 {} gave {} bytes ({})",
                    log.display(),
                    out.stdout.len(),
                    out.status
                ));
            }
            if meta.len() == 0 {
                return Err(format!("stat {} says it is empty", log.display()));
            }
            let (rss, hwm) = memory_mib(&daemon)?;
            f[0].push(daemon.startup.as_secs_f64() * 1e3);
            f[1].push(stat.as_secs_f64() * 1e3);
            f[2].push(tail.as_secs_f64() * 1e3);
            f[3].push(rss);
            f[4].push(hwm);
            daemon.stop()?;
        }
        let _ = fs::remove_dir_all(ctx.path(&format!("{name}-data")));
        figures.push(f);
    }
    let mut rows = Vec::new();
    let names: Vec<String> = ctx
        .sizes
        .startup_bytes
        .iter()
        .map(|&b| data_name(b))
        .collect();
    for (i, f) in figures.iter().enumerate() {
        let data = &names[i];
        rows.push(Row::new(
            "startup",
            format!("mount until serving, {data} data directory"),
            Unit::Millis,
            median(&f[0]),
        ));
        let mut stat = Row::new(
            "startup",
            format!("first stat log after a clean stop, {data}"),
            Unit::Millis,
            median(&f[1]),
        );
        if i == 1 {
            stat = stat
                .floor(median(&figures[0][1]), &format!("the same at {}", names[0]))
                .bar(Bar::BelowAndFlat(50.0, 2.0));
        }
        rows.push(stat);
        rows.push(Row::new(
            "startup",
            format!("then tail -n 1 log, {data}"),
            Unit::Millis,
            median(&f[2]),
        ));
        rows.push(Row::new(
            "memory",
            format!("daemon VmRSS after those, {data} data directory"),
            Unit::MiB,
            median(&f[3]),
        ));
        rows.push(Row::new(
            "memory",
            format!("daemon VmHWM after those, {data} data directory"),
            Unit::MiB,
            median(&f[4]),
        ));
    }
    Ok(rows)
}

fn memory(ctx: &Ctx) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &partitions in &ctx.sizes.partitions {
        eprintln!("memory: {partitions} partitions");
        let (mut rss, mut hwm) = (Vec::new(), Vec::new());
        for _ in 0..ctx.sizes.memory_rounds {
            let daemon = ctx.mount("memory", None)?;
            let topic = make_topic(&daemon.mnt, "t", None)?;
            if partitions > 1 {
                context(
                    fs::write(topic.join("partitions"), format!("{partitions}\n")),
                    "adding partitions",
                )?;
            }
            for p in 0..partitions {
                let append = topic.join(format!("{p}/append"));
                context(
                    fs::write(&append, "one record\n"),
                    &format!("writing {}", append.display()),
                )?;
            }
            let (r, h) = memory_mib(&daemon)?;
            rss.push(r);
            hwm.push(h);
            daemon.discard();
        }
        let bar = if partitions >= 1000 {
            Bar::Below(100.0)
        } else {
            Bar::None
        };
        rows.push(
            Row::new(
                "memory",
                format!("daemon VmRSS, partitions: {partitions}, one record each"),
                Unit::MiB,
                median(&rss),
            )
            .bar(bar),
        );
        rows.push(
            Row::new(
                "memory",
                format!("daemon VmHWM, partitions: {partitions}, one record each"),
                Unit::MiB,
                median(&hwm),
            )
            .bar(bar),
        );
    }
    let _ = fs::remove_dir_all(ctx.path("memory-data"));
    Ok(rows)
}
