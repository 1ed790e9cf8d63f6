//! The OAuth endpoints gateways already speak: `POST /oauth/introspect` (RFC 7662) and
//! `POST /oauth/revoke` (RFC 7009). The caller authenticates with a keyward token, as
//! `Authorization: Bearer <token>` or as HTTP Basic with the token as the password (any user
//! name), since many gateways only know how to send client credentials that way. Errors take
//! RFC 6749 §5.2's shape ([`ApiError::for_oauth`]).

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use keyward_core::RawSecret;
use std::sync::Arc;

use super::error::{ApiError, AuthScheme};
use super::extract::{ClientIp, single_authorization};
use super::wire::{
    ErrorCode, IntrospectionAnswer, OAuthErrorResponse, OAuthStoreUnavailable, OAuthTokenRequest,
};
use crate::service::{Action, Keyward, SecretRevocation};

/// The caller's credential on an OAuth endpoint: a Bearer token, or HTTP Basic whose password
/// is the token.
pub struct ClientCredential {
    /// How it was sent; `None` when no `Authorization` header was, or its scheme is neither.
    pub scheme: Option<AuthScheme>,
    /// The token, when one was sent (empty, hence malformed, for an unreadable header).
    pub secret: Option<RawSecret>,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientCredential {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = single_authorization(parts).map_err(|e| e.for_oauth(None))? else {
            return Ok(Self {
                scheme: None,
                secret: None,
            });
        };
        let text = value.to_str().unwrap_or("");
        let (scheme, credential) = text.split_once(' ').unwrap_or((text, ""));
        let credential = credential.trim();
        let (scheme, secret) = if scheme.eq_ignore_ascii_case("bearer") {
            (Some(AuthScheme::Bearer), credential.to_owned())
        } else if scheme.eq_ignore_ascii_case("basic") {
            (Some(AuthScheme::Basic), basic_password(credential))
        } else {
            (None, String::new())
        };
        Ok(Self {
            scheme,
            secret: Some(RawSecret::new(secret)),
        })
    }
}

impl ClientCredential {
    fn as_deref(&self) -> Option<&str> {
        self.secret.as_ref().map(RawSecret::expose)
    }
}

/// The password of an HTTP Basic credential (RFC 7617), or empty when it is not one.
fn basic_password(credential: &str) -> String {
    let decoded = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(credential)
            .unwrap_or_default(),
    );
    std::str::from_utf8(&decoded)
        .ok()
        .and_then(|pair| pair.split_once(':'))
        .map(|(_, password)| password.to_owned())
        .unwrap_or_default()
}

/// The form body, or RFC 6749's `invalid_request`.
fn form(
    body: Result<Form<OAuthTokenRequest>, FormRejection>,
) -> Result<OAuthTokenRequest, ApiError> {
    body.map(|Form(req)| req).map_err(|rejection| {
        let message = match rejection {
            FormRejection::InvalidFormContentType(_) => {
                "send the body as application/x-www-form-urlencoded".to_owned()
            }
            other => format!("the body is not a token request: {}", other.body_text()),
        };
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message).for_oauth(None)
    })
}

/// RFC 6749 §5.1 (which RFC 7662 and RFC 7009 follow): token answers are never cached.
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `POST /oauth/introspect` (RFC 7662): is this token active, and what is it?
#[utoipa::path(
    post, path = "/oauth/introspect", tag = "oauth",
    request_body(content = OAuthTokenRequest, content_type = "application/x-www-form-urlencoded"),
    security(("bearer" = ["tokens:introspect"]), ("basic" = [])),
    responses(
        (status = 200, description = "The token's state: `{\"active\": false}` and nothing else for any inactive token",
         body = IntrospectionAnswer<'static>),
        (status = 400, description = "The body is not a token request", body = OAuthErrorResponse<'static>),
        (status = 401, description = "The caller is not an active token with `tokens:introspect` (RFC 7662 §2.3)",
         body = OAuthErrorResponse<'static>,
         headers(("WWW-Authenticate" = String, description = "Bearer and/or Basic challenge"))),
        OAuthStoreUnavailable,
    )
)]
pub async fn introspect_token(
    State(kw): State<Arc<Keyward>>,
    credential: ClientCredential,
    ip: ClientIp,
    body: Result<Form<OAuthTokenRequest>, FormRejection>,
) -> Result<Response, ApiError> {
    let oauth = |e: crate::service::ServiceError| ApiError::from(e).for_oauth(credential.scheme);
    let caller = kw
        .authenticate(credential.as_deref(), ip.0, Action::Introspect)
        .await
        .map_err(oauth)?;
    let req = form(body)?;
    let token = kw
        .introspect(&caller, req.token.expose())
        .await
        .map_err(oauth)?;
    let answer = axum::Json(IntrospectionAnswer::new(token.as_ref())).into_response();
    Ok(no_store(answer))
}

/// `POST /oauth/revoke` (RFC 7009): revokes the token; 200 also when there was nothing to
/// revoke.
#[utoipa::path(
    post, path = "/oauth/revoke", tag = "oauth",
    request_body(content = OAuthTokenRequest, content_type = "application/x-www-form-urlencoded"),
    security(("bearer" = []), ("basic" = [])),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke (unknown, malformed or already revoked token: RFC 7009 §2.2)"),
        (status = 400, description = "`invalid_request`: not a token request; `unauthorized_client`: the token is another user's, or the caller is another of its owner's tokens without `tokens:delete`",
         body = OAuthErrorResponse<'static>),
        (status = 401, description = "The caller is not an active token", body = OAuthErrorResponse<'static>,
         headers(("WWW-Authenticate" = String, description = "Bearer and/or Basic challenge"))),
        OAuthStoreUnavailable,
    )
)]
pub async fn revoke_token_by_secret(
    State(kw): State<Arc<Keyward>>,
    credential: ClientCredential,
    ip: ClientIp,
    body: Result<Form<OAuthTokenRequest>, FormRejection>,
) -> Result<Response, ApiError> {
    let oauth = |e: crate::service::ServiceError| ApiError::from(e).for_oauth(credential.scheme);
    let caller = kw
        .authenticate(credential.as_deref(), ip.0, Action::RevokeBySecret)
        .await
        .map_err(oauth)?;
    let req = form(body)?;
    match kw
        .revoke_by_secret(&caller, req.token.expose())
        .await
        .map_err(oauth)?
    {
        SecretRevocation::Revoked(_)
        | SecretRevocation::AlreadyRevoked
        | SecretRevocation::NoSuchToken => Ok(no_store(StatusCode::OK.into_response())),
    }
}
