//! inlet-workers: stack triggers in, run decisions out.
//!
//! # Layout
//!
//! - [`run`] consumes `inlet.triggers` through the shared at-least-once loop
//!   ([`inlet_core::pipeline`]);
//! - the handler waits until this process's control fold reached the trigger's control offset,
//!   then [`decide`] looks at the stack's *current* state: `requested`, or `blocked` with a reason;
//! - each `RunDecision` goes to `inlet.runs`, keyed by stack id (the downstream contract).
//!
//! Delivery guarantee: at-least-once; a replayed trigger yields the same `run_id`, on which
//! downstream run schedulers deduplicate. Ordering: per stack.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod decide;

use std::time::Duration;

use inlet_core::CancellationToken;
use inlet_core::config::StageConfig;
use inlet_core::control_log::ControlLog;
use inlet_core::kafka::header;
use inlet_core::pipeline::{self, Handler, Output};
use inlet_core::records::{RunStatus, StackTrigger, headers};
use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tracing::Instrument;

use crate::decide::decide;

/// How long to wait for the control fold to reach a trigger's control offset.
const CONTROL_WAIT: Duration = Duration::from_secs(30);

/// What the workers run with, built by the caller.
pub struct Deps {
    /// Consumer subscribed to the triggers topic, offsets stored manually.
    pub consumer: StreamConsumer,
    /// The idempotent producer.
    pub producer: FutureProducer,
    /// This process's fold of the control log.
    pub control: ControlLog,
    /// Where decisions go.
    pub runs_topic: String,
    /// Longest drain on shutdown.
    pub drain: Duration,
}

/// Decides until `shutdown`, then drains in-flight outputs and commits.
pub async fn run(
    config: &StageConfig,
    deps: Deps,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let handler = Worker {
        control: deps.control,
        runs_topic: deps.runs_topic,
    };
    pipeline::run(
        deps.consumer,
        deps.producer,
        handler,
        config.max_in_flight,
        deps.drain,
        shutdown,
    )
    .await?;
    tracing::info!("workers stopped");
    Ok(())
}

struct Worker {
    control: ControlLog,
    runs_topic: String,
}

impl Handler for Worker {
    async fn handle(&self, message: &OwnedMessage) -> Vec<Output> {
        let (partition, offset) = (message.partition(), message.offset());
        let trigger: StackTrigger =
            match serde_json::from_slice(message.payload().unwrap_or_default()) {
                Ok(trigger) => trigger,
                Err(err) => {
                    tracing::error!(partition, offset, error = %err, "unreadable trigger; skipped");
                    return Vec::new();
                }
            };
        let span = tracing::info_span!(
            "decide",
            delivery_id = %trigger.trigger.delivery_id,
            stack_id = %trigger.stack_id,
            partition,
            offset
        );
        let traceparent = header(message, headers::TRACEPARENT).map(str::to_owned);
        self.decide(trigger, traceparent).instrument(span).await
    }
}

impl Worker {
    async fn decide(&self, trigger: StackTrigger, traceparent: Option<String>) -> Vec<Output> {
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
        let decision = match decide(&self.control.read(), &trigger) {
            Ok(decision) => decision,
            Err(reason) => {
                tracing::info!(?reason, "no decision");
                return Vec::new();
            }
        };
        match decision.status {
            RunStatus::Requested => {
                tracing::info!(run_id = %decision.run_id, run_type = decision.run_type.as_str(), "run requested")
            }
            RunStatus::Blocked => tracing::info!(
                run_id = %decision.run_id,
                reason = decision.blocked_reason.as_ref().map(|r| r.code.as_str()).unwrap_or_default(),
                "run blocked"
            ),
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
        vec![Output {
            topic: self.runs_topic.clone(),
            key: decision.stack_id,
            payload,
            headers: Some(record_headers),
        }]
    }
}
