//! The log manager: the data directory, its topics and their partition logs.
//!
//! # Layout of a data directory
//!
//! ```text
//! <data>/.lock                 flock(LOCK_EX) held for the manager's life; holds the owner's pid
//! <data>/.lmqfs-topics/<topic> one small properties file per topic (see below)
//! <data>/.lmqfs-work/          scratch space: metadata being written (`*.tmp`), topics and
//!                              partition directories being deleted; emptied at every open
//! <data>/<topic>-<partition>/  one partition log (segments and indexes, see `Log`)
//! <data>/.lmqfs-internal/__consumer_offsets-0/
//!                              consumer group offsets, an internal compacted topic
//!                              ([`super::offsets`]); not in the topic table
//! ```
//!
//! The name `__consumer_offsets` is reserved: creating a topic of that name is refused. A data
//! directory that already holds a user topic of that name (made before the name was reserved)
//! still opens and serves it, with a warning; the internal topic lives apart from it.
//!
//! A topic's metadata file holds `topic=<name>`, `partitions=<N>` and the topic's config
//! **overrides only**, as `key=value` lines. The effective config is the mount's defaults with
//! the overrides applied, so changing a mount default (`-o retention.ms=...`) changes every topic
//! that did not set that key itself. Setting a key through the topic's `config` makes it an
//! override for good, even when the value equals the current default.
//!
//! The metadata file is named by the bare topic name (no extension) and scratch files get short
//! generated names in `.lmqfs-work/`: Kafka allows topic names of 249 characters, and anything
//! appended beyond `-<partition>` would exceed the 255-byte file-name limit.
//!
//! # Crash safety
//!
//! Every metadata change is written to `.lmqfs-work/<n>.tmp`, fsynced, renamed into
//! `.lmqfs-topics/` and the directory fsynced, so a topic's metadata is either the old or the new
//! version.
//! - Create and grow write the metadata *before* creating partition directories; `open` creates
//!   any partition directory the metadata names but the disk lacks, completing the operation.
//! - Delete's commit point is moving the metadata file into `.lmqfs-work/` as a
//!   `<n>.deleted-topic` tombstone. The partition directories are then moved into `.lmqfs-work/`
//!   too, the tombstone removed, and the directories removed recursively. After a crash, `open`
//!   finishes any tombstone it finds (moves the named partition directories aside, unless a live
//!   topic of that name exists again) and then empties `.lmqfs-work/`.
//!
//! A partition directory that no topic's metadata claims, and that holds segments, is adopted
//! at open: its topic's metadata file was lost or deleted, so one is written (the largest
//! partition number found + 1 partitions, default config) and an error-level line says so.
//! Other unclaimed directories are left alone with a warning: they are someone's data, and
//! creating a topic of that name adopts them. A topic whose metadata file is invalid, and a
//! partition directory that cannot be opened, are quarantined (logged, not served) so the rest
//! of the data directory is served.
//!
//! # Threads
//!
//! `LogManager` is `Send + Sync` and meant to be shared behind an `Arc`. Lookups (`log`,
//! `topics`, ...) take a read lock on the topic table only. Changes to the set of topics, their
//! partition counts or configs are serialised by one admin mutex and do their disk I/O outside
//! the table lock. A background thread calls `Log::flush_if_due` on every log every 100 ms, which
//! is how `flush.ms` is honoured. A second one, the cleaner, runs retention on every log each
//! `log.retention.check.interval.ms`, compacts the compacted logs whose dirty ratio asks for it
//! each `log.cleaner.backoff.ms`, and removes `.deleted` segment files once their
//! `file.delete.delay.ms` has passed (see [`CleanupSettings`]). It works on one log at a time,
//! holding only that log's locks, and stops at shutdown: closing a log makes a compaction in
//! progress give up at its next check.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::error::IoResultExt;
use super::offsets::{ConsumerOffsets, CONSUMER_OFFSETS_TOPIC};
use super::{
    now_ms, CleanerConfig, CompactionOutcome, EngineError, Log, LogConfig, Result, RetentionOutcome,
};

/// The lock file that makes one daemon own a data directory.
const LOCK_FILE: &str = ".lock";
/// Holds one metadata file per topic.
const TOPICS_DIR: &str = ".lmqfs-topics";
/// Scratch space, emptied at open.
const WORK_DIR: &str = ".lmqfs-work";
/// Suffix of a delete tombstone in the work directory.
const TOMBSTONE_SUFFIX: &str = ".deleted-topic";
/// Metadata keys that are not config keys.
const TOPIC_KEY: &str = "topic";
const PARTITIONS_KEY: &str = "partitions";

/// Kafka's limit: 255 bytes of file name minus room for `-<partition>`.
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// Partitions `0 ..= 99_999` keep `<249-character topic>-<partition>` within 255 bytes.
pub const MAX_PARTITIONS: u32 = 100_000;
/// The cleaner thread's longest sleep: how late a `.deleted` file may be removed.
const CLEANER_TICK_MS: i64 = 1000;
/// How often the background thread applies `flush.ms`.
const FLUSH_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Mount-wide settings of the background cleanup (Kafka's broker-level names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupSettings {
    /// `log.cleaner.dedupe.buffer.size` and friends.
    pub cleaner: CleanerConfig,
    /// `log.cleaner.backoff.ms` (15 s): how often compacted logs are checked for a dirty ratio
    /// past `min.cleanable.dirty.ratio`.
    pub cleaner_backoff_ms: i64,
    /// `log.retention.check.interval.ms` (5 min): how often retention runs on every log.
    pub retention_check_interval_ms: i64,
}

impl Default for CleanupSettings {
    fn default() -> Self {
        CleanupSettings {
            cleaner: CleanerConfig::default(),
            cleaner_backoff_ms: 15_000,
            retention_check_interval_ms: 300_000,
        }
    }
}

/// One topic in the table.
struct Topic {
    /// Index = partition number.
    logs: Vec<Arc<Log>>,
    /// Config keys the topic sets itself, values as `LogConfig::get` prints them.
    overrides: BTreeMap<String, String>,
    /// Mount defaults with `overrides` applied.
    config: LogConfig,
}

