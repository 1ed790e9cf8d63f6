//! `/v1/events` and `/v1/webhooks/deliveries`.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyward_core::EventId;
use keyward_store::DeliveryState;
use std::sync::Arc;

use super::error::ApiError;
use super::extract::{Bearer, ClientIp, page_limit};
use super::wire::{
    BearerErrors, DeliveriesQuery, DeliveryListResponse, ErrorCode, ErrorResponse, Event,
    EventListResponse, EventsQuery, StoreUnavailable,
};
use crate::service::{Action, Keyward};

type Kw = State<Arc<Keyward>>;

/// `GET /v1/events`: every user's events in order, after the one named.
#[utoipa::path(
    get, path = "/v1/events", tag = "events",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (default 50)"),
        ("after" = Option<String>, Query, description = "The id of the last event read (the `next` of the previous answer); from the first event when absent"),
    ),
    security(("bearer" = ["events:read"])),
    responses(
        (status = 200, description = "The events after `after`, oldest first", body = EventListResponse),
        (status = 400, description = "A bad query, or `after` names no event", body = ErrorResponse<'static>),
        BearerErrors,
        StoreUnavailable,
    )
)]
pub async fn list_events(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = kw
        .authenticate(bearer.as_deref(), ip.0, Action::ReadEvents)
        .await?;
    let Query(query) = query?;
    let limit = page_limit(query.limit.as_deref())?;
    let after = query
        .after
        .as_deref()
        .map(|after| {
            EventId::parse(after).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidQuery,
                    "`after` must be the id of an event (evt_…)",
                )
            })
        })
        .transpose()?;
    let events = kw.events(&caller, after.as_ref(), limit).await?;
    let next = events.last().map(|e| e.id.clone()).or(after);
    let body = EventListResponse {
        events: events.into_iter().map(Event::new).collect(),
        next,
    };
    Ok(axum::Json(body).into_response())
}

/// `GET /v1/webhooks/deliveries`: webhook deliveries, newest event first.
#[utoipa::path(
    get, path = "/v1/webhooks/deliveries", tag = "events",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (default 50)"),
        ("state" = Option<String>, Query, description = "Only `pending`, `delivered` or `failed` ones"),
    ),
    security(("bearer" = ["webhooks:read"])),
    responses(
        (status = 200, description = "Deliveries, newest event first", body = DeliveryListResponse),
        (status = 400, description = "A bad query", body = ErrorResponse<'static>),
        BearerErrors,
        StoreUnavailable,
    )
)]
pub async fn list_deliveries(
    State(kw): Kw,
    bearer: Bearer,
    ip: ClientIp,
    query: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = kw
        .authenticate(bearer.as_deref(), ip.0, Action::ReadDeliveries)
        .await?;
    let Query(query) = query?;
    let limit = page_limit(query.limit.as_deref())?;
    let state = query
        .state
        .as_deref()
        .map(|state| {
            DeliveryState::parse(state).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidQuery,
                    "`state` must be pending, delivered or failed",
                )
            })
        })
        .transpose()?;
    let deliveries = kw.webhook_deliveries(&caller, state, limit).await?;
    let body = DeliveryListResponse {
        deliveries: deliveries.into_iter().map(Into::into).collect(),
    };
    Ok(axum::Json(body).into_response())
}
