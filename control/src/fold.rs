//! The deterministic fold of `inlet.control` into a [`Registry`].
//!
//! Every process applies the same records in offset order through [`Registry::apply`]. A command is
//! validated against the state before it; an invalid one is rejected without changing anything, so
//! every replica reaches the same state without a leader. Nothing here reads a clock or a random
//! source: whatever must be generated travels inside the command.

use std::collections::BTreeMap;
use std::fmt;

use crate::commands::{
    ControlCommand, ControlRecord, IntegrationPatch, SpacePatch, StackPatch, StackSpec,
};
use crate::crypto::Sealed;
use crate::domain::MAX_OLDER_SECRETS;
use crate::domain::{
    ApiKey, Integration, IntegrationStatus, ManagedWebhook, PreviousSecret, ROOT_SPACE, Space,
    Stack,
};
use crate::registry::{ReconcileRequest, Registry};
use inlet_core::clock::parse_rfc3339;

/// Why a command was refused, mapped by the admin API to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// A field is invalid (400).
    Invalid,
    /// The command conflicts with existing state (409).
    Conflict,
    /// The entity it names does not exist (404).
    NotFound,
}

/// A refused command: a stable code, the field at fault if any, and a human sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Class of the refusal.
    pub kind: RejectionKind,
    /// Stable snake_case code.
    pub code: &'static str,
    /// The request field at fault, for validation errors.
    pub field: Option<&'static str>,
    /// Human-readable reason.
    pub message: String,
}

impl Rejection {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Rejection {
            kind: RejectionKind::Invalid,
            code: "invalid_field",
            field: Some(field),
            message: message.into(),
        }
    }

    fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Rejection {
            kind: RejectionKind::Conflict,
            code,
            field: None,
            message: message.into(),
        }
    }

    fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Rejection {
            kind: RejectionKind::NotFound,
            code,
            field: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What an accepted command did, beyond the obvious.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Stacks that became detached (integration deletion).
    pub detached_stacks: usize,
}

/// The result of folding one record.
pub type Outcome = Result<Applied, Rejection>;

impl Registry {
    /// Applies one control record. On rejection the registry is unchanged.
    pub fn apply(&mut self, record: &ControlRecord) -> Outcome {
        match &record.command {
            ControlCommand::CreateSpace { space } => self.create_space(space),
            ControlCommand::UpdateSpace { id, patch } => self.update_space(id, patch),
            ControlCommand::DeleteSpace { id } => self.delete_space(id),
            ControlCommand::UpdateIntegration { name, patch } => {
                self.update_integration(name, patch)
            }
            ControlCommand::RotateWebhookSecret {
                name,
                secret,
                previous_valid_until,
                integration_id,
            } => self.rotate_webhook_secret(
                name,
                secret,
                previous_valid_until,
                integration_id.as_deref(),
                &record.issued_at,
            ),
            ControlCommand::CreateIntegration { integration } => {
                self.create_integration(integration)
            }
            ControlCommand::DeleteIntegration { name } => self.delete_integration(name),
            ControlCommand::RecordBitbucketWebhook {
                name,
                integration_id,
                webhook,
            } => self.record_webhook(name, integration_id, webhook),
            ControlCommand::ForgetBitbucketWebhook { name, id } => self.forget_webhook(name, *id),
            ControlCommand::RequestReconcile {
                name,
                integration_id,
                reconcile_id,
            } => self.request_reconcile(name, integration_id, reconcile_id, &record.issued_at),
            ControlCommand::CreateStack { stack } => self.create_stack(stack, &record.command_id),
            ControlCommand::UpdateStack { id, patch } => self.update_stack(id, patch),
            ControlCommand::DeleteStack { id } => self.delete_stack(id),
            ControlCommand::CreateApiKey { key } => self.create_api_key(key),
            ControlCommand::DeleteApiKey { id } => self.delete_api_key(id),
        }
    }

    fn create_space(&mut self, space: &Space) -> Outcome {
        validate_id("id", &space.id)?;
        validate_name("name", &space.name)?;
        if self.spaces.contains_key(&space.id) {
            return Err(Rejection::conflict(
                "space_exists",
                format!("a space with id `{}` already exists", space.id),
            ));
        }
        let Some(parent) = space.parent_id.as_deref() else {
            return Err(Rejection::invalid(
                "parent_id",
                "a space needs a parent space",
            ));
        };
        if !self.spaces.contains_key(parent) {
            return Err(missing_space("parent_id", parent));
        }
        self.spaces.insert(space.id.clone(), space.clone());
        Ok(Applied::default())
    }

    fn update_space(&mut self, id: &str, patch: &SpacePatch) -> Outcome {
        let Some(space) = self.spaces.get(id) else {
            return Err(space_not_found(id));
        };
        let mut next = space.clone();
        if let Some(name) = &patch.name {
            validate_name("name", name)?;
            next.name = name.clone();
        }
        if let Some(inherit) = patch.inherit_entities {
            if id == ROOT_SPACE && inherit {
                return Err(Rejection::conflict(
                    "root_space",
                    "inherit_entities: the root space has no parent to inherit from",
                ));
            }
            next.inherit_entities = inherit;
        }
        self.spaces.insert(id.to_owned(), next);
        Ok(Applied::default())
    }

    fn delete_space(&mut self, id: &str) -> Outcome {
        if id == ROOT_SPACE {
            return Err(Rejection::conflict(
                "root_space",
                "the root space cannot be deleted",
            ));
        }
        if !self.spaces.contains_key(id) {
            return Err(space_not_found(id));
        }
        let children = self
            .spaces
            .values()
            .filter(|s| s.parent_id.as_deref() == Some(id))
            .count();
        let integrations = self
            .integrations
            .values()
            .filter(|i| i.space_id == id)
            .count();
        let stacks = self.stacks.values().filter(|s| s.space_id == id).count();
        // A key bound to a deleted space could no longer be listed or revoked by anyone, and would
        // regain its role if the id were reused.
        let keys = self
            .api_keys
            .values()
            .filter(|k| k.bindings.iter().any(|b| b.space_id == id))
            .count();
        if keys > 0 {
            // Counted, not named: the admin API names the ones the caller may list.
            return Err(Rejection::conflict(
                "space_has_api_keys",
                format!("{keys} API key(s) are bound to space `{id}`; revoke them first"),
            ));
        }
        if children + integrations + stacks > 0 {
            return Err(Rejection::conflict(
                "space_not_empty",
                format!(
                    "space `{id}` still holds {children} space(s), {integrations} \
                     integration(s) and {stacks} stack(s); move or delete them first"
                ),
            ));
        }
        self.spaces.remove(id);
        Ok(Applied::default())
    }

