//! A string that must never reach logs, metrics, errors or `Debug` output.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A secret value. `Debug` and `Display` print a placeholder; only [`Secret::expose`] reveals it.
///
/// It serialises as the plain string because the one place it is serialised is the control log,
/// which every process must be able to fold.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// A fresh random secret of `bytes` random bytes, hex encoded.
    pub fn generate(bytes: usize) -> Self {
        let mut buf = vec![0u8; bytes];
        rand::rngs::OsRng.fill_bytes(&mut buf);
        Secret(hex::encode(buf))
    }

    /// The secret value, for the few places that need it (HMAC, the details endpoint).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debug and Display never show the value.
    #[test]
    fn formatting_redacts() {
        let s = Secret::new("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    /// Generated secrets are hex of the requested length and differ.
    #[test]
    fn generate_is_random_hex() {
        let a = Secret::generate(32);
        let b = Secret::generate(32);
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
