//! A mount of a Kafka-protocol cluster (`--bootstrap-server`): Tansu started by each test on a
//! loopback port. What is specific to a cluster: two daemons (as two machines) sharing one
//! broker, a real Kafka client on the other side, the commands a cluster refuses, consumer
//! group offsets, and a broker that goes away.
//!
//! The file-level checks shared with the embedded engine run in `mount_tools.rs`,
//! `mount_semantics.rs` and `mount_python.rs` as `cluster::<name>`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::broker::{kafka_python, skip_or_fail_broker, Broker};
use common::{errno_of, read, read_string, sh_ok, wait_until, write_once, Follower, Mount};

fn json(path: &Path) -> Value {
    let text = read_string(path);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {text}", path.display()))
}

/// Runs `tests/kafka_client.py` with the venv's Python; its stdout.
fn kafka_client(python: &Path, args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka_client.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("run the Kafka client");
    assert!(
        out.status.success(),
        "kafka_client.py {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A broker and two daemons mounted on it (as two machines would have). `None` when skipped.
fn two_mounts() -> Option<(Broker, Mount, Mount)> {
    let broker = Broker::start()?;
    let a = Mount::on_cluster(&broker)?;
    let b = Mount::on_cluster(&broker)?;
    Some((broker, a, b))
}

#[test]
fn two_mounts_of_one_cluster_see_each_others_records() {
    let Some((_broker, a, b)) = two_mounts() else {
        return;
    };
    a.create_topic("shared", 1);
    assert!(
        wait_until(Duration::from_secs(10), || b.path("shared/0").exists()),
        "the topic made on mount A never appeared on mount B"
    );
    sh_ok(&a.mnt, "printf 'a1\\na2\\n' >> shared/0/append");
    let mut tail = Follower::spawn(&b.mnt, "tail -f shared/0/log", &b.scratch().join("t.err"));
    assert!(
        tail.wait_for_lines(2, Duration::from_secs(10)),
        "B's tail -f never showed A's records: {:?} {}",
        tail.seen,
        tail.stderr()
    );
    sh_ok(&b.mnt, "echo b1 >> shared/0/append");
    sh_ok(&a.mnt, "echo a3 >> shared/0/append");
    assert!(
        tail.wait_for_lines(4, Duration::from_secs(10)),
        "B's tail -f missed records: {:?}",
        tail.seen
    );
    tail.drain_for(Duration::from_millis(500));
    assert_eq!(tail.seen, ["a1", "a2", "b1", "a3"]);
    // Offsets are the cluster's: both mounts name the same record by the same offset.
    let mut seen = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            seen = read_string(&a.path("shared/0/log"));
            seen == "a1\na2\nb1\na3\n"
        }),
        "A's log: {seen:?}"
    );
    assert_eq!(read(&a.path("shared/0/2")), b"b1");
    assert_eq!(read(&b.path("shared/0/3")), b"a3");
    assert_eq!(
        json(&a.path("shared/0/2.json")),
        json(&b.path("shared/0/2.json"))
    );
    // A topic removed on one mount is gone on the other.
    std::fs::remove_dir(a.path("shared")).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || !b.path("shared").exists()),
        "B still shows the deleted topic"
    );
}

#[test]
fn a_follow_stream_wakes_for_records_another_mount_appended() {
    let Some((_broker, a, b)) = two_mounts() else {
        return;
    };
    a.create_topic("f", 1);
    assert!(wait_until(Duration::from_secs(10), || b
        .path("f/0")
        .exists()));
    let mut follow = Follower::spawn(&b.mnt, "cat f/0/follow/0", &b.scratch().join("f.err"));
    std::thread::sleep(Duration::from_millis(300));
    sh_ok(&a.mnt, "echo one >> f/0/append");
    assert!(
        follow.wait_for_lines(1, Duration::from_secs(10)),
        "B's follow/0 did not wake for A's record: {}",
        follow.stderr()
    );
    sh_ok(&a.mnt, "printf 'two\\nthree\\n' >> f/0/append");
    assert!(
        follow.wait_for_lines(3, Duration::from_secs(10)),
        "B's follow/0 missed records: {:?}",
        follow.seen
    );
    assert_eq!(follow.seen, ["one", "two", "three"]);
}