    fn create_integration(&mut self, integration: &Integration) -> Outcome {
        validate_integration_name(&integration.name)?;
        validate_host_url("api_host_url", &integration.api_host_url)?;
        validate_host_url("user_facing_host_url", &integration.user_facing_host_url)?;
        validate_labels(&integration.labels)?;
        validate_description(&integration.description)?;
        if integration.webhook_secret.key_id().is_none() {
            return Err(Rejection::invalid(
                "webhook_secret",
                "the webhook secret must be sealed",
            ));
        }
        if integration.is_default && integration.space_id != ROOT_SPACE {
            return Err(Rejection::invalid(
                "space_id",
                "the default integration belongs to the root space",
            ));
        }
        if !self.spaces.contains_key(&integration.space_id) {
            return Err(missing_space("space_id", &integration.space_id));
        }
        let lower = integration.name.to_lowercase();
        if let Some(existing) = self
            .integrations
            .keys()
            .find(|name| name.to_lowercase() == lower)
        {
            return Err(Rejection::conflict(
                "integration_exists",
                format!("an integration named `{existing}` already exists"),
            ));
        }
        if integration.is_default
            && let Some(default) = self.default_integration()
        {
            return Err(Rejection::conflict(
                "default_integration_exists",
                format!(
                    "`{}` is already the default integration; there can be only one",
                    default.name
                ),
            ));
        }
        // A new incarnation never inherits a reconciliation asked of an earlier one (deletion
        // forgets it already; this holds whatever the log before looks like).
        self.reconciles.remove(&integration.name);
        self.integrations
            .insert(integration.name.clone(), integration.clone());
        Ok(Applied::default())
    }

    fn update_integration(&mut self, name: &str, patch: &IntegrationPatch) -> Outcome {
        let Some(current) = self.integrations.get(name) else {
            return Err(integration_not_found(name));
        };
        let mut next = current.clone();
        if let Some(url) = &patch.api_host_url {
            validate_host_url("api_host_url", url)?;
            next.api_host_url = url.clone();
        }
        if let Some(url) = &patch.user_facing_host_url {
            validate_host_url("user_facing_host_url", url)?;
            next.user_facing_host_url = url.clone();
        }
        if let Some(username) = &patch.username {
            next.username = username.clone();
        }
        if let Some(token) = &patch.access_token {
            next.access_token = token.clone();
        }
        if let Some(labels) = &patch.labels {
            validate_labels(labels)?;
            next.labels = labels.clone();
        }
        if let Some(description) = &patch.description {
            validate_description(description)?;
            next.description = description.clone();
        }
        self.integrations.insert(name.to_owned(), next);
        Ok(Applied::default())
    }

    /// Installs a new webhook secret. The old one verifies until `previous_valid_until`; a
    /// previous secret still within its grace period at `issued_at` (the record's own time, so
    /// every replica decides alike) is kept among the older ones until its own deadline — unless
    /// this rotation has no grace period at all, which cuts every earlier secret off.
    fn rotate_webhook_secret(
        &mut self,
        name: &str,
        secret: &Sealed,
        previous_valid_until: &str,
        integration_id: Option<&str>,
        issued_at: &str,
    ) -> Outcome {
        let Some(integration) = self.integrations.get_mut(name) else {
            return Err(integration_not_found(name));
        };
        if integration_id.is_some_and(|id| id != integration.id) {
            return Err(Rejection::conflict(
                "integration_replaced",
                format!(
                    "integration `{name}` was deleted and re-created while its secret was rotated; rotate again"
                ),
            ));
        }
        if secret.key_id().is_none() {
            return Err(Rejection::invalid(
                "webhook_secret",
                "the webhook secret must be sealed",
            ));
        }
        let issued = parse_rfc3339(issued_at);
        let still_valid = |p: &PreviousSecret| match (issued, parse_rfc3339(&p.valid_until)) {
            (Some(issued), Some(until)) => until > issued,
            // Unreadable times: keep it; its own deadline still applies at verification.
            _ => true,
        };
        // A rotation without grace (a leaked secret) cuts off every earlier secret at once.
        let emergency = match (issued, parse_rfc3339(previous_valid_until)) {
            (Some(issued), Some(until)) => until <= issued,
            _ => false,
        };
        let mut older: Vec<PreviousSecret> = integration
            .grace_secrets()
            .filter(|p| !emergency && still_valid(p))
            .cloned()
            .collect();
        // The soonest to expire go first when there are too many.
        older.sort_by(|a, b| b.valid_until.cmp(&a.valid_until));
        older.truncate(MAX_OLDER_SECRETS);
        let previous = std::mem::replace(&mut integration.webhook_secret, secret.clone());
        integration.previous_webhook_secret = Some(PreviousSecret {
            secret: previous,
            valid_until: previous_valid_until.to_owned(),
        });
        integration.older_webhook_secrets = older;
        Ok(Applied::default())
    }

    fn delete_integration(&mut self, name: &str) -> Outcome {
        let Some(integration) = self.integrations.remove(name) else {
            return Err(integration_not_found(name));
        };
        // The webhooks stay in Bitbucket (a re-created name has the same URL, and its first
        // sync adopts them); inlet no longer manages them for an integration that is gone.
        self.webhooks.remove(name);
        // A pending reconciliation was asked of this incarnation, not of a later one.
        self.reconciles.remove(name);
        let mut detached = 0;
        for stack in self.stacks.values_mut() {
            if stack.integration == integration.name
                && stack.integration_id == integration.id
                && stack.integration_status == IntegrationStatus::Attached
            {
                stack.integration_status = IntegrationStatus::Detached;
                detached += 1;
            }
        }
        Ok(Applied {
            detached_stacks: detached,
        })
    }

    /// Records a webhook Bitbucket answered for; one managed webhook per project or repository,
    /// so a re-created one (its old id gone from Bitbucket) replaces the record of the old.
    fn record_webhook(
        &mut self,
        name: &str,
        integration_id: &str,
        webhook: &ManagedWebhook,
    ) -> Outcome {
        self.same_incarnation(
            name,
            integration_id,
            "while its webhook was synced; sync again",
        )?;
        validate_project_key(&webhook.project_key)?;
        if let Some(slug) = &webhook.repository_slug {
            validate_repository_slug(slug)?;
        }
        if webhook.url.is_empty() || webhook.url.len() > 2048 {
            return Err(Rejection::invalid(
                "url",
                "a webhook URL of 1 to 2048 bytes",
            ));
        }
        if webhook.events.len() > 32 || webhook.events.iter().any(|e| e.is_empty() || e.len() > 128)
        {
            return Err(Rejection::invalid(
                "events",
                "at most 32 event keys of 1 to 128 bytes",
            ));
        }
        let managed = self.webhooks.entry(name.to_owned()).or_default();
        managed.retain(|id, other| {
            *id == webhook.id
                || !other.same_scope(&webhook.project_key, webhook.repository_slug.as_deref())
        });
        managed.insert(webhook.id, webhook.clone());
        Ok(Applied::default())
    }

    fn forget_webhook(&mut self, name: &str, id: u64) -> Outcome {
        if !self.integrations.contains_key(name) {
            return Err(integration_not_found(name));
        }
        let removed = self
            .webhooks
            .get_mut(name)
            .and_then(|managed| managed.remove(&id));
        if self.webhooks.get(name).is_some_and(BTreeMap::is_empty) {
            self.webhooks.remove(name);
        }
        match removed {
            Some(_) => Ok(Applied::default()),
            None => Err(Rejection::not_found(
                "bitbucket_webhook_not_found",
                format!("integration `{name}` manages no Bitbucket webhook {id}"),
            )),
        }
    }

