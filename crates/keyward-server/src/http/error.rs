//! The one place errors become HTTP responses: `{"error": {"code": ..., "message": ...}}` with
//! the right status. A 5xx says nothing internal; its cause is logged once, here.
//!
//! Every 401 and 403 of a Bearer-protected endpoint carries an RFC 6750 §3 challenge
//! (`WWW-Authenticate: Bearer realm="keyward", error=..., error_description=..., scope=...`);
//! a request that sent no credential gets the challenge without an error code. The OAuth
//! endpoints (RFC 7662, RFC 7009) answer in RFC 6749 §5.2's shape instead
//! (`{"error", "error_description"}`), see [`ApiError::for_oauth`].

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward_core::InactiveReason;

use super::wire::{ErrorCode, ErrorDetail, ErrorResponse, OAuthErrorResponse};
use crate::service::{RateState, ServiceError};

/// The realm every challenge names.
pub const REALM: &str = "keyward";

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    challenge: Option<Challenge>,
    /// Seconds for a `Retry-After` header (RFC 9110 §10.2.3), when the client should come back.
    retry_after: Option<u64>,
    /// A token's rate limit, for the `RateLimit-Policy` and `RateLimit` headers.
    rate: Option<Box<RateState>>,
    oauth: bool,
}

/// The IETF HTTP API working group's `RateLimit-Policy` and `RateLimit` header values
/// (draft-ietf-httpapi-ratelimit-headers) for a token's rate limit at `now`: the policy's quota
/// `q` per window `w` seconds, and the requests `r` left with `t` seconds until the window
/// resets. The policy is named `token`.
pub fn rate_limit_headers(rate: &RateState) -> [(HeaderName, HeaderValue); 2] {
    let reset = (rate.reset - rate.at).max(0);
    // Digits, quotes and punctuation only: always a valid header value.
    let value = |text: String| HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""));
    [
        (
            HeaderName::from_static("ratelimit-policy"),
            value(format!("\"token\";q={};w={}", rate.limit, rate.window_secs)),
        ),
        (
            HeaderName::from_static("ratelimit"),
            value(format!("\"token\";r={};t={reset}", rate.remaining)),
        ),
    ]
}

/// How the client authenticated (or tried to), for the challenge an OAuth endpoint answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `Authorization: Basic` with the token as the password (RFC 7617).
    Basic,
}

/// The `WWW-Authenticate` challenge(s) of a 401 or 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// RFC 6750 §3: `Bearer realm="keyward"`, with an error code unless no credential was sent,
    /// and the scope the resource needs when the token lacked it.
    Bearer {
        /// `invalid_request`, `invalid_token` or `insufficient_scope`; `None` when no
        /// credential was sent (§3.1: then the challenge carries no error code).
        error: Option<&'static str>,
        /// Space-separated scopes the request needs.
        scope: Option<String>,
    },
    /// RFC 7617 / RFC 6749 §5.2: the client authenticated with HTTP Basic.
    Basic,
    /// No credential was sent to an endpoint that takes Bearer or Basic: both challenges.
    BearerOrBasic,
}

