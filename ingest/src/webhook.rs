//! `POST /webhooks/bitbucket-datacenter/{integration}`: one function per step, in the order of
//! the flow.
//!
//! `Webhooks::handle`: `target` (the URL names an integration; 404/405) →
//! `Webhooks::receive`: `Webhooks::find_integration` (404) → `Webhooks::admit` (in-flight
//! bound, 503) → `Webhooks::read_body` (413, 408) → answer an unsigned ping →
//! `Webhooks::verify` (signature on the raw bytes, 401) → `Webhooks::record` (event key and
//! the repository it is ordered by, 400; nothing else of the body is read here) → `Webhooks::publish` (wait for the broker: 202, or 503 +
//! Retry-After).
//!
//! Every authenticated webhook is published, whatever its event key (DESIGN §4.1): the router
//! records the ones it does not handle as ignored. Each request ends in one `Report`, which alone
//! writes the log line and the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Body;
use inlet_bitbucket::signature::SignatureError;
use inlet_bitbucket::{event_label, events};
use inlet_control::control_log::ControlLog;
use inlet_control::crypto::SecretsKey;
use inlet_control::domain::WEBHOOK_PATH_PREFIX;
use inlet_core::clock::now_rfc3339;
use inlet_core::http::{Answer, json};
use inlet_core::listener::Service;
use inlet_core::metrics::{IngestMetrics, WebhookOutcome};
use inlet_core::records::{new_traceparent, trace_id};
use inlet_core::secret::Secret;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::error::WebhookError;
use crate::publish::{Publish, WebhookRecord};
use crate::verify::{Keys, Unverified, Verified, VerifyError};

/// Limits applied to every webhook request.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest body in bytes.
    pub max_body_bytes: usize,
    /// Most requests being handled at once; beyond it, 503.
    pub max_in_flight: usize,
    /// Longest time to receive the body.
    pub body_timeout: Duration,
    /// Longest time a body may send no data (a minimum data rate).
    pub body_idle_timeout: Duration,
    /// Bytes of bodies all requests together may hold; beyond it 503.
    pub max_buffered_bytes: usize,
    /// Signed events whose `date` is older are refused (`None`: no check).
    pub max_event_age: Option<Duration>,
}

impl From<&inlet_core::config::IngestConfig> for Limits {
    fn from(config: &inlet_core::config::IngestConfig) -> Self {
        Limits {
            max_body_bytes: config.max_body_bytes,
            max_in_flight: config.max_in_flight,
            body_timeout: Duration::from_millis(config.request_timeout_ms),
            body_idle_timeout: Duration::from_millis(config.body_idle_timeout_ms),
            max_buffered_bytes: config.max_buffered_bytes,
            max_event_age: config.max_event_age_secs.map(Duration::from_secs),
        }
    }
}

/// The webhook listener's service.
pub struct Webhooks<P> {
    control: ControlLog,
    secrets_key: SecretsKey,
    /// The integrations' webhook secrets, opened once per incarnation.
    keys: Keys,
    publisher: P,
    limits: Limits,
    in_flight: Arc<Semaphore>,
    /// One permit per byte of request body held in memory, across all requests.
    buffered: Arc<Semaphore>,
    metrics: IngestMetrics,
}

