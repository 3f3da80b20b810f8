//! inlet-workers: stack triggers in, run decisions out.
//!
//! # Layout
//!
//! - [`run`] consumes `inlet.triggers` through the shared at-least-once loop
//!   ([`inlet_core::pipeline`]);
//! - the handler waits until this process's control fold reached the trigger's control offset,
//!   then [`decide`] looks at the stack's *current* state: `requested`, or `blocked` with a reason;
//! - a VCS run whose `run_id` this process decided recently (per partition, bounded) is not
//!   emitted again, so a push and a pull-request update of one commit are one run;
//! - each `RunDecision` goes to `inlet.runs`, keyed by stack id (the downstream contract), and a
//!   `DeliveryEvent` to `inlet.deliveries`; an unreadable trigger goes to `inlet.dlq`.
//!
//! Delivery guarantee: at-least-once; a replayed trigger yields the same `run_id`, on which
//! downstream run schedulers deduplicate. Ordering: per stack.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod decide;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use inlet_core::CancellationToken;
use inlet_core::clock::parse_rfc3339;
use inlet_core::config::StageConfig;
use inlet_core::control_log::ControlLog;
use inlet_core::dedup::SeenWindow;
use inlet_core::kafka::header;
use inlet_core::metrics::WorkersMetrics;
use inlet_core::pipeline::{self, Handler, Output, Poison};
use inlet_core::records::{
    DeliveryEvent, DeliveryOutcome, RunStatus, StackTrigger, Stage, TriggerKind, headers, trace_id,
};
use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use tracing::Instrument;

use crate::decide::{NoDecision, decide};

/// How long to wait for the control fold to reach a trigger's control offset.
const CONTROL_WAIT: Duration = Duration::from_secs(30);
/// How long a decided `run_id` is remembered, per partition.
const RUN_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// How many decided `run_id`s are remembered per partition at most.
const RUN_CAPACITY: usize = 100_000;

/// What the stage runs with, built by the caller.
pub use inlet_core::pipeline::StageDeps as Deps;

/// Decides until `shutdown`, then drains in-flight outputs and commits.
pub async fn run(
    config: &StageConfig,
    deps: Deps,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let handler = Worker {
        metrics: deps.metrics.workers.clone(),
        control: deps.control.clone(),
        runs_topic: deps.topics.runs(),
        deliveries_topic: deps.topics.deliveries(),
        decided: Mutex::new(HashMap::new()),
    };
    pipeline::run(deps, handler, config.max_in_flight, shutdown).await?;
    tracing::info!("workers stopped");
    Ok(())
}

struct Worker {
    metrics: WorkersMetrics,
    control: ControlLog,
    runs_topic: String,
    deliveries_topic: String,
    /// Per input partition: the run ids decided recently. Triggers of one stack share a partition,
    /// so the same run always meets the same memory.
    decided: Mutex<HashMap<i32, SeenWindow>>,
}

impl Handler for Worker {
    fn stage(&self) -> &'static str {
        "workers"
    }

    async fn handle(&self, message: &OwnedMessage) -> Result<Vec<Output>, Poison> {
        let (partition, offset) = (message.partition(), message.offset());
        let trigger: StackTrigger = serde_json::from_slice(message.payload().unwrap_or_default())
            .map_err(|err| Poison {
            reason: format!("unreadable trigger: {err}"),
            outputs: Vec::new(),
        })?;
        let traceparent = header(message, headers::TRACEPARENT).map(str::to_owned);
        let span = tracing::info_span!(
            "decide",
            delivery_id = %trigger.trigger.delivery_id,
            stack_id = %trigger.stack_id,
            trace_id = traceparent.as_deref().and_then(trace_id).unwrap_or_default(),
            partition,
            offset
        );
        Ok(self
            .decide(partition, trigger, traceparent)
            .instrument(span)
            .await)
    }
}

