//! The in-memory state every process folds from `inlet.control`, and its read-side queries.
//!
//! Only [`crate::fold`] mutates a [`Registry`]; everything else reads it. Lookups used on the hot
//! path (webhook → integration, (integration, repository) → stacks) are indexed, never scans.

use std::collections::{BTreeMap, HashMap};

use crate::domain::{ApiKey, Integration, ManagedWebhook, ROOT_SPACE, Space, Stack};
use crate::text::{Interner, Text};

/// The folded state of the control log.
#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    pub(crate) spaces: BTreeMap<String, Space>,
    pub(crate) integrations: BTreeMap<String, Integration>,
    /// Boxed: a map node then holds a pointer, not a 300-byte stack (nodes are half empty after
    /// in-order inserts, so this halves the map's memory at 100,000 stacks).
    /// Keyed by a `Text` of the id, shared with `by_repository`'s entries.
    pub(crate) stacks: BTreeMap<Text, Box<Stack>>,
    pub(crate) api_keys: BTreeMap<String, ApiKey>,
    /// Integration name → Bitbucket webhook id → the webhooks inlet manages for it.
    pub(crate) webhooks: BTreeMap<String, BTreeMap<u64, ManagedWebhook>>,
    /// (lower-case integration name, lower-case repository) → ids of the stacks on it, sorted.
    /// A sorted `Vec` of exact capacity, not a `BTreeSet`: most keys hold one or two stacks (a
    /// set allocates a whole node for one, a `Vec` room for four); key parts are interned.
    pub(crate) by_repository: HashMap<(Text, Text), Vec<Text>>,
    /// Integration name → the latest reconciliation asked for it.
    pub(crate) reconciles: BTreeMap<String, ReconcileRequest>,
    /// The stacks' shared values (space, integration, repository, branch, root, labels): one
    /// allocation per distinct value, not per stack. Not state: ignored by `==`.
    pub(crate) interner: Interner,
}

