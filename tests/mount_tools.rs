//! Everyday Unix tools on a real mount: producing with `echo`/`printf`, consuming with `cat`,
//! `head`, `tail`, `wc`, `grep` and `dd`.

mod common;

use std::time::Duration;

use common::{read, read_string, sh_ok, Follower, Mount};

/// `n` lines `line-00000` .. (11 bytes each with the newline), written by one `printf`.
fn fill(m: &Mount, partition: &str, n: usize) -> String {
    let text: String = (0..n).map(|i| format!("line-{i:05}\n")).collect();
    std::fs::write(m.scratch().join("input"), &text).unwrap();
    sh_ok(
        &m.mnt,
        &format!(
            "cat '{}' > {partition}/append",
            m.scratch().join("input").display()
        ),
    );
    text
}

fn echo_and_cat_round_trip_with_both_redirections(m: &Mount) {
    m.create_topic("t", 1);
    sh_ok(&m.mnt, "echo one > t/0/append");
    sh_ok(&m.mnt, "echo two >> t/0/append");
    sh_ok(&m.mnt, "echo three > t/0/append");
    assert_eq!(sh_ok(&m.mnt, "cat t/0/log"), "one\ntwo\nthree\n");
    // `>` does not truncate the log: it is the same as `>>`.
    assert_eq!(common::stat_i64(&m.path("t/0"), "log_end_offset"), 3);
}

fn printf_lines_become_one_record_each(m: &Mount) {
    m.create_topic("t", 1);
    sh_ok(
        &m.mnt,
        "printf 'alpha\\nbeta gamma\\n\\nlast\\n' > t/0/append",
    );
    // Each line is a record; the newline is not stored; an empty line is an empty record.
    assert_eq!(read(&m.path("t/0/0")), b"alpha");
    assert_eq!(read(&m.path("t/0/1")), b"beta gamma");
    assert_eq!(read(&m.path("t/0/2")), b"");
    assert_eq!(read(&m.path("t/0/3")), b"last");
    assert_eq!(
        read_string(&m.path("t/0/log")),
        "alpha\nbeta gamma\n\nlast\n"
    );
    assert_eq!(common::stat_i64(&m.path("t/0"), "log_end_offset"), 4);
}

fn head_reads_the_first_lines(m: &Mount) {
    m.create_topic("t", 1);
    fill(m, "t/0", 1000);
    assert_eq!(
        sh_ok(&m.mnt, "head -n 3 t/0/log"),
        "line-00000\nline-00001\nline-00002\n"
    );
    assert_eq!(sh_ok(&m.mnt, "head -c 8 t/0/log"), "line-000");
}

fn tail_n_reads_the_last_lines(m: &Mount) {
    m.create_topic("t", 1);
    fill(m, "t/0", 5000);
    assert_eq!(
        sh_ok(&m.mnt, "tail -n 2 t/0/log"),
        "line-04998\nline-04999\n"
    );
    // tail -c seeks to (size - 5): st_size is exact.
    assert_eq!(sh_ok(&m.mnt, "tail -c 5 t/0/log"), "4999\n");
}

fn tail_f_sees_new_records(m: &Mount) {
    m.create_topic("t", 1);
    sh_ok(&m.mnt, "echo before > t/0/append");
    let mut tail = Follower::spawn(&m.mnt, "tail -f t/0/log", &m.scratch().join("tail.err"));
    assert!(
        tail.wait_for_lines(1, Duration::from_secs(10)),
        "tail -f printed nothing; stderr: {}",
        tail.stderr()
    );
    sh_ok(&m.mnt, "echo after-1 > t/0/append");
    assert!(
        tail.wait_for_lines(2, Duration::from_secs(10)),
        "tail -f did not show a new record within 10 s: {:?}",
        tail.seen
    );
    sh_ok(&m.mnt, "printf 'after-2\\nafter-3\\n' >> t/0/append");
    assert!(
        tail.wait_for_lines(4, Duration::from_secs(10)),
        "tail -f did not show the next records: {:?}",
        tail.seen
    );
    tail.drain_for(Duration::from_millis(1500));
    assert_eq!(tail.seen, ["before", "after-1", "after-2", "after-3"]);
    assert!(
        !tail.stderr().contains("truncated"),
        "tail reported truncation: {}",
        tail.stderr()
    );
}

fn wc_l_counts_records(m: &Mount) {
    m.create_topic("t", 1);
    fill(m, "t/0", 2345);
    assert_eq!(sh_ok(&m.mnt, "wc -l < t/0/log").trim(), "2345");
    assert_eq!(
        sh_ok(&m.mnt, "wc -c < t/0/log").trim(),
        (2345 * 11).to_string()
    );
    // st_size agrees with what reads return.
    let len = std::fs::metadata(m.path("t/0/log")).unwrap().len();
    assert_eq!(len, 2345 * 11);
}

fn grep_finds_records(m: &Mount) {
    m.create_topic("t", 1);
    fill(m, "t/0", 3000);
    sh_ok(&m.mnt, "echo 'needle in a haystack' >> t/0/append");
    fill(m, "t/0", 10);
    assert_eq!(
        sh_ok(&m.mnt, "grep -n needle t/0/log"),
        "3001:needle in a haystack\n"
    );
    assert_eq!(
        sh_ok(&m.mnt, "grep -c 'line-0000[0-9]' t/0/log").trim(),
        "20"
    );
    // grep exits 1 when nothing matches: the view holds only what was written.
    let out = common::sh(&m.mnt, "grep -q missing t/0/log");
    assert_eq!(out.status.code(), Some(1));
}

fn dd_with_skip_reads_from_a_byte_position(m: &Mount) {
    m.create_topic("t", 1);
    fill(m, "t/0", 20_000);
    // Block-aligned skip: records 1234 and 1235 (11 bytes each).
    assert_eq!(
        sh_ok(&m.mnt, "dd if=t/0/log bs=11 skip=1234 count=2 status=none"),
        "line-01234\nline-01235\n"
    );
    // A byte skip landing mid-record, far into the view.
    assert_eq!(
        sh_ok(
            &m.mnt,
            "dd if=t/0/log iflag=skip_bytes,count_bytes skip=199996 count=16 status=none"
        ),
        "18181\nline-18182"
    );
    // Past the end: nothing.
    assert_eq!(
        sh_ok(&m.mnt, "dd if=t/0/log bs=11 skip=20000 count=1 status=none"),
        ""
    );
}

crate::on_both_backends!(
    echo_and_cat_round_trip_with_both_redirections,
    printf_lines_become_one_record_each,
    head_reads_the_first_lines,
    tail_n_reads_the_last_lines,
    tail_f_sees_new_records,
    wc_l_counts_records,
    grep_finds_records,
    dd_with_skip_reads_from_a_byte_position,
);
