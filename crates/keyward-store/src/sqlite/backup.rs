//! Health and moving a whole store (dump, restore) on SQLite.

use async_trait::async_trait;
use keyward_core::{AuditEvent, KeyId};
use sqlx::AssertSqlSafe;
use time::OffsetDateTime;

use super::audit::{insert_audit, insert_audit_row};
use super::feed::{log_removed_hash, prune_changes, reset_change_log};
use super::identities::insert_identity_row;
use super::rows::{self, db_error, unix};
use super::tokens::{insert_hash_row, insert_token_row};
use super::users::insert_user_row;
use super::{SqliteStore, direct};
use crate::{Maintenance, Progress, Revocation, Snapshot, StoreError, StoreResult, go_on};
use std::sync::Arc;

/// The replaced secrets under key `?1` whose end has passed at `?2` (the index on the key id),
/// dropped; returns their hashes.
const DROP_REPLACED_UNDER_KEY: &str = "DELETE FROM token_hashes \
     WHERE key_id = ?1 AND valid_until IS NOT NULL AND valid_until <= ?2 RETURNING hash";

/// Whether the store holds anything `restore` would refuse to write over.
pub(super) const OCCUPIED: &str = "SELECT EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM tokens) \
     OR EXISTS (SELECT 1 FROM audit_events)";

/// Active tokens with a working secret under another key than `?1`, per key id, at `?2`.
/// Readiness asks it every few seconds, so it must not read every secret: the keys below `?1`
/// and those above it are two range searches of the index on `key_id`, empty when every secret
/// is under the current key. Written as one condition (`key_id < ?1 OR key_id > ?1`), SQLite
/// scanned the whole index instead, and each row's secret: 5.7–10.5 s over 10^6 tokens,
/// 37 s over 10^7.
const UNDER_OTHER_KEYS: &str = "SELECT k.key_id, count(DISTINCT t.id) FROM token_hashes k \
     JOIN tokens t ON t.id = k.token_id \
     WHERE k.key_id < ?1 AND t.revoked_at IS NULL \
     AND (t.expires_at IS NULL OR t.expires_at > ?2) \
     AND (k.valid_until IS NULL OR k.valid_until > ?2) \
     GROUP BY k.key_id \
     UNION ALL \
     SELECT k.key_id, count(DISTINCT t.id) FROM token_hashes k \
     JOIN tokens t ON t.id = k.token_id \
     WHERE k.key_id > ?1 AND t.revoked_at IS NULL \
     AND (t.expires_at IS NULL OR t.expires_at > ?2) \
     AND (k.valid_until IS NULL OR k.valid_until > ?2) \
     GROUP BY k.key_id \
     ORDER BY 1";

#[async_trait]
impl Maintenance for SqliteStore {
    async fn tokens_under_other_keys(
        &self,
        key: &KeyId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(KeyId, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(UNDER_OTHER_KEYS)
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
        let mut tx = self.begin_write().await?;
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
        self.commit_and_announce(tx).await?;
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
        // The first key is the index's range; the others (older keys of the ring) are few.
        let others: String = (0..keep.len())
            .skip(1)
            .map(|i| format!(", ?{}", i + 4))
            .collect();
        let others = format!("AND k.key_id NOT IN (?1{others})");
        let mut tx = self.begin_write().await?;
        let at = unix(revocation.at);
        // Their hashes first (all of them: any cache may hold any), then the tokens.
        let mut log = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO changes (hash, at) SELECT h.hash, ?3 FROM token_hashes h \
             WHERE h.token_id IN (SELECT t.id FROM token_hashes k JOIN tokens t ON t.id = k.token_id \
                 WHERE (k.key_id < ?1 OR k.key_id > ?1) {others} AND t.revoked_at IS NULL \
                 AND (t.expires_at IS NULL OR t.expires_at > ?2) \
                 AND (k.valid_until IS NULL OR k.valid_until > ?2)) \
             ORDER BY h.hash"
        )))
        .bind(key.as_str())
        .bind(at)
        .bind(at);
        for older in &keep[1..] {
            log = log.bind(older.as_str());
        }
        log.execute(&mut *tx).await.map_err(db_error)?;
        let mut revoke = sqlx::query(AssertSqlSafe(format!(
            "UPDATE tokens SET revoked_at = ?2, revoked_by = ?3, revoke_reason = ?4 \
             WHERE id IN (SELECT t.id FROM token_hashes k JOIN tokens t ON t.id = k.token_id \
                 WHERE (k.key_id < ?1 OR k.key_id > ?1) {others} AND t.revoked_at IS NULL \
                 AND (t.expires_at IS NULL OR t.expires_at > ?2) \
                 AND (k.valid_until IS NULL OR k.valid_until > ?2))"
        )))
        .bind(key.as_str())
        .bind(at)
        .bind(revocation.by.as_str())
        .bind(revocation.reason.as_deref());
        for older in &keep[1..] {
            revoke = revoke.bind(older.as_str());
        }
        let revoked = revoke
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        prune_changes(&mut tx, revocation.at).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx).await?;
        Ok(revoked)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn dump(&self) -> StoreResult<Snapshot> {
        // One read transaction: WAL gives it one snapshot from its first read on.
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let users = sqlx::query("SELECT * FROM users ORDER BY id")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        let tokens = sqlx::query("SELECT * FROM tokens ORDER BY id")
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
        progress.start(snapshot.rows());
        // A file (the one `direct::Readers` reads, so not `:memory:` or a URI) is written row by
        // row without sqlx's thread hops (see `direct::bulk`), off the executor: a large restore takes
        // seconds. The task finishes, and commits, even if the caller stops waiting: only `progress`
        // stops it.
        if self.readers.is_some() {
            if self.pool.is_closed() {
                return Err(StoreError::unavailable("the store is closed".to_owned()));
            }
            // The file this store's own connections open.
            let path = self.pool.connect_options().get_filename().to_owned();
            let snapshot = snapshot.clone();
            let restored =
                tokio::task::spawn_blocking(move || direct::restore(&path, &snapshot, &*progress))
                    .await
                    .unwrap_or_else(|e| {
                        Err(StoreError::unavailable_from(
                            format!("restore task failed: {e}"),
                            None,
                            e,
                        ))
                    });
            if restored.is_ok() {
                // Every process's cache starts over and learns the restored hashes.
                self.epoch.bump();
            }
            return restored;
        }
        let progress = &*progress;
        // The write lock is held from the emptiness check to the commit. Every error (an
        // interruption too) returns before the commit; dropping `tx` rolls back.
        let mut tx = self.begin_write().await?;
        let occupied: bool = sqlx::query_scalar(OCCUPIED)
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
        reset_change_log(&mut tx, OffsetDateTime::UNIX_EPOCH).await?;
        self.commit_and_announce(tx).await
    }
}
