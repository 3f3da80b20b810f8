//! Builders for tests of the stages (enabled by the `testing` feature): control records, a default
//! integration, stacks, and a registry folded from them.

use crate::commands::{CONTROL_SCHEMA, ControlCommand, ControlRecord, StackSpec};
use crate::crypto::{Sealed, SecretsKey};
use crate::domain::Integration;
use crate::registry::Registry;
use inlet_core::secret::Secret;

/// The key test integrations are sealed with.
pub fn secrets_key() -> SecretsKey {
    SecretsKey::parse(&"42".repeat(32)).unwrap_or_else(|_| SecretsKey::generate())
}

/// A control record around `command`.
pub fn record(command: ControlCommand) -> ControlRecord {
    ControlRecord {
        schema: CONTROL_SCHEMA.to_owned(),
        command_id: "test".to_owned(),
        origin: "test".to_owned(),
        issued_at: "2026-01-01T00:00:00Z".to_owned(),
        actor: "test".to_owned(),
        command,
    }
}

/// An integration named `name` with incarnation `id` in `space_id`, its webhook secret `secret`
/// sealed with [`secrets_key`].
pub fn integration(
    name: &str,
    id: &str,
    space_id: &str,
    is_default: bool,
    secret: &str,
) -> Integration {
    let mut integration = Integration {
        name: name.to_owned(),
        id: id.to_owned(),
        is_default,
        space_id: space_id.to_owned(),
        api_host_url: "https://bitbucket.example.com".to_owned(),
        user_facing_host_url: "https://bitbucket.example.com".to_owned(),
        username: "inlet".to_owned(),
        access_token: Sealed::default(),
        labels: vec![],
        description: String::new(),
        webhook_secret: Sealed::default(),
        previous_webhook_secret: None,
        older_webhook_secrets: vec![],
        created_at: "2026-01-01T00:00:00Z".to_owned(),
    };
    integration.webhook_secret =
        secrets_key().seal(&Secret::new(secret), &integration.webhook_secret_context());
    integration
}

/// A stack on `repository` tracking `branch`, using `integration`, in the root space.
pub fn stack(id: &str, integration: &str, repository: &str, branch: &str) -> StackSpec {
    StackSpec {
        id: id.to_owned(),
        name: id.to_owned(),
        space_id: "root".to_owned(),
        integration: integration.to_owned(),
        repository: repository.to_owned(),
        branch: branch.to_owned(),
        project_root: String::new(),
        additional_project_globs: vec![],
        labels: vec![],
        disabled: false,
    }
}

/// Folds `commands` into a fresh registry, panicking on a rejection.
pub fn registry(commands: impl IntoIterator<Item = ControlCommand>) -> Registry {
    let mut registry = Registry::new();
    for command in commands {
        apply(&mut registry, command);
    }
    registry
}

/// Applies `command`, panicking on a rejection.
pub fn apply(registry: &mut Registry, command: ControlCommand) {
    let kind = command.kind();
    if let Err(rejection) = registry.apply(&record(command)) {
        panic!("{kind} rejected: {rejection:?}");
    }
}
