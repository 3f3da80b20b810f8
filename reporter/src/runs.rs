//! The runs the reporter knows: a run update names only its run id, so the commit, repository
//! and run type come from the run's decision, remembered here. Bounded: the most recent
//! [`RUN_CAPACITY`] runs, the oldest forgotten first (an update for a forgotten run is recorded
//! as `unknown_run`). At startup [`Runs::rebuild`] reads back the most recent decisions of every
//! partition of `inlet.runs`, so a restart does not forget the runs in progress.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inlet_core::kafka::{Kafka, SetupError, read_until};
use inlet_core::records::{RunDecision, RunType};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// Runs remembered at most.
pub const RUN_CAPACITY: usize = 200_000;
/// How long startup may spend reading back decisions.
pub const REBUILD_TIMEOUT: Duration = Duration::from_secs(60);

/// What a build status needs to know of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    /// The run.
    pub run_id: String,
    /// Its stack.
    pub stack_id: String,
    /// Tracked or proposed.
    pub run_type: RunType,
    /// `PROJECT/repo`.
    pub repository: String,
    /// The commit.
    pub sha: String,
    /// The branch (short name).
    pub branch: String,
    /// The delivery that caused it (the delivery log's key).
    pub delivery_id: String,
}

impl From<&RunDecision> for RunInfo {
    fn from(decision: &RunDecision) -> Self {
        RunInfo {
            run_id: decision.run_id.clone(),
            stack_id: decision.stack_id.clone(),
            run_type: decision.run_type,
            repository: decision.commit.repository.clone(),
            sha: decision.commit.sha.clone(),
            branch: decision.commit.branch.clone(),
            delivery_id: decision.trigger.delivery_id.clone(),
        }
    }
}

/// What this process posted for a run: the steps, and the highest rank shown.
#[derive(Debug, Default)]
pub struct Progress {
    /// Steps posted (`requested`, `running`, …).
    pub posted: HashSet<&'static str>,
    /// The highest rank posted.
    pub rank: Option<u8>,
}

struct Entry {
    info: RunInfo,
    progress: Arc<tokio::sync::Mutex<Progress>>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Entry>,
    order: VecDeque<String>,
}

/// The index. Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct Runs {
    inner: Mutex<Inner>,
}

impl Runs {
    /// Remembers `info` (a run already known keeps its progress); the lock on its progress.
    pub fn remember(&self, info: RunInfo) -> Arc<tokio::sync::Mutex<Progress>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = inner.by_id.get(&info.run_id) {
            return known.progress.clone();
        }
        while inner.order.len() >= RUN_CAPACITY {
            if let Some(old) = inner.order.pop_front() {
                inner.by_id.remove(&old);
            }
        }
        let progress: Arc<tokio::sync::Mutex<Progress>> = Arc::default();
        inner.order.push_back(info.run_id.clone());
        inner.by_id.insert(
            info.run_id.clone(),
            Entry {
                info,
                progress: progress.clone(),
            },
        );
        progress
    }

    /// The run `run_id` and the lock on its progress: one step of a run is posted at a time.
    pub fn get(&self, run_id: &str) -> Option<(RunInfo, Arc<tokio::sync::Mutex<Progress>>)> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .by_id
            .get(run_id)
            .map(|e| (e.info.clone(), e.progress.clone()))
    }

    /// How many runs are remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .order
            .len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads back the most recent decisions of every partition of `topic` (up to the end at
    /// startup); returns how many were read and whether every partition was read to its end.
    pub async fn rebuild(&self, kafka: &Kafka, topic: &str) -> Result<(usize, bool), SetupError> {
        let partitions = kafka.partition_count(topic).await?;
        let reader = kafka.reader().await?;
        let per_partition = (RUN_CAPACITY / partitions.max(1)) as i64;
        let topic_name = topic.to_owned();
        let (reader, ends) = tokio::task::spawn_blocking(move || {
            let mut assignment = TopicPartitionList::new();
            let mut ends = HashMap::new();
            for partition in 0..partitions as i32 {
                let (low, high) =
                    reader.fetch_watermarks(&topic_name, partition, Duration::from_secs(10))?;
                let start = low.max(high - per_partition);
                if start < high {
                    assignment.add_partition_offset(
                        &topic_name,
                        partition,
                        Offset::Offset(start),
                    )?;
                    ends.insert(partition, high);
                }
            }
            if !ends.is_empty() {
                reader.assign(&assignment)?;
            }
            Ok::<(StreamConsumer, HashMap<i32, i64>), SetupError>((reader, ends))
        })
        .await??;
        let mut read = 0;
        let deadline = tokio::time::Instant::now() + REBUILD_TIMEOUT;
        let complete = read_until(&reader, ends, deadline, |message| {
            if let Some(decision) = message
                .payload()
                .and_then(|p| serde_json::from_slice::<RunDecision>(p).ok())
            {
                self.remember(RunInfo::from(&decision));
                read += 1;
            }
        })
        .await;
        Ok((read, complete))
    }
}
