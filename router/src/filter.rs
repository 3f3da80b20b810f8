//! Path filters (DESIGN §5.1): of the stacks the trigger rules chose for a change, keep those
//! whose project root or globs cover a changed path (or the source path of a move or copy).
//!
//! What enters: the rules' [`Routed`] with one [`Scope`] per change. What leaves: the same with
//! the unaffected stacks' triggers removed and a reason per removal (`no_affected_files`).
//!
//! Guarantee: never a silent drop. When the changes cannot be had — Bitbucket unreachable or
//! failing after the client's retries, a `private://` host, no secrets key to open the access
//! token, a truncated list — every stack of the change stays affected and the reason says why
//! (`changes_unavailable`, `changes_truncated`). A change whose stacks all cover the whole
//! repository needs no lookup at all. Answers are cached per (integration, repository, lookup),
//! bounded; failures are not cached.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use inlet_control::control_log::ControlLog;
use inlet_control::crypto::SecretsKey;
use inlet_control::paths::PathFilter;
use inlet_control::registry::Registry;
use inlet_core::secret::Secret;

use crate::route::{Lookup, Routed, Scope};

/// Where an integration's Bitbucket is, and the token to call it with.
#[derive(Debug, Clone)]
pub struct Target {
    /// `https://host[/context]`, as the integration's `api_host_url` says.
    pub base_url: String,
    /// The integration's access token (`Authorization: Bearer`).
    pub token: Secret,
}

/// Why an integration's Bitbucket cannot be called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// Stable reason: `integration_gone`, `private_host`, `no_access_token`, `no_secrets_key`,
    /// `access_token_unreadable`.
    pub code: &'static str,
    /// One sentence for logs and the delivery log.
    pub message: String,
}

/// Where `integration`'s Bitbucket is and the token to call it with, opened with `secrets_key`.
pub fn target(
    registry: &Registry,
    secrets_key: Option<&SecretsKey>,
    integration: &str,
) -> Result<Target, Unreachable> {
    let fail = |code, message: String| Err(Unreachable { code, message });
    let Some(integration) = registry.integration(integration) else {
        return fail(
            "integration_gone",
            format!("integration `{integration}` no longer exists"),
        );
    };
    if integration.api_host_url.starts_with("private://") {
        return fail(
            "private_host",
            format!(
                "{} is reached through a VCS agent pool, which inlet cannot call",
                integration.api_host_url
            ),
        );
    }
    if integration.access_token.is_empty() {
        return fail(
            "no_access_token",
            "the integration has no access token".to_owned(),
        );
    }
    let Some(key) = secrets_key else {
        return fail(
            "no_secrets_key",
            "this router has no secrets key to open the integration's access token".to_owned(),
        );
    };
    match key.open(
        &integration.access_token,
        &integration.access_token_context(),
    ) {
        Ok(token) => Ok(Target {
            base_url: integration.api_host_url.clone(),
            token,
        }),
        Err(err) => fail(
            "access_token_unreadable",
            format!("the access token cannot be opened: {err}"),
        ),
    }
}

/// The paths one change touched.
#[derive(Debug, Clone, Default)]
pub struct ChangedFiles {
    /// Each changed path, with the source path of a move or copy.
    pub paths: Vec<(String, Option<String>)>,
    /// Bitbucket cut the list short: not every change is in `paths`.
    pub truncated: bool,
}

/// Asks Bitbucket what a change touched. The REST client implements it; tests use fakes.
pub trait ChangesSource: Send + Sync + 'static {
    /// The changed files of `lookup` in `repository` (`PROJECT/repo`), or a one-line reason they
    /// cannot be had (with Bitbucket's message when it sent one).
    fn changes(
        &self,
        target: &Target,
        repository: &str,
        lookup: &Lookup,
    ) -> impl Future<Output = Result<ChangedFiles, String>> + Send;
}

