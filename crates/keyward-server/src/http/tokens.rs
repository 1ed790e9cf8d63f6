//! `/v1/tokens`: create, list, get, rename, regenerate, revoke; and `/v1/audit`.

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward_core::{ExpiryRequest, Scope, Scopes, TokenId, TokenName, expiry::parse_grace};
use std::sync::Arc;

use super::error::ApiError;
use super::extract::{ApiJson, Bearer, ClientIp, OptionalJson, TokenIdPath, page_limit};
use super::wire::{
    AuditListResponse, AuditQuery, BearerErrors, BulkRevokeRequest, BulkRevokeResponse,
    CreateTokenRequest, ErrorCode, ErrorResponse, IssuedTokenResponse, JsonBodyErrors, ListQuery,
    RegenerateTokenRequest, RevokeTokenRequest, StoreUnavailable, TokenListResponse, TokenResponse,
    Unauthenticated, UpdateTokenRequest,
};
use crate::service::{Action, Caller, Issued, Keyward, RegenerateOptions, ServiceError};

type Kw = State<Arc<Keyward>>;

/// The caller behind the bearer token, if it may take `action` (refused before the body is read).
pub(super) async fn caller(
    kw: &Keyward,
    bearer: &Bearer,
    ip: ClientIp,
    action: Action,
) -> Result<Caller, ApiError> {
    Ok(kw.authenticate(bearer.as_deref(), ip.0, action).await?)
}

pub(super) fn parse_expiry(expires: Option<&str>) -> Result<Option<ExpiryRequest>, ApiError> {
    Ok(expires
        .map(ExpiryRequest::parse)
        .transpose()
        .map_err(ServiceError::from)?)
}

/// The secret leaves the server in this response only: never cached by anything on the way.
pub(super) fn issued_response(kw: &Keyward, status: StatusCode, issued: Issued) -> Response {
    let body = IssuedTokenResponse::new(issued.token, issued.secret.expose(), kw.now());
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn token_response(kw: &Keyward, record: keyward_core::TokenRecord) -> Response {
    axum::Json(TokenResponse::new(record, kw.now())).into_response()
}

/// `POST /v1/tokens`
#[utoipa::path(
    post, path = "/v1/tokens", tag = "tokens",
    request_body = super::wire::CreateTokenRequest,
    security(("bearer" = ["tokens:create"])),
    responses(
        (status = 201, description = "Created; the secret is in this response only", body = IssuedTokenResponse<'static>,
         headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "Invalid name, scope, expiry or limits (`invalid_limits`: also a limit looser than the creating token's), or a malformed body", body = ErrorResponse<'static>),
        (status = 403, description = "The token lacks `tokens:create`, or asks for scopes it does not hold itself (`scope_exceeds_caller`)", body = ErrorResponse<'static>,
         headers(("WWW-Authenticate" = String, description = "RFC 6750 Bearer challenge"))),
        (status = 404, description = "No such resource", body = ErrorResponse<'static>),
        (status = 409, description = "The owner is disabled", body = ErrorResponse<'static>),
        Unauthenticated,
        JsonBodyErrors,
        StoreUnavailable,
    )
)]
pub async fn create_token(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    body: Result<ApiJson<CreateTokenRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::CreateToken).await?;
    let ApiJson(req) = body?;
    let name = TokenName::parse(&req.name).map_err(ServiceError::from)?;
    let scopes = Scopes::parse(&req.scopes).map_err(ServiceError::from)?;
    let expires = parse_expiry(req.expires.as_deref())?;
    let limits = req.limits().map_err(ServiceError::from)?;
    let issued = kw
        .create_token(&caller, None, name, scopes, expires, limits)
        .await?;
    Ok(issued_response(&kw, StatusCode::CREATED, issued))
}

/// `GET /v1/tokens`
#[utoipa::path(
    get, path = "/v1/tokens", tag = "tokens",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (default 50)"),
        ("after" = Option<String>, Query, description = "The `next` value of the previous page"),
    ),
    security(("bearer" = ["tokens:read"])),
    responses(
        (status = 200, description = "A page of the caller's tokens, newest first", body = TokenListResponse),
        (status = 400, description = "A bad query", body = ErrorResponse<'static>),
        BearerErrors,
        StoreUnavailable,
    )
)]
pub async fn list_tokens(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::ReadTokens).await?;
    let Query(query) = query?;
    let after = query
        .after
        .as_deref()
        .map(|after| {
            TokenId::parse(after).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidQuery,
                    "`after` must be the `next` value of a previous page",
                )
            })
        })
        .transpose()?;
    let limit = page_limit(query.limit.as_deref())?;
    let page = kw.list_tokens(&caller, None, after, limit).await?;
    Ok(axum::Json(TokenListResponse::new(page, kw.now())).into_response())
}

