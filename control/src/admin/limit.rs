//! A per-key rate limit on admin writes: a token bucket per API key, so one key (a runaway
//! script, a stolen key) cannot flood `inlet.control` — the log every process folds and keeps
//! forever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Writes per second each key may sustain.
const RATE: f64 = 20.0;
/// Writes a key may make in a burst.
const BURST: f64 = 100.0;
/// Keys remembered at most; idle ones are forgotten first.
const MAX_KEYS: usize = 10_000;

/// Token buckets per key.
#[derive(Default)]
pub struct WriteLimit {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl WriteLimit {
    /// Takes one write for `key`, or says how long until one is available.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            // A full bucket (idle long enough to refill) limits nothing: forget those.
            buckets.retain(|_, (_, at)| now.duration_since(*at).as_secs_f64() * RATE < BURST);
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((BURST, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * RATE).min(BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / RATE))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst passes, the next write waits, time refills the bucket; keys are independent.
    #[test]
    fn buckets_per_key() {
        let limit = WriteLimit::default();
        let start = Instant::now();
        for _ in 0..BURST as usize {
            assert!(limit.take("a", start).is_ok());
        }
        let wait = limit.take("a", start).expect_err("over the burst");
        assert!(wait <= Duration::from_millis(50), "{wait:?}");
        assert!(limit.take("b", start).is_ok());
        assert!(limit.take("a", start + Duration::from_secs(1)).is_ok());
    }
}