/// What an accepted request is answered with.
enum Accepted {
    /// 200: `diagnostics:ping`, nothing published.
    Pong,
    /// 202: on `inlet.webhooks`.
    Published {
        /// The delivery id the record carries.
        delivery_id: String,
    },
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
        let buffered = Arc::new(Semaphore::new(
            limits.max_buffered_bytes.min(Semaphore::MAX_PERMITS),
        ));
        Webhooks {
            control,
            secrets_key,
            keys: Keys::new(),
            publisher,
            limits,
            in_flight,
            buffered,
            metrics,
        }
    }

    /// Answers one request.
    pub async fn handle<B>(&self, request: Request<B>) -> Answer
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let integration = match target(&request) {
            Ok(name) => clip(name).to_owned(),
            Err(err) => return err.into_response(),
        };
        let mut report = Report::new(integration, request.headers());
        // A debug span: every line a request logs at info or above names the integration and
        // delivery id itself (`Report::log`), and an enabled span per request costs about 4 % of
        // ingest's CPU at full load (docs/BENCHMARKS.md, "Edge CPU"); with `RUST_LOG=debug` the
        // retry lines of the publish get it.
        let span = tracing::debug_span!(
            "webhook",
            integration = %report.integration,
            delivery_id = report.delivery_id.as_deref().unwrap_or_default(),
        );
        let _in_flight = InFlight::enter(&self.metrics);
        let result = self.receive(&mut report, request).instrument(span).await;
        report.finish(result, &self.metrics)
    }

    /// The steps of one webhook, from the integration lookup to the broker's acknowledgement.
    async fn receive<B>(
        &self,
        report: &mut Report,
        request: Request<B>,
    ) -> Result<Accepted, WebhookError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        report.known = self.find_integration(&report.integration)?;
        if report.invalid_delivery_id {
            return Err(WebhookError::InvalidRequestId);
        }
        let _permit = self.admit()?;
        let signature = request
            .headers()
            .get("x-hub-signature")
            .map(|v| v.as_bytes().to_vec());
        // Bitbucket's "Test connection" may be unsigned. A signed ping is verified, so the button
        // also tells an admin whether the secret is right.
        let is_ping = report.event_key.as_deref() == Some(events::PING);
        if signature.is_none() && !is_ping {
            // Refused from the head alone: an unsigned body is never read into memory.
            return Err(self.signature_refused(SignatureError::Missing));
        }
        let (parts, body) = request.into_parts();
        let (body, _buffered) = self.read_body(&parts.headers, body).await?;
        if is_ping && signature.is_none() {
            return Ok(Accepted::Pong);
        }
        let verified = self.verify(&report.integration, signature, body)?;
        if is_ping {
            return Ok(Accepted::Pong);
        }
        let record = self.record(report, &parts.headers, verified)?;
        let delivery_id = record.delivery_id.clone();
        self.publish(record).await?;
        Ok(Accepted::Published { delivery_id })
    }

    /// 404 unless an integration of that name exists.
    fn find_integration(&self, name: &str) -> Result<bool, WebhookError> {
        if self.control.read().integration(name).is_some() {
            Ok(true)
        } else {
            Err(WebhookError::UnknownIntegration(name.to_owned()))
        }
    }

    /// A permit for one request, or 503 when the in-flight bound is reached.
    fn admit(&self) -> Result<OwnedSemaphorePermit, WebhookError> {
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| WebhookError::Saturated)
    }

    /// Reads the body, refusing more than the limit (by `Content-Length` up front, and while
    /// reading for chunked bodies), bodies that take longer than the body timeout or stall longer
    /// than the idle timeout, and bodies the global buffer budget has no room for (503). The
    /// budget's permits stay held, with the body, until the request is answered.
    async fn read_body<B>(
        &self,
        headers: &HeaderMap,
        body: B,
    ) -> Result<(Bytes, OwnedSemaphorePermit), WebhookError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limit = self.limits.max_body_bytes;
        let declared = header_text(headers, header::CONTENT_LENGTH.as_str())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(WebhookError::BodyTooLarge(limit));
        }
        let collected = tokio::time::timeout(
            self.limits.body_timeout,
            self.collect(body, declared.unwrap_or(0) as usize),
        )
        .await
        .map_err(|_| WebhookError::BodyTimeout)??;
        self.metrics.body_bytes.observe(collected.0.len() as f64);
        Ok(collected)
    }

    /// Gathers the body's frames, taking buffer budget for each (the declared length up front).
    async fn collect<B>(
        &self,
        body: B,
        declared: usize,
    ) -> Result<(Bytes, OwnedSemaphorePermit), WebhookError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limit = self.limits.max_body_bytes;
        let mut held = self.budget(declared)?;
        let mut body = std::pin::pin!(body);
        // A body that arrives in one frame (the usual case: it came in the same read as the
        // head) is kept as hyper's buffer, not copied. It may keep the rest of that read buffer
        // (at most hyper's buffer size) alive with it; the budget counts the body's bytes.
        let mut first: Option<Bytes> = None;
        let mut buffer = bytes::BytesMut::new();
        loop {
            let frame = tokio::time::timeout(self.limits.body_idle_timeout, body.frame())
                .await
                .map_err(|_| WebhookError::BodyTimeout)?;
            let Some(frame) = frame else { break };
            let frame =
                frame.map_err(|err| WebhookError::BodyUnreadable(err.into().to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let length = first.as_ref().map_or(buffer.len(), Bytes::len);
            if length + data.len() > limit {
                return Err(WebhookError::BodyTooLarge(limit));
            }
            let needed = (length + data.len()).saturating_sub(held.num_permits());
            if needed > 0 {
                held.merge(self.budget(needed)?);
            }
            if buffer.is_empty() && first.is_none() {
                first = Some(data);
                continue;
            }
            if let Some(first) = first.take() {
                buffer.reserve(declared.max(first.len() + data.len()));
                buffer.extend_from_slice(&first);
            }
            buffer.extend_from_slice(&data);
        }
        Ok((first.unwrap_or_else(|| buffer.freeze()), held))
    }

    /// `bytes` of the global body budget, or 503 when it has no room.
    fn budget(&self, bytes: usize) -> Result<OwnedSemaphorePermit, WebhookError> {
        let bytes = u32::try_from(bytes).map_err(|_| WebhookError::BuffersFull)?;
        self.buffered
            .clone()
            .try_acquire_many_owned(bytes)
            .map_err(|_| WebhookError::BuffersFull)
    }

    /// The signature over the raw bytes against the integration's current secrets (401).
    fn verify(
        &self,
        integration: &str,
        signature: Option<Vec<u8>>,
        body: Bytes,
    ) -> Result<Verified, WebhookError> {
        let unverified = Unverified {
            integration: integration.to_owned(),
            signature,
            body,
        };
        unverified
            .verify(&self.control.read(), &self.secrets_key, &self.keys)
            .map_err(|err| match err {
                VerifyError::UnknownIntegration => {
                    WebhookError::UnknownIntegration(integration.to_owned())
                }
                VerifyError::Signature(err) => self.signature_refused(err),
                VerifyError::Sealed(err) => WebhookError::SecretsKeyMismatch(err.to_string()),
            })
    }

    /// A 401 for `err`, counted by reason.
    fn signature_refused(&self, err: SignatureError) -> WebhookError {
        self.metrics
            .signature_failures
            .with_label_values(&[err.as_str()])
            .inc();
        WebhookError::Signature(err)
    }

    /// The Kafka record of a verified webhook: keyed by its ordering repository, with its
    /// metadata headers (400 without an event key or a repository).
    fn record(
        &self,
        report: &mut Report,
        headers: &HeaderMap,
        verified: Verified,
    ) -> Result<WebhookRecord, WebhookError> {
        let event_key = report
            .event_key
            .clone()
            .ok_or(WebhookError::MissingEventKey)?;
        let envelope = inlet_bitbucket::envelope(Some(&event_key), &verified.body)?;
        self.check_age(&envelope)?;
        let repository = envelope.repository;
        let delivery_id = report
            .delivery_id
            .get_or_insert_with(|| format!("inlet-{}", Secret::generate(16).expose()))
            .clone();
        Ok(WebhookRecord {
            key: format!("{}/{}", report.integration, repository.full_name()).to_lowercase(),
            delivery_id,
            event_key,
            received_at: now_rfc3339(),
            // Continue the caller's trace when it sent one; start one otherwise, so a delivery can
            // be followed across stages either way.
            traceparent: Some(
                header_text(headers, "traceparent")
                    .filter(|t| trace_id(t).is_some())
                    .map_or_else(new_traceparent, str::to_owned),
            ),
            control_offset: self.control.applied_offset(),
            verified,
        })
    }

    /// With `max_event_age` set, refuses a signed event dated longer ago (a replayed capture).
    fn check_age(&self, envelope: &inlet_bitbucket::Envelope) -> Result<(), WebhookError> {
        let (Some(max), Some(date)) = (self.limits.max_event_age, &envelope.date) else {
            return Ok(());
        };
        let age = time::OffsetDateTime::now_utc() - date.0;
        if age > time::Duration::try_from(max).unwrap_or(time::Duration::MAX) {
            return Err(WebhookError::EventTooOld(age.whole_seconds()));
        }
        Ok(())
    }

    /// Publishes and waits for the broker's acknowledgement.
    async fn publish(&self, record: WebhookRecord) -> Result<(), WebhookError> {
        let started = Instant::now();
        let published = self.publisher.publish(record).await;
        self.metrics
            .publish_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(published?)
    }
}

