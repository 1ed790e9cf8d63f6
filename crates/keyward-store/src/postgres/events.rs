//! The outbox and webhook deliveries on PostgreSQL. Appends to the outbox commit in seq order
//! (`audit::insert_event` holds the change log's row lock to commit), so a reader paging by seq
//! never skips an event; instances claim deliveries with `FOR UPDATE SKIP LOCKED` and a lease,
//! so one instance sends a delivery at a time and a dead instance's lease runs out and is taken
//! over.

use async_trait::async_trait;
use keyward_core::{EventId, event_type_matches};
use sqlx::Row as _;
use time::OffsetDateTime;

use super::PgStore;
use super::rows::{db_error, unix};
use crate::outbox::{delivery_record, outcome_columns, stored_event};
use crate::{
    Delivery, DeliveryFilter, DeliveryOutcome, DeliveryRecord, EventStore, StoreError, StoreResult,
    StoredEvent, WebhookStore,
};

#[async_trait]
impl EventStore for PgStore {
    async fn events_after(
        &self,
        after: Option<&EventId>,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        let from = match after {
            None => 0,
            Some(id) => sqlx::query_scalar::<_, i64>("SELECT seq FROM events WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error)?
                .ok_or(StoreError::NotFound)?,
        };
        let rows = sqlx::query("SELECT * FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(from)
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        rows.iter().map(stored_event).collect()
    }
}

/// Leases due deliveries, each the oldest pending one of its token (or user) to its webhook;
/// `$1` the webhooks, `$2` now, `$3` the limit, `$4` the instance, `$5` the lease's end. A row
/// another instance is claiming is skipped, and re-checked once its claim commits (its lease
/// then excludes it).
const CLAIM: &str = "WITH due AS ( \
         SELECT d.webhook, d.event_seq FROM webhook_deliveries d \
         WHERE d.state = 'pending' AND d.next_attempt_at <= $2 \
         AND (d.lease_until IS NULL OR d.lease_until <= $2) \
         AND d.webhook = ANY($1) \
         AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.webhook = d.webhook \
             AND p.ordering_key = d.ordering_key AND p.state = 'pending' \
             AND p.event_seq < d.event_seq) \
         ORDER BY d.event_seq LIMIT $3 FOR UPDATE SKIP LOCKED) \
     UPDATE webhook_deliveries w SET lease_owner = $4, lease_until = $5 \
     FROM due JOIN events e ON e.seq = due.event_seq \
     WHERE w.webhook = due.webhook AND w.event_seq = due.event_seq \
     RETURNING w.webhook, w.attempts, w.created_at, e.seq, e.id, e.type, e.at, e.token_id, \
         e.user_id, e.data";

#[async_trait]
impl WebhookStore for PgStore {
    async fn enqueue_deliveries(
        &self,
        webhook: &str,
        patterns: &[String],
        at: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<u64> {
        // Every instance asks every second: when there is nothing new, a read answers it.
        let caught_up: bool = sqlx::query_scalar(
            "SELECT coalesce((SELECT seq FROM webhook_cursors WHERE webhook = $1), -1) \
             >= coalesce((SELECT max(seq) FROM events), 0)",
        )
        .bind(webhook)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        if caught_up {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_cursors (webhook, seq) \
             SELECT $1, coalesce(max(seq), 0) FROM events ON CONFLICT (webhook) DO NOTHING",
        )
        .bind(webhook)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        // Instances take turns per webhook: the cursor's row lock, held to commit.
        let cursor: i64 =
            sqlx::query_scalar("SELECT seq FROM webhook_cursors WHERE webhook = $1 FOR UPDATE")
                .bind(webhook)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
        let rows = sqlx::query(
            "SELECT seq, type, coalesce(token_id, user_id, id) AS ordering_key FROM events \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(cursor)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(last) = rows.last() else {
            // Keeps a new webhook's cursor.
            tx.commit().await.map_err(db_error)?;
            return Ok(0);
        };
        let last: i64 = last.try_get("seq").map_err(db_error)?;
        for row in &rows {
            let event_type: String = row.try_get("type").map_err(db_error)?;
            if !patterns.iter().any(|p| event_type_matches(p, &event_type)) {
                continue;
            }
            sqlx::query(
                "INSERT INTO webhook_deliveries \
                 (webhook, event_seq, ordering_key, state, created_at, next_attempt_at) \
                 VALUES ($1, $2, $3, 'pending', $4, $4) ON CONFLICT DO NOTHING",
            )
            .bind(webhook)
            .bind(row.try_get::<i64, _>("seq").map_err(db_error)?)
            .bind(row.try_get::<String, _>("ordering_key").map_err(db_error)?)
            .bind(unix(at))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        sqlx::query("UPDATE webhook_cursors SET seq = $2 WHERE webhook = $1")
            .bind(webhook)
            .bind(last)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(rows.len() as u64)
    }

    async fn claim_deliveries(
        &self,
        webhooks: &[String],
        instance: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<Delivery>> {
        let rows = sqlx::query(CLAIM)
            .bind(webhooks)
            .bind(unix(now))
            .bind(i64::from(limit))
            .bind(instance)
            .bind(unix(lease_until))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                Ok(Delivery {
                    webhook: row.try_get("webhook").map_err(db_error)?,
                    event: stored_event(row)?,
                    attempts: u32::try_from(row.try_get::<i64, _>("attempts").map_err(db_error)?)
                        .unwrap_or(u32::MAX),
                    created_at: crate::decode::time(row, "created_at")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by_key(|d| d.event.seq);
        Ok(claimed)
    }

    async fn finish_delivery(
        &self,
        webhook: &str,
        event_seq: i64,
        instance: &str,
        outcome: &DeliveryOutcome,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        let (state, status, error, next) = outcome_columns(outcome, at);
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $3, attempts = attempts + 1, \
             last_attempt_at = $4, last_status = $5, last_error = $6, next_attempt_at = $7, \
             finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE $4 END, \
             lease_owner = NULL, lease_until = NULL \
             WHERE webhook = $1 AND event_seq = $2 AND state = 'pending' AND lease_owner = $8",
        )
        .bind(webhook)
        .bind(event_seq)
        .bind(state)
        .bind(unix(at))
        .bind(status)
        .bind(error)
        .bind(unix(next))
        .bind(instance)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<DeliveryRecord>> {
        let rows = sqlx::query(
            "SELECT d.*, e.id AS event_id, e.type AS event_type \
             FROM webhook_deliveries d JOIN events e ON e.seq = d.event_seq \
             WHERE ($1::text IS NULL OR d.state = $1) \
             ORDER BY d.event_seq DESC, d.webhook LIMIT $2",
        )
        .bind(filter.state.map(|s| s.as_str()))
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(delivery_record).collect()
    }
}