impl ApiError {
    /// An error with a status, a stable machine-readable code and a message for people.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            challenge: None,
            retry_after: None,
            rate: None,
            oauth: false,
        }
    }

    /// The same error with a `Retry-After` of `seconds`.
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The same error with this challenge.
    #[must_use]
    pub fn with_challenge(mut self, challenge: Challenge) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// 400 `invalid_request` for a malformed credential (RFC 6750 §3.1), e.g. several
    /// `Authorization` headers.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message).with_challenge(
            Challenge::Bearer {
                error: Some("invalid_request"),
                scope: None,
            },
        )
    }

    /// The same error as an OAuth endpoint (RFC 7662 introspection, RFC 7009 revocation)
    /// answers it: the RFC 6749 §5.2 body, and every failure of the caller's own authentication
    /// a 401 (RFC 7662 §2.3) challenging for the scheme the caller used — `invalid_client` for
    /// HTTP Basic or no credential (RFC 6749 §5.2), RFC 6750's codes for a Bearer token.
    #[must_use]
    pub fn for_oauth(mut self, scheme: Option<AuthScheme>) -> Self {
        let caller_auth = matches!(
            self.code,
            ErrorCode::Unauthenticated | ErrorCode::InvalidToken | ErrorCode::InsufficientScope
        ) && matches!(self.status.as_u16(), 401 | 403);
        if caller_auth {
            self.status = StatusCode::UNAUTHORIZED;
            match scheme {
                Some(AuthScheme::Bearer) => {}
                Some(AuthScheme::Basic) => {
                    self.code = ErrorCode::InvalidClient;
                    self.challenge = Some(Challenge::Basic);
                }
                None => {
                    self.code = ErrorCode::InvalidClient;
                    self.challenge = Some(Challenge::BearerOrBasic);
                }
            }
        } else {
            self.code = match (self.code, self.status.as_u16()) {
                (code @ (ErrorCode::InvalidRequest | ErrorCode::UnauthorizedClient), _) => code,
                (_, 503) => ErrorCode::TemporarilyUnavailable,
                (_, 500..) => ErrorCode::ServerError,
                _ => ErrorCode::InvalidRequest,
            };
        }
        self.oauth = true;
        self
    }

    /// 404 for a route or record that does not exist (or is not the caller's).
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such resource",
        )
    }

    /// 503 `timeout` for a request whose handler ran past the server's request timeout.
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Timeout,
            "the request took too long to answer; try again",
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The `WWW-Authenticate` values this error sends: its challenge, or for a 401 or 403
    /// without one the Bearer challenge its status implies (every 401/403 carries one,
    /// docs/api.md). A 403 without a challenge of its own (`forbidden`, `ip_not_allowed`,
    /// forward-auth's `no_route`) lacks a privilege no scope would give: `insufficient_scope`,
    /// naming none.
    fn challenges(&self) -> Vec<String> {
        let challenge = match (&self.challenge, self.status) {
            (Some(c), _) => c.clone(),
            (None, StatusCode::UNAUTHORIZED) => Challenge::Bearer {
                error: (self.code != ErrorCode::Unauthenticated).then_some("invalid_token"),
                scope: None,
            },
            (None, StatusCode::FORBIDDEN) => Challenge::Bearer {
                error: Some("insufficient_scope"),
                scope: None,
            },
            (None, _) => return Vec::new(),
        };
        let basic = format!("Basic realm=\"{REALM}\"");
        match challenge {
            Challenge::Bearer { error, scope } => vec![self.bearer_challenge(error, scope)],
            Challenge::Basic => vec![basic],
            Challenge::BearerOrBasic => vec![self.bearer_challenge(None, None), basic],
        }
    }

    fn bearer_challenge(&self, error: Option<&str>, scope: Option<String>) -> String {
        let mut value = format!("Bearer realm=\"{REALM}\"");
        if let Some(error) = error {
            value.push_str(&format!(
                ", error=\"{error}\", error_description=\"{}\"",
                challenge_text(&self.message)
            ));
        }
        if let Some(scope) = scope {
            value.push_str(&format!(", scope=\"{}\"", challenge_text(&scope)));
        }
        value
    }
}

