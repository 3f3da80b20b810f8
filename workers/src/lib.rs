//! inlet-workers: stack triggers in, run decisions out.
//!
//! # Layout
//!
//! `run` consumes `inlet.triggers` through the shared at-least-once loop
//! (`inlet_core::pipeline`); for each record, in order:
//! 1. the `StackTrigger` is read (unreadable: `inlet.dlq`, and the partition moves on);
//! 2. `Worker::decide`: wait until this process's control fold reached the trigger's control
//!    offset → `decide` looks at the stack's *current* state: `requested`, or `blocked` with a
//!    reason → `Worker::already_requested`: a VCS run whose `run_id` this process requested
//!    recently (per partition, bounded) is not emitted again, so a push and a pull-request update
//!    of one commit are one run;
//! 3. `Worker::outputs`: the `RunDecision` to `inlet.runs`, keyed by stack id (the downstream
//!    contract), and a `DeliveryEvent` to `inlet.deliveries`;
//! 4. `telemetry`: one event per trigger writes its log line and counters.
//!
//! Delivery guarantee: at-least-once; a replayed trigger yields the same `run_id`, on which
//! downstream run schedulers deduplicate. Ordering: per stack.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod decide;
pub mod telemetry;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use inlet_control::StageDeps;
use inlet_control::control_log::{CONTROL_WAIT, ControlLog};
use inlet_core::CancellationToken;
use inlet_core::config::StageConfig;
use inlet_core::dedup::SeenWindow;
use inlet_core::kafka::header;
use inlet_core::metrics::WorkersMetrics;
use inlet_core::pipeline::{self, Handler, Output, Poison};
use inlet_core::records::{
    DeliveryEvent, DeliveryOutcome, RunDecision, RunStatus, StackTrigger, Stage, TriggerKind,
    headers, trace_id,
};
use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use tracing::Instrument;

use crate::decide::{NoDecision, decide};
use crate::telemetry::Deciding;

/// How long a decided `run_id` is remembered, per partition.
const RUN_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// How many decided `run_id`s are remembered per partition at most.
const RUN_CAPACITY: usize = 100_000;

/// What the stage runs with, built by the caller.
pub type Deps = StageDeps;

/// Decides until `shutdown`, then drains in-flight outputs and commits.
pub async fn run(
    config: &StageConfig,
    deps: Deps,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let handler = Worker {
        metrics: deps.pipeline.metrics.workers.clone(),
        control: deps.control,
        runs_topic: deps.pipeline.topics.runs(),
        deliveries_topic: deps.pipeline.topics.deliveries(),
        decided: Mutex::new(HashMap::new()),
    };
    pipeline::run_stage(deps.pipeline, handler, config, shutdown).await
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
    fn stage(&self) -> Stage {
        Stage::Workers
    }

    async fn handle(&self, message: &OwnedMessage) -> Result<Vec<Output>, Poison> {
        let trigger: StackTrigger = serde_json::from_slice(message.payload().unwrap_or_default())
            .map_err(|err| Poison {
            reason: format!("unreadable trigger: {err}"),
            outputs: Vec::new(),
        })?;
        let traceparent = header(message, headers::TRACEPARENT);
        let span = tracing::info_span!(
            "decide",
            delivery_id = %trigger.trigger.delivery_id,
            stack_id = %trigger.stack_id,
            trace_id = traceparent.and_then(trace_id).unwrap_or_default(),
            partition = message.partition(),
            offset = message.offset(),
        );
        async {
            let mut deciding = Deciding::default();
            let outputs = self
                .decide(message.partition(), &trigger, traceparent, &mut deciding)
                .await;
            deciding.emit(&self.metrics, &trigger.received_at);
            Ok(outputs)
        }
        .instrument(span)
        .await
    }
}

