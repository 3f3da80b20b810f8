//! `/integrations/{name}/bitbucket-webhooks`: the webhooks inlet provisions in Bitbucket for an
//! integration, and keeps in sync (DESIGN §4.2, "Webhooks in Bitbucket").
//!
//! What enters: a project key and optional repository slug; the integration's API host, its
//! sealed access token, its webhook URL and current secret (the same as `…/details`). What leaves:
//! the webhook as Bitbucket answered, recorded as managed on the control log (never its secret);
//! on rotation, which managed webhooks now carry the new secret and which do not.
//!
//! The guarantee: a webhook is recorded as managed only after Bitbucket answered the write that
//! made it so; when Bitbucket refuses or cannot be reached the answer is 502 with Bitbucket's
//! message and the log is untouched. A sync is idempotent (the client updates the webhook with
//! the integration's URL, else creates one). Everything here needs admin of the integration's
//! space (root admin for the default integration), like the secret itself.

use futures::future::join_all;
use http::StatusCode;
use inlet_bitbucket::client::{CallError, Server};
use inlet_bitbucket::events;
use inlet_bitbucket::webhooks::{WebhookScope, WebhookSpec};
use inlet_core::secret::Secret;

use super::integrations::administered;
use super::views::{
    BitbucketWebhookFailure, BitbucketWebhookList, BitbucketWebhookView, SyncBitbucketWebhook,
    SyncedBitbucketWebhook,
};
use super::{Admin, Answer};
use crate::access::Principal;
use crate::admin::error::{ApiError, empty, json};
use crate::commands::ControlCommand;
use crate::domain::{Integration, ManagedWebhook};
use crate::fold::{validate_project_key, validate_repository_slug};

/// How Bitbucket is called for one integration: where, with which token, and what to write.
struct Target {
    server: Server,
    spec: WebhookSpec,
}

fn scope_of(webhook: &ManagedWebhook) -> WebhookScope {
    WebhookScope::new(&webhook.project_key, webhook.repository_slug.as_deref())
}

/// Bitbucket's refusal or absence as the admin API's answer: 502 with Bitbucket's message; a
/// call inlet would not make (a `private://` host, no token, plain http not allowed) is a
/// conflict with the integration's settings instead, which the caller can fix.
fn bitbucket_error(err: &CallError) -> ApiError {
    let code = match err {
        CallError::NotAllowed { .. } => {
            return ApiError::conflict("bitbucket_not_callable", err.to_string());
        }
        CallError::Status { status, .. } if *status < 500 => "bitbucket_refused",
        _ => "bitbucket_unavailable",
    };
    ApiError::BadGateway {
        code,
        message: err.to_string(),
    }
}

fn not_managed(name: &str, id: &str) -> ApiError {
    ApiError::not_found(
        "bitbucket_webhook_not_found",
        format!("integration `{name}` manages no Bitbucket webhook `{id}`"),
    )
}

impl Admin {
    /// The server and the webhook spec of `integration`: its access token and current secret
    /// opened with this process's secrets key.
    fn target(&self, integration: &Integration) -> Result<Target, ApiError> {
        let token = if integration.access_token.is_empty() {
            Secret::new("")
        } else {
            self.deps
                .secrets_key
                .open(
                    &integration.access_token,
                    &integration.access_token_context(),
                )
                .map_err(|err| {
                    tracing::error!(integration = %integration.name, error = %err, "cannot open the access token");
                    ApiError::Internal {
                        code: "secrets_key_mismatch",
                        message: "the access token cannot be opened with this process's secrets key"
                            .to_owned(),
                    }
                })?
        };
        let details = self.details(integration)?;
        Ok(Target {
            server: Server {
                base_url: integration.api_host_url.clone(),
                token,
            },
            spec: WebhookSpec {
                name: format!("inlet ({})", integration.name),
                url: details.webhook_url,
                secret: Secret::new(details.webhook_secret),
                events: events::SUBSCRIBED.map(str::to_owned).to_vec(),
            },
        })
    }

    pub(super) fn list_bitbucket_webhooks(&self, principal: &Principal, name: &str) -> Answer {
        let registry = self.control.read();
        administered(principal, &registry, name, "listing Bitbucket webhooks")?;
        let bitbucket_webhooks = registry
            .managed_webhooks(name)
            .map(BitbucketWebhookView::from)
            .collect();
        Ok(json(
            StatusCode::OK,
            &BitbucketWebhookList { bitbucket_webhooks },
        ))
    }

