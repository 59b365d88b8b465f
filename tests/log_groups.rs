//! Consumer group offsets in the engine: the internal compacted `__consumer_offsets` topic,
//! through the log manager's public API and the storage seam, on real directories.

use std::path::Path;
use std::sync::Arc;

use lmqfs::engine::offsets::{decode_value, GroupPartition, INTERNAL_DIR};
use lmqfs::engine::{
    now_ms, CleanerConfig, EngineError, LogConfig, LogManager, NewRecord, CONSUMER_OFFSETS_TOPIC,
};
use lmqfs::storage::{Partition, Storage};

fn open(dir: &Path) -> Arc<LogManager> {
    Arc::new(LogManager::open(dir, LogConfig::default(), 1).expect("open data dir"))
}

fn produce(m: &LogManager, topic: &str, partition: u32, count: usize) {
    let records: Vec<NewRecord> = (0..count)
        .map(|i| NewRecord {
            key: None,
            value: Some(format!("r{i}").into_bytes()),
            headers: vec![],
            timestamp: None,
        })
        .collect();
    m.log(topic, partition).unwrap().append(&records).unwrap();
}

fn partition(m: &LogManager, topic: &str, p: u32) -> Arc<dyn Partition> {
    Storage::partition(m, topic, p).unwrap()
}

#[test]
fn commits_survive_reopen_and_groups_are_listed_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = open(dir.path());
        m.create_topic("orders", Some(2), &[]).unwrap();
        produce(&m, "orders", 0, 10);
        produce(&m, "orders", 1, 3);
        let p0 = partition(&m, "orders", 0);
        let p1 = partition(&m, "orders", 1);
        assert_eq!(p0.committed_offset("billing").unwrap(), None);
        assert_eq!(p0.groups().unwrap(), Vec::<String>::new());
        p0.commit_offset("billing", 4).unwrap();
        p0.commit_offset("billing", 7).unwrap();
        p0.commit_offset("audit", 10).unwrap();
        p1.commit_offset("billing", 2).unwrap();
        assert_eq!(p0.committed_offset("billing").unwrap(), Some(7));
        assert_eq!(p0.committed_offset("audit").unwrap(), Some(10));
        assert_eq!(p1.committed_offset("billing").unwrap(), Some(2));
        assert_eq!(p1.committed_offset("audit").unwrap(), None);
        assert_eq!(p0.groups().unwrap(), ["audit", "billing"]);
        assert_eq!(p1.groups().unwrap(), ["billing"]);
        // Internal, hidden, apart from the topics.
        assert_eq!(m.topics(), ["orders"]);
        let internal = dir
            .path()
            .join(INTERNAL_DIR)
            .join(format!("{CONSUMER_OFFSETS_TOPIC}-0"));
        assert!(internal.join("00000000000000000000.log").is_file());
        m.shutdown().unwrap();
    }
    let m = open(dir.path());
    let p0 = partition(&m, "orders", 0);
    assert_eq!(p0.committed_offset("billing").unwrap(), Some(7));
    assert_eq!(p0.committed_offset("audit").unwrap(), Some(10));
    assert_eq!(
        partition(&m, "orders", 1)
            .committed_offset("billing")
            .unwrap(),
        Some(2)
    );
    assert_eq!(p0.groups().unwrap(), ["audit", "billing"]);
    assert_eq!(m.topics(), ["orders"]);
}