#[test]
fn a_kafka_client_and_the_mount_read_each_others_records() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let python = match kafka_python() {
        Ok(p) => p,
        Err(reason) => return skip_or_fail_broker(&reason),
    };
    let Some(m) = Mount::on_cluster(&broker) else {
        return;
    };
    m.create_topic("interop", 1);
    let bootstrap = broker.bootstrap();

    // confluent-kafka produces; the mount reads keys, headers and timestamps.
    let offsets = kafka_client(&python, &["produce", &bootstrap, "interop"]);
    assert_eq!(offsets.trim(), "[0, 1, 2]");
    assert!(wait_until(Duration::from_secs(5), || {
        common::stat_i64(&m.path("interop/0"), "log_end_offset") == 3
    }));
    let r0 = json(&m.path("interop/0/0.json"));
    assert_eq!(r0["key"], "user-1");
    assert_eq!(r0["value"], "from kafka");
    assert_eq!(r0["headers"], serde_json::json!({"trace": "abc", "n": "1"}));
    assert_eq!(r0["timestamp"], 1_700_000_000_000i64);
    assert_eq!(r0["timestamp_type"], "CreateTime");
    let r1 = json(&m.path("interop/0/1.json"));
    assert_eq!(r1["key"], Value::Null);
    assert_eq!(r1["timestamp"], 1_700_000_001_000i64);
    assert_eq!(read(&m.path("interop/0/2")), b"\xff\x00binary");
    let r2 = json(&m.path("interop/0/2.json"));
    assert_eq!(r2["key"], "user-2");
    assert_eq!(r2["headers"], serde_json::json!({"empty": ""}));
    assert_eq!(
        read_string(&m.path("interop/0/time/2023-11-14T22:13:20.500Z")).trim(),
        "1"
    );

    // The mount appends; confluent-kafka reads the same keys, headers and timestamps.
    write_once(
        &m.path("interop/0/append.jsonl"),
        br#"{"key":"k-mount","value":"from the mount","headers":{"h1":"v1","h2":"v2"},"timestamp":1800000000000}
{"value":"plain"}
"#,
    )
    .unwrap();
    let lines: Vec<Value> = kafka_client(&python, &["consume", &bootstrap, "interop", "5"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["value"], "from kafka");
    assert_eq!(lines[3]["offset"], 3);
    assert_eq!(lines[3]["key"], "k-mount");
    assert_eq!(lines[3]["value"], "from the mount");
    assert_eq!(
        lines[3]["headers"],
        serde_json::json!({"h1": "v1", "h2": "v2"})
    );
    assert_eq!(lines[3]["timestamp"], 1_800_000_000_000i64);
    assert_eq!(lines[3]["timestamp_type"], "CreateTime");
    assert_eq!(lines[4]["key"], Value::Null);
    assert_eq!(lines[4]["value"], "plain");
    let now = common::now_ms();
    let ts = lines[4]["timestamp"].as_i64().unwrap();
    assert!(
        ts > now - 60_000 && ts <= now,
        "the mount's record has timestamp {ts}, not the append time"
    );
}

#[test]
fn config_is_the_clusters_and_segment_commands_are_refused() {
    let Some((_broker, a, b)) = two_mounts() else {
        return;
    };
    a.create_topic("c", 1);
    sh_ok(&a.mnt, "echo retention.ms=5000 > c/config");
    assert!(
        wait_until(Duration::from_secs(10), || {
            read_string(&b.path("c/config")).contains("retention.ms=5000\n")
        }),
        "B never saw A's config change:\n{}",
        read_string(&b.path("c/config"))
    );
    // Checked before anything is sent, as on the embedded engine.
    let e = errno_of(
        "bad config",
        write_once(&a.path("c/config"), b"retention.ms=soon\n"),
    );
    assert_eq!(e, libc::EINVAL);
    sh_ok(&a.mnt, "echo first >> c/0/append");
    // Segments, roll, retention and compaction are the brokers'.
    for command in ["roll", "retention", "compact"] {
        let e = errno_of(
            command,
            write_once(&a.path("c/0/control"), format!("{command}\n").as_bytes()),
        );
        assert_eq!(e, libc::EOPNOTSUPP, "{command}");
    }
    assert_eq!(
        std::fs::read_dir(a.path("c/0/segments")).unwrap().count(),
        0
    );
    // flush waits for acknowledgements: everything appended is on the cluster already.
    sh_ok(&a.mnt, "echo flush > c/0/control");
    let stats = common::stats(&a.path("c/0"));
    assert_eq!(stats["recovery_point"], 1);
    assert_eq!(stats["log_end_offset"], 1);
    // Tansu 0.6 has no CreatePartitions: the broker's refusal is EOPNOTSUPP.
    match write_once(&a.path("c/partitions"), b"2\n") {
        Ok(()) => assert_eq!(read_string(&b.path("c/partitions")).trim(), "2"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}"),
    }
}

#[test]
fn keys_are_read_from_the_cluster() {
    let Some((_broker, a, b)) = two_mounts() else {
        return;
    };
    a.create_topic("users", 1);
    write_once(&a.path("users/config"), b"cleanup.policy=compact\n").unwrap();
    sh_ok(&a.mnt, "echo alice > users/0/keys/u1");
    sh_ok(&a.mnt, "printf bob > users/0/keys/u2");
    sh_ok(&a.mnt, "echo alicia > users/0/keys/u1");
    assert_eq!(sh_ok(&a.mnt, "ls users/0/keys"), "u1\nu2\n");
    assert!(wait_until(Duration::from_secs(10), || {
        b.path("users/0/keys/u1").exists() && read_string(&b.path("users/0/keys/u1")) == "alicia\n"
    }));
    std::fs::remove_file(b.path("users/0/keys/u2")).unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        sh_ok(&a.mnt, "ls users/0/keys") == "u1\n"
    }));
}

