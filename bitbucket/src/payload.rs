//! A typed, lenient reader of Bitbucket Data Center webhook payloads, shared by ingest and router.
//!
//! Unknown fields are ignored and only what inlet uses is read, so payloads of older and newer
//! Bitbucket versions parse alike.

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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

    /// The eight events a webhook inlet provisions fires on (DESIGN §4.2): pushes, and the
    /// pull-request events that request or re-evaluate runs.
    pub const SUBSCRIBED: [&str; 8] = [
        REFS_CHANGED,
        PR_OPENED,
        PR_FROM_REF_UPDATED,
        PR_MODIFIED,
        PR_APPROVED,
        PR_UNAPPROVED,
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
    /// `ADD`, `UPDATE` or `DELETE` (absent in some trimmed payloads: an unknown change).
    #[serde(rename = "type", default)]
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
    /// When Bitbucket emitted the event.
    #[serde(default, deserialize_with = "lenient_timestamp")]
    pub date: Option<Timestamp>,
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

/// An instant as Bitbucket writes it: epoch milliseconds (older versions) or an ISO-8601 string,
/// possibly with a colon-less offset such as `+1000` (newer versions and the top-level `date`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub OffsetDateTime);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(i64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Millis(ms) => {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                    .map(Timestamp)
                    .map_err(serde::de::Error::custom)
            }
            Raw::Text(text) => parse_timestamp(&text)
                .map(Timestamp)
                .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a timestamp"))),
        }
    }
}

/// An optional timestamp that is absent when it cannot be read: no routing decision depends on
/// one, so a malformed date must not make a whole event unreadable.
fn lenient_timestamp<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Timestamp>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(Timestamp::deserialize(value).ok())
}

/// RFC 3339, or ISO-8601 with a `+HHMM` offset.
pub(crate) fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(at);
    }
    // `…+1000` → `…+10:00`. `get` rather than slicing: the text is untrusted, and a split inside
    // a multi-byte character (`"€€"`) must be a parse failure, never a panic.
    let split = text.len().checked_sub(5)?;
    let (head, offset) = (text.get(..split)?, text.get(split..)?);
    let bytes = offset.as_bytes();
    if matches!(bytes[0], b'+' | b'-') && bytes[1..].iter().all(u8::is_ascii_digit) {
        let fixed = format!("{head}{}:{}", &offset[..3], &offset[3..]);
        return OffsetDateTime::parse(&fixed, &Rfc3339).ok();
    }
    None
}

/// One side of a pull request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestRef {
    /// Full ref, e.g. `refs/heads/feature`.
    pub id: String,
    /// Short name.
    #[serde(default)]
    pub display_id: Option<String>,
    /// The commit the ref points at.
    pub latest_commit: String,
    /// The repository (differs between the two sides for a PR from a fork).
    pub repository: Repository,
}

impl PullRequestRef {
    /// The short branch name.
    pub fn branch(&self) -> String {
        short_branch(self.display_id.as_deref(), &self.id)
    }
}

/// `displayId` when present, else the ref without `refs/heads/`.
fn short_branch(display_id: Option<&str>, id: &str) -> String {
    display_id
        .unwrap_or_else(|| id.strip_prefix("refs/heads/").unwrap_or(id))
        .to_owned()
}

/// A pull request as events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullRequest {
    /// Id, unique within the target repository.
    pub id: u64,
    /// Title.
    #[serde(default)]
    pub title: Option<String>,
    /// `OPEN`, `MERGED` or `DECLINED`.
    #[serde(default)]
    pub state: Option<String>,
    /// When it was opened.
    #[serde(default, deserialize_with = "lenient_timestamp")]
    pub created_date: Option<Timestamp>,
    /// When it last changed.
    #[serde(default, deserialize_with = "lenient_timestamp")]
    pub updated_date: Option<Timestamp>,
    /// The source branch.
    pub from_ref: PullRequestRef,
    /// The target branch.
    pub to_ref: PullRequestRef,
}

/// A target branch before a `pr:modified` changed it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviousTarget {
    /// Full ref.
    pub id: String,
    /// Short name.
    #[serde(default)]
    pub display_id: Option<String>,
}

impl PreviousTarget {
    /// The short branch name.
    pub fn branch(&self) -> String {
        short_branch(self.display_id.as_deref(), &self.id)
    }
}

