//! Bad input, one table: each row asserts its errno, that nothing changed (log start and end
//! offsets, `log` bytes, config, partitions, topics) and that the daemon still serves.

mod common;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::{stat_i64, write_once, Mount};

use libc::{EACCES, EBADF, EFBIG, EINVAL, ENOENT, EPERM};

/// Everything a bad input must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    root: Vec<String>,
    topic: Vec<String>,
    partitions: String,
    config: String,
    offsets: Vec<(i64, i64)>,
    logs: Vec<Vec<u8>>,
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn snapshot(m: &Mount) -> Snapshot {
    let parts = ["t/0", "t/1"];
    Snapshot {
        root: listing(&m.mnt),
        topic: listing(&m.path("t")),
        partitions: common::read_string(&m.path("t/partitions")),
        config: common::read_string(&m.path("t/config")),
        offsets: parts
            .iter()
            .map(|p| {
                let dir = m.path(p);
                (
                    stat_i64(&dir, "log_start_offset"),
                    stat_i64(&dir, "log_end_offset"),
                )
            })
            .collect(),
        logs: parts
            .iter()
            .map(|p| common::read(&m.path(&format!("{p}/log"))))
            .collect(),
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn last_os_error<T>() -> io::Result<T> {
    Err(io::Error::last_os_error())
}

type Action = Box<dyn Fn(&Mount) -> io::Result<()>>;

fn mkdir(name: String) -> Action {
    Box::new(move |m| fs::create_dir(m.path(&name)))
}

fn write(rel: &'static str, bytes: Vec<u8>) -> Action {
    Box::new(move |m| write_once(&m.path(rel), &bytes))
}

/// Opens read-only and reads (a refusal may come at open or at read).
fn read_of(rel: &'static str) -> Action {
    Box::new(move |m| {
        let mut buf = [0u8; 16];
        File::open(m.path(rel))?.read(&mut buf).map(|_| ())
    })
}

/// Opens read-write and reads.
fn read_write_open(rel: &'static str) -> Action {
    Box::new(move |m| {
        let mut buf = [0u8; 16];
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.path(rel))?
            .read(&mut buf)
            .map(|_| ())
    })
}

/// Opens write-only (no truncate) and writes (a refusal may come at open or at write).
fn write_to(rel: &'static str) -> Action {
    Box::new(move |m| {
        OpenOptions::new()
            .write(true)
            .open(m.path(rel))?
            .write_all(b"x\n")
    })
}

fn unlink(rel: &'static str) -> Action {
    Box::new(move |m| fs::remove_file(m.path(rel)))
}

fn rename(from: &'static str, to: &'static str) -> Action {
    Box::new(move |m| fs::rename(m.path(from), m.path(to)))
}

/// truncate(2) by path: no open, so only the filesystem's setattr can refuse it.
fn truncate(rel: &'static str) -> Action {
    Box::new(move |m| {
        let p = cpath(&m.path(rel));
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::truncate(p.as_ptr(), 0) } == 0 {
            Ok(())
        } else {
            last_os_error()
        }
    })
}

/// open(O_CREAT|O_WRONLY) of a new name.
fn create(rel: &'static str) -> Action {
    Box::new(move |m| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m.path(rel))
            .map(|_| ())
    })
}

fn chmod(rel: &'static str) -> Action {
    Box::new(move |m| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(m.path(rel), fs::Permissions::from_mode(0o666))
    })
}

fn read_file(rel: &'static str) -> Action {
    Box::new(move |m| fs::read(m.path(rel)).map(|_| ()))
}

struct Row {
    what: &'static str,
    /// Accepted errnos; empty means the call must succeed (and still change nothing).
    errnos: &'static [i32],
    action: Action,
}

fn row(what: &'static str, errnos: &'static [i32], action: Action) -> Row {
    Row {
        what,
        errnos,
        action,
    }
}

fn errno_name(e: i32) -> &'static str {
    match e {
        EACCES => "EACCES",
        EFBIG => "EFBIG",
        EINVAL => "EINVAL",
        ENOENT => "ENOENT",
        EPERM => "EPERM",
        EBADF => "EBADF",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EROFS => "EROFS",
        libc::EEXIST => "EEXIST",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENOSYS => "ENOSYS",
        libc::EIO => "EIO",
        _ => "other",
    }
}

