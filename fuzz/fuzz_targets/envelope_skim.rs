//! Differential fuzzing of the edge's fast envelope reader (`inlet_bitbucket::envelope_by_skim`)
//! against serde_json's (`envelope_by_serde`), the reference.
//!
//! What enters: arbitrary bytes as a webhook body, read under a pull-request key, a push key and
//! no key. What must hold: whenever the fast path reads a body (`Some`), serde_json reads it too,
//! to the same repository and date, or both find no repository; and `envelope` (fast path, then
//! serde_json) always agrees with serde_json on accepting or refusing. The fast path may decline
//! (`None`) anything.

#![no_main]

use inlet_bitbucket::{PayloadError, envelope, envelope_by_serde, envelope_by_skim};
use libfuzzer_sys::fuzz_target;

const KEYS: [Option<&str>; 3] = [None, Some("pr:opened"), Some("repo:refs_changed")];

fuzz_target!(|data: &[u8]| {
    for key in KEYS {
        let reference = envelope_by_serde(key, data);
        if let Some(fast) = envelope_by_skim(key, data) {
            match (&fast, &reference) {
                (Ok(fast), Ok(reference)) => assert_eq!(fast, reference),
                (Err(PayloadError::NoRepository), Err(PayloadError::NoRepository)) => {}
                _ => panic!("skim {fast:?}, serde {reference:?}"),
            }
        }
        assert_eq!(envelope(key, data).is_ok(), reference.is_ok());
    }
});
