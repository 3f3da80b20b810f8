//! inlet-core: everything the stages share.
//!
//! # Layout
//!
//! - [`config`]: the typed configuration tree, its layers and validation.
//! - [`domain`]: spaces, integrations, stacks, API keys; [`access`]: who may do what.
//! - [`control`]: the commands of the `inlet.control` log.
//! - [`fold`]: the deterministic fold of those commands into the [`registry::Registry`].
//! - [`registry`]: the folded state and its indexed queries.
//! - [`control_log`]: following the control topic in the background; append-and-wait.
//! - [`records`]: `StackTrigger` and `RunDecision`, webhook headers, deterministic ids.
//! - [`topics`]: topic names and settings.
//! - [`bitbucket`]: the lenient Bitbucket Data Center payload reader.
//! - [`signature`]: `X-Hub-Signature` HMAC-SHA256 signing and verification.
//! - [`kafka`]: building clients, creating topics, the embedded broker.
//! - [`metrics`]: the Prometheus registry and every metric, labels from enums.
//! - [`pipeline`]: the at-least-once consume → produce → store-offset loop, with dead letters.
//! - [`dedup`]: bounded, time-windowed memory of what was already processed.
//! - [`secret`]: a string that never prints; [`crypto`]: secrets sealed at rest (AES-256-GCM).
//! - [`clock`], [`ready`], [`telemetry`]: timestamps, the ready file, logging.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod bitbucket;
pub mod clock;
pub mod config;
pub mod control;
pub mod control_log;
pub mod crypto;
pub mod dedup;
pub mod domain;
pub mod fold;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod ready;
pub mod records;
pub mod registry;
pub mod secret;
pub mod signature;
pub mod telemetry;
pub mod topics;

pub use tokio_util::sync::CancellationToken;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
