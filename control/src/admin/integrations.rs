//! `/integrations`: Bitbucket Data Center integrations and their webhook secrets.
//!
//! The default integration is listed to every key; a space-level one to readers of its space.
//! Creating, changing, deleting, rotating and seeing the secret need admin of the integration's
//! space (the root space for the default one). The access token is write-only.

use std::time::Duration;

use crate::access::Principal;
use crate::commands::{ControlCommand, IntegrationPatch};
use crate::crypto::Sealed;
use crate::domain::{Integration, ROOT_SPACE, Role};
use crate::registry::Registry;
use http::StatusCode;
use inlet_core::clock::{is_future, now_rfc3339, rfc3339_after};
use inlet_core::secret::Secret;

use super::views::{
    CreateIntegration, IntegrationDetails, IntegrationList, IntegrationView, RotateSecret,
    RotatedSecret, UpdateIntegration,
};
use super::{Admin, Answer, Named, forbidden, require};
use crate::admin::error::{ApiError, empty, json};
use crate::domain::WEBHOOK_PATH_PREFIX;

/// Default grace period of a rotated-out secret.
const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest grace period.
const MAX_GRACE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "integration_not_found",
        format!("no integration named `{name}`"),
    )
}

/// The integration if `principal` may see it (404 otherwise, so existence does not leak).
pub(super) fn visible<'r>(
    principal: &Principal,
    registry: &'r Registry,
    name: &str,
) -> Result<&'r Integration, ApiError> {
    registry
        .integration(name)
        .filter(|i| principal.can_see_integration(registry, i))
        .ok_or_else(|| not_found(name))
}

/// The integration if `principal` administers it: 404 if invisible, 403 if only visible.
pub(super) fn administered<'r>(
    principal: &Principal,
    registry: &'r Registry,
    name: &str,
    action: &str,
) -> Result<&'r Integration, ApiError> {
    let integration = visible(principal, registry, name)?;
    if !principal.can_admin_integration(registry, integration) {
        return Err(forbidden(format!(
            "{action} needs the admin role on space `{}`",
            integration.space_id
        )));
    }
    Ok(integration)
}

impl Admin {
    pub(super) fn webhook_url(&self, name: &str) -> String {
        format!("{}{WEBHOOK_PATH_PREFIX}{name}", self.deps.public_base_url)
    }

    fn seal(&self, secret: &Secret, context: &str) -> Sealed {
        self.deps.secrets_key.seal(secret, context)
    }

    pub(super) fn list_integrations(&self, principal: &Principal) -> Answer {
        let registry = self.control.read();
        let integrations = registry
            .integrations()
            .filter(|i| principal.can_see_integration(&registry, i))
            .map(IntegrationView::from)
            .collect();
        Ok(json(StatusCode::OK, &IntegrationList { integrations }))
    }

    pub(super) fn get_integration(&self, principal: &Principal, name: &str) -> Answer {
        let registry = self.control.read();
        let integration = visible(principal, &registry, name)?;
        Ok(json(StatusCode::OK, &IntegrationView::from(integration)))
    }

    pub(super) fn integration_details(&self, principal: &Principal, name: &str) -> Answer {
        let registry = self.control.read();
        let integration = administered(principal, &registry, name, "seeing the webhook secret")?;
        Ok(json(StatusCode::OK, &self.details(integration)?))
    }

    pub(super) fn details(
        &self,
        integration: &Integration,
    ) -> Result<IntegrationDetails, ApiError> {
        let secret = self
            .deps
            .secrets_key
            .open(
                &integration.webhook_secret,
                &integration.webhook_secret_context(),
            )
            .map_err(|err| {
                tracing::error!(integration = %integration.name, error = %err, "cannot open the webhook secret");
                ApiError::Internal {
                    code: "secrets_key_mismatch",
                    message: "the webhook secret cannot be opened with this process's secrets key"
                        .to_owned(),
                }
            })?;
        Ok(IntegrationDetails {
            name: integration.name.clone(),
            webhook_url: self.webhook_url(&integration.name),
            webhook_secret: secret.expose().to_owned(),
            previous_secret_valid_until: integration
                .previous_webhook_secret
                .as_ref()
                .filter(|p| is_future(&p.valid_until))
                .map(|p| p.valid_until.clone()),
        })
    }

    /// `http://` Bitbucket hosts only where the operator allowed them (labs, tests): the access
    /// token would cross the network in clear text.
    fn check_scheme(&self, url: &str) -> Result<(), ApiError> {
        if url.starts_with("http://") && !self.deps.allow_http {
            return Err(ApiError::invalid(
                "api_host_url",
                "http:// sends the access token in clear text; use https:// (or set \
                 INLET_BITBUCKET_ALLOW_HTTP=true for a lab or test Bitbucket)",
            ));
        }
        Ok(())
    }

