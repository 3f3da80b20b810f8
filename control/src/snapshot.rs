//! Snapshots of the folded registry on `inlet.control-snapshots`, so a starting process loads the
//! registry as of offset *N* and folds only the records after it.
//!
//! Enters: the registry as folded up to and including control offset *N* (writing); the snapshot
//! topic and the control log's watermarks (loading). Leaves: chunks keyed `snapshot/<N>/<i>` on
//! the data partitions and a manifest keyed `snapshot/<N>/manifest` on partition 0 (writing);
//! the newest complete, valid snapshot that leaves no gap before the log's low watermark, as a
//! [`Registry`] (loading).
//!
//! Format: the registry as JSON lines, one entity a line (spaces, integrations, API keys, managed
//! webhooks, reconcile requests, stacks, each section in key order), cut at line boundaries into
//! chunks of about [`CHUNK_BYTES`]. The maps are ordered and the entities serialize field by
//! field, so every process that folded to *N* writes byte-identical chunks. The manifest names
//! each chunk's partition, offset, length and SHA-256, the SHA-256 over the chunk digests, the
//! registry's sizes, and the schema and fold versions. The repository index is rebuilt on load.
//!
//! Guarantee: a snapshot is used only if its manifest is present, of this schema and fold version,
//! every chunk is found with its digest, and the loaded sizes match; otherwise the next older one
//! is tried, and with none the caller folds from offset 0 or refuses to start.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{ApiKey, Integration, ManagedWebhook, Space, Stack};
use crate::registry::{ReconcileRequest, Registry, RegistrySizes};
use inlet_core::kafka::{Producer, SetupError};

/// The `schema` of a snapshot manifest.
pub const SNAPSHOT_SCHEMA: &str = "inlet.control-snapshot/v1";

/// The version of the fold's rules a snapshot was made with. Change it whenever a release changes
/// what the fold accepts or how it changes state: a snapshot of another version is ignored (the
/// process folds the log instead, or a newer snapshot of its own version).
pub const FOLD_VERSION: u32 = 1;

/// Target size of one chunk (uncompressed JSON). Well under Kafka's default 1 MiB record limit,
/// and small enough that a loading process holds one at a time.
pub const CHUNK_BYTES: usize = 512 * 1024;

/// The partition manifests go to; chunks go to the others, round robin.
pub const MANIFEST_PARTITION: i32 = 0;

/// Chunks in flight to the broker at once while writing (bounds the writer's memory).
const WINDOW: usize = 4;

/// How long a write or a load waits for the broker at most.
const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

/// When a process writes snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Whether this process writes snapshots (it always loads them).
    pub write: bool,
    /// A snapshot is due after this many control records since the last one.
    pub every_records: i64,
    /// A snapshot is due after this many bytes of control records since the last one, whichever
    /// comes first. Kept well under the embedded broker's 5 MiB per partition, so the log's oldest
    /// records are covered by a snapshot before that broker deletes them.
    pub every_bytes: usize,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            write: true,
            every_records: 10_000,
            every_bytes: 2 * 1024 * 1024,
        }
    }
}

/// Where one chunk of a snapshot is, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Partition of the snapshot topic.
    pub partition: i32,
    /// Offset it was written at (a later copy under the same key may follow it).
    pub offset: i64,
    /// Bytes.
    pub length: usize,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
}

/// The record that makes a snapshot complete: written after every chunk was acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`SNAPSHOT_SCHEMA`].
    pub schema: String,
    /// [`FOLD_VERSION`] of the writer.
    pub fold_version: u32,
    /// The registry is the fold of every control record up to and including this offset.
    pub offset: i64,
    /// Total bytes of the chunks.
    pub length: usize,
    /// Hex SHA-256 over the chunks' digests (raw 32 bytes each), in chunk order.
    pub sha256: String,
    /// The chunks, in order.
    pub chunks: Vec<ChunkRef>,
    /// Entities in the snapshot (a load must give the same).
    pub spaces: usize,
    /// Integrations.
    pub integrations: usize,
    /// Stacks.
    pub stacks: usize,
    /// API keys.
    pub api_keys: usize,
}