/// State only admin operations touch; guarded by `Shared::admin`.
#[derive(Default)]
struct AdminState {
    /// Set by `shutdown`; every later request gets `EngineError::Closed`.
    closed: bool,
    /// Topics whose delete committed but whose partition directories could not be moved aside;
    /// their names stay unusable until the next open finishes the delete.
    unfinished_deletes: BTreeSet<String>,
}

/// What the manager and its flusher thread share.
struct Shared {
    data_dir: PathBuf,
    topics_dir: PathBuf,
    work_dir: PathBuf,
    defaults: LogConfig,
    default_partitions: u32,
    /// Serialises create, delete, grow, config changes and shutdown.
    ///
    /// Lock order: `admin` before `topics`, never the reverse. `topics` is held only to look up,
    /// insert or remove entries, never across a log's or the metadata's disk I/O.
    admin: Mutex<AdminState>,
    /// The topic table. See `admin` for the lock order.
    topics: RwLock<BTreeMap<String, Topic>>,
    /// Mirrors `AdminState::closed` for lookups that do not take `admin`.
    closed: AtomicBool,
    /// Makes scratch file names unique within this process.
    scratch_counter: AtomicU64,
    /// Intervals and memory of the background cleanup.
    settings: CleanupSettings,
    /// Consumer group offsets: the internal `__consumer_offsets` topic, outside `topics`.
    offsets: Arc<ConsumerOffsets>,
}

/// A background thread of the manager (the flusher, the cleaner) and its stop signal.
struct Background {
    stop: Arc<StopSignal>,
    handle: JoinHandle<()>,
}

/// Set once at shutdown; background threads sleep on it.
#[derive(Default)]
struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    /// Sleeps up to `timeout`; true when stopped.
    fn wait(&self, timeout: Duration) -> bool {
        let guard = lock(&self.stopped);
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, timeout, |stopped| !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        *guard
    }

    fn is_stopped(&self) -> bool {
        *lock(&self.stopped)
    }

    fn stop(&self) {
        *lock(&self.stopped) = true;
        self.wake.notify_all();
    }
}

impl Background {
    /// Runs `body` on a thread named `name` until it returns (it should when stopped).
    fn start(
        name: &str,
        shared: Arc<Shared>,
        body: fn(&Shared, &StopSignal),
    ) -> Result<Background> {
        let stop = Arc::new(StopSignal::default());
        let thread_stop = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || body(&shared, &thread_stop))
            .map_err(|e| EngineError::io(format!("<{name} thread>"), e))?;
        Ok(Background { stop, handle })
    }

    /// Waits for the thread, which was told to stop.
    fn join(self) {
        let name = self
            .handle
            .thread()
            .name()
            .unwrap_or("background")
            .to_string();
        if self.handle.join().is_err() {
            log::error!("the {name} thread panicked");
        }
    }
}

/// Owns a data directory: its lock, its topics and every partition's [`Log`].
///
/// See the module documentation for the on-disk layout, crash safety and locking.
pub struct LogManager {
    shared: Arc<Shared>,
    flusher: Mutex<Option<Background>>,
    /// The background cleanup thread: retention, compaction, removal of `.deleted` files.
    cleaner: Mutex<Option<Background>>,
    /// The open `.lock` file; dropping it releases the flock.
    lock_file: Mutex<Option<File>>,
}

// The FUSE layer shares one manager between its threads.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LogManager>();
};

impl LogManager {
    /// Opens `data_dir`, creating it (and missing parents) with mode 0700 if needed.
    ///
    /// Takes the directory's lock (`DataDirLocked` if another process holds it), finishes
    /// interrupted deletes, empties the scratch directory, opens every partition log of every
    /// topic (creating partition directories an interrupted create or grow left out), adopts
    /// partition directories whose metadata was lost, quarantines topics with invalid metadata
    /// and partitions that cannot be opened, and starts the flush thread.
    ///
    /// `defaults` is the config of every key a topic does not override; `default_partitions` the
    /// partition count of topics created without one.
    pub fn open(
        data_dir: &Path,
        defaults: LogConfig,
        default_partitions: u32,
    ) -> Result<LogManager> {
        LogManager::open_with(
            data_dir,
            defaults,
            default_partitions,
            CleanupSettings::default(),
        )
    }

    /// [`Self::open`] with explicit cleanup settings (intervals, offset map memory).
    pub fn open_with(
        data_dir: &Path,
        defaults: LogConfig,
        default_partitions: u32,
        settings: CleanupSettings,
    ) -> Result<LogManager> {
        check_partition_count(default_partitions)?;
        create_private_dir(data_dir)?;
        let data_dir = fs::canonicalize(data_dir).at(data_dir)?;
        let lock_file = lock_data_dir(&data_dir)?;
        let offsets = Arc::new(ConsumerOffsets::open(&data_dir)?);
        let shared = Shared {
            topics_dir: data_dir.join(TOPICS_DIR),
            work_dir: data_dir.join(WORK_DIR),
            data_dir,
            defaults,
            default_partitions,
            admin: Mutex::new(AdminState::default()),
            topics: RwLock::new(BTreeMap::new()),
            closed: AtomicBool::new(false),
            scratch_counter: AtomicU64::new(0),
            settings,
            offsets,
        };
        create_private_dir(&shared.topics_dir)?;
        create_private_dir(&shared.work_dir)?;
        shared.finish_interrupted_deletes()?;
        shared.empty_work_dir();
        let topics = match shared.load_topics() {
            Ok(topics) => topics,
            Err(e) => {
                let _ = shared.offsets.close();
                return Err(e);
            }
        };
        let partitions: usize = topics.values().map(|t| t.logs.len()).sum();
        log::info!(
            "opened data directory {}: {} topics, {} partitions",
            shared.data_dir.display(),
            topics.len(),
            partitions
        );
        *write(&shared.topics) = topics;

        let shared = Arc::new(shared);
        let flusher = Background::start("lmqfs-flush", Arc::clone(&shared), run_flusher)?;
        let cleaner = Background::start("lmqfs-cleaner", Arc::clone(&shared), clean_periodically)?;
        Ok(LogManager {
            shared,
            flusher: Mutex::new(Some(flusher)),
            cleaner: Mutex::new(Some(cleaner)),
            lock_file: Mutex::new(Some(lock_file)),
        })
    }

