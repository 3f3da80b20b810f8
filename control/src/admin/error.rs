//! Every way an admin request can fail, and the one place each becomes an HTTP status and a
//! stable `code` (DESIGN §4.2): `{"error": {"code", "message"}}`.
//!
//! Internal causes (the broker's error text, a secret that cannot be opened) are logged by the
//! request, never sent: a 500 or 503 says what the caller can do, not why inside.

use http::{HeaderValue, StatusCode, header};
pub use inlet_core::http::{Answer, ErrorAnswer, empty, json};

use crate::fold::{Rejection, RejectionKind};

/// Why an admin request was not served.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// 400: a field of the request is wrong; the message names it.
    Invalid {
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// 400: the body is not the JSON the endpoint takes.
    InvalidBody(String),
    /// 401: no key, or one that is unknown, revoked or malformed.
    Unauthorized(&'static str),
    /// 403: the key may not do this.
    Forbidden(String),
    /// 404: no such resource (or one the caller may not know exists).
    NotFound {
        /// Stable code, e.g. `stack_not_found`.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// 405: the resource exists but not with this method; `Allow` lists the ones it takes.
    MethodNotAllowed {
        /// The `Allow` header.
        allow: String,
    },
    /// 409: the request conflicts with the current state.
    Conflict {
        /// Stable code, e.g. `stack_detached`.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// 410: what the request needs is no longer retained.
    Gone {
        /// Stable code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// 413: the body is over the limit (bytes).
    TooLarge(usize),
    /// 429: this key writes faster than the per-key limit.
    RateLimited {
        /// Seconds until a write is allowed again.
        retry_after: u32,
    },
    /// The control fold rejected the command: 400, 404 or 409 by the rejection's kind.
    Rejected(Rejection),
    /// 503 with `Retry-After`: try again shortly.
    Unavailable {
        /// Stable code, e.g. `broker_unavailable`.
        code: &'static str,
        /// Human sentence.
        message: String,
        /// Seconds.
        retry_after: u32,
    },
    /// 502: Bitbucket refused the call or could not be reached; the message is Bitbucket's (or
    /// why there was no answer).
    BadGateway {
        /// Stable code, e.g. `bitbucket_refused`.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// 500: this process cannot serve it (the cause is logged where it happened).
    Internal {
        /// Stable code.
        code: &'static str,
        /// Human sentence, without the cause.
        message: String,
    },
}

impl ApiError {
    /// 400 naming `field`.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        ApiError::Invalid {
            field: field.to_owned(),
            message: message.to_string(),
        }
    }

    /// 404 with `code`.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::NotFound {
            code,
            message: message.into(),
        }
    }

    /// 409 with `code`.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Conflict {
            code,
            message: message.into(),
        }
    }

    /// 503 with `code` and `Retry-After: retry_after`.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u32) -> Self {
        ApiError::Unavailable {
            code,
            message: message.into(),
            retry_after,
        }
    }

    /// The HTTP status: the one place statuses are chosen.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } | ApiError::InvalidBody(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Rejected(rejection) => match rejection.kind {
                RejectionKind::Invalid => StatusCode::BAD_REQUEST,
                RejectionKind::Conflict => StatusCode::CONFLICT,
                RejectionKind::NotFound => StatusCode::NOT_FOUND,
            },
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. } => "invalid_field",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::TooLarge(_) => "body_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Rejected(rejection) => rejection.code,
            ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Gone { code, .. }
            | ApiError::Unavailable { code, .. }
            | ApiError::BadGateway { code, .. }
            | ApiError::Internal { code, .. } => code,
        }
    }

    /// The sentence for the caller.
    pub fn message(&self) -> String {
        match self {
            ApiError::Invalid { field, message } => format!("{field}: {message}"),
            ApiError::InvalidBody(reason) => format!("the request body is not valid: {reason}"),
            ApiError::Unauthorized(message) => (*message).to_owned(),
            ApiError::MethodNotAllowed { .. } => "method not allowed on this resource".to_owned(),
            ApiError::TooLarge(limit) => format!("admin requests are limited to {limit} bytes"),
            ApiError::RateLimited { .. } => {
                "this API key writes faster than the admin API allows; retry shortly".to_owned()
            }
            ApiError::Rejected(rejection) => match rejection.field {
                Some(field) => format!("{field}: {}", rejection.message),
                None => rejection.message.clone(),
            },
            ApiError::Forbidden(message)
            | ApiError::NotFound { message, .. }
            | ApiError::Conflict { message, .. }
            | ApiError::Gone { message, .. }
            | ApiError::Unavailable { message, .. }
            | ApiError::BadGateway { message, .. }
            | ApiError::Internal { message, .. } => message.clone(),
        }
    }

    /// The response.
    pub fn into_response(self) -> Answer {
        let mut response = ErrorAnswer {
            status: self.status(),
            code: self.code(),
            message: self.message(),
            retry_after: match &self {
                ApiError::Unavailable { retry_after, .. }
                | ApiError::RateLimited { retry_after } => Some(*retry_after),
                _ => None,
            },
        }
        .into_response();
        if let ApiError::MethodNotAllowed { allow } = &self
            && let Ok(value) = HeaderValue::from_str(allow)
        {
            response.headers_mut().insert(header::ALLOW, value);
        }
        response
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        ApiError::Rejected(rejection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rejections keep the fold's code and name the field; their kind picks the status.
    #[test]
    fn rejections_map_by_kind() {
        let rejection = Rejection {
            kind: RejectionKind::Conflict,
            code: "stack_exists",
            field: Some("id"),
            message: "taken".to_owned(),
        };
        let err = ApiError::from(rejection);
        assert_eq!(err.status(), StatusCode::CONFLICT);
        assert_eq!(err.code(), "stack_exists");
        assert_eq!(err.message(), "id: taken");
    }
}
