//! The Kafka client under the cluster backend: librdkafka through the `rdkafka` crate.
//!
//! One mount holds a few client instances, each with its own connections and threads:
//! - an admin client (CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
//!   IncrementalAlterConfigs, DeleteRecords);
//! - a producer (`acks=all`, idempotent unless the mount turns it off), whose delivery reports
//!   carry the offsets each record got;
//! - a metadata consumer without a group (Metadata, ListOffsets for log start/end and times);
//! - a small pool of readers ([`ReaderPool`]): consumers without a group, each assigned to one
//!   partition at a time, so a sequential reader of a partition keeps its reader and with it
//!   the records librdkafka prefetched;
//! - one consumer per consumer group that commits or asks for offsets (OffsetCommit,
//!   OffsetFetch), created on first use.
//!
//! librdkafka retries what Kafka's protocol lets a client retry (produce with idempotence,
//! metadata, fetch after a leader change); what still fails reaches the caller as a
//! [`StorageError`] made by [`kafka_error`], logged there.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rdsys;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use crate::storage::StorageError;

/// Locks a mutex whose data stays consistent even if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a broker or client error may go away by itself (a retry, later, can succeed).
pub fn is_retriable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::OperationTimedOut
            | C::MessageTimedOut
            | C::RequestTimedOut
            | C::TimedOutQueue
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::NetworkException
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::CoordinatorLoadInProgress
            | C::CoordinatorNotAvailable
            | C::NotCoordinator
            | C::WaitingForCoordinator
            | C::Resolve
            | C::Retry
            | C::FencedLeaderEpoch
            | C::UnknownLeaderEpoch
            | C::PreferredLeaderNotAvailable
            | C::ThrottlingQuotaExceeded
            | C::ReassignmentInProgress
    )
}

/// What went wrong talking to the cluster, for [`kafka_error`].
pub struct Failure<'a> {
    /// The Kafka request or client call (`Produce`, `Fetch`, `CreateTopics`, ...).
    pub operation: &'a str,
    /// The topic, when there is one.
    pub topic: Option<&'a str>,
    /// The partition, when there is one.
    pub partition: Option<u32>,
}

impl Failure<'_> {
    fn target(&self) -> String {
        match (self.topic, self.partition) {
            (Some(t), Some(p)) => format!("{t}-{p}"),
            (Some(t), None) => t.to_string(),
            _ => "the cluster".to_string(),
        }
    }
}

/// The storage error for a Kafka client error, logged with what was being done.
///
/// Broker answers that name a file-level condition keep it (unknown topic, topic exists,
/// record too large, invalid arguments, unsupported); connection loss, time-outs and leader
/// changes that outlasted the client's own retries become [`StorageError::Cluster`] with
/// `retriable` set; anything else is a [`StorageError::Cluster`] that is not.
pub fn kafka_error(failure: Failure<'_>, error: KafkaError) -> StorageError {
    use RDKafkaErrorCode as C;
    let target = failure.target();
    let Some(code) = error_code(&error) else {
        log::error!("{} on {target}: {error}", failure.operation);
        return cluster(&failure, &target, false, error.to_string());
    };
    let mapped = match code {
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownTopicId => {
            match (failure.topic, failure.partition) {
                (Some(topic), Some(partition)) => StorageError::UnknownPartition {
                    topic: topic.to_string(),
                    partition,
                },
                (Some(topic), None) => StorageError::UnknownTopic(topic.to_string()),
                _ => cluster(&failure, &target, false, error.to_string()),
            }
        }
        C::TopicAlreadyExists => {
            StorageError::TopicExists(failure.topic.unwrap_or_default().to_string())
        }
        C::MessageSizeTooLarge => StorageError::InvalidArgument(format!(
            "{}: the broker refused the batch for {target} as larger than its \
             max.message.bytes",
            failure.operation
        )),
        C::InvalidTopic => StorageError::InvalidTopicName {
            name: failure.topic.unwrap_or_default().to_string(),
            reason: format!("the cluster refused it: {error}"),
        },
        C::InvalidPartitions
        | C::InvalidReplicationFactor
        | C::InvalidConfig
        | C::InvalidRequest
        | C::PolicyViolation
        | C::InvalidArgument
        | C::TopicDeletionDisabled
        | C::UnsupportedCompressionType => StorageError::InvalidArgument(format!(
            "{} on {target}: the cluster refused it: {error}",
            failure.operation
        )),
        C::UnsupportedVersion | C::UnsupportedFeature | C::UnsupportedForMessageFormat => {
            StorageError::Unsupported(format!(
                "{} on {target}: the cluster does not support it ({error})",
                failure.operation
            ))
        }
        code => cluster(&failure, &target, is_retriable(code), error.to_string()),
    };
    match &mapped {
        StorageError::Cluster {
            retriable: true, ..
        } => log::warn!(
            "{} on {target}: {error} (may succeed later)",
            failure.operation
        ),
        StorageError::Cluster { .. } => log::error!("{} on {target}: {error}", failure.operation),
        other => log::info!("{} on {target}: {other}", failure.operation),
    }
    mapped
}