impl Worker {
    /// The decision for one trigger and its outputs.
    async fn decide(
        &self,
        partition: i32,
        trigger: &StackTrigger,
        traceparent: Option<&str>,
        deciding: &mut Deciding,
    ) -> Vec<Output> {
        self.control
            .wait_for(trigger.control_offset, CONTROL_WAIT)
            .await;
        let mut record = delivery_event(trigger);
        // One read of the registry: the incarnations stamped are those the decision saw.
        let decided = {
            let registry = self.control.read();
            record.integration_id = registry
                .integration(&trigger.integration)
                .map(|i| i.id.clone());
            record.stack_incarnation = registry
                .stack(&trigger.stack_id)
                .map(|s| s.incarnation.clone())
                .filter(|incarnation| !incarnation.is_empty());
            decide(&registry, trigger)
        };
        let decision = match decided {
            Ok(decision) => decision,
            Err(NoDecision::StackDeleted) => {
                deciding.no_decision = Some(NoDecision::StackDeleted);
                record.outcome = DeliveryOutcome::NoDecision;
                record.reasons = vec!["stack_deleted".to_owned()];
                return vec![self.delivery_output(&record)];
            }
        };
        record.run_id = Some(decision.run_id.clone());
        record.run_type = Some(decision.run_type);
        if self.already_requested(partition, trigger.trigger.kind, &decision) {
            deciding.duplicate = Some(decision.run_id);
            record.outcome = DeliveryOutcome::DuplicateRun;
            record.reasons = vec!["run_already_decided".to_owned()];
            return vec![self.delivery_output(&record)];
        }
        self.outputs(decision, record, traceparent, deciding)
    }

    /// Whether this VCS run was requested recently (a push and a pull-request update of the same
    /// commit are one run; manual and comment runs never are). Only requested runs are
    /// remembered: a blocked one may be requested later, once the stack is re-attached or
    /// enabled and the webhook redelivered.
    fn already_requested(&self, partition: i32, kind: TriggerKind, decision: &RunDecision) -> bool {
        if !matches!(kind, TriggerKind::Push | TriggerKind::PullRequest) {
            return false;
        }
        let mut decided = self.decided.lock().unwrap_or_else(|p| p.into_inner());
        let window = decided
            .entry(partition)
            .or_insert_with(|| SeenWindow::new(RUN_WINDOW, RUN_CAPACITY));
        let now = Instant::now();
        if window.contains(&decision.run_id, now) {
            return true;
        }
        if decision.status == RunStatus::Requested {
            window.first_time(&decision.run_id, now);
        }
        false
    }

    /// The decision on `inlet.runs` and the delivery event that records it.
    fn outputs(
        &self,
        decision: RunDecision,
        mut record: DeliveryEvent,
        traceparent: Option<&str>,
        deciding: &mut Deciding,
    ) -> Vec<Output> {
        record.status = Some(decision.status);
        if let Some(reason) = &decision.blocked_reason {
            record.reasons = vec![reason.code.as_str().to_owned()];
        }
        let output = decision.output(&self.runs_topic, traceparent);
        deciding.decision = Some(decision);
        vec![output, self.delivery_output(&record)]
    }

    fn delivery_output(&self, record: &DeliveryEvent) -> Output {
        Output::delivery_event(&self.deliveries_topic, record)
    }
}

/// The workers' delivery event for `trigger`, decided until it says otherwise.
fn delivery_event(trigger: &StackTrigger) -> DeliveryEvent {
    let mut record = DeliveryEvent::new(
        &trigger.trigger.delivery_id,
        &trigger.integration,
        Stage::Workers,
        DeliveryOutcome::Decided,
    );
    record.event_key = Some(trigger.trigger.event_key.clone());
    record.stacks = vec![trigger.stack_id.clone()];
    record.received_at = Some(trigger.received_at.clone());
    record
}

#[cfg(test)]
mod tests {
    /// The configuration's bound on `max_poll_interval_ms` counts the control-log wait this
    /// stage (and the router) really makes.
    #[test]
    fn the_poll_interval_bound_knows_the_control_wait() {
        assert_eq!(
            super::CONTROL_WAIT.as_millis(),
            u128::from(inlet_core::config::CONTROL_WAIT_MS)
        );
    }
}
