//! A typed, lenient reader of Bitbucket Data Center webhook payloads, shared by ingest and router.
//!
//! Unknown fields are ignored and only what inlet uses is read, so payloads of older and newer
//! Bitbucket versions parse alike.

use serde::Deserialize;

/// Event keys inlet understands.
pub mod events {
    /// A push (branches and tags added, updated or deleted).
    pub const REFS_CHANGED: &str = "repo:refs_changed";
    /// A pull request was opened.
    pub const PR_OPENED: &str = "pr:opened";
    /// The source branch of a pull request received commits.
    pub const PR_FROM_REF_UPDATED: &str = "pr:from_ref_updated";
    /// Title, description or target of a pull request changed.
    pub const PR_MODIFIED: &str = "pr:modified";
    /// A reviewer approved.
    pub const PR_APPROVED: &str = "pr:reviewer:approved";
    /// A reviewer withdrew approval.
    pub const PR_UNAPPROVED: &str = "pr:reviewer:unapproved";
    /// A reviewer asked for changes (older Bitbucket name).
    pub const PR_NEEDS_WORK: &str = "pr:reviewer:needs_work";
    /// A reviewer asked for changes (newer Bitbucket name).
    pub const PR_CHANGES_REQUESTED: &str = "pr:reviewer:changes_requested";
    /// A pull request was merged.
    pub const PR_MERGED: &str = "pr:merged";
    /// A comment was added to a pull request.
    pub const PR_COMMENT_ADDED: &str = "pr:comment:added";
    /// "Test connection" in Bitbucket's webhook settings.
    pub const PING: &str = "diagnostics:ping";

    /// Every event key with a defined meaning in inlet (ping excluded).
    pub const HANDLED: &[&str] = &[
        REFS_CHANGED,
        PR_OPENED,
        PR_FROM_REF_UPDATED,
        PR_MODIFIED,
        PR_APPROVED,
        PR_UNAPPROVED,
        PR_NEEDS_WORK,
        PR_CHANGES_REQUESTED,
        PR_MERGED,
        PR_COMMENT_ADDED,
    ];
}

/// Why a body could not be read as a Bitbucket event.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON, or JSON of the wrong shape for the event.
    #[error("the body is not a valid Bitbucket event: {0}")]
    Invalid(#[from] serde_json::Error),
    /// No repository (nor pull request target repository) in the body.
    #[error("the body names no repository")]
    NoRepository,
}

/// A Bitbucket project (only its key matters).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Project {
    /// Project key, e.g. `INFRA`.
    pub key: String,
}

/// A repository as Bitbucket describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Repository {
    /// Repository slug, e.g. `network`.
    pub slug: String,
    /// Its project.
    pub project: Project,
}

impl Repository {
    /// `PROJECT/slug`, the form stacks name repositories in.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.project.key, self.slug)
    }
}

/// The user behind an event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Actor {
    /// Login name.
    #[serde(default)]
    pub name: Option<String>,
    /// Slug (present when name is not, in some versions).
    #[serde(default)]
    pub slug: Option<String>,
}

impl Actor {
    /// The best identifier available.
    pub fn login(&self) -> Option<String> {
        self.name.clone().or_else(|| self.slug.clone())
    }
}

/// A ref in a push.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ref {
    /// Full ref, e.g. `refs/heads/main`.
    pub id: String,
    /// Short name, e.g. `main`.
    #[serde(default)]
    pub display_id: Option<String>,
    /// `BRANCH` or `TAG`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

impl Ref {
    /// Whether the ref is a branch (by type, or by its `refs/heads/` prefix when untyped).
    pub fn is_branch(&self) -> bool {
        match self.kind.as_deref() {
            Some(kind) => kind.eq_ignore_ascii_case("BRANCH"),
            None => self.id.starts_with("refs/heads/"),
        }
    }

    /// The short branch or tag name.
    pub fn short_name(&self) -> String {
        if let Some(display) = &self.display_id {
            return display.clone();
        }
        self.id
            .strip_prefix("refs/heads/")
            .or_else(|| self.id.strip_prefix("refs/tags/"))
            .unwrap_or(&self.id)
            .to_owned()
    }
}

/// One ref change of a push.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The ref.
    #[serde(rename = "ref")]
    pub reference: Ref,
    /// Hash before (all zeros for ADD).
    #[serde(default)]
    pub from_hash: String,
    /// Hash after (all zeros for DELETE).
    #[serde(default)]
    pub to_hash: String,
    /// `ADD`, `UPDATE` or `DELETE`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// What a push did to a ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new ref.
    Add,
    /// New commits (or a force push).
    Update,
    /// The ref was deleted.
    Delete,
}