impl Manifest {
    fn sizes(&self) -> RegistrySizes {
        RegistrySizes {
            spaces: self.spaces,
            integrations: self.integrations,
            stacks: self.stacks,
            api_keys: self.api_keys,
        }
    }
}

/// Why a snapshot could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The broker did not take or give a record.
    #[error("kafka: {0}")]
    Kafka(String),
    /// A chunk is missing, its digest or the manifest's does not match, or it does not parse.
    #[error("invalid snapshot: {0}")]
    Invalid(String),
}

impl From<SetupError> for SnapshotError {
    fn from(err: SetupError) -> Self {
        SnapshotError::Kafka(err.to_string())
    }
}

impl From<rdkafka::error::KafkaError> for SnapshotError {
    fn from(err: rdkafka::error::KafkaError) -> Self {
        SnapshotError::Kafka(err.to_string())
    }
}

/// The key of chunk `index` of the snapshot at `offset`.
pub fn chunk_key(offset: i64, index: usize) -> String {
    format!("snapshot/{offset}/{index}")
}

/// The key of the manifest of the snapshot at `offset`.
pub fn manifest_key(offset: i64) -> String {
    format!("snapshot/{offset}/manifest")
}

/// The partition chunk `index` goes to, on a topic of `partitions` partitions.
pub fn chunk_partition(index: usize, partitions: i32) -> i32 {
    if partitions <= 1 {
        MANIFEST_PARTITION
    } else {
        1 + (index % (partitions as usize - 1)) as i32
    }
}

