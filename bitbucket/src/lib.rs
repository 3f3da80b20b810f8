//! inlet-bitbucket: everything inlet knows about Bitbucket Data Center.
//!
//! # Layout
//!
//! - [`payload`]: the webhook payload model and its lenient parser (re-exported at the crate
//!   root: [`parse`], [`Event`], [`events`]);
//! - [`signature`]: `X-Hub-Signature` HMAC-SHA256 signing and constant-time verification.
//!
//! What enters: raw webhook bodies and their headers. What leaves: typed events, or a reason the
//! body is not one. Nothing here touches Kafka or the control plane.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod payload;
pub mod signature;

pub use payload::*;