/// A pull-request comment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Comment {
    /// Id.
    #[serde(default)]
    pub id: Option<u64>,
    /// The text, markdown.
    pub text: String,
    /// Who wrote it.
    #[serde(default)]
    pub author: Option<Actor>,
    /// When.
    #[serde(default, deserialize_with = "lenient_timestamp")]
    pub created_date: Option<Timestamp>,
}

/// Any `pr:*` event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestEvent {
    /// When Bitbucket emitted the event.
    #[serde(default, deserialize_with = "lenient_timestamp")]
    pub date: Option<Timestamp>,
    /// Who caused it.
    #[serde(default)]
    pub actor: Option<Actor>,
    /// The pull request after the event.
    pub pull_request: PullRequest,
    /// `pr:modified`: the target before the change, when it changed.
    #[serde(default)]
    pub previous_target: Option<PreviousTarget>,
    /// `pr:from_ref_updated`: the source commit before the update.
    #[serde(default)]
    pub previous_from_hash: Option<String>,
    /// `pr:comment:added`: the comment.
    #[serde(default)]
    pub comment: Option<Comment>,
}

/// The pull-request events inlet distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullRequestAction {
    /// `pr:opened`.
    Opened,
    /// `pr:from_ref_updated`.
    SourceUpdated,
    /// `pr:modified`.
    Modified,
    /// `pr:reviewer:approved`.
    Approved,
    /// `pr:reviewer:unapproved`.
    Unapproved,
    /// `pr:reviewer:needs_work`, or its newer name `pr:reviewer:changes_requested`.
    ChangesRequested,
    /// `pr:merged`.
    Merged,
    /// `pr:comment:added`.
    CommentAdded,
}

/// A parsed webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `repo:refs_changed`.
    Push(RefsChanged),
    /// A `pr:*` event.
    PullRequest(PullRequestAction, Box<PullRequestEvent>),
}

impl Event {
    /// The repository the event is ordered by: for pull requests the target repository
    /// (`pullRequest.toRef.repository`), so a PR and pushes to its target branch share a key.
    pub fn repository(&self) -> &Repository {
        match self {
            Event::Push(push) => &push.repository,
            Event::PullRequest(_, event) => &event.pull_request.to_ref.repository,
        }
    }
}

/// The action of a handled pull-request event key.
pub fn pull_request_action(event_key: &str) -> Option<PullRequestAction> {
    Some(match event_key {
        events::PR_OPENED => PullRequestAction::Opened,
        events::PR_FROM_REF_UPDATED => PullRequestAction::SourceUpdated,
        events::PR_MODIFIED => PullRequestAction::Modified,
        events::PR_APPROVED => PullRequestAction::Approved,
        events::PR_UNAPPROVED => PullRequestAction::Unapproved,
        events::PR_NEEDS_WORK | events::PR_CHANGES_REQUESTED => PullRequestAction::ChangesRequested,
        events::PR_MERGED => PullRequestAction::Merged,
        events::PR_COMMENT_ADDED => PullRequestAction::CommentAdded,
        _ => return None,
    })
}

/// Parses the body of a handled event; `Ok(None)` for event keys inlet does not handle.
pub fn parse(event_key: &str, body: &[u8]) -> Result<Option<Event>, PayloadError> {
    if event_key == events::REFS_CHANGED {
        return Ok(Some(Event::Push(
            parse_refs_changed(body).map_err(no_repository)?,
        )));
    }
    let Some(action) = pull_request_action(event_key) else {
        return Ok(None);
    };
    let event: PullRequestEvent = serde_json::from_slice(body)
        .map_err(PayloadError::from)
        .map_err(no_repository)?;
    if action == PullRequestAction::CommentAdded && event.comment.is_none() {
        return Err(PayloadError::Invalid(serde::de::Error::missing_field(
            "comment",
        )));
    }
    Ok(Some(Event::PullRequest(action, Box::new(event))))
}

/// The repository a webhook is ordered by, for any event key: all the edge reads of a body, so
/// it accepts every authenticated delivery that names a repository (the router parses the rest).
/// `pullRequest.toRef.repository` (every `pr:*` event), else `repository` (`repo:*`, `mirror:*`),
/// else `new` (`repo:modified`).
pub fn ordering_repository(body: &[u8]) -> Result<Repository, PayloadError> {
    envelope(None, body).map(|envelope| envelope.repository)
}

