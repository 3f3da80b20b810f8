//! The duplicate window after a restart: which deliveries this consumer group already routed.
//!
//! The router drops a delivery whose `X-Request-Id`, or whose signed body, it routed within the
//! last hour (`replayed_body` stops a captured webhook from being sent again under a fresh id).
//! That memory is per process; without a rebuild, a restart would forget it and a replay right
//! after a deploy would run again. At startup [`rebuild`] therefore reads back, from every
//! partition of `inlet.webhooks`, the records the group had already committed — the most recent
//! ones, at most the window's capacity, and only those received within the window — and returns
//! their keys oldest first. Records beyond the committed offsets are not read: the consume loop
//! is about to route them, and marking them seen would drop them as duplicates of themselves.
//!
//! Limits: the rebuild reflects the committed offsets at startup; what another replica routes
//! on its partitions afterwards is known to that replica only (a later rebalance does not rebuild).
//! A rebuild that cannot finish within [`REBUILD_TIMEOUT`] keeps what it read and says so.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use inlet_core::kafka::{Kafka, SetupError, header, read_until};
use inlet_core::records::headers;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sha2::{Digest, Sha256};

/// How long startup may spend reading back history before the router starts routing.
pub const REBUILD_TIMEOUT: Duration = Duration::from_secs(60);

type Plan = (
    StreamConsumer,
    TopicPartitionList,
    std::collections::HashMap<i32, i64>,
);

/// Where to read each partition from (the latest `per_partition` records before the committed
/// offset) and up to which offset (exclusive). Blocking: it asks the broker.
fn plan(
    member: &StreamConsumer,
    reader: StreamConsumer,
    topic: &str,
    partitions: usize,
    per_partition: i64,
) -> Result<Plan, SetupError> {
    let mut wanted = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        wanted.add_partition(topic, partition);
    }
    let committed = member.committed_offsets(wanted, Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for element in committed.elements() {
        let Offset::Offset(end) = element.offset() else {
            continue;
        };
        let (low, _high) =
            reader.fetch_watermarks(topic, element.partition(), Duration::from_secs(10))?;
        let start = low.max(end - per_partition);
        if start < end {
            assignment.add_partition_offset(topic, element.partition(), Offset::Offset(start))?;
            ends.insert(element.partition(), end);
        }
    }
    Ok((reader, assignment, ends))
}

/// The duplicate-window keys of one delivery: its id and its body digest, per integration.
pub fn keys(integration: &str, delivery_id: &str, payload: &[u8]) -> [String; 2] {
    [
        format!("id/{integration}/{delivery_id}"),
        format!(
            "body/{integration}/{}",
            hex::encode(Sha256::digest(payload))
        ),
    ]
}

/// A key and how long ago its record was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    /// The window key.
    pub key: String,
    /// Age of the record when read back.
    pub age: Duration,
}

/// What a rebuild read.
#[derive(Debug, Default)]
pub struct Rebuilt {
    /// Keys, oldest first.
    pub keys: Vec<Remembered>,
    /// Records read back.
    pub records: usize,
    /// Whether every partition was read up to its committed offset.
    pub complete: bool,
}

/// Reads back the records consumer group `group` committed on `topic`, at most `capacity` keys
/// and only records younger than `window`.
pub async fn rebuild(
    kafka: &Kafka,
    group: &str,
    topic: &str,
    window: Duration,
    capacity: usize,
) -> Result<Rebuilt, SetupError> {
    let partitions = kafka.partition_count(topic).await?;
    // A member of the group that never joins it: only its group id counts, for the offsets.
    let member = kafka.group_offsets(group).await?;
    let reader = kafka.reader().await?;
    // Each delivery is two keys: a partition's share of the capacity, in records.
    let per_partition = (capacity / 2 / partitions.max(1)).max(1) as i64;
    let topic_name = topic.to_owned();
    let (reader, assignment, ends) = tokio::task::spawn_blocking(move || {
        plan(&member, reader, &topic_name, partitions, per_partition)
    })
    .await??;
    if ends.is_empty() {
        return Ok(Rebuilt {
            complete: true,
            ..Rebuilt::default()
        });
    }
    reader.assign(&assignment)?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let mut read: Vec<(i64, [String; 2])> = Vec::new();
    let mut records = 0;
    let deadline = tokio::time::Instant::now() + REBUILD_TIMEOUT;
    let complete = read_until(&reader, ends, deadline, |message| {
        records += 1;
        let at = message.timestamp().to_millis().unwrap_or(now_ms);
        let age = Duration::from_millis(now_ms.saturating_sub(at).max(0) as u64);
        let (Some(integration), Some(delivery_id)) = (
            header(message, headers::INTEGRATION_NAME),
            header(message, headers::DELIVERY_ID),
        ) else {
            return;
        };
        if age < window {
            read.push((
                at,
                keys(
                    integration,
                    delivery_id,
                    message.payload().unwrap_or_default(),
                ),
            ));
        }
    })
    .await;
    read.sort_by_key(|(at, _)| *at);
    let keys = read
        .into_iter()
        .flat_map(|(at, keys)| {
            let age = Duration::from_millis(now_ms.saturating_sub(at).max(0) as u64);
            keys.into_iter().map(move |key| Remembered { key, age })
        })
        .collect();
    Ok(Rebuilt {
        keys,
        records,
        complete,
    })
}
