//! inlet-ingest: the edge. It authenticates Bitbucket Data Center webhooks and publishes them to
//! `inlet.webhooks`, and serves the admin API that appends to `inlet.control`.
//!
//! # Layout
//!
//! A webhook's path, one module per step:
//! - [`listener`]: accepts connections (header-read timeout, graceful drain) and calls a service;
//! - [`webhook`]: the webhook endpoint's steps, from routing to the answer;
//! - [`verify`]: HMAC verification; only it yields a [`verify::Verified`] request;
//! - [`publish`]: turns a verified request into a Kafka record and waits for the broker.
//!
//! The admin API lives in [`admin`]; [`error`] renders every error answer.
//!
//! Delivery guarantee: 202 only after the broker acknowledged the record (acks=all).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod deliveries;
pub mod error;
pub mod listener;
pub mod publish;
pub mod verify;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use inlet_core::CancellationToken;
use inlet_core::config::IngestConfig;
use inlet_core::control_log::ControlLog;
use inlet_core::crypto::SecretsKey;
use inlet_core::metrics::Metrics;
use inlet_core::secret::Secret;
use tokio::net::TcpListener;

use crate::admin::{Admin, AdminDeps};
use crate::publish::KafkaPublisher;
use crate::webhook::{Limits, Webhooks};

/// What ingest runs with, built by the caller.
pub struct Deps {
    /// Bound webhook listener.
    pub webhook_listener: TcpListener,
    /// Bound admin listener.
    pub admin_listener: TcpListener,
    /// This process's fold of the control log.
    pub control: ControlLog,
    /// The idempotent producer.
    pub producer: inlet_core::kafka::Producer,
    /// Topic of verified webhooks.
    pub webhooks_topic: String,
    /// Topic of manual-run triggers.
    pub triggers_topic: String,
    /// The bootstrap root-admin key.
    pub admin_key: Secret,
    /// Seals and opens webhook secrets and access tokens.
    pub secrets_key: SecretsKey,
    /// Base URL Bitbucket reaches the webhook listener at.
    pub public_base_url: String,
    /// Longest drain on shutdown.
    pub drain: Duration,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// This process's view of `inlet.deliveries`.
    pub deliveries: deliveries::DeliveryLog,
    /// Builds readers (redelivery).
    pub kafka: inlet_core::kafka::Kafka,
    /// Where delivery events go.
    pub deliveries_topic: String,
}

/// Serves both listeners until `shutdown`, then drains them and flushes the producer.
pub async fn run(config: &IngestConfig, deps: Deps, shutdown: CancellationToken) {
    let publisher = KafkaPublisher::new(
        deps.producer.clone(),
        deps.webhooks_topic.clone(),
        Duration::from_millis(config.publish_timeout_ms),
    );
    let limits = Limits {
        max_body_bytes: config.max_body_bytes,
        max_in_flight: config.max_in_flight,
        body_timeout: Duration::from_millis(config.request_timeout_ms),
    };
    let webhooks = Arc::new(Webhooks::new(
        deps.control.clone(),
        deps.secrets_key.clone(),
        publisher,
        limits,
        deps.metrics.ingest.clone(),
    ));
    let admin = Arc::new(Admin::new(
        deps.control,
        AdminDeps {
            admin_key: deps.admin_key,
            secrets_key: deps.secrets_key,
            public_base_url: deps.public_base_url,
            producer: deps.producer.clone(),
            triggers_topic: deps.triggers_topic,
            metrics: deps.metrics,
            deliveries: deps.deliveries,
            kafka: deps.kafka,
            webhooks_topic: deps.webhooks_topic.clone(),
            deliveries_topic: deps.deliveries_topic,
        },
    ));
    let header_timeout = Duration::from_millis(config.header_read_timeout_ms);
    tokio::join!(
        listener::serve(
            "webhooks",
            deps.webhook_listener,
            webhooks,
            header_timeout,
            deps.drain,
            shutdown.clone(),
        ),
        listener::serve(
            "admin",
            deps.admin_listener,
            admin,
            header_timeout,
            deps.drain,
            shutdown,
        ),
    );
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