/// What the edge reads of any webhook body: the repository it is ordered by and, when it is
/// readable, the `date` Bitbucket signed it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// See [`ordering_repository`].
    pub repository: Repository,
    /// The event's top-level `date`.
    pub date: Option<Timestamp>,
}

/// The [`Envelope`] of a body. With `event_key`, the repository is the one the router orders that
/// event by: `repository` for `repo:*` and `mirror:*` events even when the body also carries a
/// `pullRequest` (a signed push must be keyed by the repository it is routed on), the target
/// repository for `pr:*` events.
///
/// Read by a one-pass skim of the body (`skim`) when it can be sure of the answer, by serde_json
/// ([`envelope_by_serde`]) otherwise; both give the same envelope for every body the skim reads.
pub fn envelope(event_key: Option<&str>, body: &[u8]) -> Result<Envelope, PayloadError> {
    envelope_by_skim(event_key, body).unwrap_or_else(|| envelope_by_serde(event_key, body))
}

/// [`envelope`]'s fast path alone: `None` when it declines the body (see the `skim` module).
pub fn envelope_by_skim(
    event_key: Option<&str>,
    body: &[u8],
) -> Option<Result<Envelope, PayloadError>> {
    let found = crate::skim::envelope(body)?;
    Some(select(
        event_key,
        found.target,
        found.repository,
        found.new,
        found.date,
    ))
}

/// [`envelope`] read by serde_json alone: the reference the fast path is checked against, and
/// what decides (and words the error) for every body the fast path declines.
pub fn envelope_by_serde(event_key: Option<&str>, body: &[u8]) -> Result<Envelope, PayloadError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        #[serde(default)]
        pull_request: Option<Target>,
        #[serde(default)]
        repository: Option<Repository>,
        #[serde(default)]
        new: Option<Repository>,
        #[serde(default, deserialize_with = "lenient_timestamp")]
        date: Option<Timestamp>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Target {
        to_ref: TargetRef,
    }
    #[derive(Deserialize)]
    struct TargetRef {
        repository: Repository,
    }
    let raw: Raw = serde_json::from_slice(body)?;
    select(
        event_key,
        raw.pull_request.map(|pr| pr.to_ref.repository),
        raw.repository,
        raw.new,
        raw.date,
    )
}

/// The ordering repository among a body's candidates, for `event_key`.
fn select(
    event_key: Option<&str>,
    target: Option<Repository>,
    repository: Option<Repository>,
    new: Option<Repository>,
    date: Option<Timestamp>,
) -> Result<Envelope, PayloadError> {
    let repository = if event_key.is_some_and(|key| !key.starts_with("pr:")) {
        repository.or(new).or(target)
    } else {
        target.or(repository).or(new)
    }
    .ok_or(PayloadError::NoRepository)?;
    Ok(Envelope { repository, date })
}

/// A missing `repository` / `pullRequest` is reported as such rather than as a shape error.
fn no_repository(err: PayloadError) -> PayloadError {
    match &err {
        PayloadError::Invalid(inner)
            if inner.is_data()
                && (inner.to_string().contains("missing field `repository`")
                    || inner.to_string().contains("missing field `pullRequest`")) =>
        {
            PayloadError::NoRepository
        }
        _ => err,
    }
}

