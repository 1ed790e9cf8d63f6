//! Health and moving a whole store (dump, restore) on PostgreSQL.

use async_trait::async_trait;

use super::audit::insert_audit_row;
use super::feed::reset_change_log;
use super::identities::insert_identity_row;
use super::rows::{self, db_error};
use super::tokens::{insert_hash_row, insert_token_row};
use super::users::insert_user_row;
use super::{PgStore, bounded};
use crate::{Maintenance, Snapshot, StoreError, StoreResult};

#[async_trait]
impl Maintenance for PgStore {
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

    async fn restore(&self, snapshot: &Snapshot) -> StoreResult<()> {
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
            insert_user_row(
                &mut tx,
                &user.user,
                user.password_hash.as_deref(),
                user.deleted_at,
            )
            .await?;
        }
        for token in &snapshot.tokens {
            insert_token_row(&mut tx, token).await?;
        }
        for hash in &snapshot.hashes {
            insert_hash_row(&mut tx, hash).await?;
        }
        for event in &snapshot.audit {
            insert_audit_row(&mut tx, Some(event.seq), &event.event).await?;
        }
        for identity in &snapshot.identities {
            insert_identity_row(&mut tx, identity).await?;
        }
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
