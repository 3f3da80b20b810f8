//! Who may do what: API key role bindings applied to the space tree.
//!
//! - A binding `{space_id, role}` grants `role` on that space and all its descendants.
//! - The reference product's inheritance rule: any role on a space that inherits entities grants
//!   read on its parent, and on upward through parents that inherit too.
//! - The default integration is listed to every key; its details only to root admins.
//!   A space-level integration is listed to readers of its space; details to its admins.
//! - Reconciling an integration needs writer on its space; the default one, writer anywhere.

use crate::domain::{ApiKey, Integration, ROOT_SPACE, Role, RoleBinding};
use crate::registry::Registry;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The bootstrap key from configuration: admin of the root space.
    Bootstrap,
    /// An API key from the control log.
    Key {
        /// The key's id (recorded as the actor of its changes).
        id: String,
        /// Its role bindings.
        bindings: Vec<RoleBinding>,
    },
}

impl Principal {
    /// The principal of an API key.
    pub fn of_key(key: &ApiKey) -> Self {
        Principal::Key {
            id: key.id.clone(),
            bindings: key.bindings.clone(),
        }
    }

    /// The actor name recorded in control commands.
    pub fn actor(&self) -> &str {
        match self {
            Principal::Bootstrap => "bootstrap",
            Principal::Key { id, .. } => id,
        }
    }

    fn bindings(&self) -> std::borrow::Cow<'_, [RoleBinding]> {
        match self {
            Principal::Bootstrap => std::borrow::Cow::Owned(vec![RoleBinding {
                space_id: ROOT_SPACE.to_owned(),
                role: Role::Admin,
            }]),
            Principal::Key { bindings, .. } => std::borrow::Cow::Borrowed(bindings),
        }
    }

    /// The strongest role bound on `space_id` or one of its ancestors.
    pub fn role_in(&self, registry: &Registry, space_id: &str) -> Option<Role> {
        let chain = ancestors(registry, space_id);
        self.bindings()
            .iter()
            .filter(|b| chain.iter().any(|s| *s == b.space_id))
            .map(|b| b.role)
            .max()
    }

    /// Whether the principal holds at least `role` on `space_id`.
    pub fn has(&self, registry: &Registry, space_id: &str, role: Role) -> bool {
        self.role_in(registry, space_id).is_some_and(|r| r >= role)
    }

    /// Whether the principal may read entities of `space_id`: any bound role there, or any role on
    /// a space that reaches `space_id` upward through inheriting spaces.
    pub fn can_read(&self, registry: &Registry, space_id: &str) -> bool {
        if self.role_in(registry, space_id).is_some() {
            return true;
        }
        self.bindings().iter().any(|binding| {
            let mut current = registry.space(&binding.space_id);
            for _ in 0..=registry.sizes().spaces {
                let Some(space) = current else { return false };
                if !space.inherit_entities {
                    return false;
                }
                let Some(parent) = space.parent_id.as_deref() else {
                    return false;
                };
                if parent == space_id {
                    return true;
                }
                current = registry.space(parent);
            }
            false
        })
    }

    /// Whether the integration appears in the principal's listings.
    pub fn can_see_integration(&self, registry: &Registry, integration: &Integration) -> bool {
        integration.is_default || self.can_read(registry, &integration.space_id)
    }

    /// Whether the principal may see the integration's webhook secret, change or delete it: admin
    /// of its space (the root space for the default integration).
    pub fn can_admin_integration(&self, registry: &Registry, integration: &Integration) -> bool {
        self.has(registry, &integration.space_id, Role::Admin)
    }

    /// Whether the principal may ask for a reconciliation of the integration: writer of its space;
    /// for the default integration, which every key sees and every space may use, writer (or
    /// admin) of any space.
    pub fn can_reconcile_integration(
        &self,
        registry: &Registry,
        integration: &Integration,
    ) -> bool {
        if integration.is_default {
            return self.bindings().iter().any(|b| b.role >= Role::Writer);
        }
        self.has(registry, &integration.space_id, Role::Writer)
    }
}