/// The `event` label for an event key: known keys as they are, anything else `other`.
pub fn event_label(event_key: Option<&str>) -> &'static str {
    match event_key {
        Some(events::PING) => events::PING,
        Some(key) => events::HANDLED
            .iter()
            .find(|known| **known == key)
            .copied()
            .unwrap_or("other"),
        None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
    }

    fn pull_request(event_key: &str, name: &str) -> (PullRequestAction, PullRequestEvent) {
        match parse(event_key, &fixture(name)).expect("parse") {
            Some(Event::PullRequest(action, event)) => (action, *event),
            other => panic!("{name}: {other:?}"),
        }
    }

    /// A push with several changes: update, add (zero from-hash), delete (zero to-hash), tag.
    #[test]
    fn parses_push_with_several_changes() {
        let Some(Event::Push(push)) = parse(
            events::REFS_CHANGED,
            &fixture("repo_refs_changed_multi.json"),
        )
        .expect("parse") else {
            panic!("not a push")
        };
        assert_eq!(push.repository.full_name(), "INFRA/network");
        assert_eq!(push.actor.and_then(|a| a.login()).as_deref(), Some("alice"));
        let kinds: Vec<_> = push
            .changes
            .iter()
            .map(|c| {
                (
                    c.reference.short_name(),
                    c.reference.is_branch(),
                    c.change_kind(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("main".to_owned(), true, Some(ChangeKind::Update)),
                ("staging".to_owned(), true, Some(ChangeKind::Add)),
                ("old-experiment".to_owned(), true, Some(ChangeKind::Delete)),
                ("v1.4.0".to_owned(), false, Some(ChangeKind::Add)),
            ]
        );
        // The top-level date has a colon-less offset: 09:58:11+10:00 is 23:58:11 UTC the day before.
        let date = push.date.expect("date").0;
        assert_eq!(
            (date.day(), date.to_offset(time::UtcOffset::UTC).hour()),
            (26, 23)
        );
    }

    /// Every pull-request fixture parses to its action; the ordering repository is the target.
    #[test]
    fn parses_every_pull_request_event() {
        for (key, name, action) in [
            (
                events::PR_OPENED,
                "pr_opened.json",
                PullRequestAction::Opened,
            ),
            (
                events::PR_FROM_REF_UPDATED,
                "pr_from_ref_updated.json",
                PullRequestAction::SourceUpdated,
            ),
            (
                events::PR_MODIFIED,
                "pr_modified.json",
                PullRequestAction::Modified,
            ),
            (
                events::PR_APPROVED,
                "pr_reviewer_approved.json",
                PullRequestAction::Approved,
            ),
            (
                events::PR_UNAPPROVED,
                "pr_reviewer_unapproved.json",
                PullRequestAction::Unapproved,
            ),
            (
                events::PR_CHANGES_REQUESTED,
                "pr_reviewer_changes_requested.json",
                PullRequestAction::ChangesRequested,
            ),
            (
                events::PR_NEEDS_WORK,
                "pr_reviewer_changes_requested.json",
                PullRequestAction::ChangesRequested,
            ),
            (
                events::PR_MERGED,
                "pr_merged.json",
                PullRequestAction::Merged,
            ),
            (
                events::PR_COMMENT_ADDED,
                "pr_comment_added.json",
                PullRequestAction::CommentAdded,
            ),
        ] {
            let (parsed, event) = pull_request(key, name);
            assert_eq!(parsed, action, "{name}");
            assert_eq!(event.pull_request.id, 42);
            assert_eq!(
                event.pull_request.to_ref.repository.full_name(),
                "INFRA/network"
            );
        }
        let (_, modified) = pull_request(events::PR_MODIFIED, "pr_modified.json");
        assert_eq!(
            modified.previous_target.map(|t| t.branch()).as_deref(),
            Some("main")
        );
        assert_eq!(modified.pull_request.to_ref.branch(), "release");
        let (_, updated) = pull_request(events::PR_FROM_REF_UPDATED, "pr_from_ref_updated.json");
        assert_eq!(
            updated.pull_request.from_ref.latest_commit,
            "0c7a8e8f6f3d4b1a9e2d7c6b5a4f3e2d1c0b9a87"
        );
        let (_, comment) = pull_request(events::PR_COMMENT_ADDED, "pr_comment_added.json");
        assert_eq!(
            comment.comment.map(|c| c.text).as_deref(),
            Some("/inlet preview")
        );
    }

    /// Newer Bitbucket sends ISO-8601 dates; a PR from a fork has another source repository.
    #[test]
    fn iso_dates_and_forks() {
        let (_, event) = pull_request(events::PR_OPENED, "pr_opened_fork_iso_dates.json");
        let pr = event.pull_request;
        assert_eq!(pr.from_ref.repository.full_name(), "~BOB/network");
        let event_repository = parse(events::PR_OPENED, &fixture("pr_opened_fork_iso_dates.json"))
            .expect("parse")
            .expect("handled");
        assert_eq!(event_repository.repository().full_name(), "INFRA/network");
        let created = pr.created_date.expect("created").0;
        let updated = pr.updated_date.expect("updated").0;
        assert_eq!(created.millisecond(), 796);
        assert_eq!(created.to_offset(time::UtcOffset::UTC).hour(), 23);
        assert_eq!(updated.to_offset(time::UtcOffset::UTC).hour(), 23);
        let (_, millis) = pull_request(events::PR_OPENED, "pr_opened.json");
        assert_eq!(
            millis
                .pull_request
                .created_date
                .map(|t| t.0.unix_timestamp()),
            Some(1_764_140_291)
        );
    }

    /// Timestamps in every form Bitbucket uses, and garbage refused.
    #[test]
    fn timestamps() {
        for text in [
            "2026-11-26T09:58:11+1000",
            "2026-11-26T09:58:11+10:00",
            "2026-11-25T23:58:11Z",
            "2026-11-25T23:58:11.000+0000",
        ] {
            let at = parse_timestamp(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(at.unix_timestamp(), 1_795_651_091, "{text}");
        }
        for text in ["", "yesterday", "2026-11-25", "+1000"] {
            assert_eq!(parse_timestamp(text), None, "{text}");
        }
    }

    /// Unhandled keys are not parsed; malformed bodies are errors of the right kind.
    #[test]
    fn malformed_bodies() {
        assert!(matches!(parse("repo:forked", b"not even json"), Ok(None)));
        let no_repository = br#"{"eventKey": "repo:refs_changed", "changes": []}"#;
        assert!(matches!(
            parse(events::REFS_CHANGED, no_repository),
            Err(PayloadError::NoRepository)
        ));
        assert!(matches!(
            parse(events::PR_OPENED, br#"{"actor": {"name": "x"}}"#),
            Err(PayloadError::NoRepository)
        ));
        for body in [
            &b""[..],
            b"{\"repository\": ",
            br#"{"repository": {"slug": 5, "project": {"key": "P"}}}"#,
            br#"{"repository": {"slug": "r", "project": {"key": "P"}}, "changes": "nope"}"#,
        ] {
            assert!(
                matches!(
                    parse(events::REFS_CHANGED, body),
                    Err(PayloadError::Invalid(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // A comment event without its comment is malformed.
        let mut no_comment: serde_json::Value =
            serde_json::from_slice(&fixture("pr_comment_added.json")).expect("json");
        no_comment.as_object_mut().map(|o| o.remove("comment"));
        let body = serde_json::to_vec(&no_comment).expect("json");
        assert!(matches!(
            parse(events::PR_COMMENT_ADDED, &body),
            Err(PayloadError::Invalid(_))
        ));
    }

    /// Untrusted timestamps never panic: multi-byte text where the offset would be, empty text,
    /// offsets without digits. An unreadable date is read as absent: the event still routes.
    #[test]
    fn hostile_timestamps_are_errors() {
        for date in [
            "€€",
            "€",
            "2026-01-01T00:00:00€€",
            "",
            "+",
            "x+10:0",
            "2026€+1000",
        ] {
            assert_eq!(parse_timestamp(date), None, "{date}");
            let body = format!(
                r#"{{"date": {}, "repository": {{"slug": "s", "project": {{"key": "P"}}}}}}"#,
                serde_json::Value::from(date)
            );
            match parse(events::REFS_CHANGED, body.as_bytes()) {
                Ok(Some(Event::Push(push))) => assert_eq!(push.date, None, "{date}"),
                other => panic!("{date}: {other:?}"),
            }
        }
        assert!(parse_timestamp("2026-01-01T10:00:00+1000").is_some());
    }

    /// A push body that also carries a `pullRequest` is keyed by the pushed repository (the one
    /// the router routes it on); a pull-request event by its target repository.
    #[test]
    fn envelope_follows_the_event_key() {
        let body = br#"{"repository": {"slug": "pushed", "project": {"key": "P"}},
            "pullRequest": {"toRef": {"repository": {"slug": "target", "project": {"key": "P"}}}}}"#;
        let slug = |key| envelope(Some(key), body).expect("envelope").repository.slug;
        assert_eq!(slug(events::REFS_CHANGED), "pushed");
        assert_eq!(slug("repo:modified"), "pushed");
        assert_eq!(slug(events::PR_OPENED), "target");
        assert_eq!(
            envelope(None, body).expect("envelope").repository.slug,
            "target"
        );
    }

    /// Event labels are bounded: unknown keys collapse to `other`.
    #[test]
    fn event_labels_are_bounded() {
        assert_eq!(event_label(Some("repo:refs_changed")), "repo:refs_changed");
        assert_eq!(event_label(Some("diagnostics:ping")), "diagnostics:ping");
        assert_eq!(event_label(Some("repo:forked")), "other");
        assert_eq!(event_label(Some("x\ny")), "other");
        assert_eq!(event_label(None), "none");
    }
}