/// The Bitbucket REST client answers lookups (DESIGN §5.1 endpoints).
impl ChangesSource for inlet_bitbucket::client::Client {
    async fn changes(
        &self,
        target: &Target,
        repository: &str,
        lookup: &Lookup,
    ) -> Result<ChangedFiles, String> {
        use inlet_bitbucket::client::{RepositoryRef, Server};
        let repository = RepositoryRef::from_full_name(repository)
            .ok_or_else(|| format!("`{repository}` is not PROJECT/repo"))?;
        let server = Server {
            base_url: target.base_url.clone(),
            token: target.token.clone(),
        };
        let changes = match lookup {
            Lookup::Compare { from, to } => {
                self.compare_changes(&server, &repository, from, to.as_deref())
                    .await
            }
            Lookup::PullRequest { id, .. } => {
                self.pull_request_changes(&server, &repository, *id).await
            }
        }
        .map_err(|err| err.to_string())?;
        Ok(ChangedFiles {
            paths: changes
                .changes
                .into_iter()
                .map(|change| (change.path, change.src_path))
                .collect(),
            truncated: changes.truncated,
        })
    }
}

/// How many answers are kept.
const CACHE_ENTRIES: usize = 10_000;

type CacheKey = (String, String, Lookup);

/// A bounded memory of answers, oldest out first.
#[derive(Default)]
struct Cache {
    entries: HashMap<CacheKey, Arc<ChangedFiles>>,
    order: VecDeque<CacheKey>,
}

impl Cache {
    fn get(&self, key: &CacheKey) -> Option<Arc<ChangedFiles>> {
        self.entries.get(key).cloned()
    }

    fn put(&mut self, key: CacheKey, value: Arc<ChangedFiles>) {
        if self.entries.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > CACHE_ENTRIES {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }
}

/// What one change needs: the filters of its stacks (`None`: covers everything) and where to ask.
struct Plan {
    filters: Vec<Option<Arc<PathFilter>>>,
    target: Result<Target, String>,
}

/// A stack's project root and globs: what its compiled filter depends on.
type FilterKey = (String, Vec<String>);

/// The path-filter step of the router.
pub struct PathFilters<S> {
    source: S,
    secrets_key: Option<SecretsKey>,
    cache: Mutex<Cache>,
    /// Compiled filters by (project root, globs): globs compile once, not once per event.
    compiled: Mutex<HashMap<FilterKey, Arc<PathFilter>>>,
}

/// What the filter did with one delivery: the delivery log's reasons, and counts for telemetry.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// `no_affected_files: {stack}`, `changes_unavailable: {ref}: {why}`,
    /// `changes_truncated: {ref}`.
    pub reasons: Vec<String>,
    /// Lookups answered by Bitbucket.
    pub fetched: usize,
    /// Lookups answered from the cache.
    pub cached: usize,
    /// Changes whose files could not be had, or only in part (all their stacks kept).
    pub failed_open: usize,
    /// Triggers removed because no changed path concerned their stack.
    pub skipped: usize,
}

impl<S: ChangesSource> PathFilters<S> {
    /// Filters asking `source`, opening access tokens with `secrets_key` (without one every
    /// lookup fails open, and the reason says so).
    pub fn new(source: S, secrets_key: Option<SecretsKey>) -> Self {
        PathFilters {
            source,
            secrets_key,
            cache: Mutex::default(),
            compiled: Mutex::default(),
        }
    }

    /// Removes from `routed` the triggers of stacks no changed path concerns, adding a reason per
    /// removal or per lookup that failed open. `registry` is read before anything awaits.
    pub async fn apply(
        &self,
        control: &ControlLog,
        integration: &str,
        routed: &mut Routed,
    ) -> Filtered {
        let plans: Vec<Option<Plan>> = {
            let registry = control.read();
            routed
                .scopes
                .iter()
                .map(|scope| self.plan(&registry, integration, routed, scope))
                .collect()
        };
        let answers = futures::future::join_all(routed.scopes.iter().zip(&plans).map(
            |(scope, plan)| async move {
                match plan {
                    Some(plan) => Some(self.lookup(integration, scope, &plan.target).await),
                    None => None,
                }
            },
        ))
        .await;
        let mut filtered = Filtered::default();
        let mut keep = vec![true; routed.triggers.len()];
        for ((scope, plan), answer) in routed.scopes.iter().zip(&plans).zip(answers) {
            if let (Some(plan), Some(answer)) = (plan, answer) {
                judge(routed, scope, plan, answer, &mut keep, &mut filtered);
            }
        }
        let mut index = 0;
        routed.triggers.retain(|_| {
            index += 1;
            keep[index - 1]
        });
        routed.scopes.clear();
        filtered
    }