    /// The cleanup settings this manager runs with.
    pub fn cleanup_settings(&self) -> CleanupSettings {
        self.shared.settings
    }

    /// Runs retention on one partition now; returns when it finished.
    pub fn retention(&self, topic: &str, partition: u32) -> Result<RetentionOutcome> {
        self.log(topic, partition)?.run_retention(now_ms())
    }

    /// Compacts one partition now, whatever its dirty ratio; returns when it finished.
    /// `InvalidArgument` if the topic's `cleanup.policy` does not contain `compact`.
    pub fn compact(&self, topic: &str, partition: u32) -> Result<CompactionOutcome> {
        self.log(topic, partition)?
            .compact(now_ms(), true, &self.shared.settings.cleaner)
    }

    /// The data directory, as an absolute path.
    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }

    /// The consumer group offsets of this data directory (see [`super::offsets`]).
    pub fn consumer_offsets(&self) -> &Arc<ConsumerOffsets> {
        &self.shared.offsets
    }

    /// The names of all topics, sorted. The internal `__consumer_offsets` is not one of them.
    pub fn topics(&self) -> Vec<String> {
        read(&self.shared.topics).keys().cloned().collect()
    }

    /// Kafka's topic name rules: 1 to 249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    pub fn validate_topic_name(name: &str) -> Result<()> {
        let invalid = |reason: String| {
            Err(EngineError::InvalidTopicName {
                name: name.to_string(),
                reason,
            })
        };
        if name.is_empty() {
            return invalid("a topic name must not be empty".to_string());
        }
        if name == "." || name == ".." {
            return invalid("\".\" and \"..\" are not allowed".to_string());
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return invalid(format!(
                "{c:?} is not allowed: only ASCII letters, digits, '.', '_' and '-'"
            ));
        }
        if name.len() > MAX_TOPIC_NAME_LEN {
            return invalid(format!(
                "{} characters is longer than the limit of {MAX_TOPIC_NAME_LEN}",
                name.len()
            ));
        }
        Ok(())
    }

    /// Creates a topic with `partitions` partitions (`None`: the mount's default) and the given
    /// config overrides. Everything is checked before anything is written: an invalid name,
    /// count or override creates nothing. `TopicExists` if the name is taken;
    /// `InvalidTopicName` for the reserved `__consumer_offsets`.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        overrides: &[(String, String)],
    ) -> Result<()> {
        let result = self.try_create_topic(name, partitions, overrides);
        if let Err(e) = &result {
            log::warn!("refused to create topic {name:?}: {e}");
        }
        result
    }

    fn try_create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        overrides: &[(String, String)],
    ) -> Result<()> {
        Self::validate_topic_name(name)?;
        if name == CONSUMER_OFFSETS_TOPIC {
            return Err(EngineError::InvalidTopicName {
                name: name.to_string(),
                reason: "the name is reserved for the internal topic of consumer group offsets"
                    .to_string(),
            });
        }
        let count = partitions.unwrap_or(self.shared.default_partitions);
        check_partition_count(count)?;
        let admin = self.admin()?;
        if admin.unfinished_deletes.contains(name) || read(&self.shared.topics).contains_key(name) {
            return Err(EngineError::TopicExists(name.to_string()));
        }
        let overrides = self
            .shared
            .canonical_overrides(&BTreeMap::new(), overrides)?;
        let config = self.shared.effective_config(&overrides)?;
        self.shared.write_metadata(name, count, &overrides)?;
        let logs = match self.shared.open_partitions(name, 0..count, &config) {
            Ok(logs) => logs,
            Err(e) => {
                // Undo the metadata so the topic does not appear at the next open.
                let path = self.shared.metadata_path(name);
                if let Err(undo) =
                    fs::remove_file(&path).and_then(|()| sync_dir(&self.shared.topics_dir))
                {
                    log::error!(
                        "could not remove {} after a failed create: {undo}",
                        path.display()
                    );
                }
                return Err(e);
            }
        };
        write(&self.shared.topics).insert(
            name.to_string(),
            Topic {
                logs,
                overrides: overrides.clone(),
                config,
            },
        );
        log::info!(
            "created topic {name:?} with {count} partitions{}",
            describe_overrides(&overrides)
        );
        Ok(())
    }

    /// Deletes a topic and all its data. Its logs are closed first (readers holding one get
    /// `Closed` for further changes); the metadata's removal is the commit point.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let result = self.try_delete_topic(name);
        if let Err(e) = &result {
            log::warn!("refused to delete topic {name:?}: {e}");
        }
        result
    }

    fn try_delete_topic(&self, name: &str) -> Result<()> {
        let mut admin = self.admin()?;
        let topic = write(&self.shared.topics)
            .remove(name)
            .ok_or_else(|| EngineError::UnknownTopic(name.to_string()))?;
        for (partition, log) in topic.logs.iter().enumerate() {
            if let Err(e) = log.close() {
                // Its data is about to go; the delete goes on.
                log::warn!("closing partition {partition} of deleted topic {name:?}: {e}");
            }
        }

        // The commit point: the metadata leaves `.lmqfs-topics/`.
        let tombstone = self.shared.scratch_path(TOMBSTONE_SUFFIX);
        if let Err(e) = self
            .shared
            .move_to_scratch(&self.shared.metadata_path(name), &tombstone)
        {
            // Not deleted after all: put the topic back.
            log::error!("delete of topic {name:?} did not commit; reopening it");
            let logs =
                self.shared
                    .open_partitions(name, 0..topic.logs.len() as u32, &topic.config)?;
            write(&self.shared.topics).insert(name.to_string(), Topic { logs, ..topic });
            return Err(e);
        }

        let mut trash = Vec::new();
        for partition in 0..topic.logs.len() as u32 {
            let dir = self.shared.partition_dir(name, partition);
            let aside = self.shared.scratch_path(".deleted-partition");
            match fs::rename(&dir, &aside) {
                Ok(()) => trash.push(aside),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    admin.unfinished_deletes.insert(name.to_string());
                    log::error!(
                        "topic {name:?} is deleted but {} could not be moved aside: {e}; \
                         the next start finishes the delete",
                        dir.display()
                    );
                    return Err(EngineError::io(dir, e));
                }
            }
        }
        sync_dir(&self.shared.data_dir).at(&self.shared.data_dir)?;
        sync_dir(&self.shared.work_dir).at(&self.shared.work_dir)?;
        // Before the tombstone goes: a crash until then makes the next open drop them.
        if let Err(e) = self.shared.offsets.drop_topic(name) {
            admin.unfinished_deletes.insert(name.to_string());
            log::error!(
                "topic {name:?} is deleted but its consumer group commits could not be \
                 dropped: {e}; the next start finishes the delete"
            );
            return Err(e);
        }
        fs::remove_file(&tombstone).at(&tombstone)?;
        sync_dir(&self.shared.work_dir).at(&self.shared.work_dir)?;
        drop(admin);

        for dir in trash {
            if let Err(e) = fs::remove_dir_all(&dir) {
                log::warn!(
                    "could not remove {} (the next start retries): {e}",
                    dir.display()
                );
            }
        }
        log::info!("deleted topic {name:?} ({} partitions)", topic.logs.len());
        Ok(())
    }

    /// The number of partitions of `topic`.
    pub fn partition_count(&self, topic: &str) -> Result<u32> {
        self.with_topic(topic, |t| t.logs.len() as u32)
    }

    /// Grows `topic` to `count` partitions while it serves. The same count is a no-op; a smaller
    /// one is `PartitionCountDecrease`. The new partitions start empty.
    pub fn set_partition_count(&self, topic: &str, count: u32) -> Result<()> {
        let result = self.try_set_partition_count(topic, count);
        if let Err(e) = &result {
            log::warn!("refused to set the partition count of {topic:?} to {count}: {e}");
        }
        result
    }

    fn try_set_partition_count(&self, name: &str, count: u32) -> Result<()> {
        let _admin = self.admin()?;
        let (current, overrides, config) = self.with_topic(name, |t| {
            (t.logs.len() as u32, t.overrides.clone(), t.config.clone())
        })?;
        if count == current {
            return Ok(());
        }
        if count < current {
            return Err(EngineError::PartitionCountDecrease {
                topic: name.to_string(),
                current,
                requested: count,
            });
        }
        check_partition_count(count)?;
        self.shared.write_metadata(name, count, &overrides)?;
        let logs = match self.shared.open_partitions(name, current..count, &config) {
            Ok(logs) => logs,
            Err(e) => {
                if let Err(undo) = self.shared.write_metadata(name, current, &overrides) {
                    log::error!("could not restore the partition count of {name:?}: {undo}");
                }
                return Err(e);
            }
        };
        if let Some(topic) = write(&self.shared.topics).get_mut(name) {
            topic.logs.extend(logs);
        }
        log::info!("grew topic {name:?} from {current} to {count} partitions");
        Ok(())
    }

    /// The log of one partition.
    pub fn log(&self, topic: &str, partition: u32) -> Result<Arc<Log>> {
        self.with_topic(topic, |t| t.logs.get(partition as usize).cloned())?
            .ok_or_else(|| EngineError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            })
    }

    /// The effective config of `topic`: mount defaults with its overrides applied.
    pub fn topic_config(&self, topic: &str) -> Result<LogConfig> {
        self.with_topic(topic, |t| t.config.clone())
    }

    /// The keys `topic` sets itself, sorted by key, values as `LogConfig::get` prints them.
    pub fn topic_overrides(&self, topic: &str) -> Result<Vec<(String, String)>> {
        self.with_topic(topic, |t| {
            t.overrides
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    /// Sets config keys of `topic`; they become overrides. All pairs are validated before
    /// anything changes; the new overrides are persisted, then every partition gets the new
    /// config.
    pub fn alter_topic_config(&self, topic: &str, pairs: &[(String, String)]) -> Result<()> {
        let result = self.try_alter_topic_config(topic, pairs);
        if let Err(e) = &result {
            log::warn!("refused to change the config of topic {topic:?}: {e}");
        }
        result
    }

    fn try_alter_topic_config(&self, name: &str, pairs: &[(String, String)]) -> Result<()> {
        let _admin = self.admin()?;
        let (count, old) = self.with_topic(name, |t| (t.logs.len() as u32, t.overrides.clone()))?;
        let overrides = self.shared.canonical_overrides(&old, pairs)?;
        let config = self.shared.effective_config(&overrides)?;
        if overrides == old {
            return Ok(());
        }
        self.shared.write_metadata(name, count, &overrides)?;
        let logs = {
            let mut topics = write(&self.shared.topics);
            let topic = topics
                .get_mut(name)
                .ok_or_else(|| EngineError::UnknownTopic(name.to_string()))?;
            topic.overrides = overrides;
            topic.config = config.clone();
            topic.logs.clone()
        };
        for log in &logs {
            log.update_config(config.clone());
        }
        let changed: Vec<String> = pairs
            .iter()
            .map(|(k, _)| k)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|k| format!("{k}={}", config.get(k).unwrap_or_default()))
            .collect();
        log::info!("changed config of topic {name:?}: {}", changed.join(", "));
        Ok(())
    }

    /// fsyncs every partition of every topic. Tries them all; returns the first error.
    pub fn flush_all(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(EngineError::Closed);
        }
        let mut first_error = None;
        for (topic, partition, log) in self.shared.all_logs() {
            if let Err(e) = log.flush() {
                log::error!("flush of partition {partition} of topic {topic:?} failed: {e}");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops the flush thread, closes every log (each flushes and writes its clean-shutdown
    /// marker) and releases the data directory's lock. Every log is closed even if one fails;
    /// the first error is returned. Later calls do nothing; later requests get `Closed`.
    pub fn shutdown(&self) -> Result<()> {
        let mut admin = lock(&self.shared.admin);
        if admin.closed {
            return Ok(());
        }
        admin.closed = true;
        self.shared.closed.store(true, Ordering::Release);

        if let Some(flusher) = lock(&self.flusher).take() {
            flusher.stop.stop();
            flusher.join();
        }

        let cleaner = lock(&self.cleaner).take();
        if let Some(cleaner) = &cleaner {
            cleaner.stop.stop();
        }

        let topics = std::mem::take(&mut *write(&self.shared.topics));
        let logs: Vec<(&str, usize, &Arc<Log>)> = topics
            .iter()
            .flat_map(|(name, topic)| {
                let logs = topic.logs.iter().enumerate();
                logs.map(move |(partition, log)| (name.as_str(), partition, log))
            })
            .collect();
        let mut first_error = close_all(&logs);
        if let Err(e) = self.shared.offsets.close() {
            log::error!("closing the consumer offsets topic failed: {e}");
            first_error.get_or_insert(e);
        }
        // Closed logs make a cleaning run in progress stop at its next check.
        if let Some(cleaner) = cleaner {
            cleaner.join();
        }
        drop(lock(&self.lock_file).take());
        log::info!("closed data directory {}", self.shared.data_dir.display());
        first_error.map_or(Ok(()), Err)
    }

    /// The admin lock, or `Closed` after shutdown.
    fn admin(&self) -> Result<MutexGuard<'_, AdminState>> {
        let admin = lock(&self.shared.admin);
        if admin.closed {
            return Err(EngineError::Closed);
        }
        Ok(admin)
    }

    /// Runs `f` on the topic's table entry under the read lock.
    fn with_topic<T>(&self, name: &str, f: impl FnOnce(&Topic) -> T) -> Result<T> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(EngineError::Closed);
        }
        read(&self.shared.topics)
            .get(name)
            .map(f)
            .ok_or_else(|| EngineError::UnknownTopic(name.to_string()))
    }
}

impl Drop for LogManager {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::error!("shutting down {}: {e}", self.shared.data_dir.display());
        }
    }
}

