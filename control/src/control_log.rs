//! Following `inlet.control`: the background fold every process runs, and append-and-wait for the
//! admin API.
//!
//! Enters: the newest usable snapshot on `<control topic>-snapshots` (see [`crate::snapshot`]),
//! then every record of the control topic's single partition after it (from offset 0 without
//! one), in order. Leaves: the folded [`Registry`] and the offset folded so far; a process whose
//! [`SnapshotPolicy`] says so also writes a snapshot every so many records.
//! [`ControlLog::append`] writes a command, waits until this process's own fold has applied it
//! and returns the fold's verdict, so a 2xx from the admin API means every later read on this
//! process sees the change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::Producer as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::commands::{CONTROL_SCHEMA, ControlCommand, ControlRecord};
use crate::fold::Outcome;
use crate::registry::Registry;
use crate::snapshot::{self, Manifest, SnapshotPolicy};
use inlet_core::clock::now_rfc3339;
use inlet_core::kafka::{Kafka, Producer, SetupError};
use inlet_core::metrics::ControlMetrics;
use inlet_core::output::{Output, Outputs};
use inlet_core::secret::Secret;

/// How long append waits for the broker and then for the fold.
const APPEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Outcomes kept for commands this process appended but has not collected yet.
const MAX_PENDING_OUTCOMES: usize = 10_000;

/// Why an append did not produce a verdict.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The broker did not take the command.
    #[error("the control log is unavailable: {0}")]
    Unavailable(String),
    /// The command was written but the fold did not reach it in time.
    #[error("the control log did not apply the command in time")]
    FoldTimeout,
    /// The process is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

struct Shared {
    registry: RwLock<Registry>,
    outcomes: Mutex<BTreeMap<i64, Outcome>>,
    /// The next offset to fold: everything below it is applied.
    applied: watch::Sender<i64>,
    origin: String,
    topic: String,
    /// `None` for an in-memory log ([`ControlLog::in_memory`]).
    producer: Option<Producer>,
    /// When the last successful shared catch-up started.
    last_sync: tokio::sync::Mutex<Option<std::time::Instant>>,
    metrics: ControlMetrics,
    /// Where snapshots are written and when.
    snapshots: SnapshotTarget,
}

/// Where and when this process writes snapshots.
struct SnapshotTarget {
    topic: String,
    /// Partitions of the snapshot topic (0: it does not exist; nothing is written).
    partitions: i32,
    policy: SnapshotPolicy,
}

/// A handle on this process's fold of the control log. Cheap to clone.
#[derive(Clone)]
pub struct ControlLog {
    shared: Arc<Shared>,
}