/// One line of a snapshot, as written.
#[derive(Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
enum EntryRef<'a> {
    Space(&'a Space),
    Integration(&'a Integration),
    ApiKey(&'a ApiKey),
    Webhooks {
        integration: &'a str,
        webhooks: Vec<&'a ManagedWebhook>,
    },
    Reconcile {
        integration: &'a str,
        request: &'a ReconcileRequest,
    },
    Stack(&'a Stack),
}

/// One line of a snapshot, as read.
#[derive(Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
enum Entry {
    Space(Space),
    Integration(Integration),
    ApiKey(ApiKey),
    Webhooks {
        integration: String,
        webhooks: Vec<ManagedWebhook>,
    },
    Reconcile {
        integration: String,
        request: ReconcileRequest,
    },
    Stack(Stack),
}

/// Where the next chunk starts: a section and the last key written in it.
#[derive(Debug, Default, Clone)]
pub struct Cursor {
    section: usize,
    after: Option<String>,
}

/// Appends the entries of `map` after `after` to `buf` until it holds `limit` bytes. The last key
/// written when it stopped for the limit; `None` when the section is done.
fn fill<'a, K, T>(
    map: &'a BTreeMap<K, T>,
    after: Option<&str>,
    buf: &mut Vec<u8>,
    limit: usize,
    entry: impl Fn(&'a str, &'a T) -> EntryRef<'a>,
) -> Option<String>
where
    K: Ord + std::borrow::Borrow<str>,
{
    use std::ops::Bound;
    let range = match after {
        Some(key) => map.range::<str, _>((Bound::Excluded(key), Bound::Unbounded)),
        None => map.range::<str, _>((Bound::Unbounded, Bound::Unbounded)),
    };
    for (key, value) in range {
        // Serializing plain data into a Vec cannot fail.
        let key: &str = key.borrow();
        if serde_json::to_writer(&mut *buf, &entry(key, value)).is_ok() {
            buf.push(b'\n');
        }
        if buf.len() >= limit {
            return Some(key.to_owned());
        }
    }
    None
}

/// The next chunk of `registry` from `cursor` (at least one line, about `limit` bytes), or `None`
/// when everything was written. Deterministic: the same registry gives the same chunks.
pub fn next_chunk(registry: &Registry, cursor: &mut Cursor, limit: usize) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(limit + 4096);
    while cursor.section < 6 {
        let after = cursor.after.as_deref();
        let stopped = match cursor.section {
            0 => fill(&registry.spaces, after, &mut buf, limit, |_, s| {
                EntryRef::Space(s)
            }),
            1 => fill(&registry.integrations, after, &mut buf, limit, |_, i| {
                EntryRef::Integration(i)
            }),
            2 => fill(&registry.api_keys, after, &mut buf, limit, |_, k| {
                EntryRef::ApiKey(k)
            }),
            3 => fill(&registry.webhooks, after, &mut buf, limit, |name, w| {
                EntryRef::Webhooks {
                    integration: name,
                    webhooks: w.values().collect(),
                }
            }),
            4 => fill(&registry.reconciles, after, &mut buf, limit, |name, r| {
                EntryRef::Reconcile {
                    integration: name,
                    request: r,
                }
            }),
            _ => fill(&registry.stacks, after, &mut buf, limit, |_, s| {
                EntryRef::Stack(s)
            }),
        };
        match stopped {
            Some(key) => {
                cursor.after = Some(key);
                return Some(buf);
            }
            None => {
                cursor.section += 1;
                cursor.after = None;
            }
        }
    }
    (!buf.is_empty()).then_some(buf)
}

/// Every chunk of `registry`, in order (tests and benchmarks; the writer streams them).
pub fn chunks(registry: &Registry, limit: usize) -> Vec<Vec<u8>> {
    let mut cursor = Cursor::default();
    std::iter::from_fn(|| next_chunk(registry, &mut cursor, limit)).collect()
}

/// Adds the entities of one chunk to `registry`.
pub fn load_chunk(registry: &mut Registry, bytes: &[u8]) -> Result<(), SnapshotError> {
    for (number, line) in bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let entry: Entry = serde_json::from_slice(line)
            .map_err(|err| SnapshotError::Invalid(format!("line {number}: {err}")))?;
        match entry {
            Entry::Space(space) => {
                registry.spaces.insert(space.id.clone(), space);
            }
            Entry::Integration(integration) => {
                registry
                    .integrations
                    .insert(integration.name.clone(), integration);
            }
            Entry::ApiKey(key) => {
                registry.api_keys.insert(key.id.clone(), key);
            }
            Entry::Webhooks {
                integration,
                webhooks,
            } => {
                registry.webhooks.insert(
                    integration,
                    webhooks.into_iter().map(|w| (w.id, w)).collect(),
                );
            }
            Entry::Reconcile {
                integration,
                request,
            } => {
                registry.reconciles.insert(integration, request);
            }
            Entry::Stack(mut stack) => {
                registry.share_values(&mut stack);
                registry.insert_stack(Box::new(stack));
            }
        }
    }
    Ok(())
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The manifest's digest over the chunks' digests.
fn combined(digests: &[[u8; 32]]) -> String {
    let mut hasher = Sha256::new();
    for d in digests {
        hasher.update(d);
    }
    hex::encode(hasher.finalize())
}

/// Writes the registry in `registry` as the snapshot at `offset` to `topic` and returns its
/// manifest. The caller must not change the registry until this returns (the fold task calls it
/// between two records); the lock is held only while a chunk is serialized.
pub async fn write(
    registry: &RwLock<Registry>,
    offset: i64,
    producer: &Producer,
    topic: &str,
    partitions: i32,
) -> Result<Manifest, SnapshotError> {
    let mut cursor = Cursor::default();
    let mut pending: std::collections::VecDeque<(usize, DeliveryFuture)> = Default::default();
    let mut chunks: Vec<ChunkRef> = Vec::new();
    let mut digests = Vec::new();
    let mut length = 0;
    let sizes = read(registry).sizes();
    loop {
        let chunk = {
            let guard = read(registry);
            next_chunk(&guard, &mut cursor, CHUNK_BYTES)
        };
        let Some(bytes) = chunk else { break };
        let index = chunks.len();
        let partition = chunk_partition(index, partitions);
        let sha = digest(&bytes);
        digests.push(sha);
        length += bytes.len();
        chunks.push(ChunkRef {
            partition,
            offset: -1,
            length: bytes.len(),
            sha256: hex::encode(sha),
        });
        let key = chunk_key(offset, index);
        let delivery = send(producer, topic, partition, &key, &bytes).await?;
        pending.push_back((index, delivery));
        while pending.len() >= WINDOW {
            let (index, delivery) = pending.pop_front().expect("non-empty window");
            chunks[index].offset = acknowledged(delivery).await?;
        }
    }
    for (index, delivery) in pending {
        chunks[index].offset = acknowledged(delivery).await?;
    }
    let manifest = Manifest {
        schema: SNAPSHOT_SCHEMA.to_owned(),
        fold_version: FOLD_VERSION,
        offset,
        length,
        sha256: combined(&digests),
        chunks,
        spaces: sizes.spaces,
        integrations: sizes.integrations,
        stacks: sizes.stacks,
        api_keys: sizes.api_keys,
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    let delivery = send(
        producer,
        topic,
        MANIFEST_PARTITION,
        &manifest_key(offset),
        &bytes,
    )
    .await?;
    acknowledged(delivery).await?;
    Ok(manifest)
}

fn read(registry: &RwLock<Registry>) -> std::sync::RwLockReadGuard<'_, Registry> {
    registry
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Enqueues one record, waiting while the producer's queue is full.
async fn send(
    producer: &Producer,
    topic: &str,
    partition: i32,
    key: &str,
    payload: &[u8],
) -> Result<DeliveryFuture, SnapshotError> {
    let until = Instant::now() + BROKER_TIMEOUT;
    loop {
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(payload);
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((err, _)) if Instant::now() < until => {
                tracing::debug!(error = %err, "snapshot chunk not enqueued; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err((err, _)) => return Err(err.into()),
        }
    }
}

async fn acknowledged(delivery: DeliveryFuture) -> Result<i64, SnapshotError> {
    match tokio::time::timeout(BROKER_TIMEOUT, delivery).await {
        Ok(Ok(Ok(delivery))) => Ok(delivery.offset),
        Ok(Ok(Err((err, _)))) => Err(err.into()),
        Ok(Err(_)) => Err(SnapshotError::Kafka("delivery canceled".to_owned())),
        Err(_) => Err(SnapshotError::Kafka(
            "the broker did not acknowledge in time".to_owned(),
        )),
    }
}

/// A snapshot loaded from the topic.
pub struct Loaded {
    /// The registry as of [`Manifest::offset`].
    pub registry: Registry,
    /// Its manifest.
    pub manifest: Manifest,
    /// Manifests skipped because they were invalid, of another version, or left a gap.
    pub skipped: usize,
}

/// Reads the manifests on `topic` and loads the newest usable snapshot: of this schema and fold
/// version, `offset + 1 >= low` (no gap before the control log's low watermark) and
/// `offset < high` (not past the log's end). `Ok(None)` when there is none (or no topic).
pub async fn load(
    reader: &StreamConsumer,
    topic: &str,
    partitions: i32,
    low: i64,
    high: i64,
) -> Result<Option<Loaded>, SnapshotError> {
    if partitions <= 0 {
        return Ok(None);
    }
    let manifests = read_manifests(reader, topic).await?;
    let mut skipped = 0;
    for manifest in manifests.into_values().rev() {
        if manifest.schema != SNAPSHOT_SCHEMA || manifest.fold_version != FOLD_VERSION {
            tracing::info!(
                offset = manifest.offset,
                schema = %manifest.schema,
                fold_version = manifest.fold_version,
                "control snapshot of another version ignored"
            );
            skipped += 1;
            continue;
        }
        if manifest.offset + 1 < low || manifest.offset >= high {
            tracing::info!(
                offset = manifest.offset,
                low,
                high,
                "control snapshot outside the log's range ignored"
            );
            skipped += 1;
            continue;
        }
        match load_chunks(reader, topic, &manifest).await {
            Ok(registry) => {
                return Ok(Some(Loaded {
                    registry,
                    manifest,
                    skipped,
                }));
            }
            Err(err) => {
                tracing::warn!(offset = manifest.offset, error = %err, "control snapshot unusable; trying an older one");
                skipped += 1;
            }
        }
    }
    Ok(None)
}

/// Every manifest on the manifest partition, by offset (the last one read per offset).
async fn read_manifests(
    reader: &StreamConsumer,
    topic: &str,
) -> Result<BTreeMap<i64, Manifest>, SnapshotError> {
    let (low, high) = watermarks(reader, topic, MANIFEST_PARTITION).await?;
    let mut manifests = BTreeMap::new();
    if high <= low {
        return Ok(manifests);
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, MANIFEST_PARTITION, Offset::Offset(low))?;
    reader.assign(&assignment)?;
    loop {
        let message = tokio::time::timeout(BROKER_TIMEOUT, reader.recv())
            .await
            .map_err(|_| SnapshotError::Kafka("reading manifests timed out".to_owned()))??;
        let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
        if let (Some(key), Some(payload)) = (key, message.payload())
            && key.ends_with("/manifest")
        {
            match serde_json::from_slice::<Manifest>(payload) {
                Ok(manifest) => {
                    manifests.insert(manifest.offset, manifest);
                }
                Err(err) => {
                    tracing::warn!(key, error = %err, "unreadable control snapshot manifest ignored")
                }
            }
        } else if let Some(key) = key
            && key.ends_with("/manifest")
            && let Some(offset) = key
                .strip_prefix("snapshot/")
                .and_then(|k| k.strip_suffix("/manifest"))
                .and_then(|n| n.parse::<i64>().ok())
        {
            // A tombstone: that snapshot was removed.
            manifests.remove(&offset);
        }
        if message.offset() + 1 >= high {
            break;
        }
    }
    Ok(manifests)
}

async fn watermarks(
    reader: &StreamConsumer,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), SnapshotError> {
    let fetch = || {
        reader
            .fetch_watermarks(topic, partition, BROKER_TIMEOUT)
            .map_err(SnapshotError::from)
    };
    // `fetch_watermarks` blocks inside librdkafka: off the runtime's worker where possible.
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(fetch),
        _ => fetch(),
    }
}

/// Reads the chunks `manifest` names, checks each digest, and folds them into a fresh registry.
async fn load_chunks(
    reader: &StreamConsumer,
    topic: &str,
    manifest: &Manifest,
) -> Result<Registry, SnapshotError> {
    // Chunks per partition, in offset order; each partition is read from its first chunk on.
    let mut wanted: BTreeMap<i32, std::collections::VecDeque<usize>> = BTreeMap::new();
    for (index, chunk) in manifest.chunks.iter().enumerate() {
        wanted.entry(chunk.partition).or_default().push_back(index);
    }
    let started = Instant::now();
    let mut parse = Duration::ZERO;
    let mut assignment = TopicPartitionList::new();
    for (partition, indexes) in &wanted {
        let first = indexes
            .iter()
            .map(|i| manifest.chunks[*i].offset)
            .min()
            .unwrap_or(0);
        assignment.add_partition_offset(topic, *partition, Offset::Offset(first))?;
    }
    reader.assign(&assignment)?;
    // A partition paused by an earlier attempt stays paused across assignments.
    reader.resume(&assignment)?;
    let mut registry = Registry::new();
    let mut digests: Vec<Option<[u8; 32]>> = vec![None; manifest.chunks.len()];
    let mut remaining = manifest.chunks.len();
    let mut high: BTreeMap<i32, i64> = BTreeMap::new();
    while remaining > 0 {
        let message = tokio::time::timeout(BROKER_TIMEOUT, reader.recv())
            .await
            .map_err(|_| {
                SnapshotError::Invalid(format!("{remaining} chunks not found in time"))
            })??;
        let partition = message.partition();
        let Some(queue) = wanted.get_mut(&partition) else {
            continue;
        };
        let Some(&next) = queue.front() else {
            continue;
        };
        let key = chunk_key(manifest.offset, next);
        if message.key() == Some(key.as_bytes()) {
            let bytes = message.payload().unwrap_or_default();
            let sha = digest(bytes);
            if hex::encode(sha) != manifest.chunks[next].sha256
                || bytes.len() != manifest.chunks[next].length
            {
                return Err(SnapshotError::Invalid(format!(
                    "chunk {next} does not match its digest"
                )));
            }
            let parsing = Instant::now();
            load_chunk(&mut registry, bytes)?;
            parse += parsing.elapsed();
            digests[next] = Some(sha);
            remaining -= 1;
            queue.pop_front();
            if queue.is_empty() {
                let mut done = TopicPartitionList::new();
                done.add_partition(topic, partition);
                let _ = reader.pause(&done);
            }
            continue;
        }
        // Not the chunk looked for: a later copy of it may follow (another writer's, or the
        // one compaction kept), unless the partition ends here.
        let end = match high.get(&partition) {
            Some(end) => *end,
            None => {
                let (_, end) = watermarks(reader, topic, partition).await?;
                high.insert(partition, end);
                end
            }
        };
        if message.offset() + 1 >= end {
            return Err(SnapshotError::Invalid(format!("chunk {next} is missing")));
        }
    }
    tracing::debug!(
        parse_ms = parse.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "control snapshot chunks read"
    );
    let digests: Vec<[u8; 32]> = digests.into_iter().flatten().collect();
    if combined(&digests) != manifest.sha256 {
        return Err(SnapshotError::Invalid(
            "the chunks do not match the manifest's digest".to_owned(),
        ));
    }
    if registry.sizes() != manifest.sizes() {
        return Err(SnapshotError::Invalid(format!(
            "loaded {:?}, the manifest says {:?}",
            registry.sizes(),
            manifest.sizes()
        )));
    }
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic;

    fn folded(stacks: usize) -> Registry {
        let log = synthetic::generate(stacks);
        let mut registry = Registry::new();
        for bytes in &log.records {
            let record = serde_json::from_slice(bytes).expect("parse");
            registry.apply(&record).expect("accepted");
        }
        registry
    }

    /// The same registry gives the same bytes; loading them gives the same registry, index
    /// included.
    #[test]
    fn round_trip_is_deterministic() {
        let registry = folded(2_000);
        let first = chunks(&registry, 16 * 1024);
        assert!(first.len() > 10, "{} chunks", first.len());
        assert_eq!(first, chunks(&registry.clone(), 16 * 1024));
        let mut loaded = Registry::new();
        for chunk in &first {
            load_chunk(&mut loaded, chunk).expect("load");
        }
        assert_eq!(loaded, registry);
        // Every chunk but the last reaches the limit, and ends a line.
        assert!(first.iter().all(|c| c.ends_with(b"\n")));
        assert!(
            first[..first.len() - 1]
                .iter()
                .all(|c| c.len() >= 16 * 1024)
        );
    }

    /// Stacks folded from the log and stacks loaded from a snapshot both hold one allocation per
    /// distinct value: two stacks on one repository share its name, space and label set.
    #[test]
    fn stacks_share_their_values() {
        let registry = folded(2_000);
        let mut loaded = Registry::new();
        for chunk in chunks(&registry, 16 * 1024) {
            load_chunk(&mut loaded, &chunk).expect("load");
        }
        for registry in [&registry, &loaded] {
            let stacks: Vec<_> = registry.stacks().collect();
            let (a, b) = stacks
                .iter()
                .enumerate()
                .find_map(|(i, a)| {
                    stacks[i + 1..]
                        .iter()
                        .find(|b| b.repository == a.repository && b.space_id == a.space_id)
                        .map(|b| (*a, *b))
                })
                .expect("two stacks on one repository in one space");
            assert!(a.repository.same_allocation(&b.repository));
            assert!(a.space_id.same_allocation(&b.space_id));
            let (x, y) = stacks
                .iter()
                .enumerate()
                .find_map(|(i, x)| {
                    stacks[i + 1..]
                        .iter()
                        .find(|y| y.labels == x.labels)
                        .map(|y| (*x, *y))
                })
                .expect("two stacks with one label set");
            assert!(std::sync::Arc::ptr_eq(&x.labels, &y.labels));
        }
    }

    /// A registry of nothing but `root` is still one chunk.
    #[test]
    fn empty_registry() {
        let chunks = chunks(&Registry::new(), CHUNK_BYTES);
        assert_eq!(chunks.len(), 1);
        let mut loaded = Registry::new();
        load_chunk(&mut loaded, &chunks[0]).expect("load");
        assert_eq!(loaded, Registry::new());
    }

    /// A chunk that is not snapshot lines is refused.
    #[test]
    fn garbage_refused() {
        let mut registry = Registry::new();
        assert!(load_chunk(&mut registry, b"{\"kind\":\"nope\"}\n").is_err());
        assert!(load_chunk(&mut registry, b"not json\n").is_err());
    }

    #[test]
    fn chunk_placement() {
        assert_eq!(chunk_partition(0, 12), 1);
        assert_eq!(chunk_partition(10, 12), 11);
        assert_eq!(chunk_partition(11, 12), 1);
        assert_eq!(chunk_partition(3, 1), 0);
    }
}
