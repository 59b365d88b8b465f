//! A Kafka-protocol cluster behind the storage seam: the same files over Apache Kafka,
//! Redpanda or Tansu, through librdkafka (the `rdkafka` crate).
//!
//! Each call of [`Storage`] and [`Partition`] is one Kafka request (or a few):
//!
//! | call | request |
//! | --- | --- |
//! | `topics`, `partition_count` | Metadata (cached for [`ClusterOptions::metadata_max_age`]) |
//! | `create_topic` | CreateTopics (`replication.factor` from the mount, -1: the broker's default) |
//! | `delete_topic` | DeleteTopics |
//! | `create_partitions` | CreatePartitions |
//! | `describe_config`, `config` | DescribeConfigs (cached a few seconds) |
//! | `alter_config` | IncrementalAlterConfigs |
//! | `append` | Produce, `acks=all`, idempotent; returns once acknowledged |
//! | `fetch`, `read_record`, keys | Fetch, through the [batch cache](cache) |
//! | `log_start_offset`, `log_end_offset` | ListOffsets (earliest, latest), at most every few ms |
//! | `list_offsets` | ListOffsets (timestamp) |
//! | `delete_records` | DeleteRecords |
//! | `commit_offset`, `committed_offset` | OffsetCommit, OffsetFetch (no group membership) |
//! | `groups` | ListGroups, then OffsetFetch per group |
//!
//! What has no meaning on a cluster is refused with [`StorageError::Unsupported`]: `roll`,
//! `retention` and `compact` (the brokers roll, expire and compact on their own) and there
//! are no local `segments`. `flush` waits for outstanding produce acknowledgements; with
//! `acks=all` an acknowledged record is already on every in-sync replica.
//!
//! View generations: the cluster removes records below the log end only from the log start
//! (DeleteRecords, retention, compaction's removal is not seen as a start move). When a
//! refresh of the log start offset sees it move, the partition's generation goes up, so open
//! `log` views keep their byte positions (served from the cache while it has the records,
//! else `ESTALE`) and new opens start at the new log start.

mod cache;
mod client;
mod partition;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, ResourceSpecifier};
use rdkafka::admin::{TopicReplication, TopicResult};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

pub use cache::{encode_records, BatchCache, Chunk};
pub use client::ClientSettings;
use client::{kafka_error, lock, Failure, GroupConsumers, Producer, ReaderPool};
pub use partition::ClusterPartition;

use super::{AppendWatcher, LogConfig, Partition, Result, Storage, StorageError};
use crate::engine::LogManager;

/// How a mount uses its cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The clients' settings, starting with `--bootstrap-server`.
    pub client: ClientSettings,
    /// Partitions of a topic made by `mkdir` (`-o default.partitions`).
    pub default_partitions: u32,
    /// `replication.factor` of new topics; -1 lets the brokers choose
    /// (`default.replication.factor`).
    pub replication_factor: i32,
    /// Topic config every new topic gets (the mount's `-o key=value` topic keys).
    pub topic_defaults: Vec<(String, String)>,
    /// Memory for fetched batches, all partitions together.
    pub cache_bytes: usize,
    /// Readers (consumers) shared by all partitions.
    pub readers: usize,
    /// How old a partition's log start/end may be before a read asks the leader again.
    pub offsets_max_age: Duration,
    /// How old the topic list may be before a lookup asks the cluster again.
    pub metadata_max_age: Duration,
}

impl ClusterOptions {
    /// Defaults for a cluster at `bootstrap_servers` (`host:port[,host:port...]`).
    pub fn new(bootstrap_servers: &str) -> ClusterOptions {
        ClusterOptions {
            client: ClientSettings {
                bootstrap_servers: bootstrap_servers.to_string(),
                idempotence: true,
                request_timeout: Duration::from_secs(30),
                extra: Vec::new(),
            },
            default_partitions: 1,
            replication_factor: -1,
            topic_defaults: Vec::new(),
            cache_bytes: 256 * 1024 * 1024,
            readers: 4,
            offsets_max_age: Duration::from_millis(5),
            metadata_max_age: Duration::from_millis(500),
        }
    }
}