    /// The filters of a change's stacks and its Bitbucket, or `None` when every stack covers the
    /// whole repository (no lookup needed).
    fn plan(
        &self,
        registry: &Registry,
        integration: &str,
        routed: &Routed,
        scope: &Scope,
    ) -> Option<Plan> {
        let filters: Vec<Option<Arc<PathFilter>>> = routed.triggers[scope.triggers.clone()]
            .iter()
            .map(|trigger| {
                let stack = registry.stack(&trigger.stack_id)?;
                // The whole repository: no filter, nothing to compile.
                if stack.project_root.is_empty() {
                    return None;
                }
                Some(self.compiled(&stack.project_root, &stack.additional_project_globs))
            })
            .collect();
        if filters.iter().all(Option::is_none) {
            return None;
        }
        Some(Plan {
            filters,
            target: self.target(registry, integration),
        })
    }

    /// The compiled filter of a project root and its globs, from the memory when it has it.
    fn compiled(&self, root: &str, globs: &[String]) -> Arc<PathFilter> {
        let key = (root.to_owned(), globs.to_vec());
        let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if compiled.len() >= CACHE_ENTRIES && !compiled.contains_key(&key) {
            // Stacks changed their paths many times over: start again.
            compiled.clear();
        }
        compiled
            .entry(key)
            .or_insert_with(|| Arc::new(PathFilter::new(root, globs)))
            .clone()
    }

    fn target(&self, registry: &Registry, integration: &str) -> Result<Target, String> {
        target(registry, self.secrets_key.as_ref(), integration).map_err(|err| err.message)
    }

    /// The answer for `scope` (from the cache when it holds one), and whether it was cached.
    async fn lookup(
        &self,
        integration: &str,
        scope: &Scope,
        target: &Result<Target, String>,
    ) -> (Result<Arc<ChangedFiles>, String>, bool) {
        let key = (
            integration.to_owned(),
            scope.repository.clone(),
            scope.lookup.clone(),
        );
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return (Ok(hit), true);
        }
        let target = match target {
            Ok(target) => target,
            Err(reason) => return (Err(reason.clone()), false),
        };
        let answer = self
            .source
            .changes(target, &scope.repository, &scope.lookup)
            .await
            .map(Arc::new);
        if let Ok(files) = &answer
            && !files.truncated
        {
            self.cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .put(key, files.clone());
        }
        (answer, false)
    }
}

/// Applies one change's answer: marks in `keep` the triggers of stacks no changed path concerns,
/// or keeps them all (failing open) when the answer is missing or truncated; records why.
fn judge(
    routed: &Routed,
    scope: &Scope,
    plan: &Plan,
    (answer, cached): (Result<Arc<ChangedFiles>, String>, bool),
    keep: &mut [bool],
    filtered: &mut Filtered,
) {
    if cached {
        filtered.cached += 1;
    } else if answer.is_ok() {
        filtered.fetched += 1;
    }
    let files = match answer {
        Ok(files) if files.truncated => {
            filtered.failed_open += 1;
            filtered
                .reasons
                .push(format!("changes_truncated: {}", scope.reference));
            return;
        }
        Ok(files) => files,
        Err(reason) => {
            filtered.failed_open += 1;
            filtered.reasons.push(format!(
                "changes_unavailable: {}: {reason}",
                scope.reference
            ));
            return;
        }
    };
    for (index, filter) in scope.triggers.clone().zip(&plan.filters) {
        if filter.as_ref().is_some_and(|f| !affected(f, &files)) {
            keep[index] = false;
            filtered.skipped += 1;
            filtered.reasons.push(format!(
                "no_affected_files: {}",
                routed.triggers[index].stack_id
            ));
        }
    }
}

