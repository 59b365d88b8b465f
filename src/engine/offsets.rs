//! Consumer group offsets, stored as Kafka stores them: keyed records in an internal compacted
//! topic, `__consumer_offsets`.
//!
//! A commit (Kafka's OffsetCommit) appends one record whose key names (group, topic, partition)
//! and whose value holds the offset; the latest record per key is the committed offset. Reading
//! a commit (OffsetFetch) looks the key up in the log's key index ([`Log::latest_for_key`]): an
//! in-memory map from key to the offset of its latest record, then one record read, never a
//! scan. Compaction (`cleanup.policy=compact`) keeps only the latest record per key, so the
//! topic stays about one record per (group, topic, partition) however often groups commit.
//!
//! # Where it lives
//!
//! One partition, in `<data>/.lmqfs-internal/__consumer_offsets-0/` ([`INTERNAL_DIR`]): a
//! directory no topic name can reach (topic partitions are `<data>/<topic>-<n>/`), so a user
//! topic that was named `__consumer_offsets` before the name was reserved keeps its own data.
//! The log is an ordinary [`Log`] (Kafka segments, recovery, key snapshot), created at the
//! first commit and opened with the data directory after that. It is not a topic of the log
//! manager's table, so `topics()` (and `ls` of the mount root) never shows it; the manager's
//! flush and cleaner threads include it. Its config is fixed ([`ConsumerOffsets::config`]):
//! Kafka's `offsets.topic.*` choices, `cleanup.policy=compact` and 100 MiB segments.
//!
//! # Durability
//!
//! A commit returns after the append's `pwrite`, like any append: it survives a crash (kill -9)
//! of the process, and power loss once flushed (a `flush` of the whole data directory, or the
//! clean shutdown). Commits are not fsynced one by one, as Kafka does not fsync them either.
//!
//! # Record layout
//!
//! All integers big-endian. The key is Kafka's `OffsetCommitKey` version 1:
//!
//! ```text
//! offset  size  field
//! 0       2     version: i16 = 1
//! 2       2     group length: i16
//! 4       g     group (ASCII, topic naming rules)
//! 4+g     2     topic length: i16
//! 6+g     t     topic
//! 6+g+t   4     partition: i32
//! ```
//!
//! The value is Kafka's `OffsetCommitValue` version 3 (24 bytes):
//!
//! ```text
//! offset  size  field
//! 0       2     version: i16 = 3
//! 2       8     offset: i64 (the next offset the group will consume)
//! 10      4     leader epoch: i32 = -1 (none)
//! 14      2     metadata length: i16 = 0 (no metadata)
//! 16      8     commit timestamp: i64, ms since the epoch
//! ```
//!
//! Every version of Kafka's value puts the offset right after the version, so decoding reads
//! those ten bytes only. A null value is a tombstone: the commit is dropped. Deleting a topic
//! drops (tombstones) every commit of its partitions, so a topic created again under the same
//! name starts without groups; the tombstones are appended before the delete finishes, so a
//! delete that a crash interrupted drops them when the next open finishes it.
//!
//! # Threads
//!
//! `Send + Sync`. Commits and drops are serialized by one mutex (`state`), which makes a commit
//! to a partition whose log was closed (its topic is being deleted) fail instead of landing
//! after the drop. Reads take the mutex only to find the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::config::CleanupPolicy;
use super::{now_ms, EngineError, Log, LogConfig, NewRecord, Result};

/// The internal topic's name, reserved: no user topic can be created with it.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Under the data directory: internal topics' partition directories.
pub const INTERNAL_DIR: &str = ".lmqfs-internal";

/// Kafka's `OffsetCommitKey` version written here.
const KEY_VERSION: i16 = 1;
/// Kafka's `OffsetCommitValue` version written here.
const VALUE_VERSION: i16 = 3;
/// Bytes of a value as written.
const VALUE_BYTES: usize = 24;

/// One committed offset's key: a group's position in one partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupPartition {
    pub group: String,
    pub topic: String,
    pub partition: u32,
}

impl GroupPartition {
    /// The record key (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(12 + self.group.len() + self.topic.len());
        key.extend_from_slice(&KEY_VERSION.to_be_bytes());
        for s in [&self.group, &self.topic] {
            let len = i16::try_from(s.len()).expect("names are at most 249 bytes");
            key.extend_from_slice(&len.to_be_bytes());
            key.extend_from_slice(s.as_bytes());
        }
        key.extend_from_slice(&(self.partition as i32).to_be_bytes());
        key
    }

    /// Parses a key of version 0 or 1 (Kafka's offset commit keys); `None` for anything else
    /// (Kafka's group metadata keys are version 2).
    pub fn decode(key: &[u8]) -> Option<GroupPartition> {
        let version = i16::from_be_bytes(key.get(..2)?.try_into().ok()?);
        if !(0..=1).contains(&version) {
            return None;
        }
        let mut rest = &key[2..];
        let mut string = || -> Option<String> {
            let len = i16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
            let len = usize::try_from(len).ok()?;
            let s = std::str::from_utf8(rest.get(2..2 + len)?).ok()?.to_string();
            rest = &rest[2 + len..];
            Some(s)
        };
        let group = string()?;
        let topic = string()?;
        let partition = i32::from_be_bytes(rest.try_into().ok()?);
        Some(GroupPartition {
            group,
            topic,
            partition: u32::try_from(partition).ok()?,
        })
    }
}

