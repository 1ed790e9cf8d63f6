//! The outbox, written once for every engine: which audit entries are also events, what an
//! event's `data` holds, and rows back into [`StoredEvent`]s and [`DeliveryRecord`]s.
//!
//! An event's `data` is built from its audit entry only (ids, the actor's label, the client
//! address, the detail), so it holds nothing the audit trail does not: never a secret (names and
//! reasons that hold a token are refused before they reach the store).

use keyward_core::{AuditEvent, EventId, TokenId, UserId};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::decode::{Columns, opt_time, time};
use crate::{DeliveryOutcome, DeliveryRecord, DeliveryState, StoreError, StoreResult, StoredEvent};

/// The outbox row for an audit entry, if its kind is an event.
pub(crate) struct OutboxRow {
    pub(crate) id: EventId,
    pub(crate) event_type: &'static str,
    pub(crate) data: String,
}

impl OutboxRow {
    /// The row for `event`, or `None` when its kind is not an event.
    pub(crate) fn for_audit(event: &AuditEvent) -> StoreResult<Option<Self>> {
        let Some(event_type) = event.kind.event_type() else {
            return Ok(None);
        };
        let id = EventId::generate(event.at)
            .map_err(|e| StoreError::unavailable(format!("event id: {e}")))?;
        let mut data = Map::new();
        let mut put = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                data.insert(key.to_owned(), Value::String(value));
            }
        };
        put("token_id", event.token_id.as_ref().map(ToString::to_string));
        put(
            "user_id",
            event.subject_user.as_ref().map(ToString::to_string),
        );
        put("ip", event.ip.map(|ip| ip.to_string()));
        put("detail", event.detail.clone());
        let mut actor = Map::new();
        actor.insert("label".to_owned(), Value::String(event.actor.label.clone()));
        if let Some(user) = &event.actor.user {
            actor.insert("user_id".to_owned(), Value::String(user.to_string()));
        }
        if let Some(token) = &event.actor.token {
            actor.insert("token_id".to_owned(), Value::String(token.to_string()));
        }
        data.insert("actor".to_owned(), Value::Object(actor));
        Ok(Some(Self {
            id,
            event_type,
            data: Value::Object(data).to_string(),
        }))
    }
}

/// An `events` row.
pub(crate) fn stored_event(row: &impl Columns) -> StoreResult<StoredEvent> {
    let corrupt = |column: &str, e: &dyn std::fmt::Display| {
        StoreError::corrupt(format!("events.{column}: {e}"))
    };
    Ok(StoredEvent {
        seq: row.int("seq")?,
        id: EventId::parse(&row.text("id")?).map_err(|e| corrupt("id", &e))?,
        event_type: row.text("type")?,
        at: time(row, "at")?,
        token_id: row
            .opt_text("token_id")?
            .map(|t| TokenId::parse(&t).map_err(|e| corrupt("token_id", &e)))
            .transpose()?,
        user_id: row
            .opt_text("user_id")?
            .map(|t| UserId::parse(&t).map_err(|e| corrupt("user_id", &e)))
            .transpose()?,
        data: row.text("data")?,
    })
}

/// A `webhook_deliveries` row joined with its event's id and type.
pub(crate) fn delivery_record(row: &impl Columns) -> StoreResult<DeliveryRecord> {
    let state = row.text("state")?;
    Ok(DeliveryRecord {
        webhook: row.text("webhook")?,
        event_id: EventId::parse(&row.text("event_id")?)
            .map_err(|e| StoreError::corrupt(format!("events.id: {e}")))?,
        event_type: row.text("event_type")?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| StoreError::corrupt(format!("webhook_deliveries.state: {state:?}")))?,
        attempts: u32::try_from(row.int("attempts")?).unwrap_or(u32::MAX),
        created_at: time(row, "created_at")?,
        next_attempt_at: time(row, "next_attempt_at")?,
        last_attempt_at: opt_time(row, "last_attempt_at")?,
        last_status: row
            .opt_int("last_status")?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: row.opt_text("last_error")?,
        finished_at: opt_time(row, "finished_at")?,
    })
}

/// A delivery outcome as the columns it sets: state, status, error and next attempt.
pub(crate) fn outcome_columns(
    outcome: &DeliveryOutcome,
    at: OffsetDateTime,
) -> (&'static str, Option<i64>, Option<&str>, OffsetDateTime) {
    match outcome {
        DeliveryOutcome::Delivered { status } => ("delivered", Some(i64::from(*status)), None, at),
        DeliveryOutcome::Retry {
            status,
            error,
            next_attempt_at,
        } => (
            "pending",
            status.map(i64::from),
            Some(error.as_str()),
            *next_attempt_at,
        ),
        DeliveryOutcome::Failed { status, error } => {
            ("failed", status.map(i64::from), Some(error.as_str()), at)
        }
    }
}
