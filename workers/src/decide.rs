//! The decision for one trigger, from the stack's current state.

use inlet_control::domain::IntegrationStatus;
use inlet_control::registry::Registry;
use inlet_core::clock::now_rfc3339;
use inlet_core::records::{
    BlockedCode, BlockedReason, RUN_SCHEMA, RunDecision, RunStatus, StackTrigger, TriggerKind,
    derive_id, vcs_run_id,
};

/// Why a trigger produced no decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoDecision {
    /// The stack was deleted after the trigger was emitted.
    StackDeleted,
}

/// Decides whether the run `trigger` asks for goes ahead.
///
/// VCS-triggered runs get an id derived from (stack, commit, run type), so the same commit reached
/// through a push and a pull-request event is one run; manual and comment runs are derived from
/// their trigger id, as they are never deduplicated.
pub fn decide(registry: &Registry, trigger: &StackTrigger) -> Result<RunDecision, NoDecision> {
    let stack = registry
        .stack(&trigger.stack_id)
        .ok_or(NoDecision::StackDeleted)?;
    let run_id = match trigger.trigger.kind {
        TriggerKind::Push | TriggerKind::PullRequest => {
            vcs_run_id(&stack.id, &trigger.commit.sha, trigger.run_type)
        }
        TriggerKind::Comment | TriggerKind::Manual => derive_id("run", &[&trigger.trigger_id]),
    };
    let blocked_reason = if stack.integration_status == IntegrationStatus::Detached {
        Some(BlockedReason {
            code: BlockedCode::IntegrationDetached,
            message: format!(
                "integration `{}` was deleted; attach an available integration to the stack to \
                 run it again",
                stack.integration
            ),
        })
    } else if stack.disabled {
        Some(BlockedReason {
            code: BlockedCode::StackDisabled,
            message: "the stack is disabled".to_owned(),
        })
    } else {
        None
    };
    Ok(RunDecision {
        schema: RUN_SCHEMA.to_owned(),
        run_id,
        stack_id: stack.id.clone(),
        space_id: stack.space_id.to_string(),
        status: if blocked_reason.is_some() {
            RunStatus::Blocked
        } else {
            RunStatus::Requested
        },
        run_type: trigger.run_type,
        commit: trigger.commit.clone(),
        trigger: trigger.trigger.clone(),
        blocked_reason,
        decided_at: now_rfc3339(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use inlet_control::commands::{ControlCommand, StackPatch};
    use inlet_control::testing::{self, apply};
    use inlet_core::records::{Commit, RunType, TRIGGER_SCHEMA, TriggerSource};

    fn registry() -> Registry {
        testing::registry([
            ControlCommand::CreateIntegration {
                integration: testing::integration("bb", "i1", "root", true, "secret"),
            },
            ControlCommand::CreateStack {
                stack: testing::stack("prod", "bb", "INFRA/network", "main"),
            },
        ])
    }

    fn trigger(kind: TriggerKind, trigger_id: &str) -> StackTrigger {
        StackTrigger {
            schema: TRIGGER_SCHEMA.to_owned(),
            trigger_id: trigger_id.to_owned(),
            stack_id: "prod".to_owned(),
            integration: "bb".to_owned(),
            run_type: RunType::Tracked,
            commit: Commit {
                sha: "abc".to_owned(),
                branch: "main".to_owned(),
                repository: "INFRA/network".to_owned(),
            },
            trigger: TriggerSource {
                kind,
                delivery_id: "d1".to_owned(),
                event_key: "repo:refs_changed".to_owned(),
                pull_request_id: None,
                actor: None,
                recovered: false,
            },
            received_at: "2026-01-01T00:00:00Z".to_owned(),
            control_offset: 0,
        }
    }

    /// An attached, enabled stack gets a requested run whose id depends only on stack, commit and
    /// run type.
    #[test]
    fn attached_stack_is_requested() {
        let registry = registry();
        let a = decide(&registry, &trigger(TriggerKind::Push, "t1")).expect("decision");
        let b = decide(&registry, &trigger(TriggerKind::PullRequest, "t2")).expect("decision");
        assert_eq!(a.status, RunStatus::Requested);
        assert_eq!(a.blocked_reason, None);
        assert_eq!(a.run_id, vcs_run_id("prod", "abc", RunType::Tracked));
        assert_eq!(a.run_id, b.run_id);
        assert_eq!(a.space_id, "root");
    }

    /// Manual runs are never merged with each other.
    #[test]
    fn manual_runs_have_their_own_ids() {
        let registry = registry();
        let a = decide(&registry, &trigger(TriggerKind::Manual, "m1")).expect("decision");
        let b = decide(&registry, &trigger(TriggerKind::Manual, "m2")).expect("decision");
        assert_ne!(a.run_id, b.run_id);
    }

    /// A stack whose integration was deleted is blocked with `integration_detached`.
    #[test]
    fn detached_stack_is_blocked() {
        let mut registry = registry();
        apply(
            &mut registry,
            ControlCommand::DeleteIntegration {
                name: "bb".to_owned(),
            },
        );
        for kind in [TriggerKind::Push, TriggerKind::Manual] {
            // A manual run accepted before the deletion is blocked too.
            let decision = decide(&registry, &trigger(kind, "t1")).expect("decision");
            assert_eq!(decision.status, RunStatus::Blocked);
            assert_eq!(
                decision.blocked_reason.map(|r| r.code.as_str()),
                Some("integration_detached")
            );
        }
    }

    /// A disabled stack is blocked with `stack_disabled`; a deleted one gets no decision.
    #[test]
    fn disabled_and_deleted_stacks() {
        let mut registry = registry();
        apply(
            &mut registry,
            ControlCommand::UpdateStack {
                id: "prod".to_owned(),
                patch: StackPatch {
                    disabled: Some(true),
                    ..StackPatch::default()
                },
            },
        );
        let decision = decide(&registry, &trigger(TriggerKind::Push, "t1")).expect("decision");
        assert_eq!(
            decision.blocked_reason.map(|r| r.code.as_str()),
            Some("stack_disabled")
        );
        apply(
            &mut registry,
            ControlCommand::DeleteStack {
                id: "prod".to_owned(),
            },
        );
        assert_eq!(
            decide(&registry, &trigger(TriggerKind::Push, "t1")),
            Err(NoDecision::StackDeleted)
        );
    }
}