    pub(super) async fn create_integration(
        &self,
        principal: &Principal,
        body: CreateIntegration,
    ) -> Answer {
        self.check_scheme(&body.api_host_url)?;
        let is_default = body.is_default.unwrap_or(false);
        let space_id = match (is_default, body.space_id) {
            (true, Some(space)) if space != ROOT_SPACE => {
                return Err(ApiError::invalid(
                    "space_id",
                    "the default integration belongs to the root space; omit space_id",
                ));
            }
            (_, Some(space)) => space,
            (_, None) => ROOT_SPACE.to_owned(),
        };
        require(
            principal,
            &self.control.read(),
            &space_id,
            Role::Admin,
            if is_default {
                "creating the default integration"
            } else {
                "creating an integration"
            },
            Named::InField("space_id"),
        )?;
        let id = Secret::generate(8).expose().to_owned();
        let webhook_context = format!("webhook_secret/{id}");
        let token_context = format!("access_token/{id}");
        let integration = Integration {
            user_facing_host_url: body
                .user_facing_host_url
                .unwrap_or_else(|| body.api_host_url.clone()),
            name: body.name,
            is_default,
            space_id,
            api_host_url: body.api_host_url,
            username: body.username.unwrap_or_default(),
            access_token: match body.access_token {
                Some(token) if !token.is_empty() => self.seal(&Secret::new(token), &token_context),
                _ => Sealed::default(),
            },
            labels: body.labels.unwrap_or_default(),
            description: body.description.unwrap_or_default(),
            webhook_secret: self.seal(&Secret::generate(32), &webhook_context),
            previous_webhook_secret: None,
            older_webhook_secrets: Vec::new(),
            created_at: now_rfc3339(),
            id,
        };
        let response = json(StatusCode::CREATED, &IntegrationView::from(&integration));
        self.apply(principal, ControlCommand::CreateIntegration { integration })
            .await?;
        Ok(response)
    }

    /// Changing a field fixed at creation is a conflict with the integration's state (409
    /// `immutable_field`, the message starting with the field), not a malformed request: the same
    /// body is accepted when the value equals the current one.
    pub(super) async fn update_integration(
        &self,
        principal: &Principal,
        name: &str,
        body: UpdateIntegration,
    ) -> Answer {
        if let Some(url) = &body.api_host_url {
            self.check_scheme(url)?;
        }
        let patch = {
            let registry = self.control.read();
            let integration = administered(principal, &registry, name, "changing an integration")?;
            if body.name.as_deref().is_some_and(|n| n != integration.name) {
                return Err(immutable(
                    "name",
                    "an integration's name cannot change: it is part of the webhook URL; \
                     create a new integration instead",
                ));
            }
            if body.is_default.is_some_and(|d| d != integration.is_default) {
                return Err(immutable("is_default", "cannot change after creation"));
            }
            if body
                .space_id
                .as_deref()
                .is_some_and(|s| s != integration.space_id)
            {
                return Err(immutable("space_id", "cannot change after creation"));
            }
            IntegrationPatch {
                api_host_url: body.api_host_url,
                user_facing_host_url: body.user_facing_host_url,
                username: body.username,
                access_token: body
                    .access_token
                    .map(|t| self.seal(&Secret::new(t), &integration.access_token_context())),
                labels: body.labels,
                description: body.description,
            }
        };
        self.apply(
            principal,
            ControlCommand::UpdateIntegration {
                name: name.to_owned(),
                patch,
            },
        )
        .await?;
        self.get_integration(principal, name)
    }

    pub(super) async fn delete_integration(&self, principal: &Principal, name: &str) -> Answer {
        administered(
            principal,
            &self.control.read(),
            name,
            "deleting an integration",
        )?;
        self.apply(
            principal,
            ControlCommand::DeleteIntegration {
                name: name.to_owned(),
            },
        )
        .await?;
        Ok(empty(StatusCode::NO_CONTENT))
    }

    /// A new secret; the old one keeps verifying for the grace period, so Bitbucket can be
    /// updated without losing webhooks. The managed Bitbucket webhooks get the new secret
    /// after the rotation is recorded; the answer says which did and which did not.
    pub(super) async fn rotate_secret(
        &self,
        principal: &Principal,
        name: &str,
        body: RotateSecret,
    ) -> Answer {
        let grace = body
            .grace_period_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_GRACE);
        if grace > MAX_GRACE {
            return Err(ApiError::invalid(
                "grace_period_secs",
                format!("at most {} seconds", MAX_GRACE.as_secs()),
            ));
        }
        let (secret, integration_id) = {
            let registry = self.control.read();
            let integration = administered(principal, &registry, name, "rotating the secret")?;
            (
                self.seal(&Secret::generate(32), &integration.webhook_secret_context()),
                integration.id.clone(),
            )
        };
        self.apply(
            principal,
            ControlCommand::RotateWebhookSecret {
                name: name.to_owned(),
                secret,
                previous_valid_until: rfc3339_after(grace),
                integration_id: Some(integration_id),
            },
        )
        .await?;
        let details = {
            let registry = self.control.read();
            let integration = registry.integration(name).ok_or_else(|| not_found(name))?;
            self.details(integration)?
        };
        let (bitbucket_webhooks_updated, bitbucket_webhooks_failed) = self.push_secret(name).await;
        Ok(json(
            StatusCode::OK,
            &RotatedSecret {
                details,
                bitbucket_webhooks_updated,
                bitbucket_webhooks_failed,
            },
        ))
    }
}

fn immutable(field: &str, why: &str) -> ApiError {
    ApiError::conflict("immutable_field", format!("{field}: {why}"))
}