impl Shared {
    fn metadata_path(&self, topic: &str) -> PathBuf {
        self.topics_dir.join(topic)
    }

    fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{partition}"))
    }

    /// A fresh name in the work directory.
    fn scratch_path(&self, suffix: &str) -> PathBuf {
        let n = self.scratch_counter.fetch_add(1, Ordering::Relaxed);
        self.work_dir.join(format!("{}-{n}{suffix}", now_ms()))
    }

    /// Every log with its topic and partition, collected under the read lock, then the
    /// internal consumer offsets log if it exists.
    fn all_logs(&self) -> Vec<(String, u32, Arc<Log>)> {
        let mut logs: Vec<(String, u32, Arc<Log>)> = read(&self.topics)
            .iter()
            .flat_map(|(name, topic)| {
                topic
                    .logs
                    .iter()
                    .enumerate()
                    .map(move |(p, log)| (name.clone(), p as u32, Arc::clone(log)))
            })
            // A quarantined partition has nothing to flush or clean.
            .filter(|(_, _, log)| log.unavailable_reason().is_none())
            .collect();
        if let Some(log) = self.offsets.log() {
            logs.push((format!("{CONSUMER_OFFSETS_TOPIC} (internal)"), 0, log));
        }
        logs
    }

    /// `old` with `pairs` applied, each value validated and in `LogConfig::get`'s spelling.
    fn canonical_overrides(
        &self,
        old: &BTreeMap<String, String>,
        pairs: &[(String, String)],
    ) -> Result<BTreeMap<String, String>> {
        let applied = self.defaults.apply(pairs)?;
        let mut overrides = old.clone();
        for (key, _) in pairs {
            let value = applied.get(key).expect("apply accepted the key");
            overrides.insert(key.clone(), value);
        }
        Ok(overrides)
    }

    fn effective_config(&self, overrides: &BTreeMap<String, String>) -> Result<LogConfig> {
        let pairs: Vec<(String, String)> = overrides
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(self.defaults.apply(&pairs)?)
    }

    /// Atomically replaces the topic's metadata file.
    fn write_metadata(
        &self,
        topic: &str,
        partitions: u32,
        overrides: &BTreeMap<String, String>,
    ) -> Result<()> {
        let mut text = String::from(
            "# lmqfs topic metadata: partition count and this topic's config overrides;\n\
             # every other key takes the mount's default.\n",
        );
        text.push_str(&format!(
            "{TOPIC_KEY}={topic}\n{PARTITIONS_KEY}={partitions}\n"
        ));
        for (key, value) in overrides {
            text.push_str(&format!("{key}={value}\n"));
        }
        let tmp = self.scratch_path(".tmp");
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .at(&tmp)?;
        file.write_all(text.as_bytes()).at(&tmp)?;
        file.sync_all().at(&tmp)?;
        drop(file);
        let path = self.metadata_path(topic);
        fs::rename(&tmp, &path).at(&path)?;
        sync_dir(&self.topics_dir).at(&self.topics_dir)
    }

    /// Moves `from` to `to` (in the work directory) durably.
    fn move_to_scratch(&self, from: &Path, to: &Path) -> Result<()> {
        fs::rename(from, to).at(from)?;
        sync_dir(&self.work_dir).at(&self.work_dir)?;
        sync_dir(&self.topics_dir).at(&self.topics_dir)
    }

    /// Opens (creating where missing) the given partitions of a topic. On error, the logs opened
    /// so far are closed and the directories this call created removed.
    fn open_partitions(
        &self,
        topic: &str,
        partitions: std::ops::Range<u32>,
        config: &LogConfig,
    ) -> Result<Vec<Arc<Log>>> {
        self.open_partitions_with(topic, partitions, config, false)
    }

    /// [`Self::open_partitions`]; with `quarantine` (at startup), a partition directory that
    /// cannot be opened is quarantined ([`Log::unavailable`]) instead of failing the call, so
    /// one damaged partition does not keep every other topic from being served.
    fn open_partitions_with(
        &self,
        topic: &str,
        partitions: std::ops::Range<u32>,
        config: &LogConfig,
        quarantine: bool,
    ) -> Result<Vec<Arc<Log>>> {
        let mut logs = Vec::new();
        let mut created = Vec::new();
        let mut result = Ok(());
        for partition in partitions {
            let dir = self.partition_dir(topic, partition);
            if !dir.exists() {
                if let Err(e) = fs::create_dir(&dir) {
                    result = Err(EngineError::io(&dir, e));
                    break;
                }
                created.push(dir.clone());
            }
            match Log::open(&dir, config.clone()) {
                Ok(log) => logs.push(Arc::new(log)),
                Err(e) if quarantine && !created.contains(&dir) => {
                    log::error!(
                        "QUARANTINED partition {partition} of topic {topic:?}: {} cannot be \
                         opened: {e}. Its files in the mount answer EIO; every other partition \
                         is served. Nothing in it was changed: check it with `lmqfs dump-log \
                         --verify {}/*`, repair or move the damaged file, and mount again",
                        dir.display(),
                        dir.display()
                    );
                    logs.push(Arc::new(Log::unavailable(
                        &dir,
                        config.clone(),
                        e.to_string(),
                    )));
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() && !created.is_empty() {
            result = sync_dir(&self.data_dir).at(&self.data_dir);
        }
        match result {
            Ok(()) => Ok(logs),
            Err(e) => {
                for log in &logs {
                    let _ = log.close();
                }
                for dir in created {
                    if let Err(undo) = fs::remove_dir_all(&dir) {
                        log::error!("could not remove {}: {undo}", dir.display());
                    }
                }
                Err(e)
            }
        }
    }

    /// Completes deletes whose tombstone is still in the work directory: moves the partition
    /// directories it names into the work directory, unless a live topic of that name exists.
    fn finish_interrupted_deletes(&self) -> Result<()> {
        for entry in fs::read_dir(&self.work_dir).at(&self.work_dir)? {
            let path = entry.at(&self.work_dir)?.path();
            if !path.to_string_lossy().ends_with(TOMBSTONE_SUFFIX) {
                continue;
            }
            let (topic, partitions, _) = self.read_metadata(&path)?;
            let topic = topic.ok_or_else(|| corrupt(&path, "no topic= line".to_string()))?;
            if self.metadata_path(&topic).exists() {
                log::warn!(
                    "ignoring stale delete record {} of topic {topic:?}, which exists again",
                    path.display()
                );
                continue;
            }
            log::info!("finishing the interrupted delete of topic {topic:?}");
            for partition in 0..partitions {
                let dir = self.partition_dir(&topic, partition);
                if dir.exists() {
                    let aside = self.scratch_path(".deleted-partition");
                    fs::rename(&dir, &aside).at(&dir)?;
                }
            }
            sync_dir(&self.data_dir).at(&self.data_dir)?;
            sync_dir(&self.work_dir).at(&self.work_dir)?;
            self.offsets.drop_topic(&topic)?;
        }
        Ok(())
    }

    /// Removes everything in the work directory. Failures are only logged: leftovers cost
    /// space, not correctness, and the next open retries.
    fn empty_work_dir(&self) {
        let entries = match fs::read_dir(&self.work_dir) {
            Ok(entries) => entries,
            Err(e) => {
                log::warn!("could not list {}: {e}", self.work_dir.display());
                return;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let removed = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
            match removed {
                Ok(()) => log::debug!("removed leftover {}", path.display()),
                Err(e) => log::warn!("could not remove leftover {}: {e}", path.display()),
            }
        }
    }

    /// Reads a metadata file: its `topic=` (if any), `partitions=` and config overrides.
    fn read_metadata(
        &self,
        path: &Path,
    ) -> Result<(Option<String>, u32, BTreeMap<String, String>)> {
        let text = fs::read_to_string(path).at(path)?;
        let pairs = LogConfig::parse_properties(&text).map_err(|e| corrupt(path, e.to_string()))?;
        let mut topic = None;
        let mut partitions = None;
        let mut overrides = BTreeMap::new();
        for (key, value) in pairs {
            match key.as_str() {
                TOPIC_KEY => topic = Some(value),
                PARTITIONS_KEY => {
                    let n = value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_PARTITIONS).contains(n))
                        .ok_or_else(|| corrupt(path, format!("invalid partitions={value}")))?;
                    partitions = Some(n);
                }
                _ => {
                    overrides.insert(key, value);
                }
            }
        }
        let partitions = partitions.ok_or_else(|| corrupt(path, "no partitions= line".into()))?;
        Ok((topic, partitions, overrides))
    }

    /// Loads every topic's metadata and opens its partitions. On error, closes what it opened.
    fn load_topics(&self) -> Result<BTreeMap<String, Topic>> {
        let mut topics = BTreeMap::new();
        let mut quarantined = BTreeSet::new();
        let result = self
            .load_topics_into(&mut topics, &mut quarantined)
            .and_then(|()| self.adopt_unclaimed_partitions(&mut topics, &quarantined));
        if result.is_err() {
            for topic in topics.values() {
                for log in &topic.logs {
                    let _ = log.close();
                }
            }
        }
        result.map(|()| topics)
    }

    /// Loads the topics whose metadata is valid; the names of the others go to `quarantined`.
    fn load_topics_into(
        &self,
        topics: &mut BTreeMap<String, Topic>,
        quarantined: &mut BTreeSet<String>,
    ) -> Result<()> {
        let mut paths = Vec::new();
        for entry in fs::read_dir(&self.topics_dir).at(&self.topics_dir)? {
            paths.push(entry.at(&self.topics_dir)?.path());
        }
        paths.sort();
        for path in paths {
            let name = match path.file_name().and_then(|n| n.to_str()) {
                Some(name) if LogManager::validate_topic_name(name).is_ok() => name.to_string(),
                _ => {
                    log::warn!("ignoring {}: not a topic metadata file", path.display());
                    continue;
                }
            };
            let (count, config, overrides) = match self.topic_from_metadata(&name, &path) {
                Ok(topic) => topic,
                Err(e) => {
                    log::error!(
                        "QUARANTINED topic {name:?}: {e}. The topic is not served and its \
                         partition directories are left as they are; the other topics are \
                         served. Repair the file (lines `topic={name}`, `partitions=N`, then \
                         config overrides `key=value`), or remove it to have the partitions \
                         adopted with the default config, and mount again",
                    );
                    quarantined.insert(name);
                    continue;
                }
            };
            for partition in 0..count {
                if !self.partition_dir(&name, partition).exists() {
                    log::info!(
                        "creating missing partition {partition} of topic {name:?} \
                         (an interrupted create or grow)"
                    );
                }
            }
            let logs = self.open_partitions_with(&name, 0..count, &config, true)?;
            log::info!("loaded topic {name:?}: {count} partitions");
            topics.insert(
                name,
                Topic {
                    logs,
                    overrides,
                    config,
                },
            );
        }
        Ok(())
    }

    /// A topic's partition count, effective config and overrides, from its metadata file.
    fn topic_from_metadata(
        &self,
        name: &str,
        path: &Path,
    ) -> Result<(u32, LogConfig, BTreeMap<String, String>)> {
        {
            let (recorded, count, overrides) = self.read_metadata(path)?;
            if let Some(recorded) = recorded.filter(|r| *r != name) {
                return Err(corrupt(path, format!("names topic {recorded:?}")));
            }
            if name == CONSUMER_OFFSETS_TOPIC {
                log::warn!(
                    "topic {name:?} is a user topic made before the name was reserved for \
                     consumer group offsets; it keeps serving as before (group offsets are \
                     stored apart, in {}), but a new topic cannot take this name",
                    self.offsets.dir().display()
                );
            }
            let pairs: Vec<(String, String)> = overrides.into_iter().collect();
            let overrides = self
                .canonical_overrides(&BTreeMap::new(), &pairs)
                .map_err(|e| corrupt(path, e.to_string()))?;
            let config = self
                .effective_config(&overrides)
                .map_err(|e| corrupt(path, e.to_string()))?;
            Ok((count, config, overrides))
        }
    }

    /// `<name>-<n>` directories that no topic claims: when no metadata file of that name exists
    /// (it was deleted or lost), the topic is adopted: metadata is written with `n` + 1
    /// partitions (the largest found) and the mount's default config, loudly. Directories of a
    /// quarantined topic, or beyond the partition count of a loaded one, are left alone with a
    /// warning.
    fn adopt_unclaimed_partitions(
        &self,
        topics: &mut BTreeMap<String, Topic>,
        quarantined: &BTreeSet<String>,
    ) -> Result<()> {
        let mut orphans: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for entry in fs::read_dir(&self.data_dir).at(&self.data_dir)? {
            let entry = entry.at(&self.data_dir)?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some((topic, partition)) = parse_partition_dir_name(&name) else {
                continue;
            };
            let claimed = topics
                .get(topic)
                .is_some_and(|t| (partition as usize) < t.logs.len());
            if claimed {
                continue;
            }
            let adoptable = !topics.contains_key(topic)
                && !quarantined.contains(topic)
                && topic != CONSUMER_OFFSETS_TOPIC
                && LogManager::validate_topic_name(topic).is_ok()
                && holds_segments(&entry.path());
            if adoptable {
                orphans
                    .entry(topic.to_string())
                    .or_default()
                    .push(partition);
            } else {
                log::warn!(
                    "partition directory {} belongs to no served topic; left alone",
                    entry.path().display()
                );
            }
        }
        for (name, mut found) in orphans {
            found.sort_unstable();
            let count = found.last().map_or(1, |last| last + 1);
            let overrides = BTreeMap::new();
            let config = self.effective_config(&overrides)?;
            self.write_metadata(&name, count, &overrides)?;
            log::error!(
                "ADOPTED topic {name:?}: partition directories {found:?} were on disk but its \
                 metadata file {} was missing; wrote it with {count} partitions and the mount's \
                 default config. Set its config again if it had overrides, or delete the topic \
                 through the mount if it should be gone",
                self.metadata_path(&name).display()
            );
            let logs = self.open_partitions_with(&name, 0..count, &config, true)?;
            topics.insert(
                name,
                Topic {
                    logs,
                    overrides,
                    config,
                },
            );
        }
        Ok(())
    }
}

/// Whether `dir` holds a segment (`<20 digits>.log`): lmqfs data, not someone's directory
/// that happens to be named like a partition.
fn holds_segments(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name().to_str().is_some_and(|name| {
                super::segment::parse_segment_file_name(name, super::segment::LOG_SUFFIX).is_some()
            })
        })
    })
}

