//! Secrets at rest: webhook secrets and access tokens travel through `inlet.control` sealed with
//! AES-256-GCM, so reading the topic reveals no secret.
//!
//! A sealed value is `v1:<key id>:<nonce>:<ciphertext>` (base64url). The key id names the key that
//! sealed it, so a process started with the wrong key says so at startup instead of failing later.
//! The associated data binds each ciphertext to its integration and field: a sealed value copied to
//! another integration does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

use inlet_core::secret::Secret;

/// Why a sealed value did not open, or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The key is not 32 bytes of hex or base64.
    #[error("the secrets key must be 32 bytes, hex (64 characters) or base64 encoded")]
    BadKey,
    /// The value was sealed with another key.
    #[error("sealed with key {sealed_with}, but this process has key {ours}")]
    WrongKey {
        /// Key id in the value.
        sealed_with: String,
        /// Key id of this process.
        ours: String,
    },
    /// Not a sealed value, or tampered with.
    #[error("the sealed value is corrupt")]
    Corrupt,
}

/// The AES-256 key secrets are sealed with. `Debug` shows only its id.
#[derive(Clone)]
pub struct SecretsKey {
    cipher: Aes256Gcm,
    id: String,
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretsKey({})", self.id)
    }
}

impl SecretsKey {
    /// Parses 32 bytes given as 64 hex characters or base64.
    pub fn parse(text: &str) -> Result<SecretsKey, CryptoError> {
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .or_else(|| URL_SAFE_NO_PAD.decode(text).ok())
            .ok_or(CryptoError::BadKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key configured in `ingest.secrets_key` or `ingest.secrets_key_file`, if either is set.
    pub fn from_config(
        config: &inlet_core::config::Config,
    ) -> Result<Option<SecretsKey>, inlet_core::config::ConfigError> {
        let Some(text) = config.secrets_key_text()? else {
            return Ok(None);
        };
        SecretsKey::parse(text.expose()).map(Some).map_err(|err| {
            inlet_core::config::ConfigError::Invalid {
                key: "ingest.secrets_key",
                problem: err.to_string(),
            }
        })
    }

    /// A fresh random key.
    pub fn generate() -> SecretsKey {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    fn from_bytes(bytes: [u8; 32]) -> SecretsKey {
        let digest = Sha256::new()
            .chain_update(b"inlet secrets key id\0")
            .chain_update(bytes)
            .finalize();
        SecretsKey {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
            id: hex::encode(&digest[..4]),
        }
    }

    /// A short public identifier of the key (not secret).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `secret` for the place `context` names (e.g. `webhook_secret/<integration id>`).
    pub fn seal(&self, secret: &Secret, context: &str) -> Sealed {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            // Encryption only fails for plaintexts beyond GCM's 64 GiB limit.
            .unwrap_or_default();
        Sealed(format!(
            "v1:{}:{}:{}",
            self.id,
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(ciphertext)
        ))
    }

    /// Opens a value sealed for `context`.
    pub fn open(&self, sealed: &Sealed, context: &str) -> Result<Secret, CryptoError> {
        let mut parts = sealed.0.split(':');
        let (Some("v1"), Some(key_id), Some(nonce), Some(ciphertext), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(CryptoError::Corrupt);
        };
        if key_id != self.id {
            return Err(CryptoError::WrongKey {
                sealed_with: key_id.to_owned(),
                ours: self.id.clone(),
            });
        }
        let nonce = URL_SAFE_NO_PAD
            .decode(nonce)
            .map_err(|_| CryptoError::Corrupt)?;
        if nonce.len() != 12 {
            return Err(CryptoError::Corrupt);
        }
        let ciphertext = URL_SAFE_NO_PAD
            .decode(ciphertext)
            .map_err(|_| CryptoError::Corrupt)?;
        let plaintext = self
            .cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Corrupt)?;
        String::from_utf8(plaintext)
            .map(Secret::new)
            .map_err(|_| CryptoError::Corrupt)
    }
}

/// A sealed secret as stored in the control log and the registry.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(String);

impl Sealed {
    /// The id of the key that sealed it, if well-formed.
    pub fn key_id(&self) -> Option<&str> {
        let mut parts = self.0.split(':');
        match (parts.next(), parts.next()) {
            (Some("v1"), Some(id)) => Some(id),
            _ => None,
        }
    }

    /// Whether nothing is sealed (an optional secret left empty).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({})", self.key_id().unwrap_or("?"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is sealed opens with the same key and context, and the ciphertext hides it.
    #[test]
    fn seal_and_open() {
        let key = SecretsKey::generate();
        let secret = Secret::new("webhook-secret-value");
        let sealed = key.seal(&secret, "webhook_secret/i1");
        assert!(
            !serde_json::to_string(&sealed)
                .expect("json")
                .contains("webhook-secret-value")
        );
        assert_eq!(sealed.key_id(), Some(key.id()));
        assert_eq!(key.open(&sealed, "webhook_secret/i1"), Ok(secret.clone()));
        // Fresh nonce each time.
        assert_ne!(sealed, key.seal(&secret, "webhook_secret/i1"));
    }

    /// Another key is named as such; another context or a tampered value does not open.
    #[test]
    fn wrong_key_context_or_tamper() {
        let key = SecretsKey::generate();
        let other = SecretsKey::generate();
        let sealed = key.seal(&Secret::new("s"), "ctx");
        assert!(matches!(
            other.open(&sealed, "ctx"),
            Err(CryptoError::WrongKey { .. })
        ));
        assert_eq!(key.open(&sealed, "other-ctx"), Err(CryptoError::Corrupt));
        let mut tampered = sealed.0.clone();
        tampered.pop();
        tampered.push(if sealed.0.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            key.open(&Sealed(tampered), "ctx"),
            Err(CryptoError::Corrupt)
        );
        assert_eq!(
            key.open(&Sealed("junk".to_owned()), "ctx"),
            Err(CryptoError::Corrupt)
        );
    }

    /// Keys parse from hex or base64 and must be 32 bytes; the id is stable per key.
    #[test]
    fn key_parsing() {
        let hex_key = "00".repeat(32);
        let a = SecretsKey::parse(&hex_key).expect("hex");
        let b = SecretsKey::parse(&base64::engine::general_purpose::STANDARD.encode([0u8; 32]))
            .expect("base64");
        assert_eq!(a.id(), b.id());
        assert_eq!(SecretsKey::parse("abcd").err(), Some(CryptoError::BadKey));
        assert!(!format!("{a:?}").contains(&hex_key));
    }
}
