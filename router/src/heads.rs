//! Last-seen heads: for each branch that stacks track, the commit the router last saw on it, and
//! for each open pull request into such a branch, its latest source commit. Reconciliation
//! ([`crate::reconcile`]) compares them with Bitbucket's to find what no webhook brought.
//!
//! Where they live: the compacted topic `inlet.heads`, one [`HeadRecord`] per head, keyed by
//! [`HeadRecord::key`] (integration incarnation, repository, branch or pull request). Every
//! router reads the whole topic at startup ([`load`]) and then tails it, so the process that
//! takes over a repository after a rebalance already knows its heads. Written by the router
//! while it routes a webhook (the record is one of the webhook's outputs, so it is on Kafka
//! before the webhook's offset is committed) and by reconcile passes; a head nobody needs any
//! more (pull request closed, branch deleted or no longer tracked, stack or integration gone)
//! gets a tombstone.
//!
//! Why a topic of its own rather than re-reading `inlet.webhooks`: that topic keeps 7 days of
//! raw bodies, so a branch pushed less often than that would be forgotten by a restart, and
//! re-reading it means parsing every body of the week. The heads topic holds one small record
//! per head, forever. Memory is bounded by the stacks' branches and the open pull requests into
//! them, not by traffic: pushes to branches no stack tracks leave no head.
//!
//! On the embedded broker (no compaction) the topic only grows, up to the mock's 5 MiB per
//! partition, after which its oldest records are lost; heads lost so are recorded again by the
//! next pass (it records, never runs, what it does not know).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inlet_bitbucket::{ChangeKind, Event, PullRequestAction};
use inlet_control::registry::Registry;
use inlet_core::CancellationToken;
use inlet_core::clock::now_rfc3339;
use inlet_core::kafka::{Kafka, SetupError};
use inlet_core::pipeline::Output;
use inlet_core::records::{HEAD_SCHEMA, HeadRecord, PullRequestHead};
use prometheus::IntGauge;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::topic_partition_list::Offset;

/// How long startup may spend reading the heads topic before routing starts anyway.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// A change to one head: its key, and the new record (`None`: remove it).
pub type HeadChange = (String, Option<HeadRecord>);

/// The heads this process knows (every router's), shared by the router and its reconciler.
#[derive(Clone)]
pub struct Heads {
    known: Arc<Mutex<BTreeMap<String, HeadRecord>>>,
    gauge: IntGauge,
}

