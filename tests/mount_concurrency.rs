//! Concurrent writers and readers on one partition: every line exactly once, never torn, never
//! interleaved, and readers never see a view that is stale or shrinks.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{open_append, read_to_eof, Mount};

const WRITERS: usize = 4;
const LINES_PER_WRITER: usize = 10_000;

/// The exact record writer `w` writes as its `n`th line (varying length, so a torn or
/// interleaved line cannot pass for a whole one).
fn line(w: usize, n: usize) -> String {
    format!("w{w}-{n:05}-{}", "abcdefghijklmnopq".get(..n % 17).unwrap())
}

/// Parses and checks one line; returns (writer, n).
fn parse(l: &str) -> (usize, usize) {
    let parsed = (|| {
        let rest = l.strip_prefix('w')?;
        let (w, rest) = rest.split_once('-')?;
        let (n, _) = rest.split_once('-')?;
        Some((w.parse::<usize>().ok()?, n.parse::<usize>().ok()?))
    })();
    match parsed {
        Some((w, n)) if w < WRITERS && n < LINES_PER_WRITER && l == line(w, n) => (w, n),
        _ => panic!("torn or interleaved line {l:?}"),
    }
}

/// Checks one snapshot of `log`: whole lines only, each writer's lines in its write order
/// with no gaps and no repeats (a writer's write returns before its next one starts).
fn check_snapshot(bytes: &[u8]) -> usize {
    let text = std::str::from_utf8(bytes).expect("log is UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "snapshot ends mid-record"
    );
    let mut next = [0usize; WRITERS];
    let mut count = 0;
    for l in text.lines() {
        let (w, n) = parse(l);
        assert_eq!(
            n, next[w],
            "writer {w}: expected line {} next, got {l:?}",
            next[w]
        );
        next[w] += 1;
        count += 1;
    }
    count
}

#[test]
fn concurrent_writers_and_readers_see_every_line_once() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("c", 1);
    let append = m.path("c/0/append");
    let log = m.path("c/0/log");
    let done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..2)
        .map(|_| {
            let log = log.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut previous: Vec<u8> = Vec::new();
                let mut reads = 0;
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let out = Command::new("cat").arg(&log).output().expect("run cat");
                    assert!(out.status.success(), "cat log failed: {:?}", out);
                    check_snapshot(&out.stdout);
                    // Append-only: what an earlier read saw is a prefix of every later read.
                    assert!(
                        out.stdout.starts_with(&previous),
                        "a later read does not extend an earlier one ({} then {} bytes)",
                        previous.len(),
                        out.stdout.len()
                    );
                    let size = std::fs::metadata(&log).expect("stat log").len();
                    assert!(
                        size >= out.stdout.len() as u64,
                        "st_size shrank below a read"
                    );
                    previous = out.stdout;
                    reads += 1;
                    if finished {
                        return reads;
                    }
                }
            })
        })
        .collect();

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let append = append.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let mut f = open_append(&append).expect("open append");
                let mut n = 0;
                let mut chunk = 0;
                while n < LINES_PER_WRITER {
                    // 1 to 64 lines per write().
                    let lines = (chunk % 64 + 1).min(LINES_PER_WRITER - n);
                    let buf: String = (n..n + lines).map(|i| line(w, i) + "\n").collect();
                    let written = f.write(buf.as_bytes()).expect("write append");
                    assert_eq!(written, buf.len(), "short write");
                    n += lines;
                    chunk += 1;
                }
                // Visible to a new reader as soon as write() returned.
                let log = read_to_eof(&log).expect("read log");
                let last = format!("{}\n", line(w, LINES_PER_WRITER - 1));
                assert!(
                    log.windows(last.len()).any(|x| x == last.as_bytes()),
                    "writer {w}'s last line is not in log after its write returned"
                );
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer panicked");
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        let reads = r
            .join()
            .expect("reader saw a torn, interleaved or stale view");
        assert!(reads >= 1);
    }

    let all = read_to_eof(&log).unwrap();
    assert_eq!(check_snapshot(&all), WRITERS * LINES_PER_WRITER);
    let unique: HashSet<&[u8]> = all
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        unique.len(),
        WRITERS * LINES_PER_WRITER,
        "a line appears twice"
    );
    assert_eq!(
        common::stat_i64(&m.path("c/0"), "log_end_offset"),
        (WRITERS * LINES_PER_WRITER) as i64
    );
    assert_eq!(std::fs::metadata(&log).unwrap().len(), all.len() as u64);
}

/// The page-cache hazard of a growing view, provoked directly: readers that hold `log` open
/// read to its end (a short read inside a page), then learn a larger size through another
/// path's `stat` while a writer keeps appending, and read on from where they stopped. A page
/// the kernel zero-filled past the old end must never be served as data: every byte read is
/// part of a whole line, and the bytes read through the open file equal a fresh read of the
/// same range.
#[test]
fn readers_at_the_growing_end_never_see_zero_filled_pages() {
    use std::io::Read;
    let Some(m) = Mount::new() else { return };
    m.create_topic("z", 1);
    let append = m.path("z/0/append");
    let log = m.path("z/0/log");
    const LINES: usize = 5_000;
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let log = log.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut file = std::fs::File::open(&log).expect("open log");
                let mut seen = Vec::new();
                let mut buf = vec![0u8; 1 + r * 1500];
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let n = file.read(&mut buf).expect("read log");
                    if n > 0 {
                        assert!(
                            !buf[..n].contains(&0),
                            "reader {r}: a zero byte at view position {}",
                            seen.len() + buf[..n].iter().position(|b| *b == 0).unwrap()
                        );
                        seen.extend_from_slice(&buf[..n]);
                        continue;
                    }
                    if finished {
                        return seen;
                    }
                    // At the end: another path's stat tells the kernel the new size.
                    std::fs::metadata(&log).expect("stat log");
                }
            })
        })
        .collect();
    let mut f = open_append(&append).expect("open append");
    let mut n = 0;
    while n < LINES {
        let lines = (n % 7 + 1).min(LINES - n);
        let buf: String = (n..n + lines)
            .map(|i| line(i % WRITERS, i % LINES_PER_WRITER) + "\n")
            .collect();
        f.write_all(buf.as_bytes()).expect("write append");
        n += lines;
    }
    done.store(true, Ordering::SeqCst);
    let all = read_to_eof(&log).unwrap();
    for r in readers {
        let seen = r.join().expect("a reader saw zero bytes");
        assert_eq!(seen.len(), all.len(), "a reader stopped early");
        assert!(
            seen == all,
            "an open reader read other bytes than a fresh read"
        );
    }
}
