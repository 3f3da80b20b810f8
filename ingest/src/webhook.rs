//! `POST /webhooks/bitbucket-datacenter/{integration}`: one function per step.
//!
//! route → find the integration (404) → bound in-flight work (503) → read the capped body (413) →
//! answer pings → verify the signature on the raw bytes (401) → parse the event (400; unhandled
//! keys 202 ignored) → publish and wait for the broker (202, or 503 + Retry-After).
//!
//! Each request ends in one [`Report`], which alone writes the log line and the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use inlet_core::bitbucket::{self, events};
use inlet_core::clock::now_rfc3339;
use inlet_core::control_log::ControlLog;
use inlet_core::crypto::SecretsKey;
use inlet_core::metrics::{IngestMetrics, WebhookOutcome, event_label};
use inlet_core::records::{new_traceparent, trace_id};
use inlet_core::secret::Secret;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::error::{ApiError, json};
use crate::listener::Service;
use crate::publish::{Publish, PublishError, WebhookRecord};
use crate::verify::{Unverified, VerifyError};

/// The path prefix of webhook URLs; the integration name follows.
pub const PATH_PREFIX: &str = "/webhooks/bitbucket-datacenter/";

/// Limits applied to every webhook request.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest body in bytes.
    pub max_body_bytes: usize,
    /// Most requests being handled at once; beyond it, 503.
    pub max_in_flight: usize,
    /// Longest time to receive the body.
    pub body_timeout: Duration,
}

/// The webhook listener's service.
pub struct Webhooks<P> {
    control: ControlLog,
    secrets_key: SecretsKey,
    publisher: P,
    limits: Limits,
    in_flight: Arc<Semaphore>,
    metrics: IngestMetrics,
}

#[derive(Serialize)]
struct Accepted<'a> {
    status: &'a str,
    delivery_id: &'a str,
}

/// What happened to one request: the single source of its log line and metrics.
struct Report {
    integration: String,
    /// Whether the integration exists (only then is its name a metric label).
    known: bool,
    event_key: Option<String>,
    delivery_id: Option<String>,
    outcome: WebhookOutcome,
    reason: Option<String>,
}

impl Report {
    fn emit(&self, metrics: &IngestMetrics) {
        let integration = if self.known {
            self.integration.as_str()
        } else {
            "_unknown"
        };
        metrics
            .requests
            .with_label_values(&[
                integration,
                event_label(self.event_key.as_deref()),
                self.outcome.as_str(),
            ])
            .inc();
        let event_key = self.event_key.as_deref().unwrap_or_default();
        let delivery_id = self.delivery_id.as_deref().unwrap_or_default();
        match (self.outcome, &self.reason) {
            (WebhookOutcome::Unavailable, reason) => tracing::warn!(
                integration = %self.integration, %delivery_id, %event_key,
                outcome = self.outcome.as_str(), reason = reason.as_deref().unwrap_or_default(),
                "webhook not stored"
            ),
            (_, Some(reason)) => tracing::info!(
                integration = %self.integration, %delivery_id, %event_key,
                outcome = self.outcome.as_str(), %reason, "webhook refused"
            ),
            // Accepted webhooks are on Kafka with their metadata; a line each would cost more
            // than the rest of the request at full load, so it is opt-in (debug).
            (_, None) => tracing::debug!(
                integration = %self.integration, %delivery_id, %event_key,
                outcome = self.outcome.as_str(), "webhook received"
            ),
        }
    }
}

impl<P: Publish> Webhooks<P> {
    /// The service over `control`'s registry, opening secrets with `secrets_key`, publishing
    /// through `publisher`.
    pub fn new(
        control: ControlLog,
        secrets_key: SecretsKey,
        publisher: P,
        limits: Limits,
        metrics: IngestMetrics,
    ) -> Self {
        let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
        Webhooks {
            control,
            secrets_key,
            publisher,
            limits,
            in_flight,
            metrics,
        }
    }

