//! Reconciliation (DESIGN §5.2): find what Bitbucket never delivered, and run it.
//!
//! Bitbucket Data Center sends each webhook once; a failed delivery (inlet's ingress down, a
//! proxy in the way, Bitbucket's circuit breaker open) is gone. So each router, periodically
//! (`reconcile.interval_s`, jittered) and when an operator asks
//! (`POST /api/v1/integrations/{name}/reconcile`, a control command every router folds), runs a
//! pass:
//!
//! 1. **What it owns.** The repositories with stacks whose `inlet.webhooks` partition the
//!    consumer group assigned to this process ([`partition_for`] mirrors the producer's
//!    partitioner). N routers share the work; a rebalance moves it. No leader.
//! 2. **What Bitbucket has.** Per repository and tracked branch: the branch's head
//!    (`…/commits?until=refs/heads/{branch}&limit=1`, exact where `…/branches?filterText=` is a
//!    substring search) and the open pull requests into it (`…/pull-requests?state=OPEN&at=…`,
//!    every page). At most `reconcile.max_repositories_in_flight` repositories at once; the
//!    client's per-host bound, `Retry-After` and retries apply to every call.
//! 3. **What differs** ([`compare`]) from the last-seen heads ([`crate::heads`]): a branch
//!    head that moved becomes a push from the last-seen commit to the head; a pull request
//!    whose latest commit moved, or that was opened since the branch's last pass, becomes a
//!    pull-request update at its latest commit. What inlet never saw before (a new stack,
//!    integration or branch) is only recorded: the first pass never runs everything.
//! 4. **Run it.** Each difference is written to `inlet.webhooks` as the delivery a webhook
//!    would have brought, keyed like one (so it keeps the repository's order) and marked with
//!    the `inlet-recovered` header; the router routes it through the normal rules, path filters
//!    included, and its decisions carry `trigger.recovered: true`. Its delivery id is derived
//!    from the difference, and a run's id from (stack, commit, run type), so a late webhook and
//!    a recovery are one run. The delivery log gets a `reconciler` / `recovered` event naming
//!    what was missing.
//!
//! Failure: a repository Bitbucket does not answer for (5xx, timeouts, 4xx, an unreachable
//! host) is skipped with its reason counted (`inlet_reconcile_errors_total`) and logged; nothing
//! is synthesized from a partial answer, and the next pass tries again. A pass stops starting
//! repositories once it used `reconcile.max_pass_share` of the interval and the next pass goes
//! on from there.
//!
//! Not recovered: pushes to branches no stack tracks (their proposed runs come with the pull
//! request's update), comments, and the intermediate commits of several missed pushes to one
//! branch — the recovery runs the head, with path filters over the whole range.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use inlet_bitbucket::client::{Client, RepositoryRef, Server};
use inlet_bitbucket::refs::OpenPullRequest;
use inlet_control::control_log::ControlLog;
use inlet_control::crypto::SecretsKey;
use inlet_control::domain::IntegrationStatus;
use inlet_core::CancellationToken;
use inlet_core::clock::now_rfc3339;
use inlet_core::config::ReconcileConfig;
use inlet_core::kafka::partition_for;
use inlet_core::metrics::ReconcileMetrics;
use inlet_core::output::{Output, Outputs};
use inlet_core::records::{
    DeliveryEvent, DeliveryOutcome, HEAD_SCHEMA, HeadRecord, PullRequestHead, Stage, headers,
};
use inlet_core::topics::Topics;
use rand::Rng;
use rdkafka::consumer::Consumer;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::filter::{Target, target};
use crate::heads::{HeadChange, Heads};

/// How long a synthesized delivery may take to be acknowledged.
const SEND_DEADLINE: Duration = Duration::from_secs(30);
/// The first pass after startup starts within this (jittered), once the group assigned
/// partitions and the heads are loaded.
const FIRST_PASS_WITHIN: Duration = Duration::from_secs(30);
/// How soon a periodic pass is tried again when the group had assigned no partition yet.
const UNASSIGNED_RETRY: Duration = Duration::from_secs(5);
/// How often the reconciler looks for on-demand requests in the registry.
const REQUEST_POLL: Duration = Duration::from_secs(1);

/// Why a repository could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable reason (the client's codes, or [`crate::filter::Unreachable`]'s).
    pub code: &'static str,
    /// One line, with Bitbucket's message when it sent one.
    pub message: String,
}

