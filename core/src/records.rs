//! Wire records on `inlet.triggers` and `inlet.runs`, the webhook record headers, and the
//! deterministic ids that let a replayed input yield the same outputs.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version tag of [`StackTrigger`].
pub const TRIGGER_SCHEMA: &str = "inlet.trigger/v1";
/// Version tag of [`RunDecision`].
pub const RUN_SCHEMA: &str = "inlet.run/v1";
/// Version tag of [`DeliveryEvent`].
pub const DELIVERY_SCHEMA: &str = "inlet.delivery/v1";
/// `schema` of [`RunUpdate`].
pub const RUN_UPDATE_SCHEMA: &str = "inlet.run-update/v1";
/// `schema` of [`HeadRecord`].
pub const HEAD_SCHEMA: &str = "inlet.head/v1";

/// Header names of records on `inlet.webhooks` (the value is the raw request body).
pub mod headers {
    /// Bitbucket's `X-Request-Id`.
    pub const DELIVERY_ID: &str = "inlet-delivery-id";
    /// Bitbucket's `X-Event-Key`.
    pub const EVENT_KEY: &str = "inlet-event-key";
    /// Incarnation id of the integration that verified the request.
    pub const INTEGRATION_ID: &str = "inlet-integration-id";
    /// Name of that integration.
    pub const INTEGRATION_NAME: &str = "inlet-integration-name";
    /// When ingest received the request (RFC 3339, UTC, milliseconds).
    pub const RECEIVED_AT: &str = "inlet-received-at";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// The control-log offset ingest had applied when it accepted the request. A later stage waits
    /// until its own fold reached it, so a stack created before the push is always seen.
    pub const CONTROL_OFFSET: &str = "inlet-control-offset";
    /// Present (`true`) on a webhook re-published by redelivery or replay: the router's duplicate
    /// filter lets it through (run deduplication still applies).
    pub const REDELIVERY: &str = "inlet-redelivery";
    /// Present on a delivery the reconciler synthesized (DESIGN §5.2): what a webhook Bitbucket
    /// never delivered would have brought. Its value is the reconcile pass's id. Ingest never
    /// writes it, so no HTTP request can claim it.
    pub const RECOVERED: &str = "inlet-recovered";
    /// On `inlet.dlq`: the stage that gave up on the record.
    pub const ERROR_STAGE: &str = "inlet-error-stage";
    /// On `inlet.dlq`: why.
    pub const ERROR: &str = "inlet-error";
    /// On `inlet.dlq`: where the record came from, `topic/partition/offset`.
    pub const ERROR_SOURCE: &str = "inlet-error-source";
}

/// Whether a run applies changes (tracked) or only plans them (proposed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunType {
    /// A push to the stack's tracked branch.
    Tracked,
    /// Any other change: a preview.
    Proposed,
}

impl RunType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunType::Tracked => "tracked",
            RunType::Proposed => "proposed",
        }
    }
}

/// What caused a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// `repo:refs_changed`.
    Push,
    /// A pull-request event.
    PullRequest,
    /// A `/inlet preview` comment.
    Comment,
    /// `POST /stacks/{id}/runs`.
    Manual,
}

impl TriggerKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Push => "push",
            TriggerKind::PullRequest => "pull_request",
            TriggerKind::Comment => "comment",
            TriggerKind::Manual => "manual",
        }
    }
}

/// The commit a run is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Commit {
    /// Full hash.
    pub sha: String,
    /// The branch the commit is on (short name).
    pub branch: String,
    /// `PROJECT/repo`.
    pub repository: String,
}

/// Where a trigger came from, as carried to the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TriggerSource {
    /// push, pull_request, comment or manual.
    pub kind: TriggerKind,
    /// The webhook delivery (Bitbucket `X-Request-Id`), or the manual trigger's id.
    pub delivery_id: String,
    /// Bitbucket event key (`manual` for manual runs).
    pub event_key: String,
    /// Pull request id for PR and comment triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request_id: Option<u64>,
    /// Who caused it (Bitbucket user name or API key id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// True when inlet found the change by reconciliation (DESIGN §5.2) rather than from a
    /// delivered webhook; absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
}

