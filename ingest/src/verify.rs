//! Authentication of webhook requests. Only [`Unverified::verify`] yields a [`Verified`] request,
//! and only a `Verified` request can be published: an unauthenticated body cannot reach Kafka by
//! construction.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use inlet_bitbucket::signature::{self, SignatureError, SigningKey};
use inlet_control::crypto::{CryptoError, Sealed, SecretsKey};
use inlet_control::domain::Integration;
use inlet_control::registry::Registry;
use inlet_core::clock::parse_rfc3339;

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
    /// rotation's grace period, the previous ones), in constant time, before anything parses the
    /// body. Secrets are opened once per integration incarnation and sealed value ([`Keys`]).
    pub fn verify(
        self,
        registry: &Registry,
        key: &SecretsKey,
        keys: &Keys,
    ) -> Result<Verified, VerifyError> {
        let integration = registry
            .integration(&self.integration)
            .ok_or(VerifyError::UnknownIntegration)?;
        let opened = keys.for_integration(integration, key)?;
        let now = time::OffsetDateTime::now_utc();
        let usable = opened
            .keys
            .iter()
            .filter(|(_, until)| until.is_none_or(|until| until > now))
            .map(|(key, _)| key);
        signature::verify_with(self.signature.as_deref(), &self.body, usable)?;
        Ok(Verified {
            integration_name: integration.name.clone(),
            integration_id: integration.id.clone(),
            body: self.body,
        })
    }
}

/// The webhook secrets of each integration, opened and made ready for HMAC once: opening a
/// sealed secret (AES-GCM, base64) and the HMAC key schedule cost more than hashing a small
/// body, so they are not repeated per request. An entry is reused only while the integration's
/// incarnation id and every sealed value it holds are unchanged, so a rotation, a new grace
/// secret or a recreated integration opens afresh on its next webhook; secrets whose grace
/// ended are skipped by the clock at each request. At most 10,000 entries: past it the
/// cache starts over (integrations deleted long ago do not accumulate).
#[derive(Default)]
pub struct Keys {
    entries: RwLock<HashMap<String, Arc<Opened>>>,
}

/// Integrations whose opened secrets are kept at most.
const MAX_CACHED: usize = 10_000;

/// One integration's opened secrets, and what they were opened from.
struct Opened {
    integration_id: String,
    sealed: Vec<Sealed>,
    /// The current secret (no end) first, then the grace secrets with the end of their grace.
    keys: Vec<(SigningKey, Option<time::OffsetDateTime>)>,
}

impl Opened {
    fn matches(&self, integration: &Integration) -> bool {
        self.integration_id == integration.id
            && self.sealed.len() == 1 + integration.grace_secrets().count()
            && std::iter::once(&integration.webhook_secret)
                .chain(integration.grace_secrets().map(|p| &p.secret))
                .zip(&self.sealed)
                .all(|(a, b)| a == b)
    }
}

impl Keys {
    /// An empty cache.
    pub fn new() -> Self {
        Keys::default()
    }

    /// The opened secrets of `integration`, from the cache when its sealed values are those the
    /// entry was opened from.
    fn for_integration(
        &self,
        integration: &Integration,
        key: &SecretsKey,
    ) -> Result<Arc<Opened>, VerifyError> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        if let Some(opened) = entries.get(&integration.name)
            && opened.matches(integration)
        {
            return Ok(opened.clone());
        }
        drop(entries);
        let context = integration.webhook_secret_context();
        let mut keys = vec![(
            SigningKey::new(&key.open(&integration.webhook_secret, &context)?),
            None,
        )];
        let mut sealed = vec![integration.webhook_secret.clone()];
        for previous in integration.grace_secrets() {
            // An unparseable end is an ended grace, as `is_future` treats it.
            let until =
                parse_rfc3339(&previous.valid_until).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            keys.push((
                SigningKey::new(&key.open(&previous.secret, &context)?),
                Some(until),
            ));
            sealed.push(previous.secret.clone());
        }
        let opened = Arc::new(Opened {
            integration_id: integration.id.clone(),
            sealed,
            keys,
        });
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_CACHED && !entries.contains_key(&integration.name) {
            entries.clear();
        }
        entries.insert(integration.name.clone(), opened.clone());
        Ok(opened)
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
