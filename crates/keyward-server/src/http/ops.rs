//! Operations: liveness, readiness, metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::error::ApiError;
use super::extract::{Bearer, ClientIp};
use super::wire::{ErrorCode, Status};
use crate::service::{Keyward, ServiceError};

/// `GET /healthz`: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "The process serves requests", body = super::wire::Status)))]
pub async fn healthz() -> Response {
    axum::Json(Status::OK).into_response()
}

/// `GET /readyz`: the store answers, and holds no active token this instance cannot verify.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "The store answers", body = super::wire::Status),
        (status = 503, description = "The store is unreachable, or holds active tokens hashed under a server key this instance does not have", body = super::wire::ErrorResponse<'static>),
    ))]
pub async fn readyz(State(kw): State<Arc<Keyward>>) -> Result<Response, ApiError> {
    match kw.readiness().await {
        Ok(()) => Ok(axum::Json(Status::READY).into_response()),
        Err(e @ ServiceError::KeyMissing(_)) => Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "the token store is unreachable",
            ))
        }
    }
}

/// `GET /metrics`: Prometheus text format; open unless the deployment requires a token.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    security((), ("bearer" = ["metrics:read"])),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "`[metrics] require_token` is set and no active token was sent", body = super::wire::ErrorResponse<'static>,
         headers(("WWW-Authenticate" = String, description = "RFC 6750 Bearer challenge"))),
        (status = 403, description = "`[metrics] require_token` is set and the token lacks `metrics:read` (`insufficient_scope`)", body = super::wire::ErrorResponse<'static>,
         headers(("WWW-Authenticate" = String, description = "RFC 6750 Bearer challenge"))),
    ))]
pub async fn metrics(
    State(kw): State<Arc<Keyward>>,
    bearer: Bearer,
    ip: ClientIp,
) -> Result<Response, ApiError> {
    kw.authorize_metrics(bearer.as_deref(), ip.0).await?;
    kw.publish_metrics();
    let body = crate::telemetry::prometheus()
        .map(|h| h.render())
        .unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}