impl Worker {
    async fn decide(
        &self,
        partition: i32,
        trigger: StackTrigger,
        traceparent: Option<String>,
    ) -> Vec<Output> {
        if tokio::time::timeout(
            CONTROL_WAIT,
            self.control.wait_applied(trigger.control_offset),
        )
        .await
        .is_err()
        {
            tracing::warn!(
                wanted = trigger.control_offset,
                "control log behind the trigger; deciding with the state at hand"
            );
        }
        let mut record = DeliveryEvent::new(
            &trigger.trigger.delivery_id,
            &trigger.integration,
            Stage::Workers,
            DeliveryOutcome::Decided,
        );
        record.event_key = Some(trigger.trigger.event_key.clone());
        record.stacks = vec![trigger.stack_id.clone()];
        record.received_at = Some(trigger.received_at.clone());
        let decision = match decide(&self.control.read(), &trigger) {
            Ok(decision) => decision,
            Err(NoDecision::StackDeleted) => {
                tracing::info!(reason = "stack_deleted", "no decision");
                record.outcome = DeliveryOutcome::NoDecision;
                record.reasons = vec!["stack_deleted".to_owned()];
                self.metrics
                    .decisions
                    .with_label_values(&["none", "stack_deleted"])
                    .inc();
                return vec![self.delivery_output(&record)];
            }
        };
        record.run_id = Some(decision.run_id.clone());
        record.run_type = Some(decision.run_type);
        // VCS runs are deduplicated on run_id: a push and a pull-request update of the same
        // commit are one run. Manual and comment runs never are.
        let deduplicated = matches!(
            trigger.trigger.kind,
            TriggerKind::Push | TriggerKind::PullRequest
        );
        if deduplicated {
            let mut decided = self.decided.lock().unwrap_or_else(|p| p.into_inner());
            let window = decided
                .entry(partition)
                .or_insert_with(|| SeenWindow::new(RUN_WINDOW, RUN_CAPACITY));
            let now = Instant::now();
            if window.contains(&decision.run_id, now) {
                tracing::info!(run_id = %decision.run_id, "run already requested; not emitted again");
                self.metrics.duplicate_runs.inc();
                record.outcome = DeliveryOutcome::DuplicateRun;
                record.reasons = vec!["run_already_decided".to_owned()];
                return vec![self.delivery_output(&record)];
            }
            // Only requested runs are remembered: a blocked one may be requested later, once the
            // stack is re-attached or enabled and the webhook redelivered.
            if decision.status == RunStatus::Requested {
                window.first_time(&decision.run_id, now);
            }
        }
        record.status = Some(decision.status);
        let (status, reason) = match &decision.blocked_reason {
            Some(reason) => ("blocked", reason.code.as_str()),
            None => ("requested", "none"),
        };
        // Reason codes come from the decide module's fixed set, so the label stays bounded.
        self.metrics
            .decisions
            .with_label_values(&[status, reason])
            .inc();
        if let Some(received) = parse_rfc3339(&trigger.received_at) {
            let age = time::OffsetDateTime::now_utc() - received;
            self.metrics
                .end_to_end_seconds
                .observe(age.as_seconds_f64().max(0.0));
        }
        match decision.status {
            RunStatus::Requested => {
                tracing::debug!(run_id = %decision.run_id, run_type = decision.run_type.as_str(), "run requested")
            }
            RunStatus::Blocked => {
                let code = decision
                    .blocked_reason
                    .as_ref()
                    .map(|r| r.code.clone())
                    .unwrap_or_default();
                tracing::info!(run_id = %decision.run_id, reason = %code, "run blocked");
                record.reasons = vec![code];
            }
        }
        let Ok(payload) = serde_json::to_vec(&decision) else {
            return Vec::new();
        };
        let mut record_headers = OwnedHeaders::new().insert(Header {
            key: headers::DELIVERY_ID,
            value: Some(&decision.trigger.delivery_id),
        });
        if let Some(traceparent) = &traceparent {
            record_headers = record_headers.insert(Header {
                key: headers::TRACEPARENT,
                value: Some(traceparent),
            });
        }
        vec![
            Output {
                topic: self.runs_topic.clone(),
                key: decision.stack_id,
                payload,
                headers: Some(record_headers),
            },
            self.delivery_output(&record),
        ]
    }

    fn delivery_output(&self, record: &DeliveryEvent) -> Output {
        Output::delivery_event(&self.deliveries_topic, record)
    }
}
