//! Request and response bodies of the admin API. Their JSON Schemas (derived here) are what the
//! OpenAPI document publishes, so documentation and behaviour come from the same types.

use crate::domain::{
    ApiKey, Integration, IntegrationStatus, ManagedWebhook, PROVIDER, Role, Space, Stack, Text,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A role an API key can hold on a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    /// Read entities.
    Reader,
    /// Read, trigger runs.
    Writer,
    /// Everything in the space and its descendants.
    Admin,
}

impl From<RoleName> for Role {
    fn from(role: RoleName) -> Self {
        match role {
            RoleName::Reader => Role::Reader,
            RoleName::Writer => Role::Writer,
            RoleName::Admin => Role::Admin,
        }
    }
}

impl From<Role> for RoleName {
    fn from(role: Role) -> Self {
        match role {
            Role::Reader => RoleName::Reader,
            Role::Writer => RoleName::Writer,
            Role::Admin => RoleName::Admin,
        }
    }
}

/// `{space_id, role}`: the role applies to the space and its descendants.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The space.
    pub space_id: String,
    /// The role.
    pub role: RoleName,
}

/// `POST /spaces`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSpace {
    /// Id (generated from the name when omitted).
    pub id: Option<String>,
    /// Name.
    pub name: String,
    /// Parent space (default `root`).
    pub parent_id: Option<String>,
    /// See the parent's integrations (default false).
    pub inherit_entities: Option<bool>,
}

/// `PATCH /spaces/{id}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSpace {
    /// New name.
    pub name: Option<String>,
    /// Toggle inheritance.
    pub inherit_entities: Option<bool>,
}

/// A space.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SpaceView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Parent (null for root).
    pub parent_id: Option<String>,
    /// Whether it sees its parent's integrations.
    pub inherit_entities: bool,
}

impl From<&Space> for SpaceView {
    fn from(s: &Space) -> Self {
        SpaceView {
            id: s.id.clone(),
            name: s.name.clone(),
            parent_id: s.parent_id.clone(),
            inherit_entities: s.inherit_entities,
        }
    }
}

/// `GET /spaces`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SpaceList {
    /// Spaces the caller can read.
    pub spaces: Vec<SpaceView>,
}

/// `POST /api-keys`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// Name.
    pub name: String,
    /// Roles; the caller must be admin of every space named.
    pub bindings: Vec<Binding>,
}

/// An API key (never its secret).
#[derive(Debug, Serialize, JsonSchema)]
pub struct ApiKeyView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Roles.
    pub bindings: Vec<Binding>,
    /// Creation time.
    pub created_at: String,
}

impl From<&ApiKey> for ApiKeyView {
    fn from(k: &ApiKey) -> Self {
        ApiKeyView {
            id: k.id.clone(),
            name: k.name.clone(),
            bindings: k
                .bindings
                .iter()
                .map(|b| Binding {
                    space_id: b.space_id.clone(),
                    role: b.role.into(),
                })
                .collect(),
            created_at: k.created_at.clone(),
        }
    }
}

/// `POST /api-keys` answer: the only time the secret is shown.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CreatedApiKey {
    /// The key.
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// The full key to send as `Authorization: Bearer <secret>`; stored only as a hash.
    pub secret: String,
}

/// `GET /api-keys`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ApiKeyList {
    /// Keys whose every binding the caller administers.
    pub api_keys: Vec<ApiKeyView>,
}

/// `POST /integrations`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIntegration {
    /// Unique, immutable name; it alone determines the webhook URL.
    pub name: String,
    /// The account's default integration (at most one; needs root admin).
    pub is_default: Option<bool>,
    /// Space of a space-level integration (default `root`).
    pub space_id: Option<String>,
    /// `https://…`, `http://…` or `private://<vcs-agent-pool>`.
    pub api_host_url: String,
    /// URL shown to people (default: `api_host_url`).
    pub user_facing_host_url: Option<String>,
    /// Bitbucket user.
    pub username: Option<String>,
    /// Bitbucket access token (write-only).
    pub access_token: Option<String>,
    /// Labels.
    pub labels: Option<Vec<String>>,
    /// Markdown description.
    pub description: Option<String>,
}

