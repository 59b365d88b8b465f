//! kill -9 while writing: writer processes append through the mount (some calling `fsync`),
//! segments roll every few KiB, one topic per codec, and the daemon is killed with SIGKILL at a
//! seeded random moment, then mounted again, round after round. After every round each record
//! whose `write()` returned is in the log exactly once and in its writer's order, the log reads
//! end to end, and `lmqfs dump-log --verify` passes on every segment file.
//!
//! `LMQFS_CRASH_ROUNDS` sets the number of rounds (CI runs a few); `LMQFS_CRASH_SEED` the seed
//! (printed, so a failing run can be repeated).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::{read_to_eof, wait_timeout, write_once, Mount};

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
const DEFAULT_ROUNDS: usize = 6;
const WRITERS: usize = 5;
/// Records each writer has acknowledged before the kill may come (so segments fill and roll
/// on a slow machine too).
const MIN_ACKS_BEFORE_KILL: i64 = 60;

/// Appends lines `<writer> <seq> <padding>` to `argv[1]`, one to four lines per `write()`,
/// and prints the last sequence number of each write once it returned (the acknowledgement).
/// With `argv[3]` > 0, calls `fsync` after every that many writes. Stops at the first error.
const WRITER: &str = r#"
import os, random, sys
path, wid, fsync_every, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(seed)
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
seq, writes = 0, 0
while True:
    n = rnd.randint(1, 4)
    data = b"".join(
        ("%s %d %s\n" % (wid, seq + j, "x" * rnd.randint(0, 300))).encode() for j in range(n)
    )
    try:
        if os.write(fd, data) != len(data):
            sys.exit(3)
    except OSError:
        break
    seq += n
    writes += 1
    print(seq - 1, flush=True)
    if fsync_every and writes % fsync_every == 0:
        try:
            os.fsync(fd)
        except OSError:
            break
"#;

struct Writer {
    id: String,
    topic: String,
    child: Child,
    acks: mpsc::Receiver<i64>,
    /// The last acknowledgement received so far (-1: none).
    last: i64,
}

impl Writer {
    /// Takes the acknowledgements that arrived; whether there is at least one.
    fn drain(&mut self) -> bool {
        if let Some(last) = self.acks.try_iter().last() {
            self.last = last;
        }
        self.last >= 0
    }
}

fn spawn_writer(m: &Mount, id: String, topic: &str, fsync_every: u32, seed: u64) -> Writer {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(WRITER)
        .arg(m.path(&format!("{topic}/0/append")))
        .arg(&id)
        .arg(fsync_every.to_string())
        .arg(seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn python3 writer");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(n) = line.trim().parse::<i64>() {
                let _ = tx.send(n);
            }
        }
    });
    Writer {
        id,
        topic: topic.to_string(),
        child,
        acks: rx,
        last: -1,
    }
}

/// Per writer: its topic and the last acknowledged sequence number (-1: none).
type Acked = BTreeMap<String, (String, i64)>;

/// Checks one topic's `log` against what its writers got acknowledged.
fn check_topic(m: &Mount, topic: &str, acked: &Acked, round: usize, seed: u64) -> usize {
    let bytes = read_to_eof(&m.path(&format!("{topic}/0/log")))
        .unwrap_or_else(|e| panic!("round {round} (seed {seed}): {topic}/0/log unreadable: {e}"));
    let text = String::from_utf8(bytes).expect("log is UTF-8");
    let mut next: BTreeMap<&str, i64> = BTreeMap::new();
    let mut records = 0;
    for line in text.lines() {
        let mut parts = line.splitn(3, ' ');
        let (Some(id), Some(seq)) = (parts.next(), parts.next()) else {
            panic!("round {round} (seed {seed}): {topic}: malformed line {line:?}");
        };
        let seq: i64 = seq
            .parse()
            .unwrap_or_else(|_| panic!("bad seq in {line:?}"));
        let want = next.entry(id).or_insert(0);
        assert_eq!(
            seq, *want,
            "round {round} (seed {seed}): {topic}: writer {id} has record {seq} where {want} \
             was next (lost, duplicated or reordered)"
        );
        *want += 1;
        records += 1;
    }
    for (id, (t, last)) in acked {
        if t != topic {
            continue;
        }
        let have = next.get(id.as_str()).copied().unwrap_or(0);
        assert!(
            have > *last,
            "round {round} (seed {seed}): {topic}: writer {id} got records up to {last} \
             acknowledged, but the log has only {have}"
        );
    }
    records
}

