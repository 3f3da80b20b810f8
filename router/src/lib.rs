//! inlet-router: Bitbucket events in, stack triggers out.
//!
//! # Layout
//!
//! - [`run`] consumes `inlet.webhooks` through the shared at-least-once loop
//!   ([`inlet_core::pipeline`]);
//! - the handler reads the delivery's headers, waits until this process's control fold has reached
//!   the offset ingest had applied (so a stack created before the push is always seen), drops a
//!   delivery id it routed within the last hour (unless marked as a redelivery), parses the event
//!   and calls the rules in [`route`];
//! - each resulting `StackTrigger` goes to `inlet.triggers`, keyed by stack id, and one
//!   `DeliveryEvent` saying what was routed or ignored, and why, to `inlet.deliveries`;
//! - an unreadable record goes to `inlet.dlq` and the partition moves on.
//!
//! Delivery guarantee: at-least-once. An input's offset is stored only after all its triggers were
//! acknowledged; a replay yields the same `trigger_id`s. Ordering: per repository in, per stack out.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod route;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use inlet_core::CancellationToken;
use inlet_core::bitbucket::{self, Event};
use inlet_core::config::StageConfig;
use inlet_core::control_log::ControlLog;
use inlet_core::dedup::SeenWindow;
use inlet_core::kafka::header;
use inlet_core::metrics::{RouterMetrics, event_label};
use inlet_core::pipeline::{self, Handler, Output, Poison};
use inlet_core::records::{
    DeliveryEvent, DeliveryOutcome, RecordPosition, Stage, headers, trace_id,
};
use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use tracing::Instrument;

use crate::route::{Delivery, IgnoredReason, route_pull_request, route_push};

/// How long to wait for the control fold to reach a delivery's control offset before routing with
/// what it has (only a control topic that lost records could make it wait that long).
const CONTROL_WAIT: Duration = Duration::from_secs(30);
/// How long a delivery id is remembered to drop Bitbucket redeliveries of the same request.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(60 * 60);
/// How many delivery ids are remembered at most.
const DUPLICATE_CAPACITY: usize = 200_000;

/// What the stage runs with, built by the caller.
pub use inlet_core::pipeline::StageDeps as Deps;

/// Routes until `shutdown`, then drains in-flight outputs and commits.
pub async fn run(
    config: &StageConfig,
    deps: Deps,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let handler = Router {
        metrics: deps.metrics.router.clone(),
        control: deps.control.clone(),
        triggers_topic: deps.topics.triggers(),
        deliveries_topic: deps.topics.deliveries(),
        seen: Mutex::new(SeenWindow::new(DUPLICATE_WINDOW, DUPLICATE_CAPACITY)),
    };
    pipeline::run(deps, handler, config.max_in_flight, shutdown).await?;
    tracing::info!("router stopped");
    Ok(())
}

struct Router {
    metrics: RouterMetrics,
    control: ControlLog,
    triggers_topic: String,
    deliveries_topic: String,
    seen: Mutex<SeenWindow>,
}

impl Handler for Router {
    fn stage(&self) -> &'static str {
        "router"
    }

    async fn handle(&self, message: &OwnedMessage) -> Result<Vec<Output>, Poison> {
        let (partition, offset) = (message.partition(), message.offset());
        let Some(delivery) = delivery_of(message) else {
            self.metrics.dead_letters.inc();
            self.metrics
                .events
                .with_label_values(&["none", "dead_lettered"])
                .inc();
            return Err(Poison {
                reason: "webhook record without inlet headers".to_owned(),
                outputs: Vec::new(),
            });
        };
        let span = tracing::info_span!(
            "route",
            delivery_id = %delivery.delivery_id,
            integration = %delivery.integration,
            trace_id = header(message, headers::TRACEPARENT).and_then(trace_id).unwrap_or_default(),
            partition,
            offset
        );
        let started = Instant::now();
        let event = event_label(Some(&delivery.event_key));
        let result = self.route(message, delivery).instrument(span).await;
        let outcome = match &result {
            Err(_) => {
                self.metrics.dead_letters.inc();
                "dead_lettered"
            }
            Ok((outcome, outputs)) => {
                let triggers = outputs
                    .iter()
                    .filter(|o| o.topic == self.triggers_topic)
                    .count();
                self.metrics.triggers.inc_by(triggers as u64);
                match outcome {
                    DeliveryOutcome::Duplicate => "duplicate",
                    DeliveryOutcome::Routed => "routed",
                    _ => "ignored",
                }
            }
        };
        self.metrics
            .events
            .with_label_values(&[event, outcome])
            .inc();
        self.metrics
            .processing_seconds
            .observe(started.elapsed().as_secs_f64());
        result.map(|(_, outputs)| outputs)
    }
}