    /// Records the latest reconciliation asked for the current incarnation of `name`, stamped
    /// with the record's own time (so every replica stores the same request).
    fn request_reconcile(
        &mut self,
        name: &str,
        integration_id: &str,
        reconcile_id: &str,
        issued_at: &str,
    ) -> Outcome {
        self.same_incarnation(
            name,
            integration_id,
            "while a reconciliation was requested; request it again",
        )?;
        validate_id("reconcile_id", reconcile_id)?;
        self.reconciles.insert(
            name.to_owned(),
            ReconcileRequest {
                reconcile_id: reconcile_id.to_owned(),
                integration_id: integration_id.to_owned(),
                requested_at: issued_at.to_owned(),
            },
        );
        Ok(Applied::default())
    }

    /// Not found unless integration `name` exists, `integration_replaced` unless it is still the
    /// incarnation `integration_id` a command was issued for (`when` ends the message).
    fn same_incarnation(
        &self,
        name: &str,
        integration_id: &str,
        when: &str,
    ) -> Result<(), Rejection> {
        let Some(integration) = self.integrations.get(name) else {
            return Err(integration_not_found(name));
        };
        if integration.id != integration_id {
            return Err(Rejection::conflict(
                "integration_replaced",
                format!("integration `{name}` was deleted and re-created {when}"),
            ));
        }
        Ok(())
    }

    /// The integration `name` if a stack in `space_id` may attach it.
    fn attachable(&self, name: &str, space_id: &str) -> Result<&Integration, Rejection> {
        let Some(integration) = self.integrations.get(name) else {
            return Err(Rejection::not_found(
                "integration_not_found",
                format!("integration: no integration named `{name}`"),
            ));
        };
        if !self.is_available(integration, space_id) {
            return Err(Rejection::conflict(
                "integration_unavailable",
                format!(
                    "integration: `{name}` lives in space `{}`, which space `{space_id}` neither is \
                     nor inherits from; use the default integration, one of the stack's space, \
                     or one of an ancestor reached through inheriting spaces",
                    integration.space_id
                ),
            ));
        }
        Ok(integration)
    }

    fn create_stack(&mut self, spec: &StackSpec, incarnation: &str) -> Outcome {
        validate_id("id", &spec.id)?;
        validate_labels(&spec.labels)?;
        validate_name("name", &spec.name)?;
        validate_repository(&spec.repository)?;
        validate_branch(&spec.branch)?;
        if self.stacks.contains_key(spec.id.as_str()) {
            return Err(Rejection::conflict(
                "stack_exists",
                format!("a stack with id `{}` already exists", spec.id),
            ));
        }
        if !self.spaces.contains_key(&spec.space_id) {
            return Err(missing_space("space_id", &spec.space_id));
        }
        let integration_id = self
            .attachable(&spec.integration, &spec.space_id)?
            .id
            .clone();
        let project_root = validate_root(&spec.project_root)?;
        let additional_project_globs = validate_globs(&spec.additional_project_globs)?;
        let texts = &mut self.interner;
        let stack = Stack {
            id: spec.id.clone(),
            name: spec.name.clone(),
            space_id: texts.text(&spec.space_id),
            integration: texts.text(&spec.integration),
            repository: texts.text(&spec.repository),
            branch: texts.text(&spec.branch),
            project_root: texts.text(&project_root),
            additional_project_globs,
            labels: texts.list(&spec.labels),
            disabled: spec.disabled,
            integration_status: IntegrationStatus::Attached,
            integration_id: texts.text(&integration_id),
            incarnation: incarnation.to_owned(),
        };
        self.insert_stack(Box::new(stack));
        Ok(Applied::default())
    }

    fn update_stack(&mut self, id: &str, patch: &StackPatch) -> Outcome {
        let Some(current) = self.stacks.get(id) else {
            return Err(Rejection::not_found(
                "stack_not_found",
                format!("no stack with id `{id}`"),
            ));
        };
        let mut next = current.clone();
        if let Some(name) = &patch.name {
            validate_name("name", name)?;
            next.name = name.clone();
        }
        if let Some(repository) = &patch.repository {
            validate_repository(repository)?;
            next.repository = self.interner.text(repository);
        }
        if let Some(branch) = &patch.branch {
            validate_branch(branch)?;
            next.branch = self.interner.text(branch);
        }
        if let Some(root) = &patch.project_root {
            next.project_root = self.interner.text(&validate_root(root)?);
        }
        if let Some(globs) = &patch.additional_project_globs {
            next.additional_project_globs = validate_globs(globs)?;
        }
        if let Some(labels) = &patch.labels {
            validate_labels(labels)?;
            next.labels = self.interner.list(labels);
        }
        if let Some(disabled) = patch.disabled {
            next.disabled = disabled;
        }
        if let Some(name) = &patch.integration {
            let integration = self.attachable(name, &next.space_id)?;
            let (name, id) = (integration.name.clone(), integration.id.clone());
            next.integration = self.interner.text(&name);
            next.integration_id = self.interner.text(&id);
            next.integration_status = IntegrationStatus::Attached;
        }
        let previous = current.clone();
        self.unindex_stack(&previous);
        self.insert_stack(next);
        Ok(Applied::default())
    }

    fn delete_stack(&mut self, id: &str) -> Outcome {
        let Some(stack) = self.stacks.remove(id) else {
            return Err(Rejection::not_found(
                "stack_not_found",
                format!("no stack with id `{id}`"),
            ));
        };
        self.unindex_stack(&stack);
        Ok(Applied::default())
    }

    fn create_api_key(&mut self, key: &ApiKey) -> Outcome {
        validate_id("id", &key.id)?;
        validate_name("name", &key.name)?;
        if self.api_keys.contains_key(&key.id) {
            return Err(Rejection::conflict(
                "api_key_exists",
                format!("an API key with id `{}` already exists", key.id),
            ));
        }
        if let Some(binding) = key
            .bindings
            .iter()
            .find(|b| !self.spaces.contains_key(&b.space_id))
        {
            return Err(missing_space("bindings", &binding.space_id));
        }
        self.api_keys.insert(key.id.clone(), key.clone());
        Ok(Applied::default())
    }

    fn delete_api_key(&mut self, id: &str) -> Outcome {
        match self.api_keys.remove(id) {
            Some(_) => Ok(Applied::default()),
            None => Err(Rejection::not_found(
                "api_key_not_found",
                format!("no API key with id `{id}`"),
            )),
        }
    }
}

fn space_not_found(id: &str) -> Rejection {
    Rejection::not_found("space_not_found", format!("no space `{id}`"))
}

/// A well-formed reference (in `field`) to a space that is not there: 404, like the admin API's
/// answer for one the caller cannot see.
fn missing_space(field: &'static str, id: &str) -> Rejection {
    Rejection::not_found("space_not_found", format!("{field}: no space `{id}`"))
}

fn integration_not_found(name: &str) -> Rejection {
    Rejection::not_found(
        "integration_not_found",
        format!("no integration named `{name}`"),
    )
}

/// Ids: 1–64 characters of lower-case letters, digits, `-` and `_`, starting with a letter or digit.
pub(crate) fn validate_id(field: &'static str, id: &str) -> Result<(), Rejection> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Rejection::invalid(
            field,
            format!(
                "`{id}` is not a valid id: use 1 to 64 lower-case letters, digits, `-` or `_`, \
                 starting with a letter or digit"
            ),
        ))
    }
}