fn rows() -> Vec<Row> {
    // The kernel enforces the modes (default_permissions) with EACCES at open; root passes
    // that check, and then the filesystem's own open refuses the same way.
    let denied: &'static [i32] = &[EACCES];
    let big = |prefix: &str| {
        let mut b = prefix.as_bytes().to_vec();
        b.extend(std::iter::repeat_n(b'x', 2000));
        b.push(b'\n');
        b
    };
    vec![
        // Topic names: Kafka's rules (the kernel itself resolves `.` and `..`).
        row("mkdir 'a b'", &[EINVAL], mkdir("a b".into())),
        row("mkdir 250 chars", &[EINVAL], mkdir("a".repeat(250))),
        row("mkdir 'ü'", &[EINVAL], mkdir("ü".into())),
        row("mkdir 'a:b'", &[EINVAL], mkdir("a:b".into())),
        row("mkdir 'a*b'", &[EINVAL], mkdir("a*b".into())),
        row("mkdir existing topic", &[libc::EEXIST], mkdir("t".into())),
        // Records over max.message.bytes (1024 here): the whole write is refused.
        row(
            "append record over max.message.bytes",
            &[EFBIG],
            write("t/0/append", big("ok line\n")),
        ),
        row(
            "append.jsonl record over max.message.bytes",
            &[EFBIG],
            write("t/0/append.jsonl", {
                let mut b = br#"{"value":"ok"}
{"value":""#
                    .to_vec();
                b.extend(std::iter::repeat_n(b'y', 2000));
                b.extend(b"\"}\n");
                b
            }),
        ),
        // append.jsonl: invalid JSON and invalid fields.
        row(
            "jsonl not JSON",
            &[EINVAL],
            write("t/0/append.jsonl", b"{not json}\n".to_vec()),
        ),
        row(
            "jsonl array",
            &[EINVAL],
            write("t/0/append.jsonl", b"[1,2,3]\n".to_vec()),
        ),
        row(
            "jsonl value is a number",
            &[EINVAL],
            write(
                "t/0/append.jsonl",
                br#"{"value":5}
"#
                .to_vec(),
            ),
        ),
        row(
            "jsonl header value is a number",
            &[EINVAL],
            write(
                "t/0/append.jsonl",
                br#"{"value":"a","headers":{"h":1}}
"#
                .to_vec(),
            ),
        ),
        row(
            "jsonl timestamp is text",
            &[EINVAL],
            write(
                "t/0/append.jsonl",
                br#"{"value":"a","timestamp":"yesterday"}
"#
                .to_vec(),
            ),
        ),
        row(
            "jsonl value_b64 not base64",
            &[EINVAL],
            write(
                "t/0/append.jsonl",
                br#"{"value_b64":"***"}
"#
                .to_vec(),
            ),
        ),
        row(
            "jsonl key is an object",
            &[EINVAL],
            write(
                "t/0/append.jsonl",
                br#"{"key":{},"value":"a"}
"#
                .to_vec(),
            ),
        ),
        row(
            "jsonl good line then bad line: nothing appended",
            &[EINVAL],
            write(
                "t/0/append.jsonl",
                br#"{"value":"fine"}
{"value":
"#
                .to_vec(),
            ),
        ),
        // config.
        row(
            "config unknown key",
            &[EINVAL],
            write("t/config", b"no.such.key=1\n".to_vec()),
        ),
        row(
            "config bad number",
            &[EINVAL],
            write("t/config", b"retention.ms=abc\n".to_vec()),
        ),
        row(
            "config bad compression",
            &[EINVAL],
            write("t/config", b"compression.type=brotli\n".to_vec()),
        ),
        row(
            "config bad cleanup.policy",
            &[EINVAL],
            write("t/config", b"cleanup.policy=sometimes\n".to_vec()),
        ),
        row(
            "config bad timestamp type",
            &[EINVAL],
            write("t/config", b"message.timestamp.type=Never\n".to_vec()),
        ),
        row(
            "config line without =",
            &[EINVAL],
            write("t/config", b"retention.ms\n".to_vec()),
        ),
        row(
            "config good line then bad line: nothing changed",
            &[EINVAL],
            write("t/config", b"retention.ms=1000\nbogus.key=1\n".to_vec()),
        ),
        // partitions.
        row(
            "partitions smaller",
            &[EINVAL],
            write("t/partitions", b"1\n".to_vec()),
        ),
        row(
            "partitions zero",
            &[EINVAL],
            write("t/partitions", b"0\n".to_vec()),
        ),
        row(
            "partitions negative",
            &[EINVAL],
            write("t/partitions", b"-3\n".to_vec()),
        ),
        row(
            "partitions not a number",
            &[EINVAL],
            write("t/partitions", b"many\n".to_vec()),
        ),
        row(
            "partitions number with junk",
            &[EINVAL],
            write("t/partitions", b"3x\n".to_vec()),
        ),
        // control.
        row(
            "root control unknown",
            &[EINVAL],
            write("control", b"bogus\n".to_vec()),
        ),
        row(
            "topic control unknown",
            &[EINVAL],
            write("t/control", b"bogus\n".to_vec()),
        ),
        row(
            "topic control delete-records",
            &[EINVAL],
            write("t/control", b"delete-records 3\n".to_vec()),
        ),
        row(
            "partition control unknown",
            &[EINVAL],
            write("t/0/control", b"bogus\n".to_vec()),
        ),
        row(
            "delete-records not a number",
            &[EINVAL],
            write("t/0/control", b"delete-records abc\n".to_vec()),
        ),
        row(
            "delete-records without offset",
            &[EINVAL],
            write("t/0/control", b"delete-records\n".to_vec()),
        ),
        row(
            "roll with an argument",
            &[EINVAL],
            write("t/0/control", b"roll now\n".to_vec()),
        ),
        // Modes: append files are write-only (0200), views read-only (0444).
        row("read append", denied, read_of("t/0/append")),
        row("read append.jsonl", denied, read_of("t/0/append.jsonl")),
        row(
            "open append read-write",
            denied,
            read_write_open("t/0/append"),
        ),
        row("write log", denied, write_to("t/0/log")),
        row("write log.jsonl", denied, write_to("t/0/log.jsonl")),
        row("write stats", denied, write_to("t/0/stats")),
        row("write README", denied, write_to("README")),
        row("write offset file", denied, write_to("t/0/3")),
        row("write offset json", denied, write_to("t/0/3.json")),
        row("write from view", denied, write_to("t/0/from/2")),
        row("write time lookup", denied, write_to("t/0/time/0")),
        row(
            "write segment file",
            denied,
            write_to("t/0/segments/00000000000000000000.log"),
        ),
        // No files or directories but topics can be created.
        row(
            "create a file in a partition",
            &[EPERM],
            create("t/0/newfile"),
        ),
        row("create a file at the root", &[EPERM], create("newfile")),
        row("mkdir inside a topic", &[EPERM], mkdir("t/sub".into())),
        row(
            "mkdir inside a partition",
            &[EPERM],
            mkdir("t/0/sub".into()),
        ),
        row("chmod log", &[EPERM], chmod("t/0/log")),
        // The root's fixed files cannot be removed; inside a topic an unlink succeeds and
        // changes nothing (a topic goes as a whole, by rmdir). Nothing is renamed or truncated.
        row("unlink README", &[EPERM], unlink("README")),
        row("unlink root control", &[EPERM], unlink("control")),
        row("unlink config changes nothing", &[], unlink("t/config")),
        row(
            "unlink partitions changes nothing",
            &[],
            unlink("t/partitions"),
        ),
        row(
            "unlink topic control changes nothing",
            &[],
            unlink("t/control"),
        ),
        row("unlink append changes nothing", &[], unlink("t/0/append")),
        row(
            "unlink append.jsonl changes nothing",
            &[],
            unlink("t/0/append.jsonl"),
        ),
        row("unlink log changes nothing", &[], unlink("t/0/log")),
        row("unlink stats changes nothing", &[], unlink("t/0/stats")),
        row("unlink offset file changes nothing", &[], unlink("t/0/3")),
        row(
            "unlink segment file changes nothing",
            &[],
            unlink("t/0/segments/00000000000000000000.log"),
        ),
        row("rename log", &[EPERM], rename("t/0/log", "t/0/log2")),
        row("rename README", &[EPERM], rename("README", "README2")),
        row("rename config", &[EPERM], rename("t/config", "t/config2")),
        row(
            "rename append over log",
            &[EPERM],
            rename("t/0/append", "t/0/log"),
        ),
        row("truncate log", &[EPERM], truncate("t/0/log")),
        row("truncate README", &[EPERM], truncate("README")),
        row("truncate stats", &[EPERM], truncate("t/0/stats")),
        row(
            "truncate segment file",
            &[EPERM],
            truncate("t/0/segments/00000000000000000000.log"),
        ),
        // Truncating append is ignored (so `>` works) and changes nothing.
        row("truncate append is ignored", &[], truncate("t/0/append")),
        // Offsets outside [log start, log end) and names that are not offsets.
        row("offset below log start", &[ENOENT], read_file("t/0/1")),
        row(
            "offset json below log start",
            &[ENOENT],
            read_file("t/0/0.json"),
        ),
        row("offset at log end", &[ENOENT], read_file("t/0/5")),
        row("offset past log end", &[ENOENT], read_file("t/0/999999")),
        row("offset not numeric", &[ENOENT], read_file("t/0/abc")),
        row("offset negative", &[ENOENT], read_file("t/0/-1")),
        row("offset with junk", &[ENOENT], read_file("t/0/3x")),
        row("offset with a leading zero", &[ENOENT], read_file("t/0/03")),
        row("from below log start", &[ENOENT], read_file("t/0/from/1")),
        row("from past log end", &[ENOENT], read_file("t/0/from/6")),
        row(
            "time not a time",
            &[EINVAL],
            read_file("t/0/time/yesterday"),
        ),
        row("offset json past end", &[ENOENT], read_file("t/0/77.json")),
        row(
            "partition that does not exist",
            &[ENOENT],
            read_file("t/2/log"),
        ),
    ]
}

#[test]
fn bad_input_table() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 2);
    write_once(&m.path("t/config"), b"max.message.bytes=1024\n").unwrap();
    write_once(&m.path("t/0/append"), b"r0\nr1\nr2\nr3\nr4\n").unwrap();
    write_once(&m.path("t/1/append"), b"other\n").unwrap();
    write_once(&m.path("t/0/control"), b"delete-records 2\n").unwrap();
    assert_eq!(stat_i64(&m.path("t/0"), "log_start_offset"), 2);
    assert_eq!(stat_i64(&m.path("t/0"), "log_end_offset"), 5);

    let mut failures = Vec::new();
    for r in rows() {
        let before = snapshot(&m);
        let result = (r.action)(&m);
        match (&result, r.errnos) {
            (Ok(()), []) => {}
            (Ok(()), want) => failures.push(format!(
                "{}: succeeded, expected {:?}",
                r.what,
                want.iter().map(|&e| errno_name(e)).collect::<Vec<_>>()
            )),
            (Err(e), want) => {
                let got = e.raw_os_error().unwrap_or(-1);
                if !want.contains(&got) {
                    failures.push(format!(
                        "{}: got {} ({e}), expected {:?}",
                        r.what,
                        errno_name(got),
                        want.iter().map(|&e| errno_name(e)).collect::<Vec<_>>()
                    ));
                }
            }
        }
        m.assert_serving();
        let after = snapshot(&m);
        if after != before {
            failures.push(format!(
                "{}: changed state\n  before: {before:?}\n  after:  {after:?}",
                r.what
            ));
        }
    }
    // The daemon logs why it refused.
    let log = m.daemon_log();
    assert!(
        log.contains("exceeds max.message.bytes=1024"),
        "the daemon log does not say why a record was refused:\n{log}"
    );
    // The log stays usable after all of that.
    write_once(&m.path("t/0/append"), b"r5\n").unwrap();
    assert_eq!(common::read(&m.path("t/0/5")), b"r5");
    assert_eq!(common::read_string(&m.path("t/0/log")), "r2\nr3\nr4\nr5\n");
    assert!(
        failures.is_empty(),
        "{} row(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