/// Text made safe for a challenge's quoted value. RFC 6750 §3 allows only printable ASCII
/// without `"` and `\` in `error_description` and `scope` (%x20-21 / %x23-5B / %x5D-7E), so a
/// quote becomes `'`, a backslash `/`, and anything else outside that range `?`: a description
/// can never end the quoted string early or smuggle a header line.
pub fn challenge_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = if self.oauth {
            let body = OAuthErrorResponse {
                error: self.code,
                error_description: &self.message,
            };
            let mut response = (self.status, Json(body)).into_response();
            // RFC 6749 §5.2 (via RFC 7662 and RFC 7009): error answers are not cached.
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        } else {
            let body = ErrorResponse {
                error: ErrorDetail {
                    code: self.code,
                    message: &self.message,
                },
            };
            (self.status, Json(body)).into_response()
        };
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(rate) = &self.rate {
            for (name, value) in rate_limit_headers(rate) {
                response.headers_mut().insert(name, value);
            }
        }
        for challenge in self.challenges() {
            // `challenge_text` keeps every value printable ASCII, so this cannot fail.
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .append(header::WWW_AUTHENTICATE, value);
            }
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
                ErrorCode::Unauthenticated,
                "authentication required: send Authorization: Bearer <token>",
            )
            .with_challenge(Challenge::Bearer {
                error: None,
                scope: None,
            }),
            ServiceError::Limited {
                reason,
                retry_after,
                rate,
            } => {
                let (status, code) = match reason {
                    InactiveReason::IpNotAllowed => (S::FORBIDDEN, ErrorCode::IpNotAllowed),
                    InactiveReason::UsageExceeded => {
                        (S::TOO_MANY_REQUESTS, ErrorCode::UsageExceeded)
                    }
                    _ => (S::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
                };
                let mut error = Self::new(
                    status,
                    code,
                    format!("the token is not active: {}", reason.as_str()),
                );
                error.retry_after = retry_after.and_then(|s| u64::try_from(s).ok());
                error.rate = rate;
                error
            }
            e @ ServiceError::BadLimits(_) => {
                Self::new(S::BAD_REQUEST, ErrorCode::InvalidLimits, e.to_string())
            }
            ServiceError::Unauthenticated(Some(reason)) => Self::new(
                S::UNAUTHORIZED,
                ErrorCode::InvalidToken,
                format!("the token is not active: {}", reason.as_str()),
            )
            .with_challenge(Challenge::Bearer {
                error: Some("invalid_token"),
                scope: None,
            }),
            e @ ServiceError::RotatedOut => {
                Self::new(S::UNAUTHORIZED, ErrorCode::InvalidToken, e.to_string()).with_challenge(
                    Challenge::Bearer {
                        error: Some("invalid_token"),
                        scope: None,
                    },
                )
            }
            ServiceError::MissingScope { needed } => Self::new(
                S::FORBIDDEN,
                ErrorCode::InsufficientScope,
                format!("this token lacks the scope {needed}"),
            )
            .with_challenge(Challenge::Bearer {
                error: Some("insufficient_scope"),
                scope: Some(needed),
            }),
            ServiceError::ScopeCeiling { missing } => Self::new(
                S::FORBIDDEN,
                ErrorCode::ScopeExceedsCaller,
                format!(
                    "a token cannot grant scopes it does not hold: {}",
                    missing.join(", ")
                ),
            )
            .with_challenge(Challenge::Bearer {
                error: Some("insufficient_scope"),
                scope: Some(missing.join(" ")),
            }),
            e @ ServiceError::Forbidden(_) => {
                Self::new(S::FORBIDDEN, ErrorCode::Forbidden, e.to_string())
            }
            e @ ServiceError::NotPermitted(_) => {
                Self::new(S::BAD_REQUEST, ErrorCode::UnauthorizedClient, e.to_string())
            }
            ServiceError::NotFound => Self::not_found(),
            e @ ServiceError::BadName(_) => {
                Self::new(S::BAD_REQUEST, ErrorCode::InvalidName, e.to_string())
            }
            e @ ServiceError::BadScope(_) => {
                Self::new(S::BAD_REQUEST, ErrorCode::InvalidScope, e.to_string())
            }
            e @ ServiceError::UnknownScope(_) => {
                Self::new(S::BAD_REQUEST, ErrorCode::UnknownScope, e.to_string())
            }
            e @ ServiceError::BadExpiry(_) => {
                Self::new(S::BAD_REQUEST, ErrorCode::InvalidExpiry, e.to_string())
            }
            e @ ServiceError::BadPassword => {
                Self::new(S::BAD_REQUEST, ErrorCode::InvalidPassword, e.to_string())
            }
            e @ ServiceError::Invalid(_) => {
                Self::new(S::BAD_REQUEST, ErrorCode::InvalidRequest, e.to_string())
            }
            e @ ServiceError::Conflict(_) => {
                Self::new(S::CONFLICT, ErrorCode::Conflict, e.to_string())
            }
            e @ ServiceError::InvalidState(_) => {
                Self::new(S::CONFLICT, ErrorCode::InvalidState, e.to_string())
            }
            ServiceError::Unavailable(cause) => {
                tracing::error!(%cause, "token store unavailable");
                Self::new(
                    S::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "the token store is unavailable; try again shortly",
                )
            }
            ServiceError::KeyMissing(what) => {
                tracing::error!(%what, "server key missing");
                Self::new(S::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, what)
            }
            e @ ServiceError::Busy => {
                Self::new(S::SERVICE_UNAVAILABLE, ErrorCode::Busy, e.to_string())
                    .with_retry_after(crate::service::sessions::RETRY_AFTER_SECS)
            }
            ServiceError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Self::new(
                    S::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error",
                )
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
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with Content-Type: application/json",
            ),
            JsonRejection::JsonSyntaxError(e) => {
                Self::new(S::BAD_REQUEST, ErrorCode::MalformedJson, e.body_text())
            }
            JsonRejection::JsonDataError(e) => {
                Self::new(S::BAD_REQUEST, ErrorCode::InvalidBody, e.body_text())
            }
            JsonRejection::BytesRejection(e) => e.into(),
            other => Self::new(S::BAD_REQUEST, ErrorCode::InvalidBody, other.body_text()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                "the request body is too large",
            )
        } else {
            Self::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidBody,
                rejection.body_text(),
            )
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidQuery,
            rejection.body_text(),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        Self::not_found()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_text_cannot_break_out_of_its_quotes() {
        assert_eq!(challenge_text(r#"say "hi" \ bye"#), "say 'hi' / bye");
        assert_eq!(
            challenge_text("a\r\nSet-Cookie: x\u{e9}"),
            "a??Set-Cookie: x?"
        );
        let e = ApiError::from(ServiceError::MissingScope {
            needed: "a\"b".to_owned(),
        });
        let challenges = e.challenges();
        assert_eq!(
            challenges,
            [
                r#"Bearer realm="keyward", error="insufficient_scope", error_description="this token lacks the scope a'b", scope="a'b""#
            ]
        );
    }

    #[test]
    fn oauth_errors_take_rfc6749s_codes() {
        let unauth = || ApiError::from(ServiceError::Unauthenticated(None));
        assert_eq!(unauth().for_oauth(None).code(), ErrorCode::InvalidClient);
        assert_eq!(
            unauth().for_oauth(Some(AuthScheme::Basic)).code(),
            ErrorCode::InvalidClient
        );
        assert_eq!(
            unauth().for_oauth(Some(AuthScheme::Bearer)).code(),
            ErrorCode::Unauthenticated
        );
        let scope = ApiError::from(ServiceError::MissingScope {
            needed: "tokens:introspect".to_owned(),
        })
        .for_oauth(Some(AuthScheme::Bearer));
        assert_eq!(
            (scope.status(), scope.code()),
            (StatusCode::UNAUTHORIZED, ErrorCode::InsufficientScope)
        );
        let down = ApiError::from(ServiceError::Unavailable("x".to_owned())).for_oauth(None);
        assert_eq!(down.code(), ErrorCode::TemporarilyUnavailable);
        let bad = ApiError::from(ServiceError::NotFound).for_oauth(None);
        assert_eq!(bad.code(), ErrorCode::InvalidRequest);
    }
}
