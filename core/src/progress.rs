//! Whether each consumed partition moves: a stage can be alive, connected and folded to the end of
//! the control log, yet stuck on one record (a handler that never returns, an output the broker
//! keeps refusing) while records pile up behind it. [`Progress`] remembers, per stage and
//! partition, the position and since when it has not moved while there was lag; readiness
//! ([`crate::ops::WithProgress`]) reports a partition stalled for longer than [`STALL_AFTER`], and
//! `inlet_consumer_stalled_seconds` shows it to alerts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a lagging partition may stay at one position before readiness reports it. Generous:
/// one record may legitimately wait for Bitbucket (retries, `Retry-After`) or the broker for tens
/// of seconds.
pub const STALL_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
struct Track {
    position: i64,
    lag: i64,
    /// When the position last moved, or the partition last caught up.
    moving_at: Instant,
}

/// A partition that has not advanced while lagging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// `router`, `workers`, ...
    pub stage: String,
    /// The partition.
    pub partition: i32,
    /// Its position (the next offset to read).
    pub position: i64,
    /// Records behind.
    pub lag: i64,
    /// For how long it has not moved.
    pub for_: Duration,
}

/// Positions of every partition this process consumes, shared by the consume loops (which
/// observe) and readiness (which asks).
#[derive(Debug, Clone, Default)]
pub struct Progress {
    tracks: Arc<Mutex<BTreeMap<(String, i32), Track>>>,
}

impl Progress {
    /// Records `position` and `lag` of `stage`'s `partition` at `now`; returns for how long it has
    /// been lagging without moving (zero while it moves or has nothing to read).
    pub fn observe(
        &self,
        stage: &str,
        partition: i32,
        position: i64,
        lag: i64,
        now: Instant,
    ) -> Duration {
        let mut tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
        let track = tracks
            .entry((stage.to_owned(), partition))
            .or_insert(Track {
                position,
                lag,
                moving_at: now,
            });
        // Moving, caught up, or lag that only just appeared: the clock (re)starts.
        if track.position != position || lag <= 0 || track.lag <= 0 {
            track.moving_at = now;
        }
        track.position = position;
        track.lag = lag;
        if lag > 0 {
            now.saturating_duration_since(track.moving_at)
        } else {
            Duration::ZERO
        }
    }

    /// Forgets a partition this process no longer reads (a rebalance moved it).
    pub fn forget(&self, stage: &str, partition: i32) {
        let mut tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
        tracks.remove(&(stage.to_owned(), partition));
    }

    /// Partitions lagging without moving for at least `after`, as of `now`.
    pub fn stalled(&self, now: Instant, after: Duration) -> Vec<Stall> {
        let tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
        tracks
            .iter()
            .filter(|(_, t)| t.lag > 0)
            .map(|((stage, partition), t)| Stall {
                stage: stage.clone(),
                partition: *partition,
                position: t.position,
                lag: t.lag,
                for_: now.saturating_duration_since(t.moving_at),
            })
            .filter(|s| s.for_ >= after)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lagging partition that does not move is stalled after the threshold; moving, catching up
    /// or being forgotten clears it.
    #[test]
    fn stalls_are_lag_without_movement() {
        let progress = Progress::default();
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let after = Duration::from_secs(60);
        assert_eq!(progress.observe("router", 0, 10, 5, at(0)), Duration::ZERO);
        assert_eq!(
            progress.observe("router", 0, 10, 7, at(30)),
            Duration::from_secs(30)
        );
        assert!(progress.stalled(at(30), after).is_empty());
        progress.observe("router", 0, 10, 9, at(61));
        let stalls = progress.stalled(at(61), after);
        assert_eq!(stalls.len(), 1, "{stalls:?}");
        assert_eq!((stalls[0].partition, stalls[0].lag), (0, 9));
        // It moves: no longer stalled.
        progress.observe("router", 0, 11, 9, at(62));
        assert!(progress.stalled(at(100), after).is_empty());
        // Idle (no lag) at one position is not a stall, however long.
        progress.observe("workers", 1, 50, 0, at(0));
        progress.observe("workers", 1, 50, 0, at(500));
        let workers = |now| {
            progress
                .stalled(now, after)
                .into_iter()
                .filter(|s| s.stage == "workers")
                .count()
        };
        assert_eq!(workers(at(1000)), 0);
        // Lag appears on an idle partition: the clock starts then, not at the last move.
        progress.observe("workers", 1, 50, 3, at(501));
        assert_eq!(workers(at(502)), 0);
        assert_eq!(workers(at(600)), 1);
        progress.observe("router", 2, 0, 1, at(0));
        progress.forget("router", 2);
        assert!(
            progress
                .stalled(at(1000), after)
                .iter()
                .all(|s| s.partition != 2)
        );
    }
}