impl<P: Publish> Service for Webhooks<P> {
    async fn call(&self, request: Request<hyper::body::Incoming>) -> Answer {
        self.handle(request).await
    }
}

/// The integration name the URL names: `POST /webhooks/bitbucket-datacenter/{name}`.
fn target<B>(request: &Request<B>) -> Result<&str, WebhookError> {
    let name = request
        .uri()
        .path()
        .strip_prefix(WEBHOOK_PATH_PREFIX)
        .filter(|name| !name.is_empty() && !name.contains('/'))
        .ok_or(WebhookError::NoRoute)?;
    if request.method() != Method::POST {
        return Err(WebhookError::MethodNotAllowed);
    }
    Ok(name)
}

/// What happened to one request: the single source of its log line and metrics.
struct Report {
    /// The URL's integration name, clipped for logs.
    integration: String,
    /// Whether the integration exists (only then is its name a metric label).
    known: bool,
    /// `X-Event-Key`, clipped for logs.
    event_key: Option<String>,
    /// A valid `X-Request-Id`.
    delivery_id: Option<String>,
    /// `X-Request-Id` was present but not 1–128 visible ASCII characters.
    invalid_delivery_id: bool,
}

#[derive(Serialize)]
struct AcceptedBody<'a> {
    status: &'a str,
    delivery_id: &'a str,
}