/// The record value of a commit of `offset` at `timestamp_ms` (see the module docs).
pub fn encode_value(offset: i64, timestamp_ms: i64) -> Vec<u8> {
    let mut value = Vec::with_capacity(VALUE_BYTES);
    value.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    value.extend_from_slice(&offset.to_be_bytes());
    value.extend_from_slice(&(-1i32).to_be_bytes());
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&timestamp_ms.to_be_bytes());
    debug_assert_eq!(value.len(), VALUE_BYTES);
    value
}

/// The offset of a value of any of Kafka's versions (0 to 3); `None` if it is too short.
pub fn decode_value(value: &[u8]) -> Option<i64> {
    let version = i16::from_be_bytes(value.get(..2)?.try_into().ok()?);
    if !(0..=3).contains(&version) {
        return None;
    }
    Some(i64::from_be_bytes(value.get(2..10)?.try_into().ok()?))
}

/// Group names follow Kafka's topic naming rules: 1 to 249 characters of `[A-Za-z0-9._-]`, not
/// `.` or `..`. `InvalidArgument` says why a name is refused.
pub fn validate_group_name(group: &str) -> Result<()> {
    match super::manager::LogManager::validate_topic_name(group) {
        Ok(()) => Ok(()),
        Err(EngineError::InvalidTopicName { reason, .. }) => Err(EngineError::InvalidArgument(
            format!("invalid group name {group:?}: {reason}"),
        )),
        Err(e) => Err(e),
    }
}

struct State {
    /// `None` until the first commit creates the log (or the open found it).
    log: Option<Arc<Log>>,
    closed: bool,
}

/// The consumer offsets of a data directory. See the module docs.
pub struct ConsumerOffsets {
    /// `<data>/.lmqfs-internal/__consumer_offsets-0`.
    dir: PathBuf,
    /// Lock order: the log manager's admin lock (a topic delete), then this, then a log's
    /// locks.
    state: Mutex<State>,
}

