//! The one place errors become HTTP responses: `{"error": {"code": ..., "message": ...}}` with
//! the right status. A 5xx says nothing internal; its cause is logged once, here.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::service::ServiceError;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with a status, a stable machine-readable code and a message for people.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 404 for a route or record that does not exist (or is not the caller's).
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: a challenge on every 401 from a Bearer-protected endpoint.
            let challenge = match self.code {
                "unauthenticated" => HeaderValue::from_static(r#"Bearer realm="keyward""#),
                _ => HeaderValue::from_static(r#"Bearer realm="keyward", error="invalid_token""#),
            };
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        use StatusCode as S;
        match e {
            ServiceError::Unauthenticated(None) => Self::new(
                S::UNAUTHORIZED,
                "unauthenticated",
                "authentication required: send Authorization: Bearer <token>",
            ),
            ServiceError::Unauthenticated(Some(reason)) => Self::new(
                S::UNAUTHORIZED,
                "invalid_token",
                format!("the token is not active: {}", reason.as_str()),
            ),
            e @ ServiceError::MissingScope { .. } => {
                Self::new(S::FORBIDDEN, "insufficient_scope", e.to_string())
            }
            e @ ServiceError::ScopeCeiling { .. } => {
                Self::new(S::FORBIDDEN, "scope_exceeds_caller", e.to_string())
            }
            ServiceError::NotFound => Self::not_found(),
            e @ ServiceError::BadName(_) => {
                Self::new(S::BAD_REQUEST, "invalid_name", e.to_string())
            }
            e @ ServiceError::BadScope(_) => {
                Self::new(S::BAD_REQUEST, "invalid_scope", e.to_string())
            }
            e @ ServiceError::BadExpiry(_) => {
                Self::new(S::BAD_REQUEST, "invalid_expiry", e.to_string())
            }
            e @ ServiceError::BadPassword => {
                Self::new(S::BAD_REQUEST, "invalid_password", e.to_string())
            }
            e @ ServiceError::Invalid(_) => {
                Self::new(S::BAD_REQUEST, "invalid_request", e.to_string())
            }
            e @ ServiceError::Conflict(_) => Self::new(S::CONFLICT, "conflict", e.to_string()),
            e @ ServiceError::InvalidState(_) => {
                Self::new(S::CONFLICT, "invalid_state", e.to_string())
            }
            ServiceError::Unavailable(cause) => {
                tracing::error!(%cause, "token store unavailable");
                Self::new(
                    S::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the token store is unavailable; try again shortly",
                )
            }
            ServiceError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Self::new(S::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        use StatusCode as S;
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ),
            JsonRejection::JsonSyntaxError(e) => {
                Self::new(S::BAD_REQUEST, "malformed_json", e.body_text())
            }
            JsonRejection::JsonDataError(e) => {
                Self::new(S::BAD_REQUEST, "invalid_body", e.body_text())
            }
            JsonRejection::BytesRejection(e) if e.status() == S::PAYLOAD_TOO_LARGE => Self::new(
                S::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is too large",
            ),
            other => Self::new(S::BAD_REQUEST, "invalid_body", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        Self::not_found()
    }
}