/// Splits `<topic>-<partition>` where the partition is a canonical decimal number.
fn parse_partition_dir_name(name: &str) -> Option<(&str, u32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    let canonical = !partition.is_empty()
        && partition.bytes().all(|b| b.is_ascii_digit())
        && (partition == "0" || !partition.starts_with('0'));
    if !canonical || LogManager::validate_topic_name(topic).is_err() {
        return None;
    }
    Some((topic, partition.parse().ok()?))
}

fn check_partition_count(count: u32) -> Result<()> {
    if !(1..=MAX_PARTITIONS).contains(&count) {
        return Err(EngineError::InvalidArgument(format!(
            "a topic needs between 1 and {MAX_PARTITIONS} partitions, not {count}"
        )));
    }
    Ok(())
}

fn corrupt(path: &Path, reason: String) -> EngineError {
    EngineError::Corrupt {
        path: path.to_path_buf(),
        position: 0,
        reason: format!("invalid topic metadata: {reason}"),
    }
}

fn describe_overrides(overrides: &BTreeMap<String, String>) -> String {
    if overrides.is_empty() {
        return String::new();
    }
    let list: Vec<String> = overrides.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(" and {}", list.join(", "))
}

/// Creates `dir` and missing parents with mode 0700. An existing directory is kept as it is,
/// with a warning if others can reach into it.
fn create_private_dir(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                log::warn!(
                    "{} has mode {mode:o}; other users may read topic data (0700 recommended)",
                    dir.display()
                );
            }
            Ok(())
        }
        _ => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .at(dir),
    }
}