/// At most this many labels, each 1–64 characters: labels are shown and matched, not stored data.
const MAX_LABELS: usize = 50;
/// Longest description (markdown), in characters.
const MAX_DESCRIPTION: usize = 4096;

pub(crate) fn validate_labels(labels: &[String]) -> Result<(), Rejection> {
    if labels.len() > MAX_LABELS
        || labels
            .iter()
            .any(|l| l.trim().is_empty() || l.chars().count() > 64)
    {
        return Err(Rejection::invalid(
            "labels",
            format!("at most {MAX_LABELS} labels of 1 to 64 characters"),
        ));
    }
    Ok(())
}

fn validate_description(description: &str) -> Result<(), Rejection> {
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(Rejection::invalid(
            "description",
            format!("at most {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(())
}

pub(crate) fn validate_name(field: &'static str, name: &str) -> Result<(), Rejection> {
    if name.trim().is_empty() || name.chars().count() > 128 {
        return Err(Rejection::invalid(
            field,
            "a name must be 1 to 128 characters and not blank",
        ));
    }
    Ok(())
}

/// Integration names become a URL path segment: 1–64 letters, digits, `-`, `_` or `.`.
pub(crate) fn validate_integration_name(name: &str) -> Result<(), Rejection> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Rejection::invalid(
            "name",
            format!(
                "`{name}` is not a valid integration name: it becomes part of the webhook URL, so \
                 use 1 to 64 letters, digits, `-`, `_` or `.`, starting with a letter or digit"
            ),
        ))
    }
}

/// `https://host…`, `http://host…` or `private://pool`: the host is a DNS name or an IPv4
/// address, with an optional port of 1–5 digits, and the rest (path,
/// query) has no whitespace. No user-info: credentials go in `username`/`access_token`.
pub(crate) fn validate_host_url(field: &'static str, url: &str) -> Result<(), Rejection> {
    let rest = ["https://", "http://", "private://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme));
    let ok = rest.is_some_and(|rest| {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        valid_authority(authority) && !tail.contains(char::is_whitespace)
    });
    if ok {
        Ok(())
    } else {
        Err(Rejection::invalid(
            field,
            format!("`{url}` is not a valid URL: use https://host, http://host or private://pool"),
        ))
    }
}

/// `host[:port]` with host `[A-Za-z0-9.-]+`: a DNS name or an IPv4 address. IPv6 literals are
/// not taken (give the host a name): checking them exactly is more than this rule is worth.
fn valid_authority(authority: &str) -> bool {
    let (host, port) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    host_ok
        && (port.is_empty()
            || port.strip_prefix(':').is_some_and(|digits| {
                (1..=5).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
            }))
}

/// Longest project key or repository slug Bitbucket takes.
const MAX_BITBUCKET_NAME: usize = 128;

/// A Bitbucket project key: a letter, then letters, digits and `_`; or a personal project,
/// `~` and a user slug (letters, digits, `_`, `.`, `@`, `-`); at most 128 characters.
pub(crate) fn validate_project_key(key: &str) -> Result<(), Rejection> {
    let ok = key.len() <= MAX_BITBUCKET_NAME
        && match key.strip_prefix('~') {
            Some(user) => {
                !user.is_empty()
                    && user
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-'))
            }
            None => {
                key.starts_with(|c: char| c.is_ascii_alphabetic())
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }
        };
    if ok {
        Ok(())
    } else {
        Err(Rejection::invalid(
            "project_key",
            format!(
                "`{key}` is not a Bitbucket project key: a letter then letters, digits or `_` \
                 (or `~user` for a personal project), at most {MAX_BITBUCKET_NAME} characters"
            ),
        ))
    }
}

/// A Bitbucket repository slug: letters, digits, `_`, `.` and `-`, not `.` or `..`, at most
/// 128 characters.
pub(crate) fn validate_repository_slug(slug: &str) -> Result<(), Rejection> {
    let ok = !slug.is_empty()
        && slug.len() <= MAX_BITBUCKET_NAME
        && slug != "."
        && slug != ".."
        && slug
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Rejection::invalid(
            "repository_slug",
            format!(
                "`{slug}` is not a repository slug: letters, digits, `_`, `.` or `-` (not `.` \
                 or `..`), at most {MAX_BITBUCKET_NAME} characters"
            ),
        ))
    }
}

/// `PROJECT/repo`: two non-empty segments without spaces.
pub(crate) fn validate_repository(repository: &str) -> Result<(), Rejection> {
    let mut parts = repository.split('/');
    let ok = matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(p), Some(r), None)
            if !p.is_empty() && !r.is_empty()
                && !repository.contains(char::is_whitespace)
    );
    if ok {
        Ok(())
    } else {
        Err(Rejection::invalid(
            "repository",
            format!("`{repository}` is not a repository: use PROJECT/repo"),
        ))
    }
}

pub(crate) fn validate_branch(branch: &str) -> Result<(), Rejection> {
    if branch.is_empty() || branch.starts_with("refs/") || branch.contains(char::is_whitespace) {
        return Err(Rejection::invalid(
            "branch",
            format!("`{branch}` is not a branch name: give the short name, e.g. `main`"),
        ));
    }
    Ok(())
}

/// The project root in its stored form (no leading or trailing `/`, no `.` or `..`).
fn validate_root(root: &str) -> Result<String, Rejection> {
    crate::paths::normalise_root(root)
        .map_err(|problem| Rejection::invalid("project_root", format!("`{root}` {problem}")))
}

/// At most this many globs per stack: each is matched against every changed path.
const MAX_GLOBS: usize = 100;