impl ConsumerOffsets {
    /// The internal topic's config: Kafka's `offsets.topic.segment.bytes` (100 MiB),
    /// `cleanup.policy=compact`, no compression; everything else Kafka's topic defaults.
    pub fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 100 * 1024 * 1024,
            cleanup_policy: CleanupPolicy {
                delete: false,
                compact: true,
            },
            ..LogConfig::default()
        }
    }

    /// The offsets of the data directory `data_dir`: opens the log if a commit ever created it.
    pub fn open(data_dir: &Path) -> Result<ConsumerOffsets> {
        let dir = data_dir
            .join(INTERNAL_DIR)
            .join(format!("{CONSUMER_OFFSETS_TOPIC}-0"));
        let log = if dir.is_dir() {
            Some(Arc::new(Log::open(&dir, Self::config())?))
        } else {
            None
        };
        Ok(ConsumerOffsets {
            dir,
            state: Mutex::new(State { log, closed: false }),
        })
    }

    /// The partition directory of the internal topic (it may not exist yet).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The internal log, if a commit created it.
    pub fn log(&self) -> Option<Arc<Log>> {
        self.lock().log.clone()
    }

    /// The log, created (with its directories, mode 0700) if this is the first commit.
    fn log_or_create(state: &mut State, dir: &Path) -> Result<Arc<Log>> {
        if state.closed {
            return Err(EngineError::Closed);
        }
        if let Some(log) = &state.log {
            return Ok(log.clone());
        }
        use super::error::IoResultExt;
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .at(dir)?;
        let log = Arc::new(Log::open(dir, Self::config())?);
        log::info!(
            "created the consumer offsets topic in {} (first group commit)",
            dir.display()
        );
        state.log = Some(log.clone());
        Ok(log)
    }

    /// OffsetCommit: stores `offset` as the committed offset of `at`, whose partition log is
    /// `partition_log`. `InvalidArgument` for a bad group name, a negative offset or one past
    /// the partition's log end; `UnknownTopic` when the partition's log was closed (its topic
    /// deleted). Returns when the record is appended (durable against a process crash).
    pub fn commit(&self, at: &GroupPartition, offset: i64, partition_log: &Log) -> Result<()> {
        validate_group_name(&at.group)?;
        let log_end_offset = partition_log.log_end_offset();
        if offset < 0 || offset > log_end_offset {
            return Err(EngineError::InvalidArgument(format!(
                "offset {offset} is not a valid commit for {}/{}: it must be between 0 and \
                 the log end offset {log_end_offset}",
                at.topic, at.partition
            )));
        }
        let mut state = self.lock();
        if partition_log.is_closed() {
            return Err(EngineError::UnknownTopic(at.topic.clone()));
        }
        let log = Self::log_or_create(&mut state, &self.dir)?;
        log.append(&[NewRecord {
            key: Some(at.encode()),
            value: Some(encode_value(offset, now_ms())),
            headers: vec![],
            timestamp: None,
        }])?;
        Ok(())
    }

    /// OffsetFetch: the committed offset of `at`, `None` if it never committed (or its commit
    /// was dropped). One key index lookup and one record read.
    pub fn committed(&self, at: &GroupPartition) -> Result<Option<i64>> {
        let Some(log) = self.log() else {
            return Ok(None);
        };
        let Some(record) = log.latest_for_key(&at.encode())? else {
            return Ok(None);
        };
        let value = record.value.unwrap_or_default();
        decode_value(&value)
            .map(Some)
            .ok_or_else(|| EngineError::Corrupt {
                path: log.dir().to_path_buf(),
                position: 0,
                reason: format!(
                    "the commit at offset {} of {:?} has an unreadable value of {} bytes",
                    record.offset,
                    at,
                    value.len()
                ),
            })
    }

    /// Every committed (group, topic, partition) the key index holds, sorted. In memory: no
    /// log read once the index is built.
    pub fn all(&self) -> Result<Vec<GroupPartition>> {
        let Some(log) = self.log() else {
            return Ok(Vec::new());
        };
        let mut all: Vec<GroupPartition> = log
            .live_keys()?
            .iter()
            .filter_map(|k| GroupPartition::decode(k))
            .collect();
        all.sort();
        Ok(all)
    }

    /// The groups that committed an offset of `topic`'s `partition`, sorted.
    pub fn groups(&self, topic: &str, partition: u32) -> Result<Vec<String>> {
        let mut groups: Vec<String> = self
            .all()?
            .into_iter()
            .filter(|k| k.topic == topic && k.partition == partition)
            .map(|k| k.group)
            .collect();
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    /// Tombstones every commit of `topic` (being deleted) and fsyncs them. Returns how many
    /// commits were dropped.
    pub fn drop_topic(&self, topic: &str) -> Result<usize> {
        let state = self.lock();
        let Some(log) = state.log.clone() else {
            return Ok(0);
        };
        let tombstones: Vec<NewRecord> = log
            .live_keys()?
            .into_iter()
            .filter(|k| GroupPartition::decode(k).is_some_and(|k| k.topic == topic))
            .map(|key| NewRecord {
                key: Some(key),
                value: None,
                headers: vec![],
                timestamp: None,
            })
            .collect();
        if tombstones.is_empty() {
            return Ok(0);
        }
        log.append(&tombstones)?;
        log.flush()?;
        drop(state);
        log::info!(
            "dropped {} consumer group commits of deleted topic {topic:?}",
            tombstones.len()
        );
        Ok(tombstones.len())
    }

    /// Closes the log (flush, key snapshot, clean-shutdown marker); later commits get `Closed`.
    pub fn close(&self) -> Result<()> {
        let mut state = self.lock();
        state.closed = true;
        match &state.log {
            Some(log) => log.close(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_in_kafkas_layout() {
        let k = GroupPartition {
            group: "g".into(),
            topic: "orders".into(),
            partition: 3,
        };
        let bytes = k.encode();
        assert_eq!(
            bytes,
            [&[0, 1, 0, 1, b'g', 0, 6][..], b"orders", &[0, 0, 0, 3]].concat()
        );
        assert_eq!(GroupPartition::decode(&bytes), Some(k));
        assert_eq!(GroupPartition::decode(&[0, 2, 0, 1, b'g']), None, "v2");
        assert_eq!(GroupPartition::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(
            GroupPartition::decode(&[bytes.clone(), vec![0]].concat()),
            None
        );
    }

    #[test]
    fn values_round_trip_and_any_kafka_version_decodes() {
        let v = encode_value(42, 1_700_000_000_000);
        assert_eq!(v.len(), VALUE_BYTES);
        assert_eq!(decode_value(&v), Some(42));
        // Kafka's version 1: offset, metadata, commit and expire timestamps.
        let v1 = [
            &1i16.to_be_bytes()[..],
            &7i64.to_be_bytes(),
            &[0, 0],
            &[0; 16],
        ]
        .concat();
        assert_eq!(decode_value(&v1), Some(7));
        assert_eq!(decode_value(&[0, 3, 0]), None);
        assert_eq!(decode_value(&[0, 9, 0, 0, 0, 0, 0, 0, 0, 1]), None);
    }

    #[test]
    fn group_names_follow_topic_rules() {
        for good in ["g", "my-group.v2_x", &"g".repeat(249)] {
            validate_group_name(good).unwrap();
        }
        for bad in ["", ".", "..", "a b", "a/b", "ü", &"g".repeat(250)] {
            assert!(matches!(
                validate_group_name(bad),
                Err(EngineError::InvalidArgument(_))
            ));
        }
    }
}
