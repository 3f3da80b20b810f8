//! Control commands: the records of `inlet.control`.
//!
//! Every change to spaces, integrations, stacks and API keys is one [`ControlRecord`] appended to the
//! single-partition control topic. A command carries everything the fold needs to be deterministic:
//! generated ids, secrets and timestamps are chosen by whoever appends it, never by the fold.

use serde::{Deserialize, Serialize};

use crate::crypto::Sealed;
use crate::domain::{ApiKey, Integration, ManagedWebhook, Space};

/// Version tag of control records.
pub const CONTROL_SCHEMA: &str = "inlet.control/v1";

/// One entry of the control log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRecord {
    /// Always [`CONTROL_SCHEMA`].
    pub schema: String,
    /// Unique id of this command.
    pub command_id: String,
    /// The process that appended the command; lets it collect the fold's outcome.
    pub origin: String,
    /// When the command was issued (RFC 3339).
    pub issued_at: String,
    /// Who issued it (an API key id, or `bootstrap`).
    pub actor: String,
    /// The change itself.
    pub command: ControlCommand,
}

/// A change to the registry. The fold validates it against the state before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlCommand {
    /// Create a space under an existing parent.
    CreateSpace {
        /// The new space.
        space: Space,
    },
    /// Rename a space or toggle its inheritance.
    UpdateSpace {
        /// Id of the space.
        id: String,
        /// Fields to change.
        patch: SpacePatch,
    },
    /// Delete an empty space.
    DeleteSpace {
        /// Id of the space.
        id: String,
    },
    /// Create an integration (a fresh incarnation of its name).
    CreateIntegration {
        /// The new integration, secret included.
        integration: Integration,
    },
    /// Change an integration's mutable fields (never its name).
    UpdateIntegration {
        /// Name of the integration.
        name: String,
        /// Fields to change.
        patch: IntegrationPatch,
    },
    /// Replace the webhook secret, keeping the old one valid until `previous_valid_until`.
    RotateWebhookSecret {
        /// Name of the integration.
        name: String,
        /// The new secret, sealed for the integration.
        secret: Sealed,
        /// RFC 3339 instant until which the old secret still verifies.
        previous_valid_until: String,
        /// The incarnation the new secret was sealed for: a rotation racing a delete and
        /// re-create of the name is rejected instead of installing a secret for another
        /// integration. Absent in records written before it existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        integration_id: Option<String>,
    },
    /// Delete an integration; stacks using it become detached.
    DeleteIntegration {
        /// Name of the integration.
        name: String,
    },
    /// Record a webhook Bitbucket created or updated for the integration (appended only after
    /// Bitbucket answered), replacing any other managed webhook of the same project or repository.
    RecordBitbucketWebhook {
        /// Name of the integration.
        name: String,
        /// The incarnation it was synced for: a re-created name is another integration.
        integration_id: String,
        /// The webhook as Bitbucket answered (no secret).
        webhook: ManagedWebhook,
    },
    /// Stop managing a webhook (appended after Bitbucket deleted it, or had no such webhook).
    ForgetBitbucketWebhook {
        /// Name of the integration.
        name: String,
        /// Bitbucket's id of the webhook.
        id: u64,
    },
    /// Ask for one reconciliation pass of the integration now (DESIGN §5.2): the routers that
    /// fold it compare the heads in Bitbucket with what they saw. Only the latest request per
    /// integration is kept.
    RequestReconcile {
        /// Name of the integration.
        name: String,
        /// The incarnation it was requested for: a re-created name is another integration.
        integration_id: String,
        /// Generated id of the request, answered to the caller.
        reconcile_id: String,
    },
    /// Create a stack.
    CreateStack {
        /// The new stack.
        stack: StackSpec,
    },
    /// Change a stack; naming an available integration re-attaches a detached stack.
    UpdateStack {
        /// Id of the stack.
        id: String,
        /// Fields to change.
        patch: StackPatch,
    },
    /// Delete a stack.
    DeleteStack {
        /// Id of the stack.
        id: String,
    },
    /// Create an API key (only its hash travels).
    CreateApiKey {
        /// The new key.
        key: ApiKey,
    },
    /// Revoke an API key.
    DeleteApiKey {
        /// Id of the key.
        id: String,
    },
}