/// A request to consider a run of one stack, emitted by the router (or the admin API for manual
/// runs) to `inlet.triggers`, keyed by stack id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StackTrigger {
    /// Always [`TRIGGER_SCHEMA`].
    pub schema: String,
    /// Deterministic id: the same input yields the same id.
    pub trigger_id: String,
    /// The stack to consider.
    pub stack_id: String,
    /// The integration name the webhook arrived under.
    pub integration: String,
    /// Tracked or proposed.
    pub run_type: RunType,
    /// The commit to run.
    pub commit: Commit,
    /// What caused it.
    pub trigger: TriggerSource,
    /// When ingest received the webhook (RFC 3339).
    pub received_at: String,
    /// Control-log offset the producer of this trigger had applied (see
    /// [`headers::CONTROL_OFFSET`]).
    pub control_offset: i64,
}

/// What every trigger of one webhook delivery carries from it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Bitbucket's `X-Request-Id`.
    pub delivery_id: String,
    /// Bitbucket's `X-Event-Key`.
    pub event_key: String,
    /// The integration name the webhook arrived under.
    pub integration: String,
    /// When ingest received it.
    pub received_at: String,
    /// The control offset ingest had applied.
    pub control_offset: i64,
}

/// Who and what caused a trigger, besides its delivery.
#[derive(Debug, Clone)]
pub struct Cause {
    /// push, pull_request, comment or manual.
    pub kind: TriggerKind,
    /// Pull request id for PR and comment triggers.
    pub pull_request_id: Option<u64>,
    /// Bitbucket user name or API key id.
    pub actor: Option<String>,
}

impl StackTrigger {
    /// The trigger of `stack_id` by `delivery`. Its id is derived from the delivery id, the stack
    /// and `id_parts` (what else makes it unique: the ref, the commit, a comment id), so a replay
    /// of the delivery yields the same id.
    pub fn new(
        delivery: &Delivery,
        stack_id: &str,
        run_type: RunType,
        commit: Commit,
        cause: Cause,
        id_parts: &[&str],
    ) -> StackTrigger {
        let mut parts = vec![delivery.delivery_id.as_str(), stack_id];
        parts.extend_from_slice(id_parts);
        StackTrigger {
            schema: TRIGGER_SCHEMA.to_owned(),
            trigger_id: derive_id("trg", &parts),
            stack_id: stack_id.to_owned(),
            integration: delivery.integration.clone(),
            run_type,
            commit,
            trigger: TriggerSource {
                kind: cause.kind,
                delivery_id: delivery.delivery_id.clone(),
                event_key: delivery.event_key.clone(),
                pull_request_id: cause.pull_request_id,
                actor: cause.actor,
                recovered: false,
            },
            received_at: delivery.received_at.clone(),
            control_offset: delivery.control_offset,
        }
    }

    /// A manual run (`POST /stacks/{id}/runs`): tracked, with a fresh id that is also its
    /// delivery id, so two requests are two runs.
    pub fn manual(
        stack_id: &str,
        integration: &str,
        commit: Commit,
        actor: &str,
        control_offset: i64,
    ) -> StackTrigger {
        let trigger_id = derive_id("trg", &[crate::secret::Secret::generate(16).expose()]);
        let delivery = Delivery {
            delivery_id: trigger_id.clone(),
            event_key: "manual".to_owned(),
            integration: integration.to_owned(),
            received_at: crate::clock::now_rfc3339(),
            control_offset,
        };
        let cause = Cause {
            kind: TriggerKind::Manual,
            pull_request_id: None,
            actor: Some(actor.to_owned()),
        };
        StackTrigger {
            trigger_id,
            ..StackTrigger::new(&delivery, stack_id, RunType::Tracked, commit, cause, &[])
        }
    }

