//! Prometheus metrics, one registry per process.
//!
//! Names are `inlet_<stage>_<thing>_<unit>`. Label values come from enums or from names the
//! registry knows (integrations), never from request input, so cardinality stays bounded.

use std::sync::Arc;

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// What became of one webhook request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// 202: published.
    Accepted,
    /// 200: a ping.
    Ping,
    /// 401.
    Unauthorized,
    /// 404.
    NotFound,
    /// 400 (and other client errors).
    BadRequest,
    /// 413.
    TooLarge,
    /// 408: the body was too slow.
    Timeout,
    /// 503.
    Unavailable,
}

impl WebhookOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Accepted => "accepted",
            WebhookOutcome::Ping => "ping",
            WebhookOutcome::Unauthorized => "unauthorized",
            WebhookOutcome::NotFound => "not_found",
            WebhookOutcome::BadRequest => "bad_request",
            WebhookOutcome::TooLarge => "too_large",
            WebhookOutcome::Timeout => "timeout",
            WebhookOutcome::Unavailable => "unavailable",
        }
    }
}

/// The ingest stage's metrics.
#[derive(Clone)]
pub struct IngestMetrics {
    /// `inlet_ingest_requests_total{integration, event, outcome}`.
    pub requests: IntCounterVec,
    /// `inlet_ingest_signature_failures_total{reason}`.
    pub signature_failures: IntCounterVec,
    /// `inlet_ingest_publish_duration_seconds`: from produce to the broker's acknowledgement.
    pub publish_seconds: Histogram,
    /// `inlet_ingest_in_flight_requests`: webhook requests being handled.
    pub in_flight: IntGauge,
    /// `inlet_ingest_request_body_bytes`.
    pub body_bytes: Histogram,
}

/// The router's metrics.
#[derive(Clone)]
pub struct RouterMetrics {
    /// `inlet_router_events_total{event, outcome}`: outcome routed, ignored, duplicate,
    /// dead_lettered.
    pub events: IntCounterVec,
    /// `inlet_router_triggers_total`: stack triggers emitted.
    pub triggers: IntCounter,
    /// `inlet_router_processing_duration_seconds`: from reading a webhook to its outputs queued.
    pub processing_seconds: Histogram,
    /// `inlet_router_dead_letters_total`.
    pub dead_letters: IntCounter,
    /// Reconciliation (DESIGN §5.2).
    pub reconcile: ReconcileMetrics,
}

/// The router's reconciliation metrics.
#[derive(Clone)]
pub struct ReconcileMetrics {
    /// `inlet_reconcile_passes_total{outcome}`: `complete` (every owned repository read),
    /// `incomplete` (some could not be read, or the pass ran out of its time share),
    /// `skipped` (nothing owned, or reconciliation cannot work: see the log).
    pub passes: IntCounterVec,
    /// `inlet_reconcile_pass_duration_seconds`.
    pub pass_seconds: Histogram,
    /// `inlet_reconcile_recovered_total{kind}`: deliveries synthesized, `push` or
    /// `pull_request`. Anything above zero means Bitbucket's webhooks are failing.
    pub recovered: IntCounterVec,
    /// `inlet_reconcile_errors_total{reason}`: repositories a pass could not read, by reason
    /// (the Bitbucket client's codes, `private_host`, `no_access_token`, …).
    pub errors: IntCounterVec,
    /// `inlet_reconcile_repositories`: repositories with stacks this router owned in its last pass.
    pub repositories: IntGauge,
    /// `inlet_reconcile_heads`: last-seen heads this router remembers (every router's).
    pub heads: IntGauge,
}

/// The workers' metrics.
#[derive(Clone)]
pub struct WorkersMetrics {
    /// `inlet_workers_decisions_total{status, reason}`: status requested, blocked or none (no
    /// decision); reason the blocked or no-decision code, `none` otherwise.
    pub decisions: IntCounterVec,
    /// `inlet_workers_duplicate_runs_total`: decisions not emitted again.
    pub duplicate_runs: IntCounter,
    /// `inlet_workers_end_to_end_seconds`: from ingest receiving the webhook to the decision.
    pub end_to_end_seconds: Histogram,
    /// `inlet_workers_dead_letters_total`.
    pub dead_letters: IntCounter,
}