/// The error code of a client error, admin results included (which `rdkafka` leaves out).
pub fn error_code(error: &KafkaError) -> Option<RDKafkaErrorCode> {
    match error {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    }
}

fn cluster(failure: &Failure<'_>, target: &str, retriable: bool, reason: String) -> StorageError {
    StorageError::Cluster {
        operation: failure.operation.to_string(),
        target: target.to_string(),
        retriable,
        reason,
    }
}

/// How a mount talks to its cluster: the `--bootstrap-server` list and client settings.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// `enable.idempotence` of the producer (on unless the cluster lacks InitProducerId).
    pub idempotence: bool,
    /// How long one request may take, including the client's retries.
    pub request_timeout: Duration,
    /// Further librdkafka properties for every client (`-o kafka.<property>=<value>`).
    pub extra: Vec<(String, String)>,
}

impl ClientSettings {
    fn base(&self, role: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", format!("lmqfs-{role}"))
            .set("socket.keepalive.enable", "true")
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "1000")
            .set("topic.metadata.refresh.interval.ms", "10000");
        for (key, value) in &self.extra {
            config.set(key, value);
        }
        config
    }

    fn timeout_ms(&self) -> String {
        self.request_timeout.as_millis().to_string()
    }

    /// The admin client.
    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
        self.base("admin").create()
    }

    /// A producer client, `acks=all`; records of one `produce` call go out together (see
    /// [`Producer`]).
    fn producer_client(&self) -> Result<ThreadedProducer<DeliveryContext>, KafkaError> {
        let mut config = self.base("producer");
        config
            .set("acks", "all")
            .set(
                "enable.idempotence",
                if self.idempotence { "true" } else { "false" },
            )
            // Records wait until `flush`, so one write's records travel in one batch.
            .set("linger.ms", "1000")
            .set("batch.size", "67108864")
            .set("batch.num.messages", "1000000")
            .set("message.max.bytes", "100000000")
            .set("message.timeout.ms", self.timeout_ms())
            .set(
                "request.timeout.ms",
                self.request_timeout.as_millis().min(30_000).to_string(),
            )
            .set("compression.type", "none")
            .set("allow.auto.create.topics", "false");
        config.create_with_context(DeliveryContext)
    }

    /// The mount's producer.
    pub fn producer(&self) -> Result<Producer, KafkaError> {
        Ok(Producer {
            inner: Mutex::new(self.producer_client()?),
            settings: self.clone(),
            timeout: self.request_timeout,
        })
    }

    /// A consumer without a group, for metadata and offsets.
    pub fn metadata_consumer(&self) -> Result<BaseConsumer, KafkaError> {
        self.base("metadata")
            .set("enable.auto.commit", "false")
            .set("allow.auto.create.topics", "false")
            .create()
    }

    /// A consumer without a group, for reading records.
    fn reader(&self, id: usize) -> Result<BaseConsumer, KafkaError> {
        // librdkafka assigns partitions only to a consumer with a group; this one never
        // joins it or commits, the group id only names the readers in the brokers' logs.
        self.base(&format!("reader-{id}"))
            .set("group.id", "lmqfs-readers")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("isolation.level", "read_uncommitted")
            .set("allow.auto.create.topics", "false")
            .set("fetch.wait.max.ms", "100")
            // Prefetch up to 32 MiB per reader, by bytes, and fetch again as soon as the
            // queue has room (librdkafka's defaults back off a whole second).
            .set("queued.max.messages.kbytes", "32768")
            .set("queued.min.messages", "10000000")
            .set("fetch.queue.backoff.ms", "5")
            .create()
    }

    /// A consumer of `group` that never joins it: it commits and fetches offsets only.
    pub fn group_consumer(&self, group: &str) -> Result<BaseConsumer, KafkaError> {
        self.base("groups")
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("allow.auto.create.topics", "false")
            .create()
    }
}

