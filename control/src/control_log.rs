//! Following `inlet.control`: the background fold every process runs, and append-and-wait for the
//! admin API.
//!
//! Enters: every record of the control topic's single partition, from offset 0, in order.
//! Leaves: the folded [`Registry`] and the offset folded so far. [`ControlLog::append`] writes a
//! command, waits until this process's own fold has applied it and returns the fold's verdict, so a
//! 2xx from the admin API means every later read on this process sees the change.

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
        shutdown: CancellationToken,
    ) -> Result<(ControlLog, tokio::task::JoinHandle<()>), SetupError> {
        check_topic(kafka, &topic).await?;
        let consumer = kafka.reader().await?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&topic, 0, Offset::Beginning)?;
        consumer.assign(&assignment)?;

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
        if start > 0 {
            // Records before `start` were deleted by the broker: the registry will miss what
            // they created, and commands depending on them will be rejected.
            tracing::error!(
                topic,
                first_offset = start,
                "the control log no longer starts at offset 0: its oldest records were deleted \
                 (retention or the embedded broker's size limit); state built from it is incomplete"
            );
        }

        let (applied, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            registry: RwLock::new(Registry::new()),
            outcomes: Mutex::new(BTreeMap::new()),
            applied,
            origin: Secret::generate(8).expose().to_owned(),
            topic,
            producer: Some(producer),
            last_sync: tokio::sync::Mutex::new(None),
            metrics,
        });
        shared.metrics.end_offset.set(end);
        let log = ControlLog {
            shared: shared.clone(),
        };
        let task = tokio::spawn(follow(consumer, shared, shutdown.clone()));
        tokio::spawn(refresh_end_offset(log.clone(), shutdown.clone()));
        tokio::select! {
            _ = log.wait_applied(end) => {}
            _ = shutdown.cancelled() => {}
        }
        let sizes = log.read().sizes();
        tracing::info!(
            offset = end,
            spaces = sizes.spaces,
            integrations = sizes.integrations,
            stacks = sizes.stacks,
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

/// Folds records until shutdown.
async fn follow(consumer: StreamConsumer, shared: Arc<Shared>, shutdown: CancellationToken) {
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
        shared.metrics.applied_offset.set(offset + 1);
        shared.applied.send_replace(offset + 1);
    }
}

/// Refuses a control topic the fold cannot be correct on: more than one partition (commands
/// would be folded in different orders by different processes) or compaction (the broker would
/// delete commands, so a new process would fold a different registry).
async fn check_topic(kafka: &Kafka, topic: &str) -> Result<(), SetupError> {
    let partitions = kafka.partition_count(topic).await?;
    if partitions != 1 {
        return Err(SetupError::Invalid(format!(
            "the control topic {topic} has {partitions} partitions; it must have exactly one, \
             so every process folds the commands in the same order"
        )));
    }
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
