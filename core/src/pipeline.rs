//! The at-least-once consume → handle → produce loop shared by router and workers.
//!
//! Delivery guarantee: an input offset is stored (and later auto-committed) only after every output
//! of that input and of all inputs before it was acknowledged by the broker. A crash replays the
//! unacknowledged tail; outputs carry deterministic ids so consumers can deduplicate the replay.
//!
//! A record the handler cannot process ([`Poison`]) goes to the dead-letter topic with its key,
//! value and headers plus `inlet-error*` headers, and the partition moves on.
//!
//! Outputs are handed to the producer in input order, so per-key order carries from input to output.
//! A delivery that fails after librdkafka's own retries is re-sent until it succeeds; only that rare
//! re-send can land after a later record of the same key.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureRecord};

use crate::kafka::Producer;
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

/// What a consuming stage (router, workers) runs with, built by the caller.
pub struct StageDeps {
    /// Consumer subscribed to the stage's input topic, offsets stored manually.
    pub consumer: StreamConsumer,
    /// The idempotent producer.
    pub producer: Producer,
    /// This process's fold of the control log.
    pub control: crate::control_log::ControlLog,
    /// Topic names.
    pub topics: crate::topics::Topics,
    /// Longest drain on shutdown.
    pub drain: Duration,
    /// The process's metrics.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// One record a handler wants produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// Destination topic.
    pub topic: String,
    /// Record key.
    pub key: String,
    /// Record value.
    pub payload: Vec<u8>,
    /// Record headers.
    pub headers: Option<OwnedHeaders>,
}

impl Output {
    /// A delivery event for `topic`, keyed by its delivery id.
    pub fn delivery_event(topic: &str, event: &crate::records::DeliveryEvent) -> Output {
        Output {
            topic: topic.to_owned(),
            key: event.delivery_id.clone(),
            payload: serde_json::to_vec(event).unwrap_or_default(),
            headers: None,
        }
    }

    fn record(&self) -> FutureRecord<'_, String, Vec<u8>> {
        let record = FutureRecord::to(&self.topic)
            .key(&self.key)
            .payload(&self.payload);
        match &self.headers {
            Some(headers) => record.headers(headers.clone()),
            None => record,
        }
    }
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
    /// The stage's name, for dead letters.
    fn stage(&self) -> &'static str;

    /// The outputs for `message`, or why it is poison. Transient trouble (the broker) is the
    /// pipeline's to retry; a handler fails only for records that can never be processed.
    fn handle(
        &self,
        message: &OwnedMessage,
    ) -> impl Future<Output = Result<Vec<Output>, Poison>> + Send;
}

/// The dead letter of `message`: its key, value and headers, plus why and where from.
fn dead_letter(dlq_topic: &str, stage: &str, message: &OwnedMessage, reason: &str) -> Output {
    use rdkafka::message::{Header, Headers};
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for header in original.iter() {
            headers = headers.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
    }
    let source = format!(
        "{}/{}/{}",
        message.topic(),
        message.partition(),
        message.offset()
    );
    headers = headers
        .insert(Header {
            key: crate::records::headers::ERROR_STAGE,
            value: Some(stage),
        })
        .insert(Header {
            key: crate::records::headers::ERROR,
            value: Some(reason),
        })
        .insert(Header {
            key: crate::records::headers::ERROR_SOURCE,
            value: Some(&source),
        });
    Output {
        topic: dlq_topic.to_owned(),
        key: message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default(),
        payload: message.payload().unwrap_or_default().to_vec(),
        headers: Some(headers),
    }
}

/// Where an input came from, to store its offset once its outputs are acknowledged.
struct Position {
    topic: String,
    partition: i32,
    offset: i64,
}

