//! Health and moving a whole store (dump, restore) on PostgreSQL.

use async_trait::async_trait;
use keyward_core::{AuditEvent, KeyId};
use sqlx::AssertSqlSafe;
use time::OffsetDateTime;

use super::audit::{insert_audit, insert_audit_row};
use super::feed::{
    change_log_end, lock_change_log, log_removed_hash, prune_changes, reset_change_log,
};
use super::identities::insert_identity_row;
use super::rows::{self, db_error, unix};
use super::tokens::{insert_hash_row, insert_token_row};
use super::users::insert_user_row;
use super::{PgStore, bounded};
use crate::{Maintenance, Progress, Revocation, Snapshot, StoreError, StoreResult, go_on};
use std::sync::Arc;

/// The replaced secrets under key `$1` whose end has passed at `$2` (the index on the key id),
/// dropped; returns their hashes.
const DROP_REPLACED_UNDER_KEY: &str = "DELETE FROM token_hashes \
     WHERE key_id = $1 AND valid_until IS NOT NULL AND valid_until <= $2 RETURNING hash";

/// The tokens `Maintenance::tokens_under_other_keys` counts: active at `$2`, with a working
/// secret under another key than `$1` (two ranges, so the index on `key_id` serves it).
const OTHER_KEY_TOKENS: &str = "SELECT k.key_id, t.id FROM token_hashes k \
     JOIN tokens t ON t.id = k.token_id \
     WHERE (k.key_id < $1 OR k.key_id > $1) AND t.revoked_at IS NULL \
     AND (t.expires_at IS NULL OR t.expires_at > $2) \
     AND (k.valid_until IS NULL OR k.valid_until > $2)";

