//! Bitbucket's webhook signature: `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>`.
//!
//! The header is parsed, never sliced blindly, and the comparison is constant-time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use inlet_core::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature did not verify. Each maps to a 401; the variant is for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature` header.
    #[error("the X-Hub-Signature header is missing")]
    Missing,
    /// Not `<algorithm>=<hex>`, or the hex is not a digest of the right length.
    #[error("the X-Hub-Signature header is malformed")]
    Malformed,
    /// An algorithm other than sha256.
    #[error("the signature algorithm is not supported (use sha256)")]
    UnsupportedAlgorithm,
    /// Well-formed, but no secret of the integration produced it.
    #[error("the signature does not match")]
    Mismatch,
}

impl SignatureError {
    /// A stable label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureError::Missing => "missing",
            SignatureError::Malformed => "malformed",
            SignatureError::UnsupportedAlgorithm => "unsupported_algorithm",
            SignatureError::Mismatch => "mismatch",
        }
    }
}

/// The header value Bitbucket would send for `body` signed with `secret`.
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    let mut mac = new_mac(secret);
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Parses `sha256=<64 hex digits>` into the digest bytes.
pub fn parse_header(value: &[u8]) -> Result<[u8; 32], SignatureError> {
    let text = std::str::from_utf8(value).map_err(|_| SignatureError::Malformed)?;
    let (algorithm, digest) = text
        .trim()
        .split_once('=')
        .ok_or(SignatureError::Malformed)?;
    if !algorithm.eq_ignore_ascii_case("sha256") {
        return Err(if algorithm.is_empty() {
            SignatureError::Malformed
        } else {
            SignatureError::UnsupportedAlgorithm
        });
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(digest, &mut out).map_err(|_| SignatureError::Malformed)?;
    Ok(out)
}

/// Verifies `header` (the raw `X-Hub-Signature` value, if any) over `body` against any of
/// `secrets` (more than one during a secret rotation). Constant-time per secret.
pub fn verify<'a>(
    header: Option<&[u8]>,
    body: &[u8],
    secrets: impl IntoIterator<Item = &'a Secret>,
) -> Result<(), SignatureError> {
    verify_with(header, body, secrets.into_iter().map(SigningKey::new))
}

/// A webhook secret made ready for HMAC: the key schedule (the padded key's inner and outer
/// hash states) computed once, so each verification hashes only the body. Held by ingest per
/// integration incarnation; it is as sensitive as the secret and never leaves the process.
#[derive(Clone)]
pub struct SigningKey(HmacSha256);

impl SigningKey {
    /// The key for `secret`.
    pub fn new(secret: &Secret) -> Self {
        SigningKey(new_mac(secret))
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// [`verify`] with prepared keys (owned or borrowed): the header is parsed first (missing and
/// malformed headers are refused before any key is used), then each key is tried, constant-time
/// per key.
pub fn verify_with(
    header: Option<&[u8]>,
    body: &[u8],
    keys: impl IntoIterator<Item = impl std::borrow::Borrow<SigningKey>>,
) -> Result<(), SignatureError> {
    let digest = parse_header(header.ok_or(SignatureError::Missing)?)?;
    for key in keys {
        let mut mac = key.borrow().0.clone();
        mac.update(body);
        if mac.verify_slice(&digest).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

fn new_mac(secret: &Secret) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("It's a Secret to Everybody")
    }

    /// The digest matches the published HMAC-SHA256 test vector used by GitHub-style webhooks.
    #[test]
    fn known_vector() {
        assert_eq!(
            sign(&secret(), b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    /// A correct signature verifies; any change to body or secret does not.
    #[test]
    fn verify_accepts_only_the_right_signature() {
        let header = sign(&secret(), b"body");
        assert_eq!(
            verify(Some(header.as_bytes()), b"body", [&secret()]),
            Ok(())
        );
        assert_eq!(
            verify(Some(header.as_bytes()), b"body!", [&secret()]),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(header.as_bytes()), b"body", [&Secret::new("other")]),
            Err(SignatureError::Mismatch)
        );
    }

    /// Any of several secrets verifies (rotation grace period).
    #[test]
    fn any_secret_of_several() {
        let new = Secret::new("new-secret");
        let header = sign(&secret(), b"x");
        assert_eq!(
            verify(Some(header.as_bytes()), b"x", [&new, &secret()]),
            Ok(())
        );
    }

    /// Malformed headers are rejected without panicking.
    #[test]
    fn malformed_headers() {
        let cases: &[(&[u8], SignatureError)] = &[
            (b"", SignatureError::Malformed),
            (b"sha256", SignatureError::Malformed),
            (b"=abcd", SignatureError::Malformed),
            (b"sha256=", SignatureError::Malformed),
            (b"sha256=abc", SignatureError::Malformed),
            (b"sha256=zz", SignatureError::Malformed),
            (&[0xff, 0xfe], SignatureError::Malformed),
            (
                b"sha1=0123456789012345678901234567890123456789",
                SignatureError::UnsupportedAlgorithm,
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(verify(Some(header), b"x", [&secret()]), Err(*expected));
        }
        assert_eq!(
            verify(None, b"x", [&secret()]),
            Err(SignatureError::Missing)
        );
        let too_long = format!("sha256={}", "ab".repeat(33));
        assert_eq!(
            verify(Some(too_long.as_bytes()), b"x", [&secret()]),
            Err(SignatureError::Malformed)
        );
    }
}