impl ControlCommand {
    /// The Kafka key of the record: the entity it changes.
    pub fn entity_key(&self) -> String {
        match self {
            ControlCommand::CreateSpace { space } => format!("space/{}", space.id),
            ControlCommand::UpdateSpace { id, .. } | ControlCommand::DeleteSpace { id } => {
                format!("space/{id}")
            }
            ControlCommand::CreateIntegration { integration } => {
                format!("integration/{}", integration.name)
            }
            ControlCommand::DeleteIntegration { name }
            | ControlCommand::UpdateIntegration { name, .. }
            | ControlCommand::RotateWebhookSecret { name, .. }
            | ControlCommand::RecordBitbucketWebhook { name, .. }
            | ControlCommand::ForgetBitbucketWebhook { name, .. }
            | ControlCommand::RequestReconcile { name, .. } => format!("integration/{name}"),
            ControlCommand::CreateStack { stack } => format!("stack/{}", stack.id),
            ControlCommand::UpdateStack { id, .. } | ControlCommand::DeleteStack { id } => {
                format!("stack/{id}")
            }
            ControlCommand::CreateApiKey { key } => format!("api-key/{}", key.id),
            ControlCommand::DeleteApiKey { id } => format!("api-key/{id}"),
        }
    }

    /// A short name of the command kind, for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ControlCommand::CreateSpace { .. } => "create_space",
            ControlCommand::UpdateSpace { .. } => "update_space",
            ControlCommand::DeleteSpace { .. } => "delete_space",
            ControlCommand::UpdateIntegration { .. } => "update_integration",
            ControlCommand::RotateWebhookSecret { .. } => "rotate_webhook_secret",
            ControlCommand::CreateIntegration { .. } => "create_integration",
            ControlCommand::DeleteIntegration { .. } => "delete_integration",
            ControlCommand::RecordBitbucketWebhook { .. } => "record_bitbucket_webhook",
            ControlCommand::ForgetBitbucketWebhook { .. } => "forget_bitbucket_webhook",
            ControlCommand::RequestReconcile { .. } => "request_reconcile",
            ControlCommand::CreateStack { .. } => "create_stack",
            ControlCommand::UpdateStack { .. } => "update_stack",
            ControlCommand::DeleteStack { .. } => "delete_stack",
            ControlCommand::CreateApiKey { .. } => "create_api_key",
            ControlCommand::DeleteApiKey { .. } => "delete_api_key",
        }
    }
}

/// A stack as requested; the fold derives its integration status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackSpec {
    /// Unique id.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Space the stack lives in.
    pub space_id: String,
    /// Name of the integration to attach.
    pub integration: String,
    /// `PROJECT/repo`.
    pub repository: String,
    /// Tracked branch.
    pub branch: String,
    /// Directory inside the repository.
    pub project_root: String,
    /// Globs of further paths whose changes affect the stack (DESIGN §5.1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_project_globs: Vec<String>,
    /// Labels.
    pub labels: Vec<String>,
    /// Whether runs are blocked.
    pub disabled: bool,
}

/// Fields of a stack that may change; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackPatch {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Integration to (re-)attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<String>,
    /// New repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// New tracked branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// New project root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_root: Option<String>,
    /// New additional project globs (replacing the old list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_project_globs: Option<Vec<String>>,
    /// New labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// Enable or disable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

/// Fields of a space that may change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpacePatch {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether the space inherits entities from its parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherit_entities: Option<bool>,
}

/// Fields of an integration that may change. The name never does: it is the webhook URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrationPatch {
    /// New API host URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_host_url: Option<String>,
    /// New user-facing host URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_facing_host_url: Option<String>,
    /// New username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// New access token, sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<Sealed>,
    /// New labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}
