//! `/api-keys`: keys carry role bindings; their secrets are shown once and stored as hashes.

use crate::access::Principal;
use crate::commands::ControlCommand;
use crate::domain::{ApiKey, Role, RoleBinding};
use crate::registry::Registry;
use http::StatusCode;
use inlet_core::clock::now_rfc3339;
use inlet_core::secret::Secret;
use sha2::{Digest, Sha256};

use super::views::{ApiKeyList, ApiKeyView, CreateApiKey, CreatedApiKey};
use super::{Admin, Answer, KEY_PREFIX, Named, forbidden, require};
use crate::admin::error::{ApiError, empty, json};

/// Whether `principal` administers every space `key` is bound to (so it cannot grant or see more
/// than it holds).
pub(super) fn administers(
    principal: &Principal,
    registry: &Registry,
    bindings: &[RoleBinding],
) -> bool {
    bindings
        .iter()
        .all(|b| principal.has(registry, &b.space_id, Role::Admin))
}

impl Admin {
    pub(super) fn list_keys(&self, principal: &Principal) -> Answer {
        let registry = self.control.read();
        let api_keys = registry
            .api_keys()
            .filter(|k| administers(principal, &registry, &k.bindings))
            .map(ApiKeyView::from)
            .collect();
        Ok(json(StatusCode::OK, &ApiKeyList { api_keys }))
    }

    /// Creating a key needs admin on every space it binds.
    pub(super) async fn create_key(&self, principal: &Principal, body: CreateApiKey) -> Answer {
        if body.bindings.is_empty() {
            return Err(ApiError::invalid(
                "bindings",
                "give at least one role binding",
            ));
        }
        let bindings: Vec<RoleBinding> = body
            .bindings
            .iter()
            .map(|b| RoleBinding {
                space_id: b.space_id.clone(),
                role: b.role.into(),
            })
            .collect();
        {
            let registry = self.control.read();
            for binding in &bindings {
                require(
                    principal,
                    &registry,
                    &binding.space_id,
                    Role::Admin,
                    "granting a role",
                    Named::InField("bindings"),
                )?;
            }
        }
        let id = format!("k{}", Secret::generate(6).expose());
        let secret = Secret::generate(24);
        let key = ApiKey {
            id: id.clone(),
            name: body.name,
            secret_sha256: hex::encode(Sha256::digest(secret.expose().as_bytes())),
            bindings,
            created_at: now_rfc3339(),
        };
        let view = ApiKeyView::from(&key);
        self.apply(principal, ControlCommand::CreateApiKey { key })
            .await?;
        Ok(json(
            StatusCode::CREATED,
            &CreatedApiKey {
                key: view,
                secret: format!("{KEY_PREFIX}{id}.{}", secret.expose()),
            },
        ))
    }

    /// Revoking a key needs admin on every space it binds; unknown keys are 404.
    pub(super) async fn delete_key(&self, principal: &Principal, id: &str) -> Answer {
        {
            let registry = self.control.read();
            let not_found =
                || ApiError::not_found("api_key_not_found", format!("no API key `{id}`"));
            let key = registry.api_key(id).ok_or_else(not_found)?;
            if !administers(principal, &registry, &key.bindings) {
                return Err(
                    if key
                        .bindings
                        .iter()
                        .any(|b| principal.can_read(&registry, &b.space_id))
                    {
                        forbidden("revoking this key needs admin on every space it is bound to")
                    } else {
                        not_found()
                    },
                );
            }
        }
        self.apply(
            principal,
            ControlCommand::DeleteApiKey { id: id.to_owned() },
        )
        .await?;
        Ok(empty(StatusCode::NO_CONTENT))
    }
}
