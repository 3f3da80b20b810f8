//! Authentication of webhook requests. Only [`Unverified::verify`] yields a [`Verified`] request,
//! and only a `Verified` request can be published: an unauthenticated body cannot reach Kafka by
//! construction.

use bytes::Bytes;
use inlet_core::registry::Registry;
use inlet_core::signature::{self, SignatureError};

/// A webhook request whose body has been read but not authenticated.
#[derive(Debug)]
pub struct Unverified {
    /// The integration name from the URL.
    pub integration: String,
    /// Raw `X-Hub-Signature`.
    pub signature: Option<Vec<u8>>,
    /// The raw body.
    pub body: Bytes,
}

/// A request whose signature matched a secret of the integration it was sent to.
#[derive(Debug)]
pub struct Verified {
    /// The integration's name.
    pub integration_name: String,
    /// The integration's incarnation id.
    pub integration_id: String,
    /// The raw body, byte for byte as received.
    pub body: Bytes,
}

/// Why verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No integration of that name (never existed, or deleted).
    #[error("no integration of that name")]
    UnknownIntegration,
    /// The signature is missing, malformed or wrong.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

impl Unverified {
    /// Checks the signature over the raw bytes against the integration's secret, in constant time,
    /// before anything parses the body.
    pub fn verify(self, registry: &Registry) -> Result<Verified, VerifyError> {
        let integration = registry
            .integration(&self.integration)
            .ok_or(VerifyError::UnknownIntegration)?;
        signature::verify(
            self.signature.as_deref(),
            &self.body,
            [&integration.webhook_secret],
        )?;
        Ok(Verified {
            integration_name: integration.name.clone(),
            integration_id: integration.id.clone(),
            body: self.body,
        })
    }
}