#[async_trait]
impl Maintenance for PgStore {
    async fn tokens_under_other_keys(
        &self,
        key: &KeyId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(KeyId, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT key_id, count(DISTINCT id) FROM ({OTHER_KEY_TOKENS}) o \
             GROUP BY key_id ORDER BY key_id"
        )))
        .bind(key.as_str())
        .bind(unix(now))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|(id, n)| (KeyId::from_stored(id), u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    async fn drop_replaced_secrets_under(
        &self,
        key: &KeyId,
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let dropped = sqlx::query(DROP_REPLACED_UNDER_KEY)
            .bind(key.as_str())
            .bind(unix(now))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        if dropped.is_empty() {
            return Ok(0);
        }
        for row in &dropped {
            log_removed_hash(&mut tx, &rows::hash(row, "hash")?, now).await?;
        }
        prune_changes(&mut tx, now).await?;
        let seq = change_log_end(&mut tx).await?.1;
        self.commit_and_announce(tx, seq).await?;
        Ok(u64::try_from(dropped.len()).unwrap_or(u64::MAX))
    }

    async fn revoke_under_other_keys(
        &self,
        keep: &[KeyId],
        revocation: &Revocation,
        audit: &AuditEvent,
    ) -> StoreResult<u64> {
        let Some(key) = keep.first() else {
            return Err(StoreError::InvalidState("no server key to keep"));
        };
        let older: Vec<&str> = keep[1..].iter().map(KeyId::as_str).collect();
        let mut tx = self.begin().await?;
        let at = unix(revocation.at);
        // Held until commit: appends happen one transaction at a time, in commit order.
        lock_change_log(&mut tx).await?;
        // Their hashes first (all of them: any cache may hold any), then the tokens.
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO changes (hash, at) SELECT h.hash, $2 FROM token_hashes h \
             WHERE h.token_id IN (SELECT id FROM ({OTHER_KEY_TOKENS}) o \
                 WHERE NOT (o.key_id = ANY($3))) ORDER BY h.hash"
        )))
        .bind(key.as_str())
        .bind(at)
        .bind(&older)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let revoked = sqlx::query(AssertSqlSafe(format!(
            "UPDATE tokens SET revoked_at = $2, revoked_by = $3, revoke_reason = $4 \
             WHERE id IN (SELECT id FROM ({OTHER_KEY_TOKENS}) o WHERE NOT (o.key_id = ANY($5)))"
        )))
        .bind(key.as_str())
        .bind(at)
        .bind(revocation.by.as_str())
        .bind(revocation.reason.as_deref())
        .bind(&older)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        prune_changes(&mut tx, revocation.at).await?;
        let seq = change_log_end(&mut tx).await?.1;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx, seq).await?;
        Ok(revoked)
    }

    async fn ping(&self) -> StoreResult<()> {
        bounded(async {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map_err(db_error)
        })
        .await?;
        Ok(())
    }

    async fn dump(&self) -> StoreResult<Snapshot> {
        // REPEATABLE READ: every statement sees the snapshot the first one took.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(db_error)?;
        let users = sqlx::query("SELECT * FROM users ORDER BY id")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        let tokens = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            token_from!(),
            "ORDER BY t.id"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let hashes = sqlx::query("SELECT * FROM token_hashes ORDER BY token_id, hash")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        let audit = sqlx::query("SELECT * FROM audit_events ORDER BY seq")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        let identities = sqlx::query("SELECT * FROM user_identities ORDER BY issuer, subject")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.rollback().await.map_err(db_error)?;
        Ok(Snapshot {
            users: users
                .iter()
                .map(rows::snapshot_user)
                .collect::<StoreResult<_>>()?,
            tokens: tokens.iter().map(rows::token).collect::<StoreResult<_>>()?,
            hashes: hashes
                .iter()
                .map(rows::hash_record)
                .collect::<StoreResult<_>>()?,
            audit: audit
                .iter()
                .map(rows::audit_event)
                .collect::<StoreResult<_>>()?,
            identities: identities
                .iter()
                .map(rows::identity)
                .collect::<StoreResult<_>>()?,
        })
    }

    async fn restore_watched(
        &self,
        snapshot: &Snapshot,
        progress: Arc<dyn Progress>,
    ) -> StoreResult<()> {
        let progress = &*progress;
        progress.start(snapshot.rows());
        // Every error (an interruption too) returns before the commit; dropping `tx` rolls back.
        let mut tx = self.begin().await?;
        // Keeps every other writer out from the emptiness check to the commit (readers go on).
        sqlx::query(
            "LOCK TABLE users, tokens, token_hashes, audit_events, user_identities \
             IN SHARE ROW EXCLUSIVE MODE",
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let occupied: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM tokens) \
             OR EXISTS (SELECT 1 FROM audit_events)",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        if occupied {
            return Err(StoreError::InvalidState("the target store is not empty"));
        }
        for user in &snapshot.users {
            go_on(progress)?;
            insert_user_row(
                &mut tx,
                &user.user,
                user.password_hash.as_deref(),
                user.deleted_at,
            )
            .await?;
            progress.advance(1);
        }
        for token in &snapshot.tokens {
            go_on(progress)?;
            insert_token_row(&mut tx, token).await?;
            progress.advance(1);
        }
        for hash in &snapshot.hashes {
            go_on(progress)?;
            insert_hash_row(&mut tx, hash).await?;
            progress.advance(1);
        }
        for event in &snapshot.audit {
            go_on(progress)?;
            insert_audit_row(&mut tx, Some(event.seq), &event.event).await?;
            progress.advance(1);
        }
        for identity in &snapshot.identities {
            go_on(progress)?;
            insert_identity_row(&mut tx, identity).await?;
            progress.advance(1);
        }
        go_on(progress)?;
        // Explicit sequence numbers do not move the identity sequence; new events go after them.
        sqlx::query(
            "SELECT setval(pg_get_serial_sequence('audit_events', 'seq'), max(seq)) \
             FROM audit_events HAVING max(seq) IS NOT NULL",
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let seq = reset_change_log(&mut tx).await?;
        self.commit_and_announce(tx, seq).await
    }
}