#[test]
fn group_offsets_are_committed_and_fetched_on_the_cluster() {
    use lmqfs::storage::cluster::{ClusterOptions, ClusterStorage};
    use lmqfs::storage::{NewRecord, Storage};

    let Some(broker) = Broker::start() else {
        return;
    };
    let storage = ClusterStorage::connect(ClusterOptions::new(&broker.bootstrap()))
        .expect("connect to the broker");
    storage.create_topic("g", None, &[]).unwrap();
    let p = storage.partition("g", 0).unwrap();
    p.append(&[NewRecord::value("a"), NewRecord::value("b")])
        .unwrap();
    assert_eq!(p.committed_offset("readers").unwrap(), None);
    p.commit_offset("readers", 1).unwrap();
    assert_eq!(p.committed_offset("readers").unwrap(), Some(1));
    p.commit_offset("readers", 2).unwrap();
    p.commit_offset("others", 0).unwrap();
    assert_eq!(p.committed_offset("readers").unwrap(), Some(2));
    let groups = p.groups().unwrap();
    assert!(
        groups.contains(&"readers".to_string()) && groups.contains(&"others".to_string()),
        "groups: {groups:?}"
    );
    // A real Kafka consumer of the group sees the same committed offset.
    if let Ok(python) = kafka_python() {
        let committed = kafka_client(&python, &["committed", &broker.bootstrap(), "readers", "g"]);
        assert_eq!(committed.trim(), "2");
    } else if common::broker::broker_required() {
        panic!("LMQFS_KAFKA_PYTHON is needed in CI");
    }
}

#[test]
fn a_broker_that_goes_away_is_eagain_or_eio_and_the_mount_recovers() {
    let Some(mut broker) = Broker::start() else {
        return;
    };
    let Some(m) = Mount::on_cluster_with_options(&broker, &["request.timeout.ms=2000"]) else {
        return;
    };
    m.create_topic("r", 1);
    sh_ok(&m.mnt, "printf 'x\\ny\\n' >> r/0/append");
    assert_eq!(read_string(&m.path("r/0/log")), "x\ny\n");
    broker.stop();
    let e = errno_of(
        "append with the broker down",
        write_once(&m.path("r/0/append"), b"lost?\n"),
    );
    assert!(
        e == libc::EAGAIN || e == libc::EIO,
        "append with the broker down: errno {e}"
    );
    // Tansu keeps topics in memory: the restarted broker is empty, and the mount says so
    // instead of serving what it had cached.
    broker.restart();
    assert!(
        wait_until(Duration::from_secs(15), || !m.path("r").exists()),
        "the topic of the old broker is still listed"
    );
    m.create_topic("r2", 1);
    sh_ok(&m.mnt, "echo after >> r2/0/append");
    assert_eq!(read_string(&m.path("r2/0/log")), "after\n");
}

#[test]
fn groups_and_consume_files_commit_on_the_cluster() {
    let Some((broker, a, b)) = two_mounts() else {
        return;
    };
    a.create_topic("jobs", 1);
    let p = a.path("jobs/0");
    write_once(&p.join("append"), b"a\nb\nc\n").unwrap();
    // consume/ reads what is new for the group and commits it on close (OffsetCommit).
    assert_eq!(sh_ok(&p, "cat consume/nightly"), "a\nb\nc\n");
    assert_eq!(read_string(&p.join("groups/nightly")).trim(), "3");
    assert_eq!(sh_ok(&p, "cat consume/nightly"), "");
    write_once(&p.join("append"), b"d\n").unwrap();
    // Another machine's mount continues where this one's group stopped (OffsetFetch).
    assert!(wait_until(Duration::from_secs(10), || {
        b.path("jobs/0").exists() && common::stat_i64(&b.path("jobs/0"), "log_end_offset") == 4
    }));
    assert_eq!(sh_ok(&b.path("jobs/0"), "cat consume/nightly"), "d\n");
    assert_eq!(read_string(&p.join("groups/nightly")).trim(), "4");
    // A commit through groups/ rewinds; the group is listed; a real consumer agrees.
    sh_ok(&p, "echo 1 > groups/nightly");
    assert_eq!(sh_ok(&p, "ls groups"), "nightly\n");
    if let Ok(python) = kafka_python() {
        let offset = kafka_client(
            &python,
            &["committed", &broker.bootstrap(), "nightly", "jobs"],
        );
        assert_eq!(offset.trim(), "1");
    } else if common::broker::broker_required() {
        panic!("LMQFS_KAFKA_PYTHON is needed in CI");
    }
    assert_eq!(sh_ok(&b.path("jobs/0"), "cat consume/nightly"), "b\nc\nd\n");
}