/// `GET /v1/tokens/{id}`
#[utoipa::path(
    get, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "The token's id, `tok_…`")),
    security(("bearer" = ["tokens:read"])),
    responses(
        (status = 200, description = "The token", body = TokenResponse),
        (status = 404, description = "No such token of the caller's", body = ErrorResponse<'static>),
        BearerErrors,
        StoreUnavailable,
    )
)]
pub async fn get_token(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    TokenIdPath(id): TokenIdPath,
) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::ReadTokens).await?;
    let record = kw.get_token(&caller, &id).await?;
    Ok(token_response(&kw, record))
}

/// `PATCH /v1/tokens/{id}`
#[utoipa::path(
    patch, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "The token's id, `tok_…`")),
    request_body = super::wire::UpdateTokenRequest,
    security(("bearer" = ["tokens:update"])),
    responses(
        (status = 200, description = "Renamed, or its limits set (counts start afresh)", body = TokenResponse),
        (status = 400, description = "An invalid name, a bad or looser-than-the-caller limit (`invalid_limits`), nothing to change, or a malformed body", body = ErrorResponse<'static>),
        (status = 404, description = "No such token of the caller's", body = ErrorResponse<'static>),
        BearerErrors,
        JsonBodyErrors,
        StoreUnavailable,
    )
)]
pub async fn update_token(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    TokenIdPath(id): TokenIdPath,
    body: Result<ApiJson<UpdateTokenRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::RenameToken).await?;
    let ApiJson(req) = body?;
    let name = req
        .name
        .as_deref()
        .map(TokenName::parse)
        .transpose()
        .map_err(ServiceError::from)?;
    if name.is_none() && !req.sets_limits() {
        return Err(nothing_to_change());
    }
    let mut record = None;
    if let Some(name) = name {
        record = Some(kw.rename_token(&caller, &id, name).await?);
    }
    if req.sets_limits() {
        record = Some(
            kw.set_token_limits(&caller, &id, |current| req.limits(current))
                .await?,
        );
    }
    match record {
        Some(record) => Ok(token_response(&kw, record)),
        None => Err(nothing_to_change()),
    }
}

fn nothing_to_change() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        super::wire::ErrorCode::InvalidBody,
        "send a name or a limit to change",
    )
}

fn regenerate_options(req: Option<RegenerateTokenRequest>) -> Result<RegenerateOptions, ApiError> {
    let req = req.unwrap_or_default();
    Ok(RegenerateOptions {
        grace: req
            .grace_period
            .as_deref()
            .map(parse_grace)
            .transpose()
            .map_err(ServiceError::from)?,
        expires: parse_expiry(req.expires.as_deref())?,
    })
}

/// `POST /v1/tokens/{id}/regenerate`
#[utoipa::path(
    post, path = "/v1/tokens/{id}/regenerate", tag = "tokens",
    params(("id" = String, Path, description = "The token's id, `tok_…`")),
    request_body(content = Option<super::wire::RegenerateTokenRequest>, description = "Optional"),
    security(("bearer" = ["tokens:update"])),
    responses(
        (status = 200, description = "A new secret, in this response only", body = IssuedTokenResponse<'static>,
         headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "An invalid grace period or expiry, or a malformed body", body = ErrorResponse<'static>),
        (status = 403, description = "The token lacks `tokens:update`, or the token to regenerate has scopes the caller lacks", body = ErrorResponse<'static>,
         headers(("WWW-Authenticate" = String, description = "RFC 6750 Bearer challenge"))),
        (status = 404, description = "No such token of the caller's", body = ErrorResponse<'static>),
        (status = 409, description = "The token is revoked or expired", body = ErrorResponse<'static>),
        Unauthenticated,
        JsonBodyErrors,
        StoreUnavailable,
    )
)]
pub async fn regenerate_token(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    TokenIdPath(id): TokenIdPath,
    body: Result<OptionalJson<RegenerateTokenRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::RegenerateToken).await?;
    let OptionalJson(req) = body?;
    let options = regenerate_options(req)?;
    let issued = kw.regenerate_token(&caller, &id, options).await?;
    Ok(issued_response(&kw, StatusCode::OK, issued))
}

/// `DELETE /v1/tokens/{id}`: revokes; the record stays.
#[utoipa::path(
    delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "The token's id, `tok_…`")),
    request_body(content = Option<super::wire::RevokeTokenRequest>, description = "Optional"),
    security(("bearer" = ["tokens:delete"])),
    responses(
        (status = 200, description = "Revoked (revoking twice changes nothing)", body = TokenResponse),
        (status = 400, description = "An invalid reason or a malformed body", body = ErrorResponse<'static>),
        (status = 404, description = "No such token of the caller's", body = ErrorResponse<'static>),
        BearerErrors,
        JsonBodyErrors,
        StoreUnavailable,
    )
)]
pub async fn revoke_token(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    TokenIdPath(id): TokenIdPath,
    body: Result<OptionalJson<RevokeTokenRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::RevokeToken).await?;
    let OptionalJson(req) = body?;
    let record = kw
        .revoke_token(&caller, &id, req.and_then(|r| r.reason))
        .await?;
    Ok(token_response(&kw, record))
}