/// Where a record went: its offset and the timestamp the broker stored.
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    pub offset: i64,
    pub timestamp: i64,
}

/// The delivery reports of one `produce` call, filled in by librdkafka's thread.
pub struct PendingWrite {
    state: Mutex<Vec<Option<Result<Delivered, KafkaError>>>>,
    done: Condvar,
}

/// Routes delivery reports to the [`PendingWrite`] of their record.
pub struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<(Arc<PendingWrite>, usize)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (pending, index) = *opaque;
        let outcome = match result {
            Ok(message) => Ok(Delivered {
                offset: message.offset(),
                timestamp: message.timestamp().to_millis().unwrap_or(-1),
            }),
            Err((error, _)) => Err(error.clone()),
        };
        let mut state = lock(&pending.state);
        state[index] = Some(outcome);
        if state.iter().all(Option::is_some) {
            pending.done.notify_all();
        }
    }
}

/// A record to produce, borrowed from the caller.
pub struct OutgoingRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
    pub timestamp: Option<i64>,
}

/// The mount's producer.
///
/// One write's records must reach the broker as one batch, so readers see all of them or
/// none: the client lingers (records wait), and each `produce` call enqueues its records and
/// then flushes, holding `inner`'s lock, so no other call's flush can send half of them.
/// Writes are therefore serialized per mount.
///
/// A write that fails for a reason that may pass (time-out, lost connection, a broker that
/// restarted and forgot the producer id) drops what is left of it and replaces the client:
/// an idempotent producer whose sequence the cluster lost does not recover by itself, and a
/// new one starts with a fresh producer id.
pub struct Producer {
    /// The client; its lock also orders writes.
    inner: Mutex<ThreadedProducer<DeliveryContext>>,
    settings: ClientSettings,
    timeout: Duration,
}

