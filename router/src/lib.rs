//! inlet-router: Bitbucket events in, stack triggers out.
//!
//! # Layout
//!
//! - [`run`] consumes `inlet.webhooks` through the shared at-least-once loop
//!   ([`inlet_core::pipeline`]);
//! - the handler reads the delivery's headers, waits until this process's control fold has reached
//!   the offset ingest had applied (so a stack created before the push is always seen), parses the
//!   event and calls the rules in [`route`];
//! - each resulting `StackTrigger` goes to `inlet.triggers`, keyed by stack id.
//!
//! Delivery guarantee: at-least-once. An input's offset is stored only after all its triggers were
//! acknowledged; a replay yields the same `trigger_id`s. Ordering: per repository in, per stack out.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod route;

use std::time::Duration;

use inlet_core::CancellationToken;
use inlet_core::bitbucket::{self, events};
use inlet_core::config::StageConfig;
use inlet_core::control_log::ControlLog;
use inlet_core::kafka::header;
use inlet_core::pipeline::{self, Handler, Output};
use inlet_core::records::headers;
use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tracing::Instrument;

use crate::route::{Delivery, route_push};

/// How long to wait for the control fold to reach a delivery's control offset before routing with
/// what it has (only a control topic that lost records could make it wait that long).
const CONTROL_WAIT: Duration = Duration::from_secs(30);

/// What the router runs with, built by the caller.
pub struct Deps {
    /// Consumer subscribed to the webhooks topic, offsets stored manually.
    pub consumer: StreamConsumer,
    /// The idempotent producer.
    pub producer: FutureProducer,
    /// This process's fold of the control log.
    pub control: ControlLog,
    /// Where triggers go.
    pub triggers_topic: String,
    /// Longest drain on shutdown.
    pub drain: Duration,
}

/// Routes until `shutdown`, then drains in-flight outputs and commits.
pub async fn run(
    config: &StageConfig,
    deps: Deps,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let handler = Router {
        control: deps.control,
        triggers_topic: deps.triggers_topic,
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
    tracing::info!("router stopped");
    Ok(())
}

struct Router {
    control: ControlLog,
    triggers_topic: String,
}

impl Handler for Router {
    async fn handle(&self, message: &OwnedMessage) -> Vec<Output> {
        let (partition, offset) = (message.partition(), message.offset());
        let Some(delivery) = delivery_of(message) else {
            tracing::error!(
                partition,
                offset,
                "webhook record without inlet headers; skipped"
            );
            return Vec::new();
        };
        let span = tracing::info_span!(
            "route",
            delivery_id = %delivery.delivery_id,
            integration = %delivery.integration,
            partition,
            offset
        );
        self.route(message, delivery).instrument(span).await
    }
}

impl Router {
    async fn route(&self, message: &OwnedMessage, delivery: Delivery) -> Vec<Output> {
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
        if delivery.event_key != events::REFS_CHANGED {
            tracing::info!(event_key = %delivery.event_key, reason = "event_not_triggering", "ignored");
            return Vec::new();
        }
        let push = match bitbucket::parse_refs_changed(message.payload().unwrap_or_default()) {
            Ok(push) => push,
            Err(err) => {
                tracing::error!(error = %err, "unreadable push; skipped");
                return Vec::new();
            }
        };
        let routed = route_push(&self.control.read(), &delivery, &push);
        for (reference, reason) in &routed.ignored {
            tracing::info!(%reference, reason = reason.as_str(), "ignored");
        }
        tracing::info!(triggers = routed.triggers.len(), "routed");
        let traceparent = header(message, headers::TRACEPARENT).map(str::to_owned);
        routed
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
            .collect()
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