/// The reporter's metrics.
#[derive(Clone)]
pub struct ReporterMetrics {
    /// `inlet_reporter_statuses_total{outcome}`: decisions and run updates by what became of
    /// them: `posted`, `posted_legacy`, `already_posted`, `superseded`, `unknown_run`,
    /// `not_postable` (stack deleted, integration detached, no credentials) or `refused` (a 4xx
    /// from Bitbucket).
    pub statuses: IntCounterVec,
    /// `inlet_reporter_retries_total`: posts retried while Bitbucket was unavailable.
    pub retries: IntCounter,
    /// `inlet_reporter_dead_letters_total`: records the reporter could not read.
    pub dead_letters: IntCounter,
}

/// The control plane's metrics (every process folds the control log).
#[derive(Clone)]
pub struct ControlMetrics {
    /// `inlet_control_applied_offset`: the next control-log offset to fold.
    pub applied_offset: IntGauge,
    /// `inlet_control_end_offset`: the control log's end when last checked (startup, admin
    /// requests, readiness probes); with the applied offset it shows how far behind a process is.
    pub end_offset: IntGauge,
    /// `inlet_control_commands_total{kind, outcome}`: outcome accepted or rejected.
    pub commands: IntCounterVec,
    /// `inlet_control_registry_entities{kind}`: spaces, integrations, stacks, api_keys.
    pub entities: IntGaugeVec,
    /// `inlet_control_snapshot_writes_total{outcome}`: snapshots this process wrote (`written`)
    /// or failed to write (`failed`).
    pub snapshot_writes: IntCounterVec,
    /// `inlet_control_snapshot_write_duration_seconds`: serializing and writing one snapshot.
    pub snapshot_write_seconds: Histogram,
    /// `inlet_control_snapshot_size_bytes`: bytes of the last snapshot written or loaded.
    pub snapshot_bytes: IntGauge,
    /// `inlet_control_snapshot_offset`: the control offset the last snapshot written or loaded
    /// covers (-1: none).
    pub snapshot_offset: IntGauge,
    /// `inlet_control_snapshot_loads_total{outcome}`: at startup, `loaded`, `none` (no usable
    /// snapshot: folded from offset 0) or `skipped` (per manifest passed over: invalid, another
    /// version, or a gap before the log's start).
    pub snapshot_loads: IntCounterVec,
    /// `inlet_control_catch_up_duration_seconds`: how long startup took to load the snapshot and
    /// fold the log to its end.
    pub catch_up_seconds: prometheus::Gauge,
}

/// librdkafka's view of the producer and brokers (from its statistics, every 10 s).
#[derive(Clone)]
pub struct KafkaMetrics {
    /// `inlet_kafka_producer_queue_messages`: messages waiting in the producer's queue.
    pub producer_queue_messages: IntGauge,
    /// `inlet_kafka_transmit_errors_total`: request transmit errors to brokers.
    pub transmit_errors: IntCounter,
    /// `inlet_kafka_broker_rtt_seconds{broker}`: average broker round-trip time.
    pub broker_rtt_seconds: prometheus::GaugeVec,
}

/// A Bitbucket REST endpoint inlet calls: the `endpoint` label of `inlet_bitbucket_*`.
///
/// Add a variant (and its entry in [`BitbucketEndpoint::ALL`]) for each new endpoint the client
/// learns (build statuses, webhooks, branches, pull requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BitbucketEndpoint {
    /// `GET …/compare/changes`: files changed between two commits.
    CompareChanges,
    /// `GET …/pull-requests/{id}/changes`: files changed by a pull request.
    PullRequestChanges,
    /// `POST …/commits/{sha}/builds` (or the legacy `/rest/build-status/1.0/commits/{sha}`): a
    /// build status.
    PostBuildStatus,
    /// `GET …/commits/{sha}/builds?key=`: the build status with a key.
    GetBuildStatus,
    /// `GET …/webhooks`: the webhooks of a project or repository (paged).
    WebhooksList,
    /// `POST …/webhooks`: create a webhook.
    WebhookCreate,
    /// `PUT …/webhooks/{id}`: update a webhook.
    WebhookUpdate,
    /// `DELETE …/webhooks/{id}`: delete a webhook.
    WebhookDelete,
    /// `GET …/commits?until=refs/heads/{branch}&limit=1`: a branch's head (reconciliation).
    BranchHead,
    /// `GET …/pull-requests?state=OPEN&at=…`: open pull requests into a branch (reconciliation).
    OpenPullRequests,
}

