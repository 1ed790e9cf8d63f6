//! Extractors that turn every bad input into an [`ApiError`] instead of axum's plain-text
//! rejections.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use keyward_core::{RawSecret, TokenId, UserId};
use serde::de::DeserializeOwned;
use std::net::IpAddr;

use super::client_addr::client_ip;
use super::error::ApiError;
use super::wire::ErrorCode;
use crate::service::{DEFAULT_PAGE, MAX_PAGE};

/// A JSON body; any rejection becomes a JSON error.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The common case, plain `application/json` that parses, skips the error-path tracking
        // of axum's extractor; anything else takes axum's way, for the same checks and messages.
        if req.headers().get(CONTENT_TYPE).map(HeaderValue::as_bytes) == Some(b"application/json") {
            let bytes = Bytes::from_request(req, state)
                .await
                .map_err(JsonRejection::from)?;
            return match serde_json::from_slice(&bytes) {
                Ok(value) => Ok(Self(value)),
                Err(_) => Ok(Self(axum::Json::<T>::from_bytes(&bytes)?.0)),
            };
        }
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// An optional JSON body: absent (empty) is `None`; present must be valid JSON of `T`.
pub struct OptionalJson<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let has_json_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let bytes = Bytes::from_request(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        if !has_json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(|v| Self(Some(v)))
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidBody,
                    e.to_string(),
                )
            })
    }
}

/// The `Authorization: Bearer` credential, if any. A header that is present but not a Bearer
/// credential counts as a presented token that is malformed, not as no token; several
/// `Authorization` headers are a malformed request (RFC 6750 §3.1 `invalid_request`).
pub struct Bearer(pub Option<RawSecret>);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = single_authorization(parts)? else {
            return Ok(Self(None));
        };
        let text = value.to_str().unwrap_or("");
        let token = match text.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => "",
        };
        // An empty string is malformed to the verifier, which answers 401 invalid_token.
        Ok(Self(Some(RawSecret::new(token.to_owned()))))
    }
}

/// The one value of header `name`, if sent; a second copy is refused (which copy a proxy or
/// the application would read is anyone's guess).
pub fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a HeaderValue>, ApiError> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidHeader,
            format!("send {name} at most once"),
        ));
    }
    Ok(first)
}

/// The one `Authorization` header, if any; more than one is refused.
pub fn single_authorization(parts: &Parts) -> Result<Option<&HeaderValue>, ApiError> {
    single_header(&parts.headers, &AUTHORIZATION)
        .map_err(|_| ApiError::invalid_request("send exactly one Authorization header"))
}

impl Bearer {
    /// The credential text, if a header was sent.
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_ref().map(RawSecret::expose)
    }
}

/// A token id from the path (`/v1/tokens/{id}`). A path that does not decode (invalid UTF-8) or
/// does not name a token id names no token: the same JSON 404 as any other missing one, never
/// axum's plain-text rejection.
pub struct TokenIdPath(pub TokenId);

impl<S: Send + Sync> FromRequestParts<S> for TokenIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found())?;
        TokenId::parse(&id)
            .map(Self)
            .map_err(|_| ApiError::not_found())
    }
}

/// A `usr_…` path segment; anything else is a 404, as an unknown id is.
pub struct UserIdPath(pub UserId);

impl<S: Send + Sync> FromRequestParts<S> for UserIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found())?;
        UserId::parse(&id)
            .map(Self)
            .map_err(|_| ApiError::not_found())
    }
}

/// The client's address: the peer of the connection or, when the peer is a trusted proxy
/// (`trusted_proxies`), the address its forwarding headers name, by the rules of
/// `http/client_addr.rs`. `None` when unknown: a forwarding chain that does not say, or a
/// request that came through no listener.
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(client_ip(&parts.extensions, &parts.headers)))
    }
}

/// The `limit` of a paged listing as sent: 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when absent.
/// Anything else is refused (400 `invalid_query`) rather than clamped, as the document says,
/// and with a message of ours rather than the deserializer's.
pub fn page_limit(raw: Option<&str>) -> Result<u32, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_PAGE);
    };
    raw.parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_PAGE).contains(n))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidQuery,
                format!("`limit` must be a whole number from 1 to {MAX_PAGE}"),
            )
        })
}
