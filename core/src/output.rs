//! The one way records reach Kafka: an [`Output`] (topic, key, value, headers) handed to the
//! process's [`Outputs`], which classifies every producer error in one place.
//!
//! - a full producer queue is backpressure: wait (or, for a caller with a deadline, give up with
//!   [`SendError::QueueFull`] so the caller can answer 503);
//! - the codes in [`is_fatal`] can never succeed for this record (too large, not authorized,
//!   invalid): fail at once;
//! - everything else (broker down, leader moved, timeouts) is retried.
//!
//! Delivery guarantee: `Ok` means the broker acknowledged the record (acks=all, idempotent).

use std::time::Duration;

use bytes::Bytes;
use rdkafka::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use serde::Serialize;
use tokio::time::Instant;

use crate::kafka::Producer;
use crate::records::{DeliveryEvent, headers};

/// One record to produce.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Destination topic.
    pub topic: String,
    /// Record key.
    pub key: Vec<u8>,
    /// Record value (shared, so a webhook body is never copied on its way to the producer).
    pub payload: Bytes,
    /// Record headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// A tombstone: the record has no value at all (not an empty one), so compaction removes
    /// the key from a compacted topic.
    pub tombstone: bool,
}

impl Output {
    /// `value` as JSON on `topic`, keyed by `key`.
    pub fn json<T: Serialize>(topic: &str, key: &str, value: &T) -> Output {
        // The records inlet writes are plain structs with string keys: serialising cannot fail.
        let payload = serde_json::to_vec(value).unwrap_or_else(|err| {
            tracing::error!(error = %err, topic, "cannot serialise a record");
            Vec::new()
        });
        Output {
            topic: topic.to_owned(),
            key: key.as_bytes().to_vec(),
            payload: payload.into(),
            headers: Vec::new(),
            tombstone: false,
        }
    }

    /// A tombstone for `key` on the compacted `topic`.
    pub fn tombstone(topic: &str, key: &str) -> Output {
        Output {
            topic: topic.to_owned(),
            key: key.as_bytes().to_vec(),
            tombstone: true,
            ..Output::default()
        }
    }

    /// A delivery event on `topic`, keyed by its delivery id.
    pub fn delivery_event(topic: &str, event: &DeliveryEvent) -> Output {
        Output::json(topic, &event.delivery_id, event)
    }

    /// The same record with one more header.
    pub fn header(mut self, key: &str, value: impl AsRef<[u8]>) -> Output {
        self.headers
            .push((key.to_owned(), Some(value.as_ref().to_vec())));
        self
    }

    /// The same record with `traceparent`, when there is one.
    pub fn trace(self, traceparent: Option<&str>) -> Output {
        match traceparent {
            Some(traceparent) => self.header(headers::TRACEPARENT, traceparent),
            None => self,
        }
    }

    /// A stored webhook published again (admin redelivery, `inlet replay`): the same key, body
    /// and headers, marked as a redelivery (so the router's duplicate filter lets it through)
    /// and stamped with the control offset the republisher had applied (so the router sees the
    /// stacks that exist now).
    pub fn republished_webhook(topic: &str, message: &OwnedMessage, control_offset: i64) -> Output {
        let mut output = Output {
            topic: topic.to_owned(),
            key: message.key().unwrap_or_default().to_vec(),
            payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
            headers: Vec::new(),
            tombstone: false,
        };
        if let Some(original) = message.headers() {
            for header in original.iter() {
                if header.key == headers::REDELIVERY || header.key == headers::CONTROL_OFFSET {
                    continue;
                }
                output
                    .headers
                    .push((header.key.to_owned(), header.value.map(<[u8]>::to_vec)));
            }
        }
        output
            .header(headers::REDELIVERY, "true")
            .header(headers::CONTROL_OFFSET, control_offset.to_string())
    }

    fn record(&self) -> FutureRecord<'_, [u8], [u8]> {
        let mut record = FutureRecord::to(&self.topic).key(&self.key[..]);
        if !self.tombstone {
            record = record.payload(&self.payload[..]);
        }
        if !self.headers.is_empty() {
            let mut headers = OwnedHeaders::new_with_capacity(self.headers.len());
            for (key, value) in &self.headers {
                headers = headers.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            record = record.headers(headers);
        }
        record
    }
}

/// Why a record was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The producer's queue stayed full until the deadline.
    #[error("the producer queue is full")]
    QueueFull,
    /// The broker did not acknowledge before the deadline.
    #[error("the broker did not acknowledge in time")]
    Timeout,
    /// The broker refused the record for good.
    #[error("the broker refused the record: {0}")]
    Fatal(KafkaError),
}

/// Error codes that retrying cannot fix.
pub fn is_fatal(err: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        err.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::InvalidRecord
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::TransactionalIdAuthorizationFailed
                | C::InvalidRequiredAcks
                | C::Fatal
                | C::UnknownTopic
                | C::InvalidTopic
        )
    )
}

/// How long to wait before enqueueing again while the producer queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);
/// How long to wait before re-sending after a retriable error.
const RETRY_WAIT: Duration = Duration::from_millis(200);

/// The process's producer, behind the one error classification.
#[derive(Clone)]
pub struct Outputs {
    producer: Producer,
}

impl Outputs {
    /// Outputs through `producer`.
    pub fn new(producer: Producer) -> Self {
        Outputs { producer }
    }

    /// The producer (for flushing on shutdown).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Hands `output` to the producer without waiting: its acknowledgement, or why it could not
    /// be enqueued.
    pub fn enqueue(&self, output: &Output) -> Result<DeliveryFuture, KafkaError> {
        self.producer
            .send_result(output.record())
            .map_err(|(err, _)| err)
    }

    /// Produces `output` and waits for its acknowledgement, retrying what can be retried, until
    /// `deadline` has passed. The record's offset.
    pub async fn send(&self, output: &Output, deadline: Duration) -> Result<i64, SendError> {
        let until = Instant::now() + deadline;
        loop {
            let failure = match self.enqueue(output) {
                Ok(delivery) => match tokio::time::timeout_at(until, delivery).await {
                    Ok(Ok(Ok(delivery))) => return Ok(delivery.offset),
                    Ok(Ok(Err((err, _)))) => err,
                    Ok(Err(_canceled)) => KafkaError::Canceled,
                    Err(_) => return Err(SendError::Timeout),
                },
                Err(err) => err,
            };
            let queue_full = matches!(
                failure,
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
            );
            if is_fatal(&failure) {
                return Err(SendError::Fatal(failure));
            }
            let wait = if queue_full {
                QUEUE_FULL_WAIT
            } else {
                tracing::debug!(error = %failure, topic = %output.topic, "output not acknowledged; retrying");
                RETRY_WAIT
            };
            if Instant::now() + wait >= until {
                return Err(if queue_full {
                    SendError::QueueFull
                } else {
                    SendError::Timeout
                });
            }
            tokio::time::sleep(wait).await;
        }
    }
}
