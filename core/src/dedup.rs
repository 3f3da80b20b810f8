//! A bounded, time-windowed memory of keys seen: "have I processed this already?" for redelivered
//! webhooks (router) and already-decided runs (workers).
//!
//! Memory is bounded by both a time window and a capacity; the oldest entries go first. It is
//! per process: after a restart a duplicate may pass, which is why downstream consumers also
//! deduplicate on the deterministic ids.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Keys seen within the last `window`, at most `capacity` of them.
#[derive(Debug)]
pub struct SeenWindow {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
    window: Duration,
    capacity: usize,
}

impl SeenWindow {
    /// An empty window.
    pub fn new(window: Duration, capacity: usize) -> SeenWindow {
        SeenWindow {
            seen: HashMap::new(),
            order: VecDeque::new(),
            window,
            capacity: capacity.max(1),
        }
    }

    /// Records `key` at `now`; true if it was not seen within the window.
    pub fn first_time(&mut self, key: &str, now: Instant) -> bool {
        self.expire(now);
        if self.seen.contains_key(key) {
            return false;
        }
        while self.order.len() >= self.capacity {
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(key.to_owned(), now);
        self.order.push_back((now, key.to_owned()));
        true
    }

    /// Whether `key` was recorded within the window (without recording it).
    pub fn contains(&mut self, key: &str, now: Instant) -> bool {
        self.expire(now);
        self.seen.contains_key(key)
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.seen.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key is new once per window; it is forgotten after the window or when capacity evicts it.
    #[test]
    fn window_and_capacity() {
        let start = Instant::now();
        let mut seen = SeenWindow::new(Duration::from_secs(60), 2);
        assert!(seen.first_time("a", start));
        assert!(!seen.first_time("a", start + Duration::from_secs(1)));
        assert!(seen.first_time("b", start));
        assert!(seen.first_time("c", start), "capacity evicts the oldest");
        assert!(seen.first_time("a", start + Duration::from_secs(2)));
        assert_eq!(seen.len(), 2);
        let later = start + Duration::from_secs(120);
        assert!(seen.first_time("c", later), "expired after the window");
        assert_eq!(seen.len(), 1);
    }
}
