//! `/spaces`: the tree that access and integration availability follow.

use crate::access::Principal;
use crate::commands::{ControlCommand, SpacePatch};
use crate::domain::{ApiKey, ROOT_SPACE, Role, Space};
use http::StatusCode;

use super::keys::administers;
use super::views::{CreateSpace, SpaceList, SpaceView, UpdateSpace};
use super::{Admin, Answer, Named, forbidden, generate_id, require};
use crate::admin::error::{ApiError, empty, json};

impl Admin {
    pub(super) fn list_spaces(&self, principal: &Principal) -> Answer {
        let registry = self.control.read();
        let spaces = registry
            .spaces()
            .filter(|s| principal.can_read(&registry, &s.id))
            .map(SpaceView::from)
            .collect();
        Ok(json(StatusCode::OK, &SpaceList { spaces }))
    }

    pub(super) fn get_space(&self, principal: &Principal, id: &str) -> Answer {
        let registry = self.control.read();
        match registry.space(id) {
            Some(space) if principal.can_read(&registry, id) => {
                Ok(json(StatusCode::OK, &SpaceView::from(space)))
            }
            _ => Err(space_not_found(id)),
        }
    }

    /// Creating a space needs admin on its parent.
    pub(super) async fn create_space(&self, principal: &Principal, body: CreateSpace) -> Answer {
        let parent = body.parent_id.unwrap_or_else(|| ROOT_SPACE.to_owned());
        require(
            principal,
            &self.control.read(),
            &parent,
            Role::Admin,
            "creating a space",
            Named::InField("parent_id"),
        )?;
        let space = Space {
            id: body.id.unwrap_or_else(|| generate_id(&body.name)),
            name: body.name,
            parent_id: Some(parent),
            inherit_entities: body.inherit_entities.unwrap_or(false),
        };
        let response = json(StatusCode::CREATED, &SpaceView::from(&space));
        self.apply(principal, ControlCommand::CreateSpace { space })
            .await?;
        Ok(response)
    }

    /// Renaming needs admin on the space. Turning inheritance on needs admin on the parent too:
    /// it makes the parent's integrations and stacks reachable from the space, which an admin of
    /// the space alone must not be able to grant itself.
    pub(super) async fn update_space(
        &self,
        principal: &Principal,
        id: &str,
        body: UpdateSpace,
    ) -> Answer {
        self.require_space_admin(principal, id, "changing a space")?;
        if body.inherit_entities == Some(true) {
            let registry = self.control.read();
            let space = registry.space(id).ok_or_else(|| space_not_found(id))?;
            if !space.inherit_entities {
                let parent = space.parent_id.as_deref().unwrap_or(ROOT_SPACE);
                if !principal.has(&registry, parent, Role::Admin) {
                    return Err(forbidden(
                        "turning on inherit_entities needs the admin role on the parent space: \
                         it makes the parent's integrations and stacks reachable from this one",
                    ));
                }
            }
        }
        let patch = SpacePatch {
            name: body.name,
            inherit_entities: body.inherit_entities,
        };
        self.apply(
            principal,
            ControlCommand::UpdateSpace {
                id: id.to_owned(),
                patch,
            },
        )
        .await?;
        self.get_space(principal, id)
    }

    /// Deleting needs admin on the space; the fold refuses (409) while it holds anything or keys
    /// are bound to it. The answer names only the keys the caller could list itself (those whose
    /// every binding it administers) and counts the others, so it reveals no key id the caller
    /// cannot see.
    pub(super) async fn delete_space(&self, principal: &Principal, id: &str) -> Answer {
        self.require_space_admin(principal, id, "deleting a space")?;
        {
            let registry = self.control.read();
            let (listed, hidden): (Vec<&ApiKey>, Vec<&ApiKey>) = registry
                .api_keys()
                .filter(|k| k.bindings.iter().any(|b| b.space_id == id))
                .partition(|k| administers(principal, &registry, &k.bindings));
            if !listed.is_empty() || !hidden.is_empty() {
                let mut names: Vec<String> = listed.iter().map(|k| format!("`{}`", k.id)).collect();
                if !hidden.is_empty() {
                    names.push(format!(
                        "{} more bound to spaces you do not administer",
                        hidden.len()
                    ));
                }
                return Err(ApiError::conflict(
                    "space_has_api_keys",
                    format!(
                        "API keys are bound to space `{id}`: {}; revoke them first",
                        names.join(", ")
                    ),
                ));
            }
        }
        self.apply(principal, ControlCommand::DeleteSpace { id: id.to_owned() })
            .await?;
        Ok(empty(StatusCode::NO_CONTENT))
    }

    fn require_space_admin(
        &self,
        principal: &Principal,
        id: &str,
        action: &str,
    ) -> Result<(), ApiError> {
        let registry = self.control.read();
        if registry.space(id).is_none() {
            return Err(space_not_found(id));
        }
        require(principal, &registry, id, Role::Admin, action, Named::InPath)
    }
}

fn space_not_found(id: &str) -> ApiError {
    ApiError::not_found("space_not_found", format!("no space `{id}`"))
}