/// Where branch heads and open pull requests come from: the REST client; tests may fake it.
pub trait RefsSource: Send + Sync + 'static {
    /// The commit `branch` points at (`None`: no such branch).
    fn branch_head(
        &self,
        target: &Target,
        repository: &RepositoryRef,
        branch: &str,
    ) -> impl Future<Output = Result<Option<String>, Failure>> + Send;

    /// The open pull requests into `branch`, every page.
    fn open_pull_requests(
        &self,
        target: &Target,
        repository: &RepositoryRef,
        branch: &str,
    ) -> impl Future<Output = Result<Vec<OpenPullRequest>, Failure>> + Send;
}

fn server(target: &Target) -> Server {
    Server {
        base_url: target.base_url.clone(),
        token: target.token.clone(),
    }
}

fn failure(err: inlet_bitbucket::client::CallError) -> Failure {
    Failure {
        code: err.code(),
        message: err.to_string(),
    }
}

impl RefsSource for Client {
    async fn branch_head(
        &self,
        target: &Target,
        repository: &RepositoryRef,
        branch: &str,
    ) -> Result<Option<String>, Failure> {
        Client::branch_head(self, &server(target), repository, branch)
            .await
            .map_err(failure)
    }

    async fn open_pull_requests(
        &self,
        target: &Target,
        repository: &RepositoryRef,
        branch: &str,
    ) -> Result<Vec<OpenPullRequest>, Failure> {
        Client::open_pull_requests(self, &server(target), repository, branch, self.max_pages())
            .await
            .map_err(failure)
    }
}

/// What Bitbucket said about one tracked branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The branch.
    pub branch: String,
    /// Its head (`None`: the branch does not exist).
    pub head: Option<String>,
    /// The open pull requests into it.
    pub pull_requests: Vec<OpenPullRequest>,
}

/// One difference to run: the delivery a missed webhook would have brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// A push of `branch` from `from` to `to`.
    Push {
        /// The branch.
        branch: String,
        /// The last commit inlet saw on it.
        from: String,
        /// Its head now.
        to: String,
    },
    /// A pull request into `branch` at its latest commit `to` (`from`: the commit last seen,
    /// `None` when it was opened since the branch's last pass).
    PullRequest {
        /// The target branch.
        branch: String,
        /// The pull request as Bitbucket listed it.
        pull_request: OpenPullRequest,
        /// The commit inlet last saw, if it knew the pull request.
        from: Option<String>,
    },
}

/// What a pass does for one repository: the deliveries to synthesize and the head changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Differences to run.
    pub missing: Vec<Missing>,
    /// Heads to write (recorded, moved) or remove.
    pub changes: Vec<HeadChange>,
}

/// Which integration and repository a pass is comparing, for the records it writes.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The integration's name.
    pub integration: String,
    /// Its incarnation.
    pub integration_id: String,
    /// `PROJECT/repo`, as the stacks spell it.
    pub repository: String,
}

impl Scope {
    fn head(
        &self,
        branch: &str,
        pull_request: Option<&OpenPullRequest>,
        commit: &str,
    ) -> HeadRecord {
        HeadRecord {
            schema: HEAD_SCHEMA.to_owned(),
            integration_id: self.integration_id.clone(),
            integration: self.integration.clone(),
            repository: self.repository.clone(),
            branch: branch.to_owned(),
            pull_request: pull_request.map(|pr| PullRequestHead {
                id: pr.id,
                from_branch: pr.from_branch.clone(),
                from_repository: pr.from_repository.clone(),
            }),
            commit: commit.to_owned(),
            reconciled: pull_request.is_none(),
            at: now_rfc3339(),
        }
    }
}

