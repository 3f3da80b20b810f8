//! inlet-control: the control plane. There is no database: every change is a command on the
//! single-partition `inlet.control` topic, and every process folds that log into the same
//! in-memory [`registry::Registry`].
//!
//! # Layout
//!
//! - [`domain`]: spaces, integrations, stacks, API keys; [`access`]: who may do what;
//! - [`paths`]: which changed paths a stack covers (project root, globs);
//! - [`commands`]: the commands of the `inlet.control` log;
//! - [`fold`]: the deterministic fold of those commands into the [`registry::Registry`];
//! - [`registry`]: the folded state and its indexed queries;
//! - [`control_log`]: following the control topic in the background; append-and-wait;
//! - [`snapshot`]: the registry as of an offset on `inlet.control-snapshots`, so a starting
//!   process folds only the tail;
//! - [`synthetic`]: a generated control log of realistic shape, for benchmarks and scale tests;
//! - [`crypto`]: secrets sealed at rest (AES-256-GCM);
//! - [`deliveries`]: this process's view of `inlet.deliveries` (the delivery log);
//! - [`admin`]: the admin HTTP API (`/api/v1`), served by the ingest process.
//!
//! Guarantee: every process that folded the log to the same offset holds the same registry; the
//! admin API answers only after its own fold applied the command it appended.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod admin;
pub mod commands;
pub mod control_log;
pub mod crypto;
pub mod deliveries;
pub mod domain;
pub mod fold;
pub mod paths;
pub mod registry;
pub mod snapshot;
pub mod synthetic;
pub mod text;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// What a consuming stage (router, workers) runs with, built by the caller: its consume loop's
/// clients and this process's fold of the control log.
pub struct StageDeps {
    /// The consumer, producer, topics and metrics of the at-least-once loop.
    pub pipeline: inlet_core::pipeline::StageDeps,
    /// This process's fold of the control log.
    pub control: control_log::ControlLog,
}