impl Producer {
    /// Produces `records` to `topic`/`partition` and waits for every acknowledgement
    /// (`acks=all`). The outcome of each record, in order.
    pub fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: &[OutgoingRecord<'_>],
    ) -> Result<Vec<Delivered>, KafkaError> {
        let pending = Arc::new(PendingWrite {
            state: Mutex::new(vec![None; records.len()]),
            done: Condvar::new(),
        });
        let mut inner = lock(&self.inner);
        for (index, record) in records.iter().enumerate() {
            let mut base = rdkafka::producer::BaseRecord::<[u8], [u8], _>::with_opaque_to(
                topic,
                Box::new((pending.clone(), index)),
            )
            .partition(partition);
            if let Some(key) = record.key {
                base = base.key(key);
            }
            if let Some(value) = record.value {
                base = base.payload(value);
            }
            if let Some(ts) = record.timestamp {
                base = base.timestamp(ts);
            }
            if !record.headers.is_empty() {
                let mut headers = rdkafka::message::OwnedHeaders::new();
                for (key, value) in &record.headers {
                    headers = headers.insert(rdkafka::message::Header { key, value: *value });
                }
                base = base.headers(headers);
            }
            if let Err((error, _)) = inner.send(base) {
                self.abandon(&mut inner, &error);
                return Err(error);
            }
        }
        if let Err(error) = flush(&inner, self.timeout) {
            self.abandon(&mut inner, &error);
            return Err(error);
        }
        // Flushed: every delivery report has been served.
        let outcomes: Vec<Result<Delivered, KafkaError>> = lock(&pending.state)
            .iter_mut()
            .map(|o| {
                o.take().unwrap_or(Err(KafkaError::MessageProduction(
                    RDKafkaErrorCode::MessageTimedOut,
                )))
            })
            .collect();
        if let Some(Err(error)) = outcomes.iter().find(|o| o.is_err()) {
            let error = error.clone();
            self.abandon(&mut inner, &error);
            return Err(error);
        }
        Ok(outcomes.into_iter().map(|o| o.expect("no error")).collect())
    }

    /// Drops the records of a failed write that are still queued or in flight, so none of
    /// them is sent after the caller was told the write failed (writes are serialized, so
    /// these are the failed write's records only), and replaces the client after a failure
    /// that may pass. A record already in flight may still have reached the broker: the
    /// failure then means "not known to be written".
    fn abandon(&self, inner: &mut ThreadedProducer<DeliveryContext>, error: &KafkaError) {
        inner.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        // Serves the delivery reports of the purged records.
        let _ = flush(inner, Duration::from_millis(100));
        let passing = error_code(error).is_none_or(is_retriable);
        if passing || inner.client().fatal_error().is_some() {
            match self.settings.producer_client() {
                Ok(fresh) => {
                    log::info!("replaced the producer after a failed write ({error})");
                    *inner = fresh;
                }
                Err(e) => log::warn!("could not replace the producer after {error}: {e}"),
            }
        }
    }

    /// Waits until everything produced so far is acknowledged.
    pub fn flush(&self) -> Result<(), KafkaError> {
        flush(&lock(&self.inner), self.timeout)
    }
}

/// librdkafka's flush: sends what lingers now (the linger time counts as over while this
/// waits) and returns as soon as no record is outstanding, the producer's own thread serving
/// the delivery reports. (The `rdkafka` crate's `flush` polls in 100 ms steps, which would add
/// up to 100 ms to every write.)
fn flush(
    producer: &ThreadedProducer<DeliveryContext>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the handle is valid while `producer` is borrowed; rd_kafka_flush is thread-safe.
    let code = unsafe { rdsys::rd_kafka_flush(producer.client().native_ptr(), timeout_ms) };
    match RDKafkaErrorCode::from(code) {
        RDKafkaErrorCode::NoError => Ok(()),
        code => Err(KafkaError::Flush(code)),
    }
}

/// A reader: a group-less consumer assigned to at most one partition, and where it stands.
pub struct Reader {
    pub consumer: BaseConsumer,
    /// The assigned partition and the offset its next record has at least.
    pub position: Option<(String, u32, i64)>,
    last_used: Instant,
}

impl Reader {
    /// Points the reader at `offset` of `topic`/`partition`, unless it already stands there
    /// (then the records librdkafka prefetched are used).
    pub fn seek(&mut self, topic: &str, partition: u32, offset: i64) -> Result<(), KafkaError> {
        if let Some((t, p, o)) = &self.position {
            if t == topic && *p == partition && *o == offset {
                return Ok(());
            }
        }
        self.position = None;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(offset))?;
        self.consumer.assign(&tpl)?;
        self.position = Some((topic.to_string(), partition, offset));
        Ok(())
    }

    /// Stops fetching: forgets the partition and what was prefetched.
    fn release(&mut self) {
        if self.position.take().is_some() {
            if let Err(e) = self.consumer.unassign() {
                log::debug!("releasing an idle reader: {e}");
            }
        }
    }
}

