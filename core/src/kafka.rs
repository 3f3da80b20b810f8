//! The one place Kafka clients are built, topics are created, and the embedded broker lives.
//!
//! Producers are idempotent with `acks=all`. Consumers never store offsets on their own
//! (`enable.auto.offset.store=false`): the stage stores an offset only after the outputs of that
//! record were acknowledged, and the auto-commit then commits what was stored.
//!
//! Client creation and metadata calls block inside librdkafka, so they run on the blocking pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;

use crate::config::{GroupMembership, KafkaConfig};
use crate::metrics::{Metrics, RebalanceEvent};
use crate::records::Stage;
use crate::topics::TopicSpec;

/// The producer every stage uses.
pub type Producer = FutureProducer<StatsContext>;

/// Feeds librdkafka's statistics (every 10 s) into the process's metrics: producer queue depth,
/// transmit errors and broker round-trip times.
pub struct StatsContext {
    metrics: Option<Arc<Metrics>>,
    transmit_errors: AtomicU64,
}

impl ClientContext for StatsContext {
    fn stats(&self, statistics: Statistics) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let kafka = &metrics.kafka;
        kafka
            .producer_queue_messages
            .set(i64::try_from(statistics.msg_cnt).unwrap_or(i64::MAX));
        let errors: u64 = statistics.brokers.values().map(|b| b.txerrs).sum();
        let before = self.transmit_errors.swap(errors, Ordering::Relaxed);
        kafka.transmit_errors.inc_by(errors.saturating_sub(before));
        for broker in statistics.brokers.values() {
            // Bootstrap placeholders (node id -1) have no meaningful round trip.
            if broker.nodeid < 0 {
                continue;
            }
            if let Some(rtt) = &broker.rtt {
                kafka
                    .broker_rtt_seconds
                    .with_label_values(&[&broker.nodeid.to_string()])
                    .set(rtt.avg as f64 / 1_000_000.0);
            }
        }
    }
}

/// The consumer of a consuming stage (router, workers, reporter): a member of its group.
pub type GroupConsumer = StreamConsumer<GroupContext>;

/// Watches a stage consumer's rebalances: logs each one and keeps the stage's group metrics
/// (rebalances, assigned partitions, when the last one happened).
///
/// The default rebalance handling is kept: with the cooperative-sticky assignor rust-rdkafka
/// applies incremental assignments (`incremental_assign` / `incremental_unassign`), so only the
/// partitions that move are touched. Before partitions are removed, librdkafka commits the
/// offsets stored for them (`enable.auto.commit`); what was handled but not yet acknowledged
/// then is replayed by the next owner (at-least-once).
pub struct GroupContext {
    stage: Stage,
    metrics: Option<Arc<Metrics>>,
    is_static: bool,
}

impl GroupContext {
    /// Whether the member is static (`group.instance.id`): it keeps its membership over a
    /// restart and never leaves the group on shutdown.
    pub fn is_static(&self) -> bool {
        self.is_static
    }

    /// The stage this consumer reads for.
    pub fn stage(&self) -> Stage {
        self.stage
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (event, moved) = match rebalance {
            Rebalance::Assign(partitions) => (RebalanceEvent::Assigned, partitions.count()),
            Rebalance::Revoke(partitions) if consumer.assignment_lost() => {
                (RebalanceEvent::Lost, partitions.count())
            }
            Rebalance::Revoke(partitions) => (RebalanceEvent::Revoked, partitions.count()),
            Rebalance::Error(err) => {
                tracing::warn!(stage = self.stage.as_str(), error = %err, "consumer group rebalance failed");
                (RebalanceEvent::Error, 0)
            }
        };
        let assigned = consumer.assignment().ok().map(|a| a.count());
        tracing::info!(
            stage = self.stage.as_str(),
            event = event.as_str(),
            partitions = moved,
            assigned = assigned.unwrap_or_default(),
            "consumer group rebalanced"
        );
        if let Some(metrics) = &self.metrics {
            metrics.group.rebalanced(self.stage, event, assigned);
        }
    }
}

/// A Kafka client setup failure.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// librdkafka refused the configuration or a call failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A topic could not be created.
    #[error("cannot create topic {topic}: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
    },
    /// The embedded broker's thread is gone.
    #[error("the embedded broker stopped")]
    EmbeddedGone,
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The cluster is set up in a way inlet cannot work with (the message says how to fix it).
    #[error("{0}")]
    Invalid(String),
}

