//! `POST /v1/verify`: the hot path over HTTP.

use axum::extract::State;
use axum::response::Response;
use std::sync::Arc;

use super::error::ApiError;
use super::extract::ApiJson;
use super::wire::{VerifyActive, VerifyAnswer, VerifyInactive, VerifyRequest, json_response};
use crate::service::Keyward;

/// Answers whether a token is active and grants the scopes asked for. 200 for every answer,
/// active or not; 4xx only for a body that is not a verification request; 503 when the store
/// cannot vouch for the answer.
#[utoipa::path(
    post, path = "/v1/verify", tag = "verify",
    request_body = super::wire::VerifyRequest,
    responses(
        (status = 200, description = "The answer, active or not", body = super::wire::VerifyAnswer<'static>),
        (status = 400, description = "Not a verification request (malformed JSON, unknown field, a scope that is not a scope: `invalid_scope`), or a scope the deployment's catalog does not have (`unknown_scope`)", body = super::wire::ErrorResponse<'static>),
        super::wire::JsonBodyErrors,
        (status = 503, description = "The token store cannot vouch for the answer", body = super::wire::ErrorResponse<'static>),
    )
)]
pub async fn verify_token(
    State(kw): State<Arc<Keyward>>,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<Response, ApiError> {
    let wanted = kw.wanted_scopes(&req.scopes)?;
    let answer = kw
        .verify_limited_with(req.token.expose(), &wanted, req.ip, |token, allowance| {
            json_response(&VerifyAnswer::Active(VerifyActive::new(token, allowance)))
        })
        .await?;
    let response = answer.unwrap_or_else(|(reason, allowance)| {
        let now = kw.now().unix_timestamp();
        json_response(&VerifyAnswer::Inactive(VerifyInactive::limited(
            reason, &allowance, now,
        )))
    });
    Ok(response)
}
