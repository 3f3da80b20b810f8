//! `/stacks` and manual runs.
//!
//! Readers of a stack's space see it; admins create, change and delete it; writers trigger runs.

use crate::access::Principal;
use crate::commands::{ControlCommand, StackPatch, StackSpec};
use crate::domain::{IntegrationStatus, ROOT_SPACE, Role, Stack};
use crate::registry::Registry;
use http::StatusCode;
use inlet_core::records::{Commit, StackTrigger};

use super::views::{CreateStack, RunAccepted, StackList, StackView, TriggerRun, UpdateStack};
use super::{Admin, Answer, Named, SEND_DEADLINE, generate_id, require};
use crate::admin::error::{ApiError, empty, json};

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("stack_not_found", format!("no stack with id `{id}`"))
}

/// The stack if `principal` may read it (404 otherwise).
pub(super) fn visible<'r>(
    principal: &Principal,
    registry: &'r Registry,
    id: &str,
) -> Result<&'r Stack, ApiError> {
    registry
        .stack(id)
        .filter(|s| principal.can_read(registry, &s.space_id))
        .ok_or_else(|| not_found(id))
}

/// The stack `id` when the caller holds `role` on its space (404 when it cannot even read it,
/// 403 when it may read but not do `action`).
fn authorized<'r>(
    principal: &Principal,
    registry: &'r Registry,
    id: &str,
    role: Role,
    action: &str,
) -> Result<&'r Stack, ApiError> {
    let stack = visible(principal, registry, id)?;
    require(
        principal,
        registry,
        &stack.space_id,
        role,
        action,
        Named::InPath,
    )?;
    Ok(stack)
}

/// An integration the caller cannot see is reported as missing, not as unavailable.
fn check_integration_visible(
    principal: &Principal,
    registry: &Registry,
    name: &str,
) -> Result<(), ApiError> {
    match registry.integration(name) {
        Some(i) if !principal.can_see_integration(registry, i) => Err(ApiError::not_found(
            "integration_not_found",
            format!("integration: no integration named `{name}`"),
        )),
        _ => Ok(()),
    }
}

