//! The delivery log and redelivery: "why didn't my stack run?" answered per delivery.
//!
//! Deliveries are visible to whoever may see their integration (root admins for deliveries of an
//! integration that no longer exists); redelivery needs admin of the integration's space.

use std::time::Duration;

use crate::access::Principal;
use crate::domain::{ROOT_SPACE, Role};
use http::StatusCode;
use inlet_core::output::Output;
use inlet_core::records::{DeliveryEvent, DeliveryOutcome, RecordPosition, Stage};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::views::{DeliveryList, DeliveryStory, DeliverySummary, Page, Redelivered, RunList};
use super::{Admin, Answer, SEND_DEADLINE, forbidden};
use crate::admin::error::{ApiError, json};

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("delivery_not_found", format!("no delivery `{id}` is known"))
}

fn to_value(event: &DeliveryEvent) -> serde_json::Value {
    serde_json::to_value(event).unwrap_or_default()
}

impl Admin {
    /// Whether `principal` may see deliveries of `integration` in its incarnation `incarnation`
    /// (`None`: not recorded); `admin` asks for the admin role. Deliveries of an integration that
    /// no longer exists, or of an earlier one of the same name, are root admins' only: a
    /// re-created name does not inherit someone else's past.
    fn may_see_deliveries(
        &self,
        principal: &Principal,
        integration: &str,
        incarnation: Option<&str>,
        admin: bool,
    ) -> bool {
        let registry = self.control.read();
        match registry.integration(integration) {
            Some(i) if incarnation.is_some_and(|seen| seen != i.id) => {
                principal.has(&registry, ROOT_SPACE, Role::Admin)
            }
            Some(i) if admin => principal.can_admin_integration(&registry, i),
            Some(i) => principal.can_see_integration(&registry, i),
            None => principal.has(&registry, ROOT_SPACE, Role::Admin),
        }
    }

    pub(super) fn list_deliveries(&self, principal: &Principal, name: &str, page: Page) -> Answer {
        let integration_id = {
            let registry = self.control.read();
            match registry.integration(name) {
                Some(i) if principal.can_see_integration(&registry, i) => i.id.clone(),
                _ => {
                    return Err(ApiError::not_found(
                        "integration_not_found",
                        format!("no integration named `{name}`"),
                    ));
                }
            }
        };
        let offset = page.offset.unwrap_or(0);
        let limit = page.limit.unwrap_or(50).clamp(1, 500);
        let (stories, total) = self
            .deps
            .deliveries
            .recent(name, &integration_id, offset, limit);
        let deliveries = stories
            .into_iter()
            .map(|(delivery_id, events)| {
                summarize(delivery_id, &self.only_readable_stacks(principal, events))
            })
            .collect::<Vec<_>>();
        let next_offset = (offset + deliveries.len() < total).then_some(offset + deliveries.len());
        Ok(json(
            StatusCode::OK,
            &DeliveryList {
                deliveries,
                total,
                next_offset,
            },
        ))
    }