/// Up to `max` readers, shared by every partition of the mount.
pub struct ReaderPool {
    settings: ClientSettings,
    max: usize,
    state: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    idle: Vec<Reader>,
    created: usize,
}

/// A reader taken from the pool; it goes back when dropped.
pub struct ReaderGuard<'a> {
    pool: &'a ReaderPool,
    reader: Option<Reader>,
}

impl std::ops::Deref for ReaderGuard<'_> {
    type Target = Reader;
    fn deref(&self) -> &Reader {
        self.reader.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for ReaderGuard<'_> {
    fn deref_mut(&mut self) -> &mut Reader {
        self.reader.as_mut().expect("present until dropped")
    }
}

impl Drop for ReaderGuard<'_> {
    fn drop(&mut self) {
        if let Some(mut reader) = self.reader.take() {
            reader.last_used = Instant::now();
            lock(&self.pool.state).idle.push(reader);
            self.pool.returned.notify_one();
        }
    }
}

impl ReaderPool {
    /// A pool of at most `max` readers, created as needed.
    pub fn new(settings: ClientSettings, max: usize) -> ReaderPool {
        ReaderPool {
            settings,
            max: max.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                created: 0,
            }),
            returned: Condvar::new(),
        }
    }

    /// A reader for `offset` of `topic`/`partition`: the idle one that stands exactly there,
    /// else a new one while fewer than `max` exist, else the least recently used idle one.
    pub fn take(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
    ) -> Result<ReaderGuard<'_>, KafkaError> {
        let mut state = lock(&self.state);
        loop {
            if let Some(i) = state.idle.iter().position(|r| {
                r.position
                    .as_ref()
                    .is_some_and(|(t, p, o)| t == topic && *p == partition && *o == offset)
            }) {
                let reader = state.idle.swap_remove(i);
                return Ok(self.guard(reader));
            }
            if state.created < self.max {
                let id = state.created;
                state.created += 1;
                drop(state);
                return match self.settings.reader(id) {
                    Ok(consumer) => Ok(self.guard(Reader {
                        consumer,
                        position: None,
                        last_used: Instant::now(),
                    })),
                    Err(e) => {
                        lock(&self.state).created -= 1;
                        Err(e)
                    }
                };
            }
            if let Some(i) = (0..state.idle.len()).min_by_key(|&i| state.idle[i].last_used) {
                let reader = state.idle.swap_remove(i);
                return Ok(self.guard(reader));
            }
            state = self.returned.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Releases the readers idle for `idle` or longer, so an idle mount sends the brokers no
    /// fetches. (A reader in use, or used moments ago by a sequential read, keeps what it
    /// prefetched.)
    pub fn release_idle(&self, idle: Duration) {
        let mut state = lock(&self.state);
        for reader in state.idle.iter_mut() {
            if reader.last_used.elapsed() >= idle {
                reader.release();
            }
        }
    }

    fn guard(&self, reader: Reader) -> ReaderGuard<'_> {
        ReaderGuard {
            pool: self,
            reader: Some(reader),
        }
    }
}

/// Consumers of consumer groups, one per group, created on first use.
pub struct GroupConsumers {
    settings: ClientSettings,
    consumers: Mutex<HashMap<String, Arc<BaseConsumer>>>,
}

impl GroupConsumers {
    pub fn new(settings: ClientSettings) -> GroupConsumers {
        GroupConsumers {
            settings,
            consumers: Mutex::new(HashMap::new()),
        }
    }

    /// The consumer of `group`.
    pub fn get(&self, group: &str) -> Result<Arc<BaseConsumer>, KafkaError> {
        let mut consumers = lock(&self.consumers);
        if let Some(c) = consumers.get(group) {
            return Ok(c.clone());
        }
        let consumer = Arc::new(self.settings.group_consumer(group)?);
        consumers.insert(group.to_string(), consumer.clone());
        Ok(consumer)
    }
}