    /// Its record on `inlet.triggers`: keyed by stack id, with the delivery id and trace context.
    pub fn output(&self, topic: &str, traceparent: Option<&str>) -> crate::output::Output {
        stack_record(topic, &self.stack_id, &self.trigger, self, traceparent)
    }
}

/// Whether the run goes ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Run schedulers should start the run.
    Requested,
    /// The run must not start; `blocked_reason` says why.
    Blocked,
}

/// Why a run was blocked: a fixed set, so it is also a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BlockedCode {
    /// The stack's integration was deleted.
    IntegrationDetached,
    /// The stack is disabled.
    StackDisabled,
}

impl BlockedCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockedCode::IntegrationDetached => "integration_detached",
            BlockedCode::StackDisabled => "stack_disabled",
        }
    }
}

/// Why a run was blocked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BlockedReason {
    /// Stable code, e.g. `integration_detached`.
    pub code: BlockedCode,
    /// Human sentence.
    pub message: String,
}

/// Where a run is, as its run scheduler reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for a runner.
    Queued,
    /// Running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with a failure.
    Failed,
    /// Stopped before it finished.
    Canceled,
}

impl RunState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Canceled => "canceled",
        }
    }
}

/// A last-seen head on `inlet.heads` (compacted; keyed by [`HeadRecord::key`]): the commit the
/// router last saw on a branch that stacks track, or on an open pull request into such a branch.
/// Reconciliation (DESIGN §5.2) compares them with Bitbucket's heads. A head no stack needs any
/// more (branch untracked, pull request closed) is removed with a tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HeadRecord {
    /// Always [`HEAD_SCHEMA`].
    pub schema: String,
    /// The integration's incarnation: a re-created integration starts with no heads.
    pub integration_id: String,
    /// The integration's name.
    pub integration: String,
    /// `PROJECT/repo`, as Bitbucket spells it.
    pub repository: String,
    /// The branch (short name); for a pull request, its target.
    pub branch: String,
    /// For a pull request into `branch`: which one, and where it comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestHead>,
    /// The commit last seen: the branch's head, or the pull request's latest source commit.
    pub commit: String,
    /// On a branch head: a reconcile pass has listed the branch's open pull requests, so a later
    /// pass reads a pull request it does not know as one opened while webhooks failed (before
    /// that, every open pull request is only recorded).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconciled: bool,
    /// When the head was last seen (RFC 3339).
    pub at: String,
}

/// The pull request of a [`HeadRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PullRequestHead {
    /// Its id in the target repository.
    pub id: u64,
    /// Its source branch (short name).
    pub from_branch: String,
    /// Its source repository (`PROJECT/repo`; another one for a fork).
    pub from_repository: String,
}

impl HeadRecord {
    /// The record's key: the integration incarnation, the repository in lower case, and the
    /// branch or pull request. Keys of one repository share the prefix [`HeadRecord::prefix`].
    pub fn key(&self) -> String {
        let prefix = HeadRecord::prefix(&self.integration_id, &self.repository);
        match &self.pull_request {
            Some(pr) => format!("{prefix}pull-request/{}", pr.id),
            None => format!("{prefix}branch/{}", self.branch),
        }
    }

    /// The key prefix of every head of `repository` under integration incarnation
    /// `integration_id`.
    pub fn prefix(integration_id: &str, repository: &str) -> String {
        format!("{integration_id}/{}/", repository.to_lowercase())
    }
}

/// What a run scheduler writes back on `inlet.run-updates`, keyed by stack id (DESIGN §4.3): the
/// reporter shows it on the run's commit in Bitbucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunUpdate {
    /// Always [`RUN_UPDATE_SCHEMA`].
    pub schema: String,
    /// The `run_id` of the `RunDecision`.
    pub run_id: String,
    /// Its stack (the record's key).
    pub stack_id: String,
    /// Where the run is.
    pub state: RunState,
    /// The run's page in the scheduler (else `reporter.status_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// One line for the build status's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// When the scheduler observed it (RFC 3339).
    pub at: String,
}

