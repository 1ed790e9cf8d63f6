//! `/v1/auth`: forward authentication for nginx `auth_request`, Traefik `ForwardAuth` and Caddy
//! `forward_auth`. The proxy sends the client's `Authorization` header (and the original method
//! and URI); keyward answers 200 with who the caller is in `X-Keyward-*` headers for the
//! upstream, or 401/403 with an RFC 6750 challenge for the client.
//!
//! What the request needs:
//! - with no route table configured, the scopes in `X-Keyward-Scope` (space-separated) when the
//!   proxy sets it, else any active token;
//! - with a route table, the scopes of the route the original method and path match (see
//!   [`crate::service::gateway::normalize_path`] for how paths are compared), plus those of
//!   `X-Keyward-Scope` if set; a request no route matches is refused (403) unless the table has
//!   a catch-all route.
//!
//! The original request comes from `X-Original-Method` / `X-Original-URI` (nginx) or
//! `X-Forwarded-Method` / `X-Forwarded-Uri` (Traefik, Caddy). A proxy may pass on headers the
//! client sent, so when both are present they must agree, and every header that decides the
//! answer must be sent at most once: anything else is refused (400), never guessed.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_core::Scopes;
use std::borrow::Cow;
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;

use super::error::ApiError;
use super::extract::{Bearer, ClientIp, single_header};
use super::wire::ErrorCode;
use crate::service::gateway::RouteDecision;
use crate::service::{Keyward, ServiceError};

/// Request header: the scopes this request needs, space-separated.
pub const SCOPE_HEADER: HeaderName = HeaderName::from_static("x-keyward-scope");
/// Response header: the token's id.
pub const TOKEN_ID_HEADER: HeaderName = HeaderName::from_static("x-keyward-token-id");
/// Response header: the owner's user name.
pub const OWNER_HEADER: HeaderName = HeaderName::from_static("x-keyward-owner");
/// Response header: the owner's user id.
pub const OWNER_ID_HEADER: HeaderName = HeaderName::from_static("x-keyward-owner-id");
/// Response header: the owner's external id (the platform's own id for them); empty when the
/// platform gave none, so a proxy that copies it always overwrites what a client sent.
pub const OWNER_EXTERNAL_ID_HEADER: HeaderName =
    HeaderName::from_static("x-keyward-owner-external-id");
/// Response header: the token's scopes, space-separated.
pub const SCOPES_HEADER: HeaderName = HeaderName::from_static("x-keyward-scopes");
/// Response header: when the token expires (RFC 3339, UTC), as GitHub's API tells a client when
/// its token expires; absent when it never does.
pub const TOKEN_EXPIRES_HEADER: HeaderName = HeaderName::from_static("x-keyward-token-expires");

/// nginx's names for the original request (set with `proxy_set_header`). Built names, not
/// strings: a lookup by string parses the name first.
const ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
/// Traefik's and Caddy's names for the original request.
const FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

fn bad_header(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidHeader, message)
}

/// The one value of `name`, if sent: a second copy is refused, as is a value that is not
/// visible ASCII.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ApiError> {
    single_header(headers, name)?
        .map(|value| {
            value
                .to_str()
                .map_err(|_| bad_header(format!("{name} must be visible ASCII")))
        })
        .transpose()
}

/// One fact about the original request from the two places proxies put it; when both are
/// present they must agree (a client may have sent one of them through the proxy).
fn original<'a>(
    headers: &'a HeaderMap,
    nginx: &HeaderName,
    forwarded: &HeaderName,
) -> Result<Option<&'a str>, ApiError> {
    match (single(headers, nginx)?, single(headers, forwarded)?) {
        (Some(a), Some(b)) if a != b => Err(bad_header(format!(
            "{nginx} and {forwarded} disagree; the proxy must set one and remove the other"
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

/// The scopes the proxied request needs (see the module docs).
fn required_scopes<'a>(kw: &'a Keyward, headers: &HeaderMap) -> Result<Cow<'a, Scopes>, ApiError> {
    let from_header = match single(headers, &SCOPE_HEADER)? {
        Some(text) => Some(Scopes::parse_space_separated(text.trim()).map_err(ServiceError::from)?),
        None => None,
    };
    // Checked with or without a route table: a duplicated or contradictory original request is
    // a misconfigured proxy or a forging client either way.
    let method = original(headers, &ORIGINAL_METHOD, &FORWARDED_METHOD)?;
    let uri = original(headers, &ORIGINAL_URI, &FORWARDED_URI)?;
    let routes = &kw.settings().forward_auth;
    let decision = if routes.is_empty() {
        RouteDecision::NoTable
    } else {
        let (Some(method), Some(uri)) = (method, uri) else {
            return Err(bad_header(
                "the route table needs the original method and URI: the proxy must send \
                 X-Original-Method and X-Original-URI (nginx) or X-Forwarded-Method and \
                 X-Forwarded-Uri (Traefik, Caddy)",
            ));
        };
        routes.decide(method.trim(), uri.trim()).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidUri,
                e.to_string(),
            )
        })?
    };
    match (decision, from_header) {
        (RouteDecision::NoRoute, _) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::NoRoute,
            "no forward-auth route matches this method and path, and the route table has no catch-all",
        )),
        (RouteDecision::NoTable, header) => Ok(Cow::Owned(header.unwrap_or_default())),
        (RouteDecision::Needs(route), None) => Ok(Cow::Borrowed(route)),
        (RouteDecision::Needs(route), Some(header)) => Ok(Cow::Owned(Scopes::new(
            route.iter().chain(header.iter()).cloned(),
        ))),
    }
}