/// Opens `<data>/.lock` and takes an exclusive, non-blocking flock on it.
fn lock_data_dir(data_dir: &Path) -> Result<File> {
    let path = data_dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            // The first write to the data directory: say what it needs, not just the errno.
            Some(libc::EROFS | libc::EACCES | libc::EPERM) => EngineError::io(
                &path,
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "{e}: the data directory must be writable by this user; remount its \
                         file system read-write, fix its permissions, or choose another \
                         --data-dir"
                    ),
                ),
            ),
            _ => EngineError::io(&path, e),
        })?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(EngineError::DataDirLocked {
                path: data_dir.to_path_buf(),
                lock: path,
            });
        }
        return Err(EngineError::io(path, err));
    }
    // For a person wondering who holds the lock.
    file.set_len(0).at(&path)?;
    writeln!(file, "{}", std::process::id()).at(&path)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Every `FLUSH_CHECK_INTERVAL` until stopped: `flush_if_due` on every log.
fn run_flusher(shared: &Shared, stop: &StopSignal) {
    while !stop.wait(FLUSH_CHECK_INTERVAL) {
        let now = now_ms();
        for (topic, partition, log) in shared.all_logs() {
            match log.flush_if_due(now) {
                Ok(_) | Err(EngineError::Closed) => {}
                Err(e) => {
                    log::error!("periodic flush of partition {partition} of topic {topic:?}: {e}")
                }
            }
        }
    }
}

