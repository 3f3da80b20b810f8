//! The trigger rules (DESIGN §5), as pure functions of an event and the registry.

use inlet_bitbucket::{Change, ChangeKind, PullRequestAction, PullRequestEvent, RefsChanged};
use inlet_control::domain::Stack;
use inlet_control::registry::Registry;
use inlet_core::records::{Cause, Commit, Delivery, RunType, StackTrigger, TriggerKind};

/// Why part of an event produced no trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoredReason {
    /// No stack uses this integration and repository.
    NoStackOnRepository,
    /// A branch was deleted.
    BranchDeleted,
    /// A tag was pushed.
    TagPush,
    /// A change type Bitbucket may add later.
    UnknownChange,
    /// No stack on the repository tracks the pull request's target branch.
    NoStackOnTarget,
    /// Approvals, unapprovals, change requests and merges do not trigger runs (a merge's push does).
    EventNotTriggering,
    /// `pr:modified` that did not change the target branch.
    TargetUnchanged,
    /// A comment that is not an `/inlet preview` command.
    CommentNotCommand,
    /// An event key inlet does not handle.
    EventNotHandled,
}

impl IgnoredReason {
    /// Stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoredReason::NoStackOnRepository => "no_stack_on_repository",
            IgnoredReason::BranchDeleted => "branch_deleted",
            IgnoredReason::TagPush => "tag_push",
            IgnoredReason::UnknownChange => "unknown_change",
            IgnoredReason::NoStackOnTarget => "no_stack_on_target_branch",
            IgnoredReason::EventNotTriggering => "event_not_triggering",
            IgnoredReason::TargetUnchanged => "target_branch_unchanged",
            IgnoredReason::CommentNotCommand => "comment_not_a_command",
            IgnoredReason::EventNotHandled => "event_not_handled",
        }
    }
}

/// How to learn which files a change touched (DESIGN §5.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// A push of a branch: `compare/changes?from={to_hash}&to={from_hash}`; `to` is `None` for a
    /// new branch (compared against the default branch).
    Compare {
        /// The pushed commit.
        from: String,
        /// The commit the branch was at before, unless it is new.
        to: Option<String>,
    },
    /// A pull request: `pull-requests/{id}/changes`, as of its latest source commit.
    PullRequest {
        /// Its id in the target repository.
        id: u64,
        /// Its latest source commit (what the answer depends on; part of the cache key).
        at: String,
    },
}

/// The triggers of one change that path filters apply to.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The ref or pull request, for the delivery log.
    pub reference: String,
    /// The repository the lookup goes to (`PROJECT/repo`).
    pub repository: String,
    /// What to ask Bitbucket.
    pub lookup: Lookup,
    /// Which of [`Routed::triggers`] the change produced.
    pub triggers: std::ops::Range<usize>,
}

/// The triggers of one event and what was ignored, with the ref it concerned.
#[derive(Debug, Default)]
pub struct Routed {
    /// One per (stack, reason).
    pub triggers: Vec<StackTrigger>,
    /// The changes the triggers came from, for path filtering; `/inlet preview` comments have
    /// none (they are never filtered).
    pub scopes: Vec<Scope>,
    /// Ignored parts: (ref, reason).
    pub ignored: Vec<(String, IgnoredReason)>,
}

/// A commit hash of all zeros: the "before" of a new branch.
fn is_zero(hash: &str) -> bool {
    !hash.is_empty() && hash.bytes().all(|b| b == b'0')
}

/// `repo:refs_changed`: every BRANCH change of type ADD or UPDATE triggers every stack on the
/// repository — tracked where the branch is the stack's tracked branch, proposed elsewhere — at the
/// change's `toHash`. Deletions and tags are ignored with a reason. Stacks are matched by the
/// integration name the webhook arrived under, attached or not, so detached stacks get a decision
/// that says why nothing ran.
pub fn route_push(registry: &Registry, delivery: &Delivery, push: &RefsChanged) -> Routed {
    let mut routed = Routed::default();
    let repository = push.repository.full_name();
    let actor = push.actor.as_ref().and_then(|a| a.login());
    for change in &push.changes {
        let reference = &change.reference;
        if let Some(reason) = not_a_branch_update(change) {
            routed.ignored.push((reference.id.clone(), reason));
            continue;
        }
        let branch = reference.short_name();
        let before = routed.triggers.len();
        for stack in registry.stacks_on_repository(&delivery.integration, &repository) {
            let run_type = if stack.branch == branch {
                RunType::Tracked
            } else {
                RunType::Proposed
            };
            let commit = Commit {
                sha: change.to_hash.clone(),
                branch: branch.clone(),
                repository: repository.clone(),
            };
            let cause = Cause {
                kind: TriggerKind::Push,
                pull_request_id: None,
                actor: actor.clone(),
            };
            let id_parts: [&str; 2] = [&reference.id, &change.to_hash];
            routed.triggers.push(StackTrigger::new(
                delivery, &stack.id, run_type, commit, cause, &id_parts,
            ));
        }
        if routed.triggers.len() == before {
            routed
                .ignored
                .push((reference.id.clone(), IgnoredReason::NoStackOnRepository));
        } else {
            routed.scopes.push(Scope {
                reference: reference.id.clone(),
                repository: repository.clone(),
                lookup: compare_lookup(change),
                triggers: before..routed.triggers.len(),
            });
        }
    }
    routed
}

