//! Fuzzes the decoding of the admin API's request bodies (`inlet_control::admin::views`), which
//! any holder of an API key can send, and the route table that maps a request path to them.
//!
//! What enters: arbitrary bytes, decoded as the body of every admin endpoint that takes one, and
//! read as the path under `/api/v1/`. What must hold: decoding and the route lookups never panic.

#![no_main]

use inlet_control::admin::openapi::{allowed_methods, is_resource};
use inlet_control::admin::views::{
    CreateApiKey, CreateIntegration, CreateSpace, CreateStack, RotateSecret, TriggerRun,
    UpdateIntegration, UpdateSpace, UpdateStack,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

fuzz_target!(|data: &[u8]| {
    decode::<CreateSpace>(data);
    decode::<UpdateSpace>(data);
    decode::<CreateApiKey>(data);
    decode::<CreateIntegration>(data);
    decode::<UpdateIntegration>(data);
    decode::<RotateSecret>(data);
    decode::<CreateStack>(data);
    decode::<UpdateStack>(data);
    decode::<TriggerRun>(data);

    if let Ok(path) = std::str::from_utf8(data) {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let _ = is_resource(&segments);
        let _ = allowed_methods(&segments);
    }
});

/// Decodes `data` as `T`, formatting what comes out either way (as the handlers log or answer it).
fn decode<T: DeserializeOwned + std::fmt::Debug>(data: &[u8]) {
    match serde_json::from_slice::<T>(data) {
        Ok(body) => {
            let _ = format!("{body:?}");
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }
}
