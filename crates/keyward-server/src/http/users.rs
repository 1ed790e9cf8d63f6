//! `/v1/users`: the platform's backend manages its users and mints tokens for them, with an
//! admin's token holding `users:read`, `users:create`, `users:update`, `users:delete` and
//! `tokens:issue`.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyward_core::{Email, ExternalId, Scopes, TokenName, UserId, UserName};
use std::sync::Arc;

use super::error::ApiError;
use super::extract::{ApiJson, Bearer, ClientIp, UserIdPath, page_limit};
use super::tokens::{caller, issued_response, parse_expiry};
use super::wire::{
    BearerErrors, CreateTokenRequest, CreateUserRequest, ErrorCode, ErrorResponse,
    IssuedTokenResponse, JsonBodyErrors, StoreUnavailable, UpdateUserRequest, User, UserListQuery,
    UserListResponse,
};
use crate::service::{Action, Keyward, ServiceError, UserChanges, UserRequest};

type Kw = State<Arc<Keyward>>;

fn bad_query(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery, message)
}

fn external_id(text: &str) -> Result<ExternalId, ApiError> {
    Ok(ExternalId::parse(text).map_err(ServiceError::from)?)
}

fn email(text: &str) -> Result<Email, ApiError> {
    Ok(Email::parse(text).map_err(ServiceError::from)?)
}

/// `POST /v1/users`
#[utoipa::path(
    post, path = "/v1/users", tag = "users",
    request_body = CreateUserRequest,
    security(("bearer" = ["users:create"])),
    responses(
        (status = 201, description = "Created", body = User),
        (status = 400, description = "An invalid name, external id, email or password, a password for a service account, or a malformed body", body = ErrorResponse<'static>),
        (status = 409, description = "The name or the external id is taken", body = ErrorResponse<'static>),
        BearerErrors,
        JsonBodyErrors,
        StoreUnavailable,
    )
)]
pub async fn create_user(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    body: Result<ApiJson<CreateUserRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::CreateUser).await?;
    let ApiJson(req) = body?;
    let request = UserRequest {
        name: UserName::parse_new(&req.name).map_err(ServiceError::from)?,
        kind: req.kind.map(Into::into).unwrap_or_default(),
        admin: req.admin,
        external_id: req.external_id.as_deref().map(external_id).transpose()?,
        email: req.email.as_deref().map(email).transpose()?,
        password: req.password,
    };
    let user = kw.create_user(&caller, request).await?;
    Ok((StatusCode::CREATED, axum::Json(User::from(user))).into_response())
}

/// `GET /v1/users`
#[utoipa::path(
    get, path = "/v1/users", tag = "users",
    params(
        ("external_id" = Option<String>, Query, description = "Only the user with this external id"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (default 50)"),
        ("before" = Option<String>, Query, description = "The `next` value of the previous page"),
    ),
    security(("bearer" = ["users:read"])),
    responses(
        (status = 200, description = "A page of users, newest first", body = UserListResponse),
        (status = 400, description = "A bad query", body = ErrorResponse<'static>),
        BearerErrors,
        StoreUnavailable,
    )
)]
pub async fn list_users(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    query: Result<Query<UserListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::ReadUsers).await?;
    let Query(query) = query?;
    let before = query
        .before
        .as_deref()
        .map(|before| {
            UserId::parse(before)
                .map_err(|_| bad_query("`before` must be the `next` value of a previous page"))
        })
        .transpose()?;
    let external = query
        .external_id
        .as_deref()
        .map(|e| {
            ExternalId::parse(e).map_err(|_| bad_query("`external_id` is not a valid external id"))
        })
        .transpose()?;
    let limit = page_limit(query.limit.as_deref())?;
    let page = kw.list_users(&caller, external, before, limit).await?;
    Ok(axum::Json(UserListResponse::from(page)).into_response())
}