/// IncrementalAlterConfigs (KIP-339) of one topic: sets each pair, leaving other keys alone.
///
/// The `rdkafka` crate wraps only the older AlterConfigs, which replaces a topic's whole
/// dynamic config (and which some Kafka-protocol brokers lack), so this calls librdkafka's
/// `rd_kafka_IncrementalAlterConfigs` directly, on the admin client's handle and a queue of
/// its own.
pub fn incremental_alter_topic_config(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    pairs: &[(String, String)],
    timeout: Duration,
) -> Result<(), KafkaError> {
    let name = CString::new(topic).map_err(|_| invalid_arg())?;
    let pairs: Vec<(CString, CString)> = pairs
        .iter()
        .map(|(k, v)| Ok((CString::new(k.as_str())?, CString::new(v.as_str())?)))
        .collect::<Result<_, std::ffi::NulError>>()
        .map_err(|_| invalid_arg())?;
    let rk = admin.inner().native_ptr();
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: every pointer passed to librdkafka comes from the matching librdkafka
    // constructor just above its use and is destroyed exactly once below; `rk` outlives the
    // call because `admin` is borrowed for all of it; the strings outlive the calls that read
    // them (librdkafka copies them).
    unsafe {
        let resource = rdsys::rd_kafka_ConfigResource_new(
            rdsys::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
            name.as_ptr(),
        );
        for (key, value) in &pairs {
            let error = rdsys::rd_kafka_ConfigResource_add_incremental_config(
                resource,
                key.as_ptr(),
                rdsys::rd_kafka_AlterConfigOpType_t::RD_KAFKA_ALTER_CONFIG_OP_TYPE_SET,
                value.as_ptr(),
            );
            if !error.is_null() {
                let message = CStr::from_ptr(rdsys::rd_kafka_error_string(error))
                    .to_string_lossy()
                    .into_owned();
                rdsys::rd_kafka_error_destroy(error);
                rdsys::rd_kafka_ConfigResource_destroy(resource);
                log::info!("IncrementalAlterConfigs of {topic}: {message}");
                return Err(invalid_arg());
            }
        }
        let options = rdsys::rd_kafka_AdminOptions_new(
            rk,
            rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_INCREMENTALALTERCONFIGS,
        );
        let mut errstr = [0 as std::ffi::c_char; 256];
        rdsys::rd_kafka_AdminOptions_set_request_timeout(
            options,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let queue = rdsys::rd_kafka_queue_new(rk);
        let mut resources = [resource];
        rdsys::rd_kafka_IncrementalAlterConfigs(rk, resources.as_mut_ptr(), 1, options, queue);
        let event = rdsys::rd_kafka_queue_poll(queue, timeout_ms.saturating_add(1000));
        let outcome = if event.is_null() {
            Err(KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut))
        } else {
            let code = RDKafkaErrorCode::from(rdsys::rd_kafka_event_error(event));
            let outcome = if code != RDKafkaErrorCode::NoError {
                Err(KafkaError::AdminOp(code))
            } else {
                let result = rdsys::rd_kafka_event_IncrementalAlterConfigs_result(event);
                let mut count = 0usize;
                let results =
                    rdsys::rd_kafka_IncrementalAlterConfigs_result_resources(result, &mut count);
                let mut outcome = Ok(());
                for i in 0..count {
                    let r = *results.add(i);
                    let code = RDKafkaErrorCode::from(rdsys::rd_kafka_ConfigResource_error(r));
                    if code != RDKafkaErrorCode::NoError {
                        let text = rdsys::rd_kafka_ConfigResource_error_string(r);
                        if !text.is_null() {
                            log::info!(
                                "IncrementalAlterConfigs of {topic}: {}",
                                CStr::from_ptr(text).to_string_lossy()
                            );
                        }
                        outcome = Err(KafkaError::AdminOp(code));
                    }
                }
                outcome
            };
            rdsys::rd_kafka_event_destroy(event);
            outcome
        };
        rdsys::rd_kafka_queue_destroy(queue);
        rdsys::rd_kafka_AdminOptions_destroy(options);
        rdsys::rd_kafka_ConfigResource_destroy(resource);
        outcome
    }
}