impl Heads {
    /// No heads yet; `gauge` follows how many there are.
    pub fn new(gauge: IntGauge) -> Heads {
        Heads {
            known: Arc::default(),
            gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, HeadRecord>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies changes this process made (or read from the topic).
    pub fn apply(&self, changes: &[HeadChange]) {
        let mut known = self.lock();
        for (key, record) in changes {
            match record {
                Some(record) => known.insert(key.clone(), record.clone()),
                None => known.remove(key),
            };
        }
        self.gauge.set(known.len() as i64);
    }

    /// Applies a record read from the topic: a value older than the one held (by `at`) is the
    /// echo of an earlier write that a later one already replaced, and is skipped.
    fn apply_read(&self, key: &str, record: Option<HeadRecord>) {
        let mut known = self.lock();
        match record {
            Some(record) => {
                if known.get(key).is_none_or(|held| held.at <= record.at) {
                    known.insert(key.to_owned(), record);
                }
            }
            None => {
                known.remove(key);
            }
        }
        self.gauge.set(known.len() as i64);
    }

    /// The heads of `repository` under integration incarnation `integration_id`, by key.
    pub fn repository(
        &self,
        integration_id: &str,
        repository: &str,
    ) -> BTreeMap<String, HeadRecord> {
        let prefix = HeadRecord::prefix(integration_id, repository);
        self.lock()
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(key, record)| (key.clone(), record.clone()))
            .collect()
    }

    /// Every head, as (key, integration name, repository, integration id): what a pass checks
    /// for heads nothing needs any more.
    pub fn keys(&self) -> Vec<(String, String, String, String)> {
        self.lock()
            .iter()
            .map(|(key, r)| {
                (
                    key.clone(),
                    r.integration.clone(),
                    r.repository.clone(),
                    r.integration_id.clone(),
                )
            })
            .collect()
    }

    /// How many heads are known.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no head is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The head changes a webhook brings, for the branches stacks track and the pull requests
    /// into them: a push moves a tracked branch (a deletion removes it); a pull request opened,
    /// updated or re-targeted records its latest commit (re-targeted elsewhere, or merged:
    /// removed). Other branches and events change nothing.
    pub fn observe(
        &self,
        registry: &Registry,
        integration: &str,
        event: &Event,
    ) -> Vec<HeadChange> {
        let Some(current) = registry.integration(integration) else {
            return Vec::new();
        };
        let tracks = |repository: &str, branch: &str| {
            registry
                .stacks_on_repository(integration, repository)
                .any(|s| s.branch == branch && s.integration_id == current.id)
        };
        let record =
            |repository: String, branch: String, pull_request, commit: String| HeadRecord {
                schema: HEAD_SCHEMA.to_owned(),
                integration_id: current.id.clone(),
                integration: integration.to_owned(),
                repository,
                branch,
                pull_request,
                commit,
                reconciled: false,
                at: now_rfc3339(),
            };
        let mut changes = Vec::new();
        match event {
            Event::Push(push) => {
                let repository = push.repository.full_name();
                for change in &push.changes {
                    let branch = change.reference.short_name();
                    if !change.reference.is_branch() || !tracks(&repository, &branch) {
                        continue;
                    }
                    let mut head = record(repository.clone(), branch, None, change.to_hash.clone());
                    let key = head.key();
                    match change.change_kind() {
                        Some(ChangeKind::Add | ChangeKind::Update) => {
                            // Keep what a pass learnt: the branch's pull requests were listed.
                            head.reconciled = self.lock().get(&key).is_some_and(|h| h.reconciled);
                            changes.push((key, Some(head)));
                        }
                        Some(ChangeKind::Delete) => changes.push((key, None)),
                        None => {}
                    }
                }
            }
            Event::PullRequest(action, event) => {
                let pr = &event.pull_request;
                let repository = pr.to_ref.repository.full_name();
                let target = pr.to_ref.branch();
                let head = record(
                    repository.clone(),
                    target.clone(),
                    Some(PullRequestHead {
                        id: pr.id,
                        from_branch: pr.from_ref.branch(),
                        from_repository: pr.from_ref.repository.full_name(),
                    }),
                    pr.from_ref.latest_commit.clone(),
                );
                let key = head.key();
                match action {
                    PullRequestAction::Opened
                    | PullRequestAction::SourceUpdated
                    | PullRequestAction::Modified => {
                        if tracks(&repository, &target) {
                            changes.push((key, Some(head)));
                        } else if self.lock().contains_key(&key) {
                            changes.push((key, None));
                        }
                    }
                    PullRequestAction::Merged if self.lock().contains_key(&key) => {
                        changes.push((key, None));
                    }
                    _ => {}
                }
            }
        }
        changes
    }
}

/// The records of `changes` on `topic`: values, or tombstones for removals.
pub fn outputs(topic: &str, changes: &[HeadChange]) -> Vec<Output> {
    changes
        .iter()
        .map(|(key, record)| match record {
            Some(record) => Output::json(topic, key, record),
            None => Output::tombstone(topic, key),
        })
        .collect()
}

/// Reads `topic` from the beginning into `heads` (at most [`LOAD_TIMEOUT`]), then keeps
/// applying what other routers write until `shutdown`. Returns once the first read is done, with
/// the tailing task (which ends, closing its reader, after `shutdown`).
pub async fn load(
    kafka: &Kafka,
    topic: &str,
    heads: &Heads,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, SetupError> {
    let started = std::time::Instant::now();
    let reader = kafka.read_all(topic, Offset::Beginning).await?;
    let partitions = kafka.partition_count(topic).await?;
    let name = topic.to_owned();
    let (reader, ends) = tokio::task::spawn_blocking(move || {
        let mut ends = HashMap::new();
        for partition in 0..partitions as i32 {
            let (low, high) = reader.fetch_watermarks(&name, partition, Duration::from_secs(10))?;
            if high > low {
                ends.insert(partition, high);
            }
        }
        Ok::<_, SetupError>((reader, ends))
    })
    .await??;
    let mut read = 0usize;
    let complete = read_to(&reader, ends, heads, &mut read).await;
    if complete {
        tracing::info!(
            records = read,
            heads = heads.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "last-seen heads loaded"
        );
    } else {
        tracing::warn!(
            records = read,
            heads = heads.len(),
            "last-seen heads loaded only in part (the heads topic took too long to read); \
             reconciliation records what it does not know instead of running it"
        );
    }
    let heads = heads.clone();
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                message = reader.recv() => match message {
                    Ok(message) => apply_message(&heads, &message),
                    Err(err) => {
                        tracing::warn!(error = %err, "reading the heads topic failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                },
            }
        }
    }))
}

/// Reads until every partition's position reached its end in `ends`, or [`LOAD_TIMEOUT`].
/// Positions are checked too, not only offsets read: compaction may have removed the last
/// record (an old tombstone) of a partition.
async fn read_to(
    reader: &StreamConsumer,
    mut ends: HashMap<i32, i64>,
    heads: &Heads,
    read: &mut usize,
) -> bool {
    let deadline = tokio::time::Instant::now() + LOAD_TIMEOUT;
    while !ends.is_empty() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        match tokio::time::timeout(Duration::from_millis(500), reader.recv()).await {
            Ok(Ok(message)) => {
                *read += 1;
                apply_message(heads, &message);
                if ends
                    .get(&message.partition())
                    .is_some_and(|end| message.offset() + 1 >= *end)
                {
                    ends.remove(&message.partition());
                }
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "reading the heads topic failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => {
                if let Ok(positions) = reader.position() {
                    for element in positions.elements() {
                        if let (Offset::Offset(at), Some(end)) =
                            (element.offset(), ends.get(&element.partition()))
                            && at >= *end
                        {
                            ends.remove(&element.partition());
                        }
                    }
                }
            }
        }
    }
    true
}

fn apply_message<M: Message>(heads: &Heads, message: &M) {
    let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
        return;
    };
    match message.payload() {
        None => heads.apply_read(key, None),
        Some(payload) => match serde_json::from_slice::<HeadRecord>(payload) {
            Ok(record) => heads.apply_read(key, Some(record)),
            Err(err) => tracing::warn!(%key, error = %err, "unreadable head record skipped"),
        },
    }
}