/// `PATCH /integrations/{name}`. `name`, `is_default` and `space_id` cannot change.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateIntegration {
    /// Must equal the current name when given.
    pub name: Option<String>,
    /// Must equal the current value when given.
    pub is_default: Option<bool>,
    /// Must equal the current value when given.
    pub space_id: Option<String>,
    /// New API host URL.
    pub api_host_url: Option<String>,
    /// New user-facing URL.
    pub user_facing_host_url: Option<String>,
    /// New username.
    pub username: Option<String>,
    /// New access token (write-only).
    pub access_token: Option<String>,
    /// New labels.
    pub labels: Option<Vec<String>>,
    /// New description.
    pub description: Option<String>,
}

/// An integration: never a secret.
#[derive(Debug, Serialize, JsonSchema)]
pub struct IntegrationView {
    /// Name.
    pub name: String,
    /// Always `bitbucket_datacenter`.
    pub provider: String,
    /// Whether it is the default integration.
    pub is_default: bool,
    /// Its space (`root` for the default).
    pub space_id: String,
    /// API host URL.
    pub api_host_url: String,
    /// User-facing URL.
    pub user_facing_host_url: String,
    /// Bitbucket user.
    pub username: String,
    /// Whether an access token is set (the token itself is never returned).
    pub has_access_token: bool,
    /// Labels.
    pub labels: Vec<String>,
    /// Markdown description.
    pub description: String,
    /// Creation time.
    pub created_at: String,
}

impl From<&Integration> for IntegrationView {
    fn from(i: &Integration) -> Self {
        IntegrationView {
            name: i.name.clone(),
            provider: PROVIDER.to_owned(),
            is_default: i.is_default,
            space_id: i.space_id.clone(),
            api_host_url: i.api_host_url.clone(),
            user_facing_host_url: i.user_facing_host_url.clone(),
            username: i.username.clone(),
            has_access_token: !i.access_token.is_empty(),
            labels: i.labels.clone(),
            description: i.description.clone(),
            created_at: i.created_at.clone(),
        }
    }
}

/// `GET /integrations`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct IntegrationList {
    /// Integrations visible to the caller.
    pub integrations: Vec<IntegrationView>,
}

/// `GET /integrations/{name}/details` (admins only).
#[derive(Debug, Serialize, JsonSchema)]
pub struct IntegrationDetails {
    /// Name.
    pub name: String,
    /// The URL to configure in Bitbucket.
    pub webhook_url: String,
    /// The secret to configure in Bitbucket.
    pub webhook_secret: String,
    /// Until when the previous secret is still accepted, after a rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_valid_until: Option<String>,
}

/// `POST /integrations/{name}/rotate-secret`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// Seconds the old secret keeps verifying (default 86400, at most 604800).
    #[serde(default, deserialize_with = "whole_number")]
    pub grace_period_secs: Option<u64>,
}

/// `POST /integrations/{name}/rotate-secret` answer: the new details, and what became of each
/// managed Bitbucket webhook the new secret was pushed to.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RotatedSecret {
    /// The webhook URL and the new secret.
    #[serde(flatten)]
    pub details: IntegrationDetails,
    /// Managed webhooks Bitbucket now signs with the new secret.
    pub bitbucket_webhooks_updated: Vec<BitbucketWebhookView>,
    /// Managed webhooks Bitbucket did not update (they sign with the old secret, which verifies
    /// until its grace period ends: sync them again before then).
    pub bitbucket_webhooks_failed: Vec<BitbucketWebhookFailure>,
}

/// `PUT /integrations/{name}/bitbucket-webhooks`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncBitbucketWebhook {
    /// Project key, e.g. `INFRA` (`~user` for a personal project).
    pub project_key: String,
    /// Repository slug for a repository-level webhook; without it, the project-level one.
    pub repository_slug: Option<String>,
}