/// Builds clients for one cluster.
#[derive(Debug, Clone)]
pub struct Kafka {
    bootstrap_servers: String,
    config: KafkaConfig,
    embedded: bool,
    /// Whether the cluster is librdkafka's mock, once a client has asked (shared by clones).
    mock: Arc<std::sync::OnceLock<bool>>,
}

impl Kafka {
    /// Clients for the cluster at `bootstrap_servers`; `embedded` marks the in-process mock.
    pub fn new(config: &KafkaConfig, bootstrap_servers: impl Into<String>, embedded: bool) -> Self {
        Kafka {
            bootstrap_servers: bootstrap_servers.into(),
            config: config.clone(),
            embedded,
            mock: Arc::default(),
        }
    }

    /// The bootstrap servers clients connect to.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Whether this is the embedded in-memory broker.
    pub fn is_embedded(&self) -> bool {
        self.embedded
    }

    /// The settings every client shares, with the operator's librdkafka map applied last.
    fn base(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.config.client_id);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.config.librdkafka {
            config.set(key, value);
        }
        config
    }

    /// An idempotent, `acks=all` producer; with `metrics`, its statistics feed them.
    pub async fn producer(&self, metrics: Option<Arc<Metrics>>) -> Result<Producer, SetupError> {
        let config = self.base(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "2"),
            ("compression.type", "lz4"),
            // Bounded memory: when the queue is full, send() reports QueueFull and the caller
            // answers with backpressure (ingest: 503; consumers: wait).
            ("queue.buffering.max.messages", "100000"),
            ("queue.buffering.max.kbytes", "262144"),
            (
                "statistics.interval.ms",
                if metrics.is_some() { "10000" } else { "0" },
            ),
        ]);
        let context = StatsContext {
            metrics,
            transmit_errors: AtomicU64::new(0),
        };
        Ok(
            tokio::task::spawn_blocking(move || config.create_with_context::<_, Producer>(context))
                .await??,
        )
    }

    /// How long a fetch waits for data. Real brokers answer a waiting fetch as soon as data
    /// arrives; the embedded one only when the wait ends, so there the wait is kept short.
    fn fetch_wait(&self) -> &'static str {
        if self.embedded { "5" } else { "500" }
    }

    /// The member of `group_id` that reads for `stage`: it stores offsets only when told to,
    /// and takes part in the group as `membership` says (session timeout, heartbeats, poll
    /// interval, assignor, static membership). With `metrics`, its rebalances feed them.
    pub async fn consumer(
        &self,
        group_id: &str,
        membership: &GroupMembership,
        stage: Stage,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<GroupConsumer, SetupError> {
        // Unset, the session timeout depends on the broker: a stage given bootstrap servers may
        // still be talking to an embedded broker (`inlet dev --only-broker`).
        let embedded =
            self.embedded || (membership.session_timeout_ms.is_none() && self.is_mock().await);
        let session_timeout = membership.session_timeout_ms(embedded).to_string();
        let heartbeat = membership.heartbeat_interval_ms.to_string();
        let max_poll = membership.max_poll_interval_ms.to_string();
        let mut settings = vec![
            ("group.id", group_id),
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "1000"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", &session_timeout),
            ("heartbeat.interval.ms", &heartbeat),
            ("max.poll.interval.ms", &max_poll),
            (
                "partition.assignment.strategy",
                membership.assignor.strategy(),
            ),
            ("fetch.wait.max.ms", self.fetch_wait()),
        ];
        if let Some(id) = &membership.group_instance_id {
            settings.push(("group.instance.id", id));
        }
        let config = self.base(&settings);
        if let Some(metrics) = &metrics {
            metrics.group.register_stage(stage);
        }
        let context = GroupContext {
            stage,
            metrics,
            is_static: membership.is_static(),
        };
        Ok(tokio::task::spawn_blocking(move || {
            config.create_with_context::<_, GroupConsumer>(context)
        })
        .await??)
    }

    /// Whether the cluster is librdkafka's mock, an embedded broker run by another process
    /// (`inlet dev --only-broker`): its cluster id says so (`mockCluster…`; Kafka's are base64
    /// UUIDs). False when the cluster does not answer within 5 s.
    /// Asked once per process (clones share the answer): a fresh client's first cluster id can
    /// take a second to arrive.
    pub async fn is_mock(&self) -> bool {
        if let Some(mock) = self.mock.get() {
            return *mock;
        }
        let Ok(probe) = self.reader().await else {
            return false;
        };
        let id = tokio::task::spawn_blocking(move || {
            probe.client().fetch_cluster_id(Duration::from_secs(5))
        })
        .await
        .ok()
        .flatten();
        self.learn_cluster_id(id.as_deref())
    }

    /// Records what a client learnt of the cluster id (`None`: it did not answer, asked again
    /// next time); whether it is the mock.
    fn learn_cluster_id(&self, id: Option<&str>) -> bool {
        let Some(id) = id else { return false };
        let mock = id.starts_with("mockCluster");
        if self.mock.set(mock).is_ok() && mock {
            tracing::info!(
                "the cluster is an embedded broker (librdkafka's mock cluster, by its cluster id)"
            );
        }
        mock
    }

    /// A client of `group_id` that never joins it, for reading the group's committed offsets.
    pub async fn group_offsets(&self, group_id: &str) -> Result<StreamConsumer, SetupError> {
        let config = self.base(&[
            ("group.id", group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
        ]);
        Ok(tokio::task::spawn_blocking(move || config.create::<StreamConsumer>()).await??)
    }

    /// A consumer outside any group, for reading a partition from a chosen offset.
    pub async fn reader(&self) -> Result<StreamConsumer, SetupError> {
        let config = self.base(&[
            ("group.id", "inlet-reader"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", self.fetch_wait()),
            // Readers fold what they read as it arrives (snapshot chunks, the control log): a
            // prefetch of 8 MiB keeps the broker busy without librdkafka's default 64 MiB
            // queue, which at startup held a whole 40 MB snapshot next to the registry built
            // from it. A full queue postpones the next fetch by `fetch.queue.backoff.ms`
            // (default 1 s, which tripled the time to load that snapshot); 10 ms is a
            // handful of wake-ups per second while the queue is full.
            ("queued.max.messages.kbytes", "8192"),
            ("fetch.queue.backoff.ms", "10"),
        ]);
        Ok(tokio::task::spawn_blocking(move || config.create::<StreamConsumer>()).await??)
    }

    /// The partition count of `topic` (0 when it does not exist).
    pub async fn partition_count(&self, topic: &str) -> Result<usize, SetupError> {
        let probe = self.reader().await?;
        let topic = topic.to_owned();
        Ok(tokio::task::spawn_blocking(move || {
            probe
                .fetch_metadata(Some(&topic), Duration::from_secs(30))
                .map(|m| {
                    m.topics()
                        .first()
                        .map(|t| t.partitions().len())
                        .unwrap_or(0)
                })
        })
        .await??)
    }

    /// A reader assigned every partition of `topic` at `offset` (e.g. the beginning or the end).
    pub async fn read_all(
        &self,
        topic: &str,
        offset: rdkafka::topic_partition_list::Offset,
    ) -> Result<StreamConsumer, SetupError> {
        let partitions = self.partition_count(topic).await?;
        let reader = self.reader().await?;
        let mut assignment = rdkafka::topic_partition_list::TopicPartitionList::new();
        for partition in 0..partitions as i32 {
            assignment.add_partition_offset(topic, partition, offset)?;
        }
        reader.assign(&assignment)?;
        Ok(reader)
    }

    /// The value of `key` in the configuration of `topic` on a real cluster (`None` on the
    /// embedded broker, which has no admin API, or when the broker does not answer in 2 s).
    pub async fn topic_config(&self, topic: &str, key: &str) -> Result<Option<String>, SetupError> {
        use rdkafka::admin::ResourceSpecifier;
        // The mock has no DescribeConfigs and never answers it: asking would only wait 2 s.
        if self.embedded || self.is_mock().await {
            return Ok(None);
        }
        let config = self.base(&[]);
        let admin = tokio::task::spawn_blocking(move || {
            config.create::<AdminClient<DefaultClientContext>>()
        })
        .await??;
        // A broker without DescribeConfigs (librdkafka's mock cluster in a multi-process setup)
        // never answers: a short deadline, and "cannot tell" rather than an error.
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(2)));
        let described = match admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
            .await
        {
            Ok(described) => described,
            Err(err) => {
                tracing::info!(%topic, key, error = %err, "cannot read the topic's configuration; not checked");
                return Ok(None);
            }
        };
        Ok(described
            .into_iter()
            .flatten()
            .flat_map(|resource| resource.entries)
            .find(|entry| entry.name == key)
            .and_then(|entry| entry.value))
    }

    /// Creates missing topics on a real cluster (the embedded broker creates its own). Topics that
    /// already exist are left alone, so a cluster where an operator created them needs no
    /// create permission.
    pub async fn ensure_topics(
        &self,
        specs: &[TopicSpec],
        replication_factor: i32,
    ) -> Result<(), SetupError> {
        if self.embedded {
            return Ok(());
        }
        let config = self.base(&[]);
        let (admin, existing, cluster_id) = tokio::task::spawn_blocking(move || {
            let admin = config.create::<AdminClient<DefaultClientContext>>()?;
            let metadata = admin
                .inner()
                .fetch_metadata(None, Duration::from_secs(30))?;
            let existing: Vec<String> = metadata
                .topics()
                .iter()
                .filter(|t| t.error().is_none())
                .map(|t| t.name().to_owned())
                .collect();
            // Connected now, so the cluster id is at hand (a fresh probe may wait a second).
            let cluster_id = admin.inner().fetch_cluster_id(Duration::from_secs(5));
            Ok::<_, KafkaError>((admin, existing, cluster_id))
        })
        .await??;
        self.learn_cluster_id(cluster_id.as_deref());
        let missing: Vec<&TopicSpec> = specs
            .iter()
            .filter(|spec| !existing.contains(&spec.name))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if !self.config.create_topics {
            let names: Vec<&str> = missing.iter().map(|s| s.name.as_str()).collect();
            tracing::warn!(missing = ?names, "topics missing and kafka.create_topics is off");
            return Ok(());
        }
        // An embedded broker of another process (`inlet dev --only-broker`, or a standalone mock
        // such as ../shared/perf's) has no CreateTopics: asking would only time out after 30 s and
        // stop the stage. The stage goes on without them (control snapshots, for one, stay off;
        // a producer writing to a missing topic makes the mock create it with 4 partitions).
        if self.is_mock().await {
            let names: Vec<&str> = missing.iter().map(|s| s.name.as_str()).collect();
            tracing::warn!(
                missing = ?names,
                "topics missing on an embedded broker, which cannot create them on request; \
                 going on without them"
            );
            return Ok(());
        }
        let retention: Vec<String> = missing.iter().map(|s| s.retention_ms.to_string()).collect();
        let topics: Vec<NewTopic<'_>> = missing
            .iter()
            .zip(&retention)
            .map(|(spec, retention)| {
                NewTopic::new(
                    &spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(replication_factor),
                )
                .set("retention.ms", retention)
                .set(
                    "cleanup.policy",
                    if spec.compacted { "compact" } else { "delete" },
                )
            })
            .collect();
        let names: Vec<&str> = missing.iter().map(|s| s.name.as_str()).collect();
        tracing::info!(topics = ?names, "creating missing topics (at most 30 s)");
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics(&topics, &options).await? {
            match result {
                Ok(topic) => tracing::info!(%topic, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(SetupError::CreateTopic { topic, code }),
            }
        }
        Ok(())
    }
}

enum BrokerCommand {
    Down(i32, mpsc::Sender<Result<(), KafkaError>>),
    Up(i32, mpsc::Sender<Result<(), KafkaError>>),
}

/// librdkafka's in-process mock cluster, for `inlet dev` and tests. It speaks the Kafka protocol on
/// a loopback port, so other processes can use it, and keeps everything in memory.
///
/// The mock handle is not `Send`, so it lives on a thread of its own that takes commands; dropping
/// this value stops the thread and the cluster.
pub struct EmbeddedBroker {
    bootstrap_servers: String,
    commands: Option<mpsc::Sender<BrokerCommand>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a one-broker mock cluster with `topics` created.
    pub fn start(topics: &[TopicSpec]) -> Result<EmbeddedBroker, SetupError> {
        let topics = topics.to_vec();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (commands_tx, commands_rx) = mpsc::channel::<BrokerCommand>();
        let thread = thread::Builder::new()
            .name("inlet-embedded-broker".to_owned())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(cluster) => cluster,
                    Err(err) => {
                        let _ = ready_tx.send(Err(SetupError::Kafka(err)));
                        return;
                    }
                };
                for topic in &topics {
                    if let Err(err) = cluster.create_topic(&topic.name, topic.partitions, 1) {
                        let _ = ready_tx.send(Err(SetupError::Kafka(err)));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Runs until the sender is dropped.
                for command in commands_rx {
                    match command {
                        BrokerCommand::Down(id, reply) => {
                            let _ = reply.send(cluster.broker_down(id));
                        }
                        BrokerCommand::Up(id, reply) => {
                            let _ = reply.send(cluster.broker_up(id));
                        }
                    }
                }
            })
            .map_err(|_| SetupError::EmbeddedGone)?;
        let bootstrap_servers = ready_rx.recv().map_err(|_| SetupError::EmbeddedGone)??;
        Ok(EmbeddedBroker {
            bootstrap_servers,
            commands: Some(commands_tx),
            thread: Some(thread),
        })
    }

    /// The loopback address clients connect to.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Takes broker `id` (1-based) down: connections drop and requests fail until [`Self::broker_up`].
    pub fn broker_down(&self, id: i32) -> Result<(), SetupError> {
        self.command(|reply| BrokerCommand::Down(id, reply))
    }

    /// Brings broker `id` back.
    pub fn broker_up(&self, id: i32) -> Result<(), SetupError> {
        self.command(|reply| BrokerCommand::Up(id, reply))
    }

    fn command(
        &self,
        make: impl FnOnce(mpsc::Sender<Result<(), KafkaError>>) -> BrokerCommand,
    ) -> Result<(), SetupError> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .as_ref()
            .ok_or(SetupError::EmbeddedGone)?
            .send(make(tx))
            .map_err(|_| SetupError::EmbeddedGone)?;
        Ok(rx.recv().map_err(|_| SetupError::EmbeddedGone)??)
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads `reader` (already assigned) until every partition of `ends` reached its end offset
/// (exclusive) or `deadline` passed, calling `each` with every record below its partition's end;
/// read errors are logged and retried. True when every partition was read to its end. For
/// startup read-backs (the router's duplicate window, the reporter's runs).
pub async fn read_until(
    reader: &rdkafka::consumer::StreamConsumer,
    mut ends: std::collections::HashMap<i32, i64>,
    deadline: tokio::time::Instant,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> bool {
    use rdkafka::Message;
    while !ends.is_empty() {
        let message = match tokio::time::timeout_at(deadline, reader.recv()).await {
            Err(_) => return false,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "reading back a topic failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Ok(Ok(message)) => message,
        };
        let partition = message.partition();
        let Some(&end) = ends.get(&partition) else {
            continue;
        };
        if message.offset() + 1 >= end {
            ends.remove(&partition);
        }
        if message.offset() < end {
            each(&message);
        }
    }
    true
}

/// The value of header `name` of `message` as UTF-8, if present.
pub fn header<'m, M: rdkafka::Message>(message: &'m M, name: &str) -> Option<&'m str> {
    use rdkafka::message::Headers;
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The partition librdkafka's producer puts a record keyed `key` in, out of `partitions`, under
/// the producer setting `partitioner` (`None`: a partitioner that does not depend on the key,
/// such as `random`). The router's reconciler uses it to find which repositories' webhooks its
/// partitions hold; the test `partition_for_mirrors_the_producer` checks it against real
/// placements.
pub fn partition_for(partitioner: &str, key: &[u8], partitions: usize) -> Option<i32> {
    let partitions = u32::try_from(partitions).ok().filter(|p| *p > 0)?;
    let hash = match partitioner {
        // librdkafka's default: CRC-32 of the key (keyed records never go random).
        "consistent" | "consistent_random" => crc32(key),
        // Java's default partitioner, so a Java producer and inlet agree.
        "murmur2" | "murmur2_random" => murmur2(key) & 0x7fff_ffff,
        "fnv1a" | "fnv1a_random" => fnv1a(key),
        _ => return None,
    };
    i32::try_from(hash % partitions).ok()
}

/// The producer's `partitioner` setting: the operator's librdkafka map, else librdkafka's default.
impl Kafka {
    /// The partitioner producers of this cluster's clients use.
    pub fn partitioner(&self) -> &str {
        self.config
            .librdkafka
            .get("partitioner")
            .map(String::as_str)
            .unwrap_or("consistent_random")
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// MurmurHash2 with Kafka's seed, as Java's client (and librdkafka's `murmur2`) computes it.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// 32-bit FNV-1a.
fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod partitioner_tests {
    use super::*;

    /// Known answers: zlib's CRC-32 of "123456789", and Kafka's murmur2 test vectors (Java's
    /// `Utils.murmur2` of "21" and "foobar").
    #[test]
    fn hashes_match_their_references() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(partition_for("random", b"k", 12), None);
        assert_eq!(partition_for("consistent_random", b"k", 0), None);
    }
}