/// Compares what Bitbucket has (`observed`, one entry per tracked branch) with the heads inlet
/// last saw for the repository (`known`, by key). Pure: the rules of the module docs.
pub fn compare(scope: &Scope, known: &BTreeMap<String, HeadRecord>, observed: &[Observed]) -> Plan {
    let mut plan = Plan::default();
    let mut kept: BTreeSet<String> = BTreeSet::new();
    for branch in observed {
        let branch_record = scope.head(&branch.branch, None, "");
        let branch_key = branch_record.key();
        let Some(head) = &branch.head else {
            // Deleted in Bitbucket: nothing to run; its heads go (below, as not kept).
            continue;
        };
        kept.insert(branch_key.clone());
        let seen = known.get(&branch_key);
        // Only a branch whose pull requests a pass listed before can tell "opened since".
        let listed_before = seen.is_some_and(|h| h.reconciled);
        match seen {
            Some(seen) if seen.commit != *head => plan.missing.push(Missing::Push {
                branch: branch.branch.clone(),
                from: seen.commit.clone(),
                to: head.clone(),
            }),
            _ => {}
        }
        if seen.is_none_or(|s| s.commit != *head || !s.reconciled) {
            plan.changes
                .push((branch_key, Some(scope.head(&branch.branch, None, head))));
        }
        for pr in &branch.pull_requests {
            let record = scope.head(&branch.branch, Some(pr), &pr.latest_commit);
            let key = record.key();
            kept.insert(key.clone());
            let seen = known.get(&key);
            let moved =
                seen.is_some_and(|s| s.commit != pr.latest_commit || s.branch != branch.branch);
            if moved || (seen.is_none() && listed_before) {
                plan.missing.push(Missing::PullRequest {
                    branch: branch.branch.clone(),
                    pull_request: pr.clone(),
                    from: seen.map(|s| s.commit.clone()),
                });
            }
            if seen.is_none() || moved {
                plan.changes.push((key, Some(record)));
            }
        }
    }
    for key in known.keys() {
        if !kept.contains(key) {
            plan.changes.push((key.clone(), None));
        }
    }
    plan
}

/// The webhook record and delivery-log event of one difference.
pub fn synthesize(
    scope: &Scope,
    missing: &Missing,
    reconcile_id: &str,
    control_offset: i64,
    topics: &Topics,
) -> (Output, Output) {
    let (project, slug) = scope
        .repository
        .split_once('/')
        .unwrap_or((&scope.repository, ""));
    let repository = json!({"slug": slug, "name": slug, "project": {"key": project}});
    let now = now_rfc3339();
    let (event_key, body, what, id_parts) = match missing {
        Missing::Push { branch, from, to } => {
            let reference = format!("refs/heads/{branch}");
            let body = json!({
                "eventKey": "repo:refs_changed",
                "date": now,
                "repository": repository,
                "changes": [{
                    "ref": {"id": reference, "displayId": branch, "type": "BRANCH"},
                    "refId": reference, "fromHash": from, "toHash": to, "type": "UPDATE",
                }],
            });
            let what = format!("missing_push: {reference} {}..{}", short(from), short(to));
            (
                "repo:refs_changed",
                body,
                what,
                vec![reference.clone(), from.clone(), to.clone()],
            )
        }
        Missing::PullRequest {
            branch,
            pull_request: pr,
            from,
        } => {
            let (from_project, from_slug) = pr
                .from_repository
                .split_once('/')
                .unwrap_or((&pr.from_repository, ""));
            let source_repository =
                json!({"slug": from_slug, "name": from_slug, "project": {"key": from_project}});
            let event_key = if from.is_some() {
                "pr:from_ref_updated"
            } else {
                "pr:opened"
            };
            let mut body = json!({
                "eventKey": event_key,
                "date": now,
                "pullRequest": {
                    "id": pr.id, "state": "OPEN", "open": true,
                    "fromRef": {"id": format!("refs/heads/{}", pr.from_branch),
                                "displayId": pr.from_branch, "latestCommit": pr.latest_commit,
                                "repository": source_repository},
                    "toRef": {"id": format!("refs/heads/{branch}"), "displayId": branch,
                              "latestCommit": "", "repository": repository},
                },
            });
            if let Some(from) = from {
                body["previousFromHash"] = json!(from);
            }
            let what = format!(
                "missing_pull_request_update: pull-request/{} {}..{}",
                pr.id,
                from.as_deref().map(short).unwrap_or("(opened)"),
                short(&pr.latest_commit)
            );
            let parts = vec![
                format!("pull-request/{}", pr.id),
                branch.clone(),
                from.clone().unwrap_or_default(),
                pr.latest_commit.clone(),
            ];
            (event_key, body, what, parts)
        }
    };
    let delivery_id = recovered_delivery_id(&scope.integration_id, &scope.repository, &id_parts);
    let key = format!("{}/{}", scope.integration, scope.repository).to_lowercase();
    let webhook = Output {
        topic: topics.webhooks(),
        key: key.into_bytes(),
        payload: serde_json::to_vec(&body).unwrap_or_default().into(),
        headers: Vec::new(),
        tombstone: false,
    }
    .header(headers::DELIVERY_ID, &delivery_id)
    .header(headers::EVENT_KEY, event_key)
    .header(headers::INTEGRATION_ID, &scope.integration_id)
    .header(headers::INTEGRATION_NAME, &scope.integration)
    .header(headers::RECEIVED_AT, &now)
    .header(headers::CONTROL_OFFSET, control_offset.to_string())
    .header(headers::RECOVERED, reconcile_id);
    let mut event = DeliveryEvent::new(
        &delivery_id,
        &scope.integration,
        Stage::Reconciler,
        DeliveryOutcome::Recovered,
    );
    event.event_key = Some(event_key.to_owned());
    event.received_at = Some(now);
    event.integration_id = Some(scope.integration_id.clone());
    event.reasons = vec![what, format!("reconcile: {reconcile_id}")];
    (
        webhook,
        Output::delivery_event(&topics.deliveries(), &event),
    )
}