impl Change {
    /// The kind of change, or `None` for a type inlet does not know.
    pub fn change_kind(&self) -> Option<ChangeKind> {
        match self.kind.to_ascii_uppercase().as_str() {
            "ADD" => Some(ChangeKind::Add),
            "UPDATE" => Some(ChangeKind::Update),
            "DELETE" => Some(ChangeKind::Delete),
            _ => None,
        }
    }
}

/// `repo:refs_changed`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RefsChanged {
    /// Who pushed.
    #[serde(default)]
    pub actor: Option<Actor>,
    /// Where.
    pub repository: Repository,
    /// What changed; one push may change several refs.
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// Parses a `repo:refs_changed` body.
pub fn parse_refs_changed(body: &[u8]) -> Result<RefsChanged, PayloadError> {
    Ok(serde_json::from_slice(body)?)
}

/// Just enough of any event to find the repository it belongs to.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    repository: Option<Repository>,
    #[serde(default)]
    pull_request: Option<PullRequestEnvelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullRequestEnvelope {
    to_ref: RefWithRepository,
}

#[derive(Deserialize)]
struct RefWithRepository {
    repository: Repository,
}

/// The repository an event belongs to: for pull-request events the target repository
/// (`pullRequest.toRef.repository`), so a PR and pushes to its target branch share an ordering key.
pub fn event_repository(body: &[u8]) -> Result<Repository, PayloadError> {
    let envelope: Envelope = serde_json::from_slice(body)?;
    envelope
        .pull_request
        .map(|pr| pr.to_ref.repository)
        .or(envelope.repository)
        .ok_or(PayloadError::NoRepository)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUSH: &str = r#"{
      "eventKey": "repo:refs_changed", "date": "2017-09-19T09:58:11+1000",
      "actor": {"name": "admin", "id": 1, "slug": "admin", "type": "NORMAL"},
      "repository": {"slug": "network", "id": 84, "name": "network", "scmId": "git",
                     "project": {"key": "INFRA", "id": 84, "name": "Infra", "public": false}},
      "changes": [
        {"ref": {"id": "refs/heads/main", "displayId": "main", "type": "BRANCH"},
         "refId": "refs/heads/main", "fromHash": "ecddabb624f6f5ba43816f5926e580a5f680a932",
         "toHash": "178864a7d521b6f5e720b386b2c2b0ef8563e0dc", "type": "UPDATE"},
        {"ref": {"id": "refs/tags/v1", "displayId": "v1", "type": "TAG"},
         "refId": "refs/tags/v1", "fromHash": "0000000000000000000000000000000000000000",
         "toHash": "178864a7d521b6f5e720b386b2c2b0ef8563e0dc", "type": "ADD"}
      ]}"#;

    /// A documented push parses, with several changes, unknown fields ignored.
    #[test]
    fn parses_push() {
        let push = parse_refs_changed(PUSH.as_bytes()).expect("parse");
        assert_eq!(push.repository.full_name(), "INFRA/network");
        assert_eq!(push.actor.and_then(|a| a.login()).as_deref(), Some("admin"));
        assert_eq!(push.changes.len(), 2);
        assert!(push.changes[0].reference.is_branch());
        assert_eq!(push.changes[0].reference.short_name(), "main");
        assert_eq!(push.changes[0].change_kind(), Some(ChangeKind::Update));
        assert!(!push.changes[1].reference.is_branch());
    }

    /// The ordering repository is the PR target for PR events and the repository otherwise.
    #[test]
    fn event_repository_prefers_pr_target() {
        assert_eq!(
            event_repository(PUSH.as_bytes()).expect("push").full_name(),
            "INFRA/network"
        );
        let pr = r#"{"pullRequest": {"fromRef": {"repository": {"slug": "fork", "project": {"key": "~ALICE"}}},
                     "toRef": {"repository": {"slug": "network", "project": {"key": "INFRA"}}}}}"#;
        assert_eq!(
            event_repository(pr.as_bytes()).expect("pr").full_name(),
            "INFRA/network"
        );
        assert!(matches!(
            event_repository(b"{\"test\": true}"),
            Err(PayloadError::NoRepository)
        ));
        assert!(matches!(
            event_repository(b"{not json"),
            Err(PayloadError::Invalid(_))
        ));
        assert!(matches!(
            event_repository(b"{\"repository\": 5}"),
            Err(PayloadError::Invalid(_))
        ));
    }
}
