//! `/v1/auth`: forward authentication for nginx `auth_request`, Traefik `ForwardAuth` and Caddy
//! `forward_auth`. The proxy sends the client's `Authorization` header (and the original method
//! and URI); keyward answers 200 with who the caller is in `X-Keyward-*` headers for the
//! upstream, or 401/403 with an RFC 6750 challenge for the client.
//!
//! The scopes the request needs come from `X-Keyward-Scope` (space-separated) when the proxy
//! sets it, else from the configured route table matched against `X-Forwarded-Method` /
//! `X-Forwarded-Uri` (Traefik, Caddy) or `X-Original-Method` / `X-Original-URI` (nginx). With
//! neither a header nor a matching route, any active token passes: authentication only.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_core::Scopes;
use std::borrow::Cow;
use std::sync::Arc;

use super::error::ApiError;
use super::extract::{Bearer, ClientIp};
use crate::service::{Keyward, ServiceError};

/// Request header: the scopes this request needs, space-separated.
pub const SCOPE_HEADER: HeaderName = HeaderName::from_static("x-keyward-scope");
/// Response header: the token's id.
pub const TOKEN_ID_HEADER: HeaderName = HeaderName::from_static("x-keyward-token-id");
/// Response header: the owner's user name.
pub const OWNER_HEADER: HeaderName = HeaderName::from_static("x-keyward-owner");
/// Response header: the owner's user id.
pub const OWNER_ID_HEADER: HeaderName = HeaderName::from_static("x-keyward-owner-id");
/// Response header: the token's scopes, space-separated.
pub const SCOPES_HEADER: HeaderName = HeaderName::from_static("x-keyward-scopes");

/// Where proxies put the original request's method and URI, in order of preference. Built
/// names, not strings: a lookup by string parses the name first.
const METHOD_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("x-forwarded-method"),
    HeaderName::from_static("x-original-method"),
];
const URI_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("x-forwarded-uri"),
    HeaderName::from_static("x-original-uri"),
];

fn first_header<'a>(headers: &'a HeaderMap, names: &[HeaderName]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|name| headers.get(name))
        .and_then(|v| v.to_str().ok())
}

/// The scopes the proxied request needs (see the module docs).
fn required_scopes<'a>(kw: &'a Keyward, headers: &HeaderMap) -> Result<Cow<'a, Scopes>, ApiError> {
    if let Some(value) = headers.get(&SCOPE_HEADER) {
        let text = value.to_str().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "X-Keyward-Scope must be space-separated scopes",
            )
        })?;
        let scopes = Scopes::parse_space_separated(text).map_err(ServiceError::from)?;
        return Ok(Cow::Owned(scopes));
    }
    let uri = first_header(headers, &URI_HEADERS);
    let method = first_header(headers, &METHOD_HEADERS).unwrap_or("");
    Ok(uri
        .and_then(|uri| kw.settings().forward_auth.required(method, uri))
        .map_or_else(|| Cow::Owned(Scopes::default()), Cow::Borrowed))
}

/// `/v1/auth` (any method): forward authentication.
#[utoipa::path(
    get, path = "/v1/auth", tag = "forward-auth",
    description = "Forward authentication for reverse proxies; answers any method the same way. \
        The scopes needed come from `X-Keyward-Scope`, else from the configured route table \
        matched against the original method and URI; with neither, any active token passes.",
    params(
        ("X-Keyward-Scope" = Option<String>, Header, description = "Scopes the request needs, space-separated"),
        ("X-Forwarded-Method" = Option<String>, Header, description = "Original method (Traefik, Caddy)"),
        ("X-Forwarded-Uri" = Option<String>, Header, description = "Original URI (Traefik, Caddy)"),
        ("X-Original-Method" = Option<String>, Header, description = "Original method (nginx)"),
        ("X-Original-URI" = Option<String>, Header, description = "Original URI (nginx)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token is active and grants the scopes; the headers are for the upstream",
         headers(
            ("X-Keyward-Token-Id" = String, description = "The token's id"),
            ("X-Keyward-Owner" = String, description = "The owner's user name"),
            ("X-Keyward-Owner-Id" = String, description = "The owner's user id"),
            ("X-Keyward-Scopes" = String, description = "The token's scopes, space-separated"),
         )),
        (status = 400, description = "Several Authorization headers, or an X-Keyward-Scope that is not scopes", body = super::openapi::ErrorResponse),
        (status = 401, description = "No token (challenge without error code), or not an active token (`invalid_token`)",
         body = super::openapi::ErrorResponse,
         headers(("WWW-Authenticate" = String, description = "RFC 6750 Bearer challenge"))),
        (status = 403, description = "The token lacks a needed scope (`insufficient_scope`, with `scope`)",
         body = super::openapi::ErrorResponse,
         headers(("WWW-Authenticate" = String, description = "RFC 6750 Bearer challenge"))),
        (status = 503, description = "The token store is unavailable", body = super::openapi::ErrorResponse),
    )
)]
pub async fn forward_auth(
    State(kw): State<Arc<Keyward>>,
    bearer: Bearer,
    ip: ClientIp,
    // The whole request rather than a `HeaderMap` extractor, which would clone every header.
    request: Request,
) -> Result<Response, ApiError> {
    let wanted = required_scopes(&kw, request.headers())?;
    let response = kw
        .authorize(bearer.as_deref(), &wanted, ip.0, |token| {
            let mut response = StatusCode::OK.into_response();
            let out = response.headers_mut();
            // Ids, user names and scopes are ASCII by construction; a failure would only drop a
            // header.
            for (name, value) in [
                (TOKEN_ID_HEADER, token.id_text().as_str()),
                (OWNER_HEADER, token.owner_name().as_str()),
                (OWNER_ID_HEADER, token.owner_id().as_str()),
            ] {
                if let Ok(value) = HeaderValue::from_str(value) {
                    out.insert(name, value);
                }
            }
            if let Ok(value) = HeaderValue::from_str(&token.scopes().to_string()) {
                out.insert(SCOPES_HEADER, value);
            }
            response
        })
        .await?;
    Ok(response)
}