impl BitbucketEndpoint {
    /// Every endpoint, so each series exists (at zero) from the start.
    pub const ALL: &'static [BitbucketEndpoint] = &[
        BitbucketEndpoint::CompareChanges,
        BitbucketEndpoint::PullRequestChanges,
        BitbucketEndpoint::PostBuildStatus,
        BitbucketEndpoint::GetBuildStatus,
        BitbucketEndpoint::WebhooksList,
        BitbucketEndpoint::WebhookCreate,
        BitbucketEndpoint::WebhookUpdate,
        BitbucketEndpoint::WebhookDelete,
        BitbucketEndpoint::BranchHead,
        BitbucketEndpoint::OpenPullRequests,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            BitbucketEndpoint::CompareChanges => "compare_changes",
            BitbucketEndpoint::PullRequestChanges => "pull_request_changes",
            BitbucketEndpoint::WebhooksList => "webhooks_list",
            BitbucketEndpoint::WebhookCreate => "webhook_create",
            BitbucketEndpoint::WebhookUpdate => "webhook_update",
            BitbucketEndpoint::WebhookDelete => "webhook_delete",
            BitbucketEndpoint::BranchHead => "branch_head",
            BitbucketEndpoint::OpenPullRequests => "open_pull_requests",
            BitbucketEndpoint::PostBuildStatus => "post_build_status",
            BitbucketEndpoint::GetBuildStatus => "get_build_status",
        }
    }
}

/// What became of one Bitbucket client call (all its pages and retries): the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BitbucketOutcome {
    /// Answered 2xx with a readable body.
    Ok,
    /// A 4xx other than 429 (never retried).
    ClientError,
    /// A 5xx after every retry, or a 2xx body inlet cannot read.
    ServerError,
    /// 429 after every retry, or a `Retry-After` beyond the deadline.
    RateLimited,
    /// The call's deadline passed.
    Timeout,
    /// Connection, TLS or protocol errors after every retry.
    Transport,
    /// Refused before any request: an `http://` URL without `allow_http`, a `private://` host,
    /// a malformed base URL or token.
    NotAllowed,
}

impl BitbucketOutcome {
    /// Every outcome, so each series exists (at zero) from the start.
    pub const ALL: &'static [BitbucketOutcome] = &[
        BitbucketOutcome::Ok,
        BitbucketOutcome::ClientError,
        BitbucketOutcome::ServerError,
        BitbucketOutcome::RateLimited,
        BitbucketOutcome::Timeout,
        BitbucketOutcome::Transport,
        BitbucketOutcome::NotAllowed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            BitbucketOutcome::Ok => "ok",
            BitbucketOutcome::ClientError => "client_error",
            BitbucketOutcome::ServerError => "server_error",
            BitbucketOutcome::RateLimited => "rate_limited",
            BitbucketOutcome::Timeout => "timeout",
            BitbucketOutcome::Transport => "transport",
            BitbucketOutcome::NotAllowed => "not_allowed",
        }
    }
}