/// The topic list as last seen, with each topic's partition count.
struct TopicsView {
    fetched: Option<Instant>,
    topics: BTreeMap<String, u32>,
}

/// What every partition of the mount shares.
pub(crate) struct Shared {
    options: ClusterOptions,
    /// When the storage connected: the clock of [`ClusterPartition::last_used`].
    started: Instant,
    admin: AdminClient<DefaultClientContext>,
    producer: Producer,
    metadata: BaseConsumer,
    readers: ReaderPool,
    groups: GroupConsumers,
    cache: Mutex<BatchCache>,
    topics: Mutex<TopicsView>,
    configs: Mutex<HashMap<String, (Instant, LogConfig)>>,
    /// Told when other writers' records show up (see [`WATCHED_PARTITIONS`]).
    watcher: Mutex<Option<AppendWatcher>>,
    /// The partitions this mount opened, for the watcher (weak: `ClusterStorage` owns them).
    opened: Mutex<Vec<std::sync::Weak<ClusterPartition>>>,
}

/// How many of the most recently used partitions are watched for other writers' records.
const WATCHED_PARTITIONS: usize = 32;
/// How often watched partitions' log ends are asked for.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// How long a described topic config is used before it is asked for again.
const CONFIG_MAX_AGE: Duration = Duration::from_secs(5);
/// How long a create or delete waits for the cluster's metadata to show it.
const METADATA_PROPAGATION: Duration = Duration::from_secs(10);

/// A Kafka-protocol cluster as the mount's [`Storage`].
pub struct ClusterStorage {
    shared: Arc<Shared>,
    partitions: Mutex<HashMap<(String, u32), Arc<ClusterPartition>>>,
}

impl ClusterStorage {
    /// Connects to the cluster and checks that it answers (Metadata), so a wrong
    /// `--bootstrap-server` fails the mount instead of every later call.
    pub fn connect(options: ClusterOptions) -> Result<ClusterStorage> {
        let connect = |e: KafkaError| {
            kafka_error(
                Failure {
                    operation: "connect",
                    topic: None,
                    partition: None,
                },
                e,
            )
        };
        let settings = &options.client;
        let admin = settings.admin().map_err(connect)?;
        let producer = settings.producer().map_err(connect)?;
        let metadata = settings.metadata_consumer().map_err(connect)?;
        let shared = Shared {
            readers: ReaderPool::new(settings.clone(), options.readers),
            groups: GroupConsumers::new(settings.clone()),
            cache: Mutex::new(BatchCache::new(options.cache_bytes)),
            topics: Mutex::new(TopicsView {
                fetched: None,
                topics: BTreeMap::new(),
            }),
            configs: Mutex::new(HashMap::new()),
            watcher: Mutex::new(None),
            opened: Mutex::new(Vec::new()),
            started: Instant::now(),
            options,
            admin,
            producer,
            metadata,
        };
        let storage = ClusterStorage {
            shared: Arc::new(shared),
            partitions: Mutex::new(HashMap::new()),
        };
        storage.shared.refresh_topics()?;
        start_housekeeping(Arc::downgrade(&storage.shared));
        log::info!(
            "connected to the Kafka-protocol cluster at {}",
            storage.shared.options.client.bootstrap_servers
        );
        Ok(storage)
    }

    /// The `--bootstrap-server` list.
    pub fn bootstrap_servers(&self) -> &str {
        &self.shared.options.client.bootstrap_servers
    }

    /// Bytes of fetched batches cached now.
    pub fn cached_bytes(&self) -> usize {
        lock(&self.shared.cache).used_bytes()
    }
}

/// How long a reader may sit idle, still fetching ahead, before it is released. Short: a
/// reader left fetching a partition the cluster forgot (a broker restarted empty) has been
/// seen to crash librdkafka 2.12 on Tansu's answer; a sequential read asks again within
/// microseconds.
const READER_IDLE: Duration = Duration::from_millis(200);