/// Consumes `deps.consumer` (already subscribed) until `shutdown`, producing each input's outputs
/// and storing offsets in order as outputs are acknowledged. At most `max_in_flight` inputs await
/// acknowledgement at once. On shutdown it stops consuming, waits up to `deps.drain` for in-flight
/// outputs, stores their offsets and commits.
pub async fn run<H: Handler>(
    deps: StageDeps,
    handler: H,
    max_in_flight: usize,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let StageDeps {
        consumer,
        producer,
        control,
        topics,
        drain,
        metrics,
    } = deps;
    let reported = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let dlq_topic = topics.dlq();
    let mut lag_tick = tokio::time::interval(LAG_INTERVAL);
    lag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let consumer = Arc::new(consumer);
    let mut in_flight = FuturesOrdered::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = lag_tick.tick() => {
                let (consumer, metrics, stage) = (consumer.clone(), metrics.clone(), handler.stage());
                let (control, reported) = (control.clone(), reported.clone());
                // Metadata calls block inside librdkafka.
                tokio::task::spawn_blocking(move || {
                    record_lag(&consumer, &metrics, stage, &reported);
                    control.refresh_end_offset_blocking();
                });
            }
            Some(position) = in_flight.next(), if !in_flight.is_empty() => {
                store(&consumer, &position);
            }
            message = consumer.recv(), if in_flight.len() < max_in_flight => {
                let message = match message {
                    Ok(message) => message.detach(),
                    Err(err) => {
                        tracing::warn!(error = %err, "consume failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let position = Position {
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                };
                let outputs = match handler.handle(&message).await {
                    Ok(outputs) => outputs,
                    Err(poison) => {
                        tracing::error!(
                            stage = handler.stage(),
                            topic = message.topic(),
                            partition = message.partition(),
                            offset = message.offset(),
                            reason = %poison.reason,
                            "unprocessable record sent to the dead-letter topic"
                        );
                        let mut outputs = poison.outputs;
                        outputs.push(dead_letter(&dlq_topic, handler.stage(), &message, &poison.reason));
                        outputs
                    }
                };
                let mut deliveries = Vec::with_capacity(outputs.len());
                for output in outputs {
                    let delivery = enqueue(&producer, &output, &shutdown).await;
                    deliveries.push((output, delivery));
                }
                in_flight.push_back(confirm(producer.clone(), deliveries, position, shutdown.clone()));
            }
        }
    }

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
    let committer = consumer.clone();
    let commit =
        tokio::task::spawn_blocking(move || committer.commit_consumer_state(CommitMode::Sync))
            .await;
    match commit {
        Ok(Ok(())) | Ok(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "final offset commit failed"),
        Err(err) => tracing::warn!(error = %err, "final offset commit task failed"),
    }
    Ok(())
}

/// Hands `output` to the producer, waiting while its queue is full. `None` if shutdown came first.
async fn enqueue(
    producer: &Producer,
    output: &Output,
    shutdown: &CancellationToken,
) -> Option<DeliveryFuture> {
    loop {
        match producer.send_result(output.record()) {
            Ok(delivery) => return Some(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
            Err((err, _)) => {
                tracing::error!(error = %err, topic = %output.topic, "cannot enqueue output; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
}

/// Resolves once every output is acknowledged, re-sending failed ones.
async fn confirm(
    producer: Producer,
    deliveries: Vec<(Output, Option<DeliveryFuture>)>,
    position: Position,
    shutdown: CancellationToken,
) -> Position {
    for (output, delivery) in deliveries {
        let mut result = match delivery {
            Some(delivery) => match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((err, _))) => Err(err),
                Err(_) => Err(KafkaError::Canceled),
            },
            None => Err(KafkaError::Canceled),
        };
        while let Err(err) = result {
            if shutdown.is_cancelled() {
                // Leave the offset unstored: never acknowledge what was not delivered.
                return std::future::pending().await;
            }
            tracing::warn!(error = %err, topic = %output.topic, key = %output.key, "output not acknowledged; re-sending");
            tokio::time::sleep(Duration::from_millis(500)).await;
            result = producer
                .send(output.record(), Timeout::Never)
                .await
                .map(|_| ())
                .map_err(|(err, _)| err);
        }
    }
    position
}

/// How often consumer lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// Sets `inlet_consumer_lag_records` for each partition the consumer is assigned, and removes the
/// series of partitions it no longer reads (moved to another process by a rebalance).
fn record_lag(
    consumer: &StreamConsumer,
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
        let _ = metrics
            .consumer_lag
            .remove_label_values(&[stage, &gone.to_string()]);
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
        metrics
            .consumer_lag
            .with_label_values(&[stage, &element.partition().to_string()])
            .set((high - position).max(0));
    }
}

fn store(consumer: &StreamConsumer, position: &Position) {
    if let Err(err) = consumer.store_offset(&position.topic, position.partition, position.offset) {
        // After a rebalance the partition may belong to another member; it will replay from the
        // last commit, which is the at-least-once promise.
        tracing::debug!(error = %err, partition = position.partition, offset = position.offset, "offset not stored");
    }
}
