//! inlet-bitbucket: everything inlet knows about Bitbucket Data Center.
//!
//! # Layout
//!
//! - [`payload`]: the webhook payload model and its lenient parser (re-exported at the crate
//!   root: [`parse`], [`Event`], [`events`]);
//! - `skim`: the fast path of [`envelope`], a one-pass check of a body that reads only what the
//!   edge needs and leaves anything unusual to serde_json;
//! - [`signature`]: `X-Hub-Signature` HMAC-SHA256 signing and constant-time verification;
//! - [`client`]: the REST client — the files a push or a pull request changed — bounded in time
//!   and concurrency, retrying what is worth retrying, never paging forever;
//! - [`webhooks`]: the webhooks of a project or repository, and the idempotent sync of inlet's
//!   own webhook in one;
//! - [`fake`]: a fake Bitbucket Data Center server on loopback, for tests only.
//!
//! What enters: raw webhook bodies and their headers; REST calls' parameters. What leaves: typed
//! events, or a reason the body is not one; Bitbucket's answers, or a one-line reason there is
//! none. Nothing here touches Kafka or the control plane.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod builds;
pub mod client;
pub mod fake;
pub mod payload;
pub mod refs;
pub mod signature;
mod skim;
pub mod webhooks;

pub use payload::*;
