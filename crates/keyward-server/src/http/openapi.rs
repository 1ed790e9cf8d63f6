//! The OpenAPI 3.1 document, generated from the handlers' annotations and the wire types, and
//! served at `GET /openapi.json`; and the router of the standard interfaces (OAuth,
//! forward-auth, the document itself).
//!
//! Response bodies that carry domain types (token records, audit events) are described by the
//! schema types below, which mirror their serialized form; the `it` tests check served answers
//! against the document, and CI runs schemathesis against it.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use std::sync::{Arc, LazyLock};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{OneOfBuilder, Ref, Schema};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::wire;
use crate::service::Keyward;

/// The routes of the standard interfaces, merged into [`super::app`].
pub fn routes() -> Router<Arc<Keyward>> {
    Router::new()
        .route("/oauth/introspect", post(super::oauth::introspect_token))
        .route("/oauth/revoke", post(super::oauth::revoke_token_by_secret))
        .route("/v1/auth", any(super::forward_auth::forward_auth))
        .route("/openapi.json", get(openapi_json))
}

/// keyward's API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "keyward",
        description = "Personal access tokens: create, verify, revoke. Errors are \
            `{\"error\": {\"code\", \"message\"}}` except on the OAuth endpoints, which answer in \
            RFC 6749 §5.2's shape. Every 401/403 of a Bearer-protected endpoint carries an RFC 6750 \
            `WWW-Authenticate` challenge.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::tokens::create_token,
        super::tokens::list_tokens,
        super::tokens::get_self,
        super::tokens::regenerate_self,
        super::tokens::get_token,
        super::tokens::update_token,
        super::tokens::revoke_token,
        super::tokens::regenerate_token,
        super::tokens::list_audit,
        super::verify::verify_token,
        super::forward_auth::forward_auth,
        super::oauth::introspect_token,
        super::oauth::revoke_token_by_secret,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        openapi_json,
    ),
    components(schemas(
        ErrorResponse, ErrorDetail, OAuthErrorSchema, Token, TokenState, TokenResponse,
        IssuedTokenResponse, TokenListResponse, VerifyAnswer, VerifyActive, VerifyInactive,
        InactiveReason, Owner, AuditEvent, Actor, AuditListResponse, Status,
        wire::CreateTokenRequest, wire::UpdateTokenRequest, wire::RegenerateTokenRequest,
        wire::RevokeTokenRequest, wire::VerifyRequest, wire::OAuthTokenRequest,
        wire::IntrospectionResponse, wire::InactiveIntrospectionResponse, IntrospectionAnswer,
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "tokens", description = "Managing one's tokens"),
        (name = "verify", description = "The verification hot path"),
        (name = "forward-auth", description = "Forward authentication for reverse proxies"),
        (name = "oauth", description = "RFC 7662 introspection and RFC 7009 revocation"),
        (name = "ops", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// The document as served, built once.
pub static OPENAPI_JSON: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_json().unwrap_or_default());

/// `GET /openapi.json`: this API's OpenAPI 3.1 document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON.as_str(),
    )
        .into_response()
}

// ---------------------------------------------------------------- schemas of the wire format

/// Every error outside the OAuth endpoints.
#[derive(ToSchema)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error's code and message.
#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `unauthenticated`, `invalid_token`, `insufficient_scope`,
    /// `not_found`, `invalid_body`, …
    pub code: String,
    /// For people.
    pub message: String,
}

/// RFC 6749 §5.2: errors of `/oauth/introspect` and `/oauth/revoke`.
#[derive(ToSchema)]
#[schema(as = OAuthError)]
pub struct OAuthErrorSchema {
    /// `invalid_request`, `invalid_client`, `invalid_token`, `insufficient_scope`,
    /// `unauthorized_client`, `temporarily_unavailable`, `server_error`.
    pub error: String,
    /// For people.
    pub error_description: String,
}

/// A token's state now.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum TokenState {
    /// Works.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

