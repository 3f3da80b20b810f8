//! The control plane's entities: spaces, integrations, stacks and API keys.
//!
//! These are plain data. The rules that relate them (unique names, one default integration,
//! availability through inheriting spaces) live in [`crate::fold`], the only code that changes them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::text::Text;

/// The path of an integration's webhook URL before its name (DESIGN §4.1): the URL is derived
/// from the name alone, so re-creating an integration keeps it.
pub const WEBHOOK_PATH_PREFIX: &str = "/webhooks/bitbucket-datacenter/";

use crate::crypto::Sealed;

/// The id of the space that always exists and roots the tree.
pub const ROOT_SPACE: &str = "root";

/// The only VCS provider inlet speaks.
pub const PROVIDER: &str = "bitbucket_datacenter";

/// A node in the space tree; access and integration availability follow the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    /// Stable identifier, unique among spaces.
    pub id: String,
    /// Human name, may change.
    pub name: String,
    /// Parent space; `None` only for `root`.
    pub parent_id: Option<String>,
    /// Whether this space sees the integrations of its parent (and, through it, further ancestors
    /// that inherit too).
    pub inherit_entities: bool,
}

impl Space {
    /// The root space every registry starts with.
    pub fn root() -> Self {
        Space {
            id: ROOT_SPACE.to_owned(),
            name: "root".to_owned(),
            parent_id: None,
            inherit_entities: false,
        }
    }
}

/// A Bitbucket Data Center integration. Its name is immutable and alone determines its webhook URL,
/// so re-creating an integration with the same name keeps the URL while the secret changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Integration {
    /// Unique, immutable name; the last path segment of the webhook URL.
    pub name: String,
    /// Identifies this incarnation of the name: a re-created integration gets a new id, which is how
    /// stacks of the deleted one stay detached.
    pub id: String,
    /// The default integration is available to every stack; at most one exists.
    pub is_default: bool,
    /// The space it belongs to (`root` for the default integration).
    pub space_id: String,
    /// `https://…`, `http://…` or `private://<vcs-agent-pool>`.
    pub api_host_url: String,
    /// The URL shown to people; defaults to `api_host_url`.
    pub user_facing_host_url: String,
    /// The Bitbucket user inlet acts as.
    pub username: String,
    /// The Bitbucket access token (write-only through the API), sealed.
    pub access_token: Sealed,
    /// Free-form labels.
    pub labels: Vec<String>,
    /// Markdown description.
    pub description: String,
    /// The HMAC secret Bitbucket signs webhooks with, sealed.
    pub webhook_secret: Sealed,
    /// The secret before the last rotation, accepted until its grace period ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_webhook_secret: Option<PreviousSecret>,
    /// Secrets of earlier rotations whose grace periods had not ended when the next rotation came
    /// (a second rotation must not cut off a secret Bitbucket may still send), at most
    /// [`MAX_OLDER_SECRETS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub older_webhook_secrets: Vec<PreviousSecret>,
    /// When the integration was created (RFC 3339, from the control record).
    pub created_at: String,
}

/// A rotated-out webhook secret and when it stops being accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    /// The old secret, sealed.
    pub secret: Sealed,
    /// RFC 3339 instant after which it no longer verifies.
    pub valid_until: String,
}

/// Older secrets kept at most, besides the previous one.
pub const MAX_OLDER_SECRETS: usize = 4;

impl Integration {
    /// Every earlier secret that may still be within its grace period (the caller compares
    /// `valid_until` with the clock).
    pub fn grace_secrets(&self) -> impl Iterator<Item = &PreviousSecret> {
        self.previous_webhook_secret
            .iter()
            .chain(self.older_webhook_secrets.iter())
    }

    /// The context webhook secrets of this integration are sealed for.
    pub fn webhook_secret_context(&self) -> String {
        format!("webhook_secret/{}", self.id)
    }

    /// The context the access token of this integration is sealed for.
    pub fn access_token_context(&self) -> String {
        format!("access_token/{}", self.id)
    }
}

/// A webhook in Bitbucket that inlet created or adopted for an integration, and keeps in sync
/// (its secret follows rotations). Never holds the secret: that is the integration's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedWebhook {
    /// Bitbucket's id of the webhook.
    pub id: u64,
    /// The project it lives in (or whose repository it lives in).
    pub project_key: String,
    /// The repository of a repository-level webhook; `None`: project-level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_slug: Option<String>,
    /// The URL Bitbucket posts to (the integration's webhook URL when it was synced).
    pub url: String,
    /// The event keys Bitbucket accepted for it.
    pub events: Vec<String>,
    /// Whether Bitbucket said it is active.
    pub active: bool,
}

impl ManagedWebhook {
    /// Whether it lives in project `project_key` (repository `repository_slug`) (compared
    /// case-insensitively, as Bitbucket compares keys and slugs).
    pub fn same_scope(&self, project_key: &str, repository_slug: Option<&str>) -> bool {
        self.project_key.eq_ignore_ascii_case(project_key)
            && match (self.repository_slug.as_deref(), repository_slug) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                (None, None) => true,
                _ => false,
            }
    }
}

/// Whether a stack's integration still exists in the incarnation the stack was attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntegrationStatus {
    /// The integration the stack names exists and is the one it was attached to.
    Attached,
    /// The integration was deleted; the stack keeps its name until re-attached.
    Detached,
}

/// An infrastructure-as-code project tied to a repository and a tracked branch.
///
/// The values stacks share (space, integration, repository, branch, project root, labels) are
/// [`Text`]s: in a registry, one allocation per distinct value (`crate::text`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    /// Unique identifier; the key of its triggers and decisions on Kafka.
    pub id: String,
    /// Human name.
    pub name: String,
    /// The space the stack lives in.
    pub space_id: Text,
    /// The name of the integration the stack uses (kept when the integration is deleted).
    pub integration: Text,
    /// `PROJECT/repo` as Bitbucket names it.
    pub repository: Text,
    /// The tracked branch: pushes to it request tracked runs, others proposed runs.
    pub branch: Text,
    /// Directory of the project inside the repository (`""`: all of it), normalised.
    pub project_root: Text,
    /// Globs of further paths whose changes affect the stack.
    #[serde(default)]
    pub additional_project_globs: Vec<String>,
    /// Free-form labels.
    pub labels: Arc<[Text]>,
    /// A disabled stack is matched but its runs are blocked.
    pub disabled: bool,
    /// Attached or detached (integration deleted).
    pub integration_status: IntegrationStatus,
    /// The incarnation id of the integration the stack is attached to.
    pub integration_id: Text,
    /// Identifies this incarnation of the id (the id of the command that created it): a stack
    /// deleted and created again with the same id is another stack, with none of its runs.
    /// Empty for stacks created before incarnations were recorded.
    #[serde(default)]
    pub incarnation: String,
}

/// What a role binding allows in a space and its descendants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read entities.
    Reader,
    /// Read and change stacks, trigger runs.
    Writer,
    /// Everything, including integrations and their secrets.
    Admin,
}

/// A role granted on a space (and its descendants).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleBinding {
    /// The space the role applies to.
    pub space_id: String,
    /// The role granted.
    pub role: Role,
}

/// An admin API key. Only a hash of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public identifier (the part before the dot in the presented key).
    pub id: String,
    /// Human name.
    pub name: String,
    /// Hex SHA-256 of the key's secret part.
    pub secret_sha256: String,
    /// Roles the key carries.
    pub bindings: Vec<RoleBinding>,
    /// When the key was created (RFC 3339).
    pub created_at: String,
}
