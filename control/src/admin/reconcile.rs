//! `POST /integrations/{name}/reconcile`: one reconciliation pass of the integration, now
//! (DESIGN §4.2 "Reconciliation", §5.2).
//!
//! What enters: the integration's name (and an empty body or `{}`). What leaves: a
//! `request_reconcile` command on `inlet.control`, which the routers fold and act on (they read
//! the heads in Bitbucket and feed what was not delivered through the trigger rules; the delivery
//! log shows what they recovered), and the request's id. The guarantee: a 202 means this
//! process's fold accepted the request, so every router that folds the log sees it; it says
//! nothing yet about what the pass found.

use std::time::Duration;

use http::StatusCode;
use inlet_core::clock::parse_rfc3339;
use inlet_core::secret::Secret;
use time::OffsetDateTime;

use super::integrations::visible;
use super::views::{ReconcileAccepted, RequestReconcile};
use super::{Admin, Answer, forbidden};
use crate::access::Principal;
use crate::admin::error::{ApiError, json};
use crate::commands::ControlCommand;
use crate::domain::Integration;
use crate::registry::{ReconcileRequest, Registry};

/// A request younger than this is still pending: asking again answers its id and appends nothing.
const COALESCE_WINDOW: Duration = Duration::from_secs(2);

/// The integration if `principal` may reconcile it: 404 when it cannot see it, 403 when it sees it
/// without the writer role ([`Principal::can_reconcile_integration`]).
fn reconcilable<'r>(
    principal: &Principal,
    registry: &'r Registry,
    name: &str,
) -> Result<&'r Integration, ApiError> {
    let integration = visible(principal, registry, name)?;
    if !principal.can_reconcile_integration(registry, integration) {
        return Err(forbidden(if integration.is_default {
            "requesting a reconciliation of the default integration needs the writer role on a \
             space"
                .to_owned()
        } else {
            format!(
                "requesting a reconciliation needs the writer role on space `{}`",
                integration.space_id
            )
        }));
    }
    Ok(integration)
}

/// The id of `request` if it is still pending at `now`: asked for the incarnation
/// `integration_id` less than [`COALESCE_WINDOW`] ago. A `requested_at` ahead of `now` (another
/// replica's clock) counts as pending within the same window, so a clock far off in either
/// direction cannot hold requests back for longer.
fn pending<'r>(
    request: Option<&'r ReconcileRequest>,
    integration_id: &str,
    now: OffsetDateTime,
) -> Option<&'r str> {
    let request = request.filter(|r| r.integration_id == integration_id)?;
    let at = parse_rfc3339(&request.requested_at)?;
    let age = (now - at).unsigned_abs();
    (age < COALESCE_WINDOW).then_some(request.reconcile_id.as_str())
}

fn accepted(reconcile_id: String) -> Answer {
    Ok(json(
        StatusCode::ACCEPTED,
        &ReconcileAccepted { reconcile_id },
    ))
}

impl Admin {
    /// Starts one reconciliation pass of integration `name` now.
    ///
    /// - Body: none, or `{}` (any other object → 400 `invalid_body`; not an object → 400).
    /// - Access: writer of the integration's space; for the default integration, which every key
    ///   sees, writer or admin of any space. An integration the caller cannot see (or none of
    ///   that name) → 404 `integration_not_found`; one it sees without that role → 403.
    /// - Appends `request_reconcile` (a write: the per-key write limit applies, 429 past it) and
    ///   answers 202 `{reconcile_id}` once this process's fold accepted it; a fold rejection keeps
    ///   its status (404, 409 `integration_replaced` when the name was re-created meanwhile).
    /// - Coalescing: while the integration's latest request is younger than 2 s (its
    ///   `requested_at` against this process's clock), the answer is 202 with that request's id
    ///   and nothing is appended, so a client in a loop cannot grow the control log, which is
    ///   kept forever. Two requests racing on different replicas may both append; the later one
    ///   is then the integration's request.
    pub(super) async fn request_reconcile(
        &self,
        principal: &Principal,
        name: &str,
        _: RequestReconcile,
    ) -> Answer {
        let integration_id = {
            let registry = self.control.read();
            let integration = reconcilable(principal, &registry, name)?;
            if let Some(id) = pending(
                registry.reconcile_request(name),
                &integration.id,
                OffsetDateTime::now_utc(),
            ) {
                tracing::debug!(
                    integration = name,
                    reconcile_id = id,
                    "reconciliation already pending"
                );
                return accepted(id.to_owned());
            }
            integration.id.clone()
        };
        let reconcile_id = format!("rec_{}", Secret::generate(16).expose());
        self.apply(
            principal,
            ControlCommand::RequestReconcile {
                name: name.to_owned(),
                integration_id,
                reconcile_id: reconcile_id.clone(),
            },
        )
        .await?;
        tracing::info!(
            integration = name,
            reconcile_id,
            actor = principal.actor(),
            "reconciliation requested"
        );
        accepted(reconcile_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(integration_id: &str, requested_at: &str) -> ReconcileRequest {
        ReconcileRequest {
            reconcile_id: "rec_1".to_owned(),
            integration_id: integration_id.to_owned(),
            requested_at: requested_at.to_owned(),
        }
    }

    fn at(text: &str) -> OffsetDateTime {
        parse_rfc3339(text).expect("time")
    }

    /// Pending: same incarnation, less than 2 s apart either way; not at 2 s, not for another
    /// incarnation, not when the time cannot be read, not when there is no request.
    #[test]
    fn pending_within_two_seconds() {
        let now = at("2026-01-01T10:00:10.000Z");
        let cases = [
            ("2026-01-01T10:00:10.000Z", Some("rec_1")),
            ("2026-01-01T10:00:08.001Z", Some("rec_1")),
            ("2026-01-01T10:00:08.000Z", None),
            ("2026-01-01T09:59:00.000Z", None),
            ("2026-01-01T10:00:11.999Z", Some("rec_1")),
            ("2026-01-01T10:00:12.000Z", None),
            ("not a time", None),
        ];
        for (requested_at, expected) in cases {
            let request = request("i1", requested_at);
            assert_eq!(
                pending(Some(&request), "i1", now),
                expected,
                "{requested_at}"
            );
        }
        let other = request("i0", "2026-01-01T10:00:09.500Z");
        assert_eq!(pending(Some(&other), "i1", now), None);
        assert_eq!(pending(None, "i1", now), None);
    }
}
