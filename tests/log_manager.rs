//! The log manager through its public API, on real directories.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use lmqfs::engine::{EngineError, LogConfig, LogManager, NewRecord};

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn open(dir: &Path) -> LogManager {
    LogManager::open(dir, LogConfig::default(), 1).expect("open data dir")
}

/// Every name in `dir`, recursively, relative to it, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn values(manager: &LogManager, topic: &str, partition: u32) -> Vec<String> {
    manager
        .log(topic, partition)
        .unwrap()
        .read(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| String::from_utf8(r.value.unwrap()).unwrap())
        .collect()
}

fn append(manager: &LogManager, topic: &str, partition: u32, value: &str) {
    manager
        .log(topic, partition)
        .unwrap()
        .append(&[NewRecord::value(value)])
        .unwrap();
}

#[test]
fn creates_lists_and_deletes_topics() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    assert!(manager.topics().is_empty());

    manager.create_topic("orders", None, &[]).unwrap();
    manager.create_topic("audit.log_v2", Some(3), &[]).unwrap();
    manager.create_topic("a", Some(2), &[]).unwrap();
    assert_eq!(manager.topics(), ["a", "audit.log_v2", "orders"]);
    assert_eq!(manager.partition_count("orders").unwrap(), 1);
    assert_eq!(manager.partition_count("audit.log_v2").unwrap(), 3);
    assert!(data.path().join("audit.log_v2-2").is_dir());

    manager.delete_topic("audit.log_v2").unwrap();
    assert_eq!(manager.topics(), ["a", "orders"]);
    assert!(matches!(
        manager.partition_count("audit.log_v2"),
        Err(EngineError::UnknownTopic(_))
    ));
    for p in 0..3 {
        assert!(!data.path().join(format!("audit.log_v2-{p}")).exists());
    }
    assert!(!tree(data.path()).iter().any(|p| p.contains("audit.log_v2")));
    manager.shutdown().unwrap();
}

#[test]
fn creating_an_existing_topic_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    manager.create_topic("t", Some(2), &[]).unwrap();
    append(&manager, "t", 0, "kept");
    assert!(matches!(
        manager.create_topic("t", Some(5), &[]),
        Err(EngineError::TopicExists(name)) if name == "t"
    ));
    assert_eq!(manager.partition_count("t").unwrap(), 2);
    assert_eq!(values(&manager, "t", 0), ["kept"]);
}

#[test]
fn deleted_topic_name_can_be_reused_and_starts_empty() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    manager
        .create_topic("t", Some(2), &pairs(&[("retention.ms", "1000")]))
        .unwrap();
    append(&manager, "t", 1, "old");
    let old_log = manager.log("t", 1).unwrap();
    manager.delete_topic("t").unwrap();
    assert!(matches!(
        manager.delete_topic("t"),
        Err(EngineError::UnknownTopic(_))
    ));
    // A reader still holding the old log cannot write into the deleted topic.
    assert!(old_log.append(&[NewRecord::value("late")]).is_err());

    manager.create_topic("t", Some(1), &[]).unwrap();
    assert_eq!(manager.partition_count("t").unwrap(), 1);
    assert!(values(&manager, "t", 0).is_empty());
    assert!(manager.topic_overrides("t").unwrap().is_empty());
    assert!(!data.path().join("t-1").exists());
}

#[test]
fn invalid_topic_names_are_refused_and_create_nothing() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    let before = tree(data.path());
    let too_long = "x".repeat(250);
    for name in [
        "",
        too_long.as_str(),
        ".",
        "..",
        "a/b",
        "a b",
        "ü",
        "a\0b",
        "/etc",
        "../x",
    ] {
        match manager.create_topic(name, None, &[]) {
            Err(EngineError::InvalidTopicName { name: n, reason }) => {
                assert_eq!(n, name);
                assert!(!reason.is_empty());
            }
            other => panic!("{name:?}: expected InvalidTopicName, got {other:?}"),
        }
        assert!(LogManager::validate_topic_name(name).is_err(), "{name:?}");
        assert_eq!(tree(data.path()), before, "{name:?} left something on disk");
    }
    assert!(manager.topics().is_empty());
}