impl RunUpdate {
    /// Its record on `inlet.run-updates`, keyed by stack id.
    pub fn output(&self, topic: &str) -> crate::output::Output {
        crate::output::Output::json(topic, &self.stack_id, self)
    }
}

/// The downstream contract on `inlet.runs` (DESIGN §4.3), keyed by stack id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunDecision {
    /// Always [`RUN_SCHEMA`].
    pub schema: String,
    /// Deterministic id; downstream deduplicates on it.
    pub run_id: String,
    /// The stack.
    pub stack_id: String,
    /// The stack's space.
    pub space_id: String,
    /// requested or blocked.
    pub status: RunStatus,
    /// tracked or proposed.
    pub run_type: RunType,
    /// The commit to run.
    pub commit: Commit,
    /// What caused it.
    pub trigger: TriggerSource,
    /// Present when blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_reason: Option<BlockedReason>,
    /// When the worker decided (RFC 3339).
    pub decided_at: String,
}

impl RunDecision {
    /// Its record on `inlet.runs` (the downstream contract): keyed by stack id, with the delivery
    /// id and trace context.
    pub fn output(&self, topic: &str, traceparent: Option<&str>) -> crate::output::Output {
        stack_record(topic, &self.stack_id, &self.trigger, self, traceparent)
    }
}

/// A per-stack record (trigger or decision): keyed by stack id so a stack's records keep their
/// order, with the delivery id and the trace context as headers.
fn stack_record<T: Serialize>(
    topic: &str,
    stack_id: &str,
    source: &TriggerSource,
    value: &T,
    traceparent: Option<&str>,
) -> crate::output::Output {
    crate::output::Output::json(topic, stack_id, value)
        .header(headers::DELIVERY_ID, &source.delivery_id)
        .trace(traceparent)
}

/// The stage that wrote a [`DeliveryEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The webhook edge and admin API.
    Ingest,
    /// Webhooks to triggers.
    Router,
    /// Triggers to decisions.
    Workers,
    /// Decisions and run updates to Bitbucket build statuses.
    Reporter,
    /// The router's reconciliation: deliveries Bitbucket never made, found and synthesized.
    Reconciler,
}

impl Stage {
    /// The stage's name, for labels and dead-letter headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Router => "router",
            Stage::Workers => "workers",
            Stage::Reporter => "reporter",
            Stage::Reconciler => "reconciler",
        }
    }
}

/// What a stage did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The router emitted triggers for it (`stacks` says for which).
    Routed,
    /// The router emitted nothing for it; `reasons` say why.
    Ignored,
    /// The router had already seen this `X-Request-Id`.
    Duplicate,
    /// A worker decided a run (`run_id`, `status`, `blocked_reason`).
    Decided,
    /// A worker had already decided this `run_id`; nothing new was emitted.
    DuplicateRun,
    /// A worker emitted no decision (`reasons`: `stack_deleted`).
    NoDecision,
    /// A stage could not process the record; it is on `inlet.dlq`.
    DeadLettered,
    /// An admin re-published the webhook.
    Redelivered,
    /// The reporter posted a build status (`run_id`; `reasons`: the state posted).
    Reported,
    /// The reporter posted nothing for a decision or run update; `reasons` say why
    /// (`unknown_run`, `stack_deleted`, `integration_detached`, `already_posted`, `superseded`,
    /// `bitbucket_refused: …`).
    NotReported,
    /// The reconciler found a change no webhook brought and synthesized its delivery (`reasons`:
    /// what was missing, `missing_push: {ref} {from}..{to}` or
    /// `missing_pull_request_update: pull-request/{id} {from}..{to}`, and `reconcile: {id}`).
    Recovered,
    /// A reconcile pass an operator asked for ran on one router (`delivery_id` is the
    /// `reconcile_id`; each router that owns repositories writes one). `reasons`:
    /// `repositories: N`, `recovered: N`, `failed: {reason}: N` per reason, and
    /// `left_for_next_pass: N` when it ran out of time. Repository names stay in the router's
    /// log: the integration may be shared by teams that must not see each other's.
    Reconciled,
}