/// The background cleanup until stopped: every tick, removes `.deleted` files whose delay
/// passed; every `log.retention.check.interval.ms`, runs retention on every log; every
/// `log.cleaner.backoff.ms`, compacts the compacted logs whose dirty ratio asks for it. One log
/// at a time, so the other partitions never wait for it.
fn clean_periodically(shared: &Shared, stop: &StopSignal) {
    let settings = shared.settings;
    let tick_ms = CLEANER_TICK_MS
        .min(settings.cleaner_backoff_ms)
        .min(settings.retention_check_interval_ms)
        .max(10);
    let started = now_ms();
    let mut next_retention = started + settings.retention_check_interval_ms;
    let mut next_clean = started + settings.cleaner_backoff_ms;
    while !stop.wait(Duration::from_millis(tick_ms as u64)) {
        let now = now_ms();
        let retention_due = now >= next_retention;
        let clean_due = now >= next_clean;
        for (topic, partition, log) in shared.all_logs() {
            if stop.is_stopped() {
                return;
            }
            let report = |what: &str, e: EngineError| {
                if !matches!(e, EngineError::Closed) {
                    log::error!(
                        "background {what} of partition {partition} of topic {topic:?}: {e}"
                    );
                }
            };
            if let Err(e) = log.delete_expired_files(now) {
                report("removal of deleted segments", e);
            }
            if retention_due {
                if let Err(e) = log.run_retention(now_ms()) {
                    report("retention", e);
                }
            }
            if clean_due && log.config().cleanup_policy.compact {
                if let Err(e) = log.compact(now_ms(), false, &settings.cleaner) {
                    report("compaction", e);
                }
            }
        }
        if retention_due {
            next_retention = now_ms() + settings.retention_check_interval_ms;
        }
        if clean_due {
            next_clean = now_ms() + settings.cleaner_backoff_ms;
        }
    }
}

