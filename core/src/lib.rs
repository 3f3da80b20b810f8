//! inlet-core: what every stage shares, and nothing about Bitbucket payloads or the control plane
//! (it names Bitbucket only in the client's config and metric labels).
//!
//! # Layout
//!
//! - [`config`]: the typed configuration tree, its layers and validation.
//! - [`records`]: `StackTrigger`, `RunDecision`, `DeliveryEvent`, webhook headers, deterministic ids.
//! - [`topics`]: topic names and settings.
//! - [`kafka`]: building clients, creating topics, the embedded broker.
//! - [`output`]: the one way records reach Kafka, with one classification of producer errors.
//! - [`pipeline`]: the at-least-once consume → produce → store-offset loop, with dead letters.
//! - [`metrics`]: the Prometheus registry and every metric, labels from enums.
//! - [`listener`], [`http`], [`ops`]: the HTTP listener every stage serves, its answers, and the
//!   `/healthz`, `/readyz`, `/metrics` endpoints.
//! - [`dedup`]: bounded, time-windowed memory of what was already processed.
//! - [`secret`]: a string that never prints.
//! - [`clock`], [`ready`], [`telemetry`]: timestamps, the ready file, logging.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod config;
pub mod dedup;
pub mod http;
pub mod kafka;
pub mod listener;
pub mod metrics;
pub mod ops;
pub mod output;
pub mod pipeline;
pub mod progress;
pub mod ready;
pub mod records;
pub mod secret;
pub mod telemetry;
pub mod topics;

pub use tokio_util::sync::CancellationToken;