/// A Bitbucket webhook inlet manages for an integration.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BitbucketWebhookView {
    /// Bitbucket's id of the webhook.
    pub id: u64,
    /// Its project.
    pub project_key: String,
    /// Its repository (null: project-level).
    pub repository_slug: Option<String>,
    /// Where Bitbucket posts: the integration's webhook URL.
    pub url: String,
    /// The event keys Bitbucket accepted.
    pub events: Vec<String>,
    /// Whether Bitbucket sends deliveries.
    pub active: bool,
}

impl From<&ManagedWebhook> for BitbucketWebhookView {
    fn from(w: &ManagedWebhook) -> Self {
        BitbucketWebhookView {
            id: w.id,
            project_key: w.project_key.clone(),
            repository_slug: w.repository_slug.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            active: w.active,
        }
    }
}

/// `PUT /integrations/{name}/bitbucket-webhooks` answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SyncedBitbucketWebhook {
    /// The webhook, as Bitbucket answered.
    #[serde(flatten)]
    pub webhook: BitbucketWebhookView,
    /// Whether it was created (no webhook of the scope had the integration's URL) rather than
    /// updated.
    pub created: bool,
    /// Event keys Bitbucket refused (a server older than them), left out of `events`.
    pub refused_events: Vec<String>,
}

/// `GET /integrations/{name}/bitbucket-webhooks`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BitbucketWebhookList {
    /// The webhooks inlet manages for the integration.
    pub bitbucket_webhooks: Vec<BitbucketWebhookView>,
}

/// A managed webhook Bitbucket did not update, and why.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BitbucketWebhookFailure {
    /// Bitbucket's id of the webhook.
    pub id: u64,
    /// Its project.
    pub project_key: String,
    /// Its repository (null: project-level).
    pub repository_slug: Option<String>,
    /// Stable snake_case code, as in error answers.
    pub code: String,
    /// Bitbucket's message, or why there was no answer.
    pub message: String,
}

/// `POST /stacks`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStack {
    /// Id (generated from the name when omitted).
    pub id: Option<String>,
    /// Name.
    pub name: String,
    /// Space (default `root`).
    pub space_id: Option<String>,
    /// Integration name (default: the default integration).
    pub integration: Option<String>,
    /// `PROJECT/repo`.
    pub repository: String,
    /// Tracked branch (`main` or `refs/heads/main`).
    pub branch: String,
    /// Directory inside the repository whose changes affect the stack (`""`, the default: all of
    /// it); compared by whole path components.
    pub project_root: Option<String>,
    /// Further paths whose changes affect the stack, as globs relative to the repository root:
    /// `*` and `?` within a segment, `**` across, `{a,b}`, `[ab]`, a leading `!` excludes what
    /// earlier globs matched.
    pub additional_project_globs: Option<Vec<String>>,
    /// Labels.
    pub labels: Option<Vec<String>>,
    /// Block its runs.
    pub disabled: Option<bool>,
}

/// `PATCH /stacks/{id}`; naming an available integration re-attaches a detached stack.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateStack {
    /// New name.
    pub name: Option<String>,
    /// Integration to (re-)attach.
    pub integration: Option<String>,
    /// New repository.
    pub repository: Option<String>,
    /// New tracked branch.
    pub branch: Option<String>,
    /// New project root.
    pub project_root: Option<String>,
    /// New additional project globs (replacing the old list).
    pub additional_project_globs: Option<Vec<String>>,
    /// New labels.
    pub labels: Option<Vec<String>>,
    /// Enable or disable.
    pub disabled: Option<bool>,
}

/// Whether a stack's integration still exists.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusName {
    /// Attached to a live integration.
    Attached,
    /// Its integration was deleted.
    Detached,
}

/// A stack.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StackView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Space.
    pub space_id: String,
    /// Integration name.
    pub integration: String,
    /// attached or detached.
    pub integration_status: StatusName,
    /// `PROJECT/repo`.
    pub repository: String,
    /// Tracked branch.
    pub branch: String,
    /// Directory inside the repository (`""`: all of it).
    pub project_root: String,
    /// Further paths whose changes affect the stack.
    pub additional_project_globs: Vec<String>,
    /// Labels.
    pub labels: Vec<String>,
    /// Whether runs are blocked.
    pub disabled: bool,
}