/// The Bitbucket REST client's metrics (any stage that calls Bitbucket).
#[derive(Clone)]
pub struct BitbucketMetrics {
    /// `inlet_bitbucket_calls_total{endpoint, outcome}`: client calls by their final outcome (a
    /// paged call with its retries is one call).
    pub calls: IntCounterVec,
    /// `inlet_bitbucket_call_duration_seconds{endpoint}`: a whole call, pages, retries and waits
    /// included.
    pub call_seconds: HistogramVec,
    /// `inlet_bitbucket_retries_total{endpoint}`: requests sent again after a 429, a 5xx or a
    /// connection error.
    pub retries: IntCounterVec,
    /// `inlet_bitbucket_rate_limited_seconds_total{endpoint}`: time spent waiting on 429
    /// `Retry-After`.
    pub rate_limited_seconds: CounterVec,
}

impl BitbucketMetrics {
    fn new() -> BitbucketMetrics {
        let metrics = BitbucketMetrics {
            calls: counter_vec(
                "inlet_bitbucket_calls_total",
                "Bitbucket REST client calls by endpoint and final outcome.",
                &["endpoint", "outcome"],
            ),
            call_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "inlet_bitbucket_call_duration_seconds",
                    "Duration of Bitbucket REST client calls, pages, retries and waits included.",
                )
                .buckets(latency_buckets()),
                &["endpoint"],
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            retries: counter_vec(
                "inlet_bitbucket_retries_total",
                "Bitbucket requests sent again after a 429, a 5xx or a connection error.",
                &["endpoint"],
            ),
            rate_limited_seconds: CounterVec::new(
                Opts::new(
                    "inlet_bitbucket_rate_limited_seconds_total",
                    "Seconds spent waiting on Bitbucket's Retry-After.",
                ),
                &["endpoint"],
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
        };
        // Every series exists from the start, so dashboards and rates see zero, not nothing.
        for endpoint in BitbucketEndpoint::ALL {
            let label = endpoint.as_str();
            for outcome in BitbucketOutcome::ALL {
                metrics.calls.with_label_values(&[label, outcome.as_str()]);
            }
            metrics.call_seconds.with_label_values(&[label]);
            metrics.retries.with_label_values(&[label]);
            metrics.rate_limited_seconds.with_label_values(&[label]);
        }
        metrics
    }

    /// Records one finished call.
    pub fn call(&self, endpoint: BitbucketEndpoint, outcome: BitbucketOutcome, seconds: f64) {
        self.calls
            .with_label_values(&[endpoint.as_str(), outcome.as_str()])
            .inc();
        self.call_seconds
            .with_label_values(&[endpoint.as_str()])
            .observe(seconds);
    }

    /// Records one retry.
    pub fn retry(&self, endpoint: BitbucketEndpoint) {
        self.retries.with_label_values(&[endpoint.as_str()]).inc();
    }

    /// Records time waited on a `Retry-After`.
    pub fn rate_limited(&self, endpoint: BitbucketEndpoint, seconds: f64) {
        self.rate_limited_seconds
            .with_label_values(&[endpoint.as_str()])
            .inc_by(seconds);
    }
}

/// Every metric of a process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Ingest.
    pub ingest: IngestMetrics,
    /// Router.
    pub router: RouterMetrics,
    /// Workers.
    pub workers: WorkersMetrics,
    /// Reporter.
    pub reporter: ReporterMetrics,
    /// Control plane.
    pub control: ControlMetrics,
    /// `inlet_consumer_lag_records{stage, partition}`: records between a consuming stage's
    /// position and the end of each partition it reads, refreshed every 5 s.
    pub consumer_lag: IntGaugeVec,
    /// `inlet_consumer_stalled_seconds{stage, partition}`: how long a lagging partition has not
    /// advanced (0 while it moves or is caught up).
    pub consumer_stalled: IntGaugeVec,
    /// Positions of the partitions this process consumes, for readiness.
    pub progress: crate::progress::Progress,
    /// Consumer-group membership of the consuming stages.
    pub group: GroupMetrics,
    /// Kafka client statistics.
    pub kafka: KafkaMetrics,
    /// The Bitbucket REST client.
    pub bitbucket: BitbucketMetrics,
}

