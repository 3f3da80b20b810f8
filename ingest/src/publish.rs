//! Publishing verified webhooks to `inlet.webhooks` and waiting for the broker's acknowledgement.
//!
//! Delivery guarantee: [`Publish::publish`] returns `Ok` only once the broker acknowledged the
//! record (acks=all, idempotent producer), so ingest never answers 2xx for a webhook that is not
//! on the topic. A full producer queue or a late acknowledgement is backpressure (503), not loss:
//! a record that was enqueued but answered 503 may still land, which at-least-once allows.

use std::future::Future;
use std::time::Duration;

use inlet_core::kafka::Producer;
use inlet_core::records::headers;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use crate::verify::Verified;

/// A verified webhook ready for Kafka: the raw body plus its metadata headers.
#[derive(Debug)]
pub struct WebhookRecord {
    /// `{integration}/{project}/{repo}`, lower-case: per-repository ordering.
    pub key: String,
    /// Bitbucket's `X-Request-Id`.
    pub delivery_id: String,
    /// Bitbucket's `X-Event-Key`.
    pub event_key: String,
    /// RFC 3339 receive time.
    pub received_at: String,
    /// W3C trace context, when the request carried one.
    pub traceparent: Option<String>,
    /// Control-log offset ingest had applied.
    pub control_offset: i64,
    /// The authenticated request.
    pub verified: Verified,
}

/// Why a publish did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The producer's queue is full.
    #[error("the producer queue is full")]
    QueueFull,
    /// The broker did not acknowledge within the deadline.
    #[error("the broker did not acknowledge in time")]
    Timeout,
    /// The broker refused the record.
    #[error("the broker refused the record: {0}")]
    Broker(KafkaError),
}

/// Where verified webhooks go. The Kafka implementation is [`KafkaPublisher`]; tests use fakes.
pub trait Publish: Send + Sync + 'static {
    /// Publishes `record`, resolving once it is acknowledged.
    fn publish(
        &self,
        record: WebhookRecord,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}

/// Publishes to the webhooks topic.
pub struct KafkaPublisher {
    producer: Producer,
    topic: String,
    timeout: Duration,
}

impl KafkaPublisher {
    /// A publisher to `topic` that waits at most `timeout` for acknowledgements.
    pub fn new(producer: Producer, topic: String, timeout: Duration) -> Self {
        KafkaPublisher {
            producer,
            topic,
            timeout,
        }
    }
}

impl Publish for KafkaPublisher {
    async fn publish(&self, record: WebhookRecord) -> Result<(), PublishError> {
        let offset = record.control_offset.to_string();
        let mut kafka_headers = OwnedHeaders::new_with_capacity(7)
            .insert(header(headers::DELIVERY_ID, &record.delivery_id))
            .insert(header(headers::EVENT_KEY, &record.event_key))
            .insert(header(
                headers::INTEGRATION_ID,
                &record.verified.integration_id,
            ))
            .insert(header(
                headers::INTEGRATION_NAME,
                &record.verified.integration_name,
            ))
            .insert(header(headers::RECEIVED_AT, &record.received_at))
            .insert(header(headers::CONTROL_OFFSET, &offset));
        if let Some(traceparent) = &record.traceparent {
            kafka_headers = kafka_headers.insert(header(headers::TRACEPARENT, traceparent));
        }
        let delivery = self
            .producer
            .send_result(
                FutureRecord::to(&self.topic)
                    .key(&record.key)
                    .payload(record.verified.body.as_ref())
                    .headers(kafka_headers),
            )
            .map_err(|(err, _)| match err {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                    PublishError::QueueFull
                }
                other => PublishError::Broker(other),
            })?;
        match tokio::time::timeout(self.timeout, delivery).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err((err, _)))) => Err(PublishError::Broker(err)),
            Ok(Err(_canceled)) => Err(PublishError::Broker(KafkaError::Canceled)),
            Err(_) => Err(PublishError::Timeout),
        }
    }
}

fn header<'a>(key: &'a str, value: &'a String) -> Header<'a, &'a String> {
    Header {
        key,
        value: Some(value),
    }
}
