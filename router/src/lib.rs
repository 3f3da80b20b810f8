//! inlet-router: Bitbucket events in, stack triggers out.
//!
//! # Layout
//!
//! `run` consumes `inlet.webhooks` through the shared at-least-once loop
//! (`inlet_core::pipeline`); for each record, in order:
//! 1. `delivery_of`: the delivery's metadata from the record's headers (poison without them);
//! 2. `Router::route`: wait until this process's control fold reached the offset ingest had
//!    applied (so a stack created before the push is always seen) → drop a delivery id routed
//!    within the last hour unless it is a redelivery (`Router::is_duplicate`) → parse the event
//!    (an event key inlet does not handle is recorded as ignored) → the trigger rules of
//!    `route`;
//!    → path filters of [`filter`]: ask Bitbucket which files the change touched and keep the
//!    stacks whose project root or globs cover one;
//! 3. `Router::outputs`: each `StackTrigger` to `inlet.triggers`, keyed by stack id, and one
//!    `DeliveryEvent` saying what was routed or ignored, and why, to `inlet.deliveries`;
//! 4. `telemetry`: one event per record writes its log line and counters.
//!
//! An unreadable record goes to `inlet.dlq` and the partition moves on.
//!
//! Delivery guarantee: at-least-once. An input's offset is stored only after all its triggers were
//! acknowledged; a replay yields the same `trigger_id`s. Ordering: per repository in, per stack out.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod filter;
pub mod heads;
pub mod history;
pub mod reconcile;
pub mod route;
pub mod telemetry;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use inlet_bitbucket::{self as bitbucket, Event};
use inlet_control::StageDeps;
use inlet_control::control_log::{CONTROL_WAIT, ControlLog};
use inlet_control::crypto::SecretsKey;
use inlet_control::registry::Registry;
use inlet_core::CancellationToken;
use inlet_core::config::{ReconcileConfig, StageConfig};
use inlet_core::dedup::SeenWindow;
use inlet_core::kafka::{Kafka, header};
use inlet_core::metrics::RouterMetrics;
use inlet_core::output::Outputs;
use inlet_core::pipeline::{self, Handler, Output, Poison};
use inlet_core::records::{
    Delivery, DeliveryEvent, DeliveryOutcome, RecordPosition, Stage, headers, trace_id,
};
use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use tracing::Instrument;

use crate::filter::{ChangesSource, PathFilters};
use crate::heads::Heads;
use crate::reconcile::{Reconciler, RefsSource};
use crate::route::{IgnoredReason, Routed, route_pull_request, route_push};
use crate::telemetry::{Routing, RoutingOutcome};

/// How long a delivery id is remembered to drop Bitbucket redeliveries of the same request.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(60 * 60);
/// How many delivery ids and body digests are remembered at most (two entries per delivery).
const DUPLICATE_CAPACITY: usize = 400_000;

/// What the stage runs with, built by the caller.
pub struct Deps<S> {
    /// The consume loop's clients and this process's control fold.
    pub stage: StageDeps,
    /// Where changed files are asked for (the Bitbucket REST client).
    pub changes: S,
    /// Opens integrations' access tokens; without it path filters fail open.
    pub secrets_key: Option<SecretsKey>,
    /// The cluster and this stage's consumer group, to rebuild the duplicate window from what
    /// the group already routed ([`history`]) and to load the last-seen heads ([`heads`]);
    /// `None` starts with an empty window, no heads and no reconciliation.
    pub history: Option<(Kafka, String)>,
    /// Reconciliation's interval and bounds ([`reconcile`]).
    pub reconcile: ReconcileConfig,
}

/// Routes until `shutdown`, then drains in-flight outputs and commits. Reconciliation runs
/// beside routing, on the same consumer's partitions.
pub async fn run<S: ChangesSource + RefsSource + Clone>(
    config: &StageConfig,
    deps: Deps<S>,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    if deps.secrets_key.is_none() {
        tracing::warn!(
            "the router has no secrets key: it cannot ask Bitbucket for changed files, so every \
             stack of a repository is treated as affected (set INLET_SECRETS_KEY)"
        );
    }
    let stage = deps.stage;
    let mut seen = SeenWindow::new(DUPLICATE_WINDOW, DUPLICATE_CAPACITY);
    if let Some((kafka, group)) = &deps.history {
        remember_routed(&mut seen, kafka, group, &stage.pipeline.topics.webhooks()).await;
    }
    let heads = Heads::new(stage.pipeline.metrics.router.reconcile.heads.clone());
    let mut background = Vec::new();
    if let Some((kafka, _)) = &deps.history {
        let own = Own {
            source: deps.changes.clone(),
            secrets_key: deps.secrets_key.clone(),
            config: deps.reconcile.clone(),
        };
        background = start_reconciler(kafka, &stage, own, &heads, shutdown.clone()).await;
    }
    let handler = Router {
        metrics: stage.pipeline.metrics.router.clone(),
        control: stage.control,
        filters: PathFilters::new(deps.changes, deps.secrets_key),
        triggers_topic: stage.pipeline.topics.triggers(),
        deliveries_topic: stage.pipeline.topics.deliveries(),
        heads_topic: stage.pipeline.topics.heads(),
        heads,
        seen: Mutex::new(seen),
    };
    let routed = pipeline::run_stage(stage.pipeline, handler, config, shutdown).await;
    // The reconciler and the heads reader hold Kafka clients: they end (and close them) before
    // the caller may stop the broker those clients talk to.
    for task in background {
        let _ = task.await;
    }
    routed
}