/// Consumer-group membership of the consuming stages (router, workers, reporter), from their
/// consumers' rebalance callbacks.
#[derive(Clone)]
pub struct GroupMetrics {
    /// `inlet_consumer_rebalances_total{stage, event}`: rebalance callbacks by what they did to
    /// this member's assignment (`assigned`, `revoked`, `lost`: taken away without this member
    /// giving them up, `error`).
    pub rebalances: IntCounterVec,
    /// `inlet_consumer_assigned_partitions{stage}`: partitions this member holds now.
    pub assigned_partitions: IntGaugeVec,
    /// `inlet_consumer_last_rebalance_timestamp_seconds{stage}`: Unix time of the last rebalance
    /// callback (time since: `time() - …`).
    pub last_rebalance: prometheus::GaugeVec,
}

/// What a rebalance callback did to a member's assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// Partitions were added.
    Assigned,
    /// Partitions were given up.
    Revoked,
    /// Partitions were taken away (session timed out, poll interval exceeded).
    Lost,
    /// The rebalance failed.
    Error,
}

impl RebalanceEvent {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RebalanceEvent::Assigned => "assigned",
            RebalanceEvent::Revoked => "revoked",
            RebalanceEvent::Lost => "lost",
            RebalanceEvent::Error => "error",
        }
    }
}