/// `space_id` and its ancestors up to the root, nearest first.
fn ancestors<'a>(registry: &'a Registry, space_id: &'a str) -> Vec<&'a str> {
    let mut chain = Vec::new();
    let mut current = Some(space_id);
    while let Some(id) = current {
        if chain.contains(&id) || chain.len() > registry.sizes().spaces {
            break;
        }
        chain.push(id);
        current = registry.space(id).and_then(|s| s.parent_id.as_deref());
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{CONTROL_SCHEMA, ControlCommand, ControlRecord};
    use crate::domain::Space;

    /// root ─ parent ─ child (inherits)
    ///      │        └ isolated (does not inherit)
    ///      └ unrelated
    fn tree() -> Registry {
        let mut registry = Registry::new();
        for (id, parent, inherit) in [
            ("parent", "root", true),
            ("child", "parent", true),
            ("isolated", "parent", false),
            ("unrelated", "root", false),
        ] {
            let outcome = registry.apply(&ControlRecord {
                schema: CONTROL_SCHEMA.to_owned(),
                command_id: "c".to_owned(),
                origin: "t".to_owned(),
                issued_at: "2026-01-01T00:00:00Z".to_owned(),
                actor: "t".to_owned(),
                command: ControlCommand::CreateSpace {
                    space: Space {
                        id: id.to_owned(),
                        name: id.to_owned(),
                        parent_id: Some(parent.to_owned()),
                        inherit_entities: inherit,
                    },
                },
            });
            assert!(outcome.is_ok());
        }
        registry
    }

    fn key(space: &str, role: Role) -> Principal {
        Principal::Key {
            id: "k".to_owned(),
            bindings: vec![RoleBinding {
                space_id: space.to_owned(),
                role,
            }],
        }
    }

    /// A binding covers its space and descendants, not ancestors or siblings.
    #[test]
    fn bindings_cover_descendants() {
        let registry = tree();
        let writer = key("parent", Role::Writer);
        assert_eq!(writer.role_in(&registry, "parent"), Some(Role::Writer));
        assert_eq!(writer.role_in(&registry, "child"), Some(Role::Writer));
        assert_eq!(writer.role_in(&registry, "isolated"), Some(Role::Writer));
        assert_eq!(writer.role_in(&registry, "root"), None);
        assert_eq!(writer.role_in(&registry, "unrelated"), None);
        assert!(writer.has(&registry, "child", Role::Reader));
        assert!(!writer.has(&registry, "child", Role::Admin));
    }

    /// Any role on an inheriting child grants read (only read) on its ancestors through inheriting
    /// spaces; a non-inheriting child grants nothing upward.
    #[test]
    fn inheritance_grants_read_upward() {
        let registry = tree();
        let child_reader = key("child", Role::Reader);
        assert!(child_reader.can_read(&registry, "parent"));
        assert!(
            child_reader.can_read(&registry, "root"),
            "parent inherits too"
        );
        assert!(!child_reader.has(&registry, "parent", Role::Writer));
        assert!(!child_reader.can_read(&registry, "unrelated"));
        assert!(!child_reader.can_read(&registry, "isolated"));
        let isolated_admin = key("isolated", Role::Admin);
        assert!(!isolated_admin.can_read(&registry, "parent"));
    }

    /// The bootstrap key is root admin everywhere.
    #[test]
    fn bootstrap_is_root_admin() {
        let registry = tree();
        for space in ["root", "parent", "child", "unrelated"] {
            assert!(Principal::Bootstrap.has(&registry, space, Role::Admin));
        }
    }

    /// Reconciling needs writer on the integration's space (readers and inherited read do not
    /// suffice); the default integration, writer or admin of any space.
    #[test]
    fn reconcile_needs_a_writer() {
        let mut registry = tree();
        for integration in [
            crate::testing::integration("default", "i0", "root", true, "s0"),
            crate::testing::integration("parent-bb", "i1", "parent", false, "s1"),
        ] {
            crate::testing::apply(
                &mut registry,
                ControlCommand::CreateIntegration { integration },
            );
        }
        let default = registry.integration("default").expect("default").clone();
        let parent_bb = registry
            .integration("parent-bb")
            .expect("parent-bb")
            .clone();
        let cases = [
            (key("parent", Role::Writer), true, true),
            (key("parent", Role::Admin), true, true),
            (key("parent", Role::Reader), false, false),
            // Inherited read on `parent`, writer only below it.
            (key("child", Role::Writer), true, false),
            (key("unrelated", Role::Admin), true, false),
            (key("unrelated", Role::Reader), false, false),
            (Principal::Bootstrap, true, true),
        ];
        for (principal, on_default, on_parent) in cases {
            assert_eq!(
                principal.can_reconcile_integration(&registry, &default),
                on_default,
                "{principal:?} on the default integration"
            );
            assert_eq!(
                principal.can_reconcile_integration(&registry, &parent_bb),
                on_parent,
                "{principal:?} on parent-bb"
            );
        }
    }
}
