//! The audit trail on SQLite.

use async_trait::async_trait;
use keyward_core::{AuditEvent, TokenId, UserId};
use sqlx::sqlite::SqliteConnection;

use super::SqliteStore;
use super::rows::{self, db_error, insert_error, unix};
use crate::outbox::OutboxRow;
use crate::{AuditFilter, AuditStore, StoreResult, StoredAuditEvent};

/// An audit event; `?10` is its sequence number, NULL for the next one.
pub(super) const INSERT_AUDIT: &str = "INSERT INTO audit_events \
     (seq, at, kind, actor_user, actor_token, actor_label, subject_user, token_id, ip, detail) \
     VALUES (?10, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// An outbox row (also bound by `direct::creations`, in the same order).
pub(super) const INSERT_EVENT: &str = "INSERT INTO events (id, type, at, token_id, user_id, data) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Appends an audit event and, when its kind is an event, the event to the outbox (in the
/// caller's transaction: the change, its audit entry and its event commit together).
pub(super) async fn insert_audit(
    conn: &mut SqliteConnection,
    event: &AuditEvent,
) -> StoreResult<()> {
    insert_audit_row(conn, None, event).await?;
    insert_event(conn, event).await
}

/// Appends the outbox row for `event`, if its kind is an event.
async fn insert_event(conn: &mut SqliteConnection, event: &AuditEvent) -> StoreResult<()> {
    let Some(row) = OutboxRow::for_audit(event)? else {
        return Ok(());
    };
    sqlx::query(INSERT_EVENT)
        .bind(row.id.as_str())
        .bind(row.event_type)
        .bind(unix(event.at))
        .bind(event.token_id.as_ref().map(TokenId::as_str))
        .bind(event.subject_user.as_ref().map(UserId::as_str))
        .bind(row.data.as_str())
        .execute(conn)
        .await
        .map_err(|e| insert_error(e, || format!("event {}", row.id)))?;
    Ok(())
}

/// Appends an audit event, at sequence number `seq` when given (a restore), else at the next.
pub(super) async fn insert_audit_row(
    conn: &mut SqliteConnection,
    seq: Option<i64>,
    event: &AuditEvent,
) -> StoreResult<()> {
    sqlx::query(INSERT_AUDIT)
        .bind(unix(event.at))
        .bind(event.kind.as_str())
        .bind(event.actor.user.as_ref().map(UserId::as_str))
        .bind(event.actor.token.as_ref().map(TokenId::as_str))
        .bind(event.actor.label.as_str())
        .bind(event.subject_user.as_ref().map(UserId::as_str))
        .bind(event.token_id.as_ref().map(TokenId::as_str))
        .bind(event.ip.map(|ip| ip.to_string()))
        .bind(event.detail.as_deref())
        .bind(seq)
        .execute(conn)
        .await
        .map_err(|e| insert_error(e, || "audit event".to_owned()))?;
    Ok(())
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        insert_audit(&mut tx, event).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<StoredAuditEvent>> {
        let query = match (&filter.subject_user, filter.before_seq) {
            (Some(user), Some(before)) => sqlx::query(
                "SELECT * FROM audit_events WHERE subject_user = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
            )
            .bind(user.as_str())
            .bind(before),
            (Some(user), None) => {
                sqlx::query("SELECT * FROM audit_events WHERE subject_user = ?1 ORDER BY seq DESC LIMIT ?2")
                    .bind(user.as_str())
            }
            (None, Some(before)) => {
                sqlx::query("SELECT * FROM audit_events WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2").bind(before)
            }
            (None, None) => sqlx::query("SELECT * FROM audit_events ORDER BY seq DESC LIMIT ?1"),
        };
        let rows = query
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(rows::audit_event).collect()
    }
}