#[test]
fn bad_commits_are_invalid_argument_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path());
    m.create_topic("t", None, &[]).unwrap();
    produce(&m, "t", 0, 5);
    let p = partition(&m, "t", 0);
    p.commit_offset("g", 3).unwrap();
    let long = "g".repeat(250);
    for (group, offset) in [
        ("g", -1),
        ("g", 6),
        ("g", i64::MAX),
        ("a b", 1),
        ("a/b", 1),
        ("..", 1),
        ("", 1),
        (long.as_str(), 1),
    ] {
        assert!(
            matches!(
                p.commit_offset(group, offset),
                Err(EngineError::InvalidArgument(_))
            ),
            "{group:?} {offset}"
        );
    }
    assert_eq!(p.committed_offset("g").unwrap(), Some(3));
    assert_eq!(p.groups().unwrap(), ["g"]);
    // The log end itself is a valid commit (everything consumed), so is 0.
    p.commit_offset("g", 5).unwrap();
    p.commit_offset("h", 0).unwrap();
    assert_eq!(p.committed_offset("g").unwrap(), Some(5));
}

#[test]
fn the_internal_name_is_reserved_and_never_listed() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path());
    assert!(matches!(
        m.create_topic(CONSUMER_OFFSETS_TOPIC, None, &[]),
        Err(EngineError::InvalidTopicName { .. })
    ));
    m.create_topic("t", None, &[]).unwrap();
    produce(&m, "t", 0, 1);
    partition(&m, "t", 0).commit_offset("g", 1).unwrap();
    assert_eq!(m.topics(), ["t"]);
    assert!(matches!(
        m.log(CONSUMER_OFFSETS_TOPIC, 0),
        Err(EngineError::UnknownTopic(_))
    ));
}

#[test]
fn a_user_topic_of_the_reserved_name_still_opens_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = open(dir.path());
        m.create_topic("legacy", None, &[]).unwrap();
        produce(&m, "legacy", 0, 3);
        m.shutdown().unwrap();
    }
    // As a data directory from before the name was reserved would hold it.
    let topics = dir.path().join(".lmqfs-topics");
    let text = std::fs::read_to_string(topics.join("legacy")).unwrap();
    std::fs::write(
        topics.join(CONSUMER_OFFSETS_TOPIC),
        text.replace("topic=legacy", &format!("topic={CONSUMER_OFFSETS_TOPIC}")),
    )
    .unwrap();
    std::fs::remove_file(topics.join("legacy")).unwrap();
    std::fs::rename(
        dir.path().join("legacy-0"),
        dir.path().join(format!("{CONSUMER_OFFSETS_TOPIC}-0")),
    )
    .unwrap();

    let m = open(dir.path());
    assert_eq!(m.topics(), [CONSUMER_OFFSETS_TOPIC]);
    let user = partition(&m, CONSUMER_OFFSETS_TOPIC, 0);
    assert_eq!(user.log_end_offset(), 3);
    user.commit_offset("g", 2).unwrap();
    assert_eq!(user.committed_offset("g").unwrap(), Some(2));
    assert_eq!(
        user.log_end_offset(),
        3,
        "commits do not land in the user topic"
    );
    produce(&m, CONSUMER_OFFSETS_TOPIC, 0, 1);
    assert_eq!(user.log_end_offset(), 4);
    // Deleting it works; taking the name again does not.
    m.delete_topic(CONSUMER_OFFSETS_TOPIC).unwrap();
    assert!(matches!(
        m.create_topic(CONSUMER_OFFSETS_TOPIC, None, &[]),
        Err(EngineError::InvalidTopicName { .. })
    ));
}