#[test]
fn valid_topic_names_pass_validation() {
    let longest = "y".repeat(249);
    for name in ["a", "A-Z_0.9", "...", ".hidden", "-", "_", longest.as_str()] {
        LogManager::validate_topic_name(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
    }
}

#[test]
fn longest_valid_topic_name_works_on_disk() {
    let data = tempfile::tempdir().unwrap();
    let name = "z".repeat(249);
    let manager = open(data.path());
    manager.create_topic(&name, Some(2), &[]).unwrap();
    manager
        .alter_topic_config(&name, &pairs(&[("retention.ms", "5")]))
        .unwrap();
    append(&manager, &name, 1, "long");
    manager.shutdown().unwrap();

    let manager = open(data.path());
    assert_eq!(manager.topics(), vec![name.clone()]);
    assert_eq!(values(&manager, &name, 1), ["long"]);
    manager.delete_topic(&name).unwrap();
    assert!(manager.topics().is_empty());
}

#[test]
fn zero_or_excessive_partitions_are_refused_and_create_nothing() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    let before = tree(data.path());
    for count in [0, lmqfs::engine::manager::MAX_PARTITIONS + 1, u32::MAX] {
        assert!(matches!(
            manager.create_topic("t", Some(count), &[]),
            Err(EngineError::InvalidArgument(_))
        ));
    }
    assert_eq!(tree(data.path()), before);
    assert!(LogManager::open(&data.path().join("other"), LogConfig::default(), 0).is_err());
}

#[test]
fn invalid_overrides_refuse_create_and_create_nothing() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    let before = tree(data.path());
    let bad = [
        pairs(&[("retention.ms", "1000"), ("segment.bytes", "10")]),
        pairs(&[("retention.ms", "1000"), ("no.such.key", "1")]),
        pairs(&[("partitions", "3")]),
    ];
    for overrides in bad {
        assert!(matches!(
            manager.create_topic("t", None, &overrides),
            Err(EngineError::Config(_))
        ));
        assert_eq!(tree(data.path()), before);
    }
    assert!(manager.topics().is_empty());
}

#[test]
fn topics_partition_counts_and_overrides_survive_reopen() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    manager
        .create_topic(
            "events",
            Some(4),
            &pairs(&[
                ("cleanup.policy", "delete, compact"),
                ("retention.ms", "60000"),
            ]),
        )
        .unwrap();
    manager.create_topic("plain", None, &[]).unwrap();
    manager.shutdown().unwrap();
    drop(manager);

    let manager = open(data.path());
    assert_eq!(manager.topics(), ["events", "plain"]);
    assert_eq!(manager.partition_count("events").unwrap(), 4);
    assert_eq!(manager.partition_count("plain").unwrap(), 1);
    assert_eq!(
        manager.topic_overrides("events").unwrap(),
        pairs(&[
            ("cleanup.policy", "compact,delete"),
            ("retention.ms", "60000")
        ])
    );
    let config = manager.topic_config("events").unwrap();
    assert_eq!(config.retention_ms, 60000);
    assert!(config.cleanup_policy.compact && config.cleanup_policy.delete);
    assert_eq!(manager.log("events", 3).unwrap().config(), config);
    assert!(manager.topic_overrides("plain").unwrap().is_empty());
    assert_eq!(manager.topic_config("plain").unwrap(), LogConfig::default());
}

#[test]
fn records_appended_before_shutdown_are_readable_after_reopen() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    manager.create_topic("t", Some(2), &[]).unwrap();
    for i in 0..10 {
        append(&manager, "t", i % 2, &format!("record {i}"));
    }
    manager.shutdown().unwrap();

    let manager = open(data.path());
    assert_eq!(
        values(&manager, "t", 0),
        ["record 0", "record 2", "record 4", "record 6", "record 8"]
    );
    assert_eq!(
        values(&manager, "t", 1),
        ["record 1", "record 3", "record 5", "record 7", "record 9"]
    );
    assert_eq!(manager.log("t", 1).unwrap().log_end_offset(), 5);
}

