//! Request and response bodies, kept apart from the domain types they carry.

use keyward_core::{
    InactiveReason, RawSecret, Scopes, TokenId, TokenIdText, TokenRecord, TokenState, UserId,
};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::service::AuditPage;

/// `POST /v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// The token's label.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// `30d`, an RFC 3339 time, or `never`; the deployment default when absent.
    pub expires: Option<String>,
}

/// `PATCH /v1/tokens/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTokenRequest {
    /// The new label.
    pub name: String,
}

/// `POST /v1/tokens/{id}/regenerate` (body optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegenerateTokenRequest {
    /// How long the old secret keeps working, e.g. `10m`.
    pub grace_period: Option<String>,
    /// A new expiry; by default the token keeps the one it has. A token acting cannot set one
    /// later than its own: a later one asked for is clamped to it.
    pub expires: Option<String>,
}

/// `DELETE /v1/tokens/{id}` (body optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeTokenRequest {
    /// Why, for the audit trail.
    pub reason: Option<String>,
}

/// `POST /v1/verify`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The presented token.
    #[schema(value_type = String)]
    pub token: RawSecret,
    /// Scopes the request needs.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The end client's address, recorded as last-used IP.
    #[schema(value_type = Option<String>)]
    pub ip: Option<IpAddr>,
}

/// Paging for listings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size (1 to 100, default 50).
    pub limit: Option<u32>,
    /// The `next` value of the previous page.
    pub after: Option<String>,
}

/// Paging for the audit trail.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Page size (1 to 100, default 50).
    pub limit: Option<u32>,
    /// The `next` value of the previous page.
    pub before: Option<i64>,
}

/// A token as the API shows it: the record plus its state now.
#[derive(Debug, Serialize)]
pub struct TokenView {
    /// The record.
    #[serde(flatten)]
    pub record: TokenRecord,
    /// `active`, `expired` or `revoked`.
    pub state: TokenState,
}

impl TokenView {
    /// The view of `record` at `now`.
    pub fn new(record: TokenRecord, now: OffsetDateTime) -> Self {
        let state = record.state(now);
        Self { record, state }
    }
}

/// One token.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// The token.
    pub token: TokenView,
}

/// A token with its secret: only from create and regenerate.
#[derive(Serialize)]
pub struct IssuedResponse<'a> {
    /// The token.
    pub token: TokenView,
    /// The secret, shown this once.
    pub secret: &'a str,
}

/// A page of tokens.
#[derive(Debug, Serialize)]
pub struct TokenListResponse {
    /// Newest first.
    pub tokens: Vec<TokenView>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next: Option<TokenId>,
}

/// The owner in a verification answer.
#[derive(Debug, Serialize)]
pub struct OwnerView<'a> {
    /// User id.
    pub id: &'a UserId,
    /// User name.
    pub name: &'a str,
}

/// `POST /v1/verify` for an active token.
#[derive(Debug, Serialize)]
pub struct ActiveResponse<'a> {
    /// Always true.
    pub active: bool,
    /// The token's id.
    pub token_id: TokenIdText,
    /// Its owner.
    pub owner: OwnerView<'a>,
    /// Its scopes.
    pub scopes: &'a Scopes,
    /// Its expiry.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// `POST /v1/verify` for anything else.
#[derive(Debug, Serialize)]
pub struct InactiveResponse {
    /// Always false.
    pub active: bool,
    /// Why.
    pub reason: InactiveReason,
}

/// One audit event.
#[derive(Debug, Serialize)]
pub struct AuditEventView {
    /// Position in the trail.
    pub seq: i64,
    /// The event.
    #[serde(flatten)]
    pub event: keyward_core::AuditEvent,
}

/// A page of audit events.
#[derive(Debug, Serialize)]
pub struct AuditListResponse {
    /// Newest first.
    pub events: Vec<AuditEventView>,
    /// Pass as `before` for the next page; `null` on the last.
    pub next: Option<i64>,
}

impl AuditListResponse {
    /// The answer for one page of the trail.
    pub fn new(page: AuditPage) -> Self {
        let AuditPage { events, next } = page;
        Self {
            events: events
                .into_iter()
                .map(|e| AuditEventView {
                    seq: e.seq,
                    event: e.event,
                })
                .collect(),
            next,
        }
    }
}

/// `POST /oauth/introspect` and `POST /oauth/revoke` (form-encoded). Unknown parameters are
/// ignored, as RFC 6749 §3.1 requires.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OAuthTokenRequest {
    /// The token asked about (or to revoke).
    #[schema(value_type = String)]
    pub token: RawSecret,
    /// `access_token` or `refresh_token`; a hint only, ignored (keyward has one kind of token).
    pub token_type_hint: Option<String>,
}

/// RFC 7662 §2.2: the answer for an active token. `client_id` is left out: a personal access
/// token is issued to a person (`username`, `sub`), not to an OAuth client.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntrospectionResponse<'a> {
    /// Always true.
    pub active: bool,
    /// The token's scopes, space-separated.
    pub scope: String,
    /// The owner's user name.
    pub username: &'a str,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Expiry, seconds since the epoch; absent for a token that never expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// When this secret was issued, seconds since the epoch.
    pub iat: i64,
    /// The owner's user id.
    #[schema(value_type = String)]
    pub sub: &'a UserId,
    /// The token's id.
    #[schema(value_type = String)]
    pub jti: TokenIdText,
}

/// RFC 7662 §2.2: the whole answer for any token that is not active, whatever the reason.
#[derive(Debug, Serialize, ToSchema)]
pub struct InactiveIntrospectionResponse {
    /// Always false.
    pub active: bool,
}

/// Longest answer [`json_response`] expects; a longer one costs a reallocation, nothing more.
const ANSWER_CAPACITY: usize = 384;

/// A small JSON answer (the hot endpoints' answers), serialized into one buffer sized for it
/// and handed to the body without a copy.
pub fn json_response(value: &impl Serialize) -> axum::response::Response {
    use axum::http::{HeaderValue, header::CONTENT_TYPE};
    use axum::response::IntoResponse;
    let mut body = Vec::with_capacity(ANSWER_CAPACITY);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => (
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response(),
        Err(e) => super::ApiError::from(crate::service::ServiceError::Internal(e.to_string()))
            .into_response(),
    }
}