/// Why a ref change of a push triggers nothing, if it does not: tags, deletions, unknown types.
fn not_a_branch_update(change: &Change) -> Option<IgnoredReason> {
    if !change.reference.is_branch() {
        return Some(IgnoredReason::TagPush);
    }
    match change.change_kind() {
        Some(ChangeKind::Add | ChangeKind::Update) => None,
        Some(ChangeKind::Delete) => Some(IgnoredReason::BranchDeleted),
        None => Some(IgnoredReason::UnknownChange),
    }
}

/// The changed-files lookup of a branch change: from the pushed commit to the old one, or
/// against the default branch for a new branch.
fn compare_lookup(change: &Change) -> Lookup {
    Lookup::Compare {
        from: change.to_hash.clone(),
        to: (!is_zero(&change.from_hash)).then(|| change.from_hash.clone()),
    }
}

/// The command a pull-request comment must start with to request proposed runs.
pub const PREVIEW_COMMAND: &str = "/inlet preview";

/// Pull-request events (DESIGN §5):
/// - `pr:opened`, `pr:from_ref_updated`: proposed runs, at the source's latest commit, for the
///   stacks on the target repository that track the target branch;
/// - `pr:modified`: the same, only when the target branch changed;
/// - approvals, unapprovals, change requests, merges: nothing (the merge's push triggers the
///   tracked run), recorded with a reason;
/// - `pr:comment:added` starting with `/inlet preview`: proposed runs for the stacks tracking the
///   target, or for the stacks named after the command (`/inlet preview stack-a stack-b`), never
///   deduplicated; other comments are ignored.
pub fn route_pull_request(
    registry: &Registry,
    delivery: &Delivery,
    action: PullRequestAction,
    event: &PullRequestEvent,
) -> Routed {
    let pr = &event.pull_request;
    let target = pr.to_ref.branch();
    let reference = format!("pull-request/{}", pr.id);
    let ignore = |reason| Routed {
        ignored: vec![(reference.clone(), reason)],
        ..Routed::default()
    };
    let (kind, named, salt) = match intent(action, event, &target) {
        Ok(intent) => intent,
        Err(reason) => return ignore(reason),
    };
    let repository = pr.to_ref.repository.full_name();
    let matches = |stack: &Stack| {
        if named.is_empty() {
            stack.branch == target
        } else {
            named.contains(&stack.id)
        }
    };
    let cause = Cause {
        kind,
        pull_request_id: Some(pr.id),
        actor: event.actor.as_ref().and_then(|a| a.login()),
    };
    let triggers: Vec<StackTrigger> = registry
        .stacks_on_repository(&delivery.integration, &repository)
        .filter(|stack| matches(stack))
        .map(|stack| proposed_at_source(delivery, &stack.id, event, &cause, &[&reference, &salt]))
        .collect();
    if triggers.is_empty() {
        return ignore(IgnoredReason::NoStackOnTarget);
    }
    let scopes = match kind {
        TriggerKind::PullRequest => vec![Scope {
            reference: reference.clone(),
            repository,
            lookup: Lookup::PullRequest {
                id: pr.id,
                at: pr.from_ref.latest_commit.clone(),
            },
            triggers: 0..triggers.len(),
        }],
        _ => Vec::new(),
    };
    Routed {
        triggers,
        scopes,
        ignored: Vec::new(),
    }
}

/// A proposed run of `stack_id` at the pull request's latest source commit; `id_parts` are the
/// pull request's reference and the comment id (empty for other events).
fn proposed_at_source(
    delivery: &Delivery,
    stack_id: &str,
    event: &PullRequestEvent,
    cause: &Cause,
    id_parts: &[&str; 2],
) -> StackTrigger {
    let source = &event.pull_request.from_ref;
    let commit = Commit {
        sha: source.latest_commit.clone(),
        branch: source.branch(),
        repository: source.repository.full_name(),
    };
    // The pull request, its commit, and the comment id of an `/inlet preview`.
    let parts: [&str; 3] = [id_parts[0], &source.latest_commit, id_parts[1]];
    StackTrigger::new(
        delivery,
        stack_id,
        RunType::Proposed,
        commit,
        cause.clone(),
        &parts,
    )
}

