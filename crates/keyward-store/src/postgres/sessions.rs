//! Web sessions and form nonces on PostgreSQL.

use async_trait::async_trait;
use keyward_core::{AuditEvent, TokenHash};
use time::OffsetDateTime;

use super::PgStore;
use super::audit::insert_audit;
use super::rows::{self, db_error, insert_error, unix};
use crate::{SessionRecord, SessionStore, StoreResult};

#[async_trait]
impl SessionStore for PgStore {
    async fn create_session(
        &self,
        session: &SessionRecord,
        stale_before: OffsetDateTime,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE last_seen_at < $1 OR expires_at <= $2")
            .bind(unix(stale_before))
            .bind(unix(session.created_at))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at, expires_at, \
             signed_in_with) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(session.id_hash.0.to_vec())
        .bind(session.user.as_str())
        .bind(unix(session.created_at))
        .bind(unix(session.last_seen_at))
        .bind(unix(session.expires_at))
        .bind(session.signed_in_with.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(|e| insert_error(e, || "session".to_owned()))?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn session(&self, id_hash: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        let row = sqlx::query("SELECT * FROM sessions WHERE id_hash = $1")
            .bind(id_hash.0.to_vec())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(rows::session).transpose()
    }

    async fn touch_session(&self, id_hash: &TokenHash, at: OffsetDateTime) -> StoreResult<()> {
        sqlx::query(
            "UPDATE sessions SET last_seen_at = greatest(last_seen_at, $2) WHERE id_hash = $1",
        )
        .bind(id_hash.0.to_vec())
        .bind(unix(at))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn delete_session(
        &self,
        id_hash: &TokenHash,
        audit: Option<&AuditEvent>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash.0.to_vec())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if let Some(audit) = audit {
            insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn use_form_nonce(
        &self,
        session: &TokenHash,
        nonce: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        // Only within a live session: a nonce of an ended session is never "fresh".
        let inserted = sqlx::query(
            "INSERT INTO form_nonces (session_hash, nonce, used_at) \
             SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM sessions WHERE id_hash = $1) \
             ON CONFLICT DO NOTHING",
        )
        .bind(session.0.to_vec())
        .bind(nonce)
        .bind(unix(at))
        .execute(&self.pool)
        .await
        .map_err(db_error)?
        .rows_affected();
        Ok(inserted == 1)
    }
}