    /// Answers one request.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(name) = request.uri().path().strip_prefix(PATH_PREFIX) else {
            return ApiError::not_found("not_found", "no such endpoint").into_response();
        };
        if name.is_empty() || name.contains('/') {
            return ApiError::not_found("not_found", "no such endpoint").into_response();
        }
        if request.method() != Method::POST {
            return ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "webhooks are delivered with POST",
            )
            .into_response();
        }
        let mut report = Report {
            integration: name.to_owned(),
            known: false,
            event_key: header_str(request.headers(), "x-event-key"),
            delivery_id: header_str(request.headers(), "x-request-id"),
            outcome: WebhookOutcome::Accepted,
            reason: None,
        };
        self.metrics.in_flight.inc();
        let response = match self.receive(&mut report, request).await {
            Ok(response) => response,
            Err(err) => {
                report.outcome = outcome_of(&err);
                report.reason = Some(err.message.clone());
                err.into_response()
            }
        };
        self.metrics.in_flight.dec();
        report.emit(&self.metrics);
        response
    }

    async fn receive<B>(
        &self,
        report: &mut Report,
        request: Request<B>,
    ) -> Result<Response<Full<Bytes>>, ApiError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let name = report.integration.clone();
        report.known = self.control.read().integration(&name).is_some();
        if !report.known {
            return Err(integration_not_found(&name));
        }
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            return Err(ApiError::unavailable(
                "saturated",
                "ingest is at its in-flight limit; retry shortly",
                1,
            ));
        };
        let (parts, body) = request.into_parts();
        let body = self.read_body(&parts.headers, body).await?;
        self.metrics.body_bytes.observe(body.len() as f64);
        let signature = parts
            .headers
            .get("x-hub-signature")
            .map(|v| v.as_bytes().to_vec());

        // Bitbucket's "Test connection" may be unsigned. A signed ping is verified, so the button
        // also tells an admin whether the secret is right.
        let is_ping = report.event_key.as_deref() == Some(events::PING);
        if is_ping && signature.is_none() {
            report.outcome = WebhookOutcome::Ping;
            return Ok(pong());
        }

        let unverified = Unverified {
            integration: name.clone(),
            signature,
            body,
        };
        let verified = unverified
            .verify(&self.control.read(), &self.secrets_key)
            .map_err(|err| match err {
                VerifyError::UnknownIntegration => integration_not_found(&name),
                VerifyError::Signature(err) => {
                    self.metrics
                        .signature_failures
                        .with_label_values(&[err.as_str()])
                        .inc();
                    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", err.to_string())
                }
                VerifyError::Sealed(err) => {
                    tracing::error!(integration = %name, error = %err, "cannot open the webhook secret");
                    ApiError::unavailable(
                        "secrets_key_mismatch",
                        "this ingest cannot open the integration's secret; its operator must fix \
                         the secrets key",
                        30,
                    )
                }
            })?;
        if is_ping {
            report.outcome = WebhookOutcome::Ping;
            return Ok(pong());
        }

        let delivery_id = report
            .delivery_id
            .get_or_insert_with(|| format!("inlet-{}", Secret::generate(16).expose()))
            .clone();
        let Some(event_key) = report.event_key.clone() else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_event_key",
                "the X-Event-Key header is missing",
            ));
        };
        let event = bitbucket::parse(&event_key, &verified.body).map_err(|err| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_payload", err.to_string())
        })?;
        let Some(event) = event else {
            // A 4xx here would trip Bitbucket's circuit breaker for the whole endpoint.
            report.outcome = WebhookOutcome::Ignored;
            report.reason = Some("event not handled".to_owned());
            return Ok(json(
                StatusCode::ACCEPTED,
                &Accepted {
                    status: "ignored",
                    delivery_id: &delivery_id,
                },
            ));
        };

        let record = WebhookRecord {
            key: format!("{}/{}", name, event.repository().full_name()).to_lowercase(),
            delivery_id: delivery_id.clone(),
            event_key,
            received_at: now_rfc3339(),
            // Continue the caller's trace when it sent one; start one otherwise, so a delivery can
            // be followed across stages either way.
            traceparent: Some(
                header_str(&parts.headers, "traceparent")
                    .filter(|t| trace_id(t).is_some())
                    .unwrap_or_else(new_traceparent),
            ),
            control_offset: self.control.applied_offset(),
            verified,
        };
        let started = Instant::now();
        let published = self.publisher.publish(record).await;
        self.metrics
            .publish_seconds
            .observe(started.elapsed().as_secs_f64());
        match published {
            Ok(()) => Ok(json(
                StatusCode::ACCEPTED,
                &Accepted {
                    status: "accepted",
                    delivery_id: &delivery_id,
                },
            )),
            Err(err) => {
                let code = match err {
                    PublishError::QueueFull => "saturated",
                    PublishError::Timeout | PublishError::Broker(_) => "broker_unavailable",
                };
                tracing::debug!(error = %err, "publish failed");
                Err(ApiError::unavailable(
                    code,
                    format!("the webhook could not be stored ({err}); retry shortly"),
                    5,
                ))
            }
        }
    }

    /// Reads the body, refusing more than the limit (by `Content-Length` up front, and while
    /// reading for chunked bodies) and bodies that take longer than the body timeout.
    async fn read_body<B>(&self, headers: &HeaderMap, body: B) -> Result<Bytes, ApiError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limit = self.limits.max_body_bytes;
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body exceeds {limit} bytes"),
            )
        };
        let declared = header_str(headers, header::CONTENT_LENGTH.as_str())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }
        let collected = tokio::time::timeout(
            self.limits.body_timeout,
            Limited::new(body, limit).collect(),
        )
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the body took too long",
            )
        })?;
        match collected {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
            Err(err) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                format!("the body could not be read: {err}"),
            )),
        }
    }
}

impl<P: Publish> Service for Webhooks<P> {
    async fn call(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        self.handle(request).await
    }
}

fn integration_not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "integration_not_found",
        format!("no integration named `{name}`"),
    )
}

fn pong() -> Response<Full<Bytes>> {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// The metric outcome of an error answer.
fn outcome_of(err: &ApiError) -> WebhookOutcome {
    match err.status {
        StatusCode::UNAUTHORIZED => WebhookOutcome::Unauthorized,
        StatusCode::NOT_FOUND => WebhookOutcome::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE => WebhookOutcome::TooLarge,
        StatusCode::REQUEST_TIMEOUT => WebhookOutcome::Timeout,
        status if status.is_server_error() => WebhookOutcome::Unavailable,
        _ => WebhookOutcome::BadRequest,
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}