/// `GET /v1/users/{id}`
#[utoipa::path(
    get, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "The user's id, `usr_…`")),
    security(("bearer" = ["users:read"])),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 404, description = "No such user", body = ErrorResponse<'static>),
        BearerErrors,
        StoreUnavailable,
    )
)]
pub async fn get_user(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    UserIdPath(id): UserIdPath,
) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::ReadUsers).await?;
    let user = kw.user_by_id(&caller, &id).await?;
    Ok(axum::Json(User::from(user)).into_response())
}

/// `PATCH /v1/users/{id}`
#[utoipa::path(
    patch, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "The user's id, `usr_…`")),
    request_body = UpdateUserRequest,
    security(("bearer" = ["users:update"])),
    responses(
        (status = 200, description = "Changed", body = User),
        (status = 400, description = "Nothing to change, an invalid field, or a malformed body", body = ErrorResponse<'static>),
        (status = 404, description = "No such user", body = ErrorResponse<'static>),
        (status = 409, description = "The name or external id is taken, or the change would disable or demote the caller's own user", body = ErrorResponse<'static>),
        BearerErrors,
        JsonBodyErrors,
        StoreUnavailable,
    )
)]
pub async fn update_user(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    UserIdPath(id): UserIdPath,
    body: Result<ApiJson<UpdateUserRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::UpdateUser).await?;
    let ApiJson(req) = body?;
    let changes = UserChanges {
        name: req
            .name
            .as_deref()
            .map(UserName::parse_new)
            .transpose()
            .map_err(ServiceError::from)?,
        email: req
            .email
            .map(|e| e.as_deref().map(email).transpose())
            .transpose()?,
        external_id: req
            .external_id
            .map(|e| e.as_deref().map(external_id).transpose())
            .transpose()?,
        is_admin: req.admin,
        disabled: req.disabled,
    };
    let user = kw.update_user(&caller, &id, changes).await?;
    Ok(axum::Json(User::from(user)).into_response())
}

/// `DELETE /v1/users/{id}`: for good. Every token of theirs is revoked ("owner deleted") on
/// every instance before the answer; the audit trail keeps the id; the name may be used again.
#[utoipa::path(
    delete, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "The user's id, `usr_…`")),
    security(("bearer" = ["users:delete"])),
    responses(
        (status = 204, description = "Deleted; their tokens are revoked"),
        (status = 404, description = "No such user", body = ErrorResponse<'static>),
        (status = 409, description = "The caller's own user", body = ErrorResponse<'static>),
        BearerErrors,
        StoreUnavailable,
    )
)]
pub async fn delete_user(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    UserIdPath(id): UserIdPath,
) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::DeleteUser).await?;
    kw.delete_user(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/users/{id}/tokens`: the platform's backend mints a token for one of its users.
#[utoipa::path(
    post, path = "/v1/users/{id}/tokens", tag = "users",
    params(("id" = String, Path, description = "The user's id, `usr_…`")),
    request_body = CreateTokenRequest,
    security(("bearer" = ["tokens:issue"])),
    responses(
        (status = 201, description = "Created; the secret is in this response only. Any scope of the catalog; `users:*` and `tokens:issue` only for an admin; no later expiry than the calling token's", body = IssuedTokenResponse<'static>,
         headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "Invalid name, scope or expiry, or a malformed body", body = ErrorResponse<'static>),
        (status = 404, description = "No such user", body = ErrorResponse<'static>),
        (status = 409, description = "The user is disabled", body = ErrorResponse<'static>),
        BearerErrors,
        JsonBodyErrors,
        StoreUnavailable,
    )
)]
pub async fn issue_token(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    UserIdPath(id): UserIdPath,
    body: Result<ApiJson<CreateTokenRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let caller = caller(&kw, &bearer, ip, Action::IssueToken).await?;
    let ApiJson(req) = body?;
    let name = TokenName::parse(&req.name).map_err(ServiceError::from)?;
    let scopes = Scopes::parse(&req.scopes).map_err(ServiceError::from)?;
    let expires = parse_expiry(req.expires.as_deref())?;
    let limits = req.limits().map_err(ServiceError::from)?;
    let issued = kw
        .issue_token(&caller, &id, name, scopes, expires, limits)
        .await?;
    Ok(issued_response(&kw, StatusCode::CREATED, issued))
}