#[test]
fn compaction_keeps_only_the_latest_commit_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path());
    m.create_topic("t", Some(2), &[]).unwrap();
    produce(&m, "t", 0, 100);
    produce(&m, "t", 1, 100);
    let p0 = partition(&m, "t", 0);
    let p1 = partition(&m, "t", 1);
    for offset in 1..=50 {
        p0.commit_offset("a", offset).unwrap();
        p0.commit_offset("b", offset * 2).unwrap();
        p1.commit_offset("a", offset / 2).unwrap();
    }
    let log = m
        .consumer_offsets()
        .log()
        .expect("created by the first commit");
    assert_eq!(log.log_end_offset(), 150);
    log.roll().unwrap();
    let outcome = log
        .compact(now_ms(), true, &CleanerConfig::default())
        .unwrap();
    assert_eq!(outcome.records_removed, 147, "{outcome:?}");
    let kept = log.read(log.log_start_offset(), 1 << 20).unwrap();
    let mut latest: Vec<(GroupPartition, i64)> = kept
        .iter()
        .map(|r| {
            (
                GroupPartition::decode(r.key.as_deref().unwrap()).unwrap(),
                decode_value(r.value.as_deref().unwrap()).unwrap(),
            )
        })
        .collect();
    latest.sort();
    let key = |group: &str, partition| GroupPartition {
        group: group.into(),
        topic: "t".into(),
        partition,
    };
    assert_eq!(
        latest,
        [(key("a", 0), 50), (key("a", 1), 25), (key("b", 0), 100)]
    );
    assert_eq!(p0.committed_offset("a").unwrap(), Some(50));
    assert_eq!(p0.committed_offset("b").unwrap(), Some(100));
    assert_eq!(p1.committed_offset("a").unwrap(), Some(25));
    // The next commit goes on at the log end, offsets preserved.
    p0.commit_offset("a", 60).unwrap();
    assert_eq!(log.log_end_offset(), 151);
    assert_eq!(p0.committed_offset("a").unwrap(), Some(60));
}

#[test]
fn deleting_a_topic_tombstones_its_commits() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = open(dir.path());
        m.create_topic("gone", Some(2), &[]).unwrap();
        m.create_topic("kept", None, &[]).unwrap();
        produce(&m, "gone", 0, 5);
        produce(&m, "gone", 1, 5);
        produce(&m, "kept", 0, 5);
        partition(&m, "gone", 0).commit_offset("g", 3).unwrap();
        partition(&m, "gone", 1).commit_offset("h", 4).unwrap();
        partition(&m, "kept", 0).commit_offset("g", 5).unwrap();
        let held = partition(&m, "gone", 0);
        m.delete_topic("gone").unwrap();
        // A partition handle of the deleted topic cannot commit behind the tombstones.
        assert!(held.commit_offset("g", 1).is_err());
        let log = m.consumer_offsets().log().unwrap();
        let tail = log.read(3, 1 << 20).unwrap();
        assert_eq!(tail.len(), 2, "one tombstone per dropped commit");
        assert!(tail.iter().all(|r| r.value.is_none()));

        m.create_topic("gone", Some(2), &[]).unwrap();
        produce(&m, "gone", 0, 5);
        assert_eq!(
            partition(&m, "gone", 0).committed_offset("g").unwrap(),
            None
        );
        assert_eq!(
            partition(&m, "gone", 1).groups().unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            partition(&m, "kept", 0).committed_offset("g").unwrap(),
            Some(5)
        );
        m.shutdown().unwrap();
    }
    let m = open(dir.path());
    assert_eq!(
        partition(&m, "gone", 0).committed_offset("g").unwrap(),
        None
    );
    assert_eq!(
        partition(&m, "kept", 0).committed_offset("g").unwrap(),
        Some(5)
    );
}

#[test]
fn commits_survive_an_unclean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let internal = dir
        .path()
        .join(INTERNAL_DIR)
        .join(format!("{CONSUMER_OFFSETS_TOPIC}-0"));
    {
        let m = open(dir.path());
        m.create_topic("t", None, &[]).unwrap();
        produce(&m, "t", 0, 10);
        let p = partition(&m, "t", 0);
        for offset in 0..=10 {
            p.commit_offset("g", offset).unwrap();
        }
        m.shutdown().unwrap();
    }
    // As after a crash: no clean-shutdown marker, no key snapshot.
    std::fs::remove_file(internal.join(".lmqfs-clean-shutdown")).unwrap();
    let _ = std::fs::remove_file(internal.join("lmqfs-keys-snapshot"));
    let m = open(dir.path());
    assert_eq!(
        partition(&m, "t", 0).committed_offset("g").unwrap(),
        Some(10)
    );
}
