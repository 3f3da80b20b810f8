//! Authentication of webhook requests. Only [`Unverified::verify`] yields a [`Verified`] request,
//! and only a `Verified` request can be published: an unauthenticated body cannot reach Kafka by
//! construction.

use bytes::Bytes;
use inlet_bitbucket::signature::{self, SignatureError};
use inlet_control::crypto::{CryptoError, SecretsKey};
use inlet_control::registry::Registry;
use inlet_core::clock::is_future;

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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No integration of that name (never existed, or deleted).
    #[error("no integration of that name")]
    UnknownIntegration,
    /// The signature is missing, malformed or wrong.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The integration's secret cannot be opened with this process's secrets key.
    #[error("the webhook secret cannot be opened: {0}")]
    Sealed(#[from] CryptoError),
}

impl Unverified {
    /// Checks the signature over the raw bytes against the integration's secret (and, during a
    /// rotation's grace period, the previous one), in constant time, before anything parses the
    /// body.
    pub fn verify(self, registry: &Registry, key: &SecretsKey) -> Result<Verified, VerifyError> {
        let integration = registry
            .integration(&self.integration)
            .ok_or(VerifyError::UnknownIntegration)?;
        let context = integration.webhook_secret_context();
        let mut secrets = vec![key.open(&integration.webhook_secret, &context)?];
        for previous in integration.grace_secrets() {
            if is_future(&previous.valid_until) {
                secrets.push(key.open(&previous.secret, &context)?);
            }
        }
        signature::verify(self.signature.as_deref(), &self.body, &secrets)?;
        Ok(Verified {
            integration_name: integration.name.clone(),
            integration_id: integration.id.clone(),
            body: self.body,
        })
    }
}

/// Checks at startup that `key` is the control log's secrets key: an error when it opens none of
/// the integrations' webhook secrets (a wrong key would fail every webhook). An integration whose
/// secret alone cannot be opened (a record sealed under another key) is logged and left disabled:
/// its webhooks get 503 `secrets_key_mismatch`, every other integration works.
pub fn check_secrets_key(registry: &Registry, key: &SecretsKey) -> Result<(), String> {
    let mut opened = 0;
    let mut failed = Vec::new();
    for integration in registry.integrations() {
        let context = integration.webhook_secret_context();
        match key.open(&integration.webhook_secret, &context) {
            Ok(_) => opened += 1,
            Err(err) => {
                tracing::error!(
                    integration = %integration.name,
                    key_id = %key.id(),
                    error = %err,
                    "cannot open this integration's webhook secret: its webhooks are answered 503 \
                     until it is rotated by an ingest with the right key"
                );
                failed.push(integration.name.clone());
            }
        }
    }
    if opened == 0 && !failed.is_empty() {
        return Err(format!(
            "the secrets key (id {}) opens none of the webhook secrets in the control log \
             (integrations: {}); start ingest with the key the control log was written with",
            key.id(),
            failed.join(", ")
        ));
    }
    Ok(())
}