// The table's invariants hold between statements, so a panic elsewhere does not make it unusable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// How many partitions a shutdown closes at once. Closing a partition waits on a few fsyncs
/// (its active segment, its clean-shutdown marker and directory); done one after another that
/// is minutes for a thousand partitions on slow disks, while concurrent fsyncs share the
/// filesystem's journal commits.
const CLOSE_THREADS: usize = 16;

/// Closes every log, [`CLOSE_THREADS`] at a time; logs each failure and returns the first.
fn close_all(logs: &[(&str, usize, &Arc<Log>)]) -> Option<EngineError> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let first_error = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..CLOSE_THREADS.min(logs.len()) {
            scope.spawn(|| {
                while let Some((name, partition, log)) =
                    logs.get(next.fetch_add(1, Ordering::Relaxed))
                {
                    if let Err(e) = log.close() {
                        log::error!("closing partition {partition} of topic {name:?} failed: {e}");
                        lock(&first_error).get_or_insert(e);
                    }
                }
            });
        }
    });
    first_error.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_dir_names_parse_only_when_canonical() {
        assert_eq!(parse_partition_dir_name("orders-0"), Some(("orders", 0)));
        assert_eq!(parse_partition_dir_name("a-b-12"), Some(("a-b", 12)));
        assert_eq!(parse_partition_dir_name("orders-01"), None);
        assert_eq!(parse_partition_dir_name("orders-"), None);
        assert_eq!(parse_partition_dir_name("orders-+1"), None);
        assert_eq!(parse_partition_dir_name("-3"), None);
        assert_eq!(parse_partition_dir_name(".lmqfs-topics"), None);
        assert_eq!(parse_partition_dir_name("x-99999999999"), None);
    }

    #[test]
    fn longest_partition_dir_name_fits_a_file_name() {
        let name = format!("{}-{}", "t".repeat(MAX_TOPIC_NAME_LEN), MAX_PARTITIONS - 1);
        assert_eq!(name.len(), 255);
    }
}
