//! `POST /webhooks/bitbucket-datacenter/{integration}`: one function per step.
//!
//! route → find the integration (404) → bound in-flight work (503) → read the capped body (413) →
//! answer pings → verify the signature on the raw bytes (401) → classify the event (202 ignored) →
//! find the repository (400) → publish and wait for the broker (202, or 503 + Retry-After).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use inlet_core::bitbucket::{self, events};
use inlet_core::clock::now_rfc3339;
use inlet_core::control_log::ControlLog;
use inlet_core::crypto::SecretsKey;
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
    /// Most publishes awaiting the broker at once.
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
}

#[derive(Serialize)]
struct Accepted<'a> {
    status: &'a str,
    delivery_id: &'a str,
}

impl<P: Publish> Webhooks<P> {
    /// The service over `control`'s registry, opening secrets with `secrets_key`, publishing
    /// through `publisher`.
    pub fn new(control: ControlLog, secrets_key: SecretsKey, publisher: P, limits: Limits) -> Self {
        let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
        Webhooks {
            control,
            secrets_key,
            publisher,
            limits,
            in_flight,
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
        let name = name.to_owned();
        match self.receive(name.clone(), request).await {
            Ok(response) => response,
            Err(err) => {
                tracing::info!(integration = %name, status = err.status.as_u16(), code = err.code, reason = %err.message, "webhook rejected");
                err.into_response()
            }
        }
    }

    async fn receive<B>(
        &self,
        name: String,
        request: Request<B>,
    ) -> Result<Response<Full<Bytes>>, ApiError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if self.control.read().integration(&name).is_none() {
            return Err(ApiError::not_found(
                "integration_not_found",
                format!("no integration named `{name}`"),
            ));
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
        let event_key = header_str(&parts.headers, "x-event-key");
        let signature = parts
            .headers
            .get("x-hub-signature")
            .map(|v| v.as_bytes().to_vec());

        // Bitbucket's "Test connection" may be unsigned. A signed ping is verified, so the button
        // also tells an admin whether the secret is right.
        let is_ping = event_key.as_deref() == Some(events::PING);
        if is_ping && signature.is_none() {
            return Ok(self.ping(&name));
        }

        let unverified = Unverified {
            integration: name.clone(),
            signature,
            body,
        };
        let verified = unverified
            .verify(&self.control.read(), &self.secrets_key)
            .map_err(|err| match err {
                VerifyError::UnknownIntegration => ApiError::not_found(
                    "integration_not_found",
                    format!("no integration named `{name}`"),
                ),
                VerifyError::Signature(err) => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_signature",
                    err.to_string(),
                ),
                VerifyError::Sealed(err) => {
                    tracing::error!(integration = %name, error = %err, "cannot open the webhook secret");
                    ApiError::unavailable(
                        "secrets_key_mismatch",
                        "this ingest cannot open the integration's secret; its operator must fix the secrets key",
                        30,
                    )
                }
            })?;
        if is_ping {
            return Ok(self.ping(&name));
        }

        let delivery_id = header_str(&parts.headers, "x-request-id")
            .unwrap_or_else(|| format!("inlet-{}", Secret::generate(16).expose()));
        let Some(event_key) = event_key else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_event_key",
                "the X-Event-Key header is missing",
            ));
        };
        if !events::HANDLED.contains(&event_key.as_str()) {
            tracing::info!(integration = %name, %delivery_id, event_key = %event_key, "event not handled; ignored");
            return Ok(json(
                StatusCode::ACCEPTED,
                &Accepted {
                    status: "ignored",
                    delivery_id: &delivery_id,
                },
            ));
        }
        let repository = bitbucket::event_repository(&verified.body).map_err(|err| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_payload", err.to_string())
        })?;

        let record = WebhookRecord {
            key: format!("{}/{}", name, repository.full_name()).to_lowercase(),
            delivery_id: delivery_id.clone(),
            event_key: event_key.clone(),
            received_at: now_rfc3339(),
            traceparent: header_str(&parts.headers, "traceparent"),
            control_offset: self.control.applied_offset(),
            verified,
        };
        match self.publisher.publish(record).await {
            Ok(()) => {
                tracing::info!(integration = %name, %delivery_id, %event_key, repository = %repository.full_name(), "webhook accepted");
                Ok(json(
                    StatusCode::ACCEPTED,
                    &Accepted {
                        status: "accepted",
                        delivery_id: &delivery_id,
                    },
                ))
            }
            Err(err) => {
                tracing::warn!(integration = %name, %delivery_id, error = %err, "publish failed");
                let code = match err {
                    PublishError::QueueFull => "saturated",
                    PublishError::Timeout | PublishError::Broker(_) => "broker_unavailable",
                };
                Err(ApiError::unavailable(
                    code,
                    "the webhook could not be stored; retry shortly",
                    5,
                ))
            }
        }
    }

    fn ping(&self, name: &str) -> Response<Full<Bytes>> {
        tracing::info!(integration = %name, "ping answered");
        json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
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

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}
