//! inlet-reporter: run decisions and run updates in, Bitbucket build statuses out.
//!
//! # Layout
//!
//! `run` consumes `inlet.runs` and `inlet.run-updates` (both keyed by stack id, with the same
//! partition count, so one process holds a stack's decisions and updates) through the shared
//! at-least-once loop (`inlet_core::pipeline`); for each record:
//! 1. the `RunDecision` is remembered in [`runs::Runs`] (a `RunUpdate` names only its run id) and
//!    becomes the step `requested` or `blocked`; a `RunUpdate` becomes its state's step, or
//!    `unknown_run` in the delivery log when its decision is not known;
//! 2. `Reporter::report`, one step of a run at a time: a step already posted, or one ranking below
//!    what the run already shows (a `running` consumed after `succeeded`), is not posted
//!    (`already_posted`, `superseded`); a stack deleted or detached, or an integration without
//!    usable credentials, is `not_postable`; records read before this process started may have been
//!    posted by its predecessor, so for them the status is read back first (by key, the run id
//!    being its build number) and not posted again when Bitbucket already shows it;
//! 3. the post (`inlet_bitbucket::builds`) is retried with backoff while Bitbucket is unavailable
//!    (5xx, 429, timeouts, connection errors): the record stays in flight and its offset
//!    uncommitted, so statuses wait in Kafka, never in memory, and decisions are never held up
//!    (the reporter is its own consumer group). A 4xx is recorded (`bitbucket_refused`) and the
//!    partition moves on;
//! 4. a `DeliveryEvent` (stage `reporter`) says what was posted or why not.
//!
//! An unreadable record goes to `inlet.dlq`. Delivery guarantee: every step is posted at least
//! once; none twice for the same (run, step), across restarts included, as far as Bitbucket's
//! read-back tells.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod runs;
pub mod status;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inlet_bitbucket::builds::Posted;
use inlet_bitbucket::client::{CallError, Client, RepositoryRef, Server};
use inlet_control::StageDeps;
use inlet_control::control_log::ControlLog;
use inlet_control::crypto::SecretsKey;
use inlet_control::domain::IntegrationStatus;
use inlet_core::CancellationToken;
use inlet_core::config::ReporterConfig;
use inlet_core::kafka::Kafka;
use inlet_core::metrics::ReporterMetrics;
use inlet_core::pipeline::{self, Handler, Output, Poison};
use inlet_core::records::{
    DeliveryEvent, DeliveryOutcome, RUN_UPDATE_SCHEMA, RunDecision, RunStatus, RunUpdate, Stage,
};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;

use crate::runs::{RunInfo, Runs};
use crate::status::{Shown, Step};

/// First wait before re-posting while Bitbucket is unavailable; doubled up to [`RETRY_MAX`].
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// What the stage runs with, built by the caller.
pub struct Deps {
    /// The consume loop's clients (its group member reads `inlet.runs` and `inlet.run-updates`)
    /// and this process's control fold.
    pub stage: StageDeps,
    /// The Bitbucket REST client.
    pub client: Client,
    /// Opens integrations' access tokens; without it nothing can be posted.
    pub secrets_key: Option<SecretsKey>,
    /// The cluster, to read back recent decisions and the ends of the input partitions at
    /// startup; `None` starts knowing no run.
    pub kafka: Option<Kafka>,
}

/// Reports until `shutdown`, then drains in-flight records and commits.
pub async fn run(
    config: &ReporterConfig,
    deps: Deps,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    if deps.secrets_key.is_none() {
        tracing::warn!(
            "the reporter has no secrets key: it cannot open integrations' access tokens, so no \
             build status can be posted (set INLET_SECRETS_KEY)"
        );
    }
    let topics = deps.stage.pipeline.topics.clone();
    let runs = Arc::new(Runs::default());
    let mut started_at: HashMap<String, HashMap<i32, i64>> = HashMap::new();
    if let Some(kafka) = &deps.kafka {
        match runs.rebuild(kafka, &topics.runs()).await {
            Ok((read, complete)) => tracing::info!(read, complete, "recent decisions read back"),
            Err(err) => tracing::warn!(error = %err, "could not read back recent decisions"),
        }
        for topic in [topics.runs(), topics.run_updates()] {
            match ends(kafka, &topic).await {
                Ok(partitions) => {
                    started_at.insert(topic.clone(), partitions.into_iter().collect());
                }
                Err(err) => tracing::warn!(error = %err, %topic, "could not read partition ends"),
            }
        }
    }
    let handler = Reporter {
        metrics: deps.stage.pipeline.metrics.reporter.clone(),
        control: deps.stage.control,
        client: deps.client,
        secrets_key: deps.secrets_key,
        runs,
        runs_topic: topics.runs(),
        updates_topic: topics.run_updates(),
        deliveries_topic: topics.deliveries(),
        status_url: config.status_url.clone(),
        started_at,
    };
    pipeline::run_stage(deps.stage.pipeline, handler, &config.stage(), shutdown).await
}

