//! The delivery log as the admin API serves it: every process running ingest follows
//! `inlet.deliveries` and keeps, in bounded memory, the recent story of each delivery, the recent
//! deliveries of each integration and the recent decisions of each stack.
//!
//! Enters: every `DeliveryEvent` on the topic, from its beginning (7 days on a real cluster).
//! Leaves: read views for `/integrations/{name}/deliveries`, `/deliveries/{id}` and
//! `/stacks/{id}/runs`. Memory is bounded by the constants below; the oldest entries go first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use inlet_core::CancellationToken;
use inlet_core::kafka::{Kafka, SetupError};
use inlet_core::records::{DeliveryEvent, DeliveryOutcome};
use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rdkafka::topic_partition_list::Offset;

/// Deliveries whose story is kept.
const MAX_DELIVERIES: usize = 100_000;
/// Events kept per delivery (a push to a repository with many stacks has one per stack).
const MAX_EVENTS_PER_DELIVERY: usize = 256;
/// Recent deliveries listed per integration.
const MAX_PER_INTEGRATION: usize = 1_000;
/// Recent decisions listed per stack.
const MAX_RUNS_PER_STACK: usize = 100;

#[derive(Default)]
struct Store {
    stories: HashMap<String, Vec<DeliveryEvent>>,
    order: VecDeque<String>,
    by_integration: HashMap<String, VecDeque<String>>,
    runs_by_stack: HashMap<String, VecDeque<DeliveryEvent>>,
}

impl Store {
    fn add(&mut self, event: DeliveryEvent) {
        if event.outcome == DeliveryOutcome::Decided {
            for stack in &event.stacks {
                let runs = self.runs_by_stack.entry(stack.clone()).or_default();
                runs.push_back(event.clone());
                if runs.len() > MAX_RUNS_PER_STACK {
                    runs.pop_front();
                }
            }
        }
        let id = event.delivery_id.clone();
        match self.stories.get_mut(&id) {
            Some(story) => {
                if story.len() < MAX_EVENTS_PER_DELIVERY {
                    story.push(event);
                }
            }
            None => {
                let listed = self
                    .by_integration
                    .entry(event.integration.clone())
                    .or_default();
                listed.push_back(id.clone());
                if listed.len() > MAX_PER_INTEGRATION {
                    listed.pop_front();
                }
                self.stories.insert(id.clone(), vec![event]);
                self.order.push_back(id);
                while self.order.len() > MAX_DELIVERIES {
                    if let Some(old) = self.order.pop_front() {
                        self.stories.remove(&old);
                    }
                }
            }
        }
    }
}

/// A handle on this process's view of the delivery log. Cheap to clone.
#[derive(Clone, Default)]
pub struct DeliveryLog {
    store: Arc<RwLock<Store>>,
}

impl DeliveryLog {
    /// Starts following `topic` from its beginning until `shutdown`.
    pub async fn start(
        kafka: &Kafka,
        topic: String,
        shutdown: CancellationToken,
    ) -> Result<(DeliveryLog, tokio::task::JoinHandle<()>), SetupError> {
        let consumer = kafka.read_all(&topic, Offset::Beginning).await?;
        let log = DeliveryLog::default();
        let task = tokio::spawn(follow(consumer, log.clone(), shutdown));
        Ok((log, task))
    }

    /// Adds an event (used by the follower, and by tests).
    pub fn add(&self, event: DeliveryEvent) {
        self.store
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .add(event);
    }

    /// Everything known of delivery `id`, oldest first.
    pub fn story(&self, id: &str) -> Option<Vec<DeliveryEvent>> {
        self.store
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .stories
            .get(id)
            .cloned()
    }

    /// The most recent deliveries of `integration` in its incarnation `integration_id`, newest
    /// first: `limit` of them after skipping `skip`, each with its story, and how many there are.
    /// Deliveries of an earlier integration of the same name are not listed (events written
    /// before incarnations were recorded carry none and are).
    pub fn recent(
        &self,
        integration: &str,
        integration_id: &str,
        skip: usize,
        limit: usize,
    ) -> (Vec<(String, Vec<DeliveryEvent>)>, usize) {
        let store = self.store.read().unwrap_or_else(|p| p.into_inner());
        let Some(listed) = store.by_integration.get(integration) else {
            return (Vec::new(), 0);
        };
        let mut total = 0;
        let mut page = Vec::new();
        for id in listed.iter().rev() {
            let Some(story) = store.stories.get(id) else {
                continue;
            };
            if incarnation(story).is_some_and(|seen| seen != integration_id) {
                continue;
            }
            if total >= skip && page.len() < limit {
                page.push((id.clone(), story.clone()));
            }
            total += 1;
        }
        (page, total)
    }