/// `lmqfs dump-log --verify` over every segment file of every partition.
fn verify_segments(m: &Mount, round: usize, seed: u64) {
    let files: Vec<_> = common::files_under(&m.data)
        .into_iter()
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "log" || e == "index" || e == "timeindex")
                && !p.to_string_lossy().contains("/.lmqfs")
        })
        .collect();
    assert!(!files.is_empty(), "no segment files under {:?}", m.data);
    let out = Command::new(common::BIN)
        .arg("dump-log")
        .arg("--verify")
        .args(&files)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "round {round} (seed {seed}): dump-log --verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn acknowledged_records_survive_kill_9_at_random_moments() {
    let rounds: usize = std::env::var("LMQFS_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    let seed: u64 = std::env::var("LMQFS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| common::now_ms() as u64);
    eprintln!("kill -9 rounds: {rounds}, LMQFS_CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let Some(mut m) = Mount::with_options(common::MANUAL_CLEANUP) else {
        return;
    };
    for codec in CODECS {
        let topic = format!("c-{codec}");
        m.create_topic(&topic, 1);
        write_once(
            &m.path(&format!("{topic}/config")),
            format!("compression.type={codec}\nsegment.bytes=8192\n").as_bytes(),
        )
        .unwrap();
    }
    let mut acked = Acked::new();
    let mut total_acked = 0i64;
    for round in 0..rounds {
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let topic = format!("c-{}", CODECS[(round + w) % CODECS.len()]);
            // Writers 0 and 3 fsync every few writes; the others never.
            let fsync_every = if w % 3 == 0 {
                rng.random_range(1..4)
            } else {
                0
            };
            let id = format!("r{round}w{w}");
            writers.push(spawn_writer(&m, id, &topic, fsync_every, rng.random()));
        }
        // Let each get a few writes acknowledged (however slow the machine), then kill at a
        // random moment.
        let going = common::wait_until(Duration::from_secs(60), || {
            writers
                .iter_mut()
                .all(|w| w.drain() && w.last >= MIN_ACKS_BEFORE_KILL)
        });
        assert!(going, "round {round}: writers made no progress");
        std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
        m.kill9();
        for mut w in writers {
            if wait_timeout(&mut w.child, Duration::from_secs(20)).is_none() {
                let _ = w.child.kill();
                let _ = w.child.wait();
                panic!("round {round}: writer {} hung after the daemon died", w.id);
            }
            // Every acknowledgement printed before the writer exited.
            std::thread::sleep(Duration::from_millis(20));
            w.drain();
            acked.insert(w.id.clone(), (w.topic.clone(), w.last));
        }
        m.try_start()
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): remount failed: {e}"));
        let mut records = 0;
        for codec in CODECS {
            records += check_topic(&m, &format!("c-{codec}"), &acked, round, seed);
        }
        total_acked = acked.values().map(|(_, last)| last + 1).sum();
        assert!(records as i64 >= total_acked);
        verify_segments(&m, round, seed);
    }
    let segments = common::ls(&m.path("c-none/0/segments"))
        .iter()
        .filter(|n| n.ends_with(".log"))
        .count();
    assert!(
        segments > 1,
        "c-none has {segments} segment: no rolls happened"
    );
    let log = m.daemon_logs().join("\n").to_lowercase();
    assert!(log.contains("recovering"), "no recovery after kill -9");
    eprintln!(
        "kill -9: {rounds} rounds survived, {total_acked} acknowledged records all present \
         (seed {seed})"
    );
}