impl ControlLog {
    /// Starts following `topic` and returns once the fold has caught up with the log's end as it was
    /// at startup, so the first read already sees every committed change. The fold runs until
    /// `shutdown` is cancelled; the returned task ends with it.
    pub async fn start(
        kafka: &Kafka,
        topic: String,
        producer: Producer,
        metrics: ControlMetrics,
        policy: SnapshotPolicy,
        shutdown: CancellationToken,
    ) -> Result<(ControlLog, tokio::task::JoinHandle<()>), SetupError> {
        let started = std::time::Instant::now();
        // One reader for the metadata, the snapshot and then the log: each client costs a
        // connection and a metadata round trip.
        let consumer = kafka.reader().await?;
        check_topic(kafka, &consumer, &topic).await?;
        let (start, end) = {
            let producer = producer.clone();
            let topic = topic.clone();
            tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_watermarks(&topic, 0, Duration::from_secs(30))
            })
            .await??
        };
        let snapshot_topic = format!("{topic}-snapshots");
        let partitions = partition_count(&consumer, &snapshot_topic)?;
        let (registry, from) = match snapshot::load(
            &consumer,
            &snapshot_topic,
            partitions,
            start,
            end,
        )
        .await
        {
            Ok(Some(loaded)) => {
                let manifest = &loaded.manifest;
                tracing::info!(
                    offset = manifest.offset,
                    bytes = manifest.length,
                    chunks = manifest.chunks.len(),
                    stacks = manifest.stacks,
                    skipped = loaded.skipped,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "control snapshot loaded"
                );
                metrics.snapshot_loads.with_label_values(&["loaded"]).inc();
                metrics
                    .snapshot_loads
                    .with_label_values(&["skipped"])
                    .inc_by(loaded.skipped as u64);
                metrics.snapshot_offset.set(manifest.offset);
                metrics.snapshot_bytes.set(manifest.length as i64);
                (loaded.registry, manifest.offset + 1)
            }
            result => {
                if let Err(err) = &result {
                    tracing::warn!(topic = %snapshot_topic, error = %err, "cannot read control snapshots");
                }
                metrics.snapshot_loads.with_label_values(&["none"]).inc();
                if start > 0 {
                    // Records before `start` were deleted (retention, or the embedded broker's
                    // size limit) and no snapshot covers them: the registry would be incomplete
                    // and disagree with every other process.
                    return Err(SetupError::Invalid(format!(
                        "the control log {topic} no longer starts at offset 0 (its first offset \
                         is {start}) and {snapshot_topic} holds no usable snapshot of offset \
                         {} or later: state built from it would be incomplete. Restore the log \
                         (docs/control-log.md) or a snapshot",
                        start - 1
                    )));
                }
                (Registry::new(), 0)
            }
        };
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&topic, 0, Offset::Offset(from))?;
        consumer.assign(&assignment)?;
        if policy.write && partitions == 0 {
            tracing::warn!(topic = %snapshot_topic, "the control snapshot topic does not exist; no snapshots are written");
        }

        let (applied, _) = watch::channel(from);
        let shared = Arc::new(Shared {
            registry: RwLock::new(registry),
            outcomes: Mutex::new(BTreeMap::new()),
            applied,
            origin: Secret::generate(8).expose().to_owned(),
            topic,
            producer: Some(producer),
            last_sync: tokio::sync::Mutex::new(None),
            metrics,
            snapshots: SnapshotTarget {
                topic: snapshot_topic,
                partitions,
                policy,
            },
        });
        shared.metrics.end_offset.set(end);
        shared.metrics.applied_offset.set(from);
        let log = ControlLog {
            shared: shared.clone(),
        };
        let task = tokio::spawn(follow(
            consumer,
            shared.clone(),
            from,
            end,
            shutdown.clone(),
        ));
        tokio::spawn(refresh_end_offset(log.clone(), shutdown.clone()));
        tokio::select! {
            _ = log.wait_applied(end) => {}
            _ = shutdown.cancelled() => {}
        }
        let sizes = log.read().sizes();
        // A snapshot with no tail after it folds no record, so the gauges are set here too.
        set_entities(&shared.metrics, sizes);
        shared
            .metrics
            .catch_up_seconds
            .set(started.elapsed().as_secs_f64());
        tracing::info!(
            offset = end,
            from,
            spaces = sizes.spaces,
            integrations = sizes.integrations,
            stacks = sizes.stacks,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "control log caught up"
        );
        Ok((log, task))
    }

    /// A log that holds `registry` and is connected to no broker: for in-process tests of the
    /// services that read the registry. Appends fail; `sync` has nothing to catch up with.
    pub fn in_memory(registry: Registry, metrics: ControlMetrics) -> ControlLog {
        let (applied, _) = watch::channel(0);
        ControlLog {
            shared: Arc::new(Shared {
                registry: RwLock::new(registry),
                outcomes: Mutex::new(BTreeMap::new()),
                applied,
                origin: "in-memory".to_owned(),
                topic: String::new(),
                producer: None,
                last_sync: tokio::sync::Mutex::new(None),
                metrics,
                snapshots: SnapshotTarget {
                    topic: String::new(),
                    partitions: 0,
                    policy: SnapshotPolicy {
                        write: false,
                        ..SnapshotPolicy::default()
                    },
                },
            }),
        }
    }

    /// A read view of the registry. Hold it briefly and never across an `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, Registry> {
        // A poisoned lock means a fold panicked mid-update; the registry is still the last
        // consistent state because apply() validates before it mutates.
        self.shared
            .registry
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next offset to fold: every record below it is reflected in [`Self::read`].
    pub fn applied_offset(&self) -> i64 {
        *self.shared.applied.borrow()
    }

    /// Waits until every record below `offset` has been folded.
    pub async fn wait_applied(&self, offset: i64) {
        let mut rx = self.shared.applied.subscribe();
        // Err means the fold task ended (shutdown); nothing more will be applied.
        let _ = rx.wait_for(|applied| *applied >= offset).await;
    }

    /// Waits until this process has folded everything appended to the log so far, by any process.
    /// Called before serving an admin request, it makes replicas behind a load balancer consistent:
    /// a change acknowledged by one is seen by the next request to any other.
    pub async fn sync(&self) -> Result<(), ControlError> {
        let Some(producer) = self.shared.producer.clone() else {
            return Ok(());
        };
        let topic = self.shared.topic.clone();
        let end = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_watermarks(&topic, 0, Duration::from_secs(5))
        })
        .await
        .map_err(|err| ControlError::Unavailable(err.to_string()))?
        .map_err(|err| ControlError::Unavailable(err.to_string()))?
        .1;
        self.shared.metrics.end_offset.set(end);
        tokio::time::timeout(APPEND_TIMEOUT, self.wait_applied(end))
            .await
            .map_err(|_| ControlError::FoldTimeout)
    }

    /// [`Self::sync`], shared: a caller that finds a catch-up already started after it arrived
    /// waits for that one instead of asking the broker again, so a burst of admin requests costs
    /// one watermark fetch, not one each.
    pub async fn sync_shared(&self) -> Result<(), ControlError> {
        let arrived = std::time::Instant::now();
        let mut last = self.shared.last_sync.lock().await;
        if last.is_some_and(|started| started >= arrived) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.sync().await?;
        *last = Some(started);
        Ok(())
    }

    /// Reads the log's end offset from the broker and records it in `inlet_control_end_offset`.
    /// Blocks inside librdkafka: call it from the blocking pool.
    pub fn refresh_end_offset_blocking(&self) {
        let Some(producer) = &self.shared.producer else {
            return;
        };
        if let Ok((_, end)) =
            producer
                .client()
                .fetch_watermarks(&self.shared.topic, 0, Duration::from_secs(2))
        {
            self.shared.metrics.end_offset.set(end);
        }
    }

    /// Waits at most `timeout` for the fold to reach `offset` (the control offset a webhook or a
    /// trigger was stamped with), so a stack created before a push is always seen. Past it the
    /// caller goes on with the state at hand; only a control topic that lost records can make it
    /// wait that long, and the warning says so.
    pub async fn wait_for(&self, offset: i64, timeout: Duration) {
        if tokio::time::timeout(timeout, self.wait_applied(offset))
            .await
            .is_err()
        {
            tracing::warn!(
                wanted = offset,
                applied = self.applied_offset(),
                "control log behind the record; going on with the state at hand"
            );
        }
    }

    /// Appends `command` on behalf of `actor`, waits for this process's fold to apply it, and returns
    /// the fold's verdict with the record's offset.
    pub async fn append(
        &self,
        actor: &str,
        command: ControlCommand,
    ) -> Result<(i64, Outcome), ControlError> {
        let record = ControlRecord {
            schema: CONTROL_SCHEMA.to_owned(),
            command_id: Secret::generate(12).expose().to_owned(),
            origin: self.shared.origin.clone(),
            issued_at: now_rfc3339(),
            actor: actor.to_owned(),
            command,
        };
        let Some(producer) = &self.shared.producer else {
            return Err(ControlError::Unavailable(
                "an in-memory control log takes no commands".to_owned(),
            ));
        };
        let output = Output::json(&self.shared.topic, &record.command.entity_key(), &record);
        let offset = Outputs::new(producer.clone())
            .send(&output, APPEND_TIMEOUT)
            .await
            .map_err(|err| ControlError::Unavailable(err.to_string()))?;
        tokio::time::timeout(APPEND_TIMEOUT, self.wait_applied(offset + 1))
            .await
            .map_err(|_| ControlError::FoldTimeout)?;
        let outcome = self
            .shared
            .outcomes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&offset);
        match outcome {
            Some(outcome) => Ok((offset, outcome)),
            // Applied offsets but no outcome: the fold stopped (shutdown) before reaching it.
            None => Err(ControlError::ShuttingDown),
        }
    }
}