impl Report {
    fn new(integration: String, headers: &HeaderMap) -> Self {
        let request_id = headers.get("x-request-id").map(|v| v.as_bytes());
        let invalid_delivery_id = request_id.is_some_and(|id| !valid_request_id(id));
        Report {
            integration,
            known: false,
            event_key: header_text(headers, "x-event-key").map(|key| clip(key).to_owned()),
            delivery_id: header_str(headers, "x-request-id").filter(|_| !invalid_delivery_id),
            invalid_delivery_id,
        }
    }

    /// Emits the request's metrics and log line, and builds its answer.
    fn finish(self, result: Result<Accepted, WebhookError>, metrics: &IngestMetrics) -> Answer {
        let outcome = match &result {
            Ok(Accepted::Pong) => WebhookOutcome::Ping,
            Ok(Accepted::Published { .. }) => WebhookOutcome::Accepted,
            Err(err) => err.outcome(),
        };
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
                outcome.as_str(),
            ])
            .inc();
        self.log(outcome, result.as_ref().err());
        match result {
            Ok(Accepted::Pong) => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            Ok(Accepted::Published { delivery_id }) => json(
                StatusCode::ACCEPTED,
                &AcceptedBody {
                    status: "accepted",
                    delivery_id: &delivery_id,
                },
            ),
            Err(err) => err.into_response(),
        }
    }

    fn log(&self, outcome: WebhookOutcome, error: Option<&WebhookError>) {
        let event_key = self.event_key.as_deref().unwrap_or_default();
        let delivery_id = self.delivery_id.as_deref().unwrap_or_default();
        let outcome = outcome.as_str();
        match error {
            Some(err) if err.status().is_server_error() => tracing::warn!(
                integration = %self.integration, %delivery_id, %event_key, outcome,
                code = err.code(), reason = %err, cause = err.internal_cause().unwrap_or_default(),
                "webhook not stored"
            ),
            Some(err) => tracing::info!(
                integration = %self.integration, %delivery_id, %event_key, outcome,
                code = err.code(), reason = %err, "webhook refused"
            ),
            // Accepted webhooks are on Kafka with their metadata; a line each would cost more
            // than the rest of the request at full load, so it is opt-in (debug).
            None => tracing::debug!(
                integration = %self.integration, %delivery_id, %event_key, outcome,
                "webhook received"
            ),
        }
    }
}

/// Keeps `inlet_ingest_in_flight_requests` right even when a request's future is dropped (the
/// client went away mid-body).
struct InFlight<'a>(&'a IngestMetrics);

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a IngestMetrics) -> Self {
        metrics.in_flight.inc();
        InFlight(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// The longest value of a request field that goes into a log line or an answer.
const MAX_LOGGED: usize = 256;

/// `text` cut to [`MAX_LOGGED`] bytes at a character boundary: whatever a client sends, a log line
/// stays small.
fn clip(text: &str) -> &str {
    if text.len() <= MAX_LOGGED {
        return text;
    }
    let mut end = MAX_LOGGED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `X-Request-Id`: 1–128 visible ASCII characters (Bitbucket sends a UUID). It becomes the
/// delivery id carried by every record and the key of the delivery log.
fn valid_request_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    header_text(headers, name).map(str::to_owned)
}

/// A header's trimmed, non-empty text value.
fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}