/// One step in the story of a delivery, on `inlet.deliveries` keyed by delivery id: what each stage
/// did with it and why. The admin API serves these to answer "why didn't my stack run?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeliveryEvent {
    /// Always [`DELIVERY_SCHEMA`].
    pub schema: String,
    /// Bitbucket's `X-Request-Id` (or a manual trigger's id).
    pub delivery_id: String,
    /// The integration name the webhook arrived under.
    pub integration: String,
    /// Who wrote this event.
    pub stage: Stage,
    /// What happened.
    pub outcome: DeliveryOutcome,
    /// The Bitbucket event key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_key: Option<String>,
    /// Stable reason codes (e.g. `no_stack_on_repository`, `tag_push`, `stack_disabled`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Stacks concerned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stacks: Vec<String>,
    /// The run decided (workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// requested or blocked (workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    /// tracked or proposed (workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_type: Option<RunType>,
    /// Where the webhook record is (`partition`, `offset` on `inlet.webhooks`), for redelivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<RecordPosition>,
    /// When ingest received the webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<String>,
    /// The incarnation (`Integration.id`) of the integration the delivery arrived under, so a
    /// re-created integration of the same name does not list a predecessor's deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration_id: Option<String>,
    /// For decisions (workers): the incarnation of the stack decided for, so a stack re-created
    /// with the same id does not show a predecessor's runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_incarnation: Option<String>,
    /// When this event was written.
    pub at: String,
}

/// A record's place in a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecordPosition {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl DeliveryEvent {
    /// An event with only the required fields set.
    pub fn new(
        delivery_id: &str,
        integration: &str,
        stage: Stage,
        outcome: DeliveryOutcome,
    ) -> DeliveryEvent {
        DeliveryEvent {
            schema: DELIVERY_SCHEMA.to_owned(),
            delivery_id: delivery_id.to_owned(),
            integration: integration.to_owned(),
            stage,
            outcome,
            event_key: None,
            reasons: Vec::new(),
            stacks: Vec::new(),
            run_id: None,
            status: None,
            run_type: None,
            webhook: None,
            received_at: None,
            integration_id: None,
            stack_incarnation: None,
            at: crate::clock::now_rfc3339(),
        }
    }
}

/// A W3C `traceparent` for a new trace (version 00, sampled). Trace ids need uniqueness, not
/// secrecy, so they come from the thread-local generator rather than a system call per request.
pub fn new_traceparent() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let (trace, span): (u128, u64) = (rng.r#gen(), rng.r#gen());
    format!("00-{:032x}-{:016x}-01", trace.max(1), span.max(1))
}

/// The trace id of a well-formed W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (Some(version), Some(trace), Some(span), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(version, 2)
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace != "00000000000000000000000000000000")
        .then_some(trace)
}

/// A short, stable, hex id from the given parts (SHA-256, first 16 bytes).
pub fn derive_id(prefix: &str, parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prefix.as_bytes());
    for part in parts {
        // Length-prefix each part so ("ab","c") and ("a","bc") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    format!("{prefix}_{}", hex::encode(&digest[..16]))
}

