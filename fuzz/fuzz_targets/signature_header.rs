//! Fuzzes the `X-Hub-Signature` check (`inlet_bitbucket::signature`).
//!
//! What enters: arbitrary bytes, used whole as a header value and, split at the first two `\n`,
//! as `header \n body \n secret`. What must hold: `parse_header` and `verify` never panic, and a
//! header made by `sign` for a body always verifies against that body with that secret (so a
//! fuzzed header can never make the parser reject what Bitbucket itself would send).

#![no_main]

use inlet_bitbucket::signature::{parse_header, sign, verify};
use inlet_core::secret::Secret;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fixed = Secret::new("It's a Secret to Everybody");

    // The whole input as the header value, over itself as the body.
    let _ = parse_header(data);
    let _ = verify(Some(data), data, [&fixed]);

    // `header \n body \n secret`: a fuzzed secret too, and more than one (a rotation).
    let mut parts = data.splitn(3, |byte| *byte == b'\n');
    let header = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let secret = Secret::new(String::from_utf8_lossy(parts.next().unwrap_or_default()));
    let _ = verify(Some(header), body, [&fixed, &secret]);
    let _ = verify(None, body, [&secret]);

    // What `sign` produces always parses and verifies, with surrounding whitespace too (the
    // header is trimmed) and with the algorithm in upper case (it is compared case-insensitively).
    let signed = sign(&secret, body);
    assert!(parse_header(signed.as_bytes()).is_ok(), "{signed}");
    assert_eq!(
        verify(Some(signed.as_bytes()), body, [&fixed, &secret]),
        Ok(())
    );
    let padded = format!(" {}\t", signed.replacen("sha256", "SHA256", 1));
    assert_eq!(verify(Some(padded.as_bytes()), body, [&secret]), Ok(()));
});