/// `/v1/auth` (any method): forward authentication.
#[utoipa::path(
    method(get, post, put, patch, delete, head, options, trace), path = "/v1/auth", tag = "forward-auth",
    description = "Forward authentication for reverse proxies; answers every method the same way. \
        Without a route table, the scopes needed come from `X-Keyward-Scope` (none: any active \
        token passes). With a route table, the route matching the original method and the \
        normalized path decides (plus `X-Keyward-Scope` if set), and a request no route matches \
        is refused unless the table has a catch-all. Headers that decide the answer must be \
        sent once; X-Original-* and X-Forwarded-* must agree when both are sent. A token's \
        `allowed_ips` are checked against the client address: the connection's peer, or, when \
        the peer is in `trusted_proxies`, the right-most address of `Forwarded` / \
        `X-Forwarded-For` / `X-Real-IP` outside those ranges (when more than one of them is \
        sent, each must name the same client, or the client is unknown and refused).",
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
            ("X-Keyward-Owner-External-Id" = String, description = "The owner's external id (the platform's id for them); empty when none was given"),
            ("X-Keyward-Scopes" = String, description = "The token's scopes, space-separated"),
            ("X-Keyward-Token-Expires" = String, description = "When the token expires (RFC 3339, UTC); absent when it never does"),
            ("RateLimit-Policy" = String, description = "With a rate limit on the token: `\"token\";q=<requests>;w=<seconds>` (IETF draft-ietf-httpapi-ratelimit-headers), for the proxy to hand to the client"),
            ("RateLimit" = String, description = "With a rate limit on the token: `\"token\";r=<left>;t=<seconds to the window's end>`"),
         )),
        (status = 400, description = "A deciding header sent twice, X-Original-* and X-Forwarded-* that disagree, an original URI that is ambiguous, or an X-Keyward-Scope that is not scopes", body = super::wire::ErrorResponse<'static>),
        (status = 403, description = "The token lacks a needed scope (`insufficient_scope`, with `scope`), no route matches (`no_route`), or the client address is outside the token's `allowed_ips` (`ip_not_allowed`)",
         body = super::wire::ErrorResponse<'static>,
         headers(("WWW-Authenticate" = String, description = "RFC 6750 Bearer challenge"))),
        super::wire::Limited,
        super::wire::Unauthenticated,
        super::wire::StoreUnavailable,
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
        .authorize(bearer.as_deref(), &wanted, ip.0, |token, allowance| {
            let mut response = StatusCode::OK.into_response();
            let out = response.headers_mut();
            // Ids, user names, external ids and scopes are printable ASCII by construction; a
            // failure would only drop a header.
            for (name, value) in [
                (TOKEN_ID_HEADER, token.id_text().as_str()),
                (OWNER_HEADER, token.owner_name().as_str()),
                (OWNER_ID_HEADER, token.owner_id().as_str()),
                (
                    OWNER_EXTERNAL_ID_HEADER,
                    token.owner_external_id().map_or("", |e| e.as_str()),
                ),
            ] {
                if let Ok(value) = HeaderValue::from_str(value) {
                    out.insert(name, value);
                }
            }
            if let Ok(value) = HeaderValue::from_str(&token.scopes().to_string()) {
                out.insert(SCOPES_HEADER, value);
            }
            if let Some(expires) = token.expires_at()
                && let Ok(text) = expires.format(&Rfc3339)
                && let Ok(value) = HeaderValue::from_str(&text)
            {
                out.insert(TOKEN_EXPIRES_HEADER, value);
            }
            // The proxy may hand the token's rate limit to the client.
            if let Some(rate) = &allowance.rate {
                for (name, value) in super::error::rate_limit_headers(rate) {
                    out.insert(name, value);
                }
            }
            response
        })
        .await?;
    Ok(response)
}
