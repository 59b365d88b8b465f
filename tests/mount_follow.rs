//! `follow/`: streams that wake on new data. A blocked `cat` sees an append at once, `poll`
//! wakes on append and not before, a live filter works, deleting the topic or stopping the
//! daemon ends blocked readers with end-of-file, Ctrl-C ends a blocked `cat`, and more blocked
//! followers than worker threads leave the mount as responsive as before.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{read_string, sh_ok, wait_timeout, write_once, Follower, Mount};

/// Generous bound for "at once" on a shared machine; the closing note's latency is measured.
const PROMPT: Duration = Duration::from_secs(2);

fn follower(m: &Mount, script: &str, name: &str) -> Follower {
    Follower::spawn(&m.mnt, script, &m.scratch().join(name))
}

/// A `cat t/0/follow/end` that is blocked (checked) waiting for a record.
fn blocked_cat(m: &Mount) -> std::process::Child {
    let mut cat = Command::new("cat")
        .arg(m.path("t/0/follow/end"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(cat.try_wait().unwrap().is_none(), "cat blocks");
    cat
}

#[test]
fn a_blocked_cat_sees_an_append_at_once() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    sh_ok(&m.mnt, "echo old > t/0/append");
    let mut f = follower(&m, "cat t/0/follow/end", "cat.err");
    // Let it block first: nothing is printed for what was there before.
    f.drain_for(Duration::from_millis(300));
    assert!(
        f.seen.is_empty(),
        "follow/end printed old records: {:?}",
        f.seen
    );
    let started = Instant::now();
    sh_ok(&m.mnt, "echo new > t/0/append");
    assert!(f.wait_for_lines(1, PROMPT), "no line within {PROMPT:?}");
    assert!(started.elapsed() < PROMPT);
    assert_eq!(f.seen, vec!["new"]);
    // And again, for several records in one write.
    sh_ok(&m.mnt, "printf 'a\\nb\\nc\\n' > t/0/append");
    assert!(f.wait_for_lines(4, PROMPT));
    assert_eq!(f.seen, vec!["new", "a", "b", "c"]);
    // follow/<offset> starts there and goes on.
    let mut g = follower(&m, "cat t/0/follow/1", "cat1.err");
    assert!(g.wait_for_lines(4, PROMPT));
    assert_eq!(g.seen, vec!["new", "a", "b", "c"]);
    sh_ok(&m.mnt, "echo d > t/0/append");
    assert!(f.wait_for_lines(5, PROMPT) && g.wait_for_lines(5, PROMPT));
}

#[test]
fn jsonl_streams_and_a_live_filter() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    let mut json = follower(&m, "cat t/0/follow/end.jsonl", "json.err");
    let mut errors = follower(
        &m,
        "sh -c 'cat t/0/follow/end | grep --line-buffered ERROR'",
        "grep.err",
    );
    std::thread::sleep(Duration::from_millis(300));
    sh_ok(
        &m.mnt,
        "printf 'INFO fine\\nERROR broken\\nINFO ok\\nERROR again\\n' > t/0/append",
    );
    assert!(errors.wait_for_lines(2, PROMPT), "{:?}", errors.seen);
    assert_eq!(errors.seen, vec!["ERROR broken", "ERROR again"]);
    assert!(json.wait_for_lines(4, PROMPT));
    let first: serde_json::Value = serde_json::from_str(&json.seen[0]).unwrap();
    assert_eq!(
        (first["offset"].as_i64(), first["value"].as_str()),
        (Some(0), Some("INFO fine"))
    );
    // Listing follow/ shows the `end` streams; offsets resolve by name.
    assert_eq!(sh_ok(&m.mnt, "ls t/0/follow"), "end\nend.jsonl\n");
    assert_eq!(
        common::errno_of("follow/9", std::fs::File::open(m.path("t/0/follow/9"))),
        libc::ENOENT
    );
}

#[test]
fn python_poll_wakes_on_append_and_not_before() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    let client = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/follow_client.py");
    let out = Command::new("python3")
        .arg(client)
        .arg("poll")
        .arg(m.path("t/0"))
        .output()
        .expect("python3 is needed for this test");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok poll woke"));
}

#[test]
fn wake_up_latency_is_measured() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    let client = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/follow_client.py");
    let out = Command::new("python3")
        .arg(client)
        .arg("latency")
        .arg(m.path("t/0"))
        .arg("200")
        .output()
        .expect("python3 is needed for this test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Printed for the record (cargo test --release -- --nocapture shows it).
    eprintln!("follow/ wake-up: {}", stdout.trim());
    assert_eq!(read_string(&m.path("t/0/log")).lines().count(), 200);
}

#[test]
fn deleting_the_topic_ends_blocked_readers_with_eof() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    let mut cat = blocked_cat(&m);
    std::fs::remove_dir(m.path("t")).unwrap();
    let status = wait_timeout(&mut cat, PROMPT).expect("cat ended after rmdir");
    assert!(status.success(), "end-of-file, not an error: {status}");
}

#[test]
fn stopping_the_daemon_ends_blocked_readers_with_eof() {
    let Some(mut m) = Mount::new() else { return };
    m.create_topic("t", 1);
    let mut cat = blocked_cat(&m);
    let pid = m.pid().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_timeout(&mut cat, Duration::from_secs(10)).expect("cat ended");
    assert!(status.success(), "end-of-file, not an error: {status}");
    assert!(m.wait_exit().success());
}

#[test]
fn ctrl_c_ends_a_blocked_cat() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    let mut cat = blocked_cat(&m);
    let started = Instant::now();
    // SAFETY: sending a signal to our own child.
    assert_eq!(unsafe { libc::kill(cat.id() as i32, libc::SIGINT) }, 0);
    let status = wait_timeout(&mut cat, PROMPT).expect("cat ended after SIGINT");
    assert!(started.elapsed() < PROMPT);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGINT));
    // The mount is fine afterwards.
    sh_ok(&m.mnt, "echo after > t/0/append");
    assert_eq!(read_string(&m.path("t/0/log")), "after\n");
}

#[test]
fn many_blocked_followers_leave_the_mount_responsive() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    sh_ok(&m.mnt, "echo zero > t/0/append");
    // Far more than the daemon's worker threads (at most 16).
    let mut followers: Vec<Follower> = (0..40)
        .map(|i| follower(&m, "cat t/0/follow/end", &format!("f{i}.err")))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(read_string(&m.path("t/0/0")), "zero");
        write_once(&m.path("t/0/append"), b"tick\n").unwrap();
        assert!(
            started.elapsed() < PROMPT,
            "a read and an append took {:?} with 40 blocked followers",
            started.elapsed()
        );
    }
    for f in &mut followers {
        assert!(f.wait_for_lines(5, Duration::from_secs(10)), "{:?}", f.seen);
        assert_eq!(f.seen, vec!["tick"; 5]);
    }
}

#[test]
fn a_stream_passed_by_retention_goes_on_from_the_new_log_start() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("t", 1);
    sh_ok(&m.mnt, "printf '0\\n1\\n2\\n' > t/0/append");
    sh_ok(&m.mnt, "echo roll > t/0/control");
    sh_ok(&m.mnt, "printf '3\\n4\\n' > t/0/append");
    // Opened at offset 0, read only after delete-records and retention moved the start.
    let script = "exec 3< t/0/follow/0; echo delete-records 3 > t/0/control; \
                  echo retention > t/0/control; head -n 2 <&3";
    assert_eq!(sh_ok(&m.mnt, script), "3\n4\n");
}