#[test]
fn records_survive_drop_without_explicit_shutdown() {
    let data = tempfile::tempdir().unwrap();
    {
        let manager = open(data.path());
        manager.create_topic("t", None, &[]).unwrap();
        append(&manager, "t", 0, "dropped");
    }
    let manager = open(data.path());
    assert_eq!(values(&manager, "t", 0), ["dropped"]);
}

#[test]
fn partitions_grow_online_and_new_partitions_accept_appends() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    manager
        .create_topic("t", Some(1), &pairs(&[("retention.ms", "123456")]))
        .unwrap();
    append(&manager, "t", 0, "first");
    let before_grow = manager.log("t", 0).unwrap();

    manager.set_partition_count("t", 3).unwrap();
    assert_eq!(manager.partition_count("t").unwrap(), 3);
    append(&manager, "t", 2, "in new partition");
    assert_eq!(values(&manager, "t", 2), ["in new partition"]);
    assert_eq!(manager.log("t", 2).unwrap().config().retention_ms, 123456);
    // Existing partitions are untouched and the same log keeps serving.
    assert!(std::sync::Arc::ptr_eq(
        &before_grow,
        &manager.log("t", 0).unwrap()
    ));
    assert_eq!(values(&manager, "t", 0), ["first"]);
    manager.shutdown().unwrap();

    let manager = open(data.path());
    assert_eq!(manager.partition_count("t").unwrap(), 3);
    assert_eq!(values(&manager, "t", 2), ["in new partition"]);
}

#[test]
fn shrinking_is_refused_and_same_count_is_a_no_op() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    manager.create_topic("t", Some(3), &[]).unwrap();
    match manager.set_partition_count("t", 2) {
        Err(EngineError::PartitionCountDecrease {
            topic,
            current,
            requested,
        }) => assert_eq!((topic.as_str(), current, requested), ("t", 3, 2)),
        other => panic!("expected PartitionCountDecrease, got {other:?}"),
    }
    assert!(manager.set_partition_count("t", 0).is_err());
    manager.set_partition_count("t", 3).unwrap();
    assert_eq!(manager.partition_count("t").unwrap(), 3);
    assert!(matches!(
        manager.set_partition_count("missing", 5),
        Err(EngineError::UnknownTopic(_))
    ));
    manager.shutdown().unwrap();
    let manager = open(data.path());
    assert_eq!(manager.partition_count("t").unwrap(), 3);
}

#[test]
fn unknown_topics_and_partitions_are_reported() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    manager.create_topic("t", Some(2), &[]).unwrap();
    assert!(manager.log("t", 1).is_ok());
    assert!(matches!(
        manager.log("t", 2),
        Err(EngineError::UnknownPartition { topic, partition: 2 }) if topic == "t"
    ));
    assert!(matches!(manager.log("u", 0), Err(EngineError::UnknownTopic(t)) if t == "u"));
    assert!(matches!(
        manager.topic_config("u"),
        Err(EngineError::UnknownTopic(_))
    ));
    assert!(matches!(
        manager.topic_overrides("u"),
        Err(EngineError::UnknownTopic(_))
    ));
    assert!(matches!(
        manager.alter_topic_config("u", &pairs(&[("retention.ms", "1")])),
        Err(EngineError::UnknownTopic(_))
    ));
}