fn invalid_arg() -> KafkaError {
    KafkaError::AdminOp(RDKafkaErrorCode::InvalidArgument)
}

/// A message as the storage seam's record.
pub fn to_record(message: &impl Message) -> crate::storage::Record {
    use crate::storage::{Header, Record, TimestampType};
    use rdkafka::message::Headers;
    let (timestamp, timestamp_type) = match message.timestamp() {
        rdkafka::Timestamp::CreateTime(t) => (t, TimestampType::CreateTime),
        rdkafka::Timestamp::LogAppendTime(t) => (t, TimestampType::LogAppendTime),
        rdkafka::Timestamp::NotAvailable => (-1, TimestampType::CreateTime),
    };
    let headers = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| Header {
                    key: h.key.to_string(),
                    value: h.value.map(<[u8]>::to_vec),
                })
                .collect()
        })
        .unwrap_or_default();
    Record {
        offset: message.offset(),
        timestamp,
        timestamp_type,
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(
        operation: &'static str,
        topic: Option<&'static str>,
        partition: Option<u32>,
    ) -> Failure<'static> {
        Failure {
            operation,
            topic,
            partition,
        }
    }

    #[test]
    fn broker_answers_keep_their_file_level_meaning() {
        use RDKafkaErrorCode as C;
        let e = kafka_error(
            on("Metadata", Some("t"), None),
            KafkaError::MetadataFetch(C::UnknownTopicOrPartition),
        );
        assert!(matches!(e, StorageError::UnknownTopic(t) if t == "t"));
        let e = kafka_error(
            on("Fetch", Some("t"), Some(3)),
            KafkaError::MessageConsumption(C::UnknownTopicOrPartition),
        );
        assert!(matches!(
            e,
            StorageError::UnknownPartition { partition: 3, .. }
        ));
        let e = kafka_error(
            on("CreateTopics", Some("t"), None),
            KafkaError::AdminOp(C::TopicAlreadyExists),
        );
        assert!(matches!(e, StorageError::TopicExists(t) if t == "t"));
        let e = kafka_error(
            on("CreatePartitions", Some("t"), None),
            KafkaError::AdminOp(C::UnsupportedFeature),
        );
        assert!(matches!(e, StorageError::Unsupported(_)));
        let e = kafka_error(
            on("IncrementalAlterConfigs", Some("t"), None),
            KafkaError::AdminOp(C::InvalidConfig),
        );
        assert!(matches!(e, StorageError::InvalidArgument(_)));
    }

    #[test]
    fn connection_loss_and_leader_moves_may_pass_other_failures_do_not() {
        use RDKafkaErrorCode as C;
        for code in [
            C::BrokerTransportFailure,
            C::AllBrokersDown,
            C::OperationTimedOut,
            C::NotLeaderForPartition,
            C::LeaderNotAvailable,
        ] {
            let e = kafka_error(
                on("Produce", Some("t"), Some(0)),
                KafkaError::MessageProduction(code),
            );
            assert!(
                matches!(
                    e,
                    StorageError::Cluster {
                        retriable: true,
                        ..
                    }
                ),
                "{code:?}: {e}"
            );
        }
        let e = kafka_error(
            on("Produce", Some("t"), Some(0)),
            KafkaError::MessageProduction(C::InvalidMessage),
        );
        match e {
            StorageError::Cluster {
                retriable: false,
                operation,
                target,
                ..
            } => assert_eq!((operation.as_str(), target.as_str()), ("Produce", "t-0")),
            other => panic!("{other}"),
        }
    }
}