/// Every glob compiles (the router matches with the same compiler).
fn validate_globs(globs: &[String]) -> Result<Vec<String>, Rejection> {
    if globs.len() > MAX_GLOBS {
        return Err(Rejection::invalid(
            "additional_project_globs",
            format!("at most {MAX_GLOBS} globs"),
        ));
    }
    for glob in globs {
        crate::paths::compile_glob(glob).map_err(|problem| {
            Rejection::invalid(
                "additional_project_globs",
                format!("`{glob}` is not a valid glob: {problem}"),
            )
        })?;
    }
    Ok(globs.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Role, RoleBinding};
    use crate::testing::record;
    use inlet_core::secret::Secret;

    fn space(id: &str, parent: &str, inherit: bool) -> ControlCommand {
        ControlCommand::CreateSpace {
            space: Space {
                id: id.to_owned(),
                name: id.to_owned(),
                parent_id: Some(parent.to_owned()),
                inherit_entities: inherit,
            },
        }
    }

    fn integration(name: &str, id: &str, space: &str, is_default: bool) -> Integration {
        crate::testing::integration(name, id, space, is_default, &format!("secret-of-{id}"))
    }

    fn create_integration(name: &str, id: &str, space: &str, is_default: bool) -> ControlCommand {
        ControlCommand::CreateIntegration {
            integration: integration(name, id, space, is_default),
        }
    }

    fn stack(id: &str, space: &str, integration: &str, branch: &str) -> ControlCommand {
        ControlCommand::CreateStack {
            stack: StackSpec {
                id: id.to_owned(),
                name: id.to_owned(),
                space_id: space.to_owned(),
                integration: integration.to_owned(),
                repository: "INFRA/network".to_owned(),
                branch: branch.to_owned(),
                project_root: String::new(),
                additional_project_globs: vec![],
                labels: vec![],
                disabled: false,
            },
        }
    }

    fn fold(commands: Vec<ControlCommand>) -> (Registry, Vec<Outcome>) {
        let mut registry = Registry::new();
        let outcomes = commands
            .into_iter()
            .map(|c| registry.apply(&record(c)))
            .collect();
        (registry, outcomes)
    }

    fn rejected(outcome: &Outcome) -> &Rejection {
        outcome.as_ref().expect_err("expected a rejection")
    }

    /// The root space exists in a fresh registry and spaces need an existing parent and unique id.
    #[test]
    fn spaces_need_a_parent_and_a_unique_id() {
        let (registry, outcomes) = fold(vec![
            space("team", "root", true),
            space("team", "root", true),
            space("orphan", "missing", true),
            space("Bad Id", "root", true),
        ]);
        assert!(registry.space("root").is_some());
        assert!(outcomes[0].is_ok());
        assert_eq!(rejected(&outcomes[1]).code, "space_exists");
        assert_eq!(rejected(&outcomes[1]).kind, RejectionKind::Conflict);
        assert_eq!(rejected(&outcomes[2]).code, "space_not_found");
        assert!(rejected(&outcomes[2]).message.starts_with("parent_id:"));
        assert_eq!(rejected(&outcomes[3]).field, Some("id"));
        assert_eq!(registry.sizes().spaces, 2);
    }

    /// Integration names are unique (case-insensitively) and there is at most one default.
    #[test]
    fn integration_names_unique_and_one_default() {
        let (registry, outcomes) = fold(vec![
            create_integration("bb", "i1", "root", true),
            create_integration("BB", "i2", "root", false),
            create_integration("other", "i3", "root", true),
            create_integration("bad name", "i4", "root", false),
        ]);
        assert!(outcomes[0].is_ok());
        assert_eq!(rejected(&outcomes[1]).code, "integration_exists");
        assert_eq!(rejected(&outcomes[2]).code, "default_integration_exists");
        assert_eq!(rejected(&outcomes[3]).field, Some("name"));
        assert_eq!(registry.integrations().count(), 1);
    }

    /// The default integration must live in root; space-level ones in an existing space.
    #[test]
    fn integration_space_rules() {
        let (_, outcomes) = fold(vec![
            space("team", "root", true),
            create_integration("a", "i1", "team", true),
            create_integration("b", "i2", "nowhere", false),
            create_integration("c", "i3", "team", false),
        ]);
        assert_eq!(rejected(&outcomes[1]).field, Some("space_id"));
        assert_eq!(rejected(&outcomes[2]).code, "space_not_found");
        assert!(rejected(&outcomes[2]).message.starts_with("space_id:"));
        assert!(outcomes[3].is_ok());
    }

    /// Host URLs must be http(s) or private:// and secrets long enough.
    #[test]
    fn integration_urls_and_secret_are_validated() {
        let mut bad_url = integration("a", "i1", "root", false);
        bad_url.api_host_url = "ftp://x".to_owned();
        let mut private = integration("b", "i2", "root", false);
        private.api_host_url = "private://agents".to_owned();
        let mut short = integration("c", "i3", "root", false);
        short.webhook_secret = Sealed::default();
        let (_, outcomes) = fold(vec![
            ControlCommand::CreateIntegration {
                integration: bad_url,
            },
            ControlCommand::CreateIntegration {
                integration: private,
            },
            ControlCommand::CreateIntegration { integration: short },
        ]);
        assert_eq!(rejected(&outcomes[0]).field, Some("api_host_url"));
        assert!(outcomes[1].is_ok());
        assert_eq!(rejected(&outcomes[2]).field, Some("webhook_secret"));
    }

    /// A stack may use the default integration, one of its own space, or one of an ancestor reached
    /// through inheriting spaces, and nothing else.
    #[test]
    fn stack_integration_availability_follows_inheritance() {
        let (registry, outcomes) = fold(vec![
            space("parent", "root", false),
            space("child", "parent", true),
            space("isolated", "parent", false),
            space("sibling", "root", true),
            create_integration("default", "i0", "root", true),
            create_integration("parent-bb", "i1", "parent", false),
            stack("s-default", "isolated", "default", "main"),
            stack("s-own", "parent", "parent-bb", "main"),
            stack("s-inherit", "child", "parent-bb", "main"),
            stack("s-no-inherit", "isolated", "parent-bb", "main"),
            stack("s-unrelated", "sibling", "parent-bb", "main"),
            stack("s-missing", "root", "nope", "main"),
        ]);
        for ok in &outcomes[..9] {
            assert!(ok.is_ok(), "{ok:?}");
        }
        for bad in &outcomes[9..outcomes.len() - 1] {
            assert_eq!(rejected(bad).code, "integration_unavailable");
            assert!(rejected(bad).message.starts_with("integration:"));
        }
        assert_eq!(
            rejected(outcomes.last().expect("outcome")).code,
            "integration_not_found"
        );
        assert_eq!(registry.sizes().stacks, 3);
    }

    /// Stack ids are unique, and repository and branch are validated.
    #[test]
    fn stack_fields_are_validated() {
        let mut bad_repo = stack("s2", "root", "bb", "main");
        if let ControlCommand::CreateStack { stack } = &mut bad_repo {
            stack.repository = "no-slash".to_owned();
        }
        let (_, outcomes) = fold(vec![
            create_integration("bb", "i1", "root", true),
            stack("s1", "root", "bb", "main"),
            stack("s1", "root", "bb", "main"),
            bad_repo,
            stack("s3", "root", "bb", "refs/heads/main"),
            stack("s4", "nowhere", "bb", "main"),
        ]);
        assert_eq!(rejected(&outcomes[2]).code, "stack_exists");
        assert_eq!(rejected(&outcomes[3]).field, Some("repository"));
        assert_eq!(rejected(&outcomes[4]).field, Some("branch"));
        assert_eq!(rejected(&outcomes[5]).code, "space_not_found");
        assert!(rejected(&outcomes[5]).message.starts_with("space_id:"));
    }

    /// Project roots are stored normalised; `..` roots and bad globs are refused naming the
    /// field, on create and on update.
    #[test]
    fn path_fields_are_validated() {
        let with = |id: &str, root: &str, globs: &[&str]| {
            let mut command = stack(id, "root", "bb", "main");
            if let ControlCommand::CreateStack { stack } = &mut command {
                stack.project_root = root.to_owned();
                stack.additional_project_globs = globs.iter().map(|g| (*g).to_owned()).collect();
            }
            command
        };
        let (registry, outcomes) = fold(vec![
            create_integration("bb", "i1", "root", true),
            with("s1", "/infra/app/", &["modules/**", "!**/*.md"]),
            with("s2", "infra/../secrets", &[]),
            with("s3", "", &["[unclosed"]),
            ControlCommand::UpdateStack {
                id: "s1".to_owned(),
                patch: StackPatch {
                    additional_project_globs: Some(vec!["{a,b".to_owned()]),
                    ..StackPatch::default()
                },
            },
        ]);
        assert!(outcomes[1].is_ok());
        let stored = registry.stack("s1").expect("s1");
        assert_eq!(stored.project_root, "infra/app");
        assert_eq!(
            stored.additional_project_globs,
            vec!["modules/**", "!**/*.md"]
        );
        assert_eq!(rejected(&outcomes[2]).field, Some("project_root"));
        assert_eq!(
            rejected(&outcomes[3]).field,
            Some("additional_project_globs")
        );
        assert_eq!(
            rejected(&outcomes[4]).field,
            Some("additional_project_globs")
        );
    }

    /// Deleting an integration detaches its stacks; re-creating the name does not re-attach them,
    /// a PATCH naming the integration does; the stacks keep matching the name all along.
    #[test]
    fn delete_detaches_and_patch_reattaches() {
        let (mut registry, outcomes) = fold(vec![
            create_integration("bb", "i1", "root", true),
            stack("s1", "root", "bb", "main"),
            stack("s2", "root", "bb", "dev"),
            ControlCommand::DeleteIntegration {
                name: "bb".to_owned(),
            },
            create_integration("bb", "i2", "root", true),
        ]);
        assert_eq!(outcomes[3], Ok(Applied { detached_stacks: 2 }));
        assert!(outcomes[4].is_ok());
        let statuses: Vec<_> = registry
            .stacks_on_repository("bb", "infra/NETWORK")
            .map(|s| s.integration_status)
            .collect();
        assert_eq!(statuses, vec![IntegrationStatus::Detached; 2]);

        let outcome = registry.apply(&record(ControlCommand::UpdateStack {
            id: "s1".to_owned(),
            patch: StackPatch {
                integration: Some("bb".to_owned()),
                ..StackPatch::default()
            },
        }));
        assert!(outcome.is_ok());
        let s1 = registry.stack("s1").expect("s1");
        assert_eq!(s1.integration_status, IntegrationStatus::Attached);
        assert_eq!(s1.integration_id, "i2");
        assert_eq!(
            registry.stack("s2").map(|s| s.integration_status),
            Some(IntegrationStatus::Detached)
        );
    }

    fn managed(id: u64, project: &str, slug: Option<&str>) -> ManagedWebhook {
        ManagedWebhook {
            id,
            project_key: project.to_owned(),
            repository_slug: slug.map(str::to_owned),
            url: "https://inlet.example.com/webhooks/bitbucket-datacenter/bb".to_owned(),
            events: vec!["repo:refs_changed".to_owned()],
            active: true,
        }
    }

    fn record_webhook(integration_id: &str, webhook: ManagedWebhook) -> ControlCommand {
        ControlCommand::RecordBitbucketWebhook {
            name: "bb".to_owned(),
            integration_id: integration_id.to_owned(),
            webhook,
        }
    }

    /// Managed webhooks: one per project or repository (a new id there replaces the old
    /// record), only for the incarnation they were synced for, forgotten one by one, and all
    /// forgotten with their integration (a re-created name starts with none).
    #[test]
    fn managed_webhooks_follow_their_integration() {
        let forget = |id| ControlCommand::ForgetBitbucketWebhook {
            name: "bb".to_owned(),
            id,
        };
        let (mut registry, outcomes) = fold(vec![
            create_integration("bb", "i1", "root", true),
            record_webhook("i1", managed(1, "INFRA", None)),
            record_webhook("i1", managed(2, "INFRA", Some("network"))),
            record_webhook("i1", managed(3, "infra", Some("NETWORK"))),
            record_webhook("i1", managed(1, "INFRA", None)),
            record_webhook("other", managed(4, "OPS", None)),
            record_webhook("i1", managed(5, "1NFRA", None)),
            record_webhook("i1", managed(6, "INFRA", Some(".."))),
            forget(9),
        ]);
        assert!(outcomes[..5].iter().all(Result::is_ok), "{outcomes:?}");
        assert_eq!(rejected(&outcomes[5]).code, "integration_replaced");
        assert_eq!(rejected(&outcomes[6]).field, Some("project_key"));
        assert_eq!(rejected(&outcomes[7]).field, Some("repository_slug"));
        assert_eq!(rejected(&outcomes[8]).code, "bitbucket_webhook_not_found");
        let ids: Vec<u64> = registry.managed_webhooks("bb").map(|w| w.id).collect();
        assert_eq!(ids, [1, 3]);

        assert!(registry.apply(&record(forget(3))).is_ok());
        assert_eq!(registry.managed_webhook("bb", 3), None);
        assert!(registry.managed_webhook("bb", 1).is_some());
        for command in [
            ControlCommand::DeleteIntegration {
                name: "bb".to_owned(),
            },
            create_integration("bb", "i2", "root", true),
        ] {
            assert!(registry.apply(&record(command)).is_ok());
        }
        assert_eq!(registry.managed_webhooks("bb").count(), 0);
        assert_eq!(
            rejected(&registry.apply(&record(record_webhook("i1", managed(1, "INFRA", None)))))
                .code,
            "integration_replaced"
        );
    }

    /// Project keys and slugs: what Bitbucket takes, and nothing that would walk a path.
    #[test]
    fn bitbucket_names() {
        for key in ["INFRA", "a", "A_1", "~bob", "~bob.smith@x-y"] {
            assert!(validate_project_key(key).is_ok(), "{key}");
        }
        for key in [
            "",
            "1A",
            "_A",
            "A-B",
            "~",
            "A/B",
            "IN FRA",
            &"A".repeat(129),
        ] {
            assert!(validate_project_key(key).is_err(), "{key}");
        }
        for slug in ["network", "net-work.git", "_x", ".x", "...", "a.."] {
            assert!(validate_repository_slug(slug).is_ok(), "{slug}");
        }
        for slug in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(validate_repository_slug(slug).is_err(), "{slug}");
        }
    }

    /// Deleting what does not exist is a not-found rejection that changes nothing.
    #[test]
    fn deleting_missing_entities_is_not_found() {
        let (registry, outcomes) = fold(vec![
            ControlCommand::DeleteIntegration {
                name: "x".to_owned(),
            },
            ControlCommand::DeleteStack { id: "x".to_owned() },
            ControlCommand::DeleteApiKey { id: "x".to_owned() },
        ]);
        for outcome in &outcomes {
            assert_eq!(rejected(outcome).kind, RejectionKind::NotFound);
        }
        assert_eq!(registry, Registry::new());
    }

    /// Updating or deleting a stack keeps the repository index in step.
    #[test]
    fn repository_index_follows_updates() {
        let (mut registry, _) = fold(vec![
            create_integration("bb", "i1", "root", true),
            stack("s1", "root", "bb", "main"),
        ]);
        let moved = registry.apply(&record(ControlCommand::UpdateStack {
            id: "s1".to_owned(),
            patch: StackPatch {
                repository: Some("INFRA/dns".to_owned()),
                ..StackPatch::default()
            },
        }));
        assert!(moved.is_ok());
        assert_eq!(
            registry.stacks_on_repository("bb", "INFRA/network").count(),
            0
        );
        assert_eq!(registry.stacks_on_repository("BB", "infra/dns").count(), 1);
        let deleted = registry.apply(&record(ControlCommand::DeleteStack {
            id: "s1".to_owned(),
        }));
        assert!(deleted.is_ok());
        assert_eq!(registry.stacks_on_repository("bb", "INFRA/dns").count(), 0);
        assert!(registry.by_repository.is_empty());
    }

    /// A rejected update leaves the stack exactly as it was.
    #[test]
    fn rejected_update_changes_nothing() {
        let (mut registry, _) = fold(vec![
            create_integration("bb", "i1", "root", true),
            stack("s1", "root", "bb", "main"),
        ]);
        let before = registry.clone();
        let outcome = registry.apply(&record(ControlCommand::UpdateStack {
            id: "s1".to_owned(),
            patch: StackPatch {
                name: Some("renamed".to_owned()),
                integration: Some("missing".to_owned()),
                ..StackPatch::default()
            },
        }));
        assert_eq!(rejected(&outcome).code, "integration_not_found");
        assert!(rejected(&outcome).message.starts_with("integration:"));
        assert_eq!(registry, before);
    }

    /// API keys need unique ids and bindings on existing spaces.
    #[test]
    fn api_key_rules() {
        let key = |id: &str, space: &str| ControlCommand::CreateApiKey {
            key: ApiKey {
                id: id.to_owned(),
                name: id.to_owned(),
                secret_sha256: "00".to_owned(),
                bindings: vec![RoleBinding {
                    space_id: space.to_owned(),
                    role: Role::Reader,
                }],
                created_at: "2026-01-01T00:00:00Z".to_owned(),
            },
        };
        let (registry, outcomes) = fold(vec![
            key("k1", "root"),
            key("k1", "root"),
            key("k2", "missing"),
            ControlCommand::DeleteApiKey {
                id: "k1".to_owned(),
            },
        ]);
        assert!(outcomes[0].is_ok());
        assert_eq!(rejected(&outcomes[1]).code, "api_key_exists");
        assert_eq!(rejected(&outcomes[2]).code, "space_not_found");
        assert!(rejected(&outcomes[2]).message.starts_with("bindings:"));
        assert!(outcomes[3].is_ok());
        assert_eq!(registry.sizes().api_keys, 0);
    }

    /// Folding the same log twice, including rejected records, yields identical registries.
    #[test]
    fn fold_is_deterministic() {
        let log = || {
            vec![
                space("a", "root", true),
                space("b", "a", true),
                create_integration("bb", "i1", "a", false),
                create_integration("bb", "i9", "root", true),
                stack("s1", "b", "bb", "main"),
                stack("s2", "root", "bb", "main"),
                ControlCommand::DeleteIntegration {
                    name: "bb".to_owned(),
                },
                create_integration("bb", "i2", "root", true),
                request_reconcile("bb", "i2", "rec_1"),
                stack("s3", "b", "bb", "main"),
            ]
        };
        let log = log();
        let (first, first_outcomes) = fold(log.clone());
        let (second, second_outcomes) = fold(log.clone());
        assert_eq!(first, second);
        assert_eq!(first_outcomes, second_outcomes);
        // Serialising through JSON (as on the topic) changes nothing either.
        let mut third = Registry::new();
        for command in log {
            let json = serde_json::to_vec(&record(command)).expect("serialise");
            let back: ControlRecord = serde_json::from_slice(&json).expect("parse");
            let _ = third.apply(&back);
        }
        assert_eq!(first, third);
    }

    /// Spaces can be renamed and toggled; only empty, non-root spaces can be deleted.
    #[test]
    fn space_update_and_delete_rules() {
        let (registry, outcomes) = fold(vec![
            space("team", "root", false),
            space("child", "team", false),
            ControlCommand::UpdateSpace {
                id: "team".to_owned(),
                patch: SpacePatch {
                    name: Some("Team".to_owned()),
                    inherit_entities: Some(true),
                },
            },
            ControlCommand::DeleteSpace {
                id: "team".to_owned(),
            },
            ControlCommand::DeleteSpace {
                id: "root".to_owned(),
            },
            ControlCommand::UpdateSpace {
                id: "root".to_owned(),
                patch: SpacePatch {
                    name: None,
                    inherit_entities: Some(true),
                },
            },
            ControlCommand::DeleteSpace {
                id: "child".to_owned(),
            },
            create_integration("bb", "i1", "team", false),
            ControlCommand::DeleteSpace {
                id: "team".to_owned(),
            },
            ControlCommand::DeleteSpace {
                id: "nope".to_owned(),
            },
        ]);
        assert!(outcomes[2].is_ok());
        let team = registry.space("team").expect("team");
        assert_eq!((team.name.as_str(), team.inherit_entities), ("Team", true));
        assert_eq!(rejected(&outcomes[3]).code, "space_not_empty");
        assert_eq!(rejected(&outcomes[4]).code, "root_space");
        assert_eq!(rejected(&outcomes[5]).code, "root_space");
        assert!(
            rejected(&outcomes[5])
                .message
                .starts_with("inherit_entities:")
        );
        assert!(outcomes[6].is_ok());
        assert_eq!(rejected(&outcomes[8]).code, "space_not_empty");
        assert_eq!(rejected(&outcomes[9]).kind, RejectionKind::NotFound);
        assert!(registry.space("child").is_none());
    }

    /// Updates change mutable fields, validated; rotation keeps the old secret with its deadline.
    #[test]
    fn integration_update_and_rotation() {
        let new_secret = crate::testing::secrets_key().seal(&Secret::new("new"), "i1");
        let (registry, outcomes) = fold(vec![
            create_integration("bb", "i1", "root", true),
            ControlCommand::UpdateIntegration {
                name: "bb".to_owned(),
                patch: IntegrationPatch {
                    description: Some("**prod**".to_owned()),
                    labels: Some(vec!["prod".to_owned()]),
                    ..IntegrationPatch::default()
                },
            },
            ControlCommand::UpdateIntegration {
                name: "bb".to_owned(),
                patch: IntegrationPatch {
                    api_host_url: Some("gopher://x".to_owned()),
                    ..IntegrationPatch::default()
                },
            },
            ControlCommand::RotateWebhookSecret {
                name: "bb".to_owned(),
                secret: new_secret.clone(),
                previous_valid_until: "2026-01-02T00:00:00Z".to_owned(),
                integration_id: None,
            },
            ControlCommand::RotateWebhookSecret {
                name: "nope".to_owned(),
                secret: new_secret.clone(),
                previous_valid_until: "2026-01-02T00:00:00Z".to_owned(),
                integration_id: None,
            },
        ]);
        assert!(outcomes[1].is_ok());
        assert_eq!(rejected(&outcomes[2]).field, Some("api_host_url"));
        assert!(outcomes[3].is_ok());
        assert_eq!(rejected(&outcomes[4]).kind, RejectionKind::NotFound);
        let bb = registry.integration("bb").expect("bb");
        assert_eq!(bb.description, "**prod**");
        assert_eq!(bb.api_host_url, "https://bitbucket.example.com");
        assert_eq!(bb.webhook_secret, new_secret);
        let previous = bb.previous_webhook_secret.as_ref().expect("previous");
        assert_eq!(previous.valid_until, "2026-01-02T00:00:00Z");
        assert_ne!(previous.secret, new_secret);
    }

    /// A second rotation within the first one's grace period keeps the first secret until its
    /// own deadline (judged at the record's issue time); expired ones are dropped; a rotation
    /// sealed for a former incarnation of the name is refused.
    #[test]
    fn rotations_keep_secrets_within_their_grace() {
        let key = crate::testing::secrets_key();
        let sealed = |text: &str| key.seal(&Secret::new(text), "webhook_secret/i1");
        let rotate =
            |secret: &str, until: &str, id: Option<&str>| ControlCommand::RotateWebhookSecret {
                name: "bb".to_owned(),
                secret: sealed(secret),
                previous_valid_until: until.to_owned(),
                integration_id: id.map(str::to_owned),
            };
        let mut registry = Registry::new();
        let at = |command: ControlCommand, issued_at: &str| {
            let mut record = record(command);
            record.issued_at = issued_at.to_owned();
            record
        };
        assert!(
            registry
                .apply(&at(
                    create_integration("bb", "i1", "root", true),
                    "2026-01-01T00:00:00Z"
                ))
                .is_ok()
        );
        let original = registry
            .integration("bb")
            .expect("bb")
            .webhook_secret
            .clone();
        // First rotation at 10:00, original valid until 11:00.
        assert!(
            registry
                .apply(&at(
                    rotate("s1", "2026-01-01T11:00:00Z", Some("i1")),
                    "2026-01-01T10:00:00Z"
                ))
                .is_ok()
        );
        // Second rotation at 10:30: s1 valid until 11:30, the original still until 11:00.
        assert!(
            registry
                .apply(&at(
                    rotate("s2", "2026-01-01T11:30:00Z", Some("i1")),
                    "2026-01-01T10:30:00Z"
                ))
                .is_ok()
        );
        let bb = registry.integration("bb").expect("bb");
        let grace: Vec<(&Sealed, &str)> = bb
            .grace_secrets()
            .map(|p| (&p.secret, p.valid_until.as_str()))
            .collect();
        assert_eq!(grace.len(), 2, "{grace:?}");
        assert!(grace.contains(&(&original, "2026-01-01T11:00:00Z")));
        // A third rotation at 12:00, after both deadlines: only s2 (the one it replaces) is kept.
        assert!(
            registry
                .apply(&at(
                    rotate("s3", "2026-01-01T13:00:00Z", Some("i1")),
                    "2026-01-01T12:00:00Z"
                ))
                .is_ok()
        );
        let bb = registry.integration("bb").expect("bb");
        let deadlines: Vec<&str> = bb.grace_secrets().map(|p| p.valid_until.as_str()).collect();
        assert_eq!(deadlines, vec!["2026-01-01T13:00:00Z"]);
        assert!(!bb.grace_secrets().any(|p| p.secret == original));
        // Sealed for another incarnation: refused, nothing changes.
        let outcome = registry.apply(&at(
            rotate("s4", "2026-01-01T14:00:00Z", Some("i0")),
            "2026-01-01T12:10:00Z",
        ));
        assert_eq!(rejected(&outcome).code, "integration_replaced");
    }

    fn request_reconcile(name: &str, integration_id: &str, reconcile_id: &str) -> ControlCommand {
        ControlCommand::RequestReconcile {
            name: name.to_owned(),
            integration_id: integration_id.to_owned(),
            reconcile_id: reconcile_id.to_owned(),
        }
    }

    /// A reconciliation request for the current incarnation is recorded with the record's time;
    /// a later one replaces it.
    #[test]
    fn reconcile_request_is_recorded() {
        let mut registry = Registry::new();
        let at = |command: ControlCommand, issued_at: &str| {
            let mut record = record(command);
            record.issued_at = issued_at.to_owned();
            record
        };
        assert!(
            registry
                .apply(&record(create_integration("bb", "i1", "root", true)))
                .is_ok()
        );
        assert_eq!(registry.reconcile_request("bb"), None);
        let first = registry.apply(&at(
            request_reconcile("bb", "i1", "rec_1"),
            "2026-01-01T10:00:00.000Z",
        ));
        assert_eq!(first, Ok(Applied::default()));
        assert_eq!(
            registry.reconcile_request("bb"),
            Some(&ReconcileRequest {
                reconcile_id: "rec_1".to_owned(),
                integration_id: "i1".to_owned(),
                requested_at: "2026-01-01T10:00:00.000Z".to_owned(),
            })
        );
        let second = registry.apply(&at(
            request_reconcile("bb", "i1", "rec_2"),
            "2026-01-01T10:05:00.000Z",
        ));
        assert!(second.is_ok());
        let latest = registry.reconcile_request("bb").expect("request");
        assert_eq!(
            (latest.reconcile_id.as_str(), latest.requested_at.as_str()),
            ("rec_2", "2026-01-01T10:05:00.000Z")
        );
        assert_eq!(
            request_reconcile("bb", "i1", "rec_2").entity_key(),
            "integration/bb"
        );
    }

    /// An unknown name is not found, another incarnation's id is `integration_replaced`, a
    /// malformed id is invalid; none of them changes anything.
    #[test]
    fn reconcile_request_rejections() {
        let (mut registry, _) = fold(vec![create_integration("bb", "i2", "root", true)]);
        let before = registry.clone();
        let unknown = registry.apply(&record(request_reconcile("nope", "i2", "rec_1")));
        assert_eq!(rejected(&unknown).kind, RejectionKind::NotFound);
        assert_eq!(rejected(&unknown).code, "integration_not_found");
        let stale = registry.apply(&record(request_reconcile("bb", "i1", "rec_1")));
        assert_eq!(rejected(&stale).kind, RejectionKind::Conflict);
        assert_eq!(rejected(&stale).code, "integration_replaced");
        let malformed = registry.apply(&record(request_reconcile("bb", "i2", "")));
        assert_eq!(rejected(&malformed).field, Some("reconcile_id"));
        assert_eq!(registry, before);
    }

    /// Deleting the integration forgets its request; the re-created name starts without one and
    /// refuses a request for the old incarnation.
    #[test]
    fn reconcile_request_is_forgotten_with_its_integration() {
        let (mut registry, outcomes) = fold(vec![
            create_integration("bb", "i1", "root", true),
            request_reconcile("bb", "i1", "rec_1"),
            ControlCommand::DeleteIntegration {
                name: "bb".to_owned(),
            },
        ]);
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        assert_eq!(registry.reconcile_request("bb"), None);
        assert!(
            registry
                .apply(&record(create_integration("bb", "i2", "root", true)))
                .is_ok()
        );
        assert_eq!(registry.reconcile_request("bb"), None);
        let old = registry.apply(&record(request_reconcile("bb", "i1", "rec_2")));
        assert_eq!(rejected(&old).code, "integration_replaced");
        assert_eq!(registry.reconcile_request("bb"), None);
        assert!(
            registry
                .apply(&record(request_reconcile("bb", "i2", "rec_3")))
                .is_ok()
        );
        assert_eq!(
            registry
                .reconcile_request("bb")
                .map(|r| (r.reconcile_id.as_str(), r.integration_id.as_str())),
            Some(("rec_3", "i2"))
        );
    }
}
