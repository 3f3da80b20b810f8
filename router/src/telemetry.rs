//! The router's one telemetry event per webhook record: it alone writes the log lines and moves
//! the counters, with labels from enums and from the bounded event-key set.

use std::time::Instant;

use inlet_bitbucket::event_label;
use inlet_core::metrics::RouterMetrics;

use crate::filter::Filtered;
use crate::route::IgnoredReason;

/// What became of one webhook record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingOutcome {
    /// At least one stack trigger emitted.
    Routed,
    /// No trigger: no stack, or an event or change that does not trigger runs.
    Ignored,
    /// The delivery id was routed within the last hour.
    Duplicate,
    /// Unreadable; on `inlet.dlq`.
    DeadLettered,
}

impl RoutingOutcome {
    /// The `outcome` label of `inlet_router_events_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            RoutingOutcome::Routed => "routed",
            RoutingOutcome::Ignored => "ignored",
            RoutingOutcome::Duplicate => "duplicate",
            RoutingOutcome::DeadLettered => "dead_lettered",
        }
    }
}

/// The telemetry of one record, filled in as it is routed and emitted once at the end.
#[derive(Debug)]
pub struct Routing {
    /// The `event` label.
    pub event: &'static str,
    /// What became of it.
    pub outcome: RoutingOutcome,
    /// Stack triggers emitted.
    pub triggers: usize,
    /// What was ignored, per ref.
    pub ignored: Vec<(String, IgnoredReason)>,
    /// What the path filters did.
    pub filtered: Filtered,
}

impl Routing {
    /// A record of `event_key`, routed until the rules say otherwise.
    pub fn new(event_key: &str) -> Self {
        Routing {
            event: event_label(Some(event_key)),
            outcome: RoutingOutcome::Routed,
            triggers: 0,
            ignored: Vec::new(),
            filtered: Filtered::default(),
        }
    }

    /// A record without inlet's headers.
    pub fn unreadable() -> Self {
        Routing {
            event: event_label(None),
            outcome: RoutingOutcome::DeadLettered,
            triggers: 0,
            ignored: Vec::new(),
            filtered: Filtered::default(),
        }
    }

    /// Writes the log lines and moves the counters.
    pub fn emit(&self, metrics: &RouterMetrics, started: Instant) {
        for (reference, reason) in &self.ignored {
            tracing::info!(%reference, reason = reason.as_str(), "ignored");
        }
        for reason in &self.filtered.reasons {
            if reason.starts_with("changes_") {
                tracing::warn!(%reason, "changed files unavailable; every stack of the change kept");
            } else {
                tracing::debug!(%reason, "path filter");
            }
        }
        match self.outcome {
            RoutingOutcome::Duplicate => {
                tracing::info!(reason = "duplicate", "delivery already routed; dropped")
            }
            RoutingOutcome::DeadLettered => tracing::warn!("unreadable webhook record"),
            RoutingOutcome::Routed | RoutingOutcome::Ignored => {
                tracing::debug!(
                    triggers = self.triggers,
                    outcome = self.outcome.as_str(),
                    "routed"
                )
            }
        }
        metrics
            .events
            .with_label_values(&[self.event, self.outcome.as_str()])
            .inc();
        metrics.triggers.inc_by(self.triggers as u64);
        metrics
            .processing_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}