    /// Creates or updates the webhook of the project or repository in Bitbucket, then records it.
    pub(super) async fn sync_bitbucket_webhook(
        &self,
        principal: &Principal,
        name: &str,
        body: SyncBitbucketWebhook,
    ) -> Answer {
        validate_project_key(&body.project_key)?;
        if let Some(slug) = &body.repository_slug {
            validate_repository_slug(slug)?;
        }
        let (target, integration_id) = {
            let registry = self.control.read();
            let integration =
                administered(principal, &registry, name, "syncing a Bitbucket webhook")?;
            (self.target(integration)?, integration.id.clone())
        };
        let scope = WebhookScope::new(&body.project_key, body.repository_slug.as_deref());
        let synced = self
            .deps
            .bitbucket
            .sync_webhook(&target.server, &scope, &target.spec)
            .await
            .map_err(|err| bitbucket_error(&err))?;
        let url = if synced.webhook.url.is_empty() {
            target.spec.url.clone()
        } else {
            synced.webhook.url.clone()
        };
        let webhook = ManagedWebhook {
            id: synced.webhook.id,
            project_key: body.project_key,
            repository_slug: body.repository_slug,
            url,
            events: synced.webhook.events.clone(),
            active: synced.webhook.active,
        };
        self.apply(
            principal,
            ControlCommand::RecordBitbucketWebhook {
                name: name.to_owned(),
                integration_id,
                webhook: webhook.clone(),
            },
        )
        .await?;
        Ok(json(
            StatusCode::OK,
            &SyncedBitbucketWebhook {
                webhook: BitbucketWebhookView::from(&webhook),
                created: synced.created,
                refused_events: synced.refused_events,
            },
        ))
    }

    /// Deletes a managed webhook in Bitbucket (one already gone there counts as deleted), then
    /// stops managing it.
    pub(super) async fn delete_bitbucket_webhook(
        &self,
        principal: &Principal,
        name: &str,
        id: &str,
    ) -> Answer {
        let (target, webhook) = {
            let registry = self.control.read();
            let integration =
                administered(principal, &registry, name, "deleting a Bitbucket webhook")?;
            let webhook = id
                .parse::<u64>()
                .ok()
                .filter(|_| id.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|id| registry.managed_webhook(name, id))
                .cloned()
                .ok_or_else(|| not_managed(name, id))?;
            (self.target(integration)?, webhook)
        };
        self.deps
            .bitbucket
            .delete_webhook(&target.server, &scope_of(&webhook), webhook.id)
            .await
            .map_err(|err| bitbucket_error(&err))?;
        self.apply(
            principal,
            ControlCommand::ForgetBitbucketWebhook {
                name: name.to_owned(),
                id: webhook.id,
            },
        )
        .await?;
        Ok(empty(StatusCode::NO_CONTENT))
    }

    /// Pushes the integration's current secret to every webhook it manages, all at once (the
    /// client bounds requests per host): which were updated, and which were not and why.
    pub(super) async fn push_secret(
        &self,
        name: &str,
    ) -> (Vec<BitbucketWebhookView>, Vec<BitbucketWebhookFailure>) {
        let (target, managed) = {
            let registry = self.control.read();
            let managed: Vec<ManagedWebhook> = registry.managed_webhooks(name).cloned().collect();
            let target = match registry.integration(name) {
                Some(integration) => self.target(integration),
                None => Err(ApiError::not_found(
                    "integration_not_found",
                    format!("no integration named `{name}`"),
                )),
            };
            (target, managed)
        };
        let target = match target {
            Ok(target) => target,
            Err(err) => {
                let failures = managed.iter().map(|w| failure(w, &err)).collect();
                return (Vec::new(), failures);
            }
        };
        let updates = managed.iter().map(|webhook| {
            let spec = WebhookSpec {
                events: webhook.events.clone(),
                ..target.spec.clone()
            };
            let client = &self.deps.bitbucket;
            let server = &target.server;
            async move {
                let result = client
                    .update_webhook(server, &scope_of(webhook), webhook.id, &spec)
                    .await;
                (webhook, result)
            }
        });
        let mut updated = Vec::new();
        let mut failed = Vec::new();
        for (webhook, result) in join_all(updates).await {
            match result {
                Ok(_) => updated.push(BitbucketWebhookView::from(webhook)),
                Err(err) => {
                    tracing::warn!(integration = name, webhook = webhook.id, error = %err, "the new secret did not reach a Bitbucket webhook");
                    failed.push(failure(webhook, &bitbucket_error(&err)));
                }
            }
        }
        (updated, failed)
    }
}

fn failure(webhook: &ManagedWebhook, err: &ApiError) -> BitbucketWebhookFailure {
    BitbucketWebhookFailure {
        id: webhook.id,
        project_key: webhook.project_key.clone(),
        repository_slug: webhook.repository_slug.clone(),
        code: err.code().to_owned(),
        message: err.message(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refusals are 502 `bitbucket_refused`, outages 502 `bitbucket_unavailable`, both with
    /// Bitbucket's message; calls inlet would not make are 409.
    #[test]
    fn errors_map_to_statuses() {
        let refused = bitbucket_error(&CallError::Status {
            status: 403,
            messages: vec!["You are not permitted to access this resource".to_owned()],
            attempts: 1,
        });
        assert_eq!(
            (refused.status(), refused.code()),
            (StatusCode::BAD_GATEWAY, "bitbucket_refused")
        );
        assert!(refused.message().contains("not permitted"));
        let down = bitbucket_error(&CallError::Timeout { after_ms: 10 });
        assert_eq!(
            (down.status(), down.code()),
            (StatusCode::BAD_GATEWAY, "bitbucket_unavailable")
        );
        let not_allowed = bitbucket_error(&CallError::NotAllowed {
            reason: "the integration has no access token".to_owned(),
        });
        assert_eq!(not_allowed.status(), StatusCode::CONFLICT);
    }
}