#[test]
fn config_changes_are_validated_all_or_nothing_and_persisted() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    manager
        .create_topic("t", Some(2), &pairs(&[("retention.ms", "1000")]))
        .unwrap();

    let refused = [
        pairs(&[("segment.ms", "5000"), ("retention.ms", "-7")]),
        pairs(&[("segment.ms", "5000"), ("bogus", "1")]),
    ];
    for bad in refused {
        assert!(matches!(
            manager.alter_topic_config("t", &bad),
            Err(EngineError::Config(_))
        ));
        assert_eq!(
            manager.topic_overrides("t").unwrap(),
            pairs(&[("retention.ms", "1000")])
        );
        assert_eq!(
            manager.topic_config("t").unwrap().segment_ms,
            LogConfig::default().segment_ms
        );
        assert_eq!(manager.log("t", 1).unwrap().config().retention_ms, 1000);
    }

    manager
        .alter_topic_config(
            "t",
            &pairs(&[
                ("segment.ms", "5000"),
                ("compression.type", "lz4"),
                ("retention.ms", "2000"),
            ]),
        )
        .unwrap();
    let expected = pairs(&[
        ("compression.type", "lz4"),
        ("retention.ms", "2000"),
        ("segment.ms", "5000"),
    ]);
    assert_eq!(manager.topic_overrides("t").unwrap(), expected);
    for p in 0..2 {
        let config = manager.log("t", p).unwrap().config();
        assert_eq!((config.segment_ms, config.retention_ms), (5000, 2000));
    }
    manager.shutdown().unwrap();

    let manager = open(data.path());
    assert_eq!(manager.topic_overrides("t").unwrap(), expected);
    assert_eq!(manager.topic_config("t").unwrap().segment_ms, 5000);
    assert_eq!(manager.log("t", 0).unwrap().config().segment_ms, 5000);
}

#[test]
fn mount_defaults_apply_to_keys_a_topic_does_not_override() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    manager
        .create_topic("t", None, &pairs(&[("retention.ms", "1000")]))
        .unwrap();
    manager.shutdown().unwrap();

    let mut defaults = LogConfig::default();
    defaults.set("retention.ms", "99999").unwrap();
    defaults.set("compression.type", "gzip").unwrap();
    let manager = LogManager::open(data.path(), defaults, 4).unwrap();
    let config = manager.topic_config("t").unwrap();
    assert_eq!(
        config.retention_ms, 1000,
        "the override wins over the new default"
    );
    assert_eq!(
        config.compression_type.name(),
        "gzip",
        "the new default applies"
    );
    assert_eq!(manager.log("t", 0).unwrap().config(), config);
    assert_eq!(manager.partition_count("t").unwrap(), 1);

    manager.create_topic("new", None, &[]).unwrap();
    assert_eq!(manager.partition_count("new").unwrap(), 4);
    assert_eq!(manager.topic_config("new").unwrap().retention_ms, 99999);
}

#[test]
fn second_open_of_a_locked_data_dir_fails_until_shutdown() {
    let data = tempfile::tempdir().unwrap();
    let first = open(data.path());
    match LogManager::open(data.path(), LogConfig::default(), 1) {
        Err(e @ EngineError::DataDirLocked { .. }) => {
            assert!(e.to_string().contains("another lmqfs process"), "{e}");
        }
        Err(other) => panic!("expected DataDirLocked, got {other:?}"),
        Ok(_) => panic!("second open succeeded"),
    }
    first.shutdown().unwrap();
    let second = open(data.path());
    second.shutdown().unwrap();
    drop(first);
    drop(second);
    open(data.path());
}

#[test]
fn data_dir_and_missing_parents_are_created_private() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("a/b/data");
    let manager = open(&data);
    let mode = fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(manager.data_dir(), fs::canonicalize(&data).unwrap());
}

#[test]
fn requests_after_shutdown_fail_and_shutdown_is_idempotent() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    manager.shutdown().unwrap();
    manager.shutdown().unwrap();
    assert!(matches!(
        manager.create_topic("t", None, &[]),
        Err(EngineError::Closed)
    ));
    assert!(matches!(manager.log("t", 0), Err(EngineError::Closed)));
    assert!(matches!(manager.flush_all(), Err(EngineError::Closed)));
    assert!(tree(data.path()).iter().all(|p| !p.starts_with("t-")));
}

#[test]
fn interrupted_create_is_completed_at_open() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    manager.create_topic("t", Some(3), &[]).unwrap();
    manager.shutdown().unwrap();
    // As if the process died after writing the metadata but before the last partition's dir.
    fs::remove_dir_all(data.path().join("t-2")).unwrap();

    let manager = open(data.path());
    assert_eq!(manager.partition_count("t").unwrap(), 3);
    assert!(data.path().join("t-2").is_dir());
    append(&manager, "t", 2, "works");
    assert_eq!(values(&manager, "t", 2), ["works"]);
}