/// What the reconciler takes from the router's [`Deps`].
struct Own<S> {
    source: S,
    secrets_key: Option<SecretsKey>,
    config: ReconcileConfig,
}

/// Loads the last-seen heads, then starts the reconciler in the background: the tasks started
/// (heads reader, reconciler), which end after `shutdown`. Trouble is logged: routing never waits
/// for reconciliation.
async fn start_reconciler<S: RefsSource>(
    kafka: &Kafka,
    stage: &StageDeps,
    deps: Own<S>,
    heads: &Heads,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let topics = &stage.pipeline.topics;
    if let Ok(Some(policy)) = kafka.topic_config(&topics.heads(), "cleanup.policy").await
        && !policy.contains("compact")
    {
        tracing::warn!(
            topic = %topics.heads(),
            %policy,
            "the heads topic is not compacted: it grows with every push instead of holding one \
             record per head (set cleanup.policy=compact)"
        );
    }
    let tail = match heads::load(kafka, &topics.heads(), heads, shutdown.clone()).await {
        Ok(tail) => tail,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the heads topic; reconciliation is off");
            return Vec::new();
        }
    };
    let partitions = match kafka.partition_count(&topics.webhooks()).await {
        Ok(partitions) => partitions,
        Err(err) => {
            tracing::warn!(error = %err, "cannot count the webhooks topic's partitions; reconciliation is off");
            return vec![tail];
        }
    };
    let partitioner = kafka.partitioner().to_owned();
    if inlet_core::kafka::partition_for(&partitioner, b"probe", partitions).is_none() {
        tracing::warn!(
            %partitioner,
            "the producer's partitioner does not place records by key, so no router can tell \
             which repositories it owns; reconciliation is off"
        );
        return vec![tail];
    }
    let reconciler = Reconciler {
        source: deps.source,
        control: stage.control.clone(),
        heads: heads.clone(),
        outputs: Outputs::new(stage.pipeline.producer.clone()),
        topics: topics.clone(),
        consumer: stage.pipeline.consumer.clone(),
        partitioning: (partitioner, partitions),
        secrets_key: deps.secrets_key,
        metrics: stage.pipeline.metrics.router.reconcile.clone(),
        config: deps.config,
    };
    vec![tail, tokio::spawn(reconciler.run(shutdown))]
}

/// Seeds `seen` with the deliveries `group` routed within the window (see [`history`]). A
/// failure is logged and leaves the window empty: routing must not wait for history.
async fn remember_routed(seen: &mut SeenWindow, kafka: &Kafka, group: &str, topic: &str) {
    let started = Instant::now();
    match history::rebuild(kafka, group, topic, DUPLICATE_WINDOW, DUPLICATE_CAPACITY).await {
        Ok(rebuilt) => {
            let now = Instant::now();
            for remembered in &rebuilt.keys {
                let at = now.checked_sub(remembered.age).unwrap_or(now);
                seen.first_time(&remembered.key, at);
            }
            if rebuilt.complete {
                tracing::info!(
                    records = rebuilt.records,
                    keys = seen.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "duplicate window rebuilt from routed webhooks"
                );
            } else {
                tracing::warn!(
                    records = rebuilt.records,
                    keys = seen.len(),
                    "duplicate window rebuilt only in part: reading back routed webhooks took \
                     too long; a replay of an older delivery may be routed again"
                );
            }
        }
        Err(err) => tracing::warn!(
            error = %err,
            "could not read back routed webhooks; the duplicate window starts empty"
        ),
    }
}

struct Router<S> {
    metrics: RouterMetrics,
    control: ControlLog,
    filters: PathFilters<S>,
    triggers_topic: String,
    deliveries_topic: String,
    heads_topic: String,
    heads: Heads,
    seen: Mutex<SeenWindow>,
}

impl<S: ChangesSource> Handler for Router<S> {
    fn stage(&self) -> Stage {
        Stage::Router
    }

    async fn handle(&self, message: &OwnedMessage) -> Result<Vec<Output>, Poison> {
        let started = Instant::now();
        let Some(delivery) = delivery_of(message) else {
            Routing::unreadable().emit(&self.metrics, started);
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
            partition = message.partition(),
            offset = message.offset(),
        );
        async {
            let mut routing = Routing::new(&delivery.event_key);
            let result = self.route(message, &delivery, &mut routing).await;
            routing.emit(&self.metrics, started);
            result
        }
        .instrument(span)
        .await
    }
}