/// What a pull-request event asks for: the trigger kind, the stacks named by an `/inlet preview`
/// command (empty: those tracking the target), and what makes a comment's trigger unique; or why
/// it asks for nothing.
fn intent(
    action: PullRequestAction,
    event: &PullRequestEvent,
    target: &str,
) -> Result<(TriggerKind, Vec<String>, String), IgnoredReason> {
    match action {
        PullRequestAction::Opened | PullRequestAction::SourceUpdated => {
            Ok((TriggerKind::PullRequest, Vec::new(), String::new()))
        }
        PullRequestAction::Modified => match &event.previous_target {
            Some(previous) if previous.branch() != target => {
                Ok((TriggerKind::PullRequest, Vec::new(), String::new()))
            }
            _ => Err(IgnoredReason::TargetUnchanged),
        },
        PullRequestAction::Approved
        | PullRequestAction::Unapproved
        | PullRequestAction::ChangesRequested
        | PullRequestAction::Merged => Err(IgnoredReason::EventNotTriggering),
        PullRequestAction::CommentAdded => {
            let comment = event
                .comment
                .as_ref()
                .ok_or(IgnoredReason::CommentNotCommand)?;
            let rest = comment
                .text
                .trim_start()
                .strip_prefix(PREVIEW_COMMAND)
                .ok_or(IgnoredReason::CommentNotCommand)?;
            // `/inlet previewer` is not the command.
            if rest.starts_with(|c: char| !c.is_whitespace()) {
                return Err(IgnoredReason::CommentNotCommand);
            }
            let first_line = rest.lines().next().unwrap_or_default();
            let named = first_line.split_whitespace().map(str::to_owned).collect();
            let salt = comment.id.map(|id| id.to_string()).unwrap_or_default();
            Ok((TriggerKind::Comment, named, salt))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inlet_bitbucket::parse_refs_changed;
    use inlet_control::commands::ControlCommand;
    use inlet_control::testing;

    fn registry() -> Registry {
        let mut commands = vec![ControlCommand::CreateIntegration {
            integration: testing::integration("bb", "i1", "root", true, "secret"),
        }];
        for (id, branch, repo) in [
            ("prod", "main", "INFRA/network"),
            ("staging", "staging", "INFRA/network"),
            ("other", "main", "INFRA/dns"),
        ] {
            commands.push(ControlCommand::CreateStack {
                stack: testing::stack(id, "bb", repo, branch),
            });
        }
        testing::registry(commands)
    }

    fn delivery(integration: &str) -> Delivery {
        Delivery {
            delivery_id: "d1".to_owned(),
            event_key: "repo:refs_changed".to_owned(),
            integration: integration.to_owned(),
            received_at: "2026-01-01T00:00:00Z".to_owned(),
            control_offset: 0,
        }
    }

    fn push(changes: &str) -> RefsChanged {
        let body = format!(
            r#"{{"actor": {{"name": "alice"}},
                "repository": {{"slug": "network", "project": {{"key": "INFRA"}}}},
                "changes": [{changes}]}}"#
        );
        parse_refs_changed(body.as_bytes()).expect("parse")
    }

    const MAIN_UPDATE: &str = r#"{"ref": {"id": "refs/heads/main", "displayId": "main", "type": "BRANCH"},
        "fromHash": "1111111111111111111111111111111111111111",
        "toHash": "2222222222222222222222222222222222222222", "type": "UPDATE"}"#;

    /// A push to main requests a tracked run for the stack on main and a proposed one for the other
    /// stack on the repository; stacks on other repositories are untouched.
    #[test]
    fn push_to_tracked_branch() {
        let routed = route_push(&registry(), &delivery("bb"), &push(MAIN_UPDATE));
        let got: Vec<_> = routed
            .triggers
            .iter()
            .map(|t| (t.stack_id.as_str(), t.run_type, t.commit.sha.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "prod",
                    RunType::Tracked,
                    "2222222222222222222222222222222222222222"
                ),
                (
                    "staging",
                    RunType::Proposed,
                    "2222222222222222222222222222222222222222"
                ),
            ]
        );
        assert_eq!(routed.triggers[0].trigger.actor.as_deref(), Some("alice"));
        assert_eq!(routed.triggers[0].commit.repository, "INFRA/network");
        assert!(routed.ignored.is_empty());
    }

    /// Deleted branches and tags are ignored with their reasons; ADD counts like UPDATE.
    #[test]
    fn deletes_and_tags_are_ignored() {
        let changes = r#"
            {"ref": {"id": "refs/heads/old", "displayId": "old", "type": "BRANCH"},
             "fromHash": "1111111111111111111111111111111111111111",
             "toHash": "0000000000000000000000000000000000000000", "type": "DELETE"},
            {"ref": {"id": "refs/tags/v1", "displayId": "v1", "type": "TAG"},
             "fromHash": "0000000000000000000000000000000000000000",
             "toHash": "3333333333333333333333333333333333333333", "type": "ADD"},
            {"ref": {"id": "refs/heads/staging", "displayId": "staging", "type": "BRANCH"},
             "fromHash": "0000000000000000000000000000000000000000",
             "toHash": "4444444444444444444444444444444444444444", "type": "ADD"}"#;
        let routed = route_push(&registry(), &delivery("bb"), &push(changes));
        assert_eq!(
            routed.ignored,
            vec![
                ("refs/heads/old".to_owned(), IgnoredReason::BranchDeleted),
                ("refs/tags/v1".to_owned(), IgnoredReason::TagPush),
            ]
        );
        let got: Vec<_> = routed
            .triggers
            .iter()
            .map(|t| (t.stack_id.as_str(), t.run_type))
            .collect();
        assert_eq!(
            got,
            vec![("prod", RunType::Proposed), ("staging", RunType::Tracked)]
        );
    }

    /// Another integration's name matches no stack, and says so.
    #[test]
    fn other_integration_matches_nothing() {
        let routed = route_push(&registry(), &delivery("other"), &push(MAIN_UPDATE));
        assert!(routed.triggers.is_empty());
        assert_eq!(
            routed.ignored,
            vec![(
                "refs/heads/main".to_owned(),
                IgnoredReason::NoStackOnRepository
            )]
        );
    }

    /// Routing the same delivery twice yields the same trigger ids.
    #[test]
    fn trigger_ids_are_deterministic() {
        let a = route_push(&registry(), &delivery("bb"), &push(MAIN_UPDATE));
        let b = route_push(&registry(), &delivery("bb"), &push(MAIN_UPDATE));
        let ids = |r: &Routed| {
            r.triggers
                .iter()
                .map(|t| t.trigger_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
        assert_ne!(ids(&a)[0], ids(&a)[1]);
    }

    fn pull_request(action: PullRequestAction, fixture: &str, key: &str) -> Routed {
        let path = format!("{}/../tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
        let body = std::fs::read(path).expect("fixture");
        let Some(inlet_bitbucket::Event::PullRequest(_, event)) =
            inlet_bitbucket::parse(key, &body).expect("parse")
        else {
            panic!("not a pull request")
        };
        route_pull_request(&registry(), &delivery("bb"), action, &event)
    }

    /// Opening a PR into main proposes a run for the stack tracking main, at the source commit.
    #[test]
    fn pr_opened_proposes_for_target_branch() {
        let routed = pull_request(PullRequestAction::Opened, "pr_opened.json", "pr:opened");
        let got: Vec<_> = routed
            .triggers
            .iter()
            .map(|t| {
                (
                    t.stack_id.as_str(),
                    t.run_type,
                    t.commit.sha.as_str(),
                    t.trigger.kind,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![(
                "prod",
                RunType::Proposed,
                "ef8755f06ee4b28c96a847a95cb8ec8ed6ddd1ca",
                TriggerKind::PullRequest
            )]
        );
        assert_eq!(routed.triggers[0].trigger.pull_request_id, Some(42));
        assert_eq!(routed.triggers[0].commit.branch, "feature/vpc-peering");
    }

    /// `pr:modified` to a new target proposes for stacks tracking the new target; here none does.
    #[test]
    fn pr_modified_only_when_target_changes() {
        let routed = pull_request(
            PullRequestAction::Modified,
            "pr_modified.json",
            "pr:modified",
        );
        assert!(routed.triggers.is_empty());
        assert_eq!(routed.ignored[0].1, IgnoredReason::NoStackOnTarget);
    }

    /// Approvals and merges are recorded, not triggered.
    #[test]
    fn approvals_and_merges_do_not_trigger() {
        for (action, fixture, key) in [
            (
                PullRequestAction::Approved,
                "pr_reviewer_approved.json",
                "pr:reviewer:approved",
            ),
            (PullRequestAction::Merged, "pr_merged.json", "pr:merged"),
        ] {
            let routed = pull_request(action, fixture, key);
            assert!(routed.triggers.is_empty());
            assert_eq!(routed.ignored[0].1, IgnoredReason::EventNotTriggering);
        }
    }

    /// `/inlet preview` proposes for the target's stacks; named stacks are honoured.
    #[test]
    fn preview_comment() {
        let routed = pull_request(
            PullRequestAction::CommentAdded,
            "pr_comment_added.json",
            "pr:comment:added",
        );
        let ids: Vec<_> = routed
            .triggers
            .iter()
            .map(|t| t.stack_id.as_str())
            .collect();
        assert_eq!(ids, vec!["prod"]);
        assert_eq!(routed.triggers[0].trigger.kind, TriggerKind::Comment);
    }
}