    /// The most recent decisions for `stack` in its incarnation `incarnation` (`""`: any),
    /// newest first.
    pub fn runs(&self, stack: &str, incarnation: &str) -> Vec<DeliveryEvent> {
        let store = self.store.read().unwrap_or_else(|p| p.into_inner());
        store
            .runs_by_stack
            .get(stack)
            .map(|runs| {
                runs.iter()
                    .rev()
                    .filter(|run| {
                        incarnation.is_empty()
                            || run
                                .stack_incarnation
                                .as_deref()
                                .is_none_or(|seen| seen == incarnation)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The integration incarnation a delivery's story names, if any event recorded one.
pub fn incarnation(story: &[DeliveryEvent]) -> Option<&str> {
    story.iter().find_map(|e| e.integration_id.as_deref())
}

async fn follow(consumer: StreamConsumer, log: DeliveryLog, shutdown: CancellationToken) {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            message = consumer.recv() => message,
        };
        match message {
            Ok(message) => {
                match serde_json::from_slice::<DeliveryEvent>(message.payload().unwrap_or_default())
                {
                    Ok(event) => log.add(event),
                    Err(err) => tracing::warn!(
                        partition = message.partition(),
                        offset = message.offset(),
                        error = %err,
                        "unreadable delivery event skipped"
                    ),
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "delivery log read failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inlet_core::records::Stage;

    fn event(id: &str, integration: &str, outcome: DeliveryOutcome, stack: &str) -> DeliveryEvent {
        let mut event = DeliveryEvent::new(id, integration, Stage::Router, outcome);
        if !stack.is_empty() {
            event.stacks = vec![stack.to_owned()];
        }
        event
    }

    /// Stories gather per delivery; listings are per integration, newest first; decisions per stack.
    #[test]
    fn stories_listings_and_runs() {
        let log = DeliveryLog::default();
        log.add(event("d1", "bb", DeliveryOutcome::Routed, "s1"));
        log.add(event("d1", "bb", DeliveryOutcome::Decided, "s1"));
        log.add(event("d2", "bb", DeliveryOutcome::Ignored, ""));
        log.add(event("d3", "other", DeliveryOutcome::Routed, "s2"));
        assert_eq!(log.story("d1").map(|s| s.len()), Some(2));
        let (page, total) = log.recent("bb", "i1", 0, 10);
        let ids: Vec<_> = page.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!((ids, total), (vec!["d2", "d1"], 2));
        let (page, _) = log.recent("bb", "i1", 1, 10);
        assert_eq!(page.len(), 1);
        assert_eq!(log.runs("s1", "").len(), 1);
        assert!(log.runs("s2", "").is_empty());
    }

    /// A re-created integration or stack (same name or id, another incarnation) lists none of
    /// its predecessor's deliveries or runs.
    #[test]
    fn incarnations_do_not_inherit() {
        let log = DeliveryLog::default();
        let stamped = |id: &str, integration_id: &str, stack_incarnation: &str| {
            let mut event = event(id, "bb", DeliveryOutcome::Decided, "s1");
            event.integration_id = Some(integration_id.to_owned());
            event.stack_incarnation = Some(stack_incarnation.to_owned());
            event
        };
        log.add(stamped("old", "i1", "c1"));
        log.add(stamped("new", "i2", "c2"));
        let (page, total) = log.recent("bb", "i2", 0, 10);
        let ids: Vec<_> = page.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!((ids, total), (vec!["new"], 1));
        let runs: Vec<_> = log
            .runs("s1", "c2")
            .into_iter()
            .map(|r| r.delivery_id)
            .collect();
        assert_eq!(runs, vec!["new"]);
        assert_eq!(log.runs("s1", "").len(), 2);
    }

    /// Memory is bounded: the oldest deliveries are forgotten.
    #[test]
    fn bounded() {
        let log = DeliveryLog::default();
        for i in 0..(MAX_PER_INTEGRATION + 5) {
            log.add(event(&format!("d{i}"), "bb", DeliveryOutcome::Routed, ""));
        }
        let (_, total) = log.recent("bb", "i1", 0, 1);
        assert_eq!(total, MAX_PER_INTEGRATION);
    }
}
