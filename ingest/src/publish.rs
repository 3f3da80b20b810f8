//! Publishing verified webhooks to `inlet.webhooks` and waiting for the broker's acknowledgement.
//!
//! Delivery guarantee: [`Publish::publish`] returns `Ok` only once the broker acknowledged the
//! record (acks=all, idempotent producer), so ingest never answers 2xx for a webhook that is not
//! on the topic. A full producer queue or a late acknowledgement is backpressure (503), not loss:
//! a record that was enqueued but answered 503 may still land, which at-least-once allows.

use std::future::Future;
use std::time::Duration;

use inlet_core::kafka::Producer;
use inlet_core::output::{Output, Outputs};
use inlet_core::records::headers;

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

/// Why a publish did not complete: the output path's one classification.
pub use inlet_core::output::SendError as PublishError;

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
    outputs: Outputs,
    topic: String,
    timeout: Duration,
}

impl KafkaPublisher {
    /// A publisher to `topic` that waits at most `timeout` for acknowledgements.
    pub fn new(producer: Producer, topic: String, timeout: Duration) -> Self {
        KafkaPublisher {
            outputs: Outputs::new(producer),
            topic,
            timeout,
        }
    }
}

impl WebhookRecord {
    /// The record on `topic`: the raw body, byte for byte, keyed for per-repository order, with
    /// the metadata headers of DESIGN §3.
    pub fn output(&self, topic: &str) -> Output {
        let output = Output {
            topic: topic.to_owned(),
            key: self.key.as_bytes().to_vec(),
            payload: self.verified.body.clone(),
            headers: Vec::with_capacity(7),
            tombstone: false,
        };
        output
            .header(headers::DELIVERY_ID, &self.delivery_id)
            .header(headers::EVENT_KEY, &self.event_key)
            .header(headers::INTEGRATION_ID, &self.verified.integration_id)
            .header(headers::INTEGRATION_NAME, &self.verified.integration_name)
            .header(headers::RECEIVED_AT, &self.received_at)
            .header(headers::CONTROL_OFFSET, self.control_offset.to_string())
            .trace(self.traceparent.as_deref())
    }
}

impl Publish for KafkaPublisher {
    async fn publish(&self, record: WebhookRecord) -> Result<(), PublishError> {
        self.outputs
            .send(&record.output(&self.topic), self.timeout)
            .await
            .map(|_offset| ())
    }
}