/// A token as the API shows it: never the secret.
#[derive(ToSchema)]
pub struct Token {
    /// Public id, `tok_…`.
    pub id: String,
    /// The owner's user id.
    pub owner: String,
    /// The owner's label for it.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// Prefix and last four characters of the current secret.
    pub hint: String,
    /// When it was made.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it stops working; null = never.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// When its secret was last regenerated.
    #[schema(format = DateTime)]
    pub regenerated_at: Option<String>,
    /// When it was last used (recorded in batches, up to a few seconds late).
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
    /// The client address of that use.
    pub last_used_ip: Option<String>,
    /// When it was revoked.
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
    /// Why.
    pub revoke_reason: Option<String>,
    /// Its state now.
    pub state: TokenState,
}

/// One token.
#[derive(ToSchema)]
pub struct TokenResponse {
    /// The token.
    pub token: Token,
}

/// A token with its secret: only from create and regenerate (`Cache-Control: no-store`).
#[derive(ToSchema)]
pub struct IssuedTokenResponse {
    /// The token.
    pub token: Token,
    /// The secret, shown this once.
    pub secret: String,
}

/// A page of tokens, newest first.
#[derive(ToSchema)]
pub struct TokenListResponse {
    /// The tokens.
    pub tokens: Vec<Token>,
    /// Pass as `after` for the next page; null on the last.
    pub next: Option<String>,
}

/// A token's owner.
#[derive(ToSchema)]
pub struct Owner {
    /// User id.
    pub id: String,
    /// User name.
    pub name: String,
}

/// `POST /v1/verify` for an active token.
#[derive(ToSchema)]
pub struct VerifyActive {
    /// Always true.
    pub active: bool,
    /// The token's id.
    pub token_id: String,
    /// Its owner.
    pub owner: Owner,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Its expiry; null = never.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

/// Why a token was refused.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum InactiveReason {
    /// Not a keyward token, or a bad checksum (refused before any lookup).
    Malformed,
    /// No such token.
    Unknown,
    /// Past its expiry.
    Expired,
    /// Revoked, or replaced by a regeneration.
    Revoked,
    /// Lacks a scope asked for.
    InsufficientScope,
    /// Its owner is disabled.
    OwnerDisabled,
}

/// `POST /v1/verify` for any other token.
#[derive(ToSchema)]
pub struct VerifyInactive {
    /// Always false.
    pub active: bool,
    /// Why.
    pub reason: InactiveReason,
}

/// The verification answer: one of two shapes, told apart by `active`.
pub struct VerifyAnswer;

impl utoipa::PartialSchema for VerifyAnswer {
    fn schema() -> RefOr<Schema> {
        one_of(&["VerifyActive", "VerifyInactive"])
    }
}

impl ToSchema for VerifyAnswer {}

/// RFC 7662's answer: one of two shapes, told apart by `active`.
pub struct IntrospectionAnswer;

impl utoipa::PartialSchema for IntrospectionAnswer {
    fn schema() -> RefOr<Schema> {
        one_of(&["IntrospectionResponse", "InactiveIntrospectionResponse"])
    }
}

impl ToSchema for IntrospectionAnswer {}

fn one_of(names: &[&str]) -> RefOr<Schema> {
    names
        .iter()
        .fold(OneOfBuilder::new(), |b, name| {
            b.item(Ref::from_schema_name(*name))
        })
        .into()
}

/// Who did something.
#[derive(ToSchema)]
pub struct Actor {
    /// The acting user.
    pub user: Option<String>,
    /// The token they acted with.
    pub token: Option<String>,
    /// A readable description.
    pub label: String,
}

/// One audit event.
#[derive(ToSchema)]
pub struct AuditEvent {
    /// Position in the trail.
    pub seq: i64,
    /// When.
    #[schema(format = DateTime)]
    pub at: String,
    /// What: `token.created`, `token.revoked`, …
    pub kind: String,
    /// Who.
    pub actor: Actor,
    /// The user it concerns.
    pub subject_user: Option<String>,
    /// The token it concerns.
    pub token_id: Option<String>,
    /// The client address.
    pub ip: Option<String>,
    /// A reason or detail.
    pub detail: Option<String>,
}

/// A page of audit events, newest first.
#[derive(ToSchema)]
pub struct AuditListResponse {
    /// The events.
    pub events: Vec<AuditEvent>,
    /// Pass as `before` for the next page; null on the last.
    pub next: Option<i64>,
}

/// `{"status": ...}` of `/healthz` and `/readyz`.
#[derive(ToSchema)]
pub struct Status {
    /// `ok` or `ready`.
    pub status: String,
}
