//! Expiry notices on PostgreSQL.

use async_trait::async_trait;
use keyward_core::{AuditEvent, TokenId, TokenRecord};
use time::OffsetDateTime;

use super::PgStore;
use super::audit::insert_audit;
use super::rows::{self, db_error, unix};
use crate::{NoticeStore, StoreResult};

/// Tokens due for notice `$1`, expiring in `($2, $3]`: a range of the partial index on the
/// expiry, each checked against the notices' primary key.
const DUE: &str = concat!(
    "SELECT ",
    token_columns!(),
    token_from!(),
    "WHERE t.revoked_at IS NULL AND t.expires_at IS NOT NULL \
     AND t.expires_at > $2 AND t.expires_at <= $3 \
     AND NOT EXISTS (SELECT 1 FROM token_notices n \
         WHERE n.token_id = t.id AND n.notice = $1 AND n.expires_at = t.expires_at) \
     ORDER BY t.expires_at LIMIT $4"
);

/// Records notice `$2` for token `$1` if it still expires at `$3` and is not revoked. Two
/// instances inserting the same notice: the second waits for the first to commit, then inserts
/// nothing.
const RECORD: &str = "INSERT INTO token_notices (token_id, notice, expires_at, at) \
     SELECT id, $2, expires_at, $4 FROM tokens \
     WHERE id = $1 AND revoked_at IS NULL AND expires_at = $3 \
     ON CONFLICT DO NOTHING";

#[async_trait]
impl NoticeStore for PgStore {
    async fn due_for_notice(
        &self,
        notice: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<TokenRecord>> {
        let found = sqlx::query(DUE)
            .bind(notice)
            .bind(unix(from))
            .bind(unix(to))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        found.iter().map(rows::token).collect()
    }

    async fn record_notice(
        &self,
        token: &TokenId,
        notice: &str,
        expires_at: OffsetDateTime,
        at: OffsetDateTime,
        audit: &AuditEvent,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(RECORD)
            .bind(token.as_str())
            .bind(notice)
            .bind(unix(expires_at))
            .bind(unix(at))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }
}