/// Folds records from `from` until shutdown, writing a snapshot at each boundary the policy sets
/// once the fold has passed `startup_end` (while catching up at startup a later boundary is
/// near, and writing would only delay being ready).
async fn follow(
    consumer: StreamConsumer,
    shared: Arc<Shared>,
    from: i64,
    startup_end: i64,
    shutdown: CancellationToken,
) {
    // Boundaries: every `every_records` records or `every_bytes` bytes since the last one. Every
    // process counts from the same places (offset 0 or a snapshot, itself a boundary), so writers
    // agree on the offsets snapshots are taken at and their copies are identical.
    let mut boundary = from;
    let mut bytes_since = 0usize;
    let mut written: std::collections::VecDeque<Manifest> = Default::default();
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(err) => {
                tracing::warn!(error = %err, "control log read failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let offset = message.offset();
        bytes_since += message.payload_len();
        let record = message
            .payload()
            .map(serde_json::from_slice::<ControlRecord>);
        match record {
            Some(Ok(record)) => {
                let (outcome, sizes) = {
                    let mut registry = shared
                        .registry
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    let outcome = registry.apply(&record);
                    (outcome, registry.sizes())
                };
                let metrics = &shared.metrics;
                metrics
                    .commands
                    .with_label_values(&[
                        record.command.kind(),
                        if outcome.is_ok() {
                            "accepted"
                        } else {
                            "rejected"
                        },
                    ])
                    .inc();
                set_entities(metrics, sizes);
                match &outcome {
                    Ok(_) => tracing::debug!(offset, kind = record.command.kind(), "applied"),
                    Err(rejection) => tracing::info!(
                        offset,
                        kind = record.command.kind(),
                        code = rejection.code,
                        reason = %rejection.message,
                        "control command rejected"
                    ),
                }
                if record.origin == shared.origin {
                    let mut outcomes = shared
                        .outcomes
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    outcomes.insert(offset, outcome);
                    // Entries stay only if their appender gave up; drop the oldest of those.
                    while outcomes.len() > MAX_PENDING_OUTCOMES {
                        outcomes.pop_first();
                    }
                }
            }
            // Every replica skips the same unreadable record, so they still agree.
            Some(Err(err)) => {
                tracing::error!(offset, error = %err, "skipping unreadable control record")
            }
            None => tracing::error!(offset, "skipping empty control record"),
        }
        let policy = shared.snapshots.policy;
        if offset + 1 - boundary >= policy.every_records || bytes_since >= policy.every_bytes {
            boundary = offset + 1;
            bytes_since = 0;
            if policy.write && shared.snapshots.partitions > 0 && offset + 1 >= startup_end {
                // The fold waits while the snapshot is written: the registry must stay as of
                // `offset` (this task is its only writer).
                write_snapshot(&shared, offset, &mut written).await;
            }
        }
        shared.metrics.applied_offset.set(offset + 1);
        shared.applied.send_replace(offset + 1);
    }
}

/// Writes the snapshot at `offset` and removes (tombstones) the ones this process wrote before
/// the last two.
async fn write_snapshot(
    shared: &Shared,
    offset: i64,
    written: &mut std::collections::VecDeque<Manifest>,
) {
    let Some(producer) = &shared.producer else {
        return;
    };
    let target = &shared.snapshots;
    let started = std::time::Instant::now();
    let result = snapshot::write(
        &shared.registry,
        offset,
        producer,
        &target.topic,
        target.partitions,
    )
    .await;
    let metrics = &shared.metrics;
    match result {
        Ok(manifest) => {
            let elapsed = started.elapsed();
            metrics
                .snapshot_writes
                .with_label_values(&["written"])
                .inc();
            metrics
                .snapshot_write_seconds
                .observe(elapsed.as_secs_f64());
            metrics.snapshot_offset.set(offset);
            metrics.snapshot_bytes.set(manifest.length as i64);
            tracing::info!(
                offset,
                bytes = manifest.length,
                chunks = manifest.chunks.len(),
                stacks = manifest.stacks,
                elapsed_ms = elapsed.as_millis() as u64,
                "control snapshot written"
            );
            written.push_back(manifest);
            while written.len() > 2 {
                if let Some(old) = written.pop_front() {
                    remove_snapshot(producer, &target.topic, &old);
                }
            }
        }
        Err(err) => {
            metrics.snapshot_writes.with_label_values(&["failed"]).inc();
            tracing::warn!(offset, error = %err, "control snapshot not written; the next boundary tries again");
        }
    }
}

/// Tombstones a snapshot's manifest, then its chunks, so compaction removes it. Fire and forget:
/// a tombstone that does not arrive leaves an old snapshot that loading skips for a newer one.
fn remove_snapshot(producer: &Producer, topic: &str, manifest: &Manifest) {
    let manifest_key = snapshot::manifest_key(manifest.offset);
    let tombstones =
        std::iter::once((snapshot::MANIFEST_PARTITION, manifest_key)).chain(
            manifest.chunks.iter().enumerate().map(|(index, chunk)| {
                (chunk.partition, snapshot::chunk_key(manifest.offset, index))
            }),
        );
    for (partition, key) in tombstones {
        let record = rdkafka::producer::FutureRecord::<str, [u8]>::to(topic)
            .partition(partition)
            .key(&key);
        if let Err((err, _)) = producer.send_result(record) {
            tracing::debug!(error = %err, key, "snapshot tombstone not enqueued");
        }
    }
}

/// Refuses a control topic the fold cannot be correct on: more than one partition (commands
/// would be folded in different orders by different processes) or compaction (the broker would
/// delete commands, so a new process would fold a different registry).
async fn check_topic(
    kafka: &Kafka,
    reader: &StreamConsumer,
    topic: &str,
) -> Result<(), SetupError> {
    let partitions = partition_count(reader, topic)?;
    if partitions != 1 {
        return Err(SetupError::Invalid(format!(
            "the control topic {topic} has {partitions} partitions; it must have exactly one, \
             so every process folds the commands in the same order"
        )));
    }
    // librdkafka's mock cluster has no DescribeConfigs and does not compact: `topic_config`
    // answers "cannot tell" there without asking.
    if let Some(policy) = kafka.topic_config(topic, "cleanup.policy").await?
        && policy.contains("compact")
    {
        return Err(SetupError::Invalid(format!(
            "the control topic {topic} has cleanup.policy={policy}; it must be `delete` with \
             infinite retention (retention.ms=-1): compaction would drop commands"
        )));
    }
    Ok(())
}

/// The partition count of `topic` (0 when it does not exist), through `reader`'s connection.
fn partition_count(reader: &StreamConsumer, topic: &str) -> Result<i32, SetupError> {
    let metadata = blocking(|| reader.fetch_metadata(Some(topic), Duration::from_secs(30)))?;
    Ok(metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map_or(0, |t| t.partitions().len() as i32))
}

/// How long a stage waits for its fold to reach a record's control offset before going on with
/// the state at hand (only a control topic that lost records can make it wait that long).
pub const CONTROL_WAIT: Duration = Duration::from_secs(30);

/// How often `inlet_control_end_offset` is refreshed in the background.
const END_OFFSET_INTERVAL: Duration = Duration::from_secs(5);

/// Keeps `inlet_control_end_offset` current in every process, not only on admin requests, so
/// "how far behind is this process's fold" is always answerable.
async fn refresh_end_offset(log: ControlLog, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(END_OFFSET_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let log = log.clone();
                // Metadata calls block inside librdkafka.
                let _ = tokio::task::spawn_blocking(move || log.refresh_end_offset_blocking()).await;
            }
        }
    }
}

/// Ready: the broker answers and this process has folded the whole control log.
impl inlet_core::ops::Readiness for ControlLog {
    async fn check(&self) -> Result<serde_json::Value, String> {
        self.sync().await.map_err(|err| err.to_string())?;
        Ok(serde_json::json!({"control_offset": self.applied_offset()}))
    }
}

/// Runs `call`, which blocks inside librdkafka, off the runtime's worker where the runtime allows
/// it (a multi-threaded one); the metadata calls it is used for take milliseconds.
fn blocking<T>(call: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(call),
        _ => call(),
    }
}

/// `inlet_control_registry_entities{kind}` from `sizes`.
fn set_entities(metrics: &ControlMetrics, sizes: crate::registry::RegistrySizes) {
    for (kind, count) in [
        ("spaces", sizes.spaces),
        ("integrations", sizes.integrations),
        ("stacks", sizes.stacks),
        ("api_keys", sizes.api_keys),
    ] {
        metrics
            .entities
            .with_label_values(&[kind])
            .set(count as i64);
    }
}