/// `POST /v1/tokens/revoke`: revokes every token, of any user, that meets all the conditions
/// given (an admin's token with `tokens:revoke-any`); with `dry_run`, lists them instead.
#[utoipa::path(
    post, path = "/v1/tokens/revoke", tag = "tokens",
    request_body = super::wire::BulkRevokeRequest,
    security(("bearer" = ["tokens:revoke-any"])),
    responses(
        (status = 200, description = "Revoked (`count`), or on a dry run what would be (`count` and `ids`)", body = BulkRevokeResponse),
        (status = 400, description = "No condition without `all`, an invalid scope or reason, or a malformed body", body = ErrorResponse<'static>),
        (status = 404, description = "No such user", body = ErrorResponse<'static>),
        BearerErrors,
        JsonBodyErrors,
        StoreUnavailable,
    )
)]
pub async fn bulk_revoke_tokens(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    body: Result<ApiJson<BulkRevokeRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::RevokeAnyTokens).await?;
    let ApiJson(req) = body?;
    let scope = req
        .scope
        .as_deref()
        .map(Scope::parse)
        .transpose()
        .map_err(ServiceError::from)?;
    let request = crate::service::BulkRevokeRequest {
        user: req.user,
        created_before: req.created_before,
        created_after: req.created_after,
        scope,
        unused_since: req.unused_since,
        all: req.all,
    };
    let answer = if req.dry_run {
        let ids = kw.bulk_revoke_preview(&caller, &request).await?;
        BulkRevokeResponse {
            count: u64::try_from(ids.len()).unwrap_or(u64::MAX),
            ids: Some(ids),
        }
    } else {
        // A client that goes away (or the request timeout) drops this future: the batch in
        // flight commits whole or not at all, the ones before stay revoked, and no count is
        // answered. Revoking very many tokens belongs at the command line, which shows progress.
        let done = kw
            .bulk_revoke(&caller, &request, req.reason, &keyward_store::Unwatched)
            .await?;
        BulkRevokeResponse {
            count: done.revoked,
            ids: None,
        }
    };
    Ok(axum::Json(answer).into_response())
}

/// `GET /v1/tokens/self`: the presented token's own record; needs no scope.
#[utoipa::path(
    get, path = "/v1/tokens/self", tag = "tokens",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The presented token", body = TokenResponse),
        (status = 404, description = "No such resource", body = ErrorResponse<'static>),
        Unauthenticated,
        StoreUnavailable,
    )
)]
pub async fn get_self(State(kw): Kw, bearer: Bearer, ip: ClientIp) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::ReadSelf).await?;
    let record = kw.own_token(&caller).await?;
    Ok(token_response(&kw, record))
}

/// `POST /v1/tokens/self/regenerate`: a token rotates itself (for automation). Needs no scope:
/// the new secret has exactly the old one's rights, and the old one stops working.
#[utoipa::path(
    post, path = "/v1/tokens/self/regenerate", tag = "tokens",
    request_body(content = Option<super::wire::RegenerateTokenRequest>, description = "Optional"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A new secret, in this response only", body = IssuedTokenResponse<'static>,
         headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "An invalid grace period or expiry, or a malformed body", body = ErrorResponse<'static>),
        (status = 404, description = "No such resource", body = ErrorResponse<'static>),
        (status = 409, description = "The token is revoked or expired", body = ErrorResponse<'static>),
        Unauthenticated,
        JsonBodyErrors,
        StoreUnavailable,
    )
)]
pub async fn regenerate_self(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    body: Result<OptionalJson<RegenerateTokenRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::RegenerateSelf).await?;
    let OptionalJson(req) = body?;
    let options = regenerate_options(req)?;
    let issued = kw.regenerate_own_token(&caller, options).await?;
    Ok(issued_response(&kw, StatusCode::OK, issued))
}

/// `GET /v1/audit`: the caller's own events.
#[utoipa::path(
    get, path = "/v1/audit", tag = "tokens",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (default 50)"),
        ("before" = Option<i64>, Query, description = "The `next` value of the previous page"),
    ),
    security(("bearer" = ["audit:read"])),
    responses(
        (status = 200, description = "A page of the caller's audit events, newest first", body = AuditListResponse),
        (status = 400, description = "A bad query", body = ErrorResponse<'static>),
        BearerErrors,
        StoreUnavailable,
    )
)]
pub async fn list_audit(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::ReadAudit).await?;
    let Query(query) = query?;
    let limit = page_limit(query.limit.as_deref())?;
    let before = query
        .before
        .as_deref()
        .map(|before| {
            before.parse::<i64>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidQuery,
                    "`before` must be the `next` value of a previous page",
                )
            })
        })
        .transpose()?;
    let page = kw.audit_events(&caller, None, before, limit).await?;
    Ok(axum::Json(AuditListResponse::new(page)).into_response())
}
