//! The at-least-once consume → handle → produce loop shared by router and workers.
//!
//! Delivery guarantee: an input offset is stored (and later auto-committed) only after every output
//! of that input and of all inputs before it was acknowledged by the broker. A crash replays the
//! unacknowledged tail; outputs carry deterministic ids so consumers can deduplicate the replay.
//!
//! A record the handler cannot process ([`Poison`]) goes to the dead-letter topic with its key,
//! value and headers plus `inlet-error*` headers, and the partition moves on.
//!
//! Inputs are handled concurrently, but outputs are handed to the producer in input order, so
//! per-key order carries from input to output.
//! A delivery that fails after librdkafka's own retries is re-sent until it succeeds; only that rare
//! re-send can land after a later record of the same key.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::DeliveryFuture;
use tokio_util::sync::CancellationToken;

use crate::kafka::{GroupConsumer, Producer};
use crate::metrics::Metrics;
pub use crate::output::Output;
use crate::output::{Outputs, is_fatal};

/// What the consume loop of a stage (router, workers) runs with, built by the caller.
pub struct StageDeps {
    /// The member of the stage's consumer group, offsets stored manually. Shared, so a stage can
    /// ask which partitions the group assigned it (the router's reconciler does).
    pub consumer: Arc<GroupConsumer>,
    /// The topics the consumer subscribes to when the loop starts. Not before: a member that
    /// joined its group but does not poll yet (the router reading back its history) would hold
    /// partitions idle, and its `max.poll.interval.ms` would already run.
    pub input: Vec<String>,
    /// The idempotent producer.
    pub producer: Producer,
    /// Topic names.
    pub topics: crate::topics::Topics,
    /// Longest drain on shutdown.
    pub drain: Duration,
    /// The process's metrics.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// A record a stage cannot process: retrying would fail the same way.
#[derive(Debug, Clone)]
pub struct Poison {
    /// Why, for the `inlet-error` header and logs.
    pub reason: String,
    /// Records to produce besides the dead letter (e.g. a delivery event saying so).
    pub outputs: Vec<Output>,
}

/// What a stage does with one input record.
pub trait Handler {
    /// The stage, for dead-letter headers, logs and metrics.
    fn stage(&self) -> crate::records::Stage;

