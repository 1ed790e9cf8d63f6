//! The audit trail on PostgreSQL.

use async_trait::async_trait;
use keyward_core::{AuditEvent, TokenId, UserId};
use sqlx::postgres::PgConnection;

use super::PgStore;
use super::feed::lock_change_log;
use super::rows::{self, db_error, insert_error, unix};
use crate::outbox::OutboxRow;
use crate::{AuditFilter, AuditStore, StoreResult, StoredAuditEvent};

/// Appends an audit event and, when its kind is an event, the event to the outbox. Call it in
/// a transaction when the kind is an event: the change, its audit entry and its event commit
/// together, and the outbox's lock is held until then.
pub(super) async fn insert_audit(conn: &mut PgConnection, event: &AuditEvent) -> StoreResult<()> {
    insert_audit_row(conn, None, event).await?;
    insert_event(conn, event).await
}

/// Appends the outbox row for `event`, if its kind is an event.
///
/// Sequence numbers are handed out when a row is inserted but become visible when its
/// transaction commits, so without care a reader past seq N could miss a row with a smaller seq
/// committed later. Like the change log's appends (`feed`), every append first takes the
/// `change_log` row lock, held until commit: appends commit one at a time, in seq order. Only
/// event-producing writes take it (a sign-in attempt's own audit entry does not).
async fn insert_event(conn: &mut PgConnection, event: &AuditEvent) -> StoreResult<()> {
    let Some(row) = OutboxRow::for_audit(event)? else {
        return Ok(());
    };
    lock_change_log(conn).await?;
    sqlx::query(
        "INSERT INTO events (id, type, at, token_id, user_id, data) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
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
    conn: &mut PgConnection,
    seq: Option<i64>,
    event: &AuditEvent,
) -> StoreResult<()> {
    // An identity column takes its default only when the column is left out, not from NULL.
    let sql = if seq.is_some() {
        "INSERT INTO audit_events \
         (at, kind, actor_user, actor_token, actor_label, subject_user, token_id, ip, detail, seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    } else {
        "INSERT INTO audit_events \
         (at, kind, actor_user, actor_token, actor_label, subject_user, token_id, ip, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    };
    let mut query = sqlx::query(sql)
        .bind(unix(event.at))
        .bind(event.kind.as_str())
        .bind(event.actor.user.as_ref().map(UserId::as_str))
        .bind(event.actor.token.as_ref().map(TokenId::as_str))
        .bind(event.actor.label.as_str())
        .bind(event.subject_user.as_ref().map(UserId::as_str))
        .bind(event.token_id.as_ref().map(TokenId::as_str))
        .bind(event.ip.map(|ip| ip.to_string()))
        .bind(event.detail.as_deref());
    if let Some(seq) = seq {
        query = query.bind(seq);
    }
    query
        .execute(conn)
        .await
        .map_err(|e| insert_error(e, || "audit event".to_owned()))?;
    Ok(())
}

#[async_trait]
impl AuditStore for PgStore {
    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        if event.kind.event_type().is_some() {
            let mut tx = self.begin().await?;
            insert_audit(&mut tx, event).await?;
            return tx.commit().await.map_err(db_error);
        }
        // Not an event: one statement, no outbox lock (the sign-in path writes these for
        // anonymous clients).
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        insert_audit(&mut conn, event).await
    }

    async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<StoredAuditEvent>> {
        let query = match (&filter.subject_user, filter.before_seq) {
            (Some(user), Some(before)) => sqlx::query(
                "SELECT * FROM audit_events WHERE subject_user = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
            )
            .bind(user.as_str())
            .bind(before),
            (Some(user), None) => sqlx::query(
                "SELECT * FROM audit_events WHERE subject_user = $1 ORDER BY seq DESC LIMIT $2",
            )
            .bind(user.as_str()),
            (None, Some(before)) => {
                sqlx::query("SELECT * FROM audit_events WHERE seq < $1 ORDER BY seq DESC LIMIT $2")
                    .bind(before)
            }
            (None, None) => sqlx::query("SELECT * FROM audit_events ORDER BY seq DESC LIMIT $1"),
        };
        let rows = query
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(rows::audit_event).collect()
    }
}
