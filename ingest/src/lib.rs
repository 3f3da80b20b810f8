//! inlet-ingest: the thin edge. It authenticates Bitbucket Data Center webhooks and publishes
//! every authenticated one to `inlet.webhooks`; nothing else (the admin API the same process
//! serves lives in `inlet-control`).
//!
//! # Layout
//!
//! A webhook's path, one module per step:
//! - [`webhook`]: the endpoint's steps in order, from the URL to the answer;
//! - [`verify`]: HMAC verification; only it yields a [`verify::Verified`] request;
//! - [`publish`]: turns a verified request into a Kafka record and waits for the broker.
//!
//! Delivery guarantee: 202 only after the broker acknowledged the record (acks=all).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod publish;
pub mod verify;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use inlet_control::control_log::ControlLog;
use inlet_control::crypto::SecretsKey;
use inlet_core::CancellationToken;
use inlet_core::config::IngestConfig;
use inlet_core::kafka::Producer;
use inlet_core::listener;
use inlet_core::metrics::Metrics;
use tokio::net::TcpListener;

use crate::publish::KafkaPublisher;
use crate::webhook::{Limits, Webhooks};

/// What ingest runs with, built by the caller.
pub struct Deps {
    /// Bound webhook listener.
    pub listener: TcpListener,
    /// This process's fold of the control log.
    pub control: ControlLog,
    /// The idempotent producer.
    pub producer: Producer,
    /// Topic of verified webhooks.
    pub webhooks_topic: String,
    /// Opens webhook secrets.
    pub secrets_key: SecretsKey,
    /// Longest drain on shutdown.
    pub drain: Duration,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
}

/// Serves the webhook listener until `shutdown`, then drains it and flushes the producer.
pub async fn run(config: &IngestConfig, deps: Deps, shutdown: CancellationToken) {
    let publisher = KafkaPublisher::new(
        deps.producer.clone(),
        deps.webhooks_topic,
        Duration::from_millis(config.publish_timeout_ms),
    );
    let webhooks = Arc::new(Webhooks::new(
        deps.control,
        deps.secrets_key,
        publisher,
        Limits::from(config),
        deps.metrics.ingest.clone(),
    ));
    listener::serve(
        "webhooks",
        deps.listener,
        webhooks,
        listener::ConnectionLimits {
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            max_connections: config.max_connections,
            max_head_bytes: config.max_head_bytes,
            max_headers: 100,
        },
        deps.drain,
        shutdown,
    )
    .await;
    // Every 202 already waited for its acknowledgement; the flush covers records answered 503
    // on timeout that are still queued.
    let producer = deps.producer;
    let drain = deps.drain;
    let _ = tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer;
        producer.flush(drain)
    })
    .await;
    tracing::info!("ingest stopped");
}