/// A manual run's commit: empty (the branch head) or 4–64 hex digits (an abbreviated or full
/// SHA-1 or SHA-256 commit id); anything else would travel to every run scheduler.
fn is_commit_or_empty(sha: &str) -> bool {
    sha.is_empty() || ((4..=64).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `refs/heads/main` → `main`; short names pass through.
pub(super) fn short_branch(branch: String) -> String {
    match branch.strip_prefix("refs/heads/") {
        Some(short) => short.to_owned(),
        None => branch,
    }
}

impl Admin {
    pub(super) fn list_stacks(&self, principal: &Principal) -> Answer {
        let registry = self.control.read();
        let stacks = registry
            .stacks()
            .filter(|s| principal.can_read(&registry, &s.space_id))
            .map(StackView::from)
            .collect();
        Ok(json(StatusCode::OK, &StackList { stacks }))
    }

    pub(super) fn get_stack(&self, principal: &Principal, id: &str) -> Answer {
        let registry = self.control.read();
        let stack = visible(principal, &registry, id)?;
        Ok(json(StatusCode::OK, &StackView::from(stack)))
    }

    pub(super) async fn create_stack(&self, principal: &Principal, body: CreateStack) -> Answer {
        let space_id = body.space_id.unwrap_or_else(|| ROOT_SPACE.to_owned());
        let integration = {
            let registry = self.control.read();
            require(
                principal,
                &registry,
                &space_id,
                Role::Admin,
                "creating a stack",
                Named::InField("space_id"),
            )?;
            let integration = match body.integration {
                Some(name) => name,
                None => registry
                    .default_integration()
                    .map(|i| i.name.clone())
                    .ok_or_else(|| {
                        ApiError::conflict(
                            "no_default_integration",
                            "integration: no default integration exists; name one",
                        )
                    })?,
            };
            check_integration_visible(principal, &registry, &integration)?;
            integration
        };
        let spec = StackSpec {
            id: body.id.unwrap_or_else(|| generate_id(&body.name)),
            name: body.name,
            space_id,
            integration,
            repository: body.repository,
            branch: short_branch(body.branch),
            project_root: body.project_root.unwrap_or_default(),
            additional_project_globs: body.additional_project_globs.unwrap_or_default(),
            labels: body.labels.unwrap_or_default(),
            disabled: body.disabled.unwrap_or(false),
        };
        let id = spec.id.clone();
        self.apply(principal, ControlCommand::CreateStack { stack: spec })
            .await?;
        self.get_stack(principal, &id).map(|mut response| {
            *response.status_mut() = StatusCode::CREATED;
            response
        })
    }

    pub(super) async fn update_stack(
        &self,
        principal: &Principal,
        id: &str,
        body: UpdateStack,
    ) -> Answer {
        {
            let registry = self.control.read();
            authorized(principal, &registry, id, Role::Admin, "changing a stack")?;
            if let Some(name) = &body.integration {
                check_integration_visible(principal, &registry, name)?;
            }
        }
        let patch = StackPatch {
            name: body.name,
            integration: body.integration,
            repository: body.repository,
            branch: body.branch.map(short_branch),
            project_root: body.project_root,
            additional_project_globs: body.additional_project_globs,
            labels: body.labels,
            disabled: body.disabled,
        };
        self.apply(
            principal,
            ControlCommand::UpdateStack {
                id: id.to_owned(),
                patch,
            },
        )
        .await?;
        self.get_stack(principal, id)
    }

    pub(super) async fn delete_stack(&self, principal: &Principal, id: &str) -> Answer {
        {
            let registry = self.control.read();
            authorized(principal, &registry, id, Role::Admin, "deleting a stack")?;
        }
        self.apply(principal, ControlCommand::DeleteStack { id: id.to_owned() })
            .await?;
        Ok(empty(StatusCode::NO_CONTENT))
    }

    /// A manual tracked run through the workers, who decide on the stack's state when they get
    /// it: a stack detached in between still gets a `blocked` decision.
    pub(super) async fn trigger_run(
        &self,
        principal: &Principal,
        id: &str,
        body: TriggerRun,
    ) -> Answer {
        let sha = body.sha.unwrap_or_default();
        if !is_commit_or_empty(&sha) {
            return Err(ApiError::invalid(
                "sha",
                "give 4 to 64 hexadecimal digits of a commit, or leave it empty for the branch head",
            ));
        }
        let trigger = {
            let registry = self.control.read();
            let stack = authorized(principal, &registry, id, Role::Writer, "triggering a run")?;
            if stack.integration_status == IntegrationStatus::Detached {
                return Err(ApiError::conflict(
                    "stack_detached",
                    format!(
                        "integration `{}` of this stack was deleted; attach an available \
                         integration before triggering runs",
                        stack.integration
                    ),
                ));
            }
            StackTrigger::manual(
                &stack.id,
                &stack.integration,
                Commit {
                    sha,
                    branch: stack.branch.to_string(),
                    repository: stack.repository.to_string(),
                },
                principal.actor(),
                self.control.applied_offset(),
            )
        };
        let delivery = self
            .deps
            .outputs
            .send(
                &trigger.output(&self.deps.triggers_topic, None),
                SEND_DEADLINE,
            )
            .await;
        if let Err(err) = delivery {
            tracing::warn!(error = %err, stack_id = %trigger.stack_id, "manual trigger not stored");
            return Err(ApiError::unavailable(
                "broker_unavailable",
                "the run could not be queued; retry shortly",
                5,
            ));
        }
        tracing::info!(stack_id = %trigger.stack_id, trigger_id = %trigger.trigger_id, actor = principal.actor(), "manual run triggered");
        Ok(json(
            StatusCode::ACCEPTED,
            &RunAccepted {
                trigger_id: trigger.trigger_id,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full ref names are shortened to branch names.
    #[test]
    fn branches_are_short() {
        assert_eq!(short_branch("refs/heads/main".to_owned()), "main");
        assert_eq!(short_branch("dev".to_owned()), "dev");
    }
}