/// A recovered delivery's id: derived from what was missing, so synthesizing the same
/// difference twice yields the same id (and the router's duplicate filter drops the second).
fn recovered_delivery_id(integration_id: &str, repository: &str, parts: &[String]) -> String {
    let mut digest = Sha256::new();
    for part in [integration_id, &repository.to_lowercase()]
        .into_iter()
        .chain(parts.iter().map(String::as_str))
    {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    format!("recovered-{}", &hex::encode(digest.finalize())[..32])
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// One repository a pass reads.
#[derive(Debug, Clone)]
struct Work {
    scope: Scope,
    branches: BTreeSet<String>,
}

/// What the reconciler runs with.
pub struct Reconciler<S> {
    /// Branch heads and pull requests.
    pub source: S,
    /// This process's control fold.
    pub control: ControlLog,
    /// The last-seen heads.
    pub heads: Heads,
    /// Where synthesized deliveries and head records go.
    pub outputs: Outputs,
    /// Topic names.
    pub topics: Topics,
    /// The router's consumer, for which `inlet.webhooks` partitions this process owns.
    pub consumer: Arc<inlet_core::kafka::GroupConsumer>,
    /// The producer's partitioner setting and `inlet.webhooks`'s partition count.
    pub partitioning: (String, usize),
    /// Opens integrations' access tokens.
    pub secrets_key: Option<SecretsKey>,
    /// Metrics.
    pub metrics: ReconcileMetrics,
    /// Interval and bounds.
    pub config: ReconcileConfig,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// `inlet.webhooks` partitions this process owned.
    pub owned_partitions: usize,
    /// Repositories with stacks this process owned.
    pub repositories: usize,
    /// Repositories read.
    pub read: usize,
    /// Repositories not read, with why.
    pub failed: Vec<(String, Failure)>,
    /// Deliveries synthesized.
    pub recovered: usize,
    /// Heads recorded, moved or removed.
    pub head_changes: usize,
    /// Repositories left for the next pass (time share used up).
    pub left: usize,
}

impl<S: RefsSource> Reconciler<S> {
    /// Runs passes until `shutdown`: one soon after startup, then every interval (jittered),
    /// and one whenever an operator asks for one.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = Duration::from_secs(self.config.interval_s);
        let mut handled: HashMap<String, String> = self
            .requests()
            .into_iter()
            .map(|(name, (id, _))| (name, id))
            .collect();
        let mut next =
            (!interval.is_zero()).then(|| Instant::now() + jitter(interval.min(FIRST_PASS_WITHIN)));
        let mut cursor = 0usize;
        if next.is_none() {
            tracing::info!(
                "periodic reconciliation is off (reconcile.interval_s = 0); passes run only when asked for"
            );
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(REQUEST_POLL) => {}
            }
            for (integration, (reconcile_id, integration_id)) in self.requests() {
                if handled.get(&integration) == Some(&reconcile_id) {
                    continue;
                }
                // Asked before the group gave this router its partitions (just started, or a
                // rebalance): the request waits for them instead of being spent on nothing.
                if self.owned().is_empty() {
                    continue;
                }
                handled.insert(integration.clone(), reconcile_id.clone());
                let mut from = 0;
                let report = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    report = self.pass(Some(&integration), &reconcile_id, &mut from) => report,
                };
                log_pass(&reconcile_id, Some(&integration), &report);
                if report.owned_partitions > 0 {
                    let summary = summary(
                        (&integration, &integration_id),
                        &reconcile_id,
                        &report,
                        &self.topics,
                    );
                    if let Err(err) = self.send(&summary).await {
                        tracing::warn!(reconcile_id, error = %err.message, "cannot record the pass in the delivery log");
                    }
                }
            }
            if next.is_some_and(|at| Instant::now() >= at) {
                let reconcile_id = format!("periodic-{}", uuid_like());
                // A pass cut short by shutdown may have sent recoveries without recording the
                // heads: the next pass synthesizes the same delivery ids, which dedupe.
                let report = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    report = self.pass(None, &reconcile_id, &mut cursor) => report,
                };
                log_pass(&reconcile_id, None, &report);
                // Not assigned yet (the group is still forming): try again soon.
                let wait = if report.owned_partitions == 0 {
                    interval.min(UNASSIGNED_RETRY)
                } else {
                    interval + jitter(interval / 10)
                };
                next = Some(Instant::now() + wait);
            }
        }
    }

    /// The on-demand requests in the registry: integration name → (reconcile id, incarnation).
    fn requests(&self) -> HashMap<String, (String, String)> {
        let registry = self.control.read();
        registry
            .integrations()
            .filter_map(|i| {
                registry
                    .reconcile_request(&i.name)
                    .filter(|r| r.integration_id == i.id)
                    .map(|r| (i.name.clone(), (r.reconcile_id.clone(), i.id.clone())))
            })
            .collect()
    }

    /// The `inlet.webhooks` partitions the group assigned this process.
    fn owned(&self) -> BTreeSet<i32> {
        let topic = self.topics.webhooks();
        self.consumer
            .assignment()
            .map(|list| {
                list.elements()
                    .iter()
                    .filter(|e| e.topic() == topic)
                    .map(|e| e.partition())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn owns(&self, owned: &BTreeSet<i32>, integration: &str, repository: &str) -> bool {
        let key = format!("{integration}/{repository}").to_lowercase();
        let (partitioner, partitions) = &self.partitioning;
        partition_for(partitioner, key.as_bytes(), *partitions).is_some_and(|p| owned.contains(&p))
    }

    /// The repositories with attached stacks, of `only` (or every integration), that this
    /// process owns, sorted.
    fn work(&self, owned: &BTreeSet<i32>, only: Option<&str>) -> Vec<Work> {
        let registry = self.control.read();
        let mut work: BTreeMap<(String, String), Work> = BTreeMap::new();
        for stack in registry.stacks() {
            if stack.integration_status != IntegrationStatus::Attached
                || only.is_some_and(|name| name != stack.integration)
            {
                continue;
            }
            let Some(integration) = registry.integration(&stack.integration) else {
                continue;
            };
            if integration.id != stack.integration_id
                || !self.owns(owned, &integration.name, &stack.repository)
            {
                continue;
            }
            work.entry((integration.name.clone(), stack.repository.to_lowercase()))
                .or_insert_with(|| Work {
                    scope: Scope {
                        integration: integration.name.clone(),
                        integration_id: integration.id.clone(),
                        repository: stack.repository.to_string(),
                    },
                    branches: BTreeSet::new(),
                })
                .branches
                .insert(stack.branch.to_string());
        }
        work.into_values().collect()
    }

    /// One pass over what this process owns (of integration `only`, or all). `cursor` is where
    /// a periodic pass starts in the sorted work list (where the last one stopped).
    pub async fn pass(
        &self,
        only: Option<&str>,
        reconcile_id: &str,
        cursor: &mut usize,
    ) -> PassReport {
        let started = Instant::now();
        let owned = self.owned();
        let work = self.work(&owned, only);
        let mut report = PassReport {
            owned_partitions: owned.len(),
            repositories: work.len(),
            ..PassReport::default()
        };
        if only.is_none() {
            self.metrics.repositories.set(work.len() as i64);
        }
        if owned.is_empty() {
            self.metrics.passes.with_label_values(&["skipped"]).inc();
            return report;
        }
        let budget = Duration::from_secs(self.config.interval_s.max(300))
            .mul_f64(self.config.max_pass_share);
        let deadline = started + budget;
        let start = if work.is_empty() {
            0
        } else {
            *cursor % work.len()
        };
        let ordered: Vec<Work> = work[start..]
            .iter()
            .chain(&work[..start])
            .cloned()
            .collect();
        let total = ordered.len();
        let mut results = futures::stream::iter(ordered)
            .take_while(|_| std::future::ready(Instant::now() < deadline))
            .map(|w| async move {
                let result = self.repository(&w, reconcile_id).await;
                (w, result)
            })
            .buffer_unordered(self.config.max_repositories_in_flight);
        let mut done = 0usize;
        while let Some((work, result)) = results.next().await {
            done += 1;
            match result {
                Ok((recovered, changes)) => {
                    report.read += 1;
                    report.recovered += recovered;
                    report.head_changes += changes;
                }
                Err(failure) => {
                    self.metrics.errors.with_label_values(&[failure.code]).inc();
                    tracing::warn!(
                        integration = %work.scope.integration,
                        repository = %work.scope.repository,
                        reason = failure.code,
                        error = %failure.message,
                        "reconciliation could not read the repository; it is tried again next pass"
                    );
                    report.failed.push((work.scope.repository.clone(), failure));
                }
            }
        }
        drop(results);
        report.left = total - done;
        if only.is_none() {
            *cursor = if report.left > 0 { start + done } else { 0 };
            report.head_changes += self.forget_unneeded(&owned, &work).await;
        }
        let outcome = if report.failed.is_empty() && report.left == 0 {
            "complete"
        } else {
            "incomplete"
        };
        self.metrics.passes.with_label_values(&[outcome]).inc();
        self.metrics
            .pass_seconds
            .observe(started.elapsed().as_secs_f64());
        report
    }

    /// Reads one repository and runs its differences: (deliveries synthesized, head changes).
    async fn repository(&self, work: &Work, reconcile_id: &str) -> Result<(usize, usize), Failure> {
        let scope = &work.scope;
        let target = {
            let registry = self.control.read();
            target(&registry, self.secrets_key.as_ref(), &scope.integration)
        }
        .map_err(|u| Failure {
            code: u.code,
            message: u.message,
        })?;
        let repository =
            RepositoryRef::from_full_name(&scope.repository).ok_or_else(|| Failure {
                code: "invalid_repository",
                message: format!("`{}` is not PROJECT/repo", scope.repository),
            })?;
        let mut observed = Vec::with_capacity(work.branches.len());
        for branch in &work.branches {
            let head = self
                .source
                .branch_head(&target, &repository, branch)
                .await?;
            let pull_requests = match head {
                Some(_) => {
                    self.source
                        .open_pull_requests(&target, &repository, branch)
                        .await?
                }
                None => Vec::new(),
            };
            observed.push(Observed {
                branch: branch.clone(),
                head,
                pull_requests,
            });
        }
        let known = self
            .heads
            .repository(&scope.integration_id, &scope.repository);
        let plan = compare(scope, &known, &observed);
        let control_offset = self.control.applied_offset();
        // Deliveries first, then heads: a head recorded for a delivery that never made it to
        // Kafka would hide the difference from the next pass.
        for missing in &plan.missing {
            let (webhook, event) =
                synthesize(scope, missing, reconcile_id, control_offset, &self.topics);
            self.send(&webhook).await?;
            self.send(&event).await?;
            let kind = match missing {
                Missing::Push { .. } => "push",
                Missing::PullRequest { .. } => "pull_request",
            };
            self.metrics.recovered.with_label_values(&[kind]).inc();
            tracing::warn!(
                integration = %scope.integration,
                repository = %scope.repository,
                reconcile_id,
                missing = ?missing,
                "recovered a delivery Bitbucket never made"
            );
        }
        for output in crate::heads::outputs(&self.topics.heads(), &plan.changes) {
            self.send(&output).await?;
        }
        self.heads.apply(&plan.changes);
        Ok((plan.missing.len(), plan.changes.len()))
    }

    /// Removes the heads of owned repositories nothing reconciles any more (stack deleted,
    /// integration deleted or re-created). Returns how many were removed.
    async fn forget_unneeded(&self, owned: &BTreeSet<i32>, work: &[Work]) -> usize {
        let needed: BTreeSet<String> = work
            .iter()
            .map(|w| HeadRecord::prefix(&w.scope.integration_id, &w.scope.repository))
            .collect();
        let registry_ids: BTreeSet<String> = self
            .control
            .read()
            .integrations()
            .map(|i| i.id.clone())
            .collect();
        let mut gone = Vec::new();
        for (key, integration, repository, integration_id) in self.heads.keys() {
            let prefix = HeadRecord::prefix(&integration_id, &repository);
            let integration_gone = !registry_ids.contains(&integration_id);
            if !needed.contains(&prefix)
                && (integration_gone || self.owns(owned, &integration, &repository))
            {
                gone.push((key, None));
            }
        }
        let mut removed = 0;
        for change in &gone {
            let output = Output::tombstone(&self.topics.heads(), &change.0);
            if self.send(&output).await.is_ok() {
                self.heads.apply(std::slice::from_ref(change));
                removed += 1;
            }
        }
        removed
    }

    async fn send(&self, output: &Output) -> Result<(), Failure> {
        self.outputs
            .send(output, SEND_DEADLINE)
            .await
            .map(|_| ())
            .map_err(|err| Failure {
                code: "kafka_unavailable",
                message: err.to_string(),
            })
    }
}

/// The delivery-log event of an on-demand pass: counts and reasons, no repository names.
fn summary(
    (integration, integration_id): (&str, &str),
    reconcile_id: &str,
    report: &PassReport,
    topics: &Topics,
) -> Output {
    let mut event = DeliveryEvent::new(
        reconcile_id,
        integration,
        Stage::Reconciler,
        DeliveryOutcome::Reconciled,
    );
    event.integration_id = Some(integration_id.to_owned());
    let mut failed: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, failure) in &report.failed {
        *failed.entry(failure.code).or_default() += 1;
    }
    event.reasons = vec![
        format!("repositories: {}", report.repositories),
        format!("recovered: {}", report.recovered),
    ];
    event.reasons.extend(
        failed
            .iter()
            .map(|(code, n)| format!("failed: {code}: {n}")),
    );
    if report.left > 0 {
        event
            .reasons
            .push(format!("left_for_next_pass: {}", report.left));
    }
    Output::delivery_event(&topics.deliveries(), &event)
}

fn log_pass(reconcile_id: &str, only: Option<&str>, report: &PassReport) {
    let failed: Vec<String> = report
        .failed
        .iter()
        .take(10)
        .map(|(repository, f)| format!("{repository}: {}", f.code))
        .collect();
    if report.failed.is_empty() && report.left == 0 {
        tracing::info!(
            reconcile_id,
            integration = only.unwrap_or("*"),
            repositories = report.repositories,
            recovered = report.recovered,
            head_changes = report.head_changes,
            "reconciliation pass complete"
        );
    } else {
        tracing::warn!(
            reconcile_id,
            integration = only.unwrap_or("*"),
            repositories = report.repositories,
            read = report.read,
            recovered = report.recovered,
            failed = report.failed.len(),
            left_for_next_pass = report.left,
            first_failures = ?failed,
            "reconciliation pass incomplete"
        );
    }
}

/// A random duration up to `max`.
fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return max;
    }
    max.mul_f64(rand::thread_rng().r#gen::<f64>())
}

