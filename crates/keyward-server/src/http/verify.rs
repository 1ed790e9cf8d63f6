//! `POST /v1/verify`: the hot path over HTTP.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use keyward_core::Scopes;
use std::sync::Arc;

use super::error::ApiError;
use super::extract::ApiJson;
use super::wire::{ActiveResponse, InactiveResponse, OwnerView, VerifyRequest};
use crate::service::{Keyward, ServiceError, Verdict};

/// Answers whether a token is active and grants the scopes asked for. 200 for every answer,
/// active or not; 4xx only for a body that is not a verification request; 503 when the store
/// cannot vouch for the answer.
#[utoipa::path(
    post, path = "/v1/verify", tag = "verify",
    request_body = super::wire::VerifyRequest,
    responses(
        (status = 200, description = "The answer, active or not", body = super::openapi::VerifyAnswer),
        (status = 400, description = "Not a verification request (malformed JSON, unknown field, a scope that is not a scope)", body = super::openapi::ErrorResponse),
        (status = 413, description = "The body is too large", body = super::openapi::ErrorResponse),
        (status = 415, description = "The body is not JSON", body = super::openapi::ErrorResponse),
        (status = 503, description = "The token store cannot vouch for the answer", body = super::openapi::ErrorResponse),
    )
)]
pub async fn verify_token(
    State(kw): State<Arc<Keyward>>,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<Response, ApiError> {
    let wanted = if req.scopes.is_empty() {
        Scopes::default()
    } else {
        Scopes::parse(&req.scopes).map_err(ServiceError::from)?
    };
    let response = match kw.verify(req.token.expose(), &wanted, req.ip).await? {
        Verdict::Active(token) => axum::Json(ActiveResponse {
            active: true,
            token_id: &token.token_id,
            owner: OwnerView {
                id: &token.owner,
                name: token.owner_name.as_str(),
            },
            scopes: &token.scopes,
            expires_at: token.expires_at,
        })
        .into_response(),
        Verdict::Inactive(reason) => axum::Json(InactiveResponse {
            active: false,
            reason,
        })
        .into_response(),
    };
    Ok(response)
}
