//! The one place errors become HTTP responses: `{"error": {"code", "message"}}`.

use crate::fold::{Rejection, RejectionKind};
use http::StatusCode;
pub use inlet_core::http::{Answer, ErrorAnswer, empty, json};

/// An error answer. Internal causes are logged where they happen; the answer carries only what the
/// caller may know.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code.
    pub code: &'static str,
    /// Human sentence.
    pub message: String,
    /// Seconds for `Retry-After` (503s).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 naming the field at fault.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("{field}: {message}"),
        )
    }

    /// 404 for a resource.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u32) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// The response.
    pub fn into_response(self) -> Answer {
        ErrorAnswer {
            status: self.status,
            code: self.code,
            message: self.message,
            retry_after: self.retry_after,
        }
        .into_response()
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        let status = match rejection.kind {
            RejectionKind::Invalid => StatusCode::BAD_REQUEST,
            RejectionKind::Conflict => StatusCode::CONFLICT,
            RejectionKind::NotFound => StatusCode::NOT_FOUND,
        };
        let message = match rejection.field {
            Some(field) => format!("{field}: {}", rejection.message),
            None => rejection.message,
        };
        ApiError::new(status, rejection.code, message)
    }
}