fn uuid_like() -> String {
    hex::encode(rand::thread_rng().r#gen::<[u8; 8]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope {
            integration: "bb".to_owned(),
            integration_id: "i1".to_owned(),
            repository: "INFRA/network".to_owned(),
        }
    }

    fn pr(id: u64, commit: &str) -> OpenPullRequest {
        OpenPullRequest {
            id,
            latest_commit: commit.to_owned(),
            from_branch: format!("feature-{id}"),
            from_repository: "INFRA/network".to_owned(),
        }
    }

    fn observed(head: Option<&str>, prs: Vec<OpenPullRequest>) -> Vec<Observed> {
        vec![Observed {
            branch: "main".to_owned(),
            head: head.map(str::to_owned),
            pull_requests: prs,
        }]
    }

    /// Applies a plan's head changes to `known`, as the reconciler does after writing them.
    fn applied(
        mut known: BTreeMap<String, HeadRecord>,
        plan: &Plan,
    ) -> BTreeMap<String, HeadRecord> {
        for (key, record) in &plan.changes {
            match record {
                Some(record) => known.insert(key.clone(), record.clone()),
                None => known.remove(key),
            };
        }
        known
    }

    /// The first pass only records: the branch (marked as listed) and its open pull requests.
    #[test]
    fn the_first_pass_only_records() {
        let plan = compare(
            &scope(),
            &BTreeMap::new(),
            &observed(Some("a1"), vec![pr(7, "f1")]),
        );
        assert!(plan.missing.is_empty(), "{plan:?}");
        let keys: Vec<_> = plan.changes.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "i1/infra/network/branch/main",
                "i1/infra/network/pull-request/7"
            ]
        );
        assert!(plan.changes[0].1.as_ref().is_some_and(|h| h.reconciled));
    }

    /// Nothing moved: nothing to run and nothing to write.
    #[test]
    fn nothing_moved_plans_nothing() {
        let first = compare(
            &scope(),
            &BTreeMap::new(),
            &observed(Some("a1"), vec![pr(7, "f1")]),
        );
        let known = applied(BTreeMap::new(), &first);
        let plan = compare(&scope(), &known, &observed(Some("a1"), vec![pr(7, "f1")]));
        assert_eq!(plan, Plan::default());
    }

    /// A moved branch is a push from the last-seen commit; a moved pull request an update from
    /// its last-seen commit; one opened since the last pass an opening; a closed one is removed.
    #[test]
    fn what_moved_is_missing() {
        let first = compare(
            &scope(),
            &BTreeMap::new(),
            &observed(Some("a1"), vec![pr(7, "f1"), pr(8, "g1")]),
        );
        let known = applied(BTreeMap::new(), &first);
        let plan = compare(
            &scope(),
            &known,
            &observed(Some("a2"), vec![pr(7, "f2"), pr(9, "h1")]),
        );
        assert_eq!(
            plan.missing,
            vec![
                Missing::Push {
                    branch: "main".to_owned(),
                    from: "a1".to_owned(),
                    to: "a2".to_owned()
                },
                Missing::PullRequest {
                    branch: "main".to_owned(),
                    pull_request: pr(7, "f2"),
                    from: Some("f1".to_owned())
                },
                Missing::PullRequest {
                    branch: "main".to_owned(),
                    pull_request: pr(9, "h1"),
                    from: None
                },
            ]
        );
        let known = applied(known, &plan);
        assert!(
            !known.contains_key("i1/infra/network/pull-request/8"),
            "closed PR forgotten"
        );
        assert_eq!(known["i1/infra/network/branch/main"].commit, "a2");
    }

    /// A branch the router saw only through webhooks has never had its pull requests listed:
    /// the unknown ones are recorded, not run.
    #[test]
    fn pull_requests_of_an_unlisted_branch_are_only_recorded() {
        let mut seen = scope().head("main", None, "a1");
        seen.reconciled = false;
        let known = BTreeMap::from([(seen.key(), seen)]);
        let plan = compare(&scope(), &known, &observed(Some("a1"), vec![pr(7, "f1")]));
        assert!(plan.missing.is_empty(), "{plan:?}");
        assert_eq!(plan.changes.len(), 2);
    }

    /// A branch gone from Bitbucket runs nothing and loses its heads.
    #[test]
    fn a_deleted_branch_is_forgotten() {
        let first = compare(
            &scope(),
            &BTreeMap::new(),
            &observed(Some("a1"), vec![pr(7, "f1")]),
        );
        let known = applied(BTreeMap::new(), &first);
        let plan = compare(&scope(), &known, &observed(None, Vec::new()));
        assert!(plan.missing.is_empty());
        assert!(applied(known, &plan).is_empty());
    }

    /// The synthesized push parses as the webhook it stands for, and its id is stable.
    #[test]
    fn a_synthesized_push_is_a_webhook() {
        let missing = Missing::Push {
            branch: "main".to_owned(),
            from: "1".repeat(40),
            to: "2".repeat(40),
        };
        let topics = Topics::new("inlet.");
        let (webhook, event) = synthesize(&scope(), &missing, "r1", 3, &topics);
        let (again, _) = synthesize(&scope(), &missing, "r2", 4, &topics);
        let id = |o: &Output| {
            o.headers
                .iter()
                .find(|(k, _)| k == headers::DELIVERY_ID)
                .and_then(|(_, v)| v.clone())
        };
        assert_eq!(id(&webhook), id(&again));
        assert_eq!(webhook.key, b"bb/infra/network");
        let Ok(Some(inlet_bitbucket::Event::Push(push))) =
            inlet_bitbucket::parse("repo:refs_changed", &webhook.payload)
        else {
            panic!("not a push")
        };
        assert_eq!(push.changes[0].to_hash, "2".repeat(40));
        assert_eq!(push.repository.full_name(), "INFRA/network");
        let event: DeliveryEvent = serde_json::from_slice(&event.payload).expect("event");
        assert_eq!(event.stage, Stage::Reconciler);
        assert_eq!(event.outcome, DeliveryOutcome::Recovered);
        assert!(
            event.reasons[0]
                .starts_with("missing_push: refs/heads/main 111111111111..222222222222")
        );
    }
}