/// The latest reconciliation an operator asked for, per integration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReconcileRequest {
    /// Generated id of the request (what `POST /integrations/{name}/reconcile` answered).
    pub reconcile_id: String,
    /// The integration incarnation it was asked for.
    pub integration_id: String,
    /// When it was asked for: the control record's `issued_at` (RFC 3339).
    pub requested_at: String,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry holding only the root space.
    pub fn new() -> Self {
        let mut spaces = BTreeMap::new();
        spaces.insert(ROOT_SPACE.to_owned(), Space::root());
        Registry {
            spaces,
            integrations: BTreeMap::new(),
            stacks: BTreeMap::new(),
            api_keys: BTreeMap::new(),
            webhooks: BTreeMap::new(),
            by_repository: HashMap::new(),
            reconciles: BTreeMap::new(),
            interner: Interner::new(),
        }
    }

    /// A space by id.
    pub fn space(&self, id: &str) -> Option<&Space> {
        self.spaces.get(id)
    }

    /// All spaces, ordered by id.
    pub fn spaces(&self) -> impl Iterator<Item = &Space> {
        self.spaces.values()
    }

    /// An integration by its exact name.
    pub fn integration(&self, name: &str) -> Option<&Integration> {
        self.integrations.get(name)
    }

    /// All integrations, ordered by name.
    pub fn integrations(&self) -> impl Iterator<Item = &Integration> {
        self.integrations.values()
    }

    /// The default integration, if one exists.
    pub fn default_integration(&self) -> Option<&Integration> {
        self.integrations.values().find(|i| i.is_default)
    }

    /// The Bitbucket webhooks inlet manages for integration `name`, by id.
    pub fn managed_webhooks(&self, name: &str) -> impl Iterator<Item = &ManagedWebhook> {
        self.webhooks
            .get(name)
            .into_iter()
            .flat_map(BTreeMap::values)
    }

    /// One managed webhook of integration `name`.
    pub fn managed_webhook(&self, name: &str, id: u64) -> Option<&ManagedWebhook> {
        self.webhooks.get(name)?.get(&id)
    }

    /// The latest reconciliation asked for integration `integration_name` (its current
    /// incarnation: deleting the integration forgets it).
    pub fn reconcile_request(&self, integration_name: &str) -> Option<&ReconcileRequest> {
        self.reconciles.get(integration_name)
    }

    /// A stack by id.
    pub fn stack(&self, id: &str) -> Option<&Stack> {
        self.stacks.get(id).map(|stack| &**stack)
    }

    /// All stacks, ordered by id.
    pub fn stacks(&self) -> impl Iterator<Item = &Stack> {
        self.stacks.values().map(|stack| &**stack)
    }

    /// An API key by id.
    pub fn api_key(&self, id: &str) -> Option<&ApiKey> {
        self.api_keys.get(id)
    }

    /// All API keys, ordered by id.
    pub fn api_keys(&self) -> impl Iterator<Item = &ApiKey> {
        self.api_keys.values()
    }

    /// The stacks that use integration `integration` (by name, attached or not) on `repository`,
    /// compared case-insensitively as Bitbucket does for project keys and repository slugs.
    pub fn stacks_on_repository<'a>(
        &'a self,
        integration: &str,
        repository: &str,
    ) -> impl Iterator<Item = &'a Stack> + 'a {
        let key = repository_key(integration, repository);
        self.by_repository
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|id| self.stacks.get(id).map(|stack| &**stack))
    }

    /// Whether `integration` can be attached to a stack in `space_id`: it is the default one, it
    /// lives in that space, or in an ancestor reached through spaces that all inherit entities.
    pub fn is_available(&self, integration: &Integration, space_id: &str) -> bool {
        if integration.is_default {
            return true;
        }
        let mut current = self.spaces.get(space_id);
        // The depth bound guards against a cycle, which the fold never creates.
        for _ in 0..=self.spaces.len() {
            let Some(space) = current else { return false };
            if space.id == integration.space_id {
                return true;
            }
            if !space.inherit_entities {
                return false;
            }
            current = space.parent_id.as_deref().and_then(|p| self.spaces.get(p));
        }
        false
    }

    /// Counts of each kind of entity, for logs and metrics.
    pub fn sizes(&self) -> RegistrySizes {
        RegistrySizes {
            spaces: self.spaces.len(),
            integrations: self.integrations.len(),
            stacks: self.stacks.len(),
            api_keys: self.api_keys.len(),
        }
    }

    /// Makes `stack`'s shared values the interner's (a stack read from a snapshot has its own).
    pub(crate) fn share_values(&mut self, stack: &mut Stack) {
        let texts = &mut self.interner;
        stack.space_id = texts.share(&stack.space_id);
        stack.integration = texts.share(&stack.integration);
        stack.repository = texts.share(&stack.repository);
        stack.branch = texts.share(&stack.branch);
        stack.project_root = texts.share(&stack.project_root);
        stack.integration_id = texts.share(&stack.integration_id);
        stack.labels = texts.list(&stack.labels);
    }

    /// Adds (or replaces) `stack` and indexes it by repository; the caller unindexed the one it
    /// replaces.
    pub(crate) fn insert_stack(&mut self, stack: Box<Stack>) {
        // Ids are unique: one allocation shared by the map key and the index, not interned.
        let id = Text::from(stack.id.as_str());
        let key = (
            self.interner.text(&stack.integration.to_lowercase()),
            self.interner.text(&stack.repository.to_lowercase()),
        );
        let ids = self.by_repository.entry(key).or_default();
        if let Err(at) = ids.binary_search(&id) {
            ids.reserve_exact(1);
            ids.insert(at, id.clone());
        }
        self.stacks.insert(id, stack);
    }

    pub(crate) fn unindex_stack(&mut self, stack: &Stack) {
        let key = repository_key(&stack.integration, &stack.repository);
        if let Some(ids) = self.by_repository.get_mut(&key) {
            if let Ok(at) = ids.binary_search_by(|id| id.as_str().cmp(&stack.id)) {
                ids.remove(at);
                ids.shrink_to_fit();
            }
            if ids.is_empty() {
                self.by_repository.remove(&key);
            }
        }
    }
}

/// How many entities of each kind the registry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrySizes {
    /// Spaces, root included.
    pub spaces: usize,
    /// Integrations.
    pub integrations: usize,
    /// Stacks.
    pub stacks: usize,
    /// API keys (the bootstrap key is not one).
    pub api_keys: usize,
}

fn repository_key(integration: &str, repository: &str) -> (Text, Text) {
    (
        Text::from(integration.to_lowercase()),
        Text::from(repository.to_lowercase()),
    )
}