/// For as long as the storage exists: releases idle readers, and once a watcher is registered,
/// asks the log ends of the [`WATCHED_PARTITIONS`] most recently used partitions every
/// [`WATCH_INTERVAL`] and tells the watcher where they grew (records from other writers).
fn start_housekeeping(shared: std::sync::Weak<Shared>) {
    let spawned = std::thread::Builder::new()
        .name("cluster-housekeeping".into())
        .spawn(move || {
            let mut last_watch = Instant::now();
            loop {
                std::thread::sleep(READER_IDLE / 2);
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.readers.release_idle(READER_IDLE);
                if last_watch.elapsed() >= WATCH_INTERVAL {
                    shared.watch_once();
                    last_watch = Instant::now();
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("no housekeeping thread ({e}): idle readers keep fetching");
    }
}

impl Shared {
    /// One round of watching for other writers' records.
    fn watch_once(&self) {
        let Some(watcher) = lock(&self.watcher).clone() else {
            return;
        };
        let mut partitions: Vec<Arc<ClusterPartition>> = {
            let mut opened = lock(&self.opened);
            opened.retain(|w| w.strong_count() > 0);
            opened.iter().filter_map(|w| w.upgrade()).collect()
        };
        partitions.sort_by_key(|p| std::cmp::Reverse(p.last_used()));
        partitions.truncate(WATCHED_PARTITIONS);
        for p in partitions {
            if p.grew_since_last_watch() {
                watcher(p.topic(), p.partition_id());
            }
        }
    }
}

/// Runs an admin future to completion on the calling thread.
fn wait<F: std::future::Future>(future: F) -> F::Output {
    futures_executor::block_on(future)
}

impl Shared {
    fn admin_options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.options.client.request_timeout))
            .operation_timeout(Some(self.options.client.request_timeout))
    }

    /// Asks the cluster for every topic and its partition count.
    fn refresh_topics(&self) -> Result<BTreeMap<String, u32>> {
        let metadata = self
            .metadata
            .fetch_metadata(None, self.options.client.request_timeout)
            .map_err(|e| {
                kafka_error(
                    Failure {
                        operation: "Metadata",
                        topic: None,
                        partition: None,
                    },
                    e,
                )
            })?;
        let topics: BTreeMap<String, u32> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !is_internal(t.name()))
            .map(|t| (t.name().to_string(), t.partitions().len() as u32))
            .collect();
        let mut view = lock(&self.topics);
        view.fetched = Some(Instant::now());
        view.topics = topics.clone();
        Ok(topics)
    }

    /// The topic list, asked again when older than `metadata_max_age`.
    fn topics(&self) -> Result<BTreeMap<String, u32>> {
        {
            let view = lock(&self.topics);
            if view
                .fetched
                .is_some_and(|t| t.elapsed() < self.options.metadata_max_age)
            {
                return Ok(view.topics.clone());
            }
        }
        self.refresh_topics()
    }

    /// The partition count of `topic`; an unknown topic is looked up again before it is
    /// refused (another mount may have just made it).
    fn partition_count(&self, topic: &str) -> Result<u32> {
        if let Some(&n) = self.topics()?.get(topic) {
            return Ok(n);
        }
        self.refresh_topics()?
            .get(topic)
            .copied()
            .ok_or_else(|| StorageError::UnknownTopic(topic.to_string()))
    }

    /// Waits until the metadata shows `topic` with `partitions` (`None`: without `topic`).
    fn await_metadata(&self, topic: &str, partitions: Option<u32>) -> Result<()> {
        let deadline = Instant::now() + METADATA_PROPAGATION;
        loop {
            let seen = self.refresh_topics()?.get(topic).copied();
            match (partitions, seen) {
                (None, None) => return Ok(()),
                (Some(want), Some(n)) if n >= want => return Ok(()),
                _ if Instant::now() >= deadline => {
                    return Err(StorageError::Cluster {
                        operation: "Metadata".into(),
                        target: topic.to_string(),
                        retriable: true,
                        reason: format!(
                            "the cluster's metadata did not show the change within {:?}",
                            METADATA_PROPAGATION
                        ),
                    })
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn describe_config(&self, topic: &str) -> Result<LogConfig> {
        let failure = || Failure {
            operation: "DescribeConfigs",
            topic: Some(topic),
            partition: None,
        };
        let results = wait(
            self.admin
                .describe_configs(&[ResourceSpecifier::Topic(topic)], &self.admin_options()),
        )
        .map_err(|e| kafka_error(failure(), e))?;
        let resource = results
            .into_iter()
            .next()
            .ok_or_else(|| StorageError::UnknownTopic(topic.to_string()))?
            .map_err(|code| kafka_error(failure(), KafkaError::AdminOp(code)))?;
        let mut config = LogConfig::default();
        for entry in &resource.entries {
            let Some(value) = &entry.value else { continue };
            if !LogConfig::KEYS.contains(&entry.name.as_str()) {
                continue;
            }
            // Values this mount cannot represent (`compression.type=producer`) keep the
            // default; the cluster applies its own.
            if let Err(e) = config.set(&entry.name, value) {
                log::debug!("config of {topic} as the cluster has it: {e}");
            }
        }
        lock(&self.configs).insert(topic.to_string(), (Instant::now(), config.clone()));
        Ok(config)
    }

    /// The topic's config, described again when older than [`CONFIG_MAX_AGE`].
    fn config(&self, topic: &str) -> Result<LogConfig> {
        if let Some((at, config)) = lock(&self.configs).get(topic) {
            if at.elapsed() < CONFIG_MAX_AGE {
                return Ok(config.clone());
            }
        }
        self.describe_config(topic)
    }
}

/// Topics the cluster keeps for itself (`__consumer_offsets`, `__transaction_state`).
fn is_internal(topic: &str) -> bool {
    topic.starts_with("__")
}

/// The first error of a CreateTopics / DeleteTopics / CreatePartitions answer.
fn topic_results(operation: &str, results: Vec<TopicResult>) -> Result<()> {
    for result in results {
        if let Err((topic, code)) = result {
            return Err(kafka_error(
                Failure {
                    operation,
                    topic: Some(&topic),
                    partition: None,
                },
                KafkaError::AdminOp(code),
            ));
        }
    }
    Ok(())
}

impl Storage for ClusterStorage {
    fn topics(&self) -> Vec<String> {
        match self.shared.topics() {
            Ok(topics) => topics.into_keys().collect(),
            // Already logged; the last list seen is the best answer a listing can give.
            Err(_) => lock(&self.shared.topics).topics.keys().cloned().collect(),
        }
    }

    fn validate_topic_name(&self, name: &str) -> Result<()> {
        LogManager::validate_topic_name(name)
    }

    fn create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        overrides: &[(String, String)],
    ) -> Result<()> {
        LogManager::validate_topic_name(name)?;
        let count = partitions.unwrap_or(self.shared.options.default_partitions);
        if count == 0 || count > i32::MAX as u32 {
            return Err(StorageError::InvalidArgument(format!(
                "a topic needs 1 to {} partitions, not {count}",
                i32::MAX
            )));
        }
        // The mount's defaults, then this topic's own keys; checked here so a bad value is
        // refused with the same message as on the embedded engine.
        let mut config: Vec<(String, String)> = self.shared.options.topic_defaults.clone();
        config.extend(overrides.iter().cloned());
        LogConfig::default().apply(&config)?;
        let mut by_key: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, v) in &config {
            by_key.insert(k, v);
        }
        let mut topic = NewTopic::new(
            name,
            count as i32,
            TopicReplication::Fixed(self.shared.options.replication_factor),
        );
        for (k, v) in &by_key {
            topic = topic.set(k, v);
        }
        let results = wait(
            self.shared
                .admin
                .create_topics(&[topic], &self.shared.admin_options()),
        )
        .map_err(|e| {
            kafka_error(
                Failure {
                    operation: "CreateTopics",
                    topic: Some(name),
                    partition: None,
                },
                e,
            )
        })?;
        topic_results("CreateTopics", results)?;
        self.shared.await_metadata(name, Some(count))?;
        log::info!("created topic {name} with {count} partitions on the cluster");
        Ok(())
    }

    fn delete_topic(&self, name: &str) -> Result<()> {
        self.shared.partition_count(name)?;
        let results = wait(
            self.shared
                .admin
                .delete_topics(&[name], &self.shared.admin_options()),
        )
        .map_err(|e| {
            kafka_error(
                Failure {
                    operation: "DeleteTopics",
                    topic: Some(name),
                    partition: None,
                },
                e,
            )
        })?;
        topic_results("DeleteTopics", results)?;
        lock(&self.partitions).retain(|(t, _), _| t != name);
        lock(&self.shared.cache).forget_topic(name);
        lock(&self.shared.configs).remove(name);
        self.shared.await_metadata(name, None)?;
        log::info!("deleted topic {name} on the cluster");
        Ok(())
    }

    fn partition_count(&self, topic: &str) -> Result<u32> {
        self.shared.partition_count(topic)
    }

    fn create_partitions(&self, topic: &str, count: u32) -> Result<()> {
        let current = self.shared.partition_count(topic)?;
        if count < current {
            return Err(StorageError::PartitionCountDecrease {
                topic: topic.to_string(),
                current,
                requested: count,
            });
        }
        if count == current {
            return Ok(());
        }
        let new = NewPartitions::new(topic, count as usize);
        let results = wait(
            self.shared
                .admin
                .create_partitions(&[new], &self.shared.admin_options()),
        )
        .map_err(|e| {
            kafka_error(
                Failure {
                    operation: "CreatePartitions",
                    topic: Some(topic),
                    partition: None,
                },
                e,
            )
        })?;
        topic_results("CreatePartitions", results)?;
        self.shared.await_metadata(topic, Some(count))
    }

    fn describe_config(&self, topic: &str) -> Result<LogConfig> {
        self.shared.partition_count(topic)?;
        self.shared.describe_config(topic)
    }

    fn alter_config(&self, topic: &str, pairs: &[(String, String)]) -> Result<()> {
        // All pairs are checked before any is sent, as on the embedded engine.
        self.shared.describe_config(topic)?.apply(pairs)?;
        client::incremental_alter_topic_config(
            &self.shared.admin,
            topic,
            pairs,
            self.shared.options.client.request_timeout,
        )
        .map_err(|e| {
            kafka_error(
                Failure {
                    operation: "IncrementalAlterConfigs",
                    topic: Some(topic),
                    partition: None,
                },
                e,
            )
        })?;
        lock(&self.shared.configs).remove(topic);
        Ok(())
    }

    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<dyn Partition>> {
        let key = (topic.to_string(), partition);
        if let Some(p) = lock(&self.partitions).get(&key) {
            return Ok(p.clone());
        }
        let count = self.shared.partition_count(topic)?;
        if partition >= count {
            return Err(StorageError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            });
        }
        let p = lock(&self.partitions)
            .entry(key)
            .or_insert_with(|| {
                let p = Arc::new(ClusterPartition::new(
                    self.shared.clone(),
                    topic.to_string(),
                    partition,
                ));
                lock(&self.shared.opened).push(Arc::downgrade(&p));
                p
            })
            .clone();
        Ok(p)
    }

    fn watch_appends(&self, watcher: AppendWatcher) {
        *lock(&self.shared.watcher) = Some(watcher);
    }

    fn flush_all(&self) -> Result<()> {
        self.shared.producer.flush().map_err(|e| {
            kafka_error(
                Failure {
                    operation: "flush",
                    topic: None,
                    partition: None,
                },
                e,
            )
        })
    }
}

impl Shared {
    /// Where a partition lives, for log lines.
    fn location(&self, topic: &str, partition: u32) -> PathBuf {
        PathBuf::from(format!(
            "{topic}-{partition}@{}",
            self.options.client.bootstrap_servers
        ))
    }
}
