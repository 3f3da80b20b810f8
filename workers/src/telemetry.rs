//! The workers' one telemetry event per trigger: it alone writes the log line and moves the
//! counters, with labels from enums ([`BlockedCode`], [`NoDecision`]).

use inlet_core::clock::parse_rfc3339;
use inlet_core::metrics::WorkersMetrics;
use inlet_core::records::{BlockedCode, RunDecision, RunStatus};

use crate::decide::NoDecision;

/// What became of one trigger, filled in as it is decided and emitted once at the end.
#[derive(Debug, Default)]
pub struct Deciding {
    /// The decision emitted.
    pub decision: Option<RunDecision>,
    /// The run id already requested, when nothing was emitted for that reason.
    pub duplicate: Option<String>,
    /// Why there is no decision at all.
    pub no_decision: Option<NoDecision>,
}

impl NoDecision {
    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            NoDecision::StackDeleted => "stack_deleted",
        }
    }
}

impl Deciding {
    /// Writes the log line and moves the counters; `received_at` is when ingest received the
    /// webhook, for the end-to-end latency.
    pub fn emit(&self, metrics: &WorkersMetrics, received_at: &str) {
        if let Some(reason) = self.no_decision {
            tracing::info!(reason = reason.as_str(), "no decision");
            metrics
                .decisions
                .with_label_values(&["none", reason.as_str()])
                .inc();
            return;
        }
        if let Some(run_id) = &self.duplicate {
            tracing::info!(%run_id, "run already requested; not emitted again");
            metrics.duplicate_runs.inc();
            return;
        }
        let Some(decision) = &self.decision else {
            return;
        };
        let code = decision.blocked_reason.as_ref().map(|r| r.code);
        match (decision.status, code) {
            (RunStatus::Blocked, code) => {
                tracing::info!(run_id = %decision.run_id, reason = code.map(BlockedCode::as_str).unwrap_or_default(), "run blocked")
            }
            (RunStatus::Requested, _) => {
                tracing::debug!(run_id = %decision.run_id, run_type = decision.run_type.as_str(), "run requested")
            }
        }
        let status = match decision.status {
            RunStatus::Requested => "requested",
            RunStatus::Blocked => "blocked",
        };
        metrics
            .decisions
            .with_label_values(&[status, code.map(BlockedCode::as_str).unwrap_or("none")])
            .inc();
        if let Some(received) = parse_rfc3339(received_at) {
            let age = time::OffsetDateTime::now_utc() - received;
            metrics
                .end_to_end_seconds
                .observe(age.as_seconds_f64().max(0.0));
        }
    }
}