#[test]
fn interrupted_delete_is_finished_at_open() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    manager.create_topic("gone", Some(2), &[]).unwrap();
    manager.create_topic("kept", Some(1), &[]).unwrap();
    append(&manager, "gone", 0, "x");
    append(&manager, "kept", 0, "y");
    manager.shutdown().unwrap();
    // As if the process died right after the delete's commit point: the metadata is now a
    // tombstone in the scratch directory and the partition directories are still in place.
    fs::rename(
        data.path().join(".lmqfs-topics/gone"),
        data.path().join(".lmqfs-work/1-0.deleted-topic"),
    )
    .unwrap();

    let manager = open(data.path());
    assert_eq!(manager.topics(), ["kept"]);
    assert!(!data.path().join("gone-0").exists());
    assert!(!data.path().join("gone-1").exists());
    assert_eq!(
        fs::read_dir(data.path().join(".lmqfs-work"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(values(&manager, "kept", 0), ["y"]);
}

#[test]
fn scratch_leftovers_are_removed_at_open() {
    let data = tempfile::tempdir().unwrap();
    open(data.path()).shutdown().unwrap();
    let work = data.path().join(".lmqfs-work");
    fs::write(work.join("5-1.tmp"), "partitions=1\n").unwrap();
    fs::create_dir_all(work.join("5-2.deleted-partition/inner")).unwrap();
    fs::write(
        work.join("5-2.deleted-partition/inner/00000000000000000000.log"),
        "x",
    )
    .unwrap();

    let manager = open(data.path());
    assert_eq!(fs::read_dir(&work).unwrap().count(), 0);
    assert!(manager.topics().is_empty());
}

#[test]
fn unclaimed_partition_dir_is_left_alone() {
    let data = tempfile::tempdir().unwrap();
    let stray = data.path().join("orphan-0");
    fs::create_dir(&stray).unwrap();
    fs::write(stray.join("note"), "someone's data").unwrap();
    let manager = open(data.path());
    assert!(manager.topics().is_empty());
    manager.shutdown().unwrap();
    assert_eq!(
        fs::read_to_string(stray.join("note")).unwrap(),
        "someone's data"
    );
}

#[test]
fn flush_all_advances_the_recovery_point() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    manager.create_topic("t", Some(2), &[]).unwrap();
    append(&manager, "t", 0, "a");
    append(&manager, "t", 1, "b");
    manager.flush_all().unwrap();
    for p in 0..2 {
        assert_eq!(manager.log("t", p).unwrap().recovery_point(), 1);
    }
}

#[test]
fn background_thread_flushes_when_flush_ms_is_due() {
    let data = tempfile::tempdir().unwrap();
    let manager = open(data.path());
    manager
        .create_topic("t", None, &pairs(&[("flush.ms", "50")]))
        .unwrap();
    append(&manager, "t", 0, "a");
    let log = manager.log("t", 0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.recovery_point() < 1 {
        assert!(
            Instant::now() < deadline,
            "flush.ms=50 not honoured within 5 s"
        );
        sleep(Duration::from_millis(20));
    }
}

#[test]
fn manager_is_usable_from_many_threads() {
    let data = tempfile::tempdir().unwrap();
    let manager = std::sync::Arc::new(open(data.path()));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let manager = std::sync::Arc::clone(&manager);
            std::thread::spawn(move || {
                let name = format!("topic-{}", i % 4);
                // Half the threads race to create the same topic; exactly one wins.
                let _ = manager.create_topic(&name, Some(2), &[]);
                for j in 0..20 {
                    append(&manager, &name, j % 2, "v");
                }
                manager.set_partition_count(&name, 3).unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(manager.topics().len(), 4);
    for i in 0..4 {
        let name = format!("topic-{i}");
        assert_eq!(manager.partition_count(&name).unwrap(), 3);
        assert_eq!(
            values(&manager, &name, 0).len() + values(&manager, &name, 1).len(),
            40
        );
    }
}