/// The end offset of each partition of `topic` now.
async fn ends(
    kafka: &Kafka,
    topic: &str,
) -> Result<Vec<(i32, i64)>, inlet_core::kafka::SetupError> {
    let partitions = kafka.partition_count(topic).await?;
    let reader = kafka.reader().await?;
    let topic = topic.to_owned();
    Ok(tokio::task::spawn_blocking(move || {
        (0..partitions as i32)
            .map(|p| {
                reader
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .map(|(_, high)| (p, high))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await??)
}

struct Reporter {
    metrics: ReporterMetrics,
    control: ControlLog,
    client: Client,
    secrets_key: Option<SecretsKey>,
    runs: Arc<Runs>,
    runs_topic: String,
    updates_topic: String,
    deliveries_topic: String,
    status_url: Option<String>,
    /// topic → partition → its end when this process started: records below it may have been
    /// reported by a predecessor.
    started_at: HashMap<String, HashMap<i32, i64>>,
}

/// One step to show.
struct Request {
    run: RunInfo,
    /// The lock on what was posted for the run.
    progress: Arc<tokio::sync::Mutex<runs::Progress>>,
    step: Step,
    url: Option<String>,
    description: String,
    /// Read before this process started.
    uncertain: bool,
}

/// What became of a step: the outcome label and the delivery log's reason.
struct Outcome {
    label: &'static str,
    delivered: DeliveryOutcome,
    reason: String,
}

impl Outcome {
    fn not_reported(label: &'static str, reason: impl Into<String>) -> Outcome {
        Outcome {
            label,
            delivered: DeliveryOutcome::NotReported,
            reason: reason.into(),
        }
    }
}

impl Handler for Reporter {
    fn stage(&self) -> Stage {
        Stage::Reporter
    }

    async fn handle(&self, message: &OwnedMessage) -> Result<Vec<Output>, Poison> {
        let started = Instant::now();
        let uncertain = self
            .started_at
            .get(message.topic())
            .and_then(|ends| ends.get(&message.partition()))
            .is_some_and(|end| message.offset() < *end);
        let request = match self.request(message, uncertain)? {
            Ok(request) => request,
            Err(event) => {
                self.metrics
                    .statuses
                    .with_label_values(&["unknown_run"])
                    .inc();
                return Ok(vec![Output::delivery_event(&self.deliveries_topic, &event)]);
            }
        };
        let (integration, outcome) = self.report(&request).await;
        self.metrics
            .statuses
            .with_label_values(&[outcome.label])
            .inc();
        tracing::info!(
            run_id = %request.run.run_id,
            stack_id = %request.run.stack_id,
            step = request.step.as_str(),
            outcome = outcome.label,
            reason = %outcome.reason,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "build status"
        );
        let mut event = DeliveryEvent::new(
            &request.run.delivery_id,
            &integration,
            Stage::Reporter,
            outcome.delivered,
        );
        event.run_id = Some(request.run.run_id.clone());
        event.run_type = Some(request.run.run_type);
        event.stacks = vec![request.run.stack_id.clone()];
        event.reasons = vec![outcome.reason];
        Ok(vec![Output::delivery_event(&self.deliveries_topic, &event)])
    }
}

impl Reporter {
    /// The step a record asks to show; `Err(event)` for an update of an unknown run.
    #[allow(clippy::result_large_err)]
    fn request(
        &self,
        message: &OwnedMessage,
        uncertain: bool,
    ) -> Result<Result<Request, DeliveryEvent>, Poison> {
        let payload = message.payload().unwrap_or_default();
        let poison = |what: &str, err: String| Poison {
            reason: format!("unreadable {what}: {err}"),
            outputs: Vec::new(),
        };
        if message.topic() == self.runs_topic {
            let decision: RunDecision = serde_json::from_slice(payload)
                .map_err(|e| poison("run decision", e.to_string()))?;
            let run = RunInfo::from(&decision);
            let progress = self.runs.remember(run.clone());
            let (step, description) = match (&decision.status, &decision.blocked_reason) {
                (RunStatus::Requested, _) => (Step::Requested, "run requested".to_owned()),
                (RunStatus::Blocked, Some(reason)) => (Step::Blocked, reason.message.clone()),
                (RunStatus::Blocked, None) => (Step::Blocked, "run blocked".to_owned()),
            };
            return Ok(Ok(Request {
                run,
                progress,
                step,
                url: None,
                description,
                uncertain,
            }));
        }
        if message.topic() != self.updates_topic {
            return Err(poison("record", format!("from topic {}", message.topic())));
        }
        let update: RunUpdate =
            serde_json::from_slice(payload).map_err(|e| poison("run update", e.to_string()))?;
        if update.schema != RUN_UPDATE_SCHEMA {
            return Err(poison(
                "run update",
                format!("schema `{}`, not `{RUN_UPDATE_SCHEMA}`", update.schema),
            ));
        }
        let Some((run, progress)) = self.runs.get(&update.run_id) else {
            let mut event = DeliveryEvent::new(
                &format!("run:{}", update.run_id),
                "",
                Stage::Reporter,
                DeliveryOutcome::NotReported,
            );
            event.run_id = Some(update.run_id.clone());
            event.stacks = vec![update.stack_id.clone()];
            event.reasons = vec![format!(
                "unknown_run: no decision for run {} is known (older than the reporter remembers, \
                 or never decided)",
                update.run_id
            )];
            return Ok(Err(event));
        };
        let step = Step::Update(update.state);
        Ok(Ok(Request {
            run,
            progress,
            step,
            url: update.url,
            description: update
                .summary
                .unwrap_or_else(|| format!("run {}", step.as_str())),
            uncertain,
        }))
    }

    /// Posts the step unless it was already shown or cannot be; the stack's integration name
    /// (for the delivery log) and what became of it.
    async fn report(&self, request: &Request) -> (String, Outcome) {
        // One step of a run at a time, so a run never goes backwards on the commit.
        let mut progress = request.progress.lock().await;
        let step = request.step;
        if progress.posted.contains(step.as_str()) {
            return (
                String::new(),
                Outcome::not_reported("already_posted", "already_posted"),
            );
        }
        if progress.rank.is_some_and(|rank| rank > step.rank()) {
            return (
                String::new(),
                Outcome::not_reported("superseded", "superseded"),
            );
        }
        let target = match self.target(&request.run) {
            Ok(target) => target,
            Err((integration, reason)) => {
                return (integration, Outcome::not_reported("not_postable", reason));
            }
        };
        let shown = Shown {
            stack_id: &request.run.stack_id,
            stack_name: &target.stack_name,
            run_type: request.run.run_type,
            run_id: &request.run.run_id,
            step,
            url: self.url(request, &target),
            description: request.description.clone(),
            git_ref: Some(format!("refs/heads/{}", request.run.branch)),
        };
        let status = shown.status();
        if request.uncertain
            && let Some(outcome) = self.already_shown(&target, request, &status).await
        {
            if outcome.label == "already_posted" {
                progress.posted.insert(step.as_str());
            }
            return (target.integration, outcome);
        }
        let outcome = match self.post(&target, &request.run, &status).await {
            Ok(posted) => {
                progress.posted.insert(step.as_str());
                progress.rank = Some(progress.rank.unwrap_or(0).max(step.rank()));
                let (label, resource) = match posted {
                    Posted::Repository => ("posted", ""),
                    Posted::Legacy => ("posted_legacy", " (legacy build-status resource)"),
                };
                Outcome {
                    label,
                    delivered: DeliveryOutcome::Reported,
                    reason: format!("{} → {}{resource}", step.as_str(), status.state.as_str()),
                }
            }
            Err(err) => Outcome::not_reported("refused", format!("bitbucket_refused: {err}")),
        };
        (target.integration, outcome)
    }

    /// For a record a predecessor may have reported: what Bitbucket shows for the key, when it
    /// is this run's and already this state (or a finished one, for an unfinished step).
    async fn already_shown(
        &self,
        target: &Target,
        request: &Request,
        status: &inlet_bitbucket::builds::BuildStatus,
    ) -> Option<Outcome> {
        let current = self
            .client
            .build_status(
                &target.server,
                &target.repository,
                &request.run.sha,
                &status.key,
            )
            .await
            .ok()??;
        if current.build_number.as_deref() != Some(request.run.run_id.as_str()) {
            return None;
        }
        let finished = matches!(
            current.state.as_str(),
            "SUCCESSFUL" | "FAILED" | "CANCELLED"
        );
        if current.state == status.state.as_str()
            && current.description.as_deref() == Some(status.description.as_str())
        {
            return Some(Outcome::not_reported("already_posted", "already_posted"));
        }
        if finished && request.step.rank() < 3 {
            return Some(Outcome::not_reported("superseded", "superseded"));
        }
        None
    }

    /// Posts, retrying while Bitbucket is unavailable; a refusal (4xx, not allowed) is final.
    async fn post(
        &self,
        target: &Target,
        run: &RunInfo,
        status: &inlet_bitbucket::builds::BuildStatus,
    ) -> Result<Posted, CallError> {
        let mut wait = RETRY_BASE;
        loop {
            match self
                .client
                .post_build_status(&target.server, &target.repository, &run.sha, status)
                .await
            {
                Ok(posted) => return Ok(posted),
                Err(err) if retriable(&err) => {
                    self.metrics.retries.inc();
                    tracing::warn!(
                        run_id = %run.run_id,
                        error = %err,
                        wait_s = wait.as_secs(),
                        "Bitbucket unavailable; the build status waits (in Kafka) and is retried"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_MAX);
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The link: the update's, else `reporter.status_url`, else the commit in Bitbucket.
    fn url(&self, request: &Request, target: &Target) -> String {
        if let Some(url) = &request.url {
            return url.clone();
        }
        if let Some(template) = &self.status_url {
            return template
                .replace("{run_id}", &request.run.run_id)
                .replace("{stack_id}", &request.run.stack_id);
        }
        format!(
            "{}/projects/{}/repos/{}/commits/{}",
            target.user_facing_url.trim_end_matches('/'),
            target.repository.project_key,
            target.repository.slug,
            request.run.sha
        )
    }

    /// Where to post for `run`'s stack, or (its integration, why not).
    fn target(&self, run: &RunInfo) -> Result<Target, (String, String)> {
        let registry = self.control.read();
        let stack = registry
            .stack(&run.stack_id)
            .ok_or_else(|| (String::new(), "stack_deleted".to_owned()))?;
        let name = stack.integration.to_string();
        let fail = |reason: String| (name.clone(), reason);
        if stack.integration_status == IntegrationStatus::Detached {
            return Err(fail("integration_detached".to_owned()));
        }
        let integration = registry
            .integration(&stack.integration)
            .ok_or_else(|| fail("integration_detached".to_owned()))?;
        if integration.access_token.is_empty() {
            return Err(fail(
                "no_credentials: the integration has no access token".to_owned(),
            ));
        }
        let key = self
            .secrets_key
            .as_ref()
            .ok_or_else(|| fail("no_credentials: this reporter has no secrets key".to_owned()))?;
        let token = key
            .open(
                &integration.access_token,
                &integration.access_token_context(),
            )
            .map_err(|err| {
                fail(format!(
                    "no_credentials: the access token cannot be opened: {err}"
                ))
            })?;
        let repository = RepositoryRef::from_full_name(&run.repository)
            .ok_or_else(|| fail(format!("not a repository: {}", run.repository)))?;
        Ok(Target {
            integration: name.clone(),
            stack_name: stack.name.clone(),
            server: Server {
                base_url: integration.api_host_url.clone(),
                token,
            },
            user_facing_url: integration.user_facing_host_url.clone(),
            repository,
        })
    }
}

/// Worth waiting for: Bitbucket may come back.
fn retriable(err: &CallError) -> bool {
    matches!(
        err.code(),
        "status_5xx" | "rate_limited" | "timeout" | "transport"
    )
}

struct Target {
    integration: String,
    stack_name: String,
    server: Server,
    user_facing_url: String,
    repository: RepositoryRef,
}