/// Whether any changed path, or the source of a move or copy, is covered by `filter`.
fn affected(filter: &PathFilter, files: &ChangedFiles) -> bool {
    files.paths.iter().any(|(path, source)| {
        filter.covers(path) || source.as_deref().is_some_and(|s| filter.covers(s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::route_push;
    use inlet_bitbucket::parse_refs_changed;
    use inlet_control::commands::ControlCommand;
    use inlet_control::testing;
    use inlet_core::metrics::Metrics;
    use inlet_core::records::Delivery;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers every lookup with `paths`, or fails; counts calls.
    struct Fixed {
        answer: Result<ChangedFiles, String>,
        calls: AtomicUsize,
    }

    impl ChangesSource for Arc<Fixed> {
        async fn changes(
            &self,
            target: &Target,
            _repository: &str,
            _lookup: &Lookup,
        ) -> Result<ChangedFiles, String> {
            assert_eq!(target.token.expose(), "token-1");
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.answer.clone()
        }
    }

    fn files(paths: &[(&str, Option<&str>)]) -> ChangedFiles {
        ChangedFiles {
            paths: paths
                .iter()
                .map(|(p, s)| ((*p).to_owned(), s.map(str::to_owned)))
                .collect(),
            truncated: false,
        }
    }

    fn control(stacks: &[(&str, &str, &[&str])]) -> ControlLog {
        let mut integration = testing::integration("bb", "i1", "root", true, "secret");
        integration.access_token = testing::secrets_key()
            .seal(&Secret::new("token-1"), &integration.access_token_context());
        let mut commands = vec![ControlCommand::CreateIntegration { integration }];
        for (id, root, globs) in stacks {
            let mut stack = testing::stack(id, "bb", "INFRA/mono", "main");
            stack.project_root = (*root).to_owned();
            stack.additional_project_globs = globs.iter().map(|g| (*g).to_owned()).collect();
            commands.push(ControlCommand::CreateStack { stack });
        }
        ControlLog::in_memory(testing::registry(commands), Metrics::new().control.clone())
    }

    fn routed(control: &ControlLog, from_hash: &str) -> Routed {
        let body = format!(
            r#"{{"repository": {{"slug": "mono", "project": {{"key": "INFRA"}}}},
                "changes": [{{"ref": {{"id": "refs/heads/main", "type": "BRANCH"}},
                "fromHash": "{from_hash}", "toHash": "2222222222222222222222222222222222222222",
                "type": "UPDATE"}}]}}"#
        );
        let delivery = Delivery {
            delivery_id: "d1".to_owned(),
            event_key: "repo:refs_changed".to_owned(),
            integration: "bb".to_owned(),
            received_at: "2026-01-01T00:00:00Z".to_owned(),
            control_offset: 0,
        };
        let push = parse_refs_changed(body.as_bytes()).expect("push");
        route_push(&control.read(), &delivery, &push)
    }

    fn source(answer: Result<ChangedFiles, String>) -> Arc<Fixed> {
        Arc::new(Fixed {
            answer,
            calls: AtomicUsize::new(0),
        })
    }

    fn stacks(routed: &Routed) -> Vec<&str> {
        routed
            .triggers
            .iter()
            .map(|t| t.stack_id.as_str())
            .collect()
    }

    /// Only the stack whose root covers a change keeps its trigger; the others are recorded.
    #[tokio::test]
    async fn keeps_the_affected_stacks() {
        let control = control(&[
            ("app", "infra/app", &[]),
            ("app2", "infra/app2", &[]),
            ("shared", "infra/db", &["modules/**"]),
        ]);
        let source = source(Ok(files(&[("infra/app/main.tf", None)])));
        let filters = PathFilters::new(source.clone(), Some(testing::secrets_key()));
        let mut routed = routed(&control, "1111111111111111111111111111111111111111");
        let filtered = filters.apply(&control, "bb", &mut routed).await;
        assert_eq!(stacks(&routed), vec!["app"]);
        assert_eq!(
            filtered.reasons,
            vec!["no_affected_files: app2", "no_affected_files: shared"]
        );
        assert_eq!((filtered.fetched, filtered.skipped), (1, 2));

        // The same change again is answered from the cache.
        let mut again = self::routed(&control, "1111111111111111111111111111111111111111");
        let filtered = filters.apply(&control, "bb", &mut again).await;
        assert_eq!(filtered.cached, 1);
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
    }

    /// A move out of one root and into another runs both stacks.
    #[tokio::test]
    async fn moves_count_from_both_ends() {
        let control = control(&[("a", "a", &[]), ("b", "b", &[]), ("c", "c", &[])]);
        let source = source(Ok(files(&[("b/main.tf", Some("a/main.tf"))])));
        let filters = PathFilters::new(source, Some(testing::secrets_key()));
        let mut routed = routed(&control, "1111111111111111111111111111111111111111");
        filters.apply(&control, "bb", &mut routed).await;
        assert_eq!(stacks(&routed), vec!["a", "b"]);
    }

    /// Stacks that cover the whole repository need no lookup at all.
    #[tokio::test]
    async fn whole_repository_stacks_need_no_lookup() {
        let control = control(&[("x", "", &[]), ("y", "", &["ignored/**"])]);
        let source = source(Err("must not be called".to_owned()));
        let filters = PathFilters::new(source.clone(), Some(testing::secrets_key()));
        let mut routed = routed(&control, "1111111111111111111111111111111111111111");
        let filtered = filters.apply(&control, "bb", &mut routed).await;
        assert_eq!(stacks(&routed), vec!["x", "y"]);
        assert_eq!(source.calls.load(Ordering::SeqCst), 0);
        assert!(filtered.reasons.is_empty());
    }

    /// Failing, truncated, or impossible lookups keep every stack and say why.
    #[tokio::test]
    async fn fails_open_with_a_reason() {
        let control = control(&[("a", "a", &[]), ("b", "b", &[])]);
        let failing = PathFilters::new(
            source(Err("HTTP 500: boom".to_owned())),
            Some(testing::secrets_key()),
        );
        let mut routed = routed(&control, "1111111111111111111111111111111111111111");
        let filtered = failing.apply(&control, "bb", &mut routed).await;
        assert_eq!(stacks(&routed), vec!["a", "b"]);
        assert_eq!(
            filtered.reasons,
            vec!["changes_unavailable: refs/heads/main: HTTP 500: boom"]
        );

        let mut truncated = files(&[("a/x.tf", None)]);
        truncated.truncated = true;
        let cut = PathFilters::new(source(Ok(truncated)), Some(testing::secrets_key()));
        let mut routed = self::routed(&control, "1111111111111111111111111111111111111111");
        let filtered = cut.apply(&control, "bb", &mut routed).await;
        assert_eq!(stacks(&routed), vec!["a", "b"]);
        assert_eq!(filtered.reasons, vec!["changes_truncated: refs/heads/main"]);

        let keyless = PathFilters::new(source(Ok(files(&[]))), None);
        let mut routed = self::routed(&control, "1111111111111111111111111111111111111111");
        let filtered = keyless.apply(&control, "bb", &mut routed).await;
        assert_eq!(stacks(&routed), vec!["a", "b"]);
        assert!(
            filtered.reasons[0].contains("no secrets key"),
            "{filtered:?}"
        );
    }

    /// A new branch compares against the default branch (`to` omitted).
    #[test]
    fn new_branch_has_no_to() {
        let control = control(&[("a", "a", &[])]);
        let routed = routed(&control, "0000000000000000000000000000000000000000");
        assert_eq!(
            routed.scopes[0].lookup,
            Lookup::Compare {
                from: "2222222222222222222222222222222222222222".to_owned(),
                to: None
            }
        );
        let routed = self::routed(&control, "1111111111111111111111111111111111111111");
        assert_eq!(
            routed.scopes[0].lookup,
            Lookup::Compare {
                from: "2222222222222222222222222222222222222222".to_owned(),
                to: Some("1111111111111111111111111111111111111111".to_owned())
            }
        );
    }
}