impl<S: ChangesSource> Router<S> {
    /// Routes one delivery: its outputs, or why it is poison.
    async fn route(
        &self,
        message: &OwnedMessage,
        delivery: &Delivery,
        routing: &mut Routing,
    ) -> Result<Vec<Output>, Poison> {
        self.control
            .wait_for(delivery.control_offset, CONTROL_WAIT)
            .await;
        let mut record = delivery_event(message, delivery);
        record.integration_id = self
            .control
            .read()
            .integration(&delivery.integration)
            .map(|i| i.id.clone());
        if let Some(reason) = self.duplicate(message, delivery) {
            routing.outcome = RoutingOutcome::Duplicate;
            record.outcome = DeliveryOutcome::Duplicate;
            record.reasons = vec![reason.to_owned()];
            return Ok(vec![self.delivery_output(&record)]);
        }
        let event =
            match bitbucket::parse(&delivery.event_key, message.payload().unwrap_or_default()) {
                Ok(Some(event)) => event,
                Ok(None) => {
                    routing.outcome = RoutingOutcome::Ignored;
                    routing
                        .ignored
                        .push((delivery.event_key.clone(), IgnoredReason::EventNotHandled));
                    record.outcome = DeliveryOutcome::Ignored;
                    record.reasons = vec![IgnoredReason::EventNotHandled.as_str().to_owned()];
                    return Ok(vec![self.delivery_output(&record)]);
                }
                Err(err) => {
                    routing.outcome = RoutingOutcome::DeadLettered;
                    record.outcome = DeliveryOutcome::DeadLettered;
                    record.reasons = vec!["unreadable_payload".to_owned()];
                    return Err(Poison {
                        reason: format!("unreadable {} payload: {err}", delivery.event_key),
                        outputs: vec![self.delivery_output(&record)],
                    });
                }
            };
        let (mut routed, head_changes) = {
            let registry = self.control.read();
            let changes = self.heads.observe(&registry, &delivery.integration, &event);
            (apply_rules(&registry, delivery, &event), changes)
        };
        if header(message, headers::RECOVERED).is_some() {
            for trigger in &mut routed.triggers {
                trigger.trigger.recovered = true;
            }
        }
        let filtered = self
            .filters
            .apply(&self.control, &delivery.integration, &mut routed)
            .await;
        record.reasons = filtered.reasons.clone();
        routing.filtered = filtered;
        // Remembered now, written with the webhook's outputs (so before its offset is stored).
        self.heads.apply(&head_changes);
        let mut outputs = self.outputs(message, routed, record, routing);
        outputs.extend(heads::outputs(&self.heads_topic, &head_changes));
        Ok(outputs)
    }

    /// Why this delivery is one already routed within the window, unless it is a redelivery an
    /// admin asked for: the same `X-Request-Id` (`duplicate_delivery`), or the same signed body
    /// under another id (`replayed_body`: a captured delivery sent again, which the signature
    /// alone cannot tell from the original).
    fn duplicate(&self, message: &OwnedMessage, delivery: &Delivery) -> Option<&'static str> {
        let [id, body] = history::keys(
            &delivery.integration,
            &delivery.delivery_id,
            message.payload().unwrap_or_default(),
        );
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (new_id, new_body) = (seen.first_time(&id, now), seen.first_time(&body, now));
        if header(message, headers::REDELIVERY).is_some() {
            return None;
        }
        match (new_id, new_body) {
            (false, _) => Some("duplicate_delivery"),
            (true, false) => Some("replayed_body"),
            (true, true) => None,
        }
    }

    /// One record per trigger, and the delivery event that says what was routed or ignored.
    fn outputs(
        &self,
        message: &OwnedMessage,
        routed: Routed,
        mut record: DeliveryEvent,
        routing: &mut Routing,
    ) -> Vec<Output> {
        record.reasons.extend(
            routed
                .ignored
                .iter()
                .map(|(reference, reason)| format!("{}: {reference}", reason.as_str())),
        );
        if routed.triggers.is_empty() {
            record.outcome = DeliveryOutcome::Ignored;
            routing.outcome = RoutingOutcome::Ignored;
        }
        record.stacks = routed.triggers.iter().map(|t| t.stack_id.clone()).collect();
        routing.triggers = routed.triggers.len();
        routing.ignored = routed.ignored;
        let traceparent = header(message, headers::TRACEPARENT);
        let mut outputs: Vec<Output> = routed
            .triggers
            .iter()
            .map(|trigger| trigger.output(&self.triggers_topic, traceparent))
            .collect();
        outputs.push(self.delivery_output(&record));
        outputs
    }

    fn delivery_output(&self, record: &DeliveryEvent) -> Output {
        Output::delivery_event(&self.deliveries_topic, record)
    }
}

/// The trigger rules of DESIGN §5 over `registry`.
fn apply_rules(registry: &Registry, delivery: &Delivery, event: &Event) -> Routed {
    match event {
        Event::Push(push) => route_push(registry, delivery, push),
        Event::PullRequest(action, event) => route_pull_request(registry, delivery, *action, event),
    }
}

/// The delivery's metadata from the webhook record's headers.
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

/// The router's delivery event for `delivery`, routed until the rules say otherwise.
fn delivery_event(message: &OwnedMessage, delivery: &Delivery) -> DeliveryEvent {
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
    record
}