impl Router {
    /// Routes one delivery: the outcome recorded for it, and its outputs.
    async fn route(
        &self,
        message: &OwnedMessage,
        delivery: Delivery,
    ) -> Result<(DeliveryOutcome, Vec<Output>), Poison> {
        if tokio::time::timeout(
            CONTROL_WAIT,
            self.control.wait_applied(delivery.control_offset),
        )
        .await
        .is_err()
        {
            tracing::warn!(
                wanted = delivery.control_offset,
                applied = self.control.applied_offset(),
                "control log behind the delivery; routing with the state at hand"
            );
        }
        let mut record = DeliveryEvent::new(
            &delivery.delivery_id,
            &delivery.integration,
            Stage::Router,
            DeliveryOutcome::Routed,
        );
        record.event_key = Some(delivery.event_key.clone());
        record.received_at = Some(delivery.received_at.clone());
        record.webhook = Some(RecordPosition {
            partition: message.partition(),
            offset: message.offset(),
        });

        let redelivery = header(message, headers::REDELIVERY).is_some();
        let key = format!("{}/{}", delivery.integration, delivery.delivery_id);
        let first = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first_time(&key, Instant::now());
        if !first && !redelivery {
            tracing::info!(reason = "duplicate", "delivery already routed; dropped");
            record.outcome = DeliveryOutcome::Duplicate;
            record.reasons = vec!["duplicate_delivery".to_owned()];
            return Ok((record.outcome, vec![self.delivery_output(&record)]));
        }

        let event = match bitbucket::parse(
            &delivery.event_key,
            message.payload().unwrap_or_default(),
        ) {
            Ok(Some(event)) => event,
            Ok(None) => {
                record.outcome = DeliveryOutcome::Ignored;
                record.reasons = vec![IgnoredReason::EventNotHandled.as_str().to_owned()];
                tracing::info!(event_key = %delivery.event_key, reason = "event_not_handled", "ignored");
                return Ok((record.outcome, vec![self.delivery_output(&record)]));
            }
            Err(err) => {
                record.outcome = DeliveryOutcome::DeadLettered;
                record.reasons = vec!["unreadable_payload".to_owned()];
                return Err(Poison {
                    reason: format!("unreadable {} payload: {err}", delivery.event_key),
                    outputs: vec![self.delivery_output(&record)],
                });
            }
        };
        let routed = {
            let registry = self.control.read();
            match &event {
                Event::Push(push) => route_push(&registry, &delivery, push),
                Event::PullRequest(action, event) => {
                    route_pull_request(&registry, &delivery, *action, event)
                }
            }
        };
        for (reference, reason) in &routed.ignored {
            tracing::info!(%reference, reason = reason.as_str(), "ignored");
        }
        tracing::debug!(triggers = routed.triggers.len(), "routed");
        record.reasons = routed
            .ignored
            .iter()
            .map(|(reference, reason)| format!("{}: {reference}", reason.as_str()))
            .collect();
        if routed.triggers.is_empty() {
            record.outcome = DeliveryOutcome::Ignored;
        }
        record.stacks = routed.triggers.iter().map(|t| t.stack_id.clone()).collect();

        let traceparent = header(message, headers::TRACEPARENT).map(str::to_owned);
        let mut outputs: Vec<Output> = routed
            .triggers
            .into_iter()
            .filter_map(|trigger| {
                let payload = serde_json::to_vec(&trigger).ok()?;
                let mut record_headers = OwnedHeaders::new().insert(Header {
                    key: headers::DELIVERY_ID,
                    value: Some(&trigger.trigger.delivery_id),
                });
                if let Some(traceparent) = &traceparent {
                    record_headers = record_headers.insert(Header {
                        key: headers::TRACEPARENT,
                        value: Some(traceparent),
                    });
                }
                Some(Output {
                    topic: self.triggers_topic.clone(),
                    key: trigger.stack_id,
                    payload,
                    headers: Some(record_headers),
                })
            })
            .collect();
        outputs.push(self.delivery_output(&record));
        Ok((record.outcome, outputs))
    }

    fn delivery_output(&self, record: &DeliveryEvent) -> Output {
        Output::delivery_event(&self.deliveries_topic, record)
    }
}

fn delivery_of(message: &OwnedMessage) -> Option<Delivery> {
    Some(Delivery {
        delivery_id: header(message, headers::DELIVERY_ID)?.to_owned(),
        event_key: header(message, headers::EVENT_KEY)?.to_owned(),
        integration: header(message, headers::INTEGRATION_NAME)?.to_owned(),
        received_at: header(message, headers::RECEIVED_AT)?.to_owned(),
        control_offset: header(message, headers::CONTROL_OFFSET)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    })
}