impl From<&Stack> for StackView {
    fn from(s: &Stack) -> Self {
        StackView {
            id: s.id.clone(),
            name: s.name.clone(),
            space_id: s.space_id.to_string(),
            integration: s.integration.to_string(),
            integration_status: match s.integration_status {
                IntegrationStatus::Attached => StatusName::Attached,
                IntegrationStatus::Detached => StatusName::Detached,
            },
            repository: s.repository.to_string(),
            branch: s.branch.to_string(),
            project_root: s.project_root.to_string(),
            additional_project_globs: s.additional_project_globs.clone(),
            labels: s.labels.iter().map(Text::to_string).collect(),
            disabled: s.disabled,
        }
    }
}

/// `GET /stacks`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StackList {
    /// Stacks the caller can read.
    pub stacks: Vec<StackView>,
}

/// `POST /stacks/{id}/runs`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRun {
    /// Commit to run; empty means the head of the tracked branch, resolved by the run scheduler.
    pub sha: Option<String>,
}

/// `POST /stacks/{id}/runs` answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunAccepted {
    /// Id of the manual trigger; the decision on `inlet.runs` carries it as `delivery_id`.
    pub trigger_id: String,
}

/// `POST /integrations/{name}/reconcile`: no fields; the body may be empty or `{}`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestReconcile {}

/// `POST /integrations/{name}/reconcile` answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ReconcileAccepted {
    /// Id of the reconciliation pass: a new one, or the one still pending when the last request
    /// came less than 10 seconds ago.
    pub reconcile_id: String,
}

/// Every error answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error's code and message.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code.
    pub code: String,
    /// Human sentence; validation errors start with the field name.
    pub message: String,
}

/// `GET /integrations/{name}/deliveries`: recent deliveries, newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeliveryList {
    /// This page.
    pub deliveries: Vec<DeliverySummary>,
    /// Deliveries remembered for the integration (bounded).
    pub total: usize,
    /// `offset` of the next page, if any.
    pub next_offset: Option<usize>,
}

/// One delivery in a listing.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeliverySummary {
    /// Bitbucket's `X-Request-Id`.
    pub delivery_id: String,
    /// The Bitbucket event key.
    pub event_key: Option<String>,
    /// When ingest received it.
    pub received_at: Option<String>,
    /// What the router did: routed, ignored, duplicate, dead_lettered.
    pub outcome: Option<String>,
    /// Why, when it was ignored.
    pub reasons: Vec<String>,
    /// Stacks triggered.
    pub stacks: Vec<String>,
    /// Decisions: `{stack_id, run_id, status, reasons}`.
    pub decisions: Vec<serde_json::Value>,
}

/// `GET /deliveries/{id}`: what every stage did with one delivery, in order.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeliveryStory {
    /// Bitbucket's `X-Request-Id`.
    pub delivery_id: String,
    /// The integration it arrived under.
    pub integration: String,
    /// `DeliveryEvent`s (schema `inlet.delivery/v1`), oldest first.
    pub events: Vec<serde_json::Value>,
}

/// `GET /stacks/{id}/runs`: recent decisions, newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunList {
    /// `DeliveryEvent`s with outcome `decided`.
    pub runs: Vec<serde_json::Value>,
}

/// `GET /integrations/{name}/deliveries` query.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct Page {
    /// Entries to skip.
    pub offset: Option<usize>,
    /// Page size (default 50, at most 500).
    pub limit: Option<usize>,
}

/// `POST /deliveries/{id}/redeliver` answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Redelivered {
    /// The delivery re-published.
    pub delivery_id: String,
    /// Always `redelivered`.
    pub status: String,
}

/// An optional non-negative whole number, also when written as `786.0`: JSON Schema's `integer`
/// is any number without a fractional part, and the document promises that.
fn whole_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(n) = number.as_u64() {
        return Ok(Some(n));
    }
    match number.as_f64() {
        // Saturates beyond u64::MAX, which every range check then refuses.
        Some(f) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format!(
            "`{number}` is not a non-negative whole number"
        ))),
    }
}