impl GroupMetrics {
    fn new() -> GroupMetrics {
        GroupMetrics {
            rebalances: counter_vec(
                "inlet_consumer_rebalances_total",
                "Consumer-group rebalances by what they did to this member's assignment.",
                &["stage", "event"],
            ),
            assigned_partitions: IntGaugeVec::new(
                Opts::new(
                    "inlet_consumer_assigned_partitions",
                    "Partitions the consumer group assigned to this member.",
                ),
                &["stage"],
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            last_rebalance: prometheus::GaugeVec::new(
                Opts::new(
                    "inlet_consumer_last_rebalance_timestamp_seconds",
                    "Unix time of the last rebalance of this member's consumer group.",
                ),
                &["stage"],
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
        }
    }

    /// Exports `stage`'s series at zero, so the first rebalance is an increase alerts see.
    pub fn register_stage(&self, stage: crate::records::Stage) {
        let stage = stage.as_str();
        for event in [
            RebalanceEvent::Assigned,
            RebalanceEvent::Revoked,
            RebalanceEvent::Lost,
            RebalanceEvent::Error,
        ] {
            self.rebalances.with_label_values(&[stage, event.as_str()]);
        }
        self.assigned_partitions.with_label_values(&[stage]);
    }

    /// Records one rebalance callback of `stage` and the member's assignment size after it.
    pub fn rebalanced(
        &self,
        stage: crate::records::Stage,
        event: RebalanceEvent,
        assigned: Option<usize>,
    ) {
        let stage = stage.as_str();
        self.rebalances
            .with_label_values(&[stage, event.as_str()])
            .inc();
        if let Some(assigned) = assigned {
            self.assigned_partitions
                .with_label_values(&[stage])
                .set(i64::try_from(assigned).unwrap_or(i64::MAX));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.last_rebalance.with_label_values(&[stage]).set(now);
    }
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|err| unreachable!("static metric definition: {err}"))
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help)
        .unwrap_or_else(|err| unreachable!("static metric definition: {err}"))
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .unwrap_or_else(|err| unreachable!("static metric definition: {err}"))
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
}

impl Metrics {
    /// `inlet_<stage>_dead_letters_total` of a consuming stage (ingest writes no dead letters).
    pub fn dead_letters(&self, stage: crate::records::Stage) -> Option<&IntCounter> {
        match stage {
            crate::records::Stage::Router => Some(&self.router.dead_letters),
            crate::records::Stage::Workers => Some(&self.workers.dead_letters),
            crate::records::Stage::Reporter => Some(&self.reporter.dead_letters),
            crate::records::Stage::Ingest | crate::records::Stage::Reconciler => None,
        }
    }

    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let ingest = IngestMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "inlet_ingest_requests_total",
                    "Webhook requests by integration, event key and outcome.",
                ),
                &["integration", "event", "outcome"],
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            signature_failures: IntCounterVec::new(
                Opts::new(
                    "inlet_ingest_signature_failures_total",
                    "Webhooks refused for their signature, by reason.",
                ),
                &["reason"],
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            publish_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "inlet_ingest_publish_duration_seconds",
                    "Time from producing a webhook to the broker's acknowledgement.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            in_flight: IntGauge::new(
                "inlet_ingest_in_flight_requests",
                "Webhook requests being handled.",
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            body_bytes: Histogram::with_opts(
                HistogramOpts::new("inlet_ingest_request_body_bytes", "Webhook body sizes.")
                    .buckets(prometheus::exponential_buckets(256.0, 4.0, 8).unwrap_or_default()),
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
        };
        for collector in [
            Box::new(ingest.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(ingest.signature_failures.clone()),
            Box::new(ingest.publish_seconds.clone()),
            Box::new(ingest.in_flight.clone()),
            Box::new(ingest.body_bytes.clone()),
        ] {
            registry
                .register(collector)
                .unwrap_or_else(|err| unreachable!("each metric is registered once: {err}"));
        }
        let router = RouterMetrics {
            events: counter_vec(
                "inlet_router_events_total",
                "Webhooks routed, by event key and outcome.",
                &["event", "outcome"],
            ),
            triggers: counter("inlet_router_triggers_total", "Stack triggers emitted."),
            processing_seconds: histogram(
                "inlet_router_processing_duration_seconds",
                "Time to route one webhook.",
                latency_buckets(),
            ),
            dead_letters: counter(
                "inlet_router_dead_letters_total",
                "Webhook records sent to the dead-letter topic.",
            ),
            reconcile: ReconcileMetrics {
                passes: counter_vec(
                    "inlet_reconcile_passes_total",
                    "Reconciliation passes by outcome (complete, incomplete, skipped).",
                    &["outcome"],
                ),
                pass_seconds: histogram(
                    "inlet_reconcile_pass_duration_seconds",
                    "Time one reconciliation pass took.",
                    vec![
                        0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 150.0, 300.0, 900.0,
                    ],
                ),
                recovered: counter_vec(
                    "inlet_reconcile_recovered_total",
                    "Deliveries Bitbucket never made that reconciliation synthesized, by kind.",
                    &["kind"],
                ),
                errors: counter_vec(
                    "inlet_reconcile_errors_total",
                    "Repositories a reconciliation pass could not read, by reason.",
                    &["reason"],
                ),
                repositories: IntGauge::new(
                    "inlet_reconcile_repositories",
                    "Repositories with stacks this router owned in its last reconciliation pass.",
                )
                .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
                heads: IntGauge::new(
                    "inlet_reconcile_heads",
                    "Last-seen branch heads and pull-request commits this router remembers.",
                )
                .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            },
        };
        let workers = WorkersMetrics {
            decisions: counter_vec(
                "inlet_workers_decisions_total",
                "Run decisions by status and reason.",
                &["status", "reason"],
            ),
            duplicate_runs: counter(
                "inlet_workers_duplicate_runs_total",
                "Decisions not emitted again because their run was already decided.",
            ),
            end_to_end_seconds: histogram(
                "inlet_workers_end_to_end_seconds",
                "Time from ingest receiving a webhook to its run decision.",
                latency_buckets(),
            ),
            dead_letters: counter(
                "inlet_workers_dead_letters_total",
                "Trigger records sent to the dead-letter topic.",
            ),
        };
        let reporter = ReporterMetrics {
            statuses: counter_vec(
                "inlet_reporter_statuses_total",
                "Decisions and run updates by what the reporter did with them.",
                &["outcome"],
            ),
            retries: counter(
                "inlet_reporter_retries_total",
                "Build-status posts retried while Bitbucket was unavailable.",
            ),
            dead_letters: counter(
                "inlet_reporter_dead_letters_total",
                "Decision or run-update records sent to the dead-letter topic.",
            ),
        };
        let control = ControlMetrics {
            applied_offset: IntGauge::new(
                "inlet_control_applied_offset",
                "The next control-log offset this process will fold.",
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            end_offset: IntGauge::new(
                "inlet_control_end_offset",
                "The control log's end offset when last checked.",
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            commands: counter_vec(
                "inlet_control_commands_total",
                "Control commands folded, by kind and outcome.",
                &["kind", "outcome"],
            ),
            entities: IntGaugeVec::new(
                Opts::new(
                    "inlet_control_registry_entities",
                    "Entities in the registry.",
                ),
                &["kind"],
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            snapshot_writes: counter_vec(
                "inlet_control_snapshot_writes_total",
                "Control snapshots this process wrote, by outcome (written, failed).",
                &["outcome"],
            ),
            snapshot_write_seconds: histogram(
                "inlet_control_snapshot_write_duration_seconds",
                "Time to serialize and write one control snapshot.",
                vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            ),
            snapshot_bytes: IntGauge::new(
                "inlet_control_snapshot_size_bytes",
                "Bytes of the last control snapshot written or loaded.",
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            snapshot_offset: IntGauge::new(
                "inlet_control_snapshot_offset",
                "The control offset the last snapshot written or loaded covers (-1: none).",
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            snapshot_loads: counter_vec(
                "inlet_control_snapshot_loads_total",
                "Control snapshot loads at startup, by outcome (loaded, none, skipped).",
                &["outcome"],
            ),
            catch_up_seconds: prometheus::Gauge::new(
                "inlet_control_catch_up_duration_seconds",
                "Time startup took to load a snapshot and fold the control log to its end.",
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
        };
        control.snapshot_offset.set(-1);
        for outcome in ["written", "failed"] {
            control.snapshot_writes.with_label_values(&[outcome]);
        }
        for outcome in ["loaded", "none", "skipped"] {
            control.snapshot_loads.with_label_values(&[outcome]);
        }
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "inlet_consumer_lag_records",
                "Records between a stage's position and the end of each partition it reads.",
            ),
            &["stage", "partition"],
        )
        .unwrap_or_else(|err| unreachable!("static metric definition: {err}"));
        let consumer_stalled = IntGaugeVec::new(
            Opts::new(
                "inlet_consumer_stalled_seconds",
                "How long a lagging partition has not advanced (0 while it moves or is caught up).",
            ),
            &["stage", "partition"],
        )
        .unwrap_or_else(|err| unreachable!("static metric definition: {err}"));
        let kafka = KafkaMetrics {
            producer_queue_messages: IntGauge::new(
                "inlet_kafka_producer_queue_messages",
                "Messages waiting in the producer's queue.",
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            transmit_errors: counter(
                "inlet_kafka_transmit_errors_total",
                "Request transmit errors to brokers.",
            ),
            broker_rtt_seconds: prometheus::GaugeVec::new(
                Opts::new(
                    "inlet_kafka_broker_rtt_seconds",
                    "Average broker round-trip time.",
                ),
                &["broker"],
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
        };
        // Exported at zero from the start: the first recovery or failure after a start is then
        // an increase alerts see, and every series exists before a pass ran.
        for kind in ["push", "pull_request"] {
            router.reconcile.recovered.with_label_values(&[kind]);
        }
        for outcome in ["complete", "incomplete", "skipped"] {
            router.reconcile.passes.with_label_values(&[outcome]);
        }
        for reason in ["status_5xx", "timeout", "transport", "rate_limited"] {
            router.reconcile.errors.with_label_values(&[reason]);
        }
        let bitbucket = BitbucketMetrics::new();
        let group = GroupMetrics::new();
        for collector in [
            Box::new(group.rebalances.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(group.assigned_partitions.clone()),
            Box::new(group.last_rebalance.clone()),
            Box::new(kafka.producer_queue_messages.clone()),
            Box::new(kafka.transmit_errors.clone()),
            Box::new(kafka.broker_rtt_seconds.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(consumer_stalled.clone()),
            Box::new(router.events.clone()),
            Box::new(router.triggers.clone()),
            Box::new(router.processing_seconds.clone()),
            Box::new(router.dead_letters.clone()),
            Box::new(router.reconcile.passes.clone()),
            Box::new(router.reconcile.pass_seconds.clone()),
            Box::new(router.reconcile.recovered.clone()),
            Box::new(router.reconcile.errors.clone()),
            Box::new(router.reconcile.repositories.clone()),
            Box::new(router.reconcile.heads.clone()),
            Box::new(workers.decisions.clone()),
            Box::new(workers.duplicate_runs.clone()),
            Box::new(workers.end_to_end_seconds.clone()),
            Box::new(workers.dead_letters.clone()),
            Box::new(reporter.statuses.clone()),
            Box::new(reporter.retries.clone()),
            Box::new(reporter.dead_letters.clone()),
            Box::new(control.applied_offset.clone()),
            Box::new(control.end_offset.clone()),
            Box::new(control.commands.clone()),
            Box::new(control.entities.clone()),
            Box::new(control.snapshot_writes.clone()),
            Box::new(control.snapshot_write_seconds.clone()),
            Box::new(control.snapshot_bytes.clone()),
            Box::new(control.snapshot_offset.clone()),
            Box::new(control.snapshot_loads.clone()),
            Box::new(control.catch_up_seconds.clone()),
            Box::new(bitbucket.calls.clone()),
            Box::new(bitbucket.call_seconds.clone()),
            Box::new(bitbucket.retries.clone()),
            Box::new(bitbucket.rate_limited_seconds.clone()),
        ] {
            registry
                .register(collector)
                .unwrap_or_else(|err| unreachable!("each metric is registered once: {err}"));
        }
        Arc::new(Metrics {
            registry,
            ingest,
            router,
            workers,
            reporter,
            control,
            consumer_lag,
            consumer_stalled,
            progress: crate::progress::Progress::default(),
            group,
            kafka,
            bitbucket,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rendering shows registered metrics with their labels.
    #[test]
    fn render() {
        let metrics = Metrics::new();
        metrics
            .ingest
            .requests
            .with_label_values(&["bb", "repo:refs_changed", "accepted"])
            .inc();
        let text = metrics.render();
        assert!(text.contains(
            "inlet_ingest_requests_total{event=\"repo:refs_changed\",integration=\"bb\",outcome=\"accepted\"} 1"
        ), "{text}");
        assert!(text.contains("inlet_ingest_in_flight_requests 0"));
    }

    /// Every Bitbucket series is exported at zero before any call, and moves when recorded.
    #[test]
    fn bitbucket_series_exist_from_the_start() {
        let metrics = Metrics::new();
        let text = metrics.render();
        for endpoint in BitbucketEndpoint::ALL {
            let endpoint = endpoint.as_str();
            for outcome in BitbucketOutcome::ALL {
                let outcome = outcome.as_str();
                let series = format!(
                    "inlet_bitbucket_calls_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}} 0"
                );
                assert!(text.contains(&series), "{series}\n{text}");
            }
            for name in [
                "inlet_bitbucket_retries_total",
                "inlet_bitbucket_rate_limited_seconds_total",
                "inlet_bitbucket_call_duration_seconds_count",
            ] {
                let series = format!("{name}{{endpoint=\"{endpoint}\"}} 0");
                assert!(text.contains(&series), "{series}\n{text}");
            }
        }
        let bitbucket = &metrics.bitbucket;
        bitbucket.call(
            BitbucketEndpoint::CompareChanges,
            BitbucketOutcome::RateLimited,
            1.5,
        );
        bitbucket.retry(BitbucketEndpoint::CompareChanges);
        bitbucket.rate_limited(BitbucketEndpoint::CompareChanges, 1.25);
        let text = metrics.render();
        for series in [
            "inlet_bitbucket_calls_total{endpoint=\"compare_changes\",outcome=\"rate_limited\"} 1",
            "inlet_bitbucket_retries_total{endpoint=\"compare_changes\"} 1",
            "inlet_bitbucket_rate_limited_seconds_total{endpoint=\"compare_changes\"} 1.25",
            "inlet_bitbucket_call_duration_seconds_count{endpoint=\"compare_changes\"} 1",
        ] {
            assert!(text.contains(series), "{series}\n{text}");
        }
    }
}
