//! Every way a webhook request can fail, and the one place each becomes an HTTP status, a stable
//! `code`, a metric outcome and a `Retry-After` (DESIGN §4.1).
//!
//! The message sent to Bitbucket says what the caller can fix; internal causes (Kafka errors, I/O
//! errors) are logged by the request's report, never put in the body.

use http::{HeaderValue, StatusCode, header};
use inlet_bitbucket::PayloadError;
use inlet_bitbucket::signature::SignatureError;
use inlet_core::http::{Answer, ErrorAnswer};
use inlet_core::metrics::WebhookOutcome;

use crate::publish::PublishError;

/// Why a webhook request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The path is not `/webhooks/bitbucket-datacenter/{name}`.
    #[error("no such endpoint")]
    NoRoute,
    /// Not a POST.
    #[error("webhooks are delivered with POST")]
    MethodNotAllowed,
    /// No integration of that name (never existed, or deleted).
    #[error("no integration named `{0}`")]
    UnknownIntegration(String),
    /// At the in-flight limit.
    #[error("ingest is at its in-flight limit; retry shortly")]
    Saturated,
    /// The global budget for buffered bodies is used up.
    #[error("ingest holds as many request bodies as it may; retry shortly")]
    BuffersFull,
    /// `X-Request-Id` is not 1–128 visible ASCII characters.
    #[error("the X-Request-Id header must be 1 to 128 visible ASCII characters")]
    InvalidRequestId,
    /// The body is over the limit (by `Content-Length` or while streaming).
    #[error("the body exceeds {0} bytes")]
    BodyTooLarge(usize),
    /// The body did not arrive within the body timeout.
    #[error("the body took too long")]
    BodyTimeout,
    /// The connection failed while the body was read.
    #[error("the body could not be read")]
    BodyUnreadable(String),
    /// Missing, malformed or wrong `X-Hub-Signature`.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// This process's secrets key cannot open the integration's webhook secret.
    #[error(
        "this ingest cannot open the integration's secret; its operator must fix the secrets key"
    )]
    SecretsKeyMismatch(String),
    /// No `X-Event-Key` on a signed request.
    #[error("the X-Event-Key header is missing")]
    MissingEventKey,
    /// With `ingest.max_event_age_secs` set: the signed `date` is older (seconds ago).
    #[error("the event is dated {0} s ago, older than this inlet accepts")]
    EventTooOld(i64),
    /// The body is not JSON, or names no repository.
    #[error(transparent)]
    InvalidPayload(#[from] PayloadError),
    /// The broker did not take the record.
    #[error("the webhook could not be stored; retry shortly")]
    Publish(#[from] PublishError),
}

impl WebhookError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookError::NoRoute | WebhookError::UnknownIntegration(_) => StatusCode::NOT_FOUND,
            WebhookError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            WebhookError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            WebhookError::Signature(_) => StatusCode::UNAUTHORIZED,
            WebhookError::BodyUnreadable(_)
            | WebhookError::InvalidRequestId
            | WebhookError::EventTooOld(_)
            | WebhookError::MissingEventKey
            | WebhookError::InvalidPayload(_) => StatusCode::BAD_REQUEST,
            WebhookError::Saturated
            | WebhookError::BuffersFull
            | WebhookError::SecretsKeyMismatch(_)
            | WebhookError::Publish(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable `code` of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::NoRoute => "not_found",
            WebhookError::MethodNotAllowed => "method_not_allowed",
            WebhookError::UnknownIntegration(_) => "integration_not_found",
            WebhookError::Saturated
            | WebhookError::BuffersFull
            | WebhookError::Publish(PublishError::QueueFull) => "saturated",
            WebhookError::InvalidRequestId => "invalid_request_id",
            WebhookError::EventTooOld(_) => "event_too_old",
            WebhookError::BodyTooLarge(_) => "body_too_large",
            WebhookError::BodyTimeout => "body_timeout",
            WebhookError::BodyUnreadable(_) => "body_unreadable",
            WebhookError::Signature(_) => "invalid_signature",
            WebhookError::SecretsKeyMismatch(_) => "secrets_key_mismatch",
            WebhookError::MissingEventKey => "missing_event_key",
            WebhookError::InvalidPayload(_) => "invalid_payload",
            WebhookError::Publish(_) => "broker_unavailable",
        }
    }

    /// The `outcome` label of `inlet_ingest_requests_total`.
    pub fn outcome(&self) -> WebhookOutcome {
        match self.status() {
            StatusCode::UNAUTHORIZED => WebhookOutcome::Unauthorized,
            StatusCode::NOT_FOUND => WebhookOutcome::NotFound,
            StatusCode::PAYLOAD_TOO_LARGE => WebhookOutcome::TooLarge,
            StatusCode::REQUEST_TIMEOUT => WebhookOutcome::Timeout,
            StatusCode::SERVICE_UNAVAILABLE => WebhookOutcome::Unavailable,
            _ => WebhookOutcome::BadRequest,
        }
    }

    /// Seconds Bitbucket (or a proxy) should wait before retrying a 503.
    fn retry_after(&self) -> Option<u32> {
        match self {
            WebhookError::Saturated | WebhookError::BuffersFull => Some(1),
            WebhookError::Publish(_) => Some(5),
            WebhookError::SecretsKeyMismatch(_) => Some(30),
            _ => None,
        }
    }

    /// What only the operator should see (logged, never answered).
    pub fn internal_cause(&self) -> Option<String> {
        match self {
            WebhookError::BodyUnreadable(cause) | WebhookError::SecretsKeyMismatch(cause) => {
                Some(cause.clone())
            }
            WebhookError::Publish(err) => Some(err.to_string()),
            _ => None,
        }
    }

    /// The answer.
    pub fn into_response(self) -> Answer {
        let mut response = ErrorAnswer {
            status: self.status(),
            code: self.code(),
            message: self.to_string(),
            retry_after: self.retry_after(),
        }
        .into_response();
        if matches!(self, WebhookError::MethodNotAllowed) {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's error text never reaches the body; it is the internal cause.
    #[test]
    fn publish_errors_hide_their_cause() {
        let err = WebhookError::Publish(PublishError::Timeout);
        assert_eq!(
            err.to_string(),
            "the webhook could not be stored; retry shortly"
        );
        assert!(err.internal_cause().is_some());
        assert_eq!(err.code(), "broker_unavailable");
        assert_eq!(err.outcome(), WebhookOutcome::Unavailable);
    }
}