    /// The outputs for `message`, or why it is poison. Transient trouble (the broker) is the
    /// pipeline's to retry; a handler fails only for records that can never be processed.
    fn handle(
        &self,
        message: &OwnedMessage,
    ) -> impl Future<Output = Result<Vec<Output>, Poison>> + Send;
}

/// The dead letter of `message`: its key, value and headers, plus why and where from.
fn dead_letter(dlq_topic: &str, stage: &str, message: &OwnedMessage, reason: &str) -> Output {
    use rdkafka::message::Headers;
    let mut output = Output {
        topic: dlq_topic.to_owned(),
        key: message.key().unwrap_or_default().to_vec(),
        payload: bytes::Bytes::copy_from_slice(message.payload().unwrap_or_default()),
        headers: Vec::new(),
        tombstone: false,
    };
    if let Some(original) = message.headers() {
        for header in original.iter() {
            output
                .headers
                .push((header.key.to_owned(), header.value.map(<[u8]>::to_vec)));
        }
    }
    let source = format!(
        "{}/{}/{}",
        message.topic(),
        message.partition(),
        message.offset()
    );
    output
        .header(crate::records::headers::ERROR_STAGE, stage)
        .header(crate::records::headers::ERROR, reason)
        .header(crate::records::headers::ERROR_SOURCE, source)
}

/// Where an input came from, to store its offset once its outputs are acknowledged.
struct Position {
    topic: String,
    partition: i32,
    offset: i64,
}

/// Subscribes `deps.consumer` to `deps.input` and consumes until `shutdown`, producing each
/// input's outputs and storing offsets in order as outputs are acknowledged.
///
/// Inputs are handled concurrently (a handler may wait on a lookup, e.g. the router asking
/// Bitbucket for changed files), but their outputs are handed to the producer strictly in input
/// order, so one key's records never overtake each other. At most `max_in_flight` inputs are
/// being handled or await acknowledgement at once. On shutdown it stops consuming, drops what is
/// still being handled (it will be replayed), waits up to `deps.drain` for the outputs already
/// handed over, stores their offsets and commits, then leaves the consumer group so the other
/// members take the partitions over at once (a static member stays: see [`leave`]).
pub async fn run<H: Handler>(
    deps: StageDeps,
    handler: H,
    max_in_flight: usize,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let stage = Stage {
        dlq_topic: deps.topics.dlq(),
        outputs: Outputs::new(deps.producer),
        metrics: deps.metrics,
        handler,
        shutdown,
    };
    let consumer = deps.consumer;
    let input: Vec<&str> = deps.input.iter().map(String::as_str).collect();
    consumer.subscribe(&input)?;
    let reported = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let mut lag_tick = tokio::time::interval(LAG_INTERVAL);
    lag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut handling = FuturesOrdered::new();
    let mut confirming = FuturesOrdered::new();
    loop {
        tokio::select! {
            biased;
            _ = stage.shutdown.cancelled() => break,
            _ = lag_tick.tick() => {
                let (consumer, metrics) = (consumer.clone(), stage.metrics.clone());
                let (name, reported) = (stage.handler.stage().as_str(), reported.clone());
                // Metadata calls block inside librdkafka.
                tokio::task::spawn_blocking(move || record_lag(&consumer, &metrics, name, &reported));
            }
            Some(position) = confirming.next(), if !confirming.is_empty() => {
                store(&consumer, &position);
            }
            Some((position, outputs)) = handling.next(), if !handling.is_empty() => {
                confirming.push_back(stage.hand_over(position, outputs).await);
            }
            message = consumer.recv(), if handling.len() + confirming.len() < max_in_flight => {
                match message {
                    Ok(message) => handling.push_back(stage.handle(message.detach())),
                    Err(err) => {
                        tracing::warn!(error = %err, "consume failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
    drop(handling);
    drain_and_commit(consumer.clone(), confirming, deps.drain).await;
    leave(&consumer).await;
    Ok(())
}

/// Runs `handler` as the stage it names until `shutdown` ([`run`]), and logs when it stopped.
pub async fn run_stage<H: Handler>(
    deps: StageDeps,
    handler: H,
    config: &crate::config::StageConfig,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let stage = handler.stage().as_str();
    run(deps, handler, config.max_in_flight, shutdown).await?;
    tracing::info!("{stage} stopped");
    Ok(())
}

/// What the loop holds besides its consumer.
struct Stage<H> {
    handler: H,
    outputs: Outputs,
    dlq_topic: String,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl<H: Handler> Stage<H> {
    /// Handles one input: its position and outputs.
    async fn handle(&self, message: OwnedMessage) -> (Position, Vec<Output>) {
        let outputs = self.outputs_of(&message).await;
        let position = Position {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
        };
        (position, outputs)
    }

    /// Hands an input's outputs to the producer (called in input order); the returned future
    /// resolves to the input's position once every output was acknowledged.
    async fn hand_over(
        &self,
        position: Position,
        outputs: Vec<Output>,
    ) -> impl Future<Output = Position> + use<H> {
        let mut deliveries = Vec::with_capacity(outputs.len());
        for output in outputs {
            let delivery = enqueue(&self.outputs, &output, &self.shutdown).await;
            deliveries.push((output, delivery));
        }
        let refused = Refused {
            outputs: self.outputs.clone(),
            dlq_topic: self.dlq_topic.clone(),
            stage: self.handler.stage(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
        };
        confirm(refused, deliveries, position)
    }

    /// The handler's outputs, or for poison its outputs plus the dead letter.
    async fn outputs_of(&self, message: &OwnedMessage) -> Vec<Output> {
        // A panic while handling one record (a bug meeting hostile input) makes that record poison;
        // the stage goes on with the next one instead of crash-looping on it.
        let handled = AssertUnwindSafe(self.handler.handle(message))
            .catch_unwind()
            .await;
        let poison = match handled {
            Ok(Ok(outputs)) => return outputs,
            Ok(Err(poison)) => poison,
            Err(panic) => Poison {
                reason: format!("the handler panicked: {}", panic_message(&*panic)),
                outputs: Vec::new(),
            },
        };
        let stage = self.handler.stage();
        tracing::error!(
            stage = stage.as_str(),
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason = %poison.reason,
            "unprocessable record sent to the dead-letter topic"
        );
        // Counted here, once, so every stage's dead-letter counter moves.
        if let Some(counter) = self.metrics.dead_letters(stage) {
            counter.inc();
        }
        let mut outputs = poison.outputs;
        outputs.push(dead_letter(
            &self.dlq_topic,
            stage.as_str(),
            message,
            &poison.reason,
        ));
        outputs
    }
}

/// The text of a panic payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// On shutdown: waits up to `drain` for in-flight outputs, stores their offsets and commits.
async fn drain_and_commit<F: Future<Output = Position>>(
    consumer: Arc<GroupConsumer>,
    mut in_flight: FuturesOrdered<F>,
    drain: Duration,
) {
    let drained = tokio::time::timeout(drain, async {
        while let Some(position) = in_flight.next().await {
            store(&consumer, &position);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "shutdown: some outputs were not acknowledged in time; they will be replayed"
        );
    }
    let commit =
        tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync)).await;
    match commit {
        Ok(Ok(())) | Ok(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "final offset commit failed"),
        Err(err) => tracing::warn!(error = %err, "final offset commit task failed"),
    }
}

/// The longest a departing member waits for its partitions to be revoked and its LeaveGroup sent.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// After the final commit: a dynamic member unsubscribes, which revokes its partitions
/// (librdkafka commits their stored offsets once more) and sends LeaveGroup, so the group
/// rebalances now instead of after a session timeout. A static member (`group.instance.id`)
/// stays in the group on purpose: restarted under the same id within the session timeout, it
/// gets its partitions back without any rebalance (KIP-345).
async fn leave(consumer: &Arc<GroupConsumer>) {
    let stage = consumer.context().stage().as_str();
    if consumer.context().is_static() {
        tracing::info!(
            stage,
            "static group member: not leaving the group; its partitions wait for this instance              up to the session timeout"
        );
        return;
    }
    let unsubscribing = consumer.clone();
    match tokio::task::spawn_blocking(move || unsubscribing.unsubscribe()).await {
        Ok(()) => {}
        Err(err) => {
            tracing::warn!(stage, error = %err, "unsubscribing failed");
            return;
        }
    }
    // The revocation is served by polling: records still fetched are dropped unhandled (their
    // offsets were not stored, so the next owner reads them).
    let deadline = tokio::time::Instant::now() + LEAVE_TIMEOUT;
    loop {
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or_default();
        if assigned == 0 {
            tracing::info!(stage, "left the consumer group");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                stage,
                assigned,
                "partitions not revoked in time; the group rebalances after the session timeout"
            );
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), consumer.recv()).await;
    }
}

/// What became of handing an output to the producer.
enum Enqueued {
    /// In the producer's queue; resolves with the broker's answer.
    Pending(DeliveryFuture),
    /// Refused for good (too large, not authorized, …): retrying cannot help.
    Refused(KafkaError),
    /// Shutdown came first.
    Shutdown,
}

/// Hands `output` to the producer, waiting while its queue is full and retrying what can be
/// retried.
async fn enqueue(outputs: &Outputs, output: &Output, shutdown: &CancellationToken) -> Enqueued {
    loop {
        let wait = match outputs.enqueue(output) {
            Ok(delivery) => return Enqueued::Pending(delivery),
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                Duration::from_millis(5)
            }
            Err(err) if is_fatal(&err) => return Enqueued::Refused(err),
            Err(err) => {
                tracing::error!(error = %err, topic = %output.topic, "cannot enqueue output; retrying");
                Duration::from_millis(200)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Enqueued::Shutdown,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The broker's final answer for an enqueued output.
async fn acknowledged(enqueued: Enqueued) -> Result<(), KafkaError> {
    match enqueued {
        Enqueued::Pending(delivery) => match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((err, _))) => Err(err),
            Err(_) => Err(KafkaError::Canceled),
        },
        Enqueued::Refused(err) => Err(err),
        Enqueued::Shutdown => Err(KafkaError::Canceled),
    }
}

/// Where outputs the broker refuses for good go: the dead-letter topic, so the partition moves on.
struct Refused {
    outputs: Outputs,
    dlq_topic: String,
    stage: crate::records::Stage,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl Refused {
    /// Sends `output` until the broker takes it, retrying what can be retried; the error when the
    /// broker refuses it for good, or shutdown came first.
    async fn deliver(&self, output: &Output, first: Enqueued) -> Result<(), KafkaError> {
        let mut result = acknowledged(first).await;
        while let Err(err) = &result {
            if self.shutdown.is_cancelled() || is_fatal(err) {
                break;
            }
            tracing::warn!(error = %err, topic = %output.topic, "output not acknowledged; re-sending");
            tokio::time::sleep(Duration::from_millis(500)).await;
            result = acknowledged(enqueue(&self.outputs, output, &self.shutdown).await).await;
        }
        result
    }

    /// The dead letter of an output the broker refused: its key and headers, its value unless
    /// the value was the problem, and why.
    fn dead_letter(&self, output: &Output, err: &KafkaError) -> Output {
        let too_large = matches!(
            err.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
        );
        let mut letter = Output {
            topic: self.dlq_topic.clone(),
            key: output.key.clone(),
            payload: if too_large {
                bytes::Bytes::new()
            } else {
                output.payload.clone()
            },
            headers: output.headers.clone(),
            tombstone: false,
        };
        if too_large {
            letter = letter.header(
                "inlet-error-payload-bytes",
                output.payload.len().to_string(),
            );
        }
        letter
            .header(crate::records::headers::ERROR_STAGE, self.stage.as_str())
            .header(
                crate::records::headers::ERROR,
                format!("the broker refused the output: {err}"),
            )
            .header(
                crate::records::headers::ERROR_SOURCE,
                format!("output to {}", output.topic),
            )
    }
}

/// Resolves once every output is acknowledged, re-sending failed ones. An output the broker
/// refuses for good (too large, not authorized) goes to the dead-letter topic instead; only if
/// that is refused too is it dropped, with an error line. Anything else is retried: a partition
/// waits rather than store an offset whose outputs are not on Kafka.
async fn confirm(
    refused: Refused,
    deliveries: Vec<(Output, Enqueued)>,
    position: Position,
) -> Position {
    for (output, delivery) in deliveries {
        let Err(err) = refused.deliver(&output, delivery).await else {
            continue;
        };
        if refused.shutdown.is_cancelled() {
            // Leave the offset unstored: never acknowledge what was not delivered.
            return std::future::pending().await;
        }
        tracing::error!(error = %err, topic = %output.topic, "the broker refuses an output for good; it goes to the dead-letter topic");
        if let Some(counter) = refused.metrics.dead_letters(refused.stage) {
            counter.inc();
        }
        let letter = refused.dead_letter(&output, &err);
        let first = enqueue(&refused.outputs, &letter, &refused.shutdown).await;
        if let Err(err) = refused.deliver(&letter, first).await {
            if refused.shutdown.is_cancelled() {
                return std::future::pending().await;
            }
            tracing::error!(error = %err, topic = %output.topic, key = %String::from_utf8_lossy(&output.key), "the dead-letter topic refuses it too; the output is dropped");
        }
    }
    position
}

/// How often consumer lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// Sets `inlet_consumer_lag_records` for each partition the consumer is assigned, and removes the
/// series of partitions it no longer reads (moved to another process by a rebalance).
fn record_lag(
    consumer: &GroupConsumer,
    metrics: &crate::metrics::Metrics,
    stage: &str,
    reported: &std::sync::Mutex<std::collections::BTreeSet<i32>>,
) {
    use rdkafka::topic_partition_list::Offset;
    let Ok(positions) = consumer.position() else {
        return;
    };
    let assigned: std::collections::BTreeSet<i32> =
        positions.elements().iter().map(|e| e.partition()).collect();
    let mut reported = reported.lock().unwrap_or_else(|p| p.into_inner());
    for gone in reported.difference(&assigned) {
        let partition = gone.to_string();
        let _ = metrics
            .consumer_lag
            .remove_label_values(&[stage, &partition]);
        let _ = metrics
            .consumer_stalled
            .remove_label_values(&[stage, &partition]);
        metrics.progress.forget(stage, *gone);
    }
    *reported = assigned;
    drop(reported);
    for element in positions.elements() {
        let Ok((low, high)) =
            consumer.fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(2))
        else {
            continue;
        };
        let position = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => low,
        };
        let lag = (high - position).max(0);
        let partition = element.partition().to_string();
        metrics
            .consumer_lag
            .with_label_values(&[stage, &partition])
            .set(lag);
        let stalled = metrics.progress.observe(
            stage,
            element.partition(),
            position,
            lag,
            std::time::Instant::now(),
        );
        metrics
            .consumer_stalled
            .with_label_values(&[stage, &partition])
            .set(i64::try_from(stalled.as_secs()).unwrap_or(i64::MAX));
    }
}

fn store(consumer: &GroupConsumer, position: &Position) {
    if let Err(err) = consumer.store_offset(&position.topic, position.partition, position.offset) {
        // After a rebalance the partition may belong to another member; it will replay from the
        // last commit, which is the at-least-once promise.
        tracing::debug!(error = %err, partition = position.partition, offset = position.offset, "offset not stored");
    }
}