/// The run id of a VCS-triggered run: one per (stack, commit, run type), so a push and a
/// `pr:from_ref_updated` for the same commit yield one proposed run.
pub fn vcs_run_id(stack_id: &str, sha: &str, run_type: RunType) -> String {
    derive_id("run", &[stack_id, sha, run_type.as_str()])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run ids depend on exactly (stack, commit, run type).
    #[test]
    fn run_ids_are_deterministic_and_distinct() {
        let a = vcs_run_id("s1", "abc", RunType::Tracked);
        assert_eq!(a, vcs_run_id("s1", "abc", RunType::Tracked));
        assert_ne!(a, vcs_run_id("s1", "abc", RunType::Proposed));
        assert_ne!(a, vcs_run_id("s2", "abc", RunType::Tracked));
        assert_ne!(a, vcs_run_id("s1", "abd", RunType::Tracked));
        assert!(a.starts_with("run_") && a.len() == 4 + 32);
        assert_ne!(derive_id("x", &["ab", "c"]), derive_id("x", &["a", "bc"]));
    }

    /// Trace contexts are generated well-formed and parsed strictly.
    #[test]
    fn traceparents() {
        let generated = new_traceparent();
        assert_eq!(trace_id(&generated).map(str::len), Some(32));
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "00-xyz-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert_eq!(trace_id(bad), None, "{bad}");
        }
    }

    /// A decision serialises to the DESIGN §4.3 shape, optional fields omitted when absent.
    #[test]
    fn run_decision_shape() {
        let decision = RunDecision {
            schema: RUN_SCHEMA.to_owned(),
            run_id: "run_1".to_owned(),
            stack_id: "s1".to_owned(),
            space_id: "root".to_owned(),
            status: RunStatus::Requested,
            run_type: RunType::Tracked,
            commit: Commit {
                sha: "abc".to_owned(),
                branch: "main".to_owned(),
                repository: "P/r".to_owned(),
            },
            trigger: TriggerSource {
                kind: TriggerKind::Push,
                delivery_id: "d1".to_owned(),
                event_key: "repo:refs_changed".to_owned(),
                pull_request_id: None,
                actor: Some("alice".to_owned()),
                recovered: false,
            },
            blocked_reason: None,
            decided_at: "2026-01-01T00:00:00Z".to_owned(),
        };
        let json = serde_json::to_value(&decision).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "schema": "inlet.run/v1", "run_id": "run_1", "stack_id": "s1", "space_id": "root",
                "status": "requested", "run_type": "tracked",
                "commit": {"sha": "abc", "branch": "main", "repository": "P/r"},
                "trigger": {"kind": "push", "delivery_id": "d1", "event_key": "repo:refs_changed",
                            "actor": "alice"},
                "decided_at": "2026-01-01T00:00:00Z"
            })
        );
    }
}

/// The JSON Schemas of the records other systems read or write, shipped in `schemas/`: the file
/// name and the schema. `cargo nextest run -p inlet-core schemas` checks the files are current;
/// `INLET_WRITE_SCHEMAS=1` rewrites them.
pub fn json_schemas() -> Vec<(&'static str, serde_json::Value)> {
    fn of<T: schemars::JsonSchema>(id: &str) -> serde_json::Value {
        let mut schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
        if let Some(map) = schema.as_object_mut() {
            map.insert("$id".to_owned(), serde_json::Value::from(id));
        }
        schema
    }
    vec![
        ("run.schema.json", of::<RunDecision>(RUN_SCHEMA)),
        ("run-update.schema.json", of::<RunUpdate>(RUN_UPDATE_SCHEMA)),
        ("delivery.schema.json", of::<DeliveryEvent>(DELIVERY_SCHEMA)),
        ("trigger.schema.json", of::<StackTrigger>(TRIGGER_SCHEMA)),
        ("head.schema.json", of::<HeadRecord>(HEAD_SCHEMA)),
    ]
}

#[cfg(test)]
mod schema_files {
    /// `schemas/*.schema.json` are what the types say (rewritten with `INLET_WRITE_SCHEMAS=1`).
    #[test]
    fn schemas_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
        for (name, schema) in super::json_schemas() {
            let text = serde_json::to_string_pretty(&schema).expect("json") + "\n";
            let path = dir.join(name);
            if std::env::var_os("INLET_WRITE_SCHEMAS").is_some() {
                std::fs::create_dir_all(&dir).expect("schemas dir");
                std::fs::write(&path, &text).expect("write");
            }
            let shipped = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                shipped == text,
                "{} is not current: run INLET_WRITE_SCHEMAS=1 cargo test -p inlet-core schemas",
                path.display()
            );
        }
    }
}