    /// The story of delivery `id` and its integration, if `principal` may see it (404 otherwise).
    fn visible_story(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<(String, Vec<DeliveryEvent>), ApiError> {
        let events = self
            .deps
            .deliveries
            .story(id)
            .ok_or_else(|| not_found(id))?;
        let integration = events
            .first()
            .map(|e| e.integration.clone())
            .unwrap_or_default();
        let incarnation = crate::deliveries::incarnation(&events);
        if !self.may_see_deliveries(principal, &integration, incarnation, false) {
            return Err(not_found(id));
        }
        Ok((integration, self.only_readable_stacks(principal, events)))
    }

    /// `events` as `principal` may see them: a shared (default) integration's delivery log holds
    /// every team's stacks, so stack ids and decisions of stacks the caller cannot read are left
    /// out (a stack that no longer exists counts as unreadable but for root admins).
    fn only_readable_stacks(
        &self,
        principal: &Principal,
        events: Vec<DeliveryEvent>,
    ) -> Vec<DeliveryEvent> {
        let registry = self.control.read();
        let root_admin = principal.has(&registry, ROOT_SPACE, Role::Admin);
        let readable = |stack: &String| {
            root_admin
                || registry
                    .stack(stack)
                    .is_some_and(|s| principal.can_read(&registry, &s.space_id))
        };
        events
            .into_iter()
            .filter_map(|mut event| {
                if event.stage == Stage::Workers {
                    return event.stacks.iter().all(readable).then_some(event);
                }
                event.stacks.retain(readable);
                // Reasons name stacks too (`no_affected_files: {stack}`).
                event.reasons.retain(|reason| {
                    reason.rsplit_once(": ").is_none_or(|(_, named)| {
                        registry.stack(named).is_none() || readable(&named.to_owned())
                    })
                });
                Some(event)
            })
            .collect()
    }

    pub(super) fn get_delivery(&self, principal: &Principal, id: &str) -> Answer {
        let (integration, events) = self.visible_story(principal, id)?;
        Ok(json(
            StatusCode::OK,
            &DeliveryStory {
                delivery_id: id.to_owned(),
                integration,
                events: events.iter().map(to_value).collect(),
            },
        ))
    }

    pub(super) fn stack_runs(&self, principal: &Principal, id: &str) -> Answer {
        let incarnation = super::stacks::visible(principal, &self.control.read(), id)?
            .incarnation
            .clone();
        let runs = self
            .deps
            .deliveries
            .runs(id, &incarnation)
            .iter()
            .map(to_value)
            .collect();
        Ok(json(StatusCode::OK, &RunList { runs }))
    }

    /// Re-publishes the stored webhook of delivery `id`, marked as a redelivery: the router's
    /// duplicate filter lets it through; run deduplication still applies.
    pub(super) async fn redeliver(&self, principal: &Principal, id: &str) -> Answer {
        let (integration, events) = self.visible_story(principal, id)?;
        let incarnation = crate::deliveries::incarnation(&events).map(str::to_owned);
        if !self.may_see_deliveries(principal, &integration, incarnation.as_deref(), true) {
            return Err(forbidden(
                "redelivering needs the admin role on the integration's space",
            ));
        }
        let position = events.iter().find_map(|e| e.webhook).ok_or_else(|| {
            ApiError::conflict(
                "webhook_unknown",
                "no stage recorded where this delivery's webhook is stored",
            )
        })?;
        let message = self.stored_webhook(id, position).await?;
        let republished = Output::republished_webhook(
            &self.deps.webhooks_topic,
            &message,
            self.control.applied_offset(),
        );
        self.deps
            .outputs
            .send(&republished, SEND_DEADLINE)
            .await
            .map_err(|err| redelivery_failed(id, err.to_string()))?;
        let mut event = DeliveryEvent::new(
            id,
            &integration,
            Stage::Ingest,
            DeliveryOutcome::Redelivered,
        );
        event.reasons = vec![format!("requested by {}", principal.actor())];
        event.integration_id = self
            .control
            .read()
            .integration(&integration)
            .map(|i| i.id.clone());
        // The webhook is re-published; a lost story line is not worth failing the request for.
        let _ = self
            .deps
            .outputs
            .send(
                &Output::delivery_event(&self.deps.deliveries_topic, &event),
                SEND_DEADLINE,
            )
            .await;
        tracing::info!(delivery_id = %id, actor = principal.actor(), "webhook redelivered");
        Ok(json(
            StatusCode::ACCEPTED,
            &Redelivered {
                delivery_id: id.to_owned(),
                status: "redelivered".to_owned(),
            },
        ))
    }
}

impl Admin {
    /// The webhook record at `position` on `inlet.webhooks` (410 once retention removed it).
    async fn stored_webhook(
        &self,
        id: &str,
        position: RecordPosition,
    ) -> Result<OwnedMessage, ApiError> {
        let unavailable = |what: String| redelivery_failed(id, what);
        let reader = self
            .deps
            .kafka
            .reader()
            .await
            .map_err(|err| unavailable(err.to_string()))?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(
                &self.deps.webhooks_topic,
                position.partition,
                Offset::Offset(position.offset),
            )
            .map_err(|err| unavailable(err.to_string()))?;
        reader
            .assign(&assignment)
            .map_err(|err| unavailable(err.to_string()))?;
        let message = tokio::time::timeout(Duration::from_secs(10), reader.recv())
            .await
            .map_err(|_| unavailable("timed out reading the webhook".to_owned()))?
            .map_err(|err| unavailable(err.to_string()))?;
        if message.offset() != position.offset {
            return Err(ApiError::Gone {
                code: "webhook_expired",
                message: "the stored webhook is no longer retained on the topic".to_owned(),
            });
        }
        Ok(message.detach())
    }
}

/// 503 for a redelivery the broker did not serve; the cause is logged.
fn redelivery_failed(id: &str, cause: String) -> ApiError {
    tracing::warn!(delivery_id = %id, error = %cause, "redelivery failed");
    ApiError::unavailable(
        "broker_unavailable",
        "the webhook could not be re-published; retry shortly",
        5,
    )
}

/// One line per delivery: the router's verdict and the workers' decisions.
fn summarize(delivery_id: String, events: &[DeliveryEvent]) -> DeliverySummary {
    let routing = events.iter().rev().find(|e| e.stage == Stage::Router);
    let name = |outcome: DeliveryOutcome| {
        serde_json::to_value(outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
    };
    DeliverySummary {
        delivery_id,
        event_key: events.iter().find_map(|e| e.event_key.clone()),
        received_at: events.iter().find_map(|e| e.received_at.clone()),
        outcome: routing.and_then(|e| name(e.outcome)),
        reasons: routing.map(|e| e.reasons.clone()).unwrap_or_default(),
        stacks: routing.map(|e| e.stacks.clone()).unwrap_or_default(),
        decisions: events
            .iter()
            .filter(|e| e.stage == Stage::Workers)
            .map(|e| {
                serde_json::json!({
                    "stack_id": e.stacks.first(),
                    "outcome": name(e.outcome),
                    "run_id": e.run_id,
                    "status": e.status,
                    "reasons": e.reasons,
                })
            })
            .collect(),
    }
}
